//! One test per row of docs/errors.md (the catalogue of bad inputs), plus the test that keeps the
//! catalogue and the tests in step. Rows come from Linux 7.3 `book3s_64_vio.c` / `iommu.c` /
//! `iommu_api.c` and QEMU `spapr_rtas_ddw.c` unless the row says "pvtce".

mod common;

use common::sim::{SimHost, SimMachine, VecStore};
use pvtce_core::ddw::{Pe, PeConfig};
use pvtce_core::error::{H_PARAMETER, H_SUCCESS, H_TOO_HARD};
use pvtce_core::hcall::{hcall, hcall_with_buf, Dispatch, H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE};
use pvtce_core::host::{HostTableId, LinkError, Planned};
use pvtce_core::types::{GeometryError, Liobn, PageShift, WindowGeometry};
use pvtce_core::window::{Window, PLAN_SLOTS};

const L: u64 = 0x10;
const RW: u64 = 3;
const NOT_PREREG: u64 = 200 << 20;
const NO_SLOT: u64 = 512 << 20;
const LIST: u64 = 0x20_0000;

/// A machine with the default window (4K pages, 1 GiB at bus 0) as LIOBN 0x10, linked to `links`.
fn machine(links: &[u32]) -> SimMachine {
    let mut m = SimMachine::new();
    let g = WindowGeometry::new(PageShift::SZ_4K, 0, 1 << 18).unwrap();
    let mut w = Window::new(Liobn(L), g);
    for id in links {
        w.link(&m.host, HostTableId(*id)).unwrap();
    }
    m.windows.insert(L, (w, VecStore::new()));
    m
}

/// Runs a hypercall, providing pages when asked. Returns (ret, r4, applied).
fn call(m: &mut SimMachine, nr: u64, args: [u64; 4]) -> (i64, u64, u64) {
    let mut buf = [0u64; 512];
    let mut plan = [Planned::default(); PLAN_SLOTS];
    for _ in 0..2 {
        match hcall_with_buf(m, nr, args, &mut buf, &mut plan) {
            Dispatch::Return { ret, r4, applied } => return (ret, r4, applied),
            Dispatch::NeedAlloc(n) => m.windows.get_mut(&args[0]).unwrap().1.add(n.pages),
            Dispatch::NotOurs => panic!("not ours"),
        }
    }
    panic!("NeedAlloc twice")
}

fn get(m: &mut SimMachine, ioba: u64) -> u64 {
    let (ret, r4, _) = call(m, H_GET_TCE, [L, ioba, 0, 0]);
    assert_eq!(ret, H_SUCCESS);
    r4
}

fn host_entry(m: &SimMachine, table: u32, index: u64) -> u64 {
    m.host.tables[&table].entries.get(&index).copied().unwrap_or(0)
}

fn indirect(m: &mut SimMachine, ioba: u64, tces: &[u64]) -> (i64, u64, u64) {
    m.host.write_list(LIST, tces);
    call(m, H_PUT_TCE_INDIRECT, [L, ioba, LIST, tces.len() as u64])
}

// ---- H_PUT_TCE ----

#[test]
fn e01_put_unknown_liobn() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE, [0x99, 0, 0x1000 | RW, 0]).0, H_TOO_HARD);
    // E01
}

#[test]
fn e02_put_ioba_misaligned() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 0x800, 0x1000 | RW, 0]).0, H_PARAMETER);
    // E02
}

#[test]
fn e03_put_ioba_below_window() {
    let mut m = SimMachine::new();
    let g = WindowGeometry::new(PageShift::SZ_4K, 16, 16).unwrap();
    m.windows.insert(L, (Window::new(Liobn(L), g), VecStore::new()));
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 15 << 12, 0x1000 | RW, 0]).0, H_PARAMETER); // E03
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 16 << 12, 0x1000 | RW, 0]).0, H_SUCCESS);
}

#[test]
fn e04_put_ioba_past_end() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 1 << 30, 0x1000 | RW, 0]).0, H_PARAMETER); // E04
    assert_eq!(call(&mut m, H_PUT_TCE, [L, (1 << 30) - 4096, 0x1000 | RW, 0]).0, H_SUCCESS);
}

#[test]
fn e05_put_ioba_huge() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, !0xFFF, 0x1000 | RW, 0]).0, H_PARAMETER);
    // E05
}

#[test]
fn e06_put_tce_misaligned_to_window_page() {
    // Linux 7.3 kvmppc_tce_validate: iommu_tce_check_gpa failing is H_TOO_HARD, not H_PARAMETER.
    let mut m = SimMachine::new();
    let g = WindowGeometry::new(PageShift::SZ_64K, 0, 1 << 14).unwrap();
    m.windows.insert(L, (Window::new(Liobn(L), g), VecStore::new()));
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 0, 0x1000 | RW, 0]).0, H_TOO_HARD); // E06
    assert_eq!(get(&mut m, 0), 0, "nothing stored");
}

#[test]
fn e07_put_tce_reserved_low_bits() {
    let mut m = machine(&[0]);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 0, 0x1004 | RW, 0]).0, H_TOO_HARD); // E07
    assert_eq!(host_entry(&m, 0, 0), 0);
}

#[test]
fn e08_put_tce_no_memslot() {
    // kvmppc_tce_validate: kvmppc_tce_to_ua failing -> H_TOO_HARD (the H_PARAMETER after it in
    // kvmppc_h_put_tce is unreachable).
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 0, NO_SLOT | RW, 0]).0, H_TOO_HARD); // E08
}

#[test]
fn e09_put_tce_not_preregistered() {
    let mut m = machine(&[0]);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 0, NOT_PREREG | RW, 0]).0, H_TOO_HARD); // E09
    assert_eq!(get(&mut m, 0), 0);
}

#[test]
fn e10_put_backing_page_smaller_than_host_page() {
    // mm_iommu_ua_to_hpa: pageshift > mem->pageshift -> -EFAULT -> H_TOO_HARD. 16M window and 16M host
    // table over RAM backed by 64K pages.
    let mut m = SimMachine::new();
    let g = WindowGeometry::new(PageShift::SZ_16M, (1u64 << 59) >> 24, 64).unwrap();
    let mut w = Window::new(Liobn(L), g);
    w.link(&m.host, HostTableId(4)).unwrap();
    m.windows.insert(L, (w, VecStore::new()));
    let ioba = 1u64 << 59;
    assert_eq!(call(&mut m, H_PUT_TCE, [L, ioba, (16 << 20) | RW, 0]).0, H_TOO_HARD); // E10
                                                                                      // The same over 16M-backed RAM2 works.
    assert_eq!(call(&mut m, H_PUT_TCE, [L, ioba, (1 << 30) | RW, 0]).0, H_SUCCESS);
}

#[test]
fn e11_put_unlinked_not_preregistered_ok() {
    // Linux checks preregistration only per linked table.
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 0, NOT_PREREG | RW, 0]).0, H_SUCCESS); // E11
    assert_eq!(get(&mut m, 0), NOT_PREREG | RW);
}

#[test]
fn e12_put_clear_with_poison_bits() {
    let mut m = machine(&[0]);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 0, 0x1000 | RW, 0]).0, H_SUCCESS);
    assert_ne!(host_entry(&m, 0, 0), 0);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 0, 0xdead_0000_0000_1004, 0]).0, H_SUCCESS); // E12
    assert_eq!(get(&mut m, 0), 0xdead_0000_0000_1004);
    assert_eq!(host_entry(&m, 0, 0), 0, "host entry cleared");
}

#[test]
fn e13_put_host_level_not_ready() {
    let mut m = machine(&[0]);
    m.host.tables.get_mut(&0).unwrap().unready.insert(0);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 0, 0x1000 | RW, 0]).0, H_TOO_HARD); // E13
    assert_eq!(get(&mut m, 0), 0);
}

#[test]
fn e14_put_fanout_subpage_not_preregistered() {
    // pvtce checks every sub-page before writing; Linux would fail half-way through the fan-out.
    let mut m = SimMachine::new();
    let g = WindowGeometry::new(PageShift::SZ_2M, (1u64 << 59) >> 21, 1024).unwrap();
    let mut w = Window::new(Liobn(L), g);
    w.link(&m.host, HostTableId(2)).unwrap();
    m.windows.insert(L, (w, VecStore::new()));
    // The last 2M page of the preregistered half: fine. The 2M page that straddles its end: impossible
    // (2M aligned), so use the first page past it, whose first sub-page is not registered either.
    let last = (128 << 20) - (2 << 20);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 1 << 59, last | RW, 0]).0, H_SUCCESS);
    assert_eq!(m.host.tables[&2].entries.len(), 512, "2M over 4K fans out to 512 entries");
    assert_eq!(call(&mut m, H_PUT_TCE, [L, (1 << 59) + (2 << 20), (128 << 20) | RW, 0]).0, H_TOO_HARD);
    // E14
}

#[test]
fn e15_put_tce_top_address() {
    let mut m = machine(&[0]);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 0, 0xFFFF_FFFF_FFFF_F003, 0]).0, H_TOO_HARD);
    // E15
}

#[test]
fn e16_put_needs_table_page() {
    let mut m = machine(&[]);
    let mut buf = [0u64; 512];
    let d = hcall_with_buf(&mut m, H_PUT_TCE, [L, 0, 0x1000 | RW, 0], &mut buf, &mut [Planned::default()]);
    assert_eq!(d, Dispatch::NeedAlloc(pvtce_core::table::NeedAlloc { pages: 2 })); // E16
    assert_eq!(get(&mut m, 0), 0, "nothing changed");
    // Clearing never needs a page.
    assert_eq!(hcall(&mut m, H_PUT_TCE, [L, 4096, 0, 0]), Dispatch::Return { ret: 0, r4: 0, applied: 1 });
}

// ---- H_GET_TCE ----

#[test]
fn e17_get_unknown_liobn() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_GET_TCE, [0x99, 0, 0, 0]).0, H_TOO_HARD); // E17
}

#[test]
fn e18_get_misaligned() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_GET_TCE, [L, 8, 0, 0]).0, H_PARAMETER); // E18
}

#[test]
fn e19_get_outside_window() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_GET_TCE, [L, 1 << 30, 0, 0]).0, H_PARAMETER); // E19
}

#[test]
fn e20_get_never_written() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_GET_TCE, [L, 0x3000, 0, 0]), (H_SUCCESS, 0, 0)); // E20
}

// ---- H_STUFF_TCE ----

#[test]
fn e21_stuff_unknown_liobn() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_STUFF_TCE, [0x99, 0, 0, 1]).0, H_TOO_HARD); // E21
}

#[test]
fn e22_stuff_value_with_read() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_STUFF_TCE, [L, 0, 0x1001, 1]).0, H_PARAMETER); // E22
}

#[test]
fn e23_stuff_value_with_write() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_STUFF_TCE, [L, 0, 0x1002, 1]).0, H_PARAMETER); // E23
}

#[test]
fn e24_stuff_zero_pages_at_end() {
    // iommu_tce_check_ioba with npages 0 accepts the address just past the window.
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_STUFF_TCE, [L, 1 << 30, 0, 0]), (H_SUCCESS, 0, 0));
    // E24
}

#[test]
fn e25_stuff_past_end() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_STUFF_TCE, [L, (1 << 30) - 4096, 0, 2]).0, H_PARAMETER);
    // E25
}

#[test]
fn e26_stuff_npages_wraps() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_STUFF_TCE, [L, 4096, 0, u64::MAX]).0, H_PARAMETER);
    // E26
}

#[test]
fn e27_stuff_misaligned() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_STUFF_TCE, [L, 4, 0, 1]).0, H_PARAMETER); // E27
}

#[test]
fn e28_stuff_poison_value_stored() {
    let mut m = machine(&[0]);
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 4096, 0x1000 | RW, 0]).0, H_SUCCESS);
    assert_eq!(call(&mut m, H_STUFF_TCE, [L, 0, 0xbad0_0000, 4]), (H_SUCCESS, 0, 4)); // E28
    assert_eq!(get(&mut m, 4096), 0xbad0_0000);
    assert_eq!(host_entry(&m, 0, 1), 0);
}

#[test]
fn e29_stuff_clear_whole_tib_window_allocates_nothing() {
    let mut m = SimMachine::new();
    let g = WindowGeometry::new(PageShift::SZ_4K, 0, 1 << 28).unwrap();
    m.windows.insert(L, (Window::new(Liobn(L), g), VecStore::new()));
    assert_eq!(call(&mut m, H_STUFF_TCE, [L, 0, 0, 1 << 28]), (H_SUCCESS, 0, 1 << 28)); // E29
    assert_eq!(m.windows[&L].1.in_use, 0);
}

// ---- H_PUT_TCE_INDIRECT ----

#[test]
fn e30_indirect_unknown_liobn() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE_INDIRECT, [0x99, 0, LIST, 1]).0, H_TOO_HARD);
    // E30
}

#[test]
fn e31_indirect_513_pages() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE_INDIRECT, [L, 0, LIST, 513]).0, H_PARAMETER); // E31
    assert_eq!(call(&mut m, H_PUT_TCE_INDIRECT, [L, 0, LIST, 512]).0, H_SUCCESS);
}

#[test]
fn e32_indirect_npages_checked_before_ioba() {
    // Order: npages > 512, then the list alignment, then the bus range; all H_PARAMETER.
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE_INDIRECT, [L, 3, LIST + 8, 600]).0, H_PARAMETER);
    // E32
}

#[test]
fn e33_indirect_list_misaligned() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE_INDIRECT, [L, 0, LIST + 8, 1]).0, H_PARAMETER);
    // E33
}

#[test]
fn e34_indirect_list_no_memslot() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE_INDIRECT, [L, 0, NO_SLOT, 1]).0, H_TOO_HARD);
    // E34
}

#[test]
fn e35_indirect_past_end() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE_INDIRECT, [L, (1 << 30) - 4096, LIST, 2]).0, H_PARAMETER);
    // E35
}

struct FaultingHost(SimHost);

use pvtce_core::host::{Backing, Host, HostGeometry, HostTce};
impl Host for FaultingHost {
    fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
        self.0.gpa_to_ua(gpa)
    }
    fn prereg_lookup(&self, ua: u64, len: u64) -> Option<Backing> {
        self.0.prereg_lookup(ua, len)
    }
    fn table_geometry(&self, id: HostTableId) -> Option<HostGeometry> {
        self.0.table_geometry(id)
    }
    fn table_ready(&self, id: HostTableId, first: u64, count: u64) -> bool {
        self.0.table_ready(id, first, count)
    }
    fn table_exchange(&mut self, id: HostTableId, index: u64, new: HostTce, ua: u64) -> HostTce {
        self.0.table_exchange(id, index, new, ua)
    }
    fn table_kill(&mut self, id: HostTableId, first: u64, count: u64) {
        self.0.table_kill(id, first, count)
    }
    fn read_tce_list(&mut self, _ua: u64, _buf: &mut [u64]) -> bool {
        false
    }
}
struct M(Window, VecStore, FaultingHost);
impl pvtce_core::hcall::Machine for M {
    type Store = VecStore;
    type Host = FaultingHost;
    fn window(&mut self, liobn: Liobn) -> Option<(&mut Window, &mut VecStore, &mut FaultingHost)> {
        (liobn.0 == L).then_some((&mut self.0, &mut self.1, &mut self.2))
    }
}

#[test]
fn e36_indirect_list_fault() {
    // get_user failing -> H_TOO_HARD. The Host answers false from read_tce_list.
    let g = WindowGeometry::new(PageShift::SZ_4K, 0, 1 << 18).unwrap();
    let mut m = M(Window::new(Liobn(L), g), VecStore::new(), FaultingHost(SimHost::new()));
    assert_eq!(
        hcall(&mut m, H_PUT_TCE_INDIRECT, [L, 0, LIST, 1]),
        Dispatch::Return { ret: H_TOO_HARD, r4: 0, applied: 0 }
    ); // E36
}

#[test]
fn e37_indirect_entry_misaligned_changes_nothing() {
    let mut m = machine(&[0]);
    let tces = [0x1000 | RW, 0x2000 | RW, 0x3800 | RW, 0x4000 | RW];
    assert_eq!(indirect(&mut m, 0, &tces), (H_TOO_HARD, 0, 0)); // E37
    assert_eq!(get(&mut m, 0), 0, "entries before k untouched too");
    assert_eq!(get(&mut m, 0x1000), 0);
    assert_eq!(get(&mut m, 0x2000), 0);
    assert_eq!(host_entry(&m, 0, 0), 0);
    assert_eq!(host_entry(&m, 0, 1), 0);
}

#[test]
fn e38_indirect_entry_no_memslot_changes_nothing() {
    let mut m = machine(&[0]);
    let tces = [0x1000 | RW, NO_SLOT | RW, 0x4000 | RW];
    assert_eq!(indirect(&mut m, 0, &tces), (H_TOO_HARD, 0, 0)); // E38
    assert_eq!(get(&mut m, 0), 0);
    assert_eq!(host_entry(&m, 0, 0), 0);
}

#[test]
fn e39_indirect_entry_not_preregistered_changes_nothing() {
    let mut m = machine(&[0]);
    let tces = [0x1000 | RW, 0x2000 | 1, NOT_PREREG | 2, 0x4000 | RW];
    assert_eq!(indirect(&mut m, 0, &tces), (H_TOO_HARD, 0, 0)); // E39
    assert_eq!((get(&mut m, 0), get(&mut m, 0x1000)), (0, 0));
    assert_eq!((host_entry(&m, 0, 0), host_entry(&m, 0, 1)), (0, 0));
}

#[test]
fn e40_indirect_redone_whole_after_the_cause_is_gone() {
    // Entries 0xffe, 0xfff, 0x1000: the last lives in host block 1, whose levels are missing.
    let tces = [0x1000 | RW, 0x2000 | RW, 0x3000 | RW];
    let mut m = machine(&[0]);
    m.host.tables.get_mut(&0).unwrap().unready.insert(1);
    let ioba = 0x100_0000 - 0x2000;
    assert_eq!(indirect(&mut m, ioba, &tces), (H_TOO_HARD, 0, 0));
    assert_eq!(get(&mut m, ioba), 0);
    m.host.tables.get_mut(&0).unwrap().unready.clear();
    // The VMM redoes the whole call, as an unmodified VMM does after H_TOO_HARD.
    assert_eq!(call(&mut m, H_PUT_TCE_INDIRECT, [L, ioba, LIST, 3]), (H_SUCCESS, 0, 3)); // E40
    assert_eq!((get(&mut m, ioba), get(&mut m, ioba + 0x2000)), (0x1000 | RW, 0x3000 | RW));
}

#[test]
fn e42_indirect_entries_big_endian() {
    let mut m = machine(&[]);
    // Store a little-endian word by writing its byte-swap: the core must read it as big-endian.
    m.host.write_list(LIST, &[(0x5000 | RW).swap_bytes()]);
    assert_eq!(call(&mut m, H_PUT_TCE_INDIRECT, [L, 0, LIST, 1]).0, H_SUCCESS); // E42
    assert_eq!(get(&mut m, 0), (0x5000 | RW).swap_bytes());
    m.host.write_list(LIST, &[0x5000 | RW]);
    assert_eq!(call(&mut m, H_PUT_TCE_INDIRECT, [L, 0, LIST, 1]).0, H_SUCCESS);
    assert_eq!(get(&mut m, 0), 0x5000 | RW);
}

#[test]
fn e43_indirect_zero_pages() {
    let mut m = machine(&[]);
    assert_eq!(call(&mut m, H_PUT_TCE_INDIRECT, [L, 0, LIST, 0]), (H_SUCCESS, 0, 0));
    // E43
}

#[test]
fn e44_indirect_clear_entry_not_translated() {
    // pvtce: a clear entry unmaps without translation, as in H_PUT_TCE. Linux's indirect path
    // translates it and would answer H_PARAMETER for an address with no memslot.
    let mut m = machine(&[0]);
    assert_eq!(indirect(&mut m, 0, &[NO_SLOT]), (H_SUCCESS, 0, 1)); // E44
    assert_eq!(get(&mut m, 0), NO_SLOT);
}

// ---- Links ----

fn window(shift: PageShift, offset: u64, size: u64) -> (Window, SimHost) {
    (Window::new(Liobn(L), WindowGeometry::new(shift, offset, size).unwrap()), SimHost::new())
}

#[test]
fn e45_link_host_page_larger() {
    let (mut w, h) = window(PageShift::SZ_4K, 0, 1 << 18);
    assert_eq!(w.link(&h, HostTableId(1)), Err(LinkError::PageTooLarge)); // E45
}

#[test]
fn e46_link_offset_mismatch() {
    let (mut w, h) = window(PageShift::SZ_4K, 0, 1 << 18);
    assert_eq!(w.link(&h, HostTableId(2)), Err(LinkError::OffsetMismatch)); // E46
}

#[test]
fn e47_link_host_table_too_small() {
    let (mut w, h) = window(PageShift::SZ_4K, 0, 1 << 19);
    assert_eq!(w.link(&h, HostTableId(0)), Err(LinkError::TooSmall)); // E47
    assert!(w.link(&h, HostTableId(6)).is_ok());
}

#[test]
fn e48_link_unknown_table() {
    let (mut w, h) = window(PageShift::SZ_4K, 0, 1 << 18);
    assert_eq!(w.link(&h, HostTableId(77)), Err(LinkError::UnknownTable)); // E48
}

#[test]
fn e49_link_too_many() {
    use pvtce_core::host::{HostGeometry, MAX_LINKS};
    let (mut w, mut h) = window(PageShift::SZ_4K, 0, 1 << 18);
    for id in 10..10 + MAX_LINKS as u32 + 1 {
        let shape = common::world::TableShape { id, page_shift: 12, offset: 0, size: 1 << 18 };
        h.tables.insert(
            id,
            common::sim::SimTable {
                shape,
                entries: Default::default(),
                unready: Default::default(),
                dirty: Default::default(),
                kills: 0,
                exchanges: 0,
            },
        );
    }
    let _ = HostGeometry { page_shift: PageShift::SZ_4K, offset: 0, size: 1 };
    for id in 10..10 + MAX_LINKS as u32 {
        assert!(w.link(&h, HostTableId(id)).is_ok());
    }
    assert_eq!(w.link(&h, HostTableId(10 + MAX_LINKS as u32)), Err(LinkError::TooManyLinks));
    // E49
}

#[test]
fn e50_unlink_not_linked() {
    let (mut w, _h) = window(PageShift::SZ_4K, 0, 1 << 18);
    assert!(!w.unlink(HostTableId(0))); // E50
}

#[test]
fn e51_hcall_after_unlink_updates_guest_only() {
    let mut m = machine(&[0]);
    assert!(m.windows.get_mut(&L).unwrap().0.unlink(HostTableId(0)));
    assert_eq!(call(&mut m, H_PUT_TCE, [L, 0, NOT_PREREG | RW, 0]).0, H_SUCCESS); // E51
    assert_eq!(get(&mut m, 0), NOT_PREREG | RW);
    assert!(m.host.tables[&0].entries.is_empty());
}

// ---- Dynamic DMA windows (RTAS) ----

fn pe() -> Pe {
    Pe::new(PeConfig::qemu_default([Liobn(1), Liobn(2)]))
}

#[test]
fn e52_ddw_unsupported_page_shift() {
    assert_eq!(pe().create(13, 30).unwrap_err().as_i32(), -3); // E52
}

#[test]
fn e53_ddw_window_smaller_than_page() {
    assert_eq!(pe().create(16, 15).unwrap_err().as_i32(), -3); // E53
}

#[test]
fn e54_ddw_no_free_window() {
    let mut p = pe();
    let c = p.create(16, 40).unwrap();
    assert_eq!((c.liobn, c.bus_hi(), c.bus_lo()), (Liobn(2), 0x0800_0000, 0));
    assert_eq!(p.create(16, 40).unwrap_err().as_i32(), -1); // E54
}

#[test]
fn e55_ddw_remove_unknown_liobn() {
    assert_eq!(pe().remove(Liobn(9)).unwrap_err().as_i32(), -3); // E55
}

#[test]
fn e56_ddw_remove_twice() {
    let mut p = pe();
    assert!(p.remove(Liobn(1)).is_ok());
    assert_eq!(p.remove(Liobn(1)).unwrap_err().as_i32(), -3); // E56
                                                              // With no window left the next one goes to the 32-bit address (QEMU).
    assert_eq!(p.create(12, 30).unwrap().geometry.bus_start(), 0);
}

#[test]
fn e57_ddw_page_shift_64() {
    assert_eq!(pe().create(64, 70).unwrap_err().as_i32(), -3); // E57
}

#[test]
fn e58_ddw_window_too_big() {
    assert_eq!(pe().create(16, 100).unwrap_err().as_i32(), -3); // E58
    assert_eq!(pe().create(12, 64).unwrap_err().as_i32(), -3);
}

#[test]
fn e59_ddw_disabled() {
    let mut cfg = PeConfig::qemu_default([Liobn(1), Liobn(2)]);
    cfg.ddw_enabled = false;
    let mut p = Pe::new(cfg);
    assert_eq!(p.query().unwrap_err().as_i32(), -3); // E59
    assert_eq!(p.create(16, 30).unwrap_err().as_i32(), -3);
    assert_eq!(p.remove(Liobn(1)).unwrap_err().as_i32(), -3);
    assert_eq!(p.reset().unwrap_err().as_i32(), -3);
}

// ---- Dispatcher and geometry ----

#[test]
fn e60_unknown_hcall_number() {
    let mut m = machine(&[]);
    assert_eq!(hcall(&mut m, 0x04, [L, 0, 0, 0]), Dispatch::NotOurs); // E60
}

#[test]
fn e61_geometry_empty() {
    assert_eq!(WindowGeometry::new(PageShift::SZ_4K, 0, 0), Err(GeometryError::Empty));
    // E61
}

#[test]
fn e62_geometry_overflow() {
    assert_eq!(WindowGeometry::new(PageShift::SZ_64K, (1 << 48) - 1, 2), Err(GeometryError::Overflow)); // E62
    assert_eq!(WindowGeometry::new(PageShift::SZ_4K, u64::MAX, 2), Err(GeometryError::Overflow));
    assert!(WindowGeometry::new(PageShift::SZ_64K, (1 << 48) - 2, 2).is_ok());
}

#[test]
fn e63_page_shift_range() {
    assert_eq!(PageShift::new(11), None); // E63
    assert_eq!(PageShift::new(35), None);
    assert!(PageShift::new(12).is_some() && PageShift::new(34).is_some());
}

/// Every row of docs/errors.md names a test in this file, and that test mentions the row's ID.
#[test]
fn errors_catalogue_matches_tests() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md")).unwrap();
    let src = std::fs::read_to_string(file!())
        .or_else(|_| std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/errors.rs")));
    let src = src.unwrap();
    let mut rows = 0;
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(id) = cells.get(1) else { continue };
        if !(id.len() == 3 && id.starts_with('E') && id[1..].chars().all(|c| c.is_ascii_digit())) {
            continue;
        }
        rows += 1;
        let test = cells.last().filter(|c| !c.is_empty()).or(cells.get(cells.len().saturating_sub(2))).unwrap();
        let test = test.trim_matches('`');
        let start = src.find(&format!("fn {test}()")).unwrap_or_else(|| panic!("{id}: no test fn {test}"));
        let body_end = src[start + 3..].find("\nfn ").map_or(src.len(), |e| start + 3 + e);
        assert!(src[start..body_end].contains(&format!("// {id}")), "{id}: test {test} does not mention {id}");
    }
    assert!(rows >= 40, "catalogue has only {rows} rows");
}
