//! What the probe reads from files each period: PSI (node: `/proc/pressure/*`; container: its
//! v2 cgroup's `*.pressure`), CPU usage (node: `/proc/stat`; container: v1 `cpuacct.usage` or
//! v2 `cpu.stat usage_usec`) and the CPU limit (v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`, v2
//! `cpu.max`). Values that are changes over the period need two readings: a row's first period
//! has none of them (the probe takes a first reading at start, so only rows that appear later
//! miss one period).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cgroups::{Container, Layout};
use crate::psi::{self, Pressure, Resource, Stall};
use crate::read;

/// One row's file values for the period that ended.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FileRow {
    /// Stall by [`Resource::index`].
    pub stall: [Option<Stall>; 3],
    /// CPU usage, percent (`cpu_busy`).
    pub busy_pct: Option<f64>,
    /// CPU cores (`cpu_cores`).
    pub cores: Option<f64>,
}

impl FileRow {
    /// The stall of `r`.
    pub fn stall(&self, r: Resource) -> Option<Stall> {
        self.stall[r.index()]
    }
}

/// The CPU time counters of `/proc/stat`'s `cpu` line, in USER_HZ ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq + steal.
    pub busy: u64,
    /// busy + idle + iowait.
    pub total: u64,
    /// Number of `cpuN` lines (online CPUs).
    pub cpus: u32,
}

/// Parses `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let mut times = None;
    let mut cpus = 0u32;
    for line in text.lines() {
        let mut w = line.split_ascii_whitespace();
        match w.next() {
            Some("cpu") => {
                let v: Vec<u64> = w.take(8).map_while(|x| x.parse().ok()).collect();
                if v.len() < 8 {
                    return None;
                }
                // user nice system idle iowait irq softirq steal (guest is inside user).
                let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
                times = Some((busy, busy + v[3] + v[4]));
            }
            Some(c) if c.starts_with("cpu") && c[3..].bytes().all(|b| b.is_ascii_digit()) => {
                cpus += 1;
            }
            _ => {}
        }
    }
    let (busy, total) = times?;
    Some(CpuTimes { busy, total, cpus })
}

/// Node CPU usage in percent between two readings.
pub fn node_busy_pct(before: &CpuTimes, now: &CpuTimes) -> Option<f64> {
    let total = now.total.checked_sub(before.total)?;
    let busy = now.busy.checked_sub(before.busy)?;
    if total == 0 {
        return None;
    }
    Some(busy as f64 * 100.0 / total as f64)
}

/// The CPU limit in cores: v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1: none), or v2
/// `cpu.max` (`max <period>`: none; `<quota> <period>`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// No quota.
    Unlimited,
    /// Quota / period.
    Cores(f64),
}

/// Parses v1's quota and period files.
pub fn parse_cfs(quota: &str, period: &str) -> Option<Limit> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    if quota < 0 {
        return Some(Limit::Unlimited);
    }
    (period > 0).then(|| Limit::Cores(quota as f64 / period as f64))
}

/// Parses v2's `cpu.max`.
pub fn parse_cpu_max(text: &str) -> Option<Limit> {
    let mut w = text.split_ascii_whitespace();
    let quota = w.next()?;
    let period: u64 = w.next()?.parse().ok()?;
    if quota == "max" {
        return Some(Limit::Unlimited);
    }
    let quota: u64 = quota.parse().ok()?;
    (period > 0).then(|| Limit::Cores(quota as f64 / period as f64))
}

/// `usage_usec` of a v2 `cpu.stat`, in ns.
pub fn parse_cpu_stat_usage_ns(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|us| us.saturating_mul(1000))
}

/// A value rounded to two decimals (what the records print).
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[derive(Debug, Clone, Default)]
struct Prev {
    pressure: [Option<Pressure>; 3],
    usage: Option<(u64, Instant)>,
}

/// The file readings of the previous period, per row.
#[derive(Debug)]
pub struct Files {
    layout: Option<Layout>,
    proc_dir: PathBuf,
    node_prev: Prev,
    node_stat: Option<CpuTimes>,
    containers: HashMap<String, Prev>,
}

fn read_small(path: &Path) -> Option<String> {
    read::bounded(path, read::SMALL).ok()
}

fn stalls(prev: &mut Prev, read: impl Fn(Resource) -> Option<String>) -> [Option<Stall>; 3] {
    let mut out = [None; 3];
    for r in Resource::ALL {
        let now = read(r).as_deref().and_then(psi::parse);
        let before = std::mem::replace(&mut prev.pressure[r.index()], now);
        out[r.index()] = match (before, now) {
            (Some(b), Some(n)) => n.since(&b),
            _ => None,
        };
    }
    out
}

impl Files {
    /// Reads below `proc_dir` (the host's `/proc`) and the hierarchies of `layout`.
    pub fn new(layout: Option<Layout>, proc_dir: PathBuf) -> Files {
        Files {
            layout,
            proc_dir,
            node_prev: Prev::default(),
            node_stat: None,
            containers: HashMap::new(),
        }
    }

    /// The node's values since the previous call.
    pub fn node(&mut self) -> FileRow {
        let pressure = self.proc_dir.join("pressure");
        let stall = stalls(&mut self.node_prev, |r| {
            read_small(&pressure.join(r.name()))
        });
        let stat = read::bounded(&self.proc_dir.join("stat"), read::LARGE)
            .ok()
            .as_deref()
            .and_then(parse_proc_stat);
        let before = std::mem::replace(&mut self.node_stat, stat);
        let busy_pct = match (before, stat) {
            (Some(b), Some(n)) => node_busy_pct(&b, &n).map(round2),
            _ => None,
        };
        FileRow {
            stall,
            busy_pct,
            cores: stat.map(|s| f64::from(s.cpus)),
        }
    }

    /// Online CPUs as the last node reading found them.
    pub fn host_cpus(&self) -> Option<u32> {
        self.node_stat.map(|s| s.cpus).filter(|n| *n > 0)
    }

    /// Container `c`'s values since the previous call for it, at time `now`.
    pub fn container(&mut self, c: &Container, now: Instant) -> FileRow {
        let Some(layout) = &self.layout else {
            return FileRow::default();
        };
        let host_cpus = self.node_stat.map(|s| s.cpus).filter(|n| *n > 0);
        let unified = layout.unified.as_ref().and_then(|m| m.dir_of(&c.path));
        let prev = self.containers.entry(c.short_id.clone()).or_default();
        let stall = match &unified {
            Some(dir) => stalls(prev, |r| {
                read_small(&dir.join(format!("{}.pressure", r.name())))
            }),
            None => [None; 3],
        };
        let usage_ns = match &layout.cpuacct_v1 {
            Some(m) => m
                .dir_of(&c.path)
                .and_then(|d| read_small(&d.join("cpuacct.usage")))
                .and_then(|t| t.trim().parse::<u64>().ok()),
            None => unified
                .as_ref()
                .and_then(|d| read_small(&d.join("cpu.stat")))
                .as_deref()
                .and_then(parse_cpu_stat_usage_ns),
        };
        let before = std::mem::replace(&mut prev.usage, usage_ns.map(|u| (u, now)));
        let busy_pct = match (before, usage_ns, host_cpus) {
            (Some((b, at)), Some(u), Some(cpus)) => {
                let elapsed = now.saturating_duration_since(at).as_nanos() as f64;
                let used = u.checked_sub(b).map(|d| d as f64);
                used.filter(|_| elapsed > 0.0)
                    .map(|d| round2(d * 100.0 / (elapsed * f64::from(cpus))))
            }
            _ => None,
        };
        let limit = match &layout.cpu_v1 {
            Some(m) => m.dir_of(&c.path).and_then(|d| {
                parse_cfs(
                    &read_small(&d.join("cpu.cfs_quota_us"))?,
                    &read_small(&d.join("cpu.cfs_period_us"))?,
                )
            }),
            None => unified
                .as_ref()
                .and_then(|d| read_small(&d.join("cpu.max")))
                .as_deref()
                .and_then(parse_cpu_max),
        };
        // Upstream: the quota in cores, else the host's CPUs.
        let cores = match limit {
            Some(Limit::Cores(c)) => Some(round2(c)),
            _ => host_cpus.map(f64::from),
        };
        FileRow {
            stall,
            busy_pct,
            cores,
        }
    }

    /// Forgets the containers `keep` rejects (gone).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.containers.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_and_cpus() {
        let a = parse_proc_stat(
            "cpu  100 10 50 800 40 5 5 0 0 0\ncpu0 50 5 25 400 20 3 2 0 0 0\n\
             cpu1 50 5 25 400 20 2 3 0 0 0\nintr 1 2 3\nctxt 99\n",
        )
        .unwrap();
        assert_eq!(a.busy, 170);
        assert_eq!(a.total, 1010);
        assert_eq!(a.cpus, 2);
        let b = CpuTimes {
            busy: 270,
            total: 1410,
            cpus: 2,
        };
        assert_eq!(node_busy_pct(&a, &b), Some(25.0));
        assert_eq!(node_busy_pct(&b, &a), None);
        assert!(parse_proc_stat("cpu 1 2 3\n").is_none());
    }

    #[test]
    fn limits() {
        assert_eq!(parse_cfs("-1\n", "100000\n"), Some(Limit::Unlimited));
        assert_eq!(parse_cfs("150000\n", "100000\n"), Some(Limit::Cores(1.5)));
        assert_eq!(parse_cfs("x", "100000"), None);
        assert_eq!(parse_cpu_max("max 100000\n"), Some(Limit::Unlimited));
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(Limit::Cores(0.5)));
        assert_eq!(parse_cpu_max("50000 0\n"), None);
        assert_eq!(
            parse_cpu_stat_usage_ns("usage_usec 1234\nuser_usec 1000\n"),
            Some(1_234_000)
        );
        assert_eq!(round2(1.23456), 1.23);
    }
}
