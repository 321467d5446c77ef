//! Native heaps (issue 13) against what the cpp_heap process wrote about itself: C++
//! classes by vtable, chap's leaked and unreferenced chunks, and `why` for the objects
//! held only from a thread's stack, a register and a static. Real cores only (tests/run-all
//! makes them in every environment, with and without DWARF, stripped and not); the
//! synthetic cases are in tests/synth.rs.

use crate::corpus::{self, Case};
use coreheap::analysis::summary::{self, By};
use coreheap::analysis::{leaks, why, Analysis, Limits, Models};
use coreheap::progress::NoProgress;
use std::collections::BTreeMap;

fn counts(v: &serde_json::Value) -> BTreeMap<String, u64> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn addr(v: &serde_json::Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn check(case: &Case) -> Vec<String> {
    let p = corpus::open(case);
    let t = corpus::truth(case);
    let models = Models::load(None).unwrap();
    let a = Analysis::run(&p, &models, &NoProgress).unwrap();
    let mut bad = Vec::new();
    let name = &case.name;

    // Every class the program made, exactly, and no class it did not make.
    let s = summary::summary(&a, By::Type, &Limits::default());
    let got: BTreeMap<String, u64> = s
        .native_types
        .iter()
        .filter(|r| r.name != "<untyped glibc>")
        .map(|r| (r.name.clone(), r.count))
        .collect();
    let mut want = counts(&t["classes"]);
    want.retain(|_, v| *v > 0);
    if got != want {
        bad.push(format!(
            "{name}: classes {got:?}, the process made {want:?}"
        ));
    }
    if s.native_types.iter().any(|r| r.allocator != "glibc") {
        bad.push(format!("{name}: a native row without allocator glibc"));
    }

    // Leaked and unreferenced: counts and classes equal the program's own.
    let l = leaks::leaks(&a, 3).unwrap();
    let n = l.native.as_ref().expect("a glibc heap");
    for (what, got, want) in [
        ("leaked", &n.leaked, &t["leaked"]),
        ("unreferenced", &n.unreferenced, &t["unreferenced"]),
    ] {
        if got.count != want["count"].as_u64().unwrap() {
            bad.push(format!(
                "{name}: {what} {}, the process says {}",
                got.count, want["count"]
            ));
        }
        let by: BTreeMap<String, u64> = got
            .types
            .iter()
            .map(|r| (r.name.clone(), r.count))
            .collect();
        if by != counts(&want["by_class"]) {
            bad.push(format!(
                "{name}: {what} by class {by:?}, the process says {}",
                want["by_class"]
            ));
        }
    }
    // The leaked samples the process named are leaked (and unreferenced as it says); the
    // held objects are anchored.
    let g = a.native().unwrap();
    let (_, unref) = g.leaked();
    for s in t["leaked_samples"].as_array().unwrap() {
        let x = addr(&s["address"]);
        match g.node_at(&a, x) {
            Some(v) if !g.anchored(v) => {
                let u = unref.binary_search(&v).is_ok();
                if u != s["unreferenced"].as_bool().unwrap() {
                    bad.push(format!(
                        "{name}: 0x{x:x} unreferenced {u}, the process says {s}"
                    ));
                }
            }
            other => bad.push(format!("{name}: leaked 0x{x:x} is {other:?} / anchored")),
        }
    }

    // What the holders retain alone (`summary --by type --retained`): the Cache its
    // vector's buffer and its entries.
    let limits = Limits {
        retained: true,
        ..Default::default()
    };
    let s = summary::summary(&a, By::Type, &limits);
    for (class, want) in counts(&t["retained_count"]) {
        let got = s
            .native_types
            .iter()
            .find(|r| r.name == class)
            .and_then(|r| r.retained_count);
        if got != Some(want) {
            bad.push(format!(
                "{name}: {class} retains {got:?} chunks, the process says {want}"
            ));
        }
    }

    // why: the stack-held object ends at its thread's stack (or registers), the
    // register-held one at its thread's registers, the static-held ones at g_cache (by
    // symbol where the binary has a .symtab).
    let stripped = case.scenario.ends_with("_s");
    for (key, kinds) in [
        ("stack_held", &["stack"][..]),
        ("register_held", &["register"][..]),
        ("static_held", &["static"][..]),
        ("static_held_entry", &["static"][..]),
    ] {
        let Some(h) = t.get(key) else {
            continue;
        };
        let x = addr(&h["address"]);
        let y = why::why(&a, &why::Target::Address(x), 1, None).unwrap();
        let path = &y.paths[0];
        let Some(root) = &path.root else {
            bad.push(format!("{name}: why {key} 0x{x:x}: no root"));
            continue;
        };
        let mut ok = kinds.contains(&root.kind.as_str()) && path.allocator == Some("glibc");
        if let Some(tid) = h.get("tid").and_then(|v| v.as_u64()) {
            ok &= root.name.starts_with(&format!("thread {tid} "));
        }
        if let Some(sym) = h.get("symbol").and_then(|v| v.as_str()) {
            ok &= if stripped {
                root.name.contains(".bss+0x")
            } else {
                root.name.starts_with(&format!("static {sym} ("))
            };
        }
        if let Some(c) = h.get("class").and_then(|v| v.as_str()) {
            ok &= path.type_name == c;
        }
        if !ok {
            bad.push(format!(
                "{name}: why {key} 0x{x:x}: {} {:?} ({})",
                path.type_name, root.name, root.kind
            ));
        }
    }
    bad
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_cpp_heap_matches_truth() {
    let cases = corpus::fresh_cases();
    // Every build of the scenario must be there: symbols, DWARF, stripped.
    for s in ["cpp_heap", "cpp_heap_g", "cpp_heap_s"] {
        assert!(
            cases.iter().any(|c| c.scenario == s),
            "no {s} cases in the corpus"
        );
    }
    corpus::check_cases(
        cases,
        "cpp_heap",
        |c| c.scenario.starts_with("cpp_heap"),
        check,
    );
}

/// chap's definitions on the C scenario: every chunk there is held (arrays in statics),
/// so nothing is leaked, and every used chunk is anchored.
#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_c_heap_has_no_native_leak() {
    corpus::check_cases(
        corpus::fresh_cases(),
        "c_heap",
        |c| c.scenario == "c_heap",
        |case| {
            let p = corpus::open(case);
            let models = Models::load(None).unwrap();
            let a = Analysis::run(&p, &models, &NoProgress).unwrap();
            let l = leaks::leaks(&a, 3).unwrap();
            let n = l.native.unwrap();
            if n.leaked.count != 0 || n.anchored.count != n.used.count {
                vec![format!(
                    "{}: {} leaked, {} of {} anchored",
                    case.name, n.leaked.count, n.anchored.count, n.used.count
                )]
            } else {
                Vec::new()
            }
        },
    );
}
