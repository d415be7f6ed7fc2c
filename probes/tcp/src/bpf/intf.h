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
};

#endif /* TCPPROBE_INTF_H */
