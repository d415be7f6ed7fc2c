//! sliprobe: CPU, memory and IO latencies of the node and of each container (upstream's
//! `sli_node` / `sli_container` tables), from `tp_btf` programs aggregated per cgroup in BPF
//! maps and read once per period, plus PSI and CPU usage from files.
//!
//! * [`skel`]: the generated skeleton of `src/bpf/sli.bpf.c` (types from `src/bpf/intf.h`).
//! * [`decode`]: map keys and values into the skeleton's types.
//! * [`loader`]: loads the programs, attaches them by sub-probe, reads the maps.
//! * [`stats`]: per-cgroup samples, per-period changes and row accumulators (pure).
//! * [`cgroups`]: which hierarchy the cgroup ids come from, and cgroup ids → containers.
//! * [`aggregate`]: one period's changes into the node row and the container rows (pure).
//! * [`psi`], [`files`]: PSI and CPU usage files; [`read`]: bounded reads.
//! * [`tables`]: the table declarations and the run-time control declaration, from which
//!   `sliprobe.meta` is generated; [`report`]: the record lines.
//! * [`settings`]: period, sub-probes and snoopers from the command line and the control
//!   channel.

pub mod aggregate;
pub mod cgroups;
pub mod decode;
pub mod files;
pub mod loader;
pub mod psi;
pub mod read;
pub mod report;
pub mod settings;
pub mod skel;
pub mod stats;
pub mod tables;
