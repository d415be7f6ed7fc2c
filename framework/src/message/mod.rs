//! The messages of the push path, shared by their producers (ingest, `events`, `meta_report`)
//! and their consumers (`export`): metric records, events, table metadata, the [`Stream`] each
//! belongs to, and the hand-over traits ([`RecordSink`], [`EventSink`], [`Publish`]).
//!
//! Architecture Invariant: this module imports none of `ingest`, `events`, `export` and
//! `meta_report`; they import it. `tests/module_layers.rs` fails on any import cycle between them.

mod event;
pub mod json;
mod record;

pub use event::{Event, EventIds, EventMessage, EventSink, HeadLabels, LogEvents};
pub use record::{OwnedRecord, RecordLabels, RecordSink, RecordView};

use std::sync::Arc;

/// What a sink carries: one queue and one set of counters per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// Metric records.
    Metric,
    /// Abnormal events.
    Event,
    /// Table metadata.
    Meta,
}

impl Stream {
    /// Every stream, in export order.
    pub const ALL: [Stream; 3] = [Stream::Metric, Stream::Event, Stream::Meta];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Metric => "metric",
            Stream::Event => "event",
            Stream::Meta => "meta",
        }
    }

    /// Position in per-stream arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A table's metadata message, rendered once by the publisher.
#[derive(Debug)]
pub struct MetaMessage {
    /// Table name.
    pub table: String,
    /// Upstream metadata JSON (one line, no newline).
    pub json: String,
}

/// One message on its way to the sinks (shared: every sink queue holds the same `Arc`).
#[derive(Debug, Clone)]
pub enum Item {
    /// One metric record.
    Metric(Arc<OwnedRecord>),
    /// One abnormal event.
    Event(Arc<EventMessage>),
    /// One table's metadata.
    Meta(Arc<MetaMessage>),
}

impl Item {
    /// The stream the item belongs to.
    pub fn stream(&self) -> Stream {
        match self {
            Item::Metric(_) => Stream::Metric,
            Item::Event(_) => Stream::Event,
            Item::Meta(_) => Stream::Meta,
        }
    }
}

/// Where event and metadata producers hand their messages: the queues of every sink that
/// carries the stream (must not block).
pub trait Publish: Send + Sync + 'static {
    /// Hand `item` to every sink carrying its stream.
    fn publish(&self, item: Item);
}
