//! `coreheap diff OLD NEW --by owner`: owners sorted by growth of retained bytes, each
//! with the types that grew under it. Owners are matched between the cores by their path
//! (module global, class attribute, thread frame), not by address.

use super::ownership::{all_owners, Owner};
use super::{Analysis, Limits};
use crate::error::{Diagnostics, Result};
use rustc_hash::FxHashMap;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TypeGrowth {
    pub name: String,
    pub count_delta: i64,
    pub bytes_delta: i64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct OwnerDelta {
    pub owner: String,
    pub kind: &'static str,
    #[serde(rename = "type")]
    pub type_name: String,
    pub retained_count_old: u64,
    pub retained_count_new: u64,
    pub retained_count_delta: i64,
    pub retained_bytes_old: u64,
    pub retained_bytes_new: u64,
    pub retained_bytes_delta: i64,
    pub types: Vec<TypeGrowth>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct OwnerDiff {
    pub owners: Vec<OwnerDelta>,
    pub diagnostics: Diagnostics,
}

/// Both analyses, each with its object graph built in its own thread (the graphs are
/// what `diff --by owner` costs).
pub fn analyze_pair<'a>(
    old: &'a crate::image::process::Process,
    new: &'a crate::image::process::Process,
    models: &'a super::Models,
    progress: &'a dyn crate::progress::Progress,
) -> Result<(Analysis<'a>, Analysis<'a>)> {
    let run = |p: &'a crate::image::process::Process| -> Result<Analysis<'a>> {
        let a = Analysis::run_for(p, models, progress, super::Needs::OWNERS)?;
        // A core without a Python heap reports that error from owner_diff.
        let _ = a.graph();
        Ok(a)
    };
    std::thread::scope(|s| {
        let h = s.spawn(|| run(old));
        let b = run(new);
        let a = h.join().expect("analysis thread panicked");
        Ok((a?, b?))
    })
}

/// Types listed per owner (largest growth first).
const TYPES: usize = 5;

pub fn owner_diff(old: &Analysis, new: &Analysis, limits: &Limits) -> Result<OwnerDiff> {
    let a = all_owners(old, None)?;
    let b = all_owners(new, None)?;
    // Native owners are named by address: matching them between processes means nothing.
    // Thread frames are matched by function and variable, not by thread id.
    let key = |o: &Owner| (o.kind != "native").then(|| path_key(o));
    let olds: FxHashMap<String, &Owner> = a
        .owners
        .iter()
        .filter_map(|o| key(o).map(|k| (k, o)))
        .collect();
    let mut seen = rustc_hash::FxHashSet::default();
    let mut out = Vec::new();
    let empty = |n: &Owner| Owner {
        retained_count: 0,
        retained_bytes: 0,
        types: Vec::new(),
        ..n.clone()
    };
    for n in b.owners.iter().filter(|o| o.kind != "native") {
        let k = path_key(n);
        let o = olds
            .get(&k)
            .map(|o| (*o).clone())
            .unwrap_or_else(|| empty(n));
        seen.insert(k);
        out.push(delta(&o, n));
    }
    for o in a
        .owners
        .iter()
        .filter(|o| o.kind != "native" && !seen.contains(&path_key(o)))
    {
        out.push(delta(o, &empty(o)));
    }
    out.sort_by(|x, y| {
        y.retained_bytes_delta
            .cmp(&x.retained_bytes_delta)
            .then_with(|| x.owner.cmp(&y.owner))
    });
    limits.cut(&mut out);
    let mut diagnostics = a.diagnostics;
    diagnostics.merge(&b.diagnostics);
    Ok(OwnerDiff {
        owners: out,
        diagnostics,
    })
}

/// An owner's path: its name, without the thread id of a thread frame.
fn path_key(o: &Owner) -> String {
    match o.owner.strip_prefix("thread ") {
        Some(rest) if o.kind == "thread frame" => match rest.split_once(" frame ") {
            Some((_, f)) => format!("thread frame {f}"),
            None => o.owner.clone(),
        },
        _ => o.owner.clone(),
    }
}

fn delta(o: &Owner, n: &Owner) -> OwnerDelta {
    let mut t: FxHashMap<&str, (i64, i64)> = FxHashMap::default();
    for x in &n.types {
        let e = t.entry(x.name.as_str()).or_default();
        e.0 += x.count as i64;
        e.1 += x.bytes as i64;
    }
    for x in &o.types {
        let e = t.entry(x.name.as_str()).or_default();
        e.0 -= x.count as i64;
        e.1 -= x.bytes as i64;
    }
    let mut types: Vec<TypeGrowth> = t
        .into_iter()
        .filter(|(_, (c, b))| *c != 0 || *b != 0)
        .map(|(name, (count_delta, bytes_delta))| TypeGrowth {
            name: name.to_string(),
            count_delta,
            bytes_delta,
        })
        .collect();
    types.sort_by(|x, y| {
        y.bytes_delta
            .cmp(&x.bytes_delta)
            .then_with(|| x.name.cmp(&y.name))
    });
    types.truncate(TYPES);
    OwnerDelta {
        owner: n.owner.clone(),
        kind: n.kind,
        type_name: n.type_name.clone(),
        retained_count_old: o.retained_count,
        retained_count_new: n.retained_count,
        retained_count_delta: n.retained_count as i64 - o.retained_count as i64,
        retained_bytes_old: o.retained_bytes,
        retained_bytes_new: n.retained_bytes,
        retained_bytes_delta: n.retained_bytes as i64 - o.retained_bytes as i64,
        types,
    }
}
