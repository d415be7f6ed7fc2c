//! `GET /status`: the daemon's JSON report of what runs — probes (state, pid, restarts, records,
//! drops, last error), live series per table and the push sinks' counters. Served on the
//! `web_server` port, its router merged into the metrics router by the daemon.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::store::TableStore;
use crate::telemetry::{DropReason, SinkStats, Telemetry};

/// What `GET /status` reads.
#[derive(Clone)]
pub struct StatusState {
    /// Live series per table, machine id.
    pub store: Arc<TableStore>,
    /// Probe and sink counters.
    pub telemetry: Arc<Telemetry>,
}

/// The `GET /status` route, to merge into a server's router.
pub fn router(state: StatusState) -> Router {
    Router::new()
        .route("/status", get(status))
        .with_state(state)
}

async fn status(State(state): State<StatusState>) -> Json<StatusDoc> {
    Json(status_doc(&state.store, &state.telemetry))
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
    pub dropped: BTreeMap<&'static str, u64>,
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
    pub tables: BTreeMap<String, usize>,
    /// Push sinks (Kafka, log files, OTLP); empty when none is configured.
    pub sinks: Vec<SinkStatus>,
    /// The container runtimes (each socket's state, requests, errors) and the cache, once the
    /// container directory runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<serde_json::Value>,
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
    pub streams: BTreeMap<&'static str, StreamStatus>,
    /// Latest error, if any.
    pub last_error: Option<String>,
    /// Unix ms of the latest error.
    pub last_error_ms: Option<u64>,
}

fn sink_status(s: &SinkStats) -> SinkStatus {
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
        containers: tel.containers.get().map(|c| c.containers().status()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;
    use crate::config::WebServer;
    use crate::export::http::{self, MetricsState};
    use crate::export::prometheus::RenderOptions;
    use crate::store::StoreLimits;
    use crate::telemetry::ProbeState;

    /// Status line and body of one `METHOD PATH` request.
    fn request(port: u16, method: &str, path: &str) -> (String, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text.lines().next().unwrap_or_default().to_string();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_is_served_beside_metrics() {
        let store = Arc::new(TableStore::new(
            StoreLimits {
                max_tables: 8,
                max_records: 8,
                record_timeout_ms: 60_000,
            },
            "m1",
        ));
        let telemetry = Arc::new(Telemetry::default());
        let p = telemetry.probe("tcp");
        p.set_state(ProbeState::Running);
        p.pid.store(42, Ordering::Relaxed);
        p.records.store(7, Ordering::Relaxed);
        let metrics = MetricsState::new(
            Arc::clone(&store),
            Arc::clone(&telemetry),
            RenderOptions::default(),
            0,
        );
        let counters = metrics.counters();
        let app = http::router(metrics).merge(router(StatusState { store, telemetry }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(http::serve(
            listener,
            app,
            http::HttpLimits::from(&WebServer::default()),
            counters,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));

        let answers = tokio::task::spawn_blocking(move || {
            [
                request(port, "GET", "/status"),
                request(port, "GET", "/metrics"),
                request(port, "POST", "/status"),
                request(port, "GET", "/nope"),
            ]
        })
        .await
        .unwrap();
        let [status, metrics, post, missing] = answers;
        assert!(status.0.contains(" 200 "), "{status:?}");
        assert_eq!(
            status.1,
            r#"{"machine_id":"m1","probes":[{"name":"tcp","state":"running","pid":42,"restarts":0,"records":7,"dropped":{},"last_record_ms":null,"last_error":null}],"tables":{},"sinks":[]}"#
        );
        assert!(metrics.0.contains(" 200 "), "{metrics:?}");
        assert!(metrics.1.contains("gala_gopher_self_"), "{}", metrics.1);
        assert!(post.0.contains(" 405 "), "{post:?}");
        assert!(missing.0.contains(" 404 "), "{missing:?}");

        let _ = stop.send(true);
        let _ = server.await;
    }
}
