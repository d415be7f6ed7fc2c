//! Ingest: the reader side of a probe's stdout. Framer → parser → schema lookup → store, with
//! every drop counted per probe and reason. Non-record lines go to the daemon log (rate-limited),
//! `|event|…|` lines go to the event path instead of the store. A record's extra labels
//! ([`crate::record_labels`]: container and pod labels, the probe's custom labels) are picked up
//! once per read chunk and added to each of its records, in the store and on the push path.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use tokio::io::AsyncReadExt;

// The hand-over traits live with the messages (below ingest, events and export); `LogEvents`
// and `EventSink` stay reachable here for ingest's callers.
pub use crate::message::{EventSink, LogEvents};

use crate::clock::now_ms;
use crate::custom_labels::{CustomLabels, LabelSet};
use crate::message::{RecordSink, RecordView};
use crate::meta::{FieldKind, MetaCache, MetaCounters, MetaLimits, SchemaRef, SchemaRegistry};
use crate::record_labels::{ContainerSource, ProcessSource, RecordLabels};
use crate::store::{Scratch, TableStore};
use crate::supervisor::{OutputSink, ProbeSpec};
use crate::telemetry::{DropReason, ProbeStats};
use crate::wire::{parse_record, FramedLine, Framer, ParseError};

/// Unknown table names warned about once per probe reader (then only counted).
const MAX_WARNED_TABLES: usize = 32;

/// Bytes read from a probe pipe per read call.
const READ_CHUNK: usize = 256 * 1024;

/// The ingest path shared by all probe readers (cheap to clone: shared handles).
#[derive(Clone)]
pub struct Ingest {
    registry: Arc<RwLock<SchemaRegistry>>,
    store: Arc<TableStore>,
    events: Arc<dyn EventSink>,
    records: Option<Arc<dyn RecordSink>>,
    custom_labels: Option<Arc<CustomLabels>>,
    containers: Option<Arc<dyn ContainerSource>>,
    identities: Option<Arc<dyn ProcessSource>>,
    max_line: usize,
    /// `.meta` loads within the limits (`max_fields` = `imdb.max_metrics_num`), remembered by
    /// file identity so restarts and retries do not re-parse an unchanged file.
    metas: Arc<MetaCache>,
}

impl Ingest {
    /// Build the ingest path.
    pub fn new(
        registry: Arc<RwLock<SchemaRegistry>>,
        store: Arc<TableStore>,
        events: Arc<dyn EventSink>,
        max_line: usize,
        max_fields: usize,
    ) -> Self {
        Ingest {
            registry,
            store,
            events,
            records: None,
            custom_labels: None,
            containers: None,
            identities: None,
            max_line,
            metas: Arc::new(MetaCache::new(
                MetaLimits::with_max_fields(max_fields),
                Arc::default(),
            )),
        }
    }

    /// Count `.meta` loads and refusals into `counters` (the daemon's self-metrics), and export
    /// per-period counters as `counter_mode` says (`metric.counter_mode`).
    pub fn with_meta_counters(
        mut self,
        counters: Arc<MetaCounters>,
        counter_mode: crate::meta::CounterMode,
    ) -> Self {
        let limits = MetaLimits {
            counter_mode,
            ..self.metas.limits()
        };
        self.metas = Arc::new(MetaCache::new(limits, counters));
        self
    }

    /// Also hand every accepted record to `sink` (push exporters).
    pub fn with_record_sink(mut self, sink: Arc<dyn RecordSink>) -> Self {
        self.records = Some(sink);
        self
    }

    /// Add each probe's custom labels from `labels` to its records (changes apply from the
    /// reader's next read chunk).
    pub fn with_custom_labels(mut self, labels: Arc<CustomLabels>) -> Self {
        self.custom_labels = Some(labels);
        self
    }

    /// Add container and pod labels from `source` to the records of processes and containers
    /// (`metric.pod_info_switch`).
    pub fn with_containers(mut self, source: Arc<dyn ContainerSource>) -> Self {
        self.containers = Some(source);
        self
    }

    /// Add upstream HEAD's process identity labels from `source` to the records of processes:
    /// `comm` for tables with a `tgid` field, and `cmdline`, `start_time` for the `proc` entity.
    pub fn with_process_identity(mut self, source: Arc<dyn ProcessSource>) -> Self {
        self.identities = Some(source);
        self
    }

    /// A line handler with its own scratch state (one per probe reader).
    pub fn handler(&self, stats: Arc<ProbeStats>) -> LineHandler {
        let custom = RecordLabels::new(
            &stats.name,
            self.custom_labels.clone(),
            self.containers.clone(),
            self.identities.clone(),
        );
        LineHandler {
            custom,
            registry: Arc::clone(&self.registry),
            store: Arc::clone(&self.store),
            events: Arc::clone(&self.events),
            records: self.records.clone(),
            stats,
            scratch: {
                let mut s = Scratch::default();
                s.keep_derived(self.records.is_some());
                s
            },
            sink_text: String::new(),
            sink_values: Vec::new(),
            cached: None,
            values_buf: Vec::new(),
            warned_tables: Default::default(),
            warned_counts: Default::default(),
            now_ms: now_ms(),
        }
    }

    /// Read `reader` to EOF through the framer and a [`LineHandler`].
    pub async fn consume_reader<R: tokio::io::AsyncRead + Unpin>(
        &self,
        stats: Arc<ProbeStats>,
        mut reader: R,
    ) {
        let mut handler = self.handler(stats);
        let mut framer = Framer::new(self.max_line);
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(probe = %handler.stats.name, error = %e, "reading probe stdout");
                    break;
                }
            };
            handler.begin_chunk(now_ms());
            framer.push(&buf[..n], |l| handler.handle(l));
        }
        framer.finish(|l| handler.handle(l));
        crate::telemetry::log_suppressed(
            &handler.stats.name,
            handler.stats.log_limit.take_pending(),
        );
    }
}

impl OutputSink for Ingest {
    fn prepare(&self, spec: &ProbeSpec) -> Result<(), String> {
        let load = || self.metas.prepare(&self.registry, &spec.meta_files);
        // Parsing a changed `.meta` can take a while: hand this worker's other tasks to another
        // thread meanwhile (the registry lock is only taken for the final swap).
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(load)
            }
            _ => load(),
        }
    }

    fn retire(&self, spec: &ProbeSpec) {
        let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
        for path in &spec.meta_files {
            reg.remove_file(path);
            self.metas.forget(path);
        }
    }

    fn consume(
        &self,
        stats: Arc<ProbeStats>,
        stdout: tokio::process::ChildStdout,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        grow_pipe(&stdout);
        let this = self.clone();
        Box::pin(async move { this.consume_reader(stats, stdout).await })
    }
}

/// Ask for a 1 MiB pipe buffer so a fast probe is not woken for every 64 KiB (best effort: the
/// kernel caps it at `fs.pipe-max-size`).
fn grow_pipe(stdout: &tokio::process::ChildStdout) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a valid pipe fd owned by `stdout`; failure only leaves the default size.
    unsafe {
        libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// Per-probe line handler: parse, look up, store, count.
pub struct LineHandler {
    registry: Arc<RwLock<SchemaRegistry>>,
    store: Arc<TableStore>,
    events: Arc<dyn EventSink>,
    records: Option<Arc<dyn RecordSink>>,
    /// The extra labels of the probe's records (custom, process, container), if any source.
    custom: Option<RecordLabels>,
    stats: Arc<ProbeStats>,
    scratch: Scratch,
    sink_text: String,
    sink_values: Vec<Option<&'static str>>,
    cached: Option<SchemaRef>,
    values_buf: Vec<&'static str>,
    warned_tables: std::collections::HashSet<String>,
    /// (table, declared fields, values seen) mismatches already logged.
    warned_counts: std::collections::HashSet<(String, usize, usize)>,
    /// Timestamp applied to records of the current chunk.
    pub now_ms: u64,
}

impl LineHandler {
    /// Start a read chunk: its records are stamped `now_ms`, and a change of the probe's custom
    /// labels made since the last chunk is picked up.
    pub fn begin_chunk(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        if let Some(c) = &mut self.custom {
            c.refresh();
        }
    }

    /// Handle one framed line.
    pub fn handle(&mut self, line: FramedLine<'_>) {
        let bytes = match line {
            FramedLine::TooLong => {
                self.stats.drop_line(DropReason::TooLong);
                return;
            }
            FramedLine::Line(b) => b,
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                if bytes.first() == Some(&b'|') {
                    self.stats.drop_line(DropReason::InvalidUtf8);
                } else if self.admit_log() {
                    log_probe_line(&self.stats.name, &String::from_utf8_lossy(bytes));
                }
                return;
            }
        };
        let mut values = std::mem::take(&mut self.values_buf);
        self.handle_text(text, &mut values);
        values.clear();
        // Reuse the allocation for the next line: an empty vec holds no borrow of `text`, and
        // collecting into a same-layout element type is done in place.
        self.values_buf = values.into_iter().map(|_| "").collect();
    }

    fn handle_text<'a>(&mut self, text: &'a str, values: &mut Vec<&'a str>) {
        let table = match parse_record(text, values) {
            Ok(t) => t,
            Err(ParseError::NotRecord) => {
                if !text.trim().is_empty() {
                    self.log_line(text);
                }
                return;
            }
            Err(ParseError::Malformed(_)) => {
                self.stats.drop_line(DropReason::Malformed);
                return;
            }
        };
        if table == "event" {
            self.events.event(&self.stats.name, values);
            self.stats.records.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(schema) = self.schema(table) else {
            self.stats.drop_line(DropReason::UnknownTable);
            if self.warned_tables.len() < MAX_WARNED_TABLES
                && self.warned_tables.insert(table.to_string())
            {
                tracing::warn!(probe = %self.stats.name, table,
                    "record for a table no loaded .meta declares: dropped (counted as unknown_table)");
            }
            return;
        };
        let extra = match &mut self.custom {
            Some(c) => c.for_record(&schema, values, self.now_ms),
            None => None,
        };
        if schema.trace {
            self.trace_record(&schema, values, extra.as_ref());
            return;
        }
        match self.store.upsert_with(
            &schema,
            values,
            self.now_ms,
            &mut self.scratch,
            extra.as_ref(),
        ) {
            Ok(up) => {
                if up.bad_values > 0 {
                    self.stats
                        .drop_lines(DropReason::BadValue, u64::from(up.bad_values));
                }
                self.stats.records.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .last_record_ms
                    .store(self.now_ms, Ordering::Relaxed);
            }
            Err(reason) => {
                self.stats.drop_line(reason);
                if reason == DropReason::FieldCount {
                    self.warn_field_count(table, schema.fields.len(), values.len());
                }
                if reason != DropReason::StoreFull {
                    return;
                }
            }
        }
        if let Some(sink) = &self.records {
            if schema.derives {
                forward_derived(
                    sink.as_ref(),
                    &schema,
                    &self.scratch,
                    self.now_ms,
                    &self.stats.name,
                    extra.as_ref(),
                    &mut self.sink_values,
                );
                return;
            }
            forward(
                sink.as_ref(),
                &schema,
                values,
                self.now_ms,
                &self.stats.name,
                extra.as_ref(),
                &mut self.sink_text,
                &mut self.sink_values,
            );
        }
    }

    /// A record of a trace table: checked like a store record (field count, keys), then
    /// handed to the push sinks only; the store never keeps it.
    fn trace_record(&mut self, schema: &SchemaRef, values: &[&str], extra: Option<&LabelSet>) {
        if values.len() != schema.fields.len() {
            self.stats.drop_line(DropReason::FieldCount);
            self.warn_field_count(&schema.table_name, schema.fields.len(), values.len());
            return;
        }
        let key_absent = schema
            .fields
            .iter()
            .zip(values)
            .any(|(f, v)| f.kind == FieldKind::Key && crate::wire::value_is_absent(v));
        if key_absent {
            self.stats.drop_line(DropReason::EmptyKey);
            return;
        }
        let Some(sink) = &self.records else {
            self.stats.drop_line(DropReason::NoPushChannel);
            return;
        };
        self.stats.records.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_record_ms
            .store(self.now_ms, Ordering::Relaxed);
        forward(
            sink.as_ref(),
            schema,
            values,
            self.now_ms,
            &self.stats.name,
            extra,
            &mut self.sink_text,
            &mut self.sink_values,
        );
    }

    /// Log a value-count mismatch once per (table, expected, got): a probe built against an older
    /// `.meta` sends every record in the same wrong shape, so one line says it all.
    fn warn_field_count(&mut self, table: &str, expected: usize, got: usize) {
        if self.warned_counts.len() >= MAX_WARNED_TABLES {
            return;
        }
        if self
            .warned_counts
            .insert((table.to_string(), expected, got))
        {
            let values = if got == 1 { "value" } else { "values" };
            tracing::warn!(probe = %self.stats.name, table, expected, got,
                "record for table {table} has {got} {values} but its .meta declares {expected} fields: \
                 dropped (counted as field_count); further records of this shape are only counted");
        }
    }

    fn schema(&mut self, table: &str) -> Option<SchemaRef> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let current = reg.get(table)?;
        match &self.cached {
            Some(c) if Arc::ptr_eq(c, current) => Some(Arc::clone(c)),
            _ => {
                self.cached = Some(Arc::clone(current));
                self.cached.clone()
            }
        }
    }

    fn log_line(&mut self, line: &str) {
        if self.admit_log() {
            log_probe_line(&self.stats.name, line);
        }
    }

    /// Count a log line against the probe's budget (shared with its stderr); true = log it.
    fn admit_log(&mut self) -> bool {
        self.stats.log_lines.fetch_add(1, Ordering::Relaxed);
        match self.stats.log_limit.admit() {
            crate::telemetry::Admit::Log { summary } => {
                if let Some(n) = summary {
                    crate::telemetry::log_suppressed(&self.stats.name, n);
                }
                true
            }
            crate::telemetry::Admit::Suppress => false,
        }
    }
}

/// Unescape `raw` once and hand the record to a push sink.
#[allow(clippy::too_many_arguments)]
fn forward(
    sink: &dyn RecordSink,
    schema: &SchemaRef,
    raw: &[&str],
    time_ms: u64,
    probe: &str,
    custom_labels: Option<&LabelSet>,
    text: &mut String,
    values_buf: &mut Vec<Option<&'static str>>,
) {
    text.clear();
    // Offsets first (the text buffer may reallocate while it grows), slices after.
    let mut ends: Vec<Option<&str>> = std::mem::take(values_buf)
        .into_iter()
        .map(|_| None)
        .collect();
    let mut offsets = Vec::with_capacity(raw.len());
    for r in raw {
        if crate::wire::value_is_absent(r) {
            offsets.push(None);
        } else {
            let start = text.len();
            crate::wire::unescape_into(r, text);
            offsets.push(Some((start, text.len())));
        }
    }
    ends.extend(offsets.iter().map(|s| s.map(|(a, b)| &text[a..b])));
    let mut values = ends;
    sink.record(&RecordView {
        schema,
        values: &values,
        time_ms,
        probe,
        custom_labels,
    });
    values.clear();
    *values_buf = values.into_iter().map(|_| None).collect();
}

/// Hand a record of a table with derived fields to a push sink: the store's exported values
/// (per-period changes, scaled totals), so a push consumer reads what `/metrics` shows. A record
/// the store refused has no previous total to derive from and is not forwarded.
fn forward_derived(
    sink: &dyn RecordSink,
    schema: &SchemaRef,
    scratch: &Scratch,
    time_ms: u64,
    probe: &str,
    custom_labels: Option<&LabelSet>,
    values_buf: &mut Vec<Option<&'static str>>,
) {
    let Some(derived) = scratch.derived_values() else {
        return;
    };
    // Reuse the allocation (an empty vec holds no borrow; same-layout collects are in place).
    let mut values: Vec<Option<&str>> = std::mem::take(values_buf)
        .into_iter()
        .map(|_| None)
        .collect();
    values.clear();
    values.extend(derived);
    sink.record(&RecordView {
        schema,
        values: &values,
        time_ms,
        probe,
        custom_labels,
    });
    values.clear();
    *values_buf = values.into_iter().map(|_| None).collect();
}

/// Log a probe's non-record line at the level its prefix names (`[DEBUG]`, `[INFO]`, `[WARN]`,
/// `[ERROR]`; no prefix → info).
pub fn log_probe_line(probe: &str, line: &str) {
    use record_line::log::{classify, Level};
    let (level, msg) = classify(line.trim_end());
    let msg = msg.trim_start();
    match level {
        Level::Error => tracing::error!(probe, "{msg}"),
        Level::Warn => tracing::warn!(probe, "{msg}"),
        Level::Debug => tracing::debug!(probe, "{msg}"),
        Level::Info => tracing::info!(probe, "{msg}"),
    }
}
