//! `coreheap frag`: how each allocator holds its memory, as plain data.

use crate::error::{Diagnostic, Result};
use crate::glibc::GlibcHeap;
use crate::models::GlibcModel;
use crate::process::Process;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Frag {
    pub glibc: Option<GlibcHeap>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn frag(p: &Process, glibc_models: &[GlibcModel]) -> Result<Frag> {
    let glibc = crate::glibc::analyze(p, glibc_models)?;
    let mut diagnostics = p.diagnostics.clone();
    if let Some(g) = &glibc {
        diagnostics.extend(g.diagnostics.iter().cloned());
    }
    Ok(Frag { glibc, diagnostics })
}
