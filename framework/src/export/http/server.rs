//! The daemon's HTTP/1.1 server loop, with the limits `axum::serve` lacks: a connection limit
//! (also kept under half the descriptor limit), header-read, idle and per-request time limits,
//! and back-off when accept(2) fails (EMFILE must not spin). Every refusal, timeout and accept
//! error is counted in the server's [`HttpCounters`] and logged at most once a minute.
//!
//! Time limits follow Go's `net/http`: a connection has `header_read_timeout` from accept (or
//! from the first byte of a keep-alive request) to a complete header, `idle_timeout` between
//! requests, and `request_timeout` from the header to the last response byte.
//!
//! With TLS ([`serve_with_tls`]) the handshake runs inside the connection's task: it holds a
//! connection slot and must finish, with the first request header, within
//! `header_read_timeout`. A failed handshake closes only its own connection and is counted in
//! `gala_gopher_self_http_tls_handshake_failures_total` (a client that closes before sending a
//! byte, such as a TCP health check, is not a failure).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio_rustls::server::TlsStream;

use super::tls::ServerTls;
use crate::config::WebServer;
use crate::telemetry::{HttpCounters, HttpTimeout};

/// Pause after a failed accept(2) that is not about one connection (EMFILE, ENFILE, ENOBUFS …).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Grace after `request_timeout` before a request whose handler has not answered is cut off
/// (the handler's own timeout answers 503 first).
const REQUEST_GRACE: Duration = Duration::from_secs(1);
/// At most one log line per kind of refusal in this period.
const LOG_PERIOD: Duration = Duration::from_secs(60);

/// HTTP connections open in this process over all servers, checked against the descriptor budget.
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Failed TLS handshakes are logged at most once per [`LOG_PERIOD`] over all servers.
static HANDSHAKE_LOG: std::sync::Mutex<LogLimit> = std::sync::Mutex::new(LogLimit::new());

/// Answer to a client speaking plain HTTP to a TLS port (as Go's `net/http` answers it).
const PLAIN_HTTP_REPLY: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\
    Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Connection limit and time limits of one HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most open connections (0 = no limit but the descriptor budget, half of `RLIMIT_NOFILE`).
    pub max_connections: usize,
    /// From accept, or the first byte of a keep-alive request, to a complete request header.
    pub header_read_timeout: Duration,
    /// Between the end of a response and the first byte of the next request.
    pub idle_timeout: Duration,
    /// From a complete header to the last byte of the response.
    pub request_timeout: Duration,
}

impl From<&WebServer> for HttpLimits {
    fn from(c: &WebServer) -> Self {
        HttpLimits {
            max_connections: c.max_connections as usize,
            header_read_timeout: Duration::from_secs(u64::from(c.header_read_timeout_secs)),
            idle_timeout: Duration::from_secs(u64::from(c.idle_timeout_secs)),
            request_timeout: Duration::from_secs(u64::from(c.request_timeout_secs)),
        }
    }
}

/// Half the soft `RLIMIT_NOFILE`: HTTP clients never take the descriptors that probes, pipes,
/// discovery and the sinks need. Read at every accept, so a limit changed at run time applies.
fn descriptor_budget() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    usize::try_from(lim.rlim_cur / 2).unwrap_or(usize::MAX)
}

/// Logs a kind of event at most once per [`LOG_PERIOD`], with the count since the last line.
struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    const fn new() -> Self {
        LogLimit {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    fn hit(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < LOG_PERIOD) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Errors accept(2) reports about one connection (Linux passes pending network errors of the
/// new socket on): retry at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || matches!(
        e.raw_os_error(),
        Some(
            libc::EPROTO
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

/// Serve `router` on `listener` until `shutdown` resolves, then let open connections finish
/// their current request (the caller bounds how long it waits).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    counters: Arc<HttpCounters>,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with_tls(listener, router, limits, None, counters, shutdown).await;
}

/// [`serve`], over TLS when `tls` is set.
pub async fn serve_with_tls(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<ServerTls>,
    counters: Arc<HttpCounters>,
    shutdown: impl Future<Output = ()> + Send,
) {
    accept_loop(Tcp { listener, tls }, router, limits, counters, shutdown).await;
}

/// A listening socket [`accept_loop`] serves: how it accepts, refuses and serves a connection.
pub(super) trait Listen: Send {
    /// An accepted connection.
    type Stream: Send + 'static;
    /// The next connection (errors as accept(2) reports them).
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Refuse a connection over the limit (best effort, never waits).
    fn refuse(&self, stream: Self::Stream);
    /// Serve one connection until it closes, times out or `stop` turns true.
    fn serve(
        &self,
        stream: Self::Stream,
        conn: Conn,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// TCP, plain or TLS.
struct Tcp {
    listener: TcpListener,
    tls: Option<ServerTls>,
}

impl Listen for Tcp {
    type Stream = TcpStream;

    async fn accept(&self) -> io::Result<TcpStream> {
        self.listener.accept().await.map(|(s, _)| s)
    }

    fn refuse(&self, stream: TcpStream) {
        // A TLS client could not read a plain reply: it just sees the close.
        if self.tls.is_none() {
            let _ = stream.try_write(refusal().as_bytes());
        }
    }

    fn serve(
        &self,
        stream: TcpStream,
        conn: Conn,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        serve_tcp_connection(stream, conn, self.tls.clone(), stop)
    }
}

/// Serve `router` on `listener` until `shutdown` resolves, then let open connections finish
/// their current request: the connection cap, the time limits and accept back-off of this
/// module, whatever the socket.
pub(super) async fn accept_loop<L: Listen>(
    listener: L,
    router: Router,
    limits: HttpLimits,
    counters: Arc<HttpCounters>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let server = counters.server;
    let budget = descriptor_budget();
    if limits.max_connections == 0 || budget < limits.max_connections {
        tracing::info!(
            "{server}: at most {} connections (half the descriptor limit)",
            budget.min(if limits.max_connections == 0 {
                usize::MAX
            } else {
                limits.max_connections
            })
        );
    }
    let service = TowerToHyperService::new(router);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut accept_log = LogLimit::new();
    let mut refuse_log = LogLimit::new();
    let mut accept_failing = false;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                accept_failing = true;
                if let Some(n) = accept_log.hit() {
                    tracing::warn!(
                        "{server}: accept failed: {e}; retrying every {} ms \
                         ({n} more failures since the last report; counted in gala_gopher_self_http_accept_errors_total)",
                        ACCEPT_BACKOFF.as_millis()
                    );
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        if std::mem::take(&mut accept_failing) {
            tracing::info!("{server}: accepting connections again");
        }
        let open = counters.open.load(Ordering::Relaxed) as usize;
        let budget = descriptor_budget();
        let over_limit = limits.max_connections > 0 && open >= limits.max_connections;
        if over_limit || OPEN_CONNECTIONS.load(Ordering::Relaxed) >= budget {
            counters.refused_connections.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = refuse_log.hit() {
                let limit = if over_limit {
                    format!("max_connections = {}", limits.max_connections)
                } else {
                    format!("half the descriptor limit ({budget})")
                };
                tracing::warn!(
                    "{server}: {open} connections open, {limit} reached: refusing new ones \
                     ({n} more since the last report; counted in gala_gopher_self_http_connections_refused_total)"
                );
            }
            listener.refuse(stream);
            continue;
        }
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let open = OpenConnection::new(Arc::clone(&counters));
        let conn = Conn::new(service.clone(), limits, Arc::clone(&counters));
        let served = listener.serve(stream, conn, stop_rx.clone());
        tokio::spawn(async move {
            served.await;
            drop(open);
        });
    }
    drop(stop_rx);
    let _ = stop_tx.send(true);
    // Resolves when every connection task has dropped its receiver.
    stop_tx.closed().await;
}

/// The 503 written (best effort, never waiting: a client that cannot take these few bytes
/// simply sees the close) to a plain connection over the limit before closing it.
pub(super) fn refusal() -> String {
    const BODY: &str = "too many connections\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Retry-After: 1\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    )
}

/// One open connection in the counters; closing it (drop) is counted back.
struct OpenConnection(Arc<HttpCounters>);

impl OpenConnection {
    fn new(counters: Arc<HttpCounters>) -> Self {
        counters.open.fetch_add(1, Ordering::Relaxed);
        OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        OpenConnection(counters)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_tcp_connection(
    stream: TcpStream,
    conn: Conn,
    tls: Option<ServerTls>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => conn.serve_plain(stream, stop).await,
        Some(tls) => {
            let state = Arc::clone(&conn.state);
            let counters = Arc::clone(&conn.counters);
            let limits = conn.limits;
            // Started at accept: a TLS handshake counts against the header time limit.
            let mut watchdog = std::pin::pin!(watchdog(Arc::clone(&state), limits));
            let io = tokio::select! {
                io = handshake(stream, &tls, &state, &counters) => match io {
                    Some(io) => io,
                    None => return,
                },
                kind = &mut watchdog => {
                    counters.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                    counters.timeout(kind);
                    log_first_timeout(counters.server, kind, &limits);
                    return;
                }
                _ = stop.wait_for(|s| *s) => return,
            };
            conn.serve(io, watchdog.as_mut(), &mut stop).await;
        }
    }
}

/// The TLS handshake of an accepted connection; `None` when it failed (counted and logged) or
/// the client closed before sending anything.
async fn handshake(
    stream: TcpStream,
    tls: &ServerTls,
    state: &Arc<ConnState>,
    counters: &HttpCounters,
) -> Option<TlsStream<TrackedIo<TcpStream>>> {
    let peer = stream.peer_addr().ok();
    // A TLS client starts with a handshake record (0x16); a letter is a plain HTTP request.
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) | Err(_) => return None,
        Ok(_) if first[0].is_ascii_alphabetic() => {
            counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            log_handshake_failure(counters.server, peer, &"the client sent plain HTTP");
            reply_plain_http(stream).await;
            return None;
        }
        Ok(_) => {}
    }
    let io = TrackedIo {
        inner: stream,
        state: Arc::clone(state),
    };
    match tls.acceptor().accept(io).await {
        Ok(s) => Some(s),
        Err(e) => {
            counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            log_handshake_failure(counters.server, peer, &e);
            None
        }
    }
}

/// Tell a plain-HTTP client why it gets nothing, then close. Its request header (up to 4 KiB,
/// for at most a second; the header time limit bounds this too) is read first, so the close is
/// a FIN, not a reset that could discard the reply.
async fn reply_plain_http(mut stream: TcpStream) {
    use tokio::io::AsyncReadExt as _;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while head.len() < 4096 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(1), read_head).await,
        Ok(true)
    ) {
        return;
    }
    let reply = async {
        stream.write_all(PLAIN_HTTP_REPLY).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), reply).await;
}

fn log_handshake_failure(
    server: &str,
    peer: Option<std::net::SocketAddr>,
    reason: &dyn std::fmt::Display,
) {
    let hit = match HANDSHAKE_LOG.lock() {
        Ok(mut l) => l.hit(),
        Err(p) => p.into_inner().hit(),
    };
    let peer = peer.map_or_else(|| "a client".to_string(), |p| p.to_string());
    if let Some(n) = hit {
        tracing::warn!(
            "{server}: TLS handshake with {peer} failed: {reason} ({n} more since the last \
             report; counted in gala_gopher_self_http_tls_handshake_failures_total)"
        );
    } else {
        tracing::debug!("{server}: TLS handshake with {peer} failed: {reason}");
    }
}

/// What serving HTTP on one connection needs, whatever carries it (TCP, TLS, a Unix socket).
pub(super) struct Conn {
    service: TowerToHyperService<Router>,
    limits: HttpLimits,
    state: Arc<ConnState>,
    counters: Arc<HttpCounters>,
}

impl Conn {
    fn new(
        service: TowerToHyperService<Router>,
        limits: HttpLimits,
        counters: Arc<HttpCounters>,
    ) -> Self {
        Conn {
            service,
            limits,
            state: Arc::new(ConnState::new()),
            counters,
        }
    }

    /// Serve HTTP/1.1 straight on `stream` (no handshake), under the time limits from accept.
    pub(super) async fn serve_plain<S>(self, stream: S, mut stop: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut watchdog = std::pin::pin!(watchdog(Arc::clone(&self.state), self.limits));
        let io = TrackedIo {
            inner: stream,
            state: Arc::clone(&self.state),
        };
        self.serve(io, watchdog.as_mut(), &mut stop).await;
    }

    async fn serve<I>(
        self,
        io: I,
        mut watchdog: Pin<&mut impl Future<Output = HttpTimeout>>,
        stop: &mut watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            service,
            limits,
            state,
            counters,
        } = self;
        let svc_state = Arc::clone(&state);
        let svc_counters = Arc::clone(&counters);
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let state = Arc::clone(&svc_state);
            let counters = Arc::clone(&svc_counters);
            let service = service.clone();
            async move {
                state.begin_request(limits.request_timeout);
                let call = hyper::service::Service::call(&service, req);
                let resp = match tokio::time::timeout(limits.request_timeout, call).await {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        counters.timeout(HttpTimeout::Request);
                        log_first_timeout(counters.server, HttpTimeout::Request, &limits);
                        request_timed_out()
                    }
                };
                Ok::<_, Infallible>(resp.map(|inner| TrackedBody { inner, state }))
            }
        });
        // Header timeouts are enforced by the watchdog: hyper's own one also cuts idle
        // keep-alive connections at the (shorter) header limit.
        let conn = http1::Builder::new()
            .keep_alive(true)
            .writev(true)
            .header_read_timeout(None)
            .serve_connection(TokioIo::new(io), svc);
        let mut conn = std::pin::pin!(conn);
        let mut stopping = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("{}: connection: {e}", counters.server);
                    }
                    break;
                }
                kind = &mut watchdog => {
                    // Dropping the connection closes the socket, whatever it was waiting for.
                    counters.timeout(kind);
                    log_first_timeout(counters.server, kind, &limits);
                    break;
                }
                _ = stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Which timeout kinds have been logged (once per process; they are counted every time).
static TIMEOUT_LOGGED: [AtomicBool; HttpTimeout::ALL.len()] = [
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
];

fn log_first_timeout(server: &str, kind: HttpTimeout, limits: &HttpLimits) {
    if TIMEOUT_LOGGED[kind as usize].swap(true, Ordering::Relaxed) {
        return;
    }
    let what = match kind {
        HttpTimeout::Header => format!(
            "did not send a whole request header within {} s",
            limits.header_read_timeout.as_secs()
        ),
        HttpTimeout::Idle => format!("stayed idle for {} s", limits.idle_timeout.as_secs()),
        HttpTimeout::Request => format!(
            "did not take its response within {} s",
            limits.request_timeout.as_secs()
        ),
    };
    tracing::info!(
        "{server}: closed a connection that {what} (logged once; counted in \
         gala_gopher_self_http_timeouts_total{{kind=\"{}\"}})",
        kind.as_str()
    );
}

fn request_timed_out() -> Response<Body> {
    let mut r = Response::new(Body::from("request timed out\n"));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

/// Where a connection is in its request cycle, as the watchdog sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Waiting for (the rest of) a request header.
    Header = 0,
    /// A request is being handled.
    Request = 1,
    /// The response was handed to the connection; waiting for the next request.
    Idle = 2,
}

/// Activity of one connection, updated by its I/O, its service and its response body.
struct ConnState {
    base: Instant,
    phase: AtomicU8,
    /// Start of the current phase, ms since `base`.
    since_ms: AtomicU64,
    /// Last byte read or written, ms since `base`.
    last_io_ms: AtomicU64,
    /// When the current request must have been answered and sent, ms since `base` (0 = none).
    write_deadline_ms: AtomicU64,
    /// The last write could not proceed (the client is not reading).
    write_blocked: AtomicBool,
    /// Wakes the watchdog when the phase changes.
    changed: Notify,
}

fn as_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            base: Instant::now(),
            phase: AtomicU8::new(Phase::Header as u8),
            since_ms: AtomicU64::new(0),
            last_io_ms: AtomicU64::new(0),
            write_deadline_ms: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        as_ms(self.base.elapsed())
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Header,
            1 => Phase::Request,
            _ => Phase::Idle,
        }
    }

    fn enter(&self, phase: Phase) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
        self.changed.notify_one();
    }

    fn on_read(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
        if self.phase() == Phase::Idle {
            self.enter(Phase::Header);
        }
    }

    fn on_write(&self, ready: bool) {
        if ready {
            self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
        }
        let was_blocked = self.write_blocked.swap(!ready, Ordering::Relaxed);
        if !ready && !was_blocked {
            // A stalled response is held to the request deadline, not the idle one.
            self.changed.notify_one();
        }
    }

    fn begin_request(&self, timeout: Duration) {
        self.write_deadline_ms.store(
            self.now_ms().saturating_add(as_ms(timeout)),
            Ordering::Relaxed,
        );
        self.enter(Phase::Request);
    }

    /// When the connection must be closed if nothing changes, and why.
    fn deadline(&self, limits: &HttpLimits) -> (u64, HttpTimeout) {
        let since = self.since_ms.load(Ordering::Relaxed);
        let write_deadline = self.write_deadline_ms.load(Ordering::Relaxed);
        match self.phase() {
            Phase::Header => (
                since.saturating_add(as_ms(limits.header_read_timeout)),
                HttpTimeout::Header,
            ),
            Phase::Request => (
                write_deadline.saturating_add(as_ms(REQUEST_GRACE)),
                HttpTimeout::Request,
            ),
            // The body has been handed over but a slow reader may still be taking it.
            Phase::Idle if self.write_blocked.load(Ordering::Relaxed) => {
                (write_deadline, HttpTimeout::Request)
            }
            Phase::Idle => {
                let last = since.max(self.last_io_ms.load(Ordering::Relaxed));
                (
                    last.saturating_add(as_ms(limits.idle_timeout)),
                    HttpTimeout::Idle,
                )
            }
        }
    }
}

/// Resolves with the reason once the connection has overrun one of its time limits.
async fn watchdog(state: Arc<ConnState>, limits: HttpLimits) -> HttpTimeout {
    loop {
        // Registered before reading the state, so a change in between still wakes us.
        let changed = state.changed.notified();
        let (deadline, kind) = state.deadline(&limits);
        let now = state.now_ms();
        if now >= deadline {
            return kind;
        }
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep(Duration::from_millis(deadline - now)) => {}
        }
    }
}

/// The socket, reporting reads and writes to the connection's [`ConnState`].
struct TrackedIo<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.on_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.state.on_write(r.is_ready());
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.state.on_write(r.is_ready());
        r
    }

    fn is_write_vectored(&self) -> bool {
        // Lets hyper send a shared `/metrics` body straight from its buffer instead of copying
        // it into a per-connection one.
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that moves its connection to [`Phase::Idle`] once hyper is done with it.
struct TrackedBody {
    inner: Body,
    state: Arc<ConnState>,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.state.enter(Phase::Idle);
    }
}
