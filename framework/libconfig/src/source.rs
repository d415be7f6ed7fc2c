//! Integration with the `config` crate: libconfig documents as a `config` source, and mapping a
//! `config` error's key back to the line it came from.

use std::path::Path;
use std::sync::Arc;

use crate::error::Location;
use crate::node::{Node, Value};
use crate::parse::{parse_file, parse_str};

/// A parsed libconfig document usable with `config::Config::builder().add_source(..)`.
///
/// Every `config::Value` it produces has origin `FILE:LINE`, so `config` type errors name the line.
#[derive(Debug, Clone)]
pub struct LibconfigSource {
    root: Arc<Node>,
}

impl LibconfigSource {
    /// Wrap an already parsed document (its root must be a group; anything else yields no keys).
    pub fn new(root: Node) -> Self {
        LibconfigSource {
            root: Arc::new(root),
        }
    }

    /// Parse a file.
    pub fn from_file(path: &Path) -> Result<Self, crate::Error> {
        parse_file(path).map(Self::new)
    }

    /// The parsed document, for line lookups.
    pub fn root(&self) -> &Node {
        &self.root
    }
}

impl config::Source for LibconfigSource {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        Ok(to_table(&self.root))
    }
}

fn to_table(node: &Node) -> config::Map<String, config::Value> {
    node.members()
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (k.clone(), to_config_value(v)))
        .collect()
}

/// Convert a node (recursively) into a `config::Value` whose origin is `FILE:LINE`.
pub fn to_config_value(node: &Node) -> config::Value {
    let origin = Some(node.file_line());
    let kind = match &node.value {
        Value::Bool(b) => config::ValueKind::Boolean(*b),
        Value::Int(i) => config::ValueKind::I64(*i),
        Value::Float(f) => config::ValueKind::Float(*f),
        Value::Str(s) => config::ValueKind::String(s.clone()),
        Value::Array(items) | Value::List(items) => {
            config::ValueKind::Array(items.iter().map(to_config_value).collect())
        }
        Value::Group(_) => config::ValueKind::Table(to_table(node)),
    };
    config::Value::new(origin.as_ref(), kind)
}

/// libconfig as a `config::Format`, so `config::File::new(path, LibconfigFormat)` and
/// `config::File::from_str(text, LibconfigFormat)` work. Relative `@include`s resolve against the
/// file's directory (the current directory for strings).
#[derive(Debug, Clone, Copy, Default)]
pub struct LibconfigFormat;

impl config::Format for LibconfigFormat {
    fn parse(
        &self,
        uri: Option<&String>,
        text: &str,
    ) -> Result<config::Map<String, config::Value>, Box<dyn std::error::Error + Send + Sync>> {
        let origin = uri.map_or_else(|| Path::new("<string>"), |u| Path::new(u.as_str()));
        let root = parse_str(text, origin)?;
        Ok(to_table(&root))
    }
}

impl config::FileStoredFormat for LibconfigFormat {
    fn file_extensions(&self) -> &'static [&'static str] {
        &["conf", "cfg", "meta"]
    }
}

/// The configuration key a `config` error is about (e.g. `web_server.port`, `probes[0].name`).
pub fn error_key(err: &config::ConfigError) -> Option<String> {
    let key = match err {
        config::ConfigError::Type { key, .. } | config::ConfigError::At { key, .. } => {
            key.as_deref()
        }
        config::ConfigError::NotFound(key) => Some(key.as_str()),
        _ => None,
    }?;
    Some(normalize_key(key))
}

/// `config` joins an index and a following name without a dot (`probes[0]name`); restore it.
fn normalize_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|n| *n != '.' && *n != '[') {
            out.push('.');
        }
    }
    out
}

/// The message of a `config` error without the key/origin decorations `config` appends.
pub fn error_message(err: &config::ConfigError) -> String {
    match err {
        config::ConfigError::Type {
            unexpected,
            expected,
            ..
        } => format!("invalid type: {unexpected}, expected {expected}"),
        config::ConfigError::At { error, .. } => error_message(error),
        config::ConfigError::NotFound(_) => "missing required key".to_string(),
        other => other.to_string(),
    }
}

/// Where in `root` the key of a `config` error was written. For a missing key this is the
/// nearest enclosing setting that exists (so "missing `name`" points at the list element).
pub fn locate_error(root: &Node, err: &config::ConfigError) -> Option<Location> {
    error_key(err).map(|key| root.lookup_nearest(&key).0.location())
}
