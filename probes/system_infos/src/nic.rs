//! `nic`: per-interface counters from `/proc/net/dev`, link state and speed from
//! `/sys/class/net/<dev>/`, root qdisc statistics from rtnetlink (live runs only).
//!
//! Every interface except `lo` is reported (upstream listed only physical ones; bridges, bonds
//! and veths matter too), or only those named by `-d eth0,eth1`. Interfaces are matched by name
//! between samples: a new one is primed for a period, a removed one has no row.

use crate::events::Events;
use crate::qdisc::QdiscStats;
use crate::schema;
use crate::source::{read_into, HostPaths, Reader};
use crate::value::{delta, per_sec, Fixed2};
use probe_sdk::record::RecordWriter;
use std::collections::HashMap;
use std::io::{self, Write};

/// `/proc/net/dev` columns used: rx bytes packets errs drop, tx bytes packets errs drop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DevCounters {
    /// bytes, packets, errs, drop received
    pub rx: [u64; 4],
    /// bytes, packets, errs, drop sent
    pub tx: [u64; 4],
}

/// One interface in one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// Counters.
    pub c: DevCounters,
    /// `operstate` is `up`.
    pub up: bool,
    /// Link speed in Mbit/s, if known.
    pub speed_mbps: Option<u64>,
    /// Root qdisc statistics (live runs only).
    pub qdisc: Option<QdiscStats>,
}

/// Parses `/proc/net/dev` into (name, counters), in file order.
pub fn parse_net_dev(text: &str) -> Vec<(String, DevCounters)> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let nums: Vec<u64> = rest
                .split_ascii_whitespace()
                .map_while(|c| c.parse().ok())
                .collect();
            if nums.len() < 12 {
                return None;
            }
            Some((
                name.trim().to_string(),
                DevCounters {
                    rx: [nums[0], nums[1], nums[2], nums[3]],
                    tx: [nums[8], nums[9], nums[10], nums[11]],
                },
            ))
        })
        .collect()
}

/// Reads the interfaces to report, sorted by name. `only` restricts to the named interfaces;
/// `qdiscs` (by ifindex) is attached when given.
pub fn sample(
    paths: &HostPaths,
    r: &mut Reader,
    only: &[String],
    qdiscs: Option<&HashMap<u32, QdiscStats>>,
) -> Vec<Nic> {
    let Some(text) = r.read(&paths.proc("net/dev")) else {
        return Vec::new();
    };
    let devs = parse_net_dev(text);
    let mut scratch = String::new();
    let mut out: Vec<Nic> = devs
        .into_iter()
        .filter(|(name, _)| {
            if only.is_empty() {
                name != "lo"
            } else {
                only.contains(name)
            }
        })
        .map(|(name, c)| {
            let dir = paths.sys(&format!("class/net/{name}"));
            // An interface removed since /proc/net/dev was read has no sysfs dir: report it down.
            let up = read_into(&dir.join("operstate"), &mut scratch).is_ok()
                && scratch.trim().eq_ignore_ascii_case("up");
            // Reading speed fails with EINVAL when the link is down or the driver does not know.
            let speed_mbps = read_into(&dir.join("speed"), &mut scratch)
                .ok()
                .and_then(|()| scratch.trim().parse::<i64>().ok())
                .and_then(|s| u64::try_from(s).ok());
            let qdisc = qdiscs.and_then(|q| {
                read_into(&dir.join("ifindex"), &mut scratch)
                    .ok()
                    .and_then(|()| scratch.trim().parse::<u32>().ok())
                    .and_then(|i| q.get(&i).copied())
            });
            Nic {
                name,
                c,
                up,
                speed_mbps,
                qdisc,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Writes `nic` for every interface present in both samples.
pub fn write<W: Write>(
    prev: &[Nic],
    cur: &[Nic],
    secs: f64,
    out: &mut RecordWriter<W>,
    events: &mut Events,
) -> io::Result<()> {
    for c in cur {
        let Ok(pi) = prev.binary_search_by(|p| p.name.as_str().cmp(&c.name)) else {
            continue;
        };
        let p = &prev[pi];
        let rx: [u64; 4] = std::array::from_fn(|i| delta(p.c.rx[i], c.c.rx[i]));
        let tx: [u64; 4] = std::array::from_fn(|i| delta(p.c.tx[i], c.c.tx[i]));
        let q = p.qdisc.zip(c.qdisc);

        events.check_drops("nic", &c.name, "tx_dropped", tx[3], |n| {
            format!("net device tx queue drops({n}).")
        });
        events.check_drops("nic", &c.name, "rx_dropped", rx[3], |n| {
            format!("net device rx queue drops({n}).")
        });
        events.check_drops("nic", &c.name, "tx_errs", tx[2], |n| {
            format!("net device tx queue errors({n}).")
        });
        events.check_drops("nic", &c.name, "rx_errs", rx[2], |n| {
            format!("net device rx queue errors({n}).")
        });

        out.record(schema::NIC.name)
            .field(c.name.as_str())
            .field(if c.up { "UP" } else { "DOWN" })
            .field(&rx[0])
            .field(&rx[1])
            .field(&rx[2])
            .field(&rx[3])
            .field(&tx[0])
            .field(&tx[1])
            .field(&tx[2])
            .field(&tx[3])
            .field(&Fixed2(per_sec(rx[0] as f64, secs) / 1024.0))
            .field(&Fixed2(per_sec(tx[0] as f64, secs) / 1024.0))
            .field(&q.map(|(a, b)| delta(a.drops, b.drops)))
            .field(&q.map(|(a, b)| delta(a.overlimits, b.overlimits)))
            .field(&c.qdisc.map(|b| b.backlog))
            // Upstream prints the qdisc's ecn_mark counter as it stands, not its change.
            .field(&c.qdisc.and_then(|b| b.ecn_mark))
            .field(&u8::from(c.up))
            .field(&c.speed_mbps)
            .end()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_with_and_without_space_after_colon() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n\
                    \x20 eth0: 10 2 0 1 0 0 0 0 20 3 0 0 0 0 0 0\n\
                    \x20 ib0:5 1 0 0 0 0 0 0 6 1 1 0 0 0 0 0\n";
        let d = parse_net_dev(text);
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0],
            (
                "eth0".into(),
                DevCounters {
                    rx: [10, 2, 0, 1],
                    tx: [20, 3, 0, 0]
                }
            )
        );
        assert_eq!(d[1].1.tx, [6, 1, 1, 0]);
    }

    fn nic(rx_bytes: u64, qdisc: QdiscStats) -> Nic {
        Nic {
            name: "eth0".into(),
            c: DevCounters {
                rx: [rx_bytes, 0, 0, 0],
                tx: [0; 4],
            },
            up: true,
            speed_mbps: Some(1000),
            qdisc: Some(qdisc),
        }
    }

    /// Upstream's meanings: counters of the period (rx_bytes, tc_sent_drop, tc_sent_overlimits),
    /// the backlog now, and tc_ecn_mark as the qdisc's running count.
    #[test]
    fn period_deltas_and_qdisc_levels() {
        let prev = nic(
            1000,
            QdiscStats {
                drops: 5,
                overlimits: 9,
                backlog: 100,
                ecn_mark: Some(14),
            },
        );
        let cur = nic(
            3048,
            QdiscStats {
                drops: 7,
                overlimits: 9,
                backlog: 40,
                ecn_mark: Some(20),
            },
        );
        let mut out = RecordWriter::new(Vec::new());
        let mut events = Events::new(crate::events::Thresholds::default());
        write(&[prev], &[cur], 2.0, &mut out, &mut events).unwrap();
        out.flush().unwrap();
        assert_eq!(
            String::from_utf8(out.into_inner()).unwrap(),
            "|nic|eth0|UP|2048|0|0|0|0|0|0|0|1.00|0.00|2|0|40|20|1|1000|\n"
        );
    }
}
