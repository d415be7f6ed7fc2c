fn main() {
    bpf_build::build_skeletons(&["stack"]);
}
