/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pvtce's trace events (tracefs: events/pvtce/). Defined here in C because the 7.3 kernel crate's
 * declare_trace! only reaches tracepoints that kernel::bindings knows (in-tree headers); kmod/trace.rs calls the
 * rust_do_trace_* functions this header makes (CREATE_RUST_TRACE_POINTS in kmod/glue.c) behind the same
 * static-key test declare_trace! uses. docs/observability.md documents the fields.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM pvtce
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE pvtce_trace

#if !defined(_PVTCE_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _PVTCE_TRACE_H

#include <linux/tracepoint.h>

/* One hypercall pvtce answered: op is the PAPR hypercall number (0x20 H_PUT_TCE, 0x13c H_PUT_TCE_INDIRECT,
 * 0x138 H_STUFF_TCE, 0x1c H_GET_TCE); ret its PAPR return code; changed the guest entries written; host the
 * host (hardware) entries written. */
TRACE_EVENT(pvtce_hcall,
	TP_PROTO(u32 op, u64 liobn, u64 ioba, u64 npages, s64 ret, u64 changed, u64 host),
	TP_ARGS(op, liobn, ioba, npages, ret, changed, host),
	TP_STRUCT__entry(
		__field(u32, op)
		__field(u64, liobn)
		__field(u64, ioba)
		__field(u64, npages)
		__field(s64, ret)
		__field(u64, changed)
		__field(u64, host)
	),
	TP_fast_assign(
		__entry->op = op;
		__entry->liobn = liobn;
		__entry->ioba = ioba;
		__entry->npages = npages;
		__entry->ret = ret;
		__entry->changed = changed;
		__entry->host = host;
	),
	TP_printk("op=0x%x liobn=0x%llx ioba=0x%llx npages=%llu ret=%lld changed=%llu host=%llu",
		  __entry->op, __entry->liobn, __entry->ioba, __entry->npages, __entry->ret, __entry->changed,
		  __entry->host)
);

/* A window's life: created (KVM_CREATE_SPAPR_TCE_64 taken by pvtce), linked to a host table, unlinked from
 * one (the group left the KVM VFIO device), released (its fd's last reference). links is the count after. */
DECLARE_EVENT_CLASS(pvtce_window_class,
	TP_PROTO(u64 liobn, u32 page_shift, u64 offset, u64 size, u32 links),
	TP_ARGS(liobn, page_shift, offset, size, links),
	TP_STRUCT__entry(
		__field(u64, liobn)
		__field(u32, page_shift)
		__field(u64, offset)
		__field(u64, size)
		__field(u32, links)
	),
	TP_fast_assign(
		__entry->liobn = liobn;
		__entry->page_shift = page_shift;
		__entry->offset = offset;
		__entry->size = size;
		__entry->links = links;
	),
	TP_printk("liobn=0x%llx page_shift=%u offset=0x%llx size=%llu links=%u", __entry->liobn,
		  __entry->page_shift, __entry->offset, __entry->size, __entry->links)
);

DEFINE_EVENT(pvtce_window_class, pvtce_window_create,
	TP_PROTO(u64 liobn, u32 page_shift, u64 offset, u64 size, u32 links),
	TP_ARGS(liobn, page_shift, offset, size, links));
DEFINE_EVENT(pvtce_window_class, pvtce_window_link,
	TP_PROTO(u64 liobn, u32 page_shift, u64 offset, u64 size, u32 links),
	TP_ARGS(liobn, page_shift, offset, size, links));
DEFINE_EVENT(pvtce_window_class, pvtce_window_unlink,
	TP_PROTO(u64 liobn, u32 page_shift, u64 offset, u64 size, u32 links),
	TP_ARGS(liobn, page_shift, offset, size, links));
DEFINE_EVENT(pvtce_window_class, pvtce_window_release,
	TP_PROTO(u64 liobn, u32 page_shift, u64 offset, u64 size, u32 links),
	TP_ARGS(liobn, page_shift, offset, size, links));

#endif /* _PVTCE_TRACE_H */

#include <trace/define_trace.h>
