// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sliprobe: per-cgroup latency statistics aggregated in per-CPU maps (no per-event output).
 *
 * Hooks (tp_btf; no kprobe, no fentry):
 *   sched_wakeup, sched_wakeup_new, sched_switch
 *       run delay: runnable (woken, new, or switched out while still runnable) until switched
 *       in; sleep / block / iowait: switched out in TASK_INTERRUPTIBLE / TASK_UNINTERRUPTIBLE
 *       (in_iowait or not) until woken. The state in progress is kept per task (task storage).
 *   mm_vmscan_direct_reclaim_begin/end, mm_vmscan_memcg_reclaim_begin/end   reclaim stalls
 *   mm_compaction_begin/end                                                  compaction stalls
 *   block_bio_queue -> block_bio_complete (bio-based devices: dm, md, ...) or
 *   block_rq_complete (request-based devices, whose bios' completion is not traced
 *   separately: blk_update_request clears BIO_TRACE_COMPLETION)              bio latency
 *
 * Every latency is added to the statistics of the task's cgroup (cgrp_mode says which
 * hierarchy's id); user space reads cpu_stats and memio_stats once per period and maps cgroup
 * ids to containers. Kernel threads are left out of the CPU and memory statistics (kcompactd,
 * kswapd and worker threads are background work, and upstream leaves them out of the CPU
 * ones); every bio counts, in the cgroup of whoever submitted it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "gg_common.h"
#include "intf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PF_IDLE 0x00000002
#define PF_KTHREAD 0x00200000
#define TASK_INTERRUPTIBLE 0x1
#define TASK_UNINTERRUPTIBLE 0x2

/* Set before load. */
const volatile __u32 cgrp_mode = SLI_CGRP_DFL;
/* Upper bounds of the latency slots (SLI_LAT_SLOTS), ns; user space reads them from .rodata. */
const volatile __u64 lat_bounds_ns[SLI_LAT_SLOTS] = {
	10000ULL,	  /* 10 us */
	50000ULL,	  /* 50 us */
	100000ULL,	  /* 100 us */
	250000ULL,	  /* 250 us */
	500000ULL,	  /* 500 us */
	1000000ULL,	  /* 1 ms */
	5000000ULL,	  /* 5 ms */
	10000000ULL,	  /* 10 ms */
	50000000ULL,	  /* 50 ms */
	100000000ULL,	  /* 100 ms */
	500000000ULL,	  /* 500 ms */
	1000000000ULL,	  /* 1 s */
	10000000000ULL,	  /* 10 s */
	86400000000000ULL, /* 1 day, and anything longer */
};

/* Number of the current report period; user space increments it at each period boundary. */
volatile __u32 period_epoch;
/*
 * Hook generation: user space bumps it whenever it attaches programs again after a detach, so a
 * timestamp taken before the gap is dropped instead of measured across it.
 */
volatile __u32 gen;

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sli_task);
} sli_tasks SEC(".maps");

/* Per cgroup id. Not preallocated: memory is taken only for the cgroups that have events. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct sli_group);
} cpu_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct sli_group);
} memio_stats SEC(".maps");

/* Bio pointer -> queue time. LRU: a bio whose completion is never traced cannot fill it up. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct sli_bio);
} bio_starts SEC(".maps");

/* Template for new statistics elements (too large for the 512-byte BPF stack). */
const struct sli_group zero_group = {};
/* Not used at run time: they make the skeleton generate the enums of intf.h for Rust. */
enum sli_cgrp_mode sli_cgrp_mode_type = 0;
enum sli_cpu_kind sli_cpu_kind_type = 0;
enum sli_memio_kind sli_memio_kind_type = 0;
enum sli_task_state sli_task_state_type = 0;

static __always_inline bool skip_task(struct task_struct *p)
{
	return p->pid == 0 || (p->flags & (PF_KTHREAD | PF_IDLE));
}

/* The task's cgroup id in the hierarchy user space walks (see enum sli_cgrp_mode). */
static __always_inline __u64 task_cgid(struct task_struct *p)
{
	struct css_set *cset = p->cgroups;
	struct cgroup *cgrp;

	if (!cset)
		return 0;
	if (cgrp_mode == SLI_CGRP_V1_CPU &&
	    bpf_core_enum_value_exists(enum cgroup_subsys_id, cpu_cgrp_id)) {
		int id = bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id);
		struct cgroup_subsys_state *css;

		if (id < 0 || id >= CGROUP_SUBSYS_COUNT)
			return 0;
		css = cset->subsys[id];
		if (!css)
			return 0;
		cgrp = css->cgroup;
	} else {
		cgrp = cset->dfl_cgrp;
	}
	if (!cgrp || !cgrp->kn)
		return 0;
	return cgrp->kn->id;
}

static __always_inline __u32 lat_slot(__u64 ns)
{
	__u32 i;

#pragma unroll
	for (i = 0; i < SLI_LAT_SLOTS - 1; i++) {
		if (ns <= lat_bounds_ns[i])
			return i;
	}
	return SLI_LAT_SLOTS - 1;
}

/* Starts a new period on this CPU's maxima if user space has moved on since the last update. */
static __always_inline void max_roll(struct sli_period_max *m)
{
	__u32 epoch = period_epoch;
	__u32 i;

	if (m->epoch == epoch)
		return;
	if (m->epoch + 1 == epoch) {
		m->prev_epoch = m->epoch;
#pragma unroll
		for (i = 0; i < SLI_GROUP_KINDS; i++)
			m->prev_max_ns[i] = m->max_ns[i];
	}
	m->epoch = epoch;
#pragma unroll
	for (i = 0; i < SLI_GROUP_KINDS; i++)
		m->max_ns[i] = 0;
}

/* Adds one latency of @kind to @cgid's statistics in @map (created on first use). */
static __always_inline void account(void *map, __u64 cgid, __u32 kind, __u64 ns)
{
	struct sli_group *s = bpf_map_lookup_elem(map, &cgid);
	struct sli_lat *l;
	__u32 slot;

	if (!s) {
		gg_map_update(map, &cgid, &zero_group, BPF_NOEXIST);
		s = bpf_map_lookup_elem(map, &cgid);
		if (!s)
			return;
	}
	kind &= SLI_GROUP_KINDS - 1; /* bounds for the verifier */
	slot = lat_slot(ns);
	if (slot >= SLI_LAT_SLOTS)
		return;
	l = &s->lat[kind];
	l->slots[slot] += 1;
	l->sum_ns += ns;
	l->count += 1;
	max_roll(&s->max);
	if (ns > s->max.max_ns[kind])
		s->max.max_ns[kind] = ns;
	gg_count(GG_STAT_EVENTS);
}

/*
 * The task's state, created if @create; a state left by an older hook generation is cleared
 * first, so no reader has to check the generation.
 */
static __always_inline struct sli_task *task_state(struct task_struct *p, bool create)
{
	struct sli_task *t;
	__u32 g = gen;

	t = bpf_task_storage_get(&sli_tasks, p, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (!t) {
		if (create)
			gg_count(GG_STAT_LOST);
		return 0;
	}
	if (t->gen != g) {
		t->ts = 0;
		t->reclaim_ts = 0;
		t->compact_ts = 0;
		t->state = SLI_TS_NONE;
		t->gen = g;
	}
	return t;
}

static __always_inline int on_wakeup(struct task_struct *p, bool new_task)
{
	struct sli_task *t;
	__u64 now;
	__u32 kind;

	if (skip_task(p))
		return 0;
	t = task_state(p, true);
	if (!t)
		return 0;
	now = bpf_ktime_get_ns();
	switch (t->state) {
	case SLI_TS_RUNQ:
		/* Already runnable (preempted, then woken): the wait goes on from its start. */
		if (!new_task)
			return 0;
		break;
	case SLI_TS_SLEEP:
		kind = SLI_CPU_SLEEP;
		goto slept;
	case SLI_TS_BLOCK:
		kind = SLI_CPU_BLOCK;
		goto slept;
	case SLI_TS_IOWAIT:
		kind = SLI_CPU_IOWAIT;
slept:
		if (t->ts && now >= t->ts)
			account(&cpu_stats, task_cgid(p), kind, now - t->ts);
		break;
	default:
		break;
	}
	/*
	 * SLI_TS_NONE: the task is not known to be off the CPU (a wake-up of a task still running,
	 * or one not seen since the probe attached). Its next switch-out overwrites this anyway.
	 */
	t->state = SLI_TS_RUNQ;
	t->ts = now;
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(sli_wakeup, struct task_struct *p)
{
	return on_wakeup(p, false);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(sli_wakeup_new, struct task_struct *p)
{
	return on_wakeup(p, true);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(sli_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	struct sli_task *t;
	__u64 now = bpf_ktime_get_ns();
	__u32 st = SLI_TS_NONE;

	if (!skip_task(prev)) {
		if (preempt || prev_state == 0)
			st = SLI_TS_RUNQ; /* still runnable: waits for a CPU from now on */
		else if (prev_state & TASK_INTERRUPTIBLE)
			st = SLI_TS_SLEEP;
		else if (prev_state & TASK_UNINTERRUPTIBLE)
			st = BPF_CORE_READ_BITFIELD(prev, in_iowait) ? SLI_TS_IOWAIT : SLI_TS_BLOCK;
		/* Stopped, traced or dead: nothing to measure. */
		t = task_state(prev, st != SLI_TS_NONE);
		if (t) {
			t->state = st;
			t->ts = now;
		}
	}
	if (!skip_task(next)) {
		t = task_state(next, false);
		if (t) {
			if (t->state == SLI_TS_RUNQ && t->ts && now >= t->ts)
				account(&cpu_stats, task_cgid(next), SLI_CPU_RUNDELAY, now - t->ts);
			t->state = SLI_TS_NONE;
			t->ts = 0;
		}
	}
	return 0;
}

/* Memory stalls of the current (user) task: begin stores the time, end measures. */
static __always_inline int stall_begin(bool compact)
{
	struct task_struct *p = bpf_get_current_task_btf();
	struct sli_task *t;

	if (skip_task(p))
		return 0;
	t = task_state(p, true);
	if (!t)
		return 0;
	if (compact)
		t->compact_ts = bpf_ktime_get_ns();
	else
		t->reclaim_ts = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int stall_end(bool compact)
{
	struct task_struct *p = bpf_get_current_task_btf();
	struct sli_task *t;
	__u64 now, start;

	if (skip_task(p))
		return 0;
	t = task_state(p, false);
	if (!t)
		return 0;
	start = compact ? t->compact_ts : t->reclaim_ts;
	if (compact)
		t->compact_ts = 0;
	else
		t->reclaim_ts = 0;
	now = bpf_ktime_get_ns();
	if (start && now >= start)
		account(&memio_stats, task_cgid(p), compact ? SLI_MEM_COMPACT : SLI_MEM_RECLAIM,
			now - start);
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(sli_direct_reclaim_begin)
{
	return stall_begin(false);
}

SEC("tp_btf/mm_vmscan_direct_reclaim_end")
int BPF_PROG(sli_direct_reclaim_end)
{
	return stall_end(false);
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(sli_memcg_reclaim_begin)
{
	return stall_begin(false);
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_end")
int BPF_PROG(sli_memcg_reclaim_end)
{
	return stall_end(false);
}

SEC("tp_btf/mm_compaction_begin")
int BPF_PROG(sli_compaction_begin)
{
	return stall_begin(true);
}

SEC("tp_btf/mm_compaction_end")
int BPF_PROG(sli_compaction_end)
{
	return stall_end(true);
}

SEC("tp_btf/block_bio_queue")
int BPF_PROG(sli_bio_queue, struct bio *bio)
{
	__u64 key = (__u64)bio;
	struct sli_bio v = {
		.ts = bpf_ktime_get_ns(),
		.cgid = task_cgid(bpf_get_current_task_btf()),
		.gen = gen,
	};

	gg_map_update(&bio_starts, &key, &v, BPF_ANY);
	return 0;
}

/* Accounts the bio queued at @key, if its queue time was recorded. */
static __always_inline void bio_done(__u64 key, __u64 now)
{
	struct sli_bio *v = bpf_map_lookup_elem(&bio_starts, &key);
	__u64 ts, cgid;
	__u32 g;

	if (!v)
		return;
	ts = v->ts;
	cgid = v->cgid;
	g = v->gen;
	bpf_map_delete_elem(&bio_starts, &key);
	if (g == gen && ts && now >= ts)
		account(&memio_stats, cgid, SLI_IO_BIO, now - ts);
}

SEC("tp_btf/block_bio_complete")
int BPF_PROG(sli_bio_complete, struct request_queue *q, struct bio *bio)
{
	bio_done((__u64)bio, bpf_ktime_get_ns());
	return 0;
}

/* Most bios a request completion looks at (a request holds its merged bios). */
#define SLI_RQ_BIOS 64

/*
 * A request completes @nr_bytes: its bios covered by them are done. The tracepoint fires before
 * the kernel walks and ends them, so rq->bio still lists them.
 */
SEC("tp_btf/block_rq_complete")
int BPF_PROG(sli_rq_complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	struct bio *b = rq->bio;
	__u64 now = bpf_ktime_get_ns();
	__u64 done = 0;
	__u32 i;

	for (i = 0; i < SLI_RQ_BIOS && b; i++) {
		done += b->bi_iter.bi_size;
		if (done > nr_bytes)
			break; /* partially completed: it goes on */
		bio_done((__u64)b, now);
		b = b->bi_next;
	}
	return 0;
}
