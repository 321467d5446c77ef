//! tracemalloc's traces, read from a core: the state (is it tracing, with how many frames,
//! traced and peak memory) and every trace of every domain, with its interned traceback.
//!
//! Facts (round2-facts.md §A, with their sources): 3.8–3.11 keep the config in the
//! exported `_Py_tracemalloc_config` and the tables in file-scope statics of
//! Modules/_tracemalloc.c; 3.12+ keep everything in `_PyRuntime.tracemalloc`
//! (Include/internal/pycore_tracemalloc.h). The domain-0 traces table is found without
//! symbols by its signature — the only `_Py_hashtable_t` hashed by the exported
//! `_Py_hashtable_hash_ptr`, compared by `_Py_hashtable_compare_direct`, with a value
//! destructor (3.9+) or 16-byte inline data (3.8) — and cross-checked against the config
//! (3.8–3.11) or the per-version `_PyRuntime` offset (3.12+). Every walk is bounded: bucket
//! chains have a cycle guard (Brent), counts are capped by what the core can hold, and an
//! unreadable entry, trace or traceback is a diagnostic, never a panic.

use crate::addr::{Addr, Range};
use crate::error::{Diagnostic, Diagnostics};
use crate::image::memory::AddressSpace;
use crate::image::modules::Module;
use crate::image::process::Process;
use crate::image::version::PythonInfo;
use crate::models::{CpythonModel, HashtableKind, NframeKind, Tracemalloc};
use serde::Serialize;
use std::collections::HashMap;

/// Python/hashtable.c (3.9+) `_Py_hashtable_t`: nentries, nbuckets, buckets,
/// get_entry_func, hash_func, compare_func, key_destroy_func, value_destroy_func,
/// alloc {malloc, free} (round2-facts.md §A.3, identical 3.9.2–3.14.10).
const PT_SIZE: u64 = 0x50;
/// Modules/hashtable.c (3.8) `_Py_hashtable_t`: num_buckets, entries, buckets, key_size,
/// data_size, hash_func, compare_func, alloc {malloc, free}.
const IT_SIZE: u64 = 0x48;
/// TRACEBACK_SIZE: frames start at +12 (after hash and nframe[/total_nframe]); each
/// `frame_t` is packed {PyObject *filename; unsigned int lineno} (12 bytes).
const TB_FRAMES: u64 = 12;
const FRAME_SIZE: u64 = 12;
/// 3.9+ MAX_NFRAME = min(UINT16_MAX, ...); 3.8 allows more, but a traceback that long is
/// not plausible either.
const MAX_NFRAME: u32 = 65535;
/// HASHTABLE_MIN_SIZE in both implementations.
const MIN_BUCKETS: u64 = 16;

/// What `tracemalloc.is_tracing()`, `get_traceback_limit()` and `get_traced_memory()`
/// would have answered.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct State {
    pub tracing: bool,
    pub max_nframe: u32,
    pub traced_memory: Option<u64>,
    pub peak_traced_memory: Option<u64>,
    /// Traces recovered (every domain).
    pub traces: u64,
    /// Domains with traces, ascending (0 is Python's own allocators).
    pub domains: Vec<u32>,
    /// How the traces table was found.
    pub found_by: &'static str,
    /// The traces tables read (domain 0 first).
    #[serde(skip)]
    pub tables: Vec<Addr>,
}

/// One trace: the allocator's block address (the key), the requested size, its traceback
/// (index into `Traces::tracebacks`) and its domain.
#[derive(Debug, Clone, Copy)]
pub struct Trace {
    pub addr: u64,
    pub size: u64,
    pub traceback: u32,
    pub domain: u32,
}

/// An interned traceback: frames most recent first (as `_tracemalloc._get_traces()`
/// returns them), each (filename index into `Traces::filenames`, line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceback {
    pub frames: Vec<(u32, u32)>,
    pub total_nframe: u32,
}

#[derive(Debug, Default)]
pub struct Traces {
    pub traces: Vec<Trace>,
    pub tracebacks: Vec<Traceback>,
    /// Distinct by value (tracemalloc interns filenames by value).
    pub filenames: Vec<String>,
    pub diagnostics: Diagnostics,
}

/// The state and, when tracing, every trace.
pub struct Recovered {
    pub state: State,
    pub traces: Traces,
}

struct Syms {
    hash_ptr: Option<u64>,
    compare_direct: Option<u64>,
    destroy: Option<u64>,
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// A small fixed-size read, in one region or across two.
fn bytes(space: &AddressSpace, a: u64, n: usize, buf: &mut [u8; 128]) -> bool {
    if let Some(s) = space.slice(Addr(a), n as u64) {
        buf[..n].copy_from_slice(s);
        return true;
    }
    space.read(Addr(a), &mut buf[..n]).is_ok()
}

struct Reader<'a> {
    p: &'a Process,
    tm: &'a Tracemalloc,
    syms: Syms,
    /// Upper bound for any count read from the core: entries of 32 bytes in the core.
    cap: u64,
}

impl Reader<'_> {
    fn space(&self) -> &AddressSpace {
        &self.p.space
    }

    /// What both hashtable layouts must show: the allocator's malloc and free (two distinct
    /// non-null function pointers), a power-of-two bucket count and an entry count within
    /// the caps, and a bucket array in the core.
    fn plausible_table(&self, nb: u64, n: u64, buckets: u64, malloc: u64, free: u64) -> bool {
        malloc != 0
            && free != 0
            && malloc != free
            && nb.is_power_of_two()
            && nb >= MIN_BUCKETS
            && nb <= self.cap
            && n <= self.cap
            && buckets != 0
            && self.space().is_available(Addr(buckets))
    }

    /// Is `ht` a traces table (domain 0 or a per-domain one)?
    fn is_traces_table(&self, ht: u64) -> bool {
        if ht == 0 || ht % 8 != 0 {
            return false;
        }
        let mut b = [0u8; 128];
        match self.tm.hashtable {
            HashtableKind::Pointer => {
                let mut w = [0u8; 0x50];
                if self.space().read(Addr(ht), &mut w).is_err() {
                    return false;
                }
                let (n, nb, buckets) = (u64_at(&w, 0), u64_at(&w, 8), u64_at(&w, 0x10));
                let (get, hash, cmp) = (u64_at(&w, 0x18), u64_at(&w, 0x20), u64_at(&w, 0x28));
                let (kd, vd, ma, fr) = (
                    u64_at(&w, 0x30),
                    u64_at(&w, 0x38),
                    u64_at(&w, 0x40),
                    u64_at(&w, 0x48),
                );
                Some(hash) == self.syms.hash_ptr
                    && Some(cmp) == self.syms.compare_direct
                    && get != 0
                    && kd == 0
                    && vd != 0
                    && self.plausible_table(nb, n, buckets, ma, fr)
            }
            HashtableKind::Inline => {
                if !bytes(self.space(), ht, IT_SIZE as usize, &mut b) {
                    return false;
                }
                let (nb, n, buckets) = (u64_at(&b, 0), u64_at(&b, 8), u64_at(&b, 0x10));
                let (ks, ds) = (u64_at(&b, 0x18), u64_at(&b, 0x20));
                let (hash, cmp, ma, fr) = (
                    u64_at(&b, 0x28),
                    u64_at(&b, 0x30),
                    u64_at(&b, 0x38),
                    u64_at(&b, 0x40),
                );
                // 8-byte keys: the exported hash_ptr/compare_direct; 12-byte (pointer_t)
                // keys once a foreign domain was traced: static functions.
                let funcs = match ks {
                    8 => Some(hash) == self.syms.hash_ptr && Some(cmp) == self.syms.compare_direct,
                    12 => hash != 0 && cmp != 0 && hash != cmp,
                    _ => false,
                };
                funcs && ds == 16 && self.plausible_table(nb, n, buckets, ma, fr)
            }
        }
    }

    /// 3.9+ `tracemalloc_domains`: compare_direct, value destructor `_Py_hashtable_destroy`.
    fn is_domains_table(&self, ht: u64) -> bool {
        let mut w = [0u8; 0x50];
        if ht == 0 || self.space().read(Addr(ht), &mut w).is_err() {
            return false;
        }
        let nb = u64_at(&w, 8);
        Some(u64_at(&w, 0x28)) == self.syms.compare_direct
            && self.syms.destroy.is_some()
            && Some(u64_at(&w, 0x38)) == self.syms.destroy
            && Some(u64_at(&w, 0x20)) != self.syms.hash_ptr
            && nb.is_power_of_two()
            && nb >= MIN_BUCKETS
            && nb <= self.cap
    }

    /// Words of the module's writable memory pointing at a table that passes `test`.
    fn scan(&self, ranges: &[Range], test: impl Fn(u64) -> bool) -> Vec<(Addr, u64)> {
        let mut hits = Vec::new();
        for rg in ranges {
            let mut a = rg.start.0 & !7;
            while a + 8 <= rg.end.0 {
                if let Ok(v) = self.space().read_u64(Addr(a)) {
                    if v > 0x10000 && v % 8 == 0 && test(v) {
                        hits.push((Addr(a), v));
                    }
                }
                a += 8;
            }
        }
        hits
    }
}

/// How much of a table [`walk_table`] reads: at most `cap` entries, of the buckets in
/// `window` (`n` from `first`) when given.
#[derive(Clone, Copy)]
struct Bound {
    cap: u64,
    window: Option<(u64, u64)>,
}

/// Every (key, value-or-data address) entry of a table, through `f(entry, key_addr)`.
/// Bounded: a chain that loops, or an entry outside memory, ends that chain with a
/// diagnostic; at most `cap` entries are visited in all.
fn walk_table(
    space: &AddressSpace,
    kind: HashtableKind,
    ht: u64,
    bound: Bound,
    what: &str,
    diags: &mut Diagnostics,
    mut f: impl FnMut(&[u8]),
) {
    let Bound { cap, window } = bound;
    let mut h = [0u8; 0x50];
    let size = if kind == HashtableKind::Pointer {
        PT_SIZE
    } else {
        IT_SIZE
    };
    if space.read(Addr(ht), &mut h[..size as usize]).is_err() {
        diags.push(Diagnostic::warning(format!("{what}: table header not readable")).at(Addr(ht)));
        return;
    }
    let (nentries, nbuckets, buckets, entry_size) = match kind {
        HashtableKind::Pointer => (u64_at(&h, 0), u64_at(&h, 8), u64_at(&h, 0x10), 32u64),
        HashtableKind::Inline => (
            u64_at(&h, 8),
            u64_at(&h, 0),
            u64_at(&h, 0x10),
            16 + u64_at(&h, 0x18) + u64_at(&h, 0x20),
        ),
    };
    if !nbuckets.is_power_of_two() || nbuckets > cap || nentries > cap || entry_size > 64 {
        diags.push(
            Diagnostic::warning(format!(
                "{what}: impossible table ({nbuckets} buckets, {nentries} entries)"
            ))
            .at(Addr(ht)),
        );
        return;
    }
    let table = space.slice(Addr(buckets), nbuckets * 8);
    let mut seen = 0u64;
    let (mut loops, mut outside) = (0u64, 0u64);
    let mut first_bad: Option<(Addr, &'static str)> = None;
    let mut e = [0u8; 128];
    // The fuzzing harness's window: `n` buckets from `first` (all buckets otherwise).
    let (from, to) = match window {
        Some((first, n)) => (first.min(nbuckets), first.saturating_add(n).min(nbuckets)),
        None => (0, nbuckets),
    };
    for b in from..to {
        let head = match table {
            Some(t) => u64_at(t, (b * 8) as usize),
            None => match space.read_u64(Addr(buckets.wrapping_add(b * 8))) {
                Ok(v) => v,
                Err(_) => {
                    outside += 1;
                    first_bad.get_or_insert((Addr(buckets.wrapping_add(b * 8)), "bucket array"));
                    continue;
                }
            },
        };
        // Brent's cycle detection on the chain.
        let (mut cur, mut tortoise, mut power, mut lam) = (head, head, 1u64, 0u64);
        while cur != 0 {
            if seen >= cap {
                diags.push(Diagnostic::warning(format!(
                    "{what}: more than {cap} entries: walk stopped"
                )));
                return;
            }
            if !bytes(space, cur, entry_size as usize, &mut e) {
                outside += 1;
                first_bad.get_or_insert((Addr(cur), "entry outside memory"));
                break;
            }
            seen += 1;
            f(&e[..entry_size as usize]);
            cur = u64_at(&e, 0);
            lam += 1;
            if cur == tortoise && cur != 0 {
                loops += 1;
                first_bad.get_or_insert((Addr(cur), "bucket chain loops"));
                break;
            }
            if lam == power {
                tortoise = cur;
                power *= 2;
                lam = 0;
            }
        }
    }
    if loops > 0 || outside > 0 {
        let (a, why) = first_bad.unwrap();
        diags.push(
            Diagnostic::warning(format!(
                "{what}: {loops} bucket chains loop, {outside} entries are outside the core's memory (first: {why}); the readable entries are used"
            ))
            .at(a),
        );
    }
    if seen != nentries && loops == 0 && outside == 0 && window.is_none() {
        diags.push(Diagnostic::warning(format!(
            "{what}: {seen} entries found, the table says {nentries}"
        )));
    }
}

fn plausible_config(initialized: u32, tracing: u32, max_nframe: u32) -> bool {
    initialized <= 2 && tracing <= 1 && (1..=MAX_NFRAME).contains(&max_nframe)
}

/// Where tracemalloc's state was found ([`recover_window`] can be given it again).
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Located {
    tracing: Option<bool>,
    max_nframe: Option<u32>,
    traces: Option<u64>,
    domains: Option<u64>,
    traced_memory: Option<u64>,
    peak: Option<u64>,
    /// Where traced_memory would be, to find it next to the traces pointer (3.8–3.11
    /// without symbols).
    traces_slot: Option<Addr>,
    found_by: &'static str,
}

fn locate(r: &Reader, module: &Module, runtime: Option<Addr>, diags: &mut Diagnostics) -> Located {
    let space = r.space();
    let tm = r.tm;
    let mut loc = Located {
        tracing: None,
        max_nframe: None,
        traces: None,
        domains: None,
        traced_memory: None,
        peak: None,
        traces_slot: None,
        found_by: "signature",
    };
    let ranges = r.p.writable_ranges(module);
    if let (Some(off), Some(rt)) = (tm.runtime_offset, runtime) {
        // 3.12+: struct _tracemalloc_runtime_state inside _PyRuntime.
        let try_at = |base: Addr| -> Option<(u32, u32, u32)> {
            let c = (
                space.read_u32(base).ok()?,
                space.read_u32(base.wrapping_add(4)).ok()?,
                space.read_u32(base.wrapping_add(8)).ok()?,
            );
            plausible_config(c.0, c.1, c.2).then_some(c)
        };
        let field =
            |base: Addr, o: Option<u64>| o.and_then(|o| space.read_u64(base.wrapping_add(o)).ok());
        let mut base = rt.wrapping_add(off);
        let ok = |base: Addr| {
            try_at(base).is_some_and(|c| {
                let t = field(base, tm.traces).unwrap_or(0);
                // Lazily initialised (3.12) tables are NULL until tracemalloc starts.
                (c.0 == 0 && t == 0) || r.is_traces_table(t)
            })
        };
        let mut found = ok(base);
        loc.found_by = "_PyRuntime offset";
        if !found {
            // Another micro release: find the traces pointer in _PyRuntime by signature,
            // then check the config and the empty traceback around it.
            let toff = tm.traces.unwrap_or(0xb8);
            let rg = [Range::new(rt, rt.wrapping_add(0x10000))];
            for (slot, _) in r.scan(&rg, |v| r.is_traces_table(v)) {
                let b = Addr(slot.0.wrapping_sub(toff));
                let empty_ok = tm.empty_traceback.is_none_or(|e| {
                    let e = b.wrapping_add(e);
                    space.read_u32(e.wrapping_add(8)).ok() == Some(0x0001_0001)
                });
                if ok(b) && empty_ok {
                    base = b;
                    found = true;
                    loc.found_by = "_PyRuntime signature";
                    diags.push(Diagnostic::info(format!(
                        "tracemalloc: found at _PyRuntime+{:#x}, not at the model's +{off:#x}",
                        b.0 - rt.0
                    )));
                    break;
                }
            }
        }
        if found {
            let (_, tracing, nf) = try_at(base).unwrap();
            loc.tracing = Some(tracing == 1);
            loc.max_nframe = Some(nf);
            loc.traces = field(base, tm.traces).filter(|&t| t != 0);
            loc.domains = field(base, tm.domains).filter(|&t| t != 0);
            loc.traced_memory = field(base, tm.traced_memory);
            loc.peak = field(base, tm.peak_traced_memory);
            return loc;
        }
        diags.push(Diagnostic::warning(
            "tracemalloc: its state is not at the model's _PyRuntime offset and no traces table was found in _PyRuntime",
        ));
    }
    // 3.8–3.11: the exported config, then the tables by signature.
    if let Some(s) = module.symbol(space, "_Py_tracemalloc_config") {
        let c = (
            space.read_u32(s.addr).ok(),
            space.read_u32(s.addr.wrapping_add(4)).ok(),
            space.read_u32(s.addr.wrapping_add(8)).ok(),
        );
        if let (Some(i), Some(t), Some(n)) = c {
            if plausible_config(i, t, n) {
                loc.tracing = Some(t == 1);
                loc.max_nframe = Some(n);
            } else {
                diags.push(
                    Diagnostic::warning(format!(
                        "tracemalloc: _Py_tracemalloc_config holds an impossible config ({i}, {t}, {n})"
                    ))
                    .at(s.addr),
                );
            }
        }
    }
    // Local statics, when a symbol table has them (unstripped builds).
    let sym = |n: &str| module.symbol(space, n).map(|s| s.addr);
    if let Some(a) = sym("tracemalloc_traces") {
        let t = space.read_u64(a).unwrap_or(0);
        if r.is_traces_table(t) {
            loc.traces = Some(t);
            loc.traces_slot = Some(a);
            loc.found_by = "symbol";
        }
    }
    if loc.traces.is_none() {
        let hits = r.scan(&ranges, |v| r.is_traces_table(v));
        match hits.as_slice() {
            [] => {}
            [(slot, t)] => {
                loc.traces = Some(*t);
                loc.traces_slot = Some(*slot);
            }
            many => {
                diags.push(Diagnostic::warning(format!(
                    "tracemalloc: {} candidates for the traces table; the first is used",
                    many.len()
                )));
                loc.traces = Some(many[0].1);
                loc.traces_slot = Some(many[0].0);
            }
        }
    }
    if tm.hashtable == HashtableKind::Pointer {
        if let Some(a) = sym("tracemalloc_domains") {
            loc.domains = space.read_u64(a).ok().filter(|&d| r.is_domains_table(d));
        }
        if loc.domains.is_none() && loc.traces.is_some() {
            let hits = r.scan(&ranges, |v| r.is_domains_table(v));
            // Prefer the one declared next to the traces pointer.
            let near =
                |h: &&(Addr, u64)| loc.traces_slot.map_or(u64::MAX, |s| h.0 .0.abs_diff(s.0));
            loc.domains = hits.iter().min_by_key(near).map(|h| h.1);
        }
    }
    if let (Some(a), Some(b)) = (
        sym("tracemalloc_traced_memory"),
        sym("tracemalloc_peak_traced_memory"),
    ) {
        loc.traced_memory = space.read_u64(a).ok();
        loc.peak = space.read_u64(b).ok();
    }
    loc
}

/// Read a compact str's text (PyASCIIObject: length at +0x10, state at +0x20; data after
/// the ASCII or compact header, per the model).
fn read_str(space: &AddressSpace, model: &CpythonModel, o: u64) -> Option<String> {
    let len = space.read_u64(Addr(o.wrapping_add(0x10))).ok()?;
    let state = space.read_u32(Addr(o.wrapping_add(0x20))).ok()?;
    let kind = ((state >> 2) & 7) as u64;
    let compact = state & (1 << 5) != 0;
    let ascii = state & (1 << 6) != 0;
    if !compact || !matches!(kind, 1 | 2 | 4) || len > 1 << 20 {
        return None;
    }
    let data = o.wrapping_add(if ascii {
        model.objects.str_ascii_data
    } else {
        model.objects.str_compact_data
    });
    let mut buf = vec![0u8; (len * kind) as usize];
    space.read(Addr(data), &mut buf).ok()?;
    Some(match kind {
        1 => buf.iter().map(|&b| b as char).collect(),
        2 => buf
            .chunks_exact(2)
            .map(|c| char::from_u32(u16::from_le_bytes([c[0], c[1]]) as u32).unwrap_or('\u{fffd}'))
            .collect(),
        _ => buf
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_le_bytes(c.try_into().unwrap())).unwrap_or('\u{fffd}')
            })
            .collect(),
    })
}

struct Interner<'a> {
    space: &'a AddressSpace,
    model: &'a CpythonModel,
    nframe: NframeKind,
    max_nframe: u32,
    tb_by_addr: HashMap<u64, u32>,
    fn_by_addr: HashMap<u64, u32>,
    fn_by_name: HashMap<String, u32>,
    out: Traces,
    bad_tracebacks: u64,
    bad_filenames: u64,
    first_bad_tb: Option<(Addr, String)>,
}

const BAD: u32 = u32::MAX;

impl Interner<'_> {
    fn filename(&mut self, p: u64) -> u32 {
        if let Some(&i) = self.fn_by_addr.get(&p) {
            return i;
        }
        let name = read_str(self.space, self.model, p).unwrap_or_else(|| {
            self.bad_filenames += 1;
            format!("<unreadable str at {p:#x}>")
        });
        let n = self.out.filenames.len() as u32;
        let i = *self.fn_by_name.entry(name.clone()).or_insert(n);
        if i == n {
            self.out.filenames.push(name);
        }
        self.fn_by_addr.insert(p, i);
        i
    }

    fn traceback(&mut self, a: u64) -> u32 {
        if let Some(&i) = self.tb_by_addr.get(&a) {
            return i;
        }
        let i = self.read_traceback(a);
        self.tb_by_addr.insert(a, i);
        i
    }

    fn read_traceback(&mut self, a: u64) -> u32 {
        let mut h = [0u8; 128];
        if !bytes(self.space, a, 12, &mut h) {
            self.bad_tracebacks += 1;
            self.first_bad_tb
                .get_or_insert((Addr(a), "traceback outside memory".into()));
            return BAD;
        }
        let (nframe, total) = match self.nframe {
            NframeKind::Int => {
                let n = u32_at(&h, 8);
                (n, n)
            }
            NframeKind::U16 => (
                u16::from_le_bytes([h[8], h[9]]) as u32,
                u16::from_le_bytes([h[10], h[11]]) as u32,
            ),
        };
        // traceback_get_frames stores at most max_nframe frames, and at least one (an
        // empty stack is the static empty traceback with one "<unknown>" frame).
        if nframe == 0 || nframe > self.max_nframe {
            self.bad_tracebacks += 1;
            self.first_bad_tb.get_or_insert((
                Addr(a),
                format!("{nframe} frames, the limit is {}", self.max_nframe),
            ));
            return BAD;
        }
        let mut raw = vec![0u8; (nframe as u64 * FRAME_SIZE) as usize];
        if self
            .space
            .read(Addr(a.wrapping_add(TB_FRAMES)), &mut raw)
            .is_err()
        {
            self.bad_tracebacks += 1;
            self.first_bad_tb
                .get_or_insert((Addr(a), "frames outside memory".into()));
            return BAD;
        }
        let frames = raw
            .chunks_exact(FRAME_SIZE as usize)
            .map(|f| (self.filename(u64_at(f, 0)), u32_at(f, 8)))
            .collect();
        let tb = Traceback {
            frames,
            total_nframe: total,
        };
        self.out.tracebacks.push(tb);
        (self.out.tracebacks.len() - 1) as u32
    }
}

/// The tracemalloc layout for this interpreter, if the model has one.
pub fn layout(model: &CpythonModel) -> Option<&Tracemalloc> {
    model.tracemalloc.as_ref()
}

/// Locate tracemalloc's state and, when `walk` and tracing, read every trace.
pub fn recover(
    p: &Process,
    py: &PythonInfo,
    model: &CpythonModel,
    walk: bool,
) -> Result<Recovered, String> {
    recover_window(p, py, model, walk, None)
}

/// [`recover`], reading of each traces table only the `n` buckets from `first` when
/// `window` is `Some((first, n))`: the fuzzing harness walks the buckets its bytes were
/// overlaid near.
#[doc(hidden)]
pub fn recover_window(
    p: &Process,
    py: &PythonInfo,
    model: &CpythonModel,
    walk: bool,
    window: Option<(u64, u64)>,
) -> Result<Recovered, String> {
    recover_located(p, py, model, walk, window, None).map(|r| r.0)
}

/// [`recover_window`] with the state's location given (`known`, from an earlier call on
/// the same core) instead of searched for; returns the location used too.
#[doc(hidden)]
pub fn recover_located(
    p: &Process,
    py: &PythonInfo,
    model: &CpythonModel,
    walk: bool,
    window: Option<(u64, u64)>,
    known: Option<&Located>,
) -> Result<(Recovered, Located), String> {
    let tm = layout(model)
        .ok_or_else(|| format!("the {} CPython model has no tracemalloc layout", model.name))?;
    let module = p
        .modules
        .modules
        .iter()
        .find(|m| m.path == py.module)
        .ok_or("the Python module is not mapped")?;
    let space = &p.space;
    let sym = |n: &str| {
        module
            .symbol(space, n)
            .or_else(|| p.modules.find_symbol(space, n).map(|x| x.1))
            .map(|s| s.addr.0)
    };
    let r = Reader {
        p,
        tm,
        syms: Syms {
            hash_ptr: sym("_Py_hashtable_hash_ptr"),
            compare_direct: sym("_Py_hashtable_compare_direct"),
            destroy: sym("_Py_hashtable_destroy"),
        },
        cap: (p.core.file_len() / 32).max(1 << 20),
    };
    let mut diags = Diagnostics::default();
    if r.syms.hash_ptr.is_none() || r.syms.compare_direct.is_none() {
        diags.push(Diagnostic::warning(
            "tracemalloc: _Py_hashtable_hash_ptr/_Py_hashtable_compare_direct are not readable (no dynamic symbols): its tables cannot be recognised",
        ));
    }
    let loc = match known {
        Some(l) => l.clone(),
        None => locate(&r, module, py.runtime, &mut diags),
    };
    let located = loc.clone();
    let tracing = match (loc.tracing, loc.traces) {
        (Some(t), _) => t,
        (None, Some(_)) => {
            diags.push(Diagnostic::warning(
                "tracemalloc: its config is not readable; a traces table was found, so tracing is assumed",
            ));
            true
        }
        (None, None) => false,
    };
    let max_nframe = loc.max_nframe.unwrap_or(1);
    let mut state = State {
        tracing,
        max_nframe,
        traced_memory: loc.traced_memory,
        peak_traced_memory: loc.peak,
        traces: 0,
        domains: Vec::new(),
        found_by: loc.found_by,
        tables: Vec::new(),
    };
    let mut it = Interner {
        space,
        model,
        nframe: tm.nframe,
        max_nframe: if loc.max_nframe.is_some() {
            max_nframe
        } else {
            MAX_NFRAME
        },
        tb_by_addr: HashMap::new(),
        fn_by_addr: HashMap::new(),
        fn_by_name: HashMap::new(),
        out: Traces::default(),
        bad_tracebacks: 0,
        bad_filenames: 0,
        first_bad_tb: None,
    };
    if !tracing || !walk {
        it.out.diagnostics = diags;
        return Ok((
            Recovered {
                state,
                traces: it.out,
            },
            located,
        ));
    }
    let Some(traces_ht) = loc.traces else {
        diags.push(Diagnostic::error(
            "tracemalloc was tracing, but its traces table was not found",
        ));
        it.out.diagnostics = diags;
        return Ok((
            Recovered {
                state,
                traces: it.out,
            },
            located,
        ));
    };
    // (table, domain or None when the key holds it)
    let mut tables: Vec<(u64, Option<u32>)> = Vec::new();
    match tm.hashtable {
        HashtableKind::Pointer => {
            tables.push((traces_ht, Some(0)));
            if let Some(d) = loc.domains {
                let mut doms = Vec::new();
                walk_table(
                    space,
                    HashtableKind::Pointer,
                    d,
                    Bound {
                        cap: 1 << 16,
                        window: None,
                    },
                    "tracemalloc domains",
                    &mut diags,
                    |e| doms.push((u64_at(e, 0x10) as u32, u64_at(e, 0x18))),
                );
                for (dom, t) in doms {
                    if r.is_traces_table(t) {
                        tables.push((t, Some(dom)));
                    } else {
                        diags.push(
                            Diagnostic::warning(format!(
                                "tracemalloc: the traces table of domain {dom} is not readable"
                            ))
                            .at(Addr(t)),
                        );
                    }
                }
            } else if max_nframe > 0 {
                diags.push(Diagnostic::info(
                    "tracemalloc: no domains table found: only domain 0 is read",
                ));
            }
        }
        HashtableKind::Inline => tables.push((traces_ht, None)),
    }
    state.tables = tables.iter().map(|t| Addr(t.0)).collect();
    let mut bad_traces = 0u64;
    let mut bad_trace_at = None;
    let mut bad_values = 0u64;
    let mut out: Vec<Trace> = Vec::new();
    for &(t, dom) in &tables {
        let cap = r.cap;
        let mut push = |addr: u64, size: u64, tb: u64, domain: u32| {
            let i = it.traceback(tb);
            if i == BAD {
                bad_traces += 1;
            } else {
                out.push(Trace {
                    addr,
                    size,
                    traceback: i,
                    domain,
                });
            }
        };
        match tm.hashtable {
            HashtableKind::Pointer => {
                let domain = dom.unwrap_or(0);
                walk_table(
                    space,
                    tm.hashtable,
                    t,
                    Bound { cap, window },
                    "tracemalloc traces",
                    &mut diags,
                    |e| {
                        let (key, v) = (u64_at(e, 0x10), u64_at(e, 0x18));
                        match space.slice(Addr(v), 16) {
                            Some(b) => push(key, u64_at(b, 0), u64_at(b, 8), domain),
                            None => {
                                let mut b = [0u8; 128];
                                if bytes(space, v, 16, &mut b) {
                                    push(key, u64_at(&b, 0), u64_at(&b, 8), domain);
                                } else {
                                    bad_values += 1;
                                    bad_trace_at.get_or_insert(Addr(v));
                                }
                            }
                        }
                    },
                );
            }
            HashtableKind::Inline => {
                walk_table(
                    space,
                    tm.hashtable,
                    t,
                    Bound { cap, window },
                    "tracemalloc traces",
                    &mut diags,
                    |e| {
                        // 16 + key (8, or packed pointer_t {ptr, unsigned domain} of 12) + trace_t
                        let ks = e.len() - 32;
                        let domain = if ks == 12 { u32_at(e, 24) } else { 0 };
                        push(
                            u64_at(e, 16),
                            u64_at(e, 16 + ks),
                            u64_at(e, 24 + ks),
                            domain,
                        );
                    },
                );
            }
        }
    }
    bad_traces += bad_values;
    if let Some(at) = bad_trace_at {
        diags.push(
            Diagnostic::warning("tracemalloc: trace_t values outside the core's memory").at(at),
        );
    }
    if let Some((a, why)) = it.first_bad_tb.take() {
        diags.push(
            Diagnostic::warning(format!(
                "tracemalloc: {} tracebacks not readable (first: {why}); their traces are left out",
                it.bad_tracebacks
            ))
            .at(a),
        );
    }
    if it.bad_filenames > 0 {
        diags.push(Diagnostic::warning(format!(
            "tracemalloc: {} frame filenames are not readable str objects",
            it.bad_filenames
        )));
    }
    if bad_traces > 0 {
        diags.push(Diagnostic::warning(format!(
            "tracemalloc: {bad_traces} traces left out (unreadable trace or traceback)"
        )));
    }
    let sum: u64 = out
        .iter()
        .map(|t| t.size)
        .fold(0u64, |a, b| a.wrapping_add(b));
    match state.traced_memory {
        Some(tmem) if tmem != sum && bad_traces == 0 => diags.push(Diagnostic::warning(format!(
            "tracemalloc: traced memory is {tmem} bytes, the recovered traces sum to {sum}"
        ))),
        Some(_) => {}
        None => {
            // 3.8–3.11 without symbols: the counters are statics declared with the table
            // pointers (Modules/_tracemalloc.c); traced_memory equals the sum of the sizes
            // (tracemalloc_add_trace/remove_trace), so look for that word next to the
            // traces pointer, and the peak next to it.
            if let Some(slot) = loc.traces_slot {
                let near = (-16i64..=16).map(|d| slot.0.wrapping_add((d * 8) as u64));
                let hit = near
                    .filter(|&a| a != slot.0)
                    .find(|&a| space.read_u64(Addr(a)).ok() == Some(sum));
                if let Some(a) = hit {
                    state.traced_memory = Some(sum);
                    state.peak_traced_memory = [a.wrapping_sub(8), a.wrapping_add(8)]
                        .into_iter()
                        .filter_map(|b| space.read_u64(Addr(b)).ok())
                        .find(|&v| v >= sum && v < 1 << 48);
                }
            }
            if state.traced_memory.is_none() {
                diags.push(Diagnostic::info(
                    "tracemalloc: its traced-memory counters are not located (no symbols)",
                ));
            }
        }
    }
    let mut doms: Vec<u32> = Vec::new();
    let mut last = None;
    for t in &out {
        if last != Some(t.domain) && !doms.contains(&t.domain) {
            doms.push(t.domain);
        }
        last = Some(t.domain);
    }
    doms.sort_unstable();
    state.domains = doms;
    state.traces = out.len() as u64;
    it.out.traces = out;
    it.out.diagnostics = diags;
    Ok((
        Recovered {
            state,
            traces: it.out,
        },
        located,
    ))
}
