//! Runs the real `gala-gopher` binary against a temp config for end-to-end tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const MACHINE_ID: &str = "test-machine";

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Raw HTTP/1.0 request; returns (status, body).
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Spawn the daemon on `dir/gala-gopher.conf`, its output appended to `dir/daemon.log`.
fn spawn_daemon(dir: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_gala-gopher"))
        .arg("-c")
        .arg(dir.join("gala-gopher.conf"))
        .env("GALA_GOPHER_GLOBAL__MACHINE_ID", MACHINE_ID)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn gala-gopher")
}

/// Path of a workspace binary built next to this test (target/<profile>/<name>).
pub fn probe_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not built: run the whole suite (`cargo test --workspace`, as build.sh --test does)",
        bin.display()
    );
    bin
}

/// Install a shipped probe as `install.sh` does: binary `bin` and its `.meta` (from the
/// workspace folder `dir`) into `probes`.
pub fn install_probe(probes: &Path, bin: &str, dir: &str) {
    std::fs::copy(probe_bin(bin), probes.join(bin)).unwrap();
    std::fs::copy(
        workspace().join(dir).join(format!("{bin}.meta")),
        probes.join(format!("{bin}.meta")),
    )
    .unwrap();
}

/// Write an executable script.
pub fn write_script(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Poll `f` every 100 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Workspace root (for fixtures and the SDK scripts).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Child,
}

impl Daemon {
    pub fn probes_dir(&self) -> PathBuf {
        self.dir.path().join("probes")
    }

    pub fn meta_dir(&self) -> PathBuf {
        self.dir.path().join("meta")
    }

    /// Start the daemon. `extra` is appended to a config that sets the dirs, port and
    /// `record_timeout`; probes go into `probes_dir()` (create them before or after start).
    pub fn start(record_timeout: u32, extra: &str, setup: impl FnOnce(&Path)) -> Daemon {
        Daemon::start_env(record_timeout, extra, &[], setup)
    }

    /// [`Daemon::start`] with extra environment variables (e.g. config overrides).
    pub fn start_env(
        record_timeout: u32,
        extra: &str,
        env: &[(&str, &str)],
        setup: impl FnOnce(&Path),
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("probes")).unwrap();
        std::fs::create_dir_all(dir.path().join("meta")).unwrap();
        setup(&dir.path().join("probes"));
        let port = free_port();
        let conf = format!(
            "global = {{ log_level = \"info\"; probes_dir = \"{p}\"; meta_dir = \"{m}\"; sdk_dir = \"{s}\"; \
             cmd_socket = \"{d}/cmd.sock\"; probes_init = \"{d}/probes.init\"; }};\n\
             imdb = {{ record_timeout = {record_timeout}; }};\n\
             web_server = {{ bind_addr = \"127.0.0.1\"; port = {port}; }};\n{extra}\n",
            p = dir.path().join("probes").display(),
            m = dir.path().join("meta").display(),
            s = workspace().join("probe-sdk/scripts").display(),
            d = dir.path().display(),
        );
        let conf_path = dir.path().join("gala-gopher.conf");
        std::fs::write(&conf_path, conf).unwrap();
        Daemon::start_in(dir, port, env)
    }

    /// Start the daemon on the config already in `dir` (`gala-gopher.conf`, web port `port`).
    pub fn start_in(dir: tempfile::TempDir, port: u16, env: &[(&str, &str)]) -> Daemon {
        let child = spawn_daemon(dir.path(), env);
        let d = Daemon { dir, port, child };
        d.wait_up();
        d
    }

    /// Waits until the daemon serves `/metrics` (20 s), failing with its log.
    pub fn wait_up(&self) {
        let up = wait_for(Duration::from_secs(20), || {
            http(self.port, "GET", "/metrics")
                .ok()
                .filter(|(s, _)| *s == 200)
        });
        assert!(
            up.is_some(),
            "daemon did not serve /metrics; log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn scrape(&self) -> String {
        let (status, body) = http(self.port, "GET", "/metrics").expect("scrape");
        assert_eq!(status, 200);
        body
    }

    pub fn status(&self) -> serde_json::Value {
        let (status, body) = http(self.port, "GET", "/status").expect("status");
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("status json")
    }

    /// Wait until a scrape contains `needle`.
    pub fn wait_scrape(&self, needle: &str, timeout: Duration) -> String {
        wait_for(timeout, || {
            Some(self.scrape()).filter(|s| s.contains(needle))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {needle:?} in scrape; log:\n{}\nlast scrape:\n{}",
                self.log(),
                self.scrape()
            )
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, wait, and start again on the same folder and config (the log is appended).
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = wait_for(Duration::from_secs(15), || {
            self.child.try_wait().ok().flatten()
        });
        assert!(status.is_some(), "daemon exits after SIGTERM");
        self.child = spawn_daemon(self.dir.path(), env);
        self.wait_up();
    }

    /// SIGTERM and wait; returns the exit status and how long it took.
    pub fn stop(mut self) -> (ExitStatus, Duration, String) {
        let t0 = Instant::now();
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = wait_for(Duration::from_secs(15), || {
            self.child.try_wait().ok().flatten()
        })
        .expect("daemon exits after SIGTERM");
        (status, t0.elapsed(), self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Non-self metric lines and their HELP/TYPE (what a probe produced).
pub fn probe_part(scrape: &str) -> String {
    scrape
        .lines()
        .filter(|l| !l.contains("gala_gopher_self_"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Value of the first sample line starting with `prefix` (a metric name plus labels).
pub fn sample(scrape: &str, prefix: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Whether a process with this pid exists (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Run `promtool check metrics` on `scrape`: (exit code, combined report).
pub fn promtool_check(scrape: &str) -> (Option<i32>, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool installed (apt prometheus); build.sh --check installs it");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), report)
}

/// A child process killed (and reaped) when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus server (apt `prometheus`) on a free port, with its TSDB in `work`; killed
/// when dropped.
pub struct Prometheus {
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    _child: KillOnDrop,
}

impl Prometheus {
    /// Start Prometheus with `config` (a prometheus.yml) and `work/tsdb` as storage.
    pub fn start(config: &Path, work: &Path) -> Prometheus {
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus installed (apt prometheus); .ci/run installs it");
        Prometheus {
            port,
            _child: KillOnDrop(child),
        }
    }
}

/// `METHOD PATH` with a form-encoded `body` (the REST API's `json=…`): the status and the JSON
/// reply (`Null` when the body is not JSON).
pub fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}
