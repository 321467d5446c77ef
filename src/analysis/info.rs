//! `coreheap info`: what the core is, as plain data.

use crate::addr::Addr;
use crate::error::Diagnostic;
use crate::image::core::notes::signal_name;
use crate::image::core::{Arch, Producer};
use crate::image::modules::FileStatus;
use crate::image::process::Process;
use crate::image::version::{detect_glibc, detect_python, GlibcInfo, PythonInfo};
use serde::Serialize;

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SignalInfo {
    pub number: u32,
    pub name: &'static str,
    /// The thread that took the signal (the kernel writes it first).
    pub tid: Option<u32>,
    pub code: Option<i32>,
    pub fault_address: Option<Addr>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ThreadInfo {
    pub tid: u32,
    pub signal: u32,
    pub pc: Addr,
    pub sp: Addr,
    pub thread_pointer: Option<Addr>,
    /// Module holding the program counter.
    pub pc_module: Option<String>,
}

pub use crate::image::process::Mapping as MappingInfo;

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ModuleInfo {
    pub path: String,
    pub base: Addr,
    pub load_bias: Option<Addr>,
    pub build_id: Option<String>,
    #[serde(flatten)]
    pub status: FileStatus,
    pub disk_path: Option<String>,
    pub symtab: bool,
    pub debug_file: Option<String>,
}

#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Totals {
    pub mapped: u64,
    pub in_core: u64,
    pub from_disk: u64,
    pub unavailable: u64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Info {
    pub core: String,
    pub core_size: u64,
    pub compression: Option<&'static str>,
    pub producer: Producer,
    pub arch: Arch,
    pub truncated: bool,
    pub pid: Option<u32>,
    pub ppid: Option<u32>,
    pub uid: Option<u32>,
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    pub signal: Option<SignalInfo>,
    /// For snapshots: the stop signal gdb recorded (e.g. "SIGSTOP").
    pub stop_signal: Option<&'static str>,
    pub threads: Vec<ThreadInfo>,
    pub totals: Totals,
    pub mappings: Vec<MappingInfo>,
    pub modules: Vec<ModuleInfo>,
    pub glibc_version: Option<String>,
    pub glibc: Option<GlibcInfo>,
    pub python_version: Option<String>,
    pub python: Option<PythonInfo>,
    /// For a crashed process: the crash, the native frame it died in and the faulting
    /// thread's innermost Python frames (innermost first).
    pub crash: Option<CrashSummary>,
    /// tracemalloc's state (set by the caller, which has the models).
    pub tracemalloc: Option<crate::python::tracemalloc::State>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The crash context `info` shows: as `stacks` computes it, without the other threads.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CrashSummary {
    #[serde(flatten)]
    pub crash: crate::analysis::threads::Crash,
    pub python_frames: Vec<crate::analysis::threads::JsonFrame>,
}

/// Python frames of the faulting thread `info` lists.
pub const CRASH_FRAMES: usize = 5;

/// `info` with the built-in models for the crash's Python frames.
pub fn info(p: &Process) -> Info {
    match crate::analysis::Models::load(None) {
        Ok(m) => info_with(p, &m),
        Err(_) => info_with_models(p, None),
    }
}

/// `info` with these models (`--heap-models`) for the crash's Python frames.
pub fn info_with(p: &Process, models: &crate::analysis::Models) -> Info {
    info_with_models(p, Some(models))
}

fn info_with_models(p: &Process, models: Option<&crate::analysis::Models>) -> Info {
    let core = &p.core;
    let mappings = p.mappings();
    let mut totals = Totals::default();
    for m in &mappings {
        totals.mapped += m.size;
        totals.in_core += m.in_core;
        totals.from_disk += m.from_disk;
        totals.unavailable += m.unavailable;
    }
    let signal = core.signal().map(|(sig, tid)| SignalInfo {
        number: sig,
        name: signal_name(sig),
        tid,
        code: core
            .siginfo
            .as_ref()
            .filter(|s| s.signo == sig)
            .map(|s| s.code),
        fault_address: core.siginfo.as_ref().and_then(|s| s.fault_addr),
    });
    let threads = core
        .threads
        .iter()
        .map(|t| ThreadInfo {
            tid: t.tid,
            signal: t.signal,
            pc: t.pc,
            sp: t.sp,
            thread_pointer: t.thread_pointer,
            pc_module: p.modules.containing(t.pc).map(|m| m.path.clone()),
        })
        .collect();
    let modules = p
        .modules
        .modules
        .iter()
        .map(|m| ModuleInfo {
            path: m.path.clone(),
            base: m.base,
            load_bias: m.bias.map(Addr),
            build_id: m.build_id_hex(),
            status: m.status.clone(),
            disk_path: m.file.as_ref().map(|f| f.path.display().to_string()),
            symtab: m.has_symtab(),
            debug_file: m.debug_file.as_ref().map(|f| f.path.display().to_string()),
        })
        .collect();
    let glibc = detect_glibc(p);
    let python = detect_python(p);
    let diagnostics = p.diagnostics.clone();
    Info {
        core: core.path.display().to_string(),
        core_size: core.file_len(),
        compression: core.compression.map(|c| c.name()),
        producer: core.producer,
        arch: core.arch,
        truncated: core.truncated.is_some(),
        pid: core.pid(),
        ppid: core.prpsinfo.as_ref().map(|x| x.ppid),
        uid: core.prpsinfo.as_ref().map(|x| x.uid),
        exe: p.exe_path(),
        cmdline: p.cmdline(),
        signal,
        stop_signal: core.stop_signal().map(signal_name),
        threads,
        totals,
        mappings,
        modules,
        glibc_version: glibc.as_ref().map(|g| g.version.clone()),
        glibc,
        python_version: python.as_ref().and_then(|x| x.version.clone()),
        python,
        crash: models.and_then(|m| {
            crate::analysis::threads::crash_summary(p, m, CRASH_FRAMES).map(
                |(crash, python_frames)| CrashSummary {
                    crash,
                    python_frames,
                },
            )
        }),
        tracemalloc: None,
        diagnostics,
    }
}
