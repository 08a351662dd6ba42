// SPDX-License-Identifier: GPL-2.0

//! The guest-visible table's pages: pvtce-core's [`PageStore`] over kmalloc'ed 4 KiB blocks, readable
//! without the window lock ([`SlotsRef::read`], the lockless H_GET_TCE).
//!
//! The core never allocates: when its reserve is short it answers `NeedAlloc`; the caller allocates the blocks
//! with [`KernelStore::alloc`] outside the window lock, hands them over with [`KernelStore::add`] under it, and
//! retries (kmod/hcall.rs).
//!
//! Lockless reads: the block of each page id sits in [`Slots`], an array sized at window creation for every
//! page the window's table can use, so it never moves; every slot of a block is an atomic, written under the
//! window lock (an inner slot with release order, a leaf's TCE with `WRITE_ONCE`, which publishes nothing)
//! and read with [`read_once`] by anyone. That is enough for the walk
//! (the `rcu_dereference` pattern): a block is published (its slot stored with release) after it was zeroed,
//! and an inner entry naming a page id is stored with release after that page's slot, so a reader that loads
//! an id, then the slot at that id, then an entry of that block, has each load depend on the one before and
//! sees what was stored before it. The lock holder reads with [`read_once`] too (it is the only writer). A
//! block is freed only at the window's release (after the registry's RCU grace period, kmod/registry.rs) or
//! with the window.

use crate::once::{read_once, write_once};
use crate::pvtce_core::table::{GuestTable, PageId, PageStore, ENTRIES_PER_PAGE};
use core::cell::Cell;
use kernel::prelude::*;
use kernel::sync::atomic::{Atomic, Relaxed, Release};
use kernel::sync::Arc;

type Block = [Atomic<u64>; ENTRIES_PER_PAGE as usize];

/// Most table pages one window may hold: enough for every entry of a 1 TiB window of 4 KiB pages plus its
/// inner levels (2^28 entries / 512 = 524288 leaves + 1025 inner pages), and a bound on what a guest can
/// make the host allocate.
pub(crate) const MAX_PAGES: usize = 525_400;

/// Pages a table of `size` entries can use: every page of every level.
fn max_pages(size: u64) -> usize {
    let levels = GuestTable::new(size).levels();
    let mut total = 0u64;
    let mut span = 1u64;
    for _ in 0..levels {
        span = span.saturating_mul(ENTRIES_PER_PAGE);
        total = total.saturating_add(size.div_ceil(span));
    }
    usize::try_from(total).unwrap_or(usize::MAX).min(MAX_PAGES)
}

/// The block of each page id, null where none; shared by the window (lockless readers) and its store.
pub(crate) struct Slots(KVVec<Atomic<*mut Block>>);

/// A reference to the [`Slots`] that also keeps where their array lies, so that a reader reaches a block's
/// pointer from its own structure in one load rather than through the `Arc`'s allocation first: under TCG
/// each block a hypercall first touches costs a TLB fill (docs/bench/analysis.md).
///
/// # Invariants
/// `ptr` and `len` are those of `owner`'s array, which is never resized (it is filled once, in
/// [`KernelStore::new`], before any `Slots` is shared).
pub(crate) struct SlotsRef {
    ptr: *const Atomic<*mut Block>,
    len: usize,
    owner: Arc<Slots>,
}

// SAFETY: a `SlotsRef` is an `Arc<Slots>` (whose contents are atomics) plus a view of its array that only
// hands out shared references to those atomics; sending or sharing it is sending or sharing the `Arc`.
unsafe impl Send for SlotsRef {}
// SAFETY: as for `Send`.
unsafe impl Sync for SlotsRef {}

impl SlotsRef {
    fn new(owner: Arc<Slots>) -> SlotsRef {
        // INVARIANT: the array is not resized after this (nothing pushes to a shared `Slots`).
        SlotsRef { ptr: owner.0.as_ptr(), len: owner.0.len(), owner }
    }

    /// The array.
    #[inline(always)]
    fn slots(&self) -> &[Atomic<*mut Block>] {
        // SAFETY: `ptr` and `len` describe `owner`'s array (type invariant), which lives as long as `owner`,
        // which `self` keeps.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Another reference to the same slots.
    fn share(&self) -> SlotsRef {
        SlotsRef { ptr: self.ptr, len: self.len, owner: self.owner.clone() }
    }

    /// Slot `index` of page `page`, 0 for a page that has no block: safe with or without the window lock.
    pub(crate) fn read(&self, page: PageId, index: usize) -> u64 {
        let Some(slot) = usize::try_from(page.0).ok().and_then(|i| self.slots().get(i)) else {
            return 0;
        };
        let b = read_once(slot);
        if b.is_null() {
            return 0;
        }
        // SAFETY: a non-null slot points at a block from `KBox::into_raw` (`take`), freed only after it was
        // nulled, at the window's release or drop, when no reader can still run (the module doc); the block's
        // slots are atomics, so reading while the lock holder writes is allowed, and the load above orders
        // the block's reads (address dependency, the module doc).
        let block = unsafe { &*b };
        block.get(index).map_or(0, read_once)
    }
}

/// Pages taken from the reserve have their block in `slots[id]`; freed ids are reused.
///
/// # Invariants
/// `live + reserve.len() <= slots.len()` where `live = used - free_ids.len()`, so `take` always finds an id;
/// every non-null slot owns its block (from `KBox::into_raw`); every entry of `recent` with a non-zero address
/// is `(id, address of the block in slots[id])` for a live id.
pub(crate) struct KernelStore {
    slots: SlotsRef,
    /// Ids `0..used` have been handed out at least once.
    used: usize,
    free_ids: KVec<u64>,
    reserve: KVec<KBox<Block>>,
    /// The blocks of the root (entry 0) and of the last other page [`KernelStore::block`] found, by id: a walk
    /// of the table (root, then a leaf, often the last one again) then reads no `Slots` array. Under TCG each
    /// block a hypercall touches first costs a TLB fill, and a call's walks come before and after its parent
    /// hypercall, after which they cost again (docs/bench/analysis.md).
    recent: Cell<[(u64, usize); 2]>,
}

/// Zeroed blocks allocated outside any lock, to be handed to [`KernelStore::add`].
pub(crate) struct Blocks(KVec<KBox<Block>>);

impl KernelStore {
    /// An empty store for a table of `size` entries, and the slots a lockless reader reads it through.
    pub(crate) fn new(size: u64) -> Result<(Self, SlotsRef)> {
        let n = max_pages(size);
        let mut v = KVVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            v.push(Atomic::new(core::ptr::null_mut()), GFP_KERNEL)?;
        }
        let slots = SlotsRef::new(Arc::new(Slots(v), GFP_KERNEL)?);
        let recent = Cell::new([(0, 0); 2]);
        Ok((KernelStore { slots: slots.share(), used: 0, free_ids: KVec::new(), reserve: KVec::new(), recent }, slots))
    }

    /// Allocates `n` zeroed blocks (call without the window lock held).
    pub(crate) fn alloc(n: usize) -> Result<Blocks> {
        let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            v.push(KBox::new([const { Atomic::new(0) }; ENTRIES_PER_PAGE as usize], GFP_KERNEL)?, GFP_KERNEL)?;
        }
        Ok(Blocks(v))
    }

    /// Adds blocks to the reserve (under the window lock; may grow the bookkeeping vectors).
    pub(crate) fn add(&mut self, blocks: Blocks) -> Result {
        let live = self.used - self.free_ids.len();
        let total = live.saturating_add(self.reserve.len()).saturating_add(blocks.0.len());
        if total > self.slots.slots().len() {
            return Err(ENOMEM);
        }
        self.free_ids.reserve(total.saturating_sub(self.free_ids.len()), GFP_KERNEL)?;
        self.reserve.reserve(blocks.0.len(), GFP_KERNEL)?;
        for b in blocks.0 {
            // Cannot fail: capacity reserved just above.
            self.reserve.push(b, GFP_NOWAIT)?;
        }
        // INVARIANT: checked above against `slots.len()`.
        Ok(())
    }

    fn block(&self, page: PageId) -> Option<&Block> {
        let recent = self.recent.get();
        let at = usize::from(page.0 != 0);
        if let Some(&(id, addr)) = recent.get(at) {
            if id == page.0 && addr != 0 {
                // SAFETY: `addr` is the block of live id `page` (type invariant), which only `free` or `drop`
                // (both `&mut self`) release, so it lives for this borrow.
                return Some(unsafe { &*(addr as *const Block) });
            }
        }
        let b = read_once(self.slots.slots().get(usize::try_from(page.0).ok()?)?);
        if !b.is_null() {
            let mut r = recent;
            if let Some(e) = r.get_mut(at) {
                // INVARIANT: `b` is the block in `slots[page]`, non-null, so `page` is live.
                *e = (page.0, b as usize);
            }
            self.recent.set(r);
        }
        // SAFETY: a non-null slot owns its block (type invariant), which only `free` or `drop` (both `&mut
        // self`) release, so it lives for this borrow.
        (!b.is_null()).then(|| unsafe { &*b })
    }
}

impl PageStore for KernelStore {
    fn take(&mut self) -> Option<PageId> {
        let b = self.reserve.pop()?;
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => {
                let id = self.used as u64;
                self.used += 1;
                id
            }
        };
        // By the type invariant `id < slots.len()` and the slot is null.
        let slot = self.slots.slots().get(usize::try_from(id).ok()?)?;
        // Release: a lockless reader that finds this block sees it zeroed.
        slot.store(KBox::into_raw(b), Release);
        Some(PageId(id))
    }

    fn available(&self) -> usize {
        self.reserve.len()
    }

    fn read(&self, page: PageId, index: usize) -> u64 {
        self.block(page).and_then(|b| b.get(index)).map_or(0, read_once)
    }

    fn write(&mut self, page: PageId, index: usize, value: u64) {
        if let Some(e) = self.block(page).and_then(|b| b.get(index)) {
            // Release: a reader that follows an inner slot to a page sees what was written there before.
            e.store(value, Release);
        }
    }

    fn write_leaf(&mut self, page: PageId, index: usize, value: u64) {
        if let Some(e) = self.block(page).and_then(|b| b.get(index)) {
            // A TCE orders nothing: `WRITE_ONCE`, as Linux's kvmppc_tce_put stores it, and no helper call
            // (kmod/once.rs); a lockless reader sees the old or the new value, whole.
            write_once(e, value);
        }
    }

    fn free(&mut self, page: PageId) {
        // INVARIANT: `page` is no longer live once freed; forget what `recent` knew of it.
        self.recent.set(self.recent.get().map(|e| if e.0 == page.0 { (0, 0) } else { e }));
        let Some(slot) = usize::try_from(page.0).ok().and_then(|i| self.slots.slots().get(i)) else {
            return;
        };
        let b = slot.xchg(core::ptr::null_mut(), Relaxed);
        if !b.is_null() {
            // SAFETY: the slot owned `b` (type invariant) and no longer points at it; `free` runs at the
            // window's release, after the registry's grace period, so no lockless reader holds it.
            drop(unsafe { KBox::from_raw(b) });
            // Room was reserved for every id in `add`.
            let _ = self.free_ids.push(page.0, GFP_NOWAIT);
        }
    }
}

impl Drop for KernelStore {
    fn drop(&mut self) {
        for slot in self.slots.slots().iter() {
            let b = slot.xchg(core::ptr::null_mut(), Relaxed);
            if !b.is_null() {
                // SAFETY: as in `free`; the window is going, so no reader is left.
                drop(unsafe { KBox::from_raw(b) });
            }
        }
    }
}
