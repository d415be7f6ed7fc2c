//! The record-line contract between probes and the gala-gopher daemon, defined once.
//!
//! A probe prints one record per line on stdout, `|table|v1|…|vn|`, and log lines
//! (`[INFO] …`, `[WARN] …`, `[ERROR] …`) on stderr. Everything both sides must agree on lives
//! here and nowhere else:
//!
//! * [`escape`] — the value escapes (`\|`, `\\`, `\n`, `\r`, `\t`; any other `\c` reads as `c`),
//! * [`line`](mod@line) — splitting a line into table and raw values, and why a line is refused,
//! * [`FieldKind`] — what a position of a table is (key, label, gauge, counter, histogram, summary),
//! * [`histogram`] — the upstream histogram value `N b1 c1 … bN cN sum max`,
//! * [`log`] — the log-line level prefixes,
//! * [`EXIT_UNSUPPORTED`] — the exit status of a probe whose kernel hooks are missing.
//!
//! The specification is the vector file `vectors/record_lines.json` in this crate: every
//! implementation (this crate, the python helper `gala_probe.py`, the shell helper
//! `gala_probe.sh`) is tested against it.

pub mod escape;
pub mod histogram;
pub mod kind;
pub mod line;
pub mod log;

pub use escape::{escape_into, unescape_bytes, unescape_into};
pub use kind::{FieldKind, UnknownFieldKind};
pub use line::{parse_record, value_is_absent, Malformed, ParseError};

/// Exit status of a probe that cannot run on this kernel (a hook or feature is missing). The
/// probe prints `[ERROR] unsupported: <what>` first; the daemon shows it as `failed` and retries
/// slowly instead of restarting it at once.
pub const EXIT_UNSUPPORTED: i32 = 3;
