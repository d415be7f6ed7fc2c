//! The tables this probe writes: one definition per table, from which `system_infos.meta` is
//! rendered (a test keeps the committed file equal to [`render_meta`]).
//!
//! Upstream's table, entity and field names are kept (reference §6.3, v2023 plus HEAD additions)
//! so existing dashboards keep working; fields we added come after upstream's in each table.
//! Per-period values are gauges holding the change over the last period (upstream convention);
//! only cumulative values are counters.

/// How the daemon treats a field (the `.meta` `type`): the contract's kinds. This probe writes
/// keys, labels, gauges (also every per-period delta) and counters (cumulative values).
pub use record_line::FieldKind;

/// One field of a table, in record order.
#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    /// Field name: label name or metric suffix (`gala_gopher_<entity>_<name>`).
    pub name: &'static str,
    /// Field type.
    pub kind: FieldKind,
    /// Description, exported as the metric's HELP text.
    pub help: &'static str,
}

/// One table: record lines start with `|<table>|`.
#[derive(Debug, Clone, Copy)]
pub struct TableDef {
    /// Table name, the first token of a record line.
    pub table: &'static str,
    /// Entity name, the Prometheus metric prefix.
    pub entity: &'static str,
    /// Fields in record order.
    pub fields: &'static [FieldDef],
}

impl TableDef {
    /// Number of values a record of this table carries.
    pub fn width(&self) -> usize {
        self.fields.len()
    }
}

const fn key(name: &'static str, help: &'static str) -> FieldDef {
    FieldDef {
        name,
        kind: FieldKind::Key,
        help,
    }
}
const fn label(name: &'static str, help: &'static str) -> FieldDef {
    FieldDef {
        name,
        kind: FieldKind::Label,
        help,
    }
}
const fn gauge(name: &'static str, help: &'static str) -> FieldDef {
    FieldDef {
        name,
        kind: FieldKind::Gauge,
        help,
    }
}
const fn counter(name: &'static str, help: &'static str) -> FieldDef {
    FieldDef {
        name,
        kind: FieldKind::Counter,
        help,
    }
}

/// `system_cpu`: one row per online CPU plus the all-CPU row `cpu="cpu"`.
pub const SYSTEM_CPU: TableDef = TableDef {
    table: "system_cpu",
    entity: "cpu",
    fields: &[
        key("cpu", "CPU number, or cpu for the row covering all online CPUs (leave that row out when summing per-CPU series)"),
        gauge("rcu", "RCU softirqs run on this CPU during the last period"),
        gauge("timer", "Timer softirqs run on this CPU during the last period"),
        gauge("sched", "Scheduler softirqs run on this CPU during the last period"),
        gauge("net_rx", "NET_RX (network receive) softirqs run on this CPU during the last period"),
        gauge("user_msec", "Time spent in user mode (guest time included) during the last period, in milliseconds"),
        gauge("nice_msec", "Time spent in user mode at low priority (nice) during the last period, in milliseconds"),
        gauge("system_msec", "Time spent in kernel mode during the last period, in milliseconds"),
        gauge("idle_msec", "Idle time during the last period, in milliseconds"),
        gauge("iowait_msec", "Idle time with I/O outstanding during the last period, in milliseconds"),
        gauge("irq_msec", "Time spent servicing hardware interrupts during the last period, in milliseconds"),
        gauge("softirq_msec", "Time spent servicing softirqs during the last period, in milliseconds"),
        gauge("steal_msec", "Time stolen by the hypervisor for other guests during the last period, in milliseconds"),
        gauge("backlog_drops", "Packets dropped because this CPU's network input backlog was full, during the last period"),
        gauge("rps_count", "Receive packet steering interrupts received by this CPU during the last period"),
        gauge("util_per", "CPU busy percentage over the last period: time neither idle nor in iowait, over all time"),
        gauge("mhz", "Current clock frequency of this CPU in MHz (absent on the all-CPU row and where the kernel does not report it)"),
    ],
};

/// `system_cpu_util`: the machine-wide CPU busy percentage.
pub const SYSTEM_CPU_UTIL: TableDef = TableDef {
    table: "system_cpu_util",
    entity: "cpu",
    fields: &[
        key("cpu", "Always cpu: the whole machine"),
        gauge(
            "total_used_per",
            "Busy percentage of all online CPUs over the last period",
        ),
    ],
};

/// `system_meminfo`: `/proc/meminfo`.
pub const SYSTEM_MEMINFO: TableDef = TableDef {
    table: "system_meminfo",
    entity: "mem",
    fields: &[
        key("infos", "Source of the figures: /proc/meminfo"),
        gauge("total_kB", "Usable physical memory (MemTotal), in kB"),
        gauge("free_kB", "Unused physical memory (MemFree), in kB"),
        gauge(
            "available_kB",
            "Memory available for new workloads without swapping (MemAvailable), in kB",
        ),
        gauge(
            "util",
            "Memory use percentage: (MemTotal - MemFree - Buffers - Cached) / MemTotal",
        ),
        gauge(
            "buffers_kB",
            "Memory in block device buffers (Buffers), in kB",
        ),
        gauge("cache_kB", "Memory in the page cache (Cached), in kB"),
        gauge(
            "active_kB",
            "Memory used recently and not reclaimed unless necessary (Active), in kB",
        ),
        gauge(
            "inactive_kB",
            "Memory not used recently, first to be reclaimed (Inactive), in kB",
        ),
        gauge("swap_total_kB", "Total swap space (SwapTotal), in kB"),
        gauge("swap_free_kB", "Unused swap space (SwapFree), in kB"),
        gauge(
            "swap_util",
            "Swap use percentage: (SwapTotal - SwapFree) / SwapTotal, 0 without swap",
        ),
        gauge("slab_kB", "Kernel slab allocations (Slab), in kB"),
        gauge(
            "SReclaimable_kB",
            "Reclaimable part of the slab, such as caches (SReclaimable), in kB",
        ),
        gauge(
            "Unreclaim_kB",
            "Unreclaimable part of the slab (SUnreclaim), in kB",
        ),
        gauge("page_kB", "Memory used by page tables (PageTables), in kB"),
        gauge(
            "vmalloc_kB",
            "Memory allocated by vmalloc (VmallocUsed), in kB",
        ),
        gauge(
            "stack_kB",
            "Memory used by kernel stacks (KernelStack), in kB",
        ),
        gauge(
            "active_anon_kB",
            "Anonymous memory used recently (Active(anon)), in kB",
        ),
        gauge(
            "inactive_anon_kB",
            "Anonymous memory not used recently (Inactive(anon)), in kB",
        ),
        gauge(
            "active_file_kB",
            "File-backed memory used recently (Active(file)), in kB",
        ),
        gauge(
            "inactive_file_kB",
            "File-backed memory not used recently (Inactive(file)), in kB",
        ),
        gauge("mlocked", "Memory locked with mlock (Mlocked), in kB"),
        gauge(
            "big_page_kB",
            "Memory reserved for huge pages (HugePages_Total x Hugepagesize), in kB",
        ),
        gauge("shmem_kB", "Shared memory and tmpfs (Shmem), in kB"),
        gauge(
            "swap_cached_kB",
            "Memory that was swapped out and back in and is still in swap (SwapCached), in kB",
        ),
        gauge(
            "dirty_kB",
            "Memory waiting to be written back to disk (Dirty), in kB",
        ),
        gauge(
            "writeback_kB",
            "Memory being written back to disk (Writeback), in kB",
        ),
        gauge(
            "anon_pages_kB",
            "Anonymous pages mapped into user page tables (AnonPages), in kB",
        ),
        gauge(
            "mapped_kB",
            "Files mapped into memory, such as libraries (Mapped), in kB",
        ),
        gauge(
            "commit_limit_kB",
            "Memory that can be committed under strict overcommit (CommitLimit), in kB",
        ),
        gauge(
            "committed_as_kB",
            "Memory committed by all processes (Committed_AS), in kB",
        ),
    ],
};

/// `system_dentry` (HEAD): `/proc/sys/fs/dentry-state`.
pub const SYSTEM_DENTRY: TableDef = TableDef {
    table: "system_dentry",
    entity: "mem",
    fields: &[
        key("infos", "Source of the figures: fs.dentry-state"),
        gauge("dentry", "Directory entries allocated in the dentry cache"),
        gauge(
            "unused_dentry",
            "Directory entries in the cache that are not in use",
        ),
        gauge(
            "age_limit",
            "Age in seconds after which unused dentries may be reclaimed when memory is short",
        ),
    ],
};

/// `system_iostat`: per whole disk, computed like `iostat -x`.
pub const SYSTEM_IOSTAT: TableDef = TableDef {
    table: "system_iostat",
    entity: "disk",
    fields: &[
        key("disk_name", "Block device name (whole disks only, as /sys/block lists them)"),
        gauge("rspeed", "Reads completed per second over the last period (iostat r/s)"),
        gauge("rspeed_kB", "Kilobytes read per second over the last period (iostat rkB/s)"),
        gauge("r_await", "Average time of the reads completed in the last period, queueing included, in ms (iostat r_await)"),
        gauge("rareq", "Average size of the reads completed in the last period, in kB (iostat rareq-sz)"),
        gauge("wspeed", "Writes completed per second over the last period (iostat w/s)"),
        gauge("wspeed_kB", "Kilobytes written per second over the last period (iostat wkB/s)"),
        gauge("w_await", "Average time of the writes completed in the last period, queueing included, in ms (iostat w_await)"),
        gauge("wareq", "Average size of the writes completed in the last period, in kB (iostat wareq-sz)"),
        gauge("aqu", "Average number of requests queued or in service over the last period (iostat aqu-sz)"),
        gauge("util", "Percentage of the last period during which the device had I/O in flight (iostat %util)"),
        gauge("rrqm", "Read requests merged per second over the last period (iostat rrqm/s)"),
        gauge("wrqm", "Write requests merged per second over the last period (iostat wrqm/s)"),
        gauge("dspeed", "Discards completed per second over the last period (iostat d/s)"),
        gauge("dspeed_kB", "Kilobytes discarded per second over the last period (iostat dkB/s)"),
        gauge("d_await", "Average time of the discards completed in the last period, in ms (iostat d_await)"),
        gauge("fspeed", "Flush requests completed per second over the last period (iostat f/s)"),
        gauge("f_await", "Average time of the flushes completed in the last period, in ms (iostat f_await)"),
    ],
};

/// `system_df`: per mounted filesystem, like `df` and `df -i`.
pub const SYSTEM_DF: TableDef = TableDef {
    table: "system_df",
    entity: "fs",
    fields: &[
        key("MountOn", "Mount point"),
        label("MountStatus", "RW or RO, from the mount options"),
        label("Fsname", "Mounted device or source"),
        label("Fstype", "Filesystem type"),
        label("Inodes", "Total inodes of the filesystem"),
        label("Blocks", "Total size of the filesystem, in 1K blocks"),
        gauge("IUsed", "Inodes in use"),
        gauge("IFree", "Free inodes"),
        gauge(
            "IUsePer",
            "Inode use percentage: IUsed / Inodes (0 for filesystems without an inode limit)",
        ),
        gauge("Used", "Space in use, in kB"),
        gauge(
            "Free",
            "Space available to unprivileged users, in kB (df Avail)",
        ),
        gauge(
            "UsePer",
            "Space use percentage as df computes it: Used / (Used + Free)",
        ),
    ],
};

/// `nic`: per network interface, from `/proc/net/dev`, sysfs and the root qdisc.
pub const NIC: TableDef = TableDef {
    table: "nic",
    entity: "nic",
    fields: &[
        key("dev_name", "Network interface name"),
        label("status", "UP if the operational state is up, else DOWN"),
        gauge("rx_bytes", "Bytes received during the last period"),
        gauge("rx_packets", "Packets received during the last period"),
        gauge("rx_errs", "Receive errors during the last period"),
        gauge("rx_dropped", "Received packets dropped during the last period"),
        gauge("tx_bytes", "Bytes sent during the last period"),
        gauge("tx_packets", "Packets sent during the last period"),
        gauge("tx_errs", "Transmit errors during the last period"),
        gauge("tx_dropped", "Packets dropped on transmit during the last period"),
        gauge("rxspeed_KB", "Receive rate over the last period, in KiB per second"),
        gauge("txspeed_KB", "Transmit rate over the last period, in KiB per second"),
        gauge("tc_sent_drop", "Packets dropped by the root qdisc during the last period"),
        gauge("tc_sent_overlimits", "Root qdisc overlimit events during the last period"),
        gauge("tc_backlog", "Bytes queued in the root qdisc"),
        gauge("tc_ecn_mark", "Packets ECN-marked by the root qdisc during the last period (qdiscs reporting ecn_mark only)"),
        gauge("link_up", "1 if the operational state is up, else 0"),
        gauge("speed_Mbps", "Link speed in Mbit/s as the driver reports it (absent when unknown)"),
    ],
};

/// `system_tcp`: `/proc/net/snmp` Tcp plus a few `/proc/net/netstat` TcpExt counters.
pub const SYSTEM_TCP: TableDef = TableDef {
    table: "system_tcp",
    entity: "net",
    fields: &[
        key("origin", "Source of the figures: /proc/net/snmp"),
        gauge(
            "tcp_curr_estab",
            "TCP connections currently in ESTABLISHED or CLOSE-WAIT",
        ),
        gauge(
            "tcp_in_segs",
            "TCP segments received during the last period",
        ),
        gauge("tcp_out_segs", "TCP segments sent during the last period"),
        gauge(
            "tcp_retrans_segs",
            "TCP segments retransmitted during the last period",
        ),
        gauge(
            "tcp_in_errs",
            "TCP segments received in error during the last period",
        ),
        gauge(
            "tcp_active_opens",
            "Active TCP opens (connect) during the last period",
        ),
        gauge(
            "tcp_passive_opens",
            "Passive TCP opens (accepted SYN) during the last period",
        ),
        gauge(
            "tcp_attempt_fails",
            "Failed TCP connection attempts during the last period",
        ),
        gauge(
            "tcp_estab_resets",
            "Established TCP connections reset during the last period",
        ),
        gauge("tcp_out_rsts", "TCP resets sent during the last period"),
        gauge(
            "tcp_in_csum_errors",
            "TCP segments with a bad checksum received during the last period",
        ),
        gauge(
            "tcp_retrans_per",
            "Retransmitted segments as a percentage of segments sent, over the last period",
        ),
        gauge(
            "tcp_listen_overflows",
            "Times a listen queue overflowed during the last period (TcpExt ListenOverflows)",
        ),
        gauge(
            "tcp_listen_drops",
            "SYNs dropped at listening sockets during the last period (TcpExt ListenDrops)",
        ),
        gauge(
            "tcp_timeouts",
            "TCP retransmission timeouts during the last period (TcpExt TCPTimeouts)",
        ),
        gauge(
            "tcp_syn_retrans",
            "SYN and SYN-ACK retransmissions during the last period (TcpExt TCPSynRetrans)",
        ),
    ],
};

/// `system_udp`: `/proc/net/snmp` Udp.
pub const SYSTEM_UDP: TableDef = TableDef {
    table: "system_udp",
    entity: "net",
    fields: &[
        key("origin", "Source of the figures: /proc/net/snmp"),
        gauge(
            "udp_indata_grams",
            "UDP datagrams delivered to sockets during the last period",
        ),
        gauge(
            "udp_outdata_grams",
            "UDP datagrams sent during the last period",
        ),
        gauge(
            "udp_no_ports",
            "UDP datagrams received for a port without a listener during the last period",
        ),
        gauge(
            "udp_in_errors",
            "UDP datagrams that could not be delivered during the last period",
        ),
        gauge(
            "udp_rcvbuf_errors",
            "UDP datagrams dropped because a receive buffer was full during the last period",
        ),
        gauge(
            "udp_sndbuf_errors",
            "UDP datagrams dropped because a send buffer was full during the last period",
        ),
        gauge(
            "udp_in_csum_errors",
            "UDP datagrams with a bad checksum received during the last period",
        ),
    ],
};

/// `system_os`: host facts; the value is always 1.
pub const SYSTEM_OS: TableDef = TableDef {
    table: "system_os",
    entity: "host",
    fields: &[
        key("os_version", "Operating system, PRETTY_NAME of os-release"),
        label("hostname", "Host name"),
        label("kversion", "Kernel release"),
        label("cpu_num", "Number of CPUs present"),
        label("memory_MB", "Usable physical memory (MemTotal), in MiB"),
        label("ip_addr", "Space-separated local IPv4 and global IPv6 addresses, loopback and link-local excluded"),
        label("host_type", "vm when running under a hypervisor, else pm"),
        label("clock_ticks", "Kernel clock ticks per second (USER_HZ)"),
        label("os_btime", "Boot time, in seconds since the Unix epoch"),
        gauge("value", "Always 1; the labels carry the information"),
        gauge("uptime_secs", "Time since boot, in seconds"),
    ],
};

/// `system_proc`: per process selected by the `-w` whitelist (or `-f` pids).
pub const SYSTEM_PROC: TableDef = TableDef {
    table: "system_proc",
    entity: "proc",
    fields: &[
        key("tgid", "Process ID"),
        label("pgid", "Process group ID"),
        label("ppid", "Parent process ID"),
        label("comm", "Command name"),
        label("cmdline", "Command line, arguments separated by spaces (first 256 bytes)"),
        label("container_id", "Container ID from the process cgroup path (empty outside containers)"),
        gauge("fd_count", "Open file descriptors"),
        gauge("fd_free_per", "Percentage of the open-files soft limit still available"),
        gauge("rchar_bytes", "Bytes read by read-type system calls during the last period"),
        gauge("wchar_bytes", "Bytes written by write-type system calls during the last period"),
        gauge("syscr_count", "Read-type system calls during the last period"),
        gauge("syscw_count", "Write-type system calls during the last period"),
        gauge("read_bytes", "Bytes fetched from storage during the last period"),
        gauge("write_bytes", "Bytes sent to storage during the last period"),
        gauge("cancelled_write_bytes", "Bytes of page cache whose write-back was cancelled (truncation) during the last period"),
        gauge("shared_clean_size", "Clean pages shared with other processes, in kB"),
        gauge("shared_dirty_size", "Dirty pages shared with other processes, in kB"),
        gauge("private_clean_size", "Clean pages private to the process, in kB"),
        gauge("private_dirty_size", "Dirty pages private to the process, in kB"),
        gauge("referenced_size", "Memory currently marked as referenced or accessed, in kB"),
        gauge("lazyfree_size", "Memory marked MADV_FREE, to be freed under memory pressure, in kB"),
        gauge("swap_data_size", "Anonymous memory swapped out, in kB"),
        gauge("swap_data_pss_size", "Proportional share of swapped-out memory, in kB"),
        gauge("minor_pagefault_count", "Minor page faults (no disk access) during the last period"),
        gauge("major_pagefault_count", "Major page faults (disk access) during the last period"),
        gauge("utime_jiffies", "Clock ticks spent in user mode during the last period"),
        gauge("stime_jiffies", "Clock ticks spent in kernel mode during the last period"),
        gauge("cutime_jiffies", "Clock ticks of waited-for children in user mode during the last period"),
        gauge("cstime_jiffies", "Clock ticks of waited-for children in kernel mode during the last period"),
        gauge("priority", "Scheduling priority as the kernel reports it"),
        gauge("nice", "Nice value, -20 (high priority) to 19 (low)"),
        gauge("num_threads", "Number of threads"),
        gauge("vm_size", "Virtual memory size, in bytes"),
        gauge("pm_size", "Resident set size, in bytes"),
        gauge("pm_util", "Resident set size as a percentage of MemTotal"),
        gauge("cpu", "CPU the process last ran on"),
        gauge("cpu_util", "CPU use over the last period as a percentage of one CPU (top's %CPU)"),
        gauge("cpu_user_util", "User-mode CPU use (guest time excluded) over the last period, percentage of one CPU"),
        gauge("cpu_system_util", "Kernel-mode CPU use over the last period, percentage of one CPU"),
    ],
};

/// `system_infos_stats`: the probe's own accounting.
pub const SELF_STATS: TableDef = TableDef {
    table: "system_infos_stats",
    entity: "system_infos",
    fields: &[
        key("probe", "Always system_infos"),
        counter(
            "cycles_total",
            "Collection cycles run since the probe started",
        ),
        counter(
            "read_errors_total",
            "Files that could not be read or parsed since the probe started (skipped, not fatal)",
        ),
        counter(
            "vanished_procs_total",
            "Selected processes that exited while being read, since the probe started",
        ),
        gauge(
            "cycle_cpu_us",
            "CPU time the probe spent on its last collection cycle, in microseconds",
        ),
        gauge(
            "procs_selected",
            "Processes selected by the whitelist (-w) and the pid list (-f) in the last cycle",
        ),
    ],
};

/// Every table, in the order records are written each cycle.
pub const TABLES: &[&TableDef] = &[
    &SYSTEM_CPU,
    &SYSTEM_CPU_UTIL,
    &SYSTEM_MEMINFO,
    &SYSTEM_DENTRY,
    &SYSTEM_TCP,
    &SYSTEM_UDP,
    &NIC,
    &SYSTEM_DF,
    &SYSTEM_IOSTAT,
    &SYSTEM_PROC,
    &SYSTEM_OS,
    &SELF_STATS,
];

/// Looks a table up by name.
pub fn table(name: &str) -> Option<&'static TableDef> {
    TABLES.iter().copied().find(|t| t.table == name)
}

/// Renders the `.meta` file (libconfig syntax) describing every table.
pub fn render_meta() -> String {
    let mut out = String::from("version = \"1.0.0\"\n\nmeasurements:\n(\n");
    for (ti, t) in TABLES.iter().enumerate() {
        out.push_str("    {\n");
        out.push_str(&format!("        table_name: \"{}\",\n", t.table));
        out.push_str(&format!("        entity_name: \"{}\",\n", t.entity));
        out.push_str("        fields:\n        (\n");
        for (fi, f) in t.fields.iter().enumerate() {
            out.push_str("            {\n");
            out.push_str(&format!("                description: \"{}\",\n", f.help));
            out.push_str(&format!("                type: \"{}\",\n", f.kind.as_str()));
            out.push_str(&format!("                name: \"{}\",\n", f.name));
            out.push_str(if fi + 1 < t.fields.len() {
                "            },\n"
            } else {
                "            }\n"
            });
        }
        out.push_str("        )\n");
        out.push_str(if ti + 1 < TABLES.len() {
            "    },\n"
        } else {
            "    }\n"
        });
    }
    out.push_str(")\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_prometheus_name(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    #[test]
    fn committed_meta_matches_the_definitions() {
        let committed = include_str!("../system_infos.meta");
        assert!(
            committed == render_meta(),
            "system_infos.meta is stale; regenerate with `system_infos --print-meta > system_infos.meta`"
        );
    }

    #[test]
    fn names_are_valid_prometheus_identifiers_and_help_is_plain() {
        for t in TABLES {
            assert!(is_prometheus_name(t.entity), "{}", t.entity);
            assert!(t.table.len() < 32, "{} too long for upstream", t.table);
            let mut seen = std::collections::HashSet::new();
            for f in t.fields {
                assert!(is_prometheus_name(f.name), "{}.{}", t.table, f.name);
                // Upstream truncates names to 31 characters.
                assert!(f.name.len() <= 31, "{}.{}", t.table, f.name);
                assert!(seen.insert(f.name), "duplicate {}.{}", t.table, f.name);
                assert!(
                    !f.help.is_empty() && f.help.len() <= 255,
                    "{}.{}",
                    t.table,
                    f.name
                );
                assert!(!f.help.contains('\n'), "{}.{}", t.table, f.name);
            }
            assert_eq!(
                t.fields[0].kind,
                FieldKind::Key,
                "{} must start with its key",
                t.table
            );
        }
    }

    #[test]
    fn tables_sharing_an_entity_do_not_share_metric_names() {
        let mut seen = std::collections::HashMap::new();
        for t in TABLES {
            for f in t
                .fields
                .iter()
                .filter(|f| matches!(f.kind, FieldKind::Gauge | FieldKind::Counter))
            {
                let metric = format!("{}_{}", t.entity, f.name);
                if let Some(other) = seen.insert(metric.clone(), t.table) {
                    panic!("{metric} exported by both {other} and {}", t.table);
                }
            }
        }
    }
}
