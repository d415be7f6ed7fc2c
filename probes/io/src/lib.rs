//! ioprobe: per-disk block I/O statistics from the `block_rq_insert`, `block_rq_issue` and
//! `block_rq_complete` raw tracepoints, aggregated in BPF maps and printed once per period as
//! the `io_latency`, `io_count`, `io_err` and `io_bpf_stats` tables of `ioprobe.meta`.
//!
//! * [`skel`]: the generated skeleton of `src/bpf/io.bpf.c` (types from `src/bpf/intf.h`).
//! * [`decode`]: map keys and values into the skeleton's types.
//! * [`loader`]: loads/attaches the programs and reads their maps.
//! * [`stats`]: per-disk statistics summed over CPUs, latency buckets (pure).
//! * [`disk`]: disk names from sysfs.
//! * [`tables`]: the table declarations and the run-time control declaration, from which
//!   `ioprobe.meta` is generated.
//! * [`report`]: the record lines.
//! * [`settings`]: period, tables, disk and event threshold, from the command line and the
//!   control channel.

pub mod decode;
pub mod disk;
pub mod loader;
pub mod report;
pub mod settings;
pub mod skel;
pub mod stats;
pub mod tables;
