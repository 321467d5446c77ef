//! `coreheap summary --by filename|lineno|traceback` and `diff --by ...`: tracemalloc's
//! `Snapshot.statistics()` and `Snapshot.compare_to()` reproduced from the traces a core
//! holds, and each group's blocks typed by the census.
//!
//! Grouping, sums and order follow Lib/tracemalloc.py (`Snapshot._group_by`,
//! `statistics`, `_compare_grouped_stats`; identical 3.8–3.14 but for the 3.8 trace
//! tuples): 'traceback' keys are the whole frame tuple, 'lineno' the most recent frame,
//! 'filename' the most recent frame's file with line 0; cumulative adds every frame of a
//! trace to its own key (several times for a recursion). Statistics sort descending by
//! (size, count, traceback), diffs by (|size_diff|, size, |count_diff|, count, traceback);
//! tracebacks compare as tuples of (filename, lineno), oldest frame first.

use super::{Analysis, Limits};
use crate::error::{Diagnostic, Diagnostics, Error, Result};
use crate::image::version::detect_python;
use crate::models::{CpythonModel, Version};
use crate::python::containers::Buffer;
use crate::python::tracemalloc::{self, Recovered, State, Trace, Traces};
use serde::Serialize;
use std::collections::HashMap;

/// tracemalloc's `key_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Key {
    Filename,
    Lineno,
    Traceback,
}

impl Key {
    pub fn name(self) -> &'static str {
        match self {
            Key::Filename => "filename",
            Key::Lineno => "lineno",
            Key::Traceback => "traceback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct Frame {
    pub file: String,
    pub line: u32,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TypeCount {
    pub name: String,
    pub count: u64,
}

/// One `Statistic`: the traceback oldest frame first ("most recent call last").
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Stat {
    pub traceback: Vec<Frame>,
    pub size: u64,
    pub count: u64,
    /// What the group's blocks are, by the census (most first).
    pub types: Vec<TypeCount>,
}

/// One `StatisticDiff`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StatDiff {
    pub traceback: Vec<Frame>,
    pub size: u64,
    pub size_delta: i64,
    pub count: u64,
    pub count_delta: i64,
    pub types: Vec<TypeCount>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TraceSummary {
    pub by: Key,
    pub cumulative: bool,
    pub tracemalloc: State,
    /// Groups before the cut to `--top`.
    pub groups: u64,
    pub traces: Vec<Stat>,
    pub diagnostics: Diagnostics,
    /// Source lines of the shown frames whose files are readable here (as linecache
    /// would show them), for the text of `--by traceback`.
    #[serde(skip)]
    pub sources: HashMap<Frame, String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TraceDiff {
    pub by: Key,
    pub cumulative: bool,
    pub old: State,
    pub new: State,
    pub groups: u64,
    pub traces: Vec<StatDiff>,
    pub diagnostics: Diagnostics,
}

/// The CPython model for this core's interpreter: the one covering its version, else the
/// nearest with a tracemalloc layout.
fn model_for<'m>(p: &crate::Process, models: &'m [CpythonModel]) -> Option<&'m CpythonModel> {
    let py = detect_python(p)?;
    let v = py.version.as_deref().and_then(Version::parse);
    let mut with = models.iter().filter(|m| m.tracemalloc.is_some());
    match v {
        Some(v) => crate::models::nearest(with, v),
        None => with.next_back(),
    }
}

/// Every trace of a core, without the allocator walks (for tests and benchmarks).
pub fn recover_process(p: &crate::Process, models: &[CpythonModel]) -> Result<Recovered> {
    let py =
        detect_python(p).ok_or_else(|| Error::Unsupported("no CPython in this core".into()))?;
    let m = model_for(p, models)
        .ok_or_else(|| Error::Unsupported("no tracemalloc layout for this CPython".into()))?;
    tracemalloc::recover(p, &py, m, true).map_err(Error::Unsupported)
}

/// tracemalloc's state for `info` (no walk of the traces when the counters are known).
pub fn state(p: &crate::Process, models: &[CpythonModel]) -> Option<(State, Diagnostics)> {
    let py = detect_python(p)?;
    let m = model_for(p, models)?;
    let r = tracemalloc::recover(p, &py, m, true).ok()?;
    Some((r.state, r.traces.diagnostics))
}

/// Every trace of the analysed core; an error (exit 2) when it was not tracing.
pub fn recover(a: &Analysis) -> Result<Recovered> {
    let p = a.process;
    let py = a
        .pymalloc
        .as_ref()
        .and_then(|h| h.python.clone())
        .or_else(|| detect_python(p))
        .ok_or_else(|| {
            Error::Unsupported("no CPython in this core: tracemalloc views need one".into())
        })?;
    let model = a
        .cpython_model
        .filter(|m| m.tracemalloc.is_some())
        .ok_or_else(|| Error::Unsupported("no tracemalloc layout for this CPython".into()))?;
    let r = tracemalloc::recover(p, &py, model, true).map_err(Error::Unsupported)?;
    if !r.state.tracing {
        return Err(Error::Unsupported(
            "this process was not tracing with tracemalloc, so its core holds no traces: start it with PYTHONTRACEMALLOC=N (or python -X tracemalloc=N) for the --by filename|lineno|traceback views".into(),
        ));
    }
    Ok(r)
}

/// The grouping key of one traceback, as (filename index, line), or per frame (cumulative).
fn keys_of(t: &Traces, tb: u32, key: Key, cumulative: bool, out: &mut Vec<Vec<(u32, u32)>>) {
    out.clear();
    let frames = &t.tracebacks[tb as usize].frames;
    if cumulative {
        for &(f, l) in frames {
            out.push(vec![if key == Key::Filename { (f, 0) } else { (f, l) }]);
        }
        return;
    }
    out.push(match key {
        Key::Traceback => frames.clone(),
        Key::Lineno => vec![frames[0]],
        Key::Filename => vec![(frames[0].0, 0)],
    });
}

/// Groups by key (frames most recent first): size, count and the traces' indices when
/// `members`.
struct Grouped {
    groups: HashMap<GroupKey, GroupValue>,
}

/// A group's key: (file, line) ids, most recent frame first.
type GroupKey = Vec<(u32, u32)>;
/// A group's size, count and members.
type GroupValue = (u64, u64, Vec<u32>);

fn group(
    t: &Traces,
    key: Key,
    cumulative: bool,
    keep: &dyn Fn(&Trace) -> bool,
    members: bool,
) -> Grouped {
    // Sum per traceback first (there are far fewer tracebacks than traces).
    let mut per_tb: Vec<(u64, u64)> = vec![(0, 0); t.tracebacks.len()];
    let mut idx: Vec<Vec<u32>> = if members {
        vec![Vec::new(); t.tracebacks.len()]
    } else {
        Vec::new()
    };
    for (i, tr) in t.traces.iter().enumerate() {
        if !keep(tr) {
            continue;
        }
        let e = &mut per_tb[tr.traceback as usize];
        // Sizes are read from the core: a damaged one must not overflow the sums (size_t
        // arithmetic, as tracemalloc's own counters wrap).
        e.0 = e.0.wrapping_add(tr.size);
        e.1 += 1;
        if members {
            idx[tr.traceback as usize].push(i as u32);
        }
    }
    let mut groups: HashMap<GroupKey, GroupValue> = HashMap::new();
    let mut ks = Vec::new();
    for (tb, &(size, count)) in per_tb.iter().enumerate() {
        if count == 0 {
            continue;
        }
        keys_of(t, tb as u32, key, cumulative, &mut ks);
        for k in ks.drain(..) {
            let g = groups.entry(k).or_default();
            g.0 = g.0.wrapping_add(size);
            g.1 += count;
            if members {
                g.2.extend_from_slice(&idx[tb]);
            }
        }
    }
    Grouped { groups }
}

/// Frames oldest first, as `Traceback` holds them.
fn frames_of(t: &Traces, k: &[(u32, u32)]) -> Vec<Frame> {
    k.iter()
        .rev()
        .map(|&(f, l)| Frame {
            file: t.filenames[f as usize].clone(),
            line: l,
        })
        .collect()
}

/// `snapshot.statistics(key, cumulative)` over the traces `keep` accepts, in
/// tracemalloc's order, without types.
pub fn statistics(
    t: &Traces,
    key: Key,
    cumulative: bool,
    keep: &dyn Fn(&Trace) -> bool,
) -> Vec<Stat> {
    let g = group(t, key, cumulative, keep, false);
    let mut out: Vec<Stat> = g
        .groups
        .iter()
        .map(|(k, v)| Stat {
            traceback: frames_of(t, k),
            size: v.0,
            count: v.1,
            types: Vec::new(),
        })
        .collect();
    sort_stats(&mut out);
    out
}

fn sort_stats(v: &mut [Stat]) {
    v.sort_by(|a, b| (b.size, b.count, &b.traceback).cmp(&(a.size, a.count, &a.traceback)));
}

/// `new.compare_to(old, key, cumulative)`, in tracemalloc's order.
pub fn compare(old: &[Stat], new: &[Stat]) -> Vec<StatDiff> {
    let mut old_by: HashMap<&Vec<Frame>, &Stat> = old.iter().map(|s| (&s.traceback, s)).collect();
    let mut out = Vec::with_capacity(new.len());
    for s in new {
        let (sd, cd) = match old_by.remove(&s.traceback) {
            Some(p) => (
                (s.size as i64).wrapping_sub(p.size as i64),
                (s.count as i64).wrapping_sub(p.count as i64),
            ),
            None => (s.size as i64, s.count as i64),
        };
        out.push(StatDiff {
            traceback: s.traceback.clone(),
            size: s.size,
            size_delta: sd,
            count: s.count,
            count_delta: cd,
            types: s.types.clone(),
        });
    }
    for s in old {
        if old_by.contains_key(&s.traceback) {
            out.push(StatDiff {
                traceback: s.traceback.clone(),
                size: 0,
                size_delta: (s.size as i64).wrapping_neg(),
                count: 0,
                count_delta: -(s.count as i64),
                types: Vec::new(),
            });
        }
    }
    out.sort_by(|a, b| {
        (
            b.size_delta.unsigned_abs(),
            b.size,
            b.count_delta.unsigned_abs(),
            b.count,
            &b.traceback,
        )
            .cmp(&(
                a.size_delta.unsigned_abs(),
                a.size,
                a.count_delta.unsigned_abs(),
                a.count,
                &a.traceback,
            ))
    });
    out
}

/// Block start → type name, from the census: objects at their pre-header offset (GC head
/// 16, plus 16 for a managed dict/weakref pre-header), the buffers objects own (list
/// items, dict keys and values, set tables), and every other live block untyped.
struct BlockTypes {
    /// Sorted (block start, name index).
    blocks: Vec<(u64, u32)>,
    names: Vec<String>,
}

impl BlockTypes {
    fn new(a: &Analysis) -> Option<BlockTypes> {
        let (c, typer) = a.python().ok()?;
        let model = a.cpython_model?;
        let mut names: Vec<String> = c.type_infos.iter().map(|t| t.name.clone()).collect();
        let fixed = |names: &mut Vec<String>, n: &str| {
            names.push(n.to_string());
            (names.len() - 1) as u32
        };
        let up = fixed(&mut names, super::census::UNTYPED_PYMALLOC);
        let ug = fixed(&mut names, super::census::UNTYPED_GLIBC);
        let li = fixed(&mut names, super::census::LIST_ITEMS);
        let dk = fixed(&mut names, super::census::DICT_KEYS);
        let dv = fixed(&mut names, super::census::DICT_VALUES);
        let st = fixed(&mut names, super::census::SET_TABLE);
        let native = names.len() as u32;
        names.extend(typer.native_rows().iter().cloned());
        let objects = a.objects().ok()?;
        let mut objs: Vec<(u64, u32)> = Vec::with_capacity(objects.len());
        let mut owned: Vec<(u64, u32)> = Vec::new();
        for o in objects {
            let ti = c.type_of(o);
            let gc = if ti.flags & (1 << 14) != 0 { 16 } else { 0 };
            let pre = if ti.flags & model.objects.preheader_flags != 0 {
                16
            } else {
                0
            };
            objs.push((o.addr.0 - gc - pre, o.ty));
            // The census's owned buffers (census::scan), named by its rows.
            typer.owned_buffers(o.addr.0, ti, |p, b| {
                let name = match b {
                    Buffer::ListItems => li,
                    Buffer::DictKeys => dk,
                    Buffer::DictValues => dv,
                    Buffer::SetTable => st,
                    Buffer::Native(r) => native + r,
                };
                owned.push((p, name));
            });
        }
        objs.sort_unstable();
        owned.sort_unstable();
        let mut blocks: Vec<(u64, u32)> = Vec::new();
        let mut push = |b: u64, pm: bool| {
            let name = match objs.binary_search_by_key(&b, |x| x.0) {
                Ok(i) => objs[i].1,
                Err(_) => match owned.binary_search_by_key(&b, |x| x.0) {
                    Ok(i) => owned[i].1,
                    Err(_) if pm => up,
                    Err(_) => ug,
                },
            };
            blocks.push((b, name));
        };
        if let Some(py) = &a.pymalloc {
            for b in py.blocks() {
                push(b.addr.0, true);
            }
        }
        if let Some(g) = &a.glibc {
            for ch in g.live() {
                push(ch.user().0, false);
            }
        }
        blocks.sort_unstable();
        Some(BlockTypes { blocks, names })
    }

    fn of(&self, addr: u64) -> Option<u32> {
        self.blocks
            .binary_search_by_key(&addr, |x| x.0)
            .ok()
            .map(|i| self.blocks[i].1)
    }
}

fn types_of(bt: &BlockTypes, t: &Traces, members: &[u32], dead: &mut u64) -> Vec<TypeCount> {
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for &i in members {
        let tr = &t.traces[i as usize];
        match bt.of(tr.addr) {
            Some(n) => *counts.entry(n).or_default() += 1,
            None => {
                if tr.domain == 0 {
                    *dead += 1;
                }
            }
        }
    }
    let mut v: Vec<TypeCount> = counts
        .into_iter()
        .map(|(n, count)| TypeCount {
            name: bt.names[n as usize].clone(),
            count,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    v
}

/// Stats of `r` with the census's types, in tracemalloc's order, and how many domain-0
/// traces name no live block.
fn typed_stats(a: &Analysis, r: &Traces, key: Key, cumulative: bool) -> (Vec<Stat>, Diagnostics) {
    let mut diags = Diagnostics::default();
    let bt = BlockTypes::new(a);
    let g = group(r, key, cumulative, &|_| true, bt.is_some());
    let mut dead = 0u64;
    let mut out: Vec<Stat> = g
        .groups
        .iter()
        .map(|(k, v)| Stat {
            traceback: frames_of(r, k),
            size: v.0,
            count: v.1,
            types: bt
                .as_ref()
                .map(|bt| types_of(bt, r, &v.2, &mut dead))
                .unwrap_or_default(),
        })
        .collect();
    sort_stats(&mut out);
    if dead > 0 && !cumulative {
        diags.push(Diagnostic::warning(format!(
            "tracemalloc: {dead} traces name no live pymalloc block or glibc chunk (their blocks are freed or not walked)"
        )));
    }
    (out, diags)
}

pub fn summary(a: &Analysis, key: Key, cumulative: bool, limits: &Limits) -> Result<TraceSummary> {
    check_key(key, cumulative)?;
    let r = recover(a)?;
    let (mut stats, d) = typed_stats(a, &r.traces, key, cumulative);
    let mut diagnostics = a.diagnostics.clone();
    diagnostics.merge(&r.traces.diagnostics);
    diagnostics.merge(&d);
    let groups = stats.len() as u64;
    limits.cut(&mut stats);
    let sources = if key == Key::Traceback {
        source_lines(stats.iter().flat_map(|s| s.traceback.iter()))
    } else {
        HashMap::new()
    };
    Ok(TraceSummary {
        by: key,
        cumulative,
        tracemalloc: r.state,
        groups,
        traces: stats,
        diagnostics,
        sources,
    })
}

/// The stripped source line of each frame whose file is readable (at most 1 MiB files).
fn source_lines<'f>(frames: impl Iterator<Item = &'f Frame>) -> HashMap<Frame, String> {
    let mut files: HashMap<&str, Option<Vec<String>>> = HashMap::new();
    let mut out = HashMap::new();
    for f in frames {
        let lines = files.entry(f.file.as_str()).or_insert_with(|| {
            let p = std::path::Path::new(&f.file);
            let ok = std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= 1 << 20);
            ok.then(|| std::fs::read(p).ok()).flatten().map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .map(|l| l.trim().to_string())
                    .collect()
            })
        });
        if let Some(l) = lines
            .as_ref()
            .and_then(|v| v.get((f.line as usize).wrapping_sub(1)))
        {
            if !l.is_empty() {
                out.insert(f.clone(), l.clone());
            }
        }
    }
    out
}

fn check_key(key: Key, cumulative: bool) -> Result<()> {
    if cumulative && key == Key::Traceback {
        return Err(Error::Usage(
            "--cumulative works with --by lineno or --by filename (as in tracemalloc)".into(),
        ));
    }
    Ok(())
}

pub fn diff(
    old: &Analysis,
    new: &Analysis,
    key: Key,
    cumulative: bool,
    limits: &Limits,
) -> Result<TraceDiff> {
    check_key(key, cumulative)?;
    let ro = recover(old)?;
    let rn = recover(new)?;
    let so = statistics(&ro.traces, key, cumulative, &|_| true);
    let (sn, d) = typed_stats(new, &rn.traces, key, cumulative);
    let mut out = compare(&so, &sn);
    let mut diagnostics = old.diagnostics.prefixed("old: ");
    diagnostics.merge(&new.diagnostics.prefixed("new: "));
    diagnostics.merge(&ro.traces.diagnostics.prefixed("old: "));
    diagnostics.merge(&rn.traces.diagnostics.prefixed("new: "));
    diagnostics.merge(&d);
    let groups = out.len() as u64;
    limits.cut(&mut out);
    Ok(TraceDiff {
        by: key,
        cumulative,
        old: ro.state,
        new: rn.state,
        groups,
        traces: out,
        diagnostics,
    })
}

/// tracemalloc's `_format_size(size, sign)`: B below 10 KiB, then KiB, MiB, ... with one
/// decimal below 100 (Lib/tracemalloc.py).
pub fn format_size(size: f64, sign: bool) -> String {
    let mut size = size;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if size.abs() < 100.0 && unit != "B" {
            return if sign {
                format!("{}{:.1} {unit}", if size >= 0.0 { "+" } else { "" }, size)
            } else {
                format!("{size:.1} {unit}")
            };
        }
        if size.abs() < 10.0 * 1024.0 || unit == "TiB" {
            return if sign {
                format!("{}{:.0} {unit}", if size >= 0.0 { "+" } else { "" }, size)
            } else {
                format!("{size:.0} {unit}")
            };
        }
        size /= 1024.0;
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_tracemalloc_formats_them() {
        assert_eq!(format_size(0.0, false), "0 B");
        assert_eq!(format_size(10239.0, false), "10239 B");
        assert_eq!(format_size(10240.0, false), "10.0 KiB");
        assert_eq!(format_size(370688.0, false), "362 KiB");
        assert_eq!(format_size(85401.6, false), "83.4 KiB");
        assert_eq!(format_size(-2048.0, true), "-2048 B");
        assert_eq!(format_size(2048.0, true), "+2048 B");
        // %.0f rounds half to even, as Python's does.
        assert_eq!(format_size(322.5, false), "322 B");
        assert_eq!(format_size(323.5, false), "324 B");
    }
}
