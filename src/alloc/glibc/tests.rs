//! The glibc walker on fake heaps: a synthetic core (image::testcore) holding a libc mapping
//! with `main_arena` in its writable part, a main heap, a thread stack whose TLS points at
//! the tcache, and damage made on purpose. The layout facts written here are the models'
//! (heap-models/glibc/*.toml); the link encodings are malloc.c's (PROTECT_PTR since 2.32:
//! `(pos >> 12) ^ ptr`, pos being the address of the link itself).

use super::*;
use crate::image::testcore::{at, TestCore, RW};
use crate::models::glibc_models;

pub(crate) const LIBC: u64 = 0x7f00_0000_0000;
pub(crate) const LIBC_RW: u64 = LIBC + 0x1000;
pub(crate) const ARENA: u64 = LIBC_RW + 0x100;
const MP: u64 = LIBC_RW + 0x1000;
pub(crate) const HEAP: u64 = 0x5555_0000_0000;
pub(crate) const HEAP_LEN: u64 = 0x10000;
pub(crate) const STACK: u64 = 0x7ffd_0000_0000;
pub(crate) const TP: u64 = STACK + 0x1800;
pub(crate) const TID: u32 = 77;
const MMAP: u64 = 0x7f00_4000_0000;
/// A thread arena's heap: HEAP_MAX_SIZE-aligned (arena.c new_heap).
const THEAP: u64 = 0x7f00_8000_0000;
/// Nothing is mapped here.
const NOWHERE: u64 = 0x6000_0000_0000;

pub(crate) fn model(name: &str) -> GlibcModel {
    glibc_models(None)
        .unwrap()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap()
}

/// A fake main heap under construction: chunks carved from HEAP upwards, then top.
pub(crate) struct G {
    pub(crate) m: GlibcModel,
    pub(crate) tc: TestCore,
    safe: bool,
    cur: u64,
    /// (address, size) in address order.
    chunks: Vec<(u64, u64)>,
    /// Chunks on a doubly linked bin: the next chunk's PREV_INUSE is clear.
    binned: HashSet<u64>,
    /// User address of the tcache_perthread_struct.
    tcache: u64,
}

impl G {
    pub(crate) fn new(m: GlibcModel, safe: bool) -> G {
        let mut tc = TestCore::new();
        let path = format!("/nonexistent/libc-{}.so", m.first);
        // libc's text is left out of the core (as the kernel's default coredump_filter
        // does): no ELF header in the core, no file on disk, still a module by its name.
        tc.segment(LIBC_RW, 0x2000, RW)
            .file(LIBC, LIBC + 0x1000, &path)
            .file(LIBC_RW, LIBC_RW + 0x2000, &path)
            .segment(HEAP, HEAP_LEN, RW)
            .segment(STACK, 0x2000, RW)
            .thread(TID, STACK + 0x100, TP);
        let mut g = G {
            m,
            tc,
            safe,
            cur: HEAP,
            chunks: Vec::new(),
            binned: HashSet::new(),
            tcache: 0,
        };
        // malloc_init_state: every bin empty (fd = bk = bin_at(i)); the ring is main_arena.
        for i in 1..128 {
            let h = g.bin_head(ARENA, i);
            g.tc.u64(h + 16, h).u64(h + 24, h);
        }
        g.tc.u64(ARENA + g.m.malloc_state.next, ARENA);
        if let Some(cs) = g.m.tcache_chunk_size() {
            // The first chunk of a thread's heap (malloc.c tcache_init), named by the
            // thread's `tcache` TLS variable below its thread pointer.
            g.tcache = g.alloc(cs) + 16;
            g.tc.u64(TP - 0x40, g.tcache);
        }
        g
    }

    fn bin_head(&self, arena: u64, i: u64) -> u64 {
        arena + self.m.malloc_state.bins + 16 * (i - 1) - 16
    }

    pub(crate) fn alloc(&mut self, size: u64) -> u64 {
        let c = self.cur;
        self.chunks.push((c, size));
        self.cur += size;
        c
    }

    fn link(&self, pos: u64, target: u64) -> u64 {
        if self.safe {
            (pos >> 12) ^ target
        } else {
            target
        }
    }

    /// Tcache bin `bin` holds `cs` (chunk addresses), first to be reused first.
    pub(crate) fn tcache_bin(&mut self, bin: u64, cs: &[u64]) {
        let t = self.m.tcache.clone().unwrap();
        let n = cs.len() as u64;
        let raw = match t.counts_mean {
            CountsMean::Used => n,
            CountsMean::FreeSlots => t.fill_count - n,
        };
        let s = self.tcache;
        match t.count_size {
            1 => self.tc.bytes(s + t.counts + bin, &[raw as u8]),
            _ => self.tc.u16(s + t.counts + 2 * bin, raw as u16),
        };
        self.tc.u64(s + t.entries + 8 * bin, cs[0] + 16);
        for (k, &c) in cs.iter().enumerate() {
            let next = cs.get(k + 1).map_or(0, |n| n + 16);
            let v = self.link(c + 16, next);
            self.tc.u64(c + 16, v);
        }
    }

    /// Fastbin `idx` holds `cs`.
    fn fastbin(&mut self, idx: u64, cs: &[u64]) {
        let fb = self.m.malloc_state.fastbins.unwrap();
        self.tc.u64(ARENA + fb + 8 * idx, cs[0]);
        for (k, &c) in cs.iter().enumerate() {
            let next = cs.get(k + 1).copied().unwrap_or(0);
            let v = self.link(c + 16, next);
            self.tc.u64(c + 16, v);
        }
    }

    /// Bin `i` (1 unsorted, 2..63 small, 64.. large) holds `cs`, doubly linked.
    fn bin(&mut self, i: u64, cs: &[u64]) {
        let h = self.bin_head(ARENA, i);
        let all: Vec<u64> = std::iter::once(h)
            .chain(cs.iter().copied())
            .chain(std::iter::once(h))
            .collect();
        for w in all.windows(2) {
            self.tc.u64(w[0] + 16, w[1]).u64(w[1] + 24, w[0]);
        }
        self.binned.extend(cs);
    }

    /// Headers (PREV_INUSE clear after a binned chunk, whose size is then the next
    /// chunk's prev_size), top up to the end of the heap segment, the arena's top and
    /// system_mem. Returns top.
    pub(crate) fn finish(&mut self) -> u64 {
        let mut prev_free = false;
        for &(c, size) in &self.chunks.clone() {
            self.tc.u64(c + 8, size | u64::from(!prev_free));
            if prev_free {
                let prev = self.chunks.iter().find(|x| x.0 + x.1 == c).unwrap();
                self.tc.u64(c, prev.1);
            }
            prev_free = self.binned.contains(&c);
        }
        let top = self.cur;
        self.tc
            .u64(top + 8, (HEAP + HEAP_LEN - top) | u64::from(!prev_free));
        let ms = self.m.malloc_state.clone();
        self.tc
            .u64(ARENA + ms.top, top)
            .u64(ARENA + ms.system_mem, HEAP_LEN);
        top
    }

    fn analyze(&self) -> GlibcHeap {
        let p = self.tc.process();
        analyze(&p, std::slice::from_ref(&self.m)).unwrap().unwrap()
    }

    /// The walk of main_arena at ARENA, without locating it (for damage locate rejects).
    fn walk(&self, mp: Option<Addr>) -> GlibcHeap {
        let p = self.tc.process();
        let r = Reader { space: &p.space };
        walk(
            &p,
            &r,
            &self.m,
            Addr(ARENA),
            FoundBy::Symbol,
            mp.map(|a| (a, FoundBy::Symbol)),
            &|| &[],
        )
    }
}

/// The addresses of a standard heap's chunks by role.
struct Std {
    top: u64,
    tcached: [u64; 2],
    fast: [u64; 2],
    unsorted: u64,
    small: u64,
    /// The four plain in-use chunks after the tcache struct.
    used: [u64; 4],
}

/// Two tcache chunks of 0x20, one in use of 0x30, two fastbin chunks of 0x40 (in use on
/// a model without fastbins), 0x100 in use, 0x200 unsorted, 0x50 in use, 0x90 in small
/// bin 9, 0x30 in use, then top.
fn standard(m: GlibcModel, safe: bool) -> (G, Std) {
    let mut g = G::new(m, safe);
    let t1 = g.alloc(0x20);
    let t2 = g.alloc(0x20);
    let u1 = g.alloc(0x30);
    let f1 = g.alloc(0x40);
    let f2 = g.alloc(0x40);
    let u2 = g.alloc(0x100);
    let b = g.alloc(0x200);
    let u3 = g.alloc(0x50);
    let s = g.alloc(0x90);
    let u4 = g.alloc(0x30);
    g.tcache_bin(0, &[t2, t1]);
    if g.m.has_fastbins() {
        g.fastbin(2, &[f2, f1]);
    }
    g.bin(1, &[b]);
    g.bin(9, &[s]);
    let top = g.finish();
    let std = Std {
        top,
        tcached: [t1, t2],
        fast: [f1, f2],
        unsorted: b,
        small: s,
        used: [u1, u2, u3, u4],
    };
    (g, std)
}

fn c(chunks: u64, bytes: u64) -> Count {
    Count { chunks, bytes }
}

fn warnings(h: &GlibcHeap) -> Vec<String> {
    h.diagnostics
        .iter()
        .filter(|d| d.severity >= crate::error::Severity::Warning)
        .map(|d| d.to_string())
        .collect()
}

fn state_of(h: &GlibcHeap, a: u64) -> ChunkState {
    h.chunks.iter().find(|c| c.addr == Addr(a)).unwrap().state()
}

/// The counts of the standard heap, with `moved` chunks of the free kinds counted in use.
fn assert_standard(h: &GlibcHeap, m: &GlibcModel, s: &Std, fast_in_use: bool, tc_in_use: bool) {
    let a = &h.arenas[0];
    let tstruct = m.tcache_chunk_size().unwrap();
    let fast_used = fast_in_use || !m.has_fastbins();
    let mut in_use = c(5, tstruct + 0x30 + 0x100 + 0x50 + 0x30);
    if fast_used {
        in_use = c(in_use.chunks + 2, in_use.bytes + 0x80);
    }
    if tc_in_use {
        in_use = c(in_use.chunks + 2, in_use.bytes + 0x40);
    }
    assert_eq!(a.in_use, in_use, "in use");
    assert_eq!(a.free.tcache, if tc_in_use { c(0, 0) } else { c(2, 0x40) });
    assert_eq!(
        a.free.fastbins,
        if fast_used { c(0, 0) } else { c(2, 0x80) }
    );
    assert_eq!(a.free.unsorted, c(1, 0x200));
    assert_eq!(a.free.smallbins, c(1, 0x90));
    assert_eq!(a.free.largebins, c(0, 0));
    assert_eq!(a.free.unlisted, c(0, 0));
    assert_eq!(a.top_bytes, HEAP + HEAP_LEN - s.top);
    assert_eq!(a.overhead_bytes, 0);
    assert!(a.identity_holds);
    assert_eq!(a.largest_free, 0x200);
    assert_eq!(state_of(h, s.unsorted), ChunkState::Unsorted);
    assert_eq!(state_of(h, s.small), ChunkState::SmallBin);
    assert_eq!(state_of(h, s.top), ChunkState::Top);
    for u in s.used {
        assert_eq!(state_of(h, u), ChunkState::InUse);
    }
    let want = if tc_in_use {
        ChunkState::InUse
    } else {
        ChunkState::Tcache
    };
    for t in s.tcached {
        assert_eq!(state_of(h, t), want);
    }
    let want = if fast_used {
        ChunkState::InUse
    } else {
        ChunkState::Fastbin
    };
    for f in s.fast {
        assert_eq!(state_of(h, f), want);
    }
}

#[test]
fn every_model_walks_a_clean_heap() {
    for m in glibc_models(None).unwrap() {
        let (g, s) = standard(m.clone(), m.safe_linking);
        let h = g.analyze();
        assert_eq!(h.model, m.name);
        assert_eq!(h.main_arena, Addr(ARENA), "{}", m.name);
        // No symbol, no file: the bin-head scan of libc's writable memory finds it.
        assert_eq!(h.main_arena_found_by, FoundBy::BinScan);
        assert_eq!(h.mp_found_by, None);
        assert!(warnings(&h).is_empty(), "{}: {:?}", m.name, warnings(&h));
        assert_eq!(h.safe_linking, Some(m.safe_linking), "{}", m.name);
        assert_standard(&h, &m, &s, false, false);
        assert_eq!(h.arenas[0].kind, ArenaKind::Main);
        assert_eq!(h.tcaches.len(), 1);
        let t = &h.tcaches[0];
        assert_eq!(
            (t.address, t.tid, t.found_by),
            (Addr(g.tcache), Some(TID), TcacheFoundBy::Tls)
        );
        assert_eq!((t.chunks, t.bytes), (2, 0x40));
    }
}

#[test]
fn enums_serialise_as_identifiers() {
    let (g, _) = standard(model("2.35-2.41"), true);
    let j = serde_json::to_value(g.analyze()).unwrap();
    assert_eq!(j["main_arena_found_by"], "bin_scan");
    assert_eq!(j["mp_found_by"], serde_json::Value::Null);
    assert_eq!(j["arenas"][0]["kind"], "main");
    assert_eq!(j["tcaches"][0]["found_by"], "tls");
    for (v, s) in [
        (FoundBy::Symbol, "symbol"),
        (FoundBy::DataInitializer, "data_initializer"),
        (FoundBy::ThreadArenaRing, "thread_arena_ring"),
        (FoundBy::BinScan, "bin_scan"),
    ] {
        assert_eq!(serde_json::to_value(v).unwrap(), s);
    }
    assert_eq!(
        serde_json::to_value(TcacheFoundBy::HeapScan).unwrap(),
        "heap_scan"
    );
    assert_eq!(serde_json::to_value(ArenaKind::Thread).unwrap(), "thread");
}

#[test]
fn safe_linking_is_detected_from_the_data_either_way() {
    // A safe-linking model over plain links, and a pre-2.32 model over PROTECT_PTR links:
    // the data wins, with a note; every list still decodes.
    for (name, safe) in [("2.35-2.41", false), ("2.30-2.31", true)] {
        let m = model(name);
        let (g, s) = standard(m.clone(), safe);
        let h = g.analyze();
        assert_eq!(h.safe_linking, Some(safe), "{name}");
        assert!(warnings(&h).is_empty(), "{name}: {:?}", warnings(&h));
        let note = format!(
            "safe-linking is {} in the free lists, unlike what glibc {name}'s model expects",
            if safe { "on" } else { "off" }
        );
        assert!(h.diagnostics.iter().any(|d| d.message == note), "{name}");
        assert_standard(&h, &m, &s, false, false);
    }
}

#[test]
fn a_tcache_found_only_by_the_heap_scan() {
    let (mut g, s) = standard(model("2.35-2.41"), true);
    g.tc.u64(TP - 0x40, 0);
    let h = g.analyze();
    let t = &h.tcaches[0];
    assert_eq!((t.tid, t.found_by), (None, TcacheFoundBy::HeapScan));
    assert_standard(&h, &g.m, &s, false, false);
}

#[test]
fn impossible_chunk_size_resynchronises_at_the_next_chunk() {
    let (mut g, s) = standard(model("2.35-2.41"), true);
    let bad = s.used[1]; // 0x100 in use
    g.tc.u64(bad + 8, 0x1239);
    let h = g.analyze();
    assert_eq!(
        at(&h.diagnostics, bad),
        vec!["impossible chunk size 0x1239; resynchronising".to_string()]
    );
    assert_eq!(warnings(&h).len(), 1, "{:?}", warnings(&h));
    // Everything else as before; the damaged chunk's bytes are no chunk's (overhead).
    let a = &h.arenas[0];
    let tstruct = g.m.tcache_chunk_size().unwrap();
    assert_eq!(a.in_use, c(4, tstruct + 0x30 + 0x50 + 0x30));
    assert_eq!(a.overhead_bytes, 0x100);
    assert_eq!(a.free.total(), c(6, 0x40 + 0x80 + 0x200 + 0x90));
    assert!(a.identity_holds);
    assert!(!h.chunks.iter().any(|c| c.addr == Addr(bad)));
    assert_eq!(state_of(&h, s.unsorted), ChunkState::Unsorted);
    assert_eq!(state_of(&h, s.top), ChunkState::Top);
}

#[test]
fn a_chunk_that_runs_over_top_does_not_swallow_it() {
    let (mut g, s) = standard(model("2.35-2.41"), true);
    // The last chunk before top (0x30 in use) claims 0x100 bytes of top, or all of it.
    let last = s.used[3];
    let top_size = HEAP + HEAP_LEN - s.top;
    for size in [0x130, 0x30 + top_size] {
        // PREV_INUSE stays clear: the chunk before is on a bin.
        g.tc.u64(last + 8, size);
        let h = g.analyze();
        assert_eq!(
            at(&h.diagnostics, last),
            vec![format!(
                "chunk size {size:#x} runs over top ({:#x}); resynchronising",
                s.top
            )],
        );
        assert_eq!(warnings(&h).len(), 1, "{:?}", warnings(&h));
        let a = &h.arenas[0];
        assert_eq!(a.top_bytes, top_size);
        assert_eq!(a.overhead_bytes, 0x30);
        assert!(a.identity_holds);
        assert_eq!(state_of(&h, s.top), ChunkState::Top);
        assert_eq!(state_of(&h, s.small), ChunkState::SmallBin);
    }
}

#[test]
fn a_chunk_walk_that_cannot_reach_top_stops_with_a_warning() {
    let (mut g, s) = standard(model("2.35-2.41"), true);
    // main_arena's top 8 bytes off the chunk boundary: the real top chunk runs over it
    // and nothing after it lines up with it.
    let ms = g.m.malloc_state.clone();
    let top_size = HEAP + HEAP_LEN - s.top;
    // (The size word there still ends the heap where the arena's system_mem says.)
    g.tc.u64(ARENA + ms.top, s.top + 8)
        .u64(s.top + 16, top_size - 8);
    let h = g.analyze();
    assert_eq!(
        at(&h.diagnostics, s.top),
        vec![
            format!(
                "chunk size {:#x} runs over top ({:#x}); resynchronising",
                top_size | 1,
                s.top + 8
            ),
            "no plausible chunk found after the damage; rest of the heap skipped".to_string(),
        ]
    );
    assert_eq!(warnings(&h).len(), 2, "{:?}", warnings(&h));
    // Every chunk before it is walked and counted; no top.
    let a = &h.arenas[0];
    assert_eq!(a.top_bytes, 0);
    assert!(!h.chunks.iter().any(|c| c.addr.0 >= s.top));
    assert_eq!(a.free.total(), c(6, 0x40 + 0x80 + 0x200 + 0x90));
    assert_eq!(a.in_use.chunks, 5);
}

#[test]
fn a_bin_list_that_loops_is_cut() {
    let mut g = G::new(model("2.35-2.41"), true);
    let s1 = g.alloc(0x90);
    let u = g.alloc(0x30);
    let s2 = g.alloc(0x90);
    let u2 = g.alloc(0x30);
    g.bin(9, &[s1, s2]);
    let top = g.finish();
    // s2's bk goes back to s1 instead of to the bin header: following bk from the header
    // (s2, s1, s2, ...) meets s2 twice.
    g.tc.u64(s1 + 24, s2);
    let h = g.analyze();
    assert_eq!(
        at(&h.diagnostics, s2),
        vec![
            "bin 9: chunk seen twice (the list loops or joins another list); rest of the list skipped"
                .to_string()
        ]
    );
    assert_eq!(warnings(&h).len(), 1, "{:?}", warnings(&h));
    let a = &h.arenas[0];
    assert_eq!(a.free.smallbins, c(2, 0x120));
    assert_eq!(a.in_use.chunks, 3);
    assert_eq!(a.free.unlisted, c(0, 0));
    assert_eq!(state_of(&h, u), ChunkState::InUse);
    assert_eq!(state_of(&h, u2), ChunkState::InUse);
    assert_eq!(state_of(&h, top), ChunkState::Top);
    assert!(a.identity_holds);
}

#[test]
fn a_bin_that_leaves_the_heap_leaves_its_chunk_unlisted() {
    let (mut g, s) = standard(model("2.35-2.41"), true);
    let head = g.bin_head(ARENA, 1);
    g.tc.u64(head + 24, NOWHERE);
    let h = g.analyze();
    assert_eq!(
        at(&h.diagnostics, NOWHERE),
        vec![format!(
            "bin 1 of arena {ARENA:#x} points at {NOWHERE:#x}, which is not a chunk of any heap; rest of the list skipped"
        )]
    );
    assert_eq!(
        at(&h.diagnostics, s.unsorted),
        vec![
            "chunk of 0x200 bytes is free (next chunk's PREV_INUSE is clear) but on no bin"
                .to_string()
        ]
    );
    let a = &h.arenas[0];
    assert_eq!(a.free.unsorted, c(0, 0));
    assert_eq!(a.free.unlisted, c(1, 0x200));
    assert_eq!(a.free.smallbins, c(1, 0x90));
    assert_eq!(a.free.tcache, c(2, 0x40));
    assert!(a.identity_holds);
}

fn damaged_list(kind: &str, head: u64) -> String {
    format!(
        "{kind} list starting at {head:#x} is damaged (leaves the heap, wrong sizes, loops or miscounts); its chunks are counted in use"
    )
}

#[test]
fn a_fastbin_with_a_garbage_or_looping_link_is_counted_in_use() {
    for looping in [false, true] {
        let (mut g, s) = standard(model("2.35-2.41"), true);
        let [f1, f2] = s.fast;
        // fastbin 2 is f2 -> f1; f1's fd now points at garbage, or back at f2.
        let target = if looping { f2 } else { 0x000d_eadb_eef0 };
        let v = g.link(f1 + 16, target);
        g.tc.u64(f1 + 16, v);
        let h = g.analyze();
        assert_eq!(at(&h.diagnostics, f2), vec![damaged_list("fastbin", f2)]);
        assert_eq!(warnings(&h).len(), 1, "{:?}", warnings(&h));
        // The tcache list still decides safe-linking.
        assert_eq!(h.safe_linking, Some(true));
        assert_standard(&h, &g.m, &s, true, false);
    }
}

#[test]
fn a_tcache_list_with_a_garbage_or_looping_link_is_counted_in_use() {
    for looping in [false, true] {
        let (mut g, s) = standard(model("2.35-2.41"), true);
        let [t1, t2] = s.tcached;
        // tcache bin 0 is t2 -> t1; t1's next now points at garbage, or back at t2.
        let target = if looping { t2 + 16 } else { 0x4141_4141_4140 };
        let v = g.link(t1 + 16, target);
        g.tc.u64(t1 + 16, v);
        let h = g.analyze();
        assert_eq!(at(&h.diagnostics, t2), vec![damaged_list("tcache", t2)]);
        assert_eq!(warnings(&h).len(), 1, "{:?}", warnings(&h));
        assert_eq!(h.safe_linking, Some(true));
        assert_standard(&h, &g.m, &s, false, true);
        assert_eq!((h.tcaches[0].chunks, h.tcaches[0].bytes), (0, 0));
    }
}

#[test]
fn mmapped_chunks_with_bad_sizes_are_not_chunks() {
    let (mut g, s) = standard(model("2.35-2.41"), true);
    g.tc.segment(MMAP, 0x6000, RW);
    // One good chunk (two pages), then candidates with IS_MMAPPED set and prev_size 0 but
    // a size that is not a page multiple, or runs past the mapping (malloc.c
    // sysmalloc_mmap: the chunk fills whole pages of its own mapping).
    g.tc.u64(MMAP + 8, 0x2000 | 2)
        .u64(MMAP + 0x2000 + 8, 0x1ff0 | 2)
        .u64(MMAP + 0x3000 + 8, 0x9000 | 2);
    // mp_ where its counters say what glibc mapped: three chunks, 0xd000 bytes.
    let mpp = g.m.malloc_par.clone();
    g.tc.u64(MP + mpp.sbrk_base, HEAP)
        .u32(MP + mpp.n_mmaps, 3)
        .u64(MP + mpp.mmapped_mem, 0xd000);
    let h = g.walk(Some(Addr(MP)));
    assert_eq!(h.mmapped, c(1, 0x2000));
    let mm: Vec<_> = h
        .chunks
        .iter()
        .filter(|c| c.state() == ChunkState::Mmapped)
        .collect();
    assert_eq!(mm.len(), 1);
    assert_eq!((mm[0].addr, mm[0].size()), (Addr(MMAP), 0x2000));
    assert_eq!(
        warnings(&h),
        vec!["warning: mmapped chunks found: 1 (8192 bytes); glibc's own counters (mp_.n_mmaps, mp_.mmapped_mem) say 3 (53248 bytes)".to_string()]
    );
    assert_standard(&h, &g.m, &s, false, false);
    // Counters that agree: no warning.
    g.tc.u32(MP + mpp.n_mmaps, 1)
        .u64(MP + mpp.mmapped_mem, 0x2000);
    let h = g.walk(Some(Addr(MP)));
    assert!(warnings(&h).is_empty(), "{:?}", warnings(&h));
}

/// A thread arena with one heap at THEAP (the arena struct after heap_info, its chunks
/// after the struct: arena.c _int_new_arena), linked into main_arena's ring.
fn with_thread_arena(g: &mut G) -> (u64, u64, u64) {
    let hi = g.m.heap_info.clone();
    let ms = g.m.malloc_state.clone();
    let len = 0x8000;
    let a = THEAP + hi.size;
    g.tc.segment(THEAP, len, RW);
    g.tc.u64(THEAP + hi.ar_ptr, a).u64(THEAP + hi.hsize, len);
    for i in 1..128 {
        let h = g.bin_head(a, i);
        g.tc.u64(h + 16, h).u64(h + 24, h);
    }
    g.tc.u64(ARENA + ms.next, a).u64(a + ms.next, ARENA);
    let first = (a + ms.size + 15) & !15;
    let u = first;
    g.tc.u64(u + 8, 0x100 | NON_MAIN_ARENA | PREV_INUSE);
    let top = u + 0x100;
    g.tc.u64(top + 8, (THEAP + len - top) | NON_MAIN_ARENA | PREV_INUSE);
    g.tc.u64(a + ms.top, top).u64(a + ms.system_mem, len);
    (a, u, top)
}

#[test]
fn a_thread_arena_and_a_heap_info_chain_that_leaves_the_core() {
    let (mut g, s) = standard(model("2.35-2.41"), true);
    let (a, u, top) = with_thread_arena(&mut g);
    let h = g.analyze();
    assert!(warnings(&h).is_empty(), "{:?}", warnings(&h));
    // No symbol, no file: main_arena is the arena of the ring that lies in libc.
    assert_eq!(h.main_arena_found_by, FoundBy::ThreadArenaRing);
    assert_eq!(h.arenas.len(), 2);
    let t = &h.arenas[1];
    assert_eq!((t.address, t.kind), (Addr(a), ArenaKind::Thread));
    assert_eq!(t.in_use, c(1, 0x100));
    assert_eq!(t.top_bytes, THEAP + 0x8000 - top);
    assert_eq!(t.overhead_bytes, u - THEAP);
    assert!(t.identity_holds);
    assert_standard(&h, &g.m, &s, false, false);
    // heap_info.prev now leads out of the core: one warning there, the rest unchanged.
    g.tc.u64(THEAP + g.m.heap_info.prev, NOWHERE);
    let h = g.analyze();
    assert_eq!(
        at(&h.diagnostics, NOWHERE),
        vec![format!("heap_info of arena {a:#x} is not readable")]
    );
    assert_eq!(warnings(&h).len(), 1, "{:?}", warnings(&h));
    assert_eq!(h.arenas[1].in_use, c(1, 0x100));
    assert!(h.arenas[1].identity_holds);
    assert_standard(&h, &g.m, &s, false, false);
    // A heap_info that names another arena ends the chain there.
    g.tc.u64(THEAP + g.m.heap_info.ar_ptr, ARENA);
    let h = g.walk(None);
    assert_eq!(
        at(&h.diagnostics, THEAP),
        vec![format!(
            "heap_info does not belong to arena {a:#x} (ar_ptr {ARENA:#x}, size 0x8000)"
        )]
    );
    assert!(h.arenas[1].heaps.is_empty());
    assert_standard(&h, &g.m, &s, false, false);
}

#[test]
fn an_arena_ring_that_loops_elsewhere_is_cut() {
    let (mut g, s) = standard(model("2.35-2.41"), true);
    let (a, ..) = with_thread_arena(&mut g);
    let next = g.m.malloc_state.next;
    g.tc.u64(a + next, a);
    // locate refuses such a main_arena (its ring does not close) ...
    let p = g.tc.process();
    let r = Reader { space: &p.space };
    assert_eq!(
        locate::check_arena(&r, &g.m, Addr(ARENA), true),
        Err("arena ring does not close".to_string())
    );
    // ... and the walk, given it, stops the ring at the loop.
    let h = g.walk(None);
    assert_eq!(
        at(&h.diagnostics, a),
        vec!["arena ring loops without returning to main_arena".to_string()]
    );
    assert_eq!(h.arenas.len(), 2);
    assert_eq!(h.arenas[1].in_use, c(1, 0x100));
    assert_standard(&h, &g.m, &s, false, false);
}

#[test]
fn locate_rejects_arenas_that_break_invariants() {
    let (mut g, _) = standard(model("2.35-2.41"), true);
    let ms = g.m.malloc_state.clone();
    let check = |g: &G| {
        let p = g.tc.process();
        let r = Reader { space: &p.space };
        locate::check_arena(&r, &g.m, Addr(ARENA), true)
    };
    assert_eq!(check(&g), Ok(()));
    g.tc.u32(ARENA + ms.flags, 0x100);
    assert_eq!(check(&g), Err("flags 0x100 has unknown bits".into()));
    g.tc.u32(ARENA + ms.flags, 0);
    g.tc.u64(ARENA + ms.next, 0);
    assert_eq!(check(&g), Err("arena ring ends in NULL".into()));
    g.tc.u64(ARENA + ms.next, ARENA);
    for i in 20..30 {
        let h = g.bin_head(ARENA, i);
        g.tc.u64(h + 16, NOWHERE);
    }
    assert_eq!(
        check(&g),
        Err("10 of 127 bin heads are inconsistent".into())
    );
    // Then no model finds main_arena: an error that says why, not a panic.
    let p = g.tc.process();
    let e = analyze(&p, std::slice::from_ref(&g.m))
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("could not find glibc's main_arena"), "{e}");
}
