//! Exporters: pull (Prometheus text) and push sinks.

pub mod prometheus;
pub mod http;
