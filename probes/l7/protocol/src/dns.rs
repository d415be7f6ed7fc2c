//! DNS (RFC 1035).
//!
//! Over UDP ([`parser`]) the caller feeds **exactly one datagram per [`StreamParser::feed`]**:
//! datagrams are independent, so a datagram that is not a DNS message gives
//! [`ParseError::Malformed`] for itself only and the parser reads the next one (DNS
//! resynchronises at every datagram); [`StreamParser::gap`] has nothing to skip. Over TCP
//! ([`tcp_parser`]) messages are framed by a 2-byte length and the stream is parsed like the
//! other protocols' (an error is final).
//!
//! Queries (QR = 0) make request messages whose api is the first question's qtype ("A",
//! "TYPEn" for types n not named; None without a question); responses (QR = 1) make response
//! messages whose status is the header's rcode ("NXDOMAIN"; extended rcodes of EDNS are not
//! read). Both carry the id as correlation. A message on the wrong side (a response fed as a
//! request) is malformed. Names are checked (labels, compression pointers: backwards only, at
//! most 64 hops; at most 255 bytes) in the first question only.

use crate::{Detect, Direction, Message, ParseError, Protocol, Status, StreamParser, MAX_PENDING};

/// Header bytes.
const HEADER: usize = 12;
/// Longest name, bytes of its wire form (RFC 1035 3.1).
const MAX_NAME: usize = 255;
/// Compression pointers followed in one name at most.
const MAX_HOPS: usize = 64;
/// Smallest question (root name, qtype, qclass).
const MIN_QUESTION: usize = 5;
/// Smallest resource record (root name, type, class, ttl, rdlength).
const MIN_RR: usize = 11;
/// Longest query over TCP detection accepts, bytes (a question and EDNS options fit well
/// within it; longer first messages are not taken for DNS).
const MAX_TCP_QUERY: usize = 4096;
/// Bytes of a TCP message read before its first question is known to be complete: the header,
/// the longest name and qtype/qclass (a question's name points only backwards).
const TCP_PREFIX: usize = HEADER + MAX_NAME + 4;

/// A parser of one direction of DNS over UDP: one datagram per `feed`.
pub fn parser(direction: Direction) -> Box<dyn StreamParser> {
    Box::new(UdpParser { direction })
}

/// A parser of one direction of DNS over TCP (2-byte length framing).
pub fn tcp_parser(direction: Direction) -> Box<dyn StreamParser> {
    Box::new(TcpParser::new(direction))
}

/// Whether a connection's first datagram is DNS: a standard query (QR = 0, opcode 0) with one
/// well-formed question of a known class and no answers; the response, when given, must be a
/// response with the same id.
pub fn detect(request: &[u8], response: Option<&[u8]>) -> Detect {
    if request.is_empty() {
        return Detect::NeedMore;
    }
    let Ok(q) = parse(request, request.len()) else {
        return Detect::No;
    };
    if !q.standard_query() {
        return Detect::No;
    }
    match response.map(|r| parse(r, r.len())) {
        None => Detect::Yes,
        Some(Ok(r)) if r.response && r.id == q.id => Detect::Yes,
        Some(_) => Detect::No,
    }
}

/// [`detect`] for DNS over TCP: the first bytes of each direction are a 2-byte length and a
/// message. A query whose first question is not in the bytes given yet (a message cut by the
/// capture) is [`Detect::NeedMore`] while it may still come, else [`Detect::No`].
pub fn detect_tcp(request: &[u8], response: Option<&[u8]>) -> Detect {
    // A query is 17 to MAX_TCP_QUERY bytes: text protocols fail at their first byte.
    match request.first() {
        None => return Detect::NeedMore,
        Some(&hi) if usize::from(hi) > MAX_TCP_QUERY >> 8 => return Detect::No,
        Some(_) => {}
    }
    let Some(len) = be16(request, 0).map(usize::from) else {
        return Detect::NeedMore;
    };
    if !(HEADER + MIN_QUESTION..=MAX_TCP_QUERY).contains(&len) {
        return Detect::No;
    }
    // The header as far as it came: a standard query (QR = 0, opcode 0), one question, no
    // answer or authority records.
    let word = |at: usize| be16(request, 2 + at);
    let flags_ok = request.get(4).is_none_or(|b| b & 0xf8 == 0);
    let counts_ok = [(4, 1), (6, 0), (8, 0)]
        .iter()
        .all(|&(at, want)| word(at).is_none_or(|v| v == want));
    if !(flags_ok && counts_ok) {
        return Detect::No;
    }
    let query = request.get(2..).unwrap_or_default();
    let query = query.get(..len).unwrap_or(query);
    let complete = query.len() == len || query.len() >= TCP_PREFIX;
    let response = match response {
        None => None,
        Some(r) => {
            let Some(rlen) = be16(r, 0).map(usize::from) else {
                return Detect::NeedMore;
            };
            let body = r.get(2..).unwrap_or_default();
            Some((body.get(..rlen).unwrap_or(body), rlen))
        }
    };
    let Ok(q) = parse(query, len) else {
        return if complete {
            Detect::No
        } else {
            Detect::NeedMore
        };
    };
    if !q.standard_query() {
        return Detect::No;
    }
    match response.map(|(r, rlen)| (parse(r, rlen), r.len() >= HEADER)) {
        None => Detect::Yes,
        Some((Ok(r), _)) if r.response && r.id == q.id => Detect::Yes,
        // The answer's header is not all there yet.
        Some((Err(()), false)) => Detect::NeedMore,
        Some(_) => Detect::No,
    }
}

/// What a message's header and first question say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    id: u16,
    response: bool,
    opcode: u8,
    rcode: u8,
    qdcount: u16,
    ancount: u16,
    /// The first question's qtype and qclass, if there is a question.
    qtype: Option<u16>,
    qclass: Option<u16>,
}

impl Head {
    /// A standard query (QR = 0, opcode 0) with one question of a known class and no answers:
    /// what detection takes for DNS.
    fn standard_query(&self) -> bool {
        !self.response
            && self.opcode == 0
            && self.qdcount == 1
            && self.ancount == 0
            && matches!(self.qclass, Some(1 | 3 | 4 | 254 | 255))
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

/// Reads the header and first question of a message of `len` bytes whose first bytes are `b`.
fn parse(b: &[u8], len: usize) -> Result<Head, ()> {
    let word = |i: usize| be16(b, 2 * i).ok_or(());
    if len < HEADER {
        return Err(());
    }
    let (id, flags) = (word(0)?, word(1)?);
    let (qdcount, ancount) = (word(2)?, word(3)?);
    let records = usize::from(ancount) + usize::from(word(4)?) + usize::from(word(5)?);
    let least = HEADER + usize::from(qdcount) * MIN_QUESTION + records * MIN_RR;
    if least > len {
        return Err(());
    }
    let (qtype, qclass) = if qdcount > 0 {
        let end = name_end(b, HEADER)?;
        (
            Some(be16(b, end).ok_or(())?),
            Some(be16(b, end + 2).ok_or(())?),
        )
    } else {
        (None, None)
    };
    Ok(Head {
        id,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        rcode: (flags & 0xf) as u8,
        qdcount,
        ancount,
        qtype,
        qclass,
    })
}

/// The offset after the name at `start` of `b`, following compression pointers (backwards
/// only, at most [`MAX_HOPS`]); the name must be at most [`MAX_NAME`] bytes.
fn name_end(b: &[u8], start: usize) -> Result<usize, ()> {
    let mut at = start;
    let mut end = None;
    let mut name_len = 0usize;
    let mut hops = 0;
    loop {
        let len = *b.get(at).ok_or(())?;
        match len & 0xc0 {
            0x00 => {
                name_len += usize::from(len) + 1;
                if name_len > MAX_NAME {
                    return Err(());
                }
                if len == 0 {
                    return Ok(end.unwrap_or(at + 1));
                }
                at += usize::from(len) + 1;
            }
            0xc0 => {
                let target = usize::from(be16(b, at).ok_or(())? & 0x3fff);
                hops += 1;
                if target >= at || target < HEADER || hops > MAX_HOPS {
                    return Err(());
                }
                end.get_or_insert(at + 2);
                at = target;
            }
            _ => return Err(()),
        }
    }
}

/// The name of a qtype.
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

/// The name of an rcode (None: NOERROR).
fn rcode_name(rcode: u8) -> Option<String> {
    let name = match rcode {
        0 => return None,
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
        _ => return Some(format!("RCODE{rcode}")),
    };
    Some(name.to_string())
}

/// The message of a `len`-byte DNS message beginning with `b`, read in `direction`.
fn message(b: &[u8], len: usize, direction: Direction) -> Result<Message, ParseError> {
    let head = parse(b, len).map_err(|()| ParseError::Malformed(Protocol::Dns))?;
    if head.response != (direction == Direction::Response) {
        return Err(ParseError::Malformed(Protocol::Dns));
    }
    let (api, status) = match direction {
        Direction::Request => (head.qtype.map(qtype_name), None),
        Direction::Response => {
            let status = rcode_name(head.rcode).map_or(Status::Ok, Status::Error);
            (None, Some(status))
        }
    };
    Ok(Message {
        direction,
        api,
        status,
        correlation: Some(u32::from(head.id)),
        len: len as u64,
        topics: None,
    })
}

/// DNS over UDP: one datagram per `feed`.
struct UdpParser {
    direction: Direction,
}

impl StreamParser for UdpParser {
    fn protocol(&self) -> Protocol {
        Protocol::Dns
    }

    fn feed(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        out.push(message(data, data.len(), self.direction)?);
        Ok(())
    }

    fn gap(&mut self, _n: u64) -> Result<(), ParseError> {
        Ok(())
    }
}

/// DNS over TCP: a 2-byte length, then the message; only the header and first question are
/// kept, the rest is skipped.
struct TcpParser {
    direction: Direction,
    /// The kept prefix of the current message, its length field included.
    buf: Vec<u8>,
    /// The current message's length (without the length field), once read.
    len: Option<usize>,
    /// Bytes of the current message still to skip.
    skip: usize,
    /// The current message, read, yielded when its last byte is.
    pending: Option<Message>,
    failed: bool,
}

impl TcpParser {
    fn new(direction: Direction) -> Self {
        TcpParser {
            direction,
            buf: Vec::with_capacity(2 + TCP_PREFIX.min(MAX_PENDING)),
            len: None,
            skip: 0,
            pending: None,
            failed: false,
        }
    }

    fn fail(&mut self, e: ParseError) -> Result<(), ParseError> {
        self.failed = true;
        self.pending = None;
        Err(e)
    }

    fn flush(&mut self, out: &mut Vec<Message>) {
        if self.skip == 0 {
            out.extend(self.pending.take());
        }
    }

    /// `buf` holds what the current state wants: reads the length or the message.
    fn step(&mut self, out: &mut Vec<Message>) -> Result<(), ParseError> {
        let Some(len) = self.len else {
            self.len = be16(&self.buf, 0).map(usize::from);
            if self.len.is_some() && self.buf.len() >= self.want() {
                return self.step(out);
            }
            return Ok(());
        };
        let b = self.buf.get(2..).unwrap_or_default();
        match message(b, len, self.direction) {
            Ok(mut m) => {
                // On the wire with its length field.
                m.len += 2;
                self.skip = len - b.len();
                self.pending = Some(m);
                self.buf.clear();
                self.len = None;
                self.flush(out);
                Ok(())
            }
            Err(e) => self.fail(e),
        }
    }

    fn want(&self) -> usize {
        self.len.map_or(2, |l| 2 + l.min(TCP_PREFIX))
    }
}

impl StreamParser for TcpParser {
    fn protocol(&self) -> Protocol {
        Protocol::Dns
    }

    fn feed(&mut self, mut data: &[u8], out: &mut Vec<Message>) -> Result<(), ParseError> {
        if self.failed {
            return Err(ParseError::Desynchronised(Protocol::Dns));
        }
        self.flush(out);
        while !data.is_empty() {
            if self.skip > 0 {
                let k = self.skip.min(data.len());
                self.skip -= k;
                data = data.get(k..).unwrap_or_default();
                self.flush(out);
                continue;
            }
            let k = self.want().saturating_sub(self.buf.len()).min(data.len());
            self.buf
                .extend_from_slice(data.get(..k).unwrap_or_default());
            data = data.get(k..).unwrap_or_default();
            if self.buf.len() >= self.want() {
                self.step(out)?;
            }
        }
        Ok(())
    }

    fn gap(&mut self, n: u64) -> Result<(), ParseError> {
        if self.failed {
            return Err(ParseError::Desynchronised(Protocol::Dns));
        }
        if n == 0 {
            return Ok(());
        }
        match usize::try_from(n) {
            Ok(n) if self.pending.is_some() && n <= self.skip => {
                self.skip -= n;
                Ok(())
            }
            _ => self.fail(ParseError::Desynchronised(Protocol::Dns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{feed_pieces, split};

    fn run_boxed(
        mut p: Box<dyn StreamParser>,
        pieces: &[&[u8]],
    ) -> (Vec<Message>, Option<ParseError>) {
        feed_pieces(p.as_mut(), pieces)
    }
    use proptest::prelude::*;

    /// A header: id, flags, counts.
    fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut v = id.to_be_bytes().to_vec();
        v.extend(flags.to_be_bytes());
        for c in counts {
            v.extend(c.to_be_bytes());
        }
        v
    }

    fn name(n: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for label in n.split('.').filter(|l| !l.is_empty()) {
            v.push(label.len() as u8);
            v.extend_from_slice(label.as_bytes());
        }
        v.push(0);
        v
    }

    fn query(id: u16, qname: &str, qtype: u16) -> Vec<u8> {
        let mut v = header(id, 0x0100, [1, 0, 0, 0]);
        v.extend(name(qname));
        v.extend(qtype.to_be_bytes());
        v.extend(1u16.to_be_bytes());
        v
    }

    /// A response to `query` with `rcode` and, for NOERROR, one A answer named by a pointer to
    /// the question's name.
    fn answer(query: &[u8], rcode: u16) -> Vec<u8> {
        let id = u16::from_be_bytes([query[0], query[1]]);
        let ancount = u16::from(rcode == 0);
        let mut v = header(id, 0x8180 | rcode, [1, ancount, 0, 0]);
        v.extend_from_slice(&query[12..]);
        if rcode == 0 {
            v.extend([
                0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 93, 184, 216, 34,
            ]);
        }
        v
    }

    fn feed(p: &mut dyn StreamParser, data: &[u8]) -> Result<Vec<Message>, ParseError> {
        let mut out = Vec::new();
        p.feed(data, &mut out).map(|()| out)
    }

    #[test]
    fn a_query_and_noerror_answer_with_compression() {
        let q = query(0x1234, "example.com", 1);
        let msgs = feed(&mut *parser(Direction::Request), &q).unwrap();
        assert_eq!(
            msgs,
            vec![Message {
                direction: Direction::Request,
                api: Some("A".into()),
                status: None,
                correlation: Some(0x1234),
                len: q.len() as u64,
                topics: None,
            }]
        );
        let a = answer(&q, 0);
        let msgs = feed(&mut *parser(Direction::Response), &a).unwrap();
        assert_eq!(msgs[0].status, Some(Status::Ok));
        assert_eq!(msgs[0].correlation, Some(0x1234));
        assert_eq!(msgs[0].api, None);
        assert_eq!(detect(&q, Some(&a)), Detect::Yes);
    }

    #[test]
    fn nxdomain_aaaa_and_other_rcodes() {
        let q = query(7, "nope.example", 28);
        let mut p = parser(Direction::Request);
        assert_eq!(feed(&mut *p, &q).unwrap()[0].api.as_deref(), Some("AAAA"));
        let mut p = parser(Direction::Response);
        let status = |p: &mut dyn StreamParser, rcode| {
            feed(p, &answer(&q, rcode)).unwrap()[0].status.clone()
        };
        assert_eq!(status(&mut *p, 3), Some(Status::Error("NXDOMAIN".into())));
        assert_eq!(status(&mut *p, 2), Some(Status::Error("SERVFAIL".into())));
        assert_eq!(status(&mut *p, 5), Some(Status::Error("REFUSED".into())));
        assert_eq!(status(&mut *p, 1), Some(Status::Error("FORMERR".into())));
        assert_eq!(status(&mut *p, 15), Some(Status::Error("RCODE15".into())));
        for (t, n) in [
            (65, "HTTPS"),
            (64, "SVCB"),
            (257, "CAA"),
            (252, "AXFR"),
            (999, "TYPE999"),
        ] {
            let mut p = parser(Direction::Request);
            assert_eq!(
                feed(&mut *p, &query(1, "a.b", t)).unwrap()[0]
                    .api
                    .as_deref(),
                Some(n)
            );
        }
    }

    #[test]
    fn compression_loops_and_bad_names() {
        let mut p = parser(Direction::Request);
        let bad = |tail: &[u8]| {
            let mut v = header(1, 0, [1, 0, 0, 0]);
            v.extend_from_slice(tail);
            v.extend([0, 1, 0, 1]);
            v
        };
        for name in [
            vec![0xc0, 12],                // points at itself
            vec![1, b'a', 0xc0, 12],       // loops back to its start
            vec![0xc0, 20, 0, 0, 0, 0, 0], // points forward
            vec![0xc0, 2],                 // into the header
            vec![0xff, 0xff],              // out of range
            vec![0x40, b'a'],              // label type 01
            vec![64],                      // label over 63
        ] {
            assert_eq!(
                feed(&mut *p, &bad(&name)),
                Err(ParseError::Malformed(Protocol::Dns))
            );
        }
        // A name over 255 bytes.
        let long: Vec<u8> = (0..5)
            .flat_map(|_| std::iter::once(60).chain([b'a'; 60]))
            .chain([0])
            .collect();
        assert_eq!(
            feed(&mut *p, &bad(&long)),
            Err(ParseError::Malformed(Protocol::Dns))
        );
        // A chain of backward pointers longer than the hop limit (name_end is also what
        // later names would use): each pointer points at the one before it.
        let mut chain = header(1, 0, [1, 0, 0, 0]);
        chain.extend([1, b'a', 0]);
        for i in 0..100u16 {
            let at = 12 + 3 + 2 * i;
            let target = if i == 0 { 12 } else { at - 2 };
            chain.extend((0xc000 | target).to_be_bytes());
        }
        let last = chain.len() - 2;
        assert_eq!(name_end(&chain, last), Err(()));
        assert_eq!(name_end(&chain, 12 + 3 + 2 * 10), Ok(12 + 3 + 2 * 11));
        // Still usable.
        assert_eq!(feed(&mut *p, &query(2, "ok.example", 1)).unwrap().len(), 1);
    }

    #[test]
    fn not_dns_datagrams_are_malformed_one_by_one() {
        let mut p = parser(Direction::Request);
        let err = Err(ParseError::Malformed(Protocol::Dns));
        assert_eq!(feed(&mut *p, b"short"), err);
        // Counts no datagram of this length could hold.
        assert_eq!(feed(&mut *p, &header(1, 0, [1, 500, 0, 0])), err);
        // A response on the request side.
        assert_eq!(feed(&mut *p, &answer(&query(3, "a", 1), 0)), err);
        assert_eq!(p.gap(100), Ok(()));
        assert_eq!(
            feed(&mut *p, &query(4, "a.example", 16)).unwrap()[0]
                .api
                .as_deref(),
            Some("TXT")
        );
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Datagrams of dig 9.18 (EDNS OPT with a cookie) and dnsmasq 2.90, as captured.
    #[test]
    fn dig_and_dnsmasq_datagrams() {
        let q = unhex(concat!(
            "a8620120000100000000000101610474657374000001000100002904d000000000000c",
            "000a00086cb8dd2f08fe3272"
        ));
        let r = unhex(concat!(
            "a86285800001000100000001016104746573740000010001c00c000100010000000000",
            "040a00000100002904d0000000000000"
        ));
        let nq = unhex(concat!(
            "4f4901200001000000000001046e6f70650474657374000001000100002904d0000000",
            "00000c000a00086cb8dd2f08fe3272"
        ));
        let nr = unhex(concat!(
            "4f4981830001000000000001046e6f70650474657374000001000100002904d0000000",
            "000000"
        ));
        assert_eq!(detect(&q, None), Detect::Yes);
        assert_eq!(detect(&q, Some(&r)), Detect::Yes);
        assert_eq!(detect(&nq, Some(&nr)), Detect::Yes);
        let mut req = parser(Direction::Request);
        let mut resp = parser(Direction::Response);
        let m = feed(&mut *req, &q).unwrap();
        assert_eq!(
            (m[0].api.as_deref(), m[0].correlation),
            (Some("A"), Some(0xa862))
        );
        let m = feed(&mut *resp, &r).unwrap();
        assert_eq!(
            (m[0].status.clone(), m[0].correlation),
            (Some(Status::Ok), Some(0xa862))
        );
        assert_eq!(feed(&mut *req, &nq).unwrap()[0].correlation, Some(0x4f49));
        let m = feed(&mut *resp, &nr).unwrap();
        assert_eq!(m[0].status, Some(Status::Error("NXDOMAIN".into())));
    }

    #[test]
    fn tcp_detection_reads_the_length_framing() {
        let framed = |m: &[u8]| {
            let mut v = (m.len() as u16).to_be_bytes().to_vec();
            v.extend(m);
            v
        };
        let q = query(9, "example.com", 1);
        let fq = framed(&q);
        assert_eq!(detect_tcp(&fq, None), Detect::Yes);
        assert_eq!(detect_tcp(&fq[..1], None), Detect::NeedMore);
        // The question not all there yet, but the message is longer: more may come.
        assert_eq!(detect_tcp(&fq[..14], None), Detect::NeedMore);
        // Unframed (a datagram's bytes on a stream): not DNS over TCP.
        assert_eq!(detect_tcp(&q, None), Detect::No);
        assert_eq!(detect_tcp(b"GET / HTTP/1.1\r\n\r\n", None), Detect::No);
        let fa = framed(&answer(&q, 0));
        assert_eq!(detect_tcp(&fq, Some(&fa)), Detect::Yes);
        assert_eq!(detect_tcp(&fq, Some(&fa[..6])), Detect::NeedMore);
        let other = framed(&answer(&query(8, "example.com", 1), 0));
        assert_eq!(detect_tcp(&fq, Some(&other)), Detect::No);
    }

    #[test]
    fn detection() {
        let q = query(9, "example.com", 1);
        assert_eq!(detect(&q, None), Detect::Yes);
        assert_eq!(detect(&[], None), Detect::NeedMore);
        assert_eq!(detect(&q[..10], None), Detect::No);
        assert_eq!(
            detect(&q, Some(&answer(&query(8, "example.com", 1), 0))),
            Detect::No
        );
        assert_eq!(detect(&q, Some(&q)), Detect::No);
        assert_eq!(
            detect(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", None),
            Detect::No
        );
        let mut two = q.clone();
        two[5] = 2;
        assert_eq!(detect(&two, None), Detect::No);
    }

    fn tcp(messages: &[Vec<u8>]) -> Vec<u8> {
        messages
            .iter()
            .flat_map(|m| {
                (m.len() as u16)
                    .to_be_bytes()
                    .into_iter()
                    .chain(m.iter().copied())
            })
            .collect()
    }

    #[test]
    fn tcp_framing() {
        let q = query(1, "example.com", 1);
        let mut big = answer(&q, 0);
        big[7] = 40; // 40 answers
        for _ in 1..40 {
            big.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 1, 2, 3, 4]);
        }
        let data = tcp(&[answer(&q, 3), big.clone(), answer(&q, 0)]);
        let (msgs, e) = run_boxed(tcp_parser(Direction::Response), &[&data]);
        assert_eq!(e, None);
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1].len, big.len() as u64 + 2);
        assert_eq!(msgs[0].status, Some(Status::Error("NXDOMAIN".into())));
        let (_, e) = run_boxed(tcp_parser(Direction::Response), &[&[0, 3, 1, 2, 3]]);
        assert_eq!(e, Some(ParseError::Malformed(Protocol::Dns)));
        let mut p = tcp_parser(Direction::Request);
        assert_eq!(p.gap(1), Err(ParseError::Desynchronised(Protocol::Dns)));
    }

    #[test]
    fn tcp_keeps_only_the_first_question() {
        let q = query(1, "example.com", 1);
        let mut big = answer(&q, 0);
        big[7] = 200;
        for _ in 1..200 {
            big.extend([0xc0, 12, 0, 16, 0, 1, 0, 0, 0x0e, 0x10, 1, 0x2c]);
            big.extend([b'x'; 300]);
        }
        let data = tcp(&[big]);
        let mut p = TcpParser::new(Direction::Response);
        let mut out = Vec::new();
        for piece in data.chunks(1000) {
            p.feed(piece, &mut out).unwrap();
            assert!(p.buf.capacity() <= 2 + TCP_PREFIX);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len, data.len() as u64);
        // A gap inside the skipped answers is harmless.
        let mut p = TcpParser::new(Direction::Response);
        p.feed(&data[..1000], &mut out).unwrap();
        p.gap(500).unwrap();
        p.feed(&data[1500..], &mut out).unwrap();
        assert_eq!(out.len(), 2);
    }

    proptest! {
        #[test]
        fn tcp_split_anywhere(
            ids in prop::collection::vec(any::<u16>(), 1..6),
            qtypes in prop::collection::vec(any::<u16>(), 6),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let queries: Vec<_> = ids.iter().zip(&qtypes).map(|(&i, &t)| query(i, "www.example.org", t)).collect();
            let data = tcp(&queries);
            let whole = run_boxed(tcp_parser(Direction::Request), &[&data]);
            prop_assert_eq!(whole.0.len(), ids.len());
            prop_assert_eq!(run_boxed(tcp_parser(Direction::Request), &split(&data, &cuts)), whole);
        }

        #[test]
        fn random_bytes_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..300),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let _ = detect(&data, Some(&data));
            for d in [Direction::Request, Direction::Response] {
                let _ = parser(d).feed(&data, &mut Vec::new());
                let whole = run_boxed(tcp_parser(d), &[&data]);
                prop_assert_eq!(run_boxed(tcp_parser(d), &split(&data, &cuts)), whole);
            }
        }

        #[test]
        fn random_names_never_panic(
            tail in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut v = header(1, 0, [1, 0, 0, 0]);
            v.extend(tail);
            let _ = parser(Direction::Request).feed(&v, &mut Vec::new());
        }
    }
}
