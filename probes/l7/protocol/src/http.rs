//! HTTP/1.0 and HTTP/1.1 (RFC 9112), both directions.
//!
//! Requests yield `api` = "METHOD /templated/path" (query and fragment removed, see
//! [`crate::api::template_path`]; `CONNECT host:port`, `OPTIONS *` as sent); responses yield
//! [`Status::Ok`] below 400, else `Error("404")` and the like. Messages are yielded when their
//! body ends, `len` = start line, header and body bytes (a response also counts the 1xx interim
//! responses before it, which are not yielded). Bodies are skipped by `Content-Length` or by
//! `Transfer-Encoding: chunked` framing, never buffered; lines are accepted with CRLF or bare LF.
//!
//! Responses the parser cannot frame alone:
//! - A response to `HEAD` has no body, and a 2xx answer to `CONNECT` turns the connection into
//!   a tunnel. The response stream does not show the requests: the caller announces each
//!   request's method, in order, with [`ResponseParser::expect`] (or
//!   [`ResponseParser::expect_head`]); without announcements every response is taken as
//!   answering a plain request.
//! - A response with neither `Content-Length` nor chunked framing (HTTP/1.0, `Connection: close`)
//!   has a body until the connection closes: it is yielded when its header ends, with `len` =
//!   header bytes, and everything after it is skipped.
//! - `101 Switching Protocols` (and a 2xx to an announced `CONNECT`) is yielded as
//!   [`Status::Ok`]; the stream is no longer HTTP and every later byte gives
//!   [`ParseError::Desynchronised`]. The request direction cannot know that an upgrade was
//!   accepted: bytes after it fail there as [`ParseError::Malformed`].
//!
//! Errors are final (HTTP has no resynchronisation point): after one, every `feed` and `gap`
//! returns [`ParseError::Desynchronised`].

use std::collections::VecDeque;

use crate::{
    api, printable, text, Detect, Direction, Message, ParseError, Protocol, Status, StreamParser,
    MAX_PENDING,
};

/// Methods [`detect`] recognises at the start of a connection.
const METHODS: [&[u8]; 9] = [
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
];

/// Most request methods [`ResponseParser::expect`] keeps waiting for their responses.
pub const MAX_EXPECTED: usize = 256;

/// A parser of one direction of an HTTP connection.
pub fn parser(direction: Direction) -> Box<dyn StreamParser> {
    match direction {
        Direction::Request => Box::new(RequestParser::new()),
        Direction::Response => Box::new(ResponseParser::new()),
    }
}

/// Whether a connection's first bytes are HTTP: the request starts with a known method and a
/// space; a response, when given (and not empty), must start with `HTTP/1.`.
pub fn detect(request: &[u8], response: Option<&[u8]>) -> Detect {
    let asked = detect_request(request);
    let Some(resp) = response.filter(|r| !r.is_empty()) else {
        return asked;
    };
    let prefix: &[u8] = b"HTTP/1.";
    if asked == Detect::No {
        Detect::No
    } else if resp.starts_with(prefix) {
        asked
    } else if prefix.starts_with(resp) {
        Detect::NeedMore
    } else {
        Detect::No
    }
}

/// [`detect`] of the request alone.
fn detect_request(request: &[u8]) -> Detect {
    let mut more = false;
    for m in METHODS {
        let Some(word) = request.get(..m.len()) else {
            more |= m.starts_with(request);
            continue;
        };
        if word == m {
            match request.get(m.len()) {
                Some(b' ') => return Detect::Yes,
                None => more = true,
                Some(_) => {}
            }
        }
    }
    if more {
        Detect::NeedMore
    } else {
        Detect::No
    }
}

/// The request direction's parser.
pub struct RequestParser(Core);

impl RequestParser {
    /// A parser at the start of a request stream.
    pub fn new() -> Self {
        Self(Core::new(Direction::Request))
    }
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamParser for RequestParser {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }
    fn feed(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        self.0.feed(data, out)
    }
    fn gap(&mut self, n: u64) -> Result<(), ParseError> {
        self.0.gap(n)
    }
}

/// The response direction's parser; see the module's documentation for [`Self::expect`].
pub struct ResponseParser(Core);

impl ResponseParser {
    /// A parser at the start of a response stream.
    pub fn new() -> Self {
        Self(Core::new(Direction::Response))
    }

    /// Announces the method of the next request whose response has not been parsed yet (call
    /// it for every request, in order, or never). Each final (non-1xx) response uses one
    /// announcement. More than [`MAX_EXPECTED`] waiting announcements fail the stream.
    pub fn expect(&mut self, method: &[u8]) {
        let m = if method.eq_ignore_ascii_case(b"HEAD") {
            Asked::Head
        } else if method.eq_ignore_ascii_case(b"CONNECT") {
            Asked::Connect
        } else {
            Asked::Other
        };
        if self.0.asked.len() >= MAX_EXPECTED {
            self.0.state = State::Failed;
        } else {
            self.0.asked.push_back(m);
        }
    }

    /// [`Self::expect`] of a `HEAD` request: the next response has no body.
    pub fn expect_head(&mut self) {
        self.expect(b"HEAD");
    }
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamParser for ResponseParser {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }
    fn feed(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        self.0.feed(data, out)
    }
    fn gap(&mut self, n: u64) -> Result<(), ParseError> {
        self.0.gap(n)
    }
}

/// The method a response answers, as far as framing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Head,
    Connect,
    Other,
}

/// Where the parser is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the start line and header lines.
    Head,
    /// Skipping a `Content-Length` body: bytes left.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data: bytes left.
    ChunkData(u64),
    /// Expecting the CRLF after chunk data (`true`: CR seen).
    ChunkEnd(bool),
    /// Reading trailer lines after the last chunk.
    Trailer,
    /// Skipping a response body that lasts until the connection closes.
    UntilClose,
    /// The connection switched protocols: nothing more is HTTP.
    Upgraded,
    /// Failed: nothing more is parsed.
    Failed,
}

/// What the current message's start line and header said.
#[derive(Debug, Default)]
struct Head {
    /// Start line seen.
    started: bool,
    /// Requests: the API name.
    api: Option<String>,
    /// Responses: the status code.
    code: u16,
    /// `Content-Length`.
    length: Option<u64>,
    /// `Transfer-Encoding` present.
    encoded: bool,
    /// Its last coding is `chunked`.
    chunked: bool,
    /// The last header field was a framing one (for obsolete line folding).
    framing_last: bool,
}

/// The state machine both directions share.
struct Core {
    direction: Direction,
    state: State,
    /// The current incomplete line (at most [`MAX_PENDING`] bytes).
    line: Vec<u8>,
    /// Bytes of the current header, trailer or chunk-size line so far.
    block: usize,
    /// Bytes of the current message so far.
    len: u64,
    /// Bytes of interim responses, counted in the next response.
    carry: u64,
    head: Head,
    /// Response direction: the announced methods of requests waiting for their response.
    asked: VecDeque<Asked>,
}

/// The malformed-input error.
fn malformed() -> ParseError {
    ParseError::Malformed(Protocol::Http)
}

impl Core {
    fn new(direction: Direction) -> Self {
        Self {
            direction,
            state: State::Head,
            line: Vec::new(),
            block: 0,
            len: 0,
            carry: 0,
            head: Head::default(),
            asked: VecDeque::new(),
        }
    }

    fn feed(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        match self.state {
            State::Failed => return Err(ParseError::Desynchronised(Protocol::Http)),
            State::Upgraded if !data.is_empty() => {
                self.state = State::Failed;
                return Err(ParseError::Desynchronised(Protocol::Http));
            }
            _ => {}
        }
        let mut pos = 0;
        loop {
            self.settle(out);
            if pos >= data.len() {
                return Ok(());
            }
            if self.state == State::Upgraded {
                self.state = State::Failed;
                return Err(ParseError::Desynchronised(Protocol::Http));
            }
            match self.step(data, pos, out) {
                Ok(next) => pos = next,
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            }
        }
    }

    /// Completes what a finished skip (by data or by a gap) completed.
    fn settle(&mut self, out: &mut Vec<Message>) {
        match self.state {
            State::Body(0) => self.complete(out),
            State::ChunkData(0) => self.state = State::ChunkEnd(false),
            _ => {}
        }
    }

    fn gap(&mut self, n: u64) -> Result<(), ParseError> {
        let skipped = match self.state {
            State::Body(left) if n <= left => Some(State::Body(left - n)),
            State::ChunkData(left) if n <= left => Some(State::ChunkData(left - n)),
            State::UntilClose => Some(State::UntilClose),
            State::Failed => None,
            _ if n == 0 => Some(self.state),
            _ => None,
        };
        match skipped {
            Some(state) => {
                self.state = state;
                self.len = self.len.saturating_add(n);
                Ok(())
            }
            None => {
                self.state = State::Failed;
                Err(ParseError::Desynchronised(Protocol::Http))
            }
        }
    }

    /// Parses from `data[pos..]` (not empty); returns the position after what was used.
    fn step(
        &mut self,
        data: &[u8],
        pos: usize,
        out: &mut Vec<Message>,
    ) -> Result<usize, ParseError> {
        let rest = data.get(pos..).unwrap_or_default();
        match self.state {
            State::Head => self.head_line(rest, out).map(|n| pos + n),
            State::Body(left) | State::ChunkData(left) => {
                let take = left.min(rest.len() as u64);
                self.len = self.len.saturating_add(take);
                self.state = match self.state {
                    State::Body(_) => State::Body(left - take),
                    _ => State::ChunkData(left - take),
                };
                // `take` is at most `rest.len()`, a usize.
                Ok(pos + take as usize)
            }
            State::ChunkSize => self.chunk_size_line(rest).map(|n| pos + n),
            State::ChunkEnd(cr) => {
                self.len = self.len.saturating_add(1);
                match (rest.first(), cr) {
                    (Some(b'\r'), false) => self.state = State::ChunkEnd(true),
                    (Some(b'\n'), _) => self.state = State::ChunkSize,
                    _ => return Err(malformed()),
                }
                self.block = 0;
                Ok(pos + 1)
            }
            State::Trailer => self.trailer_line(rest, out).map(|n| pos + n),
            State::UntilClose => Ok(data.len()),
            State::Upgraded | State::Failed => Err(ParseError::Desynchronised(Protocol::Http)),
        }
    }

    /// Adds the bytes of `rest` up to the end of a line to the current line; returns how many
    /// were used and whether the line is complete.
    fn take_line(&mut self, rest: &[u8]) -> Result<(usize, bool), ParseError> {
        let (used, done) = match memchr::memchr(b'\n', rest) {
            Some(i) => (i + 1, true),
            None => (rest.len(), false),
        };
        self.count_line(used)?;
        self.line
            .extend_from_slice(rest.get(..used).unwrap_or_default());
        Ok((used, done))
    }

    /// Counts `used` more bytes of the current line, within [`MAX_PENDING`] per block.
    fn count_line(&mut self, used: usize) -> Result<(), ParseError> {
        if self.block.saturating_add(used) > MAX_PENDING {
            return Err(ParseError::TooLong(Protocol::Http));
        }
        self.block += used;
        self.len = self.len.saturating_add(used as u64);
        Ok(())
    }

    /// The current complete line without its line end, taken out of the parser.
    fn finished_line(&mut self) -> Vec<u8> {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        line
    }

    /// Gives the line buffer back for reuse.
    fn recycle(&mut self, mut line: Vec<u8>) {
        line.clear();
        self.line = line;
    }

    fn head_line(&mut self, rest: &[u8], out: &mut Vec<Message>) -> Result<usize, ParseError> {
        // The common case: a whole line in this call's bytes, used in place.
        if self.line.is_empty() {
            if let Some(i) = memchr::memchr(b'\n', rest) {
                let used = i + 1;
                self.count_line(used)?;
                let line = rest.get(..i).unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return self.head_line_done(line, out).map(|()| used);
            }
        }
        let (used, done) = self.take_line(rest)?;
        if !done {
            return Ok(used);
        }
        let line = self.finished_line();
        let result = self.head_line_done(&line, out);
        self.recycle(line);
        result.map(|()| used)
    }

    /// A complete start or header line (without its line end).
    fn head_line_done(&mut self, line: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        if !self.head.started {
            if line.is_empty() {
                // Empty lines before a start line are ignored (RFC 9112 section 2.2).
                Ok(())
            } else {
                self.start_line(line)
            }
        } else if line.is_empty() {
            self.header_done(out)
        } else {
            self.field_line(line)
        }
    }

    fn start_line(&mut self, line: &[u8]) -> Result<(), ParseError> {
        self.head.started = true;
        match self.direction {
            Direction::Request => {
                self.head.api = Some(request_api(line).ok_or_else(malformed)?);
            }
            Direction::Response => {
                self.head.code = status_code(line).ok_or_else(malformed)?;
            }
        }
        Ok(())
    }

    fn field_line(&mut self, line: &[u8]) -> Result<(), ParseError> {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // Obsolete line folding: harmless unless it continues a framing field.
            return if self.head.framing_last {
                Err(malformed())
            } else {
                Ok(())
            };
        }
        let colon = memchr::memchr(b':', line).ok_or_else(malformed)?;
        let (name, value) = line.split_at(colon);
        let value = trim(value.get(1..).unwrap_or_default());
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(malformed());
        }
        self.head.framing_last = false;
        if name.eq_ignore_ascii_case(b"content-length") {
            self.head.framing_last = true;
            let n = content_length(value).ok_or_else(malformed)?;
            if self.head.length.is_some_and(|old| old != n) {
                return Err(malformed());
            }
            self.head.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.head.framing_last = true;
            self.head.encoded = true;
            if let Some(last) = value
                .split(|&b| b == b',')
                .map(trim)
                .rfind(|c| !c.is_empty())
            {
                self.head.chunked = last.eq_ignore_ascii_case(b"chunked");
            }
        }
        Ok(())
    }

    /// The header ended: decides the body.
    fn header_done(&mut self, out: &mut Vec<Message>) -> Result<(), ParseError> {
        self.block = 0;
        match self.direction {
            Direction::Request => {
                if self.head.chunked {
                    self.state = State::ChunkSize;
                } else if self.head.encoded {
                    // A request body of unknown length (RFC 9112 section 6.3).
                    return Err(malformed());
                } else {
                    self.state = State::Body(self.head.length.unwrap_or(0));
                    self.settle(out);
                }
            }
            Direction::Response => self.response_body(out),
        }
        Ok(())
    }

    fn response_body(&mut self, out: &mut Vec<Message>) {
        let code = self.head.code;
        if code == 101 {
            self.complete(out);
            self.state = State::Upgraded;
            return;
        }
        if code < 200 {
            // Interim: not yielded, counted in the final response.
            self.carry = self.carry.saturating_add(self.len);
            self.len = 0;
            self.head = Head::default();
            self.state = State::Head;
            return;
        }
        let asked = self.asked.pop_front().unwrap_or(Asked::Other);
        if asked == Asked::Connect && (200..300).contains(&code) {
            self.complete(out);
            self.state = State::Upgraded;
        } else if asked == Asked::Head || code == 204 || code == 304 {
            self.complete(out);
        } else if self.head.chunked {
            self.state = State::ChunkSize;
        } else if let (false, Some(n)) = (self.head.encoded, self.head.length) {
            self.state = State::Body(n);
            self.settle(out);
        } else {
            self.complete(out);
            self.state = State::UntilClose;
        }
    }

    fn chunk_size_line(&mut self, rest: &[u8]) -> Result<usize, ParseError> {
        let (used, done) = self.take_line(rest)?;
        if !done {
            return Ok(used);
        }
        let line = self.finished_line();
        let size = chunk_size(&line);
        self.recycle(line);
        self.block = 0;
        self.state = match size.ok_or_else(malformed)? {
            0 => State::Trailer,
            n => State::ChunkData(n),
        };
        Ok(used)
    }

    fn trailer_line(&mut self, rest: &[u8], out: &mut Vec<Message>) -> Result<usize, ParseError> {
        let (used, done) = self.take_line(rest)?;
        if done {
            let line = self.finished_line();
            let end = line.is_empty();
            let field = line.contains(&b':') || matches!(line.first(), Some(b' ' | b'\t'));
            self.recycle(line);
            if end {
                self.complete(out);
            } else if !field {
                return Err(malformed());
            }
        }
        Ok(used)
    }

    /// Yields the current message and gets ready for the next.
    fn complete(&mut self, out: &mut Vec<Message>) {
        let head = std::mem::take(&mut self.head);
        let (api, status) = match self.direction {
            Direction::Request => (head.api, None),
            Direction::Response if head.code >= 400 => {
                (None, Some(Status::Error(head.code.to_string())))
            }
            Direction::Response => (None, Some(Status::Ok)),
        };
        out.push(Message {
            direction: self.direction,
            api,
            status,
            correlation: None,
            len: self.len.saturating_add(self.carry),
            topics: None,
        });
        self.len = 0;
        self.carry = 0;
        self.block = 0;
        self.state = State::Head;
    }

    /// Bytes the parser keeps (for the bound tests).
    #[cfg(test)]
    fn retained(&self) -> usize {
        self.line.len()
    }
}

/// Whether `b` may be in a token (method, field name).
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] by byte value (a table: header names are checked byte by byte).
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// `s` without leading and trailing spaces and tabs.
fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// A `Content-Length` value: one decimal number, or a list of equal ones.
fn content_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|&b| b == b',').map(trim) {
        let n = decimal(part)?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// A non-empty decimal number that fits a u64.
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// A chunk-size line's size (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let hex = trim(line.get(..end).unwrap_or_default());
    if hex.is_empty() {
        return None;
    }
    hex.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(d))
    })
}

/// Whether `v` is `HTTP/1.x`.
fn is_version(v: &[u8]) -> bool {
    v.len() == 8 && v.starts_with(b"HTTP/1.") && v.get(7).is_some_and(u8::is_ascii_digit)
}

/// A status line's code: `HTTP/1.x SP 3DIGIT [SP reason]`.
fn status_code(line: &[u8]) -> Option<u16> {
    let version = line.get(..8)?;
    let code = line.get(9..12)?;
    if !is_version(version)
        || line.get(8) != Some(&b' ')
        || !matches!(line.get(12), None | Some(b' '))
    {
        return None;
    }
    if code.first().is_some_and(|&b| b == b'0') {
        return None;
    }
    u16::try_from(decimal(code)?).ok()
}

/// A request line's API name: `METHOD SP target SP HTTP/1.x`.
fn request_api(line: &[u8]) -> Option<String> {
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || target.is_empty()
        || !target.iter().all(|&b| b > 0x20 && b != 0x7f)
        || !is_version(version)
    {
        return None;
    }
    let named = if method == b"CONNECT" || target == b"*" {
        printable(target)
    } else {
        api::template_path(&printable(request_path(target)?))
    };
    let mut api = printable(method);
    api.push(' ');
    api.push_str(&named);
    Some(text(api.as_bytes()))
}

/// The path of a request target (origin or absolute form), without query and fragment.
fn request_path(target: &[u8]) -> Option<&[u8]> {
    let path = if target.starts_with(b"/") {
        target
    } else {
        let scheme = target.windows(3).position(|w| w == b"://")?;
        let after = target.get(scheme + 3..)?;
        let start = after.iter().position(|&b| matches!(b, b'/' | b'?' | b'#'));
        match start {
            Some(i) => after.get(i..)?,
            None => b"/",
        }
    };
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    path.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{feed_cut, req, resp};
    use crate::MAX_TEXT;
    use proptest::prelude::*;

    fn whole(direction: Direction, data: &[u8]) -> (Vec<Message>, Option<ParseError>) {
        feed_cut(parser(direction).as_mut(), data, &[])
    }

    const CURL: &[u8] = b"GET /api/users/42/orders?page=2#top HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
    const POST: &[u8] = b"POST /v1/items HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"name\":\"a\"}\n";
    const NGINX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Sat, 05 Dec 2026 00:00:00 GMT\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n1a; name=value\r\n<html><body>hi</body></ht\r\nA\r\nml>\n......\r\n0\r\nX-Trailer: 1\r\n\r\n";
    const NOT_FOUND: &[u8] =
        b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\nContent-Length: 9\r\n\r\nnot found";

    #[test]
    fn curl_request() {
        let (msgs, err) = whole(Direction::Request, CURL);
        assert_eq!(err, None);
        assert_eq!(msgs, vec![req("GET /api/users/{id}/orders", CURL.len())]);
    }

    #[test]
    fn empty_lines_before_a_request_are_ignored() {
        let data = [&b"\r\n\n"[..], CURL].concat();
        assert_eq!(
            whole(Direction::Request, &data),
            (vec![req("GET /api/users/{id}/orders", data.len())], None)
        );
    }

    #[test]
    fn too_many_announcements_fail_the_stream() {
        let mut p = ResponseParser::new();
        for _ in 0..=MAX_EXPECTED {
            p.expect(b"GET");
        }
        assert_eq!(
            p.feed(NOT_FOUND, &mut Vec::new()),
            Err(ParseError::Desynchronised(Protocol::Http))
        );
    }

    #[test]
    fn pipelined_requests_in_one_feed() {
        let data = [CURL, POST, CURL].concat();
        let (msgs, err) = whole(Direction::Request, &data);
        assert_eq!(err, None);
        let apis: Vec<_> = msgs
            .iter()
            .map(|m| m.api.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            apis,
            [
                "GET /api/users/{id}/orders",
                "POST /v1/items",
                "GET /api/users/{id}/orders"
            ]
        );
        assert_eq!(msgs[1].len, POST.len() as u64);
    }

    #[test]
    fn nginx_chunked_and_error_responses() {
        let data = [NGINX, NOT_FOUND].concat();
        let (msgs, err) = whole(Direction::Response, &data);
        assert_eq!(err, None);
        assert_eq!(
            msgs,
            vec![
                resp(Status::Ok, NGINX.len()),
                resp(Status::Error("404".into()), NOT_FOUND.len())
            ]
        );
    }

    #[test]
    fn request_forms() {
        for (line, api) in [
            ("GET http://example.com/a/123?q HTTP/1.1", "GET /a/{id}"),
            ("GET http://example.com HTTP/1.1", "GET /"),
            ("GET https://example.com?x=1 HTTP/1.0", "GET /"),
            (
                "CONNECT example.com:443 HTTP/1.1",
                "CONNECT example.com:443",
            ),
            ("OPTIONS * HTTP/1.1", "OPTIONS *"),
            (
                "DELETE /x/9f1c2d3e-4b5a-6c7d-8e9f-0a1b2c3d4e5f HTTP/1.1",
                "DELETE /x/{id}",
            ),
        ] {
            let data = format!("{line}\r\nHost: h\r\n\r\n");
            let (msgs, err) = whole(Direction::Request, data.as_bytes());
            assert_eq!((msgs, err), (vec![req(api, data.len())], None), "{line}");
        }
        let long = format!("GET /{} HTTP/1.1\n\n", "a".repeat(500));
        let (msgs, _) = whole(Direction::Request, long.as_bytes());
        assert_eq!(msgs[0].api.as_ref().map(String::len), Some(MAX_TEXT));
    }

    #[test]
    fn malformed_stays_failed() {
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET a HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
        ] {
            let mut p = parser(Direction::Request);
            let (_, err) = feed_cut(p.as_mut(), bad, &[]);
            assert_eq!(err, Some(ParseError::Malformed(Protocol::Http)), "{bad:?}");
            assert_eq!(
                p.feed(CURL, &mut Vec::new()),
                Err(ParseError::Desynchronised(Protocol::Http))
            );
            assert_eq!(p.gap(1), Err(ParseError::Desynchronised(Protocol::Http)));
        }
        let (_, err) = whole(Direction::Response, b"HTTP/1.1 20 OK\r\n\r\n");
        assert_eq!(err, Some(ParseError::Malformed(Protocol::Http)));
    }

    #[test]
    fn header_over_max_pending_is_too_long() {
        let mut data = b"GET / HTTP/1.1\r\nX: ".to_vec();
        data.resize(MAX_PENDING + 10, b'a');
        let mut p = RequestParser::new();
        let (_, err) = feed_cut(&mut p, &data, &[100, 5000]);
        assert_eq!(err, Some(ParseError::TooLong(Protocol::Http)));
        assert!(p.0.retained() <= MAX_PENDING);
        // Exactly MAX_PENDING bytes of header fit.
        let mut fit = b"GET / HTTP/1.1\r\nX: ".to_vec();
        fit.resize(MAX_PENDING - 4, b'a');
        fit.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            whole(Direction::Request, &fit),
            (vec![req("GET /", MAX_PENDING)], None)
        );
    }

    #[test]
    fn head_responses_have_no_body() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
        let mut p = ResponseParser::new();
        p.expect_head();
        p.expect(b"GET");
        let data = [&head[..], NOT_FOUND].concat();
        let (msgs, err) = feed_cut(&mut p, &data, &[]);
        assert_eq!(err, None);
        assert_eq!(
            msgs,
            vec![
                resp(Status::Ok, head.len()),
                resp(Status::Error("404".into()), NOT_FOUND.len())
            ]
        );
    }

    #[test]
    fn no_body_statuses_and_interim_responses() {
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
        let nc = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n";
        let nm = b"HTTP/1.1 304 Not Modified\r\n\r\n";
        let data = [&cont[..], &nc[..], &nm[..], &cont[..], NOT_FOUND].concat();
        let (msgs, err) = whole(Direction::Response, &data);
        assert_eq!(err, None);
        assert_eq!(
            msgs,
            vec![
                resp(Status::Ok, cont.len() + nc.len()),
                resp(Status::Ok, nm.len()),
                resp(Status::Error("404".into()), cont.len() + NOT_FOUND.len())
            ]
        );
    }

    #[test]
    fn switching_protocols_ends_http() {
        let up = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let data = [&up[..], b"\x81\x05hello"].concat();
        let (msgs, err) = whole(Direction::Response, &data);
        assert_eq!(msgs, vec![resp(Status::Ok, up.len())]);
        assert_eq!(err, Some(ParseError::Desynchronised(Protocol::Http)));
        let mut p = ResponseParser::new();
        p.expect(b"CONNECT");
        let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
        let (msgs, err) = feed_cut(&mut p, &[&ok[..], b"\x16\x03\x01"].concat(), &[ok.len()]);
        assert_eq!(msgs, vec![resp(Status::Ok, ok.len())]);
        assert_eq!(err, Some(ParseError::Desynchronised(Protocol::Http)));
    }

    #[test]
    fn body_until_close() {
        let head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n";
        let mut p = parser(Direction::Response);
        let (msgs, err) = feed_cut(
            p.as_mut(),
            &[&head[..], b"HTTP/1.1 500 x\r\n\r\n and more"].concat(),
            &[3, 60],
        );
        assert_eq!((msgs, err), (vec![resp(Status::Ok, head.len())], None));
        assert_eq!(p.gap(1 << 40), Ok(()));
        assert_eq!(p.feed(b"more", &mut Vec::new()), Ok(()));
    }

    #[test]
    fn gaps() {
        // Inside a Content-Length body: skipped, the message still completes with its length.
        let mut p = parser(Direction::Request);
        let mut out = Vec::new();
        assert_eq!(p.feed(&POST[..POST.len() - 13], &mut out), Ok(()));
        assert_eq!(p.gap(10), Ok(()));
        assert_eq!(p.feed(&POST[POST.len() - 3..], &mut out), Ok(()));
        assert_eq!(out, vec![req("POST /v1/items", POST.len())]);
        // A gap ending the body exactly: the message is yielded by the next feed.
        let mut p = parser(Direction::Request);
        let mut out = Vec::new();
        assert_eq!(p.feed(&POST[..POST.len() - 13], &mut out), Ok(()));
        assert_eq!(p.gap(13), Ok(()));
        assert_eq!(p.feed(CURL, &mut out), Ok(()));
        assert_eq!(out.len(), 2);
        // Past the body's end, or in a header: fatal.
        let mut p = parser(Direction::Request);
        assert_eq!(p.feed(&POST[..POST.len() - 13], &mut Vec::new()), Ok(()));
        assert_eq!(p.gap(14), Err(ParseError::Desynchronised(Protocol::Http)));
        let mut p = parser(Direction::Request);
        assert_eq!(p.feed(b"GET / HT", &mut Vec::new()), Ok(()));
        assert_eq!(p.gap(1), Err(ParseError::Desynchronised(Protocol::Http)));
        assert_eq!(
            p.feed(CURL, &mut Vec::new()),
            Err(ParseError::Desynchronised(Protocol::Http))
        );
        // Inside chunk data.
        let mut p = parser(Direction::Response);
        let mut out = Vec::new();
        let cut = NGINX.windows(4).position(|w| w == b"<htm").unwrap_or(0) + 2;
        assert_eq!(p.feed(&NGINX[..cut], &mut out), Ok(()));
        assert_eq!(p.gap(5), Ok(()));
        assert_eq!(p.feed(&NGINX[cut + 5..], &mut out), Ok(()));
        assert_eq!(out, vec![resp(Status::Ok, NGINX.len())]);
        // A gap of nothing is harmless anywhere.
        let mut p = parser(Direction::Request);
        assert_eq!(p.feed(b"GET", &mut Vec::new()), Ok(()));
        assert_eq!(p.gap(0), Ok(()));
    }

    #[test]
    fn detection() {
        assert_eq!(detect(b"GET / HTTP/1.1\r\n", None), Detect::Yes);
        assert_eq!(detect(b"OPTIONS * HTTP/1.1\r\n", None), Detect::Yes);
        assert_eq!(detect(b"GE", None), Detect::NeedMore);
        assert_eq!(detect(b"", None), Detect::NeedMore);
        assert_eq!(detect(b"GET", None), Detect::NeedMore);
        assert_eq!(detect(b"GETX / HTTP/1.1", None), Detect::No);
        assert_eq!(detect(b"*1\r\n$4\r\nPING\r\n", None), Detect::No);
        assert_eq!(
            detect(b"GET / HTTP/1.1\r\n", Some(b"HTTP/1.1 200 OK")),
            Detect::Yes
        );
        assert_eq!(
            detect(b"GET / HTTP/1.1\r\n", Some(b"HTT")),
            Detect::NeedMore
        );
        assert_eq!(detect(b"GET / HTTP/1.1\r\n", Some(b"")), Detect::Yes);
        assert_eq!(detect(b"GET foo\r\n", Some(b"+OK\r\n")), Detect::No);
        assert_eq!(
            detect(b"\x16\x03\x01", Some(b"HTTP/1.1 200 OK")),
            Detect::No
        );
    }

    /// A body and how it is framed.
    #[derive(Debug, Clone)]
    enum Body {
        None,
        Length(Vec<u8>),
        Chunked(Vec<Vec<u8>>, bool),
    }

    fn body() -> impl Strategy<Value = Body> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..200);
        let chunks = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..80), 0..5);
        prop_oneof![
            Just(Body::None),
            bytes.prop_map(Body::Length),
            (chunks, any::<bool>()).prop_map(|(c, t)| Body::Chunked(c, t)),
        ]
    }

    /// Appends the framing header, the end of the header and the body.
    fn frame(body: &Body, out: &mut Vec<u8>) {
        match body {
            Body::None => out.extend_from_slice(b"\r\n"),
            Body::Length(b) => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Body::Chunked(chunks, trailer) => {
                out.extend_from_slice(b"Transfer-Encoding: gzip, chunked\r\n\r\n");
                for (i, c) in chunks.iter().enumerate() {
                    let ext = if i % 2 == 1 { ";a=\"b\"" } else { "" };
                    out.extend_from_slice(format!("{:X}{ext}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                if *trailer {
                    out.extend_from_slice(b"Expires: never\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    fn request() -> impl Strategy<Value = (Vec<u8>, Message)> {
        let method = prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "PROPFIND",
        ]);
        let segments = proptest::collection::vec("[a-z]{1,8}|[0-9]{1,6}", 0..10);
        (method, segments, "(\\?[a-z=&0-9]{0,10})?", body()).prop_map(|(m, segs, query, body)| {
            let path = format!("/{}", segs.join("/"));
            let mut data =
                format!("{m} {path}{query} HTTP/1.1\r\nHost: example.com\r\n").into_bytes();
            frame(&body, &mut data);
            let len = data.len();
            (
                data,
                req(
                    &text(format!("{m} {}", api::template_path(&path)).as_bytes()),
                    len,
                ),
            )
        })
    }

    fn response() -> impl Strategy<Value = (Vec<u8>, Message)> {
        let code = prop::sample::select(vec![200u16, 201, 204, 301, 304, 400, 404, 500, 503]);
        (code, any::<bool>(), body()).prop_map(|(code, interim, body)| {
            let mut data = Vec::new();
            if interim {
                data.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            data.extend_from_slice(
                format!("HTTP/1.1 {code} Reason Phrase\r\nServer: t\r\n").as_bytes(),
            );
            let body = match (code, body) {
                (204 | 304, _) => Body::None,
                (_, Body::None) => Body::Length(Vec::new()),
                (_, b) => b,
            };
            frame(&body, &mut data);
            let status = if code >= 400 {
                Status::Error(code.to_string())
            } else {
                Status::Ok
            };
            let len = data.len();
            (data, resp(status, len))
        })
    }

    fn check_split(
        direction: Direction,
        batch: Vec<(Vec<u8>, Message)>,
        cuts: Vec<prop::sample::Index>,
    ) -> Result<(), TestCaseError> {
        let data: Vec<u8> = batch.iter().flat_map(|(d, _)| d.clone()).collect();
        let expected: Vec<Message> = batch.into_iter().map(|(_, m)| m).collect();
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        let all = whole(direction, &data);
        let split = feed_cut(parser(direction).as_mut(), &data, &cuts);
        prop_assert_eq!(&all, &(expected, None));
        prop_assert_eq!(all, split);
        Ok(())
    }

    proptest! {
        #[test]
        fn requests_split_anywhere(batch in proptest::collection::vec(request(), 1..5), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            check_split(Direction::Request, batch, cuts)?;
        }

        #[test]
        fn responses_split_anywhere(batch in proptest::collection::vec(response(), 1..5), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            check_split(Direction::Response, batch, cuts)?;
        }

        #[test]
        fn random_bytes_never_panic_and_stay_bounded(prefix in 0usize..3, bytes in proptest::collection::vec(any::<u8>(), 0..3000), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            let start: &[u8] = [&b""[..], b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"HTTP/1.1 200 OK\r\n"][prefix];
            let data = [start, &bytes[..]].concat();
            let cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
            let mut p = RequestParser::new();
            let split = feed_cut(&mut p, &data, &cuts);
            prop_assert!(p.0.retained() <= MAX_PENDING);
            prop_assert_eq!(split, whole(Direction::Request, &data));
            let mut p = ResponseParser::new();
            let split = feed_cut(&mut p, &data, &cuts);
            prop_assert!(p.0.retained() <= MAX_PENDING);
            prop_assert_eq!(split, whole(Direction::Response, &data));
        }
    }
}
