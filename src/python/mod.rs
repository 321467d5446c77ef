//! CPython objects: the type reader, object validation and previews, over the allocations
//! the walkers in `alloc` found; and the interpreter's threads and frames.

pub mod containers;
pub mod edges;
pub mod floats;
pub mod frames;
pub mod objects;
pub mod roots;
pub mod symless;
pub mod threadnames;
pub mod tracemalloc;
pub mod typeobj;
