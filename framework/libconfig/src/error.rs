//! Typed parse errors, each carrying `FILE:LINE:COL`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A position in a source file (1-based line and column, column counted in characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// File the position is in (the origin given to [`crate::parse_str`] for in-memory sources).
    pub file: Arc<Path>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// Why a libconfig document could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The top-level file could not be read.
    #[error("{}: cannot read file: {source}", path.display())]
    Read {
        /// File that was opened.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The text does not follow the libconfig grammar.
    #[error("{at}: {message}")]
    Syntax {
        /// Where the problem was noticed.
        at: Location,
        /// What was expected or found.
        message: String,
    },
    /// A setting name appears twice in one group.
    #[error("{at}: duplicate setting \"{name}\" (first defined at line {first_line})")]
    DuplicateSetting {
        /// Second occurrence.
        at: Location,
        /// Setting name.
        name: String,
        /// Line of the first occurrence.
        first_line: u32,
    },
    /// An `@include` refers (directly or indirectly) to a file that is already being read.
    #[error("{at}: include cycle: \"{}\" is already being included", path.display())]
    IncludeCycle {
        /// The `@include` directive.
        at: Location,
        /// The resolved file.
        path: PathBuf,
    },
    /// Includes nested deeper than [`crate::MAX_INCLUDE_DEPTH`].
    #[error("{at}: includes nested deeper than {limit} levels")]
    IncludeDepth {
        /// The `@include` directive.
        at: Location,
        /// The limit.
        limit: usize,
    },
    /// An `@include`d file could not be read.
    #[error("{at}: cannot read include file \"{}\": {source}", path.display())]
    Include {
        /// The `@include` directive.
        at: Location,
        /// The resolved file.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// Groups/lists/arrays nested deeper than [`crate::MAX_NESTING`].
    #[error("{at}: values nested deeper than {limit} levels")]
    TooDeep {
        /// Where the limit was crossed.
        at: Location,
        /// The limit.
        limit: usize,
    },
}

impl Error {
    /// Where the error is, if it has a position (every variant except [`Error::Read`]).
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Read { .. } => None,
            Error::Syntax { at, .. }
            | Error::DuplicateSetting { at, .. }
            | Error::IncludeCycle { at, .. }
            | Error::IncludeDepth { at, .. }
            | Error::Include { at, .. }
            | Error::TooDeep { at, .. } => Some(at),
        }
    }
}
