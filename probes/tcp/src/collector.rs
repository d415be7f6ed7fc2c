//! The kernel side: loads `tcp.bpf.c`, attaches it, walks live sockets once per period and
//! drains the per-key aggregates.

use std::collections::HashMap;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Iter, Link, MapCore, MapFlags, OpenObject};
use probe_sdk::bpf::{self, LossCounters};

use crate::conn_key::ConnKey;
use crate::conn_table::PeriodDelta;
use crate::owners::Owner;
use crate::skel::types::{tcpp_agg, tcpp_key};
use crate::skel::{TcpSkel, TcpSkelBuilder};

/// BPF programs that reported an aggregate just before a flip may still be adding to the old
/// map; they run for microseconds, so waiting this long before draining covers them.
const FLIP_GRACE: Duration = Duration::from_millis(2);

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
    /// Keep client ports in keys (`-c 1`); otherwise they are 0.
    pub report_cport: bool,
    /// Capacity of each aggregate map (keys per period).
    pub max_keys: u32,
    /// Attach the per-segment `tcp_probe` hook (zero-window counts).
    pub zero_window: bool,
    /// Custom BTF file (`-b`).
    pub btf_path: Option<PathBuf>,
}

/// The loaded and attached BPF object.
pub struct Collector<'obj> {
    skel: TcpSkel<'obj>,
    _links: Vec<Link>,
    iter_link: Link,
    slot: u32,
}

impl<'obj> Collector<'obj> {
    /// Opens, configures, loads and attaches everything.
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
        if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
            rodata.cfg_report_cport = u8::from(opts.report_cport);
        }
        for map in [&mut open.maps.agg0, &mut open.maps.agg1] {
            map.set_max_entries(opts.max_keys)
                .map_err(ctx("sizing the aggregate maps"))?;
        }
        open.progs.on_tcp_probe.set_autoload(opts.zero_window);
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
        if opts.zero_window {
            links.push(
                skel.progs
                    .on_tcp_probe
                    .attach()
                    .map_err(ctx("attaching tp_btf/tcp_probe"))?,
            );
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
            slot: 0,
        })
    }

    /// Tells the iterator who owns sockets older than the probe (by socket inode); returns how
    /// many entries were stored (the map holds at most 16384).
    pub fn seed_owners(&self, owners: &HashMap<u64, Owner>) -> usize {
        let mut stored = 0;
        for (ino, owner) in owners {
            let mut value = Vec::with_capacity(20);
            value.extend_from_slice(&owner.tgid.to_ne_bytes());
            let mut comm = [0u8; 16];
            let name = owner.comm.as_bytes();
            let n = name.len().min(15);
            comm[..n].copy_from_slice(&name[..n]);
            value.extend_from_slice(&comm);
            if self
                .skel
                .maps
                .owners
                .update(&ino.to_ne_bytes(), &value, MapFlags::ANY)
                .is_ok()
            {
                stored += 1;
            }
        }
        stored
    }

    /// Empties the owner map once the first pass has used it.
    pub fn clear_owners(&self) {
        let map = &self.skel.maps.owners;
        let keys: Vec<Vec<u8>> = map.keys().collect();
        for k in keys {
            // A key that is already gone is fine.
            let _ = map.delete(&k);
        }
    }

    /// Walks every live TCP socket once, adding what changed into the active aggregate map.
    pub fn pass(&self) -> Result<(), CollectError> {
        let mut iter = Iter::new(&self.iter_link).map_err(ctx("creating the tcp iterator"))?;
        // The program writes nothing; read() runs it over all sockets and returns 0 at the end.
        let mut buf = [0u8; 256];
        loop {
            match iter.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.raw_os_error() == Some(libc::EAGAIN) =>
                {
                    continue
                }
                Err(e) => return Err(CollectError::Iter(e)),
            }
        }
    }

    /// Points the BPF side at the other aggregate map and drains the one it used so far.
    pub fn flip_and_drain(&mut self) -> Vec<(ConnKey, PeriodDelta)> {
        let drained_slot = self.slot;
        self.slot ^= 1;
        if let Some(bss) = self.skel.maps.bss_data.as_deref_mut() {
            // SAFETY: a valid, aligned field of the mmap'ed .bss; volatile so the store is not
            // elided or reordered against the drain below.
            unsafe { std::ptr::write_volatile(&mut bss.agg_slot, self.slot) };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(FLIP_GRACE);
        let map = if drained_slot == 0 {
            &self.skel.maps.agg0
        } else {
            &self.skel.maps.agg1
        };
        drain(map)
    }

    /// The loss counters of `gg_stats`.
    pub fn loss(&self) -> LossCounters {
        bpf::read_loss_counters(&self.skel.maps.gg_stats)
    }
}

fn drain(map: &dyn MapCore) -> Vec<(ConnKey, PeriodDelta)> {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        // Deleting while looking up means a concurrent late add lands either here or in the
        // next drain of this map, never in both.
        let Ok(Some(v)) = map.lookup_and_delete(&k) else {
            continue;
        };
        let mut raw_key = tcpp_key::default();
        let mut raw_agg = tcpp_agg::default();
        if plain::copy_from_bytes(&mut raw_key, &k).is_err()
            || plain::copy_from_bytes(&mut raw_agg, &v).is_err()
        {
            continue;
        }
        if let Some(key) = ConnKey::from_raw(&raw_key) {
            out.push((key, PeriodDelta::from_raw(&raw_agg)));
        }
    }
    out
}
