//! The control channel drives what l7probe traces: the process selection (applied in the
//! kernel: an unselected process's calls make no record at all), `l7_protocol`, and the
//! tables.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::*;

/// A tiny HTTP/1.1 server in a child process of its own (a `python3` one-liner), so it has a
/// pid of its own to select; returns it and its port.
fn http_server() -> (Server, u16) {
    let port = free_port();
    let child = std::process::Command::new(need("python3", "python3"))
        .arg("-c")
        .arg(format!(
            "import http.server\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   protocol_version = 'HTTP/1.1'\n\
             \x20   def do_GET(self):\n\
             \x20       self.send_response(200)\n\
             \x20       self.send_header('Content-Length', '2')\n\
             \x20       self.end_headers()\n\
             \x20       self.wfile.write(b'ok')\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
        ))
        .spawn()
        .unwrap();
    wait_port(port);
    (Server(child), port)
}

/// `n` GETs on one keep-alive connection.
fn gets(port: u16, n: usize) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        c.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"ok") {
            let k = c.read(&mut buf).unwrap();
            assert!(k > 0);
            got.extend_from_slice(&buf[..k]);
        }
    }
}

fn server_rows(records: &[Vec<String>], pid: u32) -> Vec<&Vec<String>> {
    records
        .iter()
        .filter(|r| r[0].starts_with("l7_") && r[0] != "l7_parse_stats" && r[1] == pid.to_string())
        .collect()
}

#[test]
fn an_include_snooper_traces_only_its_processes_in_the_kernel() {
    let _serial = serial();
    let (a, port_a) = http_server();
    let (b, port_b) = http_server();
    let (pa, pb) = (a.0.id(), b.0.id());
    let first = format!(r#"{{"snoop":{{"mode":"include","pids":[{pa}]}}}}"#);
    let probe = Probe::start(&["-t", "1"], Some(&first));
    probe.wait_log("control: snoop include 1 pid");
    let before = probe.records_for(1);
    let events0 = num(
        last(&before, "l7probe_bpf_stats", |_| true).unwrap(),
        "events",
    );
    gets(port_a, 5);
    gets(port_b, 7);
    thread::sleep(Duration::from_millis(200));
    let records = probe.records_for(2);
    let rpc = last(&records, "l7_rpc", |r| r[1] == pa.to_string()).expect("a row of the selected");
    assert_eq!(
        (num(rpc, "req_count"), num(rpc, "resp_count")),
        (5, 5),
        "{rpc:?}"
    );
    assert!(
        server_rows(&records, pb).is_empty(),
        "the unselected server was traced"
    );
    // In the kernel: 5 requests and 5 responses (a few records each: open, data, close) were
    // recorded, not the 7 of the other server nor this test's client calls.
    let events = num(
        last(&records, "l7probe_bpf_stats", |_| true).unwrap(),
        "events",
    ) - events0;
    assert!(
        (10..=20).contains(&events),
        "{events} records for 5 requests"
    );
}

#[test]
fn l7_protocol_limits_the_parsers() {
    let _serial = serial();
    let (a, port) = http_server();
    let first = format!(
        r#"{{"snoop":{{"mode":"include","pids":[{}]}},"params":{{"l7_protocol":["redis"]}}}}"#,
        a.0.id()
    );
    let mut probe = Probe::start(&["-t", "1"], Some(&first));
    probe.wait_log("protocols redis");
    gets(port, 3);
    thread::sleep(Duration::from_millis(200));
    let records = probe.records_for(2);
    let link = last(&records, "l7_link", |r| r[1] == a.0.id().to_string()).expect("its bytes");
    assert_eq!(field(link, "protocol"), "unknown", "{link:?}");
    assert!(last(&records, "l7_rpc", |r| r[1] == a.0.id().to_string()).is_none());
    // HTTP again, for connections from now on.
    probe.send(r#"{"params":{"l7_protocol":["http"]}}"#);
    probe.wait_log("protocols http");
    gets(port, 4);
    thread::sleep(Duration::from_millis(200));
    let records = probe.records_for(2);
    let rpc = last(&records, "l7_rpc", |r| r[1] == a.0.id().to_string()).expect("parsed");
    assert_eq!(num(rpc, "req_count"), 4, "{rpc:?}");
    probe.assert_alive();
}

#[test]
fn the_tables_follow_the_sub_probes() {
    let _serial = serial();
    let (a, port) = http_server();
    let pid = a.0.id();
    let first = format!(r#"{{"probe_bits":1,"snoop":{{"mode":"include","pids":[{pid}]}}}}"#);
    let mut probe = Probe::start(&["-t", "1"], Some(&first));
    probe.wait_log("tables 0x3 -> 0x1");
    gets(port, 2);
    thread::sleep(Duration::from_millis(200));
    let records = probe.records_for(2);
    assert!(last(&records, "l7_link", |r| r[1] == pid.to_string()).is_some());
    assert!(last(&records, "l7_rpc", |r| r[1] == pid.to_string()).is_none());
    probe.send(r#"{"probe_bits":2}"#);
    probe.wait_log("tables 0x1 -> 0x2");
    gets(port, 2);
    thread::sleep(Duration::from_millis(200));
    let records = probe.records_for(2);
    assert!(last(&records, "l7_link", |r| r[1] == pid.to_string()).is_none());
    let rpc = last(&records, "l7_rpc", |r| r[1] == pid.to_string()).expect("l7_rpc");
    // The requests made while l7_rpc was off were parsed too (the tables are only written).
    assert_eq!(num(rpc, "req_count"), 4, "{rpc:?}");
}
