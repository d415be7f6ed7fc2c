//! Records/s formatting a 10-field record (key, label, integers, floats, an escaped string)
//! into a Vec sink, flushing once per 1000 records as a probe flushes once per period.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use probe_sdk::record::RecordWriter;

const BATCH: u64 = 1000;

fn ten_field_records(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("10_fields_x1000_into_vec", |b| {
        let mut w = RecordWriter::new(Vec::with_capacity(1 << 20));
        b.iter(|| {
            for i in 0..BATCH {
                w.record("tcp_metric")
                    .field(black_box(&(1000 + i as u32)))
                    .field(black_box("nginx"))
                    .field(black_box("client"))
                    .field(black_box("10.0.0.1"))
                    .field(black_box(&40000u16))
                    .field(black_box(&(i * 1024)))
                    .field(black_box(&(i * 7)))
                    .field(black_box(&12.5f64))
                    .field(black_box(&(i as f64 / 3.0)))
                    .field(black_box("a|b"))
                    .end()
                    .unwrap();
            }
            w.flush().unwrap();
            // Keep the sink from growing without bound across iterations.
            let sink = std::mem::replace(&mut w, RecordWriter::new(Vec::new())).into_inner();
            let mut sink = black_box(sink);
            sink.clear();
            w = RecordWriter::new(sink);
        });
    });
    group.finish();
}

criterion_group!(benches, ten_field_records);
criterion_main!(benches);
