//! Run-time control latencies, end to end on the real daemon (plain `main`, figures printed):
//!
//! * `PUT state running` → reply (the REST handler answers once the probe process runs);
//! * `PUT params` → the probe has read the new value from its control channel;
//! * snooper change → the probe has the new process in its selection: a process whose `comm`
//!   matches starts, the time until the control line naming its pid reaches the probe.
//!
//! The probe is a small python drop-in that appends `<unix time> <line>` to a file for every
//! control line it reads. `cargo bench -p gala-gopher --bench control_latency`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PROBE: &str = r#"#!/usr/bin/env python3
import os, sys, time
out = open(os.environ.get("BENCH_OUT", "/dev/null"), "a", buffering=1)
for line in sys.stdin:
    out.write("%.6f %s" % (time.time(), line))
"#;

const META: &str = r#"version = "1.0.0";
measurements: ( { table_name: "bench_ctl"; entity_name: "bench"; fields: (
    { description: "k"; type: "key"; name: "k"; }, { description: "v"; type: "gauge"; name: "v"; } ); } );
probe = {
    reload = true;
    snoopers = [ "proc_id", "proc_name" ];
    params = ( { name = "report_period"; type = "int"; min = 1; max = 600; default = 1; flag = "t"; } );
};
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn put(port: u16, path: &str, doc: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let body = format!("json={doc}");
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, buf)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Lines the probe has logged so far: (time, line).
fn seen(out: &Path) -> Vec<(f64, String)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, rest) = l.split_once(' ')?;
            Some((t.parse().ok()?, rest.to_string()))
        })
        .collect()
}

/// Wait for a logged line after `since` containing `needle`; its time.
fn wait_line(out: &Path, since: f64, needle: &str) -> Option<f64> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Some((t, _)) = seen(out)
            .into_iter()
            .find(|(t, l)| *t >= since && l.contains(needle))
        {
            return Some(t);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn stats(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let p = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<44} n={:<3} median {:>7.1} ms   p90 {:>7.1} ms   max {:>7.1} ms",
        ms.len(),
        p(0.5),
        p(0.9),
        p(1.0)
    );
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let probes = dir.path().join("probes");
    std::fs::create_dir_all(&probes).unwrap();
    std::fs::create_dir_all(dir.path().join("meta")).unwrap();
    let script = probes.join("bench.py");
    std::fs::write(&script, PROBE).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(probes.join("bench.meta"), META).unwrap();
    let out = dir.path().join("seen.log");
    let (web, rest) = (free_port(), free_port());
    let conf = format!(
        "global = {{ log_level = \"warn\"; rest_api_on = true; probes_dir = \"{p}\"; meta_dir = \"{d}/meta\"; \
         cmd_socket = \"\"; probes_init = \"\"; machine_id = \"bench\"; }};\n\
         web_server = {{ port = {web}; }};\nrest_api_server = {{ port = {rest}; }};\n\
         probes = ( {{ name = \"bench\"; switch = \"off\"; }} );\n",
        p = probes.display(),
        d = dir.path().display(),
    );
    std::fs::write(dir.path().join("g.conf"), conf).unwrap();
    let _daemon = Kill(
        Command::new(env!("CARGO_BIN_EXE_gala-gopher"))
            .arg("-c")
            .arg(dir.path().join("g.conf"))
            .env("BENCH_OUT", &out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gala-gopher"),
    );
    let end = Instant::now() + Duration::from_secs(20);
    while put(rest, "/bench", r#"{"state":"stopped"}"#).0 != 200 {
        assert!(Instant::now() < end, "REST API not up");
        std::thread::sleep(Duration::from_millis(50));
    }

    // PUT running -> reply (probe process running).
    let mut start_ms = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let (st, body) = put(rest, "/bench", r#"{"state":"running"}"#);
        assert_eq!(st, 200, "{body}");
        start_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(put(rest, "/bench", r#"{"state":"stopped"}"#).0, 200);
    }
    stats("PUT state running -> probe running (reply)", start_ms);

    // PUT params -> the probe read the line.
    assert_eq!(put(rest, "/bench", r#"{"state":"running"}"#).0, 200);
    let mut param_ms = Vec::new();
    for i in 0..30 {
        let period = 10 + i;
        let t0 = now();
        let (st, body) = put(
            rest,
            "/bench",
            &format!("{{\"params\":{{\"report_period\":{period}}}}}"),
        );
        assert_eq!(st, 200, "{body}");
        let t = wait_line(&out, t0, &format!("\"report_period\":{period}")).expect("line seen");
        param_ms.push((t - t0) * 1e3);
    }
    stats("PUT params -> probe has the new value", param_ms);

    // Snooper: a matching process starts -> its pid reaches the probe.
    let (st, body) = put(
        rest,
        "/bench",
        r#"{"snoopers":{"proc_name":[{"comm":"^ggbenchsnoop$","cmdline":""}]}}"#,
    );
    assert_eq!(st, 200, "{body}");
    let sleeper = dir.path().join("ggbenchsnoop");
    std::fs::copy("/bin/sleep", &sleeper).unwrap();
    let mut snoop_ms = Vec::new();
    for _ in 0..20 {
        let t0 = now();
        let mut child = Command::new(&sleeper).arg("30").spawn().expect("spawn");
        let pid = child.id();
        let t = wait_line(&out, t0, &format!("{pid}"));
        let _ = child.kill();
        let _ = child.wait();
        match t {
            Some(t) => snoop_ms.push((t - t0) * 1e3),
            None => println!("snooper: pid {pid} never reached the probe"),
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    if !snoop_ms.is_empty() {
        stats("new matching process -> probe has its pid", snoop_ms);
    }
}
