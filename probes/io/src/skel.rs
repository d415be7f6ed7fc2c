//! Generated libbpf-rs skeletons.
#![allow(
    missing_docs,
    clippy::all,
    non_camel_case_types,
    non_upper_case_globals,
    dead_code,
    unused_imports
)]

/// Skeleton of `src/bpf/io.bpf.c`.
pub mod io {
    include!(concat!(env!("OUT_DIR"), "/io.skel.rs"));
}

/// Skeleton of `src/bpf/gg_selftest.bpf.c` (used by tests only).
pub mod selftest {
    include!(concat!(env!("OUT_DIR"), "/gg_selftest.skel.rs"));
}
