//! PostgreSQL frontend/backend protocol v3.
//!
//! Requests (frontend): the stream may start with untyped startup messages (StartupMessage,
//! SSLRequest, GSSENCRequest, CancelRequest); then typed messages (1 type byte, int32 length
//! including itself). One request is yielded per simple Query `Q`, per FunctionCall `F` and per
//! Sync `S` — exactly the messages the backend answers with one ReadyForQuery `Z`, so requests
//! and responses pair in order. A Sync's `api` is the verb of the statement its batch's first
//! Execute ran (named statements from a bounded map of the Parse messages seen, unnamed ones
//! from the last unnamed Parse; portals likewise from Bind); a Sync batch without an Execute
//! (a driver's Parse/Describe/Sync "prepare") is still yielded, with `api` None, because the
//! backend answers it with a `Z` too. Other messages are skipped by their length.
//!
//! Responses (backend): the stream may start with the one-byte answer to an SSLRequest (`N`:
//! plain text continues; `S`/`G`: encryption follows, not parseable → Desynchronised). The
//! startup phase (from the first Authentication `R` to its ReadyForQuery) yields nothing; after
//! it one response is yielded per `Z`: Error(SQLSTATE) when an ErrorResponse came since the
//! previous `Z`, else Ok. Bytes after an SSLRequest that are a TLS record (0x16) desynchronise
//! the request parser the same way.

use std::collections::VecDeque;

use crate::{text, Detect, Direction, Message, ParseError, Protocol, Status, StreamParser};
use crate::{MAX_PENDING, MAX_TEXT};

const PROTO: Protocol = Protocol::Pgsql;
/// Longest message accepted (the server's own limit is 1 GiB).
const MAX_LEN: u32 = 1 << 30;
/// Longest startup packet (the server's MAX_STARTUP_PACKET_LENGTH).
const MAX_STARTUP: u32 = 10_000;
/// Protocol 3.0.
const PROTOCOL_3: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Body bytes of a query (Q, P) kept to find its verb.
const QUERY_KEEP: usize = 1024;
/// Body bytes of an ErrorResponse kept to find its SQLSTATE.
const ERROR_KEEP: usize = 1024;
/// Body bytes of Bind / Execute kept for their names.
const NAMES_KEEP: usize = 256;
/// Prepared statements remembered per connection (oldest dropped first).
const STATEMENTS: usize = 256;
/// Portals remembered per connection.
const PORTALS: usize = 64;
/// Longest statement or portal name remembered (the server's NAMEDATALEN - 1 is 63).
const MAX_NAME: usize = 64;
/// Frontend message types after the startup phase.
const FRONTEND_TYPES: &[u8] = b"BCcdDEfFHpPQSX";
/// Backend message types.
const BACKEND_TYPES: &[u8] = b"RKSZENACTDI123ntsGHWdcVv";

/// A parser of one direction of a PostgreSQL connection.
pub fn parser(direction: Direction) -> Box<dyn StreamParser> {
    match direction {
        Direction::Request => Box::new(Reader::new(Frontend::default())),
        Direction::Response => Box::new(Reader::new(Backend::default())),
    }
}

/// Whether a connection's first bytes are PostgreSQL: the client's first message is a v3
/// StartupMessage, an SSLRequest, a GSSENCRequest or a CancelRequest (the response is not
/// needed); NeedMore while fewer than 8 bytes could still be one.
pub fn detect(request: &[u8], response: Option<&[u8]>) -> Detect {
    let _ = response;
    if request.len() >= 8 {
        let (len, code) = (be32(request, 0), be32(request, 4));
        return match (len, code) {
            (Some(8), Some(SSL_REQUEST | GSSENC_REQUEST)) => Detect::Yes,
            (Some(16), Some(CANCEL_REQUEST)) => Detect::Yes,
            (Some(l), Some(PROTOCOL_3)) if (8..=MAX_STARTUP).contains(&l) => Detect::Yes,
            _ => Detect::No,
        };
    }
    let fits = |code: u32| {
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&8u32.to_be_bytes());
        head[4..].copy_from_slice(&code.to_be_bytes());
        let length_ok = request.iter().take(2).all(|&b| b == 0);
        let code_ok = request.iter().zip(head.iter()).skip(4).all(|(a, b)| a == b);
        length_ok && code_ok
    };
    let codes = [PROTOCOL_3, SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST];
    if codes.into_iter().any(fits) {
        Detect::NeedMore
    } else {
        Detect::No
    }
}

/// The verb of an SQL statement: its first keyword upper-cased, after blanks, comments and
/// opening parentheses; for `WITH`, the verb of the statement after the CTEs when it is in
/// `sql`, else "WITH". None when `sql` does not start with a keyword.
pub(crate) fn sql_verb(sql: &[u8]) -> Option<String> {
    let rest = skip_blank(sql);
    let word = word_at(rest);
    if word.is_empty() || !word.first().is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    let verb = word.to_ascii_uppercase();
    if verb == b"WITH" {
        if let Some(main) = rest.get(word.len()..).and_then(cte_verb) {
            return Some(main);
        }
    }
    Some(text(&verb))
}

/// `s` after leading whitespace, `(`, `--` and `/* */` comments.
fn skip_blank(mut s: &[u8]) -> &[u8] {
    loop {
        s = match s {
            [b, rest @ ..] if b.is_ascii_whitespace() || *b == b'(' => rest,
            [b'-', b'-', rest @ ..] => match rest.iter().position(|&b| b == b'\n') {
                Some(i) => rest.get(i + 1..).unwrap_or_default(),
                None => &[],
            },
            [b'/', b'*', rest @ ..] => match rest.windows(2).position(|w| w == b"*/") {
                Some(i) => rest.get(i + 2..).unwrap_or_default(),
                None => &[],
            },
            _ => return s,
        };
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The identifier-like word `s` starts with (may be empty).
fn word_at(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_word(b)).count();
    s.get(..n).unwrap_or_default()
}

/// The first data-modifying or query verb at parenthesis depth 0 of what follows `WITH`.
fn cte_verb(s: &[u8]) -> Option<String> {
    const VERBS: [&[u8]; 5] = [b"SELECT", b"INSERT", b"UPDATE", b"DELETE", b"MERGE"];
    let (mut i, mut depth, mut prev_word) = (0usize, 0usize, false);
    while let Some(&c) = s.get(i) {
        let next = s.get(i + 1).copied();
        match c {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b'\'' | b'"' | b'`' => {
                let close = s.get(i + 1..)?.iter().position(|&b| b == c)?;
                i += close + 1;
            }
            b'-' if next == Some(b'-') => {
                i += s.get(i..)?.iter().position(|&b| b == b'\n')?;
            }
            b'/' if next == Some(b'*') => {
                i += s.get(i..)?.windows(2).position(|w| w == b"*/")? + 1;
            }
            _ if depth == 0 && !prev_word && c.is_ascii_alphabetic() => {
                let word = word_at(s.get(i..)?).to_ascii_uppercase();
                if VERBS.contains(&word.as_slice()) {
                    return Some(text(&word));
                }
                i += word.len();
                prev_word = true;
                continue;
            }
            _ => {}
        }
        prev_word = is_word(c);
        i += 1;
    }
    None
}

fn be32(s: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = s.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// The NUL-terminated string `s` starts with, and what follows its NUL.
fn cstr(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = s.iter().position(|&b| b == 0)?;
    Some((s.get(..nul)?, s.get(nul + 1..)?))
}

/// What a handler decides on the bytes collected so far.
enum Step {
    /// Collect this many bytes (in all) first.
    More(usize),
    /// Drop this many bytes from the front and start a message on the rest.
    Drop(usize),
    /// The message is handled: skip this many bytes more, then yield `msg`.
    Done { skip: u64, msg: Option<Message> },
}

/// One direction's message logic; [`Reader`] does the buffering and skipping.
trait Handler: Send {
    /// Bytes to collect before the first [`Handler::step`] of a message.
    fn first_need(&self) -> usize;
    /// Decides on the `buf` collected (at least the last asked length).
    fn step(&mut self, buf: &[u8]) -> Result<Step, ParseError>;
}

/// Buffers message heads, skips bodies, keeps the failed state.
struct Reader<H> {
    handler: H,
    buf: Vec<u8>,
    need: usize,
    skip: u64,
    deferred: Option<Message>,
    failed: bool,
}

impl<H: Handler> Reader<H> {
    fn new(handler: H) -> Self {
        let need = handler.first_need();
        Reader {
            handler,
            buf: Vec::new(),
            need,
            skip: 0,
            deferred: None,
            failed: false,
        }
    }

    fn run(&mut self, mut data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        loop {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.skip -= n as u64;
                data = data.get(n..).unwrap_or_default();
                if self.skip > 0 {
                    return Ok(());
                }
            }
            out.extend(self.deferred.take());
            let n = self.need.saturating_sub(self.buf.len()).min(data.len());
            self.buf
                .extend_from_slice(data.get(..n).unwrap_or_default());
            data = data.get(n..).unwrap_or_default();
            if self.buf.len() < self.need {
                return Ok(());
            }
            match self.handler.step(&self.buf)? {
                Step::More(need) if need > MAX_PENDING => return Err(ParseError::TooLong(PROTO)),
                Step::More(need) => self.need = need.max(self.buf.len() + 1),
                Step::Drop(n) => {
                    self.buf.drain(..n.clamp(1, self.buf.len()));
                    self.need = self.handler.first_need();
                }
                Step::Done { skip, msg } => {
                    self.buf.clear();
                    self.need = self.handler.first_need();
                    self.skip = skip;
                    self.deferred = msg;
                }
            }
        }
    }
}

impl<H: Handler> StreamParser for Reader<H> {
    fn protocol(&self) -> Protocol {
        PROTO
    }

    fn feed(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        if self.failed {
            return Err(ParseError::Desynchronised(PROTO));
        }
        let result = self.run(data, out);
        self.failed = result.is_err();
        result
    }

    fn gap(&mut self, n: u64) -> Result<(), ParseError> {
        if self.failed || n > self.skip || !self.buf.is_empty() {
            self.failed = true;
            return Err(ParseError::Desynchronised(PROTO));
        }
        self.skip -= n;
        Ok(())
    }
}

/// The head of a typed message: type, declared length, body bytes kept of it.
fn typed_head<'a>(
    buf: &'a [u8],
    types: &[u8],
    keep: fn(u8) -> usize,
) -> Result<Typed<'a>, ParseError> {
    let (Some(&ty), Some(len)) = (buf.first(), be32(buf, 1)) else {
        return Ok(Typed::More(5));
    };
    if !types.contains(&ty) || !(4..=MAX_LEN).contains(&len) {
        return Err(ParseError::Malformed(PROTO));
    }
    let body = u64::from(len - 4);
    let kept = keep(ty).min(usize::try_from(body).unwrap_or(usize::MAX));
    match buf.get(5..5 + kept) {
        Some(prefix) => Ok(Typed::Ready {
            ty,
            len,
            prefix,
            skip: body - kept as u64,
        }),
        None => Ok(Typed::More(5 + kept)),
    }
}

enum Typed<'a> {
    More(usize),
    Ready {
        ty: u8,
        len: u32,
        prefix: &'a [u8],
        skip: u64,
    },
}

/// Names (statements, portals) → the verb they run, the oldest dropped first.
struct Names {
    cap: usize,
    entries: VecDeque<(Vec<u8>, Option<String>)>,
}

impl Names {
    fn new(cap: usize) -> Self {
        Names {
            cap,
            entries: VecDeque::new(),
        }
    }

    fn insert(&mut self, name: &[u8], verb: Option<String>) {
        self.entries.retain(|(n, _)| n != name);
        if name.len() > MAX_NAME {
            return;
        }
        if self.entries.len() >= self.cap {
            self.entries.pop_front();
        }
        self.entries.push_back((name.to_vec(), verb));
    }

    fn get(&self, name: &[u8]) -> Option<String> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FrontPhase {
    /// Nothing seen: a startup message (first byte 0) or typed messages (mid-stream).
    Start,
    /// After an SSLRequest / GSSENCRequest: another startup message, or encryption.
    AfterSsl,
    /// Typed messages.
    Typed,
}

/// The client side.
struct Frontend {
    phase: FrontPhase,
    statements: Names,
    portals: Names,
    executed: bool,
    batch_api: Option<String>,
    acc: u64,
}

impl Default for Frontend {
    fn default() -> Self {
        Frontend {
            phase: FrontPhase::Start,
            statements: Names::new(STATEMENTS),
            portals: Names::new(PORTALS),
            executed: false,
            batch_api: None,
            acc: 0,
        }
    }
}

fn front_keep(ty: u8) -> usize {
    match ty {
        b'Q' => QUERY_KEEP,
        b'P' => QUERY_KEEP + MAX_NAME + 1,
        b'B' | b'E' => NAMES_KEEP,
        _ => 0,
    }
}

impl Frontend {
    fn startup(&mut self, buf: &[u8]) -> Result<Step, ParseError> {
        let (Some(len), Some(code)) = (be32(buf, 0), be32(buf, 4)) else {
            return Ok(Step::More(8));
        };
        self.phase = match (len, code) {
            (8, SSL_REQUEST | GSSENC_REQUEST) => FrontPhase::AfterSsl,
            (16, CANCEL_REQUEST) => FrontPhase::Typed,
            (8..=MAX_STARTUP, c) if c >> 16 == 3 => FrontPhase::Typed,
            _ => return Err(ParseError::Malformed(PROTO)),
        };
        Ok(Step::Done {
            skip: u64::from(len - 8),
            msg: None,
        })
    }

    fn request(&mut self, api: Option<String>) -> Option<Message> {
        let len = std::mem::take(&mut self.acc);
        Some(Message {
            direction: Direction::Request,
            api,
            status: None,
            correlation: None,
            len,
            topics: None,
        })
    }

    /// Handles a typed message; the request it completes, if any.
    fn message(&mut self, ty: u8, body: &[u8]) -> Option<Message> {
        match ty {
            b'Q' => {
                self.executed = false;
                self.batch_api = None;
                let api = sql_verb(body);
                self.request(api)
            }
            b'F' => self.request(None),
            b'P' => {
                if let Some((name, query)) = cstr(body) {
                    self.statements.insert(name, sql_verb(query));
                }
                None
            }
            b'B' => {
                if let Some((portal, rest)) = cstr(body) {
                    let verb = cstr(rest).and_then(|(stmt, _)| self.statements.get(stmt));
                    self.portals.insert(portal, verb);
                }
                None
            }
            b'E' => {
                if !self.executed {
                    self.batch_api = cstr(body).and_then(|(portal, _)| self.portals.get(portal));
                }
                self.executed = true;
                None
            }
            b'S' => {
                self.executed = false;
                let api = self.batch_api.take();
                self.request(api)
            }
            _ => None,
        }
    }
}

impl Handler for Frontend {
    fn first_need(&self) -> usize {
        match self.phase {
            FrontPhase::Typed => 5,
            FrontPhase::Start | FrontPhase::AfterSsl => 1,
        }
    }

    fn step(&mut self, buf: &[u8]) -> Result<Step, ParseError> {
        if self.phase != FrontPhase::Typed {
            match buf.first() {
                Some(0) => return self.startup(buf),
                Some(0x16) if self.phase == FrontPhase::AfterSsl => {
                    return Err(ParseError::Desynchronised(PROTO))
                }
                _ if self.phase == FrontPhase::AfterSsl => {
                    return Err(ParseError::Malformed(PROTO))
                }
                _ => self.phase = FrontPhase::Typed,
            }
        }
        match typed_head(buf, FRONTEND_TYPES, front_keep)? {
            Typed::More(n) => Ok(Step::More(n)),
            Typed::Ready {
                ty,
                len,
                prefix,
                skip,
            } => {
                self.acc += 1 + u64::from(len);
                let msg = self.message(ty, prefix);
                Ok(Step::Done { skip, msg })
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BackPhase {
    /// Nothing seen: maybe the one-byte answer to an SSLRequest.
    Start,
    /// Authentication and parameters, up to the first ReadyForQuery.
    Startup,
    /// Answers to queries.
    Ready,
}

/// The server side.
struct Backend {
    phase: BackPhase,
    error: Option<String>,
    acc: u64,
}

impl Default for Backend {
    fn default() -> Self {
        Backend {
            phase: BackPhase::Start,
            error: None,
            acc: 0,
        }
    }
}

fn back_keep(ty: u8) -> usize {
    if ty == b'E' {
        ERROR_KEEP
    } else {
        0
    }
}

/// The SQLSTATE (field `C`) of an ErrorResponse body.
fn sqlstate(mut body: &[u8]) -> Option<String> {
    while let [code, rest @ ..] = body {
        if *code == 0 {
            return None;
        }
        let (value, next) = cstr(rest)?;
        if *code == b'C' {
            return Some(text(value.get(..MAX_TEXT).unwrap_or(value)));
        }
        body = next;
    }
    None
}

impl Backend {
    fn message(&mut self, ty: u8, len: u32, body: &[u8]) -> Option<Message> {
        if self.phase == BackPhase::Startup {
            if ty == b'Z' {
                self.phase = BackPhase::Ready;
            }
            return None;
        }
        self.acc += 1 + u64::from(len);
        match ty {
            b'E' if self.error.is_none() => {
                self.error = Some(sqlstate(body).unwrap_or_else(|| "?".to_string()));
                None
            }
            b'Z' => Some(Message {
                direction: Direction::Response,
                api: None,
                status: Some(self.error.take().map_or(Status::Ok, Status::Error)),
                correlation: None,
                len: std::mem::take(&mut self.acc),
                topics: None,
            }),
            _ => None,
        }
    }
}

impl Handler for Backend {
    fn first_need(&self) -> usize {
        1
    }

    fn step(&mut self, buf: &[u8]) -> Result<Step, ParseError> {
        if self.phase == BackPhase::Start {
            let (Some(&b0), second) = (buf.first(), buf.get(1)) else {
                return Ok(Step::More(1));
            };
            if matches!(b0, b'N' | b'S' | b'G') {
                // A typed message's length starts with 0; an SSL answer is followed by the
                // next message's type byte (N) or by encrypted bytes (S, G).
                match second {
                    None => return Ok(Step::More(2)),
                    Some(&b) if b != 0 && b0 == b'N' => return Ok(Step::Drop(1)),
                    Some(&b) if b != 0 => return Err(ParseError::Desynchronised(PROTO)),
                    Some(_) => {}
                }
            }
            self.phase = if b0 == b'R' {
                BackPhase::Startup
            } else {
                BackPhase::Ready
            };
        }
        match typed_head(buf, BACKEND_TYPES, back_keep)? {
            Typed::More(n) => Ok(Step::More(n)),
            Typed::Ready {
                ty,
                len,
                prefix,
                skip,
            } => {
                let msg = self.message(ty, len, prefix);
                Ok(Step::Done { skip, msg })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn typed(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![ty];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn startup() -> Vec<u8> {
        let params = b"user\0postgres\0database\0app\0\0";
        let mut m = ((params.len() + 8) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&PROTOCOL_3.to_be_bytes());
        m.extend_from_slice(params);
        m
    }

    fn ssl_request() -> Vec<u8> {
        let mut m = 8u32.to_be_bytes().to_vec();
        m.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        m
    }

    fn query(sql: &str) -> Vec<u8> {
        typed(b'Q', format!("{sql}\0").as_bytes())
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        typed(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
    }

    fn bind(portal: &str, stmt: &str) -> Vec<u8> {
        typed(b'B', format!("{portal}\0{stmt}\0\0\0\0\0\0\0").as_bytes())
    }

    fn execute(portal: &str) -> Vec<u8> {
        typed(b'E', format!("{portal}\0\0\0\0\0").as_bytes())
    }

    fn error(state: &str) -> Vec<u8> {
        typed(
            b'E',
            format!("SERROR\0VERROR\0C{state}\0Mrelation does not exist\0\0").as_bytes(),
        )
    }

    fn ready() -> Vec<u8> {
        typed(b'Z', b"I")
    }

    /// The backend's startup: AuthenticationOk, a ParameterStatus, BackendKeyData, Z.
    fn backend_startup() -> Vec<u8> {
        let mut s = typed(b'R', &[0, 0, 0, 0]);
        s.extend(typed(b'S', b"server_version\x0016.1\0"));
        s.extend(typed(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
        s.extend(ready());
        s
    }

    fn feed_all(direction: Direction, data: &[u8]) -> Result<Vec<Message>, ParseError> {
        let mut p = parser(direction);
        let mut out = Vec::new();
        p.feed(data, &mut out).map(|()| out)
    }

    fn apis(msgs: &[Message]) -> Vec<Option<&str>> {
        msgs.iter().map(|m| m.api.as_deref()).collect()
    }

    #[test]
    fn verbs() {
        assert_eq!(sql_verb(b"  select 1").as_deref(), Some("SELECT"));
        assert_eq!(
            sql_verb(b"-- hi\n/* x */ insert into t").as_deref(),
            Some("INSERT")
        );
        assert_eq!(
            sql_verb(b"(SELECT 1) UNION (SELECT 2)").as_deref(),
            Some("SELECT")
        );
        assert_eq!(
            sql_verb(b"WITH a AS (SELECT 1), b AS (select ')') DELETE FROM t").as_deref(),
            Some("DELETE")
        );
        assert_eq!(sql_verb(b"with recursive x").as_deref(), Some("WITH"));
        assert_eq!(sql_verb(b"begin;").as_deref(), Some("BEGIN"));
        assert_eq!(sql_verb(b"  ;"), None);
        assert_eq!(sql_verb(b"/* unterminated"), None);
    }

    #[test]
    fn simple_query_with_error() {
        let mut req = startup();
        req.extend(typed(b'p', b"secret\0"));
        req.extend(query("SELECT * FROM missing"));
        req.extend(query("  -- c\nbegin"));
        req.extend(typed(b'X', b""));
        let msgs = feed_all(Direction::Request, &req).unwrap();
        assert_eq!(apis(&msgs), [Some("SELECT"), Some("BEGIN")]);

        let mut resp = backend_startup();
        let first = resp.len();
        resp.extend(error("42P01"));
        resp.extend(ready());
        resp.extend(typed(b'N', b"SNOTICE\0C00000\0\0"));
        resp.extend(typed(b'C', b"BEGIN\0"));
        resp.extend(ready());
        let msgs = feed_all(Direction::Response, &resp).unwrap();
        let status: Vec<_> = msgs.iter().map(|m| m.status.clone()).collect();
        assert_eq!(
            status,
            [Some(Status::Error("42P01".into())), Some(Status::Ok)]
        );
        assert_eq!(
            msgs.iter().map(|m| m.len).sum::<u64>(),
            (resp.len() - first) as u64
        );
    }

    #[test]
    fn extended_query_named_statement() {
        let mut req = startup();
        req.extend(parse("s1", "UPDATE t SET a = $1"));
        req.extend(typed(b'D', b"Ss1\0"));
        req.extend(typed(b'S', b""));
        req.extend(bind("", "s1"));
        req.extend(execute(""));
        req.extend(typed(b'S', b""));
        req.extend(parse("", "delete from t"));
        req.extend(bind("p", ""));
        req.extend(execute("p"));
        req.extend(typed(b'S', b""));
        req.extend(bind("", "unknown"));
        req.extend(execute(""));
        req.extend(typed(b'S', b""));
        let msgs = feed_all(Direction::Request, &req).unwrap();
        assert_eq!(apis(&msgs), [None, Some("UPDATE"), Some("DELETE"), None]);

        let mut resp = backend_startup();
        resp.extend(typed(b'1', b""));
        resp.extend(typed(b't', &[0, 1, 0, 0, 0, 23]));
        resp.extend(typed(b'n', b""));
        resp.extend(ready());
        resp.extend(typed(b'2', b""));
        resp.extend(typed(b'C', b"UPDATE 1\0"));
        resp.extend(ready());
        let msgs = feed_all(Direction::Response, &resp).unwrap();
        assert_eq!(msgs.len(), 2);
        assert!(msgs.iter().all(|m| m.status == Some(Status::Ok)));
    }

    #[test]
    fn ssl_refused_then_plain() {
        let mut req = ssl_request();
        req.extend(startup());
        req.extend(query("select 1"));
        assert_eq!(
            apis(&feed_all(Direction::Request, &req).unwrap()),
            [Some("SELECT")]
        );
        let mut resp = b"N".to_vec();
        resp.extend(backend_startup());
        resp.extend(ready());
        assert_eq!(feed_all(Direction::Response, &resp).unwrap().len(), 1);
    }

    #[test]
    fn ssl_accepted_is_desynchronised() {
        let mut req = ssl_request();
        req.extend([0x16, 3, 1, 0, 100]);
        assert_eq!(
            feed_all(Direction::Request, &req),
            Err(ParseError::Desynchronised(PROTO))
        );
        let resp = [b'S', 0x16, 3, 3];
        assert_eq!(
            feed_all(Direction::Response, &resp),
            Err(ParseError::Desynchronised(PROTO))
        );
    }

    #[test]
    fn bad_lengths_are_malformed_then_desynchronised() {
        let mut p = parser(Direction::Response);
        let mut out = Vec::new();
        let mut bad = backend_startup();
        bad.extend([b'Z', 0, 0, 0, 3]);
        assert_eq!(p.feed(&bad, &mut out), Err(ParseError::Malformed(PROTO)));
        assert_eq!(
            p.feed(&ready(), &mut out),
            Err(ParseError::Desynchronised(PROTO))
        );
        let huge = [b'Q', 0x40, 0, 0, 1];
        assert_eq!(
            feed_all(Direction::Request, &huge),
            Err(ParseError::Malformed(PROTO))
        );
        assert_eq!(
            feed_all(Direction::Request, b"?\0\0\0\x04"),
            Err(ParseError::Malformed(PROTO))
        );
    }

    #[test]
    fn long_query_is_skipped_not_buffered() {
        let mut p = Reader::new(Frontend::default());
        let mut out = Vec::new();
        p.feed(&startup(), &mut out).unwrap();
        let body_len = 100 * MAX_PENDING as u32;
        let mut head = vec![b'Q'];
        head.extend((body_len + 4).to_be_bytes());
        head.extend(b"insert into t values ");
        p.feed(&head, &mut out).unwrap();
        let filler = vec![b'x'; MAX_PENDING];
        let mut left = body_len as usize - 21;
        while left > 0 {
            let n = left.min(filler.len());
            p.feed(&filler[..n], &mut out).unwrap();
            left -= n;
            assert!(p.buf.capacity() <= MAX_PENDING);
            if left > MAX_PENDING * 10 {
                assert!(out.is_empty());
            }
        }
        p.feed(&query("select 1"), &mut out).unwrap();
        assert_eq!(apis(&out), [Some("INSERT"), Some("SELECT")]);
        assert_eq!(out[0].len, u64::from(body_len) + 5);
    }

    #[test]
    fn gaps() {
        let mut p = parser(Direction::Request);
        let mut out = Vec::new();
        p.feed(&startup(), &mut out).unwrap();
        let q = query(&format!("select '{}'", "x".repeat(5000)));
        p.feed(&q[..2000], &mut out).unwrap();
        p.gap(1000).unwrap();
        p.feed(&q[3000..], &mut out).unwrap();
        assert_eq!(apis(&out), [Some("SELECT")]);
        // A gap inside a header gives up.
        p.feed(&q[..3], &mut out).unwrap();
        assert_eq!(p.gap(1), Err(ParseError::Desynchronised(PROTO)));
        assert_eq!(
            p.feed(b"", &mut out),
            Err(ParseError::Desynchronised(PROTO))
        );
    }

    #[test]
    fn detection() {
        assert_eq!(detect(&startup(), None), Detect::Yes);
        assert_eq!(detect(&ssl_request(), None), Detect::Yes);
        assert_eq!(detect(&startup()[..6], None), Detect::NeedMore);
        assert_eq!(detect(b"", None), Detect::NeedMore);
        assert_eq!(detect(b"GET / HTTP/1.1\r\n", None), Detect::No);
        assert_eq!(detect(b"\0\0\0\x08\x04\xd2\x16", None), Detect::NeedMore);
        assert_eq!(detect(b"\0\0\0\x08\x05", None), Detect::No);
    }

    /// A random valid conversation: (request bytes, response bytes, requests, errors).
    fn conversation() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, usize)> {
        let item = (0u8..4, "[a-z ]{0,40}", any::<bool>());
        proptest::collection::vec(item, 0..12).prop_map(|items| {
            let mut req = startup();
            let mut resp = backend_startup();
            for (kind, sql, fail) in &items {
                match kind {
                    0 => req.extend(query(&format!("select {sql}"))),
                    1 => {
                        req.extend(parse("", &format!("update {sql}")));
                        req.extend(bind("", ""));
                        req.extend(execute(""));
                        req.extend(typed(b'S', b""));
                    }
                    2 => req.extend(typed(b'S', b"")),
                    _ => req.extend(query(&sql.repeat(200))),
                }
                resp.extend(typed(b'T', sql.as_bytes()));
                if *fail {
                    resp.extend(error("23505"));
                }
                resp.extend(ready());
            }
            (req, resp, items.len())
        })
    }

    fn split_feed(direction: Direction, data: &[u8], cuts: &[usize]) -> Vec<Message> {
        let mut p = parser(direction);
        let mut out = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut from = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            p.feed(&data[from..c], &mut out).unwrap();
            from = c;
        }
        out
    }

    proptest! {
        #[test]
        fn split_anywhere(
            (req, resp, n) in conversation(),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            for (dir, data) in [(Direction::Request, &req), (Direction::Response, &resp)] {
                let whole = feed_all(dir, data).unwrap();
                prop_assert_eq!(whole.len(), n);
                prop_assert_eq!(split_feed(dir, data, &cuts), whole);
            }
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            for dir in [Direction::Request, Direction::Response] {
                let mut p = parser(dir);
                let mut out = Vec::new();
                let _ = p.feed(&data, &mut out);
                let _ = p.gap(3);
                let _ = p.feed(&data, &mut out);
            }
            let _ = detect(&data, Some(&data));
        }
    }
}
