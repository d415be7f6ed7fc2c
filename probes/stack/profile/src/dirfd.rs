//! File operations relative to a held directory descriptor, never following a symbolic link:
//! subdirectories are opened `O_DIRECTORY | O_NOFOLLOW`, files are created
//! `O_CREAT | O_EXCL | O_NOFOLLOW` under a temporary name and renamed over the final name (a
//! symlink or hard link planted there is replaced, never written through).

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::layout::temp_name;

/// Mode of the files written (before the umask; then set exactly with `fchmod`).
pub(crate) const FILE_MODE: u32 = 0o640;
/// Mode of the directories created.
pub(crate) const DIR_MODE: u32 = 0o750;

/// Process-wide sequence for temporary names: two writers in one process never collide, and the
/// pid in the name separates processes; `O_EXCL` catches anything else.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Why an operation failed.
#[derive(Debug)]
pub(crate) enum AtError {
    /// A symlink or a non-directory where a directory was expected.
    NotADirectory,
    /// Any other failure: the operation and the error.
    Io(&'static str, io::Error),
}

fn io(op: &'static str) -> impl FnOnce(Errno) -> AtError {
    move |e| AtError::Io(op, io::Error::from(e))
}

/// Opens the existing subdirectory `name` of `parent` without following a symlink.
pub(crate) fn open_dir(parent: impl AsFd, name: &str) -> Result<OwnedFd, AtError> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => AtError::NotADirectory,
        e => AtError::Io("open", io::Error::from(e)),
    })
}

/// Creates the subdirectory `name` of `parent` (mode 0750) unless it exists, then opens it
/// without following a symlink.
pub(crate) fn ensure_dir(parent: impl AsFd, name: &str) -> Result<OwnedFd, AtError> {
    let parent = parent.as_fd();
    match mkdirat(parent, name, Mode::from_bits_truncate(DIR_MODE)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(io("mkdir")(e)),
    }
    open_dir(parent, name)
}

/// Writes `body` to `dir/name` atomically: a new temporary file (mode 0640), then a rename over
/// `name`. On failure the temporary file is removed and `name` is unchanged.
pub(crate) fn write_atomic(dir: impl AsFd, name: &str, body: &[u8]) -> Result<(), AtError> {
    let dir = dir.as_fd();
    let mut attempt = 0;
    let (tmp, fd) = loop {
        let tmp = temp_name(name, TEMP_SEQ.fetch_add(1, Ordering::Relaxed));
        match openat(
            dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(FILE_MODE),
        ) {
            Ok(fd) => break (tmp, fd),
            Err(Errno::EEXIST) if attempt < 8 => attempt += 1,
            Err(e) => return Err(io("create")(e)),
        }
    };
    let written = fchmod(&fd, Mode::from_bits_truncate(FILE_MODE))
        .map_err(io("chmod"))
        .and_then(|()| {
            File::from(fd)
                .write_all(body)
                .map_err(|e| AtError::Io("write", e))
        })
        .and_then(|()| renameat(dir, tmp.as_str(), dir, name).map_err(io("rename")));
    if written.is_err() {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    written
}

/// Removes the file `dir/name`; `Ok(false)` when it was already gone.
pub(crate) fn remove_file(dir: impl AsFd, name: &str) -> Result<bool, AtError> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(io("unlink")(e)),
    }
}

/// Removes the directory `dir/name` if it is empty (any failure is ignored).
pub(crate) fn remove_empty_dir(dir: impl AsFd, name: &str) {
    let _ = unlinkat(dir, name, UnlinkatFlags::RemoveDir);
}

/// Size and modification time of the regular file `dir/name` (`None`: not a regular file or
/// not there). Symlinks are not followed.
pub(crate) fn regular_file(dir: impl AsFd, name: &str) -> Option<(u64, SystemTime)> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return None;
    }
    let mtime = UNIX_EPOCH + Duration::from_secs(u64::try_from(st.st_mtime).unwrap_or(0));
    Some((u64::try_from(st.st_size).unwrap_or(0), mtime))
}

/// Reads the regular file `dir/name` if it is at most `max` bytes (`None` otherwise). Opened
/// non-blocking so a FIFO planted there cannot hang the caller.
pub(crate) fn read_small(dir: impl AsFd, name: &str, max: u64) -> Option<Vec<u8>> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = fstat(&fd).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG
        || u64::try_from(st.st_size).ok()? > max
    {
        return None;
    }
    let mut body = Vec::new();
    File::from(fd).take(max + 1).read_to_end(&mut body).ok()?;
    (body.len() as u64 <= max).then_some(body)
}

/// The names in `dir` (not `.`/`..`; non-UTF-8 names skipped), visiting at most `*budget`
/// entries; the budget is decreased per entry visited. The listing goes through
/// `/proc/self/fd/<fd>`, which names the held directory itself, not a path resolved again.
pub(crate) fn list(dir: impl AsFd, budget: &mut usize) -> Vec<String> {
    let path = format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd());
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for entry in entries {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        if let Some(name) = entry.ok().and_then(|e| e.file_name().into_string().ok()) {
            names.push(name);
        }
    }
    names
}
