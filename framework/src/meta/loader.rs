//! `.meta` file loading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{SchemaRef, TableSchema};

/// Error loading a `.meta` file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MetaError(pub String);

/// All known tables, by name.
#[derive(Debug, Default)]
pub struct SchemaRegistry {
    tables: HashMap<String, (SchemaRef, PathBuf)>,
}

impl SchemaRegistry {
    /// Look a table up.
    pub fn get(&self, table: &str) -> Option<&SchemaRef> {
        self.tables.get(table).map(|(s, _)| s)
    }

    /// TEMP stub until the loader lands.
    pub fn add_file(&mut self, _path: &Path) -> Result<Vec<SchemaRef>, MetaError> {
        Ok(Vec::new())
    }

    /// TEMP stub until the loader lands.
    pub fn remove_file(&mut self, _path: &Path) -> Vec<String> {
        Vec::new()
    }
}

/// Load one file.
pub fn load_file(_path: &Path) -> Result<Vec<TableSchema>, MetaError> {
    Err(MetaError("unimplemented".into()))
}

/// Load every `.meta` in a directory.
pub fn load_dir(_dir: &Path) -> Result<SchemaRegistry, MetaError> {
    Ok(SchemaRegistry::default())
}
