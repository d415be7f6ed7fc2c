//! Per-disk statistics as user space sees them: the per-CPU values of the `io_stats` and
//! `io_maxes` maps summed into one [`DiskStats`] per disk. Pure code, no BPF.

use crate::skel::types::{self, io_op, io_stage};

/// Operation classes, in `enum io_op` order (`src/bpf/intf.h`).
pub const OPS: [Op; 4] = [Op::Read, Op::Write, Op::Discard, Op::Flush];
/// Latency stages, in `enum io_stage` order.
pub const STAGES: [Stage; 3] = [Stage::Req, Stage::Queue, Stage::Device];
/// Number of log2 latency buckets (`IO_LAT_SLOTS`).
pub const LAT_SLOTS: usize = 33;
/// Upper bound of each latency bucket, µs: bucket `i` holds latencies below `2^i` µs.
pub const LAT_BOUNDS_US: [u64; LAT_SLOTS] = {
    let mut bounds = [0u64; LAT_SLOTS];
    let mut i = 0;
    while i < LAT_SLOTS {
        bounds[i] = 1 << i;
        i += 1;
    }
    bounds
};

/// A request's operation class, grouped like `/proc/diskstats` (`enum io_op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Reads (and driver-in requests).
    Read = io_op::IO_OP_READ.0 as isize,
    /// Writes, write-zeroes, zone management.
    Write = io_op::IO_OP_WRITE.0 as isize,
    /// Discard and secure erase.
    Discard = io_op::IO_OP_DISCARD.0 as isize,
    /// Cache flushes.
    Flush = io_op::IO_OP_FLUSH.0 as isize,
}

/// A latency stage (`enum io_stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Request allocated (or first seen) to completed.
    Req = io_stage::IO_STAGE_REQ.0 as isize,
    /// Inserted into the queue (I/O scheduler or dispatch list) to issued to the driver.
    Queue = io_stage::IO_STAGE_QUEUE.0 as isize,
    /// Issued to the driver to completed: driver plus device time.
    Device = io_stage::IO_STAGE_DEVICE.0 as isize,
}

impl Stage {
    /// Name used in the `io_latency` field names (`latency_<name>_max`, …).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Req => "req",
            Stage::Queue => "queue",
            Stage::Device => "device",
        }
    }
}

/// A disk, as the kernel numbers it (`gendisk.major`, `gendisk.first_minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiskId {
    /// Major number.
    pub major: u32,
    /// Minor number of the whole disk.
    pub first_minor: u32,
}

impl DiskId {
    /// Decodes the kernel's internal `MKDEV` encoding used as map key (`major << 20 | minor`).
    pub fn from_kernel_dev(dev: u32) -> DiskId {
        DiskId {
            major: dev >> 20,
            first_minor: dev & ((1 << 20) - 1),
        }
    }

    /// The kernel's internal encoding (inverse of [`from_kernel_dev`](Self::from_kernel_dev)).
    pub fn kernel_dev(self) -> u32 {
        (self.major << 20) | self.first_minor
    }
}

/// Latency distribution of one stage, cumulative since the probe started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatStats {
    /// Per-bucket (not cumulative) counts; bucket `i` holds latencies below `2^i` µs and at or
    /// above `2^(i-1)` µs (bucket 0: below 1 µs); the last bucket also takes anything longer.
    pub slots: [u64; LAT_SLOTS],
    /// Sum of all latencies, nanoseconds.
    pub sum_ns: u64,
    /// Number of latencies recorded.
    pub count: u64,
}

impl Default for LatStats {
    fn default() -> Self {
        LatStats {
            slots: [0; LAT_SLOTS],
            sum_ns: 0,
            count: 0,
        }
    }
}

/// Everything known about one disk, cumulative since the probe started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Completed requests by [`Op`].
    pub ops: [u64; 4],
    /// Bytes completed without error by [`Op`].
    pub bytes: [u64; 4],
    /// Requests completed with an error.
    pub errors: u64,
    /// `blk_status_t` of the most recent error (0 if none).
    pub last_err: u32,
    /// Monotonic time (ns) of the most recent error, to pick the latest across CPUs.
    pub last_err_ns: u64,
    /// Latency distributions by [`Stage`].
    pub lat: [LatStats; 3],
}

impl DiskStats {
    /// Adds one CPU's share of the `io_stats` value.
    pub fn add_cpu(&mut self, v: &types::io_disk_stats) {
        for i in 0..OPS.len() {
            self.ops[i] = self.ops[i].wrapping_add(v.ops[i]);
            self.bytes[i] = self.bytes[i].wrapping_add(v.bytes[i]);
        }
        self.errors = self.errors.wrapping_add(v.errors);
        if v.last_err_ns > self.last_err_ns {
            self.last_err_ns = v.last_err_ns;
            self.last_err = v.last_err;
        }
        for (acc, h) in self.lat.iter_mut().zip(v.lat.iter()) {
            for (a, s) in acc.slots.iter_mut().zip(h.slots.iter()) {
                *a = a.wrapping_add(*s);
            }
            acc.sum_ns = acc.sum_ns.wrapping_add(h.sum_ns);
            acc.count = acc.count.wrapping_add(h.count);
        }
    }

    /// Total completed requests over all operation classes.
    pub fn total_ops(&self) -> u64 {
        self.ops.iter().sum()
    }
}

/// One disk's state at the end of a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSample {
    /// Which disk.
    pub id: DiskId,
    /// Cumulative statistics.
    pub stats: DiskStats,
    /// Largest latency per [`Stage`] completed during the period, nanoseconds (0 if none).
    pub period_max_ns: [u64; 3],
}

impl DiskSample {
    /// Sums the per-CPU `io_stats` values of disk `id` at the end of period `ended_epoch`
    /// (the value `period_epoch` had during the period).
    pub fn from_cpus(id: DiskId, per_cpu: &[types::io_disk_stats], ended_epoch: u32) -> DiskSample {
        let mut stats = DiskStats::default();
        let mut period_max_ns = [0u64; 3];
        for v in per_cpu {
            stats.add_cpu(v);
            let max = period_max(&v.max, ended_epoch);
            for (acc, m) in period_max_ns.iter_mut().zip(max) {
                *acc = (*acc).max(m);
            }
        }
        DiskSample {
            id,
            stats,
            period_max_ns,
        }
    }
}

/// One CPU's maxima for period `ended`: the current slot if the CPU is still in that period,
/// the previous slot if a completion already moved it on, else none.
pub fn period_max(m: &types::io_period_max, ended: u32) -> [u64; 3] {
    if m.epoch == ended {
        m.max_ns
    } else if m.prev_epoch == ended {
        m.prev_max_ns
    } else {
        [0; 3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_sdk::bpf::plain_data;

    fn cpu_value(seed: u64) -> types::io_disk_stats {
        let mut v: types::io_disk_stats = plain_data::zeroed();
        v.ops = [seed, seed + 1, seed + 2, seed + 3];
        v.bytes = [seed * 4096, seed * 8192, 0, 0];
        v.errors = seed;
        v.last_err_ns = seed * 100;
        v.last_err = seed as u32;
        v.lat[1].slots[5] = seed;
        v.lat[1].sum_ns = seed * 20_000;
        v.lat[1].count = seed;
        v
    }

    #[test]
    fn latency_bounds_are_powers_of_two() {
        assert_eq!(LAT_BOUNDS_US[0], 1);
        assert_eq!(LAT_BOUNDS_US[3], 8);
        assert_eq!(LAT_BOUNDS_US[LAT_SLOTS - 1], 1 << 32);
    }

    #[test]
    fn dev_encoding_round_trips() {
        let id = DiskId::from_kernel_dev((254 << 20) | 16);
        assert_eq!(
            id,
            DiskId {
                major: 254,
                first_minor: 16
            }
        );
        assert_eq!(id.kernel_dev(), (254 << 20) | 16);
    }

    #[test]
    fn sums_cpus_and_keeps_latest_error() {
        let mut s = DiskStats::default();
        s.add_cpu(&cpu_value(3));
        s.add_cpu(&cpu_value(2));
        assert_eq!(s.ops, [5, 7, 9, 11]);
        assert_eq!(s.bytes, [5 * 4096, 5 * 8192, 0, 0]);
        assert_eq!(s.errors, 5);
        assert_eq!((s.last_err, s.last_err_ns), (3, 300));
        assert_eq!(s.lat[1].slots[5], 5);
        assert_eq!(s.lat[1].count, 5);
        assert_eq!(s.lat[1].sum_ns, 100_000);
        assert_eq!(s.lat[0], LatStats::default());
        assert_eq!(s.total_ops(), 32);
    }

    fn with_max(
        epoch: u32,
        max: [u64; 3],
        prev_epoch: u32,
        prev: [u64; 3],
    ) -> types::io_disk_stats {
        let mut v = cpu_value(1);
        v.max.epoch = epoch;
        v.max.max_ns = max;
        v.max.prev_epoch = prev_epoch;
        v.max.prev_max_ns = prev;
        v
    }

    #[test]
    fn period_maxima_come_from_the_right_slot() {
        let id = DiskId {
            major: 8,
            first_minor: 0,
        };
        // CPU 0 is still in period 4; CPU 1 moved on to 5 (its period-4 max is in prev);
        // CPU 2 last completed something in period 2.
        let cpus = [
            with_max(4, [100, 0, 50], 3, [999, 999, 999]),
            with_max(5, [7, 7, 7], 4, [80, 30, 90]),
            with_max(2, [999, 999, 999], 1, [999, 999, 999]),
        ];
        let s = DiskSample::from_cpus(id, &cpus, 4);
        assert_eq!(s.period_max_ns, [100, 30, 90]);
        assert_eq!(s.stats.ops, [3, 6, 9, 12]);
        // Nothing belongs to period 6.
        assert_eq!(DiskSample::from_cpus(id, &cpus, 6).period_max_ns, [0, 0, 0]);
    }
}
