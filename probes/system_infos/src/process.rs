//! `system_proc`: processes selected by the `gala-gopher-app.conf` whitelist (`-w`, upstream's
//! first-matching-comm rule) or listed with `-f`.
//!
//! A process is identified by (pid, start time), so a reused pid starts afresh. A process seen
//! for the first time is primed for one period (its per-period values need two readings). A
//! process that exits while being read is dropped from this cycle and counted as vanished.

use crate::schema;
use crate::source::{read_bytes_into, read_into, HostPaths, Reader};
use crate::value::{delta, percent, Fixed2};
use probe_sdk::record::RecordWriter;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

/// Longest `cmdline` label value, in bytes.
pub const CMDLINE_MAX: usize = 256;

/// The `/proc/<pid>/stat` fields used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidStat {
    /// Command name (between the parentheses).
    pub comm: String,
    /// Parent pid.
    pub ppid: i64,
    /// Process group.
    pub pgid: i64,
    /// Minor faults.
    pub minflt: u64,
    /// Major faults.
    pub majflt: u64,
    /// User ticks (guest included).
    pub utime: u64,
    /// Kernel ticks.
    pub stime: u64,
    /// Waited-for children user ticks.
    pub cutime: u64,
    /// Waited-for children kernel ticks.
    pub cstime: u64,
    /// Kernel priority.
    pub priority: i64,
    /// Nice value.
    pub nice: i64,
    /// Threads.
    pub num_threads: u64,
    /// Start time in ticks after boot: with the pid, the process identity.
    pub starttime: u64,
    /// Virtual size in bytes.
    pub vsize: u64,
    /// Resident pages.
    pub rss_pages: u64,
    /// CPU last run on.
    pub processor: Option<i64>,
    /// Guest ticks (part of utime).
    pub guest_time: Option<u64>,
}

/// Parses `/proc/<pid>/stat`; the comm may contain spaces and parentheses.
pub fn parse_pid_stat(text: &str) -> Option<PidStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let f: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    let u = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let s = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
    // Field n of proc(5) is f[n - 3].
    let nonneg = |i: usize| s(i).map(|v| v.max(0) as u64);
    Some(PidStat {
        comm,
        ppid: s(1)?,
        pgid: s(2)?,
        minflt: u(7)?,
        majflt: u(9)?,
        utime: u(11)?,
        stime: u(12)?,
        cutime: nonneg(13)?,
        cstime: nonneg(14)?,
        priority: s(15)?,
        nice: s(16)?,
        num_threads: u(17)?,
        starttime: u(19)?,
        vsize: u(20)?,
        rss_pages: nonneg(21)?,
        processor: s(36),
        guest_time: u(40),
    })
}

const IO_KEYS: [&str; 7] = [
    "rchar",
    "wchar",
    "syscr",
    "syscw",
    "read_bytes",
    "write_bytes",
    "cancelled_write_bytes",
];

const SMAPS_KEYS: [&str; 8] = [
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Referenced",
    "LazyFree",
    "Swap",
    "SwapPss",
];

/// Values of `key: value` lines for the given keys, in key order.
fn keyed<const N: usize>(text: &str, keys: &[&str; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if let Some(i) = keys.iter().position(|key| *key == k.trim()) {
            out[i] = v
                .split_ascii_whitespace()
                .next()
                .and_then(|n| n.parse().ok());
        }
    }
    out
}

/// The soft "Max open files" limit of `/proc/<pid>/limits` (`None` if unlimited).
pub fn parse_fd_limit(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// The container of a `/proc/<pid>/cgroup` text as upstream labels it: the 12-character short
/// id (the daemon's container labels use the same parser, `container_info::cgroup`, and the same
/// short form).
pub fn parse_container_id(cgroup: &str) -> Option<String> {
    let r = container_info::cgroup::parse(cgroup)?;
    let short =
        r.id.get(..container_info::info::SHORT_ID_LEN)
            .unwrap_or(&r.id);
    Some(short.to_string())
}

/// `cmdline` as a label: NUL-separated arguments joined by spaces, cut at [`CMDLINE_MAX`].
pub fn cmdline_label(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut s: String = text
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if s.len() > CMDLINE_MAX {
        let mut cut = CMDLINE_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// One reading of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// pid.
    pub pid: u32,
    /// `stat` fields.
    pub stat: PidStat,
    /// `io` values (absent when not permitted).
    pub io: [Option<u64>; 7],
    /// Open descriptors.
    pub fd_count: Option<u64>,
    /// Soft open-files limit.
    pub fd_limit: Option<u64>,
    /// `smaps_rollup` values in kB.
    pub smaps: [Option<u64>; 8],
    /// Command line label.
    pub cmdline: String,
    /// Container ID label.
    pub container_id: String,
}

/// Why a process has no sample this cycle.
#[derive(Debug)]
enum Skip {
    /// It exited while being read.
    Vanished,
    /// Its stat file could not be read or parsed (already counted as a read error).
    Unreadable,
}

/// Short name for the common case.
use Skip::Vanished;

fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Reads one `/proc/<pid>/` file: `Ok(None)` if it is missing on this kernel (silently) or
/// unreadable for another reason (counted); `Err` if the process itself is gone.
fn read_pid_file<'a>(r: &'a mut Reader, path: &Path) -> Result<Option<&'a str>, Skip> {
    match read_into(path, &mut r.buf) {
        Ok(()) => Ok(Some(&r.buf)),
        Err(e) => classify(r, path, &e).map(|()| None),
    }
}

/// Sorts a failed read of a `/proc/<pid>/` entry: the process exited (`Err`), the kernel does
/// not have the file (`Ok`, silent), or anything else (`Ok`, counted).
fn classify(r: &mut Reader, path: &Path, e: &io::Error) -> Result<(), Skip> {
    if gone(e) {
        // Old kernels lack some files (smaps_rollup before 4.14): only a vanished pid directory
        // means the process is gone.
        match path.parent() {
            Some(dir) if dir.exists() => Ok(()),
            _ => Err(Vanished),
        }
    } else {
        r.errors.failed(path, e);
        Ok(())
    }
}

fn read_one(paths: &HostPaths, r: &mut Reader, pid: u32) -> Result<ProcSample, Skip> {
    let dir = paths.proc(&pid.to_string());
    let stat_path = dir.join("stat");
    let stat = match read_into(&stat_path, &mut r.buf) {
        Ok(()) => match parse_pid_stat(&r.buf) {
            Some(s) => s,
            None => {
                r.errors.failed(&stat_path, &"unexpected format");
                return Err(Skip::Unreadable);
            }
        },
        // Every process has a stat file: failing to read it means the process is gone.
        Err(e) if gone(&e) => return Err(Vanished),
        Err(e) => {
            r.errors.failed(&stat_path, &e);
            return Err(Skip::Unreadable);
        }
    };
    let io = read_pid_file(r, &dir.join("io"))?
        .map(|t| keyed(t, &IO_KEYS))
        .unwrap_or_default();
    let fd_limit = read_pid_file(r, &dir.join("limits"))?.and_then(parse_fd_limit);
    let smaps = read_pid_file(r, &dir.join("smaps_rollup"))?
        .map(|t| keyed(t, &SMAPS_KEYS))
        .unwrap_or_default();
    let container_id = read_pid_file(r, &dir.join("cgroup"))?
        .and_then(parse_container_id)
        .unwrap_or_default();
    let cmdline = match read_bytes_into(&dir.join("cmdline"), &mut r.bytes) {
        Ok(()) => cmdline_label(&r.bytes),
        Err(e) => {
            classify(r, &dir.join("cmdline"), &e)?;
            String::new()
        }
    };
    let fd_count = match std::fs::read_dir(dir.join("fd")) {
        Ok(d) => Some(d.count() as u64),
        Err(e) => {
            classify(r, &dir.join("fd"), &e)?;
            None
        }
    };
    Ok(ProcSample {
        pid,
        stat,
        io,
        fd_count,
        fd_limit,
        smaps,
        cmdline,
        container_id,
    })
}

/// Reads the given processes; vanished ones are counted and left out.
pub fn sample(paths: &HostPaths, r: &mut Reader, pids: &[u32]) -> HashMap<u32, ProcSample> {
    let mut out = HashMap::with_capacity(pids.len());
    for &pid in pids {
        match read_one(paths, r, pid) {
            Ok(s) => {
                out.insert(pid, s);
            }
            Err(Skip::Vanished) => r.errors.vanished(),
            Err(Skip::Unreadable) => {}
        }
    }
    out
}

/// Writes `system_proc` for every process read in both samples (same pid and start time),
/// in pid order.
pub fn write<W: Write>(
    prev: &HashMap<u32, ProcSample>,
    cur: &HashMap<u32, ProcSample>,
    secs: f64,
    ticks_per_sec: u64,
    mem_total_kb: Option<u64>,
    out: &mut RecordWriter<W>,
) -> io::Result<()> {
    let mut pids: Vec<u32> = cur.keys().copied().collect();
    pids.sort_unstable();
    let one_cpu_ticks = secs * ticks_per_sec as f64;
    for pid in pids {
        let c = &cur[&pid];
        let Some(p) = prev
            .get(&pid)
            .filter(|p| p.stat.starttime == c.stat.starttime)
        else {
            continue;
        };
        let (ps, cs) = (&p.stat, &c.stat);
        let io: [Option<u64>; 7] = std::array::from_fn(|i| Some(delta(p.io[i]?, c.io[i]?)));
        let fd_free_per = c
            .fd_limit
            .zip(c.fd_count)
            .map(|(limit, n)| Fixed2(percent(limit.saturating_sub(n) as f64, limit as f64)));
        let utime = delta(ps.utime, cs.utime);
        let stime = delta(ps.stime, cs.stime);
        let user_ticks = delta(
            ps.utime.saturating_sub(ps.guest_time.unwrap_or(0)),
            cs.utime.saturating_sub(cs.guest_time.unwrap_or(0)),
        );
        let pct_of_cpu = |ticks: u64| Fixed2(percent(ticks as f64, one_cpu_ticks));
        let rss_bytes = cs.rss_pages * page_size();
        let pm_util = mem_total_kb.map(|kb| Fixed2(percent(rss_bytes as f64, (kb * 1024) as f64)));
        let mut rec = out
            .record(schema::SYSTEM_PROC.name)
            .field(&pid)
            .field(&cs.pgid)
            .field(&cs.ppid)
            .field(cs.comm.as_str())
            .field(c.cmdline.as_str())
            .field(c.container_id.as_str())
            .field(&c.fd_count)
            .field(&fd_free_per);
        for v in &io {
            rec = rec.field(v);
        }
        for v in &c.smaps {
            rec = rec.field(v);
        }
        rec.field(&delta(ps.minflt, cs.minflt))
            .field(&delta(ps.majflt, cs.majflt))
            .field(&utime)
            .field(&stime)
            .field(&delta(ps.cutime, cs.cutime))
            .field(&delta(ps.cstime, cs.cstime))
            .field(&cs.priority)
            .field(&cs.nice)
            .field(&cs.num_threads)
            .field(&cs.vsize)
            .field(&rss_bytes)
            .field(&pm_util)
            .field(&cs.processor)
            .field(&pct_of_cpu(utime + stime))
            .field(&pct_of_cpu(user_ticks))
            .field(&pct_of_cpu(stime))
            .end()?;
    }
    Ok(())
}

/// The system page size (the unit of `rss` in `/proc/<pid>/stat`).
fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_comm() {
        let text = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 3 0 7 8 -1 0 20 0 2 0 12345 1000 25 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 5 0 0\n";
        let s = parse_pid_stat(text).unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!((s.ppid, s.pgid, s.minflt, s.majflt), (1, 42, 100, 3));
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (7, 8, 0, 0));
        assert_eq!(
            (s.priority, s.nice, s.num_threads, s.starttime),
            (20, 0, 2, 12345)
        );
        assert_eq!(
            (s.vsize, s.rss_pages, s.processor, s.guest_time),
            (1000, 25, Some(1), Some(5))
        );
        assert!(parse_pid_stat("42 (x) S 1").is_none());
    }

    #[test]
    fn limits_container_and_cmdline() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_fd_limit(limits), Some(1024));
        assert_eq!(
            parse_fd_limit("Max open files  unlimited unlimited files\n"),
            None
        );
        let id = "a".repeat(64);
        assert_eq!(
            parse_container_id(&format!("0::/system.slice/docker-{id}.scope\n")),
            Some("a".repeat(12))
        );
        assert_eq!(
            parse_container_id(&format!(
                "12:cpu:/kubepods/burstable/pod0f1e2d3c-0000-1111-2222-333344445555/{id}\n"
            )),
            Some("a".repeat(12))
        );
        assert_eq!(parse_container_id("0::/user.slice\n"), None);
        assert_eq!(cmdline_label(b"sleep\x00100\x00"), "sleep 100");
        assert_eq!(cmdline_label(&[b'x'; 300]).len(), CMDLINE_MAX);
    }
}
