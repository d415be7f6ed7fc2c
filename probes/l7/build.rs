fn main() {
    bpf_build::build_skeletons(&["l7"]);
}
