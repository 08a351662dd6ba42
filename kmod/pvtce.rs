// SPDX-License-Identifier: GPL-2.0

//! pvtce: PAPR TCE hypercalls (H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE, H_GET_TCE) handled in the host
//! kernel, written straight into the host IOMMU tables of the VFIO group linked to a guest DMA window.
//!
//! pvtce registers itself as KVM's sPAPR TCE backend (patches/linux/0003): windows created with
//! `KVM_CREATE_SPAPR_TCE_64` while it is loaded (and in `PVTCE_MODE_PVTCE`) are pvtce's; the others stay
//! Linux's built-in ones. `pvtce-core` decides; this module executes.
//!
//! - [`control`]: `/dev/pvtce` (mode, host-table read, window list) and the backend registration.
//! - [`window`]: window objects, their registry and the entry points the backend hooks call.
//! - [`host`]: pvtce-core's `Host` over memslots, preregistered memory and the hardware tables.
//! - [`store`]: the guest-visible table's pages.
//! - [`ffi`]: the one FFI edge (powerpc IOMMU/KVM functions and kmod/glue.c).

use kernel::miscdevice::{MiscDeviceOptions, MiscDeviceRegistration};
use kernel::prelude::*;

mod control;
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

    use kernel::ioctl::_IOWR;
    pub(crate) const PVTCE_WINDOW_INFO: u32 = _IOWR::<pvtce_window_info>(PVTCE_IOCTL_TYPE, 0x00);
    pub(crate) const PVTCE_SET_MODE: u32 = _IOWR::<pvtce_mode>(PVTCE_IOCTL_TYPE, 0x01);
    pub(crate) const PVTCE_HOST_READ: u32 = _IOWR::<pvtce_host_read>(PVTCE_IOCTL_TYPE, 0x02);
    pub(crate) const PVTCE_LIST_WINDOWS: u32 = _IOWR::<pvtce_windows>(PVTCE_IOCTL_TYPE, 0x03);
    pub(crate) const PVTCE_WINDOW_EXCHANGE: u32 = _IOWR::<pvtce_exchange>(PVTCE_IOCTL_TYPE, 0x04);

    macro_rules! plain {
        ($($t:ty),*) => {$(
            // SAFETY: plain integer fields with no padding (bindgen's layout asserts fix every offset); any
            // bit pattern is a valid value.
            unsafe impl kernel::transmute::FromBytes for $t {}
            // SAFETY: as above, and there are no padding bytes to leak.
            unsafe impl kernel::transmute::AsBytes for $t {}
        )*};
    }
    plain!(pvtce_window_info, pvtce_mode, pvtce_host_read, pvtce_windows, pvtce_exchange);
}

module! {
    type: Pvtce,
    name: "pvtce",
    authors: ["pvtce developers"],
    description: "PAPR TCE hypercalls handled in the host kernel",
    license: "GPL",
}

#[pin_data(PinnedDrop)]
struct Pvtce {
    _backend: control::Backend,
    #[pin]
    _control: MiscDeviceRegistration<control::Control>,
}

impl kernel::InPlaceModule for Pvtce {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _backend: {
                let b = control::Backend::register()?;
                pr_info!("loaded (PAGE_SIZE {}, new windows: {})\n", kernel::page::PAGE_SIZE, control::mode_name());
                b
            },
            _control <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"pvtce" }),
        })
    }
}

#[pinned_drop]
impl PinnedDrop for Pvtce {
    fn drop(self: Pin<&mut Self>) {
        pr_info!("unloaded ({} windows left)\n", window::count());
    }
}
