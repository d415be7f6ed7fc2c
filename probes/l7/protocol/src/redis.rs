//! Redis RESP2 and RESP3, both directions.
//!
//! Requests are arrays of bulk strings (`*N\r\n$len\r\n...`) or inline commands (one line of
//! words); `api` is the command name upper-cased, with the subcommand for container commands
//! ("CONFIG GET", "CLIENT SETNAME"). Bulk payloads are skipped, only their first
//! [`KEEP`] bytes kept where the API name needs them. Arrays of zero or negative length are
//! ignored, as the server does.
//!
//! Responses are any RESP2/RESP3 value. An error reply (`-ERR ...`, RESP3 blob error `!`) is
//! [`Status::Error`] with its first word ("ERR", "WRONGTYPE"); any other reply is
//! [`Status::Ok`]. Attributes (`|`) are part of the reply they precede; push messages (`>`) are
//! not replies to requests and are not yielded (RESP2 Pub/Sub messages cannot be told from
//! replies and are yielded as replies). Streamed RESP3 strings and aggregates (`$?`, `*?`) are
//! not supported: [`ParseError::Malformed`].
//!
//! Bounds (beyond them: [`ParseError::Malformed`]): bulk strings of at most [`MAX_BULK`] bytes
//! (Redis' `proto-max-bulk-len` default), aggregates of at most [`MAX_COUNT`] elements (Redis'
//! multibulk limit), nesting at most [`MAX_DEPTH`] deep. A line longer than [`MAX_PENDING`]
//! bytes is [`ParseError::TooLong`]. Lines end with CRLF (inline commands: LF or CRLF).
//! Errors are final: RESP has no resynchronisation point.

use crate::{
    text, Detect, Direction, Message, ParseError, Protocol, Status, StreamParser, MAX_PENDING,
};

/// Longest bulk string, bytes (512 MiB).
pub const MAX_BULK: u64 = 512 * 1024 * 1024;

/// Most elements of one array, set, map (pairs) or push.
pub const MAX_COUNT: u64 = i32::MAX as u64;

/// Deepest nesting of aggregates in a reply.
pub const MAX_DEPTH: usize = 64;

/// Bytes of a line or bulk string kept for names and error codes.
pub const KEEP: usize = 64;

/// Commands whose second word names the operation.
const CONTAINERS: [&[u8]; 14] = [
    b"CLIENT",
    b"CONFIG",
    b"CLUSTER",
    b"COMMAND",
    b"MEMORY",
    b"OBJECT",
    b"SCRIPT",
    b"XINFO",
    b"XGROUP",
    b"ACL",
    b"FUNCTION",
    b"MODULE",
    b"SLOWLOG",
    b"DEBUG",
];

/// Commands [`detect`] accepts in inline form.
const INLINE: [&[u8]; 44] = [
    b"PING",
    b"GET",
    b"SET",
    b"DEL",
    b"EXISTS",
    b"INCR",
    b"DECR",
    b"MGET",
    b"MSET",
    b"HGET",
    b"HSET",
    b"HGETALL",
    b"LPUSH",
    b"RPUSH",
    b"LPOP",
    b"RPOP",
    b"LRANGE",
    b"SADD",
    b"SMEMBERS",
    b"ZADD",
    b"ZRANGE",
    b"EXPIRE",
    b"TTL",
    b"KEYS",
    b"SCAN",
    b"INFO",
    b"AUTH",
    b"SELECT",
    b"QUIT",
    b"ECHO",
    b"CONFIG",
    b"CLIENT",
    b"FLUSHDB",
    b"FLUSHALL",
    b"DBSIZE",
    b"MULTI",
    b"EXEC",
    b"SUBSCRIBE",
    b"PUBLISH",
    b"HELLO",
    b"TYPE",
    b"MONITOR",
    b"INCRBY",
    b"APPEND",
];

/// First bytes of RESP2/RESP3 values.
const TYPES: &[u8] = b"+-:$*_,#!=(%~>|";

/// A parser of one direction of a Redis connection.
pub fn parser(direction: Direction) -> Box<dyn StreamParser> {
    Box::new(Parser::new(direction))
}

/// Whether a connection's first bytes are Redis: a request array of bulk strings (`*N\r\n$`),
/// or an inline command with a known name once a response starting like a RESP value is seen.
pub fn detect(request: &[u8], response: Option<&[u8]>) -> Detect {
    let asked = if request.first() == Some(&b'*') {
        detect_array(request)
    } else {
        detect_inline(request, response)
    };
    match response.and_then(|r| r.first()) {
        Some(b) if asked != Detect::No && !TYPES.contains(b) => Detect::No,
        _ => asked,
    }
}

/// [`detect`] of a request starting with `*`.
fn detect_array(request: &[u8]) -> Detect {
    let rest = request.get(1..).unwrap_or_default();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let after = rest.get(digits..).unwrap_or_default();
    if digits == 0 {
        return if after.is_empty() {
            Detect::NeedMore
        } else {
            Detect::No
        };
    }
    let want: &[u8] = b"\r\n$";
    if after.starts_with(want) {
        Detect::Yes
    } else if want.starts_with(after) {
        Detect::NeedMore
    } else {
        Detect::No
    }
}

/// [`detect`] of an inline command.
fn detect_inline(request: &[u8], response: Option<&[u8]>) -> Detect {
    let end = request
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'));
    let word = request
        .get(..end.unwrap_or(request.len()))
        .unwrap_or_default();
    let line_end = request
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(request.len());
    let line = request.get(..line_end).unwrap_or_default();
    if line.windows(7).any(|w| w == b"HTTP/1.") {
        return Detect::No;
    }
    let known = INLINE.iter().any(|c| c.eq_ignore_ascii_case(word));
    if end.is_none() {
        let prefix = INLINE.iter().any(|c| {
            c.len() >= word.len()
                && c.get(..word.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(word))
        });
        return if prefix { Detect::NeedMore } else { Detect::No };
    }
    match (known, response.and_then(|r| r.first())) {
        (false, _) => Detect::No,
        (true, None) => Detect::NeedMore,
        (true, Some(_)) => Detect::Yes,
    }
}

/// Where the parser is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a line (type byte and its text, or an inline command).
    Line,
    /// Skipping a bulk payload: bytes left.
    Bulk(u64),
    /// Expecting the CRLF after a bulk payload (`true`: CR seen).
    BulkEnd(bool),
    /// Failed: nothing more is parsed.
    Failed,
}

/// An aggregate being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Values left to read.
    left: u64,
    /// An attribute: its end is not a value of the enclosing aggregate.
    attribute: bool,
}

/// The parser of both directions.
struct Parser {
    direction: Direction,
    state: State,
    /// The first [`KEEP`] bytes of the current line (request inline lines: [`MAX_TEXT`] * 2).
    line: Vec<u8>,
    /// Bytes of the current line so far.
    line_len: usize,
    /// A control byte was in the current line.
    control: bool,
    /// The last byte read by a line (to see a CR before an LF cut apart by feeds).
    last: u8,
    /// The first [`KEEP`] bytes of the current bulk payload, when it is kept.
    bulk: Vec<u8>,
    /// The current bulk payload is kept.
    keep_bulk: bool,
    /// Bytes of the current message so far.
    len: u64,
    /// Requests: elements left in the current command (0: none being read), and read so far.
    left: u64,
    index: u64,
    /// Requests: the first two elements (first [`KEEP`] bytes each).
    words: [Vec<u8>; 2],
    /// Responses: aggregates being read, innermost last.
    stack: Vec<Frame>,
    /// Responses: the current reply's status, known once its first byte is read (None for a
    /// push message).
    status: Option<Status>,
    /// Responses: the current top-level value is a blob error.
    blob_error: bool,
}

/// The malformed-input error.
fn malformed() -> ParseError {
    ParseError::Malformed(Protocol::Redis)
}

/// Longest kept line prefix of an inline command.
const KEEP_INLINE: usize = 2 * KEEP;

impl Parser {
    fn new(direction: Direction) -> Self {
        Self {
            direction,
            state: State::Line,
            line: Vec::new(),
            line_len: 0,
            control: false,
            last: 0,
            bulk: Vec::new(),
            keep_bulk: false,
            len: 0,
            left: 0,
            index: 0,
            words: [Vec::new(), Vec::new()],
            stack: Vec::new(),
            status: None,
            blob_error: false,
        }
    }

    /// Bytes the parser keeps (for the bound tests).
    #[cfg(test)]
    fn retained(&self) -> usize {
        self.line.len() + self.bulk.len() + self.words.iter().map(Vec::len).sum::<usize>()
    }

    /// Parses from `rest` (not empty); returns how many bytes were used.
    fn step(&mut self, rest: &[u8], out: &mut Vec<Message>) -> Result<usize, ParseError> {
        match self.state {
            State::Line => self.take_line(rest, out),
            State::Bulk(left) => {
                let take = left.min(rest.len() as u64);
                // `take` is at most `rest.len()`, a usize.
                let used = take as usize;
                if self.keep_bulk {
                    let room = KEEP.saturating_sub(self.bulk.len()).min(used);
                    self.bulk
                        .extend_from_slice(rest.get(..room).unwrap_or_default());
                }
                self.len = self.len.saturating_add(take);
                self.state = State::Bulk(left - take);
                if left == take {
                    self.state = State::BulkEnd(false);
                }
                Ok(used)
            }
            State::BulkEnd(cr) => {
                self.len = self.len.saturating_add(1);
                match (rest.first(), cr) {
                    (Some(b'\r'), false) => self.state = State::BulkEnd(true),
                    (Some(b'\n'), true) => {
                        self.state = State::Line;
                        self.bulk_done(out);
                    }
                    _ => return Err(malformed()),
                }
                Ok(1)
            }
            State::Failed => Err(ParseError::Desynchronised(Protocol::Redis)),
        }
    }

    /// Reads the current line's bytes from `rest`; handles it when it ends.
    fn take_line(&mut self, rest: &[u8], out: &mut Vec<Message>) -> Result<usize, ParseError> {
        let (used, done) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (rest.len(), false),
        };
        if self.line_len.saturating_add(used) > MAX_PENDING {
            return Err(ParseError::TooLong(Protocol::Redis));
        }
        let taken = rest.get(..used).unwrap_or_default();
        let keep = if self.inline() { KEEP_INLINE } else { KEEP };
        let room = keep.saturating_sub(self.line.len()).min(used);
        self.line
            .extend_from_slice(taken.get(..room).unwrap_or_default());
        self.control |= taken
            .iter()
            .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n'));
        let cr = match used.checked_sub(2) {
            Some(i) => taken.get(i) == Some(&b'\r'),
            None => self.line_len > 0 && self.last == b'\r',
        };
        self.last = taken.last().copied().unwrap_or(self.last);
        self.line_len += used;
        self.len = self.len.saturating_add(used as u64);
        if done {
            self.line_done(cr, out)?;
        }
        Ok(used)
    }

    /// Whether the line being read is (or may be) an inline command.
    fn inline(&self) -> bool {
        self.direction == Direction::Request && self.left == 0 && self.line.first() != Some(&b'*')
    }

    /// A complete line (`cr`: it ended with CRLF): handles it.
    fn line_done(&mut self, cr: bool, out: &mut Vec<Message>) -> Result<(), ParseError> {
        let inline = self.inline();
        let mut line = std::mem::take(&mut self.line);
        let full = self.line_len;
        let control = self.control;
        self.line_len = 0;
        self.control = false;
        if !cr && !inline {
            return Err(malformed());
        }
        // Without its line end (when kept: a cut line's end was not).
        if line.len() == full {
            line.pop();
            if cr {
                line.pop();
            }
        }
        let result = if inline {
            self.inline_command(&line, control, out)
        } else if full > KEEP + 2 && !matches!(line.first(), Some(b'+' | b'-' | b'(' | b',')) {
            // Lengths, counts and other short values do not need more.
            Err(malformed())
        } else {
            match self.direction {
                Direction::Request => self.request_line(&line),
                Direction::Response => self.response_line(&line, out),
            }
        };
        line.clear();
        self.line = line;
        result
    }

    fn inline_command(
        &mut self,
        line: &[u8],
        control: bool,
        out: &mut Vec<Message>,
    ) -> Result<(), ParseError> {
        if control {
            return Err(malformed());
        }
        let mut words = line
            .split(|b| matches!(b, b' ' | b'\t'))
            .filter(|w| !w.is_empty());
        match words.next() {
            // Empty lines are ignored, as the server does.
            None => self.len = 0,
            Some(first) => {
                let second = words.next().unwrap_or_default();
                self.yield_request(first, second, out);
            }
        }
        Ok(())
    }

    fn request_line(&mut self, line: &[u8]) -> Result<(), ParseError> {
        let (kind, value) = line.split_first().ok_or_else(malformed)?;
        let n = number(value).ok_or_else(malformed)?;
        match kind {
            b'*' if self.left == 0 => {
                if n <= 0 {
                    // Ignored by the server.
                    self.len = 0;
                    return Ok(());
                }
                self.left = count(n)?;
                self.index = 0;
                self.words.iter_mut().for_each(Vec::clear);
            }
            b'$' if self.left > 0 => {
                if n < 0 {
                    return Err(malformed());
                }
                self.bulk.clear();
                self.keep_bulk = self.index < 2;
                self.state = State::Bulk(bulk_len(n)?);
            }
            _ => return Err(malformed()),
        }
        Ok(())
    }

    fn response_line(&mut self, line: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        let (&kind, value) = line.split_first().ok_or_else(malformed)?;
        if self.stack.is_empty() && kind != b'|' {
            self.status = match kind {
                b'-' => Some(Status::Error(error_code(value))),
                b'>' => None,
                _ => Some(Status::Ok),
            };
            self.blob_error = kind == b'!';
        }
        match kind {
            b'+' | b'-' | b'(' | b',' => self.value_done(out),
            b':' => {
                number(value).ok_or_else(malformed)?;
                self.value_done(out);
            }
            b'_' if value.is_empty() => self.value_done(out),
            b'#' if value == b"t" || value == b"f" => self.value_done(out),
            b'$' | b'!' | b'=' => self.bulk_start(kind, value, out)?,
            b'*' | b'~' | b'>' | b'%' | b'|' => self.aggregate_start(kind, value, out)?,
            _ => return Err(malformed()),
        }
        Ok(())
    }

    /// A response bulk string's length line (`$`, `!`, `=`).
    fn bulk_start(
        &mut self,
        kind: u8,
        value: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<(), ParseError> {
        let n = number(value).ok_or_else(malformed)?;
        if n == -1 && kind == b'$' {
            self.value_done(out);
        } else {
            self.bulk.clear();
            self.keep_bulk = self.blob_error && self.stack.is_empty();
            self.state = State::Bulk(bulk_len(n)?);
        }
        Ok(())
    }

    /// A response aggregate's count line (`*`, `~`, `>`, `%`, `|`).
    fn aggregate_start(
        &mut self,
        kind: u8,
        value: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<(), ParseError> {
        let n = number(value).ok_or_else(malformed)?;
        if n == -1 && kind == b'*' {
            self.value_done(out);
            return Ok(());
        }
        let mut left = count(n)?;
        if matches!(kind, b'%' | b'|') {
            left *= 2;
        }
        let attribute = kind == b'|';
        if left == 0 {
            if !attribute {
                self.value_done(out);
            }
        } else if self.stack.len() >= MAX_DEPTH {
            return Err(malformed());
        } else {
            self.stack.push(Frame { left, attribute });
        }
        Ok(())
    }

    /// A bulk payload and its CRLF were read.
    fn bulk_done(&mut self, out: &mut Vec<Message>) {
        match self.direction {
            Direction::Request => {
                if let Some(word) = usize::try_from(self.index)
                    .ok()
                    .and_then(|i| self.words.get_mut(i))
                {
                    std::mem::swap(word, &mut self.bulk);
                }
                self.bulk.clear();
                self.index += 1;
                self.left = self.left.saturating_sub(1);
                if self.left == 0 {
                    let [first, second] = std::mem::take(&mut self.words);
                    self.yield_request(&first, &second, out);
                    self.words = [first, second];
                }
            }
            Direction::Response => {
                if self.blob_error && self.stack.is_empty() {
                    self.status = Some(Status::Error(error_code(&self.bulk)));
                }
                self.bulk.clear();
                self.value_done(out);
            }
        }
    }

    /// A response value ended: ends the aggregates it completes, and the reply at top level.
    fn value_done(&mut self, out: &mut Vec<Message>) {
        while let Some(top) = self.stack.last_mut() {
            top.left = top.left.saturating_sub(1);
            if top.left > 0 {
                return;
            }
            let attribute = top.attribute;
            self.stack.pop();
            if attribute {
                return;
            }
        }
        if let Some(status) = self.status.take() {
            out.push(Message {
                direction: Direction::Response,
                api: None,
                status: Some(status),
                correlation: None,
                len: self.len,
                topics: None,
            });
        }
        self.len = 0;
        self.blob_error = false;
    }

    fn yield_request(&mut self, first: &[u8], second: &[u8], out: &mut Vec<Message>) {
        let mut name = first.to_ascii_uppercase();
        if !second.is_empty() && CONTAINERS.iter().any(|c| c.eq_ignore_ascii_case(first)) {
            name.push(b' ');
            name.extend(second.iter().map(u8::to_ascii_uppercase));
        }
        out.push(Message {
            direction: Direction::Request,
            api: (!name.is_empty()).then(|| text(&name)),
            status: None,
            correlation: None,
            len: self.len,
            topics: None,
        });
        self.len = 0;
        self.left = 0;
    }
}

impl StreamParser for Parser {
    fn protocol(&self) -> Protocol {
        Protocol::Redis
    }

    fn feed(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        let mut pos = 0;
        if self.state == State::Failed {
            return Err(ParseError::Desynchronised(Protocol::Redis));
        }
        while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
            match self.step(rest, out) {
                Ok(used) => pos += used,
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Lost bytes are skipped only inside a bulk payload with at least that many bytes left,
    /// and not where its first bytes are needed (a command name, an error code) and lost.
    fn gap(&mut self, n: u64) -> Result<(), ParseError> {
        let needed = self.keep_bulk && self.bulk.len() < KEEP;
        match self.state {
            State::Bulk(left) if n <= left && !(needed && n > 0) => {
                self.len = self.len.saturating_add(n);
                self.state = if n == left {
                    State::BulkEnd(false)
                } else {
                    State::Bulk(left - n)
                };
                Ok(())
            }
            State::Failed => Err(ParseError::Desynchronised(Protocol::Redis)),
            _ if n == 0 => Ok(()),
            _ => {
                self.state = State::Failed;
                Err(ParseError::Desynchronised(Protocol::Redis))
            }
        }
    }
}

/// A RESP integer (optional sign, decimal digits) that fits an i64.
fn number(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0i64, |n, &b| {
        let d = i64::from((b as char).to_digit(10)?);
        let n = n.checked_mul(10)?;
        if negative {
            n.checked_sub(d)
        } else {
            n.checked_add(d)
        }
    })
}

/// An aggregate's element count, bounded by [`MAX_COUNT`].
fn count(n: i64) -> Result<u64, ParseError> {
    u64::try_from(n)
        .ok()
        .filter(|&c| c <= MAX_COUNT)
        .ok_or_else(malformed)
}

/// A bulk length, bounded by [`MAX_BULK`].
fn bulk_len(n: i64) -> Result<u64, ParseError> {
    u64::try_from(n)
        .ok()
        .filter(|&c| c <= MAX_BULK)
        .ok_or_else(malformed)
}

/// An error reply's code: its first word ("ERR" when empty).
fn error_code(message: &[u8]) -> String {
    let end = message
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(message.len());
    match message.get(..end) {
        Some(word) if !word.is_empty() => text(word),
        _ => "ERR".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{feed_cut, req, resp};
    use proptest::prelude::*;

    fn whole(direction: Direction, data: &[u8]) -> (Vec<Message>, Option<ParseError>) {
        feed_cut(parser(direction).as_mut(), data, &[])
    }

    fn err(code: &str) -> Status {
        Status::Error(code.into())
    }

    /// A command as redis-cli sends it.
    fn command(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn redis_cli_requests_pipelined() {
        let set = command(&[b"SET", b"key", b"value"]);
        let get = command(&[b"get", b"key"]);
        let config = command(&[b"CONFIG", b"get", b"maxmemory"]);
        let client = command(&[b"client", b"setname", b"app"]);
        let inline = b"ping\r\n\r\nset a b\n";
        let data = [&set[..], &get, &config, &client, b"*0\r\n", inline].concat();
        let (msgs, e) = whole(Direction::Request, &data);
        assert_eq!(e, None);
        assert_eq!(
            msgs,
            vec![
                req("SET", set.len()),
                req("GET", get.len()),
                req("CONFIG GET", config.len()),
                req("CLIENT SETNAME", client.len()),
                req("PING", 6),
                req("SET", 8),
            ]
        );
    }

    #[test]
    fn empty_command_name_is_not_named() {
        let data = b"*1\r\n$0\r\n\r\n";
        let (msgs, e) = whole(Direction::Request, data);
        assert_eq!(e, None);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].api, None);
    }

    #[test]
    fn replies_resp2_and_resp3() {
        let cases: [(&[u8], Option<Status>); 19] = [
            (b"+OK\r\n", Some(Status::Ok)),
            (b"$5\r\nvalue\r\n", Some(Status::Ok)),
            (b"$-1\r\n", Some(Status::Ok)),
            (
                b"-ERR unknown command 'FOO', with args beginning with: \r\n",
                Some(err("ERR")),
            ),
            (
                b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
                Some(err("WRONGTYPE")),
            ),
            (b":1\r\n", Some(Status::Ok)),
            (b"*2\r\n$1\r\na\r\n*-1\r\n", Some(Status::Ok)),
            (b"*-1\r\n", Some(Status::Ok)),
            (b"*0\r\n", Some(Status::Ok)),
            (b"%1\r\n+a\r\n:1\r\n", Some(Status::Ok)),
            (b"|1\r\n+ttl\r\n:3600\r\n+OK\r\n", Some(Status::Ok)),
            (b"|1\r\n+key\r\n+v\r\n-ERR no\r\n", Some(err("ERR"))),
            (b">3\r\n+message\r\n+ch\r\n+hi\r\n", None),
            (b"!21\r\nSYNTAX invalid syntax\r\n", Some(err("SYNTAX"))),
            (b"_\r\n", Some(Status::Ok)),
            (b",1.5\r\n", Some(Status::Ok)),
            (b"#t\r\n", Some(Status::Ok)),
            (b"=15\r\ntxt:Some string\r\n", Some(Status::Ok)),
            (
                b"~2\r\n(12345678901234567890\r\n*1\r\n|1\r\n+a\r\n+b\r\n:2\r\n",
                Some(Status::Ok),
            ),
        ];
        let mut all = Vec::new();
        let mut expected = Vec::new();
        for (bytes, status) in cases {
            let (msgs, e) = whole(Direction::Response, bytes);
            let want: Vec<Message> = status
                .iter()
                .map(|s| resp(s.clone(), bytes.len()))
                .collect();
            assert_eq!(
                (msgs, e),
                (want.clone(), None),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
            all.extend_from_slice(bytes);
            expected.extend(want);
        }
        assert_eq!(whole(Direction::Response, &all), (expected, None));
    }

    #[test]
    fn malformed_and_bounds() {
        let mut deep = b"*1\r\n".repeat(MAX_DEPTH);
        deep.extend_from_slice(b":1\r\n");
        assert_eq!(whole(Direction::Response, &deep).1, None);
        let deeper = [&b"*1\r\n"[..], &deep].concat();
        for bad in [
            &deeper[..],
            b"?x\r\n",
            b"+OK\n",
            b":x\r\n",
            b"#x\r\n",
            b"$536870913\r\n",
            b"*2147483648\r\n",
            b"$3\r\nabcd\r\n",
            b"$?\r\n",
            b"$-2\r\n",
        ] {
            let mut p = parser(Direction::Response);
            assert_eq!(
                feed_cut(p.as_mut(), bad, &[]).1,
                Some(ParseError::Malformed(Protocol::Redis)),
                "{bad:?}"
            );
            assert_eq!(
                p.feed(b"+OK\r\n", &mut Vec::new()),
                Err(ParseError::Desynchronised(Protocol::Redis))
            );
        }
        for bad in [
            &b"*1\r\n:1\r\n"[..],
            b"*1\r\n$-1\r\n",
            b"PING\x01\r\n",
            b"*1\n$4\r\nPING\r\n",
        ] {
            assert_eq!(
                whole(Direction::Request, bad).1,
                Some(ParseError::Malformed(Protocol::Redis)),
                "{bad:?}"
            );
        }
        let long = [&b"+"[..], &[b'a'; MAX_PENDING], b"\r\n"].concat();
        assert_eq!(
            whole(Direction::Response, &long).1,
            Some(ParseError::TooLong(Protocol::Redis))
        );
    }

    #[test]
    fn gaps() {
        let big = vec![b'x'; 1000];
        let set = command(&[b"SET", b"key", &big]);
        let mut p = parser(Direction::Request);
        let mut out = Vec::new();
        assert_eq!(p.feed(&set[..100], &mut out), Ok(()));
        assert_eq!(p.gap(500), Ok(()));
        assert_eq!(p.feed(&set[600..], &mut out), Ok(()));
        assert_eq!(out, vec![req("SET", set.len())]);
        // Up to the payload's end exactly.
        let mut p = parser(Direction::Request);
        let end = set.len() - 2;
        assert_eq!(p.feed(&set[..100], &mut Vec::new()), Ok(()));
        assert_eq!(p.gap((end - 100) as u64), Ok(()));
        let mut out = Vec::new();
        assert_eq!(p.feed(&set[end..], &mut out), Ok(()));
        assert_eq!(out.len(), 1);
        // Past it, in a line, or in the command name: fatal.
        for (fed, n) in [(100, 2000), (5, 1), (10, 1)] {
            let mut p = parser(Direction::Request);
            assert_eq!(p.feed(&set[..fed], &mut Vec::new()), Ok(()));
            assert_eq!(
                p.gap(n),
                Err(ParseError::Desynchronised(Protocol::Redis)),
                "{fed} {n}"
            );
            assert_eq!(
                p.feed(b"PING\r\n", &mut Vec::new()),
                Err(ParseError::Desynchronised(Protocol::Redis))
            );
        }
        let mut p = parser(Direction::Response);
        assert_eq!(p.feed(b"$1000\r\nab", &mut Vec::new()), Ok(()));
        assert_eq!(p.gap(998), Ok(()));
        let mut out = Vec::new();
        assert_eq!(p.feed(b"\r\n", &mut out), Ok(()));
        assert_eq!(out, vec![resp(Status::Ok, 1009)]);
    }

    #[test]
    fn detection() {
        assert_eq!(detect(b"*1\r\n$4\r\nPING\r\n", None), Detect::Yes);
        assert_eq!(detect(b"*3\r\n$3\r\nSET", Some(b"+OK\r\n")), Detect::Yes);
        assert_eq!(
            detect(b"*3\r\n$3\r\nSET", Some(b"HTTP/1.1 200 OK")),
            Detect::No
        );
        assert_eq!(detect(b"*3\r", None), Detect::NeedMore);
        assert_eq!(detect(b"*", None), Detect::NeedMore);
        assert_eq!(detect(b"", None), Detect::NeedMore);
        assert_eq!(detect(b"*x", None), Detect::No);
        assert_eq!(detect(b"*3\r\nX", None), Detect::No);
        assert_eq!(detect(b"PING\r\n", None), Detect::NeedMore);
        assert_eq!(detect(b"PING\r\n", Some(b"+PONG\r\n")), Detect::Yes);
        assert_eq!(detect(b"PI", Some(b"+PONG\r\n")), Detect::NeedMore);
        assert_eq!(detect(b"get k\r\n", Some(b"$-1\r\n")), Detect::Yes);
        assert_eq!(detect(b"GET / HTTP/1.1\r\n", None), Detect::No);
        assert_eq!(detect(b"HELLOX 3\r\n", Some(b"-ERR\r\n")), Detect::No);
        assert_eq!(detect(b"\x16\x03\x01", None), Detect::No);
    }

    /// A RESP value.
    #[derive(Debug, Clone)]
    enum V {
        Simple(String),
        Error(String),
        Int(i64),
        Bulk(Vec<u8>),
        Null,
        Double,
        BlobError(String),
        Array(Vec<V>),
        Set(Vec<V>),
        Map(Vec<(V, V)>),
        Attributed(Vec<(V, V)>, Box<V>),
    }

    fn encode(v: &V, out: &mut Vec<u8>) {
        match v {
            V::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            V::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            V::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            V::Bulk(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            V::Null => out.extend_from_slice(b"_\r\n"),
            V::Double => out.extend_from_slice(b",-1.5e3\r\n"),
            V::BlobError(s) => out.extend_from_slice(format!("!{}\r\n{s}\r\n", s.len()).as_bytes()),
            V::Array(items) | V::Set(items) => {
                let kind = if matches!(v, V::Array(_)) { '*' } else { '~' };
                out.extend_from_slice(format!("{kind}{}\r\n", items.len()).as_bytes());
                items.iter().for_each(|i| encode(i, out));
            }
            V::Map(pairs) => {
                out.extend_from_slice(format!("%{}\r\n", pairs.len()).as_bytes());
                encode_pairs(pairs, out);
            }
            V::Attributed(pairs, inner) => {
                out.extend_from_slice(format!("|{}\r\n", pairs.len()).as_bytes());
                encode_pairs(pairs, out);
                encode(inner, out);
            }
        }
    }

    fn encode_pairs(pairs: &[(V, V)], out: &mut Vec<u8>) {
        for (k, v) in pairs {
            encode(k, out);
            encode(v, out);
        }
    }

    fn status(v: &V) -> Status {
        match v {
            V::Error(s) | V::BlobError(s) => err(s.split(' ').next().unwrap_or_default()),
            V::Attributed(_, inner) => status(inner),
            _ => Status::Ok,
        }
    }

    fn value() -> impl Strategy<Value = V> {
        let code = "[A-Z]{1,10}( [a-z ]{0,20})?";
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,20}".prop_map(V::Simple),
            code.prop_map(V::Error),
            any::<i64>().prop_map(V::Int),
            proptest::collection::vec(any::<u8>(), 0..100).prop_map(V::Bulk),
            Just(V::Null),
            Just(V::Double),
            code.prop_map(V::BlobError),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            let pairs = proptest::collection::vec((inner.clone(), inner.clone()), 0..3);
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(V::Array),
                proptest::collection::vec(inner.clone(), 0..5).prop_map(V::Set),
                pairs.clone().prop_map(V::Map),
                (pairs, inner).prop_map(|(p, i)| V::Attributed(p, Box::new(i))),
            ]
        })
    }

    /// A reply (yielded) or a push message (not).
    fn reply() -> impl Strategy<Value = (Vec<u8>, Option<Message>)> {
        (value(), prop::bool::weighted(0.1)).prop_map(|(v, push)| {
            let mut data = Vec::new();
            if push {
                data.extend_from_slice(b">2\r\n+message\r\n");
            }
            encode(&v, &mut data);
            let len = data.len();
            (data, (!push).then(|| resp(status(&v), len)))
        })
    }

    fn request() -> impl Strategy<Value = (Vec<u8>, Option<Message>)> {
        let name = prop::sample::select(vec!["GET", "set", "Config", "CLIENT", "hset", "xgroup"]);
        let args = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..4);
        (name, "[a-z]{1,8}", args, any::<bool>()).prop_map(|(name, sub, args, inline)| {
            if inline {
                let data = format!("{name} {sub} x\r\n").into_bytes();
                let api = if CONTAINERS
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(name.as_bytes()))
                {
                    format!("{} {}", name.to_uppercase(), sub.to_uppercase())
                } else {
                    name.to_uppercase()
                };
                let len = data.len();
                return (data, Some(req(&api, len)));
            }
            let mut all: Vec<&[u8]> = vec![name.as_bytes()];
            all.extend(args.iter().map(Vec::as_slice));
            let data = command(&all);
            let api = match (
                CONTAINERS
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(name.as_bytes())),
                args.first(),
            ) {
                (true, Some(a)) if !a.is_empty() => text(
                    &[
                        name.to_uppercase().as_bytes(),
                        b" ",
                        &a[..a.len().min(KEEP)].to_ascii_uppercase(),
                    ]
                    .concat(),
                ),
                _ => name.to_uppercase(),
            };
            let len = data.len();
            (data, Some(req(&api, len)))
        })
    }

    fn check_split(
        direction: Direction,
        batch: Vec<(Vec<u8>, Option<Message>)>,
        cuts: Vec<prop::sample::Index>,
    ) -> Result<(), TestCaseError> {
        let data: Vec<u8> = batch.iter().flat_map(|(d, _)| d.clone()).collect();
        let expected: Vec<Message> = batch.into_iter().filter_map(|(_, m)| m).collect();
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        let all = whole(direction, &data);
        let split = feed_cut(parser(direction).as_mut(), &data, &cuts);
        prop_assert_eq!(&all, &(expected, None));
        prop_assert_eq!(all, split);
        Ok(())
    }

    proptest! {
        #[test]
        fn requests_split_anywhere(batch in proptest::collection::vec(request(), 1..6), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            check_split(Direction::Request, batch, cuts)?;
        }

        #[test]
        fn replies_split_anywhere(batch in proptest::collection::vec(reply(), 1..6), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            check_split(Direction::Response, batch, cuts)?;
        }

        #[test]
        fn random_bytes_never_panic_and_stay_bounded(prefix in 0usize..3, bytes in proptest::collection::vec(any::<u8>(), 0..3000), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            let start: &[u8] = [&b""[..], b"*3\r\n$3\r\nSET\r\n", b"*2\r\n"][prefix];
            let data = [start, &bytes[..]].concat();
            let cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
            for direction in [Direction::Request, Direction::Response] {
                let mut p = Parser::new(direction);
                let split = feed_cut(&mut p, &data, &cuts);
                prop_assert!(p.retained() <= MAX_PENDING);
                prop_assert!(p.stack.len() <= MAX_DEPTH);
                prop_assert_eq!(split, whole(direction, &data));
            }
        }
    }
}
