//! log (to be written).
