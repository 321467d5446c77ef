//! The census: every live allocation of both allocators typed as a Python object, or
//! attributed to the object that owns it, or counted as untyped.
//!
//! An object is kept only when its type is itself live: a static type in a module image,
//! or a type object the census found in a live allocation (checked to a fixed point, so a
//! stale type pointer in reused memory — a freed class, a `tp_subclasses` buffer, a C
//! docstring copy — makes no object). Allocations that are not objects are charged to the
//! object pointing into them: list items, dict keys/values, set tables, an instance's
//! separately allocated attribute values (`<attributes of TYPE>`, 3.11/3.12; 3.13+ keeps
//! them inline, in the instance's own allocation) and the native buffers of C types the
//! model names (`<bytearray buffer>`, `<numpy.ndarray data>`, ...).

use super::Bits;
use crate::addr::Addr;
use crate::alloc::{Allocation, Allocator, Heaps};
use crate::python::containers::Buffer;
use crate::python::objects::{Special, TypeInfo, Typer};
use crate::python::typeobj::F_TYPE_SUBCLASS;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TypeCount {
    pub name: String,
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FreeCount {
    pub name: String,
    pub count: u64,
}

/// One typed object: 16 bytes, its type by index into `Census::type_infos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Obj {
    pub addr: Addr,
    /// Size of the allocation holding it (block or chunk).
    pub alloc: u32,
    pub ty: u32,
}

// SAFETY: three integer fields in C layout (u64, u32, u32: 16 bytes, no padding); every
// bit pattern is a value (an out-of-range type index is checked where it is used).
unsafe impl crate::spill::Plain for Obj {}
const _: () = assert!(std::mem::size_of::<Obj>() == 16);

/// The census: counts per row, and what is needed to list the objects again. The census
/// itself keeps no per-object record (a summary of 20 M objects needs none): the object
/// list is built on demand by `Analysis::objects`, or streamed by `Analysis::each_object`.
#[derive(Debug, Default)]
pub struct Census {
    pub types: Vec<TypeCount>,
    pub freelists: Vec<FreeCount>,
    /// Live objects in address order; filled by `Analysis::objects` on first use, and
    /// kept in a file when it is large (`crate::spill`).
    objects: std::sync::OnceLock<crate::spill::Spilled<Obj>>,
    /// Free-list residents (refcount 0, type intact, a free-list type of the version).
    pub free_objects: Vec<Obj>,
    pub type_infos: Vec<Arc<TypeInfo>>,
    /// Per type index: is the type itself live (static, or a live heap type object)?
    pub alive: Vec<bool>,
    /// Live objects and the bytes of their allocations.
    pub object_count: u64,
    live_object_bytes: u64,
    /// Objects dropped because their type was not live (stale type pointers).
    pub dead_type_objects: u64,
    /// Allocations of 4 GiB and more (their `Obj::alloc` is `u32::MAX`), by address.
    pub big_allocs: Vec<(Addr, u64)>,
}

impl Obj {
    /// The object at `o` of type index `ty`, in allocation `a` (its size saturates at
    /// 4 GiB; `Census::big_allocs` keeps the larger ones).
    pub fn in_alloc(o: u64, ty: u32, a: &Allocation) -> Obj {
        Obj {
            addr: Addr(o),
            alloc: a.size.min(u32::MAX as u64) as u32,
            ty,
        }
    }
}

impl Census {
    pub fn type_of(&self, o: &Obj) -> &TypeInfo {
        &self.type_infos[o.ty as usize]
    }
    /// Bytes of the allocation holding `o`, also for allocations of 4 GiB and more.
    pub fn alloc_size(&self, o: &Obj) -> u64 {
        if o.alloc != u32::MAX {
            return o.alloc as u64;
        }
        self.big_allocs
            .binary_search_by_key(&o.addr, |b| b.0)
            .map(|i| self.big_allocs[i].1)
            .unwrap_or(u32::MAX as u64)
    }
    /// Bytes of every live object's allocation.
    pub fn live_bytes(&self) -> u64 {
        self.live_object_bytes
    }
    /// The live objects in address order. Built by `Analysis::objects` (which every
    /// analysis that indexes objects calls first: the graph is built from it).
    pub fn objects(&self) -> &[Obj] {
        self.objects
            .get()
            .expect("Analysis::objects() builds the object list before it is indexed")
    }
    /// Fill the object list once (see `objects`).
    pub fn objects_with(&self, build: impl FnOnce() -> Vec<Obj>) -> &[Obj] {
        self.objects
            .get_or_init(|| crate::spill::Spilled::new(build()))
    }
    /// Is the object list in a file (a large heap: `crate::spill`)? The graph's large
    /// arrays follow it there.
    pub fn objects_spilled(&self) -> bool {
        self.objects.get().is_some_and(|l| l.is_file())
    }
    /// Lookups in a spilled object list ahead (`Spilled::random_access`).
    pub fn objects_random_access(&self, on: bool) {
        if let Some(l) = self.objects.get() {
            l.random_access(on);
        }
    }
    /// Drop the page-table entries of a spilled object list (`Spilled::release`): passes
    /// over the whole list call it every so often, as they release the core's pages.
    pub fn release_objects(&self) {
        if let Some(l) = self.objects.get() {
            l.release();
        }
    }
    /// Is the object list built?
    pub fn has_objects(&self) -> bool {
        self.objects.get().is_some()
    }
}

/// Names of the buckets for allocations that are not objects.
pub const LIST_ITEMS: &str = "<list items>";
pub const DICT_KEYS: &str = "<dict keys>";
pub const DICT_VALUES: &str = "<dict values>";
pub const SET_TABLE: &str = "<set table>";
pub const UNTYPED_PYMALLOC: &str = "<untyped pymalloc>";
pub const UNTYPED_GLIBC: &str = "<untyped glibc>";
/// 3.8-3.10 dead frames kept by their code objects (co_zombieframe).
pub const ZOMBIE_FRAMES: &str = "<zombie frames>";

/// The row name of an instance's separately allocated attribute values.
pub fn attributes_row(type_name: &str) -> String {
    format!("<attributes of {type_name}>")
}

/// Who owns an allocation that is not an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Owner {
    Fixed(&'static str),
    /// Attribute values of an instance of this type index.
    Attrs(u32),
    /// A native buffer row (index into `Typer::native_rows`).
    Native(u32),
}

/// What the census reads allocations from: both allocators' walks (`Heaps`), or, for
/// tests, a plain sorted list of allocations.
pub trait Source: Sync {
    /// Size of the id space (ids index per-allocation bitmaps).
    fn ids(&self) -> u64;
    /// Every live allocation at an address in `[lo, hi)` with its id, in address order.
    fn each_between(&self, lo: u64, hi: u64, f: &mut dyn FnMut(u64, Allocation));
    /// Every live allocation with its id, in address order.
    fn each(&self, f: &mut dyn FnMut(u64, Allocation)) {
        self.each_between(0, u64::MAX, f)
    }
    /// The live allocation holding an address, with its id.
    fn containing(&self, a: u64) -> Option<(u64, Allocation)>;
    /// `containing` for addresses asked in increasing order (`hint` is the source's own).
    fn containing_near(&self, a: u64, hint: &mut [usize; 2]) -> Option<(u64, Allocation)> {
        let _ = hint;
        self.containing(a)
    }
    /// Let go of the memory pages read so far (a long scan calls this now and then).
    fn release(&self) {}
    /// Allocations at addresses below `a` (ids below it, for balancing a split).
    fn below(&self, a: u64) -> u64;
    /// `n` address ranges holding about the same number of allocations each.
    fn split(&self, n: usize) -> Vec<(u64, u64)> {
        let total = self.below(u64::MAX);
        let mut cuts = vec![0u64];
        for k in 1..n as u64 {
            let want = total / n as u64 * k;
            // The lowest address with `want` allocations below it.
            let (mut lo, mut hi) = (*cuts.last().unwrap(), u64::MAX);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if self.below(mid) < want {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            cuts.push(lo);
        }
        cuts.push(u64::MAX);
        cuts.windows(2).map(|w| (w[0], w[1])).collect()
    }
}

impl Source for Heaps<'_> {
    fn ids(&self) -> u64 {
        Heaps::ids(self)
    }
    fn each_between(&self, lo: u64, hi: u64, f: &mut dyn FnMut(u64, Allocation)) {
        Heaps::each_between(self, lo, hi, f)
    }
    fn containing(&self, a: u64) -> Option<(u64, Allocation)> {
        Heaps::containing(self, a)
    }
    fn containing_near(&self, a: u64, hint: &mut [usize; 2]) -> Option<(u64, Allocation)> {
        Heaps::containing_near(self, a, hint)
    }
    fn below(&self, a: u64) -> u64 {
        Heaps::below(self, a)
    }
    fn release(&self) {
        if let Some(c) = self.core {
            c.release_pages();
        }
    }
}

/// Allocations sorted by address; ids are their indices.
impl Source for [Allocation] {
    fn ids(&self) -> u64 {
        self.len() as u64
    }
    fn each_between(&self, lo: u64, hi: u64, f: &mut dyn FnMut(u64, Allocation)) {
        let a = self.partition_point(|x| x.addr.0 < lo);
        let b = self.partition_point(|x| x.addr.0 < hi);
        for (i, x) in self[a..b].iter().enumerate() {
            f((a + i) as u64, *x)
        }
    }
    fn containing(&self, a: u64) -> Option<(u64, Allocation)> {
        let i = self.partition_point(|x| x.addr.0 <= a).checked_sub(1)?;
        let x = self[i];
        // The end of an allocation read from the core, clamped at the top of the space.
        (a < x.addr.0.saturating_add(x.usable.max(1))).then_some((i as u64, x))
    }
    fn below(&self, a: u64) -> u64 {
        self.partition_point(|x| x.addr.0 < a) as u64
    }
}

/// How one allocation is typed: the object in it (address, type index, a free-list
/// resident), or None. `floats`: the blocks on the float free lists, which keep no type
/// pointer (3.8-3.13 link them through `ob_type`).
#[inline]
fn classify(typer: &Typer, a: &Allocation, floats: &FloatFree) -> Option<(u64, u32, bool)> {
    let pm = a.allocator == Allocator::Pymalloc;
    match floats.ty {
        Some(fi) if pm && floats.holds(a) => Some((a.addr.0, fi, true)),
        _ => typer.classify(a.addr.0, a.usable, pm),
    }
}

/// The blocks on the float free lists, as the classification asks for them per
/// allocation: the float type's index (None: no free list known), and a filter of 64 Ki
/// bits on the block addresses, so that the allocations that are none of them (all but
/// at most a few hundred) are told so without hashing. (Without it, every pymalloc
/// allocation hashed its address whenever a float free list was known; neither benchmark
/// core has float free-list residents, so the gain is not measured.)
struct FloatFree<'f> {
    set: &'f FxHashSet<u64>,
    ty: Option<u32>,
    filter: Vec<u64>,
}

impl<'f> FloatFree<'f> {
    fn new(typer: &Typer, set: &'f FxHashSet<u64>) -> FloatFree<'f> {
        let ty = match set.is_empty() {
            true => None,
            false => typer
                .special_type(Special::Float)
                .and_then(|t| typer.type_index(t)),
        };
        let mut filter = Vec::new();
        if ty.is_some() {
            filter = vec![0u64; FLOAT_FILTER / 64];
            for &b in set {
                let k = Self::key(b);
                filter[k / 64] |= 1 << (k % 64);
            }
        }
        FloatFree { set, ty, filter }
    }

    #[inline]
    fn key(a: u64) -> usize {
        (a >> 4) as usize % FLOAT_FILTER
    }

    /// Is `a` on a float free list?
    #[inline]
    fn holds(&self, a: &Allocation) -> bool {
        let k = Self::key(a.addr.0);
        self.filter
            .get(k / 64)
            .is_some_and(|w| w & (1 << (k % 64)) != 0)
            && self.set.contains(&a.addr.0)
    }
}

/// Bits of `FloatFree`'s filter (8 KiB: it stays in the first-level cache).
const FLOAT_FILTER: usize = 1 << 16;

/// The census of both allocators' live allocations.
pub fn census(typer: &Typer, heaps: &Heaps, float_free: &FxHashSet<u64>) -> Census {
    census_from(typer, heaps, float_free)
}

/// The census, with the object list built in the same pass (for the commands that index
/// objects: one classification of the heap instead of two).
pub fn census_listing(typer: &Typer, heaps: &Heaps, float_free: &FxHashSet<u64>) -> Census {
    census_with(typer, heaps, float_free, true)
}

/// The census of the given live allocations: (user address, usable bytes, size, from
/// pymalloc), in address order.
pub fn census_of(typer: &Typer, allocs: impl Iterator<Item = (u64, u64, u64, bool)>) -> Census {
    census_of_with(typer, allocs, &FxHashSet::default())
}

/// [`census_of`], with the blocks on the float free lists (`census`).
pub fn census_of_with(
    typer: &Typer,
    allocs: impl Iterator<Item = (u64, u64, u64, bool)>,
    float_free: &FxHashSet<u64>,
) -> Census {
    let mut list: Vec<Allocation> = allocs
        .map(|(m, usable, size, pm)| Allocation {
            addr: Addr(m),
            usable,
            size,
            allocator: if pm {
                Allocator::Pymalloc
            } else {
                Allocator::Glibc
            },
        })
        .collect();
    list.sort_by_key(|a| a.addr);
    let c = census_from(typer, list.as_slice(), float_free);
    c.objects_with(|| objects_of(typer, list.as_slice(), float_free, &c));
    c
}

/// Allocation counts and bytes by allocator: [pymalloc count, bytes, glibc count, bytes].
type Counts = [u64; 4];

/// Wrapping, as `add`: the counters take claimed allocations back out (`n` = -1), and
/// sizes come from the core; modular sums are exact whenever the true total fits.
fn add4(into: &mut Counts, c: &Counts) {
    for (x, y) in into.iter_mut().zip(c) {
        *x = x.wrapping_add(*y);
    }
}

fn add(c: &mut Counts, pm: bool, size: u64, n: i64) {
    let k = if pm { 0 } else { 2 };
    c[k] = c[k].wrapping_add(n as u64);
    c[k + 1] = c[k + 1].wrapping_add((size as i64).wrapping_mul(n) as u64);
}

/// A (count, bytes) row's totals, from sizes read from the core: saturating, never a
/// panic.
fn add_row(e: &mut (u64, u64), count: u64, bytes: u64) {
    e.0 = e.0.saturating_add(count);
    e.1 = e.1.saturating_add(bytes);
}

/// What one thread's scan of an address range found, by its typer's own type indices.
struct Part {
    /// Per type index: live objects by allocator.
    per_type: Vec<Counts>,
    infos: Vec<Arc<TypeInfo>>,
    untyped: Counts,
    typed: Bits,
    /// Free-list residents, with their allocator.
    free: Vec<(Obj, bool)>,
    /// Live objects that are themselves types (their type is a metatype): address → type.
    type_objects: FxHashMap<u64, u32>,
    /// 3.8-3.10 code objects' zombie frames.
    zombies: FxHashSet<u64>,
    /// Owner pointers: runs of (pointer, index into `pairs`), each sorted by pointer;
    /// pairs: (row, owner's type index).
    owned: Vec<Vec<(u64, u32)>>,
    pairs: Vec<(Owner, u32)>,
    /// Objects in allocations of 4 GiB and more: (address, size, type index).
    big: Vec<(Addr, u64, u32)>,
    /// The address ranges this part scanned, in order: the ordered outputs are put back
    /// in address order by range.
    segments: Vec<Segment>,
}

/// One address range a part scanned.
struct Segment {
    range: usize,
    /// The end of its residents in the part's `free`.
    free_end: usize,
    /// When the object list is built with the census: the objects written to the range's
    /// slot, and any past its end (see [`Slot`]).
    listed: usize,
    over: Vec<Obj>,
}

/// One range's part of the object list (every typed object that is not a free-list
/// resident, by the scanning thread's type indices; types not yet known to be live). The
/// list is allocated once, before the scan, with a slot per range as large as the range's
/// allocation count (`Source::below`, plus a pool's blocks that straddle the range's
/// start); the slots are then closed up in place. Per-thread lists copied into a joined
/// one wrote every object twice: on a 25 M-object heap 400 MB of fresh pages, a sixth of
/// the owner view's page faults. Objects past a slot's end (a bound that did not hold)
/// go to `over`, and the list is then joined by copying.
struct Slot<'s> {
    buf: &'s mut [std::mem::MaybeUninit<Obj>],
    len: usize,
    over: Vec<Obj>,
}

impl Slot<'_> {
    #[inline]
    fn push(&mut self, o: Obj) {
        match self.buf.get_mut(self.len) {
            Some(x) => {
                x.write(o);
                self.len += 1;
            }
            None => self.over.push(o),
        }
    }
}

/// Allocations a range's slot holds beyond its count by `Source::below`: the blocks of a
/// pymalloc pool that straddles the range's start (`below` counts a pool whole, on the
/// side of its start; a pool is at most 16 KiB of blocks of 16 bytes or more, 1024
/// blocks). Only address space: a slot's pages are touched when written.
const SLOT_SLACK: usize = 1 << 14;

/// Allocations between two releases of the pages read (`Source::release`) in the scans
/// that build the object graph (about 100 MB of a Python heap): the graph's arrays then
/// share the memory with a window of the core, not with all of it. The census alone does
/// not release (its scan follows the walks over the same pages, and refaulting them costs
/// more than their residency); the census that also builds the object list does.
pub const RELEASE_EVERY: u64 = 1 << 21;

/// How far ahead of the allocation being classified the scan asks for the memory it will
/// read (`Typer::prefetch`): the classification's first read of each block waited for it
/// (16.6 M allocations on 2 threads: 0.67 s of CPU without, 0.56 s with; 512 bytes to
/// 8 KiB measured alike, 256 about half as good).
const PREFETCH_AHEAD: u64 = 1024;

/// Rows with a place in a part's per-type table of pair ids (`scan`): the four fixed
/// buffer rows and the attribute values.
const QUICK: usize = 5;

/// Scan the allocations of `[lo, hi)`: classify each, count it, keep its owner pointers.
fn scan<'s, S: Source + ?Sized>(
    typer: &Typer,
    src: &S,
    ranges: &[(u64, u64)],
    mine: impl Iterator<Item = (usize, Option<&'s mut [std::mem::MaybeUninit<Obj>]>)>,
    float_free: &FxHashSet<u64>,
) -> Part {
    let floats = FloatFree::new(typer, float_free);
    let type_type = typer.type_type();
    let code_zombie = typer.layout().code_zombieframe;
    let mut part = Part {
        per_type: Vec::new(),
        infos: Vec::new(),
        untyped: [0; 4],
        typed: Bits::new(src.ids()),
        free: Vec::new(),
        type_objects: FxHashMap::default(),
        zombies: FxHashSet::default(),
        owned: vec![Vec::new()],
        pairs: Vec::new(),
        big: Vec::new(),
        segments: Vec::new(),
    };
    let mut pair_ids: FxHashMap<(Owner, u32), u32> = FxHashMap::default();
    // Per type index, the pair ids of its fixed rows and attribute values, once known:
    // a lookup in `pair_ids` per owner pointer hashed the row's name (a 1.5 M-dict heap
    // spent 5 % of the census there).
    let mut quick: Vec<[u32; QUICK]> = Vec::new();
    let Part {
        per_type,
        infos,
        untyped,
        typed,
        free,
        type_objects,
        zombies,
        owned,
        pairs,
        big,
        segments,
    } = &mut part;
    for (k, slot) in mine {
        let (lo, hi) = ranges[k];
        let listing = slot.is_some();
        let mut list = slot.map(|buf| Slot {
            buf,
            len: 0,
            over: Vec::new(),
        });
        src.each_between(lo, hi, &mut |id, a| {
            // Listing: the graph's scans follow and read the objects again, so the pages are
            // released as with the object list's own scan (summary alone keeps them).
            if listing && id % RELEASE_EVERY == 0 {
                src.release();
            }
            let pm = a.allocator == Allocator::Pymalloc;
            typer.prefetch(a.addr.0.wrapping_add(PREFETCH_AHEAD));
            let Some((o, ty, zero)) = classify(typer, &a, &floats) else {
                add(untyped, pm, a.size, 1);
                return;
            };
            typed.set(id);
            while infos.len() <= ty as usize {
                infos.push(typer.type_by_index(infos.len() as u32));
                per_type.push([0; 4]);
                quick.push([u32::MAX; QUICK]);
            }
            let rec = Obj::in_alloc(o, ty, &a);
            if zero {
                free.push((rec, pm));
                return;
            }
            if let Some(l) = &mut list {
                l.push(rec);
            }
            add(&mut per_type[ty as usize], pm, a.size, 1);
            if a.size >= u32::MAX as u64 {
                big.push((rec.addr, a.size, ty));
            }
            let ti = &infos[ty as usize];
            if ti.flags & F_TYPE_SUBCLASS != 0 || ti.addr.0 == type_type {
                type_objects.insert(o, ty);
            }
            if let Some(off) = code_zombie {
                if typer.is_code_type(ti.addr.0) {
                    if let Some(z) = typer.u64_at(o.wrapping_add(off)).filter(|&z| z != 0) {
                        zombies.insert(z);
                    }
                }
            }
            // `q`: the row's place in `quick` (QUICK: none, a native row).
            let mut own = |p: Option<u64>, row: Owner, q: usize| {
                let Some(p) = p.filter(|&p| p != 0) else {
                    return;
                };
                let slot = quick[ty as usize].get_mut(q);
                let k = match slot {
                    Some(&mut k) if k != u32::MAX => k,
                    slot => {
                        let n = pairs.len() as u32;
                        let k = *pair_ids.entry((row, ty)).or_insert_with(|| {
                            pairs.push((row, ty));
                            n
                        });
                        if let Some(s) = slot {
                            *s = k;
                        }
                        k
                    }
                };
                owned[0].push((p, k));
            };
            typer.owned_buffers(o, ti, |p, b| match b {
                Buffer::ListItems => own(Some(p), Owner::Fixed(LIST_ITEMS), 0),
                Buffer::DictKeys => own(Some(p), Owner::Fixed(DICT_KEYS), 1),
                Buffer::DictValues => own(Some(p), Owner::Fixed(DICT_VALUES), 2),
                Buffer::SetTable => own(Some(p), Owner::Fixed(SET_TABLE), 3),
                Buffer::Native(r) => own(Some(p), Owner::Native(r), QUICK),
            });
            if let Some(v) = typer.separate_values(o, ti) {
                own(Some(v), Owner::Attrs(ty), 4);
            }
        });
        let (listed, over) = list.map_or((0, Vec::new()), |l| (l.len, l.over));
        segments.push(Segment {
            range: k,
            free_end: free.len(),
            listed,
            over,
        });
    }
    // Sorted by pointer here, on this thread: the claims walk the heaps in address order.
    part.owned[0].sort_unstable_by_key(|e| e.0);
    part
}

/// A part's outputs whose order matters: its free-list residents and its range segments
/// (`Part::segments`).
type Ordered = (Vec<(Obj, bool)>, Vec<Segment>);

/// Address ranges per thread in the census's scan (see `scan_all`).
const RANGES_PER_THREAD: usize = 8;

/// Threads for a scan: the machine's cores, at most 8; one for small heaps.
pub fn threads_for(allocs: u64) -> usize {
    if allocs < 1 << 16 {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}

/// How many ranges a scan on `threads` threads cuts its work into: each thread takes every
/// `threads`-th (`thread_of`). Ranges of equal allocation counts do not take equal time (a
/// run of floats is cheaper than one of dicts, one of tuples has the most edges); with
/// RANGES_PER_THREAD times as many ranges as threads, spread over the whole heap, the
/// threads are balanced without any order left to chance.
pub fn ranges_for(threads: usize) -> usize {
    if threads == 1 {
        1
    } else {
        threads * RANGES_PER_THREAD
    }
}

/// The thread that scans range `k` of a scan on `threads` threads (see `ranges_for`),
/// and the range's place among that thread's ranges (each takes every `threads`-th).
#[inline]
pub fn thread_of(k: usize, threads: usize) -> (usize, usize) {
    (k % threads, k / threads)
}

/// Run `work` once per payload, each on its own thread with its own typer: the first on
/// the calling thread with `typer`, the others with forks of it. Results in payload order.
pub fn per_thread<P: Send, T: Send>(
    typer: &Typer,
    payloads: Vec<P>,
    work: impl Fn(&Typer, P) -> T + Sync,
) -> Vec<T> {
    let mut payloads = payloads.into_iter();
    let Some(first) = payloads.next() else {
        return Vec::new();
    };
    let forks: Vec<Typer> = payloads.as_slice().iter().map(|_| typer.fork()).collect();
    std::thread::scope(|sc| {
        let work = &work;
        let handles: Vec<_> = forks
            .into_iter()
            .zip(payloads)
            .map(|(t, p)| sc.spawn(move || work(&t, p)))
            .collect();
        let mut out = vec![work(typer, first)];
        out.extend(handles.into_iter().map(|h| h.join().expect("scan thread")));
        out
    })
}

/// Scan `src` in address ranges on as many threads, each with its own typer, and bring
/// the parts to `typer`'s type indices. The ranges are contiguous and merged in address
/// order, so indices come out as one scan in address order would give them.
fn scan_all<S: Source + ?Sized>(
    typer: &Typer,
    src: &S,
    float_free: &FxHashSet<u64>,
    listing: bool,
) -> (Part, Option<Vec<Obj>>) {
    let threads = threads_for(src.below(u64::MAX));
    let ranges = if threads == 1 {
        vec![(0, u64::MAX)]
    } else {
        src.split(ranges_for(threads))
    };
    let n = ranges.len();
    // The object list's slots, one per range in address order (see `Slot`).
    let bounds: Vec<usize> = ranges
        .iter()
        .map(|&(lo, hi)| {
            let c = src.below(hi).saturating_sub(src.below(lo));
            usize::try_from(c)
                .unwrap_or(usize::MAX)
                .saturating_add(SLOT_SLACK)
        })
        .collect();
    let capacity = bounds.iter().fold(0usize, |a, &b| a.saturating_add(b));
    let mut buf: Vec<Obj> = if listing {
        Vec::with_capacity(capacity)
    } else {
        Vec::new()
    };
    let mut mine: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    // Where each slot starts in `buf`'s capacity.
    let mut starts: Vec<usize> = Vec::with_capacity(n);
    {
        let mut rest = &mut buf.spare_capacity_mut()[..];
        let mut at = 0usize;
        for (k, &b) in bounds.iter().enumerate() {
            starts.push(at);
            at = at.saturating_add(b);
            let slot = if listing {
                let (s, r) = std::mem::take(&mut rest).split_at_mut(b);
                rest = r;
                Some(s)
            } else {
                None
            };
            mine[thread_of(k, threads).0].push((k, slot));
        }
    }
    let mut parts = per_thread(typer, mine, |t, mine| {
        scan(t, src, &ranges, mine.into_iter(), float_free)
    })
    .into_iter();
    let first = parts.next().expect("one thread at least");
    let rest: Vec<Part> = parts.collect();
    let mut all = first;
    // The ordered outputs of each part (the first's by `typer`'s indices already; the
    // others' remapped below, u32::MAX marking a type `typer` does not know), and each
    // part's map to `typer`'s indices (None: the first's, the same).
    let mut outs: Vec<Ordered> = vec![(
        std::mem::take(&mut all.free),
        std::mem::take(&mut all.segments),
    )];
    let mut maps: Vec<Option<Vec<Option<u32>>>> = vec![None];
    let mut pair_ids: FxHashMap<(Owner, u32), u32> = all
        .pairs
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, i as u32))
        .collect();
    for part in rest {
        // Local type index → this typer's (None: a type only that thread's typer read).
        let map: Vec<Option<u32>> = part
            .infos
            .iter()
            .map(|t| typer.type_index(t.addr.0))
            .collect();
        let ntypes = typer.type_count() as usize;
        while all.infos.len() < ntypes {
            all.infos.push(typer.type_by_index(all.infos.len() as u32));
            all.per_type.push([0; 4]);
        }
        for (i, c) in part.per_type.iter().enumerate() {
            match map[i] {
                Some(g) => add4(&mut all.per_type[g as usize], c),
                None => add4(&mut all.untyped, c),
            }
        }
        add4(&mut all.untyped, &part.untyped);
        for (w, x) in all.typed.0.iter_mut().zip(&part.typed.0) {
            *w |= x;
        }
        let mut free = part.free;
        for (o, pm) in free.iter_mut() {
            match map[o.ty as usize] {
                Some(g) => o.ty = g,
                None => {
                    add(&mut all.untyped, *pm, o.alloc as u64, 1);
                    o.ty = u32::MAX;
                }
            }
        }
        outs.push((free, part.segments));
        for (a, t) in part.type_objects {
            if let Some(g) = map[t as usize] {
                all.type_objects.insert(a, g);
            }
        }
        all.zombies.extend(part.zombies);
        let pmap: Vec<Option<u32>> = part
            .pairs
            .iter()
            .map(|&(row, t)| {
                let row = match row {
                    Owner::Attrs(x) => Owner::Attrs(map[x as usize]?),
                    r => r,
                };
                let key = (row, map[t as usize]?);
                let n = all.pairs.len() as u32;
                Some(*pair_ids.entry(key).or_insert_with(|| {
                    all.pairs.push(key);
                    n
                }))
            })
            .collect();
        for run in part.owned {
            // Remapping keeps the run sorted by pointer; owners no longer known drop out.
            all.owned.push(
                run.into_iter()
                    .filter_map(|(p, k)| pmap[k as usize].map(|g| (p, g)))
                    .collect(),
            );
        }
        all.big.extend(
            part.big
                .into_iter()
                .filter_map(|(a, n, t)| map[t as usize].map(|g| (a, n, g))),
        );
        maps.push(Some(map));
    }
    // Range k's segment, from the part that scanned it (its thread's j-th range).
    let seg = |k: usize| {
        let (w, j) = thread_of(k, threads);
        let sg = &outs[w].1[j];
        debug_assert_eq!(sg.range, k);
        (w, j, sg)
    };
    // Free-list residents back in address order: range by range (a range's residents
    // start where its thread's previous range's ended).
    for k in 0..n {
        let (w, j, sg) = seg(k);
        let fi = j.checked_sub(1).map_or(0, |p| outs[w].1[p].free_end);
        all.free.extend(
            outs[w].0[fi..sg.free_end]
                .iter()
                .filter(|(o, _)| o.ty != u32::MAX),
        );
    }
    if !listing {
        return (all, None);
    }
    // The objects: each slot's, brought to `typer`'s type indices (u32::MAX: a type it
    // does not know, dropped with the dead types), closed up in place in range order.
    // Every slot starts at or after the end of the objects before it, so moving down
    // never overwrites one not yet moved.
    let remap = |o: &mut Obj, w: usize| {
        if let Some(m) = &maps[w] {
            o.ty = m[o.ty as usize].unwrap_or(u32::MAX);
        }
    };
    if (0..n).any(|k| !seg(k).2.over.is_empty()) {
        // A slot's bound did not hold: joined by copying.
        let mut list = Vec::new();
        for (k, &start) in starts.iter().enumerate() {
            let (w, _, sg) = seg(k);
            // SAFETY: the scan wrote (initialised) the first `listed` entries of slot k,
            // which starts `start` entries into `buf`'s capacity (see the split above).
            let slot = unsafe { std::slice::from_raw_parts(buf.as_ptr().add(start), sg.listed) };
            for o in slot.iter().chain(&sg.over) {
                let mut o = *o;
                remap(&mut o, w);
                list.push(o);
            }
        }
        return (all, Some(list));
    }
    let base = buf.as_mut_ptr();
    let mut end = 0usize;
    for (k, &start) in starts.iter().enumerate() {
        let (w, _, sg) = seg(k);
        let len = sg.listed;
        // SAFETY: slot k's first `len` entries (from `start`) were written by the scan;
        // `end <= start` (each slot holds at most its bound): the copy is a memmove, and
        // the remapping copy goes forward, reading each entry before anything is written
        // over it. (Remapped as they move: one pass over the entries, not two.)
        unsafe {
            match &maps[w] {
                None => std::ptr::copy(base.add(start), base.add(end), len),
                Some(_) => {
                    for i in 0..len {
                        let mut o = base.add(start + i).read();
                        remap(&mut o, w);
                        base.add(end + i).write(o);
                    }
                }
            }
        }
        end += len;
    }
    // SAFETY: entries [0, end) are initialised (moved there above); Obj is Copy.
    unsafe { buf.set_len(end) };
    buf.shrink_to_fit();
    (all, Some(buf))
}

/// The census of `src`: one pass over the allocations keeps counts per type, a bit per
/// typed allocation and the owner pointers of the objects; per-type liveness is settled
/// on the types alone; owner pointers then claim the untyped allocations they point into.
pub fn census_from<S: Source + ?Sized>(
    typer: &Typer,
    src: &S,
    float_free: &FxHashSet<u64>,
) -> Census {
    census_with(typer, src, float_free, false)
}

fn census_with<S: Source + ?Sized>(
    typer: &Typer,
    src: &S,
    float_free: &FxHashSet<u64>,
    listing: bool,
) -> Census {
    let (part, list) = scan_all(typer, src, float_free, listing);
    let Part {
        per_type,
        infos,
        mut untyped,
        typed,
        free,
        type_objects,
        zombies,
        mut owned,
        pairs,
        big,
        segments: _,
    } = part;
    // Only objects of live types: static types in module images, heap types whose type
    // object is itself a live object of a live (meta)type — settled on the types alone,
    // by removing from the set every type whose metatype was removed (to a fixed point).
    let ntypes = infos.len();
    let mut alive: Vec<bool> = vec![true; ntypes];
    // Types depending on each type index (types whose type object is an instance of it).
    let mut dependents: Vec<Vec<u32>> = vec![Vec::new(); ntypes];
    let mut dead: Vec<u32> = Vec::new();
    for (i, t) in infos.iter().enumerate() {
        let t = t.addr.0;
        if typer.in_image(t) {
            continue;
        }
        match type_objects.get(&t) {
            Some(&meta) => dependents[meta as usize].push(i as u32),
            None => {
                alive[i] = false;
                dead.push(i as u32);
            }
        }
    }
    while let Some(d) = dead.pop() {
        for &i in &dependents[d as usize] {
            if alive[i as usize] {
                alive[i as usize] = false;
                dead.push(i);
            }
        }
    }
    drop(dependents);
    drop(type_objects);
    let mut dead_type_objects = 0u64;
    let mut live: Vec<(u64, u64)> = vec![(0, 0); ntypes];
    let (mut object_count, mut live_object_bytes) = (0u64, 0u64);
    for (i, c) in per_type.iter().enumerate() {
        if alive[i] {
            // Byte totals of sizes read from the core: saturating, never a panic.
            live[i] = (c[0].saturating_add(c[2]), c[1].saturating_add(c[3]));
            object_count = object_count.saturating_add(live[i].0);
            live_object_bytes = live_object_bytes.saturating_add(live[i].1);
        } else {
            dead_type_objects = dead_type_objects.saturating_add(c[0].saturating_add(c[2]));
            add4(&mut untyped, c);
        }
    }
    // Free-list residents: of dead types they are untyped memory; 3.8-3.10 zombie frames
    // (kept by their code object, not on the frame free list) have their own row.
    let mut free_count: Vec<u64> = vec![0; ntypes];
    let mut free_objects = Vec::new();
    let mut zombie_rows: (u64, u64) = (0, 0);
    for &(o, pm) in &free {
        if !alive[o.ty as usize] {
            dead_type_objects += 1;
            add(&mut untyped, pm, o.alloc as u64, 1);
        } else if zombies.contains(&o.addr.0) {
            add_row(&mut zombie_rows, 1, o.alloc as u64);
        } else {
            free_count[o.ty as usize] += 1;
            free_objects.push(o);
        }
    }
    drop(free);
    // Allocations that are not objects: owned by the object whose pointer is the first
    // inside them (by address, then row), or untyped.
    let mut rank: Vec<u32> = (0..pairs.len() as u32).collect();
    rank.sort_by_key(|&k| pairs[k as usize]);
    let mut order = vec![0u32; pairs.len()];
    for (r, &k) in rank.iter().enumerate() {
        order[k as usize] = r as u32;
    }
    for run in owned.iter_mut() {
        run.retain(|&(_, k)| alive[pairs[k as usize].1 as usize]);
        for e in run.iter_mut() {
            e.1 = order[e.1 as usize];
        }
    }
    let runs: Vec<&[(u64, u32)]> = owned.iter().map(|r| r.as_slice()).collect();
    let mut dead: Vec<u64> = (0..ntypes)
        .filter(|&i| !alive[i])
        .map(|i| infos[i].addr.0)
        .collect();
    dead.sort_unstable();
    let claims = Claims {
        src,
        float_free,
        typed: &typed,
        dead: &dead,
        ranks: pairs.len(),
    };
    let by_rank = claims.all(typer, &runs, &mut untyped);
    let mut rows: FxHashMap<Owner, (u64, u64)> = FxHashMap::default();
    for (r, &(c, b)) in by_rank.iter().enumerate() {
        if c > 0 {
            let e = rows.entry(pairs[rank[r] as usize].0).or_default();
            add_row(e, c, b);
        }
    }
    drop(owned);
    let type_infos = infos;
    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
    for (i, &(c, b)) in live.iter().enumerate() {
        if c > 0 {
            let e = counts.entry(type_infos[i].name.clone()).or_default();
            add_row(e, c, b);
        }
    }
    for (kind, (c, b)) in rows {
        let name = match kind {
            Owner::Fixed(n) => n.to_string(),
            Owner::Attrs(t) => attributes_row(&type_infos[t as usize].name),
            Owner::Native(r) => typer.native_rows()[r as usize].clone(),
        };
        let e = counts.entry(name).or_default();
        add_row(e, c, b);
    }
    for (name, c, b) in [
        (UNTYPED_PYMALLOC, untyped[0], untyped[1]),
        (UNTYPED_GLIBC, untyped[2], untyped[3]),
    ] {
        if c > 0 {
            let e = counts.entry(name.to_string()).or_default();
            add_row(e, c, b);
        }
    }
    if zombie_rows.0 > 0 {
        counts.insert(ZOMBIE_FRAMES.to_string(), zombie_rows);
    }
    let mut types: Vec<TypeCount> = counts
        .into_iter()
        .map(|(name, (count, bytes))| TypeCount { name, count, bytes })
        .collect();
    types.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    let mut fl: HashMap<String, u64> = HashMap::new();
    for (i, &n) in free_count.iter().enumerate() {
        if n > 0 {
            *fl.entry(type_infos[i].name.clone()).or_default() += n;
        }
    }
    let mut freelists: Vec<FreeCount> = fl
        .into_iter()
        .map(|(name, count)| FreeCount { name, count })
        .collect();
    freelists.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    let mut big: Vec<(Addr, u64)> = big
        .into_iter()
        .filter(|b| alive[b.2 as usize])
        .map(|b| (b.0, b.1))
        .collect();
    big.sort_unstable();
    let objects = std::sync::OnceLock::new();
    if let Some(mut l) = list {
        l.retain(|o| alive.get(o.ty as usize).copied().unwrap_or(false));
        let _ = objects.set(crate::spill::Spilled::new(l));
    }
    Census {
        types,
        freelists,
        objects,
        free_objects,
        type_infos,
        alive,
        object_count,
        live_object_bytes,
        dead_type_objects,
        big_allocs: big,
    }
}

/// The claims of untyped allocations by owner pointers (`census_with`): each allocation
/// that is not a live object goes to the row of the first pointer into it (by address,
/// then the row's rank).
struct Claims<'c, S: Source + ?Sized> {
    src: &'c S,
    float_free: &'c FxHashSet<u64>,
    typed: &'c Bits,
    /// The addresses of the types found not live, sorted: by address, not by index,
    /// since each thread's typer has indices of its own.
    dead: &'c [u64],
    ranks: usize,
}

/// What the claims of some pointers found: the allocations claimed, the untyped counts
/// they take back (wrapping, as `add`), and per rank the allocations and their bytes.
struct Claimed {
    claimed: Bits,
    untyped: Counts,
    by_rank: Vec<(u64, u64)>,
}

impl<S: Source + ?Sized> Claims<'_, S> {
    /// Claim with every run of owner pointers (each sorted by pointer), on two threads
    /// for many pointers: split at an allocation's start, no allocation holds pointers of
    /// both halves, so each half claims its own allocations as one pass would. (Should
    /// one allocation be claimed by both — allocations nesting, which the walks never
    /// give — the claims are made again in one pass.) Takes the claimed allocations out
    /// of `untyped`; the counts by rank.
    fn all(&self, typer: &Typer, runs: &[&[(u64, u32)]], untyped: &mut Counts) -> Vec<(u64, u64)> {
        let total: usize = runs.iter().map(|r| r.len()).sum();
        let split = match total >= 1 << 16 && threads_for(self.src.ids()) > 1 {
            // The pointer in the middle of the longest run, or the start of its allocation.
            true => runs.iter().max_by_key(|r| r.len()).map(|r| {
                let p = r[r.len() / 2].0;
                self.src.containing(p).map_or(p, |(_, a)| a.addr.0)
            }),
            false => None,
        };
        let done = match split {
            Some(b) => {
                let (lo, hi): (Vec<_>, Vec<_>) = runs
                    .iter()
                    .map(|r| r.split_at(r.partition_point(|e| e.0 < b)))
                    .unzip();
                let halves = vec![lo, hi];
                let mut parts = per_thread(typer, halves, |t, h| self.claim(t, &h)).into_iter();
                match (parts.next(), parts.next()) {
                    (Some(mut a), Some(b))
                        if a.claimed
                            .0
                            .iter()
                            .zip(&b.claimed.0)
                            .all(|(x, y)| x & y == 0) =>
                    {
                        add4(&mut a.untyped, &b.untyped);
                        for (x, y) in a.by_rank.iter_mut().zip(&b.by_rank) {
                            add_row(x, y.0, y.1);
                        }
                        Some(a)
                    }
                    _ => None,
                }
            }
            None => None,
        };
        let c = done.unwrap_or_else(|| self.claim(typer, runs));
        add4(untyped, &c.untyped);
        c.by_rank
    }

    fn claim(&self, typer: &Typer, owned: &[&[(u64, u32)]]) -> Claimed {
        let src = self.src;
        let floats = FloatFree::new(typer, self.float_free);
        let mut claimed = Bits::new(src.ids());
        let mut untyped: Counts = [0; 4];
        // Per row rank: allocations claimed and their bytes.
        let mut by_rank: Vec<(u64, u64)> = vec![(0, 0); self.ranks];
        let mut heads: Vec<usize> = vec![0; owned.len()];
        let mut hint = [0usize; 2];
        // The smallest pointer at the runs' heads, and the best rank among its entries.
        while let Some(p) = owned
            .iter()
            .zip(&heads)
            .filter_map(|(run, &h)| run.get(h).map(|e| e.0))
            .min()
        {
            let mut r = u32::MAX;
            for (run, h) in owned.iter().zip(heads.iter_mut()) {
                while let Some(&(q, k)) = run.get(*h) {
                    if q != p {
                        break;
                    }
                    r = r.min(k);
                    *h += 1;
                }
            }
            let Some((id, a)) = src.containing_near(p, &mut hint) else {
                continue;
            };
            if claimed.get(id) {
                continue;
            }
            if self.typed.get(id) {
                // Typed: no owner's, unless its type turned out not to be live.
                match classify(typer, &a, &floats) {
                    Some((_, ty, _))
                        if self
                            .dead
                            .binary_search(&typer.type_by_index(ty).addr.0)
                            .is_err() =>
                    {
                        continue
                    }
                    _ => {}
                }
            }
            claimed.set(id);
            let pm = a.allocator == Allocator::Pymalloc;
            add(&mut untyped, pm, a.size, -1);
            add_row(&mut by_rank[r as usize], 1, a.size);
        }
        Claimed {
            claimed,
            untyped,
            by_rank,
        }
    }
}

/// The live objects of `src` in address order, typed as `census` typed them (the same
/// classification, only live types, no free-list residents); scanned in address ranges on
/// the machine's cores like the census.
pub fn objects_of<S: Source + ?Sized>(
    typer: &Typer,
    src: &S,
    float_free: &FxHashSet<u64>,
    census: &Census,
) -> Vec<Obj> {
    if let Some(list) = census.objects.get() {
        return list.to_vec();
    }
    let ranges = src.split(threads_for(census.object_count));
    let live_types: &[bool] = &census.alive;
    let alive = |ty: u32| live_types.get(ty as usize).copied().unwrap_or(false);
    // One range: objects of live types, by `typer`'s indices; others: every object, by the
    // thread's own typer's indices, with the type addresses to bring them to `typer`'s.
    let collect = |t: &Typer, r: (u64, u64), filter: bool| -> (Vec<Obj>, Vec<u64>) {
        let floats = FloatFree::new(t, float_free);
        let mut out = Vec::new();
        let mut seen = 0u64;
        src.each_between(r.0, r.1, &mut |_, a| {
            seen += 1;
            if seen % RELEASE_EVERY == 0 {
                src.release();
            }
            let Some((o, ty, false)) = classify(t, &a, &floats) else {
                return;
            };
            if filter && !alive(ty) {
                return;
            }
            out.push(Obj::in_alloc(o, ty, &a));
        });
        let addrs = (0..t.type_count())
            .map(|i| t.type_by_index(i).addr.0)
            .collect();
        (out, addrs)
    };
    if ranges.len() == 1 {
        let mut v = collect(typer, ranges[0], true).0;
        v.shrink_to_fit();
        return v;
    }
    let forks: Vec<Typer> = ranges[1..].iter().map(|_| typer.fork()).collect();
    let (mut all, rest) = std::thread::scope(|sc| {
        let handles: Vec<_> = forks
            .into_iter()
            .zip(&ranges[1..])
            .map(|(t, &r)| sc.spawn(move || collect(&t, r, false)))
            .collect();
        let first = collect(typer, ranges[0], true).0;
        let rest: Vec<(Vec<Obj>, Vec<u64>)> = handles
            .into_iter()
            .map(|h| h.join().expect("object scan thread"))
            .collect();
        (first, rest)
    });
    all.reserve_exact(rest.iter().map(|r| r.0.len()).sum());
    for (objs, addrs) in rest {
        let map: Vec<Option<u32>> = addrs
            .iter()
            .map(|&t| typer.type_index(t).filter(|&g| alive(g)))
            .collect();
        all.extend(objs.into_iter().filter_map(|mut o| {
            o.ty = map[o.ty as usize]?;
            Some(o)
        }));
    }
    all
}

/// Call `f` on every live object of `src` in address order, until it returns false.
pub fn each_object<S: Source + ?Sized>(
    typer: &Typer,
    src: &S,
    float_free: &FxHashSet<u64>,
    census: &Census,
    f: &mut dyn FnMut(Obj) -> bool,
) {
    if let Some(list) = census.objects.get() {
        for &o in list.iter() {
            if !f(o) {
                return;
            }
        }
        return;
    }
    let floats = FloatFree::new(typer, float_free);
    let mut going = true;
    let mut seen = 0u64;
    src.each(&mut |_, a| {
        if !going {
            return;
        }
        seen += 1;
        if seen % RELEASE_EVERY == 0 {
            src.release();
        }
        let Some((o, ty, false)) = classify(typer, &a, &floats) else {
            return;
        };
        if !census.alive.get(ty as usize).copied().unwrap_or(false) {
            return;
        }
        going = f(Obj::in_alloc(o, ty, &a));
    });
}

/// The live object whose allocation holds `addr`, if any.
pub fn object_at<S: Source + ?Sized>(
    typer: &Typer,
    src: &S,
    float_free: &FxHashSet<u64>,
    census: &Census,
    addr: u64,
) -> Option<Obj> {
    let (_, a) = src.containing(addr)?;
    let floats = FloatFree::new(typer, float_free);
    let (o, ty, zero) = classify(typer, &a, &floats)?;
    (!zero && census.alive.get(ty as usize).copied().unwrap_or(false))
        .then_some(Obj::in_alloc(o, ty, &a))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocations of 4 GiB and more keep their size (a saturating u32 made totals disagree).
    #[test]
    fn sizes_of_4_gib_and_more_are_exact() {
        let big = 6u64 << 30;
        let c = Census {
            big_allocs: vec![(Addr(0x7f00_0000_0000), big)],
            ..Default::default()
        };
        let objs = c.objects_with(|| {
            vec![
                Obj {
                    addr: Addr(0x1000),
                    alloc: 64,
                    ty: 0,
                },
                Obj {
                    addr: Addr(0x7f00_0000_0000),
                    alloc: u32::MAX,
                    ty: 0,
                },
            ]
        });
        assert_eq!(c.alloc_size(&objs[1]), big);
        assert_eq!(c.alloc_size(&objs[0]) + c.alloc_size(&objs[1]), big + 64);
    }
}

#[cfg(test)]
mod garbage_tests {
    use super::*;
    use crate::image::testcore::RW;
    use crate::python::objects::tests::{model, typer, Fake, HEAP};

    /// Allocation sizes and ends of garbage (2^63-byte allocations, an allocation reaching
    /// the top of the space) sum and subtract without overflow: totals saturate, a claimed
    /// allocation leaves the untyped row exactly.
    #[test]
    fn garbage_allocation_sizes_sum_without_overflow() {
        let mut f = Fake::new();
        let blob = f.static_type("blob", 24, 0, 0);
        let list = f.static_type("list", 40, 0, 0);
        f.obj(HEAP, 1, blob, 0);
        f.obj(HEAP + 0x100, 1, blob, 0);
        // A list (no GC head here) whose ob_item points into an untyped allocation.
        f.obj(HEAP + 0x200, 1, list, 1);
        f.core.u64(HEAP + 0x218, HEAP + 0x300);
        let p = f.core.process();
        let m = model("3.12");
        let t = typer(&p, &m, vec![(list, Special::List)]);
        let big = 1u64 << 63;
        let allocs = [
            (HEAP, 32, big, true),
            (HEAP + 0x100, 32, big, false),
            (HEAP + 0x200, 48, 48, true),
            (HEAP + 0x300, u64::MAX - (HEAP + 0x300), big, false),
        ];
        let c = census_of(&t, allocs.into_iter());
        let row = |n: &str| {
            c.types
                .iter()
                .find(|r| r.name == n)
                .map(|r| (r.count, r.bytes))
        };
        assert_eq!(row("blob"), Some((2, u64::MAX)));
        assert_eq!(row(LIST_ITEMS), Some((1, big)));
        assert_eq!(row(UNTYPED_GLIBC), None);
        assert_eq!(c.object_count, 3);
        assert_eq!(c.live_bytes(), u64::MAX);
    }

    /// A source whose `below` undercounts (0 everywhere): the object list's slots are then
    /// too small (`SLOT_SLACK` each) and the list is joined from their overflow.
    struct Undercount<'s>(&'s [Allocation]);

    impl Source for Undercount<'_> {
        fn ids(&self) -> u64 {
            self.0.ids()
        }
        fn each_between(&self, lo: u64, hi: u64, f: &mut dyn FnMut(u64, Allocation)) {
            self.0.each_between(lo, hi, f)
        }
        fn containing(&self, a: u64) -> Option<(u64, Allocation)> {
            self.0.containing(a)
        }
        fn below(&self, _: u64) -> u64 {
            0
        }
    }

    /// The object list is the same, in address order, whether the slots hold every
    /// range's objects (closed up in place) or overflow (joined by copying).
    #[test]
    fn object_list_survives_slot_overflow() {
        let mut f = Fake::new();
        let blob = f.static_type("blob", 24, 0, 0);
        // Two thirds of them objects: more than one slot of slack holds.
        let n = SLOT_SLACK as u64 * 3 / 2 + 1000;
        // Past the fake's own segment (which ends at HEAP + 0x8000).
        let heap = HEAP + 0x8000;
        f.core.segment(heap, n * 32, RW);
        let mut allocs = Vec::new();
        for i in 0..n {
            let o = heap + i * 32;
            // Every third allocation is no object (refcount 0, not a free-list type).
            f.obj(o, if i % 3 == 2 { 0 } else { 1 }, blob, 0);
            allocs.push(Allocation {
                addr: Addr(o),
                usable: 32,
                size: 32,
                allocator: Allocator::Pymalloc,
            });
        }
        let p = f.core.process();
        let m = model("3.12");
        let t = typer(&p, &m, vec![]);
        let none = FxHashSet::default();
        let (_, exact) = scan_all(&t, allocs.as_slice(), &none, true);
        let (_, over) = scan_all(&t, &Undercount(&allocs), &none, true);
        let want: Vec<u64> = (0..n)
            .filter(|i| i % 3 != 2)
            .map(|i| heap + i * 32)
            .collect();
        assert!(want.len() > SLOT_SLACK);
        let addrs = |l: Option<Vec<Obj>>| l.unwrap().iter().map(|o| o.addr.0).collect::<Vec<_>>();
        assert_eq!(addrs(exact), want);
        assert_eq!(addrs(over), want);
    }

    /// Allocations as the walks never give them but a damaged core might: one outer
    /// allocation `[OUTER, OUTER + 4 MiB)` holding inner ones, found for a pointer when no
    /// inner allocation holds it (as `Heaps::containing` tries pymalloc's blocks before
    /// glibc's chunks). Ids: 0 the outer, 1.. the inner.
    struct Nested {
        outer: bool,
        inner: Vec<Allocation>,
    }

    const OUTER: u64 = 0x7f00_0000_0000;

    impl Source for Nested {
        fn ids(&self) -> u64 {
            self.inner.len() as u64 + 1
        }
        fn each_between(&self, _: u64, _: u64, _: &mut dyn FnMut(u64, Allocation)) {}
        fn containing(&self, a: u64) -> Option<(u64, Allocation)> {
            if let Some((i, x)) = self.inner.as_slice().containing(a) {
                return Some((i + 1, x));
            }
            (self.outer && (OUTER..OUTER + (1 << 22)).contains(&a)).then_some((
                0,
                Allocation {
                    addr: Addr(OUTER),
                    usable: 1 << 22,
                    size: 1 << 22,
                    allocator: Allocator::Glibc,
                },
            ))
        }
        fn below(&self, a: u64) -> u64 {
            self.inner.as_slice().below(a)
        }
    }

    /// The claims split in two halves give what one pass gives: with allocations side by
    /// side, and with an allocation that holds pointers of both halves (claimed once, by
    /// its first pointer's row, as in one pass).
    #[test]
    fn claims_in_halves_are_one_pass() {
        let mut f = Fake::new();
        let other = f.static_type("other", 24, 0, 0);
        let blob = f.static_type("blob", 24, 0, 0);
        let n = 1u64 << 16;
        let end = OUTER + 0x1000 + n * 32;
        f.core.segment(OUTER, 1 << 22, RW);
        // Every 1000th inner allocation holds a blob (typed): claimed only when its type is
        // not live.
        let blobs: Vec<u64> = (0..n).step_by(1000).collect();
        for &i in &blobs {
            f.obj(OUTER + 0x1000 + i * 32, 1, blob, 0);
        }
        let p = f.core.process();
        let m = model("3.12");
        let t = typer(&p, &m, vec![]);
        // The main typer's indices differ from a fresh fork's: blob is 1 here, 0 there.
        assert_eq!(t.type_index(other), Some(0));
        assert_eq!(t.type_index(blob), Some(1));
        let none = FxHashSet::default();
        // Inner allocations of 32 bytes from OUTER + 4 KiB, each pointed at twice.
        let inner: Vec<Allocation> = (0..n)
            .map(|i| Allocation {
                addr: Addr(OUTER + 0x1000 + i * 32),
                usable: 32,
                size: 32,
                allocator: Allocator::Pymalloc,
            })
            .collect();
        for (outer, dead) in [(false, vec![]), (true, vec![]), (false, vec![blob])] {
            let src = Nested {
                outer,
                inner: inner.clone(),
            };
            let mut typed = Bits::new(src.ids());
            for &i in &blobs {
                typed.set(i + 1);
            }
            // Two runs, as two scan threads give them: rank 1 then 0 into the outer
            // allocation's head and tail, ranks 2 and 3 into the inner ones.
            let a: Vec<(u64, u32)> = std::iter::once((OUTER + 8, 1))
                .chain((0..n).map(|i| (OUTER + 0x1000 + i * 32, 2)))
                .chain(std::iter::once((end + 64, 0)))
                .collect();
            let b: Vec<(u64, u32)> = (0..n).map(|i| (OUTER + 0x1000 + i * 32 + 8, 3)).collect();
            let runs = [a.as_slice(), b.as_slice()];
            let c = Claims {
                src: &src,
                float_free: &none,
                typed: &typed,
                dead: &dead,
                ranks: 4,
            };
            let mut split: Counts = [0; 4];
            let by_rank = c.all(&t, &runs, &mut split);
            let one = c.claim(&t, &runs);
            let case = format!("outer {outer} dead {dead:?}");
            assert_eq!(by_rank, one.by_rank, "{case}");
            assert_eq!(split, one.untyped, "{case}");
            let want_outer = if outer { (1, 1 << 22) } else { (0, 0) };
            assert_eq!(by_rank[1], want_outer, "{case}");
            assert_eq!(by_rank[0], (0, 0), "{case}");
            let k = match dead.is_empty() {
                true => n - blobs.len() as u64,
                false => n,
            };
            assert_eq!(by_rank[2], (k, k * 32), "{case}");
        }
    }
}
