//! The identity of an output record: which process talks to which server, in which role.

use std::fmt;
use std::net::IpAddr;

/// `AF_INET`, also the value of the `protocol` key for IPv4.
pub const AF_INET: u16 = 2;
/// `AF_INET6`, also the value of the `protocol` key for IPv6.
pub const AF_INET6: u16 = 10;

/// The local end's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The local end called connect().
    Client,
    /// The local end was accepted from a listener.
    Server,
}

impl Role {
    /// The value of the `role` key, as upstream HEAD prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest process name the kernel keeps (`TASK_COMM_LEN` less the NUL).
pub const COMM_MAX: usize = 15;
/// The `comm` key of a connection whose owner is unknown (tgid 0): a key cannot be empty.
pub const UNKNOWN_COMM: &str = "unknown";

/// A process name as the kernel keeps it (at most [`COMM_MAX`] bytes), stored inline so that
/// keys stay `Copy`. Never empty: an empty or missing name is [`UNKNOWN_COMM`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Comm {
    /// The name's bytes, NUL-padded (so the derived order is the names' order).
    bytes: [u8; COMM_MAX],
    len: u8,
}

impl Comm {
    /// `name` cut to [`COMM_MAX`] bytes at a character boundary; [`UNKNOWN_COMM`] if empty.
    pub fn new(name: &str) -> Comm {
        let name = if name.is_empty() { UNKNOWN_COMM } else { name };
        let mut end = name.len().min(COMM_MAX);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; COMM_MAX];
        bytes[..end].copy_from_slice(&name.as_bytes()[..end]);
        Comm {
            bytes,
            len: end as u8,
        }
    }

    /// The owner of a connection nobody could be named for.
    pub fn unknown() -> Comm {
        Comm::new(UNKNOWN_COMM)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Always valid: `new` cuts at a character boundary of a `str`.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or(UNKNOWN_COMM)
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Key of the `tcp_*` tables, upstream HEAD's `tcp_link` keys: `tgid, comm, role, client_ip,
/// toa_client_ip, server_ip, client_port, server_port, protocol` (`toa_client_ip` is written
/// as `client_ip`: see [`crate::tables::KEY_FIELDS`]). `client_port` is 0 unless client ports
/// are reported (`-c 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// Owning process; 0 when the owner could not be determined.
    pub tgid: u32,
    /// Name of the owning process ([`UNKNOWN_COMM`] when the owner is unknown).
    pub comm: Comm,
    /// Role of the local end.
    pub role: Role,
    /// Address of the connecting end.
    pub client_ip: IpAddr,
    /// Address of the accepting end.
    pub server_ip: IpAddr,
    /// Port of the connecting end, or 0.
    pub client_port: u16,
    /// Port of the accepting end.
    pub server_port: u16,
}

impl ConnKey {
    /// The `protocol` key: the address family, 2 (IPv4) or 10 (IPv6), as upstream reports it.
    pub fn protocol(&self) -> u16 {
        match self.client_ip {
            IpAddr::V4(_) => AF_INET,
            IpAddr::V6(_) => AF_INET6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn key(ip: IpAddr, role: Role) -> ConnKey {
        ConnKey {
            tgid: 1,
            comm: Comm::new("curl"),
            role,
            client_ip: ip,
            server_ip: ip,
            client_port: 0,
            server_port: 80,
        }
    }

    #[test]
    fn protocol_is_the_address_family() {
        assert_eq!(
            key(IpAddr::V4(Ipv4Addr::LOCALHOST), Role::Client).protocol(),
            2
        );
        assert_eq!(
            key(IpAddr::V6(Ipv6Addr::LOCALHOST), Role::Server).protocol(),
            10
        );
    }

    #[test]
    fn comm_is_cut_like_the_kernel_and_never_empty() {
        assert_eq!(Comm::new("curl").as_str(), "curl");
        assert_eq!(Comm::new("").as_str(), "unknown");
        assert_eq!(Comm::unknown(), Comm::new(UNKNOWN_COMM));
        assert_eq!(
            Comm::new("a-very-long-process-name").as_str(),
            "a-very-long-pro"
        );
        // 14 ASCII bytes then a 2-byte character: cut before it, not inside.
        assert_eq!(Comm::new("abcdefghijklmné").as_str(), "abcdefghijklmn");
        assert!(Comm::new("ab") < Comm::new("abc"));
        assert!(Comm::new("abc") < Comm::new("abd"));
        assert_eq!(format!("{:?}", Comm::new("x")), "\"x\"");
    }

    #[test]
    fn roles_print_as_upstream_head() {
        assert_eq!(Role::Client.to_string(), "client");
        assert_eq!(Role::Server.as_str(), "server");
        assert!(Role::Client < Role::Server);
    }
}
