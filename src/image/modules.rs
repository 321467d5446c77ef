//! The ELF modules the process had mapped: executable, shared libraries, the vDSO.
//!
//! For each module we read its headers and GNU build-id from the core's own copy of its
//! first page (the kernel dumps ELF header pages with the default coredump_filter), then
//! look for the file on disk (`--sysroot DIR` first, then the recorded path) and use it
//! only when its build-id is the same. Symbols come from `.dynsym`/`.symtab` of the disk
//! file and of a separate debug file found by build-id, or, when no file is usable, from the
//! dynamic symbol table in the process image itself (`mapped`: the image's ELF structures,
//! read with `object`). Everything is built lazily.

use crate::addr::{Addr, Range};
use crate::error::Diagnostic;
use crate::image::core::notes::FileMapping;
use crate::image::mapped::{ImageHeaders, MemDynsym};
use crate::image::memory::AddressSpace;
use memmap2::Mmap;
use object::{Object, ObjectSymbol};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Where to look for files the core refers to.
#[derive(Debug, Clone, Default)]
pub struct SearchPaths {
    pub sysroot: Option<PathBuf>,
    pub debug_dirs: Vec<PathBuf>,
    /// Do not look in /usr/lib/debug (nor under the sysroot's): only `debug_dirs`.
    /// For checking that the symbol-free heuristics find what the symbols say.
    pub skip_system_debug: bool,
    /// Use no file at all: only the bytes in the core (tests of the symbol-free, file-free
    /// paths; a core analysed where none of its binaries exist).
    pub core_only: bool,
}

/// How the on-disk file of a module relates to the core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum FileStatus {
    /// Found, and its build-id equals the core's: its bytes fill what the core left out.
    Verified,
    /// Everything this module maps is in the core; no file needed.
    NotNeeded,
    /// Found, but it is another build.
    Mismatch { disk_build_id: Option<String> },
    /// Not found at any candidate path.
    Missing,
    /// The core has no copy of the module's headers, so the file cannot be verified.
    Unverifiable,
}

#[derive(Debug, Clone, Copy)]
pub struct Sym {
    /// Address in the process (load bias applied).
    pub addr: Addr,
    pub size: u64,
}

pub struct DiskFile {
    pub path: PathBuf,
    pub map: Arc<Mmap>,
    pub build_id: Option<Vec<u8>>,
}

pub struct Module {
    /// Path as recorded in the core (NT_FILE), without a " (deleted)" suffix.
    pub path: String,
    pub deleted: bool,
    pub mappings: Vec<FileMapping>,
    /// Lowest mapped address.
    pub base: Addr,
    /// Load bias: add to a link-time address to get the runtime address.
    pub bias: Option<u64>,
    pub build_id: Option<Vec<u8>>,
    pub is_elf: bool,
    pub file: Option<DiskFile>,
    pub status: FileStatus,
    /// Path of a candidate that was rejected (for the hint), when there is one.
    pub rejected_path: Option<PathBuf>,
    pub debug_file: Option<DiskFile>,
    /// Dynamic section facts read from the image, for symbol lookup without files.
    dynamic: Option<MemDynsym>,
    symbols: OnceLock<HashMap<String, Sym>>,
    /// The same symbols in address order (runtime address, size, name), for naming an
    /// address: a static variable, a vtable.
    by_addr: OnceLock<Vec<(u64, u64, String)>>,
}

impl Module {
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id.as_deref().map(hex)
    }

    pub fn range(&self) -> Range {
        let end = self
            .mappings
            .iter()
            .map(|m| m.range.end)
            .max()
            .unwrap_or(self.base);
        Range::new(self.base, end)
    }

    pub fn has_symtab(&self) -> bool {
        self.file
            .as_ref()
            .is_some_and(|f| has_section(&f.map, ".symtab"))
            || self.debug_file.is_some()
    }

    fn symbol_table(&self) -> &HashMap<String, Sym> {
        self.symbols.get_or_init(|| {
            let mut map = HashMap::new();
            let Some(bias) = self.bias else { return map };
            // Debug file first: its .symtab has the local symbols (main_arena, mp_, ...).
            for f in self.debug_file.iter().chain(self.file.iter()) {
                if let Ok(obj) = object::File::parse(&**f.map) {
                    // A .symtab lists each source file's STT_FILE symbol before that file's
                    // local symbols (ELF gABI, "Symbol Table"): locals are also keyed
                    // "file.c:name", for statics several files name alike (CPython 3.8-3.9
                    // `free_list`/`numfree` in floatobject.c, listobject.c, dictobject.c...).
                    let mut file: Option<String> = None;
                    for s in obj.symbols().chain(obj.dynamic_symbols()) {
                        if s.kind() == object::SymbolKind::File {
                            file = s.name().ok().map(str::to_string);
                            continue;
                        }
                        if s.is_undefined() || s.address() == 0 {
                            continue;
                        }
                        if let Ok(name) = s.name() {
                            let sym = Sym {
                                addr: Addr(s.address().wrapping_add(bias)),
                                size: s.size(),
                            };
                            if s.is_local() {
                                if let Some(f) = &file {
                                    map.entry(format!("{f}:{name}")).or_insert(sym);
                                }
                            }
                            map.entry(name.to_string()).or_insert(sym);
                        }
                    }
                }
            }
            map
        })
    }

    /// The symbol whose extent holds `addr` (a zero-sized symbol only at its own address),
    /// and the offset of `addr` in it: from the debug file's and the disk file's
    /// `.symtab`/`.dynsym` (a stripped file without a debug file names nothing).
    pub fn symbol_at(&self, addr: Addr) -> Option<(&str, u64)> {
        let v = self.by_addr.get_or_init(|| {
            let mut v: Vec<(u64, u64, String)> = self
                .symbol_table()
                .iter()
                .filter(|(n, _)| !n.contains(':'))
                .map(|(n, s)| (s.addr.0, s.size, n.clone()))
                .collect();
            // Largest first at one address, so the lookup takes the enclosing object.
            v.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
            v
        });
        let i = v.partition_point(|s| s.0 <= addr.0);
        // The nearest symbols at or below `addr`: a few may start at the same address.
        for s in v[..i].iter().rev().take(8) {
            let off = addr.0 - s.0;
            if off < s.1.max(1) {
                return Some((&s.2, off));
            }
        }
        None
    }

    /// The section (of the disk file, else the debug file) holding `addr`, and the offset
    /// in it: `.bss`, `.data`, `.data.rel.ro`...
    pub fn section_at(&self, addr: Addr) -> Option<(String, u64)> {
        use object::ObjectSection;
        let link = addr.0.checked_sub(self.bias?)?;
        for f in self.file.iter().chain(self.debug_file.iter()) {
            let Ok(obj) = object::File::parse(&**f.map) else {
                continue;
            };
            for s in obj.sections() {
                if s.address() != 0 && link >= s.address() && link - s.address() < s.size() {
                    return Some((s.name().ok()?.to_string(), link - s.address()));
                }
            }
        }
        None
    }

    /// Look a symbol up by name: debug file, disk file (.symtab, .dynsym), then the
    /// dynamic symbol table of the process image.
    pub fn symbol(&self, space: &AddressSpace, name: &str) -> Option<Sym> {
        if let Some(s) = self.symbol_table().get(name) {
            return Some(*s);
        }
        let bias = self.bias?;
        self.dynamic.as_ref()?.lookup(space, bias, name)
    }
}

/// The warning for a file on disk that is another build than the module the core maps;
/// either side may have no build-id at all (then it says so, in words).
fn mismatch_message(
    module: &str,
    disk_path: &str,
    disk_id: Option<&str>,
    core_id: Option<&str>,
    what: &str,
) -> String {
    let disk = match disk_id {
        Some(id) => format!("the file has build-id {id}"),
        None => "the file has no build-id".to_string(),
    };
    let core = match core_id {
        Some(id) => format!("the core's has {id}"),
        None => "the core records none for it".to_string(),
    };
    format!("{module}: the file on disk ({disk_path}) is another build ({disk}, {core}); {what} of this module are unavailable")
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn has_section(data: &[u8], name: &str) -> bool {
    object::File::parse(data)
        .ok()
        .and_then(|o| o.section_by_name(name).map(|_| ()))
        .is_some()
}

pub struct ModuleSet {
    pub modules: Vec<Module>,
}

impl ModuleSet {
    /// Build the module list from the core's NT_FILE note, verify files on disk, and attach
    /// the verified ones to `space`. Diagnostics go to `diags`.
    pub fn load(
        space: &mut AddressSpace,
        search: &SearchPaths,
        diags: &mut Vec<Diagnostic>,
    ) -> ModuleSet {
        // Group mappings by path, in address order.
        let mut by_path: Vec<(String, Vec<FileMapping>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut files = space.core().files.clone();
        files.sort_by_key(|f| f.range.start);
        for f in files {
            let i = *index.entry(f.path.clone()).or_insert_with(|| {
                by_path.push((f.path.clone(), Vec::new()));
                by_path.len() - 1
            });
            by_path[i].1.push(f);
        }
        let page = space.core().page_size;
        let mut modules = Vec::new();
        for (raw_path, mappings) in by_path {
            let (path, deleted) = match raw_path.strip_suffix(" (deleted)") {
                Some(p) => (p.to_string(), true),
                None => (raw_path.clone(), false),
            };
            // Only mappings that start at file offset 0 can hold an ELF header.
            let head = mappings.iter().find(|m| m.file_offset == 0);
            let image = head.and_then(|m| ImageHeaders::read(space, m.range.start.0));
            let disk_kind = disk_is_elf(&path, search);
            let is_elf = image.is_some() || disk_kind == Some(true);
            if !is_elf {
                // Data files (locale archives, caches, fonts) are not modules. Keep only
                // what cannot be told apart: no header in the core and no file on disk.
                let header_in_core = head.is_some_and(|m| space.is_available(m.range.start));
                if header_in_core
                    || disk_kind.is_some()
                    || head.is_none()
                    || !looks_like_binary(&path)
                {
                    continue;
                }
            }
            let base = mappings[0].range.start;
            let mut m = Module {
                path,
                deleted,
                mappings,
                base,
                bias: None,
                build_id: None,
                is_elf,
                file: None,
                status: FileStatus::Missing,
                rejected_path: None,
                debug_file: None,
                dynamic: None,
                symbols: OnceLock::new(),
                by_addr: OnceLock::new(),
            };
            if let Some(img) = &image {
                m.bias = img.bias(&m.mappings, page);
                m.build_id = img.build_id(space, m.bias);
                m.dynamic = m.bias.and_then(|b| MemDynsym::read(space, img, b));
            }
            locate_file(&mut m, space, search);
            if m.bias.is_none() {
                // Headers only on disk (the core lacks them): take the program headers from
                // the verified file. (Unverified files are never trusted for anything.)
                if let Some(f) = &m.file {
                    if let Some(img) = ImageHeaders::parse_file(&f.map) {
                        m.bias = img.bias(&m.mappings, page);
                    }
                }
            }
            if let Some(id) = &m.build_id {
                m.debug_file = find_debug_file(id, search);
            }
            if let Some(f) = &m.file {
                for mp in &m.mappings {
                    space.attach_file(f.map.clone(), mp.range, mp.file_offset);
                }
            }
            modules.push(m);
        }
        // Now that files are attached, report what is still missing.
        for m in &mut modules {
            let missing: u64 = m
                .mappings
                .iter()
                .map(|mp| {
                    let (c, d) = space.coverage(mp.range);
                    mp.range.len() - c - d
                })
                .sum();
            if m.status == FileStatus::Missing && missing == 0 {
                m.status = FileStatus::NotNeeded;
            }
            if missing == 0 {
                continue;
            }
            let what = crate::units::human_bytes(missing);
            match &m.status {
                FileStatus::Mismatch { disk_build_id } => {
                    let p = m.rejected_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                    diags.push(
                        Diagnostic::warning(mismatch_message(
                            &m.path,
                            &p,
                            disk_build_id.as_deref(),
                            m.build_id_hex().as_deref(),
                            &what,
                        ))
                        .hint("pass --sysroot DIR with the binaries the process ran (e.g. a copy of its container image)"),
                    );
                }
                FileStatus::Missing => diags.push(
                    Diagnostic::warning(format!(
                        "{}: not found on disk; {what} of this module are unavailable",
                        m.path
                    ))
                    .hint("pass --sysroot DIR with the binaries the process ran"),
                ),
                FileStatus::Unverifiable => diags.push(
                    Diagnostic::warning(format!(
                        "{}: the core holds no copy of this file's headers, so the file on disk cannot be checked and is not used; {what} unavailable",
                        m.path
                    ))
                    .hint("dump with coredump_filter bit 4 (ELF headers) set, e.g. 0x33 or 0x37"),
                ),
                _ => {}
            }
        }
        ModuleSet { modules }
    }

    /// The module containing `addr`.
    pub fn containing(&self, addr: Addr) -> Option<&Module> {
        self.modules
            .iter()
            .find(|m| m.mappings.iter().any(|mp| mp.range.contains(addr)))
    }

    /// First module defining `name`, searching in the given order of preference.
    pub fn find_symbol(&self, space: &AddressSpace, name: &str) -> Option<(&Module, Sym)> {
        self.modules
            .iter()
            .find_map(|m| m.symbol(space, name).map(|s| (m, s)))
    }
}

/// Candidate disk paths for a module, in order: under the sysroot, then as recorded.
fn candidates(path: &str, search: &SearchPaths) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(root) = &search.sysroot {
        v.push(root.join(path.trim_start_matches('/')));
    }
    v.push(PathBuf::from(path));
    v
}

fn map_file(p: &Path) -> Option<Arc<Mmap>> {
    let f = File::open(p).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    // SAFETY: read-only map of a binary; nothing we know of writes it concurrently.
    unsafe { Mmap::map(&f) }.ok().map(Arc::new)
}

/// For a mapping whose kind cannot be checked (no header in the core, no file on disk):
/// shared objects and programs are worth reporting as missing modules; data files
/// (locale archives, caches) are not.
fn looks_like_binary(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so")
        || name.contains(".so.")
        || path.contains("/bin/")
        || path.contains("/sbin/")
}

/// Whether the first candidate file on disk is an ELF file (`None`: no file found).
fn disk_is_elf(path: &str, search: &SearchPaths) -> Option<bool> {
    candidates(path, search).iter().find_map(|p| {
        let mut f = File::open(p).ok()?;
        let mut b = [0u8; 4];
        Some(std::io::Read::read_exact(&mut f, &mut b).is_ok() && &b == b"\x7fELF")
    })
}

fn file_build_id(map: &[u8]) -> Option<Vec<u8>> {
    object::File::parse(map)
        .ok()?
        .build_id()
        .ok()
        .flatten()
        .map(|b| b.to_vec())
}

fn locate_file(m: &mut Module, space: &AddressSpace, search: &SearchPaths) {
    if search.core_only {
        return;
    }
    let mut first_mismatch = None;
    for cand in candidates(&m.path, search) {
        let Some(map) = map_file(&cand) else { continue };
        if map.len() < 4 || &map[..4] != b"\x7fELF" {
            continue;
        }
        let disk_id = file_build_id(&map);
        match (&m.build_id, &disk_id) {
            (Some(core_id), Some(d)) if core_id == d => {
                m.file = Some(DiskFile {
                    path: cand,
                    map,
                    build_id: disk_id,
                });
                m.status = FileStatus::Verified;
                return;
            }
            (Some(_), _) => {
                if first_mismatch.is_none() {
                    first_mismatch = Some((cand, disk_id));
                }
            }
            (None, _) => {
                // Without the core's build-id nothing can be verified.
                let head_in_core = m
                    .mappings
                    .iter()
                    .find(|mp| mp.file_offset == 0)
                    .is_some_and(|mp| space.is_available(mp.range.start));
                m.status = if head_in_core {
                    // Headers are there but carry no build-id: compare the first page instead.
                    let first = m.mappings.iter().find(|mp| mp.file_offset == 0).unwrap();
                    let n = (first.range.len()).min(4096).min(map.len() as u64);
                    match space.slice(first.range.start, n) {
                        Some(core_page) if core_page == &map[..n as usize] => {
                            m.file = Some(DiskFile {
                                path: cand,
                                map,
                                build_id: None,
                            });
                            FileStatus::Verified
                        }
                        _ => FileStatus::Mismatch {
                            disk_build_id: None,
                        },
                    }
                } else {
                    FileStatus::Unverifiable
                };
                return;
            }
        }
    }
    if let Some((p, id)) = first_mismatch {
        m.rejected_path = Some(p);
        m.status = FileStatus::Mismatch {
            disk_build_id: id.as_deref().map(hex),
        };
    }
}

fn find_debug_file(build_id: &[u8], search: &SearchPaths) -> Option<DiskFile> {
    if build_id.len() < 2 || search.core_only {
        return None;
    }
    let h = hex(build_id);
    let rel = format!("{}/{}.debug", &h[..2], &h[2..]);
    let mut dirs: Vec<PathBuf> = Vec::new();
    for d in &search.debug_dirs {
        dirs.push(d.join(".build-id"));
        dirs.push(d.clone());
    }
    if !search.skip_system_debug {
        if let Some(root) = &search.sysroot {
            dirs.push(root.join("usr/lib/debug/.build-id"));
        }
        dirs.push(PathBuf::from("/usr/lib/debug/.build-id"));
    }
    for d in dirs {
        let p = d.join(&rel);
        if let Some(map) = map_file(&p) {
            if file_build_id(&map).as_deref() == Some(build_id) {
                return Some(DiskFile {
                    path: p,
                    map,
                    build_id: Some(build_id.to_vec()),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod mismatch_tests {
    use super::mismatch_message;

    /// A module without a build-id gets a sentence, not "build-id none ... ?" (was garbled).
    #[test]
    fn a_missing_build_id_is_said_in_words() {
        let m = mismatch_message(
            "/usr/lib/libx.so",
            "/srv/root/usr/lib/libx.so",
            None,
            Some("ab12"),
            "1.00 MiB",
        );
        assert_eq!(m, "/usr/lib/libx.so: the file on disk (/srv/root/usr/lib/libx.so) is another build (the file has no build-id, the core's has ab12); 1.00 MiB of this module are unavailable");
        let m = mismatch_message("/l.so", "/d/l.so", Some("cd34"), None, "4.00 KiB");
        assert!(m.contains("the file has build-id cd34, the core records none for it"));
        assert!(!m.contains('?') && !m.contains("none in the file"));
    }
}
