//! Large read-only arrays kept in a file instead of anonymous memory.
//!
//! The owner view of a 10 GB core holds an object list of 16 bytes an object (175 M
//! objects: 2.8 GB) that is read-only once built and read only here and there afterwards.
//! In anonymous memory it counts in the resident set for the whole run, and a machine
//! without that much free memory cannot run the analysis at all. Written to an unlinked
//! file on disk and mapped read-only, its pages are the page cache's: clean once written
//! back, dropped by the kernel under memory pressure and read again when touched, and
//! out of this process's resident set whenever [`Spilled::release`] drops the mapping's
//! page-table entries (as the core's own pages are, `CoreFile::release_pages`). Eclipse
//! MAT keeps its dominator-tree indexes on disk for the same reason.
//!
//! Arrays smaller than [`threshold`] stay in memory: writing and mapping them costs more
//! than they take.

use std::marker::PhantomData;
use std::path::PathBuf;

/// Types whose every byte pattern of their size is a value and that have no padding, so
/// that an array of them is its bytes (written out and mapped back unchanged).
///
/// # Safety
/// The implementing type must be `Copy`, have no padding bytes and no invalid bit
/// patterns, and a stable layout (`#[repr(C)]` or `#[repr(transparent)]`).
pub unsafe trait Plain: Copy + Send + Sync + 'static {}
// SAFETY: primitive integers have neither padding nor invalid bit patterns.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}

/// The size in bytes from which an array is spilled: `COREHEAP_SPILL_MIN` (bytes; 0 spills
/// every array, which the tests use), or 1 GiB.
pub fn threshold() -> u64 {
    std::env::var("COREHEAP_SPILL_MIN")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1 << 30)
}

/// Where the files go: `COREHEAP_SPILL_DIR`, else `$TMPDIR`, else `/var/tmp` (on disk
/// where `/tmp` is a tmpfs, whose pages are memory the kernel cannot write back without
/// swap). The files are unlinked as they are made: nothing is left behind.
fn directory() -> PathBuf {
    for var in ["COREHEAP_SPILL_DIR", "TMPDIR"] {
        if let Some(d) = std::env::var_os(var).filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
    }
    PathBuf::from("/var/tmp")
}

/// A read-only array, in memory or in an unlinked file mapped read-only.
pub enum Spilled<T: Plain> {
    Memory(Vec<T>),
    File {
        map: memmap2::MmapRaw,
        len: usize,
        _t: PhantomData<T>,
    },
}

impl<T: Plain> Default for Spilled<T> {
    fn default() -> Self {
        Spilled::Memory(Vec::new())
    }
}

impl<T: Plain> From<Vec<T>> for Spilled<T> {
    fn from(v: Vec<T>) -> Self {
        Spilled::Memory(v)
    }
}

impl<T: Plain> Spilled<T> {
    /// `v` spilled to a file when it takes at least [`threshold`] bytes (see [`with`]).
    ///
    /// [`with`]: Spilled::with
    pub fn new(v: Vec<T>) -> Spilled<T> {
        let spill = std::mem::size_of_val(v.as_slice()) as u64 >= threshold();
        Spilled::with(v, spill)
    }

    /// `v` spilled to a file when `spill` and the file can be written; otherwise `v` as it
    /// is (a full disk costs memory, not the answer).
    pub fn with(v: Vec<T>, spill: bool) -> Spilled<T> {
        if !spill || v.is_empty() {
            return Spilled::Memory(v);
        }
        let Some(mut s) = Self::in_file(v.len()) else {
            return Spilled::Memory(v);
        };
        let (dst, release) = s.writable();
        // In 64 MiB steps, each step's pages dropped behind it.
        let step = ((64 << 20) / std::mem::size_of::<T>().max(1)).max(1);
        for (d, x) in dst.chunks_mut(step).zip(v.chunks(step)) {
            d.copy_from_slice(x);
            release.release();
        }
        s
    }

    /// An array of `len` values written by `fill` — in a file when `spill` and the file
    /// can be made, else in memory. `fill` gets the zeroed array and a function that drops
    /// the page-table entries of what it wrote so far (a long fill calls it every so
    /// often; the data stays in the page cache).
    pub fn filled(
        len: usize,
        spill: bool,
        fill: impl FnOnce(&mut [T], &(dyn Fn() + Sync)),
    ) -> Spilled<T> {
        let mut s = Spilled::zeroed(len, spill);
        let (dst, release) = s.writable();
        fill(dst, &|| release.release());
        s.release();
        s
    }

    /// `len` zeros — in a file when `spill` and the file can be made, else in memory
    /// (zeroed pages, mapped as they are written). Written through [`writable`].
    ///
    /// [`writable`]: Spilled::writable
    pub fn zeroed(len: usize, spill: bool) -> Spilled<T> {
        if spill && len > 0 {
            if let Some(s) = Self::in_file(len) {
                return s;
            }
        }
        if len == 0 || std::mem::size_of::<T>() == 0 {
            return Spilled::Memory(Vec::new());
        }
        let layout = std::alloc::Layout::array::<T>(len).expect("an array that fits memory");
        // SAFETY: `layout` is non-zero in size; the allocation is `len` zeroed values (a
        // value of `T: Plain`), freed by the Vec with the same layout. A large one is
        // fresh zero pages (calloc), mapped only as they are written.
        let v = unsafe {
            let p = std::alloc::alloc_zeroed(layout).cast::<T>();
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Vec::from_raw_parts(p, len, len)
        };
        Spilled::Memory(v)
    }

    /// The array to write, and what drops the page-table entries of what was written so
    /// far (usable from any thread while the array is being written: the written data
    /// stays in the page cache).
    pub fn writable(&mut self) -> (&mut [T], Releaser<'_>) {
        match self {
            Spilled::Memory(v) => (v.as_mut_slice(), Releaser(None)),
            Spilled::File { map, len, .. } => {
                // SAFETY: the map holds `len` values of `T` (`file_map` checked the
                // length), is page-aligned and is this array's alone; the `&mut self`
                // borrow makes the slice the only access to its bytes, and the releaser
                // only drops page-table entries (`release`), which changes no byte.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(map.as_mut_ptr().cast::<T>(), *len) };
                (dst, Releaser(Some(&*map)))
            }
        }
    }

    /// `len` zeros in a fresh unlinked file, if one can be made.
    fn in_file(len: usize) -> Option<Spilled<T>> {
        Some(Spilled::File {
            map: Self::file_map(len)?,
            len,
            _t: PhantomData,
        })
    }

    /// A shared map of a fresh unlinked file of `len` values. (Writing through a map
    /// measured 4-6 times faster than `write` on this machine's ext4: 2.8 GB in 2.5-3.3 s
    /// against 13-15 s.)
    fn file_map(len: usize) -> Option<memmap2::MmapRaw> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let f = tempfile::tempfile_in(directory()).ok()?;
        f.set_len(bytes as u64).ok()?;
        // The file's blocks reserved now: a sparse file's write fault on a full disk is
        // SIGBUS, not an error (`COREHEAP_SPILL_DIR` on a 1 MiB tmpfs crashed the owner
        // view). Without the space, or on a file system that cannot reserve it, the array
        // stays in memory.
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: fallocate on a file descriptor this function owns; no memory is
            // passed.
            let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, bytes as libc::off_t) };
            if r != 0 {
                return None;
            }
        }
        // The file is unlinked and this process's only handle to it is dropped after
        // mapping: nothing else can change or truncate it while it is mapped.
        let map = memmap2::MmapRaw::map_raw(&f).ok()?;
        (map.len() == bytes).then_some(map)
    }

    /// Is the array in a file?
    pub fn is_file(&self) -> bool {
        matches!(self, Spilled::File { .. })
    }

    /// Drop this process's page-table entries for the file's pages: the pages stay in
    /// the page cache and are mapped again when read; nothing changes for an array in
    /// memory. Long passes over a spilled array call it every so often.
    pub fn release(&self) {
        if let Spilled::File { map, .. } = self {
            Releaser(Some(map)).release();
        }
    }
}

/// Drops the page-table entries of a spilled array being written (`Spilled::writable`).
pub struct Releaser<'a>(Option<&'a memmap2::MmapRaw>);

impl Releaser<'_> {
    pub fn release(&self) {
        #[cfg(unix)]
        if let Some(map) = self.0 {
            // SAFETY: a shared file mapping: dropping its page-table entries discards no
            // data (written pages stay in the page cache, dirty until written back), and
            // every slice into it reads the same bytes after the next fault.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }
}

impl<T: Plain> Spilled<T> {
    /// Tell the kernel that a spilled array is read here and there (`on`) or in order: a
    /// random read then maps one page, not the 16 around it (fault-around), so that a
    /// pass of lookups keeps fewer of its pages resident between two `release` calls.
    pub fn random_access(&self, on: bool) {
        #[cfg(unix)]
        if let Spilled::File { map, .. } = self {
            let advice = match on {
                true => memmap2::Advice::Random,
                false => memmap2::Advice::Normal,
            };
            let _ = map.advise(advice);
        }
    }
}

impl<T: Plain> std::ops::Deref for Spilled<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Spilled::Memory(v) => v,
            // SAFETY: the map holds `len` values of `T` (`file_map` checked the length); a
            // page-aligned map is aligned for any `T`; `T: Plain` makes any bytes values.
            Spilled::File { map, len, .. } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().cast::<T>(), *len)
            },
        }
    }
}

impl<T: Plain + std::fmt::Debug> std::fmt::Debug for Spilled<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spilled::Memory(v) => write!(f, "Spilled::Memory({} values)", v.len()),
            Spilled::File { len, .. } => write!(f, "Spilled::File({len} values)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spilled_array_reads_back_as_written() {
        let v: Vec<u64> = (0..10_000_000u64).map(|i| i * 0x9e37_79b9).collect();
        let s = Spilled::with(v.clone(), true);
        assert!(
            s.is_file(),
            "no spill file could be made in {:?}",
            directory()
        );
        assert_eq!(&s[..], &v[..]);
        s.release();
        assert_eq!(&s[..], &v[..], "after release, the pages fault back in");
        let empty = Spilled::<u32>::new(Vec::new());
        assert!(!empty.is_file() && empty.is_empty());
    }
}
