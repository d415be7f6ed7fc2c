#!/usr/bin/env bash
# Install the release build (./build.sh --release) with the packages' layout — the rpm and the
# .deb are made from exactly this (their %install / staging tree runs this script):
#   PREFIX/usr/bin/gala-gopher, PREFIX/usr/bin/gopher-ctl
#   PREFIX/opt/gala-gopher/probes/   every probe of the build (executable or script), NAME.meta
#                                    beside it
#   PREFIX/opt/gala-gopher/meta/     extra .meta files (for extend probes run from elsewhere)
#   PREFIX/opt/gala-gopher/sdk/      python/shell helpers for script probes
#   PREFIX/etc/gala-gopher/          gala-gopher.conf, gala-gopher-app.conf, probes.init (an
#                                    existing file is kept; the shipped version goes beside it as
#                                    *.new)
#   PREFIX/usr/lib/systemd/system/gala-gopher.service
#   PREFIX/usr/share/gala-gopher/systemd/legacy-kernel.conf   drop-in for kernels < 5.11
#   PREFIX/usr/share/doc/gala-gopher/  README.md, the user guides, one page per probe
# The probes of the build are the ones the daemon was built with (`gala-gopher --version`, see
# build.sh --probes); the config and docs installed name only those.
#
# Usage: install.sh [--prefix DIR]               (default prefix: /)
#        install.sh --uninstall [--prefix DIR]   stop and disable the service (prefix /), remove
#            what install.sh installs; keep configuration files that differ from the shipped
#            ones, drop-ins of your own in the probes folder, and the logs
set -euo pipefail
cd "$(dirname "$0")"

PREFIX=/
MODE=install
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
        --uninstall) MODE=uninstall; shift ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
root="${PREFIX%/}"
TARGET="${CARGO_TARGET_DIR:-target}/release"
CONFS=(gala-gopher.conf gala-gopher-app.conf probes.init)
DOCS=(configuration.md rest-api.md exporters.md writing-a-probe.md packaging.md container-labels.md container.md aops.md)
DOC_DIR=usr/share/doc/gala-gopher
SHARE_DIR=usr/share/gala-gopher

# The shipped probes, from probes/shipped.list (NAME DIR SOURCE per line).
ALL_NAMES=() ALL_DIRS=() ALL_SOURCES=()
while read -r name dir source extra; do
    case "$name" in ''|'#'*) continue ;; esac
    if [ -z "$source" ] || [ -n "$extra" ]; then
        echo "install.sh: probes/shipped.list: bad line \"$name $dir $source $extra\"" >&2; exit 1
    fi
    ALL_NAMES+=("$name"); ALL_DIRS+=("$dir"); ALL_SOURCES+=("$source")
done < probes/shipped.list

# The file a shipped probe installs as: the binary NAME, or its script's own name.
probe_file() { if [ "$2" = cargo ]; then echo "$1"; else echo "$2"; fi; }

uninstall() {
    if systemd_running; then
        systemctl --no-reload disable --now gala-gopher.service >/dev/null 2>&1 || true
    fi
    local i f
    rm -f "$root/usr/bin/gala-gopher" "$root/usr/bin/gopher-ctl" \
        "$root/usr/lib/systemd/system/gala-gopher.service" \
        "$root/opt/gala-gopher/sdk/gala_probe.py" "$root/opt/gala-gopher/sdk/gala_probe.sh" \
        "$root/opt/gala-gopher/sdk/gala_middleware.py"
    for i in "${!ALL_NAMES[@]}"; do
        f="$(probe_file "${ALL_NAMES[$i]}" "${ALL_SOURCES[$i]}")"
        rm -f "$root/opt/gala-gopher/probes/$f" "$root/opt/gala-gopher/probes/${ALL_NAMES[$i]}.meta"
    done
    rm -rf "${root:?}/$DOC_DIR" "${root:?}/$SHARE_DIR"
    # Configuration: a file still as shipped (or as a tailored build shipped it: the shipped
    # text with probe entries left out) goes; an edited one stays.
    local conf dest kept=()
    for conf in "${CONFS[@]}"; do
        dest="$root/etc/gala-gopher/$conf"
        rm -f "$dest.new"
        [ -e "$dest" ] || continue
        if cmp -s "conf/$conf" "$dest" || { [ "$conf" = gala-gopher.conf ] && tailored_from_shipped "$dest"; }; then
            rm -f "$dest"
        else
            kept+=("$dest")
        fi
    done
    local d
    for d in opt/gala-gopher/probes opt/gala-gopher/meta opt/gala-gopher/sdk opt/gala-gopher etc/gala-gopher; do
        rmdir "$root/$d" 2>/dev/null || true
    done
    if systemd_running; then systemctl daemon-reload >/dev/null 2>&1 || true; fi
    [ ${#kept[@]} -eq 0 ] || echo "install.sh: kept edited configuration: ${kept[*]}"
    if [ -d "$root/opt/gala-gopher/probes" ]; then
        echo "install.sh: kept $PREFIX/opt/gala-gopher/probes (files not installed by gala-gopher)"
    fi
    echo "uninstalled from $PREFIX (logs in /var/log/gala-gopher kept)"
}

systemd_running() { [ "$root" = "" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# True when config file $1 is the shipped config with some shipped probes' entries left out.
tailored_from_shipped() {
    local i left=()
    for i in "${!ALL_NAMES[@]}"; do
        grep -q "name = \"${ALL_NAMES[$i]}\";" "$1" || left+=("${ALL_NAMES[$i]}")
    done
    tailor_conf "${left[*]}" < conf/gala-gopher.conf | cmp -s - "$1"
}

# Copies the config on stdin to stdout without the `probes` list entries of the names in $1
# (space-separated), keeping the list's commas valid libconfig.
tailor_conf() {
    awk -v out="$1" '
        function flush(sep) { if (pending != "") { printf "%s%s\n%s", pending, sep, pgap; pending = ""; pgap = "" } }
        BEGIN { n = split(out, o, " "); for (i = 1; i <= n; i++) drop[o[i]] = 1; state = 0 }
        state == 0 { print; if ($0 ~ /^probes[ \t]*=/) state = 1; next }
        state == 1 && /^[ \t]*\{[ \t]*$/ { state = 2; buf = $0; name = ""; next }
        state == 1 && /^[ \t]*\)[ \t]*;/ { flush(""); print; state = 3; next }
        state == 1 { if (pending != "") pgap = pgap $0 "\n"; else print; next }
        state == 2 {
            buf = buf "\n" $0
            if (match($0, /name[ \t]*=[ \t]*"[^"]*"/)) {
                name = substr($0, RSTART, RLENGTH); sub(/^[^"]*"/, "", name); sub(/"$/, "", name)
            }
            if ($0 ~ /^[ \t]*\}[ \t]*,?[ \t]*$/) {
                sub(/,[ \t]*$/, "", buf); state = 1
                if (!(name in drop)) { flush(","); pending = buf }
            }
            next
        }
        { print }'
}

# Copies the markdown on stdin to stdout without the lines marked `<!-- probe:NAME -->` for the
# names in $1 (space-separated).
tailor_doc() {
    awk -v out="$1" '
        BEGIN { n = split(out, o, " "); for (i = 1; i <= n; i++) drop["<!-- probe:" o[i] " -->"] = 1 }
        {
            line = $0
            while (match(line, /<!-- probe:[A-Za-z0-9_]+ -->/)) {
                if (substr(line, RSTART, RLENGTH) in drop) next
                line = substr(line, RSTART + RLENGTH)
            }
            print
        }'
}

if [ "$MODE" = uninstall ]; then uninstall; exit 0; fi

for bin in gala-gopher gopher-ctl; do
    [ -x "$TARGET/$bin" ] || { echo "install.sh: $TARGET/$bin missing; run ./build.sh --release first" >&2; exit 1; }
done
# The probes this build has: the daemon was built with them (build.sh --probes).
BUILT=" $("$TARGET/gala-gopher" --version | sed -n 's/^probes: //p') "
[ "$BUILT" != "  " ] || { echo "install.sh: $TARGET/gala-gopher --version names no probes" >&2; exit 1; }
NAMES=() DIRS=() SOURCES=() LEFT_OUT=()
for i in "${!ALL_NAMES[@]}"; do
    if [[ "$BUILT" == *" ${ALL_NAMES[$i]} "* ]]; then
        NAMES+=("${ALL_NAMES[$i]}"); DIRS+=("${ALL_DIRS[$i]}"); SOURCES+=("${ALL_SOURCES[$i]}")
        if [ "${ALL_SOURCES[$i]}" = cargo ] && [ ! -x "$TARGET/${ALL_NAMES[$i]}" ]; then
            echo "install.sh: $TARGET/${ALL_NAMES[$i]} missing; run ./build.sh --release first" >&2; exit 1
        fi
    else
        LEFT_OUT+=("${ALL_NAMES[$i]}")
    fi
done

install -d -m 0755 "$root/usr/bin" "$root/opt/gala-gopher/probes" "$root/opt/gala-gopher/meta" \
    "$root/opt/gala-gopher/sdk" "$root/usr/lib/systemd/system" "$root/$SHARE_DIR/systemd" \
    "$root/$DOC_DIR/probes"
install -d -m 0750 "$root/etc/gala-gopher"
install -m 0755 "$TARGET/gala-gopher" "$root/usr/bin/gala-gopher"
install -m 0755 "$TARGET/gopher-ctl" "$root/usr/bin/gopher-ctl"
for i in "${!NAMES[@]}"; do
    name="${NAMES[$i]}"; dir="${DIRS[$i]}"; file="$(probe_file "$name" "${SOURCES[$i]}")"
    if [ "${SOURCES[$i]}" = cargo ]; then
        install -m 0755 "$TARGET/$name" "$root/opt/gala-gopher/probes/$file"
    else
        install -m 0755 "$dir/$file" "$root/opt/gala-gopher/probes/$file"
    fi
    install -m 0644 "$dir/$name.meta" "$root/opt/gala-gopher/probes/$name.meta"
done
# A left-out probe's files from an earlier install go (as an rpm upgrade removes them): left in
# the probes folder they would run as a drop-in.
for i in "${!ALL_NAMES[@]}"; do
    if [[ "$BUILT" != *" ${ALL_NAMES[$i]} "* ]]; then
        rm -f "$root/opt/gala-gopher/probes/$(probe_file "${ALL_NAMES[$i]}" "${ALL_SOURCES[$i]}")" \
            "$root/opt/gala-gopher/probes/${ALL_NAMES[$i]}.meta"
    fi
done
install -m 0644 probe-sdk/scripts/gala_probe.py probe-sdk/scripts/gala_probe.sh \
    probe-sdk/scripts/gala_middleware.py "$root/opt/gala-gopher/sdk/"

staged="$(mktemp -d)"
trap 'rm -rf "$staged"' EXIT
tailor_conf "${LEFT_OUT[*]}" < conf/gala-gopher.conf > "$staged/gala-gopher.conf"
cp conf/gala-gopher-app.conf conf/probes.init "$staged/"
for conf in "${CONFS[@]}"; do
    dest="$root/etc/gala-gopher/$conf"
    if [ -e "$dest" ] && ! cmp -s "$staged/$conf" "$dest"; then
        install -m 0640 "$staged/$conf" "$dest.new"
        echo "install.sh: kept existing $dest; shipped version written to $dest.new"
    else
        install -m 0640 "$staged/$conf" "$dest"
    fi
done
install -m 0644 conf/gala-gopher.service "$root/usr/lib/systemd/system/gala-gopher.service"
install -m 0644 conf/gala-gopher-legacy-kernel.conf "$root/$SHARE_DIR/systemd/legacy-kernel.conf"

# Docs: the user guides and the pages of the probes in the build, probe-specific lines of the
# left-out probes removed.
tailor_doc "${LEFT_OUT[*]}" < README.md > "$staged/README.md"
install -m 0644 "$staged/README.md" "$root/$DOC_DIR/README.md"
for doc in "${DOCS[@]}"; do
    tailor_doc "${LEFT_OUT[*]}" < "docs/$doc" > "$staged/$doc"
    install -m 0644 "$staged/$doc" "$root/$DOC_DIR/$doc"
done
middleware=0
for dir in "${DIRS[@]}"; do
    page="docs/probes/$(basename "$dir").md"
    if [ -e "$page" ]; then install -m 0644 "$page" "$root/$DOC_DIR/probes/"; fi
    if grep -q "]($(basename "$page"))" docs/probes/middleware.md; then middleware=1; fi
done
# The middleware probes' overview, with the rows of the left-out ones removed.
if [ "$middleware" = 1 ]; then
    tailor_doc "${LEFT_OUT[*]}" < docs/probes/middleware.md > "$staged/middleware.md"
    install -m 0644 "$staged/middleware.md" "$root/$DOC_DIR/probes/middleware.md"
fi
echo "installed into $PREFIX (probes:${BUILT% })"
