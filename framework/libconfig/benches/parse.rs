//! Parse speed of upstream-shaped documents (the v2023 daemon config and a large `.meta`).

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn big_meta(tables: usize, fields: usize) -> String {
    let mut s = String::from("version = \"1.0.0\"\nmeasurements:\n(\n");
    for t in 0..tables {
        let _ = write!(s, "  {{\n    table_name: \"table_{t}\",\n    entity_name: \"entity_{t}\",\n    fields:\n    (\n");
        for f in 0..fields {
            let kind = if f == 0 { "key" } else { "gauge" };
            let sep = if f + 1 == fields { "" } else { "," };
            let _ = writeln!(s, "      {{ description: \"field {f} of table {t}\", type: \"{kind}\", name: \"f_{f}\" }}{sep}");
        }
        let sep = if t + 1 == tables { "" } else { "," };
        let _ = writeln!(s, "    )\n  }}{sep}");
    }
    s.push_str(")\n");
    s
}

fn bench(c: &mut Criterion) {
    let conf = include_str!("../tests/fixtures/upstream-v2023.conf");
    let meta = big_meta(50, 40);
    let mut g = c.benchmark_group("parse_str");
    g.throughput(Throughput::Bytes(conf.len() as u64));
    g.bench_function("upstream_v2023_conf", |b| {
        b.iter(|| gala_libconfig::parse_str(black_box(conf), Path::new("g.conf")).unwrap())
    });
    g.throughput(Throughput::Bytes(meta.len() as u64));
    g.bench_function("meta_50x40", |b| {
        b.iter(|| gala_libconfig::parse_str(black_box(&meta), Path::new("x.meta")).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
