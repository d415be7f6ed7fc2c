//! `.meta` schemas: what each probe table looks like.
//!
//! A `.meta` file (libconfig syntax) declares one or more tables. Each table has a name (the first
//! token of a record line), an entity name (the Prometheus metric prefix) and an ordered list of
//! fields; a record line carries exactly one value per field, in this order.

mod cache;
mod loader;

pub use cache::{MetaCache, MetaCounters};
pub use loader::{
    load_dir, load_dir_with, load_file, load_file_stamped, load_file_with, meta_files_in,
    read_meta_text, tables_from_document, tables_within, FileStamp, MetaError, MetaLimit,
    MetaLimits, MetricClash, SchemaRegistry, DEFAULT_MAX_FIELDS, DEFAULT_META_VERSION,
    MAX_DESCRIPTION_BYTES, MAX_META_FILE_BYTES, MAX_NAME_BYTES, MAX_TABLES_PER_FILE,
    META_REFUSAL_REASONS,
};
/// What a field is (key, label, gauge, counter, histogram, summary, or stored-only): the
/// contract's kinds, shared with probes through the `record_line` crate.
pub use record_line::FieldKind;

use std::sync::Arc;

/// How `metric.counter_mode` exports a counter declared `period: "delta"` (a running total
/// written by the probe whose upstream meaning is its change per period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterMode {
    /// Upstream's meaning under upstream's name (the default): the change since the row's
    /// previous record, as a gauge. What gala-spider and gala-anteater read.
    #[default]
    Upstream,
    /// Prometheus-native: the running total as a counter named `total_name` (default
    /// `<name>_total`), scaled to base units by `total_scale`.
    Prometheus,
}

/// What the table store does to a field's value before it is kept and exported.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Derive {
    /// Keep the probe's value.
    #[default]
    None,
    /// Replace the running total by its change since the row's previous record (the running
    /// total itself for a row's first record, and after the total went down: a probe restart).
    Delta,
    /// Multiply by this factor (a running total in base units).
    Scale(f64),
}

/// One field of a table, in record order.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Field name as exported: the Prometheus label name or metric suffix (for a per-period
    /// counter in Prometheus mode, its `total_name`).
    pub name: String,
    /// Field kind as exported (a per-period counter is a gauge in upstream mode).
    pub kind: FieldKind,
    /// Human description, used for `# HELP`.
    pub description: String,
    /// What the store does to the value.
    pub derive: Derive,
    /// The `type` the `.meta` file declared (before [`CounterMode`] applied).
    pub declared: FieldKind,
    /// Whether the `.meta` file declared `period: "delta"`.
    pub per_period: bool,
}

impl Field {
    /// A plain field (declared as exported, no derivation).
    pub fn new(name: impl Into<String>, kind: FieldKind, description: impl Into<String>) -> Field {
        Field {
            name: name.into(),
            kind,
            description: description.into(),
            derive: Derive::None,
            declared: kind,
            per_period: false,
        }
    }
}

/// A table declared by a `.meta` file.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    /// Name used as the first token of record lines.
    pub table_name: String,
    /// Entity name; metric names are `gala_gopher_<entity>_<field>`.
    pub entity_name: String,
    /// `version` of the meta file the table came from.
    pub version: String,
    /// Fields in record order.
    pub fields: Vec<Field>,
    /// File and line the table was declared at (for error messages).
    pub origin: String,
    /// Whether any field has a [`Derive`] other than `None` (the store's fast path skips them).
    pub derives: bool,
    /// A trace table (`.meta`: `kind = "trace"`): one record per event (a request, a span), not
    /// a series. Its records are never kept in the store nor shown on `/metrics`; they go to
    /// the push sinks (Kafka, logs, json) as they come.
    pub trace: bool,
}

impl TableSchema {
    /// A schema declared in code rather than by a `.meta` file (tests, benchmarks): version
    /// `1.0.0`, each field described as `"<name> help"`.
    pub fn from_fields(table: &str, entity: &str, fields: &[(&str, FieldKind)]) -> TableSchema {
        TableSchema {
            table_name: table.into(),
            entity_name: entity.into(),
            version: "1.0.0".into(),
            fields: fields
                .iter()
                .map(|&(name, kind)| Field::new(name, kind, format!("{name} help")))
                .collect(),
            origin: format!("built-in table {table}"),
            derives: false,
            trace: false,
        }
    }

    /// `self` with [`TableSchema::derives`] computed from its fields.
    pub fn with_derives_noted(mut self) -> TableSchema {
        self.derives = self.fields.iter().any(|f| f.derive != Derive::None);
        self
    }

    /// Indices of the key fields, in order.
    pub fn key_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind == FieldKind::Key)
            .map(|(i, _)| i)
    }
}

/// Shared, immutable schema handle.
pub type SchemaRef = Arc<TableSchema>;
