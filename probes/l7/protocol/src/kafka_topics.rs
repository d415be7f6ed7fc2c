//! Per-topic figures of Kafka Produce requests and Fetch responses, walked as their bytes
//! stream past (issue 17: upstream's kafkaprobe table, from the same parser).
//!
//! [`TopicWalker`] is a small explicit state machine over one message (the bytes after its
//! 4-byte size, header included). It keeps only the structural field being read (at most
//! 256 bytes: a topic name; longer names are cut and the rest skipped), passes over
//! everything else by count (client id, transactional id, partition fields, tagged fields,
//! record data), and never allocates by a declared size or count. Inside a record set it reads
//! each entry's length and magic, and for a RecordBatch (magic 2) its recordsCount; a magic 0/1
//! message counts one record. An entry that would end past its record set (Fetch responses end
//! with such partial entries) is not counted and the set's rest is skipped.
//!
//! Layouts (Kafka's `ProduceRequest.json` and `FetchResponse.json`): Produce requests are
//! flexible (compact encodings, tagged fields) from v9 and name topics by a 16-byte topic id
//! from v13; Fetch responses are flexible from v12 and use topic ids from v13. Versions above
//! the last known (Produce v13, Fetch v17) are walked with the last known layout.
//!
//! Metadata responses v10+ (`MetadataResponse.json`: flexible from v9, topic ids from v10)
//! are walked for the topics' names and ids only ([`Walked::names`]), so that the topics of
//! Produce and Fetch v13+ can be reported by name: brokers, partitions and their replica
//! lists are passed over by count.

/// Bytes of a topic name kept (longer names are cut; their rest is skipped).
const NAME_KEEP: usize = 256;
/// Largest structural item read at once, bytes: more makes the walk give up.
const MAX_ITEM: usize = 16 * 1024;
/// Most bytes of an unsigned varint.
const VARINT_MAX: usize = 5;
/// Bytes of an entry's baseOffset (or offset) and length.
const ENTRY_HEAD: u64 = 12;
/// Bytes of a RecordBatch after its magic up to the end of recordsCount.
const BATCH_AFTER_MAGIC: u64 = 44;

/// The records and bytes one message carried for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFigures {
    /// Topic name (Fetch v13+ and Produce v13+ name topics by id: `id:` and 32 hex digits).
    pub topic: String,
    /// Records in the record batches whose headers were seen (a magic 0/1 message counts 1).
    pub records: u64,
    /// Bytes of the topic's record sets as declared (all partitions).
    pub bytes: u64,
}

/// What a walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walked {
    /// Topics in message order, merged by name; at most [`MAX_TOPICS`].
    pub topics: Vec<TopicFigures>,
    /// Whether the whole message was walked (false: lost bytes or a malformed body hid part
    /// of it, or more than [`MAX_TOPICS`] topics, or more than [`MAX_NAMES`] names).
    pub complete: bool,
    /// Metadata responses: each topic's id and name, in message order; at most
    /// [`MAX_NAMES`]. Topics without a name (v12+ allows a null one) or with the null id are
    /// left out.
    pub names: Vec<([u8; 16], String)>,
}

/// Most topics one message reports.
pub const MAX_TOPICS: usize = 64;
/// Most topic names one Metadata response reports.
pub const MAX_NAMES: usize = 4096;
/// First Metadata response version whose topics carry their ids.
pub const METADATA_IDS_FROM: i16 = 10;

/// Where a run of tagged fields sits (what follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tags {
    /// The request or response header's.
    Header,
    /// An aborted transaction's (Fetch).
    Aborted,
    /// A partition's.
    Partition,
    /// A topic's.
    Topic,
    /// A broker's (Metadata).
    Broker,
}

/// Which message is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Produce,
    Fetch,
    Metadata,
}

/// The field being read (every skip pending is passed over first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Produce: the request header's client id length (always i16).
    ClientIdLen,
    /// Produce v3+: the transactional id's length.
    TxnIdLen,
    /// The topics array's count.
    TopicCount,
    /// A topic name's length.
    NameLen,
    /// A topic name's first `keep` bytes; `rest` more follow, skipped.
    Name { keep: usize, rest: u64 },
    /// A topic id (v13+).
    TopicId,
    /// The partitions array's count.
    PartCount,
    /// Fetch v4+: the aborted transactions array's count.
    AbortedCount,
    /// A partition's record set length.
    RecordsLen,
    /// An entry's length (its baseOffset skipped).
    EntryLen,
    /// An entry's magic byte.
    Magic,
    /// A RecordBatch's recordsCount.
    BatchCount,
    /// Tagged fields: their count.
    TagCount(Tags),
    /// Tagged fields: a field's tag.
    TagKey(Tags),
    /// Tagged fields: a field's size (its data skipped).
    TagSize(Tags),
    /// Metadata: the brokers array's count.
    BrokerCount,
    /// Metadata: a broker's host length.
    HostLen,
    /// Metadata: a broker's rack length.
    RackLen,
    /// Metadata: the cluster id's length.
    ClusterIdLen,
    /// Metadata: the count of a partition's replica (0), isr (1) or offline replica (2) list.
    Nodes(u8),
    /// The last topic was walked.
    Done,
    /// The walk gave up (lost or malformed bytes).
    Stopped,
}

/// What the current state reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Fixed(usize),
    Varint,
    Nothing,
}

/// Input that cannot be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bad;

/// A walker over one message's body.
pub struct TopicWalker {
    kind: Kind,
    version: i16,
    flexible: bool,
    state: State,
    /// The bytes of the field being read.
    buf: Vec<u8>,
    /// Bytes to pass over before the field of `state`.
    skip: u64,
    topics_left: u64,
    parts_left: u64,
    aborted_left: u64,
    tags_left: u64,
    /// Bytes of the current record set not yet accounted to an entry.
    set_left: u64,
    /// Bytes of the current entry after the part read so far.
    entry_left: u64,
    /// Index in `topics` of the topic being walked (None: not reported).
    current: Option<usize>,
    topics: Vec<TopicFigures>,
    /// More than [`MAX_TOPICS`] topics (or [`MAX_NAMES`] names).
    overflow: bool,
    /// Metadata: the brokers not yet walked.
    brokers_left: u64,
    /// Metadata: the name of the topic being walked (None: null, or not kept).
    name: Option<String>,
    /// Metadata: the names found.
    names: Vec<([u8; 16], String)>,
}

impl TopicWalker {
    /// A walker of a Produce request of `version`, fed from the message's first byte after
    /// its 4-byte size (the request header included).
    pub fn produce_request(version: i16) -> Self {
        let mut w = Self::new(Kind::Produce, version, version >= 9);
        if version >= 0 {
            // api_key, api_version, correlation_id.
            w.skip = 8;
            w.state = State::ClientIdLen;
        }
        w
    }

    /// A walker of a Fetch response of `version`, fed from the first byte after the size
    /// (the response header included).
    pub fn fetch_response(version: i16) -> Self {
        let mut w = Self::new(Kind::Fetch, version, version >= 12);
        if version >= 0 {
            // correlation_id.
            w.skip = 4;
            if w.flexible {
                w.state = State::TagCount(Tags::Header);
            } else {
                w.after_header();
            }
        }
        w
    }

    /// A walker of a Metadata response of `version` (at least [`METADATA_IDS_FROM`]: older
    /// ones name no ids, and the walk stops at once), fed from the first byte after the size.
    pub fn metadata_response(version: i16) -> Self {
        let mut w = Self::new(Kind::Metadata, version, true);
        if version >= METADATA_IDS_FROM {
            // correlation_id.
            w.skip = 4;
            w.state = State::TagCount(Tags::Header);
        }
        w
    }

    fn new(kind: Kind, version: i16, flexible: bool) -> Self {
        TopicWalker {
            kind,
            version,
            flexible,
            state: State::Stopped,
            buf: Vec::with_capacity(NAME_KEEP),
            skip: 0,
            topics_left: 0,
            parts_left: 0,
            aborted_left: 0,
            tags_left: 0,
            set_left: 0,
            entry_left: 0,
            current: None,
            topics: Vec::new(),
            overflow: false,
            brokers_left: 0,
            name: None,
            names: Vec::new(),
        }
    }

    /// The message's next bytes.
    pub fn feed(&mut self, mut data: &[u8]) {
        loop {
            if self.skip > 0 {
                if data.is_empty() {
                    break;
                }
                let k = usize::try_from(self.skip).map_or(data.len(), |s| s.min(data.len()));
                self.skip -= k as u64;
                data = data.get(k..).unwrap_or_default();
                continue;
            }
            match self.need() {
                Need::Nothing => break,
                Need::Varint => {
                    let Some((&b, rest)) = data.split_first() else {
                        break;
                    };
                    data = rest;
                    self.buf.push(b);
                    if b & 0x80 == 0 {
                        let v = varint(&self.buf);
                        self.buf.clear();
                        match v {
                            Some(v) => self.step(&[], Some(v)),
                            None => self.stop(),
                        }
                    } else if self.buf.len() >= VARINT_MAX {
                        self.stop();
                    }
                }
                Need::Fixed(n) => {
                    if n > MAX_ITEM {
                        self.stop();
                        continue;
                    }
                    if data.is_empty() {
                        break;
                    }
                    let k = n.saturating_sub(self.buf.len()).min(data.len());
                    self.buf
                        .extend_from_slice(data.get(..k).unwrap_or_default());
                    data = data.get(k..).unwrap_or_default();
                    if self.buf.len() >= n {
                        let mut item = std::mem::take(&mut self.buf);
                        self.step(&item, None);
                        item.clear();
                        self.buf = item;
                    }
                }
            }
        }
    }

    /// `n` bytes of the message were lost after the last feed.
    pub fn gap(&mut self, n: u64) {
        match self.state {
            State::Stopped => {}
            // Past the last topic: what is lost is not needed.
            State::Done => self.skip = self.skip.saturating_sub(n),
            _ if n <= self.skip => self.skip -= n,
            _ => self.stop(),
        }
    }

    /// Ends the walk (the message's last byte was fed or lost).
    pub fn finish(self) -> Walked {
        let complete = self.state == State::Done && self.skip == 0 && !self.overflow;
        Walked {
            topics: self.topics,
            complete,
            names: self.names,
        }
    }

    /// Capacity of the field buffer (memory bound checks).
    #[cfg(test)]
    fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn need(&self) -> Need {
        let compact = |fixed| {
            if self.flexible {
                Need::Varint
            } else {
                Need::Fixed(fixed)
            }
        };
        match self.state {
            State::ClientIdLen => Need::Fixed(2),
            State::TxnIdLen | State::NameLen => compact(2),
            State::TopicCount | State::PartCount | State::AbortedCount | State::RecordsLen => {
                compact(4)
            }
            State::Name { keep, .. } => Need::Fixed(keep),
            State::TopicId => Need::Fixed(16),
            State::EntryLen | State::BatchCount => Need::Fixed(4),
            State::Magic => Need::Fixed(1),
            State::TagCount(_)
            | State::TagKey(_)
            | State::TagSize(_)
            | State::BrokerCount
            | State::HostLen
            | State::RackLen
            | State::ClusterIdLen
            | State::Nodes(_) => Need::Varint,
            State::Done | State::Stopped => Need::Nothing,
        }
    }

    fn stop(&mut self) {
        self.state = State::Stopped;
        self.skip = 0;
    }

    /// The field of `state` was read: `item` (fixed fields) or `v` (varints).
    fn step(&mut self, item: &[u8], v: Option<u32>) {
        if self.advance(item, v).is_err() {
            self.stop();
        }
    }

    fn advance(&mut self, item: &[u8], v: Option<u32>) -> Result<(), Bad> {
        match self.state {
            State::ClientIdLen => {
                // The request header's client id is never compact.
                self.pass(nullable_len(item, None)?.unwrap_or(0))?;
                if self.flexible {
                    self.state = State::TagCount(Tags::Header);
                } else {
                    self.after_header();
                }
            }
            State::TxnIdLen => {
                self.pass(nullable_len(item, v)?.unwrap_or(0))?;
                // acks, timeout_ms.
                self.pass(6)?;
                self.state = State::TopicCount;
            }
            State::TopicCount => {
                self.topics_left = nullable_len(item, v)?.unwrap_or(0);
                self.next_topic();
            }
            State::NameLen => {
                let len = match nullable_len(item, v)? {
                    Some(len) => len,
                    // Metadata v12+: a topic asked for by id that is not known.
                    None if self.kind == Kind::Metadata => {
                        self.name = None;
                        self.state = State::TopicId;
                        return Ok(());
                    }
                    None => return Err(Bad),
                };
                let keep = usize::try_from(len).map_or(NAME_KEEP, |l| l.min(NAME_KEEP));
                if keep == 0 {
                    self.enter_topic(String::new());
                } else {
                    self.state = State::Name {
                        keep,
                        rest: len - keep as u64,
                    };
                }
            }
            State::Name { rest, .. } => {
                self.enter_topic(name_of(item, rest > 0));
                self.pass(rest)?;
            }
            State::TopicId if self.kind == Kind::Metadata => {
                self.name_topic(item);
                // is_internal.
                self.pass(1)?;
                self.state = State::PartCount;
            }
            State::TopicId => self.enter_topic(topic_id(item)),
            State::PartCount => {
                self.parts_left = nullable_len(item, v)?.unwrap_or(0);
                self.next_partition()?;
            }
            State::AbortedCount => {
                self.aborted_left = nullable_len(item, v)?.unwrap_or(0);
                self.next_aborted()?;
            }
            State::RecordsLen => {
                let len = nullable_len(item, v)?.unwrap_or(0);
                self.count(0, len);
                if len == 0 {
                    self.after_set()?;
                } else {
                    self.set_left = len;
                    self.next_entry()?;
                }
            }
            State::EntryLen => {
                let len = u64::try_from(be_int(item).ok_or(Bad)?).map_err(|_| Bad)?;
                if len > self.set_left {
                    // A partial trailing entry: not counted.
                    self.pass(self.set_left)?;
                    self.set_left = 0;
                    return self.after_set();
                }
                self.set_left -= len;
                // partitionLeaderEpoch (v2) or crc (v0/1), then the magic byte.
                self.entry_left = len.checked_sub(5).ok_or(Bad)?;
                self.pass(4)?;
                self.state = State::Magic;
            }
            State::Magic => match be_int(item).ok_or(Bad)? {
                0 | 1 => {
                    self.count(1, 0);
                    self.pass(self.entry_left)?;
                    self.next_entry()?;
                }
                2 => {
                    self.entry_left = self.entry_left.checked_sub(BATCH_AFTER_MAGIC).ok_or(Bad)?;
                    // crc .. baseSequence.
                    self.pass(BATCH_AFTER_MAGIC - 4)?;
                    self.state = State::BatchCount;
                }
                _ => return Err(Bad),
            },
            State::BatchCount => {
                let records = u64::try_from(be_int(item).ok_or(Bad)?).map_err(|_| Bad)?;
                self.count(records, 0);
                self.pass(self.entry_left)?;
                self.next_entry()?;
            }
            State::TagCount(at) => {
                self.tags_left = u64::from(v.ok_or(Bad)?);
                self.next_tag(at)?;
            }
            State::TagKey(at) => self.state = State::TagSize(at),
            State::TagSize(at) => {
                self.pass(u64::from(v.ok_or(Bad)?))?;
                self.next_tag(at)?;
            }
            State::BrokerCount => {
                self.brokers_left = nullable_len(item, v)?.unwrap_or(0);
                self.next_broker()?;
            }
            State::HostLen => {
                self.pass(nullable_len(item, v)?.unwrap_or(0))?;
                // port.
                self.pass(4)?;
                self.state = State::RackLen;
            }
            State::RackLen => {
                self.pass(nullable_len(item, v)?.unwrap_or(0))?;
                self.state = State::TagCount(Tags::Broker);
            }
            State::ClusterIdLen => {
                self.pass(nullable_len(item, v)?.unwrap_or(0))?;
                // controller_id.
                self.pass(4)?;
                self.state = State::TopicCount;
            }
            State::Nodes(i) => {
                let n = nullable_len(item, v)?.unwrap_or(0);
                self.pass(n.checked_mul(4).ok_or(Bad)?)?;
                self.state = if i < 2 {
                    State::Nodes(i + 1)
                } else {
                    State::TagCount(Tags::Partition)
                };
            }
            State::Done | State::Stopped => {}
        }
        Ok(())
    }

    /// Adds `n` bytes to pass over before the next field.
    fn pass(&mut self, n: u64) -> Result<(), Bad> {
        self.skip = self.skip.checked_add(n).ok_or(Bad)?;
        Ok(())
    }

    /// Adds to the current topic's figures.
    fn count(&mut self, records: u64, bytes: u64) {
        if let Some(t) = self.current.and_then(|i| self.topics.get_mut(i)) {
            t.records = t.records.saturating_add(records);
            t.bytes = t.bytes.saturating_add(bytes);
        }
    }

    /// The header (and its tagged fields) was walked: the body's fields before the topics.
    fn after_header(&mut self) {
        if self.kind == Kind::Metadata {
            // throttle_time_ms.
            self.skip = self.skip.saturating_add(4);
            self.state = State::BrokerCount;
            return;
        }
        let fixed = if self.kind == Kind::Produce {
            if self.version >= 3 {
                self.state = State::TxnIdLen;
                return;
            }
            // acks, timeout_ms.
            6
        } else {
            // throttle_time_ms (v1+), error_code and session_id (v7+).
            match self.version {
                0 => 0,
                1..=6 => 4,
                _ => 10,
            }
        };
        self.skip = self.skip.saturating_add(fixed);
        self.state = State::TopicCount;
    }

    fn next_topic(&mut self) {
        self.state = if self.topics_left == 0 {
            State::Done
        } else {
            self.topics_left -= 1;
            if self.kind == Kind::Metadata {
                // error_code.
                self.skip = self.skip.saturating_add(2);
                State::NameLen
            } else if self.version >= 13 {
                State::TopicId
            } else {
                State::NameLen
            }
        };
    }

    /// Metadata: the next broker, or the fields after the brokers.
    fn next_broker(&mut self) -> Result<(), Bad> {
        if self.brokers_left == 0 {
            self.state = State::ClusterIdLen;
            return Ok(());
        }
        self.brokers_left -= 1;
        // node_id.
        self.pass(4)?;
        self.state = State::HostLen;
        Ok(())
    }

    /// Metadata: the current topic's id was read; `name` is its name.
    fn name_topic(&mut self, id: &[u8]) {
        let Some(name) = self.name.take().filter(|n| !n.is_empty()) else {
            return;
        };
        let Ok(id) = <[u8; 16]>::try_from(id) else {
            return;
        };
        if id == [0; 16] {
            return;
        }
        if self.names.len() < MAX_NAMES {
            self.names.push((id, name));
        } else {
            self.overflow = true;
        }
    }

    /// A topic was named: its figures are merged by name (Metadata: its id follows).
    fn enter_topic(&mut self, name: String) {
        if self.kind == Kind::Metadata {
            self.name = Some(name);
            self.state = State::TopicId;
            return;
        }
        self.current = match self.topics.iter().position(|t| t.topic == name) {
            Some(i) => Some(i),
            None if self.topics.len() < MAX_TOPICS => {
                self.topics.push(TopicFigures {
                    topic: name,
                    records: 0,
                    bytes: 0,
                });
                Some(self.topics.len() - 1)
            }
            None => {
                self.overflow = true;
                None
            }
        };
        self.state = State::PartCount;
    }

    fn next_partition(&mut self) -> Result<(), Bad> {
        if self.parts_left == 0 {
            if self.kind == Kind::Metadata {
                // topic_authorized_operations.
                self.pass(4)?;
            }
            if self.flexible {
                self.state = State::TagCount(Tags::Topic);
            } else {
                self.next_topic();
            }
            return Ok(());
        }
        self.parts_left -= 1;
        if self.kind == Kind::Metadata {
            // error_code, partition_index, leader_id, leader_epoch.
            self.pass(14)?;
            self.state = State::Nodes(0);
            return Ok(());
        }
        if self.kind == Kind::Produce {
            // index.
            self.pass(4)?;
            self.state = State::RecordsLen;
            return Ok(());
        }
        // partition_index, error_code, high_watermark, last_stable_offset (v4+),
        // log_start_offset (v5+).
        let v = self.version;
        self.pass(14 + if v >= 4 { 8 } else { 0 } + if v >= 5 { 8 } else { 0 })?;
        self.state = if v >= 4 {
            State::AbortedCount
        } else {
            State::RecordsLen
        };
        Ok(())
    }

    fn next_aborted(&mut self) -> Result<(), Bad> {
        if self.flexible && self.aborted_left > 0 {
            self.aborted_left -= 1;
            // producer_id, first_offset.
            self.pass(16)?;
            self.state = State::TagCount(Tags::Aborted);
            return Ok(());
        }
        self.pass(self.aborted_left.checked_mul(16).ok_or(Bad)?)?;
        self.aborted_left = 0;
        if self.version >= 11 {
            // preferred_read_replica.
            self.pass(4)?;
        }
        self.state = State::RecordsLen;
        Ok(())
    }

    /// The next entry of the record set, or its end.
    fn next_entry(&mut self) -> Result<(), Bad> {
        if self.set_left < ENTRY_HEAD {
            // Fewer bytes than an entry's head: a partial trailing entry.
            self.pass(self.set_left)?;
            self.set_left = 0;
            return self.after_set();
        }
        self.set_left -= ENTRY_HEAD;
        // baseOffset / offset.
        self.pass(8)?;
        self.state = State::EntryLen;
        Ok(())
    }

    fn after_set(&mut self) -> Result<(), Bad> {
        if self.flexible {
            self.state = State::TagCount(Tags::Partition);
            Ok(())
        } else {
            self.next_partition()
        }
    }

    fn next_tag(&mut self, at: Tags) -> Result<(), Bad> {
        if self.tags_left > 0 {
            self.tags_left -= 1;
            self.state = State::TagKey(at);
            return Ok(());
        }
        match at {
            Tags::Header => self.after_header(),
            Tags::Aborted => self.next_aborted()?,
            Tags::Partition => self.next_partition()?,
            Tags::Topic => self.next_topic(),
            Tags::Broker => self.next_broker()?,
        }
        Ok(())
    }
}

/// A big-endian signed integer of 1, 2 or 4 bytes.
fn be_int(b: &[u8]) -> Option<i64> {
    match *b {
        [a] => Some(i64::from(a as i8)),
        [a, b] => Some(i64::from(i16::from_be_bytes([a, b]))),
        [a, b, c, d] => Some(i64::from(i32::from_be_bytes([a, b, c, d]))),
        _ => None,
    }
}

/// An unsigned varint of at most 32 bits, `b` its bytes (the last without the high bit).
fn varint(b: &[u8]) -> Option<u32> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(VARINT_MAX) {
        v |= u64::from(byte & 0x7f) << (7 * i);
    }
    u32::try_from(v).ok()
}

/// A nullable length or count: the i16/i32 `item` (-1 null), or the compact varint `v`
/// (0 null, else one more than the length). Other negative lengths, and compact ones over
/// `i32::MAX`, are malformed.
fn nullable_len(item: &[u8], v: Option<u32>) -> Result<Option<u64>, Bad> {
    let n = match v {
        Some(0) => return Ok(None),
        Some(v) => i64::from(v) - 1,
        None => match be_int(item).ok_or(Bad)? {
            -1 => return Ok(None),
            n => n,
        },
    };
    if n > i64::from(i32::MAX) {
        return Err(Bad);
    }
    u64::try_from(n).map(Some).map_err(|_| Bad)
}

/// A topic name from its kept bytes (`cut`: the name went on; a character cut there is
/// dropped).
fn name_of(b: &[u8], cut: bool) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(e) if cut && e.error_len().is_none() => {
            String::from_utf8_lossy(b.get(..e.valid_up_to()).unwrap_or_default()).into_owned()
        }
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// `id:` and the 32 lowercase hex digits of a topic id.
pub fn topic_id(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(3 + 2 * b.len());
    s.push_str("id:");
    for byte in b {
        for nibble in [byte >> 4, byte & 0xf] {
            s.push(char::from(
                HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    // ---- Encodings -------------------------------------------------------------------------

    fn uvarint(v: &mut Vec<u8>, mut n: u64) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                v.push(b);
                return;
            }
            v.push(b | 0x80);
        }
    }

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as i16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn compact(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        uvarint(&mut v, s.len() as u64 + 1);
        v.extend_from_slice(s.as_bytes());
        v
    }

    /// Compact nullable bytes holding `b`.
    fn compact_bytes(b: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        uvarint(&mut v, b.len() as u64 + 1);
        v.extend_from_slice(b);
        v
    }

    /// i32-length bytes holding `b`.
    fn bytes(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    /// A RecordBatch (magic 2) of `count` records and `payload` bytes of records.
    fn batch(count: i32, payload: usize) -> Vec<u8> {
        let mut out = 0i64.to_be_bytes().to_vec(); // baseOffset
        out.extend((49 + payload as i32).to_be_bytes()); // batchLength
        out.extend(0i32.to_be_bytes()); // partitionLeaderEpoch
        out.push(2); // magic
        out.extend(0u32.to_be_bytes()); // crc
        out.extend(0i16.to_be_bytes()); // attributes
        out.extend(0i32.to_be_bytes()); // lastOffsetDelta
        out.extend([0u8; 24]); // baseTimestamp, maxTimestamp, producerId
        out.extend((-1i16).to_be_bytes()); // producerEpoch
        out.extend((-1i32).to_be_bytes()); // baseSequence
        out.extend(count.to_be_bytes()); // recordsCount
        assert_eq!(out.len(), 61);
        out.resize(61 + payload, 0xab);
        out
    }

    /// A magic 0 or 1 message (with its offset and size) of `payload` value bytes.
    fn legacy(magic: u8, payload: usize) -> Vec<u8> {
        let head = if magic == 0 { 14 } else { 22 };
        let mut out = 5i64.to_be_bytes().to_vec(); // offset
        out.extend(((head + payload) as i32).to_be_bytes()); // message_size
        out.extend(0u32.to_be_bytes()); // crc
        out.push(magic);
        out.push(0); // attributes
        if magic == 1 {
            out.extend(0i64.to_be_bytes()); // timestamp
        }
        out.extend((-1i32).to_be_bytes()); // key: null
        out.extend((payload as i32).to_be_bytes());
        let len = out.len();
        out.resize(len + payload, 0xcd);
        out
    }

    /// A partial trailing entry of `t` bytes (its declared length goes past them).
    fn partial(t: usize) -> Vec<u8> {
        if t < 12 {
            return vec![0x77; t];
        }
        let mut out = 9i64.to_be_bytes().to_vec();
        out.extend(((t - 12) as i32 + 1 + (t % 5) as i32).to_be_bytes());
        out.resize(t, 0x77);
        out
    }

    /// A request header: Produce of `version`, client id "client-1"; `tags`: the flexible
    /// header's tagged fields.
    fn produce_head(version: i16, tags: Option<&[u8]>) -> Vec<u8> {
        let mut v = 0i16.to_be_bytes().to_vec();
        v.extend(version.to_be_bytes());
        v.extend(77i32.to_be_bytes());
        v.extend(string("client-1"));
        if let Some(t) = tags {
            v.extend_from_slice(t);
        }
        v
    }

    fn figures(topic: &str, records: u64, bytes: u64) -> TopicFigures {
        TopicFigures {
            topic: topic.to_string(),
            records,
            bytes,
        }
    }

    fn walker(fetch: bool, version: i16) -> TopicWalker {
        if fetch {
            TopicWalker::fetch_response(version)
        } else {
            TopicWalker::produce_request(version)
        }
    }

    fn walk(fetch: bool, version: i16, pieces: &[&[u8]]) -> Walked {
        let mut w = walker(fetch, version);
        for p in pieces {
            w.feed(p);
            assert!(w.buffer_capacity() <= NAME_KEEP);
        }
        w.finish()
    }

    /// `data` cut at `cuts` (positions, any order, clamped; empty pieces kept).
    fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        at.sort_unstable();
        at.push(data.len());
        let mut pieces = Vec::new();
        let mut prev = 0;
        for c in at {
            pieces.push(&data[prev..c]);
            prev = c;
        }
        pieces
    }

    // ---- A model of valid messages -----------------------------------------------------------

    #[derive(Debug, Clone)]
    enum Entry {
        Batch { count: i32, payload: usize },
        Legacy { magic: u8, payload: usize },
    }

    #[derive(Debug, Clone)]
    struct Part {
        /// The record set's entries (None: null records).
        set: Option<Vec<Entry>>,
        /// Bytes of a partial trailing entry.
        trailing: usize,
        /// Fetch v4+: aborted transactions (None: null array).
        aborted: Option<usize>,
    }

    #[derive(Debug, Clone)]
    struct Topic {
        name: String,
        id: [u8; 16],
        parts: Vec<Part>,
    }

    #[derive(Debug, Clone)]
    struct Msg {
        fetch: bool,
        version: i16,
        txn: Option<String>,
        /// Bytes of the one tagged field of every tagged-field run (0: none).
        tag: usize,
        topics: Vec<Topic>,
    }

    impl Msg {
        fn flexible(&self) -> bool {
            self.version >= if self.fetch { 12 } else { 9 }
        }
    }

    fn set_bytes(p: &Part) -> Option<Vec<u8>> {
        let entries = p.set.as_ref()?;
        let mut out = Vec::new();
        for e in entries {
            out.extend(match *e {
                Entry::Batch { count, payload } => batch(count, payload),
                Entry::Legacy { magic, payload } => legacy(magic, payload),
            });
        }
        out.extend(partial(p.trailing));
        Some(out)
    }

    /// A writer of one message's fields.
    struct W {
        v: Vec<u8>,
        flex: bool,
        tag: usize,
    }

    impl W {
        fn raw(&mut self, b: &[u8]) {
            self.v.extend_from_slice(b);
        }
        fn string(&mut self, s: Option<&str>) {
            match (s, self.flex) {
                (None, false) => self.raw(&(-1i16).to_be_bytes()),
                (None, true) => self.v.push(0),
                (Some(s), false) => self.raw(&string(s)),
                (Some(s), true) => self.raw(&compact(s)),
            }
        }
        fn count(&mut self, n: Option<usize>) {
            match (n, self.flex) {
                (None, false) => self.raw(&(-1i32).to_be_bytes()),
                (None, true) => self.v.push(0),
                (Some(n), false) => self.raw(&(n as i32).to_be_bytes()),
                (Some(n), true) => uvarint(&mut self.v, n as u64 + 1),
            }
        }
        fn records(&mut self, b: Option<&[u8]>) {
            match (b, self.flex) {
                (None, false) => self.raw(&(-1i32).to_be_bytes()),
                (None, true) => self.v.push(0),
                (Some(b), false) => self.raw(&bytes(b)),
                (Some(b), true) => self.raw(&compact_bytes(b)),
            }
        }
        fn tags(&mut self) {
            if !self.flex {
                return;
            }
            if self.tag == 0 {
                self.v.push(0);
            } else {
                self.v.push(1);
                uvarint(&mut self.v, 3);
                uvarint(&mut self.v, self.tag as u64);
                let len = self.v.len();
                self.v.resize(len + self.tag, 0x5a);
            }
        }
        fn topic(&mut self, t: &Topic, version: i16) {
            if version >= 13 {
                self.raw(&t.id);
            } else {
                self.string(Some(&t.name));
            }
        }
    }

    fn encode(m: &Msg) -> Vec<u8> {
        let v = m.version;
        let mut w = W {
            v: Vec::new(),
            flex: m.flexible(),
            tag: m.tag,
        };
        if m.fetch {
            w.raw(&7i32.to_be_bytes());
            w.tags();
            if v >= 1 {
                w.raw(&0i32.to_be_bytes());
            }
            if v >= 7 {
                w.raw(&0i16.to_be_bytes());
                w.raw(&9i32.to_be_bytes());
            }
        } else {
            w.raw(&produce_head(v, None));
            w.tags();
            if v >= 3 {
                w.string(m.txn.as_deref());
            }
            w.raw(&(-1i16).to_be_bytes());
            w.raw(&30_000i32.to_be_bytes());
        }
        w.count(Some(m.topics.len()));
        for t in &m.topics {
            w.topic(t, v);
            w.count(Some(t.parts.len()));
            for (i, p) in t.parts.iter().enumerate() {
                w.raw(&(i as i32).to_be_bytes());
                if m.fetch {
                    w.raw(&0i16.to_be_bytes());
                    w.raw(&100i64.to_be_bytes());
                    if v >= 4 {
                        w.raw(&90i64.to_be_bytes());
                    }
                    if v >= 5 {
                        w.raw(&0i64.to_be_bytes());
                    }
                    if v >= 4 {
                        w.count(p.aborted);
                        for _ in 0..p.aborted.unwrap_or(0) {
                            w.raw(&[0x11; 16]);
                            w.tags();
                        }
                    }
                    if v >= 11 {
                        w.raw(&(-1i32).to_be_bytes());
                    }
                }
                w.records(set_bytes(p).as_deref());
                w.tags();
            }
            w.tags();
        }
        w.tags();
        w.v
    }

    fn expected(m: &Msg) -> Walked {
        let mut out = Walked {
            topics: Vec::new(),
            complete: true,
            names: Vec::new(),
        };
        for t in &m.topics {
            let key = if m.version >= 13 {
                topic_id(&t.id)
            } else {
                t.name.chars().take(NAME_KEEP).collect()
            };
            let i = match out.topics.iter().position(|f| f.topic == key) {
                Some(i) => i,
                None if out.topics.len() < MAX_TOPICS => {
                    out.topics.push(figures(&key, 0, 0));
                    out.topics.len() - 1
                }
                None => {
                    out.complete = false;
                    continue;
                }
            };
            for p in &t.parts {
                let set = set_bytes(p);
                let records: u64 = p
                    .set
                    .iter()
                    .flatten()
                    .map(|e| match *e {
                        Entry::Batch { count, .. } => count as u64,
                        Entry::Legacy { .. } => 1,
                    })
                    .sum();
                out.topics[i].records += records;
                out.topics[i].bytes += set.map_or(0, |s| s.len() as u64);
            }
        }
        out
    }

    // ---- Hand-built messages -----------------------------------------------------------------

    #[test]
    fn produce_v0_message_set() {
        let mut set = legacy(0, 10);
        set.extend(legacy(0, 0));
        set.extend(legacy(0, 5));
        assert_eq!(set.len(), 36 + 26 + 31);
        let mut b = produce_head(0, None);
        b.extend(1i16.to_be_bytes()); // acks
        b.extend(1000i32.to_be_bytes()); // timeout
        b.extend(1i32.to_be_bytes());
        b.extend(string("events"));
        b.extend(1i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(bytes(&set));
        let got = walk(false, 0, &[&b]);
        assert_eq!(
            got,
            Walked {
                topics: vec![figures("events", 3, 93)],
                complete: true,
                names: Vec::new(),
            }
        );
    }

    #[test]
    fn produce_v3_two_partitions() {
        let mut b = produce_head(3, None);
        b.extend(string("tx-1"));
        b.extend((-1i16).to_be_bytes());
        b.extend(30_000i32.to_be_bytes());
        b.extend(1i32.to_be_bytes());
        b.extend(string("orders"));
        b.extend(2i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(bytes(&batch(5, 20)));
        b.extend(1i32.to_be_bytes());
        b.extend(bytes(&batch(7, 3)));
        let got = walk(false, 3, &[&b]);
        assert_eq!(got.topics, vec![figures("orders", 12, 81 + 64)]);
        assert!(got.complete);
        // Truncated: not complete, what was seen kept.
        let got = walk(false, 3, &[&b[..b.len() - 1]]);
        assert_eq!(got.topics, vec![figures("orders", 12, 81 + 64)]);
        assert!(!got.complete);
        let got = walk(false, 3, &[&b[..b.len() - 4]]);
        assert_eq!(got.topics, vec![figures("orders", 5, 81 + 64)]);
        assert!(!got.complete);
        let got = walk(false, 3, &[&b[..b.len() - 65]]);
        assert_eq!(got.topics, vec![figures("orders", 5, 81)]);
        assert!(!got.complete);
    }

    #[test]
    fn produce_v7_two_topics_merged() {
        let mut b = produce_head(7, None);
        b.extend((-1i16).to_be_bytes()); // transactional_id: null
        b.extend(1i16.to_be_bytes());
        b.extend(30_000i32.to_be_bytes());
        b.extend(3i32.to_be_bytes());
        b.extend(string("a"));
        b.extend(1i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(bytes(&batch(2, 3)));
        b.extend(string("b"));
        b.extend(2i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        let mut set = legacy(1, 4);
        set.extend(batch(4, 0));
        b.extend(bytes(&set));
        b.extend(1i32.to_be_bytes());
        b.extend((-1i32).to_be_bytes()); // null records
        b.extend(string("a"));
        b.extend(0i32.to_be_bytes()); // no partitions
        let got = walk(false, 7, &[&b]);
        assert_eq!(
            got.topics,
            vec![figures("a", 2, 64), figures("b", 5, 38 + 61)]
        );
        assert!(got.complete);
    }

    #[test]
    fn produce_v9_flexible() {
        // Header tagged fields: one field (tag 0) of 2 bytes.
        let mut b = produce_head(9, Some(&[1, 0, 2, 9, 9]));
        b.extend(compact("tx"));
        b.extend((-1i16).to_be_bytes());
        b.extend(30_000i32.to_be_bytes());
        b.push(2); // one topic
        b.extend(compact("clicks"));
        b.push(3); // two partitions
        b.extend(0i32.to_be_bytes());
        let set = batch(9, 100); // 161 bytes: a 2-byte varint length
        b.extend(compact_bytes(&set));
        b.extend([2, 0, 1, 0xee, 5, 3, 1, 2, 3]); // partition tags: two fields
        b.extend(1i32.to_be_bytes());
        b.push(0); // null records
        b.push(0); // partition tags
        b.extend([1, 7, 1, 0]); // topic tags
        b.push(0); // body tags
        let got = walk(false, 9, &[&b]);
        assert_eq!(
            got,
            Walked {
                topics: vec![figures("clicks", 9, 161)],
                complete: true,
                names: Vec::new(),
            }
        );
    }

    #[test]
    fn produce_v13_topic_id() {
        let id: Vec<u8> = (1..=16).collect();
        let mut b = produce_head(13, Some(&[0]));
        b.push(0); // null transactional id
        b.extend(1i16.to_be_bytes());
        b.extend(30_000i32.to_be_bytes());
        b.push(2);
        b.extend(&id);
        b.push(2);
        b.extend(4i32.to_be_bytes());
        b.extend(compact_bytes(&batch(3, 1)));
        b.push(0);
        b.push(0);
        b.push(0);
        let got = walk(false, 13, &[&b]);
        assert_eq!(
            got,
            Walked {
                topics: vec![figures("id:0102030405060708090a0b0c0d0e0f10", 3, 62)],
                complete: true,
                names: Vec::new(),
            }
        );
    }

    #[test]
    fn fetch_v0() {
        let mut set = legacy(0, 1);
        set.extend(legacy(1, 2));
        let mut b = 5i32.to_be_bytes().to_vec(); // correlation id
        b.extend(1i32.to_be_bytes());
        b.extend(string("logs"));
        b.extend(1i32.to_be_bytes());
        b.extend(0i32.to_be_bytes()); // partition
        b.extend(0i16.to_be_bytes()); // error
        b.extend(10i64.to_be_bytes()); // high watermark
        b.extend(bytes(&set));
        let got = walk(true, 0, &[&b]);
        assert_eq!(
            got,
            Walked {
                topics: vec![figures("logs", 2, 27 + 36)],
                complete: true,
                names: Vec::new(),
            }
        );
    }

    #[test]
    fn fetch_v4_aborted_transactions() {
        let mut b = 5i32.to_be_bytes().to_vec();
        b.extend(0i32.to_be_bytes()); // throttle
        b.extend(1i32.to_be_bytes());
        b.extend(string("tx-topic"));
        b.extend(2i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(0i16.to_be_bytes());
        b.extend(10i64.to_be_bytes());
        b.extend(8i64.to_be_bytes()); // last stable offset
        b.extend(2i32.to_be_bytes()); // aborted transactions
        b.extend([1u8; 32]);
        b.extend(bytes(&batch(3, 0)));
        b.extend(1i32.to_be_bytes());
        b.extend(0i16.to_be_bytes());
        b.extend(10i64.to_be_bytes());
        b.extend(8i64.to_be_bytes());
        b.extend((-1i32).to_be_bytes()); // aborted: null
        b.extend((-1i32).to_be_bytes()); // records: null
        let got = walk(true, 4, &[&b]);
        assert_eq!(
            got,
            Walked {
                topics: vec![figures("tx-topic", 3, 61)],
                complete: true,
                names: Vec::new(),
            }
        );
    }

    #[test]
    fn fetch_v11() {
        let mut set = batch(10, 7);
        set.extend(batch(1, 0));
        let mut b = 5i32.to_be_bytes().to_vec();
        b.extend(0i32.to_be_bytes()); // throttle
        b.extend(0i16.to_be_bytes()); // error
        b.extend(3i32.to_be_bytes()); // session
        b.extend(1i32.to_be_bytes());
        b.extend(string("m"));
        b.extend(1i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(0i16.to_be_bytes());
        b.extend(10i64.to_be_bytes());
        b.extend(8i64.to_be_bytes()); // last stable offset
        b.extend(0i64.to_be_bytes()); // log start offset
        b.extend(0i32.to_be_bytes()); // aborted: empty
        b.extend((-1i32).to_be_bytes()); // preferred read replica
        b.extend(bytes(&set));
        let got = walk(true, 11, &[&b]);
        assert_eq!(
            got,
            Walked {
                topics: vec![figures("m", 11, 68 + 61)],
                complete: true,
                names: Vec::new(),
            }
        );
    }

    #[test]
    fn fetch_v12_flexible() {
        let mut b = 5i32.to_be_bytes().to_vec();
        b.extend([1, 0, 1, 0x42]); // header tags
        b.extend(0i32.to_be_bytes());
        b.extend(0i16.to_be_bytes());
        b.extend(3i32.to_be_bytes());
        b.push(2);
        b.extend(compact("flex"));
        b.push(2);
        b.extend(0i32.to_be_bytes());
        b.extend(0i16.to_be_bytes());
        b.extend(10i64.to_be_bytes());
        b.extend(8i64.to_be_bytes());
        b.extend(0i64.to_be_bytes());
        b.push(2); // one aborted transaction
        b.extend([3u8; 16]);
        b.extend([1, 0, 1, 0]); // its tags
        b.extend((-1i32).to_be_bytes());
        let mut set = batch(6, 200);
        set.extend(partial(40));
        b.extend(compact_bytes(&set));
        b.extend([1, 1, 8, 0, 0, 0, 1, 0, 0, 0, 2]); // partition tags: current leader
        b.push(0); // topic tags
        b.extend([1, 0, 0]); // body tags
        let got = walk(true, 12, &[&b]);
        assert_eq!(
            got,
            Walked {
                topics: vec![figures("flex", 6, 261 + 40)],
                complete: true,
                names: Vec::new(),
            }
        );
    }

    #[test]
    fn fetch_v13_topic_id() {
        let mut b = 5i32.to_be_bytes().to_vec();
        b.push(0);
        b.extend([0u8; 10]);
        b.push(3);
        for id in [[0xab; 16], [0xcd; 16]] {
            b.extend(id);
            b.push(2);
            b.extend(0i32.to_be_bytes());
            b.extend(0i16.to_be_bytes());
            b.extend([0u8; 24]);
            b.push(1); // aborted: empty
            b.extend((-1i32).to_be_bytes());
            b.extend(compact_bytes(&batch(2, 0)));
            b.push(0);
            b.push(0);
        }
        b.push(0);
        let got = walk(true, 13, &[&b]);
        assert_eq!(
            got,
            Walked {
                topics: vec![
                    figures(&format!("id:{}", "ab".repeat(16)), 2, 61),
                    figures(&format!("id:{}", "cd".repeat(16)), 2, 61),
                ],
                complete: true,
                names: Vec::new(),
            }
        );
    }

    // ---- Metadata responses: topic ids and names ---------------------------------------------

    /// A Metadata response topic: its name (None: null, v12+), id, partitions' replica counts.
    #[derive(Debug, Clone)]
    struct MetaTopic {
        name: Option<String>,
        id: [u8; 16],
        parts: Vec<usize>,
    }

    /// A Metadata response of `version` (10+) with `brokers` brokers (one with a rack) and
    /// `topics`; `tags`: tagged fields at every level.
    fn metadata(version: i16, brokers: usize, topics: &[MetaTopic], tags: bool) -> Vec<u8> {
        let tag = |v: &mut Vec<u8>| {
            if tags {
                v.extend([1, 4, 2, 0xee, 0xee]);
            } else {
                v.push(0);
            }
        };
        let mut b = 9i32.to_be_bytes().to_vec(); // correlation_id
        tag(&mut b); // header tags
        b.extend(0i32.to_be_bytes()); // throttle_time_ms
        uvarint(&mut b, brokers as u64 + 1);
        for i in 0..brokers {
            b.extend((i as i32).to_be_bytes());
            b.extend(compact(&format!("broker-{i}.example")));
            b.extend(9092i32.to_be_bytes());
            if i == 0 {
                b.extend(compact("rack-a"));
            } else {
                b.push(0); // rack: null
            }
            tag(&mut b);
        }
        b.extend(compact("cluster-xyz"));
        b.extend(1i32.to_be_bytes()); // controller_id
        uvarint(&mut b, topics.len() as u64 + 1);
        for t in topics {
            b.extend(0i16.to_be_bytes()); // error_code
            match &t.name {
                Some(n) => b.extend(compact(n)),
                None => b.push(0),
            }
            b.extend(t.id);
            b.push(0); // is_internal
            uvarint(&mut b, t.parts.len() as u64 + 1);
            for (i, &replicas) in t.parts.iter().enumerate() {
                b.extend(0i16.to_be_bytes());
                b.extend((i as i32).to_be_bytes());
                b.extend(1i32.to_be_bytes()); // leader_id
                b.extend(5i32.to_be_bytes()); // leader_epoch
                for n in [replicas, replicas.saturating_sub(1), 0] {
                    uvarint(&mut b, n as u64 + 1);
                    for r in 0..n {
                        b.extend((r as i32).to_be_bytes());
                    }
                }
                tag(&mut b);
            }
            b.extend((-2_147_483_648i32).to_be_bytes()); // topic_authorized_operations
            tag(&mut b);
        }
        if version <= 10 {
            b.extend((-2_147_483_648i32).to_be_bytes()); // cluster_authorized_operations
        }
        if version >= 13 {
            b.extend(0i16.to_be_bytes()); // error_code
        }
        tag(&mut b);
        b
    }

    fn meta_walk(version: i16, pieces: &[&[u8]]) -> Walked {
        let mut w = TopicWalker::metadata_response(version);
        for p in pieces {
            w.feed(p);
            assert!(w.buffer_capacity() <= NAME_KEEP);
        }
        w.finish()
    }

    fn meta_topic(name: Option<&str>, id: u8, parts: &[usize]) -> MetaTopic {
        MetaTopic {
            name: name.map(str::to_string),
            id: [id; 16],
            parts: parts.to_vec(),
        }
    }

    #[test]
    fn metadata_names_topic_ids() {
        let topics = [
            meta_topic(Some("orders"), 0x11, &[3, 3]),
            meta_topic(None, 0x22, &[1]),
            meta_topic(Some("payments"), 0x33, &[]),
            meta_topic(Some("zero-id"), 0, &[1]),
        ];
        for version in [10, 11, 12, 13] {
            for tags in [false, true] {
                let data = metadata(version, 3, &topics, tags);
                let got = meta_walk(version, &[&data]);
                assert_eq!(
                    got,
                    Walked {
                        topics: Vec::new(),
                        complete: true,
                        names: vec![
                            ([0x11; 16], "orders".to_string()),
                            ([0x33; 16], "payments".to_string()),
                        ],
                    },
                    "v{version} tags {tags}"
                );
                // Byte by byte.
                let bytes: Vec<&[u8]> = data.chunks(1).collect();
                assert_eq!(meta_walk(version, &bytes), got);
            }
        }
        // Versions without ids: nothing, not complete.
        let got = meta_walk(9, &[&metadata(10, 1, &topics, false)]);
        assert_eq!((got.names.len(), got.complete), (0, false));
    }

    #[test]
    fn metadata_limits_and_malformed() {
        // More names than MAX_NAMES: the first are kept, the walk says incomplete.
        let many: Vec<MetaTopic> = (0..MAX_NAMES + 3)
            .map(|i| MetaTopic {
                name: Some(format!("t{i}")),
                id: [1 + (i % 250) as u8; 16],
                parts: Vec::new(),
            })
            .collect();
        let got = meta_walk(12, &[&metadata(12, 1, &many, false)]);
        assert_eq!((got.names.len(), got.complete), (MAX_NAMES, false));
        // A huge replica count is passed over by count, never allocated: the walk waits.
        let mut b = metadata(12, 0, &[], false);
        b.truncate(b.len() - 1); // drop the body tags
        let mut w = TopicWalker::metadata_response(12);
        w.feed(&b[..b.len() - 1]); // up to the topic count
        let mut t = vec![2u8]; // one topic
        t.extend(0i16.to_be_bytes());
        t.extend(compact("big"));
        t.extend([7u8; 16]);
        t.push(0);
        t.push(2); // one partition
        t.extend([0u8; 14]);
        t.extend([0xff, 0xff, 0xff, 0xff, 0x07]); // replica count: i32::MAX
        w.feed(&t);
        w.feed(&[0u8; 4096]);
        assert!(w.buffer_capacity() <= NAME_KEEP);
        let got = w.finish();
        assert!(!got.complete);
        assert_eq!(got.names, vec![([7u8; 16], "big".to_string())]);
        // A varint too long stops the walk.
        let mut w = TopicWalker::metadata_response(12);
        w.feed(&[0, 0, 0, 9, 0, 0, 0, 0, 0]);
        w.feed(&[0xff; 8]);
        assert_eq!(w.finish(), Walked::default());
    }

    fn arb_meta_topic() -> impl Strategy<Value = MetaTopic> {
        (
            prop::option::of("[a-z._-]{0,12}"),
            1u8..,
            prop::collection::vec(0usize..5, 0..4),
        )
            .prop_map(|(name, id, parts)| MetaTopic {
                name,
                id: [id; 16],
                parts,
            })
    }

    proptest! {
        #[test]
        fn metadata_split_anywhere_and_gaps(
            version in 10i16..14,
            brokers in 0usize..4,
            topics in prop::collection::vec(arb_meta_topic(), 0..6),
            tags in any::<bool>(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
        ) {
            let data = metadata(version, brokers, &topics, tags);
            let whole = meta_walk(version, &[&data]);
            let want: Vec<([u8; 16], String)> = topics
                .iter()
                .filter_map(|t| t.name.clone().filter(|n| !n.is_empty()).map(|n| (t.id, n)))
                .collect();
            prop_assert!(whole.complete);
            prop_assert_eq!(&whole.names, &want);
            prop_assert_eq!(&meta_walk(version, &split(&data, &cuts)), &whole);
            // Every other piece lost: what is named is still right.
            let mut w = TopicWalker::metadata_response(version);
            for (i, p) in split(&data, &cuts).iter().enumerate() {
                if i % 2 == 1 {
                    w.gap(p.len() as u64);
                } else {
                    w.feed(p);
                }
            }
            let got = w.finish();
            prop_assert!(got.names.iter().all(|n| want.contains(n)));
        }

        #[test]
        fn metadata_random_bytes_never_panic(
            version in 0i16..20,
            data in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut w = TopicWalker::metadata_response(version);
            w.feed(&data);
            prop_assert!(w.buffer_capacity() <= NAME_KEEP);
            prop_assert!(w.finish().names.len() <= MAX_NAMES);
        }
    }

    // ---- Gaps, partial entries, limits ---------------------------------------------------------

    /// Produce v3: topic "t", partition 0 with a batch of 5 records and 5000 bytes of records,
    /// partition 1 with a batch of 2 (10 bytes of records); and where partition 0's record set
    /// ends.
    fn big_produce() -> (Vec<u8>, usize) {
        let mut b = 0i16.to_be_bytes().to_vec();
        b.extend(3i16.to_be_bytes());
        b.extend(1i32.to_be_bytes());
        b.extend(string("c"));
        b.extend((-1i16).to_be_bytes());
        b.extend(1i16.to_be_bytes());
        b.extend(30_000i32.to_be_bytes());
        b.extend(1i32.to_be_bytes());
        b.extend(string("t"));
        b.extend(2i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(bytes(&batch(5, 5000)));
        let end = b.len();
        b.extend(1i32.to_be_bytes());
        b.extend(bytes(&batch(2, 10)));
        (b, end)
    }

    #[test]
    fn gap_in_record_data() {
        let (b, end) = big_produce();
        let whole = walk(false, 3, &[&b]);
        assert_eq!(whole.topics, vec![figures("t", 7, 5061 + 71)]);
        assert!(whole.complete);
        let mut w = TopicWalker::produce_request(3);
        w.feed(&b[..100]);
        w.gap((end - 100) as u64);
        w.feed(&b[end..]);
        assert_eq!(w.finish(), whole);
        // The gap also takes the next partition's index (not needed).
        let mut w = TopicWalker::produce_request(3);
        w.feed(&b[..100]);
        w.gap((end + 4 - 100) as u64);
        w.feed(&b[end + 4..]);
        assert_eq!(w.finish(), whole);
        // Several gaps in the same data.
        let mut w = TopicWalker::produce_request(3);
        w.feed(&b[..100]);
        w.gap(1000);
        w.feed(&b[1100..1200]);
        w.gap((end - 1200) as u64);
        w.feed(&b[end..]);
        assert_eq!(w.finish(), whole);
    }

    #[test]
    fn gap_over_partition_header() {
        let (b, end) = big_produce();
        let mut w = TopicWalker::produce_request(3);
        w.feed(&b[..100]);
        w.gap((end + 10 - 100) as u64);
        w.feed(&b[end + 10..]);
        let got = w.finish();
        assert_eq!(got.topics, vec![figures("t", 5, 5061)]);
        assert!(!got.complete);
        // A gap inside a structural field (the topic name).
        let mut w = TopicWalker::produce_request(3);
        w.feed(&b[..25]);
        w.gap(1);
        w.feed(&b[26..]);
        assert_eq!(w.finish(), Walked::default());
        // Inside the partitions count: the topic was named.
        let mut w = TopicWalker::produce_request(3);
        w.feed(&b[..27]);
        w.gap(1);
        w.feed(&b[28..]);
        let got = w.finish();
        assert_eq!(got.topics, vec![figures("t", 0, 0)]);
        assert!(!got.complete);
        // A gap in the batch header's fields not read (crc .. baseSequence): harmless.
        let mut w = TopicWalker::produce_request(3);
        w.feed(&b[..60]);
        w.gap(30);
        w.feed(&b[90..]);
        assert_eq!(w.finish(), walk(false, 3, &[&b]));
        // A gap inside recordsCount: the set's size is kept.
        let mut w = TopicWalker::produce_request(3);
        w.feed(&b[..96]);
        w.gap(1);
        w.feed(&b[97..]);
        let got = w.finish();
        assert_eq!(got.topics, vec![figures("t", 0, 5061)]);
        assert!(!got.complete);
        // Lost bytes at the very end: complete when only record data was lost, not when
        // the bytes just ended.
        let mut w = TopicWalker::produce_request(3);
        w.feed(&b[..b.len() - 1]);
        w.gap(1);
        assert!(w.finish().complete);
        let mut w = TopicWalker::produce_request(3);
        w.feed(&b[..b.len() - 1]);
        assert!(!w.finish().complete);
    }

    #[test]
    fn fetch_partial_trailing_batch() {
        for trailing in [5, 11, 12, 40, 70] {
            let mut set = batch(3, 10);
            set.extend(legacy(0, 2));
            set.extend(partial(trailing));
            let mut b = 5i32.to_be_bytes().to_vec();
            b.extend(0i32.to_be_bytes());
            b.extend(1i32.to_be_bytes());
            b.extend(string("p"));
            b.extend(1i32.to_be_bytes());
            b.extend([0u8; 14]);
            b.extend(bytes(&set));
            let got = walk(true, 1, &[&b]);
            assert_eq!(
                got,
                Walked {
                    topics: vec![figures("p", 4, set.len() as u64)],
                    complete: true,
                    names: Vec::new(),
                },
                "trailing {trailing}"
            );
        }
        // A partial entry whose declared length is far beyond the set.
        let mut set = batch(3, 0);
        set.extend(0i64.to_be_bytes());
        set.extend(i32::MAX.to_be_bytes());
        set.extend([1u8; 20]);
        let mut b = 5i32.to_be_bytes().to_vec();
        b.extend(1i32.to_be_bytes());
        b.extend(string("p"));
        b.extend(1i32.to_be_bytes());
        b.extend([0u8; 14]);
        b.extend(bytes(&set));
        let got = walk(true, 0, &[&b]);
        assert_eq!(got.topics, vec![figures("p", 3, set.len() as u64)]);
        assert!(got.complete);
    }

    #[test]
    fn long_names_and_too_many_topics() {
        let long = "x".repeat(1000);
        let mut b = produce_head(2, None);
        b.extend([0, 1, 0, 0, 0, 10]);
        b.extend(72i32.to_be_bytes());
        for i in 0..70 {
            let name = if i == 0 {
                long.clone()
            } else {
                format!("t{i}")
            };
            b.extend(string(&name));
            b.extend(1i32.to_be_bytes());
            b.extend(0i32.to_be_bytes());
            b.extend(bytes(&legacy(0, 0)));
        }
        // Known names still merge past the limit.
        for name in [&long, "t1"] {
            b.extend(string(name));
            b.extend(1i32.to_be_bytes());
            b.extend(0i32.to_be_bytes());
            b.extend(bytes(&legacy(0, 0)));
        }
        let got = walk(false, 2, &[&b]);
        assert!(!got.complete);
        assert_eq!(got.topics.len(), MAX_TOPICS);
        assert_eq!(got.topics[0], figures(&long[..NAME_KEEP], 2, 52));
        assert_eq!(got.topics[1], figures("t1", 2, 52));
        assert_eq!(got.topics[63].topic, "t63");
        // A multi-byte character cut at the limit is dropped.
        let name = format!("{}é", "y".repeat(255));
        let mut b = produce_head(0, None);
        b.extend([0, 1, 0, 0, 0, 10, 0, 0, 0, 1]);
        b.extend(string(&name));
        b.extend(0i32.to_be_bytes());
        let got = walk(false, 0, &[&b]);
        assert_eq!(got.topics, vec![figures(&"y".repeat(255), 0, 0)]);
        assert!(got.complete);
    }

    #[test]
    fn malformed_bodies_stop() {
        let head = |b: &mut Vec<u8>| {
            b.extend([0, 1, 0, 0, 0, 10, 0, 0, 0, 1]);
            b.extend(string("t"));
            b.extend(1i32.to_be_bytes());
            b.extend(0i32.to_be_bytes());
        };
        // Negative length other than -1.
        let mut b = produce_head(0, None);
        head(&mut b);
        b.extend((-2i32).to_be_bytes());
        let got = walk(false, 0, &[&b]);
        assert_eq!(got.topics, vec![figures("t", 0, 0)]);
        assert!(!got.complete);
        // Negative recordsCount; then more topics are ignored.
        let mut b = produce_head(3, None);
        b.extend([0xff, 0xff]);
        head(&mut b);
        b.extend(bytes(&batch(-1, 0)));
        let got = walk(false, 3, &[&b, &b]);
        assert_eq!(got.topics, vec![figures("t", 0, 61)]);
        assert!(!got.complete);
        // Unknown magic.
        let mut set = batch(1, 0);
        set[16] = 3;
        let mut b = produce_head(3, None);
        b.extend([0xff, 0xff]);
        head(&mut b);
        b.extend(bytes(&set));
        assert!(!walk(false, 3, &[&b]).complete);
        // A batch shorter than its header.
        let mut set = batch(1, 0);
        set[8..12].copy_from_slice(&20i32.to_be_bytes());
        let mut b = produce_head(3, None);
        b.extend([0xff, 0xff]);
        head(&mut b);
        b.extend(bytes(&set));
        assert!(!walk(false, 3, &[&b]).complete);
        // A varint over 5 bytes (flexible header tags).
        let mut b = produce_head(9, Some(&[0x80, 0x80, 0x80, 0x80, 0x80, 0]));
        b.extend([0, 0, 1, 0, 0, 0, 10, 1, 0]);
        assert!(!walk(false, 9, &[&b]).complete);
        // A 5-byte varint over 32 bits.
        let mut b = produce_head(9, Some(&[0xff, 0xff, 0xff, 0xff, 0x1f]));
        b.extend([0, 0, 1, 0, 0, 0, 10, 1, 0]);
        assert!(!walk(false, 9, &[&b]).complete);
        // A null topic name.
        let mut b = produce_head(0, None);
        b.extend([0, 1, 0, 0, 0, 10, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 0]);
        assert!(!walk(false, 0, &[&b]).complete);
        // Negative versions.
        assert_eq!(walk(false, -1, &[&b]), Walked::default());
        assert_eq!(walk(true, -1, &[&b]), Walked::default());
    }

    #[test]
    fn huge_counts_and_sizes_do_not_allocate() {
        // A topics count of 2^31 - 1 and one real topic: runs at once, incomplete.
        let mut b = produce_head(0, None);
        b.extend([0, 1, 0, 0, 0, 10]);
        b.extend(0x7fff_ffffi32.to_be_bytes());
        b.extend(string("t"));
        b.extend(0x7fff_ffffi32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(bytes(&legacy(0, 0)));
        let start = Instant::now();
        let got = walk(false, 0, &[&b]);
        assert_eq!(got.topics, vec![figures("t", 1, 26)]);
        assert!(!got.complete);
        // A record set of 2^31 - 1 bytes in a short message.
        let mut b = produce_head(0, None);
        b.extend([0, 1, 0, 0, 0, 10, 0, 0, 0, 1]);
        b.extend(string("t"));
        b.extend(1i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(0x7fff_ffffi32.to_be_bytes());
        b.extend(batch(4, 100));
        let mut w = TopicWalker::produce_request(0);
        w.feed(&b);
        assert!(w.buffer_capacity() <= NAME_KEEP);
        let got = w.finish();
        assert_eq!(got.topics, vec![figures("t", 4, 0x7fff_ffff)]);
        assert!(!got.complete);
        // Fetch: 2^31 - 1 aborted transactions, compact counts near the limit.
        let mut b = 5i32.to_be_bytes().to_vec();
        b.extend([0u8; 4]);
        b.extend(1i32.to_be_bytes());
        b.extend(string("t"));
        b.extend(1i32.to_be_bytes());
        b.extend([0u8; 30]);
        b.extend(0x7fff_ffffi32.to_be_bytes());
        b.extend([0u8; 100]);
        let got = walk(true, 5, &[&b]);
        assert_eq!(got.topics, vec![figures("t", 0, 0)]);
        assert!(!got.complete);
        let mut b = 5i32.to_be_bytes().to_vec();
        b.push(0);
        b.extend([0u8; 10]);
        b.extend([0xff, 0xff, 0xff, 0xff, 0x07]); // 2^31 topics
        b.extend(compact("t"));
        b.extend([0x80, 0x80, 0x80, 0x80, 0x08]); // 2^31 partitions
        let got = walk(true, 12, &[&b]);
        assert_eq!(got.topics, vec![figures("t", 0, 0)]);
        assert!(!got.complete);
        // Over i32::MAX: malformed.
        b.truncate(b.len() - 5);
        b.extend([0x82, 0x80, 0x80, 0x80, 0x08]);
        assert!(!walk(true, 12, &[&b]).complete);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn ended_early_or_empty() {
        assert_eq!(walk(false, 7, &[]), Walked::default());
        assert_eq!(walk(true, 12, &[&[0, 0]]), Walked::default());
        // No topics at all: complete; bytes past the topics array are ignored.
        let mut b = 5i32.to_be_bytes().to_vec();
        b.extend([0u8; 4]);
        b.extend(0i32.to_be_bytes());
        let got = walk(true, 1, &[&b, &[1, 2, 3]]);
        assert_eq!(
            got,
            Walked {
                topics: Vec::new(),
                complete: true,
                names: Vec::new(),
            }
        );
        let mut w = TopicWalker::fetch_response(1);
        w.feed(&b);
        w.gap(1 << 40);
        w.feed(&[9; 100]);
        assert!(w.finish().complete);
    }

    // ---- Generated messages ------------------------------------------------------------------

    fn arb_entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            3 => (0i32..1000, 0usize..300)
                .prop_map(|(count, payload)| Entry::Batch { count, payload }),
            1 => (0u8..2, 0usize..300)
                .prop_map(|(magic, payload)| Entry::Legacy { magic, payload }),
        ]
    }

    fn arb_part() -> impl Strategy<Value = Part> {
        (
            prop::option::of(prop::collection::vec(arb_entry(), 0..3)),
            prop_oneof![Just(0usize), 0usize..30],
            prop::option::of(0usize..3),
        )
            .prop_map(|(set, trailing, aborted)| Part {
                set,
                trailing,
                aborted,
            })
    }

    fn arb_topic() -> impl Strategy<Value = Topic> {
        (
            "[a-c]{0,3}",
            prop::array::uniform16(0u8..2),
            prop::collection::vec(arb_part(), 0..4),
        )
            .prop_map(|(name, id, parts)| Topic { name, id, parts })
    }

    fn arb_msg() -> impl Strategy<Value = Msg> {
        (
            any::<bool>(),
            0i16..18,
            prop::option::of("[a-z]{0,5}"),
            prop_oneof![Just(0usize), Just(3), Just(200)],
            prop::collection::vec(arb_topic(), 0..4),
        )
            .prop_map(|(fetch, version, txn, tag, topics)| Msg {
                fetch,
                version: if fetch { version } else { version % 14 },
                txn,
                tag,
                topics,
            })
    }

    proptest! {
        #[test]
        fn split_anywhere(
            m in arb_msg(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
        ) {
            let data = encode(&m);
            let whole = walk(m.fetch, m.version, &[&data]);
            prop_assert_eq!(&whole, &expected(&m));
            prop_assert_eq!(walk(m.fetch, m.version, &split(&data, &cuts)), whole);
        }

        #[test]
        fn gaps_keep_figures_when_complete(
            m in arb_msg(),
            cuts in prop::collection::vec(any::<usize>(), 1..8),
        ) {
            // Every other piece is lost: when the walk still says complete, the figures are
            // exactly the message's.
            let data = encode(&m);
            let pieces = split(&data, &cuts);
            let mut w = walker(m.fetch, m.version);
            for (i, p) in pieces.iter().enumerate() {
                if i % 2 == 1 {
                    w.gap(p.len() as u64);
                } else {
                    w.feed(p);
                }
            }
            let got = w.finish();
            if got.complete {
                prop_assert_eq!(got, expected(&m));
            }
        }

        #[test]
        fn random_bytes_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..4096),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
            fetch in any::<bool>(),
            version in 0i16..20,
        ) {
            let whole = walk(fetch, version, &[&data]);
            prop_assert!(whole.topics.len() <= MAX_TOPICS);
            prop_assert_eq!(walk(fetch, version, &split(&data, &cuts)), whole);
        }
    }

    // ---- Fuzz campaign -----------------------------------------------------------------------

    /// xorshift64*.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
        fn size(&mut self, n: u64) -> usize {
            self.below(n) as usize
        }
    }

    fn random_name(r: &mut Rng) -> String {
        if r.below(50) == 0 {
            return "n".repeat(200 + r.size(200));
        }
        let len = r.size(4);
        (0..len)
            .map(|_| char::from(b'a' + r.below(6) as u8))
            .collect()
    }

    fn random_msg(r: &mut Rng) -> Msg {
        let fetch = r.below(2) == 0;
        let version = r.below(if fetch { 18 } else { 14 }) as i16;
        let ntopics = if r.below(40) == 0 {
            60 + r.size(20)
        } else {
            r.size(5)
        };
        let topics = (0..ntopics)
            .map(|_| {
                let mut id = [0u8; 16];
                id[0] = r.below(3) as u8;
                Topic {
                    name: random_name(r),
                    id,
                    parts: (0..r.below(4))
                        .map(|_| Part {
                            set: (r.below(5) != 0).then(|| {
                                (0..r.below(4))
                                    .map(|_| {
                                        let payload = if r.below(20) == 0 {
                                            r.size(20_000)
                                        } else {
                                            r.size(300)
                                        };
                                        if r.below(4) == 0 {
                                            Entry::Legacy {
                                                magic: r.below(2) as u8,
                                                payload,
                                            }
                                        } else {
                                            Entry::Batch {
                                                count: r.below(5000) as i32,
                                                payload,
                                            }
                                        }
                                    })
                                    .collect()
                            }),
                            trailing: if r.below(3) == 0 { r.size(80) } else { 0 },
                            aborted: (r.below(3) != 0).then(|| r.size(3)),
                        })
                        .collect(),
                }
            })
            .collect();
        Msg {
            fetch,
            version,
            txn: (r.below(2) == 0).then(|| random_name(r)),
            tag: [0, 0, 1, 5, 300][r.size(5)],
            topics,
        }
    }

    fn mutate(r: &mut Rng, data: &mut Vec<u8>) {
        for _ in 0..1 + r.below(6) {
            let at = r.size(data.len() as u64 + 1);
            match r.below(6) {
                0 if at < data.len() => data[at] ^= 1 << r.below(8),
                1 if at < data.len() => data[at] = r.next() as u8,
                2 => {
                    let n = r.size(16);
                    let junk: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
                    data.splice(at..at, junk);
                }
                3 => {
                    let end = (at + r.size(32)).min(data.len());
                    data.drain(at..end);
                }
                4 => data.truncate(at),
                _ => {
                    let v: [u8; 4] = [
                        [0xff; 4],
                        [0x7f, 0xff, 0xff, 0xff],
                        [0x80, 0, 0, 0],
                        [0; 4],
                        [0xff, 0xff, 0xff, 0xfe],
                    ][r.size(5)];
                    for (i, b) in v.iter().enumerate() {
                        if let Some(d) = data.get_mut(at + i) {
                            *d = *b;
                        }
                    }
                }
            }
        }
    }

    /// Feeds `data` in random pieces; with `gaps`, some pieces are lost instead. Checks the
    /// buffer bound after every call.
    fn random_walk(r: &mut Rng, w: &mut TopicWalker, data: &[u8], gaps: bool) {
        let mut rest = data;
        while !rest.is_empty() {
            let n = match r.below(4) {
                0 => 1 + r.size(8),
                1 => 1 + r.size(rest.len() as u64),
                _ => 1 + r.size(200),
            }
            .min(rest.len());
            let (piece, tail) = rest.split_at(n);
            if gaps && r.below(6) == 0 {
                w.gap(piece.len() as u64);
            } else {
                w.feed(piece);
            }
            assert!(w.buffer_capacity() <= NAME_KEEP);
            rest = tail;
        }
        if gaps && r.below(4) == 0 {
            w.gap(r.below(1 << 20));
        }
    }

    /// A campaign's length (`GG_FUZZ_SECS`, default 600 s) and a fresh seed, printed.
    fn campaign(name: &str) -> (u64, u64) {
        let secs: u64 = std::env::var("GG_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600);
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        println!("{name}: seed {seed:#x}, {secs} s");
        (secs, seed)
    }

    #[test]
    #[ignore = "long-running fuzz campaign: GG_FUZZ_SECS (default 600)"]
    fn fuzz_topic_walker_campaign() {
        let (secs, seed) = campaign("fuzz_topic_walker_campaign");
        let mut r = Rng(seed);
        let start = Instant::now();
        let (mut inputs, mut complete, mut bytes_fed) = (0u64, 0u64, 0u64);
        while start.elapsed() < Duration::from_secs(secs) {
            for _ in 0..256 {
                inputs += 1;
                let kind = r.below(3);
                let (fetch, version, data, model) = if kind == 0 {
                    let len = r.size(4097);
                    let data: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
                    (r.below(2) == 0, r.below(22) as i16 - 1, data, None)
                } else {
                    let m = random_msg(&mut r);
                    let mut data = encode(&m);
                    if kind == 2 {
                        mutate(&mut r, &mut data);
                    }
                    (m.fetch, m.version, data, (kind == 1).then_some(m))
                };
                bytes_fed += data.len() as u64;
                let whole = walk(fetch, version, &[&data]);
                assert!(whole.topics.len() <= MAX_TOPICS);
                if let Some(m) = &model {
                    assert_eq!(whole, expected(m), "{m:?}");
                }
                // Random pieces: the same result.
                let mut w = walker(fetch, version);
                random_walk(&mut r, &mut w, &data, false);
                assert_eq!(w.finish(), whole, "seed {seed:#x}");
                // Random gaps: complete only with the message's own figures.
                let mut w = walker(fetch, version);
                random_walk(&mut r, &mut w, &data, true);
                let gapped = w.finish();
                assert!(gapped.topics.len() <= MAX_TOPICS);
                if gapped.complete {
                    complete += 1;
                    if let Some(m) = &model {
                        assert_eq!(gapped, expected(m), "seed {seed:#x}");
                    }
                }
            }
        }
        let (mb, took) = (bytes_fed >> 20, start.elapsed());
        println!("fuzz_topic_walker_campaign: {inputs} inputs ({mb} MB) in {took:.0?}");
        println!("fuzz_topic_walker_campaign: {complete} gapped walks complete (figures checked)");
    }

    #[test]
    #[ignore = "long-running fuzz campaign: GG_FUZZ_SECS (default 600)"]
    fn fuzz_metadata_walker_campaign() {
        let (secs, seed) = campaign("fuzz_metadata_walker_campaign");
        let mut r = Rng(seed);
        let start = Instant::now();
        let (mut inputs, mut bytes_fed) = (0u64, 0u64);
        while start.elapsed() < Duration::from_secs(secs) {
            for _ in 0..256 {
                inputs += 1;
                let version = 8 + r.below(8) as i16;
                let topics: Vec<MetaTopic> = (0..r.below(6))
                    .map(|_| MetaTopic {
                        name: (r.below(5) != 0).then(|| random_name(&mut r)),
                        id: [r.next() as u8; 16],
                        parts: (0..r.below(4)).map(|_| r.size(6)).collect(),
                    })
                    .collect();
                let mut data = metadata(version, r.size(4), &topics, r.below(2) == 0);
                let kind = r.below(3);
                if kind == 1 {
                    mutate(&mut r, &mut data);
                } else if kind == 2 {
                    data = (0..r.size(2048)).map(|_| r.next() as u8).collect();
                }
                bytes_fed += data.len() as u64;
                let whole = meta_walk(version, &[&data]);
                assert!(whole.names.len() <= MAX_NAMES && whole.topics.is_empty());
                if kind == 0 && version >= METADATA_IDS_FROM {
                    let want: Vec<([u8; 16], String)> = topics
                        .iter()
                        .filter(|t| t.id != [0; 16])
                        .filter_map(|t| {
                            let n = t.name.as_deref().filter(|n| !n.is_empty())?;
                            Some((t.id, n.get(..NAME_KEEP).unwrap_or(n).to_string()))
                        })
                        .collect();
                    assert!(whole.complete, "seed {seed:#x}");
                    assert_eq!(whole.names, want, "seed {seed:#x}");
                }
                let mut w = TopicWalker::metadata_response(version);
                random_walk(&mut r, &mut w, &data, false);
                assert_eq!(w.finish(), whole, "seed {seed:#x}");
                let mut w = TopicWalker::metadata_response(version);
                random_walk(&mut r, &mut w, &data, true);
                let gapped = w.finish();
                assert!(gapped.names.iter().all(|n| whole.names.contains(n)) || kind != 0);
            }
        }
        let (mb, took) = (bytes_fed >> 20, start.elapsed());
        println!("fuzz_metadata_walker_campaign: {inputs} inputs ({mb} MB) in {took:.0?}");
    }
}
