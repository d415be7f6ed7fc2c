//! The metrics HTTP server (`web_server`): `GET /` and `GET /metrics` (Prometheus text). The
//! daemon merges `GET /status` ([`crate::control::status::router`]) into [`router`]. Other paths
//! 404, other methods 405.
//!
//! `/metrics` renders are single-flight: scrapes that arrive while a render runs wait for it and
//! share its body (one reference-counted buffer, never copied per client), and a body still being
//! sent to one scraper is handed to others for up to a second, so memory does not grow with the
//! number of concurrent scrapers; at most `max_requests` wait at once, more get a quick 503. The
//! connection handling (limits, timeouts) is in [`serve`].

mod server;

pub use server::{serve, HttpLimits};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::{watch, Semaphore};

use super::prometheus::{render, RenderOptions};
use crate::clock::now_ms;
use crate::store::TableStore;
use crate::telemetry::{render_self_metrics, HttpCounters, Telemetry};

/// Config section (and `server` label) of the metrics server.
pub const WEB_SERVER: &str = "web_server";

/// Shared state of the metrics server.
#[derive(Clone)]
pub struct MetricsState {
    /// The table store to render.
    pub store: Arc<TableStore>,
    /// Self-metrics.
    pub telemetry: Arc<Telemetry>,
    /// Rendering options.
    pub options: RenderOptions,
    scrape: Arc<ScrapeShare>,
}

/// How long a finished render may be handed to new scrapes, and only while it is still being
/// sent to an earlier one: scrapers in step share a body, a lone scraper always gets a fresh one.
const REUSE_WINDOW: Duration = Duration::from_secs(1);

/// A finished render.
struct Finished {
    /// Render number (`HttpCounters::renders` after it), to recognise it later.
    seq: u64,
    done: Instant,
    body: Bytes,
}

/// The render in flight and the last finished one.
#[derive(Default)]
struct Slots {
    /// Receiver of the running render's body; `None` when no render runs.
    in_flight: Option<watch::Receiver<Option<Bytes>>>,
    latest: Option<Finished>,
}

/// Single-flight rendering and the cap on waiting scrapes.
struct ScrapeShare {
    slots: Mutex<Slots>,
    /// Size of the last body, to allocate the next one once instead of doubling up to it.
    last_len: AtomicUsize,
    /// `max_requests` permits; `None` = unlimited.
    requests: Option<Arc<Semaphore>>,
    max_requests: usize,
    counters: Arc<HttpCounters>,
    refusal_logged: AtomicBool,
}

impl ScrapeShare {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        match self.slots.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// Ends the in-flight render also when it panics, so that a failed render never leaves later
/// scrapes waiting on a dead channel.
struct EndOfRender<'a>(&'a ScrapeShare);

impl Drop for EndOfRender<'_> {
    fn drop(&mut self) {
        self.0.slots().in_flight = None;
    }
}

impl MetricsState {
    /// State of `web_server`: at most `max_requests` `/metrics` requests in flight (0 = no cap).
    /// Registers the server's counters in `telemetry`.
    pub fn new(
        store: Arc<TableStore>,
        telemetry: Arc<Telemetry>,
        options: RenderOptions,
        max_requests: usize,
    ) -> Self {
        let counters = telemetry.http.register(WEB_SERVER);
        MetricsState {
            store,
            telemetry,
            options,
            scrape: Arc::new(ScrapeShare {
                slots: Mutex::new(Slots::default()),
                last_len: AtomicUsize::new(0),
                requests: (max_requests > 0).then(|| Arc::new(Semaphore::new(max_requests))),
                max_requests,
                counters,
                refusal_logged: AtomicBool::new(false),
            }),
        }
    }

    /// Counters of this server (for [`serve`]).
    pub fn counters(&self) -> Arc<HttpCounters> {
        Arc::clone(&self.scrape.counters)
    }
}

/// Have glibc's allocator return every buffer of 1 MiB or more to the system when it is freed.
/// By default the threshold grows to the largest buffer freed so far, so multi-megabyte `/metrics`
/// bodies rendered on varying threads end up in per-thread arenas and RSS stays high long after a
/// burst of scrapes. Process-wide; call once at start.
pub fn return_large_buffers_on_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; a fixed threshold is always valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// The router (also used by tests without a socket).
pub fn router(state: MetricsState) -> Router {
    Router::new()
        .route("/", get(metrics))
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// Render the full `/metrics` body (blocking; run it off the async workers).
pub fn render_all(state: &MetricsState) -> String {
    let last = state.scrape.last_len.load(Ordering::Relaxed);
    let mut out = String::with_capacity((last + last / 16).max(64 * 1024));
    render(&state.store, state.options, now_ms(), &mut out);
    render_self_metrics(&state.telemetry, &state.store, &mut out);
    out
}

/// A body for one scrape: the last render's while it is recent and still being sent to another
/// scraper, else the running render's, else a new one's. `None` if the render failed.
async fn shared_render(state: &MetricsState) -> Option<Bytes> {
    let mut rx = {
        let mut slots = state.scrape.slots();
        if let Some(f) = &slots.latest {
            if f.done.elapsed() < REUSE_WINDOW && !f.body.is_unique() {
                return Some(f.body.clone());
            }
        }
        // Nobody else holds it (or it is too old): free it before rendering the next one.
        slots.latest = None;
        match slots.in_flight.as_ref() {
            Some(rx) => rx.clone(),
            None => {
                let (tx, rx) = watch::channel(None);
                slots.in_flight = Some(rx.clone());
                let st = state.clone();
                let runtime = tokio::runtime::Handle::current();
                // Detached: a scraper that goes away does not cancel the render the others wait for.
                tokio::task::spawn_blocking(move || {
                    let end = EndOfRender(&st.scrape);
                    let body = Bytes::from(render_all(&st));
                    let share = &st.scrape;
                    share.last_len.store(body.len(), Ordering::Relaxed);
                    let seq = share.counters.renders.fetch_add(1, Ordering::Relaxed) + 1;
                    share.slots().latest = Some(Finished {
                        seq,
                        done: Instant::now(),
                        body: body.clone(),
                    });
                    drop(end);
                    let _ = tx.send(Some(body));
                    // Do not keep a body alive for a scrape that may never come.
                    let st = st.clone();
                    runtime.spawn(async move {
                        tokio::time::sleep(REUSE_WINDOW).await;
                        let mut slots = st.scrape.slots();
                        if slots.latest.as_ref().is_some_and(|f| f.seq == seq) {
                            slots.latest = None;
                        }
                    });
                });
                rx
            }
        }
    };
    let body = rx.wait_for(Option::is_some).await.ok()?;
    body.as_ref().cloned()
}

async fn metrics(State(state): State<MetricsState>) -> Response {
    let share = &state.scrape;
    let _permit = match &share.requests {
        None => None,
        Some(sem) => match Arc::clone(sem).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                share
                    .counters
                    .refused_requests
                    .fetch_add(1, Ordering::Relaxed);
                if !share.refusal_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{WEB_SERVER}: more than max_requests = {} scrapes in flight, answering 503 \
                         (logged once; counted in gala_gopher_self_http_requests_refused_total)",
                        share.max_requests
                    );
                }
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    "too many concurrent scrapes\n",
                )
                    .into_response();
            }
        },
    };
    let started = Instant::now();
    let Some(body) = shared_render(&state).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "render failed\n").into_response();
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
        Body::from(body),
    )
        .into_response()
}
