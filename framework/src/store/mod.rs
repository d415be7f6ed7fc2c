//! Table store ("imdb"): per table, the latest record per key tuple.
//!
//! Architecture invariant: no I/O here. Label strings are rendered once when a record's labels
//! change, never at scrape time. Memory is bounded by `max_tables_num × max_records_num` rows.

pub mod value;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use indexmap::IndexMap;

/// Row map: first-seen order, fast non-cryptographic hashing (keys come from local probes).
type RowMap = IndexMap<String, Row, foldhash::fast::RandomState>;

use crate::meta::{Derive, FieldKind, SchemaRef};
use crate::telemetry::DropReason;
use crate::wire::{unescape_into, value_is_absent};

/// Caps and expiry.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// `imdb.max_tables_num`.
    pub max_tables: usize,
    /// `imdb.max_records_num` (per table).
    pub max_records: usize,
    /// `imdb.record_timeout` in milliseconds.
    pub record_timeout_ms: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_tables: 1024,
            max_records: 1024,
            record_timeout_ms: 60_000,
        }
    }
}

/// Labels the daemon adds after a table's own labels (a probe's custom labels for this table,
/// name-sorted, already validated): the same `Arc` for every record until the set changes, so a
/// row compares it by pointer.
pub type ExtraLabels = Arc<[(String, String)]>;

/// The latest record for one key tuple.
#[derive(Debug, Clone)]
pub struct Row {
    labels: String,
    label_src: String,
    /// The extra labels `labels` was rendered with.
    extra: Option<ExtraLabels>,
    text: String,
    spans: Vec<Option<(u32, u32)>>,
    updated_ms: u64,
    /// The probe's running totals of the fields the store exports per period
    /// ([`Derive::Delta`]), by field index; empty for tables without such fields.
    totals: Vec<Option<value::Total>>,
}

impl Row {
    /// Rendered Prometheus label set without braces, e.g. `k="a",machine_id="m"`.
    pub fn labels(&self) -> &str {
        &self.labels
    }

    /// Unescaped value of field `i`, `None` if absent or invalid.
    pub fn value(&self, i: usize) -> Option<&str> {
        let (s, e) = (*self.spans.get(i)?)?;
        self.text.get(s as usize..e as usize)
    }

    /// Unix time in ms of the last update.
    pub fn updated_ms(&self) -> u64 {
        self.updated_ms
    }
}

/// One table: its schema and its rows in first-seen order.
#[derive(Debug)]
pub struct Table {
    schema: SchemaRef,
    rows: RowMap,
}

impl Table {
    /// Schema the rows follow.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows in first-seen order.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.values()
    }

    /// Number of live rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Reusable buffers for [`TableStore::upsert`], one per ingest task.
#[derive(Debug, Default)]
pub struct Scratch {
    key: String,
    label_src: String,
    text: String,
    spans: Vec<Option<(u32, u32)>>,
    /// The values as exported after [`Derive`] (tables with derived fields only).
    derived_text: String,
    derived_spans: Vec<Option<(u32, u32)>>,
    /// Whether `derived_*` hold the last upsert's record.
    derived_ok: bool,
    /// Whether to keep the exported values of derived records (a push path wants them).
    keep_derived: bool,
}

impl Scratch {
    /// Keep the exported values of each record of a table with derived fields for
    /// [`Scratch::derived_values`] (off by default: a copy per record nobody reads).
    pub fn keep_derived(&mut self, keep: bool) {
        self.keep_derived = keep;
    }

    /// The exported values of the last upserted record of a table with derived fields
    /// ([`crate::meta::TableSchema::derives`]): per-period changes and scaled totals in place
    /// of the probe's running totals, unescaped. `None` if the last upsert was refused or its
    /// table derives nothing (the probe's values are then the exported ones).
    pub fn derived_values(&self) -> Option<impl Iterator<Item = Option<&str>> + '_> {
        self.derived_ok.then(|| {
            self.derived_spans
                .iter()
                .map(|s| s.and_then(|(a, b)| self.derived_text.get(a as usize..b as usize)))
        })
    }
}

/// Result of a successful upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    /// Metric values that were not numbers (or malformed histograms) and were left out.
    pub bad_values: u32,
    /// Whether a new series (key tuple) was created.
    pub new_row: bool,
}

/// Store-wide counters.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// New tables refused at `max_tables_num`.
    pub dropped_table_limit: AtomicU64,
    /// New keys refused at `max_records_num`.
    pub dropped_record_limit: AtomicU64,
    /// Rows removed after `record_timeout` without update.
    pub expired: AtomicU64,
}

/// All tables.
#[derive(Debug)]
pub struct TableStore {
    tables: RwLock<HashMap<String, Arc<Mutex<Table>>, foldhash::fast::RandomState>>,
    limits: StoreLimits,
    machine_id: String,
    /// Drop and expiry counters (exported as self-metrics).
    pub counters: StoreCounters,
}

fn lock(t: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // A panic while holding the lock cannot leave a row half-written in a way that matters more
    // than losing the table, so keep serving.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Append `v` to `out` escaped as a Prometheus label value.
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl TableStore {
    /// An empty store; `machine_id` is added as the last label of every series.
    pub fn new(limits: StoreLimits, machine_id: &str) -> Self {
        TableStore {
            tables: RwLock::new(HashMap::default()),
            limits,
            machine_id: machine_id.to_string(),
            counters: StoreCounters::default(),
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Insert or update the record `raw` (raw, still-escaped values in field order) of `schema`.
    pub fn upsert(
        &self,
        schema: &SchemaRef,
        raw: &[&str],
        now_ms: u64,
        scratch: &mut Scratch,
    ) -> Result<Upserted, DropReason> {
        self.upsert_with(schema, raw, now_ms, scratch, None)
    }

    /// [`TableStore::upsert`] with `extra` labels rendered after the table's own labels (before
    /// `machine_id`). A row is re-rendered when its labels or its `extra` set (compared by
    /// pointer) change; the key tuple, and so the row, stays the same.
    pub fn upsert_with(
        &self,
        schema: &SchemaRef,
        raw: &[&str],
        now_ms: u64,
        scratch: &mut Scratch,
        extra: Option<&ExtraLabels>,
    ) -> Result<Upserted, DropReason> {
        if raw.len() != schema.fields.len() {
            return Err(DropReason::FieldCount);
        }
        scratch.derived_ok = false;
        let Scratch {
            key,
            label_src,
            text,
            spans,
            derived_text,
            derived_spans,
            derived_ok,
            keep_derived,
        } = scratch;
        let out = keep_derived.then_some((derived_text, derived_spans));
        key.clear();
        label_src.clear();
        text.clear();
        spans.clear();
        let mut bad_values = 0u32;
        for (field, raw_v) in schema.fields.iter().zip(raw) {
            if value_is_absent(raw_v) {
                if field.kind == FieldKind::Key {
                    return Err(DropReason::EmptyKey);
                }
                if field.kind.is_label() {
                    label_src.push('\u{1e}');
                }
                spans.push(None);
                continue;
            }
            let start = text.len();
            unescape_into(raw_v, text);
            let end = text.len();
            let v = &text[start..end];
            let valid = match field.kind {
                FieldKind::Gauge | FieldKind::Counter | FieldKind::Summary => value::is_number(v),
                FieldKind::Histogram => value::parse_histogram(v).is_some(),
                _ => true,
            };
            if field.kind == FieldKind::Key {
                key.push_str(v);
                key.push('\u{1f}');
            }
            if field.kind.is_label() {
                label_src.push_str(v);
                label_src.push('\u{1f}');
            }
            if valid {
                spans.push(Some((start as u32, end as u32)));
            } else {
                bad_values += 1;
                text.truncate(start);
                spans.push(None);
            }
        }

        let table = self.table_for(schema)?;
        let mut t = lock(&table);
        if !Arc::ptr_eq(&t.schema, schema) {
            // The table's schema was replaced (meta reloaded): old rows no longer line up.
            t.rows.clear();
            t.schema = Arc::clone(schema);
        }
        let max_records = self.limits.max_records;
        let rows_len = t.rows.len();
        let (row, new_row) = match t.rows.get_mut(key.as_str()) {
            Some(row) => {
                if schema.derives {
                    *derived_ok = derive(schema, text, spans, &mut row.totals, out);
                }
                std::mem::swap(&mut row.text, text);
                std::mem::swap(&mut row.spans, spans);
                let same_extra = match (&row.extra, extra) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    _ => false,
                };
                if row.label_src != *label_src || !same_extra {
                    std::mem::swap(&mut row.label_src, label_src);
                    row.extra = extra.cloned();
                    render_labels(schema, row, &self.machine_id);
                }
                row.updated_ms = now_ms;
                return Ok(Upserted {
                    bad_values,
                    new_row: false,
                });
            }
            None => {
                if rows_len >= max_records {
                    self.counters
                        .dropped_record_limit
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(DropReason::StoreFull);
                }
                let mut totals = Vec::new();
                if schema.derives {
                    *derived_ok = derive(schema, text, spans, &mut totals, out);
                }
                let mut row = Row {
                    labels: String::new(),
                    label_src: label_src.clone(),
                    extra: extra.cloned(),
                    text: text.clone(),
                    spans: spans.clone(),
                    updated_ms: now_ms,
                    totals,
                };
                render_labels(schema, &mut row, &self.machine_id);
                (row, true)
            }
        };
        t.rows.insert(key.clone(), row);
        Ok(Upserted {
            bad_values,
            new_row,
        })
    }

    fn table_for(&self, schema: &SchemaRef) -> Result<Arc<Mutex<Table>>, DropReason> {
        {
            let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = tables.get(&schema.table_name) {
                return Ok(Arc::clone(t));
            }
        }
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tables.get(&schema.table_name) {
            return Ok(Arc::clone(t));
        }
        if tables.len() >= self.limits.max_tables {
            self.counters
                .dropped_table_limit
                .fetch_add(1, Ordering::Relaxed);
            return Err(DropReason::StoreFull);
        }
        let t = Arc::new(Mutex::new(Table {
            schema: Arc::clone(schema),
            rows: RowMap::default(),
        }));
        tables.insert(schema.table_name.clone(), Arc::clone(&t));
        Ok(t)
    }

    /// Remove rows not updated within `record_timeout`; returns how many were removed.
    /// Empty tables are removed too, so a retired probe's tables do not linger.
    pub fn expire(&self, now_ms: u64) -> usize {
        let timeout = self.limits.record_timeout_ms;
        let mut removed = 0;
        let mut empty = Vec::new();
        for (name, table) in self.snapshot_named() {
            let mut t = lock(&table);
            let before = t.rows.len();
            t.rows
                .retain(|_, r| now_ms.saturating_sub(r.updated_ms) <= timeout);
            removed += before - t.rows.len();
            if t.rows.is_empty() {
                empty.push(name);
            }
        }
        if !empty.is_empty() {
            let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
            for name in empty {
                let still_empty = tables.get(&name).is_some_and(|t| lock(t).rows.is_empty());
                if still_empty {
                    tables.remove(&name);
                }
            }
        }
        self.counters
            .expired
            .fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    fn snapshot_named(&self) -> Vec<(String, Arc<Mutex<Table>>)> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = tables
            .iter()
            .map(|(k, t)| (k.clone(), Arc::clone(t)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// All tables sorted by name.
    pub fn tables(&self) -> Vec<Arc<Mutex<Table>>> {
        self.snapshot_named().into_iter().map(|(_, t)| t).collect()
    }

    /// Run `f` with the locked table.
    pub fn with_table<R>(table: &Mutex<Table>, f: impl FnOnce(&Table) -> R) -> R {
        f(&lock(table))
    }

    /// Live rows per table, sorted by table name.
    pub fn series_per_table(&self) -> Vec<(String, usize)> {
        self.snapshot_named()
            .into_iter()
            .map(|(n, t)| {
                let len = lock(&t).rows.len();
                (n, len)
            })
            .collect()
    }

    /// Machine id used as the last label.
    pub fn machine_id(&self) -> &str {
        &self.machine_id
    }
}

/// Value spans of a record: field index → byte range in its text, `None` if absent.
type Spans = Vec<Option<(u32, u32)>>;

/// Apply the schema's [`Derive`]s to a record (`text`/`spans`, in place: a derived value is
/// appended to `text` and its span repointed), with `totals` the row's previous running totals
/// (updated). The exported values are also copied into `out`, if given, for the push path;
/// returns whether they were.
fn derive(
    schema: &SchemaRef,
    text: &mut String,
    spans: &mut [Option<(u32, u32)>],
    totals: &mut Vec<Option<value::Total>>,
    out: Option<(&mut String, &mut Spans)>,
) -> bool {
    if totals.len() != schema.fields.len() {
        totals.clear();
        totals.resize(schema.fields.len(), None);
    }
    for (i, f) in schema.fields.iter().enumerate() {
        if f.derive == Derive::None {
            continue;
        }
        let Some((a, b)) = spans[i] else {
            continue;
        };
        let parsed = value::Total::parse(&text[a as usize..b as usize]);
        let start = text.len();
        match (f.derive, parsed) {
            (Derive::Delta, Some(cur)) => {
                cur.delta_since(totals[i], text);
                totals[i] = Some(cur);
            }
            (Derive::Scale(factor), Some(cur)) => {
                value::push_number(value::scale(cur.as_f64(), factor), text)
            }
            (Derive::Delta, None) => {
                // Not a number a total can be (NaN, ±Inf): leave it out rather than export a
                // wrong change, and start again from the next total.
                totals[i] = None;
                spans[i] = None;
                continue;
            }
            _ => continue,
        }
        spans[i] = Some((start as u32, text.len() as u32));
    }
    let Some((out_text, out_spans)) = out else {
        return false;
    };
    out_text.clear();
    out_text.push_str(text);
    out_spans.clear();
    out_spans.extend_from_slice(spans);
    true
}

fn render_labels(schema: &SchemaRef, row: &mut Row, machine_id: &str) {
    let mut out = std::mem::take(&mut row.labels);
    out.clear();
    let mut has_machine_id = false;
    for (i, f) in schema.fields.iter().enumerate() {
        if !f.kind.is_label() {
            continue;
        }
        has_machine_id |= f.name == "machine_id";
        if let Some(v) = row.value(i) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&f.name);
            out.push_str("=\"");
            escape_label_value(v, &mut out);
            out.push('"');
        }
    }
    for (name, v) in row.extra.iter().flat_map(|e| e.iter()) {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(v, &mut out);
        out.push('"');
    }
    if !has_machine_id {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str("machine_id=\"");
        escape_label_value(machine_id, &mut out);
        out.push('"');
    }
    row.labels = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::TableSchema;

    fn schema() -> SchemaRef {
        Arc::new(TableSchema::from_fields(
            "t",
            "E",
            &[
                ("k", FieldKind::Key),
                ("l", FieldKind::Label),
                ("g", FieldKind::Gauge),
                ("c", FieldKind::Counter),
            ],
        ))
    }

    fn store(max_records: usize) -> TableStore {
        TableStore::new(
            StoreLimits {
                max_tables: 2,
                max_records,
                record_timeout_ms: 1000,
            },
            "M",
        )
    }

    fn rows(s: &TableStore) -> Vec<(String, Vec<Option<String>>)> {
        let mut out = Vec::new();
        for t in s.tables() {
            TableStore::with_table(&t, |t| {
                for r in t.rows() {
                    let vals = (0..4).map(|i| r.value(i).map(str::to_string)).collect();
                    out.push((r.labels().to_string(), vals));
                }
            });
        }
        out
    }

    fn derived_schema(derive: Derive) -> SchemaRef {
        let mut t = TableSchema::from_fields(
            "d",
            "E",
            &[
                ("k", FieldKind::Key),
                ("c", FieldKind::Gauge),
                ("g", FieldKind::Gauge),
            ],
        );
        t.fields[1].derive = derive;
        Arc::new(t.with_derives_noted())
    }

    fn exported(sc: &Scratch) -> Vec<Option<String>> {
        sc.derived_values()
            .expect("derived values")
            .map(|v| v.map(str::to_string))
            .collect()
    }

    #[test]
    fn delta_fields_export_the_change_per_row_and_restart_from_a_lower_total() {
        let s = store(10);
        let sc = &mut Scratch::default();
        sc.keep_derived(true);
        let sch = derived_schema(Derive::Delta);
        let mut seen = Vec::new();
        for (key, total) in [
            ("a", "100"),
            ("b", "7"),
            ("a", "150"),
            ("a", "150"),
            ("b", "9.5"),
            ("a", "40"),
            ("a", "18446744073709551615"),
        ] {
            s.upsert(&sch, &[key, total, "3"], 0, sc).unwrap();
            let v = exported(sc);
            assert_eq!(v[0].as_deref(), Some(key));
            assert_eq!(v[2].as_deref(), Some("3"), "plain fields pass through");
            seen.push(v[1].clone().unwrap());
        }
        // first record = the total; then the change; a lower total (probe restart) = itself;
        // whole numbers stay exact up to u64::MAX.
        assert_eq!(
            seen,
            ["100", "7", "50", "0", "2.5", "40", "18446744073709551575"]
        );
        let r = rows(&s);
        assert_eq!(r[0].1[1].as_deref(), Some("18446744073709551575"));
        assert_eq!(r[1].1[1].as_deref(), Some("2.5"));
    }

    #[test]
    fn scale_and_absent_values_and_refused_rows() {
        let s = store(1);
        let sc = &mut Scratch::default();
        sc.keep_derived(true);
        let sch = derived_schema(Derive::Scale(1e-9));
        s.upsert(&sch, &["a", "2500000000", ""], 0, sc).unwrap();
        assert_eq!(exported(sc), [Some("a".into()), Some("2.5".into()), None]);
        // A refused new key leaves nothing to forward.
        assert_eq!(
            s.upsert(&sch, &["b", "1", "1"], 0, sc),
            Err(DropReason::StoreFull)
        );
        assert!(sc.derived_values().is_none());
        // A total that is no number a total can be (NaN, infinities) is left out, not derived.
        let delta = derived_schema(Derive::Delta);
        s.upsert(&delta, &["a", "NaN", "1"], 0, sc).unwrap();
        assert_eq!(exported(sc)[1], None);
        s.upsert(&delta, &["a", "+Inf", "1"], 0, sc).unwrap();
        assert_eq!(exported(sc)[1], None);
        s.upsert(&delta, &["a", "5", "1"], 0, sc).unwrap();
        assert_eq!(
            exported(sc)[1].as_deref(),
            Some("5"),
            "counts again from the next total"
        );
        // A table without derived fields never fills the derived buffers.
        s.upsert(&schema(), &["a", "x", "1", "2"], 0, sc).unwrap();
        assert!(sc.derived_values().is_none());
    }

    #[test]
    fn latest_value_per_key_wins() {
        let s = store(10);
        let sc = &mut Scratch::default();
        let sch = schema();
        s.upsert(&sch, &["a", "x", "1", "2"], 0, sc).unwrap();
        s.upsert(&sch, &["a", "x", "5", "6"], 1, sc).unwrap();
        s.upsert(&sch, &["b", "", "7", "(null)"], 1, sc).unwrap();
        let r = rows(&s);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, r#"k="a",l="x",machine_id="M""#);
        assert_eq!(r[0].1[2].as_deref(), Some("5"));
        assert_eq!(r[1].0, r#"k="b",machine_id="M""#);
        assert_eq!(r[1].1[3], None);
    }

    #[test]
    fn labels_rerendered_on_change_and_escaped() {
        let s = store(10);
        let sc = &mut Scratch::default();
        let sch = schema();
        s.upsert(&sch, &["a", "x", "1", "2"], 0, sc).unwrap();
        s.upsert(&sch, &["a", r#"q"u\\o\nte"#, "1", "2"], 0, sc)
            .unwrap();
        assert_eq!(rows(&s)[0].0, r#"k="a",l="q\"u\\o\nte",machine_id="M""#);
    }

    #[test]
    fn rejects_bad_shapes() {
        let s = store(10);
        let sc = &mut Scratch::default();
        let sch = schema();
        assert_eq!(
            s.upsert(&sch, &["a", "x", "1"], 0, sc),
            Err(DropReason::FieldCount)
        );
        assert_eq!(
            s.upsert(&sch, &["a", "x", "1", "2", "3"], 0, sc),
            Err(DropReason::FieldCount)
        );
        assert_eq!(
            s.upsert(&sch, &["", "x", "1", "2"], 0, sc),
            Err(DropReason::EmptyKey)
        );
        assert_eq!(
            s.upsert(&sch, &["(null)", "x", "1", "2"], 0, sc),
            Err(DropReason::EmptyKey)
        );
        let up = s.upsert(&sch, &["a", "x", "abc", "2"], 0, sc).unwrap();
        assert_eq!(up.bad_values, 1);
        assert_eq!(rows(&s)[0].1[2], None);
        assert_eq!(rows(&s)[0].1[3].as_deref(), Some("2"));
    }

    #[test]
    fn caps_new_keys_but_updates_existing() {
        let s = store(2);
        let sc = &mut Scratch::default();
        let sch = schema();
        s.upsert(&sch, &["a", "", "1", "1"], 0, sc).unwrap();
        s.upsert(&sch, &["b", "", "1", "1"], 0, sc).unwrap();
        assert_eq!(
            s.upsert(&sch, &["c", "", "1", "1"], 0, sc),
            Err(DropReason::StoreFull)
        );
        s.upsert(&sch, &["a", "", "9", "9"], 0, sc).unwrap();
        assert_eq!(rows(&s)[0].1[2].as_deref(), Some("9"));
        assert_eq!(s.counters.dropped_record_limit.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn extra_labels_follow_table_labels_and_rerender_on_change() {
        let s = store(10);
        let sc = &mut Scratch::default();
        let sch = schema();
        let set = |p: &[(&str, &str)]| -> ExtraLabels {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
                .into()
        };
        let a = set(&[("env", "p\"q"), ("zone", "z")]);
        s.upsert_with(&sch, &["a", "x", "1", "2"], 0, sc, Some(&a))
            .unwrap();
        s.upsert_with(&sch, &["b", "", "1", "2"], 0, sc, Some(&a))
            .unwrap();
        let r = rows(&s);
        assert_eq!(r[0].0, r#"k="a",l="x",env="p\"q",zone="z",machine_id="M""#);
        assert_eq!(r[1].0, r#"k="b",env="p\"q",zone="z",machine_id="M""#);
        // A new set (another Arc) re-renders on the next update; same key, same row.
        let b = set(&[("env", "dev")]);
        s.upsert_with(&sch, &["a", "x", "3", "4"], 1, sc, Some(&b))
            .unwrap();
        let r = rows(&s);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, r#"k="a",l="x",env="dev",machine_id="M""#);
        assert_eq!(r[1].0, r#"k="b",env="p\"q",zone="z",machine_id="M""#);
        // Cleared: back to the table's own labels.
        s.upsert(&sch, &["a", "x", "3", "4"], 2, sc).unwrap();
        assert_eq!(rows(&s)[0].0, r#"k="a",l="x",machine_id="M""#);
    }

    #[test]
    fn expiry_removes_stale_rows_and_empty_tables() {
        let s = store(10);
        let sc = &mut Scratch::default();
        let sch = schema();
        s.upsert(&sch, &["a", "", "1", "1"], 0, sc).unwrap();
        s.upsert(&sch, &["b", "", "1", "1"], 900, sc).unwrap();
        assert_eq!(s.expire(1500), 1);
        assert_eq!(rows(&s).len(), 1);
        assert_eq!(s.expire(5000), 1);
        assert!(s.tables().is_empty());
    }
}
