// SPDX-License-Identifier: GPL-2.0

//! pvtce's trace events (kmod/pvtce_trace.h, tracefs `events/pvtce/`): one per hypercall pvtce answers and
//! one per window create / link / unlink / release.
//!
//! The 7.3 kernel crate's `declare_trace!` only reaches tracepoints that `kernel::bindings` declares (in-tree
//! headers), so the statics and `rust_do_trace_*` functions that kmod/glue.c defines are declared here, and
//! each event is tested with the same static-key branch `declare_trace!` uses (or, on a kernel without jump
//! labels, C's inline load of the key's count rather than a helper call): a disabled event costs that test
//! and nothing else.

use kernel::bindings;

/// Defines a safe Rust function per event that tests the event's static key and calls its C body.
macro_rules! events {
    ($($(#[$attr:meta])* fn $name:ident($($arg:ident : $ty:ty),*) => $tp:ident, $do:ident;)*) => {
        unsafe extern "C" {
            $(
                static $tp: bindings::tracepoint;
                fn $do($($arg: $ty),*);
            )*
        }
        $(
            $(#[$attr])*
            #[inline(always)]
            pub(crate) fn $name($($arg: $ty),*) {
                // SAFETY: `$tp` is a tracepoint defined by kmod/glue.c (CREATE_TRACE_POINTS), live for as long
                // as the module; reading its static key is always allowed.
                #[cfg(CONFIG_JUMP_LABEL)]
                let on = unsafe { kernel::jump_label::static_branch_unlikely!($tp, bindings::tracepoint, key) };
                // Without jump labels the kernel crate's macro calls the C helper `static_key_count`; C's
                // `static_key_false` is an inline `atomic_read` of the key's count, as this is (READ_ONCE).
                // SAFETY: as above; the count is an aligned `int` that the tracepoint code changes atomically.
                #[cfg(not(CONFIG_JUMP_LABEL))]
                let on = unsafe { core::ptr::addr_of!($tp.key.key.enabled.counter).read_volatile() } > 0;
                if on {
                    // SAFETY: the event's C body takes plain integers by value and may be called from any
                    // context a tracepoint may fire in (no sleeping; it takes the trace buffer's own locks).
                    unsafe { $do($($arg),*) };
                }
            }
        )*
    };
}

events! {
    /// One hypercall answered: `op` its number, `ret` its PAPR code, `changed` guest entries written, `host`
    /// host entries written.
    fn hcall(op: u32, liobn: u64, ioba: u64, npages: u64, ret: i64, changed: u64, host: u64)
        => __tracepoint_pvtce_hcall, rust_do_trace_pvtce_hcall;
    /// A window pvtce took (`KVM_CREATE_SPAPR_TCE_64`).
    fn window_create(liobn: u64, page_shift: u32, offset: u64, size: u64, links: u32)
        => __tracepoint_pvtce_window_create, rust_do_trace_pvtce_window_create;
    /// A window linked to one more host table (`links` after).
    fn window_link(liobn: u64, page_shift: u32, offset: u64, size: u64, links: u32)
        => __tracepoint_pvtce_window_link, rust_do_trace_pvtce_window_link;
    /// A window's link to a group's table dropped (`links` after).
    fn window_unlink(liobn: u64, page_shift: u32, offset: u64, size: u64, links: u32)
        => __tracepoint_pvtce_window_unlink, rust_do_trace_pvtce_window_unlink;
    /// A window released (its table fd's last reference).
    fn window_release(liobn: u64, page_shift: u32, offset: u64, size: u64, links: u32)
        => __tracepoint_pvtce_window_release, rust_do_trace_pvtce_window_release;
}
