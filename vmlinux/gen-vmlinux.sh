#!/bin/sh
# Regenerate vmlinux/<arch>/vmlinux.h from a kernel's BTF.
#
# usage: vmlinux/gen-vmlinux.sh [BTF_FILE] [ARCH]
#   BTF_FILE  default /sys/kernel/btf/vmlinux (the running kernel); a vmlinux ELF with BTF or a
#             raw .btf file (e.g. from /opt/gala-gopher/btf/) also works
#   ARCH      Rust target arch directory name, default: this machine's (x86_64, aarch64, riscv64)
#
# Needs bpftool. The header is only used for CO-RE compilation: the BPF objects are relocated
# against the running kernel's BTF at load time, so one header serves many kernels.
set -eu

btf=${1:-/sys/kernel/btf/vmlinux}
arch=${2:-$(uname -m)}
case "$arch" in
arm64) arch=aarch64 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
out="$here/$arch/vmlinux.h"

command -v bpftool >/dev/null 2>&1 || { echo "gen-vmlinux.sh: bpftool not found (apt-get install bpftool)" >&2; exit 1; }
[ -r "$btf" ] || { echo "gen-vmlinux.sh: cannot read $btf" >&2; exit 1; }

mkdir -p "$here/$arch"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
bpftool btf dump file "$btf" format c >"$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out ($(wc -l <"$out") lines) from $btf"
