//! What to attach for a given `-P` bitmask, and which kernel hooks that needs.

use probe_sdk::bpf::Hook;

use crate::report::Tables;
use crate::syscalls;

/// `-P` bit: `proc_syscall` (syscall counts and failures). Upstream `TASK_PROBE_SYSCALL`.
pub const BIT_SYSCALL: u32 = 1;
/// `-P` bit: `proc_syscall_io` (time in mount/umount/read/write/fsync).
pub const BIT_IO_SYSCALL: u32 = 2;
/// `-P` bit: `proc_syscall_net` (time in sendmsg/recvmsg).
pub const BIT_NET_SYSCALL: u32 = 4;
/// `-P` bit: `proc_syscall_sched` (time in sched_yield/futex/epoll_wait/epoll_pwait).
pub const BIT_SCHED_SYSCALL: u32 = 8;
/// `-P` bit: `proc_syscall_fork` (time in fork/vfork/clone).
pub const BIT_FORK_SYSCALL: u32 = 16;
/// `-P` bit: `proc_ext4` (time in reads, writes, opens and fsyncs of ext4 files).
/// Upstream `TASK_PROBE_EXT4_OP`.
pub const BIT_EXT4: u32 = 32;
/// `-P` bit: `proc_overlay` (the same on overlayfs). Upstream `TASK_PROBE_OVERLAY_OP`.
pub const BIT_OVERLAY: u32 = 64;
/// `-P` bit: `proc_tmpfs` (the same on tmpfs). Upstream `TASK_PROBE_TMPFS_OP`.
pub const BIT_TMPFS: u32 = 128;
/// `-P` bit: `proc_page` (page cache and reclaim). Upstream `TASK_PROBE_PAGE`.
pub const BIT_PAGE: u32 = 256;
/// `-P` bit: `proc_dns` (DNS lookups through the C library, by domain). Upstream
/// `TASK_PROBE_DNS_OP`.
pub const BIT_DNS: u32 = 512;
/// `-P` bit: `proc_io` (block IO issued by the process).
pub const BIT_IO: u32 = 1024;
/// `-P` bit: `proc_cpu` (off-CPU and IO-wait time from `sched_switch`).
pub const BIT_THREAD_CPU: u32 = 2048;

/// `-P` bit: `proc_pygc` (CPython garbage collections, from its USDT probes).
pub const BIT_PYGC: u32 = 8192;
/// `-P` bit: `proc_syscall_ioctl` (the longest ioctl and which one it was).
pub const BIT_IOCTL: u32 = 16384;
/// `-P` bit: `thread_cpu` (per-thread off-CPU time and CPU migrations, v2023's table).
pub const BIT_THREAD: u32 = 4096;

/// `-P` bits used when `-P` is not given: everything except [`BIT_SYSCALL`], [`BIT_PAGE`],
/// [`BIT_THREAD`] and [`BIT_IOCTL`].
/// Syscall counts need the `sys_exit` tracepoint, and attaching any syscall tracepoint puts
/// every syscall of every process on the host on the kernel's slow path (see
/// docs/probes/proc.md); the page-cache programs run for every page the page cache adds,
/// dirties or serves. Upstream's shipped configuration (`-P 3174`) leaves both bits out as
/// well. A row per thread can be many rows, so `thread_cpu` is asked for by name, and
/// `proc_syscall_ioctl` labels its row with the period's longest request (a new series per
/// request), so it is too. `-P 0` asks for everything.
pub const DEFAULT_BITS: u32 = !(BIT_SYSCALL | BIT_PAGE | BIT_THREAD | BIT_IOCTL);

/// Flag letter choosing how slow syscalls are timed (`-S blocked` or `-S exact`).
pub const TIMING_FLAG: char = 'S';

/// How time in slow syscalls is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyscallTiming {
    /// Time a thread spends switched out while blocked inside the syscall, from `sched_switch`
    /// alone: costs per context switch of a tracked process, nothing per syscall.
    #[default]
    Blocked,
    /// Whole syscalls, entry to exit, from `sys_enter`/`sys_exit`: includes the on-CPU part, at
    /// the price of the syscall tracepoint toll on every syscall of the host.
    Exact,
}

impl SyscallTiming {
    /// The timing asked for by the last `-S` among the probe-specific flags (default: blocked).
    pub fn from_flags(extra: &[(char, Option<String>)]) -> Result<SyscallTiming, String> {
        match extra.iter().rev().find(|(f, _)| *f == TIMING_FLAG) {
            None => Ok(SyscallTiming::default()),
            Some((_, None)) => Err(format!(
                "-{TIMING_FLAG}: missing value, expected blocked or exact"
            )),
            Some((_, Some(v))) => match v.as_str() {
                "blocked" => Ok(SyscallTiming::Blocked),
                "exact" => Ok(SyscallTiming::Exact),
                _ => Err(format!(
                    "-{TIMING_FLAG}: invalid value \"{v}\", expected blocked or exact"
                )),
            },
        }
    }
}

/// Hidden knob for tests of the unsupported-feature path: a hook spec (`raw:<name>` or
/// `<category>:<name>`, see [`Hook::parse`]) that the probe must find before it loads.
pub const REQUIRE_HOOK_ENV: &str = "TASKPROBE_REQUIRE_HOOK";

/// Which program records a block request's issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStart {
    /// `block_io_start` (kernel >= 6.5): fires in the submitting task when a bio becomes a request.
    IoStart,
    /// `block_rq_issue`: fires when the request goes to the driver, possibly from a kworker, so
    /// attribution is weaker.
    RqIssue,
}

/// The programs to load and the tables to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Syscall number → slow column, handed to BPF.
    pub syscall_table: [u8; syscalls::TABLE_LEN],
    /// Syscall number → file operation timed per file system, handed to BPF (`fs_op`).
    pub fs_op_table: [u8; syscalls::TABLE_LEN],
    /// File systems timed (bit `1 << FsKind`), handed to BPF (`fs_mask`).
    pub fs_mask: u8,
    /// Slow syscalls are timed at `sched_switch` (blocked time), with no syscall hook.
    pub blocked_timing: bool,
    /// `sys_enter`: only needed to time slow syscalls exactly.
    pub sys_enter: bool,
    /// `sys_exit`: counts, failures, and the end of exactly timed slow syscalls.
    pub sys_exit: bool,
    /// `sched_switch`: off-CPU time, blocked slow-syscall time, and exact timing (a thread
    /// switched out inside a timed syscall moves its start time from the per-CPU slot to task
    /// storage).
    pub sched_switch: bool,
    /// Off-CPU accounting (`proc_cpu`).
    pub offcpu: bool,
    /// Block IO attribution, if enabled.
    pub block: Option<BlockStart>,
    /// Page cache and reclaim (`proc_page`).
    pub page_cache: bool,
    /// Per-thread off-CPU time and migrations (`thread_cpu`).
    pub threads: bool,
    /// Tables printed each period.
    pub tables: Tables,
}

impl Plan {
    /// The plan for `probe_bits` and `timing`; `io_start_available` says whether
    /// `block_io_start` exists.
    pub fn new(probe_bits: u32, timing: SyscallTiming, io_start_available: bool) -> Plan {
        let syscall_table = syscalls::column_table(probe_bits);
        let (fs_op_table, fs_mask) = syscalls::fs_tables(probe_bits);
        let timed = syscalls::any_timed(&syscall_table) || fs_mask != 0;
        let exact = timed && timing == SyscallTiming::Exact;
        let has = |bit: u32| probe_bits & bit != 0;
        Plan {
            syscall_table,
            fs_op_table,
            fs_mask,
            blocked_timing: timed && timing == SyscallTiming::Blocked,
            sys_enter: exact,
            sys_exit: exact || has(BIT_SYSCALL),
            sched_switch: has(BIT_THREAD_CPU) || has(BIT_THREAD) || timed,
            offcpu: has(BIT_THREAD_CPU),
            block: has(BIT_IO).then_some(if io_start_available {
                BlockStart::IoStart
            } else {
                BlockStart::RqIssue
            }),
            page_cache: has(BIT_PAGE),
            threads: has(BIT_THREAD),
            tables: Tables {
                syscall: has(BIT_SYSCALL),
                io: has(BIT_IO_SYSCALL),
                net: has(BIT_NET_SYSCALL),
                sched: has(BIT_SCHED_SYSCALL),
                fork: has(BIT_FORK_SYSCALL),
                fs: syscalls::FsKind::ALL.map(|k| has(k.probe_bit())),
                lifecycle: true,
                bio: has(BIT_IO),
                cpu: has(BIT_THREAD_CPU),
                page: has(BIT_PAGE),
                dns: has(BIT_DNS),
                threads: has(BIT_THREAD),
                pygc: has(BIT_PYGC),
                ioctl: has(BIT_IOCTL),
            },
        }
    }

    /// Every kernel hook the plan attaches (all programs are `tp_btf`, i.e. raw tracepoints).
    pub fn required_hooks(&self) -> Vec<Hook> {
        let mut names = vec![
            "sched_process_fork",
            "sched_process_exec",
            "sched_process_exit",
        ];
        if self.sys_enter {
            names.push("sys_enter");
        }
        if self.sys_exit {
            names.push("sys_exit");
        }
        if self.sched_switch {
            names.push("sched_switch");
        }
        if self.threads {
            names.push("sched_migrate_task");
        }
        match self.block {
            Some(BlockStart::IoStart) => names.extend(["block_io_start", "block_rq_complete"]),
            Some(BlockStart::RqIssue) => names.extend(["block_rq_issue", "block_rq_complete"]),
            None => {}
        }
        names.into_iter().map(Hook::raw_tracepoint).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_bits_exact_attach_everything() {
        let p = Plan::new(u32::MAX, SyscallTiming::Exact, true);
        assert!(p.sys_enter && p.sys_exit && p.sched_switch);
        assert_eq!(p.block, Some(BlockStart::IoStart));
        assert_eq!(p.required_hooks().len(), 9);
        let t = p.tables;
        assert!(t.syscall && t.io && t.net && t.sched && t.fork && t.lifecycle && t.bio && t.cpu);
        assert!(t.page && p.page_cache);
    }

    #[test]
    fn default_bits_attach_no_syscall_hook() {
        let p = Plan::new(DEFAULT_BITS, SyscallTiming::default(), true);
        assert!(
            !p.sys_enter && !p.sys_exit,
            "no syscall tracepoint by default"
        );
        assert!(p.sched_switch && p.offcpu);
        let names: Vec<String> = p.required_hooks().iter().map(|h| h.to_string()).collect();
        assert!(!names.iter().any(|n| n.contains("sys_e")), "{names:?}");
        let t = p.tables;
        assert!(!t.syscall, "proc_syscall needs -P with bit 1");
        assert!(!t.page && !p.page_cache, "proc_page needs -P with bit 256");
        assert!(
            !t.threads && !p.threads,
            "thread_cpu needs -P with bit 4096"
        );
        assert!(!t.ioctl, "proc_syscall_ioctl needs -P with bit 16384");
        assert!(t.io && t.net && t.sched && t.fork && t.lifecycle && t.bio && t.cpu);
    }

    #[test]
    fn all_bits_blocked_timing_needs_only_sys_exit() {
        let p = Plan::new(u32::MAX, SyscallTiming::Blocked, true);
        assert!(!p.sys_enter && p.sys_exit && p.sched_switch);
        assert!(p.tables.syscall);
    }

    #[test]
    fn timing_flag_values() {
        let flags = |v: &[(char, Option<&str>)]| {
            let owned: Vec<(char, Option<String>)> =
                v.iter().map(|(f, s)| (*f, s.map(str::to_string))).collect();
            SyscallTiming::from_flags(&owned)
        };
        assert_eq!(flags(&[]), Ok(SyscallTiming::Blocked));
        assert_eq!(flags(&[('x', Some("1"))]), Ok(SyscallTiming::Blocked));
        assert_eq!(flags(&[('S', Some("exact"))]), Ok(SyscallTiming::Exact));
        assert_eq!(
            flags(&[('S', Some("exact")), ('S', Some("blocked"))]),
            Ok(SyscallTiming::Blocked),
            "last one wins"
        );
        assert_eq!(
            flags(&[('S', Some("fast"))]),
            Err("-S: invalid value \"fast\", expected blocked or exact".to_string())
        );
        assert!(flags(&[('S', None)]).unwrap_err().contains("missing value"));
    }

    #[test]
    fn counts_only_skip_sys_enter() {
        let p = Plan::new(BIT_SYSCALL, SyscallTiming::Exact, true);
        assert!(!p.sys_enter && p.sys_exit && !p.sched_switch && p.block.is_none());
        let names: Vec<String> = p.required_hooks().iter().map(|h| h.to_string()).collect();
        assert!(names.contains(&"raw tracepoint sys_exit".to_string()));
        assert!(!names.contains(&"raw tracepoint sys_enter".to_string()));
    }

    #[test]
    fn exact_timing_needs_both_syscall_hooks() {
        let p = Plan::new(BIT_SCHED_SYSCALL, SyscallTiming::Exact, true);
        assert!(p.sys_enter && p.sys_exit);
        assert!(
            p.sched_switch && !p.offcpu,
            "switch hook without proc_cpu accounting"
        );
        assert!(!p.tables.syscall && p.tables.sched);
    }

    #[test]
    fn old_kernels_fall_back_to_rq_issue() {
        let p = Plan::new(BIT_IO, SyscallTiming::Exact, false);
        assert_eq!(p.block, Some(BlockStart::RqIssue));
        assert!(!p.sys_enter && !p.sys_exit);
    }
}
