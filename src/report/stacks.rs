//! Text rendering of `coreheap stacks`: the crash first, then every thread, its Python
//! stack most recent call last (as Python prints tracebacks), then its native frames
//! innermost first (as debuggers print them).

use super::clean;
use crate::analysis::stacks::{Crash, JsonFrame, Stacks, ThreadStack};
use crate::image::unwind::NativeFrame;
use std::io::{self, Write};

/// `si_code` names for the signals a crash is made of (include/uapi/asm-generic/siginfo.h).
fn code_name(sig: u32, code: i32) -> Option<&'static str> {
    Some(match (sig, code) {
        (_, 0) => "SI_USER",
        (_, -6) => "SI_TKILL",
        (_, -1) => "SI_QUEUE",
        (_, 0x80) => "SI_KERNEL",
        (11, 1) => "SEGV_MAPERR",
        (11, 2) => "SEGV_ACCERR",
        (7, 1) => "BUS_ADRALN",
        (7, 2) => "BUS_ADRERR",
        (4, 1) => "ILL_ILLOPC",
        (8, 1) => "FPE_INTDIV",
        _ => return None,
    })
}

pub fn native_frame_text(f: &NativeFrame) -> String {
    let mut s = format!("{}", f.pc);
    match (&f.symbol, f.offset) {
        (Some(n), Some(o)) => s += &format!(" {}+{o:#x}", clean(n)),
        (Some(n), None) => s += &format!(" {}", clean(n)),
        _ => s += " ??",
    }
    if let Some(m) = &f.module {
        s += &format!(" in {}", clean(m));
    }
    if let Some(file) = &f.file {
        s += &format!(" at {}", clean(file));
        if let Some(l) = f.line {
            s += &format!(":{l}");
        }
    }
    s
}

pub fn python_frame_text(f: &JsonFrame) -> String {
    format!(
        "File \"{}\", line {}, in {}",
        clean(&f.file),
        f.line.map(|l| l.to_string()).unwrap_or_else(|| "?".into()),
        clean(&f.qualname)
    )
}

pub fn crash_line(c: &Crash) -> String {
    let mut s = format!("{} (signal {}", c.name, c.signal);
    if let Some(code) = c.code {
        s += &format!(", si_code {code}");
        if let Some(n) = code_name(c.signal, code) {
            s += &format!(" {n}");
        }
    }
    s += ")";
    if let Some(a) = c.fault_address {
        if matches!(c.signal, 4 | 7 | 8 | 11) {
            s += &format!(" at address {a}");
        }
    }
    if let Some(t) = c.tid {
        s += &format!(" in thread {t}");
    }
    s
}

fn thread_header(t: &ThreadStack) -> String {
    let mut s = match t.tid {
        Some(tid) => format!("Thread {tid}"),
        None => "Thread (not in the core)".to_string(),
    };
    if let Some(n) = &t.name {
        s += &format!(" \"{}\"", clean(n));
    }
    if t.holds_gil {
        s += " (holds the GIL)";
    }
    if t.crashed {
        s += " [crashed]";
    }
    if let Some(i) = t.interpreter.filter(|&i| i != 0) {
        s += &format!(" [interpreter {i}]");
    }
    if t.tstate.is_none() {
        s += " (no Python thread state)";
    }
    s
}

pub fn write_text(w: &mut dyn Write, s: &Stacks) -> io::Result<()> {
    if let Some(c) = &s.crash {
        writeln!(w, "Crash: {}", crash_line(c))?;
        if let Some(f) = &c.native_frame {
            writeln!(w, "  died in: {}", native_frame_text(f))?;
        }
        if let Some(f) = &c.python_frame {
            writeln!(w, "  Python: {}", python_frame_text(f))?;
        }
        writeln!(w)?;
    }
    for (i, t) in s.threads.iter().enumerate() {
        if i > 0 {
            writeln!(w)?;
        }
        writeln!(w, "{}", thread_header(t))?;
        if !t.python.is_empty() {
            writeln!(w, "Traceback (most recent call last):")?;
            for f in t.python.iter().rev() {
                writeln!(w, "  {}", python_frame_text(f))?;
                if let Some(src) = &f.source {
                    writeln!(w, "    {}", clean(src))?;
                }
                if let Some(locals) = &f.locals {
                    for l in locals {
                        writeln!(
                            w,
                            "      {} = {} ({}{} at {})",
                            clean(&l.name),
                            clean(&l.preview),
                            clean(&l.type_name),
                            if l.cell { ", cell" } else { "" },
                            l.address
                        )?;
                    }
                }
            }
        } else if t.tstate.is_some() {
            writeln!(w, "  (no Python frames)")?;
        }
        if let Some(why) = &t.python_truncated {
            writeln!(w, "  (Python stack incomplete: {})", clean(why))?;
        }
        if !t.native.is_empty() {
            writeln!(w, "Native (innermost first):")?;
            for (k, f) in t.native.iter().enumerate() {
                writeln!(w, "  #{k:<2} {}", native_frame_text(f))?;
            }
            if let Some(why) = &t.native_truncated {
                writeln!(w, "  (native stack incomplete: {})", clean(why))?;
            }
        }
    }
    Ok(())
}
