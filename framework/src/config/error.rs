//! Config errors: where (file line or environment variable), which key, what is wrong.

use std::fmt;
use std::path::PathBuf;

/// Where a config value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// A line of the config file (or of a file it `@include`s).
    File {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: u32,
    },
    /// An environment override.
    Env {
        /// Variable name, e.g. `GALA_GOPHER_WEB_SERVER__PORT`.
        var: String,
    },
    /// The document as a whole (the key is absent and so is its section).
    Document {
        /// Config file.
        path: PathBuf,
    },
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::File { path, line } => write!(f, "{}:{line}", path.display()),
            Provenance::Env { var } => f.write_str(var),
            Provenance::Document { path } => write!(f, "{}", path.display()),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// Config file.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid libconfig (`FILE:LINE:COL: message`), or was refused before
    /// parsing (not a regular file, too large, not UTF-8).
    #[error(transparent)]
    Syntax(#[from] gala_libconfig::Error),
    /// A value has the wrong type, is out of range, is missing, or conflicts with another.
    #[error("{at}: {}{message}", key_prefix(key))]
    Invalid {
        /// Where the value (or its enclosing setting, for a missing key) was written.
        at: Provenance,
        /// Dotted key, e.g. `web_server.port` or `probes[2].name` (empty if not known).
        key: String,
        /// What is wrong, e.g. `invalid value 70000, expected 1..=65535`.
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl ConfigError {
    /// The dotted key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } if !key.is_empty() => Some(key),
            _ => None,
        }
    }
}
