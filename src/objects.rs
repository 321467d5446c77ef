//! `coreheap objects`: instances of one type, with a short preview of each, as plain data.

use crate::addr::Addr;
use crate::python::objects::Typer;
use crate::summary::Analysis;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ObjectEntry {
    pub address: Addr,
    #[serde(rename = "type")]
    pub type_name: String,
    /// Bytes of the allocation holding the object (with GC head and pre-header).
    pub size: u64,
    pub preview: String,
}

#[derive(Debug, Serialize)]
pub struct ObjectList {
    pub type_name: String,
    /// Instances in the core (the list is cut at the limit).
    pub total: u64,
    pub total_bytes: u64,
    pub objects: Vec<ObjectEntry>,
}

pub fn objects(a: &Analysis, typer: &Typer, type_name: &str, limit: usize) -> ObjectList {
    let mut out = ObjectList {
        type_name: type_name.to_string(),
        total: 0,
        total_bytes: 0,
        objects: Vec::new(),
    };
    if let Some(c) = &a.census {
        let wanted: Vec<bool> = c.type_infos.iter().map(|t| t.name == type_name).collect();
        for o in c.objects.iter().filter(|o| wanted[o.ty as usize]) {
            out.total += 1;
            out.total_bytes += o.alloc as u64;
            if out.objects.len() < limit {
                let ty = c.type_of(o);
                out.objects.push(ObjectEntry {
                    address: o.addr,
                    type_name: ty.name.clone(),
                    size: o.alloc as u64,
                    preview: typer.preview(o.addr.0, ty),
                });
            }
        }
    }
    out
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
