//! `system_iostat`: `/proc/diskstats` turned into `iostat -x` figures.
//!
//! Only whole disks are reported (names listed in `/sys/block`, as iostat does without `-p`),
//! and only disks that have done I/O since boot (so the 8 idle loop devices stay out). A disk is
//! matched by name between samples: one that appears is primed for a period, one that
//! disappears has no row.

use crate::events::Events;
use crate::schema;
use crate::source::{HostPaths, Reader};
use crate::value::{average, delta, per_sec, percent, Fixed2};
use probe_sdk::record::RecordWriter;
use std::collections::HashSet;
use std::io::{self, Write};

/// Cumulative counters of one `/proc/diskstats` line (sectors are 512 bytes, times in ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounters {
    /// reads completed, reads merged, sectors read, ms reading
    pub rd: [u64; 4],
    /// writes completed, writes merged, sectors written, ms writing
    pub wr: [u64; 4],
    /// ms with I/O in flight (`io_ticks`)
    pub io_ticks: u64,
    /// weighted ms with I/O in flight (`time_in_queue`)
    pub queue_ticks: u64,
    /// discards completed, merged, sectors, ms (kernel 4.18+)
    pub dc: Option<[u64; 4]>,
    /// flushes completed, ms flushing (kernel 5.5+)
    pub fl: Option<[u64; 2]>,
}

impl DiskCounters {
    fn is_idle_since_boot(&self) -> bool {
        self.rd[0] == 0 && self.wr[0] == 0 && self.dc.is_none_or(|d| d[0] == 0)
    }
}

/// One disk in one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Device name.
    pub name: String,
    /// Counters.
    pub c: DiskCounters,
}

/// Parses `/proc/diskstats`; lines with fewer than the 11 classic counters are skipped.
pub fn parse_diskstats(text: &str) -> Vec<Disk> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut cols = line.split_ascii_whitespace().skip(2);
        let Some(name) = cols.next() else { continue };
        let nums: Vec<u64> = cols.map_while(|c| c.parse().ok()).collect();
        if nums.len() < 11 {
            continue;
        }
        let quad = |i: usize| [nums[i], nums[i + 1], nums[i + 2], nums[i + 3]];
        out.push(Disk {
            name: name.to_string(),
            c: DiskCounters {
                rd: quad(0),
                wr: quad(4),
                io_ticks: nums[9],
                queue_ticks: nums[10],
                dc: (nums.len() >= 15).then(|| quad(11)),
                fl: (nums.len() >= 17).then(|| [nums[15], nums[16]]),
            },
        });
    }
    out
}

/// Reads `/proc/diskstats`, keeping whole disks (in `/sys/block`) that did I/O since boot,
/// sorted by name. Without a readable `/sys/block` every line is kept.
pub fn sample(paths: &HostPaths, r: &mut Reader) -> Vec<Disk> {
    let whole: Option<HashSet<String>> = std::fs::read_dir(paths.sys("block")).ok().map(|d| {
        d.filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    });
    let Some(text) = r.read(&paths.proc("diskstats")) else {
        return Vec::new();
    };
    let mut disks: Vec<Disk> = parse_diskstats(text)
        .into_iter()
        // /sys/block spells '/' in names (cciss/c0d0) as '!'.
        .filter(|d| {
            whole
                .as_ref()
                .is_none_or(|w| w.contains(&d.name.replace('/', "!")))
        })
        .filter(|d| !d.c.is_idle_since_boot())
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

/// iostat's figures for one disk over `secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct IoStat {
    /// r/s, rkB/s, r_await, rareq-sz, rrqm/s
    pub r: [f64; 5],
    /// w/s, wkB/s, w_await, wareq-sz, wrqm/s
    pub w: [f64; 5],
    /// d/s, dkB/s, d_await (absent on kernels without discard stats)
    pub d: Option<[f64; 3]>,
    /// f/s, f_await (absent on kernels without flush stats)
    pub f: Option<[f64; 2]>,
    /// aqu-sz
    pub aqu: f64,
    /// %util
    pub util: f64,
}

/// Computes iostat's figures the way sysstat does (interval from uptime, sectors / 2 = kB).
pub fn iostat(p: &DiskCounters, c: &DiskCounters, secs: f64) -> IoStat {
    let dir = |p: &[u64; 4], c: &[u64; 4]| {
        let ios = delta(p[0], c[0]) as f64;
        let sectors = delta(p[2], c[2]) as f64;
        [
            per_sec(ios, secs),
            per_sec(sectors, secs) / 2.0,
            average(delta(p[3], c[3]) as f64, ios),
            average(sectors, ios) / 2.0,
            per_sec(delta(p[1], c[1]) as f64, secs),
        ]
    };
    let d = p.dc.zip(c.dc).map(|(p, c)| {
        let [ops, kb, wait, _, _] = dir(&p, &c);
        [ops, kb, wait]
    });
    let f = p.fl.zip(c.fl).map(|(p, c)| {
        let ios = delta(p[0], c[0]) as f64;
        [per_sec(ios, secs), average(delta(p[1], c[1]) as f64, ios)]
    });
    IoStat {
        r: dir(&p.rd, &c.rd),
        w: dir(&p.wr, &c.wr),
        d,
        f,
        aqu: per_sec(delta(p.queue_ticks, c.queue_ticks) as f64, secs) / 1000.0,
        util: percent(delta(p.io_ticks, c.io_ticks) as f64, secs * 1000.0).min(100.0),
    }
}

/// Writes `system_iostat` for every disk present in both samples.
pub fn write<W: Write>(
    prev: &[Disk],
    cur: &[Disk],
    secs: f64,
    out: &mut RecordWriter<W>,
    events: &mut Events,
) -> io::Result<()> {
    for c in cur {
        let Ok(pi) = prev.binary_search_by(|p| p.name.as_str().cmp(&c.name)) else {
            continue;
        };
        let s = iostat(&prev[pi].c, &c.c, secs);
        events.check_pct("disk", &c.name, "util", s.util, |p| {
            format!("Disk device saturated({p:.2}%).")
        });
        let f2 = |v: f64| Fixed2(v);
        out.record(schema::SYSTEM_IOSTAT.name)
            .field(c.name.as_str())
            .field(&f2(s.r[0]))
            .field(&f2(s.r[1]))
            .field(&f2(s.r[2]))
            .field(&f2(s.r[3]))
            .field(&f2(s.w[0]))
            .field(&f2(s.w[1]))
            .field(&f2(s.w[2]))
            .field(&f2(s.w[3]))
            .field(&f2(s.aqu))
            .field(&f2(s.util))
            .field(&f2(s.r[4]))
            .field(&f2(s.w[4]))
            .field(&s.d.map(|d| f2(d[0])))
            .field(&s.d.map(|d| f2(d[1])))
            .field(&s.d.map(|d| f2(d[2])))
            .field(&s.f.map(|f| f2(f[0])))
            .field(&s.f.map(|f| f2(f[1])))
            .end()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diskstats_field_generations() {
        let text = "   8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n\
                    254 0 vda 37144 6832 3725330 28936 8988 20933 3103920 20504 0 9256 51900 5499 64 280848 1443 1029 1014\n\
                    7 0 loop0 0 0 0\n";
        let d = parse_diskstats(text);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].c.dc, None);
        assert_eq!(d[0].c.io_ticks, 10);
        assert_eq!(d[1].c.dc, Some([5499, 64, 280848, 1443]));
        assert_eq!(d[1].c.fl, Some([1029, 1014]));
    }

    #[test]
    fn iostat_arithmetic() {
        let p = DiskCounters::default();
        let c = DiskCounters {
            rd: [10, 2, 80, 50],
            wr: [0, 0, 0, 0],
            io_ticks: 500,
            queue_ticks: 2000,
            dc: None,
            fl: None,
        };
        let s = iostat(&p, &c, 2.0);
        assert_eq!(s.r, [5.0, 20.0, 5.0, 4.0, 1.0]);
        assert_eq!(s.w, [0.0; 5]);
        assert_eq!(s.aqu, 1.0);
        assert_eq!(s.util, 25.0);
    }
}
