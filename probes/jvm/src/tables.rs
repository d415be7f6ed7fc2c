//! The tables jvmprobe prints, declared once: `jvmprobe.meta` is generated from [`meta_tables`]
//! (a test keeps the committed file equal to [`meta_text`]), and [`crate::report`] writes the
//! records in the same field order. Table and field names are upstream's (HEAD
//! `jvm_probe.meta`); fields the buffer cannot give are left out (see docs/probes/jvm.md).

use probe_sdk::args::DEFAULT_PERIOD_SECS;
use probe_sdk::decl::{self, Declaration, ParamValue, SnooperKind};
use probe_sdk::meta::{self, Field, Table};

/// Entity of every JVM table (`gala_gopher_jvm_<field>`).
pub const ENTITY: &str = "jvm";
/// JVM identity (labels) and `info` 1.
pub const INFO: &str = "jvm_info";
/// Process start and CPU.
pub const PROC: &str = "jvm_proc";
/// Class loading.
pub const CLASS: &str = "jvm_class";
/// Threads.
pub const THREAD: &str = "jvm_thread";
/// Heap and non-heap, one row per area.
pub const MEM: &str = "jvm_mem";
/// One row per memory pool.
pub const MEM_POOL: &str = "jvm_mem_pool";
/// One row per garbage collector.
pub const GC: &str = "jvm_gc";
/// Whether the JVM's buffer could be read.
pub const INSTANCE: &str = "jvm_instance";
/// The probe's own accounting.
pub const STATS: &str = "jvmprobe_stats";
/// Value of the `probe` key in [`STATS`].
pub const STATS_PROBE: &str = "jvm";

const HEADER: &[&str] = &[
    "jvmprobe: every HotSpot JVM on the host (key tgid), read from the performance-data file it",
    "publishes (/tmp/hsperfdata_<user>/<pid>, also inside containers); no agent is attached. A JVM",
    "run with -XX:-UsePerfData has no file and is not reported. Details: docs/probes/jvm.md.",
];

const TGID: Field = Field::key("tgid", "ID of the java process");
const NAME: Field = Field::label(
    "name",
    "Main class or jar of the JVM (first word of sun.rt.javaCommand)",
);

/// Fields of [`INFO`].
pub const INFO_FIELDS: &[Field] = &[
    TGID,
    NAME,
    Field::label("runtime", "JVM name (java.vm.name)"),
    Field::label("vendor", "JVM implementation vendor (java.vm.vendor)"),
    Field::label("version", "JVM implementation version (java.vm.version)"),
    Field::gauge("info", "Always 1"),
];

/// Fields of [`PROC`].
pub const PROC_FIELDS: &[Field] = &[
    TGID,
    NAME,
    Field::gauge(
        "proc_start_time_secs",
        "JVM start, seconds since the epoch (sun.rt.vmInitDoneTime, as RuntimeMXBean.getStartTime)",
    ),
    Field::counter(
        "proc_cpu_secs_total",
        "User and system CPU time of the process, seconds (/proc/<pid>/stat)",
    ),
];

/// Fields of [`CLASS`].
pub const CLASS_FIELDS: &[Field] = &[
    TGID,
    NAME,
    Field::gauge(
        "class_current_loaded",
        "Classes loaded now: loaded minus unloaded, shared (CDS) classes included",
    ),
    Field::counter(
        "class_loaded_total",
        "Classes loaded since the JVM started, shared (CDS) classes included",
    ),
    Field::counter(
        "class_unloaded_total",
        "Classes unloaded since the JVM started",
    ),
];

/// Fields of [`THREAD`].
pub const THREAD_FIELDS: &[Field] = &[
    TGID,
    NAME,
    Field::gauge("threads_current", "Live threads (java.threads.live)"),
    Field::gauge(
        "threads_daemon",
        "Live daemon threads (java.threads.daemon)",
    ),
    Field::gauge("threads_peak", "Peak live threads (java.threads.livePeak)"),
    Field::counter(
        "threads_started_total",
        "Threads started since the JVM started (java.threads.started)",
    ),
];

/// Fields of [`MEM`].
pub const MEM_FIELDS: &[Field] = &[
    TGID,
    NAME,
    Field::key(
        "area",
        "heap (young and old generations) or nonheap (metaspace)",
    ),
    Field::gauge("mem_bytes_used", "Bytes used in the area"),
    Field::gauge("mem_bytes_commit", "Bytes committed for the area"),
    Field::gauge("mem_bytes_max", "Most bytes the area can grow to"),
];

/// Fields of [`MEM_POOL`].
pub const MEM_POOL_FIELDS: &[Field] = &[
    TGID,
    NAME,
    Field::key(
        "pool",
        "Memory pool: eden, s0, s1, old, metaspace, compressed_class_space",
    ),
    Field::gauge("mem_pool_bytes_used", "Bytes used in the pool"),
    Field::gauge("mem_pool_bytes_commit", "Bytes committed for the pool"),
    Field::gauge("mem_pool_bytes_max", "Most bytes the pool can grow to"),
];

/// Fields of [`GC`].
pub const GC_FIELDS: &[Field] = &[
    TGID,
    NAME,
    Field::key(
        "gc",
        "Collector: its GarbageCollectorMXBean name (Copy, G1 Young Generation...) or the JVM's own",
    ),
    Field::counter(
        "gc_coll_secs_count",
        "Collections run by the collector (sun.gc.collector.N.invocations)",
    ),
    Field::counter(
        "gc_coll_secs_sum",
        "Seconds spent in the collector's collections (sun.gc.collector.N.time)",
    ),
];

/// Fields of [`INSTANCE`].
pub const INSTANCE_FIELDS: &[Field] = &[
    TGID,
    NAME,
    Field::gauge(
        "up",
        "1 if the JVM's performance-data file was read and parsed in this period, else 0",
    ),
    Field::counter(
        "scrape_errors",
        "Periods the file could not be read or parsed since the probe first saw the JVM",
    ),
    Field::gauge(
        "scrape_seconds",
        "Time to read and parse the file in this period, seconds",
    ),
];

/// The probe's own accounting: [`STATS`].
pub const STATS_TABLE: Table = Table::fixed(
    STATS,
    "jvmprobe",
    &[
        Field::key("probe", "Always jvm"),
        Field::counter("cycles_total", "Collection cycles run since the probe started"),
        Field::gauge("jvms", "JVMs reported in the last cycle"),
        Field::counter(
            "errors_total",
            "Performance-data files that could not be read or parsed, summed over cycles",
        ),
        Field::counter(
            "files_refused_total",
            "Files refused (symlink, not a regular file, wrong owner, too large), summed over cycles",
        ),
        Field::counter(
            "stale_files_total",
            "Files older than their process (left by an exited JVM whose pid was reused)",
        ),
        Field::counter(
            "procs_over_cap_total",
            "/proc entries left unread in a cycle because 262144 were read already",
        ),
    ],
);

/// Every table, in `.meta` order (which is also the order of the records each period).
pub fn meta_tables() -> Vec<Table> {
    vec![
        Table::fixed(INFO, ENTITY, INFO_FIELDS),
        Table::fixed(PROC, ENTITY, PROC_FIELDS),
        Table::fixed(CLASS, ENTITY, CLASS_FIELDS),
        Table::fixed(THREAD, ENTITY, THREAD_FIELDS),
        Table::fixed(MEM, ENTITY, MEM_FIELDS),
        Table::fixed(MEM_POOL, ENTITY, MEM_POOL_FIELDS),
        Table::fixed(GC, ENTITY, GC_FIELDS),
        Table::fixed(INSTANCE, ENTITY, INSTANCE_FIELDS),
        STATS_TABLE,
    ]
}

/// What jvmprobe declares about its run-time control (the `probe` group of its `.meta`).
///
/// * REST name `jvm` (upstream's); changes apply without a restart.
/// * Snoopers: every kind (the daemon resolves them to pids); only the selected JVMs are
///   reported.
/// * No sub-probes. Params: `report_period` (`-t`, default 5 s).
pub fn declaration() -> Declaration {
    let report_period = decl::standard("report_period")
        .map(|p| p.with_default(ParamValue::Int(i64::from(DEFAULT_PERIOD_SECS))));
    Declaration {
        rest_name: Some("jvm".to_string()),
        reload: true,
        snoopers: SnooperKind::ALL.to_vec(),
        sub_probes: Vec::new(),
        params: report_period.into_iter().collect(),
    }
}

/// The `.meta` file: every table and the run-time control (`jvmprobe --print-meta`).
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
    fn declaration_is_valid() {
        let d = declaration();
        d.validate().unwrap();
        assert_eq!(d.rest_name.as_deref(), Some("jvm"));
        assert!(d.reload);
        assert_eq!(d.defaults()["report_period"], ParamValue::Int(5));
        assert_eq!(d.param("report_period").and_then(|p| p.flag), Some('t'));
    }

    #[test]
    fn committed_meta_declares_the_same() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/jvmprobe.meta"));
        let root = gala_libconfig::parse_file(path).expect("jvmprobe.meta parses");
        assert_eq!(
            Declaration::from_node(&root).expect("valid probe group"),
            Some(declaration())
        );
        assert!(root.lookup("measurements").is_some());
    }

    #[test]
    fn committed_meta_file_is_current() {
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jvmprobe.meta"))
                .expect("probes/jvm/jvmprobe.meta");
        assert_eq!(
            committed,
            meta_text(),
            "regenerate with: jvmprobe --print-meta > probes/jvm/jvmprobe.meta"
        );
    }
}
