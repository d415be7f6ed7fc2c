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

/* Processes included or excluded (cfg.mode), by tgid. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} procs SEC(".maps");

/* Sockets announced with L7_EV_OPEN, by cookie. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct l7_sock);
} socks SEC(".maps");

/* How TCP sockets were established (enum l7_role), by socket address, until announced. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} origin SEC(".maps");

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

/* A data record being built: header + up to 2 * L7_CAP_MAX bytes (verifier bounds). */
struct l7_scratch {
	struct l7_ev_data d;
	__u8 data[2 * L7_CAP_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct l7_scratch);
} scratch SEC(".maps");

/* Make the skeleton generate Rust copies of the record types. */
struct l7_head l7_head_type = {};
struct l7_ev_open l7_ev_open_type = {};
struct l7_ev_data l7_ev_data_type = {};
struct l7_cfg l7_cfg_type = {};
struct l7_ssl_key l7_ssl_key_type = {};
struct l7_ssl_call l7_ssl_call_type = {};
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

/* Submits a record output with bpf_ringbuf_output, waking the consumer only in batches. */
static __always_inline void output(void *rec, __u64 size)
{
	__u64 queued = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	if (bpf_ringbuf_output(&events, rec, size,
			       queued >= GG_RB_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP)) {
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

/* Announces @sk (cookie @cookie) of @tgid unless it was announced already. */
static __always_inline void announce(struct sock *sk, __u64 cookie, __u32 tgid, __u8 l4)
{
	struct l7_sock *known = bpf_map_lookup_elem(&socks, &cookie);
	struct l7_sock s = {};
	struct l7_ev_open o = {};
	__u64 key = (__u64)sk;
	__u8 *role;

	if (known)
		return;
	s.cookie = cookie;
	s.tgid = tgid;
	s.l4 = l4;
	if (gg_map_update(&socks, &cookie, &s, BPF_NOEXIST))
		return;
	o.h.cookie = cookie;
	o.h.ts_ns = bpf_ktime_get_ns();
	o.h.tgid = tgid;
	o.h.kind = L7_EV_OPEN;
	o.l4 = l4;
	role = bpf_map_lookup_elem(&origin, &key);
	if (role) {
		o.role = *role;
		bpf_map_delete_elem(&origin, &key);
	}
	copy_addrs(&o, sk);
	bpf_get_current_comm(o.comm, sizeof(o.comm));
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

/* Copies up to @want bytes from the iovec array @iov (@cnt entries) into @buf. */
static __always_inline __u32 read_iov(__u8 *buf, const struct iovec *iov, __u64 cnt, __u32 want)
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
		if (n > L7_CAP_MAX)
			n = L7_CAP_MAX;
		barrier_var(n);
		n &= L7_CAP_MAX * 2 - 1;
		if (!n)
			continue;
		if (bpf_probe_read_user(&buf[off & (L7_CAP_MAX - 1)], n, v.iov_base))
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

/* One send (@dir L7_SENT) or receive of @len bytes by the current process on @sk. */
static __always_inline int on_io(struct sock *sk, int len, __u8 dir)
{
	struct l7_cfg *c;
	struct l7_scratch *s;
	struct pt_regs *regs;
	struct task_struct *task;
	__u32 zero = 0, tgid, want;
	__u64 cookie, nr, size;
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
	cookie = bpf_get_socket_cookie(sk);
	announce(sk, cookie, tgid, l4);
	if (c->ssl && l4 == IPPROTO_TCP && tls_socket(sk, tgid))
		return 0;

	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	s->d.h.cookie = cookie;
	s->d.h.ts_ns = bpf_ktime_get_ns();
	s->d.h.tgid = tgid;
	s->d.h.kind = L7_EV_DATA;
	s->d.len = len;
	s->d.cap = 0;
	s->d.dir = dir;
	s->d.peer_family = 0;
	s->d.peer_port = 0;
	want = c->cap;
	if (want > L7_CAP_MAX)
		want = L7_CAP_MAX;
	if (want > (__u32)len)
		want = len;

	task = bpf_get_current_task_btf();
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	nr = regs->orig_ax;
	switch (nr) {
	case NR_read:
	case NR_write:
	case NR_sendto:
	case NR_recvfrom: {
		const void *buf = (const void *)regs->si;

		s->d.how = L7_HOW_BUF;
		barrier_var(want);
		want &= L7_CAP_MAX * 2 - 1;
		if (want && !bpf_probe_read_user(s->data, want, buf))
			s->d.cap = want;
		/* A send's destination; a receive's source is copied out only after this
		 * tracepoint (move_addr_to_user), so it is not read. */
		if (l4 == IPPROTO_UDP && nr == NR_sendto)
			read_peer(&s->d, (const void *)regs->r8);
		break;
	}
	case NR_readv:
	case NR_writev:
		s->d.how = L7_HOW_IOV;
		s->d.cap = read_iov(s->data, (const struct iovec *)regs->si, regs->dx, want);
		break;
	case NR_sendmsg:
	case NR_recvmsg: {
		struct user_msghdr m;

		s->d.how = L7_HOW_IOV;
		if (bpf_probe_read_user(&m, sizeof(m), (const void *)regs->si))
			break;
		s->d.cap = read_iov(s->data, m.msg_iov, m.msg_iovlen, want);
		if (l4 == IPPROTO_UDP && nr == NR_sendmsg)
			read_peer(&s->d, m.msg_name);
		break;
	}
	case NR_sendfile:
	case NR_splice:
		s->d.how = L7_HOW_KERNEL;
		break;
	default:
		s->d.how = L7_HOW_UNKNOWN;
		break;
	}
	size = sizeof(s->d) + (s->d.cap & (2 * L7_CAP_MAX - 1));
	if (size > sizeof(*s))
		return 0;
	output(s, size);
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

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (newstate == BPF_TCP_ESTABLISHED) {
		__u8 role = oldstate == BPF_TCP_SYN_SENT ? L7_ROLE_CLIENT :
			    oldstate == BPF_TCP_SYN_RECV ? L7_ROLE_SERVER : L7_ROLE_UNKNOWN;

		if (role != L7_ROLE_UNKNOWN)
			gg_map_update(&origin, &key, &role, BPF_ANY);
	} else if (newstate == BPF_TCP_CLOSE) {
		struct l7_head h = {};
		__u64 cookie;

		bpf_map_delete_elem(&origin, &key);
		bpf_map_delete_elem(&tls_sk, &key);
		cookie = bpf_get_socket_cookie(sk);
		if (bpf_map_delete_elem(&socks, &cookie))
			return 0;
		h.cookie = cookie;
		h.ts_ns = bpf_ktime_get_ns();
		h.kind = L7_EV_CLOSE;
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
	__u32 tid = (__u32)id, zero = 0, want;
	struct l7_ssl_call call, *p = bpf_map_lookup_elem(&ssl_calls, &tid);
	struct l7_ssl_key key = {};
	struct l7_scratch *s;
	struct l7_cfg *c;
	__u64 *sk, cookie, n = 0, size;

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
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	s->d.h.cookie = cookie;
	s->d.h.ts_ns = bpf_ktime_get_ns();
	s->d.h.tgid = id >> 32;
	s->d.h.kind = L7_EV_DATA;
	s->d.len = n;
	s->d.cap = 0;
	s->d.dir = call.dir;
	s->d.how = L7_HOW_TLS;
	s->d.peer_family = 0;
	s->d.peer_port = 0;
	want = c->cap;
	if (want > L7_CAP_MAX)
		want = L7_CAP_MAX;
	if (want > n)
		want = n;
	barrier_var(want);
	want &= L7_CAP_MAX * 2 - 1;
	if (want && !bpf_probe_read_user(s->data, want, (void *)call.buf))
		s->d.cap = want;
	size = sizeof(s->d) + (s->d.cap & (2 * L7_CAP_MAX - 1));
	if (size > sizeof(*s))
		return 0;
	output(s, size);
	return 0;
}
