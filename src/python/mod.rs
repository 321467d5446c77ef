//! CPython objects: the type reader, object validation and previews, over the allocations
//! the walkers in `alloc` found.

pub mod objects;
pub mod edges;
pub mod roots;
