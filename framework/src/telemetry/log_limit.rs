//! One log-line budget per probe, shared by its stdout and stderr readers: at most
//! [`LOG_LINES_PER_SEC`] lines per second reach the daemon log; the rest are counted and
//! summarized once per window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Probe log lines (stdout non-record lines and stderr lines together) logged per second.
pub const LOG_LINES_PER_SEC: u32 = 50;

/// Verdict for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it. `summary` is the number of lines suppressed in earlier windows not yet reported:
    /// the caller logs one summary line for them first (see [`log_suppressed`]).
    Log {
        /// Suppressed lines to report, if any.
        summary: Option<u64>,
    },
    /// Over budget: do not log (the limiter has counted it).
    Suppress,
}

/// Lock-free fixed-window limiter (both readers of a probe run on any runtime thread).
#[derive(Debug)]
pub struct LogLimiter {
    epoch: Instant,
    /// Window (seconds since `epoch`) in the high 32 bits, lines admitted in it in the low 32.
    window: AtomicU64,
    /// Suppressed lines not reported in a summary yet.
    pending: AtomicU64,
    /// Suppressed lines since the probe was first seen.
    total: AtomicU64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter {
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }
}

impl LogLimiter {
    /// Decide about one line.
    pub fn admit(&self) -> Admit {
        let now = u64::from(u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX));
        let mut cur = self.window.load(Ordering::Relaxed);
        loop {
            let (win, used) = (cur >> 32, cur & 0xffff_ffff);
            let next = if win != now {
                (now << 32) | 1
            } else if used < u64::from(LOG_LINES_PER_SEC) {
                cur + 1
            } else {
                self.pending.fetch_add(1, Ordering::Relaxed);
                self.total.fetch_add(1, Ordering::Relaxed);
                return Admit::Suppress;
            };
            match self
                .window
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) if win != now => {
                    let n = self.pending.swap(0, Ordering::Relaxed);
                    return Admit::Log {
                        summary: (n > 0).then_some(n),
                    };
                }
                Ok(_) => return Admit::Log { summary: None },
                Err(actual) => cur = actual,
            }
        }
    }

    /// Suppressed lines not reported yet (reset to 0); a reader calls this at EOF.
    pub fn take_pending(&self) -> u64 {
        self.pending.swap(0, Ordering::Relaxed)
    }

    /// Lines suppressed so far (`gala_gopher_self_probe_log_lines_suppressed_total`).
    pub fn suppressed_total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// The one summary line for `n` suppressed lines of `probe`.
pub fn log_suppressed(probe: &str, n: u64) {
    if n > 0 {
        tracing::warn!(
            probe,
            suppressed = n,
            "probe log lines suppressed (limit {LOG_LINES_PER_SEC}/s per probe, stdout and stderr together)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_per_window_then_summary() {
        let l = LogLimiter::default();
        let admitted = (0..1000)
            .filter(|_| matches!(l.admit(), Admit::Log { .. }))
            .count();
        // A window boundary may fall inside the loop: at most two windows' worth.
        assert!(admitted >= LOG_LINES_PER_SEC as usize, "{admitted}");
        assert!(admitted <= 2 * LOG_LINES_PER_SEC as usize, "{admitted}");
        assert_eq!(l.suppressed_total(), 1000 - admitted as u64);
        let pending = l.take_pending();
        assert!(pending > 0 && pending <= l.suppressed_total());
        assert_eq!(l.take_pending(), 0);
    }

    #[test]
    fn shared_between_threads() {
        let l = std::sync::Arc::new(LogLimiter::default());
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let l = std::sync::Arc::clone(&l);
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| matches!(l.admit(), Admit::Log { .. }))
                        .count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(admitted <= 2 * LOG_LINES_PER_SEC as usize, "{admitted}");
        assert_eq!(l.suppressed_total(), 1000 - admitted as u64);
    }
}
