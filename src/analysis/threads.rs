//! What every thread was doing, shared by `stacks` and `info`: the core's threads matched
//! with CPython's thread states, their Python frames, their native frames, and the crash.
//! Reads no heap (no allocator walk): cheap on any core size.

use crate::addr::Addr;
use crate::analysis::Models;
use crate::error::{Diagnostic, Diagnostics};
use crate::image::core::notes::signal_name;
use crate::image::process::Process;
use crate::image::unwind::{Native, NativeFrame};
use crate::image::version::detect_python;
use crate::models::{CpythonModel, Epoch, Version};
use crate::python::frames::{self, Interpreter, Local, PyFrame};
use crate::python::objects::Typer;
use crate::python::symless::{self, PyTypes};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default)]
pub struct StackOptions {
    pub native: bool,
    pub locals: bool,
    /// Ignore the `_PyRuntime` and static type symbols, and find them by scanning the
    /// interpreter's data as for a core without symbols (tests of that path).
    pub ignore_symbols: bool,
}

/// Where source lines are looked for: under the sysroot first, then at the recorded path.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub sysroot: Option<std::path::PathBuf>,
    cache: std::collections::HashMap<String, Option<Vec<String>>>,
}

impl Sources {
    pub fn new(sysroot: Option<std::path::PathBuf>) -> Sources {
        Sources {
            sysroot,
            cache: Default::default(),
        }
    }
    /// Line `n` (1-based) of `file`, stripped as Python's traceback prints it.
    pub fn line(&mut self, file: &str, n: u32) -> Option<String> {
        let root = self.sysroot.clone();
        let lines = self.cache.entry(file.to_string()).or_insert_with(|| {
            if !file.starts_with('/') {
                return None;
            }
            let mut cands = Vec::new();
            if let Some(r) = &root {
                cands.push(r.join(file.trim_start_matches('/')));
            }
            cands.push(std::path::PathBuf::from(file));
            cands.into_iter().find_map(|p| {
                let meta = std::fs::metadata(&p).ok()?;
                if !meta.is_file() || meta.len() > 1 << 24 {
                    return None;
                }
                let b = std::fs::read(&p).ok()?;
                Some(
                    String::from_utf8_lossy(&b)
                        .lines()
                        .map(String::from)
                        .collect(),
                )
            })
        });
        lines
            .as_ref()?
            .get((n as usize).checked_sub(1)?)
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Crash {
    pub signal: u32,
    pub name: &'static str,
    /// `si_code` of NT_SIGINFO.
    pub code: Option<i32>,
    pub fault_address: Option<Addr>,
    pub tid: Option<u32>,
    /// Where it died: the faulting thread's innermost native frame (with `--native`,
    /// or always for `info`) and innermost Python frame.
    pub native_frame: Option<NativeFrame>,
    pub python_frame: Option<JsonFrame>,
}

/// A Python frame as the JSON document shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct JsonFrame {
    pub function: String,
    pub qualname: String,
    pub file: String,
    pub line: Option<u32>,
    pub generator: bool,
    pub locals: Option<Vec<Local>>,
    /// The source line, when the file is readable (text output only).
    #[serde(skip)]
    pub source: Option<String>,
    #[serde(skip)]
    pub frame_address: Addr,
}

impl From<PyFrame> for JsonFrame {
    fn from(f: PyFrame) -> Self {
        JsonFrame {
            function: f.function,
            qualname: f.qualname,
            file: f.file,
            line: f.line,
            generator: f.generator,
            locals: f.locals,
            source: None,
            frame_address: f.frame_address,
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ThreadStack {
    /// Kernel tid (None: a thread state with no thread in the core).
    pub tid: Option<u32>,
    /// The Python thread's name (`threading` registry), when readable.
    pub name: Option<String>,
    pub holds_gil: bool,
    /// Took the signal the core was written for.
    pub crashed: bool,
    /// The thread state (None: a core thread CPython does not know).
    pub tstate: Option<Addr>,
    pub interpreter: Option<i64>,
    /// Innermost first.
    pub python: Vec<JsonFrame>,
    pub python_truncated: Option<String>,
    /// Innermost first; empty without `--native`.
    pub native: Vec<NativeFrame>,
    pub native_truncated: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Stacks {
    pub crash: Option<Crash>,
    pub python_version: Option<String>,
    pub interpreters: Vec<Interpreter>,
    pub threads: Vec<ThreadStack>,
    pub diagnostics: Diagnostics,
}

/// The CPython model for the detected version (the nearest when none covers it).
fn model_for(models: &Models, v: Option<Version>, free_threaded: bool) -> Option<&CpythonModel> {
    match free_threaded {
        true => crate::models::nearest(&models.cpython_ft, v?),
        false => crate::models::nearest(&models.cpython, v?),
    }
}

/// The crash context of a core written for a signal (None for snapshots).
pub fn crash(p: &Process) -> Option<Crash> {
    let core = &p.core;
    let (sig, tid) = core.signal()?;
    let si = core.siginfo.as_ref().filter(|s| s.signo == sig);
    Some(Crash {
        signal: sig,
        name: signal_name(sig),
        code: si.map(|s| s.code),
        fault_address: si.and_then(|s| s.fault_addr),
        tid,
        native_frame: None,
        python_frame: None,
    })
}

pub fn stacks(p: &Process, models: &Models, opts: StackOptions) -> Stacks {
    let mut diagnostics = Diagnostics::default();
    diagnostics.extend(p.diagnostics.iter().cloned());
    let mut crash = crash(p);
    let mut py_threads = frames::PyThreads::default();
    let mut python_version = None;
    if let Some(py) = detect_python(p) {
        python_version = py.version.clone();
        let v = py.version.as_deref().and_then(Version::parse);
        let module = p.modules.modules.iter().find(|m| m.path == py.module);
        match model_for(models, v, py.free_threaded) {
            Some(m) => {
                let types = PyTypes::find(p, module, !opts.ignore_symbols);
                match Typer::with_lookup(p, m, &|n| types.get(n)) {
                    Some(typer) => {
                        if !v.is_some_and(|v| m.covers(v)) {
                            diagnostics.push(Diagnostic::warning(format!(
                                "CPython {}: no model covers this version; the nearest ({}) was used for the stacks",
                                py.version.as_deref().unwrap_or("?"),
                                m.name
                            )));
                        }
                        let symbol = py.runtime.filter(|_| !opts.ignore_symbols);
                        let scanned = match (symbol, module, &m.frames) {
                            (None, Some(module), Some(f)) => {
                                symless::find_runtime(p, &symless::data_ranges(p, module), f, &types)
                            }
                            _ => None,
                        };
                        if let Some((rt, how)) = scanned {
                            diagnostics.push(
                                Diagnostic::info(format!(
                                    "no _PyRuntime symbol: the runtime was found in {}'s data by {how}",
                                    module.map(|m| m.name()).unwrap_or("?")
                                ))
                                .at(rt),
                            );
                        }
                        match symbol.or(scanned.map(|s| s.0)) {
                            Some(rt) => py_threads = frames::read(p, &typer, &types, m, rt, opts.locals),
                            None => diagnostics.push(
                                Diagnostic::warning("CPython found but not its _PyRuntime (no symbol, and no valid runtime in its data): no Python stacks")
                                    .hint("pass --sysroot DIR with the binaries the process ran"),
                            ),
                        }
                    }
                    None => diagnostics.push(
                        Diagnostic::warning(
                            "CPython found but not its types (no PyType_Type symbol, and none in its data): no Python stacks",
                        )
                        .hint("pass --sysroot DIR with the binaries the process ran"),
                    ),
                }
            }
            None => diagnostics.push(Diagnostic::warning(
                "CPython found but its version is unknown: no Python stacks",
            )),
        }
    }
    diagnostics.extend(py_threads.diagnostics.drain(..));

    // Match thread states to core threads: native_thread_id = tid (3.11+), thread_id =
    // pthread_self = the thread pointer (x86_64 fs_base) on every version.
    let core = &p.core;
    let mut used = vec![false; py_threads.threads.len()];
    let native = opts.native.then(|| Native::new(p));
    let crashed_tid = crash.as_ref().and_then(|c| c.tid);
    let mut threads = Vec::new();
    for t in &core.threads {
        let k = py_threads.threads.iter().enumerate().position(|(i, s)| {
            !used[i]
                && (s.native_thread_id.is_some_and(|n| n == t.tid as u64)
                    || t.thread_pointer
                        .is_some_and(|tp| tp.0 == s.thread_id && s.thread_id != 0))
        });
        let mut ts = ThreadStack {
            tid: Some(t.tid),
            name: None,
            holds_gil: false,
            crashed: Some(t.tid) == crashed_tid,
            tstate: None,
            interpreter: None,
            python: Vec::new(),
            python_truncated: None,
            native: Vec::new(),
            native_truncated: None,
        };
        if let Some(k) = k {
            used[k] = true;
            let s = &py_threads.threads[k];
            ts.holds_gil = s.holds_gil;
            ts.name = s.name.clone();
            ts.tstate = Some(s.tstate);
            ts.interpreter = py_threads.interpreters.get(s.interpreter).map(|i| i.id);
            ts.python = s.frames.iter().cloned().map(JsonFrame::from).collect();
            ts.python_truncated = s.truncated.clone();
        }
        if let Some(n) = &native {
            let st = n.unwind(t);
            if let Some(why) = &st.truncated {
                diagnostics.push(Diagnostic::info(format!(
                    "thread {}: native stack: {why}",
                    t.tid
                )));
            }
            ts.native = st.frames;
            ts.native_truncated = st.truncated;
        }
        threads.push(ts);
    }
    for (i, s) in py_threads.threads.iter().enumerate() {
        if used[i] {
            continue;
        }
        diagnostics.push(
            Diagnostic::warning(format!(
                "thread state {} (thread id {:#x}{}) matches no thread of the core",
                s.tstate,
                s.thread_id,
                s.native_thread_id
                    .map(|n| format!(", tid {n}"))
                    .unwrap_or_default()
            ))
            .at(s.tstate),
        );
        threads.push(ThreadStack {
            tid: None,
            name: s.name.clone(),
            holds_gil: s.holds_gil,
            crashed: false,
            tstate: Some(s.tstate),
            interpreter: py_threads.interpreters.get(s.interpreter).map(|i| i.id),
            python: s.frames.iter().cloned().map(JsonFrame::from).collect(),
            python_truncated: s.truncated.clone(),
            native: Vec::new(),
            native_truncated: None,
        });
    }
    if let Some(c) = &mut crash {
        if let Some(t) = threads.iter().find(|t| t.crashed) {
            c.python_frame = t.python.first().cloned();
            c.native_frame = t.native.first().cloned();
        }
        if c.native_frame.is_none() {
            // Without --native: the crashed thread's pc, symbolized.
            if let Some(t) = core.threads.iter().find(|t| Some(t.tid) == c.tid) {
                c.native_frame = Some(Native::new(p).symbolize(t.pc, t.pc.0));
            }
        }
    }
    Stacks {
        crash,
        python_version,
        interpreters: py_threads.interpreters,
        threads,
        diagnostics,
    }
}

/// The crash context for `info`: the crash, the faulting thread's innermost native frame
/// (its pc, symbolized) and up to `n` innermost Python frames.
pub fn crash_summary(p: &Process, models: &Models, n: usize) -> Option<(Crash, Vec<JsonFrame>)> {
    let mut c = crash(p)?;
    let s = stacks(p, models, StackOptions::default());
    let t = p.core.threads.iter().find(|t| Some(t.tid) == c.tid);
    if let Some(t) = t {
        let nat = Native::new(p);
        c.native_frame = Some(nat.symbolize(t.pc, t.pc.0));
    }
    let frames: Vec<JsonFrame> = s
        .threads
        .into_iter()
        .find(|t| t.crashed)
        .map(|t| t.python.into_iter().take(n).collect())
        .unwrap_or_default();
    c.python_frame = frames.first().cloned();
    Some((c, frames))
}

/// Fill each Python frame's source line from the files under `sysroot` or on this machine.
pub fn fill_sources(s: &mut Stacks, sysroot: Option<std::path::PathBuf>) {
    let mut src = Sources::new(sysroot);
    for t in &mut s.threads {
        for f in &mut t.python {
            if let Some(l) = f.line {
                f.source = src.line(&f.file, l);
            }
        }
    }
}
