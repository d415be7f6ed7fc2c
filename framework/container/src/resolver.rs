//! The shared container cache ([`Containers`]) and the task that fills it from the runtimes.
//!
//! The sync API ([`Containers::of_pid`], [`Containers::info`], …) is called from ingest and
//! snooper threads and never waits for a runtime: it reads `/proc/<pid>/cgroup` on a pid cache
//! miss and otherwise only takes short read locks. A container id it does not know yet is put
//! on a bounded queue for the resolver task ([`Containers::start`]), which asks the runtimes
//! over their sockets with a time limit per request, follows docker/podman events, and resyncs
//! full lists every [`Config::resync`].

use crate::cgroup::{self, ContainerRef, Runtime};
use crate::cri::{CriClient, CriContainer, CriSandbox};
use crate::docker::{self, DockerClient, EventAction};
use crate::error::ErrorKind;
use crate::host;
use crate::info::{self, ContainerInfo, PodInfo};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Docker Engine API sockets looked for by default (docker, podman's service).
pub const DEFAULT_DOCKER_SOCKETS: [&str; 3] = [
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/podman/podman.sock",
];
/// CRI sockets looked for by default (containerd, CRI-O, iSulad).
pub const DEFAULT_CRI_SOCKETS: [&str; 3] = [
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/isulad.sock",
];
/// Ids waiting for the resolver task; more are dropped (and counted).
pub const QUEUE_LEN: usize = 1024;
/// Runtime lookups of queued ids in flight at once.
pub const CONCURRENT_LOOKUPS: usize = 4;
/// Shortest time between two batches of queued ids sent to the runtimes (see
/// `serve_queue`): the most a burst of container starts adds to a new container's label
/// latency (target: 1 s).
pub const GATHER: Duration = Duration::from_millis(100);
/// How long an id whose lookup failed (runtime error) is not asked for again.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// First and longest wait before re-subscribing to a docker event stream.
pub const EVENT_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));
/// Most ids remembered as queued or recently asked for.
const PENDING_MAX: usize = 4 * QUEUE_LEN;
/// Longest container id accepted from a caller.
const ID_MAX: usize = 128;

/// What the resolver talks to and how much it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Docker Engine API sockets (docker, podman's service), tried in order.
    pub docker_sockets: Vec<PathBuf>,
    /// CRI sockets (containerd, CRI-O, iSulad), tried in order.
    pub cri_sockets: Vec<PathBuf>,
    /// Time limit of one runtime request (connect and answer).
    pub timeout: Duration,
    /// Period of the full list resync, and of re-checking absent sockets.
    pub resync: Duration,
    /// Most containers cached.
    pub max_containers: usize,
    /// How long a pid → container answer is trusted before `/proc/<pid>/cgroup` is read again.
    pub pid_ttl: Duration,
    /// Most pids cached.
    pub max_pids: usize,
}

impl Default for Config {
    /// The default sockets (each under the host root, [`host::path`]), 2 s requests, 30 s
    /// resync, 4096 containers, 65536 pids trusted for 10 s.
    fn default() -> Config {
        Config {
            docker_sockets: DEFAULT_DOCKER_SOCKETS.iter().map(host::path).collect(),
            cri_sockets: DEFAULT_CRI_SOCKETS.iter().map(host::path).collect(),
            timeout: Duration::from_secs(2),
            resync: Duration::from_secs(30),
            max_containers: 4096,
            pid_ttl: Duration::from_secs(10),
            max_pids: 65536,
        }
    }
}

/// Which API a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketKind {
    /// Docker Engine API (docker, podman).
    Docker,
    /// CRI `RuntimeService` (containerd, CRI-O, iSulad).
    Cri,
}

/// What is known of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketState {
    /// Present, not asked yet.
    Unknown,
    /// The last request succeeded.
    Ok,
    /// The path does not exist (re-checked every resync period).
    Absent,
    /// The same socket as an earlier configured path (`/var/run` → `/run`): not used.
    Duplicate,
    /// The last request failed.
    Error,
}

#[derive(Debug)]
struct SocketStatus {
    state: SocketState,
    last_error: Option<String>,
    cri: Option<CriClient>,
    id: Option<(u64, u64)>,
}

#[derive(Debug)]
struct Socket {
    kind: SocketKind,
    path: PathBuf,
    st: Mutex<SocketStatus>,
    requests: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug)]
struct PidEntry {
    cref: Option<Arc<ContainerRef>>,
    at: Instant,
}

#[derive(Debug)]
struct Entry {
    info: Arc<ContainerInfo>,
    source: usize,
}

#[derive(Debug)]
struct Lookup {
    id: String,
    hint: Option<Runtime>,
}

#[derive(Debug, Default)]
struct Atomics {
    pid_lookups: AtomicU64,
    pid_hits: AtomicU64,
    pid_reads: AtomicU64,
    pid_gone: AtomicU64,
    pid_evictions: AtomicU64,
    info_lookups: AtomicU64,
    info_hits: AtomicU64,
    info_misses: AtomicU64,
    queued: AtomicU64,
    queue_drops: AtomicU64,
    runtime_requests: AtomicU64,
    errors_timeout: AtomicU64,
    errors_connect: AtomicU64,
    errors_protocol: AtomicU64,
    not_found: AtomicU64,
    events: AtomicU64,
    event_lines_skipped: AtomicU64,
    resyncs: AtomicU64,
    container_evictions: AtomicU64,
    containers_over_limit: AtomicU64,
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// A snapshot of the resolver's counters and cache sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// [`Containers::of_pid`] calls.
    pub pid_lookups: u64,
    /// … answered from the pid cache.
    pub pid_hits: u64,
    /// `/proc/<pid>/cgroup` reads.
    pub pid_reads: u64,
    /// … that failed (process gone).
    pub pid_gone: u64,
    /// Pids dropped from a full pid cache.
    pub pid_evictions: u64,
    /// [`Containers::info`] / [`Containers::info_of`] calls.
    pub info_lookups: u64,
    /// … answered from the cache.
    pub info_hits: u64,
    /// … not in the cache.
    pub info_misses: u64,
    /// Ids queued for the resolver task.
    pub queued: u64,
    /// Ids not queued: queue full (or too many pending).
    pub queue_drops: u64,
    /// Requests sent to runtimes (list, inspect, status, event subscriptions).
    pub runtime_requests: u64,
    /// Runtime requests that timed out.
    pub errors_timeout: u64,
    /// … that could not connect.
    pub errors_connect: u64,
    /// … answered with garbage, an error status or too much.
    pub errors_protocol: u64,
    /// Queued ids no runtime knew.
    pub not_found: u64,
    /// Docker events received.
    pub events: u64,
    /// Event lines skipped (too long, not JSON, not a container event).
    pub event_lines_skipped: u64,
    /// Full list resyncs that succeeded.
    pub resyncs: u64,
    /// Containers removed: destroyed, or gone from a resync list.
    pub container_evictions: u64,
    /// Containers not kept or pushed out because `max_containers` was reached.
    pub containers_over_limit: u64,
    /// Pids cached now.
    pub pids_cached: u64,
    /// Containers cached now.
    pub containers_cached: u64,
}

/// The container cache shared by the daemon's threads (hold it in an `Arc`).
#[derive(Debug)]
pub struct Containers {
    cfg: Config,
    sockets: Vec<Socket>,
    pids: RwLock<HashMap<u32, PidEntry>>,
    /// By full id, ordered so that a short id (a prefix) is found by a range lookup.
    infos: RwLock<BTreeMap<String, Entry>>,
    /// CRI sandbox id → pod (bounded by `max_containers`).
    pods: RwLock<HashMap<String, Arc<PodInfo>>>,
    /// Ids queued or recently asked for → not asked again before this instant.
    pending: Mutex<HashMap<String, Instant>>,
    tx: mpsc::Sender<Lookup>,
    rx: Mutex<Option<mpsc::Receiver<Lookup>>>,
    generation: AtomicU64,
    /// Some caller uses pod labels ([`Containers::want_pod_labels`]): a lookup of a container in
    /// a pod not cached yet also asks for the pod (CRI `PodSandboxStatus`).
    pod_labels_wanted: std::sync::atomic::AtomicBool,
    n: Atomics,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Containers {
    /// A cache for `cfg`'s sockets; nothing is asked of a runtime before [`Self::start`].
    pub fn new(cfg: Config) -> Arc<Containers> {
        let socket = |kind, path: &PathBuf| Socket {
            kind,
            path: path.clone(),
            st: Mutex::new(SocketStatus {
                state: SocketState::Unknown,
                last_error: None,
                cri: None,
                id: None,
            }),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        };
        let sockets = cfg
            .docker_sockets
            .iter()
            .map(|p| socket(SocketKind::Docker, p))
            .chain(cfg.cri_sockets.iter().map(|p| socket(SocketKind::Cri, p)))
            .collect();
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        Arc::new(Containers {
            cfg,
            sockets,
            pids: RwLock::new(HashMap::new()),
            infos: RwLock::new(BTreeMap::new()),
            pods: RwLock::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            tx,
            rx: Mutex::new(Some(rx)),
            generation: AtomicU64::new(0),
            pod_labels_wanted: std::sync::atomic::AtomicBool::new(false),
            n: Atomics::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The container host process `pid` runs in (`None`: a host process, or gone). Cached for
    /// [`Config::pid_ttl`]; a miss reads `/proc/<pid>/cgroup` (under the host root).
    pub fn of_pid(&self, pid: u32) -> Option<Arc<ContainerRef>> {
        inc(&self.n.pid_lookups);
        let now = Instant::now();
        if let Some(e) = read(&self.pids).get(&pid) {
            if now.saturating_duration_since(e.at) < self.cfg.pid_ttl {
                inc(&self.n.pid_hits);
                return e.cref.clone();
            }
        }
        inc(&self.n.pid_reads);
        let cref = match cgroup::read_pid(pid) {
            Ok(r) => r.map(Arc::new),
            Err(_) => {
                inc(&self.n.pid_gone);
                write(&self.pids).remove(&pid);
                return None;
            }
        };
        let mut pids = write(&self.pids);
        if pids.len() >= self.cfg.max_pids && !pids.contains_key(&pid) {
            let before = pids.len();
            pids.retain(|_, e| now.saturating_duration_since(e.at) < self.cfg.pid_ttl);
            if pids.len() >= self.cfg.max_pids {
                // Still full of fresh entries: drop a quarter, whichever the map yields first.
                let drop: Vec<u32> = pids.keys().take(before.div_ceil(4)).copied().collect();
                for p in drop {
                    pids.remove(&p);
                }
            }
            self.n
                .pid_evictions
                .fetch_add((before - pids.len()) as u64, Ordering::Relaxed);
        }
        if self.cfg.max_pids > 0 {
            pids.insert(
                pid,
                PidEntry {
                    cref: cref.clone(),
                    at: now,
                },
            );
        }
        cref
    }

    /// Pod labels are used from now on (a probe copies some onto its series, or selects by
    /// them): a CRI lookup of a container whose pod is not cached asks for the pod too. Until
    /// then a new pod costs no `PodSandboxStatus` (its name, namespace and uid come with the
    /// container's own labels); the periodic resync lists every pod with its labels either way.
    pub fn want_pod_labels(&self) {
        self.pod_labels_wanted.store(true, Ordering::Relaxed);
    }

    /// Process `parent` forked `child`: a fork does not change cgroups, so the child is in its
    /// parent's container. Copies the parent's cached container (no file read) so that a child
    /// that exits before its first record is looked up still gets its labels; nothing when the
    /// parent is not cached, or is a host process (a runtime's helper forks on the host and
    /// moves the child into the container before it execs: that child is read when asked).
    pub fn note_fork(&self, parent: u32, child: u32) {
        let now = Instant::now();
        let (cref, fresh) = match read(&self.pids).get(&parent) {
            Some(e) if e.cref.is_some() => (
                e.cref.clone(),
                now.saturating_duration_since(e.at) < self.cfg.pid_ttl,
            ),
            _ => return,
        };
        // A parent last seen in a container a while ago is read again (it is alive: it forked).
        let cref = if fresh { cref } else { self.of_pid(parent) };
        if cref.is_none() {
            return;
        }
        let mut pids = write(&self.pids);
        if pids.len() < self.cfg.max_pids || pids.contains_key(&child) {
            pids.insert(child, PidEntry { cref, at: now });
        }
    }

    /// Process `pid` executed a program: forget its cached container. A runtime's helper
    /// (`runc exec`, `podman exec`, `kubectl exec`) is forked on the host, joins the container's
    /// cgroup and then execs; an answer cached before the exec would keep it a host process.
    pub fn note_exec(&self, pid: u32) {
        write(&self.pids).remove(&pid);
    }

    /// What is known of container `id` (full id). A miss queues the id for the resolver task
    /// (without waiting) and answers `None`; ask again later (see [`Self::generation`]).
    pub fn info(&self, id: &str) -> Option<Arc<ContainerInfo>> {
        self.lookup(id, None)
    }

    /// [`Self::info`] for a container found by [`Self::of_pid`]: a miss asks the runtime the
    /// cgroup path names first.
    pub fn info_of(&self, r: &ContainerRef) -> Option<Arc<ContainerInfo>> {
        self.lookup(&r.id, Some(r.runtime))
    }

    /// The cached container whose id starts with `prefix` (a short id such as a table's
    /// 12-character `container_id`), if exactly one does; without queuing a miss.
    pub fn cached_prefix(&self, prefix: &str) -> Option<Arc<ContainerInfo>> {
        if prefix.is_empty() {
            return None;
        }
        let infos = read(&self.infos);
        let mut hits = infos
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(id, _)| id.starts_with(prefix));
        let (_, first) = hits.next()?;
        if hits.next().is_some() {
            return None;
        }
        Some(first.info.clone())
    }

    /// What is cached of container `id`, without queuing a miss.
    pub fn cached(&self, id: &str) -> Option<Arc<ContainerInfo>> {
        read(&self.infos).get(id).map(|e| e.info.clone())
    }

    /// The series labels of host process `pid` ([`info::series_labels`]); empty for a host
    /// process. Never waits for a runtime: labels not known yet are omitted.
    pub fn labels_of_pid(&self, pid: u32, pod_labels: &[String]) -> Vec<(String, String)> {
        match self.of_pid(pid) {
            Some(r) => info::series_labels(&r, self.info_of(&r).as_deref(), pod_labels),
            None => Vec::new(),
        }
    }

    fn lookup(&self, id: &str, hint: Option<Runtime>) -> Option<Arc<ContainerInfo>> {
        inc(&self.n.info_lookups);
        if let Some(e) = read(&self.infos).get(id) {
            inc(&self.n.info_hits);
            return Some(e.info.clone());
        }
        inc(&self.n.info_misses);
        self.request(id, hint);
        None
    }

    /// Queue `id` for the resolver task unless it is queued or was asked for recently.
    fn request(&self, id: &str, hint: Option<Runtime>) {
        if !valid_id(id) {
            return;
        }
        let now = Instant::now();
        let mut pending = lock(&self.pending);
        if pending.get(id).is_some_and(|until| now < *until) {
            return;
        }
        if pending.len() >= PENDING_MAX {
            pending.retain(|_, until| now < *until);
            if pending.len() >= PENDING_MAX {
                inc(&self.n.queue_drops);
                return;
            }
        }
        let lookup = Lookup {
            id: id.to_string(),
            hint,
        };
        match self.tx.try_send(lookup) {
            Ok(()) => {
                inc(&self.n.queued);
                // In flight: the resolver sets the real retry time when done.
                pending.insert(id.to_string(), now + Duration::from_secs(3600));
            }
            Err(_) => {
                pending.remove(id);
                inc(&self.n.queue_drops);
            }
        }
    }

    /// Bumped whenever a container is added, changed or removed: a caller holding labels can
    /// compare it to know whether to look again.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every cached container.
    pub fn all(&self) -> Vec<Arc<ContainerInfo>> {
        read(&self.infos).values().map(|e| e.info.clone()).collect()
    }

    /// Counters and cache sizes.
    pub fn counters(&self) -> Counters {
        let n = &self.n;
        Counters {
            pid_lookups: get(&n.pid_lookups),
            pid_hits: get(&n.pid_hits),
            pid_reads: get(&n.pid_reads),
            pid_gone: get(&n.pid_gone),
            pid_evictions: get(&n.pid_evictions),
            info_lookups: get(&n.info_lookups),
            info_hits: get(&n.info_hits),
            info_misses: get(&n.info_misses),
            queued: get(&n.queued),
            queue_drops: get(&n.queue_drops),
            runtime_requests: get(&n.runtime_requests),
            errors_timeout: get(&n.errors_timeout),
            errors_connect: get(&n.errors_connect),
            errors_protocol: get(&n.errors_protocol),
            not_found: get(&n.not_found),
            events: get(&n.events),
            event_lines_skipped: get(&n.event_lines_skipped),
            resyncs: get(&n.resyncs),
            container_evictions: get(&n.container_evictions),
            containers_over_limit: get(&n.containers_over_limit),
            pids_cached: read(&self.pids).len() as u64,
            containers_cached: read(&self.infos).len() as u64,
        }
    }

    /// Each socket (kind, path, state, last error, requests, errors), the cache sizes and
    /// the counters, as JSON for the daemon's status API.
    pub fn status(&self) -> serde_json::Value {
        let sockets: Vec<serde_json::Value> = self
            .sockets
            .iter()
            .map(|s| {
                let st = lock(&s.st);
                serde_json::json!({
                    "kind": s.kind,
                    "path": s.path.display().to_string(),
                    "state": st.state,
                    "last_error": st.last_error,
                    "requests": get(&s.requests),
                    "errors": get(&s.errors),
                })
            })
            .collect();
        let counters = self.counters();
        serde_json::json!({
            "sockets": sockets,
            "containers": counters.containers_cached,
            "pids": counters.pids_cached,
            "generation": self.generation(),
            "counters": counters,
        })
    }

    /// The state of the socket at `path`, if configured.
    pub fn socket_state(&self, path: &std::path::Path) -> Option<SocketState> {
        self.sockets
            .iter()
            .find(|s| s.path == path)
            .map(|s| lock(&s.st).state)
    }

    /// Spawn the resolver on the current tokio runtime: it watches the sockets, follows
    /// docker events, serves queued ids and resyncs every [`Config::resync`]. Aborting the
    /// handle stops all of it. A second call returns a task that ends at once.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.run().await })
    }

    async fn run(self: Arc<Self>) {
        let Some(rx) = lock(&self.rx).take() else {
            return;
        };
        let mut tasks = JoinSet::new();
        for (i, s) in self.sockets.iter().enumerate() {
            if s.kind == SocketKind::Docker {
                tasks.spawn(self.clone().follow_events(i));
            }
        }
        tasks.spawn(self.clone().resync_loop());
        tasks.spawn(self.clone().serve_queue(rx));
        while tasks.join_next().await.is_some() {}
    }

    // ---- cache updates (never held across an await) ----

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn put(&self, info: ContainerInfo, source: usize) {
        let id = info.id.clone();
        {
            let mut infos = write(&self.infos);
            if let Some(e) = infos.get(&id) {
                if *e.info == info && e.source == source {
                    return;
                }
            } else if infos.len() >= self.cfg.max_containers {
                inc(&self.n.containers_over_limit);
                let Some(victim) = infos.keys().next().cloned() else {
                    return;
                };
                infos.remove(&victim);
            }
            infos.insert(
                id.clone(),
                Entry {
                    info: Arc::new(info),
                    source,
                },
            );
        }
        lock(&self.pending).remove(&id);
        self.bump();
    }

    fn remove(&self, id: &str) {
        if write(&self.infos).remove(id).is_some() {
            inc(&self.n.container_evictions);
            self.bump();
        }
    }

    /// Make the containers of socket `source` exactly `list` (bounded by `max_containers`).
    fn replace_from(&self, source: usize, list: Vec<ContainerInfo>) {
        let mut changed = false;
        {
            let mut infos = write(&self.infos);
            let keep: HashSet<&str> = list.iter().map(|i| i.id.as_str()).collect();
            let before = infos.len();
            infos.retain(|id, e| e.source != source || keep.contains(id.as_str()));
            let gone = before - infos.len();
            if gone > 0 {
                changed = true;
                self.n
                    .container_evictions
                    .fetch_add(gone as u64, Ordering::Relaxed);
            }
            for info in list {
                match infos.get(&info.id) {
                    Some(e) if *e.info == info && e.source == source => continue,
                    None if infos.len() >= self.cfg.max_containers => {
                        inc(&self.n.containers_over_limit);
                        continue;
                    }
                    _ => {}
                }
                changed = true;
                infos.insert(
                    info.id.clone(),
                    Entry {
                        info: Arc::new(info),
                        source,
                    },
                );
            }
        }
        if changed {
            self.bump();
        }
    }

    // ---- sockets ----

    fn count_request(&self, i: usize) {
        inc(&self.n.runtime_requests);
        inc(&self.sockets[i].requests);
    }

    fn record_ok(&self, i: usize) {
        let mut st = lock(&self.sockets[i].st);
        st.state = SocketState::Ok;
    }

    fn record_error(&self, i: usize, kind: ErrorKind, text: String) {
        let s = &self.sockets[i];
        inc(&s.errors);
        inc(match kind {
            ErrorKind::Timeout => &self.n.errors_timeout,
            ErrorKind::Connect => &self.n.errors_connect,
            ErrorKind::Protocol => &self.n.errors_protocol,
        });
        let mut st = lock(&s.st);
        st.state = SocketState::Error;
        st.last_error = Some(format!("{}: {text}", kind.as_str()));
        if kind != ErrorKind::Protocol {
            // A fresh gRPC channel next time (the socket may have been replaced).
            st.cri = None;
        }
    }

    /// Whether socket `i` exists and is not the same file as an earlier present socket;
    /// updates its state to `Absent`/`Duplicate`.
    fn check_present(&self, i: usize) -> bool {
        use std::os::unix::fs::MetadataExt;
        let s = &self.sockets[i];
        let Ok(md) = std::fs::metadata(&s.path) else {
            let mut st = lock(&s.st);
            st.state = SocketState::Absent;
            st.cri = None;
            st.id = None;
            return false;
        };
        let me = (md.dev(), md.ino());
        let dup = self.sockets[..i].iter().any(|o| {
            let st = lock(&o.st);
            st.id == Some(me) && !matches!(st.state, SocketState::Absent | SocketState::Duplicate)
        });
        let mut st = lock(&s.st);
        if dup {
            st.state = SocketState::Duplicate;
            st.cri = None;
            return false;
        }
        if st.id != Some(me) {
            // A new socket file (first seen, or the runtime restarted): a fresh channel.
            st.cri = None;
        }
        st.id = Some(me);
        if matches!(st.state, SocketState::Absent | SocketState::Duplicate) {
            st.state = SocketState::Unknown;
        }
        true
    }

    fn usable(&self, i: usize) -> bool {
        !matches!(
            lock(&self.sockets[i].st).state,
            SocketState::Absent | SocketState::Duplicate
        )
    }

    fn docker(&self, i: usize) -> DockerClient {
        DockerClient::new(self.sockets[i].path.clone(), self.cfg.timeout)
    }

    async fn cri(&self, i: usize) -> Option<CriClient> {
        if let Some(c) = lock(&self.sockets[i].st).cri.clone() {
            return Some(c);
        }
        self.count_request(i);
        match CriClient::connect(&self.sockets[i].path, self.cfg.timeout).await {
            Ok(c) => {
                lock(&self.sockets[i].st).cri = Some(c.clone());
                Some(c)
            }
            Err(e) => {
                self.record_error(i, e.kind(), e.to_string());
                None
            }
        }
    }

    // ---- the resolver's tasks ----

    /// List every present socket's running containers now and make the cache agree (what the
    /// resolver task does every [`Config::resync`]); each request is time-limited.
    pub async fn resync_now(self: &Arc<Self>) {
        let mut round = JoinSet::new();
        for i in 0..self.sockets.len() {
            round.spawn(self.clone().resync_socket(i));
        }
        while round.join_next().await.is_some() {}
    }

    async fn resync_loop(self: Arc<Self>) {
        loop {
            self.resync_now().await;
            tokio::time::sleep(self.cfg.resync).await;
        }
    }

    /// List socket `i`'s running containers and make the cache agree.
    async fn resync_socket(self: Arc<Self>, i: usize) {
        if !self.check_present(i) {
            return;
        }
        let max = self.cfg.max_containers;
        let list = match self.sockets[i].kind {
            SocketKind::Docker => {
                self.count_request(i);
                match self.docker(i).list().await {
                    Ok(list) => docker_infos(&list, max),
                    Err(e) => return self.record_error(i, e.kind(), e.to_string()),
                }
            }
            SocketKind::Cri => {
                let Some(client) = self.cri(i).await else {
                    return;
                };
                self.count_request(i);
                let sandboxes = match client.list_pod_sandbox(None).await {
                    Ok(s) => s,
                    Err(e) => return self.record_error(i, e.kind(), e.to_string()),
                };
                self.count_request(i);
                let containers = match client.list_running().await {
                    Ok(c) => c,
                    Err(e) => return self.record_error(i, e.kind(), e.to_string()),
                };
                let pods: HashMap<String, Arc<PodInfo>> = sandboxes
                    .iter()
                    .take(max)
                    .map(|s| (s.id.clone(), Arc::new(s.pod.clone())))
                    .collect();
                let list = cri_infos(&containers, &sandboxes, &pods, max);
                *write(&self.pods) = pods;
                list
            }
        };
        self.record_ok(i);
        inc(&self.n.resyncs);
        self.replace_from(i, list);
    }

    async fn follow_events(self: Arc<Self>, i: usize) {
        let client = self.docker(i);
        let mut backoff = EVENT_BACKOFF.0;
        loop {
            if !self.check_present(i) {
                tokio::time::sleep(self.cfg.resync).await;
                continue;
            }
            self.count_request(i);
            match client.events().await {
                Err(e) => self.record_error(i, e.kind(), e.to_string()),
                Ok(mut events) => {
                    self.record_ok(i);
                    backoff = EVENT_BACKOFF.0;
                    // Catch up with what happened while not subscribed.
                    self.clone().resync_socket(i).await;
                    let mut skipped = 0;
                    loop {
                        let next = events.next().await;
                        let now_skipped = events.skipped();
                        self.n
                            .event_lines_skipped
                            .fetch_add(now_skipped - skipped, Ordering::Relaxed);
                        skipped = now_skipped;
                        match next {
                            Ok(Some(ev)) => {
                                inc(&self.n.events);
                                self.on_event(i, &client, ev).await;
                            }
                            Ok(None) => {
                                self.record_error(
                                    i,
                                    ErrorKind::Connect,
                                    "event stream closed".to_string(),
                                );
                                break;
                            }
                            Err(e) => {
                                self.record_error(i, e.kind(), format!("event stream: {e}"));
                                break;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(EVENT_BACKOFF.1);
        }
    }

    async fn on_event(&self, i: usize, client: &DockerClient, ev: docker::DockerEvent) {
        match ev.action {
            // A start goes through the lookup queue, which asks once per id however many
            // callers (this event, a first record of the container) want it; a restart of a
            // container already known changes nothing the labels use.
            EventAction::Start if self.cached(&ev.id).is_some() => {}
            EventAction::Start => match ev.start_info() {
                // Name, image and labels came with the event: no inspect.
                Some(info) => self.put(info, i),
                None => self.request(&ev.id, Some(Runtime::Docker)),
            },
            EventAction::Rename => {
                if let Ok(Some(info)) = self.docker_lookup(i, client, &ev.id).await {
                    self.put(info, i);
                }
            }
            EventAction::Destroy => self.remove(&ev.id),
            EventAction::Other(_) => {}
        }
    }

    /// Inspect `id` (and its cri-dockerd sandbox for the pod's labels).
    async fn docker_lookup(
        &self,
        i: usize,
        client: &DockerClient,
        id: &str,
    ) -> Result<Option<ContainerInfo>, ()> {
        self.count_request(i);
        let c = match client.inspect(id).await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.record_error(i, e.kind(), e.to_string());
                return Err(());
            }
        };
        self.record_ok(i);
        let sandbox = match c.labels.get(docker::SANDBOX_ID_LABEL) {
            Some(sb) if *sb != c.id && !c.is_sandbox() => {
                self.count_request(i);
                match client.inspect(sb).await {
                    Ok(s) => s.map(|s| s.labels),
                    Err(e) => {
                        self.record_error(i, e.kind(), e.to_string());
                        None
                    }
                }
            }
            _ => None,
        };
        let labels = if c.is_sandbox() {
            Some(&c.labels)
        } else {
            sandbox.as_ref()
        };
        Ok(Some(c.to_info(labels)))
    }

    /// Container `id` from `ListContainers` filtered by id (one request: name, image, labels
    /// and its sandbox), with its pod from the pod cache or `PodSandboxStatus`; or, when no
    /// container has that id, the sandbox `id` itself.
    async fn cri_lookup(&self, i: usize, id: &str) -> Result<Option<ContainerInfo>, ()> {
        let Some(client) = self.cri(i).await else {
            return Err(());
        };
        let fail = |e: crate::cri::CriError| {
            self.record_error(i, e.kind(), e.to_string());
        };
        self.count_request(i);
        let filter = crate::cri::proto::ContainerFilter {
            id: id.to_string(),
            ..Default::default()
        };
        let found = match client.list_containers(Some(filter)).await {
            Ok(list) => list.into_iter().find(|c| c.id.starts_with(id)),
            Err(e) => {
                fail(e);
                return Err(());
            }
        };
        self.record_ok(i);
        let Some(c) = found else {
            self.count_request(i);
            return match client.pod_sandbox_status(id).await {
                Ok(s) => Ok(s.map(|s| s.to_info())),
                Err(e) => {
                    fail(e);
                    Err(())
                }
            };
        };
        let sandbox_id = (!c.pod_sandbox_id.is_empty()).then(|| c.pod_sandbox_id.clone());
        let mut pod = sandbox_id
            .as_ref()
            .and_then(|s| read(&self.pods).get(s).cloned());
        let wanted = self.pod_labels_wanted.load(Ordering::Relaxed);
        if let (None, Some(sb), true) = (&pod, &sandbox_id, wanted) {
            self.count_request(i);
            match client.pod_sandbox_status(sb).await {
                Ok(Some(s)) => {
                    let p = Arc::new(s.pod);
                    let mut pods = write(&self.pods);
                    if pods.len() < self.cfg.max_containers {
                        pods.insert(sb.clone(), p.clone());
                    }
                    pod = Some(p);
                }
                Ok(None) => {}
                Err(e) => fail(e),
            }
        }
        Ok(Some(c.to_info(pod.as_deref())))
    }

    /// Serve queued ids a batch at a time, at most one batch per [`GATHER`]: an id queued
    /// after a quiet spell is asked for at once, while during a burst of container starts the
    /// ids gather (queuing one does not wake this task) and go out together, multiplexed on
    /// one connection. The resolver's CPU is mostly its wake-ups, so this is what bounds it
    /// under churn.
    async fn serve_queue(self: Arc<Self>, mut rx: mpsc::Receiver<Lookup>) {
        let mut running = JoinSet::new();
        let mut batch = Vec::new();
        let mut last: Option<tokio::time::Instant> = None;
        while rx.recv_many(&mut batch, QUEUE_LEN).await > 0 {
            if let Some(last) = last {
                tokio::time::sleep_until(last + GATHER).await;
                while let Ok(lookup) = rx.try_recv() {
                    batch.push(lookup);
                }
            }
            last = Some(tokio::time::Instant::now());
            for lookup in batch.drain(..) {
                while running.len() >= CONCURRENT_LOOKUPS {
                    running.join_next().await;
                }
                running.spawn(self.clone().resolve(lookup));
            }
            while running.try_join_next().is_some() {}
        }
    }

    /// Ask the runtimes for a queued id: the kind the cgroup path names first, then the other.
    async fn resolve(self: Arc<Self>, lookup: Lookup) {
        // Learnt meanwhile (a runtime event, a resync): nothing to ask.
        if self.cached(&lookup.id).is_some() {
            lock(&self.pending).remove(&lookup.id);
            return;
        }
        let cri_first = lookup.hint.is_some_and(|r| !r.prefers_docker_api());
        let mut order: Vec<usize> = (0..self.sockets.len()).collect();
        order.sort_by_key(|&i| (self.sockets[i].kind == SocketKind::Cri) != cri_first);
        let mut errored = false;
        for i in order {
            if !self.usable(i) {
                continue;
            }
            let found = match self.sockets[i].kind {
                SocketKind::Docker => self.docker_lookup(i, &self.docker(i), &lookup.id).await,
                SocketKind::Cri => self.cri_lookup(i, &lookup.id).await,
            };
            match found {
                Ok(Some(info)) => {
                    self.put(info, i);
                    return;
                }
                Ok(None) => {}
                Err(()) => errored = true,
            }
        }
        let retry = if errored {
            RETRY_AFTER_ERROR.min(self.cfg.resync)
        } else {
            inc(&self.n.not_found);
            self.cfg.resync
        };
        lock(&self.pending).insert(lookup.id, Instant::now() + retry);
    }
}

/// A docker list → infos, with each cri-dockerd container's pod labels from its sandbox.
fn docker_infos(list: &[docker::DockerContainer], max: usize) -> Vec<ContainerInfo> {
    let sandboxes: HashMap<&str, &BTreeMap<String, String>> = list
        .iter()
        .filter(|c| c.is_sandbox())
        .map(|c| (c.id.as_str(), &c.labels))
        .collect();
    // Beyond `max` (the cache's bound) entries are counted as over the limit by `replace_from`;
    // the client already bounds the list itself.
    list.iter()
        .take(max.saturating_mul(2))
        .map(|c| {
            let sb = if c.is_sandbox() {
                Some(&c.labels)
            } else {
                c.labels
                    .get(docker::SANDBOX_ID_LABEL)
                    .and_then(|s| sandboxes.get(s.as_str()).copied())
            };
            c.to_info(sb)
        })
        .collect()
}

/// CRI lists → infos: running containers with their pods, and ready sandboxes (pause).
fn cri_infos(
    containers: &[CriContainer],
    sandboxes: &[CriSandbox],
    pods: &HashMap<String, Arc<PodInfo>>,
    max: usize,
) -> Vec<ContainerInfo> {
    containers
        .iter()
        .map(|c| c.to_info(pods.get(&c.pod_sandbox_id).map(|p| p.as_ref())))
        .chain(
            sandboxes
                .iter()
                .filter(|s| s.state == crate::cri::SANDBOX_READY)
                .map(CriSandbox::to_info),
        )
        .take(max.saturating_mul(2))
        .collect()
}
