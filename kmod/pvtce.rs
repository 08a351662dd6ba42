// SPDX-License-Identifier: GPL-2.0

//! pvtce: PAPR TCE hypercalls (H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE, H_GET_TCE) handled in the host
//! kernel, written straight into the host IOMMU tables of the VFIO group linked to a guest DMA window.
//!
//! pvtce registers itself as KVM's sPAPR TCE backend (patches/linux/0003): windows created with
//! `KVM_CREATE_SPAPR_TCE_64` while it is loaded (and in `PVTCE_MODE_PVTCE`) are pvtce's; the others stay
//! Linux's built-in ones. `pvtce-core` decides; this module executes.
//!
//! Files by object; each imports only those listed before it (no cycle):
//! - [`trace`]: the trace events (kmod/pvtce_trace.h), used by the files below. [`once`]: `READ_ONCE` on
//!   the kernel crate's atomics (no C helper call on the hypercall path).
//! - [`ffi`]: the KVM side of the C edge: the VM ([`ffi::Vm`], `ARef`-counted), its `kvm->srcu` token, its
//!   mm, the interrupts-off token of the early path; the backend registration and the window file of
//!   kmod/glue.c.
//! - [`iommu`]: the powerpc IOMMU side: hardware tables, `it_userspace`, preregistered memory under RCU.
//! - [`lock`]: the window state's lock, which KVM's early path takes without calling out of the module.
//! - [`store`]: the guest-visible table's pages. [`stats`]: a window's counters. [`shadow`]: the pages
//!   behind the table fd's mmap.
//! - [`host`]: pvtce-core's `Host` over memslots, preregistered memory and the hardware tables.
//! - [`window`]: [`window::KernelWindow`], one guest DMA window (core's `Window` and what it owns).
//! - [`registry`]: every window; the `create_table`, `has_liobn` and table fd release hooks.
//! - [`link`]: the `attach_group` and `release_group` hooks. [`hcall`]: the four hypercall hooks.
//!   [`mmap`]: the table fd's fault. [`ioctl`]: the table fd's ioctls and the argument helpers.
//! - [`control`]: `/dev/pvtce` (mode, host-table read, window list) and the backend's lifetime.

use kernel::miscdevice::{MiscDeviceOptions, MiscDeviceRegistration};
use kernel::prelude::*;
use kernel::sync::atomic::Relaxed;

mod control;
mod ffi;
mod hcall;
mod host;
mod ioctl;
mod iommu;
mod link;
mod lock;
mod mmap;
mod once;
#[allow(dead_code, unreachable_pub)]
mod pvtce_core;
mod registry;
mod shadow;
mod stats;
mod store;
mod trace;
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
    pub(crate) const PVTCE_PARENT_HCALLS: u32 = _IOWR::<pvtce_parent_hcalls>(PVTCE_IOCTL_TYPE, 0x05);
    pub(crate) const PVTCE_L1_TIME: u32 = _IOWR::<pvtce_l1_time>(PVTCE_IOCTL_TYPE, 0x06);

    macro_rules! plain {
        ($($t:ty),*) => {$(
            // SAFETY: plain integer fields with no padding (bindgen's layout asserts fix every offset); any
            // bit pattern is a valid value.
            unsafe impl kernel::transmute::FromBytes for $t {}
            // SAFETY: as above, and there are no padding bytes to leak.
            unsafe impl kernel::transmute::AsBytes for $t {}
        )*};
    }
    plain!(
        pvtce_window_info,
        pvtce_mode,
        pvtce_host_read,
        pvtce_windows,
        pvtce_exchange,
        pvtce_parent_hcalls,
        pvtce_l1_time
    );
}

module! {
    type: Pvtce,
    name: "pvtce",
    authors: ["pvtce developers"],
    description: "PAPR TCE hypercalls handled in the host kernel",
    license: "GPL",
    params: {
        bench_ioctls: bool {
            default: false,
            description: "Offer the benchmark-only PVTCE_WINDOW_EXCHANGE on table fds (ENOTTY when off)",
        },
        backend: bool {
            default: true,
            description: "Register pvtce as KVM's sPAPR TCE backend (benchmark only: 0 loads the control device alone, so Linux's C code answers every TCE hypercall exactly as without the module)",
        },
        early: bool {
            default: true,
            description: "Answer H_GET_TCE and H_PUT_TCE in KVM-HV's early path (kernel patch 0011: right after the guest's exit, interrupts off, nothing that may sleep); 0: the normal hypercall path only",
        },
        inject_run_failure: u64 {
            default: 0,
            description: "Test only: a batched host-table update of at least this many entries that maps something fails half-way, as a refusing parent would (0: never)",
        },
    },
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
                // Before the backend is registered: the early hook reads it from then on.
                hcall::EARLY.store(module_parameters::early.value(), Relaxed);
                host::INJECT_RUN_FAILURE.store(module_parameters::inject_run_failure.value(), Relaxed);
                // SAFETY: the module's init runs once.
                let b = unsafe { control::Backend::register() }?;
                pr_info!(
                    "loaded (PAGE_SIZE {}, new windows: {}, bench_ioctls {}, backend {})\n",
                    kernel::page::PAGE_SIZE,
                    control::mode_name(),
                    module_parameters::bench_ioctls.value(),
                    module_parameters::backend.value()
                );
                b
            },
            _control <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"pvtce" }),
        })
    }
}

#[pinned_drop]
impl PinnedDrop for Pvtce {
    fn drop(self: Pin<&mut Self>) {
        pr_info!("unloaded ({} windows left)\n", registry::count());
    }
}
