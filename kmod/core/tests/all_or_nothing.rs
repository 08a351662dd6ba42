//! The rule for a batch whose validation fails (Linux `kvmppc_h_put_tce_indirect` validates the whole list
//! before writing any entry): nothing is applied, for the module and the userspace fallback alike.

use pvtce_core::host::{Backing, Host, HostGeometry, HostTableId, HostTce};
use pvtce_core::table::{PageId, PageStore, ENTRIES_PER_PAGE};
use pvtce_core::types::{Ioba, Liobn, PageShift, WindowGeometry};
use pvtce_core::window::{Completion, Outcome, Request, Window};

/// Guest RAM is the first 1 MiB (identity-mapped user addresses); no host table is linked.
struct SmallRam;

impl Host for SmallRam {
    fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
        (gpa < 1 << 20).then_some(gpa)
    }
    fn prereg_lookup(&self, _: u64, _: u64) -> Option<Backing> {
        None
    }
    fn table_geometry(&self, _: HostTableId) -> Option<HostGeometry> {
        None
    }
    fn table_ready(&self, _: HostTableId, _: u64, _: u64) -> bool {
        false
    }
    fn table_exchange(&mut self, _: HostTableId, _: u64, _: HostTce, _: u64) -> HostTce {
        HostTce::EMPTY
    }
    fn table_kill(&mut self, _: HostTableId, _: u64, _: u64) {}
    fn read_tce_list(&mut self, _: u64, _: &mut [u64]) -> bool {
        false
    }
}

#[derive(Default)]
struct Store(Vec<[u64; ENTRIES_PER_PAGE as usize]>, usize);

impl PageStore for Store {
    fn take(&mut self) -> Option<PageId> {
        (self.1 > 0).then(|| {
            self.1 -= 1;
            self.0.push([0; ENTRIES_PER_PAGE as usize]);
            PageId(self.0.len() as u64 - 1)
        })
    }
    fn available(&self) -> usize {
        self.1
    }
    fn read(&self, p: PageId, i: usize) -> u64 {
        self.0[p.0 as usize][i]
    }
    fn write(&mut self, p: PageId, i: usize, v: u64) {
        self.0[p.0 as usize][i] = v;
    }
    fn free(&mut self, _: PageId) {}
}

fn run() -> (Outcome, Vec<u64>) {
    let geometry = WindowGeometry::new(PageShift::new(12).unwrap(), 0, 1024).unwrap();
    let mut w = Window::new(Liobn(1), geometry);
    let mut store = Store(Vec::new(), 16);
    // Entries 0 and 1 map RAM; entry 2 names an address without a memslot (H_TOO_HARD); entry 3 maps RAM.
    let list: Vec<u64> = [0x1000u64 | 3, 0x2000 | 3, (1 << 30) | 3, 0x3000 | 3].iter().map(|t| t.to_be()).collect();
    let req = Request::Indirect { ioba: Ioba(0), list: &list };
    let o = w.execute(&mut store, &mut SmallRam, &req);
    let read: Vec<u64> = (0..4).map(|i| w.get_tce(&store, Ioba(i << 12)).unwrap()).collect();
    (o, read)
}

#[test]
fn all_or_nothing_applies_nothing_when_an_entry_fails() {
    let (o, read) = run();
    assert_eq!(o, Outcome::Done(Completion { result: Err(pvtce_core::error::HcallError::TooHard), applied: 0 }));
    assert_eq!(read, vec![0, 0, 0, 0]);
}

/// Found by the in-VM conformance test: clearing with H_STUFF_TCE across entries an INDIRECT mapped must
/// finish in one call without asking for pages (Linux's built-in code succeeds there).
#[test]
fn stuff_clear_after_indirect_needs_no_pages() {
    let geometry = WindowGeometry::new(PageShift::new(16).unwrap(), 0, 4096).unwrap();
    let mut w = Window::new(Liobn(2), geometry);
    let mut store = Store(Vec::new(), 0);
    let list: Vec<u64> = (0..8u64).map(|i| ((i << 16) | 3).to_be()).collect();
    let req = Request::Indirect { ioba: Ioba(22 << 16), list: &list };
    // First call asks for pages, the retry with them in the reserve succeeds.
    let need = match w.execute(&mut store, &mut SmallRam, &req) {
        Outcome::NeedAlloc(n) => n.pages,
        o => panic!("expected NeedAlloc, got {o:?}"),
    };
    store.1 += need;
    let done = w.execute(&mut store, &mut SmallRam, &req);
    assert_eq!(done, Outcome::Done(Completion { result: Ok(0), applied: 8 }));
    let clear = Request::Stuff { ioba: Ioba(0), value: pvtce_core::types::Tce(0), npages: 32 };
    let o = w.execute(&mut store, &mut SmallRam, &clear);
    assert_eq!(o, Outcome::Done(Completion { result: Ok(0), applied: 32 }));
    assert_eq!(w.get_tce(&store, Ioba(23 << 16)), Ok(0));
}

/// Clearing a window that never stored an entry needs no page either.
#[test]
fn stuff_clear_of_an_empty_window_needs_no_pages() {
    for (shift, size) in [(16u32, 4096u64), (12, 65536)] {
        let geometry = WindowGeometry::new(PageShift::new(shift).unwrap(), 0, size).unwrap();
        let mut w = Window::new(Liobn(3), geometry);
        let mut store = Store(Vec::new(), 0);
        let clear = Request::Stuff { ioba: Ioba(0), value: pvtce_core::types::Tce(0), npages: 32 };
        let o = w.execute(&mut store, &mut SmallRam, &clear);
        assert_eq!(o, Outcome::Done(Completion { result: Ok(0), applied: 32 }), "shift {shift}");
        // Poison is stored, so it does need the table's pages.
        let poison = Request::Stuff { ioba: Ioba(0), value: pvtce_core::types::Tce(0xf0), npages: 32 };
        assert!(matches!(w.execute(&mut store, &mut SmallRam, &poison), Outcome::NeedAlloc(_)));
    }
}
