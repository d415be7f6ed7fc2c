//! Memory of the real daemon under many concurrent `/metrics` clients: RSS with N live series and
//! no scrape running ("idle"), then peak (VmHWM, reset before each burst) and after-burst RSS
//! while 100 and 200 clients scrape in a loop for a few seconds. Runs once with the default
//! `max_requests` (40) and once unlimited (`max_requests = 0`), where only the shared render
//! bounds memory. Target: peak < 2 × idle.
//!
//! Run: `cargo bench -p gala-gopher --bench scrape_concurrency` (env `GG_SERIES`, default 100000;
//! `GG_BURST_SECS`, default 5). Needs root for `/proc/PID/clear_refs`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use support::{http_get, metric_value, rss_kb, status_kb};

struct Daemon {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn start(series: usize, max_requests: u32) -> anyhow::Result<Daemon> {
    let rows = series / 5;
    let dir = tempfile::tempdir()?;
    let probes = dir.path().join("probes");
    support::write_load_probe(&probes, rows)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = support::spawn_daemon(
        dir.path(),
        &probes,
        rows,
        port,
        &format!("max_requests = {max_requests};"),
    )?;
    let d = Daemon {
        child,
        port,
        _dir: dir,
    };
    let t0 = Instant::now();
    loop {
        if let Ok(status) = http_get(port, "/status") {
            if status.contains(&format!("\"load\":{rows}")) {
                break;
            }
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(180),
            "series did not arrive"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(d)
}

/// One scrape; returns the status code and the body length.
fn scrape(port: u16) -> std::io::Result<(u16, usize)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let mut total = 0;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16)]);
        }
        total += n;
    }
    let code = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, total))
}

struct Burst {
    peak_kb: u64,
    after_kb: u64,
    ok: u64,
    refused: u64,
    failed: u64,
}

/// `clients` threads scrape in a loop for `secs`; peak RSS from VmHWM reset just before.
fn burst(pid: u32, port: u16, clients: usize, secs: u64) -> Burst {
    let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (ok, refused, failed) = (ok.clone(), refused.clone(), failed.clone());
            std::thread::spawn(move || {
                while Instant::now() < end {
                    match scrape(port) {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok((503, _)) => refused.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    // Without VmHWM reset, sample VmRSS instead.
    let mut sampled = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        sampled = sampled.max(rss_kb(pid));
        std::thread::sleep(Duration::from_millis(10));
    }
    for t in threads {
        let _ = t.join();
    }
    let peak_kb = if hwm_reset {
        status_kb(pid, "VmHWM:")
    } else {
        sampled
    };
    std::thread::sleep(Duration::from_secs(2));
    Burst {
        peak_kb,
        after_kb: rss_kb(pid),
        ok: ok.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let series = env("GG_SERIES", 100_000) as usize;
    let secs = env("GG_BURST_SECS", 5);
    let mut worst: f64 = 0.0;
    for max_requests in [40, 0] {
        let d = start(series, max_requests)?;
        let pid = d.child.id();
        let unscraped = rss_kb(pid);
        let (_, body) = scrape(d.port)?;
        std::thread::sleep(Duration::from_secs(2));
        let idle = rss_kb(pid);
        println!(
            "scrape_concurrency: {series} series, max_requests = {max_requests}: RSS before any scrape {unscraped} kB, \
             idle {idle} kB, body {} kB",
            body / 1024
        );
        for clients in [100, 200] {
            let b = burst(pid, d.port, clients, secs);
            let ratio = b.peak_kb as f64 / idle.max(1) as f64;
            worst = worst.max(ratio);
            let renders = http_get(d.port, "/metrics")
                .ok()
                .and_then(|m| metric_value(&m, "gala_gopher_self_scrape_renders_total"))
                .unwrap_or(0.0);
            println!(
                "  {clients} clients x {secs} s: peak {} kB ({ratio:.2} x idle), after {} kB; \
                 {} ok, {} 503, {} failed; renders so far {renders}",
                b.peak_kb, b.after_kb, b.ok, b.refused, b.failed
            );
        }
    }
    println!(
        "scrape_concurrency: worst peak/idle {worst:.2} (target < 2){}",
        if worst < 2.0 { "" } else { " — MISSED" }
    );
    Ok(())
}
