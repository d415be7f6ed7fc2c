//! Loading, attaching and reading the `io.bpf.c` programs and maps.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::Path;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use probe_sdk::bpf::{self, BpfError, Hook, LossCounters};

use crate::decode;
use crate::report::PageCache;
use crate::skel::{IoSkel, IoSkelBuilder};
use crate::stats::{DiskId, DiskSample};

/// Raw tracepoints the probe attaches to.
pub const RAW_TRACEPOINTS: [&str; 3] = ["block_rq_insert", "block_rq_issue", "block_rq_complete"];

/// The tracepoints of the `page_cache` sub-probe (tp_btf programs, attached only while it is
/// on; one the kernel lacks is left out and named once).
pub const PAGECACHE_TRACEPOINTS: [&str; 6] = [
    "mm_filemap_add_to_page_cache",
    "writeback_dirty_folio",
    "block_dirty_buffer",
    "mm_filemap_get_pages",
    "mm_filemap_map_pages",
    "mm_filemap_fault",
];

/// The page-cache programs of a skeleton's program set, in [`PAGECACHE_TRACEPOINTS`] order
/// (`mut` for the open skeleton's).
macro_rules! pc_progs {
    (mut $p:expr) => {
        [
            &mut $p.io_pc_load,
            &mut $p.io_pc_page_dirty,
            &mut $p.io_pc_buffer_dirty,
            &mut $p.io_pc_get_pages,
            &mut $p.io_pc_map_pages,
            &mut $p.io_pc_fault,
        ]
    };
    ($p:expr) => {
        [
            &$p.io_pc_load,
            &$p.io_pc_page_dirty,
            &$p.io_pc_buffer_dirty,
            &$p.io_pc_get_pages,
            &$p.io_pc_map_pages,
            &$p.io_pc_fault,
        ]
    };
}

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

/// A device (`dev_t`) and its per-CPU values, as a map holds them.
type PerCpuEntry = (u32, Vec<Vec<u8>>);

/// Every entry of a per-CPU map keyed by a device (`dev_t`): its per-CPU values. Keys are
/// never deleted, but one that vanished between listing and reading is skipped, not an error.
fn per_device(map: &dyn MapCore, what: &'static str) -> Result<Vec<PerCpuEntry>, IoBpfError> {
    let mut out = Vec::new();
    for key in map.keys() {
        let Some(dev) = decode::disk_key(&key) else {
            continue;
        };
        if let Some(per_cpu) = map.lookup_percpu(&key, MapFlags::ANY).map_err(step(what))? {
            out.push((dev, per_cpu));
        }
    }
    Ok(out)
}

/// Which program handles `block_rq_complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionHook {
    /// `tp_btf/block_rq_complete`: reads the request with plain loads (cheapest; kernel 5.5+).
    TpBtf,
    /// `raw_tp/block_rq_complete`: reads through `bpf_probe_read_kernel` (any BTF kernel).
    RawTp,
}

impl CompletionHook {
    /// Name as in the program's section (`tp_btf`, `raw_tp`).
    pub fn name(self) -> &'static str {
        match self {
            CompletionHook::TpBtf => "tp_btf",
            CompletionHook::RawTp => "raw_tp",
        }
    }
}

/// The loaded and attached io programs.
pub struct IoBpf<'obj> {
    skel: IoSkel<'obj>,
    completion: CompletionHook,
    /// Which of [`PAGECACHE_TRACEPOINTS`] the kernel has (their programs were loaded).
    pc_available: [bool; 6],
    /// The page-cache programs' links while the sub-probe is on.
    pc_links: Vec<libbpf_rs::Link>,
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
        completion: CompletionHook,
    ) -> Result<IoBpf<'obj>, IoBpfError> {
        let builder = IoSkelBuilder {
            obj_builder: bpf::object_builder(custom_btf)?,
        };
        let mut open = builder.open(storage).map_err(step("open BPF object"))?;
        open.progs
            .io_rq_complete
            .set_autoload(completion == CompletionHook::RawTp);
        open.progs
            .io_rq_complete_btf
            .set_autoload(completion == CompletionHook::TpBtf);
        let pc_available = PAGECACHE_TRACEPOINTS.map(|tp| Hook::raw_tracepoint(tp).is_available());
        for (prog, available) in pc_progs!(mut open.progs).into_iter().zip(pc_available) {
            prog.set_autoload(available);
            prog.set_autoattach(false);
        }
        let mut skel = open.load().map_err(step("load BPF programs"))?;
        skel.attach().map_err(step("attach BPF programs"))?;
        Ok(IoBpf {
            skel,
            completion,
            pc_available,
            pc_links: Vec::new(),
        })
    }

    /// The page-cache tracepoints this kernel lacks.
    pub fn pagecache_missing(&self) -> Vec<&'static str> {
        PAGECACHE_TRACEPOINTS
            .iter()
            .zip(self.pc_available)
            .filter(|(_, a)| !a)
            .map(|(tp, _)| *tp)
            .collect()
    }

    /// Attaches (`on`) or detaches the page-cache programs. Counts go on from where they were
    /// (they are cumulative, and only move while attached).
    pub fn set_page_cache(&mut self, on: bool) -> Result<(), IoBpfError> {
        if !on {
            self.pc_links.clear();
            return Ok(());
        }
        if !self.pc_links.is_empty() {
            return Ok(());
        }
        let mut links = Vec::new();
        for (prog, available) in pc_progs!(self.skel.progs)
            .into_iter()
            .zip(self.pc_available)
        {
            if available {
                links.push(prog.attach().map_err(step("attach page-cache programs"))?);
            }
        }
        self.pc_links = links;
        Ok(())
    }

    /// The page-cache counts per block device (kernel `dev_t` of the file system's device or
    /// of the buffer's), summed over CPUs, cumulative.
    pub fn collect_pagecache(&self) -> Result<Vec<(u32, PageCache)>, IoBpfError> {
        let mut out = Vec::new();
        for (dev, per_cpu) in per_device(&self.skel.maps.io_pc, "read io_pc")? {
            let mut sum = PageCache::default();
            for v in &per_cpu {
                let v = decode::pc_stats(v).ok_or(IoBpfError::Layout("io_pc"))?;
                sum.add(&PageCache {
                    access: v.access,
                    buffer_dirty: v.buffer_dirty,
                    load: v.load,
                    page_dirty: v.page_dirty,
                });
            }
            out.push((dev, sum));
        }
        Ok(out)
    }

    /// Starts the next period in BPF and returns the number of the one that ended.
    fn next_epoch(&mut self) -> Result<u32, IoBpfError> {
        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref_mut()
            .ok_or(IoBpfError::Layout("bss"))?;
        let ended = bss.period_epoch;
        bss.period_epoch = ended.wrapping_add(1);
        Ok(ended)
    }

    /// Ends a period: returns every disk's cumulative statistics with the maximum latencies of
    /// the period that just ended, sorted by disk.
    pub fn collect(&mut self) -> Result<Vec<DiskSample>, IoBpfError> {
        let ended = self.next_epoch()?;
        let mut samples = Vec::new();
        for (dev, per_cpu) in per_device(&self.skel.maps.io_stats, "read io_stats")? {
            let values = per_cpu
                .iter()
                .map(|v| decode::disk_stats(v).ok_or(IoBpfError::Layout("io_stats")))
                .collect::<Result<Vec<_>, _>>()?;
            samples.push(DiskSample::from_cpus(
                DiskId::from_kernel_dev(dev),
                &values,
                ended,
            ));
        }
        samples.sort_by_key(|s| s.id);
        Ok(samples)
    }

    /// Which completion program is attached.
    pub fn completion(&self) -> CompletionHook {
        self.completion
    }

    /// The `gg_stats` counters; `lost` also counts the tracepoint calls the kernel skipped
    /// because the program was already running on that CPU (completions nested in an
    /// interrupt), which are requests not accounted.
    pub fn loss_counters(&self) -> LossCounters {
        let progs = &self.skel.progs;
        let complete = match self.completion {
            CompletionHook::TpBtf => progs.io_rq_complete_btf.as_fd(),
            CompletionHook::RawTp => progs.io_rq_complete.as_fd(),
        };
        let mut fds = vec![
            progs.io_rq_insert.as_fd(),
            progs.io_rq_issue.as_fd(),
            complete,
        ];
        for (prog, available) in pc_progs!(progs).into_iter().zip(self.pc_available) {
            if available {
                fds.push(prog.as_fd());
            }
        }
        let misses = bpf::recursion_misses(fds);
        let mut loss = bpf::read_loss_counters(&self.skel.maps.gg_stats);
        loss.lost = loss.lost.wrapping_add(misses);
        loss
    }
}
