//! Dominator tree of a graph in CSR form (u32 node ids, root 0): iterative semi-NCA
//! (Georgiadis 2005, as LLVM's GenericDomTreeConstruction.h; round2-facts.md §D.4). No
//! recursion and no per-node sets: a DFS with an explicit stack, predecessor lists in CSR,
//! and path compression with an explicit stack. About 7 u32 arrays of the node count
//! plus the predecessor CSR.

use super::Bits;
use crate::spill::Spilled;

/// Steps between two `Csr::release` calls of a long pass.
pub const RELEASE_EVERY: usize = 1 << 21;

/// Unreached nodes get this as their immediate dominator.
pub const NONE: u32 = u32::MAX;
/// Preorder mark, before the DFS, of a node that would be a leaf set aside if reached.
const CANDIDATE: u32 = u32::MAX - 2;
/// Preorder mark of a leaf set aside: this bit with its only predecessor's node id.
const LEAF: u32 = 1 << 31;

/// Successor lists: `adj[off[v] .. off[v+1]]`, in memory or, for a large heap, in files
/// (`crate::spill`).
pub struct Csr {
    pub off: Spilled<u32>,
    pub adj: Spilled<u32>,
}

impl Csr {
    /// Drop the page-table entries of spilled lists (`Spilled::release`): passes over
    /// the whole graph call it every [`RELEASE_EVERY`] steps.
    pub fn release(&self) {
        self.off.release();
        self.adj.release();
    }
    #[inline]
    pub fn succ(&self, v: u32) -> &[u32] {
        &self.adj[self.off[v as usize] as usize..self.off[v as usize + 1] as usize]
    }
    pub fn nodes(&self) -> usize {
        self.off.len() - 1
    }
}

/// A dominator tree: immediate dominators by node (root 0 dominates itself; unreachable
/// nodes are NONE), and the reached nodes in an order where each comes after its
/// dominator: the inner nodes in DFS preorder from the root, then the leaves set aside, by
/// node id.
pub struct Tree {
    pub idom: Vec<u32>,
    pub order: Vec<u32>,
    /// `order[inner..]` are leaves set aside: they dominate no node, so a pass that only
    /// reads what their dominators got can take them in any order, or in parallel.
    pub inner: usize,
}

pub fn dominators(g: &Csr) -> Tree {
    dominators_in(g, Vec::new())
}

/// [`dominators`], with the array of immediate dominators in `scratch`'s memory (a
/// buffer of the caller's that is dead now: its pages are already the process's, where a
/// fresh array of 4 bytes a node is as many page faults).
pub fn dominators_in(g: &Csr, scratch: Vec<u32>) -> Tree {
    // Leaves are set aside only while node ids stay below the LEAF bit and clear of the
    // marks (2^31 - 4 nodes, a heap of some 100 GB; above it every node takes the general
    // path, which gives the same tree).
    dominators_with(g, g.nodes() <= (LEAF as usize) - 4, scratch)
}

fn dominators_with(g: &Csr, set_aside: bool, scratch: Vec<u32>) -> Tree {
    let n = g.nodes();
    if n == 0 {
        return Tree {
            idom: Vec::new(),
            order: Vec::new(),
            inner: 0,
        };
    }
    // Leaves with a single incoming edge (a float in a list, a str in a tuple: most
    // objects of a Python heap) are dominated by that edge's source and dominate nothing:
    // they are set aside during the DFS and take no part in the semidominator passes,
    // which then run on the inner nodes only. A leaf's mark in `pre` holds its
    // predecessor's node id under the LEAF bit (no list of leaves: 8 bytes a leaf on a
    // heap of floats).
    // Preorder numbers (and marks) by node; below `inner` a node is an inner node.
    let inner = if set_aside { LEAF } else { CANDIDATE };
    let mut pre = scratch;
    pre.clear();
    if set_aside {
        // Marked before the DFS, so that the DFS reads one word per edge. Nodes with one
        // incoming edge are found with two bits a node (seen, seen again) on each core,
        // for its half of the edges: 6 MB for 25 M nodes, where a byte a node was a cache
        // miss per edge.
        let once = single_predecessor(&g.adj, n, &|| g.release());
        pre.extend((0..n).map(|w| {
            if w % RELEASE_EVERY == RELEASE_EVERY - 1 {
                g.release();
            }
            let leaf = w > 0 && once.get(w as u64) && g.off[w] == g.off[w + 1];
            if leaf {
                CANDIDATE
            } else {
                NONE
            }
        }));
    } else {
        pre.resize(n, NONE);
    }
    // Preorder numbers by DFS from the root.
    let mut vertex: Vec<u32> = Vec::with_capacity(n); // by preorder number, the node
    let mut parent: Vec<u32> = Vec::with_capacity(n); // by preorder number, a preorder number

    // Predecessor counts of the reached inner nodes, counted as the DFS reads each of
    // their edges (once each: a node's edges are read when it is on top of the stack),
    // at `poff[number + 1]` — the layout the predecessor lists below start from. (A pass
    // of its own over the edges was a sixth of this function's time on py20m.)
    let mut poff: Vec<u32> = vec![0, 0];
    // Leaves set aside below and at `half` (node ids): where each half's leaves go in the
    // order, for the conversion below on both cores.
    let half = n / 2;
    let mut leaves = [0usize; 2];
    let mut stack: Vec<(u32, u32)> = Vec::new(); // (node, next edge index)
    pre[0] = 0;
    vertex.push(0);
    parent.push(0);
    stack.push((0, g.off[0]));
    // Edges read, for `Csr::release` (a spilled graph's pages are dropped behind).
    let mut steps = 0usize;
    while let Some(top) = stack.last_mut() {
        steps += 1;
        if steps % RELEASE_EVERY == 0 {
            g.release();
        }
        let (v, i) = *top;
        if i < g.off[v as usize + 1] {
            top.1 += 1;
            let w = g.adj[i as usize];
            let pw = pre[w as usize];
            if pw == CANDIDATE {
                pre[w as usize] = LEAF | v;
                leaves[(w as usize >= half) as usize] += 1;
            } else if pw == NONE {
                pre[w as usize] = vertex.len() as u32;
                parent.push(pre[v as usize]);
                vertex.push(w);
                poff.push(1);
                stack.push((w, g.off[w as usize]));
            } else if pw < inner {
                poff[pw as usize + 1] += 1;
            }
        } else {
            stack.pop();
        }
    }
    drop(stack);
    let m = vertex.len();
    // Predecessors in preorder numbers, of reached inner nodes only.
    debug_assert_eq!(poff.len(), m + 1);
    // A node whose only predecessor is its DFS parent (the tree edge is always counted;
    // most inner nodes: a tuple in a list) has that parent as its semidominator — its
    // parent is not yet linked when it is processed, so eval gives the parent itself. Its
    // list is not stored.
    let mut single = Bits::new(m as u64);
    for i in 0..m {
        if poff[i + 1] == 1 {
            single.set(i as u64);
            poff[i + 1] = 0;
        }
    }
    let is_single = |i: u32| single.get(i as u64);
    for i in 0..m {
        poff[i + 1] += poff[i];
    }
    // Filled from each list's end down (no second offset array): `poff[w + 1]` counts
    // down to the start of w's list, which is then `poff[w]`'s value shifted by one.
    let mut padj = vec![0u32; poff[m] as usize];
    for (v, &pv) in pre.iter().enumerate() {
        if v % RELEASE_EVERY == RELEASE_EVERY - 1 {
            g.release();
        }
        if pv >= inner {
            continue;
        }
        for &w in g.succ(v as u32) {
            let pw = pre[w as usize];
            if pw < inner && !is_single(pw) {
                poff[pw as usize + 1] -= 1;
                padj[poff[pw as usize + 1] as usize] = pv;
            }
        }
    }
    // Now poff[w + 1] is the start of w's list; shift back to start offsets.
    poff.copy_within(1..=m, 0);
    poff[m] = padj.len() as u32;
    // Semidominators (simple Lengauer-Tarjan eval with path compression), in preorder
    // numbers.
    let mut semi: Vec<u32> = (0..m as u32).collect();
    let mut label: Vec<u32> = (0..m as u32).collect();
    let mut ancestor = vec![NONE; m];
    let mut path: Vec<u32> = Vec::new();
    for w in (1..m).rev() {
        if is_single(w as u32) {
            semi[w] = parent[w];
        } else {
            let mut s = semi[w];
            for &v in &padj[poff[w] as usize..poff[w + 1] as usize] {
                let u = eval(v, &mut ancestor, &mut label, &semi, &mut path);
                s = s.min(semi[u as usize]);
            }
            semi[w] = s;
        }
        ancestor[w] = parent[w];
    }
    g.release();
    drop(ancestor);
    drop(label);
    drop(padj);
    drop(poff);
    drop(single);
    // NCA step: idom is the nearest ancestor of the parent whose number is at most semi.
    let mut idom = parent;
    for w in 1..m {
        let mut d = idom[w];
        while d > semi[w] {
            d = idom[d as usize];
        }
        idom[w] = d;
    }
    drop(semi);
    // Back to node ids, in place of the preorder numbers (one pass in node order, each
    // half of the nodes on a core); the leaves set aside follow the inner nodes in the
    // order, each after its dominator, by node id.
    let mut order = vertex;
    let mut out = pre;
    order.reserve_exact(leaves[0] + leaves[1]);
    {
        let (inner_order, spare) = order.split_at_spare_mut_compat();
        let (lo_spare, hi_spare) = spare[..leaves[0] + leaves[1]].split_at_mut(leaves[0]);
        let (lo, hi) = out.split_at_mut(half);
        let convert =
            |nodes: &mut [u32], first: usize, spare: &mut [std::mem::MaybeUninit<u32>]| {
                let mut slots = spare.iter_mut();
                for (i, x) in nodes.iter_mut().enumerate() {
                    let p = *x;
                    *x = if p < inner {
                        inner_order[idom[p as usize] as usize]
                    } else if p == NONE || p == CANDIDATE {
                        NONE
                    } else {
                        // Counted by the DFS: as many slots as leaves in this half.
                        slots
                            .next()
                            .expect("a slot per leaf")
                            .write((first + i) as u32);
                        p & !LEAF
                    };
                }
                assert!(slots.next().is_none(), "a leaf per slot");
            };
        rayon::join(|| convert(lo, 0, lo_spare), || convert(hi, half, hi_spare));
    }
    // SAFETY: both halves wrote every one of their slots (the asserts above), so the
    // first m + leaves entries are initialised.
    unsafe { order.set_len(m + leaves[0] + leaves[1]) };
    Tree {
        idom: out,
        order,
        inner: m,
    }
}

/// `Vec::split_at_spare_mut` (unstable): the initialised entries to read, and the spare
/// capacity to write, at once.
trait SplitSpare {
    fn split_at_spare_mut_compat(&mut self) -> (&[u32], &mut [std::mem::MaybeUninit<u32>]);
}

impl SplitSpare for Vec<u32> {
    fn split_at_spare_mut_compat(&mut self) -> (&[u32], &mut [std::mem::MaybeUninit<u32>]) {
        let (len, cap) = (self.len(), self.capacity());
        let p = self.as_mut_ptr();
        // SAFETY: [0, len) is initialised and [len, cap) is the allocation's spare
        // capacity; the two slices are disjoint and both borrow `self` mutably.
        unsafe {
            (
                std::slice::from_raw_parts(p, len),
                std::slice::from_raw_parts_mut(
                    p.add(len) as *mut std::mem::MaybeUninit<u32>,
                    cap - len,
                ),
            )
        }
    }
}

/// A bit per node: set when exactly one entry of `adj` names it (`release` called every
/// [`RELEASE_EVERY`] entries).
fn single_predecessor(adj: &[u32], n: usize, release: &(dyn Fn() + Sync)) -> Bits {
    let words = n.div_ceil(64);
    // (seen once or more, seen twice or more) over a part of the edges.
    let count = |part: &[u32]| {
        let mut seen = vec![0u64; words];
        let mut again = vec![0u64; words];
        for (k, &w) in part.iter().enumerate() {
            if k % RELEASE_EVERY == RELEASE_EVERY - 1 {
                release();
            }
            let (i, b) = (w as usize / 64, 1u64 << (w % 64));
            again[i] |= seen[i] & b;
            seen[i] |= b;
        }
        (seen, again)
    };
    let half = adj.len() / 2;
    let ((mut s0, a0), (s1, a1)) = rayon::join(|| count(&adj[..half]), || count(&adj[half..]));
    // Once in all: seen in exactly one half, and not again in it.
    for i in 0..words {
        s0[i] = (s0[i] ^ s1[i]) & !(a0[i] | a1[i]);
    }
    Bits(s0)
}

/// `eval` of Lengauer-Tarjan: the vertex of minimum semidominator on the compressed
/// ancestor path of `v` (`v` itself when not yet linked).
#[inline]
fn eval(v: u32, ancestor: &mut [u32], label: &mut [u32], semi: &[u32], path: &mut Vec<u32>) -> u32 {
    if ancestor[v as usize] == NONE {
        return v;
    }
    // Compress: walk up while the ancestor has an ancestor, then fold labels down.
    path.clear();
    let mut x = v;
    while ancestor[ancestor[x as usize] as usize] != NONE {
        path.push(x);
        x = ancestor[x as usize];
    }
    while let Some(y) = path.pop() {
        let a = ancestor[y as usize];
        if semi[label[a as usize] as usize] < semi[label[y as usize] as usize] {
            label[y as usize] = label[a as usize];
        }
        ancestor[y as usize] = ancestor[a as usize];
    }
    label[v as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(n: usize, edges: &[(u32, u32)]) -> Csr {
        let mut off = vec![0u32; n + 1];
        for &(a, _) in edges {
            off[a as usize + 1] += 1;
        }
        for i in 0..n {
            off[i + 1] += off[i];
        }
        let mut fill = off.clone();
        let mut adj = vec![0; edges.len()];
        for &(a, b) in edges {
            adj[fill[a as usize] as usize] = b;
            fill[a as usize] += 1;
        }
        Csr {
            off: off.into(),
            adj: adj.into(),
        }
    }

    /// Dominators by definition: d dominates v when v is unreachable from 0 without d.
    fn naive(g: &Csr) -> Vec<u32> {
        let n = g.nodes();
        let reach = |skip: usize| {
            let mut seen = vec![false; n];
            let mut st = vec![0u32];
            seen[0] = true;
            while let Some(v) = st.pop() {
                for &w in g.succ(v) {
                    if w as usize != skip && !seen[w as usize] {
                        seen[w as usize] = true;
                        st.push(w);
                    }
                }
            }
            seen
        };
        let all = reach(usize::MAX);
        let doms: Vec<Vec<bool>> = (0..n).map(reach).collect();
        (0..n)
            .map(|v| {
                if !all[v] {
                    return NONE;
                }
                if v == 0 {
                    return 0;
                }
                // Strict dominators of v (the root dominates every reached node); the
                // immediate one is dominated by all the others.
                let dom = |d: usize, x: usize| d == 0 || !doms[d][x];
                let sd: Vec<usize> = (0..n).filter(|&d| d != v && dom(d, v)).collect();
                *sd.iter()
                    .find(|&&d| sd.iter().all(|&e| e == d || dom(e, d)))
                    .unwrap() as u32
            })
            .collect()
    }

    #[test]
    fn classic_example() {
        // Lengauer-Tarjan's paper graph (R=0, A..L = 1..12).
        let e = [
            (0, 1),
            (0, 2),
            (0, 3),
            (1, 4),
            (2, 1),
            (2, 4),
            (2, 5),
            (3, 6),
            (3, 7),
            (4, 12),
            (5, 8),
            (6, 9),
            (7, 9),
            (7, 10),
            (8, 5),
            (8, 11),
            (9, 11),
            (10, 9),
            (11, 0),
            (11, 9),
            (12, 8),
        ];
        let g = csr(13, &e);
        let idom = dominators(&g).idom;
        assert_eq!(idom, naive(&g));
        assert_eq!(idom[11], 0);
        assert_eq!(idom[8], 0);
        assert_eq!(idom[9], 0);
        assert_eq!(idom[10], 7);
    }

    #[test]
    fn random_graphs_match_definition() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..300 {
            let n = 2 + rnd(14) as usize;
            let k = rnd(3 * n as u64) as usize;
            let e: Vec<(u32, u32)> = (0..k)
                .map(|_| (rnd(n as u64) as u32, rnd(n as u64) as u32))
                .collect();
            let g = csr(n, &e);
            let Tree { idom, order, inner } = dominators(&g);
            assert_eq!(idom, naive(&g), "{e:?}");
            // Without leaves set aside (the path of graphs of 2^31 nodes): the same tree.
            let general = dominators_with(&g, false, Vec::new());
            assert_eq!(general.idom, idom, "{e:?}");
            assert_eq!(general.inner, general.order.len(), "{e:?}");
            // The leaves after `inner` dominate nothing.
            for &v in &order[inner..] {
                assert!(v != 0 && !idom.contains(&v), "{e:?}");
            }
            // Every reached node once, each after its dominator.
            let mut at = vec![usize::MAX; n];
            for (i, &v) in order.iter().enumerate() {
                assert_eq!(at[v as usize], usize::MAX, "{e:?}");
                at[v as usize] = i;
            }
            for v in 0..n {
                assert_eq!(at[v] != usize::MAX, idom[v] != NONE, "{e:?}");
                if v > 0 && idom[v] != NONE {
                    assert!(at[idom[v] as usize] < at[v], "{e:?}");
                }
            }
        }
    }

    #[test]
    fn deep_chain_no_recursion() {
        let n = 1_000_000u32;
        let e: Vec<(u32, u32)> = (0..n - 1).map(|i| (i, i + 1)).collect();
        let g = csr(n as usize, &e);
        let Tree { idom, order, .. } = dominators(&g);
        assert_eq!(order.len(), n as usize);
        assert!((1..n).all(|i| idom[i as usize] == i - 1));
    }
}
