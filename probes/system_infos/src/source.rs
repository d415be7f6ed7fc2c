//! Where host state is read from, and how unreadable files are counted instead of being fatal.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Roots of the files the probe reads; tests point them at fixture trees.
///
/// The default is the host as [`probe_sdk::host`] sees it: every path below carries the host
/// root (`GOPHER_HOST_PATH`, e.g. `/host/proc`), except `mounts`, which is the probe's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// procfs root (`/proc`).
    pub proc: PathBuf,
    /// sysfs root (`/sys`).
    pub sys: PathBuf,
    /// The probe's own mount table (`/proc/self/mounts`, never under the host root: it is this
    /// process's namespace): `system_df`'s fallback when `mount_ns` cannot be read, and its
    /// only source in test trees.
    pub mounts: PathBuf,
    /// `/proc/<pid>` of the process whose mount namespace `system_df` describes (`/proc/1`,
    /// the host's init): its `mountinfo` is the mount table, and mount points are queried
    /// through its `root`. `None` in test trees.
    pub mount_ns: Option<PathBuf>,
    /// os-release candidates, first existing wins (`/etc/os-release`, `/usr/lib/os-release`).
    pub os_release: Vec<PathBuf>,
    /// The host's `/etc/hostname`, read before `<proc>/sys/kernel/hostname` when set. Set only
    /// under a host root: the kernel's name there is the probe's own UTS namespace, which is a
    /// container's. `None` on a host install and in test trees.
    pub etc_hostname: Option<PathBuf>,
}

impl Default for HostPaths {
    /// The host under this process's host root ([`probe_sdk::host::root`]).
    fn default() -> Self {
        HostPaths::under(probe_sdk::host::root())
    }
}

impl HostPaths {
    /// The host whose `/` is seen at `root` (`/` on a host install, `/host` in a container).
    pub fn under(root: &Path) -> HostPaths {
        let host = |p: &str| probe_sdk::host::join(root, Path::new(p));
        HostPaths {
            proc: host("/proc"),
            sys: host("/sys"),
            mounts: PathBuf::from("/proc/self/mounts"),
            mount_ns: Some(host("/proc/1")),
            os_release: vec![host("/etc/os-release"), host("/usr/lib/os-release")],
            etc_hostname: (root != Path::new("/")).then(|| host("/etc/hostname")),
        }
    }

    /// Paths of a captured tree: `<dir>/proc`, `<dir>/sys`, `<dir>/proc/self/mounts`,
    /// `<dir>/etc/os-release` (no other mount namespace).
    pub fn fixture(dir: &Path) -> HostPaths {
        HostPaths {
            proc: dir.join("proc"),
            sys: dir.join("sys"),
            mounts: dir.join("proc/self/mounts"),
            mount_ns: None,
            os_release: vec![dir.join("etc/os-release")],
            etc_hostname: None,
        }
    }

    /// `<proc>/<rel>`.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }

    /// `<sys>/<rel>`.
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }
}

/// Reads `path` into `buf` (cleared first), in as few system calls as possible: procfs files
/// have no useful size, so the size probe `read_to_string` makes (statx + lseek) is skipped.
/// Invalid UTF-8 is replaced, not an error (labels such as mount points may contain anything).
pub fn read_into(path: &Path, buf: &mut String) -> io::Result<()> {
    let mut bytes = std::mem::take(buf).into_bytes();
    let res = read_bytes_into(path, &mut bytes);
    *buf = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    res
}

/// Reads `path` into `bytes` (cleared first) with plain `read` calls until end of file.
pub fn read_bytes_into(path: &Path, bytes: &mut Vec<u8>) -> io::Result<()> {
    bytes.clear();
    fill(File::open(path)?, bytes)
}

/// Reads at most `max` bytes of `path` into `buf` (cleared first). A longer file is cut after
/// its last complete line within `max` bytes, and `Ok(true)` says it was cut.
pub fn read_bounded_into(path: &Path, buf: &mut String, max: usize) -> io::Result<bool> {
    let mut bytes = std::mem::take(buf).into_bytes();
    bytes.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let res = File::open(path).and_then(|f| fill(f.take(limit), &mut bytes));
    let cut = bytes.len() > max;
    if cut {
        let end = bytes[..max]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        bytes.truncate(end);
    }
    *buf = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    res.map(|()| cut)
}

/// Appends everything `f` yields to `bytes`, with plain `read` calls until end of file.
fn fill(mut f: impl Read, bytes: &mut Vec<u8>) -> io::Result<()> {
    loop {
        if bytes.capacity() - bytes.len() < 1024 {
            bytes.reserve(bytes.capacity().max(4096));
        }
        let len = bytes.len();
        let cap = bytes.capacity();
        bytes.resize(cap, 0);
        match f.read(&mut bytes[len..]) {
            Ok(0) => {
                bytes.truncate(len);
                return Ok(());
            }
            Ok(n) => bytes.truncate(len + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => bytes.truncate(len),
            Err(e) => {
                bytes.truncate(len);
                return Err(e);
            }
        }
    }
}

/// At most this many individual `[WARN]` lines about unreadable files; afterwards one line per
/// [`WARN_EVERY`] errors, so a permanently broken file cannot flood the daemon log.
const WARN_FIRST: u64 = 10;
const WARN_EVERY: u64 = 1000;

/// Cumulative counts of what went wrong while reading; exported in `system_infos_stats`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadErrors {
    /// Files that could not be read or parsed.
    pub read_errors: u64,
    /// Selected processes that exited while being read.
    pub vanished_procs: u64,
}

impl ReadErrors {
    /// Counts a failed read or parse of `path`, warning (rate-limited) on stderr.
    pub fn failed(&mut self, path: &Path, what: &dyn std::fmt::Display) {
        self.read_errors += 1;
        let n = self.read_errors;
        if n <= WARN_FIRST {
            probe_sdk::warn!("cannot read {}: {what} (skipped)", path.display());
        } else if n.is_multiple_of(WARN_EVERY) {
            probe_sdk::warn!(
                "{n} unreadable files so far, latest {}: {what} (skipped)",
                path.display()
            );
        }
    }

    /// Counts a process that went away mid-read (not an error, but worth knowing).
    pub fn vanished(&mut self) {
        self.vanished_procs += 1;
    }
}

/// One reusable read buffer plus the error counters, passed to every reader.
#[derive(Debug, Default)]
pub struct Reader {
    /// Scratch buffer holding the last file read.
    pub buf: String,
    /// Scratch buffer for binary files (`cmdline`).
    pub bytes: Vec<u8>,
    /// Error counters.
    pub errors: ReadErrors,
}

impl Reader {
    /// Reads a file that should exist; a failure is counted and `None` returned.
    pub fn read(&mut self, path: &Path) -> Option<&str> {
        match read_into(path, &mut self.buf) {
            Ok(()) => Some(&self.buf),
            Err(e) => {
                self.errors.failed(path, &e);
                None
            }
        }
    }

    /// Reads at most `max` bytes of a file that should exist (see [`read_bounded_into`]); a
    /// failure is counted and `None` returned, a longer file is counted and its head returned.
    pub fn read_bounded(&mut self, path: &Path, max: usize) -> Option<&str> {
        match read_bounded_into(path, &mut self.buf, max) {
            Ok(false) => Some(&self.buf),
            Ok(true) => {
                let what = format!("the lines past its first {max} bytes");
                self.errors.failed(path, &what);
                Some(&self.buf)
            }
            Err(e) => {
                self.errors.failed(path, &e);
                None
            }
        }
    }

    /// Reads a file some kernels do not have; absence is silent, other failures are counted.
    pub fn read_optional(&mut self, path: &Path) -> Option<&str> {
        match read_into(path, &mut self.buf) {
            Ok(()) => Some(&self.buf),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.errors.failed(path, &e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_carry_the_host_root_except_the_own_mount_table() {
        let host = HostPaths::under(Path::new("/host"));
        assert_eq!(host.proc, PathBuf::from("/host/proc"));
        assert_eq!(host.sys, PathBuf::from("/host/sys"));
        assert_eq!(host.mounts, PathBuf::from("/proc/self/mounts"));
        assert_eq!(host.mount_ns, Some(PathBuf::from("/host/proc/1")));
        assert_eq!(
            host.os_release,
            vec![
                PathBuf::from("/host/etc/os-release"),
                PathBuf::from("/host/usr/lib/os-release")
            ]
        );
        assert_eq!(host.etc_hostname, Some(PathBuf::from("/host/etc/hostname")));
        let plain = HostPaths::under(Path::new("/"));
        assert_eq!(plain.proc, PathBuf::from("/proc"));
        assert_eq!(plain.mount_ns, Some(PathBuf::from("/proc/1")));
        assert_eq!(plain.os_release[0], PathBuf::from("/etc/os-release"));
        assert_eq!(
            plain.etc_hostname, None,
            "a host install uses the kernel's name"
        );
    }

    #[test]
    fn missing_files_are_counted_only_when_expected() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Reader::default();
        assert!(r.read_optional(&dir.path().join("nope")).is_none());
        assert_eq!(r.errors.read_errors, 0);
        assert!(r.read(&dir.path().join("nope")).is_none());
        assert_eq!(r.errors.read_errors, 1);
        std::fs::write(dir.path().join("yes"), "hello").unwrap();
        assert_eq!(r.read(&dir.path().join("yes")), Some("hello"));
        // A directory cannot be read as a file: counted even for optional files.
        assert!(r.read_optional(dir.path()).is_none());
        assert_eq!(r.errors.read_errors, 2);
    }

    #[test]
    fn bounded_reads_stop_at_the_last_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "aaa\nbbb\ncc").unwrap();
        let mut r = Reader::default();
        assert_eq!(r.read_bounded(&p, 10), Some("aaa\nbbb\ncc"));
        assert_eq!(r.errors.read_errors, 0);
        assert_eq!(r.read_bounded(&p, 9), Some("aaa\nbbb\n"));
        assert_eq!(r.read_bounded(&p, 8), Some("aaa\nbbb\n"));
        assert_eq!(r.read_bounded(&p, 7), Some("aaa\n"));
        assert_eq!(r.read_bounded(&p, 2), Some(""));
        assert_eq!(r.errors.read_errors, 4, "each cut is counted");
        assert!(r.read_bounded(&dir.path().join("nope"), 9).is_none());
        assert_eq!(r.errors.read_errors, 5);
    }
}
