//! Errors and diagnostics.
//!
//! `Error` is what stops a command (it becomes one line on stderr and exit code 2);
//! `Diagnostic` is what a walk notices and reports while it goes on (damaged data, a
//! missing binary, a truncated core).

use crate::addr::Addr;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A fatal error: the command cannot produce its answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    BadCore { path: PathBuf, msg: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn bad_core(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadCore {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// Why a read of the analysed process's memory failed. Cheap to build: walkers create
/// and drop many of these in hot loops; a message is attached only where one surfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// No byte of the process image at this address is available (not mapped, or
    /// left out of the core and not recoverable from a verified file on disk).
    Unavailable(Addr),
    /// The address computation overflowed.
    Overflow,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Unavailable(a) => write!(f, "memory at {a} is not available in the core"),
            ReadError::Overflow => write!(f, "address arithmetic overflow"),
        }
    }
}

impl std::error::Error for ReadError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// Something noticed during analysis that the user should know about; analysis went on.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Diagnostic {
    pub severity: Severity,
    pub address: Option<Addr>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            address: None,
            message: message.into(),
            hint: None,
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            ..Diagnostic::warning(message)
        }
    }
    pub fn info(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Info,
            ..Diagnostic::warning(message)
        }
    }
    pub fn at(mut self, a: Addr) -> Self {
        self.address = Some(a);
        self
    }
    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Info => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{sev}: ")?;
        if let Some(a) = self.address {
            write!(f, "{a}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// How many diagnostics one walker lists before it only counts them.
pub const DIAGNOSTICS_CAP: usize = 50;

/// A capped collector of diagnostics: every walker reports into one, so a heap with a
/// million damaged pools gives fifty lines and a count, not a million lines. Merging two
/// collectors keeps what each listed (each was capped on its own) and adds up the rest.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
    suppressed: u64,
    cap: usize,
}

impl Default for Diagnostics {
    fn default() -> Self {
        Diagnostics::new(DIAGNOSTICS_CAP)
    }
}

impl Diagnostics {
    pub fn new(cap: usize) -> Self {
        Diagnostics {
            items: Vec::new(),
            suppressed: 0,
            cap,
        }
    }
    pub fn push(&mut self, d: Diagnostic) {
        if self.items.len() < self.cap {
            self.items.push(d);
        } else {
            self.suppressed += 1;
        }
    }
    /// Take over another collector's diagnostics (already capped by it).
    pub fn merge(&mut self, other: &Diagnostics) {
        self.items.extend(other.items.iter().cloned());
        self.suppressed += other.suppressed;
    }
    /// Add another collector's diagnostics as if they had been pushed here after these
    /// (the cap holds over both; the other's uncounted ones are counted).
    pub fn append(&mut self, other: &Diagnostics) {
        for d in &other.items {
            self.push(d.clone());
        }
        self.suppressed += other.suppressed;
    }
    /// Diagnostics that were counted but not listed.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
    /// Prefix every listed message (e.g. "old core: ").
    pub fn prefixed(&self, prefix: &str) -> Diagnostics {
        let mut out = self.clone();
        for d in &mut out.items {
            d.message = format!("{prefix}{}", d.message);
        }
        out
    }
    /// Everything to show: the listed diagnostics, then one line for the rest.
    pub fn to_vec(&self) -> Vec<Diagnostic> {
        let mut v = self.items.clone();
        if self.suppressed > 0 {
            v.push(Diagnostic::warning(format!(
                "{} more diagnostics of the same walks are not listed (at most {} per walker)",
                self.suppressed, self.cap
            )));
        }
        v
    }
}

impl std::ops::Deref for Diagnostics {
    type Target = [Diagnostic];
    fn deref(&self) -> &[Diagnostic] {
        &self.items
    }
}

impl Extend<Diagnostic> for Diagnostics {
    fn extend<I: IntoIterator<Item = Diagnostic>>(&mut self, iter: I) {
        for d in iter {
            self.push(d);
        }
    }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(v: Vec<Diagnostic>) -> Self {
        let mut d = Diagnostics::default();
        d.extend(v);
        d
    }
}

impl Serialize for Diagnostics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_vec().serialize(s)
    }
}

/// In JSON a collector is the list it shows (`to_vec`).
impl schemars::JsonSchema for Diagnostics {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Diagnostics".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Vec<Diagnostic>>::json_schema(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_are_capped_and_counted() {
        let mut d = Diagnostics::new(3);
        for i in 0..1000 {
            d.push(Diagnostic::warning(format!("bad pool {i}")));
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.suppressed(), 997);
        let v = d.to_vec();
        assert_eq!(v.len(), 4);
        assert!(v[3].message.starts_with("997 more"));
        let mut all = Diagnostics::new(3);
        all.merge(&d);
        all.merge(&d);
        assert_eq!(all.len(), 6);
        assert_eq!(all.suppressed(), 1994);
    }
}
