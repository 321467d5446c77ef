//! Heap layout models: per-version facts about glibc malloc (and, later, CPython) as data.
//!
//! The TOML files under `heap-models/` are embedded at build time; `--heap-models DIR`
//! replaces them with `DIR/glibc/*.toml`. Each file covers one layout epoch (a version
//! range over which every field coreheap reads is the same) and cites its sources.
//! Models are chosen by version and then confirmed by invariants in the walkers; a model
//! is never trusted only because its version range matched.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

pub mod debug_offsets;

/// A "major.minor" version, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.split('.');
        let a = it.next()?.trim().parse().ok()?;
        let b: String = it
            .next()?
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        Some(Version(a, b.parse().ok()?))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MallocState {
    pub size: u64,
    pub flags: u64,
    /// `fastbinsY` (absent from 2.43 on, where fastbins are gone).
    pub fastbins: Option<u64>,
    #[serde(default)]
    pub nfastbins: u64,
    pub top: u64,
    pub last_remainder: u64,
    pub bins: u64,
    pub next: u64,
    pub next_free: u64,
    pub attached_threads: u64,
    pub system_mem: u64,
    pub max_system_mem: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MallocPar {
    pub size: u64,
    pub trim_threshold: u64,
    pub top_pad: u64,
    pub mmap_threshold: u64,
    pub arena_test: u64,
    pub arena_max: u64,
    pub n_mmaps: u64,
    pub n_mmaps_max: u64,
    pub max_n_mmaps: u64,
    pub mmapped_mem: u64,
    pub max_mmapped_mem: u64,
    pub sbrk_base: u64,
    pub tcache_bins: Option<u64>,
    pub tcache_max_bytes: Option<u64>,
    pub tcache_count: Option<u64>,
    pub tcache_unsorted_limit: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeapInfo {
    pub size: u64,
    pub ar_ptr: u64,
    pub prev: u64,
    pub hsize: u64,
    pub mprotect_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountsMean {
    /// `counts[i]` = chunks in bin i (2.26–2.41).
    Used,
    /// `num_slots[i]` = free slots left in bin i (2.42+, "Count tcache entries downwards").
    FreeSlots,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tcache {
    pub bins: u64,
    /// Bins of chunk sizes 0x20 + 16*i (the rest, if any, are the 2.42+ large bins).
    #[serde(default)]
    pub small_bins: Option<u64>,
    pub count_size: u64,
    pub counts: u64,
    pub entries: u64,
    pub struct_size: u64,
    pub fill_count: u64,
    pub counts_mean: CountsMean,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlibcModel {
    #[serde(skip)]
    pub name: String,
    pub kind: String,
    pub first: String,
    /// Inclusive; absent for the newest epoch.
    pub last: Option<String>,
    pub source: String,
    /// What the version range expects; the walker detects the truth from the data.
    pub safe_linking: bool,
    /// Every non-zero field of `mp_`'s initializer as (offset, width, value), when it is
    /// not the classic DEFAULT_MP_ derived from the field offsets.
    #[serde(default)]
    pub mp_initializer: Option<Vec<[u64; 3]>>,
    /// Bytes of an mmapped chunk's mapping after the chunk: 0 up to 2.42 (size field =
    /// mapping size), 16 from 2.43 (commit 614cfd0f8a "Change mmap chunk layout").
    #[serde(default)]
    pub mmap_chunk_tail: u64,
    pub malloc_state: MallocState,
    pub malloc_par: MallocPar,
    pub heap_info: HeapInfo,
    pub tcache: Option<Tcache>,
}

impl GlibcModel {
    pub fn has_fastbins(&self) -> bool {
        self.malloc_state.fastbins.is_some()
    }
    /// Tcache chunk size of the perthread struct (request2size of struct_size).
    pub fn tcache_chunk_size(&self) -> Option<u64> {
        self.tcache.as_ref().map(|t| (t.struct_size + 8 + 15) & !15)
    }

    /// Schema checks beyond the types: every field inside its struct, sane sizes.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.kind != "glibc" {
            return Err(format!("kind is {:?}, expected \"glibc\"", self.kind));
        }
        if Version::parse(&self.first).is_none() {
            return Err(format!("bad first version {:?}", self.first));
        }
        if let Some(l) = &self.last {
            let lv = Version::parse(l).ok_or(format!("bad last version {l:?}"))?;
            if lv < self.first_version() {
                return Err("last version before first".into());
            }
        }
        let ms = &self.malloc_state;
        let in_struct = |name: &str, off: u64, width: u64, size: u64| {
            if off + width > size {
                Err(format!(
                    "{name} at {off:#x} (+{width}) is outside its struct of {size:#x} bytes"
                ))
            } else {
                Ok(())
            }
        };
        for (n, o) in [
            ("malloc_state.flags", ms.flags),
            ("malloc_state.attached_threads", ms.attached_threads),
        ] {
            in_struct(n, o, 4, ms.size)?;
        }
        if let Some(f) = ms.fastbins {
            if ms.nfastbins == 0 || ms.nfastbins > 16 {
                return Err("nfastbins must be 1..16 when fastbins is given".into());
            }
            in_struct("malloc_state.fastbins", f, 8 * ms.nfastbins, ms.size)?;
        }
        in_struct("malloc_state.bins", ms.bins, 8 * 254, ms.size)?;
        for (n, o) in [
            ("top", ms.top),
            ("last_remainder", ms.last_remainder),
            ("next", ms.next),
            ("next_free", ms.next_free),
            ("system_mem", ms.system_mem),
            ("max_system_mem", ms.max_system_mem),
        ] {
            in_struct(n, o, 8, ms.size)?;
        }
        let mp = &self.malloc_par;
        for (n, o, w) in [
            ("trim_threshold", mp.trim_threshold, 8),
            ("top_pad", mp.top_pad, 8),
            ("mmap_threshold", mp.mmap_threshold, 8),
            ("arena_test", mp.arena_test, 8),
            ("arena_max", mp.arena_max, 8),
            ("n_mmaps", mp.n_mmaps, 4),
            ("n_mmaps_max", mp.n_mmaps_max, 4),
            ("max_n_mmaps", mp.max_n_mmaps, 4),
            ("mmapped_mem", mp.mmapped_mem, 8),
            ("max_mmapped_mem", mp.max_mmapped_mem, 8),
            ("sbrk_base", mp.sbrk_base, 8),
        ] {
            in_struct(n, o, w, mp.size)?;
        }
        for o in [
            mp.tcache_bins,
            mp.tcache_max_bytes,
            mp.tcache_count,
            mp.tcache_unsorted_limit,
        ]
        .into_iter()
        .flatten()
        {
            in_struct("malloc_par.tcache_*", o, 8, mp.size)?;
        }
        let hi = &self.heap_info;
        for o in [hi.ar_ptr, hi.prev, hi.hsize, hi.mprotect_size] {
            in_struct("heap_info field", o, 8, hi.size)?;
        }
        if self.mmap_chunk_tail % 16 != 0 || self.mmap_chunk_tail >= 4096 {
            return Err("mmap_chunk_tail must be a small multiple of 16".into());
        }
        if hi.size % 16 != 0 {
            return Err("heap_info size must keep chunks 16-aligned".into());
        }
        if let Some(t) = &self.tcache {
            if ![1, 2].contains(&t.count_size) {
                return Err("tcache count_size must be 1 or 2".into());
            }
            in_struct(
                "tcache.counts",
                t.counts,
                t.count_size * t.bins,
                t.struct_size,
            )?;
            in_struct("tcache.entries", t.entries, 8 * t.bins, t.struct_size)?;
            if t.small_bins.unwrap_or(t.bins) > t.bins || t.bins > 1024 {
                return Err("tcache bins out of range".into());
            }
        }
        Ok(())
    }
}

const EMBEDDED_GLIBC: &[(&str, &str)] = &[
    (
        "2.26.toml",
        include_str!("../../heap-models/glibc/2.26.toml"),
    ),
    (
        "2.27-2.29.toml",
        include_str!("../../heap-models/glibc/2.27-2.29.toml"),
    ),
    (
        "2.30-2.31.toml",
        include_str!("../../heap-models/glibc/2.30-2.31.toml"),
    ),
    (
        "2.32-2.34.toml",
        include_str!("../../heap-models/glibc/2.32-2.34.toml"),
    ),
    (
        "2.35-2.41.toml",
        include_str!("../../heap-models/glibc/2.35-2.41.toml"),
    ),
    (
        "2.42.toml",
        include_str!("../../heap-models/glibc/2.42.toml"),
    ),
    (
        "2.43.toml",
        include_str!("../../heap-models/glibc/2.43.toml"),
    ),
];

/// What the loader needs of a model file of either kind.
/// Models of both kinds share the version range (`first`, inclusive `last`) and how a
/// version is matched against it.
/// The model covering `v`, else the nearest by version (loaded ranges never overlap, so at
/// most one model has distance 0).
pub fn nearest<'m, M: Epoch + 'm>(
    models: impl IntoIterator<Item = &'m M>,
    v: Version,
) -> Option<&'m M> {
    models.into_iter().min_by_key(|m| m.distance(v))
}

pub trait Epoch: serde::de::DeserializeOwned {
    fn set_name(&mut self, name: String);
    fn name(&self) -> &str;
    /// The `first` and `last` fields as written in the file.
    fn range(&self) -> (&str, Option<&str>);
    fn validate(&self) -> std::result::Result<(), String>;
    /// A build variant whose models share version ranges with the plain ones (CPython's
    /// free-threaded builds): ranges may overlap only across variants.
    fn variant(&self) -> bool {
        false
    }

    fn first_version(&self) -> Version {
        Version::parse(self.range().0).unwrap_or(Version(0, 0))
    }
    fn last_version(&self) -> Option<Version> {
        self.range().1.and_then(Version::parse)
    }
    fn covers(&self, v: Version) -> bool {
        v >= self.first_version() && self.last_version().is_none_or(|l| v <= l)
    }
    /// How many minor releases `v` lies outside this model's range (0 inside): when no
    /// model covers a version, the nearest layouts are the likeliest to be right.
    fn distance(&self, v: Version) -> u32 {
        let minor = |x: Version| x.0 * 1000 + x.1;
        let (f, l) = (minor(self.first_version()), self.last_version().map(minor));
        let m = minor(v);
        if m < f {
            f - m
        } else {
            l.map_or(0, |l| m.saturating_sub(l))
        }
    }
}

impl Epoch for GlibcModel {
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn range(&self) -> (&str, Option<&str>) {
        (&self.first, self.last.as_deref())
    }
    fn validate(&self) -> std::result::Result<(), String> {
        GlibcModel::validate(self)
    }
}

fn parse_model<M: Epoch>(name: &str, text: &str) -> Result<M> {
    let mut m: M = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| {
                format!(
                    " (line {})",
                    text[..s.start.min(text.len())].lines().count().max(1)
                )
            })
            .unwrap_or_default();
        Error::Other(format!("heap model {name}: {}{line}", e.message().trim()))
    })?;
    m.set_name(name.trim_end_matches(".toml").to_string());
    m.validate()
        .map_err(|e| Error::Other(format!("heap model {name}: {e}")))?;
    Ok(m)
}

/// Models of one kind: embedded, or from `dir/<kind>/*.toml` when a directory is given.
/// Checks each file and that no two version ranges overlap.
fn load<M: Epoch>(kind: &str, embedded: &[(&str, &str)], dir: Option<&Path>) -> Result<Vec<M>> {
    let mut models: Vec<M> = Vec::new();
    match dir {
        None => {
            for (name, text) in embedded {
                models.push(parse_model(name, text)?);
            }
        }
        Some(d) => {
            let gd = d.join(kind);
            let rd = std::fs::read_dir(&gd).map_err(|e| Error::io(&gd, e))?;
            let mut paths: Vec<_> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
                models.push(parse_model(
                    &p.file_name().unwrap().to_string_lossy(),
                    &text,
                )?);
            }
            if models.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: no {kind} models (*.toml)",
                    gd.display()
                )));
            }
        }
    }
    models.sort_by_key(|m| m.first_version());
    let plain: Vec<&M> = models.iter().filter(|m| !m.variant()).collect();
    let variant: Vec<&M> = models.iter().filter(|m| m.variant()).collect();
    for w in plain.windows(2).chain(variant.windows(2)) {
        let end = w[0].last_version().ok_or_else(|| {
            Error::Other(format!(
                "heap model {}: open-ended range but not the newest",
                w[0].name()
            ))
        })?;
        if end >= w[1].first_version() {
            return Err(Error::Other(format!(
                "heap models {} and {} overlap",
                w[0].name(),
                w[1].name()
            )));
        }
    }
    Ok(models)
}

/// The glibc models: embedded, or from `dir/glibc/*.toml`.
pub fn glibc_models(dir: Option<&Path>) -> Result<Vec<GlibcModel>> {
    load("glibc", EMBEDDED_GLIBC, dir)
}

/// The CPython models of GIL builds: embedded, or from `dir/cpython/*.toml`.
pub fn cpython_models(dir: Option<&Path>) -> Result<Vec<CpythonModel>> {
    let mut v: Vec<CpythonModel> = load("cpython", EMBEDDED_CPYTHON, dir)?;
    v.retain(|m| !m.free_threaded);
    Ok(v)
}

/// The CPython models of free-threaded builds (`free_threaded = true`, e.g. 3.13t.toml).
pub fn cpython_ft_models(dir: Option<&Path>) -> Result<Vec<CpythonModel>> {
    let mut v: Vec<CpythonModel> = load("cpython", EMBEDDED_CPYTHON, dir)?;
    v.retain(|m| m.free_threaded);
    Ok(v)
}

const EMBEDDED_CPYTHON: &[(&str, &str)] = &[
    (
        "3.8.toml",
        include_str!("../../heap-models/cpython/3.8.toml"),
    ),
    (
        "3.9.toml",
        include_str!("../../heap-models/cpython/3.9.toml"),
    ),
    (
        "3.10.toml",
        include_str!("../../heap-models/cpython/3.10.toml"),
    ),
    (
        "3.11.toml",
        include_str!("../../heap-models/cpython/3.11.toml"),
    ),
    (
        "3.12.toml",
        include_str!("../../heap-models/cpython/3.12.toml"),
    ),
    (
        "3.13.toml",
        include_str!("../../heap-models/cpython/3.13.toml"),
    ),
    (
        "3.14.toml",
        include_str!("../../heap-models/cpython/3.14.toml"),
    ),
    (
        "3.13t.toml",
        include_str!("../../heap-models/cpython/3.13t.toml"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntSize {
    ObSize,
    LvTag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DictKeys {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refcount {
    Plain,
    Immortal32,
    Split32,
    /// Free-threaded (PEP 703, CPython 3.13 Include/object.h `Py_GIL_DISABLED`):
    /// `ob_ref_local` (u32 at +0xc, UINT32_MAX = immortal) plus `ob_ref_shared >> 2`
    /// (Py_ssize_t at +0x10, 2 flag bits below the count; negative while other threads'
    /// decrements wait for a merge).
    FreeThreaded,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objects {
    pub preheader_flags: u64,
    pub ht_name: u64,
    pub ht_qualname: u64,
    /// Shared keys of the type's instances (split / inline-values dicts).
    pub ht_cached_keys: u64,
    pub str_ascii_data: u64,
    pub str_compact_data: u64,
    pub int_size: IntSize,
    pub dict_keys: DictKeys,
    pub tuple_items: u64,
    pub refcount: Refcount,
    /// Types (by name) whose dead instances CPython keeps on a free list in this version;
    /// a zero-refcount object of any other type is a dead block, not a resident.
    #[serde(default)]
    pub freelist_types: Vec<String>,
    /// Generators, coroutines and async generators with their frame embedded (3.11+).
    #[serde(default)]
    pub generator: Option<Generator>,
    /// C types whose allocator sizes the object by a flag byte, not by `tp_basicsize`.
    #[serde(default)]
    pub alloc_by_flag: Vec<AllocByFlag>,
    /// Native buffers a C type's instance points to: charged to a row of their own.
    #[serde(default)]
    pub native_buffers: Vec<NativeBuffer>,
    /// C types whose instances keep pointers that are no references: a weak reference's
    /// referent and its neighbours on the referent's list of weak references.
    #[serde(default)]
    pub weak_fields: Vec<WeakFields>,
    /// C types (by name) whose items (the `tp_itemsize` part) are numbers, never
    /// references: a conservative scan stops at `tp_basicsize` for them.
    #[serde(default)]
    pub scalar_items: Vec<String>,
    /// `collections.deque`: its items live in a linked list of fixed blocks.
    #[serde(default)]
    pub deque: Option<DequeLayout>,
    /// `collections.OrderedDict`: a dict plus a linked list of nodes that hold the keys.
    #[serde(default)]
    pub odict: Option<OdictLayout>,
    /// Offset of `co_zombieframe` in code objects (3.8-3.10): the dead frame each code
    /// object keeps for its next call, which is on no free list.
    #[serde(default)]
    pub code_zombieframe: Option<u64>,
    /// Where the float free list's head and count live (3.8-3.13: the list is linked
    /// through `ob_type`, so no type pointer finds its floats). Absent where freed floats
    /// keep their type (3.14 `_PyFreeList_Push` links through the first word).
    #[serde(default)]
    pub float_freelist: Option<FloatFreelist>,
    /// Bytes every field after `ob_refcnt` moves by against the GIL build's object header:
    /// 0x10 in free-threaded builds, whose `PyObject` is {ob_tid, _padding, ob_mutex,
    /// ob_gc_bits, ob_ref_local, ob_ref_shared, ob_type} (0x20 bytes; CPython 3.13
    /// Include/object.h under Py_GIL_DISABLED). The readers' built-in offsets (ob_type 8,
    /// ob_size 0x10, tp_name 0x18, ...) are GIL-build offsets and get this added; offsets
    /// in a model file are the build's own.
    #[serde(default)]
    pub header_shift: u64,
    /// Bytes of `PyGC_Head` before a GC object (16; 0 in free-threaded builds, whose GC
    /// state is `ob_gc_bits` in the header: Include/internal/pycore_gc.h).
    #[serde(default = "sixteen")]
    pub gc_head: u64,
    /// Bytes before the object of its managed `__dict__` pointer (MANAGED_DICT_OFFSET:
    /// 3 words in GIL 3.12/3.13 builds, 1 word free-threaded; Include/internal/pycore_object.h).
    #[serde(default = "twenty_four")]
    pub managed_dict: u64,
}

fn sixteen() -> u64 {
    16
}

fn twenty_four() -> u64 {
    24
}

/// The float free list's head (`PyFloatObject *`) and count (`int`): static variables by
/// symbol (a file's local symbol as "file.c:name"), or fields of every interpreter's
/// `PyInterpreterState` (found from `_PyRuntime` through the `[frames]` offsets).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatFreelist {
    #[serde(default)]
    pub head_symbol: Option<String>,
    #[serde(default)]
    pub count_symbol: Option<String>,
    #[serde(default)]
    pub interp_head: Option<u64>,
    #[serde(default)]
    pub interp_count: Option<u64>,
}

/// How a generator's allocation is sized: `tp_basicsize + 8 * slots`, slots from its code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generator {
    /// Offset of the code object pointer in the generator (3.11 `gi_code`); absent when
    /// the code is the embedded frame's first word (`f_code` / `f_executable`, 3.12+),
    /// the frame starting `frame_localsplus` bytes before the end of `tp_basicsize`.
    pub gi_code: Option<u64>,
    /// `offsetof(_PyInterpreterFrame, localsplus)`.
    pub frame_localsplus: u64,
    /// slots = sum of these `int` fields of the code object (3.11: co_nlocalsplus +
    /// co_stacksize) ...
    #[serde(default)]
    pub slots_sum: Vec<u64>,
    /// ... or `co_framesize` (at this offset) - `frame_specials` (3.12+).
    pub co_framesize: Option<u64>,
    #[serde(default)]
    pub frame_specials: u64,
    /// Offset of `f_frame` in a frame object (3.11+ PyFrameObject, which is allocated with
    /// room for the slots of the code of the frame it was made for).
    #[serde(default)]
    pub frame_object_f_frame: Option<u64>,
    /// Offset of the code object pointer in `_PyInterpreterFrame` (`f_code`,
    /// `f_executable`).
    #[serde(default)]
    pub frame_code: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocByFlag {
    /// `tp_name` of the (static) type; heap subclasses allocate `tp_basicsize`.
    pub type_name: String,
    /// Offset of the flag byte in the object.
    pub flag: u64,
    /// Bytes allocated when the flag byte is 0.
    pub size_if_clear: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeBuffer {
    /// `tp_name` of the type (its subclasses share the layout).
    pub type_name: String,
    /// Offset of the buffer pointer in the object.
    pub pointer: u64,
    /// Census row for the buffers, e.g. "<bytearray buffer>".
    pub row: String,
}

/// Pointer fields of a C type's instances that hold no reference (`tp_traverse` does not
/// visit them and no reference count was taken for them): the reference graph leaves them
/// out, where a conservative scan of the object would take them for references.
#[derive(Debug, Clone, Deserialize)]
pub struct WeakFields {
    /// `tp_name` of the type (its subclasses share the layout).
    pub type_name: String,
    /// Offsets of the fields in the object (the build's own, as every model offset).
    pub offsets: Vec<u64>,
}

/// `dequeobject` and its `block`s (Modules/_collectionsmodule.c): the items are
/// `data[leftindex]` of `leftblock` to `data[rightindex]` of `rightblock`, the blocks linked
/// by `rightlink`, which follows the `block_len` item slots. Offsets are the object's own
/// (the build's, as every model offset); the block's are from its start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DequeLayout {
    pub type_name: String,
    pub left_block: u64,
    pub right_block: u64,
    pub left_index: u64,
    pub right_index: u64,
    /// Item slots per block (BLOCKLEN).
    pub block_len: u64,
    /// `numfreeblocks`, and the `freeblocks` array after it (3.11+: kept per deque; 3.8-3.10
    /// the free blocks are a module static and nobody's).
    #[serde(default)]
    pub free_count: Option<u64>,
    #[serde(default)]
    pub free_blocks: Option<u64>,
    #[serde(default)]
    pub free_max: u64,
    /// Census row of the blocks.
    pub row: String,
}

/// `PyODictObject` and its `_odictnode`s (Objects/odictobject.c): after the dict,
/// `od_first` heads a list of nodes {key, hash, next, prev}, each holding a reference to its
/// key; `od_fast_nodes` is an array of node pointers by hash slot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdictLayout {
    pub type_name: String,
    pub first: u64,
    pub fast_nodes: u64,
    pub node_key: u64,
    pub node_next: u64,
    /// Census row of the nodes and the node array.
    pub row: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// usedpools, arenas, maxarenas are file-scope statics (3.8-3.11).
    Statics,
    /// One `struct _obmalloc_state` holds them (3.12+).
    State,
}

/// mimalloc's segment, page and heap layout as CPython's free-threaded build compiles it
/// (release: no MI_ENCODE_FREELIST, no MI_PADDING), and where a thread state keeps its
/// heaps. Every model file cites its sources; src/alloc/mimalloc.rs reads these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mimalloc {
    /// MI_SEGMENT_SIZE: segments are aligned to it.
    pub segment_size: u64,
    /// MI_SEGMENT_SLICE_SIZE.
    pub slice_size: u64,
    /// MI_SLICES_PER_SEGMENT.
    pub slices_per_segment: u64,
    /// mi_segment_t fields.
    pub segment_slices: u64,
    pub segment_info_slices: u64,
    pub segment_kind: u64,
    pub segment_slice_entries: u64,
    pub segment_thread_id: u64,
    pub segment_slices_array: u64,
    /// sizeof(mi_page_t), and its fields.
    pub page_size: u64,
    pub page_slice_count: u64,
    pub page_slice_offset: u64,
    /// The bit-field byte holding the heap tag, its shift and width.
    pub page_tag_byte: u64,
    pub page_tag_shift: u32,
    pub page_tag_bits: u32,
    pub page_capacity: u64,
    pub page_reserved: u64,
    pub page_free: u64,
    pub page_local_free: u64,
    pub page_used: u64,
    /// Width in bytes of `used` (4) and of the block size field (4: `xblock_size`).
    pub page_used_width: u64,
    pub page_block_size: u64,
    pub page_block_size_width: u64,
    pub page_thread_free: u64,
    pub page_heap: u64,
    /// mi_heap_t fields.
    pub heap_thread_delayed_free: u64,
    pub heap_tag: u64,
    /// Where `_PyThreadStateImpl` keeps `heaps[4]`, and sizeof(mi_heap_t).
    pub tstate_heaps: u64,
    pub heap_struct_size: u64,
    /// Page start: `start_offset` is 3 * block size for block sizes in [8, 64], the block
    /// size in (64, 512], else 0 (3.13 segment.c `_mi_segment_page_start_from_slice`).
    pub start_offset_rule: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pymalloc {
    pub arena_size: u64,
    pub pool_size: u64,
    pub pool_overhead: u64,
    pub size_classes: u64,
    pub state: StateKind,
    pub arenas_offset: Option<u64>,
    pub maxarenas_offset: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpythonModel {
    #[serde(skip)]
    pub name: String,
    pub kind: String,
    pub first: String,
    pub last: Option<String>,
    pub source: String,
    /// A free-threaded build's model (`--disable-gil`): objects live in mimalloc heaps,
    /// there is no pymalloc, and `[mimalloc]` replaces `[pymalloc]`.
    #[serde(default)]
    pub free_threaded: bool,
    #[serde(default)]
    pub pymalloc: Pymalloc,
    #[serde(default)]
    pub mimalloc: Option<Mimalloc>,
    pub objects: Objects,
    /// Interpreter, thread-state, frame and code-object offsets for the stacks (read
    /// only); absent in a user's model directory that predates them.
    #[serde(default)]
    pub frames: Option<Frames>,
    /// Where tracemalloc keeps its traces (absent: not modelled for this version).
    #[serde(default)]
    pub tracemalloc: Option<Tracemalloc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashtableKind {
    /// 3.8 Modules/hashtable.c: key and data bytes stored in the entry after {next, hash}.
    Inline,
    /// 3.9+ Python/hashtable.c: entry {next, hash, key, value}.
    Pointer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NframeKind {
    /// 3.8: `int nframe` at +8.
    Int,
    /// 3.9+: `uint16_t nframe` at +8, `uint16_t total_nframe` at +10.
    U16,
}

/// tracemalloc's state (round2-facts.md §A): the config, the tables and the counters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracemalloc {
    pub hashtable: HashtableKind,
    pub nframe: NframeKind,
    pub config_size: u64,
    /// 3.12+: offset of `struct _tracemalloc_runtime_state` in `_PyRuntime`, and its fields.
    pub runtime_offset: Option<u64>,
    pub traced_memory: Option<u64>,
    pub peak_traced_memory: Option<u64>,
    pub traces: Option<u64>,
    pub domains: Option<u64>,
    pub empty_traceback: Option<u64>,
}

/// How a frame chain is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// `PyFrameObject` heap objects linked by `f_back` (3.8-3.10).
    Object,
    /// `_PyInterpreterFrame` structs linked by `previous` (3.11+).
    Interpreter,
}

/// Which line-number table a code object has and how it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineTable {
    /// `co_lnotab` (addr_incr u8, line_incr i8) pairs, addresses in bytes (3.8, 3.9).
    Lnotab,
    /// 3.10 `co_linetable` (sdelta u8, ldelta i8) ranges, -128 = no line.
    Linetable310,
    /// 3.11+ location table (Objects/locations.md).
    Locations,
}

/// Where the GIL's state is: a struct inside `_PyRuntime` (3.8-3.11), or a pointer in
/// the interpreter state to it (3.12+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GilAt {
    Runtime,
    InterpPointer,
}

/// Offsets the stack reader uses, x86_64/aarch64 LP64. Each version's file cites its
/// sources; on 3.13+ they are cross-checked with the interpreter's `_Py_DebugOffsets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frames {
    pub runtime_interpreters_head: u64,
    pub interp_next: u64,
    pub interp_id: u64,
    pub interp_threads_head: u64,
    pub tstate_next: u64,
    pub tstate_interp: u64,
    /// `frame` (3.8-3.10), `cframe` (3.11, 3.12) or `current_frame` (3.13+).
    pub tstate_frame: u64,
    /// `_PyCFrame.current_frame` when `tstate_frame` is the cframe pointer.
    pub cframe_current_frame: Option<u64>,
    pub tstate_thread_id: u64,
    pub tstate_native_thread_id: Option<u64>,
    pub gil_at: GilAt,
    pub gil_offset: u64,
    pub gil_last_holder: u64,
    pub gil_locked: u64,
    pub frame_kind: FrameKind,
    pub frame_previous: u64,
    pub frame_code: u64,
    pub frame_locals: u64,
    pub frame_localsplus: u64,
    /// 3.8-3.10: `f_lasti`, `f_lineno`, `f_trace`; `lasti_unit` bytes per f_lasti unit.
    pub frame_lasti: Option<u64>,
    pub frame_lineno: Option<u64>,
    pub frame_trace: Option<u64>,
    #[serde(default = "one")]
    pub lasti_unit: u64,
    /// 3.11+: `prev_instr` / `instr_ptr`, `owner`.
    pub frame_instr: Option<u64>,
    pub frame_owner: Option<u64>,
    /// Owner values: the generator owner (never incomplete), and the first owner value
    /// that marks a frame CPython's tracebacks skip (C-stack / interpreter-owned).
    pub owner_generator: Option<u64>,
    pub owner_skip_from: Option<u64>,
    /// 3.14: `f_executable`, `f_funcobj` and `localsplus[]` are tagged `_PyStackRef`s.
    #[serde(default)]
    pub stackref: bool,
    pub code_firstlineno: u64,
    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: Option<u64>,
    pub code_linetable: u64,
    pub line_table: LineTable,
    /// 3.11+: the inline bytecode and the first traceable instruction (code units).
    pub code_adaptive: Option<u64>,
    pub code_firsttraceable: Option<u64>,
    /// 3.8-3.10 locals: `co_varnames`, `co_cellvars`, `co_freevars` tuples.
    pub code_varnames: Option<u64>,
    pub code_cellvars: Option<u64>,
    pub code_freevars: Option<u64>,
    /// 3.11+ locals: `co_localsplusnames` tuple and `co_localspluskinds` bytes.
    pub code_localsplusnames: Option<u64>,
    pub code_localspluskinds: Option<u64>,
    /// `sys.modules` in the interpreter state (thread names from `threading._active`).
    pub interp_modules: Option<u64>,
}

fn one() -> u64 {
    1
}

/// A free-threaded model has no pymalloc: this stands for "none" and is never walked.
impl Default for Pymalloc {
    fn default() -> Self {
        Pymalloc {
            arena_size: 0,
            pool_size: 0,
            pool_overhead: 0,
            size_classes: 0,
            state: StateKind::State,
            arenas_offset: None,
            maxarenas_offset: None,
        }
    }
}

impl CpythonModel {
    /// Blocks of size class `i` that fit a pool (obmalloc.c NUMBLOCKS).
    pub fn numblocks(&self, class: u64) -> u64 {
        let p = &self.pymalloc;
        (p.pool_size - p.pool_overhead) / ((class + 1) * 16)
    }
}

impl Epoch for CpythonModel {
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn range(&self) -> (&str, Option<&str>) {
        (&self.first, self.last.as_deref())
    }
    fn variant(&self) -> bool {
        self.free_threaded
    }
    fn validate(&self) -> std::result::Result<(), String> {
        if self.kind != "cpython" {
            return Err(format!("kind is {:?}, expected \"cpython\"", self.kind));
        }
        Version::parse(&self.first).ok_or("bad first version")?;
        if self.free_threaded {
            let m = self
                .mimalloc
                .as_ref()
                .ok_or("free_threaded = true needs a [mimalloc] section")?;
            if !m.segment_size.is_power_of_two()
                || !m.slice_size.is_power_of_two()
                || m.slice_size * m.slices_per_segment > m.segment_size
                || m.page_size < 0x20
                || !matches!(m.page_used_width, 2 | 4)
                || !matches!(m.page_block_size_width, 4 | 8)
                || m.page_tag_bits > 8
            {
                return Err("mimalloc: segment/slice sizes or field widths out of range".into());
            }
        } else if self.mimalloc.is_some() {
            return Err("[mimalloc] needs free_threaded = true".into());
        }
        let p = &self.pymalloc;
        if self.free_threaded {
            // no pymalloc to check
        } else if !p.arena_size.is_power_of_two()
            || !p.pool_size.is_power_of_two()
            || p.pool_size > p.arena_size
        {
            return Err("arena and pool sizes must be powers of two, pool <= arena".into());
        }
        if !self.free_threaded
            && (p.size_classes == 0 || p.size_classes > 64 || p.pool_overhead >= p.pool_size)
        {
            return Err("size classes or pool overhead out of range".into());
        }
        if !self.free_threaded
            && p.state == StateKind::State
            && (p.arenas_offset.is_none() || p.maxarenas_offset.is_none())
        {
            return Err("state = \"state\" needs arenas_offset and maxarenas_offset".into());
        }
        if let Some(g) = &self.objects.generator {
            if g.co_framesize.is_some() != g.slots_sum.is_empty() {
                return Err("generator: give either slots_sum or co_framesize".into());
            }
            if g.frame_localsplus == 0 || g.frame_localsplus > 0x200 || g.frame_specials > 64 {
                return Err("generator: frame_localsplus or frame_specials out of range".into());
            }
        }
        for a in &self.objects.alloc_by_flag {
            if a.size_if_clear < 16 || a.size_if_clear > 1 << 16 || a.flag >= a.size_if_clear {
                return Err(format!("alloc_by_flag {}: sizes out of range", a.type_name));
            }
        }
        for b in &self.objects.native_buffers {
            if b.pointer < 16 || b.pointer > 1 << 12 || !b.row.starts_with('<') {
                return Err(format!(
                    "native_buffers {}: bad pointer offset or row",
                    b.type_name
                ));
            }
        }
        if let Some(d) = &self.objects.deque {
            let free_ok = match (d.free_count, d.free_blocks) {
                (None, None) => true,
                (Some(c), Some(b)) => b > c && b <= 1 << 12 && d.free_max <= 64,
                _ => false,
            };
            let offs = [d.left_block, d.right_block, d.left_index, d.right_index];
            if !(2..=1024).contains(&d.block_len)
                || offs
                    .iter()
                    .any(|&o| !(16..=1 << 12).contains(&o) || o % 8 != 0)
                || !free_ok
                || !d.row.starts_with('<')
            {
                return Err("deque: offsets, block_len or row out of range".into());
            }
        }
        if let Some(o) = &self.objects.odict {
            if [o.first, o.fast_nodes]
                .iter()
                .any(|&x| !(16..=1 << 12).contains(&x) || x % 8 != 0)
                || o.node_key > 64
                || o.node_next > 64
                || o.node_key == o.node_next
                || !o.row.starts_with('<')
            {
                return Err("odict: offsets or row out of range".into());
            }
        }
        for w in &self.objects.weak_fields {
            if w.offsets.is_empty()
                || w.offsets.len() > 8
                || w.offsets
                    .iter()
                    .any(|&o| !(16..=1 << 12).contains(&o) || o % 8 != 0)
            {
                return Err(format!("weak_fields {}: bad offsets", w.type_name));
            }
        }
        if let Some(f) = &self.frames {
            let need = |ok: bool, what: &str| {
                if ok {
                    Ok(())
                } else {
                    Err(format!("frames: {what}"))
                }
            };
            match f.frame_kind {
                FrameKind::Object => need(
                    f.frame_lasti.is_some() && f.code_varnames.is_some(),
                    "frame_kind = \"object\" needs frame_lasti and code_varnames",
                )?,
                FrameKind::Interpreter => need(
                    f.frame_instr.is_some()
                        && f.frame_owner.is_some()
                        && f.code_adaptive.is_some()
                        && f.code_firsttraceable.is_some()
                        && f.code_localsplusnames.is_some(),
                    "frame_kind = \"interpreter\" needs frame_instr, frame_owner, code_adaptive, code_firsttraceable and code_localsplusnames",
                )?,
            }
            need(
                [f.lasti_unit == 1, f.lasti_unit == 2].contains(&true),
                "lasti_unit must be 1 or 2",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_models_are_valid_and_disjoint() {
        let m = glibc_models(None).unwrap();
        assert!(m.len() >= 6);
        assert!(m.iter().any(|x| x.covers(Version(2, 36))));
        assert!(m.iter().any(|x| x.covers(Version(2, 31))));
        assert!(m.iter().any(|x| x.covers(Version(2, 43))));
        assert_eq!(m.iter().filter(|x| x.covers(Version(2, 41))).count(), 1);
        let c = cpython_models(None).unwrap();
        for v in 8..=14 {
            assert_eq!(
                c.iter().filter(|x| x.covers(Version(3, v))).count(),
                1,
                "3.{v}"
            );
        }
        // The per-version object facts the census relies on.
        for m in &c {
            let o = &m.objects;
            let v = m.first_version();
            assert_eq!(o.generator.is_some(), v >= Version(3, 11), "{}", m.name);
            for t in ["dict", "list", "tuple", "float"] {
                assert!(o.freelist_types.iter().any(|x| x == t), "{}: {t}", m.name);
            }
            assert!(!o.freelist_types.iter().any(|x| x == "code"), "{}", m.name);
            assert_eq!(
                o.freelist_types.iter().any(|x| x == "frame"),
                v <= Version(3, 10),
                "{}",
                m.name
            );
            let flags: Vec<&str> = o
                .alloc_by_flag
                .iter()
                .map(|a| a.type_name.as_str())
                .collect();
            assert_eq!(flags, ["datetime.time", "datetime.datetime"], "{}", m.name);
            assert_eq!(o.native_buffers.len(), 4, "{}", m.name);
        }
    }

    /// The free-threaded models are their own set: loaded apart from the GIL builds' (whose
    /// ranges they share), with a mimalloc layout and the free-threaded object header.
    #[test]
    fn free_threaded_models_are_apart() {
        let ft = cpython_ft_models(None).unwrap();
        assert_eq!(
            ft.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["3.13t"]
        );
        let m = &ft[0];
        assert!(m.covers(Version(3, 13)) && m.free_threaded);
        let o = &m.objects;
        assert_eq!((o.header_shift, o.gc_head, o.managed_dict), (0x10, 0, 8));
        assert_eq!(o.refcount, Refcount::FreeThreaded);
        let mi = m.mimalloc.as_ref().unwrap();
        assert_eq!((mi.segment_size, mi.page_size), (32 << 20, 0x60));
        assert!(cpython_models(None)
            .unwrap()
            .iter()
            .all(|m| !m.free_threaded));
        // GIL builds keep their header: no shift, a 16-byte GC head, dict at -24.
        for m in cpython_models(None).unwrap() {
            let o = &m.objects;
            assert_eq!((o.header_shift, o.gc_head, o.managed_dict), (0, 16, 24));
        }
    }

    #[test]
    fn versions_order() {
        assert!(Version::parse("2.9").unwrap() < Version::parse("2.10").unwrap());
        assert_eq!(Version::parse("2.42.9000"), Some(Version(2, 42)));
    }
}
