//! Every crash input the fuzz targets found (tests/fuzz/regressions/<target>/<name>), run
//! again through the same harness function the fuzz target calls (coreheap::fuzzing::run):
//! none may panic. Targets whose base core is in the committed reference corpus run in a
//! plain `cargo test`; tracemalloc's and mimalloc's base cores are cache cores made by
//! corpora/make_corpus.py, so their replay is ignored like the other `fresh_*` tests (run by
//! tests/run-all) and fails loudly when the base core is missing.

use coreheap::fuzzing::{self, Target};
use std::path::{Path, PathBuf};

fn regressions(t: Target) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/regressions")
        .join(t.name());
    let mut v: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(d) => d
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Inputs every target gets besides its kept ones: a few overlays of zeros, ones and
/// self-pointers at the first anchors, so the harness itself is exercised in every run.
fn fixed_inputs() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (i, fill) in [0x00u8, 0xff, 0x41].into_iter().enumerate() {
        let mut d = vec![i as u8, 0, 0, (i * 3) as u8];
        d.extend(std::iter::repeat_n(fill, 256));
        v.push(d);
    }
    v
}

fn replay(targets: &[Target]) {
    let mut failed = Vec::new();
    let mut runs = 0;
    for &t in targets {
        // Builds the base now: a missing base core panics here, naming the file.
        fuzzing::init(t);
        let kept = regressions(t);
        let inputs = kept
            .iter()
            .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
            .chain(
                fixed_inputs()
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| (format!("{}: fixed input {i}", t.name()), d)),
            );
        for (name, data) in inputs {
            runs += 1;
            if std::panic::catch_unwind(|| fuzzing::run(t, &data)).is_err() {
                failed.push(name);
            }
        }
    }
    assert!(runs > 0);
    assert!(
        failed.is_empty(),
        "kept fuzz inputs panic again: {failed:#?}"
    );
}

#[test]
fn fuzz_regressions_replay() {
    let t: Vec<Target> = Target::ALL
        .into_iter()
        .filter(|t| !t.needs_cache())
        .collect();
    replay(&t);
}

#[test]
#[ignore = "needs the cache corpora (tests/run-all)"]
fn fresh_fuzz_regressions_replay() {
    // tests/run-all sets COREHEAP_FT=0 only when the run was told to leave the Debian roots
    // out (no free-threaded interpreter is built then), as tests/freethreaded.rs reads it.
    let no_ft = std::env::var("COREHEAP_FT").as_deref() == Ok("0");
    if no_ft {
        eprintln!("COREHEAP_FT=0: no free-threaded cores; the mimalloc inputs are not replayed");
    }
    let t: Vec<Target> = Target::ALL
        .into_iter()
        .filter(|t| t.needs_cache() && !(no_ft && matches!(t, Target::Mimalloc)))
        .collect();
    replay(&t);
}
