//! Fuzzing harnesses: what one execution of a walker's fuzz target does (tests/fuzz/), and
//! what the replay test (tests/fuzz_replay.rs) runs every kept crash input through.
//!
//! Each target has a base: a real core (corpora/reference, or a cache core for tracemalloc
//! and mimalloc), parsed and walked once per process, and a list of anchors — addresses
//! inside live heap structures of that core (chunks and arenas, pools, type objects,
//! thread states and frames, hashtables, mimalloc segments and pages). An input picks an
//! anchor and an offset from it with its first four bytes; the rest is overlaid on the
//! core's memory there; the walker runs on the patched memory, restricted to a window
//! around the overlay where the walker has such an entry point; then the bytes are restored.
//!
//! Input: bytes 0..3 the anchor index (little-endian, modulo the anchors), byte 3 the
//! offset from it in 16-byte steps (0..4080), bytes 4.. the overlay (at most
//! [`MAX_OVERLAY`] bytes, clipped to the core segment holding the address).

use crate::addr::Addr;
use crate::alloc::{glibc, mimalloc, pymalloc};
use crate::analysis::Models;
use crate::image::core::CoreFile;
use crate::image::modules::SearchPaths;
use crate::image::process::{Options, Process};
use crate::image::unwind::Native;
use crate::image::version::{detect_python, PythonInfo};
use crate::models::{CpythonModel, Epoch, Version};
use crate::python::edges::Edges;
use crate::python::frames;
use crate::python::objects::Typer;
use crate::python::symless::PyTypes;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// Bytes overlaid at most per execution.
pub const MAX_OVERLAY: usize = 4096;
/// Anchors kept at most per base (evenly sampled when a core has more).
const MAX_ANCHORS: usize = 1 << 16;

/// One fuzz target per walker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// glibc arenas, heaps, chunks, bins and tcache (alloc/glibc).
    Glibc,
    /// pymalloc's state, arenas and pools (alloc/pymalloc.rs).
    Pymalloc,
    /// Object typing: `Typer::classify` and previews of a pool's blocks (python/objects.rs).
    Typing,
    /// The reference graph's edges of a pool's objects (python/edges.rs, analysis/graph.rs).
    Graph,
    /// Python thread states and frames, and the native unwinder (python/frames.rs,
    /// image/unwind.rs).
    Stacks,
    /// tracemalloc's tables (python/tracemalloc.rs through analysis/traces.rs).
    Traces,
    /// mimalloc segments, pages and free lists (alloc/mimalloc.rs): one segment.
    Mimalloc,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Glibc,
        Target::Pymalloc,
        Target::Typing,
        Target::Graph,
        Target::Stacks,
        Target::Traces,
        Target::Mimalloc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Glibc => "glibc",
            Target::Pymalloc => "pymalloc",
            Target::Typing => "typing",
            Target::Graph => "graph",
            Target::Stacks => "stacks",
            Target::Traces => "traces",
            Target::Mimalloc => "mimalloc",
        }
    }

    pub fn from_name(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Does the base core come from the cache (made by corpora/make_corpus.py), not from
    /// the committed reference corpus?
    pub fn needs_cache(self) -> bool {
        matches!(self, Target::Traces | Target::Mimalloc)
    }

    fn index(self) -> usize {
        Target::ALL.iter().position(|&t| t == self).unwrap()
    }
}

/// The base core of a target: its file (zstd or plain) and sysroot.
pub fn base_core(t: Target) -> (PathBuf, Option<PathBuf>) {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/reference/trixie");
    // The generated corpora where tests/run-all puts them (and the tests read them):
    // COREHEAP_CORPUS / COREHEAP_CORPUS_FT, else their default places in the cache.
    let cache = std::env::var_os("COREHEAP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/coreheap")
        });
    let corpus = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| cache.join(default), PathBuf::from)
    };
    match t {
        Target::Glibc => (
            reference.join("c_heap-kernel-0x33/core.zst"),
            Some(reference.join("sysroot")),
        ),
        Target::Pymalloc | Target::Typing | Target::Graph | Target::Stacks => (
            reference.join("py_heap-gcore-0x33/core.zst"),
            Some(reference.join("sysroot")),
        ),
        // The py_trace scenario (tracemalloc on, several domains) of the host's CPython.
        Target::Traces => (
            corpus("COREHEAP_CORPUS", "corpus-test").join("host/py_trace-gcore-0x33/core"),
            None,
        ),
        // A free-threaded CPython 3.13t core (corpora/make_corpus.py --envs ft-3.13).
        Target::Mimalloc => (
            corpus("COREHEAP_CORPUS_FT", "corpus-ft").join("ft-3.13/py_heap-gcore-0x33/core"),
            None,
        ),
    }
}

/// What a target's executions share, built once.
struct Base {
    p: &'static Process,
    anchors: Vec<u64>,
    prep: Prep,
}

enum Prep {
    /// The walk of the unpatched core: each execution walks again from its main arena.
    Glibc {
        model: &'static crate::models::GlibcModel,
        heap: glibc::GlibcHeap,
    },
    /// The model and module pymalloc was found with: each execution walks the arena the
    /// overlay is in.
    Pymalloc {
        model: &'static CpythonModel,
        module: &'static crate::image::modules::Module,
        state: Addr,
    },
    /// The pools' live blocks (pool address, blocks), the typer made once (forked per
    /// execution: empty caches, so no type read from earlier overlays is remembered).
    Objects {
        model: &'static CpythonModel,
        typer: Typer<'static>,
        /// Also list each object's references (the graph target).
        edges: bool,
        pools: Vec<(u64, Vec<pymalloc::Block>)>,
    },
    Stacks {
        model: &'static CpythonModel,
        typer: Typer<'static>,
        types: PyTypes,
        runtime: Addr,
        native: Native<'static>,
    },
    /// Each execution reads the 64 buckets of each traces table around the anchor's.
    Traces {
        py: PythonInfo,
        model: &'static CpythonModel,
        bucket_of: rustc_hash::FxHashMap<u64, u64>,
        located: crate::python::tracemalloc::Located,
    },
    Mimalloc {
        model: &'static CpythonModel,
        m: &'static crate::models::Mimalloc,
    },
}

thread_local! {
    static BASES: RefCell<[Option<&'static Base>; 7]> = const { RefCell::new([None; 7]) };
}

fn base(t: Target) -> &'static Base {
    BASES.with(|b| {
        let mut b = b.borrow_mut();
        *b[t.index()].get_or_insert_with(|| Box::leak(Box::new(prepare(t))))
    })
}

/// Build a target's base now (the fuzz targets call this from libFuzzer's init so the
/// first execution is not timed with it). Panics, naming the file, when the base core is
/// missing.
pub fn init(t: Target) {
    let b = base(t);
    assert!(!b.anchors.is_empty(), "{}: no anchors", t.name());
}

/// How many anchors the target's base has (for the README and the replay test).
pub fn anchors(t: Target) -> usize {
    base(t).anchors.len()
}

fn load_process(t: Target) -> &'static Process {
    let (path, sysroot) = base_core(t);
    let missing = |e: &dyn std::fmt::Display| -> ! {
        panic!(
            "fuzz target {}: base core {} is missing or unreadable ({e}){}",
            t.name(),
            path.display(),
            if t.needs_cache() {
                ": generate the cache corpora first (corpora/make_corpus.py; tests/run-all does)"
            } else {
                ""
            }
        )
    };
    let core = if path.extension().is_some_and(|x| x == "zst") {
        let f = std::fs::File::open(&path).unwrap_or_else(|e| missing(&e));
        let raw = zstd::decode_all(f).unwrap_or_else(|e| missing(&e));
        CoreFile::from_bytes_writable(&path.display().to_string(), &raw)
    } else {
        // Cache cores can be a GiB: mapped copy-on-write, only the patched pages copied.
        CoreFile::open_writable(&path)
    }
    .unwrap_or_else(|e| missing(&e));
    let opts = Options {
        search: SearchPaths {
            sysroot,
            ..Default::default()
        },
        heap_models: None,
    };
    Box::leak(Box::new(Process::from_core(core, &opts)))
}

fn cpython_model<'m>(models: &'m [CpythonModel], py: &PythonInfo) -> &'m CpythonModel {
    let v = py
        .version
        .as_deref()
        .and_then(Version::parse)
        .expect("version");
    models
        .iter()
        .find(|m| m.covers(v))
        .or_else(|| crate::models::nearest(models.iter(), v))
        .expect("a model for the base core's CPython")
}

/// Anchors in address order, evenly thinned to [`MAX_ANCHORS`].
fn finish(mut a: Vec<u64>) -> Vec<u64> {
    a.sort_unstable();
    a.dedup();
    if a.len() > MAX_ANCHORS {
        let step = a.len().div_ceil(MAX_ANCHORS);
        a = a.into_iter().step_by(step).collect();
    }
    a
}

fn prepare(t: Target) -> Base {
    let p = load_process(t);
    let models: &'static Models = Box::leak(Box::new(Models::load(None).expect("models")));
    match t {
        Target::Glibc => {
            let h = glibc::analyze(p, &models.glibc)
                .expect("glibc walk")
                .expect("glibc");
            let mut a: Vec<u64> = h.chunks.iter().map(|c| c.addr.0).collect();
            a.extend(h.arenas.iter().map(|x| x.address.0));
            a.extend(
                h.arenas
                    .iter()
                    .flat_map(|x| x.heaps.iter().map(|s| s.address.0)),
            );
            a.extend(h.tcaches.iter().map(|x| x.address.0));
            a.extend(h.mp.map(|m| m.0));
            let model = models
                .glibc
                .iter()
                .find(|m| m.name == h.model)
                .expect("the walk's model");
            Base {
                p,
                anchors: finish(a),
                prep: Prep::Glibc { model, heap: h },
            }
        }
        Target::Pymalloc | Target::Typing | Target::Graph => {
            let h = pymalloc::walk_process(p, &models.cpython, true)
                .expect("pymalloc walk")
                .expect("pymalloc");
            let py = h.python.clone().expect("python");
            let mut a: Vec<u64> = h.pool_blocks.iter().map(|pb| pb.addr).collect();
            let model = models
                .cpython
                .iter()
                .find(|m| m.name == h.model)
                .expect("the walk's model");
            if t == Target::Pymalloc {
                a.extend(h.arena_list.iter().map(|x| x.address.0));
                a.push(h.state.0);
                let module = p
                    .modules
                    .modules
                    .iter()
                    .find(|m| m.path == py.module)
                    .expect("the Python module");
                return Base {
                    p,
                    anchors: finish(a),
                    prep: Prep::Pymalloc {
                        model,
                        module,
                        state: h.state,
                    },
                };
            }
            let typer = Typer::new(p, model).expect("typer");
            let mut pools: Vec<(u64, Vec<pymalloc::Block>)> = Vec::new();
            for b in h.blocks() {
                let pool = b.addr.0 & !(h.pool_size - 1);
                match pools.last_mut() {
                    Some((a, v)) if *a == pool => v.push(b),
                    _ => pools.push((pool, vec![b])),
                }
            }
            // The heap types of the pools' objects (they live in glibc chunks) are anchors
            // too: typing and edges read them for every instance.
            for (_, blocks) in &pools {
                for b in blocks {
                    if let Some((_, ty, _)) = typer.classify(b.addr.0, b.size as u64, true) {
                        let ti = typer.type_by_index(ty);
                        if !typer.in_image(ti.addr.0) {
                            a.push(ti.addr.0);
                        }
                    }
                }
            }
            Base {
                p,
                anchors: finish(a),
                prep: Prep::Objects {
                    model,
                    typer: typer.fork(),
                    edges: t == Target::Graph,
                    pools,
                },
            }
        }
        Target::Stacks => {
            let py = detect_python(p).expect("python");
            let model = cpython_model(&models.cpython, &py);
            let module = p.modules.modules.iter().find(|m| m.path == py.module);
            let types = PyTypes::find(p, module, true);
            let typer = Typer::with_lookup(p, model, &|n| types.get(n)).expect("typer");
            let runtime = py.runtime.expect("_PyRuntime");
            let th = frames::read(p, &typer, &types, model, runtime, true);
            let mut a = vec![runtime.0];
            a.extend(th.interpreters.iter().map(|i| i.address.0));
            for t in &th.threads {
                a.push(t.tstate.0);
                for f in &t.frames {
                    a.push(f.frame_address.0);
                    a.push(f.code_address.0);
                    for l in f.locals.iter().flatten() {
                        a.push(l.address.0);
                    }
                }
            }
            // The native stacks: from each thread's stack pointer up, 4 KiB steps.
            for t in &p.core.threads {
                let sp = t.regs.get(19).copied().unwrap_or(0);
                for k in 0..16 {
                    a.push(sp.wrapping_add(k * 4096) & !15);
                }
            }
            a.retain(|&x| p.space.is_available(Addr(x)));
            Base {
                p,
                anchors: finish(a),
                prep: Prep::Stacks {
                    model,
                    typer: typer.fork(),
                    types,
                    runtime,
                    native: Native::new(p),
                },
            }
        }
        Target::Traces => {
            let py = detect_python(p).expect("python");
            let model = models
                .cpython
                .iter()
                .filter(|m| m.tracemalloc.is_some())
                .find(|m| {
                    py.version
                        .as_deref()
                        .and_then(Version::parse)
                        .is_some_and(|v| m.covers(v))
                })
                .expect("a tracemalloc model for the base core's CPython");
            let (r, located) =
                crate::python::tracemalloc::recover_located(p, &py, model, true, None, None)
                    .expect("tracemalloc recovery");
            assert!(
                r.state.tracing && r.state.traces > 0,
                "the traces base core holds no traces"
            );
            let mut a = Vec::new();
            let mut bucket_of = rustc_hash::FxHashMap::default();
            for t in &r.state.tables {
                a.push(t.0);
                // The bucket array and the entries chained from it (both hashtable layouts
                // keep `buckets` at +0x10 and chain entries through their first word:
                // CPython 3.9+ Python/hashtable.c _Py_hashtable_t / _Py_slist_item_t,
                // 3.8 Modules/hashtable.c).
                let Some(buckets) = p.space.read_u64(Addr(t.0 + 0x10)).ok() else {
                    continue;
                };
                let nb = p.space.read_u64(Addr(t.0 + 8)).unwrap_or(0);
                let nb2 = p.space.read_u64(Addr(t.0)).unwrap_or(0);
                let nb = [nb, nb2]
                    .into_iter()
                    .filter(|n| n.is_power_of_two())
                    .max()
                    .unwrap_or(0)
                    .min(1 << 20);
                for i in 0..nb {
                    let slot = buckets + i * 8;
                    if i % 32 == 0 {
                        a.push(slot);
                        bucket_of.insert(slot, i);
                    }
                    let mut e = p.space.read_u64(Addr(slot)).unwrap_or(0);
                    let mut n = 0;
                    while e != 0 && n < 8 && p.space.is_available(Addr(e)) {
                        a.push(e);
                        bucket_of.insert(e, i);
                        // The trace the entry points at (its value, +0x18 in 3.9+).
                        if let Ok(v) = p.space.read_u64(Addr(e + 0x18)) {
                            if p.space.is_available(Addr(v)) {
                                a.push(v);
                                bucket_of.insert(v, i);
                            }
                        }
                        e = p.space.read_u64(Addr(e)).unwrap_or(0);
                        n += 1;
                    }
                }
            }
            a.retain(|&x| p.space.is_available(Addr(x)));
            Base {
                p,
                anchors: finish(a),
                prep: Prep::Traces {
                    py,
                    model,
                    bucket_of,
                    located,
                },
            }
        }
        Target::Mimalloc => {
            let py = detect_python(p).expect("python");
            assert!(py.free_threaded, "the mimalloc base core is no 3.13t core");
            let model = cpython_model(&models.cpython_ft, &py);
            let m = model.mimalloc.as_ref().expect("mimalloc layout");
            let h = mimalloc::analyze(p, model).expect("mimalloc walk");
            let mut a = Vec::new();
            let mut segs: Vec<u64> = h.page_list.iter().map(|pg| pg.segment.0).collect();
            segs.sort_unstable();
            segs.dedup();
            for &s in &segs {
                // The segment header and its slices[] (the page headers).
                let end = m.segment_slices_array + (m.slices_per_segment + 1) * m.page_size;
                let mut o = 0;
                while o < end {
                    a.push(s + o);
                    o += 4096;
                }
            }
            for pg in &h.page_list {
                a.push(pg.address.0);
                // A block in the page's middle: free-list links live in free blocks.
                a.push(pg.address.0 + pg.block_size * (pg.capacity / 2));
            }
            a.retain(|&x| p.space.is_available(Addr(x)));
            Base {
                p,
                anchors: finish(a),
                prep: Prep::Mimalloc { model, m },
            }
        }
    }
}

/// Patches a base core's bytes for one execution; restores them when dropped (also when
/// the walker panics, so a replay can go on with the next input).
struct Overlay<'a> {
    core: &'a CoreFile,
    off: usize,
    old: Vec<u8>,
}

impl<'a> Overlay<'a> {
    /// Overlay `bytes` at `addr`, clipped to the core segment that holds `addr`.
    fn new(p: &'a Process, addr: u64, bytes: &[u8]) -> Overlay<'a> {
        let core = &*p.core;
        let seg = core
            .segments
            .iter()
            .find(|s| addr >= s.vaddr.0 && addr - s.vaddr.0 < s.in_core);
        let Some(s) = seg else {
            return Overlay {
                core,
                off: 0,
                old: Vec::new(),
            };
        };
        let n = bytes.len().min((s.vaddr.0 + s.in_core - addr) as usize);
        let off = (s.offset + (addr - s.vaddr.0)) as usize;
        // SAFETY: executions are sequential on this thread and the base is this thread's
        // own (thread-local); no walk is running and none keeps a slice of the core's bytes
        // between executions (the typers are forked per execution).
        let old = unsafe { core.overwrite(off, &bytes[..n]) };
        Overlay { core, off, old }
    }
}

impl Drop for Overlay<'_> {
    fn drop(&mut self) {
        if !self.old.is_empty() {
            // SAFETY: as in `Overlay::new`: the walk has returned (or unwound).
            unsafe {
                self.core.overwrite(self.off, &self.old);
            }
        }
    }
}

/// Run one input through a target: overlay, walk, restore. Never panics unless the
/// walker does (that is what the fuzzer looks for).
pub fn run(t: Target, data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let b = base(t);
    let sel = u32::from_le_bytes([data[0], data[1], data[2], 0]) as usize;
    let anchor = b.anchors[sel % b.anchors.len()];
    let addr = anchor.wrapping_add(data[3] as u64 * 16);
    let bytes = &data[4..data.len().min(4 + MAX_OVERLAY)];
    let _o = Overlay::new(b.p, addr, bytes);
    walk(b, anchor, addr);
}

fn walk(b: &Base, anchor: u64, addr: u64) {
    let p = b.p;
    match &b.prep {
        Prep::Glibc { model, heap } => {
            let h = glibc::walk_as(p, model, heap);
            std::hint::black_box(h.live().count());
        }
        Prep::Pymalloc {
            model,
            module,
            state,
        } => {
            let w = crate::addr::Range::new(Addr(addr), Addr(addr.saturating_add(1)));
            let st = Some(*state);
            if let Ok(h) = pymalloc::analyze_window(p, model, module, true, Some(w), st) {
                std::hint::black_box(h.blocks().count());
                let _ = h.block_containing(addr);
            }
        }
        Prep::Objects {
            model,
            typer,
            edges,
            pools,
        } => {
            let typer = typer.fork();
            let edges = edges.then(|| Edges::new(p, model, &typer));
            // The pool the overlay is on (an overlay on a type object types the pool that
            // follows it in address order).
            let i = pools.partition_point(|(a, _)| *a + 4096 <= addr);
            for (_, blocks) in pools.iter().skip(i).take(1) {
                for blk in blocks {
                    let Some((o, ty, _)) = typer.classify(blk.addr.0, blk.size as u64, true) else {
                        continue;
                    };
                    let ti = typer.type_by_index(ty);
                    std::hint::black_box(typer.preview(o, &ti));
                    if let Some(e) = &edges {
                        let mut n = 0u64;
                        let end = blk.addr.0 + blk.size as u64;
                        e.for_each(o, &ti, end, &mut |x, _| n = n.wrapping_add(x));
                        e.buffers(o, &ti, &mut |x| n = n.wrapping_add(x));
                        std::hint::black_box(n);
                        std::hint::black_box(crate::analysis::graph::gc_head(
                            ti.flags,
                            &model.objects,
                        ));
                    }
                }
            }
        }
        Prep::Stacks {
            model,
            typer,
            types,
            runtime,
            native,
        } => {
            let typer = typer.fork();
            let th = frames::read(p, &typer, types, model, *runtime, true);
            std::hint::black_box(th.threads.len());
            // The thread whose stack the overlay is on (or the first).
            let t = p
                .core
                .threads
                .iter()
                .find(|t| {
                    let sp = t.regs.get(19).copied().unwrap_or(0);
                    addr >= sp && addr - sp < 1 << 20
                })
                .or(p.core.threads.first());
            if let Some(t) = t {
                std::hint::black_box(native.unwind(t).frames.len());
            }
        }
        Prep::Traces {
            py,
            model,
            bucket_of,
            located,
        } => {
            let first = bucket_of.get(&anchor).copied().unwrap_or(0) & !31;
            let w = Some((first, 64));
            let known = Some(located);
            if let Ok((r, _)) =
                crate::python::tracemalloc::recover_located(p, py, model, true, w, known)
            {
                let _ = crate::analysis::traces::statistics(
                    &r.traces,
                    crate::analysis::traces::Key::Traceback,
                    true,
                    &|_| true,
                );
            }
        }
        Prep::Mimalloc { model, m } => {
            // The segment holding the overlay, and its pages within 4 slices of it (of the
            // page header it is on, in the segment's slices[]).
            let seg = addr & !(m.segment_size - 1);
            let o = addr - seg;
            let hdr = m.segment_slices_array
                ..m.segment_slices_array + (m.slices_per_segment + 1) * m.page_size;
            let k = if hdr.contains(&o) {
                (o - m.segment_slices_array) / m.page_size
            } else {
                o / m.slice_size
            };
            let w = k.saturating_sub(4)..k + 4;
            if let Ok(h) = mimalloc::analyze_segments(p, model, &[seg], Some(w)) {
                std::hint::black_box(h.blocks.len());
            }
        }
    }
}
