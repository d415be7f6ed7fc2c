//! Self-metrics: every drop, parse error, restart and lost event is counted here and exported as a
//! `gala_gopher_self_*` metric and in `GET /status`.

mod discovery;
mod flamegraph;
mod http;
mod log_limit;
mod render;
mod sinks;

pub use discovery::{render_discovery_metrics, DiscoveryCounters, RefusalReason};
pub use flamegraph::{render_flamegraph_metrics, FlamegraphCounters, FlamegraphResult};
pub use http::{render_http_metrics, HttpCounters, HttpServers, HttpTimeout};
pub use log_limit::{log_suppressed, Admit, LogLimiter, LOG_LINES_PER_SEC};
pub use render::render_self_metrics;
pub use sinks::{
    render_sink_metrics, EventCounters, SinkRegistry, SinkStats, Stream, StreamCounters,
};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Why a probe output line was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Line longer than the configured limit.
    TooLong,
    /// Not a well-formed `|table|…|` line.
    Malformed,
    /// Table name not declared by any loaded `.meta`.
    UnknownTable,
    /// Number of values differs from the table's field count.
    FieldCount,
    /// A key field is empty or `(null)`.
    EmptyKey,
    /// A metric value is not a number (or a histogram is not well formed).
    BadValue,
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The table store is at `max_records_num` / `max_tables_num` for a new key.
    StoreFull,
    /// A record of a trace table (`kind = "trace"`) while no push channel (Kafka, logs, json,
    /// OTLP) is configured: trace records are not kept in the store.
    NoPushChannel,
}

impl DropReason {
    /// Every reason, in export order.
    pub const ALL: [DropReason; 9] = [
        DropReason::TooLong,
        DropReason::Malformed,
        DropReason::UnknownTable,
        DropReason::FieldCount,
        DropReason::EmptyKey,
        DropReason::BadValue,
        DropReason::InvalidUtf8,
        DropReason::StoreFull,
        DropReason::NoPushChannel,
    ];

    /// Label value used in metrics and status.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooLong => "too_long",
            DropReason::Malformed => "malformed",
            DropReason::UnknownTable => "unknown_table",
            DropReason::FieldCount => "field_count",
            DropReason::EmptyKey => "empty_key",
            DropReason::BadValue => "bad_value",
            DropReason::InvalidUtf8 => "invalid_utf8",
            DropReason::StoreFull => "store_full",
            DropReason::NoPushChannel => "no_push_channel",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Lifecycle state of a supervised probe, as shown in status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeState {
    /// Configured but not started (switch off, or auto check negative).
    Stopped,
    /// Child process is running.
    Running,
    /// Child exited; waiting for the backoff delay before the next start.
    Backoff,
    /// Cannot run (executable missing, meta invalid, unsupported kernel …); reason in `last_error`.
    Failed,
}

impl ProbeState {
    /// Lower-case name used in JSON and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProbeState::Stopped => "stopped",
            ProbeState::Running => "running",
            ProbeState::Backoff => "backoff",
            ProbeState::Failed => "failed",
        }
    }
}

/// Counters and state for one probe. Shared by the supervisor (restarts, state, pid) and the
/// ingest path (records, drops).
#[derive(Debug)]
pub struct ProbeStats {
    /// Probe name.
    pub name: Arc<str>,
    /// Records accepted into the store (or routed as events).
    pub records: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Non-record stdout/stderr lines forwarded to the daemon log.
    pub log_lines: AtomicU64,
    /// Times the process was (re)started after an exit.
    pub restarts: AtomicU64,
    /// Whether the child is running now.
    pub up: AtomicBool,
    /// Pid of the running child, 0 if none.
    pub pid: AtomicU32,
    /// Unix time in ms of the last accepted record, 0 if none.
    pub last_record_ms: AtomicU64,
    /// The log-line budget shared by the probe's stdout and stderr readers (it also counts the
    /// lines it suppressed).
    pub log_limit: LogLimiter,
    /// Processes killed when a run of the probe ended, other than the probe process itself
    /// (escaped children and grandchildren).
    pub orphans_killed: AtomicU64,
    /// Control-channel lines written to the probe's stdin (run-time settings without restart).
    pub control_lines: AtomicU64,
    /// Control-channel writes that failed (probe not reading its stdin, or gone).
    pub control_errors: AtomicU64,
    state: Mutex<ProbeState>,
    last_error: Mutex<Option<String>>,
}

impl ProbeStats {
    /// Fresh stats for a probe.
    pub fn new(name: &str) -> Self {
        ProbeStats {
            name: Arc::from(name),
            records: AtomicU64::new(0),
            dropped: Default::default(),
            log_lines: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            up: AtomicBool::new(false),
            pid: AtomicU32::new(0),
            last_record_ms: AtomicU64::new(0),
            log_limit: LogLimiter::default(),
            orphans_killed: AtomicU64::new(0),
            control_lines: AtomicU64::new(0),
            control_errors: AtomicU64::new(0),
            state: Mutex::new(ProbeState::Stopped),
            last_error: Mutex::new(None),
        }
    }

    /// Count one dropped line.
    pub fn drop_line(&self, reason: DropReason) {
        self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Count `n` dropped lines.
    pub fn drop_lines(&self, reason: DropReason, n: u64) {
        self.dropped[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Lines dropped for `reason` so far.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    /// Current state.
    pub fn state(&self) -> ProbeState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(ProbeState::Failed)
    }

    /// Set the current state.
    pub fn set_state(&self, state: ProbeState) {
        if let Ok(mut s) = self.state.lock() {
            *s = state;
        }
    }

    /// Last error (exit status, spawn failure, unsupported kernel …).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Record the last error.
    pub fn set_last_error(&self, err: Option<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = err;
        }
    }
}

/// Registry of all per-probe stats plus daemon-wide counters.
#[derive(Debug, Default)]
pub struct Telemetry {
    probes: RwLock<BTreeMap<String, Arc<ProbeStats>>>,
    /// Time spent rendering the last `/metrics` response, in microseconds.
    pub last_scrape_us: AtomicU64,
    /// Number of `/metrics` scrapes served.
    pub scrapes: AtomicU64,
    /// Push sinks (Kafka, log files, OTLP).
    pub sinks: SinkRegistry,
    /// Event lines by outcome.
    pub events: EventCounters,
    /// Probe discovery: refused files, failed scans.
    pub discovery: DiscoveryCounters,
    /// HTTP servers: connections, refusals, timeouts.
    pub http: HttpServers,
    /// Flame graph pages (`GET /flamegraph/…`) by result.
    pub flamegraph: FlamegraphCounters,
    /// `.meta` loads and refusals (shared with the ingest path).
    pub meta: Arc<crate::meta::MetaCounters>,
    /// Per-probe custom labels (set by the REST API, read by the ingest path) and their
    /// conflict counters.
    pub custom_labels: Arc<crate::custom_labels::CustomLabels>,
    /// The container directory (container and pod labels), once it runs.
    pub containers: std::sync::OnceLock<crate::container_labels::ContainerLabeler>,
    /// The snooper resolver's counters, once it runs.
    pub snooper: std::sync::OnceLock<Arc<crate::control::snooper::ResolverCounters>>,
    /// SIGHUP reloads whose configuration was applied.
    pub config_reloads: AtomicU64,
    /// SIGHUP reloads refused because the file was invalid (old configuration kept).
    pub config_reload_failures: AtomicU64,
}

impl Telemetry {
    /// Get or create the stats for `name`.
    pub fn probe(&self, name: &str) -> Arc<ProbeStats> {
        if let Ok(map) = self.probes.read() {
            if let Some(s) = map.get(name) {
                return Arc::clone(s);
            }
        }
        let mut map = match self.probes.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(
            map.entry(name.to_string())
                .or_insert_with(|| Arc::new(ProbeStats::new(name))),
        )
    }

    /// Forget a probe that no longer exists (drop-in removed).
    pub fn remove_probe(&self, name: &str) {
        if let Ok(mut map) = self.probes.write() {
            map.remove(name);
        }
    }

    /// Snapshot of all probe stats, sorted by name.
    pub fn probes(&self) -> Vec<Arc<ProbeStats>> {
        match self.probes.read() {
            Ok(map) => map.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        }
    }
}
