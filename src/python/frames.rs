//! Python thread stacks from a core: `_PyRuntime` → interpreters → thread states → frames
//! → code objects and line numbers, with the offsets of the model's `[frames]` section.
//!
//! What is shown is what CPython's own `sys._current_frames()` / `traceback.extract_stack`
//! show, computed the way CPython computes it:
//! - 3.8-3.10: `tstate->frame`, then `f_back` (Python/pystate.c `_PyThread_CurrentFrames`);
//! - 3.11+: `tstate->cframe->current_frame` (3.11, 3.12) or `tstate->current_frame` (3.13+),
//!   then `previous`, skipping the frames `_PyFrame_IsIncomplete` is true for
//!   (Include/internal/pycore_frame.h; 3.14 pycore_interpframe.h): C-stack and
//!   interpreter-owned entry frames, and frames that have not reached their first
//!   traceable instruction;
//! - the line: `PyFrame_GetLineNumber` / `PyUnstable_InterpreterFrame_GetLine`, i.e.
//!   `PyCode_Addr2Line` over `co_lnotab` (3.8, 3.9), the 3.10 `co_linetable`, or the 3.11+
//!   location table (Objects/codeobject.c, Objects/lnotab_notes.txt, Objects/locations.md).
//!
//! Every list is bounded and cycle-checked; a damaged thread state or frame ends that
//! thread's walk with a diagnostic and the other threads are still read.

use crate::addr::Addr;
use crate::error::Diagnostic;
use crate::image::process::Process;
use crate::models::{CpythonModel, FrameKind, Frames, GilAt, LineTable};
use crate::python::objects::Typer;
use crate::python::symless::PyTypes;
use crate::python::threadnames;
use serde::Serialize;
use std::collections::HashSet;

/// Interpreters, threads per interpreter and frames per thread read at most.
pub const MAX_INTERPRETERS: usize = 256;
pub const MAX_THREADS: usize = 4096;
pub const MAX_FRAMES: usize = 100_000;
/// Locals listed per frame.
pub const MAX_LOCALS: usize = 200;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Local {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub address: Addr,
    pub preview: String,
    /// A cell or free variable (the value shown is the cell's content).
    pub cell: bool,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PyFrame {
    /// `co_name`.
    pub function: String,
    /// `co_qualname` (3.11+); `co_name` before.
    pub qualname: String,
    pub file: String,
    pub line: Option<u32>,
    /// The frame (`PyFrameObject` 3.8-3.10, `_PyInterpreterFrame` 3.11+) and its code.
    pub frame_address: Addr,
    pub code_address: Addr,
    /// Running in a generator or coroutine (3.11+: the frame is owned by one).
    pub generator: bool,
    pub locals: Option<Vec<Local>>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PyThread {
    pub tstate: Addr,
    /// Index into the interpreters list.
    pub interpreter: usize,
    /// `thread_id`: pthread_self(), i.e. the thread pointer (x86_64 fs_base).
    pub thread_id: u64,
    /// `native_thread_id`: the kernel tid (3.11+).
    pub native_thread_id: Option<u64>,
    /// The `threading.Thread` name registered for `thread_id` (`threading._active`).
    pub name: Option<String>,
    pub holds_gil: bool,
    /// Innermost first.
    pub frames: Vec<PyFrame>,
    /// Why the walk of this thread stopped early, if it did.
    pub truncated: Option<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Interpreter {
    pub address: Addr,
    pub id: i64,
    pub threads: usize,
}

#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub struct PyThreads {
    pub interpreters: Vec<Interpreter>,
    pub threads: Vec<PyThread>,
    #[serde(skip)]
    pub diagnostics: Vec<Diagnostic>,
}

struct Reader<'a> {
    p: &'a Process,
    typer: &'a Typer<'a>,
    f: &'a Frames,
    tuple_items: u64,
    code_type: Option<u64>,
    cell_type: Option<u64>,
    dict_type: Option<u64>,
}

impl Reader<'_> {
    fn u64(&self, a: u64) -> Option<u64> {
        self.p.space.read_u64(Addr(a)).ok()
    }
    fn i32(&self, a: u64) -> Option<i32> {
        self.p.space.read_u32(Addr(a)).ok().map(|v| v as i32)
    }
    fn u8(&self, a: u64) -> Option<u8> {
        let mut b = [0u8; 1];
        self.p.space.read(Addr(a), &mut b).ok().map(|_| b[0])
    }
    /// A `_PyStackRef` (3.14) or plain pointer: tagged ints and NULL give None.
    fn obj(&self, bits: u64) -> Option<u64> {
        if self.f.stackref {
            // pycore_stackref.h (3.14 GIL build): Py_TAG_BITS 3, Py_INT_TAG 3, NULL = 1.
            if bits & 3 == 3 {
                return None;
            }
            Some(bits & !3).filter(|&v| v != 0)
        } else {
            Some(bits).filter(|&v| v != 0)
        }
    }
    fn ob_type(&self, o: u64) -> Option<u64> {
        self.u64(self.typer.field(o, 8))
    }
    fn is_code(&self, o: u64) -> bool {
        if o == 0 || o % 8 != 0 {
            return false;
        }
        match (self.code_type, self.ob_type(o)) {
            (Some(c), Some(t)) => t == c,
            // No PyCode_Type symbol: a code object has str file and function names.
            (None, Some(_)) => {
                self.str_at(o.wrapping_add(self.f.code_filename)).is_some()
                    && self.str_at(o.wrapping_add(self.f.code_name)).is_some()
            }
            _ => false,
        }
    }
    fn str_at(&self, a: u64) -> Option<String> {
        self.typer.read_str(self.u64(a)?)
    }
    /// Bytes object contents (line tables, local kinds), at most `max` bytes.
    fn bytes(&self, o: u64, max: u64) -> Option<Vec<u8>> {
        let n = self.u64(self.typer.field(o, 0x10))?;
        if n > max {
            return None;
        }
        let mut b = vec![0u8; n as usize];
        self.p
            .space
            .read(Addr(self.typer.field(o, 0x20)), &mut b)
            .ok()?;
        Some(b)
    }
    fn tuple(&self, o: u64, max: u64) -> Option<Vec<u64>> {
        let n = self.u64(self.typer.field(o, 0x10))?;
        if n > max {
            return None;
        }
        (0..n)
            .map(|i| self.u64(o.wrapping_add(self.tuple_items + 8 * i)))
            .collect()
    }
    fn names(&self, tuple_at: Option<u64>, code: u64) -> Vec<String> {
        let Some(off) = tuple_at else {
            return Vec::new();
        };
        let Some(t) = self.u64(code.wrapping_add(off)) else {
            return Vec::new();
        };
        self.tuple(t, 1 << 16)
            .unwrap_or_default()
            .into_iter()
            .map(|n| self.typer.read_str(n).unwrap_or_else(|| "?".into()))
            .collect()
    }

    fn local(&self, name: String, value: u64, cell: bool) -> Option<Local> {
        let mut v = value;
        let mut is_cell = false;
        if cell && self.cell_type.is_some() && self.ob_type(v) == self.cell_type {
            // PyCellObject.ob_ref (Include/cpython/cellobject.h), NULL while unbound.
            v = self.u64(self.typer.field(v, 0x10)).filter(|&x| x != 0)?;
            is_cell = true;
        }
        let ti = self.ob_type(v).and_then(|t| self.typer.type_info(t));
        Some(Local {
            name,
            type_name: ti
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_else(|| "?".into()),
            address: Addr(v),
            preview: ti.map(|t| self.typer.preview(v, &t)).unwrap_or_default(),
            cell: is_cell,
        })
    }

    /// Fast locals, cells and free variables by name; a module or class body's `f_locals`
    /// dict when it has no fast locals.
    fn locals(&self, frame: u64, code: u64) -> Vec<Local> {
        let f = self.f;
        let mut out = Vec::new();
        // Frame and code addresses are read from the core: their arithmetic wraps.
        let base = frame.wrapping_add(f.frame_localsplus);
        let slot = |i: usize| self.u64(base.wrapping_add(8 * i as u64));
        let any_fast;
        match f.frame_kind {
            FrameKind::Object => {
                // f_localsplus = co_varnames, then co_cellvars cells, then co_freevars cells.
                let vars = self.names(f.code_varnames, code);
                let cells = self.names(f.code_cellvars, code);
                let frees = self.names(f.code_freevars, code);
                any_fast = !vars.is_empty() || !cells.is_empty() || !frees.is_empty();
                let mut seen = HashSet::new();
                for (i, (name, cell)) in vars
                    .into_iter()
                    .map(|n| (n, false))
                    .chain(cells.into_iter().chain(frees).map(|n| (n, true)))
                    .enumerate()
                    .take(MAX_LOCALS)
                {
                    let Some(v) = slot(i).filter(|&v| v != 0) else {
                        continue;
                    };
                    if let Some(l) = self.local(name.clone(), v, cell) {
                        if seen.insert(name) {
                            out.push(l);
                        }
                    }
                }
            }
            FrameKind::Interpreter => {
                let names = self.names(f.code_localsplusnames, code);
                let kinds = f
                    .code_localspluskinds
                    .and_then(|o| self.u64(code.wrapping_add(o)))
                    .and_then(|b| self.bytes(b, 1 << 16))
                    .unwrap_or_default();
                any_fast = !names.is_empty();
                for (i, name) in names.into_iter().enumerate().take(MAX_LOCALS) {
                    // Include/internal/pycore_code.h: CO_FAST_HIDDEN 0x10, LOCAL 0x20,
                    // CELL 0x40, FREE 0x80.
                    let kind = kinds.get(i).copied().unwrap_or(0x20);
                    if kind & 0x10 != 0 {
                        continue;
                    }
                    let Some(v) = slot(i).and_then(|b| self.obj(b)) else {
                        continue;
                    };
                    if let Some(l) = self.local(name, v, kind & 0xc0 != 0) {
                        out.push(l);
                    }
                }
            }
        }
        if !any_fast {
            if let Some(d) = self
                .u64(frame.wrapping_add(f.frame_locals))
                .filter(|&d| d != 0)
            {
                if self.dict_type.is_some() && self.ob_type(d) == self.dict_type {
                    for (k, v) in self.typer.dict_items(d, MAX_LOCALS) {
                        let name = self.typer.read_str(k).unwrap_or_else(|| "?".into());
                        if let Some(l) = self.local(name, v, false) {
                            out.push(l);
                        }
                    }
                }
            }
        }
        out
    }

    fn line_table(&self, code: u64) -> Vec<u8> {
        self.u64(code.wrapping_add(self.f.code_linetable))
            .and_then(|b| self.bytes(b, 1 << 24))
            .unwrap_or_default()
    }

    fn frame_info(
        &self,
        frame: u64,
        code: u64,
        addrq: i64,
        lineno_override: Option<i32>,
        generator: bool,
        with_locals: bool,
    ) -> PyFrame {
        let f = self.f;
        let firstlineno = self.i32(code.wrapping_add(f.code_firstlineno)).unwrap_or(0);
        let line = match lineno_override {
            Some(l) => Some(l),
            None => addr2line(f.line_table, &self.line_table(code), firstlineno, addrq),
        };
        let function = self
            .str_at(code.wrapping_add(f.code_name))
            .unwrap_or_else(|| "?".into());
        let qualname = f
            .code_qualname
            .and_then(|o| self.str_at(code.wrapping_add(o)))
            .unwrap_or_else(|| function.clone());
        PyFrame {
            function,
            qualname,
            file: self
                .str_at(code.wrapping_add(f.code_filename))
                .unwrap_or_else(|| "?".into()),
            line: line.filter(|&l| l >= 0).map(|l| l as u32),
            frame_address: Addr(frame),
            code_address: Addr(code),
            generator,
            locals: with_locals.then(|| self.locals(frame, code)),
        }
    }

    /// One thread's frames, innermost first, and why the walk stopped early.
    fn frames(&self, tstate: u64, with_locals: bool) -> (Vec<PyFrame>, Option<String>) {
        let f = self.f;
        let mut out = Vec::new();
        let Some(mut cur) = self.u64(tstate.wrapping_add(f.tstate_frame)) else {
            return (out, Some(format!("thread state {tstate:#x} is unreadable")));
        };
        if let Some(cf) = f.cframe_current_frame {
            if cur == 0 {
                return (out, None);
            }
            match self.u64(cur.wrapping_add(cf)) {
                Some(c) => cur = c,
                None => {
                    return (
                        out,
                        Some(format!("the thread's _PyCFrame at {cur:#x} is unreadable")),
                    )
                }
            }
        }
        let mut seen = HashSet::new();
        while cur != 0 {
            if !seen.insert(cur) {
                return (
                    out,
                    Some(format!(
                        "frame {cur:#x} is already in this thread's chain (a loop)"
                    )),
                );
            }
            if seen.len() > MAX_FRAMES {
                return (out, Some(format!("more than {MAX_FRAMES} frames")));
            }
            let Some(prev) = self.u64(cur.wrapping_add(f.frame_previous)) else {
                return (
                    out,
                    Some(format!("frame {cur:#x} is unreadable (the thread's stack or the heap page is not in the core)")),
                );
            };
            match f.frame_kind {
                FrameKind::Object => {
                    let code = self.u64(cur.wrapping_add(f.frame_code)).unwrap_or(0);
                    if !self.is_code(code) {
                        return (
                            out,
                            Some(format!("frame {cur:#x} has no code object ({code:#x})")),
                        );
                    }
                    let lasti = self
                        .i32(cur.wrapping_add(f.frame_lasti.unwrap_or(0)))
                        .unwrap_or(-1) as i64;
                    let lineno = f
                        .frame_lineno
                        .and_then(|o| self.i32(cur.wrapping_add(o)))
                        .unwrap_or(0);
                    let tracing = f
                        .frame_trace
                        .and_then(|o| self.u64(cur.wrapping_add(o)))
                        .unwrap_or(0)
                        != 0;
                    // 3.8/3.9 frameobject.c PyFrame_GetLineNumber: f_lineno when f_trace
                    // is set; 3.10: f_lineno when non-zero.
                    let over = if f.lasti_unit == 1 {
                        tracing.then_some(lineno)
                    } else {
                        (lineno != 0).then_some(lineno)
                    };
                    let addrq = if lasti < 0 {
                        -1
                    } else {
                        lasti * f.lasti_unit as i64
                    };
                    out.push(self.frame_info(cur, code, addrq, over, false, with_locals));
                }
                FrameKind::Interpreter => {
                    let owner = self
                        .u8(cur.wrapping_add(f.frame_owner.unwrap_or(0)))
                        .unwrap_or(0) as u64;
                    let skip = f.owner_skip_from.is_some_and(|s| owner >= s);
                    if !skip {
                        let raw = self.u64(cur.wrapping_add(f.frame_code)).unwrap_or(0);
                        let code = self.obj(raw).unwrap_or(0);
                        if !self.is_code(code) {
                            // 3.13's C-stack entry frame holds None; anything else that
                            // is not code is damage.
                            return (
                                out,
                                Some(format!("frame {cur:#x} has no code object ({raw:#x})")),
                            );
                        }
                        let instr = self
                            .u64(cur.wrapping_add(f.frame_instr.unwrap_or(0)))
                            .unwrap_or(0);
                        let start = code.wrapping_add(f.code_adaptive.unwrap_or(0));
                        let first = self
                            .i32(code.wrapping_add(f.code_firsttraceable.unwrap_or(0)))
                            .unwrap_or(0) as i64;
                        let generator = f.owner_generator == Some(owner);
                        let off = (instr as i64).wrapping_sub(start as i64);
                        let incomplete = !generator && off < 2 * first;
                        if !incomplete {
                            // _PyInterpreterFrame_LASTI * sizeof(_Py_CODEUNIT)
                            let lasti = off.div_euclid(2);
                            out.push(self.frame_info(
                                cur,
                                code,
                                lasti * 2,
                                None,
                                generator,
                                with_locals,
                            ));
                        }
                    }
                }
            }
            cur = prev;
        }
        (out, None)
    }
}

/// `PyCode_Addr2Line(co, addrq)` for each table format (`addrq` in bytes of bytecode).
pub fn addr2line(kind: LineTable, table: &[u8], firstlineno: i32, addrq: i64) -> Option<i32> {
    if addrq < 0 {
        return Some(firstlineno);
    }
    match kind {
        LineTable::Lnotab => {
            // 3.8/3.9 Objects/codeobject.c PyCode_Addr2Line.
            let mut line = firstlineno;
            let mut addr: i64 = 0;
            for pair in table.chunks_exact(2) {
                addr += pair[0] as i64;
                if addr > addrq {
                    break;
                }
                line += pair[1] as i8 as i32;
            }
            Some(line)
        }
        LineTable::Linetable310 => {
            // 3.10 Objects/codeobject.c: ranges [start, end) advanced until one contains
            // addrq; empty ranges skipped; ldelta -128 = no line.
            let (mut start, mut end): (i64, i64) = (-1, 0);
            let mut computed = firstlineno;
            let mut line: i32 = -1;
            let mut i = 0;
            while end <= addrq {
                loop {
                    if i + 2 > table.len() {
                        return None;
                    }
                    start = end;
                    end += table[i] as i64;
                    let ld = table[i + 1] as i8;
                    i += 2;
                    if ld == -128 {
                        line = -1;
                    } else {
                        computed += ld as i32;
                        line = computed;
                    }
                    if start != end {
                        break;
                    }
                }
            }
            let _ = start;
            Some(line)
        }
        LineTable::Locations => {
            // 3.11+ Objects/codeobject.c advance(), get_line_delta(), next_code_delta().
            let mut end: i64 = 0;
            let mut computed = firstlineno;
            let mut line: i32 = -1;
            let mut i = 0;
            while end <= addrq {
                if i >= table.len() {
                    return None;
                }
                let b = table[i];
                let code = (b >> 3) & 15;
                let delta = match code {
                    15 => 0,
                    13 | 14 => signed_varint(table, i + 1),
                    10..=12 => code as i32 - 10,
                    _ => 0,
                };
                computed = computed.wrapping_add(delta);
                line = if b >> 3 == 0x1f { -1 } else { computed };
                end += (((b & 7) as i64) + 1) * 2;
                i += 1;
                while i < table.len() && table[i] & 0x80 == 0 {
                    i += 1;
                }
            }
            Some(line)
        }
    }
}

fn signed_varint(t: &[u8], mut i: usize) -> i32 {
    let mut read = *t.get(i).unwrap_or(&0) as u32;
    i += 1;
    let mut val = read & 63;
    let mut shift = 0;
    while read & 64 != 0 && shift < 30 {
        read = *t.get(i).unwrap_or(&0) as u32;
        i += 1;
        shift += 6;
        val |= (read & 63) << shift;
    }
    if val & 1 != 0 {
        -((val >> 1) as i32)
    } else {
        (val >> 1) as i32
    }
}

/// Every interpreter and thread state of the runtime at `runtime`, with frames.
/// `types`: the static types (from the symbols, or found by python/symless.rs).
pub fn read(
    p: &Process,
    typer: &Typer,
    types: &PyTypes,
    model: &CpythonModel,
    runtime: Addr,
    with_locals: bool,
) -> PyThreads {
    let mut out = PyThreads::default();
    let Some(f) = &model.frames else {
        out.diagnostics.push(Diagnostic::warning(format!(
            "the {} CPython model has no [frames] section: Python stacks are not read",
            model.name
        )));
        return out;
    };
    let r = Reader {
        p,
        typer,
        f,
        tuple_items: model.objects.tuple_items,
        code_type: types.get("PyCode_Type"),
        cell_type: types.get("PyCell_Type"),
        dict_type: types.get("PyDict_Type"),
    };
    out.diagnostics
        .extend(cross_check(p, runtime, f, &model.name));
    let rt = runtime.0;
    let mut interp = r
        .u64(rt.wrapping_add(f.runtime_interpreters_head))
        .unwrap_or(0);
    if interp == 0 {
        out.diagnostics.push(Diagnostic::warning(
            "_PyRuntime.interpreters.head is NULL or unreadable: no Python threads (the interpreter was not running or is finalizing)",
        ).at(runtime));
        return out;
    }
    let mut seen_interp = HashSet::new();
    while interp != 0 {
        if !seen_interp.insert(interp) || seen_interp.len() > MAX_INTERPRETERS {
            out.diagnostics.push(
                Diagnostic::warning("the interpreter list loops or is too long; stopped")
                    .at(Addr(interp)),
            );
            break;
        }
        let idx = out.interpreters.len();
        let id = r.u64(interp.wrapping_add(f.interp_id)).unwrap_or(u64::MAX) as i64;
        let (holder, locked) = gil_state(&r, rt, interp);
        let names = f
            .interp_modules
            .and_then(|o| r.u64(interp.wrapping_add(o)))
            .map(|m| threadnames::thread_names(typer, &model.objects, types, m))
            .unwrap_or_default();
        let mut count = 0;
        let mut ts = match r.u64(interp.wrapping_add(f.interp_threads_head)) {
            Some(t) => t,
            None => {
                out.diagnostics.push(
                    Diagnostic::warning(format!("interpreter {interp:#x} is unreadable"))
                        .at(Addr(interp)),
                );
                break;
            }
        };
        let mut seen_ts = HashSet::new();
        while ts != 0 {
            if !seen_ts.insert(ts) || seen_ts.len() > MAX_THREADS {
                out.diagnostics.push(
                    Diagnostic::warning(format!(
                        "interpreter {id}: the thread-state list loops or is too long; stopped"
                    ))
                    .at(Addr(ts)),
                );
                break;
            }
            let back = r.u64(ts.wrapping_add(f.tstate_interp));
            if back != Some(interp) {
                out.diagnostics.push(Diagnostic::warning(format!(
                    "thread state {ts:#x} does not point back to its interpreter {interp:#x} (damaged); the rest of this interpreter's threads are not read"
                )).at(Addr(ts)));
                break;
            }
            let (frames, truncated) = r.frames(ts, with_locals);
            if let Some(why) = &truncated {
                out.diagnostics.push(
                    Diagnostic::warning(format!(
                        "thread state {ts:#x}: Python stack truncated: {why}"
                    ))
                    .at(Addr(ts)),
                );
            }
            let thread_id = r.u64(ts.wrapping_add(f.tstate_thread_id)).unwrap_or(0);
            out.threads.push(PyThread {
                tstate: Addr(ts),
                interpreter: idx,
                thread_id,
                native_thread_id: f
                    .tstate_native_thread_id
                    .and_then(|o| r.u64(ts.wrapping_add(o))),
                name: names.get(&thread_id).cloned(),
                holds_gil: locked && holder == ts,
                frames,
                truncated,
            });
            count += 1;
            ts = r.u64(ts.wrapping_add(f.tstate_next)).unwrap_or(0);
        }
        out.interpreters.push(Interpreter {
            address: Addr(interp),
            id,
            threads: count,
        });
        interp = r.u64(interp.wrapping_add(f.interp_next)).unwrap_or(0);
    }
    out
}

/// (last_holder, locked) of the GIL the interpreter uses.
fn gil_state(r: &Reader, rt: u64, interp: u64) -> (u64, bool) {
    let f = r.f;
    let gil = match f.gil_at {
        GilAt::Runtime => Some(rt.wrapping_add(f.gil_offset)),
        GilAt::InterpPointer => r.u64(interp.wrapping_add(f.gil_offset)),
    };
    let Some(g) = gil.filter(|&g| g != 0) else {
        return (0, false);
    };
    let holder = r.u64(g.wrapping_add(f.gil_last_holder)).unwrap_or(0);
    let locked = r.i32(g.wrapping_add(f.gil_locked)).unwrap_or(0) != 0;
    (holder, locked)
}

/// CPython 3.13+ `_Py_DebugOffsets` (first member of `_PyRuntime`, cookie "xdebugpy";
/// Include/internal/pycore_runtime.h, 3.14 pycore_debug_offsets.h) against the model:
/// each sub-struct is a run of u64 offsets; the runs the stack reader relies on must be
/// present with the model's values.
pub fn cross_check(p: &Process, runtime: Addr, f: &Frames, model: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut head = [0u8; 8];
    if p.space.read(runtime, &mut head).is_err() || &head != b"xdebugpy" {
        return out;
    }
    let mut buf = vec![0u8; 0x800];
    if p.space.read(runtime, &mut buf).is_err() {
        return out;
    }
    let w: Vec<u64> = buf
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let has = |pat: &[u64]| w.windows(pat.len()).any(|x| x == pat);
    let mut checks: Vec<(&str, Vec<u64>)> = vec![
        // thread_state: prev, next, interp, current_frame, thread_id, native_thread_id
        (
            "thread state (next, interp, current_frame, thread_id, native_thread_id)",
            vec![
                f.tstate_next,
                f.tstate_interp,
                f.tstate_frame,
                f.tstate_thread_id,
                f.tstate_native_thread_id.unwrap_or(0),
            ],
        ),
        // interpreter_frame: previous, executable, instr_ptr, localsplus, owner
        (
            "interpreter frame (previous, executable, instr_ptr, localsplus, owner)",
            vec![
                f.frame_previous,
                f.frame_code,
                f.frame_instr.unwrap_or(0),
                f.frame_localsplus,
                f.frame_owner.unwrap_or(0),
            ],
        ),
        // code_object: filename, name, qualname, linetable, firstlineno
        (
            "code object (filename, name, qualname, linetable, firstlineno)",
            vec![
                f.code_filename,
                f.code_name,
                f.code_qualname.unwrap_or(0),
                f.code_linetable,
                f.code_firstlineno,
            ],
        ),
        // interpreter_state: id, next, threads_head
        (
            "interpreter state (id, next, threads_head)",
            vec![f.interp_id, f.interp_next, f.interp_threads_head],
        ),
    ];
    checks.push((
        "code object (co_code_adaptive)",
        vec![f.code_adaptive.unwrap_or(0)],
    ));
    // interpreter_state: id, next, threads_head, [threads_main (3.14)], gc,
    // imports_modules (sys.modules, for the thread names).
    if let Some(mo) = f.interp_modules {
        let key = [f.interp_id, f.interp_next, f.interp_threads_head];
        let at = w.windows(3).position(|x| x == key);
        if at.is_some_and(|i| !w[(i + 3).min(w.len())..(i + 6).min(w.len())].contains(&mo)) {
            out.push(Diagnostic::warning(format!(
                "CPython's _Py_DebugOffsets do not show the interpreter's sys.modules at {mo:#x} ({model} model); thread names may be missing"
            )).at(runtime));
        }
    }
    for (what, pat) in checks {
        if !has(&pat) {
            out.push(Diagnostic::warning(format!(
                "CPython's _Py_DebugOffsets do not show the {what} layout the {model} model's [frames] expect; stacks may be wrong"
            )).at(runtime));
        }
    }
    if !w.contains(&f.runtime_interpreters_head) {
        out.push(Diagnostic::warning(format!(
            "CPython's _Py_DebugOffsets do not show _PyRuntime.interpreters.head at {:#x} ({model} model)",
            f.runtime_interpreters_head
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab() {
        // firstlineno 10: [0,4) line 10, [4,10) line 11, [10..) line 13
        let t = [4u8, 1, 6, 2];
        assert_eq!(addr2line(LineTable::Lnotab, &t, 10, 0), Some(10));
        assert_eq!(addr2line(LineTable::Lnotab, &t, 10, 4), Some(11));
        assert_eq!(addr2line(LineTable::Lnotab, &t, 10, 9), Some(11));
        assert_eq!(addr2line(LineTable::Lnotab, &t, 10, 12), Some(13));
        assert_eq!(addr2line(LineTable::Lnotab, &t, 10, -1), Some(10));
    }

    #[test]
    fn linetable_310() {
        // [0,2) line 5 (+0 from 5), empty range +1, [2,8) line 7, [8,10) no line
        let t = [2u8, 0, 0, 1, 6, 1, 2, 0x80];
        assert_eq!(addr2line(LineTable::Linetable310, &t, 5, 0), Some(5));
        assert_eq!(addr2line(LineTable::Linetable310, &t, 5, 2), Some(7));
        assert_eq!(addr2line(LineTable::Linetable310, &t, 5, 7), Some(7));
        assert_eq!(addr2line(LineTable::Linetable310, &t, 5, 8), Some(-1));
        assert_eq!(addr2line(LineTable::Linetable310, &t, 5, 10), None);
    }

    #[test]
    fn locations() {
        // entry 1: code 13 (no columns), line +2, 1 unit; entry 2: code 11 (+1), 2 units,
        // two column bytes; entry 3: code 15 no location, 1 unit; entry 4: code 14 long,
        // line -3 (svarint 7), end line, col, end col varints.
        let t = [
            0x80 | (13 << 3),
            4,
            0x80 | (11 << 3) | 1,
            1,
            2,
            0x80 | (15 << 3),
            0x80 | (14 << 3),
            7,
            0,
            1,
            2,
        ];
        assert_eq!(addr2line(LineTable::Locations, &t, 100, 0), Some(102));
        assert_eq!(addr2line(LineTable::Locations, &t, 100, 2), Some(103));
        assert_eq!(addr2line(LineTable::Locations, &t, 100, 4), Some(103));
        assert_eq!(addr2line(LineTable::Locations, &t, 100, 6), Some(-1));
        assert_eq!(addr2line(LineTable::Locations, &t, 100, 8), Some(100));
        assert_eq!(addr2line(LineTable::Locations, &t, 100, 10), None);
    }
}
