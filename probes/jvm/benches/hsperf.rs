//! Cost of one JVM per period: parse and map a real hsperfdata file (captured from a JDK 17
//! JVM, tests/fixtures/jdk17-serial.hsperf), and read + parse + map + write the records of 50
//! such files from disk (what a cycle does per JVM, without the `/proc` status and stat reads).
//! Target: < 1 ms per JVM per period.

use std::fs::File;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jvmprobe::collect::{Counters, Cycle, Jvm};
use jvmprobe::{hsperf, report, sample};
use probe_sdk::record::RecordWriter;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jdk17-serial.hsperf"
);
const JVMS: u64 = 50;

/// A sink that forgets its bytes on flush (one flush per period).
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

fn one_jvm(c: &mut Criterion) {
    let bytes = std::fs::read(FIXTURE).expect("fixture");
    let mut group = c.benchmark_group("hsperf");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_map_one_real_file", |b| {
        b.iter(|| {
            let pd = hsperf::parse(black_box(&bytes)).expect("parses");
            black_box(sample::map(&pd))
        })
    });
    group.finish();
}

fn fifty_jvms(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = std::fs::read(FIXTURE).expect("fixture");
    let paths: Vec<_> = (0..JVMS)
        .map(|i| {
            let p = dir.path().join(i.to_string());
            std::fs::write(&p, &bytes).expect("copy");
            p
        })
        .collect();
    let mut out = RecordWriter::new(VecSink(Vec::with_capacity(1 << 20)));
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut group = c.benchmark_group("hsperf");
    group.throughput(Throughput::Elements(JVMS));
    group.bench_function("read_parse_map_write_50_jvms", |b| {
        b.iter(|| {
            let mut cycle = Cycle::default();
            for (pid, p) in paths.iter().enumerate() {
                buf.clear();
                let mut f = File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(p)
                    .expect("open");
                let _ = f.metadata().expect("fstat");
                f.read_to_end(&mut buf).expect("read");
                let s = sample::map(&hsperf::parse(&buf).expect("parses"));
                cycle.jvms.push(Jvm {
                    pid: pid as u32,
                    sample: Some(s),
                    cpu_secs: Some(1.0),
                    scrape_secs: 0.0001,
                    errors: 0,
                });
            }
            report::write_cycle(&mut out, &cycle, &Counters::default()).expect("write");
            out.flush().expect("flush");
        })
    });
    group.finish();
}

criterion_group!(benches, one_jvm, fifty_jvms);
criterion_main!(benches);
