//! Metric records on their way from ingest to the push sinks: borrowed on the ingest path
//! ([`RecordView`]), copied once into a shared [`OwnedRecord`] for the sink queues.

use std::sync::Arc;

use crate::meta::SchemaRef;

/// Labels the daemon adds to a record (the probe's custom labels that do not collide with a
/// field of the table), name-sorted; one shared allocation per label-set change.
pub type RecordLabels = Arc<[(String, String)]>;

/// A record as push sinks see it: unescaped values in field order, `None` = absent.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Table schema.
    pub schema: &'a SchemaRef,
    /// Values in field order (`None` for empty / `(null)`).
    pub values: &'a [Option<&'a str>],
    /// Ingest time, Unix milliseconds.
    pub time_ms: u64,
    /// Probe that produced it.
    pub probe: &'a str,
    /// Custom labels to add (after the table's own labels), `None` if none.
    pub custom_labels: Option<&'a RecordLabels>,
}

/// Receives every accepted record (called on the ingest path: must not block; queue and return).
pub trait RecordSink: Send + Sync + 'static {
    /// Handle one record.
    fn record(&self, rec: &RecordView<'_>);
}

/// A metric record owned by the queues: values unescaped, concatenated in one string.
#[derive(Debug)]
pub struct OwnedRecord {
    /// Table schema.
    pub schema: SchemaRef,
    /// Ingest time, Unix milliseconds.
    pub time_ms: u64,
    custom_labels: Option<RecordLabels>,
    text: String,
    /// `(start, end)` of each value in `text`; `start == u32::MAX` = absent.
    spans: Vec<(u32, u32)>,
}

const ABSENT: u32 = u32::MAX;

impl OwnedRecord {
    /// Copy a borrowed record.
    pub fn from_view(rec: &RecordView<'_>) -> Self {
        let len: usize = rec.values.iter().map(|v| v.map_or(0, str::len)).sum();
        let mut text = String::with_capacity(len);
        let mut spans = Vec::with_capacity(rec.values.len());
        for v in rec.values {
            match v {
                Some(v) => {
                    let start = text.len();
                    text.push_str(v);
                    spans.push((start as u32, text.len() as u32));
                }
                None => spans.push((ABSENT, 0)),
            }
        }
        OwnedRecord {
            schema: rec.schema.clone(),
            time_ms: rec.time_ms,
            custom_labels: rec.custom_labels.cloned(),
            text,
            spans,
        }
    }

    /// Custom labels to add after the table's own labels (name, value), name-sorted.
    pub fn custom_labels(&self) -> &[(String, String)] {
        self.custom_labels.as_deref().unwrap_or(&[])
    }

    /// Number of values (the schema's field count).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the record has no values.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Value `i`, `None` if absent (or out of range).
    pub fn value(&self, i: usize) -> Option<&str> {
        let (a, b) = *self.spans.get(i)?;
        if a == ABSENT {
            return None;
        }
        self.text.get(a as usize..b as usize)
    }

    /// Values in field order.
    pub fn values(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        (0..self.spans.len()).map(|i| self.value(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{FieldKind, TableSchema};
    use std::sync::Arc;

    #[test]
    fn owned_copy_keeps_values_and_absence() {
        let schema: SchemaRef = Arc::new(TableSchema::from_fields(
            "t",
            "E",
            &[
                ("k", FieldKind::Key),
                ("g", FieldKind::Gauge),
                ("c", FieldKind::Counter),
            ],
        ));
        let r = OwnedRecord::from_view(&RecordView {
            schema: &schema,
            values: &[Some("a|b"), None, Some("")],
            time_ms: 7,
            probe: "p",
            custom_labels: None,
        });
        assert_eq!(r.len(), 3);
        assert_eq!(
            r.values().collect::<Vec<_>>(),
            [Some("a|b"), None, Some("")]
        );
        assert_eq!(r.value(3), None);
        assert_eq!(r.time_ms, 7);
        assert!(r.custom_labels().is_empty());
        let labels: RecordLabels = Arc::from(vec![("env".to_string(), "prod".to_string())]);
        let r = OwnedRecord::from_view(&RecordView {
            schema: &schema,
            values: &[Some("a"), None, None],
            time_ms: 7,
            probe: "p",
            custom_labels: Some(&labels),
        });
        assert_eq!(r.custom_labels(), &labels[..]);
    }
}
