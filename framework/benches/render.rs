//! `/metrics` render time with 1k / 10k / 100k live series.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gala_gopher::export::prometheus::{render, RenderOptions};
use gala_gopher::meta::{Field, FieldKind, TableSchema};
use gala_gopher::store::{Scratch, StoreLimits, TableStore};

/// A store with `series` live series: tables of 1000 rows × 5 gauge fields (+ key and label).
pub fn populated(series: usize) -> TableStore {
    let fields_per_row = 5;
    let rows = series / fields_per_row;
    let tables = rows.div_ceil(1000);
    let store = TableStore::new(
        StoreLimits {
            max_tables: 1024,
            max_records: 1000,
            record_timeout_ms: u64::MAX / 2,
        },
        "0d2f5a9c1e7b4e6f8a3b2c1d0e9f8a7b",
    );
    let sc = &mut Scratch::default();
    let mut made = 0;
    for t in 0..tables {
        let mut fields = vec![
            Field::new("tgid", FieldKind::Key, "process id"),
            Field::new("comm", FieldKind::Label, "command"),
        ];
        for f in 0..fields_per_row {
            fields.push(Field::new(
                format!("metric_{f}"),
                FieldKind::Gauge,
                format!("metric {f}"),
            ));
        }
        let schema = Arc::new(TableSchema {
            table_name: format!("bench_{t}"),
            entity_name: format!("bench_{t}"),
            version: "1.0.0".into(),
            fields,
            origin: "bench".into(),
            derives: false,
            trace: false,
        });
        for r in 0..1000 {
            if made >= rows {
                break;
            }
            let key = (100_000 + r).to_string();
            let vals: Vec<String> = (0..fields_per_row)
                .map(|f| format!("{}.{}", r * 7 + f, f))
                .collect();
            let mut line: Vec<&str> = vec![&key, "nginx"];
            line.extend(vals.iter().map(String::as_str));
            let _ = store.upsert(&schema, &line, 1, sc);
            made += 1;
        }
    }
    store
}

fn bench_render(c: &mut Criterion) {
    let mut g = c.benchmark_group("render");
    g.sample_size(20);
    for series in [1_000usize, 10_000, 100_000] {
        let store = populated(series);
        let mut out = String::new();
        render(&store, RenderOptions::default(), 2, &mut out);
        let lines = out.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(
            lines, series,
            "populated store has the intended series count"
        );
        g.bench_with_input(BenchmarkId::from_parameter(series), &store, |b, store| {
            b.iter(|| {
                let mut out = String::with_capacity(1 << 20);
                render(store, RenderOptions::default(), 2, &mut out);
                out
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
