//! Overhead of tcpprobe on a loopback connect / send 1 KiB / close loop (needs root).
//!
//! Each round runs the same workload twice, once without and once with the probe attached,
//! alternating which goes first; the workload's CPU time (getrusage of this process, which on
//! loopback includes the softirq work done inline for both ends) is compared per round and the
//! median ratio reported. With the probe on, it also checks that every connection was
//! accounted (opens and closes per role equal the number of connections, no lost events) and
//! reports the probe's own CPU and RSS, at idle and under the load.
//!
//! Then, every table on as well: a bulk loopback transfer (`BENCH_BULK_GB`, default 10 GB, one
//! connection, 1 MiB writes) without and with the probe, and the probe's own CPU and RSS while
//! `BENCH_HOLD_CONNS` (default 10000) connections are open (20000 sockets for each pass).
//!
//! `cargo bench -p tcpprobe --bench overhead -- [rounds] [connections]` (default 7 x 10000,
//! each run 3 times per mode and round, the least CPU counting);
//! `BENCH_PROBE_ARGS` adds probe flags (e.g. `-P 0xfffd` to leave the tcp_probe hook out);
//! `BENCH_ONLY=loop|bulk|hold` runs one part.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tcpprobe");
const PAYLOAD: usize = 1024;
/// Runs per mode and round; the least CPU of them counts.
const SUB_RUNS: usize = 3;

fn cpu_secs_self() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime + stime of a process, seconds.
fn cpu_secs_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the comm: state is index 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / clk_tck()
}

/// VmRSS and VmHWM of a process, KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

struct Probe {
    child: Child,
    lines: thread::JoinHandle<Vec<String>>,
}

impl Probe {
    fn start() -> Probe {
        Probe::start_with(&[])
    }

    /// [`start`](Self::start) with more flags.
    fn start_with(flags: &[&str]) -> Probe {
        // Extra probe flags for experiments, e.g. BENCH_PROBE_ARGS="-P 0xfffd" (no tcp_probe hook).
        let extra = std::env::var("BENCH_PROBE_ARGS").unwrap_or_default();
        let mut child = Command::new(BIN)
            .args(["-t", "1"])
            .args(flags)
            .args(extra.split_whitespace())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpprobe (run as root)");
        let out = child.stdout.take().unwrap();
        let lines =
            thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect());
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.starts_with("[INFO] attached") {
                    let _ = tx.send(());
                } else if line.starts_with("[ERROR]") {
                    eprintln!("probe: {line}");
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("probe did not attach");
        Probe { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> Vec<String> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        self.lines.join().unwrap_or_default()
    }
}

/// Runs `n` connections in this thread: connect, send 1 KiB, close, with the accepting end
/// (accept, read the payload, read the EOF, close) driven by the same thread. On loopback every
/// step completes inline, so the run has no cross-thread wake-ups, which keeps it repeatable.
fn workload(listener: &TcpListener, n: u64) -> (f64, f64) {
    let addr = listener.local_addr().expect("listener address");
    let payload = [0x5au8; PAYLOAD];
    let mut buf = [0u8; 4096];
    let cpu0 = cpu_secs_self();
    let t0 = Instant::now();
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).expect("connect");
        let (mut s, _) = listener.accept().expect("accept");
        c.write_all(&payload).expect("send");
        drop(c);
        let mut got = 0;
        loop {
            let k = s.read(&mut buf).expect("receive");
            if k == 0 {
                break;
            }
            got += k;
        }
        assert_eq!(got, PAYLOAD);
        drop(s);
    }
    (cpu_secs_self() - cpu0, t0.elapsed().as_secs_f64())
}

/// The least CPU of `k` back-to-back runs (and that run's wall time): other jobs on the machine
/// only ever add time, so the minimum is the most faithful estimate of the work itself.
fn workload_min(listener: &TcpListener, n: u64, k: usize) -> (f64, f64) {
    (0..k.max(1))
        .map(|_| workload(listener, n))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((0.0, 0.0))
}

/// Pins the calling thread to `cpu` so runs do not differ by migrations.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity act on it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Last cumulative (opens, closes) per role.
type PerRole = HashMap<String, (u64, u64)>;

/// From the probe's output: last cumulative (opens, closes) per role for `port`, and the last
/// tcp_bpf_stats (events, lost, map_full).
fn accounting(lines: &[String], port: u16) -> (PerRole, (u64, u64, u64)) {
    let mut roles = HashMap::new();
    let mut stats = (0, 0, 0);
    let me = std::process::id().to_string();
    for l in lines {
        let f: Vec<&str> = l.trim_matches('|').split('|').collect();
        match f.first() {
            // tgid, comm, role, client_ip, toa_client_ip, server_ip, client_port,
            // server_port, protocol, then link_count, opens, closes.
            Some(&"tcp_link") if f[1] == me && f[8] == port.to_string() => {
                let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
                roles.insert(f[3].to_string(), (n(11), n(12)));
            }
            Some(&"tcp_bpf_stats") => {
                let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
                stats = (n(2), n(3), n(4));
            }
            _ => {}
        }
    }
    (roles, stats)
}

/// One connection moves `bytes` over loopback in 1 MiB writes, a second thread reads them.
/// Returns (CPU of this process, wall) in seconds.
fn bulk(bytes: u64) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("listener address");
    let cpu0 = cpu_secs_self();
    let t0 = Instant::now();
    let reader = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = s.read(&mut buf).expect("receive");
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    let buf = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        c.write_all(&buf[..k]).expect("send");
        left -= k as u64;
    }
    drop(c);
    let got = reader.join().expect("reader");
    assert_eq!(got, bytes);
    (cpu_secs_self() - cpu0, t0.elapsed().as_secs_f64())
}

/// Connections per listener in [`hold`], below the default `somaxconn` (4096).
const PER_LISTENER: usize = 3000;

/// Bulk runs per mode and round; the least CPU counts.
const SUB_RUNS_BULK: usize = 2;

/// The least CPU of `k` bulk runs (and its wall time).
fn bulk_min(bytes: u64, k: usize) -> (f64, f64) {
    (0..k.max(1))
        .map(|_| bulk(bytes))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((0.0, 0.0))
}

/// `n` open connections. Only the client ends take a file of this process: the server ends
/// stay in their listeners' accept queues (full sockets all the same, ESTABLISHED and walked by
/// the iterator), so the file limit only needs `n` plus a few. Returns the client ends and the
/// listeners (dropping them closes everything).
fn hold(n: usize) -> (Vec<TcpStream>, Vec<TcpListener>) {
    let want = (n + 256) as libc::rlim_t;
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        if rl.rlim_cur < want {
            rl.rlim_cur = want.min(rl.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
    let listeners: Vec<TcpListener> = (0..n.div_ceil(PER_LISTENER))
        .map(|_| {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            // SAFETY: listen(2) again on our own listening socket raises its backlog.
            unsafe { libc::listen(l.as_raw_fd(), PER_LISTENER as i32 + 64) };
            l
        })
        .collect();
    let clients = (0..n)
        .map(|i| {
            let addr = listeners[i / PER_LISTENER]
                .local_addr()
                .expect("listener address");
            TcpStream::connect(addr).expect("connect (file limit?)")
        })
        .collect();
    (clients, listeners)
}

/// The last tcp_bpf_stats of a probe's output: (events, lost, map_full).
fn last_stats(lines: &[String]) -> (u64, u64, u64) {
    accounting(lines, 0).1
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The connect / send / close loop, without and with the probe.
fn loop_section(rounds: u64, conns: u64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Warm-up (page cache, allocator, first connections).
    workload(&listener, conns / 10);

    // Probe at idle.
    let probe = Probe::start();
    thread::sleep(Duration::from_secs(1));
    let (c0, t0) = (cpu_secs_of(probe.pid()), Instant::now());
    thread::sleep(Duration::from_secs(10));
    let idle_cpu = (cpu_secs_of(probe.pid()) - c0) / t0.elapsed().as_secs_f64();
    let (idle_rss, _) = rss_kib(probe.pid());
    probe.stop();

    let mut ratios = Vec::new();
    let mut wall_ratios = Vec::new();
    let (mut off_cpu, mut on_cpu) = (Vec::new(), Vec::new());
    let mut probe_cpu_frac = Vec::new();
    let mut event_rates = Vec::new();
    let mut load_rss = 0u64;
    let mut load_hwm = 0u64;
    let mut all_accounted = true;
    for round in 0..rounds {
        let mut off = (0.0, 0.0);
        let mut on = (0.0, 0.0);
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_probe in order {
            if !with_probe {
                off = workload_min(&listener, conns, SUB_RUNS);
                continue;
            }
            let probe = Probe::start();
            // Let the first period pass so it does not overlap the start of the run.
            thread::sleep(Duration::from_millis(1100));
            let pcpu0 = cpu_secs_of(probe.pid());
            let w0 = Instant::now();
            on = workload_min(&listener, conns, SUB_RUNS);
            let on_wall = w0.elapsed().as_secs_f64();
            let pcpu = cpu_secs_of(probe.pid()) - pcpu0;
            probe_cpu_frac.push(pcpu / on_wall);
            let (rss, hwm) = rss_kib(probe.pid());
            load_rss = load_rss.max(rss);
            load_hwm = load_hwm.max(hwm);
            // Two more periods so every close is reported.
            thread::sleep(Duration::from_millis(2500));
            let lines = probe.stop();
            let (roles, (events, lost, map_full)) = accounting(&lines, addr.port());
            let total = conns * SUB_RUNS as u64;
            let ok = ["client", "server"]
                .iter()
                .all(|r| roles.get(*r) == Some(&(total, total)))
                && lost == 0
                && map_full == 0;
            if !ok {
                all_accounted = false;
                eprintln!(
                    "round {round}: accounting mismatch: {roles:?} lost={lost} map_full={map_full}"
                );
            }
            // Every record of the run (the probe started just before it and the workload is the
            // only TCP activity of note), over the run's wall time.
            event_rates.push(events as f64 / on_wall);
        }
        eprintln!(
            "round {round}: off {:.3}s cpu / {:.3}s wall, on {:.3}s cpu / {:.3}s wall, ratio {:.3}",
            off.0,
            off.1,
            on.0,
            on.1,
            on.0 / off.0
        );
        ratios.push(on.0 / off.0);
        wall_ratios.push(on.1 / off.1);
        off_cpu.push(off.0);
        on_cpu.push(on.0);
    }

    let per_conn_us = |s: f64| s / conns as f64 * 1e6;
    let off_m = median(&mut off_cpu);
    let on_m = median(&mut on_cpu);
    println!(
        "tcpprobe overhead: {rounds} rounds x {SUB_RUNS} runs x {conns} loopback connect/send {PAYLOAD} B/close"
    );
    println!(
        "  workload CPU per connection: off {:.1} us, on {:.1} us",
        per_conn_us(off_m),
        per_conn_us(on_m)
    );
    println!(
        "  CPU ratio on/off (median of rounds): {:.3}",
        median(&mut ratios)
    );
    println!(
        "  wall ratio on/off (median of rounds): {:.3}",
        median(&mut wall_ratios)
    );
    println!(
        "  kernel->user records: {:.0}/s (median), every connection accounted, none lost: {}",
        median(&mut event_rates),
        if all_accounted { "yes" } else { "NO" }
    );
    println!(
        "  probe CPU: idle {:.3}% of a core, under load {:.2}% (median)",
        idle_cpu * 100.0,
        median(&mut probe_cpu_frac) * 100.0
    );
    println!("  probe RSS: idle {idle_rss} KiB, under load {load_rss} KiB (peak {load_hwm} KiB)");
}

/// The bulk transfer, without and with the probe.
fn bulk_section() {
    // Bulk transfer, alternating which mode goes first.
    let gb = env_num("BENCH_BULK_GB", 10).max(1);
    let bytes = gb << 30;
    bulk(bytes / 10);
    let mut bulk_ratios = Vec::new();
    let mut bulk_lost = 0;
    let mut bulk_rate = (0.0, 0.0);
    let rounds = env_num("BENCH_BULK_ROUNDS", 5).max(1);
    for round in 0..rounds {
        let mut off = (0.0, 0.0);
        let mut on = (0.0, 0.0);
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_probe in order {
            if !with_probe {
                off = bulk_min(bytes, SUB_RUNS_BULK);
                continue;
            }
            let probe = Probe::start();
            thread::sleep(Duration::from_millis(1100));
            on = bulk_min(bytes, SUB_RUNS_BULK);
            thread::sleep(Duration::from_millis(1500));
            let (_, lost, _) = last_stats(&probe.stop());
            bulk_lost += lost;
        }
        eprintln!(
            "bulk round {round}: off {:.2}s cpu / {:.2}s wall, on {:.2}s cpu / {:.2}s wall, ratio {:.3}",
            off.0, off.1, on.0, on.1, on.0 / off.0
        );
        bulk_ratios.push(on.0 / off.0);
        bulk_rate = (bytes as f64 / off.1 / 1e9, bytes as f64 / on.1 / 1e9);
    }
    println!(
        "tcpprobe bulk: {rounds} rounds x {SUB_RUNS_BULK} runs x {gb} GB over one loopback connection, 1 MiB writes"
    );
    println!(
        "  CPU ratio on/off (median): {:.3}; throughput last round off {:.2} GB/s, on {:.2} GB/s; lost events {bulk_lost}",
        median(&mut bulk_ratios),
        bulk_rate.0,
        bulk_rate.1
    );
}

/// The probe's cost with many open connections.
fn hold_section() {
    // Many open connections: the iterator walks every socket each period.
    let n = env_num("BENCH_HOLD_CONNS", 10_000) as usize;
    let held = hold(n);
    // Both ends of every connection are tracked: the socket cap must hold them.
    let cap = (2 * n + 4096).to_string();
    let probe = Probe::start_with(&["-M", &cap]);
    thread::sleep(Duration::from_millis(1500));
    let (c0, t0) = (cpu_secs_of(probe.pid()), Instant::now());
    thread::sleep(Duration::from_secs(10));
    let hold_cpu = (cpu_secs_of(probe.pid()) - c0) / t0.elapsed().as_secs_f64();
    let (hold_rss, hold_hwm) = rss_kib(probe.pid());
    let lines = probe.stop();
    let rows = lines.iter().filter(|l| l.starts_with("|tcp_rate|")).count();
    let (_, lost, map_full) = last_stats(&lines);
    println!(
        "tcpprobe with {n} open loopback connections ({} sockets; -t 1, every table):",
        2 * n
    );
    println!(
        "  probe CPU {:.2}% of a core, RSS {hold_rss} KiB (peak {hold_hwm} KiB); tcp_rate rows written {rows}; lost {lost}, map_full {map_full}",
        hold_cpu * 100.0
    );
    drop(held);
}

fn main() {
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = nums.first().copied().unwrap_or(7).max(1);
    let conns = nums.get(1).copied().unwrap_or(10_000).max(100);
    // BENCH_ONLY=loop|bulk|hold runs one part.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only == part;

    pin_to(0);
    if run("loop") {
        loop_section(rounds, conns);
    }
    if run("bulk") {
        bulk_section();
    }
    if run("hold") {
        hold_section();
    }
}
