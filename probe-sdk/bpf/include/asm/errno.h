/* SPDX-License-Identifier: GPL-2.0 */
/*
 * asm/errno.h for BPF programs: libbpf's <bpf/usdt.bpf.h> includes <linux/errno.h>, which wants
 * the target architecture's <asm/errno.h>; clang -target bpf has no multiarch include directory,
 * and every Linux architecture's errno numbers are the generic ones for what BPF code uses.
 */
#ifndef GG_ASM_ERRNO_H
#define GG_ASM_ERRNO_H
#include <asm-generic/errno.h>
#endif
