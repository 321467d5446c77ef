//! coreheap: where did this service's memory go? Offline heap and Python object analysis
//! of Linux ELF core dumps, without gdb, ptrace or debug symbols.
//!
//! The folders are the layers, and each depends only on the ones above it in this list:
//!
//! - [`addr`], [`error`], [`progress`], [`units`]: addresses, errors and capped diagnostics,
//!   the progress trait, human-readable sizes.
//! - [`image`]: the process image — the core file, one address space over the core and the
//!   verified on-disk files, modules and their symbols, runtime versions.
//! - [`models`]: heap layouts as data (`heap-models/*.toml`), chosen by version and checked.
//! - [`alloc`]: allocator walkers (glibc malloc, pymalloc), each a stream of allocations in
//!   address order with capped diagnostics.
//! - [`python`]: CPython objects — the type reader, object validation, previews.
//! - [`analysis`]: one [`analysis::Analysis`] that owns the walks, the models and the type
//!   reader actually used; one file per command, none importing another.
//! - [`report`]: renderers (text, JSON, the HTML page); every string from the core goes through one
//!   sanitising function.
//! - `fuzzing` (hidden): the fuzz targets' harness over the walkers (tests/fuzz/).
//!
//! The binary (`src/main.rs`, `src/cli/`) parses arguments, draws progress and colour, runs
//! one analysis, renders it and maps errors to exit codes.

pub mod addr;
pub mod alloc;
pub mod analysis;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod models;
pub mod progress;
pub mod python;
pub mod report;
pub mod spill;
pub mod units;

pub use addr::{Addr, Range};
pub use error::{Diagnostic, Diagnostics, Error, Result};
pub use image::process::{Options, Process};
