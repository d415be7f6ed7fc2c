//! Overhead of taskprobe on a syscall-heavy loop: N × (openat("/dev/null") + close) timed by the
//! loop's own CPU time (getrusage), with and without the probe, modes interleaved in every
//! round so machine noise hits all modes alike. Also reports the probe's own CPU and RSS at
//! idle and under load, and checks that the tracked loop's syscalls were all counted.
//!
//! With `BENCH_LOOP=write` the loop is N buffered 4 KiB `pwrite`s over the first MiB of a file
//! on the target directory's file system (ext4 on the CI machine) instead, and with
//! `BENCH_LOOP=resolve` N `getaddrinfo("localhost")` calls (the DNS uprobes' worst case: a
//! lookup answered from `/etc/hosts`).
//!
//! Run (root): `cargo bench -p taskprobe --bench overhead`
//! Knobs: `BENCH_ROUNDS` (default 5), `BENCH_N` (open+close pairs, default 2000000),
//! `BENCH_MODES` (comma-separated indexes into the mode list, default all; 0 is the baseline),
//! `BENCH_IDLE` (0 skips the idle measurement), `BENCH_REPS` (timed loops per run, default 1; each round's figure is its fastest loop, which
//! filters out time slices lost to other load on a shared machine).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Probe, Record, Workload};

#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// No probe running.
    Baseline,
    /// Probe tracks pid 1 only: the loop is an untracked process.
    Untracked,
    /// Probe tracks the loop's pid.
    Tracked,
    /// No filter: every process (the loop included) is tracked.
    All,
}

struct Mode {
    name: &'static str,
    target: Target,
    /// Extra flags: `-P` bits, `-S` timing; empty for the default plan (no syscall hooks).
    flags: &'static [&'static str],
    /// Load the syscall programs as no-ops (`TASKPROBE_NOOP`): the cost of the hooks alone.
    noop: bool,
}

/// The default `-P` bits without `proc_fs` (32, 64, 128): `!(1 | 256 | 4096 | 16384) & !224`.
const DEFAULT_WITHOUT_FS: &str = "4294946334";

/// The default `-P` bits without `proc_dns` (512): `!(1 | 256 | 4096 | 16384) & !512`.
const DEFAULT_WITHOUT_DNS: &str = "4294946046";

/// The default `-P` bits without any of issue 19's default-on tables (`proc_fs` 224, `proc_dns`
/// 512, `proc_pygc` 8192): what the default was before them.
const DEFAULT_BEFORE_19: &str = "4294937630";

const MODES: &[Mode] = &[
    Mode {
        name: "no probe",
        target: Target::Baseline,
        flags: &[],
        noop: false,
    },
    Mode {
        name: "untracked process, default",
        target: Target::Untracked,
        flags: &[],
        noop: false,
    },
    Mode {
        name: "tracked process, default",
        target: Target::Tracked,
        flags: &[],
        noop: false,
    },
    Mode {
        name: "tracked process, default without proc_fs",
        target: Target::Tracked,
        flags: &["-P", DEFAULT_WITHOUT_FS],
        noop: false,
    },
    Mode {
        name: "tracked process, default without proc_dns",
        target: Target::Tracked,
        flags: &["-P", DEFAULT_WITHOUT_DNS],
        noop: false,
    },
    Mode {
        name: "tracked process, default without fs/dns/pygc",
        target: Target::Tracked,
        flags: &["-P", DEFAULT_BEFORE_19],
        noop: false,
    },
    Mode {
        name: "no filter (all processes), default",
        target: Target::All,
        flags: &[],
        noop: false,
    },
    Mode {
        name: "untracked process, -P 1 (counts: sys_exit)",
        target: Target::Untracked,
        flags: &["-P", "1"],
        noop: false,
    },
    Mode {
        name: "tracked process, -P 1 (counts: sys_exit)",
        target: Target::Tracked,
        flags: &["-P", "1"],
        noop: false,
    },
    Mode {
        name: "tracked process, -P 0 -S exact (everything)",
        target: Target::Tracked,
        flags: &["-P", "0", "-S", "exact"],
        noop: false,
    },
    Mode {
        name: "floor: no-op sys_exit (-P 1)",
        target: Target::Untracked,
        flags: &["-P", "1"],
        noop: true,
    },
    Mode {
        name: "floor: no-op sys_enter + sys_exit (-P 0 -S exact)",
        target: Target::Untracked,
        flags: &["-P", "0", "-S", "exact"],
        noop: true,
    },
];

/// Nanoseconds a process has run on a CPU (first field of /proc/<pid>/schedstat).
fn oncpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident set size in KiB (VmRSS of /proc/<pid>/status).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn probe_args(mode: &Mode, loop_pid: u32) -> Option<Vec<String>> {
    let mut args = vec!["-t".to_string(), "1".to_string()];
    args.extend(mode.flags.iter().map(|f| f.to_string()));
    match mode.target {
        Target::Baseline => return None,
        Target::Untracked => args.extend(["-f".to_string(), "1".to_string()]),
        Target::Tracked => args.extend(["-f".to_string(), loop_pid.to_string()]),
        Target::All => {}
    }
    Some(args)
}

struct RunResult {
    /// Fastest of the run's loops (CPU time).
    loop_cpu_ns: u64,
    /// Wall time of that loop.
    loop_wall_ns: u64,
    probe_cpu_ns: Option<u64>,
    probe_rss_kib: Option<u64>,
    /// (syscalls counted, failed) for the loop's tgid, from its final record.
    counted: Option<(u64, u64)>,
    /// events, lost, map_full from the last proc_bpf_stats.
    loss: Option<(u64, u64, u64)>,
}

fn parse_kv(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// `BENCH_LOOP=write`: the 4 KiB buffered-write loop instead of openat+close.
fn write_loop() -> bool {
    std::env::var("BENCH_LOOP").is_ok_and(|v| v == "write")
}

/// `BENCH_LOOP=resolve`: the getaddrinfo loop.
fn resolve_loop() -> bool {
    std::env::var("BENCH_LOOP").is_ok_and(|v| v == "resolve")
}

fn run_once(mode: &Mode, n: u64, reps: u64) -> RunResult {
    let (n_s, reps_s) = (n.to_string(), reps.to_string());
    let mut args = vec!["bench-open", &n_s, "--reps", &reps_s, "--wait"];
    if write_loop() {
        args.extend(["--write-to", env!("CARGO_TARGET_TMPDIR")]);
    }
    if resolve_loop() {
        args.push("--resolve");
    }
    let mut w = Workload::start(&args);
    let mut probe = probe_args(mode, w.pid).map(|args| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: &[(&str, &str)] = if mode.noop {
            &[("TASKPROBE_NOOP", "1")]
        } else {
            &[]
        };
        let mut p = Probe::start(&refs, env);
        p.wait_attached(Duration::from_secs(20));
        p
    });
    let cpu0 = probe.as_ref().map(|p| oncpu_ns(p.pid()));
    w.go();
    let lines: Vec<String> = (0..reps).map(|_| w.read_line()).collect();
    let best = lines
        .iter()
        .min_by_key(|l| parse_kv(l, "cpu_ns"))
        .expect("at least one rep")
        .clone();
    let probe_cpu = probe
        .as_ref()
        .zip(cpu0)
        .map(|(p, c0)| oncpu_ns(p.pid()) - c0);
    let probe_rss = probe.as_ref().map(|p| rss_kib(p.pid()));
    let loop_pid = w.pid;
    let status = w.finish();
    assert!(status.success(), "workload failed: {status}");
    let mut counted = None;
    let mut loss = None;
    if let Some(mut p) = probe.take() {
        if mode.target != Target::Untracked {
            // The final report of the exited loop carries its complete counts.
            let pid = loop_pid.to_string();
            let fin = p.wait_for(Duration::from_secs(10), |r| {
                r.table == "proc_lifecycle" && r.fields[0] == pid && r.fields[6] == "1"
            });
            assert!(fin.is_some(), "no final record for the loop");
            counted = p
                .seen
                .iter()
                .rev()
                .find(|r| r.table == "proc_syscall" && r.fields[0] == pid)
                .map(|r| (r.num(3), r.num(2)));
        }
        p.collect_for(Duration::from_millis(1100));
        let (_, _, seen) = p.stop();
        loss = seen
            .iter()
            .rev()
            .find(|r: &&Record| r.table == "proc_bpf_stats")
            .map(|r| (r.num(1), r.num(2), r.num(3)));
    }
    RunResult {
        loop_cpu_ns: parse_kv(&best, "cpu_ns"),
        loop_wall_ns: parse_kv(&best, "wall_ns"),
        probe_cpu_ns: probe_cpu,
        probe_rss_kib: probe_rss,
        counted,
        loss,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn idle(args: &[&str], secs: u64) -> (f64, u64) {
    let mut p = Probe::start(args, &[]);
    p.wait_attached(Duration::from_secs(20));
    let c0 = oncpu_ns(p.pid());
    let t0 = Instant::now();
    p.collect_for(Duration::from_secs(secs));
    let cpu = oncpu_ns(p.pid()) - c0;
    let rss = rss_kib(p.pid());
    let wall = t0.elapsed().as_secs_f64();
    let _ = p.stop();
    (cpu as f64 / 1e9 / wall * 100.0, rss)
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("overhead bench needs root (eBPF); skipped");
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let n: u64 = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let reps: u64 = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let selected: Vec<usize> = match std::env::var("BENCH_MODES") {
        Ok(list) => {
            let mut v: Vec<usize> = list
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .filter(|&i| i < MODES.len())
                .collect();
            if !v.contains(&0) {
                v.insert(0, 0); // the baseline is always measured
            }
            v
        }
        Err(_) => (0..MODES.len()).collect(),
    };
    let what = if write_loop() {
        "buffered 4 KiB pwrite"
    } else if resolve_loop() {
        "getaddrinfo(localhost)"
    } else {
        "openat+close"
    };
    println!(
        "taskprobe overhead: {rounds} rounds × {} modes, {reps} loop(s) of N = {n} {what} per run",
        selected.len()
    );
    let mut results: Vec<Vec<RunResult>> = (0..MODES.len()).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for &i in &selected {
            let mode = &MODES[i];
            let r = run_once(mode, n, reps);
            println!(
                "round {round} {:<42} loop cpu {:>7.3} s wall {:>7.3} s{}",
                mode.name,
                r.loop_cpu_ns as f64 / 1e9,
                r.loop_wall_ns as f64 / 1e9,
                r.counted
                    .map(|(c, f)| format!("  counted {c} (failed {f})"))
                    .unwrap_or_default()
            );
            results[i].push(r);
        }
    }
    let base: Vec<f64> = results[0].iter().map(|r| r.loop_cpu_ns as f64).collect();
    let base_min = base.iter().copied().fold(f64::INFINITY, f64::min);
    let per_loop = if write_loop() { n } else { 2 * n };
    let expected = 1 + reps * (per_loop + 3);
    println!();
    println!(
        "| mode | loop CPU s, median (min) | ratio: median of per-round ratios | ratio of minima | \
         probe CPU during the loop, s | probe RSS KiB | loop syscalls counted (expected {expected}) | \
         events / lost / map_full (last run) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &i in &selected {
        let mode = &MODES[i];
        let rs = &results[i];
        let mut cpu: Vec<f64> = rs.iter().map(|r| r.loop_cpu_ns as f64 / 1e9).collect();
        let min_cpu = cpu.iter().copied().fold(f64::INFINITY, f64::min);
        let mut ratio: Vec<f64> = rs
            .iter()
            .zip(&base)
            .map(|(r, b)| r.loop_cpu_ns as f64 / b)
            .collect();
        let mut pcpu: Vec<f64> = rs
            .iter()
            .filter_map(|r| r.probe_cpu_ns)
            .map(|c| c as f64 / 1e9)
            .collect();
        let rss = rs.iter().filter_map(|r| r.probe_rss_kib).max();
        let counted: Vec<(u64, u64)> = rs.iter().filter_map(|r| r.counted).collect();
        let counted_text = if counted.is_empty() {
            "-".to_string()
        } else if counted.iter().all(|&(c, f)| c == expected && f == 0) {
            format!("{expected} in all {} runs (exact)", counted.len())
        } else {
            format!("MISMATCH {counted:?}")
        };
        let loss = rs.iter().rev().find_map(|r| r.loss);
        println!(
            "| {} | {:.3} ({:.3}) | {:.3} | {:.3} | {} | {} | {} | {} |",
            mode.name,
            median(&mut cpu),
            min_cpu,
            median(&mut ratio),
            min_cpu * 1e9 / base_min,
            if pcpu.is_empty() {
                "-".into()
            } else {
                format!("{:.3}", median(&mut pcpu))
            },
            rss.map(|r| r.to_string()).unwrap_or("-".into()),
            counted_text,
            loss.map(|(e, l, m)| format!("{e} / {l} / {m}"))
                .unwrap_or("-".into())
        );
    }
    println!();
    if std::env::var("BENCH_IDLE").is_ok_and(|v| v == "0") {
        return;
    }
    for (name, args) in [
        ("idle, default, -f 1", vec!["-t", "1", "-f", "1"]),
        ("idle, default, no filter (all processes)", vec!["-t", "1"]),
        (
            "idle, -P 0 -S exact, no filter",
            vec!["-t", "1", "-P", "0", "-S", "exact"],
        ),
    ] {
        let (pct, rss) = idle(&args, 10);
        println!("{name}: probe CPU {pct:.3} % of one core over 10 s, RSS {rss} KiB");
    }
}
