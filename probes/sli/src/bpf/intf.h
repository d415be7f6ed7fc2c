/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * intf.h - layout shared by sli.bpf.c and sliprobe's Rust code (via the skeleton's types;
 * src/decode.rs reads map values into them). Change both sides together.
 */
#ifndef SLIPROBE_INTF_H
#define SLIPROBE_INTF_H

/* Which cgroup id the programs key their statistics by (set before load). */
enum sli_cgrp_mode {
	SLI_CGRP_DFL = 0,    /* the task's cgroup in the v2 (unified) hierarchy */
	SLI_CGRP_V1_CPU = 1, /* the task's cgroup in the v1 hierarchy of the cpu controller */
};

/* Latencies kept in cpu_stats. */
enum sli_cpu_kind {
	SLI_CPU_RUNDELAY = 0, /* runnable (woken or preempted) until switched in */
	SLI_CPU_SLEEP = 1,    /* switched out in TASK_INTERRUPTIBLE until woken */
	SLI_CPU_BLOCK = 2,    /* switched out in TASK_UNINTERRUPTIBLE, not in iowait, until woken */
	SLI_CPU_IOWAIT = 3,   /* switched out in TASK_UNINTERRUPTIBLE in iowait until woken */
	SLI_CPU_NR = 4,
};

/* Latencies kept in memio_stats. */
enum sli_memio_kind {
	SLI_MEM_RECLAIM = 0, /* direct or memcg reclaim begin -> end */
	SLI_MEM_COMPACT = 1, /* compaction begin -> end in a user task */
	SLI_IO_BIO = 2,      /* block_bio_queue -> block_bio_complete */
	SLI_MEMIO_NR = 3,
};

/* What a task is waiting for since sli_task.ts. */
enum sli_task_state {
	SLI_TS_NONE = 0,   /* running, or nothing measured */
	SLI_TS_RUNQ = 1,   /* runnable: woken, new, or switched out while runnable */
	SLI_TS_SLEEP = 2,  /* switched out in TASK_INTERRUPTIBLE */
	SLI_TS_BLOCK = 3,  /* switched out in TASK_UNINTERRUPTIBLE, not in iowait */
	SLI_TS_IOWAIT = 4, /* switched out in TASK_UNINTERRUPTIBLE with in_iowait set */
};

/* Kinds per statistics group (cpu_stats and memio_stats share the value layout). */
#define SLI_GROUP_KINDS 4

/*
 * Latency buckets: slot i counts latencies <= lat_bounds_ns[i] (and > the previous bound); the
 * last slot also takes anything longer. The bounds are in .rodata (lat_bounds_ns), read by user
 * space from the skeleton.
 */
#define SLI_LAT_SLOTS 14

struct sli_lat {
	__u64 slots[SLI_LAT_SLOTS];
	__u64 sum_ns;
	__u64 count;
};

/*
 * Largest latencies of one report period on one CPU. User space numbers the periods
 * (period_epoch); a program that finds an older epoch here rolls cur into prev first, so user
 * space can still read the period that just ended from prev when this CPU has moved on.
 */
struct sli_period_max {
	__u32 epoch;
	__u32 prev_epoch;
	__u64 max_ns[SLI_GROUP_KINDS];
	__u64 prev_max_ns[SLI_GROUP_KINDS];
};

/* Per cgroup id, per CPU; cumulative since the element was created (except max). */
struct sli_group {
	struct sli_lat lat[SLI_GROUP_KINDS];
	struct sli_period_max max;
};

/* Per task (task storage): the wait or sleep in progress, and memory stalls in progress. */
struct sli_task {
	__u64 ts;         /* start of the state below */
	__u64 reclaim_ts; /* reclaim begun at, 0 if none */
	__u64 compact_ts; /* compaction begun at, 0 if none */
	__u32 state;      /* enum sli_task_state */
	__u32 gen;        /* hook generation the timestamps belong to */
};

/* Per bio in flight (keyed by its pointer). */
struct sli_bio {
	__u64 ts;   /* block_bio_queue time */
	__u64 cgid; /* cgroup id of the submitting task */
	__u32 gen;
	__u32 _pad;
};

#endif /* SLIPROBE_INTF_H */
