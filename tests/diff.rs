//! `diff` on the leak pairs: core A after N requests, core B after 3N. The top growing user
//! type must be the leaked class, with a count delta equal to the requests served between
//! the cores, a bytes delta that is that many objects of its size, samples that are leaked
//! objects, and innocent churn near zero. The committed reference pair is checked by a plain
//! `cargo test`; the fresh pairs of every environment by tests/run-all.

use crate::corpus::{self, Case};
use coreheap::Process;

fn pairs(cases: Vec<Case>) -> Vec<(Case, Case)> {
    let leak: Vec<Case> = cases
        .into_iter()
        .filter(|c| c.scenario == "py_leak")
        .collect();
    leak.iter()
        .filter(|c| c.name.ends_with('A'))
        .filter_map(|a| {
            let stem = a.name.trim_end_matches('A');
            leak.iter()
                .find(|b| b.name == format!("{stem}B"))
                .map(|b| (a.clone(), b.clone()))
        })
        .collect()
}

fn check(a: &Case, b: &Case) -> Vec<String> {
    let (pa, pb): (Process, Process) = (corpus::open(a), corpus::open(b));
    let models = crate::census::models();
    let (x, y) =
        coreheap::analysis::diff::analyze_pair(&pa, &pb, models, &coreheap::progress::NoProgress)
            .unwrap();
    let limits = coreheap::analysis::Limits::default();
    let d = coreheap::analysis::diff::diff(&x, &y, &limits);
    // The same pair reversed: the leak is shrinkage, listed as such.
    let r = coreheap::analysis::diff::diff(&y, &x, &limits);
    let (ta, tb) = (corpus::truth(a), corpus::truth(b));
    let served = tb["requests_served"].as_u64().unwrap() - ta["requests_served"].as_u64().unwrap();
    let mut bad = Vec::new();
    let top = d.types_grew.iter().find(|t| t.name.starts_with("pyapp."));
    match top {
        Some(t) if t.name == "pyapp.models.LeakedResponse" => {
            if t.count_delta != served as i64 {
                bad.push(format!(
                    "{}: count delta {} != requests served {served}",
                    b.name, t.count_delta
                ));
            }
            let per = t.bytes_delta / t.count_delta.max(1);
            let sizeof = tb["sizes"]["pyapp.models.LeakedResponse"].as_i64().unwrap();
            // Every leaked object costs the same allocation: sys.getsizeof's object and GC
            // head (and 3.12+ pre-header), plus the 3.11 pre-header or the 3.13+ inline
            // attribute values (a PyDictValues header and one slot per shared key), rounded
            // to pymalloc's 16 bytes.
            if t.bytes_delta % t.count_delta.max(1) != 0 || per < sizeof || per > sizeof + 64 {
                bad.push(format!(
                    "{}: bytes delta {} is not {} objects of ~{sizeof} bytes",
                    b.name, t.bytes_delta, t.count_delta
                ));
            }
        }
        other => bad.push(format!("{}: top growing user type is {other:?}", b.name)),
    }
    match d
        .samples
        .iter()
        .find(|s| s.name == "pyapp.models.LeakedResponse")
    {
        Some(s)
            if !s.objects.is_empty()
                && s.objects.iter().all(|o| o.preview.contains("request_no=")) => {}
        other => bad.push(format!("{}: samples {other:?}", b.name)),
    }
    // One process (gcore pairs): the objects of core A are still at their addresses in core B,
    // so the samples, new objects first, are of requests served after core A (request_no is
    // the request's number, 1-based).
    if ta["pid"] == tb["pid"] {
        let (from, to) = (
            ta["requests_served"].as_u64().unwrap(),
            tb["requests_served"].as_u64().unwrap(),
        );
        for s in d
            .samples
            .iter()
            .filter(|s| s.name == "pyapp.models.LeakedResponse")
        {
            for o in &s.objects {
                let no = o
                    .preview
                    .split("request_no=")
                    .nth(1)
                    .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse::<u64>().ok());
                if !no.is_some_and(|n| n > from && n <= to) {
                    bad.push(format!(
                        "{}: sample {} is not of a request after core A ({from} < n <= {to}): {}",
                        b.name, o.address, o.preview
                    ));
                }
            }
        }
    }
    match r
        .types_shrank
        .iter()
        .find(|t| t.name == "pyapp.models.LeakedResponse")
    {
        Some(t) if t.count_delta == -(served as i64) => {}
        other => bad.push(format!("{}: reversed diff shrinkage {other:?}", b.name)),
    }
    if r.types_total.bytes_delta >= 0 {
        bad.push(format!(
            "{}: reversed diff total {:?}",
            b.name, r.types_total
        ));
    }
    // Innocent churn (temporary lists, tuples) does not accumulate.
    for name in ["list", "tuple"] {
        if let Some(t) = d
            .types_grew
            .iter()
            .chain(&d.types_shrank)
            .find(|t| t.name == name)
        {
            if t.count_delta.unsigned_abs() > 50 {
                bad.push(format!(
                    "{}: churn type {name} grew by {}",
                    b.name, t.count_delta
                ));
            }
        }
    }
    bad
}

/// The committed pair (corpora/reference/bookworm/py_leak-gcore-0x33): `diff` is covered by a
/// plain `cargo test`.
#[test]
fn reference_leak_pair_shows_the_leak() {
    let ps = pairs(corpus::reference_cases());
    assert_eq!(ps.len(), 1, "reference leak pairs: {ps:?}");
    let (a, b) = &ps[0];
    let bad = check(a, b);
    assert!(
        bad.is_empty(),
        "{} problems:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_leak_pairs_show_the_leak() {
    let ps = pairs(corpus::fresh_cases());
    assert!(!ps.is_empty(), "no leak pairs");
    let mut bad = Vec::new();
    for (a, b) in &ps {
        bad.extend(check(a, b));
    }
    assert!(
        bad.is_empty(),
        "{} problems:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
