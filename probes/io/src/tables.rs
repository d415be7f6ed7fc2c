//! The tables ioprobe prints, declared once: `ioprobe.meta` is generated from [`meta_tables`]
//! (a test keeps the committed file equal to [`meta_text`]), and [`crate::report`] writes the
//! records in the same field order (tests check it against these declarations).

use probe_sdk::args::DEFAULT_PERIOD_SECS;
use probe_sdk::bpf;
use probe_sdk::decl::{self, Declaration, ParamValue, SubProbe};
use probe_sdk::meta::{self, Field, Table};

/// Table with per-stage latency statistics.
pub const TABLE_LATENCY: &str = "io_latency";
/// Table with bytes and request counts by operation.
pub const TABLE_COUNT: &str = "io_count";
/// Table with request errors (only disks that had errors).
pub const TABLE_ERR: &str = "io_err";
/// Table with page-cache activity per disk (sub-probe `page_cache`).
pub const TABLE_PAGECACHE: &str = "io_pagecache";
/// Loss counters of the BPF side.
pub const TABLE_BPF_STATS: &str = "io_bpf_stats";
/// Value of the `probe` key in [`TABLE_BPF_STATS`].
pub const PROBE_KEY: &str = "io";
/// Entity of the disk tables (and of the events).
pub const ENTITY: &str = "block";

/// `-P` bit: `io_latency` and the `latency_req_max` event (upstream `PROBE_RANGE_IO_TRACE`).
pub const BIT_TRACE: u32 = 1;
/// `-P` bit: `io_err` (upstream `PROBE_RANGE_IO_ERR`).
pub const BIT_ERR: u32 = 2;
/// `-P` bit: `io_count` (upstream `PROBE_RANGE_IO_COUNT`).
pub const BIT_COUNT: u32 = 4;
/// `-P` bit: `io_pagecache` (upstream `page_cache`); off unless asked for.
pub const BIT_PAGECACHE: u32 = 8;
/// The sub-probes on when nothing says otherwise (`-P` absent or 0 → these).
pub const DEFAULT_BITS: u32 = BIT_TRACE | BIT_ERR | BIT_COUNT;

/// The comment at the top of `ioprobe.meta`.
const HEADER: &[&str] = &[
    "ioprobe: per-disk block requests, from the block_rq_insert, block_rq_issue and block_rq_complete",
    "raw tracepoints. As upstream: latencies in nanoseconds; *_max, *_last and *_jitter cover the",
    "period (absent without requests); period: delta fields are written as running totals and",
    "exported as their change per period. Histograms are in microseconds, cumulative since start.",
    "io_err rows appear only for disks that had errors. io_pagecache (sub-probe page_cache, off by",
    "default) counts pages from the filemap, writeback and block_dirty_buffer tracepoints.",
    "Details: docs/probes/io.md.",
];

/// The identity every disk table starts with.
pub const DISK_FIELDS: &[Field] = &[
    Field::key("major", "major number of the disk"),
    Field::key("first_minor", "first minor number of the disk"),
    Field::label("blk_name", "kernel name of the block device, e.g. vda"),
    Field::label(
        "disk_name",
        "name of the disk the device belongs to (same as blk_name for a disk)",
    ),
];

/// Number of `io_latency` fields per stage.
pub const FIELDS_PER_STAGE: usize = 6;

/// `io_latency` after the disk fields: upstream's max, last, sum, jitter and count per stage,
/// then our histogram, in [`crate::stats::STAGES`] order.
pub const LATENCY_FIELDS: &[Field] = &[
    Field::gauge(
        "latency_req_max",
        "largest request latency (allocated to completed) of the period, ns",
    ),
    Field::gauge(
        "latency_req_last",
        "latency of the last request completed in the period, ns",
    ),
    Field::per_period(
        "latency_req_sum",
        "sum of the latencies of the requests completed in the period, ns",
    )
    .total("latency_req_seconds_total", "1e-9"),
    Field::gauge(
        "latency_req_jitter",
        "largest change between consecutive request latencies (one CPU) in the period, ns",
    ),
    Field::per_period(
        "count_latency_req",
        "requests completed in the period with a latency measured",
    ),
    Field::histogram(
        "latency_req_histo",
        "request latency histogram since start, us (log2 buckets, 1 us to 2^32 us)",
    ),
    Field::gauge(
        "latency_driver_max",
        "largest driver latency (allocated to issued to the driver) of the period, ns",
    ),
    Field::gauge(
        "latency_driver_last",
        "driver latency of the last request completed in the period, ns",
    ),
    Field::per_period(
        "latency_driver_sum",
        "sum of the driver latencies of the requests completed in the period, ns",
    )
    .total("latency_driver_seconds_total", "1e-9"),
    Field::gauge(
        "latency_driver_jitter",
        "largest change between consecutive driver latencies (one CPU) in the period, ns",
    ),
    Field::per_period(
        "count_latency_driver",
        "requests completed in the period with a driver latency measured",
    ),
    Field::histogram(
        "latency_driver_histo",
        "driver latency histogram since start, us (log2 buckets, 1 us to 2^32 us)",
    ),
    Field::gauge(
        "latency_device_max",
        "largest device latency (issued to completed) of the period, ns",
    ),
    Field::gauge(
        "latency_device_last",
        "device latency of the last request completed in the period, ns",
    ),
    Field::per_period(
        "latency_device_sum",
        "sum of the device latencies of the requests completed in the period, ns",
    )
    .total("latency_device_seconds_total", "1e-9"),
    Field::gauge(
        "latency_device_jitter",
        "largest change between consecutive device latencies (one CPU) in the period, ns",
    ),
    Field::per_period(
        "count_latency_device",
        "requests completed in the period with a device latency measured",
    ),
    Field::histogram(
        "latency_device_histo",
        "device latency histogram since start, us (log2 buckets, 1 us to 2^32 us)",
    ),
];

/// `io_count` after the disk fields.
pub const COUNT_FIELDS: &[Field] = &[
    Field::per_period("read_bytes", "bytes read without error in the period"),
    Field::per_period("write_bytes", "bytes written without error in the period"),
    Field::counter("discard_bytes", "bytes discarded without error"),
    Field::counter(
        "read_count",
        "read requests completed, failed ones included",
    ),
    Field::counter(
        "write_count",
        "write requests completed, failed ones included",
    ),
    Field::counter(
        "discard_count",
        "discard requests completed, failed ones included",
    ),
    Field::counter("flush_count", "cache flush requests completed"),
];

/// `io_err` after the disk fields.
pub const ERR_FIELDS: &[Field] = &[
    Field::gauge(
        "err_code",
        "blk_status_t of the latest failed request since start (10 = I/O error)",
    ),
    Field::per_period(
        "err_count",
        "requests completed with an error in the period",
    ),
];

/// `io_pagecache` after the disk fields: upstream's four counts, per period, in pages (a large
/// folio counts its pages), summed over the disk's partitions.
pub const PAGECACHE_FIELDS: &[Field] = &[
    Field::per_period(
        "access_pagecache",
        "pages looked up in the page cache in the period: buffered reads, page faults and fault-around (mm_filemap_get_pages, mm_filemap_fault, mm_filemap_map_pages)",
    ),
    Field::per_period(
        "mark_buffer_dirty",
        "buffers marked dirty in the period (block_dirty_buffer)",
    ),
    Field::per_period(
        "load_page_cache",
        "pages added to the page cache in the period (mm_filemap_add_to_page_cache)",
    ),
    Field::per_period(
        "mark_page_dirty",
        "pages dirtied and accounted for writeback in the period (writeback_dirty_folio)",
    ),
];

/// Every table, in `.meta` order.
pub fn meta_tables() -> Vec<Table> {
    vec![
        Table::new(TABLE_LATENCY, ENTITY, &[DISK_FIELDS, LATENCY_FIELDS]),
        Table::new(TABLE_COUNT, ENTITY, &[DISK_FIELDS, COUNT_FIELDS]),
        Table::new(TABLE_ERR, ENTITY, &[DISK_FIELDS, ERR_FIELDS]),
        Table::new(TABLE_PAGECACHE, ENTITY, &[DISK_FIELDS, PAGECACHE_FIELDS]),
        bpf::loss_table(
            TABLE_BPF_STATS,
            "block requests accounted in BPF maps",
            "tracepoint calls the kernel skipped (program busy on that CPU): requests not counted",
            "completions not counted because the per-disk map (512 disks) was full",
        ),
    ]
}

/// What ioprobe declares about its run-time control (the `probe` group of `ioprobe.meta`).
///
/// * REST name `io`; changes apply without a restart (control channel on stdin). No snoopers:
///   block requests are not attributed to processes here.
/// * Sub-probes (upstream's names and bits): `io_trace` → `io_latency` (and the latency event),
///   `io_err` → `io_err`, `io_count` → `io_count`, on by default: they come from the same
///   programs, so the bits select what is printed and the programs stay attached;
///   `page_cache` → `io_pagecache`, off by default: its programs run for every page the page
///   cache adds, dirties or serves, and are attached only while it is on.
/// * Params: `report_period` (default 5 s, `-t`), `dev_name` (print only this disk, `-d`;
///   empty = every disk) and `latency_thr` (ms, `-T`; 0 = no event).
pub fn declaration() -> Declaration {
    let report_period = decl::standard("report_period")
        .map(|p| p.with_default(ParamValue::Int(i64::from(DEFAULT_PERIOD_SECS))));
    Declaration {
        rest_name: Some("io".to_string()),
        reload: true,
        snoopers: Vec::new(),
        sub_probes: vec![
            SubProbe::new("io_trace", BIT_TRACE),
            SubProbe::new("io_err", BIT_ERR),
            SubProbe::new("io_count", BIT_COUNT),
            SubProbe::new("page_cache", BIT_PAGECACHE).off_by_default(),
        ],
        params: [
            report_period,
            decl::standard("dev_name"),
            decl::standard("latency_thr"),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}

/// The `.meta` file describing every table this probe writes and its run-time control
/// (`ioprobe --print-meta`).
pub fn meta_text() -> String {
    format!(
        "{}\n{}",
        meta::render(HEADER, &meta_tables()),
        declaration().render_meta()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::STAGES;

    #[test]
    fn declarations_keep_upstream_limits() {
        assert_eq!(meta::check(&meta_tables()), Vec::<String>::new());
    }

    #[test]
    fn latency_fields_follow_the_stages() {
        assert_eq!(LATENCY_FIELDS.len(), FIELDS_PER_STAGE * STAGES.len());
        let stages: Vec<&str> = STAGES.iter().map(|s| s.name()).collect();
        assert_eq!(stages, ["req", "driver", "device"], "upstream's stages");
        for (stage, fields) in STAGES.iter().zip(LATENCY_FIELDS.chunks(FIELDS_PER_STAGE)) {
            let name = stage.name();
            let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
            // Upstream's five, in its order, then ours.
            assert_eq!(
                names,
                [
                    format!("latency_{name}_max"),
                    format!("latency_{name}_last"),
                    format!("latency_{name}_sum"),
                    format!("latency_{name}_jitter"),
                    format!("count_latency_{name}"),
                    format!("latency_{name}_histo"),
                ]
            );
        }
    }

    /// Upstream resets its per-disk sums and counts after every report (io_trace_bpf.h,
    /// io_count.bpf.c): those are per-period fields; its max, last and jitter are period
    /// gauges; units are nanoseconds (ktime differences).
    #[test]
    fn upstream_named_fields_have_upstreams_meaning() {
        use probe_sdk::meta::FieldKind;
        let all: Vec<&Field> = LATENCY_FIELDS
            .iter()
            .chain(COUNT_FIELDS)
            .chain(ERR_FIELDS)
            .chain(PAGECACHE_FIELDS)
            .collect();
        let per_period: Vec<&str> = all
            .iter()
            .filter(|f| f.per_period)
            .map(|f| f.name)
            .collect();
        assert_eq!(
            per_period,
            [
                "latency_req_sum",
                "count_latency_req",
                "latency_driver_sum",
                "count_latency_driver",
                "latency_device_sum",
                "count_latency_device",
                "read_bytes",
                "write_bytes",
                "err_count",
                "access_pagecache",
                "mark_buffer_dirty",
                "load_page_cache",
                "mark_page_dirty"
            ]
        );
        for f in &all {
            let gauge = ["_max", "_last", "_jitter"]
                .iter()
                .any(|s| f.name.ends_with(s));
            if gauge || f.name == "err_code" {
                assert_eq!(f.kind, FieldKind::Gauge, "{}", f.name);
            }
            if f.name.starts_with("latency_") && f.kind != FieldKind::Histogram {
                assert!(f.description.ends_with(", ns"), "{}: unit", f.name);
            }
            if f.name.ends_with("_sum") {
                let (total, scale) = f.total.expect("seconds in Prometheus mode");
                assert!(total.ends_with("_seconds_total"), "{total}");
                assert_eq!(scale, "1e-9");
            }
        }
    }

    #[test]
    fn declaration_is_valid() {
        let d = declaration();
        d.validate().unwrap();
        assert_eq!(d.rest_name.as_deref(), Some("io"));
        assert!(d.snoopers.is_empty());
        assert_eq!(d.sub_probe_bits(&d.default_sub_probes()), Ok(DEFAULT_BITS));
        assert_eq!(
            d.sub_probe_bits(&["page_cache".to_string()]),
            Ok(BIT_PAGECACHE)
        );
        let names: Vec<&str> = d.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["report_period", "dev_name", "latency_thr"]);
        assert_eq!(
            d.param("report_period").map(|p| &p.default),
            Some(&ParamValue::Int(5))
        );
        // The flags are the ones ProbeArgs reads.
        let flags: Vec<Option<char>> = d.params.iter().map(|p| p.flag).collect();
        assert_eq!(flags, [Some('t'), Some('d'), Some('T')]);
    }

    #[test]
    fn committed_meta_file_is_current() {
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ioprobe.meta"))
                .expect("probes/io/ioprobe.meta");
        assert_eq!(
            committed,
            meta_text(),
            "regenerate with: ioprobe --print-meta > probes/io/ioprobe.meta"
        );
    }
}
