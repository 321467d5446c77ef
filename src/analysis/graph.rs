//! The object graph of one core and its dominator tree, built once per [`Analysis`] and
//! shared by every ownership view (`summary --by owner`, `why`, `diff --by owner`,
//! `leaks`, the RETAINED column).
//!
//! Node 0 is a virtual root; node `i` is `census.objects[i - 1]`. Edges are the references
//! of `python::edges`; the root's successors are the named roots (sys.modules, the sys
//! dict, builtins, and whatever [`Roots`] the caller adds, e.g. thread frames) and every
//! object whose reference count is larger than the references found to it: it is held
//! from outside the scanned objects (C statics, C stacks, extension state) — the rule
//! CPython's own collector uses to find externally referenced objects (gc.c
//! `update_refs`/`subtract_refs`, round2-facts.md §D.3). Immortal objects (3.12+) are roots
//! too. Each object's size is its allocation plus the buffers it owns (list item arrays,
//! dict keys and values, set tables), so retained sizes include them.

use super::census::{Census, Obj};
use super::dominators::{self, Csr, NONE};
use super::Analysis;
use crate::error::{Diagnostic, Diagnostics};
use crate::python::edges::{Edges, Via};
use crate::python::objects::Special;
use crate::python::roots::NamedRoot;
use crate::spill::Spilled;

/// Roots that other analyses supply (thread frames, thread-state dicts): addresses of
/// objects with how a Python programmer names them.
#[derive(Debug, Clone, Default)]
pub struct Roots {
    pub named: Vec<NamedRoot>,
}

/// Why a node is a successor of the virtual root.
#[derive(Debug, Clone)]
pub struct Root {
    pub node: u32,
    pub kind: &'static str,
    pub name: String,
}

pub struct Graph {
    /// The references (root 0's first), unless the command said it reads none after the
    /// dominator tree (`Needs::edges_unused`).
    pub csr: Option<Csr>,
    nodes: usize,
    /// Bytes of each node: its allocation plus the buffers it owns (saturating at 4 GiB).
    pub shallow: Spilled<u32>,
    pub idom: Vec<u32>,
    /// Reached nodes, each after its dominator (dominators::dominators: inner nodes in DFS
    /// preorder, then the single-predecessor leaves).
    pub order: Vec<u32>,
    /// `order[inner..]` dominate no node (dominators::Tree::inner).
    pub inner: usize,
    /// Retained bytes by node (`Graph::retained_bytes`).
    retained: RetainedBytes,
    pub retained_count: Vec<u32>,
    /// Named roots (first) and refcount-surplus roots, as the root's successors list them.
    pub named: Vec<Root>,
    /// Nodes held from outside the scanned objects (refcount larger than the references
    /// found), and immortal objects.
    pub native: Vec<u32>,
    pub immortal: Vec<u32>,
    /// Address-sorted object addresses and their node ids, when the census is not sorted.
    sorted: Option<(Vec<u64>, Vec<u32>)>,
    pub edges: u64,
    pub diagnostics: Diagnostics,
}

/// Retained bytes by node in 4 bytes a node: u32, with the few nodes that retain 4 GiB
/// and more (the root, a registry of a 10 GB heap) in a side table. A u64 a node was 1.4
/// GB of a 10 GB core's 175 M nodes, the largest array of the owner view.
struct RetainedBytes {
    low: Vec<u32>,
    /// Exact totals of the nodes whose `low` is `u32::MAX`.
    high: rustc_hash::FxHashMap<u32, u64>,
}

impl RetainedBytes {
    #[inline]
    fn get(&self, v: u32) -> u64 {
        match self.low[v as usize] {
            u32::MAX => self.high.get(&v).copied().unwrap_or(u32::MAX as u64),
            x => x as u64,
        }
    }
    #[inline]
    fn add(&mut self, v: u32, b: u64) {
        let x = self.low[v as usize];
        if x != u32::MAX {
            let t = x as u64 + b;
            if t < u32::MAX as u64 {
                self.low[v as usize] = t as u32;
                return;
            }
        }
        let t = self.get(v) + b;
        self.low[v as usize] = u32::MAX;
        self.high.insert(v, t);
    }
}

impl Graph {
    /// Bytes node `v` retains: its own and those of every node it dominates.
    #[inline]
    pub fn retained_bytes(&self, v: u32) -> u64 {
        self.retained.get(v)
    }

    /// The node of the object at `addr`.
    pub fn node_of(&self, c: &Census, addr: u64) -> Option<u32> {
        match &self.sorted {
            Some((a, ids)) => a.binary_search(&addr).ok().map(|i| ids[i]),
            None => c
                .objects()
                .binary_search_by_key(&addr, |o| o.addr.0)
                .ok()
                .map(|i| i as u32 + 1),
        }
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Is `n` reached from a root?
    pub fn reached(&self, n: u32) -> bool {
        self.idom[n as usize] != NONE
    }

    /// Children lists of the dominator tree (CSR over nodes).
    pub fn dom_children(&self) -> Csr {
        let n = self.nodes();
        let mut off = vec![0u32; n + 1];
        for v in 1..n {
            let d = self.idom[v];
            if d != NONE {
                off[d as usize + 1] += 1;
            }
        }
        for i in 0..n {
            off[i + 1] += off[i];
        }
        let mut fill = off.clone();
        let mut adj = vec![0u32; off[n] as usize];
        for &v in &self.order[1..] {
            let d = self.idom[v as usize] as usize;
            adj[fill[d] as usize] = v;
            fill[d] += 1;
        }
        Csr {
            off: off.into(),
            adj: adj.into(),
        }
    }

    /// Nodes of the dominator subtree of `n` (n first), iteratively.
    pub fn subtree(&self, kids: &Csr, n: u32, mut f: impl FnMut(u32)) {
        let mut stack = vec![n];
        while let Some(v) = stack.pop() {
            f(v);
            stack.extend_from_slice(kids.succ(v));
        }
    }
}

/// Object indices by address, for objects in address order (see `build`): per 1 MiB
/// bucket holding objects, the index of the first object at or after each 256-byte
/// granule, with one entry past the bucket's end. The buckets are found through a table
/// per 1 GiB region that holds any: a lookup is then one short search among the few
/// regions and two direct loads, where a binary search among the buckets (a thousand on a
/// 1 GB heap) took ten dependent loads per edge — 40 % of the edge scan in `perf annotate`.
#[derive(Default)]
struct GranuleIndex {
    first: Vec<u32>,
    /// Region numbers (address >> REGION_SHIFT) holding buckets, in order.
    regions: Vec<u64>,
    /// Per region, per bucket in it, the bucket's start in `first` (NO_BUCKET: none).
    table: Vec<u32>,
}

const REGION_SHIFT: u32 = 30;
const REGION_BUCKETS: usize = 1 << (REGION_SHIFT - BUCKET_SHIFT);
const NO_BUCKET: u32 = u32::MAX;
const BUCKET_SHIFT: u32 = 20;
const GRANULE_SHIFT: u32 = 8;
const GRANULES: usize = 1 << (BUCKET_SHIFT - GRANULE_SHIFT);

impl GranuleIndex {
    /// The index of `objects`, or None when they are not in strictly increasing address
    /// order (checked in the same pass). Built in two halves on two cores, cut where a
    /// bucket starts (one core took 0.1 s on py20m, and a pass of its own for the order
    /// check 60 ms more). `release` is called every so many objects (a spilled object
    /// list's pages are dropped behind the pass: `Census::release_objects`).
    fn new(objects: &[Obj], release: &(dyn Fn() + Sync)) -> Option<GranuleIndex> {
        let bucket = |i: usize| objects[i].addr.0 >> BUCKET_SHIFT;
        let cut = match objects.len() {
            0 => 0,
            len => {
                let k = bucket(len / 2);
                objects.partition_point(|o| o.addr.0 >> BUCKET_SHIFT < k)
            }
        };
        if cut > 0 && cut < objects.len() && bucket(cut - 1) >= bucket(cut) {
            return None;
        }
        let (lo, hi) = rayon::join(
            || Self::part(objects, 0..cut, release),
            || Self::part(objects, cut..objects.len(), release),
        );
        let ((mut first, mut buckets), (hi_first, hi_buckets)) = (lo?, hi?);
        let base = first.len() as u32;
        first.extend_from_slice(&hi_first);
        buckets.extend(hi_buckets.into_iter().map(|(k, b)| (k, b + base)));
        Some(Self::from_parts(first, &buckets))
    }

    /// The index of granule entries `first` and their buckets (bucket number, start of
    /// its entries), in bucket order: each bucket entered in its region's table.
    fn from_parts(first: Vec<u32>, buckets: &[(u64, u32)]) -> GranuleIndex {
        let mut ix = GranuleIndex {
            first,
            ..Default::default()
        };
        for &(k, base) in buckets {
            let r = k >> (REGION_SHIFT - BUCKET_SHIFT);
            if ix.regions.last() != Some(&r) {
                ix.regions.push(r);
                ix.table.resize(ix.table.len() + REGION_BUCKETS, NO_BUCKET);
            }
            let at = (ix.regions.len() - 1) * REGION_BUCKETS + (k as usize & (REGION_BUCKETS - 1));
            ix.table[at] = base;
        }
        ix
    }

    /// The granule entries of `objects[range]` (whole buckets: the range ends where a
    /// bucket does) and its buckets with the start of their entries, or None when the
    /// objects are not in strictly increasing order.
    #[allow(clippy::type_complexity)]
    fn part(
        objects: &[Obj],
        range: std::ops::Range<usize>,
        release: &(dyn Fn() + Sync),
    ) -> Option<(Vec<u32>, Vec<(u64, u32)>)> {
        let mut first: Vec<u32> = Vec::new();
        // (bucket number, start of its entries in `first`), in bucket order.
        let mut buckets: Vec<(u64, u32)> = Vec::new();
        // Granules of the current bucket filled so far.
        let mut filled = GRANULES + 1;
        let mut prev = 0u64;
        for (i, o) in objects[range.clone()].iter().enumerate() {
            let i = range.start + i;
            if i as u64 % super::census::RELEASE_EVERY == 0 {
                release();
            }
            let a = o.addr.0;
            if i > range.start && a <= prev {
                return None;
            }
            prev = a;
            let k = a >> BUCKET_SHIFT;
            if buckets.last().is_none_or(|b| b.0 != k) {
                // Close the previous bucket: its remaining granules end at this object.
                while filled <= GRANULES {
                    first.push(i as u32);
                    filled += 1;
                }
                buckets.push((k, first.len() as u32));
                filled = 0;
            }
            let g = ((a >> GRANULE_SHIFT) as usize) & (GRANULES - 1);
            while filled <= g {
                first.push(i as u32);
                filled += 1;
            }
        }
        if !buckets.is_empty() {
            while filled <= GRANULES {
                first.push(range.end as u32);
                filled += 1;
            }
        }
        Some((first, buckets))
    }

    /// The node (object index + 1) of the object starting at `addr`.
    #[inline]
    fn find(&self, objects: &[Obj], addr: u64) -> Option<u32> {
        let r = self.regions.binary_search(&(addr >> REGION_SHIFT)).ok()?;
        let base = self.table
            [r * REGION_BUCKETS + ((addr >> BUCKET_SHIFT) as usize & (REGION_BUCKETS - 1))];
        if base == NO_BUCKET {
            return None;
        }
        let base = base as usize;
        let g = ((addr >> GRANULE_SHIFT) as usize) & (GRANULES - 1);
        let lo = self.first[base + g] as usize;
        let hi = self.first[base + g + 1] as usize;
        objects[lo..hi]
            .iter()
            .position(|o| o.addr.0 == addr)
            .map(|i| (lo + i) as u32 + 1)
    }
}

/// The refusal when the edges (and the root's) would not fit u32 CSR offsets.
const TOO_MANY_EDGES: &str =
    "the reference graph has more than 4 billion edges; ownership is not computed";

/// Per thread: (range, start, end) of each of its ranges in its edge list.
type Spans = Vec<(usize, usize, usize)>;

/// One node range's references (graph::build's scan): its edge list and buffer pointers.
struct EdgePart {
    adj: Vec<u32>,
    buffers: Vec<(u64, u32)>,
    /// Containers whose tables were unreadable (u64::MAX: too many edges).
    damaged: u64,
    /// The largest dicts whose every value is its own key: candidates for the interned
    /// strings' dict (`drop_uncounted_interned`).
    self_maps: Vec<SelfMap>,
}

/// A dict whose every entry maps its key to itself, and where its edges are in its
/// thread's edge list.
#[derive(Debug, Clone, Copy)]
struct SelfMap {
    entries: u64,
    node: u32,
    start: usize,
    end: usize,
}

impl EdgePart {
    /// Keep the few largest: a user's dict {1: 1, 2: 2, ...} may be larger than the
    /// interned dict, not several of them.
    fn note_self_map(&mut self, m: SelfMap) {
        const KEEP: usize = 4;
        self.self_maps.push(m);
        if self.self_maps.len() > KEEP {
            let least = (0..self.self_maps.len())
                .min_by_key(|&i| {
                    (
                        self.self_maps[i].entries,
                        std::cmp::Reverse(self.self_maps[i].node),
                    )
                })
                .unwrap_or(0);
            self.self_maps.swap_remove(least);
        }
    }
}

/// Build the graph of the analysed process (None without a CPython census).
pub fn build(a: &Analysis, extra: &Roots) -> Option<Graph> {
    let (c, typer) = a.python().ok()?;
    // The node list: the census's objects, built here on first use.
    {
        let _phase = a.phase("listing objects");
        a.objects().ok()?;
    }
    let phase = a.phase("reading references");
    let model = a.cpython_model?;
    let edges = Edges::new(a.process, model, typer);
    let mut diagnostics = Diagnostics::default();
    let n = c.objects().len() + 1;
    if n >= u32::MAX as usize {
        diagnostics.push(Diagnostic::error(
            "too many objects for the reference graph",
        ));
        return None;
    }
    // Address lookup: the census in address order is searched through an index of
    // 256-byte granules, kept per 1 MiB bucket of the address space that holds objects
    // (see GranuleIndex): the bucket, then the granule's first and end object indices,
    // then at most 16 objects of 16 bytes (a pointer names an object's start). A search
    // in a bucket's tens of thousands of objects was the edge scan's main cost (a cache
    // miss per probe); the index takes 16 KiB per MiB of the heap (1.6 %). Objects out of
    // order are searched in a sorted copy of their addresses.
    let index = GranuleIndex::new(c.objects(), &|| c.release_objects());
    let sorted = if index.is_some() {
        None
    } else {
        let mut ids: Vec<u32> = (1..n as u32).collect();
        ids.sort_unstable_by_key(|&i| c.objects()[i as usize - 1].addr.0);
        let addrs: Vec<u64> = ids
            .iter()
            .map(|&i| c.objects()[i as usize - 1].addr.0)
            .collect();
        Some((addrs, ids))
    };
    let index = index.unwrap_or_default();
    let objects = c.objects();
    let lookup = |addr: u64| -> Option<u32> {
        match &sorted {
            Some((s, ids)) => s.binary_search(&addr).ok().map(|i| ids[i]),
            None => index.find(objects, addr),
        }
    };
    // Object lo/hi bounds: most scanned words are not pointers into the heap at all.
    let (lo, hi) = match (&sorted, objects.first(), objects.last()) {
        (None, Some(f), Some(l)) => (f.addr.0, l.addr.0),
        (Some((addrs, _)), _, _) if !addrs.is_empty() => (addrs[0], addrs[addrs.len() - 1]),
        _ => (u64::MAX, 0),
    };

    // Each object's references, in node ranges on the machine's cores (each thread with its
    // own typer and edge reader), joined in node order: the same CSR as one pass.
    let split_rc = edges.minor >= 12;
    // One range's scan appends its nodes' edges to its thread's edge list and writes their
    // CSR ends (relative to that list), shallow sizes and refcounts straight into its
    // slices of the graph's arrays.
    struct Out<'o> {
        off: &'o mut [u32],
        shallow: &'o mut [u32],
        rc: &'o mut [u32],
    }
    // The object this many places ahead is asked for (`Typer::prefetch`) while one is
    // read: "reading references" on py20m 0.57 s -> 0.52 s, mixed 0.48 s -> 0.44 s (64
    // ahead measured alike, 4 and 128 worse).
    const PF_AHEAD: usize = 32;
    // A spilled object list is read all over by the address lookups: its pages (and the
    // core's) are dropped more often than behind a sequential pass, or a few million
    // nodes' lookups map most of it again.
    let spilled = c.objects_spilled();
    let release_every = match spilled {
        true => 1 << 15,
        false => super::census::RELEASE_EVERY,
    };
    c.objects_random_access(true);
    // Node v's edges end at off[v + 1]; node 0's (the root's) are placed first, once the
    // roots are known (off[1]). On a heap whose object list is spilled (`crate::spill`)
    // the offsets and node sizes are written into their files as the scan goes, their
    // pages dropped with the core's: in memory beside the threads' edge lists and the
    // reference counts, they were the owner view's peak on a 10 GB core (2.98 GB
    // anonymous).
    let mut off_array = Spilled::<u32>::zeroed(n + 1, spilled);
    let mut shallow_array = Spilled::<u32>::zeroed(n, spilled);
    let (off, off_release) = off_array.writable();
    let (shallow, shallow_release) = shallow_array.writable();
    let release_outputs = || {
        off_release.release();
        shallow_release.release();
    };
    let dict_type = typer.special_type(Special::Dict);
    let scan_nodes = |typer: &crate::python::objects::Typer,
                      range: std::ops::Range<usize>,
                      out: Out,
                      part: &mut EdgePart| {
        let edges = Edges::new(a.process, model, typer);
        let ahead = &objects[(range.start + PF_AHEAD).min(range.end)..range.end];
        for (i, o) in objects[range.clone()].iter().enumerate() {
            let node = (range.start + i) as u32 + 1;
            if node as u64 % release_every == 0 {
                a.process.core.release_pages();
                c.release_objects();
                release_outputs();
            }
            if let Some(x) = ahead.get(i) {
                typer.prefetch(x.addr.0);
            }
            let ti = c.type_of(o);
            let head = gc_head(ti.flags, &model.objects);
            let end = (o.addr.0 - head).saturating_add(c.alloc_size(o));
            let adj = &mut part.adj;
            let start = adj.len();
            // A dict mapping each key to itself may be the interned strings' dict.
            let plain_dict = dict_type == Some(ti.addr.0);
            let (mut selfs, mut others) = (0u64, 0u64);
            edges.for_each(o.addr.0, ti, end, &mut |t, via: Via| {
                if plain_dict {
                    if let Via::Value(k) = via {
                        match k == t {
                            true => selfs += 1,
                            false => others += 1,
                        }
                    }
                }
                if t >= lo && t <= hi {
                    if let Some(d) = lookup(t) {
                        adj.push(d);
                        // One container's items (a list of 50 M floats) are as many
                        // lookups: a spilled list's pages are dropped within it too.
                        if spilled && adj.len() % (1 << 15) == 0 {
                            a.process.core.release_pages();
                            c.release_objects();
                        }
                    }
                }
            });
            if adj.len() >= u32::MAX as usize - (n + 16) {
                part.damaged = u64::MAX;
                break;
            }
            let end = adj.len();
            out.off[i] = end as u32;
            if plain_dict && others == 0 && selfs > 0 {
                part.note_self_map(SelfMap {
                    entries: selfs,
                    node,
                    start,
                    end,
                });
            }
            out.shallow[i] = c.alloc_size(o).min(u32::MAX as u64) as u32;
            edges.buffers(o.addr.0, ti, &mut |p| part.buffers.push((p, node)));
            let r = typer.refcount_word(o.addr.0);
            out.rc[i] = if split_rc {
                if (r as u32 as i32) < 0 {
                    u32::MAX
                } else {
                    r as u32
                }
            } else {
                r.min(u32::MAX as u64 - 1) as u32
            };
        }
        if part.damaged != u64::MAX {
            part.damaged += edges.damaged();
        }
    };
    let threads = super::census::threads_for(n as u64);
    let m = n - 1;
    // As the census: each thread takes every `threads`-th range, spread over the heap (a
    // run of floats has no edges, one of tuples many).
    let nranges = super::census::ranges_for(threads);
    let cuts: Vec<usize> = (0..=nranges).map(|k| m * k / nranges).collect();
    let mut rc: Vec<u32> = vec![0; n];
    // Per thread: its ranges' output slices, and (range, start, end) in its edge list.
    let mut parts: Vec<(EdgePart, Spans)> = {
        let mut outs: Vec<Vec<(usize, Out)>> = (0..threads).map(|_| Vec::new()).collect();
        let (mut o_rest, mut s_rest, mut r_rest) = (&mut off[2..], &mut shallow[1..], &mut rc[1..]);
        for k in 0..nranges {
            let len = cuts[k + 1] - cuts[k];
            let (o, o2) = std::mem::take(&mut o_rest).split_at_mut(len);
            let (s2, s3) = std::mem::take(&mut s_rest).split_at_mut(len);
            let (r2, r3) = std::mem::take(&mut r_rest).split_at_mut(len);
            outs[super::census::thread_of(k, threads).0].push((
                k,
                Out {
                    off: o,
                    shallow: s2,
                    rc: r2,
                },
            ));
            (o_rest, s_rest, r_rest) = (o2, s3, r3);
        }
        let run = |t: &crate::python::objects::Typer, mine: Vec<(usize, Out)>| {
            let mut part = EdgePart {
                adj: Vec::new(),
                buffers: Vec::new(),
                damaged: 0,
                self_maps: Vec::new(),
            };
            let mut spans = Vec::new();
            for (k, out) in mine {
                let s = part.adj.len();
                scan_nodes(t, cuts[k]..cuts[k + 1], out, &mut part);
                spans.push((k, s, part.adj.len()));
                if part.damaged == u64::MAX {
                    break;
                }
            }
            (part, spans)
        };
        super::census::per_thread(typer, outs, run)
    };
    if parts.iter().any(|p| p.0.damaged == u64::MAX) {
        diagnostics.push(Diagnostic::error(TOO_MANY_EDGES));
        return None;
    }
    let interned = drop_uncounted_interned(typer, objects, &mut parts, off, &cuts, threads);
    let total: u64 = parts.iter().map(|p| p.0.adj.len() as u64).sum();
    if total >= u32::MAX as u64 - (n as u64 + 16) {
        diagnostics.push(Diagnostic::error(TOO_MANY_EDGES));
        return None;
    }
    let mut damaged = 0u64;
    let mut lists: Vec<Vec<(u64, u32)>> = Vec::with_capacity(parts.len());
    for (p, _) in &mut parts {
        lists.push(std::mem::take(&mut p.buffers));
        damaged += p.damaged;
    }
    drop(phase);
    let phase = a.phase("attributing buffers and roots");
    // Owned buffers: each live allocation that is not an object and holds a buffer
    // pointer (at or after its start, inside it) belongs to that pointer's owner — the
    // census's rule for "<list items>", "<dict keys>", "<dict values>", "<set table>".
    // Walked in pointer order: the first pointer into an allocation is its owner's, and
    // the allocations are found with a forward cursor instead of scanning every block.
    // Each thread's list is sorted on its core and the sorted lists merged (one sort of
    // the 2.5 M buffers of the mixed core took 0.14 s), then each half of the pointers
    // is attributed on a core.
    {
        use rayon::prelude::*;
        lists.par_iter_mut().for_each(|l| l.sort_unstable());
    }
    let buffers = merge_sorted(lists);
    let allocations = a.allocations();
    let core = &a.process.core;
    let attribute = |part: &[(u64, u32)], mut last: Option<u64>| {
        let mut hint = [0usize; 2];
        let mut adds: Vec<(u32, u64)> = Vec::new();
        for (i, &(p, node)) in part.iter().enumerate() {
            if spilled && i % (1 << 15) == (1 << 15) - 1 {
                c.release_objects();
                core.release_pages();
            }
            let Some((_, al)) = allocations.containing_near(p, &mut hint) else {
                continue;
            };
            if last == Some(al.addr.0) {
                continue;
            }
            last = Some(al.addr.0);
            if lookup_alloc(&lookup, al.addr.0, al.usable) {
                continue;
            }
            adds.push((node, al.size));
        }
        adds
    };
    let mid = buffers.len() / 2;
    // The second half starts as if after the first: an allocation that holds pointers
    // of both halves is its first pointer's (an allocation holding no pointer of the
    // first half's last one ends before any of the second half's).
    let before = match mid {
        0 => None,
        _ => allocations
            .containing_near(buffers[mid - 1].0, &mut [0usize; 2])
            .map(|(_, al)| al.addr.0),
    };
    let (lo, hi) = rayon::join(
        || attribute(&buffers[..mid], None),
        || attribute(&buffers[mid..], before),
    );
    drop(buffers);
    for (i, (node, size)) in lo.into_iter().chain(hi).enumerate() {
        if spilled && i % (1 << 18) == (1 << 18) - 1 {
            shallow_release.release();
        }
        let s = &mut shallow[node as usize];
        *s = (*s as u64 + size).min(u32::MAX as u64) as u32;
    }

    // Each node's reference count less the references found to it (in place: no array
    // of in-degrees), then the root's successors. Immortal counts (u32::MAX) stay.
    // Each core takes the references to its half of the nodes (reading every edge list
    // is cheaper than the random writes it halves).
    let dec = |mine: &mut [u32], first: usize| {
        for (p, _) in &parts {
            for &d in &p.adj {
                if let Some(r) = mine.get_mut((d as usize).wrapping_sub(first)) {
                    if *r != u32::MAX {
                        *r = r.saturating_sub(1);
                    }
                }
            }
        }
    };
    let half = rc.len() / 2;
    let (lo, hi) = rc.split_at_mut(half);
    rayon::join(|| dec(lo, 0), || dec(hi, half));
    let mut named = Vec::new();
    let mut root_succ: Vec<u32> = Vec::new();
    let mut roots: Vec<NamedRoot> = crate::python::roots::interpreter_roots(
        a.process,
        edges.minor,
        a.cpython_model.is_some_and(|m| m.free_threaded),
    );
    roots.extend(interned.map(|addr| NamedRoot {
        addr,
        kind: "interpreter",
        name: "interned strings".into(),
    }));
    roots.extend(frame_roots(a, &mut diagnostics));
    roots.extend(extra.named.iter().cloned());
    for r in roots {
        match lookup(r.addr) {
            Some(node) => {
                root_succ.push(node);
                named.push(Root {
                    node,
                    kind: r.kind,
                    name: r.name,
                });
            }
            // A frame's local may be a static object (None, a small int) or, in a
            // damaged core, garbage: not a node, no root.
            None if r.kind == "thread frame" => {}
            None => diagnostics.push(Diagnostic::warning(format!(
                "root {} at 0x{:x} is not a live object; not used",
                r.name, r.addr
            ))),
        }
    }
    // The interpreter's roots must be dicts (offsets can drift between micro releases).
    named.retain(|r| {
        let o = &c.objects()[r.node as usize - 1];
        r.kind != "interpreter" || c.type_of(o).special == Special::Dict
    });
    root_succ = named.iter().map(|r| r.node).collect();
    let mut native = Vec::new();
    let mut immortal = Vec::new();
    for (v, &r) in rc.iter().enumerate().skip(1) {
        if r == u32::MAX {
            immortal.push(v as u32);
        } else if r > 0 {
            native.push(v as u32);
        }
    }
    root_succ.extend_from_slice(&native);
    root_succ.extend_from_slice(&immortal);
    if total + root_succ.len() as u64 >= u32::MAX as u64 {
        diagnostics.push(Diagnostic::error(TOO_MANY_EDGES));
        return None;
    }
    // The root's edges first, then the edge lists joined range by range in node order,
    // each range's CSR ends moved from its thread's list to the joined one. (Joined only
    // now, with the roots known, so that nothing is shifted after: an insert at the front
    // of the joined list moved all of it.) The ranges are copied on every core, into
    // zeroed memory whose pages are first touched by the copy: one core writing the
    // whole list took 0.1 s on py20m, mostly in page faults. On a heap whose object list
    // is spilled (`crate::spill`), the joined list is written to its file (each range's
    // pages dropped behind it), beside the offsets and node sizes already there: a 10 GB
    // core's graph then holds about 8 bytes a node in memory fewer.
    let r = root_succ.len();
    let adj = Spilled::filled(total as usize + r, spilled, |adj, release| {
        use rayon::prelude::*;
        adj[..r].copy_from_slice(&root_succ);
        off[1] = r as u32;
        let mut copies = Vec::with_capacity(nranges);
        let (mut to_rest, mut off_rest) = (&mut adj[r..], &mut off[2..]);
        let mut at = r;
        for k in 0..nranges {
            let (w, j) = super::census::thread_of(k, threads);
            let (part, spans) = &parts[w];
            let (sk, s, e) = spans[j];
            debug_assert_eq!(sk, k);
            let (to, to2) = std::mem::take(&mut to_rest).split_at_mut(e - s);
            let (ends, off2) = std::mem::take(&mut off_rest).split_at_mut(cuts[k + 1] - cuts[k]);
            copies.push((to, &part.adj[s..e], ends, at as i64 - s as i64));
            (to_rest, off_rest, at) = (to2, off2, at + e - s);
        }
        copies.into_par_iter().for_each(|(to, from, ends, shift)| {
            to.copy_from_slice(from);
            release();
            for x in ends {
                *x = (*x as i64 + shift) as u32;
            }
            off_release.release();
        });
    });
    drop(root_succ);
    drop(parts);
    let (off, shallow) = (off_array, shallow_array);
    off.release();
    shallow.release();
    let nedges = adj.len() as u64;
    let csr = Csr { off, adj };
    if damaged > 0 {
        diagnostics.push(Diagnostic::warning(format!(
            "{damaged} containers have unreadable or impossible tables (damaged core?): their references are missing from the graph"
        )));
    }
    a.process.core.release_pages();
    c.objects_random_access(false);
    c.release_objects();
    drop(phase);
    let _phase = a.phase("dominator tree");
    // The dominator tree's node array in the reference counts' memory.
    // The retained bytes start as the node bytes, written (8 fresh bytes a node: their
    // page faults are most of it) on the other core while this one runs the dominator
    // tree's serial DFS and semidominator passes.
    let node_bytes = || {
        let mut low: Vec<u32> = Vec::with_capacity(n);
        // A node size saturated at u32::MAX is that many bytes, in the side table.
        let mut high = rustc_hash::FxHashMap::default();
        for part in shallow.chunks(dominators::RELEASE_EVERY) {
            if part.contains(&u32::MAX) {
                for (i, &b) in part.iter().enumerate() {
                    if b == u32::MAX {
                        high.insert((low.len() + i) as u32, b as u64);
                    }
                }
            }
            low.extend_from_slice(part);
            shallow.release();
        }
        (low, high)
    };
    // (Copied after the dominator tree instead, on a spilled 10 GB graph, the peak moved
    // to the owners' pass and did not go down: left beside it.)
    let (dominators::Tree { idom, order, inner }, (low, high)) =
        rayon::join(|| dominators::dominators_in(&csr, rc), node_bytes);
    let mut retained = RetainedBytes { low, high };
    // Retained counts in the edge offsets' memory when the edges go now (its pages are
    // already the process's: fresh ones cost more than the pass over them).
    let (csr, mut retained_count) = if a.needs.edges_unused {
        match csr.off {
            Spilled::Memory(mut off) => {
                off.truncate(n);
                off.fill(1);
                (None, off)
            }
            Spilled::File { .. } => (None, vec![1u32; n]),
        }
    } else {
        (Some(csr), vec![1u32; n])
    };
    retained_count[0] = 0;
    // The leaves set aside first: their totals are their own, and consecutive ones (by
    // node id) mostly share their dominator (a list's items), so a run is added at once.
    let (inner_nodes, leaves) = order.split_at(inner.min(order.len()));
    let mut add = |(d, b, k): (u32, u64, u32)| {
        retained.add(d, b);
        retained_count[d as usize] = retained_count[d as usize].saturating_add(k);
    };
    let mut run: Option<(u32, u64, u32)> = None;
    for (i, &v) in leaves.iter().enumerate() {
        if i % dominators::RELEASE_EVERY == dominators::RELEASE_EVERY - 1 {
            shallow.release();
        }
        let d = idom[v as usize];
        let b = shallow[v as usize] as u64;
        match &mut run {
            Some((rd, rb, rk)) if *rd == d => {
                *rb += b;
                *rk += 1;
            }
            _ => run.replace((d, b, 1)).into_iter().for_each(&mut add),
        }
    }
    run.into_iter().for_each(add);
    // Then the inner nodes, each after every node it dominates.
    for &v in inner_nodes.iter().skip(1).rev() {
        let d = idom[v as usize];
        retained.add(d, retained.get(v));
        let d = d as usize;
        retained_count[d] = retained_count[d].saturating_add(retained_count[v as usize]);
    }
    Some(Graph {
        csr,
        nodes: n,
        shallow,
        idom,
        order,
        inner,
        retained,
        retained_count,
        named,
        native,
        immortal,
        sorted,
        edges: nedges,
        diagnostics,
    })
}

/// The interned strings' dict, found without symbols as the largest dict whose every
/// entry maps an interned str to itself (`PyDict_SetDefault(interned, s, s)`: 3.8-3.11's
/// static `interned` in Objects/unicodeobject.c, 3.12+'s per-interpreter
/// `cached_objects.interned_strings`), and its references to mortal interned strings
/// taken out of its edge list: their reference counts leave those two out
/// (`Typer::str_interned`), so the dict no more holds them than a weak reference would.
/// With the references, a string only one object uses (an attrgetter's attribute names)
/// was nobody's; the process's own dominators, over `gc.get_referents` (which never sees
/// the untracked interned dict), give it to its user. Returns the dict's address.
fn drop_uncounted_interned(
    typer: &crate::python::objects::Typer,
    objects: &[Obj],
    parts: &mut [(EdgePart, Spans)],
    off: &mut [u32],
    cuts: &[usize],
    threads: usize,
) -> Option<u64> {
    let mut cands: Vec<(usize, SelfMap)> = parts
        .iter()
        .enumerate()
        .flat_map(|(w, p)| p.0.self_maps.iter().map(move |&m| (w, m)))
        .collect();
    cands.sort_unstable_by_key(|(_, m)| (std::cmp::Reverse(m.entries), m.node));
    let addr = |node: u32| objects[node as usize - 1].addr.0;
    let (w, m) = cands.into_iter().find(|(_, m)| {
        let items = typer.dict_items(addr(m.node), m.entries as usize + 1);
        items.len() as u64 == m.entries
            && items
                .iter()
                .all(|&(k, _)| typer.str_interned(k).is_some_and(|s| s != 0))
    })?;
    let (part, spans) = &mut parts[w];
    let mortal = |d: u32| typer.str_interned(addr(d)) == Some(1);
    remove_edges(&mut part.adj, spans, off, cuts, &m, mortal);
    debug_assert_eq!(
        super::census::thread_of(cuts.partition_point(|&c| c < m.node as usize) - 1, threads).0,
        w
    );
    Some(addr(m.node))
}

/// Take the edges of `m.node` that `drop` names out of its thread's edge list `adj`:
/// everything after them moves down, so the ends of the node's range's later nodes (node
/// v's end is `off[v + 1]`, relative to the thread's list; the node's own too), those of
/// the thread's later ranges, and those ranges' spans move with it.
fn remove_edges(
    adj: &mut Vec<u32>,
    spans: &mut Spans,
    off: &mut [u32],
    cuts: &[usize],
    m: &SelfMap,
    drop: impl Fn(u32) -> bool,
) {
    let mut kept = m.start;
    for i in m.start..m.end {
        let d = adj[i];
        if !drop(d) {
            adj[kept] = d;
            kept += 1;
        }
    }
    let dropped = m.end - kept;
    if dropped == 0 {
        return;
    }
    adj.copy_within(m.end.., kept);
    adj.truncate(adj.len() - dropped);
    let k = cuts.partition_point(|&c| c < m.node as usize) - 1;
    for (rk, s, e) in spans.iter_mut() {
        let first = if *rk == k {
            m.node as usize
        } else if *s >= m.end {
            *s -= dropped;
            cuts[*rk] + 1
        } else {
            continue;
        };
        *e -= dropped;
        for x in &mut off[first + 1..=cuts[*rk + 1] + 1] {
            *x -= dropped as u32;
        }
    }
}

/// Every thread's Python frames' local variables (the stacks analysis, round2-facts.md
/// §B): `thread 4412 frame serve() local 'batch'`. A 3.11+ frame lives in its thread's
/// data stack, not in an object, so without these its locals would look held from
/// native code.
fn frame_roots(a: &Analysis, diagnostics: &mut Diagnostics) -> Vec<NamedRoot> {
    let Some(m) = a.cpython_model else {
        return Vec::new();
    };
    let (cpython, cpython_ft) = match m.free_threaded {
        true => (Vec::new(), vec![m.clone()]),
        false => (vec![m.clone()], Vec::new()),
    };
    let models = super::Models {
        glibc: Vec::new(),
        cpython,
        cpython_ft,
    };
    let opts = super::threads::StackOptions {
        locals: true,
        ..Default::default()
    };
    let s = super::threads::stacks(a.process, &models, opts);
    let mut out = Vec::new();
    for t in &s.threads {
        let who = match (t.tid, &t.name) {
            (Some(tid), _) => format!("thread {tid}"),
            (None, Some(n)) => format!("thread {n:?}"),
            (None, None) => "thread ?".to_string(),
        };
        // A module's top-level frame lists its globals: they are named as module
        // globals, through sys.modules.
        for f in t.python.iter().filter(|f| f.function != "<module>") {
            for l in f.locals.iter().flatten() {
                if l.address.0 == 0 {
                    continue;
                }
                out.push(NamedRoot {
                    addr: l.address.0,
                    kind: "thread frame",
                    name: format!("{who} frame {}() local '{}'", f.function, l.name),
                });
            }
        }
    }
    if out.is_empty() && !s.threads.is_empty() {
        diagnostics.push(Diagnostic::info(
            "no thread frame locals were read: objects the running frames hold count as held from native code",
        ));
    }
    out
}

/// Sorted lists merged into one sorted list.
fn merge_sorted(mut lists: Vec<Vec<(u64, u32)>>) -> Vec<(u64, u32)> {
    while lists.len() > 1 {
        let b = lists.pop().unwrap_or_default();
        let a = lists.pop().unwrap_or_default();
        let mut out = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            if a[i] <= b[j] {
                out.push(a[i]);
                i += 1;
            } else {
                out.push(b[j]);
                j += 1;
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        lists.push(out);
    }
    lists.pop().unwrap_or_default()
}

/// Is there an object in the allocation at `m` (at +0, +16 or +32)?
fn lookup_alloc(lookup: &dyn Fn(u64) -> Option<u32>, m: u64, usable: u64) -> bool {
    [0u64, 16, 32]
        .iter()
        .any(|&off| off + 16 <= usable && lookup(m + off).is_some())
}

/// Bytes before the object in its allocation: GC head, and the 3.11+ pre-header.
pub fn gc_head(flags: u64, om: &crate::models::Objects) -> u64 {
    const F_HAVE_GC: u64 = 1 << 14;
    // free-threaded builds have no PyGC_Head (the model's gc_head is 0)
    let gc = if flags & F_HAVE_GC != 0 {
        om.gc_head
    } else {
        0
    };
    let pre = if flags & om.preheader_flags != 0 {
        16
    } else {
        0
    };
    gc + pre
}

impl Graph {
    /// Retained bytes of each type's instances taken together (what they keep alive
    /// between them, as Eclipse MAT's class histogram reports it): the retained sizes of
    /// the instances no other instance of the same type dominates, by type name. One
    /// iterative walk of the dominator tree with a per-type count of open ancestors.
    pub fn retained_by_type(&self, c: &Census) -> rustc_hash::FxHashMap<String, u64> {
        let kids = self.dom_children();
        let ntypes = c.type_infos.len();
        let mut open = vec![0u32; ntypes];
        let mut by = vec![0u64; ntypes];
        // (node, entered): exit events undo the count.
        let mut stack: Vec<(u32, bool)> = vec![(0, false)];
        while let Some((v, exit)) = stack.pop() {
            let ty = (v != 0).then(|| c.objects()[v as usize - 1].ty as usize);
            if exit {
                if let Some(t) = ty {
                    open[t] -= 1;
                }
                continue;
            }
            if let Some(t) = ty {
                if open[t] == 0 {
                    by[t] += self.retained_bytes(v);
                }
                open[t] += 1;
                stack.push((v, true));
            }
            for &w in kids.succ(v) {
                stack.push((w, false));
            }
        }
        let mut out = rustc_hash::FxHashMap::default();
        for (t, b) in by.into_iter().enumerate() {
            if b > 0 {
                *out.entry(c.type_infos[t].name.clone()).or_default() += b;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Addr;

    /// Objects at increasing addresses with gaps of every scale: within a granule,
    /// across buckets, across 1 GiB regions.
    fn objects(seed: u64, len: usize) -> Vec<Obj> {
        let mut x = seed | 1;
        let mut a = 0x7f00_0000_0000u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                a += 16
                    * match x % 100 {
                        0 => 1 << 27,
                        1..=4 => 1 << 17,
                        5..=20 => 1 + x % 64,
                        _ => 1 + x % 4,
                    };
                Obj {
                    addr: Addr(a),
                    alloc: 16,
                    ty: 0,
                }
            })
            .collect()
    }

    #[test]
    fn granule_index_finds_every_object_and_only_them() {
        for (seed, len) in [
            (1u64, 0usize),
            (2, 1),
            (3, 2),
            (4, 1000),
            (5, 40_000),
            (6, 3),
        ] {
            let objs = objects(seed, len);
            let ix = GranuleIndex::new(&objs, &|| {}).expect("in order");
            // The halves joined are the index one pass makes.
            let (first, buckets) = GranuleIndex::part(&objs, 0..objs.len(), &|| {}).unwrap();
            assert_eq!(ix.first, first, "seed {seed}");
            // (The bucket bases of the second half, shifted, enter the same tables.)
            let whole = GranuleIndex::from_parts(first, &buckets);
            assert_eq!(
                (ix.regions.clone(), ix.table.clone()),
                (whole.regions, whole.table)
            );
            for (i, o) in objs.iter().enumerate() {
                assert_eq!(ix.find(&objs, o.addr.0), Some(i as u32 + 1), "seed {seed}");
                assert_eq!(ix.find(&objs, o.addr.0 + 8), None, "seed {seed}");
            }
            assert_eq!(ix.find(&objs, 0x1000), None);
        }
    }

    /// Two threads, four ranges of two nodes each (thread 0: ranges 0 and 2, thread 1:
    /// 1 and 3); node 3 (range 1, thread 1) loses two of its three edges. Joined as the
    /// graph joins them, the lists must be the same as if they had never been there.
    #[test]
    fn removed_edges_leave_a_consistent_csr() {
        let cuts = [0usize, 2, 4, 6, 8];
        // Edges by node (1-based); node 3's 50 and 60 go.
        let edges: [&[u32]; 8] = [
            &[10],
            &[],
            &[40, 50, 60],
            &[70],
            &[80, 81],
            &[],
            &[90],
            &[91, 92],
        ];
        let mut off = vec![0u32; 10];
        let mut parts: Vec<(Vec<u32>, Spans)> = vec![(vec![], vec![]), (vec![], vec![])];
        for k in 0..4 {
            let (adj, spans) = &mut parts[k % 2];
            let s = adj.len();
            for v in cuts[k] + 1..=cuts[k + 1] {
                adj.extend_from_slice(edges[v - 1]);
                off[v + 1] = adj.len() as u32;
            }
            spans.push((k, s, adj.len()));
        }
        let m = SelfMap {
            entries: 3,
            node: 3,
            start: 0,
            end: 3,
        };
        let (adj, spans) = &mut parts[1];
        remove_edges(adj, spans, &mut off, &cuts, &m, |d| d == 50 || d == 60);
        // Join as `build` does: range by range, each range's ends shifted to the joined list.
        let mut joined = Vec::new();
        let mut ends = [0u32; 9];
        for k in 0..4 {
            let (adj, spans) = &parts[k % 2];
            let (_, s, e) = spans[k / 2];
            let shift = joined.len() as i64 - s as i64;
            joined.extend_from_slice(&adj[s..e]);
            for v in cuts[k] + 1..=cuts[k + 1] {
                ends[v] = (off[v + 1] as i64 + shift) as u32;
            }
        }
        let mut want: Vec<u32> = Vec::new();
        for (v, e) in edges.iter().enumerate() {
            want.extend(e.iter().copied().filter(|&d| d != 50 && d != 60));
            let start = if v == 0 { 0 } else { ends[v] as usize };
            let got = &joined[start..ends[v + 1] as usize];
            let exp: Vec<u32> = e.iter().copied().filter(|&d| d != 50 && d != 60).collect();
            assert_eq!(got, &exp[..], "node {}", v + 1);
        }
        assert_eq!(joined, want);
    }

    #[test]
    fn granule_index_refuses_objects_out_of_order() {
        let mut objs = objects(7, 5000);
        objs.swap(100, 101);
        assert!(GranuleIndex::new(&objs, &|| {}).is_none());
        let mut objs = objects(8, 5000);
        let last = objs.len() - 1;
        objs.swap(0, last);
        assert!(GranuleIndex::new(&objs, &|| {}).is_none());
        let mut objs = objects(9, 5000);
        objs[2500] = objs[2499];
        assert!(GranuleIndex::new(&objs, &|| {}).is_none());
    }
}
