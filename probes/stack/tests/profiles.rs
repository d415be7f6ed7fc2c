//! stackprobe against real programs compiled here: on-CPU samples land in the hot function
//! with its callers, off-CPU time matches the known blocked time, the outputs are readable by
//! `go tool pprof`, and the probe follows snooper changes without a restart.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const BLOCK_SRC: &str = r#"
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
    /* The probe learns how to unwind through libc's frameless nanosleep here. */
    for (int i = 0; i < 20; i++)
        gg_warmup_sleeper(100);
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
    let cpu0 = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(5));
    let log = probe.stop();
    let ran = cpu_secs(pid) - cpu0;
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
    let expected = 99.0 * ran;
    assert!(
        (total as f64) > expected * 0.7 && (total as f64) < expected * 1.3,
        "{total} samples, ~{expected:.0} expected"
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
    let mut probe = Probe::start(
        &["-P", "2"],
        &control_line(2, &params(&flame), Some(&[pid])),
    );
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    child.stdin.as_mut().unwrap().write_all(b"x").unwrap();
    // 2 s of warm-up, 20 x 100 ms blocked, then pause().
    std::thread::sleep(Duration::from_millis(2000 + 2000 + 1500));
    let log = probe.stop();
    let _ = child.kill();
    let _ = child.wait();

    let stacks = folded(&flame, "offcpu", pid);
    let (_, us, example) = share(&stacks, "gg_blocking_function_4712");
    let expected = 2_000_000.0;
    assert!(
        (us as f64 - expected).abs() <= expected * 0.1,
        "{us} us off-CPU in gg_blocking_function_4712, {expected} expected: {stacks:?}\n{log}"
    );
    let example = example.unwrap();
    assert!(
        example.iter().any(|f| f.ends_with("_[k]")),
        "kernel frames of the switch: {example:?}"
    );
}
