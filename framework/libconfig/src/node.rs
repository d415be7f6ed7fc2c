//! The document tree: values with the file, line and column they came from.

use std::fmt::{self, Write as _};
use std::path::Path;
use std::sync::Arc;

use crate::error::Location;

/// A value plus where it was written. Equality compares values only: positions are provenance.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Source file (the included file for values that came from an `@include`).
    pub file: Arc<Path>,
    /// 1-based line of the value's first character (for a setting: of its name).
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

/// A libconfig value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `true` / `false` (any case).
    Bool(bool),
    /// Decimal or hex integer, with or without the `L` suffix.
    Int(i64),
    /// Floating point number (always finite).
    Float(f64),
    /// String, escapes resolved, adjacent literals joined.
    Str(String),
    /// `[ ... ]`: scalars of one type.
    Array(Vec<Node>),
    /// `( ... )`: any values.
    List(Vec<Node>),
    /// `{ ... }`: named settings in file order.
    Group(Vec<(String, Node)>),
}

impl Value {
    /// Short type name for messages ("string", "integer", "group", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::List(_) => "list",
            Value::Group(_) => "group",
        }
    }

    /// Whether this is a scalar (allowed inside an array).
    pub fn is_scalar(&self) -> bool {
        matches!(
            self,
            Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Str(_)
        )
    }
}

/// One step of a lookup path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathSegment<'a> {
    /// A setting name inside a group.
    Key(&'a str),
    /// An element index inside a list or array.
    Index(usize),
}

/// Split a path such as `probes.[2].name`, `probes[2].name` or `web_server.port` into segments.
/// Returns `None` for a malformed path (unbalanced brackets, non-numeric index, empty name).
pub fn parse_path(path: &str) -> Option<Vec<PathSegment<'_>>> {
    let mut out = Vec::new();
    if path.is_empty() {
        return Some(out);
    }
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(p) => part.split_at(p),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(PathSegment::Key(name));
        } else if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let inner = rest.strip_prefix('[')?;
            let close = inner.find(']')?;
            out.push(PathSegment::Index(inner[..close].parse().ok()?));
            rest = &inner[close + 1..];
        }
    }
    Some(out)
}

impl Node {
    /// Build a node.
    pub fn new(value: Value, file: Arc<Path>, line: u32, col: u32) -> Node {
        Node {
            value,
            file,
            line,
            col,
        }
    }

    /// Where this node was written.
    pub fn location(&self) -> Location {
        Location {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
        }
    }

    /// `FILE:LINE` of this node, the form used in higher-level messages.
    pub fn file_line(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    /// Member `key` of a group.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Group(members) => members.iter().find(|(k, _)| k == key).map(|(_, n)| n),
            _ => None,
        }
    }

    /// Element `idx` of a list or array.
    pub fn index(&self, idx: usize) -> Option<&Node> {
        self.elements().and_then(|e| e.get(idx))
    }

    /// Follow a dotted path such as `web_server.port` or `probes.[2].name` (`probes[2].name` too).
    pub fn lookup(&self, path: &str) -> Option<&Node> {
        let segs = parse_path(path)?;
        let (node, matched) = self.walk(&segs);
        (matched == segs.len()).then_some(node)
    }

    /// Follow `path` as far as it exists; returns the deepest node reached and how many path
    /// segments were matched. Useful to point at the group where a required key is missing.
    pub fn lookup_nearest(&self, path: &str) -> (&Node, usize) {
        match parse_path(path) {
            Some(segs) => self.walk(&segs),
            None => (self, 0),
        }
    }

    fn walk(&self, segs: &[PathSegment<'_>]) -> (&Node, usize) {
        let mut cur = self;
        for (i, seg) in segs.iter().enumerate() {
            let next = match seg {
                PathSegment::Key(k) => cur.get(k),
                PathSegment::Index(n) => cur.index(*n),
            };
            match next {
                Some(n) => cur = n,
                None => return (cur, i),
            }
        }
        (cur, segs.len())
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer.
    pub fn as_int(&self) -> Option<i64> {
        match self.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The number as a float, if this is a float or an integer.
    pub fn as_float(&self) -> Option<f64> {
        match self.value {
            Value::Float(f) => Some(f),
            Value::Int(i) => Some(i as f64),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Members of a group.
    pub fn members(&self) -> Option<&[(String, Node)]> {
        match &self.value {
            Value::Group(m) => Some(m),
            _ => None,
        }
    }

    /// Elements of a list or an array.
    pub fn elements(&self) -> Option<&[Node]> {
        match &self.value {
            Value::List(e) | Value::Array(e) => Some(e),
            _ => None,
        }
    }

    /// Render a root group as a libconfig document (one setting per line); any other node is
    /// rendered as a single value. Parsing the output gives back an equal tree.
    pub fn to_document(&self) -> String {
        let mut out = String::new();
        match &self.value {
            Value::Group(members) => {
                for (k, v) in members {
                    let _ = write!(out, "{k} = ");
                    render(&v.value, 0, &mut out);
                    out.push_str(";\n");
                }
            }
            other => render(other, 0, &mut out),
        }
        out
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        render(self, 0, &mut out);
        f.write_str(&out)
    }
}

fn indent(level: usize, out: &mut String) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn render(v: &Value, level: usize, out: &mut String) {
    match v {
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
            // Outside 32 bits libconfig wants the suffix to keep the 64-bit type.
            if i32::try_from(*i).is_err() {
                out.push('L');
            }
        }
        Value::Float(x) => {
            // `{:?}` always keeps a '.' or an exponent, so the text reads back as a float.
            let _ = write!(out, "{x:?}");
        }
        Value::Str(s) => render_string(s, out),
        Value::Array(items) | Value::List(items) => {
            let (open, close) = if matches!(v, Value::Array(_)) {
                ('[', ']')
            } else {
                ('(', ')')
            };
            out.push(open);
            for (i, n) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(&n.value, level, out);
            }
            out.push(close);
        }
        Value::Group(members) => {
            out.push_str("{\n");
            for (k, n) in members {
                indent(level + 1, out);
                let _ = write!(out, "{k} = ");
                render(&n.value, level + 1, out);
                out.push_str(";\n");
            }
            indent(level, out);
            out.push('}');
        }
    }
}

fn render_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
