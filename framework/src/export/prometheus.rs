//! Prometheus exposition of the table store: the classic text format (0.0.4, the default) and
//! OpenMetrics text 1.0.0 ([`openmetrics`] holds what differs).
//!
//! Scrapes are non-destructive: any number of scrapers see the same live series. Metric names are
//! upstream's `gala_gopher_<entity>_<field>`; series with the same name from several tables are
//! merged into one family (one `# HELP`/`# TYPE`). Label strings come pre-rendered from the store.
//!
//! A render can hand its output over in pieces ([`ChunkSink`]) so that the first bytes can be
//! sent while the rest is still being rendered.

pub mod openmetrics;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::meta::FieldKind;
use crate::store::value::{canonical_number, parse_histogram, Histogram};
use crate::store::{Table, TableStore};

/// Rendering options from `web_server` (default: no timestamps, OpenMetrics when asked).
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Append the row's last update time to each sample (milliseconds in the classic format,
    /// upstream's; seconds in OpenMetrics).
    pub timestamps: bool,
    /// Whether `/metrics` may answer in OpenMetrics when asked (`web_server.openmetrics`).
    pub openmetrics: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            timestamps: false,
            openmetrics: true,
        }
    }
}

/// Exposition format of a `/metrics` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Prometheus text format 0.0.4 (the default).
    #[default]
    Text,
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
}

/// Receives a render in pieces of complete lines.
pub trait ChunkSink {
    /// How full the buffer gets before it is handed over (asked again after each chunk).
    fn chunk_bytes(&self) -> usize;

    /// `buf` holds at least [`ChunkSink::chunk_bytes`]: take its contents (leave it empty).
    /// Called while a table is locked, so it must be quick.
    fn chunk(&mut self, buf: &mut String);

    /// No table is locked: the moment for slower work on the chunks taken so far.
    fn unlocked(&mut self) {}
}

/// Where a render writes: a buffer handed to the sink whenever it is full.
struct Out<'a> {
    buf: &'a mut String,
    /// The sink's current [`ChunkSink::chunk_bytes`].
    limit: usize,
    sink: &'a mut dyn ChunkSink,
}

impl Out<'_> {
    /// Hand the buffer over if it is full. Only called after a complete sample line.
    fn maybe_flush(&mut self) {
        if self.buf.len() >= self.limit {
            self.sink.chunk(self.buf);
            self.limit = self.sink.chunk_bytes();
        }
    }
}

/// Keeps everything in the buffer.
pub struct KeepAll;

impl ChunkSink for KeepAll {
    fn chunk_bytes(&self) -> usize {
        usize::MAX
    }

    fn chunk(&mut self, _buf: &mut String) {}
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

fn push_header(out: &mut String, format: Format, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    match format {
        Format::Text => {
            for c in help.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
        }
        Format::OpenMetrics => openmetrics::push_help_text(out, help),
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// One sample line.
#[allow(clippy::too_many_arguments)]
fn push_sample(
    out: &mut String,
    format: Format,
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
        match format {
            Format::Text => {
                let _ = write!(out, " {ts}");
            }
            Format::OpenMetrics => openmetrics::push_timestamp(out, ts),
        }
    }
    out.push('\n');
}

/// Render every live series of `store` into `out` in the classic text format. Rows older than
/// the record timeout (not yet swept) are skipped.
pub fn render(store: &TableStore, opts: RenderOptions, now_ms: u64, out: &mut String) {
    render_chunked(store, opts, Format::Text, now_ms, out, &mut KeepAll);
}

/// Render every live series of `store` in `format`, handing `out` to `sink` whenever it holds
/// the sink's chunk size or more (what is left at the end stays in `out`). Without `# EOF`: the
/// caller appends the self-metrics first.
pub fn render_chunked(
    store: &TableStore,
    opts: RenderOptions,
    format: Format,
    now_ms: u64,
    out: &mut String,
    sink: &mut dyn ChunkSink,
) {
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

    let mut out = Out {
        buf: out,
        limit: sink.chunk_bytes(),
        sink,
    };
    let mut le = String::new();
    for (name, fam) in &families {
        // OpenMetrics names a counter family without `_total` and its samples with it.
        let (family, sample) = match (format, fam.kind) {
            (Format::OpenMetrics, FieldKind::Counter) => openmetrics::counter_names(name),
            _ => (name.as_str(), name.clone()),
        };
        let header_at = out.buf.len();
        push_header(out.buf, format, family, type_name(fam.kind), &fam.help);
        // Once a sample is written the header stays, so the buffer may be handed over.
        let mut wrote = false;
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
                    let Some(v) = row.value(*idx) else { continue };
                    if let Some(seen) = seen.as_mut() {
                        if !seen.insert(row.labels().to_string()) {
                            continue;
                        }
                    }
                    let ts = opts.timestamps.then_some(row.updated_ms());
                    let labels = row.labels();
                    let written = if fam.kind == FieldKind::Histogram {
                        match parse_histogram(v) {
                            Some(h) => {
                                push_histogram(out.buf, format, &sample, labels, &h, ts, &mut le);
                                push_sample(
                                    &mut max_lines,
                                    format,
                                    &sample,
                                    "_max",
                                    labels,
                                    None,
                                    h.max,
                                    ts,
                                );
                                true
                            }
                            None => false,
                        }
                    } else {
                        let v = canonical_number(v);
                        let ok = format == Format::Text
                            || fam.kind != FieldKind::Counter
                            || openmetrics::counter_value_ok(v);
                        if ok {
                            push_sample(out.buf, format, &sample, "", labels, None, v, ts);
                        }
                        ok
                    };
                    wrote |= written;
                    if wrote {
                        out.maybe_flush();
                    }
                }
            });
            out.sink.unlocked();
        }
        if !wrote {
            out.buf.truncate(header_at);
            continue;
        }
        if !max_lines.is_empty() {
            let max_name = format!("{name}_max");
            push_header(
                out.buf,
                format,
                &max_name,
                "gauge",
                &format!("Maximum observed value of {name}."),
            );
            out.buf.push_str(&max_lines);
            out.maybe_flush();
            out.sink.unlocked();
        }
    }
}

/// The `_bucket`, `_sum` and `_count` lines of one histogram row. OpenMetrics additionally wants
/// canonical `le` values, whole counts, and no `_sum`/`_count` that is negative or NaN or comes
/// with negative buckets; a row it cannot carry gets only what is valid.
fn push_histogram(
    out: &mut String,
    format: Format,
    name: &str,
    labels: &str,
    h: &Histogram<'_>,
    ts: Option<u64>,
    le: &mut String,
) {
    let om = format == Format::OpenMetrics;
    if om
        && !h
            .buckets
            .iter()
            .all(|(_, c)| openmetrics::is_whole_count(c))
    {
        return;
    }
    let mut has_inf = false;
    let mut negative_bucket = false;
    for (b, c) in &h.buckets {
        let bound = canonical_number(b);
        has_inf |= bound == "+Inf";
        let bound = if om {
            let v: f64 = bound.parse().unwrap_or(f64::NAN);
            negative_bucket |= v < 0.0;
            le.clear();
            openmetrics::push_canonical_float(le, v);
            le.as_str()
        } else {
            bound
        };
        push_sample(out, format, name, "_bucket", labels, Some(bound), c, ts);
    }
    if !has_inf {
        push_sample(
            out,
            format,
            name,
            "_bucket",
            labels,
            Some("+Inf"),
            h.count,
            ts,
        );
    }
    if om && (negative_bucket || !openmetrics::counter_value_ok(canonical_number(h.sum))) {
        return;
    }
    push_sample(out, format, name, "_sum", labels, None, h.sum, ts);
    push_sample(out, format, name, "_count", labels, None, h.count, ts);
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
        render(
            &store,
            RenderOptions {
                timestamps: ts,
                openmetrics: true,
            },
            1000,
            &mut out,
        );
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

    fn render_om(lines: &[&[&str]], sch: &crate::meta::SchemaRef, ts: bool) -> String {
        let store = TableStore::new(StoreLimits::default(), "M");
        let sc = &mut Scratch::default();
        for l in lines {
            store.upsert(sch, l, 1234, sc).unwrap();
        }
        let mut out = String::new();
        let opts = RenderOptions {
            timestamps: ts,
            openmetrics: true,
        };
        render_chunked(
            &store,
            opts,
            Format::OpenMetrics,
            1234,
            &mut out,
            &mut KeepAll,
        );
        out
    }

    #[test]
    fn openmetrics_counters_timestamps_and_help() {
        let mut s = (*schema(&[
            ("k", FieldKind::Key),
            ("g", FieldKind::Gauge),
            ("c", FieldKind::Counter),
            ("n_total", FieldKind::Counter),
        ]))
        .clone();
        s.fields[1].description = "say \"hi\"\\".into();
        let sch = Arc::new(s);
        let out = render_om(
            &[&["a", "1", "2", "3"], &["b", "1", "-1", "NaN"]],
            &sch,
            true,
        );
        assert_eq!(
            out,
            "# HELP gala_gopher_E_c c help\n# TYPE gala_gopher_E_c counter\n\
             gala_gopher_E_c_total{k=\"a\",machine_id=\"M\"} 2 1.234\n\
             # HELP gala_gopher_E_g say \\\"hi\\\"\\\\\n# TYPE gala_gopher_E_g gauge\n\
             gala_gopher_E_g{k=\"a\",machine_id=\"M\"} 1 1.234\n\
             gala_gopher_E_g{k=\"b\",machine_id=\"M\"} 1 1.234\n\
             # HELP gala_gopher_E_n n_total help\n# TYPE gala_gopher_E_n counter\n\
             gala_gopher_E_n_total{k=\"a\",machine_id=\"M\"} 3 1.234\n"
        );
    }

    #[test]
    fn openmetrics_histograms() {
        let sch = schema(&[("k", FieldKind::Key), ("h", FieldKind::Histogram)]);
        let out = render_om(
            &[
                &["a", "3 10 1 100 3 1000000 3 250 900"],
                // Not whole counts: OpenMetrics cannot carry it.
                &["b", "1 10 1.5 2 3"],
                // A negative bucket: no _sum/_count.
                &["c", "2 -5 1 5 2 -1 4"],
            ],
            &sch,
            false,
        );
        assert_eq!(
            out,
            "# HELP gala_gopher_E_h h help\n# TYPE gala_gopher_E_h histogram\n\
             gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"10.0\"} 1\n\
             gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"100.0\"} 3\n\
             gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"1e+06\"} 3\n\
             gala_gopher_E_h_bucket{k=\"a\",machine_id=\"M\",le=\"+Inf\"} 3\n\
             gala_gopher_E_h_sum{k=\"a\",machine_id=\"M\"} 250\n\
             gala_gopher_E_h_count{k=\"a\",machine_id=\"M\"} 3\n\
             gala_gopher_E_h_bucket{k=\"c\",machine_id=\"M\",le=\"-5.0\"} 1\n\
             gala_gopher_E_h_bucket{k=\"c\",machine_id=\"M\",le=\"5.0\"} 2\n\
             gala_gopher_E_h_bucket{k=\"c\",machine_id=\"M\",le=\"+Inf\"} 2\n\
             # HELP gala_gopher_E_h_max Maximum observed value of gala_gopher_E_h.\n\
             # TYPE gala_gopher_E_h_max gauge\n\
             gala_gopher_E_h_max{k=\"a\",machine_id=\"M\"} 900\n\
             gala_gopher_E_h_max{k=\"b\",machine_id=\"M\"} 3\n\
             gala_gopher_E_h_max{k=\"c\",machine_id=\"M\"} 4\n"
        );
    }

    /// Collects the chunks a render hands over.
    struct Collect(Vec<String>);

    impl ChunkSink for Collect {
        fn chunk_bytes(&self) -> usize {
            1000
        }

        fn chunk(&mut self, buf: &mut String) {
            self.0.push(std::mem::take(buf));
        }
    }

    #[test]
    fn chunked_render_is_the_whole_render_in_pieces() {
        let sch = schema(&[
            ("k", FieldKind::Key),
            ("g", FieldKind::Gauge),
            ("c", FieldKind::Counter),
            ("h", FieldKind::Histogram),
        ]);
        let store = TableStore::new(StoreLimits::default(), "M");
        let sc = &mut Scratch::default();
        for i in 0..500 {
            let k = i.to_string();
            store
                .upsert(&sch, &[&k, "1.5", "7", "2 1 1 2 2 3 2"], 1000, sc)
                .unwrap();
        }
        for format in [Format::Text, Format::OpenMetrics] {
            let opts = RenderOptions::default();
            let mut whole = String::new();
            render_chunked(&store, opts, format, 1000, &mut whole, &mut KeepAll);
            let mut sink = Collect(Vec::new());
            let mut rest = String::new();
            render_chunked(&store, opts, format, 1000, &mut rest, &mut sink);
            assert!(sink.0.len() > 10, "{format:?}: {} chunks", sink.0.len());
            assert!(sink.0.iter().all(|c| c.len() >= 1000 && c.ends_with('\n')));
            assert_eq!(sink.0.concat() + &rest, whole, "{format:?}");
        }
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
