//! The upstream histogram value: `N b1 c1 … bN cN sum max`.
//!
//! `N` buckets, each an upper bound and the *cumulative* count of observations up to it (like
//! Prometheus `le` buckets; the last count is the total), then the sum and the largest observation.
//! Bounds strictly increase, counts never decrease, `0 < N <= MAX_BUCKETS`.

use std::fmt::Write as _;

/// Most buckets a histogram value may have.
pub const MAX_BUCKETS: usize = 1024;

/// Encodes a histogram from per-bucket (not cumulative) `counts` against upper `bounds` (same
/// length), with the `sum` and `max` of the observations. Counts accumulate with saturation.
pub fn encode(bounds: &[u64], counts: &[u64], sum: u64, max: u64) -> String {
    let mut out = String::with_capacity(8 + 16 * bounds.len());
    encode_into(&mut out, bounds, counts, sum, max);
    out
}

/// [`encode`] appending to `out`.
pub fn encode_into(out: &mut String, bounds: &[u64], counts: &[u64], sum: u64, max: u64) {
    debug_assert_eq!(bounds.len(), counts.len());
    let n = bounds.len().min(counts.len());
    // Writing into a String cannot fail.
    let _ = write!(out, "{n}");
    let mut cumulative = 0u64;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative = cumulative.saturating_add(*count);
        let _ = write!(out, " {bound} {cumulative}");
    }
    let _ = write!(out, " {sum} {max}");
}

/// A decoded histogram value, borrowing its number texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram<'a> {
    /// Upper bounds and cumulative counts, as text, in order.
    pub buckets: Vec<(&'a str, &'a str)>,
    /// Sum of observations.
    pub sum: &'a str,
    /// Largest observation (upstream extra).
    pub max: &'a str,
    /// Total count (the last cumulative count).
    pub count: &'a str,
}

/// Decodes and validates a histogram value. Rejects a non-positive or too large N, missing or
/// extra tokens, non-numeric tokens, non-increasing bounds or decreasing (or negative) counts.
pub fn decode(text: &str) -> Option<Histogram<'_>> {
    let mut it = text.split_ascii_whitespace();
    let n: usize = it.next()?.parse().ok()?;
    if n == 0 || n > MAX_BUCKETS {
        return None;
    }
    let mut buckets = Vec::with_capacity(n);
    let mut last_bound = f64::NEG_INFINITY;
    let mut last_count = 0f64;
    for _ in 0..n {
        let b = it.next()?;
        let c = it.next()?;
        let bv: f64 = b.parse().ok()?;
        let cv: f64 = c.parse().ok()?;
        if bv.is_nan() || bv <= last_bound || cv.is_nan() || cv < last_count || cv < 0.0 {
            return None;
        }
        last_bound = bv;
        last_count = cv;
        buckets.push((b, c));
    }
    let sum = it.next()?;
    let max = it.next()?;
    if it.next().is_some() || sum.parse::<f64>().is_err() || max.parse::<f64>().is_err() {
        return None;
    }
    let count = buckets.last().map(|(_, c)| *c)?;
    Some(Histogram {
        buckets,
        sum,
        max,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_cumulative_and_decodes_back() {
        let s = encode(&[10, 100, 1000], &[1, 2, 0], 250, 900);
        assert_eq!(s, "3 10 1 100 3 1000 3 250 900");
        let h = decode(&s).unwrap();
        assert_eq!(h.buckets, vec![("10", "1"), ("100", "3"), ("1000", "3")]);
        assert_eq!((h.sum, h.max, h.count), ("250", "900", "3"));
    }

    #[test]
    fn counts_saturate() {
        assert_eq!(
            encode(&[1, 2], &[u64::MAX, 5], 0, 0),
            format!("2 1 {m} 2 {m} 0 0", m = u64::MAX)
        );
    }

    #[test]
    fn rejections() {
        for bad in [
            "0 250 900",
            "2 10 1 100",
            "2 10 3 100 1 5 5",
            "2 100 1 10 3 5 5",
            "1 10 1 5 5 extra",
            "x 10 1 5 5",
            "1 10 a 5 5",
            "1 10 -1 5 5",
            "",
        ] {
            assert!(decode(bad).is_none(), "{bad}");
        }
    }
}
