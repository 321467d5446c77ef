//! One integration-test binary; modules per area.

mod bad_input;
mod corpus;
mod damage;
mod glibc;
mod mutation;
mod pymalloc;
mod synth;
mod synthetic;
