//! Allocator walkers. Each walker reads one allocator's structures through the address
//! space and a layout model, and yields its allocations in address order; corruption is a
//! diagnostic in a capped collector, never a failure of the other allocators.

pub mod glibc;
pub mod mimalloc;
pub mod pymalloc;

use crate::addr::Addr;
use glibc::GlibcHeap;
use mimalloc::MimallocHeap;
use pymalloc::PymallocHeap;

/// Which allocator an allocation comes from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Allocator {
    Pymalloc,
    Glibc,
    /// Free-threaded CPython's mimalloc heaps.
    Mimalloc,
}

/// One live allocation, as every consumer (census, graph, tracemalloc join) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// Where the caller's data starts (block start; chunk header + 16).
    pub addr: Addr,
    /// Bytes the caller may use.
    pub usable: u64,
    /// Bytes the allocator spends on it (block size; chunk size with header).
    pub size: u64,
    pub allocator: Allocator,
}

/// Every live allocation of both allocators, merged in address order: pymalloc blocks
/// (arenas walked in address order) and glibc chunks in use or mmapped (sorted by the walk).
/// pymalloc arenas are mmapped by CPython itself, never glibc chunks, so the two streams
/// never nest.
pub fn live<'a>(
    glibc: Option<&'a GlibcHeap>,
    pymalloc: Option<&'a PymallocHeap>,
) -> impl Iterator<Item = Allocation> + 'a {
    live_all(glibc, pymalloc, None)
}

/// [`live`] with free-threaded CPython's mimalloc blocks too. mimalloc takes its segments
/// from mmap itself (mimalloc src/prim/unix/prim.c), so its blocks never nest in glibc
/// chunks; a process has either pymalloc or mimalloc (Py_GIL_DISABLED builds have no
/// pymalloc), so at most one of those two streams is non-empty.
pub fn live_all<'a>(
    glibc: Option<&'a GlibcHeap>,
    pymalloc: Option<&'a PymallocHeap>,
    mimalloc: Option<&'a MimallocHeap>,
) -> impl Iterator<Item = Allocation> + 'a {
    let mi = mimalloc
        .into_iter()
        .flat_map(|m| m.blocks.iter())
        .map(|b| Allocation {
            addr: b.addr,
            usable: b.size as u64,
            size: b.size as u64,
            allocator: Allocator::Mimalloc,
        });
    let blocks = pymalloc
        .into_iter()
        .flat_map(|p| p.blocks.iter())
        .map(|b| Allocation {
            addr: b.addr,
            usable: b.size as u64,
            size: b.size as u64,
            allocator: Allocator::Pymalloc,
        });
    let chunks = glibc
        .into_iter()
        .flat_map(|g| g.live())
        .map(|c| Allocation {
            addr: c.user(),
            usable: c.usable(),
            size: c.size(),
            allocator: Allocator::Glibc,
        });
    Merge {
        a: Merge {
            a: blocks.peekable(),
            b: mi.peekable(),
        }
        .peekable(),
        b: chunks.peekable(),
    }
}

/// Two address-ordered streams as one.
struct Merge<A: Iterator<Item = Allocation>, B: Iterator<Item = Allocation>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A: Iterator<Item = Allocation>, B: Iterator<Item = Allocation>> Iterator for Merge<A, B> {
    type Item = Allocation;
    fn next(&mut self) -> Option<Allocation> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y.addr < x.addr => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(addr: u64, allocator: Allocator) -> Allocation {
        Allocation {
            addr: Addr(addr),
            usable: 16,
            size: 16,
            allocator,
        }
    }

    #[test]
    fn streams_merge_in_address_order() {
        let x = vec![a(0x10, Allocator::Pymalloc), a(0x50, Allocator::Pymalloc)];
        let y = vec![
            a(0x20, Allocator::Glibc),
            a(0x30, Allocator::Glibc),
            a(0x90, Allocator::Glibc),
        ];
        let m: Vec<u64> = Merge {
            a: x.into_iter().peekable(),
            b: y.into_iter().peekable(),
        }
        .map(|a| a.addr.0)
        .collect();
        assert_eq!(m, vec![0x10, 0x20, 0x30, 0x50, 0x90]);
    }
}
