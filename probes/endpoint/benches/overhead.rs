//! Overhead of endpoint on a loopback connect / accept / close storm and on a UDP send /
//! receive loop (needs root), modelled on tcpprobe's bench.
//!
//! Each round runs the workload without the probe, with the probe as configured by default
//! (both sub-probes) and with `-P 1` (tcp_socket only: no UDP hooks), in a rotating order; the
//! workload's CPU time (getrusage of this process, which on loopback includes the softirq
//! work done inline for both ends) is compared per round and the median ratio reported. With
//! the probe on, it checks that every connection was accounted (client active_open and server
//! passive_open equal the connections made, nothing lost) and reports the kernel->user records
//! per second. Last, the probe's CPU and RSS while 10,000 connections are open.
//!
//! The bench runs in a network namespace of its own (the probe too) with TIME_WAIT off
//! (`tcp_max_tw_buckets` 0, the namespace's own): otherwise the cost of a connect depends on
//! how many TIME_WAIT sockets the host holds (the port search), 33 to 62 µs per connection on
//! the same machine from one minute to the next, which no ratio survives.
//!
//! `cargo bench -p endpoint --bench overhead -- [rounds] [connections]` (default 7 x 10000,
//! each run 3 times per mode and round, the least CPU counting).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_endpoint");
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

fn cpu_secs_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clk_tck()
}

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
    fn start(extra: &[&str]) -> Probe {
        let mut child = Command::new(BIN)
            .args(["-t", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn endpoint (run as root)");
        let out = child.stdout.take().unwrap();
        let lines =
            thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect());
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.starts_with("[INFO] attached") {
                    let _ = tx.send(());
                } else if line.starts_with("[ERROR]") || line.starts_with("[WARN]") {
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

/// `n` times: connect, accept, the client closes, the server reads the end of stream and
/// closes.
fn workload(listener: &TcpListener, n: u64) -> (f64, f64) {
    let addr = listener.local_addr().expect("listener address");
    let mut buf = [0u8; 64];
    let cpu0 = cpu_secs_self();
    let t0 = Instant::now();
    for _ in 0..n {
        let c = TcpStream::connect(addr).expect("connect");
        let (mut s, _) = listener.accept().expect("accept");
        drop(c);
        assert_eq!(s.read(&mut buf).expect("receive"), 0);
        drop(s);
    }
    (cpu_secs_self() - cpu0, t0.elapsed().as_secs_f64())
}

/// Moves this process into a new network namespace with loopback up and TIME_WAIT off.
fn private_netns() {
    // SAFETY: unshare(2) of the network namespace, before any thread is started.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET) (run as root)");
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS on "lo" with a zeroed ifreq naming it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
            *d = *s as libc::c_char;
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0);
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req), 0, "lo up");
        libc::close(fd);
    }
    std::fs::write("/proc/sys/net/ipv4/tcp_max_tw_buckets", "0")
        .expect("tcp_max_tw_buckets of the namespace");
}

fn workload_min(listener: &TcpListener, n: u64, k: usize) -> (f64, f64) {
    (0..k.max(1))
        .map(|_| workload(listener, n))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((0.0, 0.0))
}

/// `n` datagrams of 256 bytes sent and read back over loopback.
fn udp_workload(n: u64) -> (f64, f64) {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(rx.local_addr().expect("addr")).expect("connect");
    let payload = [1u8; 256];
    let mut buf = [0u8; 512];
    let cpu0 = cpu_secs_self();
    let t0 = Instant::now();
    for _ in 0..n {
        tx.send(&payload).expect("send");
        assert_eq!(rx.recv(&mut buf).expect("recv"), 256);
    }
    (cpu_secs_self() - cpu0, t0.elapsed().as_secs_f64())
}

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

/// From the probe's output: the last active_open of our client row and passive_open of our
/// server row for `port`, and the last endpoint_bpf_stats (events, lost, map_full).
fn accounting(lines: &[String], port: u16) -> (HashMap<String, u64>, (u64, u64, u64)) {
    let mut roles = HashMap::new();
    let mut stats = (0, 0, 0);
    let me = std::process::id().to_string();
    for l in lines {
        let f: Vec<&str> = l.trim_matches('|').split('|').collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match f.first() {
            // keys (8), then listendrop accept_overflow syn_overflow passive_open
            // passive_open_failed retran_synacks retran_syn req_drops active_open ...
            Some(&"endpoint_tcp") if f[1] == me && f[7] == port.to_string() => {
                let v = if f[3] == "client" { n(17) } else { n(12) };
                roles.insert(f[3].to_string(), v);
            }
            Some(&"endpoint_bpf_stats") => stats = (n(2), n(3), n(4)),
            _ => {}
        }
    }
    (roles, stats)
}

/// Environment variable that turns this binary into the client side of [`hold`]:
/// `<port>:<n>` connects `n` times and keeps the connections until stdin closes.
const HOLD_ENV: &str = "ENDPOINT_BENCH_HOLD";

fn raise_nofile(want: u64) {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        if rl.rlim_cur < want as libc::rlim_t {
            rl.rlim_cur = (want as libc::rlim_t).min(rl.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// `n` open connections: the accepted ends here, the connecting ends in a child process (the
/// hard file limit of 20000 would not fit both ends in one process).
fn hold(n: usize) -> (Vec<TcpStream>, Child) {
    raise_nofile(n as u64 + 256);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    // SAFETY: listen(2) again on our socket, for a backlog that fits the burst.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4096) };
    let port = listener.local_addr().expect("listener address").port();
    let child = Command::new(std::env::current_exe().expect("own path"))
        .env(HOLD_ENV, format!("{port}:{n}"))
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn the connecting side");
    let accepted = (0..n)
        .map(|_| listener.accept().expect("accept (file limit?)").0)
        .collect();
    (accepted, child)
}

/// The child side of [`hold`].
fn hold_child(spec: &str) {
    let (port, n) = spec.split_once(':').expect("port:n");
    let (port, n): (u16, usize) = (port.parse().expect("port"), n.parse().expect("n"));
    raise_nofile(n as u64 + 256);
    let conns: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect (file limit?)"))
        .collect();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(conns);
}

fn main() {
    if let Ok(spec) = std::env::var(HOLD_ENV) {
        hold_child(&spec);
        return;
    }
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = nums.first().copied().unwrap_or(7).max(1);
    let conns = nums.get(1).copied().unwrap_or(10_000).max(100);

    private_netns();
    pin_to(0);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    workload(&listener, conns / 10);

    let probe = Probe::start(&[]);
    thread::sleep(Duration::from_secs(1));
    let (c0, t0) = (cpu_secs_of(probe.pid()), Instant::now());
    thread::sleep(Duration::from_secs(5));
    let idle_cpu = (cpu_secs_of(probe.pid()) - c0) / t0.elapsed().as_secs_f64();
    let (idle_rss, _) = rss_kib(probe.pid());
    probe.stop();

    // Modes: None = probe off; Some(args) = probe on with these arguments.
    let modes: [Option<&[&str]>; 3] = [None, Some(&[]), Some(&["-P", "1"])];
    let mut ratios = [Vec::new(), Vec::new()];
    let mut udp_ratios = [Vec::new(), Vec::new()];
    let (mut off_cpu, mut on_cpu) = (Vec::new(), Vec::new());
    let mut probe_cpu_frac = Vec::new();
    let mut event_rates = Vec::new();
    let mut all_accounted = true;
    let mut total_lost = 0u64;
    for round in 0..rounds {
        let mut tcp = [(0.0, 0.0); 3];
        let mut udp = [(0.0, 0.0); 3];
        for k in 0..modes.len() {
            let m = (k + round as usize) % modes.len();
            let Some(extra) = modes[m] else {
                tcp[m] = workload_min(&listener, conns, SUB_RUNS);
                udp[m] = udp_workload(conns * 5);
                continue;
            };
            let probe = Probe::start(extra);
            thread::sleep(Duration::from_millis(1100));
            let pcpu0 = cpu_secs_of(probe.pid());
            let w0 = Instant::now();
            tcp[m] = workload_min(&listener, conns, SUB_RUNS);
            let on_wall = w0.elapsed().as_secs_f64();
            let pcpu = cpu_secs_of(probe.pid()) - pcpu0;
            udp[m] = udp_workload(conns * 5);
            thread::sleep(Duration::from_millis(2500));
            let lines = probe.stop();
            let (roles, (events, lost, map_full)) = accounting(&lines, addr.port());
            let total = conns * SUB_RUNS as u64;
            total_lost += lost;
            let ok = roles.get("client") == Some(&total)
                && roles.get("server") == Some(&total)
                && lost == 0
                && map_full == 0;
            if !ok {
                all_accounted = false;
                eprintln!(
                    "round {round} {extra:?}: accounting mismatch: {roles:?} (want {total}) lost={lost} map_full={map_full}"
                );
            }
            if m == 1 {
                probe_cpu_frac.push(pcpu / on_wall);
                event_rates.push(events as f64 / on_wall);
            }
        }
        for i in 0..2 {
            ratios[i].push(tcp[i + 1].0 / tcp[0].0);
            udp_ratios[i].push(udp[i + 1].0 / udp[0].0);
        }
        eprintln!(
            "round {round}: tcp off {:.3}s / default {:.3}s ({:.3}) / -P 1 {:.3}s ({:.3}); udp off {:.3}s / default {:.3}s ({:.3}) / -P 1 {:.3}s ({:.3})",
            tcp[0].0,
            tcp[1].0,
            tcp[1].0 / tcp[0].0,
            tcp[2].0,
            tcp[2].0 / tcp[0].0,
            udp[0].0,
            udp[1].0,
            udp[1].0 / udp[0].0,
            udp[2].0,
            udp[2].0 / udp[0].0,
        );
        off_cpu.push(tcp[0].0);
        on_cpu.push(tcp[1].0);
    }

    let per_conn_us = |s: f64| s / conns as f64 * 1e6;
    let off_m = median(&mut off_cpu);
    let on_m = median(&mut on_cpu);
    println!(
        "endpoint overhead: {rounds} rounds x {SUB_RUNS} runs x {conns} loopback connect/accept/close (private netns, no TIME_WAIT)"
    );
    println!(
        "  workload CPU per connection: off {:.1} us, on (default) {:.1} us",
        per_conn_us(off_m),
        per_conn_us(on_m)
    );
    println!(
        "  TCP CPU ratio on/off (median of rounds): default {:.3}, -P 1 (tcp_socket only) {:.3}",
        median(&mut ratios[0]),
        median(&mut ratios[1])
    );
    println!(
        "  UDP send+recv loop ({} datagrams) CPU ratio on/off (median): default {:.3}, -P 1 {:.3}",
        conns * 5,
        median(&mut udp_ratios[0]),
        median(&mut udp_ratios[1])
    );
    println!(
        "  kernel->user records: {:.0}/s (median), lost {total_lost}, every connection accounted: {}",
        median(&mut event_rates),
        if all_accounted { "yes" } else { "NO" }
    );
    println!(
        "  probe CPU: idle {:.3}% of a core, under load {:.2}% (median)",
        idle_cpu * 100.0,
        median(&mut probe_cpu_frac) * 100.0
    );
    println!("  probe RSS: idle {idle_rss} KiB");

    let (held, mut holder) = hold(10_000);
    let probe = Probe::start(&[]);
    thread::sleep(Duration::from_secs(2));
    let (c0, t0) = (cpu_secs_of(probe.pid()), Instant::now());
    thread::sleep(Duration::from_secs(5));
    let cpu = (cpu_secs_of(probe.pid()) - c0) / t0.elapsed().as_secs_f64();
    let (rss, hwm) = rss_kib(probe.pid());
    let lines = probe.stop();
    let rows = lines
        .iter()
        .rev()
        .skip(1)
        .take_while(|l| !l.starts_with("|endpoint_bpf_stats|"))
        .count();
    println!(
        "  with 10000 open loopback connections (20000 sockets): probe CPU {:.3}% of a core, RSS {rss} KiB (peak {hwm} KiB), {rows} rows in the last period",
        cpu * 100.0
    );
    drop(held);
    drop(holder.stdin.take());
    let _ = holder.wait();
}
