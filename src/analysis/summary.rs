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
    pub diagnostics: Diagnostics,
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
    limits.cut(&mut classes);
    Summary {
        by,
        types_total,
        types,
        freelists,
        size_classes_total,
        size_classes: classes,
        diagnostics: a.diagnostics.clone(),
    }
}
