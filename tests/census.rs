//! The object census against the truth the Python scenario wrote: every type of the
//! `gc.get_objects()` census, free-list residents against the
//! "N free PyXxxObjects" lines of `sys._debugmallocstats()`, and the large objects that
//! live in glibc chunks.

use crate::corpus::{self, Case};
use coreheap::analysis::{Analysis, Models};
use std::collections::BTreeMap;

/// The analysis of a case; the process and models are leaked (a test's lifetime).
pub fn analyze(case: &Case) -> Analysis<'static> {
    let p: &'static _ = Box::leak(Box::new(corpus::open(case)));
    Analysis::run(p, models(), &coreheap::progress::NoProgress)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

/// The built-in models, loaded once.
pub fn models() -> &'static Models {
    static M: std::sync::OnceLock<Models> = std::sync::OnceLock::new();
    M.get_or_init(|| Models::load(None).unwrap())
}

/// The analysis of an already opened process.
pub fn analyze_process<'a>(case: &Case, p: &'a coreheap::Process) -> Analysis<'a> {
    Analysis::run(p, models(), &coreheap::progress::NoProgress)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

/// "N free PyDictObjects", "N free K-sized PyTupleObjects" ... summed per type.
fn dms_freelists(text: &str) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f[1] != "free" {
            continue;
        }
        let Ok(n) = f[0].parse::<u64>() else { continue };
        let what = if f[2].ends_with("-sized") { f[3] } else { f[2] };
        let name = match what {
            "PyDictObjects" => "dict",
            "PyListObjects" => "list",
            "PyTupleObjects" => "tuple",
            "PyFloatObjects" => "float",
            _ => continue,
        };
        *m.entry(name).or_default() += n;
    }
    m
}

/// `tp_flags` bit Py_TPFLAGS_HAVE_GC (Include/object.h, 3.8-3.14).
const HAVE_GC: u64 = 1 << 14;

/// Per type name: (objects coreheap found, of which gc-tracked). An object of a GC type is
/// tracked when the `_gc_next` word of its PyGC_Head (the 16 bytes just before the object,
/// 3.8-3.14: Include/internal/pycore_gc.h) is not 0 — CPython's own `_PyObject_GC_IS_TRACKED`.
/// Is the object at `o` in a gc list? Its head's `_gc_next` is not 0 and the next node's
/// `_gc_prev` points back (flag bits masked: pycore_gc.h keeps them in the low bits). The
/// back-link matters for objects of a GC type allocated without a GC head (numpy's DType
/// classes at the start of their block): the 16 bytes before them are another block's.
fn tracked(p: &coreheap::Process, o: u64) -> bool {
    let word = |a: u64| p.space.read_u64(coreheap::addr::Addr(a)).ok();
    let head = o.wrapping_sub(16);
    let (Some(next), Some(prev)) = (word(head), word(head.wrapping_add(8))) else {
        return false;
    };
    let (next, prev) = (next & !7, prev & !7);
    // Linked in either direction: the next node's prev, or the previous node's next.
    next != 0
        && (word(next.wrapping_add(8)).is_some_and(|x| x & !7 == head)
            || word(prev).is_some_and(|x| x & !7 == head))
}

pub fn counts_by_name(
    p: &coreheap::Process,
    census: &coreheap::analysis::census::Census,
) -> BTreeMap<String, (u64, u64)> {
    let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for o in census.objects() {
        let ti = census.type_of(o);
        let e = m.entry(ti.name.clone()).or_default();
        e.0 += 1;
        if ti.flags & HAVE_GC != 0 && tracked(p, o.addr.0) {
            e.1 += 1;
        }
    }
    m
}

/// Every type of the process's `gc.get_objects()` census against coreheap's, exactly, and
/// every type coreheap finds gc-tracked objects of that the gc census does not have
/// (phantoms). The gc census lists tracked objects only, so each type is compared by the
/// objects coreheap finds *tracked*: live objects of GC types may be untracked — exact
/// tuples and dicts of atoms (Modules/gcmodule.c `untrack_tuples`/`untrack_dicts`),
/// frames while they run on 3.8-3.10 (Objects/call.c `function_code_fastcall`: a frame is
/// tracked only when it outlives its call), ContextVars whose name and default are atoms
/// (Python/context.c `contextvar_new`) — and those are checked by address through the
/// scenario's samples instead. Returns one line per mismatch:
/// `case: type: gc census N, coreheap M (tracked K)`.
pub fn check_full_census(
    case: &Case,
    p: &coreheap::Process,
    census: &coreheap::analysis::census::Census,
    t: &serde_json::Value,
) -> Vec<String> {
    let mut bad = Vec::new();
    let Some(truth_census) = t["census"].as_object() else {
        return vec![format!("{}: truth has no census", case.name)];
    };
    let got = counts_by_name(p, census);
    for (name, want) in truth_census {
        let want = want.as_u64().unwrap_or(0);
        let (total, tracked) = got.get(name).copied().unwrap_or((0, 0));
        if tracked != want {
            bad.push(format!(
                "{}: {name}: gc census {want}, coreheap {total} (tracked {tracked})",
                case.name
            ));
        }
    }
    for (name, &(total, tracked)) in &got {
        if tracked > 0 && !truth_census.contains_key(name) {
            bad.push(format!(
                "{}: {name}: gc census 0, coreheap {total} (tracked {tracked})",
                case.name
            ));
        }
    }
    bad
}

/// Free-list residents per type against the "N free PyXxxObjects" lines of the case's
/// `sys._debugmallocstats()`.
/// Where the float free list cannot be read (3.8-3.9 statics in a stripped build without
/// its debug file: Debian bullseye's python3.9), the analysis must say so and take no
/// float as free: none guessed.
fn check_freelists(case: &Case, p: &coreheap::Process, a: &Analysis) -> Vec<String> {
    let mut bad = Vec::new();
    let _ = a.objects();
    let Some(census) = &a.census else {
        return vec![format!("{}: no census", case.name)];
    };
    let floats_unread = a
        .diagnostics
        .to_vec()
        .iter()
        .any(|d| d.message.starts_with("float free list not read"));
    if let Some(dms) = &case.dms {
        let want = dms_freelists(&std::fs::read_to_string(dms).unwrap());
        for (name, n) in want {
            // Tuples: only the sizes the free lists keep (1..PyTuple_MAXSAVESIZE = 20).
            let got = census
                .free_objects
                .iter()
                .filter(|o| census.type_of(o).name == name)
                .filter(|o| {
                    name != "tuple"
                        || p.space
                            .read_u64(o.addr.wrapping_add(16))
                            .is_ok_and(|n| (1..20).contains(&n))
                })
                .count() as u64;
            // After printing the statistics the process still calls os.kill(pid, SIGSTOP)
            // (or os.abort()); on interpreters that pass call arguments in a tuple, that
            // call takes one 2-tuple off the free list and holds it when the core is taken.
            let consumed_by_stop_call = name == "tuple" && got + 1 == n;
            if name == "float" && floats_unread {
                if got != 0 {
                    bad.push(format!(
                        "{}: float free list unread, yet {got} free floats",
                        case.name
                    ));
                }
                continue;
            }
            if got != n && !consumed_by_stop_call {
                bad.push(format!(
                    "{}: free {name} objects: walker {got}, _debugmallocstats {n}",
                    case.name
                ));
            }
        }
    }
    bad
}

pub fn check(case: &Case) -> Vec<String> {
    let p = corpus::open(case);
    let a = analyze_process(case, &p);
    check_with(case, &p, &a, &corpus::truth(case))
}

/// `check` on an analysis already made.
pub fn check_with(
    case: &Case,
    p: &coreheap::Process,
    a: &Analysis,
    t: &serde_json::Value,
) -> Vec<String> {
    let _ = a.objects();
    let Some(census) = &a.census else {
        return vec![format!("{}: no census", case.name)];
    };
    let mut bad = check_full_census(case, p, census, t);
    bad.extend(check_freelists(case, p, a));
    // Large objects (glibc chunks) of the populations the scenario made.
    if let Some(pops) = t["populations"].as_array() {
        for pop in pops {
            let name = pop["name"].as_str().unwrap_or("");
            let (ty, min) = match name {
                "bytes_3000" => ("bytes", 3000),
                "bytes_300k" => ("bytes", 300 * 1024),
                "str_2000" => ("str", 2000),
                "tuples_200" => ("tuple", 1600),
                _ => continue,
            };
            let want = pop["count"].as_u64().unwrap();
            let got = census
                .objects()
                .iter()
                .filter(|o| {
                    census.type_of(o).name == ty
                        && o.alloc as u64 >= min
                        && (o.alloc as u64) < min * 2
                })
                .count() as u64;
            if got < want {
                bad.push(format!(
                    "{}: {name}: {got} {ty} objects in glibc chunks of >= {min} bytes, want {want}",
                    case.name
                ));
            }
        }
    }
    bad
}

fn check_all(cases: Vec<Case>) {
    // py_libs has its own test (tests/libs.rs), which runs this check too; py_threads is a
    // stacks scenario (tests/stacks.rs) whose truth holds frames, not a census.
    corpus::check_cases(
        cases,
        "Python",
        |c| c.dms.is_some() && c.scenario != "py_libs" && c.scenario != "py_threads",
        check,
    );
}

#[test]
fn reference_census_matches_gc() {
    check_all(corpus::reference_cases());
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_census_matches_gc() {
    check_all(corpus::fresh_cases());
}

/// py_threads has no census truth, but its `_debugmallocstats` shows floats on the float
/// free list (the threads' arithmetic): the free-list residents are checked there too.
#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_py_threads_free_lists_match() {
    corpus::check_cases(
        corpus::fresh_cases(),
        "py_threads",
        |c| c.dms.is_some() && c.scenario == "py_threads",
        |c| {
            let p = corpus::open(c);
            let a = analyze_process(c, &p);
            check_freelists(c, &p, &a)
        },
    );
}

/// `objects` previews: instance attributes, dict keys, str text — on every suite.
#[test]
fn reference_objects_previews() {
    for case in corpus::reference_cases()
        .iter()
        .filter(|c| c.scenario == "py_heap")
    {
        let a = analyze(case);
        let objects = |name: &str, n: usize| {
            coreheap::analysis::objects::objects(&a, name, n)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name))
        };
        let l = objects("pyapp.models.Response", 5);
        assert_eq!(l.count, 12345, "{}", case.name);
        for o in &l.objects {
            assert!(
                o.preview.contains("path=\"/api/v1/item/"),
                "{}: {:?}",
                case.name,
                o.preview
            );
        }
        let l = objects("pyapp.models.Point", 3);
        assert!(
            l.objects
                .iter()
                .all(|o| o.preview.contains("x=") && o.preview.contains(", y=-")),
            "{}: __slots__ preview {:?}",
            case.name,
            l.objects
        );
        let l = objects("collections.OrderedDict", 3);
        assert!(
            l.objects
                .iter()
                .all(|o| o.preview.contains("\"a\", \"b\", \"c\"")),
            "{}: {:?}",
            case.name,
            l.objects
        );
        let l = objects("str", 100_000);
        assert!(
            l.objects.iter().any(|o| o.preview.starts_with("\"ключ-")),
            "{}: no UCS-2 str preview",
            case.name
        );
    }
}

/// 3.13+: the model is cross-checked against the interpreter's own _Py_DebugOffsets; a
/// model with a wrong str layout is caught.
#[test]
fn debug_offsets_cross_check_catches_a_wrong_model() {
    let models = coreheap::models::cpython_models(None).unwrap();
    let mut checked = 0;
    for case in corpus::reference_cases()
        .iter()
        .filter(|c| c.scenario == "py_heap")
    {
        let p = corpus::open(case);
        let py = coreheap::image::version::detect_python(&p).unwrap();
        let Some(rt) = py.runtime else { continue };
        let v = py
            .version
            .as_deref()
            .and_then(coreheap::models::Version::parse)
            .unwrap();
        let m = models
            .iter()
            .find(|m| coreheap::models::Epoch::covers(*m, v))
            .unwrap();
        if m.pymalloc.state != coreheap::models::StateKind::State || m.name == "3.12" {
            continue;
        }
        assert!(
            coreheap::models::debug_offsets::cross_check(&p, rt, m).is_empty(),
            "{}",
            case.name
        );
        let mut wrong = m.clone();
        wrong.objects.str_ascii_data = 48;
        let d = coreheap::models::debug_offsets::cross_check(&p, rt, &wrong);
        assert!(
            d.iter().any(|d| d.message.contains("str object")),
            "{}: {d:?}",
            case.name
        );
        checked += 1;
    }
    assert_eq!(checked, 2, "trixie (3.13) and sid (3.14)");
}

/// A core that says it is a free-threaded build (mimalloc, no pymalloc) but has no
/// mimalloc heap coreheap can walk is refused with exit 2 and says why, never given a
/// census from glibc alone. Made from a real 3.13 GIL core by setting the
/// `_Py_DebugOffsets.free_threaded` flag the interpreter publishes at `_PyRuntime + 16`.
/// (Real free-threaded cores: tests/freethreaded.rs.)
#[test]
fn free_threaded_build_is_refused() {
    let case = corpus::reference_cases()
        .into_iter()
        .find(|c| c.scenario == "py_heap" && c.name.starts_with("trixie"))
        .expect("trixie (3.13) py_heap reference case");
    let p = corpus::open(&case);
    let rt = coreheap::image::version::detect_python(&p)
        .unwrap()
        .runtime
        .unwrap();
    let at = rt.get() + 16;
    let seg = p
        .core
        .segments
        .iter()
        .find(|s| at >= s.vaddr.get() && at + 8 <= s.vaddr.get() + s.in_core)
        .unwrap();
    let off = (seg.offset + at - seg.vaddr.get()) as usize;
    let mut raw = zstd::decode_all(std::fs::File::open(&case.core).unwrap()).unwrap();
    assert_eq!(&raw[off..off + 8], &0u64.to_le_bytes());
    raw[off..off + 8].copy_from_slice(&1u64.to_le_bytes());
    let d = tempfile::tempdir().unwrap();
    let core = d.path().join("core");
    std::fs::write(&core, &raw).unwrap();
    for cmd in ["summary", "frag", "objects"] {
        let mut args = vec![
            cmd,
            "--sysroot",
            case.sysroot.as_ref().unwrap().to_str().unwrap(),
            core.to_str().unwrap(),
        ];
        if cmd == "objects" {
            args.extend(["--type", "dict"]);
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_coreheap"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("free-threaded"), "{cmd}: {err}");
        assert!(out.stdout.is_empty());
    }
}

/// PYTHONMALLOC=malloc: pymalloc is never used, every object is a glibc chunk. The census
/// still finds the program's objects (a core made here with gcore).
#[test]
#[ignore = "needs python3 and gdb: run tests/run-all"]
fn pythonmalloc_malloc_objects_are_found_in_glibc_chunks() {
    use std::io::Read;
    let d = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("/usr/bin/python3")
        .env("PYTHONMALLOC", "malloc")
        .args([
            "-c",
            "import os, signal, sys\nclass Foo: pass\nx = [Foo() for i in range(1234)]\nsys.stdout.write('ready\\n'); sys.stdout.flush()\nos.kill(os.getpid(), signal.SIGSTOP)\n",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 6];
    child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let prefix = d.path().join("core");
    let st = std::process::Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(child.id().to_string())
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        st.status.success(),
        "gcore: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let core = d.path().join(format!("core.{}", child.id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coreheap"))
        .args(["summary", "--json", "--quiet"])
        .arg(&core)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let foo = v["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "__main__.Foo");
    assert_eq!(foo.map(|t| t["count"].as_u64().unwrap()), Some(1234), "{v}");
}
