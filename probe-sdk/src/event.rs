//! event (to be written).
