//! Runs the real `endpoint` binary (needs root and eBPF, as in CI) against traffic generated
//! here, and compares its counters with the kernel's own (`/proc/net/netstat`, `/proc/net/snmp`)
//! or with the bytes this test moved.
//!
//! Tests that compare with host-wide kernel counters hold [`KERNEL_COUNTERS`] so they do not
//! disturb each other; the machine is otherwise assumed quiet (CI).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_endpoint");
static KERNEL_COUNTERS: Mutex<()> = Mutex::new(());

struct Probe {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stdin: ChildStdin,
}

impl Probe {
    fn start(args: &[&str]) -> Probe {
        Probe::start_with(args, None)
    }

    /// [`start`](Self::start), writing `first` on stdin right after the spawn as the daemon does.
    fn start_with(args: &[&str], first: Option<&str>) -> Probe {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn endpoint");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(line) = first {
            writeln!(stdin, "{line}").unwrap();
            stdin.flush().unwrap();
        }
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready) = mpsc::channel();
        let err_buf = Arc::clone(&stderr);
        let err_pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("[INFO] attached") {
                    let _ = ready_tx.send(());
                }
                let mut buf = err_buf.lock().unwrap();
                buf.push_str(&line);
                buf.push('\n');
            }
        });
        if ready.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("probe did not attach; stderr:\n{}", stderr.lock().unwrap());
        }
        Probe {
            child,
            lines,
            stderr,
            stdin,
        }
    }

    /// Records of `periods` whole periods from now on (endpoint_bpf_stats ends a period);
    /// lines already queued (written before this call) are dropped first.
    fn records_for(&self, periods: usize) -> Vec<Vec<String>> {
        while self.lines.try_recv().is_ok() {}
        let mut out = Vec::new();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(10 + 4 * periods as u64);
        while seen < periods {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let f = parse(&line);
                    if f[0] == "endpoint_bpf_stats" {
                        seen += 1;
                    }
                    out.push(f);
                }
                Err(_) => panic!(
                    "only {seen} of {periods} periods arrived; stderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
        out
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn wait_log(&self, needle: &str) {
        self.wait_log_n(needle, 1);
    }

    /// Waits until `needle` has been logged `n` times (then drops the records read so far).
    fn wait_log_n(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stderr.lock().unwrap().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on stderr:\n{}",
                self.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
        while self.lines.try_recv().is_ok() {}
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the probe exited; stderr:\n{}",
            self.stderr.lock().unwrap()
        );
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn parse(line: &str) -> Vec<String> {
    let inner = line
        .strip_prefix('|')
        .and_then(|l| l.strip_suffix('|'))
        .unwrap_or_else(|| panic!("not a record line: {line}"));
    inner.split('|').map(str::to_string).collect()
}

const TCP_FIELDS: &[&str] = &[
    "listendrop",
    "accept_overflow",
    "syn_overflow",
    "passive_open",
    "passive_open_failed",
    "retran_synacks",
    "retran_syn",
    "req_drops",
    "active_open",
    "active_open_failed",
    "syn_sent",
    "syn_drop",
    "synack_sent",
    "active_open_refused",
    "active_open_timeout",
    "active_open_unreach",
    "listen_drop_backlog",
    "listen_drop_other",
    "accept_queue",
    "accept_queue_max",
    "estab_latency",
];
const TCP_KEYS: usize = 8;
const UDP_FIELDS: &[&str] = &[
    "udp_rcv_drops",
    "bind_sends",
    "bind_rcvs",
    "sends",
    "rcvs",
    "send_errors",
    "rcvbuf_errors",
    "rcv_mem_errors",
];
const UDP_KEYS: usize = 6;

fn tcp_num(rec: &[String], name: &str) -> u64 {
    let i = TCP_FIELDS.iter().position(|n| *n == name).unwrap();
    rec[1 + TCP_KEYS + i]
        .parse()
        .unwrap_or_else(|_| panic!("{name} not a number in {rec:?}"))
}

fn udp_num(rec: &[String], name: &str) -> u64 {
    let i = UDP_FIELDS.iter().position(|n| *n == name).unwrap();
    rec[1 + UDP_KEYS + i]
        .parse()
        .unwrap_or_else(|_| panic!("{name} not a number in {rec:?}"))
}

fn me() -> String {
    std::process::id().to_string()
}

/// The last endpoint_tcp record of our process with `role` and server port `port`.
fn last_tcp<'a>(records: &'a [Vec<String>], role: &str, port: u16) -> &'a Vec<String> {
    records
        .iter()
        .rev()
        .find(|r| {
            r[0] == "endpoint_tcp" && r[1] == me() && r[3] == role && r[7] == port.to_string()
        })
        .unwrap_or_else(|| {
            let mine: Vec<_> = records.iter().filter(|r| r[1] == me()).collect();
            panic!("no {role} record for port {port}; ours: {mine:?}")
        })
}

/// `Group: Name` of /proc/net/netstat or /proc/net/snmp (header line, then values line).
fn kernel_counter(file: &str, group: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(group)).collect();
    assert!(lines.len() >= 2, "{group} missing in {file}");
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let values: Vec<&str> = lines[1].split_whitespace().collect();
    let i = names
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("{group} {name} missing in {file}"));
    values[i].parse().unwrap()
}

fn set_int_opt(fd: i32, level: i32, name: i32, value: i32) {
    // SAFETY: setsockopt on a live socket with a correctly sized int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt {level}/{name}");
}

/// A non-blocking connect (socket left in SYN_SENT or connected), as a raw fd owner.
struct RawSock(i32);

impl RawSock {
    fn connect_nonblocking(addr: SocketAddr) -> RawSock {
        RawSock::connect_with(addr, |_| {})
    }

    /// [`connect_nonblocking`](Self::connect_nonblocking) with `setup` run on the socket
    /// before the connect.
    fn connect_with(addr: SocketAddr, setup: impl FnOnce(i32)) -> RawSock {
        // SAFETY: plain socket(2)/connect(2) with a correctly built sockaddr of the family.
        unsafe {
            let family = if addr.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            assert!(fd >= 0);
            setup(fd);
            match addr {
                SocketAddr::V4(v4) => {
                    let sa = libc::sockaddr_in {
                        sin_family: libc::AF_INET as libc::sa_family_t,
                        sin_port: v4.port().to_be(),
                        sin_addr: libc::in_addr {
                            s_addr: u32::from(*v4.ip()).to_be(),
                        },
                        sin_zero: [0; 8],
                    };
                    libc::connect(
                        fd,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    );
                }
                SocketAddr::V6(v6) => {
                    let sa = libc::sockaddr_in6 {
                        sin6_family: libc::AF_INET6 as libc::sa_family_t,
                        sin6_port: v6.port().to_be(),
                        sin6_flowinfo: 0,
                        sin6_addr: libc::in6_addr {
                            s6_addr: v6.ip().octets(),
                        },
                        sin6_scope_id: 0,
                    };
                    libc::connect(
                        fd,
                        (&sa as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    );
                }
            }
            RawSock(fd)
        }
    }
}

impl Drop for RawSock {
    fn drop(&mut self) {
        // SAFETY: closing the fd this struct owns.
        unsafe { libc::close(self.0) };
    }
}

/// `n` non-blocking connects to a listener with backlog 1 that never accepts: the overflow
/// and drop counters of its server row rise by the kernel's own counts.
fn listen_overflow_scenario(bind: &str, n: usize) {
    let _g = KERNEL_COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    let probe = Probe::start(&["-t", "1"]);
    let listener = TcpListener::bind(bind).unwrap();
    // SAFETY: listen(2) again on our socket, to set the backlog to 1.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 1) }, 0);
    let addr = listener.local_addr().unwrap();
    let port = addr.port();
    let overflows0 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenOverflows");
    let drops0 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops");
    let clients: Vec<RawSock> = (0..n).map(|_| RawSock::connect_nonblocking(addr)).collect();
    thread::sleep(Duration::from_millis(300));
    let overflows = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenOverflows") - overflows0;
    let drops = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops") - drops0;
    let records = probe.records_for(2);
    // Read the kernel again after the records: SYN retransmits (1 s) may have added drops.
    let overflows2 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenOverflows") - overflows0;
    let drops2 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops") - drops0;
    assert!(
        overflows as usize >= n - 2,
        "backlog 1 keeps 2 connections: {overflows}"
    );
    let s = last_tcp(&records, "server", port);
    let (ours_ao, ours_ld) = (tcp_num(s, "accept_overflow"), tcp_num(s, "listendrop"));
    assert!(
        (overflows..=overflows2).contains(&ours_ao),
        "accept_overflow {ours_ao}, kernel ListenOverflows delta {overflows}..={overflows2}: {s:?}"
    );
    assert!(
        (drops..=drops2).contains(&ours_ld),
        "listendrop {ours_ld}, kernel ListenDrops delta {drops}..={drops2}: {s:?}"
    );
    assert_eq!(tcp_num(s, "passive_open"), 2, "{s:?}");
    assert_eq!(tcp_num(s, "syn_overflow"), 0, "{s:?}");
    assert_eq!(tcp_num(s, "req_drops"), 0, "{s:?}");
    assert!(tcp_num(s, "synack_sent") >= 2, "{s:?}");
    // The listener is alive: its accept queue holds the two connections, its limit is 1.
    assert_eq!(tcp_num(s, "accept_queue"), 2, "{s:?}");
    assert_eq!(tcp_num(s, "accept_queue_max"), 1, "{s:?}");
    let any = if addr.is_ipv4() { "0.0.0.0" } else { "::" };
    assert_eq!((s[4].as_str(), s[5].as_str()), (any, any), "{s:?}");
    assert_eq!(s[6], addr.ip().to_string(), "{s:?}");
    assert_eq!(s[8], if addr.is_ipv4() { "2" } else { "10" }, "{s:?}");
    // Two accepted connections: two server-side establish latencies.
    let hist: Vec<u64> = s[1 + TCP_KEYS + TCP_FIELDS.len() - 1]
        .split(' ')
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(hist[2 * 14], 2, "{s:?}");
    let c = last_tcp(&records, "client", port);
    assert_eq!(tcp_num(c, "active_open"), n as u64, "{c:?}");
    assert!(tcp_num(c, "syn_sent") >= n as u64, "{c:?}");
    let hist: Vec<u64> = c[1 + TCP_KEYS + TCP_FIELDS.len() - 1]
        .split(' ')
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(hist[2 * 14], 2, "two connects established: {c:?}");
    drop(clients);
}

#[test]
fn listen_overflow_matches_the_kernels_counters() {
    listen_overflow_scenario("127.0.0.1:0", 50);
}

#[test]
fn ipv6_listen_overflow_matches_the_kernels_counters() {
    listen_overflow_scenario("[::1]:0", 20);
}

/// SYNs to one full listener handled on both CPUs at once: every drop is counted once (two
/// CPUs reading the listener's drop counter at the same time must not both count the same
/// increment).
#[test]
fn concurrent_syns_on_two_cpus_count_each_drop_once() {
    let _g = KERNEL_COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    let probe = Probe::start(&["-t", "1"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen(2) again on our socket, to set the backlog to 1.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 1) }, 0);
    let addr = listener.local_addr().unwrap();
    let held: Vec<RawSock> = (0..2).map(|_| RawSock::connect_nonblocking(addr)).collect();
    thread::sleep(Duration::from_millis(100));
    let overflows0 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenOverflows");
    let drops0 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops");
    let cpus = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let storms: Vec<_> = (0..cpus.max(2))
        .map(|cpu| {
            thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t with one CPU set, for this thread only.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu % cpus, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                // Closed at once: a socket in SYN_SENT leaves nothing behind.
                for _ in 0..1500 {
                    drop(RawSock::connect_nonblocking(addr));
                }
            })
        })
        .collect();
    for s in storms {
        s.join().unwrap();
    }
    thread::sleep(Duration::from_millis(100));
    let overflows = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenOverflows") - overflows0;
    let drops = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops") - drops0;
    let records = probe.records_for(2);
    let overflows2 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenOverflows") - overflows0;
    let drops2 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops") - drops0;
    assert!(overflows >= 2000, "{overflows}");
    let s = last_tcp(&records, "server", addr.port());
    let (ao, ld) = (tcp_num(s, "accept_overflow"), tcp_num(s, "listendrop"));
    assert!(
        (overflows..=overflows2).contains(&ao),
        "accept_overflow {ao}, kernel {overflows}..={overflows2}"
    );
    assert!(
        (drops..=drops2).contains(&ld),
        "listendrop {ld}, kernel {drops}..={drops2}"
    );
    drop(held);
}

/// SYNs and handshake ACKs of one listener dropped on both CPUs at once, while an acceptor
/// keeps the accept queue going from full to not full: each packet's drops count once and in
/// its own class (a SYN's CPU once took the increments of an ACK in flight on the other CPU as
/// its own: accept_overflow above ListenOverflows).
#[test]
fn syn_and_ack_drops_on_two_cpus_split_like_the_kernel() {
    let _g = KERNEL_COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    let probe = Probe::start(&["-t", "1"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen(2) again on our socket, to set the backlog to 1.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 1) }, 0);
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let over0 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenOverflows");
    let drops0 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acceptor = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut accepted = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((c, _)) = listener.accept() {
                    accepted += 1;
                    drop(c);
                }
                thread::sleep(Duration::from_millis(2));
            }
            accepted
        })
    };
    let storms: Vec<_> = (0..2)
        .map(|cpu| {
            thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t with one CPU set, for this thread only.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                // Kept open: their handshakes complete or their ACKs overflow.
                let mut held = Vec::new();
                for _ in 0..400 {
                    held.push(RawSock::connect_nonblocking(addr));
                    thread::sleep(Duration::from_micros(200));
                }
                held
            })
        })
        .collect();
    let held: Vec<Vec<RawSock>> = storms.into_iter().map(|s| s.join().unwrap()).collect();
    thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    acceptor.join().unwrap();
    thread::sleep(Duration::from_millis(100));
    let over = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenOverflows") - over0;
    let drops = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops") - drops0;
    let records = probe.records_for(2);
    let over2 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenOverflows") - over0;
    let drops2 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops") - drops0;
    assert!(over >= 50, "too few overflows to tell: {over}");
    let s = last_tcp(&records, "server", addr.port());
    let (ao, ld) = (tcp_num(s, "accept_overflow"), tcp_num(s, "listendrop"));
    assert!(
        (over..=over2).contains(&ao),
        "accept_overflow {ao}, kernel {over}..={over2}: {s:?}"
    );
    assert!(
        (drops..=drops2).contains(&ld),
        "listendrop {ld}, kernel {drops}..={drops2}: {s:?}"
    );
    drop(held);
}

#[test]
fn listeners_older_than_the_probe_report_changes_since_it_started() {
    let _g = KERNEL_COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen(2) again on our socket, to set the backlog to 1.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 1) }, 0);
    let addr = listener.local_addr().unwrap();
    let mut clients: Vec<RawSock> = (0..10)
        .map(|_| RawSock::connect_nonblocking(addr))
        .collect();
    thread::sleep(Duration::from_millis(200));
    // The probe's baseline is taken between these two readings (the old clients' SYN
    // retransmits may land on either side of it): the drops it reports lie between those after
    // the second reading and those after the first.
    let before_start = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops");
    let probe = Probe::start(&["-t", "1"]);
    let drops0 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops");
    clients.extend((0..7).map(|_| RawSock::connect_nonblocking(addr)));
    thread::sleep(Duration::from_millis(200));
    let drops = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops") - drops0;
    let records = probe.records_for(2);
    let drops2 = kernel_counter("/proc/net/netstat", "TcpExt:", "ListenDrops") - before_start;
    let s = last_tcp(&records, "server", addr.port());
    assert!(drops >= 7, "{drops}");
    // The owner came from /proc; only the drops after the start count.
    assert_eq!(
        s[2],
        std::fs::read_to_string("/proc/self/comm")
            .unwrap()
            .trim_end()
    );
    let ld = tcp_num(s, "listendrop");
    assert!(
        (drops..=drops2).contains(&ld),
        "{ld} vs {drops}..={drops2}: {s:?}"
    );
    let ao = tcp_num(s, "accept_overflow");
    assert!(
        (drops..=drops2).contains(&ao),
        "{ao} vs {drops}..={drops2}: {s:?}"
    );
    assert_eq!(tcp_num(s, "passive_open"), 0, "{s:?}");
    drop(clients);
}

#[test]
fn key_cap_overflow_is_counted() {
    let probe = Probe::start(&["-t", "1", "-M", "1"]);
    let ls: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    for l in &ls {
        drop(TcpStream::connect(l.local_addr().unwrap()).unwrap());
    }
    let records = probe.records_for(2);
    let stats = records
        .iter()
        .rev()
        .find(|r| r[0] == "endpoint_bpf_stats")
        .unwrap();
    assert_eq!(stats[1], "endpoint");
    let map_full: u64 = stats[4].parse().unwrap();
    assert!(map_full >= 2, "{stats:?}");
    let last_period: Vec<&Vec<String>> = records
        .iter()
        .rev()
        .skip(1)
        .take_while(|r| r[0] != "endpoint_bpf_stats")
        .filter(|r| r[0] == "endpoint_tcp")
        .collect();
    assert!(last_period.len() <= 1, "{last_period:?}");
}

#[test]
fn refused_connect_is_counted_with_its_reason() {
    let probe = Probe::start(&["-t", "1"]);
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for _ in 0..3 {
        let err = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    let records = probe.records_for(2);
    let c = last_tcp(&records, "client", port);
    assert_eq!(tcp_num(c, "active_open"), 3, "{c:?}");
    assert_eq!(tcp_num(c, "active_open_failed"), 3, "{c:?}");
    assert_eq!(tcp_num(c, "active_open_refused"), 3, "{c:?}");
    assert_eq!(tcp_num(c, "active_open_timeout"), 0, "{c:?}");
    assert_eq!(c[4], "127.0.0.1", "client_ip is the local address");
}

/// A network namespace with a veth peer at 10.213.<n>.2 that drops every TCP packet; removed
/// on drop (which also removes the veth pair).
struct Blackhole {
    ns: String,
}

fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is iproute2/iptables installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Blackhole {
    fn new() -> Blackhole {
        let n = std::process::id() % 250;
        let ns = format!("eptest{}", std::process::id());
        let (a, b) = (format!("epa{n}"), format!("epb{n}"));
        let bh = Blackhole { ns: ns.clone() };
        run(&["ip", "netns", "add", &ns]);
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        run(&["ip", "link", "set", &b, "netns", &ns]);
        run(&["ip", "addr", "add", &format!("10.213.{n}.1/30"), "dev", &a]);
        run(&["ip", "link", "set", &a, "up"]);
        run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("10.213.{n}.2/30"),
            "dev",
            &b,
        ]);
        run(&["ip", "netns", "exec", &ns, "ip", "link", "set", &b, "up"]);
        run(&[
            "ip", "netns", "exec", &ns, "iptables", "-A", "INPUT", "-p", "tcp", "-j", "DROP",
        ]);
        bh
    }

    fn addr(&self) -> SocketAddr {
        let n = (std::process::id() % 250) as u8;
        SocketAddr::from(([10, 213, n, 2], 9))
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn timed_out_connect_counts_syn_retransmits_and_the_timeout() {
    let _g = KERNEL_COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    let bh = Blackhole::new();
    let probe = Probe::start(&["-t", "1"]);
    let target = bh.addr();
    let started = Instant::now();
    let (s, syn_retrans) = socket_syncnt_connect(target, 1);
    assert_eq!(
        s,
        Some(libc::ETIMEDOUT),
        "connect to the blackhole must time out"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let records = probe.records_for(2);
    let c = last_tcp(&records, "client", 9);
    assert_eq!(c[6], target.ip().to_string(), "{c:?}");
    assert_eq!(tcp_num(c, "active_open"), 1, "{c:?}");
    // TCP_SYNCNT 1 gives a 3 s budget (1 s + 2 s): the kernel retransmits at 1 s and 3 s.
    assert!(syn_retrans >= 1);
    assert_eq!(
        tcp_num(c, "retran_syn"),
        syn_retrans,
        "kernel TCPSynRetrans: {c:?}"
    );
    assert_eq!(tcp_num(c, "syn_sent"), 1 + syn_retrans, "{c:?}");
    assert_eq!(tcp_num(c, "active_open_failed"), 1, "{c:?}");
    assert_eq!(tcp_num(c, "active_open_timeout"), 1, "{c:?}");
    assert_eq!(tcp_num(c, "active_open_refused"), 0, "{c:?}");
}

/// A veth pair whose host end is 10.215.<n>.1/24 and whose peer, up in a network namespace
/// of the test, has no address: nothing answers ARP for 10.215.<n>.2. Removed on drop.
struct DeadNeighbour {
    ns: String,
}

impl DeadNeighbour {
    fn new() -> DeadNeighbour {
        let n = std::process::id() % 250;
        let ns = format!("epn{}", std::process::id());
        let (a, b) = (format!("epna{n}"), format!("epnb{n}"));
        let dn = DeadNeighbour { ns: ns.clone() };
        run(&["ip", "netns", "add", &ns]);
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        run(&["ip", "link", "set", &b, "netns", &ns]);
        run(&["ip", "addr", "add", &format!("10.215.{n}.1/24"), "dev", &a]);
        // Resolution gives up after 2 probes 300 ms apart: before the SYN's 1 s retransmit.
        for (k, v) in [
            ("mcast_solicit", "2"),
            ("ucast_solicit", "2"),
            ("retrans_time_ms", "300"),
        ] {
            std::fs::write(format!("/proc/sys/net/ipv4/neigh/{a}/{k}"), v)
                .unwrap_or_else(|e| panic!("neigh {k} of {a}: {e}"));
        }
        run(&["ip", "link", "set", &a, "up"]);
        run(&["ip", "netns", "exec", &ns, "ip", "link", "set", &b, "up"]);
        dn
    }

    fn addr(&self, port: u16) -> SocketAddr {
        let n = (std::process::id() % 250) as u8;
        SocketAddr::from(([10, 215, n, 2], port))
    }
}

impl Drop for DeadNeighbour {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A connect to an address nothing answers ARP for: the SYN waits in the neighbour queue and is
/// freed when resolution fails (drop reason NEIGH_FAILED, ~0.6 s here, before any SYN
/// retransmit), and the connect fails with EHOSTUNREACH. That SYN is the client's `syn_drop`.
#[test]
fn syn_freed_by_a_failed_neighbour_lookup_is_a_syn_drop() {
    let link = DeadNeighbour::new();
    let probe = Probe::start(&["-t", "1"]);
    let target = link.addr(19);
    let (err, retrans) = socket_syncnt_connect(target, 2);
    let records = probe.records_for(2);
    let c = records
        .iter()
        .rev()
        .find(|r| {
            r[0] == "endpoint_tcp"
                && r[1] == me()
                && r[3] == "client"
                && r[6] == target.ip().to_string()
        })
        .unwrap_or_else(|| panic!("no client row for {target}: {records:?}"));
    assert_eq!(tcp_num(c, "active_open"), 1, "{c:?}");
    assert_eq!(tcp_num(c, "active_open_failed"), 1, "{c:?}");
    assert_eq!(err, Some(libc::EHOSTUNREACH), "{c:?}");
    assert_eq!(retrans, 0, "resolution fails before the first retransmit");
    assert_eq!(tcp_num(c, "retran_syn"), 0, "{c:?}");
    assert_eq!(tcp_num(c, "active_open_unreach"), 1, "{c:?}");
    assert_eq!(tcp_num(c, "syn_drop"), 1, "the one SYN sent, freed: {c:?}");
}

/// Non-blocking connect with TCP_SYNCNT, watched until it leaves SYN_SENT; returns the
/// socket's error (SO_ERROR) and its retransmissions as the kernel counted them while it was
/// connecting (TCP_INFO tcpi_total_retrans; the failed connect's disconnect resets it, hence the
/// polling).
fn socket_syncnt_connect(addr: SocketAddr, syncnt: i32) -> (Option<i32>, u64) {
    let sock = RawSock::connect_with(addr, |fd| {
        set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_SYNCNT, syncnt)
    });
    let fd = sock.0;
    let mut retrans = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // SAFETY: getsockopt into a correctly sized tcp_info of ours.
        let info = unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            );
            assert_eq!(rc, 0, "TCP_INFO");
            info
        };
        // TCP_SYN_SENT is 2.
        if info.tcpi_state != 2 {
            break;
        }
        retrans = retrans.max(u64::from(info.tcpi_total_retrans));
        assert!(Instant::now() < deadline, "still connecting after 20 s");
        thread::sleep(Duration::from_millis(20));
    }
    let mut err: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: getsockopt into an int of ours.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut i32).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_ERROR");
    ((err != 0).then_some(err), retrans)
}

#[test]
fn udp_drops_and_bytes_match_the_kernel() {
    let _g = KERNEL_COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    let probe = Probe::start(&["-t", "1"]);
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    set_int_opt(rx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 1);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let before = kernel_counter("/proc/net/snmp", "Udp:", "RcvbufErrors");
    let payload = [5u8; 700];
    let n = 500usize;
    for _ in 0..n {
        assert_eq!(tx.send_to(&payload, rx.local_addr().unwrap()).unwrap(), 700);
    }
    let rcvbuf_errors = kernel_counter("/proc/net/snmp", "Udp:", "RcvbufErrors") - before;
    assert!(rcvbuf_errors > 0, "the tiny buffer must overflow");
    // A second pair that reads: bind_rcvs counts what the application read.
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..10usize {
        tx.send_to(&payload[..100 + i], echo.local_addr().unwrap())
            .unwrap();
    }
    let mut buf = [0u8; 2048];
    let mut read = 0usize;
    for _ in 0..10 {
        read += echo.recv(&mut buf).unwrap();
    }
    let records = probe.records_for(2);
    let find = |port: u16| {
        records
            .iter()
            .rev()
            .find(|r| r[0] == "endpoint_udp" && r[3] == port.to_string() && r[2] == "127.0.0.1")
            .unwrap_or_else(|| panic!("no endpoint_udp record for port {port}"))
            .clone()
    };
    let r = find(rx.local_addr().unwrap().port());
    assert_eq!(udp_num(&r, "udp_rcv_drops"), rcvbuf_errors, "{r:?}");
    assert_eq!(udp_num(&r, "rcvbuf_errors"), rcvbuf_errors, "{r:?}");
    assert_eq!(
        r[1],
        me(),
        "owner of a socket that never sent nor read, from /proc"
    );
    let t = find(tx.local_addr().unwrap().port());
    assert_eq!(udp_num(&t, "bind_sends"), (n * 700 + read) as u64, "{t:?}");
    assert_eq!(udp_num(&t, "sends"), (n + 10) as u64, "{t:?}");
    assert_eq!(t[1], me());
    let e = find(echo.local_addr().unwrap().port());
    assert_eq!(udp_num(&e, "bind_rcvs"), read as u64, "{e:?}");
    assert_eq!(udp_num(&e, "rcvs"), 10, "{e:?}");
    assert_eq!(udp_num(&e, "udp_rcv_drops"), 0, "{e:?}");
}

fn tables_of(records: &[Vec<String>]) -> BTreeSet<String> {
    records.iter().map(|r| r[0].clone()).collect()
}

#[test]
fn control_channel_selects_tables_and_processes_without_restart() {
    let mut probe = Probe::start(&["-t", "1"]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.send_to(b"x", u.local_addr().unwrap()).unwrap();
    let all = probe.records_for(2);
    let want: BTreeSet<String> = ["endpoint_tcp", "endpoint_udp", "endpoint_bpf_stats"]
        .map(String::from)
        .into();
    assert_eq!(tables_of(&all), want);
    let pid = probe.child.id();

    probe.send(r#"{"probe":["udp_socket"],"probe_bits":2}"#);
    probe.wait_log("[INFO] control: tables 0xffffffff -> 0x2");
    let after = probe.records_for(2);
    let want: BTreeSet<String> = ["endpoint_udp", "endpoint_bpf_stats"]
        .map(String::from)
        .into();
    assert_eq!(tables_of(&after), want);
    probe.assert_alive();
    assert_eq!(probe.child.id(), pid);

    probe.send(&format!(
        r#"{{"probe_bits":3,"snoop":{{"mode":"include","pids":[{}]}}}}"#,
        me()
    ));
    probe.wait_log("[INFO] control: tables 0x2 -> 0x3, snoop include 1 pid");
    let mine = probe.records_for(2);
    let tgids: BTreeSet<String> = mine
        .iter()
        .filter(|r| r[0] != "endpoint_bpf_stats")
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(tgids, [me()].into());
    assert!(mine
        .iter()
        .any(|r| r[0] == "endpoint_tcp" && r[7] == l.local_addr().unwrap().port().to_string()));

    probe.send(&format!(
        r#"{{"snoop":{{"mode":"exclude","pids":[{}]}}}}"#,
        me()
    ));
    probe.wait_log("[INFO] control: snoop exclude 1 pid");
    let others = probe.records_for(2);
    assert!(others.iter().all(|r| r[1] != me()), "{others:?}");
    probe.assert_alive();
}

/// The per-datagram UDP hooks (which also run on every TCP send and receive) are attached only
/// while udp_socket is selected: datagrams sent while it is off are not counted, and the
/// probe keeps running through the switches.
#[test]
fn udp_hooks_follow_the_udp_sub_probe() {
    let mut probe = Probe::start(&["-t", "1", "-P", "1"]);
    probe.wait_log("UDP hooks: off");
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |n: usize| {
        for _ in 0..n {
            tx.send_to(&[1u8; 64], rx.local_addr().unwrap()).unwrap();
        }
    };
    send(5);
    let pid = probe.child.id();
    probe.send(r#"{"probe":["tcp_socket","udp_socket"],"probe_bits":3}"#);
    probe.wait_log("[INFO] UDP hooks attached");
    send(7);
    let port = tx.local_addr().unwrap().port().to_string();
    let sends = |records: &[Vec<String>]| {
        records
            .iter()
            .rev()
            .find(|r| r[0] == "endpoint_udp" && r[3] == port)
            .map(|r| udp_num(r, "sends"))
    };
    assert_eq!(
        sends(&probe.records_for(2)),
        Some(7),
        "only what was sent while on"
    );
    probe.send(r#"{"probe":["tcp_socket"],"probe_bits":1}"#);
    probe.wait_log("[INFO] UDP hooks detached");
    send(4);
    probe.send(r#"{"probe":["tcp_socket","udp_socket"],"probe_bits":3}"#);
    probe.wait_log_n("[INFO] UDP hooks attached", 2);
    send(2);
    assert_eq!(
        sends(&probe.records_for(2)),
        Some(9),
        "7 + 2, the 4 sent while off missing"
    );
    probe.assert_alive();
    assert_eq!(probe.child.id(), pid);
}

/// Upstream's `ringbuf_map_size` (MiB, a power of two in 1..=32) sizes the ring buffer from the
/// daemon's first control line; a later change is kept for the next start, with a warning.
#[test]
fn ringbuf_map_size_sizes_the_ring_at_start() {
    let mut probe = Probe::start_with(&["-t", "1"], Some(r#"{"params":{"ringbuf_map_size":8}}"#));
    probe.wait_log("ring buffer: 8 MiB");
    probe.send(r#"{"params":{"ringbuf_map_size":16}}"#);
    probe.wait_log(
        "[WARN] control: ringbuf_map_size is applied at start; the ring buffer stays 8 MiB",
    );
    probe.assert_alive();
    drop(probe);
    let probe = Probe::start_with(&["-t", "1"], Some(r#"{"params":{"ringbuf_map_size":3}}"#));
    probe.wait_log("ring buffer: 4 MiB");
    probe.wait_log("[WARN] ringbuf_map_size 3 MiB: using 4 MiB");
    // No control line (run by hand, stdin open): the default after a short wait.
    let probe = Probe::start(&["-t", "1"]);
    probe.wait_log("ring buffer: 2 MiB");
}

#[test]
fn missing_hook_is_reported_unsupported() {
    let out = Command::new(BIN)
        .args(["-t", "1"])
        .env("ENDPOINT_REQUIRE_HOOK", "sock:no_such_tracepoint")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[ERROR] unsupported: tracepoint sock:no_such_tracepoint"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_and_unsupported_flags_are_rejected() {
    for args in [
        &["-M", "0"][..],
        &["-t", "0"],
        &["-F", "task"],
        &["-w", "/etc/hosts"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("[ERROR]"), "{args:?}: {stderr}");
    }
    let out = Command::new(BIN).args(["-F", "task"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("-w/-F"));
}

#[test]
fn print_meta_is_the_committed_file() {
    let out = Command::new(BIN).arg("--print-meta").output().unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/endpoint.meta")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

/// A network namespace of this test (lo up, syncookies off), removed on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(tag: &str) -> NetNs {
        let name = format!("ep{tag}{}", std::process::id());
        let ns = NetNs { name: name.clone() };
        run(&["ip", "netns", "add", &name]);
        run(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &name,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.tcp_syncookies=0",
        ]);
        ns
    }

    fn exec(&self, cmd: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(cmd);
        run(&full);
    }

    /// Adds (`-A`) or removes (`-D`) the iptables rule that drops the pure ACKs sent to `port`
    /// on the namespace's loopback: the last ACKs of handshakes.
    fn pure_acks_to(&self, op: &str, port: u16) {
        let port = port.to_string();
        self.exec(&[
            "iptables",
            op,
            "OUTPUT",
            "-o",
            "lo",
            "-p",
            "tcp",
            "--dport",
            &port,
            "--tcp-flags",
            "SYN,ACK,FIN,RST",
            "ACK",
            "-j",
            "DROP",
        ]);
    }

    /// `Group: Name` of the namespace's /proc/net/netstat.
    fn netstat(&self, group: &str, name: &str) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "cat", "/proc/net/netstat"])
            .output()
            .expect("ip netns exec cat");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(group)).collect();
        assert!(lines.len() >= 2, "{group} missing");
        let names: Vec<&str> = lines[0].split_whitespace().collect();
        let values: Vec<&str> = lines[1].split_whitespace().collect();
        let i = names.iter().position(|n| *n == name).unwrap();
        values[i].parse().unwrap()
    }

    /// Runs `f` in a thread that joined the namespace (sockets it creates live there).
    fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("netns file");
            // SAFETY: setns(2) of this thread into a namespace file we hold open.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns");
            f()
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The establish-latency histogram of a row: (count, sum, max) from its cumulative encoding
/// (`n b1 c1 … bn cn sum max`, the last count being the total).
fn estab_hist(row: &[String]) -> (u64, u64, u64) {
    let v: Vec<u64> = row[1 + TCP_KEYS + TCP_FIELDS.len() - 1]
        .split(' ')
        .map(|t| t.parse().unwrap())
        .collect();
    let n = v[0] as usize;
    (v[2 * n], v[2 * n + 1], v[2 * n + 2])
}

/// TCP_INFO of `fd` once its state is `state` (ESTABLISHED 1), polled for at most 10 s.
fn wait_tcp_state(fd: i32, state: u8) -> libc::tcp_info {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // SAFETY: getsockopt into a correctly sized tcp_info of ours.
        let info = unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            );
            assert_eq!(rc, 0, "TCP_INFO");
            info
        };
        if info.tcpi_state == state {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "state {} not {state}",
            info.tcpi_state
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A connect whose first SYN is dropped (an iptables rule in the test's namespace, removed
/// before the kernel's 1 s retransmit): one SYN retransmit, no failure, and a client establish
/// latency of the whole wait (from the connect's first SYN), not of the last round trip.
#[test]
fn connect_after_a_lost_syn_counts_the_retransmit_and_the_whole_wait() {
    let ns = NetNs::new("rtx");
    let probe = Probe::start(&["-t", "1"]);
    let (listener, port) = ns.run_in(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    });
    let port_s = port.to_string();
    let rule = [
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &port_s,
        "--tcp-flags",
        "SYN,ACK",
        "SYN",
        "-j",
        "DROP",
    ];
    ns.exec(&[&["iptables", "-A"][..], &rule[..]].concat());
    let started = Instant::now();
    let client =
        ns.run_in(move || RawSock::connect_nonblocking(SocketAddr::from(([127, 0, 0, 1], port))));
    thread::sleep(Duration::from_millis(300));
    ns.exec(&[&["iptables", "-D"][..], &rule[..]].concat());
    let info = wait_tcp_state(client.0, 1);
    let waited_us = started.elapsed().as_micros() as u64;
    assert_eq!(
        info.tcpi_total_retrans, 1,
        "the kernel retransmitted the SYN once"
    );
    let records = probe.records_for(2);
    let c = last_tcp(&records, "client", port);
    assert_eq!(
        (
            tcp_num(c, "active_open"),
            tcp_num(c, "retran_syn"),
            tcp_num(c, "syn_sent"),
            tcp_num(c, "active_open_failed"),
        ),
        (1, 1, 2, 0),
        "{c:?}"
    );
    let (count, sum, max) = estab_hist(c);
    assert_eq!(count, 1, "{c:?}");
    assert_eq!(sum, max, "{c:?}");
    // The SYN retransmit timer is 1 s; the wait includes it and cannot exceed what we waited.
    assert!(
        (900_000..=waited_us).contains(&sum),
        "client establish latency {sum} us, waited {waited_us} us: {c:?}"
    );
    let s = last_tcp(&records, "server", port);
    assert_eq!(tcp_num(s, "passive_open"), 1, "{s:?}");
    assert_eq!(
        tcp_num(s, "synack_sent"),
        1,
        "only the retransmitted SYN got through: {s:?}"
    );
    drop(listener);
}

/// A TCP Fast Open child (created at the SYN, in SYN_RECV) whose client resets before the
/// handshake's last ACK arrives (dropped by iptables in the test's namespace): a passive open
/// that failed. The namespace's own `TCPFastOpenPassive` and `PassiveOpens` deltas are 1.
#[test]
fn fast_open_child_reset_before_the_handshake_is_a_failed_passive_open() {
    let ns = NetNs::new("tfo");
    // Client and server Fast Open without cookies (1 | 2 | 4 | 0x200).
    ns.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_fastopen=519"]);
    let probe = Probe::start(&["-t", "1"]);
    let (listener, port) = ns.run_in(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        set_int_opt(l.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_FASTOPEN, 8);
        let port = l.local_addr().unwrap().port();
        (l, port)
    });
    let port_s = port.to_string();
    ns.pure_acks_to("-A", port);
    let tfo0 = ns.netstat("TcpExt:", "TCPFastOpenPassive");
    let client = ns.run_in(move || {
        // SAFETY: socket(2) and sendto(2) with MSG_FASTOPEN to a sockaddr_in built here.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
                },
                sin_zero: [0; 8],
            };
            let data = b"hello";
            let n = libc::sendto(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_FASTOPEN,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            assert_eq!(n, data.len() as isize, "sendto MSG_FASTOPEN");
            RawSock(fd)
        }
    });
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        ns.netstat("TcpExt:", "TCPFastOpenPassive") - tfo0,
        1,
        "the server took the SYN's data (a Fast Open child)"
    );
    // Abort: SO_LINGER 0 sends a RST (not matched by the ACK-only rule).
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a linger struct of ours.
    let rc = unsafe {
        libc::setsockopt(
            client.0,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(client);
    let records = probe.records_for(2);
    let s = records
        .iter()
        .rev()
        .find(|r| r[0] == "endpoint_tcp" && r[3] == "server" && r[7] == port_s && r[1] == me())
        .unwrap_or_else(|| panic!("no server row for the Fast Open listener: {records:?}"));
    assert_eq!(tcp_num(s, "passive_open"), 1, "{s:?}");
    assert_eq!(tcp_num(s, "passive_open_failed"), 1, "{s:?}");
    assert_eq!(
        s[1 + TCP_KEYS + TCP_FIELDS.len() - 1],
        "",
        "no handshake completed, no latency: {s:?}"
    );
    drop(listener);
}

/// Accept-queue overflows on the handshake's last ACK (drop reason TCP_LISTEN_OVERFLOW), not at
/// the SYN: three requests wait in the SYN queue of a backlog-4 listener (their ACKs dropped by
/// iptables in the test's namespace), the backlog is lowered to 0 with a second `listen()`,
/// the rule goes, and the SYN-ACK retransmits bring ACKs that find the accept queue full
/// after the first child. Compared with the namespace's own `ListenOverflows` and
/// `ListenDrops`.
#[test]
fn handshake_ack_overflows_match_the_kernels_counters() {
    let ns = NetNs::new("ack");
    let probe = Probe::start(&["-t", "1"]);
    let (listener, port) = ns.run_in(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: listen(2) again on our socket, to set the backlog to 4.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 4) }, 0);
        let port = l.local_addr().unwrap().port();
        (l, port)
    });
    let port_s = port.to_string();
    ns.pure_acks_to("-A", port);
    let over0 = ns.netstat("TcpExt:", "ListenOverflows");
    let drops0 = ns.netstat("TcpExt:", "ListenDrops");
    let clients = ns.run_in(move || {
        (0..3)
            .map(|_| RawSock::connect_nonblocking(SocketAddr::from(([127, 0, 0, 1], port))))
            .collect::<Vec<RawSock>>()
    });
    thread::sleep(Duration::from_millis(100));
    // SAFETY: listen(2) on the listening socket only changes its backlog.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    ns.pure_acks_to("-D", port);
    // The SYN-ACK retransmit timer (1 s) brings the clients' ACKs again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ns.netstat("TcpExt:", "ListenOverflows") - over0 < 2 {
        assert!(Instant::now() < deadline, "no ACK-path overflow");
        thread::sleep(Duration::from_millis(50));
    }
    let over = ns.netstat("TcpExt:", "ListenOverflows") - over0;
    let drops = ns.netstat("TcpExt:", "ListenDrops") - drops0;
    let records = probe.records_for(2);
    let over2 = ns.netstat("TcpExt:", "ListenOverflows") - over0;
    let drops2 = ns.netstat("TcpExt:", "ListenDrops") - drops0;
    let s = records
        .iter()
        .rev()
        .find(|r| r[0] == "endpoint_tcp" && r[3] == "server" && r[7] == port_s && r[1] == me())
        .unwrap_or_else(|| panic!("no server row: {records:?}"));
    let ao = tcp_num(s, "accept_overflow");
    assert!(
        (over..=over2).contains(&ao),
        "accept_overflow {ao} vs ListenOverflows {over}..={over2}: {s:?}"
    );
    let ld = tcp_num(s, "listendrop");
    assert!(
        (drops..=drops2).contains(&ld),
        "listendrop {ld} vs ListenDrops {drops}..={drops2}: {s:?}"
    );
    assert_eq!(tcp_num(s, "syn_overflow"), 0, "{s:?}");
    assert_eq!(tcp_num(s, "req_drops"), 0, "{s:?}");
    assert_eq!(tcp_num(s, "passive_open"), 1, "one child got in: {s:?}");
    // The overflowed ACKs were freed with TCP_LISTEN_OVERFLOW, counted in accept_overflow
    // only; sk_drops took each twice (tcp_listendrop and the discard path), listendrop once.
    assert_eq!(tcp_num(s, "listen_drop_backlog"), 0, "{s:?}");
    assert_eq!(tcp_num(s, "listen_drop_other"), 0, "{s:?}");
    drop(clients);
}

#[test]
fn syn_queue_overflow_of_a_listener_in_another_netns() {
    // A listener in a container-like network namespace (the tcp iterator does not list it:
    // its counters come from the kernel map), syncookies off, handshake ACKs dropped so the
    // requests stay in the SYN queue: further SYNs overflow the SYN queue, not the accept queue.
    // A host listener on the same address and port, older than the probe: the kernel side
    // keys listen addresses by network namespace, so the namespace listener's SYNs must not be
    // classified against the host listener (whose sk_drops stays 0).
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    let ns = NetNs::new("syn");
    let probe = Probe::start(&["-t", "1"]);
    let (listener, port) = ns.run_in(move || {
        let l = TcpListener::bind(("127.0.0.1", host_port)).unwrap();
        // SAFETY: listen(2) again on our socket, to set the backlog to 4.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 4) }, 0);
        let port = l.local_addr().unwrap().port();
        (l, port)
    });
    let port_s = port.to_string();
    ns.pure_acks_to("-A", port);
    let full0 = ns.netstat("TcpExt:", "TCPReqQFullDrop");
    let drops0 = ns.netstat("TcpExt:", "ListenDrops");
    let clients = ns.run_in(move || {
        (0..10)
            .map(|_| RawSock::connect_nonblocking(SocketAddr::from(([127, 0, 0, 1], port))))
            .collect::<Vec<RawSock>>()
    });
    thread::sleep(Duration::from_millis(300));
    let full = ns.netstat("TcpExt:", "TCPReqQFullDrop") - full0;
    let drops = ns.netstat("TcpExt:", "ListenDrops") - drops0;
    let records = probe.records_for(2);
    let full2 = ns.netstat("TcpExt:", "TCPReqQFullDrop") - full0;
    let drops2 = ns.netstat("TcpExt:", "ListenDrops") - drops0;
    assert!(full >= 5, "the SYN queue of 4 must overflow: {full}");
    let s = records
        .iter()
        .rev()
        .find(|r| {
            r[0] == "endpoint_tcp"
                && r[3] == "server"
                && r[7] == port_s
                && r[6] == "127.0.0.1"
                && r[1] == me()
        })
        .unwrap_or_else(|| panic!("no server row for the netns listener: {records:?}"));
    // Both listeners have the same key (owner, address, port): one row, the totals of both.
    let so = tcp_num(s, "syn_overflow");
    assert!(
        (full..=full2).contains(&so),
        "syn_overflow {so} vs TCPReqQFullDrop {full}..={full2}: {s:?}"
    );
    let ld = tcp_num(s, "listendrop");
    assert!(
        (drops..=drops2).contains(&ld),
        "listendrop {ld} vs ListenDrops {drops}..={drops2}: {s:?}"
    );
    assert_eq!(tcp_num(s, "accept_overflow"), 0, "{s:?}");
    assert_eq!(
        tcp_num(s, "passive_open"),
        0,
        "no handshake completed: {s:?}"
    );
    assert!(tcp_num(s, "synack_sent") >= 4, "{s:?}");
    // Only the host listener is in the iterator's view: its empty queue and limit 128.
    assert_eq!(tcp_num(s, "accept_queue"), 0, "{s:?}");
    assert_eq!(tcp_num(s, "accept_queue_max"), 128, "{s:?}");
    drop((clients, listener, host));
}
