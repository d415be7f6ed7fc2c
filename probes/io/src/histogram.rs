//! Upstream histogram field encoding: `N b1 c1 … bN cN sum max`, counts cumulative over
//! buckets (like Prometheus `le` buckets).

use std::fmt::Write;

use crate::stats::LatStats;

/// Upper bound, in µs, of latency bucket `slot` (`2^slot`).
pub fn bucket_bound_us(slot: usize) -> u64 {
    1u64 << slot
}

/// Encodes a latency distribution: bounds in µs, cumulative counts, the sum in µs (rounded
/// down) and `max_us`.
pub fn encode(lat: &LatStats, max_us: u64) -> String {
    let mut out = String::with_capacity(16 * lat.slots.len());
    let _ = write!(out, "{}", lat.slots.len());
    let mut cumulative = 0u64;
    for (slot, count) in lat.slots.iter().enumerate() {
        cumulative = cumulative.wrapping_add(*count);
        let _ = write!(out, " {} {}", bucket_bound_us(slot), cumulative);
    }
    let _ = write!(out, " {} {}", lat.sum_ns / 1000, max_us);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LAT_SLOTS;

    #[test]
    fn encodes_cumulative_buckets() {
        let mut lat = LatStats::default();
        lat.slots[0] = 1; // < 1 us
        lat.slots[3] = 2; // [4, 8) us
        lat.slots[LAT_SLOTS - 1] = 1; // overflow bucket
        lat.sum_ns = 5_000_000_999;
        lat.count = 4;
        let s = encode(&lat, 42);
        let tokens: Vec<&str> = s.split(' ').collect();
        assert_eq!(tokens.len(), 1 + 2 * LAT_SLOTS + 2);
        assert_eq!(tokens[0], "33");
        assert_eq!(&tokens[1..9], ["1", "1", "2", "1", "4", "1", "8", "3"]);
        // Last bucket: bound 2^32 us, all 4 counted.
        assert_eq!(tokens[2 * LAT_SLOTS - 1], "4294967296");
        assert_eq!(tokens[2 * LAT_SLOTS], "4");
        assert_eq!(&tokens[2 * LAT_SLOTS + 1..], ["5000000", "42"]);
    }

    #[test]
    fn counts_never_decrease() {
        let mut lat = LatStats::default();
        for (i, s) in lat.slots.iter_mut().enumerate() {
            *s = (i % 3) as u64;
        }
        let s = encode(&lat, 0);
        let nums: Vec<u64> = s.split(' ').map(|t| t.parse().unwrap()).collect();
        let counts: Vec<u64> = nums[1..1 + 2 * LAT_SLOTS].chunks(2).map(|c| c[1]).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*counts.last().unwrap(), lat.slots.iter().sum::<u64>());
    }
}
