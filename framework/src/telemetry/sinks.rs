//! Counters of the push sinks (Kafka, log files, OTLP) and of the event path, and their
//! `gala_gopher_self_sink_*` / `gala_gopher_self_events_*` rendering.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::store::escape_label_value;

// The stream label is defined with the messages it classifies.
pub use crate::message::Stream;

/// Per-stream counters of one sink.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Items the receiver acknowledged (Kafka delivery report, HTTP 2xx, bytes written).
    pub sent: AtomicU64,
    /// Items given up on (delivery error, permanent HTTP error, write error, shutdown).
    pub failed: AtomicU64,
    /// Items dropped because the sink's queue was full (the oldest goes).
    pub dropped: AtomicU64,
    /// Items waiting in the sink's queue now.
    pub depth: AtomicU64,
}

/// Counters and last error of one push sink.
#[derive(Debug)]
pub struct SinkStats {
    /// Sink name (`kafka`, `logs`, `otlp`).
    pub name: &'static str,
    /// Queue capacity per stream.
    pub capacity: u64,
    streams: [StreamCounters; 3],
    enabled: [bool; 3],
    last_error: Mutex<Option<(u64, String)>>,
}

/// Longest error text kept (it becomes a label value).
const MAX_ERROR_LEN: usize = 256;

impl SinkStats {
    /// Fresh counters for `name` carrying `streams`, each queue holding `capacity` items.
    pub fn new(name: &'static str, capacity: usize, streams: &[Stream]) -> Self {
        let mut enabled = [false; 3];
        for s in streams {
            enabled[s.index()] = true;
        }
        SinkStats {
            name,
            capacity: capacity as u64,
            streams: Default::default(),
            enabled,
            last_error: Mutex::new(None),
        }
    }

    /// Counters of `stream`.
    pub fn stream(&self, stream: Stream) -> &StreamCounters {
        &self.streams[stream.index()]
    }

    /// Streams this sink carries.
    pub fn streams(&self) -> impl Iterator<Item = Stream> + '_ {
        Stream::ALL.into_iter().filter(|s| self.enabled[s.index()])
    }

    /// Remember the latest error (time in Unix ms); the text is cut to 256 bytes.
    pub fn set_last_error(&self, now_ms: u64, err: &str) {
        let mut text = err.to_string();
        if text.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some((now_ms, text));
        }
    }

    /// The latest error and when it happened (Unix ms).
    pub fn last_error(&self) -> Option<(u64, String)> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// Outcome of an `|event|…|` line on the daemon side.
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Events passed on to the sinks.
    pub accepted: AtomicU64,
    /// Events suppressed because the entity reported one within `event.timeout`.
    pub deduplicated: AtomicU64,
    /// Event lines with too few fields or an unknown severity.
    pub malformed: AtomicU64,
}

/// All sinks of the daemon (registered once at start).
#[derive(Debug, Default)]
pub struct SinkRegistry {
    sinks: RwLock<Vec<Arc<SinkStats>>>,
}

impl SinkRegistry {
    /// Add a sink's counters.
    pub fn register(&self, stats: Arc<SinkStats>) {
        match self.sinks.write() {
            Ok(mut v) => v.push(stats),
            Err(p) => p.into_inner().push(stats),
        }
    }

    /// Every registered sink, in registration order.
    pub fn all(&self) -> Vec<Arc<SinkStats>> {
        match self.sinks.read() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Append `gala_gopher_self_sink_*` and `gala_gopher_self_events_total` (`mid` is the escaped
/// machine id).
pub fn render_sink_metrics(
    sinks: &[Arc<SinkStats>],
    events: &EventCounters,
    mid: &str,
    out: &mut String,
) {
    type Pick = fn(&StreamCounters) -> &AtomicU64;
    let per_stream: [(&str, &str, &str, Pick); 4] = [
        (
            "gala_gopher_self_sink_sent_total",
            "counter",
            "Items a push sink delivered (acknowledged by the receiver or written).",
            |c| &c.sent,
        ),
        (
            "gala_gopher_self_sink_failed_total",
            "counter",
            "Items a push sink gave up on (delivery or write error).",
            |c| &c.failed,
        ),
        (
            "gala_gopher_self_sink_dropped_total",
            "counter",
            "Items dropped because the sink queue was full (oldest first).",
            |c| &c.dropped,
        ),
        (
            "gala_gopher_self_sink_queue_depth",
            "gauge",
            "Items waiting in the sink queue.",
            |c| &c.depth,
        ),
    ];
    if !sinks.is_empty() {
        for (name, kind, help, pick) in per_stream {
            header(out, name, kind, help);
            for s in sinks {
                for st in s.streams() {
                    let _ = writeln!(
                        out,
                        "{name}{{sink=\"{}\",stream=\"{}\",machine_id=\"{mid}\"}} {}",
                        s.name,
                        st.as_str(),
                        pick(s.stream(st)).load(Ordering::Relaxed)
                    );
                }
            }
        }
        let name = "gala_gopher_self_sink_queue_capacity";
        header(
            out,
            name,
            "gauge",
            "Capacity of each sink queue, per stream.",
        );
        for s in sinks {
            let _ = writeln!(
                out,
                "{name}{{sink=\"{}\",machine_id=\"{mid}\"}} {}",
                s.name, s.capacity
            );
        }
        let name = "gala_gopher_self_sink_last_error_timestamp_seconds";
        header(
            out,
            name,
            "gauge",
            "Unix time of the sink's latest error; the error text is the label (absent if none).",
        );
        for s in sinks {
            if let Some((ms, text)) = s.last_error() {
                let mut esc = String::new();
                escape_label_value(&text, &mut esc);
                let _ = writeln!(
                    out,
                    "{name}{{sink=\"{}\",error=\"{esc}\",machine_id=\"{mid}\"}} {:.3}",
                    s.name,
                    ms as f64 / 1000.0
                );
            }
        }
    }
    let name = "gala_gopher_self_events_total";
    header(
        out,
        name,
        "counter",
        "Probe event lines by outcome (accepted, deduplicated, malformed).",
    );
    for (outcome, c) in [
        ("accepted", &events.accepted),
        ("deduplicated", &events.deduplicated),
        ("malformed", &events.malformed),
    ] {
        let _ = writeln!(
            out,
            "{name}{{outcome=\"{outcome}\",machine_id=\"{mid}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
}
