//! Abnormal events: `|event|…|` lines from any probe → parse → per-entity dedup within
//! `event.timeout` → description language (`event.desc_language`) → upstream event JSON → the
//! event queues of the configured sinks. Events never enter the table store.

pub mod dedup;
pub mod i18n;
pub mod json;
pub mod parse;

pub use dedup::Dedup;
pub use json::event_json;
pub use parse::{parse_event, EventError};
// The event types live with the other messages; kept reachable here.
pub use crate::message::{Event, EventIds, EventMessage, HeadLabels};

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::clock::now_ms;
use crate::config::Language;
use crate::message::{EventSink, Item, Publish};
use crate::telemetry::Telemetry;

/// Entities remembered by the dedup window (upstream: 1000).
pub const DEDUP_CAPACITY: usize = 10_000;

/// The daemon's [`EventSink`]: dedups, translates, renders once, fans out.
pub struct EventRouter {
    machine_id: String,
    language: Language,
    dedup: Mutex<Dedup>,
    clock: Instant,
    out: Arc<dyn Publish>,
    telemetry: Arc<Telemetry>,
}

impl EventRouter {
    /// A router publishing to `out` (the queues of the sinks that carry events).
    pub fn new(
        machine_id: &str,
        language: Language,
        timeout_s: u64,
        out: Arc<dyn Publish>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        EventRouter {
            machine_id: machine_id.to_string(),
            language,
            dedup: Mutex::new(Dedup::new(timeout_s.saturating_mul(1000), DEDUP_CAPACITY)),
            clock: Instant::now(),
            out,
            telemetry,
        }
    }

    /// Process one event line's raw values; returns the message if it passed the dedup window.
    pub fn route(&self, probe: &str, values: &[&str]) -> Option<Arc<EventMessage>> {
        let counters = &self.telemetry.events;
        let event = match parse_event(values) {
            Ok(e) => e,
            Err(e) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(probe, error = %e, "event line dropped");
                return None;
            }
        };
        let time_ms = now_ms();
        let ids = EventIds::new(&event, &self.machine_id, time_ms);
        // The key is the entity (name + id), not the entity id alone as in v2023, where `cpu`
        // of entity `cpu` and `cpu` of another entity shared one window.
        let mono = self.clock.elapsed().as_millis() as u64;
        let admitted = {
            let mut d = self.dedup.lock().unwrap_or_else(|p| p.into_inner());
            d.admit(&ids.entity_id, mono)
        };
        if !admitted {
            counters.deduplicated.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let body = i18n::translate_body(
            self.language,
            &event.entity_name,
            &event.entity_id,
            &event.metric,
            &event.body,
        )
        .into_owned();
        let mut json = Vec::with_capacity(256 + body.len());
        event_json(&event, &ids, &body, &self.machine_id, time_ms, &mut json);
        let msg = Arc::new(EventMessage {
            event,
            ids,
            body,
            time_ms,
            json: String::from_utf8(json).unwrap_or_default(),
        });
        self.out.publish(Item::Event(Arc::clone(&msg)));
        Some(msg)
    }
}

impl EventSink for EventRouter {
    fn event(&self, probe: &str, values: &[&str]) {
        self.route(probe, values);
    }
}
