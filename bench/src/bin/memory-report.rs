//! Bytes used by the guest table of a 1 TiB window of 4 KiB pages (2^28 entries): empty, 1% mapped
//! contiguously, and 1% mapped at random entries. The random case uses a store that keeps only the
//! slots written, and reports what the kernel would allocate (whole 4 KiB pages).

use std::collections::HashMap;

use pvtce_core::table::{GuestTable, PageId, PageStore};

#[derive(Default)]
struct SparseStore {
    pages: Vec<HashMap<u16, u64>>,
}

impl PageStore for SparseStore {
    fn take(&mut self) -> Option<PageId> {
        self.pages.push(HashMap::new());
        Some(PageId(self.pages.len() as u64 - 1))
    }
    fn available(&self) -> usize {
        usize::MAX
    }
    fn read(&self, page: PageId, index: usize) -> u64 {
        self.pages[page.0 as usize].get(&(index as u16)).copied().unwrap_or(0)
    }
    fn write(&mut self, page: PageId, index: usize, value: u64) {
        self.pages[page.0 as usize].insert(index as u16, value);
    }
    fn free(&mut self, _page: PageId) {}
}

fn main() {
    const ENTRIES: u64 = 1 << 28;
    let mapped = ENTRIES / 100;
    let empty = GuestTable::new(ENTRIES);
    println!("empty 1 TiB 4K window: {} bytes", empty.bytes_used());

    let mut t = GuestTable::new(ENTRIES);
    let mut s = SparseStore::default();
    t.write_run(&mut s, 0, mapped, |i| (i << 12) | 3).expect("store never runs dry");
    println!("1% contiguous ({mapped} entries): {} bytes, {} pages", t.bytes_used(), t.pages());

    let mut t = GuestTable::new(ENTRIES);
    let mut s = SparseStore::default();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..mapped {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t.set(&mut s, x % ENTRIES, 0x1003).expect("store never runs dry");
    }
    println!("1% random ({mapped} entries, xorshift): {} bytes, {} pages", t.bytes_used(), t.pages());
}
