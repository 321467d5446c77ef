//! Text rendering of `coreheap why`: one chain per object, root first.

use super::{clean, human_bytes, Text};
use crate::analysis::why::Why;
use std::io::{self, Write};

pub fn write_text(w: &mut dyn Write, y: &Why, _text: Text) -> io::Result<()> {
    for p in &y.paths {
        writeln!(
            w,
            "{} at {} ({}):",
            clean(&p.type_name),
            p.target,
            human_bytes(p.bytes)
        )?;
        match &p.root {
            None if p.allocator.is_some() => writeln!(
                w,
                "  leaked: no chain of pointers from a thread's stack or registers, static memory or a Python object reaches it (see `leaks`)"
            )?,
            None => writeln!(
                w,
                "  unreachable from every root (cyclic garbage, see `leaks`)"
            )?,
            Some(r) => {
                writeln!(w, "  held by {} ({})", clean(&r.name), r.kind)?;
                let mut s = String::new();
                for (i, st) in p.steps.iter().enumerate() {
                    if i == 0 {
                        s.push_str(&st.via);
                        if st.via != st.type_name {
                            s.push_str(&format!(" ({})", st.type_name));
                        }
                    } else {
                        s.push_str(&format!(" {} → {}", st.via, st.type_name));
                    }
                }
                writeln!(w, "  {}", clean(&s))?;
            }
        }
    }
    Ok(())
}
