//! `coreheap report`: the data only the HTML page shows — the arena occupancy map and the
//! per-size-class fill — built from [`Analysis`], plus the shapes of the optional sections
//! other analyses plug in (a tree of retained memory, a table of sites).
//!
//! The page's other sections are the outputs of `info`, `stacks`, `summary`, `frag` and
//! `diff` themselves, assembled by the binary: this file imports no other command, and the
//! renderer (`report::html`) does no analysis. Everything here is aggregated and capped, so
//! the page stays small for any core (a 1.2 GB core's page is a few hundred KB).

use super::Analysis;
use crate::addr::Addr;
use crate::alloc::glibc::ChunkState;
use serde::Serialize;
use std::collections::BTreeMap;

/// Most cells an occupancy map draws per allocator; past it, neighbouring pools (pages) of
/// one region are merged into one cell (their mean fill).
pub const MAX_CELLS: usize = 40_000;
/// Most regions (arenas, heaps) an occupancy map lists; the rest are counted, not drawn.
pub const MAX_REGIONS: usize = 8_192;
/// Most rows of the per-size-class bars per allocator (the fullest kept).
pub const MAX_CLASSES: usize = 64;
/// A glibc heap's cell: one page.
pub const GLIBC_PAGE: u64 = 4096;
/// A cell's value when nothing was ever carved there (a pool beyond the arena's
/// `pool_address`).
pub const UNUSED: u8 = 255;

/// One arena (pymalloc) or heap (glibc): its cells in address order, each the percentage
/// (0-100) of its bytes in live blocks or chunks, or [`UNUSED`].
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Region {
    pub address: Addr,
    pub bytes: u64,
    /// pymalloc: kept alive by a few live blocks (see `PymallocHeap::pinned_arenas`).
    pub pinned: bool,
    pub fill: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Occupancy {
    pub allocator: &'static str,
    /// What one unit is ("pool", "page") and its bytes.
    pub unit: &'static str,
    pub unit_bytes: u64,
    /// Units per cell (1 unless the map was downsampled).
    pub units_per_cell: u64,
    pub regions: Vec<Region>,
    /// Regions past [`MAX_REGIONS`], not drawn.
    pub regions_left_off: u64,
}

/// One size class: live and free bytes in it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ClassFill {
    pub size: u64,
    pub live_count: u64,
    pub live_bytes: u64,
    pub free_count: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ClassBars {
    pub allocator: &'static str,
    /// The fullest classes (live + free bytes), in size order.
    pub classes: Vec<ClassFill>,
    pub classes_left_off: u64,
}

/// What the fragmentation section draws beyond `frag`'s numbers.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, Default)]
pub struct HeapMap {
    pub occupancy: Vec<Occupancy>,
    pub classes: Vec<ClassBars>,
}

/// A node of retained memory (e.g. by owner): the page draws it as an icicle, click to
/// zoom. Extension point: the ownership analysis converts its result into this.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TreeNode {
    pub name: String,
    /// Bytes of this node including its children.
    pub bytes: u64,
    pub count: u64,
    pub children: Vec<TreeNode>,
}

/// A table cell: text, or a number the page formats (bytes, counts) and sorts by.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Cell {
    Text(String),
    Int(i64),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Column {
    pub title: String,
    /// "text", "count", "bytes" or "delta" (signed bytes): how the page formats the cells.
    pub kind: &'static str,
}

/// The body of an optional section.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SectionBody {
    Tree {
        root: TreeNode,
    },
    Table {
        columns: Vec<Column>,
        rows: Vec<Vec<Cell>>,
    },
}

/// An optional section of the page (owner view, growth by owner, tracemalloc sites...):
/// the page lists them in order after the fixed sections, each with its own anchor.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Section {
    /// The anchor (`#id`): letters, digits and `-` only.
    pub id: String,
    pub title: String,
    /// One line under the title.
    pub note: String,
    pub body: SectionBody,
}

impl Section {
    pub fn new(id: &str, title: &str, note: &str, body: SectionBody) -> Section {
        let id: String = id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        Section {
            id,
            title: title.into(),
            note: note.into(),
            body,
        }
    }
}

/// Merge `n` consecutive cells into one: the mean of the used ones, [`UNUSED`] when none is.
fn downsample(fill: &[u8], n: usize) -> Vec<u8> {
    if n <= 1 {
        return fill.to_vec();
    }
    fill.chunks(n)
        .map(|c| {
            let used: Vec<u64> = c
                .iter()
                .filter(|&&v| v != UNUSED)
                .map(|&v| v as u64)
                .collect();
            if used.is_empty() {
                UNUSED
            } else {
                (used.iter().sum::<u64>() / used.len() as u64) as u8
            }
        })
        .collect()
}

fn percent(live: u64, of: u64) -> u8 {
    if of == 0 {
        return 0;
    }
    (live.min(of) * 100 / of) as u8
}

/// Downsample every region so that the map has at most [`MAX_CELLS`] cells, and cap the
/// regions.
fn finish(
    allocator: &'static str,
    unit: &'static str,
    unit_bytes: u64,
    mut regions: Vec<Region>,
) -> Occupancy {
    let left_off = regions.len().saturating_sub(MAX_REGIONS) as u64;
    regions.truncate(MAX_REGIONS);
    let total: usize = regions.iter().map(|r| r.fill.len()).sum();
    let cells = |n: usize| -> usize { regions.iter().map(|r| r.fill.len().div_ceil(n)).sum() };
    // Each region rounds up; a few more units per cell absorb that.
    let mut n = total.div_ceil(MAX_CELLS).max(1);
    while cells(n) > MAX_CELLS && n < total {
        n += 1;
    }
    for r in &mut regions {
        r.fill = downsample(&r.fill, n);
    }
    Occupancy {
        allocator,
        unit,
        unit_bytes,
        units_per_cell: n as u64,
        regions,
        regions_left_off: left_off,
    }
}

/// pymalloc: one cell per pool, filled by the bytes of its live blocks over the pool size.
/// Pools start at the arena's address rounded up to the pool size (Objects/obmalloc.c
/// new_arena: a non-aligned arena loses its first partial pool), as the walk reads them.
fn pymalloc_map(a: &Analysis) -> Option<(Occupancy, ClassBars)> {
    let py = a.pymalloc.as_ref()?;
    let ps = py.pool_size.max(1);
    let mut arenas: Vec<(u64, u64, usize)> = Vec::new(); // (first pool, pools carved, index)
    let mut regions = Vec::new();
    for (i, ar) in py.arena_list.iter().enumerate() {
        let base = ar.address.align_up(ps).unwrap_or(ar.address).0;
        let end = ar.address.0.saturating_add(py.arena_size);
        let slots = (end.saturating_sub(base) / ps).min(1 << 16) as usize;
        let mut fill = vec![UNUSED; slots];
        for f in fill.iter_mut().take(ar.pools as usize) {
            *f = 0;
        }
        arenas.push((base, ar.pools.min(slots as u64), i));
        regions.push(Region {
            address: ar.address,
            bytes: py.arena_size,
            pinned: ar.pinned,
            fill,
        });
    }
    arenas.sort_unstable();
    let mut live = vec![Vec::<u64>::new(); regions.len()];
    for (k, r) in regions.iter().enumerate() {
        live[k] = vec![0; r.fill.len()];
    }
    for b in py.blocks() {
        let i = arenas.partition_point(|x| x.0 <= b.addr.0);
        let Some(&(base, pools, idx)) = i.checked_sub(1).and_then(|i| arenas.get(i)) else {
            continue;
        };
        let pool = ((b.addr.0 - base) / ps) as usize;
        if (pool as u64) < pools {
            live[idx][pool] += b.size as u64;
        }
    }
    for (r, l) in regions.iter_mut().zip(&live) {
        for (f, &bytes) in r.fill.iter_mut().zip(l) {
            if *f != UNUSED {
                *f = percent(bytes, ps);
            }
        }
    }
    // Regions in address order, as the map is read.
    regions.sort_by_key(|r| r.address);
    let classes: Vec<ClassFill> = py
        .size_classes
        .iter()
        .filter(|c| c.pools > 0)
        .map(|c| ClassFill {
            size: c.size,
            live_count: c.blocks_in_use,
            live_bytes: c.blocks_in_use * c.size,
            free_count: c.blocks_free,
            free_bytes: c.blocks_free * c.size,
        })
        .collect();
    Some((
        finish("pymalloc", "pool", ps, regions),
        cap_classes("pymalloc", classes),
    ))
}

fn cap_classes(allocator: &'static str, mut classes: Vec<ClassFill>) -> ClassBars {
    let n = classes.len();
    if n > MAX_CLASSES {
        classes.sort_by(|x, y| {
            (y.live_bytes + y.free_bytes)
                .cmp(&(x.live_bytes + x.free_bytes))
                .then(x.size.cmp(&y.size))
        });
        classes.truncate(MAX_CLASSES);
        classes.sort_by_key(|c| c.size);
    }
    ClassBars {
        allocator,
        classes,
        classes_left_off: n.saturating_sub(MAX_CLASSES) as u64,
    }
}

/// glibc: one cell per page of each heap (the main arena's brk heap, each thread arena's
/// mmapped heaps), filled by the bytes of chunks in use that overlap it. Free chunks of
/// every kind (tcache and fastbins included: the application does not hold them) and the
/// top chunk count as empty.
fn glibc_map(a: &Analysis) -> Option<(Occupancy, ClassBars)> {
    let g = a.glibc.as_ref()?;
    let mut spans: Vec<(u64, u64)> = g
        .arenas
        .iter()
        .flat_map(|ar| ar.heaps.iter().map(|h| (h.address.0, h.size)))
        .filter(|&(_, s)| s > 0)
        .collect();
    spans.sort_unstable();
    spans.dedup_by_key(|s| s.0);
    // Bound the work and the page for a damaged arena claiming a huge heap.
    let pages_of = |s: u64| (s.div_ceil(GLIBC_PAGE)).min(1 << 22) as usize;
    let mut live: Vec<Vec<u64>> = spans.iter().map(|&(_, s)| vec![0; pages_of(s)]).collect();
    let mut by_size: BTreeMap<u64, ClassFill> = BTreeMap::new();
    for c in &g.chunks {
        let st = c.state();
        if matches!(st, ChunkState::Mmapped | ChunkState::Top) {
            continue;
        }
        let size = c.size();
        let e = by_size.entry(size).or_insert(ClassFill {
            size,
            live_count: 0,
            live_bytes: 0,
            free_count: 0,
            free_bytes: 0,
        });
        if st == ChunkState::InUse {
            e.live_count += 1;
            e.live_bytes += size;
        } else {
            e.free_count += 1;
            e.free_bytes += size;
            continue;
        }
        let i = spans.partition_point(|s| s.0 <= c.addr.0);
        let Some(k) = i.checked_sub(1) else { continue };
        let (start, len) = spans[k];
        let (lo, hi) = (c.addr.0, c.addr.0.saturating_add(size).min(start + len));
        if lo >= hi {
            continue;
        }
        let pages = &mut live[k];
        let mut p = lo;
        while p < hi {
            let page = ((p - start) / GLIBC_PAGE) as usize;
            let page_end = start + (page as u64 + 1) * GLIBC_PAGE;
            let end = page_end.min(hi);
            if let Some(x) = pages.get_mut(page) {
                *x += end - p;
            } else {
                break;
            }
            p = end;
        }
    }
    let regions: Vec<Region> = spans
        .iter()
        .zip(&live)
        .map(|(&(start, len), pages)| Region {
            address: Addr(start),
            bytes: len,
            pinned: false,
            fill: pages.iter().map(|&b| percent(b, GLIBC_PAGE)).collect(),
        })
        .collect();
    Some((
        finish("glibc", "page", GLIBC_PAGE, regions),
        cap_classes("glibc", by_size.into_values().collect()),
    ))
}

/// The occupancy maps and size-class bars of every allocator the core has.
pub fn heap_map(a: &Analysis) -> HeapMap {
    let mut m = HeapMap::default();
    for (o, c) in [pymalloc_map(a), glibc_map(a)].into_iter().flatten() {
        m.occupancy.push(o);
        m.classes.push(c);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_keeps_unused_apart() {
        assert_eq!(
            downsample(&[10, 30, UNUSED, UNUSED, 100], 2),
            vec![20, UNUSED, 100]
        );
        assert_eq!(downsample(&[50, UNUSED], 2), vec![50]);
        assert_eq!(downsample(&[1, 2, 3], 1), vec![1, 2, 3]);
    }

    #[test]
    fn maps_are_capped() {
        let regions: Vec<Region> = (0..MAX_REGIONS as u64 + 10)
            .map(|i| Region {
                address: Addr(i << 20),
                bytes: 1 << 20,
                pinned: false,
                fill: vec![50; 64],
            })
            .collect();
        let o = finish("pymalloc", "pool", 16384, regions);
        assert_eq!(o.regions_left_off, 10);
        let cells: usize = o.regions.iter().map(|r| r.fill.len()).sum();
        assert!(cells <= MAX_CELLS, "{cells}");
        assert!(o.units_per_cell > 1);
    }

    #[test]
    fn section_ids_are_plain() {
        let s = Section::new(
            "a b\"><script>",
            "t",
            "",
            SectionBody::Table {
                columns: vec![],
                rows: vec![],
            },
        );
        assert_eq!(s.id, "a-b---script-");
    }
}
