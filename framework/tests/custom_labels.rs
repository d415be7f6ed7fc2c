//! Per-probe custom labels end to end through the ingest path: probe output → framer → parser →
//! store → `/metrics` text, and the push path's record → Kafka/log-file JSON.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use gala_gopher::custom_labels::CustomLabels;
use gala_gopher::export::json::{metric_flat, metric_head};
use gala_gopher::export::prometheus::{render, RenderOptions};
use gala_gopher::ingest::{Ingest, LineHandler, LogEvents};
use gala_gopher::message::{OwnedRecord, RecordSink, RecordView};
use gala_gopher::meta::{FieldKind, SchemaRegistry, TableSchema};
use gala_gopher::store::{StoreLimits, TableStore};
use gala_gopher::telemetry::ProbeStats;
use gala_gopher::wire::Framer;

const TIMEOUT_MS: u64 = 10_000;

/// `t` (entity `E`): key `k`, label `l`, gauge `g`; `u` (entity `F`) has its own label `env`;
/// `w` (entity `W`) is written by the other probe.
fn registry() -> SchemaRegistry {
    let table = |name: &str, entity: &str, label: &str| {
        Arc::new(TableSchema::from_fields(
            name,
            entity,
            &[
                ("k", FieldKind::Key),
                (label, FieldKind::Label),
                ("g", FieldKind::Gauge),
            ],
        ))
    };
    let mut reg = SchemaRegistry::new();
    reg.install(
        Path::new("/labels/a.meta"),
        &[table("t", "E", "l"), table("u", "F", "env")],
    )
    .unwrap();
    reg.install(Path::new("/labels/b.meta"), &[table("w", "W", "l")])
        .unwrap();
    reg
}

/// Every pushed record, copied as the sink queues would.
#[derive(Default)]
struct Capture(Mutex<Vec<OwnedRecord>>);

impl RecordSink for Capture {
    fn record(&self, rec: &RecordView<'_>) {
        self.0.lock().unwrap().push(OwnedRecord::from_view(rec));
    }
}

struct Daemon {
    store: Arc<TableStore>,
    labels: Arc<CustomLabels>,
    pushed: Arc<Capture>,
    ingest: Ingest,
}

fn daemon() -> Daemon {
    let store = Arc::new(TableStore::new(
        StoreLimits {
            record_timeout_ms: TIMEOUT_MS,
            ..StoreLimits::default()
        },
        "M",
    ));
    let labels = Arc::new(CustomLabels::new());
    let pushed = Arc::new(Capture::default());
    let ingest = Ingest::new(
        Arc::new(RwLock::new(registry())),
        Arc::clone(&store),
        Arc::new(LogEvents),
        65536,
        64,
    )
    .with_custom_labels(Arc::clone(&labels))
    .with_record_sink(Arc::clone(&pushed) as Arc<dyn RecordSink>);
    Daemon {
        store,
        labels,
        pushed,
        ingest,
    }
}

/// One read chunk of probe output.
fn feed(h: &mut LineHandler, now_ms: u64, text: &str) {
    h.begin_chunk(now_ms);
    let mut framer = Framer::new(65536);
    framer.push(text.as_bytes(), |l| h.handle(l));
    framer.finish(|l| h.handle(l));
}

fn set(labels: &CustomLabels, probe: &str, pairs: &[(&str, &str)]) {
    let pairs = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.set(probe, pairs).unwrap();
}

/// The sample lines of `/metrics` at `now_ms`, sorted.
fn samples(store: &TableStore, now_ms: u64) -> Vec<String> {
    let mut out = String::new();
    render(store, RenderOptions::default(), now_ms, &mut out);
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn labels_reach_every_series_of_the_probe_only() {
    let d = daemon();
    set(&d.labels, "a", &[("zone", "z\"1"), ("env", "prod")]);
    let mut a = d.ingest.handler(Arc::new(ProbeStats::new("a")));
    let mut b = d.ingest.handler(Arc::new(ProbeStats::new("b")));
    feed(&mut a, 1000, "|t|1|x|1|\n|t|2||2|\n|u|1|own|3|\n");
    feed(&mut b, 1000, "|w|1|x|4|\n");
    assert_eq!(
        samples(&d.store, 1000),
        [
            r#"gala_gopher_E_g{k="1",l="x",env="prod",zone="z\"1",machine_id="M"} 1"#,
            r#"gala_gopher_E_g{k="2",env="prod",zone="z\"1",machine_id="M"} 2"#,
            // `u` has a field `env`: the table's own label wins, the custom one is left out.
            r#"gala_gopher_F_g{k="1",env="own",zone="z\"1",machine_id="M"} 3"#,
            r#"gala_gopher_W_g{k="1",l="x",machine_id="M"} 4"#,
        ]
    );
    // The conflict is counted once per probe, table and label, however many records follow.
    feed(&mut a, 1001, "|u|1|own|3|\n|u|2|own|3|\n");
    assert_eq!(d.labels.conflicts("a"), 1);
    assert_eq!(d.labels.conflicts("b"), 0);
    let mut own = String::new();
    d.labels.render("M", &mut own);
    assert!(own.contains(
        "gala_gopher_self_custom_label_conflicts_total{probe=\"a\",machine_id=\"M\"} 1\n"
    ));
}

#[test]
fn a_change_applies_from_the_next_chunk_without_duplicate_series() {
    let d = daemon();
    set(&d.labels, "a", &[("env", "prod")]);
    let mut a = d.ingest.handler(Arc::new(ProbeStats::new("a")));
    feed(&mut a, 1000, "|t|1|x|1|\n|t|2|x|2|\n");

    set(&d.labels, "a", &[("env", "dev"), ("team", "net")]);
    // Only key 1 updates: it is re-rendered in place; key 2 keeps its labels until it updates.
    feed(&mut a, 2000, "|t|1|x|5|\n");
    assert_eq!(
        samples(&d.store, 2000),
        [
            r#"gala_gopher_E_g{k="1",l="x",env="dev",team="net",machine_id="M"} 5"#,
            r#"gala_gopher_E_g{k="2",l="x",env="prod",machine_id="M"} 2"#,
        ]
    );
    // A row left with the old set expires by record_timeout like any other.
    assert_eq!(d.store.expire(1000 + TIMEOUT_MS + 1), 1);
    assert_eq!(
        samples(&d.store, 1000 + TIMEOUT_MS + 1),
        [r#"gala_gopher_E_g{k="1",l="x",env="dev",team="net",machine_id="M"} 5"#]
    );

    // Cleared: the next update is back to the table's own labels.
    d.labels.set("a", Vec::new()).unwrap();
    feed(&mut a, 3000, "|t|1|x|6|\n");
    assert_eq!(
        samples(&d.store, 3000),
        [r#"gala_gopher_E_g{k="1",l="x",machine_id="M"} 6"#]
    );
}

#[test]
fn pushed_records_carry_the_labels_in_their_json() {
    let d = daemon();
    set(&d.labels, "a", &[("env", "prod"), ("zone", "z1")]);
    let mut a = d.ingest.handler(Arc::new(ProbeStats::new("a")));
    let mut b = d.ingest.handler(Arc::new(ProbeStats::new("b")));
    feed(&mut a, 1000, "|t|1|x|1|\n|u|1|own|3|\n");
    feed(&mut b, 1000, "|w|1|x|4|\n");
    let pushed = d.pushed.0.lock().unwrap();
    let json: Vec<serde_json::Value> = pushed
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            metric_flat(r, "M", &mut out);
            serde_json::from_slice(&out).unwrap()
        })
        .collect();
    assert_eq!(json[0]["k"], "1");
    assert_eq!(json[0]["env"], "prod");
    assert_eq!(json[0]["zone"], "z1");
    // The table's own `env` wins; no duplicate key in the object.
    let mut out = Vec::new();
    metric_flat(&pushed[1], "M", &mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("\"env\"").count(), 1, "{text}");
    assert_eq!(json[1]["env"], "own");
    assert_eq!(json[1]["zone"], "z1");
    // The other probe's record has none.
    assert!(json[2].get("env").is_none() && json[2].get("zone").is_none());

    let mut out = Vec::new();
    metric_head(&pushed[0], "M", &mut out);
    let head: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        head["labels"],
        serde_json::json!({"k": "1", "l": "x", "env": "prod", "zone": "z1", "machine_id": "M"})
    );
}
