//! The REST API (`rest_api_server`, upstream HEAD's dynamic probe configuration): `GET` and
//! `PUT /<probe>` with upstream's document ([`document`]), `GET /probes`. Served on
//! `rest_api_server.bind_addr:port` when `global.rest_api_on`, and on the command socket that
//! `gopher-ctl` talks to.
//!
//! Names are matched case-insensitively against every managed probe's own name and the REST
//! name its declaration gives (`tcp` → tcpprobe). A `PUT` is applied as the REST override of
//! the probe ([`crate::control::Control::set_override`]) and answered once it has taken effect:
//! the probe runs (or failed to start: the change is rolled back and the reply says why), its
//! process group is gone after `state: stopped`, or new settings are in the supervisor's hands.
//! `PUT`s to one probe are serialized; `PUT`s to different probes do not wait on each other.
//! Every successful `PUT` rewrites `probes.init` ([`crate::control::probes_init`]).

pub mod body;
pub mod document;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

use self::document::{RunView, Target};
use super::merge::{tailored_out, Override, Source};
use super::probes_init;
use super::runtime::Runtime;
use super::Control;
use crate::config::Switch;
use crate::supervisor::{ProbeSpec, Supervisor};
use crate::telemetry::{ProbeState, Telemetry};
use probe_decl::Declaration;

/// Largest request body (upstream's limit).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Longest wait for a started probe to run.
const START_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for new settings to reach the supervisor.
const APPLY_WAIT: Duration = Duration::from_secs(5);
/// Poll interval while waiting for an effect.
const POLL: Duration = Duration::from_millis(20);

/// Upstream HEAD's fixed probe names: one that no installed probe answers to is "not supported
/// in the current version" (upstream's message for a probe compiled out), not unknown.
const HEAD_NAMES: [&str; 21] = [
    "baseinfo",
    "virt",
    "flamegraph",
    "l7",
    "tcp",
    "socket",
    "io",
    "proc",
    "jvm",
    "postgre_sli",
    "opengauss_sli",
    "nginx",
    "lvs",
    "kafka",
    "tprofiling",
    "hw",
    "ksli",
    "container",
    "sermant",
    "sli",
    "flowtracer",
];

/// The refusal of a name no managed probe answers to.
fn unknown(name: &str) -> String {
    unknown_with(name, tailored_out())
}

/// [`unknown`], given the probes the build left out: one of those (its own name) is "not
/// supported in the current version" like upstream HEAD's names.
fn unknown_with<'a>(name: &str, left_out: impl IntoIterator<Item = &'a str>) -> String {
    let mut not_here = HEAD_NAMES.into_iter().chain(left_out);
    if not_here.any(|h| h.eq_ignore_ascii_case(name)) {
        format!("probe {name} is not supported in the current version (not installed)")
    } else {
        format!("invalid probe name {}", cut(name))
    }
}

/// Applies custom labels to a probe's series (the ingest path's registry).
pub trait LabelSink: Send + Sync + 'static {
    /// Replace probe `probe`'s custom labels; `Err` with a message refuses them.
    fn set_labels(&self, probe: &str, labels: &[(String, String)]) -> Result<(), String>;
}

impl LabelSink for crate::custom_labels::CustomLabels {
    fn set_labels(&self, probe: &str, labels: &[(String, String)]) -> Result<(), String> {
        self.set(probe, labels.to_vec()).map_err(|e| e.to_string())
    }
}

/// What the REST handlers work on; cheap to clone.
#[derive(Clone)]
pub struct RestState {
    inner: Arc<Inner>,
}

struct Inner {
    control: Control,
    supervisor: Supervisor,
    telemetry: Arc<Telemetry>,
    labels: Option<Arc<dyn LabelSink>>,
    probes_init: Option<PathBuf>,
    /// Time a stopped probe has to go (its grace period), plus margin.
    stop_wait: Duration,
    /// One lock per probe name (bounded by the managed probes).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serializes `probes.init` rewrites.
    persist: tokio::sync::Mutex<()>,
}

/// A reply in upstream's shape: `{"result": "success"|"failed", "message": …}`.
#[derive(Debug, Serialize)]
struct Reply<'a> {
    result: &'a str,
    message: String,
}

/// A failed request: status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status (400, 404, 405, 413 …).
    pub status: StatusCode,
    /// What went wrong, naming the field.
    pub message: String,
}

impl Failure {
    fn bad(message: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(Reply {
                result: "failed",
                message: self.message,
            }),
        )
            .into_response()
    }
}

fn success(message: impl Into<String>) -> Response {
    (
        StatusCode::OK,
        Json(Reply {
            result: "success",
            message: message.into(),
        }),
    )
        .into_response()
}

/// One probe as `GET /probes` lists it.
#[derive(Debug, Serialize)]
pub struct ProbeEntry {
    /// Probe name.
    pub name: String,
    /// Upstream's REST name, if declared.
    pub rest_name: Option<String>,
    /// `running` / `stopped` / `auto` (the switch).
    pub state: &'static str,
    /// What the process does: stopped / running / backoff / failed.
    pub status: String,
    /// Pid while running.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u64,
    /// Last error.
    pub last_error: Option<String>,
    /// Whether changes reach it without a restart.
    pub reload: bool,
}

fn switch_word(s: Switch) -> &'static str {
    match s {
        Switch::On => "running",
        Switch::Off => "stopped",
        Switch::Auto => "auto",
    }
}

/// The executable `cmd.bin` shows and may repeat: the script for an interpreter-run probe.
fn bin_of(spec: &ProbeSpec) -> String {
    let argv = &spec.argv;
    let first = argv.first().cloned().unwrap_or_default();
    if crate::supervisor::discovery::is_interpreter(&first) {
        if let Some(script) = argv.get(1) {
            return script.clone();
        }
    }
    first
}

impl RestState {
    /// Handlers over `control` (where changes go) and `supervisor` (what runs), rewriting
    /// `probes_init` after each successful `PUT` when given.
    pub fn new(
        control: Control,
        supervisor: Supervisor,
        telemetry: Arc<Telemetry>,
        probes_init: Option<PathBuf>,
        stop_grace: Duration,
    ) -> RestState {
        RestState {
            inner: Arc::new(Inner {
                control,
                supervisor,
                telemetry,
                labels: None,
                probes_init,
                stop_wait: stop_grace + Duration::from_secs(3),
                locks: Mutex::new(HashMap::new()),
                persist: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Route custom labels to `sink`.
    pub fn with_labels(self, sink: Arc<dyn LabelSink>) -> RestState {
        let inner = Arc::into_inner(self.inner).expect("with_labels before the state is shared");
        RestState {
            inner: Arc::new(Inner {
                labels: Some(sink),
                ..inner
            }),
        }
    }

    /// The managed probe `name` designates (its own name or declared REST name, any case).
    pub fn resolve(&self, name: &str) -> Option<String> {
        let names = self.inner.supervisor.names();
        if let Some(n) = names.iter().find(|n| n.eq_ignore_ascii_case(name)) {
            return Some(n.clone());
        }
        names.into_iter().find(|n| {
            self.inner.supervisor.spec(n).is_some_and(|s| {
                s.declaration
                    .as_ref()
                    .and_then(|d| d.rest_name.as_deref())
                    .is_some_and(|r| r.eq_ignore_ascii_case(name))
            })
        })
    }

    fn lock_of(&self, probe: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() > 4096 {
            // Names come from managed probes only; drop locks nobody holds.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        Arc::clone(locks.entry(probe.to_string()).or_default())
    }

    /// `GET /<probe>`: the probe's configuration in upstream's shape (plus run state).
    pub fn get(&self, name: &str) -> Result<document::ProbeView, Failure> {
        let probe = self.resolve(name).ok_or(Failure {
            status: StatusCode::NOT_FOUND,
            message: "url not found".into(),
        })?;
        let spec = self.inner.supervisor.spec(&probe).ok_or(Failure {
            status: StatusCode::NOT_FOUND,
            message: "url not found".into(),
        })?;
        // Serialized as it is (not through a JSON map), so upstream's key order stays.
        Ok(self.view_of(&probe, &spec))
    }

    fn view_of(&self, probe: &str, spec: &ProbeSpec) -> document::ProbeView {
        let decl = spec.declaration.as_deref().cloned().unwrap_or_default();
        let rt = spec.runtime.as_deref().cloned().unwrap_or_default();
        let bin = bin_of(spec);
        let stats = self.inner.telemetry.probe(probe);
        let pid = stats.pid.load(Ordering::Relaxed);
        // For a probe without reload, argv already holds the REST flags: the base is the same.
        let base = super::runtime::Base::from_argv(&decl, &spec.argv);
        document::view(
            Target {
                name: probe,
                decl: &decl,
                bin: &bin,
            },
            &rt,
            &base,
            spec.switch,
            RunView {
                status: stats.state().as_str().to_string(),
                pid: (pid != 0).then_some(pid),
                restarts: stats.restarts.load(Ordering::Relaxed),
                last_error: stats.last_error(),
                reload: decl.reload,
            },
        )
    }

    /// `GET /probes`: every managed probe.
    pub fn list(&self) -> Vec<ProbeEntry> {
        self.inner
            .supervisor
            .names()
            .into_iter()
            .filter_map(|n| {
                let spec = self.inner.supervisor.spec(&n)?;
                let stats = self.inner.telemetry.probe(&n);
                let pid = stats.pid.load(Ordering::Relaxed);
                Some(ProbeEntry {
                    rest_name: spec.declaration.as_ref().and_then(|d| d.rest_name.clone()),
                    state: switch_word(spec.switch),
                    status: stats.state().as_str().to_string(),
                    pid: (pid != 0).then_some(pid),
                    restarts: stats.restarts.load(Ordering::Relaxed),
                    last_error: stats.last_error(),
                    reload: spec.reloads(),
                    name: n,
                })
            })
            .collect()
    }

    /// `PUT /<probe>` with the document `doc`, from `source` (REST, or a `probes.init` line);
    /// returns the success message once the change has taken effect.
    pub async fn put(&self, name: &str, doc: &Value, source: Source) -> Result<String, Failure> {
        let probe = self
            .resolve(name)
            .ok_or_else(|| Failure::bad(unknown(name)))?;
        let lock = self.lock_of(&probe);
        let _serialized = lock.lock().await;
        let spec = self
            .inner
            .supervisor
            .spec(&probe)
            .ok_or_else(|| Failure::bad(format!("invalid probe name {probe}")))?;
        let decl: Declaration = spec.declaration.as_deref().cloned().unwrap_or_default();
        let current: Runtime = spec.runtime.as_deref().cloned().unwrap_or_default();
        let bin = bin_of(&spec);
        let change = document::apply(
            doc,
            Target {
                name: &probe,
                decl: &decl,
                bin: &bin,
            },
            &current,
        )
        .map_err(|e| Failure::bad(e.0))?;

        let desired = self.inner.control.desired();
        let previous = desired.override_of(&probe, source).cloned();
        let base = previous.clone().unwrap_or_default();
        let runtime = Arc::new(change.runtime.clone());
        let ov = Override {
            switch: change.switch.or(base.switch),
            param: base.param.clone(),
            runtime: Some(Arc::clone(&runtime)),
        };
        if let Some(labels) = &self.inner.labels {
            labels
                .set_labels(&probe, &change.runtime.custom_labels)
                .map_err(|e| Failure::bad(format!("snoopers.custom_labels: {e}")))?;
        }
        let rollback = |this: &RestState| {
            match &previous {
                Some(p) => {
                    let _ = this.inner.control.set_override(&probe, source, p.clone());
                }
                None => {
                    this.inner.control.clear_override(&probe, source);
                }
            }
            if let Some(labels) = &this.inner.labels {
                let _ = labels.set_labels(&probe, &current.custom_labels);
            }
        };
        if let Err(e) = self.inner.control.set_override(&probe, source, ov) {
            rollback(self);
            return Err(Failure::bad(e.to_string()));
        }

        let message = match self.wait_for_effect(&probe, &runtime, change.switch).await {
            Ok(m) => m,
            Err(f) => {
                rollback(self);
                return Err(f);
            }
        };
        // Replaying probes.init leaves the file as it is (a bad line stays for its owner to see).
        if source == Source::Rest {
            self.persist().await;
        }
        Ok(message)
    }

    /// Wait until what was asked has happened (see the module doc).
    async fn wait_for_effect(
        &self,
        probe: &str,
        runtime: &Arc<Runtime>,
        switch: Option<Switch>,
    ) -> Result<String, Failure> {
        let sup = &self.inner.supervisor;
        let stats = self.inner.telemetry.probe(probe);
        let applied = || {
            sup.spec(probe).is_some_and(|s| {
                s.runtime.as_deref() == Some(&**runtime) && switch.is_none_or(|sw| s.switch == sw)
            })
        };
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        while !applied() {
            if tokio::time::Instant::now() >= deadline {
                return Ok("New config takes effect (the probe picks it up shortly)".into());
            }
            tokio::time::sleep(POLL).await;
        }
        match switch {
            Some(Switch::On) => {
                let deadline = tokio::time::Instant::now() + START_WAIT;
                loop {
                    match stats.state() {
                        ProbeState::Running if stats.pid.load(Ordering::Relaxed) != 0 => break,
                        ProbeState::Failed => {
                            let why = stats.last_error().unwrap_or_default();
                            return Err(Failure::bad(format!("failed to start probe: {why}")));
                        }
                        _ => {}
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Ok("New config takes effect (the probe is still starting)".into());
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            Some(Switch::Off) => {
                let deadline = tokio::time::Instant::now() + self.inner.stop_wait;
                while stats.pid.load(Ordering::Relaxed) != 0 || stats.state() == ProbeState::Running
                {
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(format!(
                            "New config takes effect (the probe is still stopping after {:?})",
                            self.inner.stop_wait
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            _ => {}
        }
        Ok("New config takes effect".into())
    }

    /// Rewrite `probes.init` with every probe's REST / `probes.init` settings.
    async fn persist(&self) {
        let Some(path) = &self.inner.probes_init else {
            return;
        };
        let _one = self.inner.persist.lock().await;
        let desired = self.inner.control.desired();
        let mut lines = Vec::new();
        for name in desired.overridden() {
            let ov = desired
                .override_of(name, Source::Rest)
                .or_else(|| desired.override_of(name, Source::ProbesInit));
            let Some(ov) = ov else { continue };
            let Some(spec) = self.inner.supervisor.spec(name) else {
                continue;
            };
            let rt = ov.runtime.as_deref().cloned().unwrap_or_default();
            lines.push((name.to_string(), document::persisted(&rt, spec.switch)));
        }
        let path = path.clone();
        let written = tokio::task::spawn_blocking(move || probes_init::write(&path, &lines)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("probes.init: {e}"),
            Err(e) => tracing::warn!("probes.init: {e}"),
        }
    }
}

/// A name cut for a message.
fn cut(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The REST API as a server of its own: [`routes`], other paths 404 in upstream's JSON shape.
pub fn router(state: RestState) -> Router {
    routes(state).fallback(not_found)
}

/// The REST routes, without a fallback (to merge with other routers, as the command socket
/// does): `GET /probes`, `GET`/`PUT /<probe>`; other methods 405, bodies over
/// [`MAX_BODY_BYTES`] 413 — all in upstream's JSON shape.
pub fn routes(state: RestState) -> Router {
    Router::new()
        .route("/probes", get(list_probes).fallback(method_not_allowed))
        .route(
            "/{probe}",
            get(get_probe).put(put_probe).fallback(method_not_allowed),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn list_probes(State(state): State<RestState>) -> Response {
    Json(state.list()).into_response()
}

async fn get_probe(State(state): State<RestState>, UrlPath(probe): UrlPath<String>) -> Response {
    match state.get(&probe) {
        Ok(v) => Json(v).into_response(),
        Err(f) => f.into_response(),
    }
}

async fn put_probe(
    State(state): State<RestState>,
    UrlPath(probe): UrlPath<String>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return Failure {
                status: e.status(),
                message: if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("request body larger than {MAX_BODY_BYTES} bytes")
                } else {
                    format!("Bad request: {}", e.body_text())
                },
            }
            .into_response()
        }
    };
    let doc = match body::document(&headers, &body) {
        Ok(d) => d,
        Err(f) => return f.into_response(),
    };
    match state.put(&probe, &doc, Source::Rest).await {
        Ok(m) => success(m),
        Err(f) => f.into_response(),
    }
}

async fn method_not_allowed(method: Method) -> Response {
    Failure {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("method {method} not allowed: use GET or PUT"),
    }
    .into_response()
}

async fn not_found() -> Response {
    Failure {
        status: StatusCode::NOT_FOUND,
        message: "url not found".into(),
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_not_in_this_version_are_told_apart_from_invalid_ones() {
        let not_supported = "is not supported in the current version (not installed)";
        // Upstream HEAD's names, any case.
        assert_eq!(
            unknown_with("TCP", []),
            format!("probe TCP {not_supported}")
        );
        // A probe a tailored build left out, by its own name.
        assert_eq!(
            unknown_with("tcpprobe", ["ioprobe", "tcpprobe"]),
            format!("probe tcpprobe {not_supported}")
        );
        assert_eq!(unknown_with("tcpprobe", []), "invalid probe name tcpprobe");
        assert_eq!(
            unknown_with("nosuch", ["tcpprobe"]),
            "invalid probe name nosuch"
        );
        // An invalid name is cut in the reply.
        let long = "x".repeat(300);
        assert_eq!(
            unknown_with(&long, []).len(),
            "invalid probe name ".len() + 64
        );
        // This build's own left-out probes (none in a full build).
        for n in tailored_out() {
            assert_eq!(unknown(n), format!("probe {n} {not_supported}"));
        }
    }
}
