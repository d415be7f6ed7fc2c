//! Size-capped log files that never follow symlinks.
//!
//! * [`Naming::Numbered`] (`gopher_metrics_<N>`, `gopher_event_<N>`): up to four files of a
//!   quarter of the cap each; a full file is closed and `N + 1` started, and the oldest files
//!   are deleted so that closed files plus a full current file stay within the cap.
//! * [`Naming::Backup`] (`gopher_meta.log`): the file and one backup `<name>.1`, half the cap each.
//!
//! Files are created `0640` with `O_NOFOLLOW` (numbered files also `O_EXCL`), directories `0750`;
//! a directory that is a symlink is refused. A file deleted behind our back is recreated at the
//! next flush. Existing files from an earlier run are counted against the cap.

use std::collections::VecDeque;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Numbered files kept at most (current included).
const NUMBERED_FILES: u64 = 4;

/// Bytes buffered before a write.
const FLUSH_BYTES: usize = 64 * 1024;

/// How the files of one stream are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `<prefix><N>`, N increasing.
    Numbered(&'static str),
    /// `<name>` plus one backup `<name>.1`.
    Backup(&'static str),
}

/// Errors of the log-file writer.
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    /// The directory is a symlink.
    #[error("{0}: is a symlink, refusing to write logs through it")]
    SymlinkDir(PathBuf),
    /// A line alone is larger than one file may grow.
    #[error("line of {len} bytes is larger than a log file may grow ({cap} bytes)")]
    TooLarge {
        /// Line length with its newline.
        len: usize,
        /// Per-file cap.
        cap: u64,
    },
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogFileError + '_ {
    move |source| LogFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Create `dir` (mode 0750, parents too) and refuse it if it is a symlink.
pub fn prepare_dir(dir: &Path) -> Result<(), LogFileError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(io_err(dir))?;
    let md = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if md.file_type().is_symlink() {
        return Err(LogFileError::SymlinkDir(dir.to_path_buf()));
    }
    Ok(())
}

/// One stream's files.
#[derive(Debug)]
pub struct RotatingFile {
    dir: PathBuf,
    naming: Naming,
    total: u64,
    file_cap: u64,
    file: Option<File>,
    path: PathBuf,
    size: u64,
    index: u64,
    closed: VecDeque<(PathBuf, u64)>,
    buf: Vec<u8>,
    /// Lines in `buf`.
    buffered: u64,
    /// Lines written since the last [`RotatingFile::flush`].
    written: u64,
    /// Lines lost to write errors since the last [`RotatingFile::take_lost`].
    lost: u64,
}

impl RotatingFile {
    /// Files under `dir` named by `naming`, together at most `total_bytes`.
    pub fn open(dir: &Path, naming: Naming, total_bytes: u64) -> Result<Self, LogFileError> {
        prepare_dir(dir)?;
        let file_cap = match naming {
            Naming::Numbered(_) => total_bytes / NUMBERED_FILES,
            Naming::Backup(_) => total_bytes / 2,
        }
        .max(1);
        let mut rf = RotatingFile {
            dir: dir.to_path_buf(),
            naming,
            total: total_bytes,
            file_cap,
            file: None,
            path: PathBuf::new(),
            size: 0,
            index: 0,
            closed: VecDeque::new(),
            buf: Vec::with_capacity(FLUSH_BYTES),
            buffered: 0,
            written: 0,
            lost: 0,
        };
        rf.scan()?;
        Ok(rf)
    }

    /// Largest size one file reaches.
    pub fn file_cap(&self) -> u64 {
        self.file_cap
    }

    fn scan(&mut self) -> Result<(), LogFileError> {
        match self.naming {
            Naming::Numbered(prefix) => {
                let mut found = Vec::new();
                for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
                    let Ok(entry) = entry else { continue };
                    let name = entry.file_name();
                    let Some(n) = name
                        .to_str()
                        .and_then(|s| s.strip_prefix(prefix))
                        .and_then(|s| s.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let path = entry.path();
                    match std::fs::symlink_metadata(&path) {
                        Ok(md) if md.file_type().is_file() => found.push((n, path, md.len())),
                        _ => {}
                    }
                }
                found.sort();
                self.index = found.last().map_or(0, |(n, _, _)| n + 1);
                self.closed = found.into_iter().map(|(_, p, l)| (p, l)).collect();
            }
            Naming::Backup(name) => {
                let backup = self.dir.join(format!("{name}.1"));
                if let Ok(md) = std::fs::symlink_metadata(&backup) {
                    if md.file_type().is_file() {
                        self.closed.push_back((backup, md.len()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Buffer one line (a newline is added). Rotates first if the line would not fit.
    pub fn append(&mut self, line: &[u8]) -> Result<(), LogFileError> {
        let len = line.len() + 1;
        if len as u64 > self.file_cap {
            return Err(LogFileError::TooLarge {
                len,
                cap: self.file_cap,
            });
        }
        if self.size + (self.buf.len() + len) as u64 > self.file_cap {
            self.flush_buf()?;
            self.rotate()?;
        }
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        self.buffered += 1;
        if self.buf.len() >= FLUSH_BYTES {
            self.flush_buf()?;
        }
        Ok(())
    }

    /// Write buffered lines. Returns how many lines reached the file since the last call
    /// (also when it fails: lines lost to the error are counted by [`RotatingFile::take_lost`]).
    pub fn flush(&mut self) -> (u64, Result<(), LogFileError>) {
        let res = self.flush_buf();
        (std::mem::take(&mut self.written), res)
    }

    /// Lines dropped by write errors since the last call.
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    fn flush_buf(&mut self) -> Result<(), LogFileError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = self.write_buf();
        let lines = std::mem::take(&mut self.buffered);
        self.buf.clear();
        match res {
            Ok(()) => self.written += lines,
            Err(_) => self.lost += lines,
        }
        res
    }

    fn write_buf(&mut self) -> Result<(), LogFileError> {
        if let Some(f) = &self.file {
            // Deleted (or replaced) behind our back: start a fresh file.
            if f.metadata().map(|m| m.nlink() == 0).unwrap_or(true) {
                self.file = None;
                self.size = 0;
            }
        }
        if self.file.is_none() {
            self.open_current()?;
        }
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        f.write_all(&self.buf).map_err(io_err(&self.path))?;
        self.size += self.buf.len() as u64;
        Ok(())
    }

    fn closed_bytes(&self) -> u64 {
        self.closed.iter().map(|(_, l)| l).sum()
    }

    fn open_current(&mut self) -> Result<(), LogFileError> {
        match self.naming {
            Naming::Numbered(prefix) => {
                // Make room for a full new file first.
                while !self.closed.is_empty() && self.closed_bytes() + self.file_cap > self.total {
                    if let Some((p, _)) = self.closed.pop_front() {
                        match std::fs::remove_file(&p) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io_err(&p)(e)),
                        }
                    }
                }
                loop {
                    let path = self.dir.join(format!("{prefix}{}", self.index));
                    match OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o640)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(&path)
                    {
                        Ok(f) => {
                            self.file = Some(f);
                            self.path = path;
                            self.size = 0;
                            return Ok(());
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.index += 1,
                        Err(e) => return Err(io_err(&path)(e)),
                    }
                }
            }
            Naming::Backup(name) => {
                let path = self.dir.join(name);
                let f = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o640)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(io_err(&path))?;
                let md = f.metadata().map_err(io_err(&path))?;
                if !md.file_type().is_file() {
                    return Err(io_err(&path)(io::Error::other("not a regular file")));
                }
                self.size = md.len();
                self.file = Some(f);
                self.path = path;
                if self.size + self.closed_bytes() > self.total || self.size >= self.file_cap {
                    self.rotate()?;
                    return self.open_current();
                }
                Ok(())
            }
        }
    }

    fn rotate(&mut self) -> Result<(), LogFileError> {
        let Some(f) = self.file.take() else {
            return Ok(());
        };
        drop(f);
        match self.naming {
            Naming::Numbered(_) => {
                self.closed
                    .push_back((std::mem::take(&mut self.path), self.size));
                self.index += 1;
            }
            Naming::Backup(name) => {
                let backup = self.dir.join(format!("{name}.1"));
                std::fs::rename(&self.path, &backup).map_err(io_err(&backup))?;
                self.closed.clear();
                self.closed.push_back((backup, self.size));
            }
        }
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir_bytes(dir: &Path) -> (u64, Vec<String>) {
        let mut names = Vec::new();
        let mut total = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            total += e.metadata().unwrap().len();
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        (total, names)
    }

    #[test]
    fn numbered_files_rotate_and_stay_under_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let mut rf = RotatingFile::open(&dir, Naming::Numbered("gopher_metrics_"), 4000).unwrap();
        let line = [b'x'; 99];
        for i in 0..500 {
            rf.append(&line).unwrap();
            if i % 7 == 0 {
                rf.flush().1.unwrap();
            }
            let (total, _) = dir_bytes(&dir);
            assert!(total <= 4000, "{total} bytes on disk");
        }
        rf.flush().1.unwrap();
        let (total, names) = dir_bytes(&dir);
        assert!(total <= 4000 && total > 3000, "{total}");
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("gopher_metrics_")));
        let md = std::fs::metadata(dir.join(&names[0])).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o640);
        let dmd = std::fs::metadata(&dir).unwrap();
        assert_eq!(dmd.permissions().mode() & 0o777, 0o750);
    }

    #[test]
    fn restart_counts_old_files_and_continues_numbering() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("gopher_event_7"), vec![b'a'; 900]).unwrap();
        std::fs::write(dir.join("gopher_event_3"), vec![b'a'; 900]).unwrap();
        let mut rf = RotatingFile::open(&dir, Naming::Numbered("gopher_event_"), 2000).unwrap();
        rf.append(b"hello").unwrap();
        rf.flush().1.unwrap();
        let (total, names) = dir_bytes(&dir);
        // 900 + 500 (a full new file) must fit in 2000: the oldest (3) went.
        assert_eq!(names, ["gopher_event_7", "gopher_event_8"]);
        assert_eq!(total, 906);
    }

    #[test]
    fn symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let dir = tmp.path().join("meta");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("gopher_meta.log")).unwrap();
        let mut rf = RotatingFile::open(&dir, Naming::Backup("gopher_meta.log"), 1000).unwrap();
        rf.append(b"x").unwrap();
        assert!(rf.flush().1.is_err());
        assert_eq!(rf.take_lost(), 1);
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let link = tmp.path().join("linkdir");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        assert!(matches!(
            RotatingFile::open(&link, Naming::Numbered("gopher_metrics_"), 1000),
            Err(LogFileError::SymlinkDir(_))
        ));
    }

    #[test]
    fn backup_naming_keeps_one_backup() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut rf = RotatingFile::open(&dir, Naming::Backup("gopher_meta.log"), 1000).unwrap();
        for i in 0..100 {
            rf.append(format!("{i:0>19}").as_bytes()).unwrap();
            rf.flush().1.unwrap();
        }
        let (total, names) = dir_bytes(&dir);
        assert_eq!(names, ["gopher_meta.log", "gopher_meta.log.1"]);
        assert!(total <= 1000);
        let last = std::fs::read_to_string(dir.join("gopher_meta.log")).unwrap();
        assert!(last.ends_with("0000000000000000099\n"));
    }

    #[test]
    fn deleted_file_is_recreated() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut rf = RotatingFile::open(&dir, Naming::Backup("gopher_meta.log"), 1000).unwrap();
        rf.append(b"one").unwrap();
        rf.flush().1.unwrap();
        std::fs::remove_file(dir.join("gopher_meta.log")).unwrap();
        rf.append(b"two").unwrap();
        assert_eq!(rf.flush().0, 1);
        assert_eq!(
            std::fs::read_to_string(dir.join("gopher_meta.log")).unwrap(),
            "two\n"
        );
    }

    #[test]
    fn oversized_line_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut rf =
            RotatingFile::open(tmp.path(), Naming::Numbered("gopher_metrics_"), 400).unwrap();
        assert!(matches!(
            rf.append(&[b'x'; 100]),
            Err(LogFileError::TooLarge { .. })
        ));
    }
}
