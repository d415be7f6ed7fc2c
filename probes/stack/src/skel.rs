//! The generated libbpf-rs skeleton of `src/bpf/stack.bpf.c`; its `types` are the Rust copies of
//! `src/bpf/intf.h`.
#![allow(
    clippy::all,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    unused_imports
)]
include!(concat!(env!("OUT_DIR"), "/stack.skel.rs"));
