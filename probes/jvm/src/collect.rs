//! One collection cycle: discover the JVMs, read and map each one's buffer, and keep each
//! JVM's health (up, errors since first seen) across cycles.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use probe_sdk::decl::Snoop;

use crate::discover::{self, parse_stat, read_small, OpenError};
use crate::hsperf::{self, HsperfError};
use crate::sample::{self, Sample};

/// A JVM whose creation time is this much earlier than its process's start is a stale file
/// of an earlier process with the same pid.
const STALE_SLACK_SECS: f64 = 2.0;

/// One JVM in a cycle.
#[derive(Debug)]
pub struct Jvm {
    /// Process id (in the probe's `/proc`).
    pub pid: u32,
    /// What its buffer says; `None` when it could not be read (`up` 0).
    pub sample: Option<Sample>,
    /// CPU seconds of the process (user + system).
    pub cpu_secs: Option<f64>,
    /// Read, parse and map time of this cycle, seconds.
    pub scrape_secs: f64,
    /// Failed reads since the probe first saw this JVM.
    pub errors: u64,
}

/// A cycle's result.
#[derive(Debug, Default)]
pub struct Cycle {
    /// The JVMs, by pid.
    pub jvms: Vec<Jvm>,
}

/// The probe's own counts since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Cycles run.
    pub cycles: u64,
    /// Buffers that could not be read or parsed (summed over JVMs and cycles).
    pub errors: u64,
    /// Files refused: not regular, wrong owner, too large.
    pub refused: u64,
    /// Files of exited processes whose pid was reused, skipped.
    pub stale: u64,
    /// `/proc` entries left unread because of the cap.
    pub procs_over_cap: u64,
}

/// Discovery and per-JVM state across cycles.
pub struct Collector {
    proc: PathBuf,
    hz: f64,
    boot_secs: Option<f64>,
    buf: Vec<u8>,
    errors: HashMap<u32, u64>,
    down: HashSet<u32>,
    counters: Counters,
}

/// Seconds since the epoch of the boot (`btime` of `/proc/stat`).
fn boot_time(proc: &std::path::Path) -> Option<f64> {
    read_small(&proc.join("stat"))?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
}

impl Collector {
    /// A collector reading the `/proc` at `proc` (the host's: `probe_sdk::host::path("/proc")`).
    pub fn new(proc: PathBuf) -> Collector {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Collector {
            boot_secs: boot_time(&proc),
            proc,
            hz: if hz > 0 { hz as f64 } else { 100.0 },
            buf: Vec::with_capacity(64 * 1024),
            errors: HashMap::new(),
            down: HashSet::new(),
            counters: Counters::default(),
        }
    }

    /// The probe's own counts.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// One cycle over the JVMs `snoop` selects.
    pub fn collect(&mut self, snoop: &Snoop) -> Cycle {
        self.counters.cycles += 1;
        let scan = discover::scan(&self.proc, snoop);
        self.counters.procs_over_cap += scan.procs_over_cap;
        let mut cycle = Cycle::default();
        for c in &scan.candidates {
            let t0 = Instant::now();
            let stat = read_small(&self.proc.join(format!("{}/stat", c.pid)))
                .and_then(|s| parse_stat(&s, self.hz));
            let result = match c.read(&mut self.buf) {
                Ok(()) => hsperf::parse(&self.buf)
                    .map(|pd| sample::map(&pd))
                    .map_err(Failure::Parse),
                Err(e) => Err(Failure::Open(e)),
            };
            let sample = match result {
                Ok(s) => {
                    if self.is_stale(&s, stat.map(|s| s.start_secs)) {
                        self.counters.stale += 1;
                        continue;
                    }
                    if self.down.remove(&c.pid) {
                        probe_sdk::info!("jvm {}: readable again", c.pid);
                    }
                    Some(s)
                }
                // A JVM still starting, or one that exited between the scan and the read.
                Err(Failure::Parse(HsperfError::NotAccessible)) => continue,
                Err(Failure::Open(OpenError::Io(e)))
                    if e.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue
                }
                Err(f) => {
                    self.counters.errors += 1;
                    if matches!(
                        f,
                        Failure::Open(OpenError::NotRegular | OpenError::Owner { .. })
                            | Failure::Open(OpenError::TooLarge)
                    ) {
                        self.counters.refused += 1;
                    }
                    *self.errors.entry(c.pid).or_insert(0) += 1;
                    if self.down.insert(c.pid) {
                        probe_sdk::warn!(
                            "jvm {}: hsperfdata file (pid {} in its namespace) not used: {f}",
                            c.pid,
                            c.nspid
                        );
                    }
                    None
                }
            };
            cycle.jvms.push(Jvm {
                pid: c.pid,
                sample,
                cpu_secs: stat.map(|s| s.cpu_secs),
                scrape_secs: t0.elapsed().as_secs_f64(),
                errors: self.errors.get(&c.pid).copied().unwrap_or(0),
            });
        }
        // Forget JVMs not seen in this cycle (their error counts too).
        let live: HashSet<u32> = cycle.jvms.iter().map(|j| j.pid).collect();
        self.errors.retain(|pid, _| live.contains(pid));
        self.down.retain(|pid| live.contains(pid));
        cycle
    }

    /// Whether a buffer predates its process (a stale file of a reused pid).
    fn is_stale(&self, s: &Sample, start_after_boot: Option<f64>) -> bool {
        match (s.create_ms.or(s.start_ms), start_after_boot, self.boot_secs) {
            (Some(vm_ms), Some(after), Some(boot)) => {
                (vm_ms as f64 / 1000.0) < boot + after - STALE_SLACK_SECS
            }
            _ => false,
        }
    }
}

/// Why a candidate gave no sample.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Open(OpenError),
    #[error("{0}")]
    Parse(HsperfError),
}
