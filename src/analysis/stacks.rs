//! `coreheap stacks`: every thread's Python stack (and with `--native` its native stack),
//! and the crash context; built on the shared [`crate::analysis::threads`].

pub use crate::analysis::threads::{Crash, JsonFrame, StackOptions, Stacks, ThreadStack};
use crate::analysis::Models;
use crate::image::process::Process;

pub fn stacks(p: &Process, models: &Models, opts: StackOptions) -> Stacks {
    crate::analysis::threads::stacks(p, models, opts)
}
