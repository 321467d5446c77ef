//! coreheap: where did this service's memory go? Offline heap and Python object analysis
//! of Linux ELF core dumps, without gdb, ptrace or debug symbols.
//!
//! Data flows one way: `core` (the file) → `memory` (one address space over the core and
//! verified on-disk files) → `modules` (symbols) → `version` → analyses (`info`, ...) →
//! `report` (text and JSON renderers). The binary in `main.rs` only parses arguments,
//! runs one analysis and maps errors to exit codes.

pub mod addr;
pub mod core;
pub mod error;
pub mod info;
pub mod memory;
pub mod modules;
pub mod process;
pub mod progress;
pub mod report;
pub mod version;

pub use addr::{Addr, Range};
pub use error::{Diagnostic, Error, Result};
pub use process::{Options, Process};
pub mod diff;
pub mod frag;
pub mod glibc;
pub mod models;
pub mod objects;
pub mod python;
pub mod summary;
