//! The metrics HTTP server against hostile or careless clients: slow headers, idle keep-alive
//! connections, more connections than allowed, descriptor exhaustion, and many concurrent
//! scrapes of a large store. Every test runs the real daemon and talks raw TCP to it.

#[path = "../benches/support/mod.rs"]
#[allow(dead_code)]
mod bench_support;
mod daemon_support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::*;

const ENV_HEADER: &str = "GALA_GOPHER_WEB_SERVER__HEADER_READ_TIMEOUT_SECS";
const ENV_IDLE: &str = "GALA_GOPHER_WEB_SERVER__IDLE_TIMEOUT_SECS";
const ENV_MAX_CONN: &str = "GALA_GOPHER_WEB_SERVER__MAX_CONNECTIONS";
const ENV_MAX_REQ: &str = "GALA_GOPHER_WEB_SERVER__MAX_REQUESTS";

/// A drop-in probe printing `rows` rows × 5 gauges every second (`rows * 5` live series): the
/// same probe the whole-daemon benchmarks use.
fn load_probe(probes: &Path, rows: usize) {
    bench_support::write_load_probe(probes, rows).expect("write the load probe");
}

/// Wait until the `load` table holds `rows` rows.
fn wait_rows(d: &Daemon, rows: usize) {
    let ok = wait_for(Duration::from_secs(60), || {
        (d.status()["tables"]["load"].as_u64() == Some(rows as u64)).then_some(())
    });
    assert!(ok.is_some(), "load rows did not arrive; log:\n{}", d.log());
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// Whether the server has closed `s`: EOF or a reset on read. Any bytes the server sent are
/// appended to `got`.
fn closed_by_server(s: &mut TcpStream, got: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Read one HTTP/1.1 response with a `Content-Length` body from a keep-alive connection.
fn read_response(s: &mut TcpStream) -> (u16, String) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).expect("response head"),
            1,
            "closed mid-head"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("response body");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A `server="web_server"` self-metric (0 when absent).
fn http_metric(scrape: &str, name: &str, extra: &str) -> f64 {
    sample(scrape, &format!("{name}{{server=\"web_server\"{extra}")).unwrap_or(0.0)
}

/// Raise this test process's own descriptor limit so it can hold hundreds of client sockets.
fn raise_own_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is index 0, utime 11, stime 12.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn status_kb(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A client that sends one header byte every 300 ms never completes its header: the server
/// closes it once `header_read_timeout_secs` passes, not earlier. A client that connects and
/// sends nothing is closed the same way.
#[test]
fn slow_header_is_disconnected_after_header_timeout() {
    let d = Daemon::start_env(60, "", &[(ENV_HEADER, "2"), (ENV_IDLE, "60")], |_| {});
    let mut silent = connect(d.port);
    let mut slow = connect(d.port);
    let t0 = Instant::now();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let mut got = Vec::new();
    let mut slow_closed = None;
    let mut silent_closed = None;
    while slow_closed.is_none() || silent_closed.is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "slow-header client still connected after 30 s (slow closed: {slow_closed:?}, silent closed: {silent_closed:?})"
        );
        if slow_closed.is_none()
            && (slow.write_all(b"a").is_err() || closed_by_server(&mut slow, &mut got))
        {
            slow_closed = Some(t0.elapsed());
        }
        if silent_closed.is_none() && closed_by_server(&mut silent, &mut got) {
            silent_closed = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for closed in [slow_closed, silent_closed].into_iter().flatten() {
        assert!(
            closed >= Duration::from_millis(1500),
            "closed after {closed:?}, before the 2 s header timeout"
        );
    }
    let scrape = d.scrape();
    assert!(
        http_metric(
            &scrape,
            "gala_gopher_self_http_timeouts_total",
            ",kind=\"header\""
        ) >= 2.0,
        "header timeouts not counted:\n{scrape}"
    );
}

/// A keep-alive connection serves several requests, then is closed once it has been idle for
/// `idle_timeout_secs` (the header timeout is much longer, so it is the idle timeout acting).
#[test]
fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let d = Daemon::start_env(60, "", &[(ENV_HEADER, "60"), (ENV_IDLE, "2")], |_| {});
    let mut s = connect(d.port);
    for _ in 0..2 {
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (status, body) = read_response(&mut s);
        assert_eq!(status, 200);
        assert!(body.contains("gala_gopher_self_"));
        // Shorter than the idle timeout: the connection must still be usable.
        std::thread::sleep(Duration::from_millis(500));
    }
    let idle_since = Instant::now();
    let mut got = Vec::new();
    let closed = wait_for(Duration::from_secs(30), || {
        closed_by_server(&mut s, &mut got).then(|| idle_since.elapsed())
    })
    .expect("idle keep-alive connection still open after 30 s");
    assert!(
        closed >= Duration::from_millis(1500),
        "closed after {closed:?} idle, before the 2 s idle timeout"
    );
    let scrape = d.scrape();
    assert!(
        http_metric(
            &scrape,
            "gala_gopher_self_http_timeouts_total",
            ",kind=\"idle\""
        ) >= 1.0,
        "idle timeout not counted:\n{scrape}"
    );
}

/// A client that pipelines requests but never reads the responses is disconnected once a
/// response has been stuck for `request_timeout_secs` (the idle limit is much longer).
#[test]
fn client_that_stops_reading_is_disconnected_after_request_timeout() {
    let d = Daemon::start_env(
        60,
        "",
        &[
            (ENV_HEADER, "60"),
            (ENV_IDLE, "60"),
            ("GALA_GOPHER_WEB_SERVER__REQUEST_TIMEOUT_SECS", "2"),
        ],
        |_| {},
    );
    let mut s = connect(d.port);
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // ~4000 responses of several kB: far more than the socket buffers hold.
    let t0 = Instant::now();
    for _ in 0..4000 {
        if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .is_err()
        {
            break;
        }
    }
    // Do not read: the server must give up on its own. Then drain to see the close.
    let closed = wait_for(Duration::from_secs(40), || {
        let scrape = http(d.port, "GET", "/metrics").ok()?.1;
        (http_metric(
            &scrape,
            "gala_gopher_self_http_timeouts_total",
            ",kind=\"request\"",
        ) >= 1.0)
            .then(|| t0.elapsed())
    })
    .expect("a client not reading its responses was not disconnected within 40 s");
    assert!(
        closed >= Duration::from_millis(1500),
        "disconnected after {closed:?}, before the 2 s request timeout"
    );
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

/// With `max_connections = 4` and four idle connections held open, further connections are
/// refused at once (503 or closed), and counted; once the four close, `/metrics` works again.
#[test]
fn connections_beyond_the_limit_are_refused() {
    let d = Daemon::start_env(
        60,
        "",
        &[(ENV_HEADER, "120"), (ENV_IDLE, "120"), (ENV_MAX_CONN, "4")],
        |_| {},
    );
    // On a loaded machine a connection closed just before (the start-up polls) may still be
    // counted for a moment, and then one of the four held ones is the refused one: try again
    // with four fresh ones, a few times.
    let mut held: Vec<TcpStream> = Vec::new();
    let mut refused = None;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(500));
        held = (0..4).map(|_| connect(d.port)).collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut s = connect(d.port);
        if s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").is_err() {
            continue;
        }
        let mut got = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if closed_by_server(&mut s, &mut got) {
                let text = String::from_utf8_lossy(&got);
                if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
                    refused = Some(text.into_owned());
                }
                break;
            }
        }
        if refused.is_some() {
            break;
        }
        held.clear();
    }
    assert!(
        refused.is_some(),
        "a fifth connection was served while four were held open"
    );
    drop(held);
    let scrape = wait_for(Duration::from_secs(20), || {
        http(d.port, "GET", "/metrics")
            .ok()
            .filter(|(st, _)| *st == 200)
            .map(|(_, b)| b)
    })
    .expect("/metrics not served after the held connections closed");
    assert!(
        http_metric(
            &scrape,
            "gala_gopher_self_http_connections_refused_total",
            ""
        ) >= 1.0,
        "refused connections not counted:\n{scrape}"
    );
}

/// Started with 256 descriptors, the daemon faces 300 idle connections: it never uses up its
/// descriptors, does not spin, and serves `/metrics` again while the 300 client sockets are
/// still open (held connections time out, the rest are refused).
#[test]
fn idle_connection_flood_under_low_nofile_keeps_serving() {
    raise_own_nofile(4096);
    let dir = tempfile::tempdir().unwrap();
    for sub in ["probes", "meta"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let port = free_port();
    let conf = dir.path().join("gala-gopher.conf");
    std::fs::write(
        &conf,
        format!(
            "global = {{ log_level = \"info\"; probes_dir = \"{p}\"; meta_dir = \"{m}\"; \
             cmd_socket = \"\"; probes_init = \"\"; }};\n\
             web_server = {{ bind_addr = \"127.0.0.1\"; port = {port}; header_read_timeout_secs = 3; }};\n",
            p = dir.path().join("probes").display(),
            m = dir.path().join("meta").display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gala-gopher"));
    cmd.arg("-c")
        .arg(&conf)
        .env("GALA_GOPHER_GLOBAL__MACHINE_ID", MACHINE_ID)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn gala-gopher");
    let d = Daemon { dir, port, child };
    assert!(
        wait_for(Duration::from_secs(20), || http(port, "GET", "/metrics")
            .ok()
            .filter(|(s, _)| *s == 200))
        .is_some(),
        "daemon did not start; log:\n{}",
        d.log()
    );
    let pid = d.pid();
    let clients: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    let mut max_fds = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        max_fds = max_fds.max(fd_count(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let served = wait_for(Duration::from_secs(30), || {
        max_fds = max_fds.max(fd_count(pid));
        http(port, "GET", "/metrics")
            .ok()
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b)
    });
    let wall = t0.elapsed();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / hz;
    assert!(
        served.is_some(),
        "/metrics not served while 300 idle connections are open; log:\n{}",
        d.log()
    );
    assert!(
        max_fds < 240,
        "daemon used {max_fds} of its 256 descriptors"
    );
    assert!(
        cpu < wall.as_secs_f64() * 0.5,
        "daemon used {cpu:.1} s CPU in {wall:?}: busy loop?"
    );
    drop(clients);
    let scrape = d.scrape();
    assert!(
        http_metric(
            &scrape,
            "gala_gopher_self_http_connections_refused_total",
            ""
        ) >= 1.0
    );
}

/// When accept(2) fails with EMFILE (the daemon's descriptor limit lowered to what it already
/// uses), the server backs off instead of spinning, counts the errors, and recovers once
/// descriptors are available again.
#[test]
fn accept_errors_back_off_and_recover() {
    let d = Daemon::start_env(60, "", &[(ENV_HEADER, "3")], |_| {});
    let pid = d.pid();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) on our own child with valid structs; only the soft limit changes, so
    // restoring it needs no privilege.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let tight = libc::rlimit {
        rlim_cur: fd_count(pid) as u64,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &tight, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let pending: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", d.port)).expect("connect"))
        .collect();
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / hz;
    let wall = t0.elapsed().as_secs_f64();
    // SAFETY: as above; restores the limit the daemon started with.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    drop(pending);
    assert!(
        cpu < wall * 0.5,
        "daemon used {cpu:.2} s CPU in {wall:.1} s with accept failing: busy loop?"
    );
    let scrape = wait_for(Duration::from_secs(30), || {
        http(d.port, "GET", "/metrics")
            .ok()
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b)
    })
    .expect("/metrics not served after the descriptor limit was restored");
    assert!(
        http_metric(&scrape, "gala_gopher_self_http_accept_errors_total", "") >= 1.0,
        "accept errors not counted:\n{scrape}"
    );
}

/// 50 clients request `/metrics` of a 50k-series store at once and read slowly: the daemon's
/// peak RSS (VmHWM, reset just before) grows by far less than 50 copies of the body.
#[test]
fn concurrent_scrapes_share_one_render() {
    const ROWS: usize = 10_000;
    let d = Daemon::start_env(
        60,
        "",
        &[
            ("GALA_GOPHER_IMDB__MAX_RECORDS_NUM", "20000"),
            (ENV_MAX_REQ, "0"),
        ],
        |p| load_probe(p, ROWS),
    );
    wait_rows(&d, ROWS);
    let body_len = d.scrape().len();
    // Let the allocator settle after the first renders.
    std::thread::sleep(Duration::from_secs(1));
    let pid = d.pid();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM (run as root)");
    let rss_before = status_kb(pid, "VmRSS:");
    let mut clients: Vec<TcpStream> = (0..50).map(|_| connect(d.port)).collect();
    for c in &mut clients {
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    }
    // Nobody reads for a while: every response is rendered and waits in the daemon.
    std::thread::sleep(Duration::from_secs(3));
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).expect("read scrape");
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
            "{}",
            &text[..text.len().min(200)]
        );
        assert!(text.contains("gala_gopher_load_a{"));
    }
    let hwm = status_kb(pid, "VmHWM:");
    let growth_kb = hwm.saturating_sub(rss_before);
    let body_kb = (body_len / 1024) as u64;
    eprintln!("50 scrapes of a {body_kb} kB body: peak RSS +{growth_kb} kB over {rss_before} kB");
    // One shared render (plus one in progress) is a few bodies; 50 private renders are 50+.
    assert!(
        growth_kb < 12 * body_kb,
        "peak RSS grew by {growth_kb} kB for 50 scrapes of a {body_kb} kB body (RSS before {rss_before} kB)"
    );
}

/// With `max_requests = 1`, scrapes arriving while one is being rendered get a quick 503, and the
/// refusals are counted.
#[test]
fn scrapes_beyond_max_requests_get_503() {
    const ROWS: usize = 10_000;
    let d = Daemon::start_env(
        60,
        "",
        &[
            ("GALA_GOPHER_IMDB__MAX_RECORDS_NUM", "20000"),
            (ENV_MAX_REQ, "1"),
        ],
        |p| load_probe(p, ROWS),
    );
    wait_rows(&d, ROWS);
    let mut clients: Vec<TcpStream> = (0..20).map(|_| connect(d.port)).collect();
    for c in &mut clients {
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    }
    let mut codes = Vec::new();
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).expect("read scrape");
        let text = String::from_utf8_lossy(&all);
        codes.push(text.split_whitespace().nth(1).unwrap_or("").to_string());
    }
    assert!(codes.iter().any(|c| c == "200"), "{codes:?}");
    assert!(codes.iter().any(|c| c == "503"), "{codes:?}");
    let scrape = wait_for(Duration::from_secs(10), || {
        http(d.port, "GET", "/metrics")
            .ok()
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b)
    })
    .unwrap();
    assert!(
        http_metric(&scrape, "gala_gopher_self_http_requests_refused_total", "") >= 1.0,
        "refused scrapes not counted:\n{scrape}"
    );
}
