//! Decoding of the records `tcp.bpf.c` sends (ring buffer) and dumps (tcp iterator): the
//! skeleton's copies of `src/bpf/intf.h` read with `probe_sdk::bpf::plain_data`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use probe_sdk::bpf::plain_data::{self, Plain};

use crate::conn_key::{AF_INET, AF_INET6};
use crate::conn_table::{
    GAUGES, G_ADVMSS, G_ATO_J, G_BACKLOG_LEN, G_DELIVERY_RATE, G_ERR_QLEN, G_FORWARD, G_LOST_OUT,
    G_MAX_PACING_RATE, G_OMEM, G_PACING_RATE, G_RCVBUF, G_RCV_QLEN, G_RCV_SPACE, G_RCV_SSTHRESH,
    G_RTO_J, G_SACKED_OUT, G_SNDBUF, G_SND_SSTHRESH, G_WMEM, G_WRI_QLEN,
};
use crate::skel::types::{
    tcpp_counters, tcpp_ev_close, tcpp_ev_estab, tcpp_ev_mark, tcpp_ev_owner, tcpp_live,
    tcpp_sock_id,
};
use probe_sdk::sockets::Owner;

// SAFETY: these are the `#[repr(C)]` plain-data copies of `intf.h`'s records (integers and
// integer arrays only), valid for any bit pattern.
unsafe impl Plain for tcpp_sock_id {}
// SAFETY: as above.
unsafe impl Plain for tcpp_ev_owner {}
// SAFETY: as above.
unsafe impl Plain for tcpp_ev_estab {}
// SAFETY: as above.
unsafe impl Plain for tcpp_ev_close {}
// SAFETY: as above.
unsafe impl Plain for tcpp_ev_mark {}
// SAFETY: as above.
unsafe impl Plain for tcpp_live {}

/// Record kinds: `enum tcpp_kind` of `intf.h`, as the skeleton generates it.
mod kind {
    use crate::skel::types::tcpp_kind;

    pub const CONNECT: u8 = tcpp_kind::TCPP_EV_CONNECT.0 as u8;
    pub const LISTEN: u8 = tcpp_kind::TCPP_EV_LISTEN.0 as u8;
    pub const ESTABLISHED: u8 = tcpp_kind::TCPP_EV_ESTABLISHED.0 as u8;
    pub const CLOSE: u8 = tcpp_kind::TCPP_EV_CLOSE.0 as u8;
    pub const RST_SENT: u8 = tcpp_kind::TCPP_EV_RST_SENT.0 as u8;
    pub const RST_RECV: u8 = tcpp_kind::TCPP_EV_RST_RECV.0 as u8;
    pub const ZERO_SND_WND: u8 = tcpp_kind::TCPP_EV_ZERO_SND_WND.0 as u8;
    pub const ZERO_RCV_WND: u8 = tcpp_kind::TCPP_EV_ZERO_RCV_WND.0 as u8;
    pub const LIVE: u8 = tcpp_kind::TCPP_REC_LIVE.0 as u8;
    pub const DROP: u8 = tcpp_kind::TCPP_EV_DROP.0 as u8;
    pub const EXCEED_BUF: u8 = tcpp_kind::TCPP_EV_EXCEED_BUF.0 as u8;
    pub const SK_ERR: u8 = tcpp_kind::TCPP_EV_SK_ERR.0 as u8;
    pub const SNDBUF_FULL: u8 = tcpp_kind::TCPP_EV_SNDBUF_FULL.0 as u8;
}

/// Drop reasons counted (`enum tcpp_drop` of `intf.h`).
pub mod drop_reason {
    use crate::skel::types::tcpp_drop;

    /// SKB_DROP_REASON_SOCKET_BACKLOG.
    pub const BACKLOG: u32 = tcpp_drop::TCPP_DROP_BACKLOG.0;
    /// SKB_DROP_REASON_SOCKET_FILTER.
    pub const FILTER: u32 = tcpp_drop::TCPP_DROP_FILTER.0;
    /// SKB_DROP_REASON_PROTO_MEM or SKB_DROP_REASON_SOCKET_RCVBUFF.
    pub const RMEM: u32 = tcpp_drop::TCPP_DROP_RMEM.0;
}

/// Kernel TCP states (`BPF_TCP_*`), as far as the tracker needs them.
pub mod state {
    /// ESTABLISHED.
    #[cfg(test)]
    pub const ESTABLISHED: u8 = 1;
    /// SYN_SENT.
    pub const SYN_SENT: u8 = 2;
    /// SYN_RECV.
    pub const SYN_RECV: u8 = 3;
    /// FIN_WAIT1.
    pub const FIN_WAIT1: u8 = 4;
    /// FIN_WAIT2.
    pub const FIN_WAIT2: u8 = 5;
    /// CLOSE.
    #[cfg(test)]
    pub const CLOSE: u8 = 7;
    /// LAST_ACK.
    pub const LAST_ACK: u8 = 9;
    /// LISTEN.
    pub const LISTEN: u8 = 10;
    /// CLOSING.
    pub const CLOSING: u8 = 11;
}

/// A socket and its endpoints as of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockId {
    /// Socket cookie, unique for the life of the kernel.
    pub cookie: u64,
    /// Local address.
    pub laddr: IpAddr,
    /// Local port.
    pub lport: u16,
    /// Remote address.
    pub raddr: IpAddr,
    /// Remote port.
    pub rport: u16,
    /// TCP state; for CLOSE and ESTABLISHED records, the state left.
    pub state: u8,
}

/// Cumulative counters of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Payload bytes received.
    pub rx_bytes: u64,
    /// Payload bytes sent, retransmissions excluded.
    pub tx_bytes: u64,
    /// Segments received.
    pub segs_in: u64,
    /// Segments sent.
    pub segs_out: u64,
    /// Retransmitted segments.
    pub retrans: u64,
    /// Smoothed RTT, µs (0 before the first sample).
    pub srtt_us: u32,
    /// Receive-side RTT estimate, µs.
    pub rcv_rtt_us: u32,
    /// `sk_drops`: packets the socket dropped.
    pub sk_drops: u64,
    /// Jiffies busy, receive-window limited, send-buffer limited (`chrono_stat[]`).
    pub chrono: [u64; 3],
}

/// Window state of a live connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Windows {
    /// Congestion window, segments.
    pub snd_cwnd: u32,
    /// Peer's window, bytes.
    pub snd_wnd: u32,
    /// Advertised window, bytes.
    pub rcv_wnd: u32,
    /// Written but not sent, bytes.
    pub notsent_bytes: u32,
    /// Sent but not acknowledged, bytes.
    pub notack_bytes: u32,
    /// Reordering metric.
    pub reordering: u32,
}

/// The tcp_rate, tcp_sockbuf and tcp_abn gauges of a live connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extra {
    /// Values indexed by the `G_*` constants of `conn_table`.
    pub gauges: [u64; GAUGES],
    /// `sk_err_soft` at the pass.
    pub sk_err_soft: u32,
    /// `jiffies` at the record (for the HZ estimate).
    pub jiffies: u64,
}

/// Bytes per second as `tcp_get_info()` computes `tcpi_delivery_rate`: `rate_delivered`
/// segments of `mss` bytes in `interval_us`; 0 without a sample.
pub fn delivery_rate(rate_delivered: u32, mss: u32, interval_us: u32) -> u64 {
    if rate_delivered == 0 || interval_us == 0 {
        return 0;
    }
    let r = u128::from(rate_delivered) * u128::from(mss) * 1_000_000 / u128::from(interval_us);
    u64::try_from(r).unwrap_or(u64::MAX)
}

fn extra(e: &tcpp_live) -> Extra {
    let pos = |v: i32| u64::try_from(v).unwrap_or(0);
    let mut g = [0u64; GAUGES];
    g[G_RTO_J] = e.rto_j.into();
    g[G_ATO_J] = e.ato_j.into();
    g[G_SND_SSTHRESH] = e.snd_ssthresh.into();
    g[G_RCV_SSTHRESH] = e.rcv_ssthresh.into();
    g[G_ADVMSS] = e.advmss.into();
    g[G_RCV_SPACE] = e.rcv_space.into();
    g[G_DELIVERY_RATE] = delivery_rate(e.rate_delivered, e.mss_cache, e.rate_interval_us);
    g[G_PACING_RATE] = e.pacing_rate;
    g[G_MAX_PACING_RATE] = e.max_pacing_rate;
    g[G_ERR_QLEN] = e.err_qlen.into();
    g[G_RCV_QLEN] = e.rcv_qlen.into();
    g[G_WRI_QLEN] = e.wri_qlen.into();
    g[G_BACKLOG_LEN] = e.backlog_len.into();
    g[G_OMEM] = e.omem_alloc.into();
    g[G_FORWARD] = pos(e.forward_alloc);
    g[G_WMEM] = pos(e.wmem_queued);
    g[G_RCVBUF] = pos(e.rcvbuf);
    g[G_SNDBUF] = pos(e.sndbuf);
    g[G_LOST_OUT] = e.lost_out.into();
    g[G_SACKED_OUT] = e.sacked_out.into();
    Extra {
        gauges: g,
        sk_err_soft: u32::try_from(e.sk_err_soft).unwrap_or(0),
        jiffies: e.jiffies,
    }
}

/// One record from the kernel.
// A record is decoded, handed over by value and dropped at once, never stored in bulk: the
// size of the live variant costs nothing worth a heap allocation per socket and pass.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// connect(): the socket entered SYN_SENT.
    Connect {
        /// Socket.
        id: SockId,
        /// Monotonic time, ns.
        ts_ns: u64,
        /// Caller.
        owner: Owner,
    },
    /// listen().
    Listen {
        /// Socket.
        id: SockId,
        /// Caller.
        owner: Owner,
    },
    /// The connection reached ESTABLISHED (from `id.state`).
    Established {
        /// Socket.
        id: SockId,
        /// Monotonic time, ns.
        ts_ns: u64,
        /// Smoothed RTT then (for an accepted socket: the SYN-ACK round trip), µs.
        srtt_us: u32,
    },
    /// The connection reached CLOSE (from `id.state`) with these final counters.
    Close {
        /// Socket.
        id: SockId,
        /// Final counters.
        counters: Counters,
    },
    /// A reset was sent.
    RstSent {
        /// Socket.
        id: SockId,
    },
    /// A reset was received.
    RstRecv {
        /// Socket.
        id: SockId,
    },
    /// The peer advertised a zero window after an open one.
    ZeroSndWnd {
        /// Socket.
        id: SockId,
    },
    /// A segment arrived while our advertised window was zero.
    ZeroRcvWnd {
        /// Socket.
        id: SockId,
        /// Identifies the zero-window episode (rcv_wup).
        episode: u32,
    },
    /// A packet of the socket was dropped for a counted reason.
    Drop {
        /// Socket.
        id: SockId,
        /// Which reason ([`drop_reason`]).
        reason: u32,
    },
    /// A memory charge of the socket was refused (sock_exceed_buf_limit).
    ExceedBuf {
        /// Socket.
        id: SockId,
        /// 0 send, 1 receive.
        kind: u32,
    },
    /// An error was reported on the socket.
    SkErr {
        /// Socket.
        id: SockId,
        /// The error number (`sk_err`).
        err: u32,
    },
    /// A non-blocking send found the send buffer full (-EAGAIN).
    SndBufFull {
        /// Socket.
        id: SockId,
    },
    /// Iterator record of a live socket.
    Live {
        /// Socket (state = current state).
        id: SockId,
        /// Cumulative counters.
        counters: Counters,
        /// Window state.
        windows: Windows,
        /// Socket inode, 0 if none.
        ino: u64,
        /// Rate, buffer and abnormal-state gauges.
        extra: Extra,
    },
}

fn ip(family: u16, b: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
        _ => None,
    }
}

fn sock_id(raw: &tcpp_sock_id) -> Option<SockId> {
    Some(SockId {
        cookie: raw.cookie,
        laddr: ip(raw.family, &raw.laddr)?,
        lport: raw.lport,
        raddr: ip(raw.family, &raw.raddr)?,
        rport: raw.rport,
        state: raw.state,
    })
}

fn counters(c: &tcpp_counters) -> Counters {
    Counters {
        rx_bytes: c.rx_bytes,
        tx_bytes: c.tx_bytes,
        segs_in: c.segs_in,
        segs_out: c.segs_out,
        retrans: c.retrans,
        srtt_us: c.srtt_us,
        rcv_rtt_us: c.rcv_rtt_us,
        sk_drops: c.sk_drops.into(),
        chrono: c.chrono.map(u64::from),
    }
}

/// The NUL-terminated `comm` as a string.
pub fn comm_string(raw: &[i8]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .map(|c| c.to_ne_bytes()[0])
        .take_while(|b| *b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Size of one iterator record.
pub const LIVE_RECORD_SIZE: usize = std::mem::size_of::<tcpp_live>();

/// Decodes one record; None for a truncated record or an unknown kind or family.
pub fn decode(bytes: &[u8]) -> Option<Record> {
    let head: tcpp_sock_id = plain_data::read(bytes)?;
    let id = sock_id(&head)?;
    let owner = |e: &tcpp_ev_owner| Owner {
        tgid: e.tgid,
        comm: comm_string(&e.comm),
    };
    Some(match head.kind {
        kind::CONNECT => {
            let e: tcpp_ev_owner = plain_data::read(bytes)?;
            Record::Connect {
                id,
                ts_ns: e.ts_ns,
                owner: owner(&e),
            }
        }
        kind::LISTEN => {
            let e: tcpp_ev_owner = plain_data::read(bytes)?;
            Record::Listen {
                id,
                owner: owner(&e),
            }
        }
        kind::ESTABLISHED => {
            let e: tcpp_ev_estab = plain_data::read(bytes)?;
            Record::Established {
                id,
                ts_ns: e.ts_ns,
                srtt_us: e.srtt_us,
            }
        }
        kind::CLOSE => {
            let e: tcpp_ev_close = plain_data::read(bytes)?;
            Record::Close {
                id,
                counters: counters(&e.c),
            }
        }
        kind::RST_SENT => Record::RstSent { id },
        kind::RST_RECV => Record::RstRecv { id },
        kind::ZERO_SND_WND => Record::ZeroSndWnd { id },
        kind::ZERO_RCV_WND => {
            let e: tcpp_ev_mark = plain_data::read(bytes)?;
            Record::ZeroRcvWnd { id, episode: e.aux }
        }
        kind::LIVE => {
            let e: tcpp_live = plain_data::read(bytes)?;
            Record::Live {
                id,
                counters: counters(&e.c),
                windows: Windows {
                    snd_cwnd: e.snd_cwnd,
                    snd_wnd: e.snd_wnd,
                    rcv_wnd: e.rcv_wnd,
                    notsent_bytes: e.notsent_bytes,
                    notack_bytes: e.notack_bytes,
                    reordering: e.reordering,
                },
                ino: e.ino,
                extra: extra(&e),
            }
        }
        kind::DROP | kind::EXCEED_BUF | kind::SK_ERR => {
            let e: tcpp_ev_mark = plain_data::read(bytes)?;
            match head.kind {
                kind::DROP => Record::Drop { id, reason: e.aux },
                kind::EXCEED_BUF => Record::ExceedBuf { id, kind: e.aux },
                _ => Record::SkErr { id, err: e.aux },
            }
        }
        kind::SNDBUF_FULL => Record::SndBufFull { id },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_id(kind: u8, family: u16) -> tcpp_sock_id {
        let mut id = tcpp_sock_id {
            cookie: 77,
            family,
            lport: 40000,
            rport: 80,
            kind,
            state: state::SYN_SENT,
            ..Default::default()
        };
        id.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        id.raddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        id
    }

    fn bytes<T: Plain>(v: &T) -> Vec<u8> {
        // SAFETY: the records of intf.h are laid out without padding (explicit `pad` fields).
        unsafe { plain_data::as_bytes(v) }.to_vec()
    }

    #[test]
    fn kinds_fit_the_u8_field_and_differ() {
        use crate::skel::types::tcpp_kind;
        assert!(tcpp_kind::TCPP_REC_LIVE.0 <= u32::from(u8::MAX));
        let all = [
            kind::CONNECT,
            kind::LISTEN,
            kind::ESTABLISHED,
            kind::CLOSE,
            kind::RST_SENT,
            kind::RST_RECV,
            kind::ZERO_SND_WND,
            kind::ZERO_RCV_WND,
            kind::LIVE,
            kind::DROP,
            kind::EXCEED_BUF,
            kind::SK_ERR,
            kind::SNDBUF_FULL,
        ];
        assert_eq!(all, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
        assert_eq!(
            [drop_reason::BACKLOG, drop_reason::FILTER, drop_reason::RMEM],
            [1, 2, 3]
        );
    }

    #[test]
    fn decodes_connect_with_owner() {
        let mut e = tcpp_ev_owner {
            id: raw_id(kind::CONNECT, AF_INET),
            ts_ns: 123,
            tgid: 4321,
            ..Default::default()
        };
        for (d, s) in e.comm.iter_mut().zip(b"curl\0".iter()) {
            *d = *s as i8;
        }
        let r = decode(&bytes(&e)).unwrap();
        let Record::Connect { id, ts_ns, owner } = r else {
            panic!("{r:?}")
        };
        assert_eq!(id.cookie, 77);
        assert_eq!(id.laddr.to_string(), "127.0.0.1");
        assert_eq!(id.raddr.to_string(), "10.1.2.3");
        assert_eq!((id.lport, id.rport, id.state), (40000, 80, state::SYN_SENT));
        assert_eq!(ts_ns, 123);
        assert_eq!(
            owner,
            Owner {
                tgid: 4321,
                comm: "curl".into()
            }
        );
    }

    #[test]
    fn decodes_close_counters_and_ipv6() {
        let mut id = raw_id(kind::CLOSE, AF_INET6);
        id.laddr = Ipv6Addr::LOCALHOST.octets();
        id.raddr = Ipv6Addr::LOCALHOST.octets();
        let e = tcpp_ev_close {
            id,
            c: tcpp_counters {
                rx_bytes: 1,
                tx_bytes: 2,
                segs_in: 3,
                segs_out: 4,
                retrans: 5,
                srtt_us: 6,
                rcv_rtt_us: 7,
                sk_drops: 8,
                chrono: [9, 10, 11],
            },
        };
        let Some(Record::Close { id, counters }) = decode(&bytes(&e)) else {
            panic!()
        };
        assert_eq!(id.laddr.to_string(), "::1");
        assert_eq!(counters.rx_bytes, 1);
        assert_eq!(counters.rcv_rtt_us, 7);
        assert_eq!((counters.sk_drops, counters.chrono), (8, [9, 10, 11]));
    }

    #[test]
    fn decodes_live_and_marks() {
        let e = tcpp_live {
            id: raw_id(kind::LIVE, AF_INET),
            ino: 99,
            snd_cwnd: 10,
            reordering: 3,
            rto_j: 50,
            rcvbuf: 131072,
            forward_alloc: -5,
            rate_delivered: 10,
            rate_interval_us: 1000,
            mss_cache: 1000,
            lost_out: 4,
            sk_err_soft: 113,
            jiffies: 12345,
            ..Default::default()
        };
        let Some(Record::Live {
            windows,
            ino,
            extra,
            ..
        }) = decode(&bytes(&e))
        else {
            panic!()
        };
        assert_eq!((ino, windows.snd_cwnd, windows.reordering), (99, 10, 3));
        assert_eq!(extra.gauges[G_RTO_J], 50);
        assert_eq!(extra.gauges[G_RCVBUF], 131072);
        assert_eq!(extra.gauges[G_FORWARD], 0, "negative clamps to 0");
        assert_eq!(
            extra.gauges[G_DELIVERY_RATE], 10_000_000,
            "10 x 1000 B per ms"
        );
        assert_eq!(extra.gauges[G_LOST_OUT], 4);
        assert_eq!((extra.sk_err_soft, extra.jiffies), (113, 12345));
        let m = tcpp_ev_mark {
            id: raw_id(kind::DROP, AF_INET),
            aux: drop_reason::RMEM,
            pad: 0,
        };
        assert!(matches!(
            decode(&bytes(&m)),
            Some(Record::Drop { reason: 3, .. })
        ));
        let m = tcpp_ev_mark {
            id: raw_id(kind::SK_ERR, AF_INET),
            aux: 110,
            pad: 0,
        };
        assert!(matches!(
            decode(&bytes(&m)),
            Some(Record::SkErr { err: 110, .. })
        ));
        let m = tcpp_ev_mark {
            id: raw_id(kind::ZERO_RCV_WND, AF_INET),
            aux: 5,
            pad: 0,
        };
        assert!(matches!(
            decode(&bytes(&m)),
            Some(Record::ZeroRcvWnd { episode: 5, .. })
        ));
        let m = tcpp_ev_mark {
            id: raw_id(kind::RST_SENT, AF_INET),
            aux: 0,
            pad: 0,
        };
        assert!(matches!(decode(&bytes(&m)), Some(Record::RstSent { .. })));
        assert_eq!(LIVE_RECORD_SIZE, std::mem::size_of::<tcpp_live>());
    }

    #[test]
    fn rejects_short_unknown_or_foreign_records() {
        let e = tcpp_ev_close {
            id: raw_id(kind::CLOSE, AF_INET),
            ..Default::default()
        };
        let b = bytes(&e);
        assert!(decode(&b[..b.len() - 1]).is_none(), "truncated");
        assert!(decode(&b[..10]).is_none(), "no header");
        let m = tcpp_ev_mark {
            id: raw_id(200, AF_INET),
            ..Default::default()
        };
        assert!(decode(&bytes(&m)).is_none(), "unknown kind");
        let m = tcpp_ev_mark {
            id: raw_id(kind::RST_RECV, 1),
            ..Default::default()
        };
        assert!(decode(&bytes(&m)).is_none(), "AF_UNIX");
    }
}
