/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * tcp.h - layouts shared by tcp.bpf.c and the tcpprobe user space (src/skel.rs re-exports the
 * skeleton's generated copies of these types, so both sides always agree).
 */
#ifndef TCPPROBE_TCP_H
#define TCPPROBE_TCP_H

#define TCP_COMM_LEN 16

/* Role of the local end of a connection (key field "role"). 0 = not known yet. */
#define TCP_ROLE_CLIENT 1
#define TCP_ROLE_SERVER 2

/*
 * Per-connection counters, the same index in tcp_conn.cur/rep and tcp_agg.c. The first
 * TCP_C_FROM_SOCK are read from struct tcp_sock; the others are counted by tracepoints.
 */
enum tcp_counter {
	TCP_C_RX_BYTES = 0,   /* payload bytes received (bytes_received without the FIN) */
	TCP_C_TX_BYTES,       /* payload bytes sent once (bytes_sent - bytes_retrans) */
	TCP_C_SEGS_IN,        /* segments received (segs_in) */
	TCP_C_SEGS_OUT,       /* segments sent (segs_out) */
	TCP_C_RETRANS,        /* retransmitted segments (total_retrans) */
	TCP_C_FROM_SOCK,      /* = 5: counters below come from tracepoints */
	TCP_C_RST_SENT = TCP_C_FROM_SOCK,
	TCP_C_RST_RECV,
	TCP_C_ZERO_SND_WND,   /* the peer closed its receive window (we cannot send) */
	TCP_C_ZERO_RCV_WND,   /* we advertised a zero receive window */
	TCP_C_STATE_CHANGES,  /* TCP state transitions */
	TCP_C_NR,
};

/* Establish-latency histogram upper bounds in microseconds (keep in sync: parsed by a test). */
#define TCP_HIST_SLOTS 14
#define TCP_HIST_BOUNDS_US                                                                     \
	{ 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000, 250000, 1000000, 3000000, 10000000, \
	  130000000 }

/* Identity of an output record: one per (process, role, endpoints). */
struct tcpp_key {
	__u32 tgid;        /* 0 when the owner is not known */
	__u16 family;      /* AF_INET (2) or AF_INET6 (10) */
	__u8 role;         /* TCP_ROLE_* */
	__u8 pad;
	__u16 client_port; /* host order; 0 unless client ports are reported (-c 1) */
	__u16 server_port; /* host order */
	__u8 client_ip[16];  /* IPv4: first 4 bytes */
	__u8 server_ip[16];
};

/*
 * What one drain interval added for a key: counter deltas, connection events and gauge sums.
 * Gauges are averaged by user space: rtt sums over rtt_samples (live connections seen by the
 * iterator plus connections closed), window sums over live.
 */
struct tcpp_agg {
	char comm[TCP_COMM_LEN];
	__u64 c[TCP_C_NR];
	__u64 opens;         /* connections that reached ESTABLISHED */
	__u64 closes;        /* connections that reached CLOSE */
	__u64 failed;        /* connections closed before ESTABLISHED */
	__u64 estab_sum_us;
	__u64 estab_max_us;
	__u64 estab_hist[TCP_HIST_SLOTS]; /* per-bucket (not cumulative) counts */
	__u64 live;          /* live connections seen by the iterator pass */
	__u64 rtt_samples;
	__u64 srtt_sum_us;
	__u64 srtt_max_us;
	__u64 rcv_rtt_sum_us;
	__u64 snd_cwnd_sum;
	__u64 snd_wnd_sum;
	__u64 rcv_wnd_sum;
	__u64 notsent_sum;
	__u64 notack_sum;
	__u64 reordering_sum;
};

/* tcp_conn.flags */
#define TCP_CONN_LISTENER 1     /* storage of a listening socket (cloned into its children) */
#define TCP_CONN_CLOSED 2       /* final report done; later events go straight to the aggregate */
#define TCP_CONN_ESTAB_PENDING 4 /* established, open + latency not reported yet */
#define TCP_CONN_ESTABLISHED 8  /* reached ESTABLISHED at least once */

/* Per-socket state in socket-local storage (freed with the socket). */
struct tcpp_conn {
	__u32 tgid;
	__u8 role;
	__u8 flags;
	__u16 pad;
	char comm[TCP_COMM_LEN];
	__u64 start_ns;      /* SYN_SENT / SYN_RECV time */
	__u64 estab_us;      /* establish latency, valid with TCP_CONN_ESTAB_PENDING */
	__u32 zero_rcv_wup;  /* rcv_wup + 1 of the last zero receive window counted */
	__u32 pad2;
	__u64 cur[TCP_C_NR]; /* tracepoint counters (indices >= TCP_C_FROM_SOCK) */
	__u64 rep[TCP_C_NR]; /* values as of the last report (all indices) */
};

/* Key of listen_ports: local ports of listeners found by the iterator (role inference). */
struct tcpp_listen_key {
	__u16 family;
	__u16 port;
};

/* Value of owners: who holds a socket inode (filled by user space from /proc at start). */
struct tcpp_owner {
	__u32 tgid;
	char comm[TCP_COMM_LEN];
};

#endif /* TCPPROBE_TCP_H */
