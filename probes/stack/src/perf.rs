//! On-CPU sampling: one software cpu-clock perf event per online CPU, each running the
//! `on_cpu_sample` program (there are no hardware PMU events in many VMs; cpu-clock works
//! everywhere and counts in nanoseconds, so its period is exact).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use libbpf_rs::libbpf_sys;

/// The sampling rate for upstream's `perf_sample_period` (ms): 1000 / ms Hz, one less when that
/// is a multiple of 10 (10 ms → 99 Hz, 20 ms → 49 Hz) so samples do not run in lockstep with
/// timers of the same round period, which would over- or under-sample them.
pub fn sample_hz(period_ms: u32) -> u32 {
    let hz = (1000 / period_ms.max(1)).max(1);
    if hz >= 10 && hz.is_multiple_of(10) {
        hz - 1
    } else {
        hz
    }
}

/// The sampling period in ns for `hz` samples per second.
pub fn period_ns(hz: u32) -> u64 {
    1_000_000_000 / u64::from(hz.max(1))
}

/// Online CPUs from `/sys/devices/system/cpu/online` (`0-3,5`).
pub fn online_cpus(path: &Path) -> io::Result<Vec<u32>> {
    parse_cpu_list(std::fs::read_to_string(path)?.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad CPU list"))
}

fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// Opens a cpu-clock sampling event on `cpu` for every task, firing every `period_ns`.
pub fn open_cpu_clock(cpu: u32, period_ns: u64) -> io::Result<OwnedFd> {
    let mut attr = libbpf_sys::perf_event_attr {
        type_: libbpf_sys::PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        config: u64::from(libbpf_sys::PERF_COUNT_SW_CPU_CLOCK),
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_period = period_ns;
    // SAFETY: perf_event_open with a valid, fully initialised attr; pid -1 (every task) on one
    // CPU, no group, close-on-exec. The returned fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const libbpf_sys::perf_event_attr,
            -1i32,
            cpu as i32,
            -1i32,
            libc::c_ulong::from(libbpf_sys::PERF_FLAG_FD_CLOEXEC),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd returned by the kernel, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_rates() {
        assert_eq!(sample_hz(10), 99);
        assert_eq!(sample_hz(20), 49);
        assert_eq!(sample_hz(1000), 1);
        assert_eq!(sample_hz(30), 33);
        assert_eq!(sample_hz(100), 9);
        assert_eq!(period_ns(99), 10_101_010);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,5"), Some(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
