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
    MetaLimits, SchemaRegistry, DEFAULT_MAX_FIELDS, DEFAULT_META_VERSION, MAX_DESCRIPTION_BYTES,
    MAX_META_FILE_BYTES, MAX_NAME_BYTES, MAX_TABLES_PER_FILE, META_REFUSAL_REASONS,
};
/// What a field is (key, label, gauge, counter, histogram, summary, or stored-only): the
/// contract's kinds, shared with probes through the `record_line` crate.
pub use record_line::FieldKind;

use std::sync::Arc;

/// One field of a table, in record order.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Field name; also the Prometheus label name or metric suffix.
    pub name: String,
    /// Field kind from the `type` key.
    pub kind: FieldKind,
    /// Human description, used for `# HELP`.
    pub description: String,
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
                .map(|&(name, kind)| Field {
                    name: name.into(),
                    kind,
                    description: format!("{name} help"),
                })
                .collect(),
            origin: format!("built-in table {table}"),
        }
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
