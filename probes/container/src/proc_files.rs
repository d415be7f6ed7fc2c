//! Parsers of the `/proc` files the probe reads (pure: text in, values out).

/// Lines of `/proc/<pid>/cgroup` looked at (one per hierarchy: about 15 on a real host).
pub const MAX_CGROUP_LINES: usize = 64;

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLine<'a> {
    /// Comma-separated v1 controllers (`cpu,cpuacct`, `name=systemd`); empty for the v2 line.
    pub controllers: &'a str,
    /// The cgroup's path, relative to the root of the reader's cgroup namespace.
    pub path: &'a str,
}

impl CgroupLine<'_> {
    /// Whether this is the v2 (unified) line, `0::/path`.
    pub fn is_unified(&self) -> bool {
        self.controllers.is_empty()
    }

    /// Whether the v1 hierarchy of this line has `controller`.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.split(',').any(|c| c == controller)
    }
}

/// The well-formed lines of `/proc/<pid>/cgroup` (at most [`MAX_CGROUP_LINES`]).
pub fn cgroup_lines(text: &str) -> Vec<CgroupLine<'_>> {
    text.lines()
        .take(MAX_CGROUP_LINES)
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            path.starts_with('/')
                .then_some(CgroupLine { controllers, path })
        })
        .collect()
}

/// `starttime` (field 22, clock ticks since boot) of `/proc/<pid>/stat`. The command name in
/// field 2 may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn stat_starttime(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first word after the name: field 22 is the 20th.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// `btime` (boot time, unix seconds) of `/proc/stat`.
pub fn btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Totals over a network namespace's interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetTotals {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped while sending.
    pub tx_dropped: u64,
    /// Interfaces summed (lo not counted).
    pub interfaces: u32,
}

/// Sums `/proc/<pid>/net/dev` over every interface but `lo`. The two header lines and any line
/// without `name:` and 16 numbers are skipped. Counters wrap at 2^64 (the sum saturates).
pub fn net_dev(text: &str) -> NetTotals {
    let mut t = NetTotals::default();
    for line in text.lines() {
        let Some((name, values)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" || name.contains(['|', ' ']) {
            continue;
        }
        let v: Vec<u64> = values
            .split_ascii_whitespace()
            .map_while(|w| w.parse().ok())
            .collect();
        if v.len() < 16 {
            continue;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop …
        let add = |acc: &mut u64, x: u64| *acc = acc.saturating_add(x);
        add(&mut t.rx_bytes, v[0]);
        add(&mut t.rx_packets, v[1]);
        add(&mut t.rx_errors, v[2]);
        add(&mut t.rx_dropped, v[3]);
        add(&mut t.tx_bytes, v[8]);
        add(&mut t.tx_packets, v[9]);
        add(&mut t.tx_errors, v[10]);
        add(&mut t.tx_dropped, v[11]);
        t.interfaces += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A podman container on a hybrid host (v1 controllers plus the unified line).
    const HYBRID: &str = "9:name=systemd:/libpod_parent/libpod-836451ca\n\
        8:pids:/libpod_parent/libpod-836451ca\n\
        4:memory:/libpod_parent/libpod-836451ca\n\
        2:cpu,cpuacct:/libpod_parent/libpod-836451ca\n\
        0::/libpod_parent/libpod-836451ca\n";

    #[test]
    fn cgroup_lines_of_hybrid_and_v2() {
        let lines = cgroup_lines(HYBRID);
        assert_eq!(lines.len(), 5);
        assert!(lines[3].has("cpu") && lines[3].has("cpuacct") && !lines[3].has("cpuset"));
        assert!(lines[4].is_unified());
        assert!(!lines[0].has("systemd"), "name=systemd is not a controller");
        let v2 = cgroup_lines("0::/system.slice/docker-abc.scope\n");
        assert_eq!(
            v2,
            [CgroupLine {
                controllers: "",
                path: "/system.slice/docker-abc.scope"
            }]
        );
        // A path may contain ':'; lines without a path are skipped.
        assert_eq!(
            cgroup_lines("1:cpu:/a:b\nbroken\n2:memory:\n")[0].path,
            "/a:b"
        );
        assert_eq!(cgroup_lines("1:cpu:/a:b\nbroken\n2:memory:\n").len(), 1);
    }

    #[test]
    fn starttime_after_a_hostile_comm() {
        let stat = "4242 (we ird) (x) S 1 4242 4242 0 -1 4194560 97 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 2273280 104 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0";
        assert_eq!(stat_starttime(stat), Some(987_654));
        assert_eq!(stat_starttime("1 (init) S 0"), None);
        assert_eq!(stat_starttime("no paren"), None);
    }

    #[test]
    fn btime_of_proc_stat() {
        let stat =
            "cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 1 2 3\nctxt 9\nbtime 1796300091\nprocesses 5\n";
        assert_eq!(btime(stat), Some(1_796_300_091));
        assert_eq!(btime("cpu 1\n"), None);
    }

    #[test]
    fn net_dev_sums_all_but_lo() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:  329530   10699    0    0    0     0          0         0   329530   10699    0    0    0     0       0          0\n  \
eth0: 1000 10 1 2 0 0 0 0 2000 20 3 4 0 0 0 0\n\
veth9:5 1 0 0 0 0 0 0 7 1 0 1 0 0 0 0\n";
        assert_eq!(
            net_dev(text),
            NetTotals {
                rx_bytes: 1005,
                rx_packets: 11,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 2007,
                tx_packets: 21,
                tx_errors: 3,
                tx_dropped: 5,
                interfaces: 2,
            }
        );
        // Only lo (a container with --network none): zero interfaces, zero totals.
        let lo_only = "Inter-|\n face |\n    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n";
        assert_eq!(net_dev(lo_only), NetTotals::default());
    }
}
