//! Stopping leaves no process behind: TERM-ignoring probes, grandchildren in the probe's group,
//! and double-forked grandchildren in their own session (caught through the subreaper).

mod supervisor_support;

use std::sync::Arc;
use std::time::Duration;

use gala_gopher::supervisor::{become_subreaper, Supervisor};
use gala_gopher::telemetry::Telemetry;
use supervisor_support::*;

const WAIT: Duration = Duration::from_secs(10);

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
