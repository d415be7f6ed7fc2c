//! Decoding of the records `endpoint.bpf.c` sends (ring buffer) and dumps (iterators, the
//! `udp_socks` map): the skeleton's copies of `src/bpf/intf.h` read with
//! `probe_sdk::bpf::plain_data`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use probe_sdk::bpf::plain_data::{self, Plain};

use crate::skel::types::{
    ep_ev_mark, ep_ev_owner, ep_id, ep_listen_ctr, ep_listen_key, ep_listen_state, ep_listener,
    ep_udp_ctr, ep_udp_live,
};
use probe_sdk::histogram::{Histogram, SLOTS};

// SAFETY: these are the `#[repr(C)]` plain-data copies of `intf.h`'s records (integers and
// integer arrays only), valid for any bit pattern.
unsafe impl Plain for ep_id {}
// SAFETY: as above.
unsafe impl Plain for ep_ev_owner {}
// SAFETY: as above.
unsafe impl Plain for ep_ev_mark {}
// SAFETY: as above.
unsafe impl Plain for ep_listener {}
// SAFETY: as above.
unsafe impl Plain for ep_udp_live {}
// SAFETY: as above.
unsafe impl Plain for ep_udp_ctr {}
// SAFETY: as above.
unsafe impl Plain for ep_listen_key {}
// SAFETY: as above.
unsafe impl Plain for ep_listen_state {}

/// Address family AF_INET.
pub const AF_INET: u16 = 2;
/// Address family AF_INET6.
#[cfg(test)]
pub const AF_INET6: u16 = 10;

/// Size of one tcp iterator record.
pub const LISTENER_RECORD_SIZE: usize = std::mem::size_of::<ep_listener>();
/// Size of one udp iterator record.
pub const UDP_RECORD_SIZE: usize = std::mem::size_of::<ep_udp_live>();

/// Record kinds: `enum ep_kind` of `intf.h`, as the skeleton generates it.
mod kind {
    use crate::skel::types::ep_kind;

    pub const LISTEN: u8 = ep_kind::EP_EV_LISTEN.0 as u8;
    pub const CONNECT: u8 = ep_kind::EP_EV_CONNECT.0 as u8;
    pub const ESTAB: u8 = ep_kind::EP_EV_ESTAB.0 as u8;
    pub const CONN_FAIL: u8 = ep_kind::EP_EV_CONN_FAIL.0 as u8;
    pub const RETRAN_SYN: u8 = ep_kind::EP_EV_RETRAN_SYN.0 as u8;
    pub const SYN_DROP: u8 = ep_kind::EP_EV_SYN_DROP.0 as u8;
    pub const LISTEN_CLOSE: u8 = ep_kind::EP_EV_LISTEN_CLOSE.0 as u8;
    pub const LISTENER: u8 = ep_kind::EP_REC_LISTENER.0 as u8;
    pub const UDP: u8 = ep_kind::EP_REC_UDP.0 as u8;
}

/// Which socket a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockId {
    /// Socket cookie.
    pub cookie: u64,
    /// AF_INET or AF_INET6.
    pub family: u16,
    /// Local address.
    pub laddr: IpAddr,
    /// Local port.
    pub lport: u16,
    /// Remote address.
    pub raddr: IpAddr,
    /// Remote port.
    pub rport: u16,
}

/// An address of `family` from the record's 16 bytes.
pub fn addr(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*raw))
    }
}

/// The unspecified address of `family`.
pub fn any_addr(family: u16) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}

impl SockId {
    fn from_raw(id: &ep_id) -> SockId {
        SockId {
            cookie: id.cookie,
            family: id.family,
            laddr: addr(id.family, &id.laddr),
            lport: id.lport,
            raddr: addr(id.family, &id.raddr),
            rport: id.rport,
        }
    }
}

/// Cumulative counters of one listen address, kept by the kernel side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenCounters {
    /// Child sockets created.
    pub passive_open: u64,
    /// Child sockets closed from SYN_RECV.
    pub passive_open_failed: u64,
    /// SYNs the listener took in (answered or dropped).
    pub syns: u64,
    /// Of those, refused because the accept queue was full.
    pub accept_overflow_syn: u64,
    /// Handshake ACKs whose child could not be created: one listen drop each.
    pub ack_listen_drops: u64,
    /// Of those, refused because the accept queue was full.
    pub accept_overflow_ack: u64,
    /// SYN-ACKs retransmitted.
    pub retran_synacks: u64,
    /// Drops with reason SOCKET_BACKLOG.
    pub drop_backlog: u64,
    /// Drops with another reason.
    pub drop_other: u64,
    /// The listener's sk_drops increments that were no listen drop (a packet freed on the
    /// discard path, which adds to sk_drops itself).
    pub drops_not_listen: u64,
    /// SYN-ACK round trips of accepted connections, us.
    pub estab: Histogram,
}

/// A listener as the iterator or its close saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// The listening socket.
    pub id: SockId,
    /// Whether it is closing (final values).
    pub closing: bool,
    /// Counters of its listen address (zero unless it owns them: `owns`).
    pub counters: ListenCounters,
    /// Whether `counters` are this socket's (the first listener of a reuseport group).
    pub owns: bool,
    /// sk_drops: its change since the map entry was made when `owns`, else the whole.
    pub drops: u64,
    /// Socket inode (0 without a file).
    pub ino: u64,
    /// Accept queue length and limit (listen() backlog); None when only the kernel map entry
    /// was read (a listener in another network namespace).
    pub queue: Option<(u32, u32)>,
}

/// A decoded ring-buffer or iterator record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A socket started listening (process context).
    Listen {
        /// The socket.
        id: SockId,
        /// Owner pid.
        tgid: u32,
        /// Owner name.
        comm: String,
    },
    /// A connect started: SYN_SENT (process context).
    Connect {
        /// The socket (its `cookie` is 0: connects are named by `sk`).
        id: SockId,
        /// Owner pid.
        tgid: u32,
        /// Owner name.
        comm: String,
        /// When, ns (monotonic).
        ts_ns: u64,
        /// The socket's kernel address: what the connect's later records name it by.
        sk: u64,
    },
    /// SYN_SENT -> ESTABLISHED.
    Established {
        /// The socket's kernel address.
        sk: u64,
        /// When, ns (monotonic, µs resolution).
        ts_ns: u64,
    },
    /// SYN_SENT -> CLOSE with the socket's sk_err.
    ConnectFailed {
        /// The socket's kernel address.
        sk: u64,
        /// sk_err (0 when closed by its owner).
        err: u32,
    },
    /// A SYN retransmitted.
    RetransSyn {
        /// The socket's kernel address.
        sk: u64,
    },
    /// A SYN freed by the local stack.
    SynDrop {
        /// The socket's kernel address.
        sk: u64,
    },
    /// A listener (iterator) or its close.
    Listener(Listener),
}

fn comm(raw: &[i8; 16]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn hist(ctr: &ep_listen_ctr) -> Histogram {
    let mut h = Histogram::default();
    for (d, s) in h.counts.iter_mut().zip(ctr.estab_hist.iter()).take(SLOTS) {
        *d = *s;
    }
    h.sum = ctr.estab_sum;
    h.max = ctr.estab_max;
    h
}

fn counters(c: &ep_listen_ctr) -> ListenCounters {
    ListenCounters {
        passive_open: c.passive_open,
        passive_open_failed: c.passive_open_failed,
        syns: c.syns,
        accept_overflow_syn: c.accept_overflow_syn,
        ack_listen_drops: c.ack_listen_drops,
        accept_overflow_ack: c.accept_overflow_ack,
        retran_synacks: c.retran_synacks,
        drop_backlog: c.drop_backlog,
        drop_other: c.drop_other,
        drops_not_listen: c.drops_not_listen,
        estab: hist(c),
    }
}

/// Decodes one entry of the `listeners` map as a listener: what the probe knows of listeners
/// the tcp iterator does not list (it walks the probe's own network namespace only). Its
/// `drops` is the change of the listener's sk_drops since its entry was made, when a packet
/// was last counted; no queue gauges.
pub fn decode_listen_entry(key: &[u8], value: &[u8]) -> Option<Listener> {
    let k: ep_listen_key = plain_data::read(key)?;
    let v: ep_listen_state = plain_data::read(value)?;
    let laddr = addr(k.family, &k.addr);
    Some(Listener {
        id: SockId {
            cookie: v.cookie,
            family: k.family,
            laddr,
            lport: k.port,
            raddr: any_addr(k.family),
            rport: 0,
        },
        closing: false,
        counters: counters(&v.c),
        owns: true,
        drops: v.last_drops.saturating_sub(v.base_drops),
        ino: 0,
        queue: None,
    })
}

fn listener(l: &ep_listener) -> Listener {
    let c = &l.c;
    Listener {
        id: SockId::from_raw(&l.id),
        closing: l.id.kind == kind::LISTEN_CLOSE,
        counters: ListenCounters {
            passive_open: c.passive_open,
            passive_open_failed: c.passive_open_failed,
            syns: c.syns,
            accept_overflow_syn: c.accept_overflow_syn,
            ack_listen_drops: c.ack_listen_drops,
            accept_overflow_ack: c.accept_overflow_ack,
            retran_synacks: c.retran_synacks,
            drop_backlog: c.drop_backlog,
            drop_other: c.drop_other,
            drops_not_listen: c.drops_not_listen,
            estab: hist(c),
        },
        owns: l.owns != 0,
        drops: l.drops,
        ino: l.ino,
        queue: Some((l.ack_backlog, l.max_ack_backlog)),
    }
}

/// Decodes one ring-buffer or tcp iterator record; None if it is too short or of an unknown
/// kind.
pub fn decode(bytes: &[u8]) -> Option<Record> {
    let id: ep_id = plain_data::read(bytes)?;
    Some(match id.kind {
        kind::LISTEN | kind::CONNECT => {
            let e: ep_ev_owner = plain_data::read(bytes)?;
            let id = SockId::from_raw(&e.id);
            let comm = comm(&e.comm);
            if e.id.kind == kind::LISTEN {
                Record::Listen {
                    id,
                    tgid: e.tgid,
                    comm,
                }
            } else {
                Record::Connect {
                    id: SockId { cookie: 0, ..id },
                    tgid: e.tgid,
                    comm,
                    ts_ns: e.ts_ns,
                    sk: e.sk,
                }
            }
        }
        kind::ESTAB | kind::CONN_FAIL | kind::RETRAN_SYN | kind::SYN_DROP => {
            let e: ep_ev_mark = plain_data::read(bytes)?;
            let sk = e.id.cookie;
            match e.id.kind {
                kind::ESTAB => Record::Established { sk, ts_ns: e.ts_ns },
                kind::CONN_FAIL => Record::ConnectFailed { sk, err: e.aux },
                kind::RETRAN_SYN => Record::RetransSyn { sk },
                _ => Record::SynDrop { sk },
            }
        }
        kind::LISTEN_CLOSE | kind::LISTENER => {
            let l: ep_listener = plain_data::read(bytes)?;
            Record::Listener(listener(&l))
        }
        _ => return None,
    })
}

/// A UDP socket as the udp iterator saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpLive {
    /// The socket.
    pub id: SockId,
    /// sk_drops.
    pub drops: u64,
    /// Socket inode.
    pub ino: u64,
}

/// Decodes one udp iterator record.
pub fn decode_udp_live(bytes: &[u8]) -> Option<UdpLive> {
    let r: ep_udp_live = plain_data::read(bytes)?;
    (r.id.kind == kind::UDP).then(|| UdpLive {
        id: SockId::from_raw(&r.id),
        drops: r.drops,
        ino: r.ino,
    })
}

/// Cumulative counters of one UDP socket (the `udp_socks` map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpCounters {
    /// The socket when first seen.
    pub id: SockId,
    /// Payload bytes sent.
    pub tx_bytes: u64,
    /// Payload bytes received.
    pub rx_bytes: u64,
    /// Datagrams sent.
    pub tx_dgrams: u64,
    /// Datagrams received.
    pub rx_dgrams: u64,
    /// sendmsg failures.
    pub tx_errors: u64,
    /// Receive-buffer-full drops (RcvbufErrors).
    pub rcvbuf_errors: u64,
    /// Other receive queueing failures (MemErrors).
    pub rcv_mem_errors: u64,
    /// First process that sent or received (0: none).
    pub tgid: u32,
    /// Its name.
    pub comm: String,
}

/// Decodes one `udp_socks` map value.
pub fn decode_udp_counters(bytes: &[u8]) -> Option<UdpCounters> {
    let c: ep_udp_ctr = plain_data::read(bytes)?;
    Some(UdpCounters {
        id: SockId::from_raw(&c.id),
        tx_bytes: c.tx_bytes,
        rx_bytes: c.rx_bytes,
        tx_dgrams: c.tx_dgrams,
        rx_dgrams: c.rx_dgrams,
        tx_errors: c.tx_errors,
        rcvbuf_errors: c.rcvbuf_errors,
        rcv_mem_errors: c.rcv_mem_errors,
        tgid: c.tgid,
        comm: comm(&c.comm),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_owner_and_mark_records() {
        let mut e: ep_ev_owner = plain_data::zeroed();
        e.id.kind = kind::CONNECT;
        e.id.family = AF_INET;
        e.id.cookie = 0xffff_8880_0000_1000;
        e.sk = 0xffff_8880_0000_1000;
        e.id.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.id.rport = 80;
        e.tgid = 42;
        e.ts_ns = 1_000;
        for (d, s) in e.comm.iter_mut().zip(b"curl") {
            *d = *s as i8;
        }
        // SAFETY: viewing a plain-data struct of ours as its bytes, for its whole size.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&e as *const ep_ev_owner).cast::<u8>(),
                std::mem::size_of::<ep_ev_owner>(),
            )
        };
        match decode(bytes) {
            Some(Record::Connect {
                id,
                tgid,
                comm,
                ts_ns,
                sk,
            }) => {
                assert_eq!(
                    (id.cookie, sk, tgid, comm.as_str(), ts_ns),
                    (0, 0xffff_8880_0000_1000, 42, "curl", 1_000)
                );
                assert_eq!(id.laddr.to_string(), "127.0.0.1");
                assert_eq!(id.rport, 80);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode(&bytes[..8]), None, "too short");
        let mut m: ep_ev_mark = plain_data::zeroed();
        m.id.kind = kind::CONN_FAIL;
        m.id.cookie = 3;
        m.aux = 111;
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&m as *const ep_ev_mark).cast::<u8>(),
                std::mem::size_of::<ep_ev_mark>(),
            )
        };
        assert_eq!(
            decode(bytes),
            Some(Record::ConnectFailed { sk: 3, err: 111 })
        );
    }

    #[test]
    fn garbage_truncated_or_unknown_records_are_refused_without_panic() {
        let mut e: ep_ev_owner = plain_data::zeroed();
        e.id.kind = kind::LISTEN;
        e.id.family = AF_INET;
        // SAFETY: viewing a plain-data struct of ours as its bytes, for its whole size.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&e as *const ep_ev_owner).cast::<u8>(),
                std::mem::size_of::<ep_ev_owner>(),
            )
        };
        assert!(decode(bytes).is_some());
        // The header is there, the owner record is cut short.
        assert_eq!(
            decode(&bytes[..std::mem::size_of::<ep_id>()]),
            None,
            "truncated"
        );
        let mut unknown = bytes.to_vec();
        unknown[std::mem::offset_of!(ep_id, kind)] = 250;
        assert_eq!(decode(&unknown), None, "unknown kind");
        // Any bytes of any length: a record or None, never a panic.
        let mut x: u32 = 0x9e37_79b9;
        for len in 0..512 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = decode(&junk);
        }
    }

    #[test]
    fn addresses_by_family() {
        let mut raw = [0u8; 16];
        raw[15] = 1;
        assert_eq!(addr(AF_INET6, &raw).to_string(), "::1");
        assert_eq!(any_addr(AF_INET).to_string(), "0.0.0.0");
        assert_eq!(any_addr(AF_INET6).to_string(), "::");
    }
}
