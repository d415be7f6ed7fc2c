/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * intf.h - layout shared by io.bpf.c and ioprobe's Rust code (via the skeleton's types;
 * src/decode.rs reads map values into them). Change both sides together.
 */
#ifndef IOPROBE_INTF_H
#define IOPROBE_INTF_H

/* Operation classes, as /proc/diskstats groups them. */
enum io_op {
	IO_OP_READ = 0,
	IO_OP_WRITE = 1,
	IO_OP_DISCARD = 2,
	IO_OP_FLUSH = 3,
	IO_OP_NR = 4,
};

/* Latency stages (upstream's block, driver and device latencies). */
enum io_stage {
	IO_STAGE_REQ = 0,    /* request allocated (or first seen) -> completed */
	IO_STAGE_DRIVER = 1, /* request allocated (else inserted) -> issued to the driver */
	IO_STAGE_DEVICE = 2, /* issued to the driver -> completed */
	IO_STAGE_NR = 3,
};

/*
 * log2 latency buckets in microseconds: slot 0 holds < 1 us, slot i (i >= 1) holds
 * [2^(i-1), 2^i) us, so slot i's upper bound is 2^i us. The last slot also takes anything
 * longer (2^32 us is 71 minutes).
 */
#define IO_LAT_SLOTS 33

struct io_lat_hist {
	__u64 slots[IO_LAT_SLOTS];
	__u64 sum_ns;
	__u64 count;
};

/* Latencies of one report period on one CPU, per stage. */
struct io_period {
	__u32 epoch;                  /* the period (period_epoch) these values belong to */
	__u32 _pad;
	__u64 n[IO_STAGE_NR];         /* latencies recorded */
	__u64 max_ns[IO_STAGE_NR];    /* the largest */
	__u64 last_ns[IO_STAGE_NR];   /* the latest */
	__u64 last_ts[IO_STAGE_NR];   /* ktime when the latest was recorded */
	__u64 jitter_ns[IO_STAGE_NR]; /* largest difference between two consecutive ones */
};

/*
 * User space numbers the periods (period_epoch); a program that finds an older epoch in cur
 * rolls cur into prev first, so user space can still read the period that just ended from prev
 * when this CPU has moved on.
 */
struct io_period_pair {
	struct io_period cur;
	struct io_period prev;
};

/* Per disk, per CPU; cumulative since the probe started (except period). */
struct io_disk_stats {
	__u64 ops[IO_OP_NR];     /* completed requests */
	__u64 bytes[IO_OP_NR];   /* bytes completed without error */
	__u64 errors;            /* requests completed with an error */
	__u64 last_err_ns;       /* ktime of the latest error on this CPU, 0 if none */
	__u32 last_err;          /* blk_status_t of that error */
	__u32 _pad;
	struct io_lat_hist lat[IO_STAGE_NR];
	struct io_period_pair period;
};

/*
 * Timestamps of one request, keyed by its struct request pointer. Requests come from fixed
 * per-queue pools, so entries are reused rather than deleted (an LRU map bounds the rest);
 * completion clears both fields.
 */
struct io_start {
	__u64 insert_ns; /* 0 if not inserted since the last completion */
	__u64 issue_ns;  /* 0 until issued */
};

/*
 * Page-cache activity per block device (the superblock's s_dev, or the buffer's device), per
 * CPU, cumulative; counted only while the page_cache sub-probe is on (its programs are
 * attached then). Pages, not folios: a large folio counts its pages.
 */
struct io_pc_stats {
	__u64 access;       /* pages looked up through the page cache: buffered reads (filemap_get_pages), faults and fault-around mappings */
	__u64 buffer_dirty; /* mark_buffer_dirty() calls (block_dirty_buffer) */
	__u64 load;         /* pages added to the page cache (mm_filemap_add_to_page_cache) */
	__u64 page_dirty;   /* pages dirtied and accounted for writeback (writeback_dirty_folio) */
};

#endif /* IOPROBE_INTF_H */
