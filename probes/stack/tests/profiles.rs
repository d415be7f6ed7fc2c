//! stackprobe against real programs compiled here: on-CPU samples land in the hot function
//! with its callers, off-CPU time matches the known blocked time, the outputs are readable by
//! `go tool pprof`, and the probe follows snooper and off-CPU method changes without a restart
//! (one test at a time: see `common::serial`).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const BLOCK_SRC: &str = r#"
#include <poll.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
__attribute__((noinline)) void gg_blocking_function_4712(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}
__attribute__((noinline)) void gg_warmup_sleeper(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}
int main(int argc, char **argv)
{
    char go;
    int n = argc > 1 ? atoi(argv[1]) : 10;
    if (read(0, &go, 1) != 1)
        return 1;
    /* Until the second byte: the probe learns how to unwind through libc's frameless
     * nanosleep here. */
    struct pollfd in = { 0, POLLIN, 0 };
    do
        gg_warmup_sleeper(100);
    while (poll(&in, 1, 0) == 0);
    if (read(0, &go, 1) != 1)
        return 1;
    for (int i = 0; i < n; i++)
        gg_blocking_function_4712(100);
    pause();
    return 0;
}
"#;

fn params(dir: &Path) -> String {
    format!(
        r#""flame_dir":"{}","svg_period":180,"perf_sample_period":10"#,
        dir.display()
    )
}

/// Share of `value` on stacks containing `name`, and one such stack.
fn share(stacks: &[(Vec<String>, u64)], name: &str) -> (f64, u64, Option<Vec<String>>) {
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

#[test]
fn oncpu_samples_land_in_the_hot_function_with_its_callers() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let bin = compile(
        tmp.path(),
        "gg_hot",
        &hot_src("gg_hot_function_4711", "gg_outer_caller"),
        CFLAGS,
    );
    let work = Workload::start(&bin, &["60"]);
    let pid = work.pid();
    let mut probe = Probe::start(
        &["-P", "1"],
        &control_line(1, &params(&flame), Some(&[pid])),
    );
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    let ticks = probe_sdk::steal::cpu_ticks();
    let cpu0 = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(5));
    let log = probe.stop();
    let ran = cpu_secs(pid) - cpu0;
    let steal = probe_sdk::steal::inflation(ticks);
    drop(work);

    let stacks = folded(&flame, "oncpu", pid);
    let (frac, hot, example) = share(&stacks, "gg_hot_function_4711");
    let total: u64 = stacks.iter().map(|(_, v)| v).sum();
    assert!(
        frac >= 0.8,
        "{frac:.2} of {total} samples in the hot function: {stacks:?}\n{log}"
    );
    // 99 Hz of the time the process was on a CPU (about 5 s on an idle machine); the probe
    // samples from its start to its stop, which this window is inside of.
    // Stolen time (see probe_sdk::steal) can only add samples.
    let expected = 99.0 * ran;
    assert!(
        (total as f64) > expected * 0.7 && (total as f64) < expected * 1.3 * steal,
        "{total} samples, ~{expected:.0} expected (steal x{steal:.2})"
    );
    let example = example.unwrap();
    let pos = |n: &str| example.iter().position(|f| f == n);
    let (m, o, h) = (
        pos("main"),
        pos("gg_outer_caller"),
        pos("gg_hot_function_4711"),
    );
    assert!(
        m.is_some() && m < o && o < h,
        "caller chain main -> gg_outer_caller -> gg_hot_function_4711 in {example:?}"
    );
    assert!(
        example[0].contains(&format!("[{pid}]")),
        "process frame first: {example:?}"
    );
    assert!(hot > 0);

    let svg = outputs(&flame, "oncpu", pid, "svg");
    let svg = std::fs::read_to_string(svg.last().expect("an SVG")).unwrap();
    assert!(svg.contains("gg_hot_function_4711"));

    let pprof = outputs(&flame, "oncpu", pid, "pb.gz");
    let pprof = pprof.last().expect("a pprof file");
    match Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(pprof)
        .env("HOME", tmp.path())
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "go tool pprof: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            // The first row after the header names the function with the most flat time.
            let first = text
                .lines()
                .skip_while(|l| !l.trim_start().starts_with("flat"))
                .nth(1)
                .unwrap_or_default();
            assert!(
                first.contains("gg_hot_function_4711"),
                "pprof -top does not list the hot function first:\n{text}"
            );
        }
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("go not installed ({e}); pprof check skipped (CI installs golang-go)")
        }
        Err(e) => panic!("go tool pprof: {e}"),
    }
}

#[test]
fn offcpu_time_matches_the_blocked_time() {
    let _serial = serial();
    offcpu_blocked(&["-P", "2"]);
}

#[test]
fn offcpu_time_matches_the_blocked_time_at_every_switch() {
    let _serial = serial();
    offcpu_blocked(&["-P", "2", "-M", "switch"]);
}

/// Starts the blocking program's warm-up, and its measured blocks once the probe was taught
/// `hints` unwinding hints in all (after 2 s at least, at most 20 s).
fn warm_up(child: &mut std::process::Child, probe: &Probe, hints: u64) {
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"x").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    wait_for_hints(probe, hints, Duration::from_secs(18));
    stdin.write_all(b"y").unwrap();
}

/// The blocking program's 20 x 100 ms in its uniquely named function, with the kernel frames
/// of the wait, whichever the off-CPU method (`args`).
fn offcpu_blocked(args: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let bin = compile(tmp.path(), "gg_block", BLOCK_SRC, CFLAGS);
    let mut child = Command::new(&bin)
        .arg("20")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let args: Vec<&str> = args.iter().copied().chain(["-t", "1"]).collect();
    let mut probe = Probe::start(&args, &control_line(2, &params(&flame), Some(&[pid])));
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    warm_up(&mut child, &probe, 2);
    // 20 x 100 ms blocked, then pause().
    std::thread::sleep(Duration::from_millis(2000 + 1500));
    let log = probe.stop();
    let _ = child.kill();
    let _ = child.wait();

    let stacks = folded(&flame, "offcpu", pid);
    let (_, us, example) = share(&stacks, "gg_blocking_function_4712");
    let expected = 2_000_000.0;
    assert!(
        (us as f64 - expected).abs() <= expected * 0.1,
        "{args:?}: {us} us off-CPU in gg_blocking_function_4712, {expected} expected: {stacks:?}\n{log}"
    );
    let example = example.unwrap();
    assert!(
        example.iter().any(|f| f.ends_with("_[k]")),
        "{args:?}: kernel frames of the wait: {example:?}"
    );
    assert!(
        example.iter().any(|f| f == "main"),
        "{args:?}: the caller chain down to main: {example:?}"
    );
}

/// `offcpu_method` and `min_block_us` (the `-M` and `-B` flags as params) change the method and
/// its minimum stretch at run time, without a restart: 100 ms blocks are not recorded under a
/// 150 ms minimum (counted in `offcpu_short`), recorded in full under 50 ms, and the sampled
/// method takes over again when asked.
#[test]
fn offcpu_method_and_min_block_follow_the_control_channel() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let bin = compile(tmp.path(), "gg_block", BLOCK_SRC, CFLAGS);
    let p = params(&flame);
    let start = |n: &str| {
        Command::new(&bin)
            .arg(n)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut short = start("10");
    let mut long = start("10");
    let (ps, pl) = (short.id(), long.id());
    let with = |extra: &str, pids: &[u32]| control_line(2, &format!("{p},{extra}"), Some(pids));
    let mut probe = Probe::start(
        &["-P", "2", "-t", "1"],
        &with(r#""offcpu_method":"switch","min_block_us":150000"#, &[ps]),
    );
    probe.wait_log("off-CPU at every context switch", Duration::from_secs(20));
    // Nothing of it is recorded, so nothing teaches hints: 2 s of warm-up, 10 x 100 ms.
    warm_up(&mut short, &probe, 0);
    std::thread::sleep(Duration::from_millis(1500));

    probe.send(&with(
        r#""offcpu_method":"switch","min_block_us":50000"#,
        &[pl],
    ));
    wait_until(Duration::from_secs(10), || {
        probe.stderr().matches("control: ").count() >= 1
    });
    warm_up(&mut long, &probe, 2);
    std::thread::sleep(Duration::from_millis(1500));

    probe.send(&with(r#""offcpu_method":"sampled""#, &[pl]));
    probe.wait_log("off-CPU sampled", Duration::from_secs(10));
    let (log, records) = probe.stop_with_records();
    for c in [&mut short, &mut long] {
        let _ = c.kill();
        let _ = c.wait();
    }

    // Nothing of it reached 150 ms, so it has no off-CPU profile at all, or one without them.
    let short_us = if outputs(&flame, "offcpu", ps, "folded").is_empty() {
        0
    } else {
        share(&folded(&flame, "offcpu", ps), "gg_blocking_function_4712").1
    };
    assert_eq!(short_us, 0, "100 ms blocks under a 150 ms minimum\n{log}");
    let skipped = last_stat(&records, "offcpu_short").unwrap_or(0);
    assert!(skipped >= 30, "{skipped} short stretches counted\n{log}");
    let (_, long_us, _) = share(&folded(&flame, "offcpu", pl), "gg_blocking_function_4712");
    let expected = 1_000_000.0;
    assert!(
        (long_us as f64 - expected).abs() <= expected * 0.1,
        "{long_us} us in gg_blocking_function_4712 under a 50 ms minimum, {expected} expected\n{log}"
    );
}

const PINGPONG_SRC: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
__attribute__((noinline)) void gg_pong_4721(int in, int out, long n)
{
    char c;
    for (long i = 0; i < n; i++)
        if (read(in, &c, 1) != 1 || write(out, &c, 1) != 1)
            _exit(1);
}
__attribute__((noinline)) void gg_ping_4722(int in, int out, long n)
{
    char c = 'x';
    for (long i = 0; i < n; i++)
        if (write(out, &c, 1) != 1 || read(in, &c, 1) != 1)
            exit(1);
}
static long ns(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}
int main(int argc, char **argv)
{
    long n = atol(argv[1]);
    int a[2], b[2];
    char go;
    if (pipe(a) || pipe(b))
        return 1;
    pid_t child = fork();
    if (child == 0) {
        gg_pong_4721(a[0], b[1], n);
        pause();
        _exit(0);
    }
    printf("%d\n", child);
    fflush(stdout);
    if (read(0, &go, 1) != 1)
        return 1;
    long w0 = ns(CLOCK_MONOTONIC), c0 = ns(CLOCK_THREAD_CPUTIME_ID);
    gg_ping_4722(b[0], a[1], n);
    long w1 = ns(CLOCK_MONOTONIC), c1 = ns(CLOCK_THREAD_CPUTIME_ID);
    printf("%ld %ld\n", w1 - w0, c1 - c0);
    fflush(stdout);
    pause();
    return 0;
}
"#;

/// The sampled method's time is exact: a thread's off-CPU time is its wall time minus its run
/// time, even when it goes off the CPU a hundred thousand times a second (far more often than
/// it is sampled); only which stack gets it is sampled.
#[test]
fn sampled_offcpu_time_is_wall_time_minus_run_time() {
    let _serial = serial();
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let bin = compile(tmp.path(), "gg_pingpong", PINGPONG_SRC, CFLAGS);
    let mut child = Command::new(&bin)
        .arg("400000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let pong: u32 = line.trim().parse().unwrap();
    let mut probe = Probe::start(
        &["-P", "2"],
        &control_line(2, &params(&flame), Some(&[pid, pong])),
    );
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    child.stdin.as_mut().unwrap().write_all(b"x").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (wall_us, cpu_us) = (v[0] / 1e3, v[1] / 1e3);
    std::thread::sleep(Duration::from_millis(500));
    let log = probe.stop();
    let _ = Command::new("kill").arg(pong.to_string()).status();
    let _ = child.kill();
    let _ = child.wait();

    let stacks = folded(&flame, "offcpu", pid);
    let (_, us, example) = share(&stacks, "gg_ping_4722");
    let expected = wall_us - cpu_us;
    assert!(
        wall_us > 500_000.0 && (us as f64 - expected).abs() <= expected * 0.1,
        "{us} us off-CPU in gg_ping_4722; {wall_us:.0} us of ping-pong, {cpu_us:.0} us of it on the CPU: {stacks:?}\n{log}"
    );
    let example = example.unwrap();
    assert!(example.iter().any(|f| f == "main"), "{example:?}");
    let (_, pong_us, _) = share(&folded(&flame, "offcpu", pong), "gg_pong_4721");
    assert!(pong_us > 0, "the other end is sampled too\n{log}");
}

const SLEEPERS_SRC: &str = r#"
#include <pthread.h>
#include <time.h>
#include <unistd.h>
__attribute__((noinline)) void gg_sleeper_thread_4731(void)
{
    struct timespec ts = { 0, 100 * 1000000L };
    for (;;)
        nanosleep(&ts, NULL);
}
static void *run(void *arg)
{
    (void)arg;
    gg_sleeper_thread_4731();
    return NULL;
}
__attribute__((noinline)) void gg_sleeper_main_4732(void)
{
    for (;;)
        pause();
}
int main(void)
{
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    gg_sleeper_main_4732();
    return 0;
}
"#;

/// Snoopers choose the threads the sampled method visits, without a restart: every thread of
/// the selected processes, and only while they are selected — a process selected again is
/// not given the time it was not profiled.
#[test]
fn sampled_offcpu_follows_snooper_changes() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let mut flags = CFLAGS.to_vec();
    flags.push("-pthread");
    let bin = compile(tmp.path(), "gg_sleepers", SLEEPERS_SRC, &flags);
    let a = Workload::start(&bin, &[]);
    let b = Workload::start(&bin, &[]);
    let (pa, pb) = (a.pid(), b.pid());
    let p = params(&flame);
    let mut probe = Probe::start(&["-P", "2"], &control_line(2, &p, Some(&[pa])));
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    probe.send(&control_line(2, &p, Some(&[pb])));
    probe.wait_log("control: on-CPU", Duration::from_secs(10));
    let switched = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    probe.send(&control_line(2, &p, Some(&[pa])));
    wait_until(Duration::from_secs(10), || {
        probe.stderr().matches("control: on-CPU").count() >= 2
    });
    let back = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let log = probe.stop();
    let elapsed = t0.elapsed().as_secs_f64();
    drop((a, b));

    // A while selected (its first sample starts the count), B since the change: both threads,
    // each off the CPU all the time. The names of the threads' functions show once the probe
    // learnt to unwind libc's frameless nanosleep and pause (within a couple of drains).
    let check = |pid: u32, who: &str, selected: f64, early: f64| {
        let stacks = folded(&flame, "offcpu", pid);
        let secs = total(&stacks) as f64 / 1e6;
        assert!(
            secs > 2.0 * (selected - early) && secs < 2.0 * (selected + 0.2),
            "{who}: {secs:.2} s off-CPU in 2 threads, selected for {selected:.2} s: {stacks:?}\n{log}"
        );
        for name in ["gg_sleeper_main_4732", "gg_sleeper_thread_4731"] {
            assert!(
                share(&stacks, name).1 > 0,
                "{who}: {name}: {stacks:?}\n{log}"
            );
        }
    };
    check(pa, "A", switched + (elapsed - back), 1.2);
    check(pb, "B", back - switched, 0.8);
}
