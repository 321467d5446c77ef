//! A small synthetic x86_64 core, built byte by byte, for parser and CLI edge cases.

pub const PID: u32 = 4242;
pub const TID2: u32 = 4243;
pub const HEAP: u64 = 0x10_0000;
pub const STACK: u64 = 0x7ffd_0000_0000;
pub const LIB: u64 = 0x7f00_0000_0000;

fn note(out: &mut Vec<u8>, name: &[u8], ntype: u32, desc: &[u8]) {
    out.extend_from_slice(&((name.len() + 1) as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ntype.to_le_bytes());
    out.extend_from_slice(name);
    out.push(0);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out.extend_from_slice(desc);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn prstatus(tid: u32, sig: u16, fs_base: u64) -> Vec<u8> {
    let mut d = vec![0u8; 336];
    d[12..14].copy_from_slice(&sig.to_le_bytes());
    d[32..36].copy_from_slice(&tid.to_le_bytes());
    let reg = |d: &mut Vec<u8>, i: usize, v: u64| {
        d[112 + 8 * i..120 + 8 * i].copy_from_slice(&v.to_le_bytes())
    };
    reg(&mut d, 16, LIB + 0x1234); // rip
    reg(&mut d, 19, STACK + 0x100); // rsp
    reg(&mut d, 21, fs_base);
    d
}

pub struct Synth {
    pub bytes: Vec<u8>,
    /// File offset of each PT_LOAD's data, in program header order.
    pub load_offsets: Vec<u64>,
}

/// A core with two threads (the second took SIGSEGV), a heap segment, a stack segment whose
/// top holds argv/envp/auxv as the kernel lays them out, and one file mapping that the
/// core left out (filesz 0) for a library that does not exist on disk.
pub fn core() -> Synth {
    build(&Extra::default())
}

/// What to add to the basic synthetic core.
#[derive(Default)]
pub struct Extra<'a> {
    /// The library's NT_FILE path (default `/nonexistent/libdemo.so`).
    pub lib_path: Option<&'a [u8]>,
    /// This many more file mappings (NT_FILE entries over 100 paths), half of them also
    /// with a PT_LOAD segment left out of the core, as gcore and the kernel write them.
    pub mappings: usize,
}

/// A core with `n` more mappings: the shape of a process with many threads and arenas.
pub fn core_many(n: usize) -> Synth {
    build(&Extra {
        mappings: n,
        ..Default::default()
    })
}

/// The basic core with a hostile library path (terminal escapes).
pub fn core_with_path(path: &[u8]) -> Synth {
    build(&Extra {
        lib_path: Some(path),
        ..Default::default()
    })
}

fn build(extra: &Extra) -> Synth {
    // Stack: [argc][argv0][argv1][NULL][envp0][NULL][auxv...][strings]
    let stack_len = 0x2000u64;
    let mut stack = vec![0u8; stack_len as usize];
    let strings_at = 0x1800usize;
    let strs: &[&[u8]] = &[
        b"/usr/bin/demo\0",
        b"--flag\0",
        b"HOME=/root\0",
        b"/usr/bin/demo\0",
    ];
    let mut addrs = Vec::new();
    let mut p = strings_at;
    for s in strs {
        stack[p..p + s.len()].copy_from_slice(s);
        addrs.push(STACK + p as u64);
        p += s.len();
    }
    let auxv: Vec<(u64, u64)> = vec![(6, 4096), (9, LIB + 0x1000), (31, addrs[3]), (0, 0)];
    let mut words: Vec<u64> = vec![2, addrs[0], addrs[1], 0, addrs[2], 0];
    for (k, v) in &auxv {
        words.push(*k);
        words.push(*v);
    }
    let base = 0x1000usize;
    for (i, w) in words.iter().enumerate() {
        stack[base + 8 * i..base + 8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    let heap: Vec<u8> = (0..0x3000u32).map(|i| (i % 251) as u8).collect();

    let mut notes = Vec::new();
    note(
        &mut notes,
        b"CORE",
        1,
        &prstatus(TID2, 11, 0x7f00_dead_0000),
    );
    let mut ps = vec![0u8; 136];
    ps[24..28].copy_from_slice(&PID.to_le_bytes());
    ps[40..44].copy_from_slice(b"demo");
    ps[56..76].copy_from_slice(b"/usr/bin/demo --flag");
    note(&mut notes, b"CORE", 3, &ps);
    let mut si = vec![0u8; 128];
    si[0..4].copy_from_slice(&11u32.to_le_bytes());
    si[8..12].copy_from_slice(&1u32.to_le_bytes());
    si[16..24].copy_from_slice(&0xdeadu64.to_le_bytes());
    note(&mut notes, b"CORE", 0x5349_4749, &si);
    let mut av = Vec::new();
    for (k, v) in &auxv {
        av.extend_from_slice(&k.to_le_bytes());
        av.extend_from_slice(&v.to_le_bytes());
    }
    note(&mut notes, b"CORE", 6, &av);
    // Extra mappings: 16 KiB each, from 0x5000_0000_0000 up, a guard page apart.
    const EXTRA: u64 = 0x5000_0000_0000;
    let extra_at = |i: usize| EXTRA + 0x5000 * i as u64;
    let mut nf = Vec::new();
    nf.extend_from_slice(&(1 + extra.mappings as u64).to_le_bytes());
    nf.extend_from_slice(&4096u64.to_le_bytes());
    nf.extend_from_slice(&LIB.to_le_bytes());
    nf.extend_from_slice(&(LIB + 0x4000).to_le_bytes());
    nf.extend_from_slice(&0u64.to_le_bytes());
    for i in 0..extra.mappings {
        nf.extend_from_slice(&extra_at(i).to_le_bytes());
        nf.extend_from_slice(&(extra_at(i) + 0x4000).to_le_bytes());
        nf.extend_from_slice(&((i / 100) as u64 * 4).to_le_bytes());
    }
    nf.extend_from_slice(extra.lib_path.unwrap_or(b"/nonexistent/libdemo.so"));
    nf.push(0);
    for i in 0..extra.mappings {
        nf.extend_from_slice(format!("/nonexistent/lib{}.so\0", i % 100).as_bytes());
    }
    note(&mut notes, b"CORE", 0x4649_4c45, &nf);
    note(&mut notes, b"CORE", 1, &prstatus(PID, 11, 0x7f00_beef_0000));

    // Layout: ehdr (64) + phdrs (56 each) + notes + segments (page aligned).
    let extra_segs = extra.mappings.div_ceil(2);
    let phnum = 4u64 + extra_segs as u64;
    assert!(phnum < 0xffff, "PN_XNUM is not written here");
    let notes_off = 64 + 56 * phnum;
    let mut data_off = (notes_off + notes.len() as u64 + 0xfff) & !0xfff;
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
    let ph =
        |out: &mut Vec<u8>, t: u32, flags: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64| {
            for v in [t, flags] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [off, vaddr, 0, filesz, memsz, 4096] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
    ph(&mut out, 4, 0, notes_off, 0, notes.len() as u64, 0);
    let mut load_offsets = Vec::new();
    let segs: Vec<(u64, u32, &[u8], u64)> = vec![
        (HEAP, 6, &heap[..], 0x3000),
        (LIB, 5, &[][..], 0x4000), // file-backed, left out of the core
        (STACK, 6, &stack[..], stack_len),
    ];
    let mut segs = segs;
    for i in 0..extra_segs {
        segs.push((extra_at(2 * i), 5, &[][..], 0x4000));
    }
    let mut payload = Vec::new();
    for (vaddr, flags, bytes, memsz) in &segs {
        ph(
            &mut out,
            1,
            *flags,
            data_off,
            *vaddr,
            bytes.len() as u64,
            *memsz,
        );
        load_offsets.push(data_off);
        payload.push((data_off, *bytes));
        data_off += (bytes.len() as u64 + 0xfff) & !0xfff;
    }
    out.extend_from_slice(&notes);
    for (off, bytes) in payload {
        out.resize(off as usize, 0);
        out.extend_from_slice(bytes);
    }
    Synth {
        bytes: out,
        load_offsets,
    }
}
