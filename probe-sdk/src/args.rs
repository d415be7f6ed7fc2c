//! args (to be written).
