//! ioprobe against real block I/O: a fresh loop device (nothing else touches it), O_DIRECT
//! reads and writes of known sizes, and the exported records checked for exact values.

mod common;

use std::time::Duration;

use common::*;

const BLOCK: usize = 4096;
const WAIT: Duration = Duration::from_secs(30);

/// io_count fields after the table name.
mod count {
    pub const READ_BYTES: usize = 4;
    pub const WRITE_BYTES: usize = 5;
    pub const DISCARD_BYTES: usize = 6;
    pub const READ: usize = 7;
    pub const WRITE: usize = 8;
    pub const DISCARD: usize = 9;
    pub const FLUSH: usize = 10;
}

/// Offsets of one stage's fields in io_latency (stages req, driver, device).
struct StageFields {
    max: usize,
    last: usize,
    sum: usize,
    jitter: usize,
    count: usize,
    hist: usize,
}

fn stage(i: usize) -> StageFields {
    let base = 4 + 6 * i;
    StageFields {
        max: base,
        last: base + 1,
        sum: base + 2,
        jitter: base + 3,
        count: base + 4,
        hist: base + 5,
    }
}

/// A period gauge: absent (empty) when the period had no request, else a number.
fn period_gauge(s: &str) -> Option<u64> {
    (!s.is_empty()).then(|| num(s))
}

fn backing_file(dir: &tempfile::TempDir, bytes: u64) -> std::path::PathBuf {
    let path = dir.path().join("backing.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(bytes).unwrap();
    path
}

/// Checks one stage's histogram against the count/sum/max fields next to it (histogram in µs,
/// fields in ns as upstream), and the period gauges against each other.
fn check_histogram(f: &[&str], i: usize, expected_count: u64) {
    let st = stage(i);
    let count = num(f[st.count]);
    assert_eq!(count, expected_count, "stage {i} count");
    let max = period_gauge(f[st.max]);
    let (last, jitter) = (period_gauge(f[st.last]), period_gauge(f[st.jitter]));
    // All three are there, or none (no request in the period).
    assert_eq!(max.is_some(), last.is_some(), "stage {i}: {f:?}");
    assert_eq!(max.is_some(), jitter.is_some(), "stage {i}: {f:?}");
    if let (Some(m), Some(l), Some(j)) = (max, last, jitter) {
        assert!(l <= m && j < m, "stage {i}: max {m} last {l} jitter {j}");
    }
    let tokens: Vec<u64> = f[st.hist].split(' ').map(num).collect();
    let n = tokens[0] as usize;
    assert_eq!(n, 33);
    assert_eq!(tokens.len(), 1 + 2 * n + 2);
    let counts: Vec<u64> = tokens[1..1 + 2 * n].chunks(2).map(|c| c[1]).collect();
    let bounds: Vec<u64> = tokens[1..1 + 2 * n].chunks(2).map(|c| c[0]).collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {counts:?}"
    );
    assert!(
        bounds.windows(2).all(|w| w[0] * 2 == w[1]),
        "log2 bounds: {bounds:?}"
    );
    assert_eq!(*counts.last().unwrap(), count, "histogram total = count");
    assert_eq!(
        tokens[1 + 2 * n],
        num(f[st.sum]) / 1000,
        "histogram sum (us) = sum field (ns)"
    );
    assert_eq!(
        tokens[2 + 2 * n],
        max.unwrap_or(0) / 1000,
        "histogram max (us) = max field (ns)"
    );
    if count > 0 {
        // The period maximum falls below the bound of the highest non-empty bucket.
        let top = counts.iter().position(|&c| c == count).unwrap();
        assert!(
            max.unwrap_or(0) / 1000 < bounds[top],
            "max {max:?} ns vs bucket bound {} us",
            bounds[top]
        );
    }
}

#[test]
fn direct_io_on_a_loop_device_is_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let lo = LoopDevice::attach(&backing_file(&dir, 16 << 20)).unwrap();
    lo.set_scheduler("none");
    let (maj, min) = (lo.major, lo.minor);

    let mut probe = ProbeRun::start(&["-t", "1"]);
    probe.wait_attached(WAIT);

    // Phase 1, no I/O scheduler: requests go straight to the driver (no insert).
    let dev = lo.open_direct();
    let wbuf = AlignedBuf::new(BLOCK, 0xa5);
    let mut rbuf = AlignedBuf::new(BLOCK, 0);
    assert_eq!(direct_writes(&dev, &wbuf, 0, 64), 64);
    direct_reads(&dev, &mut rbuf, 0, 32);
    assert!(rbuf.as_slice().iter().all(|&b| b == 0xa5));

    let rows = probe.next_period(WAIT);
    let lost = lost_events(&rows);
    let f = disk_row(&rows, "io_count", maj, min);
    assert_eq!(f[2], lo.name(), "blk_name");
    assert_eq!(f[3], lo.name(), "disk_name");
    assert_counted("writes", num(f[count::WRITE]), 64, lost);
    assert_counted("reads", num(f[count::READ]), 32, lost);
    assert_eq!(
        num(f[count::WRITE_BYTES]),
        num(f[count::WRITE]) * BLOCK as u64
    );
    assert_eq!(
        num(f[count::READ_BYTES]),
        num(f[count::READ]) * BLOCK as u64
    );
    assert_eq!(num(f[count::DISCARD]), 0);
    assert_eq!(num(f[count::DISCARD_BYTES]), 0);
    assert_eq!(num(f[count::FLUSH]), 0);
    let ops1 = num(f[count::WRITE]) + num(f[count::READ]);

    let f = disk_row(&rows, "io_latency", maj, min);
    check_histogram(&f, 0, ops1); // req
                                  // driver: from the allocation time the kernel keeps for I/O statistics (nothing was
                                  // inserted without a scheduler).
    check_histogram(&f, 1, ops1);
    check_histogram(&f, 2, ops1); // device
                                  // Every request's latency is its driver part plus its device part.
    assert_eq!(
        num(f[stage(0).sum]),
        num(f[stage(1).sum]) + num(f[stage(2).sum])
    );

    // Phase 2, mq-deadline: every request is inserted, then issued.
    lo.set_scheduler("mq-deadline");
    assert_eq!(direct_writes(&dev, &wbuf, 64, 16), 16);
    dev.sync_all().unwrap();
    let rows = probe.next_period(WAIT);
    let lost = lost_events(&rows);
    let f = disk_row(&rows, "io_count", maj, min);
    assert_counted("writes", num(f[count::WRITE]), 80, lost);
    assert_eq!(
        num(f[count::WRITE_BYTES]),
        num(f[count::WRITE]) * BLOCK as u64
    );
    // fsync issues exactly one flush if the device has a volatile write cache.
    let cache =
        std::fs::read_to_string(format!("/sys/block/{}/queue/write_cache", lo.name())).unwrap();
    let flushes = num(f[count::FLUSH]);
    assert_counted(
        "flushes",
        flushes,
        u64::from(cache.starts_with("write back")),
        lost,
    );
    let ops2 = num(f[count::WRITE]) + num(f[count::READ]) - ops1;
    let f = disk_row(&rows, "io_latency", maj, min);
    check_histogram(&f, 0, ops1 + ops2 + flushes);
    check_histogram(&f, 1, ops1 + ops2 + flushes);
    check_histogram(&f, 2, ops1 + ops2 + flushes);
    assert_eq!(
        num(disk_row(&rows, "io_count", maj, min)[count::DISCARD]),
        0
    );
    let bpf_stats = rows
        .iter()
        .find(|l| l.starts_with("|io_bpf_stats|io|"))
        .unwrap();
    assert_eq!(num(fields(bpf_stats).1[3]), 0, "map full");
    assert_eq!(probe.stop(), Some(0));
}

#[test]
fn an_idle_disk_keeps_being_reported_with_unchanged_totals() {
    // Per-period fields are running totals whose change the daemon exports: a disk must be
    // written every period, also without I/O, for that change to go back to 0; its period
    // gauges (max, last, jitter) are then absent rather than stale.
    let dir = tempfile::tempdir().unwrap();
    let lo = LoopDevice::attach(&backing_file(&dir, 4 << 20)).unwrap();
    let (maj, min) = (lo.major, lo.minor);
    let mut probe = ProbeRun::start(&["-t", "1"]);
    probe.wait_attached(WAIT);
    let dev = lo.open_direct();
    let wbuf = AlignedBuf::new(BLOCK, 0x3c);
    assert_eq!(direct_writes(&dev, &wbuf, 0, 8), 8);
    let first = probe.next_period(WAIT);
    let writes = num(disk_row(&first, "io_count", maj, min)[count::WRITE]);
    assert!(writes > 0);
    for i in 0..3 {
        let rows = probe.next_period(WAIT);
        assert_eq!(
            disk_row(&rows, "io_count", maj, min),
            disk_row(&first, "io_count", maj, min),
            "period {i}: io_count unchanged"
        );
        let (then, now) = (
            disk_row(&first, "io_latency", maj, min),
            disk_row(&rows, "io_latency", maj, min),
        );
        for s in 0..3 {
            let st = stage(s);
            for (what, at) in [("sum", st.sum), ("count", st.count), ("histogram", st.hist)] {
                assert_eq!(now[at], then[at], "period {i}, stage {s}: {what}");
            }
            for (what, at) in [("max", st.max), ("last", st.last), ("jitter", st.jitter)] {
                assert_eq!(
                    now[at], "",
                    "period {i}, stage {s}: {what} of an idle period"
                );
            }
        }
    }
    assert_eq!(probe.stop(), Some(0));
}

/// A tmpfs of `size` mounted on a temporary directory, unmounted on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let target = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
        let opts = std::ffi::CString::new(format!("size={size}")).unwrap();
        // SAFETY: valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        SmallTmpfs { dir }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.dir.path().to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn write_errors_are_counted() {
    // The loop device is 8 MiB, its backing file lives on a 1 MiB tmpfs: writes past what
    // the tmpfs can hold fail in the loop driver (ENOSPC) and complete with an error.
    let fs = SmallTmpfs::mount("1m");
    let path = fs.dir.path().join("backing.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let lo = LoopDevice::attach(&path).unwrap();
    let (maj, min) = (lo.major, lo.minor);

    let mut probe = ProbeRun::start(&["-t", "1"]);
    probe.wait_attached(WAIT);
    let dev = lo.open_direct();
    let buf = AlignedBuf::new(BLOCK, 0x5a);
    let total = 512;
    let ok = direct_writes(&dev, &buf, 0, total);
    assert!(ok > 0 && ok < total, "{ok} of {total} writes succeeded");

    // An ERROR event for the disk in the period the errors happened (not consumed yet: no
    // period was read since the probe started).
    let id = format!("|event|block|{maj}_{min}|err_count|ERROR|17|");
    let event = probe.wait_line(WAIT, |l| l.starts_with(&id));
    assert!(
        event.contains(&format!("occured on Block({}", lo.name())),
        "{event}"
    );

    let rows = probe.next_period(WAIT);
    let lost = lost_events(&rows);
    let f = disk_row(&rows, "io_count", maj, min);
    let writes = num(f[count::WRITE]);
    assert_counted("writes (failed ones included)", writes, total, lost);
    let f = disk_row(&rows, "io_err", maj, min);
    assert_eq!(f[2], lo.name());
    assert_ne!(num(f[4]), 0, "err_code is a blk_status_t");
    let errors = num(f[5]);
    assert_counted("errors", errors, total - ok, lost);
    // No new errors since: no event in this period.
    assert!(!rows.iter().any(|l| l.starts_with(&id)), "{rows:#?}");
    let f = disk_row(&rows, "io_count", maj, min);
    assert_eq!(
        num(f[count::WRITE_BYTES]),
        (writes - errors) * BLOCK as u64,
        "only bytes written without error"
    );
    drop(probe);
    drop(dev);
    drop(lo);
}
