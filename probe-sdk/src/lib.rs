//! Probe SDK: everything a Rust probe needs to speak the gala-gopher record protocol.
//!
//! * [`record`]: buffered, escaping writer for `|table|v1|…|vn|` lines.
//! * [`args`]: the upstream probe flags (`-t`, `-w`, `-l`, `-P`, thresholds …).
//! * [`run`]: the period loop that exits cleanly on SIGTERM.
//! * [`log`]: `[INFO]`/`[WARN]`/`[ERROR]` lines on stderr.
//! * [`event`]: upstream abnormal-event lines.
//! * [`whitelist`]: `gala-gopher-app.conf` process selection.
//! * [`meta`]: table declarations, and the `.meta` text and checks generated from them.
//! * [`control`]: the control channel (run-time params, sub-probes and snoopers on stdin) and,
//!   re-exported as [`decl`], what a probe declares about them.
//! * `bpf` (feature `bpf`): loading, feature probing and loss accounting for eBPF probes.
//! * [`host`]: the host root (`GOPHER_HOST_PATH`); every read of a host file goes through
//!   [`host::path`], so a probe works in a container that mounts the host's `/` at `/host`.
//!
//! Which reads go through the host root: `/proc/<pid>/…`, the global `/proc` files (`stat`,
//! `meminfo`, `diskstats`, `net/*`, mount tables), `/sys/class`, `/sys/block`, `/sys/dev`,
//! `/sys/devices`, `/sys/fs/cgroup`, and host configuration such as `/etc/os-release`,
//! `/etc/machine-id` and `/etc/hostname`. Kernel interfaces under `/sys/kernel` (BTF, tracefs,
//! debugfs) and `/sys/bus/event_source` belong to the running kernel, which the container
//! shares; they stay at their normal place (the container mounts `/sys` there). So do
//! `/proc/self/…` (this process) and the agent's own files (`/etc/gala-gopher`,
//! `/opt/gala-gopher`).

pub mod args;
pub mod control;
pub mod event;
pub mod histogram;
pub mod log;
pub mod meta;
pub mod record;
pub mod run;
pub mod sockets;
pub mod steal;
pub mod whitelist;

/// The run-time control contract (crate `probe-decl`): [`decl::Declaration`] and
/// [`decl::ControlMsg`].
pub use probe_decl as decl;

/// The host root (crate `container-info`): [`host::path`] turns a host path such as
/// `/proc/1/stat` into where this process sees it (`/host/proc/1/stat` under `GOPHER_HOST_PATH=/host`).
pub use container_info::host;

#[cfg(feature = "bpf")]
pub mod bpf;
