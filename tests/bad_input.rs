//! Bad input through the real binary: one clear line on stderr, exit code 2, no panic.

use crate::synth;
use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coreheap"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_error(path: &Path, expect: &str) {
    let (code, stdout, stderr) = run(&["info", path.to_str().unwrap()]);
    assert_eq!(code, 2, "exit code for {expect}: stderr {stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"));
    assert!(
        stderr.contains(expect),
        "{stderr:?} should mention {expect:?}"
    );
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn empty_file() {
    let d = tempfile::tempdir().unwrap();
    check_error(&write(&d, "empty", b""), "empty file");
}

#[test]
fn not_elf() {
    let d = tempfile::tempdir().unwrap();
    check_error(
        &write(&d, "text", b"hello, this is not a core\n"),
        "not an ELF file",
    );
}

#[test]
fn not_a_core() {
    let d = tempfile::tempdir().unwrap();
    let mut b = synth::core().bytes;
    b[16] = 3; // ET_DYN
    check_error(&write(&d, "so", &b), "not a core dump");
}

#[test]
fn other_architecture() {
    let d = tempfile::tempdir().unwrap();
    let mut b = synth::core().bytes;
    b[18..20].copy_from_slice(&40u16.to_le_bytes()); // EM_ARM
    check_error(&write(&d, "arm", &b), "unsupported architecture");
    let mut b = synth::core().bytes;
    b[4] = 1; // ELFCLASS32
    check_error(&write(&d, "i386", &b), "unsupported architecture");
}

#[test]
fn shorter_than_its_program_headers() {
    let d = tempfile::tempdir().unwrap();
    let b = synth::core().bytes;
    check_error(&write(&d, "short", &b[..100]), "truncated");
}

#[test]
fn missing_file_and_directory() {
    let d = tempfile::tempdir().unwrap();
    check_error(&d.path().join("nope"), "No such file");
    check_error(d.path(), "directory");
}

#[test]
fn garbage_compressed_core() {
    let d = tempfile::tempdir().unwrap();
    let mut b = vec![0x28, 0xb5, 0x2f, 0xfd];
    b.extend_from_slice(&[0x55; 64]);
    check_error(&write(&d, "bad.zst", &b), "cannot decompress");
}

/// The synthetic core cut inside its first loaded segment.
fn cut_core(d: &tempfile::TempDir) -> std::path::PathBuf {
    let s = synth::core();
    let cut = s.load_offsets[0] as usize + 0x1800;
    write(d, "cut", &s.bytes[..cut])
}

#[test]
fn truncated_core_warns_and_succeeds() {
    let d = tempfile::tempdir().unwrap();
    let p = cut_core(&d);
    let (code, stdout, stderr) = run(&["info", "--json", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["truncated"], true);
    assert_eq!(v["pid"], synth::PID);
}

/// A heap command on a truncated core with no heap left in it says, in its one line, that
/// the core is truncated (the warning is not printed on an error).
#[test]
fn no_heap_in_a_truncated_core_says_truncated() {
    let d = tempfile::tempdir().unwrap();
    let p = cut_core(&d);
    let (code, stdout, stderr) = run(&["summary", "--quiet", p.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no heap found"), "{stderr}");
    assert!(stderr.contains("the core is truncated"), "{stderr}");
}

#[test]
fn compressed_cores_are_read_directly() {
    let d = tempfile::tempdir().unwrap();
    let raw = synth::core().bytes;
    let zst = zstd::encode_all(&raw[..], 3).unwrap();
    let lz4 = {
        let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut e, &raw).unwrap();
        e.finish().unwrap()
    };
    let xz = {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 3);
        std::io::Write::write_all(&mut e, &raw).unwrap();
        e.finish().unwrap()
    };
    for (name, bytes) in [("c.zst", zst), ("c.lz4", lz4), ("c.xz", xz)] {
        let p = write(&d, name, &bytes);
        let (code, stdout, stderr) = run(&["info", "--json", "--quiet", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(v["pid"], synth::PID, "{name}");
        assert_eq!(v["threads"].as_array().unwrap().len(), 2);
        assert!(v["compression"].is_string());
    }
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let (code, _, _) = run(&["info"]);
    assert_eq!(code, 2);
    let (code, _, _) = run(&["frobnicate"]);
    assert_eq!(code, 2);
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("summary"));
}

/// A reader that goes away early (`coreheap summary core | head -1`) is not an error.
#[test]
fn broken_pipe_exits_0() {
    let case = crate::corpus::reference_cases()
        .into_iter()
        .find(|c| c.scenario == "py_heap")
        .expect("a reference case");
    let mut child = Command::new(env!("CARGO_BIN_EXE_coreheap"))
        .args(["info", "--quiet", "--sysroot"])
        .arg(case.sysroot.unwrap())
        .arg(&case.core)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // close the pipe before coreheap writes its tables
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("error"));
}

/// Output never carries escape codes when it is not a terminal (or with NO_COLOR).
#[test]
fn no_colour_when_piped() {
    let d = tempfile::tempdir().unwrap();
    let p = write(&d, "c", &synth::core().bytes);
    let (code, stdout, _) = run(&["info", p.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(!stdout.contains('\x1b'));
}

/// `--heap-models DIR` replaces the built-in models; a broken model file is one line, exit 2.
#[test]
fn heap_models_override() {
    let case = crate::corpus::reference_cases()
        .into_iter()
        .find(|c| c.scenario == "c_heap")
        .expect("a reference C case");
    let d = tempfile::tempdir().unwrap();
    for kind in ["glibc", "cpython"] {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("heap-models")
            .join(kind);
        let dst = d.path().join(kind);
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    let sysroot = case.sysroot.clone().unwrap();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "frag",
            "--json",
            "--quiet",
            "--heap-models",
            d.path().to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        a.push("--sysroot");
        a.push(sysroot.to_str().unwrap());
        a.push(case.core.to_str().unwrap());
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let a = args(&[]);
    let (code, stdout, stderr) = run(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"arenas\""));
    std::fs::write(
        d.path().join("glibc/broken.toml"),
        "kind = \"glibc\"\nfirst = 2.99\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("broken.toml"), "{stderr}");
}
