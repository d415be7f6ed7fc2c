/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * intf.h - records shared by endpoint.bpf.c and the endpoint user space (src/decode.rs decodes
 * them; the skeleton generates the Rust copies, so both sides always agree).
 *
 * TCP listeners: their counters live in the `listeners` hash map (one entry per listen
 * address), updated in the kernel by the hooks; the tcp iterator dumps every listener with its
 * kernel state (sk_drops, accept queue) and those counters once per period, and a listener's
 * close sends its final values. TCP clients: a few ring-buffer records per connect (owner,
 * established, failed with sk_err, SYN retransmitted), naming the socket by its kernel address:
 * no cookie helper on the connect path. UDP: per-socket counters in the
 * `udp_socks` hash map (by socket cookie), the udp iterator adds each socket's sk_drops.
 */
#ifndef ENDPOINT_INTF_H
#define ENDPOINT_INTF_H

#define EP_COMM_LEN 16
/* Establish-latency histogram buckets (src/histogram.rs BOUNDS_US). */
#define EP_HIST_SLOTS 14

enum ep_kind {
	EP_EV_LISTEN = 1,   /* -> LISTEN, process context: ep_ev_owner */
	EP_EV_CONNECT,      /* -> SYN_SENT, process context: ep_ev_owner, id.cookie = sk */
	/* The connecting socket's later records, ep_ev_mark: id.cookie = the socket's address
	 * (its ep_ev_owner.sk), id.kind set, the other id fields 0. */
	EP_EV_ESTAB,        /* SYN_SENT -> ESTABLISHED, ts_ns from the socket's tcp_mstamp */
	EP_EV_CONN_FAIL,    /* SYN_SENT -> CLOSE: aux = sk_err */
	EP_EV_RETRAN_SYN,   /* a SYN retransmitted */
	EP_EV_SYN_DROP,     /* a SYN freed by the local stack (kfree_skb): aux = reason */
	EP_EV_LISTEN_CLOSE, /* LISTEN -> CLOSE, final values: ep_listener */
	EP_REC_LISTENER,    /* iterator: ep_listener */
	EP_REC_UDP,         /* iterator: ep_udp_live */
};

/* Which socket (ports in host order). */
struct ep_id {
	__u64 cookie;   /* socket cookie (connect records: the socket's address, see ep_kind) */
	__u16 family;   /* AF_INET (2) or AF_INET6 (10) */
	__u16 lport;
	__u16 rport;
	__u8 kind;      /* enum ep_kind */
	__u8 state;     /* TCP state */
	__u8 laddr[16]; /* IPv4: first 4 bytes */
	__u8 raddr[16];
};

struct ep_ev_owner {
	struct ep_id id;
	__u64 ts_ns;
	__u32 tgid;
	__u32 pad;
	__u64 sk;       /* the socket's address (what the connect's later records name) */
	char comm[EP_COMM_LEN];
};

struct ep_ev_mark {
	struct ep_id id;
	__u64 ts_ns;
	__u32 aux;
	__u32 pad;
};

/* Cumulative per-listen-address counters, kept in the kernel. */
struct ep_listen_ctr {
	__u64 passive_open;        /* child sockets created (LISTEN -> SYN_RECV): PassiveOpens */
	__u64 passive_open_failed; /* child sockets closed from SYN_RECV */
	__u64 syns;                /* SYNs the listener took in (tcp_rcv_state_process) */
	__u64 accept_overflow_syn; /* of those, dropped for a full accept queue */
	__u64 ack_listen_drops;    /* handshake ACKs whose child could not be created
				    * (TCP_LISTEN_OVERFLOW): one ListenDrop each */
	__u64 accept_overflow_ack; /* of those, refused for a full accept queue */
	__u64 retran_synacks;      /* tcp_retransmit_synack */
	__u64 drop_backlog;        /* kfree_skb SOCKET_BACKLOG with rx_sk = the listener */
	__u64 drop_other;          /* kfree_skb, other reasons, rx_sk = the listener */
	__u64 drops_not_listen;    /* sk_drops increments of packets freed on the listener's
				    * discard path (sk_drops_add): not ListenDrops */
	__u64 estab_hist[EP_HIST_SLOTS]; /* accepted connections' SYN-ACK RTT, us */
	__u64 estab_sum;
	__u64 estab_max;
};

/* Value of the `listeners` map. */
struct ep_listen_state {
	__u64 sk;         /* the listener (first one of a reuseport group) */
	__u64 cookie;     /* its cookie */
	__u64 last_drops; /* its sk_drops when last claimed */
	__u64 base_drops; /* its sk_drops when the entry was made: counters start there */
	struct ep_listen_ctr c;
};

/* Key of the `listeners` map: a listen address in a network namespace. */
struct ep_listen_key {
	__u16 family;
	__u16 port;
	__u32 netns;    /* inode number of the network namespace */
	__u8 addr[16];
};

struct ep_listener {
	struct ep_id id;
	struct ep_listen_ctr c; /* zero unless this socket owns the map entry */
	__u64 drops;            /* sk_drops: tcp_listendrop() and drops on the listener; since
				 * base_drops when this socket owns the map entry */
	__u64 ino;              /* socket inode (0 without a file) */
	__u32 ack_backlog;      /* accept queue length */
	__u32 max_ack_backlog;  /* listen() backlog */
	__u32 owns;             /* 1 when c is this socket's */
	__u32 pad;
};

/* Value of the `udp_socks` map (key: socket cookie). */
struct ep_udp_ctr {
	struct ep_id id;        /* endpoints when first seen */
	__u64 tx_bytes;
	__u64 rx_bytes;
	__u64 tx_dgrams;
	__u64 rx_dgrams;
	__u64 tx_errors;        /* sendmsg failures */
	__u64 rcvbuf_errors;    /* udp_fail_queue_rcv_skb rc -ENOMEM: RcvbufErrors */
	__u64 rcv_mem_errors;   /* udp_fail_queue_rcv_skb other rc: MemErrors */
	__u32 tgid;             /* first process seen sending/receiving (0: none yet) */
	__u32 pad;
	char comm[EP_COMM_LEN];
};

struct ep_udp_live {
	struct ep_id id;
	__u64 drops;            /* sk_drops */
	__u64 ino;
};

#endif /* ENDPOINT_INTF_H */
