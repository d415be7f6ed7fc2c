// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * l7probe: the bytes traced processes send and receive on TCP and UDP sockets, for the
 * protocol parsers in user space. No kprobes, no fentry, no syscall tracepoints:
 *
 * - tp_btf/sock_send_length and sock_recv_length fire at the end of every socket send and
 *   receive (sock_sendmsg_nosec / sock_recvmsg_nosec), in the caller's context, with the
 *   socket and the byte count. The bytes are read from the caller's own buffer, found in the
 *   system call's arguments (the task's saved user registers, bpf_task_pt_regs): the buffer
 *   of read/write/sendto/recvfrom, the iovec array of readv/writev/sendmsg/recvmsg. After a
 *   receive the buffer holds what was received, before a send's return what was sent: both
 *   are in stream order for one socket. Other calls (sendfile, splice, io_uring, sendmmsg)
 *   are reported with their length only.
 * - tp_btf/inet_sock_set_state: SYN_SENT/SYN_RECV -> ESTABLISHED tells clients from
 *   accepted (server) sockets; -> CLOSE ends a traced socket.
 * - TLS (support_ssl): uprobes on the libssl of traced processes. SSL_set_fd names the socket
 *   of an SSL object (or, without it, the socket the SSL object reads or writes inside an
 *   SSL_read/SSL_write call); SSL_read/SSL_write (and the _ex variants) give the plain text
 *   at their return, and the socket's own (encrypted) bytes are not reported.
 *
 * The process filter (`cfg.mode`, `procs`) runs first, so an untraced process pays the
 * tracepoint's dispatch and one map lookup per call.
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
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define L7_IOV_MAX 4
/* Bytes reserved per CPU between two early wake-ups of the consumer. */
#define L7_WAKE_BYTES (128 * 1024)
#define MSG_PEEK 2

/* x86_64 system call numbers of the calls whose buffers are read. */
#define NR_read 0
#define NR_write 1
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile 40
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_splice 275
#define NR_recvmmsg 299
#define NR_sendmmsg 307

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct l7_cfg);
} cfg SEC(".maps");

/* Data records of this CPU not yet sent (intf.h: L7_EV_BATCH). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct l7_batch);
} batch SEC(".maps");

/* Bytes reserved on this CPU since it last woke the consumer. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} since_wake SEC(".maps");

/* Processes included or excluded (cfg.mode), by tgid. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} procs SEC(".maps");

/* Per socket: its cookie, the configuration generation it was announced in, its role. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct l7_sock);
} sk_state SEC(".maps");

/* TLS sessions: the socket (its address) of an SSL object. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct l7_ssl_key);
	__type(value, __u64);
} ssl_socks SEC(".maps");

/* Sockets carrying TLS, by address: their bytes are reported by the SSL hooks. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} tls_sk SEC(".maps");

/* SSL_read/SSL_write calls in progress, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct l7_ssl_call);
} ssl_calls SEC(".maps");

/* Make the skeleton generate Rust copies of the record types. */
struct l7_head l7_head_type = {};
struct l7_ev_open l7_ev_open_type = {};
struct l7_ev_data l7_ev_data_type = {};
struct l7_cfg l7_cfg_type = {};
struct l7_ssl_key l7_ssl_key_type = {};
struct l7_ssl_call l7_ssl_call_type = {};
struct l7_batch l7_batch_type = {};
enum l7_kind l7_kind_type = 0;
enum l7_dir l7_dir_type = 0;
enum l7_how l7_how_type = 0;
enum l7_role l7_role_type = 0;
enum l7_mode l7_mode_type = 0;

static __always_inline struct l7_cfg *l7_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cfg, &zero);
}

/* Whether process @tgid is traced. */
static __always_inline bool traced(struct l7_cfg *c, __u32 tgid)
{
	switch (c->mode) {
	case L7_MODE_ALL:
		return true;
	case L7_MODE_INCLUDE:
		return bpf_map_lookup_elem(&procs, &tgid) != NULL;
	case L7_MODE_EXCLUDE:
		return bpf_map_lookup_elem(&procs, &tgid) == NULL;
	default:
		return false;
	}
}

/* Outputs a (rare: open, close) record; the next data record's wake-up covers it. */
static __always_inline void output(void *rec, __u64 size)
{
	if (bpf_ringbuf_output(&events, rec, size, BPF_RB_NO_WAKEUP)) {
		gg_count(GG_STAT_LOST);
		return;
	}
	gg_count(GG_STAT_EVENTS);
}

static __always_inline void copy_addrs(struct l7_ev_open *o, struct sock *sk)
{
	struct sock_common *c = &sk->__sk_common;

	o->family = c->skc_family;
	o->lport = c->skc_num;
	o->rport = bpf_ntohs(c->skc_dport);
	if (o->family == AF_INET) {
		__builtin_memcpy(o->laddr, &c->skc_rcv_saddr, 4);
		__builtin_memcpy(o->raddr, &c->skc_daddr, 4);
	} else {
		struct in6_addr l = c->skc_v6_rcv_saddr;
		struct in6_addr r = c->skc_v6_daddr;

		__builtin_memcpy(o->laddr, &l, 16);
		__builtin_memcpy(o->raddr, &r, 16);
	}
}

/* Announces @sk (state @st) of @tgid, once per configuration generation @gen. */
static __always_inline void announce(struct sock *sk, struct l7_sock *st, __u32 tgid, __u8 l4,
				     __u32 gen)
{
	struct l7_ev_open o = {};

	st->gen = gen;
	o.h.cookie = st->cookie;
	o.h.ts_ns = bpf_ktime_get_ns();
	o.h.tgid = tgid;
	o.h.kind = L7_EV_OPEN;
	o.l4 = l4;
	o.role = st->role;
	copy_addrs(&o, sk);
	/* The process's name (its main thread's), not the calling thread's. */
	bpf_probe_read_kernel_str(o.comm, sizeof(o.comm),
				  bpf_get_current_task_btf()->group_leader->comm);
	output(&o, sizeof(o));
}

/* Reads the sockaddr at user address @addr into the record's peer fields. */
static __always_inline void read_peer(struct l7_ev_data *d, const void *addr)
{
	struct sockaddr_in6 sa = {};

	if (!addr || bpf_probe_read_user(&sa, sizeof(sa), addr))
		return;
	if (sa.sin6_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;

		d->peer_family = AF_INET;
		d->peer_port = bpf_ntohs(s4->sin_port);
		__builtin_memcpy(d->peer_addr, &s4->sin_addr, 4);
	} else if (sa.sin6_family == AF_INET6) {
		d->peer_family = AF_INET6;
		d->peer_port = bpf_ntohs(sa.sin6_port);
		__builtin_memcpy(d->peer_addr, &sa.sin6_addr, 16);
	}
}

/* Copies up to @want (at most @n_max, a power of two) bytes from the iovec array @iov (@cnt
 * entries) into @buf, which holds 2 * @n_max bytes (the verifier's bound for the offsets). */
static __always_inline __u32 read_iov(__u8 *buf, const struct iovec *iov, __u64 cnt, __u32 want,
				      const __u32 n_max)
{
	__u32 off = 0;
	int i;

	for (i = 0; i < L7_IOV_MAX; i++) {
		struct iovec v;
		__u64 n;

		if (i >= cnt || off >= want)
			break;
		if (bpf_probe_read_user(&v, sizeof(v), &iov[i]))
			break;
		n = v.iov_len;
		if (n > want - off)
			n = want - off;
		if (n > n_max)
			n = n_max;
		barrier_var(n);
		n &= n_max * 2 - 1;
		if (!n)
			continue;
		if (bpf_probe_read_user(&buf[off & (n_max - 1)], n, v.iov_base))
			break;
		off += n;
	}
	return off;
}

/* Whether @sk carries TLS whose plain text the SSL hooks report: known from SSL_set_fd, or
 * learnt now because the thread is inside an SSL_read/SSL_write call. */
static __always_inline bool tls_socket(struct sock *sk, __u32 tgid)
{
	__u64 addr = (__u64)sk;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct l7_ssl_call *call;
	struct l7_ssl_key key = {};

	if (bpf_map_lookup_elem(&tls_sk, &addr))
		return true;
	call = bpf_map_lookup_elem(&ssl_calls, &tid);
	if (!call)
		return false;
	key.ssl = call->ssl;
	key.tgid = tgid;
	gg_map_update(&ssl_socks, &key, &addr, BPF_ANY);
	gg_map_update(&tls_sk, &addr, &key.ssl, BPF_ANY);
	return true;
}

/* Which message of a sendmmsg/recvmmsg call a socket call is: the kernel sends (receives)
 * the vector's messages in order, one socket call each; a thread's calls are counted here,
 * starting again at a new vector or after @vlen. */
struct l7_mmsg_pos {
	__u64 vec;
	__u32 next;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct l7_mmsg_pos);
} mmsg_pos SEC(".maps");

/* The entry of the vector @vec (@vlen messages) this socket call moves, or NULL. */
static __always_inline const void *mmsg_entry(const struct mmsghdr *vec, __u64 vlen)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct l7_mmsg_pos *p = bpf_map_lookup_elem(&mmsg_pos, &tid);
	struct l7_mmsg_pos fresh = {};
	__u32 i;

	if (!vlen || vlen > 1024)
		return NULL;
	if (!p || p->vec != (__u64)vec || p->next >= vlen) {
		fresh.vec = (__u64)vec;
		fresh.next = 1;
		gg_map_update(&mmsg_pos, &tid, &fresh, BPF_ANY);
		return vec;
	}
	i = p->next++;
	return &vec[i & 1023];
}

/* Where a call's bytes are in the caller's memory. */
struct l7_src {
	__u64 buf;    /* L7_HOW_BUF, L7_HOW_TLS: the buffer */
	__u64 iov;    /* L7_HOW_IOV: the iovec array */
	__u64 iovcnt;
	__u8 how;     /* enum l7_how */
};

/* A data record of N captured bytes at most, reserved in the ring buffer: `l7_rec_N` for a
 * single buffer, `l7_recv_N` (twice the room: the verifier's bound for the offsets) for an
 * iovec array. */
#define L7_REC(N)                                                                          \
	struct l7_rec_##N {                                                                \
		struct l7_ev_data d;                                                       \
		__u8 data[N];                                                              \
	};                                                                                 \
	struct l7_recv_##N {                                                               \
		struct l7_ev_data d;                                                       \
		__u8 data[2 * N];                                                          \
	}
L7_REC(64);
L7_REC(256);
L7_REC(1024);
L7_REC(2048);
L7_REC(4096);
L7_REC(8192);

/* Fills @data (@n bytes, a power of two) with @want (< @n) bytes of @src's buffer; returns
 * how many. The mask is the verifier's bound (barrier_var keeps the compiler from dropping
 * it). */
static __always_inline __u32 capture_buf(__u8 *data, const struct l7_src *src, __u32 want,
					 const __u32 n)
{
	barrier_var(want);
	want &= n - 1;
	if (want && !bpf_probe_read_user(data, want, (const void *)src->buf))
		return want;
	return 0;
}

/* Submits a reserved record of @size bytes. The consumer drains every 100 ms; it is woken
 * early once this CPU has reserved L7_WAKE_BYTES since the last wake-up. (Asking the ring
 * how much is queued, as gg_rb_submit does, reads the consumer's position: a cache line the
 * consumer writes at every record, measured at 200-500 ns per call here.) */
static __always_inline __u64 wake_flags(__u64 size)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&since_wake, &zero);

	if (n && (*n += size) >= L7_WAKE_BYTES) {
		*n = 0;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void submit(void *rec, __u64 size)
{
	bpf_ringbuf_submit(rec, wake_flags(size));
	gg_count(GG_STAT_EVENTS);
}

/* Sends this CPU's batch @b (its caller holds b->busy, or runs where no other program of
 * this CPU can): one ring record, its entries counted as events, or as lost. */
static __always_inline void flush(struct l7_batch *b)
{
	__u32 len = b->len;
	__u64 size;

	if (!len)
		return;
	if (len > L7_BATCH_BYTES)
		len = L7_BATCH_BYTES;
	barrier_var(len);
	size = sizeof(struct l7_head) + (len & (2 * L7_BATCH_BYTES - 1));
	b->head.kind = L7_EV_BATCH;
	b->head.ts_ns = 0;
	b->head.cookie = 0;
	b->head.tgid = 0;
	if (bpf_ringbuf_output(&events, &b->head, size, wake_flags(size)))
		gg_count_n(GG_STAT_LOST, b->count);
	else
		gg_count_n(GG_STAT_EVENTS, b->count);
	b->len = 0;
	b->count = 0;
}

/* Appends the data record @h (its time taken now) with up to @want (<= L7_BATCH_CAP) bytes
 * from @src to this CPU's batch @b, which the caller holds (b->busy). */
static __always_inline void append(struct l7_batch *b, struct l7_ev_data *h,
				   const struct l7_src *src, __u32 want)
{
	struct l7_ev_data *e;
	__u32 off, cap = 0;

	if (b->len > L7_BATCH_BYTES - sizeof(*e) - L7_BATCH_CAP)
		flush(b);
	off = b->len;
	if (off > L7_BATCH_BYTES)
		return;
	barrier_var(off);
	off &= 2 * L7_BATCH_BYTES - 1;
	if (off > L7_BATCH_BYTES)
		return;
	h->h.ts_ns = bpf_ktime_get_ns();
	e = (struct l7_ev_data *)&b->data[off];
	*e = *h;
	if (want) {
		__u8 *buf = &b->data[off + sizeof(*e)];

		if (src->how == L7_HOW_IOV)
			cap = read_iov(buf, (const struct iovec *)src->iov, src->iovcnt, want,
				       L7_BATCH_CAP);
		else
			cap = capture_buf(buf, src, want, 2 * L7_BATCH_CAP);
	}
	e->cap = cap;
	b->len = off + ((sizeof(*e) + cap + 7) & ~7U);
	b->count++;
}

#define L7_EMIT(TYPE, N, CAPTURE)                                                          \
	do {                                                                               \
		struct TYPE##_##N *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);        \
		if (!r) {                                                                  \
			gg_count(GG_STAT_LOST);                                            \
			return;                                                            \
		}                                                                          \
		r->d = *h;                                                                 \
		r->d.cap = CAPTURE;                                                        \
		submit(r, sizeof(*r));                                                     \
	} while (0)
#define L7_EMIT_BUF(N) L7_EMIT(l7_rec, N, capture_buf(r->data, src, want, N))
#define L7_EMIT_IOV(N)                                                                     \
	L7_EMIT(l7_recv, N,                                                                \
		read_iov(r->data, (const struct iovec *)src->iov, src->iovcnt,             \
			 want > N ? N : want, N))

/* Sends the data record @h with up to @want bytes from @src, in the smallest record class
 * that holds them. */
static __always_inline void emit(const struct l7_ev_data *h, const struct l7_src *src,
				 __u32 want)
{
	if (src->how == L7_HOW_IOV) {
		if (want <= 64)
			L7_EMIT_IOV(64);
		else if (want <= 256)
			L7_EMIT_IOV(256);
		else if (want <= 1024)
			L7_EMIT_IOV(1024);
		else
			L7_EMIT_IOV(4096);
		return;
	}
	if (src->how != L7_HOW_BUF && src->how != L7_HOW_TLS)
		want = 0;
	if (want == 0) {
		struct l7_ev_data *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

		if (!r) {
			gg_count(GG_STAT_LOST);
			return;
		}
		*r = *h;
		r->cap = 0;
		submit(r, sizeof(*r));
	} else if (want < 64) {
		L7_EMIT_BUF(64);
	} else if (want < 256) {
		L7_EMIT_BUF(256);
	} else if (want < 1024) {
		L7_EMIT_BUF(1024);
	} else if (want < 2048) {
		L7_EMIT_BUF(2048);
	} else if (want < 4096) {
		L7_EMIT_BUF(4096);
	} else {
		L7_EMIT_BUF(8192);
	}
}

/* The bytes to capture per call. */
static __always_inline __u32 cap_of(const struct l7_cfg *c, __u64 len)
{
	__u32 want = c->cap;

	if (want > L7_CAP_MAX)
		want = L7_CAP_MAX;
	if (want > len)
		want = len;
	return want;
}

/* One send (@dir L7_SENT) or receive of @len bytes by the current process on @sk. */
static __always_inline int on_io(struct sock *sk, int len, __u8 dir)
{
	struct l7_ev_data h = {};
	struct l7_src src = {};
	struct l7_batch *b;
	struct l7_sock *st;
	struct l7_cfg *c;
	struct pt_regs *regs;
	__u32 tgid, want, zero = 0;
	__u64 nr;
	__u16 type, family;
	__u8 l4;

	if (len <= 0)
		return 0;
	c = l7_config();
	if (!c)
		return 0;
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (!traced(c, tgid))
		return 0;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	type = sk->sk_type;
	l4 = sk->sk_protocol;
	if (!((type == SOCK_STREAM && l4 == IPPROTO_TCP) || (type == SOCK_DGRAM && l4 == IPPROTO_UDP)))
		return 0;
	if (c->port && sk->__sk_common.skc_num != c->port &&
	    bpf_ntohs(sk->__sk_common.skc_dport) != c->port)
		return 0;
	st = bpf_sk_storage_get(&sk_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		gg_count(GG_STAT_MAP_FULL);
		return 0;
	}
	if (!st->cookie)
		st->cookie = bpf_get_socket_cookie(sk);
	if (st->gen != c->gen)
		announce(sk, st, tgid, l4, c->gen);
	if (c->ssl && l4 == IPPROTO_TCP && tls_socket(sk, tgid))
		return 0;

	h.h.cookie = st->cookie;
	h.h.tgid = tgid;
	h.h.kind = L7_EV_DATA;
	h.len = len;
	h.dir = dir;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	nr = regs->orig_ax;
	switch (nr) {
	case NR_read:
	case NR_write:
	case NR_sendto:
	case NR_recvfrom:
		src.how = L7_HOW_BUF;
		src.buf = regs->si;
		/* A send's destination; a receive's source is copied out only after this
		 * tracepoint (move_addr_to_user), so it is not read. */
		if (l4 == IPPROTO_UDP && nr == NR_sendto)
			read_peer(&h, (const void *)regs->r8);
		break;
	case NR_readv:
	case NR_writev:
		src.how = L7_HOW_IOV;
		src.iov = regs->si;
		src.iovcnt = regs->dx;
		break;
	case NR_sendmsg:
	case NR_recvmsg:
	case NR_sendmmsg:
	case NR_recvmmsg: {
		struct user_msghdr m;
		const void *hdr = (const void *)regs->si;

		src.how = L7_HOW_IOV;
		if (nr == NR_sendmmsg || nr == NR_recvmmsg)
			hdr = mmsg_entry((const struct mmsghdr *)regs->si, regs->dx);
		if (!hdr || bpf_probe_read_user(&m, sizeof(m), hdr))
			break;
		src.iov = (__u64)m.msg_iov;
		src.iovcnt = m.msg_iovlen;
		if (l4 == IPPROTO_UDP && (nr == NR_sendmsg || nr == NR_sendmmsg))
			read_peer(&h, m.msg_name);
		break;
	}
	case NR_sendfile:
	case NR_splice:
		src.how = L7_HOW_KERNEL;
		break;
	default:
		src.how = L7_HOW_UNKNOWN;
		break;
	}
	h.how = src.how;
	/* Bytes are read from user memory only (sendfile, splice, unknown calls: none). */
	want = src.how == L7_HOW_BUF || src.how == L7_HOW_IOV ? cap_of(c, len) : 0;
	b = c->batch && want <= L7_BATCH_CAP ? bpf_map_lookup_elem(&batch, &zero) : NULL;
	if (b && !b->busy) {
		/* Held while the time is taken and the entry written: a flush of this CPU
		 * either sends the entry or waits for it (user space orders by time). */
		b->busy = 1;
		barrier();
		append(b, &h, &src, want);
		barrier();
		b->busy = 0;
		return 0;
	}
	h.h.ts_ns = bpf_ktime_get_ns();
	emit(&h, &src, want);
	return 0;
}

/* Sends this CPU's batch: run by user space on every CPU (BPF_PROG_TEST_RUN with
 * BPF_F_TEST_RUN_ON_CPU), before it orders what it received. Returns 1 when a program of
 * this CPU holds the batch (user space tries again), else 0. */
SEC("raw_tp")
int flush_batch(void *ctx)
{
	__u32 zero = 0;
	struct l7_batch *b = bpf_map_lookup_elem(&batch, &zero);

	if (!b)
		return 0;
	if (b->busy)
		return 1;
	flush(b);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(on_send, struct sock *sk, int ret, int flags)
{
	return on_io(sk, ret, L7_SENT);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(on_recv, struct sock *sk, int ret, int flags)
{
	/* Peeked bytes stay queued: they are reported when they are read. */
	if (flags & MSG_PEEK)
		return 0;
	return on_io(sk, ret, L7_RECEIVED);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state, struct sock *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;
	struct l7_sock *st;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (newstate == BPF_TCP_ESTABLISHED) {
		__u8 role = oldstate == BPF_TCP_SYN_SENT ? L7_ROLE_CLIENT :
			    oldstate == BPF_TCP_SYN_RECV ? L7_ROLE_SERVER : L7_ROLE_UNKNOWN;

		if (role == L7_ROLE_UNKNOWN)
			return 0;
		st = bpf_sk_storage_get(&sk_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (st)
			st->role = role;
	} else if (newstate == BPF_TCP_CLOSE) {
		struct l7_head h = {};

		bpf_map_delete_elem(&tls_sk, &key);
		st = bpf_sk_storage_get(&sk_state, sk, 0, 0);
		if (!st || !st->gen)
			return 0;
		h.cookie = st->cookie;
		h.ts_ns = bpf_ktime_get_ns();
		h.kind = L7_EV_CLOSE;
		st->gen = 0;
		output(&h, sizeof(h));
	}
	return 0;
}

/* The socket behind descriptor @fd of the current process, or 0. */
static __always_inline __u64 sock_of_fd(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	unsigned int max = BPF_CORE_READ(task, files, fdt, max_fds);
	struct file *f = NULL;
	struct socket *sock;
	umode_t mode;

	if (fd < 0 || (unsigned int)fd >= max)
		return 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return 0;
	mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & 00170000) != 0140000) /* S_ISSOCK */
		return 0;
	sock = BPF_CORE_READ(f, private_data);
	return (__u64)BPF_CORE_READ(sock, sk);
}

SEC("uprobe")
int BPF_UPROBE(ssl_set_fd, void *ssl, int fd)
{
	struct l7_cfg *c = l7_config();
	struct l7_ssl_key key = {};
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 sk;

	if (!c || !c->ssl || !traced(c, tgid))
		return 0;
	sk = sock_of_fd(fd);
	if (!sk)
		return 0;
	key.ssl = (__u64)ssl;
	key.tgid = tgid;
	gg_map_update(&ssl_socks, &key, &sk, BPF_ANY);
	gg_map_update(&tls_sk, &sk, &key.ssl, BPF_ANY);
	return 0;
}

static __always_inline int ssl_enter(void *ssl, const void *buf, void *len_ptr, __u8 ex, __u8 dir)
{
	struct l7_cfg *c = l7_config();
	struct l7_ssl_call call = {};
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;

	if (!c || !c->ssl || !traced(c, id >> 32))
		return 0;
	call.ssl = (__u64)ssl;
	call.buf = (__u64)buf;
	call.len_ptr = (__u64)len_ptr;
	call.ex = ex;
	call.dir = dir;
	gg_map_update(&ssl_calls, &tid, &call, BPF_ANY);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(ssl_write_enter, void *ssl, const void *buf, int num)
{
	return ssl_enter(ssl, buf, NULL, 0, L7_SENT);
}

SEC("uprobe")
int BPF_UPROBE(ssl_read_enter, void *ssl, void *buf, int num)
{
	return ssl_enter(ssl, buf, NULL, 0, L7_RECEIVED);
}

SEC("uprobe")
int BPF_UPROBE(ssl_write_ex_enter, void *ssl, const void *buf, __u64 num, __u64 *written)
{
	return ssl_enter(ssl, buf, written, 1, L7_SENT);
}

SEC("uprobe")
int BPF_UPROBE(ssl_read_ex_enter, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	return ssl_enter(ssl, buf, readbytes, 1, L7_RECEIVED);
}

/* Return of any of the four: the plain text moved, as a data record of the socket. */
SEC("uretprobe")
int BPF_URETPROBE(ssl_ret, int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct l7_ssl_call call, *p = bpf_map_lookup_elem(&ssl_calls, &tid);
	struct l7_ssl_key key = {};
	struct l7_ev_data h = {};
	struct l7_src src = {};
	struct l7_cfg *c;
	__u64 *sk, cookie, n = 0;

	if (!p)
		return 0;
	call = *p;
	bpf_map_delete_elem(&ssl_calls, &tid);
	if (call.ex) {
		if (ret != 1 || bpf_probe_read_user(&n, sizeof(n), (void *)call.len_ptr))
			return 0;
	} else if (ret > 0) {
		n = ret;
	}
	if (!n || n > 0x7fffffff)
		return 0;
	key.ssl = call.ssl;
	key.tgid = id >> 32;
	sk = bpf_map_lookup_elem(&ssl_socks, &key);
	c = l7_config();
	if (!sk || !c)
		return 0;
	cookie = BPF_CORE_READ((struct sock *)*sk, __sk_common.skc_cookie.counter);
	if (!cookie)
		return 0;
	h.h.cookie = cookie;
	h.h.ts_ns = bpf_ktime_get_ns();
	h.h.tgid = id >> 32;
	h.h.kind = L7_EV_DATA;
	h.len = n;
	h.dir = call.dir;
	h.how = L7_HOW_TLS;
	src.how = L7_HOW_TLS;
	src.buf = call.buf;
	emit(&h, &src, cap_of(c, n));
	return 0;
}
