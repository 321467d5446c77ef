//! `coreheap summary`: live Python objects by type and live allocations by size class, as
//! plain data, sorted and cut to the limits (text and JSON get the same rows).

use super::census::{FreeCount, TypeCount};
use super::{Analysis, Limits};
use crate::alloc::glibc::classes::SizeClass;
use crate::error::Diagnostics;
use serde::Serialize;

/// What to group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Type,
    Size,
}

/// Totals over every row, before the cut to `--top`.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Totals {
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub by: By,
    /// Rows before the cut, and their totals.
    pub types_total: Option<Totals>,
    pub types: Vec<TypeCount>,
    pub freelists: Vec<FreeCount>,
    pub size_classes_total: Totals,
    pub size_classes: Vec<SizeClass>,
    /// Used glibc chunks by the C++ class of the vtable at their start (`image::cxx`),
    /// with `<untyped glibc>` for the rest when there is no Python census (with one, those
    /// are in `types`, and the classes named here are no longer counted there).
    pub native_types: Vec<NativeType>,
    /// Bytes each type's instances retain together (dominator tree of the object graph),
    /// by type name, for the rows of `types` that are Python types.
    pub retained: Vec<Retained>,
    pub diagnostics: Diagnostics,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct NativeType {
    pub name: String,
    pub allocator: &'static str,
    pub count: u64,
    /// Chunk sizes (with their headers).
    pub bytes: u64,
    /// With `--retained`: the chunks the class's instances keep alive between them (the
    /// native graph's dominator tree: container buffers and nodes only they reach).
    pub retained_count: Option<u64>,
    pub retained_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Retained {
    pub name: String,
    pub bytes: u64,
}

pub fn summary(a: &Analysis, by: By, limits: &Limits) -> Summary {
    let mut classes = a.size_classes();
    let size_classes_total = Totals {
        count: classes.iter().map(|c| c.count).sum(),
        bytes: classes.iter().map(|c| c.bytes).sum(),
    };
    // Largest first, so that --top keeps what matters.
    classes.sort_by(|x, y| {
        y.bytes
            .cmp(&x.bytes)
            .then(x.allocator.cmp(y.allocator))
            .then(x.size.cmp(&y.size))
    });
    let (mut types, mut freelists) = match (&a.census, by) {
        (Some(c), By::Type) => (c.types.clone(), c.freelists.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    let types_total = (a.census.is_some() && by == By::Type).then(|| Totals {
        count: types.iter().map(|t| t.count).sum(),
        bytes: types.iter().map(|t| t.bytes).sum(),
    });
    let mut diagnostics = a.diagnostics.clone();
    let mut native_types = Vec::new();
    if let (Some(g), By::Type) = (&a.glibc, by) {
        let cl = super::native::classify(a.process, &g.chunks);
        let mut by_ty = vec![(0u64, 0u64); cl.types.len()];
        for (c, &t) in g.chunks.iter().zip(&cl.ty) {
            if !c.state().is_live() {
                continue;
            }
            by_ty[t as usize].0 += 1;
            by_ty[t as usize].1 += c.size();
        }
        let with_census = a.census.is_some();
        // Retained sets come from the native graph, whose type indexes are its own.
        let retained: rustc_hash::FxHashMap<String, (u64, u64)> = match a.native() {
            Ok(n) if limits.retained => {
                diagnostics.merge(&n.diagnostics);
                n.retained_by_type(a)
                    .into_iter()
                    .enumerate()
                    .skip(1)
                    .map(|(t, r)| (n.types[t].to_string(), r))
                    .collect()
            }
            _ => Default::default(),
        };
        for (t, &(count, bytes)) in by_ty.iter().enumerate() {
            if count == 0 || (t == 0 && with_census) {
                continue;
            }
            let name = cl.types[t].to_string();
            let r =
                (t != 0 && limits.retained).then(|| retained.get(&name).copied().unwrap_or((0, 0)));
            native_types.push(NativeType {
                name,
                allocator: "glibc",
                count,
                bytes,
                retained_count: r.map(|x| x.0),
                retained_bytes: r.map(|x| x.1),
            });
        }
        // The census counts a chunk with a vtable as untyped glibc memory (it is no
        // Python object): those chunks move to their class's row.
        let (tc, tb) = by_ty
            .iter()
            .skip(1)
            .fold((0, 0), |(c, b), x| (c + x.0, b + x.1));
        if with_census && tc > 0 {
            if let Some(r) = types.iter_mut().find(|r| r.name == super::native::UNTYPED) {
                r.count = r.count.saturating_sub(tc);
                r.bytes = r.bytes.saturating_sub(tb);
            }
        }
        native_types.sort_by(|x, y| y.bytes.cmp(&x.bytes).then_with(|| x.name.cmp(&y.name)));
        limits.cut(&mut native_types);
    }
    limits.cut(&mut types);
    limits.cut(&mut freelists);
    let retained = match (&a.census, by) {
        (Some(c), By::Type) if limits.retained => match a.graph() {
            Ok(g) => {
                diagnostics.merge(&g.diagnostics);
                let r = g.retained_by_type(c);
                types
                    .iter()
                    .filter_map(|t| {
                        r.get(&t.name).map(|&bytes| Retained {
                            name: t.name.clone(),
                            bytes,
                        })
                    })
                    .collect()
            }
            Err(_) => Vec::new(),
        },
        _ => Vec::new(),
    };
    limits.cut(&mut classes);
    Summary {
        by,
        types_total,
        types,
        freelists,
        size_classes_total,
        size_classes: classes,
        native_types,
        retained,
        diagnostics,
    }
}
