//! Allocator walkers. Each walker reads one allocator's structures through the address
//! space and a layout model, and yields its allocations in address order; corruption is a
//! diagnostic in a capped collector, never a failure of the other allocators.

pub mod glibc;
pub mod mimalloc;
pub mod pymalloc;

use crate::addr::Addr;
use glibc::GlibcHeap;
use pymalloc::PymallocHeap;

/// Which allocator an allocation comes from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Allocator {
    Pymalloc,
    Glibc,
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

impl Allocation {
    /// A live pymalloc block.
    pub fn block(b: pymalloc::Block) -> Allocation {
        Allocation {
            addr: b.addr,
            usable: b.size as u64,
            size: b.size as u64,
            allocator: Allocator::Pymalloc,
        }
    }
    /// A glibc chunk in use or mmapped.
    pub fn chunk(c: &glibc::Chunk) -> Allocation {
        Allocation {
            addr: c.user(),
            usable: c.usable(),
            size: c.size(),
            allocator: Allocator::Glibc,
        }
    }
}

/// Both allocators' walks, with a dense id for every allocation they can hold: pymalloc
/// block positions first, then glibc chunk indices — for per-allocation bitmaps in place of
/// per-allocation records.
#[derive(Clone, Copy)]
pub struct Heaps<'a> {
    pub glibc: Option<&'a GlibcHeap>,
    pub pymalloc: Option<&'a PymallocHeap>,
    /// The core the heaps are read from: long scans release its pages behind them.
    pub core: Option<&'a crate::image::core::CoreFile>,
}

impl<'a> Heaps<'a> {
    fn py_ids(&self) -> u64 {
        self.pymalloc.map_or(0, |p| p.positions())
    }

    /// Size of the id space.
    pub fn ids(&self) -> u64 {
        self.py_ids() + self.glibc.map_or(0, |g| g.chunks.len() as u64)
    }

    /// Every live allocation at an address in `[lo, hi)` with its id, in address order
    /// (pymalloc pools never hold glibc chunks, so the two lists interleave without
    /// nesting), as a loop calling `f`: no iterator adapters on the hot path of a 20 M-
    /// allocation census.
    pub fn each_between(&self, lo: u64, hi: u64, f: &mut dyn FnMut(u64, Allocation)) {
        let (pools, base_py): (&[pymalloc::PoolBlocks], _) = match self.pymalloc {
            Some(p) => {
                let v = &p.pool_blocks;
                let a = v.partition_point(|x| x.addr < lo & !(p.pool_size - 1));
                let b = v.partition_point(|x| x.addr < hi);
                (&v[a..b], Some(p))
            }
            None => (&[], None),
        };
        let (chunks, first_chunk) = match self.glibc {
            Some(g) => {
                let a = g.chunks.partition_point(|c| c.user().0 < lo);
                let b = g.chunks.partition_point(|c| c.user().0 < hi);
                (&g.chunks[a..b], a)
            }
            None => (&[][..], 0),
        };
        let chunk_base = self.py_ids() + first_chunk as u64;
        let mut ci = 0usize;
        // Chunks below `limit`, in order.
        let mut chunks_below = |limit: u64, f: &mut dyn FnMut(u64, Allocation)| {
            while ci < chunks.len() && chunks[ci].user().0 < limit {
                let c = &chunks[ci];
                if c.state().is_live() {
                    f(chunk_base + ci as u64, Allocation::chunk(c));
                }
                ci += 1;
            }
        };
        if let Some(py) = base_py {
            for p in pools {
                // pymalloc pools never hold glibc chunks: the chunks before this pool first.
                chunks_below(p.addr, f);
                let size = p.size as u64;
                let mut addr = p.addr + p.first as u64;
                for j in 0..p.span {
                    if addr >= lo && addr < hi && py.is_live(p, j) {
                        let b = pymalloc::Block {
                            addr: Addr(addr),
                            size: p.size,
                        };
                        f(p.pos + j as u64, Allocation::block(b));
                    }
                    addr += size;
                }
            }
        }
        chunks_below(u64::MAX, f);
    }

    /// Allocation positions below address `a` (pymalloc blocks carved, glibc chunks), to
    /// split the heaps into ranges of similar work.
    pub fn below(&self, a: u64) -> u64 {
        let py = self.pymalloc.map_or(0, |p| {
            let i = p.pool_blocks.partition_point(|x| x.addr < a);
            p.pool_blocks.get(i).map_or(p.positions(), |x| x.pos)
        });
        let gl = self
            .glibc
            .map_or(0, |g| g.chunks.partition_point(|c| c.user().0 < a) as u64);
        py + gl
    }

    /// [`Heaps::containing`] for addresses asked in increasing order: `hint` keeps the
    /// pool and chunk found last, so a sorted run of lookups walks forward instead of
    /// searching from scratch.
    pub fn containing_near(&self, a: u64, hint: &mut [usize; 2]) -> Option<(u64, Allocation)> {
        if let Some(p) = self.pymalloc {
            let v = &p.pool_blocks;
            let pool = a & !(p.pool_size - 1);
            let near = |i: usize| v.get(i).is_some_and(|x| x.addr == pool);
            let i = if near(hint[0]) {
                Some(hint[0])
            } else if near(hint[0] + 1) {
                Some(hint[0] + 1)
            } else {
                v.binary_search_by_key(&pool, |x| x.addr).ok()
            };
            if let Some(i) = i {
                hint[0] = i;
                return p.block_in(i, a).map(|(id, b)| (id, Allocation::block(b)));
            }
        }
        let c = &self.glibc?.chunks;
        // The last chunk starting at or below `a`: near the hint, else searched.
        let at = |i: usize| {
            c.get(i).is_some_and(|x| x.user().0 <= a) && c.get(i + 1).is_none_or(|x| x.user().0 > a)
        };
        let i = if at(hint[1]) {
            hint[1]
        } else if at(hint[1] + 1) {
            hint[1] + 1
        } else {
            c.partition_point(|x| x.user().0 <= a).checked_sub(1)?
        };
        hint[1] = i;
        self.chunk_holding(i, a)
    }

    /// The live allocation holding address `a` (interior addresses too), with its id.
    pub fn containing(&self, a: u64) -> Option<(u64, Allocation)> {
        if let Some((id, b)) = self.pymalloc.and_then(|p| p.block_containing(a)) {
            return Some((id, Allocation::block(b)));
        }
        let i = self
            .glibc?
            .chunks
            .partition_point(|c| c.user().0 <= a)
            .checked_sub(1)?;
        self.chunk_holding(i, a)
    }

    /// Chunk `i` with its id, when it is live and holds `a`.
    fn chunk_holding(&self, i: usize, a: u64) -> Option<(u64, Allocation)> {
        let c = &self.glibc?.chunks[i];
        (c.state().is_live() && a < c.user().0 + c.usable().max(1))
            .then(|| (self.py_ids() + i as u64, Allocation::chunk(c)))
    }
}
