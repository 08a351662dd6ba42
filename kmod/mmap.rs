// SPDX-License-Identifier: GPL-2.0

//! The table fd's mmap fault: the page at an offset of the mapping, a shadow of the guest-visible table in
//! Linux's layout (kmod/shadow.rs).

use crate::ffi::Page;
use crate::shadow::TCES_PER_PAGE;
use crate::window::KernelWindow;
use core::ffi::{c_ulong, c_void};
use kernel::sync::atomic::Release;
use kernel::sync::{Arc, ArcBorrow};
use kernel::types::ForeignOwnable;

/// The page at `pgoff` of the table fd's mapping, or NULL (SIGBUS) past the window's end or when no page can
/// be had. The page lives as long as the window; glue.c takes the reference the fault hands over.
///
/// # Safety
/// `window` must be the `private_data` of a pvtce window file that the faulting mapping holds.
#[no_mangle]
pub(crate) unsafe extern "C" fn pvtce_rs_window_page(window: *mut c_void, pgoff: c_ulong) -> *mut Page {
    // SAFETY: the mapping holds the window's file, and with it the file's reference on the window.
    let w: ArcBorrow<'_, KernelWindow> = unsafe { <Arc<KernelWindow> as ForeignOwnable>::borrow(window) };
    let entries = w.geometry.size();
    if pgoff.checked_mul(TCES_PER_PAGE).is_none_or(|first| first >= entries) {
        return core::ptr::null_mut();
    }
    let mut guard = w.state.lock();
    // Before any shadow page exists: a lockless H_GET_TCE that loads it set takes the lock (kmod/hcall.rs).
    w.has_shadows.store(true, Release);
    let s = &mut *guard;
    let (window, store) = (&s.window, &s.store);
    s.shadows.page(pgoff, entries, |idx| window.table().get(store, idx).unwrap_or(0))
}
