//! The `page_cache` sub-probe (`io_pagecache`) against real page-cache traffic on a fresh loop
//! device formatted ext4 by the test (nothing else touches it): 100 MiB written, synced,
//! dropped from the cache and read back, compared with the workload and with the kernel's own
//! counters (`/proc/vmstat` `nr_dirtied` for the host; the device's read sectors, `pgpgin`'s
//! per-device counterpart, for the loop disk).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;
/// 100 MiB in 4 KiB pages.
const PAGES: u64 = 25_600;

/// io_pagecache fields after the table name.
mod pc {
    pub const ACCESS: usize = 4;
    pub const BUFFER_DIRTY: usize = 5;
    pub const LOAD: usize = 6;
    pub const PAGE_DIRTY: usize = 7;
}

/// An ext4 file system on a loop device, mounted on a temporary directory; unmounted and
/// detached on drop.
struct Ext4 {
    mnt: tempfile::TempDir,
    dev: LoopDevice,
    _backing: tempfile::TempDir,
}

impl Ext4 {
    fn new() -> Ext4 {
        let backing = tempfile::tempdir().unwrap();
        let img = backing.path().join("ext4.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(512 * MIB as u64)
            .unwrap();
        let dev = LoopDevice::attach(&img).expect("loop device");
        run("mkfs.ext4", &["-q", "-F", dev.path().to_str().unwrap()]);
        let mnt = tempfile::tempdir().unwrap();
        run(
            "mount",
            &[dev.path().to_str().unwrap(), mnt.path().to_str().unwrap()],
        );
        Ext4 {
            mnt,
            dev,
            _backing: backing,
        }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt.path()).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vmstat(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /proc/vmstat"))
}

/// The io_pagecache totals of the loop disk in the next period's records.
fn totals(probe: &mut ProbeRun, dev: &LoopDevice) -> [u64; 4] {
    snapshot(probe, dev).0
}

/// Totals of the next period: the loop disk's, every disk's, and `/proc/vmstat` read right
/// after the period was printed (the probe read its maps just before).
fn snapshot(probe: &mut ProbeRun, dev: &LoopDevice) -> ([u64; 4], [u64; 4], String) {
    let rows = probe.next_period(WAIT);
    let vm = std::fs::read_to_string("/proc/vmstat").unwrap();
    let mut own = [0; 4];
    let mut all = [0; 4];
    for l in rows.iter().filter(|l| l.starts_with("|io_pagecache|")) {
        let f = fields(l).1;
        let v = [pc::ACCESS, pc::BUFFER_DIRTY, pc::LOAD, pc::PAGE_DIRTY].map(|i| num(f[i]));
        for i in 0..4 {
            all[i] += v[i];
        }
        if is_disk_row(l, "io_pagecache", dev.major, dev.minor) {
            own = v;
        }
    }
    (own, all, vm)
}

/// Tests that write 100 MiB one at a time (the vmstat comparison counts the whole host).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sectors read from the device since it was attached (`/sys/block/<dev>/stat`, field 3).
fn sectors_read(dev: &LoopDevice) -> u64 {
    let stat = std::fs::read_to_string(format!("/sys/block/{}/stat", dev.name())).unwrap();
    num(stat.split_whitespace().nth(2).expect("sectors read"))
}

fn write_file(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; MIB];
    for _ in 0..100 {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
}

fn within(got: u64, expected: u64, pct: u64) -> bool {
    got.abs_diff(expected) * 100 <= expected * pct
}

#[test]
fn page_cache_counts_match_the_workload_and_vmstat() {
    let _serial = serial();
    let fs = Ext4::new();
    // io_pagecache (8) and io_count (4), for the bytes written back.
    let mut probe = ProbeRun::start(&["-P", "12", "-t", "1"]);
    probe.wait_attached(WAIT);
    let file = fs.mnt.path().join("data");

    // 100 MiB written and synced: 25,600 pages dirtied on the loop disk; on all disks as many
    // as the kernel's own count says over the same window.
    let (before, all0, vm0) = snapshot(&mut probe, &fs.dev);
    write_file(&file);
    let (after, all1, vm1) = snapshot(&mut probe, &fs.dev);
    let page_dirty = after[3] - before[3];
    assert!(
        within(page_dirty, PAGES, 5),
        "mark_page_dirty {page_dirty}, {PAGES} pages written"
    );
    let (ours, kernel) = (
        all1[3] - all0[3],
        vmstat(&vm1, "nr_dirtied") - vmstat(&vm0, "nr_dirtied"),
    );
    assert!(
        within(ours, kernel, 5),
        "mark_page_dirty {ours} on all disks, /proc/vmstat nr_dirtied +{kernel}"
    );
    assert!(after[1] > before[1], "ext4 metadata buffers dirtied");
    // Written back by the fsync: the disk's write_bytes since the probe started (running
    // total: the 100 MiB plus ext4's journal and metadata).
    let rows = probe.next_period(WAIT);
    let count = rows
        .iter()
        .find(|l| is_disk_row(l, "io_count", fs.dev.major, fs.dev.minor))
        .unwrap_or_else(|| panic!("no io_count row of {}: {rows:#?}", fs.dev.name()));
    let written = num(fields(count).1[5]);
    assert!(
        (100 * MIB as u64..=110 * MIB as u64).contains(&written),
        "write_bytes {written} after 100 MiB written and synced: {count}"
    );

    // Dropped from the cache (the file's pages only; they are clean after the fsync) and read
    // back: 25,600 pages loaded and looked up.
    {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&file).unwrap();
        // SAFETY: fadvise on an open fd.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
    }
    let (before, _, _) = snapshot(&mut probe, &fs.dev);
    let sectors0 = sectors_read(&fs.dev);
    let mut buf = vec![0u8; MIB];
    let mut f = std::fs::File::open(&file).unwrap();
    let mut read = 0;
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        read += n;
    }
    assert_eq!(read, 100 * MIB);
    let read_pages = (sectors_read(&fs.dev) - sectors0) / 8;
    let (after, _, _) = snapshot(&mut probe, &fs.dev);
    let load = after[2] - before[2];
    let access = after[0] - before[0];
    assert!(
        within(load, PAGES, 5),
        "load_page_cache {load}, {PAGES} pages read"
    );
    // What pgpgin counts for the whole host (which on a busy host also adds pages that writes
    // allocate, so it is compared per device): pages the kernel read from the loop device,
    // file pages and the few metadata blocks the probe does not count (they are cached in the
    // block device's own mapping).
    assert!(
        within(load, read_pages, 5),
        "load_page_cache {load} on the loop disk, {read_pages} pages read from it (/sys/block/{}/stat)",
        fs.dev.name()
    );
    assert!(
        (PAGES..=2 * PAGES).contains(&access),
        "access_pagecache {access} for {PAGES} pages read"
    );
    let _ = probe.stop();
}

/// The sub-probe's programs run only while it is on: off by default, on and off again by a
/// control line without a restart.
#[test]
fn page_cache_follows_the_sub_probe() {
    let _serial = serial();
    let fs = Ext4::new();
    let mut probe = ProbeRun::start_controlled(&["-t", "1"]);
    probe.wait_attached(WAIT);
    write_file(&fs.mnt.path().join("off"));
    let rows = probe.next_period(WAIT);
    assert!(
        !rows.iter().any(|l| l.starts_with("|io_pagecache|")),
        "no io_pagecache by default: {rows:#?}"
    );

    probe.send(r#"{"v":1,"probe_bits":15}"#);
    probe.wait_stderr("io_pagecache", WAIT);
    let before = totals(&mut probe, &fs.dev);
    write_file(&fs.mnt.path().join("on"));
    let after = totals(&mut probe, &fs.dev);
    assert!(
        within(after[3] - before[3], PAGES, 5),
        "{before:?} {after:?}"
    );

    probe.send(r#"{"v":1,"probe_bits":7}"#);
    probe.wait_stderr("tables io_latency, io_count, io_err", WAIT);
    // Detached: nothing counted. (Printed again when it comes back on, from the same totals.)
    write_file(&fs.mnt.path().join("off2"));
    probe.send(r#"{"v":1,"probe_bits":15}"#);
    probe.wait_stderr("-P 0xf", WAIT);
    let again = totals(&mut probe, &fs.dev);
    assert!(
        again[3] - after[3] < PAGES / 10,
        "counted while off: {after:?} -> {again:?}"
    );
    let _ = probe.stop();
}
