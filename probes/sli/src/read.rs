//! Bounded reads of host files (procfs, cgroupfs): a file larger than the limit is an error,
//! not a reason to buffer without end.

use std::io::{self, Read};
use std::path::Path;

/// Limit for one-line files (`cpuacct.usage`, PSI files, `cpu.max`).
pub const SMALL: u64 = 64 * 1024;
/// Limit for lists (`mountinfo`, `cgroup.procs`, `/proc/stat`).
pub const LARGE: u64 = 4 * 1024 * 1024;

/// Reads `path` as text, at most `limit` bytes; a longer file is `InvalidData`.
pub fn bounded(path: &Path, limit: u64) -> io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(4096);
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_files_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "12345").unwrap();
        assert_eq!(bounded(&p, 5).unwrap(), "12345");
        assert_eq!(
            bounded(&p, 4).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            bounded(&dir.path().join("none"), 4).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
