//! Harness shared by the integration tests and the overhead benchmark: runs the real
//! `taskprobe` and `taskprobe-workload` binaries and reads their output.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const TASKPROBE: &str = env!("CARGO_BIN_EXE_taskprobe");
pub const WORKLOAD: &str = env!("CARGO_BIN_EXE_taskprobe-workload");

/// One `|table|f1|...|fn|` line split into its table and fields (escapes undone).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub table: String,
    pub fields: Vec<String>,
}

impl Record {
    pub fn parse(line: &str) -> Option<Record> {
        let (table, values) = probe_sdk::record::split_line(line.as_bytes())?;
        Some(Record {
            table: String::from_utf8(table).ok()?,
            fields: values
                .into_iter()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .collect(),
        })
    }

    /// Field `i` as an integer (panics with the record in the message otherwise).
    pub fn num(&self, i: usize) -> u64 {
        self.fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("field {i} of {self:?} is not a number"))
    }

    /// The `tgid` key of a `proc_*` record.
    pub fn tgid(&self) -> Option<u32> {
        self.table
            .starts_with("proc_")
            .then(|| self.fields.first()?.parse().ok())
            .flatten()
    }
}

/// A running taskprobe with its stdout lines and stderr text collected by threads.
pub struct Probe {
    child: Child,
    /// The control channel, when started with [`Probe::start_controlled`].
    control: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Every record received so far.
    pub seen: Vec<Record>,
}

impl Probe {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Probe {
        Probe::spawn(args, env, false)
    }

    /// Starts with stdin piped: [`Probe::send`] writes control lines.
    pub fn start_controlled(args: &[&str]) -> Probe {
        Probe::spawn(args, &[], true)
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], controlled: bool) -> Probe {
        let mut cmd = Command::new(TASKPROBE);
        cmd.args(args)
            .stdin(if controlled {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn taskprobe");
        let control = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
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
            control,
            lines: rx,
            stderr,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one control line (a newline is added).
    pub fn send(&mut self, line: &str) {
        let stdin = self
            .control
            .as_mut()
            .expect("started with start_controlled");
        writeln!(stdin, "{line}").expect("write control line");
        stdin.flush().expect("flush control line");
    }

    /// Closes the control channel (stdin at EOF).
    pub fn close_control(&mut self) {
        drop(self.control.take());
    }

    /// Whether the probe process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until stderr holds `needle` `count` times; panics with stderr on timeout.
    pub fn wait_stderr(&mut self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.stderr().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{count}) on stderr within {timeout:?}:\n{}",
                self.stderr()
            );
            // Keep reading stdout meanwhile, so the probe never blocks on a full pipe.
            self.collect_for(Duration::from_millis(20));
        }
    }

    /// The records of the first whole period that starts after this call: takes in what is
    /// already queued (kept in `seen`), skips to the end of the period being printed, then
    /// returns the records up to and including the next `proc_bpf_stats`.
    pub fn next_period(&mut self, timeout: Duration) -> Vec<Record> {
        while let Ok(line) = self.lines.try_recv() {
            if let Some(r) = Record::parse(&line) {
                self.seen.push(r);
            }
        }
        self.wait_for(timeout, |r| r.table == "proc_bpf_stats")
            .expect("end of the current period");
        let start = self.seen.len();
        self.wait_for(timeout, |r| r.table == "proc_bpf_stats")
            .expect("end of the next period");
        self.seen[start..].to_vec()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the probe logs that it is attached; panics with its stderr on timeout or exit.
    pub fn wait_attached(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr().contains("taskprobe attached") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "taskprobe exited ({status}) before attaching:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "taskprobe did not attach in {timeout:?}:\n{}",
            self.stderr()
        );
    }

    /// Reads records until `pred` accepts one (returned) or `timeout` passes (None).
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Record) -> bool,
    ) -> Option<Record> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(r) = Record::parse(&line) {
                        self.seen.push(r.clone());
                        if pred(&r) {
                            return Some(r);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    /// Collects records for `dur`.
    pub fn collect_for(&mut self, dur: Duration) {
        let _ = self.wait_for(dur, |_| false);
    }

    /// SIGTERM, then wait for exit.
    pub fn stop(mut self) -> (ExitStatus, String, Vec<Record>) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait taskprobe");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            if let Some(r) = Record::parse(&line) {
                self.seen.push(r);
            }
        }
        thread::sleep(Duration::from_millis(50));
        (status, self.stderr(), self.seen)
    }

    pub fn wait_exit(mut self, timeout: Duration) -> Option<(ExitStatus, String)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(50));
                return Some((status, self.stderr()));
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }
}

/// `taskprobe-workload` started in a mode that prints `ready <pid>` and waits for a go byte.
pub struct Workload {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
}

impl Workload {
    pub fn start(args: &[&str]) -> Workload {
        let mut cmd = Command::new(WORKLOAD);
        cmd.args(args);
        Workload::spawn(cmd)
    }

    /// Starts `cmd` (the workload binary, set up by the caller) and reads its `ready` line.
    pub fn spawn(mut cmd: Command) -> Workload {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn workload");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read ready line");
        let pid = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Workload {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// Sends the single go byte.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"g").expect("write go byte");
        stdin.flush().expect("flush");
    }

    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read workload line");
        line.trim().to_string()
    }

    /// Closes stdin (the script mode then exits) and reaps the process.
    pub fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait workload")
    }
}
