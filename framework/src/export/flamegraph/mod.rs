//! The latest flame graphs, read-only, on `web_server` (and the command socket):
//!
//! * `GET /flamegraph/` — an HTML page listing every profile of `<flame_dir>/index.json`;
//! * `GET /flamegraph/<pid>/<kind>.svg|.folded|.pb.gz` — the latest file of that process and
//!   kind (`oncpu`, `offcpu`).
//!
//! `flame_dir` is the effective param of the probe whose declaration has the REST name
//! `flamegraph` (stackprobe): what REST / `probes.init` set, else its command line, else the
//! declared default — the value its control channel carries — read from the supervisor's spec at
//! every request, so a `PUT` of `params.flame_dir` applies to the next one ([`FlameDirSource`]).
//!
//! Whoever can write into `flame_dir` must not be able to make the daemon serve anything else:
//! the index is only a lookup table whose paths must match the layout the probe writes
//! ([`index::check_path`]), every file is opened beneath a descriptor of `flame_dir`
//! ([`beneath`]: no `..`, no symbolic link, regular files only), sizes are bounded (index 4 MiB,
//! a served file 64 MiB), and file work runs on blocking threads. The SVG (inferno's, with inline
//! script for zoom and search, and names from profiled processes) is served with a
//! Content-Security-Policy sandbox so that its script runs without the daemon's origin.

pub mod beneath;
pub mod index;
pub mod page;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use http_body::{Frame, SizeHint};
use probe_decl::{Declaration, ParamValue};
use tokio::io::{AsyncRead, ReadBuf};

use self::beneath::{Beneath, OpenError, Opened};
use self::index::{Artifact, Index, IndexError, Kind, INDEX_FILE, MAX_INDEX_BYTES};
use crate::clock::now_ms;
use crate::control::runtime::{Base, Runtime};
use crate::supervisor::Supervisor;
use crate::telemetry::{FlamegraphResult, Telemetry};

/// The REST name whose probe writes the flame graphs (upstream HEAD's).
pub const REST_NAME: &str = "flamegraph";
/// Largest file served.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Upstream's `svg_period` when the probe does not declare one (seconds).
const DEFAULT_SVG_PERIOD_SECS: i64 = 180;
/// Refusals (planted links, bad indexes) are logged at most this often.
const WARN_EVERY_MS: u64 = 60_000;
/// Bytes per body chunk of a served file.
const CHUNK: usize = 64 * 1024;

/// Policy of the SVG: its own inline script and styles run, sandboxed (an opaque origin: no
/// cookies, no same-origin requests to the daemon's other pages), nothing is fetched;
/// `allow-modals` for the `prompt()` of inferno's Search button.
pub const SVG_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
                           style-src 'unsafe-inline'; img-src data:; sandbox allow-scripts allow-modals";
/// Policy of the listing: no script at all.
pub const LISTING_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";
/// Policy of text, downloads and messages.
const PLAIN_CSP: &str = "default-src 'none'; sandbox";

/// Where the flame graph probe writes, as the daemon's control state has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlameSource {
    /// The probe's own name.
    pub probe: String,
    /// Its effective `flame_dir`; `None` when it does not declare the param.
    pub flame_dir: Option<String>,
    /// Its effective `svg_period` in seconds, if declared.
    pub svg_period_secs: Option<i64>,
    /// Its run state (`running`, `stopped`, …), for the page's explanations.
    pub state: String,
}

/// Finds the flame graph probe and its effective `flame_dir`; called at every request.
pub trait FlameDirSource: Send + Sync + 'static {
    /// The probe declaring the REST name [`REST_NAME`], if any.
    fn locate(&self) -> Option<FlameSource>;
}

/// The effective params of a probe as its control channel carries them (REST / `probes.init`
/// settings over its command line over the declared defaults).
pub fn source_of(
    probe: &str,
    decl: &Declaration,
    runtime: Option<&Runtime>,
    argv: &[String],
) -> FlameSource {
    let base = Base::from_argv(decl, argv);
    let params = runtime
        .cloned()
        .unwrap_or_default()
        .effective_params(decl, &base);
    FlameSource {
        probe: probe.to_string(),
        flame_dir: match params.get("flame_dir") {
            Some(ParamValue::Str(s)) => Some(s.clone()),
            _ => None,
        },
        svg_period_secs: match params.get("svg_period") {
            Some(ParamValue::Int(n)) => Some(*n),
            _ => None,
        },
        state: String::new(),
    }
}

/// The managed probes as the supervisor runs them: the first (by name) whose declaration has
/// the REST name [`REST_NAME`]. The declaration comes from the probe's `.meta`, found by
/// discovery, so the supervisor's spec — not the desired state alone — is where it is known.
impl FlameDirSource for Supervisor {
    fn locate(&self) -> Option<FlameSource> {
        self.names().into_iter().find_map(|name| {
            let spec = self.spec(&name)?;
            let decl = spec.declaration.as_deref()?;
            decl.rest_name
                .as_deref()
                .filter(|r| r.eq_ignore_ascii_case(REST_NAME))?;
            let mut src = source_of(&name, decl, spec.runtime.as_deref(), &spec.argv);
            src.state = self.telemetry().probe(&name).state().as_str().to_string();
            Some(src)
        })
    }
}

/// Identity of one version of `index.json` (it is replaced by rename, so a new one is a new
/// inode): a cached parse is reused while it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexKey {
    dir: String,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// An index as read: its parse, or why it was refused.
type ParsedIndex = Arc<Result<Index, IndexError>>;

/// What the flame graph handlers read; cheap to clone.
#[derive(Clone)]
pub struct FlamegraphState {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn FlameDirSource>,
    telemetry: Arc<Telemetry>,
    /// The last index read and its parse (also a refusal, so a bad 4 MiB file is parsed once).
    cache: Mutex<Option<(IndexKey, ParsedIndex)>>,
    last_warn_ms: AtomicU64,
}

impl FlamegraphState {
    /// Handlers over `source`, counting into `telemetry`.
    pub fn new(source: Arc<dyn FlameDirSource>, telemetry: Arc<Telemetry>) -> FlamegraphState {
        FlamegraphState {
            inner: Arc::new(Inner {
                source,
                telemetry,
                cache: Mutex::new(None),
                last_warn_ms: AtomicU64::new(0),
            }),
        }
    }

    fn count(&self, r: FlamegraphResult) {
        self.inner.telemetry.flamegraph.count(r);
    }

    fn warn(&self, msg: &str) {
        let now = now_ms();
        let last = self.inner.last_warn_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= WARN_EVERY_MS)
            && self
                .inner
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "flame graphs: {msg} (logged at most once a minute; counted in \
                 gala_gopher_self_flamegraph_requests_total)"
            );
        }
    }

    /// The index of `dir` (from the cache while the file is the same).
    fn index(&self, dir: &Beneath, dir_name: &str) -> Result<ParsedIndex, OpenError> {
        use std::os::unix::fs::MetadataExt as _;
        let opened = match dir.open_file(INDEX_FILE, MAX_INDEX_BYTES) {
            Err(OpenError::TooLarge { size, .. }) => {
                return Ok(Arc::new(Err(IndexError::TooLarge(size))))
            }
            other => other?,
        };
        let md = opened.file.metadata().map_err(OpenError::Io)?;
        let key = IndexKey {
            dir: dir_name.to_string(),
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        };
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, idx)) = cache.as_ref() {
            if *k == key {
                return Ok(Arc::clone(idx));
            }
        }
        // Parsed under the lock: concurrent requests for a new index wait for one parse.
        let parsed = Arc::new(match opened.read_all(MAX_INDEX_BYTES) {
            Ok(bytes) => index::parse(&bytes),
            Err(OpenError::TooLarge { size, .. }) => Err(IndexError::TooLarge(size)),
            Err(e) => return Err(e),
        });
        *cache = Some((key, Arc::clone(&parsed)));
        Ok(parsed)
    }
}

/// The flame graph routes without a fallback, to merge into another router (the command
/// socket's, where `/flamegraph` without the slash is the REST API's probe).
pub fn routes(state: FlamegraphState) -> Router {
    Router::new()
        .route("/flamegraph/", get(listing).fallback(method_not_allowed))
        .route(
            "/flamegraph/{*rest}",
            get(file).fallback(method_not_allowed),
        )
        .with_state(state)
}

/// [`routes`] plus `/flamegraph` → `/flamegraph/` (for `web_server`, which has no REST routes).
pub fn router(state: FlamegraphState) -> Router {
    routes(state).route(
        "/flamegraph",
        get(|| async { Redirect::permanent("flamegraph/") }),
    )
}

/// A failed request: status, what to count, message.
struct Fail {
    status: StatusCode,
    result: FlamegraphResult,
    message: String,
}

impl Fail {
    fn new(status: StatusCode, result: FlamegraphResult, message: impl Into<String>) -> Fail {
        Fail {
            status,
            result,
            message: message.into(),
        }
    }
}

fn secure(resp: &mut Response, csp: &'static str) {
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn text(status: StatusCode, message: &str) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response();
    secure(&mut resp, PLAIN_CSP);
    resp
}

fn html(body: String) -> Response {
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    secure(&mut resp, LISTING_CSP);
    resp
}

impl FlamegraphState {
    fn fail(&self, f: Fail) -> Response {
        self.count(f.result);
        if matches!(
            f.result,
            FlamegraphResult::Refused | FlamegraphResult::BadIndex
        ) {
            self.warn(&f.message);
        }
        let mut resp = text(f.status, &f.message);
        if f.status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}

/// Why nothing can be listed or served yet, as (title, detail).
fn no_source(src: Option<&FlameSource>) -> Option<(String, String)> {
    let Some(src) = src else {
        return Some((
            "No flame graph probe.".into(),
            format!(
                "No managed probe declares the REST name {REST_NAME} (stackprobe): it is not \
                 installed in probes_dir, or its .meta is missing."
            ),
        ));
    };
    match src.flame_dir.as_deref() {
        None => Some((
            "No flame_dir.".into(),
            format!(
                "Probe {} does not declare the param flame_dir, so the daemon does not know \
                 where its flame graphs are.",
                src.probe
            ),
        )),
        Some("") => Some((
            "No flame_dir.".into(),
            format!("Probe {}'s flame_dir is empty.", src.probe),
        )),
        Some(d) if !d.starts_with('/') => Some((
            "No flame_dir.".into(),
            format!(
                "Probe {}'s flame_dir {d} is not an absolute path.",
                src.probe
            ),
        )),
        Some(_) => None,
    }
}

fn not_yet(src: &FlameSource, what: &str) -> (String, String) {
    let period = src.svg_period_secs.unwrap_or(DEFAULT_SVG_PERIOD_SECS);
    let state = if src.state.is_empty() {
        String::new()
    } else {
        format!(" Probe {} is {}.", src.probe, src.state)
    };
    (
        "No profiles yet.".into(),
        format!(
            "{what}: {} writes the first ones after svg_period ({period} s).{state}",
            src.probe
        ),
    )
}

/// The listing, on a blocking thread: `Ok(page, had profiles)`.
fn list_blocking(st: &FlamegraphState) -> Result<(String, bool), Fail> {
    let src = st.inner.source.locate();
    if let Some((title, detail)) = no_source(src.as_ref()) {
        return Ok((page::message(&title, &detail), false));
    }
    let src = src.expect("checked by no_source");
    let dir_name = src.flame_dir.clone().unwrap_or_default();
    let dir = match Beneath::open(std::path::Path::new(&dir_name)) {
        Ok(d) => d,
        Err(OpenError::NotFound) => {
            let (t, d) = not_yet(&src, &format!("{dir_name} does not exist (yet)"));
            return Ok((page::message(&t, &d), false));
        }
        Err(e) => return Err(dir_failure(&dir_name, e)),
    };
    let idx = match st.index(&dir, &dir_name) {
        Ok(i) => i,
        Err(OpenError::NotFound) => {
            let (t, d) = not_yet(
                &src,
                &format!("{dir_name}/{INDEX_FILE} does not exist (yet)"),
            );
            return Ok((page::message(&t, &d), false));
        }
        Err(e) => return Err(index_failure(&dir_name, e)),
    };
    match &*idx {
        Ok(i) => Ok((page::listing(i, &src.probe, &dir_name), true)),
        Err(e) => Err(Fail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            FlamegraphResult::BadIndex,
            format!("{dir_name}/{e}"),
        )),
    }
}

fn dir_failure(dir: &str, e: OpenError) -> Fail {
    let result = match e {
        OpenError::Symlink | OpenError::NotRegular | OpenError::Escapes => {
            FlamegraphResult::Refused
        }
        _ => FlamegraphResult::Error,
    };
    Fail::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        result,
        format!("flame_dir {dir}: {e}"),
    )
}

fn index_failure(dir: &str, e: OpenError) -> Fail {
    let result = match e {
        OpenError::Symlink | OpenError::NotRegular | OpenError::Escapes => {
            FlamegraphResult::Refused
        }
        _ => FlamegraphResult::Error,
    };
    Fail::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        result,
        format!("{dir}/{INDEX_FILE}: {e}"),
    )
}

async fn listing(State(st): State<FlamegraphState>) -> Response {
    let job = st.clone();
    match tokio::task::spawn_blocking(move || list_blocking(&job)).await {
        Ok(Ok((body, had_profiles))) => {
            st.count(if had_profiles {
                FlamegraphResult::Served
            } else {
                FlamegraphResult::Empty
            });
            html(body)
        }
        Ok(Err(f)) => st.fail(f),
        Err(e) => st.fail(Fail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            FlamegraphResult::Error,
            format!("listing failed: {e}"),
        )),
    }
}

/// `<pid>/<kind><ext>` (pid decimal, no leading zero, not 0).
fn parse_request(rest: &str) -> Option<(u32, Kind, Artifact)> {
    let (pid, file) = rest.split_once('/')?;
    if pid.is_empty()
        || pid.len() > 10
        || pid.starts_with('0')
        || !pid.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let pid: u32 = pid.parse().ok()?;
    let (stem, artifact) = Artifact::split(file)?;
    Some((pid, Kind::parse(stem)?, artifact))
}

/// The latest file of `pid`/`kind`/`artifact`, opened on a blocking thread.
fn open_blocking(
    st: &FlamegraphState,
    pid: u32,
    kind: Kind,
    artifact: Artifact,
) -> Result<Opened, Fail> {
    let not_found = |m: String| Fail::new(StatusCode::NOT_FOUND, FlamegraphResult::NotFound, m);
    let src = st.inner.source.locate();
    if let Some((title, detail)) = no_source(src.as_ref()) {
        return Err(not_found(format!("{title} {detail}")));
    }
    let src = src.expect("checked by no_source");
    let dir_name = src.flame_dir.clone().unwrap_or_default();
    let dir = match Beneath::open(std::path::Path::new(&dir_name)) {
        Ok(d) => d,
        Err(OpenError::NotFound) => {
            return Err(not_found(
                not_yet(&src, &format!("{dir_name} does not exist (yet)")).1,
            ))
        }
        Err(e) => return Err(dir_failure(&dir_name, e)),
    };
    let idx = match st.index(&dir, &dir_name) {
        Ok(i) => i,
        Err(OpenError::NotFound) => return Err(not_found(not_yet(&src, "no index.json").1)),
        Err(e) => return Err(index_failure(&dir_name, e)),
    };
    let idx = match &*idx {
        Ok(i) => i,
        Err(e) => {
            return Err(Fail::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                FlamegraphResult::BadIndex,
                format!("{dir_name}/{e}"),
            ))
        }
    };
    let what = format!("{} {} of pid {pid}", kind.as_str(), &artifact.ext()[1..]);
    let Some(rel) = idx
        .latest(pid, kind, artifact)
        .and_then(|p| p.path(artifact))
    else {
        return Err(not_found(format!("no {what} in {dir_name}/{INDEX_FILE}")));
    };
    match dir.open_file(rel, MAX_FILE_BYTES) {
        Ok(o) => Ok(o),
        Err(OpenError::NotFound) => Err(not_found(format!(
            "the {what} ({rel}) is listed but gone (replaced since)"
        ))),
        Err(e @ OpenError::TooLarge { .. }) => Err(Fail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            FlamegraphResult::TooLarge,
            format!("{dir_name}/{rel}: {e} bytes served"),
        )),
        Err(
            e @ (OpenError::Symlink
            | OpenError::NotRegular
            | OpenError::Escapes
            | OpenError::BadPath),
        ) => Err(Fail::new(
            StatusCode::NOT_FOUND,
            FlamegraphResult::Refused,
            format!("{dir_name}/{rel}: {e}"),
        )),
        Err(e) => Err(Fail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            FlamegraphResult::Error,
            format!("{dir_name}/{rel}: {e}"),
        )),
    }
}

async fn file(State(st): State<FlamegraphState>, uri: Uri) -> Response {
    let rest = uri.path().strip_prefix("/flamegraph/").unwrap_or_default();
    let Some((pid, kind, artifact)) = parse_request(rest) else {
        return st.fail(Fail::new(
            StatusCode::BAD_REQUEST,
            FlamegraphResult::BadRequest,
            "expected /flamegraph/<pid>/<oncpu|offcpu>.<svg|folded|pb.gz>",
        ));
    };
    let job = st.clone();
    let opened =
        match tokio::task::spawn_blocking(move || open_blocking(&job, pid, kind, artifact)).await {
            Ok(Ok(o)) => o,
            Ok(Err(f)) => return st.fail(f),
            Err(e) => {
                return st.fail(Fail::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    FlamegraphResult::Error,
                    format!("open failed: {e}"),
                ))
            }
        };
    st.count(FlamegraphResult::Served);
    let body = FileBody {
        file: tokio::fs::File::from_std(opened.file),
        remaining: opened.size,
        buf: Vec::new(),
    };
    let mut resp = Response::new(Body::new(body));
    let (content_type, csp) = match artifact {
        Artifact::Svg => ("image/svg+xml", SVG_CSP),
        Artifact::Folded => ("text/plain; charset=utf-8", PLAIN_CSP),
        Artifact::Pprof => ("application/octet-stream", PLAIN_CSP),
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if artifact == Artifact::Pprof {
        // Built from checked numbers and fixed words only.
        let name = format!(
            "attachment; filename=\"{pid}-{}{}\"",
            kind.as_str(),
            artifact.ext()
        );
        if let Ok(v) = HeaderValue::from_str(&name) {
            resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    secure(&mut resp, csp);
    resp
}

async fn method_not_allowed(State(st): State<FlamegraphState>) -> Response {
    st.fail(Fail::new(
        StatusCode::METHOD_NOT_ALLOWED,
        FlamegraphResult::MethodNotAllowed,
        "flame graphs are read-only: use GET",
    ))
}

/// A file's bytes as a response body: at most the size it had when opened, read in chunks on
/// tokio's blocking pool (never the whole file in memory).
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Vec<u8>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = this.remaining.min(CHUNK as u64) as usize;
        this.buf.resize(want, 0);
        let mut rb = ReadBuf::new(&mut this.buf[..want]);
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    // Truncated since it was opened: the promised length cannot be sent.
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while it was sent",
                    ))));
                }
                this.remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(
                    &this.buf[..n],
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests;
