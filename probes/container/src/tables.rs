//! The tables containerprobe prints, declared once: `containerprobe.meta` is generated from
//! [`meta_tables`] (a test keeps the committed file equal to [`meta_text`]), and
//! [`crate::report`] writes the records in the same field order.

use probe_sdk::args::DEFAULT_PERIOD_SECS;
use probe_sdk::decl::{self, Declaration, ParamValue, SnooperKind};
use probe_sdk::meta::{self, Field, Table};

/// Entity of [`CONTAINER`] (`gala_gopher_container_<field>`).
pub const ENTITY: &str = "container";
/// One row per running container.
pub const CONTAINER: &str = "container";
/// One row per container and block device; its own entity (`gala_gopher_container_blkio_<field>`),
/// because gala-spider drops an entity whose tables have different key lists.
pub const BLKIO: &str = "container_blkio";
/// One row per Kubernetes pod with a running container on this host; entity of the same name.
pub const POD: &str = "pod";
/// The probe's own accounting.
pub const STATS: &str = "containerprobe_stats";
/// Value of the `probe` key in [`STATS`].
pub const STATS_PROBE: &str = "container";

/// The comment at the top of `containerprobe.meta`.
const HEADER: &[&str] = &[
    "containerprobe: one row per running container (key container_id, the first 12 hex digits of its id)",
    "from its cgroup v1 or v2 files and /proc/<pid>/net/dev, with cAdvisor's field names; container_blkio",
    "has one row per container and block device, pod one per Kubernetes pod (key pod_id, the pod uid) with",
    "a reported container. An absent value means the source does not exist on this host (e.g. memory",
    "pressure on pure cgroup v1, network of a container in the host's netns).",
    "Details: docs/probes/container.md.",
];

/// Fields of [`CONTAINER`], in record order.
pub const CONTAINER_FIELDS: &[Field] = &[
    Field::key(
        "container_id",
        "Container id, first 12 hex digits (the daemon adds container_name, image and pod labels)",
    ),
    Field::counter(
        "cpu_usage_seconds_total",
        "CPU time used by the container, seconds (v1 cpuacct.usage, v2 cpu.stat usage_usec)",
    ),
    Field::counter(
        "cpu_user_seconds_total",
        "CPU time in user mode, seconds (v1 cpuacct.stat user, v2 cpu.stat user_usec)",
    ),
    Field::counter(
        "cpu_system_seconds_total",
        "CPU time in kernel mode, seconds (v1 cpuacct.stat system, v2 cpu.stat system_usec)",
    ),
    Field::counter(
        "cpu_cfs_periods_total",
        "CFS enforcement periods that elapsed with a CPU quota set (cpu.stat nr_periods)",
    ),
    Field::counter(
        "cpu_cfs_throttled_periods_total",
        "CFS periods in which the container was throttled (cpu.stat nr_throttled)",
    ),
    Field::counter(
        "cpu_cfs_throttled_seconds_total",
        "Time the container was throttled, seconds (v1 cpu.stat throttled_time, v2 throttled_usec)",
    ),
    Field::gauge(
        "memory_usage_bytes",
        "Memory charged to the container, bytes (v1 memory.usage_in_bytes, v2 memory.current)",
    ),
    Field::gauge(
        "memory_working_set_bytes",
        "memory_usage_bytes minus inactive file pages (memory.stat total_inactive_file or inactive_file)",
    ),
    Field::gauge(
        "memory_rss",
        "Anonymous memory, bytes (v1 memory.stat total_rss, v2 memory.stat anon)",
    ),
    Field::gauge(
        "memory_cache",
        "Page cache and tmpfs memory, bytes (v1 memory.stat total_cache, v2 memory.stat file)",
    ),
    Field::gauge(
        "spec_memory_limit_bytes",
        "Memory limit, bytes; 0 = unlimited (v1 memory.limit_in_bytes, v2 memory.max)",
    ),
    Field::counter(
        "memory_failcnt",
        "Times memory usage hit the limit (v1 memory.failcnt, v2 memory.events max)",
    ),
    Field::counter(
        "oom_events_total",
        "Times the memory limit was reached and reclaim failed (v2 memory.events oom; absent on v1)",
    ),
    Field::counter(
        "oom_kill_events_total",
        "Processes killed by the OOM killer (v2 memory.events oom_kill, v1 memory.oom_control oom_kill)",
    ),
    Field::gauge(
        "memory_under_oom",
        "1 while the container is under OOM with the OOM killer disabled (v1 memory.oom_control; absent on v2)",
    ),
    Field::counter(
        "memory_psi_some_seconds_total",
        "Time some tasks stalled on memory, seconds (v2 memory.pressure some total; absent without v2)",
    ),
    Field::counter(
        "memory_psi_full_seconds_total",
        "Time all tasks stalled on memory, seconds (v2 memory.pressure full total; absent without v2)",
    ),
    Field::gauge(
        "processes",
        "Tasks (threads included) in the container (pids.current)",
    ),
    Field::gauge(
        "spec_pids_max",
        "Task limit of the container; 0 = unlimited (pids.max)",
    ),
    Field::counter(
        "network_receive_bytes_total",
        "Bytes received on the container's network interfaces except lo (/proc/<pid>/net/dev)",
    ),
    Field::counter(
        "network_receive_packets_total",
        "Packets received on the container's interfaces except lo",
    ),
    Field::counter(
        "network_receive_dropped_total",
        "Received packets dropped on the container's interfaces except lo",
    ),
    Field::counter(
        "network_receive_errors_total",
        "Receive errors on the container's interfaces except lo",
    ),
    Field::counter(
        "network_transmit_bytes_total",
        "Bytes sent on the container's interfaces except lo",
    ),
    Field::counter(
        "network_transmit_packets_total",
        "Packets sent on the container's interfaces except lo",
    ),
    Field::counter(
        "network_transmit_dropped_total",
        "Packets dropped while sending on the container's interfaces except lo",
    ),
    Field::counter(
        "network_transmit_errors_total",
        "Transmit errors on the container's interfaces except lo",
    ),
    Field::gauge(
        "start_time_seconds",
        "Start of the container's oldest process, unix time in seconds",
    ),
    Field::counter(
        "fs_reads_bytes_total",
        "Bytes read from block devices, sum of its container_blkio rows (cAdvisor's name); absent without rows",
    ),
    Field::counter(
        "fs_writes_bytes_total",
        "Bytes written to block devices, sum of its container_blkio rows (cAdvisor's name); absent without rows",
    ),
];

/// Fields of [`BLKIO`], in record order.
pub const BLKIO_FIELDS: &[Field] = &[
    Field::key("container_id", "Container id, first 12 hex digits"),
    Field::key("major_minor", "Block device number, major:minor"),
    Field::label(
        "device",
        "Block device name (DEVNAME of /sys/dev/block/<major:minor>/uevent), when known",
    ),
    Field::counter(
        "fs_reads_bytes_total",
        "Bytes read from the device (v2 io.stat rbytes, v1 blkio.throttle.io_service_bytes Read)",
    ),
    Field::counter(
        "fs_writes_bytes_total",
        "Bytes written to the device (v2 io.stat wbytes, v1 blkio.throttle.io_service_bytes Write)",
    ),
    Field::counter(
        "fs_reads_total",
        "Read requests completed (v2 io.stat rios, v1 blkio.throttle.io_serviced Read)",
    ),
    Field::counter(
        "fs_writes_total",
        "Write requests completed (v2 io.stat wios, v1 blkio.throttle.io_serviced Write)",
    ),
];

/// Fields of [`POD`], in record order.
pub const POD_FIELDS: &[Field] = &[
    Field::key(
        "pod_id",
        "Pod uid, from the kubepods cgroup path of its containers (the daemon adds the pod and pod_namespace labels)",
    ),
    Field::gauge(
        "containers",
        "Running containers of the pod reported in this cycle (its sandbox/pause container included)",
    ),
    Field::gauge(
        "processes",
        "Tasks of its containers: the sum of their pids.current (processes seen in /proc where absent)",
    ),
    Field::counter(
        "cpu_usage_seconds_total",
        "Sum of its containers' cpu_usage_seconds_total; absent if one of them lacks it",
    ),
    Field::gauge(
        "memory_working_set_bytes",
        "Sum of its containers' memory_working_set_bytes; absent if one of them lacks it",
    ),
];

/// The probe's own accounting: [`STATS`].
pub const STATS_TABLE: Table = Table::fixed(
    STATS,
    "containerprobe",
    &[
        Field::key("probe", "Always container"),
        Field::counter("cycles_total", "Collection cycles run since the probe started"),
        Field::gauge("containers", "Containers reported in the last cycle"),
        Field::gauge("pods", "Pods reported in the last cycle"),
        Field::counter(
            "containers_over_cap_total",
            "Containers left out of a cycle because 4096 were reported already, summed over cycles",
        ),
        Field::counter(
            "procs_over_cap_total",
            "/proc entries left unread in a cycle because 262144 were read already, summed over cycles",
        ),
        Field::counter(
            "devices_over_cap_total",
            "Block devices left out of a container's rows because 256 were reported already",
        ),
        Field::counter(
            "read_errors_total",
            "Files that could not be read or parsed (not counting processes and containers that went away)",
        ),
    ],
);

/// Every table, in `.meta` order (which is also the order of the records each period).
pub fn meta_tables() -> Vec<Table> {
    vec![
        Table::fixed(CONTAINER, ENTITY, CONTAINER_FIELDS),
        Table::fixed(BLKIO, BLKIO, BLKIO_FIELDS),
        Table::fixed(POD, POD, POD_FIELDS),
        STATS_TABLE,
    ]
}

/// What containerprobe declares about its run-time control (the `probe` group of its `.meta`).
///
/// * REST name `container` (upstream's cAdvisor probe); changes apply without a restart.
/// * Snoopers: every kind. The daemon resolves them to pids, and only the containers holding one
///   of the selected pids are reported.
/// * No sub-probes (upstream's `container` had none). Params: `report_period` (`-t`, default
///   5 s). Upstream's `cadvisor_port` is not declared: no cAdvisor is involved.
pub fn declaration() -> Declaration {
    let report_period = decl::standard("report_period")
        .map(|p| p.with_default(ParamValue::Int(i64::from(DEFAULT_PERIOD_SECS))));
    Declaration {
        rest_name: Some("container".to_string()),
        reload: true,
        snoopers: SnooperKind::ALL.to_vec(),
        sub_probes: Vec::new(),
        params: report_period.into_iter().collect(),
    }
}

/// The `.meta` file: every table and the run-time control (`containerprobe --print-meta`).
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

    /// gala-spider merges the tables of one entity and drops the entity when their key lists
    /// differ.
    #[test]
    fn tables_of_one_entity_have_the_same_keys() {
        let tables = meta_tables();
        let keys = |t: &Table| -> Vec<&str> {
            t.fields
                .iter()
                .filter(|f| f.kind == meta::FieldKind::Key)
                .map(|f| f.name)
                .collect()
        };
        for t in &tables {
            for o in tables.iter().filter(|o| o.entity == t.entity) {
                assert_eq!(
                    keys(t),
                    keys(o),
                    "entity {}: {} vs {}",
                    t.entity,
                    t.name,
                    o.name
                );
            }
        }
        let entity = |name: &str| tables.iter().find(|t| t.name == name).map(|t| t.entity);
        assert_eq!(entity(BLKIO), Some("container_blkio"));
        assert_eq!(entity(POD), Some("pod"));
        let pod = tables.iter().find(|t| t.name == POD).unwrap();
        assert_eq!(keys(pod), ["pod_id"]);
    }

    #[test]
    fn declaration_is_valid() {
        let d = declaration();
        d.validate().unwrap();
        assert_eq!(d.rest_name.as_deref(), Some("container"));
        assert!(d.reload);
        assert_eq!(d.snoopers, SnooperKind::ALL);
        assert!(d.sub_probes.is_empty());
        assert_eq!(d.defaults()["report_period"], ParamValue::Int(5));
        assert_eq!(d.param("report_period").and_then(|p| p.flag), Some('t'));
    }

    #[test]
    fn committed_meta_declares_the_same() {
        let path =
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/containerprobe.meta"));
        let root = gala_libconfig::parse_file(path).expect("containerprobe.meta parses");
        assert_eq!(
            Declaration::from_node(&root).expect("valid probe group"),
            Some(declaration())
        );
        assert!(root.lookup("measurements").is_some());
    }

    #[test]
    fn committed_meta_file_is_current() {
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/containerprobe.meta"))
                .expect("probes/container/containerprobe.meta");
        assert_eq!(
            committed,
            meta_text(),
            "regenerate with: containerprobe --print-meta > probes/container/containerprobe.meta"
        );
    }
}
