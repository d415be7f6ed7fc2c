//! jvmprobe: heap, memory pools, garbage collectors, threads and classes of every HotSpot JVM
//! on the host, read from the performance-data file each JVM publishes
//! (`/tmp/hsperfdata_<user>/<pid>`, the source of `jstat`) — no agent is attached and nothing
//! is sent to the JVM. See docs/probes/jvm.md.
//!
//! * [`hsperf`] — the file's binary layout (checked reader, and a builder for tests).
//! * [`sample`] — counters → one [`sample::Sample`] per JVM.
//! * [`discover`] — which processes have a file (containers included) and opening it safely.
//! * [`collect`] — one cycle and each JVM's health; [`report`] — record lines;
//!   [`tables`] — the tables and the run-time declaration.

pub mod collect;
pub mod discover;
pub mod hsperf;
pub mod report;
pub mod sample;
pub mod tables;
