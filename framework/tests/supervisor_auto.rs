//! `switch = auto`: a probe starts only once its start check passes.

mod supervisor_support;

use std::sync::Arc;
use std::time::Duration;

use gala_gopher::supervisor::{StartCheck, Supervisor, Switch};
use gala_gopher::telemetry::{ProbeState, Telemetry};
use supervisor_support::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn process_regex_probe_starts_only_when_a_matching_process_exists() {
    let dir = tempfile::tempdir().unwrap();
    // A uniquely named copy of sleep gives a comm no other process has.
    let comm = format!("ggauto{}", std::process::id());
    let marker_bin = dir.path().join(&comm);
    std::fs::copy("/bin/sleep", &marker_bin).unwrap();
    let script = write_script(dir.path(), "autop", "echo started\nexec sleep 1000");

    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    let mut s = spec("autop", &[script.to_str().unwrap()]);
    s.switch = Switch::Auto;
    s.start_check = Some(StartCheck::ProcessRegex(
        regex::Regex::new(&format!("^{comm}$")).unwrap(),
    ));
    sup.reconcile(vec![s]).await;

    // Several recheck periods (100 ms) without a match: not started.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.prepares("autop").is_empty());
    assert_eq!(telemetry.probe("autop").state(), ProbeState::Stopped);

    let mut marker = std::process::Command::new(&marker_bin)
        .arg("1000")
        .spawn()
        .unwrap();
    let started = eventually(WAIT, || sink.lines("autop") == ["started"]).await;
    let _ = marker.kill();
    let _ = marker.wait();
    assert!(
        started,
        "auto probe did not start after its process appeared"
    );
    assert_eq!(telemetry.probe("autop").state(), ProbeState::Running);
    sup.shutdown().await;
}

#[tokio::test]
async fn shell_count_probe_starts_when_count_is_positive() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("flag");
    let script = write_script(dir.path(), "countp", "echo started\nexec sleep 1000");
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    let mut s = spec("countp", &[script.to_str().unwrap()]);
    s.switch = Switch::Auto;
    // Like upstream's `ps -ef | grep x | grep -v grep | wc -l`: a pipeline printing a count.
    s.start_check = Some(StartCheck::ShellCount(format!(
        "ls {} 2>/dev/null | wc -l",
        flag.display()
    )));
    sup.reconcile(vec![s]).await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.prepares("countp").is_empty());

    std::fs::write(&flag, "").unwrap();
    assert!(eventually(WAIT, || sink.lines("countp") == ["started"]).await);
    sup.shutdown().await;
}

#[tokio::test]
async fn auto_without_check_never_starts() {
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    let mut s = spec("nocheck", &["/bin/true"]);
    s.switch = Switch::Auto;
    sup.reconcile(vec![s]).await;
    let stats = telemetry.probe("nocheck");
    assert!(eventually(WAIT, || stats.last_error().is_some()).await);
    assert_eq!(stats.state(), ProbeState::Stopped);
    assert_eq!(
        stats.last_error().as_deref(),
        Some("switch auto without start_check")
    );
    assert!(sink.prepares("nocheck").is_empty());
    sup.shutdown().await;
}
