// In-memory implementations of the core's traits (PageStore, Host, Machine), for tests, fuzzing and
// benchmarks. Included by #[path] from the fuzz and bench crates; expects `pvtce_core` in scope.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use pvtce_core::hcall::Machine;
use pvtce_core::host::{ua_to_hpa, Backing, Host, HostGeometry, HostTableId, HostTce, Region, XlateError};
use pvtce_core::table::{PageId, PageStore, ENTRIES_PER_PAGE};
use pvtce_core::types::{Liobn, PageShift};
use pvtce_core::window::Window;

type Page = Box<[u64; ENTRIES_PER_PAGE as usize]>;

/// Pages in a Vec; ids are indices. `reserve` is what the caller pre-allocated.
#[derive(Default)]
pub struct VecStore {
    pages: Vec<Option<Page>>,
    reserve: Vec<Page>,
    pub in_use: usize,
}

impl VecStore {
    pub fn new() -> VecStore {
        VecStore::default()
    }

    /// The caller's allocation step: add `n` zeroed pages to the reserve.
    pub fn add(&mut self, n: usize) {
        for _ in 0..n {
            self.reserve.push(Box::new([0; ENTRIES_PER_PAGE as usize]));
        }
    }
}

impl PageStore for VecStore {
    fn take(&mut self) -> Option<PageId> {
        let page = self.reserve.pop()?;
        self.pages.push(Some(page));
        self.in_use += 1;
        Some(PageId(self.pages.len() as u64 - 1))
    }
    fn available(&self) -> usize {
        self.reserve.len()
    }
    fn read(&self, page: PageId, index: usize) -> u64 {
        self.pages[page.0 as usize].as_ref().expect("live page")[index]
    }
    fn write(&mut self, page: PageId, index: usize, value: u64) {
        self.pages[page.0 as usize].as_mut().expect("live page")[index] = value;
    }
    fn free(&mut self, page: PageId) {
        self.pages[page.0 as usize] = None;
        self.in_use -= 1;
    }
}

/// A host table in a hash map, with not-yet-allocated blocks and a record of invalidations. Hash maps and
/// a plain list here (the model keeps its BTreeMaps): the fuzzer spends most of its time in this bookkeeping.
pub struct SimTable {
    pub shape: super::world::TableShape,
    pub entries: HashMap<u64, u64>,
    pub unready: BTreeSet<u64>,
    /// Entries exchanged since the last kill that the kill did not cover (repeats allowed).
    pub dirty: Vec<u64>,
    pub kills: u64,
    pub exchanges: u64,
}

/// The host: memslots, preregistered regions, tables and guest memory for TCE lists.
pub struct SimHost {
    pub memslots: Vec<super::world::Memslot>,
    pub regions: Vec<super::world::Region>,
    pub tables: BTreeMap<u32, SimTable>,
    /// Guest memory words by user address, as stored (big-endian TCEs).
    pub mem: HashMap<u64, u64>,
    /// Track exchanged-but-not-killed entries and log exchanges (off in benchmarks).
    pub track: bool,
    /// (table, index) of every exchange since the harness last looked.
    pub log: Vec<(u32, u64)>,
    /// Region holds taken by `take_region` and not given back (the default `table_run` gives each back after
    /// its exchange): empty between calls.
    pub holds: RefCell<HashSet<u64>>,
    /// The last hold's token.
    pub last_hold: Cell<u64>,
}

impl SimHost {
    pub fn new() -> SimHost {
        let tables = super::world::tables()
            .into_iter()
            .map(|shape| {
                (
                    shape.id,
                    SimTable {
                        shape,
                        entries: HashMap::default(),
                        unready: BTreeSet::new(),
                        dirty: Vec::new(),
                        kills: 0,
                        exchanges: 0,
                    },
                )
            })
            .collect();
        SimHost {
            memslots: super::world::memslots(),
            regions: super::world::regions(),
            tables,
            mem: HashMap::default(),
            track: true,
            log: Vec::new(),
            holds: RefCell::default(),
            last_hold: Cell::new(0),
        }
    }

    /// Writes a TCE list at guest physical `gpa` (big-endian words).
    pub fn write_list(&mut self, gpa: u64, tces: &[u64]) {
        let Some(ua) = self.gpa_to_ua(gpa) else { return };
        for (i, t) in tces.iter().enumerate() {
            self.mem.insert(ua + 8 * i as u64, t.to_be());
        }
    }
}

impl Default for SimHost {
    fn default() -> Self {
        Self::new()
    }
}

impl Host for SimHost {
    fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
        self.memslots.iter().find(|s| s.gpa <= gpa && gpa - s.gpa < s.size).map(|s| s.ua + (gpa - s.gpa))
    }
    fn prereg_lookup(&self, ua: u64, len: u64) -> Option<Backing> {
        let r =
            self.regions.iter().find(|r| r.ua <= ua && ua.checked_add(len).is_some_and(|end| end <= r.ua + r.size))?;
        let page = ((ua - r.ua) >> r.page_shift) as usize;
        Some(Backing { page_hpa: r.hpas[page], page_shift: r.page_shift })
    }
    fn take_region(&self, ua: u64, shift: PageShift) -> Result<(u64, Region), XlateError> {
        let hpa = ua_to_hpa(self, ua, shift)?;
        let token = self.last_hold.get() + 1;
        self.last_hold.set(token);
        self.holds.borrow_mut().insert(token);
        Ok((hpa, Region(token)))
    }
    fn put_region(&self, region: Region) {
        assert!(self.holds.borrow_mut().remove(&region.0), "hold {region:?} given back twice or never taken");
    }
    fn table_geometry(&self, id: HostTableId) -> Option<HostGeometry> {
        let t = self.tables.get(&id.0)?;
        Some(HostGeometry {
            page_shift: PageShift::new(t.shape.page_shift)?,
            offset: t.shape.offset,
            size: t.shape.size,
        })
    }
    fn table_ready(&self, id: HostTableId, first: u64, count: u64) -> bool {
        let Some(t) = self.tables.get(&id.0) else { return false };
        if count == 0 {
            return true;
        }
        let lo = first >> super::world::UNREADY_BLOCK_SHIFT;
        let hi = (first + count - 1) >> super::world::UNREADY_BLOCK_SHIFT;
        t.unready.range(lo..=hi).next().is_none()
    }
    fn table_exchange(&mut self, id: HostTableId, index: u64, new: HostTce, _ua: u64) -> HostTce {
        let t = self.tables.get_mut(&id.0).expect("linked table exists");
        assert!(
            index >= t.shape.offset && index - t.shape.offset < t.shape.size,
            "exchange outside host table {}: {index:#x}",
            id.0
        );
        if new.0 != 0 {
            assert!(
                !t.unready.contains(&(index >> super::world::UNREADY_BLOCK_SHIFT)),
                "mapping into an unready block"
            );
        }
        t.exchanges += 1;
        if self.track {
            t.dirty.push(index);
            self.log.push((id.0, index));
        }
        let old = if new.0 == 0 { t.entries.remove(&index) } else { t.entries.insert(index, new.0) };
        HostTce(old.unwrap_or(0))
    }
    fn table_kill(&mut self, id: HostTableId, first: u64, count: u64) {
        let t = self.tables.get_mut(&id.0).expect("linked table exists");
        t.kills += 1;
        if self.track {
            t.dirty.retain(|&i| i < first || i - first >= count);
        }
    }
    fn read_tce_list(&mut self, ua: u64, buf: &mut [u64]) -> bool {
        for (i, w) in buf.iter_mut().enumerate() {
            *w = self.mem.get(&(ua + 8 * i as u64)).copied().unwrap_or(0);
        }
        true
    }
}

/// Windows by LIOBN, each with its own page store, sharing one host.
pub struct SimMachine {
    pub windows: BTreeMap<u64, (Window, VecStore)>,
    pub host: SimHost,
}

impl SimMachine {
    pub fn new() -> SimMachine {
        SimMachine { windows: BTreeMap::new(), host: SimHost::new() }
    }
}

impl Default for SimMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine for SimMachine {
    type Store = VecStore;
    type Host = SimHost;
    fn window(&mut self, liobn: Liobn) -> Option<(&mut Window, &mut VecStore, &mut SimHost)> {
        let (w, s) = self.windows.get_mut(&liobn.0)?;
        Some((w, s, &mut self.host))
    }
}
