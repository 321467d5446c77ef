//! The traces walker on a real core's memory with the fuzzer's bytes overlaid on its heap
//! (what one execution does: coreheap::fuzzing; README "Fuzzing").
#![no_main]

use coreheap::fuzzing::{run, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        coreheap::fuzzing::init(Target::Traces);
    },
    |data: &[u8]| run(Target::Traces, data)
);
