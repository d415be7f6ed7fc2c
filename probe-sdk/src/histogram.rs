//! The establish-latency histogram of the TCP probes (tcpprobe, endpoint): its buckets, and its
//! value in a record (encoded by `record_line::histogram`, `N b1 c1 … bN cN sum max` with
//! cumulative counts). The BPF sides bucket with the same bounds (`TCP_HIST_SLOTS`,
//! `EP_HIST_SLOTS` in their `intf.h`).

/// Bucket upper bounds in microseconds. The last one is beyond the kernel's SYN retry budget
/// (about 127 s with default sysctls); larger values are filed there too.
pub const BOUNDS_US: [u64; 14] = [
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    50_000,
    250_000,
    1_000_000,
    3_000_000,
    10_000_000,
    130_000_000,
];

/// Number of buckets (`TCP_HIST_SLOTS`, `EP_HIST_SLOTS`).
pub const SLOTS: usize = BOUNDS_US.len();

/// Counts per bucket (not cumulative), sum and max, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (values above the last bound are in the last one).
    pub counts: [u64; SLOTS],
    /// Sum of the observations.
    pub sum: u64,
    /// Largest observation.
    pub max: u64,
}

impl Histogram {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// Records one observation.
    pub fn observe(&mut self, us: u64) {
        let slot = BOUNDS_US.iter().position(|b| us <= *b).unwrap_or(SLOTS - 1);
        self.counts[slot] = self.counts[slot].saturating_add(1);
        self.sum = self.sum.saturating_add(us);
        self.max = self.max.max(us);
    }

    /// Adds another histogram with the same buckets.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// The record value ([`record_line::histogram::encode`] over [`BOUNDS_US`]), e.g.
    /// `2 10 1 100 3 250 900` for buckets (10, 100). None when there is no observation yet (the
    /// field is then absent).
    pub fn encode(&self) -> Option<String> {
        (self.count() > 0)
            .then(|| record_line::histogram::encode(&BOUNDS_US, &self.counts, self.sum, self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_files_values_by_upper_bound() {
        let mut h = Histogram::default();
        for us in [0, 50, 51, 100, 130_000_000, 200_000_000] {
            h.observe(us);
        }
        assert_eq!(h.counts[0], 2, "0 and 50 are <= 50");
        assert_eq!(h.counts[1], 2, "51 and 100");
        assert_eq!(
            h.counts[SLOTS - 1],
            2,
            "the last bucket takes everything above too"
        );
        assert_eq!(h.sum, 330_000_201);
        assert_eq!(h.max, 200_000_000);
        assert!(BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn encodes_cumulative_counts() {
        let mut h = Histogram::default();
        h.counts[0] = 2; // <= 50 us
        h.counts[2] = 1; // <= 250 us
        h.counts[SLOTS - 1] = 1;
        h.sum = 200_000_123;
        h.max = 200_000_000;
        let enc = h.encode().unwrap();
        let tokens: Vec<&str> = enc.split(' ').collect();
        assert_eq!(tokens.len(), 1 + 2 * SLOTS + 2);
        assert_eq!(&tokens[..7], ["14", "50", "2", "100", "2", "250", "3"]);
        assert_eq!(
            &tokens[tokens.len() - 4..],
            ["130000000", "4", "200000123", "200000000"]
        );
    }

    #[test]
    fn empty_histogram_is_absent() {
        assert_eq!(Histogram::default().encode(), None);
    }

    #[test]
    fn merge_adds_and_keeps_max() {
        let mut a = Histogram::default();
        a.counts[1] = 1;
        a.sum = 80;
        a.max = 80;
        let mut b = Histogram::default();
        b.counts[1] = 2;
        b.counts[3] = 1;
        b.sum = 600;
        b.max = 400;
        a.merge(&b);
        assert_eq!(a.counts[1], 3);
        assert_eq!(a.counts[3], 1);
        assert_eq!((a.sum, a.max, a.count()), (680, 400, 4));
    }
}
