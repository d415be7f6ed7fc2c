//! Probe lifecycle with real child processes: restart with backoff, exit classification,
//! prepare failures, reconcile add/change/remove.

mod supervisor_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gala_gopher::supervisor::{Supervisor, SupervisorOptions, Switch};
use gala_gopher::telemetry::{ProbeState, Telemetry};
use supervisor_support::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn exiting_probe_is_restarted_with_growing_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "flaky", "echo '[ERROR] giving up' >&2\nexit 1");
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let opts = SupervisorOptions {
        grace: Duration::from_secs(1),
        ..SupervisorOptions::default()
    };
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), opts);
    sup.reconcile(vec![spec("flaky", &[script.to_str().unwrap()])])
        .await;

    assert!(eventually(WAIT, || sink.prepares("flaky").len() >= 3).await);
    let starts = sink.prepares("flaky");
    let gap1 = starts[1] - starts[0];
    let gap2 = starts[2] - starts[1];
    assert!(gap1 >= Duration::from_secs(1), "first gap {gap1:?}");
    assert!(gap2 >= Duration::from_secs(2), "second gap {gap2:?}");

    let stats = telemetry.probe("flaky");
    assert!(stats.restarts.load(Ordering::Relaxed) >= 2);
    assert!(eventually(WAIT, || stats.state() == ProbeState::Backoff).await);
    assert_eq!(
        stats.last_error().as_deref(),
        Some("exited with status 1: giving up")
    );
    assert!(!stats.up.load(Ordering::Relaxed));
    assert_eq!(stats.pid.load(Ordering::Relaxed), 0);
    sup.shutdown().await;
}

#[tokio::test]
async fn unsupported_exit_is_failed_with_reason() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(
        dir.path(),
        "old_kernel",
        "echo '[INFO] probing' >&2\necho '[ERROR] unsupported: tracepoint x' >&2\nexit 3",
    );
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let opts = SupervisorOptions {
        backoff_max: Duration::from_secs(3600),
        ..fast_options()
    };
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), opts);
    sup.reconcile(vec![spec("old_kernel", &[script.to_str().unwrap()])])
        .await;
    let stats = telemetry.probe("old_kernel");
    assert!(eventually(WAIT, || stats.state() == ProbeState::Failed).await);
    assert_eq!(
        stats.last_error().as_deref(),
        Some("unsupported: tracepoint x")
    );
    assert_eq!(stats.log_lines.load(Ordering::Relaxed), 2);
    assert_eq!(sink.prepares("old_kernel").len(), 1);
    sup.shutdown().await;
    assert_eq!(stats.state(), ProbeState::Stopped);
}

#[tokio::test]
async fn killed_probe_reports_signal() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "suicide", "kill -9 $$");
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    sup.reconcile(vec![spec("suicide", &[script.to_str().unwrap()])])
        .await;
    let stats = telemetry.probe("suicide");
    assert!(
        eventually(WAIT, || stats.last_error().as_deref()
            == Some("killed by signal 9"))
        .await,
        "{:?}",
        stats.last_error()
    );
    sup.shutdown().await;
}

#[tokio::test]
async fn prepare_error_keeps_probe_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let script = write_script(dir.path(), "p", &format!("touch {}", marker.display()));
    let sink = TestSink::new();
    *sink.fail_prepare.lock().unwrap() = Some("p.meta:3: unknown type".to_string());
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    sup.reconcile(vec![spec("p", &[script.to_str().unwrap()])])
        .await;
    let stats = telemetry.probe("p");
    assert!(eventually(WAIT, || stats.state() == ProbeState::Failed).await);
    assert_eq!(
        stats.last_error().as_deref(),
        Some("p.meta:3: unknown type")
    );
    assert!(!marker.exists());

    // Once prepare succeeds, the retry (at backoff_max) starts it.
    *sink.fail_prepare.lock().unwrap() = None;
    assert!(eventually(WAIT, || marker.exists()).await);
    sup.shutdown().await;
}

#[tokio::test]
async fn missing_executable_is_failed() {
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    sup.reconcile(vec![spec("ghost", &["/nonexistent/ghost-probe"])])
        .await;
    let stats = telemetry.probe("ghost");
    assert!(eventually(WAIT, || stats.state() == ProbeState::Failed).await);
    let err = stats.last_error().unwrap();
    assert!(
        err.starts_with("cannot start /nonexistent/ghost-probe:"),
        "{err}"
    );
    sup.shutdown().await;
}

#[tokio::test]
async fn stdout_reaches_sink_and_env_is_passed() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(
        dir.path(),
        "envy",
        "echo \"|t|$FROM_SPEC|$FROM_OPTS|$BOTH|\"\nexec sleep 1000",
    );
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let opts = SupervisorOptions {
        env: vec![
            ("FROM_OPTS".into(), "o".into()),
            ("BOTH".into(), "opts-win".into()),
        ],
        ..fast_options()
    };
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), opts);
    let mut s = spec("envy", &[script.to_str().unwrap()]);
    s.env = vec![
        ("FROM_SPEC".into(), "s".into()),
        ("BOTH".into(), "spec".into()),
    ];
    sup.reconcile(vec![s]).await;
    assert!(eventually(WAIT, || !sink.lines("envy").is_empty()).await);
    assert_eq!(sink.lines("envy"), vec!["|t|s|o|opts-win|".to_string()]);
    let stats = sup.stats("envy").unwrap();
    assert_eq!(stats.state(), ProbeState::Running);
    assert!(stats.up.load(Ordering::Relaxed));
    let pid = stats.pid.load(Ordering::Relaxed) as i32;
    assert!(pid_exists(pid));
    sup.shutdown().await;
    assert!(!pid_exists(pid));
}

#[tokio::test]
async fn reconcile_starts_changes_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "echoer", "echo \"$@\"\nexec sleep 1000");
    let exe = script.to_str().unwrap();
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());

    sup.reconcile(vec![spec("a", &[exe, "one"]), spec("b", &[exe, "b"])])
        .await;
    assert!(
        eventually(WAIT, || sink.lines("a") == ["one"]
            && sink.lines("b") == ["b"])
        .await
    );
    let pid_a = sup.stats("a").unwrap().pid.load(Ordering::Relaxed) as i32;
    let pid_b = sup.stats("b").unwrap().pid.load(Ordering::Relaxed) as i32;

    // Same specs again: nothing restarts.
    sup.reconcile(vec![spec("a", &[exe, "one"]), spec("b", &[exe, "b"])])
        .await;
    assert_eq!(sink.prepares("a").len(), 1);

    // a changes argv, b disappears, c is switched off.
    let mut c = spec("c", &[exe, "c"]);
    c.switch = Switch::Off;
    sup.reconcile(vec![spec("a", &[exe, "two"]), c]).await;
    assert!(!pid_exists(pid_a), "old a still running");
    assert!(!pid_exists(pid_b), "removed b still running");
    assert!(sink.retired("b"));
    assert!(!sink.retired("a"));
    assert!(sup.stats("b").is_none());
    assert_eq!(sup.names(), vec!["a".to_string(), "c".to_string()]);
    assert!(eventually(WAIT, || sink.lines("a") == ["one", "two"]).await);
    assert_eq!(sup.stats("a").unwrap().restarts.load(Ordering::Relaxed), 0);
    assert_eq!(sup.stats("c").unwrap().state(), ProbeState::Stopped);
    assert!(sink.prepares("c").is_empty());

    // restart() of an unchanged probe runs it again.
    assert!(sup.restart("a").await);
    assert!(eventually(WAIT, || sink.lines("a") == ["one", "two", "two"]).await);
    assert!(!sup.restart("nope").await);

    sup.shutdown().await;
    // After shutdown nothing starts any more.
    sup.reconcile(vec![spec("d", &[exe, "d"])]).await;
    assert!(sup.stats("d").is_none());
}

#[tokio::test]
async fn missing_shebang_interpreter_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_file(
        dir.path(),
        "needs_interp",
        "#!/usr/bin/nosuch-interpreter-9 -x\necho hi\n",
        true,
    );
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    sup.reconcile(vec![spec("needs_interp", &[script.to_str().unwrap()])])
        .await;
    let stats = telemetry.probe("needs_interp");
    assert!(eventually(WAIT, || stats.state() == ProbeState::Failed).await);
    let err = stats.last_error().unwrap();
    let want = format!(
        "interpreter /usr/bin/nosuch-interpreter-9 (from #! of {}) not found",
        script.display()
    );
    assert!(err.contains(&want), "{err}");
    sup.shutdown().await;
}

#[tokio::test]
async fn non_executable_file_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_file(dir.path(), "plain", "#!/bin/sh\necho hi\n", false);
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    sup.reconcile(vec![spec("plain", &[script.to_str().unwrap()])])
        .await;
    let stats = telemetry.probe("plain");
    assert!(eventually(WAIT, || stats.state() == ProbeState::Failed).await);
    let err = stats.last_error().unwrap();
    assert!(err.contains("is not executable (mode 0644)"), "{err}");
    sup.shutdown().await;
}

#[tokio::test]
async fn closed_stdout_of_a_running_probe_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(
        dir.path(),
        "mute",
        "echo '|t|1|'\nexec >&-\nexec sleep 1000",
    );
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    sup.reconcile(vec![spec("mute", &[script.to_str().unwrap()])])
        .await;
    let stats = telemetry.probe("mute");
    assert!(
        eventually(WAIT, || stats.last_error().is_some()).await,
        "no hint that stdout is closed"
    );
    assert_eq!(stats.state(), ProbeState::Running);
    let err = stats.last_error().unwrap();
    assert!(err.contains("stdout closed"), "{err}");
    assert!(err.contains("still running"), "{err}");
    sup.shutdown().await;
}
