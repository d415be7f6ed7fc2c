//! The daemon's side of a probe's control channel: while a probe that declares `reload` runs,
//! its run-time settings and resolved process selection are written to its stdin as
//! [`probe_decl::ControlMsg`] lines — the current state right after the spawn, then again
//! whenever either changes (each line is the complete state, so coalescing is safe).
//!
//! A probe that does not take a line within [`WRITE_TIMEOUT`] (it does not read its stdin) gets
//! its stdin closed, and the failure is counted (`control_errors`) and shown as its last error.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use probe_decl::{Declaration, Snoop};
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::watch;

use crate::control::runtime::{Base, Runtime};
use crate::telemetry::ProbeStats;

/// Longest wait for a probe to take one control line.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a probe's control lines are made of; the supervisor keeps the senders.
#[derive(Debug, Clone)]
pub(crate) struct ControlInputs {
    /// Run-time settings (REST, `probes.init`); `None` = declared defaults.
    pub(crate) runtime: watch::Receiver<Option<Arc<Runtime>>>,
    /// Resolved process selection.
    pub(crate) snoop: watch::Receiver<Snoop>,
}

/// The line for the current inputs.
fn current_line(decl: &Declaration, base: &Base, inputs: &mut ControlInputs) -> String {
    let runtime = inputs.runtime.borrow_and_update().clone();
    let snoop = inputs.snoop.borrow_and_update().clone();
    runtime
        .as_deref()
        .cloned()
        .unwrap_or_default()
        .control_msg(decl, base, snoop)
        .to_line()
}

/// Write control lines to `stdin` until the inputs' senders are gone or a write fails; `argv`
/// is the probe's command line (its flags are the values REST has not set).
pub(crate) async fn write_lines(
    mut stdin: ChildStdin,
    decl: Arc<Declaration>,
    argv: Vec<String>,
    mut inputs: ControlInputs,
    stats: Arc<ProbeStats>,
) {
    let base = Base::from_argv(&decl, &argv);
    let mut last: Option<String> = None;
    // Without a resolver the selection never changes: its sender is gone from the start.
    let mut snoop_open = true;
    loop {
        let line = current_line(&decl, &base, &mut inputs);
        if last.as_deref() != Some(line.as_str()) {
            let written = tokio::time::timeout(WRITE_TIMEOUT, async {
                stdin.write_all(line.as_bytes()).await?;
                stdin.flush().await
            })
            .await;
            let problem = match written {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("control channel: {e}")),
                Err(_) => Some(format!(
                    "control channel: the probe did not read its stdin within {WRITE_TIMEOUT:?}; closed"
                )),
            };
            if let Some(msg) = problem {
                stats.control_errors.fetch_add(1, Ordering::Relaxed);
                // A probe that exited is reported by its exit; one that does not read is not.
                if stats.up.load(Ordering::Relaxed) {
                    tracing::warn!(probe = %stats.name, "{msg}");
                    stats.set_last_error(Some(msg));
                }
                return;
            }
            stats.control_lines.fetch_add(1, Ordering::Relaxed);
            last = Some(line);
        }
        tokio::select! {
            r = inputs.runtime.changed() => if r.is_err() { return },
            r = inputs.snoop.changed(), if snoop_open => if r.is_err() { snoop_open = false },
        }
    }
}
