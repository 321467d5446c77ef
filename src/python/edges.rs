//! References between Python objects: for each object, the objects it holds a strong
//! reference to, and how (a list index, a dict key, an attribute, a field), per CPython
//! version 3.8-3.14. The rules follow each type's `tp_traverse` (round2-facts.md §D.1,
//! §D.2) and add the references `tp_traverse` skips but that own memory (str keys of
//! dicts). Types whose layout is not modelled here (C extension types, functions, cells,
//! modules, code, frames, generators) are scanned conservatively: every aligned word of
//! the object's own memory that is the address of a live object is a reference. That finds
//! what their `tp_traverse` visits (func_closure, cell ob_ref, md_dict, a frame's
//! f_localsplus) and also what C structures hold without visiting (an lru_cache's dict).
//!
//! Every count read from the core is bounded; unreadable tables are counted in
//! [`Edges::damaged`] and give no edges.

use crate::image::memory::Reader;
use crate::image::process::Process;
use crate::models::{CpythonModel, DictKeys, Objects};
use crate::python::containers::{Layout, SET_BASICSIZE};
use crate::python::objects::{SizeRule, Special, TypeInfo, Typer};
use crate::python::typeobj::{
    F_DICT_SUBCLASS, F_HEAPTYPE, F_INLINE_VALUES, F_LIST_SUBCLASS, F_MANAGED_DICT,
    F_TUPLE_SUBCLASS, F_TYPE_SUBCLASS, TP_BASICSIZE, TP_DICTOFFSET, TP_WEAKLIST, TP_WEAKLISTOFFSET,
};
use std::borrow::Cow;
use std::cell::Cell;

/// Largest container read (items, dict entries, set slots): a garbage size field reads
/// no more than this and is reported as damage.
const MAX_ITEMS: u64 = 1 << 27;

/// How an object holds a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Index in a list or tuple.
    Item(u64),
    /// A dict key (the key object itself).
    Key,
    /// A dict value, by its key object.
    Value(u64),
    /// An instance attribute (managed dict values, inline values), by its name object.
    Attr(u64),
    /// A set member.
    Member,
    /// The object's type (instances of heap types own a reference to it).
    Type,
    /// The instance `__dict__`.
    InstanceDict,
    /// A word of the object found by the conservative scan, at this offset.
    Field(u64),
}

pub struct Edges<'a> {
    r: Reader<'a>,
    om: &'a Objects,
    /// CPython minor version (8 ..= 14).
    pub minor: u32,
    typer: &'a Typer<'a>,
    damaged: Cell<u64>,
    /// The model's `header_shift`: free-threaded builds' object fields are 0x10 further.
    hs: u64,
}

impl<'a> Edges<'a> {
    pub fn new(p: &'a Process, model: &'a CpythonModel, typer: &'a Typer<'a>) -> Edges<'a> {
        let minor = model
            .first
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(14);
        Edges {
            r: Reader { space: &p.space },
            om: &model.objects,
            minor,
            typer,
            damaged: Cell::new(0),
            hs: model.objects.header_shift,
        }
    }

    /// The field at GIL-build offset `off` of the object at `o` (Typer::f's rule).
    fn f(&self, o: u64, off: u64) -> u64 {
        // `o` may be any word read from the core: wrapping, as Typer::f.
        o.wrapping_add(off).wrapping_add(self.hs)
    }

    /// Containers whose tables could not be read or had impossible sizes.
    pub fn damaged(&self) -> u64 {
        self.damaged.get()
    }

    // Reads go through the thread's typer (its hot regions), not the shared space.
    fn u64(&self, a: u64) -> Option<u64> {
        self.typer.u64_at(a)
    }
    fn u8(&self, a: u64) -> Option<u8> {
        self.typer.bytes_at(a, 1).map(|b| b[0])
    }

    /// `n` words at `a`, or None (and a damage count) when unreadable. Borrowed from the
    /// core when they lie in one piece of it (the usual case: no copy, no allocation per
    /// container); copied when they span pieces.
    fn words(&self, a: u64, n: u64) -> Option<Cow<'a, [u64]>> {
        if n == 0 {
            return Some(Cow::Borrowed(&[]));
        }
        if n > MAX_ITEMS || a % 8 != 0 {
            self.damage();
            return None;
        }
        #[cfg(target_endian = "little")]
        if let Some(b) = self.typer.bytes_at(a, n * 8) {
            // SAFETY: u64 has no invalid bit patterns; align_to only returns the aligned
            // middle, used when it is the whole slice.
            let (pre, mid, post) = unsafe { b.align_to::<u64>() };
            if pre.is_empty() && post.is_empty() {
                return Some(Cow::Borrowed(mid));
            }
        }
        let mut buf = vec![0u8; (n * 8) as usize];
        if self.r.space.read(crate::addr::Addr(a), &mut buf).is_err() {
            self.damage();
            return None;
        }
        Some(Cow::Owned(
            buf.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ))
    }

    fn damage(&self) {
        self.damaged.set(self.damaged.get() + 1);
    }

    /// Every strong reference of the object at `o` (of type `ti`, in an allocation ending at
    /// `end`), in the order its `tp_traverse` would visit them. Targets may be any value:
    /// the caller keeps those that are live objects.
    pub fn for_each(&self, o: u64, ti: &TypeInfo, end: u64, f: &mut dyn FnMut(u64, Via)) {
        match ti.special {
            Special::Str | Special::Int | Special::Float | Special::Bytes => {}
            Special::Tuple => self.tuple(o, f),
            Special::List => self.list(o, f),
            Special::Dict => self.dict(o, f),
            Special::Set => self.set(o, f),
            Special::None => self.other(o, ti, end, f),
        }
    }

    fn tuple(&self, o: u64, f: &mut dyn FnMut(u64, Via)) {
        let Some(n) = self.u64(self.f(o, 0x10)) else {
            return;
        };
        if let Some(items) = self.words(o.wrapping_add(self.om.tuple_items), n) {
            for (i, v) in items.iter().copied().enumerate() {
                f(v, Via::Item(i as u64));
            }
        }
    }

    fn list(&self, o: u64, f: &mut dyn FnMut(u64, Via)) {
        // PyListObject {ob_refcnt, ob_type, ob_size, ob_item, allocated} (listobject.h):
        // items [0, ob_size) of the separate ob_item array; slots past ob_size are stale.
        let (Some(n), Some(items), Some(alloc)) = (
            self.u64(self.f(o, 0x10)),
            self.u64(self.f(o, 0x18)),
            self.u64(self.f(o, 0x20)),
        ) else {
            return;
        };
        if n == 0 || items == 0 {
            return;
        }
        if n > alloc {
            self.damage();
            return;
        }
        if let Some(v) = self.words(items, n) {
            for (i, x) in v.iter().copied().enumerate() {
                f(x, Via::Item(i as u64));
            }
        }
    }

    /// Entries (key, value) of a dict's table; `values` is the split table's values
    /// array (already past any header), or 0.
    fn dict(&self, d: u64, f: &mut dyn FnMut(u64, Via)) {
        let (Some(keys), Some(values)) = (self.u64(self.f(d, 0x20)), self.u64(self.f(d, 0x28)))
        else {
            return;
        };
        if keys == 0 {
            return;
        }
        let Some((entries, n, esize, koff, voff)) = self.keys_layout(keys) else {
            return;
        };
        let vals = if values == 0 {
            None
        } else if self.minor >= 13 {
            // 3.13+ PyDictValues {u8 capacity, size, embedded, valid; values[]}: embedded
            // values belong to the owning object, which visits them (dictobject.c
            // dict_traverse, 3.13.5 l.4548-4579).
            if self.u8(values.wrapping_add(2)).unwrap_or(0) != 0 {
                Some(None)
            } else {
                Some(Some(values.wrapping_add(8)))
            }
        } else {
            Some(Some(values))
        };
        let Some(table) = self.words(entries, n * esize / 8) else {
            return;
        };
        let split = match vals {
            Some(Some(v)) => self.words(v, n),
            _ => None,
        };
        for i in 0..n as usize {
            let e = i * (esize / 8) as usize;
            let k = table[e + (koff / 8) as usize];
            if k == 0 {
                continue;
            }
            let v = match (&vals, &split) {
                (None, _) => table[e + (voff / 8) as usize],
                (Some(_), Some(s)) => s[i],
                (Some(_), None) => 0,
            };
            // A deleted entry keeps no key (3.8-3.10 it keeps the dummy key, which is not
            // a heap object) and no value.
            if v == 0 && vals.is_none() {
                continue;
            }
            // A split table's keys belong to the shared keys object (the type's
            // ht_cached_keys), not to this dict.
            if vals.is_none() {
                f(k, Via::Key);
            }
            if v != 0 {
                f(v, Via::Value(k));
            }
        }
    }

    /// (first entry, dk_nentries, entry size, key offset, value offset) of a keys table.
    fn keys_layout(&self, keys: u64) -> Option<(u64, u64, u64, u64, u64)> {
        match self.om.dict_keys {
            // 3.8-3.10 PyDictKeysObject {dk_refcnt, dk_size, dk_lookup, dk_usable,
            // dk_nentries, dk_indices[]} (Objects/dict-common.h); entries {hash, key, value}.
            DictKeys::V1 => {
                let size = self.u64(keys.wrapping_add(8))?;
                if size == 0 || size > MAX_ITEMS || !size.is_power_of_two() {
                    self.damage();
                    return None;
                }
                let ix = match size {
                    0..=0xff => 1,
                    0x100..=0xffff => 2,
                    0x1_0000..=0xffff_ffff => 4,
                    _ => 8,
                };
                let n = self.u64(keys.wrapping_add(0x20))?;
                if n > size {
                    self.damage();
                    return None;
                }
                // Addresses read from the core: wrapping, an address past the top is unreadable.
                Some((keys.wrapping_add(0x28 + size * ix), n, 24, 8, 16))
            }
            // 3.11+ {dk_refcnt, u8 dk_log2_size, dk_log2_index_bytes, dk_kind, u32 version,
            // dk_usable, dk_nentries, indices} (Include/internal/pycore_dict.h); general
            // entries {hash, key, value}, unicode and split entries {key, value}.
            DictKeys::V2 => {
                let log2 = self.u8(keys.wrapping_add(8))?;
                let ib = self.u8(keys.wrapping_add(9))?;
                let kind = self.u8(keys.wrapping_add(10))?;
                if log2 > 27 || ib > 30 || kind > 2 {
                    self.damage();
                    return None;
                }
                let n = self.u64(keys.wrapping_add(0x18))?;
                if n > 1u64 << log2 {
                    self.damage();
                    return None;
                }
                let (es, ko, vo) = if kind == 0 { (24, 8, 16) } else { (16, 0, 8) };
                Some((keys.wrapping_add(0x20 + (1u64 << ib)), n, es, ko, vo))
            }
        }
    }

    fn set(&self, o: u64, f: &mut dyn FnMut(u64, Via)) {
        // PySetObject {.., fill@0x10, used@0x18, mask@0x20, table@0x28} (setobject.h);
        // entries {key, hash}; NULL and the static dummy are not members.
        let (Some(mask), Some(table)) = (self.u64(self.f(o, 0x20)), self.u64(self.f(o, 0x28)))
        else {
            return;
        };
        if table == 0 {
            return;
        }
        // mask is read from the core: mask + 1 may wrap (then it is no power of two).
        if !mask.wrapping_add(1).is_power_of_two() {
            self.damage();
            return;
        }
        if let Some(t) = self.words(table, mask.wrapping_add(1).saturating_mul(2)) {
            for k in t.chunks_exact(2).map(|c| c[0]) {
                if k != 0 {
                    f(k, Via::Member);
                }
            }
        }
    }

    /// Shared keys of a heap type's instances (split dicts, inline and managed values):
    /// the address of the first entry's key, the entry count (at most 65536) and the
    /// entry size in words.
    fn cached_keys(&self, t: u64) -> Option<(u64, u64, u64)> {
        let keys = self
            .u64(t.wrapping_add(self.om.ht_cached_keys))
            .filter(|&k| k != 0)?;
        let (entries, n, es, ko, _) = self.keys_layout(keys)?;
        Some((entries.wrapping_add(ko), n.min(1 << 16), es / 8))
    }

    /// The names in a heap type's shared keys.
    fn cached_key_names(&self, t: u64, f: &mut dyn FnMut(u64, Via)) {
        if self.u64(self.f(t, 0xa8)).unwrap_or(0) & F_HEAPTYPE == 0 {
            return;
        }
        let Some((keys, n, stride)) = self.cached_keys(t) else {
            return;
        };
        if n == 0 {
            return;
        }
        // Up to the last entry's key, not past the table's end.
        if let Some(w) = self.words(keys, (n - 1) * stride + 1) {
            for &k in w.iter().step_by(stride.max(1) as usize) {
                if k != 0 {
                    f(k, Via::Key);
                }
            }
        }
    }

    /// Attribute values of a values array, named by the type's shared keys.
    fn values(&self, t: u64, values: u64, cap: Option<u64>, f: &mut dyn FnMut(u64, Via)) {
        let Some((keys, entries, entry_words)) = self.cached_keys(t) else {
            return;
        };
        let nwords = entries * entry_words;
        let n = nwords
            / if self.om.dict_keys == DictKeys::V2 {
                2
            } else {
                3
            };
        let n = cap.map_or(n, |c| c.min(n));
        let (Some(names), Some(vals)) = (self.words(keys, nwords), self.words(values, n)) else {
            return;
        };
        let stride = (nwords / n.max(1)) as usize;
        for (i, v) in vals.iter().copied().enumerate() {
            if v != 0 {
                f(v, Via::Attr(names.get(i * stride).copied().unwrap_or(0)));
            }
        }
    }

    fn other(&self, o: u64, ti: &TypeInfo, end: u64, f: &mut dyn FnMut(u64, Via)) {
        // Frames and (3.11+) generators keep stale value-stack slots past the live top:
        // they are read precisely, never scanned.
        if ti.flags & F_HEAPTYPE == 0 {
            match ti.name.as_str() {
                "frame" => return self.frame_object(o, end, f),
                "generator" | "coroutine" | "async_generator" if self.minor >= 11 => {
                    return self.generator(o, end, f)
                }
                _ => {}
            }
        }
        let fl = ti.flags;
        let t = ti.addr.0;
        let mut skip = [u64::MAX; 3];
        let mut body_start = self.f(o, 0x10);
        if fl & F_TYPE_SUBCLASS != 0 {
            // A type object: tp_weaklist is the weakref list head, borrowed
            // (typeobject.c type_traverse skips it). tp_subclasses (3.8-3.11 a dict of
            // weakrefs to the subclasses) is not traversed either, but the type owns
            // that dict.
            skip = [self.f(o, TP_WEAKLIST), u64::MAX, u64::MAX];
            // A heap type's shared keys (ht_cached_keys, the attribute names of its
            // instances' split dicts and inline values) hold a reference to each name
            // (dictobject.c dictkeys_decref); no traverse visits them, and without them a
            // name only the instances use has more references than are found.
            self.cached_key_names(o, f);
        }
        if fl & F_HEAPTYPE != 0 {
            f(t, Via::Type);
        }
        if fl & F_DICT_SUBCLASS != 0 {
            self.dict(o, f);
            body_start = self.f(o, 0x30);
        } else if fl & F_LIST_SUBCLASS != 0 {
            self.list(o, f);
            body_start = self.f(o, 0x28);
        } else if let SizeRule::StructSeq { fields } = ti.size_rule {
            // All n_fields items, the hidden ones after ob_size's visible count too
            // (structseq_traverse); nothing else in the struct is a reference.
            if let Some(items) = self.words(o.wrapping_add(self.om.tuple_items), fields) {
                for (i, v) in items.iter().copied().enumerate() {
                    f(v, Via::Item(i as u64));
                }
            }
            return;
        } else if fl & F_TUPLE_SUBCLASS != 0 {
            self.tuple(o, f);
            body_start = self.f(o, 0x10);
        } else if ti.layout == Layout::Set {
            // A set subclass (no flag says so: the layout is its base's): its members,
            // then its own fields after the set struct (whose small table the scan would
            // read as references to stale keys).
            self.set(o, f);
            body_start = self.f(o, SET_BASICSIZE);
        }
        match (ti.layout, &self.om.deque, &self.om.odict) {
            // The items in the deque's blocks (deque_traverse visits them in order); the
            // struct's own words are block pointers and indices, no references.
            (Layout::Deque, Some(d), _) => {
                self.typer.deque_items(o, d, &mut |v, i| f(v, Via::Item(i)));
            }
            // Each node holds a reference to its key beside the dict's table (odict_traverse
            // visits the node keys, then dict_traverse the table).
            (Layout::Odict, _, Some(od)) => self.typer.odict_nodes(o, od, &mut |_, k| {
                if k != 0 {
                    f(k, Via::Key)
                }
            }),
            _ => {}
        }
        if self.minor >= 11 && fl & F_MANAGED_DICT != 0 {
            self.managed(o, ti, f);
        } else if fl & F_HEAPTYPE != 0 {
            // The dict pointer at tp_dictoffset; negative (subclasses of var-sized types:
            // int, tuple, bytes) counts from the end of the items, rounded to a pointer
            // (object.c _PyObject_GetDictPtr, 3.9.2 l.1030; -1 is 3.11+'s managed dict).
            let off = self.u64(self.f(t, TP_DICTOFFSET)).unwrap_or(0) as i64;
            let at = if off > 0 && (off as u64) < ti.basicsize {
                Some(o.wrapping_add(off as u64))
            } else if off < -1 && ti.itemsize > 0 {
                let n = self.var_items(o);
                let size = ti
                    .basicsize
                    .saturating_add(n.saturating_mul(ti.itemsize))
                    .saturating_add(7)
                    & !7;
                Some(o.wrapping_add(size).wrapping_add(off as u64))
            } else {
                None
            };
            if let Some(at) = at {
                if let Some(d) = self.u64(at).filter(|&d| d != 0) {
                    f(d, Via::InstanceDict);
                }
                skip[2] = at;
            }
        }
        // The weakref list is not ownership (typeobject.c subtype_traverse skips it).
        let wl = self.u64(self.f(t, TP_WEAKLISTOFFSET)).unwrap_or(0) as i64;
        if wl > 0 {
            // tp_weaklistoffset is read from the core: the address wraps like any other.
            skip[1] = skip[1].min(o.wrapping_add(wl as u64));
            if skip[0] == u64::MAX {
                skip[0] = o.wrapping_add(wl as u64);
            }
        }
        // The object's own memory: basicsize plus items, within its allocation. The
        // metatype's basicsize for a type object is the PyHeapTypeObject (and the
        // __slots__ member table after it).
        let mut size = ti.basicsize;
        if fl & F_TYPE_SUBCLASS != 0 {
            size = self.u64(self.f(t, TP_BASICSIZE)).unwrap_or(size);
        }
        // A code object's items are its bytecode (3.11+ co_code_adaptive), whose inline
        // caches hold borrowed pointers (3.12+ LOAD_ATTR_CLASS keeps the attribute):
        // only the fixed fields are references.
        let code = fl & F_HEAPTYPE == 0 && ti.name == "code";
        if ti.itemsize > 0
            && !code
            && !ti.scalar_items
            && fl & (F_TUPLE_SUBCLASS | F_LIST_SUBCLASS) == 0
        {
            let n = (self.u64(self.f(o, 0x10)).unwrap_or(0) as i64).unsigned_abs();
            size = size.saturating_add(n.saturating_mul(ti.itemsize));
        }
        // A code object's references all come before co_weakreflist (PyCode_Type's
        // tp_weaklistoffset); after it are native pointers only (co_extra; 3.8-3.10
        // co_opcache; 3.12+ co_executors, _co_cached, _co_monitoring: Include/cpython/
        // code.h), which may still hold the address of a block freed and reused since —
        // on a 3.14 core such a word named a Record's payload bytes as the code's.
        if code && wl > 0 {
            size = size.min(wl as u64);
        }
        let stop = o.saturating_add(size).min(end);
        if stop <= body_start {
            return;
        }
        // 3.13+ inline values are after the object and visited by managed() precisely.
        if let Some(w) = self.words(body_start, (stop - body_start) / 8) {
            for (i, v) in w.iter().copied().enumerate() {
                let a = body_start + 8 * i as u64;
                if v != 0
                    && v % 8 == 0
                    && !skip.contains(&a)
                    && !ti.weak.contains(&a.wrapping_sub(o))
                {
                    // A code object references only tuples, bytes and strs (co_consts,
                    // co_names, co_filename, co_linetable ...: code.h); its other words
                    // are counters, ids and native pointers.
                    if code && !self.is_code_part(v) {
                        continue;
                    }
                    // `body_start` wraps with `o` near the top: so does the offset.
                    f(v, Via::Field(a.wrapping_sub(o)));
                }
            }
        }
    }

    fn is_code_part(&self, v: u64) -> bool {
        self.u64(self.f(v, 8))
            .and_then(|t| self.typer.type_info(t))
            .is_some_and(|t| matches!(t.special, Special::Tuple | Special::Bytes | Special::Str))
    }

    /// Words [a, b) as references (a conservative scan of known pointer fields).
    fn scan(&self, o: u64, a: u64, b: u64, f: &mut dyn FnMut(u64, Via)) {
        if b <= a {
            return;
        }
        if let Some(w) = self.words(a, (b - a) / 8) {
            for (i, v) in w.iter().copied().enumerate() {
                if v != 0 && v % 8 == 0 {
                    f(v, Via::Field((a + 8 * i as u64).wrapping_sub(o)));
                }
            }
        }
    }

    /// A 3.14 `_PyStackRef` (tagged: pointer = bits & ~1; `bits & 3 == 3` is a tagged
    /// int), or a plain pointer before 3.14 (round2-facts.md §B.2).
    fn stackref(&self, bits: u64) -> u64 {
        if self.minor >= 14 {
            if bits & 3 == 3 {
                0
            } else {
                bits & !1
            }
        } else {
            bits
        }
    }

    /// A frame object. 3.8-3.10 `PyFrameObject` (frameobject.h; frame_traverse,
    /// 3.9.2 frameobject.c:623-645): f_back, f_code, f_builtins, f_globals, f_locals,
    /// f_trace, the locals/cells/frees up to f_valuestack, and the value stack up to
    /// f_stacktop (3.8/3.9; NULL while running) or f_valuestack + f_stackdepth (3.10).
    /// 3.11+: f_back, f_trace (and 3.13+ the locals caches) in the header, and the
    /// interpreter frame when the frame object owns it (`f_frame` points into itself).
    fn frame_object(&self, o: u64, end: u64, f: &mut dyn FnMut(u64, Via)) {
        if self.minor <= 10 {
            let (trace, plus) = if self.minor == 10 {
                (0x48, 0x160)
            } else {
                (0x50, 0x168)
            };
            self.scan(o, self.f(o, 0x18), self.f(o, 0x40), f);
            self.scan(o, o.wrapping_add(trace), o.wrapping_add(trace + 8), f);
            let Some(vs) = self.u64(self.f(o, 0x40)) else {
                return;
            };
            // Bounds of an object read from the core: saturating (a frame ending past the
            // top of the space has no value stack to read).
            if vs < o.saturating_add(plus) || vs > end {
                return;
            }
            self.scan(o, o.wrapping_add(plus), vs, f);
            let top = if self.minor == 10 {
                let depth = self.r.u32(crate::addr::Addr(self.f(o, 0x50))).unwrap_or(0) as u64;
                vs.saturating_add(8 * depth)
            } else {
                self.u64(self.f(o, 0x48)).unwrap_or(0)
            };
            if top > vs && top <= end {
                self.scan(o, vs, top, f);
            }
            return;
        }
        // f_back 0x10, f_frame 0x18, f_trace 0x20, then ints; 3.13+ f_extra_locals 0x30
        // and f_locals_cache 0x38 (3.13.5 pycore_frame.h struct _frame).
        self.scan(o, self.f(o, 0x10), self.f(o, 0x18), f);
        self.scan(o, self.f(o, 0x20), self.f(o, 0x28), f);
        if self.minor >= 13 {
            self.scan(o, self.f(o, 0x30), self.f(o, 0x40), f);
        }
        let Some(fr) = self.u64(self.f(o, 0x18)) else {
            return;
        };
        if fr > o && fr < end {
            self.interp_frame(o, fr, end, f);
        }
    }

    /// A 3.11+ generator, coroutine or async generator (`_PyGenObject_HEAD`, 3.11-3.14
    /// genobject.h; gen_traverse 3.13.5 genobject.c:46-62): name, qualname, the
    /// exception state and origin/finalizer, and the embedded frame at 0x48 unless
    /// completed or cleared (gi_frame_state at 0x43 >= FRAME_COMPLETED); 3.12+ offsets
    /// (3.14 `_Py_DebugOffsets.gen_object`: gi_iframe 0x48, gi_frame_state 0x43).
    fn generator(&self, o: u64, end: u64, f: &mut dyn FnMut(u64, Via)) {
        // 3.11 has gi_code first (3.11 genobject.h), so everything after it is 8 bytes
        // further: weakreflist 0x18, frame state 0x4b, frame 0x50.
        let (shift, fields) = if self.minor == 11 {
            (8, &[0x10u64][..])
        } else {
            (0, &[][..])
        };
        for &off in fields {
            self.scan(o, o.wrapping_add(off), o.wrapping_add(off + 8), f);
        }
        self.scan(
            o,
            self.f(o, 0x18).wrapping_add(shift),
            self.f(o, 0x40).wrapping_add(shift),
            f,
        );
        let state = self.u8(self.f(o, 0x43).wrapping_add(shift)).unwrap_or(0) as i8;
        if state < 1 {
            self.interp_frame(o, self.f(o, 0x48).wrapping_add(shift), end, f);
        }
    }

    /// `_PyInterpreterFrame` (round2-facts.md §B.2, §D.1 `_PyFrame_Traverse`): the code,
    /// the function and f_locals, then localsplus up to the stack top.
    fn interp_frame(&self, o: u64, fr: u64, end: u64, f: &mut dyn FnMut(u64, Via)) {
        let (fields, plus): (&[u64], u64) = match self.minor {
            11 => (&[0x0, 0x18, 0x20], 0x48),
            12 | 13 => (&[0x0, 0x10, 0x28], 0x48),
            _ => (&[0x0, 0x10, 0x28], 0x50),
        };
        for &off in fields {
            if let Some(v) = self.u64(fr.wrapping_add(off)) {
                let v = self.stackref(v);
                if v != 0 {
                    f(v, Via::Field(fr.wrapping_add(off).wrapping_sub(o)));
                }
            }
        }
        // `fr` is read from the core (or wraps with `o`): localsplus past the top of the
        // space is an impossible frame.
        let Some(base) = fr.checked_add(plus) else {
            self.damage();
            return;
        };
        let n = if self.minor >= 14 {
            let sp = self.u64(fr.wrapping_add(0x40)).unwrap_or(0);
            if sp < base || sp > end {
                return;
            }
            (sp - base) / 8
        } else {
            self.r
                .u32(crate::addr::Addr(fr.wrapping_add(0x40)))
                .unwrap_or(0) as u64
        };
        if base.checked_add(8 * n).is_none_or(|e| e > end) {
            self.damage();
            return;
        }
        if let Some(w) = self.words(base, n) {
            for (i, v) in w.iter().copied().enumerate() {
                let v = self.stackref(v);
                if v != 0 {
                    f(v, Via::Field((base + 8 * i as u64).wrapping_sub(o)));
                }
            }
        }
    }

    /// Items of a var-sized object: |ob_size|, or for 3.12+ ints the digit count in
    /// lv_tag (Include/cpython/longintrepr.h).
    fn var_items(&self, o: u64) -> u64 {
        let v = self.u64(self.f(o, 0x10)).unwrap_or(0);
        if self.om.int_size == crate::models::IntSize::LvTag && self.is_int_subclass(o) {
            v >> 3
        } else {
            (v as i64).unsigned_abs()
        }
        .min(MAX_ITEMS)
    }

    fn is_int_subclass(&self, o: u64) -> bool {
        const F_LONG_SUBCLASS: u64 = 1 << 24;
        self.u64(self.f(o, 8))
            .and_then(|t| self.u64(self.f(t, 0xa8)))
            .is_some_and(|f| f & F_LONG_SUBCLASS != 0)
    }

    /// 3.11+ managed dicts: pre-header words before the object (round2-facts.md §D.2).
    fn managed(&self, o: u64, ti: &TypeInfo, f: &mut dyn FnMut(u64, Via)) {
        let t = ti.addr.0;
        let w = self
            .u64(o.wrapping_sub(if self.minor >= 13 {
                self.om.managed_dict
            } else {
                24
            }))
            .unwrap_or(0);
        match self.minor {
            11 => {
                // 3.11 pycore_object.h: dict at -3 words, values at -4 words.
                if w != 0 {
                    f(w, Via::InstanceDict);
                }
                let v = self.u64(o.wrapping_sub(32)).unwrap_or(0);
                if v != 0 {
                    self.values(t, v, None, f);
                }
            }
            12 => {
                // 3.12 PyDictOrValues: odd = values - 1, even = dict.
                if w & 1 == 1 {
                    self.values(t, w.wrapping_add(1), None, f);
                } else if w != 0 {
                    f(w, Via::InstanceDict);
                }
            }
            _ => {
                if w != 0 && w & 1 == 0 {
                    f(w, Via::InstanceDict);
                }
                if ti.flags & F_INLINE_VALUES != 0 {
                    // 3.13+ inline values at obj + tp_basicsize: {capacity, size,
                    // embedded, valid, values[capacity]} (pycore_object.h
                    // _PyObject_InlineValues); invalid ones were moved to the dict.
                    let iv = o.wrapping_add(ti.basicsize);
                    let cap = self.u8(iv).unwrap_or(0) as u64;
                    if self.u8(iv.wrapping_add(3)).unwrap_or(0) != 0 {
                        self.values(t, iv.wrapping_add(8), Some(cap), f);
                    }
                }
            }
        }
    }

    /// Owned buffers (separate allocations whose memory belongs to the object): a list's
    /// item array, a dict's keys (unless shared) and values, a set's table, an
    /// instance's values (3.11/3.12), a heap type's shared keys. Pointers may point inside
    /// the allocation (3.11+ values arrays have a prefix).
    pub fn buffers(&self, o: u64, ti: &TypeInfo, f: &mut dyn FnMut(u64)) {
        let fl = ti.flags;
        let dict = ti.layout.is_dict() || fl & F_DICT_SUBCLASS != 0;
        let list = ti.layout == Layout::List || fl & F_LIST_SUBCLASS != 0;
        if list {
            if let Some(p) = self.u64(self.f(o, 0x18)).filter(|&p| p != 0) {
                f(p);
            }
        }
        if dict {
            let values = self.u64(self.f(o, 0x28)).unwrap_or(0);
            if values == 0 {
                if let Some(k) = self.u64(self.f(o, 0x20)).filter(|&p| p != 0) {
                    f(k);
                }
            } else if !(self.minor >= 13 && self.u8(values.wrapping_add(2)).unwrap_or(0) != 0) {
                f(values);
            }
        }
        if ti.layout == Layout::Set {
            if let Some(t) = self.u64(self.f(o, 0x28)) {
                if t != 0 && t != self.f(o, 0x40) {
                    f(t);
                }
            }
        }
        // What the census charges to native rows: a bytearray's or array's buffer, a
        // deque's blocks, an OrderedDict's nodes.
        self.typer.native_owned(o, ti, &mut |p, _| f(p));
        if fl & F_TYPE_SUBCLASS != 0 {
            if let Some(k) = self
                .u64(o.wrapping_add(self.om.ht_cached_keys))
                .filter(|&p| p != 0)
            {
                if self.u64(self.f(o, 0xa8)).unwrap_or(0) & F_HEAPTYPE != 0 {
                    f(k);
                }
            }
        }
        if (11..=12).contains(&self.minor) && fl & F_MANAGED_DICT != 0 {
            let v = if self.minor == 11 {
                self.u64(o.wrapping_sub(32)).unwrap_or(0)
            } else {
                let w = self.u64(o.wrapping_sub(24)).unwrap_or(0);
                if w & 1 == 1 {
                    w.wrapping_add(1)
                } else {
                    0
                }
            };
            if v != 0 {
                f(v);
            }
        }
    }

    /// A str object's text, for names in paths.
    pub fn name(&self, o: u64) -> Option<String> {
        self.typer.read_str(o)
    }

    /// How `via` reads in a path: `[4711]`, `['_registry']`, `.body`.
    pub fn describe(&self, via: Via) -> String {
        let key = |k: u64| match self.typer.read_str(k) {
            Some(s) => format!("'{}'", crate_str(&s)),
            None => format!("<key 0x{k:x}>"),
        };
        match via {
            Via::Item(i) => format!("[{i}]"),
            Via::Key => "(key)".into(),
            Via::Value(k) => format!("[{}]", key(k)),
            Via::Attr(k) => match self.typer.read_str(k) {
                Some(s) => format!(".{}", crate_str(&s)),
                None => ".?".into(),
            },
            Via::Member => "(member)".into(),
            Via::Type => "(type)".into(),
            Via::InstanceDict => ".__dict__".into(),
            Via::Field(off) => format!("(field +0x{off:x})"),
        }
    }
}

fn crate_str(s: &str) -> String {
    let mut t: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        t.push('…');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Addr;
    use crate::image::testcore::RW;
    use crate::python::objects::tests::{model, typer, Fake, BASE};

    fn info(addr: u64, name: &str, flags: u64) -> TypeInfo {
        TypeInfo {
            addr: Addr(addr),
            name: name.into(),
            basicsize: 0x170,
            itemsize: 8,
            flags,
            special: Special::None,
            size_rule: SizeRule::Var,
            freelist: false,
            native: Vec::new(),
            weak: Vec::new(),
            layout: Layout::Plain,
            scalar_items: false,
        }
    }

    /// Objects at the top of the address space (fields past 2^64 wrap to the bottom, a
    /// readable page here) and a tp_weaklistoffset of garbage: no overflow in the field
    /// addresses, bounds or offsets (debug builds check).
    #[test]
    fn objects_at_the_top_of_the_space() {
        let mut f = Fake::new();
        f.core.segment(0, 0x1000, RW);
        // Words at the bottom, where fields of an object near 2^64 wrap to.
        for a in (0..0x100).step_by(8) {
            f.core.u64(a, 0x2000 + a);
        }
        let t = f.static_type("blob", 0x20, 0, 0);
        f.core.u64(t + TP_WEAKLISTOFFSET, i64::MAX as u64 & !7);
        let p = f.core.process();
        for v in ["3.10", "3.11", "3.12", "3.14"] {
            let m = model(v);
            let ty = typer(&p, &m, vec![]);
            let e = Edges::new(&p, &m, &ty);
            let mut n = 0;
            let mut count = |_: u64, _: Via| n += 1;
            for o in (1..0x20).map(|k| 0u64.wrapping_sub(8 * k)) {
                for name in ["frame", "generator", "blob"] {
                    e.for_each(o, &info(t, name, 0), u64::MAX, &mut count);
                    e.for_each(o, &info(BASE + 0x7f00, name, 0), u64::MAX, &mut count);
                }
            }
            e.for_each(1 << 63, &info(t, "blob", 0), u64::MAX, &mut count);
        }
    }

    /// A weak reference holds its callback only (weakref's gc_traverse): its referent
    /// (wr_object, a stealth reference) and its neighbours on the referent's list
    /// (wr_prev, wr_next) are no references, also in a subclass (KeyedRef, WeakMethod);
    /// the hash and the vectorcall pointer are words the graph then finds no object at.
    /// A struct sequence (os.stat_result) allocates n_fields items, ob_size counts the
    /// visible ones: it is sized by n_fields (else the census finds no object in its block)
    /// and its hidden fields are references too (structseq_traverse). Here a static type
    /// (no tp_dict, as 3.12+ builtins): n_fields from its last named member.
    #[test]
    fn struct_sequences_hold_their_hidden_fields() {
        use crate::python::typeobj::{TP_BASE, TP_MEMBERS};
        let heap = BASE + 0x2_0000;
        for v in ["3.8", "3.12", "3.13", "3.14"] {
            let m = model(v);
            let items = m.objects.tuple_items;
            let mut f = Fake::new();
            f.core.segment(heap, 0x1000, RW);
            let tuple = f.static_type("tuple", items - 8, 8, (1 << 14) | F_TUPLE_SUBCLASS);
            // Two visible fields, two hidden; members for fields 0 and 3 (1 and 2 unnamed).
            let hidden = if v == "3.8" || v == "3.12" { 0 } else { 2 };
            let ss = f.static_type(
                "os.stat_result",
                items + 8 * hidden,
                8,
                (1 << 14) | F_TUPLE_SUBCLASS,
            );
            f.core.u64(ss + TP_BASE, tuple);
            let members = heap + 0x800;
            f.core.u64(ss + TP_MEMBERS, members);
            for (k, field) in [0u64, 3].into_iter().enumerate() {
                let md = members + 40 * k as u64;
                f.core
                    .u64(md, heap + 0xf00)
                    .u32(md + 8, 6)
                    .u64(md + 16, items + 8 * field);
            }
            f.core.bytes(heap + 0xf00, b"st_x\0");
            // The object after its GC head.
            let o = heap + 16;
            f.obj(o, 1, ss, 2);
            f.core.u64(o - 16, 0).u64(o - 8, 0);
            for i in 0..4u64 {
                f.core.u64(o + items + 8 * i, 0x7000_0000 + 0x40 * i);
            }
            let p = f.core.process();
            let ty = typer(&p, &m, vec![(tuple, Special::Tuple)]);
            let ti = ty.type_info(ss).unwrap();
            assert_eq!(ti.size_rule, SizeRule::StructSeq { fields: 4 }, "{v}");
            // tp_basicsize + 8 * n_fields: the hidden fields' room twice on 3.13+.
            let need = 16 + items + 8 * hidden + 8 * 4;
            assert_eq!(ty.classify(heap, need, true).map(|c| c.0), Some(o), "{v}");
            assert_eq!(ty.classify(heap, 16 + items + 8 * 2, true), None, "{v}");
            let e = Edges::new(&p, &m, &ty);
            let mut got = Vec::new();
            e.for_each(o, &ti, u64::MAX, &mut |a, via| got.push((a, via)));
            let want: Vec<(u64, Via)> = (0..4u64)
                .map(|i| (0x7000_0000 + 0x40 * i, Via::Item(i)))
                .collect();
            assert_eq!(got, want, "{v}");
        }
    }

    #[test]
    fn weak_references_hold_their_callback_only() {
        let heap = BASE + 0x2_0000;
        for v in ["3.8", "3.10", "3.11", "3.14"] {
            let names = match v {
                "3.8" => "weakref",
                _ => "weakref.ReferenceType",
            };
            let mut f = Fake::new();
            f.core.segment(heap, 0x1000, RW);
            let wr = f.static_type(names, 0x40, 0, 1 << 14);
            let sub = f.static_type("app.MyRef", 0x48, 0, 1 << 14);
            f.core.u64(sub + crate::python::typeobj::TP_BASE, wr);
            for (k, t) in [wr, sub].into_iter().enumerate() {
                let o = heap + 0x100 * k as u64;
                f.obj(o, 1, t, 0x7000_0010);
                for (i, w) in [0x18u64, 0x20, 0x28, 0x30, 0x38, 0x40]
                    .into_iter()
                    .enumerate()
                {
                    f.core.u64(o + w, 0x7000_0018 + 8 * i as u64);
                }
            }
            let p = f.core.process();
            let m = model(v);
            let ty = typer(&p, &m, vec![]);
            let e = Edges::new(&p, &m, &ty);
            for (k, t) in [wr, sub].into_iter().enumerate() {
                let ti = ty.type_info(t).unwrap();
                assert_eq!(ti.weak, [0x10, 0x28, 0x30], "{v} {}", ti.name);
                let o = heap + 0x100 * k as u64;
                let mut got = Vec::new();
                e.for_each(o, &ti, u64::MAX, &mut |_, via| got.push(via));
                let size = if k == 0 { 0x40 } else { 0x48 };
                let want: Vec<Via> = [0x18u64, 0x20, 0x38, 0x40]
                    .into_iter()
                    .filter(|&w| w < size)
                    .map(Via::Field)
                    .collect();
                assert_eq!(got, want, "{v} {}", ti.name);
            }
        }
    }

    /// A deque's items are read from its blocks in order, from leftindex of the left block
    /// to the count, and its blocks (3.11+: and its free blocks) are its buffers; an
    /// OrderedDict's node keys are references beside its table, and its nodes and node
    /// array are buffers. A block linked to itself and a node list in a loop end the walks.
    #[test]
    fn deque_items_and_odict_nodes() {
        let heap = BASE + 0x2_0000;
        for v in ["3.8", "3.11", "3.14"] {
            let m = model(v);
            let dl = m.objects.deque.clone().unwrap();
            let od = m.objects.odict.clone().unwrap();
            let mut f = Fake::new();
            f.core.segment(heap, 0x4000, RW);
            let dt = f.static_type("collections.deque", 0xd8, 0, 1 << 14);
            let ot = f.static_type("collections.OrderedDict", 0x70, 0, 1 << 14 | 1 << 29);
            let (d, b1, b2, b3) = (heap, heap + 0x400, heap + 0x800, heap + 0xc00);
            // 70 items: 4 in the first block (from index 60), 64, then 2.
            f.obj(d, 1, dt, 70);
            f.core
                .u64(d + dl.left_block, b1)
                .u64(d + dl.right_block, b3)
                .u64(d + dl.left_index, 60)
                .u64(d + dl.right_index, 1);
            f.core
                .u64(b1 + 0x208, b2)
                .u64(b2 + 0x208, b3)
                .u64(b3 + 0x208, 0);
            let item = |i: u64| 0x7000_0000 + 8 * i;
            for i in 0..70u64 {
                let (b, k) = match i {
                    0..=3 => (b1, 60 + i),
                    4..=67 => (b2, i - 4),
                    _ => (b3, i - 68),
                };
                f.core.u64(b + 8 + 8 * k, item(i));
            }
            if let (Some(c), Some(fb)) = (dl.free_count, dl.free_blocks) {
                f.core
                    .u64(d + c, 2)
                    .u64(d + fb, heap + 0x1800)
                    .u64(d + fb + 8, heap + 0x1c00);
            }
            // A second deque whose left block links to itself, claiming 200 items.
            let d2 = heap + 0x1000;
            f.obj(d2, 1, dt, 200);
            f.core
                .u64(d2 + dl.left_block, heap + 0x1400)
                .u64(d2 + dl.right_block, b3)
                .u64(d2 + dl.left_index, 0)
                .u64(heap + 0x1400 + 0x208, heap + 0x1400);
            // OrderedDict: 3 used, nodes at 0x2000.. with keys, the last linked back to the
            // first; a node array.
            let o = heap + 0x3000;
            f.obj(o, 1, ot, 3);
            let node = |i: u64| heap + 0x2000 + 0x40 * i;
            f.core
                .u64(o + od.first, node(0))
                .u64(o + od.fast_nodes, heap + 0x2400);
            for i in 0..3 {
                f.core
                    .u64(node(i) + od.node_key, 0x7100_0000 + 8 * i)
                    .u64(node(i) + od.node_next, node((i + 1) % 3));
            }
            let p = f.core.process();
            let ty = typer(&p, &m, vec![]);
            let e = Edges::new(&p, &m, &ty);
            let ti = ty.type_info(dt).unwrap();
            assert_eq!(ti.layout, Layout::Deque, "{v}");
            let mut got = Vec::new();
            e.for_each(d, &ti, u64::MAX, &mut |t, via| {
                if let Via::Item(_) = via {
                    got.push((t, via))
                }
            });
            let want: Vec<_> = (0..70).map(|i| (item(i), Via::Item(i))).collect();
            assert_eq!(got, want, "{v}");
            let mut bufs = Vec::new();
            e.buffers(d, &ti, &mut |b| bufs.push(b));
            let mut want = vec![b1, b2, b3];
            if dl.free_count.is_some() {
                want.extend([heap + 0x1800, heap + 0x1c00]);
            }
            assert_eq!(bufs, want, "{v}");
            let mut n = 0;
            e.for_each(d2, &ti, u64::MAX, &mut |_, via| {
                n += matches!(via, Via::Item(_)) as u32
            });
            assert_eq!(n, 64, "{v}: the self-linked block is read once");
            let ti = ty.type_info(ot).unwrap();
            assert_eq!(ti.layout, Layout::Odict, "{v}");
            let mut keys = Vec::new();
            e.for_each(o, &ti, u64::MAX, &mut |t, via| {
                if via == Via::Key {
                    keys.push(t)
                }
            });
            assert_eq!(keys, [0x7100_0000, 0x7100_0008, 0x7100_0010], "{v}");
            let mut bufs = Vec::new();
            e.buffers(o, &ti, &mut |b| bufs.push(b));
            assert_eq!(bufs, [node(0), node(1), node(2), heap + 0x2400], "{v}");
        }
    }

    /// 3.8/3.9 generators keep a `running` byte at 0x18 whose padding holds what the block
    /// held before: never a reference (a Debian 3.9.2 core had a live list's address there).
    /// 3.10 has gi_code at 0x18.
    #[test]
    fn generator_running_byte_is_no_reference() {
        let heap = BASE + 0x2_0000;
        for (v, want) in [("3.8", false), ("3.9", false), ("3.10", true)] {
            let mut f = Fake::new();
            f.core.segment(heap, 0x1000, RW);
            let g = f.static_type("generator", 0x60, 0, 1 << 14);
            f.obj(heap, 1, g, 0x7000_0010);
            f.core
                .u64(heap + 0x18, 0x7000_0100)
                .u64(heap + 0x20, 0x7000_0200);
            let p = f.core.process();
            let m = model(v);
            let ty = typer(&p, &m, vec![]);
            let e = Edges::new(&p, &m, &ty);
            let ti = ty.type_info(g).unwrap();
            let mut got = Vec::new();
            e.for_each(heap, &ti, u64::MAX, &mut |t, _| got.push(t));
            assert_eq!(got.contains(&0x7000_0100), want, "{v}: {got:x?}");
            assert!(got.contains(&0x7000_0200), "{v}");
        }
    }
}
