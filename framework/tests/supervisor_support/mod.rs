//! Shared helpers of the supervisor integration tests: a collecting [`OutputSink`], script
//! writers and polling.
#![allow(dead_code)]

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gala_gopher::supervisor::{OutputSink, ProbeOrigin, ProbeSpec, SupervisorOptions, Switch};
use gala_gopher::telemetry::ProbeStats;
use tokio::io::AsyncBufReadExt;

/// Something the supervisor did to the sink.
#[derive(Debug, Clone)]
pub enum SinkEvent {
    Prepare(String, Instant),
    Retire(String),
    Line(String, String),
}

/// Records every call; `prepare` fails with `fail_prepare` if set.
#[derive(Default)]
pub struct TestSink {
    pub events: Arc<Mutex<Vec<SinkEvent>>>,
    pub fail_prepare: Mutex<Option<String>>,
}

impl TestSink {
    pub fn new() -> Arc<Self> {
        Arc::new(TestSink::default())
    }

    pub fn prepares(&self, name: &str) -> Vec<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                SinkEvent::Prepare(n, t) if n == name => Some(*t),
                _ => None,
            })
            .collect()
    }

    pub fn retired(&self, name: &str) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, SinkEvent::Retire(n) if n == name))
    }

    pub fn lines(&self, name: &str) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                SinkEvent::Line(n, l) if n == name => Some(l.clone()),
                _ => None,
            })
            .collect()
    }
}

impl OutputSink for TestSink {
    fn prepare(&self, spec: &ProbeSpec) -> Result<(), String> {
        self.events
            .lock()
            .unwrap()
            .push(SinkEvent::Prepare(spec.name.clone(), Instant::now()));
        match &*self.fail_prepare.lock().unwrap() {
            Some(msg) => Err(msg.clone()),
            None => Ok(()),
        }
    }

    fn retire(&self, spec: &ProbeSpec) {
        self.events
            .lock()
            .unwrap()
            .push(SinkEvent::Retire(spec.name.clone()));
    }

    fn consume(
        &self,
        stats: Arc<ProbeStats>,
        stdout: tokio::process::ChildStdout,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let events = Arc::clone(&self.events);
        Box::pin(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                events
                    .lock()
                    .unwrap()
                    .push(SinkEvent::Line(stats.name.to_string(), line));
            }
        })
    }
}

/// Write `body` to `dir/name` with mode 0755 (or 0644).
pub fn write_file(dir: &Path, name: &str, body: &str, executable: bool) -> PathBuf {
    let path = dir.join(name);
    // Write-then-rename so a running discovery scan never sees a half-written file.
    let file = path.file_name().unwrap().to_str().unwrap();
    let tmp = path.with_file_name(format!(".{file}.tmp"));
    std::fs::write(&tmp, body).unwrap();
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// An executable `#!/bin/sh` script.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    write_file(dir, name, &format!("#!/bin/sh\n{body}\n"), true)
}

/// A spec running `argv` with switch on.
pub fn spec(name: &str, argv: &[&str]) -> ProbeSpec {
    ProbeSpec {
        name: name.to_string(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        origin: ProbeOrigin::Extend,
        switch: Switch::On,
        start_check: None,
        meta_files: Vec::new(),
        declaration: None,
        runtime: None,
    }
}

/// Short timings so tests do not wait for production defaults.
pub fn fast_options() -> SupervisorOptions {
    SupervisorOptions {
        grace: Duration::from_secs(1),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        stable_after: Duration::from_secs(60),
        auto_recheck: Duration::from_millis(100),
        env: Vec::new(),
        cgroups: true,
    }
}

/// Poll `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Does a process with this pid exist (zombie included)?
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Parent pid from /proc/<pid>/stat.
pub fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Pids written one per line into `file` by a probe script.
pub fn read_pids(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A `sleep` argument unique to this test process and `tag` (GNU sleep takes fractional
/// seconds), so the test finds exactly the processes it started.
pub fn marker(tag: u32) -> String {
    format!("1000.{}{:03}", std::process::id(), tag)
}

/// Live (non-zombie) processes whose command line has `arg` as one argument.
pub fn procs_with_arg(arg: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == arg.as_bytes()))
        })
        .filter(|&pid| process_alive(pid))
        .collect()
}

/// Processes with `arg` that lead their own session: `setsid` has run, so they left the
/// probe's process group and only an orphan sweep can end them.
pub fn session_leaders_with_arg(arg: &str) -> Vec<i32> {
    procs_with_arg(arg)
        .into_iter()
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                // Fields after the `(comm)`: state ppid pgrp session ...
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(3)?.parse::<i32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            rest.split_whitespace()
                .next()
                .map(|st| st != "Z" && st != "X")
        })
        .unwrap_or(false)
}

/// Kills every process carrying a marker argument when dropped, so a failing test leaks nothing.
pub struct MarkerGuard(pub String);

impl Drop for MarkerGuard {
    fn drop(&mut self) {
        for _ in 0..50 {
            let pids = procs_with_arg(&self.0);
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: plain kill(2) with a pid read from /proc.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
