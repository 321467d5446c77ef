//! Native stacks of the core's threads: CFI unwinding with framehop over each module's
//! `.eh_frame` / `.eh_frame_hdr` / `.debug_frame` (from the verified file on disk and the
//! debug file found by build-id), a frame-pointer fallback, symbols from `.symtab` /
//! `.dynsym`, and file:line through addr2line when DWARF is at hand.
//!
//! Every walk is bounded: at most [`MAX_NATIVE_FRAMES`] frames, the stack pointer must
//! grow and stay inside the mapping it started in (the thread's stack); a step that
//! fails ends that thread's walk with a reason, never the command.

use crate::addr::Addr;
use crate::image::core::notes::Thread;
use crate::image::core::Arch;
use crate::image::modules::Module;
use crate::image::process::Process;
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Unwinder};
use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use serde::Serialize;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

pub const MAX_NATIVE_FRAMES: usize = 512;

#[derive(Debug, Clone, Serialize)]
pub struct NativeFrame {
    pub pc: Addr,
    pub module: Option<String>,
    pub symbol: Option<String>,
    pub offset: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NativeStack {
    /// Innermost first.
    pub frames: Vec<NativeFrame>,
    /// Why the walk ended before the outermost frame, if it did.
    pub truncated: Option<String>,
}

/// A byte range of a mapped file, as framehop's section data.
#[derive(Clone)]
struct Bytes(Arc<Mmap>, std::ops::Range<usize>);

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0[self.1.clone()]
    }
}

type R = gimli::EndianArcSlice<gimli::LittleEndian>;

struct ModSyms {
    /// (start, size, name), sorted by start; link-time addresses.
    funcs: Vec<(u64, u64, String)>,
    dwarf: Option<addr2line::Context<R>>,
}

pub struct Native<'a> {
    p: &'a Process,
    unwinder: UnwinderX86_64<Bytes>,
    syms: Vec<OnceLock<ModSyms>>,
}

fn section(
    map: &Arc<Mmap>,
    obj: &object::File,
    name: &str,
) -> Option<(std::ops::Range<u64>, Bytes)> {
    let s = obj.section_by_name(name)?;
    let (off, size) = s.file_range()?;
    let end = off.checked_add(size)?;
    if end > map.len() as u64 {
        return None;
    }
    Some((
        s.address()..s.address() + s.size(),
        Bytes(map.clone(), off as usize..end as usize),
    ))
}

/// SHF_COMPRESSED (0x800).
fn is_compressed(s: &object::Section) -> bool {
    matches!(s.flags(), object::SectionFlags::Elf { sh_flags, .. } if sh_flags.0 & 0x800 != 0)
}

/// Section contents, decompressed when SHF_COMPRESSED (ELF gABI Elf64_Chdr: ch_type u32,
/// reserved u32, ch_size u64, ch_addralign u64; 1 = zlib, 2 = zstd).
fn section_data(obj: &object::File, name: &str) -> Option<Vec<u8>> {
    let s = obj.section_by_name(name)?;
    let raw = s.data().ok()?;
    if !is_compressed(&s) {
        return Some(raw.to_vec());
    }
    if raw.len() < 24 {
        return None;
    }
    let ty = u32::from_le_bytes(raw[0..4].try_into().ok()?);
    let size = u64::from_le_bytes(raw[8..16].try_into().ok()?);
    if size > 1 << 32 {
        return None;
    }
    let body = &raw[24..];
    let mut out = Vec::with_capacity(size as usize);
    match ty {
        1 => {
            use std::io::Read;
            flate2::read::ZlibDecoder::new(body)
                .take(size)
                .read_to_end(&mut out)
                .ok()?;
        }
        2 => {
            out = zstd::bulk::decompress(body, size as usize).ok()?;
        }
        _ => return None,
    }
    Some(out)
}

fn load_dwarf(obj: &object::File) -> Option<addr2line::Context<R>> {
    obj.section_by_name(".debug_info")?;
    let load = |id: gimli::SectionId| -> Result<R, gimli::Error> {
        let data = section_data(obj, id.name()).unwrap_or_default();
        Ok(R::new(
            Arc::from(data.into_boxed_slice()),
            gimli::LittleEndian,
        ))
    };
    let dwarf = gimli::Dwarf::load(load).ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}

impl<'a> Native<'a> {
    pub fn new(p: &'a Process) -> Native<'a> {
        let mut unwinder = UnwinderX86_64::new();
        for m in &p.modules.modules {
            let (Some(bias), Some(file)) = (m.bias, m.file.as_ref()) else {
                continue;
            };
            let Ok(obj) = object::File::parse(&**file.map) else {
                continue;
            };
            let map = &file.map;
            let mut info = ExplicitModuleSectionInfo::<Bytes> {
                base_svma: 0,
                text_svma: None,
                text: None,
                stubs_svma: None,
                stub_helper_svma: None,
                got_svma: None,
                unwind_info: None,
                eh_frame_svma: None,
                eh_frame: None,
                eh_frame_hdr_svma: None,
                eh_frame_hdr: None,
                debug_frame: None,
                text_segment_svma: None,
                text_segment: None,
            };
            if let Some((r, d)) = section(map, &obj, ".text") {
                info.text_svma = Some(r);
                info.text = Some(d);
            }
            if let Some((r, d)) = section(map, &obj, ".eh_frame") {
                info.eh_frame_svma = Some(r);
                info.eh_frame = Some(d);
            }
            if let Some((r, d)) = section(map, &obj, ".eh_frame_hdr") {
                info.eh_frame_hdr_svma = Some(r);
                info.eh_frame_hdr = Some(d);
            }
            if let Some(s) = obj.section_by_name(".got") {
                info.got_svma = Some(s.address()..s.address() + s.size());
            }
            // .debug_frame: in the file itself, else in the debug file (uncompressed only).
            for f in std::iter::once(file).chain(m.debug_file.iter()) {
                if info.debug_frame.is_some() {
                    break;
                }
                if let Ok(o) = object::File::parse(&**f.map) {
                    if let Some(s) = o.section_by_name(".debug_frame") {
                        if !is_compressed(&s) {
                            if let Some((_, d)) = section(&f.map, &o, ".debug_frame") {
                                info.debug_frame = Some(d);
                            }
                        }
                    }
                }
            }
            let r = m.range();
            unwinder.add_module(framehop::Module::new(
                m.path.clone(),
                r.start.0..r.end.0,
                bias,
                info,
            ));
        }
        let syms = p.modules.modules.iter().map(|_| OnceLock::new()).collect();
        Native { p, unwinder, syms }
    }

    fn module_index(&self, pc: Addr) -> Option<usize> {
        self.p
            .modules
            .modules
            .iter()
            .position(|m| m.mappings.iter().any(|mp| mp.range.contains(pc)))
    }

    fn mod_syms(&self, i: usize) -> &ModSyms {
        self.syms[i].get_or_init(|| {
            let m: &Module = &self.p.modules.modules[i];
            let mut funcs = Vec::new();
            let mut dwarf = None;
            for f in m.debug_file.iter().chain(m.file.iter()) {
                let Ok(obj) = object::File::parse(&**f.map) else {
                    continue;
                };
                for s in obj.symbols().chain(obj.dynamic_symbols()) {
                    if s.kind() == SymbolKind::Text && s.address() != 0 && !s.is_undefined() {
                        if let Ok(n) = s.name() {
                            // "clock_nanosleep@GLIBC_2.2.5": the version is not the name.
                            let n = n.split('@').next().unwrap_or(n);
                            funcs.push((s.address(), s.size(), !s.is_global(), n.to_string()));
                        }
                    }
                }
                if dwarf.is_none() {
                    dwarf = load_dwarf(&obj);
                }
            }
            // One name per address: the exported one (abort, not glibc's internal alias
            // __GI_abort), then the one with a size.
            funcs.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)).then(b.1.cmp(&a.1)));
            funcs.dedup_by_key(|x| x.0);
            let funcs = funcs.into_iter().map(|(a, z, _, n)| (a, z, n)).collect();
            ModSyms { funcs, dwarf }
        })
    }

    /// Module, symbol+offset and file:line of `pc`; `lookup` is the address looked up
    /// (pc - 1 for return addresses, so a call at the end of a function is its own).
    pub fn symbolize(&self, pc: Addr, lookup: u64) -> NativeFrame {
        let mut f = NativeFrame {
            pc,
            module: None,
            symbol: None,
            offset: None,
            file: None,
            line: None,
        };
        let Some(i) = self.module_index(pc) else {
            return f;
        };
        let m = &self.p.modules.modules[i];
        f.module = Some(m.name().to_string());
        let Some(bias) = m.bias else { return f };
        let svma = lookup.wrapping_sub(bias);
        let s = self.mod_syms(i);
        let k = s.funcs.partition_point(|x| x.0 <= svma);
        if k > 0 {
            let (start, size, name) = &s.funcs[k - 1];
            if *size == 0 || svma < start + size {
                f.symbol = Some(name.clone());
                f.offset = Some(pc.0.wrapping_sub(bias).wrapping_sub(*start));
            }
        }
        if let Some(ctx) = &s.dwarf {
            if let Ok(Some(loc)) = ctx.find_location(svma) {
                f.file = loc.file.map(String::from);
                f.line = loc.line;
            }
            if f.symbol.is_none() {
                if let Ok(mut frames) = ctx.find_frames(svma).skip_all_loads() {
                    if let Ok(Some(fr)) = frames.next() {
                        if let Some(func) = fr.function {
                            f.symbol = func.raw_name().ok().map(|c| c.to_string());
                        }
                    }
                }
            }
        }
        f
    }

    /// The thread's native frames, innermost first.
    pub fn unwind(&self, t: &Thread) -> NativeStack {
        let mut frames = Vec::new();
        if self.p.core.arch != Arch::X86_64 {
            return NativeStack {
                frames: vec![self.symbolize(t.pc, t.pc.0)],
                truncated: Some("native unwinding is implemented for x86_64 only".into()),
            };
        }
        // user_regs_struct (arch/x86/include/asm/user_64.h): rbp 4, rip 16, rsp 19.
        let (rip, rsp, rbp) = (t.regs[16], t.regs[19], t.regs[4]);
        let stack = self
            .p
            .core
            .segments
            .iter()
            .find(|s| s.range().contains(Addr(rsp)))
            .map(|s| s.range());
        let Some(stack) = stack else {
            return NativeStack {
                frames: vec![self.symbolize(t.pc, t.pc.0)],
                truncated: Some(format!(
                    "the stack pointer {rsp:#x} is outside every mapping of the core"
                )),
            };
        };
        let space = &self.p.space;
        let in_stack =
            |a: u64| a >= stack.start.0 && a.checked_add(8).is_some_and(|e| e <= stack.end.0);
        let mut read = |a: u64| -> Result<u64, ()> {
            if !in_stack(a) {
                return Err(());
            }
            space.read_u64(Addr(a)).map_err(|_| ())
        };
        let mut regs = UnwindRegsX86_64::new(rip, rsp, rbp);
        let mut cache = CacheX86_64::<_>::new();
        let mut addr = FrameAddress::from_instruction_pointer(rip);
        frames.push(self.symbolize(Addr(rip), rip));
        let mut truncated = None;
        loop {
            if frames.len() >= MAX_NATIVE_FRAMES {
                truncated = Some(format!("more than {MAX_NATIVE_FRAMES} native frames"));
                break;
            }
            let sp_before = regs.sp();
            let next = match self
                .unwinder
                .unwind_frame(addr, &mut regs, &mut cache, &mut read)
            {
                Ok(n) => n,
                Err(e) => {
                    // Frame-pointer fallback: [rbp] = caller's rbp, [rbp+8] = return address.
                    let bp = regs.bp();
                    match (read(bp), read(bp.wrapping_add(8))) {
                        (Ok(nbp), Ok(ret))
                            if bp >= sp_before
                                && ret != 0
                                && self.module_index(Addr(ret)).is_some() =>
                        {
                            regs.set_bp(nbp);
                            regs.set_sp(bp + 16);
                            Some(ret)
                        }
                        _ => {
                            truncated =
                                Some(format!("unwinding stopped at {:#x}: {e}", addr.address()));
                            break;
                        }
                    }
                }
            };
            let Some(ret) = next else { break };
            if ret == 0 {
                break;
            }
            if regs.sp() < sp_before || !in_stack(regs.sp()) && regs.sp() != stack.end.0 {
                truncated = Some(format!(
                    "the stack pointer left the thread's stack at {:#x}",
                    regs.sp()
                ));
                break;
            }
            let Some(a) = FrameAddress::from_return_address(ret) else {
                break;
            };
            addr = a;
            frames.push(self.symbolize(Addr(ret), ret - 1));
        }
        NativeStack { frames, truncated }
    }
}

/// Offsets of symbols in the modules, by name (tests and the crash frame's checks).
pub fn function_names(frames: &[NativeFrame]) -> Vec<&str> {
    frames.iter().filter_map(|f| f.symbol.as_deref()).collect()
}
