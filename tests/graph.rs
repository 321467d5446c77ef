//! The object graph against the ownership truth py_graph's process wrote about itself:
//! for each named holder the per-type counts of the objects reachable only through it
//! (its own dominator computation over gc.get_referents), `why` on a marked object, and
//! `leaks` (K uncollected cycles, M objects with a raised refcount). The committed leak
//! pair checks `diff --by owner` with a plain `cargo test`.

use crate::corpus::{self, Case};
use coreheap::analysis::{leaks, owner_diff, ownership, why, Analysis, Limits};
use coreheap::progress::NoProgress;
use serde_json::Value;
use std::collections::BTreeMap;

fn counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

fn check_graph(case: &Case) -> Vec<String> {
    let p = corpus::open(case);
    let a = Analysis::run(&p, crate::census::models(), &NoProgress).unwrap();
    let t = corpus::truth(case);
    let mut bad = Vec::new();
    let (c, _) = a.python().unwrap();
    let g = a.graph().unwrap();
    let named = ownership::named_owners(&a, g);
    for o in t["owners"].as_array().unwrap() {
        let name = o["owner"].as_str().unwrap();
        let addr = o["address"].as_u64().unwrap();
        let Some(node) = g.node_of(c, addr) else {
            bad.push(format!("{}: {name}: no object at 0x{addr:x}", case.name));
            continue;
        };
        let got: BTreeMap<String, u64> = ownership::type_shares(c, g, &[node])[0]
            .iter()
            .map(|s| (s.name.clone(), s.count))
            .collect();
        let want = counts(&o["types"]);
        if got != want {
            bad.push(format!(
                "{}: {name}: retained {got:?}, the process says {want:?}",
                case.name
            ));
        }
        // Module globals, class attributes and thread frame locals are named owners of
        // that object.
        if !named.iter().any(|n| n.name == name && n.node == node) {
            bad.push(format!("{}: {name} is not a named owner", case.name));
        }
    }
    for m in t["marked"].as_array().unwrap() {
        let owner = m["owner"].as_str().unwrap();
        let target = m["target"].as_u64().unwrap();
        let y = why::why(&a, &why::Target::Address(target), 1, None).unwrap();
        let path = &y.paths[0];
        let steps: Vec<u64> = path.steps.iter().map(|s| s.address.0).collect();
        let chain: Vec<u64> = m["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        if !steps.ends_with(&chain) {
            bad.push(format!(
                "{}: why 0x{target:x}: steps {steps:x?} do not end with the chain {chain:x?}",
                case.name
            ));
        }
        let root = path.root.as_ref().map(|r| r.name.as_str());
        if root != Some(owner) {
            bad.push(format!(
                "{}: why 0x{target:x}: root {root:?}, the process says {owner}",
                case.name
            ));
        }
    }
    let l = leaks::leaks(&a, 2).unwrap();
    let got: BTreeMap<String, u64> = l
        .unreachable
        .types
        .iter()
        .map(|t| (t.name.clone(), t.count))
        .collect();
    let want = counts(&t["cycles"]["types"]);
    if got != want {
        bad.push(format!(
            "{}: unreachable {got:?}, the process made {want:?}",
            case.name
        ));
    }
    // The scenario's objects exactly. The interpreter may leak references of its own:
    // CPython 3.8.18's `sys` and `_warnings` modules have 2 and 1 more references than
    // gc.get_referrers finds in a bare interpreter, with no pointer to them anywhere
    // (measured); at most two such objects are tolerated, and named.
    let (mine, other): (Vec<_>, Vec<_>) = l
        .refcount_excess
        .types
        .iter()
        .partition(|t| t.name.starts_with("__main__."));
    let got: BTreeMap<String, u64> = mine.iter().map(|t| (t.name.clone(), t.count)).collect();
    let want = counts(&t["refcount_excess"]["types"]);
    if got != want {
        bad.push(format!(
            "{}: refcount excess {got:?}, the process made {want:?}",
            case.name
        ));
    }
    if other.iter().map(|t| t.count).sum::<u64>() > 2 {
        bad.push(format!(
            "{}: refcount excess of the interpreter's own objects: {other:?}",
            case.name
        ));
    }
    bad
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_graph_matches_process_ownership() {
    let cases = corpus::fresh_cases();
    // No silent pass: a corpus generated before py_graph joined the default scenarios
    // must be regenerated.
    assert!(
        cases.iter().any(|c| c.scenario == "py_graph"),
        "no py_graph cases in this corpus: regenerate it (tests/run-all)"
    );
    corpus::check_cases(cases, "py_graph", |c| c.scenario == "py_graph", check_graph);
}

/// Core `side` ('A' or 'B') of the committed reference leak pair.
fn leak_case(cases: &[Case], side: char) -> &Case {
    cases
        .iter()
        .find(|c| c.scenario == "py_leak" && c.name.ends_with(side))
        .expect("the reference leak pair")
}

/// The reference leak pair: the registry first, its retained count grown by the objects
/// of the requests served between the cores, innocent churn at 0.
#[test]
fn reference_leak_pair_diff_by_owner() {
    let cases = corpus::reference_cases();
    let a = leak_case(&cases, 'A');
    let b = leak_case(&cases, 'B');
    let (pa, pb) = (corpus::open(a), corpus::open(b));
    let (x, y) =
        coreheap::analysis::diff::analyze_pair(&pa, &pb, crate::census::models(), &NoProgress)
            .unwrap();
    let d = owner_diff::owner_diff(&x, &y, &Limits::default()).unwrap();
    let (ta, tb) = (corpus::truth(a), corpus::truth(b));
    let served =
        (tb["requests_served"].as_u64().unwrap() - ta["requests_served"].as_u64().unwrap()) as i64;
    let top = &d.owners[0];
    assert_eq!(top.owner, "__main__.REGISTRY", "{:?}", &d.owners[..3]);
    // Per request: the LeakedResponse, its body str, its headers dict, two header strs,
    // and its request_no int (all > 256 here).
    assert_eq!(top.retained_count_delta, 6 * served, "{top:?}");
    let lr = top
        .types
        .iter()
        .find(|t| t.name == "pyapp.models.LeakedResponse")
        .unwrap();
    assert_eq!(lr.count_delta, served);
    // Every other module global and class attribute is unchanged or churns to 0.
    for o in &d.owners[1..] {
        assert!(o.retained_bytes_delta.abs() < 4096, "{o:?}");
    }
}

/// A damaged graph: the registry list's size is garbage, a dict's keys table points
/// outside memory, a class is its own base. The graph is built from what can be read,
/// the damage is a diagnostic, and every ownership view still answers.
#[test]
fn damaged_graph_is_reported_not_a_panic() {
    use coreheap::image::core::CoreFile;
    let cases = corpus::reference_cases();
    let case = leak_case(&cases, 'B');
    let raw = zstd::decode_all(std::fs::File::open(&case.core).unwrap()).unwrap();
    let (list, dict, ty) = {
        let p = corpus::open(case);
        let a = Analysis::run(&p, crate::census::models(), &NoProgress).unwrap();
        let (c, _) = a.python().unwrap();
        let g = a.graph().unwrap();
        let reg = ownership::named_owners(&a, g)
            .into_iter()
            .find(|o| o.name == "__main__.REGISTRY")
            .unwrap();
        let list = c.objects()[reg.node as usize - 1].addr.get();
        let dict = c
            .objects()
            .iter()
            .find(|o| c.type_of(o).name == "dict")
            .unwrap()
            .addr
            .get();
        let ty = c
            .type_infos
            .iter()
            .find(|t| t.name == "pyapp.models.LeakedResponse")
            .unwrap()
            .addr
            .get();
        (list, dict, ty)
    };
    let index = CoreFile::from_bytes("index", raw.clone()).unwrap();
    let at = |a: u64| {
        let s = index
            .segments
            .iter()
            .find(|s| a >= s.vaddr.get() && a + 8 <= s.vaddr.get() + s.in_core)
            .expect("address in the core");
        (s.offset + (a - s.vaddr.get())) as usize
    };
    let mut bytes = raw;
    let mut put = |a: u64, v: u64| {
        let o = at(a);
        bytes[o..o + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(list + 0x10, 0x7fff_ffff_ffff); // ob_size
    put(dict + 0x20, 0x10); // ma_keys outside memory
    put(ty + 0x100, ty); // tp_base: the class itself
    let core = CoreFile::from_bytes("damaged", bytes).unwrap();
    let opts = coreheap::Options {
        search: coreheap::image::modules::SearchPaths {
            sysroot: case.sysroot.clone(),
            ..Default::default()
        },
        heap_models: None,
    };
    let p = coreheap::Process::from_core(core, &opts);
    let a = Analysis::run(&p, crate::census::models(), &NoProgress).unwrap();
    let g = a.graph().unwrap();
    let text: Vec<String> = g
        .diagnostics
        .to_vec()
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert!(
        text.iter()
            .any(|d| d.contains("unreadable or impossible tables")),
        "{text:?}"
    );
    let o = coreheap::analysis::owners::owners(&a, &Limits::default()).unwrap();
    // The registry's items are no longer read: it retains only itself and its array.
    let reg = o
        .owners
        .iter()
        .find(|x| x.owner == "__main__.REGISTRY")
        .unwrap();
    assert_eq!(reg.retained_count, 1, "{reg:?}");
    why::why(
        &a,
        &why::Target::Type("pyapp.models.LeakedResponse".into()),
        3,
        None,
    )
    .unwrap();
    leaks::leaks(&a, 2).unwrap();
}

/// The graph's large arrays spilled to files (`COREHEAP_SPILL_MIN=0`: every array, as a
/// 10 GB heap's are) answer exactly as in memory: the owner view, `why` and `leaks` of
/// the reference leak core, byte for byte.
#[test]
fn spilled_graph_answers_as_in_memory() {
    let cases = corpus::reference_cases();
    let a = leak_case(&cases, 'B');
    let spill = tempfile::tempdir().unwrap();
    let run = |args: &[&str], spilled: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_coreheap"));
        cmd.args(args).arg(&a.core).args(["--json", "--quiet"]);
        if spilled {
            cmd.env("COREHEAP_SPILL_MIN", "0")
                .env("COREHEAP_SPILL_DIR", spill.path());
        } else {
            cmd.env_remove("COREHEAP_SPILL_MIN");
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    for args in [
        &["summary", "--by", "owner"][..],
        &[
            "why",
            "--type",
            "pyapp.models.LeakedResponse",
            "--limit",
            "3",
        ][..],
        &["leaks"][..],
    ] {
        let (mem, file) = (run(args, false), run(args, true));
        assert!(!mem.is_empty());
        assert!(mem == file, "{args:?}: spilled output differs");
    }
    // The files are unlinked as they are made: nothing is left behind.
    assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
}

/// A spill directory without room: the arrays that do not fit stay in memory and the
/// answer is the same (a sparse file's write fault on a full disk was SIGBUS: the owner
/// view crashed with `COREHEAP_SPILL_DIR` on a full file system). The full file system is
/// a 64 KiB tmpfs in a mount namespace of its own (`unshare`, util-linux).
#[test]
fn a_full_spill_directory_keeps_arrays_in_memory() {
    let cases = corpus::reference_cases();
    let a = leak_case(&cases, 'B');
    let bin = env!("CARGO_BIN_EXE_coreheap");
    let mem = std::process::Command::new(bin)
        .args(["summary", "--by", "owner", "--json", "--quiet"])
        .arg(&a.core)
        .env_remove("COREHEAP_SPILL_MIN")
        .output()
        .unwrap();
    assert_eq!(mem.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs '{d}' && COREHEAP_SPILL_MIN=0 COREHEAP_SPILL_DIR='{d}' '{bin}' summary --by owner --json --quiet '{core}'",
        d = dir.path().display(),
        core = a.core.display(),
    );
    let full = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) runs");
    assert_eq!(
        full.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&full.stderr)
    );
    assert!(
        mem.stdout == full.stdout,
        "the output differs with a full spill directory"
    );
}
