//! The l7 probe's application protocol parsers (issue 17): pure functions of the bytes one
//! direction of a connection carried, in the order they were captured. No I/O, no clock, no
//! allocation that the input can grow without bound.
//!
//! A connection has two byte streams. Each is fed to a [`StreamParser`] made for its
//! [`Direction`] (the client's requests, the server's responses) by [`parser`]; the parser
//! yields [`Message`]s as they complete. Matching responses to requests (latency, errors per
//! API) is the caller's, by [`Message::correlation`] where the protocol has one, else in order.
//!
//! Rules every parser keeps:
//! - **Bounded**: at most [`MAX_PENDING`] bytes of an incomplete message are kept; a message
//!   whose header does not fit is a [`ParseError::TooLong`]. Bodies are skipped by their
//!   declared length, never buffered.
//! - **Never guesses**: bytes that do not follow the protocol give [`ParseError::Malformed`];
//!   after an error the parser resynchronises only where the protocol makes it certain (else it
//!   stays failed and every later `feed` returns [`ParseError::Desynchronised`]), and the caller
//!   counts it.
//! - **Gaps**: [`StreamParser::gap`] says `n` bytes were lost (not captured); the parser skips
//!   them if it knows it was inside a body it was skipping anyway, else it gives up the stream
//!   the same way.
//! - **Split anywhere**: feeding a stream in pieces cut at any points yields the same messages
//!   as feeding it whole (property-tested per protocol).

pub mod api;
pub mod dns;
pub mod http;
pub mod kafka;
pub mod kafka_topics;
pub mod mysql;
pub mod pgsql;
pub mod redis;
pub mod tracker;

use std::fmt;

/// Longest incomplete message (header part) a parser keeps, bytes.
pub const MAX_PENDING: usize = 16 * 1024;

/// Protocols the parsers know (upstream's `l7_protocol` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.0 and HTTP/1.1.
    Http,
    /// Redis RESP2/RESP3.
    Redis,
    /// PostgreSQL frontend/backend protocol v3.
    Pgsql,
    /// MySQL / MariaDB client/server protocol.
    Mysql,
    /// Kafka wire protocol.
    Kafka,
    /// DNS: over UDP one message per datagram, over TCP framed by a 2-byte length.
    Dns,
}

impl Protocol {
    /// Every protocol, in upstream's order.
    pub const ALL: [Protocol; 6] = [
        Protocol::Http,
        Protocol::Dns,
        Protocol::Redis,
        Protocol::Mysql,
        Protocol::Pgsql,
        Protocol::Kafka,
    ];

    /// Upstream's name (`l7_protocol` values, the `protocol` key of the tables).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Redis => "redis",
            Protocol::Pgsql => "pgsql",
            Protocol::Mysql => "mysql",
            Protocol::Kafka => "kafka",
            Protocol::Dns => "dns",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which side wrote a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server: requests.
    Request,
    /// Server to client: responses.
    Response,
}

/// Outcome of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Success (HTTP < 400, no error reply/packet/code).
    Ok,
    /// An error: a short protocol code — HTTP status ("404"), Redis error prefix ("ERR",
    /// "WRONGTYPE"), PostgreSQL SQLSTATE ("42P01"), MySQL error number ("1146"), Kafka error
    /// code ("3"), DNS rcode name ("NXDOMAIN"). At most [`MAX_TEXT`] bytes, printable ASCII.
    Error(String),
}

/// Longest `api` or error code text a message carries, bytes (longer ones are cut).
pub const MAX_TEXT: usize = 128;

/// One complete protocol message of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request or response (what the stream's direction carries).
    pub direction: Direction,
    /// Requests: what was asked, the key of `l7_rpc_api` before templating — HTTP "GET /a/b"
    /// (path without query), SQL verb ("SELECT"; prepared statements: the verb of the statement
    /// prepared, when the stream saw it), Redis command ("GET"), Kafka api name ("Produce"), DNS
    /// qtype ("A"). At most [`MAX_TEXT`] bytes, printable ASCII. None for responses, and for
    /// requests whose API the parser cannot name.
    pub api: Option<String>,
    /// Responses: success or the error. None for requests.
    pub status: Option<Status>,
    /// Kafka correlation id, DNS id; the statement id of a MySQL COM_STMT_PREPARE's OK
    /// response. None where responses come in request order.
    pub correlation: Option<u32>,
    /// Bytes of the message on the wire (header and body).
    pub len: u64,
    /// Kafka Produce requests and Fetch responses: the records and bytes per topic, as far as
    /// the message's bytes were seen. None for every other message.
    pub topics: Option<Box<kafka_topics::Walked>>,
}

/// Why a stream cannot be parsed (further).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes do not follow the protocol.
    #[error("malformed {0} message")]
    Malformed(Protocol),
    /// A header longer than [`MAX_PENDING`].
    #[error("{0} message header over {MAX_PENDING} bytes")]
    TooLong(Protocol),
    /// The stream failed before (or lost bytes where that is fatal); nothing more is parsed.
    #[error("{0} stream no longer in step")]
    Desynchronised(Protocol),
}

/// An incremental parser of one direction of one connection.
pub trait StreamParser: Send {
    /// The protocol parsed.
    fn protocol(&self) -> Protocol;
    /// Feeds the stream's next `data`; pushes every message completed by it to `out` (in stream
    /// order). On an error, the messages completed before it are in `out`.
    fn feed(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError>;
    /// `n` bytes of the stream were lost after the last `feed`.
    fn gap(&mut self, n: u64) -> Result<(), ParseError>;
}

/// A parser for `protocol`'s stream in `direction`.
pub fn parser(protocol: Protocol, direction: Direction) -> Box<dyn StreamParser> {
    match protocol {
        Protocol::Http => http::parser(direction),
        Protocol::Redis => redis::parser(direction),
        Protocol::Pgsql => pgsql::parser(direction),
        Protocol::Mysql => mysql::parser(direction),
        Protocol::Kafka => kafka::parser(direction),
        Protocol::Dns => dns::parser(direction),
    }
}

/// What the first bytes of a connection say about one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// Certainly this protocol.
    Yes,
    /// Certainly not.
    No,
    /// Not enough bytes yet to tell.
    NeedMore,
}

/// A connection's transport, where a protocol is framed differently on each (DNS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A byte stream (DNS messages carry a 2-byte length).
    Tcp,
    /// Datagrams (one DNS message each).
    Udp,
}

/// A parser for `protocol`'s stream in `direction` over `transport` (DNS over TCP is framed
/// by a length; the other protocols do not care).
pub fn parser_over(
    protocol: Protocol,
    direction: Direction,
    transport: Transport,
) -> Box<dyn StreamParser> {
    match (protocol, transport) {
        (Protocol::Dns, Transport::Tcp) => dns::tcp_parser(direction),
        _ => parser(protocol, direction),
    }
}

/// [`detect`] on a connection of `transport`: DNS over TCP is detected through its length
/// framing ([`dns::detect_tcp`]); [`detect`] reads DNS as datagrams.
#[allow(clippy::result_unit_err)]
pub fn detect_over(
    request: &[u8],
    response: Option<&[u8]>,
    allowed: &[Protocol],
    transport: Transport,
) -> Option<Result<Protocol, ()>> {
    detect_with(
        request,
        response,
        allowed,
        |request, response| match transport {
            Transport::Tcp => dns::detect_tcp(request, response),
            Transport::Udp => dns::detect(request, response),
        },
    )
}

/// The protocol the first bytes a client sent on a connection (`request`) and, when known, the
/// first bytes of the server's answer (`response`) say, among `allowed`: `Some(Ok(p))` when
/// exactly one protocol answers [`Detect::Yes`], `Some(Err(()))` when none can any more (the
/// connection is then not parsed: counted, never guessed), None while one may still.
#[allow(clippy::result_unit_err)]
pub fn detect(
    request: &[u8],
    response: Option<&[u8]>,
    allowed: &[Protocol],
) -> Option<Result<Protocol, ()>> {
    detect_with(request, response, allowed, dns::detect)
}

#[allow(clippy::result_unit_err)]
fn detect_with(
    request: &[u8],
    response: Option<&[u8]>,
    allowed: &[Protocol],
    dns: impl Fn(&[u8], Option<&[u8]>) -> Detect,
) -> Option<Result<Protocol, ()>> {
    let mut yes = Vec::new();
    let mut pending = false;
    // The server spoke before the client: only a protocol whose server speaks first fits.
    let server_first = request.is_empty() && response.is_some_and(|r| !r.is_empty());
    for &p in allowed {
        let d = match p {
            _ if server_first && p != Protocol::Mysql => Detect::No,
            Protocol::Http => http::detect(request, response),
            Protocol::Redis => redis::detect(request, response),
            Protocol::Pgsql => pgsql::detect(request, response),
            Protocol::Mysql => mysql::detect(request, response),
            Protocol::Kafka => kafka::detect(request, response),
            Protocol::Dns => dns(request, response),
        };
        match d {
            Detect::Yes => yes.push(p),
            Detect::NeedMore => pending = true,
            Detect::No => {}
        }
    }
    match (yes.as_slice(), pending) {
        ([p], false) => Some(Ok(*p)),
        ([], false) => Some(Err(())),
        // Two certain answers cannot both be right: not guessed.
        ([_, _, ..], _) => Some(Err(())),
        _ => None,
    }
}

/// Cuts `s` to [`MAX_TEXT`] bytes of printable ASCII (others become `?`).
pub fn text(s: &[u8]) -> String {
    printable(s.get(..MAX_TEXT).unwrap_or(s))
}

/// `s` as text, bytes outside printable ASCII replaced by `?` (no length limit).
pub(crate) fn printable(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        out.push(if (0x20..0x7f).contains(&b) {
            char::from(b)
        } else {
            '?'
        });
    }
    out
}

/// Helpers the protocol modules' tests share.
#[cfg(test)]
pub(crate) mod testkit {
    use super::{Direction, Message, ParseError, Status, StreamParser};

    /// Feeds `data` in pieces cut at `cuts` (positions, any order, clamped); the messages and
    /// the first error.
    pub(crate) fn feed_cut(
        p: &mut dyn StreamParser,
        data: &[u8],
        cuts: &[usize],
    ) -> (Vec<Message>, Option<ParseError>) {
        feed_pieces(p, &split(data, cuts))
    }

    /// Feeds `pieces` in turn: the messages and the first error.
    pub(crate) fn feed_pieces(
        p: &mut dyn StreamParser,
        pieces: &[&[u8]],
    ) -> (Vec<Message>, Option<ParseError>) {
        let mut out = Vec::new();
        for piece in pieces {
            if let Err(e) = p.feed(piece, &mut out) {
                return (out, Some(e));
            }
        }
        (out, None)
    }

    /// `data` cut at `cuts` (positions modulo its length + 1, any order).
    pub(crate) fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts {
            pieces.push(data.get(at..c).unwrap_or_default());
            at = c;
        }
        pieces.push(data.get(at..).unwrap_or_default());
        pieces
    }

    /// A request message.
    pub(crate) fn req(api: &str, len: usize) -> Message {
        Message {
            direction: Direction::Request,
            api: Some(api.into()),
            status: None,
            correlation: None,
            len: len as u64,
            topics: None,
        }
    }

    /// A response message.
    pub(crate) fn resp(status: Status, len: usize) -> Message {
        Message {
            direction: Direction::Response,
            api: None,
            status: Some(status),
            correlation: None,
            len: len as u64,
            topics: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of one connection of each protocol, as its client (and, for MySQL, whose
    /// server speaks first, its server) sends them.
    fn openings() -> Vec<(Protocol, Vec<u8>, Option<Vec<u8>>)> {
        let mut pg = Vec::new();
        let params = b"user\0app\0database\0db\0\0";
        pg.extend_from_slice(&(8 + params.len() as u32).to_be_bytes());
        pg.extend_from_slice(&196_608u32.to_be_bytes());
        pg.extend_from_slice(params);
        let mut my = vec![0x0a];
        my.extend_from_slice(b"8.0.36\0");
        my.extend_from_slice(&[1, 0, 0, 0]);
        my.extend_from_slice(b"abcdefgh\0");
        my.extend_from_slice(&[0xff, 0xf7, 0x21, 0x02, 0, 0xff, 0xc1, 0x15]);
        my.extend_from_slice(&[0; 10]);
        my.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
        let mut mysql = (my.len() as u32).to_le_bytes()[..3].to_vec();
        mysql.push(0);
        mysql.extend_from_slice(&my);
        let mut kafka_body = Vec::new();
        kafka_body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
        kafka_body.extend_from_slice(&3i16.to_be_bytes());
        kafka_body.extend_from_slice(&7i32.to_be_bytes());
        kafka_body.extend_from_slice(&6i16.to_be_bytes());
        kafka_body.extend_from_slice(b"client");
        kafka_body.extend_from_slice(&[0, 0, 0]);
        let mut kafka = (kafka_body.len() as u32).to_be_bytes().to_vec();
        kafka.extend_from_slice(&kafka_body);
        let mut dns = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        dns.extend_from_slice(b"\x07example\x03com\x00");
        dns.extend_from_slice(&[0, 1, 0, 1]);
        vec![
            (
                Protocol::Http,
                b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                None,
            ),
            (
                Protocol::Redis,
                b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec(),
                None,
            ),
            (Protocol::Pgsql, pg, None),
            (Protocol::Mysql, Vec::new(), Some(mysql)),
            (Protocol::Kafka, kafka, None),
            (Protocol::Dns, dns, None),
        ]
    }

    #[test]
    fn each_protocol_is_told_apart_from_the_others() {
        for (want, request, response) in openings() {
            assert_eq!(
                detect(&request, response.as_deref(), &Protocol::ALL),
                Some(Ok(want)),
                "{want}"
            );
            // Not allowed: not taken for another protocol.
            let others: Vec<Protocol> = Protocol::ALL.into_iter().filter(|p| *p != want).collect();
            assert_ne!(
                detect(&request, response.as_deref(), &others),
                Some(Ok(want)),
                "{want}"
            );
            assert!(
                !matches!(detect(&request, response.as_deref(), &others), Some(Ok(_))),
                "{want} taken for another protocol"
            );
        }
    }

    #[test]
    fn short_openings_are_refused_as_soon_as_a_field_rules_them_out() {
        // Four bytes of an HTTP request are an impossible Kafka size (and not a PostgreSQL
        // start-up either): decided without waiting for more.
        assert_eq!(
            detect(b"GET ", None, &[Protocol::Kafka, Protocol::Pgsql]),
            Some(Err(()))
        );
        assert_eq!(
            detect(b"GE", None, &[Protocol::Http]),
            None,
            "may still be GET"
        );
    }

    #[test]
    fn detection_of_random_bytes_never_panics() {
        use proptest::prelude::*;
        proptest!(|(req in proptest::collection::vec(any::<u8>(), 0..64),
                    resp in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)))| {
            let _ = detect(&req, resp.as_deref(), &Protocol::ALL);
        });
    }

    #[test]
    fn text_is_bounded_and_printable() {
        assert_eq!(text(b"GET /a\x00\xff"), "GET /a??");
        assert_eq!(text(&[b'a'; 1000]).len(), MAX_TEXT);
    }
}
