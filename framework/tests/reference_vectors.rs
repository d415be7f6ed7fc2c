//! The upstream behavioural vectors of reference §8.2 that apply to the daemon's data path,
//! replayed through parser → schema → store → Prometheus renderer (with our documented fixes:
//! HEAD's strict field count, HELP/TYPE lines, no timestamps by default, non-destructive scrapes).

use std::sync::{Arc, RwLock};

use gala_gopher::export::prometheus::{render, RenderOptions};
use gala_gopher::ingest::{Ingest, LogEvents};
use gala_gopher::meta::SchemaRegistry;
use gala_gopher::store::{StoreLimits, TableStore};
use gala_gopher::telemetry::{DropReason, ProbeStats};
use gala_gopher::wire::Framer;

/// `E.meta` of the reference: table `t`, entity `E`, fields `k:key, l:label, g:gauge, c:counter`.
const E_META: &str = r#"version = "1.0.0"
measurements: ({ table_name: "t", entity_name: "E", fields: (
    { description: "key", type: "key", name: "k" },
    { description: "label", type: "label", name: "l" },
    { description: "gauge", type: "gauge", name: "g" },
    { description: "counter", type: "counter", name: "c" }) })
"#;

struct Replay {
    store: Arc<TableStore>,
    stats: Arc<ProbeStats>,
}

/// Feed `input` (several lines) through the real ingest path at time `now_ms`.
fn replay(input: &str, now_ms: u64, record_timeout_ms: u64) -> Replay {
    replay_bytes(input.as_bytes(), now_ms, record_timeout_ms)
}

fn replay_bytes(input: &[u8], now_ms: u64, record_timeout_ms: u64) -> Replay {
    replay_with_meta(E_META, input, now_ms, record_timeout_ms)
}

fn replay_with_meta(meta_text: &str, input: &[u8], now_ms: u64, record_timeout_ms: u64) -> Replay {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("E.meta");
    std::fs::write(&meta, meta_text).unwrap();
    let mut reg = SchemaRegistry::default();
    reg.add_file(&meta).unwrap();
    let store = Arc::new(TableStore::new(
        StoreLimits {
            record_timeout_ms,
            ..StoreLimits::default()
        },
        "M",
    ));
    let ingest = Ingest::new(
        Arc::new(RwLock::new(reg)),
        Arc::clone(&store),
        Arc::new(LogEvents),
        65536,
        64,
    );
    let stats = Arc::new(ProbeStats::new("p"));
    let mut handler = ingest.handler(Arc::clone(&stats));
    handler.now_ms = now_ms;
    let mut framer = Framer::new(65536);
    framer.push(input, |l| handler.handle(l));
    framer.finish(|l| handler.handle(l));
    Replay { store, stats }
}

fn prom(r: &Replay, now_ms: u64) -> String {
    let mut out = String::new();
    render(&r.store, RenderOptions::default(), now_ms, &mut out);
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn vector_1_full_record() {
    let r = replay("|t|a|x|1|2|\n", 1000, 60_000);
    assert_eq!(
        prom(&r, 1000),
        "gala_gopher_E_c{k=\"a\",l=\"x\",machine_id=\"M\"} 2\n\
         gala_gopher_E_g{k=\"a\",l=\"x\",machine_id=\"M\"} 1\n"
    );
}

#[test]
fn vector_2_empty_label_omitted() {
    let r = replay("|t|a||1|2|\n", 1000, 60_000);
    assert!(prom(&r, 1000).contains("gala_gopher_E_g{k=\"a\",machine_id=\"M\"} 1\n"));
}

#[test]
fn vector_3_empty_metric_not_emitted() {
    let r = replay("|t|a|x||2|\n", 1000, 60_000);
    let out = prom(&r, 1000);
    assert!(!out.contains("gala_gopher_E_g"));
    assert!(out.contains("gala_gopher_E_c{k=\"a\",l=\"x\",machine_id=\"M\"} 2\n"));
}

#[test]
fn vector_4_and_5_wrong_field_count_dropped() {
    let r = replay("|t|a|x|1|\n|t|a|x|1|2|3|\n", 1000, 60_000);
    assert_eq!(prom(&r, 1000), "");
    assert_eq!(r.stats.dropped(DropReason::FieldCount), 2);
}

#[test]
fn vector_6_empty_key_dropped_not_shifted() {
    let r = replay("|t||x|1|2|\n|t|(null)|x|1|2|\n", 1000, 60_000);
    assert_eq!(prom(&r, 1000), "");
    assert_eq!(r.stats.dropped(DropReason::EmptyKey), 2);
}

#[test]
fn vector_7_same_key_one_series_last_value() {
    let r = replay("|t|a|x|1|2|\n|t|a|x|5|6|\n", 1000, 60_000);
    assert_eq!(
        prom(&r, 1000),
        "gala_gopher_E_c{k=\"a\",l=\"x\",machine_id=\"M\"} 6\n\
         gala_gopher_E_g{k=\"a\",l=\"x\",machine_id=\"M\"} 5\n"
    );
}

#[test]
fn vector_8_unknown_table_and_no_second_bar() {
    let r = replay("|zz|1|\n|t\n", 1000, 60_000);
    assert_eq!(prom(&r, 1000), "");
    assert_eq!(r.stats.dropped(DropReason::UnknownTable), 1);
    assert_eq!(r.stats.dropped(DropReason::Malformed), 1);
}

#[test]
fn vector_9_expired_record_not_emitted() {
    let r = replay("|t|a|x|1|2|\n", 1000, 60_000);
    assert_eq!(prom(&r, 1000 + 61_000), "");
    assert_eq!(r.store.expire(1000 + 61_000), 1);
}

#[test]
fn vector_10_fixed_scrapes_are_not_destructive() {
    let r = replay("|t|a|x|1|2|\n", 1000, 60_000);
    let first = prom(&r, 1000);
    assert!(!first.is_empty());
    assert_eq!(prom(&r, 1001), first);
}

#[test]
fn vector_14_histogram() {
    let meta = "version = \"1.0.0\"\nmeasurements: ({ table_name: \"h\", entity_name: \"E\", fields: (\
         { description: \"key\", type: \"key\", name: \"k\" }, { description: \"hist\", type: \"histogram\", name: \"h\" }) })\n";
    let r = replay_with_meta(meta, b"|h|a|3 10 1 100 3 1000 3 250 900|\n", 1000, 60_000);
    let out = prom(&r, 1000);
    let samples: Vec<&str> = out.lines().collect();
    assert_eq!(
        samples,
        vec![
            "gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"10\"} 1",
            "gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"100\"} 3",
            "gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"1000\"} 3",
            "gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"+Inf\"} 3",
            "gala_gopher_E_h_sum{k=\"a\",machine_id=\"M\"} 250",
            "gala_gopher_E_h_count{k=\"a\",machine_id=\"M\"} 3",
            "gala_gopher_E_h_max{k=\"a\",machine_id=\"M\"} 900",
        ]
    );
}

/// Upstream v2023 had a format-string bug on `%` in values; here it is data.
#[test]
fn percent_in_values_is_data() {
    let r = replay("|t|%s%n|%x|1|2|\n", 1000, 60_000);
    assert!(prom(&r, 1000).contains("k=\"%s%n\",l=\"%x\""));
}

/// Lines over the limit are dropped whole; the next line is intact.
#[test]
fn long_line_dropped_whole() {
    let long = format!("|t|{}|x|1|2|\n|t|b|x|3|4|\n", "a".repeat(70_000));
    let r = replay(&long, 1000, 60_000);
    assert_eq!(r.stats.dropped(DropReason::TooLong), 1);
    assert!(prom(&r, 1000).contains("gala_gopher_E_g{k=\"b\",l=\"x\",machine_id=\"M\"} 3\n"));
}

/// Non-numeric metric values are dropped (and counted); NaN, ±Inf and exponents are valid.
#[test]
fn non_numeric_values() {
    let r = replay(
        "|t|a|x|abc|2|\n|t|b|x|NaN|-Inf|\n|t|c|x|1e3|+Inf|\n",
        1000,
        60_000,
    );
    let out = prom(&r, 1000);
    assert_eq!(r.stats.dropped(DropReason::BadValue), 1);
    assert!(!out.contains("gala_gopher_E_g{k=\"a\""));
    assert!(out.contains("gala_gopher_E_c{k=\"a\",l=\"x\",machine_id=\"M\"} 2\n"));
    assert!(out.contains("gala_gopher_E_g{k=\"b\",l=\"x\",machine_id=\"M\"} NaN\n"));
    assert!(out.contains("gala_gopher_E_c{k=\"b\",l=\"x\",machine_id=\"M\"} -Inf\n"));
    assert!(out.contains("gala_gopher_E_g{k=\"c\",l=\"x\",machine_id=\"M\"} 1e3\n"));
}

/// Invalid UTF-8 in a record line is dropped and counted, never a panic; NUL is just data.
#[test]
fn invalid_utf8() {
    let r = replay_bytes(b"|t|\xff\xfe|x|1|2|\n|t|a\0|x|1|2|\n", 1000, 60_000);
    assert_eq!(r.stats.dropped(DropReason::InvalidUtf8), 1);
    assert_eq!(
        r.stats.records.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
