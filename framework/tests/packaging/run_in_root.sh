#!/usr/bin/env bash
# Runs a command as if ROOT (an install root made by `rpm --root` / `dpkg --root`) were the host:
# meant to run as `unshare --mount --net --propagation private run_in_root.sh ROOT CMD...`.
# ROOT's /etc, /opt and /usr are overlaid on the host's (ROOT's files win, writes land in ROOT),
# /run and /var/log are private tmpfs with the service's RuntimeDirectory/LogsDirectory made as
# systemd would, and the new network namespace has only loopback. The host is not changed.
set -euo pipefail
root="$1"; shift
work="$(mktemp -d)"
for d in etc opt usr; do
    mkdir -p "$root/$d" "$work/$d"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$root/$d,workdir=$work/$d" "/$d"
done
mount -t tmpfs tmpfs /run
install -d -m 0750 /run/gala_gopher
mount -t tmpfs tmpfs /var/log
install -d -m 0750 /var/log/gala-gopher
ip link set lo up
exec "$@"
