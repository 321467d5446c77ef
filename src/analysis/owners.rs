//! `coreheap summary --by owner`: retained memory by owner — the dominator tree of the
//! object graph reported at the named owners (module globals, class attributes, roots
//! such as thread frames, large objects held from native code), each with its retained
//! count and bytes and the types it retains.

use super::ownership::{self, TypeShare};
use super::{Analysis, Limits};
use crate::addr::Addr;
use crate::error::{Diagnostics, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Owner {
    pub owner: String,
    pub kind: &'static str,
    pub address: Addr,
    #[serde(rename = "type")]
    pub type_name: String,
    pub retained_count: u64,
    pub retained_bytes: u64,
    pub types: Vec<TypeShare>,
}

#[derive(Debug, Serialize)]
pub struct Owners {
    /// Objects reached from a root, and their bytes (with owned buffers).
    pub reachable_count: u64,
    pub reachable_bytes: u64,
    /// Objects no root reaches (cyclic garbage; see `leaks`).
    pub unreachable_count: u64,
    pub unreachable_bytes: u64,
    pub edges: u64,
    pub owners: Vec<Owner>,
    pub diagnostics: Diagnostics,
}

/// Types listed per owner.
pub const TYPES_PER_OWNER: usize = 5;

/// Every owner, largest retained bytes first (all of them: `--top` cuts the list).
pub fn all_owners(a: &Analysis, types_per_owner: Option<usize>) -> Result<Owners> {
    let (c, _) = a.python()?;
    let g = a.graph()?;
    let named = ownership::named_owners(a, g);
    let mut owners: Vec<Owner> = named
        .iter()
        .map(|o| Owner {
            owner: o.name.clone(),
            kind: o.kind,
            address: ownership::address(c, o.node),
            type_name: c.type_of(&c.objects[o.node as usize - 1]).name.clone(),
            retained_count: g.retained_count[o.node as usize] as u64,
            retained_bytes: g.retained_bytes[o.node as usize],
            types: Vec::new(),
        })
        .collect();
    let nodes: Vec<u32> = named.iter().map(|o| o.node).collect();
    for (o, mut t) in owners.iter_mut().zip(ownership::type_shares(c, g, &nodes)) {
        if let Some(k) = types_per_owner {
            t.truncate(k);
        }
        o.types = t;
    }
    owners.sort_by(|x, y| {
        y.retained_bytes
            .cmp(&x.retained_bytes)
            .then_with(|| x.owner.cmp(&y.owner))
    });
    let unreachable: Vec<u32> = (1..g.nodes() as u32).filter(|&v| !g.reached(v)).collect();
    let mut diagnostics = a.diagnostics.clone();
    diagnostics.merge(&g.diagnostics);
    Ok(Owners {
        reachable_count: g.retained_count[0] as u64,
        reachable_bytes: g.retained_bytes[0],
        unreachable_count: unreachable.len() as u64,
        unreachable_bytes: unreachable.iter().map(|&v| g.shallow[v as usize] as u64).sum(),
        edges: g.edges,
        owners,
        diagnostics,
    })
}

pub fn owners(a: &Analysis, limits: &Limits) -> Result<Owners> {
    let mut o = all_owners(a, Some(TYPES_PER_OWNER))?;
    limits.cut(&mut o.owners);
    Ok(o)
}
