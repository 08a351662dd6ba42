//! pvtce's ioctl ABI, the Rust twin of `include/linux/pvtce.h`.
//!
//! The structs come from bindgen (`src/bindings.rs`, regenerated and compared by `tests/bindgen.rs`); the
//! ioctl numbers are computed here with `libc::_IOWR`, which encodes direction and size the way the target
//! architecture does (powerpc: WRITE=4, READ=2 in the top 3 bits, 13 size bits; x86: 2 direction bits,
//! 14 size bits), so one source gives the right number on both.

#![no_std]
#![allow(non_camel_case_types)]

mod bindings;
pub use bindings::*;

pub type Ioctl = libc::Ioctl;

const T: u32 = PVTCE_IOCTL_TYPE;

/// On a window's table fd.
pub const PVTCE_WINDOW_INFO: Ioctl = libc::_IOWR::<pvtce_window_info>(T, 0x00);
/// On a window's table fd.
pub const PVTCE_WINDOW_EXCHANGE: Ioctl = libc::_IOWR::<pvtce_exchange>(T, 0x04);
/// On /dev/pvtce (benchmark only).
pub const PVTCE_PARENT_HCALLS: Ioctl = libc::_IOWR::<pvtce_parent_hcalls>(T, 0x05);
/// On /dev/pvtce (benchmark only).
pub const PVTCE_L1_TIME: Ioctl = libc::_IOWR::<pvtce_l1_time>(T, 0x06);
/// On /dev/pvtce.
pub const PVTCE_SET_MODE: Ioctl = libc::_IOWR::<pvtce_mode>(T, 0x01);
/// On /dev/pvtce.
pub const PVTCE_HOST_READ: Ioctl = libc::_IOWR::<pvtce_host_read>(T, 0x02);
/// On /dev/pvtce.
pub const PVTCE_LIST_WINDOWS: Ioctl = libc::_IOWR::<pvtce_windows>(T, 0x03);

/// The numbers as both architectures encode them, for tests and for code that builds one for the other.
pub mod nr {
    /// Linux's generic `_IOC` layout (x86, arm64, riscv): dir(2) | size(14) | type(8) | nr(8), READ=2 WRITE=1.
    pub const fn generic_iowr(ty: u32, nr: u32, size: usize) -> u64 {
        ((3u64) << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
    }
    /// powerpc's layout: dir(3) | size(13) | type(8) | nr(8), READ=2 WRITE=4.
    pub const fn powerpc_iowr(ty: u32, nr: u32, size: usize) -> u64 {
        ((2u64 | 4) << 29) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
    }
}

// The structs never shrink and keep their layout on every architecture (fixed-width fields, explicit
// padding): bindgen's layout asserts check offsets, these check the sizes the ioctl numbers carry.
const _: () = {
    assert!(core::mem::size_of::<pvtce_window_info>() == 128);
    assert!(core::mem::size_of::<pvtce_mode>() == 16);
    assert!(core::mem::size_of::<pvtce_host_read>() == 40);
    assert!(core::mem::size_of::<pvtce_windows>() == 24);
    assert!(core::mem::size_of::<pvtce_exchange>() == 48);
    assert!(core::mem::size_of::<pvtce_parent_hcalls>() == 40);
    assert!(core::mem::size_of::<pvtce_l1_time>() == 208);
};

#[cfg(test)]
// `Ioctl` is `c_ulong` on glibc targets and `c_int` on others: the casts are for the latter.
#[allow(clippy::unnecessary_cast)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn numbers_follow_the_target_layout() {
        let cases = [
            (PVTCE_WINDOW_INFO as u64, 0x00, size_of::<pvtce_window_info>()),
            (PVTCE_SET_MODE as u64, 0x01, size_of::<pvtce_mode>()),
            (PVTCE_HOST_READ as u64, 0x02, size_of::<pvtce_host_read>()),
            (PVTCE_LIST_WINDOWS as u64, 0x03, size_of::<pvtce_windows>()),
            (PVTCE_WINDOW_EXCHANGE as u64, 0x04, size_of::<pvtce_exchange>()),
            (PVTCE_PARENT_HCALLS as u64, 0x05, size_of::<pvtce_parent_hcalls>()),
            (PVTCE_L1_TIME as u64, 0x06, size_of::<pvtce_l1_time>()),
        ];
        for (got, n, size) in cases {
            #[cfg(target_arch = "powerpc64")]
            assert_eq!(got, nr::powerpc_iowr(T, n, size));
            #[cfg(not(target_arch = "powerpc64"))]
            assert_eq!(got, nr::generic_iowr(T, n, size));
        }
    }

    // Worked by hand from the two layouts, so the helpers are checked too: _IOWR(0xB9, 0, 120 bytes) is the
    // same word on both (READ|WRITE fills the top bits either way), while an _IOW differs:
    // KVM_CREATE_SPAPR_TCE_64 = _IOW(0xAE, 0xa8, 32 bytes) is 0x4020aea8 on x86, 0x8020aea8 on powerpc
    // (docs/vmm-glue.md, "ioctl numbers").
    #[test]
    fn layouts_by_hand() {
        assert_eq!(nr::generic_iowr(0xB9, 0, 120), 0xC078_B900);
        assert_eq!(nr::powerpc_iowr(0xB9, 0, 120), 0xC078_B900);
        let iow = libc::_IOW::<[u8; 32]>(0xAE, 0xa8) as u64;
        #[cfg(target_arch = "powerpc64")]
        assert_eq!(iow, 0x8020_aea8);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(iow, 0x4020_aea8);
    }
}
