//! Record-line parser: the daemon reads lines by the one contract in the [`record_line`] crate
//! (grammar, escapes, absent values, refusal reasons), re-exported here so the data path keeps
//! its `crate::wire::…` names. The rules are specified, and tested, by
//! `probe-sdk/record-line/vectors/record_lines.json`.

pub use record_line::{parse_record, unescape_into, value_is_absent, Malformed, ParseError};
