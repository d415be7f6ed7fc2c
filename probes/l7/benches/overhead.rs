//! Overhead of l7probe on an nginx + wrk keep-alive loopback benchmark (needs root, nginx and
//! wrk from Debian), and the probe's own cost per observed request at a paced load.
//!
//! 1. **Throughput runs**: nginx (one worker, pinned to CPU 0) serves a 100-byte page; wrk (one
//!    thread, 10 connections, pinned to CPU 1) runs for a few seconds. Per round, in rotating
//!    order: no probe; probe running but nginx and wrk not traced (include snooper naming
//!    another process: they pay the tracepoints' dispatch and the filter's map lookup); probe
//!    tracing every process. The cost is the CPU time of nginx's worker plus wrk's, per
//!    request, the least of three runs; the median ratio over the rounds is reported, with the
//!    requests per second.
//! 2. **Paced run** (wrk with a Lua `delay()`, about 10,000 requests per second): the probe's
//!    CPU per observed request, the kernel programs' run time per request (`run_time_ns` in
//!    the programs' fdinfo with `kernel.bpf_stats_enabled`), the probe's RSS, records lost.
//!
//! 3. **redis-benchmark** GET/SET (10 connections) against redis-server, pinned likewise: CPU per
//!    request without the probe and tracing every process, median ratio.
//! 4. **10,000 open connections** to nginx, one request each, kept open: the probe's RSS and
//!    its CPU while they idle.
//!
//! `cargo bench -p l7probe --bench overhead -- [rounds] [seconds]` (default 5 rounds of 4 s);
//! `GG_L7_BENCH_ONLY=paced` runs the paced run alone.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_l7probe");

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn cpu_secs_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clk_tck()
}

fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        if after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
    worker: u32,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker (a SIGKILL would leave it running).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

fn nginx() -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), vec![b'x'; 100]).unwrap();
    let conf = format!(
        "worker_processes 1; daemon off; user root; error_log {d}/error.log; pid {d}/nginx.pid;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{ access_log off; client_body_temp_path {d}/cb; proxy_temp_path {d}/px;
  fastcgi_temp_path {d}/fc; uwsgi_temp_path {d}/uw; scgi_temp_path {d}/sc;
  keepalive_requests 100000000;
  server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}"
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let child = Command::new("taskset")
        .args([
            "-c",
            "0",
            "nginx",
            "-p",
            &d,
            "-c",
            &format!("{d}/nginx.conf"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("taskset/nginx (util-linux, nginx)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        thread::sleep(Duration::from_millis(50));
    }
    // taskset execs nginx: the child is nginx's master.
    let worker = loop {
        if let Some(w) = children_of(child.id()).first().copied() {
            break w;
        }
        assert!(Instant::now() < deadline, "no nginx worker");
        thread::sleep(Duration::from_millis(20));
    };
    Nginx {
        child,
        _dir: dir,
        port,
        worker,
    }
}

/// One wrk run: (requests, seconds of CPU of wrk + the nginx worker).
fn wrk(n: &Nginx, secs: u32, script: Option<&str>) -> (u64, f64) {
    let w0 = cpu_secs_of(n.worker);
    let c0 = children_cpu();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1", "wrk", "-t1", "-c10", &format!("-d{secs}s")]);
    if let Some(s) = script {
        cmd.args(["-s", s]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{}/index.html", n.port))
        .output()
        .expect("wrk (package wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("wrk output: {text}"));
    let cpu = (cpu_secs_of(n.worker) - w0) + (children_cpu() - c0);
    (requests, cpu)
}

struct Probe {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Probe {
    fn start(control: &str) -> Probe {
        let mut child = Command::new(BIN)
            .args(["-t", "1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{control}").unwrap();
        std::mem::forget(stdin);
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let (rtx, ready) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if l.contains("control:") || l.contains("attached (") {
                    let _ = rtx.send(());
                }
            }
        });
        ready
            .recv_timeout(Duration::from_secs(20))
            .expect("probe start");
        thread::sleep(Duration::from_millis(300));
        Probe { child, lines }
    }

    /// The newest record of each of `tables` among the lines written so far (drains them).
    fn last_lines(&self, tables: &[&str]) -> Vec<Option<Vec<String>>> {
        self.drain(tables).0
    }

    /// [`Probe::last_lines`], and how many `l7_rpc_trace` records were among the lines.
    fn drain(&self, tables: &[&str]) -> (Vec<Option<Vec<String>>>, u64) {
        let mut last = vec![None; tables.len()];
        let mut traces = 0;
        while let Ok(l) = self.lines.try_recv() {
            traces += u64::from(l.starts_with("|l7_rpc_trace|"));
            for (slot, table) in last.iter_mut().zip(tables) {
                if l.starts_with(&format!("|{table}|")) {
                    *slot = Some(l.trim_matches('|').split('|').map(str::to_string).collect());
                }
            }
        }
        (last, traces)
    }

    /// Sum of run_time_ns and run_cnt of the probe's BPF programs (fdinfo).
    fn bpf_run(&self) -> (u64, u64) {
        let (mut ns, mut cnt) = (0, 0);
        let pid = self.child.id();
        for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
        {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            if !info.contains("prog_type:") {
                continue;
            }
            for l in info.lines() {
                let mut it = l.split_whitespace();
                match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
                    (Some("run_time_ns:"), Some(v)) => ns += v,
                    (Some("run_cnt:"), Some(v)) => cnt += v,
                    _ => {}
                }
            }
        }
        (ns, cnt)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One redis-benchmark run against a fresh redis-server: (requests, CPU seconds of both).
fn redis_run(requests: u32) -> (u64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut server = Command::new("taskset")
        .args([
            "-c",
            "0",
            "redis-server",
            "--port",
            &port,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (package redis-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        thread::sleep(Duration::from_millis(20));
    }
    let s0 = cpu_secs_of(server.id());
    let c0 = children_cpu();
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "redis-benchmark",
            "-p",
            &port,
            "-c",
            "10",
            "-t",
            "get,set",
            "-q",
        ])
        .args(["-n", &requests.to_string()])
        .output()
        .expect("redis-benchmark (package redis-tools)");
    assert!(out.status.success());
    let cpu = (cpu_secs_of(server.id()) - s0) + (children_cpu() - c0);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
    (2 * u64::from(requests), cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rounds: usize = args.first().and_then(|v| v.parse().ok()).unwrap_or(5);
    let secs: u32 = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(4);
    let n = nginx();
    wrk(&n, 1, None); // warm-up
    let server_only = format!(r#"{{"snoop":{{"mode":"include","pids":[{}]}}}}"#, n.worker);
    if std::env::var("GG_L7_BENCH_ONLY").as_deref() == Ok("paced") {
        paced(&n, r#"{"snoop":{"mode":"all"}}"#, "paced");
        paced(&n, &server_only, "paced, server end only");
        return;
    }
    let modes = ["off", "untracked", "tracked"];
    let mut ratios: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut rates: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for r in 0..rounds {
        let mut per_req = [0.0f64; 3];
        for k in 0..3 {
            let m = (r + k) % 3;
            let probe = match modes[m] {
                "off" => None,
                "untracked" => Some(Probe::start(r#"{"snoop":{"mode":"include","pids":[1]}}"#)),
                _ => Some(Probe::start(r#"{"snoop":{"mode":"all"}}"#)),
            };
            // The least CPU per request of three runs: the machine's noise only adds.
            let mut best = f64::MAX;
            let mut rate = 0.0f64;
            for _ in 0..3 {
                let (req, cpu) = wrk(&n, secs, None);
                if cpu / (req as f64) < best {
                    best = cpu / req as f64;
                    rate = req as f64 / f64::from(secs);
                }
            }
            drop(probe);
            per_req[m] = best;
            rates[m].push(rate);
        }
        println!(
            "round {r}: CPU/request off {:.2} us, untracked {:.2} us, tracked {:.2} us",
            per_req[0] * 1e6,
            per_req[1] * 1e6,
            per_req[2] * 1e6
        );
        ratios[0].push(per_req[1] / per_req[0]);
        ratios[1].push(per_req[2] / per_req[0]);
    }
    println!(
        "requests/s (median): off {:.0}, untracked {:.0}, tracked {:.0}",
        median(rates[0].clone()),
        median(rates[1].clone()),
        median(rates[2].clone())
    );
    println!(
        "CPU per request ratio (median of {rounds}): untracked {:.3}x, tracked {:.3}x",
        median(ratios[0].clone()),
        median(ratios[1].clone())
    );

    // Paced run: about 10,000 requests/s over 10 connections; then the same with
    // l7_rpc_trace on (every request a record, up to 1000 a period).
    paced(&n, r#"{"snoop":{"mode":"all"}}"#, "paced");
    paced(&n, &server_only, "paced, server end only");
    paced(
        &n,
        r#"{"probe_bits":7,"snoop":{"mode":"all"}}"#,
        "paced, l7_rpc_trace on",
    );

    // redis-benchmark, off and tracked.
    let mut redis_ratios = Vec::new();
    for r in 0..rounds {
        let mut per_req = [0.0f64; 2];
        for k in 0..2 {
            let m = (r + k) % 2;
            let probe = (m == 1).then(|| Probe::start(r#"{"snoop":{"mode":"all"}}"#));
            let (req, cpu) = redis_run(100_000);
            drop(probe);
            per_req[m] = cpu / req as f64;
        }
        println!(
            "redis round {r}: CPU/request off {:.2} us, tracked {:.2} us",
            per_req[0] * 1e6,
            per_req[1] * 1e6
        );
        redis_ratios.push(per_req[1] / per_req[0]);
    }
    println!(
        "redis-benchmark GET/SET CPU per request ratio (median of {rounds}): tracked {:.3}x",
        median(redis_ratios)
    );

    // 10,000 connections kept open, one request each.
    let probe = Probe::start(r#"{"snoop":{"mode":"all"}}"#);
    let mut conns = Vec::new();
    for _ in 0..10_000 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", n.port)).expect("connect");
        c.write_all(b"GET /index.html HTTP/1.1\r\nHost: b\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let _ = std::io::Read::read(&mut c, &mut buf);
        conns.push(c);
    }
    thread::sleep(Duration::from_secs(2));
    let c0 = cpu_secs_of(probe.child.id());
    thread::sleep(Duration::from_secs(10));
    let c1 = cpu_secs_of(probe.child.id());
    let loss = probe.last_lines(&["l7probe_bpf_stats"]).pop().flatten();
    println!(
        "10,000 open connections (both ends traced): probe RSS {} KiB, CPU {:.2}% of a core while they idle; {loss:?}",
        rss_kib(probe.child.id()),
        (c1 - c0) * 10.0
    );
    drop(conns);
}

/// A paced wrk run (about 10,000 requests/s) with the probe started by `control`: the probe's
/// CPU and RSS, the kernel programs' run time per request, losses.
fn paced(n: &Nginx, control: &str, label: &str) {
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "function delay()\n  return 1\nend\n").unwrap();
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats).unwrap_or_default();
    std::fs::write(stats, "1").expect("enabling kernel.bpf_stats_enabled");
    let probe = Probe::start(control);
    let p0 = cpu_secs_of(probe.child.id());
    let b0 = probe.bpf_run();
    let t0 = Instant::now();
    let (req, _) = wrk(n, 10, Some(&script.path().display().to_string()));
    let wall = t0.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(1500));
    let b1 = probe.bpf_run();
    let p1 = cpu_secs_of(probe.child.id());
    let _ = std::fs::write(stats, stats_before.trim());
    let (last, traces) = probe.drain(&["l7_rpc", "l7probe_bpf_stats", "l7_parse_stats"]);
    let mut last = last.into_iter();
    let (rpc, loss, parse) = (
        last.next().flatten(),
        last.next().flatten(),
        last.next().flatten(),
    );
    println!(
        "{label}: {req} requests in {wall:.1} s ({:.0}/s); probe CPU {:.2} us per request ({:.1}% of a core), kernel programs {:.0} ns per request ({} runs), probe RSS {} KiB",
        req as f64 / wall,
        (p1 - p0) * 1e6 / req as f64,
        (p1 - p0) * 100.0 / wall,
        (b1.0 - b0.0) as f64 / req as f64,
        b1.1 - b0.1,
        rss_kib(probe.child.id())
    );
    println!("last l7probe_bpf_stats: {loss:?}");
    println!("an l7_rpc row: {rpc:?}");
    println!("{label}: {traces} l7_rpc_trace records; last l7_parse_stats: {parse:?}");
    drop(probe);
}
