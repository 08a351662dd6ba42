//! Flat in-memory implementations of the core's traits for the benchmarks: a host table in one `Vec`,
//! guest RAM at a fixed user address, preregistered in 64 KiB pages, and a page store of boxed pages.
//! Benchmarks live in `benches/`; `core-report` turns criterion's estimates into ns per TCE and ratios.

use pvtce_core::hcall::Machine;
use pvtce_core::host::{Backing, Host, HostEntry, HostGeometry, HostTableId, HostTce, Region, RunFailed};
use pvtce_core::table::{PageId, PageStore, ENTRIES_PER_PAGE};
use pvtce_core::types::{Liobn, PageShift, WindowGeometry};
use pvtce_core::window::Window;

/// Guest RAM size (all of it in one memslot, all preregistered).
pub const RAM: u64 = 1 << 30;
/// User address of guest RAM.
pub const RAM_UA: u64 = 0x7fff_0000_0000;
/// Host physical base of the (scrambled) 64 KiB backing pages.
pub const HPA_BASE: u64 = 0x40_0000_0000;
/// The benchmark window's LIOBN.
pub const LIOBN: u64 = 0x8000_0000;
/// Guest physical address of the H_PUT_TCE_INDIRECT list.
pub const LIST_GPA: u64 = 0x10_0000;

/// Boxed 4 KiB pages; the reserve is a count of pages to hand out.
#[derive(Default)]
pub struct BoxStore {
    pages: Vec<Box<[u64; ENTRIES_PER_PAGE as usize]>>,
    reserve: usize,
}

impl BoxStore {
    /// Adds `n` pages to the reserve (the caller's allocation step).
    pub fn add(&mut self, n: usize) {
        self.reserve += n;
    }

    /// Pages handed out.
    pub fn pages(&self) -> usize {
        self.pages.len()
    }
}

impl PageStore for BoxStore {
    fn take(&mut self) -> Option<PageId> {
        self.reserve = self.reserve.checked_sub(1)?;
        self.pages.push(Box::new([0; ENTRIES_PER_PAGE as usize]));
        Some(PageId(self.pages.len() as u64 - 1))
    }
    fn available(&self) -> usize {
        self.reserve
    }
    fn read(&self, page: PageId, index: usize) -> u64 {
        self.pages[page.0 as usize][index]
    }
    fn write(&mut self, page: PageId, index: usize, value: u64) {
        self.pages[page.0 as usize][index] = value;
    }
    fn write_leaf_run(&mut self, page: PageId, index: usize, values: impl Iterator<Item = u64>) {
        let slots = self.pages.get_mut(page.0 as usize).and_then(|p| p.get_mut(index..)).unwrap_or_default();
        for (slot, value) in slots.iter_mut().zip(values) {
            *slot = value;
        }
    }
    fn free(&mut self, _page: PageId) {}
}

/// One flat 4 KiB host table covering the window, and guest RAM translated arithmetically.
pub struct FlatHost {
    /// Host table entries.
    pub table: Vec<u64>,
    /// Invalidations issued.
    pub kills: u64,
    /// The guest's TCE list page as stored in memory (big-endian words).
    pub list: Vec<u64>,
}

impl FlatHost {
    /// A host table of `entries` 4 KiB entries at bus 0.
    pub fn new(entries: usize) -> FlatHost {
        FlatHost { table: vec![0; entries], kills: 0, list: vec![0; 512] }
    }
}

impl Host for FlatHost {
    fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
        (gpa < RAM).then_some(RAM_UA + gpa)
    }
    fn prereg_lookup(&self, ua: u64, len: u64) -> Option<Backing> {
        let off = ua.checked_sub(RAM_UA)?;
        if off.checked_add(len)? > RAM {
            return None;
        }
        // Pages in reverse order, so hpa is not ua + constant.
        let page = off >> 16;
        Some(Backing { page_hpa: HPA_BASE + (((RAM >> 16) - 1 - page) << 16), page_shift: 16 })
    }
    fn table_geometry(&self, id: HostTableId) -> Option<HostGeometry> {
        (id.0 == 0).then_some(HostGeometry { page_shift: PageShift::SZ_4K, offset: 0, size: self.table.len() as u64 })
    }
    fn table_ready(&self, _id: HostTableId, first: u64, count: u64) -> bool {
        first.checked_add(count).is_some_and(|end| end <= self.table.len() as u64)
    }
    fn table_exchange(&mut self, _id: HostTableId, index: u64, new: HostTce, _ua: u64) -> HostTce {
        match self.table.get_mut(index as usize) {
            Some(slot) => HostTce(std::mem::replace(slot, new.0)),
            None => HostTce::EMPTY,
        }
    }
    /// The run as one batched update, as a host with one would write it: every entry exchanged in a plain loop
    /// (no call per entry), the holds handed over given back after (this host's entries keep none).
    fn table_run_planned(&mut self, _id: HostTableId, first: u64, entries: &[HostEntry]) -> Result<(), RunFailed> {
        // Entries past the table's end are left alone, as `table_exchange` leaves them.
        let slots = usize::try_from(first).ok().and_then(|f| self.table.get_mut(f..)).unwrap_or_default();
        // Whether any entry came with a hold: a token other than `Region::NONE`, which is 0.
        let mut held = 0;
        for (slot, e) in slots.iter_mut().zip(entries) {
            *slot = e.tce.0;
            held |= e.region.0;
        }
        if held != 0 {
            for e in entries.iter().filter(|e| e.region != Region::NONE) {
                self.put_region(e.region);
            }
        }
        Ok(())
    }
    fn table_kill(&mut self, _id: HostTableId, _first: u64, _count: u64) {
        self.kills += 1;
    }
    fn read_tce_list(&mut self, ua: u64, buf: &mut [u64]) -> bool {
        if ua != RAM_UA + LIST_GPA {
            return false;
        }
        buf.copy_from_slice(&self.list[..buf.len()]);
        true
    }
}

/// One 1 GiB 4 KiB window linked to one flat host table.
pub struct Bench {
    /// The window.
    pub window: Window,
    /// Its pages.
    pub store: BoxStore,
    /// The host.
    pub host: FlatHost,
}

impl Bench {
    /// A 1 GiB window of 4 KiB pages, linked, with its whole guest table allocated (as after use).
    pub fn new() -> Bench {
        let entries = (RAM >> 12) as usize;
        let geometry = WindowGeometry::new(PageShift::SZ_4K, 0, entries as u64).expect("valid window");
        let mut b = Bench {
            window: Window::new(Liobn(LIOBN), geometry),
            store: BoxStore::default(),
            host: FlatHost::new(entries),
        };
        b.window.link(&b.host, HostTableId(0)).expect("compatible table");
        // Touch every leaf once so the benchmarks measure the steady state, not first-use allocation.
        b.store.add(entries / 512 + 16);
        let r = b.window.stuff_tce(
            &mut b.store,
            &mut b.host,
            pvtce_core::types::Ioba(0),
            pvtce_core::types::Tce(0x4),
            entries as u64,
        );
        assert!(matches!(r, pvtce_core::window::Outcome::Done(c) if c.result.is_ok()));
        b
    }
}

impl Default for Bench {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine for Bench {
    type Store = BoxStore;
    type Host = FlatHost;
    fn window(&mut self, liobn: Liobn) -> Option<(&mut Window, &mut BoxStore, &mut FlatHost)> {
        (liobn.0 == LIOBN).then_some((&mut self.window, &mut self.store, &mut self.host))
    }
}
