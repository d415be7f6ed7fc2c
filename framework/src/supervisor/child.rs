//! Spawning, stopping and reaping child processes.
//!
//! Every child is started through [`spawn_owned`], which records its pid in a process-wide set
//! while the tokio handle is alive. The orphan collectors ([`reap_orphan_zombies`],
//! [`kill_orphans`]) only touch children *not* in that set: those are grandchildren that escaped
//! their probe's process group and were re-parented to the daemon (the subreaper). This keeps
//! them from stealing an exit status that tokio is waiting for.

use std::collections::BTreeSet;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Pids of children whose exit status belongs to a tokio `Child` handle.
static OWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn owned() -> MutexGuard<'static, BTreeSet<i32>> {
    OWNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Make the daemon the reaper of its descendants' orphans (`PR_SET_CHILD_SUBREAPER`), so that a
/// grandchild escaping through a double fork is re-parented to us and can be killed at shutdown.
/// Call once at startup, before starting probes.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A command for `argv` (no shell) in a new process group, dying with the daemon
/// (`PR_SET_PDEATHSIG`), stdin null, stdout/stderr piped, killed when the handle is dropped.
///
/// `PR_SET_PDEATHSIG` fires when the spawning *thread* exits. Tokio worker threads live as long
/// as the runtime, so in the daemon this means "when the daemon's runtime ends".
pub fn probe_command(argv: &[String]) -> io::Result<Command> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    // getpid() of the daemon == getppid() of the forked child, unless the daemon died in between.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls
    // (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The death signal is only armed for a parent alive now: if it already died we were
            // re-parented, and would outlive it.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Make the child of `cmd` move itself into the cgroup whose `cgroup.procs` is `procs` between
/// fork and exec, so that nothing it starts is ever outside that cgroup. A failed move is not
/// fatal here: the parent checks membership after the spawn and falls back to process tracking.
pub fn join_cgroup_before_exec(cmd: &mut Command, procs: std::ffi::CString) {
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls
    // (open, write, close) on a path allocated before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                // "0" moves the writing process itself.
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            Ok(())
        });
    }
}

/// A spawned child whose pid is registered as owned until the handle is dropped.
#[derive(Debug)]
pub struct OwnedChild {
    /// The tokio handle.
    pub child: Child,
    /// Pid, which is also the process group id (`process_group(0)`).
    pub pid: i32,
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        owned().remove(&self.pid);
    }
}

/// Spawn `cmd` and register its pid as owned. The registry lock is held across the fork so that
/// an orphan collector never sees (and reaps) a child that is not registered yet.
pub fn spawn_owned(cmd: &mut Command) -> io::Result<OwnedChild> {
    let mut set = owned();
    let child = cmd.spawn()?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| io::Error::other("spawned child has no pid"))?;
    set.insert(pid);
    Ok(OwnedChild { child, pid })
}

/// Send `sig` to process group `pgid`; a group that no longer exists is not an error.
pub fn signal_group(pgid: i32, sig: Signal) {
    if pgid <= 1 {
        return;
    }
    if let Err(e) = killpg(Pid::from_raw(pgid), sig) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(pgid, signal = %sig, error = %e, "killpg failed");
        }
    }
}

/// Stop a child: SIGTERM to its group, wait up to `grace`, then SIGKILL the group; always reaped.
/// Members of the group that outlive the leader are left for the run's containment
/// ([`super::cgroup::RunGroup::end`]), which counts and kills them.
pub async fn stop(child: &mut OwnedChild, grace: Duration) -> io::Result<ExitStatus> {
    signal_group(child.pid, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            signal_group(child.pid, Signal::SIGKILL);
            child.child.wait().await
        }
    };
    status
}

/// State and parent of a process, from `/proc/<pid>/stat`.
fn stat_state_ppid(stat: &str) -> Option<(char, i32)> {
    stat_fields(stat).map(|f| (f.state, f.ppid))
}

/// The fields of `/proc/<pid>/stat` the supervisor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatFields {
    pub(crate) state: char,
    pub(crate) ppid: i32,
    pub(crate) pgrp: i32,
    /// Start time in clock ticks after boot: with the pid, identifies a process across pid reuse.
    pub(crate) starttime: u64,
}

/// Parse a `/proc/<pid>/stat` line.
pub(crate) fn stat_fields(stat: &str) -> Option<StatFields> {
    // comm may contain spaces and ')' — the state follows the *last* ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // Field 22 of the line is the 20th after the state (field 3).
    let starttime = fields.nth(16).and_then(|f| f.parse().ok()).unwrap_or(0);
    Some(StatFields {
        state,
        ppid,
        pgrp,
        starttime,
    })
}

/// [`stat_fields`] of a live pid.
pub(crate) fn read_stat(pid: i32) -> Option<StatFields> {
    stat_fields(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Longest `#!` line the kernel reads (BINPRM_BUF_SIZE).
const SHEBANG_MAX: usize = 256;

/// Interpreter path named by the `#!` line of `file`, if it has one (bounded read).
fn shebang_interpreter(file: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::io::Read;
    let mut head = [0u8; SHEBANG_MAX];
    let mut f = std::fs::File::open(file).ok()?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
    let interp = line
        .split(|b| *b == b' ' || *b == b'\t')
        .find(|w| !w.is_empty())?;
    Some(std::path::PathBuf::from(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(interp),
    ))
}

/// Does `file` start with the ELF magic?
fn is_elf(file: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(file)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Explain why exec of `program` failed with `err`, naming the file actually at fault (a missing
/// `#!` interpreter rather than the script, a mode without x bits, a noexec mount …).
pub fn describe_spawn_error(program: &str, err: &io::Error) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = std::path::Path::new(program);
    let md = std::fs::metadata(path);
    match (err.raw_os_error(), md) {
        (Some(libc::ENOENT), Err(_)) if !program.contains('/') => {
            format!("{program} not found in PATH")
        }
        (Some(libc::ENOENT), Err(_)) => format!("{program} does not exist"),
        (Some(libc::ENOENT), Ok(_)) => {
            // The file is there: what is missing is what the kernel loads to run it.
            let mut file = path.to_path_buf();
            for _ in 0..4 {
                let Some(interp) = shebang_interpreter(&file) else {
                    break;
                };
                if std::fs::metadata(&interp).is_err() {
                    return format!(
                        "interpreter {} (from #! of {}) not found",
                        interp.display(),
                        file.display()
                    );
                }
                file = interp;
            }
            if is_elf(&file) {
                format!(
                    "the dynamic loader (ELF interpreter) of {} is missing: built for another system or libc",
                    file.display()
                )
            } else {
                format!("{program}: {err}")
            }
        }
        (Some(libc::EACCES), Ok(md)) => {
            let mode = md.permissions().mode() & 0o7777;
            if md.is_dir() {
                format!("{program} is a directory")
            } else if !md.is_file() {
                format!("{program} is not a regular file")
            } else if mode & 0o111 == 0 {
                format!("{program} is not executable (mode {mode:04o})")
            } else if on_noexec_mount(path) {
                format!("{program} is on a file system mounted noexec")
            } else if let Some(interp) = shebang_interpreter(path) {
                format!(
                    "permission denied running interpreter {} (from #! of {program})",
                    interp.display()
                )
            } else {
                format!("{program}: permission denied (a directory on its path not searchable?)")
            }
        }
        (Some(libc::ENOEXEC), Ok(_)) => {
            if is_elf(path) {
                format!("{program} is an ELF binary for another machine or ABI")
            } else {
                format!("{program} is not an executable format (no #! line and not ELF)")
            }
        }
        (Some(libc::ETXTBSY), Ok(_)) => {
            format!("{program} is being written (text file busy); retrying later")
        }
        _ => format!("{program}: {err}"),
    }
}

fn on_noexec_mount(path: &std::path::Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
}

/// Children of this process not owned by a tokio handle, with their state. The janitor is not
/// one of them: it is reaped by [`super::janitor::reap_if_exited`] only.
fn foreign_children() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let janitor = super::janitor::pid();
    let set = owned();
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !set.contains(pid) && Some(*pid) != janitor)
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (state, ppid) = stat_state_ppid(&stat)?;
            (ppid == me).then_some((pid, state))
        })
        .collect()
}

/// Is any child (owned or not) waitable right now? Cheap pre-check before scanning /proc.
fn any_child_exited() -> bool {
    // SAFETY: waitid writes only into the zeroed siginfo we own; WNOWAIT leaves the child as is.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        rc == 0 && info.si_pid() != 0
    }
}

/// Reap zombies of foreign children (orphans re-parented to the daemon). Returns how many.
pub fn reap_orphan_zombies() -> usize {
    if !any_child_exited() {
        return 0;
    }
    super::janitor::reap_if_exited();
    let mut reaped = 0;
    // Hold the registry while reaping so a concurrent spawn cannot hand out a pid we are about to
    // look at; the list is re-checked under the same lock.
    let zombies: Vec<i32> = foreign_children()
        .into_iter()
        .filter(|&(_, state)| state == 'Z')
        .map(|(pid, _)| pid)
        .collect();
    let set = owned();
    for pid in zombies {
        if set.contains(&pid) {
            continue;
        }
        if waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok() {
            reaped += 1;
        }
    }
    reaped
}

/// SIGKILL and reap every foreign child started by a probe run of supervisor `scope` (see
/// [`super::cgroup::is_probe_process`]) until none is left or `deadline` passes. Killing one may
/// re-parent its own children to us, so this repeats. Other children of the process (a test
/// harness's own) are left alone.
pub(crate) async fn kill_orphans(deadline: Duration, scope: u64) {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let mut children = foreign_children();
        children
            .retain(|&(pid, state)| state == 'Z' || super::cgroup::is_probe_process(pid, scope));
        if children.is_empty() {
            return;
        }
        for &(pid, state) in &children {
            if state != 'Z' {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        {
            let set = owned();
            for &(pid, _) in &children {
                if !set.contains(&pid) {
                    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                }
            }
        }
        if tokio::time::Instant::now() >= until {
            tracing::warn!(
                left = children.len(),
                "orphaned processes still present at shutdown"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_tricky_comm() {
        let line = "1234 (a) b (c)) S 77 1234 1234 0 -1 4194560 0 0";
        assert_eq!(stat_state_ppid(line), Some(('S', 77)));
        let zombie = "99 (sleep) Z 1 99 99 0 -1";
        assert_eq!(stat_state_ppid(zombie), Some(('Z', 1)));
    }

    #[test]
    fn rejects_garbage_stat() {
        assert_eq!(stat_state_ppid("no paren here"), None);
        assert_eq!(stat_state_ppid("1 (x) S notanumber"), None);
    }

    #[test]
    fn own_stat_is_parsable() {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let (state, ppid) = stat_state_ppid(&stat).unwrap();
        assert_eq!(state, 'R');
        assert_eq!(ppid, nix::unistd::getppid().as_raw());
    }
}
