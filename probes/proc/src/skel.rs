//! The generated libbpf-rs skeleton of `src/bpf/proc.bpf.c`, plus the byte views of its types.
#![allow(
    clippy::all,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unused_imports
)]
include!(concat!(env!("OUT_DIR"), "/proc.skel.rs"));

// SAFETY: plain C structs of integers and byte arrays, valid for any bit pattern.
unsafe impl plain::Plain for types::proc_stats {}
// SAFETY: as above.
unsafe impl plain::Plain for types::exec_notice {}
