//! The mimalloc walker on a synthetic segment (image::testcore) laid out as CPython 3.13's
//! free-threaded build compiles mimalloc (heap-models/cpython/3.13t.toml: mi_segment_t
//! kind 0xf0, slice_entries 0xf8, slices[] at 0x108 of 0x60-byte mi_page_t entries).

use super::*;
use crate::image::testcore::{TestCore, RW};
use crate::models::cpython_ft_models;

const SEG: u64 = 0x7f00_0000_0000; // 32 MiB aligned
const HEAP: u64 = 0x5500_0000_0000;
const FS: u64 = 0x7ffe_0000_1000;

fn model() -> CpythonModel {
    cpython_ft_models(None)
        .unwrap()
        .into_iter()
        .find(|m| m.name == "3.13t")
        .unwrap()
}

/// Page entry `i` of SEG.
fn page(m: &Mimalloc, i: u64) -> u64 {
    SEG + m.segment_slices_array + i * m.page_size
}

/// Segment with 4 slices: the header, a page of 64-byte GC blocks, a page of 1 KiB MEM
/// blocks and a free span.
fn core(m: &Mimalloc, damage: bool) -> TestCore {
    let mut tc = TestCore::new();
    tc.segment(SEG, 4 * m.slice_size, RW)
        .segment(HEAP, 0x1000, RW)
        .thread(7, HEAP + 0x800, FS);
    tc.u64(SEG + m.segment_kind, 0)
        .u64(SEG + m.segment_slice_entries, 4)
        .u64(SEG + m.segment_slices, 4)
        .u64(SEG + m.segment_info_slices, 1)
        .u64(SEG + m.segment_thread_id, FS);
    tc.u32(page(m, 0) + m.page_slice_count, 1);
    // slice 1: 64-byte blocks, start offset 3 * 64 (segment.c), capacity 10
    let p1 = page(m, 1);
    let start = SEG + m.slice_size + 192;
    let blk = |k: u64| start + 64 * k;
    tc.u32(p1 + m.page_slice_count, 1)
        .u32(p1 + m.page_block_size, 64)
        .u16(p1 + m.page_capacity, 10)
        .u16(p1 + m.page_reserved, 1000)
        .u32(p1 + m.page_used, 7)
        .bytes(p1 + m.page_tag_byte, &[2 << 3 | 1])
        .u64(p1 + m.page_free, blk(2))
        .u64(blk(2), blk(5))
        .u64(blk(5), 0)
        .u64(p1 + m.page_local_free, blk(7))
        .u64(p1 + m.page_thread_free, blk(3) | 1)
        .u64(p1 + m.page_heap, HEAP)
        .u64(HEAP + m.heap_thread_delayed_free, blk(8));
    if damage {
        tc.u64(blk(5), blk(2)); // free list loop
    }
    // slice 2: 1 KiB blocks, no start offset, all 3 in use, MEM heap
    let p2 = page(m, 2);
    tc.u32(p2 + m.page_slice_count, 1)
        .u32(p2 + m.page_block_size, 1024)
        .u16(p2 + m.page_capacity, 3)
        .u16(p2 + m.page_reserved, 64)
        .u32(p2 + m.page_used, 3);
    // slice 3: a free span
    tc.u32(page(m, 3) + m.page_slice_count, 1);
    tc
}

#[test]
fn live_blocks_are_capacity_minus_the_four_lists() {
    let model = model();
    let m = model.mimalloc.as_ref().unwrap();
    let p = core(m, false).process();
    let h = analyze(&p, &model).unwrap();
    assert!(h.diagnostics.is_empty(), "{:?}", h.diagnostics);
    let start = SEG + m.slice_size + 192;
    let got: Vec<(u64, u32, u8)> = h.blocks.iter().map(|b| (b.addr.0, b.size, b.tag)).collect();
    let mut want: Vec<(u64, u32, u8)> = [0, 1, 4, 6, 9]
        .iter()
        .map(|&k| (start + 64 * k, 64, 2))
        .collect();
    want.extend((0..3).map(|k| (SEG + 2 * m.slice_size + 1024 * k, 1024, 0)));
    assert_eq!(got, want);
    assert_eq!((h.segments, h.pages, h.abandoned_segments), (1, 2, 0));
    let gc = h.size_classes.iter().find(|c| c.heap == "gc").unwrap();
    assert_eq!(
        (gc.size, gc.pages, gc.count, gc.sparse_pages),
        (64, 1, 5, 1)
    );
    let mem = &h.size_classes[0];
    assert_eq!((mem.heap.as_str(), mem.size, mem.count), ("mem", 1024, 3));
}

#[test]
fn a_looping_free_list_is_a_diagnostic_and_bounded() {
    let model = model();
    let m = model.mimalloc.as_ref().unwrap();
    let p = core(m, true).process();
    let h = analyze(&p, &model).unwrap();
    assert!(
        h.diagnostics
            .iter()
            .any(|d| d.message.contains("free list")),
        "{:?}",
        h.diagnostics
    );
    assert!(h.blocks.len() <= 13);
}

#[test]
fn no_segment_without_a_plausible_header() {
    let model = model();
    let m = model.mimalloc.as_ref().unwrap();
    let mut tc = core(m, false);
    tc.u64(SEG + m.segment_kind, 7);
    assert!(analyze(&tc.process(), &model).is_err());
    // a thread id that is no thread of the core
    let mut tc = core(m, false);
    tc.u64(SEG + m.segment_thread_id, 0x1234_5000);
    assert!(analyze(&tc.process(), &model).is_err());
}

/// A segment no thread owns (`thread_id` 0: its thread ended and abandoned it, segment.c
/// `mi_segment_abandon`) is read like the others and counted as abandoned.
#[test]
fn abandoned_segments_are_walked() {
    let model = model();
    let m = model.mimalloc.as_ref().unwrap();
    let mut tc = core(m, false);
    tc.u64(SEG + m.segment_thread_id, 0);
    let h = analyze(&tc.process(), &model).unwrap();
    assert_eq!(
        (h.segments, h.abandoned_segments, h.blocks.len()),
        (1, 1, 8)
    );
    assert_eq!(h.threads.len(), 1);
    assert_eq!((h.threads[0].thread_id, h.threads[0].tid), (0, None));
}

/// Random words written over the segment header, the page entries and the blocks: the
/// walk never panics, and never yields more blocks than the pages' capacities allow.
#[test]
fn random_damage_never_panics_and_stays_bounded() {
    let model = model();
    let m = model.mimalloc.as_ref().unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let header = m.segment_slices_array + 4 * m.page_size;
    for _round in 0..300 {
        let mut tc = core(m, false);
        for _ in 0..24 {
            let at = if next() % 2 == 0 {
                (SEG + next() % header) & !7
            } else {
                (SEG + m.slice_size + next() % (2 * m.slice_size)) & !7
            };
            let v = match next() % 4 {
                0 => 0,
                1 => u64::MAX,
                2 => (SEG + m.slice_size + next() % (2 * m.slice_size)) & !7,
                _ => next(),
            };
            tc.u64(at, v);
        }
        if let Ok(h) = analyze(&tc.process(), &model) {
            // 4 slice entries: at most 4 pages of at most u16::MAX blocks each
            assert!(h.blocks.len() <= 4 * u16::MAX as usize);
            assert!(h.blocks.windows(2).all(|w| w[0].addr < w[1].addr));
        }
    }
}
