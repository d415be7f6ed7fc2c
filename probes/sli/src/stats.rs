//! Latency statistics as user space sees them (pure code, no BPF): the per-CPU values of
//! `cpu_stats` / `memio_stats` summed per cgroup ([`GroupSample`]), their change since the
//! previous period ([`Tracker`]), and the per-row accumulators the records are made from
//! ([`RowLat`]).

use std::collections::HashMap;

use crate::skel::types::{self, sli_cpu_kind, sli_memio_kind};

/// Number of latency slots (`SLI_LAT_SLOTS`).
pub const LAT_SLOTS: usize = 14;
/// Kinds per statistics group (`SLI_GROUP_KINDS`).
pub const GROUP_KINDS: usize = 4;
/// Upper bound of each slot in ns (`lat_bounds_ns` in `.rodata`; a test compares them): slot
/// `i` counts latencies `<= LAT_BOUNDS_NS[i]`; the last one also takes anything longer.
pub const LAT_BOUNDS_NS: [u64; LAT_SLOTS] = [
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    10_000_000_000,
    86_400_000_000_000,
];

/// Which map a latency is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `cpu_stats` (scheduler programs).
    Cpu,
    /// `memio_stats` (reclaim, compaction and bio programs).
    MemIo,
}

/// A latency the probe measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Runnable until switched in (`cpu_rundelay`).
    RunDelay,
    /// Interruptible sleep until woken (`cpu_sleep`).
    Sleep,
    /// Uninterruptible sleep, not in iowait, until woken (`cpu_block`).
    Block,
    /// Uninterruptible sleep in iowait until woken (`cpu_iowait`).
    IoWait,
    /// Direct or memcg reclaim (`mem_reclaim`).
    Reclaim,
    /// Compaction in a user task (`mem_compact`).
    Compact,
    /// Bio queued to completed (`bio_latency`).
    Bio,
}

impl Kind {
    /// Every kind; [`Kind::index`] is the position here.
    pub const ALL: [Kind; 7] = [
        Kind::RunDelay,
        Kind::Sleep,
        Kind::Block,
        Kind::IoWait,
        Kind::Reclaim,
        Kind::Compact,
        Kind::Bio,
    ];

    /// Position in [`Kind::ALL`] (and in [`Row::lat`]).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The map and the slot of the group value the kind is kept in (`enum sli_cpu_kind` /
    /// `enum sli_memio_kind`).
    pub fn slot(self) -> (Source, usize) {
        let (source, v) = match self {
            Kind::RunDelay => (Source::Cpu, sli_cpu_kind::SLI_CPU_RUNDELAY.0),
            Kind::Sleep => (Source::Cpu, sli_cpu_kind::SLI_CPU_SLEEP.0),
            Kind::Block => (Source::Cpu, sli_cpu_kind::SLI_CPU_BLOCK.0),
            Kind::IoWait => (Source::Cpu, sli_cpu_kind::SLI_CPU_IOWAIT.0),
            Kind::Reclaim => (Source::MemIo, sli_memio_kind::SLI_MEM_RECLAIM.0),
            Kind::Compact => (Source::MemIo, sli_memio_kind::SLI_MEM_COMPACT.0),
            Kind::Bio => (Source::MemIo, sli_memio_kind::SLI_IO_BIO.0),
        };
        (source, v as usize)
    }

    /// The kind kept in slot `slot` of `source`'s group value.
    pub fn of_slot(source: Source, slot: usize) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.slot() == (source, slot))
    }
}

/// A latency distribution: counts per slot (not cumulative), sum and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lat {
    /// Observations per slot (see [`LAT_BOUNDS_NS`]).
    pub slots: [u64; LAT_SLOTS],
    /// Sum of the observations, ns.
    pub sum_ns: u64,
    /// Number of observations.
    pub count: u64,
}

impl Lat {
    /// One CPU's `struct sli_lat`.
    pub fn from_bpf(v: &types::sli_lat) -> Lat {
        Lat {
            slots: v.slots,
            sum_ns: v.sum_ns,
            count: v.count,
        }
    }

    /// Adds `other` (wrapping, like the kernel's counters).
    pub fn add(&mut self, other: &Lat) {
        for (a, b) in self.slots.iter_mut().zip(other.slots.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
        self.count = self.count.wrapping_add(other.count);
    }

    /// What was added since `earlier` (an older reading of the same element). When a counter
    /// went down the element was deleted and created again in between: all of `self` is new.
    pub fn since(&self, earlier: &Lat) -> Lat {
        let went_down = self.count < earlier.count
            || self
                .slots
                .iter()
                .zip(earlier.slots.iter())
                .any(|(a, b)| a < b);
        if went_down {
            return *self;
        }
        let mut d = Lat::default();
        for (i, s) in d.slots.iter_mut().enumerate() {
            *s = self.slots[i] - earlier.slots[i];
        }
        d.sum_ns = self.sum_ns.wrapping_sub(earlier.sum_ns);
        d.count = self.count - earlier.count;
        d
    }
}

/// One cgroup's element of a statistics map, summed over the CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupSample {
    /// Cumulative distributions by slot (`enum sli_cpu_kind` / `enum sli_memio_kind`).
    pub lat: [Lat; GROUP_KINDS],
    /// Largest latency per slot in the period that ended, ns (0 if none).
    pub period_max_ns: [u64; GROUP_KINDS],
}

impl GroupSample {
    /// Sums the per-CPU values at the end of period `ended_epoch` (the value `period_epoch`
    /// had during the period).
    pub fn from_cpus(per_cpu: &[types::sli_group], ended_epoch: u32) -> GroupSample {
        let mut s = GroupSample::default();
        for v in per_cpu {
            for (acc, l) in s.lat.iter_mut().zip(v.lat.iter()) {
                acc.add(&Lat::from_bpf(l));
            }
            for (acc, m) in s
                .period_max_ns
                .iter_mut()
                .zip(period_max(&v.max, ended_epoch))
            {
                *acc = (*acc).max(m);
            }
        }
        s
    }
}

/// One CPU's maxima for period `ended`: the current slot if the CPU is still in that period,
/// the previous slot if an update already moved it on, else none.
pub fn period_max(m: &types::sli_period_max, ended: u32) -> [u64; GROUP_KINDS] {
    if m.epoch == ended {
        m.max_ns
    } else if m.prev_epoch == ended {
        m.prev_max_ns
    } else {
        [0; GROUP_KINDS]
    }
}

/// What one cgroup added in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    /// The cgroup id.
    pub cgid: u64,
    /// The kind.
    pub kind: Kind,
    /// Observations added in the period.
    pub lat: Lat,
    /// Largest of them, ns.
    pub max_ns: u64,
}

/// Remembers each cgroup element's last reading, to turn cumulative readings into the changes
/// of each period.
#[derive(Debug, Default)]
pub struct Tracker {
    last: HashMap<(Source, u64), [Lat; GROUP_KINDS]>,
}

impl Tracker {
    /// The changes since the previous call of every element of `source` in `samples`
    /// (`(cgroup id, sample)`); only kinds with observations in the period are returned.
    pub fn deltas(&mut self, source: Source, samples: &[(u64, GroupSample)]) -> Vec<Delta> {
        let mut out = Vec::new();
        for (cgid, sample) in samples {
            let last = self.last.entry((source, *cgid)).or_default();
            for (slot, (now, before)) in sample.lat.iter().zip(last.iter()).enumerate() {
                let lat = now.since(before);
                let Some(kind) = Kind::of_slot(source, slot) else {
                    continue;
                };
                if lat.count > 0 {
                    out.push(Delta {
                        cgid: *cgid,
                        kind,
                        lat,
                        max_ns: sample.period_max_ns[slot],
                    });
                }
            }
            *last = sample.lat;
        }
        out
    }

    /// Forgets a cgroup whose element was deleted from the map.
    pub fn forget(&mut self, source: Source, cgid: u64) {
        self.last.remove(&(source, cgid));
    }

    /// Number of elements remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// One kind's numbers for one row (the node, or a container).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowLat {
    /// Every observation since the row appeared (the histogram).
    pub total: Lat,
    /// Sum of the last period's observations, ns (the gauge).
    pub period_sum_ns: u64,
    /// Largest observation of the last period, ns.
    pub period_max_ns: u64,
}

/// A row's numbers for every kind, indexed by [`Kind::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Row {
    /// By kind.
    pub lat: [RowLat; 7],
}

impl Row {
    /// Starts a new period: the period sums and maxima go back to zero.
    pub fn new_period(&mut self) {
        for l in &mut self.lat {
            l.period_sum_ns = 0;
            l.period_max_ns = 0;
        }
    }

    /// Adds one cgroup's change.
    pub fn add(&mut self, d: &Delta) {
        let l = &mut self.lat[d.kind.index()];
        l.total.add(&d.lat);
        l.period_sum_ns = l.period_sum_ns.wrapping_add(d.lat.sum_ns);
        l.period_max_ns = l.period_max_ns.max(d.max_ns);
    }

    /// The numbers of `kind`.
    pub fn get(&self, kind: Kind) -> &RowLat {
        &self.lat[kind.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_sdk::bpf::plain_data;

    fn cpu(seed: u64, epoch: u32, max: [u64; 4]) -> types::sli_group {
        let mut v: types::sli_group = plain_data::zeroed();
        v.lat[0].slots[3] = seed;
        v.lat[0].sum_ns = seed * 200_000;
        v.lat[0].count = seed;
        v.lat[2].slots[13] = 1;
        v.lat[2].sum_ns = 7;
        v.lat[2].count = 1;
        v.max.epoch = epoch;
        v.max.max_ns = max;
        v.max.prev_epoch = epoch.wrapping_sub(1);
        v.max.prev_max_ns = [9; 4];
        v
    }

    #[test]
    fn kinds_map_to_their_slots() {
        for (i, k) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            let (source, slot) = k.slot();
            assert!(slot < GROUP_KINDS);
            assert_eq!(Kind::of_slot(source, slot), Some(k));
        }
        assert_eq!(Kind::of_slot(Source::MemIo, 3), None);
        assert_eq!(Kind::of_slot(Source::Cpu, 0), Some(Kind::RunDelay));
    }

    #[test]
    fn sums_cpus_and_takes_the_period_max() {
        let cpus = [cpu(2, 5, [100, 0, 3, 0]), cpu(3, 6, [1, 1, 1, 1])];
        // CPU 1 moved on to 6: its period-5 maxima are in prev (9).
        let s = GroupSample::from_cpus(&cpus, 5);
        assert_eq!(s.lat[0].count, 5);
        assert_eq!(s.lat[0].slots[3], 5);
        assert_eq!(s.lat[0].sum_ns, 1_000_000);
        assert_eq!(s.lat[2].count, 2);
        assert_eq!(s.period_max_ns, [100, 9, 9, 9]);
        assert_eq!(GroupSample::from_cpus(&cpus, 7).period_max_ns, [0; 4]);
    }

    #[test]
    fn deltas_per_period_and_after_recreation() {
        let mut t = Tracker::default();
        let mut s = GroupSample::default();
        s.lat[0] = Lat {
            slots: [0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sum_ns: 800_000,
            count: 4,
        };
        s.period_max_ns[0] = 300_000;
        let d = t.deltas(Source::Cpu, &[(7, s)]);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].cgid, d[0].kind, d[0].lat.count),
            (7, Kind::RunDelay, 4)
        );
        assert_eq!(d[0].max_ns, 300_000);
        // Nothing new: no delta.
        assert!(t.deltas(Source::Cpu, &[(7, s)]).is_empty());
        // One more observation.
        s.lat[0].slots[5] += 1;
        s.lat[0].count += 1;
        s.lat[0].sum_ns += 900_000;
        let d = t.deltas(Source::Cpu, &[(7, s)]);
        assert_eq!(d[0].lat.count, 1);
        assert_eq!(d[0].lat.sum_ns, 900_000);
        assert_eq!(d[0].lat.slots[5], 1);
        // The element was deleted and created again with fewer observations: all are new.
        let mut fresh = GroupSample::default();
        fresh.lat[0].slots[0] = 1;
        fresh.lat[0].count = 1;
        fresh.lat[0].sum_ns = 5;
        let d = t.deltas(Source::Cpu, &[(7, fresh)]);
        assert_eq!(d[0].lat, fresh.lat[0]);
        // Memio slot 2 is bio.
        let mut m = GroupSample::default();
        m.lat[2].count = 1;
        m.lat[2].slots[0] = 1;
        let d = t.deltas(Source::MemIo, &[(7, m)]);
        assert_eq!(d[0].kind, Kind::Bio);
        assert_eq!(t.len(), 2);
        t.forget(Source::Cpu, 7);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn rows_keep_totals_and_reset_period_values() {
        let mut r = Row::default();
        let d = Delta {
            cgid: 1,
            kind: Kind::Sleep,
            lat: Lat {
                slots: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                sum_ns: 5_000,
                count: 2,
            },
            max_ns: 4_000,
        };
        r.add(&d);
        r.add(&d);
        assert_eq!(r.get(Kind::Sleep).period_sum_ns, 10_000);
        assert_eq!(r.get(Kind::Sleep).period_max_ns, 4_000);
        assert_eq!(r.get(Kind::Sleep).total.count, 4);
        r.new_period();
        assert_eq!(r.get(Kind::Sleep).period_sum_ns, 0);
        assert_eq!(r.get(Kind::Sleep).total.count, 4);
        assert_eq!(r.get(Kind::RunDelay), &RowLat::default());
    }
}
