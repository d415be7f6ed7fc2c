//! Memory stalls through the real probe: a process reading a file much larger than its
//! container's memory limit reclaims page cache in its own context (memcg reclaim), which is
//! the container's mem_reclaim.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);
const LIMIT: u64 = 16 << 20;
const FILE: usize = 96 << 20;

#[test]
fn reading_past_a_memory_limit_is_reclaim_latency() {
    let mut c = FakeContainer::create(0x3e3);
    c.limit_memory(LIMIT);
    let id = c.short_id().to_string();
    // A file outside the page cache: written, synced and dropped by the test (charged to the
    // test's own cgroup until dropped), then read by the container's process.
    let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir on a disk");
    let path = dir.path().join("big.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..FILE / chunk.len() {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    // SAFETY: fadvise on an open fd.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
    drop(f);

    let mut probe = ProbeRun::start(&["-t", "1", "-P", "50"]);
    probe.wait_attached(WAIT);
    let mut cat = Command::new("cat");
    cat.arg(&path).stdout(Stdio::null());
    let status = c.spawn(&mut cat, None).wait().expect("cat");
    assert!(status.success());
    let period = probe.next_period(WAIT);
    let h = row(&period, "sli_mem_container_histogram", &id)
        .unwrap_or_else(|| panic!("no mem histogram row for {id}: {period:#?}"));
    let (count, sum) = h.histogram("mem_reclaim_histo");
    assert!(
        count > 0 && sum > 0,
        "reading {FILE} bytes under a {LIMIT}-byte limit: {count} reclaims, {sum} ns"
    );
    let gauge = row(&period, "sli_mem_container_gauge", &id).unwrap();
    assert_eq!(gauge.get("mem_swapin"), "", "never measured");
    drop(c);
    probe.stop();
}
