//! The record-line contract end to end: any string a probe writes with the SDK's `RecordWriter`
//! as a label value comes back byte-identical from the daemon's framer → parser → store, and out
//! of the `/metrics` rendering as the same value under Prometheus label escaping.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use gala_gopher::export::prometheus::{render, RenderOptions};
use gala_gopher::ingest::{Ingest, LogEvents};
use gala_gopher::meta::{FieldKind, SchemaRegistry, TableSchema};
use gala_gopher::store::{StoreLimits, TableStore};
use gala_gopher::telemetry::{DropReason, ProbeStats};
use gala_gopher::wire::Framer;
use probe_sdk::record::RecordWriter;
use proptest::prelude::*;

const MACHINE_ID: &str = "M";
const NOW_MS: u64 = 1_000;

/// Table `t` of entity `E`: key `k`, label `l`, gauge `g`.
fn registry() -> SchemaRegistry {
    let schema = TableSchema::from_fields(
        "t",
        "E",
        &[
            ("k", FieldKind::Key),
            ("l", FieldKind::Label),
            ("g", FieldKind::Gauge),
        ],
    );
    let mut reg = SchemaRegistry::new();
    reg.install(Path::new("/contract/E.meta"), &[Arc::new(schema)])
        .unwrap();
    reg
}

/// Writes `records` with the SDK writer and feeds the bytes, in `chunk`-byte pieces, through the
/// daemon's ingest path.
fn ingest(records: &[(String, String)], chunk: usize) -> (Arc<TableStore>, Arc<ProbeStats>) {
    let mut w = RecordWriter::new(Vec::new());
    for (i, (k, l)) in records.iter().enumerate() {
        w.record("t").field(k).field(l).field(&i).end().unwrap();
    }
    w.flush().unwrap();
    let bytes = w.into_inner();

    let store = Arc::new(TableStore::new(
        StoreLimits {
            record_timeout_ms: u64::MAX / 2,
            ..StoreLimits::default()
        },
        MACHINE_ID,
    ));
    let ingest = Ingest::new(
        Arc::new(RwLock::new(registry())),
        Arc::clone(&store),
        Arc::new(LogEvents),
        65536,
        64,
    );
    let stats = Arc::new(ProbeStats::new("contract"));
    let mut handler = ingest.handler(Arc::clone(&stats));
    handler.now_ms = NOW_MS;
    let mut framer = Framer::new(65536);
    for piece in bytes.chunks(chunk) {
        framer.push(piece, |l| handler.handle(l));
    }
    framer.finish(|l| handler.handle(l));
    (store, stats)
}

/// The contract's "absent" values: the key drops the record, a label is left out.
fn absent(v: &str) -> bool {
    v.is_empty() || v == "(null)"
}

/// Prometheus text-format label escaping: `\` → `\\`, `"` → `\"`, newline → `\n`.
fn prometheus_escaped(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Reads `name{l1="v1",…} value` back into its labels, undoing the Prometheus escapes.
fn read_sample(line: &str) -> (String, BTreeMap<String, String>, String) {
    let (name, rest) = line.split_once('{').expect("a sample with labels");
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars();
    loop {
        let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "{line:?}");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated label value") {
                '"' => break,
                '\\' => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                c => value.push(c),
            }
        }
        labels.insert(label, value);
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            other => panic!("unexpected {other:?} in {line:?}"),
        }
    }
    let value = chars
        .as_str()
        .strip_prefix(' ')
        .expect("a value")
        .to_string();
    (name.to_string(), labels, value)
}

/// Arbitrary unicode, with the characters the contract escapes (and the absent values) likely.
fn label_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        4 => "[|\\\\\n\r\t\"' a-cé中🦀]{0,16}",
        1 => Just(String::new()),
        1 => Just("(null)".to_string()),
        1 => Just("\\(null)".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_label_value_survives_the_daemon(
        records in prop::collection::vec((label_text(), label_text()), 1..5),
        chunk in 1usize..64,
    ) {
        let (store, stats) = ingest(&records, chunk);

        // What the daemon should keep: per present key, the last record's label and gauge.
        let mut expected: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
        let mut empty_keys = 0;
        for (i, (k, l)) in records.iter().enumerate() {
            if absent(k) {
                empty_keys += 1;
            } else {
                expected.insert(k, (l, i));
            }
        }
        prop_assert_eq!(stats.dropped(DropReason::EmptyKey), empty_keys);
        prop_assert_eq!(stats.dropped(DropReason::Malformed), 0);
        prop_assert_eq!(
            stats.records.load(Ordering::Relaxed),
            (records.len() as u64) - empty_keys
        );

        // The store holds the values byte for byte.
        let tables = store.tables();
        prop_assert_eq!(tables.len(), usize::from(!expected.is_empty()));
        let mut stored = BTreeMap::new();
        for table in &tables {
            TableStore::with_table(table, |t| {
                for row in t.rows() {
                    let key = row.value(0).expect("key").to_string();
                    let label = row.value(1).map(str::to_string);
                    stored.insert(key, (label, row.value(2).map(str::to_string)));
                }
            });
        }
        let want: BTreeMap<String, (Option<String>, Option<String>)> = expected
            .iter()
            .map(|(k, (l, i))| {
                let l = (!absent(l)).then(|| l.to_string());
                (k.to_string(), (l, Some(i.to_string())))
            })
            .collect();
        prop_assert_eq!(&stored, &want);

        // /metrics shows each series once, labels escaped the Prometheus way.
        let mut body = String::new();
        render(&store, RenderOptions::default(), NOW_MS, &mut body);
        let samples: Vec<&str> = body
            .split('\n')
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let mut want_lines: Vec<String> = expected
            .iter()
            .map(|(k, (l, i))| {
                let label = if absent(l) {
                    String::new()
                } else {
                    format!(",l=\"{}\"", prometheus_escaped(l))
                };
                format!(
                    "gala_gopher_E_g{{k=\"{}\"{label},machine_id=\"{MACHINE_ID}\"}} {i}",
                    prometheus_escaped(k)
                )
            })
            .collect();
        let mut got_lines: Vec<String> = samples.iter().map(|s| s.to_string()).collect();
        want_lines.sort();
        got_lines.sort();
        prop_assert_eq!(&got_lines, &want_lines);

        // And a Prometheus reader gets the original strings back.
        let mut read: BTreeMap<String, Option<String>> = BTreeMap::new();
        for s in &samples {
            let (name, mut labels, _) = read_sample(s);
            prop_assert_eq!(name, "gala_gopher_E_g");
            let machine_id = labels.remove("machine_id");
            prop_assert_eq!(machine_id.as_deref(), Some(MACHINE_ID));
            let k = labels.remove("k").expect("key label");
            read.insert(k, labels.remove("l"));
            prop_assert!(labels.is_empty());
        }
        let want_read: BTreeMap<String, Option<String>> =
            want.into_iter().map(|(k, (l, _))| (k, l)).collect();
        prop_assert_eq!(read, want_read);
    }
}
