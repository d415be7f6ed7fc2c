//! stackprobe's overhead and footprint, with real programs compiled here:
//!
//! 1. **On-CPU sampling**: a CPU-bound program's own CPU time for a fixed amount of work, with
//!    no probe and with stackprobe sampling the whole host at 99 Hz (`perf_sample_period` 10),
//!    modes interleaved in every round; and the probe's own CPU as a share of the host.
//! 2. **Off-CPU**: a pipe ping-pong between two processes pinned to one CPU (a context switch
//!    per message): wall time with no probe, then with each off-CPU method (`-M sampled`, the
//!    default, and `-M switch`) with the pair tracked (snoopers = the pair) and untracked
//!    (snoopers = pid 1), and the switch method's floor (its program returning at once).
//! 3. **20 profiled processes** for `BENCH_SECS`: the probe's CPU (drains, symbolization and the
//!    final write included), RSS, the share of native frames symbolized, and every loss counter.
//!
//! Run (root): `cargo bench -p stackprobe --bench overhead`
//! Knobs: `BENCH_ROUNDS` (default 5), `BENCH_SPIN` (work units of the CPU-bound program,
//! default 3000), `BENCH_PINGS` (round trips, default 200000), `BENCH_SECS` (default 20),
//! `BENCH_ONLY` (`oncpu`, `offcpu` or `many`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STACKPROBE: &str = env!("CARGO_BIN_EXE_stackprobe");

const SPIN_SRC: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
volatile unsigned long sink;
__attribute__((noinline)) void gg_bench_unit(void)
{
    for (unsigned long i = 0; i < 1000000UL; i++)
        sink += i ^ (i >> 3);
}
__attribute__((noinline)) void gg_bench_work(long units) { for (long u = 0; u < units; u++) gg_bench_unit(); }
int main(int argc, char **argv)
{
    long units = atol(argv[1]);
    int forever = argc > 2;
    struct timespec a, b;
    do {
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
        gg_bench_work(units);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    } while (forever);
    printf("%ld\n", (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec));
    return 0;
}
"#;

const PINGPONG_SRC: &str = r#"
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
__attribute__((noinline)) void gg_pong(int in, int out, long n)
{
    char c;
    for (long i = 0; i < n; i++) {
        if (read(in, &c, 1) != 1 || write(out, &c, 1) != 1)
            _exit(1);
    }
}
__attribute__((noinline)) void gg_ping(int in, int out, long n)
{
    char c = 'x';
    for (long i = 0; i < n; i++) {
        if (write(out, &c, 1) != 1 || read(in, &c, 1) != 1)
            exit(1);
    }
}
int main(int argc, char **argv)
{
    long n = atol(argv[1]);
    int a[2], b[2];
    char go;
    struct timespec t0, t1;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    /* Both ends on CPU 0: every message is one context switch, not a cross-CPU wake-up whose
     * cost depends on where the scheduler put them. */
    if (sched_setaffinity(0, sizeof(one), &one) || pipe(a) || pipe(b))
        return 1;
    pid_t child = fork();
    if (child == 0) {
        gg_pong(a[0], b[1], n);
        _exit(0);
    }
    printf("%d %d\n", getpid(), child);
    fflush(stdout);
    if (read(0, &go, 1) != 1)
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    gg_ping(b[0], a[1], n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    waitpid(child, NULL, 0);
    printf("%ld\n", (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec));
    return 0;
}
"#;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn compile(dir: &Path, name: &str, src: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let bin = dir.join(name);
    let st = Command::new("cc")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&c)
        .status()
        .expect("cc");
    assert!(st.success());
    bin
}

/// A running stackprobe: stderr collected, stdout records kept.
struct Probe {
    child: Child,
    stderr: Arc<Mutex<String>>,
    records: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    fn start(bits: u32, flame: &Path, pids: Option<&[u32]>) -> Probe {
        Probe::start_with(bits, flame, pids, &[], &[])
    }

    fn start_with(
        bits: u32,
        flame: &Path,
        pids: Option<&[u32]>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Probe {
        let snoop = match pids {
            None => r#"{"mode":"all"}"#.to_string(),
            Some(p) => format!(
                r#"{{"mode":"include","pids":[{}]}}"#,
                p.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            ),
        };
        let line = format!(
            r#"{{"v":1,"probe_bits":{bits},"params":{{"flame_dir":"{}","svg_period":600,"perf_sample_period":10}},"snoop":{snoop}}}"#,
            flame.display()
        );
        let mut child = Command::new(STACKPROBE)
            .args(["-P", &bits.to_string(), "-t", "1"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .envs(env.iter().copied())
            .spawn()
            .expect("spawn stackprobe");
        writeln!(child.stdin.as_mut().unwrap(), "{line}").unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut err = child.stderr.take().unwrap();
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
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&records);
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        let p = Probe {
            child,
            stderr,
            records,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while !p.stderr.lock().unwrap().contains("stackprobe running") {
            assert!(
                Instant::now() < end,
                "stackprobe did not start: {}",
                p.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// utime + stime of the probe, seconds.
    fn cpu(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    fn stop(mut self) -> (f64, Vec<String>) {
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let end = Instant::now() + Duration::from_secs(60);
        let mut cpu = 0.0;
        loop {
            // The last reading before the process goes away includes the final write.
            let c = self.cpu();
            if c > 0.0 {
                cpu = c;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            assert!(Instant::now() < end, "stackprobe did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        (cpu, self.records.lock().unwrap().clone())
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ncpu() -> f64 {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64
}

/// The CPU ns the spin program reports for `units`.
fn spin_once(bin: &Path, units: u64) -> f64 {
    let out = Command::new(bin).arg(units.to_string()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn bench_oncpu(dir: &Path, flame: &Path) {
    let rounds = env_u64("BENCH_ROUNDS", 5);
    let units = env_u64("BENCH_SPIN", 3000);
    let bin = compile(dir, "gg_spin", SPIN_SRC);
    let (mut base, mut prof, mut probe_pct) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        base.push(spin_once(&bin, units));
        let p = Probe::start(1, flame, None);
        // Steady state: the first drains read kallsyms and the binaries' symbols once.
        std::thread::sleep(Duration::from_secs(3));
        let c0 = p.cpu();
        let t0 = Instant::now();
        prof.push(spin_once(&bin, units));
        let wall = t0.elapsed().as_secs_f64();
        let c1 = p.cpu();
        let _ = p.stop();
        probe_pct.push((c1 - c0) / wall / ncpu() * 100.0);
        eprintln!(
            "round {r}: no probe {:.3} s, whole host at 99 Hz {:.3} s",
            base[base.len() - 1] / 1e9,
            prof[prof.len() - 1] / 1e9
        );
    }
    // Steady state: the probe sampling the whole host while the program runs from before the
    // probe started (no first sight of a new process in the window).
    let mut spinner = Command::new(&bin)
        .args(["50", "forever"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let p = Probe::start(1, flame, None);
    std::thread::sleep(Duration::from_secs(5));
    let (c0, t0) = (p.cpu(), Instant::now());
    std::thread::sleep(Duration::from_secs(env_u64("BENCH_STEADY_SECS", 30)));
    let steady = (p.cpu() - c0) / t0.elapsed().as_secs_f64() / ncpu() * 100.0;
    let _ = p.stop();
    let _ = spinner.kill();
    let _ = spinner.wait();
    let ratios: Vec<f64> = base.iter().zip(&prof).map(|(b, p)| p / b).collect();
    let min_ratio = prof.iter().cloned().fold(f64::MAX, f64::min)
        / base.iter().cloned().fold(f64::MAX, f64::min);
    println!(
        "on-CPU, CPU-bound program, whole host sampled at 99 Hz: ratio of minima {:.4}x, median of per-round ratios {:.4}x (rounds {rounds}); probe CPU {:.3} % of the host ({} CPUs) in steady state, median {:.3} % over the rounds' windows (each includes the first sight of the new program: its symbols read)",
        min_ratio,
        median(&mut ratios.clone()),
        steady,
        ncpu(),
        median(&mut probe_pct)
    );
}

/// A probe run of the off-CPU benchmark: probe flags, tracked (the pair) or not (pid 1 only),
/// environment.
type ProbeMode = (
    &'static [&'static str],
    bool,
    &'static [(&'static str, &'static str)],
);

/// The off-CPU benchmark's modes: name and probe run (None: no probe).
const OFFCPU_MODES: &[(&str, Option<ProbeMode>)] = &[
    ("no probe", None),
    ("sampled, tracked", Some((&[], true, &[]))),
    ("sampled, untracked", Some((&[], false, &[]))),
    ("switch, tracked", Some((&["-M", "switch"], true, &[]))),
    ("switch, untracked", Some((&["-M", "switch"], false, &[]))),
    (
        "switch, no-op program",
        Some((&["-M", "switch"], true, &[("STACKPROBE_NOOP_SWITCH", "1")])),
    ),
];

fn pingpong_once(bin: &Path, pings: u64, mode: usize, flame: &Path) -> f64 {
    let mut child = Command::new(bin)
        .arg(pings.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let pids: Vec<u32> = line
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let probe = OFFCPU_MODES[mode].1.map(|(args, tracked, env)| {
        let sel: &[u32] = if tracked { &pids } else { &[1] };
        Probe::start_with(2, flame, Some(sel), args, env)
    });
    // The same settling time in every mode (the probe's first drain is done by then).
    std::thread::sleep(Duration::from_millis(400));
    child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let _ = child.wait();
    if let Some(p) = probe {
        let _ = p.stop();
    }
    line.trim().parse().unwrap()
}

fn bench_offcpu(dir: &Path, flame: &Path) {
    let rounds = env_u64("BENCH_ROUNDS", 9);
    let pings = env_u64("BENCH_PINGS", 200_000);
    let bin = compile(dir, "gg_pingpong", PINGPONG_SRC);
    let mut t: Vec<Vec<f64>> = vec![Vec::new(); OFFCPU_MODES.len()];
    for r in 0..rounds {
        for (mode, v) in t.iter_mut().enumerate() {
            v.push(pingpong_once(&bin, pings, mode, flame));
        }
        let times: Vec<String> = OFFCPU_MODES
            .iter()
            .zip(&t)
            .map(|((name, _), v)| format!("{name} {:.3} s", v[r as usize] / 1e9))
            .collect();
        eprintln!("round {r}: {}", times.join(", "));
    }
    let min = |v: &Vec<f64>| v.iter().cloned().fold(f64::MAX, f64::min);
    let ratios: Vec<String> = OFFCPU_MODES
        .iter()
        .zip(&t)
        .skip(1)
        .map(|((name, _), v)| {
            let mut per_round: Vec<f64> = v.iter().zip(&t[0]).map(|(a, b)| a / b).collect();
            format!(
                "{name} {:.3}x (median {:.3}x)",
                min(v) / min(&t[0]),
                median(&mut per_round)
            )
        })
        .collect();
    println!(
        "off-CPU, pipe ping-pong on one CPU ({pings} round trips, {:.2} us each without probe; ratios of minima over {rounds} interleaved rounds, medians of per-round ratios): {}",
        min(&t[0]) / pings as f64 / 1e3,
        ratios.join(", ")
    );
}

fn bench_many(dir: &Path, flame: &Path) {
    let secs = env_u64("BENCH_SECS", 20);
    let bin = compile(dir, "gg_many", SPIN_SRC);
    let mut kids: Vec<Child> = (0..20)
        .map(|_| {
            Command::new(&bin)
                .args(["50", "forever"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let pids: Vec<u32> = kids.iter().map(Child::id).collect();
    let p = Probe::start(3, flame, Some(&pids));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let rss = p.status_kib("VmRSS:");
    let hwm = p.status_kib("VmHWM:");
    let wall = t0.elapsed().as_secs_f64();
    let (cpu, records) = p.stop();
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    // Symbolized share of native user frames, weighted by samples.
    let (mut frames, mut named) = (0u64, 0u64);
    for pid in &pids {
        for f in files(flame, "oncpu", *pid) {
            for l in std::fs::read_to_string(f).unwrap_or_default().lines() {
                let Some((stack, v)) = l.rsplit_once(' ') else {
                    continue;
                };
                let v: u64 = v.parse().unwrap_or(0);
                for fr in stack.split(';').skip(1).filter(|f| !f.ends_with("_[k]")) {
                    frames += v;
                    if !fr.contains("+0x") && !fr.starts_with('[') {
                        named += v;
                    }
                }
            }
        }
    }
    let last = |t: &str| {
        records
            .iter()
            .rev()
            .find(|r| r.starts_with(&format!("|{t}|")))
            .cloned()
            .unwrap_or_default()
    };
    println!(
        "20 processes on-CPU + off-CPU for {wall:.0} s: probe CPU {cpu:.2} s ({:.3} % of the host; {:.2} s per 180 s svg_period), RSS {rss} KiB (peak {hwm} KiB); native user frames symbolized {:.1} % of {frames}",
        cpu / wall / ncpu() * 100.0,
        cpu / wall * 180.0,
        named as f64 * 100.0 / frames.max(1) as f64
    );
    println!("  stats: {}", last("stackprobe_stats"));
    println!("  bpf:   {}", last("stackprobe_bpf_stats"));
}

fn files(flame: &Path, kind: &str, pid: u32) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for day in std::fs::read_dir(flame.join(kind))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(day.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.file_name()
                .to_string_lossy()
                .ends_with(&format!("-{pid}.folded"))
            {
                out.push(f.path());
            }
        }
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stackprobe-bench-{}", std::process::id()));
    let flame = dir.join("flame");
    std::fs::create_dir_all(&flame).unwrap();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "oncpu" {
        bench_oncpu(&dir, &flame);
    }
    if only.is_empty() || only == "offcpu" {
        bench_offcpu(&dir, &flame);
    }
    if only.is_empty() || only == "many" {
        bench_many(&dir, &flame);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
