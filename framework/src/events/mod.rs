//! Abnormal events: `|event|…|` lines from any probe → parse → per-entity dedup within
//! `event.timeout` → description language (`event.desc_language`) → upstream event JSON → the
//! event queues of the configured sinks. Events never enter the table store.

pub mod dedup;
pub mod i18n;
pub mod json;
pub mod parse;

pub use dedup::Dedup;
pub use json::{event_json, EventIds};
pub use parse::{parse_event, Event, EventError, HeadLabels};

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::Language;
use crate::export::queue::{Item, SinkQueue};
use crate::ingest::{now_ms, EventSink};
use crate::telemetry::Telemetry;

/// Entities remembered by the dedup window (upstream: 1000).
pub const DEDUP_CAPACITY: usize = 10_000;

/// An accepted event, ready for every sink: structured fields for OTLP, JSON for Kafka and files.
#[derive(Debug)]
pub struct EventMessage {
    /// The event as parsed (its `body` untranslated).
    pub event: Event,
    /// Derived ids.
    pub ids: EventIds,
    /// Body in the configured language.
    pub body: String,
    /// Daemon receive time, Unix ms.
    pub time_ms: u64,
    /// The upstream event JSON (one line, no newline).
    pub json: String,
}

/// The daemon's [`EventSink`]: dedups, translates, renders once, fans out.
pub struct EventRouter {
    machine_id: String,
    language: Language,
    dedup: Mutex<Dedup>,
    clock: Instant,
    queues: Vec<Arc<SinkQueue>>,
    telemetry: Arc<Telemetry>,
}

impl EventRouter {
    /// A router for `queues` (each sink's queue that carries events).
    pub fn new(
        machine_id: &str,
        language: Language,
        timeout_s: u64,
        queues: Vec<Arc<SinkQueue>>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        EventRouter {
            machine_id: machine_id.to_string(),
            language,
            dedup: Mutex::new(Dedup::new(timeout_s.saturating_mul(1000), DEDUP_CAPACITY)),
            clock: Instant::now(),
            queues,
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
        for q in &self.queues {
            q.push(Item::Event(Arc::clone(&msg)));
        }
        Some(msg)
    }
}

impl EventSink for EventRouter {
    fn event(&self, probe: &str, values: &[&str]) {
        self.route(probe, values);
    }
}
