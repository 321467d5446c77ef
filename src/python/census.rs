//! The census: every live allocation of both allocators typed as a Python object, or
//! attributed to the object that owns it, or counted as untyped.

use super::objects::{Special, TypeInfo, Typer};
use super::pymalloc::PymallocHeap;
use crate::addr::Addr;
use crate::glibc::GlibcHeap;
use serde::Serialize;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Debug, Clone, Serialize)]
pub struct TypeCount {
    pub name: String,
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FreeCount {
    pub name: String,
    pub count: u64,
}

/// One typed object.
#[derive(Debug, Clone)]
pub struct Obj {
    pub addr: Addr,
    /// Size of the allocation holding it (block or chunk).
    pub alloc: u64,
    pub ty: Rc<TypeInfo>,
}

#[derive(Debug, Default)]
pub struct Census {
    pub types: Vec<TypeCount>,
    pub freelists: Vec<FreeCount>,
    pub objects: Vec<Obj>,
    /// Free-list residents (refcount 0, type intact).
    pub free_objects: Vec<Obj>,
}

/// Names of the buckets for allocations that are not objects.
pub const LIST_ITEMS: &str = "<list items>";
pub const DICT_KEYS: &str = "<dict keys>";
pub const DICT_VALUES: &str = "<dict values>";
pub const SET_TABLE: &str = "<set table>";
pub const UNTYPED_PYMALLOC: &str = "<untyped pymalloc>";
pub const UNTYPED_GLIBC: &str = "<untyped glibc>";

pub fn census(typer: &Typer, py: &PymallocHeap, glibc: Option<&GlibcHeap>) -> Census {
    // (user address, usable bytes, allocation bytes, pymalloc?)
    let mut allocs: Vec<(u64, u64, u64, bool)> = py
        .blocks
        .iter()
        .map(|b| (b.addr.0, b.size as u64, b.size as u64, true))
        .collect();
    if let Some(g) = glibc {
        allocs.extend(g.live().map(|c| (c.user().0, c.usable(), c.size(), false)));
    }
    allocs.sort_unstable_by_key(|a| a.0);

    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
    let mut free: HashMap<String, u64> = HashMap::new();
    let mut objects = Vec::new();
    let mut free_objects = Vec::new();
    let mut typed = vec![false; allocs.len()];
    let mut owned: Vec<(u64, &'static str)> = Vec::new();
    for (i, &(m, usable, size, pm)) in allocs.iter().enumerate() {
        let Some((o, ti, zero)) = typer.classify(m, usable, pm) else {
            continue;
        };
        typed[i] = true;
        if zero {
            *free.entry(ti.name.clone()).or_default() += 1;
            free_objects.push(Obj {
                addr: Addr(o),
                alloc: size,
                ty: ti,
            });
            continue;
        }
        let e = counts.entry(ti.name.clone()).or_default();
        e.0 += 1;
        e.1 += size;
        match ti.special {
            Special::List => owned.extend(typer.u64_at(o + 0x18).map(|p| (p, LIST_ITEMS))),
            Special::Dict => {
                owned.extend(typer.u64_at(o + 0x20).map(|p| (p, DICT_KEYS)));
                owned.extend(typer.u64_at(o + 0x28).map(|p| (p, DICT_VALUES)));
            }
            Special::Set => {
                if let Some(t) = typer.u64_at(o + 0x28) {
                    if t != o + 0x40 {
                        owned.push((t, SET_TABLE));
                    }
                }
            }
            _ => {}
        }
        objects.push(Obj {
            addr: Addr(o),
            alloc: size,
            ty: ti,
        });
    }
    owned.retain(|&(p, _)| p != 0);
    owned.sort_unstable();
    for (i, &(m, usable, size, pm)) in allocs.iter().enumerate() {
        if typed[i] {
            continue;
        }
        // The first owner pointer at or after the allocation's start, if inside it.
        let j = owned.partition_point(|&(p, _)| p < m);
        let name = match owned.get(j) {
            Some(&(p, kind)) if p < m + usable.max(1) => kind,
            _ if pm => UNTYPED_PYMALLOC,
            _ => UNTYPED_GLIBC,
        };
        let e = counts.entry(name.to_string()).or_default();
        e.0 += 1;
        e.1 += size;
    }
    let mut types: Vec<TypeCount> = counts
        .into_iter()
        .map(|(name, (count, bytes))| TypeCount { name, count, bytes })
        .collect();
    types.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    let mut freelists: Vec<FreeCount> = free
        .into_iter()
        .map(|(name, count)| FreeCount { name, count })
        .collect();
    freelists.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    Census {
        types,
        freelists,
        objects,
        free_objects,
    }
}
