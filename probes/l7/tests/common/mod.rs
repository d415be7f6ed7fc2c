//! The real `l7probe` binary under test (needs root and eBPF, as in CI), its records, and the
//! real servers the tests drive (Debian packages; a missing one fails the test, it is never
//! skipped).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_l7probe");

/// Key columns of every table: tgid client_ip server_ip server_port l4_role l7_role protocol.
pub const KEYS: usize = 7;

/// A running l7probe.
pub struct Probe {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stdin: ChildStdin,
}

impl Probe {
    /// Starts the probe with `args`, writing `first` (a control line) right after the spawn.
    pub fn start(args: &[&str], first: Option<&str>) -> Probe {
        Probe::start_bin(BIN, args, first)
    }

    /// [`Probe::start`] of the binary `bin` (kafkaprobe).
    pub fn start_bin(bin: &str, args: &[&str], first: Option<&str>) -> Probe {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn l7probe");
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
        if ready.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "l7probe did not attach; stderr:\n{}",
                stderr.lock().unwrap()
            );
        }
        Probe {
            child,
            lines,
            stderr,
            stdin,
        }
    }

    /// Records of `periods` whole periods from now on (`l7probe_bpf_stats` ends a period);
    /// lines already queued are dropped first.
    pub fn records_for(&self, periods: usize) -> Vec<Vec<String>> {
        while self.lines.try_recv().is_ok() {}
        let mut out = Vec::new();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(10 + 4 * periods as u64);
        while seen < periods {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let f = parse(&line);
                    if f[0] == "l7probe_bpf_stats" || f[0] == "kafkaprobe_bpf_stats" {
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

    /// Writes one control line.
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits until `needle` has been logged.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on stderr:\n{}",
                self.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the probe logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Panics unless the probe still runs.
    pub fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the probe exited; stderr:\n{}",
            self.stderr.lock().unwrap()
        );
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fields of a record line `|table|a|b|`.
pub fn parse(line: &str) -> Vec<String> {
    line.trim_matches('|')
        .split('|')
        .map(str::to_string)
        .collect()
}

/// The newest record of `table` whose fields satisfy `pick`.
pub fn last<'a>(
    records: &'a [Vec<String>],
    table: &str,
    pick: impl Fn(&[String]) -> bool,
) -> Option<&'a Vec<String>> {
    records.iter().rev().find(|r| r[0] == table && pick(r))
}

/// Value of field `name` of a record of `table` (names from the probe's `--print-meta`).
pub fn field(r: &[String], name: &str) -> String {
    let meta = meta_fields(&r[0]);
    let i = meta
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("{} has no field {name}", r[0]));
    r[1 + i].clone()
}

/// A numeric field.
pub fn num(r: &[String], name: &str) -> u64 {
    field(r, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} of {r:?}"))
}

/// Field names of `table` in the probe's `.meta`.
pub fn meta_fields(table: &str) -> Vec<String> {
    let mut text = String::new();
    for bin in [BIN, env!("CARGO_BIN_EXE_kafkaprobe")] {
        let out = Command::new(bin).arg("--print-meta").output().unwrap();
        text.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    let start = text
        .find(&format!("table_name: \"{table}\""))
        .unwrap_or_else(|| panic!("no table {table}"));
    let rest = &text[start + 1..];
    let end = rest.find("table_name:").unwrap_or(rest.len());
    rest[..end]
        .lines()
        .filter(|l| l.contains("type: \""))
        .filter_map(|l| l.rsplit("name: \"").next()?.split('"').next())
        .map(str::to_string)
        .collect()
}

/// The count of a histogram field `N b1 c1 ... bN cN sum max` (cumulative: the last count).
/// An empty field (no observation yet) counts 0.
pub fn hist_count(v: &str) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let t: Vec<&str> = v.split(' ').collect();
    let n: usize = t[0].parse().unwrap();
    t[2 * n].parse().unwrap()
}

/// A program from a Debian package, or a clear failure naming the package.
pub fn need(program: &str, package: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    panic!("{program} not found: install the Debian package {package} (./build.sh --check does)");
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until 127.0.0.1:`port` accepts connections.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Children (threads excluded) of process `pid`, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let after = stat.rsplit(')').next().unwrap_or("");
        let ppid = after.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// A server process stopped when dropped: SIGTERM first (nginx's master then stops its
/// workers, which a SIGKILL would leave running), SIGKILL after 5 s.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sets its flag when dropped (also when the work panicked).
struct Done<'a>(&'a AtomicBool);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The records of the periods while `work` runs and two whole periods after it ended (the
/// rows of a process that exited appear in one period only).
pub fn during<T: Send>(probe: &Probe, work: impl FnOnce() -> T + Send) -> (T, Vec<Vec<String>>) {
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let h = s.spawn(|| {
            let _done = Done(&done);
            work()
        });
        let mut records = Vec::new();
        let mut after = 0;
        while after < 2 {
            let finished = done.load(Ordering::SeqCst);
            records.extend(probe.records_for(1));
            if finished {
                after += 1;
            }
        }
        (h.join().unwrap(), records)
    })
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs a file's tests one at a time: the counters of `l7_parse_stats` are the probe's (all
/// its connections), so two tests' traffic must not meet in one probe's figures.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An nginx on 127.0.0.1:`port` with one worker, serving the test's locations.
pub struct Nginx {
    _server: Server,
    _dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
    /// Its worker process.
    pub worker: u32,
}

/// An nginx (Debian package), its server block holding `locations`, over TLS with a
/// certificate made here when `tls`; `www/big` is a 300 000-byte file.
pub fn nginx(tls: bool, locations: &str) -> Nginx {
    let bin = need("nginx", "nginx");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let port = free_port();
    let listen = if tls {
        let st = Command::new(need("openssl", "openssl"))
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost", "-keyout", &format!("{d}/key.pem")])
            .args(["-out", &format!("{d}/cert.pem")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl req");
        format!("listen 127.0.0.1:{port} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;")
    } else {
        format!("listen 127.0.0.1:{port};")
    };
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/big"), vec![b'x'; 300_000]).unwrap();
    let conf = format!(
        r#"
worker_processes 1;
daemon off;
user root;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {d}/cb;
    proxy_temp_path {d}/px;
    fastcgi_temp_path {d}/fc;
    uwsgi_temp_path {d}/uw;
    scgi_temp_path {d}/sc;
    server {{
        {listen}
        root {d}/www;
        {locations}
    }}
}}
"#
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let child = Command::new(bin)
        .args(["-p", &d, "-c", &format!("{d}/nginx.conf")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let master = child.id();
    let server = Server(child);
    wait_port(port);
    // The master listens before it forks its worker.
    let deadline = Instant::now() + Duration::from_secs(10);
    let worker = loop {
        if let Some(w) = children(master).first().copied() {
            break w;
        }
        assert!(Instant::now() < deadline, "no nginx worker");
        thread::sleep(Duration::from_millis(20));
    };
    Nginx {
        _server: server,
        _dir: dir,
        port,
        worker,
    }
}
