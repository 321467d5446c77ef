//! The HTML report: one self-contained file (style, script and data inline; nothing is
//! fetched) rendered with minijinja from the outputs of `info`, `stacks`, `summary`, `frag`,
//! `diff` and the report's heap map. It formats and lays out; it computes nothing the text
//! and JSON do not (shares and widths of bars are presentation).
//!
//! Strings from the core are hostile: the template autoescapes every value (HTML escaping
//! of `<`, `>`, `&`, `"`, `'`), core strings also pass through [`clean`] first, the script
//! reads its data from one `<script type="application/json">` element whose text has `<`,
//! `>`, `&`, U+2028 and U+2029 escaped as `\uXXXX` (so no `</script>` or `<!--` can end or
//! change it), and the script writes text only through `textContent`.

use super::{clean, ellipsize, human_bytes, human_delta};
use crate::analysis::diff::{is_user_type, Diff, TypeDelta};
use crate::analysis::frag::Frag;
use crate::analysis::info::Info;
use crate::analysis::report::{HeapMap, Section, SectionBody, TreeNode};
use crate::analysis::summary::Summary;
use crate::analysis::threads::Stacks;
use crate::error::{Diagnostic, Severity};
use minijinja::{context, AutoEscape, Environment, Value};
use serde::Serialize;

const TEMPLATE: &str = include_str!("report.html");
const STYLE: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");

/// Rows of the type table (the largest by bytes; the page says how many were left off).
pub const MAX_TYPE_ROWS: usize = 500;
/// Rows of the growth tables (grew, shrank).
pub const MAX_GROWTH_ROWS: usize = 50;
/// Python frames shown per thread.
pub const MAX_FRAMES: usize = 64;
/// Threads shown (the crashed one and the GIL holder are listed first by `stacks`).
pub const MAX_THREADS: usize = 256;
/// Diagnostics shown.
pub const MAX_DIAGNOSTICS: usize = 50;
/// Characters of a name or preview shown.
const MAX_NAME: usize = 200;

/// Everything the page shows. `old` and `diff` are there for two cores; `sections` are the
/// optional sections other analyses provide (owner view, tracemalloc sites...), drawn in
/// order after the fixed ones.
pub struct Page<'a> {
    pub core: CoreSummary,
    pub old: Option<CoreSummary>,
    pub stacks: &'a Stacks,
    pub summary: &'a Summary,
    pub frag: &'a Frag<'a>,
    pub diff: Option<&'a Diff>,
    pub heap: &'a HeapMap,
    pub sections: Vec<Section>,
}

fn c(s: &str) -> String {
    ellipsize(&clean(s), MAX_NAME).into_owned()
}

/// What the page says of a core, from `info`.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct CoreSummary {
    core: String,
    core_size: u64,
    pid: Option<u32>,
    exe: Option<String>,
    cmdline: String,
    python: Option<String>,
    glibc: Option<String>,
    mapped: u64,
    threads: usize,
}

impl CoreSummary {
    pub fn of(i: &Info) -> CoreSummary {
        CoreSummary {
            core: c(&i.core),
            core_size: i.core_size,
            pid: i.pid,
            exe: i.exe.as_deref().map(c),
            cmdline: c(&i.cmdline.join(" ")),
            python: i.python_version.as_deref().map(c),
            glibc: i.glibc_version.as_deref().map(c),
            mapped: i.totals.mapped,
            threads: i.threads.len(),
        }
    }
}

#[derive(Serialize, schemars::JsonSchema)]
struct FrameView {
    function: String,
    file: String,
    line: Option<u32>,
    source: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct ThreadView {
    tid: Option<u32>,
    name: Option<String>,
    crashed: bool,
    holds_gil: bool,
    frames: Vec<FrameView>,
    frames_left_off: usize,
    truncated: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct CrashView {
    signal: u32,
    name: String,
    code: Option<i32>,
    fault_address: Option<String>,
    tid: Option<u32>,
    native: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct Segment {
    label: &'static str,
    class: &'static str,
    bytes: u64,
    /// Share of the bar, percent.
    pct: f64,
}

#[derive(Serialize, schemars::JsonSchema)]
struct Row {
    name: String,
    count: u64,
    bytes: u64,
}

#[derive(Serialize, schemars::JsonSchema)]
struct DeltaRow {
    name: String,
    count_old: u64,
    count_new: u64,
    count_delta: i64,
    bytes_old: u64,
    bytes_new: u64,
    bytes_delta: i64,
    /// Bar width, percent of the largest change in the table.
    pct: f64,
}

#[derive(Serialize, schemars::JsonSchema)]
struct SampleView {
    name: String,
    objects: Vec<(String, u64, String)>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct GrowthView {
    /// The program's own classes that grew (`diff::is_user_type`): what a leak is made
    /// of is usually built-ins held by one of them, so they lead the view.
    classes: Vec<DeltaRow>,
    classes_left_off: usize,
    grew_left_off: usize,
    shrank_left_off: usize,
    total_bytes_delta: i64,
    total_count_delta: i64,
    grew: Vec<DeltaRow>,
    shrank: Vec<DeltaRow>,
    samples: Vec<SampleView>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct ClassRow {
    size: u64,
    live_count: u64,
    live_bytes: u64,
    free_count: u64,
    free_bytes: u64,
    live_pct: f64,
    free_pct: f64,
}

#[derive(Serialize, schemars::JsonSchema)]
struct ClassView {
    allocator: &'static str,
    rows: Vec<ClassRow>,
    left_off: u64,
}

#[derive(Serialize, schemars::JsonSchema)]
struct DiagView {
    severity: &'static str,
    text: String,
}

#[derive(Serialize, schemars::JsonSchema)]
struct SectionView {
    id: String,
    title: String,
    note: String,
    kind: &'static str,
}

fn pct(x: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        (x as f64 * 1000.0 / of as f64).round() / 10.0
    }
}

fn delta_rows(rows: Vec<(&str, [u64; 4], [i64; 2])>) -> Vec<DeltaRow> {
    let max = rows
        .iter()
        .map(|r| r.2[1].unsigned_abs())
        .max()
        .unwrap_or(0);
    rows.into_iter()
        .map(|(name, [co, cn, bo, bn], [cd, bd])| DeltaRow {
            name: c(name),
            count_old: co,
            count_new: cn,
            count_delta: cd,
            bytes_old: bo,
            bytes_new: bn,
            bytes_delta: bd,
            pct: pct(bd.unsigned_abs(), max),
        })
        .collect()
}

fn growth(d: &Diff) -> GrowthView {
    let conv = |v: &[TypeDelta]| {
        delta_rows(
            v.iter()
                .map(|t| {
                    (
                        t.name.as_str(),
                        [t.count_old, t.count_new, t.bytes_old, t.bytes_new],
                        [t.count_delta, t.bytes_delta],
                    )
                })
                .collect(),
        )
    };
    let user: Vec<_> = d
        .types_grew
        .iter()
        .filter(|t| is_user_type(&t.name))
        .cloned()
        .collect();
    let cut = |v: &[TypeDelta]| v[..v.len().min(MAX_GROWTH_ROWS)].to_vec();
    GrowthView {
        classes: conv(&cut(&user)),
        classes_left_off: user.len().saturating_sub(MAX_GROWTH_ROWS),
        grew_left_off: d.types_grew.len().saturating_sub(MAX_GROWTH_ROWS),
        shrank_left_off: d.types_shrank.len().saturating_sub(MAX_GROWTH_ROWS),
        total_bytes_delta: d.types_total.bytes_delta,
        total_count_delta: d.types_total.count_delta,
        grew: conv(&cut(&d.types_grew)),
        shrank: conv(&cut(&d.types_shrank)),
        samples: d
            .samples
            .iter()
            .map(|s| SampleView {
                name: c(&s.name),
                objects: s
                    .objects
                    .iter()
                    .map(|o| (o.address.to_string(), o.bytes, c(&o.preview)))
                    .collect(),
            })
            .collect(),
    }
}

/// The memory overview: every mapped byte, split by who holds it.
fn segments(f: &Frag) -> Vec<Segment> {
    let o = &f.overall;
    let held = o.pymalloc_arena_bytes + o.glibc_system_bytes + o.glibc_mmapped_bytes;
    let parts: [(&'static str, &'static str, u64); 6] = [
        ("pymalloc: live blocks", "py-live", o.pymalloc_in_use_bytes),
        ("pymalloc: free", "py-free", o.pymalloc_free_bytes),
        ("glibc: chunks in use", "gl-live", o.glibc_in_use_bytes),
        (
            "glibc: free and top",
            "gl-free",
            o.glibc_free_bytes
                .min(o.glibc_system_bytes.saturating_sub(o.glibc_in_use_bytes)),
        ),
        ("glibc: mmapped chunks", "gl-mmap", o.glibc_mmapped_bytes),
        (
            "other mappings (code, stacks, files...)",
            "other",
            o.mapped_bytes.saturating_sub(held),
        ),
    ];
    let total: u64 = parts.iter().map(|p| p.2).sum();
    parts
        .into_iter()
        .filter(|p| p.2 > 0)
        .map(|(label, class, bytes)| Segment {
            label,
            class,
            bytes,
            pct: pct(bytes, total),
        })
        .collect()
}

fn clean_tree(t: &TreeNode, depth: usize) -> TreeNode {
    TreeNode {
        name: c(&t.name),
        bytes: t.bytes,
        count: t.count,
        // Bounded depth (the tree comes from another analysis; the page recurses on it).
        children: if depth >= 64 {
            Vec::new()
        } else {
            t.children
                .iter()
                .map(|x| clean_tree(x, depth + 1))
                .collect()
        },
    }
}

fn clean_section(s: &Section) -> Section {
    use crate::analysis::report::Cell;
    let body = match &s.body {
        SectionBody::Tree { root } => SectionBody::Tree {
            root: clean_tree(root, 0),
        },
        SectionBody::Table { columns, rows } => SectionBody::Table {
            columns: columns.clone(),
            rows: rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|x| match x {
                            Cell::Text(t) => Cell::Text(c(t)),
                            Cell::Int(i) => Cell::Int(*i),
                        })
                        .collect()
                })
                .collect(),
        },
    };
    Section::new(&s.id, &c(&s.title), &c(&s.note), body)
}

/// JSON for an inline `<script type="application/json">`: `<`, `>` and `&` (which could
/// close the element or open a comment) and U+2028/U+2029 (line terminators to older
/// JavaScript) written as `\uXXXX` escapes. They occur only inside JSON strings, where the
/// escape means the same character.
pub fn script_json<T: Serialize>(v: &T) -> String {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    let mut out = String::with_capacity(s.len() + 16);
    for ch in s.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn diag_view(d: &[Diagnostic]) -> Vec<DiagView> {
    d.iter()
        .filter(|d| d.severity != Severity::Info)
        .take(MAX_DIAGNOSTICS)
        .map(|d| DiagView {
            severity: match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "note",
            },
            text: c(&d.to_string()),
        })
        .collect()
}

/// The page, as one HTML document.
pub fn render(p: &Page) -> Result<String, minijinja::Error> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.add_filter("bytes", |v: i64| human_bytes(v.max(0) as u64));
    env.add_filter("delta", human_delta);
    env.add_filter("n", |v: i64| {
        // Thousands separated by thin spaces, as the text tables read.
        let s = v.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push('\u{2009}');
            }
            out.push(ch);
        }
        if v < 0 {
            format!("-{out}")
        } else {
            out
        }
    });
    env.add_template("report.html", TEMPLATE)?;
    let t = env.get_template("report.html")?;

    let s = p.stacks;
    let crash = s.crash.as_ref().map(|k| CrashView {
        signal: k.signal,
        name: k.name.to_string(),
        code: k.code,
        fault_address: k.fault_address.map(|a| a.to_string()),
        tid: k.tid,
        native: k.native_frame.as_ref().map(|f| {
            c(&format!(
                "{} in {}",
                f.symbol.as_deref().unwrap_or("??"),
                f.module.as_deref().unwrap_or("?")
            ))
        }),
    });
    let threads: Vec<ThreadView> = s
        .threads
        .iter()
        .take(MAX_THREADS)
        .map(|t| ThreadView {
            tid: t.tid,
            name: t.name.as_deref().map(c),
            crashed: t.crashed,
            holds_gil: t.holds_gil,
            frames: t
                .python
                .iter()
                .take(MAX_FRAMES)
                .map(|f| FrameView {
                    function: c(if f.qualname.is_empty() {
                        &f.function
                    } else {
                        &f.qualname
                    }),
                    file: c(&f.file),
                    line: f.line,
                    source: f.source.as_deref().map(c),
                })
                .collect(),
            frames_left_off: t.python.len().saturating_sub(MAX_FRAMES),
            truncated: t.python_truncated.as_deref().map(c),
        })
        .collect();

    let sm = p.summary;
    let types: Vec<Row> = sm
        .types
        .iter()
        .take(MAX_TYPE_ROWS)
        .map(|t| Row {
            name: c(&t.name),
            count: t.count,
            bytes: t.bytes,
        })
        .collect();
    let types_left_off = sm.types.len().saturating_sub(MAX_TYPE_ROWS);

    let classes: Vec<ClassView> = p
        .heap
        .classes
        .iter()
        .map(|b| {
            let max = b
                .classes
                .iter()
                .map(|x| x.live_bytes + x.free_bytes)
                .max()
                .unwrap_or(0);
            ClassView {
                allocator: b.allocator,
                rows: b
                    .classes
                    .iter()
                    .map(|x| ClassRow {
                        size: x.size,
                        live_count: x.live_count,
                        live_bytes: x.live_bytes,
                        free_count: x.free_count,
                        free_bytes: x.free_bytes,
                        live_pct: pct(x.live_bytes, max),
                        free_pct: pct(x.free_bytes, max),
                    })
                    .collect(),
                left_off: b.classes_left_off,
            }
        })
        .collect();

    let sections: Vec<Section> = p.sections.iter().map(clean_section).collect();
    let section_views: Vec<SectionView> = sections
        .iter()
        .map(|s| SectionView {
            id: s.id.clone(),
            title: s.title.clone(),
            note: s.note.clone(),
            kind: match s.body {
                SectionBody::Tree { .. } => "tree",
                SectionBody::Table { .. } => "table",
            },
        })
        .collect();
    let mut diags = p
        .diff
        .map(|d| d.diagnostics.to_vec())
        .unwrap_or_else(|| sm.diagnostics.to_vec());
    diags.extend(
        s.diagnostics
            .to_vec()
            .into_iter()
            .filter(|d| d.message.contains("stack") || d.message.contains("thread")),
    );

    #[derive(Serialize, schemars::JsonSchema)]
    struct Data<'a> {
        occupancy: &'a [crate::analysis::report::Occupancy],
        sections: &'a [Section],
    }
    let data = script_json(&Data {
        occupancy: &p.heap.occupancy,
        sections: &sections,
    });
    let o = &p.frag.overall;
    t.render(context! {
        version => env!("CARGO_PKG_VERSION"),
        core => Value::from_serialize(&p.core),
        old => Value::from_serialize(&p.old),
        crash => Value::from_serialize(&crash),
        python_version => s.python_version.as_deref().map(c),
        threads => Value::from_serialize(&threads),
        threads_left_off => s.threads.len().saturating_sub(MAX_THREADS),
        segments => Value::from_serialize(segments(p.frag)),
        mapped => o.mapped_bytes,
        live_objects => o.live_object_bytes,
        types => Value::from_serialize(&types),
        types_left_off => types_left_off,
        types_total => Value::from_serialize(&sm.types_total),
        growth => Value::from_serialize(p.diff.map(growth)),
        pinned => p.frag.pymalloc.map(|py| py.pinned_arenas),
        arenas => p.frag.pymalloc.map(|py| py.arenas),
        classes => Value::from_serialize(&classes),
        sections => Value::from_serialize(&section_views),
        diagnostics => Value::from_serialize(diag_view(&diags)),
        style => Value::from_safe_string(STYLE.to_string()),
        script => Value::from_safe_string(SCRIPT.to_string()),
        data => Value::from_safe_string(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Addr;
    use crate::analysis::census::TypeCount;
    use crate::analysis::diff::{DiffTotals, Samples};
    use crate::analysis::frag::Overall;
    use crate::analysis::report::{Cell, Column, Occupancy, Region};
    use crate::analysis::summary::{By, Totals};
    use crate::analysis::threads::{JsonFrame, ThreadStack};
    use crate::analysis::ObjectEntry;
    use crate::error::Diagnostics;

    const EVIL: &str = "</script><script>alert(1)</script><img src=x onerror=alert(2)>\u{2028}";

    fn delta(name: &str) -> TypeDelta {
        TypeDelta {
            name: name.into(),
            count_old: 1,
            count_new: 5,
            count_delta: 4,
            bytes_old: 64,
            bytes_new: 320,
            bytes_delta: 256,
        }
    }

    /// Names, previews, paths, thread names and sections from a core that hold markup are
    /// shown as text: the only elements are the template's own.
    #[test]
    fn hostile_core_strings_render_as_text() {
        let evil_class = format!("evil.{EVIL}");
        let mut diags = Diagnostics::default();
        diags.push(Diagnostic::warning(format!("bad pool {EVIL}")));
        let summary = Summary {
            by: By::Type,
            types_total: Some(Totals {
                count: 5,
                bytes: 320,
            }),
            types: vec![TypeCount {
                name: EVIL.into(),
                count: 5,
                bytes: 320,
            }],
            freelists: vec![],
            size_classes_total: Totals::default(),
            size_classes: vec![],
            native_types: vec![],
            retained: vec![],
            diagnostics: diags.clone(),
        };
        let diff = Diff {
            types_total: DiffTotals::default(),
            types_grew: vec![delta(&evil_class), delta(EVIL)],
            types_shrank: vec![],
            size_classes_total: DiffTotals::default(),
            size_classes_grew: vec![],
            size_classes_shrank: vec![],
            samples: vec![Samples {
                name: evil_class.clone(),
                objects: vec![ObjectEntry {
                    address: Addr(0x1000),
                    type_name: evil_class.clone(),
                    bytes: 64,
                    preview: EVIL.into(),
                }],
            }],
            diagnostics: diags.clone(),
        };
        let frame = JsonFrame {
            function: EVIL.into(),
            qualname: EVIL.into(),
            file: EVIL.into(),
            line: Some(1),
            generator: false,
            locals: None,
            source: Some(EVIL.into()),
            frame_address: Addr(0),
        };
        let stacks = Stacks {
            crash: None,
            python_version: Some(EVIL.into()),
            interpreters: vec![],
            threads: vec![ThreadStack {
                tid: Some(1),
                name: Some(EVIL.into()),
                holds_gil: true,
                crashed: false,
                tstate: None,
                interpreter: None,
                python: vec![frame],
                python_truncated: Some(EVIL.into()),
                native: vec![],
                native_truncated: None,
            }],
            diagnostics: Diagnostics::default(),
        };
        let frag = Frag {
            overall: Overall {
                mapped_bytes: 1 << 20,
                ..Default::default()
            },
            glibc: None,
            pymalloc: None,
            mimalloc: None,
            diagnostics: &diags,
        };
        let heap = HeapMap {
            occupancy: vec![Occupancy {
                allocator: "pymalloc",
                unit: "pool",
                unit_bytes: 16384,
                units_per_cell: 1,
                regions: vec![Region {
                    address: Addr(0x10000),
                    bytes: 1 << 20,
                    pinned: true,
                    fill: vec![0, 50, 100, 255],
                }],
                regions_left_off: 0,
            }],
            classes: vec![],
        };
        let tree = TreeNode {
            name: EVIL.into(),
            bytes: 10,
            count: 1,
            children: vec![TreeNode {
                name: EVIL.into(),
                bytes: 5,
                count: 1,
                children: vec![],
            }],
        };
        let page = Page {
            core: CoreSummary {
                core: EVIL.into(),
                exe: Some(EVIL.into()),
                cmdline: EVIL.into(),
                ..Default::default()
            },
            old: Some(CoreSummary {
                core: EVIL.into(),
                ..Default::default()
            }),
            stacks: &stacks,
            summary: &summary,
            frag: &frag,
            diff: Some(&diff),
            heap: &heap,
            sections: vec![
                Section::new(EVIL, EVIL, EVIL, SectionBody::Tree { root: tree }),
                Section::new(
                    "sites",
                    "tracemalloc",
                    "",
                    SectionBody::Table {
                        columns: vec![Column {
                            title: EVIL.into(),
                            kind: "text",
                        }],
                        rows: vec![vec![Cell::Text(EVIL.into())], vec![Cell::Int(3)]],
                    },
                ),
            ],
        };
        let html = render(&page).unwrap();
        // The template's own two scripts (data and code), nothing else.
        assert_eq!(html.matches("<script").count(), 2, "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("alert(1)</script>"));
        assert!(
            html.contains("&lt;&#x2f;script&gt;&lt;script&gt;alert(1)")
                || html.contains("&lt;/script&gt;&lt;script&gt;alert(1)"),
            "{html}"
        );
        // The data element parses back to the same strings.
        let start = html
            .find(r#"<script type="application/json" id="data">"#)
            .unwrap();
        let body = &html[start..];
        let body = &body[body.find('>').unwrap() + 1..body.find("</script>").unwrap()];
        assert!(
            !body.contains('\u{2028}') && body.contains("\\u2028"),
            "{body}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["sections"][0]["body"]["root"]["name"],
            ellipsize(&clean(EVIL), MAX_NAME).as_ref()
        );
        assert_eq!(v["occupancy"][0]["regions"][0]["fill"][3], 255);
    }

    #[test]
    fn script_json_cannot_close_the_element() {
        let s = script_json(&vec![
            "</script><script>alert(1)</script>",
            "<!--",
            "a&b",
            "\u{2028}",
        ]);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        assert!(!s.contains('\u{2028}'));
        let back: Vec<String> = serde_json::from_str(&s).unwrap();
        assert_eq!(back[0], "</script><script>alert(1)</script>");
        assert_eq!(back[3], "\u{2028}");
    }
}
