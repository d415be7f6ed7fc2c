//! Decoding of the records `l7.bpf.c` sends through its ring buffer: the skeleton's copies of
//! `src/bpf/intf.h` read with `probe_sdk::bpf::plain_data`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use probe_sdk::bpf::plain_data::{self, Plain};

use crate::skel::types::{l7_ev_data, l7_ev_open, l7_head};

// SAFETY: these are the `#[repr(C)]` plain-data copies of `intf.h`'s records (integers and
// integer arrays only), valid for any bit pattern.
unsafe impl Plain for l7_head {}
// SAFETY: as above.
unsafe impl Plain for l7_ev_open {}
// SAFETY: as above.
unsafe impl Plain for l7_ev_data {}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_UDP: u8 = 17;

/// Record kinds and the other enums of `intf.h`, as the skeleton generates them.
mod c {
    use crate::skel::types::{l7_dir, l7_how, l7_kind, l7_role};

    pub const OPEN: u8 = l7_kind::L7_EV_OPEN.0 as u8;
    pub const DATA: u8 = l7_kind::L7_EV_DATA.0 as u8;
    pub const CLOSE: u8 = l7_kind::L7_EV_CLOSE.0 as u8;
    pub const BATCH: u8 = l7_kind::L7_EV_BATCH.0 as u8;
    pub const SENT: u8 = l7_dir::L7_SENT.0 as u8;
    pub const RECEIVED: u8 = l7_dir::L7_RECEIVED.0 as u8;
    pub const HOW_KERNEL: u8 = l7_how::L7_HOW_KERNEL.0 as u8;
    pub const HOW_UNKNOWN: u8 = l7_how::L7_HOW_UNKNOWN.0 as u8;
    pub const HOW_TLS: u8 = l7_how::L7_HOW_TLS.0 as u8;
    pub const CLIENT: u8 = l7_role::L7_ROLE_CLIENT.0 as u8;
    pub const SERVER: u8 = l7_role::L7_ROLE_SERVER.0 as u8;
}

/// How the kernel saw a TCP connection form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// It connected.
    Connected,
    /// It was accepted.
    Accepted,
    /// Not seen (older than the probe, or UDP).
    Unknown,
}

/// A socket's first bytes were moved by a traced process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Socket cookie.
    pub cookie: u64,
    /// Owning process.
    pub tgid: u32,
    /// Its command name.
    pub comm: String,
    /// UDP (else TCP).
    pub udp: bool,
    /// How the connection formed.
    pub origin: Origin,
    /// Local address.
    pub local: SocketAddr,
    /// Peer address (port 0 for an unconnected UDP socket).
    pub remote: SocketAddr,
}

/// Which way bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The process sent them.
    Sent,
    /// The process received them.
    Received,
}

/// One send or receive call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data<'a> {
    /// Socket cookie.
    pub cookie: u64,
    /// Kernel time of the call's end, ns.
    pub ts_ns: u64,
    /// The calling process.
    pub tgid: u32,
    /// Which way.
    pub dir: Dir,
    /// Bytes moved.
    pub len: u32,
    /// The first bytes (possibly none).
    pub bytes: &'a [u8],
    /// The bytes were not in user memory (sendfile, splice): none captured, by design.
    pub from_kernel: bool,
    /// The system call is not one whose buffer the kernel side can find (io_uring, ...).
    pub unknown_call: bool,
    /// The plain text of a TLS session (SSL_read/SSL_write).
    pub tls: bool,
    /// UDP: the datagram's peer, when the call named it.
    pub peer: Option<SocketAddr>,
}

/// A record of the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// [`Open`].
    Open(Open),
    /// [`Data`].
    Data(Data<'a>),
    /// A TCP socket announced by an [`Open`] closed.
    Close {
        /// Socket cookie.
        cookie: u64,
    },
}

fn addr(family: u16, raw: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(*raw)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Splits one ring-buffer record into the records it carries, each with its kernel time:
/// a batch (intf.h `L7_EV_BATCH`) into its data entries, any other record into itself.
/// Returns how many entries of a batch were malformed (the batch's rest is dropped with the
/// first; a record too short for a head is one).
pub fn split<'a>(bytes: &'a [u8], mut f: impl FnMut(u64, &'a [u8])) -> u64 {
    let Some(head) = plain_data::read::<l7_head>(bytes) else {
        return 1;
    };
    if head.kind != c::BATCH {
        f(head.ts_ns, bytes);
        return 0;
    }
    let entry = std::mem::size_of::<l7_ev_data>();
    let mut rest = bytes
        .get(std::mem::size_of::<l7_head>()..)
        .unwrap_or_default();
    while !rest.is_empty() {
        let Some(d) = plain_data::read::<l7_ev_data>(rest) else {
            return 1;
        };
        let len = entry + usize::from(d.cap);
        let (Some(one), true) = (rest.get(..len), d.h.kind == c::DATA) else {
            return 1;
        };
        f(d.h.ts_ns, one);
        // Entries are padded to 8 bytes; the last one's padding may be cut.
        rest = rest.get(len.next_multiple_of(8)..).unwrap_or_default();
    }
    0
}

/// Decodes one ring-buffer record; None when it is not a well-formed one.
pub fn decode(bytes: &[u8]) -> Option<Event<'_>> {
    let head: l7_head = plain_data::read(bytes)?;
    match head.kind {
        c::OPEN => {
            let o: l7_ev_open = plain_data::read(bytes)?;
            let raw_comm: Vec<u8> = o.comm.iter().map(|c| *c as u8).collect();
            Some(Event::Open(Open {
                cookie: head.cookie,
                tgid: head.tgid,
                comm: comm(&raw_comm),
                udp: o.l4 == IPPROTO_UDP,
                origin: match o.role {
                    c::CLIENT => Origin::Connected,
                    c::SERVER => Origin::Accepted,
                    _ => Origin::Unknown,
                },
                local: addr(o.family, &o.laddr, o.lport)?,
                remote: addr(o.family, &o.raddr, o.rport)?,
            }))
        }
        c::DATA => {
            let d: l7_ev_data = plain_data::read(bytes)?;
            let start = std::mem::size_of::<l7_ev_data>();
            let data = bytes.get(start..start + usize::from(d.cap))?;
            let dir = match d.dir {
                c::SENT => Dir::Sent,
                c::RECEIVED => Dir::Received,
                _ => return None,
            };
            Some(Event::Data(Data {
                cookie: head.cookie,
                ts_ns: head.ts_ns,
                tgid: head.tgid,
                dir,
                len: d.len,
                bytes: data,
                from_kernel: d.how == c::HOW_KERNEL,
                unknown_call: d.how == c::HOW_UNKNOWN,
                tls: d.how == c::HOW_TLS,
                peer: (d.peer_family != 0)
                    .then(|| addr(d.peer_family, &d.peer_addr, d.peer_port))
                    .flatten(),
            }))
        }
        c::CLOSE => Some(Event::Close {
            cookie: head.cookie,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(kind: u8) -> l7_head {
        l7_head {
            cookie: 9,
            ts_ns: 100,
            tgid: 7,
            kind,
            ..Default::default()
        }
    }

    fn bytes_of<T: Plain>(v: &T) -> Vec<u8> {
        // SAFETY: T is plain data; reading its bytes is reading integers.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn data_with_its_bytes_and_peer() {
        let mut d = l7_ev_data {
            h: head(c::DATA),
            len: 1000,
            cap: 4,
            dir: c::RECEIVED,
            how: 1,
            peer_family: AF_INET,
            peer_port: 53,
            ..Default::default()
        };
        d.peer_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut raw = bytes_of(&d);
        raw.extend_from_slice(b"GET /");
        let Some(Event::Data(e)) = decode(&raw) else {
            panic!("not data")
        };
        assert_eq!(e.bytes, b"GET ");
        assert_eq!(
            (e.len, e.dir, e.tgid, e.ts_ns),
            (1000, Dir::Received, 7, 100)
        );
        assert_eq!(e.peer, Some("127.0.0.1:53".parse().unwrap()));
        // A record shorter than its `cap` says is refused.
        raw.truncate(std::mem::size_of::<l7_ev_data>() + 2);
        assert_eq!(decode(&raw), None);
    }

    #[test]
    fn a_batch_is_split_into_its_data_records() {
        let entry = |ts: u64, cap: u16, fill: u8| {
            let d = l7_ev_data {
                h: l7_head {
                    ts_ns: ts,
                    ..head(c::DATA)
                },
                len: 10,
                cap,
                dir: c::SENT,
                how: 1,
                ..Default::default()
            };
            let mut v = bytes_of(&d);
            v.extend(std::iter::repeat_n(fill, usize::from(cap)));
            v
        };
        let mut rec = bytes_of(&head(c::BATCH));
        for (ts, cap, fill) in [(30, 5, b'a'), (10, 0, b'b'), (20, 8, b'c')] {
            let mut e = entry(ts, cap, fill);
            e.resize(e.len().next_multiple_of(8), 0);
            rec.extend(e);
        }
        let mut got = Vec::new();
        assert_eq!(split(&rec, |ts, b| got.push((ts, b.to_vec()))), 0);
        assert_eq!(
            got.iter().map(|(ts, _)| *ts).collect::<Vec<_>>(),
            [30, 10, 20]
        );
        let Some(Event::Data(d)) = decode(&got[2].1) else {
            panic!("not data")
        };
        assert_eq!(d.bytes, b"cccccccc");
        // A record that is not a batch is itself; a cut entry is malformed, counted once.
        let close = bytes_of(&head(c::CLOSE));
        let mut n = 0;
        assert_eq!(split(&close, |ts, _| n += ts), 0);
        assert_eq!(n, 100);
        rec.truncate(rec.len() - 12);
        let mut got = 0;
        assert_eq!(split(&rec, |_, _| got += 1), 1);
        assert_eq!(got, 2);
        assert_eq!(split(&[1, 2], |_, _| ()), 1);
    }

    #[test]
    fn open_and_close() {
        let mut o = l7_ev_open {
            h: head(c::OPEN),
            role: c::SERVER,
            l4: 6,
            family: AF_INET6,
            lport: 80,
            rport: 40000,
            ..Default::default()
        };
        o.laddr[15] = 1;
        o.raddr[15] = 1;
        for (d, s) in o.comm.iter_mut().zip(b"nginx\0") {
            *d = *s as _;
        }
        let Some(Event::Open(e)) = decode(&bytes_of(&o)) else {
            panic!("not open")
        };
        assert_eq!(e.comm, "nginx");
        assert_eq!(e.origin, Origin::Accepted);
        assert_eq!(e.local, "[::1]:80".parse().unwrap());
        assert!(!e.udp);
        assert_eq!(
            decode(&bytes_of(&head(c::CLOSE))),
            Some(Event::Close { cookie: 9 })
        );
        assert_eq!(decode(&bytes_of(&head(99))), None);
        assert_eq!(decode(&[1, 2, 3]), None);
    }
}
