//! The output tables and the run-time control declaration, defined once: the record writer and
//! the `.meta` text both come from here (a test keeps `endpoint.meta` equal to [`meta_text`]).

use std::io::{self, Write};

use probe_sdk::args::DEFAULT_PERIOD_SECS;
use probe_sdk::bpf;
use probe_sdk::decl::{self, Declaration, ParamValue, SnooperKind, SubProbe};
use probe_sdk::meta::{self, Field, Table};
use probe_sdk::record::RecordWriter;

use crate::state::{TcpKey, TcpRow, UdpKey, UdpRow, N_TCP, N_UDP};

/// Table of the TCP endpoints (upstream HEAD's name).
pub const TCP_TABLE: &str = "endpoint_tcp";
/// Entity of the TCP endpoints: v2023's `endpoint`, so the Prometheus names are the ones
/// gala-anteater reads (`gala_gopher_endpoint_retran_synacks`); HEAD's entity `endpoint_tcp`
/// would make them `gala_gopher_endpoint_tcp_*`, which no consumer reads.
pub const TCP_ENTITY: &str = "endpoint";
/// Table and entity of the UDP endpoints (upstream HEAD's).
pub const UDP_TABLE: &str = "endpoint_udp";
/// Loss-counter table (`<probe>_bpf_stats`, entity `bpf_probe`).
pub const STATS_TABLE: &str = "endpoint_bpf_stats";

/// `-P` bit of endpoint_tcp (sub-probe `tcp_socket`).
pub const BIT_TCP: u32 = 1;
/// `-P` bit of endpoint_udp (sub-probe `udp_socket`).
pub const BIT_UDP: u32 = 2;
/// Ring buffer size when `ringbuf_map_size` is not given, MiB.
pub const DEFAULT_RING_MIB: u32 = 2;

/// Key fields of endpoint_tcp: upstream HEAD's, in its order.
pub const TCP_KEYS: &[Field] = &[
    Field::key("tgid", "process id of the socket owner (0 when unknown)"),
    Field::key("comm", "process name of the socket owner (unknown when the owner is unknown)"),
    Field::key("role", "server (a listening socket) or client (connects)"),
    Field::key(
        "client_ip",
        "client: the local address; server: the unspecified address of the family (0.0.0.0 or ::), as a server row sums every peer of the listener",
    ),
    Field::key(
        "toa_client_ip",
        "client address before TOA; TCP option address is not parsed here, so always client_ip",
    ),
    Field::key("server_ip", "server: the listen address; client: the address connected to"),
    Field::key("server_port", "server: the listen port; client: the port connected to"),
    Field::key("protocol", "address family: 2 IPv4, 10 IPv6"),
];

/// Running totals of endpoint_tcp, in [`TcpRow::counters`] order (all `period: "delta"`).
pub const TCP_COUNTERS: [Field; N_TCP] = [
    Field::per_period("listendrop", "listen drops: the listener's sk_drops (tcp_listendrop(); TcpExt ListenDrops)"),
    Field::per_period("accept_overflow", "SYNs and handshake ACKs dropped because the accept queue was full (TcpExt ListenOverflows)"),
    Field::per_period("syn_overflow", "SYNs dropped while the accept queue was not full: SYN queue full without syncookies (TcpExt TCPReqQFullDrop)"),
    Field::per_period("passive_open", "child sockets created (Tcp PassiveOpens), counted when they reach ESTABLISHED or close from SYN_RECV"),
    Field::per_period("passive_open_failed", "child sockets closed before reaching ESTABLISHED"),
    Field::per_period("retran_synacks", "SYN-ACKs retransmitted (TcpExt TCPSynRetrans share of the server)"),
    Field::per_period("retran_syn", "SYNs retransmitted by connecting sockets"),
    Field::per_period("req_drops", "listen drops that are neither accept nor SYN queue overflows (listendrop - accept_overflow - syn_overflow)"),
    Field::per_period("active_open", "connects started: SYN_SENT transitions (Tcp ActiveOpens)"),
    Field::per_period("active_open_failed", "connects that ended in CLOSE from SYN_SENT (Tcp AttemptFails share of the client)"),
    Field::per_period("syn_sent", "SYNs sent: active_open + retran_syn"),
    Field::per_period("syn_drop", "SYNs of connecting sockets freed by the local stack (kfree_skb, e.g. neighbour failure)"),
    Field::per_period("synack_sent", "SYN-ACKs sent: SYNs a listener answered plus retran_synacks"),
    Field::per_period("active_open_refused", "connects refused: sk_err ECONNREFUSED (RST to the SYN)"),
    Field::per_period("active_open_timeout", "connects timed out: sk_err ETIMEDOUT (SYN retries or TCP_USER_TIMEOUT exhausted)"),
    Field::per_period("active_open_unreach", "connects failed with sk_err EHOSTUNREACH or ENETUNREACH (ICMP unreachable)"),
    Field::per_period("listen_drop_backlog", "packets to the listener dropped with kernel drop reason SOCKET_BACKLOG"),
    Field::per_period("listen_drop_other", "packets to the listener dropped with another kernel drop reason than SOCKET_BACKLOG or TCP_LISTEN_OVERFLOW"),
];

/// Gauges and the histogram of endpoint_tcp, after the counters.
pub const TCP_TAIL: &[Field] = &[
    Field::gauge("accept_queue", "server: connections waiting in the accept queue at the period's end (sk_ack_backlog, summed over the row's listeners)"),
    Field::gauge("accept_queue_max", "server: accept queue limit (sk_max_ack_backlog, the listen() backlog, summed over the row's listeners)"),
    Field::histogram("estab_latency", "connection establish latency, us (client: SYN_SENT to ESTABLISHED; server: the SYN-ACK round trip)"),
];

/// Key fields of endpoint_udp: upstream HEAD's.
pub const UDP_KEYS: &[Field] = &[
    Field::key("tgid", "process id of the socket owner (0 when unknown)"),
    Field::key("local_ip", "local address"),
    Field::key("local_port", "local port"),
    Field::key(
        "remote_ip",
        "connected peer address (unspecified when not connected)",
    ),
    Field::key("remote_port", "connected peer port (0 when not connected)"),
    Field::key("protocol", "address family: 2 IPv4, 10 IPv6"),
];

/// Running totals of endpoint_udp, in [`UdpRow::counters`] order.
pub const UDP_COUNTERS: [Field; N_UDP] = [
    Field::per_period("udp_rcv_drops", "datagrams dropped on receive: the socket's sk_drops (Udp RcvbufErrors + MemErrors + InCsumErrors share)"),
    Field::per_period("bind_sends", "payload bytes sent"),
    Field::per_period("bind_rcvs", "payload bytes received (read by the application)"),
    Field::per_period("sends", "datagrams sent"),
    Field::per_period("rcvs", "datagrams received (read by the application)"),
    Field::per_period("send_errors", "sendmsg calls that failed"),
    Field::per_period("rcvbuf_errors", "datagrams dropped because the receive buffer was full (Udp RcvbufErrors)"),
    Field::per_period("rcv_mem_errors", "datagrams dropped for lack of memory (Udp MemErrors)"),
];

/// What endpoint declares about its run-time control (REST name `socket`).
///
/// | sub-probe | bits | table |
/// |---|---|---|
/// | `tcp_socket` | 1 | `endpoint_tcp` |
/// | `udp_socket` | 2 | `endpoint_udp` |
///
/// `endpoint_bpf_stats` is always written. Params: `report_period` (`-t`, default 5 s),
/// `ringbuf_map_size` (MiB, default 2, read at start). Every
/// snooper kind is honoured: rows are written only for selected owning processes.
pub fn declaration() -> Declaration {
    Declaration {
        rest_name: Some("socket".to_string()),
        reload: true,
        snoopers: SnooperKind::ALL.to_vec(),
        sub_probes: vec![
            SubProbe::new("tcp_socket", BIT_TCP),
            SubProbe::new("udp_socket", BIT_UDP),
        ],
        params: vec![
            decl::standard("report_period")
                .expect("a param name upstream has")
                .with_default(ParamValue::Int(i64::from(DEFAULT_PERIOD_SECS))),
            // Sizes the ring buffer at start (the first control message); upstream's
            // "changeable only while stopped".
            decl::standard("ringbuf_map_size")
                .expect("a param name upstream has")
                .with_default(ParamValue::Int(i64::from(DEFAULT_RING_MIB))),
        ],
    }
}

/// Writes the endpoint_tcp record of `key`.
pub fn write_tcp<W: Write>(
    out: &mut RecordWriter<W>,
    key: &TcpKey,
    row: &TcpRow,
) -> io::Result<()> {
    let client_ip = key.client_ip.to_string();
    let mut rec = out
        .record(TCP_TABLE)
        .field(&key.tgid)
        .field(key.comm.as_str())
        .field(key.role.as_str())
        .field(&client_ip)
        .field(&client_ip)
        .field(&key.server_ip.to_string())
        .field(&key.server_port)
        .field(&key.family);
    for c in &row.counters {
        rec = rec.field(c);
    }
    rec.field(&row.accept_queue)
        .field(&row.accept_queue_max)
        .field(&row.estab.encode())
        .end()
}

/// Writes the endpoint_udp record of `key`.
pub fn write_udp<W: Write>(
    out: &mut RecordWriter<W>,
    key: &UdpKey,
    row: &UdpRow,
) -> io::Result<()> {
    let mut rec = out
        .record(UDP_TABLE)
        .field(&key.tgid)
        .field(&key.local_ip.to_string())
        .field(&key.local_port)
        .field(&key.remote_ip.to_string())
        .field(&key.remote_port)
        .field(&key.family);
    for c in &row.counters {
        rec = rec.field(c);
    }
    rec.end()
}

/// Every table of the `.meta` file, in order.
pub fn meta_tables() -> Vec<Table> {
    vec![
        Table::new(TCP_TABLE, TCP_ENTITY, &[TCP_KEYS, &TCP_COUNTERS, TCP_TAIL]),
        Table::new(UDP_TABLE, UDP_TABLE, &[UDP_KEYS, &UDP_COUNTERS]),
        bpf::loss_table(
            STATS_TABLE,
            "kernel records produced (connect, listen and failure events)",
            "events lost (ring buffer full, or a program run skipped by the kernel)",
            "listen addresses, UDP sockets, pending connects or rows not tracked because a cap (-M) was reached",
        ),
    ]
}

/// The `.meta` file (`endpoint --print-meta`): every table, then the control declaration.
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
    use crate::state::Role;
    use probe_sdk::meta::FieldKind;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn head_names_and_keys() {
        let tables = meta_tables();
        let keys = |t: &Table| -> Vec<&str> {
            t.fields
                .iter()
                .filter(|f| f.kind == FieldKind::Key)
                .map(|f| f.name)
                .collect()
        };
        assert_eq!(
            keys(&tables[0]),
            [
                "tgid",
                "comm",
                "role",
                "client_ip",
                "toa_client_ip",
                "server_ip",
                "server_port",
                "protocol"
            ]
        );
        assert_eq!(
            keys(&tables[1]),
            [
                "tgid",
                "local_ip",
                "local_port",
                "remote_ip",
                "remote_port",
                "protocol"
            ]
        );
        let names: Vec<&str> = tables[0].fields.iter().map(|f| f.name).collect();
        for head in [
            "listendrop",
            "accept_overflow",
            "syn_overflow",
            "passive_open",
            "passive_open_failed",
            "retran_synacks",
            "retran_syn",
            "req_drops",
            "active_open",
            "active_open_failed",
            "syn_sent",
            "syn_drop",
            "synack_sent",
            "estab_latency",
        ] {
            assert!(names.contains(&head), "{head}");
        }
        let udp: Vec<&str> = tables[1].fields.iter().map(|f| f.name).collect();
        for head in ["udp_rcv_drops", "bind_sends", "bind_rcvs"] {
            assert!(udp.contains(&head), "{head}");
        }
        assert!(TCP_COUNTERS
            .iter()
            .chain(UDP_COUNTERS.iter())
            .all(|f| f.per_period));
        assert_eq!(meta::check(&tables), Vec::<String>::new());
    }

    #[test]
    fn records_match_the_declared_width() {
        let key = TcpKey {
            tgid: 7,
            comm: "srv".into(),
            role: Role::Server,
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            server_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_port: 80,
            family: 2,
        };
        let mut row = TcpRow::default();
        row.counters[0] = 3;
        row.accept_queue = Some(2);
        row.accept_queue_max = Some(1);
        let mut w = RecordWriter::new(Vec::new());
        write_tcp(&mut w, &key, &row).unwrap();
        let ukey = UdpKey {
            tgid: 7,
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            local_port: 53,
            remote_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            remote_port: 0,
            family: 2,
        };
        write_udp(&mut w, &ukey, &UdpRow::default()).unwrap();
        w.flush().unwrap();
        let out = String::from_utf8(w.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("|endpoint_tcp|7|srv|server|0.0.0.0|0.0.0.0|127.0.0.1|80|2|3|0|"),
            "{out}"
        );
        for (line, t) in lines.iter().zip(meta_tables().iter()) {
            assert_eq!(line.matches('|').count() - 2, t.width(), "{line}");
        }
    }

    #[test]
    fn declaration_is_valid() {
        let d = declaration();
        d.validate().expect("valid declaration");
        assert_eq!(d.rest_name.as_deref(), Some("socket"));
        assert!(d.reload);
        assert_eq!(d.snoopers, SnooperKind::ALL);
        assert_eq!(d.sub_probe_bits(&["tcp_socket".into()]), Ok(BIT_TCP));
        assert_eq!(d.sub_probe_bits(&["udp_socket".into()]), Ok(BIT_UDP));
        assert_eq!(d.defaults()["report_period"], ParamValue::Int(5));
        let doc = gala_libconfig::parse_str(&meta_text(), std::path::Path::new("endpoint.meta"))
            .expect("valid libconfig");
        assert_eq!(Declaration::from_node(&doc), Ok(Some(declaration())));
    }

    #[test]
    fn committed_meta_file_is_current() {
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/endpoint.meta"))
                .expect("probes/endpoint/endpoint.meta");
        assert_eq!(
            committed,
            meta_text(),
            "regenerate with: endpoint --print-meta > probes/endpoint/endpoint.meta"
        );
    }
}
