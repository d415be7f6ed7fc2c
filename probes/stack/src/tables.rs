//! What stackprobe declares: its run-time control (REST `flamegraph`) and the one table of
//! counters it prints (its profiles go to files, not records). `stackprobe.meta` is generated
//! from here (a test keeps the committed file current).

use probe_sdk::bpf;
use probe_sdk::decl::{self, Declaration, ParamValue, SnooperKind, SubProbe};
use probe_sdk::meta::{self, Field, Table};

/// `-P` bit of the on-CPU sub-probe.
pub const BIT_ONCPU: u32 = 1;
/// `-P` bit of the off-CPU sub-probe.
pub const BIT_OFFCPU: u32 = 2;
/// Sub-probes on when nothing says otherwise: on-CPU only, as upstream (off-CPU stacks are
/// for the processes an SRE is looking into).
pub const DEFAULT_BITS: u32 = BIT_ONCPU;

/// The counters table.
pub const STATS_TABLE: &str = "stackprobe_stats";
/// Loss counters of the BPF side.
pub const BPF_STATS_TABLE: &str = "stackprobe_bpf_stats";
/// Value of the `probe` key of both tables.
pub const STATS_PROBE: &str = "stack";

const HEADER: &[&str] = &[
    "stackprobe: on-CPU (perf-event sampling) and off-CPU (sampled, or at sched_switch) stacks per process, symbolized and",
    "written every svg_period as SVG flame graphs, folded stacks and pprof profiles into flame_dir (and",
    "optionally pushed to Pyroscope). The records are the probe's own counters. Details: docs/probes/stack.md.",
];

/// Columns of [`STATS_TABLE`] after the key, in record order.
pub const STATS_FIELDS: &[Field] = &[
    Field::counter("samples", "On-CPU samples taken in the selected processes"),
    Field::counter(
        "offcpu_stretches",
        "Off-CPU stretches (switched out to running again) recorded",
    ),
    Field::counter(
        "offcpu_short",
        "Off-CPU stretches shorter than the minimum block time, not recorded",
    ),
    Field::counter(
        "offcpu_stacks_reused",
        "Off-CPU switch-outs whose stacks were reused from the thread's previous switch-out at the same place (no stack walk)",
    ),
    Field::counter(
        "offcpu_samples",
        "Sampled off-CPU method: samples of selected threads found off the CPU",
    ),
    Field::counter(
        "offcpu_stacks_walked",
        "Sampled off-CPU method: stacks walked (a thread that has not run since its last sample keeps its stacks)",
    ),
    Field::counter(
        "offcpu_samples_lost",
        "Sampled off-CPU method: samples not taken or not kept (no per-thread state, iterator read errors, selected processes gone before they could be linked, the pending-stack bound reached)",
    ),
    Field::counter(
        "stacks_lost",
        "Stacks not stored because another stack held their stack-map bucket or the map was full; their samples count under [stack lost]",
    ),
    Field::counter(
        "stacks_expired",
        "Samples and stretches whose stacks were gone when read (pending-stack cache full)",
    ),
    Field::counter(
        "stacks_truncated",
        "Samples and stretches folded into [truncated] because a profile reached its distinct-stack bound",
    ),
    Field::counter(
        "symbol_lookups",
        "Addresses symbolized (cache misses of the probe's own address cache included)",
    ),
    Field::counter(
        "symbol_misses",
        "Addresses no symbol was found for (shown as module+offset or [unknown])",
    ),
    Field::counter(
        "symbolize_ns",
        "Time spent symbolizing, ns of wall-clock time (waits for the CPU included)",
    ),
    Field::counter(
        "unwind_hints",
        "Frameless functions the BPF side was taught to unwind past (their callers would be missing from frame-pointer stacks)",
    ),
    Field::counter("profiles_written", "Profiles written to flame_dir"),
    Field::counter("files_written", "Files written to flame_dir"),
    Field::counter("bytes_written", "Bytes written to flame_dir"),
    Field::counter(
        "files_removed",
        "Old files removed to keep flame_dir within its bounds",
    ),
    Field::counter(
        "write_errors",
        "Profiles that could not be written (flame_dir missing, refused or full)",
    ),
    Field::counter("pyroscope_pushes", "Profiles pushed to Pyroscope"),
    Field::counter("pyroscope_errors", "Pushes to Pyroscope that failed"),
];

/// Every table, in `.meta` order.
pub fn meta_tables() -> Vec<Table> {
    vec![
        Table::new(
            STATS_TABLE,
            "stackprobe",
            &[&[Field::key("probe", "probe name")], STATS_FIELDS],
        ),
        bpf::loss_table(
            BPF_STATS_TABLE,
            "on-CPU samples, off-CPU stretches (switch method) and off-CPU samples (sampled method) taken",
            "program runs the kernel skipped because a BPF program was already running on that CPU",
            "map inserts refused because a map was full (counts, pending switched-out threads)",
        ),
    ]
}

/// `offcpu_method` (`-M`): how off-CPU time is taken.
pub const METHOD_PARAM: &str = "offcpu_method";
/// `min_block_us` (`-B`): the switch method's shortest recorded stretch.
pub const MIN_BLOCK_PARAM: &str = "min_block_us";
/// Default of [`MIN_BLOCK_PARAM`], µs.
pub const DEFAULT_MIN_BLOCK_US: i64 = 1;
/// Largest [`MIN_BLOCK_PARAM`], µs (a minute).
pub const MAX_MIN_BLOCK_US: i64 = 60_000_000;

/// What stackprobe declares about its run-time control (the `probe` group of its `.meta`):
/// REST name `flamegraph`; snoopers of every kind pick the profiled processes (none: the whole
/// host); sub-probes `oncpu` (bit 1) and `offcpu` (bit 2, off by default); upstream's params
/// `svg_period`, `perf_sample_period`, `flame_dir`, `pyroscope_server` (default empty: no
/// push), `multi_instance`, `native_stack` and `svg_dir` (older upstream's SVG directory,
/// accepted so its documented requests work; SVGs go to `flame_dir` as in upstream HEAD); and
/// ours, `offcpu_method` (`-M`) and `min_block_us` (`-B`). Upstream's `mem`, `mem_glibc` and
/// `io` sub-probes are not produced, so they are not declared (REST refuses them).
pub fn declaration() -> Declaration {
    let mut method = decl::Param::new(
        METHOD_PARAM,
        decl::ParamKind::Choice {
            values: vec!["sampled".into(), "switch".into()],
        },
        ParamValue::Str("sampled".into()),
    );
    method.flag = Some('M');
    let mut min_block = decl::Param::new(
        MIN_BLOCK_PARAM,
        decl::ParamKind::Int {
            min: 0,
            max: MAX_MIN_BLOCK_US,
        },
        ParamValue::Int(DEFAULT_MIN_BLOCK_US),
    );
    min_block.flag = Some('B');
    let params = [
        "svg_period",
        "perf_sample_period",
        "flame_dir",
        "multi_instance",
        "native_stack",
        "svg_dir",
    ]
    .into_iter()
    .filter_map(decl::standard)
    .chain(
        decl::standard("pyroscope_server").map(|p| p.with_default(ParamValue::Str(String::new()))),
    )
    .chain([method, min_block])
    .collect();
    Declaration {
        rest_name: Some("flamegraph".to_string()),
        reload: true,
        snoopers: SnooperKind::ALL.to_vec(),
        sub_probes: vec![
            SubProbe::new("oncpu", BIT_ONCPU),
            SubProbe::new("offcpu", BIT_OFFCPU).off_by_default(),
        ],
        params,
    }
}

/// The `.meta` file (`stackprobe --print-meta`).
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
        let d = declaration();
        d.validate().unwrap();
        assert_eq!(d.sub_probe_bits(&d.default_sub_probes()), Ok(DEFAULT_BITS));
        for not_produced in ["mem", "mem_glibc", "io"] {
            assert!(d.sub_probe(not_produced).is_none());
        }
    }

    #[test]
    fn committed_meta_file_is_current() {
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/stackprobe.meta"))
                .expect("probes/stack/stackprobe.meta");
        assert_eq!(
            committed,
            meta_text(),
            "regenerate with: stackprobe --print-meta > probes/stack/stackprobe.meta"
        );
    }

    #[test]
    fn committed_meta_declares_the_same() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/stackprobe.meta"));
        let root = gala_libconfig::parse_file(path).expect("stackprobe.meta parses");
        assert_eq!(
            Declaration::from_node(&root).expect("valid probe group"),
            Some(declaration())
        );
    }
}
