//! `system_os`: host facts. The static ones (os-release, kernel, CPUs, memory, hypervisor,
//! boot time) are read once at start; host name, addresses and uptime every cycle.

use crate::schema;
use crate::source::{HostPaths, Reader};
use probe_sdk::record::RecordWriter;
use std::io::{self, Write};
use std::net::Ipv6Addr;

/// Facts that do not change while the host is up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsStatic {
    /// PRETTY_NAME of os-release.
    pub os_version: String,
    /// Kernel release.
    pub kversion: String,
    /// CPUs present.
    pub cpu_num: Option<u64>,
    /// MemTotal in MiB.
    pub memory_mb: Option<u64>,
    /// `vm` or `pm`.
    pub host_type: &'static str,
    /// USER_HZ.
    pub clock_ticks: u64,
    /// Boot time, seconds since the epoch.
    pub btime: Option<u64>,
}

/// The operating system name from an os-release file: PRETTY_NAME, else NAME VERSION_ID.
pub fn parse_os_release(text: &str) -> Option<String> {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
        match k.trim() {
            "PRETTY_NAME" if !v.is_empty() => return Some(v),
            "NAME" => name = Some(v),
            "VERSION_ID" => version = Some(v),
            _ => {}
        }
    }
    match (name, version) {
        (Some(n), Some(v)) => Some(format!("{n} {v}")),
        (n, _) => n,
    }
}

/// Counts the CPUs of a sysfs range list such as `0-3,8,10-11`.
pub fn count_cpu_list(text: &str) -> Option<u64> {
    let mut n = 0u64;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u64>().ok()?.checked_sub(a.parse::<u64>().ok()?)? + 1,
            None => {
                part.parse::<u64>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// `btime` of `/proc/stat`.
pub fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// True when `/proc/cpuinfo` flags show a hypervisor or the DMI vendor is a known one.
fn detect_vm(paths: &HostPaths, r: &mut Reader) -> bool {
    if let Some(info) = r.read_optional(&paths.proc("cpuinfo")) {
        let flagged = info
            .lines()
            .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
            .any(|l| l.split_ascii_whitespace().any(|f| f == "hypervisor"));
        if flagged {
            return true;
        }
    }
    const VM_VENDORS: [&str; 9] = [
        "QEMU",
        "KVM",
        "VMware",
        "VirtualBox",
        "innotek",
        "Xen",
        "Amazon EC2",
        "Google",
        "Virtual Machine",
    ];
    ["class/dmi/id/sys_vendor", "class/dmi/id/product_name"]
        .iter()
        .filter_map(|f| r.read_optional(&paths.sys(f)).map(str::to_string))
        .any(|v| VM_VENDORS.iter().any(|m| v.contains(m)))
}

/// Reads the static facts. `mem_total_kb` comes from the meminfo sample.
pub fn read_static(
    paths: &HostPaths,
    r: &mut Reader,
    mem_total_kb: Option<u64>,
    clock_ticks: u64,
) -> OsStatic {
    let os_version = paths
        .os_release
        .iter()
        .find_map(|p| r.read_optional(p).and_then(parse_os_release))
        .unwrap_or_else(|| "Linux".to_string());
    let kversion = r
        .read(&paths.proc("sys/kernel/osrelease"))
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let stat = r
        .read(&paths.proc("stat"))
        .map(str::to_string)
        .unwrap_or_default();
    let btime = parse_btime(&stat);
    let cpu_num = r
        .read_optional(&paths.sys("devices/system/cpu/present"))
        .and_then(count_cpu_list)
        .or_else(|| {
            let n = stat
                .lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count();
            (n > 0).then_some(n as u64)
        });
    let host_type = if detect_vm(paths, r) { "vm" } else { "pm" };
    OsStatic {
        os_version,
        kversion,
        cpu_num,
        memory_mb: mem_total_kb.map(|kb| kb / 1024),
        host_type,
        clock_ticks,
        btime,
    }
}

/// Local IPv4 addresses (`/32 host LOCAL` leaves of `/proc/net/fib_trie`), 127/8 excluded,
/// in file order without duplicates.
pub fn parse_fib_trie_locals(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut leaf: Option<&str> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(ip) = t.strip_prefix("|-- ") {
            leaf = Some(ip.trim());
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = leaf {
                if !ip.starts_with("127.") && !out.iter().any(|o| o == ip) {
                    out.push(ip.to_string());
                }
            }
        }
    }
    out
}

/// IPv6 addresses of `/proc/net/if_inet6` other than loopback and link-local.
pub fn parse_if_inet6(text: &str) -> Vec<String> {
    const SCOPE_HOST: u8 = 0x10;
    const SCOPE_LINK: u8 = 0x20;
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_ascii_whitespace().collect();
            let addr = u128::from_str_radix(cols.first()?, 16).ok()?;
            let scope = u8::from_str_radix(cols.get(3)?, 16).ok()?;
            (scope != SCOPE_HOST && scope != SCOPE_LINK).then(|| Ipv6Addr::from(addr).to_string())
        })
        .collect()
}

/// Writes `system_os`.
pub fn write<W: Write>(
    paths: &HostPaths,
    r: &mut Reader,
    st: &OsStatic,
    out: &mut RecordWriter<W>,
) -> io::Result<()> {
    let from_etc = paths
        .etc_hostname
        .as_ref()
        .and_then(|p| r.read_optional(p))
        .map(|t| t.trim().to_string())
        .filter(|h| !h.is_empty());
    let hostname = match from_etc {
        Some(h) => h,
        None => r
            .read(&paths.proc("sys/kernel/hostname"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default(),
    };
    let mut ips = r
        .read_optional(&paths.proc("net/fib_trie"))
        .map(parse_fib_trie_locals)
        .unwrap_or_default();
    ips.extend(
        r.read_optional(&paths.proc("net/if_inet6"))
            .map(parse_if_inet6)
            .unwrap_or_default(),
    );
    let uptime = r
        .read(&paths.proc("uptime"))
        .and_then(|t| t.split_ascii_whitespace().next()?.parse::<f64>().ok())
        .map(|u| u as u64);
    out.record(schema::SYSTEM_OS.name)
        .field(st.os_version.as_str())
        .field(hostname.as_str())
        .field(st.kversion.as_str())
        .field(&st.cpu_num)
        .field(&st.memory_mb)
        .field(ips.join(" ").as_str())
        .field(st.host_type)
        .field(&st.clock_ticks)
        .field(&st.btime)
        .field(&1u8)
        .field(&uptime)
        .end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_fallbacks() {
        assert_eq!(
            parse_os_release("NAME=\"X\"\nPRETTY_NAME=\"X 1 (y)\"\n").as_deref(),
            Some("X 1 (y)")
        );
        assert_eq!(
            parse_os_release("NAME=Alpine\nVERSION_ID=3.20\n").as_deref(),
            Some("Alpine 3.20")
        );
        assert_eq!(parse_os_release("# nothing\n"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
    }

    #[test]
    fn addresses() {
        let trie = "Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n\
                    \x20    |-- 10.1.2.3\n        /24 link UNICAST\n        /32 host LOCAL\n\
                    \x20    |-- 10.1.2.255\n        /32 link BROADCAST\nMain:\n     |-- 10.1.2.3\n        /32 host LOCAL\n";
        assert_eq!(parse_fib_trie_locals(trie), vec!["10.1.2.3"]);
        let inet6 = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n\
                     00000000000000000000000000000001 01 80 10 80       lo\n\
                     fd000000000000000000000000000002 04 40 00 82     eth0\n";
        assert_eq!(parse_if_inet6(inet6), vec!["fd00::2"]);
    }
}
