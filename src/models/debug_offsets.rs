//! CPython 3.13+'s own layout table, `_Py_DebugOffsets`, against a model.

use crate::image::process::Process;
use crate::models::CpythonModel;

/// CPython 3.13+ publishes its own layout in `_Py_DebugOffsets` at the start of
/// `_PyRuntime` (cookie "xdebugpy"; Include/internal/pycore_runtime.h). Its sub-structs are
/// runs of u64 offsets whose positions move between releases, so each fact the census
/// relies on is looked for as a run of values the model predicts: the type object's
/// (tp_name, tp_repr, tp_flags), the str object's (state, length, sizeof(PyASCIIObject)),
/// the int's (lv_tag, ob_digit) and the dict's (ma_keys, ma_values). A model that disagrees
/// with the interpreter's own table is reported.
pub fn cross_check(
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
    // GIL-build offsets, moved by the model's header shift on free-threaded builds (whose
    // _Py_DebugOffsets publish their own, e.g. tp_name 0x28: round2-facts.md §C.6).
    let s = om.header_shift;
    let checks: [(&str, Vec<u64>); 4] = [
        (
            "type object (tp_name, tp_repr, tp_flags)",
            vec![0x18 + s, 0x58 + s, 0xa8 + s],
        ),
        (
            "str object (state, length, ASCII header size)",
            vec![0x20 + s, 0x10 + s, om.str_ascii_data],
        ),
        ("int object (lv_tag, ob_digit)", vec![0x10 + s, 0x18 + s]),
        ("dict object (ma_keys, ma_values)", vec![0x20 + s, 0x28 + s]),
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
