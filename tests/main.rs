//! One integration-test binary; modules per area.

mod bad_input;
mod census;
mod cli;
mod corpus;
mod damage;
mod diff;
mod freethreaded;
mod fuzz_replay;
mod glibc;
mod graph;
mod layers;
mod libs;
mod mutation;
mod native;
mod objects_synth;
mod pymalloc;
mod report;
mod schema;
mod stacks;
mod synth;
mod synthetic;
mod traces;
