/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * intf.h - records shared by l7.bpf.c and the l7probe user space (src/decode.rs decodes them;
 * the skeleton generates the Rust copies, so both sides agree).
 *
 * One ring buffer carries three kinds of records, all starting with struct l7_head:
 * - L7_EV_OPEN (struct l7_ev_open): a socket of a traced process moved its first bytes; its
 *   addresses, owner and role. Sent once per socket and generation (`sk_state` remembers).
 * - L7_EV_DATA (struct l7_ev_data + `cap` captured bytes): one send or receive call of a
 *   traced process on an IPv4/IPv6 TCP or UDP socket: `len` bytes moved, the first `cap` of
 *   them copied from the caller's buffer (0 when the call's buffer is not user memory, e.g.
 *   sendfile, or the system call is not one whose buffer the program can find).
 * - L7_EV_CLOSE (struct l7_head): a TCP socket announced by L7_EV_OPEN closed.
 * - L7_EV_BATCH (struct l7_head, then entries): data records of one CPU, gathered in its
 *   `batch` buffer and sent in one ring record (when the buffer is full, or when user space
 *   runs the `flush` program on that CPU). Each entry is a struct l7_ev_data with its `cap`
 *   bytes, padded to 8 bytes; the record's `ts_ns` is 0 and its length says where the
 *   entries end. Entries are in the CPU's order, not the socket's: user space orders every
 *   data record by `ts_ns` before parsing (a thread may move between CPUs).
 */
#ifndef L7_INTF_H
#define L7_INTF_H

#define L7_COMM_LEN 16
/* Largest capture per call; the scratch buffer is twice this (verifier bounds). */
#define L7_CAP_MAX 4096

enum l7_kind {
	L7_EV_OPEN = 1,
	L7_EV_DATA = 2,
	L7_EV_CLOSE = 3,
	L7_EV_BATCH = 4,
};

enum l7_dir {
	L7_SENT = 1,
	L7_RECEIVED = 2,
};

/* How the bytes of a data record were found (l7_ev_data.how). */
enum l7_how {
	L7_HOW_BUF = 1,     /* read/write/sendto/recvfrom: the buffer argument */
	L7_HOW_IOV = 2,     /* readv/writev/sendmsg/recvmsg: the iovec array */
	L7_HOW_KERNEL = 3,  /* sendfile/splice: the bytes never were in user memory: none */
	L7_HOW_UNKNOWN = 4, /* another system call (io_uring, sendmmsg, ...): none */
	L7_HOW_TLS = 5,     /* SSL_read/SSL_write (uprobes): the plain text of a TLS session */
};

/* Socket role as the kernel saw the connection form (l7_ev_open.role). */
enum l7_role {
	L7_ROLE_UNKNOWN = 0, /* older than the probe, or UDP */
	L7_ROLE_CLIENT = 1,  /* SYN_SENT -> ESTABLISHED: it connected */
	L7_ROLE_SERVER = 2,  /* SYN_RECV -> ESTABLISHED: it was accepted */
};

struct l7_head {
	__u64 cookie;  /* socket cookie: the connection's id */
	__u64 ts_ns;   /* bpf_ktime_get_ns() */
	__u32 tgid;
	__u8 kind;     /* enum l7_kind */
	__u8 pad[3];
};

struct l7_ev_open {
	struct l7_head h;
	__u8 role;     /* enum l7_role */
	__u8 l4;       /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__u16 family;  /* AF_INET (2) or AF_INET6 (10) */
	__u16 lport;   /* host order */
	__u16 rport;   /* host order, 0 for an unconnected UDP socket */
	__u8 laddr[16];
	__u8 raddr[16];
	char comm[L7_COMM_LEN];
};

struct l7_ev_data {
	struct l7_head h;
	__u32 len;      /* bytes the call moved (its return value) */
	__u16 cap;      /* bytes captured after this header */
	__u8 dir;       /* enum l7_dir */
	__u8 how;       /* enum l7_how */
	__u16 peer_family; /* UDP sends: the destination from the call's address argument, else 0 */
	__u16 peer_port;   /* host order */
	__u8 peer_addr[16];
	/* __u8 data[cap] follows */
};

/* Per socket, in the `sk_state` socket storage. */
struct l7_sock {
	__u64 cookie;  /* 0 until the socket first moves bytes of a traced process */
	__u32 gen;     /* l7_cfg.gen it was announced in (0: not announced, or closed) */
	__u8 role;     /* enum l7_role, from its state changes */
	__u8 pad[3];
};

/* Bytes of entries after which a CPU's batch is sent; the buffer has room past it for one
 * more entry (verifier bounds). Captures larger than L7_BATCH_CAP bytes are sent in their
 * own record. */
#define L7_BATCH_BYTES 16384
#define L7_BATCH_CAP 1024
#define L7_BATCH_ROOM 4096

/* A CPU's batch (`batch` per-CPU map): the head and the entries are contiguous, so that the
 * record is one copy. */
struct l7_batch {
	__u32 len;     /* bytes of entries in data */
	__u32 count;   /* entries */
	__u32 busy;    /* a program of this CPU is appending or flushing: others do not */
	__u32 pad;
	struct l7_head head; /* L7_EV_BATCH, written when sent */
	__u8 data[L7_BATCH_BYTES + L7_BATCH_ROOM];
};

/* Which processes are traced (`cfg` map slot 0). */
enum l7_mode {
	L7_MODE_ALL = 0,     /* every process */
	L7_MODE_INCLUDE = 1, /* those in `procs` */
	L7_MODE_EXCLUDE = 2, /* all but those in `procs` */
	L7_MODE_NONE = 3,    /* none (no sub-probe needs data) */
};

struct l7_cfg {
	__u32 mode;    /* enum l7_mode */
	__u32 cap;     /* bytes captured per call, at most L7_CAP_MAX */
	__u32 ssl;     /* 1: the libssl uprobes may be attached (support_ssl) */
	__u32 gen;     /* announcement generation (>= 1): a socket announced in an older one is
			* announced again (user space forgot it) */
	__u32 port;    /* 0: every socket; else only those whose local or remote port it is
			* (kafkaprobe's broker port) */
	__u32 batch;   /* 1: data records go through the per-CPU batches (user space can flush
			* them); 0: each in its own record */
};

/* A TLS session of a process (`ssl_socks` key). */
struct l7_ssl_key {
	__u64 ssl;     /* the SSL object's address in the process */
	__u32 tgid;
	__u32 pad;
};

/* An SSL_read/SSL_write call in progress (`ssl_calls`, by thread id). */
struct l7_ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 len_ptr; /* _ex variants: where the byte count is written */
	__u8 ex;
	__u8 dir;      /* enum l7_dir */
	__u8 pad[6];
};

#endif /* L7_INTF_H */
