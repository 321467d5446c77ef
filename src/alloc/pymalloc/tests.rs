//! The pymalloc walker on fake heaps in a synthetic core (image::testcore): a Python module
//! whose writable data holds a 3.12 `struct _obmalloc_state` (usedpools at +0, arenas at
//! +0x200, maxarenas at +0x208: heap-models/cpython/3.12.toml), one arena of pools, and
//! damage made on purpose. Pool headers as Objects/obmalloc.c `struct pool_header`
//! (layouts.md §B.2): ref.count +0, freeblock +8, nextpool +0x10, prevpool +0x18,
//! arenaindex +0x20, szidx +0x24, nextoffset +0x28.

use super::*;
use crate::image::testcore::{at, TestCore, RW};
use crate::models::cpython_models;

const PYLIB: u64 = 0x7f20_0000_0000;
const PY_RW: u64 = PYLIB + 0x1000;
const STATE: u64 = PY_RW + 0x400;
const TABLE: u64 = 0x5600_0000_0000;
const ARENA: u64 = 0x7f10_0000_0000;
const NOWHERE: u64 = 0x6000_0000_0000;
const POOL: u64 = 0x4000;
const OVERHEAD: u64 = 48;
/// Pools carved in the arena (pool_address = ARENA + CARVED * POOL).
const CARVED: u64 = 12;

fn model(name: &str) -> CpythonModel {
    cpython_models(None)
        .unwrap()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap()
}

struct P {
    tc: TestCore,
    /// Classes whose usedpools list holds pools: (class, pool addresses).
    used: Vec<(u64, Vec<u64>)>,
}

/// A pool at index `k` of size class `class` with `carved` blocks handed out (below
/// nextoffset) of which `freed` (block indices, list order) are on its free list.
fn pool(p: &mut P, k: u64, class: u64, carved: u64, freed: &[u64]) -> u64 {
    let a = ARENA + k * POOL;
    let size = (class + 1) * 16;
    let blk = |j: u64| a + OVERHEAD + j * size;
    p.tc.u32(a + POOL_REF_COUNT, (carved - freed.len() as u64) as u32)
        .u32(a + POOL_ARENAINDEX, 0)
        .u32(a + POOL_SZIDX, class as u32)
        .u32(a + POOL_NEXTOFFSET, (OVERHEAD + carved * size) as u32)
        .u64(a + POOL_FREEBLOCK, freed.first().map_or(0, |&j| blk(j)));
    for (i, &j) in freed.iter().enumerate() {
        let next = freed.get(i + 1).map_or(0, |&n| blk(n));
        p.tc.u64(blk(j), next);
    }
    let nblocks = (POOL - OVERHEAD) / size;
    if carved - (freed.len() as u64) < nblocks {
        match p.used.iter_mut().find(|u| u.0 == class) {
            Some(u) => u.1.push(a),
            None => p.used.push((class, vec![a])),
        }
    }
    a
}

impl P {
    fn new() -> P {
        let mut tc = TestCore::new();
        let path = "/nonexistent/libpython3.12.so.1.0";
        // The text is left out of the core; the data mapping is in it.
        tc.file(PYLIB, PY_RW, path)
            .file(PY_RW, PY_RW + 0x1000, path)
            .segment(PY_RW, 0x1000, RW)
            .segment(TABLE, 0x1000, RW)
            .segment(ARENA, CARVED * POOL, RW);
        // One arena_object: address, pool_address, nfreepools, ntotalpools.
        tc.u64(TABLE, ARENA)
            .u64(TABLE + 8, ARENA + CARVED * POOL)
            .u32(TABLE + 16, (64 - CARVED) as u32)
            .u32(TABLE + 20, 64);
        tc.u64(STATE + 0x200, TABLE).u32(STATE + 0x208, 16);
        P {
            tc,
            used: Vec::new(),
        }
    }

    /// usedpools: each class's list of pools with free blocks, others pointing at
    /// themselves - 16 (obmalloc.c PTA()); the pools linked back to the list head.
    fn finish(&mut self) {
        for i in 0..32u64 {
            let slot = STATE + 16 * i;
            let head = slot - 16;
            let pools = self
                .used
                .iter()
                .find(|u| u.0 == i)
                .map(|u| u.1.clone())
                .unwrap_or_default();
            let ring: Vec<u64> = std::iter::once(head)
                .chain(pools)
                .chain(std::iter::once(head))
                .collect();
            for w in ring.windows(2) {
                self.tc
                    .u64(w[0] + POOL_NEXTPOOL, w[1])
                    .u64(w[1] + POOL_NEXTPOOL + 8, w[0]);
            }
        }
    }

    fn walk(&self, m: &CpythonModel) -> Result<PymallocHeap, String> {
        let p = self.tc.process();
        let module = p
            .modules
            .modules
            .iter()
            .find(|m| m.path.contains("libpython"))
            .expect("the Python module");
        analyze(&p, m, module, true)
    }
}

/// Pool 0: 16-byte blocks, 10 carved, 2 freed (8 live). Pool 1: 32-byte blocks, full
/// (510). Pool 2: empty. Pool 3: 64-byte blocks, 5 carved (5 live). Pools 4..12: full
/// 32-byte pools, so that a model with another geometry meets more than 8 pools in use.
fn standard() -> (P, [u64; 4]) {
    let mut p = P::new();
    let p0 = pool(&mut p, 0, 0, 10, &[5, 2]);
    let p1 = pool(&mut p, 1, 1, 510, &[]);
    let p3 = pool(&mut p, 3, 3, 5, &[]);
    for k in 4..CARVED {
        pool(&mut p, k, 1, 510, &[]);
    }
    p.finish();
    (p, [p0, p1, ARENA + 2 * POOL, p3])
}

const FULL_32: u64 = CARVED - 4 + 1;

fn warnings(h: &PymallocHeap) -> Vec<String> {
    h.diagnostics.iter().map(|d| d.to_string()).collect()
}

fn class(h: &PymallocHeap, size: u64) -> (u64, u64, u64) {
    let c = &h.size_classes[(size / 16 - 1) as usize];
    (c.pools, c.blocks_in_use, c.blocks_free)
}

#[test]
fn a_clean_heap_by_the_usedpools_signature() {
    let (p, [p0, ..]) = standard();
    let h = p.walk(&model("3.12")).unwrap();
    assert!(h.diagnostics.is_empty(), "{:?}", warnings(&h));
    assert_eq!(h.state, Addr(STATE));
    assert_eq!(h.found_by, FoundBy::UsedpoolsSignature);
    assert_eq!(
        serde_json::to_value(&h).unwrap()["found_by"],
        "usedpools_signature"
    );
    assert_eq!(h.arenas, 1);
    assert_eq!((h.pools.used, h.pools.full, h.pools.empty), (2, FULL_32, 1));
    assert_eq!(class(&h, 16), (1, 8, (POOL - OVERHEAD) / 16 - 8));
    assert_eq!(class(&h, 32), (FULL_32, 510 * FULL_32, 0));
    assert_eq!(class(&h, 64), (1, 5, (POOL - OVERHEAD) / 64 - 5));
    let live = 8 + 510 * FULL_32 + 5;
    assert_eq!(h.blocks().count() as u64, live);
    let v: Vec<_> = h.blocks().collect();
    assert!(v.windows(2).all(|w| w[0].addr < w[1].addr));
    // The freed blocks are not live; the one after the last carved block is not either.
    let b = |j: u64| Addr(p0 + OVERHEAD + 16 * j);
    assert!(!h.blocks().any(|x| x.addr == b(2) || x.addr == b(5)));
    assert!(h.blocks().any(|x| x.addr == b(9)));
    assert!(!h.blocks().any(|x| x.addr == b(10)));
    assert_eq!(h.in_use_bytes, 8 * 16 + 510 * 32 * FULL_32 + 5 * 64);
    assert_eq!(h.arena_list[0].pools, CARVED);
}

#[test]
fn a_pool_with_an_impossible_size_class_is_skipped() {
    let (mut p, [.., p3]) = standard();
    p.tc.u32(p3 + POOL_SZIDX, 40);
    // usedpools[3] must still name a pool of its class for the signature: drop it there.
    p.used.retain(|u| u.0 != 3);
    p.finish();
    let h = p.walk(&model("3.12")).unwrap();
    assert_eq!(
        at(&h.diagnostics, p3),
        vec![format!(
            "pool with impossible size class 40 or nextoffset {}",
            OVERHEAD + 5 * 64
        )]
    );
    assert_eq!(h.diagnostics.len(), 1);
    assert_eq!(class(&h, 64), (0, 0, 0));
    assert_eq!(class(&h, 16), (1, 8, (POOL - OVERHEAD) / 16 - 8));
    assert_eq!(class(&h, 32), (FULL_32, 510 * FULL_32, 0));
    assert_eq!(h.blocks().count() as u64, 8 + 510 * FULL_32);
}

#[test]
fn a_pool_free_list_that_loops_or_leaves_the_pool() {
    // Loops: 5 -> 2 -> 5 -> ...: bounded, warned, and the free blocks are still right.
    let (mut p, [p0, ..]) = standard();
    let b = |j: u64| p0 + OVERHEAD + 16 * j;
    p.tc.u64(b(2), b(5));
    let h = p.walk(&model("3.12")).unwrap();
    assert_eq!(
        at(&h.diagnostics, p0),
        vec!["pool of 16-byte blocks: its free list loops".to_string()]
    );
    assert_eq!(h.diagnostics.len(), 1);
    assert_eq!(class(&h, 16), (1, 8, (POOL - OVERHEAD) / 16 - 8));
    assert_eq!(h.blocks().count() as u64, 8 + 510 * FULL_32 + 5);
    // Leaves the pool after its first block: block 2 is then taken for live, and the
    // reconstruction disagrees with ref.count.
    let (mut p, [p0, ..]) = standard();
    p.tc.u64(p0 + OVERHEAD + 16 * 5, NOWHERE);
    let h = p.walk(&model("3.12")).unwrap();
    assert_eq!(
        at(&h.diagnostics, p0),
        vec![
            "pool of 16-byte blocks: reconstruction finds 9 live blocks, its ref.count says 8"
                .to_string()
        ]
    );
    assert_eq!(h.diagnostics.len(), 1);
    // The class totals follow ref.count; the other classes are untouched.
    assert_eq!(class(&h, 16), (1, 8, (POOL - OVERHEAD) / 16 - 8));
    assert_eq!(class(&h, 32), (FULL_32, 510 * FULL_32, 0));
    assert_eq!(class(&h, 64), (1, 5, (POOL - OVERHEAD) / 64 - 5));
}

#[test]
fn a_ref_count_that_disagrees_with_the_reconstruction() {
    let (mut p, [.., p3]) = standard();
    p.tc.u32(p3 + POOL_REF_COUNT, 4);
    let h = p.walk(&model("3.12")).unwrap();
    assert_eq!(
        at(&h.diagnostics, p3),
        vec![
            "pool of 64-byte blocks: reconstruction finds 5 live blocks, its ref.count says 4"
                .to_string()
        ]
    );
    assert_eq!(h.diagnostics.len(), 1);
    assert_eq!(class(&h, 16), (1, 8, (POOL - OVERHEAD) / 16 - 8));
    assert_eq!(class(&h, 32), (FULL_32, 510 * FULL_32, 0));
    // A count above what the pool can hold is refused outright.
    p.tc.u32(p3 + POOL_REF_COUNT, 1000);
    let h = p.walk(&model("3.12")).unwrap();
    assert_eq!(
        at(&h.diagnostics, p3),
        vec!["pool count 1000 exceeds 255 blocks of 64".to_string()]
    );
    assert_eq!(class(&h, 64), (0, 0, 0));
    assert_eq!(h.blocks().count() as u64, 8 + 510 * FULL_32);
}

#[test]
fn an_arena_table_with_a_garbage_count_is_refused_quickly() {
    for count in [u32::MAX, 1 << 24, 1 << 20] {
        let (mut p, _) = standard();
        p.tc.u32(STATE + 0x208, count);
        let t = std::time::Instant::now();
        let e = p.walk(&model("3.12")).err().unwrap();
        assert_eq!(
            e,
            format!("the arena vector at {TABLE:#x} ({count} slots) does not look like pymalloc's")
        );
        assert!(t.elapsed().as_secs() < 5, "{count}: {:?}", t.elapsed());
    }
}

#[test]
fn an_arena_outside_the_core_is_bounded_and_the_rest_walked() {
    let (mut p, _) = standard();
    // A second arena_object whose arena is nowhere in the core, all 64 pools carved:
    // one line per unreadable pool header, capped, and no reservation from it.
    p.tc.u64(TABLE + 48, NOWHERE)
        .u64(TABLE + 48 + 8, NOWHERE + 64 * POOL)
        .u32(TABLE + 48 + 20, 64);
    let h = p.walk(&model("3.12")).unwrap();
    assert_eq!(h.arenas, 2);
    assert_eq!(
        at(&h.diagnostics, NOWHERE),
        vec!["pool header not readable".to_string()]
    );
    assert_eq!(h.diagnostics.len(), crate::error::DIAGNOSTICS_CAP);
    assert_eq!(h.diagnostics.suppressed(), 64 - 50);
    assert_eq!(class(&h, 32), (FULL_32, 510 * FULL_32, 0));
    assert_eq!(h.blocks().count() as u64, 8 + 510 * FULL_32 + 5);
    assert!(h.pool_blocks.capacity() < 1 << 20);
}

#[test]
fn a_model_whose_pool_geometry_does_not_fit_fails_the_walk() {
    let (p, _) = standard();
    // 4 KiB pools (the 3.8 geometry) over a heap of 16 KiB pools: every full pool's count
    // exceeds what a 4 KiB pool holds.
    let mut m = model("3.12");
    m.pymalloc.pool_size = 0x1000;
    let e = p.walk(&m).err().unwrap();
    assert_eq!(
        e,
        format!(
            "the model's pool layout does not fit this heap: {FULL_32} of {} pools in use contradict it",
            FULL_32 + 2
        )
    );
    // A few damaged pools are damage, not a wrong model: the walk goes on.
    let (mut p, [.., p3]) = standard();
    p.tc.u32(p3 + POOL_REF_COUNT, 1000)
        .u32(ARENA + 4 * POOL + POOL_SZIDX, 50)
        .u32(ARENA + 5 * POOL + POOL_NEXTOFFSET, 0x8000);
    let h = p.walk(&model("3.12")).unwrap();
    assert_eq!(h.diagnostics.len(), 3, "{:?}", warnings(&h));
    assert_eq!(class(&h, 32), (FULL_32 - 2, 510 * (FULL_32 - 2), 0));
}

/// The arenas walked in two halves and joined (as a large heap is, on two threads) give
/// what one walk gives: block positions and free bitmaps renumbered, counts added, in
/// order. The same arena listed 70 times stands for 70 arenas.
#[test]
fn arenas_walked_in_two_halves_join_as_one_walk() {
    let (mut p, _) = standard();
    // A second pool with free blocks, so that the second half has a bitmap of its own.
    pool(&mut p, 2, 2, 9, &[0, 8]);
    p.finish();
    let proc = p.tc.process();
    let m = model("3.12");
    let r = Reader { space: &proc.space };
    let order: Vec<(u64, u64)> = (0..70).map(|_| (ARENA, 0)).collect();
    let walk = |o: &[(u64, u64)]| walk_arenas(&r, &m, Addr(TABLE), o, None, true);
    let one = walk(&order);
    let mut two = walk(&order[..35]);
    two.append(walk(&order[35..]));
    assert!(one.free_bits.len() > 2 && one.positions > 0);
    assert_eq!(
        format!("{:?}", two.pool_blocks),
        format!("{:?}", one.pool_blocks)
    );
    assert_eq!(two.free_bits, one.free_bits);
    assert_eq!(two.positions, one.positions);
    assert_eq!(format!("{:?}", two.classes), format!("{:?}", one.classes));
    assert_eq!(format!("{:?}", two.states), format!("{:?}", one.states));
    assert_eq!(
        format!("{:?}", two.arena_list),
        format!("{:?}", one.arena_list)
    );
    assert_eq!(
        (two.narenas, two.pools_checked, two.pools_bad),
        (one.narenas, one.pools_checked, one.pools_bad)
    );
    assert_eq!(two.diags.to_vec().len(), one.diags.to_vec().len());
}
