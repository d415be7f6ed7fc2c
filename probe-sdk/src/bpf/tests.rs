//! Feature probing against the running kernel (tests run as root on the project's kernel).

use std::path::Path;
use std::process::Command;

use super::*;

/// Independent oracle for kprobe support: the kernel exports `register_kprobe` iff
/// CONFIG_KPROBES is set.
fn kernel_has_kprobes() -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("register_kprobe"))
}

#[test]
fn classic_tracepoints() {
    assert!(tracepoint_exists("block", "block_rq_issue"));
    assert!(tracepoint_exists("block", "block_rq_complete"));
    assert!(tracepoint_exists("syscalls", "sys_enter_openat"));
    assert!(!tracepoint_exists("block", "block_rq_no_such_event"));
    assert!(!tracepoint_exists("no_such_group", "block_rq_issue"));
    // ensure_tracefs leaves tracefs reachable where libbpf looks.
    let root = ensure_tracefs().unwrap();
    assert_eq!(tracefs_root(), Some(root.clone()));
    assert!(root.join("events/block/block_rq_issue/id").is_file());
}

#[test]
fn raw_tracepoints() {
    assert!(raw_tracepoint_exists("block_rq_issue"));
    assert!(raw_tracepoint_exists("sys_enter"));
    // Syscall events are ftrace events, not raw tracepoints.
    assert!(!raw_tracepoint_exists("sys_enter_openat"));
    assert!(!raw_tracepoint_exists("block_rq_no_such_event"));
}

#[test]
fn kprobes_match_kernel_config() {
    assert_eq!(kprobes_available(), kernel_has_kprobes());
    assert_eq!(kprobe_autoload("test kprobe"), kernel_has_kprobes());
}

#[test]
fn missing_hooks_are_listed_in_order() {
    let hooks = [
        Hook::tracepoint("block", "block_rq_issue"),
        Hook::tracepoint("block", "no_such_event"),
        Hook::raw_tracepoint("block_rq_complete"),
        Hook::raw_tracepoint("no_such_raw_tp"),
        Hook::Kprobes,
    ];
    let missing: Vec<String> = missing_hooks(&hooks)
        .iter()
        .map(|h| h.to_string())
        .collect();
    let mut expected = vec![
        "tracepoint block:no_such_event".to_string(),
        "raw tracepoint no_such_raw_tp".to_string(),
    ];
    if !kernel_has_kprobes() {
        expected.push("kprobes".to_string());
    }
    assert_eq!(missing, expected);
}

/// Runs [`tracefs_child_mounts_tracefs`] in a private mount namespace where tracefs (and
/// debugfs) are unmounted, so mounting can be tested without touching the host's mounts.
#[test]
fn mounts_tracefs_when_missing() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(&exe)
        .args([
            "--exact",
            "bpf::tests::tracefs_child_mounts_tracefs",
            "--ignored",
            "--test-threads=1",
        ])
        .env("GG_TRACEFS_CHILD", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

fn umount_all(path: &str) {
    let c = std::ffi::CString::new(path).unwrap();
    // Stacked mounts need one umount each; stop at the first failure (nothing mounted).
    // SAFETY: valid NUL-terminated path.
    while unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {}
}

#[test]
#[ignore = "run by mounts_tracefs_when_missing inside a private mount namespace"]
fn tracefs_child_mounts_tracefs() {
    assert_eq!(std::env::var("GG_TRACEFS_CHILD").as_deref(), Ok("1"));
    umount_all("/sys/kernel/debug/tracing");
    umount_all("/sys/kernel/debug");
    umount_all("/sys/kernel/tracing");
    assert!(!Path::new("/sys/kernel/tracing/events").exists());
    assert_eq!(tracefs_root(), None);
    let root = ensure_tracefs().unwrap();
    assert_eq!(root, Path::new("/sys/kernel/tracing"));
    assert!(tracepoint_exists("block", "block_rq_issue"));
}
