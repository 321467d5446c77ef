//! Coverage-guided fuzzing of the core parser, address space and `info` analysis:
//! `cargo +nightly fuzz run core_parser` (or `cargo fuzz run core_parser` where the
//! toolchain allows -Z flags). Crashes found here become regression tests in tests/.
#![no_main]

use coreheap::image::core::CoreFile;
use coreheap::{Options, Process};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(core) = CoreFile::from_bytes("fuzz", data.to_vec()) {
        let p = Process::from_core(core, &Options::default());
        let info = coreheap::analysis::info::info(&p);
        let mut sink = Vec::new();
        let _ = coreheap::report::info::write_text(&mut sink, &info);
    }
});
