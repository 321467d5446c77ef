//! glibc malloc (ptmalloc2): every arena, heap, chunk and free list of a core.
//!
//! Layout facts come from `heap-models/glibc/*.toml` (chosen by the detected version, then
//! confirmed by invariants; when the version is unknown every model is tried). The walk:
//! main heap from `mp_.sbrk_base` to `top`; each thread arena's heaps through heap_info
//! `prev`; mmapped chunks found in anonymous memory; free lists (bins, fastbins, the tcache
//! of every thread) decoded with safe-linking detected from the data. Chunks come out in
//! address order with their state. Damage is a diagnostic; the walk resumes.
//!
//! Sources: glibc malloc/malloc.c and malloc/arena.c at each release tag
//! (layouts.md §A); the chunk/heap arithmetic below cites the macro it mirrors.

pub mod classes;
pub mod locate;
#[cfg(test)]
pub(crate) mod tests;

pub use locate::FoundBy;

use crate::addr::{Addr, Range};
use crate::error::{Diagnostic, Diagnostics};
use crate::image::process::Process;
use crate::models::{CountsMean, Epoch, GlibcModel, Version};
use serde::Serialize;
use std::collections::HashSet;

/// HEAP_MAX_SIZE on LP64: 2 * DEFAULT_MMAP_THRESHOLD_MAX = 64 MiB (malloc/arena.c).
pub const HEAP_MAX_SIZE: u64 = 64 << 20;
/// MINSIZE (malloc.c) on LP64.
pub const MINSIZE: u64 = 0x20;
const PREV_INUSE: u64 = 1;
const IS_MMAPPED: u64 = 2;
const NON_MAIN_ARENA: u64 = 4;

pub use crate::image::memory::Reader;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ChunkState {
    InUse = 0,
    Tcache = 1,
    Fastbin = 2,
    Unsorted = 3,
    SmallBin = 4,
    LargeBin = 5,
    Top = 6,
    Mmapped = 7,
    /// Free by its neighbour's PREV_INUSE bit but on no list (damage, or a list we could
    /// not read).
    FreeUnlisted = 8,
}

impl ChunkState {
    fn from_bits(b: u64) -> ChunkState {
        match b {
            0 => ChunkState::InUse,
            1 => ChunkState::Tcache,
            2 => ChunkState::Fastbin,
            3 => ChunkState::Unsorted,
            4 => ChunkState::SmallBin,
            5 => ChunkState::LargeBin,
            6 => ChunkState::Top,
            7 => ChunkState::Mmapped,
            _ => ChunkState::FreeUnlisted,
        }
    }
    /// Live from the application's point of view (tcache and fastbin chunks are not).
    pub fn is_live(self) -> bool {
        matches!(self, ChunkState::InUse | ChunkState::Mmapped)
    }
}

/// One chunk: address of its header, chunk size (with header), state. 16 bytes: the
/// state lives in the low bits of the size, which are always zero (sizes are 16-aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub addr: Addr,
    size_state: u64,
}

impl Chunk {
    pub fn new(addr: Addr, size: u64, state: ChunkState) -> Chunk {
        Chunk {
            addr,
            size_state: (size & !0xf) | state as u64,
        }
    }
    #[inline]
    pub fn size(&self) -> u64 {
        self.size_state & !0xf
    }
    #[inline]
    pub fn state(&self) -> ChunkState {
        ChunkState::from_bits(self.size_state & 0xf)
    }
    /// Address the application holds (chunk2mem).
    #[inline]
    pub fn user(&self) -> Addr {
        self.addr.wrapping_add(16)
    }
    /// Bytes the application may use: chunksize - SIZE_SZ, or - 2*SIZE_SZ when mmapped.
    pub fn usable(&self) -> u64 {
        match self.state() {
            ChunkState::Mmapped => self.size().saturating_sub(16),
            _ => self.size().saturating_sub(8),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, schemars::JsonSchema, PartialEq, Eq)]
pub struct Count {
    /// Chunks ("count" in JSON, the one vocabulary of every command).
    #[serde(rename = "count")]
    pub chunks: u64,
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.chunks += 1;
        // Sizes come from chunk headers in the core: damaged ones saturate, never overflow.
        self.bytes = self.bytes.saturating_add(bytes);
    }
}

#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct FreeKinds {
    pub tcache: Count,
    pub fastbins: Count,
    pub unsorted: Count,
    pub smallbins: Count,
    pub largebins: Count,
    /// Free by the heap's own bits but on no list: should be empty.
    pub unlisted: Count,
}

impl FreeKinds {
    pub fn total(&self) -> Count {
        let mut c = Count::default();
        for k in [
            &self.tcache,
            &self.fastbins,
            &self.unsorted,
            &self.smallbins,
            &self.largebins,
            &self.unlisted,
        ] {
            c.chunks += k.chunks;
            c.bytes = c.bytes.saturating_add(k.bytes);
        }
        c
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct HeapSpan {
    pub address: Addr,
    pub size: u64,
}

/// Which arena: `main_arena` (the sbrk heap) or a thread arena (mmapped heaps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArenaKind {
    Main,
    Thread,
}

/// How a thread's tcache_perthread_struct was found (`find_tcaches`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TcacheFoundBy {
    /// A word below the thread pointer (libc's `tcache` TLS variable).
    Tls,
    /// Validating an in-use chunk of the struct's size.
    HeapScan,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Arena {
    pub address: Addr,
    pub kind: ArenaKind,
    pub heaps: Vec<HeapSpan>,
    pub system_bytes: u64,
    pub in_use: Count,
    pub free: FreeKinds,
    pub top_bytes: u64,
    pub overhead_bytes: u64,
    pub largest_free: u64,
    /// 1 - largest free chunk / free bytes (top excluded): 0 when the free memory is one
    /// hole, near 1 when it is scattered in many small ones.
    pub fragmentation: f64,
    /// system_bytes = in_use + overhead + free + top, checked.
    pub identity_holds: bool,
    #[serde(skip)]
    pub(crate) top: Addr,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TcacheInfo {
    /// Address of the tcache_perthread_struct (user pointer of its chunk).
    pub address: Addr,
    /// Thread whose TLS `tcache` slot points here, when found that way.
    pub tid: Option<u32>,
    pub found_by: TcacheFoundBy,
    #[serde(rename = "count")]
    pub chunks: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GlibcHeap {
    pub version: Option<String>,
    pub model: String,
    pub main_arena: Addr,
    pub main_arena_found_by: FoundBy,
    pub mp: Option<Addr>,
    pub mp_found_by: Option<FoundBy>,
    /// Safe-linking as detected in the free lists (None: no list to tell from).
    pub safe_linking: Option<bool>,
    pub arenas: Vec<Arena>,
    /// mmapped chunks; `bytes` are the bytes mapped for them, as glibc counts them.
    pub mmapped: Count,
    pub tcaches: Vec<TcacheInfo>,
    #[serde(skip)]
    pub chunks: Vec<Chunk>,
    /// The allocator's own bookkeeping outside the heaps: `main_arena`'s malloc_state
    /// and `mp_` (in libc's .data), as (start, end). Their words point at chunk headers
    /// (top, bins, fastbins), not at data: a native reference scan leaves them out.
    #[serde(skip)]
    pub bookkeeping: Vec<(u64, u64)>,
    /// Reported once, by the analysis that owns this walk (never twice in JSON).
    #[serde(skip)]
    pub diagnostics: Diagnostics,
}

impl GlibcHeap {
    /// Live chunks (in use in an arena, or mmapped), in address order.
    pub fn live(&self) -> impl Iterator<Item = &Chunk> {
        self.chunks.iter().filter(|c| c.state().is_live())
    }
}

/// A heap region to walk linearly.
struct Region {
    arena: usize,
    /// Where the region starts (heap_info, or sbrk_base) — for overhead accounting.
    base: Addr,
    first_chunk: Addr,
    end: Addr,
}

/// Walk glibc's heap in the process. `Ok(None)` when the process has no glibc.
pub fn analyze(p: &Process, models: &[GlibcModel]) -> crate::Result<Option<GlibcHeap>> {
    analyze_excluding(p, models, &[])
}

/// [`analyze`], told of memory that other allocators own (pymalloc's arenas, which CPython
/// maps itself): the search for mmapped chunks skips it instead of reading each of its
/// pages.
pub fn analyze_excluding(
    p: &Process,
    models: &[GlibcModel],
    exclude: &[Range],
) -> crate::Result<Option<GlibcHeap>> {
    analyze_excluding_with(p, models, &|| exclude.to_vec())
}

/// [`analyze_excluding`], with the ranges asked for only when the search for mmapped
/// chunks needs them (the last step of a walk): the arenas and chunks can be walked while
/// another thread walks pymalloc, whose arenas are the ranges.
pub fn analyze_excluding_with(
    p: &Process,
    models: &[GlibcModel],
    exclude: &(dyn Fn() -> Vec<Range> + Sync),
) -> crate::Result<Option<GlibcHeap>> {
    let sorted = std::sync::OnceLock::new();
    let exclude = &|| -> &[Range] {
        sorted.get_or_init(|| {
            let mut v = exclude();
            v.sort();
            v
        })
    };
    let Some(libc) = crate::image::version::libc_module(p) else {
        return Ok(None);
    };
    // The version may be unknown (no banner readable): then every model is tried.
    let g = crate::image::version::detect_glibc(p);
    let version = g.as_ref().and_then(|g| Version::parse(&g.version));
    let version_text = g.as_ref().map(|g| g.version.clone());
    // The version's model first, then the others (newest first) as a fallback.
    let mut order: Vec<&GlibcModel> = models
        .iter()
        .filter(|m| version.is_some_and(|v| m.covers(v)))
        .collect();
    let mut rest: Vec<&GlibcModel> = models
        .iter()
        .filter(|m| !order.iter().any(|o| o.name == m.name))
        .collect();
    rest.reverse();
    // Nearest to the version first (newest first when it is unknown).
    if let Some(v) = version {
        rest.sort_by_key(|m| m.distance(v));
    }
    order.extend(rest);
    let r = Reader { space: &p.space };
    let mut errors = Vec::new();
    let exact = order
        .first()
        .is_some_and(|m| version.is_some_and(|v| m.covers(v)));
    // Without the version's model, every model whose arena invariants hold is walked and
    // the most consistent walk wins: the system-bytes identity holds, fewest warnings,
    // most tcache chunks found (a wrong tcache layout finds none).
    type Score = (bool, usize, std::cmp::Reverse<u64>);
    let mut best: Option<(Score, GlibcHeap)> = None;
    for (i, model) in order.iter().enumerate() {
        let Some((arena, how)) = locate::find_main_arena(p, &r, libc, model, &mut errors) else {
            continue;
        };
        let mp = locate::find_mp(p, libc, model);
        let mut heap = walk(p, &r, model, arena, how, mp, exclude);
        heap.version = version_text.clone();
        if i == 0 && exact {
            for e in &errors {
                heap.diagnostics.push(Diagnostic::warning(e.clone()));
            }
            return Ok(Some(heap));
        }
        let warnings = heap
            .diagnostics
            .iter()
            .filter(|d| d.severity >= crate::error::Severity::Warning)
            .count()
            + heap.diagnostics.suppressed() as usize;
        let tcache: u64 = heap.tcaches.iter().map(|t| t.chunks).sum();
        let identity = heap.arenas.iter().all(|a| a.identity_holds);
        let score = (!identity, warnings, std::cmp::Reverse(tcache));
        if best.as_ref().is_none_or(|(s, _)| score < *s) {
            best = Some((score, heap));
        }
    }
    if let Some((_, mut heap)) = best {
        heap.diagnostics.push(Diagnostic::warning(match &version_text {
            Some(v) => format!(
                "glibc {v}: no layout model is known to cover this version; the {} model's walk is the most consistent and was used",
                heap.model
            ),
            None => format!(
                "glibc's version is not readable (no banner in the core or in a verified file); the {} model's walk is the most consistent and was used",
                heap.model
            ),
        }));
        return Ok(Some(heap));
    }
    let detail = if errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", errors.join("; "))
    };
    Err(crate::Error::Other(format!(
        "could not find glibc's main_arena in {} (glibc {}){detail}",
        libc.path,
        version_text.as_deref().unwrap_or("of unknown version")
    )))
}

/// The walk of [`analyze`] with the main arena, `mp_` and model an earlier walk found
/// (`base`): the fuzzing harness walks patched memory without locating glibc again.
#[doc(hidden)]
pub fn walk_as(p: &Process, model: &GlibcModel, base: &GlibcHeap) -> GlibcHeap {
    let r = Reader { space: &p.space };
    let mp = base.mp.zip(base.mp_found_by);
    walk(
        p,
        &r,
        model,
        base.main_arena,
        base.main_arena_found_by,
        mp,
        &|| &[],
    )
}

fn bin_state(i: u64) -> ChunkState {
    match i {
        1 => ChunkState::Unsorted,
        2..=63 => ChunkState::SmallBin,
        _ => ChunkState::LargeBin,
    }
}

struct Walk<'a> {
    r: &'a Reader<'a>,
    model: &'a GlibcModel,
    diags: Diagnostics,
}

impl Walk<'_> {
    fn warn(&mut self, a: Addr, msg: String) {
        self.diags.push(Diagnostic::warning(msg).at(a));
    }

    /// Heaps of a thread arena: newest (holding top) first, following heap_info `prev`.
    fn thread_heaps(&mut self, a: Addr, top: Addr) -> Vec<(Addr, u64)> {
        let hi = &self.model.heap_info;
        let mut out = Vec::new();
        let mut h = top.align_down(HEAP_MAX_SIZE);
        let mut seen = HashSet::new();
        while !h.is_null() && seen.insert(h) && out.len() < 100_000 {
            let (Some(ar), Some(size), Some(prev)) = (
                self.r.u64(h.wrapping_add(hi.ar_ptr)),
                self.r.u64(h.wrapping_add(hi.hsize)),
                self.r.u64(h.wrapping_add(hi.prev)),
            ) else {
                self.warn(h, format!("heap_info of arena {a} is not readable"));
                break;
            };
            if ar != a.0 || size > HEAP_MAX_SIZE || size < hi.size {
                self.warn(
                    h,
                    format!(
                        "heap_info does not belong to arena {a} (ar_ptr {ar:#x}, size {size:#x})"
                    ),
                );
                break;
            }
            out.push((h, size));
            h = Addr(prev);
        }
        out
    }

    /// Linear walk of one region. Returns chunks (states: InUse / Top / FreeUnlisted
    /// provisional) and the bytes the chunks cover.
    fn walk_region(&mut self, reg: &Region, top: Addr, out: &mut Vec<Chunk>) -> u64 {
        // The whole region as one slice when it lies in one piece of the core (the usual
        // case): header reads are then plain loads, not address-space lookups.
        let r = self.r;
        let base = reg.base.0;
        let fast = r.space.slice(reg.base, reg.end.0.saturating_sub(base));
        let rd = |a: u64| -> Option<u64> {
            if let Some(s) = fast {
                let o = a.wrapping_sub(base) as usize;
                if let Some(b) = s.get(o..o.wrapping_add(8)) {
                    return Some(u64::from_le_bytes(b.try_into().unwrap()));
                }
            }
            r.u64(Addr(a))
        };
        let mut p = reg.first_chunk;
        let mut covered = 0u64;
        let max_steps = (reg.end.0.saturating_sub(p.0)) / MINSIZE + 2;
        let mut steps = 0u64;
        // Top is a chunk of this heap's chain when the heap holds it (malloc.c
        // do_check_malloc_state walks the chunks up to top): a size that runs over it is
        // damage, or top's bytes would silently be counted as that chunk's.
        let holds_top = reg.first_chunk <= top && top < reg.end;
        // Behind the walk, the core's page-table entries are dropped every 64 MiB (a heap
        // of 10 M chunks would otherwise stay resident as the core's pages).
        let mut release_at = p.0.saturating_add(64 << 20);
        while p < reg.end && steps < max_steps {
            steps += 1;
            if p.0 >= release_at {
                r.space.release_pages();
                release_at = p.0.saturating_add(64 << 20);
            }
            let Some(raw) = rd(p.0.wrapping_add(8)) else {
                self.warn(
                    p,
                    "chunk header not readable; rest of the heap skipped".into(),
                );
                break;
            };
            let size = raw & !7;
            if p == top {
                out.push(Chunk::new(p, size, ChunkState::Top));
                covered += size.min(reg.end.0 - p.0);
                break;
            }
            if size == 0x10 && raw & PREV_INUSE != 0 {
                // Fencepost at the end of a retired heap (sysmalloc): the rest is overhead.
                break;
            }
            let next = p.0.checked_add(size);
            let bad = size < MINSIZE || size % 16 != 0 || next.is_none_or(|n| n > reg.end.0);
            let over_top = holds_top && p < top && next.is_some_and(|n| n > top.0);
            if bad || over_top {
                self.warn(
                    p,
                    if bad {
                        format!("impossible chunk size {raw:#x}; resynchronising")
                    } else {
                        format!("chunk size {raw:#x} runs over top ({top}); resynchronising")
                    },
                );
                match self.resync(p, reg.end, top) {
                    Some(q) => {
                        p = q;
                        continue;
                    }
                    None => {
                        self.warn(
                            p,
                            "no plausible chunk found after the damage; rest of the heap skipped"
                                .into(),
                        );
                        break;
                    }
                }
            }
            let next = Addr(next.unwrap());
            // A chunk is free (in a bin) when the next chunk's PREV_INUSE is clear.
            let free = if next < reg.end {
                rd(next.0.wrapping_add(8)).is_some_and(|n| n & PREV_INUSE == 0)
            } else {
                false
            };
            out.push(Chunk::new(
                p,
                size,
                if free {
                    ChunkState::FreeUnlisted
                } else {
                    ChunkState::InUse
                },
            ));
            covered += size;
            p = next;
        }
        covered
    }

    /// After damage at `p`, the next address (16-aligned, within 1 MiB) where three
    /// consecutive plausible chunks start (or that reaches top).
    fn resync(&mut self, p: Addr, end: Addr, top: Addr) -> Option<Addr> {
        let limit = end.0.min(p.0.saturating_add(1 << 20));
        let mut q = p.0 + 16;
        'cand: while q < limit {
            let mut c = q;
            for _ in 0..3 {
                if c == top.0 {
                    return Some(Addr(q));
                }
                let s = self.r.u64(Addr(c.wrapping_add(8)))? & !7;
                if s < MINSIZE || s % 16 != 0 || c.checked_add(s).is_none_or(|e| e > end.0) {
                    q += 16;
                    continue 'cand;
                }
                c += s;
            }
            return Some(Addr(q));
        }
        None
    }
}

/// Which decoding of singly linked free lists (tcache next, fastbin fd) is in force.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Linking {
    Plain,
    Safe,
}

fn decode(l: Linking, pos: u64, stored: u64) -> u64 {
    match l {
        Linking::Plain => stored,
        // PROTECT_PTR(pos, ptr) = (pos >> 12) ^ ptr (glibc 2.32 malloc.c); REVEAL is the same.
        Linking::Safe => (pos >> 12) ^ stored,
    }
}

/// `listed[i]` when no free list holds chunk i (otherwise the `ChunkState` a list gives it).
const NOT_LISTED: u8 = 0xff;

/// The index of the chunk whose header is at `a` (chunks sorted by address).
fn chunk_at(chunks: &[Chunk], a: u64) -> Option<usize> {
    chunks.binary_search_by_key(&a, |c| c.addr.0).ok()
}

/// Whether `a` lies in a heap region (`heaps` sorted by start, non-overlapping).
fn in_heaps(heaps: &[(Range, usize)], a: u64) -> bool {
    let i = heaps.partition_point(|(r, _)| r.start.0 <= a);
    i > 0 && heaps[i - 1].0.contains(Addr(a))
}

/// A singly linked free list: a fastbin or a tcache bin.
struct FreeList {
    /// Address of the first chunk's header.
    head: u64,
    /// Size every chunk of the list must have, when the bin has one size.
    expect: Option<u64>,
    /// Chunks on the list, when the tcache struct counts them.
    count: Option<u64>,
    state: ChunkState,
    /// Index of the tcache the list belongs to; `usize::MAX` for a fastbin.
    owner: usize,
}

/// Follow `l` under `link`: the indices of its chunks, or `None` when it leaves the heap's
/// chunks, meets a chunk of the wrong size or misaligned, does not end within `max_list`
/// steps, or disagrees with its count.
fn follow(
    r: &Reader,
    chunks: &[Chunk],
    l: &FreeList,
    link: Linking,
    max_list: u64,
) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    let mut c = l.head;
    let limit = l.count.map(|n| n + 1).unwrap_or(max_list).min(max_list);
    for _ in 0..limit {
        if c % 16 != 0 {
            return None;
        }
        let idx = chunk_at(chunks, c)?;
        if l.expect.is_some_and(|e| chunks[idx].size() != e) {
            return None;
        }
        out.push(idx);
        let pos = c.wrapping_add(16);
        let stored = r.u64(Addr(pos))?;
        let next = decode(link, pos, stored);
        if next == 0 {
            return match l.count {
                Some(n) if n != out.len() as u64 => None,
                _ => Some(out),
            };
        }
        // tcache links point at user memory (tcache_entry is the chunk's mem); fastbin
        // links at chunks (malloc.c: fd of a malloc_chunk).
        c = if l.state == ChunkState::Tcache {
            next.wrapping_sub(16)
        } else {
            next
        };
    }
    None
}

/// The stages of one model's walk, in order (their diagnostics come out in this order):
/// the arena ring, each arena's heaps, the linear chunk walk of every heap, the bins, the
/// singly linked lists (fastbins, tcaches) with the safe-linking decision, the chunks'
/// final states and per-arena sums, the accounting identity, and the mmapped chunks.
fn walk<'e>(
    p: &Process,
    r: &Reader,
    model: &GlibcModel,
    main: Addr,
    how: FoundBy,
    mp: Option<(Addr, FoundBy)>,
    exclude: &dyn Fn() -> &'e [Range],
) -> GlibcHeap {
    let mut w = Walk {
        r,
        model,
        diags: Diagnostics::default(),
    };
    let arena_addrs = w.arena_ring(main);
    let (mut arenas, mut regions) = w.arenas(p, &arena_addrs, main, mp.map(|m| m.0));
    regions.sort_by_key(|r| r.first_chunk);
    let heap_ranges: Vec<(Range, usize)> = regions
        .iter()
        .map(|g| (Range::new(g.base, g.end), g.arena))
        .collect();
    let (mut chunks, covered_by_arena) = w.walk_regions(&regions, &arenas);
    let mut listed = w.bins(&arena_addrs, &chunks);
    let mut lists = w.fastbin_lists(&arena_addrs);
    let tcaches = find_tcaches(p, r, model, &chunks, &|a| in_heaps(&heap_ranges, a));
    lists.extend(w.tcache_lists(&tcaches));
    let (safe_linking, tcache_totals) =
        w.singly_linked(&lists, &chunks, &mut listed, tcaches.len());
    w.final_states(&mut chunks, &listed, &heap_ranges, &mut arenas);
    w.accounting(&mut arenas, &covered_by_arena);
    let mmapped = w.mmapped(p, mp.map(|m| m.0), &heap_ranges, exclude(), &mut chunks);

    let tcache_info = tcaches
        .iter()
        .zip(tcache_totals)
        .map(|(t, tot)| TcacheInfo {
            address: Addr(t.address),
            tid: t.tid,
            found_by: t.found_by,
            chunks: tot.chunks,
            bytes: tot.bytes,
        })
        .collect();

    GlibcHeap {
        version: None,
        model: model.name.clone(),
        main_arena: main,
        main_arena_found_by: how,
        mp: mp.map(|m| m.0),
        mp_found_by: mp.map(|m| m.1),
        safe_linking,
        arenas,
        mmapped,
        tcaches: tcache_info,
        chunks,
        bookkeeping: std::iter::once((main.0, main.0 + model.malloc_state.size))
            .chain(mp.map(|m| (m.0 .0, m.0 .0 + model.malloc_par.size)))
            .collect(),
        diagnostics: w.diags,
    }
}

impl Walk<'_> {
    /// The arenas: main_arena, then the ring through `malloc_state.next`, which returns to
    /// main_arena (malloc/arena.c _int_new_arena links each new arena in after it).
    /// Bounded, and stopped with a warning when the ring loops elsewhere.
    fn arena_ring(&mut self, main: Addr) -> Vec<Addr> {
        let ms = &self.model.malloc_state;
        let mut arena_addrs = vec![main];
        let mut cur = main;
        for _ in 0..4096 {
            match self.r.u64(cur.wrapping_add(ms.next)) {
                Some(n) if n != main.0 && n != 0 => {
                    if arena_addrs.contains(&Addr(n)) {
                        self.warn(
                            cur,
                            "arena ring loops without returning to main_arena".into(),
                        );
                        break;
                    }
                    arena_addrs.push(Addr(n));
                    cur = Addr(n);
                }
                _ => break,
            }
        }
        arena_addrs
    }

    /// Each arena's record (sums still empty) and the heap regions to walk. The main arena
    /// has one sbrk heap, [mp_.sbrk_base, top + chunksize(top)) when contiguous (malloc.c
    /// do_check_malloc_state: sbrk_base + system_mem == top + chunksize(top)); before the
    /// first malloc its top is the initial_top of malloc_init_state (bin_at(av, 1)), and
    /// it has none. A thread arena has the heaps of `thread_heaps`; in the first one the
    /// arena struct itself precedes the chunks (arena.c _int_new_arena).
    fn arenas(
        &mut self,
        p: &Process,
        arena_addrs: &[Addr],
        main: Addr,
        mp: Option<Addr>,
    ) -> (Vec<Arena>, Vec<Region>) {
        let r = self.r;
        let model = self.model;
        let ms = &model.malloc_state;
        let mut arenas = Vec::new();
        let mut regions: Vec<Region> = Vec::new();
        for (i, &a) in arena_addrs.iter().enumerate() {
            let top = Addr(r.u64(a.wrapping_add(ms.top)).unwrap_or(0));
            let system = r.u64(a.wrapping_add(ms.system_mem)).unwrap_or(0);
            let initial_top = Addr(a.wrapping_add(ms.bins).0.wrapping_sub(16));
            let mut heaps = Vec::new();
            if i == 0 {
                if top != initial_top && !top.is_null() {
                    let top_size = r.u64(top.wrapping_add(8)).unwrap_or(0) & !7;
                    let top_end = top.wrapping_add(top_size);
                    let sbrk_base = mp
                        .and_then(|m| r.u64(m.wrapping_add(model.malloc_par.sbrk_base)))
                        .filter(|&b| b != 0)
                        .map(Addr)
                        .unwrap_or_else(|| {
                            // No mp_: the brk heap starts at its mapping's start.
                            let s = p.core.segments.iter().find(|s| s.range().contains(top));
                            s.map(|s| s.vaddr).unwrap_or(top)
                        });
                    if sbrk_base.0.wrapping_add(system) != top_end.0 {
                        self.warn(
                            main,
                            format!(
                                "main arena is not contiguous (sbrk_base {sbrk_base} + system_mem {system:#x} != end of top {top_end}); only the region holding top is walked"
                            ),
                        );
                    }
                    let first = sbrk_base.align_up(16).unwrap_or(sbrk_base);
                    let base = Addr(top_end.0.saturating_sub(system)).max(sbrk_base);
                    regions.push(Region {
                        arena: 0,
                        base,
                        first_chunk: first,
                        end: top_end,
                    });
                    heaps.push(HeapSpan {
                        address: sbrk_base,
                        size: top_end.0.saturating_sub(sbrk_base.0),
                    });
                }
            } else {
                let hs = self.thread_heaps(a, top);
                let hi = &model.heap_info;
                for (h, size) in hs {
                    let first_heap = a.0 == h.0.wrapping_add(hi.size);
                    let first = if first_heap {
                        // _int_new_arena: top = align so chunk2mem is aligned, after the arena.
                        a.wrapping_add(ms.size).align_up(16).unwrap_or(a)
                    } else {
                        h.wrapping_add(hi.size)
                    };
                    regions.push(Region {
                        arena: i,
                        base: h,
                        first_chunk: first,
                        end: h.wrapping_add(size),
                    });
                    heaps.push(HeapSpan { address: h, size });
                }
                heaps.reverse();
            }
            arenas.push(Arena {
                address: a,
                kind: if i == 0 {
                    ArenaKind::Main
                } else {
                    ArenaKind::Thread
                },
                heaps,
                system_bytes: system,
                in_use: Count::default(),
                free: FreeKinds::default(),
                top_bytes: 0,
                overhead_bytes: 0,
                largest_free: 0,
                fragmentation: 0.0,
                identity_holds: false,
                top,
            });
        }
        (arenas, regions)
    }

    /// The linear walk of every region (`walk_region`): all chunks in address order, and
    /// the bytes the chunks cover in each arena (the rest of its heaps is overhead).
    fn walk_regions(&mut self, regions: &[Region], arenas: &[Arena]) -> (Vec<Chunk>, Vec<u64>) {
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut covered_by_arena = vec![0u64; arenas.len()];
        for reg in regions {
            let top = arenas[reg.arena].top;
            covered_by_arena[reg.arena] += self.walk_region(reg, top, &mut chunks);
        }
        chunks.sort_by_key(|c| c.addr);
        (chunks, covered_by_arena)
    }

    /// The doubly linked bins of every arena, followed through `bk` from the bin header
    /// (malloc.c bin_at(m, i): the fake chunk whose fd/bk overlay bins[2(i-1)], so its
    /// address is 16 bytes before them; bin 1 is unsorted, 2..63 small, 64..127 large).
    /// Returns the state the bins give each chunk (`NOT_LISTED`: none). A list that loops,
    /// leaves the heap's chunks or joins another ends with a warning.
    fn bins(&mut self, arena_addrs: &[Addr], chunks: &[Chunk]) -> Vec<u8> {
        let r = self.r;
        let ms = &self.model.malloc_state;
        let max_list = chunks.len() as u64 + 1;
        let mut listed: Vec<u8> = vec![NOT_LISTED; chunks.len()];
        for (ai, &a) in arena_addrs.iter().enumerate() {
            for i in 1..128u64 {
                let head = a.wrapping_add(ms.bins + 16 * (i - 1)).0.wrapping_sub(16);
                // `a` is read from the arena ring in the core: wrapping, like the walk's reads.
                let mut q = r.u64(Addr(head.wrapping_add(24))).unwrap_or(head);
                let mut n = 0u64;
                while q != head {
                    n += 1;
                    if n > max_list {
                        self.warn(Addr(head), format!("bin {i} of arena {ai} loops; stopped"));
                        break;
                    }
                    let Some(idx) = chunk_at(chunks, q) else {
                        self.warn(Addr(q), format!("bin {i} of arena {a} points at {q:#x}, which is not a chunk of any heap; rest of the list skipped"));
                        break;
                    };
                    if std::mem::replace(&mut listed[idx], bin_state(i) as u8) != NOT_LISTED {
                        self.warn(
                            Addr(q),
                            format!("bin {i}: chunk seen twice (the list loops or joins another list); rest of the list skipped"),
                        );
                        break;
                    }
                    match r.u64(Addr(q.wrapping_add(24))) {
                        Some(b) => q = b,
                        None => break,
                    }
                }
            }
        }
        listed
    }

    /// Each arena's non-empty fastbins (malloc.c malloc_state.fastbinsY: chunk pointers;
    /// fastbin i holds chunks of 32 + 16 i bytes on LP64, fastbin_index).
    fn fastbin_lists(&self, arena_addrs: &[Addr]) -> Vec<FreeList> {
        let ms = &self.model.malloc_state;
        let mut lists = Vec::new();
        if let Some(fastbins) = ms.fastbins {
            for &a in arena_addrs {
                for i in 0..ms.nfastbins {
                    if let Some(c) = self.r.u64(a.wrapping_add(fastbins + 8 * i)) {
                        if c != 0 {
                            lists.push(FreeList {
                                head: c,
                                expect: Some(32 + 16 * i),
                                count: None,
                                state: ChunkState::Fastbin,
                                owner: usize::MAX,
                            });
                        }
                    }
                }
            }
        }
        lists
    }

    /// Each tcache's non-empty bins (malloc.c tcache_perthread_struct.entries: user
    /// pointers, tcache_entry; bin i holds chunks of 32 + 16 i bytes, csize2tidx). Bins
    /// from the model's `small_bins` on hold a range of sizes, so no size is expected.
    fn tcache_lists(&self, tcaches: &[FoundTcache]) -> Vec<FreeList> {
        let mut lists = Vec::new();
        for (ti, t) in tcaches.iter().enumerate() {
            for (bin, head, count) in &t.bins {
                let small = self
                    .model
                    .tcache
                    .as_ref()
                    .and_then(|t| t.small_bins)
                    .unwrap_or(u64::MAX);
                let expect = (*bin < small).then_some(32 + 16 * bin);
                lists.push(FreeList {
                    head: head - 16,
                    expect,
                    count: *count,
                    state: ChunkState::Tcache,
                    owner: ti,
                });
            }
        }
        lists
    }

    /// The singly linked lists: safe-linking decided from the data (the decoding under
    /// which more lists end cleanly on heap chunks; glibc 2.32 malloc.c PROTECT_PTR, the
    /// model's expectation on a tie), their chunks marked in `listed`, each tcache summed.
    /// Returns (safe-linking as detected, `None` without lists; per-tcache totals).
    fn singly_linked(
        &mut self,
        lists: &[FreeList],
        chunks: &[Chunk],
        listed: &mut [u8],
        ntcaches: usize,
    ) -> (Option<bool>, Vec<Count>) {
        let (r, model) = (self.r, self.model);
        let max_list = chunks.len() as u64 + 1;
        // Both decodings of every list: the wrong one fails within a step or two, so this
        // costs about one walk of the lists.
        let plain: Vec<Option<Vec<usize>>> = lists
            .iter()
            .map(|l| follow(r, chunks, l, Linking::Plain, max_list))
            .collect();
        let safe: Vec<Option<Vec<usize>>> = lists
            .iter()
            .map(|l| follow(r, chunks, l, Linking::Safe, max_list))
            .collect();
        let plain_ok = plain.iter().filter(|x| x.is_some()).count();
        let safe_ok = safe.iter().filter(|x| x.is_some()).count();
        let safe_linking = if lists.is_empty() {
            None
        } else {
            Some(safe_ok > plain_ok || (safe_ok == plain_ok && model.safe_linking))
        };
        if let Some(s) = safe_linking {
            if s != model.safe_linking {
                self.diags.push(Diagnostic::info(format!(
                    "safe-linking is {} in the free lists, unlike what glibc {}'s model expects",
                    if s { "on" } else { "off" },
                    model.name
                )));
            }
        }
        let decoded = if safe_linking.unwrap_or(model.safe_linking) {
            safe
        } else {
            plain
        };
        let mut tcache_totals = vec![Count::default(); ntcaches];
        for (l, res) in lists.iter().zip(decoded) {
            match res {
                Some(cs) => {
                    for idx in cs {
                        if std::mem::replace(&mut listed[idx], l.state as u8) != NOT_LISTED {
                            self.warn(chunks[idx].addr, "chunk is on more than one free list".into());
                        }
                        if l.owner != usize::MAX {
                            tcache_totals[l.owner].add(chunks[idx].size());
                        }
                    }
                }
                None => self.warn(
                    Addr(l.head),
                    format!(
                        "{} list starting at {:#x} is damaged (leaves the heap, wrong sizes, loops or miscounts); its chunks are counted in use",
                        if l.state == ChunkState::Tcache { "tcache" } else { "fastbin" },
                        l.head
                    ),
                ),
            }
        }
        (safe_linking, tcache_totals)
    }

    /// Each chunk's final state — a list's over the linear walk's, which only knows in
    /// use, top and free-by-the-next-chunk's-PREV_INUSE (malloc.c inuse_bit_at_offset) —
    /// and the per-arena sums. Warns about free chunks on no list and about listed chunks
    /// whose neighbour says they are in use.
    fn final_states(
        &mut self,
        chunks: &mut [Chunk],
        listed: &[u8],
        heap_ranges: &[(Range, usize)],
        arenas: &mut [Arena],
    ) {
        // Chunks and heap ranges are both sorted: one moving index finds each chunk's arena.
        let mut hr = 0usize;
        for (idx, c) in chunks.iter_mut().enumerate() {
            let st = match listed[idx] {
                NOT_LISTED => c.state(),
                s => ChunkState::from_bits(s as u64),
            };
            if st == ChunkState::FreeUnlisted {
                self.warn(
                    c.addr,
                    format!(
                        "chunk of {:#x} bytes is free (next chunk's PREV_INUSE is clear) but on no bin",
                        c.size()
                    ),
                );
            }
            if matches!(
                st,
                ChunkState::Unsorted | ChunkState::SmallBin | ChunkState::LargeBin
            ) && c.state() != ChunkState::FreeUnlisted
            {
                self.warn(
                    c.addr,
                    "chunk on a bin list but its neighbour says it is in use".into(),
                );
            }
            *c = Chunk::new(c.addr, c.size(), st);
            while hr + 1 < heap_ranges.len() && heap_ranges[hr + 1].0.start <= c.addr {
                hr += 1;
            }
            let a = &mut arenas[heap_ranges[hr].1];
            let sz = c.size();
            match st {
                ChunkState::InUse => a.in_use.add(sz),
                ChunkState::Tcache => a.free.tcache.add(sz),
                ChunkState::Fastbin => a.free.fastbins.add(sz),
                ChunkState::Unsorted => a.free.unsorted.add(sz),
                ChunkState::SmallBin => a.free.smallbins.add(sz),
                ChunkState::LargeBin => a.free.largebins.add(sz),
                ChunkState::FreeUnlisted => a.free.unlisted.add(sz),
                ChunkState::Top => a.top_bytes = a.top_bytes.saturating_add(sz),
                ChunkState::Mmapped => {}
            }
            if !matches!(st, ChunkState::InUse | ChunkState::Top) {
                a.largest_free = a.largest_free.max(sz);
            }
        }
    }

    /// Per arena: overhead (every byte of its heaps no chunk covers: heap_info, the arena
    /// struct, alignment, fenceposts and what lies past them), fragmentation, and the
    /// identity system_mem = in use + overhead + free + top (malloc.c int_mallinfo:
    /// arena = system_mem, uordblks = system_mem - avail, avail being the free chunks and
    /// top; overhead is inside uordblks there), warned about when it fails.
    fn accounting(&mut self, arenas: &mut [Arena], covered_by_arena: &[u64]) {
        for (i, a) in arenas.iter_mut().enumerate() {
            let accounted = a
                .in_use
                .bytes
                .saturating_add(a.free.total().bytes)
                .saturating_add(a.top_bytes);
            let span: u64 = a.heaps.iter().fold(0, |s, h| s.saturating_add(h.size));
            a.overhead_bytes = span.saturating_sub(covered_by_arena[i]);
            a.identity_holds = a.system_bytes == accounted.saturating_add(a.overhead_bytes);
            let free = a.free.total().bytes;
            a.fragmentation = if free == 0 {
                0.0
            } else {
                1.0 - a.largest_free as f64 / free as f64
            };
            if !a.identity_holds {
                self.diags.push(
                    Diagnostic::warning(format!(
                        "arena {}: system bytes {} != in use {} + overhead {} + free {} + top {}",
                        a.address,
                        a.system_bytes,
                        a.in_use.bytes,
                        a.overhead_bytes,
                        a.free.total().bytes,
                        a.top_bytes
                    ))
                    .at(a.address),
                );
            }
        }
    }

    /// The mmapped chunks (`find_mmapped`), added to `chunks` in address order and checked
    /// against glibc's own counters mp_.n_mmaps and mp_.mmapped_mem (malloc.c
    /// sysmalloc_mmap and munmap_chunk keep them). Returns their count and mapped bytes.
    fn mmapped(
        &mut self,
        p: &Process,
        mp: Option<Addr>,
        heap_ranges: &[(Range, usize)],
        exclude: &[Range],
        chunks: &mut Vec<Chunk>,
    ) -> Count {
        let (r, model) = (self.r, self.model);
        let mut mmapped = Count::default();
        let mm = find_mmapped(p, r, model, heap_ranges, exclude);
        for (_, map_len) in &mm {
            mmapped.add(*map_len);
        }
        if let Some(m) = mp {
            let mpp = &model.malloc_par;
            if let (Some(n), Some(bytes)) = (
                r.u32(m.wrapping_add(mpp.n_mmaps)),
                r.u64(m.wrapping_add(mpp.mmapped_mem)),
            ) {
                if n as u64 == mmapped.chunks && bytes != mmapped.bytes {
                    // Same chunks, another byte total: glibc's counter drifts when chunks are
                    // mremap'ed (seen on 2.43); the chunks found are what is mapped now.
                    self.diags.push(Diagnostic::info(format!(
                        "mmapped chunks: {} bytes mapped; glibc's mp_.mmapped_mem says {bytes}",
                        mmapped.bytes
                    )));
                } else if n as u64 != mmapped.chunks {
                    self.diags.push(Diagnostic::warning(format!(
                        "mmapped chunks found: {} ({} bytes); glibc's own counters (mp_.n_mmaps, mp_.mmapped_mem) say {n} ({bytes} bytes)",
                        mmapped.chunks, mmapped.bytes
                    )));
                }
            }
        }
        chunks.extend(mm.into_iter().map(|(c, _)| c));
        chunks.sort_by_key(|c| c.addr);
        mmapped
    }
}

struct FoundTcache {
    address: u64,
    tid: Option<u32>,
    found_by: TcacheFoundBy,
    /// (bin index, head user pointer, chunk count when the struct says) of each non-empty bin.
    bins: Vec<(u64, u64, Option<u64>)>,
}

/// Every thread's tcache_perthread_struct: through each thread's TLS (words just below
/// the thread pointer that point at a chunk of the struct's size — pwndbg's brute force,
/// layouts.md §A.12 #8) and by validating every in-use chunk of that size.
fn find_tcaches(
    p: &Process,
    r: &Reader,
    model: &GlibcModel,
    chunks: &[Chunk],
    in_heaps: &dyn Fn(u64) -> bool,
) -> Vec<FoundTcache> {
    let Some(t) = &model.tcache else {
        return Vec::new();
    };
    let csize = model.tcache_chunk_size().unwrap();
    let chunk_size_at = |a: u64| -> Option<u64> {
        chunks
            .binary_search_by_key(&a, |c| c.addr.0)
            .ok()
            .map(|i| chunks[i].size())
    };
    // Validate a candidate struct: counts agree with non-empty entries; entries in heaps.
    let validate = |s: u64| -> Option<Vec<(u64, u64, Option<u64>)>> {
        let mut bins = Vec::new();
        for i in 0..t.bins {
            let raw = match t.count_size {
                1 => r.u8(Addr(s.wrapping_add(t.counts + i)))? as u64,
                _ => r.u16(Addr(s.wrapping_add(t.counts + 2 * i)))? as u64,
            };
            let e = r.u64(Addr(s.wrapping_add(t.entries + 8 * i)))?;
            let count = match t.counts_mean {
                CountsMean::Used => Some(raw),
                // 2.42+: num_slots counts down from the bin's capacity; the chain's end is
                // the truth there.
                CountsMean::FreeSlots => None,
            };
            if e == 0 {
                if t.counts_mean == CountsMean::Used && raw != 0 {
                    return None;
                }
                continue;
            }
            if e % 16 != 0 || !in_heaps(e - 16) || chunk_size_at(e - 16).is_none() {
                return None;
            }
            if t.counts_mean == CountsMean::Used && (raw == 0 || raw > 0xffff) {
                return None;
            }
            bins.push((i, e, count));
        }
        Some(bins)
    };
    let mut found: Vec<FoundTcache> = Vec::new();
    // TLS: the tcache pointer is an initial-exec TLS variable of libc, below the thread
    // pointer on x86_64 (TLS variant II). Scan 4 KiB below each thread pointer.
    for th in &p.core.threads {
        let Some(tp) = th.thread_pointer else {
            continue;
        };
        for off in (8..=0x1000u64).step_by(8) {
            let Some(v) = r.u64(Addr(tp.0.wrapping_sub(off))) else {
                break;
            };
            if v < 16 || v % 16 != 0 || chunk_size_at(v - 16) != Some(csize) {
                continue;
            }
            if let Some(bins) = validate(v) {
                if !found.iter().any(|f| f.address == v) {
                    found.push(FoundTcache {
                        address: v,
                        tid: Some(th.tid),
                        found_by: TcacheFoundBy::Tls,
                        bins,
                    });
                }
                break;
            }
        }
    }
    // Heap scan: threads whose TLS we could not read, and threads that share an arena.
    for c in chunks {
        if c.size() != csize || c.state() != ChunkState::InUse {
            continue;
        }
        let s = c.user().0;
        if found.iter().any(|f| f.address == s) {
            continue;
        }
        if let Some(bins) = validate(s) {
            if !bins.is_empty() {
                found.push(FoundTcache {
                    address: s,
                    tid: None,
                    found_by: TcacheFoundBy::HeapScan,
                    bins,
                });
            }
        }
    }
    found
}

/// mmapped chunks (malloc.c sysmalloc_mmap): page-aligned header with prev_size 0 (the
/// front-misalignment correction, normally 0) and IS_MMAPPED set, PREV_INUSE and
/// NON_MAIN_ARENA clear, a page-multiple size that fits the anonymous memory it is in.
/// Adjacent anonymous mappings merge into one segment, so a segment can hold several.
/// Returns each chunk with the length of its mapping (what `mp_.mmapped_mem` counts).
fn find_mmapped(
    p: &Process,
    r: &Reader,
    model: &GlibcModel,
    heaps: &[(Range, usize)],
    exclude: &[Range],
) -> Vec<(Chunk, u64)> {
    let page = p.core.page_size;
    let tail = model.mmap_chunk_tail;
    let mut out = Vec::new();
    let file_backed = |rg: Range| p.file_backed(rg);
    let stacks: Vec<Addr> = p.core.threads.iter().map(|t| t.sp).collect();
    for s in &p.core.segments {
        let rg = Range::new(s.vaddr, s.vaddr.wrapping_add(s.in_core));
        if s.in_core < page || s.flags & 2 == 0 || file_backed(rg) {
            continue;
        }
        if stacks.iter().any(|&sp| rg.contains(sp)) {
            continue;
        }
        // Arena heaps (64 MiB reservations) and the main heap are not mmapped chunks.
        let reserved = |a: Addr| {
            heaps.iter().any(|(h, arena)| {
                h.contains(a)
                    || (*arena != 0
                        && a.align_down(HEAP_MAX_SIZE) == h.start.align_down(HEAP_MAX_SIZE))
            })
        };
        let mut a = rg.start.align_up(page).unwrap_or(rg.end);
        while a.wrapping_add(16) <= rg.end {
            // Memory another allocator owns: skipped whole (sorted ranges).
            let i = exclude.partition_point(|x| x.start <= a);
            if let Some(x) = i
                .checked_sub(1)
                .map(|i| exclude[i])
                .filter(|x| x.contains(a))
            {
                a = x.end.align_up(page).unwrap_or(rg.end);
                continue;
            }
            if reserved(a) {
                a = a.wrapping_add(page);
                continue;
            }
            let (Some(prev), Some(raw)) = (r.u64(a), r.u64(a.wrapping_add(8))) else {
                break;
            };
            let size = raw & !7;
            // The chunk fills its mapping exactly up to 2.42; 2.43 leaves the mapping's
            // last 16 bytes out of the chunk (model: mmap_chunk_tail).
            let map_len = size.wrapping_add(tail);
            if prev == 0
                && raw & IS_MMAPPED != 0
                && raw & (PREV_INUSE | NON_MAIN_ARENA) == 0
                && map_len >= page
                && map_len % page == 0
                && a.0.checked_add(map_len).is_some_and(|e| e <= rg.end.0)
            {
                out.push((Chunk::new(a, size, ChunkState::Mmapped), map_len));
                a = a.wrapping_add(map_len);
            } else {
                a = a.wrapping_add(page);
            }
        }
    }
    out
}
