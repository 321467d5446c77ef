//! Named owners over the dominator tree, shared by `summary --by owner`, `diff --by owner`
//! and `why`: module globals (`app.cache._registry`), class attributes
//! (`app.Session.pool`), roots other analyses name (thread frames), and objects held
//! from native code whose retained size is large. An owner is reported when it is the
//! only holder of its value: the value's immediate dominator is the dict that names it.

use super::census::Census;
use super::graph::Graph;
use super::Analysis;
use crate::addr::Addr;
use crate::error::{Diagnostics, Result};
use crate::python::edges::{Edges, Via};
use crate::python::objects::{Special, Typer};
use crate::python::typeobj::{F_HEAPTYPE, F_TYPE_SUBCLASS, TP_DICT};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

/// PyTypeObject.tp_dict (layouts.md §C.3); PyModuleObject.md_dict (moduleobject.c).
const MD_DICT: u64 = 0x10;

#[derive(Debug, Clone)]
pub struct NamedOwner {
    pub node: u32,
    pub name: String,
    pub kind: &'static str,
}

/// A type's share of an owner's retained set.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TypeShare {
    pub name: String,
    pub count: u64,
    pub bytes: u64,
}

pub fn edges_of<'a>(a: &'a Analysis) -> Option<Edges<'a>> {
    let (_, typer) = a.python().ok()?;
    Some(Edges::new(a.process, a.cpython_model?, typer))
}

/// The (key text, value node) entries of the dict at `node`.
pub fn dict_entries(c: &Census, g: &Graph, e: &Edges, node: u32) -> Vec<(String, u32)> {
    let o = &c.objects()[node as usize - 1];
    let ti = c.type_of(o);
    let mut out = Vec::new();
    let mut f = |t: u64, via: Via| {
        if let Via::Value(k) = via {
            if let (Some(name), Some(v)) = (e.name(k), g.node_of(c, t)) {
                out.push((name, v));
            }
        }
    };
    if ti.special == Special::Dict {
        e.for_each(o.addr.0, ti, u64::MAX, &mut f);
    }
    out
}

fn field_node(c: &Census, g: &Graph, t: &Typer, node: u32, off: u64) -> Option<u32> {
    let o = &c.objects()[node as usize - 1];
    let p = t.u64_at(t.field(o.addr.0, off))?;
    g.node_of(c, p)
}

/// Every named owner of the graph, module globals first.
pub fn named_owners(a: &Analysis, g: &Graph) -> Vec<NamedOwner> {
    let Ok((c, typer)) = a.python() else {
        return Vec::new();
    };
    let Some(e) = edges_of(a) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen_classes: FxHashSet<u32> = FxHashSet::default();
    let mut seen_modules: FxHashSet<u32> = FxHashSet::default();
    let is_module = |n: u32| c.type_of(&c.objects()[n as usize - 1]).name == "module";
    let heap_type = |n: u32| {
        let o = &c.objects()[n as usize - 1];
        let ti = c.type_of(o);
        ti.flags & F_TYPE_SUBCLASS != 0
            && typer
                .u64_at(typer.field(o.addr.0, 0xa8))
                .is_some_and(|f| f & F_HEAPTYPE != 0)
    };
    for r in g.named.iter().filter(|r| r.name == "sys.modules") {
        for (mname, m) in dict_entries(c, g, &e, r.node) {
            if !is_module(m) || !seen_modules.insert(m) {
                continue;
            }
            let Some(md) = field_node(c, g, typer, m, MD_DICT) else {
                continue;
            };
            for (k, v) in dict_entries(c, g, &e, md) {
                if g.idom[v as usize] == md {
                    out.push(NamedOwner {
                        node: v,
                        name: format!("{mname}.{k}"),
                        kind: "module global",
                    });
                }
                if heap_type(v) && seen_classes.insert(v) {
                    let Some(td) = field_node(c, g, typer, v, TP_DICT) else {
                        continue;
                    };
                    let cname = class_name(c, v).unwrap_or_else(|| format!("{mname}.{k}"));
                    for (attr, x) in dict_entries(c, g, &e, td) {
                        if g.idom[x as usize] == td && !attr.starts_with("__") {
                            out.push(NamedOwner {
                                node: x,
                                name: format!("{cname}.{attr}"),
                                kind: "class attribute",
                            });
                        }
                    }
                }
            }
        }
    }
    // A root another analysis names (a thread frame's local): once per object, the first
    // (innermost) frame that holds it.
    let mut seen_roots: FxHashSet<u32> = FxHashSet::default();
    for r in g.named.iter().filter(|r| r.kind != "interpreter") {
        if !seen_roots.insert(r.node) {
            continue;
        }
        out.push(NamedOwner {
            node: r.node,
            name: r.name.clone(),
            kind: r.kind,
        });
    }
    // Large objects held from native code (the refcount-surplus roots): each is an owner
    // when it retains at least 1% of the reached bytes.
    let total = g.retained_bytes(0);
    let dicts = named_dicts(a, g);
    for &n in &g.native {
        if g.idom[n as usize] == 0 && g.retained_bytes(n) * 100 >= total.max(1) {
            let o = &c.objects()[n as usize - 1];
            let name = match dicts.get(&n) {
                Some((m, kind)) => format!("{m} ({kind} dict, held from native code)"),
                None => format!("held from native code: {} at {}", c.type_of(o).name, o.addr),
            };
            out.push(NamedOwner {
                node: n,
                name,
                kind: "native",
            });
        }
    }
    out
}

/// `module.qualname` of a heap type, as the census names it.
fn class_name(c: &Census, node: u32) -> Option<String> {
    let addr = c.objects()[node as usize - 1].addr;
    c.type_infos
        .iter()
        .find(|t| t.addr == addr)
        .map(|t| t.name.clone())
}

/// Counts and bytes by (owner slot, type index), added up a run at a time: consecutive
/// nodes mostly share owner and type (objects of a pool, a list's items).
struct Tally {
    counts: Vec<FxHashMap<u32, (u64, u64)>>,
    run: Option<(u32, u32, u64, u64)>,
}

impl Tally {
    fn new(slots: usize) -> Tally {
        Tally {
            counts: vec![FxHashMap::default(); slots],
            run: None,
        }
    }

    #[inline]
    fn add(&mut self, slot: u32, ty: u32, bytes: u64) {
        match &mut self.run {
            Some((rs, rt, k, b)) if *rs == slot && *rt == ty => {
                *k += 1;
                *b += bytes;
            }
            _ => {
                self.flush();
                self.run = Some((slot, ty, 1, bytes));
            }
        }
    }

    fn flush(&mut self) {
        if let Some((s, t, k, b)) = self.run.take() {
            let e = self.counts[s as usize].entry(t).or_default();
            e.0 += k;
            e.1 += b;
        }
    }

    /// The counts, with `other`'s added.
    fn merge(mut self, mut other: Tally) -> Tally {
        self.flush();
        other.flush();
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            for (t, (k, b)) in theirs {
                let e = mine.entry(t).or_default();
                e.0 += k;
                e.1 += b;
            }
        }
        self
    }
}

/// Types of the dominator subtree of each of `nodes`, largest bytes first.
///
/// One pass over the reached nodes in `g.order` (each after its immediate dominator)
/// gives every node its nearest owner at or above it in the dominator tree and counts it
/// into that owner; then each owner's counts are added into the nearest owner above it,
/// innermost first. A node is read once however deeply the owners nest (walking each
/// owner's subtree would read it once per owner above it). The leaves set aside
/// (`order[g.inner..]`, most nodes) dominate nothing: their nearest owner is their
/// dominator's and is not stored, and they are counted on every core at once.
pub fn type_shares(c: &Census, g: &Graph, nodes: &[u32]) -> Vec<Vec<TypeShare>> {
    use super::dominators::NONE;
    let n = g.nodes();
    // Distinct owner nodes → slot (a node may be named twice), and a bit per owner node
    // (a hash lookup per node was a fifth of this function).
    let mut slot_of: FxHashMap<u32, u32> = FxHashMap::default();
    let mut slots: Vec<u32> = Vec::new();
    let mut is_slot = super::Bits::new(n as u64);
    for &v in nodes {
        slot_of.entry(v).or_insert_with(|| {
            slots.push(v);
            slots.len() as u32 - 1
        });
        if (v as usize) < n {
            is_slot.set(v as u64);
        }
    }
    let slot_at = |v: u32| -> Option<u32> {
        match is_slot.get(v as u64) {
            false => None,
            true => slot_of.get(&v).copied(),
        }
    };
    // The nearest owners in 2 bytes a node when the slots allow (175 M nodes: 350 MB
    // instead of 700 MB, the largest array of this pass).
    let (mut counts, parent_slot, mut inner_first) = if slots.len() < u16::MAX as usize {
        tally_by_owner::<u16>(c, g, &slots, &slot_at)
    } else {
        tally_by_owner::<u32>(c, g, &slots, &slot_at)
    };
    inner_first.reverse();
    for &s in &inner_first {
        let p = parent_slot[s as usize];
        if p == NONE {
            continue;
        }
        let inner: Vec<(u32, (u64, u64))> =
            counts[s as usize].iter().map(|(&t, &v)| (t, v)).collect();
        for (t, (k, b)) in inner {
            let e = counts[p as usize].entry(t).or_default();
            e.0 += k;
            e.1 += b;
        }
    }
    nodes
        .iter()
        .map(|n| {
            let by = &counts[slot_of[n] as usize];
            let mut named: FxHashMap<&str, (u64, u64)> = FxHashMap::default();
            for (&t, &(k, b)) in by {
                let e = named
                    .entry(c.type_infos[t as usize].name.as_str())
                    .or_default();
                e.0 += k;
                e.1 += b;
            }
            let mut v: Vec<TypeShare> = named
                .into_iter()
                .map(|(name, (count, bytes))| TypeShare {
                    name: name.to_string(),
                    count,
                    bytes,
                })
                .collect();
            v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
            v
        })
        .collect()
}

/// A node's nearest owner slot + 1 (0: none), in the narrowest width the slots fit.
trait NearestSlot: Copy + Default + Send + Sync {
    fn from(s: u32) -> Self;
    fn get(self) -> u32;
}

impl NearestSlot for u16 {
    #[inline]
    fn from(s: u32) -> u16 {
        s as u16
    }
    #[inline]
    fn get(self) -> u32 {
        self as u32
    }
}

impl NearestSlot for u32 {
    #[inline]
    fn from(s: u32) -> u32 {
        s
    }
    #[inline]
    fn get(self) -> u32 {
        self
    }
}

/// Counts and bytes by owner slot and type of every reached node (each counted into its
/// nearest owner only), each slot's parent slot, and the slots in tree order.
#[allow(clippy::type_complexity)]
fn tally_by_owner<N: NearestSlot>(
    c: &Census,
    g: &Graph,
    slots: &[u32],
    slot_at: &(dyn Fn(u32) -> Option<u32> + Sync),
) -> (Vec<FxHashMap<u32, (u64, u64)>>, Vec<u32>, Vec<u32>) {
    use super::dominators::NONE;
    let objects = c.objects();
    let n = g.nodes();
    let node_bytes = |v: u32| (objects[v as usize - 1].ty, g.shallow[v as usize] as u64);
    // Nearest owner's slot + 1 by inner node (0: none). Zeroed memory: the pages of
    // nodes never written (leaves) are never touched.
    let mut nearest = vec![N::default(); n];
    let mut parent_slot = vec![NONE; slots.len()];
    let mut inner_first: Vec<u32> = Vec::with_capacity(slots.len());
    let mut placed = vec![false; slots.len()];
    let mut tally = Tally::new(slots.len());
    let (inner, leaves) = g.order.split_at(g.inner.min(g.order.len()));
    // The object list's types are read in the order's sequence, all over the list: a
    // spilled list's pages are dropped every so many nodes (`Census::release_objects`;
    // inner nodes come in DFS order, a page of the list each at worst).
    let release_every = 1 << 18;
    for (i, &v) in inner.iter().enumerate() {
        if i % release_every == release_every - 1 {
            c.release_objects();
            g.shallow.release();
        }
        let d = g.idom[v as usize];
        let above = if v == 0 || d == NONE {
            0
        } else {
            nearest[d as usize].get()
        };
        let s = match slot_at(v) {
            Some(s) => {
                parent_slot[s as usize] = above.wrapping_sub(1);
                inner_first.push(s);
                placed[s as usize] = true;
                s + 1
            }
            None => above,
        };
        nearest[v as usize] = N::from(s);
        if s != 0 && v != 0 {
            let (t, b) = node_bytes(v);
            tally.add(s - 1, t, b);
        }
    }
    // Owners that are leaves: innermost, so after every inner one here (the list is
    // reversed below).
    for (s, &v) in slots.iter().enumerate() {
        let d = g.idom.get(v as usize).copied().unwrap_or(NONE);
        if !placed[s] && v != 0 && d != NONE {
            parent_slot[s] = nearest[d as usize].get().wrapping_sub(1);
            inner_first.push(s as u32);
        }
    }
    let nearest = &nearest;
    let count_leaves = |part: &[u32]| {
        let mut t = Tally::new(slots.len());
        for (i, &v) in part.iter().enumerate() {
            if i % release_every == release_every - 1 {
                c.release_objects();
                g.shallow.release();
            }
            let s = match slot_at(v) {
                Some(s) => s + 1,
                None => nearest[g.idom[v as usize] as usize].get(),
            };
            if s != 0 {
                let (ty, b) = node_bytes(v);
                t.add(s - 1, ty, b);
            }
        }
        t
    };
    let half = leaves.len() / 2;
    let (a, b) = rayon::join(
        || count_leaves(&leaves[..half]),
        || count_leaves(&leaves[half..]),
    );
    (tally.merge(a).merge(b).counts, parent_slot, inner_first)
}

pub fn address(c: &Census, node: u32) -> Addr {
    c.objects()[node as usize - 1].addr
}

/// Module dicts (by node) with their module's name, and class dicts with the class name.
pub fn named_dicts(a: &Analysis, g: &Graph) -> FxHashMap<u32, (String, &'static str)> {
    let mut out = FxHashMap::default();
    let (Ok((c, typer)), Some(e)) = (a.python(), edges_of(a)) else {
        return out;
    };
    for r in g.named.iter().filter(|r| r.name == "sys.modules") {
        for (mname, m) in dict_entries(c, g, &e, r.node) {
            if c.type_of(&c.objects()[m as usize - 1]).name != "module" {
                continue;
            }
            let Some(md) = field_node(c, g, typer, m, MD_DICT) else {
                continue;
            };
            out.entry(md).or_insert((mname.clone(), "module"));
            for (k, v) in dict_entries(c, g, &e, md) {
                let o = &c.objects()[v as usize - 1];
                if c.type_of(o).flags & F_TYPE_SUBCLASS != 0
                    && typer
                        .u64_at(typer.field(o.addr.0, 0xa8))
                        .is_some_and(|f| f & F_HEAPTYPE != 0)
                {
                    if let Some(td) = field_node(c, g, typer, v, TP_DICT) {
                        let cname = class_name(c, v).unwrap_or_else(|| format!("{mname}.{k}"));
                        out.entry(td).or_insert((cname, "class"));
                    }
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Owner {
    pub owner: String,
    pub kind: &'static str,
    pub address: Addr,
    #[serde(rename = "type")]
    pub type_name: String,
    pub retained_count: u64,
    pub retained_bytes: u64,
    pub types: Vec<TypeShare>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Owners {
    /// Objects reached from a root, and their bytes (with owned buffers).
    pub reachable_count: u64,
    pub reachable_bytes: u64,
    /// Objects no root reaches (cyclic garbage; see `leaks`).
    pub unreachable_count: u64,
    pub unreachable_bytes: u64,
    pub edges: u64,
    pub owners: Vec<Owner>,
    pub diagnostics: Diagnostics,
}

/// Types listed per owner.
pub const TYPES_PER_OWNER: usize = 5;

/// Every owner, largest retained bytes first (all of them: `--top` cuts the list).
pub fn all_owners(a: &Analysis, types_per_owner: Option<usize>) -> Result<Owners> {
    let (c, _) = a.python()?;
    let g = a.graph()?;
    let _phase = a.phase("naming owners");
    let named = named_owners(a, g);
    let mut owners: Vec<Owner> = named
        .iter()
        .map(|o| Owner {
            owner: o.name.clone(),
            kind: o.kind,
            address: address(c, o.node),
            type_name: c.type_of(&c.objects()[o.node as usize - 1]).name.clone(),
            retained_count: g.retained_count[o.node as usize] as u64,
            retained_bytes: g.retained_bytes(o.node),
            types: Vec::new(),
        })
        .collect();
    let nodes: Vec<u32> = named.iter().map(|o| o.node).collect();
    // The unreachable nodes' count and bytes on the other core meanwhile.
    let (shares, (unreachable_count, unreachable_bytes)) = rayon::join(
        || type_shares(c, g, &nodes),
        || {
            (1..g.nodes())
                .filter(|&v| !g.reached(v as u32))
                .fold((0u64, 0u64), |(k, b), v| (k + 1, b + g.shallow[v] as u64))
        },
    );
    for (o, mut t) in owners.iter_mut().zip(shares) {
        if let Some(k) = types_per_owner {
            t.truncate(k);
        }
        o.types = t;
    }
    owners.sort_by(|x, y| {
        y.retained_bytes
            .cmp(&x.retained_bytes)
            .then_with(|| x.owner.cmp(&y.owner))
    });
    let mut diagnostics = a.diagnostics.clone();
    diagnostics.merge(&g.diagnostics);
    Ok(Owners {
        reachable_count: g.retained_count[0] as u64,
        reachable_bytes: g.retained_bytes(0),
        unreachable_count,
        unreachable_bytes,
        edges: g.edges,
        owners,
        diagnostics,
    })
}
