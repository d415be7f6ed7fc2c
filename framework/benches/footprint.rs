//! Daemon footprint: RSS idle and with N live series, and `/metrics` server time, measured on the
//! real release daemon with a drop-in probe that prints N/5 rows × 5 gauges once per second.
//!
//! Run: `cargo bench -p gala-gopher --bench footprint` (env `GG_SERIES`, default 100000).

use std::net::TcpListener;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use support::{http_get, metric_value as self_metric, rss_kb};

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let series: usize = std::env::var("GG_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rows = series / 5;
    let dir = tempfile::tempdir()?;
    let probes = dir.path().join("probes");
    support::write_load_probe(&probes, rows)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut daemon = support::spawn_daemon(dir.path(), &dir.path().join("empty"), rows, port, "")?;
    let pid = daemon.id();
    let t0 = Instant::now();
    while http_get(port, "/metrics").is_err() {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_kb(pid);

    // Point the daemon at the probes dir: it picks the drop-in up without a restart.
    std::fs::rename(&probes, dir.path().join("empty"))?;
    let t0 = Instant::now();
    loop {
        let status = http_get(port, "/status")?;
        if status.contains(&format!("\"load\":{rows}")) {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "series did not arrive: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut server_ms = Vec::new();
    let mut client_ms = Vec::new();
    let mut bytes = 0;
    for _ in 0..21 {
        let t = Instant::now();
        let body = http_get(port, "/metrics")?;
        client_ms.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = body.len();
        // The self-metric reports the previous scrape's server time.
        let prev = http_get(port, "/metrics")?;
        if let Some(s) = self_metric(&prev, "gala_gopher_self_scrape_duration_seconds") {
            server_ms.push(s * 1e3);
        }
    }
    let loaded = rss_kb(pid);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "footprint: idle RSS {} kB; {series} series ({rows} rows x 5 gauges): RSS {} kB; /metrics {} kB, \
         server render median {:.1} ms, client round trip median {:.1} ms",
        idle,
        loaded,
        bytes / 1024,
        median(&mut server_ms),
        median(&mut client_ms)
    );
    // SAFETY: kill(2) on our child.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    daemon.wait()?;
    Ok(())
}
