// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Test-only program exercising gg_common.h through the probe_sdk::bpf platform (loaded by the
 * unit tests in mod.rs beside this file): each getppid() of the target thread emits one
 * ring-buffer event and inserts one key into a 4-entry map, so the test can predict EVENTS,
 * LOST and MAP_FULL exactly.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "gg_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Thread id (not process id): tests in one process run in parallel threads. */
const volatile __u32 target_tid = 0;

__u64 seq;

struct selftest_event {
	__u64 seq;
	__u8 pad[56];
};

struct selftest_event _selftest_event = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} selftest_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u64);
	__type(value, __u8);
} selftest_seen SEC(".maps");

SEC("tp/syscalls/sys_enter_getppid")
int selftest_getppid(void *ctx)
{
	struct selftest_event *e;
	__u8 one = 1;
	__u64 n;

	if ((__u32)bpf_get_current_pid_tgid() != target_tid)
		return 0;
	n = __sync_fetch_and_add(&seq, 1);
	gg_map_update(&selftest_seen, &n, &one, BPF_NOEXIST);
	e = gg_rb_reserve(&selftest_events, sizeof(*e));
	if (!e)
		return 0;
	e->seq = n;
	gg_rb_submit(&selftest_events, e);
	return 0;
}
