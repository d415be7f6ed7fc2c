//! `system_cpu` and `system_cpu_util`: `/proc/stat`, `/proc/softirqs`, `/proc/net/softnet_stat`
//! and the CPU clock (cpufreq in sysfs, else `/proc/cpuinfo`).
//!
//! CPUs are matched by number between two samples, so a CPU going offline simply has no row
//! (and a CPU coming back is primed for one period); counters that go backwards give 0.

use crate::events::Events;
use crate::schema;
use crate::source::{HostPaths, Reader};
use crate::value::{delta, delta_opt, percent, Fixed2, Fixed3};
use probe_sdk::record::RecordWriter;
use std::io::{self, Write};

/// `/proc/stat` columns used: user nice system idle iowait irq softirq steal.
const TIME_COLS: usize = 8;
const IDLE: usize = 3;
const IOWAIT: usize = 4;

/// Cumulative CPU times of one `/proc/stat` line, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    ticks: [u64; TIME_COLS],
    /// How many leading columns the kernel printed (old kernels lack steal).
    present: usize,
}

impl CpuTimes {
    /// Parses the numbers after the `cpu`/`cpuN` label.
    fn parse<'a>(cols: impl Iterator<Item = &'a str>) -> Option<CpuTimes> {
        let mut t = CpuTimes::default();
        for (i, c) in cols.take(TIME_COLS).enumerate() {
            t.ticks[i] = c.parse().ok()?;
            t.present = i + 1;
        }
        (t.present > IDLE).then_some(t)
    }

    fn get(&self, col: usize) -> Option<u64> {
        (col < self.present).then(|| self.ticks[col])
    }

    fn total(&self) -> u64 {
        self.ticks[..self.present].iter().sum()
    }

    fn idle(&self) -> u64 {
        self.ticks[IDLE] + self.get(IOWAIT).unwrap_or(0)
    }
}

/// Busy percentage between two samples: (Δtotal − Δidle − Δiowait) / Δtotal.
fn util(prev: &CpuTimes, cur: &CpuTimes) -> f64 {
    let total = delta(prev.total(), cur.total());
    let idle = delta(prev.idle(), cur.idle());
    percent(total.saturating_sub(idle) as f64, total as f64)
}

/// Softirq counts of one CPU (the four kinds upstream reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Softirqs {
    /// RCU
    pub rcu: u64,
    /// TIMER
    pub timer: u64,
    /// SCHED
    pub sched: u64,
    /// NET_RX
    pub net_rx: u64,
}

/// `/proc/net/softnet_stat` counters of one CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Softnet {
    /// Packets dropped because the backlog was full (column 2).
    pub dropped: u64,
    /// RPS inter-processor interrupts received (column 10).
    pub rps: u64,
}

/// Everything known about one online CPU in one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerCpu {
    /// CPU number.
    pub id: u32,
    /// `/proc/stat` times.
    pub times: CpuTimes,
    /// Softirq counts, if the CPU has a `/proc/softirqs` column.
    pub softirqs: Option<Softirqs>,
    /// softnet counters, if the CPU has a row.
    pub softnet: Option<Softnet>,
    /// Current clock in MHz.
    pub mhz: Option<f64>,
}

/// One reading of the CPU files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuSample {
    /// The all-CPU `cpu` line.
    pub total: Option<CpuTimes>,
    /// Online CPUs, sorted by number.
    pub cpus: Vec<PerCpu>,
}

/// `/proc/stat`: the `cpu` line and the `cpuN` lines (online CPUs only), sorted by number.
pub fn parse_stat(text: &str) -> (Option<CpuTimes>, Vec<(u32, CpuTimes)>) {
    let mut total = None;
    let mut cpus = Vec::new();
    for line in text.lines() {
        let mut cols = line.split_ascii_whitespace();
        let Some(label) = cols.next() else { continue };
        let Some(num) = label.strip_prefix("cpu") else {
            continue;
        };
        let Some(times) = CpuTimes::parse(cols) else {
            continue;
        };
        if num.is_empty() {
            total = Some(times);
        } else if let Ok(id) = num.parse::<u32>() {
            cpus.push((id, times));
        }
    }
    cpus.sort_by_key(|(id, _)| *id);
    (total, cpus)
}

/// `/proc/softirqs`: per CPU number (from the `CPUn` header) the four counts.
pub fn parse_softirqs(text: &str) -> Vec<(u32, Softirqs)> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let ids: Vec<Option<u32>> = header
        .split_ascii_whitespace()
        .map(|h| h.strip_prefix("CPU").and_then(|n| n.parse().ok()))
        .collect();
    // Indexed by header column, like the value columns below it.
    let mut counts = vec![Softirqs::default(); ids.len()];
    for line in lines {
        let mut cols = line.split_ascii_whitespace();
        let slot: fn(&mut Softirqs) -> &mut u64 = match cols.next() {
            Some("RCU:") => |s| &mut s.rcu,
            Some("TIMER:") => |s| &mut s.timer,
            Some("SCHED:") => |s| &mut s.sched,
            Some("NET_RX:") => |s| &mut s.net_rx,
            _ => continue,
        };
        for (entry, value) in counts.iter_mut().zip(cols) {
            *slot(entry) = value.parse().unwrap_or(0);
        }
    }
    let mut out: Vec<(u32, Softirqs)> = ids
        .iter()
        .zip(counts)
        .filter_map(|(id, c)| id.map(|id| (id, c)))
        .collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

/// `/proc/net/softnet_stat`: one row per online CPU, hex columns. Kernels since 5.10 print the
/// CPU number in column 13; older ones list online CPUs in order, matched against `online`.
pub fn parse_softnet(text: &str, online: &[u32]) -> Vec<(u32, Softnet)> {
    let mut out = Vec::new();
    for (row, line) in text.lines().enumerate() {
        let cols: Vec<u64> = line
            .split_ascii_whitespace()
            .map(|c| u64::from_str_radix(c, 16).unwrap_or(0))
            .collect();
        if cols.len() < 2 {
            continue;
        }
        let id = match cols.get(12) {
            Some(&id) => u32::try_from(id).ok(),
            None => online.get(row).copied(),
        };
        let Some(id) = id else { continue };
        out.push((
            id,
            Softnet {
                dropped: cols[1],
                rps: cols.get(9).copied().unwrap_or(0),
            },
        ));
    }
    out.sort_by_key(|(id, _)| *id);
    out
}

/// `/proc/cpuinfo`: `cpu MHz` per `processor` number.
pub fn parse_cpuinfo_mhz(text: &str) -> Vec<(u32, f64)> {
    let mut out = Vec::new();
    let mut processor: Option<u32> = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim() {
            "processor" => processor = v.trim().parse().ok(),
            "cpu MHz" => {
                if let (Some(id), Ok(mhz)) = (processor, v.trim().parse::<f64>()) {
                    out.push((id, mhz));
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|(id, _)| *id);
    out
}

fn lookup<T: Copy>(sorted: &[(u32, T)], id: u32) -> Option<T> {
    sorted
        .binary_search_by_key(&id, |(i, _)| *i)
        .ok()
        .map(|i| sorted[i].1)
}

/// Reads the CPU files into a [`CpuSample`].
pub fn sample(paths: &HostPaths, r: &mut Reader) -> CpuSample {
    let Some(stat) = r.read(&paths.proc("stat")) else {
        return CpuSample::default();
    };
    let (total, stat_cpus) = parse_stat(stat);
    let online: Vec<u32> = stat_cpus.iter().map(|(id, _)| *id).collect();
    let softirqs = r
        .read(&paths.proc("softirqs"))
        .map(parse_softirqs)
        .unwrap_or_default();
    let softnet = r
        .read_optional(&paths.proc("net/softnet_stat"))
        .map(|t| parse_softnet(t, &online))
        .unwrap_or_default();
    let mhz = read_mhz(paths, r, &online);
    CpuSample {
        total,
        cpus: stat_cpus
            .into_iter()
            .map(|(id, times)| PerCpu {
                id,
                times,
                softirqs: lookup(&softirqs, id),
                softnet: lookup(&softnet, id),
                mhz: lookup(&mhz, id),
            })
            .collect(),
    }
}

/// Clock per CPU: sysfs cpufreq (kHz) when the CPU has it, else `/proc/cpuinfo`.
fn read_mhz(paths: &HostPaths, r: &mut Reader, online: &[u32]) -> Vec<(u32, f64)> {
    let mut out = Vec::with_capacity(online.len());
    let mut missing = false;
    for &id in online {
        let p = paths.sys(&format!(
            "devices/system/cpu/cpu{id}/cpufreq/scaling_cur_freq"
        ));
        match r
            .read_optional(&p)
            .and_then(|t| t.trim().parse::<f64>().ok())
        {
            Some(khz) => out.push((id, khz / 1000.0)),
            None => missing = true,
        }
    }
    if missing {
        if let Some(info) = r.read_optional(&paths.proc("cpuinfo")) {
            for (id, mhz) in parse_cpuinfo_mhz(info) {
                if lookup(&out, id).is_none() {
                    out.push((id, mhz));
                }
            }
            out.sort_by_key(|(id, _)| *id);
        }
    }
    out
}

const MS_PER_SEC: u64 = 1000;

/// Writes `system_cpu` (per CPU, then the all-CPU row) and `system_cpu_util`.
pub fn write<W: Write>(
    prev: &CpuSample,
    cur: &CpuSample,
    ticks_per_sec: u64,
    out: &mut RecordWriter<W>,
    events: &mut Events,
) -> io::Result<()> {
    let to_ms = |ticks: Option<u64>| ticks.map(|t| t * MS_PER_SEC / ticks_per_sec.max(1));
    let mut sum_irq = Softirqs::default();
    let mut sum_net = Softnet::default();
    for c in &cur.cpus {
        let Ok(pi) = prev.cpus.binary_search_by_key(&c.id, |p| p.id) else {
            continue;
        };
        let p = &prev.cpus[pi];
        let irq = p.softirqs.zip(c.softirqs).map(|(a, b)| Softirqs {
            rcu: delta(a.rcu, b.rcu),
            timer: delta(a.timer, b.timer),
            sched: delta(a.sched, b.sched),
            net_rx: delta(a.net_rx, b.net_rx),
        });
        let net = p.softnet.zip(c.softnet).map(|(a, b)| Softnet {
            dropped: delta(a.dropped, b.dropped),
            rps: delta(a.rps, b.rps),
        });
        if let Some(i) = irq {
            sum_irq.rcu += i.rcu;
            sum_irq.timer += i.timer;
            sum_irq.sched += i.sched;
            sum_irq.net_rx += i.net_rx;
        }
        if let Some(n) = net {
            sum_net.dropped += n.dropped;
            sum_net.rps += n.rps;
        }
        write_row(
            out,
            &c.id,
            &p.times,
            &c.times,
            irq,
            net,
            c.mhz.map(Fixed3),
            &to_ms,
        )?;
    }
    let (Some(pt), Some(ct)) = (prev.total, cur.total) else {
        return Ok(());
    };
    let irq = cur
        .cpus
        .iter()
        .any(|c| c.softirqs.is_some())
        .then_some(sum_irq);
    let net = cur
        .cpus
        .iter()
        .any(|c| c.softnet.is_some())
        .then_some(sum_net);
    write_row(out, "cpu", &pt, &ct, irq, net, None, &to_ms)?;

    let total_util = util(&pt, &ct);
    events.check_pct("cpu", "cpu", "total_used_per", total_util, |p| {
        format!("Too high cpu utilization({p:.2}%).")
    });
    out.record(schema::SYSTEM_CPU_UTIL.name)
        .field("cpu")
        .field(&Fixed2(total_util))
        .end()
}

#[allow(clippy::too_many_arguments)]
fn write_row<W: Write, K: probe_sdk::record::FieldValue + ?Sized>(
    out: &mut RecordWriter<W>,
    key: &K,
    p: &CpuTimes,
    c: &CpuTimes,
    irq: Option<Softirqs>,
    net: Option<Softnet>,
    mhz: Option<Fixed3>,
    to_ms: &dyn Fn(Option<u64>) -> Option<u64>,
) -> io::Result<()> {
    let col = |i: usize| to_ms(delta_opt(p.get(i), c.get(i)));
    out.record(schema::SYSTEM_CPU.name)
        .field(key)
        .field(&irq.map(|i| i.rcu))
        .field(&irq.map(|i| i.timer))
        .field(&irq.map(|i| i.sched))
        .field(&irq.map(|i| i.net_rx))
        .field(&col(0))
        .field(&col(1))
        .field(&col(2))
        .field(&col(IDLE))
        .field(&col(IOWAIT))
        .field(&col(5))
        .field(&col(6))
        .field(&col(7))
        .field(&net.map(|n| n.dropped))
        .field(&net.map(|n| n.rps))
        .field(&Fixed2(util(p, c)))
        .field(&mhz)
        .end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_fewer_columns_are_kept() {
        let (total, cpus) = parse_stat(
            "cpu  10 0 5 100 2 0 1 0 0 0\ncpu1 5 0 2 50 1\ncpu0 5 0 3 50 1 0 1 0 0 0\nintr 1 2\nbtime 5\n",
        );
        assert_eq!(total.unwrap().total(), 118);
        assert_eq!(cpus.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(cpus[1].1.get(7), None);
        assert_eq!(cpus[1].1.get(4), Some(1));
    }

    #[test]
    fn softirqs_follow_the_header_columns() {
        let text =
            "      CPU0  CPU2\n   HI: 1 2\n  RCU: 10 20\nTIMER: 3 4\n SCHED: 5 6\nNET_RX: 7 8\n";
        let s = parse_softirqs(text);
        assert_eq!(
            s,
            vec![
                (
                    0,
                    Softirqs {
                        rcu: 10,
                        timer: 3,
                        sched: 5,
                        net_rx: 7
                    }
                ),
                (
                    2,
                    Softirqs {
                        rcu: 20,
                        timer: 4,
                        sched: 6,
                        net_rx: 8
                    }
                ),
            ]
        );
    }

    #[test]
    fn softnet_uses_the_cpu_column_when_present() {
        let new = "0000000d 00000002 0 0 0 0 0 0 0 00000005 0 0 00000003 0 0\n";
        assert_eq!(
            parse_softnet(new, &[0]),
            vec![(3, Softnet { dropped: 2, rps: 5 })]
        );
        let old =
            "0000000d 00000002 0 0 0 0 0 0 0 00000005\n0000000d 00000001 0 0 0 0 0 0 0 00000000\n";
        assert_eq!(
            parse_softnet(old, &[0, 4]),
            vec![
                (0, Softnet { dropped: 2, rps: 5 }),
                (4, Softnet { dropped: 1, rps: 0 })
            ]
        );
    }

    #[test]
    fn cpuinfo_mhz_per_processor() {
        let text = "processor\t: 1\ncpu MHz\t\t: 2000.5\n\nprocessor\t: 0\ncpu MHz\t\t: 1000.000\n";
        assert_eq!(parse_cpuinfo_mhz(text), vec![(0, 1000.0), (1, 2000.5)]);
    }
}
