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
//! the first partition's; Produce: the first partition's). Other APIs and versions: Ok. An
//! expected response too short to hold its error code is [`ParseError::Malformed`].
//!
//! A Produce request with acks = 0 gets no response: its correlation id is kept for
//! [`RequestParser::take_no_response`].
//!
//! Produce requests, Fetch responses and Metadata responses v10+ (of expected responses) also
//! carry what [`crate::kafka_topics`] walked: per-topic figures, and the topic names by id.

use std::collections::VecDeque;

use crate::kafka_topics::{TopicWalker, METADATA_IDS_FROM};
use crate::{Detect, Direction, Message, ParseError, Protocol, Status, StreamParser, MAX_PENDING};

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
    // "ListClientMetricsResources" before Kafka 4.1.
    "ListConfigResources",
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
const METADATA: i16 = 3;
const CONTROLLED_SHUTDOWN: i16 = 7;
const FIND_COORDINATOR: i16 = 10;
const JOIN_GROUP: i16 = 11;
const HEARTBEAT: i16 = 12;
const LEAVE_GROUP: i16 = 13;
const SYNC_GROUP: i16 = 14;
const API_VERSIONS: i16 = 18;
const INIT_PRODUCER_ID: i16 = 22;

/// The official name of `api_key` ("Produce"), or "api_N" for keys N not known.
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
    // Each field is judged as soon as it is there: a size or api key out of range is No at once.
    let field = |at: usize, len: usize| request.get(at..at + len);
    if let Some(b) = field(0, 4) {
        let size = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if !(8..=MAX_SIZE).contains(&size) {
            return Detect::No;
        }
    }
    if let Some(b) = field(4, 2) {
        if !(0..=DETECT_MAX_KEY).contains(&i16::from_be_bytes([b[0], b[1]])) {
            return Detect::No;
        }
    }
    if let Some(b) = field(6, 2) {
        if !(0..=DETECT_MAX_VERSION).contains(&i16::from_be_bytes([b[0], b[1]])) {
            return Detect::No;
        }
    }
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
    /// A walker of the message's topics, for the messages that carry records (called before
    /// `accept`).
    fn walker(&self, _head: &Self::Head) -> Option<TopicWalker> {
        None
    }
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
    /// The current message's topic walk, fed the bytes skipped.
    walker: Option<Box<TopicWalker>>,
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
            walker: None,
            failed: false,
        }
    }

    fn fail(&mut self, e: ParseError) -> Result<(), ParseError> {
        self.failed = true;
        self.buf = Vec::new();
        self.pending = None;
        self.walker = None;
        Err(e)
    }

    fn flush(&mut self, out: &mut Vec<Message>) {
        if self.skip == 0 {
            if let Some(mut m) = self.pending.take() {
                if let Some(w) = self.walker.take() {
                    m.topics = Some(Box::new(w.finish()));
                }
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
                if let Some(w) = self.walker.as_mut() {
                    w.feed(data.get(..k).unwrap_or_default());
                }
                data = data.get(k..).unwrap_or_default();
                self.flush(out);
                continue;
            }
            let k = self.want.saturating_sub(self.buf.len()).min(data.len());
            self.buf
                .extend_from_slice(data.get(..k).unwrap_or_default());
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
                let mut walker = self.side.walker(&head);
                if let Some(w) = walker.as_mut() {
                    w.feed(self.buf.get(4..).unwrap_or_default());
                }
                let msg = self.side.accept(head, total as u64);
                self.skip = total.saturating_sub(self.buf.len()) as u64;
                self.pending = Some(msg);
                self.walker = walker.map(Box::new);
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
            if let Some(w) = self.walker.as_mut() {
                w.gap(n);
            }
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
            topics: None,
        }
    }

    fn walker(&self, head: &RequestHead) -> Option<TopicWalker> {
        (head.key == PRODUCE).then(|| TopicWalker::produce_request(head.version))
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

    fn walker(&self, head: &(u32, i16)) -> Option<TopicWalker> {
        match self.expected.iter().find(|e| e.0 == head.0) {
            Some(&(_, FETCH, version)) => Some(TopicWalker::fetch_response(version)),
            Some(&(_, METADATA, version)) if version >= METADATA_IDS_FROM => {
                Some(TopicWalker::metadata_response(version))
            }
            _ => None,
        }
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
            topics: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka_topics::{TopicFigures, Walked};
    use crate::testkit::{feed_pieces, split};

    fn run_boxed(
        mut p: Box<dyn StreamParser>,
        pieces: &[&[u8]],
    ) -> (Vec<Message>, Option<ParseError>) {
        feed_pieces(p.as_mut(), pieces)
    }
    use proptest::prelude::*;

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as i16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn compact(s: &str) -> Vec<u8> {
        let mut v = vec![s.len() as u8 + 1];
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn frame(body: Vec<u8>) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend(body);
        v
    }

    /// A request; `flexible`: request header v2 (tagged fields after the client id).
    fn request(key: i16, version: i16, corr: i32, flexible: bool, body: &[u8]) -> Vec<u8> {
        let mut v = key.to_be_bytes().to_vec();
        v.extend(version.to_be_bytes());
        v.extend(corr.to_be_bytes());
        v.extend(string("client-1"));
        if flexible {
            v.push(0);
        }
        v.extend_from_slice(body);
        frame(v)
    }

    /// A response; `flexible`: response header v1.
    fn response(corr: i32, flexible: bool, body: &[u8]) -> Vec<u8> {
        let mut v = corr.to_be_bytes().to_vec();
        if flexible {
            v.push(0);
        }
        v.extend_from_slice(body);
        frame(v)
    }

    fn produce_v7(acks: i16) -> Vec<u8> {
        let mut b = (-1i16).to_be_bytes().to_vec(); // transactional_id: null
        b.extend(acks.to_be_bytes());
        b.extend(30_000i32.to_be_bytes());
        b.extend(1i32.to_be_bytes());
        b.extend(string("events"));
        b.extend(1i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(61i32.to_be_bytes());
        b.extend([7u8; 61]);
        b
    }

    fn produce_response_v7(error: i16) -> Vec<u8> {
        let mut b = 1i32.to_be_bytes().to_vec();
        b.extend(string("events"));
        b.extend(1i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(error.to_be_bytes());
        b.extend([0u8; 24]); // base_offset, log_append_time, log_start_offset
        b.extend(0i32.to_be_bytes()); // throttle
        b
    }

    fn feed(p: &mut dyn StreamParser, data: &[u8]) -> (Vec<Message>, Result<(), ParseError>) {
        let mut out = Vec::new();
        let r = p.feed(data, &mut out);
        (out, r)
    }

    fn error(m: &Message) -> Option<Status> {
        m.status.clone()
    }

    /// A record set of one batch of `records` records with `extra` bytes of record data.
    fn batch(records: i32, extra: usize) -> Vec<u8> {
        let mut rest = vec![0u8; 4]; // partitionLeaderEpoch
        rest.push(2); // magic
        rest.extend([0u8; 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4]);
        rest.extend(records.to_be_bytes());
        rest.extend(vec![0u8; extra]);
        let mut b = 0i64.to_be_bytes().to_vec();
        b.extend((rest.len() as i32).to_be_bytes());
        b.extend(rest);
        b
    }

    /// Produce and Fetch messages carry their topics' figures, also when the record data is
    /// lost (a gap) and the bytes come in pieces; other messages carry none.
    #[test]
    fn produce_and_fetch_messages_carry_their_topics() {
        let set = batch(5, 3000);
        let mut body = (-1i16).to_be_bytes().to_vec();
        body.extend(1i16.to_be_bytes());
        body.extend(1000i32.to_be_bytes());
        body.extend(1i32.to_be_bytes());
        body.extend(string("orders"));
        body.extend(1i32.to_be_bytes());
        body.extend(0i32.to_be_bytes());
        body.extend((set.len() as i32).to_be_bytes());
        body.extend(&set);
        let data = request(0, 3, 9, false, &body);
        let want = Walked {
            topics: vec![TopicFigures {
                topic: "orders".into(),
                records: 5,
                bytes: set.len() as u64,
            }],
            complete: true,
            names: Vec::new(),
        };
        let mut req = RequestParser::new();
        let mut out = Vec::new();
        // The first 200 bytes, 2500 lost (record data), then the rest.
        req.feed(&data[..200], &mut out).unwrap();
        req.gap(2500).unwrap();
        req.feed(&data[2700..], &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topics.as_deref(), Some(&want));
        // A Fetch v4 response with the same record set, announced by its request.
        let mut f = 0i32.to_be_bytes().to_vec(); // throttle
        f.extend(1i32.to_be_bytes());
        f.extend(string("orders"));
        f.extend(1i32.to_be_bytes());
        f.extend(0i32.to_be_bytes());
        f.extend(0i16.to_be_bytes());
        f.extend([0u8; 16]); // high watermark, last stable offset
        f.extend((-1i32).to_be_bytes()); // aborted transactions: null
        f.extend((set.len() as i32).to_be_bytes());
        f.extend(&set);
        let data = response(11, false, &f);
        let mut resp = ResponseParser::new();
        resp.expect(11, FETCH, 4);
        let mut out = Vec::new();
        for piece in data.chunks(7) {
            resp.feed(piece, &mut out).unwrap();
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topics.as_deref(), Some(&want));
        // Not announced: no topics (the api is not known).
        let mut resp = ResponseParser::new();
        let mut out = Vec::new();
        resp.feed(&data, &mut out).unwrap();
        assert_eq!(out[0].topics, None);
    }

    #[test]
    fn produce_v7_and_its_response() {
        let mut req = RequestParser::new();
        let data = request(0, 7, 42, false, &produce_v7(-1));
        let (msgs, r) = feed(&mut req, &data);
        assert_eq!(r, Ok(()));
        assert_eq!(
            msgs,
            vec![Message {
                direction: Direction::Request,
                api: Some("Produce".into()),
                status: None,
                correlation: Some(42),
                len: data.len() as u64,
                // Its record set is 61 bytes of 7s: an entry longer than the set, not counted.
                topics: Some(Box::new(Walked {
                    topics: vec![TopicFigures {
                        topic: "events".into(),
                        records: 0,
                        bytes: 61,
                    }],
                    complete: true,
                    names: Vec::new(),
                })),
            }]
        );
        assert!(req.take_no_response().is_empty());
        let headers = req.take_headers();
        assert_eq!(headers, vec![(42, 0, 7)]);
        assert!(req.take_headers().is_empty());

        let mut resp = ResponseParser::new();
        for (c, k, v) in headers {
            resp.expect(c, k, v);
        }
        resp.expect(43, 0, 7);
        let mut data = response(42, false, &produce_response_v7(0));
        data.extend(response(43, false, &produce_response_v7(6)));
        let (msgs, r) = feed(&mut resp, &data);
        assert_eq!(r, Ok(()));
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].correlation, Some(42));
        assert_eq!(error(&msgs[0]), Some(Status::Ok));
        assert_eq!(error(&msgs[1]), Some(Status::Error("6".into())));
        assert!(resp.0.side.expected.is_empty());
    }

    #[test]
    fn produce_acks_zero_expects_no_response() {
        let mut req = RequestParser::new();
        let mut data = request(0, 7, 1, false, &produce_v7(0));
        // v2: acks right after the header.
        data.extend(request(0, 2, 2, false, &[0, 0, 0, 0, 0x75, 0x30]));
        // v9 (flexible): compact transactional id, then acks.
        let mut v9 = compact("tx");
        v9.extend(0i16.to_be_bytes());
        v9.extend([0, 0, 0x75, 0x30, 1, 0]);
        data.extend(request(0, 9, 3, true, &v9));
        // v9 with acks 1 and a tagged field in the header.
        let mut v9 = vec![1, 5, 2, 0xaa, 0xbb, 0];
        v9.extend(1i16.to_be_bytes());
        let mut body = 0i16.to_be_bytes().to_vec();
        body.extend(9i16.to_be_bytes());
        body.extend(4i32.to_be_bytes());
        body.extend(string("c"));
        body.extend(v9);
        data.extend(frame(body));
        let (msgs, r) = feed(&mut req, &data);
        assert_eq!(r, Ok(()));
        assert_eq!(msgs.len(), 4);
        assert_eq!(req.take_no_response(), vec![1, 2, 3]);
    }

    #[test]
    fn fetch_errors() {
        let mut req = RequestParser::new();
        let (msgs, _) = feed(&mut req, &request(1, 11, 9, false, &[0; 40]));
        assert_eq!(msgs[0].api.as_deref(), Some("Fetch"));
        let mut resp = ResponseParser::new();
        for (c, k, v) in req.take_headers() {
            resp.expect(c, k, v);
        }
        let mut b = 0i32.to_be_bytes().to_vec(); // throttle
        b.extend(0i16.to_be_bytes()); // error_code
        b.extend(5i32.to_be_bytes()); // session_id
        b.extend(1i32.to_be_bytes());
        b.extend(string("events"));
        b.extend(1i32.to_be_bytes());
        b.extend(3i32.to_be_bytes());
        b.extend(1i16.to_be_bytes()); // OFFSET_OUT_OF_RANGE
        b.extend([0u8; 100]);
        let (msgs, r) = feed(&mut resp, &response(9, false, &b));
        assert_eq!(r, Ok(()));
        assert_eq!(msgs[0].status, Some(Status::Error("1".into())));

        // v12 (flexible): top-level error first.
        resp.expect(10, 1, 12);
        let mut b = 0i32.to_be_bytes().to_vec();
        b.extend(71i16.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.push(1);
        b.push(0);
        let (msgs, _) = feed(&mut resp, &response(10, true, &b));
        assert_eq!(msgs[0].status, Some(Status::Error("71".into())));

        // v13: topic ids; no error.
        resp.expect(11, 1, 13);
        let mut b = 0i32.to_be_bytes().to_vec();
        b.extend([0, 0, 0, 0, 0, 0]);
        b.push(2);
        b.extend([9u8; 16]);
        b.push(2);
        b.extend(0i32.to_be_bytes());
        b.extend(0i16.to_be_bytes());
        b.extend([0u8; 30]);
        let (msgs, _) = feed(&mut resp, &response(11, true, &b));
        assert_eq!(msgs[0].status, Some(Status::Ok));
    }

    #[test]
    fn api_versions_v3_error_35() {
        let mut req = RequestParser::new();
        let mut body = compact("apache-kafka-java");
        body.extend(compact("3.7.0"));
        body.push(0);
        let (msgs, r) = feed(&mut req, &request(18, 3, 0, true, &body));
        assert_eq!(r, Ok(()));
        assert_eq!(msgs[0].api.as_deref(), Some("ApiVersions"));
        // Response header v0 although v3 is flexible.
        let mut b = 35i16.to_be_bytes().to_vec();
        b.push(2);
        b.extend(18i16.to_be_bytes());
        b.extend(0i16.to_be_bytes());
        b.extend(3i16.to_be_bytes());
        b.push(0);
        b.extend(0i32.to_be_bytes());
        b.push(0);
        let data = response(0, false, &b);

        let mut resp = ResponseParser::new();
        let (msgs, _) = feed(&mut resp, &data);
        assert_eq!(msgs[0].status, Some(Status::Ok), "not expected: not known");
        for (c, k, v) in req.take_headers() {
            resp.expect(c, k, v);
        }
        let (msgs, _) = feed(&mut resp, &data);
        assert_eq!(msgs[0].status, Some(Status::Error("35".into())));
    }

    #[test]
    fn metadata_and_group_apis() {
        let mut req = RequestParser::new();
        let (msgs, _) = feed(&mut req, &request(3, 9, 5, true, &[1, 0, 0, 0]));
        assert_eq!(msgs[0].api.as_deref(), Some("Metadata"));
        assert_eq!(api_name(22), "InitProducerId");
        assert_eq!(api_name(19), "CreateTopics");
        assert_eq!(api_name(10), "FindCoordinator");
        assert_eq!(api_name(75), "DescribeTopicPartitions");
        assert_eq!(api_name(1000), "api_1000");
        assert_eq!(api_name(-3), "api_-3");

        let mut resp = ResponseParser::new();
        resp.expect(5, 3, 9);
        resp.expect(6, 12, 4); // Heartbeat v4: flexible, throttle first
        resp.expect(7, 10, 0); // FindCoordinator v0: error first
        resp.expect(8, 22, 1); // InitProducerId v1
        resp.expect(9, 11, 1); // JoinGroup v1: no throttle
        let mut data = response(5, true, &[0; 20]);
        data.extend(response(6, true, &[0, 0, 0, 0, 0, 27, 0]));
        data.extend(response(7, false, &[0, 15, 0, 0]));
        data.extend(response(8, false, &[0, 0, 0, 0, 0, 0, 0xff]));
        data.extend(response(9, false, &[0, 25, 0, 0, 0, 0]));
        let (msgs, r) = feed(&mut resp, &data);
        assert_eq!(r, Ok(()));
        let status: Vec<_> = msgs.iter().filter_map(error).collect();
        assert_eq!(
            status,
            vec![
                Status::Ok,
                Status::Error("27".into()),
                Status::Error("15".into()),
                Status::Ok,
                Status::Error("25".into()),
            ]
        );
    }

    #[test]
    fn malformed_sizes_and_short_headers() {
        for data in [frame(vec![0; 3]), frame(vec![0; 7])] {
            let mut req = RequestParser::new();
            let (_, r) = feed(&mut req, &data);
            assert_eq!(r, Err(ParseError::Malformed(Protocol::Kafka)));
            let (_, r) = feed(&mut req, &data);
            assert_eq!(r, Err(ParseError::Desynchronised(Protocol::Kafka)));
        }
        // Size over 100 MiB.
        let (_, r) = feed(&mut RequestParser::new(), &(MAX_SIZE + 1).to_be_bytes());
        assert_eq!(r, Err(ParseError::Malformed(Protocol::Kafka)));
        // A client id longer than the message.
        let mut body = vec![0, 1, 0, 1, 0, 0, 0, 1, 0, 50];
        body.extend([b'a'; 10]);
        let (_, r) = feed(&mut RequestParser::new(), &frame(body));
        assert_eq!(r, Err(ParseError::Malformed(Protocol::Kafka)));
        // A response of 3 bytes.
        let (_, r) = feed(&mut ResponseParser::new(), &frame(vec![0; 3]));
        assert_eq!(r, Err(ParseError::Malformed(Protocol::Kafka)));
    }

    #[test]
    fn bounded_memory() {
        // A header over MAX_PENDING: a client id of 20000 bytes.
        let mut body = vec![0, 3, 0, 1, 0, 0, 0, 1];
        body.extend(20_000i16.to_be_bytes());
        body.extend(vec![b'a'; 20_000]);
        let (_, r) = feed(&mut RequestParser::new(), &frame(body));
        assert_eq!(r, Err(ParseError::TooLong(Protocol::Kafka)));

        // A 10 MB produce fed in 64 KiB pieces keeps only its header.
        let mut body = produce_v7(1);
        body.extend(vec![0u8; 10 << 20]);
        let data = request(0, 7, 77, false, &body);
        let mut req = RequestParser::new();
        let mut msgs = Vec::new();
        for piece in data.chunks(64 * 1024) {
            req.feed(piece, &mut msgs).unwrap();
            assert!(req.0.buf.capacity() <= 1024);
        }
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].len, data.len() as u64);

        // Tracked lists are bounded.
        let mut resp = ResponseParser::new();
        for i in 0..5000 {
            resp.expect(i, 0, 7);
        }
        assert_eq!(resp.0.side.expected.len(), MAX_TRACKED);
        let mut req = RequestParser::new();
        for i in 0..3000 {
            req.feed(&request(0, 7, i, false, &produce_v7(0)), &mut Vec::new())
                .unwrap();
        }
        assert_eq!(req.take_no_response().len(), MAX_TRACKED);
        assert_eq!(req.take_headers().len(), MAX_TRACKED);
    }

    #[test]
    fn gaps() {
        let data = request(0, 7, 1, false, &produce_v7(1));
        let mut req = RequestParser::new();
        let mut out = Vec::new();
        req.feed(&data[..60], &mut out).unwrap();
        req.gap(10).unwrap();
        req.feed(&data[70..], &mut out).unwrap();
        req.feed(&data, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        // The gap ends the body: the message is yielded by the next feed.
        let mut req = RequestParser::new();
        let mut out = Vec::new();
        req.feed(&data[..60], &mut out).unwrap();
        req.gap((data.len() - 60) as u64).unwrap();
        req.feed(&[], &mut out).unwrap();
        assert_eq!(out.len(), 1);
        // Within a header: fatal.
        let mut req = RequestParser::new();
        req.feed(&data[..6], &mut out).unwrap();
        assert_eq!(req.gap(1), Err(ParseError::Desynchronised(Protocol::Kafka)));
        assert_eq!(
            req.feed(&data, &mut out),
            Err(ParseError::Desynchronised(Protocol::Kafka))
        );
    }

    #[test]
    fn detection() {
        let req = request(18, 3, 7, true, &[1, 1, 0]);
        assert_eq!(detect(&req, None), Detect::Yes);
        assert_eq!(detect(&req[..11], None), Detect::NeedMore);
        assert_eq!(
            detect(&req, Some(&response(7, false, &[0, 0]))),
            Detect::Yes
        );
        assert_eq!(detect(&req, Some(&response(8, false, &[0, 0]))), Detect::No);
        assert_eq!(detect(&req, Some(&[0, 0])), Detect::Yes);
        assert_eq!(
            detect(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", None),
            Detect::No
        );
        assert_eq!(detect(&request(76, 0, 1, false, &[]), None), Detect::No);
        assert_eq!(detect(&request(0, 21, 1, false, &[]), None), Detect::No);
        let mut bad = request(0, 1, 1, false, &[]);
        bad[15] = 0;
        assert_eq!(detect(&bad, None), Detect::No);
    }

    /// A valid request of a random api (Produce ones with a real acks).
    fn arb_request() -> impl Strategy<Value = Vec<u8>> {
        (
            0i16..90,
            0i16..13,
            any::<i32>(),
            prop::collection::vec(any::<u8>(), 0..64),
            any::<i16>(),
        )
            .prop_map(|(key, version, corr, body, acks)| {
                if key == 0 {
                    let flexible = version >= 9;
                    let mut b = Vec::new();
                    if flexible {
                        b.push(0);
                    } else if version >= 3 {
                        b.extend((-1i16).to_be_bytes());
                    }
                    b.extend(acks.to_be_bytes());
                    b.extend(body);
                    request(0, version, corr, flexible, &b)
                } else {
                    request(key, version, corr, false, &body)
                }
            })
    }

    fn headers_of(requests: &[Vec<u8>]) -> Vec<(u32, i16, i16)> {
        let mut req = RequestParser::new();
        for r in requests {
            req.feed(r, &mut Vec::new()).unwrap();
        }
        req.take_headers()
    }

    fn response_parser(expect: &[(u32, i16, i16)]) -> Box<dyn StreamParser> {
        let mut p = ResponseParser::new();
        for &(c, k, v) in expect {
            p.expect(c, k, v);
        }
        Box::new(p)
    }

    proptest! {
        #[test]
        fn requests_split_anywhere(
            requests in prop::collection::vec(arb_request(), 1..8),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let data = requests.concat();
            let whole = run_boxed(parser(Direction::Request), &[&data]);
            prop_assert_eq!(whole.1.clone(), None);
            prop_assert_eq!(whole.0.len(), requests.len());
            prop_assert_eq!(run_boxed(parser(Direction::Request), &split(&data, &cuts)), whole);
        }

        #[test]
        fn responses_split_anywhere(
            requests in prop::collection::vec(arb_request(), 1..8),
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 8),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let headers = headers_of(&requests);
            let data: Vec<u8> = headers
                .iter()
                .zip(&bodies)
                .map(|(h, b)| response(h.0 as i32, false, b))
                .collect::<Vec<_>>()
                .concat();
            let whole = run_boxed(response_parser(&headers), &[&data]);
            prop_assert_eq!(run_boxed(response_parser(&headers), &split(&data, &cuts)), whole);
        }

        #[test]
        fn random_bytes_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..512),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
            key in 0i16..25,
            version in 0i16..18,
        ) {
            let _ = detect(&data, Some(&data));
            run_boxed(parser(Direction::Request), &split(&data, &cuts));
            let expect = [(u32::from_be_bytes([data.get(4).copied().unwrap_or(0), 0, 0, 0]), key, version)];
            let whole = run_boxed(response_parser(&expect), &[&data]);
            prop_assert_eq!(run_boxed(response_parser(&expect), &split(&data, &cuts)), whole);
        }
    }
}
