//! The bounded queue in front of every push sink.
//!
//! Ingest, the event router and the metadata publisher push; one sink thread pops. A push never
//! blocks: when a stream's queue is full the **oldest** item is dropped and counted in
//! `gala_gopher_self_sink_dropped_total`, so a slow or absent receiver costs memory up to the cap
//! and never time on the ingest path. Each stream (metric, event, meta) has its own cap so a
//! metric flood cannot push events out; the sink thread takes events and metadata first.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::message::{Item, Stream};
use crate::telemetry::SinkStats;

/// Result of [`SinkQueue::pop_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Popped {
    /// At least one item was moved out.
    Items,
    /// Nothing arrived within the wait.
    Empty,
    /// The queue is closed and empty: the sink should flush and stop.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    queues: [VecDeque<Item>; 3],
    closed: bool,
}

/// A bounded multi-stream queue with drop-oldest overflow (see the module docs).
#[derive(Debug)]
pub struct SinkQueue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    stats: Arc<SinkStats>,
}

/// Order in which a sink thread drains the streams: rare, small streams first.
const DRAIN_ORDER: [Stream; 3] = [Stream::Event, Stream::Meta, Stream::Metric];

impl SinkQueue {
    /// A queue holding up to `capacity` items per stream, counting into `stats`.
    pub fn new(capacity: usize, stats: Arc<SinkStats>) -> Self {
        SinkQueue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            stats,
        }
    }

    /// The sink's counters.
    pub fn stats(&self) -> &Arc<SinkStats> {
        &self.stats
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueue without blocking; a full stream loses its oldest item (counted).
    pub fn push(&self, item: Item) {
        let stream = item.stream();
        let counters = self.stats.stream(stream);
        let mut st = self.lock();
        if st.closed {
            drop(st);
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let q = &mut st.queues[stream.index()];
        let was_empty = q.is_empty();
        if q.len() >= self.capacity {
            q.pop_front();
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.depth.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(item);
        drop(st);
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Move up to `max` items into `out` (events and metadata first), waiting up to `wait` for
    /// the first one.
    pub fn pop_batch(&self, out: &mut Vec<Item>, max: usize, wait: Duration) -> Popped {
        let mut st = self.lock();
        if st.queues.iter().all(VecDeque::is_empty) {
            if st.closed {
                return Popped::Closed;
            }
            if wait.is_zero() {
                return Popped::Empty;
            }
            st = match self.ready.wait_timeout_while(st, wait, |s| {
                !s.closed && s.queues.iter().all(VecDeque::is_empty)
            }) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
            if st.queues.iter().all(VecDeque::is_empty) {
                return if st.closed {
                    Popped::Closed
                } else {
                    Popped::Empty
                };
            }
        }
        let mut room = max.max(1);
        for stream in DRAIN_ORDER {
            let q = &mut st.queues[stream.index()];
            let n = q.len().min(room);
            out.extend(q.drain(..n));
            room -= n;
            self.stats
                .stream(stream)
                .depth
                .fetch_sub(n as u64, Ordering::Relaxed);
        }
        Popped::Items
    }

    /// Refuse new items and wake the sink thread so it can flush and stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Whether [`SinkQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Items waiting, all streams together.
    pub fn len(&self) -> usize {
        self.lock().queues.iter().map(VecDeque::len).sum()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MetaMessage;

    fn meta(n: usize) -> Item {
        Item::Meta(Arc::new(MetaMessage {
            table: n.to_string(),
            json: String::new(),
        }))
    }

    fn names(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Meta(m) => m.table.clone(),
                _ => "?".into(),
            })
            .collect()
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let stats = Arc::new(SinkStats::new("t", 3, &[Stream::Meta]));
        let q = SinkQueue::new(3, stats.clone());
        for n in 0..5 {
            q.push(meta(n));
        }
        let c = stats.stream(Stream::Meta);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(c.depth.load(Ordering::Relaxed), 3);
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 10, Duration::ZERO), Popped::Items);
        assert_eq!(names(&out), ["2", "3", "4"]);
        assert_eq!(c.depth.load(Ordering::Relaxed), 0);
        assert_eq!(q.pop_batch(&mut out, 10, Duration::ZERO), Popped::Empty);
    }

    #[test]
    fn batches_are_bounded_and_closed_queue_reports_closed() {
        let stats = Arc::new(SinkStats::new("t", 10, &[Stream::Meta]));
        let q = SinkQueue::new(10, stats.clone());
        for n in 0..5 {
            q.push(meta(n));
        }
        let mut out = Vec::new();
        q.pop_batch(&mut out, 2, Duration::ZERO);
        assert_eq!(names(&out), ["0", "1"]);
        q.close();
        q.push(meta(9));
        assert_eq!(
            stats.stream(Stream::Meta).dropped.load(Ordering::Relaxed),
            1
        );
        out.clear();
        assert_eq!(q.pop_batch(&mut out, 10, Duration::ZERO), Popped::Items);
        assert_eq!(names(&out), ["2", "3", "4"]);
        assert_eq!(
            q.pop_batch(&mut out, 10, Duration::from_secs(5)),
            Popped::Closed
        );
    }

    #[test]
    fn waiting_pop_wakes_on_push() {
        let stats = Arc::new(SinkStats::new("t", 10, &[Stream::Meta]));
        let q = Arc::new(SinkQueue::new(10, stats));
        let q2 = q.clone();
        let h = std::thread::spawn(move || {
            let mut out = Vec::new();
            let r = q2.pop_batch(&mut out, 10, Duration::from_secs(30));
            (r, names(&out))
        });
        q.push(meta(7));
        let (r, got) = h.join().unwrap();
        assert_eq!(r, Popped::Items);
        assert_eq!(got, ["7"]);
    }
}
