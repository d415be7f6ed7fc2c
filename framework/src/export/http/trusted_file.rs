//! Reading the files the HTTP servers trust: TLS private keys, certificate chains, CA bundles and
//! the REST token file.
//!
//! Each must be a regular file of bounded size owned by root or the daemon's effective user (the
//! rule of `supervisor::trust` for probe files), and writable by nobody else: whoever can replace
//! a CA bundle decides which clients get in. A secret (key, token) must moreover be inaccessible
//! to group and others (mode `0600` or `0400`). Everything is checked with `fstat` on the opened
//! descriptor, so what is checked is what is read; symbolic links are followed (certificate
//! managers link to their current files).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest key, certificate chain or CA bundle read: 1 MiB.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// What a file holds, which decides who else may access it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A secret (private key, token): only its owner may have any access.
    Secret,
    /// Public data that decides trust (certificate, CA bundle): only its owner may write it.
    Public,
}

/// Why a trusted file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It could not be opened or read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// It is a directory, FIFO, device or socket.
    #[error("{} is a {kind}, not a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// It is larger than allowed.
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// It belongs to another user.
    #[error("{} is owned by uid {uid} (must be root or uid {euid}, the daemon's user)", path.display())]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// The daemon's effective uid.
        euid: u32,
    },
    /// A secret that group or others may access.
    #[error(
        "{} is accessible by group or others (mode {mode:04o}); it holds a secret: \
         chmod 600 it",
        path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A public file that group or others may change.
    #[error("{} is writable by group or others (mode {mode:04o})", path.display())]
    Writable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Read at most `limit` bytes of `path` after checking type, owner and mode (see the module doc).
pub fn read(path: &Path, access: Access, limit: u64) -> Result<Vec<u8>, FileError> {
    read_as(path, access, limit, nix::unistd::geteuid().as_raw())
}

fn read_as(path: &Path, access: Access, limit: u64, euid: u32) -> Result<Vec<u8>, FileError> {
    let io_err = |source| FileError::Read {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: a FIFO without writer must not block the start; O_NOCTTY: a terminal must
    // not become the controlling one.
    let mut file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    check(path, &meta, access, limit, euid)?;
    let mut buf = Vec::with_capacity(usize::try_from(meta.len().min(limit)).unwrap_or(0) + 1);
    (&mut file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(buf)
}

fn check(
    path: &Path,
    meta: &std::fs::Metadata,
    access: Access,
    limit: u64,
    euid: u32,
) -> Result<(), FileError> {
    let path = path.to_path_buf();
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "directory"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_char_device() || ft.is_block_device() {
            "device"
        } else if ft.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(FileError::NotRegular { path, kind });
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge { path, limit });
    }
    let uid = meta.uid();
    if uid != 0 && uid != euid {
        return Err(FileError::Owner { path, uid, euid });
    }
    let mode = meta.mode() & 0o7777;
    match access {
        Access::Secret if mode & 0o077 != 0 => Err(FileError::Exposed { path, mode }),
        Access::Public if mode & 0o022 != 0 => Err(FileError::Writable { path, mode }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"data").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn secrets_must_be_private_and_public_files_unwritable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let private = file(dir.path(), "k", 0o600);
        assert_eq!(read_as(&private, Access::Secret, 10, me).unwrap(), b"data");
        let readable = file(dir.path(), "r", 0o640);
        let e = read_as(&readable, Access::Secret, 10, me).unwrap_err();
        assert!(matches!(e, FileError::Exposed { mode: 0o640, .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert_eq!(read_as(&readable, Access::Public, 10, me).unwrap(), b"data");
        let writable = file(dir.path(), "w", 0o666);
        assert!(matches!(
            read_as(&writable, Access::Public, 10, me),
            Err(FileError::Writable { .. })
        ));
    }

    #[test]
    fn refuses_other_owners_large_files_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let f = file(dir.path(), "k", 0o600);
        // Root may hand the file to another user; anyone else checks as another daemon user.
        let euid = if me == 0 {
            std::os::unix::fs::chown(&f, Some(12345), None).unwrap();
            0
        } else {
            me + 1
        };
        let e = read_as(&f, Access::Secret, 10, euid).unwrap_err();
        assert!(matches!(e, FileError::Owner { .. }), "{e}");
        let euid = if me == 0 { 12345 } else { me };
        assert!(matches!(
            read_as(&f, Access::Secret, 3, euid),
            Err(FileError::TooLarge { limit: 3, .. })
        ));
        assert!(matches!(
            read_as(dir.path(), Access::Public, 10, me),
            Err(FileError::NotRegular {
                kind: "directory",
                ..
            })
        ));
        let e = read_as(&dir.path().join("missing"), Access::Public, 10, me).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
