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

/// Every live allocation of both allocators, merged in address order: pymalloc blocks
/// (arenas walked in address order) and glibc chunks in use or mmapped (sorted by the walk).
/// pymalloc arenas are mmapped by CPython itself, never glibc chunks, so the two streams
/// never nest.
pub fn live<'a>(
    glibc: Option<&'a GlibcHeap>,
    pymalloc: Option<&'a PymallocHeap>,
) -> impl Iterator<Item = Allocation> + 'a {
    Heaps {
        glibc,
        pymalloc,
        core: None,
    }
    .live_between(0, u64::MAX)
    .map(|(_, a)| a)
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

    /// Live allocations whose address is in `[lo, hi)`, with their ids, in address order.
    pub fn live_between(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, Allocation)> + 'a {
        let blocks = self.pymalloc.into_iter().flat_map(move |p| {
            let pools = &p.pool_blocks;
            let a = pools.partition_point(|x| x.addr < lo & !(p.pool_size - 1));
            let b = pools.partition_point(|x| x.addr < hi);
            p.blocks_of(a..b)
                .filter(move |(_, b)| b.addr.0 >= lo && b.addr.0 < hi)
                .map(|(id, b)| {
                    (
                        id,
                        Allocation {
                            addr: b.addr,
                            usable: b.size as u64,
                            size: b.size as u64,
                            allocator: Allocator::Pymalloc,
                        },
                    )
                })
        });
        let base = self.py_ids();
        let chunks = self.glibc.into_iter().flat_map(move |g| {
            let a = g.chunks.partition_point(|c| c.user().0 < lo);
            let b = g.chunks.partition_point(|c| c.user().0 < hi);
            g.chunks[a..b]
                .iter()
                .enumerate()
                .filter(|(_, c)| c.state().is_live())
                .map(move |(i, c)| {
                    (
                        base + (a + i) as u64,
                        Allocation {
                            addr: c.user(),
                            usable: c.usable(),
                            size: c.size(),
                            allocator: Allocator::Glibc,
                        },
                    )
                })
        });
        Merge {
            a: blocks.peekable(),
            b: chunks.peekable(),
        }
    }

    /// [`Heaps::live_between`] as a loop calling `f` (no iterator adapters on the hot
    /// path of a 20 M-allocation census).
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
                    f(
                        chunk_base + ci as u64,
                        Allocation {
                            addr: c.user(),
                            usable: c.usable(),
                            size: c.size(),
                            allocator: Allocator::Glibc,
                        },
                    );
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
                        f(
                            p.pos + j as u64,
                            Allocation {
                                addr: Addr(addr),
                                usable: size,
                                size,
                                allocator: Allocator::Pymalloc,
                            },
                        );
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
                let pb = &v[i];
                let off = (a - pool).checked_sub(pb.first as u64)?;
                let j = u32::try_from(off / pb.size as u64).ok()?;
                return p.is_live(pb, j).then(|| {
                    (
                        pb.pos + j as u64,
                        Allocation {
                            addr: Addr(pool + pb.first as u64 + j as u64 * pb.size as u64),
                            usable: pb.size as u64,
                            size: pb.size as u64,
                            allocator: Allocator::Pymalloc,
                        },
                    )
                });
            }
        }
        let g = self.glibc?;
        let c = &g.chunks;
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
        let ch = &c[i];
        (ch.state().is_live() && a < ch.user().0 + ch.usable().max(1)).then(|| {
            (
                self.py_ids() + i as u64,
                Allocation {
                    addr: ch.user(),
                    usable: ch.usable(),
                    size: ch.size(),
                    allocator: Allocator::Glibc,
                },
            )
        })
    }

    /// The live allocation holding address `a` (interior addresses too), with its id.
    pub fn containing(&self, a: u64) -> Option<(u64, Allocation)> {
        if let Some((id, b)) = self.pymalloc.and_then(|p| p.block_containing(a)) {
            return Some((
                id,
                Allocation {
                    addr: b.addr,
                    usable: b.size as u64,
                    size: b.size as u64,
                    allocator: Allocator::Pymalloc,
                },
            ));
        }
        let g = self.glibc?;
        let i = g
            .chunks
            .partition_point(|c| c.user().0 <= a)
            .checked_sub(1)?;
        let c = &g.chunks[i];
        (c.state().is_live() && a < c.user().0 + c.usable().max(1)).then(|| {
            (
                self.py_ids() + i as u64,
                Allocation {
                    addr: c.user(),
                    usable: c.usable(),
                    size: c.size(),
                    allocator: Allocator::Glibc,
                },
            )
        })
    }
}

/// Two address-ordered streams as one.
struct Merge<A: Iterator<Item = (u64, Allocation)>, B: Iterator<Item = (u64, Allocation)>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A: Iterator<Item = (u64, Allocation)>, B: Iterator<Item = (u64, Allocation)>> Iterator
    for Merge<A, B>
{
    type Item = (u64, Allocation);
    fn next(&mut self) -> Option<(u64, Allocation)> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y.1.addr < x.1.addr => self.b.next(),
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
            a: x.into_iter().map(|a| (0, a)).peekable(),
            b: y.into_iter().map(|a| (0, a)).peekable(),
        }
        .map(|a| a.1.addr.0)
        .collect();
        assert_eq!(m, vec![0x10, 0x20, 0x30, 0x50, 0x90]);
    }
}
