//! OTLP sink: metrics as OTLP/HTTP protobuf (`POST <endpoint>/v1/metrics`), events as OTLP logs
//! (`POST <endpoint>/v1/logs`), one request per batch and stream, from the `sink-otlp` thread
//! with a blocking HTTP client.
//!
//! Mapping: metric name `gala_gopher_<entity>_<field>` (as on `/metrics`); key and label fields,
//! then the probe's custom labels, become data-point attributes; gauge and summary → Gauge, counter → monotonic cumulative Sum,
//! histogram → cumulative Histogram (explicit bounds = upstream bucket bounds, per-bucket counts,
//! sum, max). Integers are sent as `as_int`, others as `as_double`; a value that is not a number
//! is skipped. Resource: `service.name = gala-gopher`, `host.name`, `host.id` (machine id).
//! Cumulative sums and histograms start at the sink's start time.
//!
//! Records of trace tables (`.meta` `kind = "trace"`: one record per request or span, not a
//! series) are sent as OTLP log records (`/v1/logs`), not as metrics: body = the table name,
//! attributes = every field with a value and the custom labels, time = the record's.
//!
//! Delivery: a batch that fails with a transport error, 408, 429 or 5xx is retryable (the sink
//! loop's backoff, 100 ms doubling to 5 s) while the sink queue keeps filling and dropping its
//! oldest items; any other status counts the batch as failed. Metadata is not sent over OTLP.

pub mod proto;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use self::proto::{
    any_value, metric, number_data_point, AnyValue, ExportLogsServiceRequest,
    ExportMetricsServiceRequest, Gauge, Histogram, HistogramDataPoint, InstrumentationScope,
    KeyValue, LogRecord, Metric, NumberDataPoint, Resource, ResourceLogs, ResourceMetrics,
    ScopeLogs, ScopeMetrics, Sum, TEMPORALITY_CUMULATIVE,
};
use super::sink::{streams_to, Messages, Plan, SendError, Sent, Sink};
use crate::clock::now_ms;
use crate::config::{GopherConfig, OutChannel};
use crate::message::{EventMessage, Item, OwnedRecord, Stream};
use crate::meta::FieldKind;
use crate::store::value::parse_histogram;
use crate::telemetry::SinkStats;

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
pub fn encode_metrics<'a>(
    records: impl IntoIterator<Item = &'a OwnedRecord>,
    resource: &ResourceInfo,
    start_ns: u64,
) -> ExportMetricsServiceRequest {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    // (schema, field) → metric, so the name is built once per batch, not per point.
    let mut by_field: HashMap<(usize, usize), usize> = HashMap::new();
    for rec in records {
        let schema = &rec.schema;
        if schema.trace {
            continue;
        }
        let attrs: Vec<KeyValue> = schema
            .fields
            .iter()
            .zip(rec.values())
            .filter_map(|(f, v)| Some(KeyValue::string(&f.name, v.filter(|_| f.kind.is_label())?)))
            .chain(
                rec.custom_labels()
                    .iter()
                    .map(|(k, v)| KeyValue::string(k, v)),
            )
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

/// Build one logs request from the records of trace tables among `records` (`None` if none).
pub fn encode_trace_records<'a>(
    records: impl IntoIterator<Item = &'a OwnedRecord>,
    resource: &ResourceInfo,
) -> Option<ExportLogsServiceRequest> {
    let log_records: Vec<LogRecord> = records
        .into_iter()
        .filter(|r| r.schema.trace)
        .map(|rec| {
            let ns = rec.time_ms.saturating_mul(1_000_000);
            let attributes = rec
                .schema
                .fields
                .iter()
                .zip(rec.values())
                .filter_map(|(f, v)| Some(KeyValue::string(&f.name, v?)))
                .chain(
                    rec.custom_labels()
                        .iter()
                        .map(|(k, v)| KeyValue::string(k, v)),
                )
                .collect();
            LogRecord {
                time_unix_nano: ns,
                observed_time_unix_nano: ns,
                severity_number: SEVERITY_INFO,
                severity_text: "INFO".into(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(rec.schema.table_name.clone())),
                }),
                attributes,
            }
        })
        .collect();
    if log_records.is_empty() {
        return None;
    }
    Some(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.resource()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records,
            }],
        }],
    })
}

/// OTLP's `SEVERITY_NUMBER_INFO`.
const SEVERITY_INFO: i32 = 9;

/// First byte of a metric-stream message: which OTLP signal the rest is (the stream carries
/// both metric records and trace-table records).
const BODY_METRICS: u8 = 0;
const BODY_LOGS: u8 = 1;

/// Build one logs request from `events`.
pub fn encode_events<'a>(
    events: impl IntoIterator<Item = &'a EventMessage>,
    resource: &ResourceInfo,
) -> ExportLogsServiceRequest {
    let log_records = events
        .into_iter()
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

/// The sink's settings, from the `otlp` section.
#[derive(Debug, Clone)]
pub struct OtlpSinkConfig {
    /// Collector base URL (`otlp.endpoint`).
    pub endpoint: String,
    /// Per-request timeout (`otlp.timeout_ms`).
    pub timeout: Duration,
    /// Resource attributes.
    pub resource: ResourceInfo,
}

/// The kernel's host name (`host.name`), empty if unreadable.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The OTLP sink: an HTTP agent and the two endpoints.
pub struct OtlpSink {
    agent: ureq::Agent,
    metrics_url: String,
    logs_url: String,
    resource: ResourceInfo,
    start_ns: u64,
}

impl Sink for OtlpSink {
    const NAME: &'static str = "otlp";
    const BATCH: usize = 2000;
    type Config = OtlpSinkConfig;
    type Error = std::convert::Infallible;

    fn plan(cfg: &GopherConfig, machine_id: &str) -> Option<Plan<OtlpSinkConfig>> {
        if cfg.meta.out_channel.contains(OutChannel::Otlp) {
            tracing::warn!("meta.out_channel \"otlp\": OTLP has no metadata signal; ignored");
        }
        let streams: Vec<Stream> = streams_to(cfg, &[OutChannel::Otlp])
            .into_iter()
            .filter(|s| *s != Stream::Meta)
            .collect();
        if streams.is_empty() {
            return None;
        }
        Some(Plan {
            streams,
            queue_size: cfg.otlp.queue_size,
            config: OtlpSinkConfig {
                endpoint: cfg.otlp.endpoint.clone(),
                timeout: Duration::from_millis(cfg.otlp.timeout_ms),
                resource: ResourceInfo {
                    host_name: host_name(),
                    host_id: machine_id.to_string(),
                },
            },
        })
    }

    /// A sink posting to `endpoint` (base URL) with a per-request `timeout`.
    fn open(config: OtlpSinkConfig, stats: Arc<SinkStats>) -> Result<Self, Self::Error> {
        let agent_config = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("gala-gopher/", env!("CARGO_PKG_VERSION")))
            .build();
        let base = config.endpoint.trim_end_matches('/');
        let streams: Vec<Stream> = stats.streams().collect();
        tracing::info!(endpoint = %config.endpoint, streams = ?streams, "otlp sink started");
        Ok(OtlpSink {
            agent: ureq::Agent::new_with_config(agent_config),
            metrics_url: format!("{base}/v1/metrics"),
            logs_url: format!("{base}/v1/logs"),
            resource: config.resource,
            start_ns: now_ms().saturating_mul(1_000_000),
        })
    }

    fn encode(&mut self, stream: Stream, items: &[Item], out: &mut Messages) {
        let n = items.len() as u64;
        match stream {
            Stream::Metric => {
                let records = || {
                    items.iter().filter_map(|i| match i {
                        Item::Metric(r) => Some(r.as_ref()),
                        _ => None,
                    })
                };
                let traces = records().filter(|r| r.schema.trace).count() as u64;
                if traces < n {
                    let req = encode_metrics(records(), &self.resource, self.start_ns);
                    // Encoding into a Vec cannot fail.
                    out.push(n - traces, |buf| {
                        buf.push(BODY_METRICS);
                        let _ = req.encode(buf);
                    });
                }
                if let Some(req) = encode_trace_records(records(), &self.resource) {
                    out.push(traces, |buf| {
                        buf.push(BODY_LOGS);
                        let _ = req.encode(buf);
                    });
                }
            }
            Stream::Event => {
                let events = items.iter().filter_map(|i| match i {
                    Item::Event(e) => Some(e.as_ref()),
                    _ => None,
                });
                let req = encode_events(events, &self.resource);
                out.push(n, |buf| {
                    let _ = req.encode(buf);
                });
            }
            Stream::Meta => {}
        }
    }

    fn send(&mut self, stream: Stream, body: &[u8]) -> Result<Sent, SendError> {
        let (url, body) = match (stream, body.split_first()) {
            (Stream::Metric, Some((&BODY_METRICS, rest))) => (&self.metrics_url, rest),
            (Stream::Metric, Some((&BODY_LOGS, rest))) => (&self.logs_url, rest),
            (Stream::Event, _) => (&self.logs_url, body),
            _ => return Err(SendError::Permanent(None)),
        };
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
                    200..=299 => Ok(Sent::Delivered),
                    408 | 429 | 500..=599 => {
                        Err(SendError::Retryable(Some(format!("{url}: HTTP {status}"))))
                    }
                    _ => Err(SendError::Permanent(Some(format!("{url}: HTTP {status}")))),
                }
            }
            Err(e) => Err(SendError::Retryable(Some(format!("{url}: {e}")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::RecordView;
    use crate::meta::TableSchema;

    fn rec(values: &[Option<&str>]) -> Arc<OwnedRecord> {
        labeled(values, None)
    }

    fn labeled(
        values: &[Option<&str>],
        custom_labels: Option<&crate::message::RecordLabels>,
    ) -> Arc<OwnedRecord> {
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
            custom_labels,
        }))
    }

    #[test]
    fn kinds_map_to_otlp_types_and_share_metrics() {
        let res = ResourceInfo {
            host_name: "h".into(),
            host_id: "m".into(),
        };
        let recs = [
            rec(&[
                Some("a"),
                Some("1.5"),
                Some("7"),
                Some("3 10 1 100 3 1000 3 250 900"),
            ]),
            rec(&[Some("b"), Some("x"), None, None]),
        ];
        let req = encode_metrics(recs.iter().map(|r| r.as_ref()), &res, 5);
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

    #[test]
    fn custom_labels_are_attributes() {
        let res = ResourceInfo {
            host_name: "h".into(),
            host_id: "m".into(),
        };
        let labels: crate::message::RecordLabels =
            Arc::from(vec![("env".to_string(), "prod".to_string())]);
        let r = labeled(&[Some("a"), Some("1"), None, None], Some(&labels));
        let req = encode_metrics([r.as_ref()], &res, 5);
        let m = &req.resource_metrics[0].scope_metrics[0].metrics;
        let Some(metric::Data::Gauge(g)) = &m[0].data else {
            panic!()
        };
        assert_eq!(
            g.data_points[0].attributes,
            [KeyValue::string("k", "a"), KeyValue::string("env", "prod")]
        );
    }

    #[test]
    fn trace_table_records_are_log_records_not_metrics() {
        let res = ResourceInfo {
            host_name: "h".into(),
            host_id: "m".into(),
        };
        let mut schema = TableSchema::from_fields(
            "req_trace",
            "req",
            &[("id", FieldKind::Key), ("took_ns", FieldKind::Gauge)],
        );
        schema.trace = true;
        let schema = Arc::new(schema);
        let trace = Arc::new(OwnedRecord::from_view(&RecordView {
            schema: &schema,
            values: &[Some("r1"), Some("1500")],
            time_ms: 2000,
            probe: "p",
            custom_labels: None,
        }));
        let metric = rec(&[Some("a"), Some("1"), None, None]);
        let req = encode_metrics([trace.as_ref(), metric.as_ref()], &res, 5);
        let m = &req.resource_metrics[0].scope_metrics[0].metrics;
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["gala_gopher_E_g"]);
        assert!(encode_trace_records([metric.as_ref()], &res).is_none());
        let logs = encode_trace_records([trace.as_ref(), metric.as_ref()], &res).unwrap();
        let l = &logs.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].time_unix_nano, 2_000_000_000);
        assert_eq!(
            l[0].attributes,
            [
                KeyValue::string("id", "r1"),
                KeyValue::string("took_ns", "1500")
            ]
        );
        // The sink sends the two kinds to their own signal's URL, items counted once each.
        let mut sink = OtlpSink::open(
            OtlpSinkConfig {
                endpoint: "http://127.0.0.1:9".into(),
                timeout: Duration::from_millis(10),
                resource: res,
            },
            Arc::new(SinkStats::new("otlp", 10, &[Stream::Metric])),
        )
        .unwrap();
        let mut out = Messages::default();
        let items = [Item::Metric(trace), Item::Metric(metric)];
        sink.encode(Stream::Metric, &items, &mut out);
        let firsts: Vec<(u8, u64)> = out.iter().map(|(b, n)| (b[0], n)).collect();
        assert_eq!(firsts, [(BODY_METRICS, 1), (BODY_LOGS, 1)]);
    }
}
