//! Upstream tcpprobe's abnormal events (`|event|tcp_link|…|` lines), raised from a period's
//! report when `report_event` (`-l`) is on: at most one event per key and kind per period.
//!
//! | metric | when |
//! |---|---|
//! | `retran_packets` | segments were retransmitted in the period |
//! | `send_rsts` / `receive_rsts` | resets were sent / received in the period |
//! | `sk_drops` | `drops_thr` > 0 and the key's sockets dropped more than that in the period |
//! | `srtt` | `latency_thr` (ms) > 0 and the largest smoothed RTT of the period exceeds it |

use std::io::{self, Write};

use probe_sdk::event::Severity;
use probe_sdk::record::RecordWriter;

use crate::conn_key::ConnKey;
use crate::conn_table::{ConnEntry, C_RETRANS, C_RST_RECV, C_RST_SENT, C_SK_DROPS};
use crate::tables::ENTITY;

/// Event thresholds (0 = that event is off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Thresholds {
    /// `latency_thr`, ms: against the period's largest smoothed RTT.
    pub latency_ms: u64,
    /// `drops_thr`, packets per period: against the change of `sk_drops`.
    pub drops: u64,
}

/// The entity id of a key: its nine key values joined with `_`, in the tables' key order.
pub fn entity_id(key: &ConnKey) -> String {
    let ip = key.client_ip.to_string();
    format!(
        "{}_{}_{}_{}_{}_{}_{}_{}_{}",
        key.tgid,
        key.comm.as_str(),
        key.role.as_str(),
        ip,
        ip,
        key.server_ip,
        key.client_port,
        key.server_port,
        key.protocol()
    )
}

/// The events of one key for this period: (metric, message).
pub fn period_events(
    key: &ConnKey,
    e: &ConnEntry,
    thr: &Thresholds,
) -> Vec<(&'static str, String)> {
    let link = format!(
        "TCP link({} {}:{} -> {}:{})",
        key.role.as_str(),
        key.client_ip,
        key.client_port,
        key.server_ip,
        key.server_port
    );
    let mut out = Vec::new();
    let p = &e.period;
    if p[C_RETRANS] > 0 {
        out.push((
            "retran_packets",
            format!("{link} retransmitted segments({}).", p[C_RETRANS]),
        ));
    }
    if p[C_RST_SENT] > 0 {
        out.push((
            "send_rsts",
            format!("{link} sent resets({}).", p[C_RST_SENT]),
        ));
    }
    if p[C_RST_RECV] > 0 {
        out.push((
            "receive_rsts",
            format!("{link} received resets({}).", p[C_RST_RECV]),
        ));
    }
    if thr.drops > 0 && p[C_SK_DROPS] > thr.drops {
        out.push((
            "sk_drops",
            format!(
                "{link} socket drops({}) exceeded threshold({}).",
                p[C_SK_DROPS], thr.drops
            ),
        ));
    }
    if let Some(max_us) = e.gauges.srtt_max_us {
        if thr.latency_ms > 0 && max_us > thr.latency_ms.saturating_mul(1000) {
            out.push((
                "srtt",
                format!(
                    "{link} srtt({max_us} us) exceeded threshold({} ms).",
                    thr.latency_ms
                ),
            ));
        }
    }
    out
}

/// Writes the events of one key for this period.
pub fn write_events<W: Write>(
    out: &mut RecordWriter<W>,
    key: &ConnKey,
    e: &ConnEntry,
    thr: &Thresholds,
) -> io::Result<()> {
    let events = period_events(key, e, thr);
    if events.is_empty() {
        return Ok(());
    }
    let id = entity_id(key);
    for (metric, msg) in events {
        out.event(ENTITY, &id, metric, Severity::Warn, &msg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_key::{Comm, Role};
    use std::net::{IpAddr, Ipv4Addr};

    fn key() -> ConnKey {
        ConnKey {
            tgid: 7,
            comm: Comm::new("curl"),
            role: Role::Client,
            client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            server_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            client_port: 0,
            server_port: 80,
        }
    }

    #[test]
    fn entity_id_is_the_key_values() {
        assert_eq!(
            entity_id(&key()),
            "7_curl_client_10.0.0.1_10.0.0.1_10.0.0.2_0_80_2"
        );
    }

    #[test]
    fn thresholds_decide_and_zero_means_off() {
        let mut e = ConnEntry::default();
        e.period[C_SK_DROPS] = 10;
        e.gauges.srtt_max_us = Some(5_000);
        let none = Thresholds::default();
        assert!(period_events(&key(), &e, &none).is_empty());
        let at = Thresholds {
            latency_ms: 5,
            drops: 10,
        };
        assert!(period_events(&key(), &e, &at).is_empty(), "not over");
        let below = Thresholds {
            latency_ms: 4,
            drops: 9,
        };
        let ev = period_events(&key(), &e, &below);
        let metrics: Vec<&str> = ev.iter().map(|(m, _)| *m).collect();
        assert_eq!(metrics, ["sk_drops", "srtt"]);
        assert!(ev[1].1.contains("srtt(5000 us) exceeded threshold(4 ms)"));
        e.period[C_RETRANS] = 3;
        e.period[C_RST_RECV] = 1;
        let metrics: Vec<&'static str> = period_events(&key(), &e, &none)
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(metrics, ["retran_packets", "receive_rsts"]);
    }

    #[test]
    fn writes_upstream_event_lines() {
        let mut e = ConnEntry::default();
        e.period[C_RETRANS] = 2;
        let mut w = RecordWriter::new(Vec::new());
        write_events(&mut w, &key(), &e, &Thresholds::default()).unwrap();
        w.flush().unwrap();
        let out = String::from_utf8(w.into_inner()).unwrap();
        assert!(
            out.starts_with(
                "|event|tcp_link|7_curl_client_10.0.0.1_10.0.0.1_10.0.0.2_0_80_2|retran_packets|WARN|13|"
            ),
            "{out}"
        );
        assert!(out.contains("retransmitted segments(2)."), "{out}");
        assert_eq!(out.lines().count(), 1);
    }
}
