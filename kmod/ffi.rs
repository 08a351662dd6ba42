// SPDX-License-Identifier: GPL-2.0

//! The one FFI edge of pvtce.ko: the powerpc IOMMU and KVM functions the `kernel` crate does not wrap, and
//! the C glue of kmod/glue.c. Every `unsafe` call into C sits here behind a safe wrapper whose invariants
//! are stated; the rest of the module uses only these wrappers.
//!
//! The C structures are opaque here (`struct iommu_table` and `struct iommu_table_group` are opaque in
//! `kernel::bindings` too): they are only ever handled by pointer.

use core::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use core::marker::{PhantomData, PhantomPinned};
use kernel::prelude::*;

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
    /// `struct kvm`.
    Kvm;
    /// `struct iommu_group`.
    IommuGroup;
    /// `struct iommu_table`.
    IommuTable;
    /// `struct mm_struct`.
    MmStruct;
    /// `struct mm_iommu_table_group_mem_t`: one preregistered region.
    MmIommuMem;
    /// `struct page`.
    Page;
}

/// `enum dma_data_direction`.
pub(crate) const DMA_BIDIRECTIONAL: c_int = 0;
pub(crate) const DMA_TO_DEVICE: c_int = 1;
pub(crate) const DMA_FROM_DEVICE: c_int = 2;
pub(crate) const DMA_NONE: c_int = 3;

unsafe extern "C" {
    // kmod/glue.c
    fn pvtce_glue_register() -> c_int;
    fn pvtce_glue_unregister();
    fn pvtce_glue_window_fd(window: *mut c_void) -> c_int;
    fn pvtce_glue_kvm_get(kvm: *mut Kvm);
    fn pvtce_glue_kvm_put(kvm: *mut Kvm);
    fn pvtce_glue_kvm_mm(kvm: *mut Kvm) -> *mut MmStruct;
    fn pvtce_glue_gpa_to_ua(kvm: *mut Kvm, gpa: u64, ua: *mut u64) -> c_int;
    fn pvtce_glue_copy_from_user(dst: *mut c_void, ua: u64, len: c_ulong) -> c_int;
    fn pvtce_glue_group_table(grp: *mut IommuGroup, i: c_int) -> *mut IommuTable;
    fn pvtce_glue_table_geometry(tbl: *mut IommuTable, page_shift: *mut u32, offset: *mut u64, size: *mut u64);
    fn pvtce_glue_useraddrptr(tbl: *mut IommuTable, entry: c_long, alloc: bool) -> *mut u64;
    fn pvtce_glue_account_locked(kvm: *mut Kvm, pages: c_ulong, inc: bool) -> c_int;
    fn pvtce_glue_host_read(groupfd: c_int, table: u32, first: u64, count: u64, out: *mut u64) -> c_long;
    fn pvtce_glue_timebase() -> u64;
    fn pvtce_glue_kvm_synchronize_srcu(kvm: *mut Kvm);
    fn pvtce_glue_current_mm_is(mm: *mut MmStruct) -> bool;

    // arch/powerpc/kernel/iommu.c
    fn iommu_tce_table_get(tbl: *mut IommuTable) -> *mut IommuTable;
    fn iommu_tce_table_put(tbl: *mut IommuTable) -> c_int;
    fn iommu_tce_xchg_no_kill(
        mm: *mut MmStruct,
        tbl: *mut IommuTable,
        entry: c_ulong,
        hpa: *mut c_ulong,
        direction: *mut c_int,
    ) -> c_long;
    fn iommu_tce_kill(tbl: *mut IommuTable, entry: c_ulong, pages: c_ulong);

    // arch/powerpc/mm/book3s64/iommu_api.c
    fn mm_iommu_lookup(mm: *mut MmStruct, ua: c_ulong, size: c_ulong) -> *mut MmIommuMem;
    fn mm_iommu_ua_to_hpa(mem: *mut MmIommuMem, ua: c_ulong, pageshift: c_uint, hpa: *mut c_ulong) -> c_long;
    fn mm_iommu_mapped_inc(mem: *mut MmIommuMem) -> c_long;
    fn mm_iommu_mapped_dec(mem: *mut MmIommuMem);
}

/// Registers pvtce as KVM's sPAPR TCE backend.
pub(crate) fn register_backend() -> Result {
    // SAFETY: no arguments; the backend's hooks are static C functions of this module, unregistered before
    // the module's text goes away (`unregister_backend` from the module's drop).
    let r = unsafe { pvtce_glue_register() };
    if r < 0 {
        return Err(Error::from_errno(r));
    }
    Ok(())
}

/// Unregisters the backend and waits for hooks still running.
pub(crate) fn unregister_backend() {
    // SAFETY: no arguments; safe to call whether or not registration succeeded.
    unsafe { pvtce_glue_unregister() }
}

/// A counted reference to a `struct kvm`.
///
/// # Invariants
/// `ptr` is a live `struct kvm` on which this value holds one reference (`kvm_get_kvm`).
pub(crate) struct KvmRef {
    ptr: *mut Kvm,
}

// SAFETY: a counted `struct kvm` reference may be used and dropped from any thread.
unsafe impl Send for KvmRef {}
// SAFETY: the wrappers below only call thread-safe KVM functions through `&self`.
unsafe impl Sync for KvmRef {}

impl KvmRef {
    /// Takes a reference on `kvm`.
    ///
    /// # Safety
    /// `kvm` must be a live `struct kvm` (for example the one a KVM hook was called with).
    pub(crate) unsafe fn get(kvm: *mut Kvm) -> Self {
        // SAFETY: `kvm` is live by the caller's guarantee.
        unsafe { pvtce_glue_kvm_get(kvm) };
        // INVARIANT: we just took the reference.
        KvmRef { ptr: kvm }
    }

    pub(crate) fn as_ptr(&self) -> *mut Kvm {
        self.ptr
    }

    /// The VMM's mm (`kvm->mm`), alive as long as the VM.
    pub(crate) fn mm(&self) -> *mut MmStruct {
        // SAFETY: `ptr` is live by the type invariant; the function only reads a field.
        unsafe { pvtce_glue_kvm_mm(self.ptr) }
    }

    /// Waits until every hypercall of this VM that was in flight has returned (they run under kvm->srcu).
    pub(crate) fn synchronize_hcalls(&self) {
        // SAFETY: `self` holds a reference on the VM, so `kvm->srcu` is live.
        unsafe { pvtce_glue_kvm_synchronize_srcu(self.as_ptr()) }
    }

    /// Charges (or uncharges) `pages` to the VMM's locked memory.
    pub(crate) fn account_locked(&self, pages: usize, inc: bool) -> Result {
        // SAFETY: `ptr` is live by the type invariant.
        let r = unsafe { pvtce_glue_account_locked(self.ptr, pages as c_ulong, inc) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }
}

impl Drop for KvmRef {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we hold one reference, dropped exactly once here.
        unsafe { pvtce_glue_kvm_put(self.ptr) }
    }
}

/// Reads `out.len()` hardware entries from `first` of table `table` of the VFIO group behind `groupfd`.
pub(crate) fn host_read(groupfd: i32, table: u32, first: u64, out: &mut [u64]) -> Result {
    // SAFETY: `out` is a valid, exclusively borrowed buffer of `out.len()` u64; the C side resolves and
    // holds the fd itself and checks the range against the table.
    let r = unsafe { pvtce_glue_host_read(groupfd, table, first, out.len() as u64, out.as_mut_ptr()) };
    if r < 0 {
        return Err(Error::from_errno(r as i32));
    }
    Ok(())
}

/// Guest physical address to the VMM's user address through the memslots.
///
/// # Safety
/// `kvm` must be live and the caller must hold `kvm->srcu` (the hypercall hooks do, see glue.c).
pub(crate) unsafe fn gpa_to_ua(kvm: *mut Kvm, gpa: u64) -> Option<u64> {
    let mut ua = 0u64;
    // SAFETY: guaranteed by the caller; `ua` is a valid out pointer.
    let r = unsafe { pvtce_glue_gpa_to_ua(kvm, gpa, &mut ua) };
    (r == 0).then_some(ua)
}

/// The timebase register (the clock L2's `mftb` reads).
pub(crate) fn timebase() -> u64 {
    // SAFETY: reads a register; no arguments.
    unsafe { pvtce_glue_timebase() }
}

/// Whether the calling task's mm is `mm` (compared as pointers, never dereferenced).
pub(crate) fn current_mm_is(mm: *mut MmStruct) -> bool {
    // SAFETY: glue.c compares `current->mm` with the pointer and does not dereference it.
    unsafe { pvtce_glue_current_mm_is(mm) }
}

/// Copies `buf.len()` u64 words from the current task's memory at `ua`, once.
pub(crate) fn copy_words_from_user(ua: u64, buf: &mut [u64]) -> bool {
    let len = core::mem::size_of_val(buf);
    // SAFETY: `buf` is a valid, exclusively borrowed destination of `len` bytes; copy_from_user checks `ua`.
    unsafe { pvtce_glue_copy_from_user(buf.as_mut_ptr().cast(), ua, len as c_ulong) == 0 }
}

/// Creates the window's anon-inode file; its `private_data` is `window`.
///
/// # Safety
/// `window` must stay valid until the file's release calls `pvtce_rs_window_release(window)`.
pub(crate) unsafe fn window_fd(window: *mut c_void) -> Result<i32> {
    // SAFETY: guaranteed by the caller.
    let fd = unsafe { pvtce_glue_window_fd(window) };
    if fd < 0 {
        return Err(Error::from_errno(fd));
    }
    Ok(fd)
}

/// Geometry of a host table: (page shift, offset in pages, size in pages).
#[derive(Clone, Copy)]
pub(crate) struct TableGeometry {
    pub(crate) page_shift: u32,
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

/// A counted reference to one hardware `struct iommu_table` (`iommu_tce_table_get`).
///
/// # Invariants
/// `ptr` is a live table on which this value holds one reference.
pub(crate) struct TableRef {
    ptr: *mut IommuTable,
}

// SAFETY: iommu_table references are counted atomically and its operations are called under the table's
// own locking (the xchg/kill callbacks take the table's locks where the hardware needs them).
unsafe impl Send for TableRef {}
// SAFETY: see `Send`.
unsafe impl Sync for TableRef {}

impl TableRef {
    /// The group's table `i` (0 or 1), referenced; `None` if the group has no such table.
    ///
    /// # Safety
    /// `grp` must be a live VFIO-owned IOMMU group (as handed to the attach hook, which holds it).
    pub(crate) unsafe fn of_group(grp: *mut IommuGroup, i: i32) -> Option<Self> {
        // SAFETY: `grp` is live by the caller's guarantee.
        let t = unsafe { pvtce_glue_group_table(grp, i) };
        if t.is_null() {
            return None;
        }
        // SAFETY: `t` is one of the group's live tables; get returns it with a reference (or NULL when
        // the table is being freed).
        let t = unsafe { iommu_tce_table_get(t) };
        // INVARIANT: non-null means we hold a reference.
        (!t.is_null()).then_some(TableRef { ptr: t })
    }

    pub(crate) fn as_ptr(&self) -> *mut IommuTable {
        self.ptr
    }

    pub(crate) fn geometry(&self) -> TableGeometry {
        let (mut page_shift, mut offset, mut size) = (0u32, 0u64, 0u64);
        // SAFETY: `ptr` is live by the type invariant; the out pointers are valid.
        unsafe { pvtce_glue_table_geometry(self.ptr, &mut page_shift, &mut offset, &mut size) };
        TableGeometry { page_shift, offset, size }
    }

    /// The user address slot kept beside entry `entry` (`it_userspace`), allocating its level if asked.
    pub(crate) fn useraddr(&self, entry: u64, alloc: bool) -> Option<UserAddrSlot<'_>> {
        // SAFETY: `ptr` is live; the table checks `entry` against its size and returns NULL when out of range
        // or (without `alloc`) not allocated.
        let p = unsafe { pvtce_glue_useraddrptr(self.ptr, entry as c_long, alloc) };
        // INVARIANT: non-null slots live as long as the table, which `self` keeps alive.
        (!p.is_null()).then_some(UserAddrSlot { ptr: p, _table: PhantomData })
    }

    /// Exchanges entry `entry` (absolute, as Linux numbers them) without invalidation; marks the old page
    /// dirty when the old entry allowed device writes. Returns the old (hpa, direction).
    pub(crate) fn exchange(&self, mm: *mut MmStruct, entry: u64, hpa: u64, dir: c_int) -> core::result::Result<(u64, c_int), c_long> {
        let mut h = hpa as c_ulong;
        let mut d = dir;
        // SAFETY: `ptr` is live; `mm` is the VM's mm (alive with the VM, which outlives every window);
        // the out pointers are valid.
        let r = unsafe { iommu_tce_xchg_no_kill(mm, self.ptr, entry as c_ulong, &mut h, &mut d) };
        if r != 0 {
            return Err(r);
        }
        Ok((h as u64, d))
    }

    /// One invalidation for `pages` entries from `entry`.
    pub(crate) fn kill(&self, entry: u64, pages: u64) {
        // SAFETY: `ptr` is live by the type invariant.
        unsafe { iommu_tce_kill(self.ptr, entry as c_ulong, pages as c_ulong) }
    }
}

impl Drop for TableRef {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we hold one reference, dropped exactly once here.
        unsafe { iommu_tce_table_put(self.ptr) };
    }
}

/// One `it_userspace` slot: the big-endian user address mapped by a hardware entry.
///
/// # Invariants
/// `ptr` points into the table's userspace array, alive while the borrowed table is.
pub(crate) struct UserAddrSlot<'a> {
    ptr: *mut u64,
    _table: PhantomData<&'a TableRef>,
}

impl UserAddrSlot<'_> {
    pub(crate) fn get(&self) -> u64 {
        // SAFETY: valid by the type invariant; entries are updated under the window's lock only.
        u64::from_be(unsafe { core::ptr::read_volatile(self.ptr) })
    }

    pub(crate) fn set(&self, ua: u64) {
        // SAFETY: as in `get`.
        unsafe { core::ptr::write_volatile(self.ptr, ua.to_be()) }
    }
}

/// One preregistered region (not counted: valid while the VMM keeps it registered, and mapped_inc pins
/// its existence while a hardware entry uses it).
#[derive(Clone, Copy)]
pub(crate) struct Prereg {
    mem: *mut MmIommuMem,
}

/// The preregistered region of `mm` covering `[ua, ua + size)`.
///
/// # Safety
/// `mm` must be live.
pub(crate) unsafe fn prereg_lookup(mm: *mut MmStruct, ua: u64, size: u64) -> Option<Prereg> {
    // SAFETY: `mm` is live by the caller's guarantee; lookup walks the mm's list under RCU.
    let mem = unsafe { mm_iommu_lookup(mm, ua as c_ulong, size as c_ulong) };
    (!mem.is_null()).then_some(Prereg { mem })
}

impl Prereg {
    /// Host physical address for the IOMMU page of `2^shift` at `ua`; `None` when the region's pages are
    /// smaller than `2^shift` or `ua` is outside it.
    pub(crate) fn ua_to_hpa(&self, ua: u64, shift: u32) -> Option<u64> {
        let mut hpa: c_ulong = 0;
        // SAFETY: `mem` came from mm_iommu_lookup and the region stays registered while the VMM runs the
        // hypercall (unregistering fails with EBUSY while entries are mapped); `hpa` is a valid out pointer.
        let r = unsafe { mm_iommu_ua_to_hpa(self.mem, ua as c_ulong, shift as c_uint, &mut hpa) };
        (r == 0).then_some(hpa as u64)
    }

    /// Counts one more hardware entry using the region (the VMM cannot unregister it while counted).
    pub(crate) fn mapped_inc(&self) -> bool {
        // SAFETY: as in `ua_to_hpa`.
        unsafe { mm_iommu_mapped_inc(self.mem) == 0 }
    }

    pub(crate) fn mapped_dec(&self) {
        // SAFETY: as in `ua_to_hpa`; pairs with a successful `mapped_inc`.
        unsafe { mm_iommu_mapped_dec(self.mem) }
    }
}
