//! The `period_loop` example (a minimal Rust probe) stops cleanly on a termination signal and
//! rejects bad flags with exit status 2.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Examples are built next to the test binaries' `deps` directory by `cargo test`.
fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples").join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// Waits for exit with a generous bound so a broken probe fails the test instead of hanging it.
fn wait_bounded(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("probe did not exit after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stops_cleanly_on(signal: libc::c_int) {
    let mut child = Command::new(example_bin("period_loop"))
        .args(["-t", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // The first record is written after the handlers are installed.
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "|period_loop|tick|1|\n");
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(0), "status {status:?}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("[INFO] started, period 1s\n"), "{err}");
    assert!(err.contains("[INFO] terminated after "), "{err}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    for line in rest.lines() {
        assert!(line.starts_with("|period_loop|tick|"), "{line}");
    }
}

#[test]
fn exits_zero_on_sigterm() {
    stops_cleanly_on(libc::SIGTERM);
}

#[test]
fn exits_zero_on_sigint() {
    stops_cleanly_on(libc::SIGINT);
}

#[test]
fn exits_zero_on_sighup() {
    stops_cleanly_on(libc::SIGHUP);
}

#[test]
fn bad_flag_value_exits_2_with_message_and_usage() {
    let out = Command::new(example_bin("period_loop"))
        .args(["-t", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("[ERROR] -t: invalid value \"0\", expected 1..=3600\nusage:"),
        "{err}"
    );
}

#[test]
fn exits_zero_when_the_reader_goes_away() {
    let mut child = Command::new(example_bin("period_loop"))
        .args(["-t", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    drop(stdout);
    // The next period's write hits EPIPE; the probe must treat that as a clean stop.
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(0), "status {status:?}");
}
