//! pymalloc (Objects/obmalloc.c): arenas → pools → blocks, found without debug symbols.
//!
//! The state is found by symbol when there is one, else by the `usedpools` signature
//! (layouts.md §B.4 #1: 32 pairs of list heads, each pair either pointing at itself − 16 —
//! the `PTA()` initializer — or at pool headers of that size class) in the Python module's
//! writable memory. In 3.12+ that hit is the whole `struct _obmalloc_state`; in 3.8-3.11 the
//! `arenas` vector is then found as the pointer through which the pools' `arenaindex`
//! leads back to their arenas. Pools are walked from each arena's base to its
//! `pool_address`; a block is live when below `nextoffset` and not on the pool's free list,
//! which must agree with the pool's `ref.count`.

use crate::addr::Addr;
use crate::error::{Diagnostic, Diagnostics};
use crate::error::{Error, Result};
use crate::image::memory::Reader;
use crate::image::modules::Module;
use crate::image::process::Process;
use crate::models::{CpythonModel, Epoch, StateKind, Version};
use serde::Serialize;

#[cfg(test)]
mod tests;

/// pool_header (identical 3.8-3.14, layouts.md §B.2).
const POOL_REF_COUNT: u64 = 0x00;
const POOL_FREEBLOCK: u64 = 0x08;
const POOL_NEXTPOOL: u64 = 0x10;
const POOL_ARENAINDEX: u64 = 0x20;
const POOL_SZIDX: u64 = 0x24;
const POOL_NEXTOFFSET: u64 = 0x28;
/// arena_object: address, pool_address, nfreepools, ntotalpools (48 bytes).
const ARENA_OBJECT_SIZE: u64 = 48;

#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct ClassStats {
    pub size: u64,
    pub pools: u64,
    /// Blocks in use ("count" in JSON, as every size-class row of every command).
    #[serde(rename = "count")]
    pub blocks_in_use: u64,
    /// Free blocks in the class's pools.
    #[serde(rename = "free_count")]
    pub blocks_free: u64,
}

#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct PoolStates {
    pub used: u64,
    pub full: u64,
    pub empty: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ArenaInfo {
    pub address: Addr,
    /// Pools carved so far (below pool_address).
    pub pools: u64,
    pub pools_in_use: u64,
    pub blocks_in_use: u64,
    pub bytes_in_use: u64,
    /// Kept alive by a few live blocks: in use, but under a quarter of the arena used.
    /// pymalloc returns an arena to the system only when all its pools are empty.
    pub pinned: bool,
    /// Size classes with live blocks here, as (block size, live blocks): what pins it.
    pub classes: Vec<[u64; 2]>,
}

/// An arena is pinned when live blocks fill less than this share of it.
pub const PINNED_BELOW: f64 = 0.25;

/// One live block: address and size class size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub addr: Addr,
    pub size: u32,
}

/// A used pool's blocks, in 32 bytes instead of 16 per live block: the blocks carved so
/// far (below `nextoffset`), and which of them are on the pool's free list. A full pool —
/// most pools of a big heap — needs no bitmap at all.
#[derive(Debug, Clone, Copy)]
pub struct PoolBlocks {
    /// The pool header.
    pub addr: u64,
    /// Offset of the first block (the header's size, `POOL_OVERHEAD`).
    pub first: u32,
    /// Block size of the pool's size class.
    pub size: u32,
    /// Blocks carved so far.
    pub span: u32,
    /// Index of the pool's free bitmap in `PymallocHeap::free_bits`, or `NO_FREE`.
    free: u32,
    /// Dense position of the first block: positions number every carved block of every
    /// pool in address order (`PymallocHeap::positions`), for per-block bitmaps.
    pub pos: u64,
}

const NO_FREE: u32 = u32::MAX;

/// How pymalloc's state (`usedpools`) was found: an identifier in JSON, words in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// `usedpools` (3.8-3.11) or `obmalloc_state_main` (3.12+) by symbol.
    Symbol,
    /// The 32 pairs of list heads in the Python module's writable memory.
    UsedpoolsSignature,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PymallocHeap {
    pub model: String,
    /// The interpreter this heap belongs to (version, module, type-name probe).
    #[serde(skip)]
    pub python: Option<crate::image::version::PythonInfo>,
    pub state: Addr,
    pub found_by: FoundBy,
    pub arena_size: u64,
    pub pool_size: u64,
    /// Arenas currently allocated (`# arenas allocated current`).
    pub arenas: u64,
    pub pools: PoolStates,
    pub size_classes: Vec<ClassStats>,
    pub pinned_arenas: u64,
    /// Bytes of the arenas not in live blocks: free blocks, empty and never-used pools,
    /// pool headers and alignment.
    pub free_bytes: u64,
    pub in_use_bytes: u64,
    pub arena_list: Vec<ArenaInfo>,
    /// Used pools in address order; `blocks()` lists their live blocks.
    #[serde(skip)]
    pub pool_blocks: Vec<PoolBlocks>,
    /// Free-list bitmaps of the pools that have free blocks below `nextoffset`.
    #[serde(skip)]
    free_bits: Vec<u64>,
    /// Reported once, by the analysis that owns this walk (never twice in JSON).
    #[serde(skip)]
    pub diagnostics: Diagnostics,
}

impl PymallocHeap {
    /// Is block `j` of pool `p` live (carved and not on the free list)?
    #[inline]
    pub fn is_live(&self, p: &PoolBlocks, j: u32) -> bool {
        j < p.span
            && (p.free == NO_FREE
                || self.free_bits[p.free as usize + (j / 64) as usize] & (1 << (j % 64)) == 0)
    }

    /// Every live block, in address order.
    pub fn blocks(&self) -> impl Iterator<Item = Block> + '_ {
        self.pool_blocks.iter().flat_map(move |p| {
            (0..p.span)
                .filter(move |&j| self.is_live(p, j))
                .map(move |j| Block {
                    addr: Addr(p.addr + p.first as u64 + j as u64 * p.size as u64),
                    size: p.size,
                })
        })
    }

    /// Number of block positions (carved blocks, live or free, of every used pool).
    pub fn positions(&self) -> u64 {
        self.pool_blocks.last().map_or(0, |p| p.pos + p.span as u64)
    }

    /// The live block holding `a` (interior addresses too), with its position.
    pub fn block_containing(&self, a: u64) -> Option<(u64, Block)> {
        let pool = a & !(self.pool_size - 1);
        let i = self
            .pool_blocks
            .binary_search_by_key(&pool, |p| p.addr)
            .ok()?;
        self.block_in(i, a)
    }

    /// The live block of used pool `i` (an index into `pool_blocks`) holding `a`.
    pub fn block_in(&self, i: usize, a: u64) -> Option<(u64, Block)> {
        let p = &self.pool_blocks[i];
        let off = a.checked_sub(p.addr)?.checked_sub(p.first as u64)?;
        let j = u32::try_from(off / p.size as u64).ok()?;
        self.is_live(p, j).then(|| {
            (
                p.pos + j as u64,
                Block {
                    addr: Addr(p.addr + p.first as u64 + j as u64 * p.size as u64),
                    size: p.size,
                },
            )
        })
    }
}

/// Does `a` hold the 64 usedpools heads? `Some(number of size classes in use)`.
fn usedpools_at(r: &Reader, model: &CpythonModel, a: Addr) -> Option<u64> {
    let ps = model.pymalloc.pool_size;
    let mut used = 0;
    for i in 0..model.pymalloc.size_classes {
        let slot = a.wrapping_add(16 * i);
        let (Some(n), Some(pv)) = (r.u64(slot), r.u64(slot.wrapping_add(8))) else {
            return None;
        };
        let selfref = slot.0.wrapping_sub(16);
        if n == selfref && pv == selfref {
            continue;
        }
        let pool_ok = |x: u64| {
            x != 0 && x % ps == 0 && r.u32(Addr(x.wrapping_add(POOL_SZIDX))) == Some(i as u32)
        };
        if !(pool_ok(n) && pool_ok(pv)) {
            return None;
        }
        used += 1;
    }
    Some(used)
}

fn is_usedpools(r: &Reader, model: &CpythonModel, a: Addr) -> bool {
    usedpools_at(r, model, a).is_some_and(|n| n > 0)
}

/// Candidates for usedpools, with the number of size classes each has in use.
fn scan_usedpools(p: &Process, r: &Reader, model: &CpythonModel, m: &Module) -> Vec<(Addr, u64)> {
    let mut hits = Vec::new();
    for rg in p.writable_ranges(m) {
        let mut a = rg.start;
        while a.wrapping_add(16 * model.pymalloc.size_classes) <= rg.end {
            // Quick rejection on the first pair.
            let first = r.u64(a);
            if first.is_some_and(|v| v == a.0.wrapping_sub(16) || v % model.pymalloc.pool_size == 0)
            {
                if let Some(n) = usedpools_at(r, model, a) {
                    hits.push((a, n));
                }
            }
            a = a.wrapping_add(8);
        }
    }
    hits
}

/// Used pools reachable from usedpools, with their arena index (for finding `arenas`).
fn used_pools(r: &Reader, model: &CpythonModel, up: Addr) -> Vec<(Addr, u32)> {
    let mut out = Vec::new();
    for i in 0..model.pymalloc.size_classes {
        let head = up.wrapping_add(16 * i).0.wrapping_sub(16);
        let mut pool = r.u64(Addr(head.wrapping_add(16))).unwrap_or(head);
        let mut n = 0;
        while pool != head && n < 1 << 16 {
            let Some(idx) = r.u32(Addr(pool.wrapping_add(POOL_ARENAINDEX))) else {
                break;
            };
            out.push((Addr(pool), idx));
            n += 1;
            pool = match r.u64(Addr(pool.wrapping_add(POOL_NEXTPOOL))) {
                Some(x) => x,
                None => break,
            };
        }
    }
    out
}

fn valid_arenas(r: &Reader, model: &CpythonModel, arenas: Addr, max: u64) -> bool {
    if arenas.is_null() || max == 0 || max > 1 << 24 {
        return false;
    }
    let asz = model.pymalloc.arena_size;
    let mut any = false;
    for i in 0..max {
        let ao = arenas.wrapping_add(ARENA_OBJECT_SIZE * i);
        let (Some(address), Some(pool_address), Some(nfree), Some(ntotal)) = (
            r.u64(ao),
            r.u64(ao.wrapping_add(8)),
            r.u32(ao.wrapping_add(16)),
            r.u32(ao.wrapping_add(20)),
        ) else {
            return false;
        };
        if address == 0 {
            continue;
        }
        any = true;
        if pool_address < address
            || pool_address > address.saturating_add(asz)
            || nfree > ntotal
            || ntotal > 64
        {
            return false;
        }
    }
    any
}

/// 3.8-3.11 without symbols: the word in the module's writable memory that points at an
/// arena_object array in which every used pool's `arenaindex` names the arena holding it.
fn find_arenas_static(
    p: &Process,
    r: &Reader,
    model: &CpythonModel,
    m: &Module,
    up: Addr,
) -> Option<(Addr, u64)> {
    let pools = used_pools(r, model, up);
    let (&(pool0, idx0), _) = pools.split_first()?;
    let asz = model.pymalloc.arena_size;
    let max_idx = pools.iter().map(|x| x.1).max().unwrap_or(0) as u64;
    for rg in p.writable_ranges(m) {
        let mut loc = rg.start;
        while loc.wrapping_add(8) <= rg.end {
            let here = loc;
            loc = loc.wrapping_add(8);
            let Some(v) = r.u64(here) else { continue };
            if v == 0 || v % 16 != 0 {
                continue;
            }
            let arena_of = |pool: Addr, idx: u32| {
                r.u64(Addr(v).wrapping_add(ARENA_OBJECT_SIZE * idx as u64))
                    .is_some_and(|base| {
                        base != 0 && pool.0 >= base && pool.0 < base.saturating_add(asz)
                    })
            };
            if !arena_of(pool0, idx0) || !pools.iter().all(|&(pl, i)| arena_of(pl, i)) {
                continue;
            }
            // maxarenas: a u32 near the pointer (obmalloc.c declares them together) that
            // covers every index and is INITIAL_ARENA_OBJECTS (16) doubled k times.
            let near = (-64i64..=64).step_by(4).filter_map(|d| {
                let a = Addr(here.0.wrapping_add(d as u64));
                r.u32(a).map(|x| x as u64)
            });
            let plausible =
                |x: u64| x > max_idx && x >= 16 && (x / 16).is_power_of_two() && x % 16 == 0;
            let max = near
                .filter(|&x| plausible(x))
                .find(|&x| valid_arenas(r, model, Addr(v), x));
            if let Some(max) = max {
                return Some((Addr(v), max));
            }
        }
    }
    None
}

/// Walk pymalloc; with `collect`, also list every live block (in address order).
pub fn analyze(
    p: &Process,
    model: &CpythonModel,
    python: &Module,
    collect: bool,
) -> Result<PymallocHeap, String> {
    analyze_window(p, model, python, collect, None, None)
}

/// [`analyze`], walking the pools of only the arenas that overlap `window` (all when
/// None), with the state (`usedpools`) at `state` when given instead of searched for: the
/// fuzzing harness walks the arena its bytes were overlaid on.
#[doc(hidden)]
pub fn analyze_window(
    p: &Process,
    model: &CpythonModel,
    python: &Module,
    collect: bool,
    window: Option<crate::addr::Range>,
    state: Option<Addr>,
) -> Result<PymallocHeap, String> {
    let r = Reader { space: &p.space };
    let pm = &model.pymalloc;
    // --- the state.
    let mut found_by = FoundBy::Symbol;
    let up = match pm.state {
        _ if state.is_some() => None,
        StateKind::Statics => python.symbol(&p.space, "usedpools").map(|s| s.addr),
        StateKind::State => python
            .symbol(&p.space, "obmalloc_state_main")
            .map(|s| s.addr)
            .filter(|&a| is_usedpools(&r, model, a)),
    };
    let up = match state.or(up) {
        Some(a) => a,
        None => {
            found_by = FoundBy::UsedpoolsSignature;
            let all = scan_usedpools(p, &r, model, python);
            // A pymalloc in use has pools linked from usedpools; one never used
            // (PYTHONMALLOC=malloc) still has its initial self-referential table.
            let in_use: Vec<Addr> = all.iter().filter(|h| h.1 > 0).map(|h| h.0).collect();
            let hits = if in_use.is_empty() {
                all.iter().map(|h| h.0).collect()
            } else {
                in_use
            };
            match hits.as_slice() {
                [a] => *a,
                [] => {
                    return Err("pymalloc's usedpools not found in the Python module's data".into())
                }
                many => {
                    return Err(format!(
                        "{} candidates for pymalloc's usedpools",
                        many.len()
                    ))
                }
            }
        }
    };
    let (arenas, maxarenas) = match pm.state {
        StateKind::State => {
            let a = r.u64(up.wrapping_add(pm.arenas_offset.unwrap())).map(Addr);
            let m = r
                .u32(up.wrapping_add(pm.maxarenas_offset.unwrap()))
                .map(|x| x as u64);
            (
                a.ok_or("obmalloc state not readable")?,
                m.ok_or("obmalloc state not readable")?,
            )
        }
        StateKind::Statics => {
            let sym = (
                python.symbol(&p.space, "arenas"),
                python.symbol(&p.space, "maxarenas"),
            );
            match sym {
                (Some(a), Some(m)) => (
                    Addr(r.u64(a.addr).ok_or("arenas not readable")?),
                    r.u32(m.addr).ok_or("maxarenas not readable")? as u64,
                ),
                _ => match find_arenas_static(p, &r, model, python, up) {
                    Some(x) => x,
                    // No pool in use anywhere: pymalloc is not used (PYTHONMALLOC=malloc),
                    // or only through full pools, which cannot lead us to the arenas.
                    None if used_pools(&r, model, up).is_empty() => (Addr::NULL, 0),
                    None => return Err("pymalloc's arenas vector not found".into()),
                },
            }
        }
    };
    let unused = arenas.is_null() && used_pools(&r, model, up).is_empty();
    if !unused && !valid_arenas(&r, model, arenas, maxarenas) {
        return Err(format!(
            "the arena vector at {arenas} ({maxarenas} slots) does not look like pymalloc's"
        ));
    }

    // --- the walk.
    let mut diags = Diagnostics::default();
    let maxarenas = if unused { 0 } else { maxarenas };
    if unused {
        diags.push(Diagnostic::info(
            "pymalloc holds no pools (PYTHONMALLOC=malloc?): Python objects are looked for in glibc chunks only",
        ));
    }
    // Arenas in address order, so blocks come out sorted without a sort.
    let mut order: Vec<(u64, u64)> = (0..maxarenas)
        .filter_map(|i| {
            let a = r
                .u64(arenas.wrapping_add(ARENA_OBJECT_SIZE * i))
                .unwrap_or(0);
            (a != 0).then_some((a, i))
        })
        .collect();
    order.sort_unstable();
    // Two halves of the arenas on two threads for a large heap: the walk is mostly the
    // core's first page faults (a 9 GB heap: 0.23-0.27 s on one thread, 0.14-0.15 s on
    // two). The halves are joined in address order, as one walk gives them.
    let walk = |order: &[(u64, u64)]| walk_arenas(&r, model, arenas, order, window, collect);
    let two = order.len() >= 64 && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    let w = match two {
        true => {
            let (a, b) = order.split_at(order.len() / 2);
            let (mut a, b) = std::thread::scope(|sc| {
                let hb = sc.spawn(|| walk(b));
                (walk(a), hb.join().expect("pymalloc walk thread"))
            });
            a.append(b);
            a
        }
        false => walk(&order),
    };
    diags.append(&w.diags);
    let ArenaWalk {
        classes,
        states,
        arena_list,
        pool_blocks,
        free_bits,
        narenas,
        pools_checked,
        pools_bad,
        ..
    } = w;
    // Damage touches a few pools; a model whose geometry does not fit contradicts most of
    // them. Then this is not this heap's layout, and no answer beats a wrong one.
    if pools_checked >= 8 && pools_bad * 2 > pools_checked {
        return Err(format!(
            "the model's pool layout does not fit this heap: {pools_bad} of {pools_checked} pools in use contradict it"
        ));
    }
    Ok(PymallocHeap {
        model: model.name.clone(),
        python: None,
        state: up,
        found_by,
        arena_size: pm.arena_size,
        pool_size: pm.pool_size,
        arenas: narenas,
        pinned_arenas: arena_list.iter().filter(|a| a.pinned).count() as u64,
        in_use_bytes: arena_list.iter().map(|a| a.bytes_in_use).sum(),
        free_bytes: (narenas * pm.arena_size)
            .saturating_sub(arena_list.iter().map(|a| a.bytes_in_use).sum()),
        pools: states,
        size_classes: classes,
        arena_list,
        pool_blocks,
        free_bits,
        diagnostics: diags,
    })
}

/// What a walk of some arenas found (`walk_arenas`).
struct ArenaWalk {
    diags: Diagnostics,
    classes: Vec<ClassStats>,
    states: PoolStates,
    arena_list: Vec<ArenaInfo>,
    pool_blocks: Vec<PoolBlocks>,
    free_bits: Vec<u64>,
    /// Block positions numbered (the next pool's first).
    positions: u64,
    narenas: u64,
    /// Pools in use, and those whose header contradicts the model's geometry.
    pools_checked: u64,
    pools_bad: u64,
}

impl ArenaWalk {
    /// Join the walk of the arenas after these: as if one walk had gone on into them.
    fn append(&mut self, b: ArenaWalk) {
        self.diags.append(&b.diags);
        for (x, y) in self.classes.iter_mut().zip(&b.classes) {
            x.pools += y.pools;
            x.blocks_in_use += y.blocks_in_use;
            x.blocks_free += y.blocks_free;
        }
        self.states.used += b.states.used;
        self.states.full += b.states.full;
        self.states.empty += b.states.empty;
        self.arena_list.extend(b.arena_list);
        let base = self.free_bits.len() as u32;
        self.pool_blocks
            .extend(b.pool_blocks.into_iter().map(|mut p| {
                p.pos += self.positions;
                if p.free != NO_FREE {
                    p.free += base;
                }
                p
            }));
        self.free_bits.extend(b.free_bits);
        self.positions += b.positions;
        self.narenas += b.narenas;
        self.pools_checked += b.pools_checked;
        self.pools_bad += b.pools_bad;
    }
}

/// Walk the pools of the arenas `order` lists (address, index in the arena vector at
/// `arenas`), in that order.
fn walk_arenas(
    r: &Reader,
    model: &CpythonModel,
    arenas: Addr,
    order: &[(u64, u64)],
    window: Option<crate::addr::Range>,
    collect: bool,
) -> ArenaWalk {
    let pm = &model.pymalloc;
    // The core's page-table entries are dropped behind the walk every 64 MiB of arenas:
    // a pool header's read maps its neighbours too (the kernel's fault-around), so a walk
    // of a 9 GB heap left 8 GB of the core resident.
    let release_every = ((64u64 << 20) / pm.arena_size.max(1)).max(1);
    let mut diags = Diagnostics::default();
    let mut classes: Vec<ClassStats> = (0..pm.size_classes)
        .map(|i| ClassStats {
            size: (i + 1) * 16,
            ..Default::default()
        })
        .collect();
    let mut states = PoolStates::default();
    let mut arena_list = Vec::new();
    let mut pool_blocks: Vec<PoolBlocks> = Vec::new();
    let mut free_bits: Vec<u64> = Vec::new();
    let mut positions = 0u64;
    let mut narenas = 0;
    let mut free_set: Vec<u64> = Vec::new();
    let (mut pools_checked, mut pools_bad) = (0u64, 0u64);
    for &(address, i) in order {
        if window.is_some_and(|w| {
            address >= w.end.0 || address.saturating_add(pm.arena_size) <= w.start.0
        }) {
            continue;
        }
        let ao = arenas.wrapping_add(ARENA_OBJECT_SIZE * i);
        narenas += 1;
        if narenas % release_every == 0 {
            r.space.release_pages();
        }
        let pool_address = r.u64(ao.wrapping_add(8)).unwrap_or(address);
        // A non-pool-aligned arena loses its first partial pool (obmalloc.c new_arena).
        let base = Addr(address)
            .align_up(pm.pool_size)
            .unwrap_or(Addr(address));
        let mut info = ArenaInfo {
            address: Addr(address),
            pools: 0,
            pools_in_use: 0,
            blocks_in_use: 0,
            bytes_in_use: 0,
            pinned: false,
            classes: Vec::new(),
        };
        let mut per_class = [0u64; 64];
        let mut pool = base;
        while pool.0 < pool_address && pool.0 < address.saturating_add(pm.arena_size) {
            info.pools += 1;
            let this = pool;
            pool = pool.wrapping_add(pm.pool_size);
            let Some(count) = r.u32(this.wrapping_add(POOL_REF_COUNT)) else {
                diags.push(Diagnostic::warning("pool header not readable").at(this));
                continue;
            };
            if count == 0 {
                states.empty += 1;
                continue;
            }
            pools_checked += 1;
            let szidx = r.u32(this.wrapping_add(POOL_SZIDX)).unwrap_or(u32::MAX) as u64;
            let nextoffset = r.u32(this.wrapping_add(POOL_NEXTOFFSET)).unwrap_or(0) as u64;
            if szidx >= pm.size_classes || nextoffset > pm.pool_size {
                pools_bad += 1;
                diags.push(
                    Diagnostic::warning(format!(
                        "pool with impossible size class {szidx} or nextoffset {nextoffset}"
                    ))
                    .at(this),
                );
                continue;
            }
            let size = (szidx + 1) * 16;
            let nblocks = model.numblocks(szidx);
            if count as u64 > nblocks {
                pools_bad += 1;
                diags.push(
                    Diagnostic::warning(format!(
                        "pool count {count} exceeds {nblocks} blocks of {size}"
                    ))
                    .at(this),
                );
                continue;
            }
            // The pool's free list: blocks freed back, singly linked through their first word.
            free_set.clear();
            let mut f = r.u64(this.wrapping_add(POOL_FREEBLOCK)).unwrap_or(0);
            let lo = this.0.saturating_add(pm.pool_overhead);
            let hi = this.0.saturating_add(pm.pool_size);
            while f != 0 && free_set.len() as u64 <= nblocks {
                if f < lo || f >= hi || (f - lo) % size != 0 {
                    break; // the list goes on into never-used blocks or was damaged
                }
                if f - this.0 >= nextoffset {
                    break; // the tail of the list: the first never-used block
                }
                free_set.push(f);
                f = r.u64(Addr(f)).unwrap_or(0);
            }
            free_set.sort_unstable();
            // A block met twice: the list loops (obmalloc.c never links a block twice; the
            // length guard above ended the walk). The blocks it met are still the free ones.
            let met = free_set.len();
            free_set.dedup();
            if free_set.len() != met {
                pools_bad += 1;
                diags.push(
                    Diagnostic::warning(format!("pool of {size}-byte blocks: its free list loops"))
                        .at(this),
                );
            }
            // Blocks carved so far: those below nextoffset.
            let span = nextoffset
                .min(pm.pool_size)
                .saturating_sub(pm.pool_overhead)
                / size;
            // Free-list members of carved blocks (a nextoffset off the block grid leaves
            // a partial block out).
            free_set.retain(|&f| (f - lo) / size < span);
            let live = span - free_set.len() as u64;
            if collect {
                let free = if free_set.is_empty() {
                    NO_FREE
                } else {
                    let at = free_bits.len();
                    free_bits.resize(at + span.div_ceil(64) as usize, 0);
                    for &f in &free_set {
                        let j = (f - lo) / size;
                        free_bits[at + (j / 64) as usize] |= 1 << (j % 64);
                    }
                    at as u32
                };
                pool_blocks.push(PoolBlocks {
                    addr: this.0,
                    first: pm.pool_overhead as u32,
                    size: size as u32,
                    span: span as u32,
                    free,
                    pos: positions,
                });
                positions += span;
            }
            if live != count as u64 {
                pools_bad += 1;
                diags.push(
                    Diagnostic::warning(format!(
                        "pool of {size}-byte blocks: reconstruction finds {live} live blocks, its ref.count says {count}"
                    ))
                    .at(this),
                );
            }
            let c = &mut classes[szidx as usize];
            c.pools += 1;
            c.blocks_in_use += count as u64;
            c.blocks_free += nblocks - count as u64;
            if (count as u64) < nblocks {
                states.used += 1;
            } else {
                states.full += 1;
            }
            info.pools_in_use += 1;
            info.blocks_in_use += count as u64;
            info.bytes_in_use += count as u64 * size;
            per_class[szidx as usize] += count as u64;
        }
        info.classes = per_class
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| [(i as u64 + 1) * 16, n])
            .collect();
        info.pinned = info.blocks_in_use > 0
            && (info.bytes_in_use as f64) < PINNED_BELOW * pm.arena_size as f64;
        arena_list.push(info);
    }
    ArenaWalk {
        diags,
        classes,
        states,
        arena_list,
        pool_blocks,
        free_bits,
        positions,
        narenas,
        pools_checked,
        pools_bad,
    }
}

/// Walk pymalloc if the process runs CPython. `Ok(None)`: no CPython here.
/// Free-threaded builds (mimalloc instead of pymalloc) are refused, never guessed at.
pub fn walk_process(
    p: &Process,
    models: &[CpythonModel],
    collect_blocks: bool,
) -> Result<Option<PymallocHeap>> {
    let Some(py) = crate::image::version::detect_python(p) else {
        return Ok(None);
    };
    if py.free_threaded {
        return Err(Error::Unsupported(format!(
            "{} is a free-threaded CPython {} build: its objects live in mimalloc heaps, which coreheap does not read yet",
            py.module,
            py.version.as_deref().unwrap_or("")
        )));
    }
    let module = p
        .modules
        .modules
        .iter()
        .find(|m| m.path == py.module)
        .expect("detect_python names a module");
    let v = py.version.as_deref().and_then(Version::parse);
    let mut order: Vec<&CpythonModel> = models
        .iter()
        .filter(|m| v.is_some_and(|v| m.covers(v)))
        .collect();
    let exact = !order.is_empty();
    // Then the others: nearest to the version first (newest first when it is unknown).
    let mut rest: Vec<&CpythonModel> = models
        .iter()
        .rev()
        .filter(|m| !v.is_some_and(|v| m.covers(v)))
        .collect();
    if let Some(v) = v {
        rest.sort_by_key(|m| m.distance(v));
    }
    order.extend(rest);
    let mut errors = Vec::new();
    for m in order {
        match analyze(p, m, module, collect_blocks) {
            Ok(mut h) => {
                if let Some(rt) = py.runtime {
                    h.diagnostics
                        .extend(crate::models::debug_offsets::cross_check(p, rt, m));
                }
                if !exact {
                    h.diagnostics.push(crate::error::Diagnostic::warning(match &py.version {
                        Some(v) => format!(
                            "CPython {v}: no layout model covers this version; the {} model's invariants hold and it was used",
                            m.name
                        ),
                        None => format!(
                            "CPython's version is not readable; the {} model's invariants hold and it was used",
                            m.name
                        ),
                    }));
                }
                h.python = Some(py);
                return Ok(Some(h));
            }
            Err(e) => errors.push(format!("{}: {e}", m.name)),
        }
        if exact && v.is_some() {
            // The version is known and its model failed: other epochs' layouts would only
            // produce a wrong answer with confidence.
            break;
        }
    }
    Err(Error::Other(format!(
        "could not walk pymalloc in {}: {}",
        py.module,
        errors.join("; ")
    )))
}
