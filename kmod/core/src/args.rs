//! The argument head every pvtce ioctl struct starts with (`argsz`, `flags`; uapi/include/linux/pvtce.h).
//!
//! With [`super::types::PageShift::new`] and [`super::types::WindowGeometry::new`] (`KVM_CREATE_SPAPR_TCE_64`)
//! and [`super::host::pick_group_table`] (`KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE`), this is the ioctl argument
//! checking pvtce.ko does; the `args` fuzz target compares all of them with a model (fuzz/fuzz_targets/args.rs).

/// Whether an argument head is acceptable: userspace's struct is at least `size` bytes (a newer, longer
/// struct is fine: its tail is ignored) and no flag is set (no pvtce ioctl defines one yet). pvtce.ko answers
/// EINVAL otherwise.
pub fn head_ok(argsz: u32, flags: u32, size: usize) -> bool {
    usize::try_from(argsz).is_ok_and(|a| a >= size) && flags == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head() {
        assert!(head_ok(16, 0, 16));
        assert!(head_ok(64, 0, 16));
        assert!(!head_ok(15, 0, 16));
        assert!(!head_ok(16, 1, 16));
        assert!(!head_ok(u32::MAX, 0x8000_0000, 16));
    }
}
