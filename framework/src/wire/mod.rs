//! Wire format: splitting a probe's byte stream into lines ([`framer`]) and parsing record lines
//! `|table|v1|…|vn|` ([`parser`], which applies the `record_line` contract). Pure code: no I/O,
//! no allocation beyond what the caller keeps.

pub mod framer;
pub mod parser;

pub use framer::{FramedLine, Framer};
pub use parser::{parse_record, unescape_into, value_is_absent, Malformed, ParseError};
