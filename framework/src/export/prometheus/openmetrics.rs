//! What OpenMetrics text 1.0.0 does differently from the classic format: counter family names
//! (`# TYPE x counter`, samples `x_total`), `# HELP` escapes, timestamps in seconds, canonical
//! `le` values, which counter-like values it can carry, and `# EOF`.

use std::fmt::Write as _;

/// The last line of every OpenMetrics exposition.
pub const EOF: &str = "# EOF\n";

/// Family and sample name of a counter named `name` in the classic format: upstream names have
/// no `_total` (family `name`, samples `name_total`), the daemon's own do (family `name` without
/// it, samples unchanged).
pub fn counter_names(name: &str) -> (&str, String) {
    match name.strip_suffix("_total") {
        Some(family) if !family.is_empty() => (family, name.to_string()),
        _ => (name, format!("{name}_total")),
    }
}

/// Append `help` escaped for an OpenMetrics `# HELP` line (`\\`, `\n`, `\"`).
pub fn push_help_text(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Append a sample timestamp given in Unix milliseconds as OpenMetrics seconds (` 1700000000.123`).
pub fn push_timestamp(out: &mut String, ms: u64) {
    let _ = write!(out, " {}.{:03}", ms / 1000, ms % 1000);
}

/// Append `v` as OpenMetrics wants `le` label values: Go's shortest `%g` with `.0` added to
/// integers (`1.0`, `0.25`, `1e+06`, `+Inf`), as the Prometheus client libraries write them.
pub fn push_canonical_float(out: &mut String, v: f64) {
    if v.is_nan() {
        return out.push_str("NaN");
    }
    if v.is_infinite() {
        return out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    }
    if v == 0.0 {
        return out.push_str(if v.is_sign_negative() { "-0.0" } else { "0.0" });
    }
    // `{:e}` is Rust's shortest round-trip representation: `-1.2345e-7`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    out.push_str(sign);
    // Go switches to an exponent below 1e-4 and from 1e+06 (precision 6 for shortest output).
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
        return;
    }
    if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
        return;
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        out.push_str(&digits);
        for _ in digits.len()..int_len {
            out.push('0');
        }
        out.push_str(".0");
    } else {
        out.push_str(&digits[..int_len]);
        out.push('.');
        out.push_str(&digits[int_len..]);
    }
}

/// Whether a counter-like value (`_total`, `_bucket`, `_count`, `_sum`) may appear in
/// OpenMetrics: not NaN and not negative. `value` is already canonical (`NaN`, `-Inf`, …).
pub fn counter_value_ok(value: &str) -> bool {
    value != "NaN" && !(value.starts_with('-') && value.parse::<f64>().map_or(true, |v| v < 0.0))
}

/// Whether a histogram count is a non-negative integer, as OpenMetrics buckets and counts must be.
pub fn is_whole_count(count: &str) -> bool {
    count
        .parse::<f64>()
        .is_ok_and(|c| c.is_finite() && c >= 0.0 && c.fract() == 0.0)
}

/// Rewrite classic exposition text (the daemon's self-metrics, rendered by
/// [`crate::telemetry::render_self_metrics`]) as OpenMetrics families: counters lose `_total` in
/// their `# HELP`/`# TYPE` lines (or gain it on their samples), `# HELP` text escapes `"`, other
/// comments are dropped. Timestamps are not converted (self-metrics have none); no `# EOF`.
pub fn append_converted(classic: &str, out: &mut String) {
    let mut help: Option<(&str, &str)> = None;
    // A counter family whose samples need `_total` appended.
    let mut rename: Option<&str> = None;
    for line in classic.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(help.take(), out);
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (family, renamed) = if kind == "counter" {
                let (family, sample) = counter_names(name);
                (family, (sample != name).then_some(name))
            } else {
                (name, None)
            };
            rename = renamed;
            match help.take() {
                Some((h, text)) if h == name => {
                    out.push_str("# HELP ");
                    out.push_str(family);
                    out.push(' ');
                    reescape_help(text, out);
                    out.push('\n');
                }
                other => flush_help(other, out),
            }
            let _ = writeln!(out, "# TYPE {family} {kind}");
            continue;
        }
        flush_help(help.take(), out);
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match rename {
            Some(name)
                if line.starts_with(name)
                    && matches!(line.as_bytes().get(name.len()), Some(b'{' | b' ')) =>
            {
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&line[name.len()..]);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    flush_help(help, out);
}

fn flush_help(help: Option<(&str, &str)>, out: &mut String) {
    if let Some((name, text)) = help {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        reescape_help(text, out);
        out.push('\n');
    }
}

/// Classic `# HELP` text already escapes `\` and newlines; OpenMetrics also escapes `"`.
fn reescape_help(text: &str, out: &mut String) {
    for c in text.chars() {
        if c == '"' {
            out.push_str("\\\"");
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(v: f64) -> String {
        let mut s = String::new();
        push_canonical_float(&mut s, v);
        s
    }

    #[test]
    fn le_values_as_go_writes_them() {
        for (v, want) in [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (10.0, "10.0"),
            (100.0, "100.0"),
            (0.25, "0.25"),
            (2.5, "2.5"),
            (-2.5, "-2.5"),
            (123456.0, "123456.0"),
            (1_000_000.0, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000_012_5, "1.25e-05"),
            (1e300, "1e+300"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(canonical(v), want, "{v}");
        }
    }

    #[test]
    fn counter_family_and_sample_names() {
        assert_eq!(counter_names("a_b"), ("a_b", "a_b_total".to_string()));
        assert_eq!(counter_names("a_total"), ("a", "a_total".to_string()));
        assert_eq!(
            counter_names("_total"),
            ("_total", "_total_total".to_string())
        );
    }

    #[test]
    fn counter_like_values() {
        for ok in ["0", "1.5", "+Inf", "-0", "1e3"] {
            assert!(counter_value_ok(ok), "{ok}");
        }
        for bad in ["NaN", "-1", "-Inf", "-0.5"] {
            assert!(!counter_value_ok(bad), "{bad}");
        }
        assert!(is_whole_count("3") && is_whole_count("3.0") && is_whole_count("1e3"));
        assert!(!is_whole_count("2.5") && !is_whole_count("-1") && !is_whole_count("+Inf"));
    }

    #[test]
    fn self_metrics_converted() {
        let classic = "# HELP a_total Things \"counted\".\n# TYPE a_total counter\n\
                       a_total{x=\"1\"} 3\n\
                       # HELP b Up.\n# TYPE b gauge\nb 1\n\
                       # HELP c_count Odd.\n# TYPE c_count counter\nc_count{y=\"2\"} 4\nc_count 5\n";
        let mut out = String::new();
        append_converted(classic, &mut out);
        assert_eq!(
            out,
            "# HELP a Things \\\"counted\\\".\n# TYPE a counter\na_total{x=\"1\"} 3\n\
             # HELP b Up.\n# TYPE b gauge\nb 1\n\
             # HELP c_count Odd.\n# TYPE c_count counter\nc_count_total{y=\"2\"} 4\nc_count_total 5\n"
        );
    }
}
