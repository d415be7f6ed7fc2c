//! Runs the real `tcpprobe` binary (needs root and eBPF, as in CI) against loopback TCP traffic
//! generated here with known byte counts, and checks the exported records.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tcpprobe");

/// A running probe whose stdout lines arrive on a channel (with their arrival time), and whose
/// stdin is the control channel.
struct Probe {
    child: Child,
    lines: Receiver<(Instant, String)>,
    stderr: Arc<Mutex<String>>,
    stdin: ChildStdin,
}

impl Probe {
    /// Starts the probe and waits until it reports that it is attached.
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
            .expect("spawn tcpprobe");
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
                if tx.send((Instant::now(), line)).is_err() {
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

    /// Reads records until `periods` complete periods (each ends with the tcp_bpf_stats
    /// record) have arrived after this call.
    fn records_for(&self, periods: usize) -> Vec<Vec<String>> {
        self.timed_records_for(periods)
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    /// [`records_for`](Self::records_for) with each record's arrival time.
    fn timed_records_for(&self, periods: usize) -> Vec<(Instant, Vec<String>)> {
        let mut out = Vec::new();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(10 + 4 * periods as u64);
        while seen < periods {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    let fields = parse(&line);
                    if fields.first().map(String::as_str) == Some("tcp_bpf_stats") {
                        seen += 1;
                    }
                    out.push((at, fields));
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                    "only {seen} of {periods} periods arrived; stderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
        out
    }
}

impl Probe {
    /// Every record queued so far, then those of `periods` more whole periods.
    fn queued_and_next(&self, periods: usize) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = Vec::new();
        while let Ok((_, line)) = self.lines.try_recv() {
            out.push(parse(&line));
        }
        out.extend(self.records_for(periods));
        out
    }

    /// Writes one control line.
    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write the control line");
        self.stdin.flush().unwrap();
    }

    /// Waits until the probe's stderr contains `needle`, then drops the records read so far
    /// (they may predate the change).
    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on stderr:\n{}",
                self.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
        while self.lines.try_recv().is_ok() {}
    }

    /// The probe started by this test is still running: no restart, same pid.
    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the probe exited; stderr:\n{}",
            self.stderr.lock().unwrap()
        );
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.child.id())).unwrap();
        assert_eq!(comm.trim_end(), "tcpprobe");
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Splits `|t|a|b|` into ["t", "a", "b"].
fn parse(line: &str) -> Vec<String> {
    let inner = line
        .strip_prefix('|')
        .and_then(|l| l.strip_suffix('|'))
        .unwrap_or_else(|| panic!("not a record line: {line}"));
    inner.split('|').map(str::to_string).collect()
}

/// Key fields as printed, upstream HEAD's: tgid, comm, role, client_ip, toa_client_ip,
/// server_ip, client_port, server_port, protocol.
type Key = [String; 9];

/// Number of key fields before the metrics of a connection table.
const KEYS: usize = 9;

/// The last record per (table, key) — the values are cumulative, so the last one is complete.
fn latest(records: &[Vec<String>]) -> HashMap<(String, Key), Vec<String>> {
    let mut m = HashMap::new();
    for r in records
        .iter()
        .filter(|r| r[0] != "tcp_bpf_stats" && r[0] != "event")
    {
        let key: Key = std::array::from_fn(|i| r[1 + i].clone());
        m.insert((r[0].clone(), key), r.clone());
    }
    m
}

fn my_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}

fn key(role: &str, client: &str, server: &str, server_port: u16, proto: u16) -> Key {
    [
        std::process::id().to_string(),
        my_comm(),
        role.to_string(),
        client.to_string(),
        // toa_client_ip: no TOA parsing, so the client address.
        client.to_string(),
        server.to_string(),
        "0".to_string(),
        server_port.to_string(),
        proto.to_string(),
    ]
}

/// Field `name` of a record of `table`, by position after the keys.
fn field(rec: &[String], table: &str, name: &str) -> String {
    let names: &[&str] = match table {
        "tcp_link" => &[
            "link_count",
            "opens",
            "closes",
            "active_closes",
            "passive_closes",
            "aborted_closes",
            "open_failed",
            "estab_latency",
        ],
        "tcp_tx_rx" => &["rx_bytes", "tx_bytes", "segs_in", "segs_out"],
        "tcp_rtt" => &["srtt", "srtt_max", "rcv_rtt"],
        "tcp_abn" => &[
            "retran_packets",
            "backlog_drops",
            "sk_drops",
            "lost_out",
            "sacked_out",
            "filter_drops",
            "tmout_count",
            "snd_buf_limit_count",
            "rmem_scheduls",
            "tcp_oom",
            "send_rsts",
            "receive_rsts",
            "sk_err",
            "sk_err_soft",
        ],
        "tcp_rate" => &[
            "rto",
            "ato",
            "snd_ssthresh",
            "rcv_ssthresh",
            "advmss",
            "rcv_space",
            "delivery_rate",
            "busy_time",
            "rwnd_limited",
            "sndbuf_limited",
            "pacing_rate",
            "max_pacing_rate",
        ],
        "tcp_sockbuf" => &[
            "sk_err_que_size",
            "sk_rcv_que_size",
            "sk_wri_que_size",
            "sk_backlog_size",
            "sk_omem_size",
            "sk_forward_size",
            "sk_wmem_size",
            "sk_rcvbuf",
            "sk_sndbuf",
        ],
        "tcp_windows" => &[
            "snd_cwnd",
            "snd_wnd",
            "rcv_wnd",
            "notsent_bytes",
            "notack_bytes",
            "reordering",
            "zero_snd_wnd_count",
            "zero_rcv_wnd_count",
        ],
        "tcp_srtt" => &["syn_srtt", "syn_srtt_max"],
        _ => panic!("table {table} not used here"),
    };
    let i = names.iter().position(|n| *n == name).unwrap();
    rec[1 + KEYS + i].clone()
}

fn get<'a>(m: &'a HashMap<(String, Key), Vec<String>>, table: &str, k: &Key) -> &'a Vec<String> {
    m.get(&(table.to_string(), k.clone())).unwrap_or_else(|| {
        let have: Vec<_> = m.keys().filter(|(t, _)| t == table).collect();
        panic!("no {table} record for {k:?}; have {have:?}")
    })
}

fn num(rec: &[String], table: &str, name: &str) -> u64 {
    field(rec, table, name)
        .parse()
        .unwrap_or_else(|_| panic!("{table}.{name} not a number in {rec:?}"))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// One connection: the client sends `up` bytes, the server answers `down` bytes, both close.
fn exchange(listener: &TcpListener, up: usize, down: usize) {
    let addr = listener.local_addr().unwrap();
    let server = {
        let l = listener.try_clone().unwrap();
        thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = vec![0u8; up];
            s.read_exact(&mut got).unwrap();
            assert_eq!(got, pattern(up, 1));
            s.write_all(&pattern(down, 2)).unwrap();
            // Wait for the client's FIN, then close: a normal four-way close.
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        })
    };
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(&pattern(up, 1)).unwrap();
    let mut got = vec![0u8; down];
    c.read_exact(&mut got).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    server.join().unwrap();
    drop(c);
}

/// One connection the server aborts with SO_LINGER 0 (RST) after reading `up` bytes.
fn reset_exchange(listener: &TcpListener, up: usize) {
    let addr = listener.local_addr().unwrap();
    let mut c = TcpStream::connect(addr).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    c.write_all(&pattern(up, 3)).unwrap();
    let mut got = vec![0u8; up];
    s.read_exact(&mut got).unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a live socket with a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(s);
    let mut buf = [0u8; 16];
    let err = c.read(&mut buf).expect_err("client must see the reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[test]
fn exact_bytes_roles_and_resets() {
    let probe = Probe::start(&["-t", "1"]);
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let aborted = TcpListener::bind("127.0.0.1:0").unwrap();
    let (up, down) = (100_000usize, 30_000usize);
    exchange(&plain, up, down);
    reset_exchange(&aborted, 7_000);
    // A connect that is refused: bind a port, free it, connect to it.
    let refused_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    assert!(TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], refused_port))).is_err());

    let records = probe.records_for(3);
    let m = latest(&records);
    let lo = "127.0.0.1";
    let p = plain.local_addr().unwrap().port();
    let client = key("client", lo, lo, p, 2);
    let server = key("server", lo, lo, p, 2);

    let c = get(&m, "tcp_tx_rx", &client);
    assert_eq!(num(c, "tcp_tx_rx", "tx_bytes"), up as u64);
    assert_eq!(num(c, "tcp_tx_rx", "rx_bytes"), down as u64);
    assert_eq!(c[2], my_comm(), "comm key");
    assert_eq!(c[5], c[4], "toa_client_ip is the client address");
    let s = get(&m, "tcp_tx_rx", &server);
    assert_eq!(num(s, "tcp_tx_rx", "rx_bytes"), up as u64);
    assert_eq!(num(s, "tcp_tx_rx", "tx_bytes"), down as u64);
    // Loopback loses nothing, so the segment counts pair up, up to the handshake and
    // teardown segments sent or received by other sockets: the SYN-ACK comes from the request
    // socket (not the server's counters, but the client's), the client's SYN goes to the
    // listener and its last ACK comes from its TIME_WAIT socket (one each way: they cancel).
    assert_eq!(
        num(c, "tcp_tx_rx", "segs_out"),
        num(s, "tcp_tx_rx", "segs_in")
    );
    assert_eq!(
        num(c, "tcp_tx_rx", "segs_in"),
        num(s, "tcp_tx_rx", "segs_out") + 1
    );

    // The client shut down first (FIN_WAIT1/2 -> CLOSE), the server followed (LAST_ACK).
    let cl = get(&m, "tcp_link", &client);
    assert_eq!(num(cl, "tcp_link", "active_closes"), 1, "{cl:?}");
    assert_eq!(num(cl, "tcp_link", "passive_closes"), 0, "{cl:?}");
    let sl = get(&m, "tcp_link", &server);
    assert_eq!(num(sl, "tcp_link", "passive_closes"), 1, "{sl:?}");
    assert_eq!(num(sl, "tcp_link", "active_closes"), 0, "{sl:?}");
    for k in [&client, &server] {
        let link = get(&m, "tcp_link", k);
        assert_eq!(num(link, "tcp_link", "opens"), 1, "{link:?}");
        assert_eq!(num(link, "tcp_link", "closes"), 1, "{link:?}");
        assert_eq!(num(link, "tcp_link", "open_failed"), 0);
        assert_eq!(num(link, "tcp_link", "link_count"), 0, "closed by now");
        let hist = field(link, "tcp_link", "estab_latency");
        let tokens: Vec<u64> = hist.split(' ').map(|t| t.parse().unwrap()).collect();
        assert_eq!(tokens[0], 14);
        assert_eq!(tokens[2 * 14], 1, "one establish observed: {hist}");
        let abn = get(&m, "tcp_abn", k);
        assert_eq!(num(abn, "tcp_abn", "send_rsts"), 0);
        assert_eq!(num(abn, "tcp_abn", "receive_rsts"), 0);
        // A period gauge: present in the period of the open, absent once the key is idle.
        let syn_srtt: Vec<u64> = records
            .iter()
            .filter(|r| r[0] == "tcp_srtt" && r[1..=KEYS] == k[..])
            .filter_map(|r| field(r, "tcp_srtt", "syn_srtt").parse().ok())
            .collect();
        assert!(
            syn_srtt.len() == 1 && syn_srtt[0] > 0,
            "one open, one syn_srtt: {syn_srtt:?}"
        );
    }

    let a = aborted.local_addr().unwrap().port();
    let rc = key("client", lo, lo, a, 2);
    let rs = key("server", lo, lo, a, 2);
    assert_eq!(num(get(&m, "tcp_abn", &rc), "tcp_abn", "receive_rsts"), 1);
    assert_eq!(num(get(&m, "tcp_abn", &rc), "tcp_abn", "send_rsts"), 0);
    assert_eq!(num(get(&m, "tcp_abn", &rs), "tcp_abn", "send_rsts"), 1);
    assert_eq!(num(get(&m, "tcp_abn", &rs), "tcp_abn", "receive_rsts"), 0);
    assert_eq!(
        num(get(&m, "tcp_tx_rx", &rs), "tcp_tx_rx", "rx_bytes"),
        7_000
    );
    assert_eq!(
        num(get(&m, "tcp_tx_rx", &rc), "tcp_tx_rx", "tx_bytes"),
        7_000
    );
    for k in [&rc, &rs] {
        let link = get(&m, "tcp_link", k);
        assert_eq!(num(link, "tcp_link", "closes"), 1, "{link:?}");
        assert_eq!(num(link, "tcp_link", "aborted_closes"), 1, "{link:?}");
    }

    let f = key("client", lo, lo, refused_port, 2);
    let link = get(&m, "tcp_link", &f);
    assert_eq!(num(link, "tcp_link", "open_failed"), 1, "{link:?}");
    assert_eq!(num(link, "tcp_link", "opens"), 0);
    assert_eq!(num(get(&m, "tcp_abn", &f), "tcp_abn", "receive_rsts"), 1);

    // The errors the resets reported (inet_sk_error_report), each in the period it happened:
    // ECONNRESET on the aborted client, ECONNREFUSED on the refused one; no timeout.
    let errors = |k: &Key| -> Vec<u64> {
        records
            .iter()
            .filter(|r| r[0] == "tcp_abn" && r[1..=KEYS] == k[..])
            .filter_map(|r| field(r, "tcp_abn", "sk_err").parse().ok())
            .collect()
    };
    assert_eq!(errors(&rc), [libc::ECONNRESET as u64]);
    assert_eq!(errors(&f), [libc::ECONNREFUSED as u64]);
    assert_eq!(errors(&client), Vec::<u64>::new());
    for k in [&rc, &f, &client] {
        assert_eq!(num(get(&m, "tcp_abn", k), "tcp_abn", "tmout_count"), 0);
    }
}

#[test]
fn ipv6_and_client_ports() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback: skipped");
        return;
    };
    let probe = Probe::start(&["-t", "1", "-c", "1"]);
    let addr = listener.local_addr().unwrap();
    let mut c = TcpStream::connect(addr).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    let cport = c.local_addr().unwrap().port();
    c.write_all(&pattern(12_345, 4)).unwrap();
    let mut got = vec![0u8; 12_345];
    s.read_exact(&mut got).unwrap();
    // Still open at the next period: reported live.
    let m = latest(&probe.records_for(2));
    let mut k = key("client", "::1", "::1", addr.port(), 10);
    k[6] = cport.to_string();
    let tx = get(&m, "tcp_tx_rx", &k);
    assert_eq!(num(tx, "tcp_tx_rx", "tx_bytes"), 12_345);
    assert_eq!(num(get(&m, "tcp_link", &k), "tcp_link", "link_count"), 1);
    k[2] = "server".into();
    assert_eq!(
        num(get(&m, "tcp_tx_rx", &k), "tcp_tx_rx", "rx_bytes"),
        12_345
    );
    drop((c, s));
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
    assert_eq!(rc, 0);
}

/// A receiver with a tiny buffer that never reads: its window closes and the sender probes it.
/// Returns the latest records once both ends counted a zero window (or after 10 s), with the
/// client and server keys.
fn zero_window_scenario(probe: &Probe) -> (HashMap<(String, Key), Vec<String>>, Key, Key) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    set_int_opt(
        listener.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        4096,
    );
    let mut c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (s, _) = listener.accept().unwrap();
    c.set_nonblocking(true).unwrap();
    let chunk = [7u8; 4096];
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match c.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent > 0);
    // Zero-window probes go out on the persist timer (>= 200 ms, backing off): on a busy
    // machine the first one can fall into a later period, so read periods until both ends
    // show it (the counters are cumulative), for at most 10 s.
    let port = listener.local_addr().unwrap().port();
    let lo = "127.0.0.1";
    let (ck, sk) = (
        key("client", lo, lo, port, 2),
        key("server", lo, lo, port, 2),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut m = latest(&probe.records_for(2));
    while Instant::now() < deadline {
        let seen = |k: &Key, f: &str| {
            m.get(&("tcp_windows".to_string(), k.clone()))
                .is_some_and(|r| num(r, "tcp_windows", f) >= 1)
        };
        if seen(&ck, "zero_snd_wnd_count") && seen(&sk, "zero_rcv_wnd_count") {
            break;
        }
        m.extend(latest(&probe.records_for(1)));
    }
    drop((c, s));
    (m, ck, sk)
}

#[test]
fn zero_windows_are_counted_on_both_ends() {
    let probe = Probe::start(&["-t", "1"]);
    let (m, ck, sk) = zero_window_scenario(&probe);
    let cw = get(&m, "tcp_windows", &ck);
    assert!(num(cw, "tcp_windows", "zero_snd_wnd_count") >= 1, "{cw:?}");
    assert!(num(cw, "tcp_windows", "notsent_bytes") > 0, "{cw:?}");
    // The sender's non-blocking writes stopped at the first -EAGAIN.
    let ca = get(&m, "tcp_abn", &ck);
    assert_eq!(num(ca, "tcp_abn", "snd_buf_limit_count"), 1, "{ca:?}");
    let sw = get(&m, "tcp_windows", &sk);
    assert!(num(sw, "tcp_windows", "zero_rcv_wnd_count") >= 1, "{sw:?}");
    assert_eq!(num(sw, "tcp_windows", "rcv_wnd"), 0, "{sw:?}");
}

#[test]
fn connections_older_than_the_probe_are_attributed() {
    // Established before the probe starts: owner and role come from /proc and the listener.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    c.write_all(&pattern(1_000, 5)).unwrap();
    let mut got = vec![0u8; 1_000];
    s.read_exact(&mut got).unwrap();

    let probe = Probe::start(&["-t", "1"]);
    c.write_all(&pattern(2_000, 6)).unwrap();
    let mut got = vec![0u8; 2_000];
    s.read_exact(&mut got).unwrap();
    let m = latest(&probe.records_for(2));
    let port = listener.local_addr().unwrap().port();
    let lo = "127.0.0.1";
    // Counters cover the whole connection, including the bytes sent before the probe started.
    let ck = key("client", lo, lo, port, 2);
    assert_eq!(
        num(get(&m, "tcp_tx_rx", &ck), "tcp_tx_rx", "tx_bytes"),
        3_000
    );
    let sk = key("server", lo, lo, port, 2);
    assert_eq!(
        num(get(&m, "tcp_tx_rx", &sk), "tcp_tx_rx", "rx_bytes"),
        3_000
    );
    assert_eq!(get(&m, "tcp_tx_rx", &sk)[2], my_comm());
    drop((c, s));
}

#[test]
fn key_cap_overflow_is_counted() {
    let probe = Probe::start(&["-t", "1", "-M", "2"]);
    let listeners: Vec<TcpListener> = (0..5)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    for l in &listeners {
        exchange(l, 10, 10);
    }
    let records = probe.records_for(2);
    let stats: Vec<&Vec<String>> = records.iter().filter(|r| r[0] == "tcp_bpf_stats").collect();
    let last = stats.last().unwrap();
    assert_eq!(last[1], "tcp");
    let map_full: u64 = last[4].parse().unwrap();
    // 5 ports x 2 roles = 10 keys, at most 2 per period (the exchanges may span 2 periods).
    assert!(map_full >= 6, "{last:?}");
    // At most 2 keys per period are reported.
    let mut per_period = 0;
    for r in &records {
        if r[0] == "tcp_bpf_stats" {
            per_period = 0;
        } else if r[0] == "tcp_link" {
            per_period += 1;
            assert!(per_period <= 2, "more than 2 keys in one period");
        }
    }
}

/// The records of `n` whole periods read from now on, one vector per period (the
/// tcp_bpf_stats record ends a period).
fn periods(probe: &Probe, n: usize) -> Vec<Vec<Vec<String>>> {
    let mut out = vec![Vec::new()];
    for r in probe.records_for(n) {
        let end = r[0] == "tcp_bpf_stats";
        out.last_mut().unwrap().push(r);
        if end {
            out.push(Vec::new());
        }
    }
    out.pop();
    out
}

#[test]
fn idle_keys_keep_being_reported_with_unchanged_totals() {
    // Per-period fields are running totals: the daemon exports their change since the row's
    // previous record, so a key must be written every period, also when nothing happened, for
    // that change to go back to 0.
    let probe = Probe::start(&["-t", "1"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (up, down) = (5_000usize, 2_000usize);
    exchange(&listener, up, down);
    let port = listener.local_addr().unwrap().port();
    let ck = key("client", "127.0.0.1", "127.0.0.1", port, 2);
    // Wait for the period that reports the close: the connection is gone after it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = latest(&probe.records_for(1));
        if m.get(&("tcp_link".to_string(), ck.clone()))
            .is_some_and(|r| num(r, "tcp_link", "closes") == 1)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the close was never reported");
    }
    let idle = periods(&probe, 3);
    assert_eq!(idle.len(), 3);
    for (i, period) in idle.iter().enumerate() {
        let m = latest(period);
        let tx = get(&m, "tcp_tx_rx", &ck);
        assert_eq!(num(tx, "tcp_tx_rx", "tx_bytes"), up as u64, "period {i}");
        assert_eq!(num(tx, "tcp_tx_rx", "rx_bytes"), down as u64, "period {i}");
        let abn = get(&m, "tcp_abn", &ck);
        assert_eq!(num(abn, "tcp_abn", "retran_packets"), 0, "period {i}");
        let link = get(&m, "tcp_link", &ck);
        assert_eq!(num(link, "tcp_link", "opens"), 1, "period {i}");
        assert_eq!(num(link, "tcp_link", "closes"), 1, "period {i}");
        assert_eq!(num(link, "tcp_link", "link_count"), 0, "period {i}");
        // Nothing sampled while idle: the period gauges are absent, not stale.
        let rtt = get(&m, "tcp_rtt", &ck);
        assert_eq!(field(rtt, "tcp_rtt", "srtt"), "", "period {i}: {rtt:?}");
        let srtt = get(&m, "tcp_srtt", &ck);
        assert_eq!(
            field(srtt, "tcp_srtt", "syn_srtt"),
            "",
            "period {i}: {srtt:?}"
        );
    }
}

/// Upstream's `ringbuf_map_size` (MiB, a power of two in 1..=32) sizes the ring buffer from the
/// daemon's first control line; a later change is kept for the next start, with a warning.
#[test]
fn ringbuf_map_size_sizes_the_ring_at_start() {
    let mut probe = Probe::start_with(&["-t", "1"], Some(r#"{"params":{"ringbuf_map_size":16}}"#));
    probe.wait_log("ring buffer: 16 MiB");
    probe.send(r#"{"params":{"ringbuf_map_size":1}}"#);
    probe.wait_log(
        "[WARN] control: ringbuf_map_size is applied at start; the ring buffer stays 16 MiB",
    );
    probe.assert_alive();
    let probe = Probe::start(&["-t", "1"]);
    probe.wait_log("ring buffer: 2 MiB");
}

#[test]
fn missing_tracepoint_is_reported_unsupported() {
    let out = Command::new(BIN)
        .args(["-t", "1"])
        .env("TCPPROBE_REQUIRE_HOOK", "tcp:no_such_tracepoint")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[ERROR] unsupported: tracepoint tcp:no_such_tracepoint"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn whitelist_and_filter_flags_are_refused_at_start() {
    for (args, flag) in [
        (&["-w", "/etc/gala-gopher/gala-gopher-app.conf"][..], "-w"),
        (&["-F", "task"][..], "-F"),
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("[ERROR] {flag} "))
                && stderr.contains("is not supported by tcpprobe"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn bad_flags_are_rejected() {
    for args in [
        &["-M", "0"][..],
        &["-c", "2"],
        &["-t", "0"],
        &["-D", "100001"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("[ERROR]"),
            "{args:?}"
        );
    }
}

/// Tables of `records`.
fn tables_of(records: &[Vec<String>]) -> BTreeSet<String> {
    records.iter().map(|r| r[0].clone()).collect()
}

/// Gaps between consecutive period ends (tcp_bpf_stats records) of `records`.
fn period_gaps(records: &[(Instant, Vec<String>)]) -> Vec<Duration> {
    let ends: Vec<Instant> = records
        .iter()
        .filter(|(_, r)| r[0] == "tcp_bpf_stats")
        .map(|(t, _)| *t)
        .collect();
    ends.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn control_channel_changes_period_and_tables_without_restart() {
    let mut probe = Probe::start(&["-t", "1"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    exchange(&listener, 1_000, 1_000);
    let before = probe.timed_records_for(3);
    let gaps = period_gaps(&before);
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(1900)),
        "{gaps:?}"
    );
    let all: Vec<Vec<String>> = before.into_iter().map(|(_, r)| r).collect();
    let tables = tables_of(&all);
    for t in [
        "tcp_link",
        "tcp_tx_rx",
        "tcp_rtt",
        "tcp_abn",
        "tcp_srtt",
        "tcp_rate",
        "tcp_sockbuf",
    ] {
        assert!(
            tables.contains(t),
            "{t} missing before the change: {tables:?}"
        );
    }

    // Period 1 s -> 3 s.
    probe.send(r#"{"v":1,"params":{"report_period":3,"report_cport":0}}"#);
    probe.wait_log("[INFO] control: period 1s -> 3s");
    let gaps = period_gaps(&probe.timed_records_for(2));
    assert_eq!(gaps.len(), 1);
    assert!(
        gaps[0] > Duration::from_millis(2500) && gaps[0] < Duration::from_millis(4500),
        "{gaps:?}"
    );
    probe.assert_alive();

    // A line that is not a control message changes nothing.
    probe.send("this is not a control message");
    probe.wait_log("[WARN] control channel: line skipped");
    probe.records_for(1);
    probe.assert_alive();

    // Only tcp_stats (tcp_tx_rx), back to 1 s. tcp_link and tcp_bpf_stats are always written.
    probe.send(r#"{"probe":["tcp_stats"],"probe_bits":8,"params":{"report_period":1}}"#);
    probe.wait_log("[INFO] control: period 3s -> 1s, tables 0xffffffff -> 0x8");
    exchange(&listener, 1_000, 1_000);
    let after = probe.records_for(2);
    let want: BTreeSet<String> = ["tcp_link", "tcp_tx_rx", "tcp_bpf_stats"]
        .map(String::from)
        .into();
    assert_eq!(tables_of(&after), want);
    probe.assert_alive();

    // The new sub-probes by name: tcp_rate (32) and tcp_sockbuf (16).
    probe.send(r#"{"probe":["tcp_rate","tcp_sockbuf"],"probe_bits":48}"#);
    probe.wait_log("[INFO] control: tables 0x8 -> 0x30");
    exchange(&listener, 1_000, 1_000);
    let after = probe.records_for(2);
    let want: BTreeSet<String> = ["tcp_link", "tcp_rate", "tcp_sockbuf", "tcp_bpf_stats"]
        .map(String::from)
        .into();
    assert_eq!(tables_of(&after), want);

    // cluster_ip_backend: only 0; 1 is refused with the reason, and the probe keeps running.
    probe.send(r#"{"params":{"cluster_ip_backend":1}}"#);
    probe.wait_log("does not translate cluster IPs to their backends: only 0 is supported");
    assert!(probe
        .stderr
        .lock()
        .unwrap()
        .contains("[WARN] control: params.cluster_ip_backend invalid value 1"));
    probe.records_for(1);
    probe.assert_alive();
}

#[test]
fn zero_window_hook_is_attached_when_the_windows_table_is_turned_on() {
    // Started without the windows table: the per-segment hook is not attached.
    let mut probe = Probe::start(&["-t", "1", "-P", "8"]);
    probe.send(r#"{"probe_bits":2}"#);
    probe.wait_log("[INFO] control: tables 0x8 -> 0x2");
    let (m, ck, sk) = zero_window_scenario(&probe);
    let cw = get(&m, "tcp_windows", &ck);
    assert!(num(cw, "tcp_windows", "zero_snd_wnd_count") >= 1, "{cw:?}");
    let sw = get(&m, "tcp_windows", &sk);
    assert!(num(sw, "tcp_windows", "zero_rcv_wnd_count") >= 1, "{sw:?}");
    probe.assert_alive();
}

/// Environment variable that turns [`connector_child`] into a TCP client of this port.
const CONNECT_ENV: &str = "TCPPROBE_TEST_CONNECT_PORT";

/// Not a test of its own: run by [`Connector::spawn`] in a child process (a second TCP client
/// with its own pid), it connects to the port in [`CONNECT_ENV`], sends 1000 bytes, and holds
/// the connection until its stdin closes.
#[test]
fn connector_child() {
    let Ok(port) = std::env::var(CONNECT_ENV) else {
        return;
    };
    let port: u16 = port.parse().unwrap();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(&pattern(1_000, 9)).unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

/// A child process holding one TCP connection to a port.
struct Connector(Child);

impl Connector {
    fn spawn(port: u16) -> Connector {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["connector_child", "--exact", "--test-threads", "1", "-q"])
            .env(CONNECT_ENV, port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the connector");
        Connector(child)
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tgids of the connection records (tcp_bpf_stats left out).
fn tgids(records: &[Vec<String>]) -> BTreeSet<String> {
    records
        .iter()
        .filter(|r| r[0] != "tcp_bpf_stats")
        .map(|r| r[1].clone())
        .collect()
}

#[test]
fn snoop_selects_connections_by_owning_process() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut probe = Probe::start(&["-t", "1"]);
    let (a, b) = (Connector::spawn(port), Connector::spawn(port));
    let mut accepted = Vec::new();
    for _ in 0..2 {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = vec![0u8; 1_000];
        s.read_exact(&mut got).unwrap();
        accepted.push(s);
    }
    let me = std::process::id().to_string();
    let everyone: BTreeSet<String> = [a.pid(), b.pid(), me.clone()].into();

    // No snoop yet: both clients and the server side (this process) are reported.
    let seen = tgids(&probe.records_for(2));
    assert!(seen.is_superset(&everyone), "{seen:?} vs {everyone:?}");

    probe.send(&format!(
        r#"{{"snoop":{{"mode":"include","pids":[{}]}}}}"#,
        a.pid()
    ));
    probe.wait_log("[INFO] control: snoop include 1 pid");
    let records = probe.records_for(2);
    assert_eq!(tgids(&records), [a.pid()].into());
    assert!(
        records
            .iter()
            .any(|r| r[0] == "tcp_link" && r[3] == "client" && r[8] == port.to_string()),
        "no client record of {}",
        a.pid()
    );

    probe.send(&format!(
        r#"{{"snoop":{{"mode":"exclude","pids":[{}]}}}}"#,
        a.pid()
    ));
    probe.wait_log("[INFO] control: snoop exclude 1 pid");
    let seen = tgids(&probe.records_for(2));
    assert!(!seen.contains(&a.pid()), "{seen:?}");
    assert!(seen.contains(&b.pid()) && seen.contains(&me), "{seen:?}");

    probe.send(r#"{"snoop":{"mode":"all"}}"#);
    probe.wait_log("[INFO] control: snoop all");
    let seen = tgids(&probe.records_for(2));
    assert!(seen.is_superset(&everyone), "{seen:?} vs {everyone:?}");
    probe.assert_alive();
    drop(accepted);
}

/// `ss -tinmH` for the established socket with local port `sport`: its one info line.
fn ss_info(sport: u16) -> String {
    let out = Command::new("ss")
        .args([
            "-tinmH",
            "state",
            "established",
            "sport",
            &format!("= :{sport}"),
        ])
        .output()
        .expect("ss (iproute2) is needed by this test");
    assert!(out.status.success(), "ss failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number after `name` in ss output (`rto:200`, `retrans:0/5` gives 5 with `retrans:0/`,
/// `d3` inside `skmem:(…)` with `,d`).
fn ss_num(info: &str, name: &str) -> Option<f64> {
    let at = info.find(name)? + name.len();
    let rest = &info[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn get_int_opt(fd: i32, level: i32, name: i32) -> i32 {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: getsockopt on a live socket into a correctly sized int.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut i32).cast(), &mut len) };
    assert_eq!(rc, 0);
    v
}

#[test]
fn rate_and_sockbuf_rows_match_the_kernel() {
    let probe = Probe::start(&["-t", "1"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    set_int_opt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 65_536);
    c.write_all(&pattern(50_000, 7)).unwrap();
    let mut got = vec![0u8; 50_000];
    s.read_exact(&mut got).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cport = c.local_addr().unwrap().port();
    let lo = "127.0.0.1";
    let (ck, sk) = (
        key("client", lo, lo, port, 2),
        key("server", lo, lo, port, 2),
    );
    // Idle now: the kernel's values stay put while the probe samples them.
    thread::sleep(Duration::from_millis(300));
    let info = ss_info(cport);
    let m = latest(&probe.records_for(3));

    let rate = get(&m, "tcp_rate", &ck);
    let ss_rto_ms = ss_num(&info, "rto:").unwrap_or_else(|| panic!("no rto in {info}"));
    assert_eq!(
        num(rate, "tcp_rate", "rto"),
        (ss_rto_ms * 1000.0).round() as u64,
        "rto vs ss: {info}"
    );
    assert!(num(rate, "tcp_rate", "rto") >= 200_000, "{rate:?}");
    for (ours, theirs) in [
        ("advmss", "advmss:"),
        ("rcv_space", "rcv_space:"),
        ("rcv_ssthresh", "rcv_ssthresh:"),
    ] {
        let want = ss_num(&info, theirs).unwrap_or_else(|| panic!("no {theirs} in {info}"));
        assert_eq!(num(rate, "tcp_rate", ours), want as u64, "{ours}: {info}");
    }
    assert!(num(rate, "tcp_rate", "pacing_rate") > 0, "{rate:?}");
    assert_eq!(
        num(rate, "tcp_rate", "max_pacing_rate"),
        u64::MAX,
        "unlimited"
    );
    assert!(num(rate, "tcp_rate", "delivery_rate") > 0, "{rate:?}");
    // Per-period times are numbers (HZ measured by then), not absent.
    num(rate, "tcp_rate", "busy_time");

    let sb = get(&m, "tcp_sockbuf", &sk);
    let rcvbuf = get_int_opt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF);
    assert_eq!(num(sb, "tcp_sockbuf", "sk_rcvbuf"), rcvbuf as u64, "{sb:?}");
    assert_eq!(num(sb, "tcp_sockbuf", "sk_rcv_que_size"), 0, "all read");
    let cb = get(&m, "tcp_sockbuf", &ck);
    let sndbuf = get_int_opt(c.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF);
    assert_eq!(num(cb, "tcp_sockbuf", "sk_sndbuf"), sndbuf as u64, "{cb:?}");
    assert_eq!(
        num(cb, "tcp_sockbuf", "sk_wmem_size"),
        0,
        "all acknowledged"
    );
    drop((c, s));
}

/// TcpExt counters of this network namespace (`nstat -az`).
fn nstat(names: &[&str]) -> HashMap<String, u64> {
    let out = Command::new("nstat")
        .arg("-az")
        .args(names)
        .output()
        .expect("nstat (iproute2) is needed by this test");
    assert!(out.status.success(), "nstat failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect()
}

const RCVQ_DROPS: [&str; 2] = ["TcpExtTCPRcvQDrop", "TcpExtTCPOFODrop"];

/// A receiver that shrinks its receive buffer to 1 KiB after 20 kB arrived, and never reads,
/// while the peer keeps sending into the window advertised before: the kernel drops what no
/// longer fits (TCPRcvQDrop, reason PROTO_MEM). Returns (client, server socket) still open.
fn receive_buffer_drops(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let mut c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (s, _) = listener.accept().unwrap();
    c.set_nonblocking(true).unwrap();
    c.write_all(&pattern(20_000, 8)).unwrap();
    thread::sleep(Duration::from_millis(200));
    set_int_opt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 1024);
    let chunk = pattern(4_000, 9);
    for _ in 0..100 {
        match c.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    }
    thread::sleep(Duration::from_millis(500));
    (c, s)
}

/// Reads periods until `table.name` of `k` equals `want` (cumulative fields), for at most 10 s;
/// returns the latest records, and adds every record read to `all`.
fn wait_for(
    probe: &Probe,
    table: &str,
    k: &Key,
    name: &str,
    want: u64,
    all: &mut Vec<Vec<String>>,
) -> HashMap<(String, Key), Vec<String>> {
    wait_until(
        probe,
        table,
        k,
        name,
        |v| v == want,
        &format!("{want}"),
        all,
    )
}

/// [`wait_for`] with a condition on the value (`what` describes it for the failure message).
fn wait_until(
    probe: &Probe,
    table: &str,
    k: &Key,
    name: &str,
    ok: impl Fn(u64) -> bool,
    what: &str,
    all: &mut Vec<Vec<String>>,
) -> HashMap<(String, Key), Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = probe.queued_and_next(1);
    let mut m = latest(&first);
    all.extend(first);
    loop {
        let now = m
            .get(&(table.to_string(), k.clone()))
            .map(|r| num(r, table, name));
        if now.is_some_and(&ok) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{table}.{name} of {k:?} is {now:?}, want {what}"
        );
        let more = probe.records_for(1);
        m.extend(latest(&more));
        all.extend(more);
    }
}

/// The event lines `(entity_id, metric)` among `lines` (raw `|event|…|` records).
fn events_of(records: &[Vec<String>]) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r[0] == "event")
        .map(|r| {
            assert_eq!(r[1], "tcp_link", "{r:?}");
            assert_eq!(r.len(), 7, "{r:?}");
            (r[2].clone(), r[3].clone())
        })
        .collect()
}

fn entity(k: &Key) -> String {
    k.join("_")
}

#[test]
fn receive_buffer_drops_match_the_kernel_and_raise_events() {
    // Over: drops_thr 1 and latency_thr 5 ms; below: both at their maximum.
    let over = Probe::start(&["-t", "1", "-l", "warn", "-D", "1", "-T", "5"]);
    let below = Probe::start(&["-t", "1", "-l", "warn", "-D", "100000", "-T", "100000"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let before = nstat(&RCVQ_DROPS);
    let (c, s) = receive_buffer_drops(&listener);
    let after = nstat(&RCVQ_DROPS);
    let info = ss_info(port);
    let ss_drops = ss_num(&info, ",d").unwrap_or_else(|| panic!("no drops in {info}")) as u64;
    let kernel_rmem: u64 = RCVQ_DROPS
        .iter()
        .map(|n| after.get(*n).copied().unwrap_or(0) - before.get(*n).copied().unwrap_or(0))
        .sum();
    assert!(kernel_rmem >= 1, "the scenario must drop: {after:?} {info}");
    let sk = key("server", "127.0.0.1", "127.0.0.1", port, 2);
    // sk_drops (the iterator's sk_drops) is ss's d; rmem_scheduls (kfree_skb reason
    // PROTO_MEM) TCPRcvQDrop + TCPOFODrop. The sender's retransmits into the full buffer go on
    // dropping, so both lie between the values read before and after the probe's period.
    let mut over_all = Vec::new();
    let m = wait_until(
        &over,
        "tcp_abn",
        &sk,
        "sk_drops",
        |v| v >= ss_drops,
        &format!(">= {ss_drops}"),
        &mut over_all,
    );
    let ss_drops2 = ss_num(&ss_info(port), ",d").unwrap_or(0.0) as u64;
    let kernel_rmem2: u64 = {
        let now = nstat(&RCVQ_DROPS);
        RCVQ_DROPS
            .iter()
            .map(|n| now.get(*n).copied().unwrap_or(0) - before.get(*n).copied().unwrap_or(0))
            .sum()
    };
    let abn = get(&m, "tcp_abn", &sk);
    let drops = num(abn, "tcp_abn", "sk_drops");
    assert!(
        (ss_drops..=ss_drops2).contains(&drops),
        "sk_drops {drops} vs ss d {ss_drops}..={ss_drops2}: {abn:?}"
    );
    let rmem = num(abn, "tcp_abn", "rmem_scheduls");
    assert!(
        (kernel_rmem..=kernel_rmem2).contains(&rmem),
        "rmem_scheduls {rmem} vs TCPRcvQDrop + TCPOFODrop {kernel_rmem}..={kernel_rmem2}: {abn:?}"
    );
    assert_eq!(num(abn, "tcp_abn", "backlog_drops"), 0, "{abn:?}");
    assert_eq!(num(abn, "tcp_abn", "filter_drops"), 0, "{abn:?}");
    let sb = get(&m, "tcp_sockbuf", &sk);
    assert!(num(sb, "tcp_sockbuf", "sk_rcv_que_size") > 0, "{sb:?}");

    // Latency: with quick ACKs turned off on the receiver (TCP_QUICKACK 0, reset by every
    // read), each small write is acknowledged by the delayed-ACK timer (~40 ms): an srtt far
    // above 5 ms and far below 100 s.
    let lat = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = lat.local_addr().unwrap().port();
    let mut lc = TcpStream::connect(lat.local_addr().unwrap()).unwrap();
    let (mut ls, _) = lat.accept().unwrap();
    for i in 0..20u8 {
        set_int_opt(ls.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_QUICKACK, 0);
        lc.write_all(&[i]).unwrap();
        let mut b = [0u8; 1];
        ls.read_exact(&mut b).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    let srtt_ms = ss_num(&ss_info(lc.local_addr().unwrap().port()), "rtt:").unwrap_or(0.0);
    assert!(
        srtt_ms > 5.0,
        "the scenario must be slow: srtt {srtt_ms} ms"
    );
    let lk = key("client", "127.0.0.1", "127.0.0.1", lport, 2);
    over_all.extend(over.queued_and_next(2));
    let over_ev = events_of(&over_all);
    let below_ev = events_of(&below.queued_and_next(2));
    let drops_ev = (entity(&sk), "sk_drops".to_string());
    let srtt_ev = (entity(&lk), "srtt".to_string());
    assert!(
        over_ev.contains(&drops_ev),
        "no sk_drops event: {over_ev:?}"
    );
    assert!(
        over_ev.contains(&srtt_ev),
        "no srtt event over 5 ms: {over_ev:?}"
    );
    assert!(!below_ev.contains(&drops_ev), "{below_ev:?}");
    assert!(!below_ev.contains(&srtt_ev), "{below_ev:?}");
    // At most one event per key and kind per period.
    let mut period = BTreeSet::new();
    for r in &over_all {
        if r[0] == "tcp_bpf_stats" {
            period.clear();
        } else if r[0] == "event" {
            assert!(period.insert((r[2].clone(), r[3].clone())), "twice: {r:?}");
        }
    }
    drop((c, s, lc, ls));
}

/// Runs `tool args`; a missing tool fails the test with its name.
fn run(tool: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is needed by this test (iproute2/iptables): {e}"));
    out
}

fn run_ok(tool: &str, args: &[&str]) {
    let out = run(tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to this one by a veth pair: 10.214.<n>.1 here, 10.214.<n>.2
/// inside. Removed on drop (the veth goes with the namespace), also when the test fails.
struct NetnsPair {
    ns: String,
    veth: String,
    here: String,
    there: String,
}

impl NetnsPair {
    fn create() -> NetnsPair {
        let pid = std::process::id();
        let n = 20 + pid % 200;
        let pair = NetnsPair {
            ns: format!("tcpabn{pid}"),
            veth: format!("tcpabn{}", pid % 100_000),
            here: format!("10.214.{n}.1"),
            there: format!("10.214.{n}.2"),
        };
        let peer = format!("{}p", pair.veth);
        run_ok("ip", &["netns", "add", &pair.ns]);
        run_ok(
            "ip",
            &[
                "link", "add", &pair.veth, "type", "veth", "peer", "name", &peer,
            ],
        );
        run_ok("ip", &["link", "set", &peer, "netns", &pair.ns]);
        run_ok(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", pair.here),
                "dev",
                &pair.veth,
            ],
        );
        run_ok("ip", &["link", "set", &pair.veth, "up"]);
        pair.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", pair.there),
            "dev",
            &peer,
        ]);
        pair.exec(&["ip", "link", "set", &peer, "up"]);
        pair.exec(&["ip", "link", "set", "lo", "up"]);
        pair
    }

    /// Runs a command inside the namespace.
    fn exec(&self, cmd: &[&str]) {
        let mut args = vec!["netns", "exec", &self.ns];
        args.extend_from_slice(cmd);
        run_ok("ip", &args);
    }

    /// A listener on `there`, created by a thread that joined the namespace (a socket stays in
    /// the namespace it was created in).
    fn listener(&self) -> TcpListener {
        let path = format!("/run/netns/{}", self.ns);
        let addr = format!("{}:0", self.there);
        thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("namespace file");
            // SAFETY: setns(2) on this thread with a valid namespace fd.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            TcpListener::bind(addr).expect("bind inside the namespace")
        })
        .join()
        .expect("listener thread")
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.ns]);
        let _ = run("ip", &["link", "del", &self.veth]);
    }
}

#[test]
fn loss_in_a_namespace_pair_matches_ss() {
    let pair = NetnsPair::create();
    let listener = pair.listener();
    let port = listener.local_addr().unwrap().port();
    // 10 % of the data segments arriving inside are dropped: the sender here retransmits.
    pair.exec(&[
        "iptables",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &port.to_string(),
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.1",
        "-j",
        "DROP",
    ]);
    let probe = Probe::start(&["-t", "1"]);
    const SIZE: usize = 4 << 20;
    let reader = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = vec![0u8; SIZE];
        s.read_exact(&mut got).unwrap();
        s
    });
    let mut c = TcpStream::connect((pair.there.as_str(), port)).unwrap();
    c.write_all(&pattern(SIZE, 11)).unwrap();
    let s = reader.join().unwrap();
    // Everything acknowledged (ACKs are not dropped): retransmissions are over.
    thread::sleep(Duration::from_millis(300));
    let info = ss_info(c.local_addr().unwrap().port());
    let ss_retrans = ss_num(&info, "retrans:0/")
        .or_else(|| {
            // `retrans:<in flight>/<total>`: the total after the slash.
            let at = info.find("retrans:")? + "retrans:".len();
            let rest = &info[at..];
            ss_num(rest, "/")
        })
        .unwrap_or_else(|| panic!("no retransmissions in {info}")) as u64;
    assert!(ss_retrans > 0, "{info}");
    let k = key("client", &pair.here, &pair.there, port, 2);
    let mut all = Vec::new();
    let m = wait_for(
        &probe,
        "tcp_abn",
        &k,
        "retran_packets",
        ss_retrans,
        &mut all,
    );
    let tx = get(&m, "tcp_tx_rx", &k);
    assert_eq!(num(tx, "tcp_tx_rx", "tx_bytes"), SIZE as u64);
    // During the transfer some period saw retransmits or segments lost / SACKed.
    let seen = all
        .iter()
        .filter(|r| r[0] == "tcp_abn" && r[1..=KEYS] == k[..])
        .any(|r| {
            ["retran_packets", "lost_out", "sacked_out"]
                .iter()
                .any(|f| field(r, "tcp_abn", f).parse::<u64>().unwrap_or(0) > 0)
        });
    assert!(seen, "no loss visible");
    drop((c, s));
}
