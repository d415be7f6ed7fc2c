//! eBPF helpers (to be written).
