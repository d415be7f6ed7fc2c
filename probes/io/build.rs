fn main() {
    // io: the probe; gg_selftest: a tiny program the tests use to exercise probe_sdk::bpf.
    bpf_build::build_skeletons(&["io", "gg_selftest"]);
}
