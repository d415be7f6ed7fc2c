//! DNS over UDP (and over TCP, dig +tcp) through a real dnsmasq (Debian package) on loopback, queried by a real dig
//! (bind9-dnsutils) and by python clients using unconnected (sendto/recvfrom) and connected
//! (send/recv) sockets: requests per qtype are exact on both ends, NXDOMAIN is an error blamed
//! on the client, and nothing is misparsed.

mod common;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A dnsmasq on 127.0.0.1:`port` (UDP) answering for `*.test` only, no system configuration.
struct Dnsmasq {
    server: Server,
    _dir: tempfile::TempDir,
    port: u16,
}

/// A free UDP port on 127.0.0.1.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A DNS query for `name` of type `qtype`, id `id`.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend(id.to_be_bytes());
    m.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend(label.as_bytes());
    }
    m.extend([0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    m
}

fn dnsmasq() -> Dnsmasq {
    let bin = need("dnsmasq", "dnsmasq");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let port = free_udp_port();
    let child = Command::new(bin)
        .args([
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--keep-in-foreground",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--address=/a.test/10.0.0.1",
            "--address=/a.test/fd00::1",
            "--txt-record=t.test,hello",
            "--local=/test/",
            "--log-facility=-",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--pid-file={d}/dnsmasq.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    // Ready when it answers (before the probe starts: not counted).
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    loop {
        sock.send_to(&query(1, "a.test", 1), ("127.0.0.1", port))
            .unwrap();
        if sock.recv_from(&mut buf).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dnsmasq does not answer on {port}"
        );
    }
    Dnsmasq {
        server,
        _dir: dir,
        port,
    }
}

/// The real python interpreter (not a pyenv shim: its pid must be the client's).
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 on PATH (Debian package python3)");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn api_row<'a>(records: &'a [Vec<String>], tgid: u32, role: &str, api: &str) -> &'a Vec<String> {
    last(records, "l7_rpc_api", |r| {
        r[1] == tgid.to_string() && r[6] == role && field(r, "api") == api
    })
    .unwrap_or_else(|| {
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r[1] == tgid.to_string())
            .collect();
        panic!("no {role} row of {tgid} for {api}; its rows: {mine:?}")
    })
}

/// (req_count, resp_count, err_count, client_err_count) of an l7_rpc_api row.
fn counts(r: &[String]) -> (u64, u64, u64, u64) {
    (
        num(r, "req_count"),
        num(r, "resp_count"),
        num(r, "err_count"),
        num(r, "client_err_count"),
    )
}

/// The l7_rpc row of `tgid` in `role` towards `port`.
fn rpc_row<'a>(records: &'a [Vec<String>], tgid: u32, role: &str, port: u16) -> &'a Vec<String> {
    let r = last(records, "l7_rpc", |r| {
        r[1] == tgid.to_string() && r[6] == role && r[4] == port.to_string()
    })
    .unwrap_or_else(|| panic!("no l7_rpc {role} row of {tgid}"));
    assert_eq!(field(r, "protocol"), "dns", "{r:?}");
    assert_eq!(field(r, "l4_role"), "udp", "{r:?}");
    assert_eq!(field(r, "server_ip"), "127.0.0.1", "{r:?}");
    r
}

/// Sums of (segs_sent, segs_recv, bytes_sent, bytes_recv) over the newest l7_link row of each
/// key of `tgid` (whatever protocol or role the probe gave them).
fn link_sums(records: &[Vec<String>], tgid: u32) -> (u64, u64, u64, u64) {
    let mut rows = std::collections::BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r[0] == "l7_link" && r[1] == tgid.to_string())
    {
        rows.insert(r[1..=KEYS].to_vec(), r);
    }
    rows.values().fold((0, 0, 0, 0), |a, r| {
        (
            a.0 + num(r, "segs_sent"),
            a.1 + num(r, "segs_recv"),
            a.2 + num(r, "bytes_sent"),
            a.3 + num(r, "bytes_recv"),
        )
    })
}

fn assert_clean(records: &[Vec<String>]) {
    let stats = last(records, "l7_parse_stats", |_| true).unwrap();
    for f in [
        "malformed",
        "too_long",
        "desynchronised",
        "unmatched_response",
        "bad_records",
    ] {
        assert_eq!(num(stats, f), 0, "{f}: {stats:?}");
    }
    let loss = last(records, "l7probe_bpf_stats", |_| true).unwrap();
    assert_eq!(loss[3], "0", "{loss:?}");
}

#[test]
fn dnsmasq_and_dig_queries_per_qtype_are_exact() {
    let _serial = serial();
    let dig = need("dig", "bind9-dnsutils");
    let dns = dnsmasq();
    let server = dns.server.0.id();
    let probe = Probe::start(&["-t", "1"], None);
    let port = dns.port.to_string();
    // One dig, five queries: a.test A twice, a.test AAAA, t.test TXT, nope.test A (NXDOMAIN).
    let (client, records) = during(&probe, || {
        let child = Command::new(&dig)
            .args([
                "@127.0.0.1",
                "-p",
                &port,
                "+tries=1",
                "+time=5",
                "+nocookie",
            ])
            .args(["a.test", "A", "a.test", "A", "a.test", "AAAA"])
            .args(["t.test", "TXT", "nope.test", "A"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "dig failed");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(text.matches("status: NOERROR").count(), 4, "{text}");
        assert_eq!(text.matches("status: NXDOMAIN").count(), 1, "{text}");
        pid
    });

    // Every datagram was seen, whichever row it went to: 5 queries in, 5 answers out.
    let (sent, recv, bytes_sent, bytes_recv) = link_sums(&records, server);
    assert_eq!((sent, recv), (5, 5), "dnsmasq's datagrams");
    let d = link_sums(&records, client);
    assert_eq!((d.0, d.1), (5, 5), "dig's datagrams");
    assert_eq!(
        (d.2, d.3),
        (bytes_recv, bytes_sent),
        "dig's bytes are dnsmasq's"
    );
    // dnsmasq: the server end.
    let rpc = rpc_row(&records, server, "server", dns.port);
    assert_eq!(field(rpc, "comm"), "dnsmasq");
    assert_eq!(num(rpc, "req_count"), 5, "{rpc:?}");
    assert_eq!(num(rpc, "resp_count"), 5, "{rpc:?}");
    assert_eq!(num(rpc, "err_count"), 1, "{rpc:?}");
    assert_eq!(hist_count(&field(rpc, "latency")), 5, "{rpc:?}");
    let a = api_row(&records, server, "server", "A");
    assert_eq!(counts(a), (3, 3, 1, 1), "{a:?}");
    assert_eq!(num(a, "server_err_count"), 0, "{a:?}");
    let aaaa = api_row(&records, server, "server", "AAAA");
    assert_eq!(counts(aaaa), (1, 1, 0, 0), "{aaaa:?}");
    let txt = api_row(&records, server, "server", "TXT");
    assert_eq!(counts(txt), (1, 1, 0, 0), "{txt:?}");
    let link = last(&records, "l7_link", |r| {
        r[1] == server.to_string() && r[4] == port
    })
    .expect("an l7_link row of dnsmasq");
    assert_eq!(field(link, "protocol"), "dns", "{link:?}");
    assert_eq!(
        (num(link, "segs_recv"), num(link, "segs_sent")),
        (5, 5),
        "{link:?}"
    );

    assert_clean(&records);

    // dig: the client end of the same queries, sent with sendmmsg(2) (the probe finds each
    // message of the vector in turn).
    let c = rpc_row(&records, client, "client", dns.port);
    assert_eq!((num(c, "req_count"), num(c, "resp_count")), (5, 5), "{c:?}");
    assert_eq!(num(c, "err_count"), 1, "{c:?}");
    let a = api_row(&records, client, "client", "A");
    assert_eq!(counts(a), (3, 3, 1, 1), "{a:?}");
    let aaaa = api_row(&records, client, "client", "AAAA");
    assert_eq!(counts(aaaa), (1, 1, 0, 0), "{aaaa:?}");
    let txt = api_row(&records, client, "client", "TXT");
    assert_eq!(counts(txt), (1, 1, 0, 0), "{txt:?}");
}

#[test]
fn dig_over_tcp_is_framed_and_parsed() {
    let _serial = serial();
    let dig = need("dig", "bind9-dnsutils");
    let dns = dnsmasq();
    let probe = Probe::start(&["-t", "1"], None);
    let port = dns.port.to_string();
    let (client, records) = during(&probe, || {
        let child = Command::new(&dig)
            .args(["@127.0.0.1", "-p", &port, "+tcp", "+tries=1", "+time=5"])
            .args(["+nocookie", "a.test", "A", "a.test", "AAAA"])
            .args(["t.test", "TXT", "nope.test", "A"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "dig failed");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(text.matches("status: NOERROR").count(), 3, "{text}");
        assert_eq!(text.matches("status: NXDOMAIN").count(), 1, "{text}");
        pid
    });
    let c = last(&records, "l7_rpc", |r| {
        r[1] == client.to_string() && r[4] == port
    })
    .unwrap_or_else(|| {
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r[1] == client.to_string() || r[0] == "l7_parse_stats")
            .collect();
        panic!("no l7_rpc row of dig {client}: {mine:?}")
    });
    assert_eq!(field(c, "protocol"), "dns", "{c:?}");
    assert_eq!(field(c, "l4_role"), "tcp_client", "{c:?}");
    assert_eq!((num(c, "req_count"), num(c, "resp_count")), (4, 4), "{c:?}");
    assert_eq!(num(c, "err_count"), 1, "{c:?}");
    let a = api_row(&records, client, "client", "A");
    assert_eq!(counts(a), (2, 2, 1, 1), "{a:?}");
    let aaaa = api_row(&records, client, "client", "AAAA");
    assert_eq!(counts(aaaa), (1, 1, 0, 0), "{aaaa:?}");
    // dnsmasq answers TCP in forked children: its end, summed over them (newest row each).
    let mut server_rows = std::collections::BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r[0] == "l7_rpc" && field(r, "l4_role") == "tcp_server" && r[4] == port)
    {
        assert_eq!(field(r, "protocol"), "dns", "{r:?}");
        assert_eq!(field(r, "comm"), "dnsmasq", "{r:?}");
        server_rows.insert(r[1].clone(), r);
    }
    let served: u64 = server_rows.values().map(|r| num(r, "resp_count")).sum();
    assert_eq!(served, 4, "{server_rows:?}");
    assert_clean(&records);
}

/// Queries by hand, one datagram each: `sendto` mode uses an unconnected socket
/// (sendto/recvfrom), `connect` mode a connected one (send/recv).
const PY_CLIENT: &str = r#"
import socket, struct, sys
port, mode = int(sys.argv[1]), sys.argv[2]
def query(i, name, t):
    q = struct.pack('>HHHHHH', i, 0x0100, 1, 0, 0, 0)
    q += b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\0'
    return q + struct.pack('>HH', t, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
addr = ('127.0.0.1', port)
if mode == 'connect':
    s.connect(addr)
    qs = [('a.test', 28), ('a.test', 28), ('gone.test', 28)]
else:
    qs = [('a.test', 1), ('a.test', 1), ('t.test', 16), ('t.test', 16)]
for i, (name, t) in enumerate(qs):
    q = query(0x4000 + i, name, t)
    if mode == 'connect':
        s.send(q)
        r = s.recv(4096)
    else:
        s.sendto(q, addr)
        r, _ = s.recvfrom(4096)
    assert r[:2] == q[:2], r
"#;

#[test]
fn python_clients_unconnected_and_connected_sockets() {
    let _serial = serial();
    let py = python();
    let dns = dnsmasq();
    let server = dns.server.0.id();
    let probe = Probe::start(&["-t", "1"], None);
    let run = |mode: &str| {
        let child = Command::new(&py)
            .args(["-c", PY_CLIENT, &dns.port.to_string(), mode])
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "python {mode} client failed");
        pid
    };
    let ((unconnected, connected), records) = during(&probe, || (run("sendto"), run("connect")));

    // connected send/recv: 3 AAAA, one NXDOMAIN, on one flow.
    let c = rpc_row(&records, connected, "client", dns.port);
    assert_eq!(field(c, "client_ip"), "127.0.0.1", "{c:?}");
    assert_eq!((num(c, "req_count"), num(c, "resp_count")), (3, 3), "{c:?}");
    assert_eq!(num(c, "err_count"), 1, "{c:?}");
    assert_eq!(hist_count(&field(c, "latency")), 3, "{c:?}");
    let aaaa = api_row(&records, connected, "client", "AAAA");
    assert_eq!(counts(aaaa), (3, 3, 1, 1), "{aaaa:?}");
    assert_eq!(num(aaaa, "server_err_count"), 0, "{aaaa:?}");

    // sendto/recvfrom: 2 A, 2 TXT (the socket is bound to 0.0.0.0: client_ip says so).
    let c = rpc_row(&records, unconnected, "client", dns.port);
    assert_eq!(num(c, "req_count"), 4, "{c:?}");
    let a = api_row(&records, unconnected, "client", "A");
    assert_eq!(num(a, "req_count"), 2, "{a:?}");
    let txt = api_row(&records, unconnected, "client", "TXT");
    assert_eq!(num(txt, "req_count"), 2, "{txt:?}");

    // dnsmasq got 7 queries and sent 7 answers, whichever rows they went to.
    let (sent, recv, _, _) = link_sums(&records, server);
    assert_eq!((sent, recv), (7, 7), "dnsmasq's datagrams");
    assert_eq!(num(c, "resp_count"), 4, "{c:?}");
    assert_eq!(counts(a), (2, 2, 0, 0), "{a:?}");
    assert_eq!(counts(txt), (2, 2, 0, 0), "{txt:?}");
    let rpc = rpc_row(&records, server, "server", dns.port);
    assert_eq!(
        (num(rpc, "req_count"), num(rpc, "resp_count")),
        (7, 7),
        "{rpc:?}"
    );
    assert_eq!(num(rpc, "err_count"), 1, "{rpc:?}");
    let a = api_row(&records, server, "server", "A");
    assert_eq!(counts(a), (2, 2, 0, 0), "{a:?}");
    let txt = api_row(&records, server, "server", "TXT");
    assert_eq!(counts(txt), (2, 2, 0, 0), "{txt:?}");
    let aaaa = api_row(&records, server, "server", "AAAA");
    assert_eq!(counts(aaaa), (3, 3, 1, 1), "{aaaa:?}");
    assert_clean(&records);
}
