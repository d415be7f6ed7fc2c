//! Counters of the flame graph pages (`GET /flamegraph/…` on `web_server` and the command
//! socket): every request by result.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a flame graph request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlamegraphResult {
    /// A listing with profiles, or a file.
    Served,
    /// The listing, saying why there is nothing to list (no probe, no directory, no index yet).
    Empty,
    /// No such pid, kind or file (404).
    NotFound,
    /// A malformed path (400).
    BadRequest,
    /// A method other than GET/HEAD (405).
    MethodNotAllowed,
    /// The file is a symbolic link, not a regular file, or would resolve outside `flame_dir`.
    Refused,
    /// A file over the size bound.
    TooLarge,
    /// `index.json` malformed, too large or of another version (500).
    BadIndex,
    /// Any other failure (500).
    Error,
}

impl FlamegraphResult {
    /// Every result, in export order.
    pub const ALL: [FlamegraphResult; 9] = [
        FlamegraphResult::Served,
        FlamegraphResult::Empty,
        FlamegraphResult::NotFound,
        FlamegraphResult::BadRequest,
        FlamegraphResult::MethodNotAllowed,
        FlamegraphResult::Refused,
        FlamegraphResult::TooLarge,
        FlamegraphResult::BadIndex,
        FlamegraphResult::Error,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FlamegraphResult::Served => "served",
            FlamegraphResult::Empty => "empty",
            FlamegraphResult::NotFound => "not_found",
            FlamegraphResult::BadRequest => "bad_request",
            FlamegraphResult::MethodNotAllowed => "method_not_allowed",
            FlamegraphResult::Refused => "refused",
            FlamegraphResult::TooLarge => "too_large",
            FlamegraphResult::BadIndex => "bad_index",
            FlamegraphResult::Error => "error",
        }
    }
}

/// Flame graph requests by result.
#[derive(Debug, Default)]
pub struct FlamegraphCounters {
    requests: [AtomicU64; FlamegraphResult::ALL.len()],
}

impl FlamegraphCounters {
    /// Count one request.
    pub fn count(&self, result: FlamegraphResult) {
        self.requests[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests counted so far with `result`.
    pub fn get(&self, result: FlamegraphResult) -> u64 {
        self.requests[result as usize].load(Ordering::Relaxed)
    }
}

/// Append `gala_gopher_self_flamegraph_requests_total{result}`. `mid` is the already escaped
/// machine id.
pub fn render_flamegraph_metrics(c: &FlamegraphCounters, mid: &str, out: &mut String) {
    let name = "gala_gopher_self_flamegraph_requests_total";
    let _ = writeln!(
        out,
        "# HELP {name} Flame graph page and file requests (GET /flamegraph/...), by result.\n\
         # TYPE {name} counter"
    );
    for r in FlamegraphResult::ALL {
        let _ = writeln!(
            out,
            "{name}{{result=\"{}\",machine_id=\"{mid}\"}} {}",
            r.as_str(),
            c.get(r)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_result() {
        let c = FlamegraphCounters::default();
        c.count(FlamegraphResult::Served);
        c.count(FlamegraphResult::Served);
        c.count(FlamegraphResult::Refused);
        let mut out = String::new();
        render_flamegraph_metrics(&c, "m", &mut out);
        assert!(out.contains(
            "gala_gopher_self_flamegraph_requests_total{result=\"served\",machine_id=\"m\"} 2\n"
        ));
        assert!(out.contains(
            "gala_gopher_self_flamegraph_requests_total{result=\"refused\",machine_id=\"m\"} 1\n"
        ));
        assert_eq!(
            out.lines().filter(|l| !l.starts_with('#')).count(),
            FlamegraphResult::ALL.len()
        );
    }
}
