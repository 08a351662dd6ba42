//! The host side: address translation (memslots, preregistered memory) and the host IOMMU tables a
//! window is linked to, all reached through the [`Host`] trait the module (or the userspace fallback)
//! implements.

use super::types::{PageShift, Perm, WindowGeometry};

/// Names one host IOMMU table (one `iommu_table` of a VFIO group) for the [`Host`] implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostTableId(pub u32);

/// Geometry of a host table, in host pages (Linux `it_page_shift`, `it_offset`, `it_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostGeometry {
    /// Host IOMMU page shift.
    pub page_shift: PageShift,
    /// First bus page of the table, in host pages.
    pub offset: u64,
    /// Number of host pages.
    pub size: u64,
}

/// One host table entry: host physical address | W | R, or 0 when empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HostTce(pub u64);

impl HostTce {
    /// The empty entry.
    pub const EMPTY: HostTce = HostTce(0);

    /// An entry mapping `hpa` (aligned to the host page) with `perm`.
    pub const fn new(hpa: u64, perm: Perm) -> HostTce {
        HostTce(hpa | perm.bits())
    }

    /// Host physical address the entry maps.
    pub const fn hpa(self) -> u64 {
        self.0 & !0x3
    }

    /// Direction the entry allows.
    pub const fn perm(self) -> Perm {
        super::types::Tce(self.0).perm()
    }
}

/// How a preregistered region backs one user address: `ua` lies in a physically contiguous, naturally
/// aligned host page of `2^page_shift` bytes that starts at `page_hpa`.
///
/// For Linux's `mm_iommu_table_group_mem_t`, `page_shift` is the region's `pageshift` (the smallest
/// page over the whole region) and `page_hpa` the start of that page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backing {
    /// Host physical address of the start of the backing page.
    pub page_hpa: u64,
    /// Shift of the backing page (>= 12).
    pub page_shift: u32,
}

/// A hold a [`Host`] keeps on a preregistered region for one validated mapping (Linux: one
/// `mm_iommu_mapped_inc` on its `mm_iommu_table_group_mem_t`), as an opaque token the core only carries:
/// taken by [`Host::take_region`] during validation, then either handed to the host table with the entry
/// ([`HostEntry::region`]) or given back with [`Host::put_region`]. [`Region::NONE`] holds nothing (a host
/// that counts no use, or an entry that maps nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Region(pub u64);

impl Region {
    /// No hold.
    pub const NONE: Region = Region(0);
}

/// One slot of the plan a batch carries from validation to apply ([`super::window::Window::execute_planned`]):
/// the host entry validation found for one host sub-entry (with the hold taken on its region), which the apply
/// step hands to [`Host::table_run_planned`] as it stands; [`HostEntry::EMPTY`] for an entry that maps nothing.
pub type Planned = HostEntry;

/// One host entry a run writes (see [`Host::table_run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HostEntry {
    /// The new entry.
    pub tce: HostTce,
    /// The user address it maps (0 for an empty entry).
    pub ua: u64,
    /// The hold on its region taken at validation, which the run takes over; [`Region::NONE`] when none was
    /// taken (the host then counts its own use, as before plans).
    pub region: Region,
}

impl HostEntry {
    /// The empty entry.
    pub const EMPTY: HostEntry = HostEntry { tce: HostTce::EMPTY, ua: 0, region: Region::NONE };
}

/// Why a user address could not be turned into a host physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XlateError {
    /// No preregistered region covers `[ua, ua + page)`.
    NotPreregistered,
    /// The backing page is smaller than the IOMMU page (Linux `mm_iommu_ua_to_hpa` gives -EFAULT).
    PageTooSmall,
}

/// Everything the core needs from its surroundings for one window's hypercalls.
///
/// The kernel module implements it over KVM memslots, the mm's preregistered regions and the linked
/// `iommu_table`s; the userspace fallback over its own memory map and VFIO.
pub trait Host {
    /// Guest physical to user address through the memslots (Linux `kvmppc_tce_to_ua`). `gpa` has the
    /// permission bits cleared. `None` when no memslot holds it.
    fn gpa_to_ua(&self, gpa: u64) -> Option<u64>;

    /// The preregistered region covering `[ua, ua + len)` and how it backs `ua` (Linux
    /// `mm_iommu_lookup` + the region's page table). `None` when not preregistered.
    fn prereg_lookup(&self, ua: u64, len: u64) -> Option<Backing>;

    /// [`ua_to_hpa`] for a mapping the core has validated and will apply under the same lock, with a hold on
    /// the region that keeps it registered until the entry is written or the hold given back
    /// ([`Host::put_region`]). The default takes no hold ([`Region::NONE`]).
    fn take_region(&self, ua: u64, shift: PageShift) -> Result<(u64, Region), XlateError> {
        ua_to_hpa(self, ua, shift).map(|hpa| (hpa, Region::NONE))
    }

    /// Gives back a hold [`Host::take_region`] took, for a mapping that will not be written (the batch was
    /// refused). Never called with [`Region::NONE`]. The default does nothing.
    fn put_region(&self, region: Region) {
        let _ = region;
    }

    /// Geometry of host table `id`; `None` if it is gone.
    fn table_geometry(&self, id: HostTableId) -> Option<HostGeometry>;

    /// Whether `count` entries from `first` of table `id` can take mappings without allocating or
    /// failing (levels present). `false` makes the entry `H_TOO_HARD`.
    fn table_ready(&self, id: HostTableId, first: u64, count: u64) -> bool;

    /// Exchanges entry `index` of table `id` without invalidation (Linux `iommu_tce_xchg_no_kill`) and
    /// returns the old entry. `ua` is the user address `new` maps (0 for an empty entry): Linux records it
    /// beside the entry (`it_userspace`) and counts a use of its preregistered region, which VFIO relies on
    /// when it clears the table. The implementation drops the reference the old entry held and marks its
    /// page dirty when it allowed device writes. Called only for entries `table_ready` accepted (for
    /// mappings) under the same lock; clearing an entry below a missing level must do nothing.
    fn table_exchange(&mut self, id: HostTableId, index: u64, new: HostTce, ua: u64) -> HostTce;

    /// Writes entries `first..first + count` of table `id` without invalidation, entry `first + k` getting
    /// `entry(self, k)`: the new entry and the user address it maps (0 for an empty entry), as
    /// [`Host::table_exchange`] takes them, and the region hold validation took for it. Called under the
    /// same rules as `table_exchange`. The run owns every entry's hold from the call on: the entry keeps it, or
    /// the run gives it back ([`Host::put_region`]), also for entries of a failed run it never wrote.
    ///
    /// The default exchanges the entries one by one and cannot fail (each exchange counts its own use; the
    /// hold is given back after it). A host with a batched update (the kernel's `iommu_tce_set_multi_no_kill`:
    /// one parent `H_PUT_TCE_INDIRECT` per 512 entries on a pseries host) may fail as a whole when its parent
    /// refuses part of the run: it then leaves the range empty, with every reference its old and new entries
    /// held released, and returns [`RunFailed`].
    fn table_run(
        &mut self,
        id: HostTableId,
        first: u64,
        count: u64,
        entry: &dyn Fn(&Self, u64) -> HostEntry,
    ) -> Result<(), RunFailed> {
        run_each(self, id, first, count, entry);
        Ok(())
    }

    /// [`Host::table_run`] of the run `entries` (entry `first + k` getting `entries[k]`), whose entries are all
    /// known before the run: a validated batch's plan. Same rules and contract as `table_run`, whose entry
    /// `k` is `entries[k]`; the default is that call.
    fn table_run_planned(&mut self, id: HostTableId, first: u64, entries: &[HostEntry]) -> Result<(), RunFailed> {
        self.table_run(id, first, entries.len() as u64, &|_: &Self, k| {
            usize::try_from(k).ok().and_then(|k| entries.get(k)).copied().unwrap_or(HostEntry::EMPTY)
        })
    }

    /// Invalidates `count` entries from `first` of table `id` (Linux `iommu_tce_kill`): once per batch.
    fn table_kill(&mut self, id: HostTableId, first: u64, count: u64);

    /// Copies `buf.len()` big-endian TCE words at user address `ua` into `buf`, once (`copy_from_user`).
    /// Each word is stored as loaded (`u64::from_ne_bytes`); the core decodes them. `false` on fault.
    fn read_tce_list(&mut self, ua: u64, buf: &mut [u64]) -> bool;
}

/// [`Host::table_run`]'s default: [`Host::table_exchange`] entry by entry (for implementations that batch
/// only sometimes).
pub fn run_each<H: Host + ?Sized>(
    host: &mut H,
    id: HostTableId,
    first: u64,
    count: u64,
    entry: &dyn Fn(&H, u64) -> HostEntry,
) {
    for k in 0..count {
        let e = entry(host, k);
        host.table_exchange(id, first + k, e.tce, e.ua);
        if e.region != Region::NONE {
            host.put_region(e.region);
        }
    }
}

/// A [`Host::table_run`] the host's parent refused part of: the range is left empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunFailed;

/// The host physical address for the IOMMU page of `2^shift` bytes at `ua`, with Linux's page-size rule:
/// refused when the backing page is smaller than the IOMMU page; a 4 KiB IOMMU page in a 64 KiB host page
/// maps the 4 KiB slice: `page_hpa | (ua & (backing - 1) & !(4K - 1))`.
pub fn ua_to_hpa<H: Host + ?Sized>(host: &H, ua: u64, shift: PageShift) -> Result<u64, XlateError> {
    let backing = host.prereg_lookup(ua, shift.size()).ok_or(XlateError::NotPreregistered)?;
    if backing.page_shift < shift.get() || backing.page_shift >= 64 {
        return Err(XlateError::PageTooSmall);
    }
    let in_page = ua & ((1u64 << backing.page_shift) - 1);
    Ok(backing.page_hpa | (in_page & !shift.offset_mask()))
}

/// Why a host table cannot be linked to a window (the ioctl answers EINVAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// Host page larger than the window page.
    PageTooLarge,
    /// Bus offsets differ.
    OffsetMismatch,
    /// The host table does not cover the whole window.
    TooSmall,
    /// The window already has [`MAX_LINKS`] tables.
    TooManyLinks,
    /// The host table is unknown to the [`Host`].
    UnknownTable,
}

/// Most host tables linked to one window.
pub const MAX_LINKS: usize = 8;

/// Linux `kvm_spapr_tce_attach_iommu_group`'s test: host page <= window page, same bus offset in bytes,
/// host size in bytes >= window size in bytes (any overflow counts as a mismatch).
pub fn check_link(window: &WindowGeometry, host: &HostGeometry) -> Result<(), LinkError> {
    if host.page_shift > window.page_shift() {
        return Err(LinkError::PageTooLarge);
    }
    let hs = host.page_shift.get();
    let host_start = host.offset.checked_shl(hs).filter(|v| v >> hs == host.offset);
    if host_start != Some(window.bus_start()) {
        return Err(LinkError::OffsetMismatch);
    }
    // Compare sizes in host pages: window pages << (window shift - host shift).
    let diff = window.page_shift().get() - hs;
    let window_in_host = window.size().checked_shl(diff).filter(|v| v >> diff == window.size());
    match window_in_host {
        Some(need) if host.size >= need => Ok(()),
        _ => Err(LinkError::TooSmall),
    }
}

/// Picks the group's table to link (Linux: the first of `tables[]` that passes [`check_link`]).
pub fn pick_group_table(
    window: &WindowGeometry,
    tables: &[(HostTableId, HostGeometry)],
) -> Result<HostTableId, LinkError> {
    let mut err = LinkError::UnknownTable;
    for (id, geometry) in tables {
        match check_link(window, geometry) {
            Ok(()) => return Ok(*id),
            Err(e) => err = e,
        }
    }
    Err(err)
}

/// One linked host table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// The table.
    pub id: HostTableId,
    /// Its page shift (cached at link time; the table's geometry does not change while linked).
    pub page_shift: PageShift,
    /// How many times it was linked (Linux keeps a kref per table).
    pub refs: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64K host pages whose physical addresses run backwards; nothing else.
    struct Pages64k;

    impl Host for Pages64k {
        fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
            Some(gpa)
        }
        fn prereg_lookup(&self, ua: u64, len: u64) -> Option<Backing> {
            (ua.checked_add(len)? <= 1 << 22)
                .then(|| Backing { page_hpa: 0x100_0000 - (ua >> 16 << 16), page_shift: 16 })
        }
        fn table_geometry(&self, _: HostTableId) -> Option<HostGeometry> {
            None
        }
        fn table_ready(&self, _: HostTableId, _: u64, _: u64) -> bool {
            true
        }
        fn table_exchange(&mut self, _: HostTableId, _: u64, _: HostTce, _: u64) -> HostTce {
            HostTce::EMPTY
        }
        fn table_kill(&mut self, _: HostTableId, _: u64, _: u64) {}
        fn read_tce_list(&mut self, _: u64, _: &mut [u64]) -> bool {
            false
        }
    }

    #[test]
    fn four_k_tce_maps_slice_of_64k_page() {
        // Notes: hpa = pinned page hpa | (ua & 0xFFFF & !0xFFF).
        let h = Pages64k;
        assert_eq!(ua_to_hpa(&h, 0x1_3000, PageShift::SZ_4K), Ok((0x100_0000 - 0x1_0000) | 0x3000));
        assert_eq!(ua_to_hpa(&h, 0x1_0000, PageShift::SZ_64K), Ok(0x100_0000 - 0x1_0000));
        // Linux mm_iommu_ua_to_hpa: page shift larger than the backing page -> refused.
        assert_eq!(ua_to_hpa(&h, 0, PageShift::SZ_2M), Err(XlateError::PageTooSmall));
        assert_eq!(ua_to_hpa(&h, 1 << 22, PageShift::SZ_4K), Err(XlateError::NotPreregistered));
    }

    #[test]
    fn link_compatibility_follows_attach_iommu_group() {
        let w = WindowGeometry::new(PageShift::SZ_64K, (1u64 << 59) >> 16, 1 << 20).unwrap();
        let ok = HostGeometry { page_shift: PageShift::SZ_4K, offset: (1u64 << 59) >> 12, size: 1 << 24 };
        assert_eq!(check_link(&w, &ok), Ok(()));
        assert_eq!(check_link(&w, &HostGeometry { size: (1 << 24) - 1, ..ok }), Err(LinkError::TooSmall));
        assert_eq!(check_link(&w, &HostGeometry { offset: 0, ..ok }), Err(LinkError::OffsetMismatch));
        let big = HostGeometry { page_shift: PageShift::SZ_16M, offset: (1u64 << 59) >> 24, size: 1 << 20 };
        assert_eq!(check_link(&w, &big), Err(LinkError::PageTooLarge));
        // A group's first compatible table wins.
        let tables = [(HostTableId(7), big), (HostTableId(8), ok)];
        assert_eq!(pick_group_table(&w, &tables), Ok(HostTableId(8)));
    }
}
