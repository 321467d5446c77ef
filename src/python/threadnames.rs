//! Python thread names: `threading._active` (Lib/threading.py: "maps thread id to Thread
//! object", keyed by `get_ident()` = the thread state's `thread_id`), found through the
//! interpreter's `sys.modules`, and each Thread's `_name` attribute (set in
//! `Thread.__init__`; "MainThread" for `_MainThread`).
//!
//! Reads only the objects on that path, each bounded: the modules dict, the module's dict,
//! the registry dict and one attribute per Thread. Instance attributes are read the way
//! `objects` previews them (python/objects.rs `instance_preview`): the instance dict at
//! `tp_dictoffset` (3.8-3.10), the managed dict (3.11+), else the type's shared keys with
//! the instance's values (3.11 pre-header values, 3.12 tagged pointer, 3.13+ inline).

use crate::models::{DictKeys, IntSize, Objects, Refcount};
use crate::python::objects::Typer;
use crate::python::symless::PyTypes;
use crate::python::typeobj::{
    F_DICT_SUBCLASS, F_INLINE_VALUES, F_LONG_SUBCLASS, F_MANAGED_DICT, TP_DICTOFFSET, TP_FLAGS,
};
use std::collections::HashMap;

/// Threads read from the registry at most.
const MAX_NAMES: usize = 4096;
/// Entries of `sys.modules` looked through for "threading".
const MAX_MODULES: usize = 1 << 16;

/// PyModuleObject.md_dict, right after the object header on 3.8-3.14
/// (Objects/moduleobject.c; 3.11+ Include/internal/pycore_moduleobject.h).
const MD_DICT: u64 = 0x10;

struct Names<'a> {
    typer: &'a Typer<'a>,
    om: &'a Objects,
    types: &'a PyTypes,
}

impl Names<'_> {
    fn u64(&self, a: u64) -> Option<u64> {
        self.typer.u64_at(a)
    }
    fn type_flags(&self, o: u64) -> u64 {
        self.u64(self.typer.field(o, 8))
            .and_then(|t| self.u64(self.typer.field(t, TP_FLAGS)))
            .unwrap_or(0)
    }
    /// A dict or dict subclass (by address when known: static types' names may be
    /// unreadable in a core without its binaries).
    fn is_dict(&self, o: u64) -> bool {
        o != 0
            && (self
                .u64(self.typer.field(o, 8))
                .is_some_and(|t| Some(t) == self.types.get("PyDict_Type"))
                || self.type_flags(o) & F_DICT_SUBCLASS != 0)
    }
    fn get(&self, dict: u64, key: &str, limit: usize) -> Option<u64> {
        if !self.is_dict(dict) {
            return None;
        }
        self.typer
            .dict_items(dict, limit)
            .into_iter()
            .find(|&(k, _)| self.typer.read_str(k).as_deref() == Some(key))
            .map(|(_, v)| v)
            .filter(|&v| v != 0)
    }
    /// A non-negative int of at most 64 bits (3.8-3.11 ob_size digit count, 3.12+ lv_tag;
    /// 30-bit digits at +0x18: Include/cpython/longintrepr.h).
    fn int(&self, o: u64) -> Option<u64> {
        if self.type_flags(o) & F_LONG_SUBCLASS == 0 {
            return None;
        }
        let head = self.u64(self.typer.field(o, 0x10))?;
        let n = match self.om.int_size {
            IntSize::ObSize => {
                if (head as i64) < 0 {
                    return None;
                }
                head
            }
            IntSize::LvTag => {
                if head & 3 == 2 {
                    return None; // negative
                }
                head >> 3
            }
        };
        if n > 3 {
            return None;
        }
        let mut v: u128 = 0;
        for i in (0..n).rev() {
            let d = self.typer.u64_at(self.typer.field(o, 0x18 + 4 * i))? as u32;
            v = (v << 30) | d as u128;
        }
        u64::try_from(v).ok()
    }

    /// (key, value) pairs of an instance's attributes.
    fn instance_items(&self, o: u64) -> Vec<(u64, u64)> {
        let Some(ti) = self
            .u64(self.typer.field(o, 8))
            .and_then(|t| self.typer.type_info(t))
        else {
            return Vec::new();
        };
        let om = self.om;
        let managed =
            om.preheader_flags != 0 && ti.flags & om.preheader_flags & F_MANAGED_DICT != 0;
        let dict = if om.preheader_flags == 0 {
            // 3.8-3.10: the instance dict at tp_dictoffset (> 0 for Python classes).
            let off = self
                .u64(self.typer.field(ti.addr.0, TP_DICTOFFSET))
                .unwrap_or(0) as i64;
            (off > 0)
                .then(|| self.u64(o.wrapping_add(off as u64)))
                .flatten()
        } else if managed {
            // 3.11+: the managed dict pointer at -24 (3.12: tagged values when bit 0 is set;
            // free-threaded builds: -8, the model's `managed_dict`).
            self.u64(o.wrapping_sub(om.managed_dict))
                .filter(|&d| d & 1 == 0)
        } else {
            None
        };
        if let Some(d) = dict.filter(|&d| self.is_dict(d)) {
            return self.typer.dict_items(d, 256);
        }
        if !managed || om.dict_keys != DictKeys::V2 {
            return Vec::new();
        }
        // Values kept with the instance, keys shared by the type (ht_cached_keys).
        let values = if om.refcount == Refcount::Plain {
            self.u64(o.wrapping_sub(32)) // 3.11 (Include/internal/pycore_object.h)
        } else if om.refcount == Refcount::Immortal32
            && om.tuple_items == 0x18
            && ti.flags & F_INLINE_VALUES == 0
        {
            // 3.12: `_PyDictOrValues`, values tagged by bit 0 (stored as values - 1).
            self.u64(o.wrapping_sub(24))
                .filter(|v| v & 1 == 1)
                .map(|v| v.wrapping_add(1))
        } else {
            // 3.13+: `_PyObject_InlineValues`, values[] after an 8-byte header.
            Some(o.wrapping_add(ti.basicsize).wrapping_add(8))
        };
        let keys = self
            .u64(ti.addr.0.wrapping_add(om.ht_cached_keys))
            .unwrap_or(0);
        let (Some(values), true) = (values.filter(|&v| v != 0), keys != 0) else {
            return Vec::new();
        };
        self.typer.split_entries(keys, values, 256)
    }

    fn attr(&self, o: u64, name: &str) -> Option<u64> {
        self.instance_items(o)
            .into_iter()
            .find(|&(k, _)| self.typer.read_str(k).as_deref() == Some(name))
            .map(|(_, v)| v)
            .filter(|&v| v != 0)
    }
}

/// Thread names by ident (`thread_id`) of the interpreter whose `sys.modules` is at
/// `modules`; empty when `threading` was never imported or its registry is unreadable.
pub fn thread_names(
    typer: &Typer,
    om: &Objects,
    types: &PyTypes,
    modules: u64,
) -> HashMap<u64, String> {
    let n = Names { typer, om, types };
    let mut out = HashMap::new();
    let Some(threading) = n.get(modules, "threading", MAX_MODULES) else {
        return out;
    };
    let Some(md) = n.u64(typer.field(threading, MD_DICT)) else {
        return out;
    };
    let Some(active) = n.get(md, "_active", 4096) else {
        return out;
    };
    if !n.is_dict(active) {
        return out;
    }
    for (k, v) in typer.dict_items(active, MAX_NAMES) {
        let (Some(ident), Some(name)) =
            (n.int(k), n.attr(v, "_name").and_then(|s| typer.read_str(s)))
        else {
            continue;
        };
        out.insert(ident, name);
    }
    out
}
