//! Supervisor: the only component that spawns processes.
//!
//! INTERFACE CONTRACT (filled in by the supervisor implementation):
//! * [`ProbeSpec`] is the desired state of one probe, built from config `probes`, `extend_probes`
//!   and drop-ins found in `global.probes_dir`.
//! * The supervisor execs `argv` directly (no shell), in its own process group, with
//!   `PR_SET_PDEATHSIG(SIGKILL)`, stdout and stderr piped. stdout is handed to the
//!   [`OutputSink`]; stderr lines are logged with the probe name and level prefix.
//! * Stop = SIGTERM to the process group, grace period, SIGKILL; always reaped.
//! * Exit → restart with backoff 1 s doubling to 60 s, reset after a stable minute.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use crate::telemetry::ProbeStats;

/// Where a probe definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOrigin {
    /// A `probes` entry: an executable named like the probe in `probes_dir`.
    Native,
    /// An `extend_probes` entry with an explicit command.
    Extend,
    /// An executable with a `.meta` beside it, found in `probes_dir`.
    DropIn,
}

/// `switch` of a probe entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Run it.
    On,
    /// Do not run it.
    Off,
    /// Run it when its start check passes (re-evaluated periodically).
    Auto,
}

/// How an `auto` probe decides whether to start.
#[derive(Debug, Clone)]
pub enum StartCheck {
    /// Upstream `start_check` + `check_type = "count"`: a shell pipeline from the root-owned config;
    /// start iff the first output line parses to an integer > 0.
    ShellCount(String),
    /// Built-in, no shell: start iff some process's comm matches this regex.
    ProcessRegex(regex::Regex),
}

/// Desired state of one probe.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// Unique probe name (metric label `probe`, REST path).
    pub name: String,
    /// Program and arguments, already split (never passed through a shell).
    pub argv: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Where the definition came from.
    pub origin: ProbeOrigin,
    /// on / off / auto.
    pub switch: Switch,
    /// Check for `auto`.
    pub start_check: Option<StartCheck>,
    /// `.meta` files describing the probe's tables.
    pub meta_files: Vec<PathBuf>,
}

/// Receives a probe's stdout. Implemented by the ingest path (framer → parser → store).
pub trait OutputSink: Send + Sync + 'static {
    /// Called before every (re)start of `spec`: loads its `.meta` files into the schema registry.
    /// An `Err` keeps the probe from starting; the message becomes its `last_error` (state Failed).
    fn prepare(&self, spec: &ProbeSpec) -> Result<(), String>;

    /// Called once when a probe disappears from the desired state (drop-in removed, config change).
    fn retire(&self, spec: &ProbeSpec);

    /// Consume `stdout` until EOF, counting into `stats`.
    fn consume(
        &self,
        stats: Arc<ProbeStats>,
        stdout: tokio::process::ChildStdout,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}
