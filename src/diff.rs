//! `coreheap diff OLD NEW`: what accumulated between two cores, as plain data.
//!
//! Both cores are analysed (in parallel, one thread each) and their censuses joined by
//! type name — so cores of two runs, or of different builds, still compare. Samples of the
//! growing types come from the new core, preferring objects that were not already there (no
//! object of that type at the same address in the old core): the ones that accumulated.

use crate::addr::Addr;
use crate::error::{Diagnostic, Result};
use crate::models::{CpythonModel, GlibcModel};
use crate::objects::ObjectEntry;
use crate::process::Process;
use crate::summary::{analyze_with, summary, Analysis};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Serialize)]
pub struct TypeDelta {
    pub name: String,
    pub count_old: u64,
    pub count_new: u64,
    pub count_delta: i64,
    pub bytes_old: u64,
    pub bytes_new: u64,
    pub bytes_delta: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeDelta {
    pub allocator: &'static str,
    pub size: u64,
    pub count_old: u64,
    pub count_new: u64,
    pub count_delta: i64,
    pub bytes_delta: i64,
}

#[derive(Debug, Serialize)]
pub struct Diff {
    pub types: Vec<TypeDelta>,
    pub size_classes: Vec<SizeDelta>,
    pub samples: BTreeMap<String, Vec<ObjectEntry>>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Types whose samples are shown, and samples per type.
const SAMPLED_TYPES: usize = 5;
const SAMPLES: usize = 3;

fn d(a: u64, b: u64) -> i64 {
    b as i64 - a as i64
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
pub fn analyze_pair(
    old: &Process,
    new: &Process,
    g: &[GlibcModel],
    c: &[CpythonModel],
    progress: &dyn crate::progress::Progress,
) -> Result<(Analysis, Analysis)> {
    std::thread::scope(|s| {
        let h = s.spawn(|| analyze_with(old, g, c, progress));
        let b = analyze_with(new, g, c, progress);
        let a = h.join().expect("analysis thread panicked");
        Ok((a?, b?))
    })
}

pub fn diff(old: &Process, new: &Process, a: &Analysis, b: &Analysis, c: &[CpythonModel]) -> Diff {
    let mut diagnostics = same_build(old, new);
    for (tag, an) in [("old", a), ("new", b)] {
        diagnostics.extend(an.diagnostics.iter().map(|x| {
            let mut x = x.clone();
            x.message = format!("{tag} core: {}", x.message);
            x
        }));
    }
    let (sa, sb) = (summary(a), summary(b));
    let mut types: BTreeMap<&str, (u64, u64, u64, u64)> = BTreeMap::new();
    for t in &sa.types {
        let e = types.entry(&t.name).or_default();
        e.0 = t.count;
        e.2 = t.bytes;
    }
    for t in &sb.types {
        let e = types.entry(&t.name).or_default();
        e.1 = t.count;
        e.3 = t.bytes;
    }
    let mut types: Vec<TypeDelta> = types
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
    types.sort_by(|x, y| {
        y.bytes_delta
            .cmp(&x.bytes_delta)
            .then_with(|| x.name.cmp(&y.name))
    });

    let mut sizes: BTreeMap<(&'static str, u64), (u64, u64, u64, u64)> = BTreeMap::new();
    for s in &sa.size_classes {
        let e = sizes.entry((s.allocator, s.size)).or_default();
        e.0 = s.count;
        e.2 = s.bytes;
    }
    for s in &sb.size_classes {
        let e = sizes.entry((s.allocator, s.size)).or_default();
        e.1 = s.count;
        e.3 = s.bytes;
    }
    let mut size_classes: Vec<SizeDelta> = sizes
        .into_iter()
        .map(|((allocator, size), (co, cn, bo, bn))| SizeDelta {
            allocator,
            size,
            count_old: co,
            count_new: cn,
            count_delta: d(co, cn),
            bytes_delta: d(bo, bn),
        })
        .collect();
    size_classes.sort_by(|x, y| y.bytes_delta.cmp(&x.bytes_delta).then(x.size.cmp(&y.size)));

    // Samples from the new core for the top growing object types.
    let mut samples = BTreeMap::new();
    if let (Some(cb), Some(model)) = (&b.census, crate::python::model_for(new, c)) {
        if let Some(typer) = crate::python::objects::Typer::new(new, model) {
            let sampled: Vec<&TypeDelta> = types
                .iter()
                .filter(|t| t.bytes_delta > 0 && !t.name.starts_with('<'))
                .take(SAMPLED_TYPES)
                .collect();
            let old = a.census.as_ref();
            // The old objects are two address-sorted runs (pymalloc blocks, glibc chunks).
            let old_objs = old.map(|c| c.objects.as_slice()).unwrap_or(&[]);
            let split = old_objs
                .windows(2)
                .position(|w| w[1].addr < w[0].addr)
                .map(|i| i + 1)
                .unwrap_or(old_objs.len());
            let (run1, run2) = old_objs.split_at(split);
            let was_there = |addr: Addr, name: &str| {
                [run1, run2].iter().any(|run| {
                    run.binary_search_by_key(&addr, |o| o.addr)
                        .ok()
                        .is_some_and(|i| old.is_some_and(|c| c.type_of(&run[i]).name == name))
                })
            };
            for t in sampled {
                let wanted: Vec<bool> = cb.type_infos.iter().map(|ti| ti.name == t.name).collect();
                let mut fresh = Vec::new();
                let mut seen = Vec::new();
                for o in cb.objects.iter().filter(|o| wanted[o.ty as usize]) {
                    if !was_there(o.addr, &t.name) {
                        fresh.push(*o);
                        if fresh.len() >= SAMPLES {
                            break;
                        }
                    } else if seen.len() < SAMPLES {
                        seen.push(*o);
                    }
                }
                fresh.extend(seen);
                let list: Vec<ObjectEntry> = fresh
                    .into_iter()
                    .take(SAMPLES)
                    .map(|o| {
                        let ty = cb.type_of(&o);
                        ObjectEntry {
                            address: o.addr,
                            type_name: ty.name.clone(),
                            size: o.alloc as u64,
                            preview: typer.preview(o.addr.0, ty),
                        }
                    })
                    .collect();
                samples.insert(t.name.clone(), list);
            }
        }
    }
    Diff {
        types,
        size_classes,
        samples,
        diagnostics,
    }
}
