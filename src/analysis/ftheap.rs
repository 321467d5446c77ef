//! Free-threaded CPython (PEP 703): the mimalloc walk and the census over its blocks, as
//! [`super::Analysis::run`] does with pymalloc on GIL builds. The census is the same one
//! (`census::census_of_with`), fed mimalloc's live blocks and glibc's chunks in address
//! order; the typer reads the free-threaded object header through the 3.13t model
//! (`header_shift`, no GC head, objects at block + 16 behind the pre-header).

use crate::alloc::glibc::classes::SizeClass;
use crate::alloc::glibc::GlibcHeap;
use crate::alloc::mimalloc::{self, MimallocHeap};
use crate::alloc::{Allocation, Allocator};
use crate::error::{Diagnostic, Diagnostics, Error, Result};
use crate::image::process::Process;
use crate::models::CpythonModel;
use crate::progress::{Progress, Unit};
use crate::python::objects::Typer;

use super::census::{self, Census};
use super::Models;

/// The census row of untyped mimalloc blocks.
pub const UNTYPED_MIMALLOC: &str = "<untyped mimalloc>";

/// Walk the mimalloc heaps. A failure is an error diagnostic (the glibc walk still
/// reports), as a failing pymalloc walk is.
pub fn walk(
    p: &Process,
    models: &Models,
    name: &str,
    progress: &dyn Progress,
    failures: &mut Vec<String>,
    diagnostics: &mut Diagnostics,
) -> Result<Option<MimallocHeap>> {
    let _phase = progress.phase(&format!("{name}: walking mimalloc"), None, Unit::Items);
    match mimalloc::walk_process(p, &models.cpython_ft) {
        Ok(Some(h)) => {
            diagnostics.merge(&h.diagnostics);
            Ok(Some(h))
        }
        Ok(None) => Ok(None),
        Err(e @ Error::Unsupported(_)) => Err(e),
        Err(e) => {
            failures.push(e.to_string());
            diagnostics.push(Diagnostic::error(format!("mimalloc: {e}")));
            Ok(None)
        }
    }
}

/// The model the heap was walked with, its typer, and the census.
pub fn type_objects<'a>(
    p: &'a Process,
    models: &'a Models,
    mi: &MimallocHeap,
    allocs: &[Allocation],
    diagnostics: &mut Diagnostics,
) -> (Option<&'a CpythonModel>, Option<Typer<'a>>, Option<Census>) {
    let model = models.cpython_ft.iter().find(|m| m.name == mi.model);
    let typer = model.and_then(|m| Typer::new(p, m));
    let Some(t) = &typer else {
        diagnostics.push(Diagnostic::warning(
            "CPython found but its types cannot be read (no PyType_Type symbol)",
        ));
        return (model, typer, None);
    };
    if mi.python.as_ref().is_some_and(|x| x.probe.is_none()) {
        diagnostics.push(
            Diagnostic::warning(
                "the names of built-in types (read-only data of the Python binary) are not readable: neither the core nor a verified file on disk holds them, so most objects stay untyped",
            )
            .hint("pass --sysroot DIR with the binaries the process ran, or dump with coredump_filter 0x37"),
        );
    }
    // Free-threaded 3.13 keeps free lists per thread (_PyThreadStateImpl.freelists), and
    // freed floats there are linked through ob_type as in the GIL build: they count as
    // untyped blocks. The untyped row of the object allocator's blocks is renamed.
    diagnostics.push(Diagnostic::info(
        "free-threaded build: the per-thread float free lists are not read; floats on them count as untyped mimalloc blocks",
    ));
    let mut c = census::census_from(t, allocs, &Default::default());
    for row in &mut c.types {
        if row.name == census::UNTYPED_PYMALLOC {
            row.name = UNTYPED_MIMALLOC.to_string();
        }
    }
    (model, typer, Some(c))
}

/// mimalloc's live blocks and glibc's live chunks, merged in address order (mimalloc maps
/// its segments itself, src/prim/unix/prim.c: they never nest in glibc chunks). mimalloc
/// blocks are labelled `Allocator::Pymalloc`, the object allocator's label: the census
/// applies the object allocator's rules (no glibc chunk header slack) to them.
pub fn allocations(glibc: Option<&GlibcHeap>, mi: &MimallocHeap) -> Vec<Allocation> {
    let mut out: Vec<Allocation> = mi
        .blocks
        .iter()
        .map(|b| Allocation {
            addr: b.addr,
            usable: b.size as u64,
            size: b.size as u64,
            allocator: Allocator::Pymalloc,
        })
        .collect();
    if let Some(g) = glibc {
        out.extend(g.live().map(|c| Allocation {
            addr: c.user(),
            usable: c.usable(),
            size: c.size(),
            allocator: Allocator::Glibc,
        }));
    }
    out.sort_unstable_by_key(|a| a.addr);
    out
}

/// Live blocks by heap tag and block size, as the summary's size-class rows.
pub fn size_classes(mi: &MimallocHeap) -> Vec<SizeClass> {
    mi.size_classes
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| SizeClass {
            allocator: match c.heap.as_str() {
                "mem" => "mimalloc-mem",
                "object" => "mimalloc-object",
                "gc" => "mimalloc-gc",
                "gc_pre" => "mimalloc-gc_pre",
                _ => "mimalloc",
            },
            size: c.size,
            count: c.count,
            bytes: c.count * c.size,
        })
        .collect()
}
