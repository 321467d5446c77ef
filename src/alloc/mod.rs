//! Allocator walkers. Each walker reads one allocator's structures through the address
//! space and a layout model, and yields its allocations in address order; corruption is a
//! diagnostic in a capped collector, never a failure of the other allocators.

pub mod glibc;
pub mod pymalloc;
