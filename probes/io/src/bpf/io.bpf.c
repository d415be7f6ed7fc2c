// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * ioprobe: per-disk block request statistics aggregated in maps (no per-IO events).
 *
 * Hooks (raw tracepoints: no tracefs needed, and the struct request pointer identifies a
 * request exactly, unlike the (dev, sector) of the classic tracepoints):
 *   block_rq_insert   -> remember the insert time
 *   block_rq_issue    -> remember the issue time
 *   block_rq_complete -> count op/bytes/errors; record req, queue and device latencies
 * User space reads io_stats (cumulative) and io_maxes (per period) once per period.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "gg_common.h"
#include "io.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Period parity (bit 0) for io_maxes; flipped by user space at each period boundary. */
volatile __u32 period_parity;

/* In-flight requests; an entry lives from insert/issue to completion. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct io_start);
} io_starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct io_disk_stats);
} io_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct io_max_key);
	__type(value, struct io_max);
} io_maxes SEC(".maps");

/* Templates for new map elements (too large for the 512-byte BPF stack). */
const struct io_disk_stats zero_stats = {};
const struct io_max zero_max = {};

/* Kernels before 5.17 kept the disk in the request itself. */
struct request___old {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

#define REQ_OP_MASK_ 0xff	/* REQ_OP_BITS = 8 since 4.10 */

static __always_inline __u32 rq_dev(struct request *rq)
{
	struct request___old *old = (void *)rq;
	struct gendisk *disk;

	if (bpf_core_field_exists(old->rq_disk))
		disk = BPF_CORE_READ(old, rq_disk);
	else
		disk = BPF_CORE_READ(rq, q, disk);
	if (!disk)
		return 0;
	return ((__u32)BPF_CORE_READ(disk, major) << 20) | (__u32)BPF_CORE_READ(disk, first_minor);
}

static __always_inline __u64 rq_alloc_ns(struct request *rq)
{
	if (bpf_core_field_exists(rq->start_time_ns))
		return BPF_CORE_READ(rq, start_time_ns);
	return 0;
}

/* Operation class of a REQ_OP_* value, grouped like /proc/diskstats. */
static __always_inline __u32 op_class(__u32 op)
{
	if (op == 2) /* REQ_OP_FLUSH */
		return IO_OP_FLUSH;
	if (op == 3 || op == 5) /* REQ_OP_DISCARD, REQ_OP_SECURE_ERASE */
		return IO_OP_DISCARD;
	return (op & 1) ? IO_OP_WRITE : IO_OP_READ; /* op_is_write() */
}

static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r, shift;

	r = (v > 0xFFFF) << 4;
	v >>= r;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 hi = v >> 32;

	return hi ? log2_u32(hi) + 32 : log2_u32(v);
}

static __always_inline __u32 lat_slot(__u64 ns)
{
	__u64 us = ns / 1000;
	__u32 slot;

	if (!us)
		return 0;
	slot = log2_u64(us) + 1;
	return slot < IO_LAT_SLOTS ? slot : IO_LAT_SLOTS - 1;
}

static __always_inline void hist_add(struct io_lat_hist *h, __u64 ns)
{
	__u32 slot = lat_slot(ns);

	if (slot < IO_LAT_SLOTS) /* bound for the verifier */
		h->slots[slot] += 1;
	h->sum_ns += ns;
	h->count += 1;
}

static __always_inline void *lookup_or_init(void *map, const void *key, const void *zero)
{
	void *v = bpf_map_lookup_elem(map, key);

	if (v)
		return v;
	gg_map_update(map, key, zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

SEC("raw_tp/block_rq_insert")
int BPF_PROG(io_rq_insert, struct request *rq)
{
	__u64 key = (__u64)rq;
	struct io_start st = { .insert_ns = bpf_ktime_get_ns(), .issue_ns = 0 };

	gg_map_update(&io_starts, &key, &st, BPF_ANY);
	return 0;
}

SEC("raw_tp/block_rq_issue")
int BPF_PROG(io_rq_issue, struct request *rq)
{
	__u64 key = (__u64)rq;
	__u64 now = bpf_ktime_get_ns();
	struct io_start *e = bpf_map_lookup_elem(&io_starts, &key);

	if (e) {
		e->issue_ns = now;
	} else {
		struct io_start st = { .insert_ns = 0, .issue_ns = now };

		gg_map_update(&io_starts, &key, &st, BPF_ANY);
	}
	return 0;
}

SEC("raw_tp/block_rq_complete")
int BPF_PROG(io_rq_complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	__u64 key = (__u64)rq;
	__u64 now = bpf_ktime_get_ns();
	/* The tracepoint fires before the kernel subtracts nr_bytes from the remaining length. */
	__u32 remaining = BPF_CORE_READ(rq, __data_len);
	bool last = nr_bytes >= remaining;
	__u32 op = op_class(BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK_);
	struct io_disk_stats *s;
	struct io_start *e;
	__u32 dev;

	dev = rq_dev(rq);
	if (!dev)
		return 0;
	s = lookup_or_init(&io_stats, &dev, &zero_stats);
	if (!s)
		return 0;
	if (!error)
		s->bytes[op & (IO_OP_NR - 1)] += nr_bytes;
	if (!last)
		return 0; /* partial completion: the request goes on */

	e = bpf_map_lookup_elem(&io_starts, &key);
	/*
	 * A request carrying PREFLUSH/POSTFLUSH completes once more, with nothing left to
	 * transfer, when its flush sequence ends (and an empty PREFLUSH write is nothing but that);
	 * its data part, if any, was counted when it completed, and the flush itself is a separate
	 * REQ_OP_FLUSH request. Other data-less non-flush requests (zone management) are skipped
	 * too: they move no data.
	 */
	if (op != IO_OP_FLUSH && remaining == 0)
		goto out;

	s->ops[op & (IO_OP_NR - 1)] += 1;
	gg_count(GG_STAT_EVENTS);
	if (error) {
		s->errors += 1;
		s->last_err = error;
		s->last_err_ns = now;
	}

	if (e && e->issue_ns && e->issue_ns <= now) {
		__u64 issue = e->issue_ns, insert = e->insert_ns;
		__u64 alloc = rq_alloc_ns(rq);
		/* An insert time older than the request's allocation belongs to a previous user. */
		bool insert_ok = insert && insert <= issue && (!alloc || insert >= alloc);
		__u64 start = issue;
		struct io_max_key mk = { .dev = dev, .parity = period_parity & 1 };
		struct io_max *m;
		__u64 d;

		if (alloc && alloc <= issue)
			start = alloc;
		else if (insert_ok)
			start = insert;

		m = lookup_or_init(&io_maxes, &mk, &zero_max);

		d = now - start;
		hist_add(&s->lat[IO_STAGE_REQ], d);
		if (m && d > m->max_ns[IO_STAGE_REQ])
			m->max_ns[IO_STAGE_REQ] = d;

		d = now - issue;
		hist_add(&s->lat[IO_STAGE_DEVICE], d);
		if (m && d > m->max_ns[IO_STAGE_DEVICE])
			m->max_ns[IO_STAGE_DEVICE] = d;

		if (insert_ok) {
			d = issue - insert;
			hist_add(&s->lat[IO_STAGE_QUEUE], d);
			if (m && d > m->max_ns[IO_STAGE_QUEUE])
				m->max_ns[IO_STAGE_QUEUE] = d;
		}
	}
out:
	if (e)
		bpf_map_delete_elem(&io_starts, &key);
	return 0;
}
