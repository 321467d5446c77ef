//! The ELF structures of a module as the process mapped them, read with `object`'s
//! low-level ELF types (`object::read::elf`) over bytes of the process image: the file and
//! program headers (the kernel dumps the first page of every ELF mapping when
//! coredump_filter bit 4 is set, the default), the GNU build-id note, the dynamic section,
//! and the GNU hash table with the dynamic symbols for symbol lookup when no file is at hand.
//!
//! These bytes come from a core, so none of them is trusted: every count is bounded before
//! anything is read or allocated, a read of bytes the image does not hold ends the parse
//! with `None`, and no chain is followed further than the table it belongs to.

use crate::addr::Addr;
use crate::image::core::notes::FileMapping;
use crate::image::memory::AddressSpace;
use crate::image::modules::Sym;
use object::elf::{
    FileHeader64, GnuHashHeader, ProgramHeader64, SectionFlags, SectionHeader64, SectionType,
    Sym64, DT_GNU_HASH, DT_NULL, DT_STRSZ, DT_STRTAB, DT_SYMTAB, ELFCLASS64, ELFDATA2LSB, ELFMAG,
    NT_GNU_BUILD_ID, PT_DYNAMIC, PT_LOAD, PT_NOTE, SHN_UNDEF, SHT_DYNSYM, SHT_NULL, SHT_STRTAB,
};
use object::read::elf::{
    Dyn as _, GnuHashTable, NoteIterator, ProgramHeader as _, SectionTable, Sym as _, SymbolTable,
    VersionTable,
};
use object::read::{SectionIndex, StringTable};
use object::{pod, LittleEndian as LE, U32, U64};
use std::mem::size_of;
use std::sync::OnceLock;

type Elf = FileHeader64<LE>;

/// More program headers than any linker writes (binutils and lld emit a dozen or two).
const MAX_PHNUM: usize = 512;
/// Note segments larger than this are not build-id notes worth reading.
const MAX_NOTE_BYTES: u64 = 1 << 16;
/// Dynamic entries read before giving up on finding DT_NULL.
const MAX_DYN: u64 = 512;
/// Bounds on a GNU hash table read from the image. The largest real libraries export a
/// few hundred thousand symbols; these leave an order of magnitude of room while keeping
/// a garbage header from asking for more than some tens of MiB.
const MAX_BUCKETS: u32 = 1 << 21;
const MAX_BLOOM_WORDS: u32 = 1 << 18;
const MAX_SYMS: u64 = 1 << 21;
const MAX_STRTAB: u64 = 1 << 26;

/// Bytes of the process image by address: the address space, a file's bytes (offset as
/// address), or a byte vector in tests.
pub(crate) trait ImageMemory {
    /// At most `max` bytes at `addr`, up to the first byte that is not available.
    fn prefix(&self, addr: u64, max: usize) -> Vec<u8>;

    /// Exactly `len` bytes at `addr`, or `None`.
    fn exact(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let b = self.prefix(addr, len);
        (b.len() == len).then_some(b)
    }

    fn u32(&self, addr: u64) -> Option<u32> {
        let b = self.exact(addr, 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }
}

impl ImageMemory for AddressSpace {
    fn prefix(&self, addr: u64, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut a = Addr(addr);
        while out.len() < max {
            let Some(s) = self.contiguous(a, (max - out.len()) as u64) else {
                break;
            };
            out.extend_from_slice(s);
            match a.checked_add(s.len() as u64) {
                Some(next) => a = next,
                None => break,
            }
        }
        out
    }

    fn u32(&self, addr: u64) -> Option<u32> {
        self.read_u32(Addr(addr)).ok()
    }
}

impl ImageMemory for [u8] {
    fn prefix(&self, addr: u64, max: usize) -> Vec<u8> {
        let Ok(start) = usize::try_from(addr) else {
            return Vec::new();
        };
        let end = start.saturating_add(max).min(self.len());
        self.get(start..end).map(<[u8]>::to_vec).unwrap_or_default()
    }
}

/// The program headers of an ELF image.
pub(crate) struct ImageHeaders {
    phdrs: Vec<ProgramHeader64<LE>>,
}

impl ImageHeaders {
    /// The headers of the 64-bit little-endian ELF image whose first byte is at `base`
    /// (System V gABI, "ELF Header" and "Program Header"). `None` for anything else, and
    /// for a program header count no linker writes (0, PN_XNUM, or more than `MAX_PHNUM`).
    pub(crate) fn read(mem: &(impl ImageMemory + ?Sized), base: u64) -> Option<ImageHeaders> {
        let eh = mem.exact(base, size_of::<Elf>())?;
        let (eh, _) = pod::from_bytes::<Elf>(&eh).ok()?;
        let id = &eh.e_ident;
        if id.magic != ELFMAG || id.class != ELFCLASS64 || id.data != ELFDATA2LSB {
            return None;
        }
        let phentsize = eh.e_phentsize.get(LE) as usize;
        let phnum = eh.e_phnum.get(LE) as usize;
        if phentsize != size_of::<ProgramHeader64<LE>>() || phnum == 0 || phnum > MAX_PHNUM {
            return None;
        }
        let at = base.checked_add(eh.e_phoff.get(LE))?;
        let ph = mem.exact(at, phnum * phentsize)?;
        let (phdrs, _) = pod::slice_from_bytes::<ProgramHeader64<LE>>(&ph, phnum).ok()?;
        Some(ImageHeaders {
            phdrs: phdrs.to_vec(),
        })
    }

    /// The headers of an ELF file's bytes.
    pub(crate) fn parse_file(map: &[u8]) -> Option<ImageHeaders> {
        Self::read(map, 0)
    }

    /// Load bias from the mapping whose file offset matches a PT_LOAD's page.
    pub(crate) fn bias(&self, mappings: &[FileMapping], page: u64) -> Option<u64> {
        for mp in mappings {
            for p in &self.phdrs {
                if p.p_type(LE) == PT_LOAD && (p.p_offset(LE) & !(page - 1)) == mp.file_offset {
                    return Some(mp.range.start.0.wrapping_sub(p.p_vaddr(LE) & !(page - 1)));
                }
            }
        }
        None
    }

    /// The GNU build-id (an `NT_GNU_BUILD_ID` note named "GNU", binutils
    /// `ld --build-id`) from the PT_NOTE segments as mapped at `bias`.
    pub(crate) fn build_id(&self, mem: &impl ImageMemory, bias: Option<u64>) -> Option<Vec<u8>> {
        let bias = bias?;
        for p in &self.phdrs {
            let filesz = p.p_filesz(LE);
            if p.p_type(LE) != PT_NOTE || filesz > MAX_NOTE_BYTES {
                continue;
            }
            let Some(buf) = mem.exact(p.p_vaddr(LE).wrapping_add(bias), filesz as usize) else {
                continue;
            };
            // Notes are 4-aligned except in segments that say 8 (.note.gnu.property);
            // any other alignment is read as 4, like binutils does.
            let align = if p.p_align(LE) == 8 { 8 } else { 4 };
            let Ok(mut notes) = NoteIterator::<Elf>::new(LE, align, &buf) else {
                continue;
            };
            while let Ok(Some(n)) = notes.next() {
                if n.name() == b"GNU" && n.n_type(LE) == NT_GNU_BUILD_ID && !n.desc().is_empty() {
                    return Some(n.desc().to_vec());
                }
            }
        }
        None
    }
}

/// The dynamic symbol table as mapped in the process (DT_SYMTAB, DT_STRTAB, DT_STRSZ,
/// DT_GNU_HASH), for symbol lookup when no file is at hand (self-contained cores analysed
/// elsewhere, the vDSO).
pub(crate) struct MemDynsym {
    symtab: u64,
    strtab: u64,
    /// 0 when the dynamic section gives no DT_STRSZ.
    strsz: u64,
    gnu_hash: Option<u64>,
    /// The hash table, symbols and strings copied out of the image at the first lookup.
    tables: OnceLock<Option<DynTables>>,
}

impl MemDynsym {
    /// The dynamic section of the image whose headers are `img`, mapped at `bias`.
    pub(crate) fn read(mem: &impl ImageMemory, img: &ImageHeaders, bias: u64) -> Option<MemDynsym> {
        let p = img.phdrs.iter().find(|p| p.p_type(LE) == PT_DYNAMIC)?;
        let dynamic = p.p_vaddr(LE).wrapping_add(bias);
        let count = (p.p_memsz(LE) / 16).min(MAX_DYN) as usize;
        let size = size_of::<object::elf::Dyn64<LE>>();
        // What is available of the section: the entries after DT_NULL need not be.
        let bytes = mem.prefix(dynamic, count * size);
        let entries = pod::slice_from_bytes::<object::elf::Dyn64<LE>>(&bytes, bytes.len() / size)
            .ok()?
            .0;
        let (mut symtab, mut strtab, mut strsz, mut gnu_hash) = (None, None, 0, None);
        for i in 0..count {
            // An entry the image lacks before DT_NULL: the section cannot be read.
            let d = entries.get(i)?;
            let val = d.d_val(LE);
            match d.d_tag(LE) {
                DT_NULL => break,
                DT_STRTAB => strtab = Some(val),
                DT_SYMTAB => symtab = Some(val),
                DT_STRSZ => strsz = val,
                DT_GNU_HASH => gnu_hash = Some(val),
                _ => {}
            }
        }
        // ld.so relocates these entries in place for most objects (glibc elf/get-dynamic-info.h);
        // the vDSO and some read-only dynamic sections keep link-time values. Relocate when
        // below the bias.
        let fix = |v: u64| if v < bias { v.wrapping_add(bias) } else { v };
        Some(MemDynsym {
            symtab: fix(symtab?),
            strtab: fix(strtab?),
            strsz,
            gnu_hash: gnu_hash.map(fix),
            tables: OnceLock::new(),
        })
    }

    /// Look `name` up through the GNU hash table (glibc elf/dl-lookup.c, do_lookup_x);
    /// the symbol's address with `bias` applied. `None` when absent or undefined here.
    pub(crate) fn lookup(&self, mem: &impl ImageMemory, bias: u64, name: &str) -> Option<Sym> {
        let t = self
            .tables
            .get_or_init(|| DynTables::read(mem, self))
            .as_ref()?;
        let sections = SectionTable::<Elf, &[u8]>::new(&t.sections, StringTable::default());
        let symbols =
            SymbolTable::parse(LE, &t.data[..], &sections, SectionIndex(1), &t.sections[1]).ok()?;
        let hash = GnuHashTable::<Elf>::parse(LE, &t.hash).ok()?;
        let name = name.as_bytes();
        let versions = VersionTable::default();
        let (_, sym) = hash.find(
            LE,
            name,
            object::elf::gnu_hash(name),
            None,
            &symbols,
            &versions,
        )?;
        if sym.st_shndx(LE) == SHN_UNDEF {
            return None;
        }
        Some(Sym {
            addr: Addr(sym.st_value(LE).wrapping_add(bias)),
            size: sym.st_size(LE),
        })
    }
}

/// The dynamic symbol tables of one module, copied out of the image. The image gives no
/// sizes for them, so the hash table tells how many symbols there are, and the symbols and
/// strings are described by section headers of their own (`object`'s symbol tables are
/// made from sections).
struct DynTables {
    /// The GNU hash table: header, bloom filter, buckets, and the chain values up to the
    /// end of the last chain.
    hash: Vec<u8>,
    /// The dynamic symbols, then the dynamic strings.
    data: Vec<u8>,
    /// Null, .dynsym and .dynstr over `data`.
    sections: [SectionHeader64<LE>; 3],
}

impl DynTables {
    fn read(mem: &impl ImageMemory, d: &MemDynsym) -> Option<DynTables> {
        let gh = d.gnu_hash?;
        // DT_GNU_HASH layout (binutils bfd/elflink.c, glibc elf/dl-setup_hash.c): nbuckets,
        // symoffset, bloom_size, bloom_shift; bloom_size 8-byte words on ELF64; nbuckets
        // 32-bit bucket heads (lowest symbol index of each chain); then one 32-bit value
        // per hashed symbol from symoffset on, the low bit set on the last of each chain.
        let head = mem.exact(gh, size_of::<GnuHashHeader<LE>>())?;
        let (h, _) = pod::from_bytes::<GnuHashHeader<LE>>(&head).ok()?;
        let nbuckets = h.bucket_count.get(LE);
        let symoffset = h.symbol_base.get(LE) as u64;
        let bloom = h.bloom_count.get(LE);
        if nbuckets == 0 || nbuckets > MAX_BUCKETS || bloom > MAX_BLOOM_WORDS {
            return None;
        }
        let buckets_at = head.len() + 8 * bloom as usize;
        let fixed = buckets_at + 4 * nbuckets as usize;
        let mut hash = mem.exact(gh, fixed)?;
        let (buckets, _) =
            pod::slice_from_bytes::<U32<LE>>(&hash[buckets_at..], nbuckets as usize).ok()?;
        // Chains are laid out in bucket order, so the one that starts at the highest
        // bucket head is the last; its end is the end of the table.
        let last = buckets.iter().map(|b| b.get(LE) as u64).max()?;
        let mut nvalues = last.checked_sub(symoffset)?;
        if nvalues >= MAX_SYMS {
            return None;
        }
        let values_at = gh.wrapping_add(fixed as u64);
        while nvalues < MAX_SYMS {
            let Some(v) = mem.u32(values_at.wrapping_add(4 * nvalues)) else {
                break;
            };
            nvalues += 1;
            if v & 1 == 1 {
                break;
            }
        }
        hash.extend(mem.prefix(values_at, 4 * nvalues as usize));
        let nsyms = (symoffset + nvalues).min(MAX_SYMS);
        let sym_size = size_of::<Sym64<LE>>();
        let mut data = mem.prefix(d.symtab, nsyms as usize * sym_size);
        data.truncate(data.len() / sym_size * sym_size);
        let syms_len = data.len() as u64;
        let strsz = if d.strsz == 0 {
            MAX_STRTAB
        } else {
            d.strsz.min(MAX_STRTAB)
        };
        data.extend(mem.prefix(d.strtab, strsz as usize));
        let strs_len = data.len() as u64 - syms_len;
        Some(DynTables {
            hash,
            data,
            sections: [
                section(SHT_NULL, 0, 0, 0, 0),
                section(SHT_DYNSYM, 0, syms_len, 2, sym_size as u64),
                section(SHT_STRTAB, syms_len, strs_len, 0, 0),
            ],
        })
    }
}

/// A section header describing `size` bytes at `offset` of `DynTables::data`.
fn section(
    sh_type: SectionType,
    offset: u64,
    size: u64,
    link: u32,
    entsize: u64,
) -> SectionHeader64<LE> {
    SectionHeader64 {
        sh_name: U32::new(LE, 0),
        sh_type: U32::new(LE, sh_type),
        sh_flags: U64::new(LE, SectionFlags(0)),
        sh_addr: U64::new(LE, 0),
        sh_offset: U64::new(LE, offset),
        sh_size: U64::new(LE, size),
        sh_link: U32::new(LE, link),
        sh_info: U32::new(LE, 0),
        sh_addralign: U64::new(LE, 0),
        sh_entsize: U64::new(LE, entsize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Range;
    use object::elf::gnu_hash;

    const BASE: u64 = 0x7f00_1234_0000;
    const DYNAMIC: usize = 0x200;
    const NOTE: usize = 0x300;
    const HASH: usize = 0x400;
    const SYMTAB: usize = 0x800;
    const STRTAB: usize = 0xc00;
    const LEN: usize = 0x1000;

    /// A synthetic image at `BASE` with holes the core does not hold.
    struct Image {
        bytes: Vec<u8>,
        holes: Vec<(usize, usize)>,
    }

    impl ImageMemory for Image {
        fn prefix(&self, addr: u64, max: usize) -> Vec<u8> {
            let Some(start) = addr.checked_sub(BASE).map(|o| o as usize) else {
                return Vec::new();
            };
            let mut end = start.saturating_add(max).min(self.bytes.len());
            for &(a, b) in &self.holes {
                if start >= a && start < b {
                    return Vec::new();
                }
                if a > start {
                    end = end.min(a);
                }
            }
            self.bytes
                .get(start..end)
                .map(<[u8]>::to_vec)
                .unwrap_or_default()
        }
    }

    fn put(b: &mut [u8], at: usize, v: &[u8]) {
        b[at..at + v.len()].copy_from_slice(v);
    }
    fn put16(b: &mut [u8], at: usize, v: u16) {
        put(b, at, &v.to_le_bytes())
    }
    fn put32(b: &mut [u8], at: usize, v: u32) {
        put(b, at, &v.to_le_bytes())
    }
    fn put64(b: &mut [u8], at: usize, v: u64) {
        put(b, at, &v.to_le_bytes())
    }

    /// (name, value, section index) of each dynamic symbol, hashed into `nbuckets` buckets
    /// as binutils lays a DT_GNU_HASH table out: symbols sorted by bucket, one chain each.
    fn image(syms: &[(&str, u64, u16)], nbuckets: u32) -> Image {
        let mut b = vec![0u8; LEN];
        // ELF header: 64-bit, little-endian, ET_DYN, three program headers at 64.
        put(&mut b, 0, &ELFMAG);
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        put16(&mut b, 16, 3);
        put16(&mut b, 18, 62);
        put64(&mut b, 0x20, 64);
        put16(&mut b, 0x34, 64);
        put16(&mut b, 0x36, 56);
        put16(&mut b, 0x38, 3);
        let phdr = |b: &mut Vec<u8>, i: usize, t: u32, vaddr: usize, size: usize, align: u64| {
            let at = 64 + 56 * i;
            put32(b, at, t);
            put64(b, at + 8, vaddr as u64);
            put64(b, at + 16, vaddr as u64);
            put64(b, at + 32, size as u64);
            put64(b, at + 40, size as u64);
            put64(b, at + 48, align);
        };
        phdr(&mut b, 0, PT_LOAD.0, 0, LEN, 0x1000);
        phdr(&mut b, 1, PT_DYNAMIC.0, DYNAMIC, 6 * 16, 8);
        // Build-id note: namesz 4 "GNU\0", descsz 20, type 3.
        put32(&mut b, NOTE, 4);
        put32(&mut b, NOTE + 4, 20);
        put32(&mut b, NOTE + 8, 3);
        put(&mut b, NOTE + 12, b"GNU\0");
        put(&mut b, NOTE + 16, &[0xab; 20]);
        phdr(&mut b, 2, PT_NOTE.0, NOTE, 36, 4);

        // Strings and symbols, sorted by bucket; symbol 0 is the null symbol.
        let mut sorted: Vec<_> = syms.to_vec();
        sorted.sort_by_key(|s| gnu_hash(s.0.as_bytes()) % nbuckets);
        let mut strtab = vec![0u8];
        for (i, (name, value, shndx)) in sorted.iter().enumerate() {
            let at = SYMTAB + 24 * (i + 1);
            put32(&mut b, at, strtab.len() as u32);
            b[at + 4] = 0x11; // STB_GLOBAL, STT_OBJECT
            put16(&mut b, at + 6, *shndx);
            put64(&mut b, at + 8, *value);
            put64(&mut b, at + 16, 8);
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
        }
        put(&mut b, STRTAB, &strtab);

        // GNU hash: symoffset 1, one bloom word with every bit set.
        put32(&mut b, HASH, nbuckets);
        put32(&mut b, HASH + 4, 1);
        put32(&mut b, HASH + 8, 1);
        put32(&mut b, HASH + 12, 6);
        put64(&mut b, HASH + 16, u64::MAX);
        let buckets = HASH + 24;
        let values = buckets + 4 * nbuckets as usize;
        for (i, (name, _, _)) in sorted.iter().enumerate() {
            let h = gnu_hash(name.as_bytes());
            let bucket = h % nbuckets;
            let at = buckets + 4 * bucket as usize;
            if u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) == 0 {
                put32(&mut b, at, i as u32 + 1);
            }
            let last = sorted
                .get(i + 1)
                .is_none_or(|n| gnu_hash(n.0.as_bytes()) % nbuckets != bucket);
            put32(&mut b, values + 4 * i, if last { h | 1 } else { h & !1 });
        }

        // Dynamic section, with link-time addresses (as the vDSO keeps them).
        let entries = [
            (DT_GNU_HASH.0 as u64, HASH),
            (DT_SYMTAB.0 as u64, SYMTAB),
            (DT_STRTAB.0 as u64, STRTAB),
            (DT_STRSZ.0 as u64, strtab.len()),
            (0, 0),
        ];
        for (i, (tag, val)) in entries.iter().enumerate() {
            put64(&mut b, DYNAMIC + 16 * i, *tag);
            put64(&mut b, DYNAMIC + 16 * i + 8, *val as u64);
        }
        Image {
            bytes: b,
            holes: Vec::new(),
        }
    }

    const SYMS: &[(&str, u64, u16)] = &[
        ("main_arena", 0x10, 5),
        ("mp_", 0x20, 5),
        ("_PyRuntime", 0x30, 5),
        ("PyLong_Type", 0x40, 5),
        ("malloc", 0, 0), // undefined here
    ];

    fn mapping() -> FileMapping {
        FileMapping {
            range: Range::new(Addr(BASE), Addr(BASE + LEN as u64)),
            file_offset: 0,
            path: "/lib/libdemo.so".into(),
        }
    }

    fn dynsym(img: &Image) -> Option<MemDynsym> {
        let h = ImageHeaders::read(img, BASE)?;
        MemDynsym::read(img, &h, BASE)
    }

    fn lookup(img: &Image, name: &str) -> Option<u64> {
        dynsym(img)?
            .lookup(img, BASE, name)
            .map(|s| s.addr.0 - BASE)
    }

    #[test]
    fn headers_bias_and_build_id() {
        let img = image(SYMS, 3);
        let h = ImageHeaders::read(&img, BASE).unwrap();
        assert_eq!(h.phdrs.len(), 3);
        let bias = h.bias(&[mapping()], 0x1000);
        assert_eq!(bias, Some(BASE));
        assert_eq!(h.build_id(&img, bias), Some(vec![0xab; 20]));
        // The same bytes as a file.
        assert_eq!(ImageHeaders::parse_file(&img.bytes).unwrap().phdrs.len(), 3);
    }

    #[test]
    fn garbage_program_header_counts() {
        for (phnum, phentsize) in [(0u16, 56u16), (513, 56), (0xffff, 56), (3, 32), (3, 0)] {
            let mut img = image(SYMS, 3);
            put16(&mut img.bytes, 0x38, phnum);
            put16(&mut img.bytes, 0x36, phentsize);
            assert!(
                ImageHeaders::read(&img, BASE).is_none(),
                "{phnum} × {phentsize}"
            );
        }
        // Program headers past the end of the address space, or not in the image.
        let mut img = image(SYMS, 3);
        put64(&mut img.bytes, 0x20, u64::MAX - 8);
        assert!(ImageHeaders::read(&img, BASE).is_none());
        let mut img = image(SYMS, 3);
        img.holes.push((64, 128));
        assert!(ImageHeaders::read(&img, BASE).is_none());
        // Not ELF, 32-bit, big-endian.
        for (at, v) in [(0, 0u8), (4, 1), (5, 2)] {
            let mut img = image(SYMS, 3);
            img.bytes[at] = v;
            assert!(ImageHeaders::read(&img, BASE).is_none());
        }
    }

    #[test]
    fn missing_or_unreadable_dynamic_section() {
        let mut img = image(SYMS, 3);
        put32(&mut img.bytes, 64 + 56, 0); // PT_DYNAMIC → PT_NULL
        assert!(dynsym(&img).is_none());
        let mut img = image(SYMS, 3);
        img.holes.push((DYNAMIC + 16, DYNAMIC + 32));
        assert!(dynsym(&img).is_none());
        // Entries after DT_NULL need not be there.
        let mut img = image(SYMS, 3);
        img.holes.push((DYNAMIC + 5 * 16, DYNAMIC + 6 * 16));
        assert!(dynsym(&img).is_some());
        // A dynamic segment pointing anywhere.
        let mut img = image(SYMS, 3);
        put64(&mut img.bytes, 64 + 56 + 16, 0x7fff_ffff_0000);
        assert!(dynsym(&img).is_none());
        // No DT_SYMTAB.
        let mut img = image(SYMS, 3);
        put64(&mut img.bytes, DYNAMIC + 16, 0x6fff_ff00);
        assert!(dynsym(&img).is_none());
    }

    #[test]
    fn gnu_hash_hits_and_misses() {
        for nbuckets in [1, 2, 3, 17] {
            let img = image(SYMS, nbuckets);
            assert_eq!(lookup(&img, "main_arena"), Some(0x10), "{nbuckets} buckets");
            assert_eq!(lookup(&img, "mp_"), Some(0x20));
            assert_eq!(lookup(&img, "_PyRuntime"), Some(0x30));
            assert_eq!(lookup(&img, "PyLong_Type"), Some(0x40));
            assert_eq!(lookup(&img, "malloc"), None, "undefined");
            assert_eq!(lookup(&img, "free"), None);
            assert_eq!(lookup(&img, "main_aren"), None);
            assert_eq!(lookup(&img, ""), None);
        }
        let img = image(SYMS, 3);
        let s = dynsym(&img).unwrap().lookup(&img, BASE, "mp_").unwrap();
        assert_eq!(s.size, 8);
    }

    #[test]
    fn gnu_hash_without_dt_hash_or_strings() {
        // No DT_GNU_HASH: nothing can be looked up.
        let mut img = image(SYMS, 3);
        put64(&mut img.bytes, DYNAMIC, 0x6fff_ff00);
        assert_eq!(lookup(&img, "mp_"), None);
        // DT_STRSZ shorter than the names: they are not read past it.
        let mut img = image(SYMS, 3);
        put64(&mut img.bytes, DYNAMIC + 3 * 16 + 8, 1);
        assert_eq!(lookup(&img, "mp_"), None);
        // Strings not in the image.
        let mut img = image(SYMS, 3);
        img.holes.push((STRTAB, LEN));
        assert_eq!(lookup(&img, "mp_"), None);
    }

    #[test]
    fn gnu_hash_chain_without_end_is_bounded() {
        // Every value even: no chain ends, so the table runs to the end of the image.
        let mut img = image(SYMS, 1);
        let values = HASH + 24 + 4;
        for i in 0..SYMS.len() {
            let at = values + 4 * i;
            let v = u32::from_le_bytes(img.bytes[at..at + 4].try_into().unwrap());
            put32(&mut img.bytes, at, v & !1);
        }
        assert_eq!(lookup(&img, "free"), None);
        assert_eq!(lookup(&img, "mp_"), Some(0x20));
        // Followed by more zeros than any table has: the scan stops at MAX_SYMS.
        img.bytes.resize(LEN + 4 * MAX_SYMS as usize, 0);
        assert_eq!(lookup(&img, "free"), None);
        assert_eq!(lookup(&img, "mp_"), Some(0x20));
        // GNU hash chains run forward through consecutive symbols, so they cannot loop
        // back; what garbage can do is point a bucket past the table, or at symbol 0.
        let mut img = image(SYMS, 1);
        put32(&mut img.bytes, HASH + 24, 0xffff_fff0);
        assert_eq!(lookup(&img, "mp_"), None);
        let mut img = image(SYMS, 1);
        put32(&mut img.bytes, HASH + 24, 0);
        assert_eq!(lookup(&img, "mp_"), None);
    }

    #[test]
    fn gnu_hash_absurd_counts() {
        for (at, v) in [
            (0, 0u32),
            (0, u32::MAX),
            (0, MAX_BUCKETS + 1),
            (8, u32::MAX),
            (8, MAX_BLOOM_WORDS + 1),
            (4, u32::MAX),
        ] {
            let mut img = image(SYMS, 3);
            put32(&mut img.bytes, HASH + at, v);
            assert_eq!(lookup(&img, "mp_"), None, "field {at} = {v:#x}");
        }
        // Buckets running past the image.
        let mut img = image(SYMS, 3);
        put32(&mut img.bytes, HASH, 0x1_0000);
        assert_eq!(lookup(&img, "mp_"), None);
    }
}
