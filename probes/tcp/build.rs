fn main() {
    bpf_build::build_skeletons(&["tcp"]);
    println!("cargo:rerun-if-changed=src/bpf/tcp.h");
}
