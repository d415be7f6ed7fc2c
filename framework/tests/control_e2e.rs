//! Run-time control of the shipped eBPF probes through the real daemon and its REST API: the
//! daemon starts with no probe running; tcpprobe is started, retuned without a restart and
//! stopped over REST, and its tables follow the sub-probes; the endpoint probe is driven as
//! `socket`; taskprobe follows a `proc_name` snooper as processes come and go; l7probe is driven
//! as `l7` with a snooper and its sub-probes.

mod daemon_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use daemon_support::*;
use serde_json::Value;

struct Rest {
    d: Daemon,
    port: u16,
}

impl Rest {
    fn start(record_timeout: u32, setup: impl FnOnce(&Path)) -> Rest {
        let port = free_port();
        let d = Daemon::start_env(
            record_timeout,
            &format!("rest_api_server = {{ bind_addr = \"127.0.0.1\"; port = {port}; }};"),
            &[("GALA_GOPHER_GLOBAL__REST_API_ON", "true")],
            setup,
        );
        Rest { d, port }
    }

    /// [`Rest::start`] with `extra` config text.
    fn start_with(record_timeout: u32, extra: &str, setup: impl FnOnce(&Path)) -> Rest {
        let port = free_port();
        let d = Daemon::start_env(
            record_timeout,
            &format!("rest_api_server = {{ bind_addr = \"127.0.0.1\"; port = {port}; }};\n{extra}"),
            &[("GALA_GOPHER_GLOBAL__REST_API_ON", "true")],
            setup,
        );
        Rest { d, port }
    }

    fn get(&self, path: &str) -> Value {
        let (st, v) = request(self.port, "GET", path, "");
        assert_eq!(st, 200, "GET {path}: {v}");
        v
    }

    fn put(&self, path: &str, doc: &str) -> Value {
        let (st, v) = request(self.port, "PUT", path, &format!("json={doc}"));
        assert_eq!(st, 200, "PUT {path} {doc}: {v}\nlog:\n{}", self.d.log());
        v
    }

    fn wait_known(&self, path: &str) {
        wait_for(Duration::from_secs(20), || {
            (request(self.port, "GET", path, "").0 == 200).then_some(())
        })
        .unwrap_or_else(|| panic!("{path} not known; log:\n{}", self.d.log()));
    }
}

fn series(scrape: &str, prefix: &str) -> Vec<String> {
    scrape
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// One loopback connection moving some bytes.
fn loopback_traffic() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 10_000];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        std::thread::sleep(Duration::from_secs(8));
    });
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(&[1u8; 10_000]).unwrap();
    let mut back = vec![0u8; 10_000];
    c.read_exact(&mut back).unwrap();
    std::thread::sleep(Duration::from_secs(8));
    drop(c);
    server.join().unwrap();
}

#[test]
fn tcpprobe_is_started_retuned_and_stopped_over_rest() {
    let r = Rest::start(60, |probes| install_probe(probes, "tcpprobe", "probes/tcp"));
    r.wait_known("/tcp");
    let v = r.get("/tcp");
    assert_eq!(v["state"], "stopped", "{v}");
    assert!(v["pid"].is_null());
    assert!(!r.d.scrape().contains("gala_gopher_tcp_link_"));

    // Two sub-probes and a report period.
    r.put(
        "/tcp",
        r#"{"cmd":{"probe":["tcp_rtt","tcp_stats"]},"params":{"report_period":2},"state":"running"}"#,
    );
    let v = r.get("/TCP");
    assert_eq!(
        v["cmd"]["probe"],
        serde_json::json!(["tcp_rtt", "tcp_stats"])
    );
    assert_eq!(v["params"]["report_period"], 2);
    assert_eq!(v["state"], "running");
    assert_eq!(v["reload"], true);
    let pid = v["pid"].as_u64().expect("running");
    std::thread::spawn(loopback_traffic);
    let scrape = wait_for(Duration::from_secs(30), || {
        let s = r.d.scrape();
        (!series(&s, "gala_gopher_tcp_link_srtt{").is_empty()
            && !series(&s, "gala_gopher_tcp_link_rx_bytes{").is_empty())
        .then_some(s)
    })
    .unwrap_or_else(|| panic!("tcp_rtt / tcp_tx_rx not seen:\n{}", r.d.scrape()));
    // Only the chosen tables (tcp_link and the loss table are always written).
    for other in [
        "gala_gopher_tcp_link_retran_packets{",
        "gala_gopher_tcp_link_zero_rcv_wnd_count{",
        "gala_gopher_tcp_link_syn_srtt{",
    ] {
        assert!(
            series(&scrape, other).is_empty(),
            "{other} reported:\n{scrape}"
        );
    }
    // The log shows the flags reached the probe.
    assert!(r.d.log().contains("tables"), "{}", r.d.log());

    // New params: the same process takes them.
    r.put("/tcp", r#"{"params":{"report_period":3}}"#);
    wait_for(Duration::from_secs(10), || {
        r.d.log().contains("period 2s -> 3s").then_some(())
    })
    .unwrap_or_else(|| panic!("period change not applied; log:\n{}", r.d.log()));
    let v = r.get("/tcp");
    assert_eq!(v["pid"].as_u64(), Some(pid), "restarted: {v}");
    assert_eq!(v["restarts"], 0);
    assert_eq!(v["params"]["report_period"], 3);

    // Stopped: the process is gone when the reply comes.
    r.put("/tcp", r#"{"state":"stopped"}"#);
    assert!(!alive(pid as i32), "tcpprobe {pid} still alive");
    assert_eq!(r.get("/tcp")["state"], "stopped");
}

/// A python process whose comm is `comm`, waking every 100 ms (so it switches off-CPU).
fn sleeper(comm: &str) -> KillOnDrop {
    let child = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import time\nopen('/proc/self/comm', 'w').write('{comm}')\nwhile True: time.sleep(0.1)\n"
        ))
        .spawn()
        .expect("python3");
    KillOnDrop(child)
}

fn tgid_series(scrape: &str, pid: u32) -> usize {
    let tgid = format!("tgid=\"{pid}\"");
    scrape
        .lines()
        .filter(|l| l.starts_with("gala_gopher_proc_") && l.contains(&tgid))
        .count()
}

#[test]
fn taskprobe_follows_a_proc_name_snooper() {
    let r = Rest::start(4, |probes| {
        install_probe(probes, "taskprobe", "probes/proc")
    });
    r.wait_known("/proc");
    let a = sleeper("ggsnoopmatch");
    let b = sleeper("ggsnoopmatch");
    let other = sleeper("ggsnoopother");
    let (pa, pb, po) = (a.0.id(), b.0.id(), other.0.id());

    r.put(
        "/proc",
        r#"{"cmd":{"probe":["proc_offcpu"]},"snoopers":{"proc_name":[{"comm":"^ggsnoopmatch$","cmdline":"","label":{"app":"shop"}}]},"params":{"report_period":1},"state":"running"}"#,
    );
    let v = r.get("/proc");
    let pid = v["pid"].as_u64().expect("running");
    assert_eq!(v["snoopers"]["proc_name"][0]["comm"], "^ggsnoopmatch$");
    wait_for(Duration::from_secs(20), || {
        let s = r.d.scrape();
        (tgid_series(&s, pa) > 0 && tgid_series(&s, pb) > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("the two matching processes not reported:\n{}", r.d.scrape()));
    // Never the third, nor anything else.
    std::thread::sleep(Duration::from_secs(2));
    let s = r.d.scrape();
    // The proc_name entry's label is on the matched processes' series.
    let tgid_a = format!("tgid=\"{pa}\"");
    let lines_a: Vec<&str> = s
        .lines()
        .filter(|l| l.starts_with("gala_gopher_proc_") && l.contains(&tgid_a))
        .collect();
    assert!(!lines_a.is_empty());
    for l in &lines_a {
        assert!(l.contains("app=\"shop\""), "{l}");
    }
    assert_eq!(tgid_series(&s, po), 0, "non-matching process reported");
    let others: Vec<&str> = s
        .lines()
        .filter(|l| l.starts_with("gala_gopher_proc_") && l.contains("tgid=\""))
        .filter(|l| {
            ![pa, pb]
                .iter()
                .any(|p| l.contains(&format!("tgid=\"{p}\"")))
        })
        .collect();
    assert!(others.is_empty(), "other processes reported: {others:?}");

    // A fourth matching process appears without a probe restart.
    let c = sleeper("ggsnoopmatch");
    let pc = c.0.id();
    wait_for(Duration::from_secs(20), || {
        (tgid_series(&r.d.scrape(), pc) > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("late matching process not reported:\n{}", r.d.scrape()));
    let v = r.get("/proc");
    assert_eq!(v["pid"].as_u64(), Some(pid), "taskprobe restarted: {v}");

    // One exits: its series expire (record_timeout 4 s).
    drop(a);
    wait_for(Duration::from_secs(20), || {
        (tgid_series(&r.d.scrape(), pa) == 0).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "series of the exited process did not expire:\n{}",
            r.d.scrape()
        )
    });
    assert!(tgid_series(&r.d.scrape(), pb) > 0);
    drop((b, c, other));
}

/// Sends a few datagrams to a UDP socket that reads them, from another socket.
fn udp_traffic() {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..40 {
        tx.send_to(&[7u8; 1000], rx.local_addr().unwrap()).unwrap();
        let _ = rx.recv_from(&mut buf);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn tcpprobe_tables_follow_the_sub_probes_without_a_restart() {
    let r = Rest::start(60, |probes| install_probe(probes, "tcpprobe", "probes/tcp"));
    r.wait_known("/tcp");
    // HEAD's tcp_delay is not built here: refused, naming it.
    let (st, v) = request(
        r.port,
        "PUT",
        "/tcp",
        r#"json={"cmd":{"probe":["tcp_delay"]},"state":"running"}"#,
    );
    assert_ne!(st, 200, "tcp_delay accepted: {v}");
    assert!(v.to_string().contains("tcp_delay"), "{v}");
    // cluster_ip_backend: 0 is honoured, a translation is refused.
    let (st, v) = request(
        r.port,
        "PUT",
        "/tcp",
        r#"json={"params":{"cluster_ip_backend":1},"state":"running"}"#,
    );
    assert_ne!(st, 200, "cluster_ip_backend 1 accepted: {v}");

    r.put(
        "/tcp",
        r#"{"cmd":{"probe":["tcp_rate","tcp_sockbuf"]},"params":{"report_period":2,"cluster_ip_backend":0},"state":"running"}"#,
    );
    let pid = r.get("/tcp")["pid"].as_u64().expect("running");
    std::thread::spawn(loopback_traffic);
    let scrape = wait_for(Duration::from_secs(30), || {
        let s = r.d.scrape();
        (!series(&s, "gala_gopher_tcp_link_rto{").is_empty()
            && !series(&s, "gala_gopher_tcp_link_sk_rcvbuf{").is_empty())
        .then_some(s)
    })
    .unwrap_or_else(|| panic!("tcp_rate / tcp_sockbuf not seen:\n{}", r.d.scrape()));
    for other in [
        "gala_gopher_tcp_link_srtt{",
        "gala_gopher_tcp_link_lost_out{",
    ] {
        assert!(
            series(&scrape, other).is_empty(),
            "{other} reported:\n{scrape}"
        );
    }
    // The abnormal table instead, in the same process.
    r.put("/tcp", r#"{"cmd":{"probe":["tcp_abnormal"]}}"#);
    std::thread::spawn(loopback_traffic);
    wait_for(Duration::from_secs(30), || {
        (!series(&r.d.scrape(), "gala_gopher_tcp_link_lost_out{").is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("tcp_abn not seen:\n{}", r.d.scrape()));
    let v = r.get("/tcp");
    assert_eq!(v["pid"].as_u64(), Some(pid), "restarted: {v}");
    assert_eq!(v["cmd"]["probe"], serde_json::json!(["tcp_abnormal"]));
    r.put("/tcp", r#"{"state":"stopped"}"#);
}

#[test]
fn endpoint_probe_is_driven_as_socket() {
    let r = Rest::start(60, |probes| {
        install_probe(probes, "endpoint", "probes/endpoint")
    });
    r.wait_known("/socket");
    assert_eq!(r.get("/socket")["state"], "stopped");
    r.put(
        "/socket",
        r#"{"cmd":{"probe":["udp_socket"]},"params":{"report_period":2,"ringbuf_map_size":4},"state":"running"}"#,
    );
    let pid = r.get("/socket")["pid"].as_u64().expect("running");
    // Upstream's ringbuf_map_size reaches the probe before it loads (its first control line).
    assert_eq!(r.get("/socket")["params"]["ringbuf_map_size"], 4);
    wait_for(Duration::from_secs(20), || {
        r.d.log().contains("ring buffer: 4 MiB").then_some(())
    })
    .unwrap_or_else(|| panic!("the ring buffer was not sized:\n{}", r.d.log()));
    std::thread::spawn(udp_traffic);
    let scrape = wait_for(Duration::from_secs(30), || {
        let s = r.d.scrape();
        (!series(&s, "gala_gopher_endpoint_udp_bind_sends{").is_empty()).then_some(s)
    })
    .unwrap_or_else(|| panic!("endpoint_udp not seen:\n{}", r.d.scrape()));
    assert!(
        series(&scrape, "gala_gopher_endpoint_active_open{").is_empty(),
        "endpoint_tcp reported:\n{scrape}"
    );
    // Switched to the TCP table without a restart.
    r.put("/socket", r#"{"cmd":{"probe":["tcp_socket"]}}"#);
    std::thread::spawn(loopback_traffic);
    wait_for(Duration::from_secs(30), || {
        let s = r.d.scrape();
        (!series(&s, "gala_gopher_endpoint_active_open{").is_empty()
            && !series(&s, "gala_gopher_endpoint_passive_open{").is_empty())
        .then_some(())
    })
    .unwrap_or_else(|| panic!("endpoint_tcp not seen:\n{}", r.d.scrape()));
    let v = r.get("/socket");
    assert_eq!(v["pid"].as_u64(), Some(pid), "restarted: {v}");
    r.put("/socket", r#"{"state":"stopped"}"#);
    assert!(!alive(pid as i32), "endpoint {pid} still alive");
}

/// A python HTTP server on 127.0.0.1 whose comm is `comm`; returns it and its port.
fn http_server(comm: &str) -> (KillOnDrop, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "open('/proc/self/comm', 'w').write('{comm}')\n\
             import http.server\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   protocol_version = 'HTTP/1.1'\n\
             \x20   def do_GET(self):\n\
             \x20       self.send_response(200 if self.path.startswith('/ok') else 404)\n\
             \x20       self.send_header('Content-Length', '2')\n\
             \x20       self.end_headers()\n\
             \x20       self.wfile.write(b'ok')\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
        ))
        .spawn()
        .expect("python3");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "http server not up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (KillOnDrop(child), port)
}

fn get(port: u16, path: &str) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
}

#[test]
fn l7probe_is_driven_as_l7_with_a_snooper() {
    let r = Rest::start(60, |probes| install_probe(probes, "l7probe", "probes/l7"));
    r.wait_known("/l7");
    assert_eq!(r.get("/l7")["state"], "stopped");
    let (selected, port) = http_server("ggl7match");
    let (other, other_port) = http_server("ggl7other");
    r.put(
        "/l7",
        r#"{"cmd":{"probe":["l7_rpc_metrics"]},"snoopers":{"proc_name":[{"comm":"^ggl7match$","cmdline":""}]},"params":{"report_period":1,"l7_protocol":["http"],"support_ssl":0},"state":"running"}"#,
    );
    let pid = r.get("/l7")["pid"].as_u64().expect("running");
    assert_eq!(
        r.get("/l7")["params"]["l7_protocol"],
        serde_json::json!(["http"])
    );
    let tgid = format!("tgid=\"{}\"", selected.0.id());
    let scrape = wait_for(Duration::from_secs(30), || {
        get(port, "/ok/1");
        get(port, "/missing");
        get(other_port, "/ok/2");
        let s = r.d.scrape();
        series(&s, "gala_gopher_l7_api_req_count{")
            .iter()
            .any(|l| l.contains(&tgid) && l.contains("api=\"GET /ok/{id}\""))
            .then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "l7_rpc_api of the selected server not seen:\n{}",
            r.d.scrape()
        )
    });
    // The 404s are blamed on the client (upstream counter mode: the change per period).
    let api = series(&scrape, "gala_gopher_l7_api_client_err_count{");
    assert!(
        api.iter()
            .any(|l| l.contains(&tgid) && l.contains("api=\"GET /missing\"")),
        "no client errors of GET /missing: {api:?}"
    );
    // Only the selected process, only the selected sub-probe's tables.
    let other_tgid = format!("tgid=\"{}\"", other.0.id());
    assert!(
        !scrape
            .lines()
            .any(|l| l.starts_with("gala_gopher_l7") && l.contains(&other_tgid)),
        "the unselected server was reported:\n{scrape}"
    );
    assert!(
        series(&scrape, "gala_gopher_l7_bytes_sent{").is_empty(),
        "l7_link reported without l7_bytes_metrics:\n{scrape}"
    );
    // Switched to the bytes table without a restart.
    r.put("/l7", r#"{"cmd":{"probe":["l7_bytes_metrics"]}}"#);
    wait_for(Duration::from_secs(30), || {
        get(port, "/ok/3");
        series(&r.d.scrape(), "gala_gopher_l7_bytes_sent{")
            .iter()
            .any(|l| l.contains(&tgid))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("l7_link not seen:\n{}", r.d.scrape()));
    assert_eq!(r.get("/l7")["pid"].as_u64(), Some(pid), "restarted");
    r.put("/l7", r#"{"state":"stopped"}"#);
    assert!(!alive(pid as i32), "l7probe {pid} still alive");
    drop((selected, other));
}

#[test]
fn l7_rpc_trace_records_reach_the_push_channel_not_the_metrics_page() {
    // Log directories must not contain "/." (tempfile's default names start with a dot).
    let logs = tempfile::Builder::new()
        .prefix("gg-trace")
        .tempdir()
        .unwrap();
    let conf = format!(
        "metric = {{ out_channel = [\"web_server\", \"json\"]; }};\n\
         logs = {{ metric_dir = \"{r}/m\"; }};\n",
        r = logs.path().display()
    );
    let r = Rest::start_with(60, &conf, |probes| {
        install_probe(probes, "l7probe", "probes/l7")
    });
    r.wait_known("/l7");
    let (server, port) = http_server("ggl7trace");
    r.put(
        "/l7",
        r#"{"cmd":{"probe":["l7_rpc_metrics","l7_rpc_trace"]},"snoopers":{"proc_name":[{"comm":"^ggl7trace$","cmdline":""}]},"params":{"report_period":1,"latency_thr":0},"state":"running"}"#,
    );
    assert_eq!(
        r.get("/l7")["cmd"]["probe"],
        serde_json::json!(["l7_rpc_metrics", "l7_rpc_trace"])
    );
    let tgid = server.0.id().to_string();
    let spans = wait_for(Duration::from_secs(30), || {
        get(port, "/ok/1");
        get(port, "/missing");
        let mut spans = Vec::new();
        for f in std::fs::read_dir(logs.path().join("m")).ok()?.flatten() {
            for l in std::fs::read_to_string(f.path()).ok()?.lines() {
                let v: Value = serde_json::from_str(l).ok()?;
                if v["table_name"] == "l7_rpc_trace" && v["labels"]["tgid"] == tgid.as_str() {
                    spans.push(v);
                }
            }
        }
        let statuses: Vec<&str> = spans
            .iter()
            .filter_map(|v| v["labels"]["status"].as_str())
            .collect();
        (statuses.contains(&"ok") && statuses.contains(&"404")).then_some(spans)
    })
    .unwrap_or_else(|| {
        panic!(
            "no l7_rpc_trace records in the json channel; log:\n{}",
            r.d.log()
        )
    });
    let missing = spans
        .iter()
        .find(|v| v["labels"]["status"] == "404")
        .unwrap();
    assert_eq!(missing["labels"]["api"], "GET /missing", "{missing}");
    assert_eq!(missing["labels"]["blame"], "client", "{missing}");
    assert_eq!(missing["labels"]["comm"], "ggl7trace", "{missing}");
    // Never a series: the metrics page has the l7_rpc series, no trace.
    let scrape = r.d.scrape();
    assert!(
        !series(&scrape, "gala_gopher_l7_req_count{").is_empty(),
        "{scrape}"
    );
    assert!(
        series(&scrape, "gala_gopher_l7_rpc_trace_").is_empty(),
        "{scrape}"
    );
    r.put("/l7", r#"{"state":"stopped"}"#);
    drop(server);
}

/// A Produce v3 request (acks 0: no response) of `records` records to `topic`, partition 0, in
/// one record batch (its records' bodies are not looked at).
fn produce_v3(correlation: i32, topic: &str, records: i32) -> Vec<u8> {
    let mut batch = Vec::new();
    batch.extend(0i64.to_be_bytes()); // baseOffset
    let mut rest = Vec::new();
    rest.extend(0i32.to_be_bytes()); // partitionLeaderEpoch
    rest.push(2); // magic
    rest.extend(0u32.to_be_bytes()); // crc
    rest.extend(0i16.to_be_bytes()); // attributes
    rest.extend((records - 1).to_be_bytes()); // lastOffsetDelta
    rest.extend(0i64.to_be_bytes());
    rest.extend(0i64.to_be_bytes());
    rest.extend((-1i64).to_be_bytes());
    rest.extend((-1i16).to_be_bytes());
    rest.extend((-1i32).to_be_bytes());
    rest.extend(records.to_be_bytes()); // recordsCount
    rest.extend(std::iter::repeat_n(0u8, 10 * records as usize));
    batch.extend((rest.len() as i32).to_be_bytes());
    batch.extend(rest);
    let mut body = Vec::new();
    body.extend(0i16.to_be_bytes()); // Produce
    body.extend(3i16.to_be_bytes());
    body.extend(correlation.to_be_bytes());
    body.extend(6i16.to_be_bytes());
    body.extend(b"gg-e2e");
    body.extend((-1i16).to_be_bytes()); // transactional_id
    body.extend(0i16.to_be_bytes()); // acks
    body.extend(1000i32.to_be_bytes());
    body.extend(1i32.to_be_bytes()); // one topic
    body.extend((topic.len() as i16).to_be_bytes());
    body.extend(topic.as_bytes());
    body.extend(1i32.to_be_bytes()); // one partition
    body.extend(0i32.to_be_bytes());
    body.extend((batch.len() as i32).to_be_bytes());
    body.extend(batch);
    let mut msg = (body.len() as i32).to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

#[test]
fn kafkaprobe_is_driven_as_kafka_with_its_port() {
    let r = Rest::start(60, |probes| {
        install_probe(probes, "kafkaprobe", "probes/l7")
    });
    r.wait_known("/kafka");
    assert_eq!(r.get("/kafka")["state"], "stopped");
    // A listener standing in for the broker: it reads what the client sends (acks 0 needs
    // no answer). The probe parses the client's and the listener's socket calls.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    r.put(
        "/kafka",
        &format!(r#"{{"params":{{"report_period":1,"kafka_port":{port}}},"state":"running"}}"#),
    );
    let pid = r.get("/kafka")["pid"].as_u64().expect("running");
    assert_eq!(r.get("/kafka")["params"]["kafka_port"], port);
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut corr = 0;
    let line = wait_for(Duration::from_secs(30), || {
        corr += 1;
        client.write_all(&produce_v3(corr, "gg-orders", 3)).unwrap();
        let s = r.d.scrape();
        series(&s, "gala_gopher_kafka_num{")
            .into_iter()
            .find(|l| l.contains("topic=\"gg-orders\"") && l.contains("msg_type=\"producer\""))
    })
    .unwrap_or_else(|| panic!("kafkaprobe rows not seen:\n{}", r.d.scrape()));
    assert!(line.contains(&format!("server_port=\"{port}\"")), "{line}");
    r.put("/kafka", r#"{"state":"stopped"}"#);
    assert!(!alive(pid as i32), "kafkaprobe {pid} still alive");
}
