//! Loading, attaching and reading the `io.bpf.c` programs and maps.

use std::mem::MaybeUninit;
use std::path::Path;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use probe_sdk::bpf::{self, BpfError, Hook, LossCounters};

use crate::skel::io::{types, IoSkel, IoSkelBuilder};
use crate::stats::{decode, DiskId, DiskSample, DiskStats, STAGES};

/// Raw tracepoints the probe attaches to.
pub const RAW_TRACEPOINTS: [&str; 3] = ["block_rq_insert", "block_rq_issue", "block_rq_complete"];

/// The hooks that must exist for the probe to run.
pub fn required_hooks() -> Vec<Hook> {
    RAW_TRACEPOINTS
        .iter()
        .map(|name| Hook::raw_tracepoint(name))
        .collect()
}

/// Why loading or reading the BPF side failed.
#[derive(Debug, thiserror::Error)]
pub enum IoBpfError {
    /// BTF selection or another platform step failed.
    #[error(transparent)]
    Platform(#[from] BpfError),
    /// A libbpf step failed.
    #[error("{step}: {source}")]
    Libbpf {
        /// What was being done (open, load, attach, read map …).
        step: &'static str,
        /// The libbpf error.
        source: libbpf_rs::Error,
    },
    /// A map value does not have the size of its skeleton type (build/kernel mismatch).
    #[error("map {0}: value size does not match the skeleton type")]
    Layout(&'static str),
}

fn step(step: &'static str) -> impl FnOnce(libbpf_rs::Error) -> IoBpfError {
    move |source| IoBpfError::Libbpf { step, source }
}

/// The loaded and attached io programs.
pub struct IoBpf<'obj> {
    skel: IoSkel<'obj>,
}

impl std::fmt::Debug for IoBpf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBpf").finish_non_exhaustive()
    }
}

impl<'obj> IoBpf<'obj> {
    /// Opens (with the custom BTF, if any, see [`bpf::btf_path`]), loads and attaches the
    /// programs. `storage` holds the libbpf object for as long as the returned value lives.
    pub fn load_and_attach(
        storage: &'obj mut MaybeUninit<OpenObject>,
        custom_btf: Option<&Path>,
    ) -> Result<IoBpf<'obj>, IoBpfError> {
        let builder = IoSkelBuilder {
            obj_builder: bpf::object_builder(custom_btf)?,
        };
        let open = builder.open(storage).map_err(step("open BPF object"))?;
        let mut skel = open.load().map_err(step("load BPF programs"))?;
        skel.attach().map_err(step("attach BPF programs"))?;
        Ok(IoBpf { skel })
    }

    /// Flips the period parity and returns the previous one (whose maxima are now complete).
    fn flip_parity(&mut self) -> Result<u32, IoBpfError> {
        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref_mut()
            .ok_or(IoBpfError::Layout("bss"))?;
        let old = bss.period_parity & 1;
        bss.period_parity = old ^ 1;
        Ok(old)
    }

    /// Ends a period: returns every disk's cumulative statistics with the maximum latencies of
    /// the period that just ended.
    pub fn collect(&mut self) -> Result<Vec<DiskSample>, IoBpfError> {
        let parity = self.flip_parity()?;
        let mut samples = Vec::new();
        let stats_map = &self.skel.maps.io_stats;
        let keys: Vec<Vec<u8>> = stats_map.keys().collect();
        for key in keys {
            let Some(dev) = key
                .get(..4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            else {
                continue;
            };
            // A key can only vanish if something deleted it; skip it then.
            let Some(per_cpu) = stats_map
                .lookup_percpu(&key, MapFlags::ANY)
                .map_err(step("read io_stats"))?
            else {
                continue;
            };
            let mut stats = DiskStats::default();
            for v in &per_cpu {
                let v: types::io_disk_stats = decode(v).ok_or(IoBpfError::Layout("io_stats"))?;
                stats.add_cpu(&v);
            }
            samples.push(DiskSample {
                id: DiskId::from_kernel_dev(dev),
                stats,
                period_max_ns: [0; 3],
            });
        }
        self.take_maxima(parity, &mut samples)?;
        samples.sort_by_key(|s| s.id);
        Ok(samples)
    }

    /// Reads and deletes the `io_maxes` entries of `parity`, folding them into `samples`.
    fn take_maxima(&self, parity: u32, samples: &mut [DiskSample]) -> Result<(), IoBpfError> {
        let map = &self.skel.maps.io_maxes;
        let keys: Vec<Vec<u8>> = map.keys().collect();
        for raw_key in keys {
            let key: types::io_max_key = decode(&raw_key).ok_or(IoBpfError::Layout("io_maxes"))?;
            if key.parity != parity {
                continue;
            }
            let per_cpu = map
                .lookup_percpu(&raw_key, MapFlags::ANY)
                .map_err(step("read io_maxes"))?
                .unwrap_or_default();
            // Deleting lets the map hold only two periods' worth of keys; an update racing with
            // the delete is counted in the next period of the same parity.
            let _ = map.delete(&raw_key);
            let id = DiskId::from_kernel_dev(key.dev);
            let Some(sample) = samples.iter_mut().find(|s| s.id == id) else {
                continue;
            };
            for v in &per_cpu {
                let v: types::io_max = decode(v).ok_or(IoBpfError::Layout("io_maxes"))?;
                for stage in STAGES {
                    let i = stage as usize;
                    sample.period_max_ns[i] = sample.period_max_ns[i].max(v.max_ns[i]);
                }
            }
        }
        Ok(())
    }

    /// The `gg_stats` loss counters.
    pub fn loss_counters(&self) -> LossCounters {
        bpf::read_loss_counters(&self.skel.maps.gg_stats)
    }
}
