//! Loading, attaching and reading the `sli.bpf.c` programs and maps.
//!
//! Every program whose hook exists is loaded at start; which are attached follows the `cpu`,
//! `mem` and `io` sub-probes ([`Groups`]) and changes at run time without a reload. A program
//! attached again after a detach bumps the hook generation (`gen` in `.bss`), so a timestamp
//! taken before the gap is dropped instead of measured across it.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::Path;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, OpenProgramMut, ProgramMut};
use probe_sdk::bpf::{self, BpfError, Hook, LossCounters};

use crate::cgroups::Mode;
use crate::decode;
use crate::skel::{OpenSliProgs, SliProgs, SliSkel, SliSkelBuilder};
use crate::stats::{GroupSample, Source, LAT_BOUNDS_NS, LAT_SLOTS};

/// Why loading or reading the BPF side failed.
#[derive(Debug, thiserror::Error)]
pub enum SliBpfError {
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

fn step(step: &'static str) -> impl FnOnce(libbpf_rs::Error) -> SliBpfError {
    move |source| SliBpfError::Libbpf { step, source }
}

/// A group of programs, switched by one sub-probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Scheduler programs (sub-probe `cpu`).
    Cpu,
    /// Reclaim and compaction programs (sub-probe `mem`).
    Mem,
    /// Bio programs (sub-probe `io`).
    Io,
}

/// Which groups are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Groups {
    /// [`Group::Cpu`]
    pub cpu: bool,
    /// [`Group::Mem`]
    pub mem: bool,
    /// [`Group::Io`]
    pub io: bool,
}

impl Groups {
    /// Whether `g` is on.
    pub fn has(self, g: Group) -> bool {
        match g {
            Group::Cpu => self.cpu,
            Group::Mem => self.mem,
            Group::Io => self.io,
        }
    }
}

/// One program of `sli.bpf.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prog {
    /// `sched_wakeup`
    Wakeup,
    /// `sched_wakeup_new`
    WakeupNew,
    /// `sched_switch`
    Switch,
    /// `mm_vmscan_direct_reclaim_begin`
    DirectReclaimBegin,
    /// `mm_vmscan_direct_reclaim_end`
    DirectReclaimEnd,
    /// `mm_vmscan_memcg_reclaim_begin`
    MemcgReclaimBegin,
    /// `mm_vmscan_memcg_reclaim_end`
    MemcgReclaimEnd,
    /// `mm_compaction_begin`
    CompactionBegin,
    /// `mm_compaction_end`
    CompactionEnd,
    /// `block_bio_queue`
    BioQueue,
    /// `block_bio_complete` (bio-based devices)
    BioComplete,
    /// `block_rq_complete` (request-based devices: their bios complete with the request)
    RqComplete,
}

/// Number of programs.
const PROGS: usize = 12;

impl Prog {
    /// Every program, in attach order.
    pub const ALL: [Prog; PROGS] = [
        Prog::Wakeup,
        Prog::WakeupNew,
        Prog::Switch,
        Prog::DirectReclaimBegin,
        Prog::DirectReclaimEnd,
        Prog::MemcgReclaimBegin,
        Prog::MemcgReclaimEnd,
        Prog::CompactionBegin,
        Prog::CompactionEnd,
        Prog::BioQueue,
        Prog::BioComplete,
        Prog::RqComplete,
    ];

    /// The raw tracepoint the program attaches to (as `tp_btf`).
    pub fn hook(self) -> &'static str {
        match self {
            Prog::Wakeup => "sched_wakeup",
            Prog::WakeupNew => "sched_wakeup_new",
            Prog::Switch => "sched_switch",
            Prog::DirectReclaimBegin => "mm_vmscan_direct_reclaim_begin",
            Prog::DirectReclaimEnd => "mm_vmscan_direct_reclaim_end",
            Prog::MemcgReclaimBegin => "mm_vmscan_memcg_reclaim_begin",
            Prog::MemcgReclaimEnd => "mm_vmscan_memcg_reclaim_end",
            Prog::CompactionBegin => "mm_compaction_begin",
            Prog::CompactionEnd => "mm_compaction_end",
            Prog::BioQueue => "block_bio_queue",
            Prog::BioComplete => "block_bio_complete",
            Prog::RqComplete => "block_rq_complete",
        }
    }

    /// The group the program belongs to.
    pub fn group(self) -> Group {
        match self {
            Prog::Wakeup | Prog::WakeupNew | Prog::Switch => Group::Cpu,
            Prog::BioQueue | Prog::BioComplete | Prog::RqComplete => Group::Io,
            _ => Group::Mem,
        }
    }

    /// The programs of which one must be loaded with this one (the other end of its
    /// measurement): a begin needs its end, a bio queue one of the two completions.
    fn partners(self) -> &'static [Prog] {
        match self {
            Prog::DirectReclaimBegin => &[Prog::DirectReclaimEnd],
            Prog::DirectReclaimEnd => &[Prog::DirectReclaimBegin],
            Prog::MemcgReclaimBegin => &[Prog::MemcgReclaimEnd],
            Prog::MemcgReclaimEnd => &[Prog::MemcgReclaimBegin],
            Prog::CompactionBegin => &[Prog::CompactionEnd],
            Prog::CompactionEnd => &[Prog::CompactionBegin],
            Prog::BioQueue => &[Prog::BioComplete, Prog::RqComplete],
            Prog::BioComplete | Prog::RqComplete => &[Prog::BioQueue],
            Prog::Wakeup | Prog::WakeupNew | Prog::Switch => &[],
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn of<'a, 'obj>(self, p: &'a SliProgs<'obj>) -> &'a ProgramMut<'obj> {
        match self {
            Prog::Wakeup => &p.sli_wakeup,
            Prog::WakeupNew => &p.sli_wakeup_new,
            Prog::Switch => &p.sli_switch,
            Prog::DirectReclaimBegin => &p.sli_direct_reclaim_begin,
            Prog::DirectReclaimEnd => &p.sli_direct_reclaim_end,
            Prog::MemcgReclaimBegin => &p.sli_memcg_reclaim_begin,
            Prog::MemcgReclaimEnd => &p.sli_memcg_reclaim_end,
            Prog::CompactionBegin => &p.sli_compaction_begin,
            Prog::CompactionEnd => &p.sli_compaction_end,
            Prog::BioQueue => &p.sli_bio_queue,
            Prog::BioComplete => &p.sli_bio_complete,
            Prog::RqComplete => &p.sli_rq_complete,
        }
    }

    fn of_open<'a, 'obj>(self, p: &'a mut OpenSliProgs<'obj>) -> &'a mut OpenProgramMut<'obj> {
        match self {
            Prog::Wakeup => &mut p.sli_wakeup,
            Prog::WakeupNew => &mut p.sli_wakeup_new,
            Prog::Switch => &mut p.sli_switch,
            Prog::DirectReclaimBegin => &mut p.sli_direct_reclaim_begin,
            Prog::DirectReclaimEnd => &mut p.sli_direct_reclaim_end,
            Prog::MemcgReclaimBegin => &mut p.sli_memcg_reclaim_begin,
            Prog::MemcgReclaimEnd => &mut p.sli_memcg_reclaim_end,
            Prog::CompactionBegin => &mut p.sli_compaction_begin,
            Prog::CompactionEnd => &mut p.sli_compaction_end,
            Prog::BioQueue => &mut p.sli_bio_queue,
            Prog::BioComplete => &mut p.sli_bio_complete,
            Prog::RqComplete => &mut p.sli_rq_complete,
        }
    }
}

/// The hooks that must exist for the probe to run: the scheduler ones. The others are optional
/// (their fields are then empty).
pub fn required_hooks() -> Vec<Hook> {
    [Prog::Wakeup, Prog::WakeupNew, Prog::Switch]
        .into_iter()
        .map(|p| Hook::raw_tracepoint(p.hook()))
        .collect()
}

/// Which programs are loaded: those whose hook exists, begin/end programs only in pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded([bool; PROGS]);

impl Loaded {
    /// Decides from `exists(hook)`.
    pub fn new(exists: impl Fn(&str) -> bool) -> Loaded {
        let mut out = [false; PROGS];
        for p in Prog::ALL {
            let partners = p.partners();
            out[p.index()] = exists(p.hook())
                && (partners.is_empty() || partners.iter().any(|q| exists(q.hook())));
        }
        Loaded(out)
    }

    /// Whether `p` is loaded.
    pub fn has(&self, p: Prog) -> bool {
        self.0[p.index()]
    }

    /// The hooks of loaded programs (for the log).
    pub fn hooks(&self) -> Vec<&'static str> {
        Prog::ALL
            .into_iter()
            .filter(|p| self.has(*p))
            .map(Prog::hook)
            .collect()
    }

    /// The hooks whose program is not loaded.
    pub fn missing(&self) -> Vec<&'static str> {
        Prog::ALL
            .into_iter()
            .filter(|p| !self.has(*p))
            .map(Prog::hook)
            .collect()
    }

    /// Which measurements are available: reclaim needs a reclaim pair (direct or memcg),
    /// compaction its pair, bio the queue and a completion, the scheduler latencies the three
    /// scheduler programs.
    pub fn measures(&self) -> Measured {
        Measured {
            cpu: self.has(Prog::Wakeup) && self.has(Prog::WakeupNew) && self.has(Prog::Switch),
            reclaim: self.has(Prog::DirectReclaimBegin) || self.has(Prog::MemcgReclaimBegin),
            compact: self.has(Prog::CompactionBegin),
            bio: self.has(Prog::BioQueue),
        }
    }
}

/// What the loaded programs can measure; the others are reported as empty values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// Run delay, sleep, block and iowait.
    pub cpu: bool,
    /// Reclaim stalls.
    pub reclaim: bool,
    /// Compaction stalls.
    pub compact: bool,
    /// Bio latency.
    pub bio: bool,
}

impl Measured {
    /// Everything.
    pub const ALL: Measured = Measured {
        cpu: true,
        reclaim: true,
        compact: true,
        bio: true,
    };
}

/// The loaded programs, their links, and the maps.
pub struct SliBpf<'obj> {
    skel: SliSkel<'obj>,
    loaded: Loaded,
    links: [Option<Link>; PROGS],
    /// Whether programs were ever attached (a later attach starts a new generation).
    attached_before: bool,
}

impl std::fmt::Debug for SliBpf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliBpf")
            .field("loaded", &self.loaded)
            .field("attached", &self.attached_hooks())
            .finish_non_exhaustive()
    }
}

impl<'obj> SliBpf<'obj> {
    /// Opens (with the custom BTF, if any, see [`bpf::btf_path`]) and loads the programs
    /// `loaded` says, keyed by the cgroups of `mode`; nothing is attached yet
    /// ([`SliBpf::attach`]). `storage` holds the libbpf object for as long as the value lives.
    pub fn load(
        storage: &'obj mut MaybeUninit<OpenObject>,
        custom_btf: Option<&Path>,
        mode: Mode,
        loaded: Loaded,
    ) -> Result<SliBpf<'obj>, SliBpfError> {
        let builder = SliSkelBuilder {
            obj_builder: bpf::object_builder(custom_btf)?,
        };
        let mut open = builder.open(storage).map_err(step("open BPF object"))?;
        for p in Prog::ALL {
            p.of_open(&mut open.progs).set_autoload(loaded.has(p));
        }
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or(SliBpfError::Layout("rodata"))?;
        rodata.cgrp_mode = mode.bpf_value();
        let skel = open.load().map_err(step("load BPF programs"))?;
        Ok(SliBpf {
            skel,
            loaded,
            links: Default::default(),
            attached_before: false,
        })
    }

    /// Which programs are loaded.
    pub fn loaded(&self) -> Loaded {
        self.loaded
    }

    /// Attaches the loaded programs of the groups `groups` has on and detaches the others.
    pub fn attach(&mut self, groups: Groups) -> Result<(), SliBpfError> {
        for p in Prog::ALL {
            if !groups.has(p.group()) {
                self.links[p.index()] = None;
            }
        }
        let adds = Prog::ALL.into_iter().any(|p| {
            groups.has(p.group()) && self.loaded.has(p) && self.links[p.index()].is_none()
        });
        if adds && self.attached_before {
            let bss = self
                .skel
                .maps
                .bss_data
                .as_deref_mut()
                .ok_or(SliBpfError::Layout("bss"))?;
            bss.gen = bss.gen.wrapping_add(1);
        }
        for p in Prog::ALL {
            if groups.has(p.group()) && self.loaded.has(p) && self.links[p.index()].is_none() {
                let link = p
                    .of(&self.skel.progs)
                    .attach()
                    .map_err(step("attach BPF program"))?;
                self.links[p.index()] = Some(link);
                self.attached_before = true;
            }
        }
        Ok(())
    }

    /// The hooks attached now.
    pub fn attached_hooks(&self) -> Vec<&'static str> {
        Prog::ALL
            .into_iter()
            .filter(|p| self.links[p.index()].is_some())
            .map(Prog::hook)
            .collect()
    }

    /// The latency slot bounds the programs use (`.rodata`).
    pub fn lat_bounds_ns(&self) -> Option<[u64; LAT_SLOTS]> {
        self.skel.maps.rodata_data.map(|r| r.lat_bounds_ns)
    }

    /// Starts the next period in BPF and returns the number of the one that ended.
    fn next_epoch(&mut self) -> Result<u32, SliBpfError> {
        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref_mut()
            .ok_or(SliBpfError::Layout("bss"))?;
        let ended = bss.period_epoch;
        bss.period_epoch = ended.wrapping_add(1);
        Ok(ended)
    }

    /// Ends a period: every cgroup's cumulative statistics in both maps, with the maxima of the
    /// period that just ended, sorted by cgroup id.
    pub fn collect(&mut self) -> Result<Collected, SliBpfError> {
        let ended = self.next_epoch()?;
        Ok(Collected {
            cpu: read_groups(&self.skel.maps.cpu_stats, "cpu_stats", ended)?,
            memio: read_groups(&self.skel.maps.memio_stats, "memio_stats", ended)?,
        })
    }

    /// Deletes the elements of `cgids` from `source`'s map (cgroups that no longer exist).
    pub fn forget(&self, source: Source, cgids: &[u64]) {
        let map = match source {
            Source::Cpu => &self.skel.maps.cpu_stats,
            Source::MemIo => &self.skel.maps.memio_stats,
        };
        for cgid in cgids {
            // Gone already is fine.
            let _ = map.delete(&cgid.to_ne_bytes());
        }
    }

    /// The `gg_stats` counters; `lost` also counts the tracepoint calls the kernel skipped
    /// because a program was already running on that CPU.
    pub fn loss_counters(&self) -> LossCounters {
        let progs = &self.skel.progs;
        let fds: Vec<_> = Prog::ALL
            .into_iter()
            .filter(|p| self.loaded.has(*p))
            .map(|p| p.of(progs).as_fd())
            .collect();
        let misses = bpf::recursion_misses(fds);
        let mut loss = bpf::read_loss_counters(&self.skel.maps.gg_stats);
        loss.lost = loss.lost.wrapping_add(misses);
        loss
    }
}

/// One period's readings of both maps.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// `cpu_stats`: (cgroup id, sample), ascending.
    pub cpu: Vec<(u64, GroupSample)>,
    /// `memio_stats`: (cgroup id, sample), ascending.
    pub memio: Vec<(u64, GroupSample)>,
}

impl Collected {
    /// The samples of `source`.
    pub fn of(&self, source: Source) -> &[(u64, GroupSample)] {
        match source {
            Source::Cpu => &self.cpu,
            Source::MemIo => &self.memio,
        }
    }
}

fn read_groups(
    map: &dyn MapCore,
    name: &'static str,
    ended: u32,
) -> Result<Vec<(u64, GroupSample)>, SliBpfError> {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let Some(cgid) = decode::cgroup_key(&key) else {
            continue;
        };
        // Deleted since the key walk: skip it.
        let Some(per_cpu) = map
            .lookup_percpu(&key, MapFlags::ANY)
            .map_err(step("read statistics map"))?
        else {
            continue;
        };
        let values = per_cpu
            .iter()
            .map(|v| decode::group(v).ok_or(SliBpfError::Layout(name)))
            .collect::<Result<Vec<_>, _>>()?;
        out.push((cgid, GroupSample::from_cpus(&values, ended)));
    }
    out.sort_by_key(|(cgid, _)| *cgid);
    Ok(out)
}

/// The slot bounds `LAT_BOUNDS_NS` mirrors, read from the BPF object without loading it.
pub fn object_lat_bounds_ns() -> Result<[u64; LAT_SLOTS], SliBpfError> {
    let mut storage = MaybeUninit::uninit();
    let open = SliSkelBuilder::default()
        .open(&mut storage)
        .map_err(step("open BPF object"))?;
    let bounds = open
        .maps
        .rodata_data
        .as_deref()
        .map(|r| r.lat_bounds_ns)
        .ok_or(SliBpfError::Layout("rodata"))?;
    Ok(bounds)
}

/// Whether the slot bounds of the object are [`LAT_BOUNDS_NS`].
pub fn bounds_match() -> bool {
    object_lat_bounds_ns().is_ok_and(|b| b == LAT_BOUNDS_NS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_bounds_are_the_objects() {
        assert_eq!(object_lat_bounds_ns().unwrap(), LAT_BOUNDS_NS);
        assert!(LAT_BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn pairs_load_together_and_scheduler_is_required() {
        let all = Loaded::new(|_| true);
        assert_eq!(all.measures(), Measured::ALL);
        assert!(all.missing().is_empty());
        let no_memcg = Loaded::new(|h| h != "mm_vmscan_memcg_reclaim_end");
        assert!(!no_memcg.has(Prog::MemcgReclaimBegin) && !no_memcg.has(Prog::MemcgReclaimEnd));
        assert!(no_memcg.measures().reclaim, "direct reclaim still measured");
        let no_vmscan = Loaded::new(|h| !h.starts_with("mm_vmscan"));
        assert!(!no_vmscan.measures().reclaim);
        let rq_only = Loaded::new(|h| h != "block_bio_complete");
        assert!(rq_only.measures().bio && rq_only.has(Prog::RqComplete));
        assert_eq!(rq_only.missing(), ["block_bio_complete"]);
        let no_queue = Loaded::new(|h| h != "block_bio_queue");
        assert!(!no_queue.measures().bio);
        assert_eq!(
            no_queue.missing(),
            ["block_bio_queue", "block_bio_complete", "block_rq_complete"]
        );
        let hooks: Vec<String> = required_hooks().iter().map(|h| h.to_string()).collect();
        assert_eq!(
            hooks,
            [
                "raw tracepoint sched_wakeup",
                "raw tracepoint sched_wakeup_new",
                "raw tracepoint sched_switch"
            ]
        );
    }

    #[test]
    fn programs_belong_to_their_sub_probe() {
        for p in Prog::ALL {
            let g = p.group();
            let expect = if p.hook().starts_with("sched_") {
                Group::Cpu
            } else if p.hook().starts_with("block_") {
                Group::Io
            } else {
                Group::Mem
            };
            assert_eq!(g, expect, "{p:?}");
        }
    }
}
