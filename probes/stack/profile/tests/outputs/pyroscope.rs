//! The Pyroscope push against a real local HTTP listener.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use stack_profile::pyroscope::{push, PushConfig, PushError, Pushed, Pusher};
use stack_profile::{folded, Kind};

use crate::{profile, T};

/// What the listener received.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_request(stream: TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let query = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    Some(Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    })
}

/// A one-request HTTP server answering `status`; the request comes back on the channel.
fn serve_once(status: u16) -> (String, mpsc::Receiver<Option<Request>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            let _ = tx.send(None);
            return;
        };
        let mut reply = stream.try_clone().ok();
        let request = read_request(stream);
        if let Some(w) = reply.as_mut() {
            let _ = write!(
                w,
                "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
        let _ = tx.send(request);
    });
    (addr, rx)
}

#[test]
fn pushes_folded_stacks_with_the_ingest_parameters() {
    for (kind, per_process, rate) in [(Kind::OnCpu, true, "99"), (Kind::OffCpu, false, "1000000")] {
        let (addr, rx) = serve_once(200);
        let p = profile(321, kind, T);
        let sent = push(&addr, &p, per_process);
        let req = rx.recv_timeout(Duration::from_secs(10)).ok().flatten();
        let Some(req) = req else {
            panic!("no request received ({sent:?})");
        };
        let body = folded::render(&p);
        assert!(
            matches!(sent, Ok(Pushed::Sent(n)) if n == body.len()),
            "{sent:?}"
        );
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/ingest");
        let app = match (kind, per_process) {
            (Kind::OnCpu, true) => "gala-gopher-oncpu{pid=321,comm=app}",
            _ => "gala-gopher-offcpu",
        };
        assert_eq!(req.param("name"), Some(app));
        assert_eq!(req.param("from"), Some((T - 180).to_string().as_str()));
        assert_eq!(req.param("until"), Some(T.to_string().as_str()));
        assert_eq!(req.param("format"), Some("folded"));
        assert_eq!(req.param("sampleRate"), Some(rate));
        assert_eq!(req.param("spyName"), Some("gala-gopher"));
        assert_eq!(req.param("units"), Some("samples"));
        assert_eq!(req.param("aggregationType"), Some("sum"));
        assert_eq!(req.header("content-type"), Some("text/plain"));
        assert_eq!(String::from_utf8_lossy(&req.body), body);
    }
}

#[test]
fn a_refusing_server_is_a_typed_error() {
    let (addr, rx) = serve_once(500);
    let result = push(
        &format!("http://{addr}/"),
        &profile(1, Kind::OnCpu, T),
        true,
    );
    assert!(rx
        .recv_timeout(Duration::from_secs(10))
        .ok()
        .flatten()
        .is_some());
    match result {
        Err(e @ PushError::Status { status: 500, .. }) => {
            assert_eq!(
                e.to_string(),
                format!("pyroscope http://{addr}/ingest: HTTP 500")
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unreachable_and_silent_servers_fail_within_the_timeout() {
    // Nothing listens on a port just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    let refused = push(
        &format!("127.0.0.1:{port}"),
        &profile(1, Kind::OnCpu, T),
        false,
    );
    assert!(
        matches!(refused, Err(PushError::Transport { .. })),
        "{refused:?}"
    );

    // A server that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let holder = thread::spawn(move || {
        let conn = listener.accept();
        thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let config = PushConfig {
        timeout: Duration::from_millis(500),
        ..PushConfig::new(&addr, false)
    };
    let pusher = Pusher::new(config).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let silent = pusher.push(&profile(1, Kind::OnCpu, T));
    assert!(
        matches!(silent, Err(PushError::Transport { .. })),
        "{silent:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let _ = holder.join();
}

#[test]
fn oversized_and_empty_profiles_are_not_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let config = PushConfig {
        max_body_bytes: 10,
        ..PushConfig::new(&addr, true)
    };
    let pusher = Pusher::new(config).unwrap_or_else(|e| panic!("{e}"));
    let big = pusher.push(&profile(1, Kind::OnCpu, T));
    assert!(
        matches!(big, Err(PushError::TooLarge { max: 10, .. })),
        "{big:?}"
    );
    let mut empty = profile(1, Kind::OnCpu, T);
    empty.samples.clear();
    assert!(matches!(pusher.push(&empty), Ok(Pushed::Empty)));
    assert!(listener.set_nonblocking(true).is_ok());
    assert!(listener.accept().is_err(), "no connection was made");

    assert!(matches!(
        Pusher::new(PushConfig::new("ftp://x", false)),
        Err(PushError::InvalidServer(_))
    ));
}
