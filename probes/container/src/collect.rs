//! One collection cycle: discover the containers, then read each one's cgroup files (v1 or v2,
//! per controller), its oldest process's start and its network namespace's interfaces; the
//! Kubernetes pods of the reported containers are summed from their samples ([`pods`]).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use probe_sdk::decl::Snoop;

use crate::cgroup_files::{self as cg, DevIo, DevNum};
use crate::discover::{self, Found, Identify};
use crate::hierarchy::{Hierarchies, Source};
use crate::paths::HostPaths;
use crate::proc_files::{self as pf, CgroupLine, NetTotals};
use crate::read::{self, ReadError};

/// Block devices reported per container; further ones are counted.
pub const MAX_DEVICES: usize = 256;

/// What one container's row carries; `None` is an absent value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Container id, first 12 characters.
    pub short_id: String,
    /// Uid of the container's Kubernetes pod, when its cgroup path names one.
    pub pod_uid: Option<String>,
    /// Processes (tgids) of the container seen in `/proc` this cycle.
    pub procs_seen: u64,
    /// CPU time, seconds.
    pub cpu_usage_s: Option<f64>,
    /// User CPU time, seconds.
    pub cpu_user_s: Option<f64>,
    /// System CPU time, seconds.
    pub cpu_system_s: Option<f64>,
    /// CFS periods.
    pub cfs_periods: Option<u64>,
    /// Throttled CFS periods.
    pub cfs_throttled_periods: Option<u64>,
    /// Throttled time, seconds.
    pub cfs_throttled_s: Option<f64>,
    /// Memory usage, bytes.
    pub mem_usage: Option<u64>,
    /// Usage minus inactive file pages.
    pub mem_working_set: Option<u64>,
    /// Anonymous memory.
    pub mem_rss: Option<u64>,
    /// Page cache (tmpfs included).
    pub mem_cache: Option<u64>,
    /// Limit, 0 = unlimited.
    pub mem_limit: Option<u64>,
    /// Times the limit was hit.
    pub mem_failcnt: Option<u64>,
    /// OOM events (v2).
    pub oom_events: Option<u64>,
    /// OOM kills.
    pub oom_kills: Option<u64>,
    /// Under OOM now (v1).
    pub under_oom: Option<u64>,
    /// Memory stall time, some tasks, seconds.
    pub psi_some_s: Option<f64>,
    /// Memory stall time, all tasks, seconds.
    pub psi_full_s: Option<f64>,
    /// Tasks (pids.current).
    pub processes: Option<u64>,
    /// Task limit, 0 = unlimited.
    pub pids_max: Option<u64>,
    /// Network totals, None in the host's network namespace.
    pub net: Option<NetTotals>,
    /// Unix start time of the oldest process, seconds.
    pub start_time_s: Option<f64>,
    /// Block IO per device, ascending by device number.
    pub blkio: Vec<DevRow>,
}

/// One row of `container_blkio`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevRow {
    /// Device number.
    pub dev: DevNum,
    /// `DEVNAME` of the device, if known.
    pub name: Option<String>,
    /// Its counts.
    pub io: DevIo,
}

/// One row of `pod`: sums over the pod's containers reported in one cycle.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodSample {
    /// Pod uid.
    pub pod_uid: String,
    /// Its reported containers.
    pub containers: u64,
    /// Their tasks: `pids.current` each, the processes seen where that is absent.
    pub processes: u64,
    /// Their CPU time, seconds; None if one of them lacks it.
    pub cpu_usage_s: Option<f64>,
    /// Their working sets, bytes; None if one of them lacks it.
    pub mem_working_set: Option<u64>,
}

/// What one cycle collected.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cycle {
    /// The reported containers, ascending by id.
    pub containers: Vec<Sample>,
    /// The pods of those containers, ascending by uid.
    pub pods: Vec<PodSample>,
}

/// The pods of `samples`: one per pod uid, over the samples that name it (containers without a
/// pod uid are in none). A sum some container lacks is absent rather than partial, so a missing
/// file never looks like a drop of the pod's counter.
pub fn pods(samples: &[Sample]) -> Vec<PodSample> {
    let mut by_uid: BTreeMap<&str, PodSample> = BTreeMap::new();
    for s in samples {
        let Some(uid) = s.pod_uid.as_deref() else {
            continue;
        };
        let p = by_uid.entry(uid).or_insert_with(|| PodSample {
            pod_uid: uid.to_string(),
            containers: 0,
            processes: 0,
            cpu_usage_s: Some(0.0),
            mem_working_set: Some(0),
        });
        p.containers += 1;
        p.processes = p
            .processes
            .saturating_add(s.processes.unwrap_or(s.procs_seen));
        p.cpu_usage_s = p.cpu_usage_s.zip(s.cpu_usage_s).map(|(a, b)| a + b);
        p.mem_working_set = p
            .mem_working_set
            .zip(s.mem_working_set)
            .map(|(a, b)| a.saturating_add(b));
    }
    by_uid.into_values().collect()
}

impl Sample {
    /// Whether no cgroup value could be read (the container went away during the cycle).
    fn is_empty(&self) -> bool {
        self.cpu_usage_s.is_none()
            && self.mem_usage.is_none()
            && self.processes.is_none()
            && self.cfs_periods.is_none()
    }
}

/// The probe's own counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Cycles run.
    pub cycles: u64,
    /// Containers in the last cycle's report.
    pub containers: u64,
    /// Pods in the last cycle's report.
    pub pods: u64,
    /// Containers left out by the cap, summed over cycles.
    pub containers_over_cap: u64,
    /// `/proc` entries left unread by the cap, summed over cycles.
    pub procs_over_cap: u64,
    /// Devices left out by [`MAX_DEVICES`], summed over cycles.
    pub devices_over_cap: u64,
    /// Files that could not be read or parsed.
    pub read_errors: u64,
}

/// Reads containers; keeps what does not change between cycles.
#[derive(Debug)]
pub struct Collector {
    paths: HostPaths,
    identify: Identify,
    /// Clock ticks per second of `/proc/<pid>/stat` and `cpuacct.stat`.
    clk_tck: u64,
    /// Boot time, unix seconds (read until it succeeds once).
    btime: Option<u64>,
    counters: Counters,
    /// Files whose read failure was logged (once per file name).
    warned: BTreeSet<String>,
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(100)
}

/// `n / d` as a float (exact integer inputs: the quotient is correctly rounded).
fn ratio(n: u64, d: u64) -> f64 {
    n as f64 / d as f64
}

impl Collector {
    /// A collector reading `paths`, naming containers with `identify`.
    pub fn new(paths: HostPaths, identify: Identify) -> Collector {
        Collector {
            paths,
            identify,
            clk_tck: clk_tck(),
            btime: None,
            counters: Counters::default(),
            warned: BTreeSet::new(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The text of `path`; a missing file is None, any other failure is counted and logged
    /// once per file name.
    fn read(&mut self, path: &Path, limit: u64) -> Option<String> {
        match read::read_bounded(path, limit) {
            Ok(t) => Some(t),
            Err(ReadError::Missing) => None,
            Err(e) => {
                self.counters.read_errors += 1;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if self.warned.insert(name) {
                    probe_sdk::warn!(
                        "cannot read {}: {e} (logged once per file name)",
                        path.display()
                    );
                }
                None
            }
        }
    }

    /// Reads `<dir>/<name>` and parses it with `parse`; a file that does not parse is counted.
    fn parsed<T>(
        &mut self,
        dir: &Path,
        name: &str,
        limit: u64,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let path = dir.join(name);
        let text = self.read(&path, limit)?;
        let v = parse(&text);
        if v.is_none() {
            self.counters.read_errors += 1;
            if self.warned.insert(name.to_string()) {
                probe_sdk::warn!(
                    "cannot parse {} (logged once per file name)",
                    path.display()
                );
            }
        }
        v
    }

    /// One cycle: every selected container's sample and their pods.
    pub fn collect(&mut self, snoop: &Snoop) -> Cycle {
        self.counters.cycles += 1;
        let mountinfo = self.paths.mountinfo.clone();
        let hier = match self.read(&mountinfo, read::LARGE) {
            Some(t) => Hierarchies::from_mountinfo(&t, &self.paths.root),
            None => Hierarchies::default(),
        };
        if self.btime.is_none() {
            let stat = self.paths.proc_stat();
            if let Some(text) = self.read(&stat, read::LARGE) {
                self.btime = pf::btime(&text);
                if self.btime.is_none() {
                    self.counters.read_errors += 1;
                }
            }
        }
        let host_netns = self.host_netns();
        let scan = discover::scan(&self.paths.proc, self.identify, snoop);
        self.counters.containers_over_cap += scan.containers_over_cap;
        self.counters.procs_over_cap += scan.procs_over_cap;
        self.counters.read_errors += scan.read_errors;
        let mut out = Vec::with_capacity(scan.containers.len());
        for c in &scan.containers {
            let s = self.sample(c, &hier, host_netns);
            if !s.is_empty() {
                out.push(s);
            }
        }
        let pods = pods(&out);
        self.counters.containers = out.len() as u64;
        self.counters.pods = pods.len() as u64;
        Cycle {
            containers: out,
            pods,
        }
    }

    /// (device, inode) of the host's network namespace, if any candidate is readable.
    fn host_netns(&self) -> Option<(u64, u64)> {
        self.paths
            .host_netns
            .iter()
            .find_map(|p| std::fs::metadata(p).ok())
            .map(|m| (m.dev(), m.ino()))
    }

    fn sample(&mut self, c: &Found, hier: &Hierarchies, host_netns: Option<(u64, u64)>) -> Sample {
        let lines: Vec<CgroupLine<'_>> = c
            .lines
            .iter()
            .map(|(controllers, path)| CgroupLine { controllers, path })
            .collect();
        let mut s = Sample {
            short_id: c.id.chars().take(12).collect(),
            pod_uid: c.pod_uid.clone(),
            procs_seen: c.pids.len() as u64,
            ..Sample::default()
        };
        self.cpu(&mut s, hier, &lines);
        self.memory(&mut s, hier, &lines);
        if let Some(dir) = hier.unified_dir(&lines) {
            if let Some((some, full)) = self.parsed(&dir, "memory.pressure", read::SMALL, |t| {
                let p = cg::pressure_totals(t);
                (p.0.is_some() || p.1.is_some()).then_some(p)
            }) {
                (s.psi_some_s, s.psi_full_s) = (some, full);
            }
        }
        match hier.source("pids", &lines) {
            Some(Source::V1(d) | Source::V2(d)) => {
                s.processes = self.parsed(&d, "pids.current", read::SMALL, cg::single);
                s.pids_max = self.parsed(&d, "pids.max", read::SMALL, cg::limit);
            }
            None => {}
        }
        self.blkio(&mut s, hier, &lines);
        let oldest = self.oldest_pid(c);
        if let (Some((pid, ticks)), Some(btime)) = (oldest, self.btime) {
            s.start_time_s = Some(ratio(btime * self.clk_tck + ticks, self.clk_tck));
            s.net = self.network(pid, &c.pids, host_netns);
        } else if let Some((pid, _)) = oldest {
            s.net = self.network(pid, &c.pids, host_netns);
        }
        s
    }

    fn cpu(&mut self, s: &mut Sample, hier: &Hierarchies, lines: &[CgroupLine<'_>]) {
        match hier.source("cpuacct", lines) {
            Some(Source::V1(d)) => {
                s.cpu_usage_s = self
                    .parsed(&d, "cpuacct.usage", read::SMALL, cg::single)
                    .map(|ns| ratio(ns, 1_000_000_000));
                if let Some(stat) = self.read(&d.join("cpuacct.stat"), read::SMALL) {
                    let hz = self.clk_tck;
                    s.cpu_user_s = cg::keyed(&stat, "user").map(|t| ratio(t, hz));
                    s.cpu_system_s = cg::keyed(&stat, "system").map(|t| ratio(t, hz));
                }
            }
            Some(Source::V2(d)) => {
                if let Some(stat) = self.read(&d.join("cpu.stat"), read::SMALL) {
                    let secs = |k| cg::keyed(&stat, k).map(|us| ratio(us, 1_000_000));
                    s.cpu_usage_s = secs("usage_usec");
                    s.cpu_user_s = secs("user_usec");
                    s.cpu_system_s = secs("system_usec");
                }
            }
            None => {}
        }
        // nr_periods and friends exist only while the cpu controller is on for the cgroup.
        let (dir, throttled_key, unit) = match hier.source("cpu", lines) {
            Some(Source::V1(d)) => (d, "throttled_time", 1_000_000_000),
            Some(Source::V2(d)) => (d, "throttled_usec", 1_000_000),
            None => return,
        };
        if let Some(stat) = self.read(&dir.join("cpu.stat"), read::SMALL) {
            s.cfs_periods = cg::keyed(&stat, "nr_periods");
            s.cfs_throttled_periods = cg::keyed(&stat, "nr_throttled");
            s.cfs_throttled_s = cg::keyed(&stat, throttled_key).map(|t| ratio(t, unit));
        }
    }

    fn memory(&mut self, s: &mut Sample, hier: &Hierarchies, lines: &[CgroupLine<'_>]) {
        match hier.source("memory", lines) {
            Some(Source::V1(d)) => {
                s.mem_usage = self.parsed(&d, "memory.usage_in_bytes", read::SMALL, cg::single);
                s.mem_limit = self.parsed(&d, "memory.limit_in_bytes", read::SMALL, cg::limit);
                s.mem_failcnt = self.parsed(&d, "memory.failcnt", read::SMALL, cg::single);
                if let Some(stat) = self.read(&d.join("memory.stat"), read::SMALL) {
                    // The total_ values include descendant cgroups, as usage_in_bytes does.
                    let v = |k: &str| {
                        cg::keyed(&stat, &format!("total_{k}")).or_else(|| cg::keyed(&stat, k))
                    };
                    s.mem_rss = v("rss");
                    s.mem_cache = v("cache");
                    s.mem_working_set = working_set(s.mem_usage, v("inactive_file"));
                }
                if let Some(oom) = self.read(&d.join("memory.oom_control"), read::SMALL) {
                    s.oom_kills = cg::keyed(&oom, "oom_kill");
                    s.under_oom = cg::keyed(&oom, "under_oom");
                }
            }
            Some(Source::V2(d)) => {
                s.mem_usage = self.parsed(&d, "memory.current", read::SMALL, cg::single);
                s.mem_limit = self.parsed(&d, "memory.max", read::SMALL, cg::limit);
                if let Some(stat) = self.read(&d.join("memory.stat"), read::SMALL) {
                    s.mem_rss = cg::keyed(&stat, "anon");
                    s.mem_cache = cg::keyed(&stat, "file");
                    s.mem_working_set = working_set(s.mem_usage, cg::keyed(&stat, "inactive_file"));
                }
                if let Some(ev) = self.read(&d.join("memory.events"), read::SMALL) {
                    s.mem_failcnt = cg::keyed(&ev, "max");
                    s.oom_events = cg::keyed(&ev, "oom");
                    s.oom_kills = cg::keyed(&ev, "oom_kill");
                }
            }
            None => {}
        }
    }

    fn blkio(&mut self, s: &mut Sample, hier: &Hierarchies, lines: &[CgroupLine<'_>]) {
        let devs: Vec<(DevNum, DevIo)> = match hier.source("blkio", lines) {
            Some(Source::V1(d)) => {
                let bytes = self.v1_blkio(&d, "blkio.throttle.io_service_bytes");
                let ios: BTreeMap<DevNum, (u64, u64)> = self
                    .v1_blkio(&d, "blkio.throttle.io_serviced")
                    .into_iter()
                    .map(|(dev, r, w)| (dev, (r, w)))
                    .collect();
                bytes
                    .into_iter()
                    .map(|(dev, r, w)| {
                        let (reads, writes) = ios.get(&dev).copied().unwrap_or_default();
                        (
                            dev,
                            DevIo {
                                read_bytes: r,
                                write_bytes: w,
                                reads,
                                writes,
                            },
                        )
                    })
                    .collect()
            }
            Some(Source::V2(d)) => match self.read(&d.join("io.stat"), read::LARGE) {
                Some(t) => cg::io_stat(&t),
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        let mut devs = devs;
        devs.sort_by_key(|(d, _)| *d);
        devs.dedup_by_key(|(d, _)| *d);
        if devs.len() > MAX_DEVICES {
            self.counters.devices_over_cap += (devs.len() - MAX_DEVICES) as u64;
            devs.truncate(MAX_DEVICES);
        }
        for (dev, io) in devs {
            // Devices v1 lists with nothing done yet (every value 0) are left out, as v2 does.
            if io == DevIo::default() {
                continue;
            }
            let name = self.dev_name(dev);
            s.blkio.push(DevRow { dev, name, io });
        }
    }

    /// A v1 throttle file, the `_recursive` form (descendant cgroups included) when present.
    fn v1_blkio(&mut self, dir: &Path, name: &str) -> Vec<(DevNum, u64, u64)> {
        let text = self
            .read(&dir.join(format!("{name}_recursive")), read::LARGE)
            .or_else(|| self.read(&dir.join(name), read::LARGE));
        text.map(|t| cg::blkio_read_write(&t)).unwrap_or_default()
    }

    fn dev_name(&mut self, dev: DevNum) -> Option<String> {
        let text = self.read(&self.paths.block_uevent(dev), read::SMALL)?;
        text.lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
    }

    /// The container's oldest process and its start (clock ticks since boot).
    fn oldest_pid(&mut self, c: &Found) -> Option<(u32, u64)> {
        let mut oldest: Option<(u32, u64)> = None;
        for &pid in &c.pids {
            let Some(text) = self.read(&self.paths.pid_file(pid, "stat"), read::SMALL) else {
                continue;
            };
            let Some(start) = pf::stat_starttime(&text) else {
                self.counters.read_errors += 1;
                continue;
            };
            if oldest.is_none_or(|(_, s)| start < s) {
                oldest = Some((pid, start));
            }
        }
        oldest
    }

    /// Totals of the container's network namespace, read through its oldest process (another
    /// of its processes if that one is gone); None when it is the host's namespace or cannot be
    /// told apart from it.
    fn network(&mut self, first: u32, pids: &[u32], host: Option<(u64, u64)>) -> Option<NetTotals> {
        let host = host?;
        for pid in std::iter::once(first).chain(pids.iter().copied().filter(|p| *p != first)) {
            let ns = match std::fs::metadata(self.paths.pid_file(pid, "ns/net")) {
                Ok(m) => (m.dev(), m.ino()),
                Err(_) => continue,
            };
            if ns == host {
                return None;
            }
            if let Some(text) = self.read(&self.paths.pid_file(pid, "net/dev"), read::LARGE) {
                return Some(pf::net_dev(&text));
            }
        }
        None
    }
}

/// Usage minus inactive file pages, never below 0 (cAdvisor's working set).
fn working_set(usage: Option<u64>, inactive_file: Option<u64>) -> Option<u64> {
    Some(usage?.saturating_sub(inactive_file.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_set_never_negative() {
        assert_eq!(working_set(Some(100), Some(30)), Some(70));
        assert_eq!(working_set(Some(10), Some(30)), Some(0));
        assert_eq!(working_set(Some(10), None), Some(10));
        assert_eq!(working_set(None, Some(1)), None);
    }

    fn container(pod: Option<&str>, processes: Option<u64>, cpu: Option<f64>) -> Sample {
        Sample {
            pod_uid: pod.map(str::to_string),
            procs_seen: 2,
            processes,
            cpu_usage_s: cpu,
            mem_working_set: Some(1000),
            ..Sample::default()
        }
    }

    #[test]
    fn pods_sum_their_containers_and_leave_out_plain_ones() {
        let samples = [
            container(Some("p1"), Some(5), Some(1.5)),
            container(None, Some(100), Some(9.0)),
            container(Some("p2"), Some(1), None),
            container(Some("p1"), None, Some(0.25)),
            container(Some("p2"), Some(3), Some(1.0)),
        ];
        let got = pods(&samples);
        assert_eq!(
            got,
            [
                PodSample {
                    pod_uid: "p1".into(),
                    containers: 2,
                    // 5 tasks from pids.current, 2 processes seen where it is absent.
                    processes: 7,
                    cpu_usage_s: Some(1.75),
                    mem_working_set: Some(2000),
                },
                PodSample {
                    pod_uid: "p2".into(),
                    containers: 2,
                    processes: 4,
                    cpu_usage_s: None,
                    mem_working_set: Some(2000),
                },
            ]
        );
        assert!(pods(&[container(None, Some(1), Some(1.0))]).is_empty());
    }
}
