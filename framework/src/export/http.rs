//! The metrics HTTP server (`web_server`): `GET /` and `GET /metrics`. The daemon merges
//! `GET /status` ([`crate::control::status::router`]) and the flame graph pages
//! ([`super::flamegraph::router`]) into [`router`]. Other paths 404, other methods 405.
//!
//! `/metrics` answers in the classic Prometheus text format, or OpenMetrics when `Accept` prefers
//! it, gzip-compressed when `Accept-Encoding` allows ([`negotiate`]). The body is streamed: the
//! render hands over chunks of ~64 KiB as it goes ([`shared_render`]), so the first bytes leave
//! long before a large page is complete.
//!
//! Renders are single-flight per format and encoding: scrapes that arrive while a render runs
//! read the same chunks (reference-counted, never copied per client), and a render still being
//! sent to one scraper is handed to others for up to a second, so memory does not grow with the
//! number of concurrent scrapers; at most `max_requests` wait for a render at once, more get a
//! quick 503. The connection handling (limits, timeouts) is in [`serve`].

pub mod auth;
mod negotiate;
mod server;
mod shared_render;
pub mod tls;
mod trusted_file;
pub mod unix;

pub use server::{serve, serve_with_tls, HttpLimits};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::prometheus::{openmetrics, render_chunked, ChunkSink, Format, KeepAll, RenderOptions};
use crate::clock::now_ms;
use crate::store::{escape_label_value, TableStore};
use crate::telemetry::{render_self_metrics, HttpCounters, Telemetry};
use negotiate::negotiate;
use shared_render::{Ended, Next, Publisher, Render, ScrapeBody, Variant};

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

/// Single-flight rendering and the cap on waiting scrapes.
struct ScrapeShare {
    /// Per [`Variant`]: the render in flight, or the last one while it may still be shared.
    slots: Mutex<[Option<Arc<Render>>; 4]>,
    /// `max_requests` permits; `None` = unlimited.
    requests: Option<Arc<Semaphore>>,
    max_requests: usize,
    counters: Arc<HttpCounters>,
    refusal_logged: AtomicBool,
    /// Responses served, per [`Variant`].
    served: [AtomicU64; 4],
}

impl ScrapeShare {
    fn slots(&self) -> MutexGuard<'_, [Option<Arc<Render>>; 4]> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Ends a render as failed if its thread panics, so that no reader waits forever.
struct FailUnlessEnded<'a>(&'a Render);

impl Drop for FailUnlessEnded<'_> {
    fn drop(&mut self) {
        self.0.end(Ended::Failed);
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
                slots: Mutex::default(),
                requests: (max_requests > 0).then(|| Arc::new(Semaphore::new(max_requests))),
                max_requests,
                counters,
                refusal_logged: AtomicBool::new(false),
                served: Default::default(),
            }),
        }
    }

    /// Counters of this server (for [`serve`]).
    pub fn counters(&self) -> Arc<HttpCounters> {
        Arc::clone(&self.scrape.counters)
    }
}

/// Have glibc's allocator return every buffer of 1 MiB or more to the system when it is freed.
/// By default the threshold grows to the largest buffer freed so far, so large buffers freed on
/// varying threads (a big histogram family's `_max` lines, a long label) end up in per-thread
/// arenas and RSS stays high long after a burst of scrapes. Process-wide; call once at start.
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

/// Render the full `/metrics` body in the classic text format (blocking; run it off the async
/// workers).
pub fn render_all(state: &MetricsState) -> String {
    let mut out = String::with_capacity(64 * 1024);
    render_page(state, Format::Text, &mut out, &mut KeepAll);
    out
}

/// The page: the store's series, then the self-metrics (and `# EOF` in OpenMetrics). Chunks go
/// to `sink`; the end stays in `out`.
fn render_page(state: &MetricsState, format: Format, out: &mut String, sink: &mut dyn ChunkSink) {
    render_chunked(&state.store, state.options, format, now_ms(), out, sink);
    sink.unlocked();
    let mut own = String::with_capacity(16 * 1024);
    render_self_metrics(&state.telemetry, &state.store, &mut own);
    render_served(&state.scrape, &state.store, &mut own);
    match format {
        Format::Text => out.push_str(&own),
        Format::OpenMetrics => {
            openmetrics::append_converted(&own, out);
            out.push_str(openmetrics::EOF);
        }
    }
}

/// `gala_gopher_self_scrape_responses_total{format,encoding}`.
fn render_served(share: &ScrapeShare, store: &TableStore, out: &mut String) {
    use std::fmt::Write as _;
    let name = "gala_gopher_self_scrape_responses_total";
    let _ = writeln!(
        out,
        "# HELP {name} /metrics responses by exposition format and content encoding.\n\
         # TYPE {name} counter"
    );
    let mut mid = String::new();
    escape_label_value(store.machine_id(), &mut mid);
    for v in Variant::ALL {
        let _ = writeln!(
            out,
            "{name}{{format=\"{}\",encoding=\"{}\",machine_id=\"{mid}\"}} {}",
            v.format_label(),
            v.encoding_label(),
            share.served[v.index()].load(Ordering::Relaxed)
        );
    }
}

/// The render a scrape of `variant` reads: the running one, else the last one while it is recent
/// and still being sent to another scraper, else a new one. The scrape's `max_requests` permit is
/// held until the render ends.
fn join_or_start(
    state: &MetricsState,
    variant: Variant,
    permit: Option<OwnedSemaphorePermit>,
) -> Arc<Render> {
    let mut slots = state.scrape.slots();
    let slot = &mut slots[variant.index()];
    if let Some(r) = slot.as_ref() {
        let share = match r.ended() {
            None => true,
            Some(Ended::Complete(at)) => at.elapsed() < REUSE_WINDOW && r.has_readers(),
            Some(Ended::Failed) => false,
        };
        if share {
            r.hold_permit(permit);
            return Arc::clone(r);
        }
    }
    let render = Arc::new(Render::default());
    render.hold_permit(permit);
    // The previous render is freed (outside the lock) unless a scrape still sends it.
    let previous = slot.replace(Arc::clone(&render));
    drop(slots);
    drop(previous);
    let st = state.clone();
    let job = Arc::clone(&render);
    let runtime = tokio::runtime::Handle::current();
    // Detached: a scraper that goes away does not cancel the render the others read.
    tokio::task::spawn_blocking(move || {
        let guard = FailUnlessEnded(&job);
        let mut publisher = Publisher::new(&job, variant.gzip);
        let mut buf = Publisher::buffer();
        render_page(&st, variant.format, &mut buf, &mut publisher);
        if let Err(e) = publisher.finish(buf) {
            tracing::warn!("{WEB_SERVER}: /metrics render failed: {e}");
            return;
        }
        drop(guard);
        st.scrape.counters.renders.fetch_add(1, Ordering::Relaxed);
        // Do not keep a body alive for a scrape that may never come.
        let done = Arc::downgrade(&job);
        drop(job);
        runtime.spawn(async move {
            tokio::time::sleep(REUSE_WINDOW).await;
            let mut slots = st.scrape.slots();
            let slot = &mut slots[variant.index()];
            if slot
                .as_ref()
                .is_some_and(|r| Arc::as_ptr(r) == done.as_ptr())
            {
                *slot = None;
            }
        });
    });
    render
}

async fn metrics(State(state): State<MetricsState>, headers: HeaderMap) -> Response {
    let share = &state.scrape;
    let permit = match &share.requests {
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
    let negotiated = negotiate(&headers, state.options.openmetrics);
    let variant = Variant {
        format: negotiated.format,
        gzip: negotiated.gzip,
    };
    let render = join_or_start(&state, variant, permit);
    // A reader from now on, so that the render counts as being sent.
    let telemetry = Arc::clone(&state.telemetry);
    let body = ScrapeBody::new(Arc::clone(&render), move |complete| {
        let server_time = complete.saturating_duration_since(started);
        telemetry
            .last_scrape_us
            .store(server_time.as_micros() as u64, Ordering::Relaxed);
        telemetry.scrapes.fetch_add(1, Ordering::Relaxed);
    });
    // The response head leaves with the first chunk; a page that fits in one is complete by then
    // and gets a Content-Length.
    let first = std::future::poll_fn(|cx| render.poll_chunk(0, cx)).await;
    if matches!(first, Next::End(Ended::Failed)) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "render failed\n").into_response();
    }
    share.served[variant.index()].fetch_add(1, Ordering::Relaxed);
    let mut resp = Response::new(Body::new(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(negotiated.content_type),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if negotiated.gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}
