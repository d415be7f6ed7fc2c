fn main() {
    bpf_build::build_skeletons(&["proc"]);
    println!("cargo:rerun-if-changed=src/bpf/proc.h");
}
