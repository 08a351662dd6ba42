// SPDX-License-Identifier: GPL-2.0

//! pvtce: PAPR TCE hypercalls (H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE, H_GET_TCE) handled in the host
//! kernel, written straight into the host IOMMU tables of the VFIO group linked to a guest DMA window.
//!
//! pvtce registers itself as KVM's sPAPR TCE backend (patches/linux/0003): windows created with
//! `KVM_CREATE_SPAPR_TCE_64` while it is loaded (and in `PVTCE_MODE_PVTCE`) are pvtce's; the others stay
//! Linux's built-in ones. `pvtce-core` decides; this module executes.
//!
//! - [`window`]: window objects, their registry and the entry points the backend hooks call.
//! - [`host`]: pvtce-core's `Host` over memslots, preregistered memory and the hardware tables.
//! - [`store`]: the guest-visible table's pages.
//! - [`ffi`]: the one FFI edge (powerpc IOMMU/KVM functions and kmod/glue.c).

use kernel::prelude::*;

mod ffi;
mod host;
#[allow(dead_code, unreachable_pub)]
mod pvtce_core;
mod store;
mod window;

/// pvtce's ioctl ABI (`uapi/include/linux/pvtce.h`): the bindgen output shared with userspace, and the
/// numbers computed by the kernel's own `_IOWR`.
#[allow(dead_code, non_camel_case_types, unreachable_pub, clippy::all)]
mod uapi {
    include!("../uapi/src/bindings.rs");

    pub(crate) const PVTCE_WINDOW_INFO: u32 =
        kernel::ioctl::_IOWR::<pvtce_window_info>(PVTCE_IOCTL_TYPE, 0x00);

    // SAFETY: plain integer fields with no padding (bindgen's layout asserts fix every offset); any bit
    // pattern is a valid value.
    unsafe impl kernel::transmute::FromBytes for pvtce_window_info {}
    // SAFETY: as above, and no padding bytes to leak.
    unsafe impl kernel::transmute::AsBytes for pvtce_window_info {}
}

module! {
    type: Pvtce,
    name: "pvtce",
    authors: ["pvtce developers"],
    description: "PAPR TCE hypercalls handled in the host kernel",
    license: "GPL",
}

struct Pvtce;

impl kernel::Module for Pvtce {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // SAFETY: called once, before the backend is registered (nothing can use the registry yet).
        unsafe { window::WINDOWS.init() };
        ffi::register_backend()?;
        pr_info!("loaded (PAGE_SIZE {})\n", kernel::page::PAGE_SIZE);
        Ok(Pvtce)
    }
}

impl Drop for Pvtce {
    fn drop(&mut self) {
        // No window can be left: each window's file holds a reference on the module.
        ffi::unregister_backend();
        pr_info!("unloaded ({} windows left)\n", window::count());
    }
}
