//! OTLP sink: metrics as OTLP/HTTP protobuf (`POST <endpoint>/v1/metrics`), events as OTLP logs
//! (`POST <endpoint>/v1/logs`), from a dedicated thread with a blocking HTTP client.
//!
//! Mapping: metric name `gala_gopher_<entity>_<field>` (as on `/metrics`); key and label fields
//! become data-point attributes; gauge and summary → Gauge, counter → monotonic cumulative Sum,
//! histogram → cumulative Histogram (explicit bounds = upstream bucket bounds, per-bucket counts,
//! sum, max). Integers are sent as `as_int`, others as `as_double`; a value that is not a number
//! is skipped. Resource: `service.name = gala-gopher`, `host.name`, `host.id` (machine id).
//! Cumulative sums and histograms start at the sink's start time.
//!
//! Delivery: a batch that fails with a transport error, 408, 429 or 5xx is retried (backoff
//! 100 ms doubling to 5 s) while the sink queue keeps filling and dropping its oldest items; any
//! other status counts the batch as failed. Metadata is not sent over OTLP.

pub mod proto;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use self::proto::{
    any_value, metric, number_data_point, AnyValue, ExportLogsServiceRequest,
    ExportMetricsServiceRequest, Gauge, Histogram, HistogramDataPoint, InstrumentationScope,
    KeyValue, LogRecord, Metric, NumberDataPoint, Resource, ResourceLogs, ResourceMetrics,
    ScopeLogs, ScopeMetrics, Sum, TEMPORALITY_CUMULATIVE,
};
use super::queue::{Item, OwnedRecord, Popped, SinkQueue};
use crate::events::EventMessage;
use crate::ingest::now_ms;
use crate::meta::FieldKind;
use crate::store::value::parse_histogram;
use crate::telemetry::{SinkStats, Stream};

/// Items taken from the sink queue per request.
const BATCH: usize = 2000;

/// Longest pause between retries of a failed request.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the OTLP resource says about this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// `host.name`.
    pub host_name: String,
    /// `host.id` (the daemon's machine id).
    pub host_id: String,
}

impl ResourceInfo {
    fn resource(&self) -> Resource {
        Resource {
            attributes: vec![
                KeyValue::string("service.name", "gala-gopher"),
                KeyValue::string("host.name", &self.host_name),
                KeyValue::string("host.id", &self.host_id),
            ],
        }
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "gala-gopher".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

fn number(v: &str) -> Option<number_data_point::Value> {
    if let Ok(i) = v.parse::<i64>() {
        return Some(number_data_point::Value::AsInt(i));
    }
    let v = v.strip_prefix('+').unwrap_or(v);
    v.parse::<f64>()
        .ok()
        .map(number_data_point::Value::AsDouble)
}

fn histogram_point(
    text: &str,
    attributes: Vec<KeyValue>,
    start_ns: u64,
    time_ns: u64,
) -> Option<HistogramDataPoint> {
    let h = parse_histogram(text)?;
    let mut bounds = Vec::with_capacity(h.buckets.len());
    let mut counts = Vec::with_capacity(h.buckets.len() + 1);
    let mut prev = 0u64;
    for (b, c) in &h.buckets {
        bounds.push(b.parse::<f64>().ok()?);
        let cum = c.parse::<f64>().ok()? as u64;
        counts.push(cum.saturating_sub(prev));
        prev = cum;
    }
    // Upstream's last bucket is the largest bound; nothing is counted above it.
    counts.push(0);
    Some(HistogramDataPoint {
        attributes,
        start_time_unix_nano: start_ns,
        time_unix_nano: time_ns,
        count: prev,
        sum: h.sum.parse().ok(),
        bucket_counts: counts,
        explicit_bounds: bounds,
        max: h.max.parse().ok(),
    })
}

/// Build one metrics request from `records`; points of the same metric share one `Metric`.
pub fn encode_metrics(
    records: &[Arc<OwnedRecord>],
    resource: &ResourceInfo,
    start_ns: u64,
) -> ExportMetricsServiceRequest {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    // (schema, field) → metric, so the name is built once per batch, not per point.
    let mut by_field: HashMap<(usize, usize), usize> = HashMap::new();
    for rec in records {
        let schema = &rec.schema;
        let attrs: Vec<KeyValue> = schema
            .fields
            .iter()
            .zip(rec.values())
            .filter_map(|(f, v)| Some(KeyValue::string(&f.name, v.filter(|_| f.kind.is_label())?)))
            .collect();
        let time_ns = rec.time_ms.saturating_mul(1_000_000);
        let schema_id = Arc::as_ptr(schema) as usize;
        for (fi, (field, value)) in schema.fields.iter().zip(rec.values()).enumerate() {
            let Some(value) = value else { continue };
            if !field.kind.is_metric() {
                continue;
            }
            let idx = *by_field.entry((schema_id, fi)).or_insert_with(|| {
                let name = format!("gala_gopher_{}_{}", schema.entity_name, field.name);
                *by_name.entry(name).or_insert_with_key(|name| {
                    let data = match field.kind {
                        FieldKind::Counter => metric::Data::Sum(Sum {
                            data_points: Vec::new(),
                            aggregation_temporality: TEMPORALITY_CUMULATIVE,
                            is_monotonic: true,
                        }),
                        FieldKind::Histogram => metric::Data::Histogram(Histogram {
                            data_points: Vec::new(),
                            aggregation_temporality: TEMPORALITY_CUMULATIVE,
                        }),
                        _ => metric::Data::Gauge(Gauge {
                            data_points: Vec::new(),
                        }),
                    };
                    metrics.push(Metric {
                        name: name.clone(),
                        description: field.description.clone(),
                        unit: String::new(),
                        data: Some(data),
                    });
                    metrics.len() - 1
                })
            });
            let point = |v| NumberDataPoint {
                attributes: attrs.clone(),
                start_time_unix_nano: 0,
                time_unix_nano: time_ns,
                value: Some(v),
            };
            // A name shared by fields of different kinds keeps the first kind; the rest skip.
            match (&mut metrics[idx].data, field.kind) {
                (Some(metric::Data::Sum(s)), FieldKind::Counter) => {
                    if let Some(v) = number(value) {
                        s.data_points.push(NumberDataPoint {
                            start_time_unix_nano: start_ns,
                            ..point(v)
                        });
                    }
                }
                (Some(metric::Data::Gauge(g)), FieldKind::Gauge | FieldKind::Summary) => {
                    if let Some(v) = number(value) {
                        g.data_points.push(point(v));
                    }
                }
                (Some(metric::Data::Histogram(h)), FieldKind::Histogram) => {
                    if let Some(p) = histogram_point(value, attrs.clone(), start_ns, time_ns) {
                        h.data_points.push(p);
                    }
                }
                _ => {}
            }
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.resource()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
            }],
        }],
    }
}

/// Build one logs request from `events`.
pub fn encode_events(
    events: &[Arc<EventMessage>],
    resource: &ResourceInfo,
) -> ExportLogsServiceRequest {
    let log_records = events
        .iter()
        .map(|e| {
            let ns = e.time_ms.saturating_mul(1_000_000);
            let ev = &e.event;
            let mut attributes = vec![
                KeyValue::string("entity_id", &e.ids.entity_id),
                KeyValue::string("event_id", &e.ids.event_id),
                KeyValue::string("event_type", "sys"),
                KeyValue::string("metric", &e.ids.metric),
                KeyValue::string("entity_name", &ev.entity_name),
            ];
            if let Some(l) = &ev.labels {
                for (k, v) in l.named() {
                    attributes.push(KeyValue::string(k, v));
                }
            }
            LogRecord {
                time_unix_nano: ns,
                observed_time_unix_nano: ns,
                severity_number: i32::from(ev.severity_number),
                severity_text: ev.severity_text.clone(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(e.body.clone())),
                }),
                attributes,
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.resource()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records,
            }],
        }],
    }
}

/// How one POST ended.
enum Outcome {
    Sent,
    Retry(String),
    Failed(String),
}

/// The OTLP sink, ready to be moved onto its thread.
pub struct OtlpSink {
    agent: ureq::Agent,
    metrics_url: String,
    logs_url: String,
    resource: ResourceInfo,
    start_ns: u64,
    queue: Arc<SinkQueue>,
}

impl OtlpSink {
    /// A sink posting to `endpoint` (base URL) with a per-request `timeout`.
    pub fn new(
        endpoint: &str,
        timeout: Duration,
        resource: ResourceInfo,
        queue: Arc<SinkQueue>,
    ) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!("gala-gopher/", env!("CARGO_PKG_VERSION")))
            .build();
        let base = endpoint.trim_end_matches('/');
        OtlpSink {
            agent: ureq::Agent::new_with_config(config),
            metrics_url: format!("{base}/v1/metrics"),
            logs_url: format!("{base}/v1/logs"),
            resource,
            start_ns: now_ms().saturating_mul(1_000_000),
            queue,
        }
    }

    /// Run on its own thread until the queue is closed and drained.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("sink-otlp".into())
            .spawn(move || self.run())
    }

    fn post(&self, url: &str, body: &[u8]) -> Outcome {
        let resp = self
            .agent
            .post(url)
            .header("Content-Type", "application/x-protobuf")
            .send(body);
        match resp {
            Ok(mut r) => {
                let status = r.status().as_u16();
                // Read the (small) reply so the connection can be reused.
                let _ = r.body_mut().with_config().limit(1 << 20).read_to_vec();
                match status {
                    200..=299 => Outcome::Sent,
                    408 | 429 | 500..=599 => Outcome::Retry(format!("{url}: HTTP {status}")),
                    _ => Outcome::Failed(format!("{url}: HTTP {status}")),
                }
            }
            Err(e) => Outcome::Retry(format!("{url}: {e}")),
        }
    }

    /// POST until sent, refused, or the queue is closed during a retry.
    fn deliver(&self, url: &str, body: &[u8], stream: Stream, n: u64, stats: &SinkStats) {
        let c = stats.stream(stream);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.post(url, body) {
                Outcome::Sent => {
                    c.sent.fetch_add(n, Ordering::Relaxed);
                    return;
                }
                Outcome::Failed(e) => {
                    c.failed.fetch_add(n, Ordering::Relaxed);
                    stats.set_last_error(now_ms(), &e);
                    return;
                }
                Outcome::Retry(e) => {
                    stats.set_last_error(now_ms(), &e);
                    if self.queue.is_closed() {
                        c.failed.fetch_add(n, Ordering::Relaxed);
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn run(self) {
        let stats = Arc::clone(self.queue.stats());
        let mut batch = Vec::with_capacity(BATCH);
        let mut records = Vec::with_capacity(BATCH);
        let mut events = Vec::new();
        let mut body = Vec::with_capacity(64 * 1024);
        loop {
            if self
                .queue
                .pop_batch(&mut batch, BATCH, Duration::from_millis(500))
                == Popped::Closed
            {
                break;
            }
            for item in batch.drain(..) {
                match item {
                    Item::Metric(r) => records.push(r),
                    Item::Event(e) => events.push(e),
                    Item::Meta(_) => {}
                }
            }
            if !events.is_empty() {
                body.clear();
                let _ = encode_events(&events, &self.resource).encode(&mut body);
                self.deliver(
                    &self.logs_url,
                    &body,
                    Stream::Event,
                    events.len() as u64,
                    &stats,
                );
                events.clear();
            }
            if !records.is_empty() {
                body.clear();
                let _ = encode_metrics(&records, &self.resource, self.start_ns).encode(&mut body);
                self.deliver(
                    &self.metrics_url,
                    &body,
                    Stream::Metric,
                    records.len() as u64,
                    &stats,
                );
                records.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::RecordView;
    use crate::meta::TableSchema;

    fn rec(values: &[Option<&str>]) -> Arc<OwnedRecord> {
        let schema = Arc::new(TableSchema::from_fields(
            "t",
            "E",
            &[
                ("k", FieldKind::Key),
                ("g", FieldKind::Gauge),
                ("c", FieldKind::Counter),
                ("h", FieldKind::Histogram),
            ],
        ));
        Arc::new(OwnedRecord::from_view(&RecordView {
            schema: &schema,
            values,
            time_ms: 1000,
            probe: "p",
        }))
    }

    #[test]
    fn kinds_map_to_otlp_types_and_share_metrics() {
        let res = ResourceInfo {
            host_name: "h".into(),
            host_id: "m".into(),
        };
        let req = encode_metrics(
            &[
                rec(&[
                    Some("a"),
                    Some("1.5"),
                    Some("7"),
                    Some("3 10 1 100 3 1000 3 250 900"),
                ]),
                rec(&[Some("b"), Some("x"), None, None]),
            ],
            &res,
            5,
        );
        let m = &req.resource_metrics[0].scope_metrics[0].metrics;
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["gala_gopher_E_g", "gala_gopher_E_c", "gala_gopher_E_h"]
        );
        let Some(metric::Data::Gauge(g)) = &m[0].data else {
            panic!()
        };
        // "x" is not a number: only one point.
        assert_eq!(g.data_points.len(), 1);
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(1.5))
        );
        assert_eq!(g.data_points[0].time_unix_nano, 1_000_000_000);
        let Some(metric::Data::Sum(s)) = &m[1].data else {
            panic!()
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsInt(7))
        );
        assert_eq!(s.data_points[0].start_time_unix_nano, 5);
        let Some(metric::Data::Histogram(h)) = &m[2].data else {
            panic!()
        };
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, [10.0, 100.0, 1000.0]);
        assert_eq!(p.bucket_counts, [1, 2, 0, 0]);
        assert_eq!((p.count, p.sum, p.max), (3, Some(250.0), Some(900.0)));
        assert_eq!(p.attributes, [KeyValue::string("k", "a")]);
    }
}
