//! The control channel on the real binary and kernel (root needed, as in CI): control lines on
//! taskprobe's stdin change its period, its tables and its processes without a restart.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Probe, Record};

const ATTACH: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(15);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Tables of the records that carry a process.
fn tables_of(records: &[Record]) -> BTreeSet<String> {
    records.iter().map(|r| r.table.clone()).collect()
}

/// Every process that has a record.
fn tgids_of(records: &[Record]) -> BTreeSet<u32> {
    records.iter().filter_map(Record::tgid).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Arrival times of the next `n` period ends.
fn period_ends(probe: &mut Probe, n: usize) -> Vec<Instant> {
    (0..n)
        .map(|_| {
            probe
                .wait_for(WAIT, |r| r.table == "proc_bpf_stats")
                .expect("period end");
            Instant::now()
        })
        .collect()
}

/// `python3 -c 'import time; time.sleep(30)'`, killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        let python = std::env::var("GG_TEST_PYTHON").unwrap_or_else(|_| {
            if std::path::Path::new("/usr/bin/python3").exists() {
                "/usr/bin/python3".into()
            } else {
                "python3".into()
            }
        });
        let child = Command::new(python)
            .args(["-c", "import time; time.sleep(30)"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn python3");
        Sleeper(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn snoop(mode: &str, pids: &[u32]) -> String {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!(
        r#"{{"v":1,"params":{{"report_period":1}},"snoop":{{"mode":"{mode}","pids":[{}]}}}}"#,
        pids.join(",")
    )
}

#[test]
fn report_period_changes_without_restart() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut probe = Probe::start_controlled(&["-t", "1", "-f", "1"]);
    probe.wait_attached(ATTACH);
    let pid = probe.pid();
    let ends = period_ends(&mut probe, 3);
    for w in ends.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap < Duration::from_millis(1700), "1 s period, gap {gap:?}");
    }
    probe.send(r#"{"v":1,"params":{"report_period":3}}"#);
    probe.wait_stderr("[INFO] control: report_period 3 s", 1, WAIT);
    // The first boundary after the change may come early (one new period after the last one).
    let ends = period_ends(&mut probe, 3);
    for w in ends[1..].windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(2500) && gap < Duration::from_millis(3700),
            "3 s period, gap {gap:?}"
        );
    }
    assert!(probe.running(), "still running");
    assert_eq!(probe.pid(), pid);
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr.matches("taskprobe attached").count(), 1, "{stderr}");
}

#[test]
fn probe_bits_attach_and_detach_programs_without_restart() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // The test process itself is the tracked one: its threads make syscalls all the time.
    let me = std::process::id();
    let mut probe = Probe::start_controlled(&["-t", "1", "-f", &me.to_string()]);
    probe.wait_attached(ATTACH);
    let pid = probe.pid();
    let before = probe.next_period(WAIT);
    assert!(
        tables_of(&before).contains("proc_syscall_sched")
            && !tables_of(&before).contains("proc_syscall"),
        "default tables: {:?}",
        tables_of(&before)
    );

    // proc_syscall: counts (attaches sys_exit), sched and fork times.
    probe.send(r#"{"v":1,"probe":["proc_syscall"],"probe_bits":25,"params":{"report_period":1}}"#);
    // sys_exit is attached on demand.
    probe.wait_stderr(
        "[INFO] control: -P 0x19: tables proc_syscall, proc_syscall_sched, proc_syscall_fork, \
         proc_lifecycle; hooks sched_process_fork, sched_process_exec, sched_process_exit, \
         sys_exit, sched_switch\n",
        1,
        WAIT,
    );
    let first = probe.next_period(WAIT);
    let second = probe.next_period(WAIT);
    for period in [&first, &second] {
        assert_eq!(
            tables_of(period),
            set(&[
                "proc_syscall",
                "proc_syscall_sched",
                "proc_syscall_fork",
                "proc_lifecycle",
                "proc_bpf_stats"
            ])
        );
    }
    let count = |recs: &[Record]| {
        recs.iter()
            .find(|r| r.table == "proc_syscall" && r.tgid() == Some(me))
            .map(|r| r.num(3))
            .expect("proc_syscall of the test process")
    };
    assert!(count(&second) > count(&first), "syscalls are counted");

    // proc_fs alone: the three file-system tables, timed at sched_switch (sys_exit detached).
    probe.send(r#"{"v":1,"probe":["proc_fs"],"probe_bits":224,"params":{"report_period":1}}"#);
    probe.wait_stderr(
        "[INFO] control: -P 0xe0: tables proc_ext4, proc_overlay, proc_tmpfs, proc_lifecycle; \
         hooks sched_process_fork, sched_process_exec, sched_process_exit, sched_switch\n",
        1,
        WAIT,
    );
    assert_eq!(
        tables_of(&probe.next_period(WAIT)),
        set(&[
            "proc_ext4",
            "proc_overlay",
            "proc_tmpfs",
            "proc_lifecycle",
            "proc_bpf_stats"
        ])
    );

    // proc_dns alone: uprobes on the test process's libc, no tracepoint beyond the lifecycle.
    probe.send(r#"{"v":1,"probe":["proc_dns"],"probe_bits":512,"params":{"report_period":1}}"#);
    probe.wait_stderr(
        "[INFO] control: -P 0x200: tables proc_lifecycle, proc_dns; hooks sched_process_fork, \
         sched_process_exec, sched_process_exit\n",
        1,
        WAIT,
    );
    probe.wait_stderr("DNS uprobes attached to 1 target(s)", 1, WAIT);

    // proc_offcpu alone: proc_cpu (plus proc_lifecycle, always written); sys_exit detached.
    probe.send(r#"{"v":1,"probe":["proc_offcpu"],"probe_bits":2048,"params":{"report_period":1}}"#);
    probe.wait_stderr(
        "[INFO] control: -P 0x800: tables proc_lifecycle, proc_cpu; hooks sched_process_fork, sched_process_exec, sched_process_exit, sched_switch\n",
        1,
        WAIT,
    );
    probe.wait_stderr("DNS uprobes detached", 1, WAIT);
    let only_cpu = probe.next_period(WAIT);
    assert_eq!(
        tables_of(&only_cpu),
        set(&["proc_lifecycle", "proc_cpu", "proc_bpf_stats"])
    );
    // probe_bits 0 (no sub-probes given) changes nothing.
    probe.send(r#"{"v":1,"params":{"report_period":1}}"#);
    assert_eq!(
        tables_of(&probe.next_period(WAIT)),
        set(&["proc_lifecycle", "proc_cpu", "proc_bpf_stats"])
    );
    assert!(probe.running());
    assert_eq!(probe.pid(), pid);
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr.matches("taskprobe attached").count(), 1);
}

#[test]
fn snoop_include_and_exclude_select_processes() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let a = Sleeper::start();
    let b = Sleeper::start();
    let c = Sleeper::start();
    let mut probe = Probe::start_controlled(&["-t", "1"]);
    probe.wait_attached(ATTACH);
    let pid = probe.pid();
    // No filter on the command line: every process, the three sleepers included.
    let all = probe.next_period(WAIT);
    for s in [&a, &b, &c] {
        assert!(tgids_of(&all).contains(&s.pid()), "{} reported", s.pid());
    }

    probe.send(&snoop("include", &[a.pid(), b.pid()]));
    probe.wait_stderr(
        "[INFO] control: snoop include 2 pids: 2 processes tracked",
        1,
        WAIT,
    );
    for _ in 0..2 {
        let period = probe.next_period(WAIT);
        assert_eq!(tgids_of(&period), BTreeSet::from([a.pid(), b.pid()]));
        assert!(tables_of(&period).contains("proc_cpu"));
    }

    // A process started later, then included.
    let d = Sleeper::start();
    probe.send(&snoop("include", &[a.pid(), b.pid(), d.pid()]));
    probe.wait_stderr("[INFO] control: snoop include 3 pids", 1, WAIT);
    let period = probe.next_period(WAIT);
    assert_eq!(
        tgids_of(&period),
        BTreeSet::from([a.pid(), b.pid(), d.pid()])
    );

    // Exclude: every process but A.
    probe.send(&snoop("exclude", &[a.pid()]));
    probe.wait_stderr("[INFO] control: snoop exclude 1 pid", 1, WAIT);
    let period = probe.next_period(WAIT);
    let seen = tgids_of(&period);
    assert!(!seen.contains(&a.pid()), "excluded A reported");
    for s in [&b, &c, &d] {
        assert!(seen.contains(&s.pid()), "{} not reported", s.pid());
    }
    // A new exclusion list: A is back, C goes.
    probe.send(&snoop("exclude", &[c.pid()]));
    probe.wait_stderr("[INFO] control: snoop exclude 1 pid", 2, WAIT);
    let seen = tgids_of(&probe.next_period(WAIT));
    assert!(
        seen.contains(&a.pid()) && !seen.contains(&c.pid()),
        "{seen:?}"
    );

    // Mode all: back to the command line's selection (every process).
    probe.send(&snoop("all", &[]));
    probe.wait_stderr("[INFO] control: snoop command-line selection", 1, WAIT);
    let seen = tgids_of(&probe.next_period(WAIT));
    for s in [&a, &b, &c, &d] {
        assert!(seen.contains(&s.pid()), "{} not reported", s.pid());
    }
    assert!(probe.running());
    assert_eq!(probe.pid(), pid);
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr.matches("taskprobe attached").count(), 1);
}

#[test]
fn include_replaces_the_command_line_pids() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let a = Sleeper::start();
    let b = Sleeper::start();
    let mut probe = Probe::start_controlled(&["-t", "1", "-f", &a.pid().to_string()]);
    probe.wait_attached(ATTACH);
    assert_eq!(
        tgids_of(&probe.next_period(WAIT)),
        BTreeSet::from([a.pid()])
    );
    probe.send(&snoop("include", &[b.pid()]));
    probe.wait_stderr("[INFO] control: snoop include 1 pid", 1, WAIT);
    assert_eq!(
        tgids_of(&probe.next_period(WAIT)),
        BTreeSet::from([b.pid()])
    );
    probe.send(&snoop("all", &[]));
    probe.wait_stderr("[INFO] control: snoop command-line selection", 1, WAIT);
    assert_eq!(
        tgids_of(&probe.next_period(WAIT)),
        BTreeSet::from([a.pid()])
    );
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn garbage_and_a_closed_channel_change_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut probe = Probe::start_controlled(&["-t", "1", "-f", "1"]);
    probe.wait_attached(ATTACH);
    probe.send("this is not a control message");
    probe.send(r#"{"params":{"report_period":"fast"}}"#);
    probe.wait_stderr("[WARN] control channel: line skipped", 1, WAIT);
    probe.wait_stderr(
        "[WARN] control: params.report_period invalid data type",
        1,
        WAIT,
    );
    // A valid line after the garbage is still applied.
    probe.send(r#"{"params":{"report_period":2}}"#);
    probe.wait_stderr("[INFO] control: report_period 2 s", 1, WAIT);
    probe.close_control();
    let ends = period_ends(&mut probe, 3);
    assert!(ends[2] - ends[1] >= Duration::from_millis(1500));
    assert!(probe.running(), "stdin at EOF: still running");
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
}
