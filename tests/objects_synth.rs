//! Object validation over synthetic memory: fake type objects and instances laid out as
//! CPython lays them out, in a one-segment core, typed with the embedded models. Each test
//! is one validation rule of `python::objects` / `python::census`.

use coreheap::addr::Addr;
use coreheap::analysis::census::{census_of, census_of_with};
use coreheap::image::core::CoreFile;
use coreheap::image::memory::AddressSpace;
use coreheap::models::{cpython_models, CpythonModel};
use coreheap::python::floats;
use coreheap::python::objects::{Special, Symbols, Typer};
use rustc_hash::FxHashSet;
use std::sync::Arc;

const BASE: u64 = 0x10_0000;
const SIZE: u64 = 0x2_0000;
/// Static types and their names live below IMAGE_END (the "module image").
const IMAGE_END: u64 = BASE + 0x8000;
const TYPE_TYPE: u64 = BASE;
const STR_TYPE: u64 = BASE + 0x400;
const CODE_TYPE: u64 = BASE + 0x800;
const NAMES: u64 = BASE + 0x7000;
/// The heap: blocks are carved from here.
const HEAP: u64 = BASE + 0x8000;

const READY: u64 = 1 << 12;
const HAVE_GC: u64 = 1 << 14;
const HEAPTYPE: u64 = 1 << 9;
const TYPE_SUBCLASS: u64 = 1 << 31;
const LONG_SUBCLASS: u64 = 1 << 24;

struct Mem {
    bytes: Vec<u8>,
    next_name: u64,
    next_type: u64,
}

impl Mem {
    fn new() -> Mem {
        let mut m = Mem {
            bytes: vec![0; SIZE as usize],
            next_name: NAMES,
            next_type: BASE + 0xc00,
        };
        // `type` is its own type; str and code are plain static types.
        m.type_at(
            TYPE_TYPE,
            TYPE_TYPE,
            "type",
            0x3a0,
            40,
            READY | HAVE_GC | TYPE_SUBCLASS,
        );
        m.type_at(STR_TYPE, TYPE_TYPE, "str", 40, 0, READY | (1 << 28));
        m.type_at(CODE_TYPE, TYPE_TYPE, "code", 200, 2, READY | HAVE_GC);
        m
    }
    fn w64(&mut self, a: u64, v: u64) {
        let o = (a - BASE) as usize;
        self.bytes[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn w32(&mut self, a: u64, v: u32) {
        let o = (a - BASE) as usize;
        self.bytes[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn w8(&mut self, a: u64, v: u8) {
        self.bytes[(a - BASE) as usize] = v;
    }
    fn cstr(&mut self, s: &str) -> u64 {
        let a = self.next_name;
        let o = (a - BASE) as usize;
        self.bytes[o..o + s.len()].copy_from_slice(s.as_bytes());
        self.next_name += (s.len() as u64 + 16) & !15;
        a
    }
    fn type_at(&mut self, t: u64, meta: u64, name: &str, basic: u64, item: u64, flags: u64) {
        let n = self.cstr(name);
        self.w64(t, 1);
        self.w64(t + 8, meta);
        self.w64(t + 0x18, n);
        self.w64(t + 0x20, basic);
        self.w64(t + 0x28, item);
        self.w64(t + 0xa8, flags);
    }
    /// A new static type in the image.
    fn static_type(&mut self, name: &str, basic: u64, item: u64, flags: u64) -> u64 {
        let t = self.next_type;
        self.next_type += 0x400;
        assert!(self.next_type <= NAMES);
        self.type_at(t, TYPE_TYPE, name, basic, item, flags | READY);
        t
    }
    /// A compact ASCII str object at `a` (3.12 layout: data at +40).
    fn str_at(&mut self, a: u64, s: &str) {
        self.w64(a, 1);
        self.w64(a + 8, STR_TYPE);
        self.w64(a + 0x10, s.len() as u64);
        self.w32(a + 0x20, (1 << 2) | (1 << 5) | (1 << 6));
        let o = (a + 40 - BASE) as usize;
        self.bytes[o..o + s.len()].copy_from_slice(s.as_bytes());
    }
    /// A plain object header (refcount, type).
    fn obj(&mut self, o: u64, rc: u64, t: u64) {
        self.w64(o, rc);
        self.w64(o + 8, t);
    }
}

fn core_of(bytes: &[u8]) -> CoreFile {
    // ELF header, one PT_LOAD at BASE holding `bytes`.
    let mut out = vec![0u8; 64];
    out[0..4].copy_from_slice(b"\x7fELF");
    out[4] = 2;
    out[5] = 1;
    out[6] = 1;
    out[16..18].copy_from_slice(&4u16.to_le_bytes());
    out[18..20].copy_from_slice(&62u16.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[32..40].copy_from_slice(&64u64.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&1u16.to_le_bytes());
    let data_off = 0x1000u64;
    for v in [1u32, 6] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        data_off,
        BASE,
        0,
        bytes.len() as u64,
        bytes.len() as u64,
        4096,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.resize(data_off as usize, 0);
    out.extend_from_slice(bytes);
    CoreFile::from_bytes("synthetic-objects", out).unwrap()
}

fn model(v: &str) -> CpythonModel {
    cpython_models(None)
        .unwrap()
        .into_iter()
        .find(|m| m.name == v)
        .unwrap()
}

struct World {
    space: AddressSpace,
    model: CpythonModel,
    syms: Symbols,
}

impl World {
    fn new(m: Mem, version: &str, gen_types: Vec<u64>, specials: Vec<(u64, Special)>) -> World {
        World {
            space: AddressSpace::new(Arc::new(core_of(&m.bytes))),
            model: model(version),
            syms: Symbols {
                type_type: TYPE_TYPE,
                str_type: STR_TYPE,
                code_type: CODE_TYPE,
                specials,
                gen_types,
            },
        }
    }
    fn typer(&self) -> Typer<'_> {
        Typer::from_parts(
            &self.space,
            &self.model.objects,
            self.syms.clone(),
            vec![(BASE, IMAGE_END)],
        )
    }
    /// The type name of the object `classify` finds in the block, if any.
    fn classify(&self, m: u64, alloc: u64, pymalloc: bool) -> Option<(u64, String, bool)> {
        let t = self.typer();
        t.classify(m, alloc, pymalloc)
            .map(|(o, i, z)| (o, t.type_by_index(i).name.clone(), z))
    }
}

/// 3.12+ int subclasses (IntEnum members): the digit count is lv_tag >> 3, and
/// PyType_GenericAlloc allocates one digit more.
#[test]
fn int_subclass_sized_by_lv_tag() {
    let mut m = Mem::new();
    let t = m.static_type("Color", 24, 4, LONG_SUBCLASS);
    let o = HEAP;
    m.obj(o, 1, t);
    m.w64(o + 0x10, 2 << 3); // two digits, positive
    m.w32(o + 0x18, 5);
    m.w32(o + 0x1c, 1);
    let w = World::new(m, "3.12", vec![], vec![]);
    // 24 + 4 * (2 + 1) = 36 -> a 48-byte block.
    assert_eq!(w.classify(o, 48, true).map(|x| x.1), Some("Color".into()));
}

/// Generators embed their frame: allocation = basicsize + 8 * (co_framesize - specials),
/// the code found through the frame (3.12) — not through an ob_size they do not have.
#[test]
fn generator_sized_by_its_code_object() {
    let mut m = Mem::new();
    let g = m.static_type("generator", 144, 8, HAVE_GC);
    let code = HEAP + 0x1000 + 16;
    m.obj(code, 1, CODE_TYPE);
    m.w32(code + 76, 9 + 3); // co_framesize: 3 slots
    let blk = HEAP;
    let o = blk + 16; // after the GC head (untracked: zeros)
    m.obj(o, 1, g);
    m.w64(o + 0x10, HEAP + 0x3000); // gi_weakreflist: a pointer, not a size
    m.w64(o + 144 - 0x48, code); // the frame's f_code
    let w = World::new(m, "3.12", vec![g], vec![]);
    // 16 + 144 + 24 = 184 -> 192.
    assert_eq!(
        w.classify(blk, 192, true).map(|x| x.1),
        Some("generator".into())
    );
    // A block of another size is not this generator.
    assert_eq!(w.classify(blk, 256, true), None);
}

/// Naive datetime.time: CPython allocates sizeof(_PyDateTime_BaseTime) = 32 < tp_basicsize.
#[test]
fn naive_time_is_smaller_than_basicsize() {
    let mut m = Mem::new();
    let t = m.static_type("datetime.time", 40, 0, 0);
    m.obj(HEAP, 1, t); // hastzinfo (+0x18) = 0
    m.obj(HEAP + 0x100, 1, t);
    m.w8(HEAP + 0x118, 1);
    let w = World::new(m, "3.11", vec![], vec![]);
    assert_eq!(
        w.classify(HEAP, 32, true).map(|x| x.1),
        Some("datetime.time".into())
    );
    assert_eq!(
        w.classify(HEAP + 0x100, 48, true).map(|x| x.1),
        Some("datetime.time".into())
    );
    // An aware time needs its tzinfo: not in 32 bytes.
    assert_eq!(w.classify(HEAP + 0x100, 32, true), None);
}

/// A type object allocated by C code without a GC head (numpy's DType classes), although
/// its metatype is a GC type.
#[test]
fn bare_type_object_at_block_start() {
    let mut m = Mem::new();
    let meta = m.static_type("numpy._DTypeMeta", 0x1e0, 0, HAVE_GC | TYPE_SUBCLASS);
    let o = HEAP + 0x2000; // a glibc chunk's user data
    let n = m.cstr("numpy.dtypes.Float64DType");
    m.obj(o, 3, meta);
    m.w64(o + 0x18, n);
    m.w64(o + 0x20, 96);
    m.w64(o + 0xa8, READY);
    let w = World::new(m, "3.12", vec![], vec![]);
    assert_eq!(
        w.classify(o, 0x1e8, false).map(|x| (x.0, x.1)),
        Some((o, "numpy._DTypeMeta".into()))
    );
}

/// 3.12/3.13: an immortal refcount is _Py_IMMORTAL_REFCNT (UINT_MAX), not any word whose
/// bit 31 is set.
#[test]
fn immortal_refcount_must_be_exact_on_3_12() {
    let mut m = Mem::new();
    let t = m.static_type("Foo", 32, 0, 0);
    m.obj(HEAP, 0xffff_ffff, t);
    m.obj(HEAP + 0x40, 0x7f12_8000_0001, t);
    let w = World::new(m, "3.12", vec![], vec![]);
    assert!(w.classify(HEAP, 32, true).is_some());
    assert_eq!(w.classify(HEAP + 0x40, 32, true), None);
}

/// 3.14: ob_refcnt is 32 bits, ob_overflow 0, ob_flags only the immortal/static flags.
#[test]
fn split_refcount_fields_checked_on_3_14() {
    let mut m = Mem::new();
    let t = m.static_type("Foo", 32, 0, 0);
    m.obj(HEAP, 0x0005_0000_c000_0000, t); // static immortal
    m.obj(HEAP + 0x40, 0x0001_0000_c000_0000, t); // immortalized at run time
    m.obj(HEAP + 0x80, 7, t);
    m.obj(HEAP + 0xc0, 0x0000_7f00_0000_0005, t); // a pointer-like word
    m.obj(HEAP + 0x100, 0x0000_0000_c000_0000, t); // immortal count without the flag
    let w = World::new(m, "3.14", vec![], vec![]);
    assert!(w.classify(HEAP, 32, true).is_some());
    assert!(w.classify(HEAP + 0x40, 32, true).is_some());
    assert!(w.classify(HEAP + 0x80, 32, true).is_some());
    assert_eq!(w.classify(HEAP + 0xc0, 32, true), None);
    assert_eq!(w.classify(HEAP + 0x100, 32, true), None);
}

/// A tracked GC object's neighbours point back at its GC head; stale links are no object.
#[test]
fn gc_links_must_point_back() {
    let mut m = Mem::new();
    let t = m.static_type("Bar", 32, 0, HAVE_GC);
    let head = HEAP + 0x3000; // a generation list head
    let (a, b) = (HEAP, HEAP + 0x40); // two blocks, GC heads at their start
                                      // head <-> a <-> head
    m.w64(head, a);
    m.w64(head + 8, a);
    m.w64(a, head);
    m.w64(a + 8, head | 1); // _PyGC_PREV_MASK_FINALIZED
    m.obj(a + 16, 1, t);
    // b: links into nowhere that points back
    m.w64(b, HEAP + 0x5000);
    m.w64(b + 8, HEAP + 0x5100);
    m.obj(b + 16, 1, t);
    let w = World::new(m, "3.12", vec![], vec![]);
    assert!(w.classify(a, 48, true).is_some());
    assert_eq!(w.classify(b, 48, true), None);
}

/// Refcount 0 is a free-list resident only for the version's free-list types (and
/// untracked); any other dead block is free memory.
#[test]
fn zero_refcount_only_for_free_list_types() {
    let mut m = Mem::new();
    let dict = m.static_type("dict", 48, 0, HAVE_GC);
    let code = m.static_type("re._parser.SubPattern", 32, 0, 0);
    m.obj(HEAP + 16, 0, dict);
    m.obj(HEAP + 0x100, 0, code);
    let w = World::new(m, "3.12", vec![], vec![(dict, Special::Dict)]);
    assert_eq!(
        w.classify(HEAP, 64, true),
        Some((HEAP + 16, "dict".into(), true))
    );
    assert_eq!(w.classify(HEAP + 0x100, 32, true), None);
}

/// Cython >= 3.1 shared types: the dict's "__module__" is a member descriptor (for the
/// instances), so the module is tp_name's prefix, as type.__module__ answers.
#[test]
fn cython_type_named_with_its_module() {
    let mut m = Mem::new();
    let member = m.static_type("member_descriptor", 64, 0, 0);
    let dict_t = m.static_type("dict", 48, 0, HAVE_GC);
    let model = model("3.12");
    let om = &model.objects;
    // The heap type, in a glibc chunk (GC head before it).
    let t = HEAP + 0x4000 + 16;
    let name = m.cstr("_cython_3_1_2.cython_function_or_method");
    m.obj(t, 5, TYPE_TYPE);
    m.w64(t + 0x18, name);
    m.w64(t + 0x20, 120);
    m.w64(t + 0xa8, READY | HEAPTYPE | HAVE_GC);
    let qual = HEAP + 0x6000;
    m.str_at(qual, "cython_function_or_method");
    m.w64(t + om.ht_qualname, qual);
    // tp_dict: {"__module__": <member descriptor>}, combined unicode keys (v2).
    let d = HEAP + 0x6100 + 16;
    let keys = HEAP + 0x6200;
    let key = HEAP + 0x6300;
    let desc = HEAP + 0x6400;
    m.obj(d, 1, dict_t);
    m.w64(d + 0x10, 1);
    m.w64(d + 0x20, keys);
    m.w8(keys + 8, 3); // log2 size
    m.w8(keys + 9, 3); // log2 index bytes
    m.w8(keys + 10, 1); // unicode keys
    m.w64(keys + 0x18, 1); // nentries
    m.w64(keys + 0x20 + 8, key);
    m.w64(keys + 0x20 + 8 + 8, desc);
    m.str_at(key, "__module__");
    m.obj(desc, 1, member);
    m.w64(t + 0x108, d);
    let w = World::new(m, "3.12", vec![], vec![(dict_t, Special::Dict)]);
    let typer = w.typer();
    assert_eq!(
        typer.type_info(t).map(|i| i.name.clone()).as_deref(),
        Some("_cython_3_1_2.cython_function_or_method")
    );
}

/// The census keeps an object only when its type is live: a heap type found in a live
/// allocation, or a static type in a module image — not a type pointer left in reused
/// memory whose type object is no longer allocated.
#[test]
fn census_drops_objects_of_dead_types() {
    let mut m = Mem::new();
    let mk_heap_type = |m: &mut Mem, t: u64, qual: u64, name: &str| {
        m.w64(t - 16, 0);
        m.w64(t - 8, 0);
        m.obj(t, 2, TYPE_TYPE);
        m.w64(t + 0x20, 32);
        m.w64(t + 0xa8, READY | HEAPTYPE);
        m.str_at(qual, name);
        let model = model("3.12");
        m.w64(t + model.objects.ht_qualname, qual);
    };
    let live_t = HEAP + 0x4000 + 16;
    let dead_t = HEAP + 0x5000 + 16;
    mk_heap_type(&mut m, live_t, HEAP + 0x6000, "Item");
    mk_heap_type(&mut m, dead_t, HEAP + 0x6100, "Gone");
    m.obj(HEAP, 1, live_t);
    m.obj(HEAP + 0x40, 1, dead_t);
    let w = World::new(m, "3.12", vec![], vec![]);
    let typer = w.typer();
    // Live allocations: the two instances and the live type's chunk (not the dead type's).
    let allocs = vec![
        (HEAP, 32, 32, true),
        (HEAP + 0x40, 32, 32, true),
        (HEAP + 0x4000, 0x3b8, 0x3c0, false),
    ];
    let c = census_of(&typer, allocs.into_iter());
    let count = |n: &str| c.types.iter().find(|t| t.name == n).map(|t| t.count);
    assert_eq!(count("Item"), Some(1));
    assert_eq!(count("Gone"), None);
    assert_eq!(c.dead_type_objects, 1);
    assert_eq!(count("<untyped pymalloc>"), Some(1));
}

/// Native buffers of C types and 3.12's separate attribute values are charged to their
/// owner's rows.
#[test]
fn census_charges_buffers_and_attribute_values() {
    let mut m = Mem::new();
    let ba = m.static_type("bytearray", 56, 0, 0);
    // 3.12 instance: GC + pre-header (managed dict), values tagged at -24.
    let cls = m.static_type("Item", 16, 0, HAVE_GC | 0x10);
    m.obj(HEAP, 1, ba);
    m.w64(HEAP + 0x20, HEAP + 0x100); // ob_bytes
    let blk = HEAP + 0x200;
    let o = blk + 32;
    m.obj(o, 1, cls);
    let values = HEAP + 0x300 + 8; // after the values prefix
    m.w64(o - 24, values - 1);
    let w = World::new(m, "3.12", vec![], vec![]);
    let typer = w.typer();
    let allocs = vec![
        (HEAP, 64, 64, true),
        (HEAP + 0x100, 64, 64, true),
        (blk, 48, 48, true),
        (HEAP + 0x300, 64, 64, true),
    ];
    let c = census_of(&typer, allocs.into_iter());
    let count = |n: &str| c.types.iter().find(|t| t.name == n).map(|t| t.count);
    assert_eq!(count("bytearray"), Some(1));
    assert_eq!(count("Item"), Some(1));
    assert_eq!(count("<bytearray buffer>"), Some(1));
    assert_eq!(count("<attributes of Item>"), Some(1));
    assert_eq!(count("<untyped pymalloc>"), None);
}

/// 3.8-3.10: the dead frame a code object keeps (co_zombieframe) is no free-list resident:
/// it gets its own row, and only frames on the free list count as free.
#[test]
fn zombie_frames_are_not_free_list_residents() {
    let mut m = Mem::new();
    let frame = m.static_type("frame", 0x170, 8, HAVE_GC);
    let code = HEAP + 16;
    m.obj(code, 1, CODE_TYPE);
    let (zombie, free) = (HEAP + 0x1000 + 16, HEAP + 0x2000 + 16);
    m.w64(code + 0x80, zombie);
    m.obj(zombie, 0, frame);
    m.obj(free, 0, frame);
    let w = World::new(m, "3.8", vec![], vec![]);
    let typer = w.typer();
    let allocs = vec![
        (HEAP, 216, 224, false),
        (HEAP + 0x1000, 0x188, 0x190, false),
        (HEAP + 0x2000, 0x188, 0x190, false),
    ];
    let c = census_of(&typer, allocs.into_iter());
    let count = |n: &str| c.types.iter().find(|t| t.name == n).map(|t| t.count);
    assert_eq!(count("code"), Some(1));
    assert_eq!(count("<zombie frames>"), Some(1));
    let free: Vec<(&str, u64)> = c
        .freelists
        .iter()
        .map(|f| (f.name.as_str(), f.count))
        .collect();
    assert_eq!(free, [("frame", 1)]);
}

/// Memory for the float free-list tests (3.11): three freed floats linked through ob_type
/// (refcount 0, the last link NULL), one live float, and the interpreter state holding the
/// list's head and count, reached from `_PyRuntime` (python/floats.rs).
struct FloatWorld {
    w: World,
    float: u64,
    runtime: u64,
    links: [u64; 3],
}

const FLOAT_INTERP: u64 = HEAP + 0x10000;

fn float_world(count: u32, edit: impl FnOnce(&mut Mem, &[u64; 3])) -> FloatWorld {
    let mut m = Mem::new();
    let float = m.static_type("float", 24, 0, 0);
    let links = [HEAP, HEAP + 0x20, HEAP + 0x40];
    m.obj(links[0], 0, links[1]);
    m.obj(links[1], 0, links[2]);
    m.obj(links[2], 0, 0);
    m.obj(HEAP + 0x60, 1, float);
    let md = model("3.11");
    let (f, ff) = (md.frames.unwrap(), md.objects.float_freelist.unwrap());
    let runtime = BASE + 0x6000;
    m.w64(runtime + f.runtime_interpreters_head, FLOAT_INTERP);
    m.w64(FLOAT_INTERP + f.interp_next, 0);
    m.w64(FLOAT_INTERP + ff.interp_head.unwrap(), links[0]);
    m.w32(FLOAT_INTERP + ff.interp_count.unwrap(), count);
    edit(&mut m, &links);
    FloatWorld {
        w: World::new(m, "3.11", vec![], vec![(float, Special::Float)]),
        float,
        runtime,
        links,
    }
}

impl FloatWorld {
    /// The walk from the interpreter's head; `live` are the live 32-byte blocks.
    fn walk(&self, live: &[u64]) -> (Vec<u64>, Vec<String>) {
        let md = &self.w.model;
        let heads = match floats::heads(
            &self.w.space,
            md.objects.float_freelist.as_ref(),
            md.frames.as_ref(),
            &|_| None,
            Some(Addr(self.runtime)),
        ) {
            floats::Heads::Found(h) => h,
            _ => panic!("no heads"),
        };
        let live = |c: &FxHashSet<u64>| c.iter().copied().filter(|a| live.contains(a)).collect();
        let (blocks, diags) = floats::walk(&self.w.space, &heads, &live);
        (blocks, diags.iter().map(|d| d.message.clone()).collect())
    }
}

/// Floats on the float free list keep no type pointer (ob_type is the next link): the
/// census takes them from the list walked from the interpreter's head, as free `float`s.
#[test]
fn float_free_list_walked_from_its_head() {
    let fw = float_world(3, |_, _| {});
    let all = [fw.links[0], fw.links[1], fw.links[2], HEAP + 0x60];
    let (blocks, diags) = fw.walk(&all);
    assert_eq!(blocks, fw.links);
    assert!(diags.is_empty(), "{diags:?}");
    let typer = fw.w.typer();
    let allocs = all.iter().map(|&a| (a, 32, 32, true));
    let c = census_of_with(&typer, allocs, &blocks.iter().copied().collect());
    let count = |n: &str| c.types.iter().find(|t| t.name == n).map(|t| t.count);
    assert_eq!(count("float"), Some(1));
    assert_eq!(count("<untyped pymalloc>"), None);
    let free: Vec<(&str, u64)> = c
        .freelists
        .iter()
        .map(|f| (f.name.as_str(), f.count))
        .collect();
    assert_eq!(free, [("float", 3)]);
    assert!(c
        .free_objects
        .iter()
        .all(|o| c.type_of(o).addr.0 == fw.float));
    // Without the list the dead floats are free memory (untyped), never guessed at.
    let c = census_of(&typer, all.iter().map(|&a| (a, 32, 32, true)));
    assert!(c.freelists.is_empty());
}

/// A bad link ends the walk with a diagnostic; the count bounds it; a loop stops it.
#[test]
fn float_free_list_walk_is_bounded_and_checked() {
    let live3 = |fw: &FloatWorld| fw.links.to_vec();
    // Not a live block of the float size class (freed back to pymalloc, or another class).
    let fw = float_world(3, |_, _| {});
    let (blocks, diags) = fw.walk(&fw.links[..2]);
    assert_eq!(blocks, fw.links[..2]);
    assert!(diags[0].contains("no live pymalloc block"), "{diags:?}");
    // A refcount that is not 0.
    let fw = float_world(3, |m, l| m.w64(l[1], 1));
    let (blocks, diags) = fw.walk(&live3(&fw));
    assert_eq!(blocks, fw.links[..1]);
    assert!(diags[0].contains("refcount"), "{diags:?}");
    // Longer than its count: at most `count` floats.
    let fw = float_world(2, |_, _| {});
    let (blocks, diags) = fw.walk(&live3(&fw));
    assert_eq!(blocks, fw.links[..2]);
    assert!(diags[0].contains("longer than its count 2"), "{diags:?}");
    // Shorter than its count.
    let fw = float_world(5, |_, _| {});
    let (blocks, diags) = fw.walk(&live3(&fw));
    assert_eq!(blocks, fw.links);
    assert!(
        diags[0].contains("3 floats linked, its count says 5"),
        "{diags:?}"
    );
    // A loop.
    let fw = float_world(100, |m, l| m.w64(l[2] + 8, l[0]));
    let (blocks, diags) = fw.walk(&live3(&fw));
    assert_eq!(blocks, fw.links);
    assert!(diags[0].contains("loops"), "{diags:?}");
    // A negative count: nothing taken.
    let fw = float_world(u32::MAX, |_, _| {});
    let (blocks, diags) = fw.walk(&live3(&fw));
    assert!(blocks.is_empty());
    assert!(diags[0].contains("implausible"), "{diags:?}");
}

/// 3.8-3.9 keep the list in floatobject.c's statics: without their symbols (a stripped
/// build) the heads are missing, and 3.14 needs none (freed floats keep their type).
#[test]
fn float_free_list_heads_per_version() {
    let m = Mem::new();
    let w = World::new(m, "3.8", vec![], vec![]);
    let ff = w.model.objects.float_freelist.as_ref();
    assert!(matches!(
        floats::heads(&w.space, ff, None, &|_| None, None),
        floats::Heads::Missing(_)
    ));
    let sym = |n: &str| match n {
        "floatobject.c:free_list" => Some(Addr(HEAP)),
        "floatobject.c:numfree" => Some(Addr(HEAP + 8)),
        _ => None,
    };
    match floats::heads(&w.space, ff, None, &sym, None) {
        floats::Heads::Found(h) => assert_eq!(h, [(Addr(HEAP), Addr(HEAP + 8))]),
        _ => panic!("statics not found"),
    }
    let m14 = model("3.14");
    assert!(matches!(
        floats::heads(
            &w.space,
            m14.objects.float_freelist.as_ref(),
            None,
            &sym,
            None
        ),
        floats::Heads::NotNeeded
    ));
}

/// Free-threaded 3.13t objects (Include/object.h under Py_GIL_DISABLED): the 0x20-byte
/// header {ob_tid, _padding u16, ob_mutex, ob_gc_bits, ob_ref_local u32, ob_ref_shared,
/// ob_type}, every type field 0x10 further (tp_name 0x28, tp_basicsize 0x30, tp_flags
/// 0xb8), no GC head, and GC objects with the pre-header at block + 16.
#[test]
fn free_threaded_objects_are_typed_with_the_shifted_header() {
    let ft = coreheap::models::cpython_ft_models(None)
        .unwrap()
        .into_iter()
        .find(|m| m.name == "3.13t")
        .unwrap();
    let mut m = Mem::new();
    // Overwrite the three base types in the free-threaded layout.
    let ft_type = |m: &mut Mem, t: u64, name: &str, basic: u64, item: u64, flags: u64| {
        let n = m.cstr(name);
        m.w64(t, 0);
        m.w64(t + 8, 0xffff_ffff << 32); // ob_ref_local = UINT32_MAX: immortal
        m.w64(t + 0x10, 0);
        m.w64(t + 0x18, TYPE_TYPE);
        m.w64(t + 0x28, n);
        m.w64(t + 0x30, basic);
        m.w64(t + 0x38, item);
        m.w64(t + 0xb8, flags | READY);
    };
    for t in [TYPE_TYPE, STR_TYPE, CODE_TYPE] {
        for off in [0x18u64, 0x20, 0x28, 0xa8] {
            m.w64(t + off, 0);
        }
    }
    ft_type(
        &mut m,
        TYPE_TYPE,
        "type",
        0x3b0,
        40,
        HAVE_GC | TYPE_SUBCLASS,
    );
    ft_type(&mut m, STR_TYPE, "str", 56, 0, 1 << 28);
    ft_type(&mut m, CODE_TYPE, "code", 216, 2, HAVE_GC);
    let thing = BASE + 0x1000;
    ft_type(&mut m, thing, "Thing", 48, 0, HAVE_GC | 0x18); // managed dict + weakref
    let plain = BASE + 0x1400;
    ft_type(&mut m, plain, "Plain", 32, 0, 0);
    let blob = BASE + 0x1800;
    ft_type(&mut m, blob, "Blob", 40, 8, 0);
    // header: tid, gc bits (tracked) and ob_ref_local, ob_ref_shared, type
    let obj = |m: &mut Mem, o: u64, local: u64, shared: u64, t: u64| {
        m.w64(o, 0x7f00_1234_5000);
        m.w64(o + 8, (1 << 24) | (local << 32));
        m.w64(o + 0x10, shared);
        m.w64(o + 0x18, t);
    };
    let (b1, b2, b3, b4, b5) = (HEAP, HEAP + 0x100, HEAP + 0x200, HEAP + 0x300, HEAP + 0x400);
    obj(&mut m, b1 + 16, 1, 0, thing); // GC_PRE heap: the object behind the pre-header
    obj(&mut m, b2, 0, 3 << 2, plain); // only shared references (another thread's)
    obj(&mut m, b3, 0, 0, plain); // refcount 0 and no free-list type: a dead block
    obj(&mut m, b4, 1, 0, plain);
    m.w64(b4 + 8, (1 << 24) | (1 << 32) | 0x7); // _padding is not 0: no object
    obj(&mut m, b5, 2, 0, blob);
    m.w64(b5 + 0x20, 3); // ob_size 3: 40 + 3 * 8 = 64 bytes
    let w = World {
        space: AddressSpace::new(Arc::new(core_of(&m.bytes))),
        model: ft,
        syms: Symbols {
            type_type: TYPE_TYPE,
            str_type: STR_TYPE,
            code_type: CODE_TYPE,
            specials: vec![],
            gen_types: vec![],
        },
    };
    assert_eq!(
        w.classify(b1, 64, true),
        Some((b1 + 16, "Thing".into(), false))
    );
    assert_eq!(w.classify(b2, 32, true), Some((b2, "Plain".into(), false)));
    assert_eq!(w.classify(b3, 32, true), None);
    assert_eq!(w.classify(b4, 32, true), None);
    // mimalloc bins are up to a quarter apart: a 64-byte object in an 80-byte block
    assert_eq!(w.classify(b5, 80, true), Some((b5, "Blob".into(), false)));
    assert_eq!(w.typer().refcount_word(b2), 3);
    assert_eq!(w.typer().refcount_word(thing), u32::MAX as u64);
}
