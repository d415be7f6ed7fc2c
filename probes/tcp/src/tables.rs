//! The output tables and the run-time control declaration, defined once: the record writer and
//! the `.meta` text both come from [`TABLES`] and [`declaration`] (a test keeps `tcpprobe.meta`
//! equal to [`meta_text`]).

use std::io::{self, Write};

use probe_sdk::args::DEFAULT_PERIOD_SECS;
use probe_sdk::bpf;
use probe_sdk::decl::{self, Declaration, Param, ParamValue, SnooperKind, SubProbe};
use probe_sdk::meta::{self, Field, Table};
use probe_sdk::record::RecordWriter;

use crate::conn_key::ConnKey;
use crate::conn_table::{
    ConnEntry, CLOSE_ABORT, CLOSE_ACTIVE, CLOSE_FAILED, CLOSE_PASSIVE, C_BACKLOG_DROPS, C_BUSY_J,
    C_FILTER_DROPS, C_RETRANS, C_RMEM_SCHED, C_RST_RECV, C_RST_SENT, C_RWND_LIMITED_J, C_RX_BYTES,
    C_SEGS_IN, C_SEGS_OUT, C_SK_DROPS, C_SNDBUF_LIMIT, C_SNDBUF_LIMITED_J, C_TCP_OOM, C_TMOUT,
    C_TX_BYTES, C_ZERO_RCV_WND, C_ZERO_SND_WND, G_ADVMSS, G_ATO_J, G_BACKLOG_LEN, G_DELIVERY_RATE,
    G_ERR_QLEN, G_FORWARD, G_LOST_OUT, G_MAX_PACING_RATE, G_OMEM, G_PACING_RATE, G_RCVBUF,
    G_RCV_QLEN, G_RCV_SPACE, G_RCV_SSTHRESH, G_RTO_J, G_SACKED_OUT, G_SNDBUF, G_SND_SSTHRESH,
    G_WMEM, G_WRI_QLEN,
};

/// Entity of every connection table (upstream HEAD's `tcp_link`).
pub const ENTITY: &str = "tcp_link";
/// Loss-counter table (`<probe>_bpf_stats`, entity `bpf_probe`).
pub const STATS_TABLE: &str = "tcp_bpf_stats";

/// A metric's value in one record; None is written as an empty (absent) field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A number.
    Num(Option<u64>),
    /// Pre-encoded text (histograms).
    Text(Option<String>),
}

/// A connection table.
#[derive(Debug)]
pub struct TableDef {
    /// Table name (first token of the record line).
    pub name: &'static str,
    /// `-P` bit that enables the table (upstream tcpprobe bits); None = always on.
    pub bit: Option<u32>,
    /// Metric fields, after the common key fields.
    pub metrics: &'static [Field],
    /// Metric values of an entry, in `metrics` order.
    pub values: fn(&ConnEntry, &Ctx) -> Vec<Value>,
}

/// What the writer needs besides an entry: the kernel's HZ (jiffies to µs) and which optional
/// hooks are attached (a field whose hook is missing is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// Kernel ticks per second, once estimated (see `hz`); None: jiffy-based fields absent.
    pub hz: Option<u64>,
    /// `skb:kfree_skb` attached (backlog_drops, filter_drops, rmem_scheduls).
    pub drops: bool,
    /// `sock:sock_exceed_buf_limit` attached (tcp_oom).
    pub exceed_buf: bool,
    /// `sock:inet_sk_error_report` attached (tmout_count, sk_err).
    pub error_report: bool,
    /// `sock:sock_send_length` attached (snd_buf_limit_count).
    pub send_length: bool,
}

impl Ctx {
    /// Every hook attached, HZ known.
    #[cfg(test)]
    pub fn all(hz: u64) -> Ctx {
        Ctx {
            hz: Some(hz),
            drops: true,
            exceed_buf: true,
            error_report: true,
            send_length: true,
        }
    }

    /// Jiffies as µs.
    fn us(&self, jiffies: Option<u64>) -> Value {
        match (jiffies, self.hz) {
            (Some(j), Some(hz)) if hz > 0 => {
                let us = u128::from(j) * 1_000_000 / u128::from(hz);
                num(u64::try_from(us).unwrap_or(u64::MAX))
            }
            _ => Value::Num(None),
        }
    }
}

fn when(on: bool, v: u64) -> Value {
    Value::Num(on.then_some(v))
}

/// The key fields every connection table starts with: upstream HEAD's `tcp_link` keys, in its
/// order (gala-spider merges the tables of one entity only when their keys are the same).
pub const KEY_FIELDS: &[Field] = &[
    Field::key("tgid", "process id of the socket owner (0 when unknown)"),
    Field::key(
        "comm",
        "process name of the socket owner (unknown when the owner is unknown)",
    ),
    Field::key(
        "role",
        "client (the local end connected) or server (it was accepted)",
    ),
    Field::key("client_ip", "address of the connecting end"),
    Field::key(
        "toa_client_ip",
        "client address before TOA; TCP option address is not parsed here, so always client_ip",
    ),
    Field::key("server_ip", "address of the accepting end"),
    Field::key("client_port", "port of the connecting end (0 unless -c 1)"),
    Field::key("server_port", "port of the accepting end"),
    Field::key("protocol", "address family: 2 IPv4, 10 IPv6"),
];

/// `-P` bit of tcp_abn (upstream TCP_PROBE_ABN).
pub const BIT_ABN: u32 = 1;
/// `-P` bit of tcp_windows (upstream TCP_PROBE_WINDOWS); also enables the per-segment
/// zero-window hook.
pub const BIT_WINDOWS: u32 = 2;
/// `-P` bit of tcp_rtt (upstream TCP_PROBE_RTT).
pub const BIT_RTT: u32 = 4;
/// `-P` bit of tcp_tx_rx (upstream TCP_PROBE_TXRX).
pub const BIT_TXRX: u32 = 8;
/// `-P` bit of tcp_sockbuf (upstream TCP_PROBE_SOCKBUF).
pub const BIT_SOCKBUF: u32 = 16;
/// `-P` bit of tcp_rate (upstream TCP_PROBE_RATE).
pub const BIT_RATE: u32 = 32;
/// `-P` bit of tcp_srtt (upstream TCP_PROBE_SRTT).
pub const BIT_SRTT: u32 = 64;

fn num(v: u64) -> Value {
    Value::Num(Some(v))
}

fn opt(v: Option<u64>) -> Value {
    Value::Num(v)
}

/// All connection tables, in output order.
pub const TABLES: &[TableDef] = &[
    TableDef {
        name: "tcp_link",
        bit: None,
        metrics: &[
            Field::gauge("link_count", "live connections of the key at the end of the period"),
            Field::counter("opens", "transitions to ESTABLISHED"),
            Field::counter("closes", "transitions to CLOSE (all kinds below)"),
            Field::counter("active_closes", "closed from FIN_WAIT1/FIN_WAIT2/CLOSING: the local end closed first"),
            Field::counter("passive_closes", "closed from LAST_ACK: the peer closed first"),
            Field::counter("aborted_closes", "closed from ESTABLISHED/CLOSE_WAIT: reset, abort or timeout"),
            Field::counter("open_failed", "closed from SYN_SENT/SYN_RECV: never established"),
            Field::histogram("estab_latency", "connection establish latency, us (client: SYN sent to ESTABLISHED; server: SYN-ACK round trip)"),
        ],
        values: |e, _| {
            vec![
                num(e.live),
                num(e.opens),
                num(e.closes.iter().sum()),
                num(e.closes[CLOSE_ACTIVE]),
                num(e.closes[CLOSE_PASSIVE]),
                num(e.closes[CLOSE_ABORT]),
                num(e.closes[CLOSE_FAILED]),
                Value::Text(e.estab.encode()),
            ]
        },
    },
    TableDef {
        name: "tcp_tx_rx",
        bit: Some(BIT_TXRX),
        metrics: &[
            Field::per_period("rx_bytes", "payload bytes received in the period"),
            Field::per_period(
                "tx_bytes",
                "payload bytes sent in the period, retransmissions excluded",
            ),
            Field::per_period("segs_in", "segments received in the period"),
            Field::per_period("segs_out", "segments sent in the period"),
        ],
        values: |e, _| {
            vec![
                num(e.counters[C_RX_BYTES]),
                num(e.counters[C_TX_BYTES]),
                num(e.counters[C_SEGS_IN]),
                num(e.counters[C_SEGS_OUT]),
            ]
        },
    },
    TableDef {
        name: "tcp_rtt",
        bit: Some(BIT_RTT),
        metrics: &[
            Field::gauge(
                "srtt",
                "smoothed RTT in the period, us: mean over the key's connections sampled",
            ),
            Field::gauge(
                "srtt_max",
                "largest smoothed RTT of the key's connections sampled in the period, us",
            ),
            Field::gauge(
                "rcv_rtt",
                "receive-side RTT estimate in the period, us: mean over the connections sampled",
            ),
        ],
        values: |e, _| {
            vec![
                opt(e.gauges.srtt_us),
                opt(e.gauges.srtt_max_us),
                opt(e.gauges.rcv_rtt_us),
            ]
        },
    },
    TableDef {
        name: "tcp_windows",
        bit: Some(BIT_WINDOWS),
        metrics: &[
            Field::gauge(
                "snd_cwnd",
                "congestion window at the period's end, segments: mean over live connections",
            ),
            Field::gauge("snd_wnd", "peer's receive window at the period's end, bytes (mean)"),
            Field::gauge("rcv_wnd", "advertised receive window at the period's end, bytes (mean)"),
            Field::gauge(
                "notsent_bytes",
                "bytes written but not yet sent at the period's end (mean)",
            ),
            Field::gauge(
                "notack_bytes",
                "bytes sent but not yet acknowledged at the period's end (mean)",
            ),
            Field::gauge("reordering", "reordering metric at the period's end, segments (mean)"),
            Field::per_period(
                "zero_snd_wnd_count",
                "times in the period the peer closed its window (zero window received)",
            ),
            Field::per_period(
                "zero_rcv_wnd_count",
                "zero-window episodes in the period: segments arriving while our window was 0",
            ),
        ],
        values: |e, _| {
            let g = &e.gauges;
            vec![
                opt(g.snd_cwnd),
                opt(g.snd_wnd),
                opt(g.rcv_wnd),
                opt(g.notsent_bytes),
                opt(g.notack_bytes),
                opt(g.reordering),
                num(e.counters[C_ZERO_SND_WND]),
                num(e.counters[C_ZERO_RCV_WND]),
            ]
        },
    },
    TableDef {
        name: "tcp_abn",
        bit: Some(BIT_ABN),
        metrics: &[
            Field::per_period("retran_packets", "segments retransmitted in the period (total_retrans)"),
            Field::per_period("backlog_drops", "packets dropped in the period because the socket backlog was full (kfree_skb reason SOCKET_BACKLOG)"),
            Field::per_period("sk_drops", "packets the sockets dropped in the period (change of sk_drops)"),
            Field::gauge("lost_out", "segments presumed lost at the period's pass (tp->lost_out, mean over live connections)"),
            Field::gauge("sacked_out", "segments selectively acknowledged at the period's pass (tp->sacked_out, mean)"),
            Field::per_period("filter_drops", "packets dropped in the period by a socket filter (kfree_skb reason SOCKET_FILTER)"),
            Field::per_period("tmout_count", "connection timeouts in the period (inet_sk_error_report with ETIMEDOUT)"),
            Field::per_period("snd_buf_limit_count", "non-blocking sends refused in the period because the send buffer was full (sock_send_length -EAGAIN)"),
            Field::per_period("rmem_scheduls", "received packets dropped in the period because receive memory could not be charged (kfree_skb reason PROTO_MEM or SOCKET_RCVBUFF)"),
            Field::per_period("tcp_oom", "memory charges refused in the period by the TCP memory limits (sock_exceed_buf_limit)"),
            Field::per_period("send_rsts", "resets sent in the period"),
            Field::per_period("receive_rsts", "resets received in the period"),
            Field::gauge("sk_err", "largest error number reported on the key's sockets in the period (inet_sk_error_report; absent if none)"),
            Field::gauge("sk_err_soft", "largest soft error number (sk_err_soft) of the live connections at the period's pass (0: none)"),
        ],
        values: |e, x| {
            let c = &e.counters;
            let g = &e.gauges;
            vec![
                num(c[C_RETRANS]),
                when(x.drops, c[C_BACKLOG_DROPS]),
                num(c[C_SK_DROPS]),
                opt(g.means[G_LOST_OUT]),
                opt(g.means[G_SACKED_OUT]),
                when(x.drops, c[C_FILTER_DROPS]),
                when(x.error_report, c[C_TMOUT]),
                when(x.send_length, c[C_SNDBUF_LIMIT]),
                when(x.drops, c[C_RMEM_SCHED]),
                when(x.exceed_buf, c[C_TCP_OOM]),
                num(c[C_RST_SENT]),
                num(c[C_RST_RECV]),
                if x.error_report { opt(g.sk_err) } else { Value::Num(None) },
                opt(g.sk_err_soft),
            ]
        },
    },
    TableDef {
        name: "tcp_rate",
        bit: Some(BIT_RATE),
        metrics: &[
            Field::gauge("rto", "retransmission timeout, us (icsk_rto; mean over live connections)"),
            Field::gauge("ato", "delayed-ACK timeout estimate, us (icsk_ack.ato; mean)"),
            Field::gauge("snd_ssthresh", "slow start threshold, segments (snd_ssthresh; mean)"),
            Field::gauge("rcv_ssthresh", "receive window clamp in slow start, bytes (rcv_ssthresh; mean)"),
            Field::gauge("advmss", "advertised MSS, bytes (advmss; mean)"),
            Field::gauge("rcv_space", "receive buffer auto-tuning estimate, bytes (rcvq_space.space; mean)"),
            Field::gauge("delivery_rate", "delivery rate of the last sample, bytes/s (rate_delivered x mss_cache / rate_interval_us, as tcpi_delivery_rate; mean)"),
            Field::per_period("busy_time", "time the connections were busy sending in the period, us (chrono_stat BUSY)"),
            Field::per_period("rwnd_limited", "time the connections were limited by the peer's receive window in the period, us (chrono_stat RWND_LIMITED)"),
            Field::per_period("sndbuf_limited", "time the connections were limited by the send buffer in the period, us (chrono_stat SNDBUF_LIMITED)"),
            Field::gauge("pacing_rate", "pacing rate, bytes/s (sk_pacing_rate; mean)"),
            Field::gauge("max_pacing_rate", "pacing rate limit, bytes/s (sk_max_pacing_rate; 18446744073709551615 = unlimited; mean)"),
        ],
        values: |e, x| {
            let g = &e.gauges.means;
            let c = &e.counters;
            vec![
                x.us(g[G_RTO_J]),
                x.us(g[G_ATO_J]),
                opt(g[G_SND_SSTHRESH]),
                opt(g[G_RCV_SSTHRESH]),
                opt(g[G_ADVMSS]),
                opt(g[G_RCV_SPACE]),
                opt(g[G_DELIVERY_RATE]),
                x.us(Some(c[C_BUSY_J])),
                x.us(Some(c[C_RWND_LIMITED_J])),
                x.us(Some(c[C_SNDBUF_LIMITED_J])),
                opt(g[G_PACING_RATE]),
                opt(g[G_MAX_PACING_RATE]),
            ]
        },
    },
    TableDef {
        name: "tcp_sockbuf",
        bit: Some(BIT_SOCKBUF),
        metrics: &[
            Field::gauge("sk_err_que_size", "packets in the error queue (sk_error_queue.qlen; mean over live connections)"),
            Field::gauge("sk_rcv_que_size", "packets in the receive queue (sk_receive_queue.qlen; mean)"),
            Field::gauge("sk_wri_que_size", "packets in the write queue (sk_write_queue.qlen; mean)"),
            Field::gauge("sk_backlog_size", "bytes in the backlog queue (sk_backlog.len; mean)"),
            Field::gauge("sk_omem_size", "option memory, bytes (sk_omem_alloc; mean)"),
            Field::gauge("sk_forward_size", "memory charged but not used, bytes (sk_forward_alloc; mean)"),
            Field::gauge("sk_wmem_size", "bytes queued for sending (sk_wmem_queued; mean)"),
            Field::gauge("sk_rcvbuf", "receive buffer size, bytes (sk_rcvbuf; mean)"),
            Field::gauge("sk_sndbuf", "send buffer size, bytes (sk_sndbuf; mean)"),
        ],
        values: |e, _| {
            let g = &e.gauges.means;
            [
                G_ERR_QLEN,
                G_RCV_QLEN,
                G_WRI_QLEN,
                G_BACKLOG_LEN,
                G_OMEM,
                G_FORWARD,
                G_WMEM,
                G_RCVBUF,
                G_SNDBUF,
            ]
            .iter()
            .map(|i| opt(g[*i]))
            .collect()
        },
    },
    TableDef {
        name: "tcp_srtt",
        bit: Some(BIT_SRTT),
        metrics: &[
            Field::gauge(
                "syn_srtt",
                "mean establish latency of the connections established in the period, us",
            ),
            Field::gauge(
                "syn_srtt_max",
                "largest establish latency of the connections established in the period, us",
            ),
        ],
        values: |e, _| vec![opt(e.gauges.syn_srtt_us), opt(e.gauges.syn_srtt_max_us)],
    },
];

/// Upstream's param `name` (reference §5.4). Only constant names are passed, and the
/// declaration test builds every one of them.
fn standard(name: &str) -> Param {
    decl::standard(name).expect("a param name upstream has")
}

/// What tcpprobe declares about its run-time control (REST name `tcp`).
///
/// Sub-probes are upstream's names mapped to the `-P` bits of the tables this probe writes:
///
/// | sub-probe | bits | table |
/// |---|---|---|
/// | `tcp_abnormal` | 1 | `tcp_abn` |
/// | `tcp_windows` | 2 | `tcp_windows` (and the per-segment zero-window hook) |
/// | `tcp_rtt` | 4 | `tcp_rtt` |
/// | `tcp_stats` | 8 | `tcp_tx_rx` |
/// | `tcp_sockbuf` | 16 | `tcp_sockbuf` |
/// | `tcp_rate` | 32 | `tcp_rate` |
/// | `tcp_srtt` | 64 | `tcp_srtt` |
///
/// `tcp_link` and `tcp_bpf_stats` are always written. Upstream HEAD's `tcp_delay`
/// (`proc_flow_perf`: per-process system and network delay histograms, from kprobes on the
/// send and receive paths) has no table here and is not declared, so REST refuses it.
///
/// Params: `report_period` (`-t`, default 5 s), `report_cport` (`-c`), `latency_thr` (`-T`,
/// ms) and `drops_thr` (`-D`), the thresholds of the abnormal events, `report_event` (`-l`),
/// which turns the events on, and `cluster_ip_backend`, which only accepts 0 (no conntrack
/// translation of cluster IPs here). Every snooper kind is honoured: the daemon resolves them
/// to pids, and connections are reported only when their owning process is selected.
pub fn declaration() -> Declaration {
    Declaration {
        rest_name: Some("tcp".to_string()),
        reload: true,
        snoopers: SnooperKind::ALL.to_vec(),
        sub_probes: vec![
            SubProbe::new("tcp_abnormal", BIT_ABN),
            SubProbe::new("tcp_rtt", BIT_RTT),
            SubProbe::new("tcp_windows", BIT_WINDOWS),
            SubProbe::new("tcp_srtt", BIT_SRTT),
            SubProbe::new("tcp_rate", BIT_RATE),
            SubProbe::new("tcp_sockbuf", BIT_SOCKBUF),
            SubProbe::new("tcp_stats", BIT_TXRX),
        ],
        params: vec![
            standard("report_period").with_default(ParamValue::Int(i64::from(DEFAULT_PERIOD_SECS))),
            standard("report_cport"),
            standard("latency_thr"),
            standard("drops_thr"),
            standard("report_event"),
            // No conntrack translation of cluster IPs to their backends here: 1 and 2 refused.
            standard("cluster_ip_backend").with_range(0, 0),
            // Sizes the ring buffer at start (the first control message); upstream's
            // "changeable only while stopped".
            standard("ringbuf_map_size").with_default(ParamValue::Int(i64::from(DEFAULT_RING_MIB))),
        ],
    }
}

/// Ring buffer size when `ringbuf_map_size` is not given, MiB.
pub const DEFAULT_RING_MIB: u32 = 2;

/// Whether `table` is enabled by the `-P` bitmask.
pub fn enabled(table: &TableDef, probe_bits: u32) -> bool {
    table.bit.is_none_or(|b| probe_bits & b != 0)
}

/// Writes one record per enabled table for `key`. `toa_client_ip` is `client_ip`: without
/// TOA parsing, the connecting end's address is the best known client address.
pub fn write_entry<W: Write>(
    out: &mut RecordWriter<W>,
    probe_bits: u32,
    key: &ConnKey,
    entry: &ConnEntry,
    ctx: &Ctx,
) -> io::Result<()> {
    let client_ip = key.client_ip.to_string();
    for table in TABLES.iter().filter(|t| enabled(t, probe_bits)) {
        let mut rec = out
            .record(table.name)
            .field(&key.tgid)
            .field(key.comm.as_str())
            .field(key.role.as_str())
            .field(&client_ip)
            .field(&client_ip)
            .field(&key.server_ip.to_string())
            .field(&key.client_port)
            .field(&key.server_port)
            .field(&key.protocol());
        for v in (table.values)(entry, ctx) {
            rec = match v {
                Value::Num(n) => rec.field(&n),
                Value::Text(t) => rec.field(&t),
            };
        }
        rec.end()?;
    }
    Ok(())
}

/// Every table of the `.meta` file, in order: the connection tables, then the loss counters.
pub fn meta_tables() -> Vec<Table> {
    TABLES
        .iter()
        .map(|t| Table::new(t.name, ENTITY, &[KEY_FIELDS, t.metrics]))
        .chain([bpf::loss_table(
            STATS_TABLE,
            "kernel records sent (state changes, resets, zero windows, drops, errors, buffer limits)",
            "records lost (ring buffer full, program skipped on re-entry, undecodable)",
            "connection deltas dropped because the key cap (-M) was reached",
        )])
        .collect()
}

/// The `.meta` file (`tcpprobe --print-meta`): every table this probe writes, then its
/// run-time control declaration (the `probe` group).
pub fn meta_text() -> String {
    format!(
        "{}\n{}",
        meta::render(&[], &meta_tables()),
        declaration().render_meta()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_key::{Comm, Role};
    use crate::conn_table::{ConnTable, PeriodDelta};
    use probe_sdk::meta::FieldKind;
    use std::net::{IpAddr, Ipv4Addr};

    fn sample_entry() -> (ConnKey, ConnEntry) {
        let key = ConnKey {
            tgid: 1234,
            comm: Comm::new("curl"),
            role: Role::Client,
            client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            server_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            client_port: 0,
            server_port: 80,
        };
        let mut d = PeriodDelta {
            live: 1,
            opens: 1,
            rtt_samples: 1,
            srtt_sum_us: 30,
            srtt_max_us: 30,
            ..Default::default()
        };
        d.counters[C_RX_BYTES] = 100;
        d.counters[C_TX_BYTES] = 200;
        d.counters[C_SEGS_IN] = 3;
        d.counters[C_SEGS_OUT] = 4;
        d.counters[C_RST_RECV] = 1;
        d.closes[CLOSE_PASSIVE] = 1;
        d.closes[CLOSE_ABORT] = 1;
        d.counters[C_SK_DROPS] = 5;
        d.counters[C_RMEM_SCHED] = 2;
        d.counters[C_BUSY_J] = 25;
        d.gauge_sums[G_RTO_J] = 50;
        d.gauge_sums[G_RCVBUF] = 131072;
        d.gauge_sums[G_LOST_OUT] = 3;
        d.sk_err_max = Some(110);
        d.estab.counts[1] = 1;
        d.estab.sum = 70;
        d.estab.max = 70;
        let mut t = ConnTable::new(4, 4);
        t.apply([(key, d)]);
        let (k, e) = t.rows()[0];
        (*k, e.clone())
    }

    fn render(bits: u32) -> String {
        let (k, e) = sample_entry();
        let mut w = RecordWriter::new(Vec::new());
        write_entry(&mut w, bits, &k, &e, &Ctx::all(250)).unwrap();
        w.flush().unwrap();
        String::from_utf8(w.into_inner()).unwrap()
    }

    #[test]
    fn writes_upstream_style_records() {
        let out = render(u32::MAX);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), TABLES.len());
        let keys = "1234|curl|client|10.0.0.1|10.0.0.1|10.0.0.2|0|80|2";
        assert_eq!(lines[1], format!("|tcp_tx_rx|{keys}|100|200|3|4|"));
        assert_eq!(lines[2], format!("|tcp_rtt|{keys}|30|30|0|"));
        assert_eq!(
            lines[4],
            format!("|tcp_abn|{keys}|0|0|5|3|0|0|0|0|2|0|0|1|110|0|")
        );
        // rto 50 jiffies at 250 Hz = 200 ms; busy 25 jiffies = 100 ms.
        assert_eq!(
            lines[5],
            format!("|tcp_rate|{keys}|200000|0|0|0|0|0|0|100000|0|0|0|0|")
        );
        assert_eq!(
            lines[6],
            format!("|tcp_sockbuf|{keys}|0|0|0|0|0|0|0|131072|0|")
        );
        assert_eq!(lines[7], format!("|tcp_srtt|{keys}|70|70|"));
        assert!(lines[0].starts_with(&format!("|tcp_link|{keys}|1|1|2|0|1|1|0|14 50 0 100 1 ")));
        // Window gauges come only from live samples: the sums are zero here, not absent.
        assert!(lines[3].starts_with(&format!("|tcp_windows|{keys}|")));
    }

    /// gala-spider merges all tables of one entity at one `.meta` version and drops the entity
    /// when their keys differ; upstream HEAD's `tcp_metric` (entity `tcp_link`) has exactly
    /// these keys, in this order.
    #[test]
    fn every_tcp_link_table_has_upstream_heads_keys() {
        const HEAD_KEYS: [&str; 9] = [
            "tgid",
            "comm",
            "role",
            "client_ip",
            "toa_client_ip",
            "server_ip",
            "client_port",
            "server_port",
            "protocol",
        ];
        let tables = meta_tables();
        let tcp_link: Vec<&Table> = tables.iter().filter(|t| t.entity == ENTITY).collect();
        assert_eq!(tcp_link.len(), TABLES.len());
        for t in tcp_link {
            let keys: Vec<&str> = t
                .fields
                .iter()
                .filter(|f| f.kind == FieldKind::Key)
                .map(|f| f.name)
                .collect();
            assert_eq!(keys, HEAD_KEYS, "{}", t.name);
            // Keys first, then metrics only: no label in between.
            assert!(t.fields[..HEAD_KEYS.len()]
                .iter()
                .all(|f| f.kind == FieldKind::Key));
            assert!(
                t.fields[HEAD_KEYS.len()..].iter().all(|f| f.is_metric()),
                "{}",
                t.name
            );
        }
        // The loss table is another entity and keeps its own key.
        let stats = tables.iter().find(|t| t.name == STATS_TABLE).unwrap();
        assert_eq!(stats.entity, "bpf_probe");
        assert_eq!(stats.fields[0].name, "probe");
    }

    /// Upstream (tcp_probe.c) resets its per-link sums after every report: these are the
    /// fields whose meaning is the change per period; the rest are period gauges, or our own
    /// cumulative counters and histogram.
    #[test]
    fn upstream_named_sums_are_per_period() {
        let per_period: Vec<&str> = TABLES
            .iter()
            .flat_map(|t| t.metrics.iter())
            .filter(|f| f.per_period)
            .map(|f| f.name)
            .collect();
        assert_eq!(
            per_period,
            [
                "rx_bytes",
                "tx_bytes",
                "segs_in",
                "segs_out",
                "zero_snd_wnd_count",
                "zero_rcv_wnd_count",
                "retran_packets",
                "backlog_drops",
                "sk_drops",
                "filter_drops",
                "tmout_count",
                "snd_buf_limit_count",
                "rmem_scheduls",
                "tcp_oom",
                "send_rsts",
                "receive_rsts",
                "busy_time",
                "rwnd_limited",
                "sndbuf_limited"
            ]
        );
        for gauge in ["srtt", "rcv_rtt", "snd_cwnd", "syn_srtt", "syn_srtt_max"] {
            let f = TABLES
                .iter()
                .flat_map(|t| t.metrics.iter())
                .find(|f| f.name == gauge)
                .unwrap();
            assert_eq!(f.kind, FieldKind::Gauge, "{gauge}");
        }
        assert!(meta_text().contains(
            r#"{ description: "payload bytes received in the period", type: "counter", name: "rx_bytes", period: "delta" }"#
        ));
    }

    #[test]
    fn unknown_owner_is_a_non_empty_key() {
        let (mut k, e) = sample_entry();
        k.tgid = 0;
        k.comm = Comm::unknown();
        let mut w = RecordWriter::new(Vec::new());
        write_entry(&mut w, BIT_TXRX, &k, &e, &Ctx::all(250)).unwrap();
        w.flush().unwrap();
        let out = String::from_utf8(w.into_inner()).unwrap();
        assert!(out.starts_with("|tcp_link|0|unknown|client|"), "{out}");
        assert!(out.lines().all(|l| !l.contains("||")), "{out}");
    }

    #[test]
    fn fields_of_missing_hooks_and_unknown_hz_are_absent() {
        let (k, e) = sample_entry();
        let ctx = Ctx {
            hz: None,
            drops: false,
            exceed_buf: false,
            error_report: false,
            send_length: false,
        };
        let mut w = RecordWriter::new(Vec::new());
        write_entry(&mut w, BIT_ABN | BIT_RATE, &k, &e, &ctx).unwrap();
        w.flush().unwrap();
        let out = String::from_utf8(w.into_inner()).unwrap();
        let keys = "1234|curl|client|10.0.0.1|10.0.0.1|10.0.0.2|0|80|2";
        // retran, backlog(-), sk_drops, lost, sacked, filter(-), tmout(-), sndbuf(-),
        // rmem(-), oom(-), rsts, sk_err(-), sk_err_soft.
        assert!(
            out.contains(&format!("|tcp_abn|{keys}|0||5|3|0||||||0|1||0|")),
            "{out}"
        );
        assert!(
            out.contains(&format!("|tcp_rate|{keys}|||0|0|0|0|0||||0|0|")),
            "{out}"
        );
    }

    #[test]
    fn probe_bits_select_tables() {
        let out = render(BIT_TXRX);
        let tables: Vec<&str> = out.lines().map(|l| l.split('|').nth(1).unwrap()).collect();
        assert_eq!(tables, vec!["tcp_link", "tcp_tx_rx"]);
    }

    #[test]
    fn every_record_matches_its_meta_field_count() {
        let out = render(u32::MAX);
        for (line, table) in out.lines().zip(TABLES.iter()) {
            let fields = line.len() - line.replace('|', "").len() - 2;
            assert_eq!(fields, KEY_FIELDS.len() + table.metrics.len(), "{line}");
        }
    }

    #[test]
    fn meta_parses_with_the_daemon_reader_and_matches_the_tables() {
        let doc = gala_libconfig::parse_str(&meta_text(), std::path::Path::new("tcpprobe.meta"))
            .expect("valid libconfig");
        assert_eq!(
            doc.lookup("version").and_then(|n| n.as_str()),
            Some("1.0.0")
        );
        let expected = meta_tables();
        assert_eq!(meta::check(&expected), Vec::<String>::new());
        assert_eq!(expected.last().map(|t| t.name), Some(STATS_TABLE));
        for (i, table) in expected.iter().enumerate() {
            let m = doc.lookup(&format!("measurements.[{i}]")).unwrap();
            assert_eq!(
                m.get("table_name").and_then(|n| n.as_str()),
                Some(table.name)
            );
            assert_eq!(
                m.get("entity_name").and_then(|n| n.as_str()),
                Some(table.entity)
            );
            for (j, fd) in table.fields.iter().enumerate() {
                let f = m.lookup(&format!("fields.[{j}]")).unwrap();
                assert_eq!(f.get("name").and_then(|n| n.as_str()), Some(fd.name));
                assert_eq!(
                    f.get("type").and_then(|n| n.as_str()),
                    Some(fd.kind.as_str())
                );
            }
            assert!(m
                .lookup(&format!("fields.[{}]", table.fields.len()))
                .is_none());
        }
        assert!(doc
            .lookup(&format!("measurements.[{}]", expected.len()))
            .is_none());
    }

    #[test]
    fn declaration_is_valid_and_maps_sub_probes_to_our_tables() {
        let d = declaration();
        d.validate().expect("valid declaration");
        assert_eq!(d.rest_name.as_deref(), Some("tcp"));
        assert!(d.reload);
        assert_eq!(d.snoopers, SnooperKind::ALL);
        // Each sub-probe selects exactly the bit of one table we write.
        for s in &d.sub_probes {
            let tables: Vec<&str> = TABLES
                .iter()
                .filter(|t| t.bit == Some(s.bits))
                .map(|t| t.name)
                .collect();
            assert_eq!(tables.len(), 1, "{}: {tables:?}", s.name);
        }
        // Every selectable table has a sub-probe.
        for t in TABLES.iter().filter(|t| t.bit.is_some()) {
            assert!(
                d.sub_probes.iter().any(|s| Some(s.bits) == t.bit),
                "{} has no sub-probe",
                t.name
            );
        }
        assert!(d.sub_probe("tcp_delay").is_none(), "tcp_delay is not built");
        assert_eq!(d.sub_probe("tcp_rate").map(|s| s.bits), Some(BIT_RATE));
        assert_eq!(
            d.sub_probe("tcp_sockbuf").map(|s| s.bits),
            Some(BIT_SOCKBUF)
        );
        assert_eq!(
            d.sub_probe_bits(&["tcp_stats".into(), "tcp_rtt".into()]),
            Ok(BIT_TXRX | BIT_RTT)
        );
        let names: Vec<&str> = d.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "report_period",
                "report_cport",
                "latency_thr",
                "drops_thr",
                "report_event",
                "cluster_ip_backend",
                "ringbuf_map_size"
            ]
        );
        assert_eq!(d.param("latency_thr").map(|p| p.flag), Some(Some('T')));
        assert_eq!(d.param("drops_thr").map(|p| p.flag), Some(Some('D')));
        assert_eq!(d.param("report_event").map(|p| p.flag), Some(Some('l')));
        let cib = |v: u8| {
            let line = format!(r#"{{"params":{{"cluster_ip_backend":{v}}}}}"#);
            let msg = probe_sdk::decl::ControlMsg::parse_line(&line).unwrap();
            msg.checked(&d, "cluster_ip_backend").unwrap().is_ok()
        };
        assert!(cib(0));
        assert!(!cib(1) && !cib(2), "no conntrack translation: only 0");
        assert_eq!(d.defaults()["report_period"], ParamValue::Int(5));
        assert_eq!(d.param("report_period").map(|p| p.flag), Some(Some('t')));
        assert_eq!(d.param("report_cport").map(|p| p.flag), Some(Some('c')));
    }

    #[test]
    fn meta_carries_the_declaration() {
        let doc = gala_libconfig::parse_str(&meta_text(), std::path::Path::new("tcpprobe.meta"))
            .expect("valid libconfig");
        assert_eq!(Declaration::from_node(&doc), Ok(Some(declaration())));
    }

    #[test]
    fn committed_meta_file_is_current() {
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tcpprobe.meta"))
                .expect("probes/tcp/tcpprobe.meta");
        assert_eq!(
            committed,
            meta_text(),
            "regenerate with: tcpprobe --print-meta > probes/tcp/tcpprobe.meta"
        );
    }
}
