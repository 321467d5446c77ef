//! The binary's allocator: the system allocator for ordinary blocks; large blocks get their
//! own anonymous mappings with transparent huge pages asked for (`madvise(MADV_HUGEPAGE)`).
//!
//! Why: the ownership views fill a few arrays of hundreds of MiB to GiB (object list, edges,
//! dominator arrays). With 4 KiB pages every first touch is a page fault; on the py20m
//! benchmark those faults cost as much CPU time as the analysis (680 k minor faults, 1.5–2 s
//! of system time in a 3 s run). Most systems run THP in `madvise` mode
//! (`/sys/kernel/mm/transparent_hugepage/enabled`), so huge pages come only when asked for.
//! The blocks are dense arrays that are filled whole, so huge pages waste no memory.
//!
//! Why our own mappings rather than advising glibc's: advising part of a glibc-mmapped
//! chunk splits its mapping in two or three, and then glibc's `realloc` cannot `mremap` it
//! (mremap refuses a range spanning several mappings) and falls back to malloc + copy + free —
//! a growing `Vec` then copies itself at every doubling. Here a large block is exactly one
//! mapping, advised whole, and grows with `mremap` (which keeps the advice, and moves page
//! tables instead of bytes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::null_mut;

pub struct HugeArrays;

/// Blocks of this size and up are mapped here. Below it glibc's heap serves them better.
const MIN: usize = 4 << 20;
/// The x86-64 and aarch64 (4 KiB granule) huge-page size; mapping lengths are rounded to it
/// so that the last huge page is whole.
const HUGE: usize = 2 << 20;
/// Mappings are page aligned; larger alignments stay with the system allocator.
const PAGE_ALIGN: usize = 4096;

#[inline]
fn ours(layout: &Layout) -> bool {
    layout.size() >= MIN && layout.align() <= PAGE_ALIGN
}

#[inline]
fn mapped_len(size: usize) -> usize {
    size.next_multiple_of(HUGE)
}

/// A fresh mapping of `mapped_len(size)` bytes (zero-filled by the kernel).
unsafe fn map(size: usize) -> *mut u8 {
    let len = mapped_len(size);
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return null_mut();
    }
    // SAFETY: advice on the mapping just made, whole; a refusal (THP disabled, an old
    // kernel) leaves ordinary pages, which is only slower.
    unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
    p.cast()
}

// SAFETY: a block is ours exactly when its layout says so (`ours`), at allocation, growth
// and release alike, so each block returns to the allocator it came from; our blocks are
// whole mappings of `mapped_len(size)` bytes, page aligned (≥ every alignment we accept) and
// zero-filled by the kernel.
unsafe impl GlobalAlloc for HugeArrays {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ours(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if ours(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if ours(&layout) {
            unsafe { libc::munmap(p.cast(), mapped_len(layout.size())) };
        } else {
            unsafe { System.dealloc(p, layout) }
        }
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (of the layout): `GlobalAlloc::realloc` guarantees `new_size` with the old
        // alignment is a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (ours(&layout), ours(&new)) {
            (false, false) => unsafe { System.realloc(p, layout, new_size) },
            (true, true) => {
                let (old_len, new_len) = (mapped_len(layout.size()), mapped_len(new_size));
                if old_len == new_len {
                    return p;
                }
                // SAFETY: `p` is one whole mapping of `old_len` bytes (ours); the kernel
                // moves it if it cannot grow in place, keeping its contents and advice.
                let q = unsafe { libc::mremap(p.cast(), old_len, new_len, libc::MREMAP_MAYMOVE) };
                if q == libc::MAP_FAILED {
                    null_mut()
                } else {
                    q.cast()
                }
            }
            // Across the threshold: a new block of the other kind, the contents copied.
            _ => {
                let q = unsafe { self.alloc(new) };
                if !q.is_null() {
                    // SAFETY: both blocks are live and distinct; the copy is the smaller size.
                    unsafe { std::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size)) };
                    unsafe { self.dealloc(p, layout) };
                }
                q
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Growth and shrinkage across the threshold and between large sizes keep the contents;
    /// zeroed blocks are zero; every block returns where it came from.
    #[test]
    fn blocks_keep_contents_across_sizes() {
        let a = HugeArrays;
        let sizes = [1000, MIN - 8, MIN, 3 * MIN + 12345, MIN + 1, 100, 5 * MIN];
        unsafe {
            let l = Layout::from_size_align(sizes[0], 8).unwrap();
            let mut p = a.alloc_zeroed(l);
            assert!(!p.is_null());
            assert!(std::slice::from_raw_parts(p, sizes[0])
                .iter()
                .all(|&b| b == 0));
            let mut cur = l;
            for (k, &n) in sizes.iter().enumerate().skip(1) {
                let keep = cur.size().min(n);
                for i in (0..keep).step_by(4093) {
                    *p.add(i) = (i as u8) ^ (k as u8);
                }
                p = a.realloc(p, cur, n);
                assert!(!p.is_null());
                for i in (0..keep).step_by(4093) {
                    assert_eq!(*p.add(i), (i as u8) ^ (k as u8), "size {n}, byte {i}");
                }
                cur = Layout::from_size_align(n, 8).unwrap();
            }
            a.dealloc(p, cur);
            let big = Layout::from_size_align(2 * MIN, 4096).unwrap();
            let z = a.alloc_zeroed(big);
            assert_eq!(z as usize % 4096, 0);
            assert!(std::slice::from_raw_parts(z, big.size())
                .iter()
                .all(|&b| b == 0));
            a.dealloc(z, big);
        }
    }
}
