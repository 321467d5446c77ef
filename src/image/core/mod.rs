//! The core file itself: ELF header, PT_LOAD segments and notes, over a memory map.
//!
//! goblin parses the ELF header and program headers; notes are decoded by `notes` with
//! explicit bounds. Nothing is copied out of the map except small note records, so a
//! tens-of-GB core costs only its page-cache footprint.

pub mod compress;
pub mod notes;

use crate::addr::{Addr, Range};
use crate::error::{Diagnostic, Error, Result};
use crate::progress::Progress;
use goblin::elf::header::{self, Header};
use goblin::elf::program_header::{ProgramHeader, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE};
use memmap2::Mmap;
use notes::{FileMapping, PrPsInfo, SigInfo, Thread};
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};

pub use compress::Compression;

/// Architecture of the analysed process. Comes from the core, never from `cfg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    Aarch64,
}

impl Arch {
    /// Number of general registers in `elf_prstatus.pr_reg`.
    pub fn prstatus_nregs(self) -> usize {
        match self {
            Arch::X86_64 => 27,
            Arch::Aarch64 => 34,
        }
    }
    pub fn pointer_size(self) -> u64 {
        8
    }
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// Bytes of the core: a map of the file, or owned bytes (tests), or an anonymous map the
/// fuzzing harness overwrites between walks ([`CoreFile::overwrite`]).
pub enum Backing {
    Mmap(Mmap),
    Owned(Vec<u8>),
    Raw(memmap2::MmapRaw),
}

impl Backing {
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
            // SAFETY: the map is `len` bytes long and lives as long as `self`; it is only
            // written by `CoreFile::overwrite`, whose caller guarantees no slice is alive.
            Backing::Raw(m) => unsafe { std::slice::from_raw_parts(m.as_ptr(), m.len()) },
        }
    }
}

/// A PT_LOAD segment. `in_core` ≤ `filesz` ≤ `memsz`: the kernel writes `filesz` 0 for
/// mappings it left out; a truncated core has fewer bytes than `filesz` says.
#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
pub struct Segment {
    pub vaddr: Addr,
    pub memsz: u64,
    pub filesz: u64,
    pub offset: u64,
    /// Bytes of this segment actually present in the core file.
    pub in_core: u64,
    pub flags: u32,
}

impl Segment {
    pub fn range(&self) -> Range {
        Range::new(self.vaddr, self.vaddr.wrapping_add(self.memsz))
    }
    pub fn perms(&self) -> String {
        perms_string(self.flags)
    }
}

pub fn perms_string(flags: u32) -> String {
    let mut s = String::with_capacity(3);
    s.push(if flags & PF_R != 0 { 'r' } else { '-' });
    s.push(if flags & PF_W != 0 { 'w' } else { '-' });
    s.push(if flags & PF_X != 0 { 'x' } else { '-' });
    s
}

/// Where the core came from, as far as its notes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Producer {
    /// The kernel's core dumper (no gdb notes).
    Kernel,
    /// gdb's `gcore` / `generate-core-file`.
    Gdb,
}

pub struct CoreFile {
    pub path: PathBuf,
    data: Backing,
    /// Set when the core was decompressed from this format.
    pub compression: Option<Compression>,
    pub arch: Arch,
    /// PT_LOAD segments sorted by address.
    pub segments: Vec<Segment>,
    pub threads: Vec<Thread>,
    pub prpsinfo: Option<PrPsInfo>,
    pub siginfo: Option<SigInfo>,
    pub auxv: Vec<(u64, u64)>,
    pub files: Vec<FileMapping>,
    pub page_size: u64,
    pub producer: Producer,
    /// Bytes the program headers describe vs. bytes the file has, when the core is short.
    pub truncated: Option<(u64, u64)>,
    pub diagnostics: Vec<Diagnostic>,
}

const PN_XNUM: u16 = 0xffff;

impl CoreFile {
    /// Open a core file (plain or zstd/lz4/xz-compressed) and parse its headers and notes.
    pub fn open(path: &Path, progress: &dyn Progress) -> Result<CoreFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::bad_core(path, "is a directory, not a core file"));
        }
        if meta.len() == 0 {
            return Err(Error::bad_core(path, "empty file"));
        }
        // SAFETY: the map is read-only; the file is a core that nothing should modify while
        // we read it. (A concurrent truncation could fault; that is the usual mmap caveat.)
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (backing, compression) = match Compression::detect(&map) {
            Some(kind) => {
                drop(map);
                let tmp = compress::decompress_to_temp(path, kind, progress)?;
                // SAFETY: our own unnamed temporary file.
                let m = unsafe { Mmap::map(&tmp) }.map_err(|e| Error::io(path, e))?;
                (Backing::Mmap(m), Some(kind))
            }
            None => (Backing::Mmap(map), None),
        };
        #[cfg(unix)]
        if let Backing::Mmap(m) = &backing {
            // Walkers read scattered pages; the kernel's readahead should not guess.
            let _ = m.advise(memmap2::Advice::Random);
        }
        let mut core = Self::parse(path.to_path_buf(), backing)?;
        core.compression = compression;
        Ok(core)
    }

    /// Parse a core held in memory (tests, fuzzing).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<CoreFile> {
        Self::parse(PathBuf::from(name), Backing::Owned(bytes))
    }

    /// A core held in an anonymous map that [`CoreFile::overwrite`] may patch (fuzzing:
    /// one parsed core, many overlays).
    #[doc(hidden)]
    pub fn from_bytes_writable(name: &str, bytes: &[u8]) -> Result<CoreFile> {
        if bytes.is_empty() {
            return Err(Error::bad_core(Path::new(name), "empty file"));
        }
        let mut m = memmap2::MmapMut::map_anon(bytes.len())
            .map_err(|e| Error::Other(format!("{name}: anonymous map: {e}")))?;
        m[..bytes.len()].copy_from_slice(bytes);
        let raw = memmap2::MmapRaw::from(m);
        Self::parse(PathBuf::from(name), Backing::Raw(raw))
    }

    /// A core file mapped copy-on-write (private): [`CoreFile::overwrite`] may patch it,
    /// and only the pages patched are copied (fuzzing on cores of a GiB).
    #[doc(hidden)]
    pub fn open_writable(path: &Path) -> Result<CoreFile> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: a private mapping: writes go to copies of the pages, never to the file;
        // the file is a core nobody writes while it is analysed (as for `CoreFile::open`).
        let m =
            unsafe { memmap2::MmapOptions::new().map_copy(&f) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path.to_path_buf(), Backing::Raw(memmap2::MmapRaw::from(m)))
    }

    /// Overwrite the core's bytes at file offset `off` (clamped to the file); returns the
    /// bytes replaced. Only cores made by [`CoreFile::from_bytes_writable`] can be patched
    /// (others: nothing is written, empty result).
    ///
    /// # Safety
    /// No slice of this core's bytes (from [`CoreFile::bytes`] or any reader over it) may be
    /// alive, and no other thread may read the core during the call: the fuzzing harness
    /// patches between two walks, which keep no borrowed bytes.
    #[doc(hidden)]
    pub unsafe fn overwrite(&self, off: usize, bytes: &[u8]) -> Vec<u8> {
        let Backing::Raw(m) = &self.data else {
            return Vec::new();
        };
        let end = off.saturating_add(bytes.len()).min(m.len());
        if off >= end {
            return Vec::new();
        }
        let n = end - off;
        // SAFETY: [off, off + n) lies in the map; the caller guarantees exclusive access.
        unsafe {
            let p = m.as_mut_ptr().add(off);
            let old = std::slice::from_raw_parts(p, n).to_vec();
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, n);
            old
        }
    }

    fn parse(path: PathBuf, data: Backing) -> Result<CoreFile> {
        let bytes = data.bytes();
        let file_len = bytes.len() as u64;
        if bytes.is_empty() {
            return Err(Error::bad_core(&path, "empty file"));
        }
        if bytes.len() < 4 || &bytes[0..4] != b"\x7fELF" {
            return Err(Error::bad_core(
                &path,
                "not an ELF file (nor a zstd, lz4 or xz-compressed core)",
            ));
        }
        if bytes.len() < 64 {
            return Err(Error::bad_core(
                &path,
                format!(
                    "truncated: {} bytes is shorter than an ELF header",
                    bytes.len()
                ),
            ));
        }
        let class = bytes[header::EI_CLASS];
        let data_enc = bytes[header::EI_DATA];
        let hdr: Header = goblin::elf::Elf::parse_header(bytes)
            .map_err(|e| Error::bad_core(&path, format!("bad ELF header: {e}")))?;
        if hdr.e_type != header::ET_CORE {
            let what = match hdr.e_type {
                header::ET_EXEC => "an executable",
                header::ET_DYN => "a shared object or PIE executable",
                header::ET_REL => "a relocatable object",
                _ => "an ELF file of another kind",
            };
            return Err(Error::bad_core(
                &path,
                format!("is {what}, not a core dump (ELF type {})", hdr.e_type),
            ));
        }
        let arch = match (class, data_enc, hdr.e_machine) {
            (header::ELFCLASS64, header::ELFDATA2LSB, header::EM_X86_64) => Arch::X86_64,
            (header::ELFCLASS64, header::ELFDATA2LSB, header::EM_AARCH64) => Arch::Aarch64,
            (c, d, m) => {
                let bits = if c == header::ELFCLASS32 {
                    "32-bit"
                } else {
                    "64-bit"
                };
                let endian = if d == header::ELFDATA2MSB {
                    "big-endian"
                } else {
                    "little-endian"
                };
                return Err(Error::Unsupported(format!(
                    "{}: unsupported architecture: {bits} {endian} {} core (coreheap reads x86_64 and aarch64 little-endian cores)",
                    path.display(),
                    header::machine_to_str(m)
                )));
            }
        };
        let mut diagnostics = Vec::new();

        // Program header count: PN_XNUM means the real count is in section header 0's sh_info
        // (cores with more than 65534 mappings; fs/binfmt_elf.c fill_extnum_info).
        let mut phnum = hdr.e_phnum as u64;
        if hdr.e_phnum == PN_XNUM {
            let sh_info = hdr
                .e_shoff
                .checked_add(44)
                .and_then(|o| notes::u32_at(bytes, o as usize));
            phnum = sh_info.ok_or_else(|| {
                Error::bad_core(
                    &path,
                    "truncated: the extended program header count (section header 0) is missing",
                )
            })? as u64;
        }
        if hdr.e_phentsize as u64 != 56 && phnum > 0 {
            return Err(Error::bad_core(
                &path,
                format!("bad program header entry size {}", hdr.e_phentsize),
            ));
        }
        let ph_end = phnum
            .checked_mul(56)
            .and_then(|n| n.checked_add(hdr.e_phoff));
        match ph_end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(Error::bad_core(
                    &path,
                    format!(
                        "truncated: the file ({file_len} bytes) ends before its {phnum} program headers"
                    ),
                ))
            }
        }
        let phdrs = ProgramHeader::parse(
            bytes,
            hdr.e_phoff as usize,
            phnum as usize,
            goblin::container::Ctx::new(
                goblin::container::Container::Big,
                goblin::container::Endian::Little,
            ),
        )
        .map_err(|e| Error::bad_core(&path, format!("bad program headers: {e}")))?;

        let mut segments = Vec::new();
        let mut described_end = 0u64;
        let mut note_blobs: Vec<&[u8]> = Vec::new();
        for ph in &phdrs {
            let end = ph.p_offset.saturating_add(ph.p_filesz);
            described_end = described_end.max(end);
            let in_core = if ph.p_offset >= file_len {
                0
            } else {
                ph.p_filesz.min(file_len - ph.p_offset)
            };
            match ph.p_type {
                PT_LOAD => {
                    if ph.p_vaddr.checked_add(ph.p_memsz).is_none() {
                        diagnostics.push(Diagnostic::warning(format!(
                            "PT_LOAD at {:#x} with size {:#x} wraps around the address space; ignored",
                            ph.p_vaddr, ph.p_memsz
                        )));
                        continue;
                    }
                    // filesz > memsz is malformed; trust only min(filesz, memsz).
                    let filesz = ph.p_filesz.min(ph.p_memsz);
                    segments.push(Segment {
                        vaddr: Addr(ph.p_vaddr),
                        memsz: ph.p_memsz,
                        filesz,
                        offset: ph.p_offset,
                        in_core: in_core.min(filesz),
                        flags: ph.p_flags,
                    });
                }
                PT_NOTE => {
                    if in_core < ph.p_filesz {
                        diagnostics.push(Diagnostic::warning(
                            "the notes segment is cut short by the end of the file; some thread or mapping records may be missing",
                        ));
                    }
                    if in_core > 0 {
                        let s = ph.p_offset as usize;
                        note_blobs.push(&bytes[s..s + in_core as usize]);
                    }
                }
                _ => {}
            }
        }
        segments.sort_by_key(|s| s.vaddr);
        // Overlapping PT_LOADs would make reads ambiguous: keep the first, trim the rest.
        let mut cleaned: Vec<Segment> = Vec::with_capacity(segments.len());
        for mut s in segments {
            if let Some(prev) = cleaned.last() {
                let prev_end = prev.vaddr.wrapping_add(prev.memsz);
                if s.vaddr < prev_end {
                    let cut = prev_end.offset_from(s.vaddr).unwrap_or(0);
                    diagnostics.push(Diagnostic::warning(format!(
                        "PT_LOAD at {} overlaps the previous segment; overlapping part ignored",
                        s.vaddr
                    )));
                    if cut >= s.memsz {
                        continue;
                    }
                    s.vaddr = prev_end;
                    s.memsz -= cut;
                    s.offset = s.offset.saturating_add(cut);
                    s.filesz = s.filesz.saturating_sub(cut);
                    s.in_core = s.in_core.saturating_sub(cut);
                }
            }
            cleaned.push(s);
        }
        let segments = cleaned;

        let truncated = (described_end > file_len).then_some((described_end, file_len));
        if let Some((want, have)) = truncated {
            let missing: u64 = segments.iter().map(|s| s.filesz - s.in_core).sum();
            diagnostics.push(
                Diagnostic::warning(format!(
                    "core is truncated: its headers describe {want} bytes but the file has {have}; {} of memory are missing and will be reported as unavailable",
                    crate::units::human_bytes(missing)
                ))
                .hint("the dump was probably cut short (disk full, RLIMIT_CORE, or an interrupted copy)"),
            );
        }

        let mut threads = Vec::new();
        let mut prpsinfo = None;
        let mut siginfo = None;
        let mut auxv = Vec::new();
        let mut files = Vec::new();
        let mut page_size = 4096;
        let mut producer = Producer::Kernel;
        for blob in note_blobs {
            let mut bad = None;
            for n in notes::iter_notes(blob, &mut bad) {
                match (n.name, n.ntype) {
                    (b"CORE", notes::NT_PRSTATUS) => match notes::parse_prstatus(arch, n.desc) {
                        Some(t) => threads.push(t),
                        None => diagnostics.push(Diagnostic::warning(
                            "a thread status note (NT_PRSTATUS) is too short; thread skipped",
                        )),
                    },
                    (b"CORE", notes::NT_PRPSINFO) => prpsinfo = notes::parse_prpsinfo(n.desc),
                    (b"CORE", notes::NT_SIGINFO) if siginfo.is_none() => {
                        siginfo = notes::parse_siginfo(n.desc)
                    }
                    (b"CORE", notes::NT_AUXV) => auxv = notes::parse_auxv(n.desc),
                    (b"CORE", notes::NT_FILE) => match notes::parse_nt_file(n.desc) {
                        Ok((f, ps)) => {
                            files = f;
                            page_size = ps;
                        }
                        Err(msg) => diagnostics.push(Diagnostic::warning(format!(
                            "{msg}; file-backed mappings are unknown"
                        ))),
                    },
                    (b"LINUX", notes::NT_ARM_TLS) if arch == Arch::Aarch64 => {
                        if let (Some(t), Some(v)) = (threads.last_mut(), notes::u64_at(n.desc, 0)) {
                            t.thread_pointer = Some(Addr(v));
                        }
                    }
                    (b"GDB", _) => producer = Producer::Gdb,
                    _ => {}
                }
            }
            if let Some(msg) = bad {
                diagnostics.push(Diagnostic::warning(msg));
            }
        }
        if let Some(ps) = auxv.iter().find(|(k, _)| *k == notes::AT_PAGESZ) {
            if ps.1.is_power_of_two() && ps.1 >= 4096 && ps.1 <= (1 << 20) {
                page_size = ps.1;
            }
        }
        if threads.is_empty() {
            diagnostics.push(Diagnostic::warning(
                "the core has no thread status notes (NT_PRSTATUS)",
            ));
        }
        if segments.is_empty() {
            diagnostics.push(Diagnostic::warning(
                "the core has no memory segments (PT_LOAD)",
            ));
        }
        Ok(CoreFile {
            path,
            data,
            compression: None,
            arch,
            segments,
            threads,
            prpsinfo,
            siginfo,
            auxv,
            files,
            page_size,
            producer,
            truncated,
            diagnostics,
        })
    }

    /// Drop this process's page-table entries for the core's pages (MADV_DONTNEED on the
    /// read-only file map): the pages stay in the page cache and fault back in when read
    /// again, but the resident set stops growing with the core — long address-ordered
    /// scans call this behind them, so a 10 GB core does not show as 10 GB resident. The
    /// map is never written, so no content is lost; a refusal changes nothing.
    pub fn release_pages(&self) {
        #[cfg(unix)]
        if let Backing::Mmap(m) = &self.data {
            // SAFETY: the mapping is read-only and file-backed: dropping its PTEs cannot
            // discard data (there are no private modified pages); every slice into it
            // stays valid and reads the same bytes after the next fault.
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// The raw bytes of the core file.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        self.data.bytes()
    }

    pub fn file_len(&self) -> u64 {
        self.bytes().len() as u64
    }

    pub fn auxv_value(&self, key: u64) -> Option<u64> {
        self.auxv.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    pub fn pid(&self) -> Option<u32> {
        self.prpsinfo
            .as_ref()
            .map(|p| p.pid)
            .filter(|&p| p != 0)
            .or_else(|| self.threads.first().map(|t| t.tid))
    }

    /// The fatal signal that made the kernel dump the process, with the thread that took
    /// it; `None` for a snapshot (gcore of a live or stopped process: gdb records the
    /// SIGSTOP of its attach, or of a process that stopped itself — a stop, not a crash).
    pub fn signal(&self) -> Option<(u32, Option<u32>)> {
        self.raw_signal().filter(|(s, _)| !is_stop_signal(*s))
    }

    /// The stop signal recorded in a snapshot core, if any.
    pub fn stop_signal(&self) -> Option<u32> {
        self.raw_signal()
            .map(|(s, _)| s)
            .filter(|&s| is_stop_signal(s))
    }

    /// The signal in the notes, whatever it is. The kernel writes the dumping thread first
    /// and `pr_cursig` in every thread; NT_SIGINFO carries the full siginfo of that signal.
    pub fn raw_signal(&self) -> Option<(u32, Option<u32>)> {
        let sig = self
            .siginfo
            .as_ref()
            .map(|s| s.signo)
            .filter(|&s| s != 0)
            .or_else(|| self.threads.iter().map(|t| t.signal).find(|&s| s != 0))?;
        let tid = self
            .threads
            .iter()
            .find(|t| t.signal == sig)
            .or(self.threads.first())
            .map(|t| t.tid);
        Some((sig, tid))
    }
}

/// SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU: they stop a process, they never dump it.
pub fn is_stop_signal(sig: u32) -> bool {
    matches!(sig, 19..=22)
}
