//! One error type for the whole crate: every variant names the component at fault and, where possible, the fix.

/// Errors raised by alignbench. Messages name the key, file or component and say how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An experiment file (or a sweep cell) is invalid; the message names the key and the fix.
    #[error("{0}")]
    Config(String),
    /// A numerical failure that must not be silently repaired (non-finite weights, not-PD matrices, ...).
    #[error("numerical error in {component}: {message}")]
    Numeric {
        /// The component that produced the value.
        component: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file involved.
        path: String,
        /// What went wrong and how to fix it.
        message: String,
    },
    /// The report could not be built (tables, figures, HTML); the message names the table or figure.
    #[error("report: {0}")]
    Report(String),
    /// An error from the tensor backend.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// An I/O error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Shorthand for a configuration error.
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
    /// Shorthand for a numerical error.
    pub fn numeric(component: &'static str, msg: impl Into<String>) -> Self {
        Error::Numeric { component, message: msg.into() }
    }
    /// Shorthand for a report error.
    pub fn report(msg: impl std::fmt::Display) -> Self {
        Error::Report(msg.to_string())
    }
    /// Shorthand for a file error.
    pub fn file(path: impl AsRef<std::path::Path>, msg: impl Into<String>) -> Self {
        Error::File { path: path.as_ref().display().to_string(), message: msg.into() }
    }
}

/// Crate-wide result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
