/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * intf.h - records shared by tcp.bpf.c and the tcpprobe user space (src/decode.rs decodes them;
 * the skeleton generates the Rust copies of these structs, so both sides always agree).
 *
 * The BPF side keeps no per-connection state: it reports the few state changes that matter
 * (connect, listen, established, close) and rare events (resets, zero windows) through a ring
 * buffer, and the tcp iterator dumps every live socket's counters once per period. User space
 * joins them by socket cookie.
 */
#ifndef TCPPROBE_INTF_H
#define TCPPROBE_INTF_H

#define TCP_COMM_LEN 16

/* tcpp_sock_id.kind */
enum tcpp_kind {
	TCPP_EV_CONNECT = 1,  /* CLOSE -> SYN_SENT, process context: tcpp_ev_owner */
	TCPP_EV_LISTEN,       /* -> LISTEN, process context: tcpp_ev_owner */
	TCPP_EV_ESTABLISHED,  /* -> ESTABLISHED: tcpp_ev_estab */
	TCPP_EV_CLOSE,        /* -> CLOSE, final counters: tcpp_ev_close (state = state left) */
	TCPP_EV_RST_SENT,     /* tcpp_ev_mark */
	TCPP_EV_RST_RECV,     /* tcpp_ev_mark */
	TCPP_EV_ZERO_SND_WND, /* the peer advertised a zero window after an open one: tcpp_ev_mark */
	TCPP_EV_ZERO_RCV_WND, /* a segment arrived while our window is zero: tcpp_ev_mark, aux =
			       * rcv_wup (the same value means the same zero-window episode) */
	TCPP_REC_LIVE,        /* iterator record: tcpp_live */
	TCPP_EV_DROP,         /* skb:kfree_skb of a TCP socket's packet: tcpp_ev_mark, aux =
			       * enum tcpp_drop */
	TCPP_EV_EXCEED_BUF,   /* sock:sock_exceed_buf_limit: tcpp_ev_mark, aux = kind
			       * (0 SK_MEM_SEND, 1 SK_MEM_RECV) */
	TCPP_EV_SK_ERR,       /* sock:inet_sk_error_report: tcpp_ev_mark, aux = sk_err */
	TCPP_EV_SNDBUF_FULL,  /* sock:sock_send_length returned -EAGAIN: tcpp_ev_mark */
};

/* tcpp_ev_mark.aux of TCPP_EV_DROP: which kfree_skb drop reason. */
enum tcpp_drop {
	TCPP_DROP_BACKLOG = 1, /* SKB_DROP_REASON_SOCKET_BACKLOG */
	TCPP_DROP_FILTER,      /* SKB_DROP_REASON_SOCKET_FILTER */
	TCPP_DROP_RMEM,        /* SKB_DROP_REASON_PROTO_MEM or SOCKET_RCVBUFF */
};

/* Which socket, with its endpoints as of the record (ports in host order). */
struct tcpp_sock_id {
	__u64 cookie;      /* socket cookie: unique for the life of the kernel */
	__u16 family;      /* AF_INET (2) or AF_INET6 (10) */
	__u16 lport;
	__u16 rport;
	__u8 kind;         /* enum tcpp_kind */
	__u8 state;        /* TCP state (for CLOSE / ESTABLISHED: the state left) */
	__u8 laddr[16];    /* IPv4: first 4 bytes */
	__u8 raddr[16];
};

/* Cumulative per-connection counters read from struct tcp_sock. */
struct tcpp_counters {
	__u64 rx_bytes;    /* bytes_received without the FIN's sequence number */
	__u64 tx_bytes;    /* bytes_sent - bytes_retrans: payload sent once */
	__u64 segs_in;
	__u64 segs_out;
	__u64 retrans;     /* total_retrans */
	__u32 srtt_us;
	__u32 rcv_rtt_us;
	__u32 sk_drops;    /* sk->sk_drops */
	__u32 chrono[3];   /* jiffies busy, rwnd limited, sndbuf limited (chrono_stat[] plus the
			    * running chrono), as tcp_get_info() computes them */
};

struct tcpp_ev_owner {
	struct tcpp_sock_id id;
	__u64 ts_ns;
	__u32 tgid;
	__u32 pad;
	char comm[TCP_COMM_LEN]; /* the process (group leader) name */
};

struct tcpp_ev_estab {
	struct tcpp_sock_id id;
	__u64 ts_ns;
	__u32 srtt_us;     /* for an accepted socket: the SYN-ACK round trip */
	__u32 pad;
};

struct tcpp_ev_close {
	struct tcpp_sock_id id;
	struct tcpp_counters c;
};

struct tcpp_ev_mark {
	struct tcpp_sock_id id;
	__u32 aux;
	__u32 pad;
};

struct tcpp_live {
	struct tcpp_sock_id id;
	struct tcpp_counters c;
	__u64 ino;         /* socket inode (0 without a file), to name owners from /proc */
	__u32 snd_cwnd;
	__u32 snd_wnd;
	__u32 rcv_wnd;
	__u32 notsent_bytes;
	__u32 notack_bytes;
	__u32 reordering;
	/* tcp_rate */
	__u32 rto_j;       /* icsk_rto, jiffies */
	__u32 ato_j;       /* icsk_ack.ato, jiffies */
	__u32 snd_ssthresh;
	__u32 rcv_ssthresh;
	__u32 advmss;
	__u32 rcv_space;   /* rcvq_space.space */
	__u32 rate_delivered;
	__u32 rate_interval_us;
	__u32 mss_cache;
	__u32 lost_out;    /* tcp_abn gauges */
	__u64 pacing_rate; /* sk_pacing_rate, bytes/s */
	__u64 max_pacing_rate;
	__u64 jiffies;     /* bpf_jiffies64() at the record: user space derives HZ from it */
	/* tcp_sockbuf */
	__u32 err_qlen;    /* sk_error_queue.qlen */
	__u32 rcv_qlen;    /* sk_receive_queue.qlen */
	__u32 wri_qlen;    /* sk_write_queue.qlen */
	__u32 backlog_len; /* sk_backlog.len */
	__u32 omem_alloc;  /* sk_omem_alloc */
	__s32 forward_alloc; /* sk_forward_alloc */
	__s32 wmem_queued; /* sk_wmem_queued */
	__s32 rcvbuf;      /* sk_rcvbuf */
	__s32 sndbuf;      /* sk_sndbuf */
	__u32 sacked_out;
	__s32 sk_err;
	__s32 sk_err_soft;
};

#endif /* TCPPROBE_INTF_H */
