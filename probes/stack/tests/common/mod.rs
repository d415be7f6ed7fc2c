//! Harness of stackprobe's integration tests: compiles small C programs, runs the real probe
//! with a control line on its stdin (as the daemon does) and reads what it wrote in flame_dir.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const STACKPROBE: &str = env!("CARGO_BIN_EXE_stackprobe");

/// Flags of the test programs: symbols, DWARF and frame pointers (the kernel walks user stacks
/// by frame pointers).
pub const CFLAGS: &[&str] = &["-g", "-O0", "-fno-omit-frame-pointer"];

/// A C program whose `main` calls `caller()` → `hot()` (a busy loop) until `argv[1]` seconds
/// (default 60) have passed. Each test names the functions uniquely, so a name found in a
/// profile can only come from its own program.
pub fn hot_src(hot: &str, caller: &str) -> String {
    format!(
        r#"
#include <stdlib.h>
#include <time.h>
volatile unsigned long sink;
__attribute__((noinline)) void {hot}(void)
{{
    for (unsigned long i = 0; i < 20000000UL; i++)
        sink += i * 7;
}}
__attribute__((noinline)) void {caller}(void) {{ {hot}(); }}
int main(int argc, char **argv)
{{
    time_t end = time(NULL) + (argc > 1 ? atoi(argv[1]) : 60);
    while (time(NULL) < end)
        {caller}();
    return 0;
}}
"#
    )
}

/// Compiles `src` (C) into `dir/name` with `flags`.
pub fn compile(dir: &Path, name: &str, src: &str, flags: &[&str]) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let bin = dir.join(name);
    let out = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&bin)
        .arg(&c)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// A running program the tests profile.
pub struct Workload {
    pub child: Child,
}

impl Workload {
    pub fn start(bin: &Path, args: &[&str]) -> Workload {
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn workload");
        Workload { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running stackprobe.
pub struct Probe {
    child: Child,
    control: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

/// The control line the daemon would send.
pub fn control_line(bits: u32, params: &str, pids: Option<&[u32]>) -> String {
    let snoop = match pids {
        None => r#"{"mode":"all","pids":[]}"#.to_string(),
        Some(p) => format!(
            r#"{{"mode":"include","pids":[{}]}}"#,
            p.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        ),
    };
    format!(r#"{{"v":1,"probe_bits":{bits},"params":{{{params}}},"snoop":{snoop}}}"#)
}

impl Probe {
    /// Starts stackprobe with `args`, then writes `control` (one line) on its stdin.
    pub fn start(args: &[&str], control: &str) -> Probe {
        let mut child = Command::new(STACKPROBE)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stackprobe");
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{control}").expect("write control line");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
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
            control: Some(stdin),
            stdout: lines,
            stderr,
        }
    }

    /// Sends another control line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.control.as_mut().expect("control");
        writeln!(stdin, "{line}").expect("write control line");
    }

    /// Waits until stderr contains `what` (panics with stderr after `timeout`).
    pub fn wait_log(&mut self, what: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.stderr().contains(what) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "stackprobe exited ({st}) before {what:?}: {}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("no {what:?} in stackprobe's stderr: {}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn records(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// SIGTERM, then waits (the probe writes the partial period on its way out).
    pub fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(
                    st.success(),
                    "stackprobe exited with {st}: {}",
                    self.stderr()
                );
                break;
            }
            assert!(
                Instant::now() < end,
                "stackprobe did not stop: {}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(100));
        self.stderr()
    }
}

impl Probe {
    /// [`Probe::stop`], also returning every record line the probe printed (the last ones are
    /// written on the way out).
    pub fn stop_with_records(self) -> (String, Vec<String>) {
        let records = Arc::clone(&self.stdout);
        let log = self.stop();
        let records = records.lock().unwrap().clone();
        (log, records)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Files of `kind` for `pid` under `flame_dir` with `ext`, oldest first.
pub fn outputs(flame_dir: &Path, kind: &str, pid: u32, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(days) = std::fs::read_dir(flame_dir.join(kind)) else {
        return out;
    };
    for day in days.flatten() {
        for f in std::fs::read_dir(day.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().to_string();
            if name.ends_with(&format!("-{pid}.{ext}")) {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// The folded stacks of the newest `kind` profile of `pid`: (frames root first, value).
pub fn folded(flame_dir: &Path, kind: &str, pid: u32) -> Vec<(Vec<String>, u64)> {
    let files = outputs(flame_dir, kind, pid, "folded");
    let file = files.last().unwrap_or_else(|| {
        panic!(
            "no {kind} folded file for {pid} in {}: {:?}",
            flame_dir.display(),
            list(flame_dir)
        )
    });
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (stack, v) = l.rsplit_once(' ')?;
            Some((
                stack.split(';').map(str::to_string).collect(),
                v.parse().ok()?,
            ))
        })
        .collect()
}

/// Every file under `dir` (for messages).
pub fn list(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// Polls `cond` every 50 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Field names of `stackprobe_stats`, key first, in record order, as `stackprobe --print-meta`
/// declares them (so the tests follow the table when columns are added).
pub fn stats_columns() -> Vec<String> {
    let out = Command::new(STACKPROBE)
        .arg("--print-meta")
        .output()
        .expect("stackprobe --print-meta");
    let meta = String::from_utf8_lossy(&out.stdout);
    let table = meta
        .split("table_name:")
        .find(|t| t.trim_start().starts_with("\"stackprobe_stats\""))
        .expect("stackprobe_stats in the meta");
    let (_, fields) = table.split_once("fields:").expect("its fields");
    fields
        .split(" name: \"")
        .skip(1)
        .filter_map(|f| f.split('"').next())
        .map(str::to_string)
        .collect()
}

/// `column` of the last `|stackprobe_stats|stack|…|` record in `records`.
pub fn last_stat(records: &[String], column: &str) -> Option<u64> {
    let columns = stats_columns();
    let idx = columns.iter().position(|c| c == column)?;
    let line = records
        .iter()
        .rev()
        .find(|l| l.starts_with("|stackprobe_stats|stack|"))?;
    // "", the table, then the fields (key first), then "".
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(
        fields.len(),
        columns.len() + 3,
        "{line} has other fields than {columns:?}"
    );
    fields[2 + idx].parse().ok()
}

/// Whether `tool` runs (`tool -version` or `--version`); when it does not, a test skips itself
/// outside CI and fails in CI (which installs it).
pub fn tool_available(tool: &str, version_arg: &str) -> bool {
    match Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(st) if st.success() => true,
        other => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{tool} is needed in CI: {other:?}"
            );
            eprintln!("{tool} not available ({other:?}); test skipped");
            false
        }
    }
}

/// Share of the values on stacks with a frame containing `name`, that value, and one such stack.
pub fn share_of(stacks: &[(Vec<String>, u64)], name: &str) -> (f64, u64, Option<Vec<String>>) {
    let total: u64 = stacks.iter().map(|(_, v)| v).sum();
    let mut hit = 0;
    let mut example = None;
    for (frames, v) in stacks {
        if frames.iter().any(|f| f.contains(name)) {
            hit += v;
            if example.is_none() {
                example = Some(frames.clone());
            }
        }
    }
    (hit as f64 / total.max(1) as f64, hit, example)
}

/// Sum of the folded values (on-CPU: samples; off-CPU: µs).
pub fn total(stacks: &[(Vec<String>, u64)]) -> u64 {
    stacks.iter().map(|(_, v)| v).sum()
}

/// Time `pid` has spent on a CPU (`/proc/<pid>/schedstat`: the main thread), seconds. Tests
/// compare sample counts with it rather than with wall time: on a busy machine a hot loop does
/// not get a whole CPU.
pub fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ns as f64 / 1e9
}

/// Blocks until stackprobe's counters (printed every `-t 1` second) show at least `hints`
/// unwinding hints taught, or `timeout` passes: a workload's measured part should start once
/// the probe can unwind through libc's frameless functions (learnt from the warm-up's stacks
/// within a few drains, longer on a busy machine).
pub fn wait_for_hints(probe: &Probe, hints: u64, timeout: Duration) {
    wait_until(timeout, || {
        last_stat(&probe.records(), "unwind_hints").is_some_and(|n| n >= hints)
    });
}

/// One scenario at a time within a test binary: the workloads are hot loops and busy
/// ping-pongs, and CI has 2 CPUs. Several at once starve each other's probe of the CPU its
/// drains and samples need (a pass that comes late is a scenario of its own, not the one a test
/// describes).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs stackprobe on-CPU over process `pid` for `secs` seconds (99 Hz, flame graphs into
/// `flame`, `extra`: more params as `,"name":value…`) and returns its log.
pub fn profile_oncpu(flame: &Path, pid: u32, extra: &str, secs: u64) -> String {
    let params = format!(
        r#""flame_dir":"{}","svg_period":180,"perf_sample_period":10{extra}"#,
        flame.display()
    );
    let mut probe = Probe::start(&["-P", "1"], &control_line(1, &params, Some(&[pid])));
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    thread::sleep(Duration::from_secs(secs));
    probe.stop()
}
