//! `system_meminfo` (`/proc/meminfo`) and `system_dentry` (`/proc/sys/fs/dentry-state`).
//! Both are levels, not counters, so they need no previous sample.

use crate::events::Events;
use crate::schema;
use crate::source::{HostPaths, Reader};
use crate::value::{percent, Fixed2};
use probe_sdk::record::RecordWriter;
use std::io::{self, Write};

/// The `/proc/meminfo` keys read, in the order their values are stored.
const KEYS: [&str; 31] = [
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "Active",
    "Inactive",
    "SwapTotal",
    "SwapFree",
    "Slab",
    "SReclaimable",
    "SUnreclaim",
    "PageTables",
    "VmallocUsed",
    "KernelStack",
    "Active(anon)",
    "Inactive(anon)",
    "Active(file)",
    "Inactive(file)",
    "Mlocked",
    "HugePages_Total",
    "Hugepagesize",
    "Shmem",
    "SwapCached",
    "Dirty",
    "Writeback",
    "AnonPages",
    "Mapped",
    "CommitLimit",
    "Committed_AS",
    "HugePages_Free",
];

/// Index of a key in [`KEYS`] (a compile-time check that the name is listed).
const fn idx(name: &str) -> usize {
    let mut i = 0;
    while i < KEYS.len() {
        if const_eq(KEYS[i], name) {
            return i;
        }
        i += 1;
    }
    panic!("key not in KEYS")
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `/proc/meminfo` values (kB, or pages for `HugePages_*`); `None` where the kernel lacks a line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemInfo {
    values: [Option<u64>; KEYS.len()],
}

impl MemInfo {
    /// The value of one `/proc/meminfo` key.
    pub fn get(&self, key: &str) -> Option<u64> {
        KEYS.iter()
            .position(|k| *k == key)
            .and_then(|i| self.values[i])
    }

    fn at(&self, i: usize) -> Option<u64> {
        self.values[i]
    }

    /// MemTotal in kB.
    pub fn total_kb(&self) -> Option<u64> {
        self.at(idx("MemTotal"))
    }
}

/// Parses `/proc/meminfo` (`Key:   value kB` lines).
pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut m = MemInfo::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let Some(i) = KEYS.iter().position(|key| *key == k) else {
            continue;
        };
        m.values[i] = v
            .split_ascii_whitespace()
            .next()
            .and_then(|n| n.parse().ok());
    }
    m
}

/// Reads `/proc/meminfo`.
pub fn sample(paths: &HostPaths, r: &mut Reader) -> Option<MemInfo> {
    r.read(&paths.proc("meminfo")).map(parse_meminfo)
}

/// Writes the `system_meminfo` record and checks the memory and swap thresholds.
pub fn write<W: Write>(
    m: &MemInfo,
    out: &mut RecordWriter<W>,
    events: &mut Events,
) -> io::Result<()> {
    let v = |k: &str| m.at(idx(k));
    let total = v("MemTotal");
    // Upstream's formula, kept so dashboards see the same number: buffers and page cache count
    // as free.
    let used = total.map(|t| {
        t.saturating_sub(v("MemFree").unwrap_or(0))
            .saturating_sub(v("Buffers").unwrap_or(0))
            .saturating_sub(v("Cached").unwrap_or(0))
    });
    let util = percent(used.unwrap_or(0) as f64, total.unwrap_or(0) as f64);
    let (swap_total, swap_free) = (v("SwapTotal"), v("SwapFree"));
    let swap_util = percent(
        swap_total
            .unwrap_or(0)
            .saturating_sub(swap_free.unwrap_or(0)) as f64,
        swap_total.unwrap_or(0) as f64,
    );
    let huge_kb = v("HugePages_Total")
        .zip(v("Hugepagesize"))
        .map(|(n, sz)| n * sz);

    events.check_pct("mem", "/proc/meminfo", "util", util, |p| {
        format!("Too high mem utilization({p:.2}%).")
    });
    events.check_pct("mem", "/proc/meminfo", "swap_util", swap_util, |p| {
        format!("Too high swap utilization({p:.2}%).")
    });

    out.record(schema::SYSTEM_MEMINFO.name)
        .field("/proc/meminfo")
        .field(&total)
        .field(&v("MemFree"))
        .field(&v("MemAvailable"))
        .field(&Fixed2(util))
        .field(&v("Buffers"))
        .field(&v("Cached"))
        .field(&v("Active"))
        .field(&v("Inactive"))
        .field(&swap_total)
        .field(&swap_free)
        .field(&Fixed2(swap_util))
        .field(&v("Slab"))
        .field(&v("SReclaimable"))
        .field(&v("SUnreclaim"))
        .field(&v("PageTables"))
        .field(&v("VmallocUsed"))
        .field(&v("KernelStack"))
        .field(&v("Active(anon)"))
        .field(&v("Inactive(anon)"))
        .field(&v("Active(file)"))
        .field(&v("Inactive(file)"))
        .field(&v("Mlocked"))
        .field(&huge_kb)
        .field(&v("Shmem"))
        .field(&v("SwapCached"))
        .field(&v("Dirty"))
        .field(&v("Writeback"))
        .field(&v("AnonPages"))
        .field(&v("Mapped"))
        .field(&v("CommitLimit"))
        .field(&v("Committed_AS"))
        .end()
}

/// `/proc/sys/fs/dentry-state`: nr_dentry, nr_unused, age_limit (first three columns).
pub fn parse_dentry_state(text: &str) -> Option<[u64; 3]> {
    let mut cols = text.split_ascii_whitespace().map(|c| c.parse::<u64>().ok());
    Some([cols.next()??, cols.next()??, cols.next()??])
}

/// Reads and writes `system_dentry`.
pub fn write_dentry<W: Write>(
    paths: &HostPaths,
    r: &mut Reader,
    out: &mut RecordWriter<W>,
) -> io::Result<()> {
    let path = paths.proc("sys/fs/dentry-state");
    let Some(text) = r.read_optional(&path) else {
        return Ok(());
    };
    let Some([dentry, unused, age]) = parse_dentry_state(text) else {
        r.errors.failed(&path, &"unexpected format");
        return Ok(());
    };
    out.record(schema::SYSTEM_DENTRY.name)
        .field("fs.dentry-state")
        .field(&dentry)
        .field(&unused)
        .field(&age)
        .end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_keys_with_parentheses_and_missing_lines() {
        let m =
            parse_meminfo("MemTotal:  100 kB\nActive(anon):   7 kB\nHugePages_Total:  2\nbogus\n");
        assert_eq!(m.total_kb(), Some(100));
        assert_eq!(m.get("Active(anon)"), Some(7));
        assert_eq!(m.get("HugePages_Total"), Some(2));
        assert_eq!(m.get("MemAvailable"), None);
    }

    #[test]
    fn dentry_state_needs_three_numbers() {
        assert_eq!(
            parse_dentry_state("57424\t56052\t45\t0\t10737\t0\n"),
            Some([57424, 56052, 45])
        );
        assert_eq!(parse_dentry_state("1 2\n"), None);
    }
}
