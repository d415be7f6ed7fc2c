//! Hostile and awkward traffic on loopback: bytes of no protocol, a 1 GB request body, 100 000
//! distinct URL paths, half-closed connections and pipelined requests. The probe must stay up
//! and small, count what it can exactly and put the rest where it says it does.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread;

use common::*;

/// A probe tracing only the processes `pids` (the rest of the machine would add its own
/// parse statistics), once it has applied that selection.
fn probe_for(pids: &[u32]) -> Probe {
    let line = format!(r#"{{"snoop":{{"mode":"include","pids":{pids:?}}}}}"#);
    let probe = Probe::start(&["-t", "1"], Some(&line));
    probe.wait_log(&format!("control: snoop include {} pid", pids.len()));
    probe
}

/// The newest row of `table` of `tgid` in `role` towards `port`.
fn row<'a>(
    records: &'a [Vec<String>],
    table: &str,
    tgid: u32,
    role: &str,
    port: u16,
) -> &'a Vec<String> {
    last(records, table, |r| {
        r[1] == tgid.to_string() && r[6] == role && r[4] == port.to_string()
    })
    .unwrap_or_else(|| {
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r[1] == tgid.to_string() && r[4] == port.to_string())
            .collect();
        panic!("no {table} {role} row of {tgid} on {port}; its rows: {mine:?}")
    })
}

/// The newest l7_rpc_api row of `tgid` in `role` towards `port` for `api`.
fn api_row<'a>(
    records: &'a [Vec<String>],
    tgid: u32,
    role: &str,
    port: u16,
    api: &str,
) -> &'a Vec<String> {
    last(records, "l7_rpc_api", |r| {
        r[1] == tgid.to_string()
            && r[6] == role
            && r[4] == port.to_string()
            && field(r, "api") == api
    })
    .unwrap_or_else(|| panic!("no {role} row of {tgid} on {port} for {api}"))
}

/// (req_count, resp_count, err_count) of a row.
fn counts(r: &[String]) -> (u64, u64, u64) {
    (
        num(r, "req_count"),
        num(r, "resp_count"),
        num(r, "err_count"),
    )
}

fn assert_no_parse_errors(records: &[Vec<String>]) {
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

/// Reads an HTTP/1.x head (through the blank line) from `r`, byte by byte; None at EOF.
fn read_head(r: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}

fn content_length(head: &str) -> u64 {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// Bytes of no protocol: a fixed pseudo-random sequence starting with 0xff (no protocol's
/// first byte).
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    let mut v: Vec<u8> = (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect();
    v[0] = 0xff;
    v
}

#[test]
fn random_bytes_are_undetected_and_the_probe_survives() {
    let _serial = serial();
    let mut probe = probe_for(&[std::process::id()]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let me = std::process::id();
    let (_, records) = during(&probe, || {
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), 10_000);
            s.write_all(&noise(100, 7)).unwrap();
        });
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        for chunk in noise(10_000, 1).chunks(2_500) {
            c.write_all(chunk).unwrap();
        }
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 100);
        server.join().unwrap();
    });
    probe.assert_alive();
    // Both ends: bytes counted under protocol "unknown", no request made up.
    let s = row(&records, "l7_link", me, "server", port);
    assert_eq!(field(s, "protocol"), "unknown", "{s:?}");
    assert_eq!(
        (num(s, "bytes_recv"), num(s, "bytes_sent")),
        (10_000, 100),
        "{s:?}"
    );
    let c = row(&records, "l7_link", me, "client", port);
    assert_eq!(field(c, "protocol"), "unknown", "{c:?}");
    assert_eq!(
        (num(c, "bytes_sent"), num(c, "bytes_recv")),
        (10_000, 100),
        "{c:?}"
    );
    assert!(
        last(&records, "l7_rpc", |r| r[4] == port.to_string()).is_none(),
        "no l7_rpc row for noise"
    );
    let stats = last(&records, "l7_parse_stats", |_| true).unwrap();
    // The client's and the server's connection (the probe traces this process only).
    assert_eq!(num(stats, "undetected"), 2, "{stats:?}");
    assert_no_parse_errors(&records);
}

/// VmRSS of every l7probe child of this test process, KiB.
fn probe_rss_kib() -> Vec<u64> {
    children(std::process::id())
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "l7probe")
        })
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .collect()
}

#[test]
fn a_1_gb_request_body_is_one_request_and_the_probe_stays_small() {
    let _serial = serial();
    const BODY: u64 = 1 << 30;
    let mut probe = probe_for(&[std::process::id()]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let me = std::process::id();
    let max_rss = std::sync::atomic::AtomicU64::new(0);
    let (_, records) = during(&probe, || {
        let server = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::with_capacity(1 << 20, s.try_clone().unwrap());
            let head = read_head(&mut r).unwrap();
            let mut left = content_length(&head);
            assert_eq!(left, BODY);
            while left > 0 {
                let n = r.fill_buf().unwrap().len().min(left as usize);
                assert!(n > 0, "body cut short");
                r.consume(n);
                left -= n as u64;
            }
            (&s).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                .unwrap();
        });
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            c,
            "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {BODY}\r\n\r\n"
        )
        .unwrap();
        let chunk = vec![b'z'; 1 << 20];
        for i in 0..BODY / chunk.len() as u64 {
            c.write_all(&chunk).unwrap();
            if i % 64 == 0 {
                for kib in probe_rss_kib() {
                    max_rss.fetch_max(kib, Ordering::Relaxed);
                }
            }
        }
        let mut r = BufReader::new(c);
        let head = read_head(&mut r).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = vec![0; content_length(&head) as usize];
        r.read_exact(&mut body).unwrap();
        server.join().unwrap();
    });
    probe.assert_alive();
    for kib in probe_rss_kib() {
        max_rss.fetch_max(kib, Ordering::Relaxed);
    }
    let max_rss = max_rss.into_inner();
    assert!(max_rss > 0, "no l7probe child found");
    assert!(max_rss < 64 * 1024, "probe RSS {max_rss} KiB");

    // Nothing lost first (a ring buffer overflow would explain any count below).
    let loss = last(&records, "l7probe_bpf_stats", |_| true).unwrap();
    assert_eq!(loss[3], "0", "{loss:?}");
    let s = row(&records, "l7_rpc", me, "server", port);
    assert_eq!(counts(s), (1, 1, 0), "{s:?}");
    let api = api_row(&records, me, "server", port, "POST /upload");
    assert_eq!(counts(api), (1, 1, 0), "{api:?}");
    let c = row(&records, "l7_rpc", me, "client", port);
    assert_eq!(counts(c), (1, 1, 0), "{c:?}");
    let link = row(&records, "l7_link", me, "server", port);
    assert!(num(link, "bytes_recv") > BODY, "{link:?}");
    assert_no_parse_errors(&records);
}

/// Distinct paths sent by the child of `many_distinct_paths_are_capped_per_process`.
const PATHS: u32 = 100_000;

/// `/p/` and `i` in 6 letters (never an identifier: no digit).
fn letters_path(mut i: u32) -> String {
    let mut s = String::from("/p/");
    for _ in 0..6 {
        s.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
    }
    s
}

/// Run in a child process (its own tgid, so its own API budget): a server thread and a client
/// making `PATHS` keep-alive requests, one per write, each awaiting its response.
#[test]
#[ignore = "child process of many_distinct_paths_are_capped_per_process"]
fn distinct_paths_child() {
    if std::env::var_os("L7_PATHS_CHILD").is_none() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    println!("port {port}");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let server = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        while read_head(&mut r).is_some() {
            (&s).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        }
    });
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_nodelay(true).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    for i in 0..PATHS {
        let req = format!("GET {} HTTP/1.1\r\nHost: test\r\n\r\n", letters_path(i));
        (&c).write_all(req.as_bytes()).unwrap();
        let head = read_head(&mut r).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"));
    }
    c.shutdown(Shutdown::Both).unwrap();
    server.join().unwrap();
}

#[test]
fn many_distinct_paths_are_capped_per_process() {
    let _serial = serial();
    const CAP: u64 = 64; // tracker::Limits::default().max_apis_per_process
    let n = u64::from(PATHS);
    let me = std::process::id();
    let mut probe = probe_for(&[me]);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "distinct_paths_child",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env("L7_PATHS_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // libtest prints "test distinct_paths_child ... " on the same line.
    let mut line = String::new();
    let port: u16 = loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        if let Some((_, p)) = line.split_once("port ") {
            break p.trim().parse().unwrap();
        }
    };
    // Trace the child too, then let it start.
    probe.send(&format!(
        r#"{{"snoop":{{"mode":"include","pids":[{me},{pid}]}}}}"#
    ));
    probe.wait_log("control: snoop include 2 pids");
    let mut go = child.stdin.take().unwrap();
    let (_, records) = during(&probe, || {
        writeln!(go, "go").unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert!(child.wait().unwrap().success(), "child failed: {rest}");
    });

    for role in ["server", "client"] {
        let rpc = row(&records, "l7_rpc", pid, role, port);
        assert_eq!(counts(rpc), (n, n, 0), "{rpc:?}");
        let named: Vec<_> = records
            .iter()
            .filter(|r| {
                r[0] == "l7_rpc_api"
                    && r[1] == pid.to_string()
                    && r[6] == role
                    && field(r, "api") != "other"
            })
            .map(|r| field(r, "api"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(named.len() as u64, CAP, "{role}: {named:?}");
        // Client and server share the process's budget: the first CAP paths.
        for i in 0..CAP as u32 {
            let api = format!("GET {}", letters_path(i));
            assert!(named.contains(&api), "{role}: {api} not in {named:?}");
            assert_eq!(counts(api_row(&records, pid, role, port, &api)), (1, 1, 0));
        }
        let other = api_row(&records, pid, role, port, "other");
        assert_eq!(counts(other), (n - CAP, n - CAP, 0), "{other:?}");
    }
    let stats = last(&records, "l7_parse_stats", |_| true).unwrap();
    // Each request past the cap, once on each end.
    assert_eq!(num(stats, "api_overflow"), 2 * (n - CAP), "{stats:?}");
    assert_no_parse_errors(&records);
}

#[test]
fn half_closed_connections_count_request_and_response() {
    let _serial = serial();
    let probe = probe_for(&[std::process::id()]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let me = std::process::id();
    let paths = ["/half", "/half", "/eof"];
    let (_, records) = during(&probe, || {
        let server = thread::spawn(move || {
            for _ in 0..3 {
                let (mut s, _) = listener.accept().unwrap();
                // Read the whole request, up to the client's FIN; then answer and close.
                let mut req = String::new();
                s.read_to_string(&mut req).unwrap();
                let resp: &[u8] = if req.starts_with("GET /eof") {
                    // No length: the response ends with the connection.
                    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhalf\n"
                };
                s.write_all(resp).unwrap();
            }
        });
        for p in paths {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(c, "GET {p} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let mut resp = String::new();
            c.read_to_string(&mut resp).unwrap();
            assert!(resp.starts_with("HTTP/1."), "{resp}");
        }
        server.join().unwrap();
    });
    let stats = last(&records, "l7_parse_stats", |_| true).unwrap();
    // The kernel says the client's socket closed when the server's FIN arrives, before the
    // client has read the response still queued: its connection must outlive that.
    for role in ["server", "client"] {
        let rpc = row(&records, "l7_rpc", me, role, port);
        assert_eq!(counts(rpc), (3, 3, 0), "{rpc:?} {stats:?}");
        let half = api_row(&records, me, role, port, "GET /half");
        assert_eq!(counts(half), (2, 2, 0), "{half:?}");
        let eof = api_row(&records, me, role, port, "GET /eof");
        assert_eq!(counts(eof), (1, 1, 0), "{eof:?}");
    }
    let client = row(&records, "l7_rpc", me, "client", port);
    assert_eq!(num(client, "req_count"), 3, "{client:?}");
    assert_eq!(num(stats, "unanswered"), 0, "{stats:?}");
    assert_no_parse_errors(&records);
}

/// An nginx on 127.0.0.1 with one worker.
fn nginx() -> Nginx {
    common::nginx(
        false,
        r#"location = /a { return 200 "a\n"; }
        location = /b { return 404; }
        location = /c { return 200 "c\n"; }"#,
    )
}

#[test]
fn three_pipelined_requests_in_one_write_to_nginx() {
    let _serial = serial();
    let n = nginx();
    let me = std::process::id();
    let probe = probe_for(&[me, n.worker]);
    let (_, records) = during(&probe, || {
        let mut c = TcpStream::connect(("127.0.0.1", n.port)).unwrap();
        c.write_all(
            b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /b HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 3, "{resp}");
    });
    // Matched in order: only /b's response (404) is an error.
    for (tgid, role) in [(n.worker, "server"), (me, "client")] {
        let rpc = row(&records, "l7_rpc", tgid, role, n.port);
        assert_eq!(counts(rpc), (3, 3, 1), "{rpc:?}");
        for (path, err) in [("/a", 0), ("/b", 1), ("/c", 0)] {
            let api = api_row(&records, tgid, role, n.port, &format!("GET {path}"));
            assert_eq!(counts(api), (1, 1, err), "{api:?}");
            assert_eq!(num(api, "client_err_count"), err, "{api:?}");
        }
    }
    assert_no_parse_errors(&records);
}
