//! MySQL / MariaDB client/server protocol.
//!
//! Packets: 3-byte little-endian payload length, 1-byte sequence id, payload; a payload of
//! 0xFFFFFF bytes continues in the next packet (one logical packet: only the first one's head
//! is looked at, the rest is skipped and counted).
//!
//! Phases, told apart per direction by sequence ids only:
//! - **Requests** (client): the first packet, when its sequence id is not 0, is the
//!   HandshakeResponse (its capability flags are read: CLIENT_QUERY_ATTRIBUTES) or, 32 bytes
//!   long, an SSLRequest (a TLS record next → Desynchronised). After it every packet with
//!   sequence id 0 is a command; packets with other ids (authentication exchanges, LOAD DATA
//!   LOCAL file contents) are skipped. COM_QUIT, COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA
//!   have no response and yield nothing. COM_STMT_EXECUTE is attributed to the verb of its
//!   statement when the caller told [`RequestParser::statement_prepared`] (joining a
//!   COM_STMT_PREPARE request with its response, whose `correlation` is the statement id).
//! - **Responses** (server): the first packet (sequence id 0) is the Handshake; packets up to
//!   an OK or ERR are authentication. Then a response starts at a packet with sequence id 1
//!   and goes on with consecutive ids: OK, ERR, EOF, LOCAL INFILE request or AuthSwitchRequest
//!   (both completed by the next OK/ERR, whatever its id: the client sends packets between),
//!   or a result set (column count, column definitions, an EOF unless CLIENT_DEPRECATE_EOF —
//!   told apart by its 5-byte length —, rows, EOF/OK terminator; more result sets follow while
//!   the terminator says SERVER_MORE_RESULTS_EXISTS). An ERR anywhere ends it with
//!   Error(code). A packet inside a response whose id is neither the next one nor 1 is
//!   Malformed.
//!
//! Limits: a COM_STMT_PREPARE_OK is recognised by its shape (a 12-byte payload starting 0x00
//! with a 0 filler at offset 9; an ordinary OK of that shape would carry a spurious
//! `correlation`), is yielded at once, and its parameter/column definitions are skipped as the
//! packets with the following sequence ids. A response that is no OK/ERR/EOF/result set
//! (COM_STATISTICS' text) is read as a result set whose end is only known when the next
//! response starts (id 1 again): it is yielded (Ok) then. COM_STMT_FETCH's binary rows start
//! with 0x00: the first is read as an OK (the response), the others are skipped as packets
//! between responses. Packets with an id other than 1 between responses are skipped (e.g. the
//! ERR a server sends before closing an idle connection). A COM_QUERY with query attributes
//! (parameters) has no verb. Binlog streams (COM_BINLOG_DUMP) are not followed.

use std::collections::VecDeque;

use crate::pgsql::sql_verb;
use crate::MAX_PENDING;
use crate::{text, Detect, Direction, Message, ParseError, Protocol, Status, StreamParser};

const PROTO: Protocol = Protocol::Mysql;
/// Payload length of a packet continued by the next one.
const MAX_PAYLOAD: u32 = 0xFF_FFFF;
/// Payload bytes of a command kept (command byte and query prefix).
const COMMAND_KEEP: usize = 1024;
/// Payload bytes of a server packet kept (OK/ERR/EOF heads, column counts).
const REPLY_KEEP: usize = 32;
/// Prepared statements remembered per connection (oldest dropped first).
const STATEMENTS: usize = 256;
/// CLIENT_QUERY_ATTRIBUTES capability.
const CLIENT_QUERY_ATTRIBUTES: u32 = 1 << 27;
/// SERVER_MORE_RESULTS_EXISTS status flag.
const MORE_RESULTS: u16 = 0x0008;
/// SERVER_STATUS_CURSOR_EXISTS status flag.
const CURSOR_EXISTS: u16 = 0x0040;

/// A parser of one direction of a MySQL connection.
pub fn parser(direction: Direction) -> Box<dyn StreamParser> {
    match direction {
        Direction::Request => Box::new(RequestParser::new()),
        Direction::Response => Box::new(ResponseParser::new()),
    }
}

/// Whether a connection's first bytes are MySQL. The server speaks first: `response` starting
/// with a Handshake v10 packet (sequence id 0, payload 0x0a, a NUL-terminated printable
/// version string) → Yes. Without a response: nothing (or a HandshakeResponse head, sequence id
/// 1) from the client → NeedMore (wait for the server's bytes), anything else → No.
pub fn detect(request: &[u8], response: Option<&[u8]>) -> Detect {
    match response {
        Some(r) if !r.is_empty() => detect_handshake(r),
        _ => {
            let plausible = match request.get(..4) {
                None => true,
                Some(h) => h.get(3) == Some(&1) && (32..=0x10000).contains(&u24(h)),
            };
            if plausible {
                Detect::NeedMore
            } else {
                Detect::No
            }
        }
    }
}

fn detect_handshake(r: &[u8]) -> Detect {
    let head_ok = r.get(3).is_none_or(|&s| s == 0) && r.get(4).is_none_or(|&b| b == 0x0a);
    let Some(h) = r.get(..4) else {
        return if head_ok {
            Detect::NeedMore
        } else {
            Detect::No
        };
    };
    let len = u24(h) as usize;
    if !head_ok || !(20..=1024).contains(&len) {
        return Detect::No;
    }
    let version = r.get(5..r.len().min(4 + len)).unwrap_or_default();
    match version.iter().position(|&b| b == 0) {
        Some(i) if i > 0 && version.iter().take(i).all(|b| b.is_ascii_graphic()) => Detect::Yes,
        None if version.iter().all(|b| b.is_ascii_graphic()) && r.len() < 4 + len => {
            Detect::NeedMore
        }
        _ => Detect::No,
    }
}

fn u24(h: &[u8]) -> u32 {
    h.iter()
        .take(3)
        .rev()
        .fold(0, |n, &b| (n << 8) | u32::from(b))
}

fn u16_at(s: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(s.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(s: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(s.get(at..at + 4)?.try_into().ok()?))
}

/// A length-encoded integer at the start of `s`, and its size.
fn lenenc(s: &[u8]) -> Option<(u64, usize)> {
    let size = match *s.first()? {
        b @ 0..=0xfa => return Some((u64::from(b), 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = s.get(1..1 + size)?;
    let n = bytes
        .iter()
        .rev()
        .fold(0u64, |n, &b| (n << 8) | u64::from(b));
    Some((n, 1 + size))
}

/// One packet's head as the handlers see it.
struct Packet<'a> {
    seq: u8,
    /// Payload length of this (first) packet.
    len: u32,
    /// The kept start of the payload.
    head: &'a [u8],
}

/// One direction's packet logic; [`Reader`] does the framing.
trait Handler: Send {
    /// Payload bytes to keep of a (first) packet.
    fn keep(&self, seq: u8, len: u32) -> usize;
    /// Checks a packet header before its payload is read (TLS after SSL).
    fn check(&self, header: &[u8]) -> Result<(), ParseError>;
    /// Handles a logical packet's head; may push earlier messages to `out`, returns the one it
    /// completes (yielded after the packet's last byte).
    fn packet(&mut self, p: &Packet, out: &mut Vec<Message>)
        -> Result<Option<Message>, ParseError>;
    /// Bytes of continuation packets of a logical packet that completed no message.
    fn extra(&mut self, n: u64);
}

/// Packet framing: buffers heads, skips payloads, follows continuations.
struct Reader<H> {
    handler: H,
    buf: Vec<u8>,
    need: usize,
    skip: u64,
    /// The next packet continues the current logical packet.
    continued: bool,
    deferred: Option<Message>,
    failed: bool,
}

impl<H: Handler> Reader<H> {
    fn new(handler: H) -> Self {
        Reader {
            handler,
            buf: Vec::new(),
            need: 4,
            skip: 0,
            continued: false,
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
            if !self.continued {
                out.extend(self.deferred.take());
            }
            let n = self.need.saturating_sub(self.buf.len()).min(data.len());
            self.buf
                .extend_from_slice(data.get(..n).unwrap_or_default());
            data = data.get(n..).unwrap_or_default();
            if self.buf.len() < self.need {
                return Ok(());
            }
            self.step(out)?;
        }
    }

    /// Handles the collected `buf` (at least `need` bytes).
    fn step(&mut self, out: &mut Vec<Message>) -> Result<(), ParseError> {
        let (header, head) = self.buf.split_at(4.min(self.buf.len()));
        let (len, seq) = (u24(header), header.get(3).copied().unwrap_or_default());
        let was_continued = std::mem::replace(&mut self.continued, len == MAX_PAYLOAD);
        if was_continued {
            let bytes = 4 + u64::from(len);
            match &mut self.deferred {
                Some(m) => m.len += bytes,
                None => self.handler.extra(bytes),
            }
            self.skip = u64::from(len);
        } else {
            self.handler.check(header)?;
            let keep = self.handler.keep(seq, len).min(len as usize);
            if head.len() < keep {
                self.need = 4 + keep;
                if self.need > MAX_PENDING {
                    return Err(ParseError::TooLong(PROTO));
                }
                self.continued = was_continued;
                return Ok(());
            }
            let packet = Packet { seq, len, head };
            self.deferred = self.handler.packet(&packet, out)?;
            self.skip = u64::from(len) - keep as u64;
        }
        self.buf.clear();
        self.need = 4;
        Ok(())
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

/// The client side of a MySQL connection: yields commands.
pub struct RequestParser {
    reader: Reader<Client>,
}

impl RequestParser {
    /// A parser of a connection's client stream from its start.
    pub fn new() -> Self {
        RequestParser {
            reader: Reader::new(Client::default()),
        }
    }

    /// Says statement `stmt_id` (from a response's `correlation`) runs `verb`: later
    /// COM_STMT_EXECUTEs of it are attributed to `verb`. At most 256 statements are kept.
    pub fn statement_prepared(&mut self, stmt_id: u32, verb: String) {
        let verb = text(verb.as_bytes());
        let statements = &mut self.reader.handler.statements;
        statements.retain(|(id, _)| *id != stmt_id);
        if statements.len() >= STATEMENTS {
            statements.pop_front();
        }
        statements.push_back((stmt_id, verb));
    }
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamParser for RequestParser {
    fn protocol(&self) -> Protocol {
        PROTO
    }
    fn feed(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        self.reader.feed(data, out)
    }
    fn gap(&mut self, n: u64) -> Result<(), ParseError> {
        self.reader.gap(n)
    }
}

#[derive(Default)]
struct Client {
    seen_first: bool,
    after_ssl: bool,
    query_attributes: bool,
    statements: VecDeque<(u32, String)>,
}

/// Names of the commands yielded with their name as `api`.
fn command_name(cmd: u8) -> Option<&'static str> {
    const NAMES: [&str; 32] = [
        "SLEEP",
        "QUIT",
        "INIT_DB",
        "QUERY",
        "FIELD_LIST",
        "CREATE_DB",
        "DROP_DB",
        "REFRESH",
        "SHUTDOWN",
        "STATISTICS",
        "PROCESS_INFO",
        "CONNECT",
        "PROCESS_KILL",
        "DEBUG",
        "PING",
        "TIME",
        "DELAYED_INSERT",
        "CHANGE_USER",
        "BINLOG_DUMP",
        "TABLE_DUMP",
        "CONNECT_OUT",
        "REGISTER_SLAVE",
        "STMT_PREPARE",
        "STMT_EXECUTE",
        "STMT_SEND_LONG_DATA",
        "STMT_CLOSE",
        "STMT_RESET",
        "SET_OPTION",
        "STMT_FETCH",
        "DAEMON",
        "BINLOG_DUMP_GTID",
        "RESET_CONNECTION",
    ];
    match cmd {
        0xfa => Some("STMT_BULK_EXECUTE"),
        _ => NAMES.get(usize::from(cmd)).copied(),
    }
}

impl Client {
    /// The query text of a COM_QUERY payload after its command byte.
    fn query<'a>(&self, body: &'a [u8]) -> Option<&'a [u8]> {
        if !self.query_attributes {
            return Some(body);
        }
        let (count, a) = lenenc(body)?;
        let (_sets, b) = lenenc(body.get(a..)?)?;
        if count != 0 {
            return None;
        }
        body.get(a + b..)
    }

    fn command(&mut self, head: &[u8]) -> Result<Option<String>, ParseError> {
        let (&cmd, body) = head.split_first().ok_or(ParseError::Malformed(PROTO))?;
        Ok(match cmd {
            0x03 => self.query(body).and_then(sql_verb),
            0x16 => sql_verb(body),
            0x17 => u32_at(body, 0).and_then(|id| {
                let found = self.statements.iter().find(|(s, _)| *s == id);
                found.map(|(_, verb)| verb.clone())
            }),
            _ => command_name(cmd).map(str::to_string),
        })
    }
}

impl Handler for Client {
    fn keep(&self, seq: u8, _len: u32) -> usize {
        if seq == 0 || !self.seen_first {
            COMMAND_KEEP
        } else {
            0
        }
    }

    fn check(&self, header: &[u8]) -> Result<(), ParseError> {
        match header.first() {
            Some(0x16) if self.after_ssl => Err(ParseError::Desynchronised(PROTO)),
            Some(_) if self.after_ssl => Err(ParseError::Malformed(PROTO)),
            _ => Ok(()),
        }
    }

    fn packet(
        &mut self,
        p: &Packet,
        _out: &mut Vec<Message>,
    ) -> Result<Option<Message>, ParseError> {
        if !std::mem::replace(&mut self.seen_first, true) && p.seq != 0 {
            self.after_ssl = p.len == 32;
            let flags = u32_at(p.head, 0).unwrap_or_default();
            self.query_attributes = flags & CLIENT_QUERY_ATTRIBUTES != 0;
            return Ok(None);
        }
        if p.seq != 0 {
            return Ok(None);
        }
        let cmd = p.head.first().copied();
        if cmd == Some(0x19) {
            if let Some(id) = u32_at(p.head, 1) {
                self.statements.retain(|(s, _)| *s != id);
            }
        }
        let api = self.command(p.head)?;
        if matches!(cmd, Some(0x01 | 0x18 | 0x19)) {
            return Ok(None);
        }
        let len = 4 + u64::from(p.len);
        Ok(Some(Message {
            direction: Direction::Request,
            api,
            status: None,
            correlation: None,
            len,
            topics: None,
        }))
    }

    fn extra(&mut self, _n: u64) {}
}

/// The server side of a MySQL connection: yields responses. The response to a
/// COM_STMT_PREPARE (its COM_STMT_PREPARE_OK) carries the statement id as `correlation`, for
/// [`RequestParser::statement_prepared`].
pub struct ResponseParser {
    reader: Reader<Server>,
}

impl ResponseParser {
    /// A parser of a connection's server stream from its start.
    pub fn new() -> Self {
        ResponseParser {
            reader: Reader::new(Server::default()),
        }
    }
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamParser for ResponseParser {
    fn protocol(&self) -> Protocol {
        PROTO
    }
    fn feed(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        self.reader.feed(data, out)
    }
    fn gap(&mut self, n: u64) -> Result<(), ParseError> {
        self.reader.gap(n)
    }
}

/// Where the server stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Before the Handshake.
    #[default]
    Handshake,
    /// Authentication, up to its OK / ERR.
    Auth,
    /// Between responses.
    Idle,
    /// Definitions following a COM_STMT_PREPARE_OK (already yielded).
    PrepareTrailer,
    /// Waiting for an OK / ERR in any sequence id: after a LOCAL INFILE request (the client
    /// sends the file) or an AuthSwitchRequest answering COM_CHANGE_USER.
    AwaitResult,
    /// Column definitions still to come.
    Columns(u64),
    /// After the column definitions: an EOF or the rows.
    AfterColumns,
    /// Rows, up to the terminator.
    Rows,
    /// The first packet of another result set.
    NextResult,
}

#[derive(Default)]
struct Server {
    phase: Phase,
    next_seq: u8,
    acc: u64,
}

/// Status flags of an OK packet (`head` from its 0x00 / 0xFE byte) or a 5-byte EOF.
fn status_flags(p: &Packet) -> Option<u16> {
    if p.len == 5 && p.head.first() == Some(&0xfe) {
        return u16_at(p.head, 3);
    }
    let body = p.head.get(1..)?;
    let (_, a) = lenenc(body)?;
    let (_, b) = lenenc(body.get(a..)?)?;
    u16_at(body, a + b)
}

fn error_code(p: &Packet) -> Result<Status, ParseError> {
    let code = u16_at(p.head, 1).ok_or(ParseError::Malformed(PROTO))?;
    Ok(Status::Error(code.to_string()))
}

impl Server {
    fn done(&mut self, status: Status, correlation: Option<u32>) -> Option<Message> {
        self.phase = Phase::Idle;
        let len = std::mem::take(&mut self.acc);
        Some(Message {
            direction: Direction::Response,
            api: None,
            status: Some(status),
            correlation,
            len,
            topics: None,
        })
    }

    /// The end of a result (OK / EOF terminator): the response, unless more results follow.
    fn result_end(&mut self, p: &Packet) -> Result<Option<Message>, ParseError> {
        let flags = status_flags(p).ok_or(ParseError::Malformed(PROTO))?;
        if flags & MORE_RESULTS != 0 {
            self.phase = Phase::NextResult;
            return Ok(None);
        }
        Ok(self.done(Status::Ok, None))
    }

    /// The first packet of a response or of a further result set.
    fn first(&mut self, p: &Packet) -> Result<Option<Message>, ParseError> {
        match p.head.first() {
            Some(0x00) if p.len == 12 && p.head.get(9) == Some(&0) => {
                let id = u32_at(p.head, 1);
                let defs =
                    u16_at(p.head, 5).unwrap_or_default() | u16_at(p.head, 7).unwrap_or_default();
                let msg = self.done(Status::Ok, id);
                if defs != 0 {
                    self.phase = Phase::PrepareTrailer;
                }
                Ok(msg)
            }
            Some(0x00) => self.result_end(p),
            Some(0xff) => Ok(self.done(error_code(p)?, None)),
            Some(0xfe) if p.len < 9 => Ok(self.done(Status::Ok, None)),
            Some(0xfe) if self.phase != Phase::NextResult => {
                self.phase = Phase::AwaitResult;
                Ok(None)
            }
            Some(0xfb) => {
                self.phase = Phase::AwaitResult;
                Ok(None)
            }
            _ => match lenenc(p.head) {
                Some((n, _)) if n > 0 => {
                    self.phase = Phase::Columns(n);
                    Ok(None)
                }
                _ => Err(ParseError::Malformed(PROTO)),
            },
        }
    }

    /// A packet of a result set's rows (or its terminator).
    fn row(&mut self, p: &Packet) -> Result<Option<Message>, ParseError> {
        self.phase = Phase::Rows;
        match p.head.first() {
            Some(0xff) => Ok(self.done(error_code(p)?, None)),
            Some(0xfe) if p.len < MAX_PAYLOAD => self.result_end(p),
            _ => Ok(None),
        }
    }

    /// A packet inside a response (sequence id as expected).
    fn inside(&mut self, p: &Packet) -> Result<Option<Message>, ParseError> {
        match self.phase {
            Phase::AwaitResult => match p.head.first() {
                Some(0xff) => Ok(self.done(error_code(p)?, None)),
                Some(0x00) => Ok(self.done(Status::Ok, None)),
                _ => Ok(None),
            },
            Phase::NextResult => self.first(p),
            Phase::Columns(n) => {
                self.phase = if n > 1 {
                    Phase::Columns(n - 1)
                } else {
                    Phase::AfterColumns
                };
                Ok(None)
            }
            Phase::AfterColumns if p.len == 5 && p.head.first() == Some(&0xfe) => {
                let flags = status_flags(p).unwrap_or_default();
                if flags & CURSOR_EXISTS != 0 {
                    return Ok(self.done(Status::Ok, None));
                }
                self.phase = Phase::Rows;
                Ok(None)
            }
            _ => self.row(p),
        }
    }

    fn in_response(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Handshake | Phase::Auth | Phase::Idle | Phase::PrepareTrailer
        )
    }
}

impl Handler for Server {
    fn keep(&self, _seq: u8, _len: u32) -> usize {
        REPLY_KEEP
    }

    fn check(&self, header: &[u8]) -> Result<(), ParseError> {
        if self.phase == Phase::Auth && header.get(..2) == Some(&[0x16, 0x03]) {
            return Err(ParseError::Desynchronised(PROTO));
        }
        Ok(())
    }

    fn packet(
        &mut self,
        p: &Packet,
        out: &mut Vec<Message>,
    ) -> Result<Option<Message>, ParseError> {
        let expected = std::mem::replace(&mut self.next_seq, p.seq.wrapping_add(1)) == p.seq;
        let bytes = 4 + u64::from(p.len);
        match self.phase {
            Phase::Handshake if p.seq == 0 => {
                self.phase = Phase::Auth;
                return Ok(None);
            }
            Phase::Auth => {
                if matches!(p.head.first(), Some(0x00 | 0xff)) {
                    self.phase = Phase::Idle;
                }
                return Ok(None);
            }
            Phase::PrepareTrailer if expected => return Ok(None),
            Phase::AwaitResult => {
                self.acc += bytes;
                return self.inside(p);
            }
            _ if self.in_response() && expected => {
                self.acc += bytes;
                return self.inside(p);
            }
            _ if self.in_response() && p.seq != 1 => return Err(ParseError::Malformed(PROTO)),
            _ if self.in_response() => out.extend(self.done(Status::Ok, None)),
            _ => {}
        }
        if p.seq != 1 {
            self.phase = Phase::Idle;
            return Ok(None);
        }
        self.acc = bytes;
        self.first(p)
    }

    fn extra(&mut self, n: u64) {
        if self.in_response() {
            self.acc += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        p.push(seq);
        p.extend_from_slice(payload);
        p
    }

    fn handshake() -> Vec<u8> {
        let mut p = vec![0x0a];
        p.extend(b"8.0.36\0");
        p.extend([1, 0, 0, 0]);
        p.extend(b"abcdefgh\0");
        p.extend([0xff, 0xff, 0xff, 0, 0x02, 0, 0, 21]);
        p.extend([0; 10]);
        p.extend(b"ijklmnopqrst\0mysql_native_password\0");
        packet(0, &p)
    }

    fn handshake_response(flags: u32) -> Vec<u8> {
        let mut p = flags.to_le_bytes().to_vec();
        p.extend([0, 0, 0, 1, 0x21]);
        p.extend([0; 23]);
        p.extend(b"root\0\x14");
        p.extend([7; 20]);
        p.extend(b"mysql_native_password\0");
        packet(1, &p)
    }

    fn ok(seq: u8, status: u16) -> Vec<u8> {
        let mut p = vec![0x00, 0, 0];
        p.extend(status.to_le_bytes());
        p.extend([0, 0]);
        packet(seq, &p)
    }

    fn eof(seq: u8, status: u16) -> Vec<u8> {
        let mut p = vec![0xfe, 0, 0];
        p.extend(status.to_le_bytes());
        packet(seq, &p)
    }

    fn err(seq: u8, code: u16) -> Vec<u8> {
        let mut p = vec![0xff];
        p.extend(code.to_le_bytes());
        p.extend(b"#42S02Table 'db.nope' doesn't exist");
        packet(seq, &p)
    }

    fn column_def(seq: u8, name: &str) -> Vec<u8> {
        let mut p = b"\x03def\x02db\x01t\x01t".to_vec();
        p.push(name.len() as u8);
        p.extend(name.as_bytes());
        p.push(name.len() as u8);
        p.extend(name.as_bytes());
        p.extend([0x0c, 0x3f, 0, 11, 0, 0, 0, 3, 0, 0, 0, 0, 0]);
        packet(seq, &p)
    }

    /// A text result set of `rows` rows with `cols` columns from sequence id 1; classic EOFs.
    fn result_set(cols: u8, rows: usize, more: bool) -> Vec<u8> {
        let mut s = packet(1, &[cols]);
        let mut seq = 2u8;
        for c in 0..cols {
            s.extend(column_def(seq, &format!("c{c}")));
            seq = seq.wrapping_add(1);
        }
        s.extend(eof(seq, 2));
        for r in 0..rows {
            seq = seq.wrapping_add(1);
            s.extend(packet(seq, format!("\x01{}", r % 10).as_bytes()));
        }
        s.extend(eof(
            seq.wrapping_add(1),
            if more { 2 | MORE_RESULTS } else { 2 },
        ));
        s
    }

    fn com(cmd: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![cmd];
        p.extend_from_slice(body);
        packet(0, &p)
    }

    fn server_start() -> Vec<u8> {
        let mut s = handshake();
        s.extend(ok(2, 2));
        s
    }

    fn client_start() -> Vec<u8> {
        handshake_response(0x000f_a685)
    }

    fn feed_all<P: StreamParser>(p: &mut P, data: &[u8]) -> Result<Vec<Message>, ParseError> {
        let mut out = Vec::new();
        p.feed(data, &mut out).map(|()| out)
    }

    fn statuses(msgs: &[Message]) -> Vec<Status> {
        msgs.iter().filter_map(|m| m.status.clone()).collect()
    }

    #[test]
    fn query_result_set_and_error() {
        let mut req = client_start();
        req.extend(com(0x03, b"select id, name from users"));
        req.extend(com(0x03, b"SELECT * FROM nope"));
        req.extend(com(0x0e, b""));
        req.extend(com(0x01, b""));
        let msgs = feed_all(&mut RequestParser::new(), &req).unwrap();
        let apis: Vec<_> = msgs.iter().map(|m| m.api.as_deref()).collect();
        assert_eq!(apis, [Some("SELECT"), Some("SELECT"), Some("PING")]);

        let mut resp = server_start();
        let start = resp.len();
        resp.extend(result_set(2, 3, false));
        resp.extend(err(1, 1146));
        resp.extend(ok(1, 2));
        let msgs = feed_all(&mut ResponseParser::new(), &resp).unwrap();
        assert_eq!(
            statuses(&msgs),
            [Status::Ok, Status::Error("1146".into()), Status::Ok]
        );
        assert_eq!(
            msgs.iter().map(|m| m.len).sum::<u64>(),
            (resp.len() - start) as u64
        );
    }

    #[test]
    fn prepared_statement_flow() {
        let mut prep_ok = vec![0x00];
        prep_ok.extend(7u32.to_le_bytes());
        prep_ok.extend([1, 0, 1, 0, 0, 0, 0]);
        let mut resp = server_start();
        resp.extend(packet(1, &prep_ok));
        resp.extend(column_def(2, "?"));
        resp.extend(eof(3, 2));
        resp.extend(column_def(4, "a"));
        resp.extend(eof(5, 2));
        resp.extend(result_set(1, 1, false));
        let msgs = feed_all(&mut ResponseParser::new(), &resp).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].correlation, Some(7));
        assert_eq!(msgs[1].correlation, None);

        let mut p = RequestParser::new();
        let mut req = client_start();
        req.extend(com(0x16, b"UPDATE t SET a = ? WHERE id = 1"));
        let msgs = feed_all(&mut p, &req).unwrap();
        assert_eq!(msgs[0].api.as_deref(), Some("UPDATE"));
        let execute = com(0x17, &[7, 0, 0, 0, 0, 1, 0, 0, 0, 1, 3, 0, 42, 0, 0, 0]);
        assert_eq!(feed_all(&mut p, &execute).unwrap()[0].api, None);
        p.statement_prepared(7, "UPDATE".into());
        assert_eq!(
            feed_all(&mut p, &execute).unwrap()[0].api.as_deref(),
            Some("UPDATE")
        );
        assert!(feed_all(&mut p, &com(0x19, &[7, 0, 0, 0]))
            .unwrap()
            .is_empty());
        assert_eq!(feed_all(&mut p, &execute).unwrap()[0].api, None);
    }

    #[test]
    fn multi_results_and_errors_in_rows() {
        let mut resp = server_start();
        resp.extend(result_set(1, 2, true));
        // The second result set continues the first one's sequence ids.
        resp.extend(packet(7, &[1]));
        resp.extend(column_def(8, "b"));
        resp.extend(eof(9, 2));
        let mut p = ResponseParser::new();
        assert!(feed_all(&mut p, &resp).unwrap().is_empty());
        resp = packet(10, b"\x012");
        resp.extend(eof(11, 2));
        assert_eq!(statuses(&feed_all(&mut p, &resp).unwrap()), [Status::Ok]);

        let mut resp = server_start();
        let mut rs = result_set(1, 3, false);
        rs.truncate(rs.len() - 9);
        rs.extend(err(7, 1317));
        resp.extend(rs);
        let msgs = feed_all(&mut ResponseParser::new(), &resp).unwrap();
        assert_eq!(statuses(&msgs), [Status::Error("1317".into())]);
    }

    #[test]
    fn deprecate_eof_and_query_attributes() {
        let mut resp = server_start();
        resp.extend(packet(1, &[1]));
        resp.extend(column_def(2, "a"));
        resp.extend(packet(3, b"\x011"));
        resp.extend(packet(4, &[0xfe, 0, 0, 2, 0, 0, 0]));
        resp.extend(packet(1, &[1]));
        resp.extend(column_def(2, "a"));
        resp.extend(packet(3, &[0xfe, 0, 0, 2, 0, 0, 0]));
        let msgs = feed_all(&mut ResponseParser::new(), &resp).unwrap();
        assert_eq!(statuses(&msgs), [Status::Ok, Status::Ok]);

        let mut req = handshake_response(0x000f_a685 | CLIENT_QUERY_ATTRIBUTES);
        req.extend(com(0x03, b"\x00\x01delete from t"));
        let msgs = feed_all(&mut RequestParser::new(), &req).unwrap();
        assert_eq!(msgs[0].api.as_deref(), Some("DELETE"));
    }

    #[test]
    fn ssl_request_then_tls_is_desynchronised() {
        let mut ssl = vec![0x85, 0xae, 0xff, 0x19, 0, 0, 0, 1, 0x21];
        ssl.extend([0; 23]);
        let mut req = packet(1, &ssl);
        assert_eq!(req.len(), 36);
        req.extend([0x16, 3, 1, 2, 0]);
        let mut p = RequestParser::new();
        assert_eq!(
            feed_all(&mut p, &req),
            Err(ParseError::Desynchronised(PROTO))
        );
        assert_eq!(
            feed_all(&mut p, b"x"),
            Err(ParseError::Desynchronised(PROTO))
        );
        let mut resp = handshake();
        resp.extend([0x16, 3, 3, 0, 0x7a, 2]);
        assert_eq!(
            feed_all(&mut ResponseParser::new(), &resp),
            Err(ParseError::Desynchronised(PROTO))
        );
    }

    #[test]
    fn multi_packet_query_is_one_request_and_skipped() {
        let mut p = RequestParser::new();
        let mut out = Vec::new();
        p.feed(&client_start(), &mut out).unwrap();
        let mut first = vec![0xff, 0xff, 0xff, 0, 0x03];
        first.extend(b"INSERT INTO t VALUES ");
        p.feed(&first, &mut out).unwrap();
        let chunk = vec![b'1'; MAX_PENDING];
        let mut left = MAX_PAYLOAD as usize - 22;
        while left > 0 {
            let n = left.min(chunk.len());
            p.feed(&chunk[..n], &mut out).unwrap();
            left -= n;
        }
        assert!(out.is_empty());
        assert!(p.reader.buf.capacity() <= MAX_PENDING);
        p.feed(&packet(1, b"2)"), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].api.as_deref(), Some("INSERT"));
        assert_eq!(out[0].len, 4 + u64::from(MAX_PAYLOAD) + 4 + 2);
    }

    #[test]
    fn local_infile_and_change_user() {
        let mut req = client_start();
        req.extend(com(0x03, b"LOAD DATA LOCAL INFILE 'f.csv' INTO TABLE t"));
        req.extend(packet(2, b"1,2\n3,4\n"));
        req.extend(packet(3, b""));
        req.extend(com(0x11, b"bob\0"));
        req.extend(packet(2, &[9; 20]));
        let msgs = feed_all(&mut RequestParser::new(), &req).unwrap();
        let apis: Vec<_> = msgs.iter().map(|m| m.api.as_deref()).collect();
        assert_eq!(apis, [Some("LOAD"), Some("CHANGE_USER")]);

        let mut resp = server_start();
        resp.extend(packet(1, b"\xfbf.csv"));
        resp.extend(ok(4, 2));
        resp.extend(packet(
            1,
            b"\xfemysql_native_password\0abcdefghijklmnopqrst\0",
        ));
        resp.extend(ok(3, 2));
        resp.extend(err(1, 1064));
        let msgs = feed_all(&mut ResponseParser::new(), &resp).unwrap();
        let want = [Status::Ok, Status::Ok, Status::Error("1064".into())];
        assert_eq!(statuses(&msgs), want);
    }

    #[test]
    fn gaps() {
        let mut p = ResponseParser::new();
        let mut out = Vec::new();
        p.feed(&server_start(), &mut out).unwrap();
        let row = packet(1, &[b'x'; 200]);
        p.feed(&row[..100], &mut out).unwrap();
        p.gap(50).unwrap();
        p.feed(&row[150..], &mut out).unwrap();
        assert_eq!(p.gap(5), Err(ParseError::Desynchronised(PROTO)));
    }

    #[test]
    fn detection() {
        assert_eq!(detect(b"", Some(&handshake())), Detect::Yes);
        assert_eq!(detect(b"", Some(&handshake()[..8])), Detect::NeedMore);
        assert_eq!(detect(b"", Some(&handshake()[..2])), Detect::NeedMore);
        assert_eq!(detect(b"", None), Detect::NeedMore);
        assert_eq!(detect(&client_start(), None), Detect::NeedMore);
        assert_eq!(detect(b"GET / HTTP/1.1\r\n", None), Detect::No);
        assert_eq!(detect(b"", Some(b"HTTP/1.1 200 OK\r\n")), Detect::No);
    }

    /// Packets of `payloads` numbered from sequence id `seq`.
    fn numbered(seq: u8, payloads: &[Vec<u8>]) -> Vec<u8> {
        let seqs = (0..=255u8).cycle().skip(usize::from(seq));
        payloads
            .iter()
            .zip(seqs)
            .flat_map(|(p, s)| packet(s, p))
            .collect()
    }

    /// Payloads of a result set: classic EOFs or CLIENT_DEPRECATE_EOF's OK terminator.
    fn result_payloads(cols: u8, rows: usize, classic: bool, more: bool) -> Vec<Vec<u8>> {
        let status = if more { 2 | MORE_RESULTS } else { 2 };
        let mut v = vec![vec![cols]];
        v.extend((0..cols).map(|c| column_def(0, &format!("c{c}"))[4..].to_vec()));
        if classic {
            v.push(eof(0, 2)[4..].to_vec());
        }
        v.extend((0..rows).map(|r| format!("\x01{}", r % 10).into_bytes()));
        v.push(match classic {
            true => eof(0, status)[4..].to_vec(),
            false => [&[0xfe, 0, 0][..], &status.to_le_bytes(), &[0, 0]].concat(),
        });
        v
    }

    /// One exchange of kind `kind`: (requests, response).
    fn exchange(kind: u8, cols: u8, rows: usize) -> (Vec<u8>, Vec<u8>) {
        let query = com(0x03, format!("select {rows}").as_bytes());
        match kind {
            0 => (query, ok(1, 2)),
            1 => (query, err(1, 1146)),
            2 => (com(0x0e, b""), eof(1, 2)),
            3 | 4 => (
                query,
                numbered(1, &result_payloads(cols + 1, rows, kind == 3, false)),
            ),
            5 => {
                let mut v = result_payloads(cols + 1, rows, true, true);
                v.extend(result_payloads(1, 1, true, false));
                (query, numbered(1, &v))
            }
            6 => {
                let mut v = result_payloads(cols + 1, rows, false, false);
                v.pop();
                v.push(err(0, 1317)[4..].to_vec());
                (query, numbered(1, &v))
            }
            _ => {
                let prep_ok = [0x00, 9, 0, 0, 0, cols, 0, 2, 0, 0, 0, 0];
                let mut v = vec![];
                v.extend((0..2).map(|_| column_def(0, "?")[4..].to_vec()));
                v.push(eof(0, 2)[4..].to_vec());
                v.extend((0..cols).map(|_| column_def(0, "c")[4..].to_vec()));
                if cols > 0 {
                    v.push(eof(0, 2)[4..].to_vec());
                }
                let mut resp = packet(1, &prep_ok);
                resp.extend(numbered(2, &v));
                let mut req = com(0x16, b"insert into t values (?, ?)");
                req.extend(com(0x19, &[9, 0, 0, 0]));
                (req, resp)
            }
        }
    }

    /// A random valid conversation: (requests, responses, number of each).
    fn conversation() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<Status>)> {
        let item = (0u8..8, 0u8..4, 0usize..300);
        proptest::collection::vec(item, 0..10).prop_map(|items| {
            let (mut req, mut resp) = (client_start(), server_start());
            for &(kind, cols, rows) in &items {
                let (q, r) = exchange(kind, cols, rows);
                req.extend(q);
                resp.extend(r);
            }
            let status = |kind| match kind {
                1 => Status::Error("1146".into()),
                6 => Status::Error("1317".into()),
                _ => Status::Ok,
            };
            (req, resp, items.iter().map(|i| status(i.0)).collect())
        })
    }

    fn split_feed<P: StreamParser>(mut p: P, data: &[u8], cuts: &[usize]) -> Vec<Message> {
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
            (req, resp, want) in conversation(),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let whole = feed_all(&mut RequestParser::new(), &req).unwrap();
            prop_assert_eq!(whole.len(), want.len());
            prop_assert_eq!(split_feed(RequestParser::new(), &req, &cuts), whole);
            let whole = feed_all(&mut ResponseParser::new(), &resp).unwrap();
            prop_assert_eq!(statuses(&whole), want);
            prop_assert_eq!(split_feed(ResponseParser::new(), &resp, &cuts), whole);
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
            let _ = detect(&data, None);
        }
    }
}
