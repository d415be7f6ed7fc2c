//! Ingest throughput through a real pipe: a child process (this same binary, in writer mode)
//! writes records as fast as it can; the daemon's ingest path (framer → parser → schema lookup →
//! store) consumes them. Reports records/s and the daemon side's CPU time.
//!
//! Run: `cargo bench -p gala-gopher --bench ingest` (env `GG_BENCH_RECORDS` to change the count;
//! `GG_BENCH_PER_PERIOD=1` declares the two counters `period: "delta"`, so the store derives
//! their per-period change on every record: the cost of upstream's counter semantics).

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use gala_gopher::ingest::{Ingest, LogEvents};
use gala_gopher::meta::SchemaRegistry;
use gala_gopher::store::{StoreLimits, TableStore};
use gala_gopher::telemetry::{DropReason, ProbeStats};

const KEYS: usize = 1000;
const META: &str = r#"version = "1.0.0"
measurements: (
  { table_name: "bench"; entity_name: "bench";
    fields: (
      { description: "pid"; type: "key"; name: "tgid"; },
      { description: "command"; type: "label"; name: "comm"; },
      { description: "g1"; type: "gauge"; name: "g1"; },
      { description: "g2"; type: "gauge"; name: "g2"; },
      { description: "c1"; type: "counter"; name: "c1"; },
      { description: "c2"; type: "counter"; name: "c2"; }
    );
  }
);
"#;

fn writer(records: usize) -> std::io::Result<()> {
    let mut block = Vec::new();
    for k in 0..KEYS {
        writeln!(
            block,
            "|bench|{}|nginx|{}.25|{}|{}|{}|",
            10_000 + k,
            k,
            k * 3,
            k * 1000,
            k * 7
        )?;
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut left = records;
    while left >= KEYS {
        out.write_all(&block)?;
        left -= KEYS;
    }
    out.flush()
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    if let Ok(n) = std::env::var("GG_FLOOD") {
        return Ok(writer(n.parse()?)?);
    }
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let records: usize = std::env::var("GG_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let dir = tempfile::tempdir()?;
    let meta = dir.path().join("bench.meta");
    let per_period = std::env::var_os("GG_BENCH_PER_PERIOD").is_some();
    let meta_text = if per_period {
        META.replace(
            "type: \"counter\";",
            "type: \"counter\"; period: \"delta\";",
        )
    } else {
        META.to_string()
    };
    std::fs::write(&meta, meta_text)?;
    let mut reg = SchemaRegistry::default();
    reg.add_file(&meta)?;
    let store = Arc::new(TableStore::new(StoreLimits::default(), "bench-machine"));
    let ingest = Ingest::new(
        Arc::new(RwLock::new(reg)),
        Arc::clone(&store),
        Arc::new(LogEvents),
        64 * 1024,
        64,
    );
    let stats = Arc::new(ProbeStats::new("bench"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (elapsed, cpu) = rt.block_on(async {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .env("GG_FLOOD", records.to_string())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        ingest.consume_reader(Arc::clone(&stats), stdout).await;
        let elapsed = t0.elapsed();
        let cpu = cpu_seconds() - cpu0;
        child.wait().await?;
        anyhow::Ok((elapsed, cpu))
    })?;
    let accepted = stats.records.load(Ordering::Relaxed);
    let dropped: u64 = DropReason::ALL.iter().map(|r| stats.dropped(*r)).sum();
    anyhow::ensure!(
        accepted as usize == records - records % KEYS,
        "accepted {accepted} of {records}, dropped {dropped}"
    );
    let rate = accepted as f64 / elapsed.as_secs_f64();
    println!(
        "ingest{}: {accepted} records in {:.3} s = {:.0} records/s; daemon CPU {:.3} s ({:.0} ns/record, {:.0}% of one core); series {}; RSS {} kB",
        if per_period { " (per-period counters)" } else { "" },
        elapsed.as_secs_f64(),
        rate,
        cpu,
        cpu * 1e9 / accepted as f64,
        100.0 * cpu / elapsed.as_secs_f64(),
        store.series_per_table().iter().map(|(_, n)| n).sum::<usize>(),
        rss_kb()
    );
    Ok(())
}
