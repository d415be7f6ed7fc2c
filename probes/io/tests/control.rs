//! The control channel on the real binary and kernel (root): control lines on ioprobe's stdin
//! change its period, its tables and its disk without a restart.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(30);
const BLOCK: usize = 4096;

/// Arrival times of the next `n` period ends.
fn period_ends(probe: &mut ProbeRun, n: usize) -> Vec<Instant> {
    (0..n)
        .map(|_| {
            probe.wait_line(WAIT, |l| l.starts_with("|io_bpf_stats|"));
            Instant::now()
        })
        .collect()
}

/// (table, blk_name) of every record of a period.
fn rows(period: &[String]) -> BTreeSet<(String, String)> {
    period
        .iter()
        .map(|l| {
            let (table, f) = fields(l);
            let name = if table == "io_bpf_stats" { "" } else { f[2] };
            (table.to_string(), name.to_string())
        })
        .collect()
}

fn tables(period: &[String]) -> BTreeSet<String> {
    rows(period).into_iter().map(|(t, _)| t).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A loop device on a fresh 16 MiB backing file, with a few O_DIRECT writes done.
fn busy_loop_device(dir: &tempfile::TempDir, name: &str) -> LoopDevice {
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let lo = LoopDevice::attach(&path).unwrap();
    let dev = lo.open_direct();
    assert_eq!(direct_writes(&dev, &AlignedBuf::new(BLOCK, 0x11), 0, 8), 8);
    lo
}

fn control(bits: u32, dev: &str) -> String {
    format!(
        r#"{{"v":1,"probe_bits":{bits},"params":{{"report_period":1,"dev_name":"{dev}","latency_thr":0}},"snoop":{{"mode":"all","pids":[]}}}}"#
    )
}

#[test]
fn report_period_changes_without_restart() {
    let mut probe = ProbeRun::start_controlled(&["-t", "1"]);
    probe.wait_attached(WAIT);
    let pid = probe.pid();
    let ends = period_ends(&mut probe, 3);
    for w in ends.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap < Duration::from_millis(1700), "1 s period, gap {gap:?}");
    }
    probe.send(r#"{"v":1,"params":{"report_period":3}}"#);
    probe.wait_stderr("[INFO] control: report_period 3 s", WAIT);
    // The first boundary after the change may come early (one new period after the last one).
    let ends = period_ends(&mut probe, 3);
    for w in ends[1..].windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(2500) && gap < Duration::from_millis(3700),
            "3 s period, gap {gap:?}"
        );
    }
    assert!(probe.running());
    assert_eq!(probe.pid(), pid);
    assert_eq!(probe.stop(), Some(0));
}

#[test]
fn probe_bits_and_dev_name_select_what_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut probe = ProbeRun::start_controlled(&["-t", "1"]);
    probe.wait_attached(WAIT);
    let pid = probe.pid();
    let a = busy_loop_device(&dir, "a.img");
    let b = busy_loop_device(&dir, "b.img");
    let both = rows(&probe.next_period(WAIT));
    for lo in [&a, &b] {
        for table in ["io_latency", "io_count"] {
            assert!(
                both.contains(&(table.to_string(), lo.name())),
                "{table} of {}: {both:?}",
                lo.name()
            );
        }
    }

    // io_count only.
    probe.send(&control(4, ""));
    probe.wait_stderr("[INFO] control: -P 0x4: tables io_count", WAIT);
    for _ in 0..2 {
        let period = probe.next_period(WAIT);
        assert_eq!(tables(&period), set(&["io_count", "io_bpf_stats"]));
        let r = rows(&period);
        assert!(
            r.contains(&("io_count".into(), a.name()))
                && r.contains(&("io_count".into(), b.name()))
        );
    }

    // Only disk a.
    probe.send(&control(4, &a.name()));
    probe.wait_stderr(
        &format!("[INFO] control: dev_name {}: only this disk", a.name()),
        WAIT,
    );
    let r = rows(&probe.next_period(WAIT));
    assert_eq!(
        r,
        BTreeSet::from([
            ("io_count".to_string(), a.name()),
            ("io_bpf_stats".to_string(), String::new())
        ])
    );

    // Everything again.
    probe.send(&control(7, ""));
    probe.wait_stderr(
        "[INFO] control: -P 0x7: tables io_latency, io_count, io_err",
        WAIT,
    );
    let r = rows(&probe.next_period(WAIT));
    assert!(r.contains(&("io_latency".into(), b.name())), "{r:?}");
    assert!(r.contains(&("io_count".into(), b.name())), "{r:?}");
    assert!(probe.running());
    assert_eq!(probe.pid(), pid);
    assert_eq!(probe.stop(), Some(0));
    drop(a);
    drop(b);
}

#[test]
fn garbage_and_a_closed_channel_change_nothing() {
    let mut probe = ProbeRun::start_controlled(&["-t", "1"]);
    probe.wait_attached(WAIT);
    probe.send("this is not a control message");
    probe.wait_stderr("[WARN] control channel: line skipped", WAIT);
    probe.send(r#"{"params":{"dev_name":"a b"}}"#);
    probe.wait_stderr("[WARN] control: params.dev_name invalid value", WAIT);
    // A valid line after the garbage is still applied.
    probe.send(r#"{"params":{"report_period":2}}"#);
    probe.wait_stderr("[INFO] control: report_period 2 s", WAIT);
    probe.close_control();
    let ends = period_ends(&mut probe, 3);
    assert!(ends[2] - ends[1] >= Duration::from_millis(1500));
    assert!(probe.running(), "stdin at EOF: still running");
    assert_eq!(probe.stop(), Some(0));
}
