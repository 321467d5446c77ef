//! Text rendering of `coreheap diff`.

use super::{clean, human_bytes, human_delta, Align, Table, Text};
use crate::analysis::diff::{Diff, SizeDelta, TypeDelta};
use std::io::{self, Write};

fn types_table(w: &mut dyn Write, rows: &[TypeDelta], text: Text) -> io::Result<()> {
    let mut t = Table::new(&[
        ("TYPE", Align::Left),
        ("COUNT OLD", Align::Right),
        ("COUNT NEW", Align::Right),
        ("DELTA", Align::Right),
        ("BYTES OLD", Align::Right),
        ("BYTES NEW", Align::Right),
        ("BYTES DELTA", Align::Right),
    ]);
    for r in rows {
        t.row(vec![
            r.name.clone(),
            r.count_old.to_string(),
            r.count_new.to_string(),
            format!("{:+}", r.count_delta),
            human_bytes(r.bytes_old),
            human_bytes(r.bytes_new),
            human_delta(r.bytes_delta),
        ]);
    }
    t.write(w, "  ", text)
}

fn sizes_table(w: &mut dyn Write, rows: &[SizeDelta], text: Text) -> io::Result<()> {
    let mut t = Table::new(&[
        ("ALLOCATOR", Align::Left),
        ("SIZE", Align::Right),
        ("COUNT OLD", Align::Right),
        ("COUNT NEW", Align::Right),
        ("DELTA", Align::Right),
        ("BYTES DELTA", Align::Right),
    ]);
    for r in rows {
        t.row(vec![
            r.allocator.to_string(),
            r.size.to_string(),
            r.count_old.to_string(),
            r.count_new.to_string(),
            format!("{:+}", r.count_delta),
            human_delta(r.bytes_delta),
        ]);
    }
    t.write(w, "  ", text)
}

pub fn write_text(w: &mut dyn Write, d: &Diff, text: Text) -> io::Result<()> {
    let t = &d.types_total;
    writeln!(
        w,
        "what changed between the cores: {} in total ({} → {}), {:+} objects and allocations",
        human_delta(t.bytes_delta),
        human_bytes(t.bytes_old),
        human_bytes(t.bytes_new),
        t.count_delta
    )?;
    writeln!(w, "\ngrew:")?;
    if d.types_grew.is_empty() {
        writeln!(w, "  nothing")?;
    } else {
        types_table(w, &d.types_grew, text)?;
    }
    writeln!(w, "\nshrank:")?;
    if d.types_shrank.is_empty() {
        writeln!(w, "  nothing")?;
    } else {
        types_table(w, &d.types_shrank, text)?;
    }
    if d.samples.iter().any(|s| !s.objects.is_empty()) {
        writeln!(w, "\nsamples of what grew (from the new core):")?;
        for s in &d.samples {
            writeln!(w, "  {}", clean(&s.name))?;
            for o in &s.objects {
                writeln!(
                    w,
                    "    {}  {:>6}  {}",
                    o.address,
                    o.bytes,
                    clean(&o.preview)
                )?;
            }
        }
    }
    let s = &d.size_classes_total;
    writeln!(
        w,
        "\nsize classes: {} ({:+} allocations)",
        human_delta(s.bytes_delta),
        s.count_delta
    )?;
    if !d.size_classes_grew.is_empty() {
        writeln!(w, "  grew:")?;
        sizes_table(w, &d.size_classes_grew, text)?;
    }
    if !d.size_classes_shrank.is_empty() {
        writeln!(w, "  shrank:")?;
        sizes_table(w, &d.size_classes_shrank, text)?;
    }
    Ok(())
}
