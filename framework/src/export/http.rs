//! The metrics HTTP server (`web_server`): `GET /` and `GET /metrics` (Prometheus text),
//! `GET /status` (JSON). Other paths 404, other methods 405.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::prometheus::{render, RenderOptions};
use crate::ingest::now_ms;
use crate::store::TableStore;
use crate::telemetry::{render_self_metrics, DropReason, Telemetry};

/// Shared state of the metrics server.
#[derive(Clone)]
pub struct MetricsState {
    /// The table store to render.
    pub store: Arc<TableStore>,
    /// Self-metrics.
    pub telemetry: Arc<Telemetry>,
    /// Rendering options.
    pub options: RenderOptions,
}

/// The router (also used by tests without a socket).
pub fn router(state: MetricsState) -> Router {
    Router::new()
        .route("/", get(metrics))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// Render the full `/metrics` body.
pub fn render_all(state: &MetricsState) -> String {
    let mut out = String::with_capacity(64 * 1024);
    render(&state.store, state.options, now_ms(), &mut out);
    render_self_metrics(&state.telemetry, &state.store, &mut out);
    out
}

async fn metrics(State(state): State<MetricsState>) -> Response {
    let started = Instant::now();
    let st = state.clone();
    let body = match tokio::task::spawn_blocking(move || render_all(&st)).await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("render failed: {e}\n"),
            )
                .into_response()
        }
    };
    state
        .telemetry
        .last_scrape_us
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    state.telemetry.scrapes.fetch_add(1, Ordering::Relaxed);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// One probe in `GET /status`.
#[derive(Debug, Serialize)]
pub struct ProbeStatus {
    /// Probe name.
    pub name: String,
    /// stopped / running / backoff / failed.
    pub state: String,
    /// Pid of the running process, if any.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u64,
    /// Records accepted.
    pub records: u64,
    /// Dropped lines by reason (non-zero only).
    pub dropped: std::collections::BTreeMap<&'static str, u64>,
    /// Unix ms of the last record, if any.
    pub last_record_ms: Option<u64>,
    /// Last error (exit status, spawn failure, unsupported kernel …).
    pub last_error: Option<String>,
}

/// `GET /status` body.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    /// Machine id used in labels.
    pub machine_id: String,
    /// Probes, sorted by name.
    pub probes: Vec<ProbeStatus>,
    /// Live series per table.
    pub tables: std::collections::BTreeMap<String, usize>,
    /// Push sinks (Kafka, log files, OTLP); empty when none is configured.
    pub sinks: Vec<SinkStatus>,
}

/// Counters of one stream of a push sink in `GET /status`.
#[derive(Debug, Serialize)]
pub struct StreamStatus {
    /// Delivered.
    pub sent: u64,
    /// Given up on.
    pub failed: u64,
    /// Dropped because the queue was full.
    pub dropped: u64,
    /// Waiting in the queue.
    pub queue_depth: u64,
}

/// One push sink in `GET /status`.
#[derive(Debug, Serialize)]
pub struct SinkStatus {
    /// `kafka`, `logs` or `otlp`.
    pub name: &'static str,
    /// Queue capacity per stream.
    pub queue_capacity: u64,
    /// Per stream (`metric`, `event`, `meta`).
    pub streams: std::collections::BTreeMap<&'static str, StreamStatus>,
    /// Latest error, if any.
    pub last_error: Option<String>,
    /// Unix ms of the latest error.
    pub last_error_ms: Option<u64>,
}

fn sink_status(s: &crate::telemetry::SinkStats) -> SinkStatus {
    let (ms, err) = s
        .last_error()
        .map_or((None, None), |(t, e)| (Some(t), Some(e)));
    SinkStatus {
        name: s.name,
        queue_capacity: s.capacity,
        streams: s
            .streams()
            .map(|st| {
                let c = s.stream(st);
                (
                    st.as_str(),
                    StreamStatus {
                        sent: c.sent.load(Ordering::Relaxed),
                        failed: c.failed.load(Ordering::Relaxed),
                        dropped: c.dropped.load(Ordering::Relaxed),
                        queue_depth: c.depth.load(Ordering::Relaxed),
                    },
                )
            })
            .collect(),
        last_error: err,
        last_error_ms: ms,
    }
}

/// Build the status document.
pub fn status_doc(store: &TableStore, tel: &Telemetry) -> StatusDoc {
    let probes = tel
        .probes()
        .iter()
        .map(|p| {
            let pid = p.pid.load(Ordering::Relaxed);
            let last = p.last_record_ms.load(Ordering::Relaxed);
            ProbeStatus {
                name: p.name.to_string(),
                state: p.state().as_str().to_string(),
                pid: (pid != 0).then_some(pid),
                restarts: p.restarts.load(Ordering::Relaxed),
                records: p.records.load(Ordering::Relaxed),
                dropped: DropReason::ALL
                    .iter()
                    .map(|r| (r.as_str(), p.dropped(*r)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
                last_record_ms: (last != 0).then_some(last),
                last_error: p.last_error(),
            }
        })
        .collect();
    StatusDoc {
        machine_id: store.machine_id().to_string(),
        probes,
        tables: store.series_per_table().into_iter().collect(),
        sinks: tel.sinks.all().iter().map(|s| sink_status(s)).collect(),
    }
}

async fn status(State(state): State<MetricsState>) -> Json<StatusDoc> {
    Json(status_doc(&state.store, &state.telemetry))
}

/// Bind and serve until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: MetricsState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
