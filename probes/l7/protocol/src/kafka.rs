//! Kafka wire protocol: every message is an int32 big-endian size and that many bytes.
//!
//! Requests start with the request header (api_key i16, api_version i16, correlation_id i32,
//! client_id nullable string; flexible versions add tagged fields); responses with the
//! correlation id (flexible versions add tagged fields, except ApiVersions). Only the header
//! (and, for a Produce request, its acks; for a response whose API is known, its first error
//! code) is kept while it is incomplete; the rest of a message is skipped by its size.
//!
//! The response stream does not say which API a response answers. A caller that wants real
//! error codes uses the concrete parsers ([`RequestParser`], [`ResponseParser`]) and hands what
//! the request stream saw ([`RequestParser::take_headers`]) to the response stream
//! ([`ResponseParser::expect`]). Responses whose API is not known get [`Status::Ok`]. Error codes
//! are read for: ApiVersions (all versions), FindCoordinator v0–v3, JoinGroup v0–v9,
//! Heartbeat v0–v4, LeaveGroup v0–v5, SyncGroup v0–v5, InitProducerId v0–v5 (the top-level
//! error code), Produce v0–v12 and Fetch v0–v17 (Fetch v7+: the top-level error code, then
//! the first partition's; Produce: the first partition's). Other APIs and versions: Ok.
//!
//! A Produce request with acks = 0 gets no response: its correlation id is kept for
//! [`RequestParser::take_no_response`].

use std::collections::VecDeque;

use crate::{
    Detect, Direction, Message, ParseError, Protocol, Status, StreamParser, MAX_PENDING,
};

/// Largest message size accepted, bytes.
const MAX_SIZE: i32 = 100 * 1024 * 1024;
/// Entries kept by the bounded lists of the concrete parsers.
pub const MAX_TRACKED: usize = 1024;
/// Highest api key [`detect`] accepts.
const DETECT_MAX_KEY: i16 = 75;
/// Highest api version [`detect`] accepts.
const DETECT_MAX_VERSION: i16 = 20;

/// Official names of the api keys, by key (the Kafka protocol guide).
const API_NAMES: [&str; 90] = [
    "Produce",
    "Fetch",
    "ListOffsets",
    "Metadata",
    "LeaderAndIsr",
    "StopReplica",
    "UpdateMetadata",
    "ControlledShutdown",
    "OffsetCommit",
    "OffsetFetch",
    "FindCoordinator",
    "JoinGroup",
    "Heartbeat",
    "LeaveGroup",
    "SyncGroup",
    "DescribeGroups",
    "ListGroups",
    "SaslHandshake",
    "ApiVersions",
    "CreateTopics",
    "DeleteTopics",
    "DeleteRecords",
    "InitProducerId",
    "OffsetForLeaderEpoch",
    "AddPartitionsToTxn",
    "AddOffsetsToTxn",
    "EndTxn",
    "WriteTxnMarkers",
    "TxnOffsetCommit",
    "DescribeAcls",
    "CreateAcls",
    "DeleteAcls",
    "DescribeConfigs",
    "AlterConfigs",
    "AlterReplicaLogDirs",
    "DescribeLogDirs",
    "SaslAuthenticate",
    "CreatePartitions",
    "CreateDelegationToken",
    "RenewDelegationToken",
    "ExpireDelegationToken",
    "DescribeDelegationToken",
    "DeleteGroups",
    "ElectLeaders",
    "IncrementalAlterConfigs",
    "AlterPartitionReassignments",
    "ListPartitionReassignments",
    "OffsetDelete",
    "DescribeClientQuotas",
    "AlterClientQuotas",
    "DescribeUserScramCredentials",
    "AlterUserScramCredentials",
    "Vote",
    "BeginQuorumEpoch",
    "EndQuorumEpoch",
    "DescribeQuorum",
    "AlterPartition",
    "UpdateFeatures",
    "Envelope",
    "FetchSnapshot",
    "DescribeCluster",
    "DescribeProducers",
    "BrokerRegistration",
    "BrokerHeartbeat",
    "UnregisterBroker",
    "DescribeTransactions",
    "ListTransactions",
    "AllocateProducerIds",
    "ConsumerGroupHeartbeat",
    "ConsumerGroupDescribe",
    "ControllerRegistration",
    "GetTelemetrySubscriptions",
    "PushTelemetry",
    "AssignReplicasToDirs",
    "ListClientMetricsResources",
    "DescribeTopicPartitions",
    "ShareGroupHeartbeat",
    "ShareGroupDescribe",
    "ShareFetch",
    "ShareAcknowledge",
    "AddRaftVoter",
    "RemoveRaftVoter",
    "UpdateRaftVoter",
    "InitializeShareGroupState",
    "ReadShareGroupState",
    "WriteShareGroupState",
    "DeleteShareGroupState",
    "ReadShareGroupStateSummary",
    "StreamsGroupHeartbeat",
    "StreamsGroupDescribe",
];

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;
const CONTROLLED_SHUTDOWN: i16 = 7;
const FIND_COORDINATOR: i16 = 10;
const JOIN_GROUP: i16 = 11;
const HEARTBEAT: i16 = 12;
const LEAVE_GROUP: i16 = 13;
const SYNC_GROUP: i16 = 14;
const API_VERSIONS: i16 = 18;
const INIT_PRODUCER_ID: i16 = 22;

/// The official name of `api_key` ("Produce"), or "api_<n>" for keys not known.
pub fn api_name(api_key: i16) -> String {
    usize::try_from(api_key)
        .ok()
        .and_then(|k| API_NAMES.get(k))
        .map_or_else(|| format!("api_{api_key}"), |n| (*n).to_string())
}

/// A parser of one direction of a Kafka connection.
pub fn parser(direction: Direction) -> Box<dyn StreamParser> {
    match direction {
        Direction::Request => Box::new(RequestParser::new()),
        Direction::Response => Box::new(ResponseParser::new()),
    }
}

/// Whether a connection's first bytes are Kafka: a request whose size, api key (0–75), api
/// version (0–20) and client id length are sane (and whose client id, where captured, is
/// printable); a response, when given, must carry the same correlation id.
pub fn detect(request: &[u8], response: Option<&[u8]>) -> Detect {
    let mut c = Cur::new(request);
    let head = (|| -> Result<(i32, i16, i16, i32, i16), Short> {
        Ok((c.i32()?, c.i16()?, c.i16()?, c.i32()?, c.i16()?))
    })();
    let Ok((size, key, version, corr, client_len)) = head else {
        return Detect::NeedMore;
    };
    let sane = (8..=MAX_SIZE).contains(&size)
        && (0..=DETECT_MAX_KEY).contains(&key)
        && (0..=DETECT_MAX_VERSION).contains(&version)
        && client_len >= -1
        && i32::from(client_len) <= size - 10;
    if !sane {
        return Detect::No;
    }
    let client = usize::try_from(client_len).unwrap_or(0);
    let printable = request
        .iter()
        .skip(14)
        .take(client)
        .all(|b| (0x20..0x7f).contains(b));
    if !printable {
        return Detect::No;
    }
    match response.map(|r| Cur::new(r).skip(4).and_then(|mut c| c.i32())) {
        Some(Ok(id)) if id != corr => Detect::No,
        _ => Detect::Yes,
    }
}

/// Why a field could not be read from the bytes kept so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Short {
    /// The message's first `n` bytes (after the size) are needed.
    Need(usize),
    /// The bytes cannot be Kafka.
    Bad,
}

/// A reader over the kept prefix of a message.
struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cur { b, p: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.p.checked_add(n).ok_or(Short::Bad)?;
        let s = self.b.get(self.p..end).ok_or(Short::Need(end))?;
        self.p = end;
        Ok(s)
    }

    fn skip(mut self, n: usize) -> Result<Self, Short> {
        self.take(n)?;
        Ok(self)
    }

    fn u8(&mut self) -> Result<u8, Short> {
        self.take(1)?.first().copied().ok_or(Short::Bad)
    }

    fn i16(&mut self) -> Result<i16, Short> {
        let s = self.take(2)?;
        Ok(i16::from_be_bytes(s.try_into().map_err(|_| Short::Bad)?))
    }

    fn i32(&mut self) -> Result<i32, Short> {
        let s = self.take(4)?;
        Ok(i32::from_be_bytes(s.try_into().map_err(|_| Short::Bad)?))
    }

    /// An unsigned varint of at most 32 bits.
    fn uvarint(&mut self) -> Result<u32, Short> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.u8()?;
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Short::Bad)
    }

    fn usize_of(n: impl TryInto<usize>) -> Result<usize, Short> {
        n.try_into().map_err(|_| Short::Bad)
    }

    /// A nullable string (i16 length, -1 null), or its compact form (flexible versions).
    fn string(&mut self, compact: bool) -> Result<(), Short> {
        let len = if compact {
            match self.uvarint()? {
                0 => return Ok(()),
                n => Self::usize_of(n - 1)?,
            }
        } else {
            match self.i16()? {
                -1 => return Ok(()),
                n => Self::usize_of(n)?,
            }
        };
        self.take(len).map(|_| ())
    }

    /// An array's element count (null arrays count 0).
    fn array(&mut self, compact: bool) -> Result<u32, Short> {
        if compact {
            Ok(self.uvarint()?.saturating_sub(1))
        } else {
            match self.i32()? {
                -1 => Ok(0),
                n => u32::try_from(n).map_err(|_| Short::Bad),
            }
        }
    }

    /// Tagged fields (flexible versions): skipped.
    fn tagged_fields(&mut self) -> Result<(), Short> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = Self::usize_of(self.uvarint()?)?;
            self.take(size)?;
        }
        Ok(())
    }
}

/// What one side of the protocol makes of a message's kept prefix.
trait Side {
    /// What a message's header says.
    type Head;
    /// Smallest size a message of this side declares.
    const MIN_SIZE: i32;
    /// Reads the header from `body` (the message after its size).
    fn parse(&self, body: &[u8]) -> Result<Self::Head, Short>;
    /// Records `head` and makes the message of `len` bytes.
    fn accept(&mut self, head: Self::Head, len: u64) -> Message;
}

/// Size framing shared by both directions: keeps a message's prefix until its side can read
/// the header, then skips the rest.
struct Framer<S> {
    side: S,
    /// The kept prefix of the current message, its 4-byte size included.
    buf: Vec<u8>,
    /// Bytes `buf` must hold before the next attempt.
    want: usize,
    /// The current message's length with its size, once read.
    total: Option<usize>,
    /// Bytes of the current message still to skip.
    skip: u64,
    /// The current message, read, yielded when its last byte is.
    pending: Option<Message>,
    failed: bool,
}

impl<S: Side> Framer<S> {
    fn new(side: S) -> Self {
        Framer {
            side,
            buf: Vec::new(),
            want: 4,
            total: None,
            skip: 0,
            pending: None,
            failed: false,
        }
    }

    fn fail(&mut self, e: ParseError) -> Result<(), ParseError> {
        self.failed = true;
        self.buf = Vec::new();
        self.pending = None;
        Err(e)
    }

    fn flush(&mut self, out: &mut Vec<Message>) {
        if self.skip == 0 {
            if let Some(m) = self.pending.take() {
                out.push(m);
            }
        }
    }

    fn feed(&mut self, mut data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        if self.failed {
            return Err(ParseError::Desynchronised(Protocol::Kafka));
        }
        self.flush(out);
        while !data.is_empty() {
            if self.skip > 0 {
                let k = usize::try_from(self.skip).map_or(data.len(), |s| s.min(data.len()));
                self.skip -= k as u64;
                data = data.get(k..).unwrap_or_default();
                self.flush(out);
                continue;
            }
            let k = self.want.saturating_sub(self.buf.len()).min(data.len());
            self.buf.extend_from_slice(data.get(..k).unwrap_or_default());
            data = data.get(k..).unwrap_or_default();
            if self.buf.len() >= self.want {
                self.step(out)?;
            }
        }
        Ok(())
    }

    /// `buf` holds `want` bytes: reads the size or the header.
    fn step(&mut self, out: &mut Vec<Message>) -> Result<(), ParseError> {
        let Some(total) = self.total else {
            let size = Cur::new(&self.buf).i32().unwrap_or(-1);
            if !(S::MIN_SIZE..=MAX_SIZE).contains(&size) {
                return self.fail(ParseError::Malformed(Protocol::Kafka));
            }
            let total = 4 + usize::try_from(size).unwrap_or(0);
            self.total = Some(total);
            self.want = (4 + usize::try_from(S::MIN_SIZE).unwrap_or(0)).min(total);
            return Ok(());
        };
        match self.side.parse(self.buf.get(4..).unwrap_or_default()) {
            Ok(head) => {
                let msg = self.side.accept(head, total as u64);
                self.skip = total.saturating_sub(self.buf.len()) as u64;
                self.pending = Some(msg);
                self.buf.clear();
                self.want = 4;
                self.total = None;
                self.flush(out);
                Ok(())
            }
            Err(Short::Need(n)) => {
                let want = n.saturating_add(4);
                if want > total {
                    self.fail(ParseError::Malformed(Protocol::Kafka))
                } else if want > MAX_PENDING {
                    self.fail(ParseError::TooLong(Protocol::Kafka))
                } else {
                    self.want = want;
                    Ok(())
                }
            }
            Err(Short::Bad) => self.fail(ParseError::Malformed(Protocol::Kafka)),
        }
    }

    fn gap(&mut self, n: u64) -> Result<(), ParseError> {
        if self.failed {
            return Err(ParseError::Desynchronised(Protocol::Kafka));
        }
        if n == 0 {
            return Ok(());
        }
        if self.pending.is_some() && n <= self.skip {
            self.skip -= n;
            return Ok(());
        }
        self.fail(ParseError::Desynchronised(Protocol::Kafka))
    }
}

/// Pushes `v` to a list bounded by [`MAX_TRACKED`], dropping the oldest.
fn push_bounded<T>(list: &mut VecDeque<T>, v: T) {
    if list.len() >= MAX_TRACKED {
        list.pop_front();
    }
    list.push_back(v);
}

/// A request header, as read.
#[derive(Debug, Clone, Copy)]
struct RequestHead {
    key: i16,
    version: i16,
    correlation: u32,
    /// A Produce with acks = 0.
    no_response: bool,
}

/// The request side's records.
#[derive(Default)]
struct Requests {
    no_response: VecDeque<u32>,
    headers: VecDeque<(u32, i16, i16)>,
}

impl Side for Requests {
    type Head = RequestHead;
    const MIN_SIZE: i32 = 8;

    fn parse(&self, body: &[u8]) -> Result<RequestHead, Short> {
        let mut c = Cur::new(body);
        let key = c.i16()?;
        let version = c.i16()?;
        let correlation = c.i32()? as u32;
        if key < 0 || version < 0 {
            return Err(Short::Bad);
        }
        // ControlledShutdown v0 has request header v0: no client id.
        if !(key == CONTROLLED_SHUTDOWN && version == 0) {
            c.string(false)?;
        }
        let no_response = key == PRODUCE && produce_acks(&mut c, version)? == 0;
        Ok(RequestHead {
            key,
            version,
            correlation,
            no_response,
        })
    }

    fn accept(&mut self, head: RequestHead, len: u64) -> Message {
        if head.no_response {
            push_bounded(&mut self.no_response, head.correlation);
        }
        push_bounded(
            &mut self.headers,
            (head.correlation, head.key, head.version),
        );
        Message {
            direction: Direction::Request,
            api: Some(api_name(head.key)),
            status: None,
            correlation: Some(head.correlation),
            len,
        }
    }
}

/// A Produce request's acks, `c` just after the client id.
fn produce_acks(c: &mut Cur, version: i16) -> Result<i16, Short> {
    let flexible = version >= 9;
    if flexible {
        c.tagged_fields()?;
    }
    if version >= 3 {
        c.string(flexible)?;
    }
    c.i16()
}

/// The parser of a Kafka request stream.
///
/// Besides the messages, it keeps (bounded by [`MAX_TRACKED`], oldest dropped) the correlation
/// ids of Produce requests with acks = 0, which get no response, and the header of every
/// request, for the response stream's [`ResponseParser::expect`].
pub struct RequestParser(Framer<Requests>);

impl RequestParser {
    /// A parser at the start of a request stream.
    pub fn new() -> Self {
        RequestParser(Framer::new(Requests::default()))
    }

    /// Drains the correlation ids of the Produce requests with acks = 0 (no response expected)
    /// completed so far, in stream order.
    pub fn take_no_response(&mut self) -> Vec<u32> {
        self.0.side.no_response.drain(..).collect()
    }

    /// Drains `(correlation_id, api_key, api_version)` of the requests completed so far, in
    /// stream order: what [`ResponseParser::expect`] takes.
    pub fn take_headers(&mut self) -> Vec<(u32, i16, i16)> {
        self.0.side.headers.drain(..).collect()
    }
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamParser for RequestParser {
    fn protocol(&self) -> Protocol {
        Protocol::Kafka
    }
    fn feed(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        self.0.feed(data, out)
    }
    fn gap(&mut self, n: u64) -> Result<(), ParseError> {
        self.0.gap(n)
    }
}

/// The response side's expectations: `(correlation_id, api_key, api_version)`.
#[derive(Default)]
struct Responses {
    expected: VecDeque<(u32, i16, i16)>,
}

impl Side for Responses {
    /// Correlation id and error code (0: none or not known).
    type Head = (u32, i16);
    const MIN_SIZE: i32 = 4;

    fn parse(&self, body: &[u8]) -> Result<(u32, i16), Short> {
        let mut c = Cur::new(body);
        let correlation = c.i32()? as u32;
        let api = self
            .expected
            .iter()
            .find(|e| e.0 == correlation)
            .map(|e| (e.1, e.2));
        let code = match api {
            Some((key, version)) => response_error(&mut c, key, version)?,
            None => 0,
        };
        Ok((correlation, code))
    }

    fn accept(&mut self, (correlation, code): (u32, i16), len: u64) -> Message {
        if let Some(i) = self.expected.iter().position(|e| e.0 == correlation) {
            self.expected.remove(i);
        }
        let status = if code == 0 {
            Status::Ok
        } else {
            Status::Error(code.to_string())
        };
        Message {
            direction: Direction::Response,
            api: None,
            status: Some(status),
            correlation: Some(correlation),
            len,
        }
    }
}

/// The first version of `key` with flexible (compact, tagged) encodings, for the apis whose
/// responses are read.
fn first_flexible(key: i16) -> Option<i16> {
    match key {
        PRODUCE => Some(9),
        FETCH => Some(12),
        FIND_COORDINATOR => Some(3),
        JOIN_GROUP => Some(6),
        HEARTBEAT | LEAVE_GROUP | SYNC_GROUP => Some(4),
        INIT_PRODUCER_ID => Some(2),
        _ => None,
    }
}

/// The error code of a response to `key` v`version`, `c` just after the correlation id; 0
/// where it is not read.
fn response_error(c: &mut Cur, key: i16, version: i16) -> Result<i16, Short> {
    let flexible = first_flexible(key).is_some_and(|f| version >= f);
    // Throttle time first from this version on, for the apis with a top-level error code.
    let throttle_from = match (key, version) {
        (API_VERSIONS, _) => Some(i16::MAX),
        (FIND_COORDINATOR, 0..=3) | (HEARTBEAT, 0..=4) => Some(1),
        (LEAVE_GROUP | SYNC_GROUP, 0..=5) => Some(1),
        (JOIN_GROUP, 0..=9) => Some(2),
        (INIT_PRODUCER_ID, 0..=5) => Some(0),
        _ => None,
    };
    // ApiVersions responses always have response header v0.
    if flexible {
        c.tagged_fields()?;
    }
    if let Some(from) = throttle_from {
        if version >= from {
            c.i32()?;
        }
        return c.i16();
    }
    match (key, version) {
        (PRODUCE, 0..=12) => produce_error(c, flexible),
        (FETCH, 0..=17) => fetch_error(c, version, flexible),
        _ => Ok(0),
    }
}

/// The first partition's error code of a Produce response.
fn produce_error(c: &mut Cur, flexible: bool) -> Result<i16, Short> {
    if c.array(flexible)? == 0 {
        return Ok(0);
    }
    c.string(flexible)?;
    first_partition_error(c, flexible)
}

/// The top-level (v7+) or first partition's error code of a Fetch response.
fn fetch_error(c: &mut Cur, version: i16, flexible: bool) -> Result<i16, Short> {
    if version >= 1 {
        c.i32()?;
    }
    if version >= 7 {
        let code = c.i16()?;
        if code != 0 {
            return Ok(code);
        }
        c.i32()?;
    }
    if c.array(flexible)? == 0 {
        return Ok(0);
    }
    if version >= 13 {
        c.take(16)?;
    } else {
        c.string(flexible)?;
    }
    first_partition_error(c, flexible)
}

/// The error code of the first partition of a partitions array (partition index i32 first).
fn first_partition_error(c: &mut Cur, flexible: bool) -> Result<i16, Short> {
    if c.array(flexible)? == 0 {
        return Ok(0);
    }
    c.i32()?;
    c.i16()
}

/// The parser of a Kafka response stream.
///
/// The response stream does not carry the api a response answers: a caller that wants the
/// error codes of the apis listed in the module's documentation calls [`ResponseParser::expect`]
/// with every request the request stream completed ([`RequestParser::take_headers`]) before
/// feeding the responses that follow them. Responses not expected get [`Status::Ok`].
pub struct ResponseParser(Framer<Responses>);

impl ResponseParser {
    /// A parser at the start of a response stream.
    pub fn new() -> Self {
        ResponseParser(Framer::new(Responses::default()))
    }

    /// Says the response with `correlation_id` answers `api_key` v`api_version`. At most
    /// [`MAX_TRACKED`] expectations are kept (oldest dropped); one is dropped when its
    /// response is read.
    pub fn expect(&mut self, correlation_id: u32, api_key: i16, api_version: i16) {
        let expected = &mut self.0.side.expected;
        if let Some(i) = expected.iter().position(|e| e.0 == correlation_id) {
            expected.remove(i);
        }
        push_bounded(expected, (correlation_id, api_key, api_version));
    }
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamParser for ResponseParser {
    fn protocol(&self) -> Protocol {
        Protocol::Kafka
    }
    fn feed(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        self.0.feed(data, out)
    }
    fn gap(&mut self, n: u64) -> Result<(), ParseError> {
        self.0.gap(n)
    }
}
