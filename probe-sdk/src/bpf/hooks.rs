//! Which kernel hooks a probe can attach, checked up front so a missing one is reported as
//! "unsupported: …" (exit code 3) instead of a libbpf attach error.

use std::fmt;
use std::path::Path;

use super::btf::raw_tracepoint_exists;
use super::tracefs::tracepoint_exists;
use crate::run::EXIT_UNSUPPORTED;

/// A kernel attachment point a probe needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// Classic tracepoint `category:name` (`tp/<category>/<name>` programs; needs tracefs).
    Tracepoint {
        /// Event group, e.g. `block`.
        category: String,
        /// Event name, e.g. `block_rq_issue`.
        name: String,
    },
    /// Raw tracepoint `name` (`raw_tp/<name>` and `tp_btf/<name>` programs).
    RawTracepoint(String),
    /// kprobes support in general (`CONFIG_KPROBE_EVENTS`).
    Kprobes,
}

impl Hook {
    /// Classic tracepoint `category:name`.
    pub fn tracepoint(category: &str, name: &str) -> Hook {
        Hook::Tracepoint {
            category: category.to_string(),
            name: name.to_string(),
        }
    }

    /// Raw tracepoint `name`.
    pub fn raw_tracepoint(name: &str) -> Hook {
        Hook::RawTracepoint(name.to_string())
    }

    /// The hook environment variable `var` names (a probe's hidden test switch that makes it
    /// require one more hook): None when unset, `Err(spec)` when its value does not parse.
    pub fn from_env(var: &str) -> Option<Result<Hook, String>> {
        let spec = std::env::var(var).ok()?;
        Some(Hook::parse(&spec).ok_or(spec))
    }

    /// Parses `category:name` (classic tracepoint), `raw:name` (raw tracepoint) or `kprobes`,
    /// e.g. for a hidden test flag that asks a probe to require a hook.
    pub fn parse(spec: &str) -> Option<Hook> {
        if spec == "kprobes" {
            return Some(Hook::Kprobes);
        }
        let (left, right) = spec.split_once(':')?;
        if left.is_empty() || right.is_empty() {
            return None;
        }
        Some(if left == "raw" {
            Hook::raw_tracepoint(right)
        } else {
            Hook::tracepoint(left, right)
        })
    }

    /// Whether this kernel offers the hook.
    pub fn is_available(&self) -> bool {
        match self {
            Hook::Tracepoint { category, name } => tracepoint_exists(category, name),
            Hook::RawTracepoint(name) => raw_tracepoint_exists(name),
            Hook::Kprobes => kprobes_available(),
        }
    }
}

impl fmt::Display for Hook {
    /// The wording used in `[ERROR] unsupported: <hook>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::Tracepoint { category, name } => write!(f, "tracepoint {category}:{name}"),
            Hook::RawTracepoint(name) => write!(f, "raw tracepoint {name}"),
            Hook::Kprobes => f.write_str("kprobes"),
        }
    }
}

/// Whether the kernel can attach kprobes (the `kprobe` PMU exists). False on kernels built
/// without `CONFIG_KPROBES`, such as the project's Firecracker kernels.
pub fn kprobes_available() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

/// For optional kprobe programs: returns whether to keep their autoload on. When kprobes are
/// unavailable it logs `[WARN] kprobes unavailable: <what> disabled` and returns false; pass
/// the result to `open_skel.progs.<prog>.set_autoload(..)`.
pub fn kprobe_autoload(what: &str) -> bool {
    let ok = kprobes_available();
    if !ok {
        crate::warn!("kprobes unavailable: {what} disabled");
    }
    ok
}

/// The hooks of `hooks` this kernel does not offer, in order.
pub fn missing_hooks(hooks: &[Hook]) -> Vec<&Hook> {
    hooks.iter().filter(|h| !h.is_available()).collect()
}

/// Exits with [`unsupported`] naming every missing hook (comma separated) if any is missing.
pub fn require_hooks(hooks: &[Hook]) {
    let missing = missing_hooks(hooks);
    if !missing.is_empty() {
        let what: Vec<String> = missing.iter().map(|h| h.to_string()).collect();
        unsupported(&what.join(", "));
    }
}

/// Prints `[ERROR] unsupported: <what>` to stderr and exits with
/// [`EXIT_UNSUPPORTED`](crate::run::EXIT_UNSUPPORTED) (3), which the daemon reports as
/// "unsupported" rather than a crash.
pub fn unsupported(what: &str) -> ! {
    crate::error!("unsupported: {what}");
    std::process::exit(EXIT_UNSUPPORTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hook_specs() {
        assert_eq!(
            Hook::parse("block:block_rq_issue"),
            Some(Hook::tracepoint("block", "block_rq_issue"))
        );
        assert_eq!(
            Hook::parse("raw:sched_switch"),
            Some(Hook::raw_tracepoint("sched_switch"))
        );
        assert_eq!(Hook::parse("kprobes"), Some(Hook::Kprobes));
        for bad in ["", "block", ":x", "x:", "raw:"] {
            assert_eq!(Hook::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn displays_as_in_unsupported_message() {
        assert_eq!(
            Hook::tracepoint("block", "block_rq_issue").to_string(),
            "tracepoint block:block_rq_issue"
        );
        assert_eq!(
            Hook::raw_tracepoint("block_rq_issue").to_string(),
            "raw tracepoint block_rq_issue"
        );
        assert_eq!(Hook::Kprobes.to_string(), "kprobes");
    }
}
