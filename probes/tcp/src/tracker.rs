//! Per-socket state, kept in user space: joins the kernel's records by socket cookie and turns
//! them into per-key deltas for the current period.
//!
//! Every counter delta is `now - last reported` for one socket, whichever path reports it (a
//! live record from the iterator or the final counters at CLOSE), so each byte is counted once
//! however the two interleave: a socket leaves the iterator's view exactly when its CLOSE record
//! is produced (the kernel unhashes it first).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::conn_key::{Comm, ConnKey, Role};
use crate::conn_table::{
    PeriodDelta, CLOSE_ABORT, CLOSE_ACTIVE, CLOSE_FAILED, CLOSE_PASSIVE, C_BACKLOG_DROPS, C_BUSY_J,
    C_FILTER_DROPS, C_RETRANS, C_RMEM_SCHED, C_RST_RECV, C_RST_SENT, C_RWND_LIMITED_J, C_RX_BYTES,
    C_SEGS_IN, C_SEGS_OUT, C_SK_DROPS, C_SNDBUF_LIMIT, C_SNDBUF_LIMITED_J, C_TCP_OOM, C_TMOUT,
    C_TX_BYTES, C_ZERO_RCV_WND, C_ZERO_SND_WND,
};
use crate::decode::{drop_reason, state, Counters, Extra, Record, SockId, Windows};

/// `ETIMEDOUT`: the error a connection timeout reports.
const ETIMEDOUT: u32 = 110;
use probe_sdk::sockets::Owner;

/// A socket the tracker knows.
#[derive(Debug, Clone)]
struct Sock {
    role: Role,
    owner: Option<Owner>,
    laddr: IpAddr,
    lport: u16,
    raddr: IpAddr,
    rport: u16,
    connect_ts_ns: Option<u64>,
    established: bool,
    /// Counters as of the last report.
    last: Counters,
    /// Last iterator pass that listed the socket.
    last_pass: Option<u64>,
    zero_rcv_episode: Option<u32>,
}

impl Sock {
    fn new(id: &SockId, role: Role, owner: Option<Owner>) -> Sock {
        Sock {
            role,
            owner,
            laddr: id.laddr,
            lport: id.lport,
            raddr: id.raddr,
            rport: id.rport,
            connect_ts_ns: None,
            established: false,
            last: Counters::default(),
            last_pass: None,
            zero_rcv_episode: None,
        }
    }

    /// Endpoints only become complete after connect() has bound a port (SYN_SENT comes
    /// first), so every record refreshes them; zeros never overwrite what is known.
    fn update_endpoints(&mut self, id: &SockId) {
        if !id.laddr.is_unspecified() || self.laddr.is_unspecified() {
            self.laddr = id.laddr;
        }
        if id.lport != 0 {
            self.lport = id.lport;
        }
        if !id.raddr.is_unspecified() || self.raddr.is_unspecified() {
            self.raddr = id.raddr;
        }
        if id.rport != 0 {
            self.rport = id.rport;
        }
    }

    fn key(&self, report_cport: bool) -> ConnKey {
        let (client_ip, client_port, server_ip, server_port) = match self.role {
            Role::Client => (self.laddr, self.lport, self.raddr, self.rport),
            Role::Server => (self.raddr, self.rport, self.laddr, self.lport),
        };
        ConnKey {
            tgid: self.owner.as_ref().map_or(0, |o| o.tgid),
            comm: self
                .owner
                .as_ref()
                .map_or_else(Comm::unknown, |o| Comm::new(&o.comm)),
            role: self.role,
            client_ip,
            server_ip,
            client_port: if report_cport { client_port } else { 0 },
            server_port,
        }
    }
}

/// A listening socket: accepted connections belong to its owner.
#[derive(Debug, Clone)]
struct Listener {
    addr: IpAddr,
    port: u16,
    owner: Option<Owner>,
    last_pass: Option<u64>,
}

/// Where records of a socket that already closed go (e.g. the reset tcp_disconnect() sends
/// right after CLOSE), kept in two generations of at most `cap` entries each.
#[derive(Debug, Default)]
struct RecentlyClosed {
    now: HashMap<u64, ConnKey>,
    prev: HashMap<u64, ConnKey>,
}

impl RecentlyClosed {
    fn insert(&mut self, cookie: u64, key: ConnKey, cap: usize) {
        if self.now.len() >= cap {
            self.prev = std::mem::take(&mut self.now);
        }
        self.now.insert(cookie, key);
    }

    fn get(&self, cookie: u64) -> Option<&ConnKey> {
        self.now.get(&cookie).or_else(|| self.prev.get(&cookie))
    }

    /// The socket starts a new life (connect() again after a disconnect).
    fn forget(&mut self, cookie: u64) {
        self.now.remove(&cookie);
        self.prev.remove(&cookie);
    }

    fn rotate(&mut self) {
        self.prev = std::mem::take(&mut self.now);
    }
}

/// Joins kernel records into per-key deltas.
#[derive(Debug)]
pub struct Tracker {
    /// Live sockets (at most `cap`).
    socks: HashMap<u64, Sock>,
    closed: RecentlyClosed,
    listeners: HashMap<u64, Listener>,
    deltas: HashMap<ConnKey, PeriodDelta>,
    /// Live sockets without any record yet, seen in the previous pass / this pass.
    unknown_prev: HashSet<u64>,
    unknown_now: HashSet<u64>,
    pass: u64,
    report_cport: bool,
    cap: usize,
    overflow: u64,
}

fn counter_delta(now: u64, last: u64) -> u64 {
    // Below the last report means the socket was reset and reused (tcp_disconnect).
    if now >= last {
        now - last
    } else {
        now
    }
}

fn add_counters(d: &mut PeriodDelta, now: &Counters, last: &Counters) {
    for (idx, n, l) in [
        (C_RX_BYTES, now.rx_bytes, last.rx_bytes),
        (C_TX_BYTES, now.tx_bytes, last.tx_bytes),
        (C_SEGS_IN, now.segs_in, last.segs_in),
        (C_SEGS_OUT, now.segs_out, last.segs_out),
        (C_RETRANS, now.retrans, last.retrans),
        (C_SK_DROPS, now.sk_drops, last.sk_drops),
        (C_BUSY_J, now.chrono[0], last.chrono[0]),
        (C_RWND_LIMITED_J, now.chrono[1], last.chrono[1]),
        (C_SNDBUF_LIMITED_J, now.chrono[2], last.chrono[2]),
    ] {
        d.counters[idx] = d.counters[idx].saturating_add(counter_delta(n, l));
    }
}

fn add_rtt(d: &mut PeriodDelta, c: &Counters) {
    if c.srtt_us > 0 {
        d.rtt_samples += 1;
        d.srtt_sum_us += u64::from(c.srtt_us);
        d.srtt_max_us = d.srtt_max_us.max(u64::from(c.srtt_us));
        d.rcv_rtt_sum_us += u64::from(c.rcv_rtt_us);
    }
}

fn add_windows(d: &mut PeriodDelta, w: &Windows) {
    d.live += 1;
    d.snd_cwnd_sum += u64::from(w.snd_cwnd);
    d.snd_wnd_sum += u64::from(w.snd_wnd);
    d.rcv_wnd_sum += u64::from(w.rcv_wnd);
    d.notsent_sum += u64::from(w.notsent_bytes);
    d.notack_sum += u64::from(w.notack_bytes);
    d.reordering_sum += u64::from(w.reordering);
}

fn add_extra(d: &mut PeriodDelta, x: &Extra) {
    for (sum, v) in d.gauge_sums.iter_mut().zip(x.gauges.iter()) {
        *sum = sum.saturating_add(u128::from(*v));
    }
    d.sk_err_soft_max = d.sk_err_soft_max.max(u64::from(x.sk_err_soft));
}

fn close_kind(from: u8, established: bool) -> usize {
    if !established {
        return CLOSE_FAILED;
    }
    match from {
        state::FIN_WAIT1 | state::FIN_WAIT2 | state::CLOSING => CLOSE_ACTIVE,
        state::LAST_ACK => CLOSE_PASSIVE,
        _ => CLOSE_ABORT,
    }
}

fn is_handshake(state_: u8) -> bool {
    state_ == state::SYN_SENT || state_ == state::SYN_RECV
}

impl Tracker {
    /// A tracker for at most `cap` sockets (more are counted in [`overflow`](Self::overflow));
    /// `report_cport` keeps client ports in keys (`-c 1`).
    pub fn new(cap: usize, report_cport: bool) -> Tracker {
        Tracker {
            socks: HashMap::new(),
            closed: RecentlyClosed::default(),
            listeners: HashMap::new(),
            deltas: HashMap::new(),
            unknown_prev: HashSet::new(),
            unknown_now: HashSet::new(),
            pass: 0,
            report_cport,
            cap: cap.max(1),
            overflow: 0,
        }
    }

    /// Keeps client ports in keys from now on (or not); keys already reported keep theirs until
    /// they expire, so series start anew at the change.
    pub fn set_report_cport(&mut self, on: bool) {
        self.report_cport = on;
    }

    /// Records dropped because `cap` sockets were tracked already.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Sockets currently tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.socks.len()
    }

    /// This period's delta of `key`; None (counted as overflow) when `cap` keys changed
    /// already in this period.
    fn delta_for(&mut self, key: ConnKey) -> Option<&mut PeriodDelta> {
        if self.deltas.len() >= self.cap && !self.deltas.contains_key(&key) {
            self.overflow += 1;
            return None;
        }
        Some(self.deltas.entry(key).or_default())
    }

    fn add_listener(
        &mut self,
        cookie: u64,
        id: &SockId,
        owner: Option<Owner>,
    ) -> Option<&mut Listener> {
        if self.listeners.len() >= self.cap && !self.listeners.contains_key(&cookie) {
            self.overflow += 1;
            return None;
        }
        Some(self.listeners.entry(cookie).or_insert(Listener {
            addr: id.laddr,
            port: id.lport,
            owner,
            last_pass: None,
        }))
    }

    /// The owner of a connection accepted on local `addr:port`: the listener bound to that
    /// exact address, else the wildcard one.
    fn listener_owner(&self, addr: IpAddr, port: u16) -> Option<Owner> {
        let same_family = |a: &IpAddr| a.is_ipv4() == addr.is_ipv4();
        let mut wildcard = None;
        for l in self.listeners.values() {
            if l.port != port || !same_family(&l.addr) {
                continue;
            }
            if l.addr == addr {
                return l.owner.clone();
            }
            if l.addr.is_unspecified() {
                wildcard = Some(l.owner.clone());
            }
        }
        wildcard.flatten()
    }

    fn is_listening(&self, addr: IpAddr, port: u16) -> bool {
        self.listeners.values().any(|l| {
            l.port == port
                && l.addr.is_ipv4() == addr.is_ipv4()
                && (l.addr == addr || l.addr.is_unspecified())
        })
    }

    /// A socket seen without its connect/accept records (older than the probe, in another
    /// network namespace, or its records were lost): role from the listeners.
    fn stranger(&self, id: &SockId, owner: Option<Owner>) -> Sock {
        let role = if self.is_listening(id.laddr, id.lport) {
            Role::Server
        } else {
            Role::Client
        };
        let mut s = Sock::new(id, role, owner);
        s.established = !is_handshake(id.state);
        s
    }

    /// Starts tracking a stranger that is still open.
    fn adopt(&mut self, id: &SockId, owner: Option<Owner>) -> bool {
        if self.socks.len() >= self.cap {
            self.overflow += 1;
            return false;
        }
        let s = self.stranger(id, owner);
        self.socks.insert(id.cookie, s);
        true
    }

    /// Handles one ring-buffer record.
    pub fn record(&mut self, rec: Record) {
        match rec {
            Record::Connect { id, ts_ns, owner } => {
                if !self.socks.contains_key(&id.cookie) && self.socks.len() >= self.cap {
                    self.overflow += 1;
                    return;
                }
                let mut s = Sock::new(&id, Role::Client, Some(owner));
                s.connect_ts_ns = Some(ts_ns);
                self.socks.insert(id.cookie, s);
                self.closed.forget(id.cookie);
            }
            Record::Listen { id, owner } => {
                if let Some(l) = self.add_listener(id.cookie, &id, None) {
                    l.owner = Some(owner);
                }
            }
            Record::Established { id, ts_ns, srtt_us } => self.established(&id, ts_ns, srtt_us),
            Record::Close { id, counters } => self.close(&id, &counters),
            Record::RstSent { id } => self.count(&id, C_RST_SENT),
            Record::RstRecv { id } => self.count(&id, C_RST_RECV),
            Record::ZeroSndWnd { id } => self.count(&id, C_ZERO_SND_WND),
            Record::ZeroRcvWnd { id, episode } => {
                let seen = self
                    .socks
                    .get(&id.cookie)
                    .is_some_and(|s| s.zero_rcv_episode == Some(episode));
                if !seen {
                    self.count(&id, C_ZERO_RCV_WND);
                    if let Some(s) = self.socks.get_mut(&id.cookie) {
                        s.zero_rcv_episode = Some(episode);
                    }
                }
            }
            Record::Drop { id, reason } => {
                let idx = match reason {
                    drop_reason::BACKLOG => C_BACKLOG_DROPS,
                    drop_reason::FILTER => C_FILTER_DROPS,
                    drop_reason::RMEM => C_RMEM_SCHED,
                    _ => return,
                };
                self.count(&id, idx);
            }
            Record::ExceedBuf { id, .. } => self.count(&id, C_TCP_OOM),
            Record::SndBufFull { id } => self.count(&id, C_SNDBUF_LIMIT),
            Record::SkErr { id, err } => {
                if let Some(d) = self.delta_of(&id) {
                    d.sk_err_max = d.sk_err_max.max(Some(u64::from(err)));
                    if err == ETIMEDOUT {
                        d.counters[C_TMOUT] = d.counters[C_TMOUT].saturating_add(1);
                    }
                }
            }
            // Live records come through `live`, which knows about the pass.
            Record::Live { .. } => {}
        }
    }

    fn established(&mut self, id: &SockId, ts_ns: u64, srtt_us: u32) {
        let accepted = id.state == state::SYN_RECV
            && self
                .socks
                .get(&id.cookie)
                .is_none_or(|s| s.role == Role::Server);
        if accepted {
            // A new child socket: it belongs to its listener's owner.
            if self.socks.len() >= self.cap && !self.socks.contains_key(&id.cookie) {
                self.overflow += 1;
                return;
            }
            let owner = self.listener_owner(id.laddr, id.lport);
            self.socks
                .insert(id.cookie, Sock::new(id, Role::Server, owner));
        } else if !self.socks.contains_key(&id.cookie) && !self.adopt(id, None) {
            return;
        }
        let report_cport = self.report_cport;
        let Some(s) = self.socks.get_mut(&id.cookie) else {
            return;
        };
        s.update_endpoints(id);
        s.established = true;
        let latency_us = match s.role {
            Role::Server => u64::from(srtt_us),
            Role::Client => s
                .connect_ts_ns
                .map_or(0, |t0| ts_ns.saturating_sub(t0) / 1_000),
        };
        let key = s.key(report_cport);
        let Some(d) = self.delta_for(key) else {
            return;
        };
        d.opens += 1;
        if latency_us > 0 {
            d.estab.observe(latency_us);
        }
    }

    fn close(&mut self, id: &SockId, counters: &Counters) {
        if id.state == state::LISTEN {
            self.listeners.remove(&id.cookie);
            return;
        }
        if self.closed.get(id.cookie).is_some() {
            return;
        }
        // A stranger's counters are all new to us: nothing of it was reported before.
        let mut s = match self.socks.remove(&id.cookie) {
            Some(s) => s,
            None => self.stranger(id, None),
        };
        s.update_endpoints(id);
        let kind = close_kind(id.state, s.established);
        let key = s.key(self.report_cport);
        let Some(d) = self.delta_for(key) else {
            return;
        };
        add_counters(d, counters, &s.last);
        add_rtt(d, counters);
        d.closes[kind] += 1;
        self.closed.insert(id.cookie, key, self.cap);
    }

    fn count(&mut self, id: &SockId, idx: usize) {
        if let Some(d) = self.delta_of(id) {
            d.counters[idx] = d.counters[idx].saturating_add(1);
        }
    }

    /// This period's delta of the key of a socket a mark record names; None for a listener
    /// (not a connection: e.g. a drop on a listening socket).
    fn delta_of(&mut self, id: &SockId) -> Option<&mut PeriodDelta> {
        let key = if let Some(key) = self.closed.get(id.cookie) {
            *key
        } else if let Some(s) = self.socks.get_mut(&id.cookie) {
            s.update_endpoints(id);
            s.key(self.report_cport)
        } else if id.state == state::LISTEN {
            return None;
        } else {
            // Not tracked: counted for its key all the same; its CLOSE record will follow.
            self.stranger(id, None).key(self.report_cport)
        };
        self.delta_for(key)
    }

    /// Starts an iterator pass.
    pub fn begin_pass(&mut self) {
        self.pass += 1;
    }

    /// Handles one iterator record. `owners` (socket inode -> owner, from /proc) is given for
    /// the first pass, whose unknown sockets are older than the probe; in later passes a
    /// socket without records is most likely so new that its records are still queued, so it
    /// is only adopted if it is still unknown one pass later.
    pub fn live(
        &mut self,
        id: &SockId,
        counters: &Counters,
        windows: &Windows,
        extra: &Extra,
        ino: u64,
        owners: Option<&HashMap<u64, Owner>>,
    ) {
        let pass = self.pass;
        if id.state == state::LISTEN {
            let owner = owners.and_then(|o| o.get(&ino)).cloned();
            let known = self.listeners.contains_key(&id.cookie);
            if known || owners.is_some() || self.unknown_prev.contains(&id.cookie) {
                if let Some(l) = self.add_listener(id.cookie, id, owner) {
                    l.last_pass = Some(pass);
                }
            } else {
                self.unknown_now.insert(id.cookie);
            }
            return;
        }
        if !self.socks.contains_key(&id.cookie) {
            let adopt_now = owners.is_some() || self.unknown_prev.contains(&id.cookie);
            if !adopt_now {
                self.unknown_now.insert(id.cookie);
                return;
            }
            let owner = owners.and_then(|o| o.get(&ino)).cloned();
            if !self.adopt(id, owner) {
                return;
            }
        }
        let report_cport = self.report_cport;
        let Some(s) = self.socks.get_mut(&id.cookie) else {
            return;
        };
        s.update_endpoints(id);
        s.last_pass = Some(pass);
        let last = s.last;
        s.last = *counters;
        let key = s.key(report_cport);
        let Some(d) = self.delta_for(key) else {
            return;
        };
        add_counters(d, counters, &last);
        add_rtt(d, counters);
        add_windows(d, windows);
        add_extra(d, extra);
    }

    /// Ends an iterator pass: forgets sockets and listeners the iterator listed before but
    /// not in the last two passes (their CLOSE record was lost).
    pub fn end_pass(&mut self) {
        let pass = self.pass;
        let stale = |p: Option<u64>| p.is_some_and(|p| p + 2 <= pass);
        self.socks.retain(|_, s| !stale(s.last_pass));
        self.listeners.retain(|_, l| !stale(l.last_pass));
        self.unknown_prev = std::mem::take(&mut self.unknown_now);
    }

    /// Ends the period: returns its per-key deltas; sockets closed before this period are
    /// forgotten.
    pub fn take_period(&mut self) -> Vec<(ConnKey, PeriodDelta)> {
        self.closed.rotate();
        self.deltas.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    fn id(cookie: u64, lport: u16, rport: u16, st: u8) -> SockId {
        SockId {
            cookie,
            laddr: LO,
            lport,
            raddr: LO,
            rport,
            state: st,
        }
    }

    fn owner(tgid: u32, comm: &str) -> Owner {
        Owner {
            tgid,
            comm: comm.into(),
        }
    }

    fn counters(rx: u64, tx: u64) -> Counters {
        Counters {
            rx_bytes: rx,
            tx_bytes: tx,
            segs_in: 1,
            segs_out: 1,
            srtt_us: 20,
            ..Default::default()
        }
    }

    fn by_role(deltas: &[(ConnKey, PeriodDelta)], role: Role) -> &PeriodDelta {
        &deltas
            .iter()
            .find(|(k, _)| k.role == role)
            .unwrap_or_else(|| panic!("no {role} delta in {deltas:?}"))
            .1
    }

    /// Client 10 connects to server port 80 owned by listener process 20.
    fn handshake(t: &mut Tracker) {
        t.record(Record::Listen {
            id: SockId {
                laddr: ANY,
                raddr: ANY,
                ..id(1, 80, 0, 7)
            },
            owner: owner(20, "server"),
        });
        t.record(Record::Connect {
            id: id(2, 0, 80, state::CLOSE),
            ts_ns: 1_000_000,
            owner: owner(10, "client"),
        });
        t.record(Record::Established {
            id: id(2, 5000, 80, state::SYN_SENT),
            ts_ns: 1_250_000,
            srtt_us: 30,
        });
        t.record(Record::Established {
            id: id(3, 80, 5000, state::SYN_RECV),
            ts_ns: 1_260_000,
            srtt_us: 40,
        });
    }

    #[test]
    fn connection_lifecycle_by_events_only() {
        let mut t = Tracker::new(100, false);
        handshake(&mut t);
        t.record(Record::Close {
            id: id(2, 5000, 80, state::FIN_WAIT2),
            counters: counters(30, 100),
        });
        t.record(Record::Close {
            id: id(3, 80, 5000, state::LAST_ACK),
            counters: counters(100, 30),
        });
        let deltas = t.take_period();
        assert_eq!(deltas.len(), 2);
        let c = by_role(&deltas, Role::Client);
        let key = deltas
            .iter()
            .find(|(k, _)| k.role == Role::Client)
            .unwrap()
            .0;
        assert_eq!((key.tgid, key.client_port, key.server_port), (10, 0, 80));
        assert_eq!(key.comm.as_str(), "client");
        assert_eq!((c.counters[C_RX_BYTES], c.counters[C_TX_BYTES]), (30, 100));
        assert_eq!((c.opens, c.closes[CLOSE_ACTIVE]), (1, 1));
        assert_eq!(
            (c.estab.count(), c.estab.sum),
            (1, 250),
            "250 us from SYN_SENT"
        );
        let s = by_role(&deltas, Role::Server);
        let skey = deltas
            .iter()
            .find(|(k, _)| k.role == Role::Server)
            .unwrap()
            .0;
        assert_eq!(
            (skey.tgid, skey.server_port),
            (20, 80),
            "owner from the listener"
        );
        assert_eq!(skey.comm.as_str(), "server");
        assert_eq!(s.closes[CLOSE_PASSIVE], 1);
        assert_eq!(s.estab.sum, 40, "server latency is the SYN-ACK rtt");
        // Closed sockets leave the live table at once.
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn live_and_close_count_each_byte_once() {
        let mut t = Tracker::new(100, true);
        handshake(&mut t);
        let w = Windows {
            snd_cwnd: 10,
            ..Default::default()
        };
        t.begin_pass();
        t.live(
            &id(2, 5000, 80, state::ESTABLISHED),
            &counters(5, 50),
            &w,
            &Extra::default(),
            0,
            None,
        );
        t.end_pass();
        let d1 = t.take_period();
        let c1 = by_role(&d1, Role::Client);
        assert_eq!(c1.counters[C_TX_BYTES], 50);
        assert_eq!((c1.live, c1.snd_cwnd_sum), (1, 10));
        let k = d1.iter().find(|(k, _)| k.role == Role::Client).unwrap().0;
        assert_eq!(k.client_port, 5000, "-c 1 keeps the client port");

        t.record(Record::Close {
            id: id(2, 5000, 80, state::FIN_WAIT1),
            counters: counters(7, 80),
        });
        // A late live record cannot exist (the socket is unhashed), but a duplicate close
        // must not count twice.
        t.record(Record::Close {
            id: id(2, 5000, 80, state::FIN_WAIT1),
            counters: counters(7, 80),
        });
        let d2 = t.take_period();
        let c2 = by_role(&d2, Role::Client);
        assert_eq!((c2.counters[C_RX_BYTES], c2.counters[C_TX_BYTES]), (2, 30));
        assert_eq!(c2.closes[CLOSE_ACTIVE], 1);
        assert_eq!(c2.live, 0);
    }

    #[test]
    fn sockets_older_than_the_probe_are_adopted_on_the_first_pass() {
        let mut t = Tracker::new(100, false);
        let owners = HashMap::from([(11, owner(20, "srv")), (12, owner(10, "cli"))]);
        let w = Windows::default();
        t.begin_pass();
        // Listener first (the iterator walks the listening hash first), then both ends.
        let lid = SockId {
            laddr: ANY,
            raddr: ANY,
            ..id(1, 80, 0, state::LISTEN)
        };
        t.live(
            &lid,
            &Counters::default(),
            &w,
            &Extra::default(),
            11,
            Some(&owners),
        );
        t.live(
            &id(3, 80, 5000, state::ESTABLISHED),
            &counters(9, 8),
            &w,
            &Extra::default(),
            11,
            Some(&owners),
        );
        t.live(
            &id(2, 5000, 80, state::ESTABLISHED),
            &counters(8, 9),
            &w,
            &Extra::default(),
            12,
            Some(&owners),
        );
        t.end_pass();
        let d = t.take_period();
        let s = d.iter().find(|(k, _)| k.role == Role::Server).unwrap();
        assert_eq!((s.0.tgid, s.1.counters[C_RX_BYTES]), (20, 9));
        let c = d.iter().find(|(k, _)| k.role == Role::Client).unwrap();
        assert_eq!(
            (c.0.tgid, c.0.server_port, c.1.counters[C_TX_BYTES]),
            (10, 80, 9)
        );
        assert_eq!(
            c.1.opens, 0,
            "established before the probe: no open counted"
        );
    }

    #[test]
    fn unknown_live_sockets_wait_one_pass_for_their_records() {
        let mut t = Tracker::new(100, false);
        let w = Windows::default();
        t.begin_pass();
        t.live(
            &id(9, 6000, 443, state::ESTABLISHED),
            &counters(1, 1),
            &w,
            &Extra::default(),
            0,
            None,
        );
        t.end_pass();
        assert!(t.take_period().is_empty(), "not adopted yet");
        // Its connect record arrives: known from now on, with its owner.
        t.record(Record::Connect {
            id: id(9, 6000, 443, state::CLOSE),
            ts_ns: 0,
            owner: owner(5, "app"),
        });
        t.begin_pass();
        t.live(
            &id(9, 6000, 443, state::ESTABLISHED),
            &counters(3, 1),
            &w,
            &Extra::default(),
            0,
            None,
        );
        t.end_pass();
        let d = t.take_period();
        assert_eq!(d[0].0.tgid, 5);
        assert_eq!(
            d[0].1.counters[C_RX_BYTES], 3,
            "full counters on the first report"
        );
        // A socket whose records were lost is adopted on its second unknown pass.
        t.begin_pass();
        t.live(
            &id(8, 6001, 443, state::ESTABLISHED),
            &counters(4, 4),
            &w,
            &Extra::default(),
            0,
            None,
        );
        t.end_pass();
        t.begin_pass();
        t.live(
            &id(8, 6001, 443, state::ESTABLISHED),
            &counters(4, 4),
            &w,
            &Extra::default(),
            0,
            None,
        );
        t.end_pass();
        let d = t.take_period();
        let adopted = d.iter().find(|(k, _)| k.tgid == 0).unwrap();
        assert_eq!(adopted.1.counters[C_RX_BYTES], 4);
        assert_eq!(adopted.0.comm.as_str(), "unknown", "a key is never empty");
    }

    #[test]
    fn sockets_missing_from_two_passes_are_forgotten() {
        let mut t = Tracker::new(100, false);
        handshake(&mut t);
        let w = Windows::default();
        t.begin_pass();
        t.live(
            &id(2, 5000, 80, state::ESTABLISHED),
            &counters(1, 1),
            &w,
            &Extra::default(),
            0,
            None,
        );
        t.end_pass();
        assert_eq!(t.len(), 2);
        for _ in 0..2 {
            t.begin_pass();
            t.end_pass();
        }
        // The client (listed once, then gone without CLOSE) is dropped; the server socket,
        // never listed (another network namespace), is kept until it closes.
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn resets_failures_and_zero_windows() {
        let mut t = Tracker::new(100, false);
        t.record(Record::Connect {
            id: id(4, 0, 9, 7),
            ts_ns: 0,
            owner: owner(10, "c"),
        });
        t.record(Record::RstRecv {
            id: id(4, 7000, 9, state::SYN_SENT),
        });
        for episode in [1, 1, 2] {
            t.record(Record::ZeroRcvWnd {
                id: id(4, 7000, 9, state::SYN_SENT),
                episode,
            });
        }
        t.record(Record::Close {
            id: id(4, 7000, 9, state::SYN_SENT),
            counters: Counters::default(),
        });
        // A reset sent after the final report (tcp_disconnect) still counts for the key.
        t.record(Record::RstSent {
            id: id(4, 7000, 9, state::CLOSE),
        });
        let d = t.take_period();
        assert_eq!(d.len(), 1);
        let c = &d[0].1;
        assert_eq!((c.counters[C_RST_RECV], c.counters[C_RST_SENT]), (1, 1));
        assert_eq!(c.closes[CLOSE_FAILED], 1);
        assert_eq!((c.opens, c.estab.count()), (0, 0));
        assert_eq!(c.counters[C_ZERO_RCV_WND], 2, "episodes 1 and 2");
    }

    #[test]
    fn drops_errors_and_buffer_limits_count_for_the_key() {
        let mut t = Tracker::new(100, false);
        handshake(&mut t);
        let cid = id(2, 5000, 80, state::ESTABLISHED);
        for reason in [
            drop_reason::BACKLOG,
            drop_reason::FILTER,
            drop_reason::RMEM,
            drop_reason::RMEM,
            99,
        ] {
            t.record(Record::Drop { id: cid, reason });
        }
        t.record(Record::ExceedBuf { id: cid, kind: 1 });
        t.record(Record::SndBufFull { id: cid });
        t.record(Record::SkErr { id: cid, err: 104 });
        t.record(Record::SkErr {
            id: cid,
            err: ETIMEDOUT,
        });
        let mut c = counters(1, 1);
        c.sk_drops = 7;
        c.chrono = [10, 2, 3];
        let x = Extra {
            sk_err_soft: 113,
            ..Default::default()
        };
        t.begin_pass();
        t.live(&cid, &c, &Windows::default(), &x, 0, None);
        t.end_pass();
        let d = t.take_period();
        let cd = by_role(&d, Role::Client);
        assert_eq!(
            [
                cd.counters[C_BACKLOG_DROPS],
                cd.counters[C_FILTER_DROPS],
                cd.counters[C_RMEM_SCHED],
                cd.counters[C_TCP_OOM],
                cd.counters[C_SNDBUF_LIMIT],
                cd.counters[C_TMOUT],
                cd.counters[C_SK_DROPS],
                cd.counters[C_BUSY_J],
                cd.counters[C_SNDBUF_LIMITED_J],
            ],
            [1, 1, 2, 1, 1, 1, 7, 10, 3]
        );
        assert_eq!(cd.sk_err_max, Some(110), "the largest error reported");
        assert_eq!(cd.sk_err_soft_max, 113);
        // Next pass: only the change counts.
        c.sk_drops = 9;
        t.begin_pass();
        t.live(&cid, &c, &Windows::default(), &x, 0, None);
        t.end_pass();
        let d = t.take_period();
        let cd = by_role(&d, Role::Client);
        assert_eq!((cd.counters[C_SK_DROPS], cd.counters[C_BUSY_J]), (2, 0));
        assert_eq!(cd.sk_err_max, None);
        // A drop on a listening socket belongs to no connection.
        t.record(Record::Drop {
            id: SockId {
                raddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                ..id(1, 80, 0, state::LISTEN)
            },
            reason: drop_reason::BACKLOG,
        });
        assert!(t.take_period().is_empty());
    }

    #[test]
    fn late_records_of_closed_sockets_keep_their_key_for_a_period() {
        let mut t = Tracker::new(1, false);
        handshake(&mut t);
        t.record(Record::Close {
            id: id(2, 5000, 80, state::ESTABLISHED),
            counters: counters(0, 0),
        });
        t.take_period();
        // Next period: the reset still counts for the client's key (tgid 10), and a second
        // CLOSE record for the same socket is ignored.
        t.record(Record::RstSent {
            id: id(2, 5000, 80, state::CLOSE),
        });
        t.record(Record::Close {
            id: id(2, 5000, 80, state::ESTABLISHED),
            counters: counters(1, 1),
        });
        let d = t.take_period();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0.tgid, 10);
        assert_eq!(d[0].1.counters[C_RST_SENT], 1);
        assert_eq!(d[0].1.closes.iter().sum::<u64>(), 0);
        // Two periods later it is forgotten: a record then is a stranger's (tgid 0).
        t.take_period();
        t.record(Record::RstSent {
            id: id(2, 5000, 80, state::CLOSE),
        });
        assert_eq!(t.take_period()[0].0.tgid, 0);
    }

    #[test]
    fn a_socket_reused_after_disconnect_is_a_new_connection() {
        let mut t = Tracker::new(100, false);
        handshake(&mut t);
        t.record(Record::Close {
            id: id(2, 5000, 80, state::ESTABLISHED),
            counters: counters(10, 10),
        });
        // connect(AF_UNSPEC) then connect() again: same socket, counters restarted by the
        // kernel, a different server.
        t.record(Record::Connect {
            id: id(2, 0, 81, state::CLOSE),
            ts_ns: 0,
            owner: owner(10, "client"),
        });
        t.record(Record::Close {
            id: id(2, 5001, 81, state::FIN_WAIT2),
            counters: counters(3, 4),
        });
        let d = t.take_period();
        let to81 = d.iter().find(|(k, _)| k.server_port == 81).unwrap();
        assert_eq!(to81.1.counters[C_RX_BYTES], 3);
        assert_eq!(
            to81.1.closes[CLOSE_FAILED], 1,
            "never established the second time"
        );
    }

    #[test]
    fn cap_counts_overflow() {
        let mut t = Tracker::new(1, false);
        for cookie in [1, 2, 3] {
            t.record(Record::Connect {
                id: id(cookie, 0, 80, 7),
                ts_ns: 0,
                owner: owner(1, "c"),
            });
        }
        assert_eq!((t.len(), t.overflow()), (1, 2));
    }

    #[test]
    fn exact_listener_address_wins_over_wildcard() {
        let mut t = Tracker::new(100, false);
        t.record(Record::Listen {
            id: SockId {
                laddr: ANY,
                raddr: ANY,
                ..id(1, 80, 0, 7)
            },
            owner: owner(1, "any"),
        });
        t.record(Record::Listen {
            id: SockId {
                raddr: ANY,
                ..id(2, 80, 0, 7)
            },
            owner: owner(2, "lo"),
        });
        assert_eq!(t.listener_owner(LO, 80).unwrap().tgid, 2);
        assert_eq!(
            t.listener_owner(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80)
                .unwrap()
                .tgid,
            1
        );
        assert!(t.listener_owner(LO, 81).is_none());
    }
}
