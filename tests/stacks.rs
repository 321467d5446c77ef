//! `stacks` against the truth the processes wrote about themselves just before their cores:
//! every thread's Python frames equal `sys._current_frames()` as `traceback.extract_stack`
//! lists them (file, line, function), the thread states' native ids are the core's tids,
//! the marked frames' locals match by name, type and value, and the crash context names
//! the signal, the thread and the frame. Plus pystack on the same cores (when installed),
//! the C crash's innermost native frame, and damaged thread states and frames.

use crate::corpus::{self, Case};
use coreheap::analysis::stacks::{stacks, StackOptions, Stacks};
use coreheap::analysis::Models;
use std::path::PathBuf;

fn run(case: &Case, native: bool, locals: bool) -> Stacks {
    let p = corpus::open(case);
    let models = Models::load(None).unwrap();
    stacks(
        &p,
        &models,
        StackOptions {
            native,
            locals,
            ..Default::default()
        },
    )
}

/// The Python value preview coreheap shows for a truth value ([type, value]).
fn expected_preview(ty: &str, v: &str) -> String {
    match ty {
        "str" => format!("{v:?} (len {})", v.chars().count()),
        _ => v.to_string(),
    }
}

fn check_threads(case: &Case) -> Vec<String> {
    check_threads_in(case, &run(case, false, true), true)
}

/// The report `s` of `case` against the truth: frames, names, native ids, crash; the
/// marked frames' locals and the absence of warnings when `full`.
fn check_threads_in(case: &Case, s: &Stacks, full: bool) -> Vec<String> {
    let t = corpus::truth(case);
    let mut bad = Vec::new();
    let threads = t["threads"].as_object().expect("truth threads");
    for (nid, want) in threads {
        let nid: u32 = nid.parse().unwrap();
        let Some(got) = s.threads.iter().find(|x| x.tid == Some(nid)) else {
            bad.push(format!("{}: thread {nid} not in the report", case.name));
            continue;
        };
        if got.tstate.is_none() {
            bad.push(format!(
                "{}: thread {nid}: no thread state matched",
                case.name
            ));
            continue;
        }
        let want_frames: Vec<(String, u64, String)> = want["frames"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|f| {
                (
                    f[0].as_str().unwrap().to_string(),
                    f[1].as_u64().unwrap_or(0),
                    f[2].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let got_frames: Vec<(String, u64, String)> = got
            .python
            .iter()
            .map(|f| {
                (
                    f.file.clone(),
                    f.line.unwrap_or(0) as u64,
                    f.function.clone(),
                )
            })
            .collect();
        if want_frames != got_frames {
            bad.push(format!(
                "{}: thread {nid} ({}): frames differ\n  want {want_frames:?}\n  got  {got_frames:?}",
                case.name, want["name"]
            ));
        }
        if got.name.as_deref() != want["name"].as_str() {
            bad.push(format!(
                "{}: thread {nid}: name {:?}, want {}",
                case.name, got.name, want["name"]
            ));
        }
        if !full {
            continue;
        }
        if let Some(marked) = t["locals"].get(nid.to_string()).and_then(|x| x.as_object()) {
            for (func, vars) in marked {
                let Some(frame) = got.python.iter().find(|f| &f.function == func) else {
                    bad.push(format!("{}: thread {nid}: no frame {func}", case.name));
                    continue;
                };
                let locals = frame.locals.as_deref().unwrap_or(&[]);
                for (name, tv) in vars.as_object().unwrap() {
                    let (ty, v) = (tv[0].as_str().unwrap(), tv[1].as_str().unwrap());
                    let want_p = expected_preview(ty, v);
                    match locals.iter().find(|l| &l.name == name) {
                        Some(l) if l.type_name == ty && l.preview == want_p => {}
                        Some(l) => bad.push(format!(
                            "{}: thread {nid} {func}: local {name} = {} {:?}, want {ty} {want_p:?}",
                            case.name, l.type_name, l.preview
                        )),
                        None => bad.push(format!(
                            "{}: thread {nid} {func}: local {name} missing",
                            case.name
                        )),
                    }
                }
            }
        }
    }
    // Every core thread is a Python thread here, and nothing is unmatched.
    for th in &s.threads {
        if th.tid.is_none() || th.tstate.is_none() {
            bad.push(format!(
                "{}: unmatched thread {:?} / {:?}",
                case.name, th.tid, th.tstate
            ));
        }
    }
    if case.kind == "kernel" {
        let c = s.crash.as_ref();
        let tid = t["signal_tid"].as_u64().map(|x| x as u32);
        if c.map(|c| (c.name, c.tid)) != Some(("SIGABRT", tid)) {
            bad.push(format!(
                "{}: crash {:?}, want SIGABRT in {tid:?}",
                case.name,
                c.map(|c| (c.name, c.tid))
            ));
        }
        let f = c
            .and_then(|c| c.python_frame.as_ref())
            .map(|f| f.function.as_str());
        if f != Some("finish") {
            bad.push(format!(
                "{}: crash Python frame {f:?}, want finish (the os.abort() call)",
                case.name
            ));
        }
    } else if s.crash.is_some() {
        bad.push(format!("{}: a snapshot has no crash", case.name));
    }
    for d in s.diagnostics.iter() {
        if full && d.severity >= coreheap::error::Severity::Warning {
            bad.push(format!("{}: diagnostic: {d}", case.name));
        }
    }
    bad
}

/// `$COREHEAP_STACKS_CORPUS`, else the fresh corpus; a fresh corpus generated before the
/// stacks scenarios existed is completed by `$COREHEAP_CACHE/corpus-stacks` when present
/// (`make_corpus.py generate --scenarios py_threads,c_crash --out ...`).
fn stacks_corpus() -> Vec<Case> {
    if let Some(d) = std::env::var_os("COREHEAP_STACKS_CORPUS").map(PathBuf::from) {
        return corpus::load_index(&d.join("index.json"));
    }
    let mut cases = corpus::fresh_cases();
    if !cases.iter().any(|c| c.scenario == "py_threads") {
        let cache = std::env::var_os("COREHEAP_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/coreheap")
            });
        let idx = cache.join("corpus-stacks/index.json");
        if idx.exists() {
            cases.extend(corpus::load_index(&idx));
        }
    }
    cases
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_python_stacks_match_current_frames() {
    corpus::check_cases(
        stacks_corpus(),
        "py_threads",
        |c| c.scenario == "py_threads",
        check_threads,
    );
}

/// The same truth without symbols: `_PyRuntime` and the static types found by scanning
/// the interpreter's data (python/symless.rs), (a) with the binaries at hand (everything,
/// locals included, must match), (b) from the core's bytes alone (no file: a 0x33 core then
/// has no `.dynsym` and no read-only data, so type names and locals' previews are not
/// readable; frames, names, native ids and the crash must match).
#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_python_stacks_without_symbols() {
    corpus::check_cases(
        stacks_corpus(),
        "py_threads",
        |c| c.scenario == "py_threads",
        |case| {
            let models = Models::load(None).unwrap();
            let opts = StackOptions {
                locals: true,
                ignore_symbols: true,
                ..Default::default()
            };
            let with_files = stacks(&corpus::open(case), &models, opts);
            let core_only = stacks(&corpus::open_opts(case, true, true), &models, opts);
            let mut bad = Vec::new();
            for (mode, s, full) in [
                ("binaries at hand", &with_files, true),
                ("core only", &core_only, false),
            ] {
                if !s.diagnostics.iter().any(|d| {
                    d.message
                        .contains("no _PyRuntime symbol: the runtime was found")
                }) {
                    bad.push(format!(
                        "{}: {mode}: the runtime was not found by scanning",
                        case.name
                    ));
                }
                bad.extend(
                    check_threads_in(case, s, full)
                        .into_iter()
                        .map(|b| format!("{mode}: {b}")),
                );
            }
            bad
        },
    );
}

/// A damaged `_PyRuntime.interpreters.head` in a core without symbols: no other word of
/// the data passes for the runtime (a warning, no Python stacks, no panic).
#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_damaged_runtime_without_symbols_is_not_guessed() {
    let cases: Vec<Case> = stacks_corpus()
        .into_iter()
        .filter(|c| c.scenario == "py_threads" && c.kind == "kernel" && c.filter == "0x33")
        .collect();
    assert!(!cases.is_empty(), "no py_threads kernel cases");
    let models = Models::load(None).unwrap();
    let opts = StackOptions {
        ignore_symbols: true,
        ..Default::default()
    };
    for case in &cases {
        let p = corpus::open(case);
        let base = stacks(&p, &models, opts);
        let rt = base
            .diagnostics
            .iter()
            .find(|d| d.message.contains("the runtime was found"))
            .and_then(|d| d.address)
            .unwrap_or_else(|| panic!("{}: runtime not found by scanning", case.name))
            .0;
        let ver = base.python_version.clone().unwrap_or_default();
        use coreheap::models::Epoch;
        let m = models
            .cpython
            .iter()
            .find(|m| coreheap::models::Version::parse(&ver).is_some_and(|v| m.covers(v)))
            .unwrap();
        let head = rt + m.frames.as_ref().unwrap().runtime_interpreters_head;
        let o = p
            .core
            .segments
            .iter()
            .find_map(|s| {
                (head >= s.vaddr.0 && head + 8 <= s.vaddr.0 + s.in_core)
                    .then(|| (s.offset + (head - s.vaddr.0)) as usize)
            })
            .unwrap();
        let mut b = std::fs::read(&case.core).unwrap();
        b[o..o + 8].copy_from_slice(&0x4141_4141_4141u64.to_le_bytes());
        let core = coreheap::image::core::CoreFile::from_bytes("damaged", b).unwrap();
        let po = coreheap::Options {
            search: coreheap::image::modules::SearchPaths {
                sysroot: case.sysroot.clone(),
                ..Default::default()
            },
            heap_models: None,
        };
        let s = stacks(&coreheap::Process::from_core(core, &po), &models, opts);
        assert!(
            s.threads.iter().all(|t| t.python.is_empty()),
            "{}: Python frames from a damaged runtime",
            case.name
        );
        assert!(
            s.diagnostics
                .iter()
                .any(|d| d.message.contains("not its _PyRuntime")),
            "{}: no diagnostic for the damaged runtime",
            case.name
        );
    }
}

fn crash_line() -> u32 {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/scenarios/c_crash.c"),
    )
    .unwrap();
    src.lines().position(|l| l.contains("CRASH LINE")).unwrap() as u32 + 1
}

fn check_c_crash(case: &Case) -> Vec<String> {
    let t = corpus::truth(case);
    let s = run(case, true, false);
    let mut bad = Vec::new();
    let c = s.crash.as_ref().expect("a crash");
    if c.name != "SIGSEGV"
        || c.tid != t["signal_tid"].as_u64().map(|x| x as u32)
        || c.code != Some(1)
    {
        bad.push(format!("{}: crash {c:?}", case.name));
    }
    if c.fault_address.map(|a| a.0) != Some(8) {
        // n->next->value with n->next == NULL: value is at offset 0 of a NULL node... the
        // load is from NULL + offsetof(value) = 0.
        if c.fault_address.map(|a| a.0) != Some(0) {
            bad.push(format!(
                "{}: fault address {:?}",
                case.name, c.fault_address
            ));
        }
    }
    let th = s
        .threads
        .iter()
        .find(|x| x.crashed)
        .expect("crashed thread");
    let names: Vec<&str> = th
        .native
        .iter()
        .filter_map(|f| f.symbol.as_deref())
        .collect();
    let want: Vec<&str> = std::iter::once("crash_here")
        .chain(
            t["callers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap()),
        )
        .collect();
    if names.len() < want.len() || names[..want.len()] != want[..] {
        bad.push(format!(
            "{}: native frames {names:?}, want {want:?} first",
            case.name
        ));
    }
    let top = &th.native[0];
    let file_ok = top
        .file
        .as_deref()
        .is_some_and(|f| f.ends_with("c_crash.c"));
    if !file_ok || top.line != Some(crash_line()) {
        bad.push(format!(
            "{}: crash frame at {:?}:{:?}, want c_crash.c:{}",
            case.name,
            top.file,
            top.line,
            crash_line()
        ));
    }
    bad
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_c_crash_innermost_native_frame() {
    corpus::check_cases(
        stacks_corpus(),
        "c_crash",
        |c| c.scenario == "c_crash",
        check_c_crash,
    );
}

/// Native unwinding of the Python cores: every thread's stack reaches a libc or python
/// frame with a symbol, and the aborting thread's shows abort.
fn check_native(case: &Case) -> Vec<String> {
    let s = run(case, true, false);
    let mut bad = Vec::new();
    for th in &s.threads {
        if th.native.is_empty() {
            bad.push(format!(
                "{}: thread {:?}: no native frames",
                case.name, th.tid
            ));
        }
    }
    if case.kind == "kernel" {
        let th = s.threads.iter().find(|x| x.crashed).unwrap();
        let names: Vec<&str> = th
            .native
            .iter()
            .filter_map(|f| f.symbol.as_deref())
            .collect();
        if !names.iter().any(|n| *n == "abort") {
            bad.push(format!(
                "{}: the aborting thread's native frames {names:?} do not show abort",
                case.name
            ));
        }
    }
    bad
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_native_stacks_of_python_cores() {
    corpus::check_cases(
        stacks_corpus(),
        "py_threads",
        |c| c.scenario == "py_threads",
        check_native,
    );
}

/// pystack (`pip install pystack`, tests/run-all installs it into a virtual environment
/// under $COREHEAP_CACHE) on the same cores gives the same Python frames.
fn pystack_bin() -> Option<PathBuf> {
    let cache = std::env::var_os("COREHEAP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/coreheap"));
    let p = cache.join("venvs/pystack/bin/pystack");
    p.exists().then_some(p)
}

/// (file, line, function) of every thread in pystack's text output, by tid, innermost
/// first ("(Python) File "f", line N, in fn" lines, most recent call last per thread).
fn pystack_frames(out: &str) -> std::collections::BTreeMap<u32, Vec<(String, u64, String)>> {
    let mut m = std::collections::BTreeMap::new();
    let mut cur: Option<u32> = None;
    for line in out.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("Traceback for thread ") {
            cur = rest.split_whitespace().next().and_then(|x| x.parse().ok());
            if let Some(c) = cur {
                m.entry(c).or_insert_with(Vec::new);
            }
            continue;
        }
        let l = l.strip_prefix("(Python) ").unwrap_or(l);
        if let (Some(c), Some(rest)) = (cur, l.strip_prefix("File \"")) {
            let Some((file, rest)) = rest.split_once("\", line ") else {
                continue;
            };
            let Some((line_no, func)) = rest.split_once(", in ") else {
                continue;
            };
            let func = func.split_whitespace().next().unwrap_or("").to_string();
            m.get_mut(&c).unwrap().push((
                file.to_string(),
                line_no.trim().parse().unwrap_or(0),
                func,
            ));
        }
    }
    for v in m.values_mut() {
        v.reverse();
    }
    m
}

#[test]
#[ignore = "needs cores generated on this machine and pystack: run tests/run-all"]
fn fresh_pystack_agrees() {
    let Some(bin) = pystack_bin() else {
        eprintln!("pystack is not installed under $COREHEAP_CACHE/venvs/pystack: skipped");
        return;
    };
    let check = |case: &Case| -> Vec<String> {
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg("core").arg(&case.core);
        if let Some(root) = &case.sysroot {
            // pystack core CORE [EXECUTABLE] --lib-search-root DIR
            let exe = corpus::truth(case)["exe"].as_str().unwrap().to_string();
            cmd.arg(root.join(exe.trim_start_matches('/')));
            cmd.arg("--lib-search-root").arg(root);
        }
        let out = match cmd.output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => {
                return vec![format!(
                    "{}: pystack failed: {}",
                    case.name,
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                )]
            }
            Err(e) => return vec![format!("{}: pystack: {e}", case.name)],
        };
        let theirs = pystack_frames(&out);
        let s = run(case, false, false);
        let mut bad = Vec::new();
        for th in &s.threads {
            let Some(tid) = th.tid else { continue };
            let ours: Vec<(String, u64, String)> = th
                .python
                .iter()
                .map(|f| {
                    (
                        f.file.clone(),
                        f.line.unwrap_or(0) as u64,
                        f.function.clone(),
                    )
                })
                .collect();
            let t = theirs.get(&tid).cloned().unwrap_or_default();
            if ours != t {
                bad.push(format!(
                    "{}: thread {tid}: pystack differs\n  pystack  {t:?}\n  coreheap {ours:?}",
                    case.name
                ));
            }
        }
        bad
    };
    corpus::check_cases(
        stacks_corpus(),
        "py_threads",
        |c| c.scenario == "py_threads",
        check,
    );
}

/// Damaged thread states and frames in a real core: a frame whose `previous` points back
/// to itself, a garbage code pointer, a thread state whose `next` is garbage, a thread
/// state whose interp is wrong. Each gives a diagnostic, never a panic, and the other
/// threads are still listed.
#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_damaged_frames_give_diagnostics() {
    let cases: Vec<Case> = stacks_corpus()
        .into_iter()
        .filter(|c| c.scenario == "py_threads" && c.kind == "kernel" && c.filter == "0x33")
        .collect();
    assert!(!cases.is_empty(), "no py_threads kernel cases");
    for case in &cases {
        let base = run(case, false, false);
        let py: Vec<_> = base
            .threads
            .iter()
            .filter(|t| t.python.len() >= 2)
            .collect();
        assert!(py.len() >= 3, "{}: too few Python threads", case.name);
        let bytes = std::fs::read(&case.core).unwrap();
        let p = corpus::open(case);
        // File offset of a virtual address, from the core's segments.
        let off = |a: u64| -> Option<usize> {
            p.core.segments.iter().find_map(|s| {
                (a >= s.vaddr.0 && a + 8 <= s.vaddr.0 + s.in_core)
                    .then(|| (s.offset + (a - s.vaddr.0)) as usize)
            })
        };
        // Mutations: (description, address, new value)
        let t0 = py[0];
        let t1 = py[1];
        let t2 = py[2];
        let ver = base.python_version.clone().unwrap_or_default();
        let minor: u32 = ver
            .split('.')
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        let prev_off = if minor <= 10 {
            0x18
        } else if minor == 11 {
            0x30
        } else {
            0x8
        };
        let code_off = if minor <= 10 {
            0x20
        } else if minor == 11 {
            0x20
        } else {
            0x0
        };
        let f0 = t0.python[0].frame_address.0;
        let f1 = t1.python[1].frame_address.0;
        let ts2 = t2.tstate.unwrap().0;
        // (what, where, new value, threads that must still show Python frames): a cut
        // thread-state list loses the threads after the damage, nothing else does.
        let n = py.len();
        let muts: Vec<(&str, u64, u64, usize)> = vec![
            ("frame loop", f0 + prev_off, f0, n),
            ("garbage code pointer", f1 + code_off, 0xdead_beef_0000, n),
            ("garbage next thread state", ts2 + 8, 0x4141_4141_4141, 1),
        ];
        for (what, addr, val, keep) in muts {
            let Some(o) = off(addr) else {
                panic!("{}: {what}: {addr:#x} is not in the core", case.name);
            };
            let mut b = bytes.clone();
            b[o..o + 8].copy_from_slice(&val.to_le_bytes());
            let core = coreheap::image::core::CoreFile::from_bytes("damaged", b).unwrap();
            let opts = coreheap::Options {
                search: coreheap::image::modules::SearchPaths {
                    sysroot: case.sysroot.clone(),
                    ..Default::default()
                },
                heap_models: None,
            };
            let dp = coreheap::Process::from_core(core, &opts);
            let models = Models::load(None).unwrap();
            let s = stacks(
                &dp,
                &models,
                StackOptions {
                    native: true,
                    locals: true,
                    ..Default::default()
                },
            );
            assert!(
                s.diagnostics
                    .iter()
                    .any(|d| d.severity >= coreheap::error::Severity::Warning),
                "{}: {what}: no diagnostic",
                case.name
            );
            let with_frames = s.threads.iter().filter(|t| !t.python.is_empty()).count();
            assert!(
                with_frames >= keep,
                "{}: {what}: other threads lost ({with_frames} of {n})",
                case.name
            );
        }
    }
}
