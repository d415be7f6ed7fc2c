//! Table declarations and the `.meta` text generated from them.
//!
//! Each eBPF probe declares its tables once, in its `src/tables.rs`, as [`Table`]s of
//! [`Field`]s; its `.meta` file is [`render`]ed from them, and a test of the probe keeps the
//! committed file equal to the rendering. Nothing here is BPF-specific except
//! [`loss_table`], the `<probe>_bpf_stats` table that [`write_loss_record`] writes.
//!
//! [`write_loss_record`]: super::write_loss_record

use std::fmt::Write as _;

use record_line::FieldKind;

/// Entity of every `<probe>_bpf_stats` table.
pub const LOSS_ENTITY: &str = "bpf_probe";

/// One field of a table, in record order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Field name: a label name, or the metric suffix (`gala_gopher_<entity>_<name>`).
    pub name: &'static str,
    /// What the field is.
    pub kind: FieldKind,
    /// Description, exported as the metric's `# HELP`.
    pub description: &'static str,
}

impl Field {
    /// A field of kind `kind`.
    pub const fn new(name: &'static str, kind: FieldKind, description: &'static str) -> Field {
        Field {
            name,
            kind,
            description,
        }
    }

    /// A key field.
    pub const fn key(name: &'static str, description: &'static str) -> Field {
        Field::new(name, FieldKind::Key, description)
    }

    /// A label field.
    pub const fn label(name: &'static str, description: &'static str) -> Field {
        Field::new(name, FieldKind::Label, description)
    }

    /// A gauge field.
    pub const fn gauge(name: &'static str, description: &'static str) -> Field {
        Field::new(name, FieldKind::Gauge, description)
    }

    /// A counter field.
    pub const fn counter(name: &'static str, description: &'static str) -> Field {
        Field::new(name, FieldKind::Counter, description)
    }

    /// A histogram field (`record_line::histogram` encoding).
    pub const fn histogram(name: &'static str, description: &'static str) -> Field {
        Field::new(name, FieldKind::Histogram, description)
    }
}

/// One table: its records start with `|<name>|` and carry one value per field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Table name, the first token of a record line.
    pub name: &'static str,
    /// Entity name, the Prometheus metric prefix.
    pub entity: &'static str,
    /// Fields in record order.
    pub fields: Vec<Field>,
}

impl Table {
    /// A table whose fields are the concatenation of `parts` (e.g. common keys, then metrics).
    pub fn new(name: &'static str, entity: &'static str, parts: &[&[Field]]) -> Table {
        Table {
            name,
            entity,
            fields: parts.concat(),
        }
    }
}

/// The `<probe>_bpf_stats` table written by [`super::write_loss_record`]: key `probe`, then the
/// cumulative counters `events`, `lost_events` and `map_full`, described for this probe.
pub fn loss_table(
    name: &'static str,
    events: &'static str,
    lost_events: &'static str,
    map_full: &'static str,
) -> Table {
    Table::new(
        name,
        LOSS_ENTITY,
        &[&[
            Field::key("probe", "probe name"),
            Field::counter("events", events),
            Field::counter("lost_events", lost_events),
            Field::counter("map_full", map_full),
        ]],
    )
}

/// The `.meta` file for `tables`: `version = "1.0.0"`, then `header` as `#` comment lines
/// (none if empty), then one `measurements` entry per table, one line per field.
pub fn render(header: &[&str], tables: &[Table]) -> String {
    let mut out = String::from("version = \"1.0.0\"\n\n");
    for line in header {
        out.push('#');
        if !line.is_empty() {
            out.push(' ');
            out.push_str(line);
        }
        out.push('\n');
    }
    if !header.is_empty() {
        out.push('\n');
    }
    out.push_str("measurements:\n(\n");
    for (i, table) in tables.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        render_table(&mut out, table);
    }
    out.push_str("\n)\n");
    out
}

fn render_table(out: &mut String, table: &Table) {
    // Writing into a String cannot fail.
    let _ = writeln!(out, "    {{");
    let _ = writeln!(out, "        table_name: \"{}\",", table.name);
    let _ = writeln!(out, "        entity_name: \"{}\",", table.entity);
    let _ = writeln!(out, "        fields:");
    let _ = writeln!(out, "        (");
    for (i, f) in table.fields.iter().enumerate() {
        let sep = if i + 1 < table.fields.len() { "," } else { "" };
        let _ = writeln!(
            out,
            "            {{ description: \"{}\", type: \"{}\", name: \"{}\" }}{sep}",
            f.description, f.kind, f.name
        );
    }
    let _ = writeln!(out, "        )");
    let _ = write!(out, "    }}");
}

/// Upstream's limits a declaration must keep: names are Prometheus-safe and at most 31 bytes
/// (the IMDB keeps 31), descriptions at most 255 bytes and free of `"` and `\`, a table has a
/// key, and table names are unique. Returns every violation found.
pub fn check(tables: &[Table]) -> Vec<String> {
    fn prometheus_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }
    let mut problems = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        if tables[..i].iter().any(|o| o.name == t.name) {
            problems.push(format!("{}: declared twice", t.name));
        }
        for name in [t.name, t.entity] {
            if name.len() > 31 || !prometheus_name(name) {
                problems.push(format!("{}: bad name {name:?}", t.name));
            }
        }
        if !t.fields.iter().any(|f| f.kind == FieldKind::Key) {
            problems.push(format!("{}: no key field", t.name));
        }
        for (j, f) in t.fields.iter().enumerate() {
            if f.name.len() > 31 || !prometheus_name(f.name) {
                problems.push(format!("{}.{}: bad field name", t.name, f.name));
            }
            if t.fields[..j].iter().any(|o| o.name == f.name) {
                problems.push(format!("{}.{}: declared twice", t.name, f.name));
            }
            if f.description.is_empty()
                || f.description.len() > 255
                || f.description.contains(['"', '\\'])
            {
                problems.push(format!("{}.{}: bad description", t.name, f.name));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Table> {
        vec![
            Table::new(
                "t_one",
                "thing",
                &[
                    &[Field::key("id", "identity")],
                    &[Field::histogram("lat", "latency, us")],
                ],
            ),
            loss_table("t_bpf_stats", "events seen", "events lost", "map full"),
        ]
    }

    #[test]
    fn renders_the_meta_layout() {
        let expected = r#"version = "1.0.0"

# line one
#
# line three

measurements:
(
    {
        table_name: "t_one",
        entity_name: "thing",
        fields:
        (
            { description: "identity", type: "key", name: "id" },
            { description: "latency, us", type: "histogram", name: "lat" }
        )
    },
    {
        table_name: "t_bpf_stats",
        entity_name: "bpf_probe",
        fields:
        (
            { description: "probe name", type: "key", name: "probe" },
            { description: "events seen", type: "counter", name: "events" },
            { description: "events lost", type: "counter", name: "lost_events" },
            { description: "map full", type: "counter", name: "map_full" }
        )
    }
)
"#;
        assert_eq!(render(&["line one", "", "line three"], &sample()), expected);
        assert!(render(&[], &sample()).starts_with("version = \"1.0.0\"\n\nmeasurements:\n(\n"));
    }

    #[test]
    fn rendering_parses_with_the_daemon_reader() {
        let text = render(&["header"], &sample());
        let doc = gala_libconfig::parse_str(&text, std::path::Path::new("t.meta")).unwrap();
        let m = doc.lookup("measurements.[1]").unwrap();
        assert_eq!(
            m.get("table_name").and_then(|n| n.as_str()),
            Some("t_bpf_stats")
        );
        let f = m.lookup("fields.[3]").unwrap();
        assert_eq!(f.get("name").and_then(|n| n.as_str()), Some("map_full"));
        assert_eq!(f.get("type").and_then(|n| n.as_str()), Some("counter"));
    }

    #[test]
    fn check_finds_violations() {
        assert_eq!(check(&sample()), Vec::<String>::new());
        let bad = vec![
            Table::new("t", "e", &[&[Field::gauge("x", "a \"quoted\" word")]]),
            Table::new("t", "e", &[&[Field::key("1x", "ok"), Field::key("1x", "")]]),
        ];
        let problems = check(&bad);
        assert_eq!(
            problems,
            [
                "t: no key field",
                "t.x: bad description",
                "t: declared twice",
                "t.1x: bad field name",
                "t.1x: bad field name",
                "t.1x: declared twice",
                "t.1x: bad description",
            ]
        );
    }
}
