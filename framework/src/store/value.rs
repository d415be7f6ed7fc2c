//! Metric value validation: numbers (Prometheus float syntax) and upstream histograms (decoded
//! by the `record_line` contract crate).

/// Whether `text` is a number Prometheus accepts. `NaN`, `+Inf`, `-Inf` and exponents are valid.
pub fn is_number(text: &str) -> bool {
    if is_plain_decimal(text.as_bytes()) {
        return true;
    }
    let t = text.trim();
    if t.is_empty() {
        return false;
    }
    // f64::from_str also accepts "infinity"/"nan" in any case, which is what we want; reject
    // things Rust accepts but Prometheus text parsers may not, like a trailing '.' alone.
    t.parse::<f64>().is_ok() && t != "." && !t.starts_with("0x")
}

/// `-?[0-9]+(\.[0-9]*)?`: the common case, checked without a float parse.
fn is_plain_decimal(b: &[u8]) -> bool {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let mut seen_digit = false;
    let mut seen_dot = false;
    for &c in digits {
        match c {
            b'0'..=b'9' => seen_digit = true,
            b'.' if !seen_dot && seen_digit => seen_dot = true,
            _ => return false,
        }
    }
    seen_digit
}

/// Canonical Prometheus rendering of a valid number: the original text for ordinary decimals,
/// `NaN` / `+Inf` / `-Inf` for the special values.
pub fn canonical_number(text: &str) -> &str {
    let t = text.trim();
    // Fast path: ordinary decimals end in a digit or '.'; only words like nan/inf need work.
    if t.as_bytes()
        .last()
        .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
    {
        return t;
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_nan() => "NaN",
        Ok(v) if v.is_infinite() && v > 0.0 => "+Inf",
        Ok(v) if v.is_infinite() => "-Inf",
        _ => t,
    }
}

/// A decoded upstream histogram `N b1 c1 … bN cN sum max` (cumulative counts), and its decoder:
/// the contract's encoding, defined once in [`record_line::histogram`].
pub use record_line::histogram::{decode as parse_histogram, Histogram};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_to_base_units_keeps_short_decimals() {
        let mut out = String::new();
        push_number(scale(3030.0, 1e-9), &mut out);
        assert_eq!(out, "0.00000303");
        assert_eq!(scale(7.0, 1e-3), 0.007);
        assert_eq!(scale(3.0, 1024.0), 3072.0);
        assert_eq!(scale(5.0, 0.3), 5.0 * 0.3);
    }

    #[test]
    fn numbers() {
        for ok in [
            "1", "-2", "3.5", "1e9", "-1.5E-3", "NaN", "+Inf", "-Inf", "inf", "+5", ".5",
        ] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in ["", "abc", "1,5", "0x10", "1_000", "--1", "."] {
            assert!(!is_number(bad), "{bad}");
        }
        assert_eq!(canonical_number("nan"), "NaN");
        assert_eq!(canonical_number("inf"), "+Inf");
        assert_eq!(canonical_number("-infinity"), "-Inf");
        assert_eq!(canonical_number("12.50"), "12.50");
    }
}

/// A probe's running total of a per-period counter, as read from its record: exact for whole
/// numbers up to 2^64-1, a float otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Total {
    /// A whole, non-negative number.
    Whole(u64),
    /// Any other finite number.
    Float(f64),
}

impl Total {
    /// `text` (a valid number) as a total; `None` for NaN and infinities.
    pub fn parse(text: &str) -> Option<Total> {
        if let Ok(n) = text.parse::<u64>() {
            return Some(Total::Whole(n));
        }
        let t = text.trim();
        t.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Total::Float)
    }

    /// The value as a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Total::Whole(n) => n as f64,
            Total::Float(f) => f,
        }
    }

    /// Append the change from `prev` to `self`: `self` itself when there is no previous total
    /// (the first record of a row: the probe counts from zero) or when the total went down
    /// (the probe restarted and counts from zero again).
    pub fn delta_since(self, prev: Option<Total>, out: &mut String) {
        let mut buf = itoa::Buffer::new();
        match (prev, self) {
            (Some(Total::Whole(p)), Total::Whole(c)) if c >= p => out.push_str(buf.format(c - p)),
            (Some(p), c) if c.as_f64() >= p.as_f64() => push_number(c.as_f64() - p.as_f64(), out),
            (_, Total::Whole(c)) => out.push_str(buf.format(c)),
            (_, Total::Float(c)) => push_number(c, out),
        }
    }
}

/// `v × factor`, computed as `v ÷ (1/factor)` when that is a whole number (`1e-9` → `÷ 1e9`), so
/// `3030 ns` becomes exactly `0.00000303` s rather than `0.0000030300000000000002`.
pub fn scale(v: f64, factor: f64) -> f64 {
    let inverse = 1.0 / factor;
    let whole = inverse.round();
    if factor < 1.0 && whole >= 1.0 && (inverse - whole).abs() <= whole * 1e-12 {
        v / whole
    } else {
        v * factor
    }
}

/// Append a finite float in the shortest form that reads back to it (no exponent).
pub fn push_number(v: f64, out: &mut String) {
    use std::fmt::Write as _;
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else if v.is_nan() {
        out.push_str("NaN");
    } else if v > 0.0 {
        out.push_str("+Inf");
    } else {
        out.push_str("-Inf");
    }
}
