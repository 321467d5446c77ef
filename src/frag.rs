//! `coreheap frag`: how each allocator holds its memory, as plain data.

use crate::error::{Diagnostic, Result};
use crate::glibc::GlibcHeap;
use crate::models::{CpythonModel, GlibcModel};
use crate::process::Process;
use crate::python::pymalloc::PymallocHeap;
use serde::Serialize;

/// Where the process's memory is, in one place.
#[derive(Debug, Default, Serialize)]
pub struct Overall {
    /// Bytes of every mapping of the process (as in `info`).
    pub mapped_bytes: u64,
    /// Bytes in live Python objects (with their GC heads), when the process runs CPython.
    pub live_object_bytes: Option<u64>,
    pub glibc_system_bytes: u64,
    pub glibc_in_use_bytes: u64,
    /// Free chunks of every kind (tcache, fastbins, bins) plus top chunks.
    pub glibc_free_bytes: u64,
    pub glibc_mmapped_bytes: u64,
    pub pymalloc_arena_bytes: u64,
    pub pymalloc_in_use_bytes: u64,
    pub pymalloc_free_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Frag {
    pub overall: Overall,
    pub glibc: Option<GlibcHeap>,
    pub pymalloc: Option<PymallocHeap>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn frag(
    p: &Process,
    glibc_models: &[GlibcModel],
    cpython_models: &[CpythonModel],
    progress: &dyn crate::progress::Progress,
) -> Result<Frag> {
    let a = crate::summary::analyze_with(p, glibc_models, cpython_models, progress)?;
    let mut o = Overall {
        mapped_bytes: crate::info::mappings(p).iter().map(|m| m.size).sum(),
        ..Default::default()
    };
    if let Some(g) = &a.glibc {
        for ar in &g.arenas {
            o.glibc_system_bytes += ar.system_bytes;
            o.glibc_in_use_bytes += ar.in_use.bytes;
            o.glibc_free_bytes += ar.free.total().bytes + ar.top_bytes;
        }
        o.glibc_mmapped_bytes = g.mmapped.bytes;
    }
    if let Some(py) = &a.pymalloc {
        o.pymalloc_arena_bytes = py.arenas * py.arena_size;
        o.pymalloc_in_use_bytes = py.in_use_bytes;
        o.pymalloc_free_bytes = py.free_bytes;
    }
    if let Some(c) = &a.census {
        o.live_object_bytes = Some(c.objects.iter().map(|x| x.alloc as u64).sum());
    }
    let mut pymalloc = a.pymalloc;
    if let Some(py) = &mut pymalloc {
        py.blocks = Vec::new();
    }
    Ok(Frag {
        overall: o,
        glibc: a.glibc,
        pymalloc,
        diagnostics: a.diagnostics,
    })
}
