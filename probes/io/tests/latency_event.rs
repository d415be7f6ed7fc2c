//! ioprobe's latency event on a slowed device (root needed). This kernel has no device-mapper
//! (no dm-delay) and no null_blk, so the slow device is a loop device on a throttled path: the
//! loop driver reaches its backing file (on the disk under `CARGO_TARGET_TMPDIR`) with direct
//! I/O, on behalf of the writer's block cgroup, and that cgroup may write 5 requests a second to
//! the backing disk. Each request to the loop device then takes about 200 ms, over
//! `-T 50` (ms). A second loop device written at full speed from outside the cgroup stays
//! under the threshold.

mod common;

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const BLOCK: usize = 4096;
const WAIT: Duration = Duration::from_secs(30);
/// Writes through the throttled path (5 a second: about 2 s).
const SLOW_WRITES: u64 = 10;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `major:minor` of the whole disk holding `path` (a partition's parent disk).
fn backing_disk(path: &Path) -> String {
    let dev = std::fs::metadata(path).expect("stat backing file").dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    let disk = if sys.join("partition").exists() {
        sys.canonicalize().expect("sysfs link").join("../dev")
    } else {
        sys.join("dev")
    };
    std::fs::read_to_string(&disk)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (is the backing file on a block device?)",
                disk.display()
            )
        })
        .trim()
        .to_string()
}

/// A block cgroup (v1 `blkio`, or v2 `io`) that may write `iops` requests a second to `disk`;
/// removed on drop.
struct SlowCgroup {
    dir: PathBuf,
}

impl SlowCgroup {
    fn new(disk: &str, iops: u32) -> SlowCgroup {
        let v1 = Path::new("/sys/fs/cgroup/blkio");
        let name = format!("gg-ioprobe-slow-{}", std::process::id());
        let (dir, file, rule) = if v1.join("blkio.throttle.write_iops_device").exists() {
            (
                v1.join(&name),
                "blkio.throttle.write_iops_device",
                format!("{disk} {iops}"),
            )
        } else {
            let root = Path::new("/sys/fs/cgroup");
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+io");
            (root.join(&name), "io.max", format!("{disk} wiops={iops}"))
        };
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::fs::write(dir.join(file), rule).expect("throttle rule");
        SlowCgroup { dir }
    }

    /// `dd` writing `count` blocks to `dev` with O_DIRECT, from inside the cgroup.
    fn dd(&self, dev: &Path, count: u64) -> std::process::Child {
        let procs = CString::new(
            self.dir
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        let mut cmd = Command::new("dd");
        cmd.arg("if=/dev/zero")
            .arg(format!("of={}", dev.display()))
            .args([
                "oflag=direct",
                &format!("bs={BLOCK}"),
                &format!("count={count}"),
            ])
            .stderr(std::process::Stdio::null());
        // SAFETY: only open/write/close (async-signal-safe) between fork and exec; "0" moves the
        // writing process itself.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        cmd.spawn().expect("spawn dd")
    }
}

impl Drop for SlowCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The first `n` periods the probe printed, each up to and including its `io_bpf_stats` line.
fn periods(probe: &mut ProbeRun, n: usize) -> Vec<Vec<String>> {
    (0..n)
        .map(|_| {
            let mut group = Vec::new();
            loop {
                let line = probe.wait_line(WAIT, |_| true);
                let end = line.starts_with("|io_bpf_stats|");
                group.push(line);
                if end {
                    return group;
                }
            }
        })
        .collect()
}

#[test]
fn a_slowed_device_raises_one_latency_event_per_period() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let backing = |name: &str| {
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        path
    };
    let (slow_file, fast_file) = (backing("slow.img"), backing("fast.img"));
    let slow = LoopDevice::attach(&slow_file).unwrap();
    let fast = LoopDevice::attach(&fast_file).unwrap();
    slow.set_direct_io().expect("LOOP_SET_DIRECT_IO");
    fast.set_direct_io().expect("LOOP_SET_DIRECT_IO");
    let cg = SlowCgroup::new(&backing_disk(&slow_file), 5);

    let mut probe = ProbeRun::start(&["-t", "1", "-T", "50"]);
    probe.wait_attached(WAIT);
    let mut dd = cg.dd(&slow.path(), SLOW_WRITES);
    let dev = fast.open_direct();
    let buf = AlignedBuf::new(BLOCK, 0x5a);
    assert_eq!(direct_writes(&dev, &buf, 0, 200), 200);
    assert!(
        dd.wait().expect("wait dd").success(),
        "dd through the throttled path"
    );
    // Every period since the start: those of the slow writes (about 2 s), then idle ones.
    let groups = periods(&mut probe, 5);

    let event = |d: &LoopDevice| {
        format!(
            "|event|block|{}_{}|latency_req_max|WARN|13|",
            d.major, d.minor
        )
    };
    let (slow_ev, fast_ev) = (event(&slow), event(&fast));
    let per_period: Vec<usize> = groups
        .iter()
        .map(|g| g.iter().filter(|l| l.starts_with(&slow_ev)).count())
        .collect();
    let all: Vec<&String> = groups
        .iter()
        .flatten()
        .filter(|l| l.starts_with("|event|"))
        .collect();
    assert!(
        per_period.iter().all(|&n| n <= 1),
        "at most one event per device and period: {per_period:?} {all:#?}"
    );
    // The slow writes took about 2 s: the periods they fell in carry one event each.
    assert!(
        per_period.iter().filter(|&&n| n == 1).count() >= 2,
        "an event in each period of the slow writes: {per_period:?} {all:#?}"
    );
    let first = groups
        .iter()
        .flatten()
        .find(|l| l.starts_with(&slow_ev))
        .unwrap_or_else(|| panic!("no latency event for {}: {all:#?}", slow.name()));
    assert!(
        first.contains(&format!("occured on Block({}", slow.name())),
        "{first}"
    );
    let us: u64 = first
        .split("operation(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no latency in {first}"));
    assert!(us > 50_000, "{us} µs is over -T 50 ms");
    assert!(
        !all.iter().any(|l| l.starts_with(&fast_ev)),
        "the unthrottled device stays under the threshold: {all:#?}"
    );
    assert_eq!(
        per_period.last(),
        Some(&0),
        "no I/O, no event: {per_period:?}"
    );
    assert_eq!(probe.stop(), Some(0));
}
