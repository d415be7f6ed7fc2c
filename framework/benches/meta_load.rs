//! `.meta` loading cost: load time for 1k / 10k / 100k fields (should grow linearly), the cost of
//! refusing a 100k-field file under the daemon's limits, and how long a concurrent registry reader
//! (what ingest and `/status`-like paths do) waits while a 100k-field meta is loaded and installed.
//!
//! Run: `cargo bench -p gala-gopher --bench meta_load`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use gala_gopher::meta::{self, MetaCache, MetaLimits, SchemaRegistry};

fn wide_meta(table: &str, n: usize) -> String {
    let mut s = format!(
        "version = \"1.0.0\";\nmeasurements = ( {{ table_name = \"{table}\"; entity_name = \"{table}\"; fields = (\n"
    );
    for i in 0..n {
        let sep = if i + 1 == n { "" } else { "," };
        s.push_str(&format!(
            "  {{ name = \"f{i}\"; type = \"gauge\"; description = \"field {i}\"; }}{sep}\n"
        ));
    }
    s.push_str("); } );\n");
    s
}

/// Limits wide enough to load `n` fields (the daemon's own limits refuse such files).
fn unbounded(n: usize) -> MetaLimits {
    MetaLimits {
        max_file_bytes: 16 << 20,
        max_fields: n,
        ..MetaLimits::default()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_load(path: &Path, limits: &MetaLimits, runs: usize) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let tables = meta::load_file_with(path, limits).expect("loads");
                let d = t.elapsed();
                std::hint::black_box(tables);
                d
            })
            .collect(),
    )
}

/// Load `path` while a reader thread takes the registry read lock in a loop; returns the load
/// time and the longest single wait of the reader. `under_lock` reproduces the old behaviour
/// (parse while holding the write lock) for comparison.
fn reader_wait(path: &Path, limits: MetaLimits, under_lock: bool) -> (Duration, Duration) {
    let mut reg = SchemaRegistry::new();
    let small = path.with_file_name("small.meta");
    std::fs::write(&small, wide_meta("small", 3)).expect("write");
    reg.add_file(&small).expect("small meta");
    let registry = Arc::new(RwLock::new(reg));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (registry, stop) = (Arc::clone(&registry), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let guard = registry.read().expect("lock");
                std::hint::black_box(guard.get("small"));
                drop(guard);
                worst = worst.max(t.elapsed());
                std::thread::sleep(Duration::from_micros(200));
            }
            worst
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    if under_lock {
        let mut reg = registry.write().expect("lock");
        let tables: Vec<_> = meta::load_file_with(path, &limits)
            .expect("loads")
            .into_iter()
            .map(Arc::new)
            .collect();
        reg.install(path, &tables).expect("install");
    } else {
        let cache = MetaCache::new(limits, Arc::default());
        cache
            .prepare(&registry, &[path.to_path_buf()])
            .expect("prepare");
    }
    let load = t.elapsed();
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let worst = reader.join().expect("reader");
    (load, worst)
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    println!("# .meta load time (one table, N fields; median)");
    println!("| fields | file size | load | per field |");
    println!("|---|---|---|---|");
    let mut per_field = Vec::new();
    for (n, runs) in [(1_000usize, 21), (10_000, 9), (100_000, 5)] {
        let path = dir.path().join(format!("w{n}.meta"));
        let text = wide_meta("w", n);
        std::fs::write(&path, &text).expect("write");
        let d = time_load(&path, &unbounded(n), runs);
        let ns = d.as_nanos() as f64 / n as f64;
        per_field.push(ns);
        println!(
            "| {n} | {:.0} KiB | {:.2} ms | {ns:.0} ns |",
            text.len() as f64 / 1024.0,
            d.as_secs_f64() * 1e3
        );
    }
    println!(
        "per-field cost 100k / 1k: {:.2}x (1.0 = linear)",
        per_field[2] / per_field[0]
    );

    let big = dir.path().join("w100000.meta");
    let daemon = MetaLimits::with_max_fields(64);
    let refusal = median(
        (0..101)
            .map(|_| {
                let t = Instant::now();
                let e = meta::load_file_with(&big, &daemon).expect_err("refused");
                let d = t.elapsed();
                std::hint::black_box(e);
                d
            })
            .collect(),
    );
    println!(
        "\nrefusing the 100k-field file with the daemon's limits: {:.1} µs (median)",
        refusal.as_secs_f64() * 1e6
    );

    println!("\n# registry reader wait while a 100k-field meta is loaded");
    println!("| how | load + install | longest reader wait |");
    println!("|---|---|---|");
    for (label, under_lock) in [
        ("parse outside the lock, swap under it (now)", false),
        ("parse under the write lock (before)", true),
    ] {
        let (load, worst) = reader_wait(&big, unbounded(100_000), under_lock);
        println!(
            "| {label} | {:.1} ms | {:.3} ms |",
            load.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3
        );
    }
}
