//! Parse speed, and its scaling with document size: one group with 10k/80k/160k keys and
//! documents of 5k/20k/50k groups should take time proportional to their size (compare the
//! reported throughput, which should stay flat).

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

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

/// `g = { k0 = 0; k1 = 1; ... };`, one key per line.
fn keys_in_one_group(keys: usize) -> String {
    let mut s = String::from("g = {\n");
    for k in 0..keys {
        let _ = writeln!(s, "  key_{k} = {k};");
    }
    s.push_str("};\n");
    s
}

/// Top-level groups of a few settings each (the shape of a large generated config).
fn many_groups(groups: usize) -> String {
    let mut s = String::new();
    for g in 0..groups {
        let _ = writeln!(
            s,
            "group_{g} = {{\n  name = \"probe {g}\";\n  param = \"-t 5 -l warn\";\n  switch = \"on\";\n  port = {g};\n  ratio = 0.5;\n  tags = [\"a\", \"b\"];\n}};"
        );
    }
    s
}

/// A daemon config in upstream's layout (written for this bench).
fn daemon_conf() -> String {
    let mut s = String::from(
        "global = {\n  log_file_name = \"gopher.log\";\n  log_level = \"info\";\n};\nweb_server = { port = 8888; };\nprobes = (\n",
    );
    for p in 0..20 {
        let _ = writeln!(
            s,
            "  {{\n    name = \"probe{p}\";\n    command = \"/opt/probes/p{p}\"\n    param = \"-t 5\";\n    start_check = \"ps -ef | grep 'a\\|b' | wc -l\";\n    switch = \"auto\";\n  }},"
        );
    }
    s.push_str(");\n");
    s
}

fn bench(c: &mut Criterion) {
    let conf = daemon_conf();
    let meta = big_meta(50, 40);
    let mut g = c.benchmark_group("parse_str");
    g.throughput(Throughput::Bytes(conf.len() as u64));
    g.bench_function("daemon_conf", |b| {
        b.iter(|| gala_libconfig::parse_str(black_box(&conf), Path::new("g.conf")).unwrap())
    });
    g.throughput(Throughput::Bytes(meta.len() as u64));
    g.bench_function("meta_50x40", |b| {
        b.iter(|| gala_libconfig::parse_str(black_box(&meta), Path::new("x.meta")).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("scaling");
    g.sample_size(10);
    for keys in [10_000, 80_000, 160_000] {
        let doc = keys_in_one_group(keys);
        g.throughput(Throughput::Bytes(doc.len() as u64));
        g.bench_with_input(BenchmarkId::new("keys_in_one_group", keys), &doc, |b, d| {
            b.iter(|| gala_libconfig::parse_str(black_box(d), Path::new("k.conf")).unwrap())
        });
    }
    for groups in [5_000, 20_000, 50_000] {
        let doc = many_groups(groups);
        g.throughput(Throughput::Bytes(doc.len() as u64));
        g.bench_with_input(BenchmarkId::new("many_groups", groups), &doc, |b, d| {
            b.iter(|| gala_libconfig::parse_str(black_box(d), Path::new("g.conf")).unwrap())
        });
    }
    // A single line: positions must not be recomputed from the line start each time.
    let one_line = keys_in_one_group(80_000).replace('\n', " ");
    g.throughput(Throughput::Bytes(one_line.len() as u64));
    g.bench_function("keys_on_one_line/80000", |b| {
        b.iter(|| gala_libconfig::parse_str(black_box(&one_line), Path::new("l.conf")).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
