//! The tables sliprobe prints, declared once: `sliprobe.meta` is generated from [`meta_tables`]
//! (a test keeps the committed file equal to [`meta_text`]), and [`crate::report`] writes the
//! records in the same field order (tests check it against these declarations).
//!
//! Table and field names are upstream HEAD's (`sliprobe/sli.meta`); the pressure fields
//! (`*_pressure_some_ns`, `*_pressure_full_ns`) are ours, appended after upstream's fields.

use probe_sdk::args::DEFAULT_PERIOD_SECS;
use probe_sdk::bpf;
use probe_sdk::decl::{self, Declaration, ParamValue, SnooperKind, SubProbe};
use probe_sdk::meta::{self, Field, Table};

/// Entity of the node rows (`gala_gopher_sli_node_<field>`).
pub const ENTITY_NODE: &str = "sli_node";
/// Entity of the container rows (`gala_gopher_sli_container_<field>`).
pub const ENTITY_CONTAINER: &str = "sli_container";
/// Value of the node rows' key `sli_node_key`: upstream's sliprobe prints this constant.
pub const NODE_KEY: &str = "sli_node_key";
/// Loss counters of the BPF side.
pub const TABLE_BPF_STATS: &str = "sli_bpf_stats";
/// Value of the `probe` key in [`TABLE_BPF_STATS`].
pub const PROBE_KEY: &str = "sli";

/// `-P` bit: the CPU tables and the scheduler programs (upstream `PROBE_RANGE_SLI_CPU`).
pub const BIT_CPU: u32 = 1;
/// `-P` bit: the memory tables and the reclaim/compaction programs (`PROBE_RANGE_SLI_MEM`).
pub const BIT_MEM: u32 = 2;
/// `-P` bit: the IO tables and the bio programs (`PROBE_RANGE_SLI_IO`).
pub const BIT_IO: u32 = 4;
/// `-P` bit: node rows (`PROBE_RANGE_SLI_NODE`).
pub const BIT_NODE: u32 = 8;
/// `-P` bit: container rows (`PROBE_RANGE_SLI_CONTAINER`).
pub const BIT_CONTAINER: u32 = 16;
/// `-P` bit: the `*_histogram` tables (`PROBE_RANGE_SLI_HISTOGRAM_METRICS`).
pub const BIT_HISTOGRAM: u32 = 32;
/// The bits in force without `-P` (every sub-probe but `histogram`).
pub const DEFAULT_BITS: u32 = BIT_CPU | BIT_MEM | BIT_IO | BIT_NODE | BIT_CONTAINER;

/// Which rows a table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One row for the whole node, key `sli_node_key`.
    Node,
    /// One row per container, key `container_id`.
    Container,
}

/// The table names of one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    /// `sli_cpu_*_stat`
    pub cpu_stat: &'static str,
    /// `sli_cpu_*_gauge`
    pub cpu_gauge: &'static str,
    /// `sli_cpu_*_histogram`
    pub cpu_histogram: &'static str,
    /// `sli_mem_*_gauge`
    pub mem_gauge: &'static str,
    /// `sli_mem_*_histogram`
    pub mem_histogram: &'static str,
    /// `sli_io_*_gauge`
    pub io_gauge: &'static str,
    /// `sli_io_*_histogram`
    pub io_histogram: &'static str,
}

impl Scope {
    /// The table names of this scope.
    pub fn names(self) -> Names {
        match self {
            Scope::Node => Names {
                cpu_stat: "sli_cpu_node_stat",
                cpu_gauge: "sli_cpu_node_gauge",
                cpu_histogram: "sli_cpu_node_histogram",
                mem_gauge: "sli_mem_node_gauge",
                mem_histogram: "sli_mem_node_histogram",
                io_gauge: "sli_io_node_gauge",
                io_histogram: "sli_io_node_histogram",
            },
            Scope::Container => Names {
                cpu_stat: "sli_cpu_container_stat",
                cpu_gauge: "sli_cpu_container_gauge",
                cpu_histogram: "sli_cpu_container_histogram",
                mem_gauge: "sli_mem_container_gauge",
                mem_histogram: "sli_mem_container_histogram",
                io_gauge: "sli_io_container_gauge",
                io_histogram: "sli_io_container_histogram",
            },
        }
    }

    /// The entity of this scope's tables.
    pub fn entity(self) -> &'static str {
        match self {
            Scope::Node => ENTITY_NODE,
            Scope::Container => ENTITY_CONTAINER,
        }
    }

    fn key(self) -> &'static [Field] {
        match self {
            Scope::Node => NODE_KEY_FIELDS,
            Scope::Container => CONTAINER_KEY_FIELDS,
        }
    }
}

/// The key of the node tables.
pub const NODE_KEY_FIELDS: &[Field] = &[Field::key(
    "sli_node_key",
    "Key of sli node table, always sli_node_key (one row for the whole node)",
)];

/// The key of the container tables.
pub const CONTAINER_KEY_FIELDS: &[Field] = &[Field::key(
    "container_id",
    "container id, first 12 hex digits (the daemon adds container_name, image and pod labels)",
)];

/// `sli_cpu_node_stat` after the key.
pub const CPU_NODE_STAT_FIELDS: &[Field] = &[
    Field::gauge(
        "cpu_busy",
        "CPU usage in the last period, percent of all online CPUs (non-idle, non-iowait time of /proc/stat)",
    ),
    Field::gauge("cpu_cores", "CPU core number: CPUs online (cpuN lines of /proc/stat)"),
];

/// `sli_cpu_container_stat` after the key.
pub const CPU_CONTAINER_STAT_FIELDS: &[Field] = &[
    Field::gauge(
        "cpu_busy",
        "CPU usage in the last period, percent of all host CPUs (v1 cpuacct.usage, v2 cpu.stat usage_usec), as upstream",
    ),
    Field::gauge(
        "cpu_cores",
        "CPU core number: CFS quota / period (v1 cpu.cfs_quota_us, v2 cpu.max), the host's CPUs when unlimited",
    ),
];

/// The CPU gauges, in record order (upstream's six, then pressure).
pub const CPU_GAUGE_FIELDS: &[Field] = &[
    Field::gauge(
        "cpu_wait",
        "Latency of CPU wait (upstream: schedstats sched_stat_wait); not measured here, always empty: the run-queue wait is in cpu_rundelay",
    ),
    Field::gauge(
        "cpu_sleep",
        "Latency of CPU sleep: sum in ns over the last period of the times tasks slept interruptibly (switched out in S state until woken)",
    ),
    Field::gauge(
        "cpu_iowait",
        "Latency of CPU io wait: sum in ns over the last period of uninterruptible sleeps in iowait (D state, in_iowait, until woken)",
    ),
    Field::gauge(
        "cpu_block",
        "Latency of CPU block: sum in ns over the last period of uninterruptible sleeps not in iowait (D state until woken)",
    ),
    Field::gauge(
        "cpu_rundelay",
        "Latency of CPU run delay: sum in ns over the last period of the times runnable tasks waited for a CPU (woken or preempted until switched in)",
    ),
    Field::gauge(
        "cpu_longsys",
        "Latency of CPU long systime (upstream: from task switch counters); not measured here, always empty",
    ),
    Field::gauge(
        "cpu_pressure_some_ns",
        "CPU pressure: time in ns in the last period during which some tasks waited for a CPU (PSI cpu some total)",
    ),
    Field::gauge(
        "cpu_pressure_full_ns",
        "CPU pressure: time in ns in the last period during which all non-idle tasks waited for a CPU (PSI cpu full total)",
    ),
];

/// The CPU histograms, in record order.
pub const CPU_HISTOGRAM_FIELDS: &[Field] = &[
    Field::histogram(
        "cpu_wait_histo",
        "Latency of CPU wait, histogram; not measured here, always empty",
    ),
    Field::histogram(
        "cpu_sleep_histo",
        "Latency of CPU sleep, histogram in ns since the row appeared (max: of the last period)",
    ),
    Field::histogram(
        "cpu_iowait_histo",
        "Latency of CPU io wait, histogram in ns since the row appeared (max: of the last period)",
    ),
    Field::histogram(
        "cpu_block_histo",
        "Latency of CPU block, histogram in ns since the row appeared (max: of the last period)",
    ),
    Field::histogram(
        "cpu_rundelay_histo",
        "Latency of CPU run delay, histogram in ns since the row appeared (max: of the last period)",
    ),
    Field::histogram(
        "cpu_longsys_histo",
        "Latency of CPU long systime, histogram; not measured here, always empty",
    ),
];

/// The memory gauges, in record order.
pub const MEM_GAUGE_FIELDS: &[Field] = &[
    Field::gauge(
        "mem_reclaim",
        "Latency of memory reclaim: sum in ns over the last period of direct and memcg reclaim stalls of user tasks (vmscan tracepoints)",
    ),
    Field::gauge(
        "mem_compact",
        "Latency of memory compact: sum in ns over the last period of compactions run by user tasks (compaction begin to end)",
    ),
    Field::gauge(
        "mem_swapin",
        "Latency of memory swapin (upstream: kprobe do_swap_page); not measured here (no tracepoint), always empty",
    ),
    Field::gauge(
        "mem_pressure_some_ns",
        "Memory pressure: time in ns in the last period during which some tasks stalled on memory (PSI memory some total)",
    ),
    Field::gauge(
        "mem_pressure_full_ns",
        "Memory pressure: time in ns in the last period during which all non-idle tasks stalled on memory (PSI memory full total)",
    ),
];

/// The memory histograms, in record order.
pub const MEM_HISTOGRAM_FIELDS: &[Field] = &[
    Field::histogram(
        "mem_reclaim_histo",
        "Latency of memory reclaim, histogram in ns since the row appeared (max: of the last period)",
    ),
    Field::histogram(
        "mem_compact_histo",
        "Latency of memory compact, histogram in ns since the row appeared (max: of the last period)",
    ),
    Field::histogram(
        "mem_swapin_histo",
        "Latency of memory swapin, histogram; not measured here, always empty",
    ),
];

/// The IO gauges, in record order.
pub const IO_GAUGE_FIELDS: &[Field] = &[
    Field::gauge(
        "bio_latency",
        "I/O operation delay at the BIO layer: sum in ns over the last period of block_bio_queue to block_bio_complete times",
    ),
    Field::gauge(
        "io_pressure_some_ns",
        "IO pressure: time in ns in the last period during which some tasks stalled on IO (PSI io some total)",
    ),
    Field::gauge(
        "io_pressure_full_ns",
        "IO pressure: time in ns in the last period during which all non-idle tasks stalled on IO (PSI io full total)",
    ),
];

/// The IO histograms, in record order.
pub const IO_HISTOGRAM_FIELDS: &[Field] = &[Field::histogram(
    "bio_latency_histo",
    "I/O operation delay at the BIO layer, histogram in ns since the row appeared (max: of the last period)",
)];

/// The comment at the top of `sliprobe.meta`.
const HEADER: &[&str] = &[
    "sliprobe: CPU, memory and IO latencies of the node and of each container (key container_id), from",
    "tp_btf programs (sched, vmscan, compaction, block bio) aggregated per cgroup, plus PSI and CPU usage",
    "from files. Gauges are sums in ns over the last period (upstream's meaning); histograms count since",
    "the row appeared. cpu_wait, cpu_longsys and mem_swapin are never measured (empty). Details:",
    "docs/probes/sli.md.",
];

/// Every table, in `.meta` order (upstream's order, then the loss table).
pub fn meta_tables() -> Vec<Table> {
    let mut tables = Vec::new();
    for (stat_fields, scope) in [
        (CPU_NODE_STAT_FIELDS, Scope::Node),
        (CPU_CONTAINER_STAT_FIELDS, Scope::Container),
    ] {
        tables.push(Table::new(
            scope.names().cpu_stat,
            scope.entity(),
            &[scope.key(), stat_fields],
        ));
    }
    for (gauge, histogram, pick) in [
        (
            CPU_GAUGE_FIELDS,
            CPU_HISTOGRAM_FIELDS,
            (|n: Names| (n.cpu_gauge, n.cpu_histogram))
                as fn(Names) -> (&'static str, &'static str),
        ),
        (MEM_GAUGE_FIELDS, MEM_HISTOGRAM_FIELDS, |n: Names| {
            (n.mem_gauge, n.mem_histogram)
        }),
        (IO_GAUGE_FIELDS, IO_HISTOGRAM_FIELDS, |n: Names| {
            (n.io_gauge, n.io_histogram)
        }),
    ] {
        for scope in [Scope::Node, Scope::Container] {
            let (g, h) = pick(scope.names());
            tables.push(Table::new(g, scope.entity(), &[scope.key(), gauge]));
            tables.push(Table::new(h, scope.entity(), &[scope.key(), histogram]));
        }
    }
    tables.push(bpf::loss_table(
        TABLE_BPF_STATS,
        "latencies accounted in the BPF maps (run delays, sleeps, reclaims, compactions, bios)",
        "tracepoint calls the kernel skipped (program busy on that CPU) and task states that could not be stored",
        "latencies not counted because a per-cgroup map (4096 cgroups) or the bio map was full",
    ));
    tables
}

/// What sliprobe declares about its run-time control (the `probe` group of `sliprobe.meta`).
///
/// * REST name `sli`; changes apply without a restart (control channel on stdin).
/// * Snoopers: the container kinds (upstream's sli takes container snoopers): the daemon
///   resolves them into pids, and a container is reported when one of its processes is selected.
/// * Sub-probes (upstream's names and bits): `cpu`, `mem`, `io` (tables and the programs behind
///   them), `node`, `container` (rows), `histogram` (the `*_histogram` tables, off by default).
/// * Params: `report_period` (default 5 s, `-t`).
pub fn declaration() -> Declaration {
    let report_period = decl::standard("report_period")
        .map(|p| p.with_default(ParamValue::Int(i64::from(DEFAULT_PERIOD_SECS))));
    Declaration {
        rest_name: Some("sli".to_string()),
        reload: true,
        snoopers: vec![
            SnooperKind::ContainerId,
            SnooperKind::ContainerName,
            SnooperKind::PodId,
            SnooperKind::PodLabels,
        ],
        sub_probes: vec![
            SubProbe::new("cpu", BIT_CPU),
            SubProbe::new("mem", BIT_MEM),
            SubProbe::new("io", BIT_IO),
            SubProbe::new("node", BIT_NODE),
            SubProbe::new("container", BIT_CONTAINER),
            SubProbe::new("histogram", BIT_HISTOGRAM).off_by_default(),
        ],
        params: report_period.into_iter().collect(),
    }
}

/// The `.meta` file describing every table this probe writes and its run-time control
/// (`sliprobe --print-meta`).
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

    #[test]
    fn declarations_keep_upstream_limits() {
        assert_eq!(meta::check(&meta_tables()), Vec::<String>::new());
    }

    #[test]
    fn upstream_tables_and_fields_are_all_declared() {
        // Upstream HEAD's sli.meta, node tables (each has its container twin): (table, fields
        // after the key).
        let upstream: &[(&str, &[&str])] = &[
            ("sli_cpu_node_stat", &["cpu_busy", "cpu_cores"]),
            (
                "sli_cpu_node_gauge",
                &[
                    "cpu_wait",
                    "cpu_sleep",
                    "cpu_iowait",
                    "cpu_block",
                    "cpu_rundelay",
                    "cpu_longsys",
                ],
            ),
            (
                "sli_cpu_node_histogram",
                &[
                    "cpu_wait_histo",
                    "cpu_sleep_histo",
                    "cpu_iowait_histo",
                    "cpu_block_histo",
                    "cpu_rundelay_histo",
                    "cpu_longsys_histo",
                ],
            ),
            (
                "sli_mem_node_gauge",
                &["mem_reclaim", "mem_compact", "mem_swapin"],
            ),
            (
                "sli_mem_node_histogram",
                &["mem_reclaim_histo", "mem_compact_histo", "mem_swapin_histo"],
            ),
            ("sli_io_node_gauge", &["bio_latency"]),
            ("sli_io_node_histogram", &["bio_latency_histo"]),
        ];
        let tables = meta_tables();
        for (name, fields) in upstream {
            for table in [name.to_string(), name.replace("_node_", "_container_")] {
                let t = tables
                    .iter()
                    .find(|t| t.name == table)
                    .unwrap_or_else(|| panic!("{table} not declared"));
                let names: Vec<&str> = t.fields.iter().map(|f| f.name).collect();
                assert_eq!(
                    &names[1..=fields.len()],
                    *fields,
                    "{table}: upstream's fields first"
                );
                let key = if table.contains("_node_") {
                    "sli_node_key"
                } else {
                    "container_id"
                };
                assert_eq!(names[0], key);
            }
        }
        assert_eq!(tables.len(), 2 * upstream.len() + 1);
    }

    #[test]
    fn declaration_is_valid() {
        let d = declaration();
        d.validate().unwrap();
        assert_eq!(d.rest_name.as_deref(), Some("sli"));
        assert_eq!(d.sub_probe_bits(&d.default_sub_probes()), Ok(DEFAULT_BITS));
        assert_eq!(
            d.sub_probe_bits(&["histogram".to_string()]),
            Ok(BIT_HISTOGRAM)
        );
        let names: Vec<&str> = d.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["report_period"]);
        assert_eq!(
            d.param("report_period").map(|p| &p.default),
            Some(&ParamValue::Int(5))
        );
        assert!(!d.honours(SnooperKind::ProcId));
        assert!(d.honours(SnooperKind::ContainerId));
    }

    #[test]
    fn committed_meta_declares_the_same() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sliprobe.meta"));
        let root = gala_libconfig::parse_file(path).expect("sliprobe.meta parses");
        assert_eq!(
            Declaration::from_node(&root).expect("valid probe group"),
            Some(declaration())
        );
    }

    #[test]
    fn committed_meta_file_is_current() {
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sliprobe.meta"))
                .expect("probes/sli/sliprobe.meta");
        assert_eq!(
            committed,
            meta_text(),
            "regenerate with: sliprobe --print-meta > probes/sli/sliprobe.meta"
        );
    }
}
