//! `coreheap summary --by owner`: retained memory by owner — the dominator tree of the
//! object graph reported at the named owners (module globals, class attributes, roots
//! such as thread frames, large objects held from native code), each with its retained
//! count and bytes and the types it retains.

pub use super::ownership::{all_owners, Owner, Owners, TYPES_PER_OWNER};
use super::{Analysis, Limits};
use crate::error::Result;

pub fn owners(a: &Analysis, limits: &Limits) -> Result<Owners> {
    let mut o = all_owners(a, Some(TYPES_PER_OWNER))?;
    limits.cut(&mut o.owners);
    Ok(o)
}
