//! Plain-data views of the glibc walk: size classes over live chunks and the per-arena
//! fragmentation table (rendered by `crate::report`).

use super::{ChunkState, GlibcHeap};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema, PartialEq, Eq)]
pub struct SizeClass {
    pub allocator: &'static str,
    pub size: u64,
    pub count: u64,
    pub bytes: u64,
}

/// Live chunks by chunk size (with header): arena chunks in use ("glibc") and mmapped
/// chunks ("glibc-mmap"). tcache and fastbin chunks are free, not live.
pub fn size_classes(h: &GlibcHeap) -> Vec<SizeClass> {
    let mut m: BTreeMap<(&'static str, u64), (u64, u64)> = BTreeMap::new();
    for c in h.live() {
        let alloc = if c.state() == ChunkState::Mmapped {
            "glibc-mmap"
        } else {
            "glibc"
        };
        let e = m.entry((alloc, c.size())).or_default();
        e.0 += 1;
        e.1 += c.size();
    }
    m.into_iter()
        .map(|((allocator, size), (count, bytes))| SizeClass {
            allocator,
            size,
            count,
            bytes,
        })
        .collect()
}
