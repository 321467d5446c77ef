//! The glibc walker against the truth the C scenario wrote just before its core:
//! mallinfo2 (or mallinfo on 2.31) exactly, and the scenario's known chunk populations.

use crate::corpus::{self, Case};
use coreheap::alloc::glibc::{ChunkState, GlibcHeap};
use serde_json::Value;
use std::collections::BTreeMap;

/// The walk, and whether libc had a debug file (symbols) in this run.
fn walk_opts(case: &Case, no_debug: bool, core_only: bool) -> (GlibcHeap, bool) {
    let p = corpus::open_opts(case, no_debug, core_only);
    let models = coreheap::models::glibc_models(None).unwrap();
    let h = coreheap::alloc::glibc::analyze(&p, &models)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
        .expect("glibc found");
    let debug = p
        .modules
        .modules
        .iter()
        .any(|m| m.name().starts_with("libc") && m.debug_file.is_some());
    (h, debug)
}

/// mallinfo as glibc's int_mallinfo computes it, from our walk.
pub fn mallinfo(h: &GlibcHeap) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    let s = |f: &dyn Fn(&coreheap::alloc::glibc::Arena) -> u64| h.arenas.iter().map(f).sum::<u64>();
    m.insert("arena", s(&|a| a.system_bytes));
    m.insert(
        "ordblks",
        s(&|a| 1 + a.free.unsorted.chunks + a.free.smallbins.chunks + a.free.largebins.chunks),
    );
    m.insert("smblks", s(&|a| a.free.fastbins.chunks));
    m.insert("fsmblks", s(&|a| a.free.fastbins.bytes));
    m.insert(
        "fordblks",
        s(&|a| {
            a.top_bytes
                + a.free.fastbins.bytes
                + a.free.unsorted.bytes
                + a.free.smallbins.bytes
                + a.free.largebins.bytes
        }),
    );
    m.insert("hblks", h.mmapped.chunks);
    m.insert("hblkhd", h.mmapped.bytes);
    m.insert("keepcost", h.arenas[0].top_bytes);
    m.insert(
        "uordblks",
        s(&|a| a.in_use.bytes + a.free.tcache.bytes + a.overhead_bytes),
    );
    m
}

fn sum_by_size(v: &Value, key: &str, out: &mut BTreeMap<u64, u64>) {
    if let Some(list) = v.get(key).and_then(|x| x.as_array()) {
        for e in list {
            *out.entry(e["chunk_size"].as_u64().unwrap()).or_default() +=
                e["count"].as_u64().unwrap();
        }
    }
}

/// Returns mismatches for one C case, walked with libc's debug file when there is one
/// (symbols) and without (heuristics only): both must match the truth.
/// And with no file at all (only the core's bytes: no libc banner, so no version, no
/// `.data` initializer, no symbols): every model is tried and the arena ring found from the
/// thread arenas' heaps.
pub fn check(case: &Case) -> Vec<String> {
    let mut bad = check_mode(case, false, false);
    bad.extend(check_mode(case, true, false));
    bad.extend(check_mode(case, true, true));
    bad
}

fn check_mode(case: &Case, no_debug: bool, core_only: bool) -> Vec<String> {
    let (h, debug) = walk_opts(case, no_debug, core_only);
    let t = corpus::truth(case);
    let mut bad = Vec::new();
    let mode = match (no_debug, core_only) {
        (_, true) => "core only",
        (true, _) => "heuristics",
        _ => "symbols",
    };
    let symbol = h.main_arena_found_by == coreheap::alloc::glibc::FoundBy::Symbol;
    if symbol != debug {
        bad.push(format!(
            "{} ({mode}): main_arena found by {:?} with libc debug file {}",
            case.name,
            h.main_arena_found_by,
            if debug { "present" } else { "absent" }
        ));
    }
    let mi = mallinfo(&h);
    for (k, v) in t["mallinfo"].as_object().unwrap() {
        if k == "usmblks" {
            continue;
        }
        let want = v.as_u64().unwrap();
        let got = mi.get(k.as_str()).copied();
        if got != Some(want) {
            bad.push(format!(
                "{}: mallinfo.{k}: walker {got:?}, process {want}",
                case.name
            ));
        }
    }
    for a in &h.arenas {
        if !a.identity_holds {
            bad.push(format!(
                "{}: identity fails for arena {}",
                case.name, a.address
            ));
        }
    }
    // Known live populations per arena: the truth maps threads to arenas.
    let threads: BTreeMap<u64, &Value> = t["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|th| (th["index"].as_u64().unwrap(), th))
        .collect();
    for ar in t["arenas"].as_array().unwrap() {
        let mut want: BTreeMap<u64, u64> = BTreeMap::new();
        for idx in ar["threads"].as_array().unwrap() {
            sum_by_size(threads[&idx.as_u64().unwrap()], "live", &mut want);
        }
        let arena = match ar["arena"].as_str().unwrap() {
            "main" => &h.arenas[0],
            addr => match h.arenas.iter().find(|a| a.address.to_string() == addr) {
                Some(a) => a,
                None => {
                    bad.push(format!("{}: arena {addr} not found", case.name));
                    continue;
                }
            },
        };
        let heaps: Vec<_> = arena
            .heaps
            .iter()
            .map(|s| (s.address.get(), s.address.get() + s.size))
            .collect();
        let mut got: BTreeMap<u64, u64> = BTreeMap::new();
        for c in h.chunks.iter().filter(|c| c.state() == ChunkState::InUse) {
            if heaps
                .iter()
                .any(|&(s, e)| c.addr.get() >= s && c.addr.get() < e)
            {
                *got.entry(c.size()).or_default() += 1;
            }
        }
        for (size, n) in want {
            let g = got.get(&size).copied().unwrap_or(0);
            if g != n {
                bad.push(format!(
                    "{}: arena {}: live chunks of {size:#x}: walker {g}, truth {n}",
                    case.name, arena.address
                ));
            }
        }
    }
    // mmapped chunks and tcache contents over the whole process, per chunk size.
    let mut want_mm = BTreeMap::new();
    sum_by_size(&t, "mmapped", &mut want_mm);
    let mut got_mm = BTreeMap::new();
    for c in h.chunks.iter().filter(|c| c.state() == ChunkState::Mmapped) {
        *got_mm.entry(c.size()).or_default() += 1u64;
    }
    if want_mm != got_mm {
        bad.push(format!(
            "{}: mmapped chunks {got_mm:?}, truth {want_mm:?}",
            case.name
        ));
    }
    let mut want_tc = BTreeMap::new();
    for th in threads.values() {
        sum_by_size(th, "tcache", &mut want_tc);
    }
    let mut got_tc = BTreeMap::new();
    for c in h.chunks.iter().filter(|c| c.state() == ChunkState::Tcache) {
        *got_tc.entry(c.size()).or_default() += 1u64;
    }
    for (size, n) in &want_tc {
        let g = got_tc.get(size).copied().unwrap_or(0);
        if g < *n {
            bad.push(format!(
                "{}: tcache chunks of {size:#x}: walker {g}, truth at least {n}",
                case.name
            ));
        }
    }
    for d in h.diagnostics.iter() {
        // Without files the libc banner is unreadable: saying the version is unknown and
        // which model was chosen is the expected warning there.
        let expected = core_only && d.message.contains("version is not readable");
        if d.severity >= coreheap::error::Severity::Warning && !expected {
            bad.push(format!("{} ({mode}): diagnostic: {d}", case.name));
        }
    }
    bad
}

fn check_all(cases: Vec<Case>) {
    corpus::check_cases(cases, "c_heap", |c| c.scenario == "c_heap", check);
}

#[test]
fn reference_c_heap_matches_mallinfo() {
    check_all(corpus::reference_cases());
}

#[test]
#[ignore = "needs cores generated on this machine: run tests/run-all"]
fn fresh_c_heap_matches_mallinfo() {
    check_all(corpus::fresh_cases());
}
