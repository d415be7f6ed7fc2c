//! Fuzz campaigns of the l7 parsers and of the connection tracker (issue 17), through the public
//! API only. One `#[ignore]`d test per parser and one for the tracker; each runs for
//! `GG_FUZZ_SECS` seconds (default 600):
//!
//! ```text
//! GG_FUZZ_SECS=600 cargo test -p l7-protocol --release --test fuzz_campaign -- \
//!     --ignored --nocapture --test-threads 1
//! ```
//!
//! Each input is drawn from a time-seeded xorshift generator (its seed is printed):
//! `GG_FUZZ_SEED` replays a whole campaign, `GG_FUZZ_INPUT` the one input a failure printed.
//! Inputs are of three kinds: random bytes (pure, protocol-token soup, or after a valid prefix),
//! valid streams built by a small generator per protocol (several messages concatenated), and
//! those valid streams mutated (bit flips, inserts, deletes, truncation, length fields and
//! numbers overwritten with huge values).
//!
//! Every input, in the direction it was made for, is checked for:
//! - no panic; messages in bounds (direction, `api` / error code at most [`MAX_TEXT`] printable
//!   bytes, requests without status and responses with one, at most [`MAX_TOPICS`] topics), and
//!   their `len`s adding up to at most the bytes fed;
//! - split anywhere: fed whole or in random pieces, the same messages and the same first error
//!   (the crate's rule for any input, not only valid ones);
//! - errors are final: after one, every `feed` and `gap` is `Desynchronised` (DNS over UDP
//!   instead reads every datagram afresh);
//! - gaps: some pieces lost instead of fed (`gap(piece length)`); when every gap is accepted the
//!   messages (Kafka topic figures aside) and the error are those of the whole stream, else the
//!   gap's error is `Desynchronised` and the messages are a prefix of the whole stream's; then a
//!   gap of any size (up to `u64::MAX`) and more bytes, for no panic;
//! - valid inputs: no error (or the one the generator expects) and exactly the generator's
//!   messages (api, status, correlation, len, and Kafka topic figures).
//!
//! At the end each campaign prints its inputs, MB and inputs/s, and checks the process's
//! VmRSS stays under 512 MB.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use l7_protocol::kafka_topics::{TopicFigures, Walked, MAX_TOPICS};
use l7_protocol::tracker::{ConnInfo, Limits, Role, Tracker, Way, LATENCY_BOUNDS_US};
use l7_protocol::{
    api, detect, detect_over, dns, http, kafka, mysql, parser, text, Direction, Message,
    ParseError, Protocol, Status, StreamParser, Transport, MAX_PENDING, MAX_TEXT,
};

// ---- Harness -------------------------------------------------------------------------------

/// Resident memory the test process may reach, MB.
const RSS_LIMIT_MB: u64 = 512;

/// xorshift64* (as the Kafka topic walker's campaign).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.u64() % n
        }
    }
    fn size(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.size(items.len())].clone()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }
    /// `min + (0..n)` random bytes.
    fn some_bytes(&mut self, min: usize, n: usize) -> Vec<u8> {
        let len = min + self.size(n);
        self.bytes(len)
    }
    /// `min..=max` characters of `alphabet`.
    fn word(&mut self, alphabet: &[u8], min: usize, max: usize) -> String {
        let n = min + self.size(max - min + 1);
        (0..n)
            .map(|_| char::from(alphabet[self.size(alphabet.len())]))
            .collect()
    }
    /// `s` with each letter upper- or lower-cased at random.
    fn case(&mut self, s: &str) -> String {
        match self.below(3) {
            0 => s.to_ascii_uppercase(),
            1 => s.to_ascii_lowercase(),
            _ => s
                .chars()
                .map(|c| {
                    if self.one_in(2) {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect(),
        }
    }
    /// A length: mostly below `small`, one time in `rare` between `large` and twice it.
    fn len(&mut self, small: usize, rare: u64, large: usize) -> usize {
        if self.one_in(rare) {
            large + self.size(large)
        } else {
            self.size(small)
        }
    }
}

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const TCHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~";
const PRINTABLE: &[u8] = b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
/// Bytes that mean something to the text protocols, for random "token soup".
const TOKENS: &[u8] =
    b"\r\n\r\n\r\n0123456789abcdefABCDEF:;,  \t$*+-_#!=(%~>|/?.HTTPGETOS\x00\x01\xff";

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// A `/proc/self/status` figure (`VmRSS:`, `VmHWM:`) in MB.
fn proc_status_mb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn check_rss(name: &str) {
    if let Some(rss) = proc_status_mb("VmRSS:") {
        assert!(
            rss < RSS_LIMIT_MB,
            "{name}: VmRSS {rss} MB, over {RSS_LIMIT_MB} MB"
        );
    }
}

/// Which of the three kinds an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Random,
    Valid,
    Mutated,
}

/// One campaign's clock, seeds and counts.
struct Campaign {
    name: &'static str,
    seed: u64,
    master: Rng,
    replay: Option<u64>,
    secs: u64,
    start: Instant,
    inputs: u64,
    bytes: u64,
    kinds: [u64; 3],
    /// Messages compared with a generator's.
    checked: u64,
    /// Inputs whose whole stream ended in a parse error.
    errors: u64,
    /// Gaps accepted and refused (the lost pieces of the gap runs).
    gaps: [u64; 2],
}

impl Campaign {
    fn new(name: &'static str) -> Self {
        let secs = env_u64("GG_FUZZ_SECS").unwrap_or(600);
        let seed = env_u64("GG_FUZZ_SEED").unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        }) | 1;
        let replay = env_u64("GG_FUZZ_INPUT");
        match replay {
            Some(input) => println!("{name}: replaying the one input {input:#x}"),
            None => println!("{name}: seed {seed:#x}, {secs} s (replay: GG_FUZZ_SEED={seed:#x})"),
        }
        Campaign {
            name,
            seed,
            master: Rng::new(seed),
            replay,
            secs,
            start: Instant::now(),
            inputs: 0,
            bytes: 0,
            kinds: [0; 3],
            checked: 0,
            errors: 0,
            gaps: [0; 2],
        }
    }

    /// The next input's seed, while the campaign lasts.
    fn next_input(&mut self) -> Option<u64> {
        if let Some(input) = self.replay {
            return (self.inputs == 0).then_some(input);
        }
        if self.inputs & 4095 == 0 {
            check_rss(self.name);
        }
        if self.start.elapsed() >= Duration::from_secs(self.secs) {
            return None;
        }
        Some(self.master.u64())
    }

    fn count(&mut self, kind: Kind, bytes: usize) {
        self.inputs += 1;
        self.bytes += bytes as u64;
        self.kinds[kind as usize] += 1;
    }

    /// Runs one input's checks; on a failure (a panic of the parser or of a check) prints how
    /// to replay the input and what it was.
    fn guard<T>(&self, seed: u64, describe: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "{name}: FAILED at input #{n}, input seed {seed:#x}\n  replay this input: \
                     GG_FUZZ_INPUT={seed:#x} cargo test -p l7-protocol --release --test \
                     fuzz_campaign {name} -- --ignored --nocapture\n  replay the campaign: \
                     GG_FUZZ_SEED={campaign:#x}\n{what}",
                    name = self.name,
                    n = self.inputs,
                    campaign = self.seed,
                    what = describe(),
                );
                resume_unwind(e)
            }
        }
    }

    fn add(&mut self, checked: &Checked) {
        self.checked += checked.messages;
        self.errors += u64::from(checked.error);
        self.gaps[0] += checked.gaps[0];
        self.gaps[1] += checked.gaps[1];
    }

    fn finish(&self) {
        let took = self.start.elapsed();
        let rate = self.inputs as f64 / took.as_secs_f64().max(1e-9);
        println!(
            "{}: {} inputs ({} MB) in {took:.1?}: {rate:.0} inputs/s; random {}, valid {}, \
             mutated {}; {} messages checked against the generators; {} inputs ended in a \
             parse error; gaps: {} accepted, {} refused",
            self.name,
            self.inputs,
            self.bytes >> 20,
            self.kinds[0],
            self.kinds[1],
            self.kinds[2],
            self.checked,
            self.errors,
            self.gaps[0],
            self.gaps[1],
        );
        let (rss, hwm) = (proc_status_mb("VmRSS:"), proc_status_mb("VmHWM:"));
        println!(
            "{}: VmRSS {} MB, VmHWM {} MB",
            self.name,
            rss.map_or("?".into(), |v| v.to_string()),
            hwm.map_or("?".into(), |v| v.to_string()),
        );
        check_rss(self.name);
    }
}

/// `data` in hex (its first 1 KiB).
fn hex(data: &[u8]) -> String {
    let shown = &data[..data.len().min(1024)];
    let mut s: String = shown.iter().map(|b| format!("{b:02x}")).collect();
    if shown.len() < data.len() {
        s.push_str(&format!("... ({} bytes in all)", data.len()));
    }
    s
}

// ---- Inputs and expectations ---------------------------------------------------------------

/// What a generator says one message is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    api: Option<String>,
    status: Option<Status>,
    correlation: Option<u32>,
    len: u64,
    /// Kafka topic figures, checked when Some.
    topics: Option<Option<Walked>>,
}

impl Want {
    fn request(api: Option<String>, len: usize) -> Self {
        Want {
            api,
            status: None,
            correlation: None,
            len: len as u64,
            topics: None,
        }
    }
    fn response(status: Status, len: usize) -> Self {
        Want {
            api: None,
            status: Some(status),
            correlation: None,
            len: len as u64,
            topics: None,
        }
    }
    fn correlated(mut self, id: u32) -> Self {
        self.correlation = Some(id);
        self
    }
}

/// What a valid stream must give.
#[derive(Debug, Clone, Default)]
struct Expect {
    msgs: Vec<Want>,
    error: Option<ParseError>,
}

/// How the parser of an input is made (the concrete parsers' announcements included).
#[derive(Debug, Clone)]
enum Setup {
    Plain(Protocol),
    /// HTTP responses to requests of these methods.
    HttpResponses(Vec<&'static str>),
    /// Kafka responses to these `(correlation, api key, version)`.
    KafkaResponses(Vec<(u32, i16, i16)>),
    /// MySQL requests, these statements prepared.
    MysqlRequests(Vec<(u32, String)>),
    DnsTcp,
}

impl Setup {
    fn make(&self, direction: Direction) -> Box<dyn StreamParser> {
        match self {
            Setup::Plain(p) => parser(*p, direction),
            Setup::HttpResponses(methods) => {
                let mut p = http::ResponseParser::new();
                for m in methods {
                    p.expect(m.as_bytes());
                }
                Box::new(p)
            }
            Setup::KafkaResponses(expected) => {
                let mut p = kafka::ResponseParser::new();
                for &(c, k, v) in expected {
                    p.expect(c, k, v);
                }
                Box::new(p)
            }
            Setup::MysqlRequests(statements) => {
                let mut p = mysql::RequestParser::new();
                for (id, verb) in statements {
                    p.statement_prepared(*id, verb.clone());
                }
                Box::new(p)
            }
            Setup::DnsTcp => dns::tcp_parser(direction),
        }
    }
}

/// A valid stream of one direction and what it must give.
struct Valid {
    data: Vec<u8>,
    expect: Expect,
    setup: Setup,
}

struct Input {
    kind: Kind,
    direction: Direction,
    setup: Setup,
    data: Vec<u8>,
    expect: Option<Expect>,
}

impl Input {
    fn describe(&self) -> String {
        format!(
            "  kind {:?}, direction {:?}, parser {:?}\n  expected {:?}\n  data ({} bytes): {}",
            self.kind,
            self.direction,
            self.setup,
            self.expect,
            self.data.len(),
            hex(&self.data)
        )
    }
}

/// Random bytes: pure, protocol tokens, or mostly zeros.
fn random_data(r: &mut Rng) -> Vec<u8> {
    let n = r.len(4097, 12, MAX_PENDING);
    match r.below(3) {
        0 => r.bytes(n),
        1 => (0..n).map(|_| TOKENS[r.size(TOKENS.len())]).collect(),
        _ => (0..n)
            .map(|_| if r.one_in(4) { r.u64() as u8 } else { 0 })
            .collect(),
    }
}

/// Mutates a valid stream: bit flips, byte changes, inserts, deletes, truncation, length
/// fields and decimal numbers overwritten with huge values.
fn mutate(r: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..1 + r.below(4) {
        // Length fields are often at the start: look there more.
        let at = if r.one_in(3) {
            r.size(data.len().min(16) + 1)
        } else {
            r.size(data.len() + 1)
        };
        match r.below(9) {
            0 if at < data.len() => data[at] ^= 1 << r.below(8),
            1 if at < data.len() => data[at] = r.u64() as u8,
            2 => {
                let junk = r.some_bytes(1, 16);
                data.splice(at..at, junk);
            }
            3 => {
                let end = (at + 1 + r.size(32)).min(data.len());
                data.drain(at.min(end)..end);
            }
            4 => data.truncate(at),
            5 => {
                let v: &[u8] = r.pick(&[
                    &[0xff, 0xff, 0xff, 0xff][..],
                    &[0x7f, 0xff, 0xff, 0xff],
                    &[0x80, 0, 0, 0],
                    &[0, 0, 0, 0],
                    &[0xff, 0xff, 0xff, 0xfe],
                    &[0xff, 0xff, 0xff],
                    &[0xff, 0xff],
                    &[0x40, 0, 0, 1],
                    &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                    &[0xfc, 0xff, 0xff],
                ]);
                for (i, b) in v.iter().enumerate() {
                    if let Some(d) = data.get_mut(at + i) {
                        *d = *b;
                    }
                }
            }
            6 => {
                // A decimal number (HTTP, RESP lengths) overwritten.
                let Some(start) = (at..data.len()).find(|&i| data[i].is_ascii_digit()) else {
                    continue;
                };
                let end = (start..data.len())
                    .find(|&i| !data[i].is_ascii_digit())
                    .unwrap_or(data.len());
                let huge: &[u8] = r.pick(&[
                    &b"99999999999999999999"[..],
                    b"18446744073709551615",
                    b"18446744073709551616",
                    b"9223372036854775807",
                    b"-9223372036854775808",
                    b"4294967296",
                    b"2147483648",
                    b"536870913",
                    b"-1",
                    b"-2",
                    b"0",
                    b"ffffffffffffffff",
                    b"10000000000000000",
                ]);
                data.splice(start..end, huge.iter().copied());
            }
            7 => {
                let special: &[u8] = r.pick(&[
                    &b"\r\n"[..],
                    b"\n",
                    b"\r",
                    b"\0",
                    b":",
                    b" ",
                    b"\r\n\r\n",
                    b"$",
                    b"*",
                    b";",
                ]);
                data.splice(at..at, special.iter().copied());
            }
            _ if !data.is_empty() => {
                // A slice repeated elsewhere.
                let from = r.size(data.len());
                let end = (from + 1 + r.size(64)).min(data.len());
                let copy = data[from..end].to_vec();
                data.splice(at..at, copy);
            }
            _ => {}
        }
    }
}

/// An input of a random kind for a random direction.
fn make_input(r: &mut Rng, generate: fn(&mut Rng, Direction) -> Valid) -> Input {
    let direction = if r.one_in(2) {
        Direction::Request
    } else {
        Direction::Response
    };
    let valid = generate(r, direction);
    let (kind, data, expect) = match r.below(3) {
        0 => {
            let mut data = Vec::new();
            if r.one_in(2) {
                // After a valid prefix, random bytes reach deeper states.
                let cut = r.size(valid.data.len() + 1);
                data.extend_from_slice(&valid.data[..cut]);
            }
            data.extend(random_data(r));
            (Kind::Random, data, None)
        }
        1 => (Kind::Valid, valid.data, Some(valid.expect)),
        _ => {
            let mut data = valid.data;
            mutate(r, &mut data);
            (Kind::Mutated, data, None)
        }
    };
    Input {
        kind,
        direction,
        setup: valid.setup,
        data,
        expect,
    }
}

// ---- Checks ---------------------------------------------------------------------------------

fn assert_text(what: &str, s: &str) {
    assert!(
        s.len() <= MAX_TEXT && s.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "{what} {s:?}: over MAX_TEXT or not printable ASCII"
    );
}

/// The bounds every message keeps.
fn check_messages(msgs: &[Message], direction: Direction) {
    for m in msgs {
        assert_eq!(m.direction, direction, "{m:?}");
        match direction {
            Direction::Request => assert!(m.status.is_none(), "a request with a status: {m:?}"),
            Direction::Response => {
                assert!(m.api.is_none(), "a response with an api: {m:?}");
                assert!(m.status.is_some(), "a response without a status: {m:?}");
            }
        }
        if let Some(a) = &m.api {
            assert_text("api", a);
        }
        if let Some(Status::Error(code)) = &m.status {
            assert_text("error code", code);
        }
        if let Some(t) = &m.topics {
            assert!(t.topics.len() <= MAX_TOPICS, "{} topics", t.topics.len());
        }
    }
}

/// The messages as a generator describes them.
fn project(msgs: &[Message]) -> Vec<Want> {
    msgs.iter()
        .map(|m| Want {
            api: m.api.clone(),
            status: m.status.clone(),
            correlation: m.correlation,
            len: m.len,
            topics: None,
        })
        .collect()
}

fn check_expected(msgs: &[Message], error: &Option<ParseError>, expect: &Expect) {
    let want: Vec<Want> = expect
        .msgs
        .iter()
        .map(|w| Want {
            topics: None,
            ..w.clone()
        })
        .collect();
    assert_eq!(
        project(msgs),
        want,
        "a valid stream's messages differ from the generator's"
    );
    assert_eq!(error, &expect.error, "a valid stream's result");
    for (m, w) in msgs.iter().zip(&expect.msgs) {
        if let Some(topics) = &w.topics {
            assert_eq!(
                m.topics.as_deref(),
                topics.as_ref(),
                "topic figures of {m:?}"
            );
        }
    }
}

/// Feeds `pieces` then an empty feed: the messages and the first error.
fn run_pieces(p: &mut dyn StreamParser, pieces: &[&[u8]]) -> (Vec<Message>, Option<ParseError>) {
    let mut out = Vec::new();
    for piece in pieces {
        if let Err(e) = p.feed(piece, &mut out) {
            return (out, Some(e));
        }
    }
    let e = p.feed(&[], &mut out).err();
    (out, e)
}

/// `data` cut into random pieces (some empty), in one of a few styles.
fn random_pieces<'a>(r: &mut Rng, data: &'a [u8]) -> Vec<&'a [u8]> {
    let style = if data.len() > 8192 {
        2 + r.below(3)
    } else {
        r.below(5)
    };
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if r.one_in(16) {
            pieces.push(&rest[..0]);
        }
        let n = match (style, r.below(4)) {
            (0, _) => 1,
            (1, _) => 1 + r.size(8),
            (2, _) => 1 + r.size(rest.len()),
            (3, 0) => 1 + r.size(8),
            (3, 1) => 1 + r.size(rest.len()),
            (3, _) => 1 + r.size(200),
            (_, 0) => 1 + r.size(rest.len()),
            _ => 1 + r.size(65536),
        }
        .min(rest.len());
        let (piece, tail) = rest.split_at(n);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// A failed parser stays failed: every `feed` and `gap` is `Desynchronised`, and yields
/// nothing.
fn assert_stays_failed(p: &mut dyn StreamParser, r: &mut Rng) {
    let desync = Err(ParseError::Desynchronised(p.protocol()));
    for _ in 0..1 + r.below(3) {
        let mut out = Vec::new();
        match r.below(3) {
            0 => assert_eq!(p.gap(1 + r.below(1 << 20)), desync, "gap after an error"),
            1 => assert_eq!(p.feed(&[], &mut out), desync, "empty feed after an error"),
            _ => {
                let more = r.some_bytes(1, 64);
                assert_eq!(p.feed(&more, &mut out), desync, "feed after an error");
            }
        }
        assert!(out.is_empty(), "messages after an error: {out:?}");
    }
}

/// Messages without their Kafka topic figures (lost record bytes change them).
fn without_topics(msgs: &[Message]) -> Vec<Message> {
    msgs.iter()
        .map(|m| Message {
            topics: None,
            ..m.clone()
        })
        .collect()
}

/// What one input's checks found.
#[derive(Default)]
struct Checked {
    /// Messages compared with the generator's.
    messages: u64,
    /// The whole stream ended in an error.
    error: bool,
    /// Gaps of lost pieces accepted and refused.
    gaps: [u64; 2],
}

/// Every check of one stream input (see the module's documentation).
fn check_stream(r: &mut Rng, input: &Input) -> Checked {
    let (data, direction) = (&input.data[..], input.direction);
    let make = || input.setup.make(direction);

    // Whole.
    let mut p = make();
    let (whole, whole_err) = run_pieces(p.as_mut(), &[data]);
    check_messages(&whole, direction);
    let total: u64 = whole.iter().map(|m| m.len).sum();
    assert!(
        total <= data.len() as u64,
        "the messages' lens add up to {total}, over the {} bytes fed",
        data.len()
    );
    if let Some(expect) = &input.expect {
        check_expected(&whole, &whole_err, expect);
    }
    if whole_err.is_some() {
        assert_stays_failed(p.as_mut(), r);
    }

    // In random pieces: the same.
    let pieces = random_pieces(r, data);
    let mut p = make();
    let (split, split_err) = run_pieces(p.as_mut(), &pieces);
    assert_eq!(
        split,
        whole,
        "fed in {} pieces: other messages",
        pieces.len()
    );
    assert_eq!(
        split_err,
        whole_err,
        "fed in {} pieces: other result",
        pieces.len()
    );
    if split_err.is_some() {
        assert_stays_failed(p.as_mut(), r);
    }

    let gaps = check_gaps(r, input, &whole, &whole_err);

    // Detection of the same bytes: no panic.
    let cut = r.size(data.len().min(512) + 1);
    let other = r.some_bytes(0, 64);
    let response = match r.below(3) {
        0 => None,
        1 => Some(&other[..]),
        _ => Some(&data[..cut]),
    };
    let _ = detect(&data[..cut], response, &Protocol::ALL);
    let _ = detect(&[], Some(&data[..cut]), &Protocol::ALL);
    let _ = detect_over(&data[..cut], response, &Protocol::ALL, Transport::Tcp);

    Checked {
        messages: input.expect.as_ref().map_or(0, |e| e.msgs.len() as u64),
        error: whole_err.is_some(),
        gaps,
    }
}

/// Some pieces lost (a gap of their length): accepted only where nothing is lost to the
/// parser; then a gap of any size. The lost pieces' gaps accepted and refused.
fn check_gaps(
    r: &mut Rng,
    input: &Input,
    whole: &[Message],
    whole_err: &Option<ParseError>,
) -> [u64; 2] {
    let direction = input.direction;
    let pieces = random_pieces(r, &input.data);
    let rate = 2 + r.below(8);
    let mut p = input.setup.make(direction);
    let desync = ParseError::Desynchronised(p.protocol());
    let mut out = Vec::new();
    let (mut err, mut gap_failed, mut gaps) = (None, false, [0; 2]);
    for piece in &pieces {
        let result = if !piece.is_empty() && r.one_in(rate) {
            let result = p.gap(piece.len() as u64);
            gap_failed = result.is_err();
            gaps[usize::from(gap_failed)] += 1;
            result
        } else {
            p.feed(piece, &mut out)
        };
        if let Err(e) = result {
            err = Some(e);
            break;
        }
    }
    if err.is_none() {
        err = p.feed(&[], &mut out).err();
    }
    check_messages(&out, direction);
    let (got, want) = (without_topics(&out), without_topics(whole));
    if gap_failed {
        assert_eq!(err, Some(desync.clone()), "a refused gap");
        assert!(
            want.starts_with(&got),
            "before a refused gap: messages {got:?}, not a prefix of {want:?}"
        );
    } else {
        assert_eq!(got, want, "gaps were accepted but the messages changed");
        assert_eq!(&err, whole_err, "gaps were accepted but the result changed");
    }
    if err.is_some() {
        assert_stays_failed(p.as_mut(), r);
        return gaps;
    }
    // Bytes lost that the stream does not show, of any size, then more bytes: no panic.
    let n = match r.below(5) {
        0 => 1 + r.below(16),
        1 => 1 + r.below(100_000),
        2 => 1 << 32,
        3 => 1 << 40,
        _ => u64::MAX,
    };
    match p.gap(n) {
        Err(e) => {
            assert_eq!(e, desync, "a refused gap");
            assert_stays_failed(p.as_mut(), r);
        }
        Ok(()) => {
            let more = random_data(r);
            let mut out = Vec::new();
            if p.feed(&more, &mut out).is_err() {
                assert_stays_failed(p.as_mut(), r);
            }
            check_messages(&out, direction);
        }
    }
    gaps
}

/// The campaign of one stream protocol.
fn stream_campaign(name: &'static str, generate: fn(&mut Rng, Direction) -> Valid) {
    let mut c = Campaign::new(name);
    while let Some(seed) = c.next_input() {
        let mut r = Rng::new(seed);
        let input = make_input(&mut r, generate);
        c.count(input.kind, input.data.len());
        let checked = c.guard(seed, || input.describe(), || check_stream(&mut r, &input));
        c.add(&checked);
    }
    c.finish();
}

// ---- HTTP -----------------------------------------------------------------------------------

const HTTP_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PROPFIND", "TRACE",
];

const HTTP_CODES: [u16; 22] = [
    200, 201, 202, 204, 206, 301, 302, 304, 307, 400, 401, 403, 404, 405, 409, 418, 429, 500, 502,
    503, 504, 599,
];

fn eol(r: &mut Rng) -> &'static str {
    if r.one_in(12) {
        "\n"
    } else {
        "\r\n"
    }
}

fn http_segment(r: &mut Rng) -> String {
    match r.below(10) {
        0 | 1 => r.word(DIGITS, 1, 9),
        2 => format!(
            "{}-{}-{}-{}-{}",
            r.word(HEX, 8, 8),
            r.word(HEX, 4, 4),
            r.word(HEX, 4, 4),
            r.word(HEX, 4, 4),
            r.word(HEX, 12, 12)
        ),
        3 => r.word(HEX, 8, 16),
        4 => r.word(ALNUM, 16, 24),
        5 => String::new(),
        6 => format!("%7E{}.json", r.word(LOWER, 1, 6)),
        _ => r.word(LOWER, 1, 10),
    }
}

fn http_path(r: &mut Rng) -> String {
    let n = if r.one_in(20) {
        9 + r.size(6)
    } else {
        r.size(5)
    };
    let mut path = String::new();
    for _ in 0..n {
        path.push('/');
        path.push_str(&http_segment(r));
    }
    if path.is_empty() || r.one_in(10) {
        path.push('/');
    }
    if r.one_in(40) {
        path.push_str(&"x".repeat(100 + r.size(300)));
    }
    path
}

/// How an HTTP body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpBody {
    Empty,
    Length(usize),
    Chunked,
    /// A response body until the connection closes (no framing, or a non-chunked coding).
    UntilClose,
}

/// The framing header lines of `body` (with a random spelling).
fn http_framing(r: &mut Rng, body: HttpBody) -> Vec<String> {
    match body {
        HttpBody::Empty => Vec::new(),
        HttpBody::Length(n) => {
            let name = r.pick(&["Content-Length", "content-length", "CONTENT-LENGTH"]);
            match r.below(6) {
                0 => vec![format!("{name}: {n}, {n}")],
                1 => vec![format!("{name}: {n}"), format!("Content-Length:{n}")],
                2 => vec![format!("{name}: \t {n}  ")],
                3 => vec![format!("{name}: 000{n}")],
                _ => vec![format!("{name}: {n}")],
            }
        }
        HttpBody::Chunked => match r.below(6) {
            0 => vec!["Transfer-Encoding: gzip, chunked".into()],
            1 => vec!["transfer-encoding: Chunked ".into()],
            2 => vec![
                "Transfer-Encoding: gzip".into(),
                "Transfer-Encoding: chunked".into(),
            ],
            3 => vec!["Transfer-Encoding: gzip,chunked,".into()],
            _ => vec!["Transfer-Encoding: chunked".into()],
        },
        HttpBody::UntilClose => {
            if r.one_in(3) {
                vec!["Transfer-Encoding: gzip".into()]
            } else {
                Vec::new()
            }
        }
    }
}

/// Header field lines (`Host` first, `framing` among the others), each with its line end.
fn http_fields(r: &mut Rng, framing: Vec<String>, out: &mut Vec<u8>) {
    // Groups: a field and its obsolete folded continuation lines.
    let mut groups: Vec<Vec<String>> = Vec::new();
    for _ in 0..r.size(6) {
        let name = if r.one_in(3) {
            r.word(TCHARS, 1, 16)
        } else {
            r.pick(&[
                "Accept",
                "User-Agent",
                "X-Request-Id",
                "Cookie",
                "Accept-Encoding",
                "Connection",
                "Cache-Control",
                "Authorization",
                "Date",
                "Server",
            ])
            .to_string()
        };
        let space = if r.one_in(4) { "" } else { " " };
        let mut group = vec![format!("{name}:{space}{}", r.word(PRINTABLE, 0, 60))];
        if r.one_in(20) {
            let fold = if r.one_in(2) { " " } else { "\t" };
            group.push(format!("{fold}folded {}", r.word(LOWER, 1, 8)));
        }
        groups.push(group);
    }
    // The framing lines together, in order (the last Transfer-Encoding counts).
    if !framing.is_empty() {
        let at = r.size(groups.len() + 1);
        groups.insert(at, framing);
    }
    let host = format!("Host: {}.example.com", r.word(LOWER, 1, 8));
    for line in std::iter::once(host).chain(groups.into_iter().flatten()) {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(eol(r).as_bytes());
    }
}

fn http_body(r: &mut Rng, body: HttpBody, out: &mut Vec<u8>) {
    match body {
        HttpBody::Empty => {}
        HttpBody::Length(n) => out.extend(r.bytes(n)),
        HttpBody::Chunked => {
            for _ in 0..r.size(5) {
                let n = 1 + r.len(100, 20, 20_000);
                let size = if r.one_in(2) {
                    format!("{n:x}")
                } else {
                    format!("{n:X}")
                };
                let zeros = if r.one_in(8) { "00" } else { "" };
                let ext = if r.one_in(4) { ";name=\"v\"" } else { "" };
                let space = if r.one_in(10) { " " } else { "" };
                out.extend(format!("{zeros}{size}{space}{ext}{}", eol(r)).as_bytes());
                out.extend(r.bytes(n));
                out.extend(eol(r).as_bytes());
            }
            out.extend(format!("0{}", eol(r)).as_bytes());
            for _ in 0..r.size(3) {
                out.extend(
                    format!(
                        "X-Trailer-{}: {}{}",
                        r.below(9),
                        r.word(LOWER, 0, 9),
                        eol(r)
                    )
                    .as_bytes(),
                );
            }
            out.extend(eol(r).as_bytes());
        }
        HttpBody::UntilClose => out.extend(r.some_bytes(0, 300)),
    }
}

fn http_request(r: &mut Rng) -> (Vec<u8>, Want) {
    let mut s = Vec::new();
    if r.one_in(15) {
        // Empty lines before a request line are ignored (and counted in its len).
        s.extend_from_slice(if r.one_in(2) { b"\r\n" } else { b"\r\n\n" });
    }
    let method = if r.one_in(15) {
        "CONNECT"
    } else {
        r.pick(&HTTP_METHODS)
    };
    let (target, named) = if method == "CONNECT" {
        let t = format!("{}.example:{}", r.word(LOWER, 1, 10), r.below(65536));
        (t.clone(), t)
    } else if method == "OPTIONS" && r.one_in(2) {
        ("*".to_string(), "*".to_string())
    } else {
        let path = http_path(r);
        let query = if r.one_in(3) {
            format!("?{}={}&b", r.word(LOWER, 1, 5), r.word(ALNUM, 0, 8))
        } else {
            String::new()
        };
        let fragment = if r.one_in(10) { "#top" } else { "" };
        match r.below(6) {
            0 => (
                format!("http://example.com:8080{path}{query}{fragment}"),
                api::template_path(&path),
            ),
            1 => (format!("https://example.com{query}"), "/".to_string()),
            _ => (
                format!("{path}{query}{fragment}"),
                api::template_path(&path),
            ),
        }
    };
    let version = if r.one_in(5) { "HTTP/1.0" } else { "HTTP/1.1" };
    s.extend(format!("{method} {target} {version}{}", eol(r)).as_bytes());
    let body = match (method, r.below(3)) {
        ("CONNECT", _) | (_, 0) => HttpBody::Empty,
        (_, 1) => HttpBody::Length(r.len(300, 25, 20_000)),
        _ => HttpBody::Chunked,
    };
    let framing = http_framing(r, body);
    http_fields(r, framing, &mut s);
    s.extend(eol(r).as_bytes());
    http_body(r, body, &mut s);
    let api = text(format!("{method} {named}").as_bytes());
    let len = s.len();
    (s, Want::request(Some(api), len))
}

/// One response to a `method` request; also whether it ends HTTP on the connection.
fn http_response(r: &mut Rng, method: &str, last: bool) -> (Vec<u8>, Want, bool) {
    let mut s = Vec::new();
    let interim = if r.one_in(4) { 1 + r.size(2) } else { 0 };
    for _ in 0..interim {
        s.extend_from_slice(r.pick(&[
            &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
            b"HTTP/1.1 102 Processing\n\n",
        ]));
    }
    let connect = method == "CONNECT";
    let code: u16 = match (connect, last) {
        (_, true) if r.one_in(10) => 101,
        (true, true) => r.pick(&[200, 200, 407, 502]),
        (true, false) => r.pick(&[403, 407, 502]),
        _ => r.pick(&HTTP_CODES),
    };
    let upgraded = code == 101 || (connect && (200..300).contains(&code));
    let version = if r.one_in(5) { "1.0" } else { "1.1" };
    let reason = r.pick(&["", " ", " OK", " Some Reason Phrase", " Not Found"]);
    s.extend(format!("HTTP/{version} {code}{reason}{}", eol(r)).as_bytes());
    let body = if upgraded || code == 204 || code == 304 || method == "HEAD" {
        // No body, whatever the framing fields say.
        let framing = match r.below(3) {
            0 => HttpBody::Length(r.size(5000)),
            1 => HttpBody::Chunked,
            _ => HttpBody::Empty,
        };
        if upgraded && framing != HttpBody::Empty {
            HttpBody::Empty
        } else {
            framing
        }
    } else if last && r.one_in(5) {
        HttpBody::UntilClose
    } else if r.one_in(2) {
        HttpBody::Length(r.len(300, 25, 20_000))
    } else {
        HttpBody::Chunked
    };
    let framing = http_framing(r, body);
    http_fields(r, framing, &mut s);
    s.extend(eol(r).as_bytes());
    let header_len = s.len();
    let bodyless = upgraded || code == 204 || code == 304 || method == "HEAD";
    if !bodyless {
        http_body(r, body, &mut s);
    }
    let status = if code >= 400 {
        Status::Error(code.to_string())
    } else {
        Status::Ok
    };
    let len = if body == HttpBody::UntilClose {
        header_len
    } else {
        s.len()
    };
    (s, Want::response(status, len), upgraded)
}

fn http_valid(r: &mut Rng, direction: Direction) -> Valid {
    let n = 1 + r.size(5);
    let (mut data, mut expect) = (Vec::new(), Expect::default());
    match direction {
        Direction::Request => {
            for _ in 0..n {
                let (bytes, want) = http_request(r);
                data.extend(bytes);
                expect.msgs.push(want);
            }
            Valid {
                data,
                expect,
                setup: Setup::Plain(Protocol::Http),
            }
        }
        Direction::Response => {
            let announce = r.one_in(2);
            let mut methods = Vec::new();
            for i in 0..n {
                let method = if announce {
                    r.pick(&["GET", "POST", "HEAD", "CONNECT", "DELETE"])
                } else {
                    "GET"
                };
                methods.push(method);
                let (bytes, want, upgraded) = http_response(r, method, i + 1 == n);
                data.extend(bytes);
                expect.msgs.push(want);
                if upgraded && r.one_in(2) {
                    // Bytes of the protocol switched to: not HTTP.
                    data.extend([0x81, 0x05]);
                    data.extend(r.some_bytes(0, 50));
                    expect.error = Some(ParseError::Desynchronised(Protocol::Http));
                }
            }
            if announce && r.one_in(4) {
                methods.push("GET");
            }
            let setup = if announce {
                Setup::HttpResponses(methods)
            } else {
                Setup::Plain(Protocol::Http)
            };
            Valid {
                data,
                expect,
                setup,
            }
        }
    }
}

// ---- Redis ----------------------------------------------------------------------------------

const REDIS_COMMANDS: [&str; 22] = [
    "GET",
    "SET",
    "DEL",
    "MGET",
    "HSET",
    "HGETALL",
    "LPUSH",
    "LRANGE",
    "ZADD",
    "EXPIRE",
    "PING",
    "INCR",
    "XADD",
    "EVALSHA",
    "PUBLISH",
    "SUBSCRIBE",
    "AUTH",
    "SELECT",
    "MULTI",
    "EXEC",
    "HELLO",
    "SCAN",
];

/// The parser's commands whose second word names the operation.
const REDIS_CONTAINERS: [&str; 14] = [
    "CLIENT", "CONFIG", "CLUSTER", "COMMAND", "MEMORY", "OBJECT", "SCRIPT", "XINFO", "XGROUP",
    "ACL", "FUNCTION", "MODULE", "SLOWLOG", "DEBUG",
];

const REDIS_ERRORS: [&str; 12] = [
    "ERR",
    "WRONGTYPE",
    "MOVED",
    "ASK",
    "NOAUTH",
    "BUSY",
    "NOSCRIPT",
    "LOADING",
    "READONLY",
    "EXECABORT",
    "OOM",
    "NOPERM",
];

/// A command's api from its first two elements (first [`KEEP`] bytes each).
fn redis_api(first: &[u8], second: Option<&[u8]>) -> Option<String> {
    const KEEP: usize = 64;
    let first = &first[..first.len().min(KEEP)];
    let mut name = first.to_ascii_uppercase();
    if let Some(second) = second.filter(|s| !s.is_empty()) {
        if REDIS_CONTAINERS
            .iter()
            .any(|c| c.as_bytes().eq_ignore_ascii_case(first))
        {
            name.push(b' ');
            name.extend(second[..second.len().min(KEEP)].to_ascii_uppercase());
        }
    }
    (!name.is_empty()).then(|| text(&name))
}

fn redis_request(r: &mut Rng, data: &mut Vec<u8>, msgs: &mut Vec<Want>) {
    if r.one_in(12) {
        // Ignored by the server (and not counted).
        data.extend_from_slice(r.pick(&[&b"*0\r\n"[..], b"*-1\r\n", b"\r\n", b"\n", b"  \r\n"]));
    }
    let container = r.one_in(3);
    let name = if container {
        let c = r.pick(&REDIS_CONTAINERS);
        r.case(c)
    } else if r.one_in(10) {
        r.word(ALNUM, 1, 12)
    } else {
        let c = r.pick(&REDIS_COMMANDS);
        r.case(c)
    };
    let sub = (container && !r.one_in(5)).then(|| {
        let s = r.pick(&[
            "GET", "SET", "SETNAME", "INFO", "LIST", "KILL", "USAGE", "help",
        ]);
        r.case(s)
    });
    let start = data.len();
    if r.one_in(4) {
        // Inline command.
        let mut words = vec![name];
        words.extend(sub);
        for _ in 0..r.size(3) {
            words.push(r.word(ALNUM, 1, 10));
        }
        let mut line = String::new();
        if r.one_in(10) {
            line.push(' ');
        }
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                line.push_str(r.pick(&[" ", "  ", "\t"]));
            }
            line.push_str(w);
        }
        line.push_str(if r.one_in(3) { "\n" } else { "\r\n" });
        data.extend(line.as_bytes());
        let api = redis_api(words[0].as_bytes(), words.get(1).map(|w| w.as_bytes()));
        msgs.push(Want::request(api, data.len() - start));
        return;
    }
    let mut elements: Vec<Vec<u8>> = vec![name.into_bytes()];
    elements.extend(sub.map(String::into_bytes));
    for _ in 0..r.size(4) {
        let n = r.len(100, 30, 20_000);
        elements.push(r.bytes(n));
    }
    if r.one_in(30) {
        elements[0].clear();
    }
    data.extend(format!("*{}\r\n", elements.len()).as_bytes());
    for e in &elements {
        data.extend(format!("${}\r\n", e.len()).as_bytes());
        data.extend_from_slice(e);
        data.extend_from_slice(b"\r\n");
    }
    let api = redis_api(&elements[0], elements.get(1).map(Vec::as_slice));
    msgs.push(Want::request(api, data.len() - start));
}

/// An error reply's text and the code the parser gives it.
fn redis_error(r: &mut Rng) -> (String, String) {
    match r.below(8) {
        0 => (String::new(), "ERR".into()),
        1 => (" leading space".into(), "ERR".into()),
        _ => {
            let code = if r.one_in(4) {
                r.word(UPPER, 1, 12)
            } else {
                r.pick(&REDIS_ERRORS).to_string()
            };
            let message = if r.one_in(4) {
                String::new()
            } else {
                format!(" {}", r.word(PRINTABLE, 0, 80))
            };
            (format!("{code}{message}"), code)
        }
    }
}

/// Appends a RESP2/RESP3 value; its status as a top-level reply.
fn resp_value(r: &mut Rng, depth: u32, out: &mut Vec<u8>) -> Status {
    if depth < 3 && r.one_in(3) {
        let n = r.size(5);
        let (head, values) = match r.below(4) {
            0 => {
                // An attribute, then the value it is about.
                let n = n.min(2);
                out.extend(format!("|{n}\r\n").as_bytes());
                for _ in 0..2 * n {
                    resp_value(r, depth + 1, out);
                }
                return resp_value(r, depth, out);
            }
            1 => ('*', n),
            2 => ('~', n),
            _ => ('%', 2 * n),
        };
        out.extend(format!("{head}{n}\r\n").as_bytes());
        for _ in 0..values {
            resp_value(r, depth + 1, out);
        }
        return Status::Ok;
    }
    match r.below(13) {
        0 | 1 => {
            out.extend(format!("+{}\r\n", r.word(PRINTABLE, 0, 40)).as_bytes());
            Status::Ok
        }
        2 => {
            let (line, code) = redis_error(r);
            out.extend(format!("-{line}\r\n").as_bytes());
            Status::Error(code)
        }
        3 => {
            let n = match r.below(4) {
                0 => format!("+{}", r.below(1000)),
                1 => i64::MIN.to_string(),
                _ => (r.u64() as i64).to_string(),
            };
            out.extend(format!(":{n}\r\n").as_bytes());
            Status::Ok
        }
        4 => {
            let n = r.len(200, 30, 20_000);
            out.extend(format!("${n}\r\n").as_bytes());
            out.extend(r.bytes(n));
            out.extend_from_slice(b"\r\n");
            Status::Ok
        }
        5 => {
            out.extend_from_slice(b"$-1\r\n");
            Status::Ok
        }
        6 => {
            out.extend_from_slice(b"_\r\n");
            Status::Ok
        }
        7 => {
            out.extend_from_slice(r.pick(&[
                &b",3.14\r\n"[..],
                b",inf\r\n",
                b",-nan\r\n",
                b",1e10\r\n",
            ]));
            Status::Ok
        }
        8 => {
            out.extend_from_slice(if r.one_in(2) { b"#t\r\n" } else { b"#f\r\n" });
            Status::Ok
        }
        9 => {
            out.extend(format!("({}\r\n", r.word(DIGITS, 1, 60)).as_bytes());
            Status::Ok
        }
        10 => {
            let (payload, code) = redis_error(r);
            out.extend(format!("!{}\r\n{payload}\r\n", payload.len()).as_bytes());
            Status::Error(code)
        }
        11 => {
            let body = format!("txt:{}", r.word(PRINTABLE, 0, 40));
            out.extend(format!("={}\r\n{body}\r\n", body.len()).as_bytes());
            Status::Ok
        }
        _ => {
            out.extend_from_slice(b"*-1\r\n");
            Status::Ok
        }
    }
}

fn redis_valid(r: &mut Rng, direction: Direction) -> Valid {
    let (mut data, mut expect) = (Vec::new(), Expect::default());
    for _ in 0..1 + r.size(6) {
        match direction {
            Direction::Request => redis_request(r, &mut data, &mut expect.msgs),
            Direction::Response if r.one_in(10) => {
                // A push message: not a reply, not yielded.
                let n = 1 + r.size(3);
                data.extend(format!(">{n}\r\n").as_bytes());
                for _ in 0..n {
                    resp_value(r, 1, &mut data);
                }
            }
            Direction::Response => {
                let start = data.len();
                let status = resp_value(r, 0, &mut data);
                expect.msgs.push(Want::response(status, data.len() - start));
            }
        }
    }
    Valid {
        data,
        expect,
        setup: Setup::Plain(Protocol::Redis),
    }
}

// ---- PostgreSQL -----------------------------------------------------------------------------

const SQL_VERBS: [&str; 19] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "ROLLBACK", "CREATE", "DROP",
    "ALTER", "SET", "SHOW", "COPY", "VACUUM", "EXPLAIN", "TRUNCATE", "LISTEN", "CALL", "MERGE",
];

/// An SQL statement and its verb (as the parsers name it).
fn sql(r: &mut Rng) -> (String, Option<String>) {
    if r.one_in(8) {
        let (s, v): (&str, Option<&str>) = r.pick(&[
            (
                "WITH a AS (SELECT 1), b AS (select ')') DELETE FROM t",
                Some("DELETE"),
            ),
            (
                "with recursive t(n) as (select 1 union all select n+1 from t) select n from t",
                Some("SELECT"),
            ),
            (
                "WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM x",
                Some("SELECT"),
            ),
            ("with x as (select 1)", Some("WITH")),
            ("", None),
            (";", None),
            ("   ", None),
            ("123", None),
            ("/* unterminated", None),
            ("-- only a comment", None),
        ]);
        return (s.to_string(), v.map(str::to_string));
    }
    let verb = r.pick(&SQL_VERBS);
    let prefix = r.pick(&["", " ", "\n\t ", "-- note\n", "/* c */ ", "(", "( /* x */ "]);
    let tail = r.word(b"abcdefghij ABCDEFGHIJ0123456789_=*,.$", 0, 60);
    let written = r.case(verb);
    (format!("{prefix}{written} {tail}"), Some(verb.to_string()))
}

fn pg_typed(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty];
    m.extend((body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstring(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}

/// The parser's bounded name → verb map (statements, portals).
struct PgNames {
    cap: usize,
    entries: VecDeque<(Vec<u8>, Option<String>)>,
}

impl PgNames {
    fn new(cap: usize) -> Self {
        PgNames {
            cap,
            entries: VecDeque::new(),
        }
    }
    fn insert(&mut self, name: &[u8], verb: Option<String>) {
        self.entries.retain(|(n, _)| n != name);
        if name.len() > 64 {
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

fn pg_startup() -> Vec<u8> {
    let params = b"user\0app\0database\0db\0application_name\0fuzz\0\0";
    let mut m = ((params.len() + 8) as u32).to_be_bytes().to_vec();
    m.extend(196_608u32.to_be_bytes());
    m.extend_from_slice(params);
    m
}

fn pg_frontend(r: &mut Rng) -> (Vec<u8>, Vec<Want>) {
    let mut s = Vec::new();
    let mut msgs = Vec::new();
    match r.below(6) {
        0 => {}
        1 => {
            s.extend(8u32.to_be_bytes());
            s.extend(80_877_103u32.to_be_bytes()); // SSLRequest
            s.extend(pg_startup());
        }
        2 => {
            s.extend(8u32.to_be_bytes());
            s.extend(80_877_104u32.to_be_bytes()); // GSSENCRequest
            s.extend(pg_startup());
        }
        3 => {
            s.extend(16u32.to_be_bytes());
            s.extend(80_877_102u32.to_be_bytes()); // CancelRequest
            s.extend(r.bytes(8));
        }
        _ => s.extend(pg_startup()),
    }
    // Bytes of typed messages since the last request yielded (startup messages are not).
    let mut acc = 0;
    if r.one_in(3) {
        let password = pg_typed(b'p', b"secret\0");
        acc += password.len();
        s.extend(password);
    }
    let (mut statements, mut portals) = (PgNames::new(256), PgNames::new(64));
    let long_name = "n".repeat(70);
    for _ in 0..1 + r.size(6) {
        let mut m = Vec::new();
        let api = match r.below(8) {
            0 | 1 => {
                let (q, verb) = sql(r);
                m.extend(pg_typed(b'Q', &cstring(q.as_bytes())));
                Some(verb)
            }
            2 => {
                let verb = r.pick(&SQL_VERBS);
                let q = format!(
                    "{verb} {}",
                    "x".repeat(MAX_PENDING + r.size(3 * MAX_PENDING))
                );
                m.extend(pg_typed(b'Q', &cstring(q.as_bytes())));
                Some(Some(verb.to_string()))
            }
            3 => {
                m.extend(pg_typed(b'F', &[0, 0, 4, 0, 0, 0, 0, 0, 0, 0]));
                Some(None)
            }
            4 => {
                m.extend(pg_typed(b'S', b""));
                Some(None)
            }
            _ => {
                // An extended-query batch, ended by a Sync.
                let stmt = r
                    .pick(&["", "s1", "stmt_2", long_name.as_str()])
                    .to_string();
                let portal = r.pick(&["", "p1"]).to_string();
                if !r.one_in(4) {
                    let (q, verb) = sql(r);
                    let mut body = cstring(stmt.as_bytes());
                    body.extend(cstring(q.as_bytes()));
                    body.extend([0, 1, 0, 0, 0, 23]);
                    m.extend(pg_typed(b'P', &body));
                    statements.insert(stmt.as_bytes(), verb);
                    if r.one_in(3) {
                        m.extend(pg_typed(
                            b'D',
                            &[b"S".as_slice(), &cstring(stmt.as_bytes())].concat(),
                        ));
                    }
                }
                let mut batch_api = None;
                if !r.one_in(5) {
                    let target = if r.one_in(8) {
                        "nope".to_string()
                    } else {
                        stmt
                    };
                    let mut body = cstring(portal.as_bytes());
                    body.extend(cstring(target.as_bytes()));
                    body.extend([0, 0, 0, 1, 0, 0, 0, 2, b'4', b'2', 0, 0]);
                    m.extend(pg_typed(b'B', &body));
                    portals.insert(portal.as_bytes(), statements.get(target.as_bytes()));
                    if r.one_in(3) {
                        m.extend(pg_typed(
                            b'D',
                            &[b"P".as_slice(), &cstring(portal.as_bytes())].concat(),
                        ));
                    }
                    for i in 0..1 + r.size(2) {
                        let target = if r.one_in(8) { "nope" } else { portal.as_str() };
                        let mut body = cstring(target.as_bytes());
                        body.extend(0u32.to_be_bytes());
                        m.extend(pg_typed(b'E', &body));
                        if i == 0 {
                            batch_api = portals.get(target.as_bytes());
                        }
                    }
                    if r.one_in(4) {
                        m.extend(pg_typed(b'H', b""));
                    }
                }
                if r.one_in(5) {
                    m.extend(pg_typed(
                        b'C',
                        &[b"S".as_slice(), &cstring(b"old")].concat(),
                    ));
                }
                m.extend(pg_typed(b'S', b""));
                Some(batch_api)
            }
        };
        if r.one_in(10) {
            // Copy data and the like, before the request: counted in it.
            let mut noise = pg_typed(b'd', &r.some_bytes(0, 100));
            noise.extend(pg_typed(b'c', b""));
            m.splice(0..0, noise);
        }
        acc += m.len();
        s.extend(m);
        if let Some(api) = api {
            msgs.push(Want::request(api, acc));
            acc = 0;
        }
    }
    if r.one_in(4) {
        s.extend(pg_typed(b'X', b""));
    }
    (s, msgs)
}

fn pg_error(r: &mut Rng) -> (Vec<u8>, String) {
    if r.one_in(8) {
        return (
            pg_typed(b'E', b"SFATAL\0VFATAL\0Mno code\0\0"),
            "?".to_string(),
        );
    }
    let state = if r.one_in(4) {
        r.word(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", 5, 5)
    } else {
        r.pick(&[
            "42P01", "23505", "40001", "57014", "42601", "22P02", "08006", "XX000",
        ])
        .to_string()
    };
    let body = format!(
        "SERROR\0VERROR\0C{state}\0M{}\0Fparse.c\0L42\0\0",
        r.word(PRINTABLE, 0, 60)
    );
    (pg_typed(b'E', body.as_bytes()), state)
}

fn pg_backend(r: &mut Rng) -> (Vec<u8>, Vec<Want>) {
    let mut s = Vec::new();
    let mut msgs = Vec::new();
    if !r.one_in(4) {
        if r.one_in(3) {
            s.push(b'N'); // SSL refused
        }
        if r.one_in(2) {
            s.extend(pg_typed(
                b'R',
                &[0, 0, 0, 10, b'S', b'C', b'R', b'A', b'M', 0, 0],
            ));
            s.extend(pg_typed(b'R', &[&[0, 0, 0, 11][..], &r.bytes(40)].concat()));
            s.extend(pg_typed(b'R', &[&[0, 0, 0, 12][..], &r.bytes(30)].concat()));
        }
        s.extend(pg_typed(b'R', &[0, 0, 0, 0]));
        for _ in 0..r.size(4) {
            s.extend(pg_typed(b'S', b"server_version\x0016.1\0"));
        }
        s.extend(pg_typed(b'K', &r.bytes(8)));
        s.extend(pg_typed(b'Z', b"I"));
    }
    let row = |r: &mut Rng| {
        let n = r.len(60, 30, MAX_PENDING);
        let mut body = 1u16.to_be_bytes().to_vec();
        body.extend((n as u32).to_be_bytes());
        body.extend(r.bytes(n));
        pg_typed(b'D', &body)
    };
    for _ in 0..1 + r.size(6) {
        let start = s.len();
        let mut error = None;
        if r.one_in(8) {
            s.extend(pg_typed(b'N', b"SNOTICE\0C00000\0Mhello\0\0"));
        }
        match r.below(9) {
            0 | 1 => {
                s.extend(pg_typed(
                    b'T',
                    &[
                        0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0, 0, 0, 0, 0, 0,
                    ],
                ));
                let rows = r.len(5, 20, 300);
                for _ in 0..rows {
                    s.extend(row(r));
                }
                s.extend(pg_typed(b'C', format!("SELECT {rows}\0").as_bytes()));
            }
            2 => {
                let (e, state) = pg_error(r);
                s.extend(e);
                error = Some(state);
            }
            3 => {
                s.extend(pg_typed(b'1', b""));
                s.extend(pg_typed(b'2', b""));
                if r.one_in(2) {
                    s.extend(pg_typed(b'n', b""));
                } else {
                    s.extend(pg_typed(b't', &[0, 1, 0, 0, 0, 23]));
                    s.extend(row(r));
                }
                if r.one_in(3) {
                    let (e, state) = pg_error(r);
                    s.extend(e);
                    error = Some(state);
                } else {
                    s.extend(pg_typed(
                        if r.one_in(4) { b's' } else { b'C' },
                        b"UPDATE 1\0",
                    ));
                }
            }
            4 => s.extend(pg_typed(b'C', b"INSERT 0 1\0")),
            5 => s.extend(pg_typed(b'I', b"")),
            6 => {
                s.extend(pg_typed(b'H', &[0, 0, 1, 0, 0]));
                for _ in 0..r.size(4) {
                    s.extend(pg_typed(b'd', &r.some_bytes(0, 80)));
                }
                s.extend(pg_typed(b'c', b""));
                s.extend(pg_typed(b'C', b"COPY 3\0"));
            }
            7 => {
                // Two errors: the first one counts.
                let (e, state) = pg_error(r);
                s.extend(e);
                s.extend(pg_error(r).0);
                error = Some(state);
            }
            _ => {}
        }
        if r.one_in(8) {
            s.extend(pg_typed(b'A', b"\0\0\0\x07chan\0payload\0"));
        }
        if r.one_in(8) {
            s.extend(pg_typed(b'S', b"TimeZone\0UTC\0"));
        }
        s.extend(pg_typed(b'Z', if error.is_some() { b"E" } else { b"I" }));
        let status = error.map_or(Status::Ok, Status::Error);
        msgs.push(Want::response(status, s.len() - start));
    }
    (s, msgs)
}

fn pg_valid(r: &mut Rng, direction: Direction) -> Valid {
    let (data, msgs) = match direction {
        Direction::Request => pg_frontend(r),
        Direction::Response => pg_backend(r),
    };
    Valid {
        data,
        expect: Expect { msgs, error: None },
        setup: Setup::Plain(Protocol::Pgsql),
    }
}

// ---- MySQL ----------------------------------------------------------------------------------

const MAX_PAYLOAD: usize = 0xff_ffff;

fn my_packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    p.push(seq);
    p.extend_from_slice(payload);
    p
}

fn lenenc(n: u64) -> Vec<u8> {
    match n {
        0..=0xfa => vec![n as u8],
        0xfb..=0xffff => [&[0xfc][..], &(n as u16).to_le_bytes()].concat(),
        0x1_0000..=0xff_ffff => [&[0xfd][..], &(n as u32).to_le_bytes()[..3]].concat(),
        _ => [&[0xfe][..], &n.to_le_bytes()].concat(),
    }
}

fn lenenc_str(s: &[u8]) -> Vec<u8> {
    let mut v = lenenc(s.len() as u64);
    v.extend_from_slice(s);
    v
}

fn mysql_client(r: &mut Rng) -> (Vec<u8>, Vec<Want>, Vec<(u32, String)>) {
    let mut s = Vec::new();
    let mut msgs = Vec::new();
    let mut attributes = false;
    if !r.one_in(4) {
        attributes = r.one_in(3);
        let flags = 0x000f_a685u32 | if attributes { 1 << 27 } else { 0 };
        let mut p = flags.to_le_bytes().to_vec();
        p.extend([0, 0, 0, 1, 0x21]);
        p.extend([0; 23]);
        p.extend(b"root\0\x14");
        p.extend(r.bytes(20));
        p.extend(b"mysql_native_password\0");
        s.extend(my_packet(1, &p));
        if r.one_in(3) {
            s.extend(my_packet(3, &r.bytes(20)));
        }
    }
    let announced: Vec<(u32, String)> = (0..r.size(4))
        .map(|i| (i as u32 + 1, r.pick(&SQL_VERBS).to_string()))
        .collect();
    let mut statements = announced.clone();
    for _ in 0..1 + r.size(8) {
        let (payload, api): (Vec<u8>, Option<Option<String>>) = match r.below(12) {
            0..=2 => {
                let (q, verb) = sql(r);
                let mut p = vec![0x03];
                let mut api = verb;
                if attributes {
                    if r.one_in(4) {
                        // One query attribute: no verb.
                        p.extend([1, 1, 0, 0xfe, 0]);
                        p.extend(lenenc_str(b"attr"));
                        p.extend(lenenc_str(b"value"));
                        api = None;
                    } else {
                        p.extend([0, 1]);
                    }
                }
                p.extend(q.as_bytes());
                (p, Some(api))
            }
            3 => {
                let (q, verb) = sql(r);
                ([&[0x16][..], q.as_bytes()].concat(), Some(verb))
            }
            4 => {
                let id = if r.one_in(4) {
                    r.u64() as u32
                } else {
                    1 + r.below(4) as u32
                };
                let mut p = vec![0x17];
                p.extend(id.to_le_bytes());
                p.extend([0, 1, 0, 0, 0]);
                p.extend(r.some_bytes(0, 40));
                let verb = statements
                    .iter()
                    .find(|(s, _)| *s == id)
                    .map(|(_, v)| v.clone());
                (p, Some(verb))
            }
            5 => {
                let id = 1 + r.below(4) as u32;
                statements.retain(|(s, _)| *s != id);
                ([&[0x19][..], &id.to_le_bytes()].concat(), None)
            }
            6 => {
                let mut p = vec![0x18];
                p.extend(1u32.to_le_bytes());
                p.extend([0, 0]);
                p.extend(r.some_bytes(0, 200));
                (p, None)
            }
            7 => {
                let (cmd, name): (u8, Option<&str>) = r.pick(&[
                    (0x0e, Some("PING")),
                    (0x02, Some("INIT_DB")),
                    (0x09, Some("STATISTICS")),
                    (0x04, Some("FIELD_LIST")),
                    (0x1a, Some("STMT_RESET")),
                    (0x1c, Some("STMT_FETCH")),
                    (0x1f, Some("RESET_CONNECTION")),
                    (0x1b, Some("SET_OPTION")),
                    (0x00, Some("SLEEP")),
                    (0x0d, Some("DEBUG")),
                    (0xfa, Some("STMT_BULK_EXECUTE")),
                    (0x20, None),
                    (0x80, None),
                    (0xf9, None),
                ]);
                let mut p = vec![cmd];
                p.extend(r.some_bytes(0, 20));
                (p, Some(name.map(str::to_string)))
            }
            8 => {
                // LOAD DATA LOCAL: the file follows in packets with other ids (skipped).
                let q = b"LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE t";
                let attributes: &[u8] = if attributes { &[0, 1] } else { &[] };
                let p = [&[0x03][..], attributes, q].concat();
                s.extend(my_packet(0, &p));
                let mut seq = 2u8;
                for _ in 0..r.size(4) {
                    s.extend(my_packet(seq, &r.some_bytes(1, 300)));
                    seq = seq.wrapping_add(1);
                }
                s.extend(my_packet(seq, b""));
                msgs.push(Want::request(Some("LOAD".into()), 4 + p.len()));
                continue;
            }
            9 => {
                // COM_CHANGE_USER and its authentication packets (skipped).
                let p = [&[0x11][..], b"bob\0\x14", &r.bytes(20), b"db\0"].concat();
                s.extend(my_packet(0, &p));
                s.extend(my_packet(2, &r.bytes(20)));
                msgs.push(Want::request(Some("CHANGE_USER".into()), 4 + p.len()));
                continue;
            }
            10 if r.one_in(2000) => {
                // A query of more than one packet: one request, the rest skipped.
                let extra = r.size(100);
                let mut first = vec![0x03];
                if attributes {
                    first.extend([0, 1]);
                }
                first.extend(b"INSERT INTO t VALUES ");
                first.resize(MAX_PAYLOAD, b'1');
                s.extend(my_packet(0, &first));
                s.extend(my_packet(1, &vec![b'2'; extra]));
                msgs.push(Want::request(
                    Some("INSERT".into()),
                    8 + MAX_PAYLOAD + extra,
                ));
                continue;
            }
            _ => {
                let verb = r.pick(&SQL_VERBS);
                let q = format!(
                    "{verb} {}",
                    "y".repeat(MAX_PENDING + r.size(3 * MAX_PENDING))
                );
                let attributes: &[u8] = if attributes { &[0, 1] } else { &[] };
                let p = [&[0x03][..], attributes, q.as_bytes()].concat();
                (p, Some(Some(verb.to_string())))
            }
        };
        let packet = my_packet(0, &payload);
        if let Some(api) = api {
            msgs.push(Want::request(api, packet.len()));
        }
        s.extend(packet);
    }
    if r.one_in(4) {
        s.extend(my_packet(0, &[0x01])); // COM_QUIT: no response, not yielded
    }
    (s, msgs, announced)
}

/// A server response being written: packets numbered from 1.
struct MyResponse {
    data: Vec<u8>,
    seq: u8,
}

impl MyResponse {
    fn new() -> Self {
        MyResponse {
            data: Vec::new(),
            seq: 1,
        }
    }
    fn packet(&mut self, payload: &[u8]) {
        self.data.extend(my_packet(self.seq, payload));
        self.seq = self.seq.wrapping_add(1);
    }
}

fn my_ok(r: &mut Rng, status: u16) -> Vec<u8> {
    let mut p = vec![0x00];
    p.extend(lenenc(r.pick(&[0, 1, 42, 300, 70_000, 1 << 40])));
    p.extend(lenenc(r.below(3)));
    p.extend(status.to_le_bytes());
    p.extend([0, 0]);
    if r.one_in(4) {
        p.extend(r.word(PRINTABLE, 0, 30).as_bytes());
    }
    if p.len() == 12 && p[9] == 0 {
        // Not to be taken for a COM_STMT_PREPARE_OK.
        p.push(b'x');
    }
    p
}

fn my_err(r: &mut Rng) -> (Vec<u8>, Status) {
    let code: u16 = r.pick(&[1146, 1064, 1045, 1062, 1213, 1317, 2013, 0xffff]);
    let mut p = vec![0xff];
    p.extend(code.to_le_bytes());
    if r.one_in(5) {
        p.extend(b"no sqlstate");
    } else {
        p.extend(b"#42S02");
        p.extend(r.word(PRINTABLE, 0, 40).as_bytes());
    }
    (p, Status::Error(code.to_string()))
}

fn my_eof(status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend(status.to_le_bytes());
    p
}

fn my_column(r: &mut Rng) -> Vec<u8> {
    let name = r.word(LOWER, 1, 8);
    let mut p = b"\x03def\x02db\x01t\x01t".to_vec();
    p.extend(lenenc_str(name.as_bytes()));
    p.extend(lenenc_str(name.as_bytes()));
    p.extend([0x0c, 0x3f, 0, 11, 0, 0, 0, 3, 0, 0, 0, 0, 0]);
    p
}

fn my_row(r: &mut Rng, cols: u64) -> Vec<u8> {
    let mut p = Vec::new();
    for _ in 0..cols {
        if r.one_in(8) {
            p.push(0xfb); // NULL
        } else {
            let n = r.len(20, 100, MAX_PENDING);
            p.extend(lenenc_str(&r.bytes(n)));
        }
    }
    p
}

/// A result set (column count, definitions, rows, terminator); its status.
fn my_result_set(r: &mut Rng, w: &mut MyResponse, more: bool, classic: bool) -> Status {
    let cols = if r.one_in(50) {
        251 + r.below(60)
    } else {
        1 + r.below(4)
    };
    w.packet(&lenenc(cols));
    for _ in 0..cols {
        let c = my_column(r);
        w.packet(&c);
    }
    if classic {
        w.packet(&my_eof(2));
    }
    let rows = r.len(10, 30, 300);
    let fail_at = r.one_in(6).then(|| r.size(rows + 1));
    for i in 0..rows {
        if fail_at == Some(i) {
            break;
        }
        let row = my_row(r, cols.min(4));
        w.packet(&row);
    }
    if fail_at.is_some() {
        let (e, status) = my_err(r);
        w.packet(&e);
        return status;
    }
    let status = if more { 2 | 0x0008 } else { 2 };
    if classic {
        w.packet(&my_eof(status));
    } else {
        let mut ok = vec![0xfe, 0, 0];
        ok.extend(status.to_le_bytes());
        ok.extend([0, 0]);
        w.packet(&ok);
    }
    Status::Ok
}

fn mysql_server(r: &mut Rng) -> (Vec<u8>, Vec<Want>) {
    let mut s = Vec::new();
    let mut msgs = Vec::new();
    if !r.one_in(5) {
        let mut p = vec![0x0a];
        p.extend(b"8.0.36\0");
        p.extend([1, 0, 0, 0]);
        p.extend(b"abcdefgh\0");
        p.extend([0xff, 0xff, 0xff, 0, 0x02, 0, 0, 21]);
        p.extend([0; 10]);
        p.extend(b"ijklmnopqrst\0mysql_native_password\0");
        s.extend(my_packet(0, &p));
        match r.below(3) {
            0 => {
                s.extend(my_packet(
                    2,
                    b"\xfecaching_sha2_password\0abcdefghijklmnopqrst\0",
                ));
                s.extend(my_packet(4, &my_ok(r, 2)));
            }
            1 => {
                s.extend(my_packet(2, &[0x01, 0x03]));
                s.extend(my_packet(3, &my_ok(r, 2)));
            }
            _ => s.extend(my_packet(2, &my_ok(r, 2))),
        }
    }
    for _ in 0..1 + r.size(6) {
        let mut w = MyResponse::new();
        let (status, correlation) = match r.below(12) {
            0 | 1 => {
                let ok = my_ok(r, 2);
                w.packet(&ok);
                (Status::Ok, None)
            }
            2 => {
                let (e, status) = my_err(r);
                w.packet(&e);
                (status, None)
            }
            3 => {
                w.packet(&my_eof(2));
                (Status::Ok, None)
            }
            4 | 5 => {
                let classic = r.one_in(2);
                if r.one_in(4) {
                    // Several result sets, sequence ids going on.
                    let status = my_result_set(r, &mut w, true, classic);
                    if status != Status::Ok {
                        (status, None)
                    } else {
                        match r.below(3) {
                            0 => {
                                let ok = my_ok(r, 2);
                                w.packet(&ok);
                                (Status::Ok, None)
                            }
                            1 => {
                                let (e, status) = my_err(r);
                                w.packet(&e);
                                (status, None)
                            }
                            _ => (my_result_set(r, &mut w, false, classic), None),
                        }
                    }
                } else {
                    (my_result_set(r, &mut w, false, classic), None)
                }
            }
            6 => {
                // COM_STMT_PREPARE_OK, then its definitions (not counted, not yielded).
                let id = r.u64() as u32;
                let (cols, params) = (r.below(3) as u16, r.below(3) as u16);
                let mut p = vec![0x00];
                p.extend(id.to_le_bytes());
                p.extend(cols.to_le_bytes());
                p.extend(params.to_le_bytes());
                p.extend([0, 0, 0]);
                w.packet(&p);
                let start = w.data.len();
                let classic = r.one_in(2);
                for n in [params, cols] {
                    for _ in 0..n {
                        let c = my_column(r);
                        w.packet(&c);
                    }
                    if n > 0 && classic {
                        w.packet(&my_eof(2));
                    }
                }
                s.extend(&w.data[..start]);
                msgs.push(Want::response(Status::Ok, start).correlated(id));
                s.extend(&w.data[start..]);
                continue;
            }
            7 => {
                // LOCAL INFILE request; the client sends the file; then OK / ERR.
                w.packet(b"\xfb/tmp/x.csv");
                w.seq = w.seq.wrapping_add(1 + r.below(3) as u8);
                if r.one_in(3) {
                    let (e, status) = my_err(r);
                    w.packet(&e);
                    (status, None)
                } else {
                    let ok = my_ok(r, 2);
                    w.packet(&ok);
                    (Status::Ok, None)
                }
            }
            8 => {
                // AuthSwitchRequest answering COM_CHANGE_USER.
                w.packet(b"\xfemysql_native_password\0abcdefghijklmnopqrst\0");
                w.seq = w.seq.wrapping_add(1);
                if r.one_in(2) {
                    w.packet(&[0x01, 0x04]);
                    w.seq = w.seq.wrapping_add(1);
                }
                let ok = my_ok(r, 2);
                w.packet(&ok);
                (Status::Ok, None)
            }
            9 => {
                // COM_STATISTICS' text: complete when the next response starts.
                w.packet(b"Uptime: 1234  Threads: 2  Questions: 9  Slow queries: 0  Opens: 1");
                s.extend(&w.data);
                msgs.push(Want::response(Status::Ok, w.data.len()));
                let mut w = MyResponse::new();
                let ok = my_ok(r, 2);
                w.packet(&ok);
                s.extend(&w.data);
                msgs.push(Want::response(Status::Ok, w.data.len()));
                continue;
            }
            10 => {
                // A cursor: the EOF after the definitions ends the response.
                w.packet(&[1]);
                let c = my_column(r);
                w.packet(&c);
                w.packet(&my_eof(2 | 0x0040));
                (Status::Ok, None)
            }
            _ => {
                let (e, status) = my_err(r);
                w.packet(&e);
                (status, None)
            }
        };
        s.extend(&w.data);
        let mut want = Want::response(status, w.data.len());
        want.correlation = correlation;
        msgs.push(want);
        if r.one_in(10) {
            // A packet between responses with another id than 1 (the ERR of a server closing
            // an idle connection): skipped.
            let seq = r.pick(&[0u8, 2, 3, 200, 255]);
            let (e, _) = my_err(r);
            s.extend(my_packet(seq, &e));
        }
    }
    (s, msgs)
}

fn mysql_valid(r: &mut Rng, direction: Direction) -> Valid {
    match direction {
        Direction::Request => {
            let (data, msgs, announced) = mysql_client(r);
            let setup = if announced.is_empty() && r.one_in(2) {
                Setup::Plain(Protocol::Mysql)
            } else {
                Setup::MysqlRequests(announced)
            };
            Valid {
                data,
                expect: Expect { msgs, error: None },
                setup,
            }
        }
        Direction::Response => {
            let (data, msgs) = mysql_server(r);
            Valid {
                data,
                expect: Expect { msgs, error: None },
                setup: Setup::Plain(Protocol::Mysql),
            }
        }
    }
}

// ---- Kafka ----------------------------------------------------------------------------------

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;

fn uvarint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A writer of Kafka fields, flexible (compact, tagged) or not.
struct KWriter {
    v: Vec<u8>,
    flexible: bool,
    /// Bytes of the one tagged field of every tagged-field run (0: none).
    tag: usize,
}

impl KWriter {
    fn raw(&mut self, b: &[u8]) {
        self.v.extend_from_slice(b);
    }
    fn string(&mut self, s: Option<&str>) {
        match (s, self.flexible) {
            (None, false) => self.raw(&(-1i16).to_be_bytes()),
            (None, true) => self.v.push(0),
            (Some(s), false) => {
                self.raw(&(s.len() as i16).to_be_bytes());
                self.raw(s.as_bytes());
            }
            (Some(s), true) => {
                uvarint(&mut self.v, s.len() as u64 + 1);
                self.raw(s.as_bytes());
            }
        }
    }
    fn count(&mut self, n: usize) {
        if self.flexible {
            uvarint(&mut self.v, n as u64 + 1);
        } else {
            self.raw(&(n as i32).to_be_bytes());
        }
    }
    fn records(&mut self, b: Option<&[u8]>) {
        match (b, self.flexible) {
            (None, false) => self.raw(&(-1i32).to_be_bytes()),
            (None, true) => self.v.push(0),
            (Some(b), false) => {
                self.raw(&(b.len() as i32).to_be_bytes());
                self.raw(b);
            }
            (Some(b), true) => {
                uvarint(&mut self.v, b.len() as u64 + 1);
                self.raw(b);
            }
        }
    }
    fn tags(&mut self) {
        if !self.flexible {
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
}

/// A record set of RecordBatches (magic 2): its bytes and records.
fn k_record_set(r: &mut Rng) -> (Vec<u8>, u64) {
    let (mut set, mut records) = (Vec::new(), 0u64);
    for _ in 0..r.size(4) {
        let count = r.below(5000) as i32;
        let extra = r.len(200, 30, 30_000);
        let mut rest = vec![0u8; 4]; // partitionLeaderEpoch
        rest.push(2); // magic
        rest.extend([0u8; 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4]);
        rest.extend(count.to_be_bytes());
        rest.extend(r.bytes(extra));
        set.extend(r.u64().to_be_bytes()); // baseOffset
        set.extend((rest.len() as i32).to_be_bytes());
        set.extend(rest);
        records += count as u64;
    }
    (set, records)
}

/// A topic's name as the walker reports it (by id from v13).
fn k_topic_key(name: &str, id: &[u8; 16], by_id: bool) -> String {
    if by_id {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        format!("id:{hex}")
    } else {
        name.to_string()
    }
}

/// Adds one topic's figures to a walk's, merged by name.
fn k_add(walked: &mut Walked, topic: String, records: u64, bytes: u64) {
    match walked.topics.iter_mut().find(|f| f.topic == topic) {
        Some(f) => {
            f.records += records;
            f.bytes += bytes;
        }
        None => walked.topics.push(TopicFigures {
            topic,
            records,
            bytes,
        }),
    }
}

/// Topics, partitions and record sets of a Produce request or Fetch response: written by
/// `write_part` (which writes a partition's fields before its records); the walk's figures.
fn k_topics(
    r: &mut Rng,
    w: &mut KWriter,
    by_id: bool,
    write_part: &mut dyn FnMut(&mut Rng, &mut KWriter, usize, usize),
) -> Walked {
    let mut walked = Walked {
        topics: Vec::new(),
        complete: true,
        names: Vec::new(),
    };
    let n = r.size(4);
    w.count(n);
    for t in 0..n {
        let name = r.pick(&["orders", "events", "a", "logs.v2"]).to_string();
        let mut id = [0u8; 16];
        id[0] = r.below(3) as u8;
        id[15] = 7;
        if by_id {
            w.raw(&id);
        } else {
            w.string(Some(&name));
        }
        let key = k_topic_key(&name, &id, by_id);
        k_add(&mut walked, key.clone(), 0, 0);
        let parts = r.size(3);
        w.count(parts);
        for p in 0..parts {
            write_part(r, w, t, p);
            let (set, records) = k_record_set(r);
            if r.one_in(10) {
                w.records(None);
            } else {
                w.records(Some(&set));
                k_add(&mut walked, key.clone(), records, set.len() as u64);
            }
            w.tags();
        }
        w.tags();
    }
    w.tags();
    walked
}

/// A request: its bytes, what it must give, and its header.
fn kafka_request(r: &mut Rng, correlation: i32) -> (Vec<u8>, Want, (u32, i16, i16)) {
    let (key, version): (i16, i16) = match r.below(10) {
        0..=3 => (PRODUCE, r.below(14) as i16),
        4 => (FETCH, r.below(18) as i16),
        5 => (3, r.below(13) as i16),
        6 => (18, r.below(5) as i16),
        7 => (7, 0), // ControlledShutdown v0: no client id
        _ => (r.below(96) as i16, r.below(16) as i16),
    };
    let flexible = match key {
        PRODUCE => version >= 9,
        18 => version >= 3,
        _ => r.one_in(2),
    };
    let mut w = KWriter {
        v: Vec::new(),
        flexible: false,
        tag: r.pick(&[0, 0, 1, 5, 300]),
    };
    w.raw(&key.to_be_bytes());
    w.raw(&version.to_be_bytes());
    w.raw(&correlation.to_be_bytes());
    if !(key == 7 && version == 0) {
        let client = r.word(ALNUM, 0, 20);
        w.string((!r.one_in(10)).then_some(client.as_str()));
    }
    w.flexible = flexible;
    w.tags();
    let topics = if key == PRODUCE {
        if version >= 3 {
            let txn = r.word(LOWER, 1, 8);
            w.string(r.one_in(2).then_some(txn.as_str()));
        }
        w.raw(&r.pick(&[-1i16, 0, 1]).to_be_bytes());
        w.raw(&30_000i32.to_be_bytes());
        let walked = k_topics(r, &mut w, version >= 13, &mut |_, w, _, p| {
            w.raw(&(p as i32).to_be_bytes());
        });
        Some(Some(walked))
    } else {
        let n = r.len(100, 30, 50_000);
        w.raw(&r.bytes(n));
        Some(None)
    };
    let mut data = (w.v.len() as i32).to_be_bytes().to_vec();
    data.extend(&w.v);
    let mut want =
        Want::request(Some(kafka::api_name(key)), data.len()).correlated(correlation as u32);
    want.topics = topics;
    (data, want, (correlation as u32, key, version))
}

/// An error code, often none.
fn k_code(r: &mut Rng) -> i16 {
    if r.one_in(2) {
        0
    } else {
        r.pick(&[1, 3, 6, 7, 15, 16, 25, 27, 35, 58, 87, -1])
    }
}

/// The first flexible version of the APIs whose response error codes are read.
fn k_first_flexible(key: i16) -> Option<i16> {
    match key {
        PRODUCE => Some(9),
        FETCH => Some(12),
        10 => Some(3),
        11 => Some(6),
        12..=14 => Some(4),
        22 => Some(2),
        _ => None,
    }
}

/// A response to `key` v`version`; its status when the parser knows the API (`announced`) and
/// its topic figures (Fetch).
fn kafka_response(
    r: &mut Rng,
    correlation: u32,
    key: i16,
    version: i16,
    announced: bool,
) -> (Vec<u8>, Want) {
    let flexible = k_first_flexible(key).is_some_and(|f| version >= f);
    let mut w = KWriter {
        v: correlation.to_be_bytes().to_vec(),
        flexible,
        tag: r.pick(&[0, 0, 1, 5, 300]),
    };
    w.tags();
    // The throttle time precedes the error code from this version on.
    let throttle_from = match (key, version) {
        (18, _) => Some(i16::MAX),
        (10, 0..=3) | (12, 0..=4) | (13 | 14, 0..=5) => Some(1),
        (11, 0..=9) => Some(2),
        (22, 0..=5) => Some(0),
        _ => None,
    };
    let mut topics = None;
    let error = if let Some(from) = throttle_from {
        if version >= from {
            w.raw(&0i32.to_be_bytes());
        }
        let e = k_code(r);
        w.raw(&e.to_be_bytes());
        w.raw(&r.some_bytes(0, 40));
        e
    } else if key == PRODUCE && version <= 12 {
        let n = r.size(3);
        w.count(n);
        let mut first = 0;
        for t in 0..n {
            w.string(Some("orders"));
            let parts = r.size(3);
            w.count(parts);
            for p in 0..parts {
                let e = k_code(r);
                if t == 0 && p == 0 {
                    first = e;
                }
                w.raw(&(p as i32).to_be_bytes());
                w.raw(&e.to_be_bytes());
                w.raw(&[0; 16]);
                w.tags();
            }
            w.tags();
        }
        w.raw(&0i32.to_be_bytes());
        w.tags();
        first
    } else if key == FETCH && version <= 17 {
        if version >= 1 {
            w.raw(&0i32.to_be_bytes());
        }
        let top = if version >= 7 && r.one_in(4) {
            k_code(r)
        } else {
            0
        };
        if version >= 7 {
            w.raw(&top.to_be_bytes());
            w.raw(&9i32.to_be_bytes());
        }
        let mut first = None;
        let walked = k_topics(r, &mut w, version >= 13, &mut |r, w, t, p| {
            let e = if r.one_in(2) {
                0
            } else {
                r.pick(&[1i16, 3, 6])
            };
            if t == 0 && p == 0 {
                first = Some(e);
            }
            w.raw(&(p as i32).to_be_bytes());
            w.raw(&e.to_be_bytes());
            w.raw(&100i64.to_be_bytes());
            if version >= 4 {
                w.raw(&90i64.to_be_bytes());
            }
            if version >= 5 {
                w.raw(&0i64.to_be_bytes());
            }
            if version >= 4 {
                let aborted = r.size(3);
                w.count(aborted);
                for _ in 0..aborted {
                    w.raw(&[0x11; 16]);
                    w.tags();
                }
            }
            if version >= 11 {
                w.raw(&(-1i32).to_be_bytes());
            }
        });
        topics = Some(walked);
        if top != 0 {
            top
        } else {
            first.unwrap_or(0)
        }
    } else {
        let n = r.len(100, 30, 50_000);
        w.raw(&r.bytes(n));
        0
    };
    let mut data = (w.v.len() as i32).to_be_bytes().to_vec();
    data.extend(&w.v);
    let status = if announced && error != 0 {
        Status::Error(error.to_string())
    } else {
        Status::Ok
    };
    let mut want = Want::response(status, data.len()).correlated(correlation);
    // Announced Fetch responses are walked (beyond v17 with v17's layout: not checked).
    want.topics = match (key, announced) {
        (FETCH, true) if version > 17 => None,
        _ => Some(topics.filter(|_| announced)),
    };
    (data, want)
}

/// An api and version whose responses the parser reads (mostly), or any.
fn k_response_api(r: &mut Rng) -> (i16, i16) {
    match r.below(10) {
        0 => (18, r.below(5) as i16),
        1 => (10, r.below(5) as i16),
        2 => (11, r.below(11) as i16),
        3 => (r.pick(&[12, 13, 14]), r.below(7) as i16),
        4 => (22, r.below(7) as i16),
        5 | 6 => (PRODUCE, r.below(14) as i16),
        7 | 8 => (FETCH, r.below(19) as i16),
        _ => (r.below(96) as i16, r.below(16) as i16),
    }
}

fn kafka_valid(r: &mut Rng, direction: Direction) -> Valid {
    let (mut data, mut expect) = (Vec::new(), Expect::default());
    let mut correlation = r.u64() as i32;
    let n = 1 + r.size(5);
    match direction {
        Direction::Request => {
            for _ in 0..n {
                let (bytes, want, _) = kafka_request(r, correlation);
                data.extend(bytes);
                expect.msgs.push(want);
                correlation = correlation.wrapping_add(1 + r.below(3) as i32);
            }
            Valid {
                data,
                expect,
                setup: Setup::Plain(Protocol::Kafka),
            }
        }
        Direction::Response => {
            let announce = !r.one_in(4);
            let mut expected = Vec::new();
            for _ in 0..n {
                let (key, version) = k_response_api(r);
                let announced = announce && !r.one_in(8);
                if announced {
                    expected.push((correlation as u32, key, version));
                }
                let (bytes, want) = kafka_response(r, correlation as u32, key, version, announced);
                data.extend(bytes);
                expect.msgs.push(want);
                correlation = correlation.wrapping_add(1 + r.below(3) as i32);
            }
            if r.one_in(4) {
                // One whose response does not come.
                expected.push((correlation as u32, FETCH, 4));
            }
            // Announced in any order.
            if r.one_in(3) {
                expected.reverse();
            }
            let setup = if expected.is_empty() {
                Setup::Plain(Protocol::Kafka)
            } else {
                Setup::KafkaResponses(expected)
            };
            Valid {
                data,
                expect,
                setup,
            }
        }
    }
}

// ---- DNS ------------------------------------------------------------------------------------

fn qtype_name(t: u16) -> String {
    let name = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        50 => "NSEC3",
        52 => "TLSA",
        64 => "SVCB",
        65 => "HTTPS",
        251 => "IXFR",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        _ => return format!("TYPE{t}"),
    };
    name.to_string()
}

fn rcode_status(rcode: u16) -> Status {
    let name = match rcode {
        0 => return Status::Ok,
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        _ => return Status::Error(format!("RCODE{rcode}")),
    };
    Status::Error(name.to_string())
}

/// A name in wire form (at most 255 bytes).
fn dns_name(r: &mut Rng, out: &mut Vec<u8>) {
    let mut total = 1;
    let long = r.one_in(20);
    let labels = if long { 8 } else { r.size(5) };
    for _ in 0..labels {
        let len = if long { 63 } else { 1 + r.size(15) };
        if total + len + 1 > 255 {
            break;
        }
        total += len + 1;
        out.push(len as u8);
        out.extend(
            r.word(b"abcdefghijklmnopqrstuvwxyz0123456789-", len, len)
                .as_bytes(),
        );
    }
    out.push(0);
}

fn dns_header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend(flags.to_be_bytes());
    for c in counts {
        v.extend(c.to_be_bytes());
    }
    v
}

/// A query or a response (one message, no framing) and what it must give.
fn dns_message(r: &mut Rng, direction: Direction) -> (Vec<u8>, Want) {
    let id = r.u64() as u16;
    let qdcount: u16 = match r.below(12) {
        0 => 0,
        1 => 2,
        _ => 1,
    };
    let qtype: u16 = if r.one_in(4) {
        r.u64() as u16
    } else {
        r.pick(&[1, 28, 5, 15, 16, 33, 12, 65, 255, 257, 6, 2, 99])
    };
    let mut questions = Vec::new();
    for i in 0..qdcount {
        if i > 0 && r.one_in(2) {
            questions.extend([0xc0, 12]); // the first question's name
        } else {
            dns_name(r, &mut questions);
        }
        let t = if i == 0 { qtype } else { 1 };
        questions.extend(t.to_be_bytes());
        questions.extend(r.pick(&[1u16, 1, 3, 255]).to_be_bytes());
    }
    match direction {
        Direction::Request => {
            let opt = r.one_in(3);
            let opcode = if r.one_in(20) { 2 << 11 } else { 0 };
            let flags = opcode | if r.one_in(4) { 0 } else { 0x0100 };
            let mut m = dns_header(id, flags, [qdcount, 0, 0, u16::from(opt)]);
            m.extend(questions);
            if opt {
                m.extend([0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
            }
            let api = (qdcount > 0).then(|| qtype_name(qtype));
            let len = m.len();
            (m, Want::request(api, len).correlated(u32::from(id)))
        }
        Direction::Response => {
            let rcode = if r.one_in(2) { 0 } else { r.below(16) as u16 };
            let answers = r.size(4) as u16;
            let extra = r.below(2) as u16;
            let flags = 0x8000 | if r.one_in(3) { 0x0400 } else { 0 } | 0x0180 | rcode;
            let mut m = dns_header(id, flags, [qdcount, answers, 0, extra]);
            m.extend(questions);
            for _ in 0..answers + extra {
                if qdcount > 0 && r.one_in(2) {
                    m.extend([0xc0, 12]);
                } else {
                    dns_name(r, &mut m);
                }
                let (t, rdata): (u16, Vec<u8>) = match r.below(4) {
                    0 => (1, r.bytes(4)),
                    1 => (28, r.bytes(16)),
                    2 => {
                        let mut n = Vec::new();
                        dns_name(r, &mut n);
                        (5, n)
                    }
                    _ => (16, [&[20u8][..], r.word(LOWER, 20, 20).as_bytes()].concat()),
                };
                m.extend(t.to_be_bytes());
                m.extend(1u16.to_be_bytes());
                m.extend(300u32.to_be_bytes());
                m.extend((rdata.len() as u16).to_be_bytes());
                m.extend(rdata);
            }
            let len = m.len();
            (
                m,
                Want::response(rcode_status(rcode), len).correlated(u32::from(id)),
            )
        }
    }
}

/// DNS over TCP: messages framed by a 2-byte length.
fn dns_tcp_valid(r: &mut Rng, direction: Direction) -> Valid {
    let (mut data, mut expect) = (Vec::new(), Expect::default());
    for _ in 0..1 + r.size(5) {
        let (m, mut want) = dns_message(r, direction);
        data.extend((m.len() as u16).to_be_bytes());
        data.extend(m);
        want.len += 2;
        expect.msgs.push(want);
    }
    Valid {
        data,
        expect,
        setup: Setup::DnsTcp,
    }
}

/// DNS over UDP: datagrams, one per `feed`, each read afresh. Checks each datagram gives what
/// it gives alone (valid ones: the generator's message), whatever came before it, and that
/// gaps are harmless.
fn check_datagrams(
    r: &mut Rng,
    direction: Direction,
    datagrams: &[(Vec<u8>, Option<Want>)],
) -> Checked {
    let mut p = parser(Protocol::Dns, direction);
    let mut checked = Checked::default();
    for (d, want) in datagrams {
        if r.one_in(4) {
            assert_eq!(p.gap(r.u64()), Ok(()), "a gap over UDP");
        }
        let mut out = Vec::new();
        let result = p.feed(d, &mut out);
        let mut alone = Vec::new();
        let alone_result = parser(Protocol::Dns, direction).feed(d, &mut alone);
        assert_eq!(
            (&out, &result),
            (&alone, &alone_result),
            "a datagram after others"
        );
        check_messages(&out, direction);
        match &result {
            Ok(()) => {
                assert_eq!(out.len(), 1, "one message per datagram");
                assert_eq!(out[0].len, d.len() as u64);
            }
            Err(e) => {
                assert_eq!(
                    e,
                    &ParseError::Malformed(Protocol::Dns),
                    "a datagram's error"
                );
                assert!(out.is_empty());
                checked.error = true;
            }
        }
        if let Some(want) = want {
            assert_eq!(result, Ok(()), "a valid datagram");
            assert_eq!(
                project(&out),
                vec![want.clone()],
                "a valid datagram's message"
            );
            checked.messages += 1;
        }
    }
    let _ = detect(
        datagrams.first().map_or(&[][..], |d| &d.0),
        datagrams.get(1).map(|d| &d.0[..]),
        &Protocol::ALL,
    );
    checked
}

// ---- Tracker --------------------------------------------------------------------------------

/// One connection's calls still to come, per direction.
struct TrackedConn {
    role: Role,
    requests: VecDeque<Vec<u8>>,
    responses: VecDeque<Vec<u8>>,
}

/// `data` cut into calls of random sizes.
fn calls(r: &mut Rng, data: &[u8]) -> VecDeque<Vec<u8>> {
    let mut out = VecDeque::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = match r.below(4) {
            0 => rest.len(),
            1 => 1 + r.size(16),
            _ => 1 + r.size(2000),
        }
        .min(rest.len());
        out.push_back(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

/// A conversation of `protocol` (requests and responses valid, roughly matching), as calls;
/// DNS over TCP (`udp` false) framed by its 2-byte length.
fn conversation(
    r: &mut Rng,
    protocol: Protocol,
    udp: bool,
) -> (VecDeque<Vec<u8>>, VecDeque<Vec<u8>>) {
    match protocol {
        Protocol::Dns => {
            let (mut q, mut a) = (VecDeque::new(), VecDeque::new());
            for _ in 0..1 + r.size(6) {
                let (query, _) = dns_message(r, Direction::Request);
                let (mut answer, _) = dns_message(r, Direction::Response);
                if !r.one_in(5) {
                    answer[..2].copy_from_slice(&query[..2]);
                }
                q.push_back(query);
                if !r.one_in(6) {
                    a.push_back(answer);
                }
            }
            if udp {
                return (q, a);
            }
            let framed = |msgs: VecDeque<Vec<u8>>| -> Vec<u8> {
                msgs.into_iter()
                    .flat_map(|m| {
                        let mut v = (m.len() as u16).to_be_bytes().to_vec();
                        v.extend(m);
                        v
                    })
                    .collect()
            };
            let (q, a) = (framed(q), framed(a));
            (calls(r, &q), calls(r, &a))
        }
        Protocol::Kafka => {
            let (mut q, mut a) = (Vec::new(), Vec::new());
            let mut correlation = r.u64() as i32;
            for _ in 0..1 + r.size(6) {
                let (request, _, (c, key, version)) = kafka_request(r, correlation);
                q.extend(request);
                if !r.one_in(6) {
                    a.extend(kafka_response(r, c, key, version, true).0);
                }
                correlation = correlation.wrapping_add(1);
            }
            (calls(r, &q), calls(r, &a))
        }
        p => {
            let generate: fn(&mut Rng, Direction) -> Valid = match p {
                Protocol::Http => http_valid,
                Protocol::Redis => redis_valid,
                Protocol::Pgsql => pg_valid,
                _ => mysql_valid,
            };
            let q = generate(r, Direction::Request).data;
            let a = generate(r, Direction::Response).data;
            (calls(r, &q), calls(r, &a))
        }
    }
}

fn conn_info(r: &mut Rng, protocol: Protocol) -> ConnInfo {
    let tgid = 1 + r.below(4) as u32;
    let ips = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
    ];
    let port = |r: &mut Rng| r.pick(&[80u16, 443, 6379, 5432, 3306, 9092, 53, 40_000, 0]);
    ConnInfo {
        tgid,
        comm: if r.one_in(20) {
            "c".repeat(100)
        } else {
            format!("proc{tgid}")
        },
        role: if r.one_in(2) {
            Role::Client
        } else {
            Role::Server
        },
        local: SocketAddr::new(r.pick(&ips), port(r)),
        remote: SocketAddr::new(r.pick(&ips), port(r)),
        tls: r.one_in(8),
        udp: (protocol == Protocol::Dns) != r.one_in(20),
    }
}

/// The tracker's bounds: rows, connections, distinct apis per process; row figures coherent.
fn check_tracker(t: &mut Tracker, limits: &Limits, take_topics: bool) {
    assert!(
        t.connections() <= limits.max_connections,
        "connections over the limit"
    );
    let s = t.snapshot();
    for (what, n) in [
        ("l7_link", s.links.len()),
        ("l7_rpc", s.rpcs.len()),
        ("l7_rpc_api", s.apis.len()),
        ("comms", s.comms.len()),
    ] {
        assert!(
            n <= limits.max_keys,
            "{what}: {n} rows, over {}",
            limits.max_keys
        );
    }
    let mut apis: HashMap<u32, Vec<&str>> = HashMap::new();
    for k in s.apis.keys() {
        let names = apis.entry(k.key.tgid).or_default();
        if !names.contains(&k.api.as_str()) {
            names.push(&k.api);
        }
    }
    for (tgid, names) in &apis {
        assert!(
            names.len() <= limits.max_apis_per_process + 1,
            "process {tgid}: {} apis ({names:?}), over {} and the other one",
            names.len(),
            limits.max_apis_per_process
        );
    }
    for (k, v) in s
        .rpcs
        .iter()
        .map(|(k, v)| (format!("{k:?}"), v))
        .chain(s.apis.iter().map(|(k, v)| (format!("{k:?}"), v)))
    {
        assert_eq!(v.latency_buckets.len(), LATENCY_BOUNDS_US.len() + 1, "{k}");
        assert_eq!(
            v.latency_buckets.iter().sum::<u64>(),
            v.resp_count,
            "{k}: {v:?}"
        );
        assert!(v.err_count <= v.resp_count, "{k}: {v:?}");
        assert!(
            v.client_err_count + v.server_err_count <= v.err_count,
            "{k}: {v:?}"
        );
        assert!(
            v.latency_max_us.saturating_mul(v.resp_count) >= v.latency_sum_us,
            "{k}: {v:?}"
        );
    }
    if take_topics {
        let rows = t.take_topics();
        assert!(
            rows.len() <= limits.max_keys,
            "{} topic rows, over {}",
            rows.len(),
            limits.max_keys
        );
    }
}

/// One tracker session: random events on a few connections; the events and bytes fed.
fn tracker_session(r: &mut Rng) -> (u64, u64) {
    let limits = if r.one_in(3) {
        Limits::default()
    } else {
        Limits {
            max_connections: 1 + r.size(8),
            max_keys: 1 + r.size(40),
            max_apis_per_process: r.size(10),
        }
    };
    let mut t = Tracker::new(limits);
    let mut conns: HashMap<u64, TrackedConn> = HashMap::new();
    let ids = 1 + r.below(8);
    let mut ts = r.u64() >> 8;
    let mut bytes_fed = 0u64;
    let events = 1 + r.size(400);
    for _ in 0..events {
        ts = if r.one_in(40) {
            ts.saturating_sub(r.below(1_000_000_000))
        } else {
            ts.saturating_add(r.below(5_000_000))
        };
        let id = if r.one_in(50) {
            u64::MAX
        } else {
            1 + r.below(ids)
        };
        match r.below(24) {
            0..=2 => {
                let protocol = r.pick(&Protocol::ALL);
                let info = conn_info(r, protocol);
                let allowed: Vec<Protocol> = match r.below(5) {
                    0 | 1 => Protocol::ALL.to_vec(),
                    2 => vec![protocol],
                    3 => Protocol::ALL.into_iter().filter(|_| r.one_in(2)).collect(),
                    _ => Vec::new(),
                };
                let (requests, responses) = conversation(r, protocol, info.udp);
                conns.insert(
                    id,
                    TrackedConn {
                        role: info.role,
                        requests,
                        responses,
                    },
                );
                t.open(id, info, &allowed);
            }
            3..=17 => {
                let (mut chunk, way) = match conns.get_mut(&id) {
                    Some(c) => {
                        let request = match (c.requests.is_empty(), c.responses.is_empty()) {
                            (false, false) => r.one_in(2),
                            (false, true) => true,
                            (true, false) => false,
                            (true, true) => r.one_in(2),
                        };
                        let queue = if request {
                            &mut c.requests
                        } else {
                            &mut c.responses
                        };
                        let chunk = queue.pop_front().unwrap_or_else(|| r.some_bytes(0, 100));
                        let sent = (c.role == Role::Client) == request;
                        let way = if sent != r.one_in(20) {
                            Way::Sent
                        } else {
                            Way::Received
                        };
                        (chunk, way)
                    }
                    None => {
                        let n = r.size(300);
                        (
                            r.bytes(n),
                            if r.one_in(2) {
                                Way::Sent
                            } else {
                                Way::Received
                            },
                        )
                    }
                };
                let mut total = chunk.len() as u64;
                match r.below(12) {
                    0 => {
                        // Only a prefix captured.
                        chunk.truncate(r.size(chunk.len() + 1));
                    }
                    1 => total += 1 + r.below(100_000),
                    2 => total = r.below(total + 1),
                    3 => chunk = random_data(r),
                    _ => {}
                }
                if r.one_in(200) {
                    total = u64::MAX;
                }
                bytes_fed += chunk.len() as u64;
                t.data(id, way, ts, &chunk, total);
            }
            18 => {
                conns.remove(&id);
                t.close(id);
            }
            19 => t.closing(id),
            20 => t.forget_tgid(1 + r.below(4) as u32),
            21 => check_tracker(&mut t, &limits, true),
            _ => check_tracker(&mut t, &limits, false),
        }
    }
    check_tracker(&mut t, &limits, true);
    for id in (1..=ids).chain([u64::MAX]) {
        t.close(id);
    }
    check_tracker(&mut t, &limits, true);
    assert_eq!(t.connections(), 0, "connections left after closing all");
    (events as u64, bytes_fed)
}

// ---- The campaigns --------------------------------------------------------------------------

#[test]
#[ignore = "long-running fuzz campaign: GG_FUZZ_SECS (default 600)"]
fn fuzz_http_campaign() {
    stream_campaign("fuzz_http_campaign", http_valid);
}

#[test]
#[ignore = "long-running fuzz campaign: GG_FUZZ_SECS (default 600)"]
fn fuzz_redis_campaign() {
    stream_campaign("fuzz_redis_campaign", redis_valid);
}

#[test]
#[ignore = "long-running fuzz campaign: GG_FUZZ_SECS (default 600)"]
fn fuzz_pgsql_campaign() {
    stream_campaign("fuzz_pgsql_campaign", pg_valid);
}

#[test]
#[ignore = "long-running fuzz campaign: GG_FUZZ_SECS (default 600)"]
fn fuzz_mysql_campaign() {
    stream_campaign("fuzz_mysql_campaign", mysql_valid);
}

#[test]
#[ignore = "long-running fuzz campaign: GG_FUZZ_SECS (default 600)"]
fn fuzz_kafka_campaign() {
    stream_campaign("fuzz_kafka_campaign", kafka_valid);
}

/// DNS: half the inputs over UDP (datagrams), half over TCP (a stream).
#[test]
#[ignore = "long-running fuzz campaign: GG_FUZZ_SECS (default 600)"]
fn fuzz_dns_campaign() {
    let mut c = Campaign::new("fuzz_dns_campaign");
    while let Some(seed) = c.next_input() {
        let mut r = Rng::new(seed);
        if r.one_in(2) {
            let input = make_input(&mut r, dns_tcp_valid);
            c.count(input.kind, input.data.len());
            let checked = c.guard(seed, || input.describe(), || check_stream(&mut r, &input));
            c.add(&checked);
            continue;
        }
        let direction = if r.one_in(2) {
            Direction::Request
        } else {
            Direction::Response
        };
        let kind = match r.below(3) {
            0 => Kind::Random,
            1 => Kind::Valid,
            _ => Kind::Mutated,
        };
        let datagrams: Vec<(Vec<u8>, Option<Want>)> = (0..1 + r.size(6))
            .map(|_| {
                let (mut m, want) = dns_message(&mut r, direction);
                // Mostly of the input's kind, some of another.
                let k = if r.one_in(4) { r.below(3) } else { kind as u64 };
                match k {
                    0 => (
                        random_data(&mut r)
                            .into_iter()
                            .take(1 + r.size(600))
                            .collect(),
                        None,
                    ),
                    1 => (m, Some(want)),
                    _ => {
                        mutate(&mut r, &mut m);
                        (m, None)
                    }
                }
            })
            .collect();
        c.count(kind, datagrams.iter().map(|d| d.0.len()).sum());
        let describe = || {
            let list: Vec<String> = datagrams
                .iter()
                .map(|(d, w)| format!("    {} (expected {w:?})", hex(d)))
                .collect();
            format!(
                "  UDP, kind {kind:?}, direction {direction:?}, datagrams:\n{}",
                list.join("\n")
            )
        };
        let checked = c.guard(seed, describe, || {
            check_datagrams(&mut r, direction, &datagrams)
        });
        c.add(&checked);
    }
    c.finish();
}

#[test]
#[ignore = "long-running fuzz campaign: GG_FUZZ_SECS (default 600)"]
fn fuzz_tracker_campaign() {
    let mut c = Campaign::new("fuzz_tracker_campaign");
    let mut events = 0u64;
    while let Some(seed) = c.next_input() {
        let mut r = Rng::new(seed);
        let describe = || format!("  tracker session of input seed {seed:#x}");
        let (n, bytes) = c.guard(seed, describe, || tracker_session(&mut r));
        c.count(Kind::Random, bytes as usize);
        events += n;
    }
    println!(
        "fuzz_tracker_campaign: {} sessions (the inputs below), {events} events",
        c.inputs
    );
    c.finish();
}
