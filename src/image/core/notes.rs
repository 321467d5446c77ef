//! ELF core notes: the per-thread, per-process and mapping records the kernel and gdb write.
//!
//! Layouts (LP64): `struct elf_prstatus`, `struct elf_prpsinfo` from linux
//! include/uapi/linux/elfcore.h and include/linux/elfcore.h; `NT_FILE` format from
//! fs/binfmt_elf.c `fill_files_note`; note types from include/uapi/linux/elf.h.
//! Every field is read with bounds checks: notes come from an untrusted file.

use super::Arch;
use crate::addr::{Addr, Range};
use serde::Serialize;

pub const NT_PRSTATUS: u32 = 1;
pub const NT_FPREGSET: u32 = 2;
pub const NT_PRPSINFO: u32 = 3;
pub const NT_AUXV: u32 = 6;
pub const NT_SIGINFO: u32 = 0x5349_4749;
pub const NT_FILE: u32 = 0x4649_4c45;
pub const NT_ARM_TLS: u32 = 0x401;

pub const AT_NULL: u64 = 0;
pub const AT_PHDR: u64 = 3;
pub const AT_PAGESZ: u64 = 6;
pub const AT_BASE: u64 = 7;
pub const AT_ENTRY: u64 = 9;
pub const AT_EXECFN: u64 = 31;
pub const AT_SYSINFO_EHDR: u64 = 33;

/// One raw note: name without its NUL, type, descriptor bytes.
#[derive(Debug, Clone, Copy)]
pub struct RawNote<'a> {
    pub name: &'a [u8],
    pub ntype: u32,
    pub desc: &'a [u8],
}

/// Iterate notes of a PT_NOTE blob (4-byte aligned fields, as core files use).
/// Stops at the first malformed note and reports it through `bad`.
pub fn iter_notes<'a>(mut data: &'a [u8], bad: &mut Option<String>) -> Vec<RawNote<'a>> {
    let mut out = Vec::new();
    // A note is at least 12 bytes, so this also bounds the number of notes.
    while data.len() >= 12 {
        let namesz = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize;
        let descsz = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
        let ntype = u32::from_le_bytes(data[8..12].try_into().unwrap());
        let name_end = 12usize.checked_add(namesz);
        let desc_start = name_end.and_then(|e| e.checked_add(3)).map(|e| e & !3);
        let desc_end = desc_start.and_then(|s| s.checked_add(descsz));
        let next = desc_end.and_then(|e| e.checked_add(3)).map(|e| e & !3);
        match (name_end, desc_start, desc_end, next) {
            (Some(ne), Some(ds), Some(de), Some(nx)) if de <= data.len() => {
                let mut name = &data[12..ne];
                if let Some(p) = name.iter().position(|&b| b == 0) {
                    name = &name[..p];
                }
                out.push(RawNote {
                    name,
                    ntype,
                    desc: &data[ds..de],
                });
                data = &data[nx.min(data.len())..];
            }
            _ => {
                *bad = Some(format!(
                    "malformed note (type {ntype:#x}, name size {namesz}, descriptor size {descsz}) runs past the end of its segment"
                ));
                break;
            }
        }
    }
    out
}

#[inline]
pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?)
        .map(|s| u16::from_le_bytes(s.try_into().unwrap()))
}
#[inline]
pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off.checked_add(4)?)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
}
#[inline]
pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off.checked_add(8)?)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
}

/// A C string inside a fixed-size field.
fn cstr_field(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A thread of the process, from its NT_PRSTATUS (and NT_ARM_TLS on aarch64).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Thread {
    pub tid: u32,
    /// `pr_cursig`: the signal the thread was handling when the core was written.
    pub signal: u32,
    pub pc: Addr,
    pub sp: Addr,
    /// Thread pointer: x86_64 `fs_base`, aarch64 `TPIDR_EL0`. Reaches TLS (glibc's tcache slot).
    pub thread_pointer: Option<Addr>,
    #[serde(skip)]
    pub regs: Vec<u64>,
}

/// `elf_prstatus`: pr_cursig at 12, pr_pid at 32, pr_reg at 112 (LP64, both arches).
const PRSTATUS_CURSIG: usize = 12;
const PRSTATUS_PID: usize = 32;
const PRSTATUS_REG: usize = 112;

pub fn parse_prstatus(arch: Arch, desc: &[u8]) -> Option<Thread> {
    let signal = u16_at(desc, PRSTATUS_CURSIG)? as u32;
    let tid = u32_at(desc, PRSTATUS_PID)?;
    let nregs = arch.prstatus_nregs();
    let mut regs = Vec::with_capacity(nregs);
    for i in 0..nregs {
        regs.push(u64_at(desc, PRSTATUS_REG + 8 * i)?);
    }
    let (pc, sp, tp) = match arch {
        // user_regs_struct (arch/x86/include/asm/user_64.h): rip 16, rsp 19, fs_base 21.
        Arch::X86_64 => (regs[16], regs[19], Some(regs[21])),
        // user_pt_regs (arch/arm64/include/uapi/asm/ptrace.h): x0..x30, sp 31, pc 32, pstate 33.
        Arch::Aarch64 => (regs[32], regs[31], None),
    };
    Some(Thread {
        tid,
        signal,
        pc: Addr(pc),
        sp: Addr(sp),
        thread_pointer: tp.filter(|&v| v != 0).map(Addr),
        regs,
    })
}

/// `elf_prpsinfo` (LP64): pr_pid at 24, pr_fname[16] at 40, pr_psargs[80] at 56.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PrPsInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub fname: String,
    pub psargs: String,
}

pub fn parse_prpsinfo(desc: &[u8]) -> Option<PrPsInfo> {
    Some(PrPsInfo {
        uid: u32_at(desc, 16)?,
        gid: u32_at(desc, 20)?,
        pid: u32_at(desc, 24)?,
        ppid: u32_at(desc, 28)?,
        fname: cstr_field(desc.get(40..56)?),
        psargs: cstr_field(desc.get(56..136)?),
    })
}

/// `siginfo_t` as NT_SIGINFO stores it: signo, errno, code, then (for faults) si_addr at 16.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SigInfo {
    pub signo: u32,
    pub errno: i32,
    pub code: i32,
    /// The faulting address for SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGTRAP.
    pub fault_addr: Option<Addr>,
}

pub fn parse_siginfo(desc: &[u8]) -> Option<SigInfo> {
    let signo = u32_at(desc, 0)?;
    let errno = u32_at(desc, 4)? as i32;
    let code = u32_at(desc, 8)? as i32;
    let fault_addr = match signo {
        4 | 5 | 7 | 8 | 11 => u64_at(desc, 16).map(Addr),
        _ => None,
    };
    Some(SigInfo {
        signo,
        errno,
        code,
        fault_addr,
    })
}

pub fn parse_auxv(desc: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for pair in desc.chunks_exact(16) {
        let k = u64::from_le_bytes(pair[0..8].try_into().unwrap());
        let v = u64::from_le_bytes(pair[8..16].try_into().unwrap());
        if k == AT_NULL {
            break;
        }
        out.push((k, v));
    }
    out
}

/// One file-backed mapping from NT_FILE.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FileMapping {
    pub range: Range,
    /// Offset in the file, in bytes.
    pub file_offset: u64,
    pub path: String,
}

/// NT_FILE: count, page size, `count` × (start, end, page offset), then `count` NUL-terminated
/// paths. Returns the mappings and the page size the note is expressed in.
pub fn parse_nt_file(desc: &[u8]) -> Result<(Vec<FileMapping>, u64), String> {
    let count = u64_at(desc, 0).ok_or("NT_FILE note too short")?;
    let page_size = u64_at(desc, 8).ok_or("NT_FILE note too short")?;
    // Each entry needs 24 bytes plus at least one byte of name: bounds the count.
    if count > (desc.len() as u64) / 25 {
        return Err(format!(
            "NT_FILE note claims {count} mappings but has room for at most {}",
            desc.len() / 25
        ));
    }
    if page_size == 0 || !page_size.is_power_of_two() || page_size > (1 << 30) {
        return Err(format!(
            "NT_FILE note has an impossible page size {page_size}"
        ));
    }
    let count = count as usize;
    let names_start = 16 + 24 * count;
    if names_start > desc.len() {
        return Err(format!(
            "NT_FILE note claims {count} mappings but is only {} bytes long",
            desc.len()
        ));
    }
    let mut names = desc[names_start..].split(|&b| b == 0);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = 16 + 24 * i;
        let start = u64_at(desc, e).unwrap();
        let end = u64_at(desc, e + 8).unwrap();
        let pgoff = u64_at(desc, e + 16).unwrap();
        let name = names
            .next()
            .ok_or("NT_FILE note has fewer names than entries")?;
        if end < start {
            return Err(format!(
                "NT_FILE entry {i} ends before it starts ({start:#x}..{end:#x})"
            ));
        }
        out.push(FileMapping {
            range: Range::new(Addr(start), Addr(end)),
            file_offset: pgoff.saturating_mul(page_size),
            path: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Ok((out, page_size))
}

/// Signal names for display (Linux x86_64/aarch64 numbering).
pub fn signal_name(sig: u32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        16 => "SIGSTKFLT",
        17 => "SIGCHLD",
        18 => "SIGCONT",
        19 => "SIGSTOP",
        20 => "SIGTSTP",
        21 => "SIGTTIN",
        22 => "SIGTTOU",
        23 => "SIGURG",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        26 => "SIGVTALRM",
        27 => "SIGPROF",
        28 => "SIGWINCH",
        29 => "SIGIO",
        30 => "SIGPWR",
        31 => "SIGSYS",
        _ => "SIG?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], ntype: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((name.len() + 1) as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&ntype.to_le_bytes());
        v.extend_from_slice(name);
        v.push(0);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v.extend_from_slice(desc);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn notes_iterate_and_stop_on_garbage() {
        let mut blob = note(b"CORE", NT_AUXV, &[1, 2, 3]);
        blob.extend(note(b"LINUX", 0x202, &[0; 8]));
        blob.extend_from_slice(&[0xff; 12]);
        let mut bad = None;
        let notes = iter_notes(&blob, &mut bad);
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].name, b"CORE");
        assert_eq!(notes[0].desc, &[1, 2, 3]);
        assert_eq!(notes[1].name, b"LINUX");
        assert!(bad.is_some());
    }

    #[test]
    fn nt_file_rejects_absurd_count() {
        let mut d = Vec::new();
        d.extend_from_slice(&u64::MAX.to_le_bytes());
        d.extend_from_slice(&4096u64.to_le_bytes());
        assert!(parse_nt_file(&d).is_err());
    }

    #[test]
    fn nt_file_shorter_than_its_entries() {
        // count 1 passes the names bound (30 / 25) but the entry itself does not fit.
        let mut d = Vec::new();
        d.extend_from_slice(&1u64.to_le_bytes());
        d.extend_from_slice(&4096u64.to_le_bytes());
        d.extend_from_slice(&[0u8; 14]);
        assert!(parse_nt_file(&d).is_err());
    }

    #[test]
    fn nt_file_parses() {
        let mut d = Vec::new();
        d.extend_from_slice(&2u64.to_le_bytes());
        d.extend_from_slice(&4096u64.to_le_bytes());
        for (s, e, o) in [(0x1000u64, 0x3000u64, 0u64), (0x3000, 0x4000, 2)] {
            d.extend_from_slice(&s.to_le_bytes());
            d.extend_from_slice(&e.to_le_bytes());
            d.extend_from_slice(&o.to_le_bytes());
        }
        d.extend_from_slice(b"/bin/a\0/bin/a\0");
        let (m, ps) = parse_nt_file(&d).unwrap();
        assert_eq!(ps, 4096);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].file_offset, 0x2000);
        assert_eq!(m[1].path, "/bin/a");
    }
}
