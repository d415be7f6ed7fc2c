//! Kafka sink: one librdkafka producer (vendored build) on a dedicated thread that drains the
//! sink queue, renders each item once into a reused buffer and hands it to librdkafka, which
//! batches per `kafka.queue_buffering_max_ms` / `batch_num_messages`.
//!
//! Topics: `metric.kafka_topic` (one upstream flat JSON per record), `event.kafka_topic` (event
//! JSON), `meta.kafka_topic` (one metadata JSON per table). No key, partition chosen by
//! librdkafka.
//!
//! Back-pressure: when librdkafka's own buffer is full (`QueueFull`, e.g. the broker is away) the
//! thread keeps the message and polls until there is room, so the sink queue in front of it
//! fills and drops its oldest items (counted). librdkafka reconnects by itself; messages it holds
//! are delivered when the broker is back, or fail after `message.timeout.ms` (300 s, counted as
//! failed through the delivery report).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::json;
use super::queue::{Item, Popped, SinkQueue};
use crate::config::Kafka;
use crate::ingest::now_ms;
use crate::telemetry::{SinkStats, Stream};

/// Items taken from the sink queue per round.
const BATCH: usize = 4096;

/// How long shutdown waits for librdkafka to deliver what it holds.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors creating the producer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// librdkafka refused the configuration (e.g. an unsupported `security_protocol`).
    #[error("kafka producer: {0}")]
    Client(#[from] KafkaError),
    /// The sink thread could not be started.
    #[error("kafka sink thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The librdkafka properties for the `kafka` section (the six upstream settings plus SASL/TLS).
pub fn client_config(k: &Kafka) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.kafka_broker)
        .set("client.id", "gala-gopher")
        .set("batch.num.messages", k.batch_num_messages.to_string())
        .set("compression.codec", k.compression_codec.as_str())
        .set(
            "queue.buffering.max.messages",
            k.queue_buffering_max_messages.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            k.queue_buffering_max_kbytes.to_string(),
        )
        .set(
            "queue.buffering.max.ms",
            k.queue_buffering_max_ms.to_string(),
        );
    if let Some(p) = k.security_protocol {
        c.set("security.protocol", p.as_str());
    }
    if let Some(m) = k.sasl_mechanism {
        c.set("sasl.mechanism", m.as_str());
    }
    if let Some(u) = &k.sasl_username {
        c.set("sasl.username", u);
    }
    if let Some(p) = &k.sasl_password {
        c.set("sasl.password", p);
    }
    if let Some(ca) = &k.ssl_ca_location {
        c.set("ssl.ca.location", ca.to_string_lossy());
    }
    c
}

/// Counts deliveries and keeps the last error; forwards librdkafka's log to `tracing`.
struct SinkContext {
    stats: Arc<SinkStats>,
    last_warn_ms: AtomicU64,
}

/// librdkafka repeats connection errors at every reconnect attempt; log one per 10 s.
const WARN_EVERY_MS: u64 = 10_000;

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(sink = "kafka", fac, "{msg}"),
            RDKafkaLogLevel::Warning => tracing::warn!(sink = "kafka", fac, "{msg}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(sink = "kafka", fac, "{msg}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(sink = "kafka", fac, "{msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let now = now_ms();
        self.stats
            .set_last_error(now, &format!("{error}: {reason}"));
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS {
            self.last_warn_ms.store(now, Ordering::Relaxed);
            tracing::warn!(sink = "kafka", "{error}: {reason}");
        }
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, stream: usize) {
        let Some(s) = Stream::ALL.get(stream) else {
            return;
        };
        let c = self.stats.stream(*s);
        match result {
            Ok(_) => {
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .set_last_error(now_ms(), &format!("delivery failed: {e}"));
            }
        }
    }
}

/// Topic per stream (`None` = the stream does not go to Kafka).
#[derive(Debug, Clone, Default)]
pub struct Topics {
    /// `metric.kafka_topic`.
    pub metric: Option<String>,
    /// `event.kafka_topic`.
    pub event: Option<String>,
    /// `meta.kafka_topic`.
    pub meta: Option<String>,
}

impl Topics {
    fn get(&self, s: Stream) -> Option<&str> {
        match s {
            Stream::Metric => self.metric.as_deref(),
            Stream::Event => self.event.as_deref(),
            Stream::Meta => self.meta.as_deref(),
        }
    }
}

/// The producer, ready to be moved onto its thread.
pub struct KafkaSink {
    producer: BaseProducer<SinkContext>,
    topics: Topics,
    machine_id: String,
    queue: Arc<SinkQueue>,
}

impl KafkaSink {
    /// Create the producer (fails on a configuration librdkafka refuses).
    pub fn new(
        cfg: &Kafka,
        topics: Topics,
        machine_id: &str,
        queue: Arc<SinkQueue>,
    ) -> Result<Self, KafkaSinkError> {
        let ctx = SinkContext {
            stats: Arc::clone(queue.stats()),
            last_warn_ms: AtomicU64::new(0),
        };
        let producer = client_config(cfg)
            .set_log_level(RDKafkaLogLevel::Warning)
            .create_with_context(ctx)?;
        Ok(KafkaSink {
            producer,
            topics,
            machine_id: machine_id.to_string(),
            queue,
        })
    }

    /// Run the sink on its own thread until the queue is closed and drained.
    pub fn spawn(self) -> Result<std::thread::JoinHandle<()>, KafkaSinkError> {
        Ok(std::thread::Builder::new()
            .name("sink-kafka".into())
            .spawn(move || self.run())?)
    }

    fn run(self) {
        let stats = Arc::clone(self.queue.stats());
        let mut batch = Vec::with_capacity(BATCH);
        let mut buf = Vec::with_capacity(4096);
        loop {
            let wait = if self.producer.in_flight_count() > 0 {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(250)
            };
            if self.queue.pop_batch(&mut batch, BATCH, wait) == Popped::Closed {
                break;
            }
            for item in batch.drain(..) {
                let stream = item.stream();
                let Some(topic) = self.topics.get(stream) else {
                    continue;
                };
                buf.clear();
                let payload: &[u8] = match &item {
                    Item::Metric(r) => {
                        json::metric_flat(r, &self.machine_id, &mut buf);
                        &buf
                    }
                    Item::Event(e) => e.json.as_bytes(),
                    Item::Meta(m) => m.json.as_bytes(),
                };
                self.produce(topic, stream, payload, &stats);
            }
            self.producer.poll(Duration::ZERO);
        }
        let started = Instant::now();
        if let Err(e) = self.producer.flush(FLUSH_TIMEOUT) {
            tracing::warn!(
                sink = "kafka",
                in_flight = self.producer.in_flight_count(),
                "not all messages delivered at shutdown: {e}"
            );
        }
        tracing::debug!(sink = "kafka", elapsed = ?started.elapsed(), "flushed");
        // Dropping the producer purges what is left; the delivery reports count it as failed.
    }

    fn produce(&self, topic: &str, stream: Stream, payload: &[u8], stats: &SinkStats) {
        let mut record =
            BaseRecord::<(), [u8], usize>::with_opaque_to(topic, stream.index()).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    if self.queue.is_closed() {
                        // Shutting down with librdkafka's buffer full: give up instead of waiting.
                        stats.stream(stream).failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    record = r;
                    // Serve delivery reports; they free room in librdkafka's buffer.
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    stats.stream(stream).failed.fetch_add(1, Ordering::Relaxed);
                    stats.set_last_error(now_ms(), &format!("produce to {topic}: {e}"));
                    return;
                }
            }
        }
    }
}
