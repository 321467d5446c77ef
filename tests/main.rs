//! One integration-test binary; modules per area.

mod bad_input;
mod corpus;
mod mutation;
mod synth;
mod synthetic;
