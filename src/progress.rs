//! Progress reporting, as a small trait the library takes: the binary draws bars on
//! stderr (`src/cli/progress.rs`), tests and library users pass `NoProgress`.

pub trait Progress: Sync {
    /// Start a phase. `total` is in `unit`s when known.
    fn phase(&self, name: &str, total: Option<u64>, unit: Unit) -> Box<dyn Phase + '_>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Items,
}

pub trait Phase {
    fn inc(&self, n: u64);
    fn set(&self, pos: u64);
}

/// Draws nothing.
pub struct NoProgress;

struct NoPhase;
impl Phase for NoPhase {
    fn inc(&self, _: u64) {}
    fn set(&self, _: u64) {}
}

impl Progress for NoProgress {
    fn phase(&self, _: &str, _: Option<u64>, _: Unit) -> Box<dyn Phase + '_> {
        Box::new(NoPhase)
    }
}
