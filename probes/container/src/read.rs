//! Bounded reads of procfs, cgroupfs and sysfs files, with the errors told apart: a file that
//! is missing (a controller or interface file the host does not have, or a process or cgroup
//! that went away) is not a fault; anything else is counted.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Bound for one-value and short keyed files (`memory.current`, `cpu.stat`, `pids.max`, …).
pub const SMALL: u64 = 64 * 1024;
/// Bound for files with one line per device, interface or mount (`io.stat`,
/// `blkio.throttle.*`, `/proc/<pid>/net/dev`, `mountinfo`, `/proc/stat`).
pub const LARGE: u64 = 1024 * 1024;

/// Why a file gave no text.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file (or the process or cgroup holding it) does not exist.
    #[error("missing")]
    Missing,
    /// The file is longer than its bound; nothing of it is used.
    #[error("longer than {0} bytes")]
    TooLarge(u64),
    /// Any other I/O error.
    #[error("{0}")]
    Io(io::Error),
}

impl ReadError {
    /// Whether this is a fault to count (not a missing file).
    pub fn is_fault(&self) -> bool {
        !matches!(self, ReadError::Missing)
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        // ENOENT: no such file; ESRCH: the process exited while its file was open; ENODEV: a
        // cgroup removed while being read.
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENODEV) => ReadError::Missing,
            _ if e.kind() == io::ErrorKind::NotFound => ReadError::Missing,
            _ => ReadError::Io(e),
        }
    }
}

/// The text of `path`, at most `limit` bytes (a longer file is [`ReadError::TooLarge`]).
/// Invalid UTF-8 is replaced (kernel files are ASCII; interface names may not be).
pub fn read_bounded(path: &Path, limit: u64) -> Result<String, ReadError> {
    let file = File::open(path)?;
    let mut bytes = Vec::new();
    // One byte more than the bound tells a file of exactly `limit` bytes from a longer one.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_bound_and_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "12345").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap(), "12345");
        assert!(matches!(read_bounded(&p, 4), Err(ReadError::TooLarge(4))));
        let missing = read_bounded(&dir.path().join("nope"), 5).unwrap_err();
        assert!(matches!(missing, ReadError::Missing));
        assert!(!missing.is_fault());
        // A directory is a fault (EISDIR), not a missing file.
        assert!(read_bounded(dir.path(), 5).unwrap_err().is_fault());
    }
}
