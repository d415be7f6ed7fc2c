//! Snooper resolution: which processes a probe observes (upstream's "snoopers", reference
//! §5.3 and §5.6).
//!
//! A REST client selects processes per probe with a [`Selector`] (pids, comm regex + cmdline
//! substring, container ids and names, pod ids and pod labels) in a [`Mode`]: whitelist
//! (only the matched processes), blacklist (every process except them) or all. The
//! [`Resolver`] turns that into a concrete pid set per probe ([`Resolved`]) and keeps it current
//! while processes come and go, publishing on a watch channel per probe.
//!
//! How: one std thread (`gg-snooper`) scans `/proc` once, then follows the kernel's process
//! events connector (fork, exec, comm, exit; `connector`). If the connector cannot be opened
//! (not root, not in the initial namespaces, no `CONFIG_PROC_EVENTS`) it rescans `/proc` every
//! second instead ([`Resolver::source`] says which). Events the kernel drops (`ENOBUFS`) are
//! repaired by a full rescan. Publications per probe are coalesced: at most one every
//! [`ResolverOpts::push_interval`], and only when the value changed.
//!
//! Rules: the daemon's own process and its descendants (probes and their children) are never
//! matched — a whitelist never contains them, a blacklist always excludes them; kernel threads
//! are never matched; at most [`ResolverOpts::max_pids`] pids are published per probe (pids
//! already published keep their place, the cap hit is counted and logged once per probe).
//!
//! Container and pod kinds: a process's container is read from its cgroup file on first need
//! (again after an exec: `podman exec` and `kubectl exec` processes are moved into the container
//! before they exec), its name and pod from [`ContainerDirectory`] (the daemon's runtime cache).
//! A process started in a matched container later is matched through its fork/exec events; a
//! container whose name or pod becomes known later is matched when the directory's generation
//! moves (checked at least every [`CONTAINER_POLL`] while a probe selects by name or pod).
//!
//! Known limits: a process is matched when its probe may next publish, so one that lives shorter
//! than the push interval may never be listed; a process whose main thread exits before its
//! other threads is dropped at that exit; with periodic scans only, an exec that keeps the comm
//! is seen through the command line, which is re-read at each scan for comm-matching processes.

mod connector;
mod engine;
mod procfs;
mod worker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

pub use procfs::{ContainerDirectory, MAX_CMDLINE_BYTES};

/// How often the resolver looks for container name or pod changes while a probe selects by
/// them.
pub const CONTAINER_POLL: Duration = Duration::from_millis(250);

/// Most entries in one snooper list (upstream's limit of 100 snooper confs).
pub const MAX_SNOOPERS: usize = 100;
/// Default cap of published pids per probe (upstream's limit of 1000 resolved objects).
pub const MAX_RESOLVED_PIDS: usize = 1000;
/// Most probes with snoopers or subscribers at once.
pub const MAX_PROBES: usize = 1024;
/// Longest probe name, container or pod string, label key or value, comm regex (bytes).
pub const MAX_TEXT_BYTES: usize = 256;
/// Most changes waiting for the resolver thread; more are refused ([`SnooperError::Busy`]).
pub const MAX_QUEUED_CHANGES: usize = 1024;

/// Compiled size limit of a `comm` regex.
const COMM_REGEX_SIZE_LIMIT: usize = 1 << 16;

/// A `proc_name` snooper's `comm` pattern compiled (bounded in size): the one rule REST
/// validation and the resolver both use.
pub fn comm_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(COMM_REGEX_SIZE_LIMIT)
        .build()
}

/// One `proc_name` snooper: processes whose comm matches `comm` and whose command line contains
/// `cmdline`.
#[derive(Debug, Clone)]
pub struct ProcName {
    /// Searched (unanchored, like upstream's `regexec`) in the process's comm.
    pub comm: regex::Regex,
    /// Substring of `/proc/PID/cmdline` with NULs read as spaces; empty matches any.
    pub cmdline: String,
    /// Label `(key, value)` attached to the processes this entry matches.
    pub label: Option<(String, String)>,
}

/// The snoopers of one probe (a whitelist or a blacklist).
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Process ids.
    pub proc_id: Vec<u32>,
    /// comm/cmdline patterns.
    pub proc_name: Vec<ProcName>,
    /// Container ids: a process in a container whose id starts with one (hex, any case).
    pub container_id: Vec<String>,
    /// Container names: a process in a container of that name.
    pub container_name: Vec<String>,
    /// Pod uids (with or without hyphens): a process in a container of that pod.
    pub pod_id: Vec<String>,
    /// Pod labels, `key` or `key=value`: a process in a pod with that label.
    pub pod_labels: Vec<String>,
}

/// Why a selector or a probe was refused, or the resolver could not start.
#[derive(Debug, thiserror::Error)]
pub enum SnooperError {
    /// A snooper list is longer than [`MAX_SNOOPERS`].
    #[error("snoopers.{field}: at most {max} entries")]
    TooManyEntries {
        /// The list (`proc_id`, `proc_name`, …).
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// A string in a snooper list is too long.
    #[error("snoopers.{field}: an entry is longer than {max} bytes")]
    TooLong {
        /// The list and part (`proc_name.cmdline`, `pod_id`, …).
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// The probe name is empty or longer than [`MAX_TEXT_BYTES`].
    #[error("snooper probe name must be 1 to {MAX_TEXT_BYTES} bytes")]
    BadProbeName,
    /// [`MAX_PROBES`] probes already have snoopers or subscribers.
    #[error("too many probes with snoopers (at most {MAX_PROBES})")]
    TooManyProbes,
    /// [`MAX_QUEUED_CHANGES`] changes are already waiting for the resolver thread (or it has
    /// stopped).
    #[error("snooper resolver busy: too many changes waiting")]
    Busy,
    /// The resolver's thread or wake-up descriptor could not be created.
    #[error("cannot start the snooper resolver: {0}")]
    Start(#[source] io::Error),
}

impl Selector {
    /// Check every bound: entries per list, string lengths.
    pub fn validate(&self) -> Result<(), SnooperError> {
        let counts = [
            ("proc_id", self.proc_id.len()),
            ("proc_name", self.proc_name.len()),
            ("container_id", self.container_id.len()),
            ("container_name", self.container_name.len()),
            ("pod_id", self.pod_id.len()),
            ("pod_labels", self.pod_labels.len()),
        ];
        for (field, n) in counts {
            if n > MAX_SNOOPERS {
                return Err(SnooperError::TooManyEntries {
                    field,
                    max: MAX_SNOOPERS,
                });
            }
        }
        let too_long = |field, max| SnooperError::TooLong { field, max };
        for p in &self.proc_name {
            if p.comm.as_str().len() > MAX_TEXT_BYTES {
                return Err(too_long("proc_name.comm", MAX_TEXT_BYTES));
            }
            if p.cmdline.len() > MAX_CMDLINE_BYTES {
                return Err(too_long("proc_name.cmdline", MAX_CMDLINE_BYTES));
            }
            if let Some((k, v)) = &p.label {
                if k.len() > MAX_TEXT_BYTES || v.len() > MAX_TEXT_BYTES {
                    return Err(too_long("proc_name.label", MAX_TEXT_BYTES));
                }
            }
        }
        let texts = [
            ("container_id", &self.container_id),
            ("container_name", &self.container_name),
            ("pod_id", &self.pod_id),
            ("pod_labels", &self.pod_labels),
        ];
        for (field, list) in texts {
            if list.iter().any(|s| s.len() > MAX_TEXT_BYTES) {
                return Err(too_long(field, MAX_TEXT_BYTES));
            }
        }
        Ok(())
    }

    /// No snooper at all.
    pub fn is_empty(&self) -> bool {
        self.proc_id.is_empty()
            && self.proc_name.is_empty()
            && self.container_id.is_empty()
            && self.container_name.is_empty()
            && self.pod_id.is_empty()
            && self.pod_labels.is_empty()
    }

    /// Selects by container or pod at all (the process's cgroup is read then).
    pub fn by_container(&self) -> bool {
        !(self.container_id.is_empty()
            && self.container_name.is_empty()
            && self.pod_id.is_empty()
            && self.pod_labels.is_empty())
    }

    /// Selects by what the container runtime knows (names, pod labels), which may arrive after
    /// the process is seen.
    pub fn by_runtime_info(&self) -> bool {
        !(self.container_name.is_empty() && self.pod_labels.is_empty())
    }

    /// Does a process in container `c` (with `info`, if known) match a container or pod kind?
    pub fn matches_container(
        &self,
        c: &container_info::cgroup::ContainerRef,
        info: Option<&container_info::info::ContainerInfo>,
    ) -> bool {
        let id_hit = self.container_id.iter().any(|want| {
            !want.is_empty()
                && c.id.len() >= want.len()
                && c.id.as_bytes()[..want.len()].eq_ignore_ascii_case(want.as_bytes())
        });
        if id_hit {
            return true;
        }
        let pod_uid = c
            .pod_uid
            .as_deref()
            .or_else(|| info.and_then(|i| i.pod.as_ref()).map(|p| p.uid.as_str()));
        if let Some(uid) = pod_uid {
            let bare = |s: &str| -> String {
                s.chars()
                    .filter(|c| *c != '-')
                    .map(|c| c.to_ascii_lowercase())
                    .collect()
            };
            let uid = bare(uid);
            if !uid.is_empty() && self.pod_id.iter().any(|p| bare(p) == uid) {
                return true;
            }
        }
        let Some(info) = info else {
            return false;
        };
        if !info.name.is_empty() && self.container_name.contains(&info.name) {
            return true;
        }
        let Some(pod) = &info.pod else {
            return false;
        };
        self.pod_labels.iter().any(|l| match l.split_once('=') {
            Some((k, v)) => pod.labels.get(k).is_some_and(|have| have == v),
            None => pod.labels.contains_key(l.as_str()),
        })
    }
}

/// Which processes a probe observes.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// Every process (no snoopers).
    #[default]
    All,
    /// Only the processes the selector matches.
    Whitelist(Selector),
    /// Every process except those the selector matches.
    Blacklist(Selector),
}

/// A probe's resolved snoopers, as published on its channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Whitelist: the pids to observe. Blacklist: the pids to exclude (the matched ones and the
    /// daemon's own). All: empty. At most [`ResolverOpts::max_pids`].
    pub pids: BTreeSet<u32>,
    /// Whitelist: pid → label of the first `proc_name` entry that matched it, if it has one.
    pub labels: BTreeMap<u32, (String, String)>,
}

/// The resolver's self-metrics (monotonic counters).
#[derive(Debug, Default)]
pub struct ResolverCounters {
    /// Process events received from the connector (after the in-kernel filter).
    pub events: AtomicU64,
    /// Times the kernel reported dropped events (`ENOBUFS`); each is repaired by a rescan.
    pub events_lost: AtomicU64,
    /// Full `/proc` scans (start, after lost events, every second without the connector).
    pub rescans: AtomicU64,
    /// Times a probe's matched set went over the cap (pids left out).
    pub truncations: AtomicU64,
    /// New values published to probes' channels.
    pub pushes: AtomicU64,
}

/// How the resolver runs.
#[derive(Debug, Clone)]
pub struct ResolverOpts {
    /// Root of the processes never matched (the daemon): it and every descendant.
    pub root_pid: u32,
    /// Most pids published per probe.
    pub max_pids: usize,
    /// Least time between two publications to one probe.
    pub push_interval: Duration,
    /// Period of the `/proc` rescan when the connector is not available.
    pub rescan_interval: Duration,
    /// Try the proc connector; false forces periodic rescans.
    pub use_connector: bool,
    /// Which container and pod a process is in (none: container and pod kinds match nothing).
    pub containers: Option<Arc<dyn ContainerDirectory>>,
}

impl std::fmt::Debug for dyn ContainerDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContainerDirectory")
    }
}

impl Default for ResolverOpts {
    fn default() -> Self {
        ResolverOpts {
            root_pid: std::process::id(),
            max_pids: MAX_RESOLVED_PIDS,
            push_interval: Duration::from_millis(100),
            rescan_interval: Duration::from_secs(1),
            use_connector: true,
            containers: None,
        }
    }
}

/// What [`Resolver::source`] reports while the connector is used.
pub const SOURCE_CONNECTOR: &str = "proc_connector";
/// What [`Resolver::source`] reports while `/proc` is rescanned periodically.
pub const SOURCE_SCAN: &str = "proc_scan";

/// A probe's channel; the generation tells a stale publication (for a removed and re-added
/// probe) from a current one.
struct Channel {
    generation: u64,
    tx: watch::Sender<Arc<Resolved>>,
}

/// Sent to the resolver thread.
enum Command {
    Set {
        probe: String,
        mode: Mode,
        generation: u64,
    },
    Remove {
        probe: String,
    },
}

/// State shared by the handles and the thread.
struct Shared {
    channels: Mutex<HashMap<String, Channel>>,
    next_generation: AtomicU64,
    counters: Arc<ResolverCounters>,
    /// CPU time of the resolver thread (ns), published by the thread after each wake-up.
    cpu_ns: AtomicU64,
    /// 0: connector, 1: scan.
    source: AtomicU8,
    /// eventfd that wakes the thread for commands and shutdown.
    wake: OwnedFd,
}

impl Shared {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN) still
        // leaves it readable, which is all a wake-up needs.
        let _ = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    fn publish(&self, probe: &str, generation: u64, resolved: Arc<Resolved>) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ch) = channels.get(probe) {
            if ch.generation == generation {
                // Counted first: a receiver may look at the counters as soon as it wakes.
                self.counters.pushes.fetch_add(1, Ordering::Relaxed);
                ch.tx.send_replace(resolved);
            }
        }
    }
}

struct Handle {
    shared: Arc<Shared>,
    commands: mpsc::SyncSender<Command>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The thread sees the closed command channel and ends.
        self.shared.wake();
    }
}

/// The snooper resolver: a handle (cheap to clone) to its thread. The thread ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("source", &self.source())
            .finish_non_exhaustive()
    }
}

fn valid_probe(probe: &str) -> Result<(), SnooperError> {
    if probe.is_empty() || probe.len() > MAX_TEXT_BYTES {
        return Err(SnooperError::BadProbeName);
    }
    Ok(())
}

impl Resolver {
    /// Open the proc connector (waiting at most half a second for the kernel's answer) and start
    /// the resolver thread, which scans `/proc` first. Needs no runtime; the channels work with
    /// tokio's.
    pub fn start(opts: ResolverOpts) -> Result<Resolver, SnooperError> {
        // SAFETY: plain eventfd(2); the fd is owned at once.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(SnooperError::Start(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(raw) };
        let connector = if opts.use_connector {
            match connector::Connector::open(Duration::from_millis(500)) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "snooper: no proc connector; rescanning /proc every {:?}", opts.rescan_interval);
                    None
                }
            }
        } else {
            None
        };
        let shared = Arc::new(Shared {
            channels: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            counters: Arc::default(),
            cpu_ns: AtomicU64::new(0),
            source: AtomicU8::new(if connector.is_some() { 0 } else { 1 }),
            wake,
        });
        let (commands, rx) = mpsc::sync_channel(MAX_QUEUED_CHANGES);
        let engine = engine::Engine::new(
            procfs::LiveProc::with_containers(opts.containers.clone()),
            opts.root_pid,
            opts.max_pids,
            Arc::clone(&shared.counters),
        );
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("gg-snooper".into())
            .spawn(move || worker::run(engine, connector, rx, thread_shared, &opts))
            .map_err(SnooperError::Start)?;
        Ok(Resolver {
            inner: Arc::new(Handle { shared, commands }),
        })
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.inner
            .shared
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn channel_generation(
        &self,
        channels: &mut HashMap<String, Channel>,
        probe: &str,
    ) -> Result<u64, SnooperError> {
        if let Some(ch) = channels.get(probe) {
            return Ok(ch.generation);
        }
        if channels.len() >= MAX_PROBES {
            return Err(SnooperError::TooManyProbes);
        }
        let generation = self
            .inner
            .shared
            .next_generation
            .fetch_add(1, Ordering::Relaxed);
        let (tx, _) = watch::channel(Arc::new(Resolved::default()));
        channels.insert(probe.to_string(), Channel { generation, tx });
        Ok(generation)
    }

    /// Set (or replace) `probe`'s snoopers. Validated here; resolved on the resolver thread and
    /// published on `probe`'s channel.
    pub fn set(&self, probe: &str, mode: Mode) -> Result<(), SnooperError> {
        valid_probe(probe)?;
        if let Mode::Whitelist(s) | Mode::Blacklist(s) = &mode {
            s.validate()?;
        }
        let generation = {
            let mut channels = self.channels();
            self.channel_generation(&mut channels, probe)?
        };
        let sent = self.inner.commands.try_send(Command::Set {
            probe: probe.to_string(),
            mode,
            generation,
        });
        self.inner.shared.wake();
        sent.map_err(|_| SnooperError::Busy)
    }

    /// Forget `probe`: its snoopers and its channel (receivers see it closed). Waits only if
    /// [`MAX_QUEUED_CHANGES`] changes are queued (the thread takes them all at its next wake-up).
    pub fn remove(&self, probe: &str) {
        if self.channels().remove(probe).is_none() {
            return;
        }
        self.inner.shared.wake();
        // Fails only if the thread has stopped, and then there is nothing left to forget.
        let _ = self.inner.commands.send(Command::Remove {
            probe: probe.to_string(),
        });
        self.inner.shared.wake();
    }

    /// A receiver of `probe`'s resolved snoopers (empty until its first resolution). If the
    /// name is invalid or [`MAX_PROBES`] is reached, the receiver is already closed.
    pub fn subscribe(&self, probe: &str) -> watch::Receiver<Arc<Resolved>> {
        let mut channels = self.channels();
        if valid_probe(probe).is_ok() && self.channel_generation(&mut channels, probe).is_ok() {
            if let Some(ch) = channels.get(probe) {
                return ch.tx.subscribe();
            }
        }
        tracing::warn!(
            probe,
            "snooper: cannot subscribe (bad name or too many probes)"
        );
        watch::channel(Arc::new(Resolved::default())).1
    }

    /// CPU time used so far by the resolver thread.
    pub fn cpu_time(&self) -> Duration {
        Duration::from_nanos(self.inner.shared.cpu_ns.load(Ordering::Relaxed))
    }

    /// How processes are followed: [`SOURCE_CONNECTOR`] or [`SOURCE_SCAN`].
    pub fn source(&self) -> &'static str {
        match self.inner.shared.source.load(Ordering::Relaxed) {
            0 => SOURCE_CONNECTOR,
            _ => SOURCE_SCAN,
        }
    }

    /// The resolver's counters.
    pub fn counters(&self) -> Arc<ResolverCounters> {
        Arc::clone(&self.inner.shared.counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(comm: &str) -> ProcName {
        ProcName {
            comm: regex::Regex::new(comm).unwrap(),
            cmdline: String::new(),
            label: None,
        }
    }

    #[test]
    fn validate_names_the_field() {
        let mut s = Selector {
            proc_name: (0..MAX_SNOOPERS).map(|_| name("x")).collect(),
            ..Selector::default()
        };
        s.validate().unwrap();
        s.proc_name.push(name("y"));
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "snoopers.proc_name: at most 100 entries"
        );
        let s = Selector {
            pod_id: vec!["p".repeat(MAX_TEXT_BYTES + 1)],
            ..Selector::default()
        };
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "snoopers.pod_id: an entry is longer than 256 bytes"
        );
        let s = Selector {
            proc_name: vec![ProcName {
                cmdline: "c".repeat(MAX_CMDLINE_BYTES + 1),
                ..name("x")
            }],
            ..Selector::default()
        };
        assert!(matches!(
            s.validate(),
            Err(SnooperError::TooLong {
                field: "proc_name.cmdline",
                ..
            })
        ));
        let s = Selector {
            proc_id: (0..=MAX_SNOOPERS as u32).collect(),
            ..Selector::default()
        };
        assert!(matches!(
            s.validate(),
            Err(SnooperError::TooManyEntries {
                field: "proc_id",
                ..
            })
        ));
    }

    #[test]
    fn container_kinds_are_flagged() {
        let s = Selector {
            pod_labels: vec!["app".into()],
            ..Selector::default()
        };
        assert!(s.by_container() && s.by_runtime_info());
        let s = Selector {
            container_id: vec!["abc".into()],
            ..Selector::default()
        };
        assert!(s.by_container() && !s.by_runtime_info());
        assert!(!s.is_empty());
        assert!(Selector::default().is_empty());
    }
}
