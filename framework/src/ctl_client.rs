//! The client side of the command socket, for `gopher-ctl`: one blocking HTTP/1.1 request per
//! connection over a Unix socket (`Connection: close`), and a bounded reader of the answer
//! (status line, headers, then a body framed by `Transfer-Encoding: chunked`, `Content-Length`
//! or the end of the connection). The whole exchange has one deadline.
//!
//! The reading functions take any [`BufRead`], so they are tested without a socket.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::export::http::unix::DEFAULT_CMD_SOCKET;

/// Environment variable naming the socket (`--socket` wins).
pub const SOCKET_ENV: &str = "GOPHER_CTL_SOCKET";
/// Default time for a whole exchange (upstream's 60 s).
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// Largest answer body read for `metric` (the exposition).
pub const MAX_METRICS_BODY: u64 = 256 << 20;
/// Largest answer body read otherwise.
pub const MAX_BODY: u64 = 16 << 20;
/// Largest response head (status line, headers, or a chunked body's trailers).
pub const MAX_HEAD: usize = 64 << 10;
/// Longest chunk-size line of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// Interim (1xx) answers skipped before the final one.
const MAX_INTERIM: usize = 8;

/// What went wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Nothing at the socket path.
    #[error("gala-gopher is not running (no socket at {})", .0.display())]
    NotRunning(PathBuf),
    /// A socket file nobody listens on.
    #[error("gala-gopher is not running (connection refused on {}: a stale socket)", .0.display())]
    Refused(PathBuf),
    /// The socket (or its directory) is not ours to use.
    #[error("permission denied on {} (run as root or as a member of the socket's group)", .0.display())]
    PermissionDenied(PathBuf),
    /// Any other failure to connect.
    #[error("cannot connect to {}: {source}", .path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The request path would not make a valid request line.
    #[error("invalid request path {0:?}")]
    BadPath(String),
    /// The exchange did not complete in time.
    #[error("no complete answer from gala-gopher within {0} s")]
    Timeout(u64),
    /// The answer's body is larger than allowed.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(u64),
    /// The answer is not well-formed HTTP/1.1.
    #[error("malformed answer from gala-gopher: {0}")]
    Protocol(String),
    /// Reading from or writing to the socket failed.
    #[error("connection to gala-gopher: {0}")]
    Io(io::Error),
    /// Writing the body to its destination failed.
    #[error("writing the output: {0}")]
    Output(io::Error),
}

impl CtlError {
    /// Whether the daemon could not be reached at all (exit status 2 of `gopher-ctl`).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            CtlError::NotRunning(_)
                | CtlError::Refused(_)
                | CtlError::PermissionDenied(_)
                | CtlError::Connect { .. }
        )
    }
}

fn protocol(what: impl Into<String>) -> CtlError {
    CtlError::Protocol(what.into())
}

/// Request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `PUT`.
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
        }
    }
}

/// The status line and headers of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Reason phrase (may be empty).
    pub reason: String,
    /// Headers in order; names as sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// How the body is delimited.
    pub fn framing(&self) -> Result<Framing, CtlError> {
        if (100..200).contains(&self.status) || self.status == 204 || self.status == 304 {
            return Ok(Framing::Empty);
        }
        let codings: Vec<String> = self
            .values("transfer-encoding")
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        if let Some(last) = codings.last() {
            // RFC 9112 §6.3: chunked last means chunked; any other coding runs to the close.
            return Ok(if last == "chunked" {
                Framing::Chunked
            } else {
                Framing::UntilClose
            });
        }
        let mut length = None;
        for v in self.values("content-length") {
            for part in v.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(protocol(format!("bad Content-Length {v:?}")));
                }
                let n: u64 = part
                    .parse()
                    .map_err(|_| protocol(format!("bad Content-Length {v:?}")))?;
                if length.is_some_and(|l| l != n) {
                    return Err(protocol("conflicting Content-Length headers"));
                }
                length = Some(n);
            }
        }
        Ok(length.map_or(Framing::UntilClose, Framing::Length))
    }
}

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Up to the end of the connection.
    UntilClose,
}

/// Read one line (ending in `\n`, which is dropped with a `\r` before it) of at most `max`
/// bytes. `Ok(None)` at the end of the input before any byte.
fn read_line<R: BufRead>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>, CtlError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().map_err(read_error)?;
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(protocol("the connection closed in the middle of a line"))
            };
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            return Err(protocol(format!(
                "a header line is longer than {max} bytes"
            )));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

fn read_error(e: io::Error) -> CtlError {
    match e.kind() {
        // Our deadline reader reports an expired deadline as TimedOut; the socket's own timeout
        // as WouldBlock.
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => CtlError::Timeout(0),
        _ => CtlError::Io(e),
    }
}

/// Read the head of the final answer (interim 1xx answers are skipped), at most [`MAX_HEAD`]
/// bytes each.
pub fn read_head<R: BufRead>(r: &mut R) -> Result<Head, CtlError> {
    for _ in 0..=MAX_INTERIM {
        let head = read_one_head(r)?;
        if (100..200).contains(&head.status) && head.status != 101 {
            continue;
        }
        return Ok(head);
    }
    Err(protocol("too many interim answers"))
}

fn read_one_head<R: BufRead>(r: &mut R) -> Result<Head, CtlError> {
    let mut budget = MAX_HEAD;
    let Some(status_line) = read_line(r, budget)? else {
        return Err(protocol("the connection closed before an answer"));
    };
    budget = budget.saturating_sub(status_line.len() + 2);
    let status_line = String::from_utf8_lossy(&status_line);
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(protocol(format!(
            "not an HTTP/1 status line: {status_line:?}"
        )));
    }
    let status = match code.parse::<u16>() {
        Ok(s) if code.len() == 3 && (100..600).contains(&s) => s,
        _ => return Err(protocol(format!("bad status code in {status_line:?}"))),
    };
    let mut headers = Vec::new();
    loop {
        if budget == 0 {
            return Err(protocol(format!(
                "the answer head is larger than {MAX_HEAD} bytes"
            )));
        }
        let Some(line) = read_line(r, budget)? else {
            return Err(protocol("the connection closed in the answer head"));
        };
        budget = budget.saturating_sub(line.len() + 2);
        if line.is_empty() {
            break;
        }
        headers.push(parse_header(&line)?);
    }
    Ok(Head {
        status,
        reason: reason.to_string(),
        headers,
    })
}

fn parse_header(line: &[u8]) -> Result<(String, String), CtlError> {
    let text = String::from_utf8_lossy(line);
    if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        return Err(protocol("folded header lines are not allowed"));
    }
    let Some((name, value)) = text.split_once(':') else {
        return Err(protocol(format!("bad header line {text:?}")));
    };
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(protocol(format!("bad header name {name:?}")));
    }
    Ok((
        name.to_string(),
        value.trim_matches([' ', '\t']).to_string(),
    ))
}

/// Copy `n` bytes (or up to the end when `n` is `None`) from `r` to `out`.
fn copy<R: BufRead, W: Write + ?Sized>(
    r: &mut R,
    n: Option<u64>,
    out: &mut W,
) -> Result<u64, CtlError> {
    let mut copied = 0u64;
    while n.is_none_or(|n| copied < n) {
        let buf = r.fill_buf().map_err(read_error)?;
        if buf.is_empty() {
            if n.is_some() {
                return Err(protocol("the connection closed in the middle of the body"));
            }
            break;
        }
        let want = n.map_or(buf.len(), |n| {
            usize::try_from(n - copied).map_or(buf.len(), |left| left.min(buf.len()))
        });
        out.write_all(&buf[..want]).map_err(CtlError::Output)?;
        r.consume(want);
        copied += want as u64;
    }
    Ok(copied)
}

/// Copy the body framed as `framing` to `out`, failing with [`CtlError::TooLarge`] beyond
/// `limit` bytes (nothing beyond the limit is read). Returns the body's length.
pub fn read_body<R: BufRead, W: Write + ?Sized>(
    r: &mut R,
    framing: Framing,
    limit: u64,
    out: &mut W,
) -> Result<u64, CtlError> {
    match framing {
        Framing::Empty => Ok(0),
        Framing::Length(n) if n > limit => Err(CtlError::TooLarge(limit)),
        Framing::Length(n) => copy(r, Some(n), out),
        Framing::UntilClose => {
            // One byte over the limit tells a body of exactly `limit` from a longer one.
            let mut bounded = r.take(limit + 1);
            let n = copy(&mut bounded, None, out)?;
            if n > limit {
                return Err(CtlError::TooLarge(limit));
            }
            Ok(n)
        }
        Framing::Chunked => read_chunked(r, limit, out),
    }
}

fn read_chunked<R: BufRead, W: Write + ?Sized>(
    r: &mut R,
    limit: u64,
    out: &mut W,
) -> Result<u64, CtlError> {
    let mut total = 0u64;
    loop {
        let Some(line) = read_line(r, MAX_CHUNK_LINE)? else {
            return Err(protocol("the connection closed in the middle of the body"));
        };
        let text = String::from_utf8_lossy(&line);
        let size_text = text
            .split(';')
            .next()
            .unwrap_or_default()
            .trim_matches([' ', '\t']);
        if size_text.is_empty() || size_text.len() > 16 {
            return Err(protocol(format!("bad chunk size line {text:?}")));
        }
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| protocol(format!("bad chunk size line {text:?}")))?;
        if size == 0 {
            break;
        }
        if total.saturating_add(size) > limit {
            return Err(CtlError::TooLarge(limit));
        }
        total += copy(r, Some(size), out)?;
        match read_line(r, 2)? {
            Some(l) if l.is_empty() => {}
            _ => return Err(protocol("a chunk does not end with CRLF")),
        }
    }
    // Trailers, up to the empty line.
    let mut budget = MAX_HEAD;
    loop {
        let Some(line) = read_line(r, budget)? else {
            return Err(protocol("the connection closed in the chunked trailer"));
        };
        if line.is_empty() {
            return Ok(total);
        }
        budget = budget.saturating_sub(line.len() + 2);
        if budget == 0 {
            return Err(protocol(format!(
                "the trailer is larger than {MAX_HEAD} bytes"
            )));
        }
    }
}

/// The `message` of a `{"result":"failed","message":"…"}` answer, else the body as text
/// (trimmed). Control characters are escaped so that an answer cannot drive the terminal.
pub fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(o)) => match o.get("message") {
            Some(serde_json::Value::String(m)) => m.clone(),
            _ => String::from_utf8_lossy(body).into_owned(),
        },
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    let mut out = String::with_capacity(text.len());
    for c in text.trim().chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A socket whose every read and write must finish before one deadline.
struct DeadlineStream {
    stream: UnixStream,
    deadline: Instant,
}

impl DeadlineStream {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

// A signal (EINTR) is retried here: `BufRead::fill_buf` would pass it on.
impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self.left()?;
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let left = self.left()?;
            self.stream.set_write_timeout(Some(left))?;
            match self.stream.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A client of the command socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

/// An answer whose head has been read; the body is still on the connection.
pub struct Answer {
    head: Head,
    framing: Framing,
    reader: BufReader<DeadlineStream>,
    timeout_secs: u64,
}

impl Answer {
    /// Status line and headers.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Copy the body to `out` (at most `limit` bytes).
    pub fn body_to<W: Write + ?Sized>(mut self, limit: u64, out: &mut W) -> Result<u64, CtlError> {
        let secs = self.timeout_secs;
        read_body(&mut self.reader, self.framing, limit, out).map_err(|e| with_timeout(e, secs))
    }

    /// The body (at most `limit` bytes).
    pub fn body(self, limit: u64) -> Result<Vec<u8>, CtlError> {
        let mut v = Vec::new();
        self.body_to(limit, &mut v)?;
        Ok(v)
    }
}

fn with_timeout(e: CtlError, secs: u64) -> CtlError {
    match e {
        CtlError::Timeout(_) => CtlError::Timeout(secs),
        e => e,
    }
}

/// Is `path` safe in a request line: starts with `/`, visible ASCII only?
fn valid_request_path(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic())
}

impl Client {
    /// A client of the socket at `socket`; each exchange must complete within `timeout`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Client {
            socket: socket.into(),
            timeout,
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send one request (a `body` goes as `application/json`) and read the answer's head.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer, CtlError> {
        if !valid_request_path(path) {
            return Err(CtlError::BadPath(path.to_string()));
        }
        let deadline = Instant::now() + self.timeout;
        let secs = self.timeout.as_secs();
        let stream = self.connect()?;
        let mut io = DeadlineStream { stream, deadline };
        let mut head = format!(
            "{} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: gopher-ctl/{}\r\n\
             Connection: close\r\n",
            method.as_str(),
            env!("CARGO_PKG_VERSION")
        );
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let sent = io
            .write_all(head.as_bytes())
            .and_then(|()| io.write_all(body.unwrap_or_default()))
            .and_then(|()| io.flush());
        if let Err(e) = sent {
            // The daemon may answer (and close) before taking all of a large body: read on.
            if e.kind() != io::ErrorKind::BrokenPipe && e.kind() != io::ErrorKind::ConnectionReset {
                return Err(with_timeout(read_error(e), secs));
            }
        }
        let mut reader = BufReader::with_capacity(64 << 10, io);
        let head = read_head(&mut reader).map_err(|e| with_timeout(e, secs))?;
        let framing = head.framing()?;
        Ok(Answer {
            head,
            framing,
            reader,
            timeout_secs: secs,
        })
    }

    fn connect(&self) -> Result<UnixStream, CtlError> {
        let path = self.socket.clone();
        UnixStream::connect(&self.socket).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => CtlError::NotRunning(path),
            io::ErrorKind::ConnectionRefused => CtlError::Refused(path),
            io::ErrorKind::PermissionDenied => CtlError::PermissionDenied(path),
            _ => CtlError::Connect { path, source: e },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(raw: &[u8], limit: u64) -> Result<(Head, Vec<u8>), CtlError> {
        let mut r = io::BufReader::with_capacity(7, raw);
        let head = read_head(&mut r)?;
        let mut body = Vec::new();
        read_body(&mut r, head.framing()?, limit, &mut body)?;
        Ok((head, body))
    }

    #[test]
    fn content_length_body() {
        let (h, b) = answer(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 4\r\n\r\n{}\r\nextra",
            100,
        )
        .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.reason, "OK");
        assert_eq!(h.values("Content-Type").next(), Some("application/json"));
        assert_eq!(b, b"{}\r\n");
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;x=y\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (_, b) = answer(raw, 100).unwrap();
        assert_eq!(b, b"hello, world!!!");
        assert!(matches!(answer(raw, 14), Err(CtlError::TooLarge(14))));
        assert!(answer(raw, 15).is_ok());
    }

    #[test]
    fn until_close_body_and_its_limit() {
        let raw = b"HTTP/1.0 500 Internal Server Error\r\n\r\n0123456789";
        let (h, b) = answer(raw, 10).unwrap();
        assert_eq!((h.status, b.as_slice()), (500, &b"0123456789"[..]));
        assert!(matches!(answer(raw, 9), Err(CtlError::TooLarge(9))));
    }

    #[test]
    fn interim_answers_are_skipped_and_204_has_no_body() {
        let (h, b) = answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc",
            100,
        )
        .unwrap();
        assert_eq!(h.status, 204);
        assert!(b.is_empty());
    }

    #[test]
    fn malformed_answers_are_errors() {
        for raw in [
            &b""[..],
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1",
        ] {
            assert!(
                matches!(answer(raw, 1 << 20), Err(CtlError::Protocol(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(raw),
                answer(raw, 1 << 20)
            );
        }
    }

    #[test]
    fn a_huge_head_or_declared_length_is_refused_without_reading_it() {
        let mut raw = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        raw.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(answer(&raw, 10), Err(CtlError::Protocol(_))));
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n";
        assert!(matches!(answer(raw, 100), Err(CtlError::TooLarge(100))));
    }

    #[test]
    fn error_message_prefers_the_json_message() {
        assert_eq!(
            error_message(br#"{"result":"failed","message":"bad \"x\""}"#),
            r#"bad "x""#
        );
        assert_eq!(error_message(b"not found\n"), "not found");
        assert_eq!(error_message(b"\x1b[2Jboom"), "\\u{1b}[2Jboom");
        assert_eq!(error_message(br#"{"message":5}"#), r#"{"message":5}"#);
    }

    #[test]
    fn request_paths_are_checked() {
        assert!(valid_request_path("/tcp"));
        assert!(!valid_request_path("tcp"));
        assert!(!valid_request_path("/a b"));
        assert!(!valid_request_path("/a\r\nX: y"));
        let c = Client::new("/nonexistent/dir/s.sock", Duration::from_secs(1));
        assert!(matches!(
            c.send(Method::Get, "/a b", None),
            Err(CtlError::BadPath(_))
        ));
        let e = c.send(Method::Get, "/tcp", None).err().unwrap();
        assert!(e.is_unreachable());
        assert_eq!(
            e.to_string(),
            "gala-gopher is not running (no socket at /nonexistent/dir/s.sock)"
        );
    }
}
