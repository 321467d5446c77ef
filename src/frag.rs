//! `coreheap frag`: how each allocator holds its memory, as plain data.

use crate::error::{Diagnostic, Result};
use crate::glibc::GlibcHeap;
use crate::models::{CpythonModel, GlibcModel};
use crate::process::Process;
use crate::python::pymalloc::PymallocHeap;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Frag {
    pub glibc: Option<GlibcHeap>,
    pub pymalloc: Option<PymallocHeap>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn frag(
    p: &Process,
    glibc_models: &[GlibcModel],
    cpython_models: &[CpythonModel],
) -> Result<Frag> {
    let pymalloc = crate::python::pymalloc(p, cpython_models, false)?;
    let glibc = crate::glibc::analyze(p, glibc_models)?;
    let mut diagnostics = p.diagnostics.clone();
    if let Some(g) = &glibc {
        diagnostics.extend(g.diagnostics.iter().cloned());
    }
    if let Some(py) = &pymalloc {
        diagnostics.extend(py.diagnostics.iter().cloned());
    }
    Ok(Frag {
        glibc,
        pymalloc,
        diagnostics,
    })
}
