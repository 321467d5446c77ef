//! The native heap as a graph: every used glibc chunk is a node (u32 id, address order),
//! every aligned word of a used chunk that points inside a used chunk is an edge (interior
//! pointers count), and the roots are what chap calls anchors (chap USERGUIDE.md,
//! "anchor point"): the registers of every thread, every thread's stack from its stack
//! pointer to the top of its mapping, and writable memory that is not the heap — the
//! modules' writable segments (C statics), and, as chap does "to avoid reporting false
//! leaks", any other writable mapping it cannot explain. pymalloc arenas are not such
//! memory: their live blocks (the Python objects) are roots, and their free blocks hold
//! stale pointers. Nor is `main_arena` (libc .data): its top and bin pointers point at
//! chunk headers, i.e. into the last word of the chunk before (chap's partition of the
//! address space claims the arena likewise). glibc's own tcache_perthread_struct chunks are anchored by the
//! allocator (the thread's TLS `tcache` slot, glibc malloc.c).
//!
//! - anchored: a chain of pointers from a root reaches the chunk;
//! - leaked: a used chunk that is not anchored;
//! - unreferenced: a leaked chunk no other leaked chunk points to.
//!
//! The scan runs once over the heap's bytes, in parallel over blocks of chunks, into one
//! CSR (the `dominators::Csr` of the Python graph); lookups are a binary search over the
//! chunk starts. Chunks are typed by the C++ vtable their first word points to
//! (`image::cxx`).

use super::dominators::Csr;
use super::Analysis;
use crate::addr::{Addr, Range};
use crate::alloc::glibc::Chunk;
use crate::error::{Diagnostic, Diagnostics};
use crate::image::core::Arch;
use crate::image::cxx::{FoundBy, Vtables};
use crate::image::process::Process;
use rayon::prelude::*;
use std::sync::Arc;

pub const NONE: u32 = u32::MAX;
/// Parent values at or above this are root indexes (`ROOT | i`).
const ROOT: u32 = 0x8000_0000;

/// Where an anchor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Register `reg` (index in the core's register set) of thread `thread` (index).
    Register { thread: u32, reg: u16 },
    /// A word of thread `thread`'s stack.
    Stack { thread: u32, at: u64 },
    /// A word of a module's writable memory (C statics) or of another writable mapping.
    Static { at: u64 },
    /// A word of a live pymalloc block (a Python object).
    Python { at: u64 },
    /// glibc's tcache_perthread_struct of a thread (held from its TLS).
    Tcache,
}

impl Anchor {
    pub fn kind(&self) -> &'static str {
        match self {
            Anchor::Register { .. } => "register",
            Anchor::Stack { .. } => "stack",
            Anchor::Static { .. } => "static",
            Anchor::Python { .. } => "python",
            Anchor::Tcache => "allocator",
        }
    }
}

pub struct NativeGraph {
    /// Every chunk of the walk (`GlibcHeap::chunks`, address order) is a node, so that the
    /// graph needs no copy of them; only used ones (in use in an arena, or mmapped) have
    /// edges, are targets, or count as anchored, leaked or unreferenced.
    nodes: usize,
    /// Which nodes are used chunks.
    used: Vec<bool>,
    /// The page index of the chunks, for `node_at`.
    index: PageIndex,
    /// Chunk -> chunks its words point into.
    pub csr: Csr,
    /// (node, anchor), in the order the roots were searched.
    pub roots: Vec<(u32, Anchor)>,
    /// BFS parent: a node, `ROOT | i` for the i-th root, NONE when not anchored.
    parent: Vec<u32>,
    /// Type of each chunk: index into `types` (0: no class).
    pub ty: Vec<u32>,
    /// Type names: `types[0]` is the untyped bucket.
    pub types: Vec<Arc<str>>,
    /// Classes recognised by symbol and by RTTI only (distinct vtables).
    pub vtables_by_symbol: u64,
    pub vtables_by_rtti: u64,
    pub edges: u64,
    pub diagnostics: Diagnostics,
}

/// The untyped bucket's name.
pub const UNTYPED: &str = "<untyped glibc>";

impl NativeGraph {
    pub fn nodes(&self) -> usize {
        self.nodes
    }
    /// Is node `n` a used chunk?
    pub fn is_used(&self, n: u32) -> bool {
        self.used[n as usize]
    }
    /// The chunk of node `n` (the walk's chunk list is the node list).
    pub fn chunk(a: &Analysis, n: u32) -> Chunk {
        a.glibc
            .as_ref()
            .expect("a native graph has a glibc heap")
            .chunks[n as usize]
    }
    /// The used chunk holding `addr` (between its user start and its usable end).
    pub fn node_at(&self, a: &Analysis, addr: u64) -> Option<u32> {
        let chunks = &a.glibc.as_ref()?.chunks;
        self.index
            .find(chunks, addr)
            .filter(|&v| self.used[v as usize])
    }
    pub fn anchored(&self, n: u32) -> bool {
        self.parent[n as usize] != NONE
    }
    /// The chain from a root to `n`: the root, then the nodes (n last); None when `n` is
    /// leaked.
    pub fn path(&self, n: u32) -> Option<((u32, Anchor), Vec<u32>)> {
        let mut chain = vec![n];
        let mut v = n;
        for _ in 0..self.nodes() + 1 {
            let p = self.parent[v as usize];
            if p == NONE {
                return None;
            }
            if p >= ROOT {
                chain.reverse();
                return Some((self.roots[(p - ROOT) as usize], chain));
            }
            chain.push(p);
            v = p;
        }
        None
    }
    pub fn type_name(&self, n: u32) -> &str {
        &self.types[self.ty[n as usize] as usize]
    }
    /// Leaked chunks, and which of them are unreferenced (no other leaked chunk points to
    /// them; a chunk pointing to itself does not count).
    pub fn leaked(&self) -> (Vec<u32>, Vec<u32>) {
        let n = self.nodes();
        let leaked: Vec<u32> = (0..n as u32)
            .filter(|&v| self.used[v as usize] && !self.anchored(v))
            .collect();
        let mut referenced = vec![false; n];
        for &v in &leaked {
            for &w in self.csr.succ(v) {
                if w != v {
                    referenced[w as usize] = true;
                }
            }
        }
        let unref = leaked
            .iter()
            .copied()
            .filter(|&v| !referenced[v as usize])
            .collect();
        (leaked, unref)
    }
}

/// The first chunk touching each 4 KiB page that holds chunk bytes: a word is looked up
/// by one hash probe and a binary search over the few chunks of its page, instead of a
/// binary search over every chunk (a cache miss per level on millions of chunks). The
/// table has at most one entry per page of heap, so it is bounded by the core's size.
struct PageIndex {
    first: rustc_hash::FxHashMap<u64, u32>,
    /// Chunks over `BIG_PAGES` pages (mmapped ones): by start, searched when the page
    /// table has no entry; their inner pages are not in the table, so a chunk's size
    /// read from a damaged core cannot make the table large.
    big: Vec<u32>,
}

/// Chunks that start in one page, at most (MINSIZE 32), plus the one before the page.
const PER_PAGE: usize = 4096 / 32 + 1;
const BIG_PAGES: u64 = 64;

impl PageIndex {
    fn new(chunks: &[Chunk]) -> PageIndex {
        let mut first = rustc_hash::FxHashMap::default();
        let mut big = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let s = c.user().0 >> 12;
            let e = (c.user().0 + c.usable().max(1) - 1) >> 12;
            if e - s > BIG_PAGES {
                big.push(i as u32);
                // Its first and last pages, where it shares pages with neighbours.
                first.entry(s).or_insert(i as u32);
                first.entry(e).or_insert(i as u32);
                continue;
            }
            for p in s..=e {
                first.entry(p).or_insert(i as u32);
            }
        }
        PageIndex { first, big }
    }
    #[inline]
    fn find(&self, chunks: &[Chunk], addr: u64) -> Option<u32> {
        let Some(&i) = self.first.get(&(addr >> 12)) else {
            // Inside a big chunk, or in no chunk.
            let k = self
                .big
                .partition_point(|&b| chunks[b as usize].user().0 <= addr);
            let b = *self.big.get(k.checked_sub(1)?)?;
            let c = &chunks[b as usize];
            return (addr < c.user().0 + c.usable()).then_some(b);
        };
        let i = i as usize;
        let w = &chunks[i..chunks.len().min(i + PER_PAGE)];
        let k = w.partition_point(|c| c.user().0 <= addr);
        if k == 0 {
            return None;
        }
        let c = &w[k - 1];
        (addr < c.user().0 + c.usable()).then_some((i + k - 1) as u32)
    }
}

/// Every aligned 8-byte word of `[start, end)` that the core or a verified file holds.
fn words(p: &Process, start: u64, end: u64, mut f: impl FnMut(u64, u64)) {
    let start = (start + 7) & !7;
    if end <= start {
        return;
    }
    p.space
        .for_each_slice(Range::new(Addr(start), Addr(end)), |at, bytes| {
            // Regions start page-aligned, so a slice of an aligned range is aligned.
            for (i, w) in bytes.chunks_exact(8).enumerate() {
                f(
                    at.0 + 8 * i as u64,
                    u64::from_le_bytes(w.try_into().unwrap()),
                );
            }
            true
        });
}

/// x86_64 `user_regs_struct` (arch/x86/include/asm/user_64.h) and aarch64 `user_pt_regs`
/// names by index in the core's register set.
pub fn register_name(arch: Arch, i: usize) -> String {
    const X86: [&str; 27] = [
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
        "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds",
        "es", "fs", "gs",
    ];
    match arch {
        Arch::X86_64 => X86
            .get(i)
            .map_or_else(|| format!("reg{i}"), |s| s.to_string()),
        Arch::Aarch64 => match i {
            0..=30 => format!("x{i}"),
            31 => "sp".into(),
            32 => "pc".into(),
            _ => format!("reg{i}"),
        },
    }
}

/// Build the native graph of the analysed process (None without a glibc heap).
pub fn build(a: &Analysis) -> Option<NativeGraph> {
    let g = a.glibc.as_ref()?;
    let p = a.process;
    let mut diagnostics = Diagnostics::default();
    let chunks: &[Chunk] = &g.chunks;
    let n = chunks.len();
    let used: Vec<bool> = chunks.iter().map(|c| c.state().is_live()).collect();
    if n >= ROOT as usize {
        diagnostics.push(Diagnostic::error(
            "too many chunks for the native reference graph",
        ));
        return None;
    }
    let lo = chunks.first().map_or(u64::MAX, |c| c.user().0);
    let hi = chunks.last().map_or(0, |c| c.user().0 + c.usable());
    let index = PageIndex::new(chunks);
    let lookup = |v: u64| -> Option<u32> {
        if v < lo || v >= hi {
            return None;
        }
        index.find(chunks, v).filter(|&i| used[i as usize])
    };

    // Edges: blocks of chunks scanned in parallel, each into its own CSR piece.
    const BLOCK: usize = 1 << 14;
    let pieces: Vec<(Vec<u32>, Vec<u32>)> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let r = b * BLOCK..((b + 1) * BLOCK).min(n);
            let mut counts = Vec::with_capacity(r.len());
            let mut adj = Vec::new();
            let block = &chunks[r];
            // The block's bytes as one slice when one region of the core holds them all
            // (an arena heap does): no region lookup per chunk.
            let base = block[0].user().0;
            let last = block[block.len() - 1];
            let bytes = p
                .space
                .slice(
                    Addr(base),
                    (last.user().0 + last.usable()).saturating_sub(base),
                )
                .filter(|_| base % 8 == 0);
            for c in block {
                if !c.state().is_live() {
                    counts.push(0);
                    continue;
                }
                let before = adj.len();
                let s = c.user().0;
                match bytes {
                    Some(b) => {
                        let o = (s - base) as usize;
                        let len = (c.usable() as usize) & !7;
                        for w in b[o..o + len].chunks_exact(8) {
                            if let Some(d) = lookup(u64::from_le_bytes(w.try_into().unwrap())) {
                                adj.push(d);
                            }
                        }
                    }
                    None => words(p, s, s + c.usable(), |_, v| {
                        if let Some(d) = lookup(v) {
                            adj.push(d);
                        }
                    }),
                }
                // One edge per target is enough for reachability and paths.
                let e = &mut adj[before..];
                e.sort_unstable();
                let mut k = 0;
                for i in 0..e.len() {
                    if i == 0 || e[i] != e[k - 1] {
                        e[k] = e[i];
                        k += 1;
                    }
                }
                adj.truncate(before + k);
                counts.push(k as u32);
            }
            (counts, adj)
        })
        .collect();
    let total: usize = pieces.iter().map(|p| p.1.len()).sum();
    if total >= u32::MAX as usize {
        diagnostics.push(Diagnostic::error(
            "the native reference graph has more than 4 billion edges; leaks are not computed",
        ));
        return None;
    }
    let mut off = Vec::with_capacity(n + 1);
    let mut adj = Vec::with_capacity(total);
    off.push(0u32);
    for (counts, a) in pieces {
        let mut o = *off.last().unwrap();
        for c in counts {
            o += c;
            off.push(o);
        }
        adj.extend_from_slice(&a);
    }
    let csr = Csr {
        off: off.into(),
        adj: adj.into(),
    };

    // Roots, in the order `why` prefers them: statics, stacks, registers, Python objects,
    // other writable memory, the allocator's own.
    let mut roots: Vec<(u32, Anchor)> = Vec::new();
    // Memory that is heap, not anchor: arena heaps (their free chunks hold stale
    // pointers), mmapped chunks, pymalloc arenas (scanned block by block below).
    let mut heap: Vec<(u64, u64)> = Vec::new();
    for ar in &g.arenas {
        heap.extend(ar.heaps.iter().map(|h| (h.address.0, h.address.0 + h.size)));
    }
    // Chunks of the arenas are inside their heaps; mmapped chunks are mappings of their own.
    for c in chunks
        .iter()
        .filter(|c| c.state() == crate::alloc::glibc::ChunkState::Mmapped)
    {
        heap.push((c.addr.0, c.addr.0 + c.size()));
    }
    heap.extend(g.bookkeeping.iter().copied());
    if let Some(py) = &a.pymalloc {
        heap.extend(
            py.arena_list
                .iter()
                .map(|ar| (ar.address.0, ar.address.0 + py.arena_size)),
        );
    }
    heap.sort_unstable();
    let threads = &p.core.threads;
    let stack_of = |r: Range| threads.iter().position(|t| r.contains(t.sp));
    // The top of a thread's stack: its mapping's end, or, for a glibc thread whose
    // thread pointer is in the same mapping (x86_64, TLS variant II: the struct pthread
    // is the stack mapping's top, nptl/allocatestack.c allocate_stack), the page after
    // its TCB (`struct pthread` is under 4 KiB); past that is the next mapping's guard.
    fn stack_top(arch: Arch, t: &crate::image::core::notes::Thread, r: Range) -> u64 {
        match (arch, t.thread_pointer) {
            (Arch::X86_64, Some(tp)) if r.contains(tp) && tp > t.sp => {
                let top = (tp.0 + 0x1000 + 0xfff) & !0xfff;
                top.min(r.end.0)
            }
            _ => r.end.0,
        }
    }
    // Writable segments minus the heap: (start, end, is module memory, thread whose stack).
    let mut module_ranges: Vec<(u64, u64)> = p
        .modules
        .modules
        .iter()
        .flat_map(|m| p.writable_ranges(m))
        .map(|r| (r.start.0, r.end.0))
        .collect();
    module_ranges.sort_unstable();
    let in_module = |a: u64| {
        let i = module_ranges.partition_point(|r| r.0 <= a);
        i > 0 && a < module_ranges[i - 1].1
    };
    let mut statics: Vec<(u64, u64)> = Vec::new();
    let mut others: Vec<(u64, u64)> = Vec::new();
    let mut stacks: Vec<(u64, u64, u32)> = Vec::new();
    for s in &p.core.segments {
        if s.flags & 2 == 0 {
            continue;
        }
        let r = s.range();
        let mut start = r.start.0;
        if stack_of(r).is_some() {
            // Every thread whose stack pointer is in this mapping: adjacent thread stacks
            // are one mapping when their guard pages are not mappings of their own
            // (glibc 2.42+ installs them with MADV_GUARD_INSTALL, nptl/allocatestack.c).
            for (t, th) in threads.iter().enumerate() {
                if r.contains(th.sp) {
                    stacks.push((th.sp.0, stack_top(p.core.arch, th, r), t as u32));
                }
            }
            continue;
        }
        let end = r.end.0;
        let i = heap.partition_point(|&(_, e)| e <= start);
        let mut push = |s: u64, e: u64| {
            if in_module(s) {
                statics.push((s, e));
            } else {
                others.push((s, e));
            }
        };
        for &(hs, he) in &heap[i..] {
            if hs >= end {
                break;
            }
            if hs > start {
                push(start, hs);
            }
            start = start.max(he);
        }
        if start < end {
            push(start, end);
        }
    }
    let scan_roots = |ranges: &[(u64, u64)],
                      mk: &(dyn Fn(u64) -> Anchor + Sync),
                      roots: &mut Vec<(u32, Anchor)>| {
        let found: Vec<Vec<(u32, Anchor)>> = ranges
            .par_iter()
            .map(|&(s, e)| {
                let mut out = Vec::new();
                words(p, s, e, |at, v| {
                    if let Some(d) = lookup(v) {
                        out.push((d, mk(at)));
                    }
                });
                out
            })
            .collect();
        for f in found {
            roots.extend(f);
        }
    };
    scan_roots(&statics, &|at| Anchor::Static { at }, &mut roots);
    for &(s, e, t) in &stacks {
        words(p, s, e, |at, v| {
            if let Some(d) = lookup(v) {
                roots.push((d, Anchor::Stack { thread: t, at }));
            }
        });
    }
    for (ti, t) in threads.iter().enumerate() {
        for (ri, &r) in t.regs.iter().enumerate() {
            if let Some(d) = lookup(r) {
                roots.push((
                    d,
                    Anchor::Register {
                        thread: ti as u32,
                        reg: ri as u16,
                    },
                ));
            }
        }
    }
    if let Some(py) = &a.pymalloc {
        // Live blocks in batches: no list of every block (tens of millions) is kept.
        let mut batch: Vec<(u64, u64)> = Vec::with_capacity(1 << 16);
        for b in py.blocks() {
            batch.push((b.addr.0, b.addr.0 + b.size as u64));
            if batch.len() == batch.capacity() {
                scan_roots(&batch, &|at| Anchor::Python { at }, &mut roots);
                batch.clear();
            }
        }
        scan_roots(&batch, &|at| Anchor::Python { at }, &mut roots);
    }
    scan_roots(&others, &|at| Anchor::Static { at }, &mut roots);
    for t in &g.tcaches {
        if let Some(d) = lookup(t.address.0) {
            roots.push((d, Anchor::Tcache));
        }
    }

    if std::env::var_os("COREHEAP_DEBUG_NATIVE").is_some() {
        for (d, an) in &roots {
            if !matches!(an, Anchor::Static { .. }) {
                eprintln!(
                    "root {:?} -> chunk 0x{:x}",
                    an,
                    chunks[*d as usize].user().0
                );
            }
        }
    }
    // Anchored: BFS from every root, in root order.
    let mut parent = vec![NONE; n];
    let mut queue = std::collections::VecDeque::new();
    for (i, &(d, _)) in roots.iter().enumerate() {
        if parent[d as usize] == NONE {
            parent[d as usize] = ROOT | i as u32;
            queue.push_back(d);
        }
    }
    while let Some(v) = queue.pop_front() {
        for &w in csr.succ(v) {
            if parent[w as usize] == NONE {
                parent[w as usize] = v;
                queue.push_back(w);
            }
        }
    }

    let t = classify(p, chunks);
    let edges = csr.adj.len() as u64;
    Some(NativeGraph {
        nodes: n,
        used,
        index,
        csr,
        roots,
        parent,
        ty: t.ty,
        types: t.types,
        vtables_by_symbol: t.by_symbol,
        vtables_by_rtti: t.by_rtti,
        edges,
        diagnostics,
    })
}

impl NativeGraph {
    /// What each class's instances keep alive between them (Eclipse MAT's class retained
    /// size, as `Graph::retained_by_type` for Python): the dominator tree of the anchored
    /// chunks under one virtual root whose successors are the roots' chunks; a class's
    /// retained set is the subtrees of its instances that no other instance of the class
    /// dominates. A container's buffer and nodes that only its owner reaches are in the
    /// owner's retained set (a `Cache` retains its vector's buffer and the entries).
    /// Per type index: (retained count, retained bytes).
    pub fn retained_by_type(&self, a: &Analysis) -> Vec<(u64, u64)> {
        let Some(g) = a.glibc.as_ref() else {
            return Vec::new();
        };
        let n = self.nodes;
        // Node v of the graph is v + 1 here; 0 is the virtual root.
        let mut roots: Vec<u32> = self.roots.iter().map(|r| r.0 + 1).collect();
        roots.sort_unstable();
        roots.dedup();
        let k = roots.len() as u32;
        let mut off = Vec::with_capacity(n + 2);
        off.push(0u32);
        off.push(k);
        off.extend(self.csr.off[1..].iter().map(|o| o + k));
        let mut adj = roots;
        adj.extend(self.csr.adj.iter().map(|w| w + 1));
        let csr = Csr {
            off: off.into(),
            adj: adj.into(),
        };
        let super::dominators::Tree { idom, order, .. } = super::dominators::dominators(&csr);
        drop(csr);
        let size = |v: u32| {
            if v == 0 {
                0
            } else {
                g.chunks[v as usize - 1].size()
            }
        };
        let mut bytes: Vec<u64> = (0..=n as u32).map(size).collect();
        let mut count: Vec<u64> = (0..=n as u32).map(|v| (v != 0) as u64).collect();
        for &v in order.iter().skip(1).rev() {
            let d = idom[v as usize] as usize;
            bytes[d] += bytes[v as usize];
            count[d] += count[v as usize];
        }
        // Dominator tree children (CSR), then one walk with a per-type open count.
        let mut coff = vec![0u32; n + 2];
        for &v in order.iter().skip(1) {
            coff[idom[v as usize] as usize + 1] += 1;
        }
        for i in 0..=n {
            coff[i + 1] += coff[i];
        }
        let mut fill = coff.clone();
        let mut kids = vec![0u32; coff[n + 1] as usize];
        for &v in order.iter().skip(1) {
            let d = idom[v as usize] as usize;
            kids[fill[d] as usize] = v;
            fill[d] += 1;
        }
        drop(fill);
        let nt = self.types.len();
        let mut open = vec![0u32; nt];
        let mut out = vec![(0u64, 0u64); nt];
        let mut stack: Vec<(u32, bool)> = vec![(0, false)];
        while let Some((v, exit)) = stack.pop() {
            let t = (v != 0).then(|| self.ty[v as usize - 1] as usize);
            if exit {
                if let Some(t) = t {
                    open[t] -= 1;
                }
                continue;
            }
            if let Some(t) = t {
                if open[t] == 0 {
                    out[t].0 += count[v as usize];
                    out[t].1 += bytes[v as usize];
                }
                open[t] += 1;
                stack.push((v, true));
            }
            let c = &kids[coff[v as usize] as usize..coff[v as usize + 1] as usize];
            stack.extend(c.iter().map(|&w| (w, false)));
        }
        out
    }
}

/// The C++ class of each chunk, by the vtable its first word points to.
pub struct Classes {
    /// Per chunk: index into `types` (0: no class).
    pub ty: Vec<u32>,
    pub types: Vec<Arc<str>>,
    /// Distinct vtables named by a `_ZTV` symbol, and by RTTI alone.
    pub by_symbol: u64,
    pub by_rtti: u64,
}

/// Classes of `chunks` (free chunks stay untyped: their first word is a free-list link).
pub fn classify(p: &Process, chunks: &[Chunk]) -> Classes {
    let mut vt = Vtables::new(p);
    let mut types: Vec<Arc<str>> = vec![UNTYPED.into()];
    let mut index: rustc_hash::FxHashMap<Arc<str>, u32> = Default::default();
    let mut ty = vec![0u32; chunks.len()];
    let mut by_sym = rustc_hash::FxHashSet::default();
    let mut by_rtti = rustc_hash::FxHashSet::default();
    for (i, c) in chunks.iter().enumerate() {
        if c.usable() < 8 || !c.state().is_live() {
            continue;
        }
        let Ok(v) = p.space.read_u64(c.user()) else {
            continue;
        };
        if !vt.candidate(v) {
            continue;
        }
        if let Some((name, how)) = vt.class_of(v) {
            match how {
                FoundBy::Symbol => by_sym.insert(v),
                FoundBy::Rtti => by_rtti.insert(v),
            };
            let k = *index.entry(name.clone()).or_insert_with(|| {
                types.push(name);
                types.len() as u32 - 1
            });
            ty[i] = k;
        }
    }
    Classes {
        ty,
        types,
        by_symbol: by_sym.len() as u64,
        by_rtti: by_rtti.len() as u64,
    }
}

/// How a root is named: `static g_cache (libfoo.so .bss+0x40)`, `thread 4412 stack
/// 0x7ffd1000 (sp+0x38)`, `thread 4412 register rbx`, `Python object at 0x7f..`.
pub fn root_name(a: &Analysis, anchor: &Anchor) -> String {
    let p = a.process;
    let threads = &p.core.threads;
    let tid = |t: u32| threads.get(t as usize).map_or(0, |t| t.tid);
    match *anchor {
        Anchor::Register { thread, reg } => format!(
            "thread {} register {}",
            tid(thread),
            register_name(p.core.arch, reg as usize)
        ),
        Anchor::Stack { thread, at } => {
            let sp = threads.get(thread as usize).map_or(0, |t| t.sp.0);
            format!(
                "thread {} stack 0x{at:x} (sp+0x{:x})",
                tid(thread),
                at.saturating_sub(sp)
            )
        }
        Anchor::Static { at } => static_name(p, at),
        Anchor::Python { at } => python_holder(a, at)
            .unwrap_or_else(|| format!("Python memory (pymalloc block) at 0x{at:x}")),
        Anchor::Tcache => "glibc's tcache_perthread_struct (thread TLS)".into(),
    }
}

/// The Python object whose allocation holds the word at `at`: `Python object
/// _sqlite3.Connection at 0x7f.. (+0x10)` — its native memory is what it owns.
fn python_holder(a: &Analysis, at: u64) -> Option<String> {
    let c = a.census.as_ref()?;
    let o = a.object_at(at)?;
    Some(format!(
        "Python object {} at {} (+0x{:x})",
        c.type_of(&o).name,
        o.addr,
        at.wrapping_sub(o.addr.0)
    ))
}

/// `static NAME (module .section+0xOFF)`, as much of it as symbols and sections tell.
pub fn static_name(p: &Process, at: u64) -> String {
    let Some(m) = p.modules.containing(Addr(at)).or_else(|| {
        // The .bss beyond the file's last mapping belongs to the module before it.
        p.modules
            .modules
            .iter()
            .find(|m| p.writable_ranges(m).iter().any(|r| r.contains(Addr(at))))
    }) else {
        return format!("writable memory 0x{at:x} (no module)");
    };
    let place = match m.section_at(Addr(at)) {
        Some((sec, off)) => format!("{} {sec}+0x{off:x}", m.name()),
        None => format!("{}+0x{:x}", m.name(), at - m.base.0),
    };
    match m.symbol_at(Addr(at)) {
        Some((sym, off)) => {
            let name = demangle(sym);
            if off == 0 {
                format!("static {name} ({place})")
            } else {
                format!("static {name}+0x{off:x} ({place})")
            }
        }
        None => format!("static memory ({place})"),
    }
}

/// A symbol's demangled name (C names unchanged).
pub fn demangle(sym: &str) -> String {
    if sym.starts_with("_Z") {
        if let Ok(s) = cpp_demangle::Symbol::new(sym.as_bytes()) {
            if let Ok(t) = s.demangle() {
                return t;
            }
        }
    }
    sym.to_string()
}

/// The first bytes of a chunk as hex and as text (`.` for what is not printable ASCII).
pub fn first_bytes(p: &Process, addr: u64, usable: u64, n: usize) -> (String, String) {
    let k = (usable as usize).min(n);
    let mut buf = vec![0u8; k];
    if p.space.read(Addr(addr), &mut buf).is_err() {
        return (String::new(), String::new());
    }
    let hex = buf
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    let text = buf
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    (hex, text)
}

#[cfg(test)]
mod tests {
    //! The native graph on a fake glibc heap (alloc::glibc's test harness): anchors from a
    //! module's writable memory, the stack above and below the stack pointer, a register;
    //! interior pointers, a leaked cycle, a self-pointing chunk; and a class named by RTTI
    //! alone in a read-only mapping.
    use super::*;
    use crate::alloc::glibc::tests::{model, G, HEAP, LIBC_RW, STACK};
    use crate::analysis::{leaks, why, Analysis, Models};
    use crate::progress::NoProgress;

    /// A module's read-only data (a vtable with its RTTI): not in the heap, not writable.
    const RO: u64 = 0x7f00_2000_0000;

    struct Fixture {
        g: G,
        /// User addresses by role.
        statik: u64,
        interior: u64,
        stack: u64,
        below_sp: u64,
        register: u64,
        cyc: [u64; 2],
        alone: u64,
        selfish: u64,
        widget: u64,
    }

    fn fixture() -> Fixture {
        let mut g = G::new(model("2.35-2.41"), true);
        let user = |g: &mut G, size| g.alloc(size) + 16;
        let statik = user(&mut g, 0x40);
        let interior = user(&mut g, 0x30);
        let stack = user(&mut g, 0x30);
        let below_sp = user(&mut g, 0x30);
        let register = user(&mut g, 0x50);
        let cyc = [user(&mut g, 0x30), user(&mut g, 0x30)];
        let alone = user(&mut g, 0x60);
        let selfish = user(&mut g, 0x30);
        let widget = user(&mut g, 0x30);
        g.finish();
        let tc = &mut g.tc;
        // A C static in libc's writable mapping (past main_arena and mp_).
        tc.u64(LIBC_RW + 0x1800, statik)
            // Interior pointer: statik's word +0x18 points 8 bytes into `interior`.
            .u64(statik + 0x18, interior + 8)
            // Above the stack pointer (STACK + 0x100): a live slot; below it: stale.
            .u64(STACK + 0x180, stack)
            .u64(STACK + 0x80, below_sp)
            // rbx (user_regs_struct index 5) of the only thread.
            .reg(0, 5, register)
            // A leaked two-node cycle, and a chunk pointing to itself.
            .u64(cyc[0], cyc[1])
            .u64(cyc[1], cyc[0])
            .u64(selfish + 8, selfish)
            // The widget: its vtable in read-only memory, named by its RTTI only, and
            // held from the stack.
            .u64(STACK + 0x188, widget)
            .u64(widget, RO + 0x10);
        // The module's first page (its ELF header) is not in the core: a module by its
        // name, as libc is here.
        tc.segment(RO, 0x1000, 4)
            .file(RO - 0x1000, RO, "/nonexistent/libwidget.so")
            .file(RO, RO + 0x1000, "/nonexistent/libwidget.so");
        // vtable: offset-to-top 0, typeinfo at RO+0x100; typeinfo: its own vptr (into
        // the same module), then the mangled name at RO+0x200.
        tc.u64(RO, 0)
            .u64(RO + 8, RO + 0x100)
            .u64(RO + 0x100, RO + 0x810)
            .u64(RO + 0x108, RO + 0x200)
            .bytes(RO + 0x200, b"N4shop6WidgetE\0");
        Fixture {
            g,
            statik,
            interior,
            stack,
            below_sp,
            register,
            cyc,
            alone,
            selfish,
            widget,
        }
    }

    #[test]
    fn anchored_leaked_and_unreferenced_as_chap_defines_them() {
        let f = fixture();
        let p = f.g.tc.process();
        let models = Models {
            glibc: vec![f.g.m.clone()],
            cpython: Vec::new(),
            cpython_ft: Vec::new(),
        };
        let a = Analysis::run(&p, &models, &NoProgress).unwrap();
        let n = a.native().unwrap();
        let node = |x: u64| n.node_at(&a, x).unwrap();
        for x in [f.statik, f.interior, f.stack, f.register, f.widget] {
            assert!(n.anchored(node(x)), "0x{x:x} should be anchored");
        }
        // An interior address finds its chunk; a free chunk's address finds none.
        assert_eq!(n.node_at(&a, f.interior + 0x10), Some(node(f.interior)));
        assert_eq!(n.node_at(&a, HEAP + 0x10), n.node_at(&a, HEAP + 0x10));
        let (leaked, unref) = n.leaked();
        let mut want: Vec<u32> = [f.below_sp, f.cyc[0], f.cyc[1], f.alone, f.selfish]
            .iter()
            .map(|&x| node(x))
            .collect();
        want.sort();
        assert_eq!(leaked, want);
        // The cycle's nodes point to each other; the self-pointer does not count.
        let mut want: Vec<u32> = [f.below_sp, f.alone, f.selfish]
            .iter()
            .map(|&x| node(x))
            .collect();
        want.sort();
        assert_eq!(unref, want);
        assert_eq!(n.type_name(node(f.widget)), "shop::Widget");
        assert_eq!(n.vtables_by_rtti, 1);
        // The widget retains itself; the untyped chunks' retained sets cover every
        // anchored untyped chunk once (`statik` dominates `interior`).
        let r = n.retained_by_type(&a);
        let wt = n.ty[node(f.widget) as usize] as usize;
        assert_eq!(r[wt], (1, 0x30));
        let anchored_untyped = (0..n.nodes() as u32)
            .filter(|&v| n.is_used(v) && n.anchored(v) && n.ty[v as usize] == 0)
            .count() as u64;
        assert_eq!(r[0].0, anchored_untyped);

        let l = leaks::leaks(&a, 10).unwrap();
        assert!(!l.python);
        let nl = l.native.unwrap();
        assert_eq!((nl.leaked.count, nl.unreferenced.count), (5, 3));
        assert_eq!(nl.used.count, nl.anchored.count + 5);
        let s = nl
            .samples
            .iter()
            .find(|s| s.address.0 == f.selfish)
            .unwrap();
        assert_eq!(s.allocator, "glibc");
        assert!(s.hex.starts_with("00 00 00 00"), "{}", s.hex);

        let root = |x: u64| {
            let y = why::why(&a, &why::Target::Address(x), 1, None).unwrap();
            let p = &y.paths[0];
            assert_eq!(p.allocator, Some("glibc"));
            (
                p.root.as_ref().map(|r| (r.kind.clone(), r.name.clone())),
                p.steps.iter().map(|s| s.via.clone()).collect::<Vec<_>>(),
            )
        };
        let (r, steps) = root(f.interior + 4);
        assert_eq!(r.as_ref().unwrap().0, "static");
        assert!(r.unwrap().1.contains("libc-2.35.so"));
        assert_eq!(steps[1], "[+0x18] (interior +0x8)");
        let (r, _) = root(f.stack);
        assert_eq!(
            r.unwrap(),
            (
                "stack".into(),
                "thread 77 stack 0x7ffd00000180 (sp+0x80)".into()
            )
        );
        let (r, _) = root(f.register);
        assert_eq!(
            r.unwrap(),
            ("register".into(), "thread 77 register rbx".into())
        );
        assert_eq!(root(f.alone).0, None);
    }

    #[test]
    fn register_names_follow_the_kernel_layouts() {
        assert_eq!(register_name(Arch::X86_64, 3), "r12");
        assert_eq!(register_name(Arch::X86_64, 19), "rsp");
        assert_eq!(register_name(Arch::Aarch64, 19), "x19");
        assert_eq!(register_name(Arch::Aarch64, 31), "sp");
        assert_eq!(register_name(Arch::X86_64, 99), "reg99");
    }
}
