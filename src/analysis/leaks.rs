//! `coreheap leaks`: what nothing reachable holds.
//!
//! - Unreachable: objects no root reaches — every reference to them comes from other
//!   unreachable objects: cyclic garbage the collector has not freed yet (and what hangs
//!   from it).
//! - Refcount excess: objects whose reference count is larger than the references found
//!   to them (so the graph treats them as held from native code), but with no native
//!   anchor: no aligned word equal to their address in any thread's registers or stack
//!   (from its stack pointer up), in writable memory outside the heaps (C statics, the
//!   3.11+ frame data stacks), or in a live heap allocation that is not an object or an
//!   object's own buffer (C structures). That is the signature of a C extension that
//!   took a reference and lost it (a missing Py_DECREF). Anchors are searched as chap
//!   does (round2-facts.md §D.5).
//! - Native (glibc) memory, as chap defines it (`native`): a used chunk no chain of
//!   pointers from a thread's registers or stack, static memory or a Python object
//!   reaches is leaked; a leaked chunk no other leaked chunk points to is unreferenced.
//!   Counts and bytes by size class and by C++ class, with samples.

use super::graph::gc_head;
use super::native::NativeGraph;
use super::ownership;
use super::{Analysis, ObjectEntry};
use crate::error::{Diagnostics, Result};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LeakType {
    pub name: String,
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LeakClass {
    pub count: u64,
    pub bytes: u64,
    pub types: Vec<LeakType>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Sample {
    pub class: &'static str,
    #[serde(flatten)]
    pub object: ObjectEntry,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Leaks {
    /// Whether Python objects were analysed (false: a core without CPython; the two
    /// Python classes are then empty).
    pub python: bool,
    pub unreachable: LeakClass,
    pub refcount_excess: LeakClass,
    pub samples: Vec<Sample>,
    /// Native (glibc) chunks; null without a glibc heap.
    pub native: Option<NativeLeaks>,
    pub diagnostics: Diagnostics,
}

/// Chunks of one size (chunk size, with its header).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SizeRow {
    pub size: u64,
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct NativeClass {
    pub count: u64,
    pub bytes: u64,
    /// By chunk size, largest bytes first.
    pub sizes: Vec<SizeRow>,
    /// By C++ class (`<untyped glibc>` for chunks with no vtable), largest count first.
    pub types: Vec<LeakType>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct NativeSample {
    pub class: &'static str,
    pub allocator: &'static str,
    pub address: crate::addr::Addr,
    /// Bytes the application may use (chunk size less the header).
    pub size: u64,
    #[serde(rename = "type")]
    pub type_name: String,
    /// First bytes as hex, and as text (`.` where not printable).
    pub hex: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct NativeLeaks {
    pub allocator: &'static str,
    /// Used chunks (in use or mmapped; tcache and fastbin chunks are free).
    pub used: LeakTotal,
    pub anchored: LeakTotal,
    pub leaked: NativeClass,
    /// Leaked chunks that no other leaked chunk points to.
    pub unreferenced: NativeClass,
    pub samples: Vec<NativeSample>,
    pub edges: u64,
    pub roots: u64,
}

#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct LeakTotal {
    pub count: u64,
    pub bytes: u64,
}

fn class(
    a: &Analysis,
    nodes: &[u32],
    samples: &mut Vec<Sample>,
    name: &'static str,
    per: usize,
) -> LeakClass {
    let (c, typer) = a.python().expect("checked");
    let g = a.graph().expect("checked");
    let mut by: FxHashMap<&str, (u64, u64, Vec<u32>)> = FxHashMap::default();
    for &n in nodes {
        let o = &c.objects()[n as usize - 1];
        let e = by.entry(c.type_of(o).name.as_str()).or_default();
        e.0 += 1;
        e.1 += g.shallow[n as usize] as u64;
        if e.2.len() < per {
            e.2.push(n);
        }
    }
    let mut types: Vec<LeakType> = by
        .iter()
        .map(|(k, v)| LeakType {
            name: k.to_string(),
            count: v.0,
            bytes: v.1,
        })
        .collect();
    types.sort_by(|x, y| y.count.cmp(&x.count).then_with(|| x.name.cmp(&y.name)));
    for t in &types {
        for &n in &by[t.name.as_str()].2 {
            samples.push(Sample {
                class: name,
                object: ObjectEntry::of(c, typer, &c.objects()[n as usize - 1]),
            });
        }
    }
    LeakClass {
        count: nodes.len() as u64,
        bytes: types.iter().map(|t| t.bytes).sum(),
        types,
    }
}

pub fn leaks(a: &Analysis, samples_per_type: usize) -> Result<Leaks> {
    let native = match a.native() {
        Ok(n) => Some(native_leaks(a, n, samples_per_type)),
        Err(_) => None,
    };
    if a.python().is_err() {
        if native.is_none() {
            a.python()?;
        }
        let empty = || LeakClass {
            count: 0,
            bytes: 0,
            types: Vec::new(),
        };
        let mut diagnostics = a.diagnostics.clone();
        if let Ok(n) = a.native() {
            diagnostics.merge(&n.diagnostics);
        }
        return Ok(Leaks {
            python: false,
            unreachable: empty(),
            refcount_excess: empty(),
            samples: Vec::new(),
            native,
            diagnostics,
        });
    }
    let (c, _) = a.python()?;
    let g = a.graph()?;
    let unreachable: Vec<u32> = (1..g.nodes() as u32).filter(|&v| !g.reached(v)).collect();
    let anchored = native_anchors(a, &g.native);
    let excess: Vec<u32> = g
        .native
        .iter()
        .copied()
        .filter(|n| !anchored.contains(&c.objects()[*n as usize - 1].addr.0))
        .collect();
    let mut samples = Vec::new();
    let unreachable = class(
        a,
        &unreachable,
        &mut samples,
        "unreachable",
        samples_per_type,
    );
    let refcount_excess = class(
        a,
        &excess,
        &mut samples,
        "refcount_excess",
        samples_per_type,
    );
    let mut diagnostics = a.diagnostics.clone();
    diagnostics.merge(&g.diagnostics);
    if let Ok(n) = a.native() {
        diagnostics.merge(&n.diagnostics);
    }
    Ok(Leaks {
        python: true,
        unreachable,
        refcount_excess,
        samples,
        native,
        diagnostics,
    })
}

fn native_class(
    a: &Analysis,
    n: &super::native::NativeGraph,
    nodes: &[u32],
    name: &'static str,
    per: usize,
    samples: &mut Vec<NativeSample>,
) -> NativeClass {
    let mut sizes: FxHashMap<u64, (u64, u64)> = FxHashMap::default();
    // Per type: count, bytes, sampled nodes.
    type Row = (u64, u64, Vec<u32>);
    let mut types: FxHashMap<u32, Row> = FxHashMap::default();
    let mut bytes = 0;
    for &v in nodes {
        let ch = &NativeGraph::chunk(a, v);
        let e = sizes.entry(ch.size()).or_default();
        e.0 += 1;
        e.1 += ch.size();
        bytes += ch.size();
        let t = types.entry(n.ty[v as usize]).or_default();
        t.0 += 1;
        t.1 += ch.size();
        if t.2.len() < per {
            t.2.push(v);
        }
    }
    let mut sizes: Vec<SizeRow> = sizes
        .into_iter()
        .map(|(size, (count, bytes))| SizeRow { size, count, bytes })
        .collect();
    sizes.sort_by(|x, y| y.bytes.cmp(&x.bytes).then(x.size.cmp(&y.size)));
    let mut rows: Vec<(u32, Row)> = types.into_iter().collect();
    rows.sort_by(|x, y| {
        y.1 .0
            .cmp(&x.1 .0)
            .then_with(|| n.types[x.0 as usize].cmp(&n.types[y.0 as usize]))
    });
    for (_, (_, _, vs)) in &rows {
        for &v in vs {
            let ch = &NativeGraph::chunk(a, v);
            let (hex, text) = super::native::first_bytes(a.process, ch.user().0, ch.usable(), 32);
            samples.push(NativeSample {
                class: name,
                allocator: "glibc",
                address: ch.user(),
                size: ch.usable(),
                type_name: n.type_name(v).to_string(),
                hex,
                text,
            });
        }
    }
    NativeClass {
        count: nodes.len() as u64,
        bytes,
        sizes,
        types: rows
            .into_iter()
            .map(|(t, (count, bytes, _))| LeakType {
                name: n.types[t as usize].to_string(),
                count,
                bytes,
            })
            .collect(),
    }
}

fn native_leaks(a: &Analysis, n: &super::native::NativeGraph, per: usize) -> NativeLeaks {
    let (leaked, unref) = n.leaked();
    if std::env::var_os("COREHEAP_DEBUG_NATIVE").is_some() {
        for &v in &leaked {
            eprintln!("leaked {:x}", NativeGraph::chunk(a, v).user().0);
        }
    }
    let mut used = LeakTotal::default();
    let mut anchored = LeakTotal::default();
    let all = &a.glibc.as_ref().expect("native graph").chunks;
    for (i, ch) in all.iter().enumerate() {
        if !n.is_used(i as u32) {
            continue;
        }
        used.count += 1;
        used.bytes += ch.size();
        if n.anchored(i as u32) {
            anchored.count += 1;
            anchored.bytes += ch.size();
        }
    }
    let mut samples = Vec::new();
    let leaked_c = native_class(a, n, &leaked, "leaked", per, &mut samples);
    // Unreferenced chunks are leaked too: their samples come from the leaked list unless
    // none of them made it there.
    let mut more = Vec::new();
    let unref_c = native_class(a, n, &unref, "unreferenced", per, &mut more);
    for s in more {
        if !samples.iter().any(|x| x.address == s.address) {
            samples.push(s);
        }
    }
    NativeLeaks {
        allocator: "glibc",
        used,
        anchored,
        leaked: leaked_c,
        unreferenced: unref_c,
        samples,
        edges: n.edges,
        roots: n.roots.len() as u64,
    }
}

/// Addresses of `nodes` found as aligned words in native memory.
fn native_anchors(a: &Analysis, nodes: &[u32]) -> FxHashSet<u64> {
    let (c, _) = a.python().expect("checked");
    let model = a.cpython_model.expect("checked");
    let want: FxHashSet<u64> = nodes
        .iter()
        .map(|&n| c.objects()[n as usize - 1].addr.0)
        .collect();
    let mut found = FxHashSet::default();
    if want.is_empty() {
        return found;
    }
    let p = a.process;
    let scan = |start: u64, end: u64, found: &mut FxHashSet<u64>| {
        let start = (start + 7) & !7;
        if end <= start {
            return;
        }
        p.space.for_each_slice(
            crate::addr::Range::new(crate::addr::Addr(start), crate::addr::Addr(end)),
            |_, bytes| {
                for w in bytes.chunks_exact(8) {
                    let v = u64::from_le_bytes(w.try_into().unwrap());
                    if want.contains(&v) {
                        found.insert(v);
                        if std::env::var_os("COREHEAP_DEBUG_ANCHORS").is_some() {
                            eprintln!("anchor 0x{v:x} in [0x{start:x}, 0x{end:x})");
                        }
                    }
                }
                true
            },
        );
    };
    for t in &p.core.threads {
        for &r in &t.regs {
            if want.contains(&r) {
                found.insert(r);
            }
        }
    }
    // Live allocations: objects (and the buffers they own) are not native memory.
    // (start, end) of every live allocation.
    let mut allocs: Vec<(u64, u64)> = Vec::new();
    // Allocation starts of the objects, sorted (a hash set of 25 M of them cost seconds).
    let mut object_allocs: Vec<u64> = Vec::with_capacity(c.objects().len());
    let mut buffers: Vec<u64> = Vec::new();
    let e = ownership::edges_of(a);
    let minor = e.as_ref().map_or(14, |e| e.minor);
    let (_, typer) = a.python().expect("checked");
    let mut partial: Vec<(u64, u64)> = Vec::new();
    for o in c.objects() {
        let ti = c.type_of(o);
        let m = o.addr.0 - gc_head(ti.flags, &model.objects);
        // Frames hold references the graph may not read (a running 3.8/3.9 frame's value
        // stack, f_stacktop NULL): their memory is searched for anchors too — but not the
        // frame data of a 3.11+ frame object whose thread owns the frame (f_frame points
        // outside it): that memory is stale.
        if ti.flags & (1 << 9) == 0 && ti.name == "frame" {
            let end = m + c.alloc_size(o);
            let own = typer
                .u64_at(typer.field(o.addr.0, 0x18))
                .is_some_and(|f| f > o.addr.0 && f < end);
            if minor <= 10 || own {
                partial.push((m, end));
            }
        }
        object_allocs.push(m);
        if let Some(e) = &e {
            e.buffers(o.addr.0, ti, &mut |b| buffers.push(b));
        }
    }
    // Free-list residents (refcount 0, type intact: 3.8-3.10 zombie frames, cached
    // objects) are not native memory either; their stale fields point anywhere.
    for o in &c.free_objects {
        let ti = c.type_of(o);
        object_allocs.push(o.addr.0 - gc_head(ti.flags, &model.objects));
    }
    object_allocs.sort_unstable();
    buffers.sort_unstable();
    // The first entry of sorted `v` at or above `m`, from a cursor: mostly a few steps
    // forward (allocations come in pool or chunk order), else a search.
    fn seek(v: &[u64], cur: &mut usize, m: u64) -> Option<u64> {
        if *cur > 0 && v[*cur - 1] >= m {
            *cur = v.partition_point(|&x| x < m);
        }
        let mut steps = 0;
        while *cur < v.len() && v[*cur] < m {
            if steps == 8 {
                *cur += v[*cur..].partition_point(|&x| x < m);
                break;
            }
            *cur += 1;
            steps += 1;
        }
        v.get(*cur).copied()
    }
    let (mut oc, mut bc) = (0usize, 0usize);
    let mut native_allocs: Vec<(u64, u64)> = Vec::new();
    let mut consider = |m: u64, usable: u64, pm: bool, allocs: &mut Vec<(u64, u64)>| {
        allocs.push((m, m + usable));
        if seek(&object_allocs, &mut oc, m) == Some(m) {
            return;
        }
        // Dead objects the census leaves out (3.8-3.10 zombie frames: refcount 0, kept
        // by their code object) hold stale pointers, not references.
        if typer.classify(m, usable, pm).is_some() {
            return;
        }
        if seek(&buffers, &mut bc, m).is_some_and(|b| b < m + usable.max(1)) {
            return;
        }
        native_allocs.push((m, m + usable));
    };
    if let Some(py) = &a.pymalloc {
        for b in py.blocks() {
            consider(b.addr.0, b.size as u64, true, &mut allocs);
        }
    }
    if let Some(gh) = &a.glibc {
        for ch in gh.live() {
            consider(ch.user().0, ch.usable(), false, &mut allocs);
        }
    }
    native_allocs.extend(partial);
    for &(s, e) in &native_allocs {
        scan(s, e, &mut found);
    }
    // Writable memory outside the heaps: pymalloc arenas, glibc heaps and mmapped chunks
    // are left out (their free memory holds stale pointers; their live allocations were
    // scanned above); thread stacks are scanned from the stack pointer up. That leaves
    // C statics (.data, .bss), the 3.11+ frame data stacks and other native mappings.
    let mut excl: Vec<(u64, u64)> = allocs;
    if let Some(py) = &a.pymalloc {
        excl.extend(
            py.arena_list
                .iter()
                .map(|ar| (ar.address.0, ar.address.0 + py.arena_size)),
        );
    }
    if let Some(gh) = &a.glibc {
        for ar in &gh.arenas {
            excl.extend(ar.heaps.iter().map(|h| (h.address.0, h.address.0 + h.size)));
        }
    }
    excl.sort_unstable();
    for s in &p.core.segments {
        if s.flags & 2 == 0 {
            continue;
        }
        let r = s.range();
        let mut start = r.start.0;
        if let Some(t) = p.core.threads.iter().find(|t| r.contains(t.sp)) {
            start = t.sp.0;
        }
        let end = r.end.0;
        let mut cur = start;
        let i = excl.partition_point(|&(_, e)| e <= start);
        for &(es, ee) in &excl[i..] {
            if es >= end {
                break;
            }
            if es > cur {
                scan(cur, es, &mut found);
            }
            cur = cur.max(ee);
        }
        if cur < end {
            scan(cur, end, &mut found);
        }
    }
    found
}
