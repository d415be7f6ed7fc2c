//! A probe whose required tracepoint is missing reports it and exits with code 3; a bad flag
//! is a usage error.

use std::process::Command;

#[test]
fn missing_raw_tracepoint_is_reported_as_unsupported() {
    let out = Command::new(env!("CARGO_BIN_EXE_sliprobe"))
        .args(["-t", "1"])
        .env("SLIPROBE_EXTRA_HOOK", "raw:no_such_raw_tp")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some("[ERROR] unsupported: raw tracepoint no_such_raw_tp")
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_flag_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_sliprobe"))
        .args(["-t", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("[ERROR]"));
}

#[test]
fn print_meta_is_the_committed_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_sliprobe"))
        .arg("--print-meta")
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sliprobe.meta")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}
