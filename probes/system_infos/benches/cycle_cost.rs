//! Cost of a collection cycle, and comparison with prometheus-node-exporter on the same host.
//!
//! `cargo bench -p system_infos` (release build). Measures, with ~500 processes on the host
//! (480 `sleep` + 20 whitelisted copies named `ggbench`):
//! 1. in-process thread CPU time of `Collector::cycle` for the host tables (`-P` all but proc),
//!    and for all tables including `system_proc` with the 20 whitelisted processes;
//! 2. the real `system_infos` binary at `-t 1`: CPU per cycle from its `/proc/<pid>/stat`, its
//!    own `cycle_cpu_us` report, and VmRSS / VmHWM;
//! 3. `prometheus-node-exporter` (if installed) scraped over loopback: CPU per scrape from its
//!    `/proc/<pid>/stat`, VmRSS / VmHWM.
//!
//! Environment knobs: `BENCH_PROCS` (default 480 plain sleeps), `BENCH_CYCLES` (default 200),
//! `BENCH_BINARY_CYCLES` (default 20), `BENCH_SCRAPES` (default 50), `BENCH_PARTS` (comma list
//! of `host,proc,all,binary,node`; default all).

use probe_sdk::event::CivilTime;
use probe_sdk::record::RecordWriter;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use system_infos::collector::{bits, Collector};
use system_infos::fs::SyscallStatFs;
use system_infos::options;

const WHITELISTED: usize = 20;

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn thread_cpu_us() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).expect("clock");
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
}

/// utime + stime of a process, in microseconds.
fn proc_cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let f: Vec<u64> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    (f[0] + f[1]) * 1_000_000 / hz
}

/// (VmRSS, VmHWM) in kB.
fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let get = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

fn stats(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
    let pct = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
    format!(
        "mean {:.0} µs, median {} µs, p95 {} µs, min {} µs (n={})",
        mean,
        pct(0.5),
        pct(0.95),
        v[0],
        v.len()
    )
}

fn bench_cycles(label: &str, args: &[&str], cycles: usize) {
    let opts = options::parse(args.iter().copied()).expect("args");
    let mut c = Collector::new(
        opts.collector_config(),
        Box::new(SyscallStatFs::new(Duration::from_secs(2))),
    );
    // Records are formatted as in production; the sink discards them.
    let mut out = RecordWriter::new(std::io::sink());
    let t = CivilTime::local_now().expect("time");
    c.cycle(&mut out, &t).unwrap();
    let mut samples = Vec::with_capacity(cycles);
    let mut lines = 0;
    for _ in 0..cycles {
        let start = thread_cpu_us();
        c.cycle(&mut out, &t).unwrap();
        samples.push(thread_cpu_us() - start);
        lines = out.buffered().iter().filter(|b| **b == b'\n').count();
        out.flush().unwrap();
        // Give the kernel counters time to move, like a real period would.
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("{label:<44} {} — {lines} records/cycle", stats(samples));
}

fn host_procs() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .count()
}

fn bench_binary(conf: &Path, cycles: usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_system_infos"))
        .args(["-t", "1", "-w", conf.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn system_infos");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut self_reported = Vec::new();
    let mut cpu_at_first = None;
    let mut procs_reported = 0;
    while self_reported.len() < cycles {
        let line = lines.next().expect("output").expect("read");
        if line.starts_with("|system_proc|") {
            procs_reported += 1;
        }
        if let Some(rest) = line.strip_prefix("|system_infos_stats|system_infos|") {
            let f: Vec<&str> = rest.split('|').collect();
            self_reported.push(f[3].parse::<u64>().unwrap_or(0));
            if cpu_at_first.is_none() {
                cpu_at_first = Some(proc_cpu_us(pid));
                self_reported.clear();
            }
        }
    }
    let cpu = proc_cpu_us(pid) - cpu_at_first.unwrap();
    let (rss, hwm) = rss_kb(pid);
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "system_infos binary, -t 1, all tables, {cycles} cycles: {:.2} ms CPU/cycle from /proc/<pid>/stat \
         (10 ms tick resolution); self-reported {}; VmRSS {rss} kB, VmHWM {hwm} kB; {:.1} system_proc rows/cycle",
        cpu as f64 / 1000.0 / cycles as f64,
        stats(self_reported),
        procs_reported as f64 / (cycles + 1) as f64,
    );
}

fn scrape(addr: &str) -> usize {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    body.len()
}

fn bench_node_exporter(scrapes: usize) {
    let Ok(mut ne) = Command::new("prometheus-node-exporter")
        .arg("--web.listen-address=127.0.0.1:19100")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        println!("prometheus-node-exporter not installed: comparison skipped");
        return;
    };
    let addr = "127.0.0.1:19100";
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "node_exporter did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Warm-up scrape (first one initialises collectors).
    scrape(addr);
    let before = proc_cpu_us(ne.id());
    let mut bytes = 0;
    for _ in 0..scrapes {
        bytes = scrape(addr);
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = proc_cpu_us(ne.id()) - before;
    let (rss, hwm) = rss_kb(ne.id());
    let _ = ne.kill();
    let _ = ne.wait();
    println!(
        "prometheus-node-exporter, {scrapes} scrapes: {:.2} ms CPU/scrape; VmRSS {rss} kB, VmHWM {hwm} kB; {bytes} bytes/scrape",
        cpu as f64 / 1000.0 / scrapes as f64
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful either way.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let plain = env_usize("BENCH_PROCS", 480);
    let cycles = env_usize("BENCH_CYCLES", 200);
    let dir = tempfile::tempdir().unwrap();
    let ggbench = dir.path().join("ggbench");
    std::fs::copy("/bin/sleep", &ggbench).unwrap();
    let conf = dir.path().join("app.conf");
    std::fs::write(
        &conf,
        "application =\n(\n    { comm = \"^ggbench$\"; cmdline = \"\"; }\n);\n",
    )
    .unwrap();

    let mut kids = Children(Vec::new());
    for i in 0..plain + WHITELISTED {
        let bin: &Path = if i < WHITELISTED {
            &ggbench
        } else {
            Path::new("/bin/sleep")
        };
        kids.0
            .push(Command::new(bin).arg("3600").spawn().expect("spawn sleep"));
    }
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "host: {} processes, {WHITELISTED} whitelisted (comm ggbench)",
        host_procs()
    );

    let host_only = format!("{}", !bits::PROC);
    let conf_s = conf.to_str().unwrap();
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "host,proc,all,binary,node".into());
    let part = |p: &str| parts.split(',').any(|x| x == p);
    if part("host") {
        bench_cycles("host tables (-P all but proc)", &["-P", &host_only], cycles);
    }
    if part("proc") {
        bench_cycles(
            "system_proc only (-P 64), 20 whitelisted",
            &["-P", "64", "-w", conf_s],
            cycles,
        );
    }
    if part("all") {
        bench_cycles("all tables, 20 whitelisted", &["-w", conf_s], cycles);
    }
    if part("binary") {
        bench_binary(&conf, env_usize("BENCH_BINARY_CYCLES", 20));
    }
    if part("node") {
        bench_node_exporter(env_usize("BENCH_SCRAPES", 50));
    }
    drop(kids);
}
