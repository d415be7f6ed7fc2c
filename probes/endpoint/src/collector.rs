//! The kernel side: loads `endpoint.bpf.c`, attaches it, runs the iterators and reads the UDP
//! socket map.

use std::collections::HashMap;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Iter, Link, MapCore, MapFlags, OpenObject};
use probe_sdk::bpf::{self, LossCounters};

use crate::decode::{self, UdpCounters};
use crate::skel::{EndpointSkel, EndpointSkelBuilder};

/// Failure to load, attach or read the BPF side.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// libbpf refused something.
    #[error("{what}: {source}")]
    Libbpf {
        /// What was being done.
        what: &'static str,
        /// The libbpf error.
        source: libbpf_rs::Error,
    },
    /// BTF selection failed.
    #[error(transparent)]
    Sdk(#[from] bpf::BpfError),
    /// Reading an iterator failed.
    #[error("reading the {0} socket iterator: {1}")]
    Iter(&'static str, #[source] io::Error),
}

fn ctx(what: &'static str) -> impl FnOnce(libbpf_rs::Error) -> CollectError {
    move |source| CollectError::Libbpf { what, source }
}

/// How to configure the BPF side.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address range of `tcp_rcv_state_process` (SYN drop classification), if known.
    pub conn_range: Option<(u64, u64)>,
    /// Load the kfree_skb program (the kernel's tracepoint has `rx_sk`).
    pub drop_reasons: bool,
    /// The kernel's tcp_retransmit_skb tracepoint passes the attempt's result (`err`).
    pub retransmit_err: bool,
    /// Entries of the listener and UDP socket maps (`-M`).
    pub max_entries: u32,
    /// Custom BTF file (`-b`).
    pub btf_path: Option<PathBuf>,
    /// Attach the UDP hooks from the start (the udp_socket sub-probe is selected).
    pub udp_hooks: bool,
    /// Size of the ring buffer, bytes (a power of two).
    pub ring_bytes: u32,
}

/// The loaded and attached BPF object.
pub struct Collector<'obj> {
    skel: EndpointSkel<'obj>,
    _links: Vec<Link>,
    /// sock_send_length, sock_recv_length and udp_fail_queue_rcv_skb, attached only while the
    /// UDP table is selected: the first two run on every TCP send and receive too.
    udp_links: Vec<Link>,
    tcp_iter: Link,
    udp_iter: Link,
    opts: Options,
    buf: Vec<u8>,
}

/// Start and end of `name` in a `/proc/kallsyms` text: its address and the next higher symbol
/// address. None when absent or hidden (addresses shown as 0).
pub fn symbol_range(kallsyms: &str, name: &str) -> Option<(u64, u64)> {
    let mut addrs: Vec<u64> = Vec::new();
    let mut start = None;
    for line in kallsyms.lines() {
        let mut it = line.split_whitespace();
        let (Some(a), Some(_), Some(n)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(a) = u64::from_str_radix(a, 16) else {
            continue;
        };
        if n == name && it.next().is_none() {
            start = Some(a);
        }
        addrs.push(a);
    }
    let start = start.filter(|s| *s != 0)?;
    let end = addrs.into_iter().filter(|a| *a > start).min()?;
    Some((start, end))
}

/// The range of `tcp_rcv_state_process` in the running kernel.
pub fn conn_request_range() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(Path::new("/proc/kallsyms")).ok()?;
    symbol_range(&text, "tcp_rcv_state_process")
}

impl<'obj> Collector<'obj> {
    /// Opens, loads and attaches everything.
    pub fn start(
        object: &'obj mut MaybeUninit<OpenObject>,
        opts: &Options,
    ) -> Result<Collector<'obj>, CollectError> {
        let builder = EndpointSkelBuilder {
            obj_builder: bpf::object_builder(opts.btf_path.as_deref())?,
        };
        let mut open = builder
            .open(object)
            .map_err(ctx("opening the BPF object"))?;
        if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
            let (lo, hi) = opts.conn_range.unwrap_or((0, 0));
            rodata.conn_lo = lo;
            rodata.conn_hi = hi;
        }
        open.progs
            .on_consume
            .set_autoload(opts.conn_range.is_some());
        open.progs.on_kfree_skb.set_autoload(opts.drop_reasons);
        open.progs
            .on_retransmit_skb
            .set_autoload(!opts.retransmit_err);
        open.progs
            .on_retransmit_skb_err
            .set_autoload(opts.retransmit_err);
        open.maps
            .events
            .set_max_entries(opts.ring_bytes)
            .map_err(ctx("sizing the ring buffer"))?;
        open.maps
            .listeners
            .set_max_entries(opts.max_entries)
            .map_err(ctx("sizing the listener map"))?;
        open.maps
            .udp_socks
            .set_max_entries(opts.max_entries)
            .map_err(ctx("sizing the UDP socket map"))?;
        let skel = open.load().map_err(ctx("loading the BPF programs"))?;

        let mut links = Vec::new();
        let p = &skel.progs;
        let mut progs = vec![
            (&p.on_state, "attaching tp_btf/inet_sock_set_state"),
            (
                &p.on_retransmit_synack,
                "attaching tp_btf/tcp_retransmit_synack",
            ),
            if opts.retransmit_err {
                (
                    &p.on_retransmit_skb_err,
                    "attaching tp_btf/tcp_retransmit_skb",
                )
            } else {
                (&p.on_retransmit_skb, "attaching tp_btf/tcp_retransmit_skb")
            },
        ];
        if opts.conn_range.is_some() {
            progs.push((&p.on_consume, "attaching tp_btf/consume_skb"));
        }
        if opts.drop_reasons {
            progs.push((&p.on_kfree_skb, "attaching tp_btf/kfree_skb"));
        }
        for (prog, what) in progs {
            links.push(prog.attach().map_err(ctx(what))?);
        }
        let tcp_iter = p.dump_tcp.attach().map_err(ctx("attaching iter/tcp"))?;
        let udp_iter = p.dump_udp.attach().map_err(ctx("attaching iter/udp"))?;
        let mut collector = Collector {
            skel,
            _links: links,
            udp_links: Vec::new(),
            tcp_iter,
            udp_iter,
            opts: opts.clone(),
            buf: Vec::with_capacity(64 * 1024),
        };
        collector.set_udp_hooks(opts.udp_hooks)?;
        Ok(collector)
    }

    /// Attaches (`on`) or detaches the per-datagram UDP hooks; nothing to do if they already
    /// are. The UDP map and its counters stay: a socket's totals resume when they come back.
    pub fn set_udp_hooks(&mut self, on: bool) -> Result<(), CollectError> {
        if !on {
            self.udp_links.clear();
            return Ok(());
        }
        if !self.udp_links.is_empty() {
            return Ok(());
        }
        let p = &self.skel.progs;
        let mut links = Vec::with_capacity(3);
        for (prog, what) in [
            (&p.on_send_length, "attaching tp_btf/sock_send_length"),
            (&p.on_recv_length, "attaching tp_btf/sock_recv_length"),
            (&p.on_udp_fail, "attaching tp_btf/udp_fail_queue_rcv_skb"),
        ] {
            links.push(prog.attach().map_err(ctx(what))?);
        }
        self.udp_links = links;
        Ok(())
    }

    /// Whether the UDP hooks are attached.
    pub fn udp_hooks(&self) -> bool {
        !self.udp_links.is_empty()
    }

    /// The ring buffer of event records.
    pub fn events(&self) -> &dyn MapCore {
        &self.skel.maps.events
    }

    fn run_iter(
        link: &Link,
        buf: &mut Vec<u8>,
        size: usize,
        what: &'static str,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), CollectError> {
        let mut iter = Iter::new(link).map_err(ctx("creating a socket iterator"))?;
        buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match iter.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    // read() may end inside a record: keep the tail for the next chunk.
                    buf.extend_from_slice(&chunk[..n]);
                    let whole = buf.len() - buf.len() % size;
                    for rec in buf[..whole].chunks_exact(size) {
                        each(rec);
                    }
                    buf.drain(..whole);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.raw_os_error() == Some(libc::EAGAIN) =>
                {
                    continue
                }
                Err(e) => return Err(CollectError::Iter(what, e)),
            }
        }
        Ok(())
    }

    /// Runs the tcp iterator (listeners) once.
    pub fn tcp_pass(&mut self, each: impl FnMut(&[u8])) -> Result<(), CollectError> {
        Self::run_iter(
            &self.tcp_iter,
            &mut self.buf,
            decode::LISTENER_RECORD_SIZE,
            "tcp",
            each,
        )
    }

    /// Runs the udp iterator once.
    pub fn udp_pass(&mut self, each: impl FnMut(&[u8])) -> Result<(), CollectError> {
        Self::run_iter(
            &self.udp_iter,
            &mut self.buf,
            decode::UDP_RECORD_SIZE,
            "udp",
            each,
        )
    }

    /// Every entry of the UDP socket map, by cookie.
    pub fn udp_counters(&self) -> HashMap<u64, UdpCounters> {
        let map = &self.skel.maps.udp_socks;
        let mut out = HashMap::new();
        for key in map.keys() {
            let Some(raw) = key.get(..8) else { continue };
            let mut k = [0u8; 8];
            k.copy_from_slice(raw);
            if let Ok(Some(v)) = map.lookup(&key, MapFlags::ANY) {
                if let Some(c) = decode::decode_udp_counters(&v) {
                    out.insert(u64::from_ne_bytes(k), c);
                }
            }
        }
        out
    }

    /// Every entry of the listener map, as listeners (see [`decode::decode_listen_entry`]).
    pub fn listen_entries(&self) -> Vec<decode::Listener> {
        let map = &self.skel.maps.listeners;
        map.keys()
            .filter_map(|key| {
                let v = map.lookup(&key, MapFlags::ANY).ok().flatten()?;
                decode::decode_listen_entry(&key, &v)
            })
            .collect()
    }

    /// Deletes the UDP socket map entries of closed sockets.
    pub fn forget_udp(&self, cookies: &[u64]) {
        for c in cookies {
            // Already gone (e.g. a race with the kernel side) is fine.
            let _ = self.skel.maps.udp_socks.delete(&c.to_ne_bytes());
        }
    }

    /// Loss counters of `gg_stats`, with the program runs the kernel skipped counted as lost.
    pub fn loss(&self) -> LossCounters {
        let mut c = bpf::read_loss_counters(&self.skel.maps.gg_stats);
        let p = &self.skel.progs;
        let mut fds = vec![
            p.on_state.as_fd(),
            p.on_retransmit_synack.as_fd(),
            if self.opts.retransmit_err {
                p.on_retransmit_skb_err.as_fd()
            } else {
                p.on_retransmit_skb.as_fd()
            },
            p.on_send_length.as_fd(),
            p.on_recv_length.as_fd(),
            p.on_udp_fail.as_fd(),
        ];
        if self.opts.conn_range.is_some() {
            fds.push(p.on_consume.as_fd());
        }
        if self.opts.drop_reasons {
            fds.push(p.on_kfree_skb.as_fd());
        }
        c.lost = c.lost.saturating_add(bpf::recursion_misses(fds));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_symbol_range() {
        let text = "ffffffff81000000 T _stext\nffffffff81200000 T tcp_rcv_state_process\nffffffff81200400 t tcp_foo\nffffffff81200800 T tcp_rcv_state_process_x [mod]\n";
        assert_eq!(
            symbol_range(text, "tcp_rcv_state_process"),
            Some((0xffffffff81200000, 0xffffffff81200400))
        );
        let hidden = "0000000000000000 T tcp_rcv_state_process\n0000000000000000 T x\n";
        assert_eq!(symbol_range(hidden, "tcp_rcv_state_process"), None);
    }
}
