//! `coreheap frag`: how each allocator holds its memory, as plain data.

use super::Analysis;
use crate::alloc::glibc::GlibcHeap;
use crate::alloc::mimalloc::MimallocHeap;
use crate::alloc::pymalloc::PymallocHeap;
use crate::error::Diagnostics;
use serde::Serialize;

/// Where the process's memory is, in one place.
#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
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
    /// Free-threaded builds: bytes of the mimalloc pages holding live blocks, and of those
    /// the live blocks and the rest.
    pub mimalloc_page_bytes: u64,
    pub mimalloc_in_use_bytes: u64,
    pub mimalloc_free_bytes: u64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Frag<'a> {
    pub overall: Overall,
    pub glibc: Option<&'a GlibcHeap>,
    pub pymalloc: Option<&'a PymallocHeap>,
    /// Free-threaded CPython's mimalloc heaps: pages per heap tag and block size.
    pub mimalloc: Option<&'a MimallocHeap>,
    pub diagnostics: &'a Diagnostics,
}

pub fn frag<'a>(a: &'a Analysis) -> Frag<'a> {
    let mut o = Overall {
        mapped_bytes: a.process.mappings().iter().map(|m| m.size).sum(),
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
    if let Some(mi) = &a.mimalloc {
        o.mimalloc_page_bytes = mi.in_use_bytes + mi.free_bytes;
        o.mimalloc_in_use_bytes = mi.in_use_bytes;
        o.mimalloc_free_bytes = mi.free_bytes;
    }
    if let Some(c) = &a.census {
        o.live_object_bytes = Some(c.live_bytes());
    }
    Frag {
        overall: o,
        glibc: a.glibc.as_ref(),
        pymalloc: a.pymalloc.as_ref(),
        mimalloc: a.mimalloc.as_ref(),
        diagnostics: &a.diagnostics,
    }
}
