#!/usr/bin/env bash
# Build gala-gopher (daemon + probes). Run from anywhere; flags may be combined, in this order:
#   --check    install build and test dependencies with apt (needs root)
#   --clean    remove build outputs
#   --release  optimized build of every crate (target/release)
#   --debug    debug build of every crate (target/debug)
#   --test     run the whole test suite (root: eBPF tests load real programs)
#   --help     this text
set -euo pipefail
cd "$(dirname "$0")"

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

# Build: clang (BPF C), libelf/zlib (libbpf). Tests: promtool + prometheus, bpftool (vmlinux
# regeneration), python3 (script probes), util-linux (losetup for loop-device IO tests).
APT_PACKAGES=(clang libelf-dev zlib1g-dev pkg-config make gcc g++ bpftool
              prometheus python3 python3-pip util-linux procps curl ca-certificates)

check() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "build.sh --check: run as root (apt-get)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
    if ! command -v cargo >/dev/null 2>&1; then
        echo "build.sh --check: no Rust toolchain; install one with rustup (rust >= 1.85)" >&2
        exit 1
    fi
}

[ $# -eq 0 ] && { usage; exit 0; }
for arg in "$@"; do
    case "$arg" in
        --help|-h) usage; exit 0 ;;
        --check|--clean|--release|--debug|--test) ;;
        *) echo "build.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
    esac
done
for arg in "$@"; do
    case "$arg" in
        --check) check ;;
        --clean) cargo clean ;;
        --release) cargo build --workspace --release ;;
        --debug) cargo build --workspace ;;
        --test) cargo test --workspace ;;
    esac
done
