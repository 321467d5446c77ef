//! CPython: the pymalloc allocator (arenas, pools, blocks) and, on top of it, objects.

pub mod census;
pub mod objects;
pub mod pymalloc;

use crate::error::{Error, Result};
use crate::models::{CpythonModel, Epoch, Version};
use crate::process::Process;
use pymalloc::PymallocHeap;

/// The CPython model for this process (by version), for object layouts.
pub fn model_for<'m>(p: &Process, models: &'m [CpythonModel]) -> Option<&'m CpythonModel> {
    let py = crate::version::detect_python(p)?;
    let v = py.version.as_deref().and_then(Version::parse)?;
    models.iter().find(|m| m.covers(v))
}

/// Walk pymalloc if the process runs CPython. `Ok(None)`: no CPython here.
/// Free-threaded builds (mimalloc instead of pymalloc) are refused, never guessed at.
pub fn pymalloc(
    p: &Process,
    models: &[CpythonModel],
    collect_blocks: bool,
) -> Result<Option<PymallocHeap>> {
    let Some(py) = crate::version::detect_python(p) else {
        return Ok(None);
    };
    if py.free_threaded {
        return Err(Error::Unsupported(format!(
            "{} is a free-threaded CPython {} build: its objects live in mimalloc heaps, which coreheap does not read yet",
            py.module,
            py.version.as_deref().unwrap_or("")
        )));
    }
    let module = p
        .modules
        .modules
        .iter()
        .find(|m| m.path == py.module)
        .expect("detect_python names a module");
    let v = py.version.as_deref().and_then(Version::parse);
    let mut order: Vec<&CpythonModel> = models
        .iter()
        .filter(|m| v.is_some_and(|v| m.covers(v)))
        .collect();
    let exact = !order.is_empty();
    order.extend(
        models
            .iter()
            .rev()
            .filter(|m| !v.is_some_and(|v| m.covers(v))),
    );
    let mut errors = Vec::new();
    for m in order {
        match pymalloc::analyze(p, m, module, collect_blocks) {
            Ok(mut h) => {
                if let Some(rt) = py.runtime {
                    h.diagnostics.extend(cross_check_debug_offsets(p, rt, m));
                }
                if !exact {
                    h.diagnostics.push(crate::error::Diagnostic::warning(format!(
                        "CPython {}: no model covers this version; the {} model's invariants hold and it was used",
                        py.version.as_deref().unwrap_or("?"),
                        m.name
                    )));
                }
                h.python = Some(py);
                return Ok(Some(h));
            }
            Err(e) => errors.push(format!("{}: {e}", m.name)),
        }
        if exact && v.is_some() {
            // The version is known and its model failed: other epochs' layouts would only
            // produce a wrong answer with confidence.
            break;
        }
    }
    Err(Error::Other(format!(
        "could not walk pymalloc in {}: {}",
        py.module,
        errors.join("; ")
    )))
}

/// CPython 3.13+ publishes its own layout in `_Py_DebugOffsets` at the start of
/// `_PyRuntime` (cookie "xdebugpy"; Include/internal/pycore_runtime.h). Its sub-structs are
/// runs of u64 offsets whose positions move between releases, so each fact the census
/// relies on is looked for as a run of values the model predicts: the type object's
/// (tp_name, tp_repr, tp_flags), the str object's (state, length, sizeof(PyASCIIObject)),
/// the int's (lv_tag, ob_digit) and the dict's (ma_keys, ma_values). A model that disagrees
/// with the interpreter's own table is reported.
pub fn cross_check_debug_offsets(
    p: &Process,
    runtime: crate::Addr,
    model: &CpythonModel,
) -> Vec<crate::Diagnostic> {
    let mut out = Vec::new();
    let mut cookie = [0u8; 8];
    if p.space.read(runtime, &mut cookie).is_err() || &cookie != b"xdebugpy" {
        return out;
    }
    let mut buf = vec![0u8; 0x800];
    if p.space.read(runtime, &mut buf).is_err() {
        return out;
    }
    let words: Vec<u64> = buf
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let om = &model.objects;
    let checks: [(&str, Vec<u64>); 4] = [
        (
            "type object (tp_name, tp_repr, tp_flags)",
            vec![0x18, 0x58, 0xa8],
        ),
        (
            "str object (state, length, ASCII header size)",
            vec![0x20, 0x10, om.str_ascii_data],
        ),
        ("int object (lv_tag, ob_digit)", vec![0x10, 0x18]),
        ("dict object (ma_keys, ma_values)", vec![0x20, 0x28]),
    ];
    for (what, pat) in checks {
        if !words.windows(pat.len()).any(|w| w == pat.as_slice()) {
            out.push(crate::Diagnostic::warning(format!(
                "CPython's _Py_DebugOffsets do not show the {what} layout the {} model expects",
                model.name
            )));
        }
    }
    out
}
