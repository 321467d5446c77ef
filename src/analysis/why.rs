//! `coreheap why`: the shortest chain of references from a root to an object, each step
//! naming how it holds the next, and the root named the way a Python programmer names
//! it: the module global or class attribute the chain passes through, a root another
//! analysis named (a thread frame), or "held from native code".

use super::dominators::{Csr, NONE};
use super::graph::Graph;
use super::ownership;
use super::Analysis;
use crate::addr::Addr;
use crate::error::{Diagnostics, Error, Result};
use crate::python::edges::Via;
use rustc_hash::FxHashSet;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RootName {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Step {
    pub address: Addr,
    #[serde(rename = "type")]
    pub type_name: String,
    /// How the previous step holds this one (for the first step: the root's name).
    pub via: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Path {
    pub target: Addr,
    #[serde(rename = "type")]
    pub type_name: String,
    pub bytes: u64,
    /// "glibc" for a native chunk (its type is its C++ class, or `<untyped glibc>`);
    /// null for a Python object.
    pub allocator: Option<&'static str>,
    /// None: no root reaches the object (cyclic garbage; for a native chunk: leaked).
    pub root: Option<RootName>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Why {
    pub paths: Vec<Path>,
    pub diagnostics: Diagnostics,
}

pub enum Target {
    Address(u64),
    Type(String),
}

/// Paths to the target object, or to the first `limit` objects of a type (with `since`,
/// objects whose address the older core does not hold come first).
pub fn why(a: &Analysis, target: &Target, limit: usize, since: Option<&Analysis>) -> Result<Why> {
    // An address that is no Python object: the native chunk holding it.
    if let Target::Address(x) = target {
        let py_obj = a
            .python()
            .ok()
            .and_then(|(c, _)| a.graph().ok().and_then(|g| g.node_of(c, *x)));
        if py_obj.is_none() {
            if let Ok(n) = a.native() {
                if let Some(v) = n.node_at(a, *x) {
                    return Ok(native_why(a, n, v));
                }
            }
            if a.python().is_err() {
                a.native()?;
                return Err(Error::Other(format!("no used glibc chunk holds 0x{x:x}")));
            }
        }
    }
    let (c, _) = a.python()?;
    let g = a.graph()?;
    // A command that runs `why` must keep the references (Needs::GRAPH).
    let Some(csr) = g.csr.as_ref() else {
        return Err(Error::Other(
            "the object graph was built without its references (Needs::edges_unused); why needs them".into(),
        ));
    };
    let targets: Vec<u32> = match target {
        Target::Address(x) => {
            let n = g.node_of(c, *x).ok_or_else(|| {
                Error::Other(format!(
                    "no live Python object nor used glibc chunk at 0x{x:x} (give the address `objects` lists)"
                ))
            })?;
            vec![n]
        }
        Target::Type(name) => {
            let mut v: Vec<u32> = c
                .objects()
                .iter()
                .enumerate()
                .filter(|(_, o)| c.type_of(o).name == *name)
                .map(|(i, _)| i as u32 + 1)
                .collect();
            if v.is_empty() {
                return Err(Error::Other(format!("no live object of type {name:?}")));
            }
            if let Some(old) = since.and_then(|b| b.census.as_ref()) {
                let had: FxHashSet<u64> = old
                    .objects()
                    .iter()
                    .filter(|o| old.type_of(o).name == *name)
                    .map(|o| o.addr.0)
                    .collect();
                // Stable: new objects first, each group in address order.
                v.sort_by_key(|&n| had.contains(&c.objects()[n as usize - 1].addr.0));
            }
            v.truncate(limit);
            v
        }
    };
    let parent = bfs(g, csr);
    let dicts = ownership::named_dicts(a, g);
    let e = ownership::edges_of(a).ok_or_else(|| Error::Other("no CPython model".into()))?;
    let hs = a.cpython_model.map_or(0, |m| m.objects.header_shift);
    let mut paths = Vec::new();
    for &t in &targets {
        let o = &c.objects()[t as usize - 1];
        let ti = c.type_of(o);
        let mut chain = Vec::new();
        if parent[t as usize] != NONE {
            let mut v = t;
            let mut guard = 0;
            while v != 0 && guard < g.nodes() {
                chain.push(v);
                v = parent[v as usize];
                guard += 1;
            }
            chain.reverse();
        }
        let mut steps = Vec::new();
        let mut root = None;
        for (i, &n) in chain.iter().enumerate() {
            let no = &c.objects()[n as usize - 1];
            let nt = c.type_of(no);
            let mut tname = nt.name.clone();
            if let Some((name, kind)) = dicts.get(&n) {
                tname = format!("{kind} {name} dict");
            }
            let via = if i == 0 {
                let r = root_of(g, n);
                r.name.clone()
            } else {
                let p = chain[i - 1];
                let po = &c.objects()[p as usize - 1];
                let pt = c.type_of(po);
                let mut found = None;
                e.for_each(po.addr.0, pt, u64::MAX, &mut |x, via| {
                    if found.is_none() && x == no.addr.0 {
                        found = Some(via);
                    }
                });
                match found {
                    Some(Via::Value(k)) => {
                        // The holder nearest the object names the root: a class
                        // attribute rather than the module global holding the class.
                        if let Some((name, kind)) = dicts.get(&p) {
                            let key = e.name(k).unwrap_or_default();
                            root = Some(RootName {
                                kind: if *kind == "module" {
                                    "module global"
                                } else {
                                    "class attribute"
                                }
                                .into(),
                                name: format!("{name}.{key}"),
                            });
                        }
                        e.describe(Via::Value(k))
                    }
                    // GIL-build field offsets; free-threaded headers add `hs` (0x10).
                    Some(Via::Field(o)) if o == 0x10 + hs && pt.name == "module" => {
                        ".__dict__".into()
                    }
                    Some(Via::Field(o)) if o == 0x108 + hs && pt.flags & (1 << 31) != 0 => {
                        ".__dict__".into()
                    }
                    Some(Via::Field(o)) if o == 0x10 + hs && pt.name == "cell" => {
                        ".cell_contents".into()
                    }
                    Some(Via::Field(off)) if pt.name == "function" => {
                        match function_field(e.minor, off.wrapping_sub(hs)) {
                            Some(n) => format!(".{n}"),
                            None => e.describe(Via::Field(off)),
                        }
                    }
                    Some(v) => e.describe(v),
                    None => "(reference)".into(),
                }
            };
            steps.push(Step {
                address: no.addr,
                type_name: tname,
                via,
            });
        }
        if root.is_none() && !chain.is_empty() {
            root = Some(root_of(g, chain[0]));
        }
        paths.push(Path {
            target: o.addr,
            type_name: ti.name.clone(),
            bytes: g.shallow[t as usize] as u64,
            allocator: None,
            root,
            steps,
        });
    }
    let mut diagnostics = a.diagnostics.clone();
    diagnostics.merge(&g.diagnostics);
    Ok(Why { paths, diagnostics })
}

/// The chain from a thread's stack or register, or a static, to the native chunk `v`.
fn native_why(a: &Analysis, n: &super::native::NativeGraph, v: u32) -> Why {
    use super::native::{root_name, Anchor};
    let ch = &super::native::NativeGraph::chunk(a, v);
    let mut steps = Vec::new();
    let mut root = None;
    if let Some(((_, anchor), chain)) = n.path(v) {
        let name = root_name(a, &anchor);
        root = Some(RootName {
            kind: anchor.kind().into(),
            name: name.clone(),
        });
        for (i, &w) in chain.iter().enumerate() {
            let c = &super::native::NativeGraph::chunk(a, w);
            let via = if i == 0 {
                // Where the anchor word points in the chunk.
                let at = match anchor {
                    Anchor::Register { thread, reg } => a
                        .process
                        .core
                        .threads
                        .get(thread as usize)
                        .and_then(|t| t.regs.get(reg as usize).copied()),
                    Anchor::Stack { at, .. } | Anchor::Static { at } | Anchor::Python { at } => {
                        a.process.space.read_u64(Addr(at)).ok()
                    }
                    Anchor::Tcache => None,
                };
                match at.map(|x| x.wrapping_sub(c.user().0)) {
                    Some(off) if off > 0 => format!("{name} (interior +0x{off:x})"),
                    _ => name.clone(),
                }
            } else {
                let prev = &super::native::NativeGraph::chunk(a, chain[i - 1]);
                native_via(a, prev.user().0, prev.usable(), c.user().0, c.usable())
            };
            steps.push(Step {
                address: c.user(),
                type_name: n.type_name(w).to_string(),
                via,
            });
        }
    }
    Why {
        paths: vec![Path {
            target: ch.user(),
            type_name: n.type_name(v).to_string(),
            bytes: ch.size(),
            allocator: Some("glibc"),
            root,
            steps,
        }],
        diagnostics: {
            let mut d = a.diagnostics.clone();
            d.merge(&n.diagnostics);
            d
        },
    }
}

/// `[+0x18]`: the first word of the holder chunk that points into the held one (with the
/// offset it points at when that is not the start).
fn native_via(a: &Analysis, from: u64, from_len: u64, to: u64, to_len: u64) -> String {
    let mut found = None;
    a.process.space.for_each_slice(
        crate::addr::Range::new(Addr(from), Addr(from.saturating_add(from_len))),
        |at, bytes| {
            for (i, w) in bytes.chunks_exact(8).enumerate() {
                let x = u64::from_le_bytes(w.try_into().unwrap());
                if x >= to && x < to + to_len {
                    found = Some((at.0 + 8 * i as u64 - from, x - to));
                    return false;
                }
            }
            true
        },
    );
    match found {
        Some((off, 0)) => format!("[+0x{off:x}]"),
        Some((off, into)) => format!("[+0x{off:x}] (interior +0x{into:x})"),
        None => "(reference)".into(),
    }
}

/// PyFunctionObject fields by offset (Include/funcobject.h: 3.8/3.9 func_code first;
/// 3.10+ the _Py_COMMON_FIELDS block, func_globals first).
fn function_field(minor: u32, off: u64) -> Option<&'static str> {
    let names: &[&str] = if minor <= 9 {
        &[
            "__code__",
            "__globals__",
            "__defaults__",
            "__kwdefaults__",
            "__closure__",
            "__doc__",
            "__name__",
            "__dict__",
            "",
            "__module__",
            "__annotations__",
            "__qualname__",
        ]
    } else {
        &[
            "__globals__",
            "__builtins__",
            "__name__",
            "__qualname__",
            "__code__",
            "__defaults__",
            "__kwdefaults__",
            "__closure__",
            "__doc__",
            "__dict__",
            "",
            "__module__",
            "__annotations__",
        ]
    };
    let i = off.checked_sub(0x10)? / 8;
    names
        .get(i as usize)
        .copied()
        .filter(|n| !n.is_empty() && off % 8 == 0)
}

fn root_of(g: &Graph, n: u32) -> RootName {
    if let Some(r) = g.named.iter().find(|r| r.node == n) {
        return RootName {
            kind: r.kind.into(),
            name: r.name.clone(),
        };
    }
    if g.immortal.binary_search(&n).is_ok() {
        return RootName {
            kind: "immortal".into(),
            name: "immortal object".into(),
        };
    }
    RootName {
        kind: "native".into(),
        name: "held from native code".into(),
    }
}

/// BFS parents from the root: named roots first, so a path through a module global wins
/// over one through an object held from native code; then the other roots.
fn bfs(g: &Graph, csr: &Csr) -> Vec<u32> {
    let n = g.nodes();
    let mut parent = vec![NONE; n];
    parent[0] = 0;
    let mut queue: std::collections::VecDeque<u32> = std::collections::VecDeque::new();
    // The interpreter's roots first (paths through sys.modules), then thread frames,
    // then objects held from native code.
    let interp: Vec<u32> = g
        .named
        .iter()
        .filter(|r| r.kind == "interpreter")
        .map(|r| r.node)
        .collect();
    let named: Vec<u32> = g
        .named
        .iter()
        .filter(|r| r.kind != "interpreter")
        .map(|r| r.node)
        .collect();
    let rest: Vec<u32> = csr.succ(0).to_vec();
    for group in [interp, named, rest] {
        for r in group {
            if parent[r as usize] == NONE {
                parent[r as usize] = 0;
                queue.push_back(r);
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
    }
    parent
}
