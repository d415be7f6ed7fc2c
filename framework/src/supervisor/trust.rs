//! The probe file ownership rule: which files the daemon (usually root) may execute, read as a
//! `.meta`, or put on a probe's `PYTHONPATH`.
//!
//! A path is trusted when, resolving it component by component from `/` (following every
//! symlink, as the kernel would):
//! * every directory passed through is owned by root or the daemon's euid and not writable by
//!   group or others — except that a group/world-writable directory with the sticky bit (`/tmp`)
//!   is accepted as an *ancestor* when the entry inside it that the path continues through is
//!   owned by root or the euid (nobody else can rename or delete that entry);
//! * the directory directly holding the final file (or a checked folder itself) is never
//!   writable by group or others, sticky or not;
//! * the final file is a regular file owned by root or the euid and not writable by group or
//!   others.
//!
//! Because symlinks are resolved by the same walk, a symlink is followed only if the directory
//! holding it and everything its target resolves through pass the same checks.
//!
//! Why a walk and not just the file: a file in a directory that others can write can be replaced
//! between the check and the exec. Once every component is writable only by root/euid, nobody
//! else can change what the path names, so checking by path and executing by path later is safe.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::telemetry::RefusalReason;

/// Symlinks followed while resolving one path before giving up (Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: u32 = 40;

pub use crate::config::{valid_probe_name, MAX_PROBE_NAME};

/// A path refused by the ownership rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} refused ({}): {detail}", reason.as_str())]
pub struct Refusal {
    /// Why.
    pub reason: RefusalReason,
    /// The path as given (a drop-in, a `.meta`, a command, a folder).
    pub path: PathBuf,
    /// What exactly failed, naming the offending component.
    pub detail: String,
}

/// Why a path could not be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// It violates the ownership rule.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// It (or a directory on the way) does not exist: a successful observation of absence.
    #[error("{0:?}: not found")]
    NotFound(PathBuf),
    /// Reading a component failed (EIO, EACCES, ELOOP …): nothing is known about the path.
    #[error("{path:?}: {source}")]
    Io {
        /// The component whose status could not be read.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A path that passed the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    /// The resolved path (no symlinks).
    pub resolved: PathBuf,
    /// Device and inode of the final component.
    pub dev_ino: (u64, u64),
    /// Modification time of the final component.
    pub modified: Option<SystemTime>,
    /// Size of the final component.
    pub len: u64,
    /// Whether any execute bit is set.
    pub executable: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
    Other(&'static str),
}

/// `lstat` (plus `readlink` for symlinks) of one path component.
#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    uid: u32,
    mode: u32,
    dev_ino: (u64, u64),
    modified: Option<SystemTime>,
    len: u64,
}

/// How a directory on the walk may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirUse {
    /// Writable only by root/euid.
    Strict,
    /// Writable by others but sticky: only entries owned by root/euid may be passed through.
    Sticky,
}

/// Checks paths against the rule, caching each component's `lstat` so that checking a hundred
/// files in one folder reads `/` and every ancestor once. Make one per scan: the cache never
/// expires.
#[derive(Debug)]
pub struct TrustCheck {
    euid: u32,
    nodes: HashMap<PathBuf, Result<Node, i32>>,
    cwd: Option<PathBuf>,
}

impl Default for TrustCheck {
    fn default() -> Self {
        Self::new()
    }
}

fn kind_name(ft: &std::fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

impl TrustCheck {
    /// A checker trusting root and the daemon's effective uid.
    pub fn new() -> Self {
        Self::for_uid(nix::unistd::geteuid().as_raw())
    }

    /// A checker trusting root and `uid`.
    pub fn for_uid(uid: u32) -> Self {
        TrustCheck {
            euid: uid,
            nodes: HashMap::new(),
            cwd: None,
        }
    }

    /// Number of distinct components read so far (each read once per checker).
    pub fn components_read(&self) -> usize {
        self.nodes.len()
    }

    fn trusted_uid(&self, uid: u32) -> bool {
        uid == 0 || uid == self.euid
    }

    fn node(&mut self, path: &Path) -> Result<Node, TrustError> {
        if !self.nodes.contains_key(path) {
            let read = read_node(path).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
            self.nodes.insert(path.to_path_buf(), read);
        }
        match self.nodes.get(path) {
            Some(Ok(n)) => Ok(n.clone()),
            Some(Err(errno)) if *errno == libc::ENOENT || *errno == libc::ENOTDIR => {
                Err(TrustError::NotFound(path.to_path_buf()))
            }
            Some(Err(errno)) => Err(TrustError::Io {
                path: path.to_path_buf(),
                source: io::Error::from_raw_os_error(*errno),
            }),
            None => Err(TrustError::NotFound(path.to_path_buf())),
        }
    }

    fn dir_use(&self, given: &Path, dir: &Path, n: &Node) -> Result<DirUse, Refusal> {
        if !self.trusted_uid(n.uid) {
            return Err(Refusal {
                reason: RefusalReason::ParentOwner,
                path: given.to_path_buf(),
                detail: format!(
                    "directory {dir:?} is owned by uid {} (must be root or uid {})",
                    n.uid, self.euid
                ),
            });
        }
        if n.mode & 0o022 == 0 {
            Ok(DirUse::Strict)
        } else if n.mode & 0o1000 != 0 {
            Ok(DirUse::Sticky)
        } else {
            Err(Refusal {
                reason: RefusalReason::ParentWritable,
                path: given.to_path_buf(),
                detail: format!(
                    "directory {dir:?} is writable by group or others (mode {:04o})",
                    n.mode & 0o7777
                ),
            })
        }
    }

    /// Check a file that will be executed or read (probe executable, script, `.meta`).
    pub fn check_file(&mut self, path: &Path) -> Result<Trusted, TrustError> {
        self.walk(path, false)
    }

    /// Check a folder whose entries will be trusted (probes folder, SDK folder).
    pub fn check_dir(&mut self, path: &Path) -> Result<Trusted, TrustError> {
        self.walk(path, true)
    }

    fn walk(&mut self, given: &Path, want_dir: bool) -> Result<Trusted, TrustError> {
        let refuse = |reason, detail: String| -> TrustError {
            Refusal {
                reason,
                path: given.to_path_buf(),
                detail,
            }
            .into()
        };
        let start = if given.is_absolute() {
            given.to_path_buf()
        } else {
            if self.cwd.is_none() {
                self.cwd = Some(std::env::current_dir().map_err(|source| TrustError::Io {
                    path: PathBuf::from("."),
                    source,
                })?);
            }
            self.cwd.clone().unwrap_or_default().join(given)
        };
        // Components still to resolve, last one first.
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, &start);
        let mut cur = PathBuf::from("/");
        let root = self.node(&cur)?;
        let mut cur_node = root.clone();
        // A refused directory is reported only once something inside it is looked at, so that
        // an absent optional file stays "not found" wherever it would have been.
        let mut cur_use = self.dir_use(given, &cur, &root);
        let mut hops = 0;
        while let Some(comp) = pending.pop() {
            if comp == ".." {
                cur.pop();
                cur_node = self.node(&cur)?;
                cur_use = self.dir_use(given, &cur, &cur_node);
                continue;
            }
            let next = cur.join(&comp);
            let n = self.node(&next)?;
            let cur_use_ok = cur_use.clone()?;
            if cur_use_ok == DirUse::Sticky && !self.trusted_uid(n.uid) {
                return Err(refuse(
                    RefusalReason::ParentWritable,
                    format!(
                        "directory {cur:?} is writable by others and {next:?} inside it is owned \
                         by uid {}",
                        n.uid
                    ),
                ));
            }
            match &n.kind {
                Kind::Symlink(target) => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(TrustError::Io {
                            path: next,
                            source: io::Error::from_raw_os_error(libc::ELOOP),
                        });
                    }
                    if target.is_absolute() {
                        cur = PathBuf::from("/");
                        cur_node = root.clone();
                        cur_use = self.dir_use(given, &cur, &root);
                    }
                    push_components(&mut pending, target);
                }
                Kind::Dir => {
                    cur_use = self.dir_use(given, &next, &n);
                    cur = next;
                    cur_node = n;
                }
                _ if !pending.is_empty() => {
                    return Err(TrustError::NotFound(next));
                }
                Kind::File if !want_dir => {
                    if cur_use_ok != DirUse::Strict {
                        return Err(refuse(
                            RefusalReason::ParentWritable,
                            format!(
                                "its directory {cur:?} is writable by group or others (mode {:04o})",
                                cur_node.mode & 0o7777
                            ),
                        ));
                    }
                    return self.final_checks(given, &next, &n);
                }
                Kind::File => {
                    return Err(refuse(
                        RefusalReason::NotRegular,
                        format!("{next:?} is not a directory"),
                    ))
                }
                Kind::Other(what) => {
                    return Err(refuse(
                        RefusalReason::NotRegular,
                        format!("{next:?} is {what}"),
                    ))
                }
            }
        }
        // The walk ended on a directory.
        if !want_dir {
            return Err(refuse(
                RefusalReason::NotRegular,
                format!("{cur:?} is a directory"),
            ));
        }
        if cur_use? != DirUse::Strict {
            return Err(refuse(
                RefusalReason::ParentWritable,
                format!(
                    "directory {cur:?} is writable by group or others (mode {:04o})",
                    cur_node.mode & 0o7777
                ),
            ));
        }
        Ok(Trusted {
            resolved: cur,
            dev_ino: cur_node.dev_ino,
            modified: cur_node.modified,
            len: cur_node.len,
            executable: false,
        })
    }

    fn final_checks(&self, given: &Path, path: &Path, n: &Node) -> Result<Trusted, TrustError> {
        if !self.trusted_uid(n.uid) {
            return Err(Refusal {
                reason: RefusalReason::Owner,
                path: given.to_path_buf(),
                detail: format!(
                    "{path:?} is owned by uid {} (must be root or uid {})",
                    n.uid, self.euid
                ),
            }
            .into());
        }
        if n.mode & 0o022 != 0 {
            return Err(Refusal {
                reason: RefusalReason::Writable,
                path: given.to_path_buf(),
                detail: format!(
                    "{path:?} is writable by group or others (mode {:04o})",
                    n.mode & 0o7777
                ),
            }
            .into());
        }
        Ok(Trusted {
            resolved: path.to_path_buf(),
            dev_ino: n.dev_ino,
            modified: n.modified,
            len: n.len,
            executable: n.mode & 0o111 != 0,
        })
    }
}

/// Push the components of `path` onto `pending` so that the first component is popped first.
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    let comps: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    pending.extend(comps.into_iter().rev());
}

fn read_node(path: &Path) -> io::Result<Node> {
    let md = std::fs::symlink_metadata(path)?;
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        Kind::Symlink(std::fs::read_link(path)?)
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Other(kind_name(&ft))
    };
    Ok(Node {
        kind,
        uid: md.uid(),
        mode: md.mode(),
        dev_ino: (md.dev(), md.ino()),
        modified: md.modified().ok(),
        len: md.len(),
    })
}

/// Resolve a bare program name through `PATH` like `execvp` does: the first `dir/name` that is
/// an executable regular file. `None` if there is none (the spawn will then fail and say so).
pub fn which(name: &str) -> Option<PathBuf> {
    let path =
        std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(&path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|md| md.is_file() && md.mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_names_are_printable_and_bounded() {
        for ok in ["a", "tcp", "x_1.2-b", "_p", &"a".repeat(64)] {
            assert!(valid_probe_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a\nb",
            "a\u{1b}[31m",
            "a/b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!valid_probe_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn system_binaries_pass() {
        let mut t = TrustCheck::for_uid(0);
        let sh = t.check_file(Path::new("/bin/sh"));
        assert!(sh.is_ok(), "{sh:?}");
        assert!(matches!(
            t.check_file(Path::new("/nonexistent/x")),
            Err(TrustError::NotFound(_))
        ));
        assert!(t.check_dir(Path::new("/")).is_ok());
    }
}
