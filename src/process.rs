//! A process image: the core, its address space with verified on-disk files, its modules.

use crate::addr::Addr;
use crate::core::CoreFile;
use crate::error::{Diagnostic, Result};
use crate::memory::AddressSpace;
use crate::modules::{Module, ModuleSet, SearchPaths};
use crate::progress::Progress;
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
}

impl Process {
    pub fn open(path: &Path, opts: &Options, progress: &dyn Progress) -> Result<Process> {
        let core = CoreFile::open(path, progress)?;
        Ok(Self::from_core(core, opts))
    }

    pub fn from_core(core: CoreFile, opts: &Options) -> Process {
        let core = Arc::new(core);
        let mut diagnostics = core.diagnostics.clone();
        let mut space = AddressSpace::new(core.clone());
        let modules = ModuleSet::load(&mut space, &opts.search, &mut diagnostics);
        Process {
            core,
            space,
            modules,
            diagnostics,
        }
    }

    /// The main executable: the module mapping `AT_ENTRY` (or `AT_PHDR`).
    pub fn exe_module(&self) -> Option<&Module> {
        use crate::core::notes::{AT_ENTRY, AT_PHDR};
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
        if let Some(a) = self.core.auxv_value(crate::core::notes::AT_EXECFN) {
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
        let execfn = Addr(self.core.auxv_value(crate::core::notes::AT_EXECFN)?);
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
