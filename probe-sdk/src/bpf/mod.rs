//! eBPF platform for probes (cargo feature `bpf`): kernel feature probing, tracefs, BTF selection,
//! ring-buffer polling and the loss counters every eBPF probe exports.
//!
//! A probe's start-up usually looks like this:
//!
//! ```no_run
//! use probe_sdk::bpf::{self, Hook};
//! # fn main() -> Result<(), probe_sdk::bpf::BpfError> {
//! // Missing hooks end the probe with "[ERROR] unsupported: …" and exit code 3.
//! bpf::require_hooks(&[
//!     Hook::raw_tracepoint("block_rq_issue"),
//!     Hook::tracepoint("block", "block_rq_complete"),
//! ]);
//! // Classic `tp/` programs need tracefs mounted where libbpf looks for it.
//! bpf::ensure_tracefs()?;
//! // Skeleton builders expose `obj_builder`; this selects a custom BTF (`-b`) when needed.
//! let obj_builder = bpf::object_builder(None)?;
//! # let _ = obj_builder; Ok(()) }
//! ```
//!
//! The BPF side includes `gg_common.h` (directory `probe-sdk/bpf/include`, already on the include
//! path of `bpf-build`), which defines the per-CPU `gg_stats` map read by [`read_loss_counters`].
//!
//! Records and map values become the skeleton's types through [`plain_data`]; a probe's tables
//! and its `.meta` text come from [`crate::meta`], plus the [`loss_table`] of the counters
//! [`write_loss_record`] writes. The unit tests load a tiny BPF program of their own
//! (`src/bpf/selftest/`) to check all of this end to end.
//!
//! Host root: nothing here goes through [`crate::host::path`]. BTF (`/sys/kernel/btf`),
//! tracefs and debugfs (`/sys/kernel/tracing`, `/sys/kernel/debug`), the perf event sources
//! (`/sys/bus/event_source`) and `/proc/sys/kernel/osrelease` describe the running kernel, which a
//! container shares with the host; libbpf reads them at their normal place too, so a container
//! mounts the host's `/sys` at `/sys` (`-v /sys:/sys`). The BTF cache (`/opt/gala-gopher/btf`)
//! and a `-b` file are the agent's own files.

mod btf;
mod error;
mod hooks;
pub mod plain_data;
mod ringbuf;
mod stats;
mod tracefs;
pub mod uprobe_libs;

pub use btf::{
    btf_path, object_builder, raw_tracepoint_exists, trace_event_has_field, UPSTREAM_BTF_DIR,
};
pub use error::BpfError;
pub use hooks::{
    kprobe_autoload, kprobes_available, missing_hooks, require_hooks, unsupported, Hook,
};
pub use plain_data::Plain;
pub use ringbuf::{
    ring_bytes, ring_bytes_at_start, ring_change_note, RingPoller, FIRST_CONTROL_WAIT, RING_MAX_MIB,
};
pub use stats::{
    loss_table, prog_recursion_misses, read_loss_counters, recursion_misses,
    try_read_loss_counters, write_loss_record, LossCounters, LOSS_ENTITY, STAT_EVENTS, STAT_LOST,
    STAT_MAP_FULL, STAT_SLOTS,
};
pub use tracefs::{ensure_tracefs, tracefs_root, tracepoint_exists};

/// The kernel's monotonic clock (what `bpf_ktime_get_ns` reads), ns.
pub fn ktime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Re-export so probes use exactly the libbpf-rs version the SDK was built with.
pub use libbpf_rs;

#[cfg(test)]
mod selftest;
#[cfg(test)]
mod tests;
