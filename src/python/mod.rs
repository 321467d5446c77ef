//! CPython: the pymalloc allocator (arenas, pools, blocks) and, on top of it, objects.

pub mod census;
pub mod objects;
pub mod pymalloc;

use crate::error::{Error, Result};
use crate::models::{CpythonModel, Version};
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
                if !exact {
                    h.diagnostics.push(crate::error::Diagnostic::warning(format!(
                        "CPython {}: no model covers this version; the {} model's invariants hold and it was used",
                        py.version.as_deref().unwrap_or("?"),
                        m.name
                    )));
                }
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
