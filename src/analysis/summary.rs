//! `coreheap summary`: live Python objects by type and live allocations by size class, as
//! plain data, sorted and cut to the limits (text and JSON get the same rows).

use super::census::{FreeCount, TypeCount};
use super::{Analysis, Limits};
use crate::alloc::glibc::classes::SizeClass;
use crate::error::Diagnostics;
use serde::Serialize;

/// What to group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Type,
    Size,
}

/// Totals over every row, before the cut to `--top`.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Totals {
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub by: By,
    /// Rows before the cut, and their totals.
    pub types_total: Option<Totals>,
    pub types: Vec<TypeCount>,
    pub freelists: Vec<FreeCount>,
    pub size_classes_total: Totals,
    pub size_classes: Vec<SizeClass>,
    /// Bytes each type's instances retain together (dominator tree of the object graph),
    /// by type name, for the rows of `types` that are Python types.
    pub retained: Vec<Retained>,
    pub diagnostics: Diagnostics,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Retained {
    pub name: String,
    pub bytes: u64,
}

pub fn summary(a: &Analysis, by: By, limits: &Limits) -> Summary {
    let mut classes = a.size_classes();
    let size_classes_total = Totals {
        count: classes.iter().map(|c| c.count).sum(),
        bytes: classes.iter().map(|c| c.bytes).sum(),
    };
    // Largest first, so that --top keeps what matters.
    classes.sort_by(|x, y| {
        y.bytes
            .cmp(&x.bytes)
            .then(x.allocator.cmp(y.allocator))
            .then(x.size.cmp(&y.size))
    });
    let (mut types, mut freelists) = match (&a.census, by) {
        (Some(c), By::Type) => (c.types.clone(), c.freelists.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    let types_total = (a.census.is_some() && by == By::Type).then(|| Totals {
        count: types.iter().map(|t| t.count).sum(),
        bytes: types.iter().map(|t| t.bytes).sum(),
    });
    limits.cut(&mut types);
    limits.cut(&mut freelists);
    let mut diagnostics = a.diagnostics.clone();
    let retained = match (&a.census, by) {
        (Some(c), By::Type) if limits.retained => match a.graph() {
            Ok(g) => {
                diagnostics.merge(&g.diagnostics);
                let r = g.retained_by_type(c);
                types
                    .iter()
                    .filter_map(|t| {
                        r.get(&t.name).map(|&bytes| Retained {
                            name: t.name.clone(),
                            bytes,
                        })
                    })
                    .collect()
            }
            Err(_) => Vec::new(),
        },
        _ => Vec::new(),
    };
    limits.cut(&mut classes);
    Summary {
        by,
        types_total,
        types,
        freelists,
        size_classes_total,
        size_classes: classes,
        retained,
        diagnostics,
    }
}
