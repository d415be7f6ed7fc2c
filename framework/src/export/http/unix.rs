//! The command socket (`global.cmd_socket`): the daemon's HTTP routes as plain HTTP/1.1 over a
//! Unix socket, for `gopher-ctl`. Filesystem permissions are the authentication: the socket is
//! mode 0660, owned by the daemon's uid and gid, in a directory only root or the daemon can
//! change, so no bearer token is asked for.
//!
//! Connections get the same connection cap, header/idle/request time limits and accept back-off
//! as the TCP servers (the accept loop of [`super::server`]).
//!
//! Setting the socket up ([`bind_unix`]):
//! * the directory holding it is created (mode 0750) when missing; an existing one must be a
//!   real directory (not a symlink) that passes the ownership rule of [`crate::supervisor::trust`]
//!   (itself and every directory above it owned by root or the daemon, not writable by group or
//!   others);
//! * an existing socket file is removed when nothing answers on it (a crashed daemon's leftover);
//!   a live one, a symlink, a regular file or anything else at the path is an error, never
//!   removed or followed;
//! * the socket is bound with mode 0660 already set on it, so the file never exists with a
//!   looser mode, then set to exactly 0660 whatever the umask.
//!
//! The socket file is removed when the server stops, if it is still the one bound.

use std::fs;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::sys::stat::Mode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::server::{accept_loop, refusal, Conn, HttpLimits, Listen};
use crate::supervisor::trust::{TrustCheck, TrustError};
use crate::telemetry::HttpCounters;

/// Default path of the command socket (`global.cmd_socket`).
pub const DEFAULT_CMD_SOCKET: &str = "/run/gala_gopher/gala_gopher_cmd.sock";

/// `server` label (and log prefix) of the command socket's counters.
pub const CMD_SOCKET: &str = "cmd_socket";

/// Mode of the socket file: the daemon's user and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// Mode of the socket's directory when the daemon creates it.
pub const SOCKET_DIR_MODE: u32 = 0o750;

/// Longest socket path in bytes (`sun_path` holds 108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Connection backlog of the socket.
const BACKLOG: i32 = 128;

/// Limits of the command socket: a local administrator's tool, few connections; a request may
/// take as long as `gopher-ctl`'s default timeout (60 s, upstream's).
pub const CMD_SOCKET_LIMITS: HttpLimits = HttpLimits {
    max_connections: 64,
    header_read_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(60),
    request_timeout: Duration::from_secs(60),
};

/// Why the command socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UnixServeError {
    /// The path is relative or has no file name.
    #[error("command socket {0:?}: the path must be absolute and name a file")]
    BadPath(PathBuf),
    /// The path does not fit in a Unix socket address.
    #[error("command socket {0:?}: longer than {MAX_SOCKET_PATH} bytes (the limit of a Unix socket address)")]
    TooLong(PathBuf),
    /// The directory holding the socket is not safe to use.
    #[error("command socket directory {path:?}: {detail}")]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Something that is not a socket is at the path: left alone.
    #[error("command socket {path:?}: {what} is in the way (not removed)")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
        /// What is there ("a regular file", "a symlink" …).
        what: &'static str,
    },
    /// Another process answers on the socket (another daemon is running).
    #[error("command socket {0:?}: another process is serving it")]
    InUse(PathBuf),
    /// Not called from within a Tokio runtime.
    #[error("command socket {0:?}: must be set up from within a Tokio runtime")]
    NoRuntime(PathBuf),
    /// A system call failed.
    #[error("command socket {path:?}: {op}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> UnixServeError {
    let path = path.to_path_buf();
    move |source| UnixServeError::Io { path, op, source }
}

fn errno_err(path: &Path, op: &'static str) -> impl FnOnce(Errno) -> UnixServeError {
    let path = path.to_path_buf();
    move |e| UnixServeError::Io {
        path,
        op,
        source: io::Error::from(e),
    }
}

/// The socket file this process bound; removed (if still the same file) on [`remove`](Self::remove)
/// or drop.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev_ino: (u64, u64),
}

impl SocketFile {
    fn remove(&self) {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_socket() && (m.dev(), m.ino()) == self.dev_ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!("{CMD_SOCKET}: removing {:?}: {e}", self.path);
                }
            }
            // Gone already, or replaced by someone else's: not ours to remove.
            _ => {}
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A bound, listening command socket, ready to [`serve`](Self::serve).
#[derive(Debug)]
pub struct UnixSocketListener {
    listener: tokio::net::UnixListener,
    file: SocketFile,
}

impl UnixSocketListener {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Serve `router` until `shutdown` resolves; then the socket file is removed at once (new
    /// clients see "not running") and open connections may finish their current request (the
    /// caller bounds how long it waits; dropping this future also removes the file).
    pub async fn serve(
        self,
        router: Router,
        limits: HttpLimits,
        counters: Arc<HttpCounters>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let UnixSocketListener { listener, file } = self;
        let file = &file;
        let shutdown = async move {
            shutdown.await;
            file.remove();
        };
        accept_loop(Unix(listener), router, limits, counters, shutdown).await;
    }
}

/// [`bind_unix`], then [`UnixSocketListener::serve`] on a new task. Errors in setting the
/// socket up are returned before anything is spawned.
pub fn serve_unix(
    router: Router,
    path: &Path,
    limits: HttpLimits,
    counters: Arc<HttpCounters>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>, UnixServeError> {
    let listener = bind_unix(path)?;
    Ok(tokio::spawn(
        listener.serve(router, limits, counters, shutdown),
    ))
}

/// Set up the command socket at `path` (see the module documentation). Must be called from
/// within a Tokio runtime.
pub fn bind_unix(path: &Path) -> Result<UnixSocketListener, UnixServeError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(UnixServeError::NoRuntime(path.to_path_buf()));
    }
    let dir = check_socket_path(path)?;
    prepare_dir(dir)?;
    remove_stale(path)?;

    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(errno_err(path, "socket"))?;
    // Linux creates the file with the socket inode's mode (less the umask): set before bind,
    // the file is never connectable by others, not even for a moment.
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(SOCKET_MODE))
        .map_err(errno_err(path, "fchmod"))?;
    let addr = UnixAddr::new(path).map_err(errno_err(path, "socket address"))?;
    match socket::bind(fd.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(Errno::EADDRINUSE) => return Err(UnixServeError::InUse(path.to_path_buf())),
        Err(e) => return Err(errno_err(path, "bind")(e)),
    }
    let meta = fs::symlink_metadata(path).map_err(io_err(path, "stat"))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev_ino: (meta.dev(), meta.ino()),
    };
    // From here on, a failure removes the file again (drop of `file`).
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io_err(path, "chmod"))?;
    let backlog = Backlog::new(BACKLOG).map_err(errno_err(path, "listen"))?;
    socket::listen(&fd, backlog).map_err(errno_err(path, "listen"))?;
    let std_listener = std::os::unix::net::UnixListener::from(fd);
    let listener =
        tokio::net::UnixListener::from_std(std_listener).map_err(io_err(path, "register"))?;
    Ok(UnixSocketListener { listener, file })
}

/// Check the form of a socket path (absolute, names a file, fits a socket address) without
/// touching the filesystem (for `--check-config`); returns its directory.
pub fn check_socket_path(path: &Path) -> Result<&Path, UnixServeError> {
    let dir = match (path.parent(), path.file_name()) {
        (Some(dir), Some(_)) if path.is_absolute() => dir,
        _ => return Err(UnixServeError::BadPath(path.to_path_buf())),
    };
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(UnixServeError::TooLong(path.to_path_buf()));
    }
    Ok(dir)
}

/// Create the socket's directory when missing; refuse one that is not safe.
fn prepare_dir(dir: &Path) -> Result<(), UnixServeError> {
    let unsafe_dir = |detail: String| UnixServeError::UnsafeDir {
        path: dir.to_path_buf(),
        detail,
    };
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(unsafe_dir("is a symlink".into()));
        }
        Ok(m) if !m.is_dir() => return Err(unsafe_dir("is not a directory".into())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(SOCKET_DIR_MODE)
                .create(dir)
                .map_err(io_err(dir, "creating the directory"))?;
            // The umask may have taken bits away; the mode is exactly 0750.
            fs::set_permissions(dir, fs::Permissions::from_mode(SOCKET_DIR_MODE))
                .map_err(io_err(dir, "chmod"))?;
            // Checked like an existing one: it could have been made by someone else meanwhile.
            if fs::symlink_metadata(dir)
                .map_err(io_err(dir, "stat"))?
                .file_type()
                .is_symlink()
            {
                return Err(unsafe_dir("is a symlink".into()));
            }
        }
        Err(e) => return Err(io_err(dir, "stat")(e)),
    }
    match TrustCheck::new().check_dir(dir) {
        Ok(_) => Ok(()),
        Err(TrustError::Refused(r)) => Err(unsafe_dir(r.detail)),
        Err(TrustError::NotFound(p)) => Err(unsafe_dir(format!("{p:?} not found"))),
        Err(TrustError::Io { path, source }) => Err(UnixServeError::Io {
            path,
            op: "checking the directory",
            source,
        }),
    }
}

/// Remove a dead socket at `path`; refuse anything else there.
fn remove_stale(path: &Path) -> Result<(), UnixServeError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, "stat")(e)),
    };
    let ft = meta.file_type();
    if !ft.is_socket() {
        let what = if ft.is_symlink() {
            "a symlink"
        } else if ft.is_file() {
            "a regular file"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        return Err(UnixServeError::NotASocket {
            path: path.to_path_buf(),
            what,
        });
    }
    // Non-blocking, so that a live server with a full backlog answers EAGAIN instead of
    // keeping us waiting.
    let probe = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(errno_err(path, "socket"))?;
    let addr = UnixAddr::new(path).map_err(errno_err(path, "socket address"))?;
    match socket::connect(probe.as_raw_fd(), &addr) {
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => {
            Err(UnixServeError::InUse(path.to_path_buf()))
        }
        Err(Errno::ECONNREFUSED) => {
            tracing::info!("{CMD_SOCKET}: removing the stale socket {path:?}");
            match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(path, "removing the stale socket")(e)),
            }
        }
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno_err(path, "probing the existing socket")(e)),
    }
}

/// The accept side of a Unix socket for [`accept_loop`].
struct Unix(tokio::net::UnixListener);

impl Listen for Unix {
    type Stream = tokio::net::UnixStream;

    async fn accept(&self) -> io::Result<tokio::net::UnixStream> {
        self.0.accept().await.map(|(s, _)| s)
    }

    fn refuse(&self, stream: tokio::net::UnixStream) {
        let _ = stream.try_write(refusal().as_bytes());
    }

    fn serve(
        &self,
        stream: tokio::net::UnixStream,
        conn: Conn,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        conn.serve_plain(stream, stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn the_config_default_is_the_default_socket() {
        assert_eq!(
            crate::config::Global::default().cmd_socket,
            DEFAULT_CMD_SOCKET
        );
        assert!(check_socket_path(Path::new(DEFAULT_CMD_SOCKET)).is_ok());
    }

    #[test]
    fn refuses_relative_long_and_runtime_less_paths() {
        assert!(matches!(
            bind_unix(Path::new("/tmp/x.sock")),
            Err(UnixServeError::NoRuntime(_))
        ));
        let rt = runtime();
        let _g = rt.enter();
        assert!(matches!(
            bind_unix(Path::new("x.sock")),
            Err(UnixServeError::BadPath(_))
        ));
        assert!(matches!(
            bind_unix(Path::new("/")),
            Err(UnixServeError::BadPath(_))
        ));
        let long = format!("/tmp/{}", "a".repeat(MAX_SOCKET_PATH));
        assert!(matches!(
            bind_unix(Path::new(&long)),
            Err(UnixServeError::TooLong(_))
        ));
    }

    #[test]
    fn creates_the_directory_and_refuses_unsafe_ones() {
        let rt = runtime();
        let _g = rt.enter();
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("run/gg/cmd.sock");
        let l = bind_unix(&sock).unwrap();
        let dir_mode = fs::metadata(tmp.path().join("run/gg")).unwrap().mode() & 0o7777;
        assert_eq!(dir_mode, SOCKET_DIR_MODE);
        let mode = fs::symlink_metadata(&sock).unwrap().mode() & 0o7777;
        assert_eq!(mode, SOCKET_MODE);
        drop(l);
        assert!(
            !sock.exists(),
            "the socket file is removed with the listener"
        );

        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = bind_unix(&open.join("s.sock")).unwrap_err();
        assert!(
            matches!(e, UnixServeError::UnsafeDir { .. }),
            "{e}: a world-writable directory"
        );

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("run/gg"), &link).unwrap();
        let e = bind_unix(&link.join("s.sock")).unwrap_err();
        assert!(matches!(e, UnixServeError::UnsafeDir { .. }), "{e}");

        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let e = bind_unix(&file.join("s.sock")).unwrap_err();
        assert!(matches!(e, UnixServeError::UnsafeDir { .. }), "{e}");
    }

    #[test]
    fn a_live_socket_is_in_use_and_symlinks_are_left_alone() {
        let rt = runtime();
        let _g = rt.enter();
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("cmd.sock");
        let first = bind_unix(&sock).unwrap();
        let e = bind_unix(&sock).unwrap_err();
        assert!(matches!(e, UnixServeError::InUse(_)), "{e}");
        assert!(sock.exists(), "a live socket is not removed");
        drop(first);

        let target = tmp.path().join("target");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, &sock).unwrap();
        let e = bind_unix(&sock).unwrap_err();
        assert!(
            matches!(
                e,
                UnixServeError::NotASocket {
                    what: "a symlink",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&sock)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_replaced_socket_file_is_not_removed() {
        let rt = runtime();
        let _g = rt.enter();
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("cmd.sock");
        let l = bind_unix(&sock).unwrap();
        fs::remove_file(&sock).unwrap();
        let other = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(l);
        assert!(sock.exists(), "another process's socket stays");
        drop(other);
    }
}
