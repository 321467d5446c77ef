//! Live Python objects: which allocations are objects, of which type, and a census.
//!
//! An allocation (pymalloc block, or glibc chunk for objects over 512 bytes) holds an
//! object at +0 (no GC), +16 (GC head) or +32 (GC head and the 3.11+ managed dict/weakref
//! pre-header) — layouts.md §C.2. A candidate is accepted only when
//! - its `ob_type` is a type (its type is `type`, or a metatype derived from it), and the
//!   census later checks that this type is itself live (see `census`);
//! - the offset is the one that type's flags imply (or a type object allocated bare by C
//!   code, e.g. numpy's DType classes: no GC head although its metatype is a GC type);
//! - the refcount is one the version can hold: mortal counts, and immortal ones only with
//!   the exact value/flags of the version (`refcount`);
//! - a GC object's `_gc_next`/`_gc_prev` are untracked (0) or linked both ways with
//!   neighbouring GC heads or the generation lists (`gc_linked`);
//! - the allocation's size agrees with what CPython allocates for that type (`SizeRule`:
//!   `tp_basicsize` + `tp_itemsize`·`ob_size`, exact str sizes, compact-int digit counts,
//!   generators' frame slots, C types sized by a flag), so a list's item array or a dict's
//!   keys table is never taken for an object.
//!
//! Objects with refcount 0 are free-list residents only for the types the version keeps free
//! lists for (and, for GC types, untracked); other dead blocks are free memory. Types are
//! named as CPython names them: static types by `tp_name`, heap types by `__module__` (from
//! the type's dict; the whole dotted `tp_name` when that entry is no str) + "." +
//! `__qualname__`.

use crate::addr::Addr;
use crate::image::memory::{AddressSpace, Reader};
use crate::image::process::Process;
use crate::models::{CpythonModel, DictKeys, Generator, IntSize, Objects, Refcount};
use crate::python::containers::Layout;
use crate::python::typeobj::{
    F_HAVE_GC, F_HEAPTYPE, F_INLINE_VALUES, F_LONG_SUBCLASS, F_READY, F_TUPLE_SUBCLASS,
    F_TYPE_SUBCLASS, TP_BASE, TP_BASICSIZE, TP_DICT, TP_DICTOFFSET, TP_FLAGS, TP_ITEMSIZE,
    TP_MEMBERS, TP_NAME,
};
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

/// Fields of a struct sequence read at most (far above CPython's largest: os.stat_result,
/// 19 on Linux).
const MAX_STRUCT_FIELDS: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    None,
    Str,
    Int,
    Float,
    Bytes,
    Tuple,
    List,
    Dict,
    Set,
}

/// How CPython sizes an instance's allocation (without GC head and pre-header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRule {
    /// `tp_basicsize`.
    Basic,
    /// `tp_basicsize + tp_itemsize * |ob_size|` (resizable in place: may keep more).
    Var,
    /// Compact str: header + (length + 1) * kind.
    Str,
    /// int and its subclasses (Py_TPFLAGS_LONG_SUBCLASS): digit count from `ob_size`
    /// (3.8-3.11) or `lv_tag >> 3` (3.12+, Include/cpython/longintrepr.h).
    Int,
    /// Generator/coroutine/async generator with an embedded frame (model `generator`).
    Gen,
    /// 3.11+ frame object: room for its frame's slots (model `generator`'s
    /// `frame_object_f_frame`).
    Frame,
    /// `size_if_clear` bytes when the flag byte at `flag` is 0, else `tp_basicsize`.
    ByFlag { flag: u64, small: u64 },
    /// A struct sequence (os.stat_result, time.struct_time, sys.flags): a tuple whose
    /// `ob_size` counts the visible fields only; `fields` (its type's n_fields) items follow
    /// the tuple header, the hidden ones too, and structseq_traverse and structseq_dealloc
    /// visit all of them. PyStructSequence_New (Objects/structseq.c) allocates
    /// `tp_basicsize + 8 * n_fields` — on 3.13+, whose tp_basicsize already holds the
    /// hidden fields, that is room for them twice.
    StructSeq { fields: u64 },
}

#[derive(Debug)]
pub struct TypeInfo {
    pub addr: Addr,
    pub name: String,
    pub basicsize: u64,
    pub itemsize: u64,
    pub flags: u64,
    pub special: Special,
    pub size_rule: SizeRule,
    /// A free-list type of this version (model `freelist_types`).
    pub freelist: bool,
    /// Native buffers of the instances: (pointer offset, index into `native_rows`).
    pub native: Vec<(u64, u32)>,
    /// Offsets of the instances' pointer fields that hold no reference (model
    /// `weak_fields`; a weak reference's referent and list links), own or inherited.
    pub weak: Vec<u64>,
    /// The builtin container struct the instances start with, own or inherited.
    pub layout: Layout,
    /// The items hold numbers only (model `scalar_items`): no references past basicsize.
    pub scalar_items: bool,
}

/// Addresses of the interpreter's static types the typer needs (from symbols).
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    pub type_type: u64,
    pub str_type: u64,
    pub code_type: u64,
    pub specials: Vec<(u64, Special)>,
    /// PyGen_Type, PyCoro_Type, PyAsyncGen_Type.
    pub gen_types: Vec<u64>,
}

pub struct Typer<'a> {
    r: Reader<'a>,
    om: &'a Objects,
    type_type: u64,
    str_type: u64,
    code_type: u64,
    specials: HashMap<u64, Special>,
    gen_types: Vec<u64>,
    /// Mapped module images (file mappings and the .bss right after): where static types live.
    images: Vec<(u64, u64)>,
    /// Census rows of native buffers, by `native_buffers` index.
    native_rows: Vec<String>,
    /// Recursion guard for naming types through their bases and dicts.
    depth: Cell<u32>,
    /// Types by address, with a dense index for compact object records.
    cache: RefCell<FxHashMap<u64, Option<u32>>>,
    types: RefCell<Vec<Arc<TypeInfo>>>,
    /// Metatypes seen (types whose instances are types).
    metas: RefCell<FxHashMap<u64, bool>>,
    /// The last type found: neighbouring blocks of a pool mostly share their type.
    last: Cell<(u64, u32)>,
    /// The model's `header_shift` (free-threaded builds: 0x10), added to every built-in
    /// (GIL-build) object field offset by [`Typer::f`].
    hs: u64,
    /// The two regions read last (an object's heap memory, its type's image), most recent
    /// first: most reads need neither a search nor the shared region cache.
    /// (region start, length, region index).
    /// (region start, length, address of its first byte): the slices of `r.space` the last
    /// reads used, kept as plain numbers so the typer stays `Send`.
    hot: Cell<[(u64, u64, usize); 2]>,
}

/// What a refcount says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rc0 {
    Alive,
    Zero,
    Bad,
}

impl<'a> Typer<'a> {
    pub fn new(p: &'a Process, model: &'a CpythonModel) -> Option<Typer<'a>> {
        let sym = |n: &str| p.modules.find_symbol(&p.space, n).map(|(_, s)| s.addr.0);
        Self::with_lookup(p, model, &sym)
    }

    /// Like [`Typer::new`], with the static types' addresses from `lookup` (by symbol
    /// name, e.g. "PyType_Type") instead of the symbol tables: `stacks` of a core without
    /// symbols finds them by scanning the interpreter's data (python/symless.rs).
    pub fn with_lookup(
        p: &'a Process,
        model: &'a CpythonModel,
        lookup: &dyn Fn(&str) -> Option<u64>,
    ) -> Option<Typer<'a>> {
        let sym = |n: &str| lookup(n);
        let mut syms = Symbols {
            type_type: sym("PyType_Type")?,
            str_type: sym("PyUnicode_Type")?,
            code_type: sym("PyCode_Type").unwrap_or(0),
            ..Default::default()
        };
        for (n, s) in [
            ("PyUnicode_Type", Special::Str),
            ("PyLong_Type", Special::Int),
            ("PyFloat_Type", Special::Float),
            ("PyBytes_Type", Special::Bytes),
            ("PyTuple_Type", Special::Tuple),
            ("PyList_Type", Special::List),
            ("PyDict_Type", Special::Dict),
            ("PySet_Type", Special::Set),
            ("PyFrozenSet_Type", Special::Set),
        ] {
            if let Some(a) = sym(n) {
                syms.specials.push((a, s));
            }
        }
        syms.gen_types = ["PyGen_Type", "PyCoro_Type", "PyAsyncGen_Type"]
            .iter()
            .filter_map(|n| sym(n))
            .collect();
        // Static types live in the modules' images: their file mappings and the anonymous
        // segment right after a module's last mapping (.bss beyond the file).
        let mut images = Vec::new();
        for m in &p.modules.modules {
            for mp in &m.mappings {
                images.push((mp.range.start.0, mp.range.end.0));
            }
            if let Some(end) = m.mappings.iter().map(|m| m.range.end).max() {
                if let Some(s) = p.core.segments.iter().find(|s| s.vaddr == end) {
                    if m.mappings.iter().all(|x| x.range.start != s.vaddr) {
                        images.push((s.vaddr.0, s.vaddr.0.wrapping_add(s.memsz)));
                    }
                }
            }
        }
        Some(Typer::from_parts(&p.space, &model.objects, syms, images))
    }

    /// A typer over any address space: the symbols and module images given.
    pub fn from_parts(
        space: &'a AddressSpace,
        om: &'a Objects,
        syms: Symbols,
        mut images: Vec<(u64, u64)>,
    ) -> Typer<'a> {
        images.sort_unstable();
        Typer {
            r: Reader { space },
            om,
            type_type: syms.type_type,
            str_type: syms.str_type,
            code_type: syms.code_type,
            specials: syms.specials.into_iter().collect(),
            gen_types: syms.gen_types,
            images,
            native_rows: om
                .native_buffers
                .iter()
                .map(|b| &b.row)
                .chain(om.deque.as_ref().map(|d| &d.row))
                .chain(om.odict.as_ref().map(|d| &d.row))
                .cloned()
                .collect(),
            depth: Cell::new(0),
            cache: RefCell::new(FxHashMap::default()),
            types: RefCell::new(Vec::new()),
            metas: RefCell::new(FxHashMap::default()),
            last: Cell::new((0, u32::MAX)),
            hs: om.header_shift,
            hot: Cell::new([(0, 0, 0); 2]),
        }
    }

    /// A typer with the same symbols and images and empty caches, for another thread (a
    /// typer is not shared: its caches are cells). Its type indices are its own.
    pub fn fork(&self) -> Typer<'a> {
        Typer {
            r: Reader {
                space: self.r.space,
            },
            om: self.om,
            type_type: self.type_type,
            str_type: self.str_type,
            code_type: self.code_type,
            specials: self.specials.clone(),
            gen_types: self.gen_types.clone(),
            images: self.images.clone(),
            native_rows: self.native_rows.clone(),
            depth: Cell::new(0),
            cache: RefCell::new(FxHashMap::default()),
            types: RefCell::new(Vec::new()),
            metas: RefCell::new(FxHashMap::default()),
            last: Cell::new((0, u32::MAX)),
            hs: self.hs,
            hot: Cell::new([(0, 0, 0); 2]),
        }
    }

    /// The address of the field at GIL-build offset `off` (>= 8: after `ob_refcnt`) of the
    /// object or type at `o`: free-threaded headers move every such field by 0x10
    /// (CPython 3.13 Include/object.h `struct _object` under Py_GIL_DISABLED).
    fn f(&self, o: u64, off: u64) -> u64 {
        o.wrapping_add(off).wrapping_add(self.hs)
    }

    /// The address of the static type the typer knows as `s` (PyFloat_Type, ...).
    pub fn special_type(&self, s: Special) -> Option<u64> {
        self.specials
            .iter()
            .filter(|&(_, &v)| v == s)
            .map(|(&a, _)| a)
            .min()
    }

    /// Is `t` the code object type (PyCode_Type)?
    pub fn is_code_type(&self, t: u64) -> bool {
        self.code_type != 0 && t == self.code_type
    }

    /// The model's object layout facts.
    pub fn layout(&self) -> &Objects {
        self.om
    }

    /// Census rows of native buffers (`TypeInfo::native` indexes them), then the deque's
    /// blocks and the OrderedDict's nodes (`deque_row`, `odict_row`).
    pub fn native_rows(&self) -> &[String] {
        &self.native_rows
    }

    /// The native row of a deque's blocks.
    pub fn deque_row(&self) -> u32 {
        self.om.native_buffers.len() as u32
    }

    /// The native row of an OrderedDict's nodes.
    pub fn odict_row(&self) -> u32 {
        (self.om.native_buffers.len() + self.om.deque.is_some() as usize) as u32
    }

    /// Is `a` inside a mapped module image (where static types live)? Without any known
    /// image (a core without its file mappings) every address counts as one: type liveness
    /// then rests on the other checks alone.
    pub fn in_image(&self, a: u64) -> bool {
        if self.images.is_empty() {
            return true;
        }
        let i = self.images.partition_point(|&(s, _)| s <= a);
        self.images[..i]
            .iter()
            .rev()
            .take(4)
            .any(|&(s, e)| s <= a && a < e)
    }

    /// Is the object at `o` a type object (by its own layout)?
    pub fn is_type_object(&self, o: u64) -> bool {
        self.is_type(o, 0)
    }

    #[inline(always)]
    fn u64(&self, a: u64) -> Option<u64> {
        let hot = self.hot.get();
        for (k, &(start, len, ptr)) in hot.iter().enumerate() {
            let off = a.wrapping_sub(start);
            if off < len && len - off >= 8 {
                if k == 1 {
                    self.hot.set([hot[1], hot[0]]);
                }
                // SAFETY: `ptr` and `len` are those of a slice of the address space this
                // typer borrows for 'a (`region_at` below): mapped, immutable memory that
                // outlives the typer; `off + 8 <= len` keeps the read inside it.
                let v = unsafe {
                    (ptr as *const u8)
                        .add(off as usize)
                        .cast::<u64>()
                        .read_unaligned()
                };
                return Some(u64::from_le(v));
            }
        }
        self.u64_cold(a)
    }

    /// Ask for the cache line at `a` ahead of its reads, when `a` is in the hot region (a
    /// scan in address order reads its next blocks from there). A hint only: nothing is
    /// read, and an address outside the region asks for nothing.
    #[inline(always)]
    pub fn prefetch(&self, a: u64) {
        let (start, len, ptr) = self.hot.get()[0];
        let off = a.wrapping_sub(start);
        if off < len {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch has no architectural effect (it never faults), and the
            // address is inside the borrowed region (`off < len`).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    (ptr as *const i8).add(off as usize),
                )
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = ptr;
        }
    }

    /// `u64` outside both hot regions: find the region and make it the hot one. Kept out
    /// of line so that the hot path inlines into the census's probes.
    #[cold]
    #[inline(never)]
    fn u64_cold(&self, a: u64) -> Option<u64> {
        match self.bytes_at(a, 8) {
            Some(b) => Some(u64::from_le_bytes(b.try_into().unwrap())),
            // Spanning two regions (or in none).
            None => self.r.u64(Addr(a)),
        }
    }

    /// A `u32` through the hot regions, as `u64` (a str's state word, an int's digits,
    /// read per object: through the shared address space they were a region search each).
    #[inline]
    fn hot_u32(&self, a: u64) -> Option<u32> {
        match self.bytes_at(a, 4) {
            Some(b) => Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            None => self.r.u32(Addr(a)),
        }
    }

    /// A byte through the hot regions, as `hot_u32`.
    #[inline]
    fn hot_u8(&self, a: u64) -> Option<u8> {
        match self.bytes_at(a, 1) {
            Some(b) => Some(b[0]),
            None => self.r.u8(Addr(a)),
        }
    }

    /// The type at index `idx` of this typer, borrowed: no reference-count traffic per
    /// object classified.
    #[inline]
    fn info(&self, idx: u32) -> &TypeInfo {
        let p = Arc::as_ptr(&self.types.borrow()[idx as usize]);
        // SAFETY: `types` only grows (type_index pushes; nothing removes or replaces an
        // entry), so the Arc at `idx` lives as long as `self`, and its TypeInfo with it;
        // TypeInfo is never mutated after it is built.
        unsafe { &*p }
    }

    /// Is `t` a type object? Its type is `type`, or a metatype (a type whose flags say it
    /// subclasses `type`) — checked to a depth of 3.
    fn is_type(&self, t: u64, depth: u32) -> bool {
        if t == 0 || t % 8 != 0 {
            return false;
        }
        let Some(flags) = self.u64(self.f(t, TP_FLAGS)) else {
            return false;
        };
        if flags & F_READY == 0 {
            return false;
        }
        let Some(mt) = self.u64(self.f(t, 8)) else {
            return false;
        };
        if mt == self.type_type {
            return true;
        }
        depth < 3
            && self
                .u64(self.f(mt, TP_FLAGS))
                .is_some_and(|f| f & F_TYPE_SUBCLASS != 0)
            && self.is_type(mt, depth + 1)
    }

    /// The type at `t`, if `t` is a type.
    pub fn type_info(&self, t: u64) -> Option<Arc<TypeInfo>> {
        self.type_index(t)
            .map(|i| self.types.borrow()[i as usize].clone())
    }

    /// Types indexed so far (dense indices `0..type_count()`).
    pub fn type_count(&self) -> u32 {
        self.types.borrow().len() as u32
    }

    /// `PyType_Type`'s address.
    pub fn type_type(&self) -> u64 {
        self.type_type
    }

    /// Type by dense index (see `type_index`).
    pub fn type_by_index(&self, i: u32) -> Arc<TypeInfo> {
        self.types.borrow()[i as usize].clone()
    }

    /// Dense index of the type at `t`. Most candidate pointers are not types at all (the
    /// GC links of objects read at the wrong offset): they are rejected with one read of
    /// their would-be metatype, and never enter the cache.
    pub fn type_index(&self, t: u64) -> Option<u32> {
        let last = self.last.get();
        if last.0 == t && t != 0 {
            return Some(last.1);
        }
        if let Some(&c) = self.cache.borrow().get(&t) {
            if let Some(i) = c {
                self.last.set((t, i));
            }
            return c;
        }
        if t == 0 || t % 8 != 0 {
            return None;
        }
        let mt = self.u64(self.f(t, 8))?;
        if mt != self.type_type && !self.is_meta(mt) {
            return None;
        }
        let info = self.build_type(t).map(Arc::new);
        let idx = info.map(|i| {
            let mut v = self.types.borrow_mut();
            v.push(i);
            (v.len() - 1) as u32
        });
        self.cache.borrow_mut().insert(t, idx);
        if let Some(i) = idx {
            self.last.set((t, i));
        }
        idx
    }

    fn is_meta(&self, mt: u64) -> bool {
        if let Some(&b) = self.metas.borrow().get(&mt) {
            return b;
        }
        // Only worth remembering when it looks like a type at all (its type is a type).
        let Some(mmt) = self.u64(self.f(mt, 8)) else {
            return false;
        };
        if mmt != self.type_type && !self.metas.borrow().get(&mmt).copied().unwrap_or(false) {
            return false;
        }
        let b = self
            .u64(self.f(mt, TP_FLAGS))
            .is_some_and(|f| f & F_TYPE_SUBCLASS != 0 && f & F_READY != 0);
        self.metas.borrow_mut().insert(mt, b);
        b
    }

    fn build_type(&self, t: u64) -> Option<TypeInfo> {
        if !self.is_type(t, 0) {
            return None;
        }
        let basicsize = self.u64(self.f(t, TP_BASICSIZE))?;
        let itemsize = self.u64(self.f(t, TP_ITEMSIZE))?;
        let flags = self.u64(self.f(t, TP_FLAGS))?;
        if !(16..=1 << 20).contains(&basicsize) || itemsize > 1 << 16 {
            return None;
        }
        if self.depth.get() > 16 {
            return None;
        }
        self.depth.set(self.depth.get() + 1);
        let name = self.type_name(t, flags);
        // What a type not named in the model inherits (native buffers, weak fields).
        let base = name.as_ref().and_then(|_| {
            self.u64(self.f(t, TP_BASE))
                .filter(|&b| b != 0 && b != t)
                .and_then(|b| self.type_info(b))
        });
        // Native buffers: the type's own entries, else its base's (subclasses share the layout).
        let native = match &name {
            Some(n) if self.om.native_buffers.iter().any(|b| &b.type_name == n) => self
                .om
                .native_buffers
                .iter()
                .enumerate()
                .filter(|(_, b)| &b.type_name == n)
                .map(|(i, b)| (b.pointer, i as u32))
                .collect(),
            _ => base.as_ref().map(|b| b.native.clone()).unwrap_or_default(),
        };
        // Fields that hold no reference: the type's own (by its name: static, or a C type
        // made from a spec, as 3.10+'s _thread._localdummy), else its base's
        // (weakref.KeyedRef and WeakMethod subclass weakref.ReferenceType).
        let own_weak = name
            .as_ref()
            .and_then(|n| self.om.weak_fields.iter().find(|w| &w.type_name == n));
        let weak = match own_weak {
            Some(w) => w.offsets.clone(),
            None => base.as_ref().map(|b| b.weak.clone()).unwrap_or_default(),
        };
        self.depth.set(self.depth.get() - 1);
        let name = name?;
        let special = self.specials.get(&t).copied().unwrap_or(Special::None);
        // By name, static or heap type: 3.12+ builds collections.deque from a spec.
        let named = |m: Option<&str>| m == Some(name.as_str());
        let layout = match special {
            Special::List => Layout::List,
            Special::Dict => Layout::Dict,
            Special::Set => Layout::Set,
            _ if named(self.om.deque.as_ref().map(|d| d.type_name.as_str())) => Layout::Deque,
            _ if named(self.om.odict.as_ref().map(|d| d.type_name.as_str())) => Layout::Odict,
            _ => base.as_ref().map_or(Layout::Plain, |b| b.layout),
        };
        let by_flag = (flags & F_HEAPTYPE == 0)
            .then(|| self.om.alloc_by_flag.iter().find(|a| a.type_name == name))
            .flatten();
        let size_rule = if flags & F_LONG_SUBCLASS != 0 || special == Special::Int {
            SizeRule::Int
        } else if self.om.generator.is_some() && self.gen_types.contains(&t) {
            SizeRule::Gen
        } else if flags & F_HEAPTYPE == 0
            && name == "frame"
            && self
                .om
                .generator
                .as_ref()
                .is_some_and(|g| g.frame_object_f_frame.is_some() && g.frame_code.is_some())
        {
            SizeRule::Frame
        } else if let Some(a) = by_flag {
            SizeRule::ByFlag {
                flag: a.flag,
                small: a.size_if_clear,
            }
        } else if special == Special::Str && itemsize == 0 && basicsize >= 40 {
            SizeRule::Str
        } else if let Some(fields) = self.struct_seq_fields(t, flags, itemsize) {
            SizeRule::StructSeq { fields }
        } else if itemsize > 0 {
            SizeRule::Var
        } else {
            SizeRule::Basic
        };
        let freelist = self.om.freelist_types.contains(&name);
        let scalar_items = flags & F_HEAPTYPE == 0 && self.om.scalar_items.contains(&name);
        Some(TypeInfo {
            addr: Addr(t),
            name,
            basicsize,
            itemsize,
            flags,
            special,
            size_rule,
            freelist,
            native,
            weak,
            layout,
            scalar_items,
        })
    }

    /// The n_fields of a struct sequence type, None for any other type. A struct sequence
    /// type subclasses tuple directly and has a member (T_OBJECT, Include/descrobject.h
    /// PyMemberDef {name, type, offset, flags, doc}, 40 bytes) for each named field at
    /// `offsetof(PyStructSequence, ob_item) + 8 * i` (PyStructSequence_InitType2); a Python
    /// subclass of tuple can have no such member (nonempty __slots__ are refused). n_fields
    /// is the type dict's "n_fields" (REAL_SIZE_TP); 3.12+ static builtin types (sys.flags)
    /// keep their dict in the interpreter, not in tp_dict: there, the last named field.
    fn struct_seq_fields(&self, t: u64, flags: u64, itemsize: u64) -> Option<u64> {
        if flags & F_TUPLE_SUBCLASS == 0 || itemsize != 8 {
            return None;
        }
        let tuple = self.special_type(Special::Tuple)?;
        if self.u64(self.f(t, TP_BASE))? != tuple {
            return None;
        }
        let members = self.u64(self.f(t, TP_MEMBERS)).filter(|&m| m != 0)?;
        let items = self.om.tuple_items;
        let mut named = 0u64;
        for i in 0..MAX_STRUCT_FIELDS {
            let m = members.wrapping_add(40 * i);
            if self.u64(m).is_none_or(|n| n == 0) {
                break;
            }
            let kind = self.hot_u32(m.wrapping_add(8))?;
            let off = self.u64(m.wrapping_add(16))?;
            if kind == 6 && off >= items && (off - items) % 8 == 0 {
                named = named.max((off - items) / 8 + 1);
            }
        }
        if named == 0 || named > MAX_STRUCT_FIELDS {
            return None;
        }
        let real = self
            .u64(self.f(t, TP_DICT))
            .filter(|&d| d != 0)
            .and_then(|d| self.dict_get_str(d, "n_fields"))
            .filter(|&v| {
                self.u64(self.f(v, 8))
                    .is_some_and(|vt| self.specials.get(&vt) == Some(&Special::Int))
            })
            .and_then(|v| self.int_parts(v))
            .filter(|&(neg, v)| !neg && v <= MAX_STRUCT_FIELDS as u128)
            .map(|(_, v)| v as u64);
        Some(real.unwrap_or(0).max(named))
    }

    fn type_name(&self, t: u64, flags: u64) -> Option<String> {
        if flags & F_HEAPTYPE != 0 {
            let qual = self.read_str(self.u64(t.wrapping_add(self.om.ht_qualname))?)?;
            // type.__module__ of a heap type is its dict's "__module__". When that entry is
            // no str (a type whose instances have a `__module__` member or getset, e.g.
            // Cython >= 3.1's shared cython_function_or_method and _common_types_metatype,
            // Cython/Utility/CommonStructures.c), Python's type.__repr__ shows tp_name, which
            // PyType_FromSpec sets to the spec's dotted "module.name": use it whole.
            let entry = self
                .u64(self.f(t, TP_DICT))
                .and_then(|d| self.dict_get_str(d, "__module__"));
            let module = match entry {
                Some(v) => match self.read_str(v) {
                    Some(m) => Some(m),
                    None => {
                        if let Some(n) = self.tp_name_full(t).filter(|n| n.contains('.')) {
                            return Some(n);
                        }
                        None
                    }
                },
                None => None,
            };
            return Some(match module.as_deref() {
                None | Some("builtins") => qual,
                Some(m) => format!("{m}.{qual}"),
            });
        }
        let p = self.u64(self.f(t, TP_NAME))?;
        let s = self.r.space.read_cstr(Addr(p), 256)?;
        Some(String::from_utf8_lossy(&s).into_owned())
    }

    /// `tp_name` as a string.
    fn tp_name_full(&self, t: u64) -> Option<String> {
        let p = self.u64(self.f(t, TP_NAME))?;
        let s = self.r.space.read_cstr(Addr(p), 256)?;
        Some(String::from_utf8_lossy(&s).into_owned())
    }

    /// A str object's text (compact strings; at most 4096 characters).
    pub fn read_str(&self, o: u64) -> Option<String> {
        let t = self.u64(self.f(o, 8))?;
        if t != self.str_type && !self.type_info(t).is_some_and(|i| i.special == Special::Str) {
            return None;
        }
        self.str_text(o, 4096)
    }

    /// The interning state of the exact str at `o` (None: no str): 0 not interned, 1
    /// mortal, 2 immortal, 3 immortal static — the `interned` bits, the low two of the
    /// state byte at 0x20 (Include/cpython/unicodeobject.h PyASCIIObject, 3.8-3.14;
    /// SSTATE_INTERNED_MORTAL = 1). A mortal
    /// interned string's reference count leaves out the interned dict's two references,
    /// key and value (Objects/unicodeobject.c PyUnicode_InternInPlace 3.8-3.11, 3.13+
    /// intern_common; measured with ctypes: `sys.getrefcount` of a fresh `sys.intern`ed
    /// str is 2 on pyenv 3.8-3.11, 3.13 and Debian 3.14, where its state byte is 0xe5 /
    /// 0x65). 3.12 makes every interned string immortal (state 2), and so does the
    /// free-threaded build (measured on 3.13t).
    pub fn str_interned(&self, o: u64) -> Option<u8> {
        let t = self.u64(self.f(o, 8))?;
        if t != self.str_type {
            return None;
        }
        Some(self.hot_u8(self.f(o, 0x20))? & 3)
    }

    fn str_text(&self, o: u64, max: u64) -> Option<String> {
        let len = self.u64(self.f(o, 0x10))?;
        let state = self.hot_u32(self.f(o, 0x20))?;
        let kind = ((state >> 2) & 7) as u64;
        let compact = state & (1 << 5) != 0;
        let ascii = state & (1 << 6) != 0;
        if !compact || !matches!(kind, 1 | 2 | 4) || len > 1 << 32 {
            return None;
        }
        let data = o.wrapping_add(if ascii {
            self.om.str_ascii_data
        } else {
            self.om.str_compact_data
        });
        let n = len.min(max);
        let mut buf = vec![0u8; (n * kind) as usize];
        self.r.space.read(Addr(data), &mut buf).ok()?;
        Some(match kind {
            1 => buf.iter().map(|&b| b as char).collect(),
            2 => buf
                .chunks_exact(2)
                .map(|c| {
                    char::from_u32(u16::from_le_bytes([c[0], c[1]]) as u32).unwrap_or('\u{fffd}')
                })
                .collect(),
            _ => buf
                .chunks_exact(4)
                .map(|c| {
                    char::from_u32(u32::from_le_bytes(c.try_into().unwrap())).unwrap_or('\u{fffd}')
                })
                .collect(),
        })
    }

    /// (key, value) pointers of a dict's entries, in insertion order (bounded).
    pub fn dict_items(&self, d: u64, limit: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let (Some(keys), Some(values)) = (self.u64(self.f(d, 0x20)), self.u64(self.f(d, 0x28)))
        else {
            return out;
        };
        let (entries, nentries, esize, koff, voff) = match self.om.dict_keys {
            DictKeys::V1 => {
                let Some(size) = self.u64(keys.wrapping_add(8)) else {
                    return out;
                };
                if size == 0 || size > 1 << 26 || !size.is_power_of_two() {
                    return out;
                }
                let ix = if size <= 0xff {
                    1
                } else if size <= 0xffff {
                    2
                } else if size <= 0xffff_ffff {
                    4
                } else {
                    8
                };
                let n = self.u64(keys.wrapping_add(0x20)).unwrap_or(0);
                (keys.wrapping_add(0x28 + size * ix), n, 24, 8, 16)
            }
            DictKeys::V2 => {
                let Some(ib) = self.hot_u8(keys.wrapping_add(9)) else {
                    return out;
                };
                let kind = self.hot_u8(keys.wrapping_add(10)).unwrap_or(0);
                if ib > 40 {
                    return out;
                }
                let n = self.u64(keys.wrapping_add(0x18)).unwrap_or(0);
                let (es, ko, vo) = if kind == 0 { (24, 8, 16) } else { (16, 0, 8) };
                (keys.wrapping_add(0x20 + (1u64 << ib)), n, es, ko, vo)
            }
        };
        // Split tables keep values apart (ma_values): instance dicts sharing their type's keys.
        let split = values != 0;
        for i in 0..nentries.min(1 << 20) {
            if out.len() >= limit {
                break;
            }
            let e = entries.wrapping_add(i * esize);
            let Some(k) = self.u64(e.wrapping_add(koff)) else {
                break;
            };
            if k == 0 {
                continue;
            }
            let v = if split {
                self.u64(values.wrapping_add(8 * i)).unwrap_or(0)
            } else {
                self.u64(e.wrapping_add(voff)).unwrap_or(0)
            };
            out.push((k, v));
        }
        out
    }

    fn dict_get_str(&self, d: u64, key: &str) -> Option<u64> {
        self.dict_items(d, 4096)
            .into_iter()
            .find(|&(k, _)| self.str_text(k, 64).as_deref() == Some(key))
            .map(|(_, v)| v)
    }

    fn refcount(&self, o: u64) -> Rc0 {
        if self.om.refcount == Refcount::FreeThreaded {
            return self.refcount_ft(o);
        }
        let Some(r) = self.u64(o) else {
            return Rc0::Bad;
        };
        let lo = r as u32;
        match self.om.refcount {
            Refcount::Plain => match r {
                0 => Rc0::Zero,
                1..=0xff_ffff_ffff => Rc0::Alive,
                _ => Rc0::Bad,
            },
            // 3.12/3.13 (Include/object.h): immortal objects hold _Py_IMMORTAL_REFCNT =
            // UINT_MAX in the 64-bit ob_refcnt (saturating increments keep it there); only
            // extensions built for older ABIs move it, by their own increments/decrements.
            Refcount::Immortal32 => {
                const IMMORTAL: u64 = 0xffff_ffff;
                const DRIFT: u64 = 1 << 20;
                if r == 0 {
                    Rc0::Zero
                } else if r < 1 << 31 || r.abs_diff(IMMORTAL) <= DRIFT {
                    Rc0::Alive
                } else {
                    Rc0::Bad
                }
            }
            // 3.14 (Include/refcount.h, object.h): 32-bit ob_refcnt, 16-bit ob_overflow (0 on
            // 64-bit builds), 16-bit ob_flags. Immortal counts are >= 2^31 (initially
            // _Py_IMMORTAL_INITIAL_REFCNT = 3 << 30) with _Py_IMMORTAL_FLAGS (1) in ob_flags;
            // static objects add _Py_STATICALLY_ALLOCATED_FLAG (4). Mortal objects have none.
            Refcount::FreeThreaded => unreachable!("refcount_ft"),
            Refcount::Split32 => {
                let overflow = (r >> 32) & 0xffff;
                let flags = r >> 48;
                if r == 0 {
                    Rc0::Zero
                } else if overflow != 0 || flags & !0xd != 0 {
                    Rc0::Bad
                } else if lo >= 1 << 31 {
                    if flags & 1 != 0 {
                        Rc0::Alive
                    } else {
                        Rc0::Bad
                    }
                } else if flags == 0 && lo != 0 {
                    Rc0::Alive
                } else {
                    Rc0::Bad
                }
            }
        }
    }

    /// Free-threaded header (CPython 3.13 Include/object.h, Py_GIL_DISABLED): ob_tid at 0
    /// (the owning thread's fs_base, or 0 once merged), 16 bits of padding at 8 (zero in
    /// 3.13), ob_mutex (a PyMutex byte: bits 0-1) at 0xa, ob_gc_bits at 0xb (7 defined
    /// bits, pycore_gc.h), ob_ref_local u32 at 0xc (UINT32_MAX: immortal), ob_ref_shared
    /// at 0x10 (count << 2 | flags; _Py_REF_SHARED_SHIFT 2).
    fn refcount_ft(&self, o: u64) -> Rc0 {
        let (Some(tid), Some(w8), Some(shared)) = (
            self.u64(o),
            self.u64(o.wrapping_add(8)),
            self.u64(o.wrapping_add(0x10)),
        ) else {
            return Rc0::Bad;
        };
        let padding = w8 & 0xffff;
        let mutex = (w8 >> 16) & 0xff;
        let gc_bits = (w8 >> 24) & 0xff;
        let local = w8 >> 32;
        if padding != 0 || mutex & !3 != 0 || gc_bits & 0x80 != 0 || tid % 8 != 0 {
            return Rc0::Bad;
        }
        if local == 0xffff_ffff {
            return Rc0::Alive; // immortal
        }
        let count = (shared as i64) >> 2;
        if local > 1 << 30 || count.unsigned_abs() > 1 << 40 {
            return Rc0::Bad;
        }
        if local == 0 && count == 0 {
            Rc0::Zero
        } else {
            Rc0::Alive
        }
    }

    /// 3.14 free lists (Include/internal/pycore_freelist.h, GIL build) link their objects
    /// through the first word, overwriting the refcount with the next object's address.
    fn is_freelist_link(&self, o: u64, t: u64) -> bool {
        if self.om.refcount != Refcount::Split32 {
            return false;
        }
        let Some(r) = self.u64(o) else { return false };
        r >> 32 != 0 && r >> 48 == 0 && r % 8 == 0 && self.u64(r.wrapping_add(8)) == Some(t)
    }

    /// Bytes the object itself needs (without GC head or pre-header).
    fn object_size(&self, o: u64, ti: &TypeInfo, alloc: u64) -> Option<u64> {
        match ti.size_rule {
            SizeRule::Str => {
                let len = self.u64(self.f(o, 0x10))?;
                let state = self.hot_u32(self.f(o, 0x20))?;
                let kind = ((state >> 2) & 7) as u64;
                if state & (1 << 5) == 0 {
                    return Some(ti.basicsize); // legacy (non-compact): data elsewhere
                }
                if !matches!(kind, 1 | 2 | 4) || len > alloc {
                    return None;
                }
                let head = if state & (1 << 6) != 0 {
                    self.om.str_ascii_data
                } else {
                    self.om.str_compact_data
                };
                // `len` is read from the core (bounded by `alloc` only): an impossible
                // size makes no object, as a failed read does.
                len.checked_add(1)?.checked_mul(kind)?.checked_add(head)
            }
            SizeRule::Int => {
                let n = match self.om.int_size {
                    IntSize::ObSize => (self.u64(self.f(o, 0x10))? as i64).unsigned_abs(),
                    IntSize::LvTag => (self.u64(self.f(o, 0x10))? >> 3).max(1),
                };
                if n > alloc {
                    return None;
                }
                ti.itemsize.max(4).checked_mul(n)?.checked_add(ti.basicsize)
            }
            SizeRule::Var => {
                let n = (self.u64(self.f(o, 0x10))? as i64).unsigned_abs();
                let items = n.checked_mul(ti.itemsize)?;
                if items > alloc {
                    return None;
                }
                ti.basicsize.checked_add(items)
            }
            SizeRule::Gen => {
                let g = self.om.generator.as_ref()?;
                let at = match g.gi_code {
                    Some(off) => o.wrapping_add(off),
                    None => o
                        .wrapping_add(ti.basicsize)
                        .wrapping_sub(g.frame_localsplus),
                };
                let slots = self.frame_slots(g, at)?;
                Some(ti.basicsize + 8 * slots)
            }
            SizeRule::Frame => {
                // The frame object was made for the frame at f_frame, its own inline copy
                // or a frame its thread still runs: sized by that frame's code.
                let g = self.om.generator.as_ref()?;
                let f_frame = self.u64(o.wrapping_add(g.frame_object_f_frame?))?;
                let slots = self.frame_slots(g, f_frame.wrapping_add(g.frame_code?))?;
                Some(ti.basicsize + 8 * slots)
            }
            SizeRule::ByFlag { flag, small } => {
                if self.hot_u8(o.wrapping_add(flag))? == 0 {
                    Some(small)
                } else {
                    Some(ti.basicsize)
                }
            }
            SizeRule::StructSeq { fields } => Some(ti.basicsize + 8 * fields),
            SizeRule::Basic => Some(ti.basicsize),
        }
    }

    /// The slots (locals and value stack) of a frame whose code object pointer is at
    /// `at`: what a generator or frame object allocates for them. None unless `at` holds
    /// a code object.
    fn frame_slots(&self, g: &Generator, at: u64) -> Option<u64> {
        // 3.14's f_executable is a _PyStackRef: tag bits below the alignment.
        let code = self.u64(at)? & !7;
        if self.code_type == 0 || self.u64(self.f(code, 8))? != self.code_type {
            return None;
        }
        let int = |off: u64| self.hot_u32(code.wrapping_add(off)).map(|v| v as i32);
        let slots: i64 = match g.co_framesize {
            Some(off) => int(off)? as i64 - g.frame_specials as i64,
            None => {
                let mut n = 0i64;
                for &off in &g.slots_sum {
                    n += int(off)? as i64;
                }
                n
            }
        };
        (0..1 << 20).contains(&slots).then_some(slots as u64)
    }

    /// A GC object's links (Include/internal/pycore_gc.h): untracked, `_gc_next` is 0 and
    /// `_gc_prev` keeps at most _PyGC_PREV_MASK_FINALIZED (1); tracked, its neighbours
    /// point back at its head (`_gc_prev` carries 2 flag bits, `_gc_next` a flag in its low
    /// bit on 3.13+). During a collection `_gc_prev` holds gc_refs with
    /// _PyGC_PREV_MASK_COLLECTING (2) set, in the object and its successor alike.
    fn gc_linked(&self, o: u64) -> bool {
        let h = o.wrapping_sub(16);
        let (Some(next), Some(prev)) = (self.u64(h), self.u64(h.wrapping_add(8))) else {
            return false;
        };
        if next == 0 {
            return prev & !1 == 0;
        }
        let nx = next & !1;
        let back = self.u64(nx.wrapping_add(8));
        if back.is_some_and(|p| p & !3 == h) {
            return true;
        }
        let pv = prev & !3;
        if pv != 0 && self.u64(pv).is_some_and(|n| n & !1 == h) {
            return true;
        }
        prev & 2 != 0 && back.is_some_and(|p| p & 2 != 0)
    }

    /// Is the GC object at `o` untracked (`_gc_next` 0)? Free-list residents are.
    fn gc_untracked(&self, o: u64) -> bool {
        let h = o.wrapping_sub(16);
        self.u64(h) == Some(0) && self.u64(h.wrapping_add(8)).is_some_and(|p| p & !1 == 0)
    }

    /// The object in an allocation of `alloc` usable bytes at `m`, if there is one.
    /// `exact`: pymalloc blocks are the request rounded to 16; glibc chunks to 16 plus 8.
    pub fn classify(&self, m: u64, alloc: u64, pymalloc: bool) -> Option<(u64, u32, bool)> {
        for off in [0u64, 16, 32] {
            if off + 16 > alloc {
                break;
            }
            let o = m.wrapping_add(off);
            let Some(t) = self.u64(self.f(o, 8)) else {
                break;
            };
            // The refcount first: it is in the same cache line, and at the wrong offset
            // (a GC head's links, a pre-header's pointers) it is no refcount at all — which
            // spares the type lookup of a pointer that is no type. Either check failing ends
            // this offset, so their order does not change the answer.
            let rc = if self.is_freelist_link(o, t) {
                Rc0::Zero
            } else {
                self.refcount(o)
            };
            if rc == Rc0::Bad {
                continue;
            }
            let Some(idx) = self.type_index(t) else {
                continue;
            };
            let ti = self.info(idx);
            let mut gc = if ti.flags & F_HAVE_GC != 0 {
                self.om.gc_head
            } else {
                0
            };
            let pre = if ti.flags & self.om.preheader_flags != 0 {
                16
            } else {
                0
            };
            // A static-style type object that C code allocated itself (numpy's DType
            // classes: PyMem_Malloc(sizeof(PyArray_DTypeMeta)), numpy/_core/src/multiarray/
            // dtypemeta.c): at the block's start, no GC head, though its metatype is a GC type.
            let bare_type = off == 0
                && gc + pre != 0
                && ti.flags & F_TYPE_SUBCLASS != 0
                && self
                    .u64(self.f(o, TP_FLAGS))
                    .is_some_and(|f| f & F_HEAPTYPE == 0)
                && self.is_type(o, 0);
            if bare_type {
                gc = 0;
            } else if off != gc + pre {
                continue;
            }
            match rc {
                Rc0::Bad => continue,
                // Dead: a resident only of a real free list (untracked if a GC type).
                Rc0::Zero if !ti.freelist || (gc != 0 && !self.gc_untracked(o)) => continue,
                Rc0::Alive if gc != 0 && !self.gc_linked(o) => continue,
                _ => {}
            }
            let Some(size) = self.object_size(o, ti, alloc) else {
                continue;
            };
            // `size` follows size fields of the core: too large to add is no object.
            let Some(required) = off.checked_add(size) else {
                continue;
            };
            // mimalloc (free-threaded builds) rounds to its size bins, up to 1/4 apart
            // (mimalloc page-queue.h _mi_bin: 4 bins per power of two above 64 bytes).
            let slack = if self.hs != 0 {
                15 + required / 4
            } else if pymalloc {
                15
            } else {
                15 + 24
            };
            // Resizable objects may keep a larger allocation after shrinking in place
            // (pymalloc keeps the block above 3/4; glibc keeps small remainders), and
            // PyType_GenericAlloc allocates one item more than asked (int subclasses);
            // inline attribute values (3.13+) live after the object.
            let extra = if ti.flags & F_INLINE_VALUES != 0 {
                alloc
            } else if matches!(ti.size_rule, SizeRule::Var | SizeRule::Str | SizeRule::Int) {
                required / 3
            } else {
                0
            };
            if required <= alloc && alloc <= required.saturating_add(slack).saturating_add(extra) {
                return Some((o, idx, rc == Rc0::Zero));
            }
        }
        None
    }

    /// The object's reference count as the GIL build's `ob_refcnt` word would hold it: that
    /// word itself, or on free-threaded builds `ob_ref_local + (ob_ref_shared >> 2)` (0 when
    /// the shared part is negative beyond the local one; immortal objects as the 3.12/3.13
    /// _Py_IMMORTAL_REFCNT, UINT32_MAX) — Include/object.h Py_REFCNT under Py_GIL_DISABLED.
    pub fn refcount_word(&self, o: u64) -> u64 {
        if self.om.refcount != Refcount::FreeThreaded {
            return self.u64(o).unwrap_or(0);
        }
        let local = self.hot_u32(o.wrapping_add(0xc)).unwrap_or(0) as i64;
        if local == u32::MAX as i64 {
            return u32::MAX as u64;
        }
        let shared = self.u64(o.wrapping_add(0x10)).unwrap_or(0) as i64 >> 2;
        (local + shared).max(0) as u64
    }

    /// [`Typer::f`] for other readers: the address of the field at GIL-build offset `off`.
    pub fn field(&self, o: u64, off: u64) -> u64 {
        self.f(o, off)
    }

    pub fn u64_at(&self, a: u64) -> Option<u64> {
        self.u64(a)
    }

    /// `len` bytes at `a` when they lie in one region, through this typer's hot regions
    /// (as `u64_at`): a thread's reader of object tables (python::edges) then does not
    /// search the address space's regions, nor write its shared last-found index, per
    /// container.
    #[inline]
    pub fn bytes_at(&self, a: u64, len: u64) -> Option<&'a [u8]> {
        let hot = self.hot.get();
        for &(start, n, ptr) in hot.iter() {
            let off = a.wrapping_sub(start);
            if off < n && n - off >= len {
                // SAFETY: as in `u64`: `ptr`, `n` are a slice of the address space this
                // typer borrows for 'a; `off + len <= n` keeps the slice inside it.
                return Some(unsafe {
                    std::slice::from_raw_parts((ptr as *const u8).add(off as usize), len as usize)
                });
            }
        }
        let (_, start, bytes) = self.r.space.region_at(Addr(a))?;
        let off = (a - start) as usize;
        let end = off.checked_add(usize::try_from(len).ok()?)?;
        let out = bytes.get(off..end)?;
        self.hot
            .set([(start, bytes.len() as u64, bytes.as_ptr() as usize), hot[0]]);
        Some(out)
    }

    /// An instance's attribute values array when it is an allocation of its own: 3.11's
    /// values pointer at -32, 3.12's tagged `values - 1` at -24 (layouts.md §C.2); 3.13+
    /// keeps the values inline, inside the object's own allocation.
    pub fn separate_values(&self, o: u64, ti: &TypeInfo) -> Option<u64> {
        let om = self.om;
        if om.preheader_flags == 0 || ti.flags & om.preheader_flags & (1 << 4) == 0 {
            return None;
        }
        if om.refcount == Refcount::Plain {
            self.u64(o.wrapping_sub(32)).filter(|&v| v != 0)
        } else if om.refcount == Refcount::Immortal32
            && om.tuple_items == 0x18
            && ti.flags & F_INLINE_VALUES == 0
        {
            self.u64(o.wrapping_sub(24))
                .filter(|v| v & 1 == 1)
                .map(|v| v.wrapping_add(1))
        } else {
            None
        }
    }

    /// A short description of the object's contents.
    pub fn preview(&self, o: u64, ti: &TypeInfo) -> String {
        let quote = |s: &str, max: usize| {
            let mut t: String = s.chars().take(max).collect();
            if s.chars().count() > max {
                t.push('…');
            }
            format!("{t:?}")
        };
        match ti.special {
            Special::Str => match self.str_text(o, 61) {
                Some(s) => {
                    let len = self.u64(self.f(o, 0x10)).unwrap_or(0);
                    format!("{} (len {len})", quote(&s, 60))
                }
                None => String::new(),
            },
            Special::Bytes => {
                let n = self.u64(self.f(o, 0x10)).unwrap_or(0);
                let mut b = vec![0u8; n.min(32) as usize];
                let _ = self.r.space.read(Addr(self.f(o, 0x20)), &mut b);
                let shown: String = b
                    .iter()
                    .map(|&c| {
                        if (0x20..0x7f).contains(&c) && c != b'\\' && c != b'\'' {
                            (c as char).to_string()
                        } else {
                            format!("\\x{c:02x}")
                        }
                    })
                    .collect();
                format!("b'{shown}{}' (len {n})", if n > 32 { "…" } else { "" })
            }
            Special::Int => self.int_value(o).unwrap_or_else(|| "(large int)".into()),
            Special::Float => match self.u64(self.f(o, 0x10)) {
                // Like Python's repr: integral values keep their ".0".
                Some(b) => {
                    let f = f64::from_bits(b);
                    let t = format!("{f}");
                    if f.is_finite() && !t.contains(['.', 'e']) {
                        format!("{t}.0")
                    } else {
                        t
                    }
                }
                None => String::new(),
            },
            Special::List | Special::Tuple | Special::Set => {
                let n = self
                    .u64(self.f(
                        o,
                        if ti.special == Special::Set {
                            0x18
                        } else {
                            0x10
                        },
                    ))
                    .unwrap_or(0);
                format!("len {n}")
            }
            Special::Dict => self.dict_preview(o),
            Special::None => self.instance_preview(o, ti),
        }
    }

    fn int_value(&self, o: u64) -> Option<String> {
        let (neg, v) = self.int_parts(o)?;
        Some(format!("{}{v}", if neg && v != 0 { "-" } else { "" }))
    }

    /// An int of at most two 30-bit digits: (negative, magnitude).
    fn int_parts(&self, o: u64) -> Option<(bool, u128)> {
        let (neg, n) = match self.om.int_size {
            IntSize::ObSize => {
                let s = self.u64(self.f(o, 0x10))? as i64;
                (s < 0, s.unsigned_abs())
            }
            IntSize::LvTag => {
                let tag = self.u64(self.f(o, 0x10))?;
                (tag & 3 == 2, tag >> 3)
            }
        };
        if n > 2 {
            return None;
        }
        let mut v: u128 = 0;
        for i in (0..n).rev() {
            v = (v << 30) | self.hot_u32(self.f(o, 0x18 + 4 * i))? as u128;
        }
        Some((neg, v))
    }

    fn keys_text(&self, items: &[(u64, u64)], total: u64) -> String {
        let names: Vec<String> = items
            .iter()
            .take(6)
            .map(|&(k, _)| {
                self.str_text(k, 24)
                    .map(|s| format!("{s:?}"))
                    .unwrap_or_else(|| "…".into())
            })
            .collect();
        let more = if total as usize > names.len() {
            ", …"
        } else {
            ""
        };
        format!("{}{more}", names.join(", "))
    }

    fn dict_preview(&self, o: u64) -> String {
        let used = self.u64(self.f(o, 0x10)).unwrap_or(0);
        let items = self.dict_items(o, 6);
        format!("len {used}: {{{}}}", self.keys_text(&items, used))
    }

    /// Attributes of an instance: its `__dict__` when materialised (at tp_dictoffset up to
    /// 3.10, the managed dict pointer at -24 from 3.11), else the type's shared keys
    /// (ht_cached_keys) with the instance's values (3.11: pointer at -32; 3.12: tagged
    /// pointer at -24; 3.13+: inline after the object, values[] at +8).
    fn instance_preview(&self, o: u64, ti: &TypeInfo) -> String {
        const DICT_SUBCLASS: u64 = 1 << 29;
        const LIST_OR_TUPLE_SUBCLASS: u64 = (1 << 25) | (1 << 26);
        if ti.flags & DICT_SUBCLASS != 0 {
            return self.dict_preview(o);
        }
        if ti.flags & LIST_OR_TUPLE_SUBCLASS != 0 {
            return format!("len {}", self.u64(self.f(o, 0x10)).unwrap_or(0));
        }
        let om = self.om;
        let managed = om.preheader_flags != 0 && ti.flags & om.preheader_flags & (1 << 4) != 0;
        let dict = if om.preheader_flags == 0 {
            let off = self.u64(self.f(ti.addr.0, TP_DICTOFFSET)).unwrap_or(0) as i64;
            if off > 0 {
                self.u64(o.wrapping_add(off as u64)).filter(|&d| d != 0)
            } else {
                None
            }
        } else if managed {
            self.u64(o.wrapping_sub(om.managed_dict))
                .filter(|&d| d != 0 && d & 1 == 0)
        } else {
            None
        };
        let is_dict = |d: u64| {
            self.type_info(self.u64(self.f(d, 8)).unwrap_or(0))
                .is_some_and(|t| t.special == Special::Dict)
        };
        let items: Vec<(u64, u64)> = match dict {
            Some(d) if is_dict(d) => self.dict_items(d, 6),
            _ if managed => {
                // Split keys shared by the type, values kept with the instance.
                let values = if om.refcount == Refcount::Plain
                    || (om.refcount == Refcount::Immortal32
                        && om.tuple_items == 0x18
                        && ti.flags & F_INLINE_VALUES == 0)
                {
                    self.separate_values(o, ti) // 3.11, 3.12
                } else {
                    // 3.13+: inline, values[] after an 8-byte header (wrapping: an address
                    // past the top is unreadable).
                    Some(o.wrapping_add(ti.basicsize).wrapping_add(8))
                };
                let keys = self
                    .u64(ti.addr.0.wrapping_add(om.ht_cached_keys))
                    .unwrap_or(0);
                match (values, keys) {
                    (Some(v), k) if v != 0 && k != 0 => self.split_items(k, v, 6),
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        if items.is_empty() {
            return self.slots_preview(o, ti);
        }
        let shown: Vec<String> = items
            .iter()
            .filter(|&&(_, v)| v != 0)
            .map(|&(k, v)| {
                let key = self.str_text(k, 24).unwrap_or_else(|| "?".into());
                format!("{key}={}", self.short_value(v))
            })
            .collect();
        shown.join(", ")
    }

    /// `__slots__` values: the type's `tp_members` (PyMemberDef {name, type, offset, flags,
    /// doc}, 40 bytes, Include/descrobject.h) of kind T_OBJECT (6) / T_OBJECT_EX (16).
    fn slots_preview(&self, o: u64, ti: &TypeInfo) -> String {
        let Some(members) = self.u64(self.f(ti.addr.0, TP_MEMBERS)).filter(|&m| m != 0) else {
            return String::new();
        };
        let mut shown = Vec::new();
        for i in 0..16u64 {
            let m = members.wrapping_add(40 * i);
            let Some(name) = self.u64(m).filter(|&n| n != 0) else {
                break;
            };
            let kind = self.hot_u32(m.wrapping_add(8)).unwrap_or(0);
            let off = self.u64(m.wrapping_add(16)).unwrap_or(0);
            if !matches!(kind, 6 | 16) || off == 0 || off >= ti.basicsize {
                continue;
            }
            let Some(n) = self.r.space.read_cstr(Addr(name), 64) else {
                continue;
            };
            let n = String::from_utf8_lossy(&n).into_owned();
            if n.starts_with("__") {
                continue; // __weakref__, __dict__
            }
            match self.u64(o.wrapping_add(off)) {
                Some(0) | None => shown.push(format!("{n}=<unset>")),
                Some(v) => shown.push(format!("{n}={}", self.short_value(v))),
            }
            if shown.len() >= 6 {
                break;
            }
        }
        shown.join(", ")
    }

    /// Entries of split keys (PyDictUnicodeEntry) with values from a values array.
    fn split_items(&self, keys: u64, values: u64, limit: usize) -> Vec<(u64, u64)> {
        let mut v = self.split_entries(keys, values, 64);
        v.truncate(limit);
        v
    }

    /// The (key, value) pairs of a split table: keys from shared `PyDictKeysObject` (3.11+
    /// Include/internal/pycore_dict.h: dk_log2_index_bytes at +9, dk_nentries at +0x18,
    /// PyDictUnicodeEntry {key, value} after the indices), values from a values array;
    /// at most `max_entries` key slots are read.
    pub fn split_entries(&self, keys: u64, values: u64, max_entries: u64) -> Vec<(u64, u64)> {
        if self.om.dict_keys != DictKeys::V2 {
            return Vec::new();
        }
        let Some(ib) = self.hot_u8(keys.wrapping_add(9)) else {
            return Vec::new();
        };
        if ib > 40 {
            return Vec::new();
        }
        let n = self
            .u64(keys.wrapping_add(0x18))
            .unwrap_or(0)
            .min(max_entries);
        let entries = keys.wrapping_add(0x20 + (1u64 << ib));
        (0..n)
            .filter_map(|i| {
                let k = self.u64(entries.wrapping_add(16 * i))?;
                let v = self.u64(values.wrapping_add(8 * i))?;
                (k != 0).then_some((k, v))
            })
            .collect()
    }

    /// A few characters for an attribute value.
    fn short_value(&self, v: u64) -> String {
        let Some(ti) = self.u64(self.f(v, 8)).and_then(|t| self.type_info(t)) else {
            return "?".into();
        };
        match ti.special {
            Special::Str => self
                .str_text(v, 21)
                .map(|s| {
                    let mut t: String = s.chars().take(20).collect();
                    if s.chars().count() > 20 {
                        t.push('…');
                    }
                    format!("{t:?}")
                })
                .unwrap_or_else(|| "str".into()),
            Special::Int | Special::Float => self.preview(v, &ti),
            _ => match ti.name.as_str() {
                "NoneType" => "None".into(),
                "bool" => {
                    if self.int_value(v).as_deref() == Some("1") {
                        "True".into()
                    } else {
                        "False".into()
                    }
                }
                n => format!("<{n}>"),
            },
        }
    }
}

/// Fake type objects and instances in a synthetic core (image::testcore), laid out as
/// CPython lays them out (tp_name 0x18, tp_basicsize 0x20, tp_itemsize 0x28, tp_flags
/// 0xa8: Include/cpython/object.h PyTypeObject); also used by the census's and the
/// edges' unit tests.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::testcore::{TestCore, RW};
    use crate::models::{cpython_models, CpythonModel};

    /// The "module image" (static types and their names): [BASE, HEAP).
    pub(crate) const BASE: u64 = 0x10_0000;
    pub(crate) const HEAP: u64 = BASE + 0x8000;
    const NAMES: u64 = BASE + 0x7000;
    pub(crate) const TYPE_TYPE: u64 = BASE;
    pub(crate) const STR_TYPE: u64 = BASE + 0x400;
    pub(crate) const READY: u64 = F_READY;

    pub(crate) struct Fake {
        pub(crate) core: TestCore,
        next_name: u64,
        next_type: u64,
    }

    impl Fake {
        /// `type` (its own type) and a static `str`, in a core of one 64 KiB segment.
        pub(crate) fn new() -> Fake {
            let mut core = TestCore::new();
            core.segment(BASE, 0x1_0000, RW);
            let mut f = Fake {
                core,
                next_name: NAMES,
                next_type: BASE + 0x800,
            };
            f.type_at(
                TYPE_TYPE,
                "type",
                0x3a0,
                40,
                READY | F_HAVE_GC | F_TYPE_SUBCLASS,
            );
            f.type_at(STR_TYPE, "str", 40, 0, READY | (1 << 28));
            f
        }
        fn type_at(&mut self, t: u64, name: &str, basic: u64, item: u64, flags: u64) {
            let n = self.next_name;
            self.next_name += (name.len() as u64 + 16) & !15;
            self.core.bytes(n, name.as_bytes());
            self.core
                .u64(t, 1)
                .u64(t + 8, TYPE_TYPE)
                .u64(t + TP_NAME, n);
            self.core
                .u64(t + TP_BASICSIZE, basic)
                .u64(t + TP_ITEMSIZE, item);
            self.core.u64(t + TP_FLAGS, flags);
        }
        /// A new static type in the image.
        pub(crate) fn static_type(&mut self, name: &str, basic: u64, item: u64, flags: u64) -> u64 {
            let t = self.next_type;
            self.next_type += 0x400;
            assert!(self.next_type <= NAMES);
            self.type_at(t, name, basic, item, flags | READY);
            t
        }
        /// An object header: refcount, type, and the word at +0x10 (ob_size, a str's length).
        pub(crate) fn obj(&mut self, o: u64, rc: u64, t: u64, size: u64) -> &mut Self {
            self.core.u64(o, rc).u64(o + 8, t).u64(o + 0x10, size);
            self
        }
    }

    pub(crate) fn model(v: &str) -> CpythonModel {
        cpython_models(None)
            .unwrap()
            .into_iter()
            .find(|m| m.name == v)
            .unwrap()
    }

    pub(crate) fn typer<'a>(
        p: &'a Process,
        m: &'a CpythonModel,
        specials: Vec<(u64, Special)>,
    ) -> Typer<'a> {
        let mut specials = specials;
        specials.push((STR_TYPE, Special::Str));
        let syms = Symbols {
            type_type: TYPE_TYPE,
            str_type: STR_TYPE,
            specials,
            ..Default::default()
        };
        Typer::from_parts(&p.space, &m.objects, syms, vec![(BASE, HEAP)])
    }

    /// Size fields of garbage (an ob_size, a str length, an int's digit count near 2^64)
    /// in allocations of any size make no object and no overflow (debug builds check).
    #[test]
    fn garbage_size_fields_make_no_object() {
        let mut f = Fake::new();
        let blob = f.static_type("blob", 24, 8, 0);
        let int = f.static_type("myint", 24, 4, F_LONG_SUBCLASS);
        // ob_size * 8 fits in 64 bits, tp_basicsize on top of it does not.
        f.obj(HEAP, 1, blob, u64::MAX / 8);
        // A compact ASCII str (state: kind 1, compact, ascii) of length 2^64 - 2.
        f.obj(HEAP + 0x100, 1, STR_TYPE, u64::MAX - 1);
        f.core.u32(HEAP + 0x120, (1 << 2) | (1 << 5) | (1 << 6));
        // 3.8-3.11 ob_size / 3.12+ lv_tag of an int: digits * 4 beyond 64 bits.
        f.obj(HEAP + 0x200, 1, int, 1 << 62);
        // ob_size * 8 + tp_basicsize is 2^64 - 8: the slack beyond it does not fit.
        f.obj(HEAP + 0x300, 1, blob, (u64::MAX - 31) / 8);
        let p = f.core.process();
        for v in ["3.8", "3.11", "3.12", "3.14"] {
            let m = model(v);
            let t = typer(&p, &m, vec![]);
            for alloc in [48, 1 << 40, u64::MAX - 64, u64::MAX] {
                for pm in [true, false] {
                    for o in [HEAP, HEAP + 0x100, HEAP + 0x200] {
                        assert_eq!(t.classify(o, alloc, pm), None, "{v} {o:#x} {alloc:#x}");
                    }
                    // Only an allocation as large as the space holds it; no panic either way.
                    let _ = t.classify(HEAP + 0x300, alloc, pm);
                }
            }
        }
    }

    /// A 3.11+ frame object is sized by the code of the frame it was made for
    /// (_PyFrame_New_NoTrack): not by the word at 0x10, which is f_back (a pointer, or 0
    /// for an outermost frame) and made most frame objects no object at all.
    #[test]
    fn frame_objects_are_sized_by_their_frames_code() {
        const SLOTS: u64 = 20;
        for v in ["3.11", "3.12", "3.13", "3.14"] {
            let mut f = Fake::new();
            let code_t = f.static_type("code", 0xc8, 1, 0);
            let frame_t = f.static_type("frame", 0x78, 8, F_HAVE_GC);
            let m = model(v);
            let g = m.objects.generator.clone().unwrap();
            let code = HEAP + 0x1000;
            f.obj(code, 1, code_t, 0);
            match g.co_framesize {
                Some(off) => {
                    f.core.u32(code + off, (SLOTS + g.frame_specials) as u32);
                }
                None => {
                    f.core.u32(code + g.slots_sum[0], 15);
                    f.core.u32(code + g.slots_sum[1], (SLOTS - 15) as u32);
                }
            }
            // The frame its thread runs, its code at frame_code (3.14: a tagged stack ref).
            let frame = HEAP + 0x1800;
            f.core
                .u64(frame + g.frame_code.unwrap(), code | (v == "3.14") as u64);
            // The frame object, untracked (its GC head zero), outermost (f_back 0).
            let o = HEAP + 16;
            f.obj(o, 1, frame_t, 0);
            f.core.u64(o + g.frame_object_f_frame.unwrap(), frame);
            let p = f.core.process();
            let syms = Symbols {
                type_type: TYPE_TYPE,
                str_type: STR_TYPE,
                code_type: code_t,
                specials: vec![(STR_TYPE, Special::Str)],
                ..Default::default()
            };
            let t = Typer::from_parts(&p.space, &m.objects, syms, vec![(BASE, HEAP)]);
            let need = 16 + 0x78 + 8 * SLOTS;
            assert_eq!(t.classify(HEAP, need, true).map(|c| c.0), Some(o), "{v}");
            assert_eq!(t.classify(HEAP, need + 64, true), None, "{v}");
            assert_eq!(t.classify(HEAP, need - 16, true), None, "{v}");
        }
    }
}
