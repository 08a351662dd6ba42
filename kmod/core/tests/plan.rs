//! The plan a batch carries from validation to apply (`Window::execute_planned`): each mapped entry is
//! translated once, its region hold (`Host::take_region`, pvtce.ko's `mm_iommu_mapped_inc`) is taken at
//! validation and is either kept by the host entry or given back on every path that refuses the batch: a
//! later entry failing validation, the store needing pages, a host run failing.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use common::sim::VecStore;
use pvtce_core::error::HcallError;
use pvtce_core::host::{
    ua_to_hpa, Backing, Host, HostEntry, HostGeometry, HostTableId, HostTce, Planned, Region, RunFailed, XlateError,
};
use pvtce_core::types::{Ioba, Liobn, PageShift, WindowGeometry};
use pvtce_core::window::{Completion, Outcome, Request, Window, PLAN_SLOTS};

const ENTRIES: u64 = 64;
/// RAM (identity-mapped, 4K pages) is preregistered below this address only.
const PREREG_END: u64 = 1 << 20;

/// Two 4K host tables whose entries keep the hold they were written with, as pvtce.ko's do (an entry's
/// `mapped_inc` is dropped when the entry is exchanged away or cleared). Runs on `fail` write their first
/// half and then fail, emptying the range and giving back every hold of the run (the contract).
#[derive(Default)]
struct Counting {
    tables: [Vec<(u64, Region)>; 2],
    fail: Option<HostTableId>,
    /// An entry of one table whose level is missing (`table_ready` refuses it).
    unready: Option<(HostTableId, u64)>,
    /// Holds taken and not given back, by token: user address.
    holds: RefCell<BTreeMap<u64, u64>>,
    last: Cell<u64>,
    takes: Cell<u64>,
    lookups: Cell<u64>,
    translations: Cell<u64>,
}

impl Counting {
    fn new() -> Counting {
        Counting {
            tables: [vec![(0, Region::NONE); ENTRIES as usize], vec![(0, Region::NONE); ENTRIES as usize]],
            ..Default::default()
        }
    }

    fn held(&self) -> usize {
        self.holds.borrow().len()
    }

    /// Holds the tables' entries keep.
    fn in_entries(&self) -> usize {
        self.tables.iter().flatten().filter(|(_, r)| *r != Region::NONE).count()
    }

    fn put(&self, r: Region) {
        if r != Region::NONE {
            assert!(self.holds.borrow_mut().remove(&r.0).is_some(), "hold {r:?} given back twice");
        }
    }
}

impl Host for Counting {
    fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
        self.translations.set(self.translations.get() + 1);
        (gpa < 1 << 24).then_some(gpa)
    }
    fn prereg_lookup(&self, ua: u64, len: u64) -> Option<Backing> {
        self.lookups.set(self.lookups.get() + 1);
        (ua.checked_add(len)? <= PREREG_END)
            .then_some(Backing { page_hpa: 0x4000_0000 + (ua & !0xfff), page_shift: 12 })
    }
    fn take_region(&self, ua: u64, shift: PageShift) -> Result<(u64, Region), XlateError> {
        let hpa = ua_to_hpa(self, ua, shift)?;
        self.takes.set(self.takes.get() + 1);
        self.last.set(self.last.get() + 1);
        self.holds.borrow_mut().insert(self.last.get(), ua);
        Ok((hpa, Region(self.last.get())))
    }
    fn put_region(&self, region: Region) {
        assert_ne!(region, Region::NONE, "the core gives back only holds it took");
        self.put(region);
    }
    fn table_geometry(&self, _: HostTableId) -> Option<HostGeometry> {
        Some(HostGeometry { page_shift: PageShift::SZ_4K, offset: 0, size: ENTRIES })
    }
    fn table_ready(&self, id: HostTableId, first: u64, count: u64) -> bool {
        !self.unready.is_some_and(|(t, e)| t == id && (first..first + count).contains(&e))
    }
    fn table_exchange(&mut self, _: HostTableId, _: u64, _: HostTce, _: u64) -> HostTce {
        unreachable!("this host runs its own table_run")
    }
    fn table_run(
        &mut self,
        id: HostTableId,
        first: u64,
        count: u64,
        entry: &dyn Fn(&Self, u64) -> HostEntry,
    ) -> Result<(), RunFailed> {
        let t = id.0 as usize;
        let fails = self.fail == Some(id);
        let n = if fails { count / 2 } else { count };
        for k in 0..n {
            let e = entry(self, k);
            let old = std::mem::replace(&mut self.tables[t][(first + k) as usize], (e.tce.0, e.region));
            self.put(old.1);
        }
        if fails {
            for k in 0..count {
                let old = std::mem::take(&mut self.tables[t][(first + k) as usize]);
                self.put(old.1);
            }
            // The entries the run never wrote: their holds are the run's to give back.
            for k in n..count {
                self.put(entry(self, k).region);
            }
            return Err(RunFailed);
        }
        Ok(())
    }
    fn table_kill(&mut self, _: HostTableId, _: u64, _: u64) {}
    fn read_tce_list(&mut self, _: u64, _: &mut [u64]) -> bool {
        false
    }
}

/// A 4K window of [`ENTRIES`] linked to `links` tables of the host, a store with `pages` pages in reserve,
/// and a plan buffer.
fn setup(links: u32, pages: usize) -> (Counting, VecStore, Window, [Planned; PLAN_SLOTS]) {
    let host = Counting::new();
    let mut store = VecStore::new();
    store.add(pages);
    let mut w = Window::new(Liobn(1), WindowGeometry::new(PageShift::SZ_4K, 0, ENTRIES).unwrap());
    for id in 0..links {
        w.link(&host, HostTableId(id)).unwrap();
    }
    (host, store, w, [Planned::default(); PLAN_SLOTS])
}

/// `n` mappings of consecutive pages from guest address `gpa`, big-endian as the guest writes them.
fn list(gpa: u64, n: u64) -> Vec<u64> {
    (0..n).map(|i| ((gpa + (i << 12)) | 3).to_be()).collect()
}

const DONE_8: Outcome = Outcome::Done(Completion { result: Ok(0), applied: 8 });
const TOO_HARD: Outcome = Outcome::Done(Completion { result: Err(HcallError::TooHard), applied: 0 });

#[test]
fn each_entry_is_translated_once_and_its_entry_keeps_the_hold() {
    let (mut host, mut store, mut w, mut plan) = setup(2, 8);
    let l = list(0x1_0000, 8);
    let o = w.execute_planned(&mut store, &mut host, &Request::Indirect { ioba: Ioba(8 << 12), list: &l }, &mut plan);
    assert_eq!(o, DONE_8);
    // One memslot translation per entry, one region lookup per entry and table; none in the apply step.
    assert_eq!((host.translations.get(), host.lookups.get(), host.takes.get()), (8, 16, 16));
    assert_eq!((host.held(), host.in_entries()), (16, 16));
    assert_eq!(host.tables[1][9].0, 0x4001_1000 | 3);
    // Overwriting the range gives back the old entries' holds, the new ones are kept.
    let o = w.execute_planned(&mut store, &mut host, &Request::Indirect { ioba: Ioba(8 << 12), list: &l }, &mut plan);
    assert_eq!(o, DONE_8);
    assert_eq!((host.held(), host.in_entries()), (16, 16));
}

#[test]
fn holds_taken_before_a_failing_entry_are_given_back() {
    let (mut host, mut store, mut w, mut plan) = setup(2, 8);
    // Entries 0..5 are preregistered; entry 5 is not (H_TOO_HARD); entry 3 is clear.
    let mut l = list(PREREG_END - (5 << 12), 8);
    l[3] = 0;
    let o = w.execute_planned(&mut store, &mut host, &Request::Indirect { ioba: Ioba(8 << 12), list: &l }, &mut plan);
    assert_eq!(o, TOO_HARD);
    // Holds were taken for entries 0, 1, 2 and 4 in both tables, and for entry 5 in none.
    assert_eq!(host.takes.get(), 8);
    assert_eq!((host.held(), host.in_entries()), (0, 0), "{:?}", host.holds.borrow());
    assert!(host.tables.iter().flatten().all(|e| e.0 == 0));
}

#[test]
fn an_entry_refused_by_its_second_table_gives_back_the_first_tables_hold() {
    let (mut host, mut store, mut w, mut plan) = setup(2, 8);
    host.unready = Some((HostTableId(1), 13));
    let l = list(0x1_0000, 8);
    let o = w.execute_planned(&mut store, &mut host, &Request::Indirect { ioba: Ioba(8 << 12), list: &l }, &mut plan);
    assert_eq!(o, TOO_HARD);
    // Entries 0..5 in both tables, then entry 5 in both (translated before table 1's readiness is asked).
    assert_eq!(host.takes.get(), 12);
    assert_eq!(host.held(), 0, "{:?}", host.holds.borrow());
}

#[test]
fn one_table_refusals_take_and_give_back_the_holds_entry_by_entry() {
    // One table of the window's page size (validated by a loop of its own): entry 3 is clear, entry 5 is
    // refused by the table (5 holds taken before it and its own) or not preregistered (none for it).
    for (unready, takes) in [(true, 5), (false, 4)] {
        let (mut host, mut store, mut w, mut plan) = setup(1, 8);
        let mut l = if unready { list(0x1_0000, 8) } else { list(PREREG_END - (5 << 12), 8) };
        if unready {
            host.unready = Some((HostTableId(0), 13));
        }
        l[3] = 0;
        let o =
            w.execute_planned(&mut store, &mut host, &Request::Indirect { ioba: Ioba(8 << 12), list: &l }, &mut plan);
        assert_eq!(o, TOO_HARD, "unready {unready}");
        assert_eq!(host.takes.get(), takes, "unready {unready}");
        assert_eq!((host.held(), host.in_entries()), (0, 0), "unready {unready}: {:?}", host.holds.borrow());
        assert!(host.tables.iter().flatten().all(|e| e.0 == 0));
    }
}

#[test]
fn holds_are_given_back_when_the_store_needs_pages() {
    let (mut host, mut store, mut w, mut plan) = setup(1, 0);
    let l = list(0x1_0000, 8);
    let req = Request::Indirect { ioba: Ioba(8 << 12), list: &l };
    let Outcome::NeedAlloc(need) = w.execute_planned(&mut store, &mut host, &req, &mut plan) else {
        panic!("an empty reserve needs pages");
    };
    assert_eq!((host.takes.get(), host.held()), (8, 0));
    store.add(need.pages);
    assert_eq!(w.execute_planned(&mut store, &mut host, &req, &mut plan), DONE_8);
    assert_eq!((host.takes.get(), host.held(), host.in_entries()), (16, 8, 8));
}

#[test]
fn holds_are_given_back_when_a_host_run_fails() {
    for failing in 0..2 {
        let (mut host, mut store, mut w, mut plan) = setup(2, 8);
        let l = list(0x1_0000, 8);
        let req = Request::Indirect { ioba: Ioba(8 << 12), list: &l };
        assert_eq!(w.execute_planned(&mut store, &mut host, &req, &mut plan), DONE_8);
        host.fail = Some(HostTableId(failing));
        let l = list(0x2_0000, 8);
        let req = Request::Indirect { ioba: Ioba(8 << 12), list: &l };
        // Table 0 fails before table 1 runs (its holds are the core's to give back), or table 1 fails
        // after table 0 took its holds into its entries (the clear gives them back).
        assert_eq!(w.execute_planned(&mut store, &mut host, &req, &mut plan), TOO_HARD, "table {failing}");
        assert_eq!((host.held(), host.in_entries()), (0, 0), "table {failing}: {:?}", host.holds.borrow());
    }
}

#[test]
fn without_a_plan_no_hold_is_taken_and_the_answer_is_the_same() {
    let (mut host, mut store, mut w, _) = setup(1, 8);
    let mut l = list(PREREG_END - (5 << 12), 8);
    // A plan too short for the batch runs without one, as `execute` does.
    let o = w.execute_planned(
        &mut store,
        &mut host,
        &Request::Indirect { ioba: Ioba(8 << 12), list: &l },
        &mut [Planned::default(); 7],
    );
    assert_eq!(o, TOO_HARD);
    l.truncate(5);
    let o = w.execute(&mut store, &mut host, &Request::Indirect { ioba: Ioba(8 << 12), list: &l });
    assert_eq!(o, Outcome::Done(Completion { result: Ok(0), applied: 5 }));
    assert_eq!(host.takes.get(), 0);
}
