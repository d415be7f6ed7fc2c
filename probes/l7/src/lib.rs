//! l7probe and kafkaprobe. l7probe: requests, responses, errors and latency of HTTP/1.x, Redis, PostgreSQL, MySQL,
//! Kafka and DNS, per process and peer and per API, from the bytes the traced processes send
//! and receive (no code change in them, no kprobes): tables `l7_link`, `l7_rpc`,
//! `l7_rpc_api`, and `l7_parse_stats` for what could not be parsed.
//!
//! Flags: the upstream ones (`-t` period, `-P` table bits, `-b` BTF), plus `-C <bytes>`: bytes
//! captured per call, 64..=4096, default 1024 (longer headers are cut: counted as parse
//! errors). `l7probe --print-meta` prints the `.meta` file.
//!
//! Control channel (stdin, [`probe_sdk::control`]): `report_period`, the tables
//! (`probe_bits`), `l7_protocol` and the process selection (`snoop`) change without a restart;
//! the selection is applied in the kernel (an untraced process costs one map lookup per socket
//! call), `l7_protocol` to connections seen from then on.

pub mod app;
pub mod collector;
pub mod conns;
pub mod decode;
pub mod kafka;
pub mod reorder;
pub mod runtime;
pub mod skel;
pub mod tables;
pub mod tls;
