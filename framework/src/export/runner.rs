//! The one loop every push sink runs on its own thread: pop a batch from the sink's queue,
//! encode and send it run by run (one stream each), retry with backoff, count the outcome, flush
//! every round; at shutdown let the sink deliver what it holds. See [`super::sink`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::queue::{Popped, SinkQueue};
use super::sink::{Messages, SendError, Sent, Sink};
use super::ExportError;
use crate::clock::now_ms;
use crate::config::GopherConfig;
use crate::message::{Item, Stream};
use crate::telemetry::{SinkStats, Telemetry};

/// Starts one registered sink if the configuration asks for it (an entry of [`super::SINKS`]).
pub type StartSink = fn(&GopherConfig, &str, &Telemetry) -> Result<Option<SinkHandle>, ExportError>;

/// A running sink: its queue and its thread.
#[derive(Debug)]
pub struct SinkHandle {
    /// Sink name.
    pub name: &'static str,
    /// Its queue (producers push here).
    pub queue: Arc<SinkQueue>,
    /// Its thread (ends once the queue is closed and drained).
    pub thread: std::thread::JoinHandle<()>,
}

/// Plan, open and start sink `S`: register its counters, create its queue and run
/// [`run`] on a thread `sink-<NAME>`. `Ok(None)` when no stream goes to it.
pub fn start<S: Sink>(
    cfg: &GopherConfig,
    machine_id: &str,
    telemetry: &Telemetry,
) -> Result<Option<SinkHandle>, ExportError> {
    let Some(plan) = S::plan(cfg, machine_id) else {
        return Ok(None);
    };
    let stats = Arc::new(SinkStats::new(S::NAME, plan.queue_size, &plan.streams));
    telemetry.sinks.register(Arc::clone(&stats));
    let queue = Arc::new(SinkQueue::new(plan.queue_size, Arc::clone(&stats)));
    let sink = S::open(plan.config, stats).map_err(|e| ExportError::Open(Box::new(e)))?;
    let q = Arc::clone(&queue);
    let thread = std::thread::Builder::new()
        .name(format!("sink-{}", S::NAME))
        .spawn(move || run(sink, &q))
        .map_err(|source| ExportError::Thread {
            sink: S::NAME,
            source,
        })?;
    Ok(Some(SinkHandle {
        name: S::NAME,
        queue,
        thread,
    }))
}

/// The sink loop; returns once `queue` is closed and drained and the sink closed.
pub fn run<S: Sink>(mut sink: S, queue: &SinkQueue) {
    let mut batch: Vec<Item> = Vec::with_capacity(S::BATCH);
    let mut messages = Messages::default();
    loop {
        if queue.pop_batch(&mut batch, S::BATCH, sink.idle_wait()) == Popped::Closed {
            break;
        }
        // pop_batch drains stream by stream, so each stream is one run.
        let mut rest = batch.as_slice();
        while let Some(first) = rest.first() {
            let stream = first.stream();
            let n = rest
                .iter()
                .position(|i| i.stream() != stream)
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(n);
            messages.clear();
            sink.encode(stream, run, &mut messages);
            for (message, items) in messages.iter() {
                deliver(&mut sink, queue, stream, message, items);
            }
            rest = tail;
        }
        batch.clear();
        sink.flush();
    }
    sink.close();
}

/// Send one message until it is delivered, refused, or the queue closes during a retry.
fn deliver<S: Sink>(sink: &mut S, queue: &SinkQueue, stream: Stream, message: &[u8], items: u64) {
    let stats = queue.stats();
    let counters = stats.stream(stream);
    let mut pause = S::BACKOFF.first;
    loop {
        match sink.send(stream, message) {
            Ok(Sent::Delivered) => {
                counters.sent.fetch_add(items, Ordering::Relaxed);
                return;
            }
            Ok(Sent::Pending) => return,
            Err(SendError::Permanent(error)) => {
                counters.failed.fetch_add(items, Ordering::Relaxed);
                record_error(stats, error);
                return;
            }
            Err(SendError::Retryable(error)) => {
                record_error(stats, error);
                if queue.is_closed() {
                    // Shutting down: give up instead of waiting for the receiver.
                    counters.failed.fetch_add(items, Ordering::Relaxed);
                    return;
                }
                sink.pause(pause);
                pause = (pause * 2).min(S::BACKOFF.max);
            }
        }
    }
}

fn record_error(stats: &SinkStats, error: Option<String>) {
    if let Some(e) = error {
        stats.set_last_error(now_ms(), &e);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::export::sink::{Backoff, Plan};
    use crate::message::MetaMessage;

    /// Scripted outcomes per send; records what the loop asked.
    #[derive(Default)]
    struct Script {
        outcomes: VecDeque<Result<Sent, SendError>>,
        sent: Vec<String>,
        pauses: Vec<Duration>,
        flushes: usize,
        closed: bool,
    }

    struct Fake {
        script: Arc<Mutex<Script>>,
        close_queue_on_pause: Option<Arc<SinkQueue>>,
    }

    impl Sink for Fake {
        const NAME: &'static str = "fake";
        const BATCH: usize = 3;
        const BACKOFF: Backoff = Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(3),
        };
        type Config = ();
        type Error = std::convert::Infallible;

        fn plan(_: &GopherConfig, _: &str) -> Option<Plan<()>> {
            None
        }
        fn open(_: (), _: Arc<SinkStats>) -> Result<Self, Self::Error> {
            unreachable!("tests build Fake directly")
        }
        fn idle_wait(&self) -> Duration {
            Duration::ZERO
        }
        fn encode(&mut self, stream: Stream, items: &[Item], out: &mut Messages) {
            for i in items {
                if let Item::Meta(m) = i {
                    out.push(1, |b| {
                        b.extend_from_slice(format!("{}:{}", stream.as_str(), m.table).as_bytes())
                    });
                }
            }
        }
        fn send(&mut self, _: Stream, message: &[u8]) -> Result<Sent, SendError> {
            let mut s = self.script.lock().unwrap();
            s.sent.push(String::from_utf8_lossy(message).into_owned());
            s.outcomes.pop_front().unwrap_or(Ok(Sent::Delivered))
        }
        fn pause(&mut self, pause: Duration) {
            self.script.lock().unwrap().pauses.push(pause);
            if let Some(q) = &self.close_queue_on_pause {
                q.close();
            }
        }
        fn flush(&mut self) {
            self.script.lock().unwrap().flushes += 1;
        }
        fn close(&mut self) {
            self.script.lock().unwrap().closed = true;
        }
    }

    fn meta(n: usize) -> Item {
        Item::Meta(Arc::new(MetaMessage {
            table: n.to_string(),
            json: String::new(),
        }))
    }

    fn queue() -> Arc<SinkQueue> {
        let stats = Arc::new(SinkStats::new("fake", 10, &[Stream::Meta]));
        Arc::new(SinkQueue::new(10, stats))
    }

    fn counts(q: &SinkQueue) -> (u64, u64) {
        let c = q.stats().stream(Stream::Meta);
        (
            c.sent.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn outcomes_are_counted_and_retries_back_off() {
        let q = queue();
        for n in 0..5 {
            q.push(meta(n));
        }
        let script = Arc::new(Mutex::new(Script {
            outcomes: [
                Ok(Sent::Delivered),
                Err(SendError::Retryable(Some("busy".into()))),
                Err(SendError::Retryable(None)),
                Err(SendError::Retryable(None)),
                Err(SendError::Retryable(None)),
                Ok(Sent::Delivered),
                Err(SendError::Permanent(None)),
                Ok(Sent::Pending),
            ]
            .into(),
            ..Script::default()
        }));
        let sink = Fake {
            script: Arc::clone(&script),
            close_queue_on_pause: None,
        };
        let q2 = Arc::clone(&q);
        let h = std::thread::spawn(move || run(sink, &q2));
        while !q.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Items already taken are still handled after the close.
        q.close();
        h.join().unwrap();
        let s = script.lock().unwrap();
        assert_eq!(
            s.sent,
            [
                "meta:0", "meta:1", "meta:1", "meta:1", "meta:1", "meta:1", "meta:2", "meta:3",
                "meta:4"
            ]
        );
        let ms = Duration::from_millis;
        assert_eq!(s.pauses, [ms(1), ms(2), ms(3), ms(3)]);
        // 0, 1 and 4 delivered, 2 refused, 3 pending (the sink counts it itself).
        assert_eq!(counts(&q), (3, 1));
        let last = q.stats().last_error().map(|(_, e)| e);
        assert_eq!(last.as_deref(), Some("busy"));
        assert!(s.flushes >= 2, "a flush per round");
        assert!(s.closed);
    }

    #[test]
    fn a_retry_after_close_counts_as_failed() {
        let q = queue();
        for n in 0..2 {
            q.push(meta(n));
        }
        let script = Arc::new(Mutex::new(Script {
            outcomes: [
                Err(SendError::Retryable(Some("down".into()))),
                Err(SendError::Retryable(None)),
            ]
            .into(),
            ..Script::default()
        }));
        let sink = Fake {
            script: Arc::clone(&script),
            close_queue_on_pause: Some(Arc::clone(&q)),
        };
        run(sink, &q);
        let s = script.lock().unwrap();
        // Item 0: retried once (the pause closes the queue), refused again → failed.
        // Item 1 is still delivered from the closed queue.
        assert_eq!(s.sent.len(), 3);
        assert_eq!(counts(&q), (1, 1));
        assert!(s.closed);
    }
}
