//! Text rendering of `coreheap summary --by owner`.

use super::{human_bytes, Align, Table, Text};
use crate::analysis::owners::Owners;
use std::io::{self, Write};

pub fn write_text(w: &mut dyn Write, o: &Owners, text: Text) -> io::Result<()> {
    writeln!(
        w,
        "retained memory by owner: {} objects, {} reachable from a root; {} objects, {} unreachable (see `leaks`)",
        o.reachable_count,
        human_bytes(o.reachable_bytes),
        o.unreachable_count,
        human_bytes(o.unreachable_bytes)
    )?;
    let mut t = Table::new(&[
        ("OWNER", Align::Left),
        ("KIND", Align::Left),
        ("TYPE", Align::Left),
        ("RETAINED", Align::Right),
        ("COUNT", Align::Right),
        ("TOP TYPES", Align::Left),
    ]);
    for r in &o.owners {
        let types: Vec<String> = r
            .types
            .iter()
            .take(3)
            .map(|t| format!("{} {} ({})", t.count, t.name, human_bytes(t.bytes)))
            .collect();
        t.row(vec![
            super::ellipsize(&r.owner, 60).into_owned(),
            r.kind.to_string(),
            super::ellipsize(&r.type_name, 40).into_owned(),
            human_bytes(r.retained_bytes),
            r.retained_count.to_string(),
            types.join(", "),
        ]);
    }
    t.write(w, "  ", text)
}
