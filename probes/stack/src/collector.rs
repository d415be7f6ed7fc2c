//! The loaded BPF side at run time: which programs are attached (perf events per CPU for
//! on-CPU; for off-CPU the sampler's iterator links, src/sampler.rs, or sched_switch), the
//! process filter, the epoch bump of a drain, and the counters of the BPF side.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use libbpf_rs::{Link, MapCore, MapFlags};
use probe_sdk::control::{Snoop, SnoopMode};

use crate::drain::{self, Drained, Maps, Pending};
use crate::perf;
use crate::sampler::{self, Sampler, SamplerStats};
use crate::skel::StackProgs;

/// The maps the collector uses.
pub struct MapRefs<'a> {
    /// Stack maps of parity 0 and 1.
    pub stacks: [&'a dyn MapCore; 2],
    /// On-CPU counts of parity 0 and 1.
    pub oncpu: [&'a dyn MapCore; 2],
    /// Off-CPU stretches of parity 0 and 1.
    pub offcpu: [&'a dyn MapCore; 2],
    /// Threads switched out.
    pub starts: &'a dyn MapCore,
    /// The process filter (a bitmap of tgids).
    pub tgid_bits: &'a dyn MapCore,
    /// Per-CPU counters (`enum st_stat`).
    pub st_stats: &'a dyn MapCore,
    /// Loss counters.
    pub gg_stats: &'a dyn MapCore,
    /// Unwinding hints (src/hints.rs).
    pub hints: &'a dyn MapCore,
}

/// Slots of the BPF side's `st_stats` (intf.h `enum st_stat`).
pub mod slot {
    /// On-CPU samples counted.
    pub const SAMPLES: u32 = 0;
    /// Stacks not stored: bucket collision.
    pub const COLLISIONS: u32 = 1;
    /// Stacks not stored: map full.
    pub const STACK_FULL: u32 = 2;
    /// Off-CPU stretches recorded.
    pub const SWITCHES: u32 = 3;
    /// Off-CPU stretches below the minimum.
    pub const SHORT: u32 = 4;
    /// Switch-outs whose stacks were reused.
    pub const SITE_HITS: u32 = 5;
    /// Sampled method: off-CPU samples taken.
    pub const OFF_SAMPLES: u32 = 6;
    /// Sampled method: stacks walked.
    pub const OFF_WALKS: u32 = 7;
    /// Sampled method: threads skipped for want of task storage.
    pub const OFF_NO_STATE: u32 = 8;
    /// Number of slots.
    pub const NR: u32 = 9;
}

/// The `.bss` knobs, written while the programs run.
pub struct Knobs<'a> {
    /// Epoch counter (see drain.rs).
    pub epoch: &'a mut u32,
    /// enum filter_mode.
    pub filter_mode: &'a mut u32,
    /// Off-CPU on.
    pub offcpu_on: &'a mut u8,
    /// Minimum off-CPU stretch, ns.
    pub min_block_ns: &'a mut u64,
    /// Bumped when new unwinding hints were taught.
    pub hints_gen: &'a mut u32,
}

/// tgids the filter bitmap covers (the kernel's PID_MAX_LIMIT on 64-bit).
const MAX_TGID: u32 = 4_194_304;

/// BPF filter modes (intf.h `enum filter_mode`).
const FILTER_ALL: u32 = 0;
const FILTER_INCLUDE: u32 = 1;
const FILTER_EXCLUDE: u32 = 2;

/// How off-CPU time is taken (`-M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffMethod {
    /// Every sample period, the selected threads off the CPU (src/sampler.rs): nothing runs at
    /// context switches.
    Sampled,
    /// At every context switch (tp_btf/sched_switch): every stretch, exactly, and a minimum
    /// block time; costs every context switch of the host.
    Switch,
}

/// Attached programs and the knobs.
pub struct Collector<'a, 'obj> {
    maps: MapRefs<'a>,
    progs: &'a StackProgs<'obj>,
    knobs: Knobs<'a>,
    /// One perf event (and its link) per online CPU while on-CPU sampling runs.
    perf: Vec<(OwnedFd, Link)>,
    /// Sampling period of the open events, ns.
    perf_period_ns: u64,
    switch: Option<Link>,
    method: OffMethod,
    /// The sampled method's thread (idle while the method is not in use; None if it could not
    /// be started).
    sampler: Option<Sampler>,
    /// The sampled method's period while it runs.
    sampling: Option<u64>,
    /// Selected processes the sampler could not link to (gone), cumulative.
    link_errors: u64,
    /// tgids in the BPF filter bitmap.
    filtered: BTreeSet<u32>,
    /// The filter mode set last (`FILTER_*`).
    filter_mode: u32,
    pending: Pending,
}

impl<'a, 'obj> Collector<'a, 'obj> {
    /// A collector over a loaded skeleton; nothing attached yet, off-CPU method `sampled`.
    /// `samp_ctl`: the sampled method's control map.
    pub fn new(
        maps: MapRefs<'a>,
        progs: &'a StackProgs<'obj>,
        knobs: Knobs<'a>,
        samp_ctl: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Self> {
        let sampler = Some(Sampler::start(samp_ctl).context("starting the off-CPU sampler")?);
        Ok(Collector {
            maps,
            progs,
            knobs,
            perf: Vec::new(),
            perf_period_ns: 0,
            switch: None,
            method: OffMethod::Sampled,
            sampler,
            sampling: None,
            link_errors: 0,
            filtered: BTreeSet::new(),
            filter_mode: FILTER_ALL,
            pending: Pending::default(),
        })
    }

    /// On-CPU sampling on every online CPU every `period_ns` (None: off).
    pub fn set_oncpu(&mut self, period_ns: Option<u64>) -> Result<()> {
        match period_ns {
            None => {
                self.perf.clear();
                self.perf_period_ns = 0;
            }
            Some(p) if p == self.perf_period_ns && !self.perf.is_empty() => {}
            Some(p) => {
                self.perf.clear();
                let cpus = perf::online_cpus(Path::new("/sys/devices/system/cpu/online"))
                    .context("reading the online CPUs")?;
                for cpu in cpus {
                    let fd = perf::open_cpu_clock(cpu, p)
                        .with_context(|| format!("perf_event_open(cpu-clock) on CPU {cpu}"))?;
                    let link = self
                        .progs
                        .on_cpu_sample
                        .attach_perf_event(fd.as_raw_fd())
                        .with_context(|| format!("attaching the sampler on CPU {cpu}"))?;
                    self.perf.push((fd, link));
                }
                self.perf_period_ns = p;
            }
        }
        Ok(())
    }

    /// Whether on-CPU sampling runs.
    pub fn oncpu(&self) -> bool {
        !self.perf.is_empty()
    }

    /// Off-CPU recording on or off, by `method`; `min_block_ns`: shorter stretches are only
    /// counted (switch method); `period_ns`: the sampled method's period. A change of method
    /// stops the old one first (what it recorded so far is still drained).
    pub fn set_offcpu(
        &mut self,
        on: bool,
        method: OffMethod,
        min_block_ns: u64,
        period_ns: u64,
    ) -> Result<()> {
        if method != self.method {
            match self.method {
                OffMethod::Sampled => {
                    self.sampling = None;
                    if let Some(s) = &self.sampler {
                        s.set(Duration::from_nanos(period_ns), Vec::new());
                    }
                }
                OffMethod::Switch => {
                    // SAFETY: see below.
                    unsafe { std::ptr::write_volatile(self.knobs.offcpu_on, 0) };
                    self.switch = None;
                }
            }
            self.method = method;
        }
        if self.method == OffMethod::Sampled {
            if !on {
                self.sampling = None;
                if let Some(s) = &self.sampler {
                    s.set(Duration::from_nanos(period_ns), Vec::new());
                }
            } else if self.sampling != Some(period_ns) {
                self.sampling = Some(period_ns);
                self.relink();
            }
            return Ok(());
        }
        // SAFETY (all volatile writes below): the fields live in the mmap'ed .bss for as long
        // as the skeleton, which outlives `self`; the BPF side only reads them.
        unsafe { std::ptr::write_volatile(self.knobs.min_block_ns, min_block_ns) };
        if on && self.switch.is_none() {
            self.switch = Some(
                self.progs
                    .on_switch
                    .attach()
                    .context("attaching tp_btf/sched_switch")?,
            );
            unsafe { std::ptr::write_volatile(self.knobs.offcpu_on, 1) };
        } else if !on && self.switch.is_some() {
            unsafe { std::ptr::write_volatile(self.knobs.offcpu_on, 0) };
            self.switch = None;
        }
        Ok(())
    }

    /// Gives the sampler the iterator links of the current selection: one per selected process
    /// (a process gone meanwhile is skipped), or one over every task.
    fn relink(&mut self) {
        let (Some(s), Some(period)) = (&self.sampler, self.sampling) else {
            return;
        };
        let prog = self.progs.offcpu_tick.as_fd();
        let mut links = Vec::new();
        if self.filter_mode == FILTER_INCLUDE && self.filtered.len() <= sampler::MAX_LINKS {
            for &tgid in &self.filtered {
                match sampler::link(prog, Some(tgid)) {
                    Ok(l) => links.push(l),
                    Err(_) => self.link_errors += 1,
                }
            }
        } else {
            match sampler::link(prog, None) {
                Ok(l) => links.push(l),
                Err(e) => {
                    self.link_errors += 1;
                    probe_sdk::warn!("off-CPU sampling: iterator link over every task: {e}");
                }
            }
        }
        // An include selection that is empty (or all gone) samples nothing.
        s.set(Duration::from_nanos(period), links);
    }

    /// Whether off-CPU recording runs.
    pub fn offcpu(&self) -> bool {
        self.switch.is_some() || self.sampling.is_some()
    }

    /// The off-CPU method.
    pub fn method(&self) -> OffMethod {
        self.method
    }

    /// The sampler's counters (zero with the switch method) and the selected processes it
    /// could not link to.
    pub fn sampler_stats(&self) -> (SamplerStats, u64) {
        (
            self.sampler
                .as_ref()
                .map(Sampler::stats)
                .unwrap_or_default(),
            self.link_errors,
        )
    }

    /// Makes the BPF filter select what `snoop` selects (the bitmap's words that change are
    /// rewritten; the mode is set last, so the new set is complete when it takes effect).
    /// Returns the words the map refused.
    pub fn set_filter(&mut self, snoop: &Snoop) -> u64 {
        let (mode, wanted): (u32, BTreeSet<u32>) = match snoop.mode {
            SnoopMode::All => (FILTER_ALL, BTreeSet::new()),
            SnoopMode::Include => (FILTER_INCLUDE, snoop.pids.iter().copied().collect()),
            SnoopMode::Exclude => (FILTER_EXCLUDE, snoop.pids.iter().copied().collect()),
        };
        let words = |set: &BTreeSet<u32>| {
            let mut w: BTreeMap<u32, u64> = BTreeMap::new();
            for t in set.iter().filter(|t| **t < MAX_TGID) {
                *w.entry(t / 64).or_default() |= 1u64 << (t % 64);
            }
            w
        };
        let (old, new) = (words(&self.filtered), words(&wanted));
        let mut refused = 0;
        for idx in old.keys().chain(new.keys()) {
            let value = new.get(idx).copied().unwrap_or(0);
            if old.get(idx).copied().unwrap_or(0) == value {
                continue;
            }
            if self
                .maps
                .tgid_bits
                .update(&idx.to_ne_bytes(), &value.to_ne_bytes(), MapFlags::ANY)
                .is_err()
            {
                refused += 1;
            }
        }
        self.filtered = wanted;
        self.filter_mode = mode;
        // SAFETY: see set_offcpu.
        unsafe { std::ptr::write_volatile(self.knobs.filter_mode, mode) };
        self.relink();
        refused
    }

    /// Bumps the epoch and drains the previous one (drain.rs).
    pub fn drain(&mut self) -> Drained {
        // SAFETY: see set_offcpu; only user space writes the epoch.
        let old = unsafe { std::ptr::read_volatile(self.knobs.epoch) };
        unsafe { std::ptr::write_volatile(self.knobs.epoch, old.wrapping_add(1)) };
        std::thread::sleep(drain::SETTLE);
        let m = &self.maps;
        let maps = Maps {
            stacks: m.stacks,
            oncpu: m.oncpu,
            offcpu: m.offcpu,
            starts: m.starts,
        };
        let offcpu = self.switch.is_some();
        let snoop_mode = self.filter_mode;
        let filtered = &self.filtered;
        let kept = |tgid: u32| {
            offcpu
                && match snoop_mode {
                    FILTER_ALL => true,
                    FILTER_INCLUDE => filtered.contains(&tgid),
                    _ => !filtered.contains(&tgid),
                }
        };
        let mut d = drain::drain(&maps, old, &mut self.pending, kept);
        if let Some(s) = &self.sampler {
            d.offcpu.extend(s.take());
        }
        d
    }

    /// Tells the sampled method that new hints were taught: threads blocked since their last
    /// walk are walked again (the hints may take the walk further).
    pub fn hints_changed(&mut self) {
        // SAFETY: see set_offcpu; only user space writes hints_gen.
        let g = unsafe { std::ptr::read_volatile(self.knobs.hints_gen) };
        unsafe { std::ptr::write_volatile(self.knobs.hints_gen, g.wrapping_add(1)) };
    }

    /// The unwinding hints map.
    pub fn hints_map(&self) -> &'a dyn MapCore {
        self.maps.hints
    }

    /// The BPF side's `st_stats`, summed over CPUs.
    pub fn stats(&self) -> [u64; slot::NR as usize] {
        let mut out = [0u64; slot::NR as usize];
        for (i, o) in out.iter_mut().enumerate() {
            if let Ok(Some(per_cpu)) = self
                .maps
                .st_stats
                .lookup_percpu(&(i as u32).to_ne_bytes(), MapFlags::ANY)
            {
                *o = per_cpu
                    .iter()
                    .filter_map(|b| b.as_slice().try_into().ok().map(u64::from_ne_bytes))
                    .fold(0u64, u64::wrapping_add);
            }
        }
        out
    }

    /// The loss counters of `gg_stats`, with the programs' recursion misses as lost events.
    pub fn loss(&self) -> probe_sdk::bpf::LossCounters {
        let mut c = probe_sdk::bpf::read_loss_counters(self.maps.gg_stats);
        let misses = probe_sdk::bpf::recursion_misses([
            self.progs.on_cpu_sample.as_fd(),
            self.progs.on_switch.as_fd(),
        ]);
        c.lost = c.lost.saturating_add(misses);
        c
    }
}
