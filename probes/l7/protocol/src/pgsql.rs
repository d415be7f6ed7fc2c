//! Pgsql (placeholder: parses nothing yet).

use crate::{Detect, Direction, Protocol, Refuse, StreamParser};

/// A parser of one direction of a Pgsql connection.
pub fn parser(direction: Direction) -> Box<dyn StreamParser> {
    let _ = direction;
    Box::new(Refuse(Protocol::Pgsql))
}

/// Whether a connection's first bytes are Pgsql.
pub fn detect(request: &[u8], response: Option<&[u8]>) -> Detect {
    let _ = (request, response);
    Detect::No
}
