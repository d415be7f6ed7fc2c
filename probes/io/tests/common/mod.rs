//! Test fixtures: a loop device set up with ioctls, O_DIRECT I/O, and a running `ioprobe`
//! whose record lines are collected.
#![allow(dead_code)]

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

/// A loop device backed by a file, detached on drop.
pub struct LoopDevice {
    pub index: u32,
    pub major: u32,
    pub minor: u32,
    dev: File,
}

impl LoopDevice {
    /// Binds a free loop device to `backing` (LOOP_CTL_GET_FREE + LOOP_SET_FD).
    pub fn attach(backing: &Path) -> io::Result<LoopDevice> {
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        let backing = OpenOptions::new().read(true).write(true).open(backing)?;
        for _ in 0..20 {
            // SAFETY: ioctl on an open fd with an integer argument.
            let index = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if index < 0 {
                return Err(io::Error::last_os_error());
            }
            let path = format!("/dev/loop{index}");
            let dev = OpenOptions::new().read(true).write(true).open(&path)?;
            // SAFETY: ioctl on an open fd; the argument is another open fd.
            let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
            if rc == 0 {
                let numbers = std::fs::read_to_string(format!("/sys/block/loop{index}/dev"))?;
                let (major, minor) = numbers.trim().split_once(':').expect("maj:min");
                return Ok(LoopDevice {
                    index: index as u32,
                    major: major.parse().expect("major"),
                    minor: minor.parse().expect("minor"),
                    dev,
                });
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EBUSY) {
                return Err(err);
            }
            // Someone else took it between GET_FREE and SET_FD: try the next one.
        }
        Err(io::Error::other("no free loop device"))
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/loop{}", self.index))
    }

    pub fn name(&self) -> String {
        format!("loop{}", self.index)
    }

    /// Selects the I/O scheduler (`none`, `mq-deadline`).
    pub fn set_scheduler(&self, sched: &str) {
        std::fs::write(
            format!("/sys/block/loop{}/queue/scheduler", self.index),
            sched,
        )
        .expect("set scheduler");
    }

    /// Makes the loop driver reach its backing file with direct I/O (`LOOP_SET_DIRECT_IO`), so a
    /// request completes only when the backing disk has done it.
    pub fn set_direct_io(&self) -> io::Result<()> {
        const LOOP_SET_DIRECT_IO: libc::c_ulong = 0x4C08;
        // SAFETY: ioctl on an open fd with an integer argument.
        let rc = unsafe { libc::ioctl(self.dev.as_raw_fd(), LOOP_SET_DIRECT_IO, 1) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Opens the device with O_DIRECT.
    pub fn open_direct(&self) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(self.path())
            .expect("open loop device O_DIRECT")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // SAFETY: ioctl on an open fd without argument.
        unsafe { libc::ioctl(self.dev.as_raw_fd(), LOOP_CLR_FD, 0) };
    }
}

/// A page-aligned buffer, as O_DIRECT needs.
pub struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    pub fn new(len: usize, fill: u8) -> AlignedBuf {
        let layout = Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size layout.
        let ptr = unsafe { alloc::alloc(layout) };
        assert!(!ptr.is_null());
        // SAFETY: ptr is valid for len bytes.
        unsafe { std::ptr::write_bytes(ptr, fill, len) };
        AlignedBuf { ptr, layout }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: allocated and initialised for layout.size() bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: allocated and initialised for layout.size() bytes, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) };
    }
}

/// `count` O_DIRECT writes of `buf`, at consecutive offsets from `first_block * len`.
/// Returns how many succeeded.
pub fn direct_writes(f: &File, buf: &AlignedBuf, first_block: u64, count: u64) -> u64 {
    let len = buf.as_slice().len() as u64;
    (0..count)
        .filter(|i| f.write_at(buf.as_slice(), (first_block + i) * len).is_ok())
        .count() as u64
}

/// `count` O_DIRECT reads into `buf`; panics on error.
pub fn direct_reads(f: &File, buf: &mut AlignedBuf, first_block: u64, count: u64) {
    let len = buf.as_slice().len() as u64;
    for i in 0..count {
        let n = f
            .read_at(buf.as_mut_slice(), (first_block + i) * len)
            .expect("direct read");
        assert_eq!(n as u64, len);
    }
}

/// A running `ioprobe` with its stdout lines and stderr lines collected.
pub struct ProbeRun {
    child: Child,
    /// The control channel, when started with [`ProbeRun::start_controlled`].
    control: Option<ChildStdin>,
    lines: Receiver<String>,
    errs: Receiver<String>,
    pub stderr: Vec<String>,
}

impl ProbeRun {
    pub fn start(args: &[&str]) -> ProbeRun {
        ProbeRun::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> ProbeRun {
        ProbeRun::spawn(args, env, false)
    }

    /// Starts with stdin piped: [`ProbeRun::send`] writes control lines.
    pub fn start_controlled(args: &[&str]) -> ProbeRun {
        ProbeRun::spawn(args, &[], true)
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], controlled: bool) -> ProbeRun {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ioprobe"))
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
            .expect("spawn ioprobe");
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

    /// Process id of the probe.
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

    /// Waits for the "[INFO] ioprobe attached" line.
    pub fn wait_attached(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.errs.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with("[INFO] ioprobe attached");
                    self.stderr.push(line);
                    if done {
                        return;
                    }
                }
                Err(_) => panic!("ioprobe did not attach; stderr: {:?}", self.stderr),
            }
        }
    }

    /// Returns the first stdout line satisfying `pred`, waiting up to `timeout`.
    pub fn wait_line(&mut self, timeout: Duration, mut pred: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if pred(&line) {
                        return line;
                    }
                    last.push(line);
                    if last.len() > 20 {
                        last.remove(0);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    while let Ok(l) = self.errs.try_recv() {
                        self.stderr.push(l);
                    }
                    panic!(
                        "no matching record within {timeout:?}; last lines: {last:#?}; stderr: {:?}",
                        self.stderr
                    )
                }
            }
        }
    }

    /// The records of the first period that starts after this call (so they reflect every
    /// I/O completed before it): lines up to and including that period's `io_bpf_stats`.
    pub fn next_period(&mut self, timeout: Duration) -> Vec<String> {
        while self.lines.try_recv().is_ok() {}
        // Finish the period that may be being printed right now, then take the next one.
        self.wait_line(timeout, |l| l.starts_with("|io_bpf_stats|"));
        let mut group = Vec::new();
        loop {
            let line = self.wait_line(timeout, |_| true);
            let last = line.starts_with("|io_bpf_stats|");
            group.push(line);
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

/// Splits `|table|f1|…|fn|` into (table, fields).
pub fn fields(line: &str) -> (&str, Vec<&str>) {
    let inner = line
        .strip_prefix('|')
        .and_then(|l| l.strip_suffix('|'))
        .expect("record line");
    let mut parts = inner.split('|');
    let table = parts.next().unwrap();
    (table, parts.collect())
}

/// Whether `line` is a record of `table` for disk `major:minor`.
pub fn is_disk_row(line: &str, table: &str, major: u32, minor: u32) -> bool {
    line.starts_with(&format!("|{table}|{major}|{minor}|"))
}

pub fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

/// The fields of the `table` row of disk `major:minor` in a period's records.
pub fn disk_row<'a>(rows: &'a [String], table: &str, major: u32, minor: u32) -> Vec<&'a str> {
    let line = rows
        .iter()
        .find(|l| is_disk_row(l, table, major, minor))
        .unwrap_or_else(|| panic!("no {table} row for {major}:{minor} in {rows:#?}"));
    fields(line).1
}

/// `lost_events` of a period's `io_bpf_stats` row.
pub fn lost_events(rows: &[String]) -> u64 {
    let line = rows
        .iter()
        .find(|l| l.starts_with("|io_bpf_stats|io|"))
        .expect("io_bpf_stats row");
    num(fields(line).1[2])
}

/// `got` must equal `expected`, except that up to `lost` completions may be missing: the
/// kernel skips a tracepoint call that nests in the same program on one CPU (interrupt), and
/// the probe reports those in `lost_events`.
pub fn assert_counted(what: &str, got: u64, expected: u64, lost: u64) {
    assert!(
        got <= expected && expected - got <= lost,
        "{what}: counted {got}, expected {expected}, lost_events {lost}"
    );
}
