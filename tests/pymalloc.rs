//! The pymalloc walker against `sys._debugmallocstats()` written by the process as its very
//! last step: per size class pools, blocks in use and available blocks, and the number of
//! arenas in use — exactly, on every CPython of the corpus, stripped or not.

use crate::corpus::{self, Case};
use std::collections::BTreeMap;

/// size -> (pools, blocks in use, available blocks)
type Classes = BTreeMap<u64, (u64, u64, u64)>;

/// The class table and "# arenas allocated current".
fn parse_dms(text: &str) -> (Classes, Option<u64>) {
    let mut classes = BTreeMap::new();
    let mut in_table = false;
    let mut arenas = None;
    for line in text.lines() {
        if line.starts_with("class   size") {
            in_table = true;
            continue;
        }
        if in_table {
            let f: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with("-----") {
                continue;
            }
            if f.len() == 5 && f.iter().all(|x| x.chars().all(|c| c.is_ascii_digit())) {
                let n: Vec<u64> = f.iter().map(|x| x.parse().unwrap()).collect();
                classes.insert(n[1], (n[2], n[3], n[4]));
                continue;
            }
            in_table = false;
        }
        if let Some(rest) = line.strip_prefix("# arenas allocated current") {
            let v: String = rest.chars().filter(|c| c.is_ascii_digit()).collect();
            arenas = v.parse().ok();
        }
    }
    (classes, arenas)
}

pub fn check(case: &Case) -> Vec<String> {
    let p = corpus::open(case);
    let models = coreheap::models::cpython_models(None).unwrap();
    let mut bad = Vec::new();
    let h = match coreheap::alloc::pymalloc::walk_process(&p, &models, true) {
        Ok(Some(h)) => h,
        Ok(None) => return vec![format!("{}: no CPython found", case.name)],
        Err(e) => return vec![format!("{}: {e}", case.name)],
    };
    let dms = std::fs::read_to_string(case.dms.as_ref().expect("debugmallocstats file")).unwrap();
    let (want, arenas) = parse_dms(&dms);
    assert!(
        !want.is_empty(),
        "{}: no class table in debugmallocstats",
        case.name
    );
    let got: Classes = h
        .size_classes
        .iter()
        .filter(|c| c.pools > 0)
        .map(|c| (c.size, (c.pools, c.blocks_in_use, c.blocks_free)))
        .collect();
    if got != want {
        for (size, w) in &want {
            let g = got.get(size);
            if g != Some(w) {
                bad.push(format!(
                    "{}: class {size}: walker {g:?}, _debugmallocstats {w:?}",
                    case.name
                ));
            }
        }
        for (size, g) in &got {
            if !want.contains_key(size) {
                bad.push(format!(
                    "{}: class {size}: walker {g:?}, _debugmallocstats none",
                    case.name
                ));
            }
        }
    }
    if arenas != Some(h.arenas) {
        bad.push(format!(
            "{}: arenas: walker {}, _debugmallocstats {arenas:?}",
            case.name, h.arenas
        ));
    }
    // Per-arena live blocks add up to the statistics' total.
    let per_arena: u64 = h.arena_list.iter().map(|a| a.blocks_in_use).sum();
    let total: u64 = want.values().map(|v| v.1).sum();
    if per_arena != total {
        bad.push(format!(
            "{}: live blocks over arenas {per_arena}, _debugmallocstats {total}",
            case.name
        ));
    }
    // The fragmentation scenario frees 98% of a million objects in a stride: nearly every
    // arena is pinned by the 2% left (the rest hold the interpreter's own objects).
    if case.scenario == "py_frag" && h.pinned_arenas * 10 < h.arenas * 8 {
        bad.push(format!(
            "{}: only {} of {} arenas pinned",
            case.name, h.pinned_arenas, h.arenas
        ));
    }
    for d in h.diagnostics.iter() {
        bad.push(format!("{}: diagnostic: {d}", case.name));
    }
    bad
}

fn check_all(cases: Vec<Case>) {
    // py_libs runs this check in its own test (tests/libs.rs).
    corpus::check_cases(
        cases,
        "Python",
        |c| c.dms.is_some() && c.scenario != "py_libs",
        check,
    );
}

#[test]
fn reference_pymalloc_matches_debugmallocstats() {
    check_all(corpus::reference_cases());
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_pymalloc_matches_debugmallocstats() {
    check_all(corpus::fresh_cases());
}
