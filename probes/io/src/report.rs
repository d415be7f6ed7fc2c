//! The records ioprobe prints each period (tables of `ioprobe.meta`).

use std::io::{self, Write};

use probe_sdk::bpf::{write_loss_record, LossCounters};
use probe_sdk::event::Severity;
use probe_sdk::record::RecordWriter;

use crate::disk::DiskLabels;
use crate::stats::{DiskSample, LatStats, Op, Stage, LAT_BOUNDS_US, STAGES};
use crate::tables::{
    BIT_COUNT, BIT_ERR, BIT_PAGECACHE, BIT_TRACE, DEFAULT_BITS, ENTITY, PROBE_KEY, TABLE_BPF_STATS,
    TABLE_COUNT, TABLE_ERR, TABLE_LATENCY, TABLE_PAGECACHE,
};

/// Which disk tables are printed (from the `-P` bits of the sub-probes, see
/// [`crate::tables::declaration`]); `io_bpf_stats` always is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    /// `io_latency` (sub-probe `io_trace`), and the `latency_req_max` event.
    pub latency: bool,
    /// `io_err` (sub-probe `io_err`).
    pub err: bool,
    /// `io_count` (sub-probe `io_count`).
    pub count: bool,
    /// `io_pagecache` (sub-probe `page_cache`; its programs attached only then).
    pub page_cache: bool,
}

impl Tables {
    /// Every table.
    pub const ALL: Tables = Tables {
        latency: true,
        err: true,
        count: true,
        page_cache: true,
    };

    /// The tables of `-P` bits `bits`.
    pub fn from_bits(bits: u32) -> Tables {
        Tables {
            latency: bits & BIT_TRACE != 0,
            err: bits & BIT_ERR != 0,
            count: bits & BIT_COUNT != 0,
            page_cache: bits & BIT_PAGECACHE != 0,
        }
    }

    /// The default tables (`-P` absent): all but `io_pagecache`.
    pub fn default_tables() -> Tables {
        Tables::from_bits(DEFAULT_BITS)
    }

    /// Names of the tables printed, in output order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.latency, TABLE_LATENCY),
            (self.count, TABLE_COUNT),
            (self.err, TABLE_ERR),
            (self.page_cache, TABLE_PAGECACHE),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name)
        .collect()
    }
}

/// What to print for one disk: its sample and labels (absent labels print as empty fields).
#[derive(Debug, Clone)]
pub struct DiskReport<'a> {
    /// Statistics.
    pub sample: &'a DiskSample,
    /// Names, if the device still exists.
    pub labels: Option<&'a DiskLabels>,
}

impl DiskReport<'_> {
    /// `blk_name` and `disk_name` for event bodies (empty if the device is gone).
    fn names(&self) -> (&str, &str) {
        match self.labels {
            Some(l) => (l.blk_name.as_str(), l.disk_name.as_str()),
            None => ("", ""),
        }
    }
}

fn ns_to_us(ns: u64) -> u64 {
    ns / 1000
}

/// A stage's histogram value: bounds in µs, cumulative counts (since start), the sum in µs
/// (rounded down) and `max_us`, the period's largest latency.
fn latency_histogram(lat: &LatStats, max_us: u64) -> String {
    record_line::histogram::encode(&LAT_BOUNDS_US, &lat.slots, ns_to_us(lat.sum_ns), max_us)
}

/// Writes `io_latency`, `io_count` and (if it had errors) `io_err` for one disk, those of them
/// that `tables` selects.
pub fn write_disk<W: Write>(
    out: &mut RecordWriter<W>,
    disk: &DiskReport<'_>,
    tables: Tables,
) -> io::Result<()> {
    let s = &disk.sample.stats;
    let id = disk.sample.id;
    let blk_name = disk.labels.map(|l| l.blk_name.as_str());
    let disk_name = disk.labels.map(|l| l.disk_name.as_str());

    if tables.latency {
        write_latency(out, disk)?;
    }
    if tables.count {
        out.record(TABLE_COUNT)
            .field(&id.major)
            .field(&id.first_minor)
            .field(&blk_name)
            .field(&disk_name)
            .field(&s.bytes[Op::Read as usize])
            .field(&s.bytes[Op::Write as usize])
            .field(&s.bytes[Op::Discard as usize])
            .field(&s.ops[Op::Read as usize])
            .field(&s.ops[Op::Write as usize])
            .field(&s.ops[Op::Discard as usize])
            .field(&s.ops[Op::Flush as usize])
            .end()?;
    }
    if tables.err && s.errors > 0 {
        out.record(TABLE_ERR)
            .field(&id.major)
            .field(&id.first_minor)
            .field(&blk_name)
            .field(&disk_name)
            .field(&s.last_err)
            .field(&s.errors)
            .end()?;
    }
    Ok(())
}

/// Page-cache counts of one disk (its partitions summed), cumulative since the probe started
/// counting them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageCache {
    /// Pages looked up in the page cache.
    pub access: u64,
    /// Buffers marked dirty.
    pub buffer_dirty: u64,
    /// Pages added to the page cache.
    pub load: u64,
    /// Pages dirtied.
    pub page_dirty: u64,
}

impl PageCache {
    /// Adds `other`'s counts (wrapping, as the kernel's counters do).
    pub fn add(&mut self, other: &PageCache) {
        self.access = self.access.wrapping_add(other.access);
        self.buffer_dirty = self.buffer_dirty.wrapping_add(other.buffer_dirty);
        self.load = self.load.wrapping_add(other.load);
        self.page_dirty = self.page_dirty.wrapping_add(other.page_dirty);
    }
}

/// Writes `io_pagecache` for one disk.
pub fn write_pagecache<W: Write>(
    out: &mut RecordWriter<W>,
    id: crate::stats::DiskId,
    labels: Option<&DiskLabels>,
    pc: &PageCache,
) -> io::Result<()> {
    out.record(TABLE_PAGECACHE)
        .field(&id.major)
        .field(&id.first_minor)
        .field(&labels.map(|l| l.blk_name.as_str()))
        .field(&labels.map(|l| l.disk_name.as_str()))
        .field(&pc.access)
        .field(&pc.buffer_dirty)
        .field(&pc.load)
        .field(&pc.page_dirty)
        .end()
}

fn write_latency<W: Write>(out: &mut RecordWriter<W>, disk: &DiskReport<'_>) -> io::Result<()> {
    let s = &disk.sample.stats;
    let id = disk.sample.id;
    let blk_name = disk.labels.map(|l| l.blk_name.as_str());
    let disk_name = disk.labels.map(|l| l.disk_name.as_str());
    let mut rec = out
        .record(TABLE_LATENCY)
        .field(&id.major)
        .field(&id.first_minor)
        .field(&blk_name)
        .field(&disk_name);
    for stage in STAGES {
        let lat = &s.lat[stage as usize];
        let p = &disk.sample.period[stage as usize];
        // Upstream's fields in nanoseconds: max/last/jitter of the period (absent without a
        // request), running totals of the sum and count (exported per period).
        rec = rec
            .field(&p.if_any(p.max_ns))
            .field(&p.if_any(p.last_ns))
            .field(&lat.sum_ns)
            .field(&p.if_any(p.jitter_ns))
            .field(&lat.count)
            .field(&latency_histogram(lat, ns_to_us(p.max_ns)));
    }
    rec.end()
}

/// Writes the `io_bpf_stats` record.
pub fn write_bpf_stats<W: Write>(out: &mut RecordWriter<W>, loss: &LossCounters) -> io::Result<()> {
    write_loss_record(out, TABLE_BPF_STATS, PROBE_KEY, loss)
}

/// Entity id of a disk in events: `<major>_<first_minor>`.
pub fn entity_id(disk: &DiskSample) -> String {
    format!("{}_{}", disk.id.major, disk.id.first_minor)
}

/// Writes upstream's `latency_req_max` event if the period's largest request latency exceeds
/// `threshold_us` (flag `-T`, 0 = off).
pub fn write_latency_event<W: Write>(
    out: &mut RecordWriter<W>,
    disk: &DiskReport<'_>,
    threshold_us: u64,
) -> io::Result<()> {
    let max_us = ns_to_us(disk.sample.period_max_ns(Stage::Req));
    if threshold_us == 0 || max_us <= threshold_us {
        return Ok(());
    }
    let (blk, dsk) = disk.names();
    out.event(
        ENTITY,
        &entity_id(disk.sample),
        "latency_req_max",
        Severity::Warn,
        &format!(
            "Latency of request operation({max_us}) exceeded threshold, occured on Block({blk}, disk {dsk})."
        ),
    )
}

/// Writes an `err_count` event (ERROR) when `new_errors` requests of the disk failed in the
/// period (one event per disk and period, with the latest `blk_status_t`); nothing without.
pub fn write_error_event<W: Write>(
    out: &mut RecordWriter<W>,
    disk: &DiskReport<'_>,
    new_errors: u64,
) -> io::Result<()> {
    if new_errors == 0 {
        return Ok(());
    }
    let (blk, dsk) = disk.names();
    out.event(
        ENTITY,
        &entity_id(disk.sample),
        "err_count",
        Severity::Error,
        &format!(
            "IO errors({new_errors}) occured on Block({blk}, disk {dsk}), latest error code {}.",
            disk.sample.stats.last_err
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{DiskId, DiskStats, PeriodLat, LAT_SLOTS};

    fn sample() -> DiskSample {
        let mut stats = DiskStats {
            ops: [3, 64, 1, 2],
            bytes: [12288, 262144, 1 << 20, 0],
            ..DiskStats::default()
        };
        stats.lat[0].slots[8] = 67; // [128, 256) us
        stats.lat[0].sum_ns = 67 * 150_000;
        stats.lat[0].count = 67;
        stats.lat[2] = stats.lat[0].clone();
        DiskSample {
            id: DiskId {
                major: 7,
                first_minor: 3,
            },
            stats,
            period: [
                PeriodLat {
                    count: 67,
                    max_ns: 199_999,
                    last_ns: 150_000,
                    last_ts: 1,
                    jitter_ns: 49_999,
                },
                PeriodLat::default(),
                PeriodLat {
                    count: 67,
                    max_ns: 180_500,
                    last_ns: 120_000,
                    last_ts: 1,
                    jitter_ns: 30_500,
                },
            ],
        }
    }

    fn render(f: impl FnOnce(&mut RecordWriter<Vec<u8>>)) -> String {
        let mut w = RecordWriter::new(Vec::new());
        f(&mut w);
        w.flush().unwrap();
        String::from_utf8(w.into_inner()).unwrap()
    }

    fn hist(max: u64, count_from_slot8: u64, sum_us: u64) -> String {
        let mut s = String::from("33");
        for slot in 0..33u32 {
            let c = if slot >= 8 { count_from_slot8 } else { 0 };
            s.push_str(&format!(" {} {}", 1u64 << slot, c));
        }
        s.push_str(&format!(" {sum_us} {max}"));
        s
    }

    #[test]
    fn histogram_counts_are_cumulative() {
        let mut lat = LatStats::default();
        lat.slots[0] = 1; // < 1 us
        lat.slots[3] = 2; // [4, 8) us
        lat.slots[LAT_SLOTS - 1] = 1; // overflow bucket
        lat.sum_ns = 5_000_000_999;
        lat.count = 4;
        let s = latency_histogram(&lat, 42);
        let tokens: Vec<&str> = s.split(' ').collect();
        assert_eq!(tokens.len(), 1 + 2 * LAT_SLOTS + 2);
        assert_eq!(tokens[0], "33");
        assert_eq!(&tokens[1..9], ["1", "1", "2", "1", "4", "1", "8", "3"]);
        // Last bucket: bound 2^32 us, all 4 counted.
        assert_eq!(tokens[2 * LAT_SLOTS - 1], "4294967296");
        assert_eq!(tokens[2 * LAT_SLOTS], "4");
        assert_eq!(&tokens[2 * LAT_SLOTS + 1..], ["5000000", "42"]);
    }

    #[test]
    fn histogram_counts_never_decrease() {
        let mut lat = LatStats::default();
        for (i, s) in lat.slots.iter_mut().enumerate() {
            *s = (i % 3) as u64;
        }
        let s = latency_histogram(&lat, 0);
        let nums: Vec<u64> = s.split(' ').map(|t| t.parse().unwrap()).collect();
        let counts: Vec<u64> = nums[1..1 + 2 * LAT_SLOTS].chunks(2).map(|c| c[1]).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*counts.last().unwrap(), lat.slots.iter().sum::<u64>());
        assert!(record_line::histogram::decode(&s).is_some());
    }

    #[test]
    fn disk_records() {
        let labels = DiskLabels {
            blk_name: "loop3".into(),
            disk_name: "loop3".into(),
        };
        let s = sample();
        let text = render(|w| {
            write_disk(
                w,
                &DiskReport {
                    sample: &s,
                    labels: Some(&labels),
                },
                Tables::ALL,
            )
            .unwrap();
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "no io_err without errors: {text}");
        // ns as upstream; the driver stage had no request: its period gauges are absent.
        let expected_latency = format!(
            "|io_latency|7|3|loop3|loop3|199999|150000|10050000|49999|67|{}|||0||0|{}|180500|120000|10050000|30500|67|{}|",
            hist(199, 67, 10050),
            hist(0, 0, 0),
            hist(180, 67, 10050)
        );
        assert_eq!(lines[0], expected_latency);
        assert_eq!(
            lines[1],
            "|io_count|7|3|loop3|loop3|12288|262144|1048576|3|64|1|2|"
        );
    }

    #[test]
    fn errors_and_missing_labels() {
        let mut s = sample();
        s.stats.errors = 5;
        s.stats.last_err = 10;
        let text = render(|w| {
            write_disk(
                w,
                &DiskReport {
                    sample: &s,
                    labels: None,
                },
                Tables::ALL,
            )
            .unwrap();
        });
        let last = text.lines().last().unwrap();
        assert_eq!(last, "|io_err|7|3|||10|5|");
        assert!(text.starts_with("|io_latency|7|3|||"));
    }

    #[test]
    fn only_selected_tables_are_written() {
        let mut s = sample();
        s.stats.errors = 1;
        let d = DiskReport {
            sample: &s,
            labels: None,
        };
        let tables = |t: Tables| {
            render(|w| write_disk(w, &d, t).unwrap())
                .lines()
                .map(|l| l.split('|').nth(1).unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(tables(Tables::ALL), ["io_latency", "io_count", "io_err"]);
        assert_eq!(tables(Tables::from_bits(BIT_COUNT)), ["io_count"]);
        assert_eq!(tables(Tables::from_bits(BIT_ERR)), ["io_err"]);
        assert_eq!(
            tables(Tables::from_bits(BIT_TRACE | BIT_ERR)),
            ["io_latency", "io_err"]
        );
        assert!(tables(Tables::from_bits(0x100)).is_empty());
        assert_eq!(Tables::from_bits(u32::MAX), Tables::ALL);
        assert_eq!(
            Tables::from_bits(BIT_COUNT | BIT_TRACE).names(),
            ["io_latency", "io_count"]
        );
    }

    #[test]
    fn latency_event_only_above_threshold() {
        let s = sample();
        let labels = DiskLabels {
            blk_name: "vda".into(),
            disk_name: "vda".into(),
        };
        let d = DiskReport {
            sample: &s,
            labels: Some(&labels),
        };
        assert_eq!(render(|w| write_latency_event(w, &d, 0).unwrap()), "");
        assert_eq!(render(|w| write_latency_event(w, &d, 199).unwrap()), "");
        let text = render(|w| write_latency_event(w, &d, 198).unwrap());
        assert!(
            text.starts_with("|event|block|7_3|latency_req_max|WARN|13|"),
            "{text}"
        );
        assert!(
            text.ends_with("WARN Entity(7_3) Latency of request operation(199) exceeded threshold, occured on Block(vda, disk vda).|\n"),
            "{text}"
        );
    }

    #[test]
    fn error_event_only_with_new_errors() {
        let mut s = sample();
        s.stats.last_err = 10;
        let d = DiskReport {
            sample: &s,
            labels: None,
        };
        assert_eq!(render(|w| write_error_event(w, &d, 0).unwrap()), "");
        let text = render(|w| write_error_event(w, &d, 3).unwrap());
        assert!(
            text.starts_with("|event|block|7_3|err_count|ERROR|17|"),
            "{text}"
        );
        assert!(
            text.contains("IO errors(3) occured on Block(, disk ), latest error code 10."),
            "{text}"
        );
    }

    #[test]
    fn bpf_stats_record() {
        let loss = LossCounters {
            events: 9,
            lost: 0,
            map_full: 1,
        };
        assert_eq!(
            render(|w| write_bpf_stats(w, &loss).unwrap()),
            "|io_bpf_stats|io|9|0|1|\n"
        );
    }
}
