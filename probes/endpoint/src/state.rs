//! What the probe keeps between periods: one row per output key with running totals, and per
//! socket the cumulative kernel values last seen, so each pass adds only their change.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::decode::{any_addr, ListenCounters, Listener, Record, UdpCounters, UdpLive};
use probe_sdk::histogram::Histogram;
use probe_sdk::sockets::Owner;

/// Number of endpoint_tcp running totals.
pub const N_TCP: usize = 18;
/// Number of endpoint_udp running totals.
pub const N_UDP: usize = 8;

/// Indices of [`TcpRow::counters`] (the order of `tables::TCP_COUNTERS`).
pub mod t {
    /// listendrop.
    pub const LISTENDROP: usize = 0;
    /// accept_overflow.
    pub const ACCEPT_OVERFLOW: usize = 1;
    /// syn_overflow.
    pub const SYN_OVERFLOW: usize = 2;
    /// passive_open.
    pub const PASSIVE_OPEN: usize = 3;
    /// passive_open_failed.
    pub const PASSIVE_OPEN_FAILED: usize = 4;
    /// retran_synacks.
    pub const RETRAN_SYNACKS: usize = 5;
    /// retran_syn.
    pub const RETRAN_SYN: usize = 6;
    /// req_drops.
    pub const REQ_DROPS: usize = 7;
    /// active_open.
    pub const ACTIVE_OPEN: usize = 8;
    /// active_open_failed.
    pub const ACTIVE_OPEN_FAILED: usize = 9;
    /// syn_sent.
    pub const SYN_SENT: usize = 10;
    /// syn_drop.
    pub const SYN_DROP: usize = 11;
    /// synack_sent.
    pub const SYNACK_SENT: usize = 12;
    /// active_open_refused.
    pub const REFUSED: usize = 13;
    /// active_open_timeout.
    pub const TIMEOUT: usize = 14;
    /// active_open_unreach.
    pub const UNREACH: usize = 15;
    /// listen_drop_backlog.
    pub const DROP_BACKLOG: usize = 16;
    /// listen_drop_other.
    pub const DROP_OTHER: usize = 17;
}

/// Indices of [`UdpRow::counters`] (the order of `tables::UDP_COUNTERS`).
pub mod u {
    /// udp_rcv_drops.
    pub const DROPS: usize = 0;
    /// bind_sends.
    pub const TX_BYTES: usize = 1;
    /// bind_rcvs.
    pub const RX_BYTES: usize = 2;
    /// sends.
    pub const TX_DGRAMS: usize = 3;
    /// rcvs.
    pub const RX_DGRAMS: usize = 4;
    /// send_errors.
    pub const TX_ERRORS: usize = 5;
    /// rcvbuf_errors.
    pub const RCVBUF_ERRORS: usize = 6;
    /// rcv_mem_errors.
    pub const RCV_MEM_ERRORS: usize = 7;
}

const ECONNREFUSED: u32 = 111;
const ETIMEDOUT: u32 = 110;
const EHOSTUNREACH: u32 = 113;
const ENETUNREACH: u32 = 101;
/// Connects not resolved after this long are forgotten (their close event was lost).
const PENDING_MAX_NS: u64 = 300 * 1_000_000_000;

/// Which side of the handshake a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A listening socket.
    Server,
    /// Connects.
    Client,
}

impl Role {
    /// The key value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// Key of an endpoint_tcp row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpKey {
    /// Owner pid (0 unknown).
    pub tgid: u32,
    /// Owner name (`unknown` when unknown).
    pub comm: String,
    /// Server or client.
    pub role: Role,
    /// Client: local address; server: the family's unspecified address.
    pub client_ip: IpAddr,
    /// Server: listen address; client: the address connected to.
    pub server_ip: IpAddr,
    /// Listen port, or port connected to.
    pub server_port: u16,
    /// Address family.
    pub family: u16,
}

/// An endpoint_tcp row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpRow {
    /// Running totals (indices in [`t`]).
    pub counters: [u64; N_TCP],
    /// Accept queue length at the last pass (listeners of the row, summed).
    pub accept_queue: Option<u64>,
    /// Accept queue limit at the last pass.
    pub accept_queue_max: Option<u64>,
    /// Establish latency, us (cumulative).
    pub estab: Histogram,
    idle: u64,
}

/// Key of an endpoint_udp row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UdpKey {
    /// Owner pid (0 unknown).
    pub tgid: u32,
    /// Local address.
    pub local_ip: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Peer address (unspecified when not connected).
    pub remote_ip: IpAddr,
    /// Peer port.
    pub remote_port: u16,
    /// Address family.
    pub family: u16,
}

/// An endpoint_udp row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpRow {
    /// Running totals (indices in [`u`]).
    pub counters: [u64; N_UDP],
    idle: u64,
}

struct ListenerSeen {
    last: [u64; N_TCP],
    hist: Histogram,
}

struct Pending {
    key: TcpKey,
    ts_ns: u64,
}

/// The probe's user-space state.
pub struct State {
    max: usize,
    retain: u64,
    tcp: HashMap<TcpKey, TcpRow>,
    udp: HashMap<UdpKey, UdpRow>,
    overflow: u64,
    listen_owners: HashMap<u64, Owner>,
    listeners: HashMap<u64, ListenerSeen>,
    /// Connects in SYN_SENT by socket address.
    pending: HashMap<u64, Pending>,
    udp_socks: HashMap<u64, ([u64; N_UDP], u64)>,
    ino_owners: HashMap<u64, Option<Owner>>,
    live_tcp: HashSet<TcpKey>,
    live_udp: HashSet<UdpKey>,
    last_ts: u64,
}

fn unknown() -> Owner {
    Owner {
        tgid: 0,
        comm: "unknown".to_string(),
    }
}

fn add_delta<const N: usize>(row: &mut [u64; N], last: &mut [u64; N], cur: &[u64; N]) -> bool {
    let mut changed = false;
    for i in 0..N {
        let d = cur[i].saturating_sub(last[i]);
        if d > 0 {
            row[i] = row[i].saturating_add(d);
            changed = true;
        }
        last[i] = cur[i];
    }
    changed
}

impl State {
    /// State keeping at most `max` rows per table (and as many pending connects); idle rows
    /// are kept `retain` periods.
    pub fn new(max: usize, retain: u64) -> State {
        State {
            max,
            retain,
            tcp: HashMap::new(),
            udp: HashMap::new(),
            overflow: 0,
            listen_owners: HashMap::new(),
            listeners: HashMap::new(),
            pending: HashMap::new(),
            udp_socks: HashMap::new(),
            ino_owners: HashMap::new(),
            live_tcp: HashSet::new(),
            live_udp: HashSet::new(),
            last_ts: 0,
        }
    }

    /// Sets how many periods idle rows are kept.
    pub fn set_retain(&mut self, retain: u64) {
        self.retain = retain;
    }

    /// Rows, pending connects or deltas dropped because of the cap.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    fn tcp_row(&mut self, key: &TcpKey) -> Option<&mut TcpRow> {
        if !self.tcp.contains_key(key) {
            if self.tcp.len() >= self.max {
                self.overflow += 1;
                return None;
            }
            self.tcp.insert(key.clone(), TcpRow::default());
        }
        self.tcp.get_mut(key)
    }

    fn udp_row(&mut self, key: &UdpKey) -> Option<&mut UdpRow> {
        if !self.udp.contains_key(key) {
            if self.udp.len() >= self.max {
                self.overflow += 1;
                return None;
            }
            self.udp.insert(key.clone(), UdpRow::default());
        }
        self.udp.get_mut(key)
    }

    fn bump(&mut self, sk: u64, idx: &[usize]) {
        let Some(key) = self.pending.get(&sk).map(|p| p.key.clone()) else {
            return;
        };
        if let Some(row) = self.tcp_row(&key) {
            for i in idx {
                row.counters[*i] += 1;
            }
            row.idle = 0;
        }
    }

    /// Applies one ring-buffer record.
    pub fn record(&mut self, r: Record) {
        match r {
            Record::Listen { id, tgid, comm } => {
                if self.listen_owners.len() < self.max.saturating_mul(2) {
                    self.listen_owners.insert(id.cookie, Owner { tgid, comm });
                }
            }
            Record::Connect {
                id,
                tgid,
                comm,
                ts_ns,
                sk,
            } => {
                self.last_ts = self.last_ts.max(ts_ns);
                let key = TcpKey {
                    tgid,
                    comm,
                    role: Role::Client,
                    client_ip: id.laddr,
                    server_ip: id.raddr,
                    server_port: id.rport,
                    family: id.family,
                };
                // A socket address reused after a lost record replaces the stale entry.
                if self.pending.len() >= self.max && !self.pending.contains_key(&sk) {
                    self.overflow += 1;
                } else {
                    self.pending.insert(sk, Pending { key, ts_ns });
                }
                self.bump(sk, &[t::ACTIVE_OPEN, t::SYN_SENT]);
            }
            Record::RetransSyn { sk } => self.bump(sk, &[t::RETRAN_SYN, t::SYN_SENT]),
            Record::SynDrop { sk } => self.bump(sk, &[t::SYN_DROP]),
            Record::Established { sk, ts_ns } => {
                if let Some(p) = self.pending.remove(&sk) {
                    if let Some(row) = self.tcp_row(&p.key) {
                        row.estab.observe(ts_ns.saturating_sub(p.ts_ns) / 1_000);
                        row.idle = 0;
                    }
                }
            }
            Record::ConnectFailed { sk, err } => {
                let reason = match err {
                    ECONNREFUSED => Some(t::REFUSED),
                    ETIMEDOUT => Some(t::TIMEOUT),
                    EHOSTUNREACH | ENETUNREACH => Some(t::UNREACH),
                    _ => None,
                };
                match reason {
                    Some(r) => self.bump(sk, &[t::ACTIVE_OPEN_FAILED, r]),
                    None => self.bump(sk, &[t::ACTIVE_OPEN_FAILED]),
                }
                self.pending.remove(&sk);
            }
            Record::Listener(l) => self.listener(&l, false),
        }
    }

    /// Socket inodes among `inos` whose owner is not known yet and not looked up before.
    pub fn unresolved<'a>(&self, inos: impl Iterator<Item = &'a u64>) -> HashSet<u64> {
        inos.filter(|i| **i != 0 && !self.ino_owners.contains_key(*i))
            .copied()
            .collect()
    }

    /// Remembers the owners found for `wanted` (None for the ones not found).
    pub fn resolved(&mut self, wanted: &HashSet<u64>, found: &HashMap<u64, Owner>) {
        // Bounded: forget everything when the cache grows past the cap.
        if self.ino_owners.len() > self.max.saturating_mul(4) {
            self.ino_owners.clear();
        }
        for ino in wanted {
            self.ino_owners.insert(*ino, found.get(ino).cloned());
        }
    }

    /// Whether listener `cookie` has an owner from its LISTEN event.
    pub fn listener_owner_known(&self, cookie: u64) -> bool {
        self.listen_owners.contains_key(&cookie)
    }

    fn owner_of(&self, cookie: u64, ino: u64) -> Owner {
        self.listen_owners
            .get(&cookie)
            .cloned()
            .or_else(|| self.ino_owners.get(&ino).cloned().flatten())
            .unwrap_or_else(unknown)
    }

    /// Applies a listener seen by the iterator (or its close). `baseline`: a listener older
    /// than the probe seen at start-up, whose totals so far are not reported as a change.
    pub fn listener(&mut self, l: &Listener, baseline: bool) {
        let owner = self.owner_of(l.id.cookie, l.ino);
        let key = TcpKey {
            tgid: owner.tgid,
            comm: owner.comm,
            role: Role::Server,
            client_ip: any_addr(l.id.family),
            server_ip: l.id.laddr,
            server_port: l.id.lport,
            family: l.id.family,
        };
        let c = &l.counters;
        let mut cur = [0u64; N_TCP];
        let d = derive_listen_drops(l.drops, c);
        cur[t::LISTENDROP] = d.listendrop;
        cur[t::ACCEPT_OVERFLOW] = d.accept_overflow;
        cur[t::SYN_OVERFLOW] = d.syn_overflow;
        cur[t::PASSIVE_OPEN] = c.passive_open;
        cur[t::PASSIVE_OPEN_FAILED] = c.passive_open_failed;
        cur[t::RETRAN_SYNACKS] = c.retran_synacks;
        cur[t::SYNACK_SENT] = d.synack_sent;
        cur[t::DROP_BACKLOG] = c.drop_backlog;
        cur[t::DROP_OTHER] = c.drop_other;
        cur[t::REQ_DROPS] = d
            .listendrop
            .saturating_sub(d.accept_overflow.saturating_add(d.syn_overflow));
        let seen = self.listeners.entry(l.id.cookie).or_insert(ListenerSeen {
            last: if baseline { cur } else { [0; N_TCP] },
            hist: if baseline {
                c.estab
            } else {
                Histogram::default()
            },
        });
        let mut dh = Histogram::default();
        for (d, (now, before)) in dh
            .counts
            .iter_mut()
            .zip(c.estab.counts.iter().zip(seen.hist.counts.iter()))
        {
            *d = now.saturating_sub(*before);
        }
        dh.sum = c.estab.sum.saturating_sub(seen.hist.sum);
        dh.max = if dh.count() > 0 { c.estab.max } else { 0 };
        seen.hist = c.estab;
        let mut delta = [0u64; N_TCP];
        let changed = add_delta(&mut delta, &mut seen.last, &cur);
        let closing = l.closing;
        let queue = l.queue;
        if let Some(row) = self.tcp_row(&key) {
            for (r, d) in row.counters.iter_mut().zip(delta.iter()) {
                *r = r.saturating_add(*d);
            }
            if dh.count() > 0 {
                row.estab.merge(&dh);
            }
            if changed {
                row.idle = 0;
            }
            if let (false, Some((ab, mab))) = (closing, queue) {
                row.accept_queue = Some(row.accept_queue.unwrap_or(0) + u64::from(ab));
                row.accept_queue_max = Some(row.accept_queue_max.unwrap_or(0) + u64::from(mab));
            }
        }
        if closing {
            self.listeners.remove(&l.id.cookie);
            self.listen_owners.remove(&l.id.cookie);
        } else {
            self.live_tcp.insert(key);
        }
    }

    /// Starts an iterator pass: the gauges are recomputed from it.
    pub fn begin_pass(&mut self) {
        for row in self.tcp.values_mut() {
            row.accept_queue = None;
            row.accept_queue_max = None;
        }
        self.live_tcp.clear();
        self.live_udp.clear();
    }

    /// Applies the UDP sockets of a pass: `live` from the iterator, `counters` from the
    /// `udp_socks` map. Returns the cookies of map entries whose socket is gone (to delete).
    pub fn udp_pass(
        &mut self,
        live: &[UdpLive],
        counters: &HashMap<u64, UdpCounters>,
        baseline: bool,
    ) -> Vec<u64> {
        let mut live_cookies = HashSet::new();
        for s in live {
            live_cookies.insert(s.id.cookie);
            self.udp_socket(s.id.cookie, Some(s), counters.get(&s.id.cookie), baseline);
        }
        let mut gone = Vec::new();
        for (cookie, c) in counters {
            if !live_cookies.contains(cookie) {
                self.udp_socket(*cookie, None, Some(c), false);
                self.udp_socks.remove(cookie);
                gone.push(*cookie);
            }
        }
        self.udp_socks
            .retain(|c, _| live_cookies.contains(c) || counters.contains_key(c));
        gone
    }

    fn udp_socket(
        &mut self,
        cookie: u64,
        live: Option<&UdpLive>,
        ctr: Option<&UdpCounters>,
        baseline: bool,
    ) {
        let Some(id) = live.map(|l| l.id).or_else(|| ctr.map(|c| c.id)) else {
            return;
        };
        let tgid = match ctr.filter(|c| c.tgid != 0) {
            Some(c) => c.tgid,
            None => live
                .and_then(|l| self.ino_owners.get(&l.ino).cloned().flatten())
                .map_or(0, |o| o.tgid),
        };
        let prev = self.udp_socks.get(&cookie).copied();
        let mut cur = [0u64; N_UDP];
        cur[u::DROPS] = live.map_or(prev.map_or(0, |p| p.0[u::DROPS]), |l| l.drops);
        if let Some(c) = ctr {
            cur[u::TX_BYTES] = c.tx_bytes;
            cur[u::RX_BYTES] = c.rx_bytes;
            cur[u::TX_DGRAMS] = c.tx_dgrams;
            cur[u::RX_DGRAMS] = c.rx_dgrams;
            cur[u::TX_ERRORS] = c.tx_errors;
            cur[u::RCVBUF_ERRORS] = c.rcvbuf_errors;
            cur[u::RCV_MEM_ERRORS] = c.rcv_mem_errors;
        }
        let mut last = match prev {
            Some(p) => p.0,
            None if baseline => cur,
            None => [0; N_UDP],
        };
        let key = UdpKey {
            tgid,
            local_ip: id.laddr,
            local_port: id.lport,
            remote_ip: id.raddr,
            remote_port: id.rport,
            family: id.family,
        };
        let mut delta = [0u64; N_UDP];
        let changed = add_delta(&mut delta, &mut last, &cur);
        self.udp_socks.insert(cookie, (last, 0));
        if let Some(row) = self.udp_row(&key) {
            for (r, d) in row.counters.iter_mut().zip(delta.iter()) {
                *r = r.saturating_add(*d);
            }
            if changed {
                row.idle = 0;
            }
        }
        if live.is_some() {
            self.live_udp.insert(key);
        }
    }

    /// Ends a period: rows that are neither live nor changed for `retain` periods go, and so
    /// do connects pending for too long.
    pub fn end_period(&mut self) {
        let retain = self.retain;
        for (k, row) in self.tcp.iter_mut() {
            if !self.live_tcp.contains(k) {
                row.idle += 1;
            }
        }
        self.tcp.retain(|_, r| r.idle <= retain);
        for (k, row) in self.udp.iter_mut() {
            if !self.live_udp.contains(k) {
                row.idle += 1;
            }
        }
        self.udp.retain(|_, r| r.idle <= retain);
        let now = self.last_ts;
        self.pending
            .retain(|_, p| now.saturating_sub(p.ts_ns) < PENDING_MAX_NS);
    }

    /// The endpoint_tcp rows.
    pub fn tcp_rows(&self) -> impl Iterator<Item = (&TcpKey, &TcpRow)> {
        self.tcp.iter()
    }

    /// The endpoint_udp rows.
    pub fn udp_rows(&self) -> impl Iterator<Item = (&UdpKey, &UdpRow)> {
        self.udp.iter()
    }
}

/// A listener's drop counters as reported, derived from its cumulative totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ListenDrops {
    listendrop: u64,
    accept_overflow: u64,
    syn_overflow: u64,
    synack_sent: u64,
}

/// Splits a listener's sk_drops change `drops` into the counters of endpoint_tcp.
///
/// Only the totals are exact when packets of one listener are handled on several CPUs at once
/// (a change of sk_drops one CPU sees may be another's packet), so the kernel side counts
/// events and this splits the totals: sk_drops less the discard path's own increments is
/// ListenDrops; less the handshake ACKs' share, the SYNs' — at most the SYNs the listener took
/// in (none without the consume hook). The SYNs not dropped were answered.
fn derive_listen_drops(drops: u64, c: &ListenCounters) -> ListenDrops {
    let listendrop = drops.saturating_sub(c.drops_not_listen);
    let syn_drops = listendrop.saturating_sub(c.ack_listen_drops).min(c.syns);
    ListenDrops {
        listendrop,
        accept_overflow: c.accept_overflow_syn.saturating_add(c.accept_overflow_ack),
        syn_overflow: syn_drops.saturating_sub(c.accept_overflow_syn),
        synack_sent: (c.syns - syn_drops).saturating_add(c.retran_synacks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::SockId;
    use std::net::Ipv4Addr;

    fn id(cookie: u64, lport: u16, rport: u16) -> SockId {
        SockId {
            cookie,
            family: 2,
            laddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            lport,
            raddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            rport,
        }
    }

    fn listener(cookie: u64, drops: u64, ao: u64, closing: bool) -> Listener {
        Listener {
            id: id(cookie, 80, 0),
            closing,
            counters: ListenCounters {
                syns: 100,
                accept_overflow_syn: ao,
                passive_open: 2,
                ..Default::default()
            },
            owns: true,
            drops,
            ino: 0,
            queue: Some((2, 1)),
        }
    }

    #[test]
    fn listener_totals_count_changes_only_and_go_to_the_owner() {
        let mut s = State::new(16, 2);
        s.record(Record::Listen {
            id: id(1, 80, 0),
            tgid: 5,
            comm: "srv".into(),
        });
        s.begin_pass();
        s.listener(&listener(1, 10, 8, false), false);
        s.listener(&listener(1, 15, 12, false), false);
        let rows: Vec<_> = s.tcp_rows().collect();
        assert_eq!(rows.len(), 1);
        let (k, r) = rows[0];
        assert_eq!((k.tgid, k.comm.as_str(), k.role), (5, "srv", Role::Server));
        assert_eq!(k.client_ip.to_string(), "0.0.0.0");
        assert_eq!(r.counters[t::LISTENDROP], 15);
        assert_eq!(r.counters[t::ACCEPT_OVERFLOW], 12);
        assert_eq!(r.counters[t::SYN_OVERFLOW], 3);
        assert_eq!(r.counters[t::REQ_DROPS], 0);
        assert_eq!(r.counters[t::PASSIVE_OPEN], 2);
        assert_eq!(r.accept_queue, Some(4), "two samples in one pass add up");
        // A baseline listener reports nothing it did before the probe.
        let mut s = State::new(16, 2);
        s.listener(&listener(2, 10, 8, false), true);
        assert_eq!(s.tcp_rows().next().unwrap().1.counters[t::LISTENDROP], 0);
        s.listener(&listener(2, 11, 9, true), false);
        assert_eq!(s.tcp_rows().next().unwrap().1.counters[t::LISTENDROP], 1);
    }

    #[test]
    fn listendrop_leaves_out_the_discard_paths_own_drops() {
        let mut s = State::new(16, 2);
        let mut l = listener(3, 0, 0, false);
        l.counters.syns = 0;
        s.listener(&l, true);
        // Two ACK-path overflows: sk_drops +4 (tcp_listendrop and sk_drops_add each).
        l.drops = 4;
        l.counters.ack_listen_drops = 2;
        l.counters.accept_overflow_ack = 2;
        l.counters.drops_not_listen = 2;
        s.listener(&l, false);
        let (_, r) = s.tcp_rows().next().unwrap();
        assert_eq!(r.counters[t::LISTENDROP], 2);
        assert_eq!(r.counters[t::ACCEPT_OVERFLOW], 2);
        assert_eq!(r.counters[t::SYN_OVERFLOW], 0);
        assert_eq!(r.counters[t::REQ_DROPS], 0);
    }

    #[test]
    fn syn_drops_are_split_from_the_totals() {
        let c = ListenCounters {
            syns: 10,
            accept_overflow_syn: 3,
            ack_listen_drops: 2,
            accept_overflow_ack: 1,
            drops_not_listen: 2,
            retran_synacks: 4,
            ..Default::default()
        };
        // sk_drops: 2 ACK listen drops + their 2 discards, 3 accept-queue and 2 SYN-queue
        // SYN drops.
        let d = derive_listen_drops(9, &c);
        assert_eq!(
            d,
            ListenDrops {
                listendrop: 7,
                accept_overflow: 4,
                syn_overflow: 2,
                synack_sent: 5 + 4,
            }
        );
        // Without the consume hook no SYN is seen: no SYN-path split, all req_drops.
        let none = ListenCounters {
            syns: 0,
            accept_overflow_syn: 0,
            ..c
        };
        let d = derive_listen_drops(9, &none);
        assert_eq!(
            (
                d.listendrop,
                d.accept_overflow,
                d.syn_overflow,
                d.synack_sent
            ),
            (7, 1, 0, 4)
        );
    }

    #[test]
    fn connect_outcomes() {
        let mut s = State::new(16, 2);
        for (sk, err) in [(1u64, 111u32), (2, 110), (3, 113), (4, 0)] {
            s.record(Record::Connect {
                id: id(0, 0, 80),
                tgid: 9,
                comm: "cli".into(),
                ts_ns: 0,
                sk,
            });
            s.record(Record::RetransSyn { sk });
            s.record(Record::SynDrop { sk });
            s.record(Record::ConnectFailed { sk, err });
        }
        // Records of a socket that is not (or no longer) connecting count nowhere.
        s.record(Record::RetransSyn { sk: 1 });
        s.record(Record::Established { sk: 2, ts_ns: 9 });
        s.record(Record::Connect {
            id: id(5, 0, 80),
            tgid: 9,
            comm: "cli".into(),
            ts_ns: 1_000_000,
            sk: 5,
        });
        s.record(Record::Established {
            sk: 5,
            ts_ns: 1_500_000,
        });
        let (_, r) = s.tcp_rows().next().unwrap();
        assert_eq!(r.counters[t::ACTIVE_OPEN], 5);
        assert_eq!(r.counters[t::ACTIVE_OPEN_FAILED], 4);
        assert_eq!(r.counters[t::RETRAN_SYN], 4);
        assert_eq!(r.counters[t::SYN_SENT], 9);
        assert_eq!(r.counters[t::SYN_DROP], 4);
        assert_eq!(
            (
                r.counters[t::REFUSED],
                r.counters[t::TIMEOUT],
                r.counters[t::UNREACH]
            ),
            (1, 1, 1)
        );
        assert_eq!((r.estab.count(), r.estab.max), (1, 500));
    }

    #[test]
    fn cap_counts_overflow() {
        let mut s = State::new(1, 2);
        for cookie in 1..=3u64 {
            s.record(Record::Connect {
                id: id(cookie, 0, 80 + cookie as u16),
                tgid: 9,
                comm: "cli".into(),
                ts_ns: 0,
                sk: cookie,
            });
        }
        assert_eq!(s.tcp_rows().count(), 1);
        assert!(s.overflow() >= 2);
    }

    #[test]
    fn udp_closed_sockets_keep_their_totals() {
        let mut s = State::new(16, 1);
        let live = UdpLive {
            id: id(7, 53, 0),
            drops: 3,
            ino: 0,
        };
        let mut ctr = HashMap::new();
        ctr.insert(
            7,
            UdpCounters {
                id: id(7, 53, 0),
                tx_bytes: 100,
                rx_bytes: 0,
                tx_dgrams: 1,
                rx_dgrams: 0,
                tx_errors: 0,
                rcvbuf_errors: 3,
                rcv_mem_errors: 0,
                tgid: 4,
                comm: "dns".into(),
            },
        );
        assert!(s.udp_pass(&[live], &ctr, false).is_empty());
        ctr.get_mut(&7).unwrap().tx_bytes = 150;
        s.begin_pass();
        assert_eq!(s.udp_pass(&[], &ctr, false), vec![7]);
        let (k, r) = s.udp_rows().next().unwrap();
        assert_eq!(k.tgid, 4);
        assert_eq!(r.counters[u::TX_BYTES], 150);
        assert_eq!(r.counters[u::DROPS], 3);
        s.end_period();
        s.end_period();
        assert_eq!(s.udp_rows().count(), 0, "idle rows expire");
    }
}
