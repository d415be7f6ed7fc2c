//! record (to be written).
