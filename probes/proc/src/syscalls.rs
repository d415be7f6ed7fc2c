//! Which syscalls are "slow" (timed) and which upstream column each one adds its time to.
//!
//! Upstream taskprobe timed exactly `mount umount read write fsync sendmsg recvmsg sched_yield
//! futex epoll_wait epoll_pwait fork vfork clone` with kprobes. Here the vectored/positional and
//! newer variants of the same operation add to the same column (`pread64` → `ns_read`,
//! `clone3` → `ns_clone`, …), so the column means "time in that kind of syscall".

use crate::skel::types::{fs_kind, fs_op, slow_col};

/// Column indexes: `enum slow_col` of `src/bpf/intf.h`, as the skeleton generates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SlowCol {
    Mount = slow_col::COL_MOUNT.0 as u8,
    Umount = slow_col::COL_UMOUNT.0 as u8,
    Read = slow_col::COL_READ.0 as u8,
    Write = slow_col::COL_WRITE.0 as u8,
    Fsync = slow_col::COL_FSYNC.0 as u8,
    Sendmsg = slow_col::COL_SENDMSG.0 as u8,
    Recvmsg = slow_col::COL_RECVMSG.0 as u8,
    SchedYield = slow_col::COL_SCHED_YIELD.0 as u8,
    Futex = slow_col::COL_FUTEX.0 as u8,
    EpollWait = slow_col::COL_EPOLL_WAIT.0 as u8,
    EpollPwait = slow_col::COL_EPOLL_PWAIT.0 as u8,
    Fork = slow_col::COL_FORK.0 as u8,
    Vfork = slow_col::COL_VFORK.0 as u8,
    Clone = slow_col::COL_CLONE.0 as u8,
    Ioctl = slow_col::COL_IOCTL.0 as u8,
}

/// Number of slots in `proc_stats.slow_max` (`SLOW_SLOTS`; index 0 and 15 unused).
pub const SLOW_SLOTS: usize = 16;

/// Length of the syscall-number → column table handed to BPF (`SYSCALL_TABLE_LEN`).
pub const TABLE_LEN: usize = 512;

/// The `-P` bit (upstream `TASK_PROBE_*`) that enables a column's table.
impl SlowCol {
    /// Upstream probe bit of the table this column belongs to.
    pub fn probe_bit(self) -> u32 {
        use SlowCol::*;
        match self {
            Mount | Umount | Read | Write | Fsync => crate::hooks::BIT_IO_SYSCALL,
            Sendmsg | Recvmsg => crate::hooks::BIT_NET_SYSCALL,
            SchedYield | Futex | EpollWait | EpollPwait => crate::hooks::BIT_SCHED_SYSCALL,
            Fork | Vfork | Clone => crate::hooks::BIT_FORK_SYSCALL,
            Ioctl => crate::hooks::BIT_IOCTL,
        }
    }
}

/// Timed syscalls and their column. Numbers come from `libc` so the table follows the target;
/// `fork`, `vfork` and `epoll_wait` exist only on some architectures (elsewhere they are
/// `clone` flags / `epoll_pwait`).
const SLOW_SYSCALLS: &[(libc::c_long, SlowCol)] = {
    use SlowCol::*;
    &[
        (libc::SYS_read, Read),
        (libc::SYS_pread64, Read),
        (libc::SYS_readv, Read),
        (libc::SYS_preadv, Read),
        (libc::SYS_preadv2, Read),
        (libc::SYS_write, Write),
        (libc::SYS_pwrite64, Write),
        (libc::SYS_writev, Write),
        (libc::SYS_pwritev, Write),
        (libc::SYS_pwritev2, Write),
        (libc::SYS_fsync, Fsync),
        (libc::SYS_fdatasync, Fsync),
        (libc::SYS_mount, Mount),
        (libc::SYS_umount2, Umount),
        (libc::SYS_sendto, Sendmsg),
        (libc::SYS_sendmsg, Sendmsg),
        (libc::SYS_sendmmsg, Sendmsg),
        (libc::SYS_recvfrom, Recvmsg),
        (libc::SYS_recvmsg, Recvmsg),
        (libc::SYS_recvmmsg, Recvmsg),
        (libc::SYS_sched_yield, SchedYield),
        (libc::SYS_futex, Futex),
        (libc::SYS_futex_waitv, Futex),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_epoll_wait, EpollWait),
        (libc::SYS_epoll_pwait, EpollPwait),
        (libc::SYS_epoll_pwait2, EpollPwait),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_fork, Fork),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_vfork, Vfork),
        (libc::SYS_clone, Clone),
        (libc::SYS_clone3, Clone),
        (libc::SYS_ioctl, Ioctl),
    ]
};

/// The table BPF indexes by syscall number: column of each timed syscall whose table is enabled
/// in `probe_bits`, 0 elsewhere.
pub fn column_table(probe_bits: u32) -> [u8; TABLE_LEN] {
    let mut t = [0u8; TABLE_LEN];
    for &(nr, col) in SLOW_SYSCALLS {
        if probe_bits & col.probe_bit() != 0 {
            t[nr as usize] = col as u8;
        }
    }
    t
}

/// True when at least one syscall is timed, i.e. the `sys_enter` hook is needed.
pub fn any_timed(table: &[u8; TABLE_LEN]) -> bool {
    table.iter().any(|&c| c != 0)
}

/// A file operation timed per file system (`enum fs_op` of `src/bpf/intf.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FsOp {
    /// `ns_<fs>_read`
    Read = fs_op::FSOP_READ.0 as u8,
    /// `ns_<fs>_write`
    Write = fs_op::FSOP_WRITE.0 as u8,
    /// `ns_<fs>_open`
    Open = fs_op::FSOP_OPEN.0 as u8,
    /// `ns_<fs>_flush` (fsync, fdatasync)
    Flush = fs_op::FSOP_FLUSH.0 as u8,
}

impl FsOp {
    /// Every operation, in field order.
    pub const ALL: [FsOp; 4] = [FsOp::Read, FsOp::Write, FsOp::Open, FsOp::Flush];
}

/// A file system with its own table (`enum fs_kind` of `src/bpf/intf.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FsKind {
    /// `proc_ext4` (ext4, and ext2/ext3 mounted by the ext4 driver: one magic)
    Ext4 = fs_kind::FS_EXT4.0 as u8,
    /// `proc_overlay`
    Overlay = fs_kind::FS_OVERLAY.0 as u8,
    /// `proc_tmpfs`
    Tmpfs = fs_kind::FS_TMPFS.0 as u8,
}

/// Slots of `proc_stats.fs_max` / `fs_ops` (`FS_SLOTS`).
pub const FS_SLOTS: usize = 16;

impl FsKind {
    /// Every kind, in table order.
    pub const ALL: [FsKind; 3] = [FsKind::Ext4, FsKind::Overlay, FsKind::Tmpfs];

    /// The `-P` bit selecting this file system's table (upstream's `TASK_PROBE_*_OP`).
    pub fn probe_bit(self) -> u32 {
        match self {
            FsKind::Ext4 => crate::hooks::BIT_EXT4,
            FsKind::Overlay => crate::hooks::BIT_OVERLAY,
            FsKind::Tmpfs => crate::hooks::BIT_TMPFS,
        }
    }

    /// Index into `fs_max` / `fs_ops` of operation `op` on this file system.
    pub fn slot(self, op: FsOp) -> usize {
        self as usize * 4 + op as usize - 1
    }
}

/// The opens timed per file system (the read, write and fsync families are the slow
/// syscalls' [`SlowCol::Read`], [`SlowCol::Write`] and [`SlowCol::Fsync`]).
const OPEN_SYSCALLS: &[libc::c_long] = &[
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_creat,
    libc::SYS_openat,
    libc::SYS_openat2,
];

/// Syscalls timed per file system and their operation: the read, write and fsync families by
/// the file of their descriptor, the opens by the file they open.
fn fs_syscalls() -> impl Iterator<Item = (libc::c_long, FsOp)> {
    let by_fd = SLOW_SYSCALLS.iter().filter_map(|&(nr, col)| {
        let op = match col {
            SlowCol::Read => FsOp::Read,
            SlowCol::Write => FsOp::Write,
            SlowCol::Fsync => FsOp::Flush,
            _ => return None,
        };
        Some((nr, op))
    });
    by_fd.chain(OPEN_SYSCALLS.iter().map(|&nr| (nr, FsOp::Open)))
}

/// The `fs_op` table BPF reads and the `fs_mask` of file systems timed, for `probe_bits`
/// (all zero when no file-system table is selected).
pub fn fs_tables(probe_bits: u32) -> ([u8; TABLE_LEN], u8) {
    let mask = FsKind::ALL
        .iter()
        .filter(|k| probe_bits & k.probe_bit() != 0)
        .fold(0u8, |m, k| m | 1 << *k as u8);
    let mut t = [0u8; TABLE_LEN];
    if mask != 0 {
        for (nr, op) in fs_syscalls() {
            t[nr as usize] = op as u8;
        }
    }
    (t, mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::*;

    #[test]
    fn numbers_fit_the_table_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &(nr, _) in SLOW_SYSCALLS {
            assert!((nr as usize) < TABLE_LEN);
            assert!(seen.insert(nr), "syscall {nr} listed twice");
        }
    }

    #[test]
    fn bits_select_columns() {
        let all = column_table(u32::MAX);
        assert!(any_timed(&all));
        let none = column_table(BIT_SYSCALL | BIT_IO);
        assert!(!any_timed(&none));
        let only_sched = column_table(BIT_SCHED_SYSCALL);
        for (nr, &c) in only_sched.iter().enumerate() {
            if c != 0 {
                let col = SLOW_SYSCALLS
                    .iter()
                    .find(|(n, _)| *n as usize == nr)
                    .map(|x| x.1);
                assert_eq!(col.map(SlowCol::probe_bit), Some(BIT_SCHED_SYSCALL));
            }
        }
        assert!(any_timed(&only_sched));
    }

    #[test]
    fn fs_bits_select_file_systems() {
        let (t, mask) = fs_tables(BIT_EXT4 | BIT_TMPFS);
        assert_eq!(mask, 0b101);
        assert_eq!(t[libc::SYS_openat as usize], FsOp::Open as u8);
        assert_eq!(t[libc::SYS_fdatasync as usize], FsOp::Flush as u8);
        assert_eq!(t[libc::SYS_close as usize], 0);
        let (t, mask) = fs_tables(BIT_IO_SYSCALL | BIT_THREAD_CPU);
        assert_eq!(mask, 0);
        assert!(t.iter().all(|&op| op == 0));
        let mut seen = std::collections::HashSet::new();
        for (nr, _) in fs_syscalls() {
            assert!((nr as usize) < TABLE_LEN && seen.insert(nr), "{nr}");
        }
        assert_eq!(t[libc::SYS_preadv2 as usize], 0, "no fs bit: nothing timed");
        let (all, _) = fs_tables(BIT_EXT4);
        assert_eq!(all[libc::SYS_preadv2 as usize], FsOp::Read as u8);
        assert_eq!(all[libc::SYS_pwritev as usize], FsOp::Write as u8);
        assert_eq!(all[libc::SYS_mount as usize], 0);
        let slots: std::collections::HashSet<usize> = FsKind::ALL
            .iter()
            .flat_map(|k| FsOp::ALL.map(|o| k.slot(o)))
            .collect();
        assert_eq!(slots.len(), 12);
        assert!(slots.iter().all(|&s| s < FS_SLOTS));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_known_numbers() {
        let t = column_table(u32::MAX);
        assert_eq!(t[0], SlowCol::Read as u8);
        assert_eq!(t[1], SlowCol::Write as u8);
        assert_eq!(t[202], SlowCol::Futex as u8);
        assert_eq!(t[57], SlowCol::Fork as u8);
        assert_eq!(t[libc::SYS_openat as usize], 0);
        assert_eq!(t[libc::SYS_close as usize], 0);
    }
}
