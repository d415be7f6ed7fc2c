//! Exporters: pull (Prometheus text over HTTP) and push sinks.
//!
//! Push sinks see every accepted record through [`RecordSink`], independently of the table
//! store: a record the store refuses at its caps still reaches Kafka/log files (upstream HEAD
//! lost them). Each push sink implements [`sink::Sink`] and runs in the generic loop of
//! [`runner`]; [`SINKS`] lists them.

pub mod flamegraph;
pub mod http;
pub mod json;
pub mod kafka;
pub mod logs;
pub mod otlp;
pub mod pipeline;
pub mod prometheus;
pub mod queue;
pub mod runner;
pub mod sink;

pub use crate::message::{RecordSink, RecordView};
pub use pipeline::{build_exporters, ExportError, Exporters};

/// Every push exporter, in start order (also the order of their self-metrics). Adding one: a
/// file implementing [`sink::Sink`] and a line here.
pub const SINKS: &[runner::StartSink] = &[
    runner::start::<kafka::KafkaSink>,
    runner::start::<logs::LogSink>,
    runner::start::<otlp::OtlpSink>,
];
