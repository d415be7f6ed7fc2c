//! The set of tracked processes, shared with BPF: the direct-mapped filter in `.bss`, the
//! overflow hash for slot collisions, the filter mode, and one `proc_stats` entry per tracked
//! tgid.
//!
//! The filter means what the mode says ([`FilterMode`]): in `Include` it lists the tracked
//! tgids, in `Exclude` the untracked ones, in `All` it is unused. Invariant kept by both sides
//! in `Include`: a tgid is in the filter only while it has a `proc_stats` entry (user space
//! inserts the entry first and deletes it last), so BPF never finds a tracked process without
//! somewhere to count. In `All` and `Exclude`, BPF creates the entry of a tracked process on
//! first sight.
//!
//! A process that owns its filter slot in `Include` (`in_slot`) has its syscall counts in
//! `hot_slots[slot]` instead of its entry, which spares the per-syscall hash lookup; BPF folds
//! them into the entry when the process exits. Readers take the hot counters before the entry,
//! so a fold between the two reads is never counted twice or missed. A change of mode
//! ([`Tracker::reset`]) empties the filter and every entry, so no entry of one mode lives on in
//! another.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libbpf_rs::{MapCore, MapFlags};

use crate::decode::{self, decode_stats, proc_stats_bytes};
use crate::report::ProcCounters;
use crate::selection::FilterMode;
use crate::skel::types;

/// Slots of the filter array; must match `TRACK_SLOTS` in `src/bpf/intf.h`.
pub const TRACK_SLOTS: usize = 65536;

/// Why a process could not be tracked (or excluded).
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// `proc_stats` or the overflow hash is full (the bound on tracked processes).
    #[error("tracked-process map is full")]
    Full,
    /// Any other map operation failure.
    #[error("map update for tgid {tgid}: {source}")]
    Map {
        /// Process that was being tracked.
        tgid: u32,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
}

/// The filter's parts of the loaded skeleton's `.bss`.
pub struct FilterMem<'a> {
    slots: &'a [AtomicU32],
    /// `hot_slots` as pairs (syscalls, failed).
    hot: &'a [AtomicU64],
    overflow_used: &'a AtomicU32,
    mode: &'a AtomicU32,
}

impl<'a> FilterMem<'a> {
    /// Wraps the `.bss` variables `tracked_slots`, `hot_slots`, `overflow_used` and
    /// `filter_mode`.
    pub fn new(
        tracked_slots: &'a mut [u32; TRACK_SLOTS],
        hot_slots: &'a mut [types::hot_counts; TRACK_SLOTS],
        overflow_used: &'a mut u32,
        filter_mode: &'a mut u32,
    ) -> FilterMem<'a> {
        // SAFETY: AtomicU32 has the size and alignment of u32; we hold the unique borrow of this
        // part of the mmap'ed .bss for 'a, and the only other writer (BPF) writes whole aligned
        // u32s.
        let slots = unsafe {
            std::slice::from_raw_parts(tracked_slots.as_mut_ptr().cast::<AtomicU32>(), TRACK_SLOTS)
        };
        // SAFETY: hot_counts is two u64s; AtomicU64 has their size and alignment (8 on every
        // target with 64-bit atomics); same ownership argument as for the slots.
        let hot = unsafe {
            std::slice::from_raw_parts(hot_slots.as_mut_ptr().cast::<AtomicU64>(), 2 * TRACK_SLOTS)
        };
        FilterMem {
            slots,
            hot,
            // SAFETY: same as above for single u32s.
            overflow_used: unsafe { AtomicU32::from_ptr(overflow_used) },
            // SAFETY: as above.
            mode: unsafe { AtomicU32::from_ptr(filter_mode) },
        }
    }
}

/// User-space handle on the tracked set.
pub struct Tracker<'a> {
    mem: FilterMem<'a>,
    overflow: &'a dyn MapCore,
    stats: &'a dyn MapCore,
    mode: Cell<FilterMode>,
}

impl std::fmt::Debug for Tracker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("mode", &self.mode.get())
            .finish_non_exhaustive()
    }
}

fn is_full(e: &libbpf_rs::Error) -> bool {
    matches!(
        e.kind(),
        libbpf_rs::ErrorKind::TooBig | libbpf_rs::ErrorKind::OutOfMemory
    )
}

fn bpf_mode(mode: FilterMode) -> u32 {
    match mode {
        FilterMode::All => types::filter_mode::FILTER_ALL.0,
        FilterMode::Include => types::filter_mode::FILTER_INCLUDE.0,
        FilterMode::Exclude => types::filter_mode::FILTER_EXCLUDE.0,
    }
}

impl<'a> Tracker<'a> {
    /// Wraps the loaded skeleton's filter (`mem`), `tracked_overflow` and `proc_stats`, and sets
    /// BPF's filter mode to `mode` (the filter and the maps are expected empty).
    pub fn new(
        mem: FilterMem<'a>,
        overflow: &'a dyn MapCore,
        stats: &'a dyn MapCore,
        mode: FilterMode,
    ) -> Tracker<'a> {
        mem.mode.store(bpf_mode(mode), Ordering::Release);
        Tracker {
            mem,
            overflow,
            stats,
            mode: Cell::new(mode),
        }
    }

    /// How the filter is read now.
    pub fn mode(&self) -> FilterMode {
        self.mode.get()
    }

    fn set_mode(&self, mode: FilterMode) {
        self.mode.set(mode);
        self.mem.mode.store(bpf_mode(mode), Ordering::Release);
    }

    fn slot_index(tgid: u32) -> usize {
        tgid as usize & (TRACK_SLOTS - 1)
    }

    fn slot(&self, tgid: u32) -> &AtomicU32 {
        &self.mem.slots[Self::slot_index(tgid)]
    }

    /// Whether `tgid` is in the filter (its slot or the overflow hash).
    fn in_filter(&self, tgid: u32) -> bool {
        if self.slot(tgid).load(Ordering::Acquire) == tgid {
            return true;
        }
        self.mem.overflow_used.load(Ordering::Acquire) != 0
            && matches!(
                self.overflow.lookup(&tgid.to_ne_bytes(), MapFlags::ANY),
                Ok(Some(_))
            )
    }

    /// Whether BPF currently counts `tgid`.
    pub fn is_tracked(&self, tgid: u32) -> bool {
        if tgid == 0 {
            return false;
        }
        match self.mode.get() {
            FilterMode::All => true,
            FilterMode::Include => self.in_filter(tgid),
            FilterMode::Exclude => !self.in_filter(tgid),
        }
    }

    /// Whether `tgid` has a stats entry (tracked now, or exited and not yet reported).
    pub fn has_entry(&self, tgid: u32) -> bool {
        matches!(
            self.stats.lookup(&tgid.to_ne_bytes(), MapFlags::ANY),
            Ok(Some(_))
        )
    }

    fn zero_hot(&self, tgid: u32) {
        let i = Self::slot_index(tgid);
        self.mem.hot[2 * i].store(0, Ordering::Release);
        self.mem.hot[2 * i + 1].store(0, Ordering::Release);
    }

    fn read_hot(&self, tgid: u32) -> (u64, u64) {
        let i = Self::slot_index(tgid);
        (
            self.mem.hot[2 * i].load(Ordering::Acquire),
            self.mem.hot[2 * i + 1].load(Ordering::Acquire),
        )
    }

    /// Whether `tgid`'s entry exists and BPF has marked its thread group exited.
    pub fn has_exited(&self, tgid: u32) -> bool {
        self.read_entry(tgid).is_some_and(|s| s.exited != 0)
    }

    fn read_entry(&self, tgid: u32) -> Option<types::proc_stats> {
        let v = self
            .stats
            .lookup(&tgid.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()?;
        decode::proc_stats(&v)
    }

    /// Starts counting `tgid` (no-op if it already has an entry). In `Exclude` mode the caller
    /// makes sure `tgid` is not excluded.
    pub fn track(&self, tgid: u32, comm: &str) -> Result<(), TrackError> {
        if tgid == 0 || self.has_entry(tgid) {
            return Ok(());
        }
        let listed = self.mode.get() == FilterMode::Include;
        let slot = self.slot(tgid);
        let use_slot = listed && slot.load(Ordering::Acquire) == 0;
        if use_slot {
            self.zero_hot(tgid);
        }
        let s = decode::new_proc_stats(comm, use_slot);
        let key = tgid.to_ne_bytes();
        if let Err(e) = self
            .stats
            .update(&key, proc_stats_bytes(&s), MapFlags::NO_EXIST)
        {
            if is_full(&e) {
                return Err(TrackError::Full);
            }
            // EEXIST: BPF tracked it concurrently (inherited fork) and owns its placement.
            return if self.has_entry(tgid) {
                Ok(())
            } else {
                Err(TrackError::Map { tgid, source: e })
            };
        }
        if !listed {
            return Ok(());
        }
        if use_slot
            && slot
                .compare_exchange(0, tgid, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Ok(());
        }
        self.place_in_overflow(tgid)
    }

    /// Counts `tgid` through the overflow hash (its slot belongs to another process).
    fn place_in_overflow(&self, tgid: u32) -> Result<(), TrackError> {
        let key = tgid.to_ne_bytes();
        if let Some(mut s) = self.read_entry(tgid) {
            if s.in_slot != 0 {
                s.in_slot = 0;
                let _ = self
                    .stats
                    .update(&key, proc_stats_bytes(&s), MapFlags::EXIST);
            }
        }
        if let Err(e) = self.overflow_add(tgid) {
            let _ = self.stats.delete(&key);
            return Err(e);
        }
        Ok(())
    }

    fn overflow_add(&self, tgid: u32) -> Result<(), TrackError> {
        if let Err(e) = self
            .overflow
            .update(&tgid.to_ne_bytes(), &[1u8], MapFlags::ANY)
        {
            return Err(if is_full(&e) {
                TrackError::Full
            } else {
                TrackError::Map { tgid, source: e }
            });
        }
        self.mem.overflow_used.store(1, Ordering::Release);
        Ok(())
    }

    /// Takes `tgid` out of the filter.
    fn filter_remove(&self, tgid: u32) {
        let _ = self
            .slot(tgid)
            .compare_exchange(tgid, 0, Ordering::AcqRel, Ordering::Acquire);
        if self.mem.overflow_used.load(Ordering::Acquire) != 0 {
            let _ = self.overflow.delete(&tgid.to_ne_bytes());
        }
    }

    /// Makes sure a live entry's tgid passes the filter (`Include` only): repairs a slot lost
    /// to a race between BPF and user space (possible only when pid_max exceeds the slot count;
    /// see `track()` in proc.bpf.c).
    pub fn ensure_filtered(&self, tgid: u32) -> Result<(), TrackError> {
        if self.mode.get() != FilterMode::Include || self.in_filter(tgid) {
            return Ok(());
        }
        self.place_in_overflow(tgid)
    }

    /// Stops counting `tgid` and forgets its values (in `Include`: filter first, then the
    /// entry). In `All` and `Exclude` BPF creates the entry again at the process's next event:
    /// use [`Tracker::exclude`] to stop counting a live process there.
    pub fn untrack(&self, tgid: u32) {
        if self.mode.get() == FilterMode::Include {
            self.filter_remove(tgid);
        }
        let _ = self.stats.delete(&tgid.to_ne_bytes());
    }

    /// `Exclude` mode: stops counting `tgid` (filter first, then the entry).
    pub fn exclude(&self, tgid: u32) -> Result<(), TrackError> {
        if tgid == 0 || self.in_filter(tgid) {
            return Ok(());
        }
        let slot = self.slot(tgid);
        if slot
            .compare_exchange(0, tgid, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            self.overflow_add(tgid)?;
        }
        let _ = self.stats.delete(&tgid.to_ne_bytes());
        Ok(())
    }

    /// `Exclude` mode: `tgid` is counted again (BPF creates its entry at its next event).
    pub fn unexclude(&self, tgid: u32) {
        self.filter_remove(tgid);
    }

    /// The tgids in the filter.
    pub fn filter_members(&self) -> BTreeSet<u32> {
        let mut out: BTreeSet<u32> = self
            .mem
            .slots
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .filter(|&t| t != 0)
            .collect();
        if self.mem.overflow_used.load(Ordering::Acquire) != 0 {
            out.extend(
                self.overflow
                    .keys()
                    .filter_map(|k| <[u8; 4]>::try_from(k.as_slice()).ok())
                    .map(u32::from_ne_bytes),
            );
        }
        out
    }

    /// Switches to `mode` from scratch: BPF first stops creating entries (`Include` with an
    /// empty filter), then the filter and every entry are emptied, then in `Exclude` the
    /// tgids `excluded` are put in the filter, and BPF reads the filter as `mode`. Returns how
    /// many exclusions did not fit. The caller turns fork inheritance off before, and tracks
    /// the processes of the new mode after.
    pub fn reset(&self, mode: FilterMode, excluded: &BTreeSet<u32>) -> u64 {
        self.set_mode(FilterMode::Include);
        for slot in self.mem.slots {
            if slot.load(Ordering::Acquire) != 0 {
                slot.store(0, Ordering::Release);
            }
        }
        if self.mem.overflow_used.load(Ordering::Acquire) != 0 {
            let keys: Vec<Vec<u8>> = self.overflow.keys().collect();
            for k in keys {
                let _ = self.overflow.delete(&k);
            }
        }
        let keys: Vec<Vec<u8>> = self.stats.keys().collect();
        for k in keys {
            let _ = self.stats.delete(&k);
        }
        let mut failed = 0;
        if mode == FilterMode::Exclude {
            for &tgid in excluded {
                if self.exclude(tgid).is_err() {
                    failed += 1;
                }
            }
        }
        self.set_mode(mode);
        failed
    }

    /// Every stats entry: tracked processes and exited ones awaiting their final report.
    pub fn entries(&self) -> Vec<(u32, ProcCounters)> {
        let mut out = Vec::new();
        for key in self.stats.keys() {
            let Ok(raw) = <[u8; 4]>::try_from(key.as_slice()) else {
                continue;
            };
            let tgid = u32::from_ne_bytes(raw);
            // Hot counters first, then the entry (see the module comment).
            let hot = self.read_hot(tgid);
            let Some(v) = self.stats.lookup(&key, MapFlags::ANY).ok().flatten() else {
                continue;
            };
            let Some((mut c, in_slot)) = decode_stats(&v) else {
                continue;
            };
            if in_slot {
                c.syscalls += hot.0;
                c.syscall_failed += hot.1;
            }
            out.push((tgid, c));
        }
        out.sort_by_key(|(tgid, _)| *tgid);
        out
    }
}
