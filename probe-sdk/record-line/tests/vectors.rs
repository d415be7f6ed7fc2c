//! The crate against its specification, `vectors/record_lines.json`: every line, value, log,
//! histogram and field-kind vector. The same file drives the python and shell helpers' tests
//! (`probe-sdk/tests/script_helpers.rs`).

use record_line::histogram::{self, Histogram};
use record_line::log::{classify, is_error_line, Level};
use record_line::{
    escape_into, parse_record, unescape_bytes, unescape_into, value_is_absent, FieldKind,
    EXIT_UNSUPPORTED,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    about: Vec<String>,
    lines: Vec<LineVector>,
    values: Vec<ValueVector>,
    logs: Vec<LogVector>,
    log_writes: Vec<LogWrite>,
    histograms: Histograms,
    field_kinds: FieldKinds,
    exit_unsupported: i32,
}

/// A line and either what it reads as (`table`, `fields`, `absent`) or why it is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineVector {
    note: String,
    line: String,
    table: Option<String>,
    fields: Option<Vec<String>>,
    #[serde(default)]
    absent: Vec<usize>,
    reject: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueVector {
    value: String,
    escaped: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogVector {
    line: String,
    level: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogWrite {
    level: String,
    message: String,
    line: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Histograms {
    encode: Vec<HistogramEncode>,
    decode: Vec<HistogramDecode>,
    refused: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistogramEncode {
    bounds: Vec<u64>,
    counts: Vec<u64>,
    sum: u64,
    max: u64,
    encoded: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistogramDecode {
    text: String,
    buckets: Vec<(String, String)>,
    sum: String,
    max: String,
    count: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldKinds {
    declared: Vec<String>,
    stored_only: Vec<String>,
    refused: Vec<String>,
}

fn vectors() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/record_lines.json");
    let text = std::fs::read_to_string(path).expect("read the vector file");
    let v: Vectors = serde_json::from_str(&text).expect("parse the vector file");
    assert!(!v.about.is_empty());
    v
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

fn unescaped(raw: &str) -> String {
    let mut s = String::new();
    unescape_into(raw, &mut s);
    s
}

#[test]
fn lines() {
    let v = vectors();
    assert!(v.lines.len() >= 40, "the vector file lost lines");
    let (mut accepted, mut refused) = (0, 0);
    for t in &v.lines {
        let what = format!("{:?} ({})", t.line, t.note);
        let mut raw = Vec::new();
        let got = parse_record(&t.line, &mut raw);
        match (&t.reject, &t.table, &t.fields) {
            (Some(reason), None, None) => {
                refused += 1;
                assert_eq!(got.map_err(|e| e.as_str()), Err(reason.as_str()), "{what}");
                assert!(raw.is_empty(), "{what}: values left behind");
            }
            (None, Some(table), Some(fields)) => {
                accepted += 1;
                assert_eq!(got, Ok(table.as_str()), "{what}");
                let values: Vec<String> = raw.iter().map(|r| unescaped(r)).collect();
                assert_eq!(&values, fields, "{what}");
                for r in &raw {
                    assert_eq!(
                        unescape_bytes(r.as_bytes()),
                        unescaped(r).as_bytes(),
                        "{what}"
                    );
                }
                let absent: Vec<usize> = (0..raw.len())
                    .filter(|&i| value_is_absent(raw[i]))
                    .collect();
                assert_eq!(absent, t.absent, "{what}: absent positions");
            }
            _ => panic!("{what}: a line vector has either reject, or table and fields"),
        }
    }
    assert!(
        accepted >= 20 && refused >= 10,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn values() {
    let v = vectors();
    assert!(v.values.len() >= 15, "the vector file lost values");
    for t in &v.values {
        let mut out = Vec::new();
        escape_into(t.value.as_bytes(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            t.escaped,
            "escape {:?}",
            t.value
        );
        assert_eq!(unescaped(&t.escaped), t.value, "unescape {:?}", t.escaped);
        // Written as a field, it reads back as one value.
        let line = format!("|t|{}|", t.escaped);
        let mut raw = Vec::new();
        assert_eq!(parse_record(&line, &mut raw), Ok("t"), "{line:?}");
        assert_eq!(raw.len(), 1, "{line:?}");
        assert_eq!(unescaped(raw[0]), t.value, "{line:?}");
    }
}

#[test]
fn logs() {
    let v = vectors();
    assert!(!v.logs.is_empty() && !v.log_writes.is_empty());
    for t in &v.logs {
        let (level, msg) = classify(&t.line);
        assert_eq!(
            (level_name(level), msg),
            (t.level.as_str(), t.message.as_str()),
            "{:?}",
            t.line
        );
        assert_eq!(
            is_error_line(t.line.as_bytes()),
            level == Level::Error,
            "{:?}",
            t.line
        );
    }
    // Writers put the prefix, a space, and the message with newline and carriage return written
    // as `\n` and `\r` (one message, one line); the line classifies back to its level.
    for t in &v.log_writes {
        let (level, msg) = classify(&t.line);
        assert_eq!(level_name(level), t.level, "{:?}", t.line);
        let one_line = t.message.replace('\n', "\\n").replace('\r', "\\r");
        assert_eq!(t.line, format!("{} {one_line}", level.prefix()));
        assert_eq!(msg, one_line.trim_start(), "{:?}", t.line);
    }
}

#[test]
fn histograms() {
    let v = vectors().histograms;
    assert!(!v.encode.is_empty() && !v.decode.is_empty() && !v.refused.is_empty());
    for t in &v.encode {
        let text = histogram::encode(&t.bounds, &t.counts, t.sum, t.max);
        assert_eq!(text, t.encoded);
        let mut appended = String::from("x");
        histogram::encode_into(&mut appended, &t.bounds, &t.counts, t.sum, t.max);
        assert_eq!(appended, format!("x{}", t.encoded));
        assert!(histogram::decode(&text).is_some(), "{text}");
    }
    for t in &v.decode {
        let buckets = t
            .buckets
            .iter()
            .map(|(b, c)| (b.as_str(), c.as_str()))
            .collect();
        let expected = Histogram {
            buckets,
            sum: &t.sum,
            max: &t.max,
            count: &t.count,
        };
        assert_eq!(histogram::decode(&t.text), Some(expected), "{:?}", t.text);
    }
    for bad in &v.refused {
        assert_eq!(histogram::decode(bad), None, "{bad:?}");
    }
}

#[test]
fn field_kinds_and_exit_code() {
    let v = vectors();
    let declared: Vec<&str> = FieldKind::DECLARED.iter().map(|k| k.as_str()).collect();
    assert_eq!(declared, v.field_kinds.declared);
    for k in FieldKind::DECLARED {
        assert_eq!(k.as_str().parse::<FieldKind>(), Ok(k));
    }
    assert_eq!(FieldKind::STORED_ONLY.to_vec(), v.field_kinds.stored_only);
    for t in &v.field_kinds.stored_only {
        assert_eq!(t.parse::<FieldKind>(), Ok(FieldKind::Other), "{t:?}");
    }
    for t in &v.field_kinds.refused {
        assert!(t.parse::<FieldKind>().is_err(), "{t:?}");
    }
    assert_eq!(EXIT_UNSUPPORTED, v.exit_unsupported);
}
