//! Dns (placeholder: parses nothing yet).

use crate::{Detect, Direction, Protocol, Refuse, StreamParser};

/// A parser of one direction of a Dns connection.
pub fn parser(direction: Direction) -> Box<dyn StreamParser> {
    let _ = direction;
    Box::new(Refuse(Protocol::Dns))
}

/// Whether a connection's first bytes are Dns.
pub fn detect(request: &[u8], response: Option<&[u8]>) -> Detect {
    let _ = (request, response);
    Detect::No
}
