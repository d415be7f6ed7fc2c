//! The few `/proc` files the resolver reads, each read bounded into a fixed buffer.
//!
//! [`ProcReader`] is the seam between the resolver's bookkeeping and the kernel: the daemon uses
//! [`LiveProc`], the engine's unit tests a table in memory.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use container_info::cgroup::ContainerRef;
use container_info::info::ContainerInfo;

/// Longest command line read (bytes); a `cmdline` snooper longer than this can never match.
pub const MAX_CMDLINE_BYTES: usize = 4096;

/// `/proc/PID/stat` is far shorter than this (52 fields, a comm of at most 64 bytes).
const STAT_BYTES: usize = 1024;

/// `PF_KTHREAD` in the flags field of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// What the resolver keeps from `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// `comm` (field 2), at most 64 bytes.
    pub comm: Arc<str>,
    /// Parent process id (field 4).
    pub ppid: u32,
    /// A kernel thread (`PF_KTHREAD` in field 9).
    pub kthread: bool,
    /// Start time in clock ticks after boot (field 22): tells a reused pid from the old process.
    pub start: u64,
}

/// Parse `/proc/PID/stat`; `None` if it does not have the expected shape.
pub fn parse_stat(text: &[u8]) -> Option<Stat> {
    let open = text.iter().position(|&b| b == b'(')?;
    // comm may itself contain ") ": the last one closes it.
    let close = text.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = String::from_utf8_lossy(&text[open + 1..close]);
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // fields after comm: 0 state, 1 ppid, ..., 6 flags, ..., 19 starttime
    let ppid = fields.nth(1)?.parse().ok()?;
    let flags: u64 = fields.nth(4)?.parse().ok()?;
    let start = fields.nth(12)?.parse().ok()?;
    Some(Stat {
        comm: Arc::from(comm.as_ref()),
        ppid,
        kthread: flags & PF_KTHREAD != 0,
        start,
    })
}

/// `/proc/PID/cmdline` as matched: NUL separators as spaces, trailing NULs dropped.
pub fn cmdline_text(raw: &[u8]) -> Arc<str> {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let spaced: Vec<u8> = raw[..end]
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    Arc::from(String::from_utf8_lossy(&spaced).as_ref())
}

/// Which container a process is in, and what its runtime says of it (the daemon's
/// `container_info::resolver::Containers`). Cheap, never waits on a runtime.
pub trait ContainerDirectory: Send + Sync {
    /// The container of `pid` (`None`: a host process, or gone).
    fn of_pid(&self, pid: u32) -> Option<Arc<ContainerRef>>;
    /// What the runtime says of container `id` (`None`: not known yet; it is asked meanwhile).
    fn info(&self, id: &str) -> Option<Arc<ContainerInfo>>;
    /// Bumped whenever an [`ContainerDirectory::info`] answer may have changed.
    fn generation(&self) -> u64;
    /// `parent` forked `child` (the child shares its parent's container).
    fn note_fork(&self, _parent: u32, _child: u32) {}
    /// `pid` executed a program (it may have joined a container just before).
    fn note_exec(&self, _pid: u32) {}
    /// A snooper selects by pod labels: the directory must learn them.
    fn want_pod_labels(&self) {}
}

/// Where the resolver learns about processes.
pub trait ProcReader {
    /// Every process (thread group) now: pid and its stat.
    fn scan(&self) -> Vec<(u32, Stat)>;
    /// One process's stat; `None` if it is gone.
    fn stat(&self, pid: u32) -> Option<Stat>;
    /// One process's comm; `None` if it is gone.
    fn comm(&self, pid: u32) -> Option<Arc<str>>;
    /// One process's command line ([`cmdline_text`], first [`MAX_CMDLINE_BYTES`]); `None` if it is gone.
    fn cmdline(&self, pid: u32) -> Option<Arc<str>>;
    /// One process's container; `None` for a host process (or without a directory).
    fn container(&self, _pid: u32) -> Option<Arc<ContainerRef>> {
        None
    }
    /// What the runtime says of a container, if known.
    fn container_info(&self, _id: &str) -> Option<Arc<ContainerInfo>> {
        None
    }
    /// The container directory's generation (0 without one).
    fn containers_generation(&self) -> u64 {
        0
    }
    /// `parent` forked `child`: pass it on to the container directory.
    fn note_fork(&self, _parent: u32, _child: u32) {}
    /// `pid` executed a program: pass it on to the container directory.
    fn note_exec(&self, _pid: u32) {}
    /// A snooper selects by pod labels: pass it on to the container directory.
    fn want_pod_labels(&self) {}
}

/// The real `/proc` (under the host root), and the daemon's container directory.
#[derive(Clone)]
pub struct LiveProc {
    root: PathBuf,
    containers: Option<Arc<dyn ContainerDirectory>>,
}

impl Default for LiveProc {
    fn default() -> Self {
        LiveProc {
            root: container_info::host::path("/proc"),
            containers: None,
        }
    }
}

impl LiveProc {
    /// The host's `/proc`, with `containers` for the container and pod kinds.
    pub fn with_containers(containers: Option<Arc<dyn ContainerDirectory>>) -> Self {
        LiveProc {
            containers,
            ..LiveProc::default()
        }
    }
}

/// Read `path` into `buf` until it is full or the file ends.
fn read_bounded(path: &Path, buf: &mut [u8]) -> io::Result<usize> {
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl LiveProc {
    fn file(&self, pid: u32, name: &str) -> PathBuf {
        let mut p = self.root.join(pid.to_string());
        p.push(name);
        p
    }
}

impl ProcReader for LiveProc {
    fn scan(&self) -> Vec<(u32, Stat)> {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        dir.filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            Some((pid, self.stat(pid)?))
        })
        .collect()
    }

    fn stat(&self, pid: u32) -> Option<Stat> {
        let mut buf = [0u8; STAT_BYTES];
        let n = read_bounded(&self.file(pid, "stat"), &mut buf).ok()?;
        parse_stat(&buf[..n])
    }

    fn comm(&self, pid: u32) -> Option<Arc<str>> {
        let mut buf = [0u8; 80];
        let n = read_bounded(&self.file(pid, "comm"), &mut buf).ok()?;
        let text = buf[..n].strip_suffix(b"\n").unwrap_or(&buf[..n]);
        Some(Arc::from(String::from_utf8_lossy(text).as_ref()))
    }

    fn cmdline(&self, pid: u32) -> Option<Arc<str>> {
        let mut buf = vec![0u8; MAX_CMDLINE_BYTES];
        let n = read_bounded(&self.file(pid, "cmdline"), &mut buf).ok()?;
        Some(cmdline_text(&buf[..n]))
    }

    fn container(&self, pid: u32) -> Option<Arc<ContainerRef>> {
        self.containers.as_ref()?.of_pid(pid)
    }

    fn container_info(&self, id: &str) -> Option<Arc<ContainerInfo>> {
        self.containers.as_ref()?.info(id)
    }

    fn containers_generation(&self) -> u64 {
        self.containers.as_ref().map_or(0, |c| c.generation())
    }

    fn note_fork(&self, parent: u32, child: u32) {
        if let Some(c) = &self.containers {
            c.note_fork(parent, child);
        }
    }

    fn note_exec(&self, pid: u32) {
        if let Some(c) = &self.containers {
            c.note_exec(pid);
        }
    }

    fn want_pod_labels(&self) {
        if let Some(c) = &self.containers {
            c.want_pod_labels();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let line = b"4242 (a) b (c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 \
                     1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(&*s.comm, "a) b (c");
        assert_eq!(s.ppid, 17);
        assert!(!s.kthread);
        assert_eq!(s.start, 98765);
    }

    #[test]
    fn kernel_thread_flag_and_garbage() {
        let line = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        let s = parse_stat(line).unwrap();
        assert!(s.kthread);
        assert_eq!((s.ppid, s.start), (0, 5));
        assert_eq!(parse_stat(b"12 (x) S"), None);
        assert_eq!(parse_stat(b"12 x) S 1 2 3 (4"), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let proc = LiveProc::default();
        let s = proc.stat(me).unwrap();
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(!s.kthread);
        assert_eq!(proc.comm(me).unwrap(), s.comm);
        assert!(!proc.cmdline(me).unwrap().is_empty());
        assert!(proc.scan().iter().any(|(pid, _)| *pid == me));
        assert_eq!(proc.stat(u32::MAX), None);
    }

    #[test]
    fn cmdline_nuls_become_spaces() {
        assert_eq!(
            &*cmdline_text(b"python3\0-c\0x y\0marker\0"),
            "python3 -c x y marker"
        );
        assert_eq!(&*cmdline_text(b"\0\0"), "");
        assert_eq!(&*cmdline_text(b"a"), "a");
    }
}
