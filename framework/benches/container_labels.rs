//! What container and pod labels cost per record on the ingest path ([`RecordLabels`]):
//! the hit path (labels already computed for the (table, pid), same generation), the path after
//! a container start or stop elsewhere (generation moved, labels recomputed and found equal, so
//! the row keeps its `Arc` and is not re-rendered), and a table without a process field.
//!
//! Run: `cargo bench -p gala-gopher --bench container_labels`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gala_gopher::custom_labels::CustomLabels;
use gala_gopher::meta::{FieldKind, TableSchema};
use gala_gopher::record_labels::{ContainerSource, RecordLabels};

const PIDS: u32 = 1000;

/// 1000 processes in 200 containers with pods, answered from a map (the real source answers
/// from its caches the same way: `container_info::resolver::Containers`).
struct Source {
    generation: AtomicU64,
    labels: HashMap<u32, Vec<(String, String)>>,
}

impl ContainerSource for Source {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
    fn of_pid(&self, pid: u32, _: &[String]) -> Vec<(String, String)> {
        self.labels.get(&pid).cloned().unwrap_or_default()
    }
    fn of_container(&self, _: &str, _: &[String]) -> Vec<(String, String)> {
        Vec::new()
    }
}

fn source() -> Arc<Source> {
    let labels = (0..PIDS)
        .map(|pid| {
            let c = pid % 200;
            let v = vec![
                ("container_id".to_string(), format!("{c:012x}")),
                ("container_name".to_string(), format!("app-{c}")),
                (
                    "container_image".to_string(),
                    "registry.local/app:1.2.3".to_string(),
                ),
                (
                    "pod_id".to_string(),
                    format!("0000{c:04}-1111-2222-3333-444455556666"),
                ),
                ("pod".to_string(), format!("prod/app-{c}-7d9f")),
                ("pod_namespace".to_string(), "prod".to_string()),
            ];
            (10_000 + pid, v)
        })
        .collect();
    Arc::new(Source {
        generation: AtomicU64::new(1),
        labels,
    })
}

fn bench(c: &mut Criterion) {
    let proc = Arc::new(TableSchema::from_fields(
        "proc",
        "proc",
        &[
            ("tgid", FieldKind::Key),
            ("comm", FieldKind::Label),
            ("g", FieldKind::Gauge),
        ],
    ));
    let plain = Arc::new(TableSchema::from_fields(
        "cpu",
        "cpu",
        &[("cpu", FieldKind::Key), ("g", FieldKind::Gauge)],
    ));
    let pids: Vec<String> = (0..PIDS).map(|p| (10_000 + p).to_string()).collect();
    let mut g = c.benchmark_group("container_labels");
    g.throughput(Throughput::Elements(u64::from(PIDS)));

    let src = source();
    let custom = Arc::new(CustomLabels::new());
    let mut r = RecordLabels::new(
        "bench",
        Some(Arc::clone(&custom)),
        Some(src.clone() as Arc<dyn ContainerSource>),
        None,
    )
    .expect("a source");
    g.bench_function("hit", |b| {
        b.iter(|| {
            for p in &pids {
                black_box(r.for_record(&proc, &[p.as_str(), "nginx", "1"], 1_000));
            }
        })
    });
    g.bench_function("recompute_equal_after_generation_change", |b| {
        b.iter(|| {
            src.generation.fetch_add(1, Ordering::Relaxed);
            r.refresh();
            for p in &pids {
                black_box(r.for_record(&proc, &[p.as_str(), "nginx", "1"], 1_000));
            }
        })
    });
    g.bench_function("table_without_process_field", |b| {
        b.iter(|| {
            for p in &pids {
                black_box(r.for_record(&plain, &[p.as_str(), "1"], 1_000));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
