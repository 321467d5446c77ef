//! The interpreter's named roots: `sys.modules`, the `sys` module's dict and `builtins`
//! of the main interpreter (round2-facts.md §B.1: `_PyRuntime.interpreters.main`, then the
//! `PyInterpreterState` fields, per version, from pyenv DWARF 3.8.18-3.13.0 and the
//! Debian 3.14.10 `_Py_DebugOffsets`). Callers check that each is a live dict: a micro
//! release whose offsets drifted gives no root rather than a wrong one.

use crate::addr::Addr;
use crate::image::memory::Reader;
use crate::image::process::Process;

/// A root the interpreter names, before it is matched to an object.
#[derive(Debug, Clone)]
pub struct NamedRoot {
    pub addr: u64,
    pub kind: &'static str,
    pub name: String,
}

/// (interpreters.main, modules, sysdict, builtins) offsets by minor version; free-threaded
/// builds have their own (3.13t: sys.modules 0x1df0 as its `_Py_DebugOffsets`
/// imports_modules says, sysdict 0x1de0, builtins 0x1de8 [E ctypes on the ft-3.13 corpus
/// interpreter]).
fn offsets(minor: u32, free_threaded: bool) -> Option<(u64, u64, u64, u64)> {
    if free_threaded {
        return match minor {
            13 => Some((0x280, 0x1df0, 0x1de0, 0x1de8)),
            _ => None,
        };
    }
    Some(match minor {
        8 => (0x28, 0x38, 0x48, 0x50),
        9 | 10 => (0x28, 0x358, 0x368, 0x370),
        11 => (0x30, 0x378, 0x388, 0x390),
        12 => (0x30, 0x3b0, 0x160, 0x168),
        13 => (0x280, 0x1de8, 0x1dd8, 0x1de0),
        14 => (0x330, 0x1e08, 0x1df8, 0x1e00),
        _ => return None,
    })
}

pub fn interpreter_roots(p: &Process, minor: u32, free_threaded: bool) -> Vec<NamedRoot> {
    let mut out = Vec::new();
    let Some((main, modules, sysdict, builtins)) = offsets(minor, free_threaded) else {
        return out;
    };
    let Some((_, rt)) = p.modules.find_symbol(&p.space, "_PyRuntime") else {
        return out;
    };
    let r = Reader { space: &p.space };
    let Some(interp) = r.u64(Addr(rt.addr.0 + main)).filter(|&i| i != 0) else {
        return out;
    };
    for (off, name) in [
        (modules, "sys.modules"),
        (sysdict, "sys.__dict__"),
        (builtins, "builtins"),
    ] {
        if let Some(d) = r.u64(Addr(interp + off)).filter(|&d| d != 0) {
            out.push(NamedRoot {
                addr: d,
                kind: "interpreter",
                name: name.into(),
            });
        }
    }
    out
}
