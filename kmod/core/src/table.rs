//! The guest-visible TCE table: sparse, multi-level, memory proportional to what is mapped.
//!
//! Pages are the caller's. The core never allocates: it asks a [`PageStore`] for a page from a reserve
//! the caller filled beforehand, and when the reserve is short it answers [`NeedAlloc`] before changing
//! anything. The caller then allocates outside its locks, adds the pages to the reserve and retries.
//!
//! Layout: a radix tree of 4 KiB pages of 512 `u64` slots. Leaves hold TCEs; inner pages hold
//! `page id + 1` of the next level (0 = absent). The number of levels is fixed at creation from the window
//! size (9 bits a level), the root is allocated on the first non-zero store. Storing 0 below a missing page
//! is a no-op (Linux `kvmppc_tce_put` does the same), so clearing never allocates.

/// Slots in one table page.
pub const ENTRIES_PER_PAGE: u64 = 512;
/// Bits of the entry index resolved by one level.
pub const BITS_PER_LEVEL: u32 = 9;
/// Bytes in one table page.
pub const PAGE_BYTES: usize = 4096;
/// Most levels a table can have (64-bit index, 9 bits a level).
pub const MAX_LEVELS: usize = 8;

/// Identifies one page handed out by a [`PageStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageId(pub u64);

/// Pages of guest tables. The kernel implements it with real zeroed pages; tests with `Vec`s.
///
/// Indices passed to `read`/`write` are always `< ENTRIES_PER_PAGE`, and ids are always ones `take`
/// returned and `free` has not taken back.
pub trait PageStore {
    /// Takes one zeroed page from the reserve the caller filled; `None` when the reserve is empty.
    fn take(&mut self) -> Option<PageId>;
    /// Number of pages left in the reserve.
    fn available(&self) -> usize;
    /// Reads slot `index` of `page`.
    fn read(&self, page: PageId, index: usize) -> u64;
    /// Writes slot `index` of `page`.
    fn write(&mut self, page: PageId, index: usize, value: u64);
    /// Writes slot `index` of leaf `page`: a TCE, which names no page, so a store that orders nothing before
    /// it will do (pvtce.ko's lockless H_GET_TCE reads only the value). Default: [`PageStore::write`].
    fn write_leaf(&mut self, page: PageId, index: usize, value: u64) {
        self.write(page, index, value);
    }
    /// Writes `values` into slots `index..` of leaf `page` in turn, as [`PageStore::write_leaf`] does each (a
    /// run of one leaf: never past the page's end). Default: `write_leaf` slot by slot.
    fn write_leaf_run(&mut self, page: PageId, index: usize, values: impl Iterator<Item = u64>) {
        for (i, value) in (index..ENTRIES_PER_PAGE as usize).zip(values) {
            self.write_leaf(page, i, value);
        }
    }
    /// Gives back a page the table no longer uses (teardown).
    fn free(&mut self, page: PageId);
}

/// The core needs `pages` more pages in the [`PageStore`] reserve; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedAlloc {
    /// Pages to add to the reserve before retrying.
    pub pages: usize,
}

/// A sparse multi-level table of `size` TCEs, indexed from 0 (window-relative).
///
/// # Invariants
/// `1 <= levels <= MAX_LEVELS` and `levels * BITS_PER_LEVEL >= bits(size - 1)`; `pages` counts the
/// pages reachable from `root`.
#[derive(Debug)]
pub struct GuestTable {
    size: u64,
    levels: u32,
    root: Option<PageId>,
    pages: usize,
}

fn encode(id: PageId) -> u64 {
    id.0.wrapping_add(1)
}

fn decode(slot: u64) -> Option<PageId> {
    slot.checked_sub(1).map(PageId)
}

impl GuestTable {
    /// An empty table of `size` entries; costs no page until the first non-zero store.
    pub fn new(size: u64) -> GuestTable {
        let bits = 64 - size.saturating_sub(1).leading_zeros();
        let levels = bits.div_ceil(BITS_PER_LEVEL).max(1);
        // INVARIANT: bits <= 64 so levels <= 8 = MAX_LEVELS.
        GuestTable { size, levels, root: None, pages: 0 }
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of levels of the radix tree.
    pub fn levels(&self) -> u32 {
        self.levels
    }

    /// Pages currently used.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Bytes used: the pages plus this descriptor.
    pub fn bytes_used(&self) -> usize {
        self.pages.saturating_mul(PAGE_BYTES).saturating_add(core::mem::size_of::<Self>())
    }

    fn slot(&self, index: u64, level: u32) -> usize {
        // level 0 is the root; the leaf is levels - 1.
        let shift = (self.levels - 1 - level) * BITS_PER_LEVEL;
        ((index >> shift) & (ENTRIES_PER_PAGE - 1)) as usize
    }

    /// The leaf page holding `index`, if allocated.
    fn leaf<S: PageStore>(&self, store: &S, index: u64) -> Option<PageId> {
        let mut page = self.root?;
        for level in 0..self.levels - 1 {
            page = decode(store.read(page, self.slot(index, level)))?;
        }
        Some(page)
    }

    /// Reads entry `index`; absent pages read as 0. `None` if `index` is outside the table.
    pub fn get<S: PageStore>(&self, store: &S, index: u64) -> Option<u64> {
        if index >= self.size {
            return None;
        }
        Some(match self.leaf(store, index) {
            Some(leaf) => store.read(leaf, self.slot(index, self.levels - 1)),
            None => 0,
        })
    }

    /// Reads entry `index` of a table of this shape whose root is `root`, through `read` (slot `i` of a page;
    /// 0 for a page that does not exist) rather than a store: for a reader that holds no lock over the table
    /// (the kernel's H_GET_TCE), whose `read` answers each slot atomically. `None` if `index` is outside.
    pub fn get_via(&self, root: PageId, index: u64, read: impl Fn(PageId, usize) -> u64) -> Option<u64> {
        if index >= self.size {
            return None;
        }
        let mut page = root;
        for level in 0..self.levels - 1 {
            page = match decode(read(page, self.slot(index, level))) {
                Some(next) => next,
                None => return Some(0),
            };
        }
        Some(read(page, self.slot(index, self.levels - 1)))
    }

    /// How many levels are missing on the path to `index` (0 when its leaf exists).
    fn missing_on_path<S: PageStore>(&self, store: &S, index: u64) -> u32 {
        let Some(mut page) = self.root else {
            return self.levels;
        };
        for level in 0..self.levels - 1 {
            match decode(store.read(page, self.slot(index, level))) {
                Some(next) => page = next,
                None => return self.levels - 1 - level,
            }
        }
        0
    }

    /// Pages a run of stores would allocate. `nonzero(i)` says whether entry `first + i` (for `i` in
    /// `0..count`) gets a non-zero value; zero stores never allocate. Leaves that exist cost one walk.
    pub fn pages_needed<S: PageStore>(
        &self,
        store: &S,
        first: u64,
        count: u64,
        mut nonzero: impl FnMut(u64) -> bool,
    ) -> usize {
        // Indices ascend, so pages a run would share are met consecutively: remember the last
        // missing page counted per level (as the index prefix above that level).
        let mut last: [Option<u64>; MAX_LEVELS] = [None; MAX_LEVELS];
        let mut needed = 0usize;
        let end = first.saturating_add(count).min(self.size);
        let mut index = first;
        while index < end {
            let leaf_end = (index | (ENTRIES_PER_PAGE - 1)).saturating_add(1).min(end);
            let missing = self.missing_on_path(store, index);
            if missing > 0 {
                // The first entry of this leaf's run that needs storing decides; the rest share its pages.
                if let Some(hit) = (index..leaf_end).find(|i| nonzero(i - first)) {
                    for m in 0..missing {
                        // Level (levels - missing + m) is missing; its pages cover (levels - level) * 9 bits.
                        let level = self.levels - missing + m;
                        let prefix = hit.checked_shr((self.levels - level) * BITS_PER_LEVEL).unwrap_or(0);
                        if let Some(seen) = last.get_mut(level as usize) {
                            if *seen != Some(prefix) {
                                *seen = Some(prefix);
                                needed = needed.saturating_add(1);
                            }
                        }
                    }
                }
            }
            index = leaf_end;
        }
        needed
    }

    /// Stores `value(i)` at `first + i` for `i` in `0..count`, one walk per leaf page and one
    /// [`PageStore::write_leaf_run`] per leaf. Zero values below a missing leaf are skipped; a missing leaf with a
    /// non-zero value takes pages from the reserve ([`NeedAlloc`] if it runs dry; entries before stay written).
    pub fn write_run<S: PageStore>(
        &mut self,
        store: &mut S,
        first: u64,
        count: u64,
        mut value: impl FnMut(u64) -> u64,
    ) -> Result<(), NeedAlloc> {
        let end = first.saturating_add(count).min(self.size);
        let mut index = first;
        while index < end {
            let leaf_end = (index | (ENTRIES_PER_PAGE - 1)).saturating_add(1).min(end);
            let leaf = match self.leaf(store, index) {
                Some(leaf) => Some(leaf),
                None => match (index..leaf_end).find(|i| value(i - first) != 0) {
                    Some(hit) => {
                        self.set(store, hit, value(hit - first))?;
                        self.leaf(store, hit)
                    }
                    None => None,
                },
            };
            if let Some(leaf) = leaf {
                let slot = (index & (ENTRIES_PER_PAGE - 1)) as usize;
                store.write_leaf_run(leaf, slot, (index..leaf_end).map(|i| value(i - first)));
            }
            index = leaf_end;
        }
        Ok(())
    }

    /// Stores `value` at `index`, taking pages from the reserve for missing levels. Storing 0 below a
    /// missing page does nothing. Fails only if the reserve runs dry; the pages already linked stay
    /// (they are empty and counted), the entry is not written.
    pub fn set<S: PageStore>(&mut self, store: &mut S, index: u64, value: u64) -> Result<(), NeedAlloc> {
        if index >= self.size {
            return Ok(());
        }
        let mut page = match self.root {
            Some(p) => p,
            None => {
                if value == 0 {
                    return Ok(());
                }
                let p = store.take().ok_or(NeedAlloc { pages: self.levels as usize })?;
                self.pages += 1;
                self.root = Some(p);
                p
            }
        };
        for level in 0..self.levels - 1 {
            let slot = self.slot(index, level);
            page = match decode(store.read(page, slot)) {
                Some(next) => next,
                None => {
                    if value == 0 {
                        return Ok(());
                    }
                    let next = store.take().ok_or(NeedAlloc { pages: (self.levels - 1 - level) as usize })?;
                    self.pages += 1;
                    store.write(page, slot, encode(next));
                    next
                }
            };
        }
        store.write_leaf(page, self.slot(index, self.levels - 1), value);
        Ok(())
    }

    /// Stores `value` in `count` entries from `first`. A zero value skips missing leaves whole, so
    /// clearing a large unmapped range costs one walk per leaf page.
    pub fn fill<S: PageStore>(&mut self, store: &mut S, first: u64, count: u64, value: u64) -> Result<(), NeedAlloc> {
        self.write_run(store, first, count, |_| value)
    }

    /// Frees every page (window teardown). The table is empty afterwards.
    pub fn release<S: PageStore>(&mut self, store: &mut S) {
        if let Some(root) = self.root.take() {
            self.release_page(store, root, 0);
        }
        self.pages = 0;
    }

    fn release_page<S: PageStore>(&self, store: &mut S, page: PageId, level: u32) {
        if level + 1 < self.levels {
            for slot in 0..ENTRIES_PER_PAGE as usize {
                if let Some(child) = decode(store.read(page, slot)) {
                    self.release_page(store, child, level + 1);
                }
            }
        }
        store.free(page);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed store of 8 pages, no allocation.
    struct ArrayStore {
        pages: [[u64; ENTRIES_PER_PAGE as usize]; 8],
        next: usize,
        limit: usize,
        freed: usize,
    }

    impl ArrayStore {
        fn new(limit: usize) -> Self {
            ArrayStore { pages: [[0; ENTRIES_PER_PAGE as usize]; 8], next: 0, limit, freed: 0 }
        }
    }

    impl PageStore for ArrayStore {
        fn take(&mut self) -> Option<PageId> {
            (self.next < self.limit).then(|| {
                self.next += 1;
                PageId(self.next as u64 - 1)
            })
        }
        fn available(&self) -> usize {
            self.limit - self.next
        }
        fn read(&self, page: PageId, index: usize) -> u64 {
            self.pages[page.0 as usize][index]
        }
        fn write(&mut self, page: PageId, index: usize, value: u64) {
            self.pages[page.0 as usize][index] = value;
        }
        fn free(&mut self, _page: PageId) {
            self.freed += 1;
        }
    }

    #[test]
    fn levels_follow_size() {
        assert_eq!(GuestTable::new(1).levels(), 1);
        assert_eq!(GuestTable::new(512).levels(), 1);
        assert_eq!(GuestTable::new(513).levels(), 2);
        // 1 TiB of 4K pages: 2^28 entries, 28 bits -> 4 levels.
        assert_eq!(GuestTable::new(1 << 28).levels(), 4);
        assert_eq!(GuestTable::new(u64::MAX).levels(), 8);
    }

    #[test]
    fn empty_table_costs_no_page() {
        let t = GuestTable::new(1 << 28);
        assert_eq!(t.pages(), 0);
        assert!(t.bytes_used() < 64);
        let s = ArrayStore::new(0);
        assert_eq!(t.get(&s, (1 << 28) - 1), Some(0));
        assert_eq!(t.get(&s, 1 << 28), None);
    }

    #[test]
    fn set_allocates_levels_on_first_use_and_zero_never_does() {
        let mut t = GuestTable::new(1 << 28);
        let mut s = ArrayStore::new(8);
        t.set(&mut s, 5, 0).unwrap();
        assert_eq!(t.pages(), 0);
        assert_eq!(t.pages_needed(&s, 5, 1, |_| true), 4);
        t.set(&mut s, 5, 0x1003).unwrap();
        assert_eq!(t.pages(), 4);
        assert_eq!(t.get(&s, 5), Some(0x1003));
        // Same leaf: nothing more; next leaf: one more page.
        assert_eq!(t.pages_needed(&s, 0, 512, |_| true), 0);
        assert_eq!(t.pages_needed(&s, 0, 1024, |_| true), 1);
        t.fill(&mut s, 0, 1024, 7).unwrap();
        assert_eq!(t.pages(), 5);
        assert_eq!(t.get(&s, 1023), Some(7));
        t.release(&mut s);
        assert_eq!(s.freed, 5);
        assert_eq!(t.pages(), 0);
    }

    #[test]
    fn set_reports_need_alloc_when_reserve_is_short() {
        let mut t = GuestTable::new(1 << 20);
        let mut s = ArrayStore::new(1);
        // 2^20 entries: 3 levels; the root came from the reserve, two pages are missing.
        assert_eq!(t.set(&mut s, 3, 1), Err(NeedAlloc { pages: 2 }));
    }
    #[test]
    fn get_via_reads_what_get_reads_from_the_first_page_taken() {
        let mut t = GuestTable::new(1 << 28);
        let mut s = ArrayStore::new(8);
        // An empty store: slot reads of a page that does not exist answer 0.
        let read =
            |s: &ArrayStore, p: PageId, i: usize| if (p.0 as usize) < s.next { s.pages[p.0 as usize][i] } else { 0 };
        assert_eq!(t.get_via(PageId(0), 5, |p, i| read(&s, p, i)), Some(0));
        t.set(&mut s, 5, 0x1003).unwrap();
        t.set(&mut s, 700, 0x2003).unwrap();
        // The root is the first page the table takes (the kernel's lockless reader relies on it).
        for idx in [0, 5, 6, 511, 700, 1 << 27, (1 << 28) - 1] {
            assert_eq!(t.get_via(PageId(0), idx, |p, i| read(&s, p, i)), t.get(&s, idx), "entry {idx}");
        }
        assert_eq!(t.get_via(PageId(0), 700, |p, i| read(&s, p, i)), Some(0x2003));
        assert_eq!(t.get_via(PageId(0), 1 << 28, |p, i| read(&s, p, i)), None);
    }
}
