//! Containment of everything a probe run starts, so that a run's end (stop or exit) leaves no
//! process behind — not even children that called `setsid` or double-forked.
//!
//! * **cgroup v2** (preferred): each run gets its own cgroup
//!   `<own cgroup>/gala-gopher.<pid>.<starttime>/<seq>-<probe>`, found from
//!   `/proc/self/mountinfo` (the `cgroup2` mount; hybrid hosts mount it at
//!   `/sys/fs/cgroup/unified`) and `/proc/self/cgroup` (`0::/path`). The child moves itself into
//!   it between fork and exec, so every descendant is born inside. At the run's end the cgroup is
//!   killed (`cgroup.kill`, or freeze + SIGKILL of every member on kernels before 5.14) and
//!   removed. No controllers are enabled, so the "no internal processes" rule does not apply and
//!   the daemon stays in its own cgroup (with systemd, `Delegate=yes` hands the subtree to it).
//! * **Fallback** (no writable cgroup2): every run carries `GALA_GOPHER_RUN=<tag>` in its
//!   environment; the daemon is a child subreaper, so escaped processes stay its descendants. At
//!   the run's end, descendants of the daemon carrying the tag (and their descendants) and members
//!   of the run's process group are killed. A process that clears its environment *and* leaves
//!   the process group escapes this; the cgroup does not have that gap.
//! * **Daemon killed**: the janitor process ([`super::janitor`]) sees the daemon die and runs
//!   [`clean_up_instance`] for it at once.
//! * **Restart**: the instance directory names the daemon's pid and start time. At start, the
//!   directories of instances that are gone (e.g. SIGKILLed with their janitor) are killed and
//!   removed.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use container_info::host::unescape_octal as unescape_mountinfo;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::child;

/// Environment variable naming the run a process belongs to (set on every probe).
pub const RUN_ENV: &str = "GALA_GOPHER_RUN";

/// Prefix of the per-daemon-instance cgroup directory.
const INSTANCE_PREFIX: &str = "gala-gopher.";

/// How long killing a run's processes may take before giving up (and logging).
/// How long members that are already exiting get before the rest counts as left behind.
const SETTLE: Duration = Duration::from_millis(100);

const KILL_DEADLINE: Duration = Duration::from_secs(5);

/// Longest part of a probe name kept in a cgroup directory name.
const MAX_NAME: usize = 48;

/// The cgroup2 directory of this daemon instance, or why there is none.
#[derive(Debug)]
struct Hierarchy {
    /// `<mount>/<own cgroup>`: where instance directories live.
    parent: PathBuf,
    /// `<parent>/gala-gopher.<pid>.<starttime>`.
    instance: PathBuf,
}

/// `gala-gopher.<pid>.<starttime>` of this process.
fn instance_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let pid = std::process::id() as i32;
        instance_name_of(pid, own_starttime())
    })
}

/// Start time of this process (0 if unreadable, consistently so).
pub(crate) fn own_starttime() -> u64 {
    child::read_stat(std::process::id() as i32).map_or(0, |s| s.starttime)
}

/// `gala-gopher.<pid>.<starttime>`: the instance name of the daemon process `pid`.
fn instance_name_of(pid: i32, starttime: u64) -> String {
    format!("{INSTANCE_PREFIX}{pid}.{starttime}")
}

/// Mount point of the cgroup2 file system, from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_ascii_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount = left.split_ascii_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount)))
    })
}

/// The unified-hierarchy path of this process, from `/proc/self/cgroup` (`0::/path`).
fn own_cgroup(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// `<cgroup2 mount>/<own cgroup>`: where this process puts (and finds) instance directories.
fn instances_parent() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup2 file system mounted")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let own = own_cgroup(&cgroup).ok_or("no unified-hierarchy entry in /proc/self/cgroup")?;
    // Outside our cgroup namespace the path starts with "/.."; we cannot reach it then.
    if own.split('/').any(|c| c == "..") {
        return Err(format!("own cgroup {own} is outside this cgroup namespace"));
    }
    Ok(mount.join(own.trim_start_matches('/')))
}

fn detect() -> Result<Hierarchy, String> {
    let parent = instances_parent()?;
    let instance = parent.join(instance_name());
    match std::fs::create_dir(&instance) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", instance.display())),
    }
    Ok(Hierarchy { parent, instance })
}

static HIERARCHY: OnceLock<Option<Hierarchy>> = OnceLock::new();

/// Find the cgroup2 hierarchy (once per process) and clean up what dead instances left.
/// Called when a supervisor is created; later calls are free.
pub fn init() {
    hierarchy();
}

fn hierarchy() -> Option<&'static Hierarchy> {
    HIERARCHY
        .get_or_init(|| match detect() {
            Ok(h) => {
                tracing::info!(cgroup = %h.instance.display(), "probe containment: one cgroup v2 per probe run");
                remove_stale_instances(&h.parent);
                Some(h)
            }
            Err(why) => {
                tracing::warn!(
                    "probe containment: no usable cgroup v2 ({why}); falling back to tracking probe descendants"
                );
                None
            }
        })
        .as_ref()
}

/// Remove this instance's directory if no run uses it any more (at shutdown).
pub fn release_instance() {
    if let Some(h) = HIERARCHY.get().and_then(Option::as_ref) {
        // Fails while another supervisor of this process still has runs: that is fine.
        let _ = std::fs::remove_dir(&h.instance);
    }
}

/// Is the daemon instance named `gala-gopher.<pid>.<starttime>` still running?
fn instance_alive(name: &str) -> bool {
    let Some((pid, start)) = name
        .strip_prefix(INSTANCE_PREFIX)
        .and_then(|rest| rest.split_once('.'))
    else {
        return true; // not ours to judge
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<i32>(), start.parse::<u64>()) else {
        return true;
    };
    child::read_stat(pid).is_some_and(|s| s.starttime == start && s.state != 'Z')
}

/// Kill and remove the instance directories of daemons that are gone.
fn remove_stale_instances(parent: &Path) {
    let Ok(dir) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(INSTANCE_PREFIX) || name == instance_name() || instance_alive(name) {
            continue;
        }
        let path = entry.path();
        let killed = kill_tree_blocking(&path);
        if killed > 0 {
            tracing::warn!(
                cgroup = %path.display(),
                killed,
                "killed processes left by a gala-gopher instance that is gone"
            );
        }
    }
}

/// Kill everything the daemon instance `pid`/`starttime` (which has exited) left behind: its
/// cgroup directory with all run cgroups below, and processes carrying one of its run tags (runs
/// tracked without a cgroup) with their descendants and the other members of their process
/// groups — except `spare_pgrp`, the daemon's own group, which may hold the user's shell
/// pipeline. Blocking; run by the janitor, which shares the daemon's cgroup. Returns how many
/// processes were killed.
pub(crate) fn clean_up_instance(pid: i32, starttime: u64, spare_pgrp: i32) -> usize {
    let name = instance_name_of(pid, starttime);
    let mut killed = 0;
    if let Ok(parent) = instances_parent() {
        let dir = parent.join(&name);
        if dir.exists() {
            killed += kill_tree_blocking(&dir);
        }
    }
    killed + kill_tagged_blocking(&name, spare_pgrp)
}

/// The tag-based half of [`clean_up_instance`]: repeats until no such process is left (one
/// killed mid-fork may leave a child found by the next round) or [`KILL_DEADLINE`] passes.
fn kill_tagged_blocking(instance: &str, spare_pgrp: i32) -> usize {
    let prefix = format!("{RUN_ENV}={instance}/");
    let me = std::process::id() as i32;
    // SAFETY: getpgrp has no arguments and cannot fail.
    let own_pgrp = unsafe { libc::getpgrp() };
    // Kept across rounds: a group outlives its killed leader while members are left.
    let mut groups = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let until = Instant::now() + KILL_DEADLINE;
    loop {
        let stats = all_stats();
        let mut kids: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        let mut stack = Vec::new();
        for (pid, s) in &stats {
            kids.entry(s.ppid).or_default().push(*pid);
            if s.state != 'Z' && has_env_prefix(*pid, prefix.as_bytes()) {
                stack.push(*pid);
                if s.pgrp > 1 && s.pgrp != spare_pgrp && s.pgrp != own_pgrp {
                    groups.insert(s.pgrp);
                }
            }
        }
        let mut victims = BTreeSet::new();
        while let Some(pid) = stack.pop() {
            if victims.insert(pid) {
                stack.extend(kids.get(&pid).into_iter().flatten().copied());
            }
        }
        victims.extend(
            stats
                .iter()
                .filter(|(_, s)| groups.contains(&s.pgrp))
                .map(|(p, _)| *p),
        );
        let live: Vec<i32> = stats
            .iter()
            .filter(|(p, s)| victims.contains(p) && s.state != 'Z' && *p > 1 && *p != me)
            .map(|(p, _)| *p)
            .collect();
        if live.is_empty() {
            break;
        }
        for &pid in &live {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        seen.extend(live);
        if Instant::now() >= until {
            tracing::warn!(instance, "processes left by probe runs do not die");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    seen.len()
}

/// Does the environment of `pid` have an entry starting with `prefix`?
fn has_env_prefix(pid: i32, prefix: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e.starts_with(prefix)))
}

/// Members (pids) of a cgroup directory.
fn members(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Leaf directories below `dir` (one level: instance → runs).
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `cgroup.kill` exists (kernel ≥ 5.14) is remembered after the first try.
static NO_CGROUP_KILL: AtomicBool = AtomicBool::new(false);

/// Send SIGKILL to every process in `dir` and below: `cgroup.kill`, else freeze + kill each.
fn kill_cgroup(dir: &Path) {
    if !NO_CGROUP_KILL.load(Ordering::Relaxed) {
        match std::fs::write(dir.join("cgroup.kill"), "1") {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                NO_CGROUP_KILL.store(true, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
    // Frozen, nothing can fork between reading the member list and the kills.
    let freeze = dir.join("cgroup.freeze");
    let frozen = std::fs::write(&freeze, "1").is_ok();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(subdirs(dir));
    for d in &dirs {
        for pid in members(d) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if frozen {
        // SIGKILL ends frozen tasks too; thawing only matters for a member that raced the read.
        let _ = std::fs::write(&freeze, "0");
    }
}

/// Kill everything under `dir`, wait until it is empty and remove it. Blocking (used at start).
fn kill_tree_blocking(dir: &Path) -> usize {
    let mut seen = BTreeSet::new();
    let until = Instant::now() + KILL_DEADLINE;
    let leaves = subdirs(dir);
    loop {
        let mut live: Vec<i32> = members(dir);
        for l in &leaves {
            live.extend(members(l));
        }
        if live.is_empty() {
            break;
        }
        seen.extend(live);
        kill_cgroup(dir);
        for l in &leaves {
            kill_cgroup(l);
        }
        child::reap_orphan_zombies();
        if Instant::now() >= until {
            tracing::warn!(cgroup = %dir.display(), "processes of a stale probe cgroup do not die");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for l in &leaves {
        let _ = std::fs::remove_dir(l);
    }
    let _ = std::fs::remove_dir(dir);
    seen.len()
}

/// Sequence number making each run's cgroup and tag unique within the process.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Sequence number of supervisors in this process (one in the daemon; tests have several).
static SCOPES: AtomicU64 = AtomicU64::new(0);

/// The runs of one supervisor: their cgroups and tags start with `<scope>.`, so one supervisor's
/// shutdown sweep never touches another's processes.
pub(crate) fn new_scope() -> u64 {
    SCOPES.fetch_add(1, Ordering::Relaxed)
}

/// `scope.seq-name` with only `[A-Za-z0-9._-]`; starts with a digit, so never a cgroup control
/// file.
fn leaf_name(scope: u64, probe: &str, seq: u64) -> String {
    let clean: String = probe
        .chars()
        .take(MAX_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{scope}.{seq}-{clean}")
}

/// The containment of one probe run: created before the spawn, ended after the child is reaped.
#[derive(Debug)]
pub(crate) struct RunGroup {
    tag: String,
    cgroup: Option<PathBuf>,
    /// The run's process group (= the child's pid), once spawned.
    pgid: Option<i32>,
    ended: bool,
}

impl RunGroup {
    /// A fresh containment for a run of `probe`: its own cgroup if `use_cgroup` and one is
    /// available, else tracking by tag.
    pub(crate) fn new(scope: u64, probe: &str, use_cgroup: bool) -> RunGroup {
        let leaf = leaf_name(scope, probe, SEQ.fetch_add(1, Ordering::Relaxed));
        let tag = format!("{}/{leaf}", instance_name());
        let cgroup = if use_cgroup {
            hierarchy().and_then(|h| create_leaf(&h.instance, &leaf))
        } else {
            None
        };
        RunGroup {
            tag,
            cgroup,
            pgid: None,
            ended: false,
        }
    }

    /// `(RUN_ENV, tag)`: set in the child's environment.
    pub(crate) fn env(&self) -> (&'static str, &str) {
        (RUN_ENV, &self.tag)
    }

    /// `cgroup.procs` of the run's cgroup, for [`child::join_cgroup_before_exec`].
    pub(crate) fn procs_path(&self) -> Option<CString> {
        let p = self.cgroup.as_ref()?.join("cgroup.procs");
        CString::new(p.as_os_str().as_bytes()).ok()
    }

    /// Record the spawned child; if it did not land in the cgroup, fall back to tracking.
    pub(crate) fn started(&mut self, pid: i32) {
        self.pgid = Some(pid);
        let Some(dir) = &self.cgroup else { return };
        let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return; // already gone: its cgroup is checked at the end anyway
        };
        let joined = own_cgroup(&cg).is_some_and(|p| dir.ends_with(p.trim_start_matches('/')));
        if !joined {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(cgroup = %dir.display(),
                    "probe did not join its cgroup; tracking its descendants instead");
            }
            let _ = std::fs::remove_dir(dir);
            self.cgroup = None;
        }
    }

    /// Kill every process of the run still alive (the probe process itself is already reaped),
    /// remove its cgroup and return how many were killed.
    pub(crate) async fn end(&mut self) -> usize {
        self.ended = true;
        // Members already signalled with the group (a stop's SIGTERM) are not left-overs: give
        // them a moment to go before counting what has to be killed.
        let settle = tokio::time::Instant::now() + SETTLE;
        while !self.live_members().is_empty() && tokio::time::Instant::now() < settle {
            child::reap_orphan_zombies();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let until = tokio::time::Instant::now() + KILL_DEADLINE;
        let mut killed = BTreeSet::new();
        loop {
            let live = self.live_members();
            if live.is_empty() {
                break;
            }
            killed.extend(live.iter().copied());
            self.kill(&live);
            child::reap_orphan_zombies();
            if tokio::time::Instant::now() >= until {
                tracing::warn!(run = %self.tag, left = live.len(), "processes of a probe run do not die");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.remove_dir().await;
        killed.len()
    }

    fn live_members(&self) -> Vec<i32> {
        let mut live = match &self.cgroup {
            Some(dir) => members(dir),
            None => tagged_descendants(&self.tag),
        };
        if let Some(pgid) = self.pgid {
            live.extend(group_members(pgid));
        }
        live.retain(|&p| child::read_stat(p).is_some_and(|s| s.state != 'Z'));
        live.sort_unstable();
        live.dedup();
        live
    }

    fn kill(&self, live: &[i32]) {
        if let Some(pgid) = self.pgid {
            child::signal_group(pgid, Signal::SIGKILL);
        }
        match &self.cgroup {
            Some(dir) => kill_cgroup(dir),
            None => {
                for &pid in live {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }

    async fn remove_dir(&mut self) {
        let Some(dir) = self.cgroup.take() else {
            return;
        };
        // A killed member leaves the cgroup when it has exited; rmdir waits for that.
        for _ in 0..100 {
            match std::fs::remove_dir(&dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        tracing::warn!(cgroup = %dir.display(), "cannot remove a probe run's cgroup");
    }
}

impl Drop for RunGroup {
    /// A run abandoned without [`RunGroup::end`] (its task panicked or was aborted): kill what is
    /// left at once; the empty directory is removed now if possible, else at the next start.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let live = self.live_members();
        self.kill(&live);
        if let Some(dir) = &self.cgroup {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn create_leaf(instance: &Path, leaf: &str) -> Option<PathBuf> {
    let dir = instance.join(leaf);
    // The instance directory may have been released meanwhile by another supervisor's shutdown.
    for _ in 0..2 {
        match std::fs::create_dir(&dir) {
            Ok(()) => return Some(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let _ = std::fs::create_dir(instance);
            }
            Err(e) => {
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(cgroup = %dir.display(), error = %e,
                        "cannot create a probe cgroup; tracking probe descendants instead");
                }
                return None;
            }
        }
    }
    None
}

/// Pids (any state) whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    all_stats()
        .into_iter()
        .filter(|(_, s)| s.pgrp == pgid)
        .map(|(p, _)| p)
        .collect()
}

fn all_stats() -> Vec<(i32, child::StatFields)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, child::read_stat(pid)?)))
        .collect()
}

/// Descendants of this process whose environment has `RUN_ENV=tag`, plus their descendants.
fn tagged_descendants(tag: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut kids: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (pid, s) in all_stats() {
        kids.entry(s.ppid).or_default().push(pid);
    }
    let needle = format!("{RUN_ENV}={tag}");
    let mut out = Vec::new();
    // (pid, inside a tagged subtree)
    let mut stack: Vec<(i32, bool)> = kids
        .get(&me)
        .map_or(Vec::new(), |v| v.iter().map(|&p| (p, false)).collect());
    while let Some((pid, inside)) = stack.pop() {
        let tagged = inside || has_env(pid, needle.as_bytes());
        if tagged {
            out.push(pid);
        }
        if let Some(children) = kids.get(&pid) {
            stack.extend(children.iter().map(|&c| (c, tagged)));
        }
    }
    out
}

/// Was `pid` started by a probe run of supervisor `scope` in this daemon instance (by its cgroup
/// or its environment)?
pub(crate) fn is_probe_process(pid: i32, scope: u64) -> bool {
    let instance = instance_name();
    let leaf_prefix = format!("{scope}.");
    let in_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|cg| {
        own_cgroup(&cg).is_some_and(|p| {
            let mut parts = p.split('/').skip_while(|c| *c != instance);
            parts.next().is_some() && parts.next().is_some_and(|l| l.starts_with(&leaf_prefix))
        })
    });
    in_cgroup
        || std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
            let prefix = format!("{RUN_ENV}={instance}/{leaf_prefix}");
            env.split(|&b| b == 0)
                .any(|e| e.starts_with(prefix.as_bytes()))
        })
}

fn has_env(pid: i32, entry: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_mount_on_hybrid_and_pure_hosts() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(cgroup2_mount(v1), None);
        let spaced = "41 31 0:38 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/my cg")));
    }

    #[test]
    fn reads_own_unified_cgroup() {
        let hybrid = "4:memory:/x\n1:cpu:/\n0::/system.slice/gala-gopher.service\n";
        assert_eq!(
            own_cgroup(hybrid),
            Some("/system.slice/gala-gopher.service")
        );
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn leaf_names_are_safe() {
        assert_eq!(leaf_name(0, "tcp", 7), "0.7-tcp");
        assert_eq!(leaf_name(3, "a/b c\n", 1), "3.1-a_b_c_");
        assert_eq!(leaf_name(0, &"x".repeat(100), 2).len(), 4 + MAX_NAME);
    }

    /// Processes of this test whose command line has `arg`, not zombies.
    fn live_with_arg(arg: &str) -> Vec<i32> {
        all_stats()
            .into_iter()
            .filter(|(pid, s)| {
                s.state != 'Z'
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == arg.as_bytes()))
            })
            .map(|(p, _)| p)
            .collect()
    }

    /// The janitor's fallback half: what runs of a gone instance left without cgroups (tagged
    /// processes in their own session, and an untagged child of a tagged one) is killed.
    #[test]
    fn leftovers_tagged_with_a_gone_instance_are_killed() {
        use std::os::unix::process::CommandExt as _;
        let mark = format!("1000.{}77", std::process::id());
        // A pid above pid_max: no live daemon has this instance name.
        let instance = instance_name_of(i32::MAX - 7, 1);
        let mut probe = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "setsid sleep {mark} </dev/null >/dev/null 2>&1 &\n\
                 env -i sleep {mark} </dev/null >/dev/null 2>&1 &\n\
                 exec sleep {mark}"
            ))
            .env(RUN_ENV, format!("{instance}/0-test"))
            .process_group(0)
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while live_with_arg(&mark).len() < 3 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(live_with_arg(&mark).len(), 3);
        // SAFETY: getpgrp has no arguments and cannot fail.
        let own_group = unsafe { libc::getpgrp() };
        let killed = kill_tagged_blocking(&instance, own_group);
        let _ = probe.wait();
        let left = live_with_arg(&mark);
        for &p in &left {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        assert!(left.is_empty(), "left: {left:?}");
        assert!(killed >= 3, "killed {killed}");
        // Nothing of another instance is touched.
        assert_eq!(
            kill_tagged_blocking(&instance_name_of(i32::MAX - 8, 1), own_group),
            0
        );
    }

    #[test]
    fn dead_and_reused_instances_are_stale() {
        let me = std::process::id() as i32;
        let start = child::read_stat(me).unwrap().starttime;
        assert!(instance_alive(&format!("{INSTANCE_PREFIX}{me}.{start}")));
        // Same pid, other start time: the pid was reused.
        assert!(!instance_alive(&format!(
            "{INSTANCE_PREFIX}{me}.{}",
            start + 1
        )));
        assert!(!instance_alive(&format!("{INSTANCE_PREFIX}{}.1", i32::MAX)));
        assert!(instance_alive("gala-gopher.not-ours"));
    }
}
