//! Field value helpers: fixed two-decimal numbers and the delta/rate/percentage arithmetic.

use probe_sdk::record::FieldValue;
use std::io::Write;

/// A number written with exactly two decimals (`12.50`), upstream's `%.2f`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fixed2(pub f64);

impl FieldValue for Fixed2 {
    fn write_field(&self, out: &mut Vec<u8>) {
        // Non-finite values never reach here (every division is guarded); keep the line valid
        // anyway by writing them the way the SDK writes f64.
        if self.0.is_finite() {
            let _ = write!(out, "{:.2}", self.0);
        } else {
            self.0.write_field(out);
        }
    }
}

/// A number written with three decimals (upstream's `%.3f` for CPU MHz).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fixed3(pub f64);

impl FieldValue for Fixed3 {
    fn write_field(&self, out: &mut Vec<u8>) {
        if self.0.is_finite() {
            let _ = write!(out, "{:.3}", self.0);
        } else {
            self.0.write_field(out);
        }
    }
}

/// `cur - prev` for a cumulative counter, 0 if it went backwards (reset, wrap, hotplug).
pub fn delta(prev: u64, cur: u64) -> u64 {
    cur.saturating_sub(prev)
}

/// Delta of two optional counters; absent if either side is.
pub fn delta_opt(prev: Option<u64>, cur: Option<u64>) -> Option<u64> {
    Some(delta(prev?, cur?))
}

/// `part / whole * 100`, 0 when `whole` is 0.
pub fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole * 100.0
    } else {
        0.0
    }
}

/// `amount / secs`, 0 when no time elapsed.
pub fn per_sec(amount: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        amount / secs
    } else {
        0.0
    }
}

/// `amount / count`, 0 when `count` is 0 (an average over no events).
pub fn average(amount: f64, count: f64) -> f64 {
    if count > 0.0 {
        amount / count
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &dyn FieldValue) -> String {
        let mut out = Vec::new();
        v.write_field(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fixed_decimals() {
        assert_eq!(text(&Fixed2(12.5)), "12.50");
        assert_eq!(text(&Fixed2(0.0)), "0.00");
        assert_eq!(text(&Fixed2(99.999)), "100.00");
        assert_eq!(text(&Fixed3(2445.402)), "2445.402");
        assert_eq!(text(&Fixed2(f64::NAN)), "NaN");
    }

    #[test]
    fn guarded_arithmetic() {
        assert_eq!(delta(5, 3), 0);
        assert_eq!(delta(3, 5), 2);
        assert_eq!(delta_opt(Some(1), None), None);
        assert_eq!(percent(1.0, 0.0), 0.0);
        assert_eq!(percent(1.0, 4.0), 25.0);
        assert_eq!(per_sec(10.0, 0.0), 0.0);
        assert_eq!(per_sec(10.0, 2.0), 5.0);
        assert_eq!(average(3.0, 0.0), 0.0);
    }
}
