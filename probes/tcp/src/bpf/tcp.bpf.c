// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcpprobe: per-connection TCP metrics without kprobes and without per-connection BPF state.
 *
 * - tp_btf/inet_sock_set_state: only transitions to SYN_SENT, LISTEN, ESTABLISHED and CLOSE
 *   run any code (the others return on the arguments alone); each sends one small ring-buffer
 *   record. CLOSE carries the connection's final counters.
 * - iter/tcp, run by user space once per period, writes one record per live socket with its
 *   cumulative counters and window state, read straight from struct tcp_sock: nothing runs per
 *   segment for bytes, segments, RTT or retransmits.
 * - tp_btf/tcp_send_reset and tcp_receive_reset report resets; tp_btf/tcp_probe (per received
 *   segment, optional) reports zero windows with a few loads and no helper call otherwise.
 * - Optional abnormal-event hooks, one ring record per event like the resets: tp_btf/kfree_skb
 *   (drops by reason: backlog, filter, receive memory), sock_exceed_buf_limit (memory limits),
 *   inet_sk_error_report (errors, timeouts) and sock_send_length (-EAGAIN: send buffer full).
 *   The iterator also reads tcp_rate's and tcp_sockbuf's fields and sk_drops.
 *
 * Socket-local storage was measured first and rejected: creating it costs ~1.8 us per
 * connection inside the program, plus its clone and free, which alone exceeds the overhead
 * budget on a connect/close loop.
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

/* 2 MiB: ~25k records; user space drains every 100 ms, or at once when 256 KiB are queued. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024);
} events SEC(".maps");

/* Not used at run time: they make the skeleton generate Rust copies of the record types and
 * of enum tcpp_kind (src/decode.rs takes the record kinds from it). */
struct tcpp_ev_owner tcpp_ev_owner_type = {};
struct tcpp_ev_estab tcpp_ev_estab_type = {};
struct tcpp_ev_close tcpp_ev_close_type = {};
struct tcpp_ev_mark tcpp_ev_mark_type = {};
struct tcpp_live tcpp_live_type = {};
enum tcpp_kind tcpp_kind_type = 0;
enum tcpp_drop tcpp_drop_type = 0;

/*
 * Local port. Not skc_num: the state-change tracepoint fires after inet_put_port() cleared it
 * on the way to CLOSE; inet_sport stays until the socket is reused.
 */
static __always_inline __u16 local_port(const struct sock *sk)
{
	return bpf_ntohs(bpf_core_cast(sk, struct inet_sock)->inet_sport);
}

static __always_inline void fill_id(struct tcpp_sock_id *id, struct sock *sk, __u8 kind,
				    __u8 state)
{
	__u16 family = sk->__sk_common.skc_family;

	id->cookie = bpf_get_socket_cookie(sk);
	id->family = family;
	id->lport = local_port(sk);
	id->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	id->kind = kind;
	id->state = state;
	if (family == AF_INET) {
		__u32 l = sk->__sk_common.skc_rcv_saddr;
		__u32 r = sk->__sk_common.skc_daddr;

		__builtin_memset(id->laddr, 0, sizeof(id->laddr));
		__builtin_memset(id->raddr, 0, sizeof(id->raddr));
		__builtin_memcpy(id->laddr, &l, 4);
		__builtin_memcpy(id->raddr, &r, 4);
	} else {
		struct in6_addr l = sk->__sk_common.skc_v6_rcv_saddr;
		struct in6_addr r = sk->__sk_common.skc_v6_daddr;

		__builtin_memcpy(id->laddr, &l, 16);
		__builtin_memcpy(id->raddr, &r, 16);
	}
}

/*
 * Jiffies the connection spent busy / limited by the receive window / limited by the send
 * buffer: chrono_stat[] plus the running chrono, as tcp_compute_chrono() does for
 * tcp_get_info() (TCP_CHRONO_BUSY = 1 .. TCP_CHRONO_SNDBUF_LIMITED = 3).
 */
static __always_inline void fill_chrono(struct tcpp_counters *c, struct tcp_sock *tp)
{
	__u32 now = (__u32)bpf_jiffies64();
	__u8 type = tp->chrono_type & 3;

	c->chrono[0] = tp->chrono_stat[0];
	c->chrono[1] = tp->chrono_stat[1];
	c->chrono[2] = tp->chrono_stat[2];
	if (type >= 1 && type <= 3)
		c->chrono[type - 1] += now - tp->chrono_start;
}

static __always_inline void fill_counters(struct tcpp_counters *c, struct sock *sk,
					  struct tcp_sock *tp)
{
	__u64 rx = tp->bytes_received;
	__u64 sent = tp->bytes_sent, retrans = tp->bytes_retrans;

	/* bytes_received counts the FIN's sequence number; SOCK_DONE is set when it arrives. */
	if ((sk->__sk_common.skc_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) &&
	    rx)
		rx--;
	c->rx_bytes = rx;
	c->tx_bytes = sent >= retrans ? sent - retrans : 0;
	c->segs_in = tp->segs_in;
	c->segs_out = tp->segs_out;
	c->retrans = tp->total_retrans;
	c->srtt_us = tp->srtt_us >> 3;
	c->rcv_rtt_us = tp->rcv_rtt_est.rtt_us >> 3;
	c->sk_drops = sk->sk_drops.counter;
	fill_chrono(c, tp);
}

static __always_inline void send_owner(struct sock *sk, __u8 kind, __u8 state)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct tcpp_ev_owner *e = gg_rb_reserve(&events, sizeof(*e));

	if (!e)
		return;
	fill_id(&e->id, sk, kind, state);
	e->ts_ns = bpf_ktime_get_ns();
	e->tgid = bpf_get_current_pid_tgid() >> 32;
	e->pad = 0;
	/* The process name (group leader), as /proc/<tgid>/comm shows it, not the thread's. */
	__builtin_memcpy(e->comm, task->group_leader->comm, TCP_COMM_LEN);
	gg_rb_submit(&events, e);
}

static __always_inline void send_mark(struct sock *sk, __u8 kind, __u32 aux)
{
	struct tcpp_ev_mark *e = gg_rb_reserve(&events, sizeof(*e));

	if (!e)
		return;
	fill_id(&e->id, sk, kind, sk->__sk_common.skc_state);
	e->aux = aux;
	e->pad = 0;
	gg_rb_submit(&events, e);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state, struct sock *sk, int oldstate, int newstate)
{
	struct tcp_sock *tp;
	__u16 family;

	/* Decided on the arguments alone, so the transitions in between cost next to nothing. */
	if (newstate != BPF_TCP_SYN_SENT && newstate != BPF_TCP_ESTABLISHED &&
	    newstate != BPF_TCP_CLOSE && newstate != BPF_TCP_LISTEN)
		return 0;
	/* NULL unless a full TCP socket. */
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;

	if (newstate == BPF_TCP_SYN_SENT) {
		/* connect(): process context, so current is the owner. */
		send_owner(sk, TCPP_EV_CONNECT, oldstate);
	} else if (newstate == BPF_TCP_LISTEN) {
		send_owner(sk, TCPP_EV_LISTEN, oldstate);
	} else if (newstate == BPF_TCP_ESTABLISHED) {
		struct tcpp_ev_estab *e = gg_rb_reserve(&events, sizeof(*e));

		if (!e)
			return 0;
		fill_id(&e->id, sk, TCPP_EV_ESTABLISHED, oldstate);
		e->ts_ns = bpf_ktime_get_ns();
		/* An accepted socket exists only once the handshake's last ACK arrived, so the
		 * kernel's SYN-ACK round trip is the server's view of the handshake. */
		e->srtt_us = tp->srtt_us >> 3;
		e->pad = 0;
		gg_rb_submit(&events, e);
	} else {
		struct tcpp_ev_close *e = gg_rb_reserve(&events, sizeof(*e));

		if (!e)
			return 0;
		fill_id(&e->id, sk, TCPP_EV_CLOSE, oldstate);
		fill_counters(&e->c, sk, tp);
		gg_rb_submit(&events, e);
	}
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(on_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	struct tcp_sock *tp;

	/* NULL sk (no socket, e.g. a SYN to a closed port) or a TIME_WAIT/request socket:
	 * no connection to account the reset to. */
	if (!sk)
		return 0;
	tp = bpf_skc_to_tcp_sock((struct sock *)sk);
	if (tp)
		send_mark(&tp->inet_conn.icsk_inet.sk, TCPP_EV_RST_SENT, 0);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(on_receive_reset, struct sock *sk)
{
	struct tcp_sock *tp;

	if (!sk)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp)
		send_mark(&tp->inet_conn.icsk_inet.sk, TCPP_EV_RST_RECV, 0);
	return 0;
}

/*
 * Runs for every segment received in ESTABLISHED, so it stays cheap: a few loads through
 * read-only casts, and no helper call unless a window is zero.
 */
SEC("tp_btf/tcp_probe")
int BPF_PROG(on_tcp_probe, struct sock *sk, struct sk_buff *skb)
{
	struct tcp_sock *tp = bpf_core_cast(sk, struct tcp_sock);
	/* tcp_rcv_established() calls the tracepoint with skb->data at the TCP header. */
	struct tcphdr *th = bpf_core_cast(skb->data, struct tcphdr);

	/* Peer's window went from open to zero (RST and SYN segments carry no window). */
	if (!th->window && !th->rst && !th->syn && tp->snd_wnd)
		send_mark(sk, TCPP_EV_ZERO_SND_WND, 0);
	/* Our advertised window is zero; rcv_wup tells episodes apart. */
	if (!tp->rcv_wnd)
		send_mark(sk, TCPP_EV_ZERO_RCV_WND, tp->rcv_wup);
	return 0;
}

/*
 * Runs for every packet the kernel drops (not for normal consumption): three comparisons on
 * the reason decide, the socket lookup and record follow only for the three reasons counted.
 * rx_sk is the receiving socket.
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	struct tcp_sock *tp;
	__u32 which;

	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_SOCKET_BACKLOG))
		which = TCPP_DROP_BACKLOG;
	else if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_SOCKET_FILTER))
		which = TCPP_DROP_FILTER;
	else if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_PROTO_MEM) ||
		 reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_SOCKET_RCVBUFF))
		which = TCPP_DROP_RMEM;
	else
		return 0;
	/* The three reasons are receive-side drops, where the kernel names the receiving socket
	 * (sk_skb_reason_drop); skb->sk is not set there (and the helper refuses its RCU
	 * pointer). */
	if (!rx_sk)
		return 0;
	tp = bpf_skc_to_tcp_sock(rx_sk);
	if (tp)
		send_mark(&tp->inet_conn.icsk_inet.sk, TCPP_EV_DROP, which);
	return 0;
}

/* A memory charge was refused (protocol limit tcp_mem, or the socket's buffer). */
SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(on_exceed_buf, struct sock *sk, struct proto *prot, long allocated, int kind)
{
	struct tcp_sock *tp;

	if (!sk)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp)
		send_mark(&tp->inet_conn.icsk_inet.sk, TCPP_EV_EXCEED_BUF, kind);
	return 0;
}

/* sk_error_report() of an inet socket: sk_err is the error just set (ETIMEDOUT on timeout). */
SEC("tp_btf/inet_sk_error_report")
int BPF_PROG(on_error_report, const struct sock *sk)
{
	struct tcp_sock *tp;

	if (!sk)
		return 0;
	tp = bpf_skc_to_tcp_sock((struct sock *)sk);
	if (tp)
		send_mark(&tp->inet_conn.icsk_inet.sk, TCPP_EV_SK_ERR,
			  tp->inet_conn.icsk_inet.sk.sk_err);
	return 0;
}

#define TCPP_EAGAIN 11

/* Every sendmsg() of every socket: returns on the result unless it is -EAGAIN (a
 * non-blocking send found the send buffer full). */
SEC("tp_btf/sock_send_length")
int BPF_PROG(on_send_length, struct sock *sk, int ret, int flags)
{
	struct tcp_sock *tp;

	if (ret != -TCPP_EAGAIN || !sk)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp)
		send_mark(&tp->inet_conn.icsk_inet.sk, TCPP_EV_SNDBUF_FULL, 0);
	return 0;
}

SEC("iter/tcp")
int dump_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcpp_live rec;
	struct tcp_sock *tp;
	struct sock *sk;
	__u16 family;
	int state;

	if (!skc)
		return 0;
	/* NULL for request and TIME_WAIT sockets: their connection was reported at CLOSE. */
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = &tp->inet_conn.icsk_inet.sk;
	state = sk->__sk_common.skc_state;
	family = sk->__sk_common.skc_family;
	if (state == BPF_TCP_CLOSE || (family != AF_INET && family != AF_INET6))
		return 0;

	fill_id(&rec.id, sk, TCPP_REC_LIVE, state);
	fill_counters(&rec.c, sk, tp);
	rec.ino = sk->sk_socket ?
			  bpf_core_cast(sk->sk_socket, struct socket_alloc)->vfs_inode.i_ino :
			  0;
	rec.snd_cwnd = tp->snd_cwnd;
	rec.snd_wnd = tp->snd_wnd;
	rec.rcv_wnd = tp->rcv_wnd;
	rec.notsent_bytes = tp->write_seq - tp->snd_nxt;
	rec.notack_bytes = tp->snd_nxt - tp->snd_una;
	rec.reordering = tp->reordering;
	/* tcp_rate: the fields tcp_get_info() reports (rto and ato in jiffies; user space
	 * converts them, and computes delivery_rate = rate_delivered * mss / interval). */
	rec.rto_j = tp->inet_conn.icsk_rto;
	rec.ato_j = tp->inet_conn.icsk_ack.ato;
	rec.snd_ssthresh = tp->snd_ssthresh;
	rec.rcv_ssthresh = tp->rcv_ssthresh;
	rec.advmss = tp->advmss;
	rec.rcv_space = tp->rcvq_space.space;
	rec.rate_delivered = tp->rate_delivered;
	rec.rate_interval_us = tp->rate_interval_us;
	rec.mss_cache = tp->mss_cache;
	rec.pacing_rate = sk->sk_pacing_rate;
	rec.max_pacing_rate = sk->sk_max_pacing_rate;
	rec.jiffies = bpf_jiffies64();
	/* tcp_sockbuf */
	rec.err_qlen = sk->sk_error_queue.qlen;
	rec.rcv_qlen = sk->sk_receive_queue.qlen;
	rec.wri_qlen = sk->sk_write_queue.qlen;
	rec.backlog_len = sk->sk_backlog.len;
	rec.omem_alloc = sk->sk_omem_alloc.counter;
	rec.forward_alloc = sk->sk_forward_alloc;
	rec.wmem_queued = sk->sk_wmem_queued;
	rec.rcvbuf = sk->sk_rcvbuf;
	rec.sndbuf = sk->sk_sndbuf;
	/* tcp_abn gauges */
	rec.lost_out = tp->lost_out;
	rec.sacked_out = tp->sacked_out;
	rec.sk_err = sk->sk_err;
	rec.sk_err_soft = sk->sk_err_soft;
	/* No side effects: if the seq buffer overflows, the kernel re-runs this for the socket. */
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}
