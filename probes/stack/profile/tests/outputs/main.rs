//! stack-profile's outputs, end to end: folded text, SVG (parsed back), pprof (decoded back and
//! read by `go tool pprof` when Go is installed), the bounded flame_dir, the Pyroscope push.

mod flame_dir;
mod folded_svg;
mod pprof;
mod pyroscope;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stack_profile::{Frame, Kind, Profile, Sample};

/// 2025-12-05 17:00:00 UTC.
pub const T: u64 = 1_764_954_000;

pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn sample(frames: &[Frame], count: u64, value: u64) -> Sample {
    Sample {
        frames: frames.to_vec(),
        count,
        value,
    }
}

/// A profile of `pid` ending at `end` (a 180 s period): most time in `hot_leaf`.
pub fn profile(pid: u32, kind: Kind, end: u64) -> Profile {
    let period = 1_000_000_000 / 99;
    let main = Frame::user("main");
    let work = Frame::user("work");
    let (a, b, c) = (90, 9, 1);
    let value = |n: u64| match kind {
        Kind::OnCpu => n * period,
        Kind::OffCpu => n * 1_000_000,
    };
    Profile {
        pid,
        comm: "app".into(),
        kind,
        start: at(end - 180),
        end: at(end),
        sample_period_ns: if kind == Kind::OnCpu { period } else { 0 },
        samples: vec![
            sample(
                &[main.clone(), work.clone(), Frame::user("hot_leaf")],
                a,
                value(a),
            ),
            sample(
                &[main.clone(), work, Frame::kernel("do_syscall_64")],
                b,
                value(b),
            ),
            sample(&[main], c, value(c)),
        ],
    }
}

pub fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

pub fn read(path: &Path) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => panic!("read {}: {e}", path.display()),
    }
}

pub fn read_string(path: &Path) -> String {
    String::from_utf8(read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
