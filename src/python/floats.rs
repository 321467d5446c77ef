//! The float free list (CPython 3.8-3.13): freed floats are linked through `ob_type`
//! (Objects/floatobject.c float_dealloc / _PyFloat_ExactDealloc:
//! `Py_SET_TYPE(op, (PyTypeObject *)free_list)`), so no type pointer is left to find them
//! by. The list is walked from its head — file statics on 3.8-3.9, every interpreter's
//! state on 3.10-3.13 (model `[objects.float_freelist]`) — and its blocks are the census's
//! `float` free-list residents, as `sys._debugmallocstats()` counts "N free PyFloatObjects".
//!
//! The walk is bounded by the list's own count (`numfree`) and a cycle guard; each link
//! must be a live pymalloc block of the float size class whose refcount is 0. A bad link
//! ends the walk with a diagnostic (the blocks before it are kept). Where the head cannot
//! be found the floats stay free memory, with a diagnostic: nothing is guessed.

use crate::addr::Addr;
use crate::error::Diagnostic;
use crate::image::memory::AddressSpace;
use crate::models::{FloatFreelist, Frames};
use rustc_hash::FxHashSet;

/// Interpreters read at most (the list of `PyInterpreterState`s may be damaged).
const MAX_INTERPRETERS: usize = 256;
/// A count above this is no float free list (CPython's PyFloat_MAXFREELIST is 100,
/// Objects/floatobject.c 3.8-3.13; a build may raise it, not by orders of magnitude).
const MAX_COUNT: u64 = 1 << 20;

/// Where the heads are: (head address, count address) per list.
pub enum Heads {
    /// Found: one pair per list (interpreter).
    Found(Vec<(Addr, Addr)>),
    /// Not modelled for this version (floats keep their type on the free list).
    NotNeeded,
    /// Why the heads cannot be found.
    Missing(String),
}

/// The list heads the model names: statics by symbol, or fields of every interpreter
/// reached from `_PyRuntime`.
pub fn heads(
    space: &AddressSpace,
    model: Option<&FloatFreelist>,
    frames: Option<&Frames>,
    symbol: &dyn Fn(&str) -> Option<Addr>,
    runtime: Option<Addr>,
) -> Heads {
    let Some(m) = model else {
        return Heads::NotNeeded;
    };
    if let (Some(h), Some(c)) = (&m.head_symbol, &m.count_symbol) {
        return match (symbol(h), symbol(c)) {
            (Some(ha), Some(ca)) => Heads::Found(vec![(ha, ca)]),
            _ => Heads::Missing(format!(
                "no symbol {h} / {c} (a stripped build without its debug file)"
            )),
        };
    }
    let (Some(ho), Some(co)) = (m.interp_head, m.interp_count) else {
        return Heads::Missing("the model gives no place for it".into());
    };
    let Some(f) = frames else {
        return Heads::Missing("the model has no interpreter-state offsets ([frames])".into());
    };
    let Some(rt) = runtime else {
        return Heads::Missing("_PyRuntime was not found".into());
    };
    let mut out = Vec::new();
    let mut seen = FxHashSet::default();
    let mut interp = space
        .read_u64(rt.wrapping_add(f.runtime_interpreters_head))
        .unwrap_or(0);
    while interp != 0 && seen.insert(interp) && seen.len() <= MAX_INTERPRETERS {
        out.push((Addr(interp).wrapping_add(ho), Addr(interp).wrapping_add(co)));
        interp = space
            .read_u64(Addr(interp).wrapping_add(f.interp_next))
            .unwrap_or(0);
    }
    if out.is_empty() {
        return Heads::Missing("_PyRuntime.interpreters.head is NULL or unreadable".into());
    }
    Heads::Found(out)
}

/// The blocks on the float free lists at `heads`. `live_blocks(candidates)` returns those
/// of the candidates that are live pymalloc blocks of the float size class (pymalloc sees
/// them allocated: CPython keeps them for reuse); one call, so the caller may answer with
/// one pass over its blocks.
pub fn walk(
    space: &AddressSpace,
    heads: &[(Addr, Addr)],
    live_blocks: &dyn Fn(&FxHashSet<u64>) -> FxHashSet<u64>,
) -> (Vec<u64>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut seen = FxHashSet::default();
    // Per list: its head's address, the links read, and why the reading stopped early.
    let mut chains: Vec<(Addr, Vec<u64>, Option<String>)> = Vec::new();
    for &(head_at, count_at) in heads {
        let (Ok(head), Ok(count)) = (space.read_u64(head_at), space.read_u32(count_at)) else {
            diags.push(
                Diagnostic::warning(
                    "float free list: its head or count is unreadable; free floats count as free memory",
                )
                .at(head_at),
            );
            continue;
        };
        let count = count as i32;
        if count < 0 || count as u64 > MAX_COUNT {
            diags.push(
                Diagnostic::warning(format!(
                    "float free list: count {count} is implausible; free floats count as free memory"
                ))
                .at(count_at),
            );
            continue;
        }
        let count = count as u64;
        let mut chain = Vec::new();
        let mut cur = head;
        let mut stop = None;
        while cur != 0 {
            let bad = if chain.len() as u64 == count {
                Some(format!("longer than its count {count}"))
            } else if cur % 16 != 0 || !seen.insert(cur) {
                Some(format!("link {cur:#x} loops or is misaligned"))
            } else if space.read_u64(Addr(cur)).ok() != Some(0) {
                Some(format!("link {cur:#x} has a refcount that is not 0"))
            } else {
                None
            };
            if bad.is_some() {
                stop = bad;
                break;
            }
            chain.push(cur);
            match space.read_u64(Addr(cur).wrapping_add(8)) {
                Ok(next) => cur = next,
                Err(_) => {
                    stop = Some(format!("link {cur:#x} is unreadable"));
                    break;
                }
            }
        }
        if stop.is_none() && (chain.len() as u64) < count {
            stop = Some(format!(
                "{} floats linked, its count says {count}",
                chain.len()
            ));
        }
        chains.push((head_at, chain, stop));
    }
    let candidates: FxHashSet<u64> = chains.iter().flat_map(|c| c.1.iter().copied()).collect();
    let live = live_blocks(&candidates);
    let mut out = Vec::new();
    for (head_at, chain, mut stop) in chains {
        let good = chain.iter().take_while(|a| live.contains(a)).count();
        if good < chain.len() {
            stop = Some(format!(
                "link {:#x} is no live pymalloc block of the float size class",
                chain[good]
            ));
        }
        if let Some(why) = stop {
            diags.push(
                Diagnostic::warning(format!(
                    "float free list: {why}; {good} floats taken from it"
                ))
                .at(head_at),
            );
        }
        out.extend_from_slice(&chain[..good]);
    }
    (out, diags)
}
