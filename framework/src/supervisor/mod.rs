//! Supervisor: the only component that spawns processes.
//!
//! INTERFACE CONTRACT:
//! * [`ProbeSpec`] is the desired state of one probe, resolved by [`discovery`] from what
//!   [`crate::control`] declares (config `probes`, `extend_probes`, overrides) and the drop-ins
//!   found in `global.probes_dir`. The supervisor never decides *what* should run, only makes
//!   the running set match.
//! * The supervisor execs `argv` directly (no shell), in its own process group, with
//!   `PR_SET_PDEATHSIG(SIGKILL)`, stdout and stderr piped. stdout is handed to the
//!   [`OutputSink`]; stderr lines are logged with the probe name and level prefix.
//! * Stop = SIGTERM to the process group, grace period, SIGKILL; always reaped.
//! * Each run is contained (its own cgroup v2, else descendant tracking, see `supervisor/cgroup.rs`): when
//!   the probe process stops or exits, everything it started is killed before any respawn.
//! * Exit → restart with backoff 1 s doubling to 60 s, reset after a stable minute.
//!
//! [`Supervisor::reconcile`] turns a desired set into running tasks, one tokio task per probe
//! owning its whole lifecycle (gate on switch → prepare → spawn → wait → backoff → respawn).

mod cgroup;
mod child;
pub mod control_channel;
pub mod discovery;
pub mod janitor;
mod probe_task;
pub mod start_check;
mod stderr_log;
pub mod trust;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::telemetry::{ProbeStats, Telemetry};

pub use child::become_subreaper;

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

use crate::control::runtime::{Runtime, Snoopers};
use probe_decl::Snoop;

/// `switch` of a probe: the config's type, the one used everywhere.
pub use crate::config::Switch;

/// How an `auto` probe decides whether to start.
#[derive(Debug, Clone)]
pub enum StartCheck {
    /// Upstream `start_check` + `check_type = "count"`: a shell pipeline from the root-owned config;
    /// start iff the first output line parses to an integer > 0.
    ShellCount(String),
    /// Built-in, no shell: start iff some process's comm matches this regex.
    ProcessRegex(regex::Regex),
}

impl PartialEq for StartCheck {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StartCheck::ShellCount(a), StartCheck::ShellCount(b)) => a == b,
            (StartCheck::ProcessRegex(a), StartCheck::ProcessRegex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// Desired state of one probe.
#[derive(Debug, Clone, PartialEq)]
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
    /// What the probe declares about its run-time control (the `probe` group of its `.meta`).
    pub declaration: Option<Arc<probe_decl::Declaration>>,
    /// Run-time settings from REST or `probes.init` (for a probe without `reload`, already
    /// turned into flags in `argv`).
    pub runtime: Option<Arc<crate::control::runtime::Runtime>>,
}

impl ProbeSpec {
    /// Whether the probe reads the control channel.
    pub fn reloads(&self) -> bool {
        self.declaration.as_ref().is_some_and(|d| d.reload)
    }

    /// Whether `other` is the same run: everything but the run-time settings equal (those reach
    /// a running probe over its control channel, or through `argv` for one without).
    pub fn same_run(&self, other: &ProbeSpec) -> bool {
        self.name == other.name
            && self.argv == other.argv
            && self.env == other.env
            && self.origin == other.origin
            && self.switch == other.switch
            && self.start_check == other.start_check
            && self.meta_files == other.meta_files
            && self.declaration == other.declaration
    }
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

/// Timing and environment knobs of the [`Supervisor`].
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Time between SIGTERM and SIGKILL when stopping a probe.
    pub grace: Duration,
    /// First restart delay after an exit.
    pub backoff_initial: Duration,
    /// Upper bound of the restart delay; also the retry delay of a Failed probe.
    pub backoff_max: Duration,
    /// A child that ran at least this long resets the delay to `backoff_initial`.
    pub stable_after: Duration,
    /// How often an `auto` probe's start check is re-evaluated while it is not running.
    pub auto_recheck: Duration,
    /// Environment added to every child (after the spec's own env, so these win).
    pub env: Vec<(String, String)>,
    /// Put each probe run in its own cgroup v2 when one can be created (else, or when false,
    /// its descendants are tracked through the process tree). See `supervisor::cgroup`.
    pub cgroups: bool,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            grace: Duration::from_secs(5),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            auto_recheck: Duration::from_secs(30),
            env: Vec::new(),
            cgroups: true,
        }
    }
}

/// Exit code a probe uses to say "this kernel lacks what I need": retried only at `backoff_max`.
pub use record_line::EXIT_UNSUPPORTED;

/// How often orphaned zombies (re-parented to the daemon as subreaper) are collected.
const ORPHAN_REAP_INTERVAL: Duration = Duration::from_secs(3);

/// Resolves snoopers into the processes a probe observes (the daemon plugs in
/// [`crate::control::snooper`]); results reach the probe over its control channel.
pub trait SnoopResolver: Send + Sync + 'static {
    /// Resolve `snoopers` for `probe` from now on (replacing what it resolved before); the
    /// receiver follows the selection as processes start, exec and exit.
    fn resolve(&self, probe: &str, snoopers: &Snoopers) -> watch::Receiver<Snoop>;
    /// Stop resolving for `probe`.
    fn forget(&self, probe: &str);
}

/// One probe under supervision.
struct ManagedProbe {
    spec: ProbeSpec,
    stats: Arc<ProbeStats>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Run-time settings pushed to a probe with `reload` (its control channel follows them).
    runtime: watch::Sender<Option<Arc<Runtime>>>,
    /// Keeps the snooper resolution of the probe current; aborted with the probe.
    snoop_task: Option<JoinHandle<()>>,
}

struct Shared {
    sink: Arc<dyn OutputSink>,
    telemetry: Arc<Telemetry>,
    opts: SupervisorOptions,
    probes: Mutex<BTreeMap<String, ManagedProbe>>,
    /// Specs of probes being restarted (their old run stopping): still managed for
    /// [`Supervisor::spec`] and [`Supervisor::names`] meanwhile.
    restarting: Mutex<BTreeMap<String, ProbeSpec>>,
    /// Serializes reconcile/restart/shutdown; `true` once shut down.
    control: tokio::sync::Mutex<bool>,
    reaper: Mutex<Option<JoinHandle<()>>>,
    /// Scope of this supervisor's probe runs (their cgroups and tags).
    scope: u64,
    /// Snooper resolution, if the daemon provides it.
    snooper: Mutex<Option<Arc<dyn SnoopResolver>>>,
}

/// Runs the desired set of probes. Cheap to clone (a handle to shared state).
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("probes", &self.names())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves only plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Supervisor {
    /// Create a supervisor with nothing running. Must be called inside a tokio runtime: it starts
    /// the periodic collector of orphaned zombies.
    pub fn new(
        sink: Arc<dyn OutputSink>,
        telemetry: Arc<Telemetry>,
        opts: SupervisorOptions,
    ) -> Self {
        // Finds the cgroup hierarchy and kills what a SIGKILLed predecessor left behind.
        cgroup::init();
        let reaper = tokio::spawn(async {
            let mut tick = tokio::time::interval(ORPHAN_REAP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                child::reap_orphan_zombies();
            }
        });
        Supervisor {
            shared: Arc::new(Shared {
                sink,
                telemetry,
                opts,
                probes: Mutex::new(BTreeMap::new()),
                restarting: Mutex::new(BTreeMap::new()),
                control: tokio::sync::Mutex::new(false),
                reaper: Mutex::new(Some(reaper)),
                scope: cgroup::new_scope(),
                snooper: Mutex::new(None),
            }),
        }
    }

    /// Resolve probes' snoopers with `resolver` (probes started from now on).
    pub fn set_snoop_resolver(&self, resolver: Arc<dyn SnoopResolver>) {
        *lock(&self.shared.snooper) = Some(resolver);
    }

    /// Make the running set match `desired`: start new probes, stop (and retire) probes no longer
    /// desired, restart probes whose spec changed. Returns once removed probes are stopped.
    /// Duplicate names: the first spec wins. No-op after [`Supervisor::shutdown`].
    pub async fn reconcile(&self, desired: Vec<ProbeSpec>) {
        let control = self.shared.control.lock().await;
        if *control {
            return;
        }
        let mut wanted: BTreeMap<String, ProbeSpec> = BTreeMap::new();
        for spec in desired {
            if wanted.contains_key(&spec.name) {
                tracing::warn!(probe = %spec.name, "duplicate probe name, keeping the first");
                continue;
            }
            wanted.insert(spec.name.clone(), spec);
        }

        let mut removed = Vec::new();
        let mut changed = Vec::new();
        {
            let mut probes = lock(&self.shared.probes);
            let names: Vec<String> = probes.keys().cloned().collect();
            for name in names {
                match wanted.get(&name) {
                    Some(spec) if probes.get(&name).is_some_and(|p| p.spec.same_run(spec)) => {
                        if let (Some(p), Some(spec)) = (probes.get_mut(&name), wanted.remove(&name))
                        {
                            if p.spec.runtime != spec.runtime {
                                // Reaches a running probe over its control channel.
                                p.runtime.send_replace(spec.runtime.clone());
                                p.spec = spec;
                            }
                        }
                    }
                    Some(spec) => {
                        lock(&self.shared.restarting).insert(name.clone(), spec.clone());
                        changed.extend(probes.remove(&name));
                    }
                    None => removed.extend(probes.remove(&name)),
                }
            }
        }

        let stopping: Vec<&ManagedProbe> = removed.iter().chain(changed.iter()).collect();
        for p in &stopping {
            let _ = p.stop.send(true);
        }
        for p in removed.into_iter().chain(changed) {
            if let Some(t) = &p.snoop_task {
                t.abort();
            }
            // A panicked task has nothing left to clean up: its child was killed on drop.
            let _ = p.task.await;
            if !wanted.contains_key(&p.spec.name) {
                tracing::info!(probe = %p.spec.name, "probe removed");
                self.shared.sink.retire(&p.spec);
                self.shared.telemetry.remove_probe(&p.spec.name);
            } else {
                tracing::info!(probe = %p.spec.name, "probe definition changed, restarting");
            }
        }

        let mut probes = lock(&self.shared.probes);
        let mut restarting = lock(&self.shared.restarting);
        for (name, spec) in wanted {
            let managed = self.start(spec);
            restarting.remove(&name);
            probes.insert(name, managed);
        }
        restarting.clear();
        drop(restarting);
        drop(probes);
        drop(control);
    }

    /// Stop and start one probe again with the same spec (e.g. its executable was replaced).
    /// Returns false if no such probe is managed.
    pub async fn restart(&self, name: &str) -> bool {
        let control = self.shared.control.lock().await;
        if *control {
            return false;
        }
        let old = {
            let mut probes = lock(&self.shared.probes);
            let old = probes.remove(name);
            if let Some(o) = &old {
                lock(&self.shared.restarting).insert(name.to_string(), o.spec.clone());
            }
            old
        };
        let Some(old) = old else {
            return false;
        };
        let _ = old.stop.send(true);
        let _ = old.task.await;
        if let Some(t) = &old.snoop_task {
            t.abort();
        }
        let managed = self.start(old.spec);
        let mut probes = lock(&self.shared.probes);
        lock(&self.shared.restarting).remove(name);
        probes.insert(name.to_string(), managed);
        drop(control);
        true
    }

    /// Stop every probe (SIGTERM, grace, SIGKILL for each process group, in parallel), then kill
    /// and reap any remaining child of the daemon (escaped, re-parented grandchildren).
    /// Later calls to `reconcile` do nothing.
    pub async fn shutdown(&self) {
        let mut control = self.shared.control.lock().await;
        *control = true;
        let all: Vec<ManagedProbe> = std::mem::take(&mut *lock(&self.shared.probes))
            .into_values()
            .collect();
        for p in &all {
            let _ = p.stop.send(true);
        }
        for p in all {
            if let Some(t) = &p.snoop_task {
                t.abort();
            }
            let _ = p.task.await;
        }
        if let Some(reaper) = lock(&self.shared.reaper).take() {
            reaper.abort();
        }
        child::kill_orphans(self.shared.opts.grace, self.shared.scope).await;
        cgroup::release_instance();
    }

    /// Stats of a managed probe (also reachable through [`Telemetry`]).
    pub fn stats(&self, name: &str) -> Option<Arc<ProbeStats>> {
        lock(&self.shared.probes)
            .get(name)
            .map(|p| Arc::clone(&p.stats))
    }

    /// The spec a probe currently runs with (or is being restarted with).
    pub fn spec(&self, name: &str) -> Option<ProbeSpec> {
        // Both locks at once (in reconcile's order): a restart moves a name between them.
        let probes = lock(&self.shared.probes);
        let restarting = lock(&self.shared.restarting);
        probes
            .get(name)
            .map(|p| p.spec.clone())
            .or_else(|| restarting.get(name).cloned())
    }

    /// The telemetry this supervisor reports into.
    pub fn telemetry(&self) -> Arc<Telemetry> {
        Arc::clone(&self.shared.telemetry)
    }

    /// Names of all managed probes (any state, restarting ones included), sorted.
    pub fn names(&self) -> Vec<String> {
        let probes = lock(&self.shared.probes);
        let restarting = lock(&self.shared.restarting);
        let mut names: Vec<String> = probes.keys().cloned().collect();
        names.extend(restarting.keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    fn start(&self, spec: ProbeSpec) -> ManagedProbe {
        let stats = self.shared.telemetry.probe(&spec.name);
        let (stop, stop_rx) = watch::channel(false);
        let (runtime, runtime_rx) = watch::channel(spec.runtime.clone());
        let (snoop_tx, snoop_rx) = watch::channel(Snoop::default());
        let resolver = lock(&self.shared.snooper).clone();
        let snoop_task = match resolver {
            Some(r) if spec.reloads() => Some(tokio::spawn(follow_snoopers(
                spec.name.clone(),
                r,
                runtime_rx.clone(),
                snoop_tx,
            ))),
            _ => None,
        };
        let ctx = probe_task::ProbeContext {
            spec: spec.clone(),
            stats: Arc::clone(&stats),
            sink: Arc::clone(&self.shared.sink),
            opts: self.shared.opts.clone(),
            scope: self.shared.scope,
            control: control_channel::ControlInputs {
                runtime: runtime_rx,
                snoop: snoop_rx,
            },
        };
        let task = tokio::spawn(probe_task::run(ctx, stop_rx));
        ManagedProbe {
            spec,
            stats,
            stop,
            task,
            runtime,
            snoop_task,
        }
    }
}

/// Keep `snoop` equal to what `resolver` makes of the snoopers in `runtime`, re-asking it when
/// the snoopers change; ends (forgetting the probe) when the probe is dropped.
async fn follow_snoopers(
    name: String,
    resolver: Arc<dyn SnoopResolver>,
    mut runtime: watch::Receiver<Option<Arc<Runtime>>>,
    snoop: watch::Sender<Snoop>,
) {
    let mut current: Option<Snoopers> = None;
    let mut source: Option<watch::Receiver<Snoop>> = None;
    loop {
        let want = runtime
            .borrow_and_update()
            .as_ref()
            .map(|r| r.snoopers.clone())
            .unwrap_or_default();
        if current.as_ref() != Some(&want) {
            source = match &want {
                Snoopers::All => {
                    resolver.forget(&name);
                    None
                }
                other => Some(resolver.resolve(&name, other)),
            };
            current = Some(want);
        }
        let now = match &mut source {
            Some(rx) => rx.borrow_and_update().clone(),
            None => Snoop::default(),
        };
        snoop.send_if_modified(|s| {
            let changed = *s != now;
            *s = now;
            changed
        });
        let changed_source = async {
            match &mut source {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = runtime.changed() => if r.is_err() { break },
            ok = changed_source => if !ok { source = None; current = None; },
        }
    }
    resolver.forget(&name);
}
