//! Finding the JVMs: every process's `/tmp/hsperfdata_<user>/<nspid>`, seen through
//! `/proc/<pid>/root` (so JVMs in containers and in services with a private `/tmp` are found
//! too), and opening those files safely.
//!
//! Processes are grouped by mount namespace; each group's `/tmp` is listed once. A file named
//! `N` belongs to the process of the group whose pid in its own pid namespace (the last `NSpid`
//! of `/proc/<pid>/status`) is `N`. Every path component under the process root is opened
//! with `O_NOFOLLOW` relative to its parent's descriptor, so a symlink planted in `/tmp` is
//! never followed; the file must be a regular file owned by the process's effective uid (and
//! so must its directory), of at most [`MAX_FILE`] bytes.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use probe_sdk::decl::Snoop;

/// Largest performance-data file read (HotSpot's default is 32 KiB, `-XX:PerfDataMemorySize`).
pub const MAX_FILE: u64 = 8 * 1024 * 1024;
/// Most `/proc` entries looked at per cycle.
pub const MAX_PROCS: usize = 262_144;
/// Most `hsperfdata_*` directories per `/tmp`, and files per directory, looked at.
pub const MAX_DIR_ENTRIES: usize = 4096;
/// Bound of the `/proc/<pid>/status` and `/proc/<pid>/stat` reads.
const MAX_PROC_FILE: u64 = 64 * 1024;

/// Why a JVM's file was not read.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not a regular file (a symlink, a FIFO, a directory...).
    #[error("not a regular file")]
    NotRegular,
    /// Owned by another uid than the process runs as.
    #[error("owned by uid {file}, the process runs as uid {process}")]
    Owner {
        /// The file's (or its directory's) owner.
        file: u32,
        /// The process's effective uid.
        process: u32,
    },
    /// Longer than [`MAX_FILE`].
    #[error("larger than {MAX_FILE} bytes")]
    TooLarge,
    /// The open or read failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A JVM's performance-data file found in a cycle.
#[derive(Debug)]
pub struct Candidate {
    /// The process, as the probe's `/proc` numbers it.
    pub pid: u32,
    /// Its pid in its own pid namespace (the file name).
    pub nspid: u32,
    /// Its effective uid.
    pub euid: u32,
    /// The `hsperfdata_<user>` directory, opened without following symlinks.
    dir: std::sync::Arc<OwnedFd>,
    /// Owner of that directory.
    dir_uid: u32,
}

/// What one discovery pass saw.
#[derive(Debug, Default)]
pub struct Scan {
    /// The JVMs found, by pid.
    pub candidates: Vec<Candidate>,
    /// `/proc` entries left unread because [`MAX_PROCS`] were read.
    pub procs_over_cap: u64,
}

/// Opens `name` in `dir` (or the absolute `name` when `dir` is None) without following a
/// symlink in its last component.
fn open_at(dir: Option<&OwnedFd>, name: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(name.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `dirfd` is a descriptor
    // we own (or AT_FDCWD); the result is checked before it is wrapped.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

/// Names in the directory open as `dir`, at most [`MAX_DIR_ENTRIES`].
fn list(dir: &OwnedFd) -> io::Result<Vec<std::ffi::OsString>> {
    // /proc/self/fd/N names the open directory itself: no path is resolved again.
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    Ok(std::fs::read_dir(path)?
        .take(MAX_DIR_ENTRIES)
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect())
}

/// Owner of an open file.
fn owner(fd: &OwnedFd) -> io::Result<u32> {
    let file = File::from(fd.try_clone()?);
    Ok(file.metadata()?.uid())
}

/// A small text file (`/proc/<pid>/status`, `stat`), at most 64 KiB (`None` if unreadable).
pub fn read_small(path: &Path) -> Option<String> {
    let mut s = String::new();
    File::open(path)
        .ok()?
        .take(MAX_PROC_FILE)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// Effective uid and innermost pid of a `/proc/<pid>/status` text.
pub fn parse_status(status: &str) -> (Option<u32>, Option<u32>) {
    let mut euid = None;
    let mut nspid = None;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("Uid:") {
            euid = v.split_whitespace().nth(1).and_then(|u| u.parse().ok());
        } else if let Some(v) = line.strip_prefix("NSpid:") {
            nspid = v.split_whitespace().last().and_then(|p| p.parse().ok());
        }
    }
    (euid, nspid)
}

/// Finds the JVM files of the processes `snoop` selects under the `/proc` at `proc`.
pub fn scan(proc: &Path, snoop: &Snoop) -> Scan {
    let mut out = Scan::default();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return out;
    };
    // Mount namespace (device, inode) → its processes.
    let mut groups: HashMap<(u64, u64), Vec<u32>> = HashMap::new();
    let mut seen = 0usize;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        seen += 1;
        if seen > MAX_PROCS {
            out.procs_over_cap += 1;
            continue;
        }
        if !snoop.selects(pid) {
            continue;
        }
        let Ok(ns) = std::fs::metadata(proc.join(format!("{pid}/ns/mnt"))) else {
            continue;
        };
        groups.entry((ns.dev(), ns.ino())).or_default().push(pid);
    }
    for pids in groups.values_mut() {
        pids.sort_unstable();
        scan_group(proc, pids, &mut out.candidates);
    }
    out.candidates.sort_by_key(|c| c.pid);
    out
}

/// The JVM files in the `/tmp` of one mount namespace.
fn scan_group(proc: &Path, pids: &[u32], out: &mut Vec<Candidate>) {
    // Any member's root is the namespace's root; the first that opens does.
    let Some(tmp) = pids.iter().find_map(|pid| {
        let root = open_at(
            None,
            &proc.join(format!("{pid}/root")),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .ok()?;
        open_at(Some(&root), Path::new("tmp"), DIR_FLAGS).ok()
    }) else {
        return;
    };
    let Ok(names) = list(&tmp) else { return };
    // nspid → pid of this group, read only when a file's name is not a member's own pid.
    let mut by_nspid: Option<HashMap<u32, (u32, u32)>> = None;
    for name in names {
        if !name.as_bytes().starts_with(b"hsperfdata_") {
            continue;
        }
        let Ok(dir) = open_at(Some(&tmp), Path::new(&name), DIR_FLAGS) else {
            continue;
        };
        let Ok(dir_uid) = owner(&dir) else { continue };
        let Ok(files) = list(&dir) else { continue };
        let dir = std::sync::Arc::new(dir);
        for f in files {
            let Some(nspid) = f.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let direct = pids
                .binary_search(&nspid)
                .ok()
                .and_then(|_| read_small(&proc.join(format!("{nspid}/status"))))
                .map(|s| parse_status(&s))
                .and_then(|st| match st {
                    (Some(euid), Some(n)) if n == nspid => Some((nspid, euid)),
                    _ => None,
                });
            let found = direct.or_else(|| {
                by_nspid
                    .get_or_insert_with(|| {
                        pids.iter()
                            .filter_map(|&pid| {
                                let st = read_small(&proc.join(format!("{pid}/status")))?;
                                match parse_status(&st) {
                                    (Some(euid), Some(n)) => Some((n, (pid, euid))),
                                    _ => None,
                                }
                            })
                            .collect()
                    })
                    .get(&nspid)
                    .copied()
            });
            if let Some((pid, euid)) = found {
                out.push(Candidate {
                    pid,
                    nspid,
                    euid,
                    dir: std::sync::Arc::clone(&dir),
                    dir_uid,
                });
            }
        }
    }
}

impl Candidate {
    /// Reads the file (at most [`MAX_FILE`] bytes) into `buf`, after the owner checks.
    pub fn read(&self, buf: &mut Vec<u8>) -> Result<(), OpenError> {
        buf.clear();
        let fd = open_at(
            Some(&self.dir),
            &PathBuf::from(self.nspid.to_string()),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        )
        .map_err(|e| {
            // O_NOFOLLOW on a symlink fails with ELOOP.
            if e.raw_os_error() == Some(libc::ELOOP) {
                OpenError::NotRegular
            } else {
                OpenError::Io(e)
            }
        })?;
        let mut file = File::from(fd);
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(OpenError::NotRegular);
        }
        for uid in [meta.uid(), self.dir_uid] {
            if uid != self.euid {
                return Err(OpenError::Owner {
                    file: uid,
                    process: self.euid,
                });
            }
        }
        if meta.len() > MAX_FILE {
            return Err(OpenError::TooLarge);
        }
        (&mut file).take(MAX_FILE + 1).read_to_end(buf)?;
        if buf.len() as u64 > MAX_FILE {
            return Err(OpenError::TooLarge);
        }
        Ok(())
    }
}

/// Seconds since boot of a process start and its CPU seconds, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    /// Start, seconds after boot.
    pub start_secs: f64,
    /// User plus system CPU time, seconds.
    pub cpu_secs: f64,
}

/// Parses `/proc/<pid>/stat` with `hz` clock ticks per second.
pub fn parse_stat(stat: &str, hz: f64) -> Option<ProcStat> {
    // The command may hold spaces and parentheses: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime 14, stime 15, starttime 22 (1-based in proc(5)).
    let num = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        start_secs: num(22)? as f64 / hz,
        cpu_secs: (num(14)? + num(15)?) as f64 / hz,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_stat() {
        let st = "Name:\tjava\nUid:\t1000\t1001\t1001\t1001\nNSpid:\t4242\t7\n";
        assert_eq!(parse_status(st), (Some(1001), Some(7)));
        assert_eq!(parse_status("Uid:\tx\n"), (None, None));
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 \
                    1 1 18446744073709551615";
        let ps = parse_stat(stat, 100.0).unwrap();
        assert_eq!(ps.cpu_secs, 3.0);
        assert_eq!(ps.start_secs, 10.0);
        assert_eq!(parse_stat("42 (x) S 1", 100.0), None);
    }
}
