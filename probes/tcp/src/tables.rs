//! The output tables, defined once: the record writer and the `.meta` text both come from
//! [`TABLES`] (a test keeps `tcpprobe.meta` equal to [`meta_text`]).

use std::fmt::Write as _;
use std::io::{self, Write};

use probe_sdk::record::RecordWriter;

use crate::conn_key::ConnKey;
use crate::conn_table::{
    ConnEntry, CLOSE_ABORT, CLOSE_ACTIVE, CLOSE_FAILED, CLOSE_PASSIVE, C_RETRANS, C_RST_RECV,
    C_RST_SENT, C_RX_BYTES, C_SEGS_IN, C_SEGS_OUT, C_TX_BYTES, C_ZERO_RCV_WND, C_ZERO_SND_WND,
};

/// Entity of every connection table (upstream HEAD's `tcp_link`).
pub const ENTITY: &str = "tcp_link";
/// Loss-counter table (`<probe>_bpf_stats`, entity `bpf_probe`).
pub const STATS_TABLE: &str = "tcp_bpf_stats";

/// `.meta` field type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Identity of the record.
    Key,
    /// Label only.
    Label,
    /// Value that goes up and down.
    Gauge,
    /// Monotonic value.
    Counter,
    /// Upstream histogram encoding.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Label => "label",
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One field of a table.
#[derive(Debug)]
pub struct FieldDef {
    /// Field name.
    pub name: &'static str,
    /// Field type.
    pub kind: Kind,
    /// Description for `# HELP`.
    pub description: &'static str,
}

const fn f(name: &'static str, kind: Kind, description: &'static str) -> FieldDef {
    FieldDef {
        name,
        kind,
        description,
    }
}

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
    /// Metric fields, after the common key fields and the `comm` label.
    pub metrics: &'static [FieldDef],
    /// Metric values of an entry, in `metrics` order.
    pub values: fn(&ConnEntry) -> Vec<Value>,
}

/// The key fields and the label every connection table starts with.
pub const KEY_FIELDS: &[FieldDef] = &[
    f(
        "tgid",
        Kind::Key,
        "process id of the socket owner (0 when unknown)",
    ),
    f("role", Kind::Key, "client (connected) or server (accepted)"),
    f("client_ip", Kind::Key, "address of the connecting end"),
    f("server_ip", Kind::Key, "address of the accepting end"),
    f(
        "client_port",
        Kind::Key,
        "port of the connecting end (0 unless -c 1)",
    ),
    f("server_port", Kind::Key, "port of the accepting end"),
    f("protocol", Kind::Key, "address family: 2 IPv4, 10 IPv6"),
    f("comm", Kind::Label, "process name of the socket owner"),
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
            f("link_count", Kind::Gauge, "live connections of the key at the end of the period"),
            f("opens", Kind::Counter, "transitions to ESTABLISHED"),
            f("closes", Kind::Counter, "transitions to CLOSE (all kinds below)"),
            f("active_closes", Kind::Counter, "closed from FIN_WAIT1/FIN_WAIT2/CLOSING: the local end closed first"),
            f("passive_closes", Kind::Counter, "closed from LAST_ACK: the peer closed first"),
            f("aborted_closes", Kind::Counter, "closed from ESTABLISHED/CLOSE_WAIT: reset, abort or timeout"),
            f("open_failed", Kind::Counter, "closed from SYN_SENT/SYN_RECV: never established"),
            f("estab_latency", Kind::Histogram, "connection establish latency, us (client: SYN sent to ESTABLISHED; server: SYN-ACK round trip)"),
        ],
        values: |e| {
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
            f("rx_bytes", Kind::Counter, "payload bytes received"),
            f("tx_bytes", Kind::Counter, "payload bytes sent, retransmissions excluded"),
            f("segs_in", Kind::Counter, "segments received"),
            f("segs_out", Kind::Counter, "segments sent"),
        ],
        values: |e| {
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
            f("srtt", Kind::Gauge, "smoothed RTT, us (mean over the key's connections)"),
            f("srtt_max", Kind::Gauge, "largest smoothed RTT of the key's connections, us"),
            f("rcv_rtt", Kind::Gauge, "receive-side RTT estimate, us (mean)"),
        ],
        values: |e| {
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
            f("snd_cwnd", Kind::Gauge, "congestion window, segments (mean over live connections)"),
            f("snd_wnd", Kind::Gauge, "peer's receive window, bytes (mean)"),
            f("rcv_wnd", Kind::Gauge, "advertised receive window, bytes (mean)"),
            f("notsent_bytes", Kind::Gauge, "bytes written but not yet sent (mean)"),
            f("notack_bytes", Kind::Gauge, "bytes sent but not yet acknowledged (mean)"),
            f("reordering", Kind::Gauge, "reordering metric, segments (mean)"),
            f("zero_snd_wnd_count", Kind::Counter, "times the peer closed its window (zero window received)"),
            f("zero_rcv_wnd_count", Kind::Counter, "times a zero window was advertised to the peer"),
        ],
        values: |e| {
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
            f("retran_packets", Kind::Counter, "retransmitted segments"),
            f("send_rsts", Kind::Counter, "resets sent"),
            f("receive_rsts", Kind::Counter, "resets received"),
        ],
        values: |e| {
            vec![
                num(e.counters[C_RETRANS]),
                num(e.counters[C_RST_SENT]),
                num(e.counters[C_RST_RECV]),
            ]
        },
    },
    TableDef {
        name: "tcp_srtt",
        bit: Some(BIT_SRTT),
        metrics: &[
            f("syn_srtt", Kind::Gauge, "mean establish latency of the connections established in the period, us"),
            f("syn_srtt_max", Kind::Gauge, "largest establish latency in the period, us"),
        ],
        values: |e| vec![opt(e.gauges.syn_srtt_us), opt(e.gauges.syn_srtt_max_us)],
    },
];

/// Fields of the loss-counter table (written by `probe_sdk::bpf::write_loss_record`).
pub const STATS_FIELDS: &[FieldDef] = &[
    f("probe", Kind::Key, "probe name"),
    f(
        "events",
        Kind::Counter,
        "kernel events accounted (state changes, resets, zero windows)",
    ),
    f(
        "lost_events",
        Kind::Counter,
        "events lost (socket storage could not be allocated)",
    ),
    f(
        "map_full",
        Kind::Counter,
        "connection deltas dropped because the key cap (-M) was reached",
    ),
];

/// Whether `table` is enabled by the `-P` bitmask.
pub fn enabled(table: &TableDef, probe_bits: u32) -> bool {
    table.bit.is_none_or(|b| probe_bits & b != 0)
}

/// Writes one record per enabled table for `key`.
pub fn write_entry<W: Write>(
    out: &mut RecordWriter<W>,
    probe_bits: u32,
    key: &ConnKey,
    entry: &ConnEntry,
) -> io::Result<()> {
    let comm = (!entry.comm.is_empty()).then_some(entry.comm.as_str());
    for table in TABLES.iter().filter(|t| enabled(t, probe_bits)) {
        let mut rec = out
            .record(table.name)
            .field(&key.tgid)
            .field(key.role.as_str())
            .field(&key.client_ip.to_string())
            .field(&key.server_ip.to_string())
            .field(&key.client_port)
            .field(&key.server_port)
            .field(&key.protocol())
            .field(&comm);
        for v in (table.values)(entry) {
            rec = match v {
                Value::Num(n) => rec.field(&n),
                Value::Text(t) => rec.field(&t),
            };
        }
        rec.end()?;
    }
    Ok(())
}

fn meta_table(out: &mut String, name: &str, entity: &str, fields: &[&FieldDef]) {
    let _ = writeln!(out, "    {{");
    let _ = writeln!(out, "        table_name: \"{name}\",");
    let _ = writeln!(out, "        entity_name: \"{entity}\",");
    let _ = writeln!(out, "        fields:");
    let _ = writeln!(out, "        (");
    for (i, fd) in fields.iter().enumerate() {
        let sep = if i + 1 < fields.len() { "," } else { "" };
        let _ = writeln!(
            out,
            "            {{ description: \"{}\", type: \"{}\", name: \"{}\" }}{sep}",
            fd.description,
            fd.kind.as_str(),
            fd.name
        );
    }
    let _ = writeln!(out, "        )");
    let _ = write!(out, "    }}");
}

/// The `.meta` file describing every table this probe writes.
pub fn meta_text() -> String {
    let mut out = String::from("version = \"1.0.0\"\n\nmeasurements:\n(\n");
    for t in TABLES {
        let fields: Vec<&FieldDef> = KEY_FIELDS.iter().chain(t.metrics.iter()).collect();
        meta_table(&mut out, t.name, ENTITY, &fields);
        out.push_str(",\n");
    }
    let stats: Vec<&FieldDef> = STATS_FIELDS.iter().collect();
    meta_table(&mut out, STATS_TABLE, "bpf_probe", &stats);
    out.push_str("\n)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_key::Role;
    use crate::conn_table::{ConnTable, PeriodDelta};
    use std::net::{IpAddr, Ipv4Addr};

    fn sample_entry() -> (ConnKey, ConnEntry) {
        let key = ConnKey {
            tgid: 1234,
            role: Role::Client,
            client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            server_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            client_port: 0,
            server_port: 80,
        };
        let mut d = PeriodDelta {
            comm: "curl".into(),
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
        d.estab.counts[1] = 1;
        d.estab.sum = 70;
        d.estab.max = 70;
        let mut t = ConnTable::new(4, 4);
        t.apply([(key, d)]);
        let (k, e) = t.active()[0];
        (*k, e.clone())
    }

    fn render(bits: u32) -> String {
        let (k, e) = sample_entry();
        let mut w = RecordWriter::new(Vec::new());
        write_entry(&mut w, bits, &k, &e).unwrap();
        w.flush().unwrap();
        String::from_utf8(w.into_inner()).unwrap()
    }

    #[test]
    fn writes_upstream_style_records() {
        let out = render(u32::MAX);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), TABLES.len());
        assert_eq!(
            lines[1],
            "|tcp_tx_rx|1234|client|10.0.0.1|10.0.0.2|0|80|2|curl|100|200|3|4|"
        );
        assert_eq!(
            lines[2],
            "|tcp_rtt|1234|client|10.0.0.1|10.0.0.2|0|80|2|curl|30|30|0|"
        );
        assert_eq!(
            lines[4],
            "|tcp_abn|1234|client|10.0.0.1|10.0.0.2|0|80|2|curl|0|0|1|"
        );
        assert_eq!(
            lines[5],
            "|tcp_srtt|1234|client|10.0.0.1|10.0.0.2|0|80|2|curl|70|70|"
        );
        assert!(lines[0].starts_with(
            "|tcp_link|1234|client|10.0.0.1|10.0.0.2|0|80|2|curl|1|1|2|0|1|1|0|14 50 0 100 1 "
        ));
        // Window gauges come only from live samples: the sums are zero here, not absent.
        assert!(lines[3].starts_with("|tcp_windows|1234|client|"));
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
        let expected: Vec<(&str, &str, Vec<&FieldDef>)> = TABLES
            .iter()
            .map(|t| (t.name, ENTITY, KEY_FIELDS.iter().chain(t.metrics).collect()))
            .chain([(STATS_TABLE, "bpf_probe", STATS_FIELDS.iter().collect())])
            .collect();
        for (i, (name, entity, fields)) in expected.iter().enumerate() {
            let m = doc.lookup(&format!("measurements.[{i}]")).unwrap();
            assert_eq!(m.get("table_name").and_then(|n| n.as_str()), Some(*name));
            assert_eq!(m.get("entity_name").and_then(|n| n.as_str()), Some(*entity));
            for (j, fd) in fields.iter().enumerate() {
                let f = m.lookup(&format!("fields.[{j}]")).unwrap();
                assert_eq!(f.get("name").and_then(|n| n.as_str()), Some(fd.name));
                assert_eq!(
                    f.get("type").and_then(|n| n.as_str()),
                    Some(fd.kind.as_str())
                );
                // Upstream limits: names 63, descriptions 255; the IMDB keeps 31 of a name.
                assert!(
                    fd.name.len() <= 31 && fd.description.len() <= 255,
                    "{}",
                    fd.name
                );
            }
            assert!(m.lookup(&format!("fields.[{}]", fields.len())).is_none());
        }
        assert!(doc
            .lookup(&format!("measurements.[{}]", expected.len()))
            .is_none());
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
