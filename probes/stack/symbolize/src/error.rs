//! The crate's errors. None reaches the caller of [`crate::Symbolizer`]: each becomes a miss and a
//! counter in [`crate::Stats`] (and [`crate::Symbolizer::last_error`]).

use std::io;
use std::path::PathBuf;

/// Reading a `/proc` file or a perf map failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file was read but a field it must have is missing or not a number.
    #[error("{path}: malformed: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
}

/// Why a process's perf map was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PerfMapRefusal {
    /// A path component (`tmp` or the file) is a symbolic link; it is never followed, because the
    /// profiled process would choose what we (root) read.
    #[error("{path}: symbolic link, not followed")]
    Symlink {
        /// The path as the process sees it.
        path: PathBuf,
    },
    /// The file is not a regular file (FIFO, device, directory, ...).
    #[error("{path}: not a regular file")]
    NotRegular {
        /// The path as the process sees it.
        path: PathBuf,
    },
    /// The file's owner is none of the process's uids (a hard link to someone else's file).
    #[error("{path}: owned by uid {uid}, not by the process")]
    Owner {
        /// The path as the process sees it.
        path: PathBuf,
        /// The file's owner.
        uid: u32,
    },
    /// Opening, reading or the process's `status` failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}
