//! The period loop: wake every report period, exit promptly and cleanly on SIGTERM/SIGINT/SIGHUP.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Exit code of a probe whose kernel lacks something it needs (the daemon shows "unsupported").
pub use record_line::EXIT_UNSUPPORTED;

/// Longest single sleep, so a termination signal is noticed within this delay.
const SLEEP_SLICE: Duration = Duration::from_millis(100);

static TERMINATED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// True once SIGTERM, SIGINT or SIGHUP has been received (after [`PeriodLoop::new`]).
pub fn terminated() -> bool {
    TERMINATED.load(Ordering::SeqCst)
}

/// Asks the loop to stop as if a termination signal had arrived (e.g. after a broken pipe).
pub fn request_termination() {
    TERMINATED.store(true, Ordering::SeqCst);
}

extern "C" fn on_termination_signal(_sig: libc::c_int) {
    // Only an atomic store: anything else is not async-signal-safe.
    TERMINATED.store(true, Ordering::SeqCst);
}

fn install_handlers() -> io::Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            // SAFETY: the sigaction struct is zero-initialised then filled with a handler that is
            // async-signal-safe (one atomic store); sa_mask is emptied with sigemptyset.
            let rc = unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_termination_signal as extern "C" fn(libc::c_int) as usize;
                act.sa_flags = 0;
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, std::ptr::null_mut())
            };
            if rc != 0 {
                result = Err(io::Error::last_os_error());
                return;
            }
        }
    });
    result
}

/// The next period boundary after a period change from `old` to `new`, the next boundary
/// having been `next`: one new period after the previous boundary (`next - old`), or `now` if
/// that has passed already. The rule of [`PeriodLoop::set_period`], for probes with their own
/// loop.
pub fn rebase(next: Instant, old: Duration, new: Duration, now: Instant) -> Instant {
    let last = next.checked_sub(old).unwrap_or(next);
    (last + new).max(now)
}

/// Paces a probe's main loop: `while lp.wait_next() { collect; print; flush }`.
#[derive(Debug)]
pub struct PeriodLoop {
    period: Duration,
    next: Instant,
}

impl PeriodLoop {
    /// Installs SIGTERM/SIGINT/SIGHUP handlers (they only set a flag) and starts the clock:
    /// the first [`wait_next`](Self::wait_next) returns one period from now.
    pub fn new(period: Duration) -> io::Result<PeriodLoop> {
        install_handlers()?;
        Ok(PeriodLoop {
            period,
            next: Instant::now() + period,
        })
    }

    /// Sleeps until the next period boundary, in slices of at most 100 ms so termination is
    /// prompt. Returns false when the probe should exit. If the loop body overran one or more
    /// periods, the missed boundaries are skipped rather than fired back to back.
    pub fn wait_next(&mut self) -> bool {
        loop {
            if terminated() {
                return false;
            }
            let now = Instant::now();
            if now >= self.next {
                break;
            }
            std::thread::sleep((self.next - now).min(SLEEP_SLICE));
        }
        let now = Instant::now();
        self.next += self.period;
        if self.next <= now {
            self.next = now + self.period;
        }
        !terminated()
    }

    /// The current period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Changes the period (a control-channel update): the next boundary is one new period after
    /// the previous one, or now if that has already passed.
    pub fn set_period(&mut self, period: Duration) {
        if period == self.period || period.is_zero() {
            return;
        }
        self.next = rebase(self.next, self.period, period, Instant::now());
        self.period = period;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebase_keeps_the_last_boundary() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(rebase(t0 + s(1), s(1), s(3), t0), t0 + s(3));
        assert_eq!(rebase(t0 + s(10), s(10), s(2), t0 + s(5)), t0 + s(5));
    }

    #[test]
    fn reports_its_period() {
        let lp = PeriodLoop::new(Duration::from_millis(20)).unwrap();
        assert_eq!(lp.period(), Duration::from_millis(20));
    }

    #[test]
    fn waits_at_least_one_period() {
        let mut lp = PeriodLoop::new(Duration::from_millis(30)).unwrap();
        let start = Instant::now();
        assert!(lp.wait_next());
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
