//! The process image: the core file, one address space over it and the verified on-disk
//! files, the modules with their symbols, and the runtimes' versions.

pub mod core;
pub mod cxx;
pub mod mapped;
pub mod memory;
pub mod modules;
pub mod process;
#[cfg(test)]
pub mod testcore;
pub mod unwind;
pub mod version;
