//! Free-threaded CPython 3.13t (PEP 703) cores against the truth the process wrote:
//! the census of every type of its `gc.get_objects()` census, mimalloc's own count of live
//! blocks per heap tag and block size (corpora/scenarios/mitruth.c, through mimalloc's
//! `mi_heap_visit_blocks` and CPython's `_mi_abandoned_pool_visit_blocks`), and the leak
//! pair's `diff` and `diff --by owner`. The cores are made by `make_corpus.py generate
//! --envs ft-3.13` into $COREHEAP_CORPUS_FT (default $COREHEAP_CACHE/corpus-ft), which
//! tests/run-all does.

use crate::corpus::{self, Case};
use coreheap::analysis::{owner_diff, Analysis, Limits};
use std::collections::BTreeMap;

/// The free-threaded cases; none when tests/run-all had no trixie root to build the
/// interpreter in (COREHEAP_FT=0): then the tests pass without checking anything.
fn ft_cases() -> Vec<Case> {
    if std::env::var("COREHEAP_FT").as_deref() == Ok("0") {
        eprintln!("COREHEAP_FT=0: no free-threaded cores (no trixie root); skipped");
        return Vec::new();
    }
    corpus::cases_in("COREHEAP_CORPUS_FT", "corpus-ft", "the free-threaded cores")
}

/// `check` on each free-threaded case `keep` selects, with its analysis.
fn check_ft(keep: impl Fn(&Case) -> bool, check: impl Fn(&Case, &Analysis) -> Vec<String>) {
    let cases = ft_cases();
    if cases.is_empty() {
        return;
    }
    corpus::check_cases(cases, "free-threaded", keep, |case| {
        let p = corpus::open(case);
        let a = analyze(case, &p);
        check(case, &a)
    });
}

fn analyze<'a>(case: &Case, p: &'a coreheap::Process) -> Analysis<'a> {
    Analysis::run(p, crate::census::models(), &coreheap::progress::NoProgress)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

/// `mimalloc.txt` (or `mimalloc_A.txt`) next to the case's core: (tag, size) -> count.
fn mimalloc_truth(case: &Case) -> BTreeMap<(u8, u64), u64> {
    let core = case
        .core
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let path = case
        .core
        .with_file_name(format!("mimalloc{}.txt", core.trim_start_matches("core")));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(f.len(), 3, "{}: {line:?}", path.display());
        *m.entry((f[0] as u8, f[1])).or_default() += f[2];
    }
    m
}

/// Live blocks per (heap tag, block size) equal mimalloc's own count, exactly.
#[test]
#[ignore = "needs free-threaded cores generated on this machine: run tests/run-all"]
fn fresh_ft_live_blocks_match_mimalloc() {
    check_ft(
        |_| true,
        |case, a| {
            let Some(mi) = &a.mimalloc else {
                return vec![format!("{}: no mimalloc heap", case.name)];
            };
            let want = mimalloc_truth(case);
            let tags = coreheap::alloc::mimalloc::TAG_NAMES;
            let mut got: BTreeMap<(u8, u64), u64> = BTreeMap::new();
            for c in &mi.size_classes {
                let t = tags.iter().position(|&n| n == c.heap).unwrap_or(9) as u8;
                *got.entry((t, c.size)).or_default() += c.count;
            }
            got.retain(|_, n| *n > 0);
            let mut bad = Vec::new();
            for k in want
                .keys()
                .chain(got.keys())
                .collect::<std::collections::BTreeSet<_>>()
            {
                let (w, g) = (
                    want.get(k).copied().unwrap_or(0),
                    got.get(k).copied().unwrap_or(0),
                );
                if w != g {
                    bad.push(format!(
                        "{}: heap {} block size {}: mimalloc {w}, coreheap {g}",
                        case.name,
                        tags[k.0 as usize % 4],
                        k.1
                    ));
                }
            }
            bad
        },
    );
}

/// Every type of the gc census equals coreheap's count of its gc-tracked objects
/// (`ob_gc_bits & _PyGC_BITS_TRACKED`, the header byte at +0xb: Include/object.h,
/// pycore_gc.h), and no other type has tracked objects.
#[test]
#[ignore = "needs free-threaded cores generated on this machine: run tests/run-all"]
fn fresh_ft_census_matches_gc() {
    check_ft(
        |_| true,
        |case, a| {
            let t = corpus::truth(case);
            let Some(c) = &a.census else {
                return vec![format!("{}: no census", case.name)];
            };
            let tracked = |o: u64| {
                let mut b = [0u8; 1];
                a.process
                    .space
                    .read(coreheap::addr::Addr(o + 0xb), &mut b)
                    .is_ok()
                    && b[0] & 1 != 0
            };
            let mut got: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for o in a.objects().expect("objects") {
                let ti = c.type_of(o);
                let e = got.entry(ti.name.clone()).or_default();
                e.0 += 1;
                if ti.flags & (1 << 14) != 0 && tracked(o.addr.0) {
                    e.1 += 1;
                }
            }
            let mut bad = Vec::new();
            let census = t["census"].as_object().expect("truth census");
            for (name, want) in census {
                let want = want.as_u64().unwrap();
                let (total, tr) = got.get(name).copied().unwrap_or((0, 0));
                if tr != want {
                    bad.push(format!(
                        "{}: {name}: gc census {want}, coreheap {total} (tracked {tr})",
                        case.name
                    ));
                }
            }
            for (name, &(total, tr)) in &got {
                if tr > 0 && !census.contains_key(name) {
                    bad.push(format!(
                        "{}: {name}: gc census 0, coreheap {total} (tracked {tr})",
                        case.name
                    ));
                }
            }
            // The scenario's own classes, by their full count too.
            for (name, want) in t["expected"].as_object().into_iter().flatten() {
                let total = got.get(name).map_or(0, |g| g.0);
                if Some(total) != want.as_u64() {
                    bad.push(format!(
                        "{}: {name}: expected {want}, coreheap {total}",
                        case.name
                    ));
                }
            }
            bad
        },
    );
}

/// The leak pair: `diff` names the leaked class with the requests served between the
/// cores, and `diff --by owner` puts `__main__.REGISTRY` first with all of its growth.
#[test]
#[ignore = "needs free-threaded cores generated on this machine: run tests/run-all"]
fn fresh_ft_leak_pair_diff_names_type_and_owner() {
    let cases = ft_cases();
    if cases.is_empty() {
        return;
    }
    let leak: Vec<&Case> = cases.iter().filter(|c| c.scenario == "py_leak").collect();
    let pairs: Vec<(&Case, &Case)> = leak
        .iter()
        .filter(|c| c.name.ends_with('A'))
        .filter_map(|a| {
            let stem = a.name.trim_end_matches('A');
            leak.iter()
                .find(|b| b.name == format!("{stem}B"))
                .map(|b| (*a, *b))
        })
        .collect();
    assert!(!pairs.is_empty(), "no free-threaded leak pairs");
    let mut bad = Vec::new();
    for (a, b) in pairs {
        let (pa, pb) = (corpus::open(a), corpus::open(b));
        let models = crate::census::models();
        let (x, y) =
            owner_diff::analyze_pair(&pa, &pb, models, &coreheap::progress::NoProgress).unwrap();
        let served = corpus::truth(b)["requests_served"].as_i64().unwrap()
            - corpus::truth(a)["requests_served"].as_i64().unwrap();
        let d = coreheap::analysis::diff::diff(&x, &y, &Limits::default());
        match d.types_grew.iter().find(|t| t.name.starts_with("pyapp.")) {
            Some(t) if t.name == "pyapp.models.LeakedResponse" && t.count_delta == served => {}
            other => bad.push(format!(
                "{}: top user type {other:?}, want LeakedResponse +{served}",
                b.name
            )),
        }
        let o = owner_diff::owner_diff(&x, &y, &Limits::default()).unwrap();
        match o.owners.first() {
            // 6 objects per request: the response, its body, its headers dict and 2 of
            // its header strs, and the request number int (py_leak.py leak_per_request)
            Some(w) if w.owner == "__main__.REGISTRY" && w.retained_count_delta == 6 * served => {}
            other => bad.push(format!(
                "{}: first owner {:?}, want __main__.REGISTRY +{}",
                b.name,
                other.map(|w| (&w.owner, w.retained_count_delta)),
                6 * served
            )),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// frag, objects and stacks work on every free-threaded core.
#[test]
#[ignore = "needs free-threaded cores generated on this machine: run tests/run-all"]
fn fresh_ft_frag_objects_stacks() {
    check_ft(
        |c| c.scenario == "py_ft_threads",
        |case, a| {
            let mut bad = Vec::new();
            let f = coreheap::analysis::frag::frag(a);
            let mi = f.mimalloc.expect("frag has mimalloc");
            if mi.pages == 0 || mi.size_classes.iter().all(|c| c.heap != "gc_pre") {
                bad.push(format!(
                    "{}: frag: {} pages, no gc_pre pages",
                    case.name, mi.pages
                ));
            }
            // The main thread and the three workers each own heaps with GC_PRE objects.
            let owners = mi
                .threads
                .iter()
                .filter(|t| t.tid.is_some() && t.live_bytes[3] > 0)
                .count();
            if owners != 4 {
                bad.push(format!(
                    "{}: {owners} threads own gc_pre pages, want 4",
                    case.name
                ));
            }
            let l = coreheap::analysis::objects::objects(a, "__main__.FtItem", 3).unwrap();
            if l.count != 10000
                || !l
                    .objects
                    .iter()
                    .all(|o| o.preview.contains("label=\"item-"))
            {
                bad.push(format!(
                    "{}: objects FtItem: {} {:?}",
                    case.name, l.count, l.objects
                ));
            }
            let s = coreheap::analysis::threads::stacks(
                a.process,
                crate::census::models(),
                Default::default(),
            );
            let workers = s
                .threads
                .iter()
                .filter(|t| t.python.iter().any(|f| f.function == "worker"))
                .count();
            if workers != 3 {
                bad.push(format!(
                    "{}: stacks: {workers} threads in worker(), want 3",
                    case.name
                ));
            }
            bad
        },
    );
}
