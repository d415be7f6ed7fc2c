//! `.meta` file loading and the registry of known tables.
//!
//! Loading is split in two so the expensive half never runs under the registry lock: [`load_file`]
//! (read with a size bound, parse, validate against [`MetaLimits`]) is pure, and
//! [`SchemaRegistry::install`] only checks table ownership and swaps the finished schemas in.
//! The registry remembers which file owns each table, so drop-ins can be added, re-read and
//! removed at run time without disturbing other probes' tables.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gala_libconfig::{Node, Value};

use super::{CounterMode, Derive, Field, FieldKind, SchemaRef, TableSchema};

/// `version` used when a `.meta` file has none.
pub const DEFAULT_META_VERSION: &str = "1.0.0";

/// Largest `.meta` file read (upstream's largest is 16 KB).
pub const MAX_META_FILE_BYTES: u64 = 1 << 20;
/// Most tables one `.meta` file may declare (upstream's most is 14).
pub const MAX_TABLES_PER_FILE: usize = 256;
/// Fields per table when no `imdb.max_metrics_num` is given (its default).
pub const DEFAULT_MAX_FIELDS: usize = 64;
/// Longest table, entity or field name and `version` string, in bytes (upstream's limit).
pub const MAX_NAME_BYTES: usize = 63;
/// Longest field description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// Bounds applied while loading a `.meta` file, each checked before the work it bounds, and how
/// its per-period counters are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaLimits {
    /// Largest file read, in bytes (checked on the open file before reading).
    pub max_file_bytes: u64,
    /// Most tables per file.
    pub max_tables: usize,
    /// Most fields per table (the daemon uses `imdb.max_metrics_num`).
    pub max_fields: usize,
    /// Longest name (table, entity, field) and `version`, in bytes.
    pub max_name_bytes: usize,
    /// Longest field description, in bytes.
    pub max_description_bytes: usize,
    /// How counters declared `period: "delta"` are exported (`metric.counter_mode`).
    pub counter_mode: CounterMode,
}

impl Default for MetaLimits {
    fn default() -> Self {
        MetaLimits {
            max_file_bytes: MAX_META_FILE_BYTES,
            max_tables: MAX_TABLES_PER_FILE,
            max_fields: DEFAULT_MAX_FIELDS,
            max_name_bytes: MAX_NAME_BYTES,
            max_description_bytes: MAX_DESCRIPTION_BYTES,
            counter_mode: CounterMode::Upstream,
        }
    }
}

impl MetaLimits {
    /// The default limits with `max_fields` fields per table (`imdb.max_metrics_num`).
    pub fn with_max_fields(max_fields: usize) -> Self {
        MetaLimits {
            max_fields,
            ..MetaLimits::default()
        }
    }
}

/// Which bound a `.meta` file broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaLimit {
    /// [`MetaLimits::max_tables`].
    Tables,
    /// [`MetaLimits::max_fields`].
    Fields,
    /// [`MetaLimits::max_name_bytes`] or [`MetaLimits::max_description_bytes`].
    NameLength,
}

/// Error loading `.meta` files.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The file is not valid libconfig (or an `@include` cannot be read).
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
    /// The file breaks one of the [`MetaLimits`]; the message names the limit.
    #[error("{origin}: {message}")]
    Limit {
        /// `FILE:LINE` of the offending setting.
        origin: String,
        /// Which limit.
        limit: MetaLimit,
        /// What is wrong, with the count and the limit.
        message: String,
    },
    /// The file is larger than [`MetaLimits::max_file_bytes`]; it was not read.
    #[error("{}: {size} bytes, larger than the {} limit for .meta files", path.display(), human_bytes(*limit))]
    TooLarge {
        /// File.
        path: PathBuf,
        /// Its size (or the bytes read before giving up, if it grew while being read).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The path is not a regular file (FIFO, device, directory …); it was not read.
    #[error("{}: not a regular file ({kind}); refusing to read it", path.display())]
    NotRegularFile {
        /// Path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file cannot be opened or read.
    #[error("{}: {source}", path.display())]
    Read {
        /// File.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
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
    /// A metric of the table is also exported by another table of the same entity with a
    /// different type or meaning: the two would be one Prometheus family with two meanings.
    #[error(transparent)]
    MetricClash(Box<MetricClash>),
    /// A meta directory exists but cannot be listed.
    #[error("{}: cannot read directory: {source}", dir.display())]
    ReadDir {
        /// Directory.
        dir: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
}

/// Details of [`MetaError::MetricClash`].
#[derive(Debug, thiserror::Error)]
#[error(
    "{origin}: metric gala_gopher_{entity}_{field} of table \"{table}\" ({what}) is also exported by \
     table \"{other_table}\" at {other} ({other_what}): one metric name must have one meaning; \
     rename one of them"
)]
pub struct MetricClash {
    /// `FILE:LINE` of the new declaration.
    pub origin: String,
    /// Entity both tables share.
    pub entity: String,
    /// Exported field name.
    pub field: String,
    /// New table.
    pub table: String,
    /// Type and meaning in the new table.
    pub what: String,
    /// Table already loaded.
    pub other_table: String,
    /// `FILE:LINE` where that table is declared.
    pub other: String,
    /// Type and meaning there.
    pub other_what: String,
}

impl MetaError {
    /// Short label for the `reason` of the refusal self-metric.
    pub fn reason(&self) -> &'static str {
        match self {
            MetaError::Syntax(_) => "syntax",
            MetaError::Invalid { .. } => "invalid",
            MetaError::Limit { limit, .. } => match limit {
                MetaLimit::Tables => "too_many_tables",
                MetaLimit::Fields => "too_many_fields",
                MetaLimit::NameLength => "name_too_long",
            },
            MetaError::TooLarge { .. } => "too_large",
            MetaError::NotRegularFile { .. } => "not_regular_file",
            MetaError::Read { .. } | MetaError::ReadDir { .. } => "read_error",
            MetaError::DuplicateTable { .. } => "duplicate_table",
            MetaError::MetricClash(_) => "metric_clash",
        }
    }
}

/// Every value [`MetaError::reason`] can return, in export order.
pub const META_REFUSAL_REASONS: [&str; 10] = [
    "too_large",
    "not_regular_file",
    "read_error",
    "syntax",
    "invalid",
    "too_many_tables",
    "too_many_fields",
    "name_too_long",
    "duplicate_table",
    "metric_clash",
];

fn human_bytes(n: u64) -> String {
    // Whole MiB / KiB only: a limit is shown exactly.
    if n >= 1 << 20 && n.trailing_zeros() >= 20 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.trailing_zeros() >= 10 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

fn invalid(node: &Node, message: impl Into<String>) -> MetaError {
    MetaError::Invalid {
        origin: node.file_line(),
        message: message.into(),
    }
}

fn over_limit(node: &Node, limit: MetaLimit, message: String) -> MetaError {
    MetaError::Limit {
        origin: node.file_line(),
        limit,
        message,
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

/// `s` (the value of `key` in `group`) if it is at most `max` bytes long.
fn bounded<'s>(
    group: &Node,
    key: &str,
    what: &str,
    s: &'s str,
    max: usize,
) -> Result<&'s str, MetaError> {
    if s.len() > max {
        let node = group.get(key).unwrap_or(group);
        return Err(over_limit(
            node,
            MetaLimit::NameLength,
            format!(
                "{what}: \"{key}\" is {} bytes, longer than the limit of {max}",
                s.len()
            ),
        ));
    }
    Ok(s)
}

fn identifier<'n>(
    group: &'n Node,
    key: &str,
    what: &str,
    limits: &MetaLimits,
) -> Result<&'n str, MetaError> {
    let s = required_str(group, key, what)?;
    let s = bounded(group, key, what, s, limits.max_name_bytes)?;
    if !is_identifier(s) {
        let node = group.get(key).unwrap_or(group);
        return Err(invalid(
            node,
            format!("{what}: \"{key}\" value \"{s}\" must match [a-zA-Z_][a-zA-Z0-9_]*"),
        ));
    }
    Ok(s)
}

/// Edit distance, for "did you mean" hints on short type names only.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn field_kind(type_node: &Node, type_name: &str, what: &str) -> Result<FieldKind, MetaError> {
    if let Ok(kind) = type_name.parse::<FieldKind>() {
        return Ok(kind);
    }
    // Only short strings can be typos of a type name; bounding the length bounds the hint's cost.
    let hint = (type_name.len() <= 32)
        .then(|| {
            let lower = type_name.to_ascii_lowercase();
            FieldKind::DECLARED
                .iter()
                .map(|k| (edit_distance(&lower, k.as_str()), k.as_str()))
                .filter(|(d, _)| *d <= 2)
                .min()
        })
        .flatten()
        .map(|(_, t)| format!(" (did you mean \"{t}\"?)"))
        .unwrap_or_default();
    let shown: String = type_name.chars().take(64).collect();
    let exported: Vec<&str> = FieldKind::DECLARED.iter().map(|k| k.as_str()).collect();
    Err(invalid(
        type_node,
        format!(
            "{what}: unknown type \"{shown}\"{hint}; a type is one of {} (exported) or {} (stored, \
             never exported)",
            exported.join(", "),
            FieldKind::STORED_ONLY.join(", ")
        ),
    ))
}

fn parse_field(
    node: &Node,
    table: &str,
    idx: usize,
    limits: &MetaLimits,
) -> Result<Field, MetaError> {
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
    let name = identifier(node, "name", &what, limits)?;
    let what = format!("{what} \"{name}\"");
    let type_name = required_str(node, "type", &what)?;
    let kind = field_kind(node.get("type").unwrap_or(node), type_name, &what)?;
    let description = match node.get("description") {
        None => "",
        Some(d) => {
            let s = d.as_str().ok_or_else(|| {
                invalid(
                    d,
                    format!(
                        "{what}: \"description\" must be a string, found {}",
                        d.value.type_name()
                    ),
                )
            })?;
            bounded(node, "description", &what, s, limits.max_description_bytes)?
        }
    };
    let opt_str = |key: &str| -> Result<Option<(&Node, &str)>, MetaError> {
        match node.get(key) {
            None => Ok(None),
            Some(n) => match n.as_str() {
                Some(v) => Ok(Some((n, v))),
                None => Err(invalid(
                    n,
                    format!(
                        "{what}: \"{key}\" must be a string, found {}",
                        n.value.type_name()
                    ),
                )),
            },
        }
    };
    let per_period = match opt_str("period")? {
        None => false,
        Some((_, "delta")) => true,
        Some((n, other)) => {
            let shown: String = other.chars().take(64).collect();
            return Err(invalid(
                n,
                format!("{what}: unknown period \"{shown}\"; the one period is \"delta\""),
            ));
        }
    };
    let total_name = match opt_str("total_name")? {
        None => None,
        Some(_) => Some(identifier(node, "total_name", &what, limits)?),
    };
    let total_scale = match opt_str("total_scale")? {
        None => None,
        Some((n, v)) => match v.trim().parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Some(f),
            _ => {
                let shown: String = v.chars().take(64).collect();
                return Err(invalid(
                    n,
                    format!("{what}: \"total_scale\" must be a positive number, found \"{shown}\""),
                ));
            }
        },
    };
    if (per_period || total_name.is_some() || total_scale.is_some()) && kind != FieldKind::Counter {
        let attr = if per_period {
            "period"
        } else {
            "total_name/total_scale"
        };
        return Err(invalid(
            node,
            format!("{what}: \"{attr}\" applies to counters only, not to type \"{kind}\""),
        ));
    }
    if (total_name.is_some() || total_scale.is_some()) && !per_period {
        return Err(invalid(
            node,
            format!("{what}: \"total_name\"/\"total_scale\" need period: \"delta\""),
        ));
    }
    let mut field = Field::new(name, kind, description);
    field.per_period = per_period;
    if per_period {
        match limits.counter_mode {
            CounterMode::Upstream => {
                field.kind = FieldKind::Gauge;
                field.derive = Derive::Delta;
            }
            CounterMode::Prometheus => {
                field.name = match total_name {
                    Some(t) => t.to_string(),
                    None if name.ends_with("_total") => name.to_string(),
                    None => format!("{name}_total"),
                };
                if let Some(f) = total_scale.filter(|f| *f != 1.0) {
                    field.derive = Derive::Scale(f);
                }
            }
        }
    }
    Ok(field)
}

fn parse_table(node: &Node, version: &str, limits: &MetaLimits) -> Result<TableSchema, MetaError> {
    if node.members().is_none() {
        return Err(invalid(
            node,
            format!(
                "measurement must be a group {{ ... }}, found {}",
                node.value.type_name()
            ),
        ));
    }
    let table_name = identifier(node, "table_name", "measurement", limits)?;
    let what = format!("table \"{table_name}\"");
    let entity_name = identifier(node, "entity_name", &what, limits)?;
    let trace = match node.get("kind") {
        None => false,
        Some(n) => match n.as_str() {
            Some("metrics") => false,
            Some("trace") => true,
            Some(other) => {
                let shown: String = other.chars().take(64).collect();
                return Err(invalid(
                    n,
                    format!("{what}: unknown kind \"{shown}\"; a kind is \"metrics\" (the default) or \"trace\""),
                ));
            }
            None => {
                return Err(invalid(
                    n,
                    format!(
                        "{what}: \"kind\" must be a string, found {}",
                        n.value.type_name()
                    ),
                ))
            }
        },
    };
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
    if field_nodes.len() > limits.max_fields {
        return Err(over_limit(
            fields_node,
            MetaLimit::Fields,
            format!(
                "{what} has {} fields, more than imdb.max_metrics_num = {}",
                field_nodes.len(),
                limits.max_fields
            ),
        ));
    }
    let mut fields: Vec<Field> = Vec::with_capacity(field_nodes.len());
    let mut seen: HashSet<String> = HashSet::with_capacity(field_nodes.len());
    for (idx, fnode) in field_nodes.iter().enumerate() {
        let field = parse_field(fnode, table_name, idx, limits)?;
        // Exported names: a per-period counter's `_total` name (Prometheus mode) counts too.
        if !seen.insert(field.name.clone()) {
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
        derives: false,
        trace,
    }
    .with_derives_noted())
}

/// Identity of a `.meta` file's content as last read: a different stamp means "read it again".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// Stamp of `md`.
    pub fn of(md: &std::fs::Metadata) -> Self {
        FileStamp {
            dev: md.dev(),
            ino: md.ino(),
            len: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }

    /// Stamp of the file `path` names now (symlinks followed).
    pub fn current(path: &Path) -> std::io::Result<Self> {
        std::fs::metadata(path).map(|md| FileStamp::of(&md))
    }
}

/// Read `path` as text if it is a regular file of at most `max` bytes, with the bounded reader
/// of `gala-libconfig` (type and size checked on the open descriptor before reading, so neither
/// a FIFO nor a device nor a huge file costs more than one `open`). Returns the text and the
/// stamp the file had just before it was read (a change racing the read only causes a re-read).
pub fn read_meta_text(path: &Path, max: u64) -> Result<(String, FileStamp), MetaError> {
    let stamp = FileStamp::current(path).map_err(|source| MetaError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = gala_libconfig::read_file_bytes(path, max).map_err(|e| match e {
        gala_libconfig::Error::NotRegularFile { path, kind } => {
            MetaError::NotRegularFile { path, kind }
        }
        gala_libconfig::Error::FileTooLarge { path, size, limit } => {
            MetaError::TooLarge { path, size, limit }
        }
        gala_libconfig::Error::Read { path, source } => MetaError::Read { path, source },
        other => MetaError::Syntax(other),
    })?;
    let text = gala_libconfig::decode_utf8(bytes, path)?;
    Ok((text, stamp))
}

/// Load one `.meta` file with the default [`MetaLimits`]: every table it declares, in file order.
pub fn load_file(path: &Path) -> Result<Vec<TableSchema>, MetaError> {
    load_file_with(path, &MetaLimits::default())
}

/// Load one `.meta` file within `limits`.
pub fn load_file_with(path: &Path, limits: &MetaLimits) -> Result<Vec<TableSchema>, MetaError> {
    load_file_stamped(path, limits).map(|(tables, _)| tables)
}

/// [`load_file_with`], also returning the stamp of the content that was read.
pub fn load_file_stamped(
    path: &Path,
    limits: &MetaLimits,
) -> Result<(Vec<TableSchema>, FileStamp), MetaError> {
    let (text, stamp) = read_meta_text(path, limits.max_file_bytes)?;
    let root = gala_libconfig::parse_str(&text, path)?;
    Ok((tables_within(&root, limits)?, stamp))
}

/// Tables of an already parsed `.meta` document, with the default [`MetaLimits`].
pub fn tables_from_document(root: &Node) -> Result<Vec<TableSchema>, MetaError> {
    tables_within(root, &MetaLimits::default())
}

/// Tables of an already parsed `.meta` document, within `limits`.
pub fn tables_within(root: &Node, limits: &MetaLimits) -> Result<Vec<TableSchema>, MetaError> {
    let version = match root.get("version") {
        None => DEFAULT_META_VERSION,
        Some(v) => {
            let s = v.as_str().ok_or_else(|| {
                invalid(
                    v,
                    format!(
                        "\"version\" must be a string, found {}",
                        v.value.type_name()
                    ),
                )
            })?;
            // Copied into every table: bounded like a name.
            bounded(root, "version", "meta", s, limits.max_name_bytes)?
        }
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
    if items.len() > limits.max_tables {
        return Err(over_limit(
            measurements,
            MetaLimit::Tables,
            format!(
                "\"measurements\" has {} tables, more than the limit of {} per file",
                items.len(),
                limits.max_tables
            ),
        ));
    }
    let mut tables: Vec<TableSchema> = Vec::with_capacity(items.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(items.len());
    for item in items {
        let table = parse_table(item, version, limits)?;
        if let Some(&first) = seen.get(&table.table_name) {
            return Err(invalid(
                item,
                format!(
                    "duplicate table name \"{}\" (first declared at {})",
                    table.table_name, tables[first].origin
                ),
            ));
        }
        seen.insert(table.table_name.clone(), tables.len());
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

    /// Load `path` (default [`MetaLimits`]) and [`install`](Self::install) its tables.
    pub fn add_file(&mut self, path: &Path) -> Result<Vec<SchemaRef>, MetaError> {
        let tables: Vec<SchemaRef> = load_file(path)?.into_iter().map(Arc::new).collect();
        self.install(path, &tables)?;
        Ok(tables)
    }

    /// Register `tables` as the content of `path`, all or nothing: they replace whatever `path`
    /// declared before (tables it no longer declares are removed). A table owned by a different
    /// file is an error naming both files. Cheap (no parsing): meant to run under the lock.
    pub fn install(&mut self, path: &Path, tables: &[SchemaRef]) -> Result<(), MetaError> {
        for t in tables {
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
        self.check_clashes(path, tables)?;
        self.remove_file(path);
        for r in tables {
            self.tables
                .insert(r.table_name.clone(), (Arc::clone(r), path.to_path_buf()));
        }
        self.files.insert(
            path.to_path_buf(),
            tables.iter().map(|r| r.table_name.clone()).collect(),
        );
        Ok(())
    }

    /// One metric name, one meaning: a metric field of `tables` (the new content of `path`) that
    /// another table of the same entity also exports must have the same declared type and
    /// period. Tables `path` declares now are replaced, so they are not compared.
    fn check_clashes(&self, path: &Path, tables: &[SchemaRef]) -> Result<(), MetaError> {
        let describe = |f: &Field| {
            let period = if f.per_period { ", per period" } else { "" };
            format!("declared {}{period}", f.declared)
        };
        for (i, t) in tables.iter().enumerate() {
            let others = self
                .tables
                .values()
                .filter(|(o, p)| p != path && o.entity_name == t.entity_name)
                .map(|(o, _)| o)
                .chain(
                    tables[..i]
                        .iter()
                        .filter(|o| o.entity_name == t.entity_name),
                );
            for o in others {
                for f in t.fields.iter().filter(|f| f.kind.is_metric()) {
                    let Some(g) = o
                        .fields
                        .iter()
                        .find(|g| g.kind.is_metric() && g.name == f.name)
                    else {
                        continue;
                    };
                    if g.declared != f.declared || g.per_period != f.per_period || g.kind != f.kind
                    {
                        return Err(MetaError::MetricClash(Box::new(MetricClash {
                            origin: t.origin.clone(),
                            entity: t.entity_name.clone(),
                            field: f.name.clone(),
                            table: t.table_name.clone(),
                            what: describe(f),
                            other_table: o.table_name.clone(),
                            other: o.origin.clone(),
                            other_what: describe(g),
                        })));
                    }
                }
            }
        }
        Ok(())
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

/// Load every `.meta` file in `dir` (see [`meta_files_in`]) with the default [`MetaLimits`]; the
/// first bad file fails the load.
pub fn load_dir(dir: &Path) -> Result<SchemaRegistry, MetaError> {
    load_dir_with(dir, &MetaLimits::default())
}

/// [`load_dir`] within `limits` (the daemon passes `imdb.max_metrics_num`).
pub fn load_dir_with(dir: &Path, limits: &MetaLimits) -> Result<SchemaRegistry, MetaError> {
    let mut reg = SchemaRegistry::new();
    for f in meta_files_in(dir)? {
        let tables: Vec<SchemaRef> = load_file_with(&f, limits)?
            .into_iter()
            .map(Arc::new)
            .collect();
        reg.install(&f, &tables)?;
    }
    Ok(reg)
}
