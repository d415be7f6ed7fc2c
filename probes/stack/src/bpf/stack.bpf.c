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
#define PF_EXITING 0x00000004

/* Set before load, for the benchmark's floor: on_switch returns at once (the cost of the
 * tracepoint and the program call alone). The verifier prunes the check when unset. */
const volatile __u8 noop_switch = 0;

/* Run-time knobs (.bss, written by user space while the programs run). */
__u32 epoch;          /* see the comment at the top */
__u32 filter_mode;    /* enum filter_mode */
__u8 offcpu_on;       /* the off-CPU sub-probe is on */
__u64 min_block_ns;   /* shorter off-CPU stretches are counted (ST_SHORT), not recorded */
__u32 hints_gen;      /* bumped by user space when it taught new hints */

/* A stack map is a hash table with one stack per bucket: a new stack whose bucket holds another
 * is not stored (ST_COLLISIONS; its sample still counts, under STACK_LOST). With n distinct
 * stacks in an epoch about n * n / (2 * 16384) are lost: 20 busy processes, on- and off-CPU,
 * lost 7 of 14,282 in 20 s with 8192 buckets. 16,384 stacks of 127 frames: ~17 MB a map. */
#define STACK_MAP(name)                                                  \
	struct {                                                         \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);                  \
		__uint(max_entries, 16384);                              \
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

/* Selected (FILTER_INCLUDE) or excluded (FILTER_EXCLUDE) processes: bit (tgid % 64) of word
 * tgid / 64, for every possible tgid (PID_MAX_LIMIT is 4M). A bitmap, not a hash: the check runs
 * at every context switch of the host, and an array lookup is inlined to a load. */
#define TGID_WORDS (4194304 / 64)
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TGID_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} tgid_bits SEC(".maps");

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

static __always_inline bool listed(__u32 tgid)
{
	__u32 word = tgid / 64;
	__u64 *bits = bpf_map_lookup_elem(&tgid_bits, &word);

	return bits && (*bits >> (tgid % 64)) & 1;
}

static __always_inline bool selected(__u32 tgid)
{
	__u32 mode = filter_mode;

	if (mode == FILTER_ALL)
		return true;
	if (mode == FILTER_INCLUDE)
		return listed(tgid);
	return !listed(tgid);
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

/* Return addresses past frameless functions at the top of a user stack (instruction pointer
 * @ip, stack pointer @sp), as the hints say (src/hints.rs): while a hint gives the offset of the
 * return address from the stack pointer. @other: @task is not the current task (its memory is
 * read with bpf_copy_from_user_task, sleepable programs only; the branch not taken is compiled
 * out, since @other is a constant at every call). */
static __always_inline void hint_rets(struct task_struct *task, __u32 tgid, __u64 ip, __u64 sp,
				      __u64 *rets, const bool other)
{
	struct hint_key hk = { .tgid = tgid, .ip = ip };
	__u64 ra;

	for (int i = 0; i < MAX_HINTS; i++) {
		__s32 *off = bpf_map_lookup_elem(&hints, &hk);
		void *at;
		__s32 o;

		if (!off)
			break;
		o = *off;
		if (o < 0 || o > 4096)
			break;
		at = (void *)(sp + o);
		if ((other ? bpf_copy_from_user_task(&ra, sizeof(ra), at, task, 0)
			   : bpf_probe_read_user(&ra, sizeof(ra), at)) ||
		    !ra)
			break;
		rets[i] = ra;
		sp += o + 8;
		hk.ip = ra;
	}
}

/* The hints' return addresses of the current task, from the user registers saved at its last
 * kernel entry. */
static __always_inline void unwind_hints(__u32 tgid, __u64 *rets)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs;

	if (task->flags & PF_KTHREAD)
		return;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	hint_rets(task, tgid, BPF_CORE_READ(regs, ip), BPF_CORE_READ(regs, sp), rets, false);
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

/* Where a thread last went off-CPU, and the stacks taken then. */
struct switch_site {
	__u64 ip, sp, bp, ret, nr;
	__u32 epoch;
	__u32 kind;
	__s32 kstack;
	__s32 ustack;
	__u64 rets[MAX_HINTS];
};

/* A thread's last two sites (task storage): a thread often alternates between two, e.g. blocked
 * in read() and preempted in write() by the task it woke. */
struct switch_sites {
	struct switch_site site[2];
	__u32 next; /* the entry to replace on a miss */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct switch_sites);
} sites SEC(".maps");

static __always_inline bool same_site(const struct switch_site *a, const struct switch_site *b,
				      __u32 e)
{
	return a->epoch == e && a->ip == b->ip && a->sp == b->sp && a->bp == b->bp &&
	       a->ret == b->ret && a->nr == b->nr && a->kind == b->kind;
}

/* The stacks of @prev (the current task) going off-CPU, into @st. Walking them costs about a
 * microsecond (the kernel stack most); a thread that goes off-CPU again from the same place —
 * the same user registers (instruction, stack and frame pointers), the same return address of
 * its innermost frame-pointer frame, the same system call, blocked or preempted alike — in the
 * same epoch has the same stacks, so they are reused from its `sites` entry (ST_SITE_HITS). A
 * different call path that reaches the same site with the same registers and the same innermost
 * return address would be given the first path's stacks beyond that frame: the price of not
 * walking, documented in docs/probes/stack.md. */
static __always_inline void off_stacks(void *ctx, struct task_struct *prev, bool preempt,
				       __u32 e, struct off_start *st)
{
	struct switch_sites *c = NULL;
	struct switch_site now = {};
	const struct switch_site *hit = NULL;
	struct pt_regs *regs;
	__u32 slot;

	if (!(prev->flags & PF_KTHREAD)) {
		regs = (struct pt_regs *)bpf_task_pt_regs(prev);
		now.ip = BPF_CORE_READ(regs, ip);
		now.sp = BPF_CORE_READ(regs, sp);
		now.bp = BPF_CORE_READ(regs, bp);
		now.nr = BPF_CORE_READ(regs, orig_ax);
		now.kind = preempt;
		if (bpf_probe_read_user(&now.ret, sizeof(now.ret), (void *)(now.bp + 8)))
			now.ret = 0;
		c = bpf_task_storage_get(&sites, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (c && same_site(&c->site[0], &now, e))
			hit = &c->site[0];
		else if (c && same_site(&c->site[1], &now, e))
			hit = &c->site[1];
		if (hit) {
			st->kstack = hit->kstack;
			st->ustack = hit->ustack;
			__builtin_memcpy(st->rets, hit->rets, sizeof(st->rets));
			st_count(ST_SITE_HITS);
			return;
		}
	}
	st->kstack = stack_id(ctx, e & 1, 0);
	st->ustack = stack_id(ctx, e & 1, BPF_F_USER_STACK);
	if (st->ustack >= 0)
		unwind_hints(st->tgid, st->rets);
	/* Only stacks that were stored are worth reusing. */
	if (c && st->kstack != STACK_LOST && st->ustack != STACK_LOST) {
		now.epoch = e;
		now.kstack = st->kstack;
		now.ustack = st->ustack;
		__builtin_memcpy(now.rets, st->rets, sizeof(now.rets));
		slot = c->next & 1;
		c->site[slot] = now;
		c->next = slot ^ 1;
	}
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u32 ptid = prev->pid, ptgid = prev->tgid, ntid = next->pid, e;
	struct off_start *s;
	__u64 now;

	if (noop_switch || !offcpu_on)
		return 0;
	e = epoch;
	now = 0;
	/* prev is the current task here: its stacks are the ones at the switch. A dying thread
	 * never runs again. The clock is read only for a selected thread (an untracked switch
	 * costs the two filter loads). */
	if (ptid && !(prev_state & TASK_DEAD) && selected(ptgid)) {
		now = bpf_ktime_get_ns();
		struct off_start st = {
			.ts = now,
			.tgid = ptgid,
			.epoch = e,
		};

		off_stacks(ctx, prev, preempt, e, &st);
		gg_map_update(&starts, &ptid, &st, BPF_ANY);
	}
	/* Only a selected thread can have a start (checked first: a load, where the lookup in
	 * `starts` is a hash). */
	if (!ntid || !selected(next->tgid))
		return 0;
	s = bpf_map_lookup_elem(&starts, &ntid);
	if (!s)
		return 0;
	if (!now)
		now = bpf_ktime_get_ns();
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

/* ---- Off-CPU by sampling (the default method, src/sampler.rs) ----
 *
 * No program runs at context switches: every sample period user space reads this iterator over
 * the selected processes' threads (one iterator link per process, or one over every task). A
 * thread off the CPU at that moment gets a record with the off-CPU time it accumulated since its
 * previous record — wall time minus the run time the scheduler accounted (se.sum_exec_runtime),
 * so the time is exact and only its attribution to stacks is sampled — and its stacks. A thread
 * that has not been switched (nvcsw + nivcsw unchanged) since its last walk is where it was: its
 * stacks are not walked again (ST_OFF_WALKS counts the walks) unless user space taught new
 * unwinding hints since (hints_gen). Its user stack is walked here
 * through frame pointers with bpf_copy_from_user_task (the thread is not current, so the stack
 * helpers cannot), past frameless functions with the same hints as the other programs. */

struct samp_state {
	__u64 t;         /* ktime of the last visit */
	__u64 rt;        /* se.sum_exec_runtime then */
	__u64 nsw;       /* nvcsw + nivcsw at the last walk */
	__u64 carry;     /* off-CPU ns not yet in a record */
	__u64 pass;      /* samp_ctl.pass of the last visit */
	__u64 last_ns;   /* ns of the last record (shown again in the same pass) */
	__u32 gen;       /* walks so far (0: none) */
	__u32 last_new;  /* the last record had frames */
	__u32 hints_gen; /* hints_gen of the last walk */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct samp_state);
} samp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct samp_ctl);
} samp_ctl SEC(".maps");

#define SAMP_FRAMES 256 /* >= 2 * MAX_FRAMES, a power of two for the index mask */
struct samp_buf {
	struct samp_rec rec;
	__u64 frames[SAMP_FRAMES];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct samp_buf);
} samp_scratch SEC(".maps");

struct fp_frame {
	__u64 bp;
	__u64 ret;
};

/* b->frames[i] = v, the index masked after a barrier: the compiler, knowing i is in bounds,
 * would drop a plain mask the verifier needs. */
static __always_inline void put_frame(struct samp_buf *b, __u32 i, __u64 v)
{
	asm volatile("" : "+r"(i));
	b->frames[i & (SAMP_FRAMES - 1)] = v;
}

/* The user stack of @task (not current) into b->frames from index @at: the instruction pointer
 * saved at its last kernel entry, then the frame-pointer chain; the hints' return addresses
 * into b->rec.rets. Returns the number of frames. */
static __always_inline __u32 walk_user(struct task_struct *task, struct samp_buf *b, __u32 at)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	__u64 ip, sp, bp;
	struct fp_frame f;
	__u32 n = 0;

	ip = BPF_CORE_READ(regs, ip);
	sp = BPF_CORE_READ(regs, sp);
	bp = BPF_CORE_READ(regs, bp);
	if (!ip)
		return 0;
	put_frame(b, at, ip);
	n = 1;
	hint_rets(task, task->tgid, ip, sp, b->rec.rets, true);
	for (int i = 1; i < MAX_FRAMES; i++) {
		if (!bp || bp & 7)
			break;
		if (bpf_copy_from_user_task(&f, sizeof(f), (void *)bp, task, 0) || !f.ret)
			break;
		put_frame(b, at + n, f.ret);
		n++;
		/* The chain goes up the stack; anything else is not a frame chain. */
		if (f.bp <= bp)
			break;
		bp = f.bp;
	}
	return n;
}

SEC("iter.s/task")
int offcpu_tick(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct samp_state *st;
	struct samp_ctl *ctl;
	struct samp_buf *b;
	__u32 zero = 0, tgid, tid, nbytes = 0, hg;
	__u64 now, rt, nsw, pass;
	bool rerun, walk;
	long kb;

	if (!task)
		return 0;
	tgid = task->tgid;
	tid = task->pid;
	if (!tid || (task->flags & PF_EXITING) || !selected(tgid))
		return 0;
	ctl = bpf_map_lookup_elem(&samp_ctl, &zero);
	b = bpf_map_lookup_elem(&samp_scratch, &zero);
	if (!ctl || !b)
		return 0;
	pass = ctl->pass;
	st = bpf_task_storage_get(&samp, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st) {
		st_count(ST_OFF_NO_STATE);
		return 0;
	}
	/* Shown again in the same pass: the same record, nothing counted twice. */
	rerun = st->pass == pass;
	if (!rerun) {
		now = bpf_ktime_get_ns();
		rt = task->se.sum_exec_runtime;
		if (st->t && now > st->t && st->pass + 1 == pass) {
			__u64 d = now - st->t, on = rt - st->rt;

			if (d > on)
				st->carry += d - on;
		} else {
			/* First visit, or the first after passes that did not visit the thread
			 * (off-CPU sampling was off, or its process not selected): the time since
			 * its last visit was not profiled, and what it carried belonged to before. */
			st->carry = 0;
		}
		st->t = now;
		st->rt = rt;
		st->pass = pass;
		st->last_ns = 0;
		st->last_new = 0;
		/* A thread on a CPU now: its off-CPU time waits for a sample that finds it off. */
		if (task->on_cpu)
			return 0;
		nsw = task->nvcsw + task->nivcsw;
		hg = hints_gen;
		/* Walked again when it ran since, or when new hints may let the walk go further
		 * (a thread blocked since before its hints were taught). */
		walk = !st->gen || nsw != st->nsw || hg != st->hints_gen;
		if (walk) {
			st->gen++;
			st->nsw = nsw;
			st->hints_gen = hg;
		}
		st->last_ns = st->carry;
		st->last_new = walk;
		st->carry = 0;
		if (!walk && !st->last_ns)
			return 0;
		st_count(ST_OFF_SAMPLES);
		gg_count(GG_STAT_EVENTS);
	} else if (!st->last_ns && !st->last_new) {
		return 0;
	}
	__builtin_memset(&b->rec, 0, sizeof(b->rec));
	b->rec.tgid = tgid;
	b->rec.tid = tid;
	b->rec.ns = st->last_ns;
	b->rec.gen = st->gen;
	if (st->last_new) {
		__u32 nk = 0, nu = 0;

		b->rec.flags = SAMP_NEW;
		kb = bpf_get_task_stack(task, b->frames, MAX_FRAMES * sizeof(__u64), 0);
		if (kb > 0)
			nk = kb / sizeof(__u64);
		if (nk > MAX_FRAMES)
			nk = MAX_FRAMES;
		if (!(task->flags & PF_KTHREAD))
			nu = walk_user(task, b, nk);
		if (nu > MAX_FRAMES)
			nu = MAX_FRAMES;
		b->rec.nk = nk;
		b->rec.nu = nu;
		nbytes = (nk + nu) * sizeof(__u64);
		if (!rerun)
			st_count(ST_OFF_WALKS);
	}
	/* nbytes < sizeof(b->frames) (2 * MAX_FRAMES frames at most): the mask, after the
	 * barrier, only shows the verifier the bound. */
	asm volatile("" : "+r"(nbytes));
	bpf_seq_write(seq, b, sizeof(b->rec) + (nbytes & (sizeof(b->frames) - 1)));
	return 0;
}
