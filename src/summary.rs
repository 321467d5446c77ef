//! `coreheap summary`: live allocations by size class (and, with the CPython walker,
//! live objects by type), as plain data.

use crate::error::{Diagnostic, Result};
use crate::glibc::report::{size_classes, SizeClass};
use crate::models::GlibcModel;
use crate::process::Process;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct TypeCount {
    pub name: String,
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub types: Vec<TypeCount>,
    pub freelists: Vec<TypeCount>,
    pub size_classes: Vec<SizeClass>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn summary(p: &Process, glibc_models: &[GlibcModel]) -> Result<Summary> {
    let glibc = crate::glibc::analyze(p, glibc_models)?;
    let mut diagnostics = p.diagnostics.clone();
    let mut classes = Vec::new();
    if let Some(g) = &glibc {
        diagnostics.extend(g.diagnostics.iter().cloned());
        classes = size_classes(g);
    }
    Ok(Summary {
        types: Vec::new(),
        freelists: Vec::new(),
        size_classes: classes,
        diagnostics,
    })
}
