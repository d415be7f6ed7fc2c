//! Per-disk statistics as user space sees them: the per-CPU values of the `io_stats` map
//! summed into one [`DiskStats`] per disk, and the period's latencies ([`PeriodLat`]) combined
//! over CPUs. Pure code, no BPF.

use crate::skel::types::{self, io_op, io_stage};

/// Operation classes, in `enum io_op` order (`src/bpf/intf.h`).
pub const OPS: [Op; 4] = [Op::Read, Op::Write, Op::Discard, Op::Flush];
/// Latency stages, in `enum io_stage` order.
pub const STAGES: [Stage; 3] = [Stage::Req, Stage::Driver, Stage::Device];
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
    /// Request allocated (or first seen) to completed (upstream's block stage).
    Req = io_stage::IO_STAGE_REQ.0 as isize,
    /// Request allocated (else inserted into the queue) to issued to the driver: block-layer
    /// queueing before the device sees it (upstream's driver stage, start to device issue).
    Driver = io_stage::IO_STAGE_DRIVER.0 as isize,
    /// Issued to the driver to completed: driver plus device time.
    Device = io_stage::IO_STAGE_DEVICE.0 as isize,
}

impl Stage {
    /// Name used in the `io_latency` field names (`latency_<name>_max`, …).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Req => "req",
            Stage::Driver => "driver",
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

/// One stage's latencies of one period, over all CPUs, nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodLat {
    /// Latencies recorded in the period.
    pub count: u64,
    /// The largest.
    pub max_ns: u64,
    /// The latest one (by completion time across CPUs).
    pub last_ns: u64,
    /// Completion time (ktime) of the latest one.
    pub last_ts: u64,
    /// Largest difference between two consecutive latencies on one CPU.
    pub jitter_ns: u64,
}

impl PeriodLat {
    /// Folds one CPU's values of this stage in.
    fn add(&mut self, p: &types::io_period, stage: usize) {
        if p.n[stage] == 0 {
            return;
        }
        self.count += p.n[stage];
        self.max_ns = self.max_ns.max(p.max_ns[stage]);
        self.jitter_ns = self.jitter_ns.max(p.jitter_ns[stage]);
        if p.last_ts[stage] >= self.last_ts {
            self.last_ts = p.last_ts[stage];
            self.last_ns = p.last_ns[stage];
        }
    }

    /// `v` if the period recorded a latency: max, last and jitter mean nothing otherwise.
    pub fn if_any(&self, v: u64) -> Option<u64> {
        (self.count > 0).then_some(v)
    }
}

/// One disk's state at the end of a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSample {
    /// Which disk.
    pub id: DiskId,
    /// Cumulative statistics.
    pub stats: DiskStats,
    /// The period's latencies per [`Stage`].
    pub period: [PeriodLat; 3],
}

impl DiskSample {
    /// Sums the per-CPU `io_stats` values of disk `id` at the end of period `ended_epoch`
    /// (the value `period_epoch` had during the period).
    pub fn from_cpus(id: DiskId, per_cpu: &[types::io_disk_stats], ended_epoch: u32) -> DiskSample {
        let mut stats = DiskStats::default();
        let mut period = [PeriodLat::default(); 3];
        for v in per_cpu {
            stats.add_cpu(v);
            if let Some(p) = period_of(&v.period, ended_epoch) {
                for (stage, acc) in period.iter_mut().enumerate() {
                    acc.add(p, stage);
                }
            }
        }
        DiskSample { id, stats, period }
    }

    /// The period's largest latency of `stage`, nanoseconds (0 without any).
    pub fn period_max_ns(&self, stage: Stage) -> u64 {
        self.period[stage as usize].max_ns
    }
}

/// One CPU's values for period `ended`: the current slot if the CPU is still in that period,
/// the previous slot if a completion already moved it on, else none.
pub fn period_of(p: &types::io_period_pair, ended: u32) -> Option<&types::io_period> {
    if p.cur.epoch == ended {
        Some(&p.cur)
    } else if p.prev.epoch == ended {
        Some(&p.prev)
    } else {
        None
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

    /// A period slot with one value per stage: `n` latencies, the largest `max`, the latest
    /// `last` at time `ts`, and a tenth of `max` as jitter.
    fn slot(epoch: u32, n: [u64; 3], max: [u64; 3], last: [u64; 3], ts: u64) -> types::io_period {
        types::io_period {
            epoch,
            n,
            max_ns: max,
            last_ns: last,
            last_ts: n.map(|k| if k > 0 { ts } else { 0 }),
            jitter_ns: max.map(|m| m / 10),
            ..Default::default()
        }
    }

    fn with_period(cur: types::io_period, prev: types::io_period) -> types::io_disk_stats {
        let mut v = cpu_value(1);
        v.period.cur = cur;
        v.period.prev = prev;
        v
    }

    #[test]
    fn period_latencies_come_from_the_right_slot() {
        let id = DiskId {
            major: 8,
            first_minor: 0,
        };
        let stale = slot(1, [9; 3], [999; 3], [999; 3], 1);
        // CPU 0 is still in period 4; CPU 1 moved on to 5 (its period-4 values are in prev);
        // CPU 2 last completed something in period 2.
        let cpus = [
            with_period(
                slot(4, [2, 0, 2], [100, 0, 50], [60, 0, 40], 500),
                slot(3, [9; 3], [999; 3], [999; 3], 1),
            ),
            with_period(
                slot(5, [1; 3], [7; 3], [7; 3], 900),
                slot(4, [1; 3], [80, 30, 90], [80, 30, 90], 700),
            ),
            with_period(slot(2, [9; 3], [999; 3], [999; 3], 1), stale),
        ];
        let s = DiskSample::from_cpus(id, &cpus, 4);
        let maxes: Vec<u64> = STAGES.iter().map(|st| s.period_max_ns(*st)).collect();
        assert_eq!(maxes, [100, 30, 90]);
        let counts: Vec<u64> = s.period.iter().map(|p| p.count).collect();
        assert_eq!(counts, [3, 1, 3]);
        // The latest completion (ts 700 on CPU 1) gives `last`; the driver stage only had it.
        let last: Vec<u64> = s.period.iter().map(|p| p.last_ns).collect();
        assert_eq!(last, [80, 30, 90]);
        // Jitter: the largest of the CPUs' (a tenth of their max here).
        let jitter: Vec<u64> = s.period.iter().map(|p| p.jitter_ns).collect();
        assert_eq!(jitter, [10, 3, 9]);
        assert_eq!(s.stats.ops, [3, 6, 9, 12]);
        // Nothing belongs to period 6: no latency, so max/last/jitter are absent.
        let none = DiskSample::from_cpus(id, &cpus, 6);
        assert_eq!(none.period, [PeriodLat::default(); 3]);
        assert_eq!(none.period[0].if_any(5), None);
        assert_eq!(s.period[0].if_any(5), Some(5));
    }
}
