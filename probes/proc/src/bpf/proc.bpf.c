// SPDX-License-Identifier: GPL-2.0
/* taskprobe: per-process syscall counts/failures, the longest slow syscalls, lifecycle, off-CPU
 * time and block IO, aggregated in maps (no per-syscall event to user space). Counters are
 * running totals; maxima are kept per report period (struct period_max, period_gen).
 *
 * Cost model (see docs/probes/proc.md): attaching sys_enter/sys_exit at all puts every syscall
 * of every process on the kernel's syscall-work slow path, a toll no program body can avoid, so
 * those hooks load only when asked for (syscall counts, -P 1; whole-syscall timing, -S exact).
 * By default slow-syscall time comes from sched_switch: the time a thread is switched out while
 * blocked inside a slow syscall, which costs per context switch, not per syscall.
 * When the syscall hooks do run, an untracked process leaves after one array load; only tracked
 * processes pay for a hash lookup and atomic adds.
 *
 * Run-time control: the filter mode, fork inheritance, exec notices and the plan knobs live in
 * .bss and change while the programs run (the control channel, see src/control.rs); programs
 * are attached and detached as the plan changes. Each plan change bumps knob_gen, and a start
 * time saved under an older generation is dropped instead of measured, so time that passed
 * while a hook was detached or a knob was off is never counted. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>
#include "gg_common.h"
#include "gg_folio.h"
#include "intf.h"

char LICENSE[] SEC("license") = "GPL";

#define EEXIST 17
#define MAX_ERRNO 4095
#define TASK_DEAD 0x80
#define PF_EXITING 0x4
#define PF_KTHREAD 0x00200000
#define REQ_OP_MASK 0xff
/* Upstream's boundary: a request of more than 4 KiB is "greater", 4 KiB and less "less". */
#define SMALL_IO_BYTES 4096
#define ENOSYS 38
#define TS_COMPAT 0x0002
/* Super block magics of the file systems with a table (include/uapi/linux/magic.h). */
#define EXT4_SUPER_MAGIC 0xEF53
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define TMPFS_MAGIC 0x01021994

/* Knob set by user space before load. */
const volatile __u8 noop_hooks = 0;      /* benchmark floor: syscall programs do nothing */

/* Knobs user space changes at run time (.bss). */
__u32 filter_mode;       /* enum filter_mode */
__u8 inherit_forks;      /* a tracked process's forked children are tracked too */
__u8 notify_exec;        /* send an exec_notice for every exec (whitelist mode) */
__u8 account_offcpu;     /* proc_cpu enabled (sched_switch also runs without it) */
__u8 account_threads;    /* thread_cpu enabled: per-thread off-CPU time and migrations */
/* Slow-syscall timing. exact_sys_time: sys_enter/sys_exit time whole syscalls (every syscall on
 * the host pays the tracepoint toll). blocked_sys_time: sched_switch adds the time a thread
 * spends switched out while blocked inside a slow syscall (no syscall hook at all). At most one
 * is set by user space. */
__u8 exact_sys_time;
__u8 blocked_sys_time;
__u8 slow_col[SYSCALL_TABLE_LEN];
/* File-system timing (proc_ext4/overlay/tmpfs): syscall number -> enum fs_op, and the file
 * systems timed (bit 1 << enum fs_kind). Timed the way slow syscalls are (exact_sys_time or
 * blocked_sys_time), by the file system of the syscall's file. */
__u8 fs_op[SYSCALL_TABLE_LEN];
__u8 fs_mask;
/* Domains one process may have in dns_stats; its further domains are counted under
 * "(other)". Set by user space before the DNS hooks attach. */
__u32 dns_domain_cap;
/* Bumped by user space after every change of the knobs above that concern timing. */
__u32 knob_gen;
/* Report period the maxima (struct period_max) are taken in; bumped by user space right before
 * it reads the maps for a report. */
__u32 period_gen;

/* Tracked-tgid filter, shared with user space through the mmap'ed .bss. */
__u32 tracked_slots[TRACK_SLOTS];
/* Syscall counts of slot owners; folded into proc_stats when the process exits. */
struct hot_counts hot_slots[TRACK_SLOTS];
/* Non-zero once any tgid had to go to tracked_overflow (sticky; keeps the common path free of
 * hash lookups when no slot collision ever happened). */
__u32 overflow_used;

const struct proc_stats zero_stats = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* resized by user space */
	__type(key, __u32);
	__type(value, __u8);
} tracked_overflow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* resized by user space: the bound on tracked processes */
	__type(key, __u32);
	__type(value, struct proc_stats);
} proc_stats SEC(".maps");

/* Per-thread scratch: start of the current slow syscall and of the current off-CPU period,
 * each with the knob_gen it was taken under. */
struct thread_state {
	__u64 sys_start;
	__u64 off_start;
	__u32 off_iowait;
	__u32 block_col; /* slow column the thread is blocked in while switched out, or COL_NONE */
	__u32 sys_gen;
	__u32 off_gen;
	__u32 block_fs; /* fs slot + 1 of the file operation the thread is blocked in, or 0 */
	__u32 block_cmd; /* an ioctl's request, while blocked in COL_IOCTL */
	__s64 block_fd;  /* an ioctl's fd, while blocked in COL_IOCTL */
	__u64 reclaim_start; /* start of the direct or memcg reclaim the thread is in, or 0 */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} thread_state SEC(".maps");

/* Start of the slow syscall the thread running on this CPU is in, valid while that thread has
 * not been switched out since the entry (sched_switch moves it to thread_state and clears it).
 * Spares the common, non-blocking case two task-storage lookups. */
struct cpu_sys_slot {
	__u32 pid;
	__u32 gen; /* knob_gen at the entry */
	__u64 start;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_sys_slot);
} cpu_sys_slot SEC(".maps");

/* Block request in flight, issued by a tracked process. */
struct rq_start {
	__u64 ts;
	__u32 tgid;
	__u32 write;
	__u32 gen; /* knob_gen at the start: a request started before a re-attach is not timed */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct rq_start);
} rq_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} exec_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* the bound on threads reported (thread_cpu) */
	__type(key, __u32);         /* pid (thread id) */
	__type(value, struct thread_stats);
} thread_stats SEC(".maps");

/* A lookup in progress: its start and the name argument (read at return). */
struct dns_call {
	__u64 ts;
	__u64 name;
	__u32 gen; /* knob_gen at the start */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct dns_call);
} dns_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192); /* the bound on (process, domain) rows */
	__type(key, struct dns_key);
	__type(value, struct dns_stats);
} dns_stats SEC(".maps");

/* A Python collection in progress (proc_pygc): its start, per thread. */
struct pygc_call {
	__u64 ts;
	__u32 gen;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct pygc_call);
} pygc_calls SEC(".maps");

/* Scratch for the 132-byte key (kept off the 512-byte stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dns_key);
} dns_scratch SEC(".maps");

const struct dns_stats zero_dns = {};

/* Make the notice type and the enums visible to the skeleton's generated Rust types. */
struct exec_notice _exec_notice = {};
enum slow_col _slow_col = 0;
enum filter_mode _filter_mode = 0;
enum fs_kind _fs_kind = 0;
enum fs_op _fs_op = 0;
struct dns_key _dns_key = {};
struct thread_stats _thread_stats = {};
struct dns_stats _dns_stats = {};

/* Whether tgid is in the filter (slot or overflow hash). */
static __always_inline bool in_filter(__u32 tgid)
{
	if (tracked_slots[tgid & (TRACK_SLOTS - 1)] == tgid)
		return true;
	if (!overflow_used)
		return false;
	return bpf_map_lookup_elem(&tracked_overflow, &tgid) != NULL;
}

static __always_inline bool is_tracked(__u32 tgid)
{
	__u32 mode = filter_mode;

	if (tgid == 0)
		return false;
	if (mode == FILTER_ALL)
		return true;
	if (mode == FILTER_EXCLUDE)
		return !in_filter(tgid);
	return in_filter(tgid);
}

/* The thread_cpu entry of thread t (of a tracked process), created on first sight; NULL when
 * the map is full (counted). */
static __always_inline struct thread_stats *thread_entry(struct task_struct *t)
{
	struct thread_stats zero = {}, *te;
	__u32 pid = t->pid;
	long err;

	te = bpf_map_lookup_elem(&thread_stats, &pid);
	if (te)
		return te;
	zero.tgid = t->tgid;
	bpf_probe_read_kernel_str(zero.comm, sizeof(zero.comm), t->comm);
	err = gg_map_update(&thread_stats, &pid, &zero, BPF_NOEXIST);
	if (err && err != -EEXIST)
		return NULL;
	return bpf_map_lookup_elem(&thread_stats, &pid);
}

/* Raises a maximum of the current report period to ns. Two CPUs updating the same process's
 * maximum at once may keep the smaller value (no atomic max), as upstream's plain store does. */
static __always_inline bool period_max(struct period_max *m, __u64 ns)
{
	__u32 gen = period_gen;

	if (m->period != gen) {
		m->ns = ns;
		m->period = gen;
		return true;
	}
	if (ns > m->ns) {
		m->ns = ns;
		return true;
	}
	return false;
}

static __always_inline struct proc_stats *stats_of(__u32 tgid)
{
	return bpf_map_lookup_elem(&proc_stats, &tgid);
}

/* Stats entry of the current (tracked) process, created on first sight unless the filter lists
 * the tracked processes (FILTER_ALL, FILTER_EXCLUDE). */
static __always_inline struct proc_stats *stats_current(__u32 tgid)
{
	struct proc_stats *st = bpf_map_lookup_elem(&proc_stats, &tgid);
	long err;

	if (st || filter_mode == FILTER_INCLUDE)
		return st;
	err = gg_map_update(&proc_stats, &tgid, &zero_stats, BPF_NOEXIST);
	if (err && err != -EEXIST)
		return NULL;
	st = bpf_map_lookup_elem(&proc_stats, &tgid);
	if (st)
		bpf_get_current_comm(st->comm, sizeof(st->comm));
	return st;
}

/* Starts tracking a new tgid from BPF (forked child of a tracked process). */
static __always_inline void track(__u32 tgid, const char *comm)
{
	__u32 idx = tgid & (TRACK_SLOTS - 1);
	struct proc_stats *st;
	__u8 one = 1;
	long err;

	err = gg_map_update(&proc_stats, &tgid, &zero_stats, BPF_ANY);
	if (err)
		return;
	st = bpf_map_lookup_elem(&proc_stats, &tgid);
	if (st)
		bpf_probe_read_kernel_str(st->comm, sizeof(st->comm), comm);
	/* Only FILTER_INCLUDE lists tracked processes in the filter. */
	if (filter_mode != FILTER_INCLUDE)
		return;
	/* Distinct tgids only share a slot when pid_max > TRACK_SLOTS; user space re-checks the
	 * filter against proc_stats every period, which heals a lost race (no cmpxchg on BPF v1). */
	if (tracked_slots[idx] == 0) {
		hot_slots[idx].syscalls = 0;
		hot_slots[idx].failed = 0;
		if (st)
			st->in_slot = 1;
		tracked_slots[idx] = tgid;
		return;
	}
	if (gg_map_update(&tracked_overflow, &tgid, &one, BPF_ANY)) {
		bpf_map_delete_elem(&proc_stats, &tgid);
		return;
	}
	overflow_used = 1;
}

static __always_inline void untrack(__u32 tgid)
{
	__u32 idx = tgid & (TRACK_SLOTS - 1);

	if (filter_mode != FILTER_INCLUDE)
		return;
	if (tracked_slots[idx] == tgid)
		tracked_slots[idx] = 0;
	else if (overflow_used)
		bpf_map_delete_elem(&tracked_overflow, &tgid);
}

/* Moves a slot owner's hot counters into its stats entry. Called when the last thread exits,
 * so nothing adds to the hot slot concurrently; user space reads hot before stats, which keeps
 * the sum it reports whole across this move (see tracker.rs). */
static __always_inline void fold_hot(__u32 tgid, struct proc_stats *st)
{
	__u32 idx = tgid & (TRACK_SLOTS - 1);
	struct hot_counts *hot = &hot_slots[idx];

	if (!st->in_slot || tracked_slots[idx] != tgid)
		return;
	st->syscalls += hot->syscalls;
	st->syscall_failed += hot->failed;
	st->in_slot = 0;
	hot->syscalls = 0;
	hot->failed = 0;
}

static __always_inline __u8 col_of(long id)
{
	if ((unsigned long)id >= SYSCALL_TABLE_LEN)
		return COL_NONE;
	return slow_col[id];
}

static __always_inline __u8 fsop_of(long id)
{
	if ((unsigned long)id >= SYSCALL_TABLE_LEN)
		return FSOP_NONE;
	return fs_op[id];
}

/* Number of the syscall a task that is switching out blocked in, from its user register frame
 * (valid: the task is current at sched_switch); -1 when it is not inside a syscall (e.g.
 * blocked in a page fault) or in a 32-bit one (another numbering). */
static __always_inline long blocked_nr(struct task_struct *prev)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(prev);

	if (!regs)
		return -1;
#if defined(__TARGET_ARCH_arm64)
	/* syscallno is NO_SYSCALL (-1) outside syscalls. */
	return BPF_CORE_READ(regs, syscallno);
#else
	/* Exception entries put the error code in orig_ax, and a user page fault's code can equal
	 * a syscall number (0x14 = writev); syscall entry alone sets ax to -ENOSYS until return. */
	if ((long)BPF_CORE_READ(regs, ax) != -ENOSYS)
		return -1;
	if (bpf_core_field_exists(prev->thread_info.status) &&
	    (BPF_CORE_READ(prev, thread_info.status) & TS_COMPAT))
		return -1;
	return BPF_CORE_READ(regs, orig_ax);
#endif
}

/* fs_max/fs_ops slot + 1 of operation op on a file of super block sb, or 0 when that file
 * system is not timed. */
static __always_inline __u32 fs_slot_of_sb(struct super_block *sb, __u8 op)
{
	unsigned long magic;
	__u32 fs;

	if (!sb || op == FSOP_NONE || op >= NR_FSOPS)
		return 0;
	magic = BPF_CORE_READ(sb, s_magic);
	if (magic == EXT4_SUPER_MAGIC)
		fs = FS_EXT4;
	else if (magic == OVERLAYFS_SUPER_MAGIC)
		fs = FS_OVERLAY;
	else if (magic == TMPFS_MAGIC)
		fs = FS_TMPFS;
	else
		return 0;
	if (!(fs_mask & (1 << fs)))
		return 0;
	return fs * 4 + op;
}

/* The slot (+ 1) of operation op on task t's file descriptor fd, or 0. */
static __always_inline __u32 fs_slot_of_fd(struct task_struct *t, long fd, __u8 op)
{
	struct files_struct *files = BPF_CORE_READ(t, files);
	struct fdtable *fdt;
	struct file **fds;
	struct file *f = NULL;

	if (!files || fd < 0)
		return 0;
	fdt = BPF_CORE_READ(files, fdt);
	if (!fdt || (unsigned long)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	if (!fds || bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return 0;
	return fs_slot_of_sb(BPF_CORE_READ(f, f_inode, i_sb), op);
}

/* The slot (+ 1) of a file operation a thread switching out is blocked in: by the file of its
 * descriptor argument, or for an open by where its path walk is (no file yet). */
static __always_inline __u32 blocked_fs_slot(struct task_struct *prev, long nr)
{
	struct pt_regs *regs;
	struct nameidata *nd;
	__u8 op = fsop_of(nr);

	if (op == FSOP_NONE)
		return 0;
	if (op == FSOP_OPEN) {
		nd = BPF_CORE_READ(prev, nameidata);
		if (!nd)
			return 0;
		return fs_slot_of_sb(BPF_CORE_READ(nd, path.dentry, d_sb), op);
	}
	regs = (struct pt_regs *)bpf_task_pt_regs(prev);
	if (!regs)
		return 0;
	return fs_slot_of_fd(prev, PT_REGS_PARM1_CORE_SYSCALL(regs), op);
}

/* Records one timed file operation: slot1 is its slot + 1 (non-zero). */
static __always_inline void fs_account(struct proc_stats *st, __u32 slot1, __u64 ns)
{
	__u32 idx = slot1 - 1;

	barrier_var(idx);
	idx &= FS_SLOTS - 1;
	period_max(&st->fs_max[idx], ns);
	__sync_fetch_and_add(&st->fs_ops[idx], 1);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	struct cpu_sys_slot *slot;
	__u32 zero = 0;
	__u64 pid_tgid;

	if (noop_hooks)
		return 0;
	/* Non-timed syscalls leave after two loads, tracked process or not. */
	if (col_of(id) == COL_NONE && fsop_of(id) == FSOP_NONE)
		return 0;
	pid_tgid = bpf_get_current_pid_tgid();
	if (!is_tracked(pid_tgid >> 32))
		return 0;
	slot = bpf_map_lookup_elem(&cpu_sys_slot, &zero);
	if (!slot)
		return 0;
	slot->pid = (__u32)pid_tgid;
	slot->gen = knob_gen;
	slot->start = bpf_ktime_get_ns();
	return 0;
}

/* Start time of the current thread's slow syscall, consumed: from this CPU's slot if the thread
 * ran here without interruption since the entry, else from task storage (saved at switch-out).
 * 0 when none was taken under the current knob generation. */
static __always_inline __u64 take_sys_start(__u32 pid)
{
	struct cpu_sys_slot *slot;
	struct thread_state *ts;
	__u32 zero = 0, gen = knob_gen;
	__u64 start;

	slot = bpf_map_lookup_elem(&cpu_sys_slot, &zero);
	if (slot && slot->pid == pid) {
		slot->pid = 0;
		return slot->gen == gen ? slot->start : 0;
	}
	ts = bpf_task_storage_get(&thread_state, bpf_get_current_task_btf(), 0, 0);
	if (!ts)
		return 0;
	start = ts->sys_start;
	ts->sys_start = 0;
	return ts->sys_gen == gen ? start : 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
	struct proc_stats *st = NULL;
	struct hot_counts *hot;
	__u64 pid_tgid = bpf_get_current_pid_tgid(), start;
	__u32 tgid = pid_tgid >> 32;
	__u32 slot = tgid & (TRACK_SLOTS - 1);
	bool failed = ret < 0 && ret >= -MAX_ERRNO;
	__u32 idx, fs_slot = 0;
	long nr;
	__u8 col, op;

	if (noop_hooks)
		return 0;
	if (tgid == 0)
		return 0;
	if (filter_mode == FILTER_INCLUDE && tracked_slots[slot] == tgid) {
		/* Hot path: no hash lookup for a slot owner. */
		hot = &hot_slots[slot];
		__sync_fetch_and_add(&hot->syscalls, 1);
		if (failed)
			__sync_fetch_and_add(&hot->failed, 1);
		gg_count(GG_STAT_EVENTS);
	} else {
		if (!is_tracked(tgid))
			return 0;
		st = stats_current(tgid);
		if (!st)
			return 0;
		__sync_fetch_and_add(&st->syscalls, 1);
		if (failed)
			__sync_fetch_and_add(&st->syscall_failed, 1);
		gg_count(GG_STAT_EVENTS);
	}
	if (!exact_sys_time)
		return 0;
	nr = regs->orig_ax;
	col = col_of(nr);
	op = fsop_of(nr);
	if ((col == COL_NONE || col >= NR_COLS) && op == FSOP_NONE)
		return 0;
	/* 0: the entry was not seen (probe attached mid-syscall, or a new thread returning from
	 * clone), so there is nothing to time. */
	start = take_sys_start((__u32)pid_tgid);
	if (!start)
		return 0;
	if (!st)
		st = stats_of(tgid);
	if (!st)
		return 0;
	/* The file: an open's is the descriptor it returns, the others' their first argument. */
	if (op == FSOP_OPEN && ret >= 0)
		fs_slot = fs_slot_of_fd(bpf_get_current_task_btf(), ret, op);
	else if (op != FSOP_NONE && op != FSOP_OPEN)
		fs_slot = fs_slot_of_fd(bpf_get_current_task_btf(),
					PT_REGS_PARM1_CORE_SYSCALL(regs), op);
	start = bpf_ktime_get_ns() - start;
	if (fs_slot)
		fs_account(st, fs_slot, start);
	if (col == COL_NONE || col >= NR_COLS)
		return 0;
	idx = col;
	/* Keep the mask: clang drops it from a value it can bound, the verifier cannot. */
	barrier_var(idx);
	idx &= SLOW_SLOTS - 1;
	if (period_max(&st->slow_max[idx], start) && col == COL_IOCTL) {
		st->ioctl_fd = (int)PT_REGS_PARM1_CORE_SYSCALL(regs);
		st->ioctl_cmd = (__u32)PT_REGS_PARM2_CORE_SYSCALL(regs);
	}
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	struct cpu_sys_slot *slot = NULL;
	struct thread_state *ts;
	struct proc_stats *st;
	__u32 ptgid = prev->tgid, ntgid = next->tgid, zero = 0, gen = knob_gen;
	__u64 now = 0, delta;
	bool in_sys = false;
	__u8 bcol = COL_NONE;
	__u32 bfs = 0;
	long nr;

	if (is_tracked(ptgid) && !(prev_state & TASK_DEAD) && !(prev->flags & PF_EXITING)) {
		/* Without sys_exit, FILTER_ALL and FILTER_EXCLUDE create entries here: every user
		 * process that runs is switched out sooner or later (prev is current here). */
		if (filter_mode != FILTER_INCLUDE && !(prev->flags & PF_KTHREAD))
			stats_current(ptgid);
		if (exact_sys_time) {
			slot = bpf_map_lookup_elem(&cpu_sys_slot, &zero);
			in_sys = slot && slot->pid == (__u32)prev->pid && slot->gen == gen;
		}
		/* Blocked (not preempted: a preempted task is runnable, not waiting). */
		if (blocked_sys_time && !preempt && prev_state != 0) {
			nr = blocked_nr(prev);
			bcol = col_of(nr);
			bfs = blocked_fs_slot(prev, nr);
		}
		if (in_sys || account_offcpu || account_threads || bcol != COL_NONE || bfs) {
			ts = bpf_task_storage_get(&thread_state, prev, 0,
						  BPF_LOCAL_STORAGE_GET_F_CREATE);
			if (ts && in_sys && slot) {
				ts->sys_start = slot->start;
				ts->sys_gen = gen;
			}
			if (ts && (account_offcpu || account_threads || bcol != COL_NONE || bfs)) {
				now = bpf_ktime_get_ns();
				ts->off_start = now;
				ts->off_gen = gen;
				ts->off_iowait = BPF_CORE_READ_BITFIELD(prev, in_iowait);
				ts->block_col = bcol;
				ts->block_fs = bfs;
				if (bcol == COL_IOCTL) {
					struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(prev);

					ts->block_fd = r ? (int)PT_REGS_PARM1_CORE_SYSCALL(r) : -1;
					ts->block_cmd = r ? (__u32)PT_REGS_PARM2_CORE_SYSCALL(r) : 0;
				}
			}
		}
		/* The slot now belongs to whoever runs next on this CPU. */
		if (in_sys && slot)
			slot->pid = 0;
	}
	if (!account_offcpu && !blocked_sys_time && !account_threads)
		return 0;
	if (!is_tracked(ntgid))
		return 0;
	ts = bpf_task_storage_get(&thread_state, next, 0, 0);
	if (!ts || !ts->off_start)
		return 0;
	if (ts->off_gen != gen) {
		/* Switched out under other knobs (or before a detach): not measured. */
		ts->off_start = 0;
		ts->block_col = COL_NONE;
		ts->block_fs = 0;
		return 0;
	}
	if (!now)
		now = bpf_ktime_get_ns();
	delta = now - ts->off_start;
	ts->off_start = 0;
	bcol = ts->block_col;
	ts->block_col = COL_NONE;
	bfs = ts->block_fs;
	ts->block_fs = 0;
	if (account_threads) {
		struct thread_stats *te = thread_entry(next);

		if (te)
			__sync_fetch_and_add(&te->offcpu_ns, delta);
	}
	st = stats_of(ntgid);
	if (!st)
		return 0;
	if (account_offcpu) {
		__sync_fetch_and_add(&st->offcpu_ns, delta);
		if (ts->off_iowait)
			__sync_fetch_and_add(&st->iowait_ns, delta);
	}
	if (bcol != COL_NONE && bcol < NR_COLS) {
		__u32 idx = bcol;

		barrier_var(idx);
		idx &= SLOW_SLOTS - 1;
		if (period_max(&st->slow_max[idx], delta) && bcol == COL_IOCTL) {
			st->ioctl_fd = ts->block_fd;
			st->ioctl_cmd = ts->block_cmd;
		}
	}
	if (bfs)
		fs_account(st, bfs, delta);
	gg_count(GG_STAT_EVENTS);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	struct proc_stats *st;
	__u32 ptgid = parent->tgid;

	if (!is_tracked(ptgid))
		return 0;
	st = stats_of(ptgid);
	if (!st)
		return 0;
	gg_count(GG_STAT_EVENTS);
	if (child->pid != child->tgid) {
		__sync_fetch_and_add(&st->threads, 1);
		return 0;
	}
	__sync_fetch_and_add(&st->forks, 1);
	if (inherit_forks || filter_mode != FILTER_INCLUDE)
		track(child->tgid, child->comm);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct exec_notice *n;
	struct proc_stats *st;
	__u32 tgid = p->tgid;
	bool tracked = is_tracked(tgid);

	if (tracked) {
		st = stats_of(tgid);
		if (st) {
			__sync_fetch_and_add(&st->execs, 1);
			gg_count(GG_STAT_EVENTS);
			bpf_probe_read_kernel_str(st->comm, sizeof(st->comm), p->comm);
		}
	}
	if (!notify_exec)
		return 0;
	n = gg_rb_reserve(&exec_events, sizeof(*n));
	if (!n)
		return 0;
	n->tgid = tgid;
	n->tracked = tracked;
	bpf_probe_read_kernel_str(n->comm, sizeof(n->comm), p->comm);
	gg_rb_submit(&exec_events, n);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	struct proc_stats *st;
	__u32 tgid = p->tgid;

	if (!is_tracked(tgid))
		return 0;
	st = stats_of(tgid);
	if (!st)
		return 0;
	__sync_fetch_and_add(&st->thread_exits, 1);
	gg_count(GG_STAT_EVENTS);
	if (account_threads) {
		__u32 pid = p->pid;
		struct thread_stats *te = bpf_map_lookup_elem(&thread_stats, &pid);

		if (te)
			te->exited = 1;
	}
	/* signal->live is decremented before this tracepoint; 0 means the group is gone. */
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	bpf_probe_read_kernel_str(st->comm, sizeof(st->comm), p->comm);
	fold_hot(tgid, st);
	st->exited = 1;
	untrack(tgid);
	return 0;
}

static __always_inline void io_start(struct request *rq)
{
	struct rq_start s = {};
	__u64 key = (__u64)rq;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!is_tracked(tgid))
		return;
	s.ts = bpf_ktime_get_ns();
	s.tgid = tgid;
	s.write = (rq->cmd_flags & REQ_OP_MASK) & 1;
	s.gen = knob_gen;
	gg_map_update(&rq_start, &key, &s, BPF_ANY);
}

/* block_io_start fires in the submitter's context when a bio becomes a request (>= 6.5). */
SEC("tp_btf/block_io_start")
int BPF_PROG(on_io_start, struct request *rq)
{
	io_start(rq);
	return 0;
}

/* Fallback for kernels without block_io_start: attribution to whoever issues the request. */
SEC("tp_btf/block_rq_issue")
int BPF_PROG(on_rq_issue, struct request *rq)
{
	io_start(rq);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(on_rq_complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	struct proc_stats *st;
	struct rq_start *s;
	__u64 key = (__u64)rq;
	__u32 w;

	s = bpf_map_lookup_elem(&rq_start, &key);
	if (!s)
		return 0;
	/* A request started before the hooks were last re-attached may belong to an earlier user
	 * of the same struct request: not attributed. */
	st = s->gen == knob_gen ? stats_of(s->tgid) : NULL;
	if (st) {
		w = s->write & 1;
		if (nr_bytes > SMALL_IO_BYTES)
			__sync_fetch_and_add(&st->bio_big[w], 1);
		else
			__sync_fetch_and_add(&st->bio_small[w], 1);
		/* Upstream times only requests that completed without error. */
		if (error)
			__sync_fetch_and_add(&st->bio_err, 1);
		else
			period_max(&st->bio_latency, bpf_ktime_get_ns() - s->ts);
		gg_count(GG_STAT_EVENTS);
	}
	bpf_map_delete_elem(&rq_start, &key);
	return 0;
}

/* The hung-task detector (khungtaskd) reports a task blocked uninterruptibly for longer than
 * kernel.hung_task_timeout_secs. Optional: kernels without CONFIG_DETECT_HUNG_TASK lack it. */
SEC("tp_btf/sched_process_hang")
int BPF_PROG(on_hang, struct task_struct *p)
{
	struct proc_stats *st;
	__u32 tgid = p->tgid;

	if (!is_tracked(tgid))
		return 0;
	st = stats_of(tgid);
	if (!st)
		return 0;
	__sync_fetch_and_add(&st->hangs, 1);
	gg_count(GG_STAT_EVENTS);
	return 0;
}

/* Page cache per process (sub-probe proc_pagecache, table proc_page): the same tracepoints as
 * ioprobe's io_pagecache (docs/probes/io.md, "Page cache"), counted for the process whose
 * thread runs them, and the time its threads spend reclaiming memory themselves (direct
 * reclaim, or the reclaim of a memory cgroup over its limit). Attached only while the sub-probe
 * is on; each is optional (a kernel without one leaves its field at 0). */

static __always_inline struct proc_stats *stats_for_current(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!is_tracked(tgid))
		return NULL;
	return stats_current(tgid);
}

SEC("tp_btf/mm_filemap_add_to_page_cache")
int BPF_PROG(on_pc_load, struct folio *folio)
{
	struct proc_stats *st = stats_for_current();

	if (st) {
		__sync_fetch_and_add(&st->pc_load, gg_folio_pages(folio));
		gg_count(GG_STAT_EVENTS);
	}
	return 0;
}

SEC("tp_btf/writeback_dirty_folio")
int BPF_PROG(on_pc_page_dirty, struct folio *folio, struct address_space *mapping)
{
	struct proc_stats *st = stats_for_current();

	if (st) {
		__sync_fetch_and_add(&st->pc_page_dirty, gg_folio_pages(folio));
		gg_count(GG_STAT_EVENTS);
	}
	return 0;
}

SEC("tp_btf/block_dirty_buffer")
int BPF_PROG(on_pc_buffer_dirty, struct buffer_head *bh)
{
	struct proc_stats *st = stats_for_current();

	if (st) {
		__sync_fetch_and_add(&st->pc_buffer_dirty, 1);
		gg_count(GG_STAT_EVENTS);
	}
	return 0;
}

static __always_inline void pc_access(__u64 pages)
{
	struct proc_stats *st = stats_for_current();

	if (st) {
		__sync_fetch_and_add(&st->pc_access, pages);
		gg_count(GG_STAT_EVENTS);
	}
}

SEC("tp_btf/mm_filemap_get_pages")
int BPF_PROG(on_pc_get_pages, struct address_space *mapping, unsigned long index,
	     unsigned long last_index)
{
	pc_access(gg_pages_in(index, last_index));
	return 0;
}

SEC("tp_btf/mm_filemap_map_pages")
int BPF_PROG(on_pc_map_pages, struct address_space *mapping, unsigned long index,
	     unsigned long last_index)
{
	pc_access(gg_pages_in(index, last_index));
	return 0;
}

SEC("tp_btf/mm_filemap_fault")
int BPF_PROG(on_pc_fault, struct address_space *mapping, unsigned long index)
{
	pc_access(1);
	return 0;
}

static __always_inline void reclaim_begin(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct thread_state *ts;

	if (!is_tracked(task->tgid))
		return;
	ts = bpf_task_storage_get(&thread_state, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (ts)
		ts->reclaim_start = bpf_ktime_get_ns();
}

static __always_inline void reclaim_end(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct thread_state *ts;
	struct proc_stats *st;
	__u64 start;

	ts = bpf_task_storage_get(&thread_state, task, 0, 0);
	if (!ts || !ts->reclaim_start)
		return;
	start = ts->reclaim_start;
	ts->reclaim_start = 0;
	st = stats_for_current();
	if (st) {
		__sync_fetch_and_add(&st->reclaim_ns, bpf_ktime_get_ns() - start);
		gg_count(GG_STAT_EVENTS);
	}
}

SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(on_reclaim_begin, int order, gfp_t gfp_flags)
{
	reclaim_begin();
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_end")
int BPF_PROG(on_reclaim_end, unsigned long nr_reclaimed)
{
	reclaim_end();
	return 0;
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(on_memcg_reclaim_begin, int order, gfp_t gfp_flags)
{
	reclaim_begin();
	return 0;
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_end")
int BPF_PROG(on_memcg_reclaim_end, unsigned long nr_reclaimed)
{
	reclaim_end();
	return 0;
}

/* DNS lookups (proc_dns): the entry saves the start and the name pointer, the return reads the
 * name and adds the lookup to its (process, domain) row. */
SEC("uprobe")
int BPF_UPROBE(dns_enter, const char *name)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct dns_call c = {};

	if (!is_tracked(id >> 32))
		return 0;
	c.ts = bpf_ktime_get_ns();
	c.name = (__u64)name;
	c.gen = knob_gen;
	if (gg_map_update(&dns_calls, &id, &c, BPF_ANY))
		return 0;
	return 0;
}

static __always_inline int dns_done(bool failed)
{
	__u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_ns(), delta;
	static const char other[] = "(other)";
	struct dns_stats *ds;
	struct proc_stats *st;
	struct dns_call *cp, c;
	struct dns_key *key;
	__u32 zero = 0, tgid = id >> 32;
	long err;

	cp = bpf_map_lookup_elem(&dns_calls, &id);
	if (!cp)
		return 0;
	c = *cp;
	bpf_map_delete_elem(&dns_calls, &id);
	/* Started before a plan change (the hooks were off meanwhile): not measured. */
	if (c.gen != knob_gen)
		return 0;
	delta = now - c.ts;
	key = bpf_map_lookup_elem(&dns_scratch, &zero);
	if (!key)
		return 0;
	__builtin_memset(key, 0, sizeof(*key));
	key->tgid = tgid;
	if (bpf_probe_read_user_str(key->domain, sizeof(key->domain), (const void *)c.name) <= 1)
		key->domain[0] = 0;
	ds = bpf_map_lookup_elem(&dns_stats, key);
	if (!ds) {
		st = stats_current(tgid);
		if (!st)
			return 0;
		if (st->dns_domains >= dns_domain_cap) {
			__builtin_memset(key->domain, 0, sizeof(key->domain));
			__builtin_memcpy(key->domain, other, sizeof(other));
		}
		err = gg_map_update(&dns_stats, key, &zero_dns, BPF_NOEXIST);
		if (!err && st->dns_domains < dns_domain_cap)
			__sync_fetch_and_add(&st->dns_domains, 1);
		else if (err && err != -EEXIST)
			return 0;
		ds = bpf_map_lookup_elem(&dns_stats, key);
		if (!ds)
			return 0;
	}
	__sync_fetch_and_add(&ds->count, 1);
	if (failed)
		__sync_fetch_and_add(&ds->errors, 1);
	__sync_fetch_and_add(&ds->sum_ns, delta);
	period_max(&ds->max, delta);
	gg_count(GG_STAT_EVENTS);
	return 0;
}

/* getaddrinfo: 0 on success, an EAI_* code otherwise. */
SEC("uretprobe")
int BPF_URETPROBE(dns_ret_int, int ret)
{
	return dns_done(ret != 0);
}

/* gethostbyname, gethostbyname2: NULL on failure. */
SEC("uretprobe")
int BPF_URETPROBE(dns_ret_ptr, void *ret)
{
	return dns_done(ret == NULL);
}

/* thread_cpu: a thread of a tracked process moves to another CPU (load balancing, a wakeup
 * placed elsewhere, an affinity change). */
SEC("tp_btf/sched_migrate_task")
int BPF_PROG(on_migrate, struct task_struct *p, int dest_cpu)
{
	struct thread_stats *te;

	if (!account_threads || !is_tracked(p->tgid))
		return 0;
	te = thread_entry(p);
	if (!te)
		return 0;
	__sync_fetch_and_add(&te->migrations, 1);
	gg_count(GG_STAT_EVENTS);
	return 0;
}

/* Python GC (proc_pygc): CPython's USDT probes python:gc__start and python:gc__done bracket
 * one collection in the collecting thread. */
SEC("usdt")
int BPF_USDT(pygc_begin)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pygc_call c = {};

	if (!is_tracked(id >> 32))
		return 0;
	c.ts = bpf_ktime_get_ns();
	c.gen = knob_gen;
	gg_map_update(&pygc_calls, &id, &c, BPF_ANY);
	return 0;
}

SEC("usdt")
int BPF_USDT(pygc_end)
{
	__u64 id = bpf_get_current_pid_tgid(), delta;
	struct proc_stats *st;
	struct pygc_call *cp;
	__u64 ts;
	__u32 gen;

	cp = bpf_map_lookup_elem(&pygc_calls, &id);
	if (!cp)
		return 0;
	ts = cp->ts;
	gen = cp->gen;
	bpf_map_delete_elem(&pygc_calls, &id);
	if (gen != knob_gen)
		return 0;
	delta = bpf_ktime_get_ns() - ts;
	st = stats_current(id >> 32);
	if (!st)
		return 0;
	__sync_fetch_and_add(&st->pygc_count, 1);
	__sync_fetch_and_add(&st->pygc_ns, delta);
	period_max(&st->pygc_max, delta);
	gg_count(GG_STAT_EVENTS);
	return 0;
}
