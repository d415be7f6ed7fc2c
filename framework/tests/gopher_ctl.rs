//! `gopher-ctl` against the command socket: `serve_unix` with a small test router on a temporary
//! socket, and the built binary run against it (outputs, exit codes, messages), plus the socket
//! set-up rules (mode, stale sockets, files in the way) and concurrent clients.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gala_gopher::ctl_client::{Client, Framing, Method};
use gala_gopher::export::http::unix::{serve_unix, UnixServeError, CMD_SOCKET, CMD_SOCKET_LIMITS};
use gala_gopher::telemetry::Telemetry;
use http_body::Frame;
use tokio::sync::oneshot;

const BIN: &str = env!("CARGO_BIN_EXE_gopher-ctl");

/// Lines of the streamed `/metrics` body: ~5 MB.
const METRIC_LINES: usize = 200_000;

fn metric_line(i: usize) -> String {
    format!("gala_gopher_test_metric{{n=\"{i:06}\"}} {i}\n")
}

fn expected_metrics() -> String {
    (0..METRIC_LINES).map(metric_line).collect()
}

/// A body sent in 64 KiB pieces as it is "rendered", with no length known up front (chunked).
struct Streamed {
    next: usize,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.next >= METRIC_LINES {
            return Poll::Ready(None);
        }
        let mut chunk = String::with_capacity(64 << 10);
        while self.next < METRIC_LINES && chunk.len() < 64 << 10 {
            chunk.push_str(&metric_line(self.next));
            self.next += 1;
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

async fn put_tcp(headers: HeaderMap, body: String) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/json");
    if !json {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "json only\n").into_response();
    }
    if body.contains("\"x\"") {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"result":"failed","message":"bad \"x\""}"#,
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"result":"ok","got":{body}}}"#),
    )
        .into_response()
}

fn test_router() -> Router {
    let json = |s: &'static str| ([(header::CONTENT_TYPE, "application/json")], s);
    Router::new()
        .route(
            "/tcp",
            get(move || async move { json(r#"{"name":"tcp","state":"running"}"#) }).put(put_tcp),
        )
        .route(
            "/probes",
            get(move || async move { json(r#"[{"name":"tcp"}]"#) }),
        )
        .route(
            "/status",
            get(move || async move { json(r#"{"probes":[]}"#) }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    Body::new(Streamed { next: 0 }),
                )
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
}

/// A served socket in a temporary directory; stops (and removes the socket) on drop.
struct Server {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/gala_gopher_cmd.sock");
        let mut s = Server {
            rt: runtime(),
            _dir: dir,
            path,
            stop: None,
            task: None,
        };
        s.serve().unwrap();
        s
    }

    fn serve(&mut self) -> Result<(), UnixServeError> {
        let _g = self.rt.enter();
        let (tx, rx) = oneshot::channel::<()>();
        let counters = Arc::new(Telemetry::default()).http.register(CMD_SOCKET);
        let task = serve_unix(
            test_router(),
            &self.path,
            CMD_SOCKET_LIMITS,
            counters,
            async move {
                let _ = rx.await;
            },
        )?;
        self.stop = Some(tx);
        self.task = Some(task);
        Ok(())
    }

    fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.path, args)
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("GOPHER_CTL_SOCKET")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn get_set_list_and_status_print_the_json() {
    let s = Server::start();
    let o = s.ctl(&["probe", "get", "tcp"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"name\":\"tcp\",\"state\":\"running\"}\n");

    let o = s.ctl(&["probe", "set", "tcp", r#"{"state":"running"}"#]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "{\"result\":\"ok\",\"got\":{\"state\":\"running\"}}\n"
    );

    let o = s.ctl(&["probe", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "[{\"name\":\"tcp\"}]\n");

    let o = s.ctl(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"probes\":[]}\n");

    // The global options may come after the subcommand too, and the environment names the
    // socket when --socket is not given.
    let o = Command::new(BIN)
        .args(["status", "--timeout", "5"])
        .env("GOPHER_CTL_SOCKET", &s.path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"probes\":[]}\n");
}

#[test]
fn a_failed_request_prints_the_daemons_message_and_exits_1() {
    let s = Server::start();
    let o = s.ctl(&["probe", "set", "tcp", r#"{"x":1}"#]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert_eq!(stderr(&o), "gopher-ctl: bad \"x\" (HTTP 400 Bad Request)\n");

    let o = s.ctl(&["probe", "get", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "gopher-ctl: not found (HTTP 404 Not Found)\n");
}

#[test]
fn metric_prints_the_whole_streamed_exposition() {
    let s = Server::start();
    // The test route really answers chunked.
    let client = Client::new(&s.path, Duration::from_secs(10));
    let answer = client.send(Method::Get, "/metrics", None).unwrap();
    assert_eq!(answer.head().framing().unwrap(), Framing::Chunked);
    drop(answer);

    let o = s.ctl(&["metric"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = expected_metrics();
    assert!(want.len() > 5_000_000, "{}", want.len());
    assert_eq!(o.stdout.len(), want.len());
    assert!(o.stdout == want.as_bytes(), "the exposition differs");

    // Non-destructive: the same again.
    let o = s.ctl(&["metric"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout == want.as_bytes());
}

#[test]
fn no_daemon_exits_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gala_gopher_cmd.sock");
    let o = ctl(&path, &["status"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!(
            "gopher-ctl: gala-gopher is not running (no socket at {})\n",
            path.display()
        )
    );

    // A socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let o = ctl(&path, &["probe", "get", "tcp"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("gala-gopher is not running (connection refused on"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn usage_errors_exit_2_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    for args in [
        &["probe", "get", "../metrics"][..],
        &["probe", "get", "a b"],
        &["probe", "set", "tcp", "{not json"],
        &["probe", "set", "tcp", "[1]"],
        &["status", "--timeout", "0"],
        &["frobnicate"],
    ] {
        let o = ctl(&path, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            !stderr(&o).contains("not running"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn a_slow_answer_is_cut_at_the_timeout() {
    let s = Server::start();
    let started = std::time::Instant::now();
    let client = Client::new(&s.path, Duration::from_secs(1));
    let e = client.send(Method::Get, "/slow", None).err().unwrap();
    assert_eq!(
        e.to_string(),
        "no complete answer from gala-gopher within 1 s"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The binary's --timeout is the same deadline; a timeout is exit status 1.
    let o = s.ctl(&["--timeout", "1", "probe", "get", "slow"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "gopher-ctl: no complete answer from gala-gopher within 1 s\n"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn the_socket_is_0660_and_removed_at_shutdown() {
    let mut s = Server::start();
    let meta = std::fs::symlink_metadata(&s.path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    let dir = std::fs::metadata(s.path.parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o7777, 0o750);
    s.shutdown();
    assert!(!s.path.exists(), "the socket file is removed at shutdown");
    let o = s.ctl(&["status"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_stale_socket_is_replaced_and_a_regular_file_is_not() {
    let mut s = Server::start();
    s.shutdown();
    // A crashed daemon's socket: the file stays, nobody listens.
    drop(std::os::unix::net::UnixListener::bind(&s.path).unwrap());
    assert_eq!(s.ctl(&["status"]).status.code(), Some(2));
    s.serve().unwrap();
    let o = s.ctl(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // A live socket is not taken over.
    let e = s.serve().unwrap_err();
    assert!(matches!(e, UnixServeError::InUse(_)), "{e}");
    assert_eq!(s.ctl(&["status"]).status.code(), Some(0));
    s.shutdown();

    std::fs::write(&s.path, b"precious").unwrap();
    let e = s.serve().unwrap_err();
    assert!(
        matches!(
            e,
            UnixServeError::NotASocket {
                what: "a regular file",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("not removed"), "{e}");
    assert_eq!(std::fs::read(&s.path).unwrap(), b"precious");
}

#[test]
fn fifty_concurrent_clients_are_all_served() {
    let s = Server::start();
    let children: Vec<_> = (0..50)
        .map(|i| {
            let args: &[&str] = if i % 2 == 0 {
                &["probe", "get", "tcp"]
            } else {
                &["status"]
            };
            Command::new(BIN)
                .arg("--socket")
                .arg(&s.path)
                .args(args)
                .env_remove("GOPHER_CTL_SOCKET")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "client {i}: {}", stderr(&o));
        let want = if i % 2 == 0 {
            "{\"name\":\"tcp\",\"state\":\"running\"}\n"
        } else {
            "{\"probes\":[]}\n"
        };
        assert_eq!(stdout(&o), want, "client {i}");
    }
}
