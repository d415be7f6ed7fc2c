//! Shared by the integration tests: real JVMs (compiled and started by the test), the probe
//! binary with its records read by a thread, and the real daemon.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jvmprobe::tables::{meta_tables, STATS};

/// The probe binary under test.
pub const PROBE: &str = env!("CARGO_BIN_EXE_jvmprobe");
/// How long a test waits for something that should happen within a few periods.
pub const WAIT: Duration = Duration::from_secs(30);

/// Path of a JDK tool, failing the test clearly when it is missing.
pub fn jdk_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` not found in PATH: these tests need a JDK 17 (apt-get install openjdk-17-jdk-headless)")
    })
}

/// A temp dir outside /tmp (tests give JVMs a private /tmp).
pub fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("jvmprobe-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
}

/// The test program: starts `threads` idle threads (even ones daemon), allocates until its
/// first collector has run `young` collections, then prints what its MXBeans say once two
/// snapshots 200 ms apart agree, prints `ready` and sleeps.
pub const GC_LOAD: &str = r#"
import java.lang.management.*;
import java.util.*;

public class GcLoad {
    static volatile Object sink;
    public static void main(String[] a) throws Exception {
        long young = Long.parseLong(a[0]);
        int threads = Integer.parseInt(a[1]);
        System.out.println("starting");
        for (int i = 0; i < threads; i++) {
            Thread t = new Thread(() -> {
                try { Thread.sleep(Long.MAX_VALUE); } catch (InterruptedException e) { }
            }, "idle-" + i);
            t.setDaemon(i % 2 == 0);
            t.start();
        }
        List<GarbageCollectorMXBean> gcs = ManagementFactory.getGarbageCollectorMXBeans();
        while (gcs.get(0).getCollectionCount() < young) { sink = new byte[32 * 1024]; }
        sink = null;
        String prev = "", cur = snapshot(gcs);
        while (!cur.equals(prev)) { prev = cur; Thread.sleep(200); cur = snapshot(gcs); }
        System.out.print(cur);
        System.out.println("ready");
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }

    static String snapshot(List<GarbageCollectorMXBean> gcs) {
        StringBuilder b = new StringBuilder();
        for (GarbageCollectorMXBean g : gcs) {
            b.append("gc\t").append(g.getName()).append('\t').append(g.getCollectionCount())
             .append('\t').append(g.getCollectionTime()).append('\n');
        }
        ClassLoadingMXBean c = ManagementFactory.getClassLoadingMXBean();
        b.append("classes\t").append(c.getLoadedClassCount()).append('\t')
         .append(c.getTotalLoadedClassCount()).append('\t').append(c.getUnloadedClassCount()).append('\n');
        ThreadMXBean t = ManagementFactory.getThreadMXBean();
        b.append("threads\t").append(t.getThreadCount()).append('\t').append(t.getDaemonThreadCount())
         .append('\t').append(t.getPeakThreadCount()).append('\t').append(t.getTotalStartedThreadCount()).append('\n');
        b.append("start\t").append(ManagementFactory.getRuntimeMXBean().getStartTime()).append('\n');
        b.append("vm\t").append(System.getProperty("java.vm.name")).append('\t')
         .append(System.getProperty("java.vm.vendor")).append('\t')
         .append(System.getProperty("java.vm.version")).append('\n');
        return b.toString();
    }
}
"#;

/// `GcLoad.class` compiled into a fresh dir.
pub fn compile_gc_load() -> tempfile::TempDir {
    let dir = workdir();
    std::fs::write(dir.path().join("GcLoad.java"), GC_LOAD).unwrap();
    let out = Command::new(jdk_tool("javac"))
        .arg("-d")
        .arg(dir.path())
        .arg(dir.path().join("GcLoad.java"))
        .output()
        .expect("run javac");
    assert!(
        out.status.success(),
        "javac failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// What the JVM's own MXBeans said when it printed `ready`.
#[derive(Debug, Default, Clone)]
pub struct Mx {
    /// name → (count, time ms).
    pub gcs: Vec<(String, i64, i64)>,
    /// loaded now, loaded total, unloaded.
    pub classes: (i64, i64, i64),
    /// live, daemon, peak, started.
    pub threads: (i64, i64, i64, i64),
    /// RuntimeMXBean start time, ms.
    pub start_ms: i64,
    /// java.vm.name, vendor, version.
    pub vm: (String, String, String),
}

/// A JVM the test started; killed when dropped.
pub struct Jvm {
    pub child: Child,
    pub lines: Receiver<String>,
}

impl Jvm {
    /// Starts `cmd` (a `java` command line, stdout piped).
    pub fn spawn(mut cmd: Command) -> Jvm {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start java");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Jvm { child, lines: rx }
    }

    /// `java <flags> -cp <classes> GcLoad <young> <threads>`.
    pub fn gc_load(classes: &Path, flags: &[&str], young: u32, threads: u32) -> Jvm {
        let mut cmd = Command::new(jdk_tool("java"));
        cmd.args(flags)
            .arg("-cp")
            .arg(classes)
            .arg("GcLoad")
            .arg(young.to_string())
            .arg(threads.to_string());
        Jvm::spawn(cmd)
    }

    /// Waits for `ready` and returns the MXBean lines before it.
    pub fn ready(&self) -> Mx {
        let mut mx = Mx::default();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("the java program printed `ready` within 60 s");
            let f: Vec<&str> = line.split('\t').collect();
            let n = |i: usize| f[i].parse::<i64>().unwrap();
            match f[0] {
                "ready" => return mx,
                "gc" => mx.gcs.push((f[1].to_string(), n(2), n(3))),
                "classes" => mx.classes = (n(1), n(2), n(3)),
                "threads" => mx.threads = (n(1), n(2), n(3), n(4)),
                "start" => mx.start_ms = n(1),
                "vm" => mx.vm = (f[1].into(), f[2].into(), f[3].into()),
                _ => {}
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Jvm {
    /// SIGKILL: the JVM leaves its file behind, as a crashed JVM does; returns the file
    /// (the test removes it).
    pub fn kill_hard(mut self) -> PathBuf {
        let pid = self.pid();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let user = if uid == 0 {
            "root".to_string()
        } else {
            std::env::var("USER").unwrap_or_default()
        };
        PathBuf::from(format!("/tmp/hsperfdata_{user}/{pid}"))
    }
}

impl Drop for Jvm {
    /// SIGTERM (the JVM removes its file on an orderly exit), SIGKILL after 5 s.
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills the listed processes (not our children) when dropped.
pub struct KillOnDrop(pub Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: plain kill(2) of processes this test started (through a shell).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// One record: table and unescaped values.
#[derive(Debug, Clone)]
pub struct Rec {
    pub table: String,
    pub values: Vec<String>,
}

impl Rec {
    /// The value of `field` (by the table's declaration).
    pub fn get(&self, field: &str) -> &str {
        let tables = meta_tables();
        let t = tables
            .iter()
            .find(|t| t.name == self.table)
            .unwrap_or_else(|| panic!("unknown table {}", self.table));
        assert_eq!(t.width(), self.values.len(), "{self:?}");
        let i = t
            .fields
            .iter()
            .position(|f| f.name == field)
            .unwrap_or_else(|| panic!("no field {field} in {}", self.table));
        &self.values[i]
    }

    pub fn num(&self, field: &str) -> f64 {
        let v = self.get(field);
        v.parse()
            .unwrap_or_else(|_| panic!("{field} = {v:?} is not a number in {self:?}"))
    }
}

/// One period's records.
#[derive(Debug)]
pub struct Period {
    pub recs: Vec<Rec>,
}

impl Period {
    /// Records of `table` for `pid`.
    pub fn of(&self, table: &str, pid: u32) -> Vec<&Rec> {
        let pid = pid.to_string();
        self.recs
            .iter()
            .filter(|r| r.table == table && r.values[0] == pid)
            .collect()
    }

    /// The one record of `table` for `pid` whose key `key` is `value` (or the only one).
    pub fn one(&self, table: &str, pid: u32, key: Option<(&str, &str)>) -> &Rec {
        let recs: Vec<&Rec> = self
            .of(table, pid)
            .into_iter()
            .filter(|r| key.is_none_or(|(k, v)| r.get(k) == v))
            .collect();
        assert_eq!(recs.len(), 1, "{table} {pid} {key:?}: {:#?}", self.recs);
        recs[0]
    }

    /// Pids with a `jvm_instance` record.
    pub fn pids(&self) -> Vec<u32> {
        self.recs
            .iter()
            .filter(|r| r.table == jvmprobe::tables::INSTANCE)
            .map(|r| r.values[0].parse().unwrap())
            .collect()
    }

    pub fn stats(&self) -> &Rec {
        self.recs
            .last()
            .expect("a period ends with its stats record")
    }
}

/// The probe binary with its stdout lines and stderr collected by threads.
pub struct Probe {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Probe {
    /// `jvmprobe -t 1`, stdin piped (control lines) or at EOF.
    pub fn start(controlled: bool) -> Probe {
        let mut child = Command::new(PROBE)
            .args(["-t", "1"])
            .stdin(if controlled {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn jvmprobe");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Probe {
            child,
            stdin,
            lines: rx,
            stderr,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("started controlled");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn recv(&self, timeout: Duration) -> Option<Rec> {
        let line = match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => return None,
            Err(RecvTimeoutError::Disconnected) => {
                panic!("jvmprobe exited:\n{}", self.stderr())
            }
        };
        let (table, values) = probe_sdk::record::split_line(line.as_bytes())
            .unwrap_or_else(|| panic!("not a record line: {line:?}"));
        Some(Rec {
            table: String::from_utf8(table).unwrap(),
            values: values
                .into_iter()
                .map(|v| String::from_utf8(v).unwrap())
                .collect(),
        })
    }

    /// A period collected after this call (pending lines and a period cut in two dropped).
    pub fn fresh_period(&mut self) -> Period {
        let mut at_boundary = true;
        while let Ok(line) = self.lines.try_recv() {
            at_boundary = line.starts_with(&format!("|{STATS}|"));
        }
        if !at_boundary {
            while self.recv(WAIT).expect("end of a period").table != STATS {}
        }
        let mut recs = Vec::new();
        loop {
            let r = self
                .recv(WAIT)
                .unwrap_or_else(|| panic!("no period within {WAIT:?}; stderr:\n{}", self.stderr()));
            let end = r.table == STATS;
            recs.push(r);
            if end {
                return Period { recs };
            }
        }
    }

    /// The first fresh period for which `pred` holds; panics after [`WAIT`].
    pub fn period_where(&mut self, what: &str, pred: impl Fn(&Period) -> bool) -> Period {
        let deadline = Instant::now() + WAIT;
        loop {
            let p = self.fresh_period();
            if pred(&p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {WAIT:?}; last period: {:#?}\nstderr:\n{}",
                p.recs,
                self.stderr()
            );
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// `jcmd <pid> PerfCounter.print` as name → raw value text (strings keep their quotes).
pub fn jcmd_counters(pid: u32) -> HashMap<String, String> {
    let out = Command::new(jdk_tool("jcmd"))
        .arg(pid.to_string())
        .arg("PerfCounter.print")
        .output()
        .expect("run jcmd");
    assert!(out.status.success(), "jcmd failed: {out:?}");
    parse_snap(&String::from_utf8_lossy(&out.stdout))
}

/// `name=value` lines (jcmd PerfCounter.print, jstat -snap) as a map.
pub fn parse_snap(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GET `path` over HTTP/1.0; (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
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
