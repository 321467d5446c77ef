//! The census: every live allocation of both allocators typed as a Python object, or
//! attributed to the object that owns it, or counted as untyped.

use crate::addr::Addr;
use crate::alloc::glibc::GlibcHeap;
use crate::alloc::pymalloc::PymallocHeap;
use crate::python::objects::{Special, TypeInfo, Typer};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

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

/// One typed object: 16 bytes, its type by index into `Census::type_infos`.
#[derive(Debug, Clone, Copy)]
pub struct Obj {
    pub addr: Addr,
    /// Size of the allocation holding it (block or chunk).
    pub alloc: u32,
    pub ty: u32,
}

#[derive(Debug, Default)]
pub struct Census {
    pub types: Vec<TypeCount>,
    pub freelists: Vec<FreeCount>,
    pub objects: Vec<Obj>,
    /// Free-list residents (refcount 0, type intact).
    pub free_objects: Vec<Obj>,
    pub type_infos: Vec<Arc<TypeInfo>>,
    /// Allocations of 4 GiB and more (their `Obj::alloc` is `u32::MAX`), by address.
    pub big_allocs: Vec<(Addr, u64)>,
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
        self.objects.iter().map(|o| self.alloc_size(o)).sum()
    }
}

/// Names of the buckets for allocations that are not objects.
pub const LIST_ITEMS: &str = "<list items>";
pub const DICT_KEYS: &str = "<dict keys>";
pub const DICT_VALUES: &str = "<dict values>";
pub const SET_TABLE: &str = "<set table>";
pub const UNTYPED_PYMALLOC: &str = "<untyped pymalloc>";
pub const UNTYPED_GLIBC: &str = "<untyped glibc>";

pub fn census(typer: &Typer, py: &PymallocHeap, glibc: Option<&GlibcHeap>) -> Census {
    // Per type index: (count, bytes) live, count free.
    let mut live: Vec<(u64, u64)> = Vec::new();
    let mut free: Vec<u64> = Vec::new();
    let mut objects = Vec::with_capacity(py.blocks.len());
    let mut free_objects = Vec::new();
    let mut big_allocs = Vec::new();
    let mut untyped: Vec<(u64, u64, u64, bool)> = Vec::new();
    let mut owned: Vec<(u64, &'static str)> = Vec::new();
    let glibc_allocs = glibc
        .into_iter()
        .flat_map(|g| g.live().map(|c| (c.user().0, c.usable(), c.size(), false)));
    let allocs = py
        .blocks
        .iter()
        .map(|b| (b.addr.0, b.size as u64, b.size as u64, true))
        .chain(glibc_allocs);
    for (m, usable, size, pm) in allocs {
        let Some((o, ti, zero)) = typer.classify(m, usable, pm) else {
            untyped.push((m, usable, size, pm));
            continue;
        };
        let i = ti as usize;
        if live.len() <= i {
            live.resize(i + 1, (0, 0));
            free.resize(i + 1, 0);
        }
        let rec = Obj {
            addr: Addr(o),
            alloc: size.min(u32::MAX as u64) as u32,
            ty: ti,
        };
        if zero {
            free[i] += 1;
            free_objects.push(rec);
            continue;
        }
        live[i].0 += 1;
        live[i].1 += size;
        if size >= u32::MAX as u64 {
            big_allocs.push((rec.addr, size));
        }
        objects.push(rec);
        match typer.type_by_index(ti).special {
            Special::List => {
                owned.extend(typer.u64_at(o.wrapping_add(0x18)).map(|p| (p, LIST_ITEMS)))
            }
            Special::Dict => {
                owned.extend(typer.u64_at(o.wrapping_add(0x20)).map(|p| (p, DICT_KEYS)));
                owned.extend(typer.u64_at(o.wrapping_add(0x28)).map(|p| (p, DICT_VALUES)));
            }
            Special::Set => {
                if let Some(t) = typer.u64_at(o.wrapping_add(0x28)) {
                    if t != o + 0x40 {
                        owned.push((t, SET_TABLE));
                    }
                }
            }
            _ => {}
        }
    }
    let type_infos: Vec<Arc<TypeInfo>> = (0..live.len() as u32)
        .map(|i| typer.type_by_index(i))
        .collect();
    // Allocations that are not objects: owned by an object that points into them, or untyped.
    owned.retain(|&(p, _)| p != 0);
    owned.sort_unstable();
    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
    for (i, &(c, b)) in live.iter().enumerate() {
        if c > 0 {
            let e = counts.entry(type_infos[i].name.clone()).or_default();
            e.0 += c;
            e.1 += b;
        }
    }
    for &(m, usable, size, pm) in &untyped {
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
    let mut fl: HashMap<String, u64> = HashMap::new();
    for (i, &n) in free.iter().enumerate() {
        if n > 0 {
            *fl.entry(type_infos[i].name.clone()).or_default() += n;
        }
    }
    let mut freelists: Vec<FreeCount> = fl
        .into_iter()
        .map(|(name, count)| FreeCount { name, count })
        .collect();
    freelists.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    Census {
        types,
        freelists,
        objects,
        free_objects,
        type_infos,
        big_allocs: {
            big_allocs.sort_unstable();
            big_allocs
        },
    }
}
