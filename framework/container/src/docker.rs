//! Docker Engine API client over a unix socket (docker, cri-dockerd's docker, podman's
//! docker-compatible service): list, inspect and the container event stream.
//!
//! Every request opens its own connection (a unix socket connect is cheap, and a hung daemon
//! then holds nothing of ours after the time limit), speaks HTTP/1.1 through hyper, and is
//! bounded: the whole request (connect, headers, body) by the client's time limit, the body by
//! a size limit per call ([`LIST_BODY_MAX`], [`INSPECT_BODY_MAX`]), an event line by
//! [`EVENT_LINE_MAX`].

use crate::error::ErrorKind;
use crate::info::{self, ContainerInfo, PodInfo};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;

/// The API version asked for (docker ≥ 20.10 and podman ≥ 3 serve it).
pub const API_VERSION: &str = "v1.41";
/// Largest `containers/json` body read.
pub const LIST_BODY_MAX: usize = 8 << 20;
/// Largest `containers/{id}/json` body read.
pub const INSPECT_BODY_MAX: usize = 1 << 20;
/// Longest event line; longer ones are skipped (and counted).
pub const EVENT_LINE_MAX: usize = 64 << 10;
/// Most containers taken from one list answer.
pub const LIST_MAX: usize = 65536;
/// The label cri-dockerd puts on a pod's containers: the id of its sandbox (pause) container,
/// whose own labels are the pod's labels.
pub const SANDBOX_ID_LABEL: &str = "io.kubernetes.sandbox.id";
/// cri-dockerd's `io.kubernetes.docker.type` label value of a sandbox container.
pub const SANDBOX_TYPE: &str = "podsandbox";

/// A failed Docker Engine API request.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The socket could not be connected to.
    #[error("connect {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No complete answer within the time limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Not HTTP, or the connection broke.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// An error status.
    #[error("HTTP status {status} for {what}")]
    Status {
        /// The status code.
        status: u16,
        /// The request path.
        what: String,
    },
    /// A body over its size limit.
    #[error("response body over {0} bytes")]
    TooLarge(usize),
    /// A body that is not the JSON expected.
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl DockerError {
    /// The kind counted for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DockerError::Connect { .. } => ErrorKind::Connect,
            DockerError::Timeout(_) => ErrorKind::Timeout,
            _ => ErrorKind::Protocol,
        }
    }
}

/// A container as the Docker API lists or inspects it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerContainer {
    /// Full id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image as the runtime reports it.
    pub image: String,
    /// Labels (bounded by [`info::bounded_labels`]).
    pub labels: BTreeMap<String, String>,
    /// `running`, `exited`, … (list: `State`; inspect: `State.Status`).
    pub state: String,
    /// Host pid of its first process (inspect only; 0 when not running or from a list).
    pub pid: u32,
}

impl DockerContainer {
    /// What the resolver keeps: the name shown is `io.kubernetes.container.name` when present;
    /// the pod comes from the `io.kubernetes.pod.*` labels, its labels from `sandbox_labels`
    /// (the labels of the pod's sandbox container, see [`SANDBOX_ID_LABEL`]).
    pub fn to_info(&self, sandbox_labels: Option<&BTreeMap<String, String>>) -> ContainerInfo {
        let name = self
            .labels
            .get(info::K8S_CONTAINER_NAME)
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.name)
            .clone();
        let pod = info::pod_from_container_labels(&self.labels).map(|p| PodInfo {
            labels: sandbox_labels
                .map(pod_labels_of_sandbox)
                .unwrap_or_default(),
            ..p
        });
        ContainerInfo {
            id: self.id.clone(),
            name,
            image: self.image.clone(),
            labels: self.labels.clone(),
            pod,
        }
    }

    /// Whether this is a pod's sandbox (pause) container of cri-dockerd.
    pub fn is_sandbox(&self) -> bool {
        self.labels
            .get("io.kubernetes.docker.type")
            .is_some_and(|t| t == SANDBOX_TYPE)
    }
}

/// A sandbox container's labels minus the ones cri-dockerd adds: the pod's own labels.
fn pod_labels_of_sandbox(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| !k.starts_with("io.kubernetes.") && !k.starts_with("annotation."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What an event says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// The container started.
    Start,
    /// It was removed.
    Destroy,
    /// It was renamed (the event's `name` is the new name).
    Rename,
    /// Anything else (`create`, `die`, `exec_start: …`: not asked for by [`EVENT_FILTER`],
    /// but a runtime that ignores the filter sends them).
    Other(String),
}

/// One container event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEvent {
    /// What happened.
    pub action: EventAction,
    /// Full container id.
    pub id: String,
    /// `Actor.Attributes.name`, when given.
    pub name: Option<String>,
    /// `Actor.Attributes.image`, when given.
    pub image: Option<String>,
    /// The other attributes: the container's labels (docker and podman put them there), minus
    /// the few attributes that are not labels (`exitCode`, `signal`, …); bounded.
    pub labels: BTreeMap<String, String>,
}

/// Event attributes that are not container labels.
const NOT_LABELS: [&str; 5] = ["exitCode", "containerExitCode", "signal", "podId", "execID"];

impl DockerEvent {
    /// What a `start` event alone says of a container that is not a Kubernetes one (docker
    /// and podman put its name, image and labels in the event): no inspect needed. `None` when
    /// the event lacks them or the container belongs to a pod (the pod's labels come from its
    /// sandbox, which needs an inspect).
    pub fn start_info(&self) -> Option<ContainerInfo> {
        if self.action != EventAction::Start {
            return None;
        }
        let (name, image) = (self.name.as_ref()?, self.image.as_ref()?);
        if name.is_empty() || self.labels.keys().any(|k| k.starts_with("io.kubernetes.")) {
            return None;
        }
        Some(
            DockerContainer {
                id: self.id.clone(),
                name: strip_slash(name),
                image: image.clone(),
                labels: self.labels.clone(),
                state: "running".into(),
                pid: 0,
            }
            .to_info(None),
        )
    }
}

/// Idle keep-alive connections kept per client (inspects come in bursts at container starts).
const IDLE_CONNECTIONS: usize = 2;

/// One HTTP/1.1 connection: its request handle and the task driving it.
type Conn = (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    ConnGuard,
);

/// A Docker Engine API client for one unix socket. Clones share its idle connections.
#[derive(Debug, Clone)]
pub struct DockerClient {
    socket: PathBuf,
    timeout: Duration,
    /// Keep-alive connections whose last response was read whole, ready for the next request.
    idle: std::sync::Arc<std::sync::Mutex<Vec<Conn>>>,
}

/// Aborts the task driving a connection when the response (or event stream) is dropped.
#[derive(Debug)]
struct ConnGuard(tokio::task::JoinHandle<()>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListItem {
    #[serde(default)]
    id: String,
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
    #[serde(default)]
    state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectBody {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    config: Option<InspectConfig>,
    #[serde(default)]
    state: Option<InspectState>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    image: String,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    #[serde(default)]
    status: String,
    #[serde(default)]
    pid: i64,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    id: String,
    #[serde(rename = "Actor", default)]
    actor: Option<RawActor>,
}

#[derive(Deserialize)]
struct RawActor {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Attributes", default)]
    attributes: Option<HashMap<String, String>>,
}

fn strip_slash(name: &str) -> String {
    name.strip_prefix('/').unwrap_or(name).to_string()
}

fn labels_of(labels: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    labels.map(|l| info::bounded_labels(&l)).unwrap_or_default()
}

impl DockerClient {
    /// A client for `socket` whose every request must finish within `timeout`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> DockerClient {
        DockerClient {
            socket: socket.into(),
            timeout,
            idle: Default::default(),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn within<T>(
        &self,
        f: impl Future<Output = Result<T, DockerError>>,
    ) -> Result<T, DockerError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .unwrap_or(Err(DockerError::Timeout(self.timeout)))
    }

    /// A new connection.
    async fn connect(&self) -> Result<Conn, DockerError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| DockerError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let guard = ConnGuard(tokio::spawn(async move {
            let _ = conn.await;
        }));
        Ok((sender, guard))
    }

    /// An idle keep-alive connection still open, if any.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((sender, guard)) = idle.pop() {
            if sender.is_ready() && !sender.is_closed() {
                return Some((sender, guard));
            }
        }
        None
    }

    /// Keep `conn` for the next request (its response was read whole).
    fn put_idle(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }

    fn request(path: &str) -> Result<Request<Empty<Bytes>>, DockerError> {
        Request::get(path)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|_| DockerError::Status {
                status: 0,
                what: path.to_string(),
            })
    }

    /// Send `GET path` on an idle keep-alive connection (a fresh one if it fails: the runtime
    /// may have closed it meanwhile) or a new one, and wait for the response head (no time
    /// limit here).
    async fn get_reusing(&self, path: &str) -> Result<(Response<Incoming>, Conn), DockerError> {
        if let Some((mut sender, guard)) = self.take_idle() {
            if let Ok(resp) = sender.send_request(Self::request(path)?).await {
                return Ok((resp, (sender, guard)));
            }
        }
        let (mut sender, guard) = self.connect().await?;
        let resp = sender.send_request(Self::request(path)?).await?;
        Ok((resp, (sender, guard)))
    }

    /// Connect, send `GET path` and wait for the response head, on a connection of its own (a
    /// stream that is never returned to the idle set).
    async fn get(&self, path: &str) -> Result<(Response<Incoming>, ConnGuard), DockerError> {
        let (mut sender, guard) = self.connect().await?;
        let resp = sender.send_request(Self::request(path)?).await?;
        Ok((resp, guard))
    }

    /// `GET path` → the body as JSON `T`; `None` on 404.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        limit: usize,
    ) -> Result<Option<T>, DockerError> {
        self.within(async {
            let (resp, conn) = self.get_reusing(path).await?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => DockerError::Http(*e),
                    Err(_) => DockerError::TooLarge(limit),
                })?
                .to_bytes();
            // Read whole: the connection can serve the next request.
            self.put_idle(conn);
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(DockerError::Status {
                    status: status.as_u16(),
                    what: path.to_string(),
                });
            }
            Ok(Some(serde_json::from_slice(&body)?))
        })
        .await
    }

    /// The running containers (`GET /v1.41/containers/json`), at most [`LIST_MAX`].
    pub async fn list(&self) -> Result<Vec<DockerContainer>, DockerError> {
        let path = format!("/{API_VERSION}/containers/json");
        let items: Vec<ListItem> = self
            .get_json(&path, LIST_BODY_MAX)
            .await?
            .unwrap_or_default();
        Ok(items
            .into_iter()
            .take(LIST_MAX)
            .map(|i| DockerContainer {
                id: i.id,
                name: i
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| strip_slash(&n))
                    .unwrap_or_default(),
                image: i.image,
                labels: labels_of(i.labels),
                state: i.state,
                pid: 0,
            })
            .collect())
    }

    /// One container (`GET /v1.41/containers/{id}/json`); `None` when the runtime does not
    /// know it. `id` must be a container id or name (no `/`, `?`, `#`).
    pub async fn inspect(&self, id: &str) -> Result<Option<DockerContainer>, DockerError> {
        if id.is_empty() || id.contains(['/', '?', '#', '%', ' ']) || id.len() > 256 {
            return Ok(None);
        }
        let path = format!("/{API_VERSION}/containers/{id}/json");
        let Some(b): Option<InspectBody> = self.get_json(&path, INSPECT_BODY_MAX).await? else {
            return Ok(None);
        };
        let (image, labels) = b
            .config
            .map(|c| (c.image, labels_of(c.labels)))
            .unwrap_or_default();
        let (state, pid) = b
            .state
            .map(|s| (s.status, u32::try_from(s.pid).unwrap_or(0)))
            .unwrap_or_default();
        Ok(Some(DockerContainer {
            id: b.id,
            name: strip_slash(&b.name),
            image,
            labels,
            state,
            pid,
        }))
    }

    /// Subscribe to container events (`GET /v1.41/events?filters=`[`EVENT_FILTER`]): only
    /// the actions the cache uses, so the daemon does not send (nor this side parse) a
    /// container's create/attach/die/stop or every health-check exec.
    /// The time limit covers the subscription (response head); the stream itself has none.
    pub async fn events(&self) -> Result<Events, DockerError> {
        let path = format!("/{API_VERSION}/events?filters={EVENT_FILTER_QUERY}");
        let (resp, guard) = self.within(self.get(&path)).await?;
        if !resp.status().is_success() {
            return Err(DockerError::Status {
                status: resp.status().as_u16(),
                what: path,
            });
        }
        Ok(Events {
            body: resp.into_body(),
            buf: Vec::new(),
            discarding: false,
            skipped: 0,
            _conn: guard,
        })
    }
}

/// The event filter asked for: container events whose action changes what the cache holds
/// (`remove` is podman's name for `destroy`). Other actions still arriving are ignored.
pub const EVENT_FILTER: &str =
    r#"{"type":["container"],"event":["start","rename","destroy","remove"]}"#;
/// [`EVENT_FILTER`] URL-encoded (a test checks the two agree).
const EVENT_FILTER_QUERY: &str = "%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B\
%22start%22%2C%22rename%22%2C%22destroy%22%2C%22remove%22%5D%7D";

/// A container event stream: JSON objects, one per line.
#[derive(Debug)]
pub struct Events {
    body: Incoming,
    buf: Vec<u8>,
    discarding: bool,
    skipped: u64,
    _conn: ConnGuard,
}

impl Events {
    /// The next container event; `Ok(None)` when the daemon ends the stream. Lines that are
    /// too long, not JSON, or not about a container are skipped and counted ([`Self::skipped`]).
    pub async fn next(&mut self) -> Result<Option<DockerEvent>, DockerError> {
        loop {
            while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                if std::mem::take(&mut self.discarding) {
                    continue;
                }
                if let Some(ev) = self.parse_line(&line) {
                    return Ok(Some(ev));
                }
            }
            if self.buf.len() > EVENT_LINE_MAX {
                // Drop the partial line and everything up to its end.
                self.buf.clear();
                if !self.discarding {
                    self.skipped += 1;
                }
                self.discarding = true;
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            if let Ok(data) = frame?.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// Lines skipped so far (over [`EVENT_LINE_MAX`], not JSON, not a container event).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn parse_line(&mut self, line: &[u8]) -> Option<DockerEvent> {
        let text = line.trim_ascii();
        if text.is_empty() {
            return None;
        }
        let ev = match serde_json::from_slice::<RawEvent>(text) {
            Ok(ev) if ev.kind.is_empty() || ev.kind == "container" => ev,
            _ => {
                self.skipped += 1;
                return None;
            }
        };
        let action = if ev.action.is_empty() {
            ev.status
        } else {
            ev.action
        };
        let (actor_id, mut attrs) = ev
            .actor
            .map(|a| (a.id, a.attributes.unwrap_or_default()))
            .unwrap_or_default();
        let id = if actor_id.is_empty() { ev.id } else { actor_id };
        if id.is_empty() {
            self.skipped += 1;
            return None;
        }
        let action = match action.as_str() {
            "start" => EventAction::Start,
            "destroy" | "remove" => EventAction::Destroy,
            "rename" => EventAction::Rename,
            _ => EventAction::Other(action),
        };
        let name = attrs.remove("name");
        let image = attrs.remove("image");
        for k in NOT_LABELS {
            attrs.remove(k);
        }
        Some(DockerEvent {
            action,
            id,
            name,
            image,
            labels: info::bounded_labels(&attrs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_filter_query_is_the_filter_url_encoded() {
        let decoded = percent_encoding::percent_decode_str(EVENT_FILTER_QUERY)
            .decode_utf8()
            .expect("utf-8");
        assert_eq!(decoded, EVENT_FILTER);
        let v: serde_json::Value = serde_json::from_str(&decoded).expect("JSON");
        assert_eq!(v["type"][0], "container");
        // Every action the cache acts on is asked for.
        for action in ["start", "rename", "destroy", "remove"] {
            assert!(
                v["event"].as_array().unwrap().iter().any(|a| a == action),
                "{action}"
            );
        }
        assert!(EVENT_FILTER_QUERY
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'%'));
    }
}
