//! Spec words as newtypes: LIOBN, I/O bus address, TCE, page shift, window geometry.

/// Logical I/O bus number: the guest's name for one DMA window (one TCE table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Liobn(pub u64);

/// I/O bus address inside a window (a hypercall argument, not yet validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ioba(pub u64);

/// DMA direction encoded in the two permission bits of a TCE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Neither bit: the entry is unmapped (any other bits are guest "poison").
    None,
    /// R only: the device reads memory (to device).
    Read,
    /// W only: the device writes memory (from device).
    Write,
    /// R and W: bidirectional.
    ReadWrite,
}

impl Perm {
    /// The TCE bits for this direction (Linux `iommu_direction_to_tce_perm`).
    pub const fn bits(self) -> u64 {
        match self {
            Perm::None => 0,
            Perm::Read => Tce::READ,
            Perm::Write => Tce::WRITE,
            Perm::ReadWrite => Tce::READ | Tce::WRITE,
        }
    }

    /// Whether the device may write the page (the page must then be marked dirty when unmapped).
    pub const fn device_writes(self) -> bool {
        matches!(self, Perm::Write | Perm::ReadWrite)
    }
}

/// One guest TCE: real page number | W (0x2) | R (0x1). Any 64-bit value is representable; the
/// hypercalls decide which are acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tce(pub u64);

impl Tce {
    /// R bit: the device may read the page.
    pub const READ: u64 = 0x1;
    /// W bit: the device may write the page.
    pub const WRITE: u64 = 0x2;
    /// Both permission bits.
    pub const PERM_MASK: u64 = Self::READ | Self::WRITE;

    /// Direction encoded in the permission bits (Linux `iommu_tce_direction`).
    pub const fn perm(self) -> Perm {
        match (self.0 & Self::READ != 0, self.0 & Self::WRITE != 0) {
            (false, false) => Perm::None,
            (true, false) => Perm::Read,
            (false, true) => Perm::Write,
            (true, true) => Perm::ReadWrite,
        }
    }

    /// True when neither R nor W is set: the entry maps nothing.
    pub const fn is_clear(self) -> bool {
        self.0 & Self::PERM_MASK == 0
    }

    /// Guest physical address: the value with the permission bits cleared.
    pub const fn gpa(self) -> u64 {
        self.0 & !Self::PERM_MASK
    }

    /// Real page number for a given page shift.
    pub const fn rpn(self, shift: PageShift) -> u64 {
        self.gpa() >> shift.get()
    }
}

/// An IOMMU page shift, checked to be in `12..=34` (4 KiB .. 16 GiB).
///
/// # Invariants
/// `MIN <= self.0 <= MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageShift(u8);

impl PageShift {
    /// Smallest IOMMU page: 4 KiB.
    pub const MIN: u32 = 12;
    /// Largest IOMMU page: 16 GiB.
    pub const MAX: u32 = 34;
    /// 4 KiB pages.
    pub const SZ_4K: PageShift = PageShift(12);
    /// 64 KiB pages.
    pub const SZ_64K: PageShift = PageShift(16);
    /// 2 MiB pages.
    pub const SZ_2M: PageShift = PageShift(21);
    /// 16 MiB pages.
    pub const SZ_16M: PageShift = PageShift(24);

    /// Checked constructor: `None` outside `12..=34`.
    pub const fn new(shift: u32) -> Option<PageShift> {
        if shift >= Self::MIN && shift <= Self::MAX {
            // INVARIANT: checked just above.
            Some(PageShift(shift as u8))
        } else {
            None
        }
    }

    /// The shift as a number.
    pub const fn get(self) -> u32 {
        self.0 as u32
    }

    /// Page size in bytes.
    pub const fn size(self) -> u64 {
        1u64 << self.0
    }

    /// `size() - 1`: the in-page offset bits.
    pub const fn offset_mask(self) -> u64 {
        self.size() - 1
    }
}

/// Why a window geometry was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// Zero pages.
    Empty,
    /// `offset + size` pages, or its byte address, does not fit in 64 bits.
    Overflow,
}

/// A window's bus range in pages: `[offset << shift, (offset + size) << shift)`.
///
/// # Invariants
/// `size > 0` and `(offset + size) << page_shift` fits in a `u64` (the window ends at or below 2^64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowGeometry {
    page_shift: PageShift,
    offset: u64,
    size: u64,
}

impl WindowGeometry {
    /// Checked constructor (KVM_CREATE_SPAPR_TCE_64 refuses size 0 and overflow with EINVAL).
    pub fn new(page_shift: PageShift, offset: u64, size: u64) -> Result<Self, GeometryError> {
        if size == 0 {
            return Err(GeometryError::Empty);
        }
        let end = offset.checked_add(size).ok_or(GeometryError::Overflow)?;
        // The last page must be addressable: (end - 1) << shift plus the page must fit.
        let last = end - 1;
        if last > (u64::MAX >> page_shift.get()) {
            return Err(GeometryError::Overflow);
        }
        // INVARIANT: size > 0 and the end address fits, checked above.
        Ok(WindowGeometry { page_shift, offset, size })
    }

    /// For constants known to be valid (1 GiB at bus 0 and the like).
    pub(super) const fn new_const(page_shift: PageShift, offset: u64, size: u64) -> Self {
        // INVARIANT: callers pass constants that satisfy the checks of `new`.
        WindowGeometry { page_shift, offset, size }
    }

    /// IOMMU page shift of the window.
    pub const fn page_shift(&self) -> PageShift {
        self.page_shift
    }

    /// First page number of the window (bus offset in pages).
    pub const fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of pages (TCEs) in the window.
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// Bus address of the first byte of the window.
    pub const fn bus_start(&self) -> u64 {
        self.offset << self.page_shift.get()
    }

    /// Window size in bytes, `None` if it is exactly 2^64.
    pub fn bus_len(&self) -> Option<u64> {
        self.size.checked_shl(self.page_shift.get()).filter(|l| l >> self.page_shift.get() == self.size)
    }

    /// Validates `npages` entries starting at `ioba` (Linux `iommu_tce_check_ioba`): `ioba` must be page
    /// aligned, at or above the window start, and the run must not pass the window end or wrap.
    /// Returns the absolute page number of `ioba` (including `offset`).
    pub fn check_ioba(&self, ioba: Ioba, npages: u64) -> Option<u64> {
        if ioba.0 & self.page_shift.offset_mask() != 0 {
            return None;
        }
        let page = ioba.0 >> self.page_shift.get();
        if page < self.offset {
            return None;
        }
        page.checked_add(npages)?;
        let rel_end = (page - self.offset).checked_add(npages)?;
        if rel_end > self.size {
            return None;
        }
        Some(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tce_bits() {
        // PAPR: R = 0x1 (to device), W = 0x2 (from device).
        assert_eq!(Tce(0x1001).perm(), Perm::Read);
        assert_eq!(Tce(0x1002).perm(), Perm::Write);
        assert_eq!(Tce(0x1003).perm(), Perm::ReadWrite);
        assert!(Tce(0x1000).is_clear());
        assert_eq!(Tce(0x1003).gpa(), 0x1000);
        assert_eq!(Tce(0x1_0003).rpn(PageShift::SZ_64K), 1);
        assert!(Perm::Write.device_writes() && !Perm::Read.device_writes());
    }

    #[test]
    fn check_ioba_matches_iommu_tce_check_ioba() {
        let g = WindowGeometry::new(PageShift::SZ_4K, 4, 8).unwrap();
        assert_eq!(g.check_ioba(Ioba(4 << 12), 8), Some(4));
        assert_eq!(g.check_ioba(Ioba(4 << 12), 9), None);
        assert_eq!(g.check_ioba(Ioba(3 << 12), 1), None);
        assert_eq!(g.check_ioba(Ioba((4 << 12) + 1), 1), None);
        assert_eq!(g.check_ioba(Ioba(12 << 12), 0), Some(12));
        assert_eq!(g.check_ioba(Ioba(5 << 12), u64::MAX), None);
        assert_eq!(g.bus_len(), Some(8 << 12));
    }
}
