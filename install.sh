#!/usr/bin/env bash
# Install the release build (./build.sh --release) with the rpm's layout:
#   PREFIX/usr/bin/gala-gopher, PREFIX/usr/bin/gopher-ctl
#   PREFIX/opt/gala-gopher/probes/   every probe of probes/shipped.list (executable or script),
#                                    its NAME.meta beside it
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
# The shipped probes, from probes/shipped.list (NAME DIR SOURCE per line):
CARGO_PROBES=()   # NAME:DIR       the release binary NAME, DIR/NAME.meta
SCRIPT_PROBES=()  # NAME:DIR:FILE  the script DIR/FILE, DIR/NAME.meta
while read -r name dir source extra; do
    case "$name" in ''|'#'*) continue ;; esac
    if [ -z "$source" ] || [ -n "$extra" ]; then
        echo "install.sh: probes/shipped.list: bad line \"$name $dir $source $extra\"" >&2; exit 1
    fi
    if [ "$source" = cargo ]; then
        CARGO_PROBES+=("$name:$dir")
    else
        SCRIPT_PROBES+=("$name:$dir:$source")
    fi
done < probes/shipped.list

for bin in gala-gopher gopher-ctl "${CARGO_PROBES[@]%%:*}"; do
    [ -x "$TARGET/$bin" ] || { echo "install.sh: $TARGET/$bin missing; run ./build.sh --release first" >&2; exit 1; }
done

root="${PREFIX%/}"
install -d -m 0755 "$root/usr/bin" "$root/opt/gala-gopher/probes" "$root/opt/gala-gopher/meta" \
    "$root/opt/gala-gopher/sdk" "$root/usr/lib/systemd/system"
install -d -m 0750 "$root/etc/gala-gopher"
install -m 0755 "$TARGET/gala-gopher" "$root/usr/bin/gala-gopher"
install -m 0755 "$TARGET/gopher-ctl" "$root/usr/bin/gopher-ctl"
for entry in "${CARGO_PROBES[@]}"; do
    name="${entry%%:*}"; dir="${entry#*:}"
    install -m 0755 "$TARGET/$name" "$root/opt/gala-gopher/probes/$name"
    install -m 0644 "$dir/$name.meta" "$root/opt/gala-gopher/probes/$name.meta"
done
for entry in "${SCRIPT_PROBES[@]}"; do
    IFS=: read -r name dir file <<< "$entry"
    install -m 0755 "$dir/$file" "$root/opt/gala-gopher/probes/$file"
    install -m 0644 "$dir/$name.meta" "$root/opt/gala-gopher/probes/$name.meta"
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
