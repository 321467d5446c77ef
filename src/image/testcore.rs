//! Synthetic cores for the walkers' unit tests: bytes laid out at chosen addresses, written
//! as a real x86_64 ELF core and parsed by `CoreFile::from_bytes`, so a test walks its fake
//! heap through the same address space, segments, threads and modules as a real core.
//!
//! The note layouts are the kernel's (include/uapi/linux/elfcore.h `struct elf_prstatus`:
//! pr_pid at 32, pr_reg at 112; arch/x86/include/asm/user_64.h `user_regs_struct`: rsp is
//! register 19, fs_base 21) and fs/binfmt_elf.c fill_files_note for NT_FILE; tests/synth.rs
//! builds the same shapes for the CLI tests.

use crate::addr::Addr;
use crate::image::core::CoreFile;
use crate::image::modules::SearchPaths;
use crate::image::process::{Options, Process};

/// PF_R | PF_W: a writable anonymous (or .data/.bss) segment.
pub const RW: u32 = 6;
/// PF_R | PF_X: file-backed code.
pub const RX: u32 = 5;

struct Seg {
    vaddr: u64,
    flags: u32,
    bytes: Vec<u8>,
}

/// A core under construction: segments (zero-filled until written), threads, NT_FILE entries.
#[derive(Default)]
pub struct TestCore {
    segs: Vec<Seg>,
    /// (tid, stack pointer, thread pointer)
    threads: Vec<(u32, u64, u64)>,
    /// (start, end, file offset in pages, path)
    files: Vec<(u64, u64, u64, String)>,
    /// (thread index, register index in `user_regs_struct`, value)
    regs: Vec<(usize, usize, u64)>,
}

impl TestCore {
    pub fn new() -> TestCore {
        TestCore::default()
    }

    /// A zero-filled PT_LOAD of `len` bytes at `vaddr`, all of it in the core.
    pub fn segment(&mut self, vaddr: u64, len: u64, flags: u32) -> &mut Self {
        assert!(
            self.segs
                .iter()
                .all(|s| vaddr + len <= s.vaddr || vaddr >= s.vaddr + s.bytes.len() as u64),
            "segments overlap"
        );
        self.segs.push(Seg {
            vaddr,
            flags,
            bytes: vec![0; len as usize],
        });
        self
    }

    /// An NT_FILE entry (a module named by `path`, with no file on disk).
    pub fn file(&mut self, start: u64, end: u64, path: &str) -> &mut Self {
        self.files.push((start, end, 0, path.to_string()));
        self
    }

    pub fn thread(&mut self, tid: u32, sp: u64, thread_pointer: u64) -> &mut Self {
        self.threads.push((tid, sp, thread_pointer));
        self
    }

    /// Register `reg` (index in `user_regs_struct`: rbx is 5, r12 is 3) of the
    /// `thread`-th thread added.
    pub fn reg(&mut self, thread: usize, reg: usize, v: u64) -> &mut Self {
        self.regs.push((thread, reg, v));
        self
    }

    pub fn bytes(&mut self, at: u64, b: &[u8]) -> &mut Self {
        let s = self
            .segs
            .iter_mut()
            .find(|s| at >= s.vaddr && at + b.len() as u64 <= s.vaddr + s.bytes.len() as u64)
            .unwrap_or_else(|| panic!("{at:#x}+{} is in no segment", b.len()));
        let o = (at - s.vaddr) as usize;
        s.bytes[o..o + b.len()].copy_from_slice(b);
        self
    }

    pub fn u64(&mut self, at: u64, v: u64) -> &mut Self {
        self.bytes(at, &v.to_le_bytes())
    }

    pub fn u32(&mut self, at: u64, v: u32) -> &mut Self {
        self.bytes(at, &v.to_le_bytes())
    }

    pub fn u16(&mut self, at: u64, v: u16) -> &mut Self {
        self.bytes(at, &v.to_le_bytes())
    }

    /// The core as a process, using no file on disk.
    pub fn process(&self) -> Process {
        let core = CoreFile::from_bytes("synthetic-core", self.elf()).expect("synthetic core");
        let opts = Options {
            search: SearchPaths {
                core_only: true,
                ..Default::default()
            },
            heap_models: None,
        };
        Process::from_core(core, &opts)
    }

    fn elf(&self) -> Vec<u8> {
        let mut notes = Vec::new();
        for (ti, &(tid, sp, tp)) in self.threads.iter().enumerate() {
            let mut d = vec![0u8; 336];
            for &(_, r, v) in self.regs.iter().filter(|x| x.0 == ti) {
                d[112 + 8 * r..120 + 8 * r].copy_from_slice(&v.to_le_bytes());
            }
            d[32..36].copy_from_slice(&tid.to_le_bytes());
            d[112 + 8 * 19..120 + 8 * 19].copy_from_slice(&sp.to_le_bytes());
            d[112 + 8 * 21..120 + 8 * 21].copy_from_slice(&tp.to_le_bytes());
            note(&mut notes, 1, &d);
        }
        if !self.files.is_empty() {
            let mut d = Vec::new();
            d.extend_from_slice(&(self.files.len() as u64).to_le_bytes());
            d.extend_from_slice(&4096u64.to_le_bytes());
            for (s, e, off, _) in &self.files {
                for v in [s, e, off] {
                    d.extend_from_slice(&v.to_le_bytes());
                }
            }
            for (.., path) in &self.files {
                d.extend_from_slice(path.as_bytes());
                d.push(0);
            }
            note(&mut notes, 0x4649_4c45, &d);
        }
        let phnum = 1 + self.segs.len() as u64;
        let notes_off = 64 + 56 * phnum;
        let mut out = vec![0u8; 64];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little-endian
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&4u16.to_le_bytes()); // ET_CORE
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        out[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        let ph = |out: &mut Vec<u8>, t: u32, flags: u32, off: u64, vaddr: u64, len: u64| {
            for v in [t, flags] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [off, vaddr, 0, len, len, 4096] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        ph(&mut out, 4, 0, notes_off, 0, notes.len() as u64);
        let mut off = (notes_off + notes.len() as u64 + 0xfff) & !0xfff;
        let mut offs = Vec::new();
        for s in &self.segs {
            ph(&mut out, 1, s.flags, off, s.vaddr, s.bytes.len() as u64);
            offs.push(off);
            off = (off + s.bytes.len() as u64 + 0xfff) & !0xfff;
        }
        out.extend_from_slice(&notes);
        for (s, o) in self.segs.iter().zip(offs) {
            out.resize(o as usize, 0);
            out.extend_from_slice(&s.bytes);
        }
        out
    }
}

fn note(out: &mut Vec<u8>, ntype: u32, desc: &[u8]) {
    out.extend_from_slice(&5u32.to_le_bytes()); // "CORE\0"
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ntype.to_le_bytes());
    out.extend_from_slice(b"CORE\0\0\0\0");
    out.extend_from_slice(desc);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// The diagnostics that carry address `a`, for assertions.
pub fn at(d: &crate::error::Diagnostics, a: u64) -> Vec<String> {
    d.iter()
        .filter(|x| x.address == Some(Addr(a)))
        .map(|x| x.message.clone())
        .collect()
}
