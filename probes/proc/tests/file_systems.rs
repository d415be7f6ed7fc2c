//! `proc_ext4`, `proc_overlay`, `proc_tmpfs` (sub-probe `proc_fs`, `-P` bits 32/64/128) on the
//! real kernel: a child reads and writes known files through an ext4 file system on a loop
//! device, an overlay mount on top of it and a tmpfs, all mounted by the test (root needed).
//!
//! Fields after tgid and comm: ns_<fs>_read(2) _write(3) _open(4) _flush(5), then the counts
//! <fs>_read_count(6) _write_count(7) _open_count(8) _flush_count(9).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Probe, Record, Workload};

const ATTACH: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(15);
/// Files per file system.
const N: u64 = 8;
const TABLES: [&str; 3] = ["proc_ext4", "proc_overlay", "proc_tmpfs"];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ext4 on a loop device (`mount -o loop`), an overlay whose lower and upper directories are on
/// it, and a tmpfs; unmounted on drop.
struct Mounts {
    base: tempfile::TempDir,
}

impl Mounts {
    fn new() -> Mounts {
        let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let m = Mounts { base };
        let img = m.path("ext4.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(64 << 20))
            .expect("image file");
        run("mkfs.ext4", &["-q", "-F", m.s("ext4.img")]);
        for d in ["ext4", "overlay", "tmpfs"] {
            std::fs::create_dir(m.path(d)).expect("mount point");
        }
        m.mount_ext4();
        for d in ["lower", "upper", "work"] {
            std::fs::create_dir(m.path("ext4").join(d)).expect("overlay dir");
        }
        m.mount_overlay();
        run(
            "mount",
            &["-t", "tmpfs", "-o", "size=16m", "tmpfs", m.s("tmpfs")],
        );
        m
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.base.path().join(rel)
    }

    fn s(&self, rel: &str) -> &'static str {
        Box::leak(
            self.path(rel)
                .to_string_lossy()
                .into_owned()
                .into_boxed_str(),
        )
    }

    fn mount_ext4(&self) {
        run("mount", &["-o", "loop", self.s("ext4.img"), self.s("ext4")]);
    }

    fn mount_overlay(&self) {
        let e = self.path("ext4");
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            e.join("lower").display(),
            e.join("upper").display(),
            e.join("work").display()
        );
        run(
            "mount",
            &["-t", "overlay", "overlay", "-o", &opts, self.s("overlay")],
        );
    }

    /// Unmounts and mounts ext4 and the overlay again: nothing of them stays cached, so the
    /// next opens and reads wait for the disk.
    fn remount_cold(&self) {
        run("umount", &[self.s("overlay")]);
        run("umount", &[self.s("ext4")]);
        self.mount_ext4();
        self.mount_overlay();
    }

    /// The directories the workload works in, in table order (ext4, overlay, tmpfs).
    fn dirs(&self) -> [&'static str; 3] {
        [self.s("ext4/plain"), self.s("overlay"), self.s("tmpfs")]
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for d in ["overlay", "ext4", "tmpfs"] {
            let _ = Command::new("umount").arg(self.path(d)).status();
        }
    }
}

fn latest<'a>(seen: &'a [Record], pid: u32, table: &str) -> &'a Record {
    seen.iter()
        .rev()
        .find(|r| r.table == table && r.tgid() == Some(pid))
        .unwrap_or_else(|| panic!("no {table} row of {pid}: {seen:?}"))
}

/// Longest value of field `i` of `table` over the periods seen.
fn longest(seen: &[Record], pid: u32, table: &str, i: usize) -> u64 {
    seen.iter()
        .filter(|r| r.table == table && r.tgid() == Some(pid))
        .map(|r| r.num(i))
        .max()
        .unwrap_or(0)
}

/// Runs both phases of `fs-ops` under `probe_args` (plus `-f <pid>`), calling `between`
/// after the writes; returns the workload's pid and every record seen.
fn run_workload(m: &Mounts, probe_args: &[&str], between: impl FnOnce()) -> (u32, Vec<Record>) {
    let n = N.to_string();
    let mut args = vec!["fs-ops", n.as_str()];
    args.extend(m.dirs());
    let mut w = Workload::start(&args);
    let pid = w.pid;
    let pid_s = pid.to_string();
    let mut all: Vec<&str> = probe_args.to_vec();
    all.extend(["-f", &pid_s]);
    let mut probe = Probe::start(&all, &[]);
    probe.wait_attached(ATTACH);
    w.go();
    assert_eq!(w.read_line(), "written");
    between();
    w.go();
    assert_eq!(w.read_line(), "read");
    // Two more periods: everything the workload did is in a report.
    probe.next_period(WAIT);
    probe.next_period(WAIT);
    assert!(w.finish().success());
    let (status, stderr, seen) = probe.stop();
    assert!(status.success(), "{stderr}");
    (pid, seen)
}

/// `-S exact`: every syscall is timed whole, so the counts are exact per file system: 2N opens,
/// N writes, N reads, N fsyncs each, and an overlay file's work is the overlay's only (its
/// upper file on ext4 is not counted again).
#[test]
fn exact_timing_counts_every_operation_per_file_system() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let m = Mounts::new();
    let (pid, seen) = run_workload(&m, &["-t", "1", "-P", "224", "-S", "exact"], || {});
    for table in TABLES {
        let r = latest(&seen, pid, table);
        assert_eq!(
            [r.num(6), r.num(7), r.num(8), r.num(9)],
            [N, N, 2 * N, N],
            "{table} read/write/open/flush counts: {r:?}"
        );
        for (i, op) in [(2, "read"), (3, "write"), (4, "open"), (5, "flush")] {
            assert!(
                longest(&seen, pid, table, i) > 0,
                "{table} longest {op}: {seen:?}"
            );
        }
    }
    assert!(
        !seen.iter().any(|r| r.table == "proc_syscall_io"),
        "-P 224 selects the file-system tables only"
    );
}

/// The default plan (no syscall hook): each file system's table shows the time the process was
/// blocked in its operations. After a cold remount the opens and reads of ext4 and overlay
/// wait for the disk, and every fsync there waits for its write; a blocked overlay operation is
/// the overlay's, not ext4's. Nothing is counted beyond the operations done.
#[test]
fn default_timing_splits_blocked_time_by_file_system() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let m = Mounts::new();
    let (pid, seen) = run_workload(&m, &["-t", "1"], || m.remount_cold());
    for table in ["proc_ext4", "proc_overlay"] {
        for (i, op) in [(2, "read"), (4, "open"), (5, "flush")] {
            assert!(
                longest(&seen, pid, table, i) > 0,
                "{table} longest blocked {op}: {seen:?}"
            );
        }
        let r = latest(&seen, pid, table);
        assert!(
            r.num(6) >= 1 && r.num(8) >= 1 && r.num(9) >= N,
            "{table}: reads and opens blocked, every fsync blocked: {r:?}"
        );
    }
    // A blocked stretch is counted once; one operation may block a few times (metadata, then
    // data), never hundreds.
    for table in TABLES {
        let r = latest(&seen, pid, table);
        for i in 6..=9 {
            assert!(r.num(i) <= 16 * N, "{table} field {i}: {r:?}");
        }
    }
    assert!(Path::new(&m.dirs()[0]).exists());
}
