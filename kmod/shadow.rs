// SPDX-License-Identifier: GPL-2.0

//! The pages behind the table fd's mmap (docs/design.md, "The table fd's mmap").
//!
//! Linux's table fd maps the guest-visible table as a flat native-endian array of PAGE_SIZE pages
//! (`kvmppc_tce_put`'s `tbl[idx % TCES_PER_PAGE] = tce`). pvtce's table is sparse, so a mapped range is served
//! from a [`Shadow`] page in that layout, made when the mapping first touches it and written through by every
//! hypercall that changes its range. Only the ranges the VMM maps cost a page.

use kernel::page::Page;
use kernel::prelude::*;

/// Entries in one PAGE_SIZE page of the mapping.
pub(crate) const TCES_PER_PAGE: u64 = (kernel::page::PAGE_SIZE / 8) as u64;

/// One page of the mapping, at page offset `pgoff`.
struct Shadow {
    pgoff: u64,
    page: Page,
}

impl Shadow {
    fn set(&self, slot: u64, tce: u64) {
        let v = tce.to_ne_bytes();
        // SAFETY: `v` is 8 readable bytes and `slot < TCES_PER_PAGE` keeps the write inside the page. The only
        // kernel-side access to shadow pages is under the window lock, which the caller holds (`&mut` or `&`
        // of the window's `Shadows`). The VMM may read the page through its mapping at any time, as it may
        // Linux's own table pages: it sees the old or the new aligned 8-byte entry; no Rust reference into the
        // page exists.
        let _ = unsafe { self.page.write_raw(v.as_ptr(), (slot * 8) as usize, 8) };
    }

    fn get(&self, slot: u64) -> u64 {
        let mut v = [0u8; 8];
        // SAFETY: `v` is 8 writable bytes and `slot < TCES_PER_PAGE` keeps the read inside the page; the
        // VMM may write the entry through its mapping concurrently, and then this reads the old or the new
        // aligned entry, as Linux's reads of its own mapped table do.
        let _ = unsafe { self.page.read_raw(v.as_mut_ptr(), (slot * 8) as usize, 8) };
        u64::from_ne_bytes(v)
    }
}

/// The shadow pages of one window (under its lock), sorted by page offset: a lookup is a binary search and a
/// refresh visits only the pages its range covers.
///
/// # Invariants
/// The pages' `pgoff`s are strictly increasing.
#[derive(Default)]
pub(crate) struct Shadows(KVec<Shadow>);

impl Shadows {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The shadow entry for window-relative entry `idx`, if the VMM mapped that range: what the VMM wrote
    /// there since wins, as with Linux whose mapped pages are the table itself.
    pub(crate) fn get(&self, idx: u64) -> Option<u64> {
        let pgoff = idx / TCES_PER_PAGE;
        let sh = self.find(pgoff).ok().and_then(|i| self.0.get(i))?;
        Some(sh.get(idx % TCES_PER_PAGE))
    }

    /// `Ok(i)`: page `pgoff` is `self.0[i]`; `Err(i)`: it is absent and would go at `i`.
    fn find(&self, pgoff: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&pgoff, |sh| sh.pgoff)
    }

    /// Rewrites the shadow entries of window-relative entries `first..first + count` with `entry(idx)`.
    pub(crate) fn refresh(&self, first: u64, count: u64, entry: impl Fn(u64) -> u64) {
        let end = first.saturating_add(count);
        // The first page at or after the one holding `first`; the pages are in order.
        let start = self.find(first / TCES_PER_PAGE).unwrap_or_else(|i| i);
        for sh in self.0.get(start..).unwrap_or(&[]) {
            let lo = sh.pgoff * TCES_PER_PAGE;
            if lo >= end {
                break;
            }
            let hi = lo + TCES_PER_PAGE;
            for idx in first.max(lo)..end.min(hi) {
                sh.set(idx - lo, entry(idx));
            }
        }
    }

    /// The page at `pgoff`, made and filled from `entry(idx)` (entries `0..entries` of the window) on first
    /// use; NULL when no page can be had. The page lives until the window does.
    pub(crate) fn page(&mut self, pgoff: u64, entries: u64, entry: impl Fn(u64) -> u64) -> *mut crate::ffi::Page {
        let at = match self.find(pgoff) {
            Ok(i) => return self.0.get(i).map_or(core::ptr::null_mut(), |sh| sh.page.as_ptr()),
            Err(at) => at,
        };
        if self.0.reserve(1, GFP_KERNEL).is_err() {
            return core::ptr::null_mut();
        }
        let first = pgoff.saturating_mul(TCES_PER_PAGE);
        // A page fault may sleep: allocating under the window mutex is allowed (never under a spinlock).
        let Ok(page) = Page::alloc_page(GFP_KERNEL | __GFP_ZERO) else {
            return core::ptr::null_mut();
        };
        let sh = Shadow { pgoff, page };
        for i in 0..TCES_PER_PAGE.min(entries.saturating_sub(first)) {
            let t = entry(first + i);
            if t != 0 {
                sh.set(i, t);
            }
        }
        let ptr = sh.page.as_ptr();
        // INVARIANT: `at` is where `pgoff` keeps the order (`find`). Cannot fail: `at <= len` and one slot
        // is reserved above.
        if self.0.insert_within_capacity(at, sh).is_err() {
            return core::ptr::null_mut();
        }
        ptr
    }
}
