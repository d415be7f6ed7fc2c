//! `/metrics` as Prometheus scrapes it, over a real socket: time to the first response byte and
//! to the last one, for 1k / 10k / 100k live series, in the classic text format, gzip-compressed,
//! OpenMetrics, and OpenMetrics + gzip (what Prometheus negotiates). The server is the daemon's
//! own (`export::http::router` on `export::http::serve`) over an in-process store, so the figures
//! are the server's work plus one loopback client reading as fast as it can. "server" is what the
//! daemon reports as `gala_gopher_self_scrape_duration_seconds`: request to render complete.
//! "text, whole page" is the reference: the page rendered into one buffer before the first byte
//! is sent, as `/metrics` worked before streaming. The cases take turns, so machine load hits
//! them alike; min is the best of the runs (a quiet machine), p50 the median.
//!
//! Run: `cargo bench -p gala-gopher --bench metrics_endpoint` (env `GG_SERIES`, comma-separated,
//! default `1000,10000,100000`; `GG_RUNS`, scrapes per case, default 30).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
#[allow(dead_code)] // the daemon helpers are for the other benches
mod support;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use gala_gopher::export::http::{
    render_all, return_large_buffers_on_free, router, serve, HttpLimits, MetricsState,
};
use gala_gopher::export::prometheus::RenderOptions;
use gala_gopher::telemetry::Telemetry;

/// A request variant: name and extra request headers (`/whole` is the reference server below).
const CASES: &[(&str, &str)] = &[
    ("text, whole page", "X-Path: /whole\r\n"),
    ("text", ""),
    ("text+gzip", "Accept-Encoding: gzip\r\n"),
    (
        "openmetrics",
        "Accept: application/openmetrics-text;version=1.0.0\r\n",
    ),
    (
        "openmetrics+gzip",
        "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
         version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n\
         Accept-Encoding: gzip\r\n",
    ),
];

struct Sample {
    first_byte: Duration,
    total: Duration,
    bytes: usize,
    head: String,
}

/// The reference: the whole page rendered into one buffer before the first byte is sent (how
/// `/metrics` worked before streaming), on the same server.
async fn whole_page(State(state): State<MetricsState>) -> Response {
    let started = Instant::now();
    let telemetry = Arc::clone(&state.telemetry);
    let body = tokio::task::spawn_blocking(move || render_all(&state))
        .await
        .unwrap_or_default();
    telemetry
        .last_scrape_us
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn scrape(port: u16, headers: &str) -> std::io::Result<Sample> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let path = if headers.starts_with("X-Path: /whole") {
        "/whole"
    } else {
        "/metrics"
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let t0 = Instant::now();
    s.write_all(req.as_bytes())?;
    let mut first_byte = None;
    let mut bytes = 0;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| t0.elapsed());
        if head.len() < 1024 {
            head.extend_from_slice(&buf[..n.min(1024)]);
        }
        bytes += n;
    }
    let total = t0.elapsed();
    let head = String::from_utf8_lossy(&head);
    let head = head.split("\r\n\r\n").next().unwrap_or("").to_string();
    Ok(Sample {
        first_byte: first_byte.unwrap_or(total),
        total,
        bytes,
        head,
    })
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let series: Vec<usize> = std::env::var("GG_SERIES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let runs: usize = std::env::var("GG_RUNS").map_or(Ok(30), |s| s.parse())?;
    // As the daemon does at start.
    return_large_buffers_on_free();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "{:>7} {:<17} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}  content-type / encoding",
        "series", "format", "bytes", "server p50", "ttfb min", "ttfb p50", "total min", "total p50",
    );
    for n in series {
        let store = Arc::new(support::populated_store(n));
        let telemetry = Arc::new(Telemetry::default());
        let state = MetricsState::new(store, Arc::clone(&telemetry), RenderOptions::default(), 0);
        let counters = state.counters();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let port = listener.local_addr()?.port();
        let limits = HttpLimits {
            max_connections: 0,
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(state.clone()).merge(
            axum::Router::new()
                .route("/whole", axum::routing::get(whole_page))
                .with_state(state),
        );
        let server = rt.spawn(serve(listener, app, limits, counters, async move {
            let _ = stop_rx.await;
        }));
        // Round robin over the cases, so that they all see the same machine load.
        for (_, headers) in CASES {
            for _ in 0..3 {
                scrape(port, headers)?;
            }
        }
        let mut results: Vec<Vec<(Sample, Duration)>> = CASES.iter().map(|_| Vec::new()).collect();
        for _ in 0..runs {
            for ((_, headers), res) in CASES.iter().zip(&mut results) {
                // Let the previous response's clean-up (freeing an 11 MB body) finish first.
                std::thread::sleep(Duration::from_millis(20));
                let s = scrape(port, headers)?;
                // Request start to render complete, as the daemon reports it.
                let server =
                    Duration::from_micros(telemetry.last_scrape_us.load(Ordering::Relaxed));
                res.push((s, server));
            }
        }
        for ((name, _), res) in CASES.iter().zip(results) {
            let mut first: Vec<Duration> = res.iter().map(|(s, _)| s.first_byte).collect();
            let mut total: Vec<Duration> = res.iter().map(|(s, _)| s.total).collect();
            let mut server: Vec<Duration> = res.iter().map(|(_, d)| *d).collect();
            let Some((last, _)) = res.last() else {
                continue;
            };
            let header = |h: &str| {
                last.head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(h).then(|| v.trim().to_string())
                    })
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{n:>7} {name:<17} {:>10} {:>10.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {} / {}",
                last.bytes,
                ms(percentile(&mut server, 0.5)),
                ms(percentile(&mut first, 0.0)),
                ms(percentile(&mut first, 0.5)),
                ms(percentile(&mut total, 0.0)),
                ms(percentile(&mut total, 0.5)),
                header("content-type"),
                header("content-encoding"),
            );
        }
        let _ = stop_tx.send(());
        let _ = rt.block_on(server);
    }
    Ok(())
}
