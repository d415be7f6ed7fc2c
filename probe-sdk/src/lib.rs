//! Probe SDK.
