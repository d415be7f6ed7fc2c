/* SPDX-License-Identifier: GPL-2.0 */
/*
 * intf.h - layout shared by proc.bpf.c and taskprobe's Rust code (types are generated into the
 * skeleton; src/decode.rs reads and writes map values with them). Change both sides together.
 */
#ifndef TASKPROBE_INTF_H
#define TASKPROBE_INTF_H

/* Tracked-tgid filter: a direct-mapped array indexed by tgid & (TRACK_SLOTS - 1); a tgid whose
 * slot is taken by another tgid goes to the overflow hash. Must be a power of two. */
#define TRACK_SLOTS 65536

/* How the filter (tracked_slots + tracked_overflow) is read, set by user space at run time:
 * FILTER_ALL tracks every process (filter unused), FILTER_INCLUDE tracks the tgids in it,
 * FILTER_EXCLUDE tracks every process but the tgids in it. */
enum filter_mode {
	FILTER_ALL = 0,
	FILTER_INCLUDE = 1,
	FILTER_EXCLUDE = 2,
};

/* Syscall numbers below this index the slow-syscall column table. */
#define SYSCALL_TABLE_LEN 512

/* Columns of time spent in "slow" syscalls (0 = not timed). The order is the order of the
 * upstream tables: proc_syscall_io, _net, _sched, _fork. */
enum slow_col {
	COL_NONE = 0,
	COL_MOUNT,
	COL_UMOUNT,
	COL_READ,
	COL_WRITE,
	COL_FSYNC,
	COL_SENDMSG,
	COL_RECVMSG,
	COL_SCHED_YIELD,
	COL_FUTEX,
	COL_EPOLL_WAIT,
	COL_EPOLL_PWAIT,
	COL_FORK,
	COL_VFORK,
	COL_CLONE,
	COL_IOCTL,
	NR_COLS,
};

/* Power of two >= NR_COLS, so a masked column index is provably in bounds for the verifier. */
#define SLOW_SLOTS 16

/* File systems timed per process (proc_ext4, proc_overlay, proc_tmpfs), by the super block
 * magic of the file a syscall works on. */
enum fs_kind {
	FS_EXT4 = 0,
	FS_OVERLAY = 1,
	FS_TMPFS = 2,
	NR_FS = 3,
};

/* File operations timed per file system: which syscalls count for each is user space's table
 * (src/syscalls.rs, .bss fs_op). */
enum fs_op {
	FSOP_NONE = 0,
	FSOP_READ = 1,
	FSOP_WRITE = 2,
	FSOP_OPEN = 3,
	FSOP_FLUSH = 4,
	NR_FSOPS = 5,
};

/* Slots of proc_stats.fs_max/fs_ops: fs * 4 + (op - 1); a power of two >= NR_FS * 4. */
#define FS_SLOTS 16

/* A maximum over one report period: `ns` belongs to the period `period` (the value of .bss
 * `period_gen` when it was taken). User space bumps `period_gen` at each report and reads a
 * maximum taken under an older period as 0, so nothing has to be reset. */
struct period_max {
	__u64 ns;
	__u32 period;
	__u32 pad;
};

/* Per-process values (one entry per tracked tgid in map `proc_stats`): running totals since the
 * process began to be tracked, except the `period_max` fields. */
struct proc_stats {
	__u64 syscalls;
	__u64 syscall_failed;
	/* Longest single slow syscall of each column in the period ([COL_NONE] and the last slot
	 * unused): entry to exit with exact timing, else the longest blocked stretch inside one. */
	struct period_max slow_max[SLOW_SLOTS];
	__u64 forks;            /* child processes created */
	__u64 threads;          /* threads created */
	__u64 execs;
	__u64 thread_exits;
	__u64 offcpu_ns;
	__u64 iowait_ns;
	__u64 bio_small[2];     /* [0] read, [1] write; requests of <= 4 KiB */
	__u64 bio_big[2];       /* > 4 KiB */
	struct period_max bio_latency; /* longest request without error, issue to completion */
	__u64 bio_err;
	__u64 hangs;            /* sched_process_hang reports (hung-task detector) */
	/* Page cache (proc_page, sub-probe proc_pagecache): pages, counted in the process's own
	 * context (a large folio counts its pages). */
	__u64 reclaim_ns;       /* time its threads spent in direct or memcg reclaim */
	__u64 pc_access;        /* pages looked up: buffered reads, faults, fault-around */
	__u64 pc_buffer_dirty;  /* buffers marked dirty */
	__u64 pc_load;          /* pages added to the page cache */
	__u64 pc_page_dirty;    /* pages dirtied */
	/* File systems (proc_ext4, proc_overlay, proc_tmpfs; slots: FS_SLOTS): longest operation
	 * of the period and operations timed (running total). */
	struct period_max fs_max[FS_SLOTS];
	__u64 fs_ops[FS_SLOTS];
	/* The ioctl that set slow_max[COL_IOCTL] (proc_syscall_ioctl): its fd and request. */
	__s64 ioctl_fd;
	__u64 ioctl_cmd;
	__u64 dns_domains;      /* entries of the process in dns_stats (capped: dns_domain_cap) */
	/* Python GC (proc_pygc): collections seen between the gc__start and gc__done USDT
	 * probes, their time, and the period's longest. */
	__u64 pygc_count;
	__u64 pygc_ns;
	struct period_max pygc_max;
	__u32 exited;           /* 1 once the whole thread group has exited */
	__u32 in_slot;          /* 1 while syscall counts accrue in hot_slots[tgid & mask] */
	char comm[16];
};

/* DNS lookups (proc_dns): uprobes on libc's getaddrinfo, gethostbyname and gethostbyname2,
 * aggregated per process and domain. A domain name is kept up to DNS_NAME_LEN - 1 bytes. */
#define DNS_NAME_LEN 128

struct dns_key {
	__u32 tgid;
	char domain[DNS_NAME_LEN]; /* NUL-padded; DNS_OTHER for the lookups over the cap */
};

/* Running totals of one (process, domain), and the period's longest lookup. */
struct dns_stats {
	__u64 count;
	__u64 errors;
	__u64 sum_ns;
	struct period_max max;
};

/* One thread of a tracked process (thread_cpu, -P 4096): running totals. */
struct thread_stats {
	__u64 offcpu_ns;   /* time switched out (blocked or waiting to run) */
	__u64 migrations;  /* moves to another CPU (sched_migrate_task) */
	__u32 tgid;
	__u32 exited;      /* 1 once the thread has exited */
	char comm[16];
};

/* Syscall counters of a process that owns a filter slot: the hot path adds here, next to the
 * slot it just read, instead of looking the tgid up in the proc_stats hash. */
struct hot_counts {
	__u64 syscalls;
	__u64 failed;
};

/* Ring-buffer notice sent on exec while a whitelist is in use, so user space can re-evaluate the
 * process at once instead of at the next /proc rescan. */
struct exec_notice {
	__u32 tgid;
	__u32 tracked;
	char comm[16];
};

#endif /* TASKPROBE_INTF_H */
