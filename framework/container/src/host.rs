//! The host root: where the host's `/` is seen from this process.
//!
//! On a host install it is `/` and every path is used as is. In a container that mounts the
//! host's root at `/host` (`-v /:/host:ro`, like node_exporter's `--path.rootfs`), it is `/host`:
//! every read of a host file — `/proc`, `/sys`, `/etc/machine-id`, the container runtimes'
//! sockets — goes through [`path`], which puts the prefix in front.
//!
//! The root is set once per process: the daemon calls [`set_root`] from `global.host_root`
//! (upstream's `GOPHER_HOST_PATH` environment variable when the key is empty) and exports
//! `GOPHER_HOST_PATH` to its probes, which read it with [`root`] on first use.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable upstream's container image uses for the host root.
pub const ENV: &str = "GOPHER_HOST_PATH";

static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Why a host root was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRootError {
    /// Not an absolute path.
    #[error("host root {0:?} is not an absolute path")]
    NotAbsolute(String),
    /// A `..` component (the prefix must name one directory, not climb out of one).
    #[error("host root {0:?} contains '..'")]
    DotDot(String),
    /// The root was already set (to another value) in this process.
    #[error("host root already set to {0:?}")]
    AlreadySet(PathBuf),
}

/// Check a host root: empty means `/`; otherwise an absolute path without `..`.
pub fn parse(value: &str) -> Result<PathBuf, HostRootError> {
    if value.is_empty() {
        return Ok(PathBuf::from("/"));
    }
    let p = Path::new(value);
    if !p.is_absolute() {
        return Err(HostRootError::NotAbsolute(value.to_string()));
    }
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(HostRootError::DotDot(value.to_string()));
    }
    Ok(p.components().collect())
}

/// Set this process's host root (once; setting the same value again is fine).
pub fn set_root(root: PathBuf) -> Result<(), HostRootError> {
    let now = ROOT.get_or_init(|| root.clone());
    if *now == root {
        Ok(())
    } else {
        Err(HostRootError::AlreadySet(now.clone()))
    }
}

/// This process's host root: the one set by [`set_root`], else `GOPHER_HOST_PATH` (ignored with
/// a message on stderr when invalid), else `/`.
pub fn root() -> &'static Path {
    ROOT.get_or_init(|| match std::env::var(ENV) {
        Ok(v) => parse(&v).unwrap_or_else(|e| {
            eprintln!("[WARN] {ENV} ignored: {e}");
            PathBuf::from("/")
        }),
        Err(_) => PathBuf::from("/"),
    })
}

/// Whether the host root is `/` (paths are used unchanged).
pub fn is_identity() -> bool {
    root() == Path::new("/")
}

/// `host_path` as seen from this process: `/proc/1/cgroup` → `/host/proc/1/cgroup` when the
/// host root is `/host`; unchanged when it is `/`.
pub fn path(host_path: impl AsRef<Path>) -> PathBuf {
    join(root(), host_path.as_ref())
}

/// `host_path` under `root` (the pure form of [`path`]).
pub fn join(root: &Path, host_path: &Path) -> PathBuf {
    if root == Path::new("/") {
        return host_path.to_path_buf();
    }
    let rel = host_path.strip_prefix("/").unwrap_or(host_path);
    root.join(rel)
}

/// Undoes the `\ooo` octal escapes the kernel writes in `/proc/*/mountinfo` and `/proc/mounts`
/// (`\040` space, `\011` tab, `\012` newline, `\134` backslash). A backslash not followed by three
/// octal digits of a byte value stays as it is; invalid UTF-8 is replaced.
pub fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0');
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape_octal(r"/mnt/my\040cg\134x\011y"),
            "/mnt/my cg\\x\ty"
        );
        assert_eq!(unescape_octal(r"plain"), "plain");
        assert_eq!(unescape_octal(r"end\04"), r"end\04");
        assert_eq!(unescape_octal(r"a\9b"), r"a\9b");
        assert_eq!(unescape_octal(r"\777"), r"\777", "not a byte value: kept");
    }

    #[test]
    fn parse_accepts_absolute_and_refuses_relative_or_dotdot() {
        assert_eq!(parse("").unwrap(), PathBuf::from("/"));
        assert_eq!(parse("/host/").unwrap(), PathBuf::from("/host"));
        assert_eq!(parse("/").unwrap(), PathBuf::from("/"));
        assert!(matches!(parse("host"), Err(HostRootError::NotAbsolute(_))));
        assert!(matches!(parse("/a/../b"), Err(HostRootError::DotDot(_))));
    }

    #[test]
    fn join_prefixes_only_a_real_root() {
        assert_eq!(
            join(Path::new("/"), Path::new("/proc/1/cgroup")),
            PathBuf::from("/proc/1/cgroup")
        );
        assert_eq!(
            join(Path::new("/host"), Path::new("/proc/1/cgroup")),
            PathBuf::from("/host/proc/1/cgroup")
        );
        assert_eq!(
            join(Path::new("/host"), Path::new("sys/fs")),
            PathBuf::from("/host/sys/fs")
        );
    }
}
