//! mimalloc as CPython's free-threaded build uses it (PEP 703; CPython 3.13
//! Objects/mimalloc/, Include/internal/pycore_mimalloc.h): segments → pages → blocks.
//!
//! Segments are found by scanning the core's memory at every `segment_size`-aligned
//! address (mimalloc aligns every segment to MI_SEGMENT_SIZE, types.h `_mi_ptr_segment`),
//! keeping headers whose kind, slice counts and owning thread are plausible. This finds the
//! segments of live threads and the abandoned ones of threads that ended alike (round2-facts
//! §C.4: the scan and a walk of every thread's 75 page queues gave the same pages). A
//! segment's `slices[]` are its pages: a page head has `slice_offset` 0 and spans
//! `slice_count` slices. A block of a page is live when it is below `capacity` and on none
//! of the four lists a frozen core can hold it on: `free` (ready for malloc), `local_free`
//! (freed by the owner), `xthread_free` (freed by other threads, low 2 bits a state) and
//! the owning heap's `thread_delayed_free` (cross-thread frees into a full page). mimalloc's
//! own visitor (heap.c `_mi_heap_area_visit_blocks`) first collects the last three into
//! `free`; a reader of a core cannot, so it subtracts them all, and checks the result
//! against the page's `used` (which counts the blocks of the last two lists as in use:
//! alloc.c `_mi_free_block_mt` does not decrement it, page.c `_mi_page_thread_free_collect`
//! does). Every list walk is bounded by the page's capacity and stops on a block outside
//! the page, misaligned, or seen before.
//!
//! Each page records its heap's tag, which CPython sets to the heap's index in the thread
//! state (`_mi_heap_init_ex(..., tag = i)`, Python/pystate.c tstate_mimalloc_bind): 0 MEM
//! (PyMem_Malloc), 1 OBJECT (objects without GC), 2 GC, 3 GC_PRE (GC objects with the
//! two-word pre-header: the object is at block + 16).

use crate::addr::Addr;
use crate::error::{Diagnostic, Diagnostics, Error, Result};
use crate::image::memory::Reader;
use crate::image::process::Process;
use crate::models::{CpythonModel, Epoch, Mimalloc, Version};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

#[cfg(test)]
mod tests;

/// The heap tags of CPython's `_Py_mimalloc_heap_id` (pycore_mimalloc.h).
pub const TAG_NAMES: [&str; 4] = ["mem", "object", "gc", "gc_pre"];

/// Name of a heap tag.
pub fn tag_name(tag: u8) -> &'static str {
    TAG_NAMES.get(tag as usize).copied().unwrap_or("other")
}

/// A page counts as kept by few blocks when live blocks fill less than this share of it.
pub const SPARSE_BELOW: f64 = 0.25;
/// At most this many segments are read (a 32 MiB stride over 64 TiB of mappings).
const MAX_SEGMENTS: usize = 1 << 21;
/// At most this many blocks are followed on one heap's delayed-free list.
const MAX_DELAYED: usize = 1 << 24;

/// One live block: address, block size, heap tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub addr: Addr,
    pub size: u32,
    pub tag: u8,
}

/// Live blocks of one heap tag and block size.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct SizeClass {
    /// Heap tag: "mem", "object", "gc", "gc_pre".
    pub heap: String,
    pub size: u64,
    pub pages: u64,
    /// Live blocks ("count", as every size-class row).
    pub count: u64,
    /// Blocks of these pages not in use (below `reserved`).
    pub free_count: u64,
    /// Pages under a quarter full ([`SPARSE_BELOW`]): kept by few live blocks.
    pub sparse_pages: u64,
}

/// One mimalloc page in use.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PageInfo {
    /// First block.
    pub address: Addr,
    pub segment: Addr,
    pub heap: String,
    pub block_size: u64,
    /// Blocks the page's span holds (`reserved`) and has handed out so far (`capacity`).
    pub reserved: u64,
    pub capacity: u64,
    pub live: u64,
    /// Bytes of the page's slices.
    pub bytes: u64,
    /// Owning thread (`mi_segment_t.thread_id`, the thread's fs_base): 0 when abandoned.
    pub thread_id: u64,
}

/// The pages of one thread's heaps (the segments it owns: `mi_segment_t.thread_id`).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct ThreadHeaps {
    /// The owner's `_mi_thread_id()` (its fs_base); 0: abandoned segments (threads that
    /// ended), whose blocks live on.
    pub thread_id: u64,
    /// The core thread with that thread pointer, when it is still running.
    pub tid: Option<u32>,
    pub pages: u64,
    pub live_blocks: u64,
    /// Bytes of live blocks per heap tag: mem, object, gc, gc_pre.
    pub live_bytes: [u64; 4],
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MimallocHeap {
    pub model: String,
    #[serde(skip)]
    pub python: Option<crate::image::version::PythonInfo>,
    pub segments: u64,
    /// Segments no thread owns (their thread ended): `thread_id` 0.
    pub abandoned_segments: u64,
    pub pages: u64,
    pub sparse_pages: u64,
    pub in_use_bytes: u64,
    /// Bytes of the pages in use not in live blocks.
    pub free_bytes: u64,
    pub size_classes: Vec<SizeClass>,
    /// Per owning thread, in the order of the core's threads (abandoned last).
    pub threads: Vec<ThreadHeaps>,
    pub page_list: Vec<PageInfo>,
    #[serde(skip)]
    pub blocks: Vec<Block>,
    #[serde(skip)]
    pub diagnostics: Diagnostics,
}

struct Walker<'a> {
    r: Reader<'a>,
    m: &'a Mimalloc,
    diags: Diagnostics,
    /// Delayed-free blocks by heap address (each heap's list walked once).
    delayed: FxHashMap<u64, FxHashSet<u64>>,
}

/// Where page `i` of the segment at `seg` begins, and its first block (3.13
/// segment.c `_mi_segment_page_start_from_slice`: a small start offset for small blocks
/// spreads pages of the same size over cache lines).
fn page_start(m: &Mimalloc, seg: u64, slice: u64, bsize: u64) -> u64 {
    let base = seg.wrapping_add(slice * m.slice_size);
    let off = if !m.start_offset_rule {
        0
    } else if (8..=64).contains(&bsize) {
        3 * bsize
    } else if bsize > 64 && bsize <= 512 {
        bsize
    } else {
        0
    };
    base.wrapping_add(off)
}

impl<'a> Walker<'a> {
    fn uw(&self, a: u64, width: u64) -> Option<u64> {
        match width {
            2 => self.r.u16(Addr(a)).map(u64::from),
            4 => self.r.u32(Addr(a)).map(u64::from),
            _ => self.r.u64(Addr(a)),
        }
    }

    /// Is there a segment header at `seg`? Returns (kind, slice entries, owning thread).
    fn segment_at(&self, seg: u64, threads: &FxHashSet<u64>) -> Option<(u64, u64, u64)> {
        let m = self.m;
        let kind = self.r.u64(Addr(seg + m.segment_kind))?;
        let entries = self.r.u64(Addr(seg + m.segment_slice_entries))?;
        let slices = self.r.u64(Addr(seg + m.segment_slices))?;
        let info = self.r.u64(Addr(seg + m.segment_info_slices))?;
        let tid = self.r.u64(Addr(seg + m.segment_thread_id))?;
        let ok = kind <= 1
            && (1..=m.slices_per_segment + 1).contains(&entries)
            && (1..16).contains(&info)
            && slices >= 1
            && (kind == 1 || slices <= m.slices_per_segment)
            && (tid == 0 || threads.is_empty() || threads.contains(&tid));
        ok.then_some((kind, entries, tid))
    }

    /// Addresses of a NULL-terminated block list inside `[start, start + n*bsize)`, in
    /// `out`; false when the list leaves the page, is misaligned or loops (the walk stops).
    fn list(&self, head: u64, start: u64, bsize: u64, n: u64, out: &mut FxHashSet<u64>) -> bool {
        let mut b = head;
        let mut steps = 0u64;
        while b != 0 {
            if b < start || b >= start + n * bsize || (b - start) % bsize != 0 || steps > n {
                return false;
            }
            if !out.insert(b) {
                return false; // a cycle, or a block on two lists
            }
            steps += 1;
            match self.r.u64(Addr(b)) {
                Some(nx) => b = nx,
                None => return false,
            }
        }
        true
    }

    /// The blocks on a heap's `thread_delayed_free` list (walked once per heap, bounded).
    fn delayed_of(&mut self, heap: u64) -> &FxHashSet<u64> {
        if !self.delayed.contains_key(&heap) {
            let mut set = FxHashSet::default();
            let mut b = self
                .r
                .u64(Addr(heap.wrapping_add(self.m.heap_thread_delayed_free)))
                .unwrap_or(0);
            while b != 0 && set.len() < MAX_DELAYED {
                if b % 8 != 0 || !set.insert(b) {
                    self.diags.push(Diagnostic::warning(format!(
                        "mimalloc heap {heap:#x}: its delayed-free list loops or is misaligned at {b:#x}; the rest is not read"
                    )));
                    break;
                }
                b = self.r.u64(Addr(b)).unwrap_or(0);
            }
            self.delayed.insert(heap, set);
        }
        &self.delayed[&heap]
    }
}

/// Walk every segment in the core's memory with `model`'s layout.
pub fn analyze(p: &Process, model: &CpythonModel) -> std::result::Result<MimallocHeap, String> {
    let m = model
        .mimalloc
        .as_ref()
        .ok_or_else(|| format!("model {} has no [mimalloc] section", model.name))?;
    // Candidate segment addresses: every aligned address inside a writable core segment.
    let mut cands: Vec<u64> = Vec::new();
    for s in &p.core.segments {
        if s.flags & 2 == 0 || s.memsz < m.page_size {
            continue; // PF_W: segments are read-write anonymous memory
        }
        let end = s.vaddr.0.saturating_add(s.memsz);
        let mut a = s.vaddr.0.div_ceil(m.segment_size) * m.segment_size;
        while a < end && cands.len() < MAX_SEGMENTS {
            cands.push(a);
            a = a.saturating_add(m.segment_size);
        }
    }
    cands.sort_unstable();
    cands.dedup();
    analyze_segments(p, model, &cands, None)
}

/// [`analyze`] of the segments at `cands` only (ascending), and of their pages whose first
/// slice is in `slices` when given: the fuzzing harness walks the pages around the bytes it
/// overlaid.
#[doc(hidden)]
pub fn analyze_segments(
    p: &Process,
    model: &CpythonModel,
    cands: &[u64],
    slices: Option<std::ops::Range<u64>>,
) -> std::result::Result<MimallocHeap, String> {
    let m = model
        .mimalloc
        .as_ref()
        .ok_or_else(|| format!("model {} has no [mimalloc] section", model.name))?;
    let threads: FxHashSet<u64> = p
        .core
        .threads
        .iter()
        .filter_map(|t| t.thread_pointer.map(|a| a.0))
        .collect();
    let mut w = Walker {
        r: Reader { space: &p.space },
        m,
        diags: Diagnostics::default(),
        delayed: FxHashMap::default(),
    };
    let mut out = MimallocHeap {
        model: model.name.clone(),
        python: None,
        segments: 0,
        abandoned_segments: 0,
        pages: 0,
        sparse_pages: 0,
        in_use_bytes: 0,
        free_bytes: 0,
        size_classes: Vec::new(),
        threads: Vec::new(),
        page_list: Vec::new(),
        blocks: Vec::new(),
        diagnostics: Diagnostics::default(),
    };
    let mut classes: FxHashMap<(u8, u64), SizeClass> = FxHashMap::default();
    let mut mismatched = 0u64;
    for &seg in cands {
        let Some((kind, entries, tid)) = w.segment_at(seg, &threads) else {
            continue;
        };
        out.segments += 1;
        if tid == 0 {
            out.abandoned_segments += 1;
        }
        let mut i = 0u64;
        while i < entries {
            let pg = seg + m.segment_slices_array + i * m.page_size;
            let (Some(count), Some(offset)) = (
                w.r.u32(Addr(pg + m.page_slice_count)),
                w.r.u32(Addr(pg + m.page_slice_offset)),
            ) else {
                break;
            };
            let count = count as u64;
            if count == 0 || offset != 0 {
                i += 1;
                continue;
            }
            if slices.as_ref().is_some_and(|w| !w.contains(&i)) {
                i += count;
                continue;
            }
            let step = count;
            let (Some(bsize), Some(used), Some(cap), Some(res), Some(bits)) = (
                w.uw(pg + m.page_block_size, m.page_block_size_width),
                w.uw(pg + m.page_used, m.page_used_width),
                w.r.u16(Addr(pg + m.page_capacity)),
                w.r.u16(Addr(pg + m.page_reserved)),
                w.r.u8(Addr(pg + m.page_tag_byte)),
            ) else {
                i += step;
                continue;
            };
            let (cap, res) = (cap as u64, res as u64);
            let span = count * m.slice_size;
            // 3.13 stores block sizes of 2 GiB and more as MI_HUGE_BLOCK_SIZE: one block
            // spans the page (types.h mi_page_t.xblock_size).
            let huge = m.page_block_size_width == 4 && bsize >= 1 << 31;
            let bsize = if huge { span } else { bsize };
            i += step;
            if bsize == 0 || used == 0 {
                continue; // a free span, or a page without blocks in use
            }
            let start = page_start(m, seg, i - step, bsize);
            if cap > res
                || cap == 0
                || bsize < 8
                || (!huge && (start - (seg + (i - step) * m.slice_size)) + res * bsize > span)
                || used > cap
                || (kind == 0 && i > entries)
            {
                w.diags.push(Diagnostic::warning(format!(
                    "mimalloc page at {start:#x} (segment {seg:#x}): block size {bsize}, capacity {cap}, reserved {res}, used {used} do not fit its {span} bytes; not read"
                )));
                continue;
            }
            let tag = (bits >> m.page_tag_shift) & ((1u32 << m.page_tag_bits) - 1) as u8;
            let mut free = FxHashSet::default();
            let mut ok = true;
            for (what, off) in [("free", m.page_free), ("local_free", m.page_local_free)] {
                let head = w.r.u64(Addr(pg + off)).unwrap_or(0);
                if !w.list(head, start, bsize, cap, &mut free) {
                    ok = false;
                    w.diags.push(Diagnostic::warning(format!(
                        "mimalloc page at {start:#x}: its {what} list leaves the page, loops or is unreadable"
                    )));
                }
            }
            let before = free.len() as u64;
            let tf = w.r.u64(Addr(pg + m.page_thread_free)).unwrap_or(0) & !3;
            if !w.list(tf, start, bsize, cap, &mut free) {
                ok = false;
                w.diags.push(Diagnostic::warning(format!(
                    "mimalloc page at {start:#x}: its thread-free list leaves the page, loops or is unreadable"
                )));
            }
            let n_tf = free.len() as u64 - before;
            let heap = w.r.u64(Addr(pg + m.page_heap)).unwrap_or(0);
            let mut n_delayed = 0u64;
            if heap != 0 && heap % 8 == 0 {
                let lo = start;
                let hi = start + cap * bsize;
                let d: Vec<u64> = w
                    .delayed_of(heap)
                    .iter()
                    .copied()
                    .filter(|&b| b >= lo && b < hi && (b - lo) % bsize == 0)
                    .collect();
                for b in d {
                    if free.insert(b) {
                        n_delayed += 1;
                    }
                }
            }
            let live = cap - (free.len() as u64).min(cap);
            if ok && live + n_tf + n_delayed != used {
                mismatched += 1;
            }
            let size32 = bsize.min(u32::MAX as u64) as u32;
            for k in 0..cap {
                let b = start + k * bsize;
                if !free.contains(&b) {
                    out.blocks.push(Block {
                        addr: Addr(b),
                        size: size32,
                        tag,
                    });
                }
            }
            let sparse = (live as f64) < SPARSE_BELOW * res as f64;
            let c = classes.entry((tag, bsize)).or_insert_with(|| SizeClass {
                heap: tag_name(tag).to_string(),
                size: bsize,
                ..Default::default()
            });
            c.pages += 1;
            c.count += live;
            c.free_count += res - live;
            c.sparse_pages += sparse as u64;
            out.pages += 1;
            out.sparse_pages += sparse as u64;
            out.in_use_bytes += live * bsize;
            out.free_bytes += span.saturating_sub(live * bsize);
            out.page_list.push(PageInfo {
                address: Addr(start),
                segment: Addr(seg),
                heap: tag_name(tag).to_string(),
                block_size: bsize,
                reserved: res,
                capacity: cap,
                live,
                bytes: span,
                thread_id: tid,
            });
        }
    }
    if out.segments == 0 {
        return Err("no mimalloc segment found in the core's memory".into());
    }
    if mismatched > 0 {
        w.diags.push(Diagnostic::warning(format!(
            "mimalloc: on {mismatched} pages the live blocks plus the thread-free and delayed blocks differ from the page's `used` count"
        )));
    }
    out.blocks.sort_unstable_by_key(|b| b.addr);
    let mut by_thread: FxHashMap<u64, ThreadHeaps> = FxHashMap::default();
    for pg in &out.page_list {
        let t = by_thread
            .entry(pg.thread_id)
            .or_insert_with(|| ThreadHeaps {
                thread_id: pg.thread_id,
                tid: p
                    .core
                    .threads
                    .iter()
                    .find(|t| t.thread_pointer.is_some_and(|a| a.0 == pg.thread_id))
                    .map(|t| t.tid),
                ..Default::default()
            });
        t.pages += 1;
        t.live_blocks += pg.live;
        if let Some(i) = TAG_NAMES.iter().position(|&n| n == pg.heap) {
            t.live_bytes[i] += pg.live * pg.block_size;
        }
    }
    let order = |t: &ThreadHeaps| {
        p.core
            .threads
            .iter()
            .position(|c| Some(c.tid) == t.tid)
            .unwrap_or(usize::MAX)
    };
    let mut threads: Vec<ThreadHeaps> = by_thread.into_values().collect();
    threads.sort_by_key(|t| (order(t), t.thread_id));
    out.threads = threads;
    let mut cl: Vec<SizeClass> = classes.into_values().collect();
    cl.sort_by_key(|c| (tag_rank(&c.heap), c.size));
    out.size_classes = cl;
    out.diagnostics = w.diags;
    Ok(out)
}

fn tag_rank(name: &str) -> usize {
    TAG_NAMES
        .iter()
        .position(|&t| t == name)
        .unwrap_or(TAG_NAMES.len())
}

/// Walk mimalloc if the process runs a free-threaded CPython: `Ok(None)` otherwise.
pub fn walk_process(p: &Process, models: &[CpythonModel]) -> Result<Option<MimallocHeap>> {
    let Some(py) = crate::image::version::detect_python(p) else {
        return Ok(None);
    };
    if !py.free_threaded {
        return Ok(None);
    }
    let v = py.version.as_deref().and_then(Version::parse);
    let model = match v {
        Some(v) => models
            .iter()
            .find(|m| m.covers(v))
            .or_else(|| crate::models::nearest(models, v)),
        None => models.last(),
    };
    let Some(model) = model else {
        return Err(Error::Unsupported(format!(
            "{} is a free-threaded CPython {} build and no free-threaded layout model is loaded",
            py.module,
            py.version.as_deref().unwrap_or("")
        )));
    };
    // Without its mimalloc heaps a free-threaded process has no Python heap coreheap can
    // read: refused (exit 2), never answered from glibc alone.
    let mut h = analyze(p, model).map_err(|e| {
        Error::Unsupported(format!(
            "{} is a free-threaded CPython {} build, but its mimalloc heaps cannot be read with the {} model: {e}",
            py.module,
            py.version.as_deref().unwrap_or(""),
            model.name
        ))
    })?;
    if let Some(rt) = py.runtime {
        h.diagnostics
            .extend(crate::models::debug_offsets::cross_check(p, rt, model));
    }
    if !v.is_some_and(|v| model.covers(v)) {
        h.diagnostics.push(Diagnostic::warning(format!(
            "free-threaded CPython {}: no layout model covers this version; the {} model was used",
            py.version.as_deref().unwrap_or("?"),
            model.name
        )));
    }
    h.python = Some(py);
    Ok(Some(h))
}
