//! A host whose batched table update fails half-way (a pseries parent refusing part of an
//! H_PUT_TCE_INDIRECT): the call answers H_TOO_HARD, and the range is empty in every linked table and in the
//! guest's, as Linux clears the entry its map failed on.

use pvtce_core::error::HcallError;
use pvtce_core::host::{Backing, Host, HostEntry, HostGeometry, HostTableId, HostTce, RunFailed};
use pvtce_core::table::{PageId, PageStore, ENTRIES_PER_PAGE};
use pvtce_core::types::{Ioba, Liobn, PageShift, Tce, WindowGeometry};
use pvtce_core::window::{Completion, Outcome, Window};

const ENTRIES: u64 = 64;

/// Two 4K host tables over the whole window; RAM is identity-mapped and preregistered in 4K pages. Runs on
/// `fail` write their first half and then fail, after which the table empties the range (the contract).
struct TwoTables {
    tables: [Vec<u64>; 2],
    fail: Option<HostTableId>,
    kills: Vec<(HostTableId, u64, u64)>,
}

impl Host for TwoTables {
    fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
        (gpa < 1 << 24).then_some(gpa)
    }
    fn prereg_lookup(&self, ua: u64, _: u64) -> Option<Backing> {
        Some(Backing { page_hpa: ua & !0xfff, page_shift: 12 })
    }
    fn table_geometry(&self, _: HostTableId) -> Option<HostGeometry> {
        Some(HostGeometry { page_shift: PageShift::SZ_4K, offset: 0, size: ENTRIES })
    }
    fn table_ready(&self, _: HostTableId, _: u64, _: u64) -> bool {
        true
    }
    fn table_exchange(&mut self, id: HostTableId, index: u64, new: HostTce, _: u64) -> HostTce {
        HostTce(core::mem::replace(&mut self.tables[id.0 as usize][index as usize], new.0))
    }
    fn table_run(
        &mut self,
        id: HostTableId,
        first: u64,
        count: u64,
        entry: &dyn Fn(&Self, u64) -> HostEntry,
    ) -> Result<(), RunFailed> {
        let fails = self.fail == Some(id) && (0..count).any(|k| entry(self, k).tce != HostTce::EMPTY);
        let n = if fails { count / 2 } else { count };
        for k in 0..n {
            self.tables[id.0 as usize][(first + k) as usize] = entry(self, k).tce.0;
        }
        if fails {
            for k in 0..count {
                self.tables[id.0 as usize][(first + k) as usize] = 0;
            }
            return Err(RunFailed);
        }
        Ok(())
    }
    fn table_kill(&mut self, id: HostTableId, first: u64, count: u64) {
        self.kills.push((id, first, count));
    }
    fn read_tce_list(&mut self, _: u64, _: &mut [u64]) -> bool {
        false
    }
}

struct Store(Vec<[u64; ENTRIES_PER_PAGE as usize]>);

impl PageStore for Store {
    fn take(&mut self) -> Option<PageId> {
        self.0.push([0; ENTRIES_PER_PAGE as usize]);
        Some(PageId(self.0.len() as u64 - 1))
    }
    fn available(&self) -> usize {
        usize::MAX
    }
    fn read(&self, p: PageId, i: usize) -> u64 {
        self.0[p.0 as usize][i]
    }
    fn write(&mut self, p: PageId, i: usize, v: u64) {
        self.0[p.0 as usize][i] = v;
    }
    fn free(&mut self, _: PageId) {}
}

fn window(host: &TwoTables) -> Window {
    let mut w = Window::new(Liobn(1), WindowGeometry::new(PageShift::SZ_4K, 0, ENTRIES).unwrap());
    w.link(host, HostTableId(0)).unwrap();
    w.link(host, HostTableId(1)).unwrap();
    w
}

#[test]
fn a_refused_batch_clears_the_range_everywhere() {
    let mut host =
        TwoTables { tables: [vec![0; ENTRIES as usize], vec![0; ENTRIES as usize]], fail: None, kills: vec![] };
    let mut store = Store(Vec::new());
    let mut w = window(&host);
    // Entry 9 (inside the batch's range) and entry 30 (outside) are mapped by single PUTs first.
    for (entry, gpa) in [(9u64, 0x9000u64), (30, 0x3_0000)] {
        let o = w.put_tce(&mut store, &mut host, Ioba(entry << 12), Tce(gpa | 3));
        assert_eq!(o, Outcome::Done(Completion { result: Ok(0), applied: 1 }));
    }
    host.fail = Some(HostTableId(1));
    let list: Vec<u64> = (0..8u64).map(|i| ((0x10_0000 + (i << 12)) | 3).to_be()).collect();
    let o = w.put_tce_indirect(&mut store, &mut host, Ioba(8 << 12), &list);
    assert_eq!(o, Outcome::Done(Completion { result: Err(HcallError::TooHard), applied: 0 }));
    for t in 0..2 {
        assert!(host.tables[t][8..16].iter().all(|&e| e == 0), "table {t}: {:x?}", &host.tables[t][8..16]);
        assert_eq!(host.tables[t][30], 0x3_0000 | 3, "table {t}: the entry outside the range stays");
    }
    for e in 8..16 {
        assert_eq!(w.get_tce(&store, Ioba(e << 12)), Ok(0), "guest entry {e}");
    }
    assert_eq!(w.get_tce(&store, Ioba(30 << 12)), Ok(0x3_0000 | 3));
    // Table 0 was written whole, then cleared; both were invalidated over the range after the clear.
    assert!(host.kills.ends_with(&[(HostTableId(0), 8, 8), (HostTableId(1), 8, 8)]), "{:?}", host.kills);

    // The same batch on a host that accepts it maps every entry in both tables.
    host.fail = None;
    let o = w.put_tce_indirect(&mut store, &mut host, Ioba(8 << 12), &list);
    assert_eq!(o, Outcome::Done(Completion { result: Ok(0), applied: 8 }));
    for t in 0..2 {
        assert_eq!(host.tables[t][9], 0x10_1000 | 3);
    }
}
