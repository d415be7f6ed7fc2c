//! The kernel side: loads `tcp.bpf.c`, attaches it, and runs the tcp iterator.

use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::PathBuf;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Iter, Link, MapCore, OpenObject};
use probe_sdk::bpf::{self, LossCounters};

use crate::decode::LIVE_RECORD_SIZE;
use crate::skel::{TcpSkel, TcpSkelBuilder};

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
    /// Reading the socket iterator failed.
    #[error("reading the tcp socket iterator: {0}")]
    Iter(#[source] io::Error),
}

fn ctx(what: &'static str) -> impl FnOnce(libbpf_rs::Error) -> CollectError {
    move |source| CollectError::Libbpf { what, source }
}

/// How to configure the BPF side.
#[derive(Debug, Clone)]
pub struct Options {
    /// Load the per-segment `tcp_probe` program (zero-window counts; the kernel has the hook).
    /// It is attached only while the windows table is on: [`Collector::set_zero_window`].
    pub zero_window: bool,
    /// Custom BTF file (`-b`).
    pub btf_path: Option<PathBuf>,
    /// Optional hooks the kernel has (each is loaded and attached only then).
    pub optional: Optional,
    /// Size of the ring buffer, bytes (a power of two).
    pub ring_bytes: u32,
}

/// The optional abnormal-event hooks: which the kernel has (as options) or which are attached
/// (from [`Collector::attached`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Optional {
    /// `tp_btf/kfree_skb` (with the `rx_sk` argument).
    pub kfree_skb: bool,
    /// `tp_btf/sock_exceed_buf_limit`.
    pub exceed_buf: bool,
    /// `tp_btf/inet_sk_error_report`.
    pub error_report: bool,
    /// `tp_btf/sock_send_length`.
    pub send_length: bool,
}

/// The loaded and attached BPF object.
pub struct Collector<'obj> {
    skel: TcpSkel<'obj>,
    _links: Vec<Link>,
    iter_link: Link,
    /// The `tcp_probe` program is loaded.
    zero_window_loaded: bool,
    /// Its link while attached (dropping it detaches).
    zero_window_link: Option<Link>,
    /// Optional hooks attached.
    attached: Optional,
    buf: Vec<u8>,
}

impl<'obj> Collector<'obj> {
    /// Opens, loads and attaches everything.
    pub fn start(
        object: &'obj mut MaybeUninit<OpenObject>,
        opts: &Options,
    ) -> Result<Collector<'obj>, CollectError> {
        let builder = TcpSkelBuilder {
            obj_builder: bpf::object_builder(opts.btf_path.as_deref())?,
        };
        let mut open = builder
            .open(object)
            .map_err(ctx("opening the BPF object"))?;
        open.progs.on_tcp_probe.set_autoload(opts.zero_window);
        let o = opts.optional;
        open.progs.on_kfree_skb.set_autoload(o.kfree_skb);
        open.progs.on_exceed_buf.set_autoload(o.exceed_buf);
        open.progs.on_error_report.set_autoload(o.error_report);
        open.progs.on_send_length.set_autoload(o.send_length);
        open.maps
            .events
            .set_max_entries(opts.ring_bytes)
            .map_err(ctx("sizing the ring buffer"))?;
        let skel = open.load().map_err(ctx("loading the BPF programs"))?;

        let mut links = Vec::new();
        for (prog, what) in [
            (&skel.progs.on_state, "attaching tp_btf/inet_sock_set_state"),
            (&skel.progs.on_send_reset, "attaching tp_btf/tcp_send_reset"),
            (
                &skel.progs.on_receive_reset,
                "attaching tp_btf/tcp_receive_reset",
            ),
        ] {
            links.push(prog.attach().map_err(ctx(what))?);
        }
        let mut attached = Optional::default();
        for (on, prog, flag, what) in [
            (
                o.kfree_skb,
                &skel.progs.on_kfree_skb,
                &mut attached.kfree_skb,
                "skb:kfree_skb",
            ),
            (
                o.exceed_buf,
                &skel.progs.on_exceed_buf,
                &mut attached.exceed_buf,
                "sock:sock_exceed_buf_limit",
            ),
            (
                o.error_report,
                &skel.progs.on_error_report,
                &mut attached.error_report,
                "sock:inet_sk_error_report",
            ),
            (
                o.send_length,
                &skel.progs.on_send_length,
                &mut attached.send_length,
                "sock:sock_send_length",
            ),
        ] {
            if !on {
                continue;
            }
            match prog.attach() {
                Ok(l) => {
                    links.push(l);
                    *flag = true;
                }
                Err(e) => probe_sdk::warn!("attaching {what} failed ({e}): its fields are absent"),
            }
        }
        let iter_link = skel
            .progs
            .dump_tcp
            .attach()
            .map_err(ctx("attaching iter/tcp"))?;
        Ok(Collector {
            skel,
            _links: links,
            iter_link,
            zero_window_loaded: opts.zero_window,
            zero_window_link: None,
            attached,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Attaches (`on`) or detaches the per-segment zero-window hook, which costs a program run
    /// per received segment and so runs only while the windows table is written. Returns
    /// whether it is attached now (never when it was not loaded).
    pub fn set_zero_window(&mut self, on: bool) -> Result<bool, CollectError> {
        if !on {
            self.zero_window_link = None;
        } else if self.zero_window_loaded && self.zero_window_link.is_none() {
            self.zero_window_link = Some(
                self.skel
                    .progs
                    .on_tcp_probe
                    .attach()
                    .map_err(ctx("attaching tp_btf/tcp_probe"))?,
            );
        }
        Ok(self.zero_window_link.is_some())
    }

    /// The optional hooks attached.
    pub fn attached(&self) -> Optional {
        self.attached
    }

    /// The ring buffer of state-change and event records.
    pub fn events(&self) -> &dyn MapCore {
        &self.skel.maps.events
    }

    /// Runs the tcp iterator once, calling `each` with every live-socket record.
    pub fn pass(&mut self, mut each: impl FnMut(&[u8])) -> Result<(), CollectError> {
        let mut iter = Iter::new(&self.iter_link).map_err(ctx("creating the tcp iterator"))?;
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match iter.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    // read() may end inside a record: keep the tail for the next chunk.
                    self.buf.extend_from_slice(&chunk[..n]);
                    let whole = self.buf.len() - self.buf.len() % LIVE_RECORD_SIZE;
                    for rec in self.buf[..whole].chunks_exact(LIVE_RECORD_SIZE) {
                        each(rec);
                    }
                    self.buf.drain(..whole);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.raw_os_error() == Some(libc::EAGAIN) =>
                {
                    continue
                }
                Err(e) => return Err(CollectError::Iter(e)),
            }
        }
        Ok(())
    }

    /// Loss counters of `gg_stats`, with the program invocations the kernel skipped because
    /// the program was already running on that CPU counted as lost.
    pub fn loss(&self) -> LossCounters {
        let mut c = bpf::read_loss_counters(&self.skel.maps.gg_stats);
        let p = &self.skel.progs;
        let mut fds = vec![
            p.on_state.as_fd(),
            p.on_send_reset.as_fd(),
            p.on_receive_reset.as_fd(),
        ];
        if self.zero_window_loaded {
            fds.push(p.on_tcp_probe.as_fd());
        }
        let a = self.attached;
        for (on, prog) in [
            (a.kfree_skb, &p.on_kfree_skb),
            (a.exceed_buf, &p.on_exceed_buf),
            (a.error_report, &p.on_error_report),
            (a.send_length, &p.on_send_length),
        ] {
            if on {
                fds.push(prog.as_fd());
            }
        }
        c.lost = c.lost.saturating_add(bpf::recursion_misses(fds));
        c
    }
}
