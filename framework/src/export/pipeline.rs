//! Push-exporter wiring: which stream goes to which sink (from `metric/event/meta.out_channel`),
//! the sink threads, the metric fan-out on the ingest path and shutdown.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::kafka::{KafkaSink, KafkaSinkError, Topics};
use super::logs::{self, FileSpec, LogSinkSpec, MetricFormat, Naming};
use super::otlp::{OtlpSink, ResourceInfo};
use super::queue::{Item, OwnedRecord, SinkQueue};
use super::{RecordSink, RecordView};
use crate::config::{GopherConfig, OutChannel};
use crate::events::EventRouter;
use crate::ingest::{EventSink, LogEvents};
use crate::meta::SchemaRegistry;
use crate::meta_report;
use crate::telemetry::{SinkStats, Stream, Telemetry};

/// Bytes in the `*_total_size` megabytes.
const MB: u64 = 1024 * 1024;

/// Errors building the exporters.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The Kafka producer could not be created.
    #[error(transparent)]
    Kafka(#[from] KafkaSinkError),
    /// A sink thread could not be started.
    #[error("starting the {sink} sink thread: {source}")]
    Thread {
        /// Sink name.
        sink: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

/// Hands each accepted record to every metric sink queue (one copy, shared).
struct MetricFanout {
    queues: Vec<Arc<SinkQueue>>,
}

impl RecordSink for MetricFanout {
    fn record(&self, rec: &RecordView<'_>) {
        let item = Item::Metric(Arc::new(OwnedRecord::from_view(rec)));
        for q in &self.queues {
            q.push(item.clone());
        }
    }
}

struct SinkHandle {
    name: &'static str,
    queue: Arc<SinkQueue>,
    thread: std::thread::JoinHandle<()>,
}

/// The running push exporters.
pub struct Exporters {
    records: Option<Arc<dyn RecordSink>>,
    events: Option<Arc<EventRouter>>,
    meta_queues: Vec<Arc<SinkQueue>>,
    report_period: Duration,
    sinks: Vec<SinkHandle>,
}

fn streams_for(cfg: &GopherConfig, sink: &[OutChannel]) -> Vec<Stream> {
    let mut out = Vec::new();
    for (stream, channels) in [
        (Stream::Metric, &cfg.metric.out_channel),
        (Stream::Event, &cfg.event.out_channel),
        (Stream::Meta, &cfg.meta.out_channel),
    ] {
        if sink.iter().any(|c| channels.contains(*c)) {
            out.push(stream);
        }
    }
    out
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn file_spec(dir: &Path, naming: Naming, total_mb: u64) -> FileSpec {
    FileSpec {
        dir: dir.to_path_buf(),
        naming,
        total_bytes: total_mb.saturating_mul(MB),
    }
}

/// Build and start the push sinks the configuration asks for. With no push channel at all the
/// result has no record sink, no event router and no threads.
pub fn build_exporters(
    cfg: &GopherConfig,
    machine_id: &str,
    telemetry: &Arc<Telemetry>,
) -> Result<Exporters, ExportError> {
    let mut sinks: Vec<SinkHandle> = Vec::new();
    let new_queue = |name: &'static str, cap: usize, streams: &[Stream]| {
        let stats = Arc::new(SinkStats::new(name, cap, streams));
        telemetry.sinks.register(Arc::clone(&stats));
        Arc::new(SinkQueue::new(cap, stats))
    };
    let thread_err = |sink| move |source| ExportError::Thread { sink, source };

    let kafka_streams = streams_for(cfg, &[OutChannel::Kafka]);
    if !kafka_streams.is_empty() {
        let queue = new_queue("kafka", cfg.kafka.queue_size, &kafka_streams);
        let topic = |s: Stream, t: &str| kafka_streams.contains(&s).then(|| t.to_string());
        let topics = Topics {
            metric: topic(Stream::Metric, &cfg.metric.kafka_topic),
            event: topic(Stream::Event, &cfg.event.kafka_topic),
            meta: topic(Stream::Meta, &cfg.meta.kafka_topic),
        };
        let thread = KafkaSink::new(&cfg.kafka, topics, machine_id, Arc::clone(&queue))?.spawn()?;
        tracing::info!(broker = %cfg.kafka.kafka_broker, streams = ?kafka_streams, "kafka sink started");
        sinks.push(SinkHandle {
            name: "kafka",
            queue,
            thread,
        });
    }

    let log_streams = streams_for(cfg, &[OutChannel::Logs, OutChannel::Json]);
    if !log_streams.is_empty() {
        let l = &cfg.logs;
        let m = &cfg.metric.out_channel;
        if m.contains(OutChannel::Logs) && m.contains(OutChannel::Json) {
            tracing::warn!("metric.out_channel has both \"logs\" and \"json\": metric files use the json shape");
        }
        let format = if m.contains(OutChannel::Json) {
            MetricFormat::Head
        } else {
            MetricFormat::Flat
        };
        let has = |s| log_streams.contains(&s);
        let spec = LogSinkSpec {
            metric: has(Stream::Metric).then(|| {
                (
                    file_spec(
                        &l.metric_dir,
                        Naming::Numbered("gopher_metrics_"),
                        l.metric_total_size,
                    ),
                    format,
                )
            }),
            event: has(Stream::Event).then(|| {
                file_spec(
                    &l.event_dir,
                    Naming::Numbered("gopher_event_"),
                    l.event_total_size,
                )
            }),
            meta: has(Stream::Meta).then(|| {
                file_spec(
                    &l.meta_dir,
                    Naming::Backup("gopher_meta.log"),
                    l.meta_total_size,
                )
            }),
        };
        let queue = new_queue("logs", l.queue_size, &log_streams);
        let thread =
            logs::spawn(spec, machine_id, Arc::clone(&queue)).map_err(thread_err("logs"))?;
        sinks.push(SinkHandle {
            name: "logs",
            queue,
            thread,
        });
    }

    if cfg.meta.out_channel.contains(OutChannel::Otlp) {
        tracing::warn!("meta.out_channel \"otlp\": OTLP has no metadata signal; ignored");
    }
    let otlp_streams: Vec<Stream> = streams_for(cfg, &[OutChannel::Otlp])
        .into_iter()
        .filter(|s| *s != Stream::Meta)
        .collect();
    if !otlp_streams.is_empty() {
        let queue = new_queue("otlp", cfg.otlp.queue_size, &otlp_streams);
        let sink = OtlpSink::new(
            &cfg.otlp.endpoint,
            Duration::from_millis(cfg.otlp.timeout_ms),
            ResourceInfo {
                host_name: host_name(),
                host_id: machine_id.to_string(),
            },
            Arc::clone(&queue),
        );
        let thread = sink.spawn().map_err(thread_err("otlp"))?;
        tracing::info!(endpoint = %cfg.otlp.endpoint, streams = ?otlp_streams, "otlp sink started");
        sinks.push(SinkHandle {
            name: "otlp",
            queue,
            thread,
        });
    }

    let carrying = |s: Stream| -> Vec<Arc<SinkQueue>> {
        sinks
            .iter()
            .filter(|h| h.queue.stats().streams().any(|x| x == s))
            .map(|h| Arc::clone(&h.queue))
            .collect()
    };
    let metric_queues = carrying(Stream::Metric);
    let event_queues = carrying(Stream::Event);
    let records: Option<Arc<dyn RecordSink>> = (!metric_queues.is_empty()).then(|| {
        Arc::new(MetricFanout {
            queues: metric_queues,
        }) as Arc<dyn RecordSink>
    });
    let events = (!event_queues.is_empty()).then(|| {
        Arc::new(EventRouter::new(
            machine_id,
            cfg.event.desc_language,
            cfg.event.timeout,
            event_queues,
            Arc::clone(telemetry),
        ))
    });
    Ok(Exporters {
        records,
        events,
        meta_queues: carrying(Stream::Meta),
        report_period: Duration::from_secs(cfg.meta.report_period),
        sinks,
    })
}

impl Exporters {
    /// The record sink for [`crate::ingest::Ingest::with_record_sink`]; `None` when metrics go
    /// to no push sink (then ingest must not get one, keeping its hot path free).
    pub fn record_sink(&self) -> Option<Arc<dyn RecordSink>> {
        self.records.clone()
    }

    /// The event sink for ingest: the router when events go somewhere, else log-only.
    pub fn event_sink(&self) -> Arc<dyn EventSink> {
        match &self.events {
            Some(r) => Arc::clone(r) as Arc<dyn EventSink>,
            None => Arc::new(LogEvents),
        }
    }

    /// Start publishing table metadata (at start, every `meta.report_period`, and when a table
    /// appears) if metadata goes anywhere. Needs a tokio runtime.
    pub fn start_metadata(
        &self,
        registry: Arc<RwLock<SchemaRegistry>>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.meta_queues.is_empty() {
            return None;
        }
        Some(tokio::spawn(meta_report::run(
            registry,
            self.meta_queues.clone(),
            self.report_period,
        )))
    }

    /// Names of the running sinks.
    pub fn sink_names(&self) -> Vec<&'static str> {
        self.sinks.iter().map(|s| s.name).collect()
    }

    /// Close every queue, let each sink deliver what it holds, and wait up to `timeout` in all
    /// (blocking; a sink still busy then is left behind and logged).
    pub fn shutdown(self, timeout: Duration) {
        for s in &self.sinks {
            s.queue.close();
        }
        let deadline = Instant::now() + timeout;
        for s in self.sinks {
            while !s.thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if s.thread.is_finished() {
                let _ = s.thread.join();
            } else {
                tracing::warn!(
                    sink = s.name,
                    left = s.queue.len(),
                    "sink did not finish in time"
                );
            }
        }
    }
}
