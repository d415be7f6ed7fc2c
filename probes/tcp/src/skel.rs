//! The generated libbpf-rs skeleton of `src/bpf/tcp.bpf.c`.
#![allow(
    clippy::all,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unused_imports
)]
include!(concat!(env!("OUT_DIR"), "/tcp.skel.rs"));

// SAFETY: these are the `#[repr(C)]` plain-data copies of `tcp.h`'s records (integers and
// integer arrays only), valid for any bit pattern; user space copies record bytes into them.
unsafe impl plain::Plain for types::tcpp_sock_id {}
unsafe impl plain::Plain for types::tcpp_ev_owner {}
unsafe impl plain::Plain for types::tcpp_ev_estab {}
unsafe impl plain::Plain for types::tcpp_ev_close {}
unsafe impl plain::Plain for types::tcpp_ev_mark {}
unsafe impl plain::Plain for types::tcpp_live {}
