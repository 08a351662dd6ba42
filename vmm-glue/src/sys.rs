//! The ioctl edge: numbers, structs and the raw calls. All `unsafe` of the crate lives here.
//!
//! Numbers come from `libc::_IO`/`_IOR`/`_IOW`/`_IOWR`, which encode the direction and size the way the target
//! architecture does (powerpc puts WRITE=4 in the top 3 bits and the size in 13 bits; the generic layout that
//! vmm-sys-util's `ioctl_*_nr!` macros hard-code is wrong there). Structs mirror the kernel's uAPI headers
//! (`linux/kvm.h`, `asm/kvm.h` for powerpc, `linux/vfio.h`), with size asserts.

#![allow(non_camel_case_types)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

pub type Ioctl = libc::Ioctl;

pub const KVMIO: u32 = 0xAE;
pub const VFIO_TYPE: u32 = b';' as u32;
pub const VFIO_BASE: u32 = 100;

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
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_group_status {
    pub argsz: u32,
    pub flags: u32,
}
pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_iommu_spapr_tce_ddw_info {
    pub pgsizes: u64,
    pub max_dynamic_windows_supported: u32,
    pub levels: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_iommu_spapr_tce_info {
    pub argsz: u32,
    pub flags: u32,
    pub dma32_window_start: u32,
    pub dma32_window_size: u32,
    pub ddw: vfio_iommu_spapr_tce_ddw_info,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_iommu_spapr_register_memory {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_region_info {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_iommu_spapr_tce_create {
    pub argsz: u32,
    pub flags: u32,
    pub page_shift: u32,
    pub resv1: u32,
    pub window_size: u64,
    pub levels: u32,
    pub resv2: u32,
    /// Out: the bus address of the new window.
    pub start_addr: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_iommu_spapr_tce_remove {
    pub argsz: u32,
    pub flags: u32,
    pub start_addr: u64,
}

pub const VFIO_API_VERSION: i32 = 0;
pub const VFIO_SPAPR_TCE_V2_IOMMU: u64 = 7;
pub const VFIO_PCI_BAR0_REGION_INDEX: u32 = 0;
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;

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

/// `struct vfio_iommu_type1_dma_map` (the sPAPR IOMMUs take it too).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_iommu_type1_dma_map {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}
/// The device may read the memory (to device).
pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1;
/// The device may write the memory (from device).
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 2;

/// `struct vfio_iommu_type1_dma_unmap` without the trailing flexible data.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_iommu_type1_dma_unmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

/// `struct vfio_eeh_pe_op` (the head; the error-injection member is not used).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_eeh_pe_op {
    pub argsz: u32,
    pub flags: u32,
    pub op: u32,
}
pub const VFIO_EEH_PE_DISABLE: u32 = 0;
pub const VFIO_EEH_PE_ENABLE: u32 = 1;
pub const VFIO_EEH_PE_GET_STATE: u32 = 2;

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
    assert!(core::mem::size_of::<vfio_eeh_pe_op>() == 12);
};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

// The calls go through vmm-sys-util's `ioctl_with_*` (they take the request number as given; only its
// `ioctl_*_nr!` macros are wrong on powerpc, and they are not used).

/// An ioctl whose argument is a plain integer (or none).
pub fn ioctl_val(fd: BorrowedFd<'_>, req: Ioctl, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the request takes an integer argument (or ignores it); no memory is passed to the kernel.
    check(unsafe { vmm_sys_util::ioctl::ioctl_with_val(&fd, req, arg) })
}

/// An ioctl that reads `*arg` (the kernel copies it in).
pub fn ioctl_ref<T>(fd: BorrowedFd<'_>, req: Ioctl, arg: &T) -> io::Result<libc::c_int> {
    // SAFETY: `arg` is a valid, initialised `T` for the duration of the call; callers pair each request with the
    // `#[repr(C)]` struct its uAPI names, so the kernel reads exactly `size_of::<T>()` bytes or fewer.
    check(unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&fd, req, arg) })
}

/// An ioctl that may write `*arg` (the kernel copies in and out).
pub fn ioctl_mut<T>(fd: BorrowedFd<'_>, req: Ioctl, arg: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `arg` is a valid, exclusively borrowed `T`; the request's uAPI struct is `T`, so the kernel writes
    // within it.
    check(unsafe { vmm_sys_util::ioctl::ioctl_with_mut_ref(&fd, req, arg) })
}

/// An ioctl that reads a NUL-terminated string (VFIO_GROUP_GET_DEVICE_FD).
pub fn ioctl_cstr(fd: BorrowedFd<'_>, req: Ioctl, s: &std::ffi::CStr) -> io::Result<libc::c_int> {
    // SAFETY: `s` is a valid NUL-terminated string that outlives the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req, s.as_ptr()) })
}

/// Takes ownership of a file descriptor an ioctl returned.
pub fn owned(fd: libc::c_int) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` was just returned by a successful ioctl that creates a new descriptor; nobody else owns it.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
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
        assert_errno(ioctl_val(f.as_fd(), KVM_RUN, 0), libc::ENOTTY);
        let mut i = vfio_eeh_pe_op { argsz: 12, flags: 0, op: VFIO_EEH_PE_GET_STATE };
        assert_errno(ioctl_mut(f.as_fd(), VFIO_EEH_PE_OP, &mut i), libc::ENOTTY);
        let m = vfio_iommu_type1_dma_map { argsz: 32, ..Default::default() };
        assert_errno(ioctl_ref(f.as_fd(), VFIO_IOMMU_MAP_DMA, &m), libc::ENOTTY);
        // A descriptor opened for a path only (O_PATH) takes no ioctl at all: EBADF.
        let path = std::ffi::CString::new("/dev/null").unwrap();
        // SAFETY: a plain open(2) of a NUL-terminated path.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_PATH) };
        assert!(raw >= 0);
        let owned = owned(raw);
        assert_errno(ioctl_val(owned.as_fd(), KVM_RUN, 0), libc::EBADF);
    }
}
