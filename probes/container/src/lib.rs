//! containerprobe: one row per running container — CPU, memory, OOM, memory pressure, pids,
//! network and block IO — read from the container's cgroup v1 or v2 files and `/proc`, with
//! cAdvisor's field names (upstream ran cAdvisor for this), and one row per Kubernetes pod of
//! those containers (their sums). See docs/probes/container.md.
//!
//! * [`discover`] — `/proc/*/cgroup` → containers (`container_info::cgroup::parse`) and their pids.
//! * [`hierarchy`] — cgroup mounts (`mountinfo`) and, per controller, the v1 or v2 directory.
//! * [`cgroup_files`], [`proc_files`] — parsers of the files read (pure, fixture-tested).
//! * [`collect`] — one cycle: every selected container's [`collect::Sample`] and their pods.
//! * [`report`] — samples → record lines; [`tables`] — the tables and the run-time declaration.
//! * [`paths`], [`read`] — where files are (host root aware) and bounded reads.

pub mod cgroup_files;
pub mod collect;
pub mod discover;
pub mod hierarchy;
pub mod paths;
pub mod proc_files;
pub mod read;
pub mod report;
pub mod tables;
