//! A probe whose required tracepoint is missing reports it and exits with code 3.

use std::process::Command;

#[test]
fn missing_tracepoint_is_reported_as_unsupported() {
    let out = Command::new(env!("CARGO_BIN_EXE_ioprobe"))
        .args(["-t", "1"])
        .env("IOPROBE_EXTRA_HOOK", "block:block_no_such_event")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some("[ERROR] unsupported: tracepoint block:block_no_such_event")
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_raw_tracepoint_is_reported_as_unsupported() {
    let out = Command::new(env!("CARGO_BIN_EXE_ioprobe"))
        .env("IOPROBE_EXTRA_HOOK", "raw:no_such_raw_tp")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("[ERROR] unsupported: raw tracepoint no_such_raw_tp"));
}

#[test]
fn bad_flag_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_ioprobe"))
        .args(["-t", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("[ERROR]"));
}
