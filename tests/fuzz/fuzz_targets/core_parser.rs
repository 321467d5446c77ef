//! Coverage-guided fuzzing of the core parser, address space and `info` analysis:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz core_parser` (README "Fuzzing").
//! Crashes found here become regression tests in tests/.
#![no_main]

use coreheap::image::core::CoreFile;
use coreheap::{Options, Process};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(core) = CoreFile::from_bytes("fuzz", data.to_vec()) {
        let p = Process::from_core(core, &Options::default());
        let info = coreheap::analysis::info::info(&p);
        let mut sink = Vec::new();
        let _ = coreheap::report::info::write_text(&mut sink, &info, Default::default());
    }
});
