//! A process image: the core, its address space with verified on-disk files, its modules.

use crate::addr::{Addr, Range};
use crate::error::{Diagnostic, Result};
use crate::image::core::perms_string;
use crate::image::core::CoreFile;
use crate::image::memory::AddressSpace;
use crate::image::modules::{Module, ModuleSet, SearchPaths};
use crate::progress::Progress;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options shared by every command.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub search: SearchPaths,
    pub heap_models: Option<PathBuf>,
}

pub struct Process {
    pub core: Arc<CoreFile>,
    pub space: AddressSpace,
    pub modules: ModuleSet,
    pub diagnostics: Vec<Diagnostic>,
    /// The NT_FILE mappings' ranges, sorted and coalesced: "is this file-backed?" by
    /// binary search, never by a scan of every mapping (cores have 100 k of them).
    file_ranges: Vec<Range>,
}

/// One mapping of the process, with how much of it the core or a verified file holds.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Mapping {
    pub start: Addr,
    pub end: Addr,
    pub perms: Option<String>,
    pub path: Option<String>,
    pub file_offset: Option<u64>,
    pub size: u64,
    pub in_core: u64,
    pub from_disk: u64,
    pub unavailable: u64,
}

/// Sorted, coalesced ranges.
fn coalesce(mut v: Vec<Range>) -> Vec<Range> {
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(l) if r.start <= l.end => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Does any of the sorted, disjoint `ranges` intersect `r`?
fn intersects_any(ranges: &[Range], r: Range) -> bool {
    let i = ranges.partition_point(|x| x.end <= r.start);
    ranges.get(i).is_some_and(|x| x.start < r.end)
}

impl Process {
    pub fn open(path: &Path, opts: &Options, progress: &dyn Progress) -> Result<Process> {
        let core = CoreFile::open(path, progress)?;
        let _phase = progress.phase("loading modules", None, crate::progress::Unit::Items);
        Ok(Self::from_core(core, opts))
    }

    pub fn from_core(core: CoreFile, opts: &Options) -> Process {
        let core = Arc::new(core);
        let mut diagnostics = core.diagnostics.clone();
        let mut space = AddressSpace::new(core.clone());
        let modules = ModuleSet::load(&mut space, &opts.search, &mut diagnostics);
        let file_ranges = coalesce(core.files.iter().map(|f| f.range).collect());
        Process {
            core,
            space,
            modules,
            diagnostics,
            file_ranges,
        }
    }

    /// A module's writable memory: its rw file mappings and the anonymous segment right
    /// after its last mapping (.bss beyond the file) — where C statics live (pymalloc's
    /// state, `_PyRuntime`, tracemalloc's tables).
    pub fn writable_ranges(&self, m: &Module) -> Vec<Range> {
        let mut out = Vec::new();
        for mp in &m.mappings {
            if let Some(s) = self
                .core
                .segments
                .iter()
                .find(|s| s.vaddr == mp.range.start)
            {
                if s.flags & 2 != 0 {
                    out.push(mp.range);
                }
            }
        }
        if let Some(end) = m.mappings.iter().map(|m| m.range.end).max() {
            if let Some(s) = self
                .core
                .segments
                .iter()
                .find(|s| s.vaddr == end && s.flags & 2 != 0)
            {
                out.push(s.range());
            }
        }
        out
    }

    /// Is any byte of `r` mapped from a file?
    pub fn file_backed(&self, r: Range) -> bool {
        intersects_any(&self.file_ranges, r)
    }

    /// Every mapping in address order: each PT_LOAD, plus the NT_FILE entries gcore wrote
    /// no segment for. O(n log n) in the number of mappings.
    pub fn mappings(&self) -> Vec<Mapping> {
        let space = &self.space;
        let core = &self.core;
        let mut out: Vec<Mapping> = Vec::with_capacity(core.segments.len());
        let mut add = |range: Range, perms: Option<String>, file: Option<(&str, u64)>| {
            let (c, d) = space.coverage(range);
            // A mapping without access rights (guard pages, reserved heap space) holds no
            // data: nothing of it is "missing".
            let no_access = perms.as_deref() == Some("---");
            out.push(Mapping {
                start: range.start,
                end: range.end,
                perms,
                path: file.map(|f| f.0.to_string()),
                file_offset: file.map(|f| f.1),
                size: range.len(),
                in_core: c,
                from_disk: d,
                unavailable: if no_access {
                    0
                } else {
                    range.len().saturating_sub(c + d)
                },
            });
        };
        let mut files: Vec<&crate::image::core::notes::FileMapping> = core.files.iter().collect();
        files.sort_by_key(|f| f.range.start);
        for s in &core.segments {
            let r = s.range();
            let i = files.partition_point(|f| f.range.start < r.start);
            let f = files.get(i).filter(|f| f.range.start == r.start);
            add(
                r,
                Some(perms_string(s.flags)),
                f.map(|f| (f.path.as_str(), f.file_offset)),
            );
        }
        let segs = coalesce(core.segments.iter().map(|s| s.range()).collect());
        for f in &files {
            if !intersects_any(&segs, f.range) {
                add(f.range, None, Some((f.path.as_str(), f.file_offset)));
            }
        }
        out.sort_by_key(|m| m.start);
        out
    }

    /// The main executable: the module mapping `AT_ENTRY` (or `AT_PHDR`).
    pub fn exe_module(&self) -> Option<&Module> {
        use crate::image::core::notes::{AT_ENTRY, AT_PHDR};
        [AT_ENTRY, AT_PHDR]
            .iter()
            .filter_map(|&k| self.core.auxv_value(k))
            .find_map(|a| self.modules.containing(Addr(a)))
    }

    /// Path of the executable, from the modules, else from the process info note.
    pub fn exe_path(&self) -> Option<String> {
        if let Some(m) = self.exe_module() {
            return Some(m.path.clone());
        }
        if let Some(a) = self.core.auxv_value(crate::image::core::notes::AT_EXECFN) {
            if let Some(s) = self.space.read_cstr(Addr(a), 4096) {
                return Some(String::from_utf8_lossy(&s).into_owned());
            }
        }
        self.core.prpsinfo.as_ref().map(|p| p.fname.clone())
    }

    /// The full command line, recovered from the initial process stack: the auxiliary
    /// vector the kernel wrote on the stack is found by its contents (known from NT_AUXV);
    /// below it lie envp[], a NULL, argv[] and argc (the System V ABI process stack).
    /// Falls back to the 80-character `pr_psargs`.
    pub fn cmdline(&self) -> Vec<String> {
        if let Some(v) = self.cmdline_from_stack() {
            return v;
        }
        self.core
            .prpsinfo
            .as_ref()
            .map(|p| p.psargs.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    }

    fn cmdline_from_stack(&self) -> Option<Vec<String>> {
        let execfn = Addr(self.core.auxv_value(crate::image::core::notes::AT_EXECFN)?);
        let auxv = &self.core.auxv;
        if auxv.len() < 2 {
            return None;
        }
        let mut pattern = Vec::with_capacity(32);
        for (k, v) in auxv.iter().take(2) {
            pattern.extend_from_slice(&k.to_le_bytes());
            pattern.extend_from_slice(&v.to_le_bytes());
        }
        // The stack mapping holding AT_EXECFN; search at most its top 1 MiB.
        let seg = self
            .core
            .segments
            .iter()
            .find(|s| s.range().contains(execfn))?;
        let end = seg.vaddr.wrapping_add(seg.memsz);
        let start = end.checked_sub(1 << 20).unwrap_or(seg.vaddr).max(seg.vaddr);
        let stack = self.space.slice(start, end.offset_from(start)?)?;
        let pos = memchr::memmem::rfind(stack, &pattern)?;
        if pos % 8 != 0 || pos < 16 {
            return None;
        }
        let word = |i: usize| -> Option<u64> {
            stack
                .get(i..i + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        };
        // Walk down: NULL ending envp, envp pointers, NULL ending argv, argv pointers, argc.
        let mut i = pos.checked_sub(8)?;
        if word(i)? != 0 {
            return None;
        }
        let mut guard = 0;
        loop {
            i = i.checked_sub(8)?;
            guard += 1;
            if word(i)? == 0 || guard > 100_000 {
                break;
            }
        }
        let mut argv = Vec::new();
        loop {
            i = i.checked_sub(8)?;
            let w = word(i)?;
            if w == argv.len() as u64 {
                break; // argc
            }
            argv.push(w);
            if argv.len() > 100_000 {
                return None;
            }
        }
        argv.reverse();
        let args: Option<Vec<String>> = argv
            .iter()
            .map(|&p| {
                self.space
                    .read_cstr(Addr(p), 1 << 17)
                    .map(|s| String::from_utf8_lossy(&s).into_owned())
            })
            .collect();
        args.filter(|a| !a.is_empty())
    }
}
