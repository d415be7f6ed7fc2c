//! The kernel's tick rate (`CONFIG_HZ`), which converts the jiffy-valued `tcp_rate` fields
//! (`rto`, `ato`, the chrono times) to µs. BPF cannot read it, so it is measured: every
//! iterator record carries `jiffies`, and two passes at least [`MIN_SPAN`] apart give ticks per
//! second, rounded to the nearest value Linux allows in its configuration.

use std::time::{Duration, Instant};

/// Shortest span between two samples that gives an estimate (a jiffy at 100 Hz is 10 ms, so
/// the error is below 2 %, far from the gaps between the candidates).
pub const MIN_SPAN: Duration = Duration::from_millis(500);
/// The values `CONFIG_HZ` can take.
pub const CANDIDATES: [u64; 4] = [100, 250, 300, 1000];

/// Measures HZ from (jiffies, time) samples.
#[derive(Debug, Default)]
pub struct HzEstimate {
    first: Option<(u64, Instant)>,
    hz: Option<u64>,
}

impl HzEstimate {
    /// Adds a sample; once one is [`MIN_SPAN`] after the first, HZ is known for good.
    pub fn sample(&mut self, jiffies: u64, at: Instant) {
        if self.hz.is_some() {
            return;
        }
        match self.first {
            None => self.first = Some((jiffies, at)),
            Some((j0, t0)) => {
                let span = at.saturating_duration_since(t0);
                if span < MIN_SPAN || jiffies <= j0 {
                    return;
                }
                self.hz = Some(nearest((jiffies - j0) as f64 / span.as_secs_f64()));
            }
        }
    }

    /// HZ, once measured.
    pub fn hz(&self) -> Option<u64> {
        self.hz
    }
}

fn nearest(rate: f64) -> u64 {
    CANDIDATES
        .iter()
        .copied()
        .min_by(|a, b| {
            (*a as f64 - rate)
                .abs()
                .total_cmp(&(*b as f64 - rate).abs())
        })
        .unwrap_or(CANDIDATES[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_and_rounds_to_a_config_value() {
        let t0 = Instant::now();
        let mut h = HzEstimate::default();
        h.sample(1000, t0);
        h.sample(1050, t0 + Duration::from_millis(200));
        assert_eq!(h.hz(), None, "too short a span");
        // 262 ticks in 1.04 s: 252/s, so 250.
        h.sample(1262, t0 + Duration::from_millis(1040));
        assert_eq!(h.hz(), Some(250));
        // Known for good.
        h.sample(5000, t0 + Duration::from_secs(2));
        assert_eq!(h.hz(), Some(250));
        assert_eq!(nearest(990.0), 1000);
        assert_eq!(nearest(290.0), 300);
        assert_eq!(nearest(90.0), 100);
    }
}
