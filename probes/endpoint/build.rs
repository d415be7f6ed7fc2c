fn main() {
    // -mcpu=v3: the listener drop accounting claims sk_drops increments by compare-and-exchange.
    bpf_build::build_skeletons_with(&["endpoint"], &["-mcpu=v3"]);
}
