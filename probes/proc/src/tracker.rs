//! The set of tracked processes, shared with BPF: the direct-mapped filter in `.bss`, the
//! overflow hash for slot collisions, and one `proc_stats` entry per tracked tgid.
//!
//! Invariant kept by both sides: a tgid is in the filter only while it has a `proc_stats` entry
//! (user space inserts the entry first and deletes it last), so BPF never finds a tracked
//! process without somewhere to count.
//!
//! A process that owns its filter slot (`in_slot`) has its syscall counts in
//! `hot_slots[slot]` instead of its entry, which spares the per-syscall hash lookup; BPF folds
//! them into the entry when the process exits. Readers take the hot counters before the entry,
//! so a fold between the two reads is never counted twice or missed.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libbpf_rs::{MapCore, MapFlags};

use crate::decode::{self, decode_stats, proc_stats_bytes};
use crate::report::ProcCounters;
use crate::skel::types;

/// Slots of the filter array; must match `TRACK_SLOTS` in `src/bpf/intf.h`.
pub const TRACK_SLOTS: usize = 65536;

/// Why a process could not be tracked.
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

/// User-space handle on the tracked set.
pub struct Tracker<'a> {
    slots: &'a [AtomicU32],
    /// `hot_slots` as pairs (syscalls, failed).
    hot: &'a [AtomicU64],
    overflow_used: &'a AtomicU32,
    overflow: &'a dyn MapCore,
    stats: &'a dyn MapCore,
    track_all: bool,
}

impl std::fmt::Debug for Tracker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("track_all", &self.track_all)
            .finish_non_exhaustive()
    }
}

fn is_full(e: &libbpf_rs::Error) -> bool {
    matches!(
        e.kind(),
        libbpf_rs::ErrorKind::TooBig | libbpf_rs::ErrorKind::OutOfMemory
    )
}

impl<'a> Tracker<'a> {
    /// Wraps the loaded skeleton's filter (`bss`), `tracked_overflow` and `proc_stats`.
    pub fn new(
        bss: &'a mut types::bss,
        overflow: &'a dyn MapCore,
        stats: &'a dyn MapCore,
        track_all: bool,
    ) -> Tracker<'a> {
        let slots_ptr = bss.tracked_slots.as_mut_ptr().cast::<AtomicU32>();
        // SAFETY: AtomicU32 has the size and alignment of u32; we hold the unique borrow of the
        // mmap'ed .bss for 'a, and the only other writer (BPF) writes whole aligned u32s.
        let slots = unsafe { std::slice::from_raw_parts(slots_ptr, TRACK_SLOTS) };
        let hot_ptr = bss.hot_slots.as_mut_ptr().cast::<AtomicU64>();
        // SAFETY: hot_counts is two u64s; AtomicU64 has their size and alignment (8 on every
        // target with 64-bit atomics); same ownership argument as for the slots.
        let hot = unsafe { std::slice::from_raw_parts(hot_ptr, 2 * TRACK_SLOTS) };
        // SAFETY: same as above for a single u32.
        let overflow_used = unsafe { AtomicU32::from_ptr(&mut bss.overflow_used) };
        Tracker {
            slots,
            hot,
            overflow_used,
            overflow,
            stats,
            track_all,
        }
    }

    fn slot(&self, tgid: u32) -> &AtomicU32 {
        &self.slots[tgid as usize & (TRACK_SLOTS - 1)]
    }

    /// Whether BPF currently counts `tgid`.
    pub fn is_tracked(&self, tgid: u32) -> bool {
        if tgid == 0 {
            return false;
        }
        if self.track_all {
            return true;
        }
        if self.slot(tgid).load(Ordering::Acquire) == tgid {
            return true;
        }
        self.overflow_used.load(Ordering::Acquire) != 0
            && matches!(
                self.overflow.lookup(&tgid.to_ne_bytes(), MapFlags::ANY),
                Ok(Some(_))
            )
    }

    /// Whether `tgid` has a stats entry (tracked now, or exited and not yet reported).
    pub fn has_entry(&self, tgid: u32) -> bool {
        matches!(
            self.stats.lookup(&tgid.to_ne_bytes(), MapFlags::ANY),
            Ok(Some(_))
        )
    }

    fn slot_index(tgid: u32) -> usize {
        tgid as usize & (TRACK_SLOTS - 1)
    }

    fn zero_hot(&self, tgid: u32) {
        let i = Self::slot_index(tgid);
        self.hot[2 * i].store(0, Ordering::Release);
        self.hot[2 * i + 1].store(0, Ordering::Release);
    }

    fn read_hot(&self, tgid: u32) -> (u64, u64) {
        let i = Self::slot_index(tgid);
        (
            self.hot[2 * i].load(Ordering::Acquire),
            self.hot[2 * i + 1].load(Ordering::Acquire),
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

    /// Starts counting `tgid` (no-op if it already has an entry).
    pub fn track(&self, tgid: u32, comm: &str) -> Result<(), TrackError> {
        if tgid == 0 || self.has_entry(tgid) {
            return Ok(());
        }
        let slot = self.slot(tgid);
        let use_slot = !self.track_all && slot.load(Ordering::Acquire) == 0;
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
        if self.track_all {
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
        if let Err(e) = self.overflow.update(&key, &[1u8], MapFlags::ANY) {
            let _ = self.stats.delete(&key);
            return Err(if is_full(&e) {
                TrackError::Full
            } else {
                TrackError::Map { tgid, source: e }
            });
        }
        self.overflow_used.store(1, Ordering::Release);
        Ok(())
    }

    /// Makes sure a live entry's tgid passes the filter: repairs a slot lost to a race between
    /// BPF and user space (possible only when pid_max exceeds the slot count; see `track()` in
    /// proc.bpf.c).
    pub fn ensure_filtered(&self, tgid: u32) -> Result<(), TrackError> {
        if self.track_all || self.is_tracked(tgid) {
            return Ok(());
        }
        self.place_in_overflow(tgid)
    }

    /// Stops counting `tgid` and forgets its values (filter first, then the entry).
    pub fn untrack(&self, tgid: u32) {
        if !self.track_all {
            let _ = self
                .slot(tgid)
                .compare_exchange(tgid, 0, Ordering::AcqRel, Ordering::Acquire);
            if self.overflow_used.load(Ordering::Acquire) != 0 {
                let _ = self.overflow.delete(&tgid.to_ne_bytes());
            }
        }
        let _ = self.stats.delete(&tgid.to_ne_bytes());
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
            let hot = if self.track_all {
                (0, 0)
            } else {
                self.read_hot(tgid)
            };
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
