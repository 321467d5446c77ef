//! Folded stacks (`--format folded`) of the ownership views, one line per owner and type:
//! `KIND;OWNER;TYPE BYTES` — what flamegraph.pl, inferno and speedscope read. A frame never
//! contains `;` (the separator) or a newline; each owner's bytes not in its listed types go
//! to an `(other types)` frame, so the widths add up to the retained sizes.

use super::clean;
use crate::analysis::owner_diff::OwnerDiff;
use crate::analysis::ownership::Owners;
use std::io::{self, Write};

fn frame(s: &str) -> String {
    clean(s).replace(';', ":")
}

/// `summary --by owner --format folded`.
pub fn write_owners(w: &mut dyn Write, o: &Owners) -> io::Result<()> {
    for owner in &o.owners {
        let (kind, name) = (frame(owner.kind), frame(&owner.owner));
        let mut listed = 0u64;
        for t in &owner.types {
            if t.bytes > 0 {
                writeln!(w, "{kind};{name};{} {}", frame(&t.name), t.bytes)?;
                listed += t.bytes;
            }
        }
        let rest = owner.retained_bytes.saturating_sub(listed);
        if rest > 0 {
            writeln!(w, "{kind};{name};(other types) {rest}")?;
        }
    }
    Ok(())
}

/// `diff --by owner --format folded`: growth only (a flame graph has no negative widths).
pub fn write_owner_diff(w: &mut dyn Write, d: &OwnerDiff) -> io::Result<()> {
    for owner in d.owners.iter().filter(|o| o.retained_bytes_delta > 0) {
        let (kind, name) = (frame(owner.kind), frame(&owner.owner));
        let mut listed = 0i64;
        for t in owner.types.iter().filter(|t| t.bytes_delta > 0) {
            writeln!(w, "{kind};{name};{} {}", frame(&t.name), t.bytes_delta)?;
            listed += t.bytes_delta;
        }
        let rest = owner.retained_bytes_delta - listed;
        if rest > 0 {
            writeln!(w, "{kind};{name};(other types) {rest}")?;
        }
    }
    Ok(())
}
