#!/usr/bin/env bash
# Install the release build (./build.sh --release) with the rpm's layout:
#   PREFIX/usr/bin/gala-gopher
#   PREFIX/opt/gala-gopher/probes/   every probe executable or script, its NAME.meta beside it
#   PREFIX/opt/gala-gopher/meta/     extra .meta files (for extend probes run from elsewhere)
#   PREFIX/opt/gala-gopher/sdk/      python/shell helpers for script probes
#   PREFIX/etc/gala-gopher/          gala-gopher.conf, gala-gopher-app.conf (existing files kept;
#                                    the shipped version is written beside them as *.new)
#   PREFIX/usr/lib/systemd/system/gala-gopher.service
# Usage: install.sh [--prefix DIR]   (default: /)
set -euo pipefail
cd "$(dirname "$0")"

PREFIX=/
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

TARGET="${CARGO_TARGET_DIR:-target}/release"
# name of the binary : directory with its .meta
RUST_PROBES=("system_infos:probes/system_infos" "tcpprobe:probes/tcp" "taskprobe:probes/proc" "ioprobe:probes/io")
SCRIPT_PROBES=(probes/example/example.sh probes/example/example_py.py)

for bin in gala-gopher "${RUST_PROBES[@]%%:*}"; do
    [ -x "$TARGET/$bin" ] || { echo "install.sh: $TARGET/$bin missing; run ./build.sh --release first" >&2; exit 1; }
done

root="${PREFIX%/}"
install -d -m 0755 "$root/usr/bin" "$root/opt/gala-gopher/probes" "$root/opt/gala-gopher/meta" \
    "$root/opt/gala-gopher/sdk" "$root/usr/lib/systemd/system"
install -d -m 0750 "$root/etc/gala-gopher"
install -m 0755 "$TARGET/gala-gopher" "$root/usr/bin/gala-gopher"
for entry in "${RUST_PROBES[@]}"; do
    bin="${entry%%:*}"; dir="${entry#*:}"
    install -m 0755 "$TARGET/$bin" "$root/opt/gala-gopher/probes/$bin"
    install -m 0644 "$dir/$bin.meta" "$root/opt/gala-gopher/probes/$bin.meta"
done
for script in "${SCRIPT_PROBES[@]}"; do
    name="$(basename "$script")"
    install -m 0755 "$script" "$root/opt/gala-gopher/probes/$name"
    install -m 0644 "${script%.*}.meta" "$root/opt/gala-gopher/probes/${name%.*}.meta"
done
install -m 0644 probe-sdk/scripts/gala_probe.py probe-sdk/scripts/gala_probe.sh "$root/opt/gala-gopher/sdk/"
for conf in gala-gopher.conf gala-gopher-app.conf; do
    dest="$root/etc/gala-gopher/$conf"
    if [ -e "$dest" ] && ! cmp -s "conf/$conf" "$dest"; then
        install -m 0640 "conf/$conf" "$dest.new"
        echo "install.sh: kept existing $dest; shipped version written to $dest.new"
    else
        install -m 0640 "conf/$conf" "$dest"
    fi
done
install -m 0644 conf/gala-gopher.service "$root/usr/lib/systemd/system/gala-gopher.service"
echo "installed into $PREFIX"
