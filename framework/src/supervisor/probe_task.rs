//! The lifecycle of one probe: gate on switch → prepare → spawn → wait → backoff → respawn,
//! until told to stop.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{cgroup, child, control_channel, start_check, stderr_log};
use super::{OutputSink, ProbeSpec, StartCheck, SupervisorOptions, Switch, EXIT_UNSUPPORTED};
use crate::telemetry::{ProbeState, ProbeStats};

/// How long the output readers may take to hit EOF once the child is gone. Only an escaped
/// grandchild still holding the pipes makes this wait the full time.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// After stdout hits EOF, how long the process may take to be seen exiting before the closed
/// stdout is reported as such (a process closes its stdout a moment before it can be waited for).
const STDOUT_EOF_GRACE: Duration = Duration::from_millis(500);

/// `last_error` of a running probe whose stdout reader hit EOF.
pub(crate) const STDOUT_CLOSED: &str =
    "stdout closed; process still running — no records will arrive";

/// Everything a probe task needs.
pub(crate) struct ProbeContext {
    pub(crate) spec: ProbeSpec,
    pub(crate) stats: Arc<ProbeStats>,
    pub(crate) sink: Arc<dyn OutputSink>,
    pub(crate) opts: SupervisorOptions,
    /// The supervisor's run scope ([`cgroup::new_scope`]).
    pub(crate) scope: u64,
    /// What the control channel of a probe with `reload` carries.
    pub(crate) control: control_channel::ControlInputs,
}

/// How one run of the child ended.
enum RunEnd {
    /// Stop was requested; the child is stopped and reaped.
    Stopped,
    /// The child exited on its own after running for `ran`.
    Exited {
        status: std::io::Result<ExitStatus>,
        ran: Duration,
        last_error_line: Option<String>,
    },
}

/// Sleep for `d`; true if a stop was requested meanwhile (or before).
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        // A stop arriving just as the sleep ends is seen at the caller's next check.
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

async fn wait_for_stop(stop: &mut watch::Receiver<bool>) {
    // An Err means the supervisor dropped the sender: stop as well.
    let _ = stop.wait_for(|s| *s).await;
}

fn set_down(stats: &ProbeStats, state: ProbeState) {
    stats.up.store(false, Ordering::Relaxed);
    stats.pid.store(0, Ordering::Relaxed);
    stats.set_state(state);
}

/// Run the probe until `stop` turns true.
pub(crate) async fn run(ctx: ProbeContext, mut stop: watch::Receiver<bool>) {
    let ProbeContext {
        spec,
        stats,
        sink,
        opts,
        scope,
        control,
    } = ctx;
    let mut backoff = opts.backoff_initial;
    let mut spawned_before = false;
    loop {
        if *stop.borrow() {
            set_down(&stats, ProbeState::Stopped);
            return;
        }
        match spec.switch {
            Switch::On => {}
            Switch::Off => {
                set_down(&stats, ProbeState::Stopped);
                stats.set_last_error(None);
                wait_for_stop(&mut stop).await;
                return;
            }
            Switch::Auto => {
                let Some(check) = &spec.start_check else {
                    set_down(&stats, ProbeState::Stopped);
                    stats.set_last_error(Some("switch auto without start_check".into()));
                    wait_for_stop(&mut stop).await;
                    return;
                };
                if !wait_for_start_check(&spec.name, check, &stats, &opts, &mut stop).await {
                    set_down(&stats, ProbeState::Stopped);
                    return;
                }
            }
        }

        if let Err(msg) = sink.prepare(&spec) {
            // Retried every `backoff_max`: say it again only when the reason changes.
            if stats.last_error().as_deref() != Some(msg.as_str()) {
                tracing::error!(probe = %spec.name, error = %msg, "cannot prepare probe");
            }
            set_down(&stats, ProbeState::Failed);
            stats.set_last_error(Some(msg));
            if sleep_or_stop(opts.backoff_max, &mut stop).await {
                set_down(&stats, ProbeState::Stopped);
                return;
            }
            continue;
        }

        let mut run = cgroup::RunGroup::new(scope, &spec.name, opts.cgroups);
        let mut owned = match spawn(&spec, &opts, &run) {
            Ok(c) => c,
            Err(e) => {
                let program = spec.argv.first().map(String::as_str).unwrap_or("");
                let msg = format!(
                    "cannot start {program}: {}",
                    child::describe_spawn_error(program, &e)
                );
                tracing::error!(probe = %spec.name, "{msg}");
                set_down(&stats, ProbeState::Failed);
                stats.set_last_error(Some(msg));
                if sleep_or_stop(opts.backoff_max, &mut stop).await {
                    set_down(&stats, ProbeState::Stopped);
                    return;
                }
                continue;
            }
        };
        if spawned_before {
            stats.restarts.fetch_add(1, Ordering::Relaxed);
        }
        spawned_before = true;
        run.started(owned.pid);
        tracing::info!(probe = %spec.name, pid = owned.pid, "probe started");

        let writer = owned.child.stdin.take().and_then(|stdin| {
            let decl = spec.declaration.clone()?;
            Some(tokio::spawn(control_channel::write_lines(
                stdin,
                decl,
                spec.argv.clone(),
                control.clone(),
                Arc::clone(&stats),
            )))
        });
        let end = supervise(owned, run, &stats, &*sink, &opts, &mut stop).await;
        if let Some(w) = writer {
            w.abort();
        }
        match end {
            RunEnd::Stopped => {
                set_down(&stats, ProbeState::Stopped);
                return;
            }
            RunEnd::Exited {
                status,
                ran,
                last_error_line,
            } => {
                if ran >= opts.stable_after {
                    backoff = opts.backoff_initial;
                }
                let unsupported = matches!(&status, Ok(s) if s.code() == Some(EXIT_UNSUPPORTED));
                let msg = describe_exit(&status, last_error_line.as_deref());
                let (state, delay) = if unsupported {
                    (ProbeState::Failed, opts.backoff_max)
                } else {
                    let d = backoff;
                    backoff = (backoff * 2).min(opts.backoff_max);
                    (ProbeState::Backoff, d)
                };
                tracing::warn!(probe = %spec.name, retry_in = ?delay, "probe {msg}");
                set_down(&stats, state);
                stats.set_last_error(Some(msg));
                if sleep_or_stop(delay, &mut stop).await {
                    set_down(&stats, ProbeState::Stopped);
                    return;
                }
            }
        }
    }
}

/// Re-evaluate `check` every `auto_recheck` until it passes (true) or a stop arrives (false).
async fn wait_for_start_check(
    name: &str,
    check: &StartCheck,
    stats: &ProbeStats,
    opts: &SupervisorOptions,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        let verdict = tokio::select! {
            v = start_check::passes(check) => v,
            _ = stop.wait_for(|s| *s) => return false,
        };
        match verdict {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => tracing::warn!(probe = %name, error = %e, "start check"),
        }
        if stats.state() != ProbeState::Stopped {
            set_down(stats, ProbeState::Stopped);
        }
        if sleep_or_stop(opts.auto_recheck, stop).await {
            return false;
        }
    }
}

fn spawn(
    spec: &ProbeSpec,
    opts: &SupervisorOptions,
    run: &cgroup::RunGroup,
) -> std::io::Result<child::OwnedChild> {
    let mut cmd = child::probe_command(&spec.argv)?;
    if spec.reloads() {
        cmd.stdin(std::process::Stdio::piped());
    }
    for (k, v) in spec.env.iter().chain(opts.env.iter()) {
        cmd.env(k, v);
    }
    let (k, v) = run.env();
    cmd.env(k, v);
    if let Some(procs) = run.procs_path() {
        child::join_cgroup_before_exec(&mut cmd, procs);
    }
    child::spawn_owned(&mut cmd)
}

/// Text for `last_error` after an exit.
fn describe_exit(status: &std::io::Result<ExitStatus>, last_error_line: Option<&str>) -> String {
    let base = match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(EXIT_UNSUPPORTED), _) => {
                if let Some(line) = last_error_line {
                    return line.to_string();
                }
                format!("unsupported (exited with status {EXIT_UNSUPPORTED})")
            }
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => format!("exited ({s})"),
        },
        Err(e) => format!("exit status unknown: {e}"),
    };
    match last_error_line {
        Some(line) => format!("{base}: {line}"),
        None => base,
    }
}

/// Wait for the child to exit or for a stop; hand stdout to the sink and stderr to the log. When
/// the child is gone, kill whatever else the run started.
async fn supervise(
    mut owned: child::OwnedChild,
    mut run: cgroup::RunGroup,
    stats: &Arc<ProbeStats>,
    sink: &dyn OutputSink,
    opts: &SupervisorOptions,
    stop: &mut watch::Receiver<bool>,
) -> RunEnd {
    let started = Instant::now();
    stats.pid.store(
        u32::try_from(owned.pid).unwrap_or_default(),
        Ordering::Relaxed,
    );
    stats.up.store(true, Ordering::Relaxed);
    stats.set_state(ProbeState::Running);
    // The previous run's error stays visible while a crash-looping probe is briefly up again;
    // it is cleared once this run has proven stable.
    let stable_at = tokio::time::Instant::from_std(started + opts.stable_after);
    let mut stable = false;

    let mut stdout_task = owned
        .child
        .stdout
        .take()
        .map(|out| tokio::spawn(sink.consume(Arc::clone(stats), out)));
    let stderr_task = owned.child.stderr.take().map(|err| {
        grow_pipe(&err);
        tokio::spawn(stderr_log::forward(err, Arc::clone(stats)))
    });

    let exit = loop {
        let stdout_eof = tokio::select! {
            status = owned.child.wait() => break Some(status),
            _ = stop.wait_for(|s| *s) => break None,
            _ = async { stdout_task.as_mut().expect("guarded by is_some").await }, if stdout_task.is_some() => true,
            _ = tokio::time::sleep_until(stable_at), if !stable => {
                stable = true;
                if stats.last_error().as_deref() != Some(STDOUT_CLOSED) {
                    stats.set_last_error(None);
                }
                false
            }
        };
        if stdout_eof {
            stdout_task = None;
            match tokio::time::timeout(STDOUT_EOF_GRACE, owned.child.wait()).await {
                Ok(status) => break Some(status),
                Err(_) => {
                    tracing::warn!(probe = %stats.name, pid = owned.pid, "{STDOUT_CLOSED}");
                    stats.set_last_error(Some(STDOUT_CLOSED.to_string()));
                }
            }
        }
    };
    let end = match exit {
        Some(status) => RunEnd::Exited {
            status,
            ran: started.elapsed(),
            last_error_line: None,
        },
        None => {
            if let Err(e) = child::stop(&mut owned, opts.grace).await {
                tracing::warn!(probe = %stats.name, error = %e, "waiting for stopped probe");
            }
            RunEnd::Stopped
        }
    };
    drop(owned);
    // Left-overs (setsid or double-forked descendants) would keep the pipes open and outlive
    // the probe; they go before the readers drain and before any respawn.
    let killed = run.end().await;
    if killed > 0 {
        stats
            .orphans_killed
            .fetch_add(killed as u64, Ordering::Relaxed);
        tracing::info!(probe = %stats.name, killed, "killed processes the probe left behind");
    }

    // Both readers drain at once: a grandchild holding the pipes costs one timeout, not two.
    let (last_error_line, _) = tokio::join!(drain(stderr_task), drain(stdout_task));
    let last_error_line = last_error_line.flatten();
    match end {
        RunEnd::Exited { status, ran, .. } => RunEnd::Exited {
            status,
            ran,
            last_error_line,
        },
        RunEnd::Stopped => RunEnd::Stopped,
    }
}

/// Ask for a 1 MiB pipe buffer so a chatty probe's stderr is read in few large reads (best
/// effort: the kernel caps it at `fs.pipe-max-size`).
fn grow_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl on a valid pipe fd owned by the caller; failure only leaves the default size.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// Wait for an output reader to finish, aborting it after [`DRAIN_TIMEOUT`].
async fn drain<T>(task: Option<JoinHandle<T>>) -> Option<T> {
    let mut task = task?;
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut task).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(_)) => None,
        Err(_) => {
            task.abort();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_descriptions() {
        let code = |c: i32| Ok(ExitStatus::from_raw(c << 8));
        let sig = |s: i32| Ok(ExitStatus::from_raw(s));
        assert_eq!(describe_exit(&code(1), None), "exited with status 1");
        assert_eq!(describe_exit(&sig(9), None), "killed by signal 9");
        assert_eq!(
            describe_exit(&code(2), Some("bad flag -q")),
            "exited with status 2: bad flag -q"
        );
        assert_eq!(
            describe_exit(&code(3), Some("unsupported: tracepoint x")),
            "unsupported: tracepoint x"
        );
        assert_eq!(
            describe_exit(&code(3), None),
            "unsupported (exited with status 3)"
        );
    }
}
