//! Finding glibc's allocator state without trusting anything: `main_arena` and `mp_`.
//!
//! Cheapest first (layouts.md §A.12): the symbol (debug file or `.symtab`); the libc file's
//! `.data` initializer pattern; the arena ring reached from thread-arena heaps (heap_info at
//! HEAP_MAX_SIZE alignment); a scan of libc's writable memory in the core for a run of
//! consistent bin heads. Every candidate is then checked by invariants (`check_arena`).

use super::{Reader, HEAP_MAX_SIZE};
use crate::addr::{Addr, Range};
use crate::image::modules::Module;
use crate::image::process::Process;
use crate::models::GlibcModel;
use object::{Object, ObjectSection};
use serde::Serialize;

/// How `main_arena` or `mp_` was found, for the report: an identifier in JSON
/// (`"data_initializer"`), words in text (the renderer's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// The symbol, from a debug file, `.symtab` or the dynamic symbol table.
    Symbol,
    /// The libc file's `.data` initializer pattern.
    DataInitializer,
    /// The ring of arenas reached from thread-arena heaps.
    ThreadArenaRing,
    /// A scan of libc's writable memory for 127 consistent bin heads.
    BinScan,
}

/// Link-time address and bytes of the libc file's `.data` section, with the load bias.
fn file_data(m: &Module) -> Option<(u64, &[u8], u64)> {
    let f = m.file.as_ref()?;
    let obj = object::File::parse(&**f.map).ok()?;
    let sec = obj.section_by_name(".data")?;
    let data = sec.data().ok()?;
    Some((sec.address(), data, m.bias?))
}

fn u64_at(b: &[u8], off: u64) -> Option<u64> {
    let o = usize::try_from(off).ok()?;
    b.get(o..o.checked_add(8)?)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
}

fn u32_at(b: &[u8], off: u64) -> Option<u32> {
    let o = usize::try_from(off).ok()?;
    b.get(o..o.checked_add(4)?)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
}

/// `main_arena` in the file: all zero but `next` (its own link-time address, or 0 where
/// the linker leaves RELA targets empty) and `attached_threads` = 1 (glibc 2.23+
/// malloc.c: `{ .mutex = _LIBC_LOCK_INITIALIZER, .next = &main_arena, .attached_threads = 1 }`).
fn main_arena_from_file(m: &Module, model: &GlibcModel) -> Vec<Addr> {
    let Some((sec_addr, data, bias)) = file_data(m) else {
        return Vec::new();
    };
    let ms = &model.malloc_state;
    let size = ms.size as usize;
    let mut hits = Vec::new();
    let mut off = 0usize;
    while off + size <= data.len() {
        let o = off as u64;
        let link = sec_addr + o;
        let ok = u64_at(data, o + ms.attached_threads) == Some(1)
            && matches!(u64_at(data, o + ms.next), Some(v) if v == link || v == 0)
            && data[off..off + size].iter().enumerate().all(|(i, &b)| {
                let i = i as u64;
                b == 0
                    || (i >= ms.next && i < ms.next + 8)
                    || (i >= ms.attached_threads && i < ms.attached_threads + 8)
            });
        if ok {
            hits.push(Addr(link.wrapping_add(bias)));
        }
        off += 16;
    }
    hits
}

/// `mp_` in the file: the DEFAULT_MP_ initializer (malloc.c): trim_threshold, top_pad and
/// mmap_threshold 128 KiB, arena_test 8 (LP64), n_mmaps_max 65536, and with tcache
/// tcache_bins 64, tcache_max_bytes 0x408, tcache_count 7; everything else zero.
fn mp_from_file(m: &Module, model: &GlibcModel) -> Vec<Addr> {
    let Some((sec_addr, data, bias)) = file_data(m) else {
        return Vec::new();
    };
    let mp = &model.malloc_par;
    let mut want: Vec<(u64, u64, u64)> = match &model.mp_initializer {
        Some(v) => v.iter().map(|x| (x[0], x[1], x[2])).collect(),
        None => mp_default_initializer(model),
    };
    let size = mp.size as usize;
    want.retain(|w| w.2 != 0);
    let mut hits = Vec::new();
    let mut off = 0usize;
    while off + size <= data.len() {
        let o = off as u64;
        let ok = want.iter().all(|&(f, w, v)| match w {
            4 => u32_at(data, o + f) == Some(v as u32),
            _ => u64_at(data, o + f) == Some(v),
        }) && data[off..off + size].iter().enumerate().all(|(i, &b)| {
            let i = i as u64;
            b == 0 || want.iter().any(|&(f, w, _)| i >= f && i < f + w)
        });
        if ok {
            hits.push(Addr((sec_addr + o).wrapping_add(bias)));
        }
        off += 8;
    }
    hits
}

fn mp_default_initializer(model: &GlibcModel) -> Vec<(u64, u64, u64)> {
    let mp = &model.malloc_par;
    let mut want: Vec<(u64, u64, u64)> = vec![
        (mp.trim_threshold, 8, 0x20000),
        (mp.top_pad, 8, 0x20000),
        (mp.mmap_threshold, 8, 0x20000),
        (mp.arena_test, 8, 8),
        (mp.n_mmaps_max, 4, 0x10000),
    ];
    let t = model.tcache.as_ref();
    if let (Some(o), Some(t)) = (mp.tcache_bins, t) {
        want.push((o, 8, t.small_bins.unwrap_or(t.bins)));
    }
    if let (Some(o), Some(t)) = (mp.tcache_max_bytes, t) {
        let bins = t.small_bins.unwrap_or(t.bins);
        want.push((o, 8, (bins - 1) * 16 + 32 - 8));
    }
    if let (Some(o), Some(t)) = (mp.tcache_count, t) {
        want.push((o, 8, t.fill_count));
    }
    want
}

/// Invariants of an arena: its bins are consistent doubly linked list heads, its `top`
/// is readable, its `next` ring returns to it.
pub fn check_arena(r: &Reader, model: &GlibcModel, a: Addr, main: bool) -> Result<(), String> {
    let ms = &model.malloc_state;
    let flags = r
        .u32(a.wrapping_add(ms.flags))
        .ok_or("arena not readable")?;
    if main && flags & 2 != 0 {
        // NONCONTIGUOUS on the main arena happens (sbrk failed), but is rare: note only.
    }
    if flags & !0x7 != 0 {
        return Err(format!("flags {flags:#x} has unknown bits"));
    }
    let mut bad = 0;
    for i in 1..128u64 {
        let head = a.wrapping_add(ms.bins + 16 * (i - 1)).0.wrapping_sub(16);
        let (Some(fd), Some(bk)) = (
            r.u64(Addr(head.wrapping_add(16))),
            r.u64(Addr(head.wrapping_add(24))),
        ) else {
            return Err("bins not readable".into());
        };
        let empty = fd == head && bk == head;
        let linked = !empty
            && r.u64(Addr(fd.wrapping_add(24))) == Some(head)
            && r.u64(Addr(bk.wrapping_add(16))) == Some(head);
        if !empty && !linked {
            bad += 1;
        }
    }
    if bad > 4 {
        return Err(format!("{bad} of 127 bin heads are inconsistent"));
    }
    let top = r.u64(a.wrapping_add(ms.top)).ok_or("top not readable")?;
    let initial_top = a.wrapping_add(ms.bins).0.wrapping_sub(16);
    if top != initial_top && r.u64(Addr(top.wrapping_add(8))).is_none() {
        return Err(format!("top {top:#x} is not readable"));
    }
    // The ring of arenas through `next` closes.
    let mut cur = a;
    for _ in 0..4096 {
        let n = r
            .u64(cur.wrapping_add(ms.next))
            .ok_or("next not readable")?;
        if n == a.0 {
            return Ok(());
        }
        if n == 0 {
            return Err("arena ring ends in NULL".into());
        }
        cur = Addr(n);
    }
    Err("arena ring does not close".into())
}

/// Thread arenas found from their heaps: every HEAP_MAX_SIZE-aligned readable address
/// whose heap_info `ar_ptr` points just past itself is the first heap of an arena.
pub fn thread_arenas_by_scan(p: &Process, r: &Reader, model: &GlibcModel) -> Vec<Addr> {
    let hi = &model.heap_info;
    let mut out = Vec::new();
    for s in &p.core.segments {
        if s.in_core == 0 {
            continue;
        }
        let Some(mut h) = s.vaddr.align_up(HEAP_MAX_SIZE) else {
            continue;
        };
        let end = s.vaddr.wrapping_add(s.in_core);
        while h < end {
            if let Some(ar) = r.u64(h.wrapping_add(hi.ar_ptr)) {
                if ar == h.0 + hi.size {
                    out.push(Addr(ar));
                }
            }
            h = h.wrapping_add(HEAP_MAX_SIZE);
        }
    }
    out
}

/// chap's "empty free lists" scan: a run of 127 consistent bin heads in libc's writable
/// memory, with the malloc_state fields around it plausible.
fn main_arena_by_bin_scan(p: &Process, r: &Reader, libc: &Module, model: &GlibcModel) -> Vec<Addr> {
    let ms = &model.malloc_state;
    let mut out = Vec::new();
    let mut ranges: Vec<Range> = Vec::new();
    for mp in &libc.mappings {
        ranges.push(mp.range);
    }
    // .bss follows the last file mapping as an anonymous segment.
    if let Some(end) = libc.mappings.iter().map(|m| m.range.end).max() {
        if let Some(s) = p.core.segments.iter().find(|s| s.vaddr == end) {
            ranges.push(s.range());
        }
    }
    for range in ranges {
        let mut a = range.start;
        while a.wrapping_add(ms.size) <= range.end {
            // Quick test on bin 1 and 2 before the full check.
            let h1 = a.wrapping_add(ms.bins).0.wrapping_sub(16);
            let quick = r
                .u64(Addr(h1 + 16))
                .is_some_and(|fd| fd == h1 || r.u64(Addr(fd.wrapping_add(24))) == Some(h1));
            if quick && check_arena(r, model, a, true).is_ok() {
                out.push(a);
            }
            a = a.wrapping_add(16);
        }
    }
    out
}

/// Find `main_arena` for this model; returns the address and the method.
pub fn find_main_arena(
    p: &Process,
    r: &Reader,
    libc: &Module,
    model: &GlibcModel,
    errors: &mut Vec<String>,
) -> Option<(Addr, FoundBy)> {
    if let Some(s) = libc.symbol(&p.space, "main_arena") {
        match check_arena(r, model, s.addr, true) {
            Ok(()) => {
                // Cross-check the heuristic against the symbol while we have both.
                let file = main_arena_from_file(libc, model);
                if !file.is_empty() && !file.contains(&s.addr) {
                    errors.push(format!(
                        "the libc .data initializer heuristic finds {} but the symbol says {}",
                        file[0], s.addr
                    ));
                }
                return Some((s.addr, FoundBy::Symbol));
            }
            Err(e) => errors.push(format!("main_arena symbol at {}: {e}", s.addr)),
        }
    }
    for a in main_arena_from_file(libc, model) {
        match check_arena(r, model, a, true) {
            Ok(()) => return Some((a, FoundBy::DataInitializer)),
            Err(e) => errors.push(format!(".data candidate {a}: {e}")),
        }
    }
    // From thread arenas: their ring leads to main_arena, the one arena inside libc.
    let in_libc = |a: Addr| {
        libc.mappings.iter().any(|m| m.range.contains(a))
            || libc
                .mappings
                .iter()
                .map(|m| m.range.end)
                .max()
                .is_some_and(|e| a >= e && a.0 < e.0 + (1 << 20))
    };
    for t in thread_arenas_by_scan(p, r, model) {
        let mut cur = t;
        for _ in 0..4096 {
            let Some(n) = r.u64(cur.wrapping_add(model.malloc_state.next)) else {
                break;
            };
            let n = Addr(n);
            if n == t || n.is_null() {
                break;
            }
            if in_libc(n) && check_arena(r, model, n, true).is_ok() {
                return Some((n, FoundBy::ThreadArenaRing));
            }
            cur = n;
        }
    }
    let hits = main_arena_by_bin_scan(p, r, libc, model);
    if let Some(&a) = hits.first() {
        if hits.len() > 1 {
            errors.push(format!(
                "bin scan found {} candidates; took the first",
                hits.len()
            ));
        }
        return Some((a, FoundBy::BinScan));
    }
    None
}

/// Find `mp_` (for sbrk_base and the mmap counters): symbol, then the file's initializer.
pub fn find_mp(p: &Process, libc: &Module, model: &GlibcModel) -> Option<(Addr, FoundBy)> {
    if let Some(s) = libc.symbol(&p.space, "mp_") {
        return Some((s.addr, FoundBy::Symbol));
    }
    let hits = mp_from_file(libc, model);
    (hits.len() == 1).then(|| (hits[0], FoundBy::DataInitializer))
}
