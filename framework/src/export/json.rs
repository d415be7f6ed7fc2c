//! The JSON shapes consumers (gala-spider, gala-anteater) parse. Spacing follows upstream byte for
//! byte; strings are JSON-escaped (upstream printed them raw).
//!
//! * metric, v2023/HEAD Kafka and `logs` channel — every field in meta order, all values strings,
//!   absent values as the literal `"(null)"`:
//!   `{"timestamp": 1681822749000, "machine_id": "M", "entity_name": "E", "k": "a", "g": "1"}`,
//!   then the probe's custom labels (`, "env": "prod"`)
//! * metric, HEAD `json` channel (compact):
//!   `{"timestamp":…,"entity_name":"E","table_name":"t","labels":{…,"machine_id":"M"},"metrics":{…},"histos":{…}}`,
//!   custom labels in `labels` after the table's own, before `machine_id`
//!
//! Events and metadata arrive rendered (by `crate::events` and `crate::meta_report`, once for
//! every sink); [`item`] picks the bytes of any queue item.

use std::io::Write as _;

use crate::message::json::push_str;
use crate::message::{Item, OwnedRecord};
use crate::meta::FieldKind;
use crate::store::value::parse_histogram;

/// Metric line shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricFormat {
    /// Kafka and the `logs` channel: the upstream flat JSON ([`metric_flat`]).
    Flat,
    /// `json` channel: HEAD's `labels`/`metrics`/`histos` JSON ([`metric_head`]).
    Head,
}

/// Append the JSON line of any queue item (no newline): a metric record in `format`, an event
/// or metadata message as rendered by its publisher.
pub fn item(item: &Item, machine_id: &str, format: MetricFormat, out: &mut Vec<u8>) {
    match item {
        Item::Metric(r) => match format {
            MetricFormat::Flat => metric_flat(r, machine_id, out),
            MetricFormat::Head => metric_head(r, machine_id, out),
        },
        Item::Event(e) => out.extend_from_slice(e.json.as_bytes()),
        Item::Meta(m) => out.extend_from_slice(m.json.as_bytes()),
    }
}

/// Append the upstream flat metric JSON of `rec` (no newline).
pub fn metric_flat(rec: &OwnedRecord, machine_id: &str, out: &mut Vec<u8>) {
    let _ = write!(out, "{{\"timestamp\": {}, \"machine_id\": ", rec.time_ms);
    push_str(out, machine_id);
    out.extend_from_slice(b", \"entity_name\": ");
    push_str(out, &rec.schema.entity_name);
    for (field, value) in rec.schema.fields.iter().zip(rec.values()) {
        out.extend_from_slice(b", ");
        push_str(out, &field.name);
        out.extend_from_slice(b": ");
        push_str(out, value.unwrap_or("(null)"));
    }
    for (name, value) in rec.custom_labels() {
        out.extend_from_slice(b", ");
        push_str(out, name);
        out.extend_from_slice(b": ");
        push_str(out, value);
    }
    out.push(b'}');
}

/// Append the HEAD `json`-channel shape of `rec` (no newline). Unlike HEAD, counters and
/// summaries are kept in `metrics` (HEAD kept gauges only).
pub fn metric_head(rec: &OwnedRecord, machine_id: &str, out: &mut Vec<u8>) {
    let schema = &rec.schema;
    let _ = write!(out, "{{\"timestamp\":{},\"entity_name\":", rec.time_ms);
    push_str(out, &schema.entity_name);
    out.extend_from_slice(b",\"table_name\":");
    push_str(out, &schema.table_name);
    out.extend_from_slice(b",\"labels\":{");
    for (field, value) in schema.fields.iter().zip(rec.values()) {
        if let (true, Some(v)) = (field.kind.is_label(), value) {
            push_str(out, &field.name);
            out.push(b':');
            push_str(out, v);
            out.push(b',');
        }
    }
    for (name, value) in rec.custom_labels() {
        push_str(out, name);
        out.push(b':');
        push_str(out, value);
        out.push(b',');
    }
    out.extend_from_slice(b"\"machine_id\":");
    push_str(out, machine_id);
    out.extend_from_slice(b"},\"metrics\":{");
    let mut first = true;
    for (field, value) in schema.fields.iter().zip(rec.values()) {
        let plain = matches!(
            field.kind,
            FieldKind::Gauge | FieldKind::Counter | FieldKind::Summary
        );
        if let (true, Some(v)) = (plain, value) {
            if !first {
                out.push(b',');
            }
            first = false;
            push_str(out, &field.name);
            out.push(b':');
            push_str(out, v);
        }
    }
    out.extend_from_slice(b"},\"histos\":{");
    let mut first = true;
    for (field, value) in schema.fields.iter().zip(rec.values()) {
        if field.kind != FieldKind::Histogram {
            continue;
        }
        let Some(h) = value.and_then(parse_histogram) else {
            continue;
        };
        if !first {
            out.push(b',');
        }
        first = false;
        push_str(out, &field.name);
        out.extend_from_slice(b":{");
        for (bound, count) in &h.buckets {
            push_str(out, bound);
            out.push(b':');
            out.extend_from_slice(json_number(count).as_bytes());
            out.push(b',');
        }
        let _ = write!(
            out,
            "\"count\":{},\"sum\":{},\"max\":{}}}",
            json_number(h.count),
            json_number(h.sum),
            json_number(h.max)
        );
    }
    out.extend_from_slice(b"}}");
}

/// A validated number token as a JSON number (`NaN`/`Inf` have none: `null`).
fn json_number(t: &str) -> &str {
    let t = t.strip_prefix('+').unwrap_or(t);
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && !t.starts_with('.') && !t.ends_with('.') => t,
        _ => "null",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{RecordLabels, RecordView};
    use crate::meta::{SchemaRef, TableSchema};
    use std::sync::Arc;

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

    fn record(values: &[Option<&str>]) -> OwnedRecord {
        labeled(values, None)
    }

    fn labeled(values: &[Option<&str>], labels: Option<&RecordLabels>) -> OwnedRecord {
        let s = schema();
        OwnedRecord::from_view(&RecordView {
            schema: &s,
            values,
            time_ms: 1681822749000,
            probe: "p",
            custom_labels: labels,
        })
    }

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn flat_matches_upstream_vector_1_plus_escaping() {
        let r = record(&[Some("a"), Some("x"), Some("1"), Some("2"), None]);
        assert_eq!(
            text(|o| metric_flat(&r, "M", o)),
            r#"{"timestamp": 1681822749000, "machine_id": "M", "entity_name": "E", "k": "a", "l": "x", "g": "1", "c": "2", "h": "(null)"}"#
        );
        let r = record(&[Some("a\"b\\c\nd"), None, None, None, None]);
        let t = text(|o| metric_flat(&r, "M", o));
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["k"], "a\"b\\c\nd");
        assert_eq!(v["l"], "(null)");
    }

    #[test]
    fn head_shape_with_histogram() {
        let r = record(&[
            Some("a"),
            None,
            Some("1"),
            Some("2"),
            Some("3 10 1 100 3 1000 3 250 900"),
        ]);
        assert_eq!(
            text(|o| metric_head(&r, "M", o)),
            r#"{"timestamp":1681822749000,"entity_name":"E","table_name":"t","labels":{"k":"a","machine_id":"M"},"metrics":{"g":"1","c":"2"},"histos":{"h":{"10":1,"100":3,"1000":3,"count":3,"sum":250,"max":900}}}"#
        );
    }

    #[test]
    fn custom_labels_follow_the_table_fields() {
        let labels: RecordLabels = Arc::from(vec![
            ("env".to_string(), "p\"rod".to_string()),
            ("zone".to_string(), "z".to_string()),
        ]);
        let r = labeled(&[Some("a"), None, Some("1"), None, None], Some(&labels));
        assert_eq!(
            text(|o| metric_flat(&r, "M", o)),
            r#"{"timestamp": 1681822749000, "machine_id": "M", "entity_name": "E", "k": "a", "l": "(null)", "g": "1", "c": "(null)", "h": "(null)", "env": "p\"rod", "zone": "z"}"#
        );
        assert_eq!(
            text(|o| metric_head(&r, "M", o)),
            r#"{"timestamp":1681822749000,"entity_name":"E","table_name":"t","labels":{"k":"a","env":"p\"rod","zone":"z","machine_id":"M"},"metrics":{"g":"1"},"histos":{}}"#
        );
    }
}
