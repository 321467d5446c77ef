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

use crate::addr::Addr;
use crate::alloc::glibc::GlibcHeap;
use crate::alloc::pymalloc::PymallocHeap;
use crate::python::objects::{Special, TypeInfo, Typer};
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
    /// Free-list residents (refcount 0, type intact, a free-list type of the version).
    pub free_objects: Vec<Obj>,
    pub type_infos: Vec<Arc<TypeInfo>>,
    /// Objects dropped because their type was not live (stale type pointers).
    pub dead_type_objects: u64,
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
/// 3.8-3.10 dead frames kept by their code objects (co_zombieframe).
pub const ZOMBIE_FRAMES: &str = "<zombie frames>";

/// The row name of an instance's separately allocated attribute values.
pub fn attributes_row(type_name: &str) -> String {
    format!("<attributes of {type_name}>")
}

/// Who owns an allocation that is not an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Fixed(&'static str),
    /// Attribute values of an instance of this type index.
    Attrs(u32),
    /// A native buffer row (index into `Typer::native_rows`).
    Native(u32),
}

/// An allocation: user address, usable bytes, size, from pymalloc.
type Alloc = (u64, u64, u64, bool);

/// `float_free`: the blocks on the float free lists (python/floats.rs), which keep no type
/// pointer (3.8-3.13 link them through `ob_type`): `float` free-list residents.
pub fn census(
    typer: &Typer,
    py: &PymallocHeap,
    glibc: Option<&GlibcHeap>,
    float_free: &FxHashSet<u64>,
) -> Census {
    // One stream of both allocators in address order: the census's objects come out sorted.
    let allocs = crate::alloc::live(glibc, Some(py)).map(|a| {
        (
            a.addr.0,
            a.usable,
            a.size,
            a.allocator == crate::alloc::Allocator::Pymalloc,
        )
    });
    census_of_with(typer, allocs, float_free)
}

/// An object found in an allocation, in 24 bytes: the allocation is known again from the
/// object (its start `m_off` bytes before, its usable bytes `less` under its size).
#[derive(Clone, Copy)]
struct Found {
    obj: Obj,
    m_off: u32,
    less: u8,
    pm: bool,
    /// A free-list resident.
    zero: bool,
}

impl Found {
    fn alloc(&self, big: &FxHashMap<u64, u64>) -> Alloc {
        let size = match self.obj.alloc {
            u32::MAX => big
                .get(&self.obj.addr.0)
                .copied()
                .unwrap_or(u32::MAX as u64),
            n => n as u64,
        };
        (
            self.obj.addr.0.wrapping_sub(self.m_off as u64),
            size - (self.less as u64).min(size),
            size,
            self.pm,
        )
    }
}

/// The census of the given live allocations: (user address, usable bytes, size, from
/// pymalloc).
pub fn census_of(typer: &Typer, allocs: impl Iterator<Item = (u64, u64, u64, bool)>) -> Census {
    census_of_with(typer, allocs, &FxHashSet::default())
}

/// [`census_of`], with the blocks on the float free lists (`census`).
pub fn census_of_with(
    typer: &Typer,
    allocs: impl Iterator<Item = (u64, u64, u64, bool)>,
    float_free: &FxHashSet<u64>,
) -> Census {
    let mut found: Vec<Found> = Vec::new();
    let mut untyped: Vec<Alloc> = Vec::new();
    // Sizes of allocations of 4 GiB and more, by object address (Obj::alloc saturates).
    let mut big: FxHashMap<u64, u64> = FxHashMap::default();
    let float_ty = match float_free.is_empty() {
        true => None,
        false => typer
            .special_type(Special::Float)
            .and_then(|t| typer.type_index(t)),
    };
    for a in allocs {
        let (m, usable, size, pm) = a;
        // A float on the float free list: its ob_type is the next link, not its type.
        let on_float_list = pm && float_free.contains(&m);
        let classified = match float_ty {
            Some(fi) if on_float_list => Some((m, fi, true)),
            _ => typer.classify(m, usable, pm),
        };
        let Some((o, ti, zero)) = classified else {
            untyped.push(a);
            continue;
        };
        let (Ok(m_off), Ok(less)) = (
            u32::try_from(o.wrapping_sub(m)),
            u8::try_from(size - usable.min(size)),
        ) else {
            untyped.push(a);
            continue;
        };
        let rec = Obj {
            addr: Addr(o),
            alloc: size.min(u32::MAX as u64) as u32,
            ty: ti,
        };
        if size >= u32::MAX as u64 {
            big.insert(o, size);
        }
        found.push(Found {
            obj: rec,
            m_off,
            less,
            pm,
            zero,
        });
    }
    // Only objects of live types: static types in module images, heap types found live.
    let mut dead_type_objects = 0;
    let mut zombie_rows: (u64, u64) = (0, 0);
    for _round in 0..16 {
        let ntypes = found
            .iter()
            .map(|f| f.obj.ty as usize + 1)
            .max()
            .unwrap_or(0);
        let mut type_addrs: FxHashSet<u64> = FxHashSet::default();
        for i in 0..ntypes as u32 {
            let t = typer.type_by_index(i).addr.0;
            if !typer.in_image(t) {
                type_addrs.insert(t);
            }
        }
        let live_heap_types: FxHashSet<u64> = found
            .iter()
            .filter(|f| !f.zero && type_addrs.contains(&f.obj.addr.0))
            .map(|f| f.obj.addr.0)
            .collect();
        let live: Vec<bool> = (0..ntypes as u32)
            .map(|i| {
                let t = typer.type_by_index(i).addr.0;
                typer.in_image(t) || live_heap_types.contains(&t)
            })
            .collect();
        let before = found.len();
        found.retain(|f| {
            let keep = live[f.obj.ty as usize];
            if !keep {
                untyped.push(f.alloc(&big));
            }
            keep
        });
        dead_type_objects += (before - found.len()) as u64;
        if found.len() == before {
            break;
        }
    }
    // 3.8-3.10: a code object's zombie frame (refcount 0) is kept by the code, not on the
    // frame free list: charged to its own row.
    let mut zombies: FxHashSet<u64> = FxHashSet::default();
    if let Some(off) = typer.layout().code_zombieframe {
        for f in found.iter().filter(|f| !f.zero) {
            if typer.is_code_type(typer.type_by_index(f.obj.ty).addr.0) {
                if let Some(z) = typer
                    .u64_at(f.obj.addr.0.wrapping_add(off))
                    .filter(|&z| z != 0)
                {
                    zombies.insert(z);
                }
            }
        }
    }
    found.retain(|f| {
        let zombie = f.zero && zombies.contains(&f.obj.addr.0);
        if zombie {
            let (_, _, size, _) = f.alloc(&big);
            zombie_rows.0 += 1;
            zombie_rows.1 += size;
        }
        !zombie
    });
    // Per type index: (count, bytes) live, count free.
    let ntypes = found
        .iter()
        .map(|f| f.obj.ty as usize + 1)
        .max()
        .unwrap_or(0);
    let mut live: Vec<(u64, u64)> = vec![(0, 0); ntypes];
    let mut free: Vec<u64> = vec![0; ntypes];
    let mut free_objects = Vec::new();
    let mut big_allocs = Vec::new();
    let mut owned: Vec<(u64, Owner)> = Vec::new();
    for f in &found {
        let (rec, size, zero) = (f.obj, f.alloc(&big).2, f.zero);
        let i = rec.ty as usize;
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
        let o = rec.addr.0;
        let ti = typer.type_by_index(rec.ty);
        match ti.special {
            Special::List => owned.extend(
                typer
                    .u64_at(typer.field(o, 0x18))
                    .map(|p| (p, Owner::Fixed(LIST_ITEMS))),
            ),
            Special::Dict => {
                owned.extend(
                    typer
                        .u64_at(typer.field(o, 0x20))
                        .map(|p| (p, Owner::Fixed(DICT_KEYS))),
                );
                owned.extend(
                    typer
                        .u64_at(typer.field(o, 0x28))
                        .map(|p| (p, Owner::Fixed(DICT_VALUES))),
                );
            }
            Special::Set => {
                if let Some(t) = typer.u64_at(typer.field(o, 0x28)) {
                    if t != typer.field(o, 0x40) {
                        owned.push((t, Owner::Fixed(SET_TABLE)));
                    }
                }
            }
            _ => {}
        }
        if let Some(v) = typer.separate_values(o, &ti) {
            owned.push((v, Owner::Attrs(rec.ty)));
        }
        for &(off, row) in &ti.native {
            if let Some(p) = typer.u64_at(o.wrapping_add(off)) {
                owned.push((p, Owner::Native(row)));
            }
        }
    }
    // The live objects, collected in place: the 24-byte records' memory holds the 16-byte
    // ones (Vec's in-place collect), so the census never holds both lists at once.
    let mut objects: Vec<Obj> = found
        .into_iter()
        .filter(|f| !f.zero)
        .map(|f| f.obj)
        .collect();
    objects.shrink_to_fit();
    let type_infos: Vec<Arc<TypeInfo>> =
        (0..ntypes as u32).map(|i| typer.type_by_index(i)).collect();
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
            Some(&(p, kind)) if p < m + usable.max(1) => match kind {
                Owner::Fixed(n) => n.to_string(),
                Owner::Attrs(t) => attributes_row(&type_infos[t as usize].name),
                Owner::Native(r) => typer.native_rows()[r as usize].clone(),
            },
            _ if pm => UNTYPED_PYMALLOC.to_string(),
            _ => UNTYPED_GLIBC.to_string(),
        };
        let e = counts.entry(name).or_default();
        e.0 += 1;
        e.1 += size;
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
        dead_type_objects,
        big_allocs: {
            big_allocs.sort_unstable();
            big_allocs
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocations of 4 GiB and more keep their size (a saturating u32 made totals disagree).
    #[test]
    fn sizes_of_4_gib_and_more_are_exact() {
        let big = 6u64 << 30;
        let c = Census {
            objects: vec![
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
            ],
            big_allocs: vec![(Addr(0x7f00_0000_0000), big)],
            ..Default::default()
        };
        assert_eq!(c.alloc_size(&c.objects[1]), big);
        assert_eq!(c.live_bytes(), big + 64);
    }
}
