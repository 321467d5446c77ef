//! `coreheap diff OLD NEW`: what accumulated between two cores, and what shrank, as plain
//! data.
//!
//! Both cores are analysed (in parallel, one thread each) and their censuses joined by
//! type name — so cores of two runs, or of different builds, still compare. Growth and
//! shrinkage are two lists, each sorted by its bytes and cut to `--top`. Samples come from
//! the new core for the top growing types — user classes first, so a leaked class gets
//! samples even when built-in types lead by bytes — preferring objects that were not already
//! there (no object of that type at the same address in the old core).

use super::census::Obj;
use super::{Analysis, Limits, Models, ObjectEntry};
use crate::addr::Addr;
use crate::error::{Diagnostic, Diagnostics, Result};
use crate::image::process::Process;
use crate::progress::Progress;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Rows per section when `--top` is not given.
pub const DEFAULT_TOP: usize = 20;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TypeDelta {
    pub name: String,
    pub count_old: u64,
    pub count_new: u64,
    pub count_delta: i64,
    pub bytes_old: u64,
    pub bytes_new: u64,
    pub bytes_delta: i64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SizeDelta {
    pub allocator: &'static str,
    pub size: u64,
    pub count_old: u64,
    pub count_new: u64,
    pub count_delta: i64,
    pub bytes_old: u64,
    pub bytes_new: u64,
    pub bytes_delta: i64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Samples {
    pub name: String,
    pub objects: Vec<ObjectEntry>,
}

#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct DiffTotals {
    pub count_old: u64,
    pub count_new: u64,
    pub count_delta: i64,
    pub bytes_old: u64,
    pub bytes_new: u64,
    pub bytes_delta: i64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Diff {
    /// Over every type (before the cut).
    pub types_total: DiffTotals,
    /// Types that grew (bytes or count), most bytes first.
    pub types_grew: Vec<TypeDelta>,
    /// Types that shrank, most bytes lost first.
    pub types_shrank: Vec<TypeDelta>,
    pub size_classes_total: DiffTotals,
    pub size_classes_grew: Vec<SizeDelta>,
    pub size_classes_shrank: Vec<SizeDelta>,
    /// Samples of the growing types, in the order of their growth.
    pub samples: Vec<Samples>,
    pub diagnostics: Diagnostics,
}

/// b - a, saturating at the ends of i64.
fn d(a: u64, b: u64) -> i64 {
    if b >= a {
        i64::try_from(b - a).unwrap_or(i64::MAX)
    } else {
        i64::try_from(a - b).map(|x| -x).unwrap_or(i64::MIN)
    }
}

/// Warnings when the two cores do not come from the same program and libraries.
fn same_build(old: &Process, new: &Process) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let (eo, en) = (old.exe_path(), new.exe_path());
    if eo != en {
        out.push(Diagnostic::warning(format!(
            "the cores come from different executables ({} and {}); comparing by type name",
            eo.as_deref().unwrap_or("?"),
            en.as_deref().unwrap_or("?")
        )));
    }
    let ids = |p: &Process| -> HashMap<String, Option<String>> {
        p.modules
            .modules
            .iter()
            .map(|m| (m.name().to_string(), m.build_id_hex()))
            .collect()
    };
    let (io, inew) = (ids(old), ids(new));
    let mut differ: Vec<&String> = io
        .iter()
        .filter(|(n, id)| inew.get(*n).is_some_and(|j| j != *id))
        .map(|(n, _)| n)
        .collect();
    differ.sort();
    if !differ.is_empty() {
        out.push(Diagnostic::warning(format!(
            "these modules are other builds in the new core (build-ids differ): {}; comparing by type name",
            differ.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    out
}

/// Analyse both cores, one per thread.
pub fn analyze_pair<'a>(
    old: &'a Process,
    new: &'a Process,
    models: &'a Models,
    progress: &'a dyn Progress,
) -> Result<(Analysis<'a>, Analysis<'a>)> {
    std::thread::scope(|s| {
        let h = s.spawn(|| Analysis::run(old, models, progress));
        let b = Analysis::run(new, models, progress);
        let a = h.join().expect("analysis thread panicked");
        Ok((a?, b?))
    })
}

/// Split rows into (grew, shrank) by `key`, drop unchanged rows, sort each by size of the
/// change, and cut each to the limit.
fn split<T>(
    rows: Vec<T>,
    key: impl Fn(&T) -> (i64, i64),
    name: impl Fn(&T) -> String,
    limits: &Limits,
) -> (Vec<T>, Vec<T>) {
    let (mut grew, mut shrank): (Vec<T>, Vec<T>) = rows
        .into_iter()
        .filter(|r| key(r) != (0, 0))
        .partition(|r| {
            let (b, c) = key(r);
            b > 0 || (b == 0 && c > 0)
        });
    grew.sort_by(|x, y| key(y).cmp(&key(x)).then_with(|| name(x).cmp(&name(y))));
    shrank.sort_by(|x, y| key(x).cmp(&key(y)).then_with(|| name(x).cmp(&name(y))));
    let n = limits.top.unwrap_or(DEFAULT_TOP);
    grew.truncate(n);
    shrank.truncate(n);
    (grew, shrank)
}

/// A user class: a name with a module (`pkg.mod.Class`), not a built-in or a bucket.
pub fn is_user_type(name: &str) -> bool {
    !name.starts_with('<') && name.contains('.')
}

pub fn diff(a: &Analysis, b: &Analysis, limits: &Limits) -> Diff {
    let mut diagnostics = Diagnostics::default();
    diagnostics.extend(same_build(a.process, b.process));
    diagnostics.merge(&a.diagnostics.prefixed("old core: "));
    diagnostics.merge(&b.diagnostics.prefixed("new core: "));
    let empty = Vec::new();
    let ta = a.census.as_ref().map(|c| &c.types).unwrap_or(&empty);
    let tb = b.census.as_ref().map(|c| &c.types).unwrap_or(&empty);
    let mut types: BTreeMap<&str, (u64, u64, u64, u64)> = BTreeMap::new();
    for t in ta {
        let e = types.entry(&t.name).or_default();
        e.0 = t.count;
        e.2 = t.bytes;
    }
    for t in tb {
        let e = types.entry(&t.name).or_default();
        e.1 = t.count;
        e.3 = t.bytes;
    }
    let types: Vec<TypeDelta> = types
        .into_iter()
        .map(|(name, (co, cn, bo, bn))| TypeDelta {
            name: name.to_string(),
            count_old: co,
            count_new: cn,
            count_delta: d(co, cn),
            bytes_old: bo,
            bytes_new: bn,
            bytes_delta: d(bo, bn),
        })
        .collect();
    let totals = |old: u64, new: u64, cold: u64, cnew: u64| DiffTotals {
        count_old: cold,
        count_new: cnew,
        count_delta: d(cold, cnew),
        bytes_old: old,
        bytes_new: new,
        bytes_delta: d(old, new),
    };
    let types_total = totals(
        types.iter().map(|t| t.bytes_old).sum(),
        types.iter().map(|t| t.bytes_new).sum(),
        types.iter().map(|t| t.count_old).sum(),
        types.iter().map(|t| t.count_new).sum(),
    );

    let classes = |x: &Analysis| x.size_classes();
    let mut sizes: BTreeMap<(&'static str, u64), (u64, u64, u64, u64)> = BTreeMap::new();
    for s in classes(a) {
        let e = sizes.entry((s.allocator, s.size)).or_default();
        e.0 = s.count;
        e.2 = s.bytes;
    }
    for s in classes(b) {
        let e = sizes.entry((s.allocator, s.size)).or_default();
        e.1 = s.count;
        e.3 = s.bytes;
    }
    let size_rows: Vec<SizeDelta> = sizes
        .into_iter()
        .map(|((allocator, size), (co, cn, bo, bn))| SizeDelta {
            allocator,
            size,
            count_old: co,
            count_new: cn,
            count_delta: d(co, cn),
            bytes_old: bo,
            bytes_new: bn,
            bytes_delta: d(bo, bn),
        })
        .collect();
    let size_classes_total = totals(
        size_rows.iter().map(|t| t.bytes_old).sum(),
        size_rows.iter().map(|t| t.bytes_new).sum(),
        size_rows.iter().map(|t| t.count_old).sum(),
        size_rows.iter().map(|t| t.count_new).sum(),
    );

    // Which types get samples: the growing user classes first, then the rest, by growth.
    let mut growing: Vec<&TypeDelta> = types
        .iter()
        .filter(|t| t.count_delta > 0 && !t.name.starts_with('<'))
        .collect();
    growing.sort_by(|x, y| {
        is_user_type(&y.name)
            .cmp(&is_user_type(&x.name))
            .then(y.bytes_delta.cmp(&x.bytes_delta))
            .then_with(|| x.name.cmp(&y.name))
    });
    let sampled: Vec<String> = growing
        .iter()
        .take(limits.sampled_types)
        .map(|t| t.name.clone())
        .collect();
    let samples = samples_of(a, b, &sampled, limits.samples);

    let (types_grew, types_shrank) = split(
        types,
        |t| (t.bytes_delta, t.count_delta),
        |t| t.name.clone(),
        limits,
    );
    let (size_classes_grew, size_classes_shrank) = split(
        size_rows,
        |t| (t.bytes_delta, t.count_delta),
        |t| format!("{}{:020}", t.allocator, t.size),
        limits,
    );
    Diff {
        types_total,
        types_grew,
        types_shrank,
        size_classes_total,
        size_classes_grew,
        size_classes_shrank,
        samples,
        diagnostics,
    }
}

/// Up to `n` objects of each named type from the new core, new ones first.
fn samples_of(a: &Analysis, b: &Analysis, names: &[String], n: usize) -> Vec<Samples> {
    let Ok((cb, typer)) = b.python() else {
        return Vec::new();
    };
    // Was an object of this type at the same address in the old core?
    let was_there = |addr: Addr, name: &str| {
        a.object_at(addr.0).is_some_and(|o| {
            o.addr == addr
                && a.census
                    .as_ref()
                    .is_some_and(|c| c.type_of(&o).name == name)
        })
    };
    // One pass over the new core for every name: per type index, the name it samples.
    let wanted: Vec<Option<usize>> = cb
        .type_infos
        .iter()
        .map(|ti| names.iter().position(|x| x == &ti.name))
        .collect();
    let mut fresh: Vec<Vec<Obj>> = vec![Vec::new(); names.len()];
    let mut seen: Vec<Vec<Obj>> = vec![Vec::new(); names.len()];
    let mut open = names.len();
    if n > 0 && open > 0 {
        let _ = b.each_object(&mut |o| {
            let Some(k) = wanted.get(o.ty as usize).copied().flatten() else {
                return true;
            };
            if fresh[k].len() >= n {
                return true;
            }
            if !was_there(o.addr, &names[k]) {
                fresh[k].push(o);
                if fresh[k].len() == n {
                    open -= 1;
                }
            } else if seen[k].len() < n {
                seen[k].push(o);
            }
            open > 0
        });
    }
    let mut out = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let mut objs = std::mem::take(&mut fresh[k]);
        objs.append(&mut seen[k]);
        let objects: Vec<ObjectEntry> = objs
            .into_iter()
            .take(n)
            .map(|o| ObjectEntry::of(cb, typer, &o))
            .collect();
        out.push(Samples {
            name: name.clone(),
            objects,
        });
    }
    out
}
