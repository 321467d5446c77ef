//! tracemalloc's traces recovered from cores of processes that ran under
//! PYTHONTRACEMALLOC=10 (py_trace, py_trace_leak) and =1 (py_trace1), against what
//! `snapshot.statistics()` and `compare_to()` returned in the process just before the core
//! (traces.json, written by corpora/scenarios/pyapp/coretruth.py: write_traces): every
//! group, size, count and the order, for every key and cumulative, and the text as
//! tracemalloc prints it; and traced_memory equal to the sum of the recovered sizes.
//! Compared over the traces whose most recent frame is in the scenario's own files (the
//! ones that cannot change between the snapshot and the core).

use crate::corpus::{self, Case};
use coreheap::analysis::traces::{self, Frame, Key, Stat};
use serde_json::Value;
use std::path::PathBuf;

const SCENARIOS: [&str; 3] = ["py_trace", "py_trace1", "py_trace_leak"];

fn traces_path(c: &Case) -> PathBuf {
    let name = c
        .truth
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace("truth", "traces");
    c.truth.with_file_name(name)
}

/// The trace cases of $COREHEAP_CORPUS, else of the cache's corpus-trace (made by
/// `make_corpus.py generate --scenarios py_trace,py_trace1,py_trace_leak`).
pub fn cases() -> Vec<Case> {
    let keep = |v: Vec<Case>| -> Vec<Case> {
        v.into_iter()
            .filter(|c| SCENARIOS.contains(&c.scenario.as_str()))
            .collect()
    };
    let v = keep(corpus::fresh_cases());
    if !v.is_empty() {
        return v;
    }
    let cache = std::env::var_os("COREHEAP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/coreheap"));
    let idx = cache.join("corpus-trace/index.json");
    assert!(
        idx.exists(),
        "no tracemalloc cases in $COREHEAP_CORPUS nor {}",
        idx.display()
    );
    eprintln!(
        "traces: no tracemalloc cases in $COREHEAP_CORPUS, using {}",
        idx.display()
    );
    keep(corpus::load_index(&idx))
}

fn frames(v: &Value) -> Vec<Frame> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| Frame {
            file: f[0].as_str().unwrap().to_string(),
            line: f[1].as_u64().unwrap() as u32,
        })
        .collect()
}

fn load(c: &Case) -> Value {
    let p = traces_path(c);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

struct Got {
    rec: coreheap::python::tracemalloc::Recovered,
    files: Vec<String>,
}

impl Got {
    fn stats(&self, key: Key, cumulative: bool) -> Vec<Stat> {
        let t = &self.rec.traces;
        let keep: Vec<bool> = t.filenames.iter().map(|f| self.files.contains(f)).collect();
        traces::statistics(t, key, cumulative, &|tr| {
            keep[t.tracebacks[tr.traceback as usize].frames[0].0 as usize]
        })
    }
}

fn recover(c: &Case, truth: &Value) -> Got {
    let p = corpus::open(c);
    let models = crate::census::models();
    let rec =
        traces::recover_process(&p, &models.cpython).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    let files = truth["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    Got { rec, files }
}

const KEYS: [(&str, Key, bool); 5] = [
    ("lineno", Key::Lineno, false),
    ("filename", Key::Filename, false),
    ("traceback", Key::Traceback, false),
    ("lineno_cumulative", Key::Lineno, true),
    ("filename_cumulative", Key::Filename, true),
];

fn check(c: &Case) -> Vec<String> {
    let truth = load(c);
    let got = recover(c, &truth);
    let mut bad = Vec::new();
    let st = &got.rec.state;
    if !st.tracing {
        bad.push(format!("{}: not tracing", c.name));
        return bad;
    }
    let want_nframe = truth["max_nframe"].as_u64().unwrap() as u32;
    if st.max_nframe != want_nframe {
        bad.push(format!(
            "{}: max_nframe {} != {want_nframe}",
            c.name, st.max_nframe
        ));
    }
    let sum: u64 = got.rec.traces.traces.iter().map(|t| t.size).sum();
    if st.traced_memory != Some(sum) {
        bad.push(format!(
            "{}: traced_memory {:?} != sum of recovered sizes {sum}",
            c.name, st.traced_memory
        ));
    }
    for d in got.rec.traces.diagnostics.iter() {
        if d.severity != coreheap::error::Severity::Info {
            bad.push(format!("{}: diagnostic: {d}", c.name));
        }
    }
    let mut compared = 0;
    for (name, key, cum) in KEYS {
        let want = truth["statistics"][name].as_array().unwrap();
        let stats = got.stats(key, cum);
        if stats.len() != want.len() {
            bad.push(format!(
                "{}: {name}: {} groups, the process had {}",
                c.name,
                stats.len(),
                want.len()
            ));
        }
        for (i, (g, w)) in stats.iter().zip(want).enumerate() {
            let wf = frames(&w[2]);
            let ws = w[0].as_u64().unwrap();
            let wc = w[1].as_u64().unwrap();
            if g.size != ws || g.count != wc || g.traceback != wf {
                bad.push(format!(
                    "{}: {name} #{i}: {:?} size {} count {}, the process had {:?} size {ws} count {wc}",
                    c.name, g.traceback, g.size, g.count, wf
                ));
                break;
            }
            compared += 1;
        }
        for (i, (g, w)) in stats
            .iter()
            .zip(truth["text"][name].as_array().unwrap())
            .enumerate()
        {
            let line = coreheap::report::traces::stat_line(g);
            if line != w.as_str().unwrap() {
                bad.push(format!("{}: {name} text #{i}: {line:?} != {w}", c.name));
                break;
            }
        }
    }
    eprintln!(
        "{}: {} traces ({} compared), traced_memory {:?} = sum, {} groups over 5 keys equal, found by {}",
        c.name,
        got.rec.traces.traces.len(),
        truth["traces"],
        st.traced_memory,
        compared,
        st.found_by
    );
    if compared < 50 {
        bad.push(format!("{}: only {compared} groups compared", c.name));
    }
    bad
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_traces_match_statistics() {
    corpus::check_cases(cases(), "tracemalloc", |_| true, check);
}

fn check_pair(a: &Case, b: &Case) -> Vec<String> {
    let (ta, tb) = (load(a), load(b));
    let (ga, gb) = (recover(a, &ta), recover(b, &tb));
    let mut bad = Vec::new();
    for (name, key) in [
        ("lineno", Key::Lineno),
        ("filename", Key::Filename),
        ("traceback", Key::Traceback),
    ] {
        let d = traces::compare(&ga.stats(key, false), &gb.stats(key, false));
        let want = tb["compare_to"][name].as_array().unwrap();
        if d.len() != want.len() {
            bad.push(format!(
                "{}: compare_to {name}: {} groups, the process had {}",
                b.name,
                d.len(),
                want.len()
            ));
        }
        for (i, (g, w)) in d.iter().zip(want).enumerate() {
            let row = (
                w[0].as_u64().unwrap(),
                w[1].as_i64().unwrap(),
                w[2].as_u64().unwrap(),
                w[3].as_i64().unwrap(),
            );
            if (g.size, g.size_delta, g.count, g.count_delta) != row || g.traceback != frames(&w[4])
            {
                bad.push(format!(
                    "{}: compare_to {name} #{i}: {:?} {:?}, the process had {row:?} {}",
                    b.name,
                    g.traceback,
                    (g.size, g.size_delta, g.count, g.count_delta),
                    w[4]
                ));
                break;
            }
        }
        eprintln!("{}: compare_to {name}: {} groups", b.name, want.len());
        for (i, (g, w)) in d
            .iter()
            .zip(tb["compare_text"][name].as_array().unwrap())
            .enumerate()
        {
            let line = coreheap::report::traces::diff_line(g);
            if line != w.as_str().unwrap() {
                bad.push(format!(
                    "{}: compare_to {name} text #{i}: {line:?} != {w}",
                    b.name
                ));
                break;
            }
        }
    }
    bad
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_trace_leak_pairs_match_compare_to() {
    let all = cases();
    let leak: Vec<&Case> = all
        .iter()
        .filter(|c| c.scenario == "py_trace_leak")
        .collect();
    let mut bad = Vec::new();
    let mut n = 0;
    for a in leak.iter().filter(|c| c.name.ends_with('A')) {
        let stem = a.name.trim_end_matches('A');
        if let Some(b) = leak.iter().find(|b| b.name == format!("{stem}B")) {
            n += 1;
            bad.extend(check_pair(a, b));
        }
    }
    assert!(n > 0, "no py_trace_leak pairs");
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// A traced core damaged on purpose: a bucket chain that loops, a bucket pointing outside
/// memory, a traceback claiming 60000 frames. Each is a diagnostic; the other traces are
/// still read; nothing panics or hangs.
#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn damaged_traces_table_gives_diagnostics_and_the_rest() {
    use coreheap::image::core::CoreFile;
    use coreheap::image::modules::SearchPaths;
    use coreheap::{Addr, Options, Process};
    let all = cases();
    let case = all
        .iter()
        .find(|c| c.scenario == "py_trace" && c.name.starts_with("pyenv-3.11"))
        .or_else(|| {
            all.iter()
                .find(|c| c.scenario == "py_trace" && !c.name.starts_with("pyenv-3.8"))
        })
        .expect("a py_trace case of 3.9+");
    let raw = std::fs::read(&case.core).unwrap();
    let opts = Options {
        search: SearchPaths {
            sysroot: case.sysroot.clone(),
            ..Default::default()
        },
        heap_models: None,
    };
    let models = crate::census::models();
    let open = |b: Vec<u8>| Process::from_core(CoreFile::from_bytes("damaged", b).unwrap(), &opts);
    let p = open(raw.clone());
    let base = traces::recover_process(&p, &models.cpython).unwrap();
    let n0 = base.traces.traces.len();
    let table = base.state.tables[0];
    let u64at = |a: u64| p.space.read_u64(Addr(a)).unwrap();
    let nbuckets = u64at(table.get() + 8);
    let buckets = u64at(table.get() + 0x10);
    let off = |a: u64| {
        let s = p
            .core
            .segments
            .iter()
            .find(|s| a >= s.vaddr.get() && a + 8 <= s.vaddr.get() + s.in_core)
            .expect("address in the core");
        (s.offset + (a - s.vaddr.get())) as usize
    };
    // Chains of two or more: a loop at the first, the second made to point outside.
    let mut chains = (0..nbuckets)
        .map(|b| u64at(buckets + 8 * b))
        .filter(|&h| h != 0 && u64at(h) != 0);
    let (looped, outside) = (chains.next().unwrap(), chains.next().unwrap());
    let tb_entry = chains.nth(5).unwrap();
    let tb = u64at(u64at(tb_entry + 0x18) + 8);
    let mut bytes = raw;
    let mut put = |a: u64, v: &[u8]| {
        let o = off(a);
        bytes[o..o + v.len()].copy_from_slice(v);
    };
    put(looped, &looped.to_le_bytes());
    put(outside, &0x0000_dead_0000_0000u64.to_le_bytes());
    put(tb + 8, &60000u16.to_le_bytes());
    let p2 = open(bytes);
    let got = traces::recover_process(&p2, &models.cpython).unwrap();
    let msgs: Vec<String> = got
        .traces
        .diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect();
    let all = msgs.join("\n");
    assert!(all.contains("loop"), "{all}");
    assert!(all.contains("outside"), "{all}");
    assert!(all.contains("60000 frames"), "{all}");
    let n = got.traces.traces.len();
    assert!(n > n0 / 2 && n < n0, "{n} of {n0} traces read");
}

/// A core of a process that was not tracing: the trace views are a one-line error with
/// the PYTHONTRACEMALLOC hint and exit 2; `info` says it was not tracing.
#[test]
fn not_tracing_is_one_line_and_exit_2() {
    let cases = corpus::reference_cases();
    for suite in ["trixie", "bookworm", "bullseye", "sid"] {
        let c = cases
            .iter()
            .find(|c| c.scenario == "py_heap" && c.name.starts_with(suite))
            .unwrap_or_else(|| panic!("{suite} py_heap reference case"));
        let run = |args: &[&str]| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_coreheap"));
            cmd.args(args).arg(&c.core);
            if let Some(s) = &c.sysroot {
                cmd.arg("--sysroot").arg(s);
            }
            cmd.output().unwrap()
        };
        for by in ["lineno", "filename", "traceback"] {
            let out = run(&["summary", "--quiet", "--by", by]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{suite} --by {by}: {err}");
            let last = err.lines().last().unwrap_or("");
            assert!(
                last.starts_with("coreheap: error: ") && last.contains("PYTHONTRACEMALLOC=N"),
                "{err}"
            );
        }
        let out = run(&["info", "--quiet", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["tracemalloc"]["tracing"], Value::Bool(false), "{suite}");
    }
}
