//! One integration-test binary; modules per area.

mod bad_input;
mod census;
mod corpus;
mod damage;
mod diff;
mod glibc;
mod mutation;
mod objects_synth;
mod pymalloc;
mod synth;
mod synthetic;
