//! stackprobe with inputs that are not the happy path: a binary without symbols, a process that
//! exits in the middle of a period, a flame_dir that is missing or a symlink (and fixed by the
//! control channel), and snooper changes while it runs.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Waits for one byte on stdin, runs hot for `argv[1]` ms, exits.
const SHORT_SRC: &str = r#"
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
volatile unsigned long sink;
__attribute__((noinline)) void gg_short_hot_4732(void)
{
    for (unsigned long i = 0; i < 2000000UL; i++)
        sink += i * 7;
}
static long ms_since(const struct timespec *s)
{
    struct timespec n;
    clock_gettime(CLOCK_MONOTONIC, &n);
    return (n.tv_sec - s->tv_sec) * 1000 + (n.tv_nsec - s->tv_nsec) / 1000000;
}
int main(int argc, char **argv)
{
    char go;
    long ms = argc > 1 ? atol(argv[1]) : 2000;
    struct timespec start;
    if (read(0, &go, 1) != 1)
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (ms_since(&start) < ms)
        gg_short_hot_4732();
    return 0;
}
"#;

const HOT: &str = "gg_bad_hot_4731";

fn params(dir: &Path) -> String {
    format!(
        r#""flame_dir":"{}","svg_period":180,"perf_sample_period":10"#,
        dir.display()
    )
}

#[test]
fn stripped_binary_gives_module_offsets_and_counts_misses() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let bin = compile(
        tmp.path(),
        "gg_strip",
        &hot_src(HOT, "gg_bad_caller_4731"),
        &["-O0", "-fno-omit-frame-pointer"],
    );
    let out = Command::new("strip").arg(&bin).output().expect("run strip");
    assert!(out.status.success(), "strip: {out:?}");
    let work = Workload::start(&bin, &["30"]);
    let pid = work.pid();
    let mut probe = Probe::start(
        &["-P", "1", "-t", "1"],
        &control_line(1, &params(&flame), Some(&[pid])),
    );
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));
    let (log, records) = probe.stop_with_records();
    drop(work);

    let stacks = folded(&flame, "oncpu", pid);
    let total = total(&stacks);
    // The leaf of (almost) every sample is in the stripped program's hot loop: module+offset.
    let leaf_in_module: u64 = stacks
        .iter()
        .filter(|(f, _)| f.last().is_some_and(|l| l.starts_with("gg_strip+0x")))
        .map(|(_, v)| v)
        .sum();
    assert!(
        total > 0 && leaf_in_module as f64 >= 0.8 * total as f64,
        "{leaf_in_module} of {total} samples end in gg_strip+0x…: {stacks:?}\n{log}"
    );
    assert!(
        stacks
            .iter()
            .all(|(f, _)| !f.iter().any(|n| n.contains(HOT))),
        "no symbol left to name the function: {stacks:?}"
    );
    let misses = last_stat(&records, "symbol_misses");
    assert!(
        misses.is_some_and(|m| m > 0),
        "symbol_misses {misses:?} in {records:?}"
    );
}

#[test]
fn process_exiting_mid_period_keeps_its_symbolized_profile() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let bin = compile(tmp.path(), "gg_short_lived", SHORT_SRC, CFLAGS);
    let mut child = Command::new(&bin)
        .arg("2000")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut probe = Probe::start(
        &["-P", "1"],
        &control_line(1, &params(&flame), Some(&[pid])),
    );
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    // Drains run every second (the first 250 ms after the start): the 2 s of work straddle
    // several, so part of the samples is drained (and symbolized) while the process lives and
    // the rest after it is gone, from the addresses cached then.
    std::thread::sleep(Duration::from_millis(1500));
    child.stdin.as_mut().unwrap().write_all(b"x").unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    let cpu = cpu_secs(pid); // 0: gone (reaped)
    assert_eq!(cpu, 0.0);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    std::thread::sleep(Duration::from_secs(3));
    let log = probe.stop();

    let stacks = folded(&flame, "oncpu", pid);
    let total = total(&stacks);
    let (frac, _, example) = share_of(&stacks, "gg_short_hot_4732");
    assert!(
        frac >= 0.8,
        "{frac:.2} of {total} samples in gg_short_hot_4732: {stacks:?}\n{log}"
    );
    // ~2 s at 99 Hz when it had a CPU to itself.
    assert!(total >= 60, "{total} samples for ~2 s of work");
    let example = example.unwrap();
    assert_eq!(
        example[0],
        format!("[{pid}]gg_short_lived"),
        "comm read while alive"
    );
    assert!(
        example.iter().any(|f| f == "main"),
        "caller named: {example:?}"
    );
}

#[test]
fn missing_flame_dir_is_warned_about_and_not_created() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no_such_flame_dir");
    let bin = compile(
        tmp.path(),
        "gg_bad_hot",
        &hot_src(HOT, "gg_bad_caller_4731"),
        CFLAGS,
    );
    let work = Workload::start(&bin, &["30"]);
    let mut probe = Probe::start(
        &["-P", "1", "-t", "1"],
        &control_line(1, &params(&missing), Some(&[work.pid()])),
    );
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let (log, records) = probe.stop_with_records();
    drop(work);

    let warned = log
        .lines()
        .any(|l| l.starts_with("[WARN]") && l.contains(&missing.display().to_string()));
    assert!(warned, "a [WARN] naming {}: {log}", missing.display());
    assert!(!missing.exists(), "{} created", missing.display());
    let errors = last_stat(&records, "write_errors");
    assert!(
        errors.is_some_and(|e| e > 0),
        "write_errors {errors:?}: {records:?}"
    );
}

#[test]
fn symlinked_flame_dir_is_refused() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("real_dir");
    std::fs::create_dir(&target).unwrap();
    let link = tmp.path().join("flame_link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let bin = compile(
        tmp.path(),
        "gg_bad_hot",
        &hot_src(HOT, "gg_bad_caller_4731"),
        CFLAGS,
    );
    let work = Workload::start(&bin, &["30"]);
    let mut probe = Probe::start(
        &["-P", "1"],
        &control_line(1, &params(&link), Some(&[work.pid()])),
    );
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let log = probe.stop();
    drop(work);

    let refused = log.lines().any(|l| {
        l.starts_with("[WARN]") && l.contains("symlink") && l.contains(&link.display().to_string())
    });
    assert!(
        refused,
        "a [WARN] refusing the symlink {}: {log}",
        link.display()
    );
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "written through the symlink: {:?}",
        list(&target)
    );
}

#[test]
fn flame_dir_set_by_the_control_channel_is_used_without_restart() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("not_yet");
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let bin = compile(
        tmp.path(),
        "gg_bad_hot",
        &hot_src(HOT, "gg_bad_caller_4731"),
        CFLAGS,
    );
    let work = Workload::start(&bin, &["30"]);
    let pid = work.pid();
    let mut probe = Probe::start(
        &["-P", "1"],
        &control_line(1, &params(&missing), Some(&[pid])),
    );
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    probe.send(&control_line(1, &params(&flame), Some(&[pid])));
    probe.wait_log("control: on-CPU", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let log = probe.stop();
    drop(work);

    assert!(!missing.exists());
    let stacks = folded(&flame, "oncpu", pid);
    let (frac, _, _) = share_of(&stacks, HOT);
    assert!(frac >= 0.8, "{frac:.2} in {HOT}: {stacks:?}\n{log}");
    assert!(flame.join("index.json").exists(), "{:?}", list(&flame));
}

#[test]
fn snooper_changes_apply_without_restart() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let bin = compile(
        tmp.path(),
        "gg_bad_hot",
        &hot_src(HOT, "gg_bad_caller_4731"),
        CFLAGS,
    );
    let a = Workload::start(&bin, &["30"]);
    let b = Workload::start(&bin, &["30"]);
    let c = Workload::start(&bin, &["30"]);
    let (pa, pb, pc) = (a.pid(), b.pid(), c.pid());
    let p = params(&flame);

    let mut probe = Probe::start(&["-P", "1"], &control_line(1, &p, Some(&[pa])));
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    let ticks = probe_sdk::steal::cpu_ticks();
    let a0 = cpu_secs(pa);
    std::thread::sleep(Duration::from_secs(3));

    // Only B from now on. The CPU times are read once the probe logged the change (it applies
    // control lines between drains).
    probe.send(&control_line(1, &p, Some(&[pb])));
    let switched = Instant::now();
    probe.wait_log("control: on-CPU", Duration::from_secs(10));
    let (a1, b1) = (cpu_secs(pa), cpu_secs(pb));
    std::thread::sleep(Duration::from_secs(3));

    // Everything.
    probe.send(&control_line(1, &p, None));
    probe.wait_log("snoop all", Duration::from_secs(10));
    let (a2, b2, c2) = (cpu_secs(pa), cpu_secs(pb), cpu_secs(pc));
    std::thread::sleep(Duration::from_secs(3));
    let (a3, b3, c3) = (cpu_secs(pa), cpu_secs(pb), cpu_secs(pc));
    let log = probe.stop();
    let after_switch = switched.elapsed().as_secs_f64();
    drop((a, b, c));

    let count = |pid| {
        let stacks = folded(&flame, "oncpu", pid);
        let (frac, _, _) = share_of(&stacks, HOT);
        assert!(frac >= 0.8, "{pid}: {frac:.2} in {HOT}: {stacks:?}\n{log}");
        total(&stacks) as f64
    };
    let (na, nb, nc) = (count(pa), count(pb), count(pc));
    // Samples follow CPU time at 99 Hz while a process is selected. The slack (0.5 s of CPU)
    // covers the time the probe takes to apply a control line (≤ 100 ms) and tick rounding; a
    // filter that ignored a change would add a whole phase (~1-3 s of CPU) to one count.
    // Samples count the guest's clock, CPU time leaves out what the hypervisor took: the CPU
    // times are scaled by the host's steal over the test (1 without steal).
    let slack = 0.5;
    let steal = probe_sdk::steal::inflation(ticks);
    let cpu_a = ((a1 - a0) + (a3 - a2)) * steal;
    assert!(
        na < 99.0 * (cpu_a + slack),
        "A: {na} samples for {cpu_a:.2} s of CPU while selected ({:.2} s while not; steal x{steal:.2})",
        a2 - a1
    );
    assert!(
        na > 99.0 * (a1 - a0) * 0.5,
        "A: {na} samples before the switch"
    );
    let cpu_b = (b3 - b1) * steal;
    assert!(
        nb < 99.0 * (cpu_b + slack),
        "B: {nb} samples for {cpu_b:.2} s of CPU since it was selected"
    );
    assert!(nb < 99.0 * (after_switch + 2.0));
    assert!(
        nb > 99.0 * (b2 - b1) * 0.5,
        "B: {nb} samples after the switch"
    );
    let cpu_c = (c3 - c2) * steal;
    assert!(
        nc > 99.0 * (c3 - c2) * 0.5 && nc < 99.0 * (cpu_c + slack),
        "C: {nc} samples for {cpu_c:.2} s of CPU in mode all"
    );
}

/// Flags the off-CPU method cannot honour are refused at start with a message naming them.
#[test]
fn offcpu_method_flags_are_checked() {
    for (args, says) in [
        (
            &["-P", "2", "-M", "kprobe"][..],
            "-M: expected the off-CPU method, sampled or switch",
        ),
        (
            &["-P", "2", "-B", "100"][..],
            "-B (minimum off-CPU stretch) needs -M switch",
        ),
        (
            &["-P", "2", "-M", "sampled", "-B", "100"][..],
            "needs -M switch",
        ),
        (
            &["-P", "2", "-M", "switch", "-B", "x"][..],
            "-B: expected the minimum off-CPU time",
        ),
    ] {
        let out = std::process::Command::new(STACKPROBE)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
