//! Records/s formatting a 10-field record into a Vec sink, flushing once per 1000 records as a
//! probe flushes once per period. Two shapes: a typical mix with floats, and integers/strings
//! only (float `Display` is the costliest field kind).

use std::hint::black_box;
use std::io::{self, Write};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use probe_sdk::record::RecordWriter;

const BATCH: u64 = 1000;

/// A Vec sink that forgets its bytes on flush, so memory stays flat across iterations while
/// every record is still copied into it.
struct VecSink(Vec<u8>);

impl Write for VecSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        black_box(&self.0);
        self.0.clear();
        Ok(())
    }
}

fn ten_field_records(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("10_fields_mixed", |b| {
        let mut w = RecordWriter::new(VecSink(Vec::with_capacity(1 << 20)));
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
        });
    });
    group.bench_function("10_fields_ints_strings", |b| {
        let mut w = RecordWriter::new(VecSink(Vec::with_capacity(1 << 20)));
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
                    .field(black_box(&(i * 13)))
                    .field(black_box(&(i % 100)))
                    .field(black_box("a|b"))
                    .end()
                    .unwrap();
            }
            w.flush().unwrap();
        });
    });
    group.finish();
}

criterion_group!(benches, ten_field_records);
criterion_main!(benches);
