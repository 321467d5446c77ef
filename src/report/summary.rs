//! Text rendering of `coreheap summary`.

use super::{clean, human_bytes, Align, Table, Text};
use crate::analysis::summary::{By, Summary};
use std::io::{self, Write};

pub fn write_text(w: &mut dyn Write, s: &Summary, text: Text) -> io::Result<()> {
    if let (By::Type, Some(total)) = (s.by, &s.types_total) {
        writeln!(
            w,
            "live Python objects and other allocations by type: {}, {}",
            total.count,
            human_bytes(total.bytes)
        )?;
        let mut t = Table::new(&[
            ("TYPE", Align::Left),
            ("COUNT", Align::Right),
            ("BYTES", Align::Right),
            ("RETAINED", Align::Right),
        ]);
        for r in &s.types {
            // Retained: what the type's instances keep alive between them ("-" for the
            // buckets that are not objects).
            let retained = s
                .retained
                .iter()
                .find(|x| x.name == r.name)
                .map(|x| human_bytes(x.bytes))
                .unwrap_or_else(|| "-".into());
            t.row(vec![
                r.name.clone(),
                r.count.to_string(),
                human_bytes(r.bytes),
                retained,
            ]);
        }
        t.write(w, "  ", text)?;
        if !s.freelists.is_empty() {
            let fl: Vec<String> = s
                .freelists
                .iter()
                .map(|f| format!("{} {}", f.count, clean(&f.name)))
                .collect();
            writeln!(
                w,
                "  free-list residents (not counted above): {}",
                fl.join(", ")
            )?;
        }
        writeln!(w)?;
    }
    if !s.native_types.is_empty() {
        writeln!(w, "used glibc chunks by C++ class (vtable at their start):")?;
        let retained = s.native_types.iter().any(|r| r.retained_bytes.is_some());
        let mut cols = vec![
            ("CLASS", Align::Left),
            ("ALLOCATOR", Align::Left),
            ("COUNT", Align::Right),
            ("BYTES", Align::Right),
        ];
        if retained {
            cols.push(("RETAINED", Align::Right));
            cols.push(("RETAINED CHUNKS", Align::Right));
        }
        let mut t = Table::new(&cols);
        for r in &s.native_types {
            let mut row = vec![
                clean(&r.name).into_owned(),
                r.allocator.to_string(),
                r.count.to_string(),
                human_bytes(r.bytes),
            ];
            if retained {
                row.push(r.retained_bytes.map_or("-".into(), human_bytes));
                row.push(r.retained_count.map_or("-".into(), |c| c.to_string()));
            }
            t.row(row);
        }
        t.write(w, "  ", text)?;
        writeln!(w)?;
    }
    let mut t = Table::new(&[
        ("ALLOCATOR", Align::Left),
        ("SIZE", Align::Right),
        ("COUNT", Align::Right),
        ("BYTES", Align::Right),
    ]);
    for r in &s.size_classes {
        t.row(vec![
            r.allocator.to_string(),
            r.size.to_string(),
            r.count.to_string(),
            human_bytes(r.bytes),
        ]);
    }
    writeln!(
        w,
        "live allocations by size class: {}, {}",
        s.size_classes_total.count,
        human_bytes(s.size_classes_total.bytes)
    )?;
    t.write(w, "  ", text)
}
