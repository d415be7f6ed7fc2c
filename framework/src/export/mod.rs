//! Exporters: pull (Prometheus text) and push sinks.

pub mod http;
pub mod prometheus;
