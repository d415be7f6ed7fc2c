//! `system_df` under a service's private mount namespace: the probe runs where `/` is remounted
//! read-only (what `ProtectSystem=strict` does) and must still report the host's filesystems
//! as the host sees them. Needs root (to unshare and remount); skipped otherwise.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_system_infos");

/// Runs `system_infos -t 1 --once -P 32 <args>` in a new, private mount namespace whose `/` is
/// remounted read-only. `None` when this test may not do that (not root, no namespaces).
fn run_in_private_ns(args: &[&str]) -> Option<Output> {
    let mut cmd = Command::new(BIN);
    cmd.args(["-t", "1", "--once", "-P", "32"]).args(args);
    // SAFETY: between fork and exec only async-signal-safe system calls, with static C
    // strings: nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            let none = std::ptr::null();
            check(libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                std::ptr::null(),
            ))
        });
    }
    match cmd.output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "exit {:?}, stderr {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            Some(out)
        }
        Err(e) => {
            eprintln!("skipped: cannot run the probe in a private read-only namespace: {e}");
            None
        }
    }
}

/// `MountStatus` of the `/` row of `system_df` (`MountOn` first, `MountStatus` second).
fn root_status(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("|system_df|/|"))
        .and_then(|rest| rest.split('|').next())
        .unwrap_or_else(|| panic!("no system_df row for /: {stdout}"))
        .to_string()
}

/// Whether `/` is mounted read-write in this test's own namespace (`/proc/self/mountinfo`).
fn host_root_is_rw() -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = system_infos::fs::parse_mountinfo(&info)
        .into_iter()
        .rfind(|m| m.target == "/")
        .expect("/ mounted");
    !root.read_only
}

#[test]
fn system_df_reports_the_host_namespace_not_the_private_one() {
    if !host_root_is_rw() {
        eprintln!("skipped: / is read-only here already");
        return;
    }
    // This test process stands for the host's init: it stays in the original namespace, and
    // the probe (same user) may read its /proc/<pid>/root even where PID 1's is denied.
    let me = std::process::id().to_string();
    let Some(host) = run_in_private_ns(&["--mount-ns-pid", &me]) else {
        return;
    };
    assert_eq!(root_status(&host), "RW", "the host's / is read-write");
    let stderr = String::from_utf8_lossy(&host.stderr);
    assert!(!stderr.contains("[WARN]"), "{stderr}");

    // Control: the probe's own view of that namespace says read-only, so the setup works.
    let own = run_in_private_ns(&["--mounts", "/proc/self/mounts"]).expect("ran once already");
    assert_eq!(
        root_status(&own),
        "RO",
        "the private namespace's / is read-only"
    );
}

#[test]
fn pid_1_is_used_when_readable_else_the_own_namespace_after_one_warning() {
    if !host_root_is_rw() {
        eprintln!("skipped: / is read-only here already");
        return;
    }
    let Some(out) = run_in_private_ns(&[]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("mount namespace"))
        .collect();
    // The probe runs as this test's user: it can read /proc/1/root exactly when we can.
    let pid1_root_readable = std::fs::metadata("/proc/1/root").is_ok();
    let pid1_same_ns =
        std::fs::read_link("/proc/1/ns/mnt").ok() == std::fs::read_link("/proc/self/ns/mnt").ok();
    if pid1_root_readable {
        assert!(warnings.is_empty(), "{stderr}");
        if pid1_same_ns {
            assert_eq!(root_status(&out), "RW");
        }
    } else {
        assert_eq!(warnings.len(), 1, "exactly one warning: {stderr}");
        assert!(warnings[0].starts_with("[WARN]"), "{stderr}");
        assert_eq!(
            root_status(&out),
            "RO",
            "the fallback is the probe's own view"
        );
    }
}
