//! libconfig syntax reader.
