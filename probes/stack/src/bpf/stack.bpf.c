// SPDX-License-Identifier: GPL-2.0
/* stackprobe: on-CPU stacks sampled by perf events (software cpu-clock, one event per CPU) and
 * off-CPU stacks taken when a thread is switched out (tp_btf/sched_switch), aggregated in maps
 * that user space drains every couple of seconds. No per-sample event goes to user space.
 *
 * Epochs: user space bumps `epoch` before each drain. Every map that names stacks comes in two
 * copies, selected by the epoch's parity, so user space reads and clears the previous epoch's
 * copies while the programs fill the other ones. An off-CPU stretch is keyed by the epoch in
 * which the thread was switched out (its stack ids live in that epoch's stack map); user space
 * keeps the frames of pending stretches' stacks before it clears a stack map (src/drain.rs).
 *
 * Losses: a stack that cannot be stored (bucket collision, full map) is counted and its sample
 * is still counted, under STACK_LOST; an insert refused because a map is full counts in
 * gg_stats (map_full); a program run the kernel skipped (recursion) is read from the program's
 * stats by user space. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "gg_common.h"
#include "intf.h"

char LICENSE[] SEC("license") = "GPL";

#define EFAULT 14
#define EEXIST 17
#define TASK_DEAD 0x80
#define PF_KTHREAD 0x00200000

/* Run-time knobs (.bss, written by user space while the programs run). */
__u32 epoch;          /* see the comment at the top */
__u32 filter_mode;    /* enum filter_mode */
__u8 offcpu_on;       /* the off-CPU sub-probe is on */
__u64 min_block_ns;   /* shorter off-CPU stretches are counted (ST_SHORT), not recorded */

#define STACK_MAP(name)                                                  \
	struct {                                                         \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);                  \
		__uint(max_entries, 8192);                               \
		__uint(key_size, sizeof(__u32));                         \
		__uint(value_size, MAX_FRAMES * sizeof(__u64));          \
	} name SEC(".maps")

STACK_MAP(stacks0);
STACK_MAP(stacks1);

#define COUNT_MAP(name, k, v)                                            \
	struct {                                                         \
		__uint(type, BPF_MAP_TYPE_HASH);                         \
		__uint(max_entries, 16384);                              \
		__type(key, k);                                          \
		__type(value, v);                                        \
	} name SEC(".maps")

COUNT_MAP(oncpu0, struct oncpu_key, __u64);
COUNT_MAP(oncpu1, struct oncpu_key, __u64);
COUNT_MAP(offcpu0, struct offcpu_key, struct offcpu_val);
COUNT_MAP(offcpu1, struct offcpu_key, struct offcpu_val);

/* Threads switched out, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct off_start);
} starts SEC(".maps");

/* Selected (FILTER_INCLUDE) or excluded (FILTER_EXCLUDE) processes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} tgids SEC(".maps");

/* Unwinding hints taught by user space (src/hints.rs). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct hint_key);
	__type(value, __s32);
} hints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_NR);
	__type(key, __u32);
	__type(value, __u64);
} st_stats SEC(".maps");

static __always_inline void st_count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&st_stats, &slot);

	if (v)
		*v += 1;
}

static __always_inline bool selected(__u32 tgid)
{
	__u32 mode = filter_mode;

	if (mode == FILTER_ALL)
		return true;
	if (mode == FILTER_INCLUDE)
		return bpf_map_lookup_elem(&tgids, &tgid) != NULL;
	return bpf_map_lookup_elem(&tgids, &tgid) == NULL;
}

/* A stack id for the key: the id, STACK_NONE for no stack of that kind, STACK_LOST (counted)
 * when it could not be stored. */
static __always_inline __s32 stack_id(void *ctx, __u32 parity, __u64 flags)
{
	long id = parity ? bpf_get_stackid(ctx, &stacks1, flags)
			 : bpf_get_stackid(ctx, &stacks0, flags);

	if (id >= 0)
		return id;
	if (id == -EFAULT)
		return STACK_NONE;
	st_count(id == -EEXIST ? ST_COLLISIONS : ST_STACK_FULL);
	return STACK_LOST;
}

/* Return addresses past frameless functions at the top of the current task's user stack, as
 * the hints say (src/hints.rs): from the user registers saved at the last kernel entry, while a
 * hint gives the offset of the return address from the stack pointer. */
static __always_inline void unwind_hints(__u32 tgid, __u64 *rets)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct hint_key hk = { .tgid = tgid };
	struct pt_regs *regs;
	__u64 sp, ra;

	if (task->flags & PF_KTHREAD)
		return;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	hk.ip = BPF_CORE_READ(regs, ip);
	sp = BPF_CORE_READ(regs, sp);
	for (int i = 0; i < MAX_HINTS; i++) {
		__s32 *off = bpf_map_lookup_elem(&hints, &hk);
		__s32 o;

		if (!off)
			break;
		o = *off;
		if (o < 0 || o > 4096)
			break;
		if (bpf_probe_read_user(&ra, sizeof(ra), (void *)(sp + o)) || !ra)
			break;
		rets[i] = ra;
		sp += o + 8;
		hk.ip = ra;
	}
}

/* Adds @n to the u64 at @key of @map, inserting it when absent. */
static __always_inline void add_count(void *map, void *key, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(map, key);

	if (!v) {
		__u64 zero = 0;

		if (gg_map_update(map, key, &zero, BPF_NOEXIST) && !bpf_map_lookup_elem(map, key))
			return;
		v = bpf_map_lookup_elem(map, key);
		if (!v)
			return;
	}
	__sync_fetch_and_add(v, n);
}

SEC("perf_event")
int on_cpu_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, e, parity;
	struct oncpu_key key = {};

	/* The idle task (pid 0) is not a process. */
	if ((__u32)id == 0 || !selected(tgid))
		return 0;
	e = epoch;
	parity = e & 1;
	key.tgid = tgid;
	key.epoch = e;
	key.kstack = stack_id(ctx, parity, 0);
	key.ustack = stack_id(ctx, parity, BPF_F_USER_STACK);
	if (key.ustack >= 0)
		unwind_hints(tgid, key.rets);
	add_count(parity ? (void *)&oncpu1 : (void *)&oncpu0, &key, 1);
	st_count(ST_SAMPLES);
	gg_count(GG_STAT_EVENTS);
	return 0;
}

/* Adds one stretch to the off-CPU map of the current epoch. */
static __always_inline void add_offcpu(struct offcpu_key *key, __u64 ns, __u32 parity)
{
	void *map = parity ? (void *)&offcpu1 : (void *)&offcpu0;
	struct offcpu_val *v = bpf_map_lookup_elem(map, key);

	if (!v) {
		struct offcpu_val zero = {};

		if (gg_map_update(map, key, &zero, BPF_NOEXIST) && !bpf_map_lookup_elem(map, key))
			return;
		v = bpf_map_lookup_elem(map, key);
		if (!v)
			return;
	}
	__sync_fetch_and_add(&v->ns, ns);
	__sync_fetch_and_add(&v->count, 1);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u32 ptid = prev->pid, ptgid = prev->tgid, ntid = next->pid, e;
	struct off_start *s;
	__u64 now;

	if (!offcpu_on)
		return 0;
	e = epoch;
	now = bpf_ktime_get_ns();
	/* prev is the current task here: its stacks are the ones at the switch. A dying thread
	 * never runs again. */
	if (ptid && !(prev_state & TASK_DEAD) && selected(ptgid)) {
		struct off_start st = {
			.ts = now,
			.tgid = ptgid,
			.epoch = e,
		};

		st.kstack = stack_id(ctx, e & 1, 0);
		st.ustack = stack_id(ctx, e & 1, BPF_F_USER_STACK);
		if (st.ustack >= 0)
			unwind_hints(ptgid, st.rets);
		gg_map_update(&starts, &ptid, &st, BPF_ANY);
	}
	if (!ntid)
		return 0;
	s = bpf_map_lookup_elem(&starts, &ntid);
	if (!s)
		return 0;
	if (now - s->ts >= min_block_ns) {
		struct offcpu_key key = {
			.tgid = s->tgid,
			.kstack = s->kstack,
			.ustack = s->ustack,
			.epoch = s->epoch,
		};

		__builtin_memcpy(key.rets, s->rets, sizeof(key.rets));

		/* Added before the start is deleted: user space, reading the starts and then the
		 * current map, sees the stretch in one of them. */
		add_offcpu(&key, now - s->ts, e & 1);
		st_count(ST_SWITCHES);
		gg_count(GG_STAT_EVENTS);
	} else {
		st_count(ST_SHORT);
	}
	bpf_map_delete_elem(&starts, &ntid);
	return 0;
}
