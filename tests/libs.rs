//! The py_libs scenario (numpy, pandas, SQLAlchemy, lxml, requests, asyncio, enum,
//! dataclasses, datetime, decimal, weakref ...): a real-library process against the truth it
//! wrote just before its core (corpora/scenarios/py_libs.py).
//!
//! Per core: every type of the `gc.get_objects()` census equals coreheap's (and no
//! gc-tracked phantom type), every sampled `id()` — gc-tracked or not — is an object of the
//! sampled type at that address, each untracked population (datetime.time, Decimal, numpy
//! arrays ...) is found at least as often as the scenario made it, Cython's shared types
//! carry their module (`_cython_3_1_2.cython_function_or_method`), and pymalloc still
//! matches `sys._debugmallocstats()`. All mismatches of all cores are reported at once.

use crate::corpus::{self, Case};
use crate::{census, pymalloc};
use std::collections::{BTreeMap, HashMap};

fn check(case: &Case) -> Vec<String> {
    let p = corpus::open(case);
    let a = census::analyze_process(case, &p);
    let t = corpus::truth(case);
    let mut bad = census::check_with(case, &p, &a, &t);
    let _ = a.objects();
    let Some(c) = &a.census else {
        return bad;
    };

    // Samples by address.
    let live: HashMap<u64, &str> = c
        .objects()
        .iter()
        .map(|o| (o.addr.0, c.type_of(o).name.as_str()))
        .collect();
    let free: HashMap<u64, &str> = c
        .free_objects
        .iter()
        .map(|o| (o.addr.0, c.type_of(o).name.as_str()))
        .collect();
    let mut untracked_pops: BTreeMap<&str, bool> = BTreeMap::new();
    for s in t["samples"].as_array().into_iter().flatten() {
        let addr = s["addr"].as_u64().unwrap_or(0);
        let ty = s["type"].as_str().unwrap_or("?");
        let pop = s["population"].as_str().unwrap_or("?");
        let tracked = s["tracked"].as_bool().unwrap_or(false);
        let e = untracked_pops.entry(pop).or_insert(true);
        *e &= !tracked;
        let found = match (live.get(&addr), free.get(&addr)) {
            (Some(&n), _) if n == ty => continue,
            (Some(&n), _) => format!("a live {n}"),
            (None, Some(&n)) => format!("a free-list {n}"),
            (None, None) => "no object".into(),
        };
        bad.push(format!(
            "{}: sample {pop} ({} by the gc) at {addr:#x}: {ty} expected, coreheap has {found}",
            case.name,
            if tracked { "tracked" } else { "untracked" }
        ));
    }

    // Untracked populations: at least as many objects of the type as the scenario holds.
    let counts = census::counts_by_name(&p, c);
    let mut need: BTreeMap<&str, u64> = BTreeMap::new();
    for pop in t["populations"].as_array().into_iter().flatten() {
        let name = pop["name"].as_str().unwrap_or("");
        if untracked_pops.get(name) == Some(&true) {
            *need.entry(pop["type"].as_str().unwrap_or("?")).or_default() +=
                pop["count"].as_u64().unwrap_or(0);
        }
    }
    for (ty, n) in need {
        let got = counts.get(ty).map(|x| x.0).unwrap_or(0);
        if got < n {
            bad.push(format!(
                "{}: {ty} (untracked by the gc): coreheap {got}, the scenario holds {n}",
                case.name
            ));
        }
    }

    // Cython's shared types under their module, never under the bare name.
    if let Some(cy) = t["cython_types"].as_object() {
        for name in cy.keys() {
            if !counts.contains_key(name.as_str()) {
                bad.push(format!(
                    "{}: Cython type {name}: not in coreheap's census",
                    case.name
                ));
            }
            let bare = name.split_once('.').map(|x| x.1).unwrap_or(name);
            // Cython 0.29 names its shared types bare (tp_name without a module): the
            // process's own census has those bare rows too, and only more is a loss.
            let truth_bare = t["census"][bare].as_u64().unwrap_or(0);
            if let Some(&(n, _)) = counts
                .get(bare)
                .filter(|(_, tracked)| *tracked > truth_bare)
            {
                bad.push(format!(
                    "{}: Cython type {name}: coreheap names {n} of them {bare:?}, without the module",
                    case.name
                ));
            }
        }
    }

    bad.extend(pymalloc::check(case));
    bad.sort();
    bad.dedup();
    bad
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_py_libs_census_matches_gc() {
    let cases = corpus::fresh_cases();
    // Say which libraries each core had (a library without a wheel for an interpreter is
    // left out there; the truth says so).
    for c in cases.iter().filter(|c| c.scenario == "py_libs") {
        let t = corpus::truth(c);
        eprintln!(
            "{}: python {} libraries {} missing {}",
            c.name, t["python_version"], t["libraries"], t["libraries_missing"]
        );
    }
    corpus::check_cases(cases, "py_libs", |c| c.scenario == "py_libs", check);
}
