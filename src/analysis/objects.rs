//! `coreheap objects`: instances of one type, with a short preview of each, as plain data.

use super::{Analysis, ObjectEntry};
use crate::error::{Diagnostics, Error, Result};
use serde::Serialize;

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ObjectList {
    /// The type asked for.
    pub name: String,
    /// Instances in the core (the list is cut at the limit).
    pub count: u64,
    pub bytes: u64,
    pub objects: Vec<ObjectEntry>,
    pub diagnostics: Diagnostics,
}

/// Instances of `type_name`; an error naming similar types when there are none.
pub fn objects(a: &Analysis, type_name: &str, limit: usize) -> Result<ObjectList> {
    let (c, typer) = a.python()?;
    let mut out = ObjectList {
        name: type_name.to_string(),
        count: 0,
        bytes: 0,
        objects: Vec::new(),
        diagnostics: a.diagnostics.clone(),
    };
    let wanted: Vec<bool> = c.type_infos.iter().map(|t| t.name == type_name).collect();
    a.each_object(&mut |o| {
        if wanted[o.ty as usize] {
            out.count += 1;
            out.bytes += c.alloc_size(&o);
            if out.objects.len() < limit {
                out.objects.push(ObjectEntry::of(c, typer, &o));
            }
        }
        true
    })?;
    if out.count == 0 {
        let similar = similar_types(a, type_name);
        let hint = if similar.is_empty() {
            "see `coreheap summary` for the types present".to_string()
        } else {
            format!("did you mean: {}?", similar.join(", "))
        };
        return Err(Error::Usage(format!(
            "no live objects of type {type_name:?} ({hint})"
        )));
    }
    Ok(out)
}

/// Type names close to `name` (case-insensitive substring), for a helpful error.
pub fn similar_types(a: &Analysis, name: &str) -> Vec<String> {
    let n = name.to_lowercase();
    let last = n.rsplit('.').next().unwrap_or(&n).to_string();
    a.census
        .as_ref()
        .map(|c| {
            c.types
                .iter()
                .filter(|t| !t.name.starts_with('<'))
                .filter(|t| {
                    let l = t.name.to_lowercase();
                    l.contains(&last) || n.contains(&l)
                })
                .take(8)
                .map(|t| t.name.clone())
                .collect()
        })
        .unwrap_or_default()
}
