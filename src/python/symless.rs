//! CPython's runtime and static types in a core without symbols: no binary at hand (a
//! 0x33 core keeps no `.dynsym`), or a build whose `.dynsym` has no `_PyRuntime`.
//!
//! Both are found in the interpreter module's writable data (its data segment and the
//! `.bss` after it; both are dirty at run time, so in every core), the way pystack and
//! py-spy do it (round2-facts.md §B.6):
//! - `_PyRuntime` of 3.13+ starts with `_Py_DebugOffsets`, whose first 8 bytes are the
//!   cookie "xdebugpy" followed by PY_VERSION_HEX (3.13 Include/internal/pycore_runtime.h,
//!   3.14 pycore_debug_offsets.h);
//! - on every version `_PyRuntime.interpreters` is `{mutex, head, main, next_id}`
//!   (Include/internal/pycore_runtime.h, `struct pyinterpreters`): a candidate runtime is
//!   accepted when `head` and `main` are interpreters whose thread-state list head points
//!   back to them (`tstate->interp`), whose `modules` is a dict, and `next_id` is a small
//!   positive count (Python/pystate.c `PyInterpreterState_New` numbers interpreters from 0).
//!   Every candidate is validated; the 3.13+ cookie is tried first.
//! - The static types: `type` is the one object in the data whose type is itself
//!   (Objects/typeobject.c `PyType_Type`); `object` is its `tp_base`; int, list, tuple,
//!   bytes, str and dict are the static types (type `type`, not Py_TPFLAGS_HEAPTYPE) whose
//!   base is `object` and which carry their Py_TPFLAGS_*_SUBCLASS bit (Include/object.h;
//!   `bool`, `OrderedDict`, struct sequences derive from them, so their base is not
//!   `object`). Others (float, set, code, cell) by `tp_name` when it is readable (it lies in
//!   read-only data, which a 0x33 core lacks when the binary is not at hand).

use crate::addr::{Addr, Range};
use crate::image::modules::Module;
use crate::image::process::Process;
use crate::models::Frames;
use crate::python::typeobj::{F_HEAPTYPE, F_READY, TP_BASE, TP_BASICSIZE, TP_FLAGS, TP_NAME};
use std::collections::HashMap;

/// Symbol names of the static types the readers use, with their `tp_name`.
const TYPES: [(&str, &str); 13] = [
    ("PyType_Type", "type"),
    ("PyBaseObject_Type", "object"),
    ("PyUnicode_Type", "str"),
    ("PyLong_Type", "int"),
    ("PyFloat_Type", "float"),
    ("PyBytes_Type", "bytes"),
    ("PyTuple_Type", "tuple"),
    ("PyList_Type", "list"),
    ("PyDict_Type", "dict"),
    ("PySet_Type", "set"),
    ("PyFrozenSet_Type", "frozenset"),
    ("PyCode_Type", "code"),
    ("PyCell_Type", "cell"),
];

/// The base types identified by their Py_TPFLAGS_*_SUBCLASS bit (Include/object.h).
const BY_FLAG: [(&str, u64); 6] = [
    ("PyLong_Type", 1 << 24),
    ("PyList_Type", 1 << 25),
    ("PyTuple_Type", 1 << 26),
    ("PyBytes_Type", 1 << 27),
    ("PyUnicode_Type", 1 << 28),
    ("PyDict_Type", 1 << 29),
];

/// At most this many bytes of writable data are scanned (libpython's data and bss are a
/// few hundred KiB; the bound keeps a heap that follows a non-PIE executable's bss out).
const MAX_SCAN: u64 = 64 << 20;

/// Static type addresses by symbol name: from the symbol tables, else from the scan.
#[derive(Debug, Default)]
pub struct PyTypes {
    map: HashMap<&'static str, u64>,
    /// Found by scanning (no symbols).
    pub scanned: bool,
}

impl PyTypes {
    /// `use_symbols` false: scan even when the symbols are there (tests of this path).
    pub fn find(p: &Process, module: Option<&Module>, use_symbols: bool) -> PyTypes {
        let mut map = HashMap::new();
        if use_symbols {
            for (sym, _) in TYPES {
                if let Some((_, s)) = p.modules.find_symbol(&p.space, sym) {
                    map.insert(sym, s.addr.0);
                }
            }
        }
        let mut scanned = false;
        if !map.contains_key("PyType_Type") {
            if let Some(m) = module {
                for (sym, a) in static_types(p, &data_ranges(p, m)) {
                    map.entry(sym).or_insert(a);
                }
                scanned = true;
            }
        }
        PyTypes { map, scanned }
    }

    pub fn get(&self, sym: &str) -> Option<u64> {
        self.map.get(sym).copied()
    }
}

/// The module's writable ranges in the core: segments with PF_W inside the module, and a
/// writable segment that starts where the module's mappings end (the anonymous rest of
/// `.bss`); bounded by [`MAX_SCAN`].
pub fn data_ranges(p: &Process, m: &Module) -> Vec<Range> {
    const PF_W: u32 = 2;
    let mr = m.range();
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut segs: Vec<_> = p
        .core
        .segments
        .iter()
        .filter(|s| s.flags & PF_W != 0)
        .collect();
    segs.sort_by_key(|s| s.vaddr);
    for s in segs {
        let r = s.range();
        let inside = r.intersect(&mr).is_some_and(|x| !x.is_empty());
        if !(inside || r.start == mr.end) || total + r.len() > MAX_SCAN {
            continue;
        }
        total += r.len();
        out.push(r);
    }
    out
}

struct R<'a>(&'a Process);

impl R<'_> {
    fn u64(&self, a: u64) -> Option<u64> {
        self.0.space.read_u64(Addr(a)).ok()
    }
    /// A plausible user-space object address.
    fn ptr(a: u64) -> bool {
        a >= 0x1000 && a % 8 == 0 && a >> 47 == 0
    }
}

/// Every 8-aligned word of `ranges`: (address, value); `f` returns false to stop.
fn words(p: &Process, ranges: &[Range], mut f: impl FnMut(u64, u64) -> bool) {
    for r in ranges {
        let mut go = true;
        p.space.for_each_slice(*r, |a, s| {
            let skip = ((8 - a.0 % 8) % 8) as usize;
            let mut i = skip;
            while i + 8 <= s.len() {
                let w = u64::from_le_bytes(s[i..i + 8].try_into().unwrap());
                if !f(a.0 + i as u64, w) {
                    go = false;
                    return false;
                }
                i += 8;
            }
            true
        });
        if !go {
            return;
        }
    }
}

/// The static types of the module's data, by symbol name.
fn static_types(p: &Process, ranges: &[Range]) -> HashMap<&'static str, u64> {
    let r = R(p);
    let mut out = HashMap::new();
    let flags = |t: u64| r.u64(t + TP_FLAGS).unwrap_or(0);
    let is_static_type = |t: u64| {
        let f = flags(t);
        f & F_READY != 0
            && f & F_HEAPTYPE == 0
            && r.u64(t + TP_BASICSIZE)
                .is_some_and(|b| (16..=1 << 20).contains(&b))
    };
    // `type`: its ob_type (at +8) is itself, and it is a type subclass (Include/object.h
    // Py_TPFLAGS_TYPE_SUBCLASS).
    let mut type_type = None;
    words(p, ranges, |a, w| {
        let t = a.wrapping_sub(8);
        if w == t && R::ptr(t) && flags(t) & (1 << 31) != 0 && is_static_type(t) {
            type_type = Some(t);
            return false;
        }
        true
    });
    let Some(tt) = type_type else { return out };
    out.insert("PyType_Type", tt);
    let object = r
        .u64(tt + TP_BASE)
        .filter(|&o| R::ptr(o) && r.u64(o + 8) == Some(tt));
    if let Some(o) = object {
        out.insert("PyBaseObject_Type", o);
    }
    let name_of = |t: u64| {
        let n = p.space.read_cstr(Addr(r.u64(t + TP_NAME)?), 64)?;
        String::from_utf8(n).ok()
    };
    words(p, ranges, |a, w| {
        let t = a.wrapping_sub(8);
        if w != tt || t == tt || !R::ptr(t) || !is_static_type(t) {
            return true;
        }
        let f = flags(t);
        let base = r.u64(t + TP_BASE);
        if object.is_some() && base == object {
            for (sym, bit) in BY_FLAG {
                if f & bit != 0 {
                    out.entry(sym).or_insert(t);
                }
            }
        }
        if let Some(n) = name_of(t) {
            if let Some((sym, _)) = TYPES.iter().find(|(_, tp)| *tp == n) {
                out.entry(*sym).or_insert(t);
            }
        }
        true
    });
    out
}

/// `_PyRuntime` found in the module's writable data, and how.
pub fn find_runtime(
    p: &Process,
    ranges: &[Range],
    f: &Frames,
    types: &PyTypes,
) -> Option<(Addr, &'static str)> {
    let r = R(p);
    let dict_type = types.get("PyDict_Type");
    let interp_ok = |i: u64| -> bool {
        if !R::ptr(i) {
            return false;
        }
        let Some(ts) = r.u64(i + f.interp_threads_head).filter(|&t| R::ptr(t)) else {
            return false;
        };
        if r.u64(ts + f.tstate_interp) != Some(i) {
            return false;
        }
        match (f.interp_modules, dict_type) {
            (Some(mo), Some(d)) => {
                r.u64(i + mo)
                    .filter(|&m| R::ptr(m))
                    .and_then(|m| r.u64(m + 8))
                    == Some(d)
            }
            _ => true,
        }
    };
    let runtime_ok = |rt: u64| -> bool {
        let h = f.runtime_interpreters_head;
        let (Some(head), Some(main), Some(next_id)) =
            (r.u64(rt + h), r.u64(rt + h + 8), r.u64(rt + h + 16))
        else {
            return false;
        };
        (1..=1 << 20).contains(&(next_id as i64))
            && interp_ok(head)
            && (main == head || interp_ok(main))
    };
    // 3.13+: the _Py_DebugOffsets cookie, then a PY_VERSION_HEX of 3.13 or later.
    let cookie = memchr::memmem::Finder::new(b"xdebugpy");
    let mut found = None;
    for rg in ranges {
        p.space.for_each_slice(*rg, |a, s| {
            for i in cookie.find_iter(s) {
                let at = a.0 + i as u64;
                if at % 8 != 0 {
                    continue;
                }
                let hex = r.u64(at + 8).unwrap_or(0);
                let plausible = hex >> 32 == 0 && hex >> 24 == 3 && (hex >> 16) & 0xff >= 13;
                if plausible && runtime_ok(at) {
                    found = Some(at);
                    return false;
                }
            }
            true
        });
        if let Some(at) = found {
            return Some((Addr(at), "the _Py_DebugOffsets cookie"));
        }
    }
    // Every version: interpreters.head followed by interpreters.main.
    let h = f.runtime_interpreters_head;
    words(p, ranges, |a, w| {
        if R::ptr(w) && a >= h && interp_ok(w) && runtime_ok(a - h) {
            found = Some(a - h);
            return false;
        }
        true
    });
    found.map(|a| (Addr(a), "a validated interpreters list"))
}
