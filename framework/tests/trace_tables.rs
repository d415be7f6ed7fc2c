//! Trace tables (`.meta` `kind = "trace"`): one record per request, never kept in the store nor
//! shown on `/metrics`, handed to the push sinks as they come; without a push channel they are
//! dropped and counted (`no_push_channel`).

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use gala_gopher::export::json::metric_flat;
use gala_gopher::export::prometheus::{render, RenderOptions};
use gala_gopher::ingest::{Ingest, LineHandler, LogEvents};
use gala_gopher::message::{OwnedRecord, RecordSink, RecordView};
use gala_gopher::meta::{FieldKind, SchemaRegistry, TableSchema};
use gala_gopher::store::{StoreLimits, TableStore};
use gala_gopher::telemetry::{DropReason, ProbeStats};
use gala_gopher::wire::Framer;

/// `req_trace` (a trace table: key `id`, label `api`, gauge `took_ns`) and `req` (metrics).
fn registry() -> SchemaRegistry {
    let fields = [
        ("id", FieldKind::Key),
        ("api", FieldKind::Label),
        ("took_ns", FieldKind::Gauge),
    ];
    let mut trace = TableSchema::from_fields("req_trace", "req_trace", &fields);
    trace.trace = true;
    let metrics = TableSchema::from_fields("req", "req", &fields);
    let mut reg = SchemaRegistry::new();
    reg.install(
        Path::new("/trace/a.meta"),
        &[Arc::new(trace), Arc::new(metrics)],
    )
    .unwrap();
    reg
}

#[derive(Default)]
struct Capture(Mutex<Vec<OwnedRecord>>);

impl RecordSink for Capture {
    fn record(&self, rec: &RecordView<'_>) {
        self.0.lock().unwrap().push(OwnedRecord::from_view(rec));
    }
}

fn ingest(store: &Arc<TableStore>, sink: Option<Arc<Capture>>) -> Ingest {
    let i = Ingest::new(
        Arc::new(RwLock::new(registry())),
        Arc::clone(store),
        Arc::new(LogEvents),
        65536,
        64,
    );
    match sink {
        Some(s) => i.with_record_sink(s as Arc<dyn RecordSink>),
        None => i,
    }
}

fn feed(h: &mut LineHandler, now_ms: u64, text: &str) {
    h.begin_chunk(now_ms);
    let mut framer = Framer::new(65536);
    framer.push(text.as_bytes(), |l| h.handle(l));
    framer.finish(|l| h.handle(l));
}

const LINES: &str = "|req_trace|r1|GET /a|1500|\n|req_trace|r2|GET /b|2500|\n\
                     |req_trace||GET /c|1|\n|req_trace|r3|x|\n|req|1|GET /a|7|\n";

#[test]
fn trace_records_go_to_the_push_sinks_only() {
    let store = Arc::new(TableStore::new(StoreLimits::default(), "M"));
    let pushed = Arc::new(Capture::default());
    let ingest = ingest(&store, Some(Arc::clone(&pushed)));
    let stats = Arc::new(ProbeStats::new("p"));
    let mut h = ingest.handler(Arc::clone(&stats));
    feed(&mut h, 1000, LINES);

    let mut metrics = String::new();
    render(&store, RenderOptions::default(), 1000, &mut metrics);
    assert!(!metrics.contains("req_trace"), "{metrics}");
    assert!(metrics.contains("gala_gopher_req_took_ns{"), "{metrics}");

    let pushed = pushed.0.lock().unwrap();
    let tables: Vec<(&str, Vec<Option<&str>>)> = pushed
        .iter()
        .map(|r| (r.schema.table_name.as_str(), r.values().collect()))
        .collect();
    assert_eq!(
        tables,
        [
            ("req_trace", vec![Some("r1"), Some("GET /a"), Some("1500")]),
            ("req_trace", vec![Some("r2"), Some("GET /b"), Some("2500")]),
            ("req", vec![Some("1"), Some("GET /a"), Some("7")]),
        ]
    );
    // A record with an empty key or the wrong field count is refused and counted, as any.
    assert_eq!(stats.dropped(DropReason::EmptyKey), 1);
    assert_eq!(stats.dropped(DropReason::FieldCount), 1);
    assert_eq!(stats.dropped(DropReason::NoPushChannel), 0);
    // The push JSON of a trace record is the one of any record (Kafka, log files).
    let mut json = Vec::new();
    metric_flat(&pushed[0], "M", &mut json);
    let json = String::from_utf8(json).unwrap();
    assert!(json.contains("\"entity_name\": \"req_trace\""), "{json}");
    assert!(json.contains("\"took_ns\": \"1500\""), "{json}");
}

#[test]
fn without_a_push_channel_trace_records_are_dropped_and_counted() {
    let store = Arc::new(TableStore::new(StoreLimits::default(), "M"));
    let ingest = ingest(&store, None);
    let stats = Arc::new(ProbeStats::new("p"));
    let mut h = ingest.handler(Arc::clone(&stats));
    feed(&mut h, 1000, LINES);
    assert_eq!(stats.dropped(DropReason::NoPushChannel), 2);
    let mut metrics = String::new();
    render(&store, RenderOptions::default(), 1000, &mut metrics);
    assert!(!metrics.contains("req_trace"), "{metrics}");
}
