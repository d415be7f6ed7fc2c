//! The resolver's bookkeeping, without threads or sockets: a table of live processes, the
//! snoopers of each probe, and which processes each probe's snoopers match.
//!
//! Events update one process and queue it; queued processes are re-matched against every probe
//! only when a publication may go out (at most every push interval), so a process that lives
//! shorter than that costs no `/proc` read at all. A rescan or a new selector re-matches the
//! table. Each probe's matched set is kept whole (it is bounded by
//! the number of processes); the cap applies to what is published, and a published pid keeps
//! its place while it still matches.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use container_info::cgroup::ContainerRef;

use super::procfs::{ProcReader, Stat};
use super::{Mode, Resolved, ResolverCounters, Selector};

/// Most parent links followed to decide whether a process descends from the daemon.
const MAX_ANCESTRY: usize = 64;

/// A text read from `/proc` only when a snooper needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lazy {
    Unread,
    /// The process was gone when it was read.
    Missing,
    Known(Arc<str>),
}

impl Lazy {
    fn get(&mut self, read: impl FnOnce() -> Option<Arc<str>>) -> Option<&str> {
        if *self == Lazy::Unread {
            *self = read().map_or(Lazy::Missing, Lazy::Known);
        }
        match self {
            Lazy::Known(s) => Some(s),
            _ => None,
        }
    }
}

/// A process's container, read from its cgroup file only when a snooper needs it.
#[derive(Debug, Clone)]
enum LazyContainer {
    Unread,
    Host,
    In(Arc<ContainerRef>),
}

impl LazyContainer {
    fn get(&mut self, read: impl FnOnce() -> Option<Arc<ContainerRef>>) -> Option<&ContainerRef> {
        if matches!(self, LazyContainer::Unread) {
            *self = read().map_or(LazyContainer::Host, LazyContainer::In);
        }
        match self {
            LazyContainer::In(c) => Some(c),
            _ => None,
        }
    }
}

/// One live process (thread group).
#[derive(Debug, Clone)]
struct Proc {
    /// Start time from `/proc/PID/stat`; 0 when learnt from a fork event.
    start: u64,
    /// The daemon or one of its descendants.
    own: bool,
    kthread: bool,
    comm: Lazy,
    cmdline: Lazy,
    container: LazyContainer,
}

/// Which snooper matched a process: the index of the first matching `proc_name` entry (whose
/// label applies), or `None` for a `proc_id` match or one of the daemon's own processes.
type Hit = Option<u16>;

/// One probe's snoopers and results.
#[derive(Debug)]
struct Probe {
    mode: Mode,
    /// Identifies the probe's channel (see the resolver handle).
    generation: u64,
    matched: BTreeMap<u32, Hit>,
    published: Arc<Resolved>,
    /// Something changed since the last publication.
    dirty: bool,
    last_push: Option<Instant>,
    /// The last publication left pids out.
    truncated: bool,
    warned: bool,
}

/// A value for a probe's channel.
#[derive(Debug)]
pub struct Publication {
    /// Probe name.
    pub probe: String,
    /// Channel generation it belongs to.
    pub generation: u64,
    /// The new value.
    pub resolved: Arc<Resolved>,
}

/// Tracked processes and per-probe matches.
pub struct Engine<R> {
    reader: R,
    root: u32,
    max_pids: usize,
    procs: HashMap<u32, Proc, foldhash::fast::RandomState>,
    /// Processes changed since the last re-match (a subset of `procs`).
    pending: HashSet<u32, foldhash::fast::RandomState>,
    probes: BTreeMap<String, Probe>,
    counters: Arc<ResolverCounters>,
    /// The container directory's generation at the last re-match of container-name and
    /// pod-label snoopers.
    containers_gen: u64,
}

/// Does `sel` in `mode` match process `pid`? Reads comm and cmdline on first need.
fn verdict<R: ProcReader>(mode: &Mode, pid: u32, p: &mut Proc, reader: &R) -> Option<Hit> {
    let (sel, blacklist) = match mode {
        Mode::All => return None,
        Mode::Whitelist(s) => (s, false),
        Mode::Blacklist(s) => (s, true),
    };
    if p.kthread {
        return None;
    }
    if p.own {
        // Never observed: excluded from a blacklist, never in a whitelist.
        return blacklist.then_some(None);
    }
    if !sel.proc_name.is_empty() {
        if let Some(comm) = p.comm.get(|| reader.comm(pid)) {
            for (i, entry) in sel.proc_name.iter().enumerate() {
                if !entry.comm.is_match(comm) {
                    continue;
                }
                let hit = entry.cmdline.is_empty()
                    || p.cmdline
                        .get(|| reader.cmdline(pid))
                        .is_some_and(|c| c.contains(entry.cmdline.as_str()));
                if hit {
                    return Some(Some(i as u16));
                }
            }
        }
    }
    if sel.proc_id.contains(&pid) {
        return Some(None);
    }
    if sel.by_container() {
        if let Some(c) = p.container.get(|| reader.container(pid)) {
            let info = reader.container_info(&c.id);
            if sel.matches_container(c, info.as_deref()) {
                return Some(None);
            }
        }
    }
    None
}

impl<R: ProcReader> Engine<R> {
    /// An empty engine; call [`Engine::rescan`] to fill it.
    pub fn new(reader: R, root: u32, max_pids: usize, counters: Arc<ResolverCounters>) -> Self {
        Engine {
            reader,
            root,
            max_pids,
            procs: HashMap::default(),
            pending: HashSet::default(),
            probes: BTreeMap::new(),
            counters,
            containers_gen: 0,
        }
    }

    /// Number of tracked processes.
    pub fn process_count(&self) -> usize {
        self.procs.len()
    }

    /// Queue `pid` for a re-match (nothing to do without probes: [`Engine::set`] matches the
    /// whole table).
    fn touch(&mut self, pid: u32) {
        if !self.probes.is_empty() {
            self.pending.insert(pid);
        }
    }

    /// Re-match `pid` against every probe.
    fn rematch(&mut self, pid: u32) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        for probe in self.probes.values_mut() {
            let v = verdict(&probe.mode, pid, p, &self.reader);
            let changed = match v {
                Some(hit) => probe.matched.insert(pid, hit) != Some(hit),
                None => probe.matched.remove(&pid).is_some(),
            };
            probe.dirty |= changed;
        }
    }

    fn forget(&mut self, pid: u32) {
        if self.procs.remove(&pid).is_none() {
            return;
        }
        self.pending.remove(&pid);
        for probe in self.probes.values_mut() {
            probe.dirty |= probe.matched.remove(&pid).is_some();
        }
    }

    /// Is a process with parent `ppid` one of the daemon's own? Follows parents through the
    /// table, then `/proc`, at most [`MAX_ANCESTRY`] links.
    fn own_parent(&self, mut ppid: u32) -> bool {
        for _ in 0..MAX_ANCESTRY {
            if ppid == self.root {
                return true;
            }
            if ppid == 0 {
                return false;
            }
            if let Some(p) = self.procs.get(&ppid) {
                return p.own;
            }
            match self.reader.stat(ppid) {
                Some(st) => ppid = st.ppid,
                None => return false,
            }
        }
        false
    }

    fn learn(&self, pid: u32, st: Stat) -> Proc {
        Proc {
            start: st.start,
            own: pid == self.root || self.own_parent(st.ppid),
            kthread: st.kthread,
            comm: Lazy::Known(st.comm),
            cmdline: Lazy::Unread,
            container: LazyContainer::Unread,
        }
    }

    /// Rebuild the table from a full scan of `/proc` (start, lost events, or the periodic scan
    /// without the connector) and re-match everything.
    pub fn rescan(&mut self) {
        self.counters.rescans.fetch_add(1, Ordering::Relaxed);
        let scanned = self.reader.scan();
        let parents: HashMap<u32, u32, foldhash::fast::RandomState> =
            scanned.iter().map(|(pid, st)| (*pid, st.ppid)).collect();
        let mut own_cache: HashMap<u32, bool, foldhash::fast::RandomState> = HashMap::default();
        let mut fresh: HashMap<u32, Proc, foldhash::fast::RandomState> = HashMap::default();
        fresh.reserve(scanned.len());
        for (pid, st) in scanned {
            let old = self
                .procs
                .get(&pid)
                .filter(|o| o.start == 0 || o.start == st.start);
            let own =
                old.is_some_and(|o| o.own) || own_in_scan(pid, self.root, &parents, &mut own_cache);
            fresh.insert(
                pid,
                Proc {
                    start: st.start,
                    own,
                    kthread: st.kthread,
                    comm: Lazy::Known(st.comm),
                    // A missed exec may have changed it: read again when needed.
                    cmdline: Lazy::Unread,
                    container: LazyContainer::Unread,
                },
            );
        }
        self.procs = fresh;
        self.pending.clear();
        let names: Vec<String> = self.probes.keys().cloned().collect();
        for name in names {
            self.rematch_probe(&name);
        }
    }

    /// Recompute one probe's matches over the whole table.
    fn rematch_probe(&mut self, name: &str) {
        let Some(probe) = self.probes.get_mut(name) else {
            return;
        };
        let mut matched = BTreeMap::new();
        for (pid, p) in self.procs.iter_mut() {
            if let Some(hit) = verdict(&probe.mode, *pid, p, &self.reader) {
                matched.insert(*pid, hit);
            }
        }
        if matched != probe.matched {
            probe.matched = matched;
            probe.dirty = true;
        }
    }

    /// `child` was forked by `parent`: it runs the parent's program until it execs.
    pub fn fork(&mut self, parent: u32, child: u32) {
        self.reader.note_fork(parent, child);
        let proc = match self.procs.get(&parent) {
            Some(p) => Proc {
                start: 0,
                own: p.own,
                kthread: p.kthread,
                comm: p.comm.clone(),
                cmdline: p.cmdline.clone(),
                container: p.container.clone(),
            },
            None => match self.reader.stat(child) {
                Some(st) => self.learn(child, st),
                // Already gone: its exit event follows.
                None => return,
            },
        };
        self.procs.insert(child, proc);
        self.touch(child);
    }

    /// `pid` executed a new program: its comm and cmdline are read again when needed.
    pub fn exec(&mut self, pid: u32) {
        self.reader.note_exec(pid);
        match self.procs.get_mut(&pid) {
            Some(p) => {
                // A kernel thread that execs (a usermode helper) becomes a user process.
                p.kthread = false;
                p.comm = Lazy::Unread;
                p.cmdline = Lazy::Unread;
                // `podman exec`/`kubectl exec` join the container before they exec.
                p.container = LazyContainer::Unread;
            }
            None => {
                let Some(st) = self.reader.stat(pid) else {
                    return;
                };
                let p = self.learn(pid, st);
                self.procs.insert(pid, p);
            }
        }
        self.touch(pid);
    }

    /// The main thread of `pid` renamed itself.
    pub fn comm(&mut self, pid: u32, comm: &[u8]) {
        let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        let text = String::from_utf8_lossy(&comm[..end]);
        if let Some(p) = self.procs.get_mut(&pid) {
            p.comm = Lazy::Known(Arc::from(text.as_ref()));
            self.touch(pid);
        }
    }

    /// `pid` exited.
    pub fn exit(&mut self, pid: u32) {
        self.forget(pid);
    }

    /// Set (or replace) `name`'s snoopers; `generation` names its channel.
    pub fn set(&mut self, name: &str, mode: Mode, generation: u64) {
        if let Mode::Whitelist(s) | Mode::Blacklist(s) = &mode {
            if !s.pod_labels.is_empty() {
                self.reader.want_pod_labels();
            }
        }
        match self.probes.get_mut(name) {
            Some(p) => {
                p.mode = mode;
                p.generation = generation;
                p.dirty = true;
            }
            None => {
                self.probes.insert(
                    name.to_string(),
                    Probe {
                        mode,
                        generation,
                        matched: BTreeMap::new(),
                        published: Arc::new(Resolved::default()),
                        dirty: true,
                        last_push: None,
                        truncated: false,
                        warned: false,
                    },
                );
            }
        }
        self.rematch_probe(name);
    }

    /// Whether a probe selects by container name or pod label (what the runtime says may change
    /// without a process event: [`Engine::containers_changed`] is to be called regularly).
    pub fn watches_containers(&self) -> bool {
        self.probes.values().any(|p| match &p.mode {
            Mode::All => false,
            Mode::Whitelist(s) | Mode::Blacklist(s) => s.by_runtime_info(),
        })
    }

    /// Re-match the probes that select by container name or pod label if the container
    /// directory changed since the last call.
    pub fn containers_changed(&mut self) {
        let generation = self.reader.containers_generation();
        if generation == self.containers_gen {
            return;
        }
        self.containers_gen = generation;
        let names: Vec<String> = self
            .probes
            .iter()
            .filter(|(_, p)| match &p.mode {
                Mode::All => false,
                Mode::Whitelist(s) | Mode::Blacklist(s) => s.by_runtime_info(),
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            self.rematch_probe(&name);
        }
    }

    /// Forget `name`.
    pub fn remove(&mut self, name: &str) {
        self.probes.remove(name);
        if self.probes.is_empty() {
            self.pending.clear();
        }
    }

    /// The earliest moment a pending publication may go out.
    pub fn next_due(&self, interval: Duration) -> Option<Instant> {
        let queued = !self.pending.is_empty();
        self.probes
            .values()
            .filter(|p| p.dirty || queued)
            .map(|p| p.last_push.map_or_else(Instant::now, |t| t + interval))
            .min()
    }

    /// Publications due at `now`: probes whose result changed and whose last push is at least
    /// `interval` old. Queued processes are re-matched first if any probe may publish.
    pub fn due(&mut self, now: Instant, interval: Duration) -> Vec<Publication> {
        let mut out = Vec::new();
        let may_publish = |p: &Probe| p.last_push.is_none_or(|t| now >= t + interval);
        if !self.pending.is_empty() && self.probes.values().any(may_publish) {
            let pids: Vec<u32> = self.pending.drain().collect();
            for pid in pids {
                self.rematch(pid);
            }
        }
        for (name, probe) in self.probes.iter_mut() {
            if !probe.dirty || !may_publish(probe) {
                continue;
            }
            probe.dirty = false;
            let (resolved, truncated) = resolve(probe, self.max_pids);
            if truncated && !probe.truncated {
                self.counters.truncations.fetch_add(1, Ordering::Relaxed);
                if !probe.warned {
                    probe.warned = true;
                    tracing::warn!(
                        probe = %name,
                        matched = probe.matched.len(),
                        cap = self.max_pids,
                        "snooper: too many matching processes; the rest are left out"
                    );
                }
            }
            probe.truncated = truncated;
            if resolved == *probe.published {
                continue;
            }
            probe.published = Arc::new(resolved);
            probe.last_push = Some(now);
            out.push(Publication {
                probe: name.clone(),
                generation: probe.generation,
                resolved: Arc::clone(&probe.published),
            });
        }
        out
    }
}

/// Whether `pid` descends from `root`, from the parent links of one scan (memoized).
fn own_in_scan(
    pid: u32,
    root: u32,
    parents: &HashMap<u32, u32, foldhash::fast::RandomState>,
    cache: &mut HashMap<u32, bool, foldhash::fast::RandomState>,
) -> bool {
    let mut chain = Vec::new();
    let mut cur = pid;
    let mut own = false;
    for _ in 0..=MAX_ANCESTRY {
        if cur == root {
            own = true;
            break;
        }
        if let Some(&known) = cache.get(&cur) {
            own = known;
            break;
        }
        chain.push(cur);
        match parents.get(&cur) {
            Some(&ppid) if ppid != 0 => cur = ppid,
            _ => break,
        }
    }
    for p in chain {
        cache.insert(p, own);
    }
    own
}

/// The value to publish for `probe` (at most `cap` pids, keeping those already published) and
/// whether pids were left out.
fn resolve(probe: &Probe, cap: usize) -> (Resolved, bool) {
    let sel: Option<&Selector> = match &probe.mode {
        Mode::All => None,
        Mode::Whitelist(s) | Mode::Blacklist(s) => Some(s),
    };
    let Some(sel) = sel else {
        return (Resolved::default(), false);
    };
    let truncated = probe.matched.len() > cap;
    let pids: BTreeSet<u32> = if truncated {
        let mut keep: BTreeSet<u32> = probe
            .published
            .pids
            .iter()
            .copied()
            .filter(|pid| probe.matched.contains_key(pid))
            .take(cap)
            .collect();
        for pid in probe.matched.keys() {
            if keep.len() >= cap {
                break;
            }
            keep.insert(*pid);
        }
        keep
    } else {
        probe.matched.keys().copied().collect()
    };
    let mut labels = BTreeMap::new();
    if matches!(probe.mode, Mode::Whitelist(_)) {
        for pid in &pids {
            let label = probe
                .matched
                .get(pid)
                .copied()
                .flatten()
                .and_then(|i| sel.proc_name.get(i as usize))
                .and_then(|e| e.label.clone());
            if let Some(label) = label {
                labels.insert(*pid, label);
            }
        }
    }
    (Resolved { pids, labels }, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snooper::ProcName;
    use container_info::info::ContainerInfo;
    use std::cell::RefCell;

    /// An in-memory `/proc`: pid → (ppid, comm, cmdline, kthread), and containers.
    #[derive(Default)]
    struct FakeProc {
        procs: RefCell<BTreeMap<u32, (u32, String, String, bool)>>,
        reads: RefCell<usize>,
        containers: RefCell<BTreeMap<u32, Arc<ContainerRef>>>,
        infos: RefCell<BTreeMap<String, Arc<ContainerInfo>>>,
        generation: RefCell<u64>,
    }

    impl FakeProc {
        fn add(&self, pid: u32, ppid: u32, comm: &str, cmdline: &str) {
            self.procs
                .borrow_mut()
                .insert(pid, (ppid, comm.into(), cmdline.into(), false));
        }
    }

    impl ProcReader for &FakeProc {
        fn container(&self, pid: u32) -> Option<Arc<ContainerRef>> {
            self.containers.borrow().get(&pid).cloned()
        }
        fn container_info(&self, id: &str) -> Option<Arc<ContainerInfo>> {
            self.infos.borrow().get(id).cloned()
        }
        fn containers_generation(&self) -> u64 {
            *self.generation.borrow()
        }
        fn scan(&self) -> Vec<(u32, Stat)> {
            let pids: Vec<u32> = self.procs.borrow().keys().copied().collect();
            pids.into_iter()
                .filter_map(|p| Some((p, self.stat(p)?)))
                .collect()
        }
        fn stat(&self, pid: u32) -> Option<Stat> {
            let procs = self.procs.borrow();
            let (ppid, comm, _, kthread) = procs.get(&pid)?;
            Some(Stat {
                comm: Arc::from(comm.as_str()),
                ppid: *ppid,
                kthread: *kthread,
                start: u64::from(pid) * 10,
            })
        }
        fn comm(&self, pid: u32) -> Option<Arc<str>> {
            *self.reads.borrow_mut() += 1;
            Some(Arc::from(self.procs.borrow().get(&pid)?.1.as_str()))
        }
        fn cmdline(&self, pid: u32) -> Option<Arc<str>> {
            *self.reads.borrow_mut() += 1;
            Some(Arc::from(self.procs.borrow().get(&pid)?.2.as_str()))
        }
    }

    fn name(comm: &str, cmdline: &str, label: Option<(&str, &str)>) -> ProcName {
        ProcName {
            comm: regex::Regex::new(comm).unwrap(),
            cmdline: cmdline.into(),
            label: label.map(|(k, v)| (k.into(), v.into())),
        }
    }

    fn world() -> FakeProc {
        let f = FakeProc::default();
        f.add(1, 0, "init", "/sbin/init");
        f.procs
            .borrow_mut()
            .insert(2, (0, "kthreadd".into(), String::new(), true));
        f.add(100, 1, "gala-gopher", "gala-gopher -c x");
        f.add(101, 100, "tcpprobe", "tcpprobe -t 5");
        f.add(102, 101, "java", "java -jar child.jar");
        f.add(200, 1, "java", "java -jar app.jar");
        f.add(201, 1, "java", "java -jar other.jar");
        f.add(300, 1, "nginx", "nginx: master");
        f
    }

    fn pids(e: &mut Engine<&FakeProc>) -> BTreeMap<String, Vec<u32>> {
        let now = Instant::now() + Duration::from_secs(3600);
        e.due(now, Duration::ZERO)
            .into_iter()
            .map(|p| (p.probe, p.resolved.pids.iter().copied().collect()))
            .collect()
    }

    fn engine(f: &FakeProc, cap: usize) -> Engine<&FakeProc> {
        let mut e = Engine::new(f, 100, cap, Arc::default());
        e.rescan();
        e
    }

    #[test]
    fn whitelist_blacklist_and_own_processes() {
        let f = world();
        let mut e = engine(&f, 1000);
        let sel = Selector {
            proc_name: vec![
                name("^java$", "app", Some(("k", "v"))),
                name("java", "", None),
            ],
            proc_id: vec![300, 101, 2],
            ..Selector::default()
        };
        e.set("w", Mode::Whitelist(sel.clone()), 1);
        e.set("b", Mode::Blacklist(sel), 1);
        e.set("a", Mode::All, 1);
        let out = e.due(Instant::now(), Duration::ZERO);
        let w = &out.iter().find(|p| p.probe == "w").unwrap().resolved;
        // 102 and 101 belong to the daemon, 2 is a kernel thread.
        assert_eq!(w.pids, BTreeSet::from([200, 201, 300]));
        assert_eq!(w.labels, BTreeMap::from([(200, ("k".into(), "v".into()))]));
        let b = &out.iter().find(|p| p.probe == "b").unwrap().resolved;
        assert_eq!(b.pids, BTreeSet::from([100, 101, 102, 200, 201, 300]));
        assert!(b.labels.is_empty());
        // All: the initial (empty) value is unchanged, nothing to push.
        assert!(!out.iter().any(|p| p.probe == "a"));
    }

    #[test]
    fn events_follow_fork_exec_comm_exit() {
        let f = world();
        let mut e = engine(&f, 1000);
        let sel = Selector {
            proc_name: vec![name("^java$", "app.jar", None)],
            ..Selector::default()
        };
        e.set("w", Mode::Whitelist(sel), 1);
        assert_eq!(pids(&mut e)["w"], vec![200]);
        // A fork inherits the match without reading /proc.
        let reads = *f.reads.borrow();
        e.fork(200, 210);
        assert_eq!(*f.reads.borrow(), reads);
        assert_eq!(pids(&mut e)["w"], vec![200, 210]);
        // It execs something else.
        f.add(210, 200, "sh", "sh -c app.jar");
        e.exec(210);
        assert_eq!(pids(&mut e)["w"], vec![200]);
        // 300 renames itself and has the right command line.
        f.add(300, 1, "java", "java app.jar");
        e.comm(300, b"java\0\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(pids(&mut e)["w"], vec![200, 300]);
        e.exit(200);
        assert_eq!(pids(&mut e)["w"], vec![300]);
        // Nothing changed: nothing published.
        assert!(pids(&mut e).is_empty());
        // A fork of the daemon is its own.
        f.add(400, 100, "java", "java app.jar");
        e.fork(100, 400);
        e.exec(400);
        assert!(pids(&mut e).is_empty());
        // The same process outside the daemon matches.
        f.add(401, 1, "java", "java app.jar");
        e.fork(1, 401);
        e.exec(401);
        assert_eq!(pids(&mut e)["w"], vec![300, 401]);
    }

    #[test]
    fn cap_keeps_published_pids_and_counts_once() {
        let f = world();
        for pid in 500..520 {
            f.add(pid, 1, "worker", "worker");
        }
        let mut e = engine(&f, 5);
        let sel = Selector {
            proc_name: vec![name("^worker$", "", None)],
            ..Selector::default()
        };
        e.set("w", Mode::Whitelist(sel), 1);
        assert_eq!(pids(&mut e)["w"], vec![500, 501, 502, 503, 504]);
        assert_eq!(e.counters.truncations.load(Ordering::Relaxed), 1);
        e.exit(502);
        // 502 is replaced by the lowest unpublished pid; the others stay.
        assert_eq!(pids(&mut e)["w"], vec![500, 501, 503, 504, 505]);
        assert_eq!(e.counters.truncations.load(Ordering::Relaxed), 1);
        for pid in 500..517 {
            e.exit(pid);
        }
        assert_eq!(pids(&mut e)["w"], vec![517, 518, 519]);
        for pid in 600..610 {
            f.add(pid, 1, "worker", "worker");
            e.exec(pid);
        }
        assert_eq!(pids(&mut e)["w"].len(), 5);
        assert_eq!(e.counters.truncations.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn pushes_are_rate_limited() {
        let f = world();
        let mut e = engine(&f, 1000);
        let sel = Selector {
            proc_id: vec![300],
            ..Selector::default()
        };
        e.set("w", Mode::Whitelist(sel), 7);
        let t0 = Instant::now();
        let ivl = Duration::from_millis(100);
        let first = e.due(t0, ivl);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].generation, 7);
        e.exit(300);
        assert!(e.due(t0 + Duration::from_millis(50), ivl).is_empty());
        assert_eq!(e.next_due(ivl), Some(t0 + ivl));
        let later = e.due(t0 + ivl, ivl);
        assert!(later[0].resolved.pids.is_empty());
        assert_eq!(e.next_due(ivl), None);
    }

    fn in_container(f: &FakeProc, pid: u32, id: &str, pod: Option<&str>) {
        f.containers.borrow_mut().insert(
            pid,
            Arc::new(ContainerRef {
                id: id.into(),
                runtime: container_info::cgroup::Runtime::Podman,
                pod_uid: pod.map(str::to_string),
                cgroup_path: String::new(),
            }),
        );
    }

    #[test]
    fn container_and_pod_kinds_follow_the_directory() {
        let f = world();
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        in_container(&f, 200, &a, None);
        in_container(&f, 300, &b, Some("0f1e2d3c-0000-1111-2222-333344445555"));
        let mut e = engine(&f, 1000);
        let by = |sel: Selector| Mode::Whitelist(sel);
        e.set(
            "id",
            by(Selector {
                container_id: vec!["AAAAAAAAAAAA".into()],
                ..Selector::default()
            }),
            1,
        );
        e.set(
            "pod",
            by(Selector {
                pod_id: vec!["0f1e2d3c000011112222333344445555".into()],
                ..Selector::default()
            }),
            2,
        );
        e.set(
            "name",
            by(Selector {
                container_name: vec!["web".into()],
                pod_labels: vec!["tier=front".into()],
                ..Selector::default()
            }),
            3,
        );
        assert!(e.watches_containers());
        let got = pids(&mut e);
        assert_eq!(got["id"], vec![200]);
        assert_eq!(got["pod"], vec![300]);
        assert!(!got.contains_key("name"), "names are not known yet");
        // The runtime answers later: the name matches without a process event.
        f.infos.borrow_mut().insert(
            a.clone(),
            Arc::new(ContainerInfo {
                id: a.clone(),
                name: "web".into(),
                ..ContainerInfo::default()
            }),
        );
        let mut pod = container_info::info::PodInfo::default();
        pod.labels.insert("tier".into(), "front".into());
        f.infos.borrow_mut().insert(
            b.clone(),
            Arc::new(ContainerInfo {
                id: b.clone(),
                name: "other".into(),
                pod: Some(pod),
                ..ContainerInfo::default()
            }),
        );
        *f.generation.borrow_mut() += 1;
        e.containers_changed();
        assert_eq!(pids(&mut e)["name"], vec![200, 300]);
        // A process forked in the container later inherits it.
        e.fork(200, 210);
        assert_eq!(pids(&mut e)["id"], vec![200, 210]);
    }

    #[test]
    fn rescan_reconciles_and_walks_ancestry() {
        let f = world();
        let mut e = engine(&f, 1000);
        e.set(
            "w",
            Mode::Whitelist(Selector {
                proc_name: vec![name("^java$", "", None)],
                container_id: vec!["abc".into()],
                ..Selector::default()
            }),
            1,
        );
        e.due(Instant::now(), Duration::ZERO);
        // Missed events: 201 exited, 202 (a grandchild of the daemon) and 203 appeared.
        f.procs.borrow_mut().remove(&201);
        f.add(202, 102, "java", "java");
        f.add(203, 300, "java", "java");
        e.rescan();
        assert_eq!(pids(&mut e)["w"], vec![200, 203]);
        assert_eq!(e.process_count(), 9);
    }
}
