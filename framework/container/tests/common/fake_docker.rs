//! A Docker Engine API server for tests and benches: hyper's HTTP/1.1 over a unix socket,
//! answering `containers/json`, `containers/{id}/json` and a live `events` stream (chunked,
//! one JSON object per line, as docker and podman send it) from shared data. Starting or
//! removing a container through [`Data`] sends docker's events to every subscriber.
#![allow(dead_code)]

use http_body_util::{Either, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A running container as the fake daemon knows it.
#[derive(Debug, Clone, Default)]
pub struct Container {
    /// Full id (64 hex).
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Host pid of its first process.
    pub pid: u32,
}

/// What the fake daemon answers from.
#[derive(Default)]
pub struct Data {
    /// Running containers (listed and inspectable).
    pub containers: Vec<Container>,
    /// Requests per kind (`list`, `inspect`, `events`, `other`).
    pub calls: HashMap<&'static str, u64>,
    /// Event streams: each with the actions its `filters` asked for (`None`: all).
    subscribers: Vec<(mpsc::UnboundedSender<Bytes>, Option<Vec<String>>)>,
    time: u64,
}

/// The data shared by the server's connections and the test.
pub type Shared = Arc<Mutex<Data>>;

impl Data {
    /// Event subscribers connected now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.len()
    }

    /// Add a running container, with its `create` and `start` events.
    pub fn start(&mut self, c: Container) {
        self.emit("create", &c);
        self.emit("start", &c);
        self.containers.push(c);
    }

    /// Remove the container `id` (`die` and `destroy` events); whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(i) = self.containers.iter().position(|c| c.id == id) else {
            return false;
        };
        let c = self.containers.remove(i);
        self.emit("die", &c);
        self.emit("destroy", &c);
        true
    }

    fn emit(&mut self, action: &str, c: &Container) {
        self.time += 1;
        let mut attrs: BTreeMap<&str, &str> = c
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        attrs.insert("name", &c.name);
        attrs.insert("image", &c.image);
        let line = serde_json::json!({
            "status": action,
            "id": c.id,
            "from": c.image,
            "Type": "container",
            "Action": action,
            "Actor": { "ID": c.id, "Attributes": attrs },
            "scope": "local",
            "time": 1_700_000_000 + self.time,
            "timeNano": (1_700_000_000 + self.time) * 1_000_000_000,
        })
        .to_string()
            + "\n";
        let line = Bytes::from(line);
        self.subscribers.retain(|(s, actions)| {
            let wanted = actions
                .as_ref()
                .is_none_or(|a| a.iter().any(|a| a == action));
            !wanted || s.send(line.clone()).is_ok()
        });
    }
}

/// An event stream's body: the lines [`Data`] sends, as they come.
struct EventBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

type Reply = Response<Either<Full<Bytes>, EventBody>>;

fn json(status: StatusCode, v: &serde_json::Value) -> Reply {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(v.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn list_item(c: &Container) -> serde_json::Value {
    serde_json::json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Image": c.image,
        "ImageID": format!("sha256:{}", "ab".repeat(32)),
        "Command": "/bin/sleep 600",
        "Created": 1_700_000_000,
        "Labels": c.labels,
        "State": "running",
        "Status": "Up 1 second",
    })
}

fn inspect_body(c: &Container) -> serde_json::Value {
    serde_json::json!({
        "Id": c.id,
        "Name": format!("/{}", c.name),
        "Image": format!("sha256:{}", "ab".repeat(32)),
        "Config": { "Image": c.image, "Labels": c.labels, "Cmd": ["/bin/sleep", "600"] },
        "State": { "Status": "running", "Running": true, "Pid": c.pid },
    })
}

/// The `event` actions of an events request's `filters` query parameter (`None`: no such
/// filter, every action), as dockerd reads it.
fn event_actions(query: Option<&str>) -> Option<Vec<String>> {
    let filters = query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("filters="))?;
    let json = percent_encoding::percent_decode_str(filters)
        .decode_utf8()
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&json).ok()?;
    let actions = v.get("event")?.as_array()?;
    Some(
        actions
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
    )
}

fn route(req: &Request<Incoming>, d: &Shared) -> Reply {
    let path = req.uri().path();
    // "/v1.41/containers/json" → "/containers/json".
    let rest = match path.strip_prefix("/v") {
        Some(v) => v.find('/').map_or("", |i| &v[i..]),
        None => path,
    };
    let mut g = d.lock().unwrap();
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["containers", "json"] => {
            *g.calls.entry("list").or_default() += 1;
            let items: Vec<serde_json::Value> = g.containers.iter().map(list_item).collect();
            json(StatusCode::OK, &serde_json::Value::Array(items))
        }
        ["containers", id, "json"] => {
            *g.calls.entry("inspect").or_default() += 1;
            match g.containers.iter().find(|c| c.id == *id || c.name == *id) {
                Some(c) => json(StatusCode::OK, &inspect_body(c)),
                None => json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({ "message": format!("no such container: {id}") }),
                ),
            }
        }
        ["events"] => {
            *g.calls.entry("events").or_default() += 1;
            let (tx, rx) = mpsc::unbounded_channel();
            g.subscribers.push((tx, event_actions(req.uri().query())));
            let mut r = Response::new(Either::Right(EventBody(rx)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => {
            *g.calls.entry("other").or_default() += 1;
            json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "message": "page not found" }),
            )
        }
    }
}

/// Serve the Docker Engine API on `path` (on the current tokio runtime) until the runtime ends.
pub fn serve(path: &Path, data: Shared) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let d = data.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let reply = route(&req, &d);
                    async move { Ok::<_, Infallible>(reply) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
