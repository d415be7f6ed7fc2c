//! The janitor: a small process forked at daemon start whose only job is to kill what the
//! daemon's probe runs left behind when the daemon could not do it itself (SIGKILL, OOM kill,
//! crash).
//!
//! The daemon keeps the write end of a pipe open for its whole life; the janitor blocks reading
//! the other end. Both ends are close-on-exec, so no probe inherits them, and the kernel closes
//! the write end however the daemon ends: the janitor's `read` returns EOF within moments of the
//! daemon's death. It then kills that daemon instance's probe cgroups and the processes tagged
//! with its runs (see `supervisor/cgroup.rs`) and exits. After a normal stop it finds nothing to
//! do.
//!
//! It runs in its own session (a signal to the daemon's process group or terminal does not reach
//! it) and ignores SIGINT, SIGTERM, SIGHUP and SIGPIPE; `comm` is `gg-janitor`. What it does not
//! cover (the janitor killed too) is left to the stale-instance cleanup of the next start.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::cgroup;

/// Pid of this daemon's janitor; 0 when there is none (not started, or reaped).
static PID: AtomicI32 = AtomicI32::new(0);

/// Why the janitor was not started.
#[derive(Debug, thiserror::Error)]
pub enum JanitorError {
    /// `fork` is only safe while the process has a single thread.
    #[error("the process runs {0} threads, not 1: the janitor must be started before any")]
    Threaded(usize),
    /// A system call failed.
    #[error("{call}: {source}")]
    Sys {
        /// The failing call.
        call: &'static str,
        /// Its error.
        source: io::Error,
    },
}

fn sys(call: &'static str) -> JanitorError {
    JanitorError::Sys {
        call,
        source: io::Error::last_os_error(),
    }
}

/// Number of threads of this process, from `/proc/self/task`.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Fork the janitor for this daemon process and return its pid. Call early in `main`, before any
/// thread is started (checked: fails with [`JanitorError::Threaded`] otherwise), and only when
/// the daemon is going to run probes. At most one janitor is started per process.
pub fn start() -> Result<i32, JanitorError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(JanitorError::Threaded(threads));
    }
    let current = PID.load(Ordering::Relaxed);
    if current != 0 {
        return Ok(current);
    }
    let daemon = std::process::id() as i32;
    let starttime = cgroup::own_starttime();
    // SAFETY: getpgrp has no arguments and cannot fail.
    let pgrp = unsafe { libc::getpgrp() };
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys("pipe2"));
    }
    let [read_end, write_end] = fds;
    // SAFETY: the process is single-threaded (checked above), so the child is a complete copy
    // in which allocation and locks are safe to use; it never returns from `run`.
    match unsafe { libc::fork() } {
        -1 => {
            let e = sys("fork");
            // SAFETY: closing the fds we just created.
            unsafe {
                libc::close(read_end);
                libc::close(write_end);
            }
            Err(e)
        }
        0 => run(read_end, daemon, starttime, pgrp),
        child => {
            // SAFETY: the read end belongs to the janitor now. The write end is deliberately
            // never closed: its closing at our exit is the janitor's signal.
            unsafe { libc::close(read_end) };
            PID.store(child, Ordering::Relaxed);
            Ok(child)
        }
    }
}

/// The janitor's whole life (in the forked child).
fn run(read_end: libc::c_int, daemon: i32, starttime: u64, daemon_pgrp: i32) -> ! {
    // SAFETY: plain syscalls with constant or owned arguments.
    unsafe {
        // Own session: no controlling terminal, out of the daemon's process group.
        libc::setsid();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::prctl(
            libc::PR_SET_NAME,
            c"gg-janitor".as_ptr() as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
        // Do not keep the daemon's working directory (a mount point) busy.
        libc::chdir(c"/".as_ptr());
    }
    close_fds_except(read_end);
    if !wait_for_eof(read_end) {
        // Cannot happen on a valid pipe; watch the daemon's pid instead of spinning.
        while super::child::read_stat(daemon)
            .is_some_and(|s| s.starttime == starttime && s.state != 'Z')
        {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    let killed = cgroup::clean_up_instance(daemon, starttime, daemon_pgrp);
    if killed > 0 {
        tracing::warn!(
            daemon,
            killed,
            "janitor: gala-gopher ended without stopping its probes; killed the processes they left"
        );
    }
    // SAFETY: ends the process without running the daemon's destructors or atexit handlers.
    unsafe { libc::_exit(0) }
}

/// Close every inherited fd except `keep` and stderr (kept for the one log line); stdin and
/// stdout become /dev/null so that no later open lands on them.
fn close_fds_except(keep: libc::c_int) {
    let fds: Vec<libc::c_int> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // The directory's own fd is in the list, already closed: close() then fails harmlessly.
    for fd in fds {
        if fd > 2 && fd != keep {
            // SAFETY: closing an inherited fd nothing in this process uses.
            unsafe { libc::close(fd) };
        }
    }
    // SAFETY: open/dup2/close on a constant path and fds we own.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            if null > 2 {
                libc::close(null);
            }
        }
    }
}

/// Block until every copy of the pipe's write end is closed (the daemon is gone): true, or
/// false if reading fails otherwise.
fn wait_for_eof(fd: libc::c_int) -> bool {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: read into a buffer we own, of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            return true;
        }
        if n < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// The janitor's pid, if one was started and has not been reaped.
pub(crate) fn pid() -> Option<i32> {
    Some(PID.load(Ordering::Relaxed)).filter(|&p| p != 0)
}

/// Is the janitor running? (Exported as a self-metric: 0 means a SIGKILLed daemon's leftovers
/// live on until the next start.)
pub fn running() -> bool {
    pid().is_some_and(|p| super::child::read_stat(p).is_some_and(|s| s.state != 'Z'))
}

/// Reap the janitor if it has exited (it should outlive the daemon) and warn once. Called by the
/// daemon's orphan collector, which otherwise leaves the janitor alone.
pub(crate) fn reap_if_exited() {
    let Some(p) = pid() else { return };
    match waitpid(Pid::from_raw(p), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => {}
        Ok(status) => {
            PID.store(0, Ordering::Relaxed);
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    pid = p,
                    ?status,
                    "the janitor process ended early; if the daemon is killed, its probes' processes live on until the next start"
                );
            }
        }
        // ECHILD: not our child (any more); forget it.
        Err(_) => PID.store(0, Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_fork_a_threaded_process() {
        // The test harness runs this on a thread of its own: never a single thread here.
        let t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        assert!(matches!(start(), Err(JanitorError::Threaded(n)) if n > 1));
        assert_eq!(pid(), None);
        let _ = t.join();
    }
}
