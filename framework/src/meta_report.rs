//! Metadata publisher: one upstream metadata JSON per table to every sink that carries the meta
//! stream — all tables at start and every `meta.report_period`, and a table as soon as it
//! appears or changes (a drop-in probe's `.meta` registered at its start).
//!
//! The message, one line per table (`keys` start with `machine_id`, `labels` with `hostname`,
//! `metrics` lists gauges and counters, as upstream):
//! `{"timestamp": TS, "meta_name": "t", "entity_name": "E", "version": "1.0.0", "keys": ["machine_id", "k"], "labels": ["hostname", "l"], "metrics": ["g", "c"]}`

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::message::json::push_str;
use crate::message::{Item, MetaMessage, Publish};
use crate::meta::{FieldKind, SchemaRef, SchemaRegistry, TableSchema};

/// How often the registry is checked for new tables.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Tables sorted by name.
fn snapshot(registry: &RwLock<SchemaRegistry>) -> Vec<SchemaRef> {
    let reg = registry.read().unwrap_or_else(|p| p.into_inner());
    let mut tables: Vec<SchemaRef> = reg.tables().cloned().collect();
    tables.sort_by(|a, b| a.table_name.cmp(&b.table_name));
    tables
}

/// Append the upstream metadata JSON of a table (no newline). `keys` start with `machine_id`,
/// `labels` with `hostname`; `metrics` lists gauges and counters (upstream omits histograms and
/// summaries).
pub fn metadata_json(schema: &TableSchema, time_ms: u64, out: &mut Vec<u8>) {
    metadata_json_with(schema, time_ms, &[], out);
}

/// [`metadata_json`] with `added` label names after the table's own (the container and pod
/// labels the daemon adds to the table's series, as upstream HEAD lists them).
pub fn metadata_json_with(schema: &TableSchema, time_ms: u64, added: &[&str], out: &mut Vec<u8>) {
    let _ = write!(out, "{{\"timestamp\": {time_ms}, \"meta_name\": ");
    push_str(out, &schema.table_name);
    out.extend_from_slice(b", \"entity_name\": ");
    push_str(out, &schema.entity_name);
    out.extend_from_slice(b", \"version\": ");
    push_str(out, &schema.version);
    let list = |out: &mut Vec<u8>, head: Option<&str>, pick: &dyn Fn(FieldKind) -> bool| {
        out.push(b'[');
        let mut first = true;
        let names = head.into_iter().chain(
            schema
                .fields
                .iter()
                .filter(|f| pick(f.kind))
                .map(|f| f.name.as_str()),
        );
        for n in names {
            if !first {
                out.extend_from_slice(b", ");
            }
            first = false;
            push_str(out, n);
        }
        out.push(b']');
    };
    out.extend_from_slice(b", \"keys\": ");
    list(out, Some("machine_id"), &|k| k == FieldKind::Key);
    out.extend_from_slice(b", \"labels\": ");
    list(out, Some("hostname"), &|k| k == FieldKind::Label);
    if !added.is_empty() {
        out.pop();
        for n in added {
            out.extend_from_slice(b", ");
            push_str(out, n);
        }
        out.push(b']');
    }
    out.extend_from_slice(b", \"metrics\": ");
    list(out, None, &|k| {
        matches!(k, FieldKind::Gauge | FieldKind::Counter)
    });
    out.push(b'}');
}

/// Publish one metadata message per table in `tables`; with `container_labels`, the labels list
/// names the container and pod labels the table's series carry.
pub fn publish(tables: &[SchemaRef], out: &dyn Publish, time_ms: u64, container_labels: bool) {
    for t in tables {
        let mut buf = Vec::with_capacity(256);
        let mut added = crate::record_labels::identity_label_names(t);
        if container_labels {
            added.extend(crate::record_labels::container_label_names(t));
        }
        metadata_json_with(t, time_ms, &added, &mut buf);
        out.publish(Item::Meta(Arc::new(MetaMessage {
            table: t.table_name.clone(),
            json: String::from_utf8(buf).unwrap_or_default(),
        })));
    }
}

/// The publisher loop (runs until aborted).
pub async fn run(
    registry: Arc<RwLock<SchemaRegistry>>,
    out: Arc<dyn Publish>,
    period: Duration,
    container_labels: bool,
) {
    let mut known: HashMap<String, SchemaRef> = HashMap::new();
    let mut last_full: Option<Instant> = None;
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let tables = snapshot(&registry);
        let full = last_full.is_none_or(|t| t.elapsed() >= period);
        let due: Vec<SchemaRef> = if full {
            last_full = Some(Instant::now());
            tables.clone()
        } else {
            tables
                .iter()
                .filter(|t| known.get(&t.table_name).is_none_or(|k| !Arc::ptr_eq(k, t)))
                .cloned()
                .collect()
        };
        if !due.is_empty() {
            tracing::debug!(tables = due.len(), full, "publishing metadata");
            publish(&due, out.as_ref(), now_ms(), container_labels);
        }
        known = tables
            .into_iter()
            .map(|t| (t.table_name.clone(), t))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn schema() -> SchemaRef {
        Arc::new(TableSchema::from_fields(
            "t",
            "E",
            &[
                ("k", FieldKind::Key),
                ("l", FieldKind::Label),
                ("g", FieldKind::Gauge),
                ("c", FieldKind::Counter),
                ("h", FieldKind::Histogram),
            ],
        ))
    }

    #[test]
    fn metadata_matches_upstream_vector_12() {
        let mut out = Vec::new();
        metadata_json(&schema(), 1681822749000, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"timestamp": 1681822749000, "meta_name": "t", "entity_name": "E", "version": "1.0.0", "keys": ["machine_id", "k"], "labels": ["hostname", "l"], "metrics": ["g", "c"]}"#
        );
    }

    #[test]
    fn process_and_container_tables_list_the_added_labels() {
        let proc = TableSchema::from_fields(
            "p",
            "proc",
            &[
                ("tgid", FieldKind::Key),
                ("comm", FieldKind::Label),
                ("g", FieldKind::Gauge),
            ],
        );
        let mut out = Vec::new();
        let added = crate::record_labels::container_label_names(&proc);
        metadata_json_with(&proc, 1, &added, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains(r#""labels": ["hostname", "comm", "container_id", "container_name", "container_image", "pod_id", "pod", "pod_namespace"]"#), "{s}");
        let con = TableSchema::from_fields(
            "c",
            "container",
            &[("container_id", FieldKind::Key), ("g", FieldKind::Gauge)],
        );
        assert_eq!(
            crate::record_labels::container_label_names(&con),
            [
                "container_name",
                "container_image",
                "pod_id",
                "pod",
                "pod_namespace"
            ]
        );
        assert!(crate::record_labels::container_label_names(&schema()).is_empty());
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<Item>>);

    impl Publish for Collect {
        fn publish(&self, item: Item) {
            self.0.lock().unwrap().push(item);
        }
    }

    #[test]
    fn one_message_per_table() {
        let out = Collect::default();
        publish(&[schema(), schema()], &out, 5, true);
        let got = out.0.lock().unwrap();
        assert_eq!(got.len(), 2);
        let Item::Meta(m) = &got[0] else { panic!() };
        assert_eq!(m.table, "t");
        assert!(m.json.starts_with(r#"{"timestamp": 5, "meta_name": "t""#));
    }
}
