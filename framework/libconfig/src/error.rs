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
    /// The path names something other than a regular file (a FIFO, a device, a directory...),
    /// which could block forever or never end; it is refused without reading.
    #[error("{}: not a regular file ({kind}); refusing to read it", path.display())]
    NotRegularFile {
        /// File that was opened.
        path: PathBuf,
        /// What it is instead ("FIFO", "character device", "directory", ...).
        kind: &'static str,
    },
    /// The file is larger than the per-file limit ([`crate::MAX_FILE_SIZE`]).
    #[error("{}: file too large: {size} bytes, the limit is {limit} bytes", path.display())]
    FileTooLarge {
        /// File that was opened.
        path: PathBuf,
        /// Its size (at least this many bytes if it grew while being read).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Reading this file would take the document and its includes over
    /// [`crate::MAX_TOTAL_SIZE`] bytes.
    #[error("{}: the document and its includes exceed {limit} bytes in total", path.display())]
    TotalTooLarge {
        /// File whose size crossed the limit.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The file contains bytes that are not UTF-8 (`at` is the first invalid byte).
    #[error("{at}: invalid UTF-8")]
    InvalidUtf8 {
        /// Position of the first invalid byte.
        at: Location,
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
    /// An `@include`d file was refused before or while reading it (not a regular file, too
    /// large, over the total size); `source` says why and names the file.
    #[error("{at}: cannot include: {source}")]
    IncludeRefused {
        /// The `@include` directive.
        at: Location,
        /// Why the file was refused ([`Error::NotRegularFile`], [`Error::FileTooLarge`], ...).
        source: Box<Error>,
    },
    /// More files included (directly, nested, or through wildcards) than
    /// [`crate::MAX_INCLUDE_FILES`].
    #[error("{at}: more than {limit} files included")]
    TooManyIncludes {
        /// The `@include` directive that crossed the limit.
        at: Location,
        /// The limit.
        limit: usize,
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
    /// Where the error is, if it has a position (not for errors about a whole file).
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Read { .. }
            | Error::NotRegularFile { .. }
            | Error::FileTooLarge { .. }
            | Error::TotalTooLarge { .. } => None,
            Error::Syntax { at, .. }
            | Error::InvalidUtf8 { at }
            | Error::IncludeRefused { at, .. }
            | Error::TooManyIncludes { at, .. }
            | Error::DuplicateSetting { at, .. }
            | Error::IncludeCycle { at, .. }
            | Error::IncludeDepth { at, .. }
            | Error::Include { at, .. }
            | Error::TooDeep { at, .. } => Some(at),
        }
    }
}
