//! The userspace fallback: TCE hypercalls that reach the VMM (`KVM_EXIT_PAPR_HCALL`: the kernel answered
//! `H_TOO_HARD`, knows no window for the LIOBN, or the call is disabled) are finished here with pvtce-core,
//! so the guest sees exactly the results the kernel would give.
//!
//! pvtce-core's [`Host`] is implemented over the VMM's memory map and VFIO: a host table entry is written
//! with `VFIO_IOMMU_MAP_DMA` / `VFIO_IOMMU_UNMAP_DMA` on the container, one host IOMMU page at a time. The
//! VMM does not know host physical addresses, so its "hpa" is the user address itself (page aligned): the
//! page-size rules of `ua_to_hpa` still hold, since the backing page is the host page (64 KiB here), and VFIO
//! turns the user address into the real one through the preregistered region.

use crate::error::Result;
use crate::kvm::Reply;
use crate::mem::GuestMem;
use crate::vfio::Container;
use pvtce_core::hcall::{hcall_with_buf, Dispatch, Machine};
use pvtce_core::host::{Backing, Host, HostGeometry, HostTableId, HostTce, Planned};
use pvtce_core::table::{PageId, PageStore, ENTRIES_PER_PAGE};
use pvtce_core::types::{Liobn, Perm, WindowGeometry};
use pvtce_core::window::{Window, MAX_INDIRECT_TCES, PLAN_SLOTS};
use std::collections::BTreeMap;

/// What the fallback needs from VFIO: the two calls that write host table entries. The container is the
/// real one; unit tests use a recorder.
pub trait DmaMap {
    /// Lets the device reach `[vaddr, vaddr + size)` at `iova`.
    ///
    /// # Safety
    /// As [`Container::map_dma`]: the range is memory given to the device (guest RAM).
    unsafe fn map(&self, vaddr: u64, iova: u64, size: u64, read: bool, write: bool) -> Result<()>;
    fn unmap(&self, iova: u64, size: u64) -> Result<()>;
}

impl DmaMap for &Container {
    unsafe fn map(&self, vaddr: u64, iova: u64, size: u64, read: bool, write: bool) -> Result<()> {
        // SAFETY: the caller's promise is this method's `# Safety` contract, the same as `map_dma`'s.
        unsafe { self.map_dma(vaddr, iova, size, read, write) }
    }
    fn unmap(&self, iova: u64, size: u64) -> Result<()> {
        self.unmap_dma(iova, size)
    }
}

/// Most guest table pages the fallback holds over all windows (a 4 GiB window of 4K pages needs 2049).
pub const MAX_TABLE_PAGES: usize = 1 << 16;

/// Guest table pages in `Vec`s.
#[derive(Default)]
pub struct VecStore {
    pages: Vec<Option<Box<[u64; ENTRIES_PER_PAGE as usize]>>>,
    reserve: Vec<Box<[u64; ENTRIES_PER_PAGE as usize]>>,
    free_ids: Vec<u64>,
}

impl VecStore {
    /// Adds `n` zeroed pages to the reserve; false past [`MAX_TABLE_PAGES`].
    pub fn fill(&mut self, n: usize) -> bool {
        if self.in_use() + self.reserve.len() + n > MAX_TABLE_PAGES {
            return false;
        }
        self.reserve.extend((0..n).map(|_| Box::new([0u64; ENTRIES_PER_PAGE as usize])));
        true
    }

    pub fn in_use(&self) -> usize {
        self.pages.iter().filter(|p| p.is_some()).count()
    }
}

impl PageStore for VecStore {
    fn take(&mut self) -> Option<PageId> {
        let page = self.reserve.pop()?;
        if let Some(id) = self.free_ids.pop() {
            self.pages[id as usize] = Some(page);
            return Some(PageId(id));
        }
        self.pages.push(Some(page));
        Some(PageId(self.pages.len() as u64 - 1))
    }
    fn available(&self) -> usize {
        self.reserve.len()
    }
    fn read(&self, page: PageId, index: usize) -> u64 {
        self.pages.get(page.0 as usize).and_then(|p| p.as_ref()).map_or(0, |p| p[index])
    }
    fn write(&mut self, page: PageId, index: usize, value: u64) {
        if let Some(Some(p)) = self.pages.get_mut(page.0 as usize) {
            p[index] = value;
        }
    }
    fn free(&mut self, page: PageId) {
        if let Some(slot) = self.pages.get_mut(page.0 as usize) {
            if slot.take().is_some() {
                self.free_ids.push(page.0);
            }
        }
    }
}

/// pvtce-core's host over guest memory (one slot at guest physical 0) and VFIO.
pub struct FbHost<'a, D: DmaMap> {
    mem: &'a GuestMem,
    dma: D,
    host_shift: u32,
    tables: BTreeMap<HostTableId, HostGeometry>,
    /// What each host entry holds, as this VMM wrote it (VFIO does not read entries back).
    shadow: BTreeMap<(HostTableId, u64), HostTce>,
    /// VFIO calls that failed inside `table_exchange` (which cannot fail): reported by the caller.
    pub errors: Vec<String>,
    /// VFIO map and unmap calls made.
    pub vfio_calls: u64,
}

impl<D: DmaMap> FbHost<'_, D> {
    fn geometry(&self, id: HostTableId) -> Option<HostGeometry> {
        self.tables.get(&id).copied()
    }
}

impl<D: DmaMap> Host for FbHost<'_, D> {
    fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
        (gpa < self.mem.len() as u64).then(|| self.mem.host_addr() + gpa)
    }

    fn prereg_lookup(&self, ua: u64, len: u64) -> Option<Backing> {
        let base = self.mem.host_addr();
        let end = ua.checked_add(len)?;
        if ua < base || end > base + self.mem.len() as u64 {
            return None;
        }
        let page = 1u64 << self.host_shift;
        Some(Backing { page_hpa: ua & !(page - 1), page_shift: self.host_shift })
    }

    fn table_geometry(&self, id: HostTableId) -> Option<HostGeometry> {
        self.geometry(id)
    }

    fn table_ready(&self, id: HostTableId, _first: u64, _count: u64) -> bool {
        self.tables.contains_key(&id)
    }

    fn table_exchange(&mut self, id: HostTableId, index: u64, new: HostTce, ua: u64) -> HostTce {
        let Some(g) = self.geometry(id) else {
            return HostTce::EMPTY;
        };
        let shift = g.page_shift.get();
        let (iova, size) = (index << shift, 1u64 << shift);
        let old = self.shadow.remove(&(id, index)).unwrap_or(HostTce::EMPTY);
        if old != HostTce::EMPTY {
            self.vfio_calls += 1;
            if let Err(e) = self.dma.unmap(iova, size) {
                self.errors.push(format!("{e}: {:?}", std::error::Error::source(&e)));
            }
        }
        // The core names `ua` from `prereg_lookup`, i.e. inside guest memory; checked again here because the
        // map below hands the range to the device.
        let base = self.mem.host_addr();
        let in_guest = ua >= base && ua.checked_add(size).is_some_and(|end| end <= base + self.mem.len() as u64);
        if new != HostTce::EMPTY && !in_guest {
            self.errors.push(format!("host entry {index} of table {id:?}: ua {ua:#x} is outside guest memory"));
        } else if new != HostTce::EMPTY {
            let perm = new.perm();
            let (read, write) = (matches!(perm, Perm::Read | Perm::ReadWrite), perm.device_writes());
            self.vfio_calls += 1;
            // SAFETY: `[ua, ua + size)` lies inside guest RAM (checked above), memory given to the guest and
            // its devices, which no Rust reference covers (`GuestMem` only copies through raw pointers).
            match unsafe { self.dma.map(ua, iova, size, read, write) } {
                Ok(()) => {
                    self.shadow.insert((id, index), new);
                }
                Err(e) => self.errors.push(format!("{e}: {:?}", std::error::Error::source(&e))),
            }
        }
        old
    }

    fn table_kill(&mut self, _id: HostTableId, _first: u64, _count: u64) {
        // Each VFIO map or unmap already invalidated its entries.
    }

    fn read_tce_list(&mut self, ua: u64, buf: &mut [u64]) -> bool {
        let Some(gpa) = ua.checked_sub(self.mem.host_addr()) else {
            return false;
        };
        let mut bytes = vec![0u8; buf.len() * 8];
        if self.mem.read(gpa, &mut bytes).is_err() {
            return false;
        }
        for (w, b) in buf.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        }
        true
    }
}

/// Windows the VMM answers itself, with their tables and the host.
pub struct Fallback<'a, D: DmaMap> {
    windows: Vec<Window>,
    pub store: VecStore,
    pub host: FbHost<'a, D>,
    /// Hypercalls answered here, by kind: put, indirect, stuff, get.
    pub handled: [u64; 4],
}

impl<'a, D: DmaMap> Machine for Fallback<'a, D> {
    type Store = VecStore;
    type Host = FbHost<'a, D>;
    fn window(&mut self, liobn: Liobn) -> Option<(&mut Window, &mut VecStore, &mut FbHost<'a, D>)> {
        let w = self.windows.iter_mut().find(|w| w.liobn() == liobn)?;
        Some((w, &mut self.store, &mut self.host))
    }
}

/// Why a window could not be added to the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddError {
    Duplicate,
    Link(pvtce_core::host::LinkError),
}

impl<'a, D: DmaMap> Fallback<'a, D> {
    /// `host_page_shift`: the host's page (16 on the pvtce L1).
    pub fn new(mem: &'a GuestMem, dma: D, host_page_shift: u32) -> Self {
        Fallback {
            windows: Vec::new(),
            store: VecStore::default(),
            host: FbHost {
                mem,
                dma,
                host_shift: host_page_shift,
                tables: BTreeMap::new(),
                shadow: BTreeMap::new(),
                errors: Vec::new(),
                vfio_calls: 0,
            },
            handled: [0; 4],
        }
    }

    /// Adds a window answered here, linked to host table `table` (`None`: guest table only).
    pub fn add_window(
        &mut self,
        liobn: Liobn,
        geometry: WindowGeometry,
        table: Option<(HostTableId, HostGeometry)>,
    ) -> std::result::Result<(), AddError> {
        if self.windows.iter().any(|w| w.liobn() == liobn) {
            return Err(AddError::Duplicate);
        }
        let mut w = Window::new(liobn, geometry);
        if let Some((id, g)) = table {
            self.host.tables.insert(id, g);
            if let Err(e) = w.link(&self.host, id) {
                self.host.tables.remove(&id);
                return Err(AddError::Link(e));
            }
        }
        self.windows.push(w);
        Ok(())
    }

    /// Removes a window: its host entries are cleared (as KVM's release does not, the VMM must; here the
    /// host window goes away right after) and its table pages freed. False if unknown.
    pub fn remove_window(&mut self, liobn: Liobn) -> bool {
        let Some(i) = self.windows.iter().position(|w| w.liobn() == liobn) else {
            return false;
        };
        let mut w = self.windows.swap_remove(i);
        w.release(&mut self.store);
        for l in w.links() {
            let mapped: Vec<u64> =
                self.host.shadow.keys().filter(|(id, _)| *id == l.id).map(|(_, index)| *index).collect();
            for index in mapped {
                self.host.table_exchange(l.id, index, HostTce::EMPTY, 0);
            }
            self.host.tables.remove(&l.id);
        }
        true
    }

    pub fn has_window(&self, liobn: Liobn) -> bool {
        self.windows.iter().any(|w| w.liobn() == liobn)
    }

    /// The guest-visible entry `index` (window-relative) of window `liobn`.
    pub fn entry(&self, liobn: Liobn, index: u64) -> Option<u64> {
        let w = self.windows.iter().find(|w| w.liobn() == liobn)?;
        w.table().get(&self.store, index)
    }

    /// Answers hypercall `nr` (args r4..) whole, as the kernel would have (pvtce-core's all-or-nothing
    /// rule: after the kernel's H_TOO_HARD nothing was applied, and the call is redone here from the start).
    /// `None`: not a TCE hypercall.
    pub fn handle(&mut self, nr: u64, args: &[u64; 9]) -> Option<Reply> {
        let mut buf = [0u64; MAX_INDIRECT_TCES as usize];
        let mut plan = [Planned::default(); PLAN_SLOTS];
        let a = [args[0], args[1], args[2], args[3]];
        loop {
            match hcall_with_buf(self, nr, a, &mut buf, &mut plan) {
                Dispatch::Return { ret, r4, .. } => {
                    let kind = match nr {
                        pvtce_core::hcall::H_PUT_TCE => 0,
                        pvtce_core::hcall::H_PUT_TCE_INDIRECT => 1,
                        pvtce_core::hcall::H_STUFF_TCE => 2,
                        _ => 3,
                    };
                    self.handled[kind] += 1;
                    // The VMM is the last stop: H_TOO_HARD is Linux-internal and never reaches the guest. What
                    // nobody can do (an unknown LIOBN, a TCE outside guest memory) is the guest's error, as
                    // QEMU answers an unknown LIOBN.
                    let ret = if ret == pvtce_core::error::H_TOO_HARD { pvtce_core::error::H_PARAMETER } else { ret };
                    let r4 = (nr == pvtce_core::hcall::H_GET_TCE && ret == 0).then_some(r4);
                    return Some(Reply { r3: ret as u64, r4 });
                }
                Dispatch::NeedAlloc(n) => {
                    if !self.store.fill(n.pages) {
                        // Out of table memory: the guest sees a hardware error, nothing changed.
                        return Some(Reply { r3: pvtce_core::error::H_HARDWARE as u64, r4: None });
                    }
                }
                Dispatch::NotOurs => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvtce_core::hcall::{H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE};
    use pvtce_core::types::PageShift;
    use std::cell::RefCell;

    /// One recorded VFIO call: 'm'ap or 'u'nmap, vaddr, iova, size, read, write.
    type Recorded = (char, u64, u64, u64, bool, bool);

    /// Records VFIO calls instead of making them.
    #[derive(Default)]
    struct Rec {
        calls: RefCell<Vec<Recorded>>,
        fail_iova: Option<u64>,
    }

    impl DmaMap for &Rec {
        unsafe fn map(&self, vaddr: u64, iova: u64, size: u64, read: bool, write: bool) -> Result<()> {
            if Some(iova) == self.fail_iova {
                return Err(crate::Error::MapDma {
                    iova,
                    size,
                    vaddr,
                    source: std::io::Error::from_raw_os_error(libc::ENXIO),
                });
            }
            self.calls.borrow_mut().push(('m', vaddr, iova, size, read, write));
            Ok(())
        }
        fn unmap(&self, iova: u64, size: u64) -> Result<()> {
            self.calls.borrow_mut().push(('u', 0, iova, size, false, false));
            Ok(())
        }
    }

    const LIOBN: u64 = 0x8000_0001;
    const BUS: u64 = 1 << 59;

    fn args(a: &[u64]) -> [u64; 9] {
        let mut v = [0u64; 9];
        v[..a.len()].copy_from_slice(a);
        v
    }

    fn setup<'a>(mem: &'a GuestMem, rec: &'a Rec, shift: PageShift) -> Fallback<'a, &'a Rec> {
        let mut f = Fallback::new(mem, rec, 16);
        let g = WindowGeometry::new(shift, BUS >> shift.get(), 1024).unwrap();
        let h = HostGeometry { page_shift: shift, offset: BUS >> shift.get(), size: 1024 };
        f.add_window(Liobn(LIOBN), g, Some((HostTableId(1), h))).unwrap();
        f
    }

    #[test]
    fn put_get_map_and_unmap_through_vfio() {
        let mem = GuestMem::new(1 << 20).unwrap();
        let rec = Rec::default();
        let mut f = setup(&mem, &rec, PageShift::SZ_64K);
        let ua = mem.host_addr();
        let r = f.handle(H_PUT_TCE, &args(&[LIOBN, BUS + 0x2_0000, 0x3_0000 | 3])).unwrap();
        assert_eq!(r, Reply { r3: 0, r4: None });
        let r = f.handle(H_GET_TCE, &args(&[LIOBN, BUS + 0x2_0000])).unwrap();
        assert_eq!(r, Reply { r3: 0, r4: Some(0x3_0003) });
        assert_eq!(f.entry(Liobn(LIOBN), 2), Some(0x3_0003));
        // Outside the window, misaligned, a dirty STUFF value: H_PARAMETER; an unknown LIOBN: H_TOO_HARD.
        assert_eq!(f.handle(H_PUT_TCE, &args(&[LIOBN, BUS + (1024 << 16), 3])).unwrap().r3 as i64, -4);
        assert_eq!(f.handle(H_PUT_TCE, &args(&[LIOBN, BUS + 0x100, 3])).unwrap().r3 as i64, -4);
        assert_eq!(f.handle(H_STUFF_TCE, &args(&[LIOBN, BUS, 1, 4])).unwrap().r3 as i64, -4);
        assert_eq!(f.handle(H_PUT_TCE, &args(&[0x42, BUS, 3])).unwrap().r3 as i64, -4);
        assert!(f.handle(0x4, &args(&[])).is_none());
        // Clearing unmaps.
        assert_eq!(f.handle(H_STUFF_TCE, &args(&[LIOBN, BUS, 0, 1024])).unwrap().r3, 0);
        let calls = rec.calls.borrow().clone();
        assert_eq!(
            calls,
            vec![
                ('m', ua + 0x3_0000, BUS + 0x2_0000, 0x1_0000, true, true),
                ('u', 0, BUS + 0x2_0000, 0x1_0000, false, false)
            ]
        );
        assert!(f.host.errors.is_empty());
    }

    #[test]
    fn indirect_4k_reads_the_list_once_and_maps_slices() {
        let mem = GuestMem::new(1 << 20).unwrap();
        let rec = Rec::default();
        let mut f = setup(&mem, &rec, PageShift::SZ_4K);
        let list: Vec<u8> = [0x5_1000u64 | 1, 0x5_2000 | 2].iter().flat_map(|t| t.to_be_bytes()).collect();
        mem.write(0x8000, &list).unwrap();
        let r = f.handle(H_PUT_TCE_INDIRECT, &args(&[LIOBN, BUS + 0x3000, 0x8000, 2])).unwrap();
        assert_eq!(r.r3, 0);
        let ua = mem.host_addr();
        assert_eq!(
            rec.calls.borrow().clone(),
            vec![
                ('m', ua + 0x5_1000, BUS + 0x3000, 0x1000, true, false),
                ('m', ua + 0x5_2000, BUS + 0x4000, 0x1000, false, true)
            ]
        );
        // A list that is not 4K aligned, or of 513 entries: H_PARAMETER.
        assert_eq!(f.handle(H_PUT_TCE_INDIRECT, &args(&[LIOBN, BUS, 0x8008, 1])).unwrap().r3 as i64, -4);
        assert_eq!(f.handle(H_PUT_TCE_INDIRECT, &args(&[LIOBN, BUS, 0x8000, 513])).unwrap().r3 as i64, -4);
        // A TCE outside guest memory: the kernel's H_TOO_HARD (no memslot) becomes the guest's H_PARAMETER.
        assert_eq!(f.handle(H_PUT_TCE, &args(&[LIOBN, BUS, (1 << 20) | 3])).unwrap().r3 as i64, -4);
    }

    // A batch with an entry the VMM cannot map (outside guest memory) is refused whole: nothing is mapped
    // and no entry changes, as in the kernel.
    #[test]
    fn a_batch_with_a_bad_entry_changes_nothing() {
        let mem = GuestMem::new(1 << 20).unwrap();
        let rec = Rec::default();
        let mut f = setup(&mem, &rec, PageShift::SZ_64K);
        let list: Vec<u8> =
            [0x1_0003u64, 0x2_0003, (1 << 20) | 3, 0x4_0003].iter().flat_map(|t| t.to_be_bytes()).collect();
        mem.write(0x8000, &list).unwrap();
        let r = f.handle(H_PUT_TCE_INDIRECT, &args(&[LIOBN, BUS, 0x8000, 4])).unwrap();
        assert_eq!(r.r3 as i64, -4);
        assert!(rec.calls.borrow().is_empty());
        let entries: Vec<Option<u64>> = (0..4).map(|i| f.entry(Liobn(LIOBN), i)).collect();
        assert_eq!(entries, vec![Some(0); 4]);
    }

    #[test]
    fn vfio_failure_is_recorded_and_remove_forgets() {
        let mem = GuestMem::new(1 << 20).unwrap();
        let rec = Rec { fail_iova: Some(BUS), ..Default::default() };
        let mut f = setup(&mem, &rec, PageShift::SZ_64K);
        assert_eq!(f.handle(H_PUT_TCE, &args(&[LIOBN, BUS, 3])).unwrap().r3, 0);
        assert_eq!(f.host.errors.len(), 1);
        assert!(f.remove_window(Liobn(LIOBN)));
        assert!(!f.remove_window(Liobn(LIOBN)));
        assert_eq!(f.store.in_use(), 0);
        assert_eq!(f.handle(H_GET_TCE, &args(&[LIOBN, BUS])).unwrap().r3 as i64, -4);
    }
}
