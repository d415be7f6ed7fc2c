/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Page-cache helpers shared by the eBPF probes (ioprobe's io_pagecache, taskprobe's proc_page):
 * the page count of a folio across kernel layouts, and the device of a mapping. Include after
 * vmlinux.h and bpf_core_read.h. */
#ifndef GG_FOLIO_H
#define GG_FOLIO_H

/* Before 6.17 (memdesc_flags_t), folio->flags was a plain unsigned long; before 6.13 the page
 * count of a large folio was _folio_nr_pages. */
struct folio___flags_ulong {
	unsigned long flags;
} __attribute__((preserve_access_index));

struct folio___folio_nr_pages {
	unsigned int _folio_nr_pages;
} __attribute__((preserve_access_index));

/* folio_nr_pages(): 1 for a small folio, else the large folio's page count. @folio is a BTF
 * pointer (a tp_btf argument or a field read from one). */
static __always_inline __u64 gg_folio_pages(struct folio *folio)
{
	unsigned long flags;

	if (bpf_core_type_exists(memdesc_flags_t))
		flags = folio->flags.f;
	else
		flags = BPF_CORE_READ((struct folio___flags_ulong *)folio, flags);
	if (!(flags & (1UL << bpf_core_enum_value(enum pageflags, PG_head))))
		return 1;
	if (bpf_core_field_exists(folio->_nr_pages))
		return folio->_nr_pages;
	if (bpf_core_field_exists(((struct folio___folio_nr_pages *)folio)->_folio_nr_pages))
		return BPF_CORE_READ((struct folio___folio_nr_pages *)folio, _folio_nr_pages);
	return 1UL << (BPF_CORE_READ(folio, _flags_1) & 0xff);
}

/* The device of a mapping's file system (0 for none). tp_btf arguments are BTF pointers: the
 * chain is read with plain loads (a NULL past the argument reads as 0). An argument the kernel
 * may pass as NULL must be checked, hence the test. */
static __always_inline __u32 gg_mapping_dev(struct address_space *m)
{
	if (!m)
		return 0;
	return m->host->i_sb->s_dev;
}

/* The range [index, last_index] of pages a filemap tracepoint names (0 if not ordered). */
static __always_inline __u64 gg_pages_in(unsigned long index, unsigned long last_index)
{
	return last_index >= index ? last_index - index + 1 : 0;
}

#endif
