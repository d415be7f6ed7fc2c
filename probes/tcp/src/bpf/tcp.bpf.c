// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcpprobe: per-connection TCP metrics without kprobes.
 *
 * - tp_btf/inet_sock_set_state gives every state change with a typed struct sock. It keeps the
 *   per-socket state (owner tgid, role, establish time, counters already reported) in
 *   socket-local storage, and reports a connection's final counters when it reaches CLOSE.
 * - iter/tcp walks the live sockets once per period (driven by user space) and reports what
 *   changed since the last report: the counters are read from struct tcp_sock, so no hook runs
 *   per segment for bytes or segments.
 * - tp_btf/tcp_send_reset, tcp_receive_reset count resets; tp_btf/tcp_probe (per received
 *   segment, optional) detects zero-window episodes with a few loads and no map access unless
 *   a window is zero.
 *
 * Reports add into one of two hash maps (agg0/agg1) keyed by the output record key; user space
 * flips agg_slot each period and drains the other map, so no delta is counted twice or lost.
 * Both report paths run under the socket lock (state changes hold it; the tcp iterator takes
 * lock_sock_fast), so tcp_conn.rep is never updated concurrently.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "gg_common.h"
#include "tcp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define TCPHDR_SYN 0x02
#define TCPHDR_RST 0x04

/* Set by user space before load. */
const volatile __u8 cfg_report_cport = 0;

/* Aggregate map user space is not draining right now (0 or 1); flipped every period. */
volatile __u32 agg_slot = 0;

static const __u32 hist_bounds_us[TCP_HIST_SLOTS] = TCP_HIST_BOUNDS_US;

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct tcpp_conn);
} conns SEC(".maps");

/* max_entries of agg0/agg1 is set by user space (-M). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct tcpp_key);
	__type(value, struct tcpp_agg);
} agg0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct tcpp_key);
	__type(value, struct tcpp_agg);
} agg1 SEC(".maps");

/* Zeroed template for new aggregate entries (too large for the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcpp_agg);
} agg_scratch SEC(".maps");

/* Local ports of listeners seen by the iterator: role of connections older than the probe. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, struct tcpp_listen_key);
	__type(value, __u8);
} listen_ports SEC(".maps");

/* Socket inode -> owner, filled by user space from /proc for sockets older than the probe. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct tcpp_owner);
} owners SEC(".maps");

static __always_inline void add(__u64 *p, __u64 v)
{
	if (v)
		__sync_fetch_and_add(p, v);
}

static __always_inline void set_max(__u64 *p, __u64 v)
{
	/* Racy between CPUs, like any max gauge sampled without a lock; good enough. */
	if (v > *p)
		*p = v;
}

static __always_inline void fill_owner_from_current(struct tcpp_conn *c)
{
	struct task_struct *task = bpf_get_current_task_btf();

	c->tgid = bpf_get_current_pid_tgid() >> 32;
	/* The process name (group leader), as /proc/<tgid>/comm shows it, not the thread's. */
	bpf_probe_read_kernel_str(c->comm, sizeof(c->comm), task->group_leader->comm);
}

static __always_inline struct tcpp_agg *agg_get_in(void *map, const struct tcpp_key *key,
						  const char *comm)
{
	struct tcpp_agg *a = bpf_map_lookup_elem(map, key);
	__u32 zero = 0;
	struct tcpp_agg *init;

	if (a)
		return a;
	init = bpf_map_lookup_elem(&agg_scratch, &zero);
	if (!init)
		return NULL;
	__builtin_memset(init, 0, sizeof(*init));
	__builtin_memcpy(init->comm, comm, TCP_COMM_LEN);
	/* -EEXIST means another CPU created it first: fine, look it up again. */
	gg_map_update(map, key, init, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

static __always_inline struct tcpp_agg *agg_get(const struct tcpp_key *key, const char *comm)
{
	if (agg_slot)
		return agg_get_in(&agg1, key, comm);
	return agg_get_in(&agg0, key, comm);
}

/*
 * Local port. Not skc_num: the state-change tracepoint fires after inet_put_port() cleared it
 * on the way to CLOSE; inet_sport stays until the socket is reused.
 */
static __always_inline __u16 local_port(const struct sock *sk)
{
	return bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
}

static __always_inline __u8 infer_role(const struct sock *sk)
{
	struct tcpp_listen_key lk = {
		.family = sk->__sk_common.skc_family,
		.port = local_port(sk),
	};

	return bpf_map_lookup_elem(&listen_ports, &lk) ? TCP_ROLE_SERVER : TCP_ROLE_CLIENT;
}

static __always_inline void build_key(const struct sock *sk, const struct tcpp_conn *c,
				      struct tcpp_key *k)
{
	__u16 family = sk->__sk_common.skc_family;
	__u16 lport = local_port(sk);
	__u16 rport = bpf_ntohs(sk->__sk_common.skc_dport);
	int server = c->role == TCP_ROLE_SERVER;

	k->tgid = c->tgid;
	k->family = family;
	k->role = c->role;
	k->server_port = server ? lport : rport;
	k->client_port = cfg_report_cport ? (server ? rport : lport) : 0;
	if (family == AF_INET) {
		__u32 laddr = sk->__sk_common.skc_rcv_saddr;
		__u32 raddr = sk->__sk_common.skc_daddr;

		__builtin_memcpy(k->client_ip, server ? &raddr : &laddr, 4);
		__builtin_memcpy(k->server_ip, server ? &laddr : &raddr, 4);
	} else {
		struct in6_addr laddr = sk->__sk_common.skc_v6_rcv_saddr;
		struct in6_addr raddr = sk->__sk_common.skc_v6_daddr;

		__builtin_memcpy(k->client_ip, server ? &raddr : &laddr, 16);
		__builtin_memcpy(k->server_ip, server ? &laddr : &raddr, 16);
	}
}

static __always_inline int hist_slot(__u64 us)
{
	int i;

	for (i = 0; i < TCP_HIST_SLOTS - 1; i++) {
		if (us <= hist_bounds_us[i])
			return i;
	}
	/* Above the last bound (longer than the kernel's SYN retry budget): counted there. */
	return TCP_HIST_SLOTS - 1;
}

static __always_inline __u64 delta(__u64 now, __u64 before)
{
	/* A counter below its last report was reset (tcp_disconnect + reuse): count it anew. */
	return now >= before ? now - before : now;
}

enum report_kind {
	REPORT_LIVE,  /* iterator pass */
	REPORT_CLOSE, /* the connection reached CLOSE */
};

/* Adds what changed on @sk since its last report to the aggregate of its key. */
static __always_inline void report(struct sock *sk, struct tcp_sock *tp, struct tcpp_conn *c,
				   enum report_kind kind, int failed)
{
	struct tcpp_key key = {};
	struct tcpp_agg *a;
	__u64 now[TCP_C_FROM_SOCK];
	__u64 rx, srtt;
	int i, slot;

	if (!c->role)
		c->role = infer_role(sk);
	build_key(sk, c, &key);
	a = agg_get(&key, c->comm);
	if (!a)
		/* Counted as map_full; a live socket's deltas stay pending for the next pass. */
		return;

	rx = tp->bytes_received;
	/* bytes_received counts the FIN's sequence number; SOCK_DONE is set when it arrives. */
	if ((sk->__sk_common.skc_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) &&
	    rx)
		rx--;
	now[TCP_C_RX_BYTES] = rx;
	now[TCP_C_TX_BYTES] = delta(tp->bytes_sent, tp->bytes_retrans);
	now[TCP_C_SEGS_IN] = tp->segs_in;
	now[TCP_C_SEGS_OUT] = tp->segs_out;
	now[TCP_C_RETRANS] = tp->total_retrans;
	for (i = 0; i < TCP_C_FROM_SOCK; i++) {
		add(&a->c[i], delta(now[i], c->rep[i]));
		c->rep[i] = now[i];
	}
	for (i = TCP_C_FROM_SOCK; i < TCP_C_NR; i++) {
		__u64 cur = c->cur[i];

		add(&a->c[i], delta(cur, c->rep[i]));
		c->rep[i] = cur;
	}

	if (c->flags & TCP_CONN_ESTAB_PENDING) {
		c->flags &= ~TCP_CONN_ESTAB_PENDING;
		add(&a->opens, 1);
		add(&a->estab_sum_us, c->estab_us);
		set_max(&a->estab_max_us, c->estab_us);
		slot = hist_slot(c->estab_us);
		if (slot >= 0 && slot < TCP_HIST_SLOTS)
			add(&a->estab_hist[slot], 1);
	}

	srtt = tp->srtt_us >> 3;
	if (srtt) {
		add(&a->rtt_samples, 1);
		add(&a->srtt_sum_us, srtt);
		set_max(&a->srtt_max_us, srtt);
		add(&a->rcv_rtt_sum_us, tp->rcv_rtt_est.rtt_us >> 3);
	}
	if (kind == REPORT_LIVE) {
		add(&a->live, 1);
		add(&a->snd_cwnd_sum, tp->snd_cwnd);
		add(&a->snd_wnd_sum, tp->snd_wnd);
		add(&a->rcv_wnd_sum, tp->rcv_wnd);
		add(&a->notsent_sum, (__u32)(tp->write_seq - tp->snd_nxt));
		add(&a->notack_sum, (__u32)(tp->snd_nxt - tp->snd_una));
		add(&a->reordering_sum, tp->reordering);
	} else {
		add(&a->closes, 1);
		if (failed)
			add(&a->failed, 1);
	}
}

/* Counts event @idx on @sk: pending in its storage, or straight into the aggregate once the
 * connection's final report is done (e.g. the RST that tcp_disconnect sends after CLOSE). */
static __always_inline void count_event(struct sock *sk, struct tcpp_conn *c, int idx)
{
	struct tcpp_key key = {};
	struct tcpp_agg *a;

	if (idx < TCP_C_FROM_SOCK || idx >= TCP_C_NR)
		return;
	gg_count(GG_STAT_EVENTS);
	if (!(c->flags & TCP_CONN_CLOSED)) {
		__sync_fetch_and_add(&c->cur[idx], 1);
		return;
	}
	build_key(sk, c, &key);
	a = agg_get(&key, c->comm);
	if (a)
		add(&a->c[idx], 1);
}

static __always_inline void reset_conn(struct tcpp_conn *c)
{
	/* Keeps the owner (cloned from the listener for accepted sockets). */
	__u32 tgid = c->tgid;
	char comm[TCP_COMM_LEN];

	__builtin_memcpy(comm, c->comm, TCP_COMM_LEN);
	__builtin_memset(c, 0, sizeof(*c));
	c->tgid = tgid;
	__builtin_memcpy(c->comm, comm, TCP_COMM_LEN);
}

static __always_inline struct tcpp_conn *conn_get(struct sock *sk, int create)
{
	struct tcpp_conn *c;

	c = bpf_sk_storage_get(&conns, sk, 0, create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
	if (!c && create)
		gg_count(GG_STAT_LOST);
	return c;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state, struct sock *sk, int oldstate, int newstate)
{
	struct tcp_sock *tp;
	struct tcpp_conn *c;
	__u16 family;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;

	if (newstate == BPF_TCP_LISTEN) {
		c = conn_get(sk, 1);
		if (!c)
			return 0;
		__builtin_memset(c, 0, sizeof(*c));
		fill_owner_from_current(c);
		c->role = TCP_ROLE_SERVER;
		c->flags = TCP_CONN_LISTENER;
		return 0;
	}
	if (oldstate == BPF_TCP_LISTEN) {
		/* LISTEN -> SYN_RECV is a new child (storage cloned from the listener, if it had one);
		 * LISTEN -> CLOSE is the listener going away: nothing to report. */
		if (newstate != BPF_TCP_SYN_RECV)
			return 0;
		c = conn_get(sk, 1);
		if (!c)
			return 0;
		reset_conn(c);
		c->role = TCP_ROLE_SERVER;
		c->start_ns = bpf_ktime_get_ns();
		c->cur[TCP_C_STATE_CHANGES] = 1;
		gg_count(GG_STAT_EVENTS);
		return 0;
	}
	if (newstate == BPF_TCP_SYN_SENT) {
		/* connect(): process context, so current is the owner. */
		c = conn_get(sk, 1);
		if (!c)
			return 0;
		__builtin_memset(c, 0, sizeof(*c));
		fill_owner_from_current(c);
		c->role = TCP_ROLE_CLIENT;
		c->start_ns = bpf_ktime_get_ns();
		c->cur[TCP_C_STATE_CHANGES] = 1;
		gg_count(GG_STAT_EVENTS);
		return 0;
	}

	/* Sockets older than the probe get storage here (owner unknown: tgid 0). */
	c = conn_get(sk, 1);
	if (!c)
		return 0;
	gg_count(GG_STAT_EVENTS);
	__sync_fetch_and_add(&c->cur[TCP_C_STATE_CHANGES], 1);

	if (newstate == BPF_TCP_ESTABLISHED) {
		__u64 us = 0;

		if (!c->role)
			c->role = oldstate == BPF_TCP_SYN_SENT ? TCP_ROLE_CLIENT : TCP_ROLE_SERVER;
		if (c->role == TCP_ROLE_SERVER) {
			/* The child exists only once the handshake's last ACK arrived; the kernel's
			 * SYN-ACK round trip is the server's view of the handshake. */
			us = tp->srtt_us >> 3;
		} else if (c->start_ns) {
			us = (bpf_ktime_get_ns() - c->start_ns) / 1000;
		}
		if (c->start_ns || us) {
			c->estab_us = us;
			c->flags |= TCP_CONN_ESTAB_PENDING;
		}
		c->flags |= TCP_CONN_ESTABLISHED;
		return 0;
	}

	/* close()/shutdown() run in the owner's context: name owners we could not know before. */
	if (!c->tgid && ((oldstate == BPF_TCP_ESTABLISHED && newstate == BPF_TCP_FIN_WAIT1) ||
			 (oldstate == BPF_TCP_CLOSE_WAIT && newstate == BPF_TCP_LAST_ACK)))
		fill_owner_from_current(c);

	if (newstate == BPF_TCP_CLOSE && !(c->flags & TCP_CONN_CLOSED)) {
		report(sk, tp, c, REPORT_CLOSE, !(c->flags & TCP_CONN_ESTABLISHED));
		c->flags |= TCP_CONN_CLOSED;
	}
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(on_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	struct tcpp_conn *c;

	if (!sk)
		return 0;
	c = bpf_sk_storage_get(&conns, (struct sock *)sk, 0, 0);
	if (c)
		count_event((struct sock *)sk, c, TCP_C_RST_SENT);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(on_receive_reset, struct sock *sk)
{
	struct tcpp_conn *c;

	if (!sk)
		return 0;
	c = bpf_sk_storage_get(&conns, sk, 0, 0);
	if (c)
		count_event(sk, c, TCP_C_RST_RECV);
	return 0;
}

/*
 * Runs for every segment received in ESTABLISHED, so it stays cheap: three loads, and map work
 * only when a window is zero.
 */
SEC("tp_btf/tcp_probe")
int BPF_PROG(on_tcp_probe, struct sock *sk, struct sk_buff *skb)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct tcpp_conn *c;
	__u32 hdr = 0; /* data offset, flags, window: bytes 12..15 of the TCP header */
	__u16 win;
	__u8 flags;

	if (!tp)
		return 0;
	if (bpf_probe_read_kernel(&hdr, sizeof(hdr), skb->data + 12))
		return 0;
	flags = (hdr >> 8) & 0xff;
	win = hdr >> 16; /* network order; only compared with zero */

	/* Peer's window went from open to zero (RST and SYN segments carry no window). */
	if (!win && !(flags & (TCPHDR_RST | TCPHDR_SYN)) && tp->snd_wnd) {
		c = bpf_sk_storage_get(&conns, sk, 0, 0);
		if (c)
			count_event(sk, c, TCP_C_ZERO_SND_WND);
	}
	/* Our advertised window is zero: count each episode once (rcv_wup marks it). */
	if (!tp->rcv_wnd) {
		__u32 mark = tp->rcv_wup + 1;

		c = bpf_sk_storage_get(&conns, sk, 0, 0);
		if (c && c->zero_rcv_wup != mark) {
			c->zero_rcv_wup = mark;
			count_event(sk, c, TCP_C_ZERO_RCV_WND);
		}
	}
	return 0;
}

SEC("iter/tcp")
int dump_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;
	struct tcpp_conn *c;
	struct sock *sk;
	int state;

	if (!skc)
		return 0;
	/* NULL for request and TIME_WAIT sockets: their connection was reported at CLOSE. */
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = &tp->inet_conn.icsk_inet.sk;
	state = sk->__sk_common.skc_state;
	if (state == BPF_TCP_CLOSE)
		return 0;

	c = bpf_sk_storage_get(&conns, sk, 0, 0);
	if (!c) {
		c = conn_get(sk, 1);
		if (!c)
			return 0;
		if (state == BPF_TCP_LISTEN)
			c->flags = TCP_CONN_LISTENER;
	}
	if (!c->tgid && sk->sk_socket) {
		/* Older than the probe: user space resolved socket inodes from /proc. */
		__u64 ino = BPF_CORE_READ((struct socket_alloc *)sk->sk_socket, vfs_inode.i_ino);
		struct tcpp_owner *o = bpf_map_lookup_elem(&owners, &ino);

		if (o) {
			c->tgid = o->tgid;
			__builtin_memcpy(c->comm, o->comm, TCP_COMM_LEN);
		}
	}
	if (state == BPF_TCP_LISTEN) {
		struct tcpp_listen_key lk = {
			.family = sk->__sk_common.skc_family,
			.port = sk->__sk_common.skc_num,
		};
		__u8 one = 1;

		c->role = TCP_ROLE_SERVER;
		c->flags |= TCP_CONN_LISTENER;
		bpf_map_update_elem(&listen_ports, &lk, &one, BPF_ANY);
		return 0;
	}
	if (c->flags & (TCP_CONN_LISTENER | TCP_CONN_CLOSED))
		return 0;
	report(sk, tp, c, REPORT_LIVE, 0);
	return 0;
}
