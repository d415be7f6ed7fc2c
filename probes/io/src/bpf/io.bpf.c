// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * ioprobe: per-disk block request statistics aggregated in maps (no per-IO events).
 *
 * Hooks (raw tracepoints / tp_btf: no tracefs needed, and the struct request pointer
 * identifies a request exactly, unlike the (dev, sector) of the classic tracepoints):
 *   block_rq_insert   -> remember the insert time
 *   block_rq_issue    -> remember the issue time
 *   block_rq_complete -> count op/bytes/errors; record req, driver and device latencies.
 *                        Two variants: tp_btf (plain loads from the request, preferred) and
 *                        raw_tp (bpf_probe_read_kernel, for kernels without tp_btf); the loader
 *                        enables one.
 * User space reads io_stats once per period. The hot path does no map allocation in steady
 * state: io_starts entries are updated in place, never deleted.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "gg_common.h"
#include "gg_folio.h"
#include "intf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Number of the current report period; user space increments it at each period boundary. */
volatile __u32 period_epoch;

/*
 * Request pointer -> timestamps. LRU: request pointers come from per-queue pools that are
 * reused, but pools are reallocated when a scheduler changes or a disk comes and goes; the LRU
 * drops entries of vanished requests instead of filling up.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
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

/* Template for new io_stats elements (too large for the 512-byte BPF stack). */
const struct io_disk_stats zero_stats = {};
/* Not used at run time: they make the skeleton generate the enums of intf.h for Rust. */
enum io_op io_op_type = 0;
enum io_stage io_stage_type = 0;

/* Kernels before 5.17 kept the disk in the request itself. */
struct request___old {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

#define REQ_OP_MASK_ 0xff /* REQ_OP_BITS = 8 since 4.10 */

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

/* Records one latency: cumulative histogram, and this period's count, max, last and jitter. */
static __always_inline void lat_add(struct io_disk_stats *s, __u32 stage, __u64 ns, __u64 now)
{
	struct io_period *p = &s->period.cur;
	struct io_lat_hist *h;
	__u32 slot = lat_slot(ns);
	__u64 d;

	if (stage >= IO_STAGE_NR || slot >= IO_LAT_SLOTS) /* bounds for the verifier */
		return;
	h = &s->lat[stage];
	h->slots[slot] += 1;
	h->sum_ns += ns;
	h->count += 1;
	/* Upstream's jitter: the largest change from one latency to the next within a period. */
	if (p->n[stage]) {
		d = ns > p->last_ns[stage] ? ns - p->last_ns[stage] : p->last_ns[stage] - ns;
		if (d > p->jitter_ns[stage])
			p->jitter_ns[stage] = d;
	}
	p->n[stage] += 1;
	p->last_ns[stage] = ns;
	p->last_ts[stage] = now;
	if (ns > p->max_ns[stage])
		p->max_ns[stage] = ns;
}

/* Starts a new period on this CPU if user space has moved on since the last update. */
static __always_inline void period_roll(struct io_period_pair *p)
{
	__u32 epoch = period_epoch;

	if (p->cur.epoch == epoch)
		return;
	if (p->cur.epoch + 1 == epoch)
		__builtin_memcpy(&p->prev, &p->cur, sizeof(p->cur));
	__builtin_memset(&p->cur, 0, sizeof(p->cur));
	p->cur.epoch = epoch;
}

static __always_inline struct io_disk_stats *disk_stats(__u32 dev)
{
	struct io_disk_stats *s = bpf_map_lookup_elem(&io_stats, &dev);

	if (s)
		return s;
	gg_map_update(&io_stats, &dev, &zero_stats, BPF_NOEXIST);
	return bpf_map_lookup_elem(&io_stats, &dev);
}

/* What the completion needs from a request. */
struct rq_info {
	__u32 dev;       /* MKDEV of the disk, 0 if none */
	__u32 op;        /* enum io_op */
	__u32 remaining; /* bytes left before this completion (blk_rq_bytes) */
	__u64 alloc_ns;  /* rq->start_time_ns: allocation time, 0 if not recorded */
};

/* raw_tp variant: every field through bpf_probe_read_kernel (BPF_CORE_READ). */
static __always_inline void rq_info_core(struct request *rq, struct rq_info *ri)
{
	struct request___old *old = (void *)rq;
	struct gendisk *disk;

	if (bpf_core_field_exists(old->rq_disk))
		disk = BPF_CORE_READ(old, rq_disk);
	else
		disk = BPF_CORE_READ(rq, q, disk);
	ri->dev = disk ? ((__u32)BPF_CORE_READ(disk, major) << 20) |
				 (__u32)BPF_CORE_READ(disk, first_minor)
		       : 0;
	ri->op = op_class(BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK_);
	ri->remaining = BPF_CORE_READ(rq, __data_len);
	ri->alloc_ns = bpf_core_field_exists(rq->start_time_ns) ? BPF_CORE_READ(rq, start_time_ns) : 0;
}

/* tp_btf variant: BTF-typed pointers are read with plain loads, no helper calls. */
static __always_inline void rq_info_btf(struct request *rq, struct rq_info *ri)
{
	struct request___old *old = (void *)rq;
	struct gendisk *disk;

	if (bpf_core_field_exists(old->rq_disk))
		disk = old->rq_disk;
	else
		disk = rq->q->disk;
	ri->dev = disk ? ((__u32)disk->major << 20) | (__u32)disk->first_minor : 0;
	ri->op = op_class(rq->cmd_flags & REQ_OP_MASK_);
	ri->remaining = rq->__data_len;
	ri->alloc_ns = bpf_core_field_exists(rq->start_time_ns) ? rq->start_time_ns : 0;
}

SEC("raw_tp/block_rq_insert")
int BPF_PROG(io_rq_insert, struct request *rq)
{
	__u64 key = (__u64)rq;
	__u64 now = bpf_ktime_get_ns();
	struct io_start *e = bpf_map_lookup_elem(&io_starts, &key);

	if (e) {
		e->insert_ns = now;
		e->issue_ns = 0;
	} else {
		struct io_start st = { .insert_ns = now, .issue_ns = 0 };

		gg_map_update(&io_starts, &key, &st, BPF_ANY);
	}
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

static __always_inline int account_completion(struct request *rq, const struct rq_info *ri,
					      blk_status_t error, unsigned int nr_bytes)
{
	__u64 key = (__u64)rq;
	/* The tracepoint fires before the kernel subtracts nr_bytes from the remaining length. */
	bool last = nr_bytes >= ri->remaining;
	__u32 op = ri->op & (IO_OP_NR - 1);
	__u32 dev = ri->dev;
	struct io_disk_stats *s;
	struct io_start *e;
	__u64 now, issue, insert, start;
	bool insert_ok, start_ok;

	if (!dev)
		return 0;
	s = disk_stats(dev);
	if (!s)
		return 0;
	if (!error)
		s->bytes[op] += nr_bytes;
	if (!last)
		return 0; /* partial completion: the request goes on */

	e = bpf_map_lookup_elem(&io_starts, &key);
	issue = e ? e->issue_ns : 0;
	insert = e ? e->insert_ns : 0;
	if (e) {
		/* Consumed: the next user of this request starts from scratch. */
		e->issue_ns = 0;
		e->insert_ns = 0;
	}
	/*
	 * A request carrying PREFLUSH/POSTFLUSH completes once more, with nothing left to
	 * transfer, when its flush sequence ends (and an empty PREFLUSH write is nothing but that);
	 * its data part, if any, was counted when it completed, and the flush itself is a separate
	 * REQ_OP_FLUSH request. Other data-less non-flush requests (zone management) are skipped
	 * too: they move no data.
	 */
	if (op != IO_OP_FLUSH && ri->remaining == 0)
		return 0;

	now = bpf_ktime_get_ns();
	s->ops[op] += 1;
	gg_count(GG_STAT_EVENTS);
	if (error) {
		s->errors += 1;
		s->last_err = error;
		s->last_err_ns = now;
	}
	if (!issue || issue > now)
		return 0; /* issued before the probe attached */

	/* An insert time older than the request's allocation belongs to a previous user. */
	insert_ok = insert && insert <= issue && (!ri->alloc_ns || insert >= ri->alloc_ns);
	start = issue;
	start_ok = true;
	if (ri->alloc_ns && ri->alloc_ns <= issue)
		start = ri->alloc_ns;
	else if (insert_ok)
		start = insert;
	else
		start_ok = false; /* only the issue time is known: no driver latency */

	period_roll(&s->period);
	lat_add(s, IO_STAGE_REQ, now - start, now);
	if (start_ok)
		lat_add(s, IO_STAGE_DRIVER, issue - start, now);
	lat_add(s, IO_STAGE_DEVICE, now - issue, now);
	return 0;
}

SEC("raw_tp/block_rq_complete")
int BPF_PROG(io_rq_complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	struct rq_info ri;

	rq_info_core(rq, &ri);
	return account_completion(rq, &ri, error, nr_bytes);
}

/* Preferred where BPF_PROG_TYPE_TRACING is available (5.5+); the loader falls back otherwise. */
SEC("tp_btf/block_rq_complete")
int BPF_PROG(io_rq_complete_btf, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	struct rq_info ri;

	rq_info_btf(rq, &ri);
	return account_completion(rq, &ri, error, nr_bytes);
}

/*
 * Page cache (sub-probe page_cache, upstream's io_pagecache): tp_btf programs the loader
 * attaches only while the sub-probe is on (they run for every page the page cache adds,
 * dirties or serves, which is a cost a block-latency probe should not impose by default).
 * Upstream hooked mark_page_accessed, mark_buffer_dirty, add_to_page_cache_lru and
 * account_page_dirtied with kprobes; here:
 *   load         mm_filemap_add_to_page_cache (in __filemap_add_folio): exact, in pages;
 *   page_dirty   writeback_dirty_folio (in folio_account_dirtied): exact, in pages;
 *   buffer_dirty block_dirty_buffer (in mark_buffer_dirty): exact;
 *   access       mm_filemap_get_pages (buffered reads: the page range each read looks up),
 *                mm_filemap_map_pages (fault-around) and mm_filemap_fault (page faults): pages
 *                looked up in the page cache; mark_page_accessed has no tracepoint, and
 *                writes that find their page cached are not seen.
 * Devices with major 0 (tmpfs, overlay, proc ...) are not disks and are not counted.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct io_pc_stats);
} io_pc SEC(".maps");

enum pc_field { PC_ACCESS, PC_BUFFER_DIRTY, PC_LOAD, PC_PAGE_DIRTY };

static __always_inline void pc_add(__u32 dev, enum pc_field f, __u64 n)
{
	struct io_pc_stats *s;

	if (!dev || !(dev >> 20))
		return;
	s = bpf_map_lookup_elem(&io_pc, &dev);
	if (!s) {
		struct io_pc_stats zero = {};

		gg_map_update(&io_pc, &dev, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&io_pc, &dev);
		if (!s)
			return;
	}
	/* Per-CPU values: plain adds. */
	switch (f) {
	case PC_ACCESS:
		s->access += n;
		break;
	case PC_BUFFER_DIRTY:
		s->buffer_dirty += n;
		break;
	case PC_LOAD:
		s->load += n;
		break;
	case PC_PAGE_DIRTY:
		s->page_dirty += n;
		break;
	}
	gg_count(GG_STAT_EVENTS);
}

SEC("tp_btf/mm_filemap_add_to_page_cache")
int BPF_PROG(io_pc_load, struct folio *folio)
{
	pc_add(gg_mapping_dev(folio->mapping), PC_LOAD, gg_folio_pages(folio));
	return 0;
}

SEC("tp_btf/writeback_dirty_folio")
int BPF_PROG(io_pc_page_dirty, struct folio *folio, struct address_space *mapping)
{
	pc_add(gg_mapping_dev(mapping), PC_PAGE_DIRTY, gg_folio_pages(folio));
	return 0;
}

SEC("tp_btf/block_dirty_buffer")
int BPF_PROG(io_pc_buffer_dirty, struct buffer_head *bh)
{
	if (bh)
		pc_add(bh->b_bdev->bd_dev, PC_BUFFER_DIRTY, 1);
	return 0;
}

SEC("tp_btf/mm_filemap_get_pages")
int BPF_PROG(io_pc_get_pages, struct address_space *mapping, unsigned long index,
	     unsigned long last_index)
{
	pc_add(gg_mapping_dev(mapping), PC_ACCESS, gg_pages_in(index, last_index));
	return 0;
}

SEC("tp_btf/mm_filemap_map_pages")
int BPF_PROG(io_pc_map_pages, struct address_space *mapping, unsigned long index,
	     unsigned long last_index)
{
	pc_add(gg_mapping_dev(mapping), PC_ACCESS, gg_pages_in(index, last_index));
	return 0;
}

SEC("tp_btf/mm_filemap_fault")
int BPF_PROG(io_pc_fault, struct address_space *mapping, unsigned long index)
{
	pc_add(gg_mapping_dev(mapping), PC_ACCESS, 1);
	return 0;
}
