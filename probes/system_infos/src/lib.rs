//! The `system_infos` probe: host, CPU, memory, disk, filesystem, NIC, TCP/UDP and per-process
//! tables read from `/proc` and `/sys` (no external commands), written as gala-gopher record
//! lines.
//!
//! Every reader takes its root from [`source::HostPaths`], so tests point the whole probe at a
//! captured tree. [`collector::Collector`] runs one cycle; [`schema`] defines the tables and the
//! run-time control declaration and renders `system_infos.meta`; [`runtime`] applies the
//! control channel's messages.

pub mod collector;
pub mod cpu;
pub mod disk;
pub mod events;
pub mod fs;
pub mod mem;
pub mod net;
pub mod nic;
pub mod options;
pub mod os;
pub mod process;
pub mod qdisc;
pub mod runtime;
pub mod schema;
pub mod selection;
pub mod source;
pub mod value;
