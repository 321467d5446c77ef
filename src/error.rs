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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// Something noticed during analysis that the user should know about; analysis went on.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Addr>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
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
