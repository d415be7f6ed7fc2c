#!/usr/bin/env bash
# Build gala-gopher (daemon + probes). Run from anywhere; actions run in this order:
#   --check    install build, packaging and test dependencies with apt (needs root)
#   --clean    remove build outputs
#   --release  optimized build of every crate (target/release), then the packages in
#              target/packages (docs/packaging.md): the rpm and source rpm, a .deb of the same
#              layout, and gala-gopher-VERSION.tar.gz, the source with every crate vendored
#              (rpmbuild -ba needs no network with it)
#   --image    the container image (docs/container.md): the release build (unless --release
#              ran too), then localhost/gala-gopher:VERSION built by podman from a root filesystem
#              tree (podman's storage in target/podman), saved as
#              target/packages/gala-gopher-image-VERSION.tar (podman load -i / docker load -i)
#   --debug    debug build of every crate (target/debug); no packages
#   --test     check formatting and lints (cargo fmt --check, clippy -D warnings), install the
#              python test packages into a virtual environment (target/test-venv, from
#              framework/tests/requirements.txt), run the whole test suite (root: eBPF tests load
#              real programs), then build the release and its packages and check them (layout,
#              rpmlint, install/upgrade/removal in empty roots, tailoring, offline build)
#   --help     this text
# Options of --release and --image:
#   --probes LIST          build and package only these probes (comma-separated; a probe's name,
#                          its upstream REST name or its folder: --probes system_infos,tcp,io)
#   -DENABLE_<PROBE>=0     upstream's form: leave that probe out (-DENABLE_TCP=0 -DENABLE_IO=0)
#   --no-packages          build only (the rpm spec's %build uses this)
#   --pkg-release=N        the packages' release number (default 1)
#   --package-dir=DIR      where the packages go (default target/packages)
set -euo pipefail
cd "$(dirname "$0")"

usage() { sed -n '2,/^[^#]/p' "$0" | sed -n 's/^# \{0,1\}//p'; }

# Build: clang (BPF C), libelf/zlib (libbpf), openssl (librdkafka's TLS). Packages: rpm
# (rpmbuild), rpmlint, dpkg-dev (dpkg-shlibdeps). Tests: promtool + prometheus, bpftool (vmlinux
# regeneration), python3 (script probes) and python3-venv (the test receivers' packages),
# util-linux (losetup, setpriv, unshare, nsenter), iproute2 (loopback in the package tests' network
# namespace), binutils (readelf), systemd (systemd-analyze), busybox-static (a shell for
# the package scriptlets in an empty install root); the middleware servers and the JDK the
# middleware probes' tests run for real (probes/*/tests); golang-go (`go tool pprof` reads
# stackprobe's profiles), nodejs (a JIT runtime's perf map, for stackprobe) and chromium
# (renders the served flame graphs headless); e2fsprogs
# and mount (ioprobe's page-cache test formats and mounts an ext4 loop device).
APT_PACKAGES=(clang libelf-dev zlib1g-dev libssl-dev pkg-config make gcc g++ bpftool e2fsprogs mount
              rpm rpmlint dpkg-dev busybox-static systemd iproute2 binutils
              podman runc uidmap fuse-overlayfs slirp4netns buildah containerd
              prometheus python3 python3-venv util-linux procps curl ca-certificates
              nginx haproxy dnsmasq bind9 bind9-dnsutils rabbitmq-server redis-server redis-tools
              postgresql mariadb-server wrk kcat default-jdk-headless golang-go nodejs chromium)

TARGET_ROOT="${CARGO_TARGET_DIR:-target}"

check() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "build.sh --check: run as root (apt-get)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # The middleware servers the probe tests start themselves (nginx, named, dnsmasq, redis,
    # rabbitmq, postgresql) must not start as system services on install: a policy-rc.d that
    # refuses (invoke-rc.d's convention), only for this install and only if the host has none.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 0755 "$policy" && own_policy=1
    fi
    apt-get update -qq
    local rc=0
    apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null || rc=$?
    [ "$own_policy" = 0 ] || rm -f "$policy"
    [ "$rc" = 0 ] || exit "$rc"
    if ! command -v cargo >/dev/null 2>&1; then
        echo "build.sh --check: no Rust toolchain; install one with rustup (rust >= 1.88)" >&2
        exit 1
    fi
}

# The python packages the tests' real receivers need (Tansu broker, kafka-python, OTLP protobuf
# classes, pytest for the package tests), pinned in framework/tests/requirements.txt, in a virtual
# environment: Debian's system python refuses `pip install` into itself. Reinstalled only when
# the requirements change.
test_venv() {
    local venv="$TARGET_ROOT/test-venv" req=framework/tests/requirements.txt
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

# --- Probe selection (tailoring) -------------------------------------------------------------

# probes/shipped.list: NAME DIR SOURCE per line.
NAMES=() DIRS=() SOURCES=()
while read -r name dir source _; do
    case "$name" in ''|'#'*) continue ;; esac
    NAMES+=("$name"); DIRS+=("$dir"); SOURCES+=("$source")
done < probes/shipped.list

# Upstream HEAD's -DENABLE_<X> probe switches; the ones without a probe in this tree select
# nothing (there is nothing to leave out).
UPSTREAM_PROBES=" BASEINFO VIRT FLAMEGRAPH L7 TCP SOCKET IO PROC JVM POSTGRE_SLI OPENGAUSS_SLI NGINX LVS KAFKA TPROFILING HW KSLI CONTAINER SERMANT SLI FLOWTRACER "
# Upstream's feature switches: always built here.
UPSTREAM_FEATURES=" ENABLE_REPORT_EVENT KAFKA_CHANNEL FLAMEGRAPH_SVG L4_TOA "

# A probe's upstream REST name, from the `probe` group of its .meta ("" when it has none).
rest_name() {
    sed -n 's/^[[:space:]]*rest_name[[:space:]]*=[[:space:]]*"\([a-z0-9_]*\)";.*/\1/p' "${DIRS[$1]}/${NAMES[$1]}.meta"
}

# The switch a probe is tailored by (rpm spec: --without KEY; -DENABLE_<KEY>=0): its REST name,
# else its name.
tailor_key() { local r; r="$(rest_name "$1")"; echo "${r:-${NAMES[$1]}}"; }

# Indexes of the shipped probes that token $1 names: by name or REST name, else by folder.
match_probes() {
    local tok="$1" i found=()
    for i in "${!NAMES[@]}"; do
        if [ "${NAMES[$i]}" = "$tok" ] || [ "$(rest_name "$i")" = "$tok" ]; then found+=("$i"); fi
    done
    if [ ${#found[@]} -eq 0 ]; then
        for i in "${!NAMES[@]}"; do
            [ "$(basename "${DIRS[$i]}")" = "$tok" ] && found+=("$i")
        done
    fi
    echo "${found[*]}"
}

# SELECTED[i]=1 for the probes in the build, from --probes and -DENABLE_<X>=0.
declare -A SELECTED=()
select_probes() {
    local i tok idx
    for i in "${!NAMES[@]}"; do SELECTED[$i]=1; done
    if [ -n "$PROBES_ARG" ]; then
        for i in "${!NAMES[@]}"; do SELECTED[$i]=0; done
        for tok in ${PROBES_ARG//,/ }; do
            idx="$(match_probes "$tok")"
            if [ -z "$idx" ]; then
                echo "build.sh: --probes: no probe \"$tok\"; the probes: $(probe_names_help)" >&2; exit 2
            fi
            for i in $idx; do SELECTED[$i]=1; done
        done
    fi
    for tok in "${DISABLED[@]}"; do
        idx="$(match_probes "${tok,,}")"
        if [ -n "$idx" ]; then
            for i in $idx; do SELECTED[$i]=0; done
        elif [[ "$UPSTREAM_PROBES" == *" $tok "* ]]; then
            echo "build.sh: -DENABLE_$tok=0: this tree has no such probe (nothing to leave out)" >&2
        else
            echo "build.sh: -DENABLE_$tok: unknown probe; the probes: $(probe_names_help)" >&2; exit 2
        fi
    done
    local any=0
    for i in "${!NAMES[@]}"; do [ "${SELECTED[$i]}" = 1 ] && any=1; done
    [ "$any" = 1 ] || { echo "build.sh: the selection leaves no probe" >&2; exit 2; }
}

probe_names_help() {
    local i r out=()
    for i in "${!NAMES[@]}"; do
        r="$(rest_name "$i")"
        out+=("${NAMES[$i]}${r:+ (${r})}")
    done
    local IFS=,; echo "${out[*]}"
}

tailored() { local i; for i in "${!NAMES[@]}"; do [ "${SELECTED[$i]}" = 1 ] || return 0; done; return 1; }

# --- Build ----------------------------------------------------------------------------------

release_build() {
    select_probes
    local i excludes=() chosen=()
    for i in "${!NAMES[@]}"; do
        if [ "${SELECTED[$i]}" = 1 ]; then
            chosen+=("${NAMES[$i]}")
        elif [ "${SOURCES[$i]}" = cargo ]; then
            excludes+=(--exclude "${NAMES[$i]}")
        fi
    done
    if tailored; then
        # The daemon is built knowing its probes (framework/src/control/merge.rs).
        GG_PROBES="$(IFS=,; echo "${chosen[*]}")"
        export GG_PROBES
        echo "build.sh: tailored build: ${GG_PROBES}"
    else
        unset GG_PROBES
    fi
    cargo build --workspace --release "${excludes[@]}"
}

# --- Packages -------------------------------------------------------------------------------

workspace_version() {
    sed -n '/^\[workspace.package\]/,/^\[/s/^version[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' Cargo.toml
}

packages() {
    local version spec_version pkgdir="${PACKAGE_DIR:-$TARGET_ROOT/packages}"
    version="$(workspace_version)"
    spec_version="$(sed -n 's/^Version:[[:space:]]*//p' conf/rpm/gala-gopher.spec)"
    if [ "$version" != "$spec_version" ]; then
        echo "build.sh: conf/rpm/gala-gopher.spec Version $spec_version != workspace version $version" >&2
        exit 1
    fi
    mkdir -p "$pkgdir"
    pkgdir="$(cd "$pkgdir" && pwd)"
    rm -f "$pkgdir"/gala-gopher[-_]*
    local started=$SECONDS
    source_tarball "$version" "$pkgdir"
    rpm_packages "$pkgdir"
    deb_package "$version" "$pkgdir"
    echo "build.sh: packages in $pkgdir ($((SECONDS - started)) s):"
    (cd "$pkgdir" && ls -l gala-gopher[-_]*)
}

# gala-gopher-VERSION.tar.gz: the source files git knows or would add (not ignored), as in the
# working tree, plus every crate `cargo vendor`ed into vendor/ and .cargo/config.toml pointing
# cargo at it.
source_tarball() {
    local version="$1" pkgdir="$2" name="gala-gopher-$1" stage
    stage="$(mktemp -d)"
    mkdir "$stage/$name"
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$stage/$name"
    else
        tar --exclude=./target --exclude=./vendor -cf - . | tar -xf - -C "$stage/$name"
    fi
    mkdir -p "$stage/$name/.cargo"
    (cd "$stage/$name" && cargo vendor --locked --versioned-dirs vendor > .cargo/config.toml 2> "$stage/vendor.log") ||
        { cat "$stage/vendor.log" >&2; exit 1; }
    grep -q '^directory = "vendor"' "$stage/$name/.cargo/config.toml" ||
        { echo "build.sh: cargo vendor printed no source replacement" >&2; exit 1; }
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" \
        -C "$stage" -czf "$pkgdir/$name.tar.gz" "$name"
    rm -rf "$stage"
}

# The rpm (built in place from this tree's release build, which %build then skips: rpmbuild's
# build environment — CFLAGS, PKG_CONFIG_PATH — would make cargo rebuild the C crates) and the
# source rpm (the vendored tarball + spec).
# --nodeps: a Debian build host has no rpm database of the BuildRequires.
rpm_packages() {
    local pkgdir="$1" top i without=()
    top="$(mktemp -d)"
    for i in "${!NAMES[@]}"; do
        if [ "${SELECTED[$i]}" != 1 ]; then
            local key; key="$(tailor_key "$i")"
            grep -q "^%bcond_without $key\$" conf/rpm/gala-gopher.spec || {
                echo "build.sh: conf/rpm/gala-gopher.spec has no %bcond_without $key" >&2; exit 1; }
            without+=(--without "$key")
        fi
    done
    local defs=(--define "_topdir $top" --define "_sourcedir $pkgdir" --define "_srcrpmdir $pkgdir"
                --define "_rpmdir $pkgdir" --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm"
                --define "gg_release $PKG_RELEASE")
    rpmbuild --quiet -bs --nodeps "${defs[@]}" conf/rpm/gala-gopher.spec >/dev/null
    rpmbuild --quiet -bb --build-in-place --nodeps --without check --define "gg_prebuilt 1" "${without[@]}" "${defs[@]}" \
        conf/rpm/gala-gopher.spec > "$top/rpmbuild.log" 2>&1 || { cat "$top/rpmbuild.log" >&2; exit 1; }
    rm -rf "$top"
}

# The .deb: install.sh's layout staged, dpkg-shlibdeps for Depends, conf/deb's maintainer scripts.
# dpkg-deb rather than cargo-deb: install.sh stays the one description of the layout (the rpm's
# %install runs it too), and nothing beyond dpkg-dev is needed.
deb_package() {
    local version="$1" pkgdir="$2" stage arch depends
    stage="$(mktemp -d)"
    ./install.sh --prefix "$stage/root" >/dev/null
    arch="$(dpkg --print-architecture)"
    mkdir -p "$stage/debian" "$stage/root/DEBIAN"
    printf 'Source: gala-gopher\n\nPackage: gala-gopher\nArchitecture: any\n' > "$stage/debian/control"
    local elfs=()
    mapfile -t elfs < <(cd "$stage" && find root -type f -perm -u+x -exec sh -c 'head -c4 "$1" | grep -q ELF' _ {} \; -print)
    depends="$(cd "$stage" && dpkg-shlibdeps -O "${elfs[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
    (cd "$stage/root" && find etc -type f | sed 's|^|/|') > "$stage/root/DEBIAN/conffiles"
    sed -e "s/@VERSION@/$version-$PKG_RELEASE/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" \
        -e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$stage/root" | cut -f1)/" conf/deb/control.in > "$stage/root/DEBIAN/control"
    install -m 0755 conf/deb/postinst conf/deb/prerm conf/deb/postrm "$stage/root/DEBIAN/"
    dpkg-deb --root-owner-group -Zxz --build "$stage/root" "$pkgdir/gala-gopher_${version}-${PKG_RELEASE}_${arch}.deb" >/dev/null
    rm -rf "$stage"
}

# --- Container image ------------------------------------------------------------------------

# The busybox applets the image links beside /bin/busybox: a shell for the entrypoint, script
# probes and `count` start checks, and a few tools to look around (podman exec).
IMAGE_APPLETS=(sh cat ls ps grep sed awk head tail wc tr cut sleep kill env id printf echo test
               mkdir rm mv cp ln chmod date uname hostname mount umount chroot nsenter)

# podman with its storage, run root and containers.conf under target/podman: the build depends
# on no global podman state. runc, the cgroupfs manager and no default ulimits: crun refuses
# hybrid cgroups, and the default ulimits need CAP_SYS_RESOURCE (framework/container/src/podman.rs).
image_podman() {
    local dir
    mkdir -p "$TARGET_ROOT/podman/run"
    dir="$(cd "$TARGET_ROOT/podman" && pwd)"
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' \
        > "$dir/containers.conf"
    CONTAINERS_CONF="$dir/containers.conf" podman --root "$dir/storage" --runroot "$dir/run" \
        --runtime runc --cgroup-manager=cgroupfs "$@"
}

# The image's root filesystem in $1: install.sh's layout, busybox, the shared libraries of every
# ELF file (the paths ldd resolves on this host, and the dynamic loader), the account files.
image_rootfs() {
    local root="$1" d link applet f lib
    rm -rf "$root"
    mkdir -p "$root"
    # The host's merged-/usr links (/lib -> usr/lib, …), so that a library lands once whichever
    # of its two paths ldd names.
    for d in bin sbin lib lib64; do
        if [ -L "/$d" ]; then
            link="$(readlink "/$d")"
            mkdir -p "$root/${link#/}"
            ln -s "$link" "$root/$d"
        fi
    done
    ./install.sh --prefix "$root" >/dev/null
    install -D -m 0755 conf/container/entrypoint.sh "$root/usr/bin/gala-gopher-entrypoint"
    [ -x /bin/busybox ] || { echo "build.sh --image: /bin/busybox missing (apt-get install busybox-static)" >&2; exit 1; }
    install -D -m 0755 /bin/busybox "$root/usr/bin/busybox"
    mkdir -p "$root/bin"
    local applets
    applets="$(/bin/busybox --list)"
    for applet in "${IMAGE_APPLETS[@]}"; do
        grep -qx "$applet" <<< "$applets" ||
            { echo "build.sh --image: busybox has no applet $applet" >&2; exit 1; }
        [ -e "$root/bin/$applet" ] || ln -s /usr/bin/busybox "$root/bin/$applet"
    done
    local elfs=() libs=() deps
    mapfile -t elfs < <(find "$root" -type f -perm -u+x -exec sh -c 'head -c4 "$1" | grep -q ELF' _ {} \; -print)
    for f in "${elfs[@]}"; do
        # "not a dynamic executable" (busybox-static): nothing to copy.
        deps="$(ldd "$f" 2>/dev/null)" || continue
        if grep -q 'not found' <<< "$deps"; then
            echo "build.sh --image: $f: a library is missing on this host:" >&2; echo "$deps" >&2; exit 1
        fi
        # "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)", and the loader "/lib64/ld-….so.2 (0x…)".
        mapfile -t -O "${#libs[@]}" libs < <(awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<< "$deps")
    done
    [ ${#libs[@]} -gt 0 ] || { echo "build.sh --image: ldd found no libraries (no dynamic loader?)" >&2; exit 1; }
    mapfile -t libs < <(printf '%s\n' "${libs[@]}" | sort -u)
    for lib in "${libs[@]}"; do
        [ -e "$root$lib" ] || cp -L --parents "$lib" "$root/"
    done
    mkdir -p "$root/etc" "$root/root" "$root/tmp" "$root/run" "$root/var/log/gala-gopher" \
        "$root/proc" "$root/sys" "$root/dev"
    chmod 1777 "$root/tmp"
    chmod 0700 "$root/root"
    chmod 0750 "$root/var/log/gala-gopher"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$root/etc/nsswitch.conf"
    # CA certificates for the Kafka sink's TLS (librdkafka reads OpenSSL's default locations).
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
        mkdir -p "$root/usr/lib/ssl"
        ln -s /etc/ssl/certs "$root/usr/lib/ssl/certs"
        ln -s /etc/ssl/certs/ca-certificates.crt "$root/usr/lib/ssl/cert.pem"
    fi
}

# localhost/gala-gopher:VERSION from conf/container/Containerfile over the root filesystem,
# saved as gala-gopher-image-VERSION.tar beside the packages.
image() {
    # The binaries of this invocation's --release, else of a release build run now (cargo leaves
    # an up-to-date one as it is).
    [[ " ${ACTIONS[*]} " == *" --release "* ]] || release_build
    local version context tag pkgdir="${PACKAGE_DIR:-$TARGET_ROOT/packages}" started=$SECONDS
    version="$(workspace_version)"
    tag="localhost/gala-gopher:$version"
    context="$TARGET_ROOT/image"
    image_rootfs "$context/rootfs"
    image_podman build --quiet --no-cache --layers=false --build-arg "VERSION=$version" \
        -f conf/container/Containerfile -t "$tag" "$context" >/dev/null
    # The image an earlier build tagged so is left untagged: remove it (this storage only).
    image_podman image prune -f >/dev/null
    mkdir -p "$pkgdir"
    rm -f "$pkgdir/gala-gopher-image-$version.tar"
    image_podman save --quiet --format docker-archive -o "$pkgdir/gala-gopher-image-$version.tar" "$tag"
    echo "build.sh: image $tag in $pkgdir/gala-gopher-image-$version.tar ($((SECONDS - started)) s)"
}

# --- Checks of --test -----------------------------------------------------------------------

# The script probes' tests (probes/*/tests, pytest; probes/conftest.py): each starts the real
# server it watches on loopback and runs the probe alone and as a drop-in of the debug daemon
# that `cargo test` just built.
probe_tests() {
    local started=$SECONDS
    PYTHONDONTWRITEBYTECODE=1 GG_DAEMON="$(cd "$TARGET_ROOT/debug" && pwd)/gala-gopher" \
        "$GG_TEST_PYTHON" -m pytest -q -p no:cacheprovider --durations=15 probes
    echo "probe tests: $((SECONDS - started)) s"
}

# Install the release build into a temp prefix and check the layout (every probe of
# probes/shipped.list included) and the shipped config.
install_check() {
    local prefix
    prefix="$(mktemp -d)"
    ./install.sh --prefix "$prefix" >/dev/null
    # The fixed layout, then every probe of probes/shipped.list with its .meta.
    local expected=(usr/bin/gala-gopher usr/bin/gopher-ctl etc/gala-gopher/gala-gopher.conf
                    etc/gala-gopher/gala-gopher-app.conf etc/gala-gopher/probes.init
                    usr/lib/systemd/system/gala-gopher.service
                    usr/share/gala-gopher/systemd/legacy-kernel.conf usr/share/doc/gala-gopher/README.md
                    opt/gala-gopher/sdk/gala_probe.py opt/gala-gopher/sdk/gala_probe.sh
                    opt/gala-gopher/sdk/gala_middleware.py opt/gala-gopher/meta)
    local i
    for i in "${!NAMES[@]}"; do
        if [ "${SOURCES[$i]}" = cargo ]; then
            expected+=("opt/gala-gopher/probes/${NAMES[$i]}")
        else
            expected+=("opt/gala-gopher/probes/${SOURCES[$i]}")
        fi
        expected+=("opt/gala-gopher/probes/${NAMES[$i]}.meta")
    done
    local missing=0 f
    for f in "${expected[@]}"; do
        if [ ! -e "$prefix/$f" ]; then echo "install check: missing $f" >&2; missing=1; fi
    done
    "$prefix/usr/bin/gala-gopher" --check-config -c "$prefix/etc/gala-gopher/gala-gopher.conf" >/dev/null
    rm -rf "$prefix"
    [ "$missing" -eq 0 ] || exit 1
    echo "install check: layout and shipped config OK"
}

# The packages of the release build (just made by --release), checked by
# framework/tests/packaging (pytest): layout, rpmlint, empty-root install/upgrade/removal,
# the .deb, a tailored build, the offline build of the vendored source.
package_check() {
    local started=$SECONDS
    GG_PACKAGE_DIR="$(cd "${PACKAGE_DIR:-$TARGET_ROOT/packages}" && pwd)" \
        "$GG_TEST_PYTHON" -m pytest -q -p no:cacheprovider framework/tests/packaging
    echo "package check: $((SECONDS - started)) s"
}

# --- Arguments ------------------------------------------------------------------------------

[ $# -eq 0 ] && { usage; exit 0; }
ACTIONS=() PROBES_ARG="" DISABLED=() NO_PACKAGES=0 PKG_RELEASE=1 PACKAGE_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h) usage; exit 0 ;;
        --check|--clean|--release|--image|--debug|--test) ACTIONS+=("$1") ;;
        --probes) PROBES_ARG="${2:?--probes needs a list}"; shift ;;
        --probes=*) PROBES_ARG="${1#--probes=}" ;;
        -DENABLE_*=0) tok="${1#-DENABLE_}"; DISABLED+=("${tok%=0}") ;;
        -DENABLE_*=1) ;;
        -D*=[01])
            tok="${1#-D}"; tok="${tok%=?}"
            if [[ "$UPSTREAM_FEATURES" == *" $tok "* ]]; then
                echo "build.sh: $1: ignored ($tok is always built here)" >&2
            else
                echo "build.sh: unknown option $1" >&2; usage >&2; exit 2
            fi ;;
        --no-packages) NO_PACKAGES=1 ;;
        --pkg-release=*)
            PKG_RELEASE="${1#--pkg-release=}"
            case "$PKG_RELEASE" in ''|*[!0-9]*) echo "build.sh: --pkg-release must be a number" >&2; exit 2 ;; esac ;;
        --package-dir=*) PACKAGE_DIR="${1#--package-dir=}" ;;
        *) echo "build.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for action in --check --clean --release --image --debug --test; do
    [[ " ${ACTIONS[*]} " == *" $action "* ]] || continue
    case "$action" in
        --check) check ;;
        --clean) cargo clean ;;
        --release)
            release_build
            [ "$NO_PACKAGES" = 1 ] || packages ;;
        --image) image ;;
        --debug) cargo build --workspace ;;
        --test)
            lint; test_venv
            cargo_rc=0
            cargo test --workspace --no-fail-fast || cargo_rc=$?
            probe_tests
            [ "$cargo_rc" = 0 ] || exit "$cargo_rc"
            # The packages checked are the full build's.
            PROBES_ARG="" DISABLED=()
            release_build; install_check; packages; package_check ;;
    esac
done
