//! Real events through the real probe: busy loops competing for one CPU inside a "container"
//! (a cgroup named like docker names one) give run delay to the node row and to that
//! container's row; O_DIRECT writes from it give its bio latency; snoopers select it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);
/// A 1 s period in which 3 loops share one CPU holds about 2 s of run delay (each waits while
/// the other two run); other load on that CPU only adds to it.
const MIN_RUNDELAY_NS: u64 = 1_000_000_000;

fn host_cpus() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u64
}

#[test]
fn busy_loops_on_one_cpu_have_run_delay_in_node_and_container_rows() {
    let c = FakeContainer::create(0x5111);
    let id = c.short_id().to_string();
    let mut probe = ProbeRun::start(&["-t", "1", "-P", "63"]);
    probe.wait_attached(WAIT);
    let mut loops = c.busy_loops(3);

    // The first period may have started before the loops: look for a full one, and keep the
    // period just before it.
    let mut before = probe.next_period(WAIT);
    let mut found = None;
    for _ in 0..8 {
        let period = probe.period(WAIT);
        if row(&period, "sli_cpu_container_gauge", &id)
            .is_some_and(|g| g.num("cpu_rundelay") >= MIN_RUNDELAY_NS)
        {
            found = Some(period);
            break;
        }
        before = period;
    }
    let period = found.unwrap_or_else(|| {
        panic!("no period with {MIN_RUNDELAY_NS} ns of run delay in container {id}")
    });

    let cg = row(&period, "sli_cpu_container_gauge", &id).unwrap();
    let node = row(&period, "sli_cpu_node_gauge", "sli_node_key").expect("node row");
    let rundelay = cg.num("cpu_rundelay");
    assert!(
        node.num("cpu_rundelay") >= rundelay,
        "the node holds every cgroup: {node:?} vs {cg:?}"
    );
    // Never measured: empty.
    assert_eq!(cg.get("cpu_wait"), "");
    assert_eq!(cg.get("cpu_longsys"), "");
    // Loops never sleep or block in the container (sums may be 0, but are measured).
    cg.num("cpu_sleep");
    cg.num("cpu_block");

    // The histogram counts since the row appeared: its sum grew by exactly this period's gauge.
    let h_now = row(&period, "sli_cpu_container_histogram", &id).unwrap();
    let (count, sum) = h_now.histogram("cpu_rundelay_histo");
    let (count0, sum0) = row(&before, "sli_cpu_container_histogram", &id)
        .map(|r| r.histogram("cpu_rundelay_histo"))
        .unwrap_or((0, 0));
    assert_eq!(sum - sum0, rundelay, "histogram sum vs gauge");
    assert!(count > count0);
    assert_eq!(h_now.get("cpu_wait_histo"), "");

    // Pinned to one CPU: at most that CPU's share of the host, and clearly busy.
    let stat = row(&period, "sli_cpu_container_stat", &id).unwrap();
    let busy = stat.float("cpu_busy");
    let cpus = host_cpus();
    assert!(
        busy > 5.0 && busy <= 100.0 / cpus as f64 + 2.0,
        "cpu_busy {busy} with {cpus} CPUs"
    );
    assert_eq!(
        stat.float("cpu_cores"),
        cpus as f64,
        "no quota: the host's CPUs"
    );
    let node_stat = row(&period, "sli_cpu_node_stat", "sli_node_key").unwrap();
    assert_eq!(node_stat.num("cpu_cores"), cpus);

    // With a v2 hierarchy (hybrid or v2 host) the container has PSI: the loops wait for CPU.
    if sliprobe::cgroups::Layout::of_host()
        .and_then(|l| l.unified)
        .is_some()
    {
        assert!(cg.num("cpu_pressure_some_ns") > 0, "{cg:?}");
    }

    // The container goes away: its row goes too.
    loops.kill();
    drop(c);
    let mut gone = false;
    for _ in 0..4 {
        let period = probe.next_period(WAIT);
        if row(&period, "sli_cpu_container_gauge", &id).is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "row of removed container {id} still printed");
    probe.stop();
}

#[test]
fn direct_writes_in_a_container_are_its_bio_latency() {
    const WRITES: u64 = 64;
    let c = FakeContainer::create(0xb10);
    let id = c.short_id().to_string();
    let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir on a disk");
    let file = dir.path().join("direct.bin");
    let mut probe = ProbeRun::start(&["-t", "1", "-P", "52"]);
    probe.wait_attached(WAIT);
    let mut dd = Command::new("dd");
    dd.args([
        "if=/dev/zero",
        &format!("of={}", file.display()),
        "bs=64k",
        &format!("count={WRITES}"),
        "oflag=direct",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let status = c.spawn(&mut dd, None).wait().expect("dd");
    assert!(status.success(), "dd oflag=direct on {}", file.display());
    // The writes are done: the next complete period has them all.
    let period = probe.next_period(WAIT);
    let h = row(&period, "sli_io_container_histogram", &id)
        .unwrap_or_else(|| panic!("no io histogram row for {id}: {period:#?}"));
    let (count, sum) = h.histogram("bio_latency_histo");
    let lost = row(&period, "sli_bpf_stats", "sli")
        .unwrap()
        .num("lost_events");
    assert!(
        count + lost >= WRITES && count <= 2 * WRITES,
        "{count} bios for {WRITES} 64 KiB O_DIRECT writes (lost {lost})"
    );
    assert!(sum > 0);
    // -P 52 = io + container + histogram: no node rows, no cpu or mem tables.
    assert!(period.iter().all(|r| !r.table.contains("_node_")));
    assert!(period
        .iter()
        .all(|r| r.table.starts_with("sli_io_") || r.table == "sli_bpf_stats"));
    drop(c);
    probe.stop();
}

#[test]
fn snoopers_select_the_containers_reported() {
    let c = FakeContainer::create(0x5e1);
    let id = c.short_id().to_string();
    let mut sleeper = Command::new("sleep");
    sleeper.arg("60").stdout(Stdio::null());
    let mut child = Procs(vec![c.spawn(&mut sleeper, None)]);
    let child_pid = child.first_pid();
    let mut probe = ProbeRun::start_controlled(&["-t", "1", "-P", "17"]);
    probe.wait_attached(WAIT);
    let has_row = |p: &[Record]| row(p, "sli_cpu_container_gauge", &id).is_some();

    let period = probe.next_period(WAIT);
    assert!(has_row(&period), "no snoopers: every container");
    // Only the probe's own process: not in the container.
    probe.send(&format!(
        r#"{{"probe":["cpu","container"],"probe_bits":17,"snoop":{{"mode":"include","pids":[{}]}}}}"#,
        probe.pid()
    ));
    probe.wait_stderr("control: snoop include 1 pid", WAIT);
    let period = probe.next_period(WAIT);
    assert!(
        !has_row(&period),
        "container {id} reported without a selected process"
    );
    probe.send(&format!(
        r#"{{"probe":["cpu","container"],"probe_bits":17,"snoop":{{"mode":"include","pids":[{}]}}}}"#,
        child_pid
    ));
    probe.wait_stderr("control: snoop include 1 pid", WAIT);
    let period = probe.next_period(WAIT);
    assert!(has_row(&period), "its process is selected");
    probe.send(&format!(
        r#"{{"probe":["cpu","container"],"probe_bits":17,"snoop":{{"mode":"exclude","pids":[{}]}}}}"#,
        child_pid
    ));
    probe.wait_stderr("control: snoop exclude 1 pid", WAIT);
    let period = probe.next_period(WAIT);
    assert!(!has_row(&period), "its only process is excluded");
    child.kill();
    drop(c);
    probe.stop();
}
