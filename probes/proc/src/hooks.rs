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
/// `-P` bit: `proc_io` (block IO issued by the process).
pub const BIT_IO: u32 = 1024;
/// `-P` bit: `proc_cpu` (off-CPU and IO-wait time from `sched_switch`).
pub const BIT_THREAD_CPU: u32 = 2048;

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
    /// `sys_enter`: only needed to time slow syscalls.
    pub sys_enter: bool,
    /// `sys_exit`: counts, failures, and the end of slow syscalls.
    pub sys_exit: bool,
    /// `sched_switch`: needed for off-CPU time, and by slow-syscall timing (a thread switched out
    /// inside a timed syscall moves its start time from the per-CPU slot to task storage).
    pub sched_switch: bool,
    /// Off-CPU accounting (`proc_cpu`).
    pub offcpu: bool,
    /// Block IO attribution, if enabled.
    pub block: Option<BlockStart>,
    /// Tables printed each period.
    pub tables: Tables,
}

impl Plan {
    /// The plan for `probe_bits`; `io_start_available` says whether `block_io_start` exists.
    pub fn from_bits(probe_bits: u32, io_start_available: bool) -> Plan {
        let syscall_table = syscalls::column_table(probe_bits);
        let timed = syscalls::any_timed(&syscall_table);
        let has = |bit: u32| probe_bits & bit != 0;
        Plan {
            syscall_table,
            sys_enter: timed,
            sys_exit: timed || has(BIT_SYSCALL),
            sched_switch: has(BIT_THREAD_CPU) || timed,
            offcpu: has(BIT_THREAD_CPU),
            block: has(BIT_IO).then_some(if io_start_available {
                BlockStart::IoStart
            } else {
                BlockStart::RqIssue
            }),
            tables: Tables {
                syscall: has(BIT_SYSCALL),
                io: has(BIT_IO_SYSCALL),
                net: has(BIT_NET_SYSCALL),
                sched: has(BIT_SCHED_SYSCALL),
                fork: has(BIT_FORK_SYSCALL),
                lifecycle: true,
                bio: has(BIT_IO),
                cpu: has(BIT_THREAD_CPU),
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
    fn all_bits_attach_everything() {
        let p = Plan::from_bits(u32::MAX, true);
        assert!(p.sys_enter && p.sys_exit && p.sched_switch);
        assert_eq!(p.block, Some(BlockStart::IoStart));
        assert_eq!(p.required_hooks().len(), 8);
        let t = p.tables;
        assert!(t.syscall && t.io && t.net && t.sched && t.fork && t.lifecycle && t.bio && t.cpu);
    }

    #[test]
    fn counts_only_skip_sys_enter() {
        let p = Plan::from_bits(BIT_SYSCALL, true);
        assert!(!p.sys_enter && p.sys_exit && !p.sched_switch && p.block.is_none());
        let names: Vec<String> = p.required_hooks().iter().map(|h| h.to_string()).collect();
        assert!(names.contains(&"raw tracepoint sys_exit".to_string()));
        assert!(!names.contains(&"raw tracepoint sys_enter".to_string()));
    }

    #[test]
    fn timing_needs_both_syscall_hooks() {
        let p = Plan::from_bits(BIT_SCHED_SYSCALL, true);
        assert!(p.sys_enter && p.sys_exit);
        assert!(
            p.sched_switch && !p.offcpu,
            "switch hook without proc_cpu accounting"
        );
        assert!(!p.tables.syscall && p.tables.sched);
    }

    #[test]
    fn old_kernels_fall_back_to_rq_issue() {
        let p = Plan::from_bits(BIT_IO, false);
        assert_eq!(p.block, Some(BlockStart::RqIssue));
        assert!(!p.sys_enter && !p.sys_exit);
    }
}
