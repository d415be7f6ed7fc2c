//! `ControlMsg::parse_line` against the control-channel specification,
//! `vectors/control_lines.json`: every valid, invalid and long line. The same file drives
//! `probe_sdk::control::Control` and the python and shell helpers (`probe-sdk/tests/script_helpers.rs`,
//! `probe-sdk/tests/python/test_control.py`), which also run its `streams`.

use probe_decl::{ControlMsg, SnoopMode, MAX_LINE_BYTES};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    about: Vec<String>,
    max_line_bytes: usize,
    valid: Vec<ValidLine>,
    invalid: Vec<InvalidLine>,
    long: Vec<LongLine>,
    streams: Vec<Value>,
}

/// A line and everything it means.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidLine {
    note: String,
    line: String,
    v: u32,
    probe: Vec<String>,
    probe_bits: u32,
    /// Left out only where the value is too deep to be written in the vector file.
    params: Option<serde_json::Map<String, Value>>,
    mode: String,
    pids: Vec<u32>,
    period: Option<i64>,
    selects: Vec<(u32, bool)>,
}

/// A line (or bytes that are not UTF-8) every reader refuses.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidLine {
    note: String,
    line: Option<String>,
    bytes_hex: Option<String>,
    reject: String,
}

/// `prefix` + `fill` repeated + `suffix`, `bytes` long with its newline.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LongLine {
    note: String,
    prefix: String,
    fill: String,
    suffix: String,
    bytes: usize,
    reject: Option<String>,
    probe_bits: Option<u32>,
    period: Option<i64>,
}

fn vectors() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/control_lines.json");
    let text = std::fs::read_to_string(path).expect("read the vector file");
    let v: Vectors = serde_json::from_str(&text).expect("parse the vector file");
    assert!(!v.about.is_empty());
    assert!(!v.streams.is_empty());
    assert_eq!(v.max_line_bytes, MAX_LINE_BYTES);
    v
}

fn mode_name(mode: SnoopMode) -> &'static str {
    match mode {
        SnoopMode::All => "all",
        SnoopMode::Include => "include",
        SnoopMode::Exclude => "exclude",
    }
}

/// The period a probe applies: `report_period` when it is an integer of at least 1.
fn period(msg: &ControlMsg) -> Option<i64> {
    msg.int("report_period").filter(|p| *p >= 1)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "{hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn valid_lines_mean_what_the_vectors_say() {
    let v = vectors();
    assert!(v.valid.len() >= 20, "the vector file lost lines");
    for t in &v.valid {
        let what = format!("{:?} ({})", t.line, t.note);
        for line in [t.line.clone(), format!("{}\n", t.line)] {
            let msg = ControlMsg::parse_line(&line).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(msg.v, t.v, "{what}");
            assert_eq!(msg.probe, t.probe, "{what}");
            assert_eq!(msg.probe_bits, t.probe_bits, "{what}");
            if let Some(expected) = &t.params {
                let params: serde_json::Map<String, Value> =
                    msg.params.clone().into_iter().collect();
                assert_eq!(&params, expected, "{what}");
            }
            assert_eq!(mode_name(msg.snoop.mode), t.mode, "{what}");
            assert_eq!(msg.snoop.pids, t.pids, "{what}");
            assert_eq!(period(&msg), t.period, "{what}");
            assert!(!t.selects.is_empty(), "{what}: no selects checks");
            for (pid, observed) in &t.selects {
                assert_eq!(msg.snoop.selects(*pid), *observed, "{what}: pid {pid}");
            }
            // What the daemon writes of it reads back the same.
            assert_eq!(
                ControlMsg::parse_line(&msg.to_line()).ok(),
                Some(msg),
                "{what}"
            );
        }
    }
}

#[test]
fn invalid_lines_are_refused() {
    let v = vectors();
    assert!(v.invalid.len() >= 30, "the vector file lost lines");
    for t in &v.invalid {
        assert_eq!(t.reject, "invalid", "{}", t.note);
        match (&t.line, &t.bytes_hex) {
            (Some(line), None) => {
                let got = ControlMsg::parse_line(line);
                assert!(got.is_err(), "{line:?} ({}) accepted: {got:?}", t.note);
            }
            // The reader takes lines as UTF-8 first (`probe_sdk::control`): these never reach
            // `parse_line`.
            (None, Some(hex)) => {
                let bytes = hex_bytes(hex);
                assert!(String::from_utf8(bytes).is_err(), "{}", t.note);
            }
            _ => panic!("{}: give line or bytes_hex", t.note),
        }
    }
}

/// The line of a `long` vector, newline included.
fn long_line(t: &LongLine) -> String {
    assert_eq!(t.fill.len(), 1, "{}", t.note);
    let fixed = t.prefix.len() + t.suffix.len() + 1;
    assert!(t.bytes > fixed, "{}", t.note);
    let line = format!(
        "{}{}{}\n",
        t.prefix,
        t.fill.repeat(t.bytes - fixed),
        t.suffix
    );
    assert_eq!(line.len(), t.bytes);
    line
}

#[test]
fn long_lines_stop_at_the_limit() {
    let v = vectors();
    assert!(
        v.long.iter().any(|t| t.reject.is_none()) && v.long.iter().any(|t| t.reject.is_some()),
        "the limit must be tested on both sides"
    );
    for t in &v.long {
        let line = long_line(t);
        let got = ControlMsg::parse_line(&line);
        match &t.reject {
            Some(reason) => {
                assert_eq!(reason, "too_long", "{}", t.note);
                assert!(
                    matches!(got, Err(probe_decl::ChannelError::TooLong)),
                    "{}: {:?}",
                    t.note,
                    got.map(|m| m.probe_bits)
                );
            }
            None => {
                let msg = got.unwrap_or_else(|e| panic!("{}: {e}", t.note));
                assert_eq!(Some(msg.probe_bits), t.probe_bits, "{}", t.note);
                assert_eq!(period(&msg), t.period, "{}", t.note);
            }
        }
    }
}
