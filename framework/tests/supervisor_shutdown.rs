//! Stopping leaves no process behind: TERM-ignoring probes, grandchildren in the probe's group,
//! and double-forked grandchildren in their own session (caught through the subreaper).

#[path = "daemon_support/mod.rs"]
mod daemon_support;
mod supervisor_support;

use std::sync::Arc;
use std::time::Duration;

use gala_gopher::supervisor::{become_subreaper, Supervisor};
use gala_gopher::telemetry::Telemetry;
use supervisor_support::*;

const WAIT: Duration = Duration::from_secs(10);

/// The SIGKILLed-daemon tests one at a time: a daemon starting while another was just SIGKILLed
/// cleans up the dead one's leftovers itself, hiding whether its janitor did. (In-process
/// supervisors need no lock: each sweeps only its own runs.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn term_ignoring_probe_and_grandchild_are_gone_after_shutdown() {
    become_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = write_script(
        dir.path(),
        "stubborn",
        &format!(
            "trap '' TERM\nsleep 1000 &\necho $! >> {p}\necho $$ >> {p}\nwhile :; do sleep 1; done",
            p = pids.display()
        ),
    );
    let sink = TestSink::new();
    let sup = Supervisor::new(sink.clone(), Arc::new(Telemetry::default()), fast_options());
    sup.reconcile(vec![spec("stubborn", &[script.to_str().unwrap()])])
        .await;
    assert!(eventually(WAIT, || read_pids(&pids).len() == 2).await);
    let recorded = read_pids(&pids);
    assert!(recorded.iter().all(|&p| pid_exists(p)));

    sup.shutdown().await;
    for pid in recorded {
        assert!(!pid_exists(pid), "pid {pid} survived shutdown");
    }
}

#[tokio::test]
async fn double_forked_setsid_grandchild_is_gone_after_shutdown() {
    become_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The subshell exits at once, so `sleep` is orphaned, in its own session: the probe's
    // process group no longer covers it.
    let script = write_script(
        dir.path(),
        "escaper",
        &format!(
            "(setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > {p})\nexec sleep 1000",
            p = pids.display()
        ),
    );
    let sink = TestSink::new();
    let sup = Supervisor::new(sink.clone(), Arc::new(Telemetry::default()), fast_options());
    sup.reconcile(vec![spec("escaper", &[script.to_str().unwrap()])])
        .await;
    assert!(eventually(WAIT, || read_pids(&pids).len() == 1).await);
    let escaped = read_pids(&pids)[0];
    let me = std::process::id() as i32;
    assert!(
        eventually(WAIT, || ppid_of(escaped) == Some(me)).await,
        "escaped process was not re-parented to the subreaper"
    );

    sup.shutdown().await;
    assert!(
        !pid_exists(escaped),
        "escaped pid {escaped} survived shutdown"
    );
}

#[tokio::test]
async fn removing_a_probe_kills_its_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = write_script(
        dir.path(),
        "parent",
        &format!(
            "sleep 1000 &\necho $! >> {p}\nsleep 1000 &\necho $! >> {p}\nwait",
            p = pids.display()
        ),
    );
    let sink = TestSink::new();
    let sup = Supervisor::new(sink.clone(), Arc::new(Telemetry::default()), fast_options());
    sup.reconcile(vec![spec("parent", &[script.to_str().unwrap()])])
        .await;
    assert!(eventually(WAIT, || read_pids(&pids).len() == 2).await);
    let stats = sup.stats("parent").unwrap();
    let leader = stats.pid.load(std::sync::atomic::Ordering::Relaxed) as i32;

    sup.reconcile(Vec::new()).await;
    assert!(sink.retired("parent"));
    assert!(!pid_exists(leader));
    // Group members die from the signals sent to the group; their zombies are reaped by
    // whoever adopted them (init, or this process's orphan reaper), which can take a moment.
    for pid in read_pids(&pids) {
        assert!(
            eventually(WAIT, || !pid_exists(pid)).await,
            "group member {pid} survived"
        );
    }
    sup.shutdown().await;
}

/// A probe that keeps starting `setsid` children (own session, own process group).
fn setsid_spawner(dir: &std::path::Path, name: &str, mark: &str) -> std::path::PathBuf {
    write_script(
        dir,
        name,
        &format!("while :; do setsid sleep {mark} </dev/null >/dev/null 2>&1 & sleep 0.1; done"),
    )
}

#[tokio::test]
async fn setsid_grandchildren_of_a_removed_probe_are_killed() {
    removed_probe_leaves_nothing(marker(1), true).await;
}

/// The same without cgroups: the subreaper and the run's environment tag find the escapees.
#[tokio::test]
async fn setsid_grandchildren_are_killed_without_cgroups() {
    become_subreaper().unwrap();
    removed_probe_leaves_nothing(marker(4), false).await;
}

async fn removed_probe_leaves_nothing(mark: String, cgroups: bool) {
    let _guard = MarkerGuard(mark.clone());
    let dir = tempfile::tempdir().unwrap();
    let script = setsid_spawner(dir.path(), "spawner", &mark);
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let opts = gala_gopher::supervisor::SupervisorOptions {
        cgroups,
        ..fast_options()
    };
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), opts);
    sup.reconcile(vec![spec("spawner", &[script.to_str().unwrap()])])
        .await;
    // Counted once `setsid` has run: before that a child is still in the probe's group and
    // dies from the stop's SIGTERM, which is no orphan kill.
    assert!(eventually(WAIT, || session_leaders_with_arg(&mark).len() >= 3).await);

    // Removing the probe (the drop-in deleted) must take every process it started with it.
    let stats = telemetry.probe("spawner");
    sup.reconcile(Vec::new()).await;
    assert!(
        stats
            .orphans_killed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    assert!(
        eventually(WAIT, || procs_with_arg(&mark).is_empty()).await,
        "setsid grandchildren survived the probe's removal: {:?}",
        procs_with_arg(&mark)
    );
    sup.shutdown().await;
}

#[tokio::test]
async fn setsid_grandchildren_are_killed_before_the_respawn() {
    let mark = marker(2);
    let _guard = MarkerGuard(mark.clone());
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = write_script(
        dir.path(),
        "leaver",
        &format!(
            "setsid sleep {mark} </dev/null >/dev/null 2>&1 &\necho $! >> {p}\nsleep 0.3\nexit 1",
            p = pids.display()
        ),
    );
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    sup.reconcile(vec![spec("leaver", &[script.to_str().unwrap()])])
        .await;
    assert!(eventually(WAIT, || read_pids(&pids).len() >= 3).await);
    // By the time a run starts, the setsid children of every earlier run are gone.
    let seen = read_pids(&pids);
    for &pid in &seen[..seen.len() - 1] {
        assert!(
            !process_alive(pid),
            "grandchild {pid} of an earlier run still alive: {:?}",
            procs_with_arg(&mark)
        );
    }
    assert!(
        procs_with_arg(&mark).len() <= 1,
        "{:?}",
        procs_with_arg(&mark)
    );
    let stats = telemetry.probe("leaver");
    assert!(
        stats
            .orphans_killed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    sup.shutdown().await;
    assert!(eventually(WAIT, || procs_with_arg(&mark).is_empty()).await);
}

/// The daemon's janitor: its child named `gg-janitor`.
fn janitor_of(daemon: i32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| {
            ppid_of(pid) == Some(daemon)
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() == "gg-janitor")
        })
}

/// A drop-in whose children escape through `setsid` (directly, and double-forked so that they
/// are re-parented at once) and one that clears its environment.
fn escaping_dropin(probes: &std::path::Path, mark: &str) {
    std::fs::write(
        probes.join("escaper.meta"),
        "version = \"1.0.0\"\nmeasurements: ()\n",
    )
    .unwrap();
    daemon_support::write_script(
        &probes.join("escaper.sh"),
        &format!(
            "#!/bin/sh\nsetsid sleep {mark} </dev/null >/dev/null 2>&1 &\n\
             (setsid sh -c 'exec sleep {mark}' </dev/null >/dev/null 2>&1 &)\n\
             env -i sleep {mark} </dev/null >/dev/null 2>&1 &\n\
             exec sleep 1000\n"
        ),
    );
}

/// Issue 9 class 7: SIGKILL the daemon (no chance to clean up) and, without starting another,
/// everything its probe started is gone within moments: the janitor saw the daemon die.
#[test]
fn grandchildren_of_a_sigkilled_daemon_die_with_it() {
    let _serial = SERIAL.blocking_lock();
    let mark = marker(5);
    let _guard = MarkerGuard(mark.clone());
    let mut daemon = daemon_support::Daemon::start(60, "", |probes| escaping_dropin(probes, &mark));
    let found = daemon_support::wait_for(WAIT, || {
        Some(procs_with_arg(&mark)).filter(|p| p.len() >= 3)
    });
    assert!(
        found.is_some(),
        "probe did not start its children: {:?}; log:\n{}",
        procs_with_arg(&mark),
        daemon.log()
    );
    let janitor = janitor_of(daemon.pid());
    assert!(daemon
        .scrape()
        .contains("gala_gopher_self_janitor_running{machine_id=\"test-machine\"} 1"));
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let gone = daemon_support::wait_for(Duration::from_secs(5), || {
        procs_with_arg(&mark).is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "grandchildren of the SIGKILLed daemon survived it: {:?}; janitor {janitor:?}; log:\n{}",
        procs_with_arg(&mark),
        daemon.log()
    );
    let janitor = janitor.expect("the daemon has a gg-janitor child");
    assert!(
        daemon_support::wait_for(WAIT, || (!process_alive(janitor)).then_some(())).is_some(),
        "the janitor outlived its work"
    );
    // Not asserted: its "killed the processes they left" line. Another daemon starting on
    // this host at that moment (stale-instance cleanup) may have killed them first.
}

/// When the janitor is killed with the daemon, the next start still cleans up.
#[test]
fn grandchildren_of_a_sigkilled_daemon_are_killed_at_the_next_start() {
    let _serial = SERIAL.blocking_lock();
    let mark = marker(3);
    let _guard = MarkerGuard(mark.clone());
    let scripts = tempfile::tempdir().unwrap();
    let script = scripts.path().join("escaper.sh");
    daemon_support::write_script(
        &script,
        &format!("#!/bin/sh\nsetsid sleep {mark} </dev/null >/dev/null 2>&1 &\nexec sleep 1000\n"),
    );
    let probe = format!(
        "extend_probes = ( {{ name = \"escaper\"; command = \"{}\"; switch = \"on\"; }} );",
        script.display()
    );
    let first = daemon_support::Daemon::start(60, &probe, |_| {});
    let found = daemon_support::wait_for(WAIT, || {
        Some(procs_with_arg(&mark)).filter(|p| !p.is_empty())
    });
    assert!(
        found.is_some(),
        "probe did not start; log:\n{}",
        first.log()
    );
    // The janitor first (it would clean up at once), then the daemon: no chance to clean up
    // (Drop of Daemon kills and reaps it).
    let janitor = janitor_of(first.pid()).expect("the daemon has a gg-janitor child");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(janitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The daemon notices (self-metric at once, one warning when it reaps it) and carries on.
    first.wait_scrape(
        "gala_gopher_self_janitor_running{machine_id=\"test-machine\"} 0",
        WAIT,
    );
    assert!(
        daemon_support::wait_for(WAIT, || first
            .log()
            .contains("janitor process ended early")
            .then_some(()))
        .is_some(),
        "no warning about the janitor's end; log:\n{}",
        first.log()
    );
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !procs_with_arg(&mark).is_empty(),
        "nothing was left to clean up at the next start"
    );

    let second = daemon_support::Daemon::start(60, "", |_| {});
    let gone = daemon_support::wait_for(WAIT, || procs_with_arg(&mark).is_empty().then_some(()));
    assert!(
        gone.is_some(),
        "grandchildren of the killed daemon survived its restart: {:?}; log:\n{}",
        procs_with_arg(&mark),
        second.log()
    );
}
