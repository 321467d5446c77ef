//! Text of `summary --by filename|lineno|traceback` and `diff --by ...`, the way
//! tracemalloc prints `Statistic`, `StatisticDiff` and `Traceback.format()`
//! (Lib/tracemalloc.py `__str__`).

use super::{clean, human_bytes, Text};
use crate::analysis::traces::{
    format_size, Frame, Stat, StatDiff, TraceDiff, TraceSummary, TypeCount,
};
use crate::python::tracemalloc::State;
use std::collections::HashMap;
use std::io::{self, Write};

/// `str(Traceback)`: its oldest frame, "file:line".
fn head(tb: &[Frame]) -> String {
    tb.first()
        .map(|f| format!("{}:{}", f.file, f.line))
        .unwrap_or_default()
}

/// `str(Statistic)`.
pub fn stat_line(s: &Stat) -> String {
    let mut t = format!(
        "{}: size={}, count={}",
        head(&s.traceback),
        format_size(s.size as f64, false),
        s.count
    );
    if s.count > 0 {
        t += &format!(
            ", average={}",
            format_size(s.size as f64 / s.count as f64, false)
        );
    }
    t
}

/// `str(StatisticDiff)`.
pub fn diff_line(s: &StatDiff) -> String {
    let mut t = format!(
        "{}: size={} ({}), count={} ({}{})",
        head(&s.traceback),
        format_size(s.size as f64, false),
        format_size(s.size_delta as f64, true),
        s.count,
        if s.count_delta >= 0 { "+" } else { "" },
        s.count_delta
    );
    if s.count > 0 {
        t += &format!(
            ", average={}",
            format_size(s.size as f64 / s.count as f64, false)
        );
    }
    t
}

pub fn state_line(s: &State) -> String {
    if !s.tracing {
        return "not tracing (start the process with PYTHONTRACEMALLOC=N to record where memory is allocated)".into();
    }
    let mem = match (s.traced_memory, s.peak_traced_memory) {
        (Some(t), Some(p)) => format!("traced {} (peak {})", human_bytes(t), human_bytes(p)),
        (Some(t), None) => format!("traced {}", human_bytes(t)),
        _ => "traced memory not located".into(),
    };
    let doms = if s.domains.len() > 1 || s.domains.first().is_some_and(|&d| d != 0) {
        format!(
            ", domains {}",
            s.domains
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        )
    } else {
        String::new()
    };
    format!(
        "tracing with {} frames, {mem}, {} traces{doms}",
        s.max_nframe, s.traces
    )
}

fn types_text(t: &[TypeCount], sign: bool) -> String {
    let v: Vec<String> = t
        .iter()
        .take(6)
        .map(|x| {
            format!(
                "{}{} × {}",
                if sign { "+" } else { "" },
                x.count,
                clean(&x.name)
            )
        })
        .collect();
    let more = if t.len() > 6 { ", …" } else { "" };
    format!("{}{more}", v.join(", "))
}

fn frames_text(
    w: &mut dyn Write,
    tb: &[Frame],
    sources: &HashMap<Frame, String>,
) -> io::Result<()> {
    for f in tb {
        writeln!(w, "  File \"{}\", line {}", clean(&f.file), f.line)?;
        if let Some(l) = sources.get(f) {
            writeln!(w, "    {}", clean(l))?;
        }
    }
    Ok(())
}

pub fn write_summary(w: &mut dyn Write, s: &TraceSummary, _text: Text) -> io::Result<()> {
    writeln!(w, "tracemalloc: {}", state_line(&s.tracemalloc))?;
    writeln!(
        w,
        "statistics('{}'{}): {} groups{}",
        s.by.name(),
        if s.cumulative {
            ", cumulative=True"
        } else {
            ""
        },
        s.groups,
        if (s.traces.len() as u64) < s.groups {
            format!(", the top {}", s.traces.len())
        } else {
            String::new()
        }
    )?;
    for st in &s.traces {
        writeln!(w, "{}", clean(&stat_line(st)))?;
        if s.by == crate::analysis::traces::Key::Traceback {
            frames_text(w, &st.traceback, &s.sources)?;
        }
        if !st.types.is_empty() {
            writeln!(w, "    {}", types_text(&st.types, false))?;
        }
    }
    Ok(())
}

pub fn write_diff(w: &mut dyn Write, d: &TraceDiff, _text: Text) -> io::Result<()> {
    writeln!(w, "tracemalloc old: {}", state_line(&d.old))?;
    writeln!(w, "tracemalloc new: {}", state_line(&d.new))?;
    writeln!(
        w,
        "compare_to('{}'{}): {} groups{}",
        d.by.name(),
        if d.cumulative {
            ", cumulative=True"
        } else {
            ""
        },
        d.groups,
        if (d.traces.len() as u64) < d.groups {
            format!(", the top {}", d.traces.len())
        } else {
            String::new()
        }
    )?;
    let none = HashMap::new();
    for st in &d.traces {
        writeln!(w, "{}", clean(&diff_line(st)))?;
        if d.by == crate::analysis::traces::Key::Traceback {
            frames_text(w, &st.traceback, &none)?;
        }
        if !st.types.is_empty() {
            writeln!(w, "    new: {}", types_text(&st.types, false))?;
        }
    }
    Ok(())
}
