//! The knobs `proc.bpf.c` reads from its mmap'ed `.bss` while it runs: which syscalls are timed
//! and how, off-CPU accounting, fork inheritance and exec notices. User space writes them when
//! the plan or the process selection changes (control channel), without reloading anything.
//!
//! Every change of the timing knobs bumps `knob_gen`: BPF drops a start time (syscall entry,
//! switch-out, block request) taken under an older generation instead of measuring it, so time
//! that passed while a hook was detached or a knob was off is never counted.
//!
//! `period_gen` numbers the report periods: BPF tags each per-period maximum with it, and each
//! report closes the period (see [`Knobs::close_period`]).

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use crate::hooks::Plan;
use crate::syscalls;

/// User-space handle on the run-time knobs.
pub struct Knobs<'a> {
    inherit_forks: &'a AtomicU8,
    notify_exec: &'a AtomicU8,
    account_offcpu: &'a AtomicU8,
    account_threads: &'a AtomicU8,
    exact_sys_time: &'a AtomicU8,
    blocked_sys_time: &'a AtomicU8,
    slow_col: &'a [AtomicU8],
    fs_op: &'a [AtomicU8],
    fs_mask: &'a AtomicU8,
    knob_gen: &'a AtomicU32,
    period_gen: &'a AtomicU32,
}

impl std::fmt::Debug for Knobs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knobs")
            .field("gen", &self.knob_gen.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn atomic_u8(v: &mut u8) -> &AtomicU8 {
    // SAFETY: AtomicU8 has the size and alignment of u8; the caller holds the unique borrow of
    // this byte of the mmap'ed .bss, which BPF only reads.
    unsafe { AtomicU8::from_ptr(v) }
}

fn atomic_table(t: &mut [u8; syscalls::TABLE_LEN]) -> &[AtomicU8] {
    // SAFETY: as in `atomic_u8`, for the whole array.
    unsafe { std::slice::from_raw_parts(t.as_mut_ptr().cast::<AtomicU8>(), syscalls::TABLE_LEN) }
}

/// The `.bss` variables behind [`Knobs`], borrowed from the loaded skeleton.
#[derive(Debug)]
pub struct KnobVars<'a> {
    /// `inherit_forks`
    pub inherit_forks: &'a mut u8,
    /// `notify_exec`
    pub notify_exec: &'a mut u8,
    /// `account_offcpu`
    pub account_offcpu: &'a mut u8,
    /// `account_threads`
    pub account_threads: &'a mut u8,
    /// `exact_sys_time`
    pub exact_sys_time: &'a mut u8,
    /// `blocked_sys_time`
    pub blocked_sys_time: &'a mut u8,
    /// `slow_col`
    pub slow_col: &'a mut [u8; syscalls::TABLE_LEN],
    /// `fs_op`
    pub fs_op: &'a mut [u8; syscalls::TABLE_LEN],
    /// `fs_mask`
    pub fs_mask: &'a mut u8,
    /// `knob_gen`
    pub knob_gen: &'a mut u32,
    /// `period_gen`
    pub period_gen: &'a mut u32,
}

impl<'a> Knobs<'a> {
    /// Wraps the variables (all still 0 after load: nothing timed, nothing inherited).
    pub fn new(v: KnobVars<'a>) -> Knobs<'a> {
        Knobs {
            inherit_forks: atomic_u8(v.inherit_forks),
            notify_exec: atomic_u8(v.notify_exec),
            account_offcpu: atomic_u8(v.account_offcpu),
            account_threads: atomic_u8(v.account_threads),
            exact_sys_time: atomic_u8(v.exact_sys_time),
            blocked_sys_time: atomic_u8(v.blocked_sys_time),
            slow_col: atomic_table(v.slow_col),
            fs_op: atomic_table(v.fs_op),
            fs_mask: atomic_u8(v.fs_mask),
            // SAFETY: AtomicU32 has the size and alignment of u32; unique borrow as above.
            knob_gen: unsafe { AtomicU32::from_ptr(v.knob_gen) },
            // SAFETY: as for knob_gen.
            period_gen: unsafe { AtomicU32::from_ptr(v.period_gen) },
        }
    }

    /// Whitelist mode: forked children of tracked processes are tracked, and every exec sends a
    /// notice.
    pub fn set_whitelist_helpers(&self, on: bool) {
        self.inherit_forks.store(u8::from(on), Ordering::Release);
        self.notify_exec.store(u8::from(on), Ordering::Release);
    }

    /// The timing knobs of `plan`, then a new generation.
    pub fn set_plan(&self, plan: &Plan) {
        for (knob, col) in self.slow_col.iter().zip(plan.syscall_table) {
            knob.store(col, Ordering::Relaxed);
        }
        for (knob, op) in self.fs_op.iter().zip(plan.fs_op_table) {
            knob.store(op, Ordering::Relaxed);
        }
        self.fs_mask.store(plan.fs_mask, Ordering::Relaxed);
        self.account_offcpu
            .store(u8::from(plan.offcpu), Ordering::Relaxed);
        self.account_threads
            .store(u8::from(plan.threads), Ordering::Relaxed);
        self.exact_sys_time
            .store(u8::from(plan.sys_enter), Ordering::Relaxed);
        self.blocked_sys_time
            .store(u8::from(plan.blocked_timing), Ordering::Relaxed);
        self.bump_gen();
    }

    /// Ends the current report period and returns its number: maxima BPF takes from now on
    /// belong to the next one, and those tagged with the returned number are this report's.
    /// A maximum BPF is storing at this very moment may be tagged with the closed period after
    /// the report has read it, and is then lost (a window of a few instructions).
    pub fn close_period(&self) -> u32 {
        self.period_gen.fetch_add(1, Ordering::AcqRel)
    }

    /// Starts a new generation: start times taken before are not measured.
    pub fn bump_gen(&self) {
        self.knob_gen.fetch_add(1, Ordering::AcqRel);
    }
}
