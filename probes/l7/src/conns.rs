//! From kernel records to the tracker: which connection a record belongs to, which end the
//! process is, and when a connection ends. A UDP socket is one connection: a connected one
//! to its peer; an unconnected one that sends first (a client) to the destination of its first
//! send, one that receives first (a server) from any client (the unspecified address: the
//! source of a received datagram reaches the caller's buffer only after the kernel's
//! tracepoint, so it is not known). Everything here is bounded (the tracker's [`Limits`], idle
//! entries aged out).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

use l7_protocol::tracker::{
    ConnInfo, Limits, Role, Snapshot, Span, TopicKey, TopicStats, TraceConfig, Tracker,
    TrackerStats, Way,
};
use l7_protocol::Protocol;

use crate::decode::{Data, Dir, Open, Origin};

/// Sockets known at once; beyond, new ones are not (their calls count as `unknown_conn`).
pub const MAX_SOCKETS: usize = 131_072;
/// A UDP socket silent this long is forgotten, ns.
const UDP_IDLE_NS: u64 = 60_000_000_000;
/// A TCP connection silent this long is forgotten (its close was not seen), ns.
const TCP_IDLE_NS: u64 = 900_000_000_000;

struct Sock {
    open: Open,
    /// Which end the process is (UDP: decided by the first call); None until known.
    role: Option<Role>,
    /// Its bytes are a TLS session's plain text.
    tls: bool,
    last_ns: u64,
    /// Period ends seen since the kernel said it closed (None: open).
    closed: Option<u8>,
}

/// Counters of what could not be used, besides the tracker's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Calls whose bytes were not captured (sendfile, splice, io_uring, ...).
    pub uncaptured_calls: u64,
    /// A TLS session's own socket calls (cipher text) besides its plain text from the SSL
    /// hooks: not parsed.
    pub tls_records: u64,
}

/// The connections of the traced processes.
pub struct Conns {
    tracker: Tracker,
    socks: HashMap<u64, Sock>,
    protocols: Vec<Protocol>,
    /// Listening TCP ports per process, read from its network namespace when a connection
    /// older than the probe has to be classified.
    listening: HashMap<u32, HashSet<u16>>,
    stats: CaptureStats,
}

/// The protocols parsed on a UDP (DNS only) or TCP (all, DNS framed by its length) connection.
fn allowed(protocols: &[Protocol], udp: bool) -> Vec<Protocol> {
    protocols
        .iter()
        .copied()
        .filter(|p| !udp || *p == Protocol::Dns)
        .collect()
}

fn way(d: Dir) -> Way {
    match d {
        Dir::Sent => Way::Sent,
        Dir::Received => Way::Received,
    }
}

/// TCP ports in LISTEN state in `/proc/<tgid>/net/tcp{,6}` (the process's network namespace;
/// the host's /proc, `GOPHER_HOST_PATH`).
fn listening_ports(tgid: u32) -> HashSet<u16> {
    let mut out = HashSet::new();
    for f in ["tcp", "tcp6"] {
        let file = probe_sdk::host::path(format!("/proc/{tgid}/net/{f}"));
        let Ok(text) = std::fs::read_to_string(file) else {
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
            protocols,
            listening: HashMap::new(),
            stats: CaptureStats::default(),
        }
    }

    /// Parses only `protocols` in connections seen from now on.
    pub fn set_protocols(&mut self, protocols: Vec<Protocol>) {
        self.protocols = protocols;
    }

    fn info(o: &Open, role: Role, remote: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            tgid: o.tgid,
            comm: o.comm.clone(),
            role,
            local: o.local,
            remote,
            tls,
            udp: o.udp,
        }
    }

    /// A socket was announced (again, after user space forgot sockets: those still known
    /// keep their state).
    pub fn open(&mut self, o: Open) {
        if self.socks.contains_key(&o.cookie) || self.socks.len() >= MAX_SOCKETS {
            return;
        }
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
            let allowed = allowed(&self.protocols, false);
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
                closed: None,
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
        if s.tls && !d.tls && !s.open.udp {
            // The socket's own bytes of a TLS session whose plain text the SSL hooks report:
            // records the kernel side did not know were TLS (e.g. a close_notify alert written
            // by SSL_shutdown through a library's own BIO, outside SSL_read/SSL_write). Cipher
            // text: not parsed.
            self.stats.tls_records = self.stats.tls_records.saturating_add(1);
            return;
        }
        if d.tls && !s.tls {
            // The first plain text of a TLS session: what the tracker saw before was the
            // handshake; it starts afresh as a TLS connection.
            s.tls = true;
            if let Some(role) = s.role {
                let allowed = allowed(&self.protocols, false);
                let info = Self::info(&s.open, role, s.open.remote, true);
                self.tracker.open(d.cookie, info, &allowed);
            }
        }
        if !s.open.udp {
            self.tracker
                .data(d.cookie, way(d.dir), d.ts_ns, d.bytes, u64::from(d.len));
            return;
        }
        if s.role.is_none() {
            // The end that speaks first is the client.
            let (role, remote) = match d.dir {
                Dir::Sent => (Role::Client, d.peer.unwrap_or(s.open.remote)),
                Dir::Received => (Role::Server, s.open.remote),
            };
            s.role = Some(role);
            s.open.remote = remote;
            let info = Self::info(&s.open, role, remote, false);
            self.tracker
                .open(d.cookie, info, &allowed(&self.protocols, true));
        }
        self.tracker
            .data(d.cookie, way(d.dir), d.ts_ns, d.bytes, u64::from(d.len));
    }

    /// A TCP socket closed. The kernel says so when the socket reaches CLOSE, which for the
    /// end that shut down first is when the peer's FIN arrives, before the application has
    /// read what is still queued (a half-closed connection's response): the connection ends
    /// for the tracker only after a whole period has passed.
    pub fn close(&mut self, cookie: u64) {
        if let Some(s) = self.socks.get_mut(&cookie) {
            s.closed.get_or_insert(0);
            if s.role.is_some() {
                // What a lost response stream still owed ends here, so that it is in the
                // next report even if the process exits now.
                self.tracker.closing(cookie);
            }
        }
    }

    /// End of a period at kernel time `now_ns`: forgets idle connections, and processes that
    /// exited (their last totals were reported). Returns the sockets forgotten: the kernel
    /// must announce sockets again, so that these are known again if they speak again.
    pub fn end_period(&mut self, now_ns: u64) -> Vec<u64> {
        let mut forgotten = Vec::new();
        let mut closing = Vec::new();
        let gone_tgids: HashSet<u32> = self
            .tracker
            .processes()
            .into_iter()
            .filter(|tgid| !probe_sdk::host::path(format!("/proc/{tgid}")).exists())
            .collect();
        for tgid in &gone_tgids {
            self.tracker.forget_tgid(*tgid);
        }
        self.socks.retain(|cookie, s| {
            let limit = if s.open.udp { UDP_IDLE_NS } else { TCP_IDLE_NS };
            let idle = s.last_ns != 0 && now_ns.saturating_sub(s.last_ns) >= limit;
            let closed = match &mut s.closed {
                Some(n) if *n >= 1 => true,
                Some(n) => {
                    *n += 1;
                    false
                }
                None => false,
            };
            let keep = !idle && !closed && !gone_tgids.contains(&s.open.tgid);
            if !keep {
                // A closed socket's kernel state already says it is not announced.
                if !closed {
                    forgotten.push(*cookie);
                }
                if s.role.is_some() {
                    closing.push(*cookie);
                }
            }
            keep
        });
        for c in closing {
            self.tracker.close(c);
        }
        // Fresh listening sets next period.
        self.listening.clear();
        forgotten
    }

    /// The tracker's tables and counters.
    pub fn snapshot(&self) -> Snapshot {
        self.tracker.snapshot()
    }

    /// The tracker's counters.
    pub fn stats(&self) -> TrackerStats {
        self.tracker.stats()
    }

    /// Reports answered requests as spans, or no more ([`Tracker::set_trace`]).
    pub fn set_trace(&mut self, config: Option<TraceConfig>) {
        self.tracker.set_trace(config);
    }

    /// The spans since the last call ([`Tracker::take_spans`]).
    pub fn take_spans(&mut self) -> Vec<Span> {
        self.tracker.take_spans()
    }

    /// The Kafka topic rows since the last call ([`Tracker::take_topics`]).
    pub fn take_topics(&mut self) -> BTreeMap<TopicKey, TopicStats> {
        self.tracker.take_topics()
    }

    /// What could not be used, besides the tracker's counters.
    pub fn capture_stats(&self) -> CaptureStats {
        self.stats
    }
}
