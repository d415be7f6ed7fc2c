//! HTTP/1.x through a real nginx (Debian package) driven by a real curl, on loopback: request
//! counts per API are exact, 4xx/5xx are errors blamed on their side, the latency histogram
//! counts every response, and both ends (nginx's worker, curl) get their rows.

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::*;

/// The test's locations.
const LOCATIONS: &str = r#"location = /ok { return 200 "ok\n"; }
        location = /fail { return 500; }
        location /items/ { return 200 "item\n"; }
        location = /post { return 201 "created\n"; }"#;

fn nginx_with(tls: bool) -> Nginx {
    nginx(tls, LOCATIONS)
}

/// One curl, one keep-alive connection, the URLs in order; returns curl's pid.
fn curl(urls: &[String]) -> u32 {
    let mut cmd = Command::new(need("curl", "curl"));
    cmd.args(["-s", "-k"]);
    for u in urls {
        cmd.args(["-o", "/dev/null", u]);
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl failed");
    pid
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

#[test]
fn nginx_and_curl_requests_per_api_are_exact() {
    let _serial = serial();
    requests_per_api_are_exact(false);
}

#[test]
fn https_plain_text_through_the_libssl_hooks() {
    let _serial = serial();
    requests_per_api_are_exact(true);
}

#[test]
fn https_without_support_ssl_is_counted_as_unknown_bytes() {
    let _serial = serial();
    let n = nginx_with(true);
    let probe = Probe::start(&["-t", "1"], None);
    let base = format!("https://127.0.0.1:{}", n.port);
    curl(&[format!("{base}/ok"), format!("{base}/fail")]);
    thread::sleep(Duration::from_millis(300));
    let records = probe.records_for(2);
    let link = last(&records, "l7_link", |r| r[1] == n.worker.to_string())
        .expect("an l7_link row of the worker");
    assert_eq!(field(link, "protocol"), "unknown", "{link:?}");
    assert_eq!(field(link, "ssl"), "0", "{link:?}");
    assert!(num(link, "bytes_recv") > 0, "{link:?}");
    assert!(
        last(&records, "l7_rpc", |r| r[1] == n.worker.to_string()).is_none(),
        "no request can be seen in TLS bytes"
    );
}

fn requests_per_api_are_exact(tls: bool) {
    let n = nginx_with(tls);
    let first = tls.then_some(r#"{"params":{"support_ssl":1}}"#);
    let probe = Probe::start(&["-t", "1"], first);
    if tls {
        probe.wait_log("SSL hooks attached");
    }
    let scheme = if tls { "https" } else { "http" };
    let base = format!("{scheme}://127.0.0.1:{}", n.port);
    let mut urls = Vec::new();
    urls.extend((0..5).map(|_| format!("{base}/ok")));
    urls.extend((0..3).map(|i| format!("{base}/missing{i}.html")));
    urls.extend((0..2).map(|_| format!("{base}/fail")));
    urls.push(format!("{base}/items/123"));
    urls.push(format!("{base}/items/456?x=1"));
    urls.push(format!("{base}/big"));
    // curl exits at once: its rows are reported in one period, collected while it runs.
    let (client, records) = during(&probe, || curl(&urls));

    // nginx's worker: the server end.
    let rpc = last(&records, "l7_rpc", |r| {
        r[1] == n.worker.to_string() && r[4] == n.port.to_string()
    })
    .unwrap_or_else(|| panic!("no l7_rpc row of nginx worker {}", n.worker));
    assert_eq!(field(rpc, "l4_role"), "tcp_server");
    assert_eq!(field(rpc, "l7_role"), "server");
    assert_eq!(field(rpc, "protocol"), "http");
    assert_eq!(field(rpc, "comm"), "nginx");
    assert_eq!(field(rpc, "ssl"), if tls { "1" } else { "0" });
    assert_eq!(num(rpc, "req_count"), 13, "{rpc:?}");
    assert_eq!(num(rpc, "resp_count"), 13, "{rpc:?}");
    assert_eq!(num(rpc, "err_count"), 5, "{rpc:?}");
    assert_eq!(hist_count(&field(rpc, "latency")), 13, "{rpc:?}");

    let ok = api_row(&records, n.worker, "server", "GET /ok");
    assert_eq!(
        (num(ok, "req_count"), num(ok, "err_count")),
        (5, 0),
        "{ok:?}"
    );
    for i in 0..3 {
        let m = api_row(
            &records,
            n.worker,
            "server",
            &format!("GET /missing{i}.html"),
        );
        assert_eq!(num(m, "req_count"), 1, "{m:?}");
        assert_eq!(num(m, "client_err_count"), 1, "{m:?}");
        assert_eq!(num(m, "server_err_count"), 0, "{m:?}");
    }
    let fail = api_row(&records, n.worker, "server", "GET /fail");
    assert_eq!(
        (
            num(fail, "req_count"),
            num(fail, "err_count"),
            num(fail, "server_err_count")
        ),
        (2, 2, 2),
        "{fail:?}"
    );
    let items = api_row(&records, n.worker, "server", "GET /items/{id}");
    assert_eq!(num(items, "req_count"), 2, "{items:?}");
    let big = api_row(&records, n.worker, "server", "GET /big");
    assert_eq!(num(big, "resp_count"), 1, "{big:?}");

    // Bytes: the 300 000-byte file went out (plain: by sendfile, counted, not captured; TLS:
    // the plain text through SSL_write).
    let link = last(&records, "l7_link", |r| r[1] == n.worker.to_string())
        .expect("an l7_link row of the worker");
    assert!(num(link, "bytes_sent") > 300_000, "{link:?}");
    assert!(num(link, "segs_recv") >= 1, "{link:?}");

    // curl: the client end of the same requests.
    let c = last(&records, "l7_rpc", |r| r[1] == client.to_string())
        .unwrap_or_else(|| panic!("no l7_rpc row of curl {client}"));
    assert_eq!(field(c, "l7_role"), "client");
    assert_eq!(field(c, "server_port"), n.port.to_string());
    assert_eq!((num(c, "req_count"), num(c, "err_count")), (13, 5), "{c:?}");

    // Nothing was lost or misparsed.
    let stats = last(&records, "l7_parse_stats", |_| true).unwrap();
    for f in [
        "malformed",
        "too_long",
        "desynchronised",
        "unmatched_response",
        "bad_records",
    ] {
        assert_eq!(num(stats, f), 0, "{f}: {stats:?}");
    }
    let loss = last(&records, "l7probe_bpf_stats", |_| true).unwrap();
    assert_eq!(loss[3], "0", "{loss:?}");
}

/// The upper bounds of the buckets around the median of an encoded histogram
/// (`N b1 c1 ... bN cN sum max`, cumulative): (bound below the median's bucket, its bound).
fn median_bucket(v: &str) -> (u64, u64) {
    let t: Vec<u64> = v.split(' ').map(|x| x.parse().unwrap()).collect();
    let n = t[0] as usize;
    let total = t[2 * n];
    let mut below = 0;
    for i in 0..n {
        let (bound, cum) = (t[1 + 2 * i], t[2 + 2 * i]);
        if 2 * cum >= total {
            return (below, bound);
        }
        below = bound;
    }
    unreachable!("cumulative counts end at the total")
}

/// Parses wrk's `--latency` median ("50%   67.00us", "1.32ms").
fn wrk_median_us(out: &str) -> f64 {
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .unwrap_or_else(|| panic!("no median in wrk's output:\n{out}"))
        .trim();
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let n: f64 = num.parse().unwrap();
    match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => panic!("unit {unit} in {v}"),
    }
}

#[test]
fn wrk_load_is_counted_and_its_median_latency_agrees() {
    let _serial = serial();
    let n = nginx_with(false);
    let probe = Probe::start(&["-t", "1"], None);
    let wrk = Command::new(need("wrk", "wrk"))
        .args(["-t1", "-c4", "-d2s", "--latency"])
        .arg(format!("http://127.0.0.1:{}/ok", n.port))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The records while wrk runs and after it exits (an exited process's rows are reported
    // once more, then forgotten).
    let records = probe.records_for(4);
    let out = wrk.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let completed: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("wrk output:\n{text}"));
    assert!(completed > 1000, "{text}");
    // The server saw every completed request, and at most one more per connection (those
    // wrk sent as it stopped).
    let s = api_row(&records, n.worker, "server", "GET /ok");
    let req = num(s, "req_count");
    assert!(
        (completed..=completed + 4).contains(&req),
        "{req} vs {completed}: {s:?}"
    );
    assert_eq!(num(s, "resp_count"), req, "{s:?}");
    assert_eq!(hist_count(&field(s, "latency")), req, "{s:?}");
    assert_eq!(num(s, "err_count"), 0, "{s:?}");
    // wrk's own end: the same requests, its latency's median in (or next to) the bucket of
    // the median wrk measured.
    let c = last(&records, "l7_rpc_api", |r| {
        r[6] == "client" && r[4] == n.port.to_string() && field(r, "comm") == "wrk"
    })
    .unwrap_or_else(|| panic!("no client row of wrk"));
    let creq = num(c, "req_count");
    assert!(
        (completed..=completed + 4).contains(&creq),
        "{creq} vs {completed}"
    );
    assert!(num(c, "resp_count") >= completed, "{c:?}");
    let wrk_p50 = wrk_median_us(&text);
    let (lo, hi) = median_bucket(&field(c, "latency"));
    let bounds = probe_sdk_bounds();
    let i = bounds.iter().position(|b| *b == hi).unwrap();
    let (lo2, hi2) = (
        if i >= 2 { bounds[i - 2] } else { 0 },
        bounds.get(i + 1).copied().unwrap_or(u64::MAX),
    );
    assert!(
        (lo2 as f64) < wrk_p50 && wrk_p50 <= hi2 as f64,
        "wrk's median {wrk_p50} us, ours in ({lo}, {hi}]: {c:?}"
    );
}

/// The latency buckets' upper bounds, µs (probe_sdk::histogram::BOUNDS_US).
fn probe_sdk_bounds() -> Vec<u64> {
    vec![
        50,
        100,
        250,
        500,
        1_000,
        2_500,
        5_000,
        10_000,
        50_000,
        250_000,
        1_000_000,
        3_000_000,
        10_000_000,
        130_000_000,
    ]
}

#[test]
fn l7_rpc_trace_reports_each_request_once_and_latency_thr_keeps_errors() {
    let _serial = serial();
    let n = nginx_with(false);
    // Only the trace sub-probe (bit 4).
    let probe = Probe::start(&["-t", "1", "-P", "4"], None);
    let base = format!("http://127.0.0.1:{}", n.port);
    let mut urls: Vec<String> = (0..4).map(|_| format!("{base}/ok")).collect();
    urls.extend((0..2).map(|i| format!("{base}/missing{i}.html")));
    urls.push(format!("{base}/fail"));
    urls.push(format!("{base}/items/77"));
    let before_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let (client, records) = during(&probe, || curl(&urls));
    let after_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(
        last(&records, "l7_rpc", |_| true).is_none()
            && last(&records, "l7_link", |_| true).is_none(),
        "-P 4 writes the trace table only"
    );
    let spans: Vec<&Vec<String>> = records
        .iter()
        .filter(|r| r[0] == "l7_rpc_trace" && r[1] == n.worker.to_string())
        .collect();
    let got: Vec<(String, String, String)> = spans
        .iter()
        .map(|r| (field(r, "api"), field(r, "status"), field(r, "blame")))
        .collect();
    let want: Vec<(String, String, String)> = [
        ("GET /ok", "ok", ""),
        ("GET /ok", "ok", ""),
        ("GET /ok", "ok", ""),
        ("GET /ok", "ok", ""),
        ("GET /missing0.html", "404", "client"),
        ("GET /missing1.html", "404", "client"),
        ("GET /fail", "500", "server"),
        ("GET /items/{id}", "ok", ""),
    ]
    .iter()
    .map(|(a, s, b)| (a.to_string(), s.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "nginx's spans, in order");
    let mut ids = std::collections::HashSet::new();
    let mut starts = Vec::new();
    for r in &spans {
        assert_eq!(field(r, "l7_role"), "server", "{r:?}");
        assert_eq!(field(r, "comm"), "nginx", "{r:?}");
        assert_eq!(
            field(r, "error"),
            if field(r, "status") == "ok" { "0" } else { "1" }
        );
        assert!(
            ids.insert(field(r, "span_id")),
            "span ids are unique: {r:?}"
        );
        let start = num(r, "start_time");
        assert!(
            (before_us..=after_us).contains(&start),
            "{start} not in {before_us}..{after_us}"
        );
        assert!(num(r, "latency") < 1_000_000, "{r:?}");
        starts.push(start);
    }
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    // Keep-alive connections (nginx closes one after its 500): a connection id per client port.
    let pairs: std::collections::HashSet<(String, String)> = spans
        .iter()
        .map(|r| (field(r, "conn_id"), field(r, "client_port")))
        .collect();
    let conns: std::collections::HashSet<&String> = pairs.iter().map(|p| &p.0).collect();
    let ports: std::collections::HashSet<&String> = pairs.iter().map(|p| &p.1).collect();
    assert_eq!(
        (conns.len(), ports.len()),
        (pairs.len(), pairs.len()),
        "{spans:?}"
    );
    assert!(pairs.len() <= 2, "{spans:?}");
    // curl's end of the same requests.
    let curl_spans = records
        .iter()
        .filter(|r| r[0] == "l7_rpc_trace" && r[1] == client.to_string())
        .count();
    assert_eq!(curl_spans, 8);

    // latency_thr: successful requests faster than 1 s are no longer reported; errors are.
    let mut probe = probe;
    probe.send(r#"{"probe_bits":4,"params":{"latency_thr":1000}}"#);
    probe.wait_log("latency_thr 1000ms");
    let (_, records) = during(&probe, || curl(&urls));
    let statuses: Vec<String> = records
        .iter()
        .filter(|r| r[0] == "l7_rpc_trace" && r[1] == n.worker.to_string())
        .map(|r| field(r, "status"))
        .collect();
    assert_eq!(statuses, ["404", "404", "500"]);
    let stats = last(&records, "l7_parse_stats", |_| true).unwrap();
    assert_eq!(num(stats, "trace_dropped"), 0, "{stats:?}");
}

/// A client that moves between CPUs, writing each request in two halves from two CPUs (the
/// kernel side gathers each CPU's records in its own batch, sent at different times): user
/// space orders the records by time, so every request is parsed, exactly once, at both ends.
const HOPPING_CLIENT: &str = r#"
import os, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
cpus = sorted(os.sched_getaffinity(0))
assert len(cpus) >= 2, cpus
s = socket.create_connection(('127.0.0.1', port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = s.makefile('rb')
req = b'GET /ok HTTP/1.1\r\nHost: t\r\n\r\n'
for i in range(n):
    first, second = cpus[i % 2], cpus[(i + 1) % 2]
    os.sched_setaffinity(0, {first})
    s.sendall(req[:9])
    os.sched_setaffinity(0, {second})
    s.sendall(req[9:])
    length = 0
    while True:
        line = f.readline()
        assert line, 'closed'
        if line.lower().startswith(b'content-length:'):
            length = int(line.split(b':')[1])
        if line == b'\r\n':
            break
    assert f.read(length) == b'ok\n'
"#;

#[test]
fn a_client_moving_between_cpus_is_parsed_in_time_order() {
    let _serial = serial();
    const N: u64 = 300;
    let n = nginx_with(false);
    let probe = Probe::start(&["-t", "1"], None);
    let (client, records) = during(&probe, || {
        let child = Command::new("python3")
            .args(["-c", HOPPING_CLIENT, &n.port.to_string(), &N.to_string()])
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "the hopping client failed");
        pid
    });
    let row = api_row(&records, client, "client", "GET /ok");
    assert_eq!(
        (
            num(row, "req_count"),
            num(row, "resp_count"),
            num(row, "err_count")
        ),
        (N, N, 0),
        "{row:?}"
    );
    let row = api_row(&records, n.worker, "server", "GET /ok");
    assert_eq!(num(row, "req_count"), N, "{row:?}");
    let stats = last(&records, "l7_parse_stats", |_| true).unwrap();
    for f in [
        "malformed",
        "desynchronised",
        "unmatched_response",
        "late_records",
        "bad_records",
    ] {
        assert_eq!(num(stats, f), 0, "{f}: {stats:?}");
    }
}
