//! One address space over the core and the files it maps.
//!
//! Bytes come from the core's PT_LOAD segments first. Where the core left bytes out on
//! purpose (the kernel's `filesz < memsz`, or gdb writing no segment at all for a mapping),
//! they are read from the mapped file on disk — but only from a file whose build-id was
//! verified against the core's copy of its headers (see `modules`). Bytes a truncated core
//! lost are never "recovered" from disk: they may have been modified in memory.
//! Reads of unavailable bytes are `ReadError`s, never zeros.

use crate::addr::{Addr, Range};
use crate::error::ReadError;
use crate::image::core::CoreFile;
use memmap2::Mmap;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Offset in the core file.
    Core(u64),
    /// Index into `files`, offset in that file.
    File(u32, u64),
}

#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    end: u64,
    src: Source,
}

/// Where a byte of the process image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ByteSource {
    Core,
    Disk,
    Unavailable,
}

pub struct AddressSpace {
    core: Arc<CoreFile>,
    files: Vec<Arc<Mmap>>,
    /// Sorted, non-overlapping.
    regions: Vec<Region>,
    /// Ranges the core claims to hold (`[vaddr, vaddr+filesz)`), sorted: never filled from disk.
    claimed: Vec<Range>,
    /// Index of the region that served the last read (a cheap locality cache).
    last: AtomicUsize,
}

impl AddressSpace {
    /// Drop this process's page-table entries for the core's pages
    /// ([`CoreFile::release_pages`]): address-ordered walks over a large heap call it
    /// every so many bytes behind them, so that what they read does not stay resident.
    pub fn release_pages(&self) {
        self.core.release_pages();
    }

    /// Only the bytes present in the core.
    pub fn new(core: Arc<CoreFile>) -> AddressSpace {
        let mut regions = Vec::with_capacity(core.segments.len());
        let mut claimed = Vec::with_capacity(core.segments.len());
        for s in &core.segments {
            if s.filesz > 0 {
                claimed.push(Range::new(s.vaddr, s.vaddr.wrapping_add(s.filesz)));
            }
            if s.in_core > 0 {
                regions.push(Region {
                    start: s.vaddr.0,
                    end: s.vaddr.0 + s.in_core,
                    src: Source::Core(s.offset),
                });
            }
        }
        AddressSpace {
            core,
            files: Vec::new(),
            regions,
            claimed,
            last: AtomicUsize::new(0),
        }
    }

    pub fn core(&self) -> &CoreFile {
        &self.core
    }

    /// Make the bytes of a verified on-disk file available for the parts of `mapping`
    /// (mapped at file offset `file_offset`) that the core does not claim to hold.
    /// Returns the number of bytes made available.
    pub fn attach_file(&mut self, map: Arc<Mmap>, mapping: Range, file_offset: u64) -> u64 {
        let file_len = map.len() as u64;
        if file_offset >= file_len {
            return 0;
        }
        // The file may be shorter than the mapping (the tail of the last page is zero-fill
        // of .bss, which is anonymous memory, not file bytes).
        let end = mapping
            .start
            .0
            .saturating_add(file_len - file_offset)
            .min(mapping.end.0);
        let mapping = Range::new(mapping.start, Addr(end));
        let idx = self.files.len() as u32;
        let mut added = 0;
        let mut new = Vec::new();
        for gap in subtract(mapping, &self.claimed) {
            let off = file_offset + (gap.start.0 - mapping.start.0);
            new.push(Region {
                start: gap.start.0,
                end: gap.end.0,
                src: Source::File(idx, off),
            });
            added += gap.len();
        }
        if !new.is_empty() {
            self.files.push(map);
            self.regions.extend(new);
            self.regions.sort_by_key(|r| r.start);
            // Claim these ranges so a second mapping of the same addresses cannot overlap.
            self.claimed.extend(
                self.regions
                    .iter()
                    .filter(|r| matches!(r.src, Source::File(i, _) if i == idx))
                    .map(|r| Range::new(Addr(r.start), Addr(r.end))),
            );
            self.claimed.sort();
        }
        added
    }

    #[inline]
    fn find(&self, a: u64) -> Option<usize> {
        let last = self.last.load(Ordering::Relaxed);
        if let Some(r) = self.regions.get(last) {
            if a >= r.start && a < r.end {
                return Some(last);
            }
        }
        let i = self.regions.partition_point(|r| r.start <= a);
        if i == 0 {
            return None;
        }
        let r = &self.regions[i - 1];
        if a < r.end {
            self.last.store(i - 1, Ordering::Relaxed);
            Some(i - 1)
        } else {
            None
        }
    }

    #[inline]
    fn region_bytes(&self, r: &Region) -> &[u8] {
        let len = (r.end - r.start) as usize;
        match r.src {
            Source::Core(off) => &self.core.bytes()[off as usize..off as usize + len],
            Source::File(i, off) => &self.files[i as usize][off as usize..off as usize + len],
        }
    }

    /// The longest contiguous available slice starting at `addr` (at most `max` bytes).
    #[inline]
    pub fn contiguous(&self, addr: Addr, max: u64) -> Option<&[u8]> {
        let i = self.find(addr.0)?;
        let r = &self.regions[i];
        let bytes = self.region_bytes(r);
        let off = (addr.0 - r.start) as usize;
        let n = ((r.end - addr.0).min(max)) as usize;
        Some(&bytes[off..off + n])
    }

    /// The whole region holding `addr`: its start address and bytes (for readers that
    /// keep the regions they read most in hand).
    #[inline]
    pub fn region_at(&self, addr: Addr) -> Option<(usize, u64, &[u8])> {
        let i = self.find(addr.0)?;
        let r = &self.regions[i];
        Some((i, r.start, self.region_bytes(r)))
    }

    /// Region `i`'s bytes (an index `region_at` returned).
    #[inline]
    pub fn region_bytes_of(&self, i: usize) -> &[u8] {
        self.region_bytes(&self.regions[i])
    }

    /// `len` bytes at `addr` without copying, when they lie in one region.
    #[inline]
    pub fn slice(&self, addr: Addr, len: u64) -> Option<&[u8]> {
        let s = self.contiguous(addr, len)?;
        (s.len() as u64 == len).then_some(s)
    }

    /// Read exactly `buf.len()` bytes at `addr`, spanning adjacent regions.
    pub fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(ReadError::Overflow)?;
            let s = self
                .contiguous(a, (buf.len() - done) as u64)
                .ok_or(ReadError::Unavailable(a))?;
            buf[done..done + s.len()].copy_from_slice(s);
            done += s.len();
        }
        Ok(())
    }

    #[inline]
    pub fn read_u64(&self, addr: Addr) -> Result<u64, ReadError> {
        if let Some(s) = self.slice(addr, 8) {
            return Ok(u64::from_le_bytes(s.try_into().unwrap()));
        }
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    #[inline]
    pub fn read_u32(&self, addr: Addr) -> Result<u32, ReadError> {
        if let Some(s) = self.slice(addr, 4) {
            return Ok(u32::from_le_bytes(s.try_into().unwrap()));
        }
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    #[inline]
    pub fn read_addr(&self, addr: Addr) -> Result<Addr, ReadError> {
        self.read_u64(addr).map(Addr)
    }

    /// A NUL-terminated string of at most `max` bytes (without the NUL). `None` when
    /// unavailable or when no NUL is found within `max` bytes.
    pub fn read_cstr(&self, addr: Addr, max: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut a = addr;
        while out.len() < max {
            let s = self.contiguous(a, (max - out.len()) as u64)?;
            if let Some(p) = memchr::memchr(0, s) {
                out.extend_from_slice(&s[..p]);
                return Some(out);
            }
            out.extend_from_slice(s);
            a = a.checked_add(s.len() as u64)?;
        }
        None
    }

    pub fn is_available(&self, addr: Addr) -> bool {
        self.find(addr.0).is_some()
    }

    pub fn source_of(&self, addr: Addr) -> ByteSource {
        match self.find(addr.0).map(|i| self.regions[i].src) {
            Some(Source::Core(_)) => ByteSource::Core,
            Some(Source::File(..)) => ByteSource::Disk,
            None => ByteSource::Unavailable,
        }
    }

    /// Bytes of `range` available from the core and from disk.
    pub fn coverage(&self, range: Range) -> (u64, u64) {
        let mut core = 0;
        let mut disk = 0;
        let i = self.regions.partition_point(|r| r.end <= range.start.0);
        for r in &self.regions[i..] {
            if r.start >= range.end.0 {
                break;
            }
            let n = r.end.min(range.end.0) - r.start.max(range.start.0);
            match r.src {
                Source::Core(_) => core += n,
                Source::File(..) => disk += n,
            }
        }
        (core, disk)
    }

    /// Visit every available contiguous slice inside `range`, in address order.
    pub fn for_each_slice(&self, range: Range, mut f: impl FnMut(Addr, &[u8]) -> bool) {
        let i = self.regions.partition_point(|r| r.end <= range.start.0);
        for r in &self.regions[i..] {
            if r.start >= range.end.0 {
                break;
            }
            let s = r.start.max(range.start.0);
            let e = r.end.min(range.end.0);
            let bytes = self.region_bytes(r);
            let slice = &bytes[(s - r.start) as usize..(e - r.start) as usize];
            if !f(Addr(s), slice) {
                return;
            }
        }
    }
}

/// `range` minus the sorted ranges `holes`.
fn subtract(range: Range, holes: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    let mut cur = range.start;
    let i = holes.partition_point(|h| h.end <= range.start);
    for h in &holes[i..] {
        if h.start >= range.end {
            break;
        }
        if h.start > cur {
            out.push(Range::new(cur, h.start));
        }
        cur = cur.max(h.end);
    }
    if cur < range.end {
        out.push(Range::new(cur, range.end));
    }
    out
}

/// Reads that return `None` for unavailable memory.
pub struct Reader<'a> {
    pub space: &'a AddressSpace,
}

impl Reader<'_> {
    #[inline]
    pub fn u64(&self, a: Addr) -> Option<u64> {
        self.space.read_u64(a).ok()
    }
    #[inline]
    pub fn u32(&self, a: Addr) -> Option<u32> {
        self.space.read_u32(a).ok()
    }
    #[inline]
    pub fn u16(&self, a: Addr) -> Option<u16> {
        let mut b = [0u8; 2];
        self.space.read(a, &mut b).ok()?;
        Some(u16::from_le_bytes(b))
    }
    #[inline]
    pub fn u8(&self, a: Addr) -> Option<u8> {
        let mut b = [0u8; 1];
        self.space.read(a, &mut b).ok()?;
        Some(b[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_ranges() {
        let r = |a, b| Range::new(Addr(a), Addr(b));
        assert_eq!(subtract(r(0, 100), &[]), vec![r(0, 100)]);
        assert_eq!(
            subtract(r(0, 100), &[r(10, 20), r(50, 60)]),
            vec![r(0, 10), r(20, 50), r(60, 100)]
        );
        assert_eq!(subtract(r(10, 20), &[r(0, 30)]), vec![]);
        assert_eq!(subtract(r(10, 40), &[r(0, 15), r(35, 50)]), vec![r(15, 35)]);
    }
}
