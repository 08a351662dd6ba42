//! Memory figures of the guest table (a bound, not a timing): an empty 1 TiB window of 4 KiB pages
//! (2^28 entries) and the same window with 1% of its entries mapped contiguously from the start.
//! `cargo run --release -p pvtce-bench --bin memory-report` also gives the randomly spread figure.

mod common;

use common::sim::{SimMachine, VecStore};
use pvtce_core::hcall::{hcall, Dispatch, H_PUT_TCE_INDIRECT};
use pvtce_core::table::PAGE_BYTES;
use pvtce_core::types::{Liobn, PageShift, WindowGeometry};
use pvtce_core::window::Window;

const L: u64 = 0x10;
const ENTRIES: u64 = 1 << 28;

#[test]
fn empty_tib_window_is_tiny_and_one_percent_costs_in_proportion() {
    let mut m = SimMachine::new();
    let g = WindowGeometry::new(PageShift::SZ_4K, 0, ENTRIES).unwrap();
    m.windows.insert(L, (Window::new(Liobn(L), g), VecStore::new()));
    let empty = m.windows[&L].0.bytes_used();
    println!("empty 1 TiB 4K window: {empty} bytes");
    assert!(empty < 1024, "empty window uses {empty} bytes");

    // 1% of the entries, contiguous from bus address 0, written with H_PUT_TCE_INDIRECT (512 a call).
    let mapped = ENTRIES / 100;
    let list = 0x10_0000;
    let tces: Vec<u64> = (0..512u64).map(|k| ((k % 1024) << 12) | 3).collect();
    m.host.write_list(list, &tces);
    let mut done = 0;
    while done < mapped {
        let n = (mapped - done).min(512);
        loop {
            match hcall(&mut m, H_PUT_TCE_INDIRECT, [L, done << 12, list, n]) {
                Dispatch::NeedAlloc(need) => m.windows.get_mut(&L).unwrap().1.add(need.pages),
                Dispatch::Return { ret: 0, .. } => break,
                other => panic!("{other:?}"),
            }
        }
        done += n;
    }
    let used = m.windows[&L].0.bytes_used();
    let pages = m.windows[&L].0.table().pages();
    println!("1% ({mapped} entries, contiguous) mapped: {used} bytes in {pages} pages");
    // Leaves hold 512 entries: the cost is the entries' 8 bytes each plus under 1% for inner levels.
    let floor = mapped * 8;
    assert!(used as u64 >= floor);
    assert!((used as u64) < floor + floor / 100 + 4 * PAGE_BYTES as u64, "{used} bytes for {mapped} entries");
}
