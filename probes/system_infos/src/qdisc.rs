//! Root qdisc statistics per interface from one rtnetlink `RTM_GETQDISC` dump (what
//! `tc -s qdisc show` prints), without running `tc`.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWQDISC: u16 = 36;
const RTM_GETQDISC: u16 = 38;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const TCMSG_LEN: usize = 20;
const TC_H_ROOT: u32 = 0xFFFF_FFFF;
const TC_H_INGRESS: u32 = 0xFFFF_FFF1;
const TCA_KIND: u16 = 1;
const TCA_STATS2: u16 = 7;
const TCA_STATS_QUEUE: u16 = 3;
const TCA_STATS_APP: u16 = 4;

/// Queue statistics of an interface's root qdisc (cumulative, except `backlog`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QdiscStats {
    /// Packets dropped.
    pub drops: u64,
    /// Overlimit events.
    pub overlimits: u64,
    /// Bytes queued now.
    pub backlog: u64,
    /// ECN marks summed over the interface's codel/fq_codel qdiscs; `None` if it has none.
    pub ecn_mark: Option<u64>,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterates `rtattr`s: (type without flag bits, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let kind = u16_at(b, 2)? & 0x3FFF;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

/// ecn_mark from the qdisc-specific statistics, for the qdiscs that have it.
fn ecn_mark(kind: &[u8], app: &[u8]) -> Option<u64> {
    match kind {
        // struct tc_fq_codel_xstats { u32 type; struct tc_fq_codel_qd_stats { maxpacket,
        // drop_overlimit, ecn_mark, ... } }, type 0 = qdisc stats.
        b"fq_codel" if u32_at(app, 0)? == 0 => u32_at(app, 12).map(u64::from),
        // struct tc_codel_xstats { maxpacket, count, lastcount, ldelay, drop_next,
        // drop_overlimit, ecn_mark, ... }
        b"codel" => u32_at(app, 24).map(u64::from),
        _ => None,
    }
}

/// Folds one netlink datagram of a qdisc dump into `out` (by interface index). Returns true
/// when the dump is complete.
pub fn parse_dump(mut buf: &[u8], out: &mut HashMap<u32, QdiscStats>) -> io::Result<bool> {
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_at(buf, 0)
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(0);
        let kind = u16_at(buf, 4).unwrap_or(0);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink message",
            ));
        }
        let body = &buf[NLMSG_HDRLEN..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).map(|e| e as i32).unwrap_or(0);
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
            }
            RTM_NEWQDISC if body.len() >= TCMSG_LEN => {
                let ifindex = u32_at(body, 4).unwrap_or(0);
                let parent = u32_at(body, 12).unwrap_or(0);
                if parent != TC_H_INGRESS {
                    fold_qdisc(ifindex, parent == TC_H_ROOT, &body[TCMSG_LEN..], out);
                }
            }
            _ => {}
        }
        buf = buf.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(false)
}

fn fold_qdisc(ifindex: u32, is_root: bool, attr_bytes: &[u8], out: &mut HashMap<u32, QdiscStats>) {
    let mut kind: &[u8] = &[];
    let mut queue = None;
    let mut app: &[u8] = &[];
    for (t, payload) in attrs(attr_bytes) {
        match t {
            TCA_KIND => kind = payload.split(|b| *b == 0).next().unwrap_or(&[]),
            TCA_STATS2 => {
                for (st, sp) in attrs(payload) {
                    match st {
                        // struct gnet_stats_queue { qlen, backlog, drops, requeues, overlimits }
                        TCA_STATS_QUEUE => {
                            queue = Some((u32_at(sp, 4), u32_at(sp, 8), u32_at(sp, 16)));
                        }
                        TCA_STATS_APP => app = sp,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let entry = out.entry(ifindex).or_default();
    if is_root {
        if let Some((backlog, drops, overlimits)) = queue {
            entry.backlog = backlog.map_or(0, u64::from);
            entry.drops = drops.map_or(0, u64::from);
            entry.overlimits = overlimits.map_or(0, u64::from);
        }
    }
    if let Some(mark) = ecn_mark(kind, app) {
        entry.ecn_mark = Some(entry.ecn_mark.unwrap_or(0) + mark);
    }
}

/// Dumps every qdisc of the probe's network namespace; keyed by interface index.
pub fn dump() -> io::Result<HashMap<u32, QdiscStats>> {
    use nix::sys::socket::{
        bind, recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
        SockFlag, SockProtocol, SockType,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    // A kernel that never answers must not stall the probe's cycle.
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(1, 0),
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;

    let mut req = [0u8; NLMSG_HDRLEN + TCMSG_LEN];
    let total = req.len() as u32;
    req[0..4].copy_from_slice(&total.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETQDISC.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    sendto(
        fd.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;

    let mut out = HashMap::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        if n == 0 || parse_dump(&buf[..n], &mut out)? {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtattr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize(align4(a.len()), 0);
        a
    }

    fn qdisc_msg(ifindex: u32, parent: u32, kind: &str, queue: [u32; 5], app: &[u8]) -> Vec<u8> {
        let mut tcmsg = vec![0u8; TCMSG_LEN];
        tcmsg[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        tcmsg[12..16].copy_from_slice(&parent.to_ne_bytes());
        let mut name = kind.as_bytes().to_vec();
        name.push(0);
        let q: Vec<u8> = queue.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut stats2 = rtattr(TCA_STATS_QUEUE, &q);
        stats2.extend(rtattr(TCA_STATS_APP, app));
        let mut body = tcmsg;
        body.extend(rtattr(TCA_KIND, &name));
        body.extend(rtattr(TCA_STATS2, &stats2));
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&RTM_NEWQDISC.to_ne_bytes());
        msg.extend_from_slice(&[0u8; 10]);
        msg.extend(body);
        msg
    }

    #[test]
    fn root_stats_and_child_ecn_marks() {
        let fq_codel_app: Vec<u8> = [0u32, 1514, 3, 7, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let mut dump = qdisc_msg(2, TC_H_ROOT, "mq", [0, 100, 5, 0, 9], &[]);
        dump.extend(qdisc_msg(
            2,
            0x0001_0001,
            "fq_codel",
            [0, 0, 2, 0, 4],
            &fq_codel_app,
        ));
        dump.extend(qdisc_msg(
            2,
            0x0001_0002,
            "fq_codel",
            [0, 0, 3, 0, 5],
            &fq_codel_app,
        ));
        dump.extend(qdisc_msg(
            3,
            TC_H_INGRESS,
            "ingress",
            [0, 0, 99, 0, 99],
            &[],
        ));
        let mut done = vec![0u8; NLMSG_HDRLEN];
        done[0..4].copy_from_slice(&(NLMSG_HDRLEN as u32).to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        dump.extend(done);

        let mut out = HashMap::new();
        assert!(parse_dump(&dump, &mut out).unwrap());
        assert_eq!(
            out.get(&2),
            Some(&QdiscStats {
                drops: 5,
                overlimits: 9,
                backlog: 100,
                ecn_mark: Some(14)
            })
        );
        assert_eq!(out.get(&3), None, "ingress qdiscs are not transmit queues");
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        let mut out = HashMap::new();
        let msg = qdisc_msg(2, TC_H_ROOT, "mq", [0; 5], &[]);
        assert!(parse_dump(&msg[..msg.len() - 3], &mut out).is_err());
        // A lying rtattr length inside a valid message is ignored.
        let mut bad = msg.clone();
        bad[NLMSG_HDRLEN + TCMSG_LEN] = 0xFF;
        assert!(parse_dump(&bad, &mut out).is_ok());
    }

    #[test]
    fn live_dump_lists_this_machines_interfaces() {
        // Every interface has a root qdisc (noqueue at least is not listed; lo has none), so
        // only check that the dump completes and indexes are plausible.
        let out = dump().expect("rtnetlink qdisc dump");
        assert!(out.keys().all(|i| *i > 0));
    }
}
