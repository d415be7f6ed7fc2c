//! Owners of sockets the BPF side saw no process for (sockets older than the probe, or UDP
//! sockets that never sent nor received): the eBPF socket probes map socket inodes to
//! processes the way `ss -p` does (`/proc/net/tcp*` or the socket iterators for the inodes,
//! `/proc/<pid>/fd` for the holders).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

/// Who holds a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Process id.
    pub tgid: u32,
    /// Process name (`/proc/<pid>/comm`).
    pub comm: String,
}

/// Column of the inode in `/proc/net/tcp` and `/proc/net/tcp6` lines.
const INODE_COLUMN: usize = 9;

/// Inodes of the TCP sockets listed in `<proc_root>/net/tcp` and `tcp6` (TIME_WAIT and request
/// sockets show inode 0 and are skipped). Missing files (no IPv6) are not an error.
pub fn tcp_socket_inodes(proc_root: &Path) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for name in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(proc_root.join("net").join(name)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            if let Some(ino) = line
                .split_whitespace()
                .nth(INODE_COLUMN)
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|i| *i != 0)
            {
                inodes.insert(ino);
            }
        }
    }
    inodes
}

/// Parses a `/proc/<pid>/fd/<n>` link target `socket:[<inode>]`.
fn socket_inode(link: &Path) -> Option<u64> {
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Finds the holder of each inode in `wanted` by reading the fd links of every process under
/// `proc_root`. When several processes share a socket (fork), the lowest pid wins, so the result
/// does not depend on directory order. Processes that vanish or deny access are skipped.
pub fn socket_owners(proc_root: &Path, wanted: &HashSet<u64>) -> HashMap<u64, Owner> {
    let mut found: HashMap<u64, Owner> = HashMap::new();
    if wanted.is_empty() {
        return found;
    }
    let Ok(entries) = fs::read_dir(proc_root) else {
        return found;
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            continue;
        };
        let mut comm: Option<String> = None;
        for fd in fds.flatten() {
            let Some(ino) = fs::read_link(fd.path()).ok().and_then(|l| socket_inode(&l)) else {
                continue;
            };
            if !wanted.contains(&ino) || found.contains_key(&ino) {
                continue;
            }
            let comm = comm
                .get_or_insert_with(|| {
                    fs::read_to_string(dir.join("comm"))
                        .map(|c| c.trim_end_matches('\n').to_string())
                        .unwrap_or_default()
                })
                .clone();
            found.insert(ino, Owner { tgid: pid, comm });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1214 1 000000006f6d311a 100 0 0 10 0\n   1: 0100007F:AC42 0100007F:07E8 01 00000000:00000000 00:00000000 00000000     0        0 24863 1 000000000e6f4918 20 4 1 153 -1\n   2: 0100007F:AC43 0100007F:07E8 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000\n";

    fn fake_proc() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        fs::create_dir_all(p.join("net")).unwrap();
        fs::write(p.join("net/tcp"), TCP).unwrap();
        // Process 300 holds the listener and an unrelated pipe; 200 and 300 share 24863.
        for (pid, comm, links) in [
            (
                300u32,
                "server\n",
                vec![
                    ("3", "socket:[1214]"),
                    ("4", "pipe:[99]"),
                    ("5", "socket:[24863]"),
                ],
            ),
            (
                200,
                "client\n",
                vec![("7", "socket:[24863]"), ("8", "/dev/null")],
            ),
        ] {
            let d = p.join(pid.to_string());
            fs::create_dir_all(d.join("fd")).unwrap();
            fs::write(d.join("comm"), comm).unwrap();
            for (fd, target) in links {
                symlink(target, d.join("fd").join(fd)).unwrap();
            }
        }
        fs::create_dir_all(p.join("self")).unwrap();
        root
    }

    #[test]
    fn lists_inodes_of_tcp_sockets() {
        let root = fake_proc();
        let inodes = tcp_socket_inodes(root.path());
        assert_eq!(inodes, HashSet::from([1214, 24863]));
    }

    #[test]
    fn maps_inodes_to_lowest_pid_holder() {
        let root = fake_proc();
        let owners = socket_owners(root.path(), &tcp_socket_inodes(root.path()));
        assert_eq!(owners.len(), 2);
        assert_eq!(
            owners[&1214],
            Owner {
                tgid: 300,
                comm: "server".into()
            }
        );
        assert_eq!(
            owners[&24863],
            Owner {
                tgid: 200,
                comm: "client".into()
            }
        );
    }

    #[test]
    fn parses_socket_links_only() {
        assert_eq!(socket_inode(Path::new("socket:[42]")), Some(42));
        assert_eq!(socket_inode(Path::new("pipe:[42]")), None);
        assert_eq!(socket_inode(Path::new("socket:[x]")), None);
    }

    #[test]
    fn finds_own_socket_in_real_proc() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inodes = tcp_socket_inodes(Path::new("/proc"));
        let owners = socket_owners(Path::new("/proc"), &inodes);
        let me = std::process::id();
        assert!(
            owners.values().any(|o| o.tgid == me),
            "listener {:?} not attributed to pid {me}",
            listener.local_addr()
        );
    }
}
