//! The tables this probe writes and its run-time control declaration: one definition per table
//! plus [`declaration`], from which `system_infos.meta` is rendered (a test keeps the committed
//! file equal to [`render_meta`]).
//!
//! Upstream's table, entity and field names are kept (reference §6.3, v2023 plus HEAD additions)
//! so existing dashboards keep working; fields we added come after upstream's in each table.
//! Per-period values are gauges holding the change over the last period, computed here from the
//! kernel's counters (upstream convention); only cumulative values of our own fields are
//! counters. Where upstream prints a kernel counter as it stands (`nic.tc_ecn_mark`), so do we,
//! as a gauge. The declarations are `probe_sdk::meta` types, the same
//! the eBPF probes use; this probe's `.meta` writes each field as a block of its own.

use crate::collector::bits;
use probe_sdk::args::DEFAULT_PERIOD_SECS;
use probe_sdk::decl::{self, Declaration, Param, ParamValue, SnooperKind, SubProbe};
use probe_sdk::meta::{self, Field, FieldLayout, Table};

/// `system_cpu`: one row per online CPU plus the all-CPU row `cpu="cpu"`.
pub const SYSTEM_CPU: Table = Table::fixed(
    "system_cpu",
    "cpu",
    &[
        Field::key("cpu", "CPU number, or cpu for the row covering all online CPUs (leave that row out when summing per-CPU series)"),
        Field::gauge("rcu", "RCU softirqs run on this CPU during the last period"),
        Field::gauge("timer", "Timer softirqs run on this CPU during the last period"),
        Field::gauge("sched", "Scheduler softirqs run on this CPU during the last period"),
        Field::gauge("net_rx", "NET_RX (network receive) softirqs run on this CPU during the last period"),
        Field::gauge("user_msec", "Time spent in user mode (guest time included) during the last period, in milliseconds"),
        Field::gauge("nice_msec", "Time spent in user mode at low priority (nice) during the last period, in milliseconds"),
        Field::gauge("system_msec", "Time spent in kernel mode during the last period, in milliseconds"),
        Field::gauge("idle_msec", "Idle time during the last period, in milliseconds"),
        Field::gauge("iowait_msec", "Idle time with I/O outstanding during the last period, in milliseconds"),
        Field::gauge("irq_msec", "Time spent servicing hardware interrupts during the last period, in milliseconds"),
        Field::gauge("softirq_msec", "Time spent servicing softirqs during the last period, in milliseconds"),
        Field::gauge("steal_msec", "Time stolen by the hypervisor for other guests during the last period, in milliseconds"),
        Field::gauge("backlog_drops", "Packets dropped because this CPU's network input backlog was full, during the last period"),
        Field::gauge("rps_count", "Receive packet steering interrupts received by this CPU during the last period"),
        Field::gauge("util_per", "CPU busy percentage over the last period: time neither idle nor in iowait, over all time"),
        Field::gauge("mhz", "Current clock frequency of this CPU in MHz (absent on the all-CPU row and where the kernel does not report it)"),
    ],
);

/// `system_cpu_util`: the machine-wide CPU busy percentage.
pub const SYSTEM_CPU_UTIL: Table = Table::fixed(
    "system_cpu_util",
    "cpu",
    &[
        Field::key("cpu", "Always cpu: the whole machine"),
        Field::gauge(
            "total_used_per",
            "Busy percentage of all online CPUs over the last period",
        ),
    ],
);

/// `system_meminfo`: `/proc/meminfo`.
pub const SYSTEM_MEMINFO: Table = Table::fixed(
    "system_meminfo",
    "mem",
    &[
        Field::key("infos", "Source of the figures: /proc/meminfo"),
        Field::gauge("total_kB", "Usable physical memory (MemTotal), in kB"),
        Field::gauge("free_kB", "Unused physical memory (MemFree), in kB"),
        Field::gauge(
            "available_kB",
            "Memory available for new workloads without swapping (MemAvailable), in kB",
        ),
        Field::gauge(
            "util",
            "Memory use percentage: (MemTotal - MemFree - Buffers - Cached) / MemTotal",
        ),
        Field::gauge(
            "buffers_kB",
            "Memory in block device buffers (Buffers), in kB",
        ),
        Field::gauge("cache_kB", "Memory in the page cache (Cached), in kB"),
        Field::gauge(
            "active_kB",
            "Memory used recently and not reclaimed unless necessary (Active), in kB",
        ),
        Field::gauge(
            "inactive_kB",
            "Memory not used recently, first to be reclaimed (Inactive), in kB",
        ),
        Field::gauge("swap_total_kB", "Total swap space (SwapTotal), in kB"),
        Field::gauge("swap_free_kB", "Unused swap space (SwapFree), in kB"),
        Field::gauge(
            "swap_util",
            "Swap use percentage: (SwapTotal - SwapFree) / SwapTotal, 0 without swap",
        ),
        Field::gauge("slab_kB", "Kernel slab allocations (Slab), in kB"),
        Field::gauge(
            "SReclaimable_kB",
            "Reclaimable part of the slab, such as caches (SReclaimable), in kB",
        ),
        Field::gauge(
            "Unreclaim_kB",
            "Unreclaimable part of the slab (SUnreclaim), in kB",
        ),
        Field::gauge("page_kB", "Memory used by page tables (PageTables), in kB"),
        Field::gauge(
            "vmalloc_kB",
            "Memory allocated by vmalloc (VmallocUsed), in kB",
        ),
        Field::gauge(
            "stack_kB",
            "Memory used by kernel stacks (KernelStack), in kB",
        ),
        Field::gauge(
            "active_anon_kB",
            "Anonymous memory used recently (Active(anon)), in kB",
        ),
        Field::gauge(
            "inactive_anon_kB",
            "Anonymous memory not used recently (Inactive(anon)), in kB",
        ),
        Field::gauge(
            "active_file_kB",
            "File-backed memory used recently (Active(file)), in kB",
        ),
        Field::gauge(
            "inactive_file_kB",
            "File-backed memory not used recently (Inactive(file)), in kB",
        ),
        Field::gauge("mlocked", "Memory locked with mlock (Mlocked), in kB"),
        Field::gauge(
            "big_page_kB",
            "Memory reserved for huge pages (HugePages_Total x Hugepagesize), in kB",
        ),
        Field::gauge("shmem_kB", "Shared memory and tmpfs (Shmem), in kB"),
        Field::gauge(
            "swap_cached_kB",
            "Memory that was swapped out and back in and is still in swap (SwapCached), in kB",
        ),
        Field::gauge(
            "dirty_kB",
            "Memory waiting to be written back to disk (Dirty), in kB",
        ),
        Field::gauge(
            "writeback_kB",
            "Memory being written back to disk (Writeback), in kB",
        ),
        Field::gauge(
            "anon_pages_kB",
            "Anonymous pages mapped into user page tables (AnonPages), in kB",
        ),
        Field::gauge(
            "mapped_kB",
            "Files mapped into memory, such as libraries (Mapped), in kB",
        ),
        Field::gauge(
            "commit_limit_kB",
            "Memory that can be committed under strict overcommit (CommitLimit), in kB",
        ),
        Field::gauge(
            "committed_as_kB",
            "Memory committed by all processes (Committed_AS), in kB",
        ),
    ],
);

/// `system_dentry` (HEAD): `/proc/sys/fs/dentry-state`.
pub const SYSTEM_DENTRY: Table = Table::fixed(
    "system_dentry",
    "mem",
    &[
        Field::key("infos", "Source of the figures: fs.dentry-state"),
        Field::gauge("dentry", "Directory entries allocated in the dentry cache"),
        Field::gauge(
            "unused_dentry",
            "Directory entries in the cache that are not in use",
        ),
        Field::gauge(
            "age_limit",
            "Age in seconds after which unused dentries may be reclaimed when memory is short",
        ),
    ],
);

/// `system_iostat`: per whole disk, computed like `iostat -x`.
pub const SYSTEM_IOSTAT: Table = Table::fixed(
    "system_iostat",
    "disk",
    &[
        Field::key("disk_name", "Block device name (whole disks only, as /sys/block lists them)"),
        Field::gauge("rspeed", "Reads completed per second over the last period (iostat r/s)"),
        Field::gauge("rspeed_kB", "Kilobytes read per second over the last period (iostat rkB/s)"),
        Field::gauge("r_await", "Average time of the reads completed in the last period, queueing included, in ms (iostat r_await)"),
        Field::gauge("rareq", "Average size of the reads completed in the last period, in kB (iostat rareq-sz)"),
        Field::gauge("wspeed", "Writes completed per second over the last period (iostat w/s)"),
        Field::gauge("wspeed_kB", "Kilobytes written per second over the last period (iostat wkB/s)"),
        Field::gauge("w_await", "Average time of the writes completed in the last period, queueing included, in ms (iostat w_await)"),
        Field::gauge("wareq", "Average size of the writes completed in the last period, in kB (iostat wareq-sz)"),
        Field::gauge("aqu", "Average number of requests queued or in service over the last period (iostat aqu-sz)"),
        Field::gauge("util", "Percentage of the last period during which the device had I/O in flight (iostat %util)"),
        Field::gauge("rrqm", "Read requests merged per second over the last period (iostat rrqm/s)"),
        Field::gauge("wrqm", "Write requests merged per second over the last period (iostat wrqm/s)"),
        Field::gauge("dspeed", "Discards completed per second over the last period (iostat d/s)"),
        Field::gauge("dspeed_kB", "Kilobytes discarded per second over the last period (iostat dkB/s)"),
        Field::gauge("d_await", "Average time of the discards completed in the last period, in ms (iostat d_await)"),
        Field::gauge("fspeed", "Flush requests completed per second over the last period (iostat f/s)"),
        Field::gauge("f_await", "Average time of the flushes completed in the last period, in ms (iostat f_await)"),
    ],
);

/// `system_df`: per mounted filesystem, like `df` and `df -i`.
pub const SYSTEM_DF: Table = Table::fixed(
    "system_df",
    "fs",
    &[
        Field::key("MountOn", "Mount point"),
        Field::label("MountStatus", "RW or RO, from the mount options"),
        Field::label("Fsname", "Mounted device or source"),
        Field::label("Fstype", "Filesystem type"),
        Field::label("Inodes", "Total inodes of the filesystem"),
        Field::label("Blocks", "Total size of the filesystem, in 1K blocks"),
        Field::gauge("IUsed", "Inodes in use"),
        Field::gauge("IFree", "Free inodes"),
        Field::gauge(
            "IUsePer",
            "Inode use percentage: IUsed / Inodes (0 for filesystems without an inode limit)",
        ),
        Field::gauge("Used", "Space in use, in kB"),
        Field::gauge(
            "Free",
            "Space available to unprivileged users, in kB (df Avail)",
        ),
        Field::gauge(
            "UsePer",
            "Space use percentage as df computes it: Used / (Used + Free)",
        ),
    ],
);

/// `nic`: per network interface, from `/proc/net/dev`, sysfs and the root qdisc.
pub const NIC: Table = Table::fixed(
    "nic",
    "nic",
    &[
        Field::key("dev_name", "Network interface name"),
        Field::label("status", "UP if the operational state is up, else DOWN"),
        Field::gauge("rx_bytes", "Bytes received during the last period"),
        Field::gauge("rx_packets", "Packets received during the last period"),
        Field::gauge("rx_errs", "Receive errors during the last period"),
        Field::gauge("rx_dropped", "Received packets dropped during the last period"),
        Field::gauge("tx_bytes", "Bytes sent during the last period"),
        Field::gauge("tx_packets", "Packets sent during the last period"),
        Field::gauge("tx_errs", "Transmit errors during the last period"),
        Field::gauge("tx_dropped", "Packets dropped on transmit during the last period"),
        Field::gauge("rxspeed_KB", "Receive rate over the last period, in KiB per second"),
        Field::gauge("txspeed_KB", "Transmit rate over the last period, in KiB per second"),
        Field::gauge("tc_sent_drop", "Packets dropped by the root qdisc during the last period"),
        Field::gauge("tc_sent_overlimits", "Root qdisc overlimit events during the last period"),
        Field::gauge("tc_backlog", "Bytes queued in the root qdisc"),
        Field::gauge("tc_ecn_mark", "Packets ECN-marked by the interface's codel and fq_codel qdiscs since they were created: the running count, as upstream prints it (absent without such a qdisc)"),
        Field::gauge("link_up", "1 if the operational state is up, else 0"),
        Field::gauge("speed_Mbps", "Link speed in Mbit/s as the driver reports it (absent when unknown)"),
    ],
);

/// `system_tcp`: `/proc/net/snmp` Tcp plus a few `/proc/net/netstat` TcpExt counters.
pub const SYSTEM_TCP: Table = Table::fixed(
    "system_tcp",
    "net",
    &[
        Field::key("origin", "Source of the figures: /proc/net/snmp"),
        Field::gauge(
            "tcp_curr_estab",
            "TCP connections currently in ESTABLISHED or CLOSE-WAIT",
        ),
        Field::gauge(
            "tcp_in_segs",
            "TCP segments received during the last period",
        ),
        Field::gauge("tcp_out_segs", "TCP segments sent during the last period"),
        Field::gauge(
            "tcp_retrans_segs",
            "TCP segments retransmitted during the last period",
        ),
        Field::gauge(
            "tcp_in_errs",
            "TCP segments received in error during the last period",
        ),
        Field::gauge(
            "tcp_active_opens",
            "Active TCP opens (connect) during the last period",
        ),
        Field::gauge(
            "tcp_passive_opens",
            "Passive TCP opens (accepted SYN) during the last period",
        ),
        Field::gauge(
            "tcp_attempt_fails",
            "Failed TCP connection attempts during the last period",
        ),
        Field::gauge(
            "tcp_estab_resets",
            "Established TCP connections reset during the last period",
        ),
        Field::gauge("tcp_out_rsts", "TCP resets sent during the last period"),
        Field::gauge(
            "tcp_in_csum_errors",
            "TCP segments with a bad checksum received during the last period",
        ),
        Field::gauge(
            "tcp_retrans_per",
            "Retransmitted segments as a percentage of segments sent, over the last period",
        ),
        Field::gauge(
            "tcp_listen_overflows",
            "Times a listen queue overflowed during the last period (TcpExt ListenOverflows)",
        ),
        Field::gauge(
            "tcp_listen_drops",
            "SYNs dropped at listening sockets during the last period (TcpExt ListenDrops)",
        ),
        Field::gauge(
            "tcp_timeouts",
            "TCP retransmission timeouts during the last period (TcpExt TCPTimeouts)",
        ),
        Field::gauge(
            "tcp_syn_retrans",
            "SYN and SYN-ACK retransmissions during the last period (TcpExt TCPSynRetrans)",
        ),
    ],
);

/// `system_udp`: `/proc/net/snmp` Udp.
pub const SYSTEM_UDP: Table = Table::fixed(
    "system_udp",
    "net",
    &[
        Field::key("origin", "Source of the figures: /proc/net/snmp"),
        Field::gauge(
            "udp_indata_grams",
            "UDP datagrams delivered to sockets during the last period",
        ),
        Field::gauge(
            "udp_outdata_grams",
            "UDP datagrams sent during the last period",
        ),
        Field::gauge(
            "udp_no_ports",
            "UDP datagrams received for a port without a listener during the last period",
        ),
        Field::gauge(
            "udp_in_errors",
            "UDP datagrams that could not be delivered during the last period",
        ),
        Field::gauge(
            "udp_rcvbuf_errors",
            "UDP datagrams dropped because a receive buffer was full during the last period",
        ),
        Field::gauge(
            "udp_sndbuf_errors",
            "UDP datagrams dropped because a send buffer was full during the last period",
        ),
        Field::gauge(
            "udp_in_csum_errors",
            "UDP datagrams with a bad checksum received during the last period",
        ),
    ],
);

/// `system_os`: host facts; the value is always 1.
pub const SYSTEM_OS: Table = Table::fixed(
    "system_os",
    "host",
    &[
        Field::key("os_version", "Operating system, PRETTY_NAME of os-release"),
        Field::label("hostname", "Host name"),
        Field::label("kversion", "Kernel release"),
        Field::label("cpu_num", "Number of CPUs present"),
        Field::label("memory_MB", "Usable physical memory (MemTotal), in MiB"),
        Field::label("ip_addr", "Space-separated local IPv4 and global IPv6 addresses, loopback and link-local excluded"),
        Field::label("host_type", "vm when running under a hypervisor, else pm"),
        Field::label("clock_ticks", "Kernel clock ticks per second (USER_HZ)"),
        Field::label("os_btime", "Boot time, in seconds since the Unix epoch"),
        Field::gauge("value", "Always 1; the labels carry the information"),
        Field::gauge("uptime_secs", "Time since boot, in seconds"),
    ],
);

/// `system_proc`: per process selected by the `-w` whitelist (or `-f` pids).
pub const SYSTEM_PROC: Table = Table::fixed(
    "system_proc",
    "proc",
    &[
        Field::key("tgid", "Process ID"),
        Field::label("pgid", "Process group ID"),
        Field::label("ppid", "Parent process ID"),
        Field::label("comm", "Command name"),
        Field::label("cmdline", "Command line, arguments separated by spaces (first 256 bytes)"),
        Field::label("container_id", "Container short ID (12 hex digits) from the process cgroup path (empty outside containers)"),
        Field::gauge("fd_count", "Open file descriptors"),
        Field::gauge("fd_free_per", "Percentage of the open-files soft limit still available"),
        Field::gauge("rchar_bytes", "Bytes read by read-type system calls during the last period"),
        Field::gauge("wchar_bytes", "Bytes written by write-type system calls during the last period"),
        Field::gauge("syscr_count", "Read-type system calls during the last period"),
        Field::gauge("syscw_count", "Write-type system calls during the last period"),
        Field::gauge("read_bytes", "Bytes fetched from storage during the last period"),
        Field::gauge("write_bytes", "Bytes sent to storage during the last period"),
        Field::gauge("cancelled_write_bytes", "Bytes of page cache whose write-back was cancelled (truncation) during the last period"),
        Field::gauge("shared_clean_size", "Clean pages shared with other processes, in kB"),
        Field::gauge("shared_dirty_size", "Dirty pages shared with other processes, in kB"),
        Field::gauge("private_clean_size", "Clean pages private to the process, in kB"),
        Field::gauge("private_dirty_size", "Dirty pages private to the process, in kB"),
        Field::gauge("referenced_size", "Memory currently marked as referenced or accessed, in kB"),
        Field::gauge("lazyfree_size", "Memory marked MADV_FREE, to be freed under memory pressure, in kB"),
        Field::gauge("swap_data_size", "Anonymous memory swapped out, in kB"),
        Field::gauge("swap_data_pss_size", "Proportional share of swapped-out memory, in kB"),
        Field::gauge("minor_pagefault_count", "Minor page faults (no disk access) during the last period"),
        Field::gauge("major_pagefault_count", "Major page faults (disk access) during the last period"),
        Field::gauge("utime_jiffies", "Clock ticks spent in user mode during the last period"),
        Field::gauge("stime_jiffies", "Clock ticks spent in kernel mode during the last period"),
        Field::gauge("cutime_jiffies", "Clock ticks of waited-for children in user mode during the last period"),
        Field::gauge("cstime_jiffies", "Clock ticks of waited-for children in kernel mode during the last period"),
        Field::gauge("priority", "Scheduling priority as the kernel reports it"),
        Field::gauge("nice", "Nice value, -20 (high priority) to 19 (low)"),
        Field::gauge("num_threads", "Number of threads"),
        Field::gauge("vm_size", "Virtual memory size, in bytes"),
        Field::gauge("pm_size", "Resident set size, in bytes"),
        Field::gauge("pm_util", "Resident set size as a percentage of MemTotal"),
        Field::gauge("cpu", "CPU the process last ran on"),
        Field::gauge("cpu_util", "CPU use over the last period as a percentage of one CPU (top's %CPU)"),
        Field::gauge("cpu_user_util", "User-mode CPU use (guest time excluded) over the last period, percentage of one CPU"),
        Field::gauge("cpu_system_util", "Kernel-mode CPU use over the last period, percentage of one CPU"),
    ],
);

/// `system_infos_stats`: the probe's own accounting.
pub const SELF_STATS: Table = Table::fixed(
    "system_infos_stats",
    "system_infos",
    &[
        Field::key("probe", "Always system_infos"),
        Field::counter(
            "cycles_total",
            "Collection cycles run since the probe started",
        ),
        Field::counter(
            "read_errors_total",
            "Files that could not be read or parsed since the probe started (skipped, not fatal)",
        ),
        Field::counter(
            "vanished_procs_total",
            "Selected processes that exited while being read, since the probe started",
        ),
        Field::gauge(
            "cycle_cpu_us",
            "CPU time the probe spent on its last collection cycle, in microseconds",
        ),
        Field::gauge(
            "procs_selected",
            "Processes selected in the last cycle: by the whitelist (-w) and the pid list (-f), or by the control channel's snoopers",
        ),
    ],
);

/// Every table, in the order records are written each cycle.
pub const TABLES: &[Table] = &[
    SYSTEM_CPU,
    SYSTEM_CPU_UTIL,
    SYSTEM_MEMINFO,
    SYSTEM_DENTRY,
    SYSTEM_TCP,
    SYSTEM_UDP,
    NIC,
    SYSTEM_DF,
    SYSTEM_IOSTAT,
    SYSTEM_PROC,
    SYSTEM_OS,
    SELF_STATS,
];

/// Looks a table up by name.
pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// Upstream's param `name` (reference §5.4). Only constant names are passed, and the
/// declaration test builds every one of them.
fn standard(name: &str) -> Param {
    decl::standard(name).expect("a param name upstream has")
}

/// What `system_infos` declares about its run-time control (REST name `baseinfo`).
///
/// Sub-probes are upstream's baseinfo names on this probe's `-P` bits ([`bits`]):
///
/// | sub-probe | bits | tables |
/// |---|---|---|
/// | `cpu` | 1 | `system_cpu`, `system_cpu_util` |
/// | `mem` | 2 | `system_meminfo`, `system_dentry` |
/// | `nic` | 4 | `nic` |
/// | `net` | 8 | `system_tcp`, `system_udp` |
/// | `disk` | 16 | `system_iostat` |
/// | `fs` | 32 | `system_df` |
/// | `proc` | 64 | `system_proc` |
/// | `host` | 128 | `system_os` |
///
/// `system_infos_stats` is always written. Upstream's `con` (container write rates) has no
/// table here and is not declared, so REST refuses it.
///
/// Params: `report_period` (`-t`, default 5 s), `report_event` (`-l warn`), `res_upper_thr`
/// (`-U`: cpu, memory, swap, filesystem and disk use events), `drops_thr` (`-D`: NIC drop and
/// error events) and `dev_name` (`-d`: the NICs reported). Every snooper kind is honoured: the
/// daemon resolves them to pids, which select the processes of `system_proc`.
pub fn declaration() -> Declaration {
    Declaration {
        rest_name: Some("baseinfo".to_string()),
        reload: true,
        snoopers: SnooperKind::ALL.to_vec(),
        sub_probes: vec![
            SubProbe::new("cpu", bits::CPU),
            SubProbe::new("mem", bits::MEM),
            SubProbe::new("nic", bits::NIC),
            SubProbe::new("net", bits::NET),
            SubProbe::new("disk", bits::DISK),
            SubProbe::new("fs", bits::FS),
            SubProbe::new("proc", bits::PROC),
            SubProbe::new("host", bits::HOST),
        ],
        params: vec![
            standard("report_period").with_default(ParamValue::Int(i64::from(DEFAULT_PERIOD_SECS))),
            standard("report_event"),
            standard("res_upper_thr"),
            standard("drops_thr"),
            standard("dev_name"),
        ],
    }
}

/// Renders the `.meta` file (libconfig syntax): every table, one block per field, then the
/// run-time control declaration (the `probe` group).
pub fn render_meta() -> String {
    format!(
        "{}\n{}",
        meta::render_with(FieldLayout::Block, &[], TABLES),
        declaration().render_meta()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_sdk::meta::FieldKind;

    #[test]
    fn committed_meta_matches_the_definitions() {
        let committed = include_str!("../system_infos.meta");
        assert!(
            committed == render_meta(),
            "system_infos.meta is stale; regenerate with `system_infos --print-meta > system_infos.meta`"
        );
    }

    /// Prometheus-safe names within upstream's 31 bytes, plain descriptions, unique names, and
    /// no metric exported by two tables of one entity.
    #[test]
    fn declarations_keep_upstream_limits() {
        assert_eq!(meta::check(TABLES), Vec::<String>::new());
    }

    #[test]
    fn every_table_starts_with_its_key() {
        for t in TABLES {
            assert_eq!(
                t.fields[0].kind,
                FieldKind::Key,
                "{} must start with its key",
                t.name
            );
        }
    }

    #[test]
    fn declaration_is_valid_and_maps_sub_probes_to_our_bits() {
        let d = declaration();
        d.validate().expect("valid declaration");
        assert_eq!(d.rest_name.as_deref(), Some("baseinfo"));
        assert!(d.reload);
        assert_eq!(d.snoopers, SnooperKind::ALL);
        let names: Vec<&str> = d.sub_probes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["cpu", "mem", "nic", "net", "disk", "fs", "proc", "host"]
        );
        assert!(d.sub_probe("con").is_none(), "no container table here");
        // One bit each, all distinct, covering every table bit of the collector.
        let mut all = 0;
        for s in &d.sub_probes {
            assert_eq!(s.bits.count_ones(), 1, "{}", s.name);
            assert_eq!(all & s.bits, 0, "{} shares a bit", s.name);
            all |= s.bits;
        }
        assert_eq!(all, 0xff);
        assert_eq!(d.sub_probe_bits(&["proc".into()]), Ok(bits::PROC));
        let params: Vec<&str> = d.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            params,
            [
                "report_period",
                "report_event",
                "res_upper_thr",
                "drops_thr",
                "dev_name"
            ]
        );
        assert_eq!(d.defaults()["report_period"], ParamValue::Int(5));
        // The flags are the ones options.rs parses.
        let flags: Vec<Option<char>> = d.params.iter().map(|p| p.flag).collect();
        assert_eq!(
            flags,
            [Some('t'), Some('l'), Some('U'), Some('D'), Some('d')]
        );
    }

    #[test]
    fn meta_carries_the_declaration() {
        let doc =
            gala_libconfig::parse_str(&render_meta(), std::path::Path::new("system_infos.meta"))
                .expect("valid libconfig");
        assert_eq!(Declaration::from_node(&doc), Ok(Some(declaration())));
        assert!(doc.lookup("measurements").is_some());
    }

    #[test]
    fn tables_are_found_by_name() {
        assert_eq!(table("nic"), Some(&NIC));
        assert_eq!(table("system_infos_stats").map(Table::width), Some(6));
        assert_eq!(table("no_such_table"), None);
    }
}
