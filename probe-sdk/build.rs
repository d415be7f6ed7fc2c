//! With the `bpf` feature, compiles the BPF self-test program (`src/bpf/selftest/`) that the
//! unit tests of `probe_sdk::bpf` load; without it there is nothing to build.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "bpf")]
    bpf_build::build_skeletons_from("src/bpf/selftest", &["gg_selftest"]);
}
