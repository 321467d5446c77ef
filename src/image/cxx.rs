//! C++ classes by vtable: a heap object of a polymorphic class starts with its vtable
//! pointer (Itanium C++ ABI §2.5 "Virtual Table Layout": the vptr is at offset 0 of a
//! dynamic class without a non-virtual primary base before it, and points just past the
//! offset-to-top and typeinfo slots). A candidate word is taken as a vtable pointer only
//! when it points into a module's read-only memory (vtables live in `.data.rel.ro`, made
//! read-only after relocation, or `.rodata`) and either
//! - a `_ZTV` symbol (`.dynsym`, `.symtab` or the debug file's) covers it, or
//! - its RTTI confirms it: `vptr[-1]` is a `std::type_info` whose second word points to
//!   the mangled type name (Itanium ABI §2.9.3 "RTTI Layout": `__type_name`), a string
//!   that demangles as a type; `vptr[-2]`, offset-to-top, is 0 or a small negative
//!   displacement. RTTI survives `strip`, symbols do not.
//!
//! Names are demangled with the cpp_demangle crate.

use crate::addr::Addr;
use crate::image::process::Process;
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// How a vtable was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundBy {
    Symbol,
    Rtti,
}

/// Class names of vtable pointers, resolved once per distinct pointer value.
pub struct Vtables<'a> {
    p: &'a Process,
    /// Modules' read-only mappings, sorted: where a vtable can be.
    ro: Vec<(u64, u64)>,
    cache: FxHashMap<u64, Option<(Arc<str>, FoundBy)>>,
}

/// `offset_to_top` beyond this is not a vtable (objects are not megabytes wide).
const MAX_OFFSET_TO_TOP: i64 = 1 << 20;

impl<'a> Vtables<'a> {
    pub fn new(p: &'a Process) -> Vtables<'a> {
        // gcore and the kernel dump every writable mapping as a segment of its own
        // (a read-only one may be absent and come from the verified file).
        let mut writable: Vec<u64> = p
            .core
            .segments
            .iter()
            .filter(|s| s.flags & 2 != 0)
            .map(|s| s.vaddr.0)
            .collect();
        writable.sort_unstable();
        let mut ro: Vec<(u64, u64)> = p
            .modules
            .modules
            .iter()
            .flat_map(|m| m.mappings.iter())
            .filter(|mp| writable.binary_search(&mp.range.start.0).is_err())
            .map(|mp| (mp.range.start.0, mp.range.end.0))
            .collect();
        ro.sort_unstable();
        Vtables {
            p,
            ro,
            cache: FxHashMap::default(),
        }
    }

    /// Could `v` be a vtable pointer (aligned, in a module's read-only memory)? Cheap: a
    /// binary search; the caller asks `class_of` only then.
    #[inline]
    pub fn candidate(&self, v: u64) -> bool {
        if v % 8 != 0 || v < 16 {
            return false;
        }
        let i = self.ro.partition_point(|r| r.0 <= v);
        i > 0 && v < self.ro[i - 1].1
    }

    /// The class whose vtable `vptr` points into, if it is one.
    pub fn class_of(&mut self, vptr: u64) -> Option<(Arc<str>, FoundBy)> {
        if !self.candidate(vptr) {
            return None;
        }
        if let Some(c) = self.cache.get(&vptr) {
            return c.clone();
        }
        let r = resolve(self.p, vptr);
        self.cache.insert(vptr, r.clone());
        r
    }

    /// Distinct vtable pointers seen so far that named a class.
    pub fn classes(&self) -> usize {
        self.cache.values().filter(|v| v.is_some()).count()
    }
}

fn resolve(p: &Process, vptr: u64) -> Option<(Arc<str>, FoundBy)> {
    let m = p.modules.containing(Addr(vptr))?;
    if let Some((name, off)) = m.symbol_at(Addr(vptr)) {
        // A vtable group's address points are past the two header words of each vtable.
        if let Some(rest) = name.strip_prefix("_ZTV") {
            if off >= 16 {
                if let Some(c) = demangle_type(rest) {
                    return Some((c.into(), FoundBy::Symbol));
                }
            }
        }
        // Covered by some other symbol: not a vtable.
        if !name.starts_with("_ZTV") && m.has_symtab() {
            return None;
        }
    }
    let s = &p.space;
    let top = s.read_u64(Addr(vptr - 16)).ok()? as i64;
    if !(-MAX_OFFSET_TO_TOP..=0).contains(&top) {
        return None;
    }
    let ti = s.read_u64(Addr(vptr - 8)).ok()?;
    if ti % 8 != 0 || p.modules.containing(Addr(ti)).is_none() {
        return None;
    }
    // type_info's own vptr: a vtable of one of libstdc++'s __cxxabiv1 type_info classes,
    // in some module.
    let tv = s.read_u64(Addr(ti)).ok()?;
    p.modules.containing(Addr(tv))?;
    let np = s.read_u64(Addr(ti + 8)).ok()?;
    p.modules.containing(Addr(np))?;
    let raw = s.read_cstr(Addr(np), 1024)?;
    let name = std::str::from_utf8(&raw).ok()?;
    // GCC marks a type with internal linkage by a leading '*' (libsupc++ tinfo.cc:
    // type_info::name skips it).
    let name = name.strip_prefix('*').unwrap_or(name);
    demangle_type(name).map(|c| (c.into(), FoundBy::Rtti))
}

/// The demangled type of an Itanium `<type>` mangling (`3Foo`, `N2ns3BarE`, ...), or None
/// when it is not one: it is demangled as the typeinfo-name special name `_ZTS<type>`.
pub fn demangle_type(mangled: &str) -> Option<String> {
    if mangled.is_empty() || mangled.len() > 1000 || !mangled.bytes().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    let full = format!("_ZTS{mangled}");
    let sym = cpp_demangle::Symbol::new(full.as_bytes()).ok()?;
    let text = sym.demangle().ok()?;
    let t = text.strip_prefix("typeinfo name for ")?;
    (!t.is_empty()).then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::demangle_type;

    #[test]
    fn type_manglings_demangle_and_garbage_does_not() {
        assert_eq!(demangle_type("6Circle").as_deref(), Some("Circle"));
        assert_eq!(
            demangle_type("N6shapes6SquareE").as_deref(),
            Some("shapes::Square")
        );
        assert_eq!(
            demangle_type("N12_GLOBAL__N_14NodeE").as_deref(),
            Some("(anonymous namespace)::Node")
        );
        assert_eq!(demangle_type(""), None);
        assert_eq!(demangle_type("hello world"), None);
        assert_eq!(demangle_type("\u{1}\u{2}"), None);
    }
}
