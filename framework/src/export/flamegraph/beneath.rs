//! Opening files strictly beneath one directory: the directory is opened once
//! (`O_DIRECTORY | O_NOFOLLOW`) and every file is opened relative to that descriptor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, so neither `..`
//! nor a symbolic link planted anywhere below can lead outside it. Kernels without `openat2`
//! (before 5.6, or a seccomp filter that refuses it) get the same guarantee from a walk that opens
//! one component at a time with `O_NOFOLLOW` (callers pass paths whose components are plain names).
//!
//! Only regular files are opened for reading (checked on the descriptor with `fstat`), and never
//! blocking: a FIFO planted under a profile's name does not hang a thread.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Why a file beneath the directory was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No such file (or directory on the way).
    #[error("no such file")]
    NotFound,
    /// A symbolic link on the way or at the end.
    #[error("a symbolic link (refused)")]
    Symlink,
    /// The path would resolve outside the directory.
    #[error("outside the directory (refused)")]
    Escapes,
    /// Not a regular file (directory, FIFO, socket, device).
    #[error("not a regular file (refused)")]
    NotRegular,
    /// Larger than the caller's bound.
    #[error("{size} bytes, more than {max}")]
    TooLarge {
        /// Size of the file.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// The path is not a plain relative path (callers validate it first).
    #[error("not a plain relative path")]
    BadPath,
    /// Any other failure.
    #[error("{0}")]
    Io(io::Error),
}

impl OpenError {
    fn from_errno(e: io::Error) -> OpenError {
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => OpenError::NotFound,
            Some(libc::ELOOP) => OpenError::Symlink,
            Some(libc::EXDEV) => OpenError::Escapes,
            _ => OpenError::Io(e),
        }
    }
}

/// A directory held open; files are opened beneath it.
#[derive(Debug)]
pub struct Beneath {
    dir: OwnedFd,
}

/// An opened regular file and its size at open time.
#[derive(Debug)]
pub struct Opened {
    /// The file, positioned at its start.
    pub file: File,
    /// Its size as `fstat` saw it (serve at most this many bytes).
    pub size: u64,
}

impl Opened {
    /// Read the whole file, refusing it when it grew past `max` bytes since it was opened.
    pub fn read_all(self, max: u64) -> Result<Vec<u8>, OpenError> {
        let mut buf = Vec::with_capacity(self.size.min(max) as usize);
        self.file
            .take(max + 1)
            .read_to_end(&mut buf)
            .map_err(OpenError::Io)?;
        if buf.len() as u64 > max {
            return Err(OpenError::TooLarge {
                size: buf.len() as u64,
                max,
            });
        }
        Ok(buf)
    }
}

fn cstring(bytes: &[u8]) -> Result<CString, OpenError> {
    CString::new(bytes).map_err(|_| OpenError::BadPath)
}

impl Beneath {
    /// Open `dir` (absolute; its last component must not be a symbolic link).
    pub fn open(dir: &Path) -> Result<Beneath, OpenError> {
        let c = cstring(dir.as_os_str().as_bytes())?;
        // SAFETY: a valid NUL-terminated path; the descriptor is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                // O_NOFOLLOW on a symlink to a directory gives ENOTDIR; on one to a file, ELOOP.
                Some(libc::ELOOP) => OpenError::Symlink,
                _ => OpenError::from_errno(e),
            });
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Beneath {
            dir: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Open the regular file `rel` (relative, components separated by `/`, none empty, `.` or
    /// `..`) for reading, refusing it when larger than `max` bytes.
    pub fn open_file(&self, rel: &str, max: u64) -> Result<Opened, OpenError> {
        if rel.is_empty()
            || rel.starts_with('/')
            || rel.contains('\0')
            || rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(OpenError::BadPath);
        }
        let fd = match self.openat2(rel) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
                self.walk(rel)
            }
            other => other.map_err(OpenError::from_errno),
        }?;
        // SAFETY: a fresh descriptor nobody else owns.
        let file = File::from(fd);
        let md = file.metadata().map_err(OpenError::Io)?;
        if !md.file_type().is_file() {
            return Err(OpenError::NotRegular);
        }
        let size = md.size();
        if size > max {
            return Err(OpenError::TooLarge { size, max });
        }
        // Opened non-blocking so that a FIFO cannot hang the open; reads of a regular file
        // ignore the flag, but clear it anyway for whoever reads the file.
        // SAFETY: fcntl on a descriptor this function owns.
        unsafe {
            let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
        Ok(Opened { file, size })
    }

    /// Read all of the regular file `rel`, at most `max` bytes (a file that grew past `max`
    /// since it was opened is refused too).
    pub fn read_file(&self, rel: &str, max: u64) -> Result<Vec<u8>, OpenError> {
        self.open_file(rel, max)?.read_all(max)
    }

    const FILE_FLAGS: libc::c_int =
        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;

    /// `openat2` with every resolution restriction.
    fn openat2(&self, rel: &str) -> io::Result<OwnedFd> {
        let c = CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: open_how is plain data; all-zero is a valid start.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = Self::FILE_FLAGS as u64;
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid pointers for the duration of the call; size matches the struct.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    }

    /// The fallback without `openat2`: one `openat(O_NOFOLLOW)` per component (directories with
    /// `O_DIRECTORY`), each relative to the previous one. `rel` has plain components only, so
    /// nothing can climb out, and a symbolic link anywhere fails with `ELOOP`/`ENOTDIR`.
    pub(crate) fn walk(&self, rel: &str) -> Result<OwnedFd, OpenError> {
        let parts: Vec<&str> = rel.split('/').collect();
        let mut held: Option<OwnedFd> = None;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let c = cstring(part.as_bytes())?;
            let at = held.as_ref().unwrap_or(&self.dir).as_raw_fd();
            let flags = if last {
                Self::FILE_FLAGS
            } else {
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
            };
            // SAFETY: `at` is an open directory descriptor; `c` is NUL-terminated.
            let fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
            if fd < 0 {
                let e = io::Error::last_os_error();
                // A symlinked directory with O_NOFOLLOW|O_DIRECTORY fails with ENOTDIR: tell it
                // apart from a missing one.
                if !last && e.raw_os_error() == Some(libc::ENOTDIR) && is_symlink_at(at, &c) {
                    return Err(OpenError::Symlink);
                }
                return Err(OpenError::from_errno(e));
            }
            // SAFETY: a fresh descriptor nobody else owns.
            held = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        held.ok_or(OpenError::BadPath)
    }
}

fn is_symlink_at(dir: libc::c_int, name: &CString) -> bool {
    // SAFETY: plain fstatat into a zeroed stat buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFLNK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("flame");
        std::fs::create_dir_all(root.join("oncpu/20261205")).unwrap();
        std::fs::write(root.join("oncpu/20261205/a.svg"), b"<svg/>").unwrap();
        std::fs::write(t.path().join("secret"), b"outside").unwrap();
        t
    }

    #[test]
    fn reads_a_regular_file_beneath() {
        let t = tree();
        let b = Beneath::open(&t.path().join("flame")).unwrap();
        assert_eq!(b.read_file("oncpu/20261205/a.svg", 100).unwrap(), b"<svg/>");
        assert!(matches!(
            b.read_file("oncpu/20261205/missing.svg", 100),
            Err(OpenError::NotFound)
        ));
        assert!(matches!(
            b.read_file("oncpu/20261205/a.svg", 3),
            Err(OpenError::TooLarge { size: 6, max: 3 })
        ));
        // The fallback walk opens the same file.
        let fd = b.walk("oncpu/20261205/a.svg").unwrap();
        let mut s = String::new();
        File::from(fd).read_to_string(&mut s).unwrap();
        assert_eq!(s, "<svg/>");
    }

    #[test]
    fn refuses_traversal_absolute_and_odd_components() {
        let t = tree();
        let b = Beneath::open(&t.path().join("flame")).unwrap();
        for bad in [
            "../secret",
            "oncpu/../../secret",
            "/etc/passwd",
            "",
            "oncpu//20261205/a.svg",
            "./oncpu/20261205/a.svg",
            "oncpu/20261205/a.svg\0x",
        ] {
            let r = b.read_file(bad, 1 << 20);
            assert!(matches!(r, Err(OpenError::BadPath)), "{bad:?}: {r:?}");
        }
    }

    #[test]
    fn refuses_symlinks_anywhere_on_the_path() {
        let t = tree();
        let root = t.path().join("flame");
        // The file itself, to a file outside.
        symlink(t.path().join("secret"), root.join("oncpu/20261205/b.svg")).unwrap();
        // A directory on the way, to a directory outside.
        std::fs::create_dir_all(t.path().join("elsewhere/20261205")).unwrap();
        std::fs::write(t.path().join("elsewhere/20261205/c.svg"), b"outside").unwrap();
        symlink(t.path().join("elsewhere"), root.join("offcpu")).unwrap();
        // A relative link that stays inside is refused as well.
        symlink("a.svg", root.join("oncpu/20261205/d.svg")).unwrap();
        // /etc/passwd itself.
        symlink("/etc/passwd", root.join("oncpu/20261205/e.svg")).unwrap();
        let b = Beneath::open(&root).unwrap();
        for (rel, what) in [
            ("oncpu/20261205/b.svg", "file link"),
            ("offcpu/20261205/c.svg", "directory link"),
            ("oncpu/20261205/d.svg", "inner link"),
            ("oncpu/20261205/e.svg", "/etc/passwd"),
        ] {
            let r = b.read_file(rel, 1 << 20);
            assert!(matches!(r, Err(OpenError::Symlink)), "{what}: {r:?}");
            let w = b.walk(rel);
            assert!(matches!(w, Err(OpenError::Symlink)), "walk {what}: {w:?}");
        }
        // The directory itself must not be a link either.
        symlink(&root, t.path().join("link")).unwrap();
        assert!(matches!(
            Beneath::open(&t.path().join("link")),
            Err(OpenError::Symlink | OpenError::NotFound)
        ));
    }

    #[test]
    fn refuses_what_is_not_a_regular_file_without_blocking() {
        let t = tree();
        let root = t.path().join("flame");
        let fifo = CString::new(
            root.join("oncpu/20261205/f.svg")
                .as_os_str()
                .as_bytes()
                .to_vec(),
        )
        .unwrap();
        // SAFETY: mkfifo on a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::fs::create_dir(root.join("oncpu/20261205/g.svg")).unwrap();
        let b = Beneath::open(&root).unwrap();
        // Would block forever in open(2) without O_NONBLOCK.
        assert!(matches!(
            b.read_file("oncpu/20261205/f.svg", 100),
            Err(OpenError::NotRegular)
        ));
        assert!(matches!(
            b.read_file("oncpu/20261205/g.svg", 100),
            Err(OpenError::NotRegular)
        ));
        assert!(matches!(
            Beneath::open(&root.join("oncpu/20261205/a.svg")),
            Err(OpenError::NotFound)
        ));
    }
}
