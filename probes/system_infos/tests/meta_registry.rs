//! One metric name, one meaning: `system_proc` (this probe) and taskprobe's `proc_*` tables share
//! the entity `proc`, so the daemon refuses to load the two `.meta` files together if a metric
//! name of that entity had two types or period semantics. The committed files go through the
//! daemon's own loader and schema registry, in both counter modes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gala_gopher::meta::{self, CounterMode, MetaError, MetaLimits, SchemaRef, SchemaRegistry};

/// The committed `.meta` files of the two probes that export entity `proc`.
fn proc_metas() -> [PathBuf; 2] {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        dir.join("system_infos.meta"),
        dir.join("../proc/taskprobe.meta"),
    ]
}

/// Loads `path` within `limits` and installs its tables, as the daemon does.
fn install(
    reg: &mut SchemaRegistry,
    path: &Path,
    limits: &MetaLimits,
) -> Result<(), Box<MetaError>> {
    let tables: Vec<SchemaRef> = meta::load_file_with(path, limits)?
        .into_iter()
        .map(Arc::new)
        .collect();
    Ok(reg.install(path, &tables)?)
}

#[test]
fn system_infos_and_taskprobe_load_together_in_both_counter_modes() {
    for mode in [CounterMode::Upstream, CounterMode::Prometheus] {
        let limits = MetaLimits {
            counter_mode: mode,
            ..MetaLimits::default()
        };
        // Either order: the check runs against whatever is already installed.
        for order in [[0, 1], [1, 0]] {
            let paths = proc_metas();
            let mut reg = SchemaRegistry::new();
            for i in order {
                install(&mut reg, &paths[i], &limits)
                    .unwrap_or_else(|e| panic!("{mode:?}: {} refused: {e}", paths[i].display()));
            }
            for table in ["system_proc", "proc_io", "proc_cpu", "proc_syscall"] {
                let t = reg
                    .get(table)
                    .unwrap_or_else(|| panic!("{table} not loaded"));
                assert_eq!(t.entity_name, "proc", "{table}");
            }
        }
    }
}

/// The check the test above relies on is real: taskprobe's former `proc_io.read_bytes` (a
/// cumulative counter) next to `system_proc.read_bytes` (a per-period gauge) is refused.
#[test]
fn a_proc_metric_with_another_meaning_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("old_proc_io.meta");
    std::fs::write(
        &old,
        r#"version = "1.0.0"
measurements:
(
    {
        table_name: "old_proc_io",
        entity_name: "proc",
        fields:
        (
            { description: "ID of the process", type: "key", name: "tgid" },
            { description: "bytes of completed block read requests", type: "counter", name: "read_bytes" }
        )
    }
)
"#,
    )
    .expect("write meta");
    let limits = MetaLimits::default();
    let mut reg = SchemaRegistry::new();
    let [system_infos, _] = proc_metas();
    install(&mut reg, &system_infos, &limits).expect("system_infos.meta loads");
    match install(&mut reg, &old, &limits).map_err(|e| *e) {
        Err(e @ MetaError::MetricClash(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("gala_gopher_proc_read_bytes") && text.contains("system_proc"),
                "{text}"
            );
        }
        other => panic!("expected a metric clash, got {other:?}"),
    }
}
