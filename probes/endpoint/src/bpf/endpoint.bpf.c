// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * endpoint: per-listener, per-connect-target and per-UDP-socket counters without kprobes.
 *
 * - tp_btf/inet_sock_set_state: LISTEN (owner, listener map entry), SYN_SENT (owner),
 *   SYN_SENT -> ESTABLISHED / CLOSE (with sk_err), and child sockets: SYN_RECV -> ESTABLISHED
 *   (passive open, latency), SYN_RECV -> CLOSE (passive open, failed).
 * - tp_btf/tcp_retransmit_synack (listener), tp_btf/tcp_retransmit_skb (SYN_SENT only; the
 *   variant with `err` where the kernel's tracepoint has it).
 * - tp_btf/consume_skb, only where it is called from tcp_rcv_state_process (the address range
 *   comes from user space): a SYN a listener consumed. tcp_conn_request() drops a SYN with
 *   tcp_listendrop() and returns 0, so the SYN is consume_skb'd like an accepted one. Each SYN
 *   is counted, and one that raised this CPU's share of ListenOverflows is an accept-queue
 *   overflow (raised_listen_overflows); how many SYNs were dropped at all user space derives
 *   from the totals (the listener's sk_drops less the other paths' shares), since a change of
 *   sk_drops seen here may be another CPU's packet's.
 * - tp_btf/kfree_skb (optional, needs rx_sk): drops on a listener by reason, SYNs of
 *   connecting sockets freed by the local stack.
 * - tp_btf/sock_send_length, sock_recv_length, udp_fail_queue_rcv_skb: UDP counters per socket.
 * - iter/tcp and iter/udp dump the kernel's per-socket state once per period.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "gg_common.h"
#include "intf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_UDP 17
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ENOMEM 12
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

/* Address range of tcp_rcv_state_process (from /proc/kallsyms); 0 = consume hook unused. */
const volatile __u64 conn_lo = 0;
const volatile __u64 conn_hi = 0;
/* Most listen addresses / UDP sockets tracked in the kernel (set before load). */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ep_listen_key);
	__type(value, struct ep_listen_state);
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ep_udp_ctr);
} udp_socks SEC(".maps");

/* Scratch space for a new map value (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ep_listen_state);
} scratch SEC(".maps");

/* This CPU's share of a namespace's TcpExt ListenOverflows when a listener's packet last
 * ended here. */
struct mib_seen {
	__u64 net;
	__u64 overflows;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mib_seen);
} overflows_seen SEC(".maps");


/* Make the skeleton generate Rust copies of the record types. */
struct ep_ev_owner ep_ev_owner_type = {};
struct ep_ev_mark ep_ev_mark_type = {};
struct ep_listener ep_listener_type = {};
struct ep_udp_live ep_udp_live_type = {};
struct ep_udp_ctr ep_udp_ctr_type = {};
struct ep_listen_key ep_listen_key_type = {};
struct ep_listen_state ep_listen_state_type = {};
enum ep_kind ep_kind_type = 0;

/* Local port: inet_sport, which stays set after inet_put_port() on the way to CLOSE. */
static __always_inline __u16 local_port(const struct sock *sk)
{
	return bpf_ntohs(bpf_core_cast(sk, struct inet_sock)->inet_sport);
}

/* Fills @id; @cookie is the socket cookie, or (client records) the socket's address. */
static __always_inline void fill_id_as(struct ep_id *id, struct sock *sk, __u8 kind, __u64 cookie)
{
	struct sock *s = bpf_core_cast(sk, struct sock);
	__u16 family = s->__sk_common.skc_family;

	id->cookie = cookie;
	id->family = family;
	id->lport = local_port(sk);
	id->rport = bpf_ntohs(s->__sk_common.skc_dport);
	id->kind = kind;
	id->state = s->__sk_common.skc_state;
	__builtin_memset(id->laddr, 0, sizeof(id->laddr));
	__builtin_memset(id->raddr, 0, sizeof(id->raddr));
	if (family == AF_INET) {
		__u32 l = s->__sk_common.skc_rcv_saddr;
		__u32 r = s->__sk_common.skc_daddr;

		__builtin_memcpy(id->laddr, &l, 4);
		__builtin_memcpy(id->raddr, &r, 4);
	} else {
		struct in6_addr l = s->__sk_common.skc_v6_rcv_saddr;
		struct in6_addr r = s->__sk_common.skc_v6_daddr;

		__builtin_memcpy(id->laddr, &l, 16);
		__builtin_memcpy(id->raddr, &r, 16);
	}
}

static __always_inline void fill_id(struct ep_id *id, struct sock *sk, __u8 kind)
{
	fill_id_as(id, sk, kind, bpf_get_socket_cookie(sk));
}

/* sk_drops as sk_drops_read() sums it (6.18 adds per-NUMA counters for UDP). */
static __always_inline __u64 read_drops(struct sock *sk)
{
	struct sock *s = bpf_core_cast(sk, struct sock);
	__u64 n = (__u32)s->sk_drops.counter;

	if (bpf_core_field_exists(s->sk_drop_counters)) {
		struct numa_drop_counters *nd = s->sk_drop_counters;

		if (nd) {
			struct numa_drop_counters *c = bpf_core_cast(nd, struct numa_drop_counters);

			n += (__u32)c->drops0.counter + (__u32)c->drops1.counter;
		}
	}
	return n;
}

/* Inode number of a network namespace (what /proc/<pid>/ns/net links to). */
static __always_inline __u32 netns_inum(struct net *net)
{
	return net ? bpf_core_cast(net, struct net)->ns.inum : 0;
}

static __always_inline void listen_key_of(struct ep_listen_key *k, struct sock *sk)
{
	struct sock *s = bpf_core_cast(sk, struct sock);

	__builtin_memset(k, 0, sizeof(*k));
	k->netns = netns_inum(s->__sk_common.skc_net.net);
	k->family = s->__sk_common.skc_family;
	k->port = local_port(sk);
	if (k->family == AF_INET) {
		__u32 a = s->__sk_common.skc_rcv_saddr;

		__builtin_memcpy(k->addr, &a, 4);
	} else {
		struct in6_addr a = s->__sk_common.skc_v6_rcv_saddr;

		__builtin_memcpy(k->addr, &a, 16);
	}
}

/* The listener entry of a listen key: the exact address, else the wildcard of the family, else
 * (IPv4) the IPv6 wildcard (a dual-stack listener). */
static __always_inline struct ep_listen_state *find_listener(struct ep_listen_key *k)
{
	struct ep_listen_state *v = bpf_map_lookup_elem(&listeners, k);

	if (v)
		return v;
	__builtin_memset(k->addr, 0, sizeof(k->addr));
	v = bpf_map_lookup_elem(&listeners, k);
	if (v || k->family != AF_INET)
		return v;
	k->family = AF_INET6;
	return bpf_map_lookup_elem(&listeners, k);
}

/* Claims the listener's sk_drops increments up to @drops not yet accounted for; returns how
 * many. SYNs of one listener are handled on several CPUs at once: each increment is claimed
 * by exactly one of them (compare-and-exchange on last_drops), else two CPUs reading the same
 * old value would both count the same drops. */
static __always_inline __u64 claim_drops(struct ep_listen_state *v, __u64 drops)
{
	__u64 last = v->last_drops;
	int i;

	for (i = 0; i < 4; i++) {
		__u64 seen;

		if (drops <= last)
			return 0;
		seen = __sync_val_compare_and_swap(&v->last_drops, last, drops);
		if (seen == last)
			return drops - last;
		last = seen;
	}
	return 0;
}

/* Adds a map entry for listener @sk unless its address has one. */
static __always_inline struct ep_listen_state *add_listener(struct sock *sk, __u64 drops)
{
	struct ep_listen_key k;
	struct ep_listen_state *v;
	__u32 zero = 0;

	listen_key_of(&k, sk);
	v = bpf_map_lookup_elem(&listeners, &k);
	if (v)
		return v;
	v = bpf_map_lookup_elem(&scratch, &zero);
	if (!v)
		return NULL;
	__builtin_memset(v, 0, sizeof(*v));
	v->sk = (__u64)sk;
	v->cookie = bpf_get_socket_cookie(sk);
	v->last_drops = drops;
	v->base_drops = drops;
	gg_map_update(&listeners, &k, v, BPF_NOEXIST);
	return bpf_map_lookup_elem(&listeners, &k);
}

static __always_inline void observe_estab(struct ep_listen_ctr *c, __u64 us)
{
	static const __u64 bounds[EP_HIST_SLOTS] = { 50, 100, 250, 500, 1000, 2500, 5000,
						     10000, 50000, 250000, 1000000, 3000000,
						     10000000, 130000000 };
	__u32 slot = EP_HIST_SLOTS - 1;

	for (__u32 i = 0; i < EP_HIST_SLOTS; i++) {
		if (us <= bounds[i]) {
			slot = i;
			break;
		}
	}
	__sync_fetch_and_add(&c->estab_hist[slot], 1);
	__sync_fetch_and_add(&c->estab_sum, us);
	if (us > c->estab_max)
		c->estab_max = us;
}

/*
 * The owner record of a listen (id.cookie: the socket cookie) or a connect (id.cookie: the
 * socket's address, which names it in its later ep_ev_mark records). Every helper call costs
 * on the connect path, so the connect's takes no cookie and reads tgid through the task.
 */
static __always_inline void send_owner(struct sock *sk, __u8 kind)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct ep_ev_owner *e = gg_rb_reserve(&events, sizeof(*e));

	if (!e)
		return;
	if (kind == EP_EV_CONNECT)
		fill_id_as(&e->id, sk, kind, (__u64)sk);
	else
		fill_id(&e->id, sk, kind);
	e->ts_ns = bpf_ktime_get_ns();
	e->tgid = task->tgid;
	e->pad = 0;
	e->sk = (__u64)sk;
	__builtin_memcpy(e->comm, task->group_leader->comm, EP_COMM_LEN);
	gg_rb_submit(&events, e);
}

/* A connecting socket's later record: only its address (id.cookie) and kind are set in id. */
static __always_inline void send_mark(struct sock *sk, __u8 kind, __u32 aux, __u64 ts_ns)
{
	struct ep_ev_mark *e = gg_rb_reserve(&events, sizeof(*e));

	if (!e)
		return;
	__builtin_memset(&e->id, 0, sizeof(e->id));
	e->id.cookie = (__u64)sk;
	e->id.kind = kind;
	e->ts_ns = ts_ns;
	e->aux = aux;
	e->pad = 0;
	gg_rb_submit(&events, e);
}

static __always_inline void fill_listener(struct ep_listener *r, struct sock *sk, __u8 kind)
{
	struct ep_listen_key k;
	struct ep_listen_state *v;
	struct sock *s = bpf_core_cast(sk, struct sock);

	fill_id(&r->id, sk, kind);
	r->drops = read_drops(sk);
	r->ack_backlog = s->sk_ack_backlog;
	r->max_ack_backlog = s->sk_max_ack_backlog;
	r->ino = s->sk_socket ?
			 bpf_core_cast(s->sk_socket, struct socket_alloc)->vfs_inode.i_ino :
			 0;
	r->owns = 0;
	r->pad = 0;
	__builtin_memset(&r->c, 0, sizeof(r->c));
	listen_key_of(&k, sk);
	v = bpf_map_lookup_elem(&listeners, &k);
	if (v && v->sk == (__u64)sk) {
		r->owns = 1;
		r->drops -= v->base_drops;
		__builtin_memcpy(&r->c, &v->c, sizeof(r->c));
	}
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state, struct sock *sk, int oldstate, int newstate)
{
	struct ep_listen_state *v;
	struct ep_listen_key k;
	struct tcp_sock *tp;
	__u16 family;

	/* Decided on the arguments alone first: most transitions of a connection (FIN_WAIT*,
	 * CLOSE_WAIT, LAST_ACK, CLOSE from an open state) cost next to nothing. */
	if (newstate == BPF_TCP_CLOSE || newstate == BPF_TCP_ESTABLISHED) {
		if (oldstate != BPF_TCP_SYN_SENT && oldstate != BPF_TCP_SYN_RECV &&
		    (newstate != BPF_TCP_CLOSE || oldstate != BPF_TCP_LISTEN))
			return 0;
	} else if (newstate != BPF_TCP_LISTEN && newstate != BPF_TCP_SYN_SENT) {
		/* A child's creation (LISTEN -> SYN_RECV) is counted when its fate is known, at
		 * ESTABLISHED or CLOSE: one listener lookup per accepted connection, not two. */
		return 0;
	}
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;

	switch (newstate) {
	case BPF_TCP_LISTEN:
		add_listener(sk, read_drops(sk));
		send_owner(sk, EP_EV_LISTEN);
		return 0;
	case BPF_TCP_SYN_SENT:
		send_owner(sk, EP_EV_CONNECT);
		return 0;
	case BPF_TCP_ESTABLISHED:
		/* A TCP socket in SYN_SENT or SYN_RECV is a full tcp_sock. */
		tp = bpf_core_cast(sk, struct tcp_sock);
		if (oldstate == BPF_TCP_SYN_SENT) {
			/* tcp_rcv_state_process() refreshed tcp_mstamp (monotonic us) for this
			 * SYN-ACK: the time without a helper call. */
			send_mark(sk, EP_EV_ESTAB, 0, tp->tcp_mstamp * 1000);
		} else if (oldstate == BPF_TCP_SYN_RECV) {
			/* A child socket of a listener (tcp_create_openreq_child) established. */
			listen_key_of(&k, sk);
			v = find_listener(&k);
			if (v) {
				__sync_fetch_and_add(&v->c.passive_open, 1);
				observe_estab(&v->c, tp->srtt_us >> 3);
			}
		}
		return 0;
	case BPF_TCP_CLOSE:
		if (oldstate == BPF_TCP_SYN_SENT) {
			send_mark(sk, EP_EV_CONN_FAIL, sk->sk_err, 0);
		} else if (oldstate == BPF_TCP_SYN_RECV) {
			listen_key_of(&k, sk);
			v = find_listener(&k);
			if (v) {
				__sync_fetch_and_add(&v->c.passive_open, 1);
				__sync_fetch_and_add(&v->c.passive_open_failed, 1);
			}
		} else if (oldstate == BPF_TCP_LISTEN) {
			struct ep_listener *r = gg_rb_reserve(&events, sizeof(*r));

			if (r) {
				fill_listener(r, sk, EP_EV_LISTEN_CLOSE);
				gg_rb_submit(&events, r);
			}
			listen_key_of(&k, sk);
			v = bpf_map_lookup_elem(&listeners, &k);
			if (v && v->sk == (__u64)sk)
				bpf_map_delete_elem(&listeners, &k);
		}
		return 0;
	}
	return 0;
}

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(on_retransmit_synack, const struct sock *sk, const struct request_sock *req)
{
	struct ep_listen_key k;
	struct ep_listen_state *v;

	listen_key_of(&k, (struct sock *)sk);
	v = find_listener(&k);
	if (v)
		__sync_fetch_and_add(&v->c.retran_synacks, 1);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(on_retransmit_skb, const struct sock *sk, const struct sk_buff *skb)
{
	if (sk->__sk_common.skc_state == BPF_TCP_SYN_SENT)
		send_mark((struct sock *)sk, EP_EV_RETRAN_SYN, 0, 0);
	return 0;
}

/* Kernels whose tracepoint has `err` (6.18 has) fire it for failed attempts too, e.g. -EBUSY
 * while the previous copy still waits in a queue of the host (an unresolved neighbour): only a
 * SYN that went out is a retransmit, as the kernel's TCPSynRetrans and total_retrans count. */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(on_retransmit_skb_err, const struct sock *sk, const struct sk_buff *skb, int err)
{
	if (err == 0 && sk->__sk_common.skc_state == BPF_TCP_SYN_SENT)
		send_mark((struct sock *)sk, EP_EV_RETRAN_SYN, 0, 0);
	return 0;
}

/*
 * Whether the packet that just ended on this CPU raised @net's ListenOverflows: 1 or 0, -1
 * when that cannot be told (no per-CPU offset, another namespace's packet last time). The
 * kernel counts ListenOverflows per CPU (NET_INC_STATS) while it decides, and a CPU handles
 * one packet at a time, so this CPU's share changed since the last listener packet here only
 * by this packet's count — exact where a listener's sk_drops (shared by all CPUs) is not.
 */
static __always_inline int raised_listen_overflows(struct net *net)
{
	struct bpf_array *arr = bpf_core_cast(&overflows_seen, struct bpf_array);
	unsigned long base, here, addr;
	struct mib_seen *seen;
	__u32 zero = 0;
	__u64 now;
	int raised = -1;

	if (!net)
		return -1;
	seen = bpf_map_lookup_elem(&overflows_seen, &zero);
	if (!seen)
		return -1;
	/* This CPU's per-CPU offset: where this CPU's copy of the per-CPU map's one element
	 * lies, less the element's per-CPU base address (per-CPU symbols such as this_cpu_off
	 * need kallsyms with data symbols, which kernels often lack). */
	if (bpf_probe_read_kernel(&base, sizeof(base), &arr->pptrs[0]) ||
	    bpf_probe_read_kernel(&here, sizeof(here), &seen) ||
	    bpf_probe_read_kernel(&addr, sizeof(addr), &net->mib.net_statistics))
		return -1;
	addr += here - base;
	if (bpf_probe_read_kernel(&now, sizeof(now),
				  (void *)(addr + LINUX_MIB_LISTENOVERFLOWS * sizeof(unsigned long))))
		return -1;
	if (seen->net == (__u64)net)
		raised = now != seen->overflows;
	seen->net = (__u64)net;
	seen->overflows = now;
	return raised;
}

/*
 * tcp_conn_request(): with the SYN (request) queue full and syncookies off, a SYN is dropped
 * before the accept queue is looked at (TCPReqQFullDrop, no ListenOverflows); otherwise a full
 * accept queue (ack_backlog > max_ack_backlog) drops it (ListenOverflows). A full accept queue
 * refuses every SYN, so its state when the SYN is consumed is its state at the check but for
 * an accept() or a child made on another CPU in between.
 */
static __always_inline bool syn_refused_for_full_accept_queue(struct sock *lsk)
{
	struct inet_connection_sock *icsk = bpf_core_cast(lsk, struct inet_connection_sock);
	struct net *net = lsk->__sk_common.skc_net.net;
	__u32 max = lsk->sk_max_ack_backlog;

	if (lsk->sk_ack_backlog <= max)
		return false;
	if (net && bpf_core_cast(net, struct net)->ipv4.sysctl_tcp_syncookies == 0 &&
	    (__u32)icsk->icsk_accept_queue.qlen.counter > max)
		return false;
	return true;
}

SEC("tp_btf/consume_skb")
int BPF_PROG(on_consume, struct sk_buff *skb, void *location)
{
	__u64 loc = (__u64)location;
	struct ep_listen_state *v;
	struct ep_listen_key k;
	unsigned char *head;
	struct net *net = NULL;
	struct sock *lsk;
	int raised;
	__u8 flags;
	__u16 proto;

	if (loc < conn_lo || loc >= conn_hi)
		return 0;
	/* Headers read in place (typed loads, no helper call); the TCP flags are read as the
	 * header's byte 13 (the protocol's layout) rather than through its bitfields. */
	head = skb->head;
	{
		struct tcphdr *th = bpf_core_cast(head + skb->transport_header, struct tcphdr);

		flags = *((__u8 *)th + 13);
		if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
			return 0;
		__builtin_memset(&k, 0, sizeof(k));
		k.port = bpf_ntohs(th->dest);
	}
	/* The namespace the SYN arrived in is the listener's: skb->dev is NULL here (TCP cleared
	 * it), the input route's device is not. */
	{
		struct dst_entry *dst = (struct dst_entry *)(skb->_skb_refdst & ~3UL);
		struct net_device *dev = skb->dev;

		if (!dev && dst)
			dev = bpf_core_cast(dst, struct dst_entry)->dev;
		if (dev) {
			net = bpf_core_cast(dev, struct net_device)->nd_net.net;
			k.netns = netns_inum(net);
		}
	}
	/* Every listener's SYN, tracked or not, keeps this CPU's ListenOverflows seen. */
	raised = raised_listen_overflows(net);
	proto = bpf_ntohs(skb->protocol);
	if (proto == ETH_P_IP) {
		struct iphdr *ip = bpf_core_cast(head + skb->network_header, struct iphdr);
		__u32 daddr = ip->daddr;

		k.family = AF_INET;
		__builtin_memcpy(k.addr, &daddr, 4);
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = bpf_core_cast(head + skb->network_header, struct ipv6hdr);
		struct in6_addr daddr = ip6->daddr;

		k.family = AF_INET6;
		__builtin_memcpy(k.addr, &daddr, 16);
	} else {
		return 0;
	}
	v = find_listener(&k);
	if (!v)
		return 0;
	lsk = bpf_core_cast((void *)v->sk, struct sock);
	__sync_fetch_and_add(&v->c.syns, 1);
	if (raised > 0 || (raised < 0 && syn_refused_for_full_accept_queue(lsk)))
		__sync_fetch_and_add(&v->c.accept_overflow_syn, 1);
	/* Keeps last_drops current for on_kfree_skb's other drops (the amount is not ours). */
	claim_drops(v, read_drops(lsk));
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	struct ep_listen_state *v;
	struct ep_listen_key k;
	bool listen_overflow, child_failed;
	int raised = -1;
	struct sock *sk;
	__u64 drops;

	if (rx_sk) {
		if (rx_sk->__sk_common.skc_state != BPF_TCP_LISTEN ||
		    rx_sk->sk_protocol != IPPROTO_TCP)
			return 0;
		listen_overflow = reason == bpf_core_enum_value(enum skb_drop_reason,
								SKB_DROP_REASON_TCP_LISTEN_OVERFLOW);
		child_failed = listen_overflow ||
			       reason == bpf_core_enum_value(enum skb_drop_reason,
							     SKB_DROP_REASON_NO_SOCKET);
		/* Its ListenOverflows are its own: the next SYN on this CPU must not see them. */
		if (child_failed)
			raised = raised_listen_overflows(rx_sk->__sk_common.skc_net.net);
		listen_key_of(&k, rx_sk);
		v = bpf_map_lookup_elem(&listeners, &k);
		if (!v || v->sk != (__u64)rx_sk)
			return 0;
		drops = read_drops(rx_sk);
		if (child_failed) {
			/* A handshake ACK whose child could not be created: syn_recv_sock() did
			 * tcp_listendrop(), one ListenDrop. TCP_LISTEN_OVERFLOW comes from
			 * tcp_check_req(), whose packet tcp_v4_rcv()'s discard path then adds to
			 * sk_drops once more (sk_drops_add); NO_SOCKET with the listener as rx_sk
			 * from cookie_v4_check()/cookie_v6_check() (a syncookie's ACK), which frees
			 * it without. Counted per packet, not by claiming the change: another CPU
			 * may have claimed it already. The kernel's ListenOverflows counts only the
			 * children refused for a full accept queue. */
			claim_drops(v, drops);
			__sync_fetch_and_add(&v->c.ack_listen_drops, 1);
			if (listen_overflow)
				__sync_fetch_and_add(&v->c.drops_not_listen, 1);
			if (raised > 0 ||
			    (raised < 0 && rx_sk->sk_ack_backlog > rx_sk->sk_max_ack_backlog))
				__sync_fetch_and_add(&v->c.accept_overflow_ack, 1);
			else
				__sync_fetch_and_add(&v->c.drop_other, 1);
			return 0;
		}
		/* Other discards: the discard path of tcp_v4_rcv() adds the packet to sk_drops
		 * before this tracepoint, tcp_v4_do_rcv()'s does not; a change since the last
		 * claim is taken as this packet's, no ListenDrop. */
		if (claim_drops(v, drops))
			__sync_fetch_and_add(&v->c.drops_not_listen, 1);
		if (reason == bpf_core_enum_value(enum skb_drop_reason,
						       SKB_DROP_REASON_SOCKET_BACKLOG))
			__sync_fetch_and_add(&v->c.drop_backlog, 1);
		else
			__sync_fetch_and_add(&v->c.drop_other, 1);
		return 0;
	}
	/* Outgoing SYN freed by the local stack (e.g. neighbour resolution failed). */
	sk = skb->sk;
	if (!sk || sk->__sk_common.skc_state != BPF_TCP_SYN_SENT ||
	    sk->sk_protocol != IPPROTO_TCP)
		return 0;
	send_mark(sk, EP_EV_SYN_DROP, reason, 0);
	return 0;
}

/* UDP: process context for send and receive, so the first caller names the owner. */
static __always_inline struct ep_udp_ctr *udp_entry(struct sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct ep_udp_ctr *c = bpf_map_lookup_elem(&udp_socks, &cookie);
	struct ep_udp_ctr *init;
	__u32 zero = 0;

	if (c)
		return c;
	/* The scratch value is larger than ep_udp_ctr: reuse it. */
	init = bpf_map_lookup_elem(&scratch, &zero);
	if (!init)
		return NULL;
	__builtin_memset(init, 0, sizeof(*init));
	fill_id(&init->id, sk, EP_REC_UDP);
	gg_map_update(&udp_socks, &cookie, init, BPF_NOEXIST);
	return bpf_map_lookup_elem(&udp_socks, &cookie);
}

static __always_inline void udp_owner(struct ep_udp_ctr *c)
{
	struct task_struct *task;

	if (c->tgid)
		return;
	task = bpf_get_current_task_btf();
	__builtin_memcpy(c->comm, task->group_leader->comm, EP_COMM_LEN);
	c->tgid = bpf_get_current_pid_tgid() >> 32;
}

static __always_inline int is_udp(struct sock *sk)
{
	__u16 family;

	if (sk->sk_protocol != IPPROTO_UDP)
		return 0;
	family = sk->__sk_common.skc_family;
	return family == AF_INET || family == AF_INET6;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(on_send_length, struct sock *sk, int ret, int flags)
{
	struct ep_udp_ctr *c;

	if (!is_udp(sk))
		return 0;
	c = udp_entry(sk);
	if (!c)
		return 0;
	udp_owner(c);
	if (ret >= 0) {
		__sync_fetch_and_add(&c->tx_bytes, ret);
		__sync_fetch_and_add(&c->tx_dgrams, 1);
	} else {
		__sync_fetch_and_add(&c->tx_errors, 1);
	}
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(on_recv_length, struct sock *sk, int ret, int flags)
{
	struct ep_udp_ctr *c;

	/* MSG_PEEK reads the same datagram again; errors (EAGAIN) are no datagram. */
	if (ret < 0 || (flags & 2) || !is_udp(sk))
		return 0;
	c = udp_entry(sk);
	if (!c)
		return 0;
	udp_owner(c);
	__sync_fetch_and_add(&c->rx_bytes, ret);
	__sync_fetch_and_add(&c->rx_dgrams, 1);
	return 0;
}

SEC("tp_btf/udp_fail_queue_rcv_skb")
int BPF_PROG(on_udp_fail, int rc, struct sock *sk, struct sk_buff *skb)
{
	struct ep_udp_ctr *c;

	if (!sk || !is_udp(sk))
		return 0;
	c = udp_entry(sk);
	if (!c)
		return 0;
	if (rc == -ENOMEM)
		__sync_fetch_and_add(&c->rcvbuf_errors, 1);
	else
		__sync_fetch_and_add(&c->rcv_mem_errors, 1);
	return 0;
}

SEC("iter/tcp")
int dump_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct ep_listener rec;
	struct tcp_sock *tp;
	struct sock *sk;
	__u16 family;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = &tp->inet_conn.icsk_inet.sk;
	family = sk->__sk_common.skc_family;
	if (sk->__sk_common.skc_state != BPF_TCP_LISTEN ||
	    (family != AF_INET && family != AF_INET6))
		return 0;
	/* A listener older than the probe: give it a map entry from now on. */
	add_listener(sk, read_drops(sk));
	fill_listener(&rec, sk, EP_REC_LISTENER);
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

SEC("iter/udp")
int dump_udp(struct bpf_iter__udp *ctx)
{
	struct udp_sock *udp = ctx->udp_sk;
	struct ep_udp_live rec;
	struct sock *sk;
	__u16 family;

	if (!udp)
		return 0;
	sk = &udp->inet.sk;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	fill_id(&rec.id, sk, EP_REC_UDP);
	rec.drops = read_drops(sk);
	rec.ino = sk->sk_socket ?
			  bpf_core_cast(sk->sk_socket, struct socket_alloc)->vfs_inode.i_ino :
			  0;
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}
