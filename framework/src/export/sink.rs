//! The shape every push exporter shares. A sink only encodes, sends and classifies failures;
//! the generic loop in [`super::runner`] owns everything else — its own thread, the bounded
//! per-stream queue with drop-oldest overflow, batching, retries with backoff, shutdown, and the
//! `gala_gopher_self_sink_*` counters. Adding an exporter is one file implementing [`Sink`] and one
//! line in [`super::SINKS`] (see `docs/exporters.md`, "Adding an exporter").
//!
//! Per round the loop takes up to [`Sink::BATCH`] items (events and metadata first) and, for
//! each run of items of one stream, calls [`Sink::encode`] once and [`Sink::send`] for every
//! message it produced:
//!
//! * `Ok(Sent::Delivered)` — the receiver acknowledged: the message's items count as sent.
//! * `Ok(Sent::Pending)` — handed to the sink's own buffer (librdkafka, a file buffer); the sink
//!   counts the outcome itself when it knows it (delivery report, file flush).
//! * `Err(SendError::Retryable(_))` — the same message is sent again after a pause
//!   ([`Sink::BACKOFF`], doubling), while the queue in front keeps filling and dropping its oldest
//!   items; once the queue is closed (shutdown) the message counts as failed instead.
//! * `Err(SendError::Permanent(_))` — the message's items count as failed.
//!
//! An error text, when given, becomes the sink's last error
//! (`gala_gopher_self_sink_last_error_timestamp_seconds`).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{GopherConfig, OutChannel};
use crate::message::{Item, Stream};
use crate::telemetry::SinkStats;

/// A push exporter (see the module docs). Runs on its own thread: it may block, never anything
/// but itself.
pub trait Sink: Send + Sized + 'static {
    /// Name: the `sink` label of its self-metrics; its thread is `sink-<NAME>`.
    const NAME: &'static str;
    /// Queue items taken per round (bounds what the sink holds besides its queue).
    const BATCH: usize;
    /// Pause before the first retry of a message and the longest pause.
    const BACKOFF: Backoff = Backoff::DEFAULT;

    /// The sink's own settings, read from its configuration section.
    type Config;
    /// Why [`Sink::open`] failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What the configuration asks of this sink; `None` when no stream goes to it (then nothing
    /// is started: no queue, no thread, no self-metrics).
    fn plan(cfg: &GopherConfig, machine_id: &str) -> Option<Plan<Self::Config>>;

    /// Create the sink (on the daemon's thread, before its own starts). `stats` are its
    /// counters, for outcomes it learns about later (see [`Sent::Pending`]) and setup errors.
    fn open(config: Self::Config, stats: Arc<SinkStats>) -> Result<Self, Self::Error>;

    /// How long a round waits for the first item.
    fn idle_wait(&self) -> Duration {
        Duration::from_millis(500)
    }

    /// Encode `items`, all of `stream`, into `out`: one message per item or one for them all.
    /// Items it cannot carry are left out (and not counted).
    fn encode(&mut self, stream: Stream, items: &[Item], out: &mut Messages);

    /// Send one encoded message of `stream`.
    fn send(&mut self, stream: Stream, message: &[u8]) -> Result<Sent, SendError>;

    /// Wait `pause` before a retry (default: sleep; Kafka serves delivery reports meanwhile).
    fn pause(&mut self, pause: Duration) {
        std::thread::sleep(pause);
    }

    /// End of every round, after a batch or an idle wait (write buffers out, poll callbacks).
    fn flush(&mut self) {}

    /// The queue is closed and drained: deliver what the sink still holds (default: one more
    /// [`Sink::flush`]). The sink is dropped afterwards.
    fn close(&mut self) {
        self.flush();
    }
}

/// What the configuration asks of one sink.
#[derive(Debug, Clone)]
pub struct Plan<C> {
    /// Streams the sink carries (not empty).
    pub streams: Vec<Stream>,
    /// Queue capacity per stream (`<section>.queue_size`).
    pub queue_size: usize,
    /// The sink's own settings.
    pub config: C,
}

/// What [`Sink::send`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The receiver acknowledged it: its items count as sent now.
    Delivered,
    /// Handed to the sink's own buffer; the sink counts sent or failed when it knows.
    Pending,
}

/// Why [`Sink::send`] did not deliver a message. The text, if any, becomes the sink's last
/// error; `None` when there is nothing new to report (local back-pressure, or the sink already
/// recorded the cause).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth another try after a pause (connection refused, HTTP 408/429/5xx, a full local buffer).
    Retryable(Option<String>),
    /// The message is lost: its items count as failed.
    Permanent(Option<String>),
}

/// Retry pauses: `first`, doubled up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Pause before the first retry.
    pub first: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl Backoff {
    /// 100 ms doubling to 5 s.
    pub const DEFAULT: Backoff = Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };
}

/// Encoded messages of one run of items, in one reused buffer (no allocation per message).
#[derive(Debug, Default)]
pub struct Messages {
    bytes: Vec<u8>,
    /// End offset in `bytes` and number of queue items, per message.
    ends: Vec<(usize, u64)>,
}

impl Messages {
    /// Append one message carrying `items` queue items, written by `write`.
    pub fn push(&mut self, items: u64, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.bytes);
        self.ends.push((self.bytes.len(), items));
    }

    /// The messages with the number of items each carries.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&(end, items)| {
            let msg = &self.bytes[start..end];
            start = end;
            (msg, items)
        })
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is no message.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Forget the messages, keep the buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// The streams whose `out_channel` names any of `channels`, in export order.
pub fn streams_to(cfg: &GopherConfig, channels: &[OutChannel]) -> Vec<Stream> {
    let mut out = Vec::new();
    for (stream, configured) in [
        (Stream::Metric, &cfg.metric.out_channel),
        (Stream::Event, &cfg.event.out_channel),
        (Stream::Meta, &cfg.meta.out_channel),
    ] {
        if channels.iter().any(|c| configured.contains(*c)) {
            out.push(stream);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_share_one_buffer() {
        let mut m = Messages::default();
        m.push(1, |b| b.extend_from_slice(b"ab"));
        m.push(3, |_| {});
        m.push(2, |b| b.extend_from_slice(b"cde"));
        let got: Vec<(&[u8], u64)> = m.iter().collect();
        assert_eq!(got, [(&b"ab"[..], 1), (&b""[..], 3), (&b"cde"[..], 2)]);
        assert_eq!(m.len(), 3);
        m.clear();
        assert!(m.is_empty());
    }

    #[test]
    fn streams_follow_out_channels() {
        let mut cfg = GopherConfig::default();
        cfg.metric.out_channel = crate::config::OutChannels::new([OutChannel::Kafka]);
        cfg.event.out_channel = crate::config::OutChannels::new([OutChannel::Logs]);
        cfg.meta.out_channel = crate::config::OutChannels::new([OutChannel::Kafka]);
        assert_eq!(
            streams_to(&cfg, &[OutChannel::Kafka]),
            [Stream::Metric, Stream::Meta]
        );
        assert_eq!(
            streams_to(&cfg, &[OutChannel::Logs, OutChannel::Json]),
            [Stream::Event]
        );
        assert!(streams_to(&cfg, &[OutChannel::Otlp]).is_empty());
    }
}
