//! Exporters: pull (Prometheus text over HTTP) and push sinks.
//!
//! Push sinks see every accepted record through [`RecordSink`], independently of the table
//! store: a record the store refuses at its caps still reaches Kafka/log files (upstream HEAD
//! lost them).

pub mod http;
pub mod json;
pub mod kafka;
pub mod logs;
pub mod otlp;
pub mod pipeline;
pub mod prometheus;
pub mod queue;

pub use pipeline::{build_exporters, ExportError, Exporters};

use crate::meta::SchemaRef;

/// A record as push sinks see it: unescaped values in field order, `None` = absent.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Table schema.
    pub schema: &'a SchemaRef,
    /// Values in field order (`None` for empty / `(null)`).
    pub values: &'a [Option<&'a str>],
    /// Ingest time, Unix milliseconds.
    pub time_ms: u64,
    /// Probe that produced it.
    pub probe: &'a str,
}

/// Receives every accepted record (called on the ingest path: must not block; queue and return).
pub trait RecordSink: Send + Sync + 'static {
    /// Handle one record.
    fn record(&self, rec: &RecordView<'_>);
}
