/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * gg_common.h - helpers shared by every gala-gopher (Rust) BPF program.
 *
 * Include after vmlinux.h and <bpf/bpf_helpers.h>:
 *
 *     #include "vmlinux.h"
 *     #include <bpf/bpf_helpers.h>
 *     #include "gg_common.h"
 *
 * It defines, once per BPF object:
 *   - gg_stats: a per-CPU array of loss counters, read by probe_sdk::bpf::read_loss_counters
 *     and exported by every probe as the <probe>_bpf_stats table;
 *   - gg_count(slot): add one to a slot;
 *   - gg_rb_reserve()/gg_rb_submit(): ring-buffer output that counts lost events and batches
 *     wake-ups (a wake-up per event costs ~3 us in the traced task plus as much in the consumer);
 *   - gg_map_update(): map update that counts "map full" failures.
 *
 * Slot numbers must match probe_sdk::bpf::{STAT_EVENTS, STAT_LOST, STAT_MAP_FULL}.
 */
#ifndef GG_COMMON_H
#define GG_COMMON_H

enum gg_stat_slot {
	GG_STAT_EVENTS = 0,   /* events produced (submitted, or accounted in maps) */
	GG_STAT_LOST = 1,     /* ring-buffer reservations that failed: events lost */
	GG_STAT_MAP_FULL = 2, /* map updates refused with -E2BIG / -ENOMEM */
	GG_STAT_NR = 3,
};

/* vmlinux.h carries no errno macros. */
#define GG_E2BIG 7
#define GG_ENOMEM 12

/*
 * Submit with a wake-up only once this much data is queued; the consumer drains on its poll
 * timeout anyway (probe_sdk::bpf::RingPoller::poll), so latency is bounded by that timeout.
 */
#ifndef GG_RB_WAKEUP_BYTES
#define GG_RB_WAKEUP_BYTES (256 * 1024)
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GG_STAT_NR);
	__type(key, __u32);
	__type(value, __u64);
} gg_stats SEC(".maps");

/* Adds one to counter @slot on this CPU. Per-CPU, so no atomic is needed. */
static __always_inline void gg_count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&gg_stats, &slot);

	if (v)
		*v += 1;
}

/* Adds @n to counter @slot on this CPU. */
static __always_inline void gg_count_n(__u32 slot, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&gg_stats, &slot);

	if (v)
		*v += n;
}

/* Reserves @size bytes in ring buffer @rb; counts GG_STAT_LOST and returns NULL when full. */
static __always_inline void *gg_rb_reserve(void *rb, __u64 size)
{
	void *e = bpf_ringbuf_reserve(rb, size, 0);

	if (!e)
		gg_count(GG_STAT_LOST);
	return e;
}

/*
 * Submits @e reserved from @rb, counting GG_STAT_EVENTS. Wakes the consumer only when at
 * least GG_RB_WAKEUP_BYTES are queued.
 */
static __always_inline void gg_rb_submit(void *rb, void *e)
{
	__u64 queued = bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(e, queued >= GG_RB_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	gg_count(GG_STAT_EVENTS);
}

/*
 * bpf_map_update_elem() that counts GG_STAT_MAP_FULL when the map refuses a new element
 * (-E2BIG for a full hash/LRU, -ENOMEM when preallocation is off). Returns the helper's result.
 */
static __always_inline long gg_map_update(void *map, const void *key, const void *value,
					  __u64 flags)
{
	long err = bpf_map_update_elem(map, key, value, flags);

	if (err == -GG_E2BIG || err == -GG_ENOMEM)
		gg_count(GG_STAT_MAP_FULL);
	return err;
}

#endif /* GG_COMMON_H */
