//! stackprobe's profiles and their outputs. Pure user space: no eBPF here.
//!
//! Every `svg_period` stackprobe hands one finished [`Profile`] per (process, [`Kind`]) to
//! [`FlameDir::write`], which writes three files next to each other (see [`layout`]):
//!
//! * `<flame_dir>/<kind>/<YYYYMMDD>/<YYYYMMDDHHMMSS>-<pid>.folded` — folded stacks
//!   ([`folded`]: root first, `[pid]comm` as the root frame, `_[k]`/`_[j]`/`_[i]` marks; on-CPU
//!   values are samples, off-CPU values blocked microseconds);
//! * `….svg` — the flame graph ([`svg`], inferno; upstream's titles, `hot`/`io` palettes);
//! * `….pb.gz` — a gzip-compressed pprof profile ([`pprof`]), readable by `go tool pprof`;
//!
//! and then [`FlameDir::write_index`] rewrites `<flame_dir>/index.json` ([`index`]) for the
//! daemon's HTTP server. [`FlameDir`] keeps the directory bounded in bytes and age and never
//! writes or removes anything outside it, whatever is planted inside ([`flame_dir`]).
//! [`pyroscope::Pusher`] pushes the folded stacks to a Pyroscope server.
//!
//! Frame names and comm are untrusted (the profiled process chooses them): [`sanitize`] says how
//! every output keeps them on one line and well-formed.

mod dirfd;
pub mod flame_dir;
pub mod folded;
pub mod index;
pub mod layout;
pub mod model;
pub mod pprof;
pub mod pyroscope;
pub mod sanitize;
pub mod svg;
mod utc;

pub use flame_dir::{
    FlameDir, FlameDirStats, Limits, OpenError, OutputError, Written, DEFAULT_FLAME_DIR,
    DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES, DEFAULT_MAX_SCAN_ENTRIES,
};
pub use index::{Index, IndexEntry};
pub use layout::Output;
pub use model::{Frame, Kind, Profile, Sample};
pub use pprof::{pprof_bytes, pprof_gz};
pub use pyroscope::{PushConfig, PushError, Pushed, Pusher};
