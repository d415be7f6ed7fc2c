//! Table declarations and the `.meta` text generated from them.
//!
//! Each probe declares its tables once, as [`Table`]s of [`Field`]s; its `.meta` file is
//! [`render`]ed from them, a test of the probe keeps the committed file equal to the rendering,
//! and [`check`] keeps the declarations within upstream's limits. eBPF probes add the
//! `<probe>_bpf_stats` table of `probe_sdk::bpf::loss_table` (feature `bpf`).

use std::borrow::Cow;
use std::fmt::Write as _;

pub use record_line::FieldKind;

/// One field of a table, in record order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Field name: a label name, or the metric suffix (`gala_gopher_<entity>_<name>`).
    pub name: &'static str,
    /// What the field is.
    pub kind: FieldKind,
    /// Description, exported as the metric's `# HELP`.
    pub description: &'static str,
    /// A counter whose upstream meaning is its change per period (`period: "delta"`): the probe
    /// writes the running total; the daemon exports the per-period change under `name` as a
    /// gauge by default, or the running total as a `_total` counter in Prometheus mode
    /// (`metric.counter_mode`).
    pub per_period: bool,
    /// Name and factor to base units of the running total in Prometheus mode (`total_name`,
    /// `total_scale`, e.g. `("sendmsg_seconds_total", "1e-9")` for a nanosecond counter); by
    /// default `<name>_total`, unscaled.
    pub total: Option<(&'static str, &'static str)>,
}

impl Field {
    /// A field of kind `kind`.
    pub const fn new(name: &'static str, kind: FieldKind, description: &'static str) -> Field {
        Field {
            name,
            kind,
            description,
            per_period: false,
            total: None,
        }
    }

    /// A counter the probe writes as a running total and upstream reports per period (a gauge
    /// of the change since the previous period): see [`Field::per_period`].
    pub const fn per_period(name: &'static str, description: &'static str) -> Field {
        Field {
            per_period: true,
            ..Field::new(name, FieldKind::Counter, description)
        }
    }

    /// This field's name and factor to base units as a running total in Prometheus mode
    /// (e.g. `.total("sendmsg_seconds_total", "1e-9")` for nanoseconds).
    pub const fn total(self, name: &'static str, scale: &'static str) -> Field {
        Field {
            total: Some((name, scale)),
            ..self
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

    /// Whether the field is exported as a metric of its own (`gala_gopher_<entity>_<name>`)
    /// rather than as a label or not at all.
    pub fn is_metric(&self) -> bool {
        !matches!(
            self.kind,
            FieldKind::Key | FieldKind::Label | FieldKind::Other
        )
    }
}

/// One table: its records start with `|<name>|` and carry one value per field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Table name, the first token of a record line.
    pub name: &'static str,
    /// Entity name, the Prometheus metric prefix.
    pub entity: &'static str,
    /// Fields in record order: borrowed for tables declared as constants ([`Table::fixed`]),
    /// owned for tables assembled from parts ([`Table::new`]).
    pub fields: Cow<'static, [Field]>,
    /// A trace table (`kind: "trace"`): one record per request or span, which the daemon hands
    /// to its push channels only (never the store or `/metrics`).
    pub trace: bool,
}

impl Table {
    /// A table whose fields are the concatenation of `parts` (e.g. common keys, then metrics).
    pub fn new(name: &'static str, entity: &'static str, parts: &[&[Field]]) -> Table {
        Table {
            name,
            entity,
            fields: Cow::Owned(parts.concat()),
            trace: false,
        }
    }

    /// `self` as a trace table (see [`Table::trace`]).
    pub fn into_trace(mut self) -> Table {
        self.trace = true;
        self
    }

    /// A table with the fields `fields`, usable in a `const` declaration.
    pub const fn fixed(
        name: &'static str,
        entity: &'static str,
        fields: &'static [Field],
    ) -> Table {
        Table {
            name,
            entity,
            fields: Cow::Borrowed(fields),
            trace: false,
        }
    }

    /// Number of values a record of this table carries.
    pub fn width(&self) -> usize {
        self.fields.len()
    }
}

/// How [`render_with`] writes each field of a `.meta` file; both parse the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldLayout {
    /// `{ description: "…", type: "…", name: "…" }` on one line.
    #[default]
    OneLine,
    /// `description`, `type` and `name` on lines of their own, each ending with a comma.
    Block,
}

/// The `.meta` file for `tables` with one line per field ([`FieldLayout::OneLine`]); see
/// [`render_with`].
pub fn render(header: &[&str], tables: &[Table]) -> String {
    render_with(FieldLayout::OneLine, header, tables)
}

/// The `.meta` file for `tables`: `version = "1.0.0"`, then `header` as `#` comment lines
/// (none if empty), then one `measurements` entry per table, its fields written in `layout`.
pub fn render_with(layout: FieldLayout, header: &[&str], tables: &[Table]) -> String {
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
        render_table(&mut out, layout, table);
    }
    out.push_str("\n)\n");
    out
}

fn render_table(out: &mut String, layout: FieldLayout, table: &Table) {
    // Writing into a String cannot fail.
    let _ = writeln!(out, "    {{");
    let _ = writeln!(out, "        table_name: \"{}\",", table.name);
    let _ = writeln!(out, "        entity_name: \"{}\",", table.entity);
    if table.trace {
        let _ = writeln!(out, "        kind: \"trace\",");
    }
    let _ = writeln!(out, "        fields:");
    let _ = writeln!(out, "        (");
    for (i, f) in table.fields.iter().enumerate() {
        let sep = if i + 1 < table.fields.len() { "," } else { "" };
        let (description, kind, name) = (f.description, f.kind, f.name);
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if f.per_period {
            extra.push(("period", "delta"));
        }
        if let Some((total_name, scale)) = f.total {
            extra.push(("total_name", total_name));
            extra.push(("total_scale", scale));
        }
        let _ = match layout {
            FieldLayout::OneLine => {
                let tail: String = extra
                    .iter()
                    .map(|(k, v)| format!(", {k}: \"{v}\""))
                    .collect();
                writeln!(
                    out,
                    "            {{ description: \"{description}\", type: \"{kind}\", name: \"{name}\"{tail} }}{sep}"
                )
            }
            FieldLayout::Block => {
                let tail: String = extra
                    .iter()
                    .map(|(k, v)| format!("                {k}: \"{v}\",\n"))
                    .collect();
                writeln!(
                    out,
                    "            {{\n                description: \"{description}\",\n                type: \"{kind}\",\n                name: \"{name}\",\n{tail}            }}{sep}"
                )
            }
        };
    }
    let _ = writeln!(out, "        )");
    let _ = write!(out, "    }}");
}

/// Upstream's limits a declaration must keep: names are Prometheus-safe and at most 31 bytes
/// (the IMDB keeps 31), descriptions at most 255 bytes and free of `"`, `\` and control
/// characters, a table has a key, table names are unique, and tables sharing an entity do not
/// export the same metric. Returns every violation found.
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
                || f.description
                    .contains(|c: char| c == '"' || c == '\\' || c.is_control())
            {
                problems.push(format!("{}.{}: bad description", t.name, f.name));
            }
            if (f.per_period || f.total.is_some()) && f.kind != FieldKind::Counter {
                problems.push(format!(
                    "{}.{}: per-period/total on a non-counter",
                    t.name, f.name
                ));
            }
            if let Some((total_name, scale)) = f.total {
                if total_name.len() > 63 || !prometheus_name(total_name) {
                    problems.push(format!("{}.{}: bad total name", t.name, f.name));
                }
                if !scale.parse::<f64>().is_ok_and(|v| v.is_finite() && v > 0.0) {
                    problems.push(format!("{}.{}: bad total scale {scale:?}", t.name, f.name));
                }
            }
            if !f.is_metric() {
                continue;
            }
            // Each metric family (`<entity>_<name>`) must come from one table only.
            let other = tables[..i]
                .iter()
                .filter(|o| o.entity == t.entity && o.name != t.name)
                .find(|o| o.fields.iter().any(|g| g.is_metric() && g.name == f.name));
            if let Some(other) = other {
                problems.push(format!(
                    "{}.{}: metric {}_{} also exported by {}",
                    t.name, f.name, t.entity, f.name, other.name
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: Table = Table::fixed(
        "t_stats",
        "self",
        &[
            Field::key("probe", "probe name"),
            Field::counter("events", "events seen"),
        ],
    );

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
            STATS,
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
        table_name: "t_stats",
        entity_name: "self",
        fields:
        (
            { description: "probe name", type: "key", name: "probe" },
            { description: "events seen", type: "counter", name: "events" }
        )
    }
)
"#;
        assert_eq!(render(&["line one", "", "line three"], &sample()), expected);
        assert!(render(&[], &sample()).starts_with("version = \"1.0.0\"\n\nmeasurements:\n(\n"));
    }

    #[test]
    fn per_period_counters_render_their_attributes_in_both_layouts() {
        const T: Table = Table::fixed(
            "t_io",
            "thing",
            &[
                Field::key("id", "identity"),
                Field::per_period("bytes", "bytes in the period"),
                Field::per_period("wait_ns", "wait in the period, ns")
                    .total("wait_seconds_total", "1e-9"),
            ],
        );
        let one = render(&[], &[T]);
        assert!(one.contains(
            r#"{ description: "bytes in the period", type: "counter", name: "bytes", period: "delta" },"#
        ));
        assert!(one.contains(
            r#"name: "wait_ns", period: "delta", total_name: "wait_seconds_total", total_scale: "1e-9" }"#
        ));
        let block = render_with(FieldLayout::Block, &[], &[T]);
        assert!(block.contains("                period: \"delta\",\n                total_name:"));
        assert!(check(&[T]).is_empty(), "{:?}", check(&[T]));
        let mut bad = T.clone();
        bad.fields = Cow::Owned(vec![
            Field::key("id", "identity"),
            Field::gauge("g", "gauge").total("g_total", "0"),
        ]);
        let problems = check(&[bad]);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn renders_the_block_layout() {
        let expected = r#"version = "1.0.0"

measurements:
(
    {
        table_name: "t_one",
        entity_name: "thing",
        fields:
        (
            {
                description: "identity",
                type: "key",
                name: "id",
            },
            {
                description: "latency, us",
                type: "histogram",
                name: "lat",
            }
        )
    },
    {
        table_name: "t_stats",
        entity_name: "self",
        fields:
        (
            {
                description: "probe name",
                type: "key",
                name: "probe",
            },
            {
                description: "events seen",
                type: "counter",
                name: "events",
            }
        )
    }
)
"#;
        assert_eq!(render_with(FieldLayout::Block, &[], &sample()), expected);
    }

    #[test]
    fn both_layouts_parse_with_the_daemon_reader() {
        for layout in [FieldLayout::OneLine, FieldLayout::Block] {
            let text = render_with(layout, &["header"], &sample());
            let doc = gala_libconfig::parse_str(&text, std::path::Path::new("t.meta")).unwrap();
            let m = doc.lookup("measurements.[1]").unwrap();
            assert_eq!(
                m.get("table_name").and_then(|n| n.as_str()),
                Some("t_stats")
            );
            assert_eq!(m.get("entity_name").and_then(|n| n.as_str()), Some("self"));
            let f = m.lookup("fields.[1]").unwrap();
            assert_eq!(f.get("name").and_then(|n| n.as_str()), Some("events"));
            assert_eq!(f.get("type").and_then(|n| n.as_str()), Some("counter"));
            assert_eq!(
                f.get("description").and_then(|n| n.as_str()),
                Some("events seen")
            );
        }
    }

    #[test]
    fn fixed_and_assembled_tables_are_equal() {
        let assembled = Table::new(
            "t_stats",
            "self",
            &[
                &[Field::key("probe", "probe name")],
                &[Field::counter("events", "events seen")],
            ],
        );
        assert_eq!(assembled, STATS);
        assert_eq!(STATS.width(), 2);
    }

    #[test]
    fn check_finds_violations() {
        assert_eq!(check(&sample()), Vec::<String>::new());
        let bad = vec![
            Table::new("t", "e", &[&[Field::gauge("x", "a \"quoted\" word")]]),
            Table::new(
                "t",
                "e",
                &[&[
                    Field::key("1x", "ok"),
                    Field::key("1x", ""),
                    Field::gauge("y", "two\nlines"),
                ]],
            ),
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
                "t.y: bad description",
            ]
        );
    }

    #[test]
    fn check_finds_a_metric_exported_by_two_tables() {
        let tables = vec![
            Table::new(
                "a",
                "e",
                &[&[Field::key("id", "id"), Field::gauge("m", "m of a")]],
            ),
            // Same entity, a label of the same name: no metric clash.
            Table::new(
                "b",
                "e",
                &[&[Field::key("id", "id"), Field::label("m", "m label")]],
            ),
            // Other entity: another metric family.
            Table::new(
                "c",
                "f",
                &[&[Field::key("id", "id"), Field::gauge("m", "m of c")]],
            ),
            Table::new(
                "d",
                "e",
                &[&[Field::key("id", "id"), Field::counter("m", "m of d")]],
            ),
        ];
        assert_eq!(check(&tables), ["d.m: metric e_m also exported by a"]);
    }
}
