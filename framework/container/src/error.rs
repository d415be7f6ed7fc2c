//! How a runtime request failed, in the few kinds the resolver counts.

/// The kind of a failed runtime request (one counter each in
/// [`crate::resolver::Counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No answer within the request's time limit (a hung runtime).
    Timeout,
    /// The socket could not be connected to (absent, refused, permission).
    Connect,
    /// An answer that is not what was asked for: not HTTP/gRPC, an error status, a body over
    /// its size limit, JSON/protobuf that does not decode.
    Protocol,
}

impl ErrorKind {
    /// Lower-case name (`timeout`, `connect`, `protocol`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Protocol => "protocol",
        }
    }
}
