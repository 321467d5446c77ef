//! The command line as a user meets it: versioned JSON, `--top` in JSON too, escaped core
//! strings, many mappings, no allocator, a failing allocator, models that do not cover the
//! version, and golden text/JSON outputs (re-blessed with `COREHEAP_BLESS=1`).

use crate::synth;
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Run the binary from the manifest directory: (exit code, stdout, stderr).
fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coreheap"))
        .args(args)
        .current_dir(manifest())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rel(p: &Path) -> String {
    p.strip_prefix(manifest())
        .unwrap_or(p)
        .display()
        .to_string()
}

fn reference(scenario: &str, suite: &str) -> crate::corpus::Case {
    crate::corpus::reference_cases()
        .into_iter()
        .find(|c| c.scenario == scenario && c.name.contains(suite))
        .unwrap_or_else(|| panic!("reference case {scenario} {suite}"))
}

/// `--sysroot DIR CORE` of a reference case, relative to the manifest directory.
fn case_args(c: &crate::corpus::Case) -> Vec<String> {
    vec![
        "--sysroot".into(),
        rel(c.sysroot.as_ref().unwrap()),
        rel(&c.core),
    ]
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A copy of the built-in models, with `edit` applied to the named file; `only`: leave
/// out the other models of that kind.
fn altered_models(file: &str, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    altered_models_only(file, edit, false)
}

fn altered_models_only(file: &str, edit: impl Fn(&str) -> String, only: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for kind in ["glibc", "cpython"] {
        let dst = d.path().join(kind);
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(manifest().join("heap-models").join(kind)).unwrap() {
            let e = e.unwrap();
            let mut text = std::fs::read_to_string(e.path()).unwrap();
            let this = format!("{kind}/{}", e.file_name().to_string_lossy());
            if this == file {
                text = edit(&text);
            } else if only && file.starts_with(kind) {
                continue;
            }
            std::fs::write(dst.join(e.file_name()), text).unwrap();
        }
    }
    d
}

#[test]
fn every_json_document_carries_its_schema() {
    let d = tempfile::tempdir().unwrap();
    let synth = d.path().join("synth");
    std::fs::write(&synth, synth::core().bytes).unwrap();
    let py = reference("py_heap", "bookworm");
    let mut a = case_args(&py);
    let core = a.pop().unwrap();
    let cmds: Vec<(&str, Vec<String>)> = vec![
        ("info", vec![synth.display().to_string()]),
        ("summary", vec![core.clone()]),
        ("frag", vec![core.clone()]),
        (
            "objects",
            vec!["--type".into(), "pyapp.models.Point".into(), core.clone()],
        ),
        ("diff", vec![core.clone(), core.clone()]),
    ];
    for (cmd, rest) in cmds {
        let mut args = vec![cmd.to_string(), "--json".into(), "--quiet".into()];
        if cmd != "info" {
            args.extend(a.iter().cloned());
        }
        args.extend(rest);
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, 0, "{cmd}: {stderr}");
        let v = json(&stdout);
        assert_eq!(v["schema"], format!("coreheap/{cmd}/1"), "{cmd}");
        // Optional fields are null, never missing: diagnostics always carry address and hint.
        for d in v["diagnostics"].as_array().unwrap() {
            assert!(
                d.get("address").is_some() && d.get("hint").is_some(),
                "{cmd}: {d}"
            );
        }
    }
}

#[test]
fn top_applies_to_json() {
    let py = reference("py_heap", "bookworm");
    let mut args: Vec<String> = vec![
        "summary".into(),
        "--json".into(),
        "--top".into(),
        "2".into(),
    ];
    args.extend(case_args(&py));
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    assert_eq!(v["types"].as_array().unwrap().len(), 2);
    assert_eq!(v["size_classes"].as_array().unwrap().len(), 2);
    // The totals are over every row, not the two shown.
    let shown: u64 = v["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["count"].as_u64().unwrap())
        .sum();
    assert!(v["types_total"]["count"].as_u64().unwrap() > shown);
}

/// frag --json lists each diagnostic once (the walks' own lists are not repeated).
#[test]
fn frag_json_has_one_diagnostics_list() {
    let py = reference("py_heap", "bookworm");
    let mut args: Vec<String> = vec!["frag".into(), "--json".into()];
    args.extend(case_args(&py));
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    assert!(v["pymalloc"].get("diagnostics").is_none());
    assert!(v["glibc"].get("diagnostics").is_none());
    assert!(v["diagnostics"].is_array());
}

/// A library path with terminal escapes (set the title, clear the screen) is shown escaped.
#[test]
fn core_strings_are_escaped_on_the_terminal() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("hostile");
    std::fs::write(
        &p,
        synth::core_with_path(b"/tmp/\x1b]0;pwned\x07\x1b[2J\xc2\x9b1m/lib.so").bytes,
    )
    .unwrap();
    for color in ["never", "always"] {
        let (code, stdout, stderr) = run(&["info", "--color", color, p.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.contains("\\x1b]0;pwned\\x07\\x1b[2J\\x9b1m/lib.so"),
            "{stdout}"
        );
        assert!(
            !stdout.contains("\x1b]0") && !stdout.contains("\x1b[2J") && !stdout.contains('\u{9b}')
        );
        assert!(!stderr.contains('\x1b'), "{stderr}");
        if color == "never" {
            assert!(!stdout.contains('\x1b'));
        }
    }
    // JSON escapes control characters itself.
    let (code, stdout, _) = run(&["info", "--json", p.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(!stdout.contains('\x1b'));
    assert!(stdout.contains("\\u001b]0;pwned"));
}

/// 100 k mappings: every one listed (the join of segments and NT_FILE entries is not
/// quadratic: before, this took about a minute; see benches/manymaps.sh for the time).
#[test]
fn many_mappings() {
    let n = 100_000;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("many");
    std::fs::write(&p, synth::core_many(n).bytes).unwrap();
    let (code, stdout, stderr) = run(&["info", "--json", "--quiet", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    // The three basic segments, the library, and the n extra file mappings.
    assert_eq!(v["mappings"].as_array().unwrap().len(), 3 + n);
}

/// No allocator in the core: a heap command says so and exits 2 (not empty tables).
#[test]
fn no_allocator_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("synth");
    std::fs::write(&p, synth::core().bytes).unwrap();
    for cmd in ["summary", "frag"] {
        let (code, stdout, stderr) = run(&[cmd, "--quiet", p.to_str().unwrap()]);
        assert_eq!(code, 2, "{cmd}: {stdout}");
        assert!(stdout.is_empty());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("no heap found"), "{stderr}");
    }
}

/// A CPython version no model covers: `summary` picks a model by its invariants, and
/// `objects` and `diff` use that same model (they used to pick by version only: `objects`
/// exited 2 and `diff` dropped its samples).
#[test]
fn objects_and_diff_use_the_model_the_walk_used() {
    let py = reference("py_heap", "bookworm"); // CPython 3.11
                                               // The 3.11 layout relabelled as a 3.7 model, and no other CPython model.
    let models = altered_models_only(
        "cpython/3.11.toml",
        |t| {
            t.replace("first = \"3.11\"", "first = \"3.7\"")
                .replace("last = \"3.11\"", "last = \"3.7\"")
        },
        true,
    );
    let mdir = models.path().display().to_string();
    let base = |cmd: &str| -> Vec<String> {
        let mut a = vec![
            cmd.to_string(),
            "--json".into(),
            "--heap-models".into(),
            mdir.clone(),
        ];
        let mut c = case_args(&py);
        let core = c.pop().unwrap();
        a.extend(c);
        a.push(core);
        a
    };
    let (code, stdout, stderr) = run(&base("summary"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("CPython 3.11") && stderr.contains("no layout model covers"),
        "{stderr}"
    );
    let v = json(&stdout);
    assert!(v["types"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "pyapp.models.Response"));
    let mut a = base("objects");
    a.extend([
        "--type".into(),
        "pyapp.models.Response".into(),
        "--limit".into(),
        "2".into(),
    ]);
    let (code, stdout, stderr) = run(&a);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    assert_eq!(v["count"], 12345);
    assert!(v["objects"][0]["preview"]
        .as_str()
        .unwrap()
        .contains("path="));
    let (code, stdout, stderr) = run(&base("diff")
        .into_iter()
        .chain(case_args(&py).pop())
        .collect::<Vec<_>>());
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    assert_eq!(v["schema"], "coreheap/diff/1");
}

/// One allocator failing is a diagnostic: the other still reports (a CPython model whose
/// pymalloc geometry is wrong for the core makes the pymalloc walk fail).
#[test]
fn a_failing_allocator_does_not_fail_the_other() {
    let py = reference("py_heap", "bookworm");
    let models = altered_models("cpython/3.11.toml", |t| {
        t.replace("pool_size = 0x4000", "pool_size = 0x1000")
    });
    let mut a: Vec<String> = vec![
        "summary".into(),
        "--json".into(),
        "--heap-models".into(),
        models.path().display().to_string(),
    ];
    a.extend(case_args(&py));
    let (code, stdout, stderr) = run(&a);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    assert!(stderr.contains("error: pymalloc"), "{stderr}");
    let classes = v["size_classes"].as_array().unwrap();
    assert!(classes.iter().any(|c| c["allocator"] == "glibc"));
    assert!(!classes.iter().any(|c| c["allocator"] == "pymalloc"));
}

/// Golden outputs: what users read must not change by accident. `COREHEAP_BLESS=1 cargo
/// test golden` rewrites them.
#[test]
fn golden_outputs() {
    let py = reference("py_heap", "bookworm");
    let c = reference("c_heap", "bookworm");
    let with = |case: &crate::corpus::Case, cmd: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        a.push("--quiet".into());
        a.push("--color".into());
        a.push("never".into());
        a.extend(case_args(case));
        a
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("info-c_heap.txt", with(&c, &["info"])),
        (
            "summary-py_heap-top12.txt",
            with(&py, &["summary", "--top", "12"]),
        ),
        (
            "summary-py_heap-top5.json",
            with(&py, &["summary", "--json", "--top", "5"]),
        ),
        (
            "summary-py_heap-retained.txt",
            with(&py, &["summary", "--top", "8", "--retained"]),
        ),
        (
            "summary-py_heap-owners.txt",
            with(&py, &["summary", "--by", "owner", "--top", "8"]),
        ),
        (
            "summary-py_heap-owners.folded",
            with(
                &py,
                &[
                    "summary", "--by", "owner", "--format", "folded", "--top", "8",
                ],
            ),
        ),
        (
            "diff-leak-owners.folded",
            vec![
                "diff".into(),
                "--by".into(),
                "owner".into(),
                "--format".into(),
                "folded".into(),
                "--quiet".into(),
                "--sysroot".into(),
                "corpora/reference/bookworm/sysroot".into(),
                "corpora/reference/bookworm/py_leak-gcore-0x33/core_A.zst".into(),
                "corpora/reference/bookworm/py_leak-gcore-0x33/core_B.zst".into(),
            ],
        ),
        (
            "summary-c_heap-by-size.txt",
            with(&c, &["summary", "--by", "size"]),
        ),
        ("frag-c_heap.txt", with(&c, &["frag"])),
        // Native heaps (issue 13): chap's leak classes, and a chunk's chain from a static
        // (the truth's first sample chunk, user address = chunk + 16).
        ("leaks-c_heap.txt", with(&c, &["leaks"])),
        ("why-c_heap-chunk.txt", {
            let mut v = with(&c, &["why"]);
            v.push("0x5604b2206660".into());
            v
        }),
        ("why-c_heap-chunk.json", {
            // An interior address names the same chunk.
            let mut v = with(&c, &["why", "--json"]);
            v.push("0x5604b2206668".into());
            v
        }),
        ("frag-py_heap.txt", with(&py, &["frag"])),
        (
            "objects-py_heap-point.txt",
            with(
                &py,
                &["objects", "--type", "pyapp.models.Point", "--limit", "3"],
            ),
        ),
    ];
    let dir = manifest().join("tests/golden");
    let bless = std::env::var_os("COREHEAP_BLESS").is_some();
    let mut bad = Vec::new();
    for (name, args) in cases {
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, 0, "{name}: {stderr}");
        let path: PathBuf = dir.join(name);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &stdout).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != stdout {
            bad.push(format!(
                "{name} differs (COREHEAP_BLESS=1 to accept):\n{stdout}"
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// `diff --json` of the committed leak pair (core A after N requests, core B after 3N, one
/// process) through the binary: the leaked class grew by the requests served between the
/// cores (the truth files), and its samples are leaked objects with previews.
#[test]
fn diff_json_of_the_reference_leak_pair() {
    let cases: Vec<crate::corpus::Case> = crate::corpus::reference_cases()
        .into_iter()
        .filter(|c| c.scenario == "py_leak")
        .collect();
    let stage = |tag: char| {
        cases
            .iter()
            .find(|c| c.name.ends_with(tag))
            .unwrap_or_else(|| panic!("reference py_leak stage {tag}"))
    };
    let (a, b) = (stage('A'), stage('B'));
    let served =
        |c: &crate::corpus::Case| crate::corpus::truth(c)["requests_served"].as_i64().unwrap();
    let leaked = served(b) - served(a);
    let mut args: Vec<String> = vec!["diff".into(), "--json".into(), "--quiet".into()];
    args.extend(case_args(a));
    args.push(rel(&b.core));
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    assert_eq!(v["schema"], "coreheap/diff/1");
    let name = "pyapp.models.LeakedResponse";
    let grew = v["types_grew"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in types_grew: {}", v["types_grew"]));
    assert_eq!(grew["count_delta"].as_i64(), Some(leaked), "{grew}");
    assert_eq!(
        grew["count_new"].as_i64(),
        crate::corpus::truth(b)["leaked"].as_i64(),
        "{grew}"
    );
    let samples = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no samples of {name}: {}", v["samples"]));
    let objects = samples["objects"].as_array().unwrap();
    assert!(!objects.is_empty(), "{samples}");
    // Samples in the order of growth with user classes first (they were alphabetical):
    // the leaked class comes first although str leads the growth by bytes.
    assert_eq!(v["samples"][0]["name"], name, "{}", v["samples"]);
    assert_eq!(v["types_grew"][0]["name"], "str");
    for o in objects {
        assert_eq!(o["type"], name, "{o}");
        let p = o["preview"].as_str().unwrap_or("");
        assert!(
            p.contains("request_no=") && p.contains("body=\"response body"),
            "{o}"
        );
    }
}

/// Completions for every shell and the man page come from the clap definitions.
#[test]
fn completions_and_man_page() {
    for (shell, start) in [
        ("bash", "_coreheap()"),
        ("zsh", "#compdef coreheap"),
        ("fish", ""),
    ] {
        let (code, stdout, stderr) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(
            stdout.starts_with(start),
            "{shell}: {}",
            &stdout[..80.min(stdout.len())]
        );
        assert!(
            stdout.contains("summary") && stdout.contains("diff"),
            "{shell}"
        );
    }
    let (code, stdout, _) = run(&["man"]);
    assert_eq!(code, 0);
    assert!(stdout.contains(".TH coreheap 1") && stdout.contains("summary"));
}
