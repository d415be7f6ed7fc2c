/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Types shared by stack.bpf.c and stackprobe's user space (src/skel.rs `types`). */
#ifndef STACK_INTF_H
#define STACK_INTF_H

/* Stack ids below 0 in keys: no stack of that kind (a kernel thread has no user stack, a sample
 * taken in user mode no kernel stack), or the stack could not be stored. */
#define STACK_NONE (-1)
#define STACK_LOST (-2)

/* Frames kept per stack (the kernel's PERF_MAX_STACK_DEPTH). */
#define MAX_FRAMES 127
/* Return addresses recovered with unwinding hints (src/hints.rs) past frameless functions. */
#define MAX_HINTS 4

enum filter_mode {
	FILTER_ALL = 0,     /* every process but the idle tasks */
	FILTER_INCLUDE = 1, /* only the tgids in `tgids` */
	FILTER_EXCLUDE = 2, /* every process but the tgids in `tgids` */
};

/* Slots of `st_stats` (per-CPU counters). */
enum st_stat {
	ST_SAMPLES = 0,         /* on-CPU samples counted */
	ST_COLLISIONS = 1,      /* stacks not stored: another stack held their stack-map bucket */
	ST_STACK_FULL = 2,      /* stacks not stored: the stack map had no free entry */
	ST_SWITCHES = 3,        /* off-CPU stretches measured */
	ST_SHORT = 4,           /* off-CPU stretches below min_block_ns, not recorded */
	ST_SITE_HITS = 5,       /* switch-outs whose stacks were reused (see off_stacks) */
	ST_OFF_SAMPLES = 6,     /* sampled method: off-CPU samples taken */
	ST_OFF_WALKS = 7,       /* sampled method: stacks walked (the others reused) */
	ST_OFF_NO_STATE = 8,    /* sampled method: threads skipped, no task storage */
	ST_NR = 9,
};

/* On-CPU count key; the stack ids are in the stack map of `epoch`'s parity. `rets`: return
 * addresses the frame-pointer walk skipped (0 past the last), innermost first. */
struct oncpu_key {
	__u32 tgid;
	__s32 kstack;
	__s32 ustack;
	__u32 epoch;
	__u64 rets[MAX_HINTS];
};

/* Key of the unwinding hints: a user address of a process. The value (__s32) is the offset
 * from the stack pointer of the return address there, or -1: stop (frame pointer valid). */
struct hint_key {
	__u32 tgid;
	__u32 pad;
	__u64 ip;
};

/* Off-CPU key: the stack ids are in the stack map of `epoch`'s parity, the epoch in which the
 * thread was switched out. */
struct offcpu_key {
	__u32 tgid;
	__s32 kstack;
	__s32 ustack;
	__u32 epoch;
	__u64 rets[MAX_HINTS];
};

struct offcpu_val {
	__u64 ns;
	__u64 count;
};

/* A thread switched out and not yet switched back in (key: thread id). */
struct off_start {
	__u64 ts;
	__u32 tgid;
	__s32 kstack;
	__s32 ustack;
	__u32 epoch;
	__u64 rets[MAX_HINTS];
};

/* Sampled off-CPU method: one record of the `offcpu_tick` iterator per sampled thread that is
 * off the CPU. `ns` is the thread's off-CPU time since its previous such record (wall time minus
 * its run time, from the scheduler's own accounting). `gen` numbers the thread's stack walks:
 * with SAMP_NEW, `nk` kernel then `nu` user frames follow the record and are walk `gen`; without
 * it, the thread has not run since walk `gen` and its stacks are that walk's. */
#define SAMP_NEW 1

struct samp_rec {
	__u32 tgid;
	__u32 tid;
	__u64 ns;
	__u32 gen;
	__u16 nk;
	__u16 nu;
	__u32 flags;
	__u32 pad;
	__u64 rets[MAX_HINTS];
};

/* The iterator's run-time knob: a pass number, so a thread the iterator shows twice in one
 * pass (its output did not fit the read buffer) is not counted twice. */
struct samp_ctl {
	__u64 pass;
};

/* One stack of the stack maps, as user space reads it. */
struct stack_trace {
	__u64 ip[MAX_FRAMES];
};

#endif
