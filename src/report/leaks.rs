//! Text rendering of `coreheap leaks` and `coreheap diff --by owner`.

use super::{clean, human_bytes, human_delta, Align, Table, Text};
use crate::analysis::leaks::{LeakClass, Leaks, NativeClass, NativeLeaks};
use crate::analysis::owner_diff::OwnerDiff;
use std::io::{self, Write};

fn class(w: &mut dyn Write, title: &str, c: &LeakClass, text: Text) -> io::Result<()> {
    writeln!(w, "{title}: {} objects, {}", c.count, human_bytes(c.bytes))?;
    if c.types.is_empty() {
        return Ok(());
    }
    let mut t = Table::new(&[
        ("TYPE", Align::Left),
        ("COUNT", Align::Right),
        ("BYTES", Align::Right),
    ]);
    for r in &c.types {
        t.row(vec![
            r.name.clone(),
            r.count.to_string(),
            human_bytes(r.bytes),
        ]);
    }
    t.write(w, "  ", text)
}

fn native_class(w: &mut dyn Write, title: &str, c: &NativeClass, text: Text) -> io::Result<()> {
    writeln!(w, "{title}: {} chunks, {}", c.count, human_bytes(c.bytes))?;
    if c.count == 0 {
        return Ok(());
    }
    let mut t = Table::new(&[
        ("TYPE", Align::Left),
        ("COUNT", Align::Right),
        ("BYTES", Align::Right),
    ]);
    for r in &c.types {
        t.row(vec![
            clean(&r.name).into_owned(),
            r.count.to_string(),
            human_bytes(r.bytes),
        ]);
    }
    t.write(w, "  ", text)?;
    let mut t = Table::new(&[
        ("CHUNK SIZE", Align::Right),
        ("COUNT", Align::Right),
        ("BYTES", Align::Right),
    ]);
    for r in c.sizes.iter().take(20) {
        t.row(vec![
            r.size.to_string(),
            r.count.to_string(),
            human_bytes(r.bytes),
        ]);
    }
    t.write(w, "  ", text)?;
    if c.sizes.len() > 20 {
        writeln!(w, "  ... and {} other sizes", c.sizes.len() - 20)?;
    }
    Ok(())
}

fn native(w: &mut dyn Write, n: &NativeLeaks, text: Text) -> io::Result<()> {
    writeln!(
        w,
        "native memory (glibc): {} used chunks, {}; {} anchored, {}",
        n.used.count,
        human_bytes(n.used.bytes),
        n.anchored.count,
        human_bytes(n.anchored.bytes)
    )?;
    native_class(
        w,
        "leaked (no chain of pointers from a thread's stack or registers, static memory or a Python object)",
        &n.leaked,
        text,
    )?;
    native_class(
        w,
        "unreferenced (leaked, and no other leaked chunk points to it)",
        &n.unreferenced,
        text,
    )?;
    if !n.samples.is_empty() {
        writeln!(w, "native samples:")?;
        for s in &n.samples {
            writeln!(
                w,
                "  {:<12} {} {:>8} {}  {}  |{}|",
                s.class,
                s.address,
                s.size,
                clean(&s.type_name),
                s.hex,
                clean(&s.text)
            )?;
        }
    }
    Ok(())
}

pub fn write_text(w: &mut dyn Write, l: &Leaks, text: Text) -> io::Result<()> {
    if !l.python {
        return match &l.native {
            Some(n) => native(w, n, text),
            None => Ok(()),
        };
    }
    class(
        w,
        "unreachable from every root (cyclic garbage not collected yet)",
        &l.unreachable,
        text,
    )?;
    writeln!(w)?;
    class(
        w,
        "reference count larger than the references found, and no native anchor (a lost Py_DECREF?)",
        &l.refcount_excess,
        text,
    )?;
    if !l.samples.is_empty() {
        writeln!(w)?;
        writeln!(w, "samples:")?;
        for s in &l.samples {
            writeln!(
                w,
                "  {:<16} {} {} {}",
                s.class,
                s.object.address,
                clean(&s.object.type_name),
                clean(&s.object.preview)
            )?;
        }
    }
    if let Some(n) = &l.native {
        writeln!(w)?;
        native(w, n, text)?;
    }
    Ok(())
}

pub fn write_owner_diff(w: &mut dyn Write, d: &OwnerDiff, text: Text) -> io::Result<()> {
    writeln!(w, "retained memory by owner, largest growth first:")?;
    let mut t = Table::new(&[
        ("OWNER", Align::Left),
        ("KIND", Align::Left),
        ("RETAINED OLD", Align::Right),
        ("RETAINED NEW", Align::Right),
        ("BYTES DELTA", Align::Right),
        ("COUNT DELTA", Align::Right),
        ("TYPES THAT GREW", Align::Left),
    ]);
    for o in &d.owners {
        let types: Vec<String> = o
            .types
            .iter()
            .take(3)
            .map(|t| {
                format!(
                    "{:+} {} ({})",
                    t.count_delta,
                    t.name,
                    human_delta(t.bytes_delta)
                )
            })
            .collect();
        t.row(vec![
            super::ellipsize(&o.owner, 60).into_owned(),
            o.kind.to_string(),
            human_bytes(o.retained_bytes_old),
            human_bytes(o.retained_bytes_new),
            human_delta(o.retained_bytes_delta),
            format!("{:+}", o.retained_count_delta),
            types.join(", "),
        ]);
    }
    t.write(w, "  ", text)
}
