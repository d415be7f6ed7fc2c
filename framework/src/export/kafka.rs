//! Kafka sink: one librdkafka producer (vendored build) on the `sink-kafka` thread; each item is
//! rendered once (one message per item) and handed to librdkafka, which batches per
//! `kafka.queue_buffering_max_ms` / `batch_num_messages`.
//!
//! Topics: `metric.kafka_topic` (one upstream flat JSON per record), `event.kafka_topic` (event
//! JSON), `meta.kafka_topic` (one metadata JSON per table). No key, partition chosen by
//! librdkafka.
//!
//! Back-pressure: when librdkafka's own buffer is full (`QueueFull`, e.g. the broker is away) the
//! send is retryable: the sink loop keeps the message and polls (50 ms) until there is room, so
//! the sink queue in front of it fills and drops its oldest items (counted). librdkafka
//! reconnects by itself; messages it holds are delivered when the broker is back, or fail after
//! `message.timeout.ms` (300 s, counted as failed through the delivery report).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::json::{self, MetricFormat};
use super::sink::{streams_to, Backoff, Messages, Plan, SendError, Sent, Sink};
use crate::clock::now_ms;
use crate::config::{GopherConfig, Kafka, OutChannel};
use crate::message::{Item, Stream};
use crate::telemetry::SinkStats;

/// How long shutdown waits for librdkafka to deliver what it holds.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors creating the producer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// librdkafka refused the configuration (e.g. an unsupported `security_protocol`).
    #[error("kafka producer: {0}")]
    Client(#[from] KafkaError),
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
struct KafkaContext {
    stats: Arc<SinkStats>,
    last_warn_ms: AtomicU64,
}

/// librdkafka repeats connection errors at every reconnect attempt; log one per 10 s.
const WARN_EVERY_MS: u64 = 10_000;

impl ClientContext for KafkaContext {
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

impl ProducerContext for KafkaContext {
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

/// The sink's settings, from the `kafka` section and the streams' `kafka_topic` (no `Debug`: the
/// client properties hold the SASL password).
#[derive(Clone)]
pub struct KafkaSinkConfig {
    /// librdkafka properties ([`client_config`]).
    pub client: ClientConfig,
    /// `kafka.kafka_broker` (for the log).
    pub broker: String,
    /// Topic per carried stream.
    pub topics: Topics,
    /// The daemon's machine id (in every metric message).
    pub machine_id: String,
}

/// The Kafka sink: the producer and the topics.
pub struct KafkaSink {
    producer: BaseProducer<KafkaContext>,
    topics: Topics,
    machine_id: String,
}

impl Sink for KafkaSink {
    const NAME: &'static str = "kafka";
    const BATCH: usize = 4096;
    /// While librdkafka's buffer is full: poll (serving delivery reports) 50 ms, try again.
    const BACKOFF: Backoff = Backoff {
        first: Duration::from_millis(50),
        max: Duration::from_millis(50),
    };
    type Config = KafkaSinkConfig;
    type Error = KafkaSinkError;

    fn plan(cfg: &GopherConfig, machine_id: &str) -> Option<Plan<KafkaSinkConfig>> {
        let streams = streams_to(cfg, &[OutChannel::Kafka]);
        if streams.is_empty() {
            return None;
        }
        let topic = |s: Stream, t: &str| streams.contains(&s).then(|| t.to_string());
        let topics = Topics {
            metric: topic(Stream::Metric, &cfg.metric.kafka_topic),
            event: topic(Stream::Event, &cfg.event.kafka_topic),
            meta: topic(Stream::Meta, &cfg.meta.kafka_topic),
        };
        Some(Plan {
            streams,
            queue_size: cfg.kafka.queue_size,
            config: KafkaSinkConfig {
                client: client_config(&cfg.kafka),
                broker: cfg.kafka.kafka_broker.clone(),
                topics,
                machine_id: machine_id.to_string(),
            },
        })
    }

    /// Create the producer (fails on a configuration librdkafka refuses).
    fn open(config: KafkaSinkConfig, stats: Arc<SinkStats>) -> Result<Self, KafkaSinkError> {
        let streams: Vec<Stream> = stats.streams().collect();
        let ctx = KafkaContext {
            stats,
            last_warn_ms: AtomicU64::new(0),
        };
        let producer = config
            .client
            .clone()
            .set_log_level(RDKafkaLogLevel::Warning)
            .create_with_context(ctx)?;
        tracing::info!(broker = %config.broker, streams = ?streams, "kafka sink started");
        Ok(KafkaSink {
            producer,
            topics: config.topics,
            machine_id: config.machine_id,
        })
    }

    fn idle_wait(&self) -> Duration {
        if self.producer.in_flight_count() > 0 {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(250)
        }
    }

    fn encode(&mut self, stream: Stream, items: &[Item], out: &mut Messages) {
        if self.topics.get(stream).is_none() {
            return;
        }
        for item in items {
            out.push(1, |buf| {
                json::item(item, &self.machine_id, MetricFormat::Flat, buf)
            });
        }
    }

    fn send(&mut self, stream: Stream, payload: &[u8]) -> Result<Sent, SendError> {
        let Some(topic) = self.topics.get(stream) else {
            return Err(SendError::Permanent(None));
        };
        let record =
            BaseRecord::<(), [u8], usize>::with_opaque_to(topic, stream.index()).payload(payload);
        match self.producer.send(record) {
            // Counted by the delivery report.
            Ok(()) => Ok(Sent::Pending),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(SendError::Retryable(None))
            }
            Err((e, _)) => Err(SendError::Permanent(Some(format!(
                "produce to {topic}: {e}"
            )))),
        }
    }

    fn pause(&mut self, pause: Duration) {
        // Serve delivery reports; they free room in librdkafka's buffer.
        self.producer.poll(pause);
    }

    fn flush(&mut self) {
        self.producer.poll(Duration::ZERO);
    }

    fn close(&mut self) {
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
}
