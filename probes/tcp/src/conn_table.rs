//! Per-key state kept across periods: the BPF side hands over what changed per key in a
//! period ([`PeriodDelta`]); [`ConnTable`] turns that into running totals (counted from zero
//! when the key is first seen; the daemon exports a per-period field's change between two
//! records, see `tables`) and this period's gauges, with a cap on the number of keys. Every
//! remembered key is reported every period, idle or not, so that a per-period change goes back
//! to 0 when nothing happens.

use std::collections::HashMap;

use crate::conn_key::ConnKey;
use probe_sdk::histogram::Histogram;

/// Index of payload bytes received in the counter arrays (`TCP_C_RX_BYTES`).
pub const C_RX_BYTES: usize = 0;
/// Payload bytes sent, retransmissions excluded (`TCP_C_TX_BYTES`).
pub const C_TX_BYTES: usize = 1;
/// Segments received (`TCP_C_SEGS_IN`).
pub const C_SEGS_IN: usize = 2;
/// Segments sent (`TCP_C_SEGS_OUT`).
pub const C_SEGS_OUT: usize = 3;
/// Retransmitted segments (`TCP_C_RETRANS`).
pub const C_RETRANS: usize = 4;
/// Resets sent (`TCP_C_RST_SENT`).
pub const C_RST_SENT: usize = 5;
/// Resets received (`TCP_C_RST_RECV`).
pub const C_RST_RECV: usize = 6;
/// Times the peer closed its window (`TCP_C_ZERO_SND_WND`).
pub const C_ZERO_SND_WND: usize = 7;
/// Times we advertised a zero window (`TCP_C_ZERO_RCV_WND`).
pub const C_ZERO_RCV_WND: usize = 8;
/// Packets the socket dropped: change of `sk_drops`.
pub const C_SK_DROPS: usize = 9;
/// Drops with reason SOCKET_BACKLOG (kfree_skb).
pub const C_BACKLOG_DROPS: usize = 10;
/// Drops with reason SOCKET_FILTER (kfree_skb).
pub const C_FILTER_DROPS: usize = 11;
/// Drops with reason PROTO_MEM or SOCKET_RCVBUFF (kfree_skb).
pub const C_RMEM_SCHED: usize = 12;
/// Refused memory charges (sock_exceed_buf_limit).
pub const C_TCP_OOM: usize = 13;
/// Errors reported with ETIMEDOUT (inet_sk_error_report).
pub const C_TMOUT: usize = 14;
/// Non-blocking sends refused with -EAGAIN (sock_send_length).
pub const C_SNDBUF_LIMIT: usize = 15;
/// Jiffies busy sending (`chrono_stat[0]`).
pub const C_BUSY_J: usize = 16;
/// Jiffies limited by the receive window (`chrono_stat[1]`).
pub const C_RWND_LIMITED_J: usize = 17;
/// Jiffies limited by the send buffer (`chrono_stat[2]`).
pub const C_SNDBUF_LIMITED_J: usize = 18;
/// Number of counters (`TCP_C_NR`).
pub const COUNTERS: usize = 19;

/// Gauge sums over live connections, indexed: `icsk_rto`, jiffies.
pub const G_RTO_J: usize = 0;
/// `icsk_ack.ato`, jiffies.
pub const G_ATO_J: usize = 1;
/// `snd_ssthresh`, segments.
pub const G_SND_SSTHRESH: usize = 2;
/// `rcv_ssthresh`, bytes.
pub const G_RCV_SSTHRESH: usize = 3;
/// `advmss`, bytes.
pub const G_ADVMSS: usize = 4;
/// `rcvq_space.space`, bytes.
pub const G_RCV_SPACE: usize = 5;
/// Delivery rate, bytes/s.
pub const G_DELIVERY_RATE: usize = 6;
/// `sk_pacing_rate`, bytes/s.
pub const G_PACING_RATE: usize = 7;
/// `sk_max_pacing_rate`, bytes/s.
pub const G_MAX_PACING_RATE: usize = 8;
/// `sk_error_queue.qlen`.
pub const G_ERR_QLEN: usize = 9;
/// `sk_receive_queue.qlen`.
pub const G_RCV_QLEN: usize = 10;
/// `sk_write_queue.qlen`.
pub const G_WRI_QLEN: usize = 11;
/// `sk_backlog.len`, bytes.
pub const G_BACKLOG_LEN: usize = 12;
/// `sk_omem_alloc`, bytes.
pub const G_OMEM: usize = 13;
/// `sk_forward_alloc`, bytes.
pub const G_FORWARD: usize = 14;
/// `sk_wmem_queued`, bytes.
pub const G_WMEM: usize = 15;
/// `sk_rcvbuf`, bytes.
pub const G_RCVBUF: usize = 16;
/// `sk_sndbuf`, bytes.
pub const G_SNDBUF: usize = 17;
/// `lost_out`, segments.
pub const G_LOST_OUT: usize = 18;
/// `sacked_out`, segments.
pub const G_SACKED_OUT: usize = 19;
/// Number of gauge sums.
pub const GAUGES: usize = 20;

/// Closed from FIN_WAIT1/FIN_WAIT2/CLOSING: the local end closed first (`TCP_CLOSE_ACTIVE`).
pub const CLOSE_ACTIVE: usize = 0;
/// Closed from LAST_ACK: the peer closed first (`TCP_CLOSE_PASSIVE`).
pub const CLOSE_PASSIVE: usize = 1;
/// Closed from ESTABLISHED/CLOSE_WAIT: reset, abort or timeout (`TCP_CLOSE_ABORT`).
pub const CLOSE_ABORT: usize = 2;
/// Closed from SYN_SENT/SYN_RECV: never established (`TCP_CLOSE_FAILED`).
pub const CLOSE_FAILED: usize = 3;
/// Number of close kinds (`TCP_CLOSE_NR`).
pub const CLOSE_KINDS: usize = 4;

/// What one period added for a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodDelta {
    /// Counter increments, indexed by the `C_*` constants.
    pub counters: [u64; COUNTERS],
    /// Connections that reached ESTABLISHED.
    pub opens: u64,
    /// Connections that reached CLOSE, by how (indexed by the `CLOSE_*` constants).
    pub closes: [u64; CLOSE_KINDS],
    /// Establish latencies of `opens`.
    pub estab: Histogram,
    /// Live connections seen by this period's iterator pass.
    pub live: u64,
    /// Connections whose RTT was sampled (live ones plus those that closed).
    pub rtt_samples: u64,
    /// Sum of smoothed RTTs, µs.
    pub srtt_sum_us: u64,
    /// Largest smoothed RTT, µs.
    pub srtt_max_us: u64,
    /// Sum of receive-side RTT estimates, µs.
    pub rcv_rtt_sum_us: u64,
    /// Sum over live connections of `snd_cwnd` (segments).
    pub snd_cwnd_sum: u64,
    /// Sum over live connections of the peer's window, bytes.
    pub snd_wnd_sum: u64,
    /// Sum over live connections of our advertised window, bytes.
    pub rcv_wnd_sum: u64,
    /// Sum over live connections of bytes written but not sent.
    pub notsent_sum: u64,
    /// Sum over live connections of bytes sent but not acknowledged.
    pub notack_sum: u64,
    /// Sum over live connections of the reordering metric.
    pub reordering_sum: u64,
    /// Sums over live connections of the `G_*` gauges (u128: `sk_max_pacing_rate` is ~0
    /// when unlimited).
    pub gauge_sums: [u128; GAUGES],
    /// Largest `sk_err_soft` of the live connections.
    pub sk_err_soft_max: u64,
    /// Largest error number reported (inet_sk_error_report) in the period, if any.
    pub sk_err_max: Option<u64>,
}

impl PeriodDelta {
    /// Adds another delta of the same key.
    pub fn merge(&mut self, o: &PeriodDelta) {
        for (a, b) in self
            .counters
            .iter_mut()
            .zip(o.counters.iter())
            .chain(self.closes.iter_mut().zip(o.closes.iter()))
        {
            *a = a.saturating_add(*b);
        }
        self.estab.merge(&o.estab);
        self.srtt_max_us = self.srtt_max_us.max(o.srtt_max_us);
        for (a, b) in [
            (&mut self.opens, o.opens),
            (&mut self.live, o.live),
            (&mut self.rtt_samples, o.rtt_samples),
            (&mut self.srtt_sum_us, o.srtt_sum_us),
            (&mut self.rcv_rtt_sum_us, o.rcv_rtt_sum_us),
            (&mut self.snd_cwnd_sum, o.snd_cwnd_sum),
            (&mut self.snd_wnd_sum, o.snd_wnd_sum),
            (&mut self.rcv_wnd_sum, o.rcv_wnd_sum),
            (&mut self.notsent_sum, o.notsent_sum),
            (&mut self.notack_sum, o.notack_sum),
            (&mut self.reordering_sum, o.reordering_sum),
        ] {
            *a = a.saturating_add(b);
        }
        for (a, b) in self.gauge_sums.iter_mut().zip(o.gauge_sums.iter()) {
            *a = a.saturating_add(*b);
        }
        self.sk_err_soft_max = self.sk_err_soft_max.max(o.sk_err_soft_max);
        self.sk_err_max = self.sk_err_max.max(o.sk_err_max);
    }
}

/// This period's gauges for a key: averages over the connections sampled; None without samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Mean smoothed RTT, µs.
    pub srtt_us: Option<u64>,
    /// Largest smoothed RTT, µs.
    pub srtt_max_us: Option<u64>,
    /// Mean receive-side RTT estimate, µs.
    pub rcv_rtt_us: Option<u64>,
    /// Mean congestion window, segments.
    pub snd_cwnd: Option<u64>,
    /// Mean peer window, bytes.
    pub snd_wnd: Option<u64>,
    /// Mean advertised window, bytes.
    pub rcv_wnd: Option<u64>,
    /// Mean bytes written but not yet sent.
    pub notsent_bytes: Option<u64>,
    /// Mean bytes in flight.
    pub notack_bytes: Option<u64>,
    /// Mean reordering metric.
    pub reordering: Option<u64>,
    /// Mean establish latency of the connections established this period, µs.
    pub syn_srtt_us: Option<u64>,
    /// Largest establish latency this period, µs.
    pub syn_srtt_max_us: Option<u64>,
    /// Means over live connections of the `G_*` gauges.
    pub means: [Option<u64>; GAUGES],
    /// Largest `sk_err_soft` of the live connections.
    pub sk_err_soft: Option<u64>,
    /// Largest error number reported in the period.
    pub sk_err: Option<u64>,
}

impl Gauges {
    fn from_delta(d: &PeriodDelta) -> Gauges {
        let avg = |sum: u64, n: u64| sum.checked_div(n);
        let live = |sum: u64| avg(sum, d.live);
        let opens = d.estab.count();
        Gauges {
            srtt_us: avg(d.srtt_sum_us, d.rtt_samples),
            srtt_max_us: (d.rtt_samples > 0).then_some(d.srtt_max_us),
            rcv_rtt_us: avg(d.rcv_rtt_sum_us, d.rtt_samples),
            snd_cwnd: live(d.snd_cwnd_sum),
            snd_wnd: live(d.snd_wnd_sum),
            rcv_wnd: live(d.rcv_wnd_sum),
            notsent_bytes: live(d.notsent_sum),
            notack_bytes: live(d.notack_sum),
            reordering: live(d.reordering_sum),
            syn_srtt_us: avg(d.estab.sum, opens),
            syn_srtt_max_us: (opens > 0).then_some(d.estab.max),
            means: d.gauge_sums.map(|sum| {
                sum.checked_div(u128::from(d.live))
                    .map(|m| u64::try_from(m).unwrap_or(u64::MAX))
            }),
            sk_err_soft: (d.live > 0).then_some(d.sk_err_soft_max),
            sk_err: d.sk_err_max,
        }
    }
}

/// Everything reported for one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnEntry {
    /// Cumulative counters since the key was first seen, indexed by the `C_*` constants.
    pub counters: [u64; COUNTERS],
    /// Cumulative connections established.
    pub opens: u64,
    /// Cumulative connections closed, by how (indexed by the `CLOSE_*` constants).
    pub closes: [u64; CLOSE_KINDS],
    /// Cumulative establish latencies.
    pub estab: Histogram,
    /// Live connections at this period's pass (0 for an idle key).
    pub live: u64,
    /// This period's gauges (all None for an idle key).
    pub gauges: Gauges,
    /// This period's counter increments (all 0 for an idle key), for events.
    pub period: [u64; COUNTERS],
    /// Period in which the key last had a delta.
    last_period: u64,
}

impl ConnEntry {
    fn absorb(&mut self, d: &PeriodDelta, period: u64) {
        for (a, b) in self
            .counters
            .iter_mut()
            .zip(d.counters.iter())
            .chain(self.closes.iter_mut().zip(d.closes.iter()))
        {
            *a = a.saturating_add(*b);
        }
        self.opens = self.opens.saturating_add(d.opens);
        self.estab.merge(&d.estab);
        self.live = d.live;
        self.gauges = Gauges::from_delta(d);
        self.period = d.counters;
        self.last_period = period;
    }

    /// A period without any delta: totals stay, nothing was sampled.
    fn idle(&mut self) {
        self.live = 0;
        self.gauges = Gauges::default();
        self.period = [0; COUNTERS];
    }

    /// Whether the key had a delta in the current period.
    #[cfg(test)]
    fn active_in(&self, period: u64) -> bool {
        self.last_period == period
    }
}

/// Keys seen so far with their cumulative values.
#[derive(Debug)]
pub struct ConnTable {
    entries: HashMap<ConnKey, ConnEntry>,
    cap: usize,
    retain_periods: u64,
    period: u64,
    overflow: u64,
}

impl ConnTable {
    /// A table holding at most `cap` keys; a key without activity is forgotten after
    /// `retain_periods` periods (its counters restart from zero if it comes back).
    pub fn new(cap: usize, retain_periods: u64) -> ConnTable {
        ConnTable {
            entries: HashMap::new(),
            cap,
            retain_periods: retain_periods.max(1),
            period: 0,
            overflow: 0,
        }
    }

    /// Starts a new period and applies its deltas; keys without a delta become idle (totals
    /// kept, no gauges). Keys beyond the cap that cannot displace an idle key are dropped and
    /// counted in [`overflow`](Self::overflow).
    pub fn apply<I: IntoIterator<Item = (ConnKey, PeriodDelta)>>(&mut self, deltas: I) {
        self.period += 1;
        let period = self.period;
        let mut merged: HashMap<ConnKey, PeriodDelta> = HashMap::new();
        for (k, d) in deltas {
            merged
                .entry(k)
                .and_modify(|m| m.merge(&d))
                .or_insert_with(|| d.clone());
        }
        // Known keys first, so new keys never displace a key that is active now.
        let (known, new): (Vec<_>, Vec<_>) = merged
            .into_iter()
            .partition(|(k, _)| self.entries.contains_key(k));
        for e in self.entries.values_mut() {
            e.idle();
        }
        for (k, d) in known {
            if let Some(e) = self.entries.get_mut(&k) {
                e.absorb(&d, period);
            }
        }
        let mut new = new;
        new.sort_by_key(|(k, _)| *k);
        for (k, d) in new {
            if self.entries.len() >= self.cap && !self.evict_one_idle() {
                self.overflow += 1;
                continue;
            }
            let mut e = ConnEntry::default();
            e.absorb(&d, period);
            self.entries.insert(k, e);
        }
        let retain = self.retain_periods;
        self.entries
            .retain(|_, e| period.saturating_sub(e.last_period) < retain);
    }

    fn evict_one_idle(&mut self) -> bool {
        let period = self.period;
        let oldest = self
            .entries
            .iter()
            .filter(|(_, e)| e.last_period < period)
            .min_by_key(|(k, e)| (e.last_period, **k))
            .map(|(k, _)| *k);
        match oldest {
            Some(k) => {
                self.entries.remove(&k);
                true
            }
            None => false,
        }
    }

    /// Forgets idle keys after `retain_periods` periods from now on (the period changed).
    pub fn set_retain(&mut self, retain_periods: u64) {
        self.retain_periods = retain_periods.max(1);
    }

    /// Every remembered key (active or idle), sorted by key: what a period reports.
    pub fn rows(&self) -> Vec<(&ConnKey, &ConnEntry)> {
        let mut v: Vec<_> = self.entries.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Keys that changed in the current period, sorted by key.
    #[cfg(test)]
    fn active(&self) -> Vec<(&ConnKey, &ConnEntry)> {
        let mut v = self.rows();
        v.retain(|(_, e)| e.active_in(self.period));
        v
    }

    /// Keys currently remembered (active or idle).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Deltas dropped so far because the key cap was reached.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_key::{Comm, Role};
    use std::net::{IpAddr, Ipv4Addr};

    fn key(server_port: u16) -> ConnKey {
        ConnKey {
            tgid: 7,
            comm: Comm::new("curl"),
            role: Role::Client,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: 0,
            server_port,
        }
    }

    fn delta(rx: u64, live: u64) -> PeriodDelta {
        let mut d = PeriodDelta {
            live,
            ..Default::default()
        };
        d.counters[C_RX_BYTES] = rx;
        d
    }

    #[test]
    fn counters_accumulate_across_periods() {
        let mut t = ConnTable::new(10, 3);
        t.apply([(key(80), delta(100, 1))]);
        t.apply([(key(80), delta(50, 1))]);
        let active = t.active();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].1.counters[C_RX_BYTES], 150);
        assert_eq!(active[0].0.comm.as_str(), "curl");
    }

    #[test]
    fn duplicate_keys_in_one_drain_are_merged() {
        let mut t = ConnTable::new(10, 3);
        t.apply([(key(80), delta(1, 1)), (key(80), delta(2, 1))]);
        let e = t.active()[0].1;
        assert_eq!(e.counters[C_RX_BYTES], 3);
        assert_eq!(e.live, 2);
    }

    #[test]
    fn idle_keys_are_reported_with_unchanged_totals_then_forgotten() {
        let mut t = ConnTable::new(10, 2);
        let mut d = delta(100, 1);
        d.rtt_samples = 1;
        d.srtt_sum_us = 40;
        t.apply([(key(80), d)]);
        t.apply([(key(81), delta(1, 1))]);
        // key 80 is idle: not active, but still a row, with its total and without gauges.
        assert_eq!(t.active().len(), 1);
        let rows = t.rows();
        assert_eq!(rows.len(), 2);
        let idle = rows.iter().find(|(k, _)| k.server_port == 80).unwrap().1;
        assert_eq!(idle.counters[C_RX_BYTES], 100);
        assert_eq!((idle.live, idle.gauges), (0, Gauges::default()));
        t.apply([(key(81), delta(1, 1))]);
        assert_eq!(t.len(), 1, "key 80 forgotten after 2 idle periods");
        assert_eq!(t.rows().len(), 1);
        // Coming back restarts its counters.
        t.apply([(key(80), delta(5, 0))]);
        let e = t
            .active()
            .into_iter()
            .find(|(k, _)| k.server_port == 80)
            .unwrap()
            .1;
        assert_eq!(e.counters[C_RX_BYTES], 5);
    }

    #[test]
    fn cap_evicts_idle_keys_then_counts_overflow() {
        let mut t = ConnTable::new(2, 100);
        t.apply([(key(1), delta(1, 0)), (key(2), delta(1, 0))]);
        // Both idle now: a new key displaces the oldest idle one.
        t.apply([(key(3), delta(1, 1))]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.overflow(), 0);
        // Two active keys fill the cap: a third new key in the same period overflows.
        t.apply([
            (key(3), delta(1, 1)),
            (key(4), delta(1, 1)),
            (key(5), delta(1, 1)),
        ]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.overflow(), 1);
        let ports: Vec<u16> = t.active().iter().map(|(k, _)| k.server_port).collect();
        assert_eq!(ports, vec![3, 4]);
    }

    #[test]
    fn gauges_are_averages_over_samples() {
        let mut d = delta(0, 2);
        d.rtt_samples = 3;
        d.srtt_sum_us = 300;
        d.srtt_max_us = 150;
        d.snd_cwnd_sum = 30;
        d.estab.counts[0] = 2;
        d.estab.sum = 60;
        d.estab.max = 40;
        let g = Gauges::from_delta(&d);
        assert_eq!(g.srtt_us, Some(100));
        assert_eq!(g.srtt_max_us, Some(150));
        assert_eq!(g.snd_cwnd, Some(15));
        assert_eq!(g.syn_srtt_us, Some(30));
        assert_eq!(g.syn_srtt_max_us, Some(40));
        let none = Gauges::from_delta(&delta(0, 0));
        assert_eq!(none, Gauges::default());
        // Unlimited pacing (~0) on both live connections: the mean is still ~0.
        let mut d = delta(0, 2);
        d.gauge_sums[G_MAX_PACING_RATE] = 2 * u128::from(u64::MAX);
        d.gauge_sums[G_RCVBUF] = 3000;
        let g = Gauges::from_delta(&d);
        assert_eq!(g.means[G_MAX_PACING_RATE], Some(u64::MAX));
        assert_eq!(g.means[G_RCVBUF], Some(1500));
        assert_eq!((g.sk_err_soft, g.sk_err), (Some(0), None));
    }
}
