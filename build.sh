#!/usr/bin/env bash
# Build gala-gopher (daemon + probes). Run from anywhere; flags may be combined, in this order:
#   --check    install build and test dependencies with apt (needs root)
#   --clean    remove build outputs
#   --release  optimized build of every crate (target/release)
#   --debug    debug build of every crate (target/debug)
#   --test     check formatting and lints (cargo fmt --check, clippy -D warnings), install the
#              python test packages into a virtual environment (target/test-venv, from
#              framework/tests/requirements.txt), run the whole test suite (root: eBPF tests load
#              real programs), then build the release, install it into a temp prefix and check the
#              installed layout
#   --help     this text
set -euo pipefail
cd "$(dirname "$0")"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

# Build: clang (BPF C), libelf/zlib (libbpf). Tests: promtool + prometheus, bpftool (vmlinux
# regeneration), python3 (script probes) and python3-venv (the test receivers' packages),
# util-linux (losetup for loop-device IO tests).
APT_PACKAGES=(clang libelf-dev zlib1g-dev pkg-config make gcc g++ bpftool
              prometheus python3 python3-venv util-linux procps curl ca-certificates)

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

# The python packages the tests' real receivers need (Tansu broker, kafka-python, OTLP protobuf
# classes), pinned in framework/tests/requirements.txt, in a virtual environment: Debian's system
# python refuses `pip install` into itself. Reinstalled only when the requirements change.
test_venv() {
    local venv="${CARGO_TARGET_DIR:-target}/test-venv" req=framework/tests/requirements.txt
    local py=/usr/bin/python3
    [ -x "$py" ] || py="$(command -v python3)"
    if [ ! -x "$venv/bin/python3" ] || ! cmp -s "$req" "$venv/requirements.txt"; then
        rm -rf "$venv"
        "$py" -m venv "$venv"
        "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check -r "$req"
        cp "$req" "$venv/requirements.txt"
    fi
    # Not GALA_GOPHER_*: the daemon reads those as configuration overrides.
    GG_TEST_PYTHON="$(cd "$venv/bin" && pwd)/python3"
    export GG_TEST_PYTHON
}

# Formatting and lints are part of the tests.
lint() {
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
}

# Install the release build into a temp prefix and check the rpm layout (every probe of
# probes/shipped.list included) and the shipped config.
install_check() {
    cargo build --workspace --release
    local prefix
    prefix="$(mktemp -d)"
    ./install.sh --prefix "$prefix" >/dev/null
    # The fixed layout, then every probe of probes/shipped.list with its .meta.
    local expected=(usr/bin/gala-gopher usr/bin/gopher-ctl etc/gala-gopher/gala-gopher.conf etc/gala-gopher/gala-gopher-app.conf
                    usr/lib/systemd/system/gala-gopher.service opt/gala-gopher/sdk/gala_probe.py
                    opt/gala-gopher/sdk/gala_probe.sh opt/gala-gopher/meta)
    local name dir source
    while read -r name dir source; do
        case "$name" in ''|'#'*) continue ;; esac
        if [ "$source" = cargo ]; then
            expected+=("opt/gala-gopher/probes/$name")
        else
            expected+=("opt/gala-gopher/probes/$source")
        fi
        expected+=("opt/gala-gopher/probes/$name.meta")
    done < probes/shipped.list
    local missing=0 f
    for f in "${expected[@]}"; do
        if [ ! -e "$prefix/$f" ]; then echo "install check: missing $f" >&2; missing=1; fi
    done
    "$prefix/usr/bin/gala-gopher" --check-config -c "$prefix/etc/gala-gopher/gala-gopher.conf" >/dev/null
    rm -rf "$prefix"
    [ "$missing" -eq 0 ] || exit 1
    echo "install check: layout and shipped config OK"
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
        --test) lint; test_venv; cargo test --workspace --no-fail-fast; install_check ;;
    esac
done
