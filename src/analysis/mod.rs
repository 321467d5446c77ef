//! Analyses: plain, serialisable data computed from a process image. [`Analysis`] owns the
//! allocator walks, the models and the type reader actually used; each command is one file
//! that builds on it and imports no other command.

pub mod census;
pub mod diff;
pub mod dominators;
pub mod frag;
pub mod ftheap;
pub mod graph;
pub mod info;
pub mod leaks;
pub mod native;
pub mod objects;
pub mod owner_diff;
pub mod owners;
pub mod ownership;
pub mod report;
pub mod stacks;
pub mod summary;
pub mod threads;
pub mod traces;
pub mod why;

use crate::addr::{Addr, Range};
use crate::alloc::glibc::classes::{size_classes, SizeClass};
use crate::alloc::glibc::GlibcHeap;
use crate::alloc::mimalloc::MimallocHeap;
use crate::alloc::pymalloc::PymallocHeap;
use crate::error::{Diagnostic, Diagnostics, Error, Result};
use crate::image::process::Process;
use crate::models::{CpythonModel, GlibcModel};
use crate::progress::{Progress, Unit};
use crate::python::objects::Typer;
use census::Census;
use serde::Serialize;
use std::path::Path;

/// One object as commands list it: where, what, how big, and a preview.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ObjectEntry {
    pub address: Addr,
    #[serde(rename = "type")]
    pub type_name: String,
    /// Bytes of the allocation holding the object (with GC head and pre-header).
    pub bytes: u64,
    pub preview: String,
}

impl ObjectEntry {
    pub fn of(c: &Census, typer: &Typer, o: &census::Obj) -> ObjectEntry {
        let ty = c.type_of(o);
        ObjectEntry {
            address: o.addr,
            type_name: ty.name.clone(),
            bytes: c.alloc_size(o),
            preview: typer.preview(o.addr.0, ty),
        }
    }
}

/// Every layout model, built-in or from `--heap-models DIR`.
pub struct Models {
    pub glibc: Vec<GlibcModel>,
    pub cpython: Vec<CpythonModel>,
    /// Free-threaded builds' models (`free_threaded = true`).
    pub cpython_ft: Vec<CpythonModel>,
}

impl Models {
    pub fn load(dir: Option<&Path>) -> Result<Models> {
        Ok(Models {
            glibc: crate::models::glibc_models(dir)?,
            cpython: crate::models::cpython_models(dir)?,
            cpython_ft: crate::models::cpython_ft_models(dir)?,
        })
    }
}

/// How much of an answer to give: the same limits for text and JSON.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows per table (None: all).
    pub top: Option<usize>,
    /// Types that get samples in `diff`.
    pub sampled_types: usize,
    /// Samples per type.
    pub samples: usize,
    /// `summary --by type`: also what each type's instances retain (builds the object
    /// graph and its dominator tree: about three times the census's time).
    pub retained: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            top: None,
            sampled_types: 5,
            samples: 3,
            retained: false,
        }
    }
}

impl Limits {
    pub fn cut<T>(&self, v: &mut Vec<T>) {
        if let Some(n) = self.top {
            v.truncate(n);
        }
    }
}

/// What a command will ask of an [`Analysis`] beyond the census, so that `run` builds it
/// in the same pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// The object list (the graph, `why`, `leaks`, the owner views): kept by the census's
    /// own scan instead of a second classification of the heap.
    pub objects: bool,
    /// The command reads no references once the dominator tree is built (the owner
    /// summaries and their diff, `--retained`): the graph then lets its edges go before it
    /// adds up the retained sizes, and its peak memory loses about 9 bytes per object.
    pub edges_unused: bool,
}

impl Needs {
    /// The object list and the whole graph, references included (`why`, `leaks`, the
    /// report).
    pub const GRAPH: Needs = Needs {
        objects: true,
        edges_unused: false,
    };
    /// The object list and the dominator tree, no references after it (the owner
    /// summaries and their diff).
    pub const OWNERS: Needs = Needs {
        objects: true,
        edges_unused: true,
    };
}

/// The walks of one process, the CPython model they were made with, its type reader, and
/// the census; what every heap command starts from.
pub struct Analysis<'a> {
    pub process: &'a Process,
    pub glibc: Option<GlibcHeap>,
    pub pymalloc: Option<PymallocHeap>,
    /// A free-threaded CPython's mimalloc heaps (then there is no pymalloc).
    pub mimalloc: Option<MimallocHeap>,
    /// The CPython model pymalloc was walked with — also when it was chosen by invariants
    /// because no model covers the version. Typing and previews use the same one.
    pub cpython_model: Option<&'a CpythonModel>,
    pub typer: Option<Typer<'a>>,
    pub census: Option<Census>,
    /// The blocks on the float free lists (typed by the census as free `float`s).
    float_free: rustc_hash::FxHashSet<u64>,
    /// Free-threaded builds: mimalloc's live blocks and glibc's live chunks in address
    /// order, the census's source there (`Heaps` reads pymalloc's pools).
    ft_allocs: Vec<crate::alloc::Allocation>,
    pub diagnostics: Diagnostics,
    /// Roots other analyses add to the object graph (thread frames); set before the
    /// first `graph()` call.
    pub roots: graph::Roots,
    /// The object graph and its dominator tree, built on first use.
    graph: std::cell::OnceCell<Option<graph::Graph>>,
    /// The native (glibc) reference graph, built on first use.
    native: std::cell::OnceCell<Option<native::NativeGraph>>,
    /// Where the lazily built analyses (graph, native graph) report their phases.
    pub progress: &'a dyn Progress,
    /// What the command said it will ask for.
    pub needs: Needs,
}

/// The core's file name, which the phases of its analysis are named after.
fn core_name(p: &Process) -> String {
    p.core
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The blocks on the float free lists (python/floats.rs): live pymalloc blocks of the
/// float size class (PyFloat_Type's `tp_basicsize` rounded to pymalloc's 16-byte
/// alignment, Objects/obmalloc.c ALIGNMENT 3.8+). Where the list cannot be read, a
/// diagnostic says so and the floats stay free memory.
fn float_freelist(
    p: &Process,
    model: Option<&crate::models::CpythonModel>,
    py: &crate::alloc::pymalloc::PymallocHeap,
    typer: &Typer,
    diagnostics: &mut Diagnostics,
) -> rustc_hash::FxHashSet<u64> {
    use crate::python::floats;
    let Some(model) = model else {
        return Default::default();
    };
    let symbol = |n: &str| p.modules.find_symbol(&p.space, n).map(|(_, s)| s.addr);
    let runtime = py.python.as_ref().and_then(|x| x.runtime);
    let heads = floats::heads(
        &p.space,
        model.objects.float_freelist.as_ref(),
        model.frames.as_ref(),
        &symbol,
        runtime,
    );
    let heads = match heads {
        floats::Heads::NotNeeded => return Default::default(),
        floats::Heads::Missing(why) => {
            diagnostics.push(Diagnostic::info(format!(
                "float free list not read: {why}; floats on it count as free memory"
            )));
            return Default::default();
        }
        floats::Heads::Found(h) => h,
    };
    let Some(class) = typer
        .special_type(crate::python::objects::Special::Float)
        .and_then(|t| typer.type_info(t))
        .map(|ti| (ti.basicsize + 15) & !15)
    else {
        diagnostics.push(Diagnostic::info(
            "float free list not read: PyFloat_Type is unknown; floats on it count as free memory",
        ));
        return Default::default();
    };
    let live = |cands: &rustc_hash::FxHashSet<u64>| -> rustc_hash::FxHashSet<u64> {
        if cands.is_empty() {
            return Default::default();
        }
        cands
            .iter()
            .copied()
            .filter(|&c| {
                py.block_containing(c)
                    .is_some_and(|(_, b)| b.addr.0 == c && b.size as u64 == class)
            })
            .collect()
    };
    let (blocks, diags) = floats::walk(&p.space, &heads, &live);
    for d in diags {
        diagnostics.push(d);
    }
    blocks.into_iter().collect()
}

impl<'a> Analysis<'a> {
    /// Walk every allocator and type the objects. An allocator whose walk fails is an
    /// error diagnostic and the others still report; no allocator at all is an error.
    pub fn run(p: &'a Process, models: &'a Models, progress: &'a dyn Progress) -> Result<Self> {
        Self::run_for(p, models, progress, Needs::default())
    }

    /// [`Analysis::run`], preparing what the command will ask for.
    pub fn run_for(
        p: &'a Process,
        models: &'a Models,
        progress: &'a dyn Progress,
        needs: Needs,
    ) -> Result<Self> {
        let name = core_name(p);
        let mut diagnostics = Diagnostics::default();
        diagnostics.extend(p.diagnostics.iter().cloned());
        let mut failures = Vec::new();

        // A free-threaded build has mimalloc heaps instead of pymalloc (ftheap.rs).
        let free_threaded =
            crate::image::version::detect_python(p).is_some_and(|py| py.free_threaded);
        // pymalloc's arenas and mimalloc's pages are CPython's own mappings (obmalloc.c's
        // arena allocator and mimalloc's segments both mmap), never glibc chunks: glibc's
        // search for mmapped chunks skips them.
        let arenas_of = |py: &Option<crate::alloc::pymalloc::PymallocHeap>| -> Vec<Range> {
            py.iter()
                .flat_map(|h| {
                    h.arena_list
                        .iter()
                        .map(|a| Range::new(a.address, a.address.wrapping_add(h.arena_size)))
                })
                .collect()
        };
        let walk_glibc = |exclude: &(dyn Fn() -> Vec<Range> + Sync)| {
            let phase = progress.phase(
                &format!("{name}: walking the glibc heap"),
                None,
                Unit::Items,
            );
            let g = crate::alloc::glibc::analyze_excluding_with(p, &models.glibc, exclude);
            drop(phase);
            g
        };
        let walk_pymalloc = || {
            let _phase = progress.phase(&format!("{name}: walking pymalloc"), None, Unit::Items);
            crate::alloc::pymalloc::walk_process(p, &models.cpython, true)
        };
        let (pymalloc, mimalloc, glibc) = if free_threaded {
            // Free-threaded builds: mimalloc's heaps (walked before glibc, whose search for
            // mmapped chunks then skips their segments).
            let mimalloc = ftheap::walk(
                p,
                models,
                name.as_str(),
                progress,
                &mut failures,
                &mut diagnostics,
            )?;
            // Whole segments (MI_SEGMENT_SIZE-aligned, mimalloc types.h); a huge segment's
            // tail beyond the first MI_SEGMENT_SIZE is still searched (nothing is lost).
            let mut segments: Vec<Range> = Vec::new();
            if let Some(mi) = &mimalloc {
                let size = models
                    .cpython_ft
                    .iter()
                    .find(|m| m.name == mi.model)
                    .and_then(|m| m.mimalloc.as_ref())
                    .map_or(0, |m| m.segment_size);
                let mut segs: Vec<u64> = mi.page_list.iter().map(|pg| pg.segment.0).collect();
                segs.sort_unstable();
                segs.dedup();
                segments.extend(
                    segs.into_iter()
                        .map(|sg| Range::new(Addr(sg), Addr(sg.saturating_add(size)))),
                );
            }
            (Ok(None), mimalloc, walk_glibc(&|| segments.clone()))
        } else {
            // Both walks at once, on two threads: glibc's arenas and chunks while pymalloc
            // is walked; its search for mmapped chunks (its last step) waits for pymalloc's
            // arenas. (The walks are mostly the core's first page faults.)
            // (Should the pymalloc walk unwind, its sender goes with it: the glibc thread
            // gets no ranges instead of waiting for ever.)
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Range>>(1);
            let rx = std::sync::Mutex::new(rx);
            let (py, g) = std::thread::scope(|s| {
                let tx = tx; // moved in: dropped on unwinding, before the scope joins
                let g = s.spawn(|| {
                    walk_glibc(&|| {
                        rx.lock()
                            .map(|r| r.recv().unwrap_or_default())
                            .unwrap_or_default()
                    })
                });
                let py = walk_pymalloc();
                let _ = tx.send(py.as_ref().map(&arenas_of).unwrap_or_default());
                (py, g.join().expect("glibc walk thread"))
            });
            (py, None, g)
        };
        let pymalloc = match pymalloc {
            Ok(h) => h,
            // A runtime coreheap does not read (a free-threaded build's mimalloc heaps) is
            // refused: the glibc numbers alone would be a wrong answer given with confidence.
            Err(e @ Error::Unsupported(_)) => return Err(e),
            Err(e) => {
                failures.push(e.to_string());
                diagnostics.push(Diagnostic::error(format!("pymalloc: {e}")));
                None
            }
        };
        let glibc = match glibc {
            Ok(h) => h,
            Err(e) => {
                failures.push(e.to_string());
                diagnostics.push(Diagnostic::error(format!("glibc malloc: {e}")));
                None
            }
        };
        if glibc.is_none() && pymalloc.is_none() && mimalloc.is_none() {
            return Err(if failures.is_empty() {
                // A truncated core's heaps are mostly in the part that is missing: say so
                // in the one line the user sees (the warning is not printed on an error).
                let cut = match p.core.truncated {
                    Some((want, have)) => format!(
                        " (the core is truncated: its headers describe {want} bytes but the file has {have})"
                    ),
                    None => String::new(),
                };
                Error::Unsupported(format!(
                    "no heap found in this core: neither glibc malloc nor CPython's pymalloc is mapped{cut}"
                ))
            } else {
                Error::Other(failures.join("; "))
            });
        }
        if let Some(g) = &glibc {
            diagnostics.merge(&g.diagnostics);
        }
        let _phase = progress.phase(&format!("{name}: typing objects"), None, Unit::Items);
        let mut cpython_model = None;
        let mut typer = None;
        let mut census = None;
        let mut float_free = Default::default();
        if let Some(py) = &pymalloc {
            diagnostics.merge(&py.diagnostics);
            if py.python.as_ref().is_some_and(|x| x.probe.is_none()) {
                diagnostics.push(
                    Diagnostic::warning(
                        "the names of built-in types (read-only data of the Python binary) are not readable: neither the core nor a verified file on disk holds them, so most objects stay untyped",
                    )
                    .hint("pass --sysroot DIR with the binaries the process ran, or dump with coredump_filter 0x37"),
                );
            }
            cpython_model = models.cpython.iter().find(|m| m.name == py.model);
            typer = cpython_model.and_then(|m| Typer::new(p, m));
            match &typer {
                Some(t) => {
                    float_free = float_freelist(p, cpython_model, py, t, &mut diagnostics);
                    let _phase = progress.phase(&format!("{name}: census"), None, Unit::Items);
                    let heaps = crate::alloc::Heaps {
                        glibc: glibc.as_ref(),
                        pymalloc: Some(py),
                        core: Some(&p.core),
                    };
                    census = Some(if needs.objects {
                        census::census_listing(t, &heaps, &float_free)
                    } else {
                        census::census(t, &heaps, &float_free)
                    });
                }
                None => diagnostics.push(Diagnostic::warning(
                    "CPython found but its types cannot be read (no PyType_Type symbol)",
                )),
            }
        }
        let mut ft_allocs = Vec::new();
        if let Some(mi) = &mimalloc {
            ft_allocs = ftheap::allocations(glibc.as_ref(), mi);
            let (m, t, c) = ftheap::type_objects(p, models, mi, &ft_allocs, &mut diagnostics);
            cpython_model = m;
            typer = t;
            census = c;
        }
        Ok(Analysis {
            process: p,
            glibc,
            pymalloc,
            mimalloc,
            cpython_model,
            typer,
            census,
            float_free,
            ft_allocs,
            diagnostics,
            roots: graph::Roots::default(),
            needs,
            graph: std::cell::OnceCell::new(),
            native: std::cell::OnceCell::new(),
            progress,
        })
    }

    /// A phase of a lazily built analysis, named after the core as the walks are.
    pub fn phase(&self, what: &str) -> Box<dyn crate::progress::Phase + '_> {
        let name = core_name(self.process);
        self.progress
            .phase(&format!("{name}: {what}"), None, Unit::Items)
    }

    /// Live allocations by allocator and size class (pymalloc blocks, glibc chunks), in
    /// allocator then size order.
    pub fn size_classes(&self) -> Vec<SizeClass> {
        let mut classes = Vec::new();
        if let Some(py) = &self.pymalloc {
            for c in py.size_classes.iter().filter(|c| c.blocks_in_use > 0) {
                classes.push(SizeClass {
                    allocator: "pymalloc",
                    size: c.size,
                    count: c.blocks_in_use,
                    bytes: c.blocks_in_use * c.size,
                });
            }
        }
        if let Some(mi) = &self.mimalloc {
            classes.extend(ftheap::size_classes(mi));
        }
        if let Some(g) = &self.glibc {
            classes.extend(size_classes(g));
        }
        classes
    }

    /// The object graph with its dominator tree (built once, on first use).
    pub fn graph(&self) -> Result<&graph::Graph> {
        self.python()?;
        self.graph
            .get_or_init(|| graph::build(self, &self.roots))
            .as_ref()
            .ok_or_else(|| Error::Other("the reference graph could not be built".into()))
    }

    /// The native heap's reference graph (built once, on first use).
    pub fn native(&self) -> Result<&native::NativeGraph> {
        if self.glibc.is_none() {
            return Err(Error::Unsupported(
                "no glibc heap in this core: no native chunks to follow".into(),
            ));
        }
        self.native
            .get_or_init(|| native::build(self))
            .as_ref()
            .ok_or_else(|| Error::Other("the native reference graph could not be built".into()))
    }

    /// Both allocators' walks, as the census reads them.
    pub fn heaps(&self) -> crate::alloc::Heaps<'_> {
        crate::alloc::Heaps {
            glibc: self.glibc.as_ref(),
            pymalloc: self.pymalloc.as_ref(),
            core: Some(&self.process.core),
        }
    }

    /// Every live object in address order (16 bytes each), built once on first use by a
    /// second pass over the heaps; the census keeps counts only.
    pub fn objects(&self) -> Result<&[census::Obj]> {
        let (c, typer) = self.python()?;
        if self.mimalloc.is_some() {
            let src = self.ft_allocs.as_slice();
            return Ok(c.objects_with(|| census::objects_of(typer, src, &self.float_free, c)));
        }
        Ok(c.objects_with(|| census::objects_of(typer, &self.heaps(), &self.float_free, c)))
    }

    /// The live allocation holding `a` (addresses asked in increasing order: `hint` is the
    /// heaps' cursor), from whichever allocators this process has.
    pub fn containing_near(
        &self,
        a: u64,
        hint: &mut [usize; 2],
    ) -> Option<(u64, crate::alloc::Allocation)> {
        self.allocations().containing_near(a, hint)
    }

    /// The allocators' lookup of [`Analysis::containing_near`], apart from the analysis
    /// (whose lazily built parts are not shared between threads): for threads.
    pub fn allocations(&self) -> Allocations<'_> {
        Allocations {
            heaps: self.heaps(),
            ft: self.mimalloc.is_some().then_some(self.ft_allocs.as_slice()),
        }
    }

    /// Call `f` on every live object in address order until it returns false, without
    /// building the object list (the list is used when it is already built).
    pub fn each_object(&self, f: &mut dyn FnMut(census::Obj) -> bool) -> Result<()> {
        let (c, typer) = self.python()?;
        if self.mimalloc.is_some() {
            census::each_object(typer, self.ft_allocs.as_slice(), &self.float_free, c, f);
            return Ok(());
        }
        census::each_object(typer, &self.heaps(), &self.float_free, c, f);
        Ok(())
    }

    /// The live object whose allocation holds `addr`.
    pub fn object_at(&self, addr: u64) -> Option<census::Obj> {
        let (c, typer) = self.python().ok()?;
        if self.mimalloc.is_some() {
            return census::object_at(typer, self.ft_allocs.as_slice(), &self.float_free, c, addr);
        }
        census::object_at(typer, &self.heaps(), &self.float_free, c, addr)
    }

    /// The census and its type reader, or why there is none.
    pub fn python(&self) -> Result<(&Census, &Typer<'a>)> {
        match (&self.census, &self.typer) {
            (Some(c), Some(t)) => Ok((c, t)),
            _ if self.pymalloc.is_none() && self.mimalloc.is_none() => Err(Error::Unsupported(
                "no CPython heap in this core: this command lists Python objects".into(),
            )),
            _ => Err(Error::Unsupported(
                "CPython found, but its types cannot be read (see the warnings above)".into(),
            )),
        }
    }
}

/// See [`Analysis::allocations`].
pub struct Allocations<'a> {
    heaps: crate::alloc::Heaps<'a>,
    /// Free-threaded builds: their mimalloc blocks and glibc chunks, in address order.
    ft: Option<&'a [crate::alloc::Allocation]>,
}

impl Allocations<'_> {
    /// The live allocation holding `a` (addresses asked in increasing order: `hint` is
    /// the heaps' cursor).
    pub fn containing_near(
        &self,
        a: u64,
        hint: &mut [usize; 2],
    ) -> Option<(u64, crate::alloc::Allocation)> {
        match self.ft {
            Some(ft) => census::Source::containing(ft, a),
            None => self.heaps.containing_near(a, hint),
        }
    }
}

/// One bit per index (an allocation id, a graph node).
pub(crate) struct Bits(pub(crate) Vec<u64>);

impl Bits {
    pub(crate) fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    #[inline]
    pub(crate) fn set(&mut self, i: u64) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
    #[inline]
    pub(crate) fn get(&self, i: u64) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
}
