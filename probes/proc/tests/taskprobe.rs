//! End-to-end tests of the taskprobe binary on the real kernel (root needed, as in CI).
//!
//! The traced child is `taskprobe-workload`, which issues an exactly known sequence of raw
//! syscalls, so most values are asserted exactly.

mod common;

use std::time::Duration;

use common::{Probe, Record, Workload, WORKLOAD};

const ATTACH: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(15);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn of(pid: u32, table: &str) -> impl Fn(&Record) -> bool + '_ {
    move |r| r.table == table && r.tgid() == Some(pid)
}

/// Latest record of `table` for `pid` among those seen.
fn latest<'a>(seen: &'a [Record], pid: u32, table: &str) -> Option<&'a Record> {
    seen.iter().rev().find(|r| of(pid, table)(r))
}

/// Largest value of field `i` over the records of `table` for `pid` in `seen` (0 if none): the
/// longest call over the periods seen, since each record holds its period's maximum.
fn max_of(seen: &[Record], pid: u32, table: &str, i: usize) -> u64 {
    seen.iter()
        .filter(|r| of(pid, table)(r))
        .map(|r| r.num(i))
        .max()
        .unwrap_or(0)
}

/// After the go byte the script child makes exactly 2 + 2K + 2N syscalls that return
/// (the blocked read, K failing openat, K reads, N fork + N wait4, one write), K of them failing.
fn script_syscalls(k: u64, n: u64) -> u64 {
    2 + 2 * k + 2 * n
}

#[test]
fn listed_process_counts_are_exact_and_unlisted_is_absent() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    const K: u64 = 40;
    const N: u64 = 3;
    let mut traced = Workload::start(&["script", &K.to_string(), &N.to_string()]);
    let mut other = Workload::start(&["script", "5", "1"]);
    let pid = traced.pid;
    // Counts (bit 1) and whole-syscall timing are opt-in: ask for everything.
    let pid_s = pid.to_string();
    let mut probe = Probe::start(&["-t", "1", "-P", "0", "-S", "exact", "-f", &pid_s], &[]);
    probe.wait_attached(ATTACH);

    traced.go();
    other.go();
    assert_eq!(traced.read_line(), "done");
    assert_eq!(other.read_line(), "done");

    let expected = script_syscalls(K, N);
    let rec = probe
        .wait_for(WAIT, |r| of(pid, "proc_syscall")(r) && r.num(3) >= expected)
        .unwrap_or_else(|| panic!("no complete proc_syscall for {pid}: {:?}", probe.seen));
    assert_eq!(rec.fields[1], "taskprobe-workl", "comm label");
    assert_eq!(rec.num(3), expected, "syscall_count");
    assert_eq!(rec.num(2), K, "syscall_failed");

    // The rest of the same period's records follow the proc_syscall line.
    let life = probe
        .wait_for(WAIT, of(pid, "proc_lifecycle"))
        .expect("proc_lifecycle");
    assert_eq!(life.num(2), N, "fork_count");
    assert_eq!(life.num(3), 0, "thread_count");
    assert_eq!(life.num(4), 0, "exec_count");
    assert_eq!(life.num(6), 0, "not exited yet");
    // ns_* are the longest call of each period: the K reads fall in the periods seen so far.
    assert!(
        max_of(&probe.seen, pid, "proc_syscall_io", 4) > 0,
        "ns_read times the K reads: {:?}",
        probe.seen
    );
    #[cfg(target_arch = "x86_64")]
    assert!(
        max_of(&probe.seen, pid, "proc_syscall_fork", 2) > 0,
        "ns_fork times the raw forks: {:?}",
        probe.seen
    );

    // Exit: one final report with exited=1 (the final read returning EOF adds one syscall),
    // then the process is forgotten. The child sits blocked in that read meanwhile, which times
    // the switched-out path of slow-syscall timing.
    let before_exit = probe.seen.len();
    std::thread::sleep(Duration::from_millis(300));
    assert!(traced.finish().success());
    let fin = probe
        .wait_for(WAIT, |r| of(pid, "proc_lifecycle")(r) && r.num(6) == 1)
        .expect("final record with exited=1");
    assert_eq!(fin.num(5), 1, "thread_exit_count");
    let final_sys = latest(&probe.seen, pid, "proc_syscall").expect("final proc_syscall");
    assert_eq!(final_sys.num(3), expected + 1);
    let read_max = max_of(&probe.seen[before_exit..], pid, "proc_syscall_io", 4);
    assert!(
        read_max >= 300_000_000,
        "the blocked read (>= 300 ms, one call) is the longest read of its period: {read_max} ns"
    );
    assert!(
        max_of(&probe.seen, pid, "proc_syscall_io", 5) > 0,
        "ns_write times the done write: {:?}",
        probe.seen
    );
    // proc_bpf_stats closes each period; later periods must not mention the process.
    probe
        .wait_for(WAIT, |r| r.table == "proc_bpf_stats")
        .expect("end of the final period");
    let before = probe.seen.len();
    probe.collect_for(Duration::from_millis(2500));
    assert!(
        !probe.seen[before..].iter().any(|r| r.tgid() == Some(pid)),
        "exited process reported again"
    );

    let other_pid = other.pid;
    assert!(other.finish().success());
    let (status, stderr, seen) = probe.stop();
    assert!(status.success(), "probe exit {status}: {stderr}");
    assert!(
        !seen.iter().any(|r| r.tgid() == Some(other_pid)),
        "unlisted process {other_pid} was reported"
    );
    assert!(
        seen.iter().filter_map(Record::tgid).all(|t| t == pid),
        "only the listed pid may appear"
    );
    let stats = seen
        .iter()
        .rev()
        .find(|r| r.table == "proc_bpf_stats")
        .expect("proc_bpf_stats");
    assert_eq!(stats.fields[0], "proc");
    assert_eq!(stats.num(2), 0, "lost_events");
    assert_eq!(stats.num(3), 0, "map_full");
}

#[test]
fn default_mode_times_blocked_syscalls_without_syscall_hooks() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    const MS: u64 = 400;
    const NS: u64 = MS * 1_000_000;
    const SLACK: u64 = 100_000_000;
    let mut w = Workload::start(&["blockers", &MS.to_string()]);
    let pid = w.pid;
    let mut probe = Probe::start(&["-t", "1", "-f", &pid.to_string()], &[]);
    probe.wait_attached(ATTACH);
    let stderr = probe.stderr();
    let plan = stderr
        .lines()
        .find(|l| l.contains("taskprobe plan:"))
        .unwrap_or_else(|| panic!("no plan line: {stderr}"));
    assert!(
        plan.contains("sched_switch") && !plan.contains("sys_enter") && !plan.contains("sys_exit"),
        "the default plan attaches no syscall tracepoint: {plan}"
    );
    w.go();
    assert_eq!(w.read_line(), "done");
    // Two more whole periods: every wait is reported, and the workload (blocked on stdin since
    // `done`) is idle in the last one.
    probe.next_period(WAIT);
    let idle = probe.next_period(WAIT);
    // proc_syscall_sched: ns_sched_yield(2) ns_futex(3) ns_epoll_wait(4) ns_epoll_pwait(5);
    // proc_syscall_io: ns_read(4) ns_write(5) ns_fsync(6). Each is the longest call of its
    // period, so over the periods seen each wait shows up once, at its own length.
    let seen = &probe.seen;
    let longest = |table: &str, i: usize| max_of(seen, pid, table, i);
    let epoll = longest("proc_syscall_sched", 4).max(longest("proc_syscall_sched", 5));
    // Each wait is MS long; the upper bound catches a sum of several calls (the sleeper
    // thread's nanosleep is not a timed syscall). The futex and pipe waits begin a moment after
    // the helper thread started its MS sleep, so a loaded machine may shorten them by that
    // scheduling delay: SLACK below MS.
    for (what, v) in [
        ("ns_futex", longest("proc_syscall_sched", 3)),
        ("ns_epoll_wait/pwait", epoll),
        ("ns_read", longest("proc_syscall_io", 4)),
    ] {
        assert!(
            (NS - SLACK..NS + 300_000_000).contains(&v),
            "{what} = {v} ns for one {MS} ms wait: {seen:?}"
        );
    }
    assert_eq!(longest("proc_syscall_sched", 2), 0, "ns_sched_yield");
    assert_eq!(
        longest("proc_syscall_io", 5) + longest("proc_syscall_io", 6),
        0,
        "ns_write/ns_fsync: the pipe write never blocks"
    );
    // The idle period still has the process's rows, with every maximum back to 0.
    for table in ["proc_syscall_io", "proc_syscall_sched", "proc_cpu"] {
        let row = idle
            .iter()
            .find(|r| of(pid, table)(r))
            .unwrap_or_else(|| panic!("no {table} row in an idle period: {idle:?}"));
        if table != "proc_cpu" {
            assert!(
                row.fields[2..].iter().all(|v| v == "0"),
                "idle period maxima: {row:?}"
            );
        }
    }
    assert!(
        !probe.seen.iter().any(|r| r.table == "proc_syscall"),
        "proc_syscall is opt-in (-P with bit 1)"
    );
    let cpu = probe.wait_for(WAIT, of(pid, "proc_cpu")).expect("proc_cpu");
    assert!(
        cpu.num(3) >= 3 * NS,
        "offcpu_ns covers the three waits and the sleeper: {cpu:?}"
    );
    assert!(w.finish().success());
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn no_filter_default_reports_old_and_new_processes() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    const MS: u64 = 300;
    // Started before the probe and blocked on stdin: found by the start-up /proc scan.
    let mut old = Workload::start(&["blockers", &MS.to_string()]);
    let mut probe = Probe::start(&["-t", "1"], &[]);
    probe.wait_attached(ATTACH);
    // Started after: tracked from its fork.
    let mut new = Workload::start(&["blockers", &MS.to_string()]);
    for w in [&old, &new] {
        probe
            .wait_for(WAIT, of(w.pid, "proc_lifecycle"))
            .unwrap_or_else(|| panic!("process {} not reported: {}", w.pid, probe.stderr()));
    }
    old.go();
    new.go();
    assert_eq!(old.read_line(), "done");
    assert_eq!(new.read_line(), "done");
    // The longest futex wait of some period is the join (MS, less the scheduling delay
    // before the joining thread blocked).
    for w in [&old, &new] {
        probe
            .wait_for(WAIT, |r| {
                of(w.pid, "proc_syscall_sched")(r) && r.num(3) >= (MS - 100) * 1_000_000
            })
            .unwrap_or_else(|| panic!("no futex time for {}", w.pid));
    }
    assert!(!probe.seen.iter().any(|r| r.table == "proc_syscall"));
    assert!(
        !probe
            .seen
            .iter()
            .any(|r| r.fields.get(1).is_some_and(|c| c.starts_with("kworker"))),
        "kernel threads are not processes to report"
    );
    assert!(old.finish().success());
    assert!(new.finish().success());
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn bad_timing_flag_exits_with_usage_error() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let probe = Probe::start(&["-t", "1", "-S", "fast"], &[]);
    let (status, stderr) = probe.wait_exit(WAIT).expect("probe should exit");
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("expected blocked or exact"),
        "stderr: {stderr}"
    );
}

#[test]
fn block_io_and_off_cpu_time_are_attributed_to_the_process() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    const COUNT: u64 = 16;
    const SLEEP_MS: u64 = 300;
    // On the root filesystem (a real block device here), not on a tmpfs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let dir_str = dir.path().to_str().expect("utf-8 path");
    let mut w = Workload::start(&[
        "io-sleep",
        &COUNT.to_string(),
        &SLEEP_MS.to_string(),
        dir_str,
    ]);
    let pid = w.pid;
    let mut probe = Probe::start(&["-t", "1", "-f", &pid.to_string()], &[]);
    probe.wait_attached(ATTACH);
    w.go();
    let done = w.read_line();
    let longest_write: u64 = done
        .strip_prefix("done ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected workload line {done:?}"));
    // proc_io: less_4k_io_read(2) less_4k_io_write(3) greater_4k_io_read(4)
    // greater_4k_io_write(5) (running totals), bio_latency(6) (the period's longest request, ns),
    // bio_err_count(7) hang_count(8) (running totals).
    let io = probe
        .wait_for(WAIT, |r| of(pid, "proc_io")(r) && r.num(5) >= COUNT)
        .unwrap_or_else(|| panic!("no proc_io with {COUNT} writes of 64 KiB: {:?}", probe.seen));
    assert_eq!(io.num(7), 0, "bio_err_count: {io:?}");
    assert_eq!(io.num(8), 0, "hang_count: {io:?}");
    // Each request ran inside one pwrite, so the longest request is at most the longest pwrite
    // (a sum over the COUNT requests would exceed it); a real disk takes more than 1 us (a value
    // in us would be below 1000).
    let bio_latency = max_of(&probe.seen, pid, "proc_io", 6);
    assert!(
        (1_000..=longest_write).contains(&bio_latency),
        "bio_latency {bio_latency} ns: the longest request, at most the longest write ({longest_write} ns)"
    );
    let cpu = probe.wait_for(WAIT, of(pid, "proc_cpu")).expect("proc_cpu");
    assert!(
        cpu.num(3) >= SLEEP_MS * 1_000_000,
        "offcpu_ns covers the sleep: {cpu:?}"
    );
    assert!(cpu.num(2) > 0, "direct IO waits count as iowait: {cpu:?}");
    assert!(cpu.num(2) <= cpu.num(3), "iowait is part of off-CPU time");

    // Idle (blocked on stdin): the rows keep coming every period, the totals stay, the
    // period's longest request is 0.
    for _ in 0..2 {
        let period = probe.next_period(WAIT);
        let idle_io = period
            .iter()
            .find(|r| of(pid, "proc_io")(r))
            .unwrap_or_else(|| panic!("no proc_io row in an idle period: {period:?}"));
        assert_eq!(idle_io.num(6), 0, "no request, no bio_latency: {idle_io:?}");
        assert_eq!(idle_io.num(5), io.num(5), "running total kept: {idle_io:?}");
        assert!(
            period.iter().any(|r| of(pid, "proc_cpu")(r)),
            "no proc_cpu row in an idle period: {period:?}"
        );
    }
    assert!(w.finish().success());
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn missing_tracepoint_is_reported_as_unsupported() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let probe = Probe::start(
        &["-t", "1"],
        &[("TASKPROBE_REQUIRE_HOOK", "raw:gg_no_such_tracepoint")],
    );
    let (status, stderr) = probe.wait_exit(WAIT).expect("probe should exit");
    assert_eq!(status.code(), Some(3), "stderr: {stderr}");
    assert!(
        stderr.contains("[ERROR] unsupported: raw tracepoint gg_no_such_tracepoint"),
        "stderr: {stderr}"
    );
}

#[test]
fn whitelist_follows_exec_into_a_matching_program() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    const K: u64 = 25;
    let dir = tempfile::tempdir().expect("tempdir");
    // A copy of the workload under another name: its comm after exec is `tp-exec-target`.
    let target = dir.path().join("tp-exec-target");
    std::fs::copy(WORKLOAD, &target).expect("copy workload");
    let conf = dir.path().join("gala-gopher-app.conf");
    std::fs::write(
        &conf,
        "application = (\n  { comm = \"^tp-exec-target$\"; cmdline = \"script\"; }\n);\n",
    )
    .expect("write whitelist");

    let conf_s = conf.to_str().expect("utf-8 path");
    let mut probe = Probe::start(&["-t", "1", "-P", "1", "-w", conf_s], &[]);
    probe.wait_attached(ATTACH);
    // Not selected before the exec (comm taskprobe-workl), selected after it.
    let target_str = target.to_str().expect("utf-8 path");
    let mut w = Workload::start(&[
        "exec-after",
        "300",
        target_str,
        "script",
        &K.to_string(),
        "0",
    ]);
    let pid = w.pid;

    // Wait until the counts are stable (the child is blocked waiting for the go byte).
    let mut last = None;
    let baseline = loop {
        let r = probe
            .wait_for(WAIT, of(pid, "proc_syscall"))
            .unwrap_or_else(|| panic!("exec'd process {pid} never tracked: {}", probe.stderr()));
        assert_eq!(r.fields[1], "tp-exec-target");
        if last == Some(r.num(3)) {
            break r;
        }
        last = Some(r.num(3));
    };
    w.go();
    assert_eq!(w.read_line(), "done");
    let want = baseline.num(3) + script_syscalls(K, 0);
    let rec = probe
        .wait_for(WAIT, |r| of(pid, "proc_syscall")(r) && r.num(3) >= want)
        .expect("counts after go");
    assert_eq!(
        rec.num(3),
        want,
        "syscall_count grew by exactly the script's syscalls"
    );
    assert_eq!(rec.num(2) - baseline.num(2), K, "failures grew by K");
    let life = probe
        .wait_for(WAIT, of(pid, "proc_lifecycle"))
        .expect("proc_lifecycle");
    assert_eq!(life.num(4), 0, "the exec happened before tracking began");
    assert!(w.finish().success());
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
}

/// A memory cgroup (v1 `memory` hierarchy, or v2) below the test's own, with a limit; the
/// directory is removed on drop (after the process in it exited).
struct MemCgroup {
    dir: std::path::PathBuf,
}

impl MemCgroup {
    fn new(limit: u64) -> MemCgroup {
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let v1 = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            ctrl.split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        });
        let (base, limit_file) = match v1 {
            Some(path) => (
                std::path::PathBuf::from("/sys/fs/cgroup/memory")
                    .join(path.trim_start_matches('/')),
                "memory.limit_in_bytes",
            ),
            None => {
                let path = own
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .expect("a cgroup v2 path");
                (
                    std::path::PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/')),
                    "memory.max",
                )
            }
        };
        let dir = base.join(format!("gg-taskprobe-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::fs::write(dir.join(limit_file), limit.to_string()).expect("memory limit");
        MemCgroup { dir }
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("cgroup.procs");
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `proc_page` (sub-probe `proc_pagecache`, `-P 256`): the page-cache work a process does in
/// its own context, and the time it spends reclaiming memory itself. The workload writes
/// 64 MiB (buffered) and fsyncs, then drops the file's pages and reads it back, inside a memory
/// cgroup limited to 32 MiB, so the read has to reclaim.
#[test]
fn page_cache_work_and_reclaim_are_attributed_to_the_process() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    const MIB: u64 = 64;
    const PAGES: u64 = MIB * 256;
    let within = |got: u64| got.abs_diff(PAGES) * 100 <= PAGES * 5;
    // On the root filesystem (a real block device here), not on a tmpfs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut w = Workload::start(&["page-cache", &MIB.to_string(), dir.path().to_str().unwrap()]);
    let pid = w.pid;
    let cg = MemCgroup::new(32 << 20);
    cg.add(pid);
    let mut probe = Probe::start(&["-t", "1", "-P", "256", "-f", &pid.to_string()], &[]);
    probe.wait_attached(ATTACH);
    // proc_page: reclaim_ns(2) access_pagecache(3) mark_buffer_dirty(4) load_page_cache(5)
    // mark_page_dirty(6), running totals.
    w.go();
    assert_eq!(w.read_line(), "written");
    let written = probe
        .wait_for(WAIT, |r| {
            of(pid, "proc_page")(r) && r.num(6) >= PAGES * 95 / 100
        })
        .unwrap_or_else(|| panic!("no proc_page with {PAGES} pages dirtied: {:?}", probe.seen));
    assert!(within(written.num(6)), "mark_page_dirty: {written:?}");
    assert!(
        within(written.num(5)),
        "load_page_cache of the new pages: {written:?}"
    );

    w.go();
    assert_eq!(w.read_line(), "read");
    let read = probe
        .wait_for(WAIT, |r| {
            of(pid, "proc_page")(r) && r.num(5) >= written.num(5) + PAGES * 95 / 100
        })
        .unwrap_or_else(|| {
            panic!(
                "no proc_page with {PAGES} pages read back: {:?}",
                probe.seen
            )
        });
    assert!(
        within(read.num(5) - written.num(5)),
        "load_page_cache of the read: {read:?}"
    );
    let access = read.num(3) - written.num(3);
    assert!(
        (PAGES..=2 * PAGES).contains(&access),
        "access_pagecache {access} for {PAGES} pages read: {read:?}"
    );
    assert_eq!(
        read.num(6),
        written.num(6),
        "reading dirties nothing: {read:?}"
    );
    assert!(
        read.num(2) > 0,
        "reading 64 MiB in 32 MiB reclaims: {read:?}"
    );
    assert!(w.finish().success());
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
}

/// `thread_cpu` (`-P 4096`, v2023's table): a worker thread that pins itself alternately to
/// CPUs 0 and 1 ten times, sleeping 50 ms after each, shows its forced migrations and its
/// sleeps as off-CPU time in its own row (key pid = the thread id, label tgid); the row goes
/// away once the report after its exit is written.
#[test]
fn thread_cpu_counts_migrations_and_off_cpu_time_per_thread() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    const N: u64 = 10;
    const MS: u64 = 50;
    let mut w = Workload::start(&["migrate", &N.to_string(), &MS.to_string()]);
    let pid = w.pid;
    let mut probe = Probe::start(&["-t", "1", "-P", "4096", "-f", &pid.to_string()], &[]);
    probe.wait_attached(ATTACH);
    w.go();
    let done = w.read_line();
    let tid: u32 = done
        .strip_prefix("done ")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {done:?}"));
    probe.next_period(WAIT);
    let later = probe.next_period(WAIT);
    let thread = |r: &Record, id: u32| r.table == "thread_cpu" && r.fields[0] == id.to_string();
    let worker = probe
        .seen
        .iter()
        .rev()
        .find(|r| thread(r, tid))
        .unwrap_or_else(|| panic!("no thread_cpu row of {tid}: {:?}", probe.seen))
        .clone();
    // pid(0) tgid(1) comm(2) off_cpu_ns(3) migration_count(4), running totals.
    assert_eq!(worker.fields[1], pid.to_string(), "{worker:?}");
    assert!(
        (N - 1..=2 * N).contains(&worker.num(4)),
        "migrations of {N} forced moves: {worker:?}"
    );
    assert!(
        (N * MS * 900_000..10_000_000_000).contains(&worker.num(3)),
        "off-CPU time of {N} sleeps of {MS} ms: {worker:?}"
    );
    assert!(
        !later.iter().any(|r| thread(r, tid)),
        "an exited thread's row is gone: {later:?}"
    );
    assert!(
        later.iter().any(|r| thread(r, pid)),
        "the main thread still has its row: {later:?}"
    );
    assert!(
        !probe.seen.iter().any(|r| r.table == "proc_cpu"),
        "-P 4096 selects thread_cpu only"
    );
    assert!(w.finish().success());
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
}

/// Abnormal events (`-l`, upstream's `report_event`): a child whose syscalls fail gets one
/// `syscall_failed` event (in the period of the failures, with their number); with `-O 300`, a
/// child blocked 400 ms at a time gets an `offcpu_ns` event in the periods its threads spent
/// more than 300 ms off the CPU (counted when they run again), never two of a kind in one
/// period; no other process gets any.
#[test]
fn abnormal_events_follow_the_period_changes() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    const K: u64 = 3;
    let mut failing = Workload::start(&["script", &K.to_string(), "1"]);
    let mut blocking = Workload::start(&["blockers", "400"]);
    let (fpid, bpid) = (failing.pid, blocking.pid);
    let pids = format!("{fpid},{bpid}");
    let mut probe = Probe::start(
        &[
            "-t", "1", "-l", "warn", "-O", "300", "-P", "2049", "-f", &pids,
        ],
        &[],
    );
    probe.wait_attached(ATTACH);
    failing.go();
    blocking.go();
    assert_eq!(failing.read_line(), "done");
    assert_eq!(blocking.read_line(), "done");
    probe.next_period(WAIT);
    probe.next_period(WAIT);
    assert!(failing.finish().success());
    assert!(blocking.finish().success());
    let (status, stderr, seen) = probe.stop();
    assert!(status.success(), "{stderr}");
    // |event|proc|<tgid>|<metric>|<severity>|<number>|<body>|
    let events: Vec<&Record> = seen.iter().filter(|r| r.table == "event").collect();
    assert!(
        events
            .iter()
            .all(|e| e.fields[0] == "proc"
                && [fpid, bpid].map(|p| p.to_string()).contains(&e.fields[1])),
        "only the tracked processes: {events:?}"
    );
    let of = |pid: u32, metric: &str| -> Vec<&Record> {
        events
            .iter()
            .copied()
            .filter(|e| e.fields[1] == pid.to_string() && e.fields[2] == metric)
            .collect()
    };
    let failed = of(fpid, "syscall_failed");
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].fields[3], "WARN");
    assert!(
        failed[0].fields[5].contains(&format!("TGID:{fpid}) syscalls failed({K})")),
        "{failed:?}"
    );
    assert!(!of(bpid, "offcpu_ns").is_empty(), "{events:?}");
    // Events come before their period's proc_bpf_stats: at most one per process and kind.
    let mut period: Vec<(String, String)> = Vec::new();
    for r in &seen {
        if r.table == "event" {
            let kind = (r.fields[1].clone(), r.fields[2].clone());
            assert!(
                !period.contains(&kind),
                "{kind:?} twice in a period: {events:?}"
            );
            period.push(kind);
        } else if r.table == "proc_bpf_stats" {
            period.clear();
        }
    }
}

/// `proc_pygc` (`-P 8192`): a CPython process with automatic collection off runs
/// `gc.collect()` 20 times over 200,000 live objects; its row counts exactly those 20
/// collections, with their time (ms) and the period's longest.
#[test]
fn python_gc_collections_are_counted_and_timed() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    const N: u64 = 20;
    let script = format!(
        "import gc, os, sys\n\
         gc.disable()\n\
         junk = [[i] for i in range(200000)]\n\
         print('ready %d' % os.getpid(), flush=True)\n\
         sys.stdin.read(1)\n\
         for _ in range({N}):\n    gc.collect()\n\
         print('done', flush=True)\n\
         sys.stdin.read()\n"
    );
    // Debian's CPython, built with --with-dtrace (a pyenv or venv Python may not be).
    let mut cmd = std::process::Command::new("/usr/bin/python3");
    cmd.args(["-c", &script]);
    let mut w = Workload::spawn(cmd);
    let pid = w.pid;
    let mut probe = Probe::start(&["-t", "1", "-P", "8192", "-f", &pid.to_string()], &[]);
    probe.wait_attached(ATTACH);
    probe.wait_stderr("Python GC probes attached to 1 target(s)", 1, WAIT);
    w.go();
    assert_eq!(w.read_line(), "done");
    // python_gc(2) latency_sum(3, ms) latency_max(4, ms), running totals. Records printed
    // while the collections ran may still be queued: wait for the total, then one period more.
    probe
        .wait_for(WAIT, |r| of(pid, "proc_pygc")(r) && r.num(2) >= N)
        .unwrap_or_else(|| panic!("no proc_pygc row with {N} collections: {:?}", probe.seen));
    probe.next_period(WAIT);
    let row = latest(&probe.seen, pid, "proc_pygc")
        .expect("a proc_pygc row")
        .clone();
    assert_eq!(row.num(2), N, "exactly the {N} collections: {row:?}");
    let ms = |s: &str| {
        s.parse::<f64>()
            .unwrap_or_else(|_| panic!("{s} in {row:?}"))
    };
    let sum = ms(&row.fields[3]);
    let longest = probe
        .seen
        .iter()
        .filter(|r| of(pid, "proc_pygc")(r))
        .map(|r| ms(&r.fields[4]))
        .fold(0.0, f64::max);
    assert!(
        sum > 0.0 && longest > 0.0 && longest <= sum,
        "sum {sum} ms, longest {longest} ms: {row:?}"
    );
    assert!(w.finish().success());
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
}

/// `proc_syscall_ioctl` (`-P 16384`, here with `-S exact`): a child calling
/// `FS_IOC_GETFLAGS` (`_IOR('f', 1, long)`) 100 times on a file shows that call in the row's
/// labels (its fd, direction 2 = read, type 102 = 'f', number 1), size 8 and a time > 0.
#[test]
fn the_longest_ioctl_is_named_by_its_labels() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let file = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).expect("temp file");
    let mut w = Workload::start(&["ioctl", "100", file.path().to_str().unwrap()]);
    let pid = w.pid;
    let mut probe = Probe::start(
        &[
            "-t",
            "1",
            "-P",
            "16384",
            "-S",
            "exact",
            "-f",
            &pid.to_string(),
        ],
        &[],
    );
    probe.wait_attached(ATTACH);
    w.go();
    let done = w.read_line();
    let fd = done.strip_prefix("done ").expect("done <fd>").to_string();
    let row = probe
        .wait_for(WAIT, |r| of(pid, "proc_syscall_ioctl")(r) && r.num(7) > 0)
        .unwrap_or_else(|| panic!("no proc_syscall_ioctl with a time: {:?}", probe.seen));
    // ioctl_fd(2) ioctl_dir(3) ioctl_type(4) ioctl_nr(5) ioctl_size(6) ns_ioctl(7)
    assert_eq!(row.fields[2..6], [fd.as_str(), "2", "102", "1"], "{row:?}");
    assert_eq!(row.num(6), 8, "{row:?}");
    assert!(w.finish().success());
    let (status, stderr, _) = probe.stop();
    assert!(status.success(), "{stderr}");
}
