//! Test fixtures: a running `sliprobe` whose record lines are collected, "containers" made of
//! real cgroups named like a runtime names them, and busy or IO-bound child processes put in
//! them before they exec.
#![allow(dead_code)]

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use sliprobe::cgroups::Layout;

/// A running `sliprobe` with its stdout lines and stderr lines collected.
pub struct ProbeRun {
    child: Child,
    control: Option<ChildStdin>,
    lines: Receiver<String>,
    errs: Receiver<String>,
    pub stderr: Vec<String>,
}

impl ProbeRun {
    pub fn start(args: &[&str]) -> ProbeRun {
        ProbeRun::spawn(args, &[], false)
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> ProbeRun {
        ProbeRun::spawn(args, env, false)
    }

    /// Starts with stdin piped: [`ProbeRun::send`] writes control lines.
    pub fn start_controlled(args: &[&str]) -> ProbeRun {
        ProbeRun::spawn(args, &[], true)
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], controlled: bool) -> ProbeRun {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sliprobe"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(if controlled {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sliprobe");
        let control = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, errs) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if etx.send(line).is_err() {
                    break;
                }
            }
        });
        ProbeRun {
            child,
            control,
            lines,
            errs,
            stderr: Vec::new(),
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

    /// Waits for a stderr line containing `needle`; panics with stderr on timeout.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.errs.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stderr.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(_) => panic!("no {needle:?} on stderr; stderr: {:#?}", self.stderr),
            }
        }
    }

    /// Waits for the "[INFO] sliprobe attached" line.
    pub fn wait_attached(&mut self, timeout: Duration) {
        self.wait_stderr("[INFO] sliprobe attached", timeout);
    }

    fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                while let Ok(l) = self.errs.try_recv() {
                    self.stderr.push(l);
                }
                panic!("no record within {timeout:?}; stderr: {:#?}", self.stderr)
            }
        }
    }

    /// The records of the next complete period: lines up to and including its
    /// `sli_bpf_stats`. A period being printed when this is called is skipped.
    pub fn next_period(&mut self, timeout: Duration) -> Vec<Record> {
        while self.lines.try_recv().is_ok() {}
        loop {
            if self.next_line(timeout).starts_with("|sli_bpf_stats|") {
                break;
            }
        }
        self.period(timeout)
    }

    /// The records of the period whose first line comes next.
    pub fn period(&mut self, timeout: Duration) -> Vec<Record> {
        let mut group = Vec::new();
        loop {
            let line = self.next_line(timeout);
            let rec = Record::parse(&line).unwrap_or_else(|| panic!("not a record: {line:?}"));
            let last = rec.table == "sli_bpf_stats";
            group.push(rec);
            if last {
                return group;
            }
        }
    }

    /// SIGTERM, then waits; returns the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for ProbeRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `|table|f1|...|fn|` line (no escapes are expected in the values these tests read).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub table: String,
    pub fields: Vec<String>,
}

impl Record {
    pub fn parse(line: &str) -> Option<Record> {
        let inner = line.strip_prefix('|')?.strip_suffix('|')?;
        let mut parts = inner.split('|');
        let table = parts.next()?.to_string();
        Some(Record {
            table,
            fields: parts.map(str::to_string).collect(),
        })
    }

    /// The value of field `name` of this record's table (declared in `sliprobe.meta`).
    pub fn get(&self, name: &str) -> &str {
        let tables = sliprobe::tables::meta_tables();
        let t = tables
            .iter()
            .find(|t| t.name == self.table)
            .unwrap_or_else(|| panic!("undeclared table {}", self.table));
        let i = t
            .fields
            .iter()
            .position(|f| f.name == name)
            .unwrap_or_else(|| panic!("{} has no field {name}", self.table));
        &self.fields[i]
    }

    /// Field `name` as an integer (panics with the record otherwise).
    pub fn num(&self, name: &str) -> u64 {
        let v = self.get(name);
        v.parse()
            .unwrap_or_else(|_| panic!("{name} = {v:?} is not an integer in {self:?}"))
    }

    /// Field `name` as a float.
    pub fn float(&self, name: &str) -> f64 {
        let v = self.get(name);
        v.parse()
            .unwrap_or_else(|_| panic!("{name} = {v:?} is not a number in {self:?}"))
    }

    /// Field `name`, a histogram: (count, sum).
    pub fn histogram(&self, name: &str) -> (u64, u64) {
        let v = self.get(name);
        let h = record_line::histogram::decode(v)
            .unwrap_or_else(|| panic!("{name} = {v:?} is not a histogram"));
        (h.count.parse().unwrap(), h.sum.parse().unwrap())
    }
}

/// The record of `table` keyed `key` in a period.
pub fn row<'a>(period: &'a [Record], table: &str, key: &str) -> Option<&'a Record> {
    period
        .iter()
        .find(|r| r.table == table && r.fields.first().map(String::as_str) == Some(key))
}

/// A container id of 64 hex digits that no runtime uses; its first 12 digits (the short id)
/// are `tag` and the test process's pid, so tests and runs do not collide.
pub fn fake_id(tag: u16) -> String {
    let pid = std::process::id();
    format!("{tag:04x}{pid:08x}").repeat(6)[..64].to_string()
}

/// `mkdir -p`, again if a test running at the same time removed the shared parent meanwhile.
fn mkdir(dir: &std::path::Path) {
    let mut tries = 0;
    while let Err(e) = std::fs::create_dir_all(dir) {
        tries += 1;
        if tries == 10 {
            panic!("mkdir {} (root needed): {e}", dir.display());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A "container": a cgroup named `/ggslitest.slice/docker-<id>.scope` in every hierarchy the
/// probe reads (v1 cpu and cpuacct, and v2), as docker's systemd driver names one. Removed on
/// drop (after its processes are gone).
pub struct FakeContainer {
    pub id: String,
    dirs: Vec<PathBuf>,
}

impl FakeContainer {
    pub fn create(tag: u16) -> FakeContainer {
        let layout = Layout::of_host().expect("a cgroup hierarchy is mounted");
        let id = fake_id(tag);
        let rel = format!("ggslitest.slice/docker-{id}.scope");
        let mut dirs = Vec::new();
        for m in [
            Some(&layout.ids),
            layout.cpuacct_v1.as_ref(),
            layout.unified.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let dir = m.dir.join(&rel);
            if dirs.contains(&dir) {
                continue;
            }
            mkdir(&dir);
            dirs.push(dir);
        }
        FakeContainer { id, dirs }
    }

    /// Also a cgroup in the v1 `memory` hierarchy, limited to `bytes` (the memory the
    /// container's processes charge beyond it is reclaimed in their context).
    pub fn limit_memory(&mut self, bytes: u64) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .filter_map(|l| l.split_once(" - "))
            .find(|(_, right)| {
                let mut w = right.split_ascii_whitespace();
                w.next() == Some("cgroup")
                    && w.nth(1)
                        .is_some_and(|o| o.split(',').any(|x| x == "memory"))
            })
            .and_then(|(left, _)| left.split_ascii_whitespace().nth(4))
            .map(PathBuf::from)
            .expect("a cgroup v1 memory hierarchy (this machine kind is hybrid v1)");
        let dir = mount.join(format!("ggslitest.slice/docker-{}.scope", self.id));
        mkdir(&dir);
        std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())
            .expect("set memory.limit_in_bytes");
        self.dirs.push(dir);
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// `cmd`, put in this container's cgroups (and pinned to `cpu` if given) before it execs.
    pub fn spawn(&self, cmd: &mut Command, cpu: Option<usize>) -> Child {
        let procs: Vec<CString> = self
            .dirs
            .iter()
            .map(|d| CString::new(d.join("cgroup.procs").to_str().unwrap()).unwrap())
            .collect();
        // SAFETY: the closure only calls async-signal-safe functions (open, write, close,
        // sched_setaffinity) on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if n != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(cpu) = cpu {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.spawn().expect("spawn a process in the fake container")
    }

    /// `n` shell busy loops pinned to CPU 0, in this container.
    pub fn busy_loops(&self, n: usize) -> Procs {
        Procs(
            (0..n)
                .map(|_| {
                    let mut cmd = Command::new("/bin/sh");
                    cmd.args(["-c", "while :; do :; done"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    self.spawn(&mut cmd, Some(0))
                })
                .collect(),
        )
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        for d in &self.dirs {
            // A cgroup whose last task was just reaped can be busy for a moment.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            if let Some(parent) = d.parent() {
                // Shared by the tests running at once: the last one removes it.
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// Child processes killed and reaped on drop (also when a test panics).
pub struct Procs(pub Vec<Child>);

impl Procs {
    /// Kills and reaps them now.
    pub fn kill(&mut self) {
        for c in self.0.iter_mut() {
            let _ = c.kill();
        }
        for c in self.0.iter_mut() {
            let _ = c.wait();
        }
        self.0.clear();
    }

    /// The first one's pid.
    pub fn first_pid(&self) -> u32 {
        self.0[0].id()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.kill();
    }
}
