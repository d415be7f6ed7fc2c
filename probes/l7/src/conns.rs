//! From kernel records to the tracker: which connection a record belongs to, which end the
//! process is, and when a connection ends. UDP sockets that are not connected carry one
//! "connection" per peer; everything here is bounded (the tracker's [`Limits`], the peer map
//! by [`MAX_UDP_PEERS`], idle entries aged out).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use l7_protocol::tracker::{ConnInfo, Limits, Role, Snapshot, Tracker, Way};
use l7_protocol::Protocol;

use crate::decode::{Data, Dir, Open, Origin};

/// UDP (socket, peer) pairs tracked at once.
pub const MAX_UDP_PEERS: usize = 65_536;
/// A UDP peer silent this long is forgotten, ns.
const UDP_IDLE_NS: u64 = 60_000_000_000;
/// A TCP connection silent this long is forgotten (its close was not seen), ns.
const TCP_IDLE_NS: u64 = 900_000_000_000;
/// Ids of UDP peer "connections" start here (socket cookies are far below).
const UDP_ID_BASE: u64 = 1 << 62;

struct Sock {
    open: Open,
    /// The tracker's connection (TCP: the cookie; connected UDP: the cookie).
    role: Option<Role>,
    /// Its bytes are a TLS session's plain text.
    tls: bool,
    last_ns: u64,
}

/// Counters of what could not be used, besides the tracker's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Calls whose bytes were not captured (sendfile, splice, io_uring, ...).
    pub uncaptured_calls: u64,
    /// UDP datagrams whose peer was not known, or past [`MAX_UDP_PEERS`].
    pub udp_unknown_peer: u64,
}

/// The connections of the traced processes.
pub struct Conns {
    tracker: Tracker,
    socks: HashMap<u64, Sock>,
    udp: HashMap<(u64, SocketAddr), (u64, u64)>,
    next_udp: u64,
    protocols: Vec<Protocol>,
    /// Listening TCP ports per process, read from its network namespace when a connection
    /// older than the probe has to be classified.
    listening: HashMap<u32, HashSet<u16>>,
    stats: CaptureStats,
}

fn way(d: Dir) -> Way {
    match d {
        Dir::Sent => Way::Sent,
        Dir::Received => Way::Received,
    }
}

/// TCP ports in LISTEN state in `/proc/<tgid>/net/tcp{,6}` (the process's network namespace).
fn listening_ports(tgid: u32) -> HashSet<u16> {
    let mut out = HashSet::new();
    for f in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{tgid}/net/{f}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut it = line.split_whitespace();
            let (Some(_), Some(local), Some(_), Some(state)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            if state != "0A" {
                continue;
            }
            if let Some(port) = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                out.insert(port);
            }
        }
    }
    out
}

impl Conns {
    /// Nothing tracked yet; `limits` bound the tracker.
    pub fn new(limits: Limits, protocols: Vec<Protocol>) -> Conns {
        Conns {
            tracker: Tracker::new(limits),
            socks: HashMap::new(),
            udp: HashMap::new(),
            next_udp: UDP_ID_BASE,
            protocols,
            listening: HashMap::new(),
            stats: CaptureStats::default(),
        }
    }

    /// Parses only `protocols` in connections seen from now on.
    pub fn set_protocols(&mut self, protocols: Vec<Protocol>) {
        self.protocols = protocols;
    }

    fn allowed(&self, udp: bool) -> Vec<Protocol> {
        self.protocols
            .iter()
            .copied()
            .filter(|p| udp == (*p == Protocol::Dns))
            .collect()
    }

    fn info(o: &Open, role: Role, remote: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            tgid: o.tgid,
            comm: o.comm.clone(),
            role,
            local: o.local,
            remote,
            tls,
        }
    }

    /// A socket was announced.
    pub fn open(&mut self, o: Open) {
        let role = if o.udp {
            None
        } else {
            Some(match o.origin {
                Origin::Connected => Role::Client,
                Origin::Accepted => Role::Server,
                Origin::Unknown => {
                    let ports = self
                        .listening
                        .entry(o.tgid)
                        .or_insert_with(|| listening_ports(o.tgid));
                    if ports.contains(&o.local.port()) {
                        Role::Server
                    } else {
                        Role::Client
                    }
                }
            })
        };
        if let Some(role) = role {
            let allowed = self.allowed(false);
            self.tracker
                .open(o.cookie, Self::info(&o, role, o.remote, false), &allowed);
        }
        self.socks.insert(
            o.cookie,
            Sock {
                open: o,
                role,
                tls: false,
                last_ns: 0,
            },
        );
    }

    /// A send or receive call.
    pub fn data(&mut self, d: &Data<'_>) {
        if d.from_kernel || d.unknown_call {
            self.stats.uncaptured_calls = self.stats.uncaptured_calls.saturating_add(1);
        }
        let Some(s) = self.socks.get_mut(&d.cookie) else {
            // The announcement was lost: the tracker counts it.
            self.tracker
                .data(d.cookie, way(d.dir), d.ts_ns, d.bytes, u64::from(d.len));
            return;
        };
        s.last_ns = d.ts_ns;
        if d.tls && !s.tls {
            // The first plain text of a TLS session: what the tracker saw before was the
            // handshake; it starts afresh as a TLS connection.
            s.tls = true;
            if let Some(role) = s.role {
                let allowed: Vec<Protocol> = self
                    .protocols
                    .iter()
                    .copied()
                    .filter(|p| *p != Protocol::Dns)
                    .collect();
                let info = Self::info(&s.open, role, s.open.remote, true);
                self.tracker.open(d.cookie, info, &allowed);
            }
        }
        if !s.open.udp {
            self.tracker
                .data(d.cookie, way(d.dir), d.ts_ns, d.bytes, u64::from(d.len));
            return;
        }
        let connected = s.open.remote.port() != 0;
        let Some(peer) = d.peer.or(connected.then_some(s.open.remote)) else {
            self.stats.udp_unknown_peer = self.stats.udp_unknown_peer.saturating_add(1);
            return;
        };
        let key = (d.cookie, peer);
        let id = match self.udp.get_mut(&key) {
            Some((id, last)) => {
                *last = d.ts_ns;
                *id
            }
            None => {
                if self.udp.len() >= MAX_UDP_PEERS {
                    self.stats.udp_unknown_peer = self.stats.udp_unknown_peer.saturating_add(1);
                    return;
                }
                // The end that speaks first is the client.
                let role = match d.dir {
                    Dir::Sent => Role::Client,
                    Dir::Received => Role::Server,
                };
                let id = self.next_udp;
                self.next_udp += 1;
                let info = Self::info(&s.open, role, peer, false);
                let allowed = self.allowed(true);
                self.tracker.open(id, info, &allowed);
                self.udp.insert(key, (id, d.ts_ns));
                id
            }
        };
        self.tracker
            .data(id, way(d.dir), d.ts_ns, d.bytes, u64::from(d.len));
    }

    /// A TCP socket closed.
    pub fn close(&mut self, cookie: u64) {
        if let Some(s) = self.socks.remove(&cookie) {
            if s.role.is_some() {
                self.tracker.close(cookie);
            }
        }
    }

    /// End of a period at kernel time `now_ns`: forgets idle connections, and processes that
    /// exited (their last totals were reported). Returns the sockets forgotten: the kernel
    /// must forget them too, so that it announces them again if they speak again.
    pub fn end_period(&mut self, now_ns: u64) -> Vec<u64> {
        let mut forgotten = Vec::new();
        let mut closing = Vec::new();
        let gone_tgids: HashSet<u32> = self
            .tracker
            .snapshot()
            .comms
            .keys()
            .copied()
            .filter(|tgid| !Path::new(&format!("/proc/{tgid}")).exists())
            .collect();
        for tgid in &gone_tgids {
            self.tracker.forget_tgid(*tgid);
        }
        self.socks.retain(|cookie, s| {
            let limit = if s.open.udp { UDP_IDLE_NS } else { TCP_IDLE_NS };
            let idle = s.last_ns != 0 && now_ns.saturating_sub(s.last_ns) >= limit;
            let keep = !idle && !gone_tgids.contains(&s.open.tgid);
            if !keep {
                forgotten.push(*cookie);
                if s.role.is_some() {
                    closing.push(*cookie);
                }
            }
            keep
        });
        for c in closing {
            self.tracker.close(c);
        }
        let socks = &self.socks;
        let tracker = &mut self.tracker;
        self.udp.retain(|(cookie, _), (id, last)| {
            let keep = socks.contains_key(cookie) && now_ns.saturating_sub(*last) < UDP_IDLE_NS;
            if !keep {
                tracker.close(*id);
            }
            keep
        });
        // Fresh listening sets next period.
        self.listening.clear();
        forgotten
    }

    /// The tracker's tables and counters.
    pub fn snapshot(&self) -> Snapshot {
        self.tracker.snapshot()
    }

    /// What could not be used, besides the tracker's counters.
    pub fn capture_stats(&self) -> CaptureStats {
        self.stats
    }
}
