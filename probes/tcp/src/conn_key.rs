//! The identity of an output record: which process talks to which server, in which role.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::skel::types::tcpp_key;

/// `AF_INET`, also the value of the `protocol` key for IPv4.
pub const AF_INET: u16 = 2;
/// `AF_INET6`, also the value of the `protocol` key for IPv6.
pub const AF_INET6: u16 = 10;

/// The local end's role (`TCP_ROLE_*` in `tcp.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The local end called connect().
    Client,
    /// The local end was accepted from a listener.
    Server,
}

impl Role {
    /// Decodes `TCP_ROLE_CLIENT` (1) / `TCP_ROLE_SERVER` (2).
    pub fn from_raw(raw: u8) -> Option<Role> {
        match raw {
            1 => Some(Role::Client),
            2 => Some(Role::Server),
            _ => None,
        }
    }

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
    /// Decodes the BPF key; None for an unknown family or role (never produced by tcp.bpf.c).
    pub fn from_raw(raw: &tcpp_key) -> Option<ConnKey> {
        let ip = |b: &[u8; 16]| -> Option<IpAddr> {
            match raw.family {
                AF_INET => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
                AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
                _ => None,
            }
        };
        Some(ConnKey {
            tgid: raw.tgid,
            role: Role::from_raw(raw.role)?,
            client_ip: ip(&raw.client_ip)?,
            server_ip: ip(&raw.server_ip)?,
            client_port: raw.client_port,
            server_port: raw.server_port,
        })
    }

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

    fn raw(family: u16, role: u8) -> tcpp_key {
        let mut k = tcpp_key {
            tgid: 42,
            family,
            role,
            client_port: 0,
            server_port: 8080,
            ..Default::default()
        };
        k.client_ip[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.server_ip[..4].copy_from_slice(&[10, 0, 0, 2]);
        k
    }

    #[test]
    fn decodes_ipv4_key() {
        let k = ConnKey::from_raw(&raw(AF_INET, 1)).unwrap();
        assert_eq!(k.tgid, 42);
        assert_eq!(k.role, Role::Client);
        assert_eq!(k.client_ip.to_string(), "10.0.0.1");
        assert_eq!(k.server_ip.to_string(), "10.0.0.2");
        assert_eq!((k.client_port, k.server_port, k.protocol()), (0, 8080, 2));
    }

    #[test]
    fn decodes_ipv6_key() {
        let mut r = raw(AF_INET6, 2);
        r.client_ip = Ipv6Addr::LOCALHOST.octets();
        r.server_ip = "::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap().octets();
        let k = ConnKey::from_raw(&r).unwrap();
        assert_eq!(k.role.as_str(), "server");
        assert_eq!(k.client_ip.to_string(), "::1");
        assert_eq!(k.server_ip.to_string(), "::ffff:127.0.0.1");
        assert_eq!(k.protocol(), 10);
    }

    #[test]
    fn rejects_unknown_family_or_role() {
        assert!(ConnKey::from_raw(&raw(1, 1)).is_none());
        assert!(ConnKey::from_raw(&raw(AF_INET, 0)).is_none());
        assert!(ConnKey::from_raw(&raw(AF_INET, 3)).is_none());
    }
}
