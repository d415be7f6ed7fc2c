//! Parsers of the cgroup interface files the probe reads, v1 and v2 (pure: text in, values out).

use std::collections::BTreeMap;

/// A v1 limit at or above this is "no limit": the kernel shows an unlimited `memory.limit_in_bytes`
/// as `PAGE_COUNTER_MAX` pages (9223372036854771712 with 4 KiB pages, less with larger pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// A file holding one unsigned number (`memory.current`, `cpuacct.usage`, `pids.current`).
pub fn single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A limit file (`memory.max`, `memory.limit_in_bytes`, `pids.max`): `max` or a v1 value too
/// large to be a real limit is 0 (unlimited).
pub fn limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return Some(0);
    }
    let v: u64 = t.parse().ok()?;
    Some(if v >= V1_UNLIMITED { 0 } else { v })
}

/// The value of `key` in a flat keyed file (`key value` lines: `cpu.stat`, `memory.stat`,
/// `memory.events`, `memory.oom_control`, `cpuacct.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_ascii_whitespace();
        (words.next() == Some(key))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// `some` and `full` stall totals of a pressure file (`memory.pressure`), in seconds:
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=<µs>`.
pub fn pressure_totals(text: &str) -> (Option<f64>, Option<f64>) {
    let total = |kind: &str| {
        text.lines().find_map(|line| {
            let mut words = line.split_ascii_whitespace();
            if words.next() != Some(kind) {
                return None;
            }
            words
                .find_map(|w| w.strip_prefix("total="))
                .and_then(|v| v.parse::<u64>().ok())
                .map(|us| us as f64 / 1e6)
        })
    };
    (total("some"), total("full"))
}

/// A block device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevNum {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl DevNum {
    /// `8:0` → 8, 0.
    pub fn parse(s: &str) -> Option<DevNum> {
        let (major, minor) = s.split_once(':')?;
        Some(DevNum {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// Bytes and requests of one device, as both cgroup versions count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DevIo {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
}

/// v2 `io.stat`: `8:0 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0`, one
/// line per device. Lines that are not of this shape are skipped.
pub fn io_stat(text: &str) -> Vec<(DevNum, DevIo)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(dev) = words.next().and_then(DevNum::parse) else {
            continue;
        };
        let mut io = DevIo::default();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            match k {
                "rbytes" => io.read_bytes = v,
                "wbytes" => io.write_bytes = v,
                "rios" => io.reads = v,
                "wios" => io.writes = v,
                _ => {}
            }
        }
        out.push((dev, io));
    }
    out
}

/// v1 `blkio.throttle.io_service_bytes` / `io_serviced` (and their `_recursive` forms):
/// `8:0 Read 4096` … `8:0 Total 8192`, then `Total 8192`. The `Read` and `Write` values per
/// device, ordered by device number.
pub fn blkio_read_write(text: &str) -> Vec<(DevNum, u64, u64)> {
    let mut devs: BTreeMap<DevNum, (u64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let (Some(dev), Some(op), Some(v)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let (Some(dev), Ok(v)) = (DevNum::parse(dev), v.parse::<u64>()) else {
            continue;
        };
        let slot = devs.entry(dev).or_default();
        match op {
            "Read" => slot.0 = v,
            "Write" => slot.1 = v,
            _ => {}
        }
    }
    devs.into_iter().map(|(d, (r, w))| (d, r, w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_values_and_limits() {
        assert_eq!(single("4096\n"), Some(4096));
        assert_eq!(single("max\n"), None);
        assert_eq!(limit("max\n"), Some(0));
        assert_eq!(limit("50\n"), Some(50));
        assert_eq!(limit("9223372036854771712\n"), Some(0));
        // 64 KiB pages (arm64, ppc64): PAGE_COUNTER_MAX pages is a different huge number.
        assert_eq!(limit("9223372036854710272\n"), Some(0));
        assert_eq!(limit("536870912\n"), Some(536_870_912));
        assert_eq!(limit(""), None);
    }

    /// cgroup v2 `cpu.stat` with the cpu controller enabled (pure v2 host).
    const V2_CPU_STAT: &str = "usage_usec 2500000\nuser_usec 1500000\nsystem_usec 1000000\n\
        core_sched.force_idle_usec 0\nnr_periods 40\nnr_throttled 7\nthrottled_usec 350000\n\
        nr_bursts 0\nburst_usec 0\n";
    /// cgroup v1 `cpu.stat` of the cpu controller.
    const V1_CPU_STAT: &str = "nr_periods 12\nnr_throttled 3\nthrottled_time 45000000\n\
        nr_bursts 0\nburst_time 0\n";

    #[test]
    fn keyed_files_of_both_versions() {
        assert_eq!(keyed(V2_CPU_STAT, "usage_usec"), Some(2_500_000));
        assert_eq!(keyed(V2_CPU_STAT, "nr_throttled"), Some(7));
        // A key is the whole first word, not a prefix.
        assert_eq!(keyed(V2_CPU_STAT, "nr_"), None);
        assert_eq!(keyed(V1_CPU_STAT, "throttled_time"), Some(45_000_000));
        assert_eq!(keyed(V1_CPU_STAT, "throttled_usec"), None);
        let cpuacct_stat = "user 150\nsystem 25\n";
        assert_eq!(keyed(cpuacct_stat, "system"), Some(25));
        let events = "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(events, "oom"), Some(2));
        assert_eq!(keyed(events, "oom_kill"), Some(1));
        assert_eq!(keyed(events, "max"), Some(4));
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(oom_control, "oom_kill"), Some(3));
        assert_eq!(keyed(oom_control, "under_oom"), Some(0));
    }

    #[test]
    fn pressure_totals_in_seconds() {
        let text = "some avg10=0.00 avg60=0.12 avg300=0.05 total=1234567\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=89\n";
        assert_eq!(pressure_totals(text), (Some(1.234567), Some(0.000089)));
        assert_eq!(pressure_totals(""), (None, None));
        // Older kernels: no full line for cpu.pressure-like files.
        assert_eq!(
            pressure_totals("some avg10=0.00 avg60=0.00 avg300=0.00 total=5000000\n"),
            (Some(5.0), None)
        );
    }

    #[test]
    fn io_stat_v2() {
        let text = "8:0 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n\
                    254:16 rbytes=0 wbytes=4096 rios=0 wios=1\n\
                    garbage line\n";
        assert_eq!(
            io_stat(text),
            vec![
                (
                    DevNum { major: 8, minor: 0 },
                    DevIo {
                        read_bytes: 1_459_200,
                        write_bytes: 314_773_504,
                        reads: 192,
                        writes: 353
                    }
                ),
                (
                    DevNum {
                        major: 254,
                        minor: 16
                    },
                    DevIo {
                        read_bytes: 0,
                        write_bytes: 4096,
                        reads: 0,
                        writes: 1
                    }
                ),
            ]
        );
    }

    #[test]
    fn blkio_throttle_v1() {
        let text = "254:0 Read 0\n254:0 Write 8388608\n254:0 Sync 16777216\n254:0 Async 0\n\
                    254:0 Discard 8388608\n254:0 Total 16777216\n8:16 Read 512\n8:16 Write 0\n\
                    8:16 Total 512\nTotal 16777728\n";
        assert_eq!(
            blkio_read_write(text),
            vec![
                (
                    DevNum {
                        major: 8,
                        minor: 16
                    },
                    512,
                    0
                ),
                (
                    DevNum {
                        major: 254,
                        minor: 0
                    },
                    0,
                    8_388_608
                ),
            ]
        );
        assert_eq!(blkio_read_write("Total 0\n"), vec![]);
        assert_eq!(DevNum::parse("8:16").unwrap().to_string(), "8:16");
        assert_eq!(DevNum::parse("8"), None);
    }
}
