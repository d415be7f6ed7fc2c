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

pub mod args;
pub mod control;
pub mod event;
pub mod log;
pub mod meta;
pub mod record;
pub mod run;
pub mod whitelist;

/// The run-time control contract (crate `probe-decl`): [`decl::Declaration`] and
/// [`decl::ControlMsg`].
pub use probe_decl as decl;

#[cfg(feature = "bpf")]
pub mod bpf;
