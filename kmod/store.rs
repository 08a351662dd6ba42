// SPDX-License-Identifier: GPL-2.0

//! The guest-visible table's pages: pvtce-core's [`PageStore`] over kmalloc'ed 4 KiB blocks.
//!
//! The core never allocates: when its reserve is short it answers `NeedAlloc`; the caller allocates the blocks
//! with [`KernelStore::alloc`] outside the window lock, hands them over with [`KernelStore::add`] under it, and
//! retries (kmod/hcall.rs).

use crate::pvtce_core::table::{PageId, PageStore, ENTRIES_PER_PAGE};
use kernel::prelude::*;

type Block = [u64; ENTRIES_PER_PAGE as usize];

/// Most table pages one window may hold: enough for every entry of a 1 TiB window of 4 KiB pages plus its
/// inner levels (2^28 entries / 512 = 524288 leaves + 1025 inner pages), and a bound on what a guest can
/// make the host allocate.
pub(crate) const MAX_PAGES: usize = 525_400;

/// Pages taken from the reserve live in `pages[id]`; freed ids are reused.
///
/// # Invariants
/// `pages.capacity() >= pages.len() + reserve.len()`, so `take` never allocates.
pub(crate) struct KernelStore {
    pages: KVec<Option<KBox<Block>>>,
    free_ids: KVec<u64>,
    reserve: KVec<KBox<Block>>,
}

/// Zeroed blocks allocated outside any lock, to be handed to [`KernelStore::add`].
pub(crate) struct Blocks(KVec<KBox<Block>>);

impl KernelStore {
    pub(crate) fn new() -> Self {
        KernelStore { pages: KVec::new(), free_ids: KVec::new(), reserve: KVec::new() }
    }

    /// Allocates `n` zeroed blocks (call without the window lock held).
    pub(crate) fn alloc(n: usize) -> Result<Blocks> {
        let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            v.push(KBox::new([0u64; ENTRIES_PER_PAGE as usize], GFP_KERNEL)?, GFP_KERNEL)?;
        }
        Ok(Blocks(v))
    }

    /// Adds blocks to the reserve (under the window lock; may grow the bookkeeping vectors).
    pub(crate) fn add(&mut self, blocks: Blocks) -> Result {
        let total = self.pages.len().saturating_add(self.reserve.len()).saturating_add(blocks.0.len());
        if total > MAX_PAGES {
            return Err(ENOMEM);
        }
        self.pages.reserve(total - self.pages.len(), GFP_KERNEL)?;
        self.free_ids.reserve(total.saturating_sub(self.free_ids.len()), GFP_KERNEL)?;
        self.reserve.reserve(blocks.0.len(), GFP_KERNEL)?;
        for b in blocks.0 {
            // Cannot fail: capacity reserved just above.
            self.reserve.push(b, GFP_NOWAIT)?;
        }
        // INVARIANT: `pages` has room for every block in the reserve.
        Ok(())
    }

    /// Pages in use (taken from the reserve and not freed).
    #[allow(dead_code)]
    pub(crate) fn in_use(&self) -> usize {
        self.pages.len() - self.free_ids.len()
    }

    fn block(&self, page: PageId) -> Option<&Block> {
        self.pages.get(usize::try_from(page.0).ok()?)?.as_deref()
    }
}

impl PageStore for KernelStore {
    fn take(&mut self) -> Option<PageId> {
        let b = self.reserve.pop()?;
        if let Some(id) = self.free_ids.pop() {
            if let Some(slot) = self.pages.get_mut(id as usize) {
                *slot = Some(b);
                return Some(PageId(id));
            }
            return None;
        }
        let id = self.pages.len() as u64;
        // By the type invariant the capacity is there: GFP_NOWAIT never has to allocate.
        self.pages.push(Some(b), GFP_NOWAIT).ok()?;
        Some(PageId(id))
    }

    fn available(&self) -> usize {
        self.reserve.len()
    }

    fn read(&self, page: PageId, index: usize) -> u64 {
        self.block(page).and_then(|b| b.get(index)).copied().unwrap_or(0)
    }

    fn write(&mut self, page: PageId, index: usize, value: u64) {
        if let Some(Some(b)) = usize::try_from(page.0).ok().and_then(|i| self.pages.get_mut(i)) {
            if let Some(slot) = b.get_mut(index) {
                *slot = value;
            }
        }
    }

    fn free(&mut self, page: PageId) {
        if let Some(slot) = usize::try_from(page.0).ok().and_then(|i| self.pages.get_mut(i)) {
            if slot.take().is_some() {
                // Room was reserved for every id in `add`.
                let _ = self.free_ids.push(page.0, GFP_NOWAIT);
            }
        }
    }
}
