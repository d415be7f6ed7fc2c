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

/// Key of the `tcp_*` tables: `tgid, role, client_ip, server_ip, client_port, server_port,
/// protocol`. `client_port` is 0 unless client ports are reported (`-c 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// Owning process; 0 when the owner could not be determined.
    pub tgid: u32,
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
    fn roles_print_as_upstream_head() {
        assert_eq!(Role::Client.to_string(), "client");
        assert_eq!(Role::Server.as_str(), "server");
        assert!(Role::Client < Role::Server);
    }
}
