//! `coreheap summary`: live Python objects by type and live allocations by size class, as
//! plain data.

use crate::error::{Diagnostic, Result};
use crate::glibc::report::{size_classes, SizeClass};
use crate::models::{CpythonModel, GlibcModel};
use crate::process::Process;
use crate::python::census::{Census, FreeCount, TypeCount};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub types: Vec<TypeCount>,
    pub freelists: Vec<FreeCount>,
    pub size_classes: Vec<SizeClass>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Everything `summary` and `objects` need: the walks and the census.
pub struct Analysis {
    pub glibc: Option<crate::glibc::GlibcHeap>,
    pub pymalloc: Option<crate::python::pymalloc::PymallocHeap>,
    pub census: Option<Census>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn analyze(
    p: &Process,
    glibc_models: &[GlibcModel],
    cpython_models: &[CpythonModel],
) -> Result<Analysis> {
    analyze_with(
        p,
        glibc_models,
        cpython_models,
        &crate::progress::NoProgress,
    )
}

/// `analyze`, showing each phase on `progress`.
pub fn analyze_with(
    p: &Process,
    glibc_models: &[GlibcModel],
    cpython_models: &[CpythonModel],
    progress: &dyn crate::progress::Progress,
) -> Result<Analysis> {
    use crate::progress::Unit;
    let name = p
        .core
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let phase = progress.phase(&format!("{name}: walking pymalloc"), None, Unit::Items);
    let pymalloc = crate::python::pymalloc(p, cpython_models, true)?;
    drop(phase);
    let phase = progress.phase(
        &format!("{name}: walking the glibc heap"),
        None,
        Unit::Items,
    );
    let glibc = crate::glibc::analyze(p, glibc_models)?;
    drop(phase);
    let _phase = progress.phase(&format!("{name}: typing objects"), None, Unit::Items);
    let mut diagnostics = p.diagnostics.clone();
    if let Some(g) = &glibc {
        diagnostics.extend(g.diagnostics.iter().cloned());
    }
    let mut census = None;
    if let Some(py) = &pymalloc {
        diagnostics.extend(py.diagnostics.iter().cloned());
        if py.python.as_ref().is_some_and(|x| x.probe.is_none()) {
            diagnostics.push(
                Diagnostic::warning(
                    "the names of built-in types (read-only data of the Python binary) are not readable: neither the core nor a verified file on disk holds them, so most objects stay untyped",
                )
                .hint("pass --sysroot DIR with the binaries the process ran, or dump with coredump_filter 0x37"),
            );
        }
        // Type objects with the model pymalloc was walked with (also when it was chosen by
        // invariants because no model covers the version).
        let model = cpython_models.iter().find(|m| m.name == py.model);
        match model.and_then(|m| crate::python::objects::Typer::new(p, m)) {
            Some(typer) => census = Some(crate::python::census::census(&typer, py, glibc.as_ref())),
            None => diagnostics.push(Diagnostic::warning(
                "CPython found but its types cannot be read (no PyType_Type symbol or no layout model for this version)",
            )),
        }
    }
    Ok(Analysis {
        glibc,
        pymalloc,
        census,
        diagnostics,
    })
}

pub fn summary(a: &Analysis) -> Summary {
    let mut classes = Vec::new();
    if let Some(py) = &a.pymalloc {
        for c in py.size_classes.iter().filter(|c| c.blocks_in_use > 0) {
            classes.push(SizeClass {
                allocator: "pymalloc",
                size: c.size,
                count: c.blocks_in_use,
                bytes: c.blocks_in_use * c.size,
            });
        }
    }
    if let Some(g) = &a.glibc {
        classes.extend(size_classes(g));
    }
    let (types, freelists) = match &a.census {
        Some(c) => (c.types.clone(), c.freelists.clone()),
        None => (Vec::new(), Vec::new()),
    };
    Summary {
        types,
        freelists,
        size_classes: classes,
        diagnostics: a.diagnostics.clone(),
    }
}
