//! ioprobe: per-disk block I/O statistics from the `block_rq_insert`, `block_rq_issue` and
//! `block_rq_complete` raw tracepoints, aggregated in BPF maps and printed once per period as
//! the `io_latency`, `io_count`, `io_err` and `io_bpf_stats` tables of `ioprobe.meta`.
//!
//! * [`loader`]: loads/attaches `src/bpf/io.bpf.c` and reads its maps.
//! * [`stats`]: per-disk statistics summed over CPUs (pure).
//! * [`histogram`]: upstream histogram field encoding.
//! * [`disk`]: disk names from sysfs.
//! * [`report`]: the record lines.

pub mod disk;
pub mod histogram;
pub mod loader;
pub mod report;
pub mod skel;
pub mod stats;
