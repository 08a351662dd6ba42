//! pvtce-vmm-glue: the VMM side of pvtce.
//!
//! - [`sys`]: the ioctl edge (numbers from `libc::_IO*`, right on powerpc; structs with layout asserts).
//! - [`kvm`]: a PAPR guest under KVM-HV (VM, memory slots, TCE windows, the KVM VFIO device, vCPUs).
//! - [`vfio`]: a VFIO sPAPR v2 container, groups and devices.
//! - [`mem`]: shmem-backed guest RAM.
//! - [`pvtce`]: pvtce.ko's ioctls: the control device /dev/pvtce and a window's statistics.
//! - [`rtas`]: `H_RTAS` and the four dynamic DMA window calls over pvtce-core's policy.
//! - [`windows`]: a PE's windows made real (VFIO host window + kernel window and link, or the fallback).
//! - [`fallback`]: TCE hypercalls finished in userspace with pvtce-core, the host table written with VFIO.

pub mod error;
pub mod fallback;
pub mod kvm;
pub mod mem;
pub mod pvtce;
pub mod rtas;
pub mod sys;
pub mod vfio;
pub mod windows;

pub use error::{Error, Result};
