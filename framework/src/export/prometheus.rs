//! Prometheus text exposition (format 0.0.4) of the table store.
//!
//! Scrapes are non-destructive: any number of scrapers see the same live series. Metric names are
//! upstream's `gala_gopher_<entity>_<field>`; series with the same name from several tables are
//! merged into one family (one `# HELP`/`# TYPE`).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::meta::FieldKind;
use crate::store::value::{canonical_number, parse_histogram};
use crate::store::{Table, TableStore};

/// Rendering options from `web_server`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// Append upstream's millisecond timestamps (the row's last update time).
    pub timestamps: bool,
}

struct Family {
    kind: FieldKind,
    help: String,
    members: Vec<(Arc<Mutex<Table>>, usize)>,
}

fn type_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Counter => "counter",
        FieldKind::Histogram => "histogram",
        _ => "gauge",
    }
}

fn push_help(out: &mut String, name: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\n');
}

fn push_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &str,
    le: Option<&str>,
    value: &str,
    ts: Option<u64>,
) {
    out.push_str(name);
    out.push_str(suffix);
    out.push('{');
    out.push_str(labels);
    if let Some(le) = le {
        if !labels.is_empty() {
            out.push(',');
        }
        out.push_str("le=\"");
        out.push_str(le);
        out.push('"');
    }
    out.push_str("} ");
    out.push_str(canonical_number(value));
    if let Some(ts) = ts {
        let _ = write!(out, " {ts}");
    }
    out.push('\n');
}

/// Render every live series of `store` into `out`. Rows older than the record timeout (not yet
/// swept) are skipped.
pub fn render(store: &TableStore, opts: RenderOptions, now_ms: u64, out: &mut String) {
    let timeout = store.limits().record_timeout_ms;
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for table in store.tables() {
        TableStore::with_table(&table, |t| {
            let schema = t.schema();
            for (i, f) in schema.fields.iter().enumerate() {
                if !f.kind.is_metric() {
                    continue;
                }
                let name = format!("gala_gopher_{}_{}", schema.entity_name, f.name);
                let fam = families.entry(name).or_insert_with(|| Family {
                    kind: f.kind,
                    help: f.description.clone(),
                    members: Vec::new(),
                });
                // Same name but another type in another table cannot share a family.
                if fam.kind == f.kind {
                    fam.members.push((Arc::clone(&table), i));
                }
            }
        });
    }

    for (name, fam) in &families {
        let header_at = out.len();
        push_help(out, name, &fam.help);
        let _ = writeln!(out, "# TYPE {name} {}", type_name(fam.kind));
        let body_at = out.len();
        let mut max_lines = String::new();
        // Two tables feeding one family could yield the same label set twice; the first table
        // (by name) wins so the exposition never has duplicate series.
        let mut seen: Option<HashSet<String>> = (fam.members.len() > 1).then(HashSet::new);
        for (table, idx) in &fam.members {
            TableStore::with_table(table, |t| {
                for row in t.rows() {
                    if now_ms.saturating_sub(row.updated_ms()) > timeout {
                        continue;
                    }
                    if let Some(seen) = seen.as_mut() {
                        if row.value(*idx).is_some() && !seen.insert(row.labels().to_string()) {
                            continue;
                        }
                    }
                    let Some(v) = row.value(*idx) else { continue };
                    let ts = opts.timestamps.then_some(row.updated_ms());
                    if fam.kind != FieldKind::Histogram {
                        push_sample(out, name, "", row.labels(), None, v, ts);
                        continue;
                    }
                    let Some(h) = parse_histogram(v) else {
                        continue;
                    };
                    let mut has_inf = false;
                    for (b, c) in &h.buckets {
                        let le = canonical_number(b);
                        has_inf |= le == "+Inf";
                        push_sample(out, name, "_bucket", row.labels(), Some(le), c, ts);
                    }
                    if !has_inf {
                        push_sample(
                            out,
                            name,
                            "_bucket",
                            row.labels(),
                            Some("+Inf"),
                            h.count,
                            ts,
                        );
                    }
                    push_sample(out, name, "_sum", row.labels(), None, h.sum, ts);
                    push_sample(out, name, "_count", row.labels(), None, h.count, ts);
                    push_sample(&mut max_lines, name, "_max", row.labels(), None, h.max, ts);
                }
            });
        }
        if out.len() == body_at {
            out.truncate(header_at);
            continue;
        }
        if !max_lines.is_empty() {
            let max_name = format!("{name}_max");
            push_help(
                out,
                &max_name,
                &format!("Maximum observed value of {name}."),
            );
            let _ = writeln!(out, "# TYPE {max_name} gauge");
            out.push_str(&max_lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::TableSchema;
    use crate::store::{Scratch, StoreLimits};

    fn schema(fields: &[(&str, FieldKind)]) -> crate::meta::SchemaRef {
        Arc::new(TableSchema::from_fields("t", "E", fields))
    }

    fn render_lines(lines: &[&[&str]], sch: &crate::meta::SchemaRef, ts: bool) -> String {
        let store = TableStore::new(StoreLimits::default(), "M");
        let sc = &mut Scratch::default();
        for l in lines {
            store.upsert(sch, l, 1000, sc).unwrap();
        }
        let mut out = String::new();
        render(&store, RenderOptions { timestamps: ts }, 1000, &mut out);
        out
    }

    #[test]
    fn reference_vector_1_with_help_and_type() {
        let sch = schema(&[
            ("k", FieldKind::Key),
            ("l", FieldKind::Label),
            ("g", FieldKind::Gauge),
            ("c", FieldKind::Counter),
        ]);
        let out = render_lines(&[&["a", "x", "1", "2"]], &sch, false);
        assert_eq!(
            out,
            "# HELP gala_gopher_E_c c help\n# TYPE gala_gopher_E_c counter\n\
             gala_gopher_E_c{k=\"a\",l=\"x\",machine_id=\"M\"} 2\n\
             # HELP gala_gopher_E_g g help\n# TYPE gala_gopher_E_g gauge\n\
             gala_gopher_E_g{k=\"a\",l=\"x\",machine_id=\"M\"} 1\n"
        );
        let out = render_lines(&[&["a", "x", "1", "2"]], &sch, true);
        assert!(out.contains("gala_gopher_E_g{k=\"a\",l=\"x\",machine_id=\"M\"} 1 1000\n"));
    }

    #[test]
    fn absent_metric_has_no_line_and_empty_family_no_header() {
        let sch = schema(&[
            ("k", FieldKind::Key),
            ("g", FieldKind::Gauge),
            ("c", FieldKind::Counter),
        ]);
        let out = render_lines(&[&["a", "", "2"]], &sch, false);
        assert!(!out.contains("gala_gopher_E_g"));
        assert!(out.contains("gala_gopher_E_c{k=\"a\",machine_id=\"M\"} 2\n"));
    }

    #[test]
    fn histogram_reference_vector() {
        let sch = schema(&[("k", FieldKind::Key), ("h", FieldKind::Histogram)]);
        let out = render_lines(&[&["a", "3 10 1 100 3 1000 3 250 900"]], &sch, false);
        assert_eq!(
            out,
            "# HELP gala_gopher_E_h h help\n# TYPE gala_gopher_E_h histogram\n\
             gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"10\"} 1\n\
             gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"100\"} 3\n\
             gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"1000\"} 3\n\
             gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"+Inf\"} 3\n\
             gala_gopher_E_h_sum{k=\"a\",machine_id=\"M\"} 250\n\
             gala_gopher_E_h_count{k=\"a\",machine_id=\"M\"} 3\n\
             # HELP gala_gopher_E_h_max Maximum observed value of gala_gopher_E_h.\n\
             # TYPE gala_gopher_E_h_max gauge\n\
             gala_gopher_E_h_max{k=\"a\",machine_id=\"M\"} 900\n"
        );
    }

    #[test]
    fn same_series_from_two_tables_rendered_once() {
        let store = TableStore::new(StoreLimits::default(), "M");
        let sc = &mut Scratch::default();
        let mk = |table: &str| {
            let mut s = (*schema(&[("k", FieldKind::Key), ("g", FieldKind::Gauge)])).clone();
            s.table_name = table.into();
            Arc::new(s)
        };
        store.upsert(&mk("t1"), &["a", "1"], 1000, sc).unwrap();
        store.upsert(&mk("t2"), &["a", "2"], 1000, sc).unwrap();
        store.upsert(&mk("t2"), &["b", "3"], 1000, sc).unwrap();
        let mut out = String::new();
        render(&store, RenderOptions::default(), 1000, &mut out);
        assert_eq!(
            out.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            vec![
                "gala_gopher_E_g{k=\"a\",machine_id=\"M\"} 1",
                "gala_gopher_E_g{k=\"b\",machine_id=\"M\"} 3"
            ]
        );
    }

    #[test]
    fn special_values_canonical() {
        let sch = schema(&[("k", FieldKind::Key), ("g", FieldKind::Gauge)]);
        let out = render_lines(
            &[&["a", "nan"], &["b", "inf"], &["c", "-inf"], &["d", "1e3"]],
            &sch,
            false,
        );
        assert!(out.contains("{k=\"a\",machine_id=\"M\"} NaN\n"));
        assert!(out.contains("{k=\"b\",machine_id=\"M\"} +Inf\n"));
        assert!(out.contains("{k=\"c\",machine_id=\"M\"} -Inf\n"));
        assert!(out.contains("{k=\"d\",machine_id=\"M\"} 1e3\n"));
    }
}
