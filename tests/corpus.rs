//! Real cores against the ground truth their processes wrote just before the dump.
//!
//! `reference_*` tests use the small committed set in corpora/reference (every Debian suite
//! of the matrix, zstd-compressed, with a minimal sysroot): they need no external tool.
//! `fresh_*` tests use cores generated on this machine by corpora/make_corpus.py (gcc, gdb,
//! python); they are ignored by a plain `cargo test` and run by tests/run-all (CI).

use coreheap::image::memory::ByteSource;
use coreheap::image::modules::{FileStatus, SearchPaths};
use coreheap::progress::NoProgress;
use coreheap::{Options, Process};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub scenario: String,
    #[allow(dead_code)]
    pub kind: String,
    pub filter: String,
    pub core: PathBuf,
    pub truth: PathBuf,
    /// sys._debugmallocstats() output of Python cases.
    pub dms: Option<PathBuf>,
    pub sysroot: Option<PathBuf>,
}

fn resolve(base: &Path, v: &Value) -> Option<PathBuf> {
    let s = v.as_str()?;
    let p = PathBuf::from(s);
    Some(if p.is_absolute() { p } else { base.join(p) })
}

/// Cases of an index.json written by make_corpus.py. A leak case (two cores) yields one
/// case per core.
pub fn load_index(index: &Path) -> Vec<Case> {
    let text =
        std::fs::read_to_string(index).unwrap_or_else(|e| panic!("{}: {e}", index.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    let base = index.parent().unwrap();
    let list = v
        .get("cases")
        .and_then(|c| c.as_array())
        .or_else(|| v.as_array())
        .expect("index.json: a list of cases");
    let mut out = Vec::new();
    for c in list {
        let s = |k: &str| c.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let sysroot = c.get("sysroot").and_then(|x| resolve(base, x));
        let stages = c
            .get("stages")
            .and_then(|x| x.as_array())
            .expect("index.json: every case has stages");
        for st in stages {
            let tag = st.get("stage").and_then(|x| x.as_str()).unwrap_or("");
            let core = st
                .get("core")
                .and_then(|x| resolve(base, x))
                .expect("stage core");
            let truth = st
                .get("truth")
                .and_then(|x| resolve(base, x))
                .expect("stage truth");
            out.push(Case {
                name: format!(
                    "{}/{}-{}-{}{}",
                    s("env"),
                    s("scenario"),
                    s("kind"),
                    s("filter"),
                    tag
                ),
                scenario: s("scenario"),
                kind: s("kind"),
                filter: s("filter"),
                core,
                truth,
                dms: st.get("debugmallocstats").and_then(|x| resolve(base, x)),
                sysroot: sysroot.clone().filter(|p| p != Path::new("/")),
            });
        }
    }
    out
}

pub fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/reference")
}

pub fn reference_cases() -> Vec<Case> {
    let idx = reference_dir().join("index.json");
    if idx.exists() {
        load_index(&idx)
    } else {
        Vec::new()
    }
}

pub fn fresh_cases() -> Vec<Case> {
    cases_in("COREHEAP_CORPUS", "corpus", "cores")
}

/// The cases of a generated corpus: the directory `var` names, else `default` in the cache
/// (COREHEAP_CACHE, else ~/.cache/coreheap); its index must exist (`what` was generated).
pub fn cases_in(var: &str, default: &str, what: &str) -> Vec<Case> {
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("COREHEAP_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/coreheap")
            });
        cache.join(default)
    });
    let idx = dir.join("index.json");
    assert!(
        idx.exists(),
        "{} is missing: generate {what} first (tests/run-all does)",
        idx.display()
    );
    load_index(&idx)
}

pub fn open(case: &Case) -> Process {
    open_with(case, false)
}

/// `no_debug`: ignore separate debug files, so only the symbol-free heuristics are left.
pub fn open_with(case: &Case, no_debug: bool) -> Process {
    open_opts(case, no_debug, false)
}

/// `core_only`: use no file at all, only the core's bytes.
pub fn open_opts(case: &Case, no_debug: bool, core_only: bool) -> Process {
    let opts = Options {
        search: SearchPaths {
            sysroot: case.sysroot.clone(),
            debug_dirs: Vec::new(),
            skip_system_debug: no_debug,
            core_only,
        },
        heap_models: None,
    };
    Process::open(&case.core, &opts, &NoProgress).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

pub fn truth(case: &Case) -> Value {
    let text = std::fs::read_to_string(&case.truth)
        .unwrap_or_else(|e| panic!("{}: {e}", case.truth.display()));
    serde_json::from_str(&text).unwrap()
}

/// `info` against the truth file; returns the list of mismatches.
fn check_info(case: &Case) -> Vec<String> {
    let p = open(case);
    let t = truth(case);
    let info = coreheap::analysis::info::info(&p);
    let mut bad = Vec::new();
    let mut expect = |what: &str, ok: bool, detail: String| {
        if !ok {
            bad.push(format!("{}: {what}: {detail}", case.name));
        }
    };
    let pid = t["pid"].as_u64().map(|x| x as u32);
    expect(
        "pid",
        info.pid == pid,
        format!("{:?} vs {:?}", info.pid, pid),
    );
    let mut want: Vec<u64> = t["tids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_u64())
        .collect();
    let mut got: Vec<u64> = info.threads.iter().map(|x| x.tid as u64).collect();
    want.sort();
    got.sort();
    expect("threads", want == got, format!("{got:?} vs {want:?}"));
    let exe = t["exe"].as_str().map(String::from);
    expect(
        "exe",
        info.exe == exe,
        format!("{:?} vs {:?}", info.exe, exe),
    );
    let sig = t["signal"].as_u64().map(|x| x as u32);
    let got_sig = info.signal.as_ref().map(|s| s.number);
    expect("signal", got_sig == sig, format!("{got_sig:?} vs {sig:?}"));
    if let Some(tid) = t.get("signal_tid").and_then(|x| x.as_u64()) {
        let got_tid = info.signal.as_ref().and_then(|s| s.tid);
        expect(
            "signal thread",
            got_tid == Some(tid as u32),
            format!("{got_tid:?} vs {tid}"),
        );
    }
    let glibc = t["glibc_version"].as_str().map(String::from);
    expect(
        "glibc",
        info.glibc_version == glibc,
        format!("{:?} vs {:?}", info.glibc_version, glibc),
    );
    let py = t["python_version"].as_str().map(String::from);
    expect(
        "python",
        info.python_version == py,
        format!("{:?} vs {:?}", info.python_version, py),
    );
    if py.is_some() {
        let probe = info.python.as_ref().and_then(|x| x.probe.as_ref());
        expect(
            "PyLong_Type.tp_name",
            probe.is_some_and(|x| x.tp_name == "int"),
            format!("{probe:?}"),
        );
        if case.filter == "0x33" {
            // Read-only data is not in a 0x33 core: the name must come from the binary.
            expect(
                "tp_name read from disk",
                probe.is_some_and(|x| x.source == ByteSource::Disk),
                format!("{probe:?}"),
            );
        }
    }
    for m in &info.modules {
        expect(
            "module file verified",
            matches!(m.status, FileStatus::Verified | FileStatus::NotNeeded),
            format!("{} {:?}", m.path, m.status),
        );
    }
    bad
}

/// Run `check` on every case `keep` selects (there must be some) and fail with every
/// mismatch found, not just the first.
pub fn check_cases(
    cases: Vec<Case>,
    what: &str,
    keep: impl Fn(&Case) -> bool,
    check: impl Fn(&Case) -> Vec<String>,
) {
    let cases: Vec<Case> = cases.into_iter().filter(|c| keep(c)).collect();
    assert!(!cases.is_empty(), "no {what} cases");
    let bad: Vec<String> = cases.iter().flat_map(&check).collect();
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

fn check_all(cases: &[Case]) {
    check_cases(cases.to_vec(), "corpus", |_| true, check_info);
}

#[test]
fn reference_corpus_info_matches_truth() {
    let cases = reference_cases();
    assert!(
        !cases.is_empty(),
        "corpora/reference/index.json is missing or empty: the reference corpus must be checked out"
    );
    check_all(&cases);
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_corpus_info_matches_truth() {
    check_all(&fresh_cases());
}

/// A binary of another build in the sysroot is detected and named, with the --sysroot hint.
#[test]
fn mismatched_binary_is_reported() {
    let cases = reference_cases();
    let case = cases
        .iter()
        // Not the suite of this machine: its libc must not be found on the host either.
        .find(|c| {
            c.scenario == "py_heap"
                && c.filter == "0x33"
                && c.sysroot.is_some()
                && !c.name.starts_with("bookworm")
        })
        .expect("a python 0x33 reference case with a sysroot");
    let sysroot = case.sysroot.as_ref().unwrap();
    // Make a sysroot whose libc is another suite's libc (same path, other build-id).
    let other = cases
        .iter()
        .filter_map(|c| c.sysroot.clone())
        .find(|s| s != sysroot)
        .expect("a second suite");
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(sysroot, tmp.path());
    let p0 = open(case);
    let libc = p0
        .modules
        .modules
        .iter()
        .find(|m| m.name().starts_with("libc"))
        .expect("libc module");
    let rel = libc.path.trim_start_matches('/');
    let other_libc = find_libc(&other).expect("libc in the other sysroot");
    std::fs::copy(&other_libc, tmp.path().join(rel)).unwrap();
    let mut c2 = case.clone();
    c2.sysroot = Some(tmp.path().to_path_buf());
    let p = open(&c2);
    let m = p
        .modules
        .modules
        .iter()
        .find(|m| m.path == libc.path)
        .unwrap();
    assert!(
        matches!(m.status, FileStatus::Mismatch { .. }),
        "{:?}",
        m.status
    );
    let d = p
        .diagnostics
        .iter()
        .find(|d| d.message.contains(&libc.path))
        .expect("a diagnostic naming libc");
    assert!(d.message.contains("another build"), "{d}");
    assert!(d.hint.as_deref().unwrap_or("").contains("--sysroot"), "{d}");
    // Through the CLI too: a warning on stderr naming --sysroot, and still exit 0.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coreheap"))
        .args(["info", "--sysroot"])
        .arg(tmp.path())
        .arg(&case.core)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("another build") && stderr.contains("--sysroot"),
        "{stderr}"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            std::fs::create_dir_all(&t).unwrap();
            copy_tree(&e.path(), &t);
        } else if ft.is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            std::os::unix::fs::symlink(target, &t).unwrap();
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

fn find_libc(root: &Path) -> Option<PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()? {
            let e = e.ok()?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if e.file_type().ok()?.is_dir() {
                stack.push(p);
            } else if name == "libc.so.6" || (name.starts_with("libc-") && name.ends_with(".so")) {
                return std::fs::canonicalize(p).ok();
            }
        }
    }
    None
}
