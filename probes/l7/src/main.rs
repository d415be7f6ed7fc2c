//! `l7probe`: requests, errors and latency per peer and per API (docs/probes/l7.md).

fn main() {
    l7probe::app::main(l7probe::app::Mode::L7);
}
