//! `.meta` file loading and the registry of known tables.
//!
//! The registry remembers which file owns each table, so drop-ins can be added, re-read and
//! removed at run time without disturbing other probes' tables.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gala_libconfig::{Node, Value};

use super::{Field, FieldKind, SchemaRef, TableSchema};

/// `version` used when a `.meta` file has none.
pub const DEFAULT_META_VERSION: &str = "1.0.0";

/// Error loading `.meta` files.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The file is not valid libconfig, or cannot be read.
    #[error(transparent)]
    Syntax(#[from] gala_libconfig::Error),
    /// The file parses but does not describe valid tables. `origin` is `FILE:LINE`.
    #[error("{origin}: {message}")]
    Invalid {
        /// `FILE:LINE` of the offending setting.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A table name is already owned by another file.
    #[error("{origin}: table \"{table}\" is already defined by {}", other.display())]
    DuplicateTable {
        /// `FILE:LINE` of the new declaration.
        origin: String,
        /// Table name.
        table: String,
        /// File that already owns the table.
        other: PathBuf,
    },
    /// A meta directory exists but cannot be listed.
    #[error("{}: cannot read directory: {source}", dir.display())]
    ReadDir {
        /// Directory.
        dir: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
}

fn invalid(node: &Node, message: impl Into<String>) -> MetaError {
    MetaError::Invalid {
        origin: node.file_line(),
        message: message.into(),
    }
}

/// Whether `s` matches `[a-zA-Z_][a-zA-Z0-9_]*` (it becomes part of a Prometheus name).
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn required_str<'n>(group: &'n Node, key: &str, what: &str) -> Result<&'n str, MetaError> {
    let node = group
        .get(key)
        .ok_or_else(|| invalid(group, format!("{what}: missing \"{key}\"")))?;
    node.as_str().ok_or_else(|| {
        invalid(
            node,
            format!(
                "{what}: \"{key}\" must be a string, found {}",
                node.value.type_name()
            ),
        )
    })
}

fn identifier<'n>(group: &'n Node, key: &str, what: &str) -> Result<&'n str, MetaError> {
    let s = required_str(group, key, what)?;
    if !is_identifier(s) {
        let node = group.get(key).unwrap_or(group);
        return Err(invalid(
            node,
            format!("{what}: \"{key}\" value \"{s}\" must match [a-zA-Z_][a-zA-Z0-9_]*"),
        ));
    }
    Ok(s)
}

fn field_kind(type_name: &str) -> FieldKind {
    match type_name {
        "key" => FieldKind::Key,
        "label" => FieldKind::Label,
        "gauge" => FieldKind::Gauge,
        "counter" => FieldKind::Counter,
        "histogram" => FieldKind::Histogram,
        "summary" => FieldKind::Summary,
        _ => FieldKind::Other,
    }
}

fn parse_field(node: &Node, table: &str, idx: usize) -> Result<Field, MetaError> {
    let what = format!("table \"{table}\" field #{}", idx + 1);
    if node.members().is_none() {
        return Err(invalid(
            node,
            format!(
                "{what}: must be a group {{ ... }}, found {}",
                node.value.type_name()
            ),
        ));
    }
    let name = identifier(node, "name", &what)?;
    let type_name = required_str(node, "type", &format!("{what} \"{name}\""))?;
    let description = match node.get("description") {
        None => String::new(),
        Some(d) => d
            .as_str()
            .ok_or_else(|| {
                invalid(
                    d,
                    format!(
                        "{what}: \"description\" must be a string, found {}",
                        d.value.type_name()
                    ),
                )
            })?
            .to_string(),
    };
    Ok(Field {
        name: name.to_string(),
        kind: field_kind(type_name),
        description,
    })
}

fn parse_table(node: &Node, version: &str) -> Result<TableSchema, MetaError> {
    if node.members().is_none() {
        return Err(invalid(
            node,
            format!(
                "measurement must be a group {{ ... }}, found {}",
                node.value.type_name()
            ),
        ));
    }
    let table_name = identifier(node, "table_name", "measurement")?;
    let what = format!("table \"{table_name}\"");
    let entity_name = identifier(node, "entity_name", &what)?;
    let fields_node = node
        .get("fields")
        .ok_or_else(|| invalid(node, format!("{what}: missing \"fields\"")))?;
    let field_nodes = match &fields_node.value {
        Value::List(items) => items,
        other => {
            return Err(invalid(
                fields_node,
                format!(
                    "{what}: \"fields\" must be a list ( ... ), found {}",
                    other.type_name()
                ),
            ))
        }
    };
    let mut fields: Vec<Field> = Vec::with_capacity(field_nodes.len());
    for (idx, fnode) in field_nodes.iter().enumerate() {
        let field = parse_field(fnode, table_name, idx)?;
        if fields.iter().any(|f| f.name == field.name) {
            return Err(invalid(
                fnode,
                format!("{what}: duplicate field name \"{}\"", field.name),
            ));
        }
        fields.push(field);
    }
    Ok(TableSchema {
        table_name: table_name.to_string(),
        entity_name: entity_name.to_string(),
        version: version.to_string(),
        fields,
        origin: node.file_line(),
    })
}

/// Load one `.meta` file: every table it declares, in file order.
pub fn load_file(path: &Path) -> Result<Vec<TableSchema>, MetaError> {
    let root = gala_libconfig::parse_file(path)?;
    tables_from_document(&root)
}

/// Tables of an already parsed `.meta` document (used by [`load_file`]; handy for tests).
pub fn tables_from_document(root: &Node) -> Result<Vec<TableSchema>, MetaError> {
    let version = match root.get("version") {
        None => DEFAULT_META_VERSION,
        Some(v) => v.as_str().ok_or_else(|| {
            invalid(
                v,
                format!(
                    "\"version\" must be a string, found {}",
                    v.value.type_name()
                ),
            )
        })?,
    };
    let measurements = root
        .get("measurements")
        .ok_or_else(|| invalid(root, "missing \"measurements\""))?;
    let items = match &measurements.value {
        Value::List(items) => items,
        other => {
            return Err(invalid(
                measurements,
                format!(
                    "\"measurements\" must be a list ( ... ), found {}",
                    other.type_name()
                ),
            ))
        }
    };
    let mut tables: Vec<TableSchema> = Vec::with_capacity(items.len());
    for item in items {
        let table = parse_table(item, version)?;
        if let Some(first) = tables.iter().find(|t| t.table_name == table.table_name) {
            return Err(invalid(
                item,
                format!(
                    "duplicate table name \"{}\" (first declared at {})",
                    table.table_name, first.origin
                ),
            ));
        }
        tables.push(table);
    }
    Ok(tables)
}

/// All known tables, by name, with the file each came from.
#[derive(Debug, Default)]
pub struct SchemaRegistry {
    tables: HashMap<String, (SchemaRef, PathBuf)>,
    files: HashMap<PathBuf, Vec<String>>,
}

impl SchemaRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Load `path` and register its tables, all or nothing. Re-adding a file replaces the tables it
    /// declared before (tables it no longer declares are removed). A table owned by a different
    /// file is an error naming both files.
    pub fn add_file(&mut self, path: &Path) -> Result<Vec<SchemaRef>, MetaError> {
        let tables = load_file(path)?;
        for t in &tables {
            if let Some((_, owner)) = self.tables.get(&t.table_name) {
                if owner != path {
                    return Err(MetaError::DuplicateTable {
                        origin: t.origin.clone(),
                        table: t.table_name.clone(),
                        other: owner.clone(),
                    });
                }
            }
        }
        self.remove_file(path);
        let refs: Vec<SchemaRef> = tables.into_iter().map(Arc::new).collect();
        for r in &refs {
            self.tables
                .insert(r.table_name.clone(), (r.clone(), path.to_path_buf()));
        }
        self.files.insert(
            path.to_path_buf(),
            refs.iter().map(|r| r.table_name.clone()).collect(),
        );
        Ok(refs)
    }

    /// Forget every table `path` declared; returns their names.
    pub fn remove_file(&mut self, path: &Path) -> Vec<String> {
        let names = self.files.remove(path).unwrap_or_default();
        for n in &names {
            self.tables.remove(n);
        }
        names
    }

    /// Look a table up.
    pub fn get(&self, table: &str) -> Option<&SchemaRef> {
        self.tables.get(table).map(|(s, _)| s)
    }

    /// The file that declared `table`.
    pub fn owner(&self, table: &str) -> Option<&Path> {
        self.tables.get(table).map(|(_, p)| p.as_path())
    }

    /// Every table, in no particular order.
    pub fn tables(&self) -> impl Iterator<Item = &SchemaRef> {
        self.tables.values().map(|(s, _)| s)
    }

    /// Files currently registered.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }

    /// Number of tables.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether no table is known.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// `.meta` files directly inside `dir` (non-hidden, name ending `.meta`), sorted by name.
/// A missing directory has none.
pub fn meta_files_in(dir: &Path) -> Result<Vec<PathBuf>, MetaError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(MetaError::ReadDir {
                dir: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| MetaError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".meta") {
            continue;
        }
        let path = entry.path();
        // Follow symlinks: packaging commonly links metas into place.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Load every `.meta` file in `dir` (see [`meta_files_in`]); the first bad file fails the load.
pub fn load_dir(dir: &Path) -> Result<SchemaRegistry, MetaError> {
    let mut reg = SchemaRegistry::new();
    for f in meta_files_in(dir)? {
        reg.add_file(&f)?;
    }
    Ok(reg)
}
