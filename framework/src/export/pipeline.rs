//! Push-exporter wiring: which stream goes to which sink (from `metric/event/meta.out_channel`),
//! the sink threads, the metric fan-out on the ingest path and shutdown.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::queue::SinkQueue;
use super::runner::SinkHandle;
use super::SINKS;
use crate::config::GopherConfig;
use crate::events::EventRouter;
use crate::message::{
    EventSink, Item, LogEvents, OwnedRecord, Publish, RecordSink, RecordView, Stream,
};
use crate::meta::SchemaRegistry;
use crate::meta_report;
use crate::telemetry::Telemetry;

/// Errors building the exporters.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A sink could not be opened (e.g. librdkafka refused the configuration).
    #[error(transparent)]
    Open(Box<dyn std::error::Error + Send + Sync>),
    /// A sink thread could not be started.
    #[error("starting the {sink} sink thread: {source}")]
    Thread {
        /// Sink name.
        sink: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

/// The queues of every sink carrying one stream: one shared copy of each item to each.
struct Fanout {
    queues: Vec<Arc<SinkQueue>>,
}

impl Fanout {
    /// The queues of `sinks` that carry `stream`; `None` if none does.
    fn of(sinks: &[SinkHandle], stream: Stream) -> Option<Arc<Fanout>> {
        let queues: Vec<Arc<SinkQueue>> = sinks
            .iter()
            .filter(|h| h.queue.stats().streams().any(|x| x == stream))
            .map(|h| Arc::clone(&h.queue))
            .collect();
        (!queues.is_empty()).then(|| Arc::new(Fanout { queues }))
    }
}

impl Publish for Fanout {
    fn publish(&self, item: Item) {
        for q in &self.queues {
            q.push(item.clone());
        }
    }
}

/// Metric records: copied once on the ingest path, shared by every metric queue.
impl RecordSink for Fanout {
    fn record(&self, rec: &RecordView<'_>) {
        self.publish(Item::Metric(Arc::new(OwnedRecord::from_view(rec))));
    }
}

/// The running push exporters.
pub struct Exporters {
    records: Option<Arc<dyn RecordSink>>,
    events: Option<Arc<EventRouter>>,
    meta: Option<Arc<dyn Publish>>,
    report_period: Duration,
    sinks: Vec<SinkHandle>,
}

/// Build and start the push sinks the configuration asks for (every entry of [`SINKS`]). With no
/// push channel at all the result has no record sink, no event router and no threads.
pub fn build_exporters(
    cfg: &GopherConfig,
    machine_id: &str,
    telemetry: &Arc<Telemetry>,
) -> Result<Exporters, ExportError> {
    let mut sinks: Vec<SinkHandle> = Vec::new();
    for start in SINKS {
        if let Some(handle) = start(cfg, machine_id, telemetry)? {
            sinks.push(handle);
        }
    }
    let records = Fanout::of(&sinks, Stream::Metric).map(|f| f as Arc<dyn RecordSink>);
    let events = Fanout::of(&sinks, Stream::Event).map(|out| {
        Arc::new(EventRouter::new(
            machine_id,
            cfg.event.desc_language,
            cfg.event.timeout,
            out,
            Arc::clone(telemetry),
        ))
    });
    Ok(Exporters {
        records,
        events,
        meta: Fanout::of(&sinks, Stream::Meta).map(|f| f as Arc<dyn Publish>),
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
    /// With `container_labels`, process and container tables list the container and pod labels.
    pub fn start_metadata(
        &self,
        registry: Arc<RwLock<SchemaRegistry>>,
        container_labels: bool,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let out = Arc::clone(self.meta.as_ref()?);
        Some(tokio::spawn(meta_report::run(
            registry,
            out,
            self.report_period,
            container_labels,
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
