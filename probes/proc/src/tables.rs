//! The tables taskprobe prints, declared once: `taskprobe.meta` is generated from
//! [`meta_tables`] (a test keeps the committed file equal to [`meta_text`]), and
//! [`crate::report`] writes the records from the same declarations.

use probe_sdk::args::DEFAULT_PERIOD_SECS;
use probe_sdk::bpf;
use probe_sdk::decl::{self, Declaration, ParamValue, SnooperKind, SubProbe};
use probe_sdk::meta::{self, Field, Table};

use crate::hooks::{
    BIT_DNS, BIT_EXT4, BIT_FORK_SYSCALL, BIT_IO, BIT_IOCTL, BIT_IO_SYSCALL, BIT_NET_SYSCALL,
    BIT_OVERLAY, BIT_PAGE, BIT_PYGC, BIT_SCHED_SYSCALL, BIT_SYSCALL, BIT_THREAD, BIT_THREAD_CPU,
    BIT_TMPFS,
};
use crate::syscalls::SlowCol;

/// Entity of every process table.
pub const ENTITY: &str = "proc";
/// Syscall counts and failures.
pub const SYSCALL: &str = "proc_syscall";
/// Fork, thread, exec and exit counts.
pub const LIFECYCLE: &str = "proc_lifecycle";
/// Block IO issued by the process.
pub const IO: &str = "proc_io";
/// Off-CPU and IO-wait time.
pub const CPU: &str = "proc_cpu";
/// Page-cache activity and reclaim time (upstream's `proc_page`).
pub const PAGE: &str = "proc_page";
/// The longest ioctl (upstream HEAD's `proc_syscall_ioctl`).
pub const IOCTL: &str = "proc_syscall_ioctl";
/// Python garbage collections (upstream HEAD's `proc_pygc`).
pub const PYGC: &str = "proc_pygc";
/// DNS lookups per process and domain (upstream HEAD's `proc_dns`).
pub const DNS: &str = "proc_dns";
/// Entity of [`DNS`] (upstream's).
pub const DNS_ENTITY: &str = "dns";
/// Per-thread off-CPU time and migrations (v2023's `thread_cpu`).
pub const THREAD: &str = "thread_cpu";
/// Entity of [`THREAD`] (v2023's).
pub const THREAD_ENTITY: &str = "thread";
/// Loss counters of the BPF side.
pub const STATS_TABLE: &str = "proc_bpf_stats";
/// Value of the `probe` key in [`STATS_TABLE`].
pub const STATS_PROBE: &str = "proc";

/// The comment at the top of `taskprobe.meta`.
const HEADER: &[&str] = &[
    "taskprobe: per-process syscalls (opt-in, -P 1), the longest slow syscalls and file-system",
    "operations (ext4, overlay, tmpfs), fork/exec/exit, off-CPU time and block IO, from tp_btf",
    "programs aggregated in BPF maps. One row per tracked process (key tgid, label comm) and table",
    "every period while the process lives, and one final row after it exited",
    "(proc_lifecycle.exited = 1). Upstream's per-period counts and times are running totals here",
    "(period delta: the daemon exports their change per period); ns_* and bio_latency are maxima of",
    "the period. Details: docs/probes/proc.md.",
];

/// The key and the label every process table starts with.
pub const PROC_FIELDS: &[Field] = &[
    Field::key("tgid", "ID of the process (thread group)"),
    Field::label("comm", "comm of the process"),
];

/// `proc_syscall` after the process fields.
pub const SYSCALL_FIELDS: &[Field] = &[
    Field::per_period(
        "syscall_failed",
        "Syscalls that returned an error (-4095..-1), per period",
    ),
    Field::counter(
        "syscall_count",
        "Syscalls that returned, cumulative since the process began to be tracked",
    ),
];

/// A table of time spent in slow syscalls: its columns in record order, each with its field.
#[derive(Debug)]
pub struct SlowTable {
    /// Table name.
    pub name: &'static str,
    /// Columns after the process fields.
    pub columns: &'static [(SlowCol, Field)],
}

/// A slow-syscall column's field (upstream: the longest call of the period, in ns): `what`
/// names the syscalls that count for it.
macro_rules! slow {
    ($col:ident, $name:literal, $what:literal) => {
        (
            SlowCol::$col,
            Field::gauge(
                $name,
                concat!(
                    "Longest single ",
                    $what,
                    " call in the period, ns: entry to exit with -S exact, by default the longest blocked (switched-out) stretch inside one; 0 without any"
                ),
            ),
        )
    };
}

/// The slow-syscall tables, in output order (`-P` bits 2, 4, 8, 16).
pub const SLOW_TABLES: [SlowTable; 4] = [
    SlowTable {
        name: "proc_syscall_io",
        columns: &[
            slow!(Mount, "ns_mount", "mount"),
            slow!(Umount, "ns_umount", "umount2"),
            slow!(Read, "ns_read", "read, readv, pread64, preadv, preadv2"),
            slow!(
                Write,
                "ns_write",
                "write, writev, pwrite64, pwritev, pwritev2"
            ),
            slow!(Fsync, "ns_fsync", "fsync, fdatasync"),
        ],
    },
    SlowTable {
        name: "proc_syscall_net",
        columns: &[
            slow!(Sendmsg, "ns_sendmsg", "sendmsg, sendmmsg, sendto"),
            slow!(Recvmsg, "ns_recvmsg", "recvmsg, recvmmsg, recvfrom"),
        ],
    },
    SlowTable {
        name: "proc_syscall_sched",
        columns: &[
            slow!(SchedYield, "ns_sched_yield", "sched_yield"),
            slow!(Futex, "ns_futex", "futex, futex_waitv"),
            slow!(EpollWait, "ns_epoll_wait", "epoll_wait"),
            slow!(EpollPwait, "ns_epoll_pwait", "epoll_pwait, epoll_pwait2"),
        ],
    },
    SlowTable {
        name: "proc_syscall_fork",
        columns: &[
            slow!(Fork, "ns_fork", "fork"),
            slow!(Vfork, "ns_vfork", "vfork"),
            slow!(Clone, "ns_clone", "clone, clone3"),
        ],
    },
];

/// A file system's table (upstream `proc_ext4`, `proc_overlay`, `proc_tmpfs`).
#[derive(Debug)]
pub struct FsTable {
    /// Table name.
    pub name: &'static str,
    /// Fields after the process fields: the longest read, write, open and flush of the period
    /// (upstream's), then the operations timed (running totals, ours).
    pub fields: &'static [Field],
}

/// The fields of file system `$fs` (as it appears in the names) called `$what` in descriptions.
macro_rules! fs_fields {
    ($fs:literal, $what:literal) => {
        &[
            fs_max!($fs, "read", $what, "read, readv, pread64, preadv, preadv2"),
            fs_max!(
                $fs,
                "write",
                $what,
                "write, writev, pwrite64, pwritev, pwritev2"
            ),
            fs_max!($fs, "open", $what, "open, openat, openat2, creat"),
            fs_max!($fs, "flush", $what, "fsync, fdatasync"),
            fs_count!($fs, "read", $what),
            fs_count!($fs, "write", $what),
            fs_count!($fs, "open", $what),
            fs_count!($fs, "flush", $what),
        ]
    };
}

/// `ns_<fs>_<op>`: upstream's name and meaning (the longest operation of the period).
macro_rules! fs_max {
    ($fs:literal, $op:literal, $what:literal, $calls:literal) => {
        Field::gauge(
            concat!("ns_", $fs, "_", $op),
            concat!(
                "Longest ", $op, " on a file of ", $what, " (", $calls,
                ") in the period, ns: the whole syscall with -S exact, by default the longest blocked (switched-out) stretch inside one; 0 without any"
            ),
        )
    };
}

/// `<fs>_<op>_count`: how many operations the maximum was taken over.
macro_rules! fs_count {
    ($fs:literal, $op:literal, $what:literal) => {
        Field::per_period(
            concat!($fs, "_", $op, "_count"),
            concat!(
                "Operations timed for ns_",
                $fs,
                "_",
                $op,
                ", per period: every such syscall on ",
                $what,
                " with -S exact, by default each blocked stretch inside one"
            ),
        )
    };
}

/// The file-system tables, in output order (`-P` bits 32, 64, 128; [`crate::syscalls::FsKind`]
/// order).
pub const FS_TABLES: [FsTable; 3] = [
    FsTable {
        name: "proc_ext4",
        fields: fs_fields!("ext4", "ext4"),
    },
    FsTable {
        name: "proc_overlay",
        fields: fs_fields!("overlay", "overlayfs"),
    },
    FsTable {
        name: "proc_tmpfs",
        fields: fs_fields!("tmpfs", "tmpfs"),
    },
];

/// `proc_lifecycle` after the process fields.
pub const LIFECYCLE_FIELDS: &[Field] = &[
    Field::counter(
        "fork_count",
        "Child processes created, cumulative since the process began to be tracked",
    ),
    Field::counter("thread_count", "Threads created, cumulative"),
    Field::counter("exec_count", "Successful execs, cumulative"),
    Field::counter(
        "thread_exit_count",
        "Threads exited, the last one included, cumulative",
    ),
    Field::gauge(
        "exited",
        "1 in the final report of a process whose threads have all exited, else 0",
    ),
];

/// `proc_io` after the process fields, in upstream's order.
pub const IO_FIELDS: &[Field] = &[
    Field::per_period(
        "less_4k_io_read",
        "Block read requests of 4 KiB or less issued by the process and completed, per period",
    ),
    Field::per_period(
        "less_4k_io_write",
        "Block write requests of 4 KiB or less issued by the process and completed, per period",
    ),
    Field::per_period(
        "greater_4k_io_read",
        "Block read requests of more than 4 KiB issued by the process and completed, per period",
    ),
    Field::per_period(
        "greater_4k_io_write",
        "Block write requests of more than 4 KiB issued by the process and completed, per period",
    ),
    Field::gauge(
        "bio_latency",
        "Longest block request of the period (issue to completion, failed ones excluded), ns; 0 without any",
    ),
    Field::per_period(
        "bio_err_count",
        "Block requests issued by the process that completed with an error, per period",
    ),
    Field::per_period(
        "hang_count",
        "Hung-task reports of the process (a thread blocked uninterruptibly past kernel.hung_task_timeout_secs), per period",
    ),
];

/// `proc_cpu` after the process fields.
pub const CPU_FIELDS: &[Field] = &[
    Field::per_period(
        "iowait_ns",
        "Time the threads spent switched out while blocked in IO wait (part of offcpu_ns), ns per period",
    )
    .total("iowait_seconds_total", "1e-9"),
    Field::per_period(
        "offcpu_ns",
        "Time the threads spent switched out (blocked or waiting to run), ns per period",
    )
    .total("offcpu_seconds_total", "1e-9"),
];

/// `proc_page` after the process fields: upstream's names, per period, counted in the
/// process's own context (docs/probes/proc.md, "Page cache").
pub const PAGE_FIELDS: &[Field] = &[
    Field::per_period(
        "reclaim_ns",
        "Time the threads spent reclaiming memory themselves (direct reclaim, or their memory cgroup's over its limit), ns per period",
    )
    .total("reclaim_seconds_total", "1e-9"),
    Field::per_period(
        "access_pagecache",
        "Pages the process looked up in the page cache (buffered reads, page faults, fault-around), per period",
    ),
    Field::per_period(
        "mark_buffer_dirty",
        "Buffers the process marked dirty, per period",
    ),
    Field::per_period(
        "load_page_cache",
        "Pages the process added to the page cache (reads, and writes that allocate a page), per period",
    ),
    Field::per_period(
        "mark_page_dirty",
        "Pages the process dirtied, per period",
    ),
];

/// `proc_syscall_ioctl` after the process fields: upstream HEAD's.
pub const IOCTL_FIELDS: &[Field] = &[
    Field::label("ioctl_fd", "File descriptor of the period's longest ioctl"),
    Field::label(
        "ioctl_dir",
        "Its direction (_IOC_DIR: 0 none, 1 write, 2 read, 3 both)",
    ),
    Field::label("ioctl_type", "Its type (_IOC_TYPE, the driver's letter as a number)"),
    Field::label("ioctl_nr", "Its number (_IOC_NR)"),
    Field::gauge("ioctl_size", "Its argument size (_IOC_SIZE), bytes"),
    Field::gauge(
        "ns_ioctl",
        "Longest single ioctl call in the period, ns: entry to exit with -S exact, by default the longest blocked (switched-out) stretch inside one; 0 without any",
    ),
];

/// `proc_pygc` after the process fields: upstream HEAD's names and units (ms).
pub const PYGC_FIELDS: &[Field] = &[
    Field::per_period(
        "python_gc",
        "CPython garbage collections (gc__start to gc__done), per period",
    ),
    Field::per_period(
        "latency_sum",
        "Time in CPython garbage collections, ms per period",
    )
    .total("python_gc_seconds_total", "1e-3"),
    Field::gauge(
        "latency_max",
        "Longest CPython garbage collection of the period, ms; 0 without any",
    ),
];

/// `proc_dns`: upstream HEAD's keys and fields, plus the label `comm`.
pub const DNS_FIELDS: &[Field] = &[
    Field::key("tgid", "ID of the process (thread group)"),
    Field::key(
        "domain",
        "Domain name looked up (its first 127 bytes), or (other) for the domains past the 256th of the process",
    ),
    Field::label("comm", "comm of the process"),
    Field::gauge(
        "delay_avg",
        "Average lookup time in the period (getaddrinfo, gethostbyname, gethostbyname2: call to return), ns; 0 without lookups",
    ),
    Field::gauge("max_delay", "Longest lookup of the period, ns; 0 without lookups"),
    Field::gauge(
        "error_ratio",
        "Failed lookups per lookup in the period, percent",
    ),
    Field::per_period(
        "count",
        "Lookups (successful or not), per period",
    ),
    Field::per_period(
        "error_count",
        "Failed lookups (getaddrinfo returned an error, gethostbyname* NULL), per period",
    ),
];

/// `thread_cpu`: v2023's key, labels and fields.
pub const THREAD_FIELDS: &[Field] = &[
    Field::key("pid", "ID of the thread"),
    Field::label("tgid", "ID of its process (thread group)"),
    Field::label("comm", "comm of the thread"),
    Field::per_period(
        "off_cpu_ns",
        "Time the thread spent switched out (blocked or waiting to run), ns per period",
    )
    .total("off_cpu_seconds_total", "1e-9"),
    Field::per_period(
        "migration_count",
        "Moves of the thread to another CPU (sched_migrate_task), per period",
    ),
];

/// Every table, in `.meta` order (which is also the order of the records each period).
pub fn meta_tables() -> Vec<Table> {
    let mut tables = vec![Table::new(SYSCALL, ENTITY, &[PROC_FIELDS, SYSCALL_FIELDS])];
    for slow in &SLOW_TABLES {
        let fields: Vec<Field> = slow.columns.iter().map(|(_, f)| *f).collect();
        tables.push(Table::new(slow.name, ENTITY, &[PROC_FIELDS, &fields]));
    }
    tables.push(Table::new(IOCTL, ENTITY, &[PROC_FIELDS, IOCTL_FIELDS]));
    for fs in &FS_TABLES {
        tables.push(Table::new(fs.name, ENTITY, &[PROC_FIELDS, fs.fields]));
    }
    tables.extend([
        Table::new(LIFECYCLE, ENTITY, &[PROC_FIELDS, LIFECYCLE_FIELDS]),
        Table::new(IO, ENTITY, &[PROC_FIELDS, IO_FIELDS]),
        Table::new(CPU, ENTITY, &[PROC_FIELDS, CPU_FIELDS]),
        Table::new(PAGE, ENTITY, &[PROC_FIELDS, PAGE_FIELDS]),
        Table::new(PYGC, ENTITY, &[PROC_FIELDS, PYGC_FIELDS]),
        Table::new(DNS, DNS_ENTITY, &[DNS_FIELDS]),
        Table::new(THREAD, THREAD_ENTITY, &[THREAD_FIELDS]),
        bpf::loss_table(
            STATS_TABLE,
            "events accounted in BPF maps (syscall exits, switches, forks, execs, exits and block requests of tracked processes) plus exec notices sent to user space",
            "exec notices lost because the ring buffer was full, plus program runs the kernel skipped because the program was already running on that CPU",
            "map inserts refused because a map was full (a process beyond the 10240 tracked, retried at each of its events, or a block request)",
        ),
    ]);
    tables
}

/// What taskprobe declares about its run-time control (the `probe` group of `taskprobe.meta`).
///
/// * REST name `proc`; changes apply without a restart (control channel on stdin).
/// * Snoopers: every kind (the daemon resolves them to pids; container and pod kinds too).
/// * Sub-probes, with upstream's grouping of the tables onto our `-P` bits:
///   `proc_syscall` → `proc_syscall` (counts, bit 1), `proc_syscall_sched` (8) and
///   `proc_syscall_fork` (16); `proc_fs` → `proc_ext4` (32), `proc_overlay` (64) and
///   `proc_tmpfs` (128); `proc_dns` → `proc_dns` (512); `proc_io` → `proc_syscall_io` (2) and `proc_io` (1024);
///   `proc_net` → `proc_syscall_net` (4); `proc_offcpu` → `proc_cpu` (2048);
///   `proc_pagecache` → `proc_page` (256); `proc_pygc` → `proc_pygc` (8192); `thread_cpu` → `thread_cpu` (4096, v2023's table,
///   off by default: a row per thread). `proc_syscall` is off by default: its counts need the
///   `sys_exit` tracepoint, a toll on every syscall of the host (docs/probes/proc.md);
///   `proc_pagecache` too: its programs run for every page the page cache adds, dirties or
///   serves; `proc_ioctl` → `proc_syscall_ioctl` (16384) too: its labels name the period's
///   longest request, a new series for each. `proc_lifecycle` and `proc_bpf_stats` are always
///   written.
/// * Params: `report_period` (default 5 s, as `-t`); `report_event` (`-l`), `latency_thr`
///   (`-T`, ms) and `offline_thr` (`-O`, ms) for the abnormal events ([`crate::events`]).
pub fn declaration() -> Declaration {
    let report_period = decl::standard("report_period")
        .map(|p| p.with_default(ParamValue::Int(i64::from(DEFAULT_PERIOD_SECS))));
    Declaration {
        rest_name: Some("proc".to_string()),
        reload: true,
        snoopers: SnooperKind::ALL.to_vec(),
        sub_probes: vec![
            SubProbe::new(
                "proc_syscall",
                BIT_SYSCALL | BIT_SCHED_SYSCALL | BIT_FORK_SYSCALL,
            )
            .off_by_default(),
            SubProbe::new("proc_fs", BIT_EXT4 | BIT_OVERLAY | BIT_TMPFS),
            SubProbe::new("proc_dns", BIT_DNS),
            SubProbe::new("proc_io", BIT_IO_SYSCALL | BIT_IO),
            SubProbe::new("proc_net", BIT_NET_SYSCALL),
            SubProbe::new("proc_offcpu", BIT_THREAD_CPU),
            SubProbe::new("proc_pagecache", BIT_PAGE).off_by_default(),
            SubProbe::new("proc_ioctl", BIT_IOCTL).off_by_default(),
            SubProbe::new("proc_pygc", BIT_PYGC),
            SubProbe::new("thread_cpu", BIT_THREAD).off_by_default(),
        ],
        params: report_period
            .into_iter()
            .chain(
                ["report_event", "latency_thr", "offline_thr"]
                    .map(decl::standard)
                    .into_iter()
                    .flatten(),
            )
            .collect(),
    }
}

/// The `.meta` file describing every table this probe writes and its run-time control
/// (`taskprobe --print-meta`).
pub fn meta_text() -> String {
    format!(
        "{}\n{}",
        meta::render(HEADER, &meta_tables()),
        declaration().render_meta()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_keep_upstream_limits() {
        assert_eq!(meta::check(&meta_tables()), Vec::<String>::new());
    }

    #[test]
    fn every_slow_column_has_one_field() {
        // proc_syscall_ioctl has the last column (its own layout, with the call's labels).
        let mut cols: Vec<u8> = SLOW_TABLES
            .iter()
            .flat_map(|t| t.columns.iter().map(|(c, _)| *c as u8))
            .chain([SlowCol::Ioctl as u8])
            .collect();
        let n = cols.len();
        cols.sort_unstable();
        cols.dedup();
        assert_eq!(cols.len(), n, "a column in two tables");
        assert_eq!(cols, (1..=n as u8).collect::<Vec<_>>(), "every column");
        assert_eq!(n + 1, crate::skel::types::slow_col::NR_COLS.0 as usize);
    }

    #[test]
    fn declaration_is_valid_and_covers_the_default_tables() {
        let d = declaration();
        d.validate().unwrap();
        assert_eq!(d.rest_name.as_deref(), Some("proc"));
        let all: u32 = d.sub_probes.iter().fold(0, |acc, s| acc | s.bits);
        let default_bits = d
            .sub_probe_bits(&d.default_sub_probes())
            .expect("default sub-probes");
        assert_eq!(
            default_bits,
            crate::hooks::DEFAULT_BITS & all & !BIT_SCHED_SYSCALL & !BIT_FORK_SYSCALL,
            "defaults: everything but proc_syscall (sys_exit toll), proc_pagecache and thread_cpu"
        );
        // Every table but proc_lifecycle is selected by some sub-probe.
        let plan = crate::hooks::Plan::new(all, crate::hooks::SyscallTiming::Blocked, true);
        let t = plan.tables;
        assert!(t.syscall && t.io && t.net && t.sched && t.fork && t.bio && t.cpu && t.page);
        assert_eq!(t.fs, [true; 3]);
        assert!(t.dns && t.threads && t.pygc);
        assert_eq!(
            d.param("report_period").map(|p| &p.default),
            Some(&ParamValue::Int(5))
        );
    }

    #[test]
    fn committed_meta_declares_the_same() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/taskprobe.meta"));
        let root = gala_libconfig::parse_file(path).expect("taskprobe.meta parses");
        assert_eq!(
            Declaration::from_node(&root).expect("valid probe group"),
            Some(declaration())
        );
    }

    #[test]
    fn committed_meta_file_is_current() {
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/taskprobe.meta"))
                .expect("probes/proc/taskprobe.meta");
        assert_eq!(
            committed,
            meta_text(),
            "regenerate with: taskprobe --print-meta > probes/proc/taskprobe.meta"
        );
    }
}
