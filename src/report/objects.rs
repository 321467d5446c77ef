//! Text rendering of `coreheap objects`.

use super::{clean, human_bytes, Align, Table, Text};
use crate::analysis::objects::ObjectList;
use std::io::{self, Write};

pub fn write_text(w: &mut dyn Write, l: &ObjectList, text: Text) -> io::Result<()> {
    writeln!(
        w,
        "{} live {} objects, {}{}",
        l.count,
        clean(&l.name),
        human_bytes(l.bytes),
        if (l.objects.len() as u64) < l.count {
            format!(" (showing {})", l.objects.len())
        } else {
            String::new()
        }
    )?;
    let mut t = Table::new(&[
        ("ADDRESS", Align::Left),
        ("SIZE", Align::Right),
        ("PREVIEW", Align::Left),
    ]);
    for o in &l.objects {
        t.row(vec![
            o.address.to_string(),
            o.bytes.to_string(),
            o.preview.clone(),
        ]);
    }
    t.write(w, "  ", text)
}
