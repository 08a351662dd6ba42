//! The ioctl edge: numbers, structs and one typed function per ioctl. Every ioctl's `unsafe` lives here;
//! the two that hand memory to the guest or a device are `unsafe fn` themselves.
//!
//! Numbers come from `libc::_IO`/`_IOR`/`_IOW`/`_IOWR`, which encode the direction and size the way the target
//! architecture does (powerpc puts WRITE=4 in the top 3 bits and the size in 13 bits; the generic layout that
//! vmm-sys-util's `ioctl_*_nr!` macros hard-code is wrong there). Structs mirror the kernel's uAPI headers
//! (`linux/kvm.h`, `asm/kvm.h` for powerpc, `linux/vfio.h`), with size asserts.

#![allow(non_camel_case_types)]

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ptr, ioctl_with_ref, ioctl_with_val};

pub type Ioctl = libc::Ioctl;

pub const KVMIO: u32 = 0xAE;
pub const VFIO_TYPE: u32 = vfio_bindings::bindings::vfio::VFIO_TYPE as u32;
pub const VFIO_BASE: u32 = vfio_bindings::bindings::vfio::VFIO_BASE;

// ---- KVM ----
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_userspace_memory_region {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_create_spapr_tce_64 {
    pub liobn: u64,
    pub page_shift: u32,
    pub flags: u32,
    /// In pages.
    pub offset: u64,
    /// In pages.
    pub size: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_create_device {
    pub type_: u32,
    pub fd: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_device_attr {
    pub flags: u32,
    pub group: u32,
    pub attr: u64,
    pub addr: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_vfio_spapr_tce {
    pub groupfd: i32,
    pub tablefd: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kvm_enable_cap {
    pub cap: u32,
    pub flags: u32,
    pub args: [u64; 4],
    pub pad: [u8; 64],
}

impl Default for kvm_enable_cap {
    fn default() -> Self {
        kvm_enable_cap { cap: 0, flags: 0, args: [0; 4], pad: [0; 64] }
    }
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_ppc_mmuv3_cfg {
    pub flags: u64,
    pub process_table: u64,
}

/// powerpc `struct kvm_regs` (arch/powerpc/include/uapi/asm/kvm.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_regs {
    pub pc: u64,
    pub cr: u64,
    pub ctr: u64,
    pub lr: u64,
    pub xer: u64,
    pub msr: u64,
    pub srr0: u64,
    pub srr1: u64,
    pub pid: u64,
    pub sprg: [u64; 8],
    pub gpr: [u64; 32],
}

/// The head of `struct kvm_run` and the exit union members we read.
pub const KVM_RUN_EXIT_REASON: usize = 8;
pub const KVM_RUN_UNION: usize = 32;

pub const KVM_EXIT_MMIO: u32 = 6;
pub const KVM_EXIT_PAPR_HCALL: u32 = 19;
pub const KVM_CAP_PPC_PAPR: u32 = 68;
pub const KVM_CAP_PPC_ENABLE_HCALL: u32 = 104;
pub const KVM_DEV_TYPE_VFIO: u32 = 4;
/// `KVM_DEV_VFIO_FILE` (formerly `KVM_DEV_VFIO_GROUP`, same value).
pub const KVM_DEV_VFIO_FILE: u32 = 1;
pub const KVM_DEV_VFIO_FILE_ADD: u64 = 1;
pub const KVM_DEV_VFIO_FILE_DEL: u64 = 2;
pub const KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE: u64 = 3;
pub const KVM_PPC_MMUV3_RADIX: u64 = 1;
pub const KVM_PPC_MMUV3_GTSE: u64 = 2;
/// Partition table entry: guest uses radix.
pub const PATB_GR: u64 = 1 << 63;

pub const KVM_GET_API_VERSION: Ioctl = libc::_IO(KVMIO, 0x00);
pub const KVM_CREATE_VM: Ioctl = libc::_IO(KVMIO, 0x01);
pub const KVM_CHECK_EXTENSION: Ioctl = libc::_IO(KVMIO, 0x03);
pub const KVM_GET_VCPU_MMAP_SIZE: Ioctl = libc::_IO(KVMIO, 0x04);
pub const KVM_CREATE_VCPU: Ioctl = libc::_IO(KVMIO, 0x41);
pub const KVM_SET_USER_MEMORY_REGION: Ioctl = libc::_IOW::<kvm_userspace_memory_region>(KVMIO, 0x46);
pub const KVM_RUN: Ioctl = libc::_IO(KVMIO, 0x80);
pub const KVM_GET_REGS: Ioctl = libc::_IOR::<kvm_regs>(KVMIO, 0x81);
pub const KVM_SET_REGS: Ioctl = libc::_IOW::<kvm_regs>(KVMIO, 0x82);
pub const KVM_ENABLE_CAP: Ioctl = libc::_IOW::<kvm_enable_cap>(KVMIO, 0xa3);
pub const KVM_CREATE_SPAPR_TCE_64: Ioctl = libc::_IOW::<kvm_create_spapr_tce_64>(KVMIO, 0xa8);
pub const KVM_PPC_CONFIGURE_V3_MMU: Ioctl = libc::_IOW::<kvm_ppc_mmuv3_cfg>(KVMIO, 0xaf);
pub const KVM_CREATE_DEVICE: Ioctl = libc::_IOWR::<kvm_create_device>(KVMIO, 0xe0);
pub const KVM_SET_DEVICE_ATTR: Ioctl = libc::_IOW::<kvm_device_attr>(KVMIO, 0xe1);

// ---- VFIO ----
// The structs and constants are vfio-bindings' (bindgen of linux/vfio.h; its structs are fixed-width, so the
// x86_64 generation serves powerpc too, and the size asserts below hold on both); only the numbers are ours.
pub use vfio_bindings::bindings::vfio::{
    vfio_eeh_pe_err, vfio_eeh_pe_op, vfio_eeh_pe_op__bindgen_ty_1, vfio_group_status, vfio_iommu_spapr_register_memory,
    vfio_iommu_spapr_tce_create, vfio_iommu_spapr_tce_ddw_info, vfio_iommu_spapr_tce_info, vfio_iommu_spapr_tce_remove,
    vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap, vfio_region_info, VFIO_SPAPR_TCE_v2_IOMMU, VFIO_API_VERSION,
    VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_EEH_PE_DISABLE, VFIO_EEH_PE_ENABLE, VFIO_EEH_PE_GET_STATE,
    VFIO_GROUP_FLAGS_VIABLE, VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
};

// VFIO defines every ioctl with _IO and carries argsz in the struct.
pub const VFIO_GET_API_VERSION: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE);
pub const VFIO_CHECK_EXTENSION: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 1);
pub const VFIO_SET_IOMMU: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 2);
pub const VFIO_GROUP_GET_STATUS: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 3);
pub const VFIO_GROUP_SET_CONTAINER: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 4);
pub const VFIO_GROUP_GET_DEVICE_FD: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 6);
pub const VFIO_DEVICE_GET_REGION_INFO: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 8);
pub const VFIO_IOMMU_SPAPR_TCE_GET_INFO: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 12);
pub const VFIO_IOMMU_SPAPR_REGISTER_MEMORY: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 17);
pub const VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 18);
pub const VFIO_IOMMU_SPAPR_TCE_CREATE: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 19);
pub const VFIO_IOMMU_SPAPR_TCE_REMOVE: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 20);
pub const VFIO_IOMMU_MAP_DMA: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 13);
pub const VFIO_IOMMU_UNMAP_DMA: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 14);
pub const VFIO_EEH_PE_OP: Ioctl = libc::_IO(VFIO_TYPE, VFIO_BASE + 21);

const _: () = {
    assert!(core::mem::size_of::<kvm_userspace_memory_region>() == 32);
    assert!(core::mem::size_of::<kvm_create_spapr_tce_64>() == 32);
    assert!(core::mem::size_of::<kvm_create_device>() == 12);
    assert!(core::mem::size_of::<kvm_device_attr>() == 24);
    assert!(core::mem::size_of::<kvm_vfio_spapr_tce>() == 8);
    assert!(core::mem::size_of::<kvm_enable_cap>() == 104);
    assert!(core::mem::size_of::<kvm_ppc_mmuv3_cfg>() == 16);
    assert!(core::mem::size_of::<kvm_regs>() == 392);
    assert!(core::mem::offset_of!(kvm_regs, gpr) == 136);
    assert!(core::mem::size_of::<vfio_group_status>() == 8);
    assert!(core::mem::size_of::<vfio_iommu_spapr_tce_info>() == 32);
    assert!(core::mem::size_of::<vfio_iommu_spapr_register_memory>() == 24);
    assert!(core::mem::size_of::<vfio_region_info>() == 32);
    assert!(core::mem::size_of::<vfio_iommu_spapr_tce_create>() == 40);
    assert!(core::mem::size_of::<vfio_iommu_spapr_tce_remove>() == 16);
    assert!(core::mem::size_of::<vfio_iommu_type1_dma_map>() == 32);
    assert!(core::mem::size_of::<vfio_iommu_type1_dma_unmap>() == 24);
    assert!(core::mem::size_of::<vfio_eeh_pe_op>() == 40);
};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_unit(ret: libc::c_int) -> io::Result<()> {
    check(ret).map(drop)
}

/// Takes ownership of a file descriptor an ioctl just returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful ioctl that creates a new descriptor; nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

// One typed function per ioctl (rust-vmm vfio-ioctls' `vfio_syscall` style): each pairs the request number
// with the argument its uAPI names and holds the only `unsafe` call for it, so no caller can hand the kernel
// a pointer of the wrong type or size. The calls go through vmm-sys-util's `ioctl_with_*`, which take the
// request number as given (only its `ioctl_*_nr!` macros are wrong on powerpc, and they are not used).

// ---- /dev/kvm ----

/// `KVM_CHECK_EXTENSION`: how far the host supports `cap` (0: not at all).
pub fn kvm_check_extension(kvm: BorrowedFd<'_>, cap: u32) -> io::Result<i32> {
    // SAFETY: the request takes an integer argument; no memory is passed to the kernel.
    check(unsafe { ioctl_with_val(&kvm, KVM_CHECK_EXTENSION, cap.into()) })
}

/// `KVM_CREATE_VM` of the default type (KVM-HV when kvm-hv is loaded).
pub fn kvm_create_vm(kvm: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: the request takes an integer argument (the VM type, 0); no memory is passed to the kernel.
    check(unsafe { ioctl_with_val(&kvm, KVM_CREATE_VM, 0) }).map(owned)
}

/// `KVM_GET_VCPU_MMAP_SIZE`: the bytes of a vCPU fd's `struct kvm_run` mapping.
pub fn kvm_get_vcpu_mmap_size(kvm: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: the request takes no argument.
    let n = check(unsafe { ioctl_with_val(&kvm, KVM_GET_VCPU_MMAP_SIZE, 0) })?;
    usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

// ---- VM ----

/// `KVM_SET_USER_MEMORY_REGION`: guest physical `[guest_phys_addr, +memory_size)` is backed by this
/// process's memory at `userspace_addr`.
///
/// # Safety
/// `[userspace_addr, userspace_addr + memory_size)` must be a mapping of this process that stays mapped until
/// the slot is deleted or the VM is closed, and no Rust reference may cover it: the guest reads and writes it
/// at any time while a vCPU runs.
pub unsafe fn kvm_set_user_memory_region(vm: BorrowedFd<'_>, region: &kvm_userspace_memory_region) -> io::Result<()> {
    // SAFETY: `region` is the request's struct, read by the kernel; the memory it names is the caller's promise.
    check_unit(unsafe { ioctl_with_ref(&vm, KVM_SET_USER_MEMORY_REGION, region) })
}

/// `KVM_ENABLE_CAP` on a VM or a vCPU fd.
pub fn kvm_enable_cap(fd: BorrowedFd<'_>, cap: &kvm_enable_cap) -> io::Result<()> {
    // SAFETY: `cap` is the request's struct, read by the kernel; its arguments are integers (the
    // capabilities this crate enables take no pointer).
    check_unit(unsafe { ioctl_with_ref(&fd, KVM_ENABLE_CAP, cap) })
}

/// `KVM_PPC_CONFIGURE_V3_MMU`.
pub fn kvm_ppc_configure_v3_mmu(vm: BorrowedFd<'_>, cfg: &kvm_ppc_mmuv3_cfg) -> io::Result<()> {
    // SAFETY: `cfg` is the request's struct, read by the kernel; the process table is a guest address.
    check_unit(unsafe { ioctl_with_ref(&vm, KVM_PPC_CONFIGURE_V3_MMU, cfg) })
}

/// `KVM_CREATE_SPAPR_TCE_64`: a guest TCE window; returns its table fd.
pub fn kvm_create_spapr_tce_64(vm: BorrowedFd<'_>, args: &kvm_create_spapr_tce_64) -> io::Result<OwnedFd> {
    // SAFETY: `args` is the request's struct, read by the kernel.
    check(unsafe { ioctl_with_ref(&vm, KVM_CREATE_SPAPR_TCE_64, args) }).map(owned)
}

/// `KVM_CREATE_DEVICE` of `type_`; returns the device fd.
pub fn kvm_create_device(vm: BorrowedFd<'_>, type_: u32) -> io::Result<OwnedFd> {
    let mut d = kvm_create_device { type_, fd: 0, flags: 0 };
    // SAFETY: `d` is the request's struct; the kernel reads it and writes the new fd into it.
    check(unsafe { ioctl_with_mut_ref(&vm, KVM_CREATE_DEVICE, &mut d) })?;
    let fd = i32::try_from(d.fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    Ok(owned(fd))
}

/// `KVM_CREATE_VCPU` number `id`; returns the vCPU fd.
pub fn kvm_create_vcpu(vm: BorrowedFd<'_>, id: u64) -> io::Result<OwnedFd> {
    let id = libc::c_ulong::try_from(id).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the request takes an integer argument; no memory is passed to the kernel.
    check(unsafe { ioctl_with_val(&vm, KVM_CREATE_VCPU, id) }).map(owned)
}

// ---- the KVM VFIO device ----

/// `KVM_SET_DEVICE_ATTR` `KVM_DEV_VFIO_FILE`/`KVM_DEV_VFIO_FILE_ADD`: tells KVM about a VFIO group.
pub fn kvm_vfio_file_add(dev: BorrowedFd<'_>, group: BorrowedFd<'_>) -> io::Result<()> {
    let fd: i32 = group.as_raw_fd();
    let a = kvm_device_attr {
        flags: 0,
        group: KVM_DEV_VFIO_FILE,
        attr: KVM_DEV_VFIO_FILE_ADD,
        addr: std::ptr::addr_of!(fd) as u64,
    };
    // SAFETY: `a` is the request's struct; for this attribute the kernel reads one `i32` at `addr`, which is
    // `fd`, alive for the call.
    check_unit(unsafe { ioctl_with_ref(&dev, KVM_SET_DEVICE_ATTR, &a) })
}

/// `KVM_SET_DEVICE_ATTR` `KVM_DEV_VFIO_FILE`/`KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE`: links the TCE window whose
/// table fd is `table` to `group`'s hardware table.
pub fn kvm_vfio_group_set_spapr_tce(
    dev: BorrowedFd<'_>,
    group: BorrowedFd<'_>,
    table: BorrowedFd<'_>,
) -> io::Result<()> {
    let p = kvm_vfio_spapr_tce { groupfd: group.as_raw_fd(), tablefd: table.as_raw_fd() };
    let a = kvm_device_attr {
        flags: 0,
        group: KVM_DEV_VFIO_FILE,
        attr: KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE,
        addr: std::ptr::addr_of!(p) as u64,
    };
    // SAFETY: `a` is the request's struct; for this attribute the kernel reads one `kvm_vfio_spapr_tce` at
    // `addr`, which is `p`, alive for the call.
    check_unit(unsafe { ioctl_with_ref(&dev, KVM_SET_DEVICE_ATTR, &a) })
}

// ---- vCPU ----

/// `KVM_RUN` once (the caller retries on EINTR and decodes the exit from the `kvm_run` mapping).
pub fn kvm_run(vcpu: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the request takes no argument; the kernel communicates through the vCPU's own mapping.
    check_unit(unsafe { ioctl_with_val(&vcpu, KVM_RUN, 0) })
}

/// `KVM_GET_REGS`.
pub fn kvm_get_regs(vcpu: BorrowedFd<'_>) -> io::Result<kvm_regs> {
    let mut r = kvm_regs::default();
    // SAFETY: `r` is the request's struct, written by the kernel.
    check(unsafe { ioctl_with_mut_ref(&vcpu, KVM_GET_REGS, &mut r) })?;
    Ok(r)
}

/// `KVM_SET_REGS`.
pub fn kvm_set_regs(vcpu: BorrowedFd<'_>, regs: &kvm_regs) -> io::Result<()> {
    // SAFETY: `regs` is the request's struct, read by the kernel.
    check_unit(unsafe { ioctl_with_ref(&vcpu, KVM_SET_REGS, regs) })
}

// ---- VFIO container ----

/// `VFIO_GET_API_VERSION`.
pub fn vfio_get_api_version(container: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: the request takes no argument.
    check(unsafe { ioctl_with_val(&container, VFIO_GET_API_VERSION, 0) })
}

/// `VFIO_CHECK_EXTENSION`: 1 if the container supports IOMMU type `ext`.
pub fn vfio_check_extension(container: BorrowedFd<'_>, ext: u32) -> io::Result<i32> {
    // SAFETY: the request takes an integer argument; no memory is passed to the kernel.
    check(unsafe { ioctl_with_val(&container, VFIO_CHECK_EXTENSION, ext.into()) })
}

/// `VFIO_SET_IOMMU` to IOMMU type `ty`.
pub fn vfio_set_iommu(container: BorrowedFd<'_>, ty: u32) -> io::Result<()> {
    // SAFETY: the request takes an integer argument; no memory is passed to the kernel.
    check_unit(unsafe { ioctl_with_val(&container, VFIO_SET_IOMMU, ty.into()) })
}

/// `VFIO_IOMMU_SPAPR_TCE_GET_INFO`.
pub fn vfio_iommu_spapr_tce_get_info(container: BorrowedFd<'_>) -> io::Result<vfio_iommu_spapr_tce_info> {
    let mut i =
        vfio_iommu_spapr_tce_info { argsz: size_of::<vfio_iommu_spapr_tce_info>() as u32, ..Default::default() };
    // SAFETY: `i` is the request's struct with `argsz` its size; the kernel writes at most that.
    check(unsafe { ioctl_with_mut_ref(&container, VFIO_IOMMU_SPAPR_TCE_GET_INFO, &mut i) })?;
    Ok(i)
}

fn register_memory_arg(vaddr: u64, size: u64) -> vfio_iommu_spapr_register_memory {
    vfio_iommu_spapr_register_memory {
        argsz: size_of::<vfio_iommu_spapr_register_memory>() as u32,
        flags: 0,
        vaddr,
        size,
    }
}

/// `VFIO_IOMMU_SPAPR_REGISTER_MEMORY`: pins `[vaddr, vaddr + size)` of this process (preregistration). The
/// pages only become reachable by a device through a later map, which is where the caller's promise lies
/// ([`vfio_iommu_map_dma`], or a KVM window linked to the group).
pub fn vfio_iommu_spapr_register_memory(container: BorrowedFd<'_>, vaddr: u64, size: u64) -> io::Result<()> {
    let r = register_memory_arg(vaddr, size);
    // SAFETY: `r` is the request's struct, read by the kernel, which checks the range against the mm.
    check_unit(unsafe { ioctl_with_ref(&container, VFIO_IOMMU_SPAPR_REGISTER_MEMORY, &r) })
}

/// `VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY`.
pub fn vfio_iommu_spapr_unregister_memory(container: BorrowedFd<'_>, vaddr: u64, size: u64) -> io::Result<()> {
    let r = register_memory_arg(vaddr, size);
    // SAFETY: `r` is the request's struct, read by the kernel.
    check_unit(unsafe { ioctl_with_ref(&container, VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY, &r) })
}

/// `VFIO_IOMMU_SPAPR_TCE_CREATE`; `create.start_addr` receives the new window's bus address.
pub fn vfio_iommu_spapr_tce_create(
    container: BorrowedFd<'_>,
    create: &mut vfio_iommu_spapr_tce_create,
) -> io::Result<()> {
    create.argsz = size_of::<vfio_iommu_spapr_tce_create>() as u32;
    // SAFETY: `create` is the request's struct with `argsz` its size; the kernel reads it and writes
    // `start_addr`.
    check_unit(unsafe { ioctl_with_mut_ref(&container, VFIO_IOMMU_SPAPR_TCE_CREATE, create) })
}

/// `VFIO_IOMMU_SPAPR_TCE_REMOVE` of the window at bus address `start_addr`.
pub fn vfio_iommu_spapr_tce_remove(container: BorrowedFd<'_>, start_addr: u64) -> io::Result<()> {
    let r =
        vfio_iommu_spapr_tce_remove { argsz: size_of::<vfio_iommu_spapr_tce_remove>() as u32, flags: 0, start_addr };
    // SAFETY: `r` is the request's struct, read by the kernel.
    check_unit(unsafe { ioctl_with_ref(&container, VFIO_IOMMU_SPAPR_TCE_REMOVE, &r) })
}

/// `VFIO_IOMMU_MAP_DMA`: the device may access `[vaddr, vaddr + size)` at bus address `iova`.
///
/// # Safety
/// `[vaddr, vaddr + size)` must be memory handed to the device (guest RAM): no Rust reference may cover it
/// while the mapping exists, since the device may write it (`VFIO_DMA_MAP_FLAG_WRITE`) at any time.
pub unsafe fn vfio_iommu_map_dma(container: BorrowedFd<'_>, map: &vfio_iommu_type1_dma_map) -> io::Result<()> {
    // SAFETY: `map` is the request's struct, read by the kernel; what it exposes is the caller's promise.
    check_unit(unsafe { ioctl_with_ref(&container, VFIO_IOMMU_MAP_DMA, map) })
}

/// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)`.
pub fn vfio_iommu_unmap_dma(container: BorrowedFd<'_>, iova: u64, size: u64) -> io::Result<()> {
    let u = vfio_iommu_type1_dma_unmap {
        argsz: size_of::<vfio_iommu_type1_dma_unmap>() as u32,
        flags: 0,
        iova,
        size,
        ..Default::default()
    };
    // SAFETY: `u` is the request's struct (without the optional trailing data, which no flag asks for).
    check_unit(unsafe { ioctl_with_ref(&container, VFIO_IOMMU_UNMAP_DMA, &u) })
}

/// `VFIO_EEH_PE_OP` `op` on the container's PE; returns the kernel's answer (a state for GET_STATE).
pub fn vfio_eeh_pe_op(container: BorrowedFd<'_>, op: u32) -> io::Result<i32> {
    let o = vfio_eeh_pe_op {
        argsz: size_of::<vfio_eeh_pe_op>() as u32,
        flags: 0,
        op,
        __bindgen_anon_1: vfio_eeh_pe_op__bindgen_ty_1 { err: vfio_eeh_pe_err::default() },
    };
    // SAFETY: `o` is the request's struct with `argsz` its size, the error-injection member zeroed.
    check(unsafe { ioctl_with_ref(&container, VFIO_EEH_PE_OP, &o) })
}

// ---- VFIO group and device ----

/// `VFIO_GROUP_GET_STATUS`: the group's flags.
pub fn vfio_group_get_status(group: BorrowedFd<'_>) -> io::Result<u32> {
    let mut st = vfio_group_status { argsz: size_of::<vfio_group_status>() as u32, flags: 0 };
    // SAFETY: `st` is the request's struct with `argsz` its size; the kernel writes `flags`.
    check(unsafe { ioctl_with_mut_ref(&group, VFIO_GROUP_GET_STATUS, &mut st) })?;
    Ok(st.flags)
}

/// `VFIO_GROUP_SET_CONTAINER`.
pub fn vfio_group_set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> io::Result<()> {
    let fd: i32 = container.as_raw_fd();
    // SAFETY: the request reads one `i32`, the container fd.
    check_unit(unsafe { ioctl_with_ref(&group, VFIO_GROUP_SET_CONTAINER, &fd) })
}

/// `VFIO_GROUP_GET_DEVICE_FD` for the device named `name` (its PCI address).
pub fn vfio_group_get_device_fd(group: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: the request reads a NUL-terminated string, which `name` is, alive for the call.
    check(unsafe { ioctl_with_ptr(&group, VFIO_GROUP_GET_DEVICE_FD, name.as_ptr()) }).map(owned)
}

/// `VFIO_DEVICE_GET_REGION_INFO` of region `index` (without capabilities).
pub fn vfio_device_get_region_info(device: BorrowedFd<'_>, index: u32) -> io::Result<vfio_region_info> {
    let mut r = vfio_region_info { argsz: size_of::<vfio_region_info>() as u32, index, ..Default::default() };
    // SAFETY: `r` is the request's struct with `argsz` its size; the kernel writes at most that.
    check(unsafe { ioctl_with_mut_ref(&device, VFIO_DEVICE_GET_REGION_INFO, &mut r) })?;
    Ok(r)
}

// ---- pvtce ----

/// `PVTCE_WINDOW_INFO` on a window's table fd.
pub fn pvtce_window_info_get(table: BorrowedFd<'_>) -> io::Result<pvtce_uapi::pvtce_window_info> {
    let mut i = pvtce_uapi::pvtce_window_info {
        argsz: size_of::<pvtce_uapi::pvtce_window_info>() as u32,
        ..Default::default()
    };
    // SAFETY: `i` is the request's struct with `argsz` its size; the kernel writes at most that.
    check(unsafe { ioctl_with_mut_ref(&table, pvtce_uapi::PVTCE_WINDOW_INFO, &mut i) })?;
    Ok(i)
}

/// `PVTCE_WINDOW_EXCHANGE` on a window's table fd: `x.first`, `x.count` and `x.ua` in, the ticks out.
pub fn pvtce_window_exchange(table: BorrowedFd<'_>, x: &mut pvtce_uapi::pvtce_exchange) -> io::Result<()> {
    x.argsz = size_of::<pvtce_uapi::pvtce_exchange>() as u32;
    // SAFETY: `x` is the request's struct with `argsz` its size. `ua` is checked by the kernel against this
    // process's preregistered memory, and the entries are cleared again before the call returns.
    check_unit(unsafe { ioctl_with_mut_ref(&table, pvtce_uapi::PVTCE_WINDOW_EXCHANGE, x) })
}

/// `PVTCE_SET_MODE` on /dev/pvtce; returns the old mode.
pub fn pvtce_set_mode(ctl: BorrowedFd<'_>, mode: u32) -> io::Result<u32> {
    let mut m = pvtce_uapi::pvtce_mode { argsz: size_of::<pvtce_uapi::pvtce_mode>() as u32, flags: 0, mode, old: 0 };
    // SAFETY: `m` is the request's struct with `argsz` its size; the kernel writes `old`.
    check(unsafe { ioctl_with_mut_ref(&ctl, pvtce_uapi::PVTCE_SET_MODE, &mut m) })?;
    Ok(m.old)
}

/// `PVTCE_HOST_READ` on /dev/pvtce: `out.len()` hardware entries from `first` of table `table` of `group`.
pub fn pvtce_host_read(
    ctl: BorrowedFd<'_>,
    group: BorrowedFd<'_>,
    table: u32,
    first: u64,
    out: &mut [u64],
) -> io::Result<()> {
    let mut r = pvtce_uapi::pvtce_host_read {
        argsz: size_of::<pvtce_uapi::pvtce_host_read>() as u32,
        flags: 0,
        groupfd: group.as_raw_fd(),
        table,
        first,
        count: out.len() as u64,
        entries: out.as_mut_ptr() as u64,
    };
    // SAFETY: `r` is the request's struct with `argsz` its size; the kernel writes `count` u64 at `entries`,
    // which is `out`, exclusively borrowed for the call.
    check_unit(unsafe { ioctl_with_mut_ref(&ctl, pvtce_uapi::PVTCE_HOST_READ, &mut r) })
}

/// `PVTCE_LIST_WINDOWS` on /dev/pvtce: fills `out` (up to its length) and returns how many windows there
/// are (possibly more than `out` holds).
pub fn pvtce_list_windows(ctl: BorrowedFd<'_>, out: &mut [pvtce_uapi::pvtce_window_info]) -> io::Result<u32> {
    for e in out.iter_mut() {
        e.argsz = size_of::<pvtce_uapi::pvtce_window_info>() as u32;
    }
    let mut l = pvtce_uapi::pvtce_windows {
        argsz: size_of::<pvtce_uapi::pvtce_windows>() as u32,
        flags: 0,
        capacity: u32::try_from(out.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        count: 0,
        entries: out.as_mut_ptr() as u64,
    };
    // SAFETY: `l` is the request's struct with `argsz` its size; the kernel writes at most `capacity`
    // `pvtce_window_info` at `entries`, which is `out`, exclusively borrowed for the call.
    check(unsafe { ioctl_with_mut_ref(&ctl, pvtce_uapi::PVTCE_LIST_WINDOWS, &mut l) })?;
    Ok(l.count)
}

/// A shared mapping of `len` bytes of `fd` (or anonymous shared memory when `fd` is None).
pub fn mmap_shared(fd: Option<BorrowedFd<'_>>, len: usize, offset: i64) -> io::Result<*mut u8> {
    let (raw, flags) = match fd {
        Some(f) => (f.as_raw_fd(), libc::MAP_SHARED),
        None => (-1, libc::MAP_SHARED | libc::MAP_ANONYMOUS),
    };
    // SAFETY: a fresh mapping chosen by the kernel (addr NULL); it aliases no Rust object.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, raw, offset) };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

/// A read-only shared mapping of `len` bytes of `fd` (a KVM TCE table).
pub fn mmap_ro(fd: BorrowedFd<'_>, len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh mapping chosen by the kernel (addr NULL); it aliases no Rust object.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

/// Unmaps what [`mmap_shared`] returned.
///
/// # Safety
/// `p`/`len` must be exactly a mapping returned by `mmap_shared` and no reference into it may outlive this call.
pub unsafe fn munmap(p: *mut u8, len: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { libc::munmap(p.cast(), len) };
}

#[cfg(test)]
// `Ioctl` is `c_ulong` on glibc targets and `c_int` on others: the casts are for the latter.
#[allow(clippy::unnecessary_cast)]
mod tests {
    use super::*;

    // Numbers from the kernel headers, per architecture (notes/papr-tce.md: 0x8020aea8 on ppc64le, 0x4020aea8 on
    // x86). The tests run on the host for x86_64 and, for ppc64le, under qemu-user (.cargo/config.toml runner).
    #[test]
    fn create_spapr_tce_64_number() {
        #[cfg(target_arch = "powerpc64")]
        assert_eq!(KVM_CREATE_SPAPR_TCE_64 as u64, 0x8020_aea8);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(KVM_CREATE_SPAPR_TCE_64 as u64, 0x4020_aea8);
    }

    // _IO carries no size but still a direction field: NONE is 0 in the generic layout and 1 (in the top
    // 3 bits) on powerpc, so even size-less numbers differ.
    #[test]
    fn io_numbers_carry_the_arch_none_direction() {
        #[cfg(target_arch = "powerpc64")]
        let none = 0x2000_0000u64;
        #[cfg(not(target_arch = "powerpc64"))]
        let none = 0u64;
        // VFIO_IOMMU_SPAPR_REGISTER_MEMORY = _IO(';', 117), VFIO_GROUP_GET_DEVICE_FD = _IO(';', 106).
        assert_eq!(VFIO_IOMMU_SPAPR_REGISTER_MEMORY as u64, none | 0x3b75);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD as u64, none | 0x3b6a);
        // KVM_RUN = _IO(0xAE, 0x80).
        assert_eq!(KVM_RUN as u64, none | 0xae80);
        // VFIO_IOMMU_MAP_DMA = _IO(';', 113), UNMAP = 114, VFIO_EEH_PE_OP = 121.
        assert_eq!(VFIO_IOMMU_MAP_DMA as u64, none | 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA as u64, none | 0x3b72);
        assert_eq!(VFIO_EEH_PE_OP as u64, none | 0x3b79);
    }

    /// The errno of a failed call, checked against `want`. The ppc64le build runs under qemu-user, which
    /// answers ioctl numbers it does not translate with ENOSYS before the kernel sees them.
    fn assert_errno(r: io::Result<libc::c_int>, want: i32) {
        let got = r.unwrap_err().raw_os_error();
        if cfg!(target_arch = "powerpc64") && got == Some(libc::ENOSYS) {
            return;
        }
        assert_eq!(got, Some(want));
    }

    // Error paths without a device: a file that is no device gives ENOTTY, a path-only descriptor EBADF.
    #[test]
    fn bad_descriptors_give_errnos() {
        use std::os::fd::AsFd;
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_errno(kvm_run(f.as_fd()).map(|_| 0), libc::ENOTTY);
        assert_errno(vfio_eeh_pe_op(f.as_fd(), VFIO_EEH_PE_GET_STATE), libc::ENOTTY);
        assert_errno(vfio_iommu_unmap_dma(f.as_fd(), 0, 0x1000).map(|_| 0), libc::ENOTTY);
        assert_errno(pvtce_window_info_get(f.as_fd()).map(|_| 0), libc::ENOTTY);
        // A descriptor opened for a path only (O_PATH) takes no ioctl at all: EBADF.
        let path = std::ffi::CString::new("/dev/null").unwrap();
        // SAFETY: a plain open(2) of a NUL-terminated path.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_PATH) };
        assert!(raw >= 0);
        // SAFETY: `raw` was just opened and nobody else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        assert_errno(kvm_run(owned.as_fd()).map(|_| 0), libc::EBADF);
    }
}
