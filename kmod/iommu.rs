// SPDX-License-Identifier: GPL-2.0

//! The powerpc IOMMU side of the C edge: hardware tables (`struct iommu_table`, [`ARef`]-counted with
//! `iommu_tce_table_get`/`put`), the user address kept beside each entry (`it_userspace`), and the VMM's
//! preregistered memory (`mm_iommu_*`), whose regions are freed with `call_rcu`: a [`Prereg`] exists only
//! inside an RCU read section, and a [`MappedUse`] (one `mm_iommu_mapped_inc`) is what keeps a region
//! registered after it.

use crate::ffi::RcuReader;
use core::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use core::marker::{PhantomData, PhantomPinned};
use core::ptr::NonNull;
use kernel::mm::Mm;
use kernel::sync::aref::{ARef, AlwaysRefCounted};

macro_rules! opaque {
    ($($(#[$m:meta])* $name:ident;)*) => {$(
        $(#[$m])*
        #[repr(C)]
        pub(crate) struct $name {
            _data: [u8; 0],
            _marker: PhantomData<(*mut u8, PhantomPinned)>,
        }
    )*};
}

opaque! {
    /// `struct iommu_group`.
    IommuGroup;
    /// `struct iommu_table`.
    ///
    /// # Invariants
    /// A `&IommuTable` is a live table on which someone holds a reference (`it_kref`) for the borrow.
    IommuTable;
    /// `struct mm_iommu_table_group_mem_t`: one preregistered region.
    MmIommuMem;
}

/// `enum dma_data_direction`.
pub(crate) const DMA_BIDIRECTIONAL: c_int = 0;
pub(crate) const DMA_TO_DEVICE: c_int = 1;
pub(crate) const DMA_FROM_DEVICE: c_int = 2;
pub(crate) const DMA_NONE: c_int = 3;

unsafe extern "C" {
    // kmod/glue.c
    fn pvtce_glue_group_table(grp: *mut IommuGroup, i: c_int) -> *mut IommuTable;
    fn pvtce_glue_table_geometry(
        tbl: *mut IommuTable,
        page_shift: *mut u32,
        offset: *mut u64,
        size: *mut u64,
        kills: *mut bool,
    );
    fn pvtce_glue_useraddrptr(tbl: *mut IommuTable, entry: c_long, alloc: bool) -> *mut u64;
    fn pvtce_glue_set_dirty(mm: *mut c_void, hpa: u64, page_shift: u32);

    // arch/powerpc/kernel/iommu.c; `struct mm_struct *` is passed as `void *` (see kmod/ffi.rs).
    fn iommu_tce_table_get(tbl: *mut IommuTable) -> *mut IommuTable;
    fn iommu_tce_table_put(tbl: *mut IommuTable) -> c_int;
    fn iommu_tce_xchg_no_kill(
        mm: *mut c_void,
        tbl: *mut IommuTable,
        entry: c_ulong,
        hpa: *mut c_ulong,
        direction: *mut c_int,
    ) -> c_long;
    fn iommu_tce_kill(tbl: *mut IommuTable, entry: c_ulong, pages: c_ulong);
    // patches/linux/0008
    fn iommu_tce_set_multi_no_kill(tbl: *mut IommuTable, entry: c_ulong, npages: c_ulong, tces: *const u64) -> c_long;

    // arch/powerpc/mm/book3s64/iommu_api.c
    fn mm_iommu_lookup(mm: *mut c_void, ua: c_ulong, size: c_ulong) -> *mut MmIommuMem;
    fn mm_iommu_ua_to_hpa(mem: *mut MmIommuMem, ua: c_ulong, pageshift: c_uint, hpa: *mut c_ulong) -> c_long;
    fn mm_iommu_mapped_inc(mem: *mut MmIommuMem) -> c_long;
    fn mm_iommu_mapped_dec(mem: *mut MmIommuMem);
}

// SAFETY: `iommu_tce_table_get` on a table with a reference cannot fail (`kref_get_unless_zero` of a non-zero
// count) and keeps the table until the matching `iommu_tce_table_put`; every table is counted (`it_kref`).
unsafe impl AlwaysRefCounted for IommuTable {
    fn inc_ref(&self) {
        // SAFETY: `self` is live with a reference held (type invariant), so the get succeeds.
        unsafe { iommu_tce_table_get(self.as_ptr()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up one reference.
        unsafe { iommu_tce_table_put(obj.as_ptr()) };
    }
}

// SAFETY: table references are counted atomically, and the xchg/kill callbacks take the table's own locks
// where the hardware needs them.
unsafe impl Send for IommuTable {}
// SAFETY: see `Send`.
unsafe impl Sync for IommuTable {}

/// Geometry of a host table: (page shift, offset in pages, size in pages).
#[derive(Clone, Copy)]
pub(crate) struct TableGeometry {
    pub(crate) page_shift: u32,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    /// The table's ops have a `tce_kill` (powernv); without one (pseries) `iommu_tce_kill` does nothing, and
    /// [`IommuTable::kill`] is not worth its out-of-line call on the hypercall path.
    pub(crate) kills: bool,
}

impl IommuTable {
    /// The group's table `i` (0 or 1), referenced; `None` if the group has no such table or it is going.
    ///
    /// # Safety
    /// `grp` must be a live VFIO-owned IOMMU group (as handed to the attach hook, which holds it).
    pub(crate) unsafe fn of_group(grp: *mut IommuGroup, i: i32) -> Option<ARef<IommuTable>> {
        // SAFETY: `grp` is live by the caller's guarantee.
        let t = unsafe { pvtce_glue_group_table(grp, i) };
        if t.is_null() {
            return None;
        }
        // SAFETY: `t` is one of the group's tables, which the group keeps allocated; the get takes a
        // reference, or returns NULL when the count already dropped to zero.
        let t = NonNull::new(unsafe { iommu_tce_table_get(t) })?;
        // SAFETY: we own the reference just taken (INVARIANT: it keeps the table live).
        Some(unsafe { ARef::from_raw(t) })
    }

    pub(crate) fn as_ptr(&self) -> *mut IommuTable {
        core::ptr::from_ref(self).cast_mut()
    }

    pub(crate) fn geometry(&self) -> TableGeometry {
        let (mut page_shift, mut offset, mut size, mut kills) = (0u32, 0u64, 0u64, false);
        // SAFETY: the table is live (type invariant); the out pointers are valid.
        unsafe { pvtce_glue_table_geometry(self.as_ptr(), &mut page_shift, &mut offset, &mut size, &mut kills) };
        TableGeometry { page_shift, offset, size, kills }
    }

    /// The user address slot kept beside entry `entry` (`it_userspace`), allocating its level if asked.
    pub(crate) fn useraddr(&self, entry: u64, alloc: bool) -> Option<UserAddrSlot<'_>> {
        // SAFETY: the table is live; it checks `entry` against its size and returns NULL when out of range or
        // (without `alloc`) not allocated.
        let p = unsafe { pvtce_glue_useraddrptr(self.as_ptr(), entry as c_long, alloc) };
        // INVARIANT: non-null slots live as long as the table, which the borrow of `self` keeps alive.
        (!p.is_null()).then_some(UserAddrSlot { ptr: p, _table: PhantomData })
    }

    /// Exchanges entry `entry` (absolute, as Linux numbers them) without invalidation; marks the old page
    /// dirty when the old entry allowed device writes. Returns the old (hpa, direction).
    pub(crate) fn exchange(&self, mm: &Mm, entry: u64, hpa: u64, dir: c_int) -> Result<(u64, c_int), c_long> {
        let mut h = hpa as c_ulong;
        let mut d = dir;
        // SAFETY: the table is live; `mm` is borrowed, so alive; the out pointers are valid.
        let r = unsafe { iommu_tce_xchg_no_kill(mm.as_raw().cast(), self.as_ptr(), entry as c_ulong, &mut h, &mut d) };
        if r != 0 {
            return Err(r);
        }
        Ok((h as u64, d))
    }

    /// Writes `tces.len()` entries from `entry` (absolute), each `hpa | TCE_PCI_READ/WRITE` or 0, without
    /// invalidation and without reading the old entries (one parent H_PUT_TCE_INDIRECT per 512 on pseries).
    /// No page is marked dirty. On an error the range's entries are undefined.
    pub(crate) fn set_multi(&self, entry: u64, tces: &[u64]) -> Result<(), c_long> {
        // SAFETY: the table is live; `tces` is valid for `tces.len()` reads; the kernel checks the range.
        let r = unsafe {
            iommu_tce_set_multi_no_kill(self.as_ptr(), entry as c_ulong, tces.len() as c_ulong, tces.as_ptr())
        };
        if r != 0 {
            return Err(r);
        }
        Ok(())
    }

    /// Empties `pages` entries from `entry` (absolute) without invalidation (one parent H_STUFF_TCE per 512
    /// on pseries).
    pub(crate) fn clear_multi(&self, entry: u64, pages: u64) -> Result<(), c_long> {
        // SAFETY: the table is live; a NULL list clears; the kernel checks the range.
        let r = unsafe {
            iommu_tce_set_multi_no_kill(self.as_ptr(), entry as c_ulong, pages as c_ulong, core::ptr::null())
        };
        if r != 0 {
            return Err(r);
        }
        Ok(())
    }

    /// One invalidation for `pages` entries from `entry`.
    pub(crate) fn kill(&self, entry: u64, pages: u64) {
        // SAFETY: the table is live (type invariant).
        unsafe { iommu_tce_kill(self.as_ptr(), entry as c_ulong, pages as c_ulong) }
    }
}

/// One `it_userspace` slot: the big-endian user address mapped by a hardware entry.
///
/// pvtce writes it under the window lock, after its update of the entry: an `iommu_tce_xchg_no_kill`, or the
/// batched `iommu_tce_set_multi_no_kill`, which reads no old entry back, so there the slot alone says whether
/// the old entry held a use. VFIO writes it too, without that lock: when the VMM maps through the same table
/// (`tce_iommu_build_v2`), and when it clears entries (`tce_iommu_clear`, after its own exchange: a VMM's
/// `UNMAP_DMA`, or its container going). So the slot is the token of the entry's use: each side that drops
/// the use empties the slot first by one exchange ([`UserAddrSlot::take`]; VFIO's `tce_iommu_unuse_page_v2`
/// with patches/linux/0012), and only the side that got the address drops it (docs/design.md, "The release
/// race with VFIO's clear"). A store is volatile because the other side's accesses include plain C loads and
/// stores of an aligned word.
///
/// # Invariants
/// `ptr` points at an aligned word of the table's userspace array, alive while the borrowed table is.
#[derive(Clone, Copy)]
pub(crate) struct UserAddrSlot<'a> {
    ptr: *mut u64,
    _table: PhantomData<&'a IommuTable>,
}

impl UserAddrSlot<'_> {
    pub(crate) fn set(&self, ua: u64) {
        // SAFETY: valid and aligned by the type invariant; see the type's note on who writes it.
        unsafe { core::ptr::write_volatile(self.ptr, ua.to_be()) }
    }

    /// Empties the slot and returns the address it held, in one exchange. Of two clears of the entry that race
    /// (pvtce's and VFIO's, which takes the slot with the kernel's `xchg`: patches/linux/0012), exactly one gets
    /// the address and drops its use. A `core` atomic (inline `ldarx`/`stdcx.` with full barriers, as the
    /// kernel's `xchg`): the kernel crate's atomics are calls to C helpers on powerpc (kmod/lock.rs).
    pub(crate) fn take(&self) -> u64 {
        // SAFETY: `ptr` is valid and 8-byte aligned for as long as `self` (the type invariant). The other side
        // accesses the word by `xchg` or by aligned word loads and stores, which do not tear on powerpc.
        let word = unsafe { core::sync::atomic::AtomicU64::from_ptr(self.ptr) };
        u64::from_be(word.swap(0, core::sync::atomic::Ordering::SeqCst))
    }
}

/// One preregistered region, found inside the RCU read section `'rcu`: `mm_iommu_put` frees an unregistered
/// region with `call_rcu`, so the pointer is only good while that section lasts.
///
/// # Invariants
/// `mem` came from `mm_iommu_lookup` while the RCU read lock borrowed as `'rcu` was held.
#[derive(Clone, Copy)]
pub(crate) struct Prereg<'rcu> {
    mem: *mut MmIommuMem,
    _rcu: PhantomData<&'rcu ()>,
}

/// The preregistered region of `mm` covering `[ua, ua + size)`, valid while the read section `rcu` lasts.
pub(crate) fn prereg_lookup<'rcu>(_rcu: &'rcu impl RcuReader, mm: &Mm, ua: u64, size: u64) -> Option<Prereg<'rcu>> {
    // SAFETY: `mm` is borrowed, so alive; the lookup walks the mm's region list under RCU.
    let mem = unsafe { mm_iommu_lookup(mm.as_raw().cast(), ua as c_ulong, size as c_ulong) };
    // INVARIANT: found with `_rcu` held.
    (!mem.is_null()).then_some(Prereg { mem, _rcu: PhantomData })
}

/// Host physical address for the IOMMU page of `2^shift` at `ua` of region `mem`.
///
/// # Safety
/// `mem` must not be freed for the duration of the call.
unsafe fn ua_to_hpa(mem: *mut MmIommuMem, ua: u64, shift: u32) -> Option<u64> {
    let mut hpa: c_ulong = 0;
    // SAFETY: `mem` is alive by the caller's guarantee; `hpa` is a valid out pointer.
    let r = unsafe { mm_iommu_ua_to_hpa(mem, ua as c_ulong, shift as c_uint, &mut hpa) };
    (r == 0).then_some(hpa as u64)
}

impl<'rcu> Prereg<'rcu> {
    /// Host physical address for the IOMMU page of `2^shift` at `ua`; `None` when the region's pages are
    /// smaller than `2^shift` or `ua` is outside it.
    pub(crate) fn ua_to_hpa(&self, ua: u64, shift: u32) -> Option<u64> {
        // SAFETY: the RCU read section `'rcu` is held (type invariant), so the region is not freed.
        unsafe { ua_to_hpa(self.mem, ua, shift) }
    }

    /// Counts one more hardware entry using the region; `None` once the VMM unregistered it (the count
    /// dropped to zero). While the returned use lives the VMM's unregister fails with EBUSY.
    pub(crate) fn mapped_inc(&self) -> Option<MappedUse> {
        // SAFETY: the region is not freed while `'rcu` is held (type invariant).
        if unsafe { mm_iommu_mapped_inc(self.mem) } != 0 {
            return None;
        }
        // INVARIANT: we own the count just taken.
        Some(MappedUse { mem: self.mem })
    }

    /// Drops the use a hardware entry of this region held, when that entry has just been exchanged away.
    ///
    /// # Safety
    /// The caller must own one count on the region taken by a [`MappedUse`] that was [`MappedUse::keep`]-t.
    pub(crate) unsafe fn mapped_dec(&self) {
        // SAFETY: the region is alive (`'rcu`, and the caller's count); the caller gives up its count.
        unsafe { mm_iommu_mapped_dec(self.mem) }
    }
}

/// Marks the page at `hpa` dirty unless it is device memory, as `iommu_tce_xchg_no_kill` does for an old entry
/// that allowed device writes.
///
/// # Safety
/// `hpa` must lie in a page that a preregistered region of `mm` pins for the duration of the call (so it has
/// a `struct page` unless it is device memory, which the glue checks first).
pub(crate) unsafe fn set_dirty(mm: &Mm, hpa: u64, page_shift: u32) {
    // SAFETY: `mm` is borrowed, so alive; `hpa` by the caller's guarantee.
    unsafe { pvtce_glue_set_dirty(mm.as_raw().cast(), hpa, page_shift) }
}

/// One `mm_iommu_mapped_inc` on a region, owned: dropped (`mapped_dec`) on every path unless handed to the
/// hardware entry with [`MappedUse::keep`].
///
/// # Invariants
/// This value owns one mapped count on `mem`, which keeps the region registered and allocated.
pub(crate) struct MappedUse {
    mem: *mut MmIommuMem,
}

impl MappedUse {
    /// As [`Prereg::ua_to_hpa`]; the count keeps the region, no RCU section is needed.
    pub(crate) fn ua_to_hpa(&self, ua: u64, shift: u32) -> Option<u64> {
        // SAFETY: the owned count keeps the region allocated (type invariant).
        unsafe { ua_to_hpa(self.mem, ua, shift) }
    }

    /// The hardware entry now holds the count: it is released when that entry is exchanged away.
    pub(crate) fn keep(self) {
        core::mem::forget(self);
    }
}

// SAFETY: the count may be given up from any thread (`mm_iommu_mapped_dec` is an atomic decrement on a region
// the count keeps alive), so a `MappedUse` may move between threads with the window state that keeps it.
unsafe impl Send for MappedUse {}

impl Drop for MappedUse {
    fn drop(&mut self) {
        // SAFETY: we own one count (type invariant), given up exactly once here; the region is alive.
        unsafe { mm_iommu_mapped_dec(self.mem) }
    }
}
