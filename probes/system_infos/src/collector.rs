//! One collection cycle: read every enabled source, then write the records of the period that
//! ended (per-period values need the previous reading, so the first cycle only primes).

use crate::cpu::{self, CpuSample};
use crate::disk::{self, Disk};
use crate::events::{Events, Thresholds};
use crate::fs::{self, StatFs};
use crate::net::{self, NetSample};
use crate::nic::{self, Nic};
use crate::process::{self, ProcSample};
use crate::schema;
use crate::selection::ProcSelection;
use crate::source::{HostPaths, ReadErrors, Reader};
use crate::{mem, os, qdisc};
use probe_sdk::control::{Snoop, SnoopMode};
use probe_sdk::event::CivilTime;
use probe_sdk::record::RecordWriter;
use probe_sdk::whitelist::Whitelist;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// Most processes `system_proc` reports under a control-channel selection (an `exclude` one
/// selects nearly every process of the host); the lowest pids are kept.
pub const MAX_SNOOPED_PROCS: usize = 4096;

/// Sub-probe bits of `-P` (0 or absent = all), after HEAD's baseinfo ranges.
pub mod bits {
    /// `system_cpu`, `system_cpu_util`
    pub const CPU: u32 = 1;
    /// `system_meminfo`, `system_dentry`
    pub const MEM: u32 = 2;
    /// `nic`
    pub const NIC: u32 = 4;
    /// `system_tcp`, `system_udp`
    pub const NET: u32 = 8;
    /// `system_iostat`
    pub const DISK: u32 = 16;
    /// `system_df`
    pub const FS: u32 = 32;
    /// `system_proc`
    pub const PROC: u32 = 64;
    /// `system_os`
    pub const HOST: u32 = 128;
}

/// The process whitelist file and the version loaded from it.
#[derive(Debug)]
pub struct WhitelistFile {
    /// `-w` path.
    pub path: PathBuf,
    list: Option<Whitelist>,
    mtime: Option<SystemTime>,
}

impl WhitelistFile {
    /// A whitelist loaded from `path` now and reloaded whenever the file changes.
    pub fn new(path: PathBuf) -> WhitelistFile {
        let mut w = WhitelistFile {
            path,
            list: None,
            mtime: None,
        };
        w.refresh();
        w
    }

    /// Reloads the file if its modification time changed; a bad new version keeps the old one.
    /// Returns whether a new version was loaded.
    fn refresh(&mut self) -> bool {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime.is_some() && mtime == self.mtime {
            return false;
        }
        self.mtime = mtime;
        match Whitelist::load(&self.path) {
            Ok(list) => {
                self.list = Some(list);
                true
            }
            Err(e) => {
                probe_sdk::warn!("whitelist {}: {e}", self.path.display());
                false
            }
        }
    }
}

/// What to collect and how.
#[derive(Debug)]
pub struct Config {
    /// Where to read from.
    pub paths: HostPaths,
    /// Enabled tables, see [`bits`].
    pub tables: u32,
    /// Event thresholds.
    pub thresholds: Thresholds,
    /// `-d`: report only these interfaces (empty = all but `lo`).
    pub nics: Vec<String>,
    /// `--df-remote`: include network and FUSE filesystems (bounded `statvfs`).
    pub df_remote: bool,
    /// Read root qdisc statistics over rtnetlink (live host only).
    pub qdisc: bool,
    /// `-w`: process whitelist.
    pub whitelist: Option<WhitelistFile>,
    /// `-f`: extra pids to report.
    pub pids: Vec<u32>,
    /// USER_HZ, the unit of `/proc` tick counters.
    pub ticks_per_sec: u64,
    /// Report the probe's own CPU time per cycle (off in fixture tests: not reproducible).
    pub measure_cpu: bool,
}

impl Config {
    fn on(&self, bit: u32) -> bool {
        self.tables & bit != 0
    }
}

/// The readings that per-period values are computed from.
#[derive(Debug, Default)]
struct Sample {
    /// Seconds since boot (`/proc/uptime`), the interval clock iostat uses.
    uptime: Option<f64>,
    at: Option<Instant>,
    cpu: CpuSample,
    net: NetSample,
    nics: Vec<Nic>,
    disks: Vec<Disk>,
    procs: HashMap<u32, ProcSample>,
}

/// Runs collection cycles and keeps what is needed between them.
pub struct Collector {
    cfg: Config,
    statfs: Box<dyn StatFs>,
    mount_view: fs::MountView,
    reader: Reader,
    prev: Option<Sample>,
    os_static: Option<os::OsStatic>,
    mem_total_kb: Option<u64>,
    cycles: u64,
    procs_selected: usize,
    selection: ProcSelection,
    /// The control channel's process selection; None: the command line's (`-w`, `-f`).
    snoop: Option<Snoop>,
    /// The cap was reported for the current `snoop`.
    snoop_capped: bool,
}

impl Collector {
    /// A collector that has not primed yet.
    pub fn new(cfg: Config, statfs: Box<dyn StatFs>) -> Collector {
        Collector {
            cfg,
            statfs,
            mount_view: fs::MountView::default(),
            reader: Reader::default(),
            prev: None,
            os_static: None,
            mem_total_kb: None,
            cycles: 0,
            procs_selected: 0,
            selection: ProcSelection::default(),
            snoop: None,
            snoop_capped: false,
        }
    }

    /// Tables written from the next cycle on ([`bits`]). A table turned on reports from the
    /// cycle after next: its per-period values need a first reading.
    pub fn set_tables(&mut self, tables: u32) {
        self.cfg.tables = tables;
    }

    /// Event thresholds from the next cycle on.
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.cfg.thresholds = thresholds;
    }

    /// Interfaces reported (empty: all but `lo`) from the next cycle on.
    pub fn set_nics(&mut self, nics: Vec<String>) {
        self.cfg.nics = nics;
    }

    /// Selects the processes of `system_proc` by the control channel's `snoop`; mode `all`
    /// goes back to the command line's selection (`-w`, `-f`). A newly selected process is
    /// reported from the cycle after next (its per-period values need a first reading).
    pub fn set_snoop(&mut self, snoop: &Snoop) {
        let next = (snoop.mode != SnoopMode::All).then(|| snoop.clone());
        if next != self.snoop {
            self.snoop = next;
            self.snoop_capped = false;
        }
    }

    /// Reads from another tree from now on (fixture tests replay two captured snapshots).
    pub fn set_paths(&mut self, paths: HostPaths) {
        self.cfg.paths = paths;
        self.mount_view = fs::MountView::default();
    }

    /// Error counters so far.
    pub fn errors(&self) -> &ReadErrors {
        &self.reader.errors
    }

    /// Reads every source; writes the records of the period since the previous cycle (none on
    /// the first cycle) into `out`, events stamped with `time`. Returns whether records were
    /// written. Only I/O errors of `out` are returned: unreadable host files are counted.
    pub fn cycle<W: Write>(
        &mut self,
        out: &mut RecordWriter<W>,
        time: &CivilTime,
    ) -> io::Result<bool> {
        let cpu_start = self.cfg.measure_cpu.then(process_cpu_us).flatten();
        let cur = self.read_sample();
        let Some(prev) = self.prev.take() else {
            self.prev = Some(cur);
            self.cycles += 1;
            return Ok(false);
        };
        let res = self.write_period(&prev, &cur, out, time);
        self.prev = Some(cur);
        self.cycles += 1;
        let cpu_us = cpu_start.and_then(|s| process_cpu_us().map(|e| e.saturating_sub(s)));
        res?;
        self.write_self_stats(out, cpu_us)?;
        Ok(true)
    }

    fn read_sample(&mut self) -> Sample {
        let paths = &self.cfg.paths;
        let uptime = self
            .reader
            .read(&paths.proc("uptime"))
            .and_then(|t| t.split_ascii_whitespace().next()?.parse().ok());
        let mut s = Sample {
            uptime,
            at: Some(Instant::now()),
            ..Sample::default()
        };
        if self.cfg.on(bits::CPU) {
            s.cpu = cpu::sample(&self.cfg.paths, &mut self.reader);
        }
        if self.cfg.on(bits::NET) {
            s.net = net::sample(&self.cfg.paths, &mut self.reader);
        }
        if self.cfg.on(bits::NIC) {
            let q = self.qdisc_stats();
            s.nics = nic::sample(
                &self.cfg.paths,
                &mut self.reader,
                &self.cfg.nics,
                q.as_ref(),
            );
        }
        if self.cfg.on(bits::DISK) {
            s.disks = disk::sample(&self.cfg.paths, &mut self.reader);
        }
        if self.cfg.on(bits::PROC) {
            let pids = self.selected_pids();
            self.procs_selected = pids.len();
            s.procs = process::sample(&self.cfg.paths, &mut self.reader, &pids);
        }
        s
    }

    fn qdisc_stats(&mut self) -> Option<HashMap<u32, qdisc::QdiscStats>> {
        if !self.cfg.qdisc {
            return None;
        }
        match qdisc::dump() {
            Ok(q) => Some(q),
            Err(e) => {
                // Not allowed here (an unprivileged container, say): it will not get better, so
                // count it once and stop asking.
                self.reader
                    .errors
                    .failed(std::path::Path::new("rtnetlink qdisc dump"), &e);
                probe_sdk::warn!("tc_* fields of nic disabled");
                self.cfg.qdisc = false;
                None
            }
        }
    }

    fn selected_pids(&mut self) -> Vec<u32> {
        if let Some(snoop) = &self.snoop {
            let (pids, capped) = snooped_pids(snoop, &self.cfg.paths.proc, &mut self.reader);
            if capped && !self.snoop_capped {
                self.snoop_capped = true;
                probe_sdk::warn!(
                    "control: more than {MAX_SNOOPED_PROCS} processes selected, system_proc reports the first {MAX_SNOOPED_PROCS}"
                );
            }
            return pids;
        }
        let mut pids = Vec::new();
        if let Some(w) = self.cfg.whitelist.as_mut() {
            if w.refresh() {
                self.selection.reset();
            }
            if let Some(list) = &w.list {
                pids = self
                    .selection
                    .select(list, &self.cfg.paths.proc, &mut self.reader);
            }
        }
        for &pid in &self.cfg.pids {
            if self.cfg.paths.proc(&pid.to_string()).exists() {
                pids.push(pid);
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn write_period<W: Write>(
        &mut self,
        prev: &Sample,
        cur: &Sample,
        out: &mut RecordWriter<W>,
        time: &CivilTime,
    ) -> io::Result<()> {
        let secs = match (prev.uptime, cur.uptime, prev.at, cur.at) {
            (Some(a), Some(b), _, _) if b > a => b - a,
            (_, _, Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let mut events = Events::new(self.cfg.thresholds);
        let ticks = self.cfg.ticks_per_sec;
        let paths = self.cfg.paths.clone();

        if self.cfg.on(bits::CPU) {
            cpu::write(&prev.cpu, &cur.cpu, ticks, out, &mut events)?;
        }
        if self.cfg.on(bits::MEM) || self.mem_total_kb.is_none() {
            if let Some(m) = mem::sample(&paths, &mut self.reader) {
                self.mem_total_kb = m.total_kb();
                if self.cfg.on(bits::MEM) {
                    mem::write(&m, out, &mut events)?;
                }
            }
        }
        if self.cfg.on(bits::MEM) {
            mem::write_dentry(&paths, &mut self.reader, out)?;
        }
        if self.cfg.on(bits::NET) {
            net::write(&prev.net, &cur.net, out)?;
        }
        if self.cfg.on(bits::NIC) {
            nic::write(&prev.nics, &cur.nics, secs, out, &mut events)?;
        }
        if self.cfg.on(bits::FS) {
            fs::write(
                &paths,
                &mut self.mount_view,
                &mut self.reader,
                self.statfs.as_mut(),
                self.cfg.df_remote,
                out,
                &mut events,
            )?;
        }
        if self.cfg.on(bits::DISK) {
            disk::write(&prev.disks, &cur.disks, secs, out, &mut events)?;
        }
        if self.cfg.on(bits::PROC) {
            process::write(&prev.procs, &cur.procs, secs, ticks, self.mem_total_kb, out)?;
        }
        if self.cfg.on(bits::HOST) {
            if self.os_static.is_none() {
                self.os_static = Some(os::read_static(
                    &paths,
                    &mut self.reader,
                    self.mem_total_kb,
                    ticks,
                ));
            }
            if let Some(st) = &self.os_static {
                os::write(&paths, &mut self.reader, st, out)?;
            }
        }
        events.write_all(out, time)
    }

    fn write_self_stats<W: Write>(
        &self,
        out: &mut RecordWriter<W>,
        cpu_us: Option<u64>,
    ) -> io::Result<()> {
        let e = &self.reader.errors;
        out.record(schema::SELF_STATS.name)
            .field("system_infos")
            .field(&self.cycles)
            .field(&e.read_errors)
            .field(&e.vanished_procs)
            .field(&cpu_us)
            .field(&self.procs_selected)
            .end()
    }
}

/// The processes under `proc_root` that `snoop` selects, ascending, at most
/// [`MAX_SNOOPED_PROCS`]; and whether more were selected.
fn snooped_pids(snoop: &Snoop, proc_root: &Path, r: &mut Reader) -> (Vec<u32>, bool) {
    let mut pids: Vec<u32> = match snoop.mode {
        SnoopMode::Include => snoop
            .pids
            .iter()
            .copied()
            .filter(|pid| proc_root.join(pid.to_string()).exists())
            .collect(),
        SnoopMode::Exclude | SnoopMode::All => {
            let Ok(dir) = std::fs::read_dir(proc_root) else {
                r.errors.failed(proc_root, &"cannot list");
                return (Vec::new(), false);
            };
            dir.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name();
                    let name = name.to_str()?;
                    // Upstream's rule: process directories start with 1-9.
                    (!name.starts_with('0')).then_some(())?;
                    name.parse::<u32>().ok()
                })
                .filter(|pid| snoop.selects(*pid))
                .collect()
        }
    };
    pids.sort_unstable();
    pids.dedup();
    let capped = pids.len() > MAX_SNOOPED_PROCS;
    pids.truncate(MAX_SNOOPED_PROCS);
    (pids, capped)
}

/// CPU time consumed by this process so far, in microseconds.
fn process_cpu_us() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).ok()?;
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let nanos = u64::try_from(t.tv_nsec()).ok()?;
    Some(secs * 1_000_000 + nanos / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_tree(pids: impl IntoIterator<Item = u32>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for pid in pids {
            std::fs::create_dir(dir.path().join(pid.to_string())).unwrap();
        }
        std::fs::create_dir(dir.path().join("0bogus")).unwrap();
        std::fs::create_dir(dir.path().join("sys")).unwrap();
        dir
    }

    #[test]
    fn snoop_include_and_exclude_select_live_processes() {
        let dir = proc_tree([1, 5, 9]);
        let mut r = Reader::default();
        let include = Snoop {
            mode: SnoopMode::Include,
            pids: vec![5, 7],
        };
        assert_eq!(snooped_pids(&include, dir.path(), &mut r), (vec![5], false));
        let exclude = Snoop {
            mode: SnoopMode::Exclude,
            pids: vec![5],
        };
        assert_eq!(
            snooped_pids(&exclude, dir.path(), &mut r),
            (vec![1, 9], false)
        );
    }

    #[test]
    fn snoop_selection_is_capped() {
        let n = MAX_SNOOPED_PROCS as u32 + 2;
        let dir = proc_tree(1..=n);
        let mut r = Reader::default();
        let exclude = Snoop {
            mode: SnoopMode::Exclude,
            pids: vec![1],
        };
        let (pids, capped) = snooped_pids(&exclude, dir.path(), &mut r);
        assert!(capped);
        assert_eq!(pids.len(), MAX_SNOOPED_PROCS);
        assert_eq!((pids[0], pids[MAX_SNOOPED_PROCS - 1]), (2, n - 1));
    }
}
