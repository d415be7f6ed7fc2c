//! whitelist (to be written).
