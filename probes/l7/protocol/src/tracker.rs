//! The l7 probe's user-space connection tracker: turns the kernel's data events (one call per
//! `send`/`recv` of a traced socket) into the rows of upstream's l7probe tables — `l7_link`
//! (bytes and calls per connection group), `l7_rpc` (requests, responses, errors, latency) and
//! `l7_rpc_api` (the same per API). Pure logic: no I/O, no clock (timestamps come with the
//! events), every map bounded by [`Limits`] or a constant.
//!
//! Per connection:
//! - **Detection**: the first bytes of each direction (at most [`DETECT_BYTES`] of each, from
//!   at most [`DETECT_CHUNKS`] data calls) are kept and given to [`crate::detect`] until it
//!   answers. When it names a protocol, the kept calls are fed to the new parsers first (bytes
//!   of earlier calls beyond the detection budget are lost: a gap for the parser); when it
//!   cannot (or the budget is spent), the connection is not parsed (`undetected`). Its bytes
//!   are counted in `l7_link` either way, under the protocol decided ("unknown" when none).
//! - **Parsing**: one parser per direction; the cross-direction hooks of HTTP (request methods
//!   announced to the response parser), Kafka (request headers announced to the response
//!   parser, acks = 0 requests not waited for) and MySQL (prepared statements' verbs given back
//!   to the request parser) are applied. A parser error stops parsing the connection (except
//!   DNS over UDP, whose parser starts afresh at every datagram); it is counted per kind.
//! - **Gaps**: the bytes of a data call beyond its captured prefix are a gap for the parser
//!   ([`StreamParser::gap`]); a message the gap completes (a body skipped) is flushed at once
//!   by an empty feed, so it gets that call's timestamp.
//! - **Matching**: responses answer pending requests in order, except Kafka and DNS responses,
//!   which answer the request with their correlation id. A MySQL COM_STMT_PREPARE_OK's
//!   correlation is a statement id: it is matched in order like the other MySQL responses.
//! - **Kafka topics** (upstream's kafkaprobe table): the records and bytes per topic of the
//!   Produce requests and Fetch responses ([`crate::kafka_topics`]), per client and broker
//!   address. A connection whose both ends are traced (a client and a broker on one host) is
//!   counted once, from the broker's end.
//! - **Traces** (`l7_rpc_trace`, off unless [`Tracker::set_trace`]): each answered request
//!   as a [`Span`], at most [`TraceConfig::max_spans`] per period — errors first, then the
//!   slowest; the rest are counted (`trace_dropped`).
//! - **Latency** (an approximation): the timestamp of the data call that completed the
//!   response minus the timestamp of the data call that completed the request. A request or
//!   response spread over several calls is timed from its last call; the kernel's timestamps
//!   are those of the system calls, not of the wire.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use crate::kafka_topics::{topic_id, Walked};
use crate::{
    detect_over, http, kafka, mysql, parser_over, Direction, Message, ParseError, Protocol, Status,
    StreamParser, Transport,
};

/// Upper bounds (inclusive) of the latency histogram's buckets, µs; one more bucket counts
/// the latencies above the last bound.
pub const LATENCY_BOUNDS_US: [u64; 13] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000, 3_000_000,
    10_000_000,
];

/// Bytes of each direction kept for protocol detection.
pub const DETECT_BYTES: usize = 256;

/// Data calls a connection's protocol detection looks at: still undecided after this many,
/// the connection is not parsed.
pub const DETECT_CHUNKS: usize = 16;

/// Requests waiting for their response per connection (beyond: the oldest is dropped).
pub const MAX_PENDING_REQUESTS: usize = 1024;

/// The `api` of requests whose API the parser cannot name.
pub const UNKNOWN_API: &str = "unknown";

/// The `api` of requests of a process past [`Limits::max_apis_per_process`] distinct APIs.
pub const OTHER_API: &str = "other";

/// The `protocol` of connections whose protocol is not (or not yet) known.
pub const UNKNOWN_PROTOCOL: &str = "unknown";

/// Which end of a connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// It connected: it sends requests.
    Client,
    /// It accepted: it receives requests.
    Server,
}

impl Role {
    /// The tables' role value: "client" or "server".
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// Which way a data call moved bytes, seen from the traced process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// The process wrote them.
    Sent,
    /// The process read them.
    Received,
}

/// What the kernel says about a connection when it is first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The process (thread group) id.
    pub tgid: u32,
    /// The process's command name.
    pub comm: String,
    /// Which end the process is.
    pub role: Role,
    /// The process's address.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// Whether the bytes are the plain text of a TLS connection.
    pub tls: bool,
    /// UDP (else TCP).
    pub udp: bool,
}

/// Bounds of the tracker's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections tracked at once (beyond: `open` refused).
    pub max_connections: usize,
    /// Rows per table (beyond: new rows not added).
    pub max_keys: usize,
    /// Distinct `api` values per process (beyond: [`OTHER_API`]).
    pub max_apis_per_process: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 65_536,
            max_keys: 10_000,
            max_apis_per_process: 64,
        }
    }
}

/// The key of an `l7_link` and `l7_rpc` row: a group of connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The process.
    pub tgid: u32,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The server's address.
    pub server_ip: IpAddr,
    /// The server's port.
    pub server_port: u16,
    /// Which end the process is.
    pub role: Role,
    /// [`Protocol::name`], or [`UNKNOWN_PROTOCOL`].
    pub protocol: &'static str,
    /// Whether the connection is TLS.
    pub ssl: bool,
    /// UDP (else TCP).
    pub udp: bool,
}

impl Key {
    /// The `l4_role` of the tables: "tcp_client", "tcp_server" or "udp".
    pub fn l4_role(&self) -> &'static str {
        match (self.udp, self.role) {
            (true, _) => "udp",
            (false, Role::Client) => "tcp_client",
            (false, Role::Server) => "tcp_server",
        }
    }

    /// The `l7_role` of the tables: "client" or "server".
    pub fn l7_role(&self) -> &'static str {
        self.role.name()
    }
}

/// The key of an `l7_rpc_api` row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKey {
    /// The connection group.
    pub key: Key,
    /// The request's API ([`UNKNOWN_API`], [`OTHER_API`] included).
    pub api: String,
}

/// Which records a Kafka topic row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicWay {
    /// Records a client produced (Produce requests).
    Produce,
    /// Records a client fetched (Fetch responses).
    Fetch,
}

impl TopicWay {
    /// The `msg_type` of upstream's kafkaprobe table: "producer" or "consumer".
    pub fn name(self) -> &'static str {
        match self {
            TopicWay::Produce => "producer",
            TopicWay::Fetch => "consumer",
        }
    }
}

/// The key of a Kafka topic row (upstream's kafkaprobe keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicKey {
    /// Produce or Fetch.
    pub way: TopicWay,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The client's port.
    pub client_port: u16,
    /// The topic (`id:` and 32 hex digits where the protocol names it by id).
    pub topic: String,
    /// The broker's address.
    pub server_ip: IpAddr,
    /// The broker's port.
    pub server_port: u16,
}

/// A Kafka topic row's values (since the last [`Tracker::take_topics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// Records (in the record batches whose headers were seen).
    pub records: u64,
    /// Bytes of the record sets, as the messages declare them.
    pub bytes: u64,
    /// Produce requests or Fetch responses that carried the topic.
    pub messages: u64,
    /// Of those, messages only part of which was seen (bytes not captured, a malformed body):
    /// their records are a lower bound.
    pub partial: u64,
}

/// An `l7_link` row's values (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes the process sent (full lengths, captured or not).
    pub bytes_sent: u64,
    /// Bytes the process received.
    pub bytes_recv: u64,
    /// Data calls that sent.
    pub segs_sent: u64,
    /// Data calls that received.
    pub segs_recv: u64,
}

impl LinkStats {
    fn add(&mut self, o: &LinkStats) {
        self.bytes_sent = self.bytes_sent.saturating_add(o.bytes_sent);
        self.bytes_recv = self.bytes_recv.saturating_add(o.bytes_recv);
        self.segs_sent = self.segs_sent.saturating_add(o.segs_sent);
        self.segs_recv = self.segs_recv.saturating_add(o.segs_recv);
    }

    fn call(way: Way, len: u64) -> LinkStats {
        match way {
            Way::Sent => LinkStats {
                bytes_sent: len,
                segs_sent: 1,
                ..LinkStats::default()
            },
            Way::Received => LinkStats {
                bytes_recv: len,
                segs_recv: 1,
                ..LinkStats::default()
            },
        }
    }
}

/// An `l7_rpc` / `l7_rpc_api` row's values (cumulative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcStats {
    /// Requests completed.
    pub req_count: u64,
    /// Responses matched to a request.
    pub resp_count: u64,
    /// Matched responses that are errors.
    pub err_count: u64,
    /// Errors the protocol blames on the request ([`blame`]: HTTP 4xx, ...).
    pub client_err_count: u64,
    /// Errors the protocol blames on the server ([`blame`]: HTTP 5xx, ...).
    pub server_err_count: u64,
    /// Matched responses per latency bucket ([`LATENCY_BOUNDS_US`], then the overflow).
    pub latency_buckets: Vec<u64>,
    /// Sum of the latencies, µs.
    pub latency_sum_us: u64,
    /// Largest latency, µs.
    pub latency_max_us: u64,
}

impl Default for RpcStats {
    fn default() -> Self {
        RpcStats {
            req_count: 0,
            resp_count: 0,
            err_count: 0,
            client_err_count: 0,
            server_err_count: 0,
            latency_buckets: vec![0; LATENCY_BOUNDS_US.len() + 1],
            latency_sum_us: 0,
            latency_max_us: 0,
        }
    }
}

impl RpcStats {
    fn response(&mut self, error: Option<Option<Blame>>, latency_us: u64) {
        self.resp_count = self.resp_count.saturating_add(1);
        if let Some(blame) = error {
            self.err_count = self.err_count.saturating_add(1);
            match blame {
                Some(Blame::Client) => {
                    self.client_err_count = self.client_err_count.saturating_add(1)
                }
                Some(Blame::Server) => {
                    self.server_err_count = self.server_err_count.saturating_add(1)
                }
                None => {}
            }
        }
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| latency_us <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        if let Some(b) = self.latency_buckets.get_mut(i) {
            *b = b.saturating_add(1);
        }
        self.latency_sum_us = self.latency_sum_us.saturating_add(latency_us);
        self.latency_max_us = self.latency_max_us.max(latency_us);
    }
}

/// Which side an error response blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Blame {
    /// The request was wrong (HTTP 4xx, DNS NXDOMAIN/FORMERR/REFUSED, PostgreSQL SQLSTATE
    /// classes other than the server's).
    Client,
    /// The server failed (HTTP 5xx, DNS SERVFAIL, PostgreSQL SQLSTATE classes 53 insufficient
    /// resources, 54 program limit, 57 operator intervention, 58 system error, XX internal).
    Server,
}

/// Which side the error `code` of `protocol` blames; None where the protocol does not say
/// (Redis, MySQL and Kafka error codes mix both: they count in `err_count` only).
pub fn blame(protocol: Protocol, code: &str) -> Option<Blame> {
    match protocol {
        Protocol::Http => match code.as_bytes().first() {
            Some(b'4') => Some(Blame::Client),
            Some(b'5') => Some(Blame::Server),
            _ => None,
        },
        Protocol::Dns => match code {
            "SERVFAIL" | "NOTIMP" => Some(Blame::Server),
            "NXDOMAIN" | "FORMERR" | "REFUSED" => Some(Blame::Client),
            _ => None,
        },
        Protocol::Pgsql => match code.get(..2) {
            Some("53" | "54" | "57" | "58" | "XX") => Some(Blame::Server),
            Some(_) => Some(Blame::Client),
            None => None,
        },
        _ => None,
    }
}

/// What the tracker counted besides the tables (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Data or close calls for a connection not tracked.
    pub unknown_conn: u64,
    /// `open` calls refused: [`Limits::max_connections`] reached.
    pub conn_overflow: u64,
    /// Connections whose protocol could not be detected.
    pub undetected: u64,
    /// Parser errors: bytes not following the protocol.
    pub malformed: u64,
    /// Parser errors: a header too long.
    pub too_long: u64,
    /// Parser errors: the stream lost its place (a gap, an earlier error, a protocol switch).
    pub desynchronised: u64,
    /// Requests still waiting for a response when their connection closed.
    pub unanswered: u64,
    /// Responses without a pending request.
    pub unmatched_response: u64,
    /// Pending requests dropped: [`MAX_PENDING_REQUESTS`] reached.
    pub pending_overflow: u64,
    /// Pending requests dropped because their connection's parsing failed.
    pub pending_abandoned: u64,
    /// Responses counted without their status: the response stream lost its place (bytes not
    /// captured, e.g. a large result set) and the next request showed they had ended.
    pub unparsed_responses: u64,
    /// Requests counted under [`OTHER_API`].
    pub api_overflow: u64,
    /// Table updates dropped: [`Limits::max_keys`] rows reached.
    pub key_overflow: u64,
    /// Traced requests not reported: [`TraceConfig::max_spans`] reached in their period.
    pub trace_dropped: u64,
    /// Kafka topic names forgotten: the id-to-name map reached [`MAX_TOPIC_NAMES`] and was
    /// emptied (names are learnt again from the next Metadata responses).
    pub topic_names_forgotten: u64,
}

/// Most Kafka topic ids whose names the tracker keeps (learnt from Metadata responses v10+,
/// for the Produce and Fetch v13+ topics named by id).
pub const MAX_TOPIC_NAMES: usize = 65_536;

/// Which requests `l7_rpc_trace` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceConfig {
    /// Answered requests faster than this (and not failed) are not reported, µs (0: all).
    pub min_latency_us: u64,
    /// Spans kept per period (beyond: the fastest successful ones are dropped and counted).
    pub max_spans: usize,
}

/// How a traced request ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Its response was parsed and is not an error.
    Ok,
    /// Its response ended, but its place in the stream was lost: no status.
    Unparsed,
    /// An error response: its code, and the side it blames where the protocol says.
    Error {
        /// The protocol's error code ([`Status::Error`]).
        code: String,
        /// The side blamed.
        blame: Option<Blame>,
    },
}

/// One answered request, for `l7_rpc_trace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The connection group's key (process, addresses, role, protocol).
    pub key: Key,
    /// The connection (the kernel's socket id).
    pub conn: u64,
    /// The client's port.
    pub client_port: u16,
    /// The `api` it was counted under in `l7_rpc_api` (templated, or `other`).
    pub api: String,
    /// The parser's own name of it (templated HTTP method and path, SQL verb, command, api
    /// name, query type), kept when `api` is `other`; None where it could not name it.
    pub request: Option<String>,
    /// End of the call that completed the request, ns (the events' clock).
    pub request_ns: u64,
    /// End of the call that completed the response, ns.
    pub response_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl Span {
    /// Request to response, µs.
    pub fn latency_us(&self) -> u64 {
        self.response_ns.saturating_sub(self.request_ns) / 1_000
    }
}

/// Reporting order under the cap: errors, then no status, then by latency (ns).
fn rank(outcome: &Outcome, latency_ns: u64) -> (u8, u64) {
    let class = match outcome {
        Outcome::Error { .. } => 2,
        Outcome::Unparsed => 1,
        Outcome::Ok => 0,
    };
    (class, latency_ns)
}

/// A span in the period's heap: the lowest rank (then the latest) is evicted first.
#[derive(Debug, PartialEq, Eq)]
struct Ranked {
    rank: (u8, u64),
    seq: Reverse<u64>,
    span: Box<Span>,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.rank, self.seq).cmp(&(other.rank, other.seq))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The period's spans, bounded.
#[derive(Debug, Default)]
struct Traces {
    config: Option<TraceConfig>,
    /// Min-heap by rank.
    heap: BinaryHeap<Reverse<Ranked>>,
    seq: u64,
}

impl Traces {
    /// Keeps the span `make` builds (a request that ended `outcome` after `latency_ns`) if
    /// tracing is on and it ranks among the period's kept ones; counts what is not kept in
    /// `dropped`. A span that would not be kept is never built.
    fn offer(
        &mut self,
        outcome: Outcome,
        latency_ns: u64,
        make: impl FnOnce(Outcome) -> Span,
        dropped: &mut u64,
    ) {
        let Some(cfg) = self.config else { return };
        let error = matches!(outcome, Outcome::Error { .. });
        if !error && latency_ns / 1_000 < cfg.min_latency_us {
            return;
        }
        self.seq += 1;
        let key = (rank(&outcome, latency_ns), Reverse(self.seq));
        if self.heap.len() >= cfg.max_spans {
            *dropped = dropped.saturating_add(1);
            let Some(mut lowest) = self.heap.peek_mut() else {
                return;
            };
            if key > (lowest.0.rank, lowest.0.seq) {
                *lowest = Reverse(Ranked {
                    rank: key.0,
                    seq: key.1,
                    span: Box::new(make(outcome)),
                });
            }
            return;
        }
        self.heap.push(Reverse(Ranked {
            rank: key.0,
            seq: key.1,
            span: Box::new(make(outcome)),
        }));
    }
}

/// The tracker's tables and counters at one moment (cumulative since it started).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `l7_link` rows.
    pub links: BTreeMap<Key, LinkStats>,
    /// `l7_rpc` rows.
    pub rpcs: BTreeMap<Key, RpcStats>,
    /// `l7_rpc_api` rows.
    pub apis: BTreeMap<ApiKey, RpcStats>,
    /// Command names of the processes seen (at most [`Limits::max_keys`]).
    pub comms: BTreeMap<u32, String>,
    /// The counters.
    pub stats: TrackerStats,
}

/// The connection tracker: feed it the kernel's events, read its [`Snapshot`].
pub struct Tracker {
    conns: HashMap<u64, Conn>,
    tables: Tables,
}

impl Tracker {
    /// An empty tracker bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Tracker {
            conns: HashMap::new(),
            tables: Tables {
                limits,
                links: BTreeMap::new(),
                rpcs: BTreeMap::new(),
                apis: BTreeMap::new(),
                topics: BTreeMap::new(),
                topic_names: HashMap::new(),
                api_names: HashMap::new(),
                comms: HashMap::new(),
                stats: TrackerStats::default(),
                traces: Traces::default(),
            },
        }
    }

    /// Connection `conn` (the kernel's socket id) was seen; its protocol is looked for among
    /// `allowed`. A `conn` already tracked is closed first.
    pub fn open(&mut self, conn: u64, info: ConnInfo, allowed: &[Protocol]) {
        if self.conns.contains_key(&conn) {
            self.close(conn);
        }
        let t = &mut self.tables;
        if self.conns.len() >= t.limits.max_connections {
            t.stats.conn_overflow = t.stats.conn_overflow.saturating_add(1);
            return;
        }
        if t.comms.len() < t.limits.max_keys || t.comms.contains_key(&info.tgid) {
            t.comms.insert(info.tgid, info.comm.clone());
        }
        self.conns.insert(conn, Conn::new(conn, &info, allowed));
    }

    /// The process sent or received a chunk of `total_len` bytes on `conn` at `ts_ns`, of which
    /// `bytes` (a prefix) were captured. For DNS (UDP) a call is one datagram.
    pub fn data(&mut self, conn: u64, way: Way, ts_ns: u64, bytes: &[u8], total_len: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            let s = &mut self.tables.stats;
            s.unknown_conn = s.unknown_conn.saturating_add(1);
            return;
        };
        let total_len = total_len.max(bytes.len() as u64);
        c.data(&mut self.tables, way, ts_ns, bytes, total_len);
    }

    /// Connection `conn` ended: its pending requests are counted unanswered.
    pub fn close(&mut self, conn: u64) {
        let Some(mut c) = self.conns.remove(&conn) else {
            let s = &mut self.tables.stats;
            s.unknown_conn = s.unknown_conn.saturating_add(1);
            return;
        };
        c.flush_early(&mut self.tables);
        if c.resp_lost {
            c.complete_lost(&mut self.tables);
        }
        let s = &mut self.tables.stats;
        s.unanswered = s.unanswered.saturating_add(c.pending.len() as u64);
    }

    /// Connection `conn` is closing (the kernel says so; the application may still read what
    /// is queued): responses whose place was lost are complete now.
    pub fn closing(&mut self, conn: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.resp_lost {
                c.complete_lost(&mut self.tables);
            }
        }
    }

    /// Drops everything of process `tgid` (it exited): its rows and its connections.
    pub fn forget_tgid(&mut self, tgid: u32) {
        self.conns.retain(|_, c| c.key.tgid != tgid);
        let t = &mut self.tables;
        t.links.retain(|k, _| k.tgid != tgid);
        t.rpcs.retain(|k, _| k.tgid != tgid);
        t.apis.retain(|k, _| k.key.tgid != tgid);
        t.api_names.remove(&tgid);
        t.comms.remove(&tgid);
    }

    /// The Kafka topic rows since the last call (a connection traced at both ends counted
    /// once, at the broker's); the rows start again from none. At most
    /// [`Limits::max_keys`] rows per call (beyond: `key_overflow`).
    pub fn take_topics(&mut self) -> BTreeMap<TopicKey, TopicStats> {
        let rows = self.tables.topic_rows();
        self.tables.topics.clear();
        rows
    }

    /// Reports answered requests as [`Span`]s ([`Tracker::take_spans`]) per `config`, or no
    /// more (`None`, the spans kept so far are dropped).
    pub fn set_trace(&mut self, config: Option<TraceConfig>) {
        let traces = &mut self.tables.traces;
        traces.config = config;
        if config.is_none() {
            traces.heap.clear();
        }
    }

    /// The spans since the last call, in the order their responses came; the period starts
    /// again with none.
    pub fn take_spans(&mut self) -> Vec<Span> {
        let mut kept: Vec<Ranked> = std::mem::take(&mut self.tables.traces.heap)
            .into_iter()
            .map(|r| r.0)
            .collect();
        kept.sort_by_key(|r| std::cmp::Reverse(r.seq));
        kept.into_iter().map(|r| *r.span).collect()
    }

    /// The processes that have rows or connections.
    pub fn processes(&self) -> Vec<u32> {
        self.tables.comms.keys().copied().collect()
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The counters so far (without copying the tables).
    pub fn stats(&self) -> TrackerStats {
        self.tables.stats
    }

    /// The tables and counters so far.
    pub fn snapshot(&self) -> Snapshot {
        let t = &self.tables;
        Snapshot {
            links: t.links.clone(),
            rpcs: t.rpcs.clone(),
            apis: t.apis.clone(),
            comms: t.comms.iter().map(|(k, v)| (*k, v.clone())).collect(),
            stats: t.stats,
        }
    }
}

/// The aggregates and what bounds them.
struct Tables {
    limits: Limits,
    links: BTreeMap<Key, LinkStats>,
    rpcs: BTreeMap<Key, RpcStats>,
    apis: BTreeMap<ApiKey, RpcStats>,
    /// Kafka topic rows by the end that saw them.
    topics: BTreeMap<(TopicKey, Role), TopicStats>,
    /// Kafka topic names by id (`id:` and 32 hex digits, as the walker names them).
    topic_names: HashMap<String, String>,
    /// Distinct APIs per process, at most `max_apis_per_process` each, `max_keys` processes.
    api_names: HashMap<u32, HashSet<String>>,
    comms: HashMap<u32, String>,
    stats: TrackerStats,
    traces: Traces,
}

/// `map`'s row for `key`: the existing one (without cloning the key), else one created
/// when the map has room (else counted in `overflow`).
fn row_of<'a, K: Ord + Clone, V: Default>(
    map: &'a mut BTreeMap<K, V>,
    key: &K,
    max: usize,
    overflow: &mut u64,
) -> Option<&'a mut V> {
    if map.contains_key(key) {
        return map.get_mut(key);
    }
    row(map, key.clone(), max, overflow)
}

/// `map`'s row for `key`, created when the map has room (else counted in `overflow`).
fn row<'a, K: Ord, V: Default>(
    map: &'a mut BTreeMap<K, V>,
    key: K,
    max: usize,
    overflow: &mut u64,
) -> Option<&'a mut V> {
    if map.len() >= max && !map.contains_key(&key) {
        *overflow = overflow.saturating_add(1);
        return None;
    }
    Some(map.entry(key).or_default())
}

impl Tables {
    fn link(&mut self, key: &Key, add: &LinkStats) {
        let overflow = &mut self.stats.key_overflow;
        if let Some(r) = row_of(&mut self.links, key, self.limits.max_keys, overflow) {
            r.add(add);
        }
    }

    /// The `api` a request of `tgid` is counted under: its own, or [`OTHER_API`] past the cap.
    fn api_name(&mut self, tgid: u32, api: Option<&str>) -> String {
        let name = api.unwrap_or(UNKNOWN_API);
        let max = self.limits.max_apis_per_process;
        let room = self.api_names.len() < self.limits.max_keys;
        let fits = match self.api_names.get_mut(&tgid) {
            Some(set) if set.contains(name) => true,
            Some(set) if set.len() < max => set.insert(name.to_string()),
            None if room && max > 0 => {
                let set = HashSet::from([name.to_string()]);
                self.api_names.insert(tgid, set).is_none()
            }
            _ => false,
        };
        if fits {
            return name.to_string();
        }
        self.stats.api_overflow = self.stats.api_overflow.saturating_add(1);
        OTHER_API.to_string()
    }

    /// Both rows of a request or response under (`key`, `api`).
    fn rows(&mut self, key: &Key, api: &str, f: impl Fn(&mut RpcStats)) {
        let (max, overflow) = (self.limits.max_keys, &mut self.stats.key_overflow);
        if let Some(r) = row_of(&mut self.rpcs, key, max, overflow) {
            f(r);
        }
        let api_key = ApiKey {
            key: key.clone(),
            api: api.to_string(),
        };
        if let Some(r) = row(&mut self.apis, api_key, max, overflow) {
            f(r);
        }
    }

    /// Adds a Produce request's or Fetch response's topics, seen by the `role` end of a
    /// connection between `client` and `server`.
    fn topics(
        &mut self,
        way: TopicWay,
        role: Role,
        client: SocketAddr,
        server: SocketAddr,
        walked: &Walked,
    ) {
        let (max, overflow) = (self.limits.max_keys, &mut self.stats.key_overflow);
        for f in &walked.topics {
            let topic = self.topic_names.get(&f.topic).unwrap_or(&f.topic);
            let key = TopicKey {
                way,
                client_ip: client.ip(),
                client_port: client.port(),
                topic: topic.clone(),
                server_ip: server.ip(),
                server_port: server.port(),
            };
            if let Some(r) = row(&mut self.topics, (key, role), max, overflow) {
                r.records = r.records.saturating_add(f.records);
                r.bytes = r.bytes.saturating_add(f.bytes);
                r.messages = r.messages.saturating_add(1);
                if !walked.complete {
                    r.partial = r.partial.saturating_add(1);
                }
            }
        }
    }

    /// Learns the topic names of a Metadata response.
    fn name_topics(&mut self, names: &[([u8; 16], String)]) {
        for (id, name) in names {
            let id = topic_id(id);
            if self.topic_names.len() >= MAX_TOPIC_NAMES && !self.topic_names.contains_key(&id) {
                let n = self.topic_names.len() as u64;
                self.stats.topic_names_forgotten =
                    self.stats.topic_names_forgotten.saturating_add(n);
                self.topic_names.clear();
            }
            self.topic_names.insert(id, name.clone());
        }
    }

    /// The topic rows, each from the broker's end where both ends saw it.
    fn topic_rows(&self) -> BTreeMap<TopicKey, TopicStats> {
        let mut rows = BTreeMap::new();
        for ((k, role), v) in &self.topics {
            let seen_by_server =
                *role == Role::Client && self.topics.contains_key(&(k.clone(), Role::Server));
            if !seen_by_server {
                rows.insert(k.clone(), *v);
            }
        }
        rows
    }

    fn count_error(&mut self, e: &ParseError) {
        let s = &mut self.stats;
        let n = match e {
            ParseError::Malformed(_) => &mut s.malformed,
            ParseError::TooLong(_) => &mut s.too_long,
            ParseError::Desynchronised(_) => &mut s.desynchronised,
        };
        *n = n.saturating_add(1);
    }
}

/// A request waiting for its response.
#[derive(Clone)]
struct Pending {
    /// Timestamp of the data call that completed it, ns.
    ts: u64,
    /// The `api` it was counted under.
    api: String,
    /// The parser's own `api` (a MySQL COM_STMT_PREPARE's verb).
    verb: Option<String>,
    /// The id its response carries (Kafka, DNS).
    correlation: Option<u32>,
}

/// A data call kept while the protocol is detected.
struct Chunk {
    direction: Direction,
    ts: u64,
    /// Its captured bytes, cut to what detection keeps.
    bytes: Vec<u8>,
    total_len: u64,
}

/// The concrete parsers of a connection, where the directions talk to each other.
enum Parsers {
    Http(http::RequestParser, http::ResponseParser),
    Kafka(kafka::RequestParser, kafka::ResponseParser),
    Mysql(mysql::RequestParser, mysql::ResponseParser),
    Plain(Box<dyn StreamParser>, Box<dyn StreamParser>),
}

impl Parsers {
    fn new(protocol: Protocol, transport: Transport) -> Self {
        match protocol {
            Protocol::Http => {
                Parsers::Http(http::RequestParser::new(), http::ResponseParser::new())
            }
            Protocol::Kafka => {
                Parsers::Kafka(kafka::RequestParser::new(), kafka::ResponseParser::new())
            }
            Protocol::Mysql => {
                Parsers::Mysql(mysql::RequestParser::new(), mysql::ResponseParser::new())
            }
            p => Parsers::Plain(
                parser_over(p, Direction::Request, transport),
                parser_over(p, Direction::Response, transport),
            ),
        }
    }

    fn stream(&mut self, direction: Direction) -> &mut dyn StreamParser {
        let request = direction == Direction::Request;
        match self {
            Parsers::Http(q, _) if request => q,
            Parsers::Http(_, r) => r,
            Parsers::Kafka(q, _) if request => q,
            Parsers::Kafka(_, r) => r,
            Parsers::Mysql(q, _) if request => q,
            Parsers::Mysql(_, r) => r,
            Parsers::Plain(q, _) if request => q.as_mut(),
            Parsers::Plain(_, r) => r.as_mut(),
        }
    }

    /// Hands what the request stream saw (`msgs` just completed) to the response stream;
    /// Kafka requests that get no response are taken out of `pending`.
    fn after_requests(&mut self, msgs: &[Message], pending: &mut VecDeque<Pending>) {
        match self {
            Parsers::Http(_, r) => {
                for m in msgs.iter().filter(|m| m.direction == Direction::Request) {
                    let api = m.api.as_deref().unwrap_or("");
                    r.expect(api.split(' ').next().unwrap_or("").as_bytes());
                }
            }
            Parsers::Kafka(q, r) => {
                for (id, key, version) in q.take_headers() {
                    r.expect(id, key, version);
                }
                for id in q.take_no_response() {
                    pending.retain(|p| p.correlation != Some(id));
                }
            }
            Parsers::Mysql(..) | Parsers::Plain(..) => {}
        }
    }

    /// A fresh request parser (after the request stream lost its place). MySQL's prepared
    /// statements are forgotten with it: their executions count as api `unknown`.
    fn reset_request(&mut self, protocol: Protocol, transport: Transport) {
        match self {
            Parsers::Http(q, _) => *q = http::RequestParser::new(),
            Parsers::Kafka(q, _) => *q = kafka::RequestParser::new(),
            Parsers::Mysql(q, _) => *q = mysql::RequestParser::new(),
            Parsers::Plain(q, _) => *q = parser_over(protocol, Direction::Request, transport),
        }
    }

    /// A fresh response parser (after the response stream lost its place).
    fn reset_response(&mut self, protocol: Protocol, transport: Transport) {
        match self {
            Parsers::Http(_, r) => *r = http::ResponseParser::new(),
            Parsers::Kafka(_, r) => *r = kafka::ResponseParser::new(),
            Parsers::Mysql(_, r) => *r = mysql::ResponseParser::new(),
            Parsers::Plain(_, r) => *r = parser_over(protocol, Direction::Response, transport),
        }
    }
}

/// Whether `protocol` answers one request at a time and in order, so that a client's next
/// request shows the responses before it ended: its response stream can find its place again
/// at the next request after losing it. Kafka clients pipeline (responses matched by id) and
/// DNS is per datagram.
fn resumable(protocol: Option<Protocol>) -> bool {
    matches!(
        protocol,
        Some(Protocol::Http | Protocol::Redis | Protocol::Pgsql | Protocol::Mysql)
    )
}

/// Where a connection is.
enum State {
    /// Protocol not known yet: the data calls seen, for detection and replay.
    Detecting(Vec<Chunk>),
    /// Parsing.
    Parsing(Box<Parsers>),
    /// Not parsed (undetected, or a parser failed).
    Stopped,
}

/// One tracked connection.
struct Conn {
    /// Its rows' key (`protocol` set once decided).
    key: Key,
    allowed: Vec<Protocol>,
    protocol: Option<Protocol>,
    state: State,
    /// Link counts while the protocol is not decided.
    early: LinkStats,
    pending: VecDeque<Pending>,
    /// The response stream lost its place: its bytes are dropped until the next request.
    resp_lost: bool,
    /// The request stream lost its place (e.g. a large COPY): its bytes are dropped until a
    /// response shows the server took the whole request.
    req_lost: bool,
    /// Timestamp of the last response-direction call, ns.
    last_response_ts: u64,
    /// The client's and the server's addresses.
    ends: (SocketAddr, SocketAddr),
    /// The kernel's id of the connection.
    id: u64,
}

impl Conn {
    fn new(id: u64, info: &ConnInfo, allowed: &[Protocol]) -> Self {
        let (client, server) = match info.role {
            Role::Client => (info.local, info.remote),
            Role::Server => (info.remote, info.local),
        };
        Conn {
            key: Key {
                tgid: info.tgid,
                client_ip: client.ip(),
                server_ip: server.ip(),
                server_port: server.port(),
                role: info.role,
                protocol: UNKNOWN_PROTOCOL,
                ssl: info.tls,
                udp: info.udp,
            },
            allowed: allowed.to_vec(),
            protocol: None,
            state: State::Detecting(Vec::new()),
            early: LinkStats::default(),
            pending: VecDeque::new(),
            resp_lost: false,
            req_lost: false,
            last_response_ts: 0,
            ends: (client, server),
            id,
        }
    }

    fn direction(&self, way: Way) -> Direction {
        match (self.key.role, way) {
            (Role::Server, Way::Received) | (Role::Client, Way::Sent) => Direction::Request,
            _ => Direction::Response,
        }
    }

    fn data(&mut self, t: &mut Tables, way: Way, ts: u64, bytes: &[u8], total_len: u64) {
        let call = LinkStats::call(way, total_len);
        if matches!(self.state, State::Detecting(_)) {
            self.early.add(&call);
        } else {
            t.link(&self.key, &call);
        }
        let direction = self.direction(way);
        if let State::Detecting(chunks) = &mut self.state {
            chunks.push(Chunk {
                direction,
                ts,
                bytes: bytes.to_vec(),
                total_len,
            });
            self.detect(t);
        } else {
            self.parse(t, direction, ts, bytes, total_len);
        }
    }

    /// Runs detection on the kept calls; parses them once a protocol is decided.
    fn detect(&mut self, t: &mut Tables) {
        let transport = self.transport();
        let State::Detecting(chunks) = &mut self.state else {
            return;
        };
        let (request, request_closed) = prefix(chunks, Direction::Request);
        let (response, response_closed) = prefix(chunks, Direction::Response);
        let response = (!response.is_empty()).then_some(response.as_slice());
        let decided = match detect_over(&request, response, &self.allowed, transport) {
            Some(d) => d,
            None if chunks.len() >= DETECT_CHUNKS || (request_closed && response_closed) => Err(()),
            None => {
                cut_last(chunks);
                return;
            }
        };
        let State::Detecting(chunks) = std::mem::replace(&mut self.state, State::Stopped) else {
            return;
        };
        match decided {
            Ok(p) => {
                self.protocol = Some(p);
                self.key.protocol = p.name();
                self.state = State::Parsing(Box::new(Parsers::new(p, transport)));
            }
            Err(()) => t.stats.undetected = t.stats.undetected.saturating_add(1),
        }
        self.flush_early(t);
        for c in chunks {
            self.parse(t, c.direction, c.ts, &c.bytes, c.total_len);
        }
    }

    /// The connection's transport.
    fn transport(&self) -> Transport {
        if self.key.udp {
            Transport::Udp
        } else {
            Transport::Tcp
        }
    }

    /// Whether each call is a message of its own that a parser error does not outlive (DNS
    /// over UDP).
    fn datagrams(&self) -> bool {
        self.key.udp && self.protocol == Some(Protocol::Dns)
    }

    /// Adds the link counts of the detection phase to the link row.
    fn flush_early(&mut self, t: &mut Tables) {
        let early = std::mem::take(&mut self.early);
        if early != LinkStats::default() {
            t.link(&self.key, &early);
        }
    }

    fn parse(&mut self, t: &mut Tables, direction: Direction, ts: u64, bytes: &[u8], len: u64) {
        match direction {
            Direction::Response => {
                self.last_response_ts = ts;
                if self.resp_lost {
                    return;
                }
            }
            Direction::Request if self.req_lost => return,
            Direction::Request => {}
        }
        let datagrams = self.datagrams();
        let State::Parsing(parsers) = &mut self.state else {
            return;
        };
        let mut out = Vec::new();
        let stream = parsers.stream(direction);
        let mut result = stream.feed(bytes, &mut out);
        let missing = len.saturating_sub(bytes.len() as u64);
        if result.is_ok() && missing > 0 {
            result = stream.gap(missing);
            // A message the gap completed is yielded by the next feed: flush it now (not for
            // DNS over UDP, where a feed is a datagram and a gap means nothing).
            if result.is_ok() && !datagrams {
                result = stream.feed(&[], &mut out);
            }
        }
        for m in out.iter() {
            self.message(t, m, ts);
        }
        if let State::Parsing(parsers) = &mut self.state {
            parsers.after_requests(&out, &mut self.pending);
        }
        if let Err(e) = result {
            t.count_error(&e);
            let lost_place = matches!(e, ParseError::Desynchronised(_));
            if lost_place && resumable(self.protocol) {
                // Dropped until the other direction shows where this one ends.
                match direction {
                    Direction::Response => self.resp_lost = true,
                    Direction::Request => self.req_lost = true,
                }
            } else if !datagrams {
                self.state = State::Stopped;
                let n = std::mem::take(&mut self.pending).len() as u64;
                t.stats.pending_abandoned = t.stats.pending_abandoned.saturating_add(n);
            }
        }
    }

    fn message(&mut self, t: &mut Tables, m: &Message, ts: u64) {
        if let Some(walked) = &m.topics {
            t.name_topics(&walked.names);
            let way = match m.direction {
                Direction::Request => TopicWay::Produce,
                Direction::Response => TopicWay::Fetch,
            };
            let (client, server) = self.ends;
            t.topics(way, self.key.role, client, server, walked);
        }
        match m.direction {
            Direction::Request => self.request(t, m, ts),
            Direction::Response => self.response(t, m, ts),
        }
    }

    /// The span of request `p` answered at `response_ns`.
    fn span(&self, p: Pending, response_ns: u64, outcome: Outcome) -> Span {
        Span {
            key: self.key.clone(),
            conn: self.id,
            client_port: self.ends.0.port(),
            api: p.api,
            request: p.verb,
            request_ns: p.ts,
            response_ns,
            outcome,
        }
    }

    /// The response stream lost its place and a request (or the close) shows the responses
    /// to the pending requests ended: they count as responses without a status, timed to the
    /// last response call after them; a request no response call followed stays unanswered.
    fn complete_lost(&mut self, t: &mut Tables) {
        let last = self.last_response_ts;
        let mut unanswered = VecDeque::new();
        for p in std::mem::take(&mut self.pending) {
            if last <= p.ts {
                unanswered.push_back(p);
                continue;
            }
            let (p_ts, latency_us) = (p.ts, (last - p.ts) / 1_000);
            t.rows(&self.key, &p.api, |r| r.response(None, latency_us));
            t.stats.unparsed_responses = t.stats.unparsed_responses.saturating_add(1);
            let make = |outcome| self.span(p, last, outcome);
            let dropped = &mut t.stats.trace_dropped;
            t.traces
                .offer(Outcome::Unparsed, last - p_ts, make, dropped);
        }
        self.pending = unanswered;
        self.resp_lost = false;
        let transport = self.transport();
        if let (State::Parsing(parsers), Some(protocol)) = (&mut self.state, self.protocol) {
            parsers.reset_response(protocol, transport);
        }
    }

    fn request(&mut self, t: &mut Tables, m: &Message, ts: u64) {
        if self.resp_lost {
            self.complete_lost(t);
        }
        let api = t.api_name(self.key.tgid, m.api.as_deref());
        t.rows(&self.key, &api, |r| {
            r.req_count = r.req_count.saturating_add(1)
        });
        if self.pending.len() >= MAX_PENDING_REQUESTS {
            self.pending.pop_front();
            t.stats.pending_overflow = t.stats.pending_overflow.saturating_add(1);
        }
        let by_id = matches!(self.protocol, Some(Protocol::Kafka | Protocol::Dns));
        self.pending.push_back(Pending {
            ts,
            api,
            verb: m.api.clone(),
            correlation: m.correlation.filter(|_| by_id),
        });
    }

    fn response(&mut self, t: &mut Tables, m: &Message, ts: u64) {
        let by_id = matches!(self.protocol, Some(Protocol::Kafka | Protocol::Dns));
        let found = match m.correlation {
            Some(id) if by_id => {
                let i = self.pending.iter().position(|p| p.correlation == Some(id));
                i.and_then(|i| self.pending.remove(i))
            }
            _ => self.pending.pop_front(),
        };
        let Some(p) = found else {
            t.stats.unmatched_response = t.stats.unmatched_response.saturating_add(1);
            return;
        };
        if self.req_lost {
            // The server answered: the lost request ended; the next request call starts anew.
            self.req_lost = false;
            let transport = self.transport();
            if let (State::Parsing(parsers), Some(protocol)) = (&mut self.state, self.protocol) {
                parsers.reset_request(protocol, transport);
            }
        }
        let latency_us = ts.saturating_sub(p.ts) / 1_000;
        let error = match (&m.status, self.protocol) {
            (Some(Status::Error(code)), Some(protocol)) => Some(blame(protocol, code)),
            (Some(Status::Error(_)), None) => Some(None),
            _ => None,
        };
        t.rows(&self.key, &p.api, |r| r.response(error, latency_us));
        if t.traces.config.is_some() {
            let outcome = match (&m.status, error) {
                (Some(Status::Error(code)), Some(blame)) => Outcome::Error {
                    code: code.clone(),
                    blame,
                },
                _ => Outcome::Ok,
            };
            let make = |outcome| self.span(p.clone(), ts, outcome);
            let latency_ns = ts.saturating_sub(p.ts);
            let dropped = &mut t.stats.trace_dropped;
            t.traces.offer(outcome, latency_ns, make, dropped);
        }
        if let (State::Parsing(parsers), Some(id), Some(verb)) =
            (&mut self.state, m.correlation, p.verb)
        {
            if let Parsers::Mysql(q, _) = parsers.as_mut() {
                q.statement_prepared(id, verb);
            }
        }
    }
}

/// The first bytes of `direction` in `chunks` (at most [`DETECT_BYTES`], up to the first lost
/// bytes), and whether more can no longer come.
fn prefix(chunks: &[Chunk], direction: Direction) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    for c in chunks.iter().filter(|c| c.direction == direction) {
        let room = DETECT_BYTES.saturating_sub(out.len());
        out.extend(c.bytes.iter().take(room));
        if c.bytes.len() > room || (c.bytes.len() as u64) < c.total_len {
            return (out, true);
        }
    }
    let full = out.len() >= DETECT_BYTES;
    (out, full)
}

/// Cuts the last kept call to what detection keeps of its direction (the rest becomes a gap).
fn cut_last(chunks: &mut [Chunk]) {
    let Some((last, before)) = chunks.split_last_mut() else {
        return;
    };
    let kept: usize = before
        .iter()
        .filter(|c| c.direction == last.direction)
        .map(|c| c.bytes.len())
        .sum();
    last.bytes.truncate(DETECT_BYTES.saturating_sub(kept));
    last.bytes.shrink_to_fit();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn info(tgid: u32, role: Role, port: u16) -> ConnInfo {
        let (local, remote) = match role {
            Role::Server => (format!("10.0.0.1:{port}"), "10.0.0.2:40000".to_string()),
            Role::Client => ("10.0.0.2:40000".to_string(), format!("10.0.0.1:{port}")),
        };
        ConnInfo {
            tgid,
            comm: "app".into(),
            role,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            tls: false,
            udp: false,
        }
    }

    fn key(tgid: u32, role: Role, port: u16, protocol: &'static str) -> Key {
        Key {
            tgid,
            client_ip: "10.0.0.2".parse().unwrap(),
            server_ip: "10.0.0.1".parse().unwrap(),
            server_port: port,
            role,
            protocol,
            ssl: false,
            udp: false,
        }
    }

    fn api(k: &Key, api: &str) -> ApiKey {
        ApiKey {
            key: k.clone(),
            api: api.into(),
        }
    }

    /// Feeds a whole chunk.
    fn send(t: &mut Tracker, conn: u64, way: Way, ts: u64, bytes: &[u8]) {
        t.data(conn, way, ts, bytes, bytes.len() as u64);
    }

    fn bucket(us: u64) -> usize {
        LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap()
    }

    /// `n` GET requests on connection 1 (`/item/<i>`), request `i` answered after `lat(i)`
    /// ms with `status(i)`.
    fn http_exchanges(
        t: &mut Tracker,
        n: u64,
        lat: impl Fn(u64) -> u64,
        status: impl Fn(u64) -> u16,
    ) {
        for i in 0..n {
            let at = (i + 1) * 100 * MS;
            let req = format!("GET /item/{i}?q=1 HTTP/1.1\r\n\r\n");
            send(t, 1, Way::Received, at, req.as_bytes());
            let resp = format!("HTTP/1.1 {} X\r\nContent-Length: 0\r\n\r\n", status(i));
            send(t, 1, Way::Sent, at + lat(i) * MS, resp.as_bytes());
        }
    }

    #[test]
    fn traces_are_off_by_default_then_keep_errors_and_the_slowest_under_the_cap() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Server, 8080), &Protocol::ALL);
        http_exchanges(&mut t, 3, |i| i + 1, |_| 200);
        assert!(t.take_spans().is_empty());
        assert_eq!(t.stats().trace_dropped, 0);

        t.set_trace(Some(TraceConfig {
            min_latency_us: 0,
            max_spans: 3,
        }));
        // Latencies 5, 1, 9, 2, 7 ms; request 3 fails with 503.
        let lats = [5, 1, 9, 2, 7];
        http_exchanges(
            &mut t,
            5,
            |i| lats[i as usize],
            |i| if i == 3 { 503 } else { 200 },
        );
        let spans = t.take_spans();
        let got: Vec<(Option<&str>, u64, &Outcome)> = spans
            .iter()
            .map(|s| (s.request.as_deref(), s.latency_us(), &s.outcome))
            .collect();
        let err = Outcome::Error {
            code: "503".into(),
            blame: Some(Blame::Server),
        };
        assert_eq!(
            got,
            [
                (Some("GET /item/{id}"), 9_000, &Outcome::Ok),
                (Some("GET /item/{id}"), 2_000, &err),
                (Some("GET /item/{id}"), 7_000, &Outcome::Ok),
            ]
        );
        let s = &spans[0];
        assert_eq!((s.conn, s.client_port), (1, 40000));
        assert_eq!(s.key, key(7, Role::Server, 8080, "http"));
        assert_eq!(s.response_ns - s.request_ns, 9 * MS);
        assert_eq!(t.stats().trace_dropped, 2);
        // A new period starts with none.
        assert!(t.take_spans().is_empty());

        // Faster than the threshold and not failed: not reported, not counted as dropped.
        t.set_trace(Some(TraceConfig {
            min_latency_us: 4_000,
            max_spans: 100,
        }));
        http_exchanges(
            &mut t,
            5,
            |i| lats[i as usize],
            |i| if i == 1 { 404 } else { 200 },
        );
        let lat: Vec<u64> = t.take_spans().iter().map(Span::latency_us).collect();
        assert_eq!(lat, [5_000, 1_000, 9_000, 7_000]);
        assert_eq!(t.stats().trace_dropped, 2);

        t.set_trace(None);
        http_exchanges(&mut t, 2, |_| 50, |_| 200);
        assert!(t.take_spans().is_empty());
    }

    #[test]
    fn http_requests_responses_latency_and_errors() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Server, 8080), &Protocol::ALL);
        let get = b"GET /users/42?x=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        send(&mut t, 1, Way::Received, MS, get);
        send(
            &mut t,
            1,
            Way::Sent,
            3 * MS,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        send(
            &mut t,
            1,
            Way::Received,
            10 * MS,
            b"GET /nope HTTP/1.1\r\n\r\n",
        );
        send(
            &mut t,
            1,
            Way::Sent,
            10 * MS + 40_000,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        );
        let s = t.snapshot();
        let k = key(7, Role::Server, 8080, "http");
        let rpc = &s.rpcs[&k];
        assert_eq!((rpc.req_count, rpc.resp_count, rpc.err_count), (2, 2, 1));
        assert_eq!(rpc.latency_sum_us, 2_040);
        assert_eq!(rpc.latency_max_us, 2_000);
        assert_eq!(rpc.latency_buckets[bucket(2_000)], 1);
        assert_eq!(rpc.latency_buckets[bucket(40)], 1);
        let users = &s.apis[&api(&k, "GET /users/{id}")];
        assert_eq!((users.req_count, users.err_count), (1, 0));
        assert_eq!(s.apis[&api(&k, "GET /nope")].err_count, 1);
        let link = s.links[&k];
        assert_eq!((link.segs_recv, link.segs_sent), (2, 2));
        assert_eq!(link.bytes_recv, (get.len() + 22) as u64);
        assert_eq!(s.comms[&7], "app");
        assert_eq!((k.l4_role(), k.l7_role()), ("tcp_server", "server"));
        assert_eq!(s.stats, TrackerStats::default());
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 80), &[Protocol::Http]);
        let reqs = b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\n";
        send(&mut t, 1, Way::Sent, MS, reqs);
        // The HEAD response has a Content-Length but no body: the announced method frames it.
        let resps = b"HTTP/1.1 500 E\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        send(&mut t, 1, Way::Received, 2 * MS, resps);
        let s = t.snapshot();
        let k = key(7, Role::Client, 80, "http");
        assert_eq!(s.apis[&api(&k, "GET /a")].err_count, 1);
        let head = &s.apis[&api(&k, "HEAD /b")];
        assert_eq!((head.resp_count, head.err_count), (1, 0));
        assert_eq!(s.stats, TrackerStats::default());
        t.close(1);
        assert_eq!(t.snapshot().stats.unanswered, 0);
    }

    #[test]
    fn redis_error_reply() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 6379), &Protocol::ALL);
        send(&mut t, 1, Way::Sent, MS, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        send(&mut t, 1, Way::Received, 2 * MS, b"-WRONGTYPE bad\r\n");
        let s = t.snapshot();
        let k = key(7, Role::Client, 6379, "redis");
        let get = &s.apis[&api(&k, "GET")];
        assert_eq!((get.req_count, get.resp_count, get.err_count), (1, 1, 1));
        assert_eq!(get.latency_sum_us, 1_000);
    }

    #[test]
    fn responses_whose_place_was_lost_are_completed_by_the_next_request() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 6379), &Protocol::ALL);
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        // Three pipelined requests in one call.
        send(&mut t, 1, Way::Sent, MS, &get.repeat(3));
        // Their three 906-byte replies in one call, of which 1024 bytes were captured: the
        // first reply and the start of the second; the third's head is in the gap.
        let reply = format!("${}\r\n{}\r\n", 900, "x".repeat(900)).into_bytes();
        let all = reply.repeat(3);
        t.data(1, Way::Received, 3 * MS, &all[..1024], all.len() as u64);
        // Lost: nothing more is parsed from that direction until the next request.
        t.data(1, Way::Received, 4 * MS, b"garbage", 7);
        let s = t.snapshot();
        let k = key(7, Role::Client, 6379, "redis");
        assert_eq!(s.apis[&api(&k, "GET")].resp_count, 1);
        assert_eq!(s.stats.desynchronised, 1);
        // The next request shows the two other replies ended (at the last response call).
        send(&mut t, 1, Way::Sent, 10 * MS, get);
        send(&mut t, 1, Way::Received, 12 * MS, b"$1\r\nv\r\n");
        let s = t.snapshot();
        let g = &s.apis[&api(&k, "GET")];
        assert_eq!((g.req_count, g.resp_count, g.err_count), (4, 4, 0));
        assert_eq!(s.stats.unparsed_responses, 2);
        // 2 ms (parsed), 3 ms twice (to the last response call, at 4 ms), 2 ms.
        assert_eq!(g.latency_sum_us, 2_000 + 3_000 + 3_000 + 2_000);
        assert_eq!((s.stats.unanswered, s.stats.pending_abandoned), (0, 0));
        // A request with no response call after it stays pending, then unanswered at close.
        send(&mut t, 1, Way::Sent, 20 * MS, &get.repeat(2));
        t.data(1, Way::Received, 21 * MS, &all[..1024], all.len() as u64);
        send(&mut t, 1, Way::Sent, 30 * MS, get);
        t.close(1);
        let s = t.snapshot();
        assert_eq!(s.apis[&api(&k, "GET")].resp_count, 6);
        assert_eq!((s.stats.unparsed_responses, s.stats.unanswered), (3, 1));
    }

    #[test]
    fn a_closing_connection_completes_its_lost_responses_and_stays_open() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 6379), &Protocol::ALL);
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        send(&mut t, 1, Way::Sent, MS, &get.repeat(2));
        let reply = format!("${}\r\n{}\r\n", 900, "x".repeat(900)).into_bytes();
        let all = reply.repeat(2);
        t.data(1, Way::Received, 3 * MS, &all[..1024], all.len() as u64);
        t.closing(1);
        let s = t.snapshot();
        let k = key(7, Role::Client, 6379, "redis");
        assert_eq!(s.apis[&api(&k, "GET")].resp_count, 2);
        assert_eq!(s.stats.unparsed_responses, 1);
        assert_eq!(t.connections(), 1, "still open for what is queued");
    }

    fn typed(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![ty];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn pgsql_simple_query_with_error() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Server, 5432), &Protocol::ALL);
        let params = b"user\0postgres\0database\0app\0\0";
        let mut startup = ((params.len() + 8) as u32).to_be_bytes().to_vec();
        startup.extend_from_slice(&196_608u32.to_be_bytes());
        startup.extend_from_slice(params);
        send(&mut t, 1, Way::Received, MS, &startup);
        let mut backend = typed(b'R', &[0, 0, 0, 0]);
        backend.extend(typed(b'Z', b"I"));
        send(&mut t, 1, Way::Sent, 2 * MS, &backend);
        send(
            &mut t,
            1,
            Way::Received,
            3 * MS,
            &typed(b'Q', b"select * from nope\0"),
        );
        let mut resp = typed(b'E', b"SERROR\0C42P01\0Mno\0\0");
        resp.extend(typed(b'Z', b"I"));
        send(&mut t, 1, Way::Sent, 8 * MS, &resp);
        let s = t.snapshot();
        let k = key(7, Role::Server, 5432, "pgsql");
        let sel = &s.apis[&api(&k, "SELECT")];
        assert_eq!((sel.req_count, sel.resp_count, sel.err_count), (1, 1, 1));
        assert_eq!(sel.latency_max_us, 5_000);
        assert_eq!(s.stats, TrackerStats::default());
    }

    /// A Kafka message: `body` after its 4-byte size.
    fn kafka_framed(body: Vec<u8>) -> Vec<u8> {
        let mut m = (body.len() as u32).to_be_bytes().to_vec();
        m.extend(body);
        m
    }

    fn kafka_request(api_key: i16, version: i16, correlation: i32) -> Vec<u8> {
        let mut body = api_key.to_be_bytes().to_vec();
        body.extend(version.to_be_bytes());
        body.extend(correlation.to_be_bytes());
        body.extend(6i16.to_be_bytes());
        body.extend(b"client");
        body.extend([0, 0, 0]);
        kafka_framed(body)
    }

    /// A Produce v3 request (acks 0) of one batch of `records` records to `topic`.
    fn produce_v3(correlation: i32, topic: &str, records: i32) -> Vec<u8> {
        let mut rest = vec![0u8; 4];
        rest.push(2); // magic
        rest.extend([0u8; 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4]);
        rest.extend(records.to_be_bytes());
        rest.extend([0u8; 20]);
        let mut set = 0i64.to_be_bytes().to_vec();
        set.extend((rest.len() as i32).to_be_bytes());
        set.extend(rest);
        let mut body = 0i16.to_be_bytes().to_vec();
        body.extend(3i16.to_be_bytes());
        body.extend(correlation.to_be_bytes());
        body.extend(6i16.to_be_bytes());
        body.extend(b"client");
        body.extend((-1i16).to_be_bytes()); // transactional id
        body.extend(0i16.to_be_bytes()); // acks
        body.extend(1000i32.to_be_bytes());
        body.extend(1i32.to_be_bytes());
        body.extend((topic.len() as i16).to_be_bytes());
        body.extend(topic.as_bytes());
        body.extend(1i32.to_be_bytes());
        body.extend(0i32.to_be_bytes());
        body.extend((set.len() as i32).to_be_bytes());
        body.extend(set);
        kafka_framed(body)
    }

    #[test]
    fn kafka_topics_are_counted_per_period_once_from_the_brokers_end() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 9092), &Protocol::ALL);
        send(&mut t, 1, Way::Sent, MS, &produce_v3(1, "orders", 4));
        let rows = t.take_topics();
        let key = TopicKey {
            way: TopicWay::Produce,
            client_ip: "10.0.0.2".parse().unwrap(),
            client_port: 40000,
            topic: "orders".into(),
            server_ip: "10.0.0.1".parse().unwrap(),
            server_port: 9092,
        };
        let stats = |records, bytes| TopicStats {
            records,
            bytes,
            messages: 1,
            partial: 0,
        };
        assert_eq!(rows, BTreeMap::from([(key.clone(), stats(4, 81))]));
        assert!(t.take_topics().is_empty(), "a period's rows are taken once");
        // The broker's end of the same connection traced too: its view, once.
        t.open(2, info(8, Role::Server, 9092), &Protocol::ALL);
        let p = produce_v3(2, "orders", 2);
        send(&mut t, 1, Way::Sent, 2 * MS, &p);
        send(&mut t, 2, Way::Received, 2 * MS, &p);
        assert_eq!(t.take_topics(), BTreeMap::from([(key, stats(2, 81))]));
    }

    /// A Metadata v12 response (correlation id `correlation`, no brokers) naming `topics`.
    fn metadata_v12(correlation: i32, topics: &[([u8; 16], &str)]) -> Vec<u8> {
        let mut body = correlation.to_be_bytes().to_vec();
        body.push(0); // header tags
        body.extend(0i32.to_be_bytes()); // throttle
        body.push(1); // brokers: none
        body.push(0); // cluster id: null
        body.extend(1i32.to_be_bytes()); // controller
        body.push(topics.len() as u8 + 1);
        for (id, name) in topics {
            body.extend(0i16.to_be_bytes());
            body.push(name.len() as u8 + 1);
            body.extend(name.as_bytes());
            body.extend(id);
            body.push(0); // is_internal
            body.push(1); // partitions: none
            body.extend(0i32.to_be_bytes()); // authorized operations
            body.push(0); // topic tags
        }
        body.push(0); // body tags
        kafka_framed(body)
    }

    /// A Produce v13 request (acks 0, flexible) of one batch of 3 records to topic `id`.
    fn produce_v13(correlation: i32, id: [u8; 16]) -> Vec<u8> {
        let mut set = 0i64.to_be_bytes().to_vec();
        let mut rest = vec![0u8; 4];
        rest.push(2); // magic
        rest.extend([0u8; 40]);
        rest.extend(3i32.to_be_bytes());
        set.extend((rest.len() as i32).to_be_bytes());
        set.extend(rest);
        let mut body = 0i16.to_be_bytes().to_vec();
        body.extend(13i16.to_be_bytes());
        body.extend(correlation.to_be_bytes());
        body.extend(6i16.to_be_bytes());
        body.extend(b"client");
        body.push(0); // header tags
        body.push(0); // transactional id: null
        body.extend(0i16.to_be_bytes()); // acks
        body.extend(1000i32.to_be_bytes());
        body.push(2); // one topic
        body.extend(id);
        body.push(2); // one partition
        body.extend(0i32.to_be_bytes());
        body.push(set.len() as u8 + 1);
        body.extend(set);
        body.extend([0, 0, 0]); // partition, topic and body tags
        kafka_framed(body)
    }

    #[test]
    fn kafka_topics_named_by_id_take_their_names_from_metadata_responses() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 9092), &Protocol::ALL);
        let topic = |t: &mut Tracker| -> Vec<String> {
            t.take_topics().into_keys().map(|k| k.topic).collect()
        };
        // Before any Metadata response: the id.
        send(&mut t, 1, Way::Sent, MS, &produce_v13(1, [0x5a; 16]));
        assert_eq!(topic(&mut t), vec![format!("id:{}", "5a".repeat(16))]);
        // The client asks for metadata; the answer names the id.
        send(&mut t, 1, Way::Sent, 2 * MS, &kafka_request(3, 12, 2));
        let meta = metadata_v12(2, &[([0x5a; 16], "orders"), ([0x6b; 16], "audit")]);
        send(&mut t, 1, Way::Received, 3 * MS, &meta);
        send(&mut t, 1, Way::Sent, 4 * MS, &produce_v13(3, [0x5a; 16]));
        assert_eq!(topic(&mut t), vec!["orders".to_string()]);
        // Another connection of the host (a second client) uses what was learnt.
        t.open(2, info(9, Role::Client, 9092), &Protocol::ALL);
        send(&mut t, 2, Way::Sent, 5 * MS, &produce_v13(1, [0x6b; 16]));
        assert_eq!(topic(&mut t), vec!["audit".to_string()]);
        assert_eq!(t.snapshot().stats.topic_names_forgotten, 0);
    }

    #[test]
    fn kafka_topic_names_are_bounded() {
        let mut tables = Tracker::new(Limits::default()).tables;
        let names: Vec<([u8; 16], String)> = (0..MAX_TOPIC_NAMES as u32 + 10)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                (id, format!("t{i}"))
            })
            .collect();
        tables.name_topics(&names);
        assert_eq!(tables.topic_names.len(), 10);
        assert_eq!(tables.stats.topic_names_forgotten, MAX_TOPIC_NAMES as u64);
    }

    /// An ApiVersions v3 response: error code, no api keys, throttle time, no tags.
    fn api_versions_response(correlation: i32, error: i16) -> Vec<u8> {
        let mut body = correlation.to_be_bytes().to_vec();
        body.extend(error.to_be_bytes());
        body.extend([1, 0, 0, 0, 0, 0]);
        kafka_framed(body)
    }

    #[test]
    fn kafka_responses_match_by_correlation_id() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 9092), &Protocol::ALL);
        send(&mut t, 1, Way::Sent, MS, &kafka_request(18, 3, 7));
        send(&mut t, 1, Way::Sent, 2 * MS, &kafka_request(18, 3, 8));
        // Answered out of order: 8 (an error, UNSUPPORTED_VERSION) first, then 7.
        send(
            &mut t,
            1,
            Way::Received,
            4 * MS,
            &api_versions_response(8, 35),
        );
        send(
            &mut t,
            1,
            Way::Received,
            11 * MS,
            &api_versions_response(7, 0),
        );
        send(
            &mut t,
            1,
            Way::Received,
            12 * MS,
            &api_versions_response(9, 0),
        );
        let s = t.snapshot();
        let k = key(7, Role::Client, 9092, "kafka");
        let av = &s.apis[&api(&k, "ApiVersions")];
        assert_eq!((av.req_count, av.resp_count, av.err_count), (2, 2, 1));
        assert_eq!(av.latency_sum_us, 2_000 + 10_000);
        assert_eq!(av.latency_max_us, 10_000);
        assert_eq!(s.stats.unmatched_response, 1);
    }

    fn dns_query(id: u16) -> Vec<u8> {
        let mut v = id.to_be_bytes().to_vec();
        v.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        v.extend(b"\x07example\x03com\x00");
        v.extend([0, 1, 0, 1]);
        v
    }

    fn dns_answer(query: &[u8], rcode: u8) -> Vec<u8> {
        let mut v = query[..2].to_vec();
        v.extend([0x81, 0x80 | rcode, 0, 1, 0, 0, 0, 0, 0, 0]);
        v.extend(&query[12..]);
        v
    }

    fn udp(mut i: ConnInfo) -> ConnInfo {
        i.udp = true;
        i
    }

    /// `m` with DNS over TCP's 2-byte length.
    fn framed(m: &[u8]) -> Vec<u8> {
        let mut v = (m.len() as u16).to_be_bytes().to_vec();
        v.extend(m);
        v
    }

    #[test]
    fn dns_over_tcp_is_framed_by_its_length() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 53), &Protocol::ALL);
        let (a, b) = (dns_query(0x1234), dns_query(0x4321));
        // The first query split across two calls, the second pipelined behind it.
        let stream = [framed(&a), framed(&b)].concat();
        send(&mut t, 1, Way::Sent, MS, &stream[..9]);
        send(&mut t, 1, Way::Sent, MS, &stream[9..]);
        let answers = [framed(&dns_answer(&b, 0)), framed(&dns_answer(&a, 3))].concat();
        let cut = framed(&dns_answer(&b, 0)).len() + 3;
        send(&mut t, 1, Way::Received, 2 * MS, &answers[..cut]);
        send(&mut t, 1, Way::Received, 5 * MS, &answers[cut..]);
        let s = t.snapshot();
        let k = key(7, Role::Client, 53, "dns");
        let r = &s.apis[&api(&k, "A")];
        assert_eq!((r.req_count, r.resp_count, r.err_count), (2, 2, 1));
        assert_eq!(r.client_err_count, 1, "NXDOMAIN");
        assert_eq!(r.latency_sum_us, 1_000 + 4_000);
        assert_eq!(s.stats.malformed + s.stats.undetected, 0, "{:?}", s.stats);
        // The same bytes as datagrams (no framing) are not DNS over TCP.
        t.open(2, info(8, Role::Client, 53), &Protocol::ALL);
        send(&mut t, 2, Way::Sent, MS, &a);
        send(&mut t, 2, Way::Received, 2 * MS, &dns_answer(&a, 0));
        assert_eq!(t.snapshot().stats.undetected, 1);
    }

    #[test]
    fn dns_datagrams_match_by_id() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, udp(info(7, Role::Client, 53)), &Protocol::ALL);
        let (a, b) = (dns_query(0x1234), dns_query(0x4321));
        send(&mut t, 1, Way::Sent, MS, &a);
        send(&mut t, 1, Way::Sent, MS, &b);
        send(&mut t, 1, Way::Received, 2 * MS, &dns_answer(&b, 0));
        send(&mut t, 1, Way::Received, 5 * MS, &dns_answer(&a, 3));
        // A datagram that is not DNS: counted, the next one is still read.
        send(&mut t, 1, Way::Received, 6 * MS, b"junk");
        send(&mut t, 1, Way::Received, 7 * MS, &dns_answer(&a, 0));
        let s = t.snapshot();
        let k = Key {
            udp: true,
            ..key(7, Role::Client, 53, "dns")
        };
        let r = &s.apis[&api(&k, "A")];
        assert_eq!((r.req_count, r.resp_count, r.err_count), (2, 2, 1));
        assert_eq!(r.latency_sum_us, 1_000 + 4_000);
        assert_eq!(s.stats.malformed, 1);
        assert_eq!(s.stats.unmatched_response, 1);
    }

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

    fn handshake_response() -> Vec<u8> {
        let mut p = 0x000f_a685u32.to_le_bytes().to_vec();
        p.extend([0, 0, 0, 1, 0x21]);
        p.extend([0; 23]);
        p.extend(b"root\0\x14");
        p.extend([7; 20]);
        p.extend(b"mysql_native_password\0");
        packet(1, &p)
    }

    fn mysql_ok(seq: u8) -> Vec<u8> {
        packet(seq, &[0x00, 0, 0, 2, 0, 0, 0])
    }

    fn mysql_eof(seq: u8) -> Vec<u8> {
        packet(seq, &[0xfe, 0, 0, 2, 0])
    }

    fn column_def(seq: u8) -> Vec<u8> {
        let mut p = b"\x03def\x02db\x01t\x01t\x01a\x01a".to_vec();
        p.extend([0x0c, 0x3f, 0, 11, 0, 0, 0, 3, 0, 0, 0, 0, 0]);
        packet(seq, &p)
    }

    #[test]
    fn mysql_prepared_statement_is_attributed_to_its_verb() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 3306), &Protocol::ALL);
        send(&mut t, 1, Way::Received, MS, &handshake());
        send(&mut t, 1, Way::Sent, 2 * MS, &handshake_response());
        send(&mut t, 1, Way::Received, 3 * MS, &mysql_ok(2));
        let mut prepare = vec![0x16];
        prepare.extend(b"UPDATE t SET a = ? WHERE id = 1");
        send(&mut t, 1, Way::Sent, 4 * MS, &packet(0, &prepare));
        let mut prep_ok = vec![0x00];
        prep_ok.extend(7u32.to_le_bytes());
        prep_ok.extend([0, 0, 1, 0, 0, 0, 0]);
        let mut resp = packet(1, &prep_ok);
        resp.extend(column_def(2));
        resp.extend(mysql_eof(3));
        send(&mut t, 1, Way::Received, 5 * MS, &resp);
        let execute = [0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 1, 3, 0, 42, 0, 0, 0];
        send(&mut t, 1, Way::Sent, 6 * MS, &packet(0, &execute));
        send(&mut t, 1, Way::Received, 9 * MS, &mysql_ok(1));
        let s = t.snapshot();
        let k = key(7, Role::Client, 3306, "mysql");
        let update = &s.apis[&api(&k, "UPDATE")];
        assert_eq!((update.req_count, update.resp_count), (2, 2));
        assert_eq!(update.latency_sum_us, 1_000 + 3_000);
        assert!(!s.apis.contains_key(&api(&k, UNKNOWN_API)));
        assert_eq!(s.stats, TrackerStats::default());
    }

    #[test]
    fn unmatched_unanswered_and_unknown_connections() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Server, 6379), &Protocol::ALL);
        send(&mut t, 1, Way::Received, MS, b"*1\r\n$4\r\nPING\r\n");
        send(&mut t, 1, Way::Sent, MS, b"+PONG\r\n+PONG\r\n");
        send(
            &mut t,
            1,
            Way::Received,
            MS,
            b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
        );
        send(&mut t, 2, Way::Received, MS, b"x");
        t.close(1);
        t.close(1);
        let s = t.snapshot().stats;
        assert_eq!(
            (s.unmatched_response, s.unanswered, s.unknown_conn),
            (1, 2, 2)
        );
        assert_eq!(t.connections(), 0);
    }

    #[test]
    fn apis_past_the_cap_go_to_other() {
        let limits = Limits {
            max_apis_per_process: 2,
            ..Limits::default()
        };
        let mut t = Tracker::new(limits);
        t.open(1, info(7, Role::Server, 80), &[Protocol::Http]);
        for p in ["a", "b", "c", "d", "a"] {
            let req = format!("GET /{p} HTTP/1.1\r\n\r\n");
            send(&mut t, 1, Way::Received, MS, req.as_bytes());
            send(
                &mut t,
                1,
                Way::Sent,
                MS,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            );
        }
        let s = t.snapshot();
        let k = key(7, Role::Server, 80, "http");
        let names: Vec<&str> = s.apis.keys().map(|a| a.api.as_str()).collect();
        assert_eq!(names, ["GET /a", "GET /b", OTHER_API]);
        assert_eq!(s.apis[&api(&k, OTHER_API)].resp_count, 2);
        assert_eq!(s.apis[&api(&k, "GET /a")].req_count, 2);
        assert_eq!(s.stats.api_overflow, 2);
    }

    #[test]
    fn connections_and_rows_are_capped() {
        let limits = Limits {
            max_connections: 2,
            max_keys: 1,
            max_apis_per_process: 8,
        };
        let mut t = Tracker::new(limits);
        t.open(1, info(7, Role::Server, 80), &[Protocol::Http]);
        t.open(2, info(7, Role::Server, 81), &[Protocol::Http]);
        t.open(3, info(7, Role::Server, 82), &[Protocol::Http]);
        assert_eq!(t.connections(), 2);
        send(&mut t, 3, Way::Received, MS, b"GET / HTTP/1.1\r\n\r\n");
        send(&mut t, 1, Way::Received, MS, b"GET / HTTP/1.1\r\n\r\n");
        send(&mut t, 2, Way::Received, MS, b"GET / HTTP/1.1\r\n\r\n");
        let s = t.snapshot();
        assert_eq!((s.links.len(), s.rpcs.len(), s.apis.len()), (1, 1, 1));
        assert!(s.links.contains_key(&key(7, Role::Server, 80, "http")));
        assert_eq!(s.stats.conn_overflow, 1);
        assert_eq!(s.stats.unknown_conn, 1);
        // Connection 2's link, rpc and api rows.
        assert_eq!(s.stats.key_overflow, 3);
        t.forget_tgid(7);
        let s = t.snapshot();
        assert!(s.links.is_empty() && s.rpcs.is_empty() && s.apis.is_empty());
        assert!(s.comms.is_empty());
        assert_eq!(t.connections(), 0);
    }

    #[test]
    fn undetected_connections_still_count_bytes() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Server, 7000), &Protocol::ALL);
        send(&mut t, 1, Way::Received, MS, b"xyzzy there, no protocol\n");
        send(&mut t, 1, Way::Sent, MS, b"hi, not a protocol\n");
        let s = t.snapshot();
        assert_eq!(s.stats.undetected, 1);
        assert!(s.rpcs.is_empty());
        let link = s.links[&key(7, Role::Server, 7000, UNKNOWN_PROTOCOL)];
        assert_eq!(
            (link.bytes_recv, link.bytes_sent, link.segs_sent),
            (25, 19, 1)
        );
        // Nothing allowed: not parsed either.
        t.open(2, info(7, Role::Server, 80), &[]);
        send(&mut t, 2, Way::Received, MS, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(t.snapshot().stats.undetected, 2);
    }

    #[test]
    fn detection_gives_up_after_its_budget() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 3306), &[Protocol::Mysql]);
        for _ in 0..DETECT_CHUNKS - 1 {
            send(&mut t, 1, Way::Sent, MS, b"");
        }
        assert_eq!(t.snapshot().stats.undetected, 0);
        send(&mut t, 1, Way::Sent, MS, b"");
        assert_eq!(t.snapshot().stats.undetected, 1);
        // Later bytes are counted, not parsed.
        send(&mut t, 1, Way::Received, MS, &handshake());
        let s = t.snapshot();
        let link = s.links[&key(7, Role::Client, 3306, UNKNOWN_PROTOCOL)];
        assert_eq!((link.segs_sent, link.segs_recv), (DETECT_CHUNKS as u64, 1));
    }

    #[test]
    fn a_connection_closed_while_detecting_counts_its_bytes() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 3306), &Protocol::ALL);
        send(&mut t, 1, Way::Sent, MS, b"");
        t.close(1);
        let s = t.snapshot();
        assert_eq!(
            s.links[&key(7, Role::Client, 3306, UNKNOWN_PROTOCOL)].segs_sent,
            1
        );
        assert_eq!(s.stats.undetected, 0);
    }

    #[test]
    fn lost_bytes_are_gaps() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Server, 80), &[Protocol::Http]);
        send(&mut t, 1, Way::Received, MS, b"GET /big HTTP/1.1\r\n\r\n");
        // A body the parser skips anyway: the lost tail is harmless.
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\nxx";
        t.data(1, Way::Sent, 2 * MS, head, (head.len() + 9_998) as u64);
        // A header cut: the stream cannot be followed any more.
        let req = b"GET /cut HTTP/1.1\r\nHost: x";
        t.data(1, Way::Received, 3 * MS, req, 5_000);
        send(
            &mut t,
            1,
            Way::Received,
            4 * MS,
            b"GET /after HTTP/1.1\r\n\r\n",
        );
        let s = t.snapshot();
        let k = key(7, Role::Server, 80, "http");
        assert_eq!(s.apis[&api(&k, "GET /big")].resp_count, 1);
        assert_eq!(s.rpcs[&k].req_count, 1);
        assert_eq!(s.stats.desynchronised + s.stats.malformed, 1);
        assert_eq!(s.links[&k].bytes_recv, 21 + 5_000 + 23);
        assert_eq!(s.links[&k].bytes_sent, (head.len() + 9_998) as u64);
    }

    #[test]
    fn detection_keeps_calls_until_it_can_tell() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 3306), &Protocol::ALL);
        // MySQL: the server speaks first; the client's bytes wait for it.
        send(&mut t, 1, Way::Received, MS, &handshake()[..10]);
        assert!(t.snapshot().links.is_empty());
        send(&mut t, 1, Way::Received, MS, &handshake()[10..]);
        send(&mut t, 1, Way::Sent, MS, &handshake_response());
        send(&mut t, 1, Way::Received, MS, &mysql_ok(2));
        send(&mut t, 1, Way::Sent, MS, &packet(0, b"\x03select 1"));
        send(&mut t, 1, Way::Received, 2 * MS, &mysql_ok(1));
        let s = t.snapshot();
        let k = key(7, Role::Client, 3306, "mysql");
        assert_eq!(s.links[&k].segs_recv, 4);
        assert_eq!(s.apis[&api(&k, "SELECT")].resp_count, 1);
        assert_eq!(s.stats, TrackerStats::default());
    }

    #[test]
    fn pending_requests_are_bounded() {
        let mut t = Tracker::new(Limits::default());
        t.open(1, info(7, Role::Client, 6379), &[Protocol::Redis]);
        let ping = b"*1\r\n$4\r\nPING\r\n".repeat(MAX_PENDING_REQUESTS + 5);
        send(&mut t, 1, Way::Sent, MS, &ping[..4000]);
        send(&mut t, 1, Way::Sent, MS, &ping[4000..]);
        t.close(1);
        let s = t.snapshot().stats;
        assert_eq!(s.pending_overflow, 5);
        assert_eq!(s.unanswered, MAX_PENDING_REQUESTS as u64);
    }

    /// Seeds that detect, so random sequences reach the parsers too.
    fn seeds() -> Vec<Vec<u8>> {
        vec![
            b"GET /a HTTP/1.1\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"*1\r\n$4\r\nPING\r\n".to_vec(),
            b"+OK\r\n".to_vec(),
            kafka_request(18, 3, 1),
            api_versions_response(1, 0),
            dns_query(1),
            dns_answer(&dns_query(1), 3),
            handshake(),
        ]
    }

    #[derive(Debug, Clone)]
    enum Op {
        Open(u64, u32, bool),
        Data(u64, bool, u64, Vec<u8>, u64),
        Close(u64),
        Forget(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let bytes = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..48),
            (0..seeds().len()).prop_map(|i| seeds()[i].clone()),
        ];
        prop_oneof![
            (0..6u64, 0..3u32, any::<bool>()).prop_map(|(c, p, s)| Op::Open(c, p, s)),
            (0..6u64, any::<bool>(), 0..u64::MAX, bytes, 0..64u64)
                .prop_map(|(c, w, ts, b, extra)| Op::Data(c, w, ts, b, extra)),
            (0..6u64).prop_map(Op::Close),
            (0..3u32).prop_map(Op::Forget),
        ]
    }

    proptest! {
        #[test]
        fn random_events_never_panic_and_stay_bounded(ops in proptest::collection::vec(op(), 0..40)) {
            let limits = Limits { max_connections: 3, max_keys: 4, max_apis_per_process: 2 };
            let mut t = Tracker::new(limits);
            for op in ops {
                match op {
                    Op::Open(c, tgid, server) => {
                        let role = if server { Role::Server } else { Role::Client };
                        t.open(c, info(tgid, role, 1000 + c as u16), &Protocol::ALL);
                    }
                    Op::Data(c, sent, ts, b, extra) => {
                        let way = if sent { Way::Sent } else { Way::Received };
                        t.data(c, way, ts, &b, b.len() as u64 + extra);
                    }
                    Op::Close(c) => t.close(c),
                    Op::Forget(tgid) => t.forget_tgid(tgid),
                }
                let s = t.snapshot();
                prop_assert!(t.connections() <= limits.max_connections);
                prop_assert!(s.links.len() <= limits.max_keys);
                prop_assert!(s.rpcs.len() <= limits.max_keys);
                prop_assert!(s.apis.len() <= limits.max_keys);
                prop_assert!(s.comms.len() <= limits.max_keys);
                let names = &t.tables.api_names;
                prop_assert!(names.len() <= limits.max_keys);
                prop_assert!(names.values().all(|n| n.len() <= limits.max_apis_per_process));
                for c in t.conns.values() {
                    prop_assert!(c.pending.len() <= MAX_PENDING_REQUESTS);
                    if let State::Detecting(chunks) = &c.state {
                        prop_assert!(chunks.len() < DETECT_CHUNKS);
                        for d in [Direction::Request, Direction::Response] {
                            let kept: usize = chunks.iter()
                                .filter(|k| k.direction == d).map(|k| k.bytes.len()).sum();
                            prop_assert!(kept <= DETECT_BYTES);
                        }
                    }
                }
            }
        }
    }
}
