// SPDX-License-Identifier: GPL-2.0

//! pvtce-core's [`Host`] in the kernel: memslots, the VMM's preregistered memory, and the hardware tables of
//! the groups linked to a window, with Linux's bookkeeping: each mapped hardware entry holds one use of its
//! preregistered region (`mm_iommu_mapped_inc`) and records its user address in `it_userspace`, which VFIO's
//! sPAPR v2 code reads when it clears the table.
//!
//! A region is looked up and used inside one RCU read section ([`iommu::Prereg`]); an entry keeps its region
//! by its mapped count ([`iommu::MappedUse`]).

use crate::ffi::VmSrcu;
use crate::iommu::{self, IommuTable, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_NONE, DMA_TO_DEVICE};
use crate::pvtce_core::host::{Backing, Host, HostGeometry, HostTableId, HostTce};
use crate::pvtce_core::types::{PageShift, Perm};
use core::ffi::c_int;
use kernel::mm::Mm;
use kernel::sync::aref::ARef;
use kernel::sync::rcu;
use kernel::uaccess::{UserPtr, UserSlice};

/// One hardware table linked to a window.
pub(crate) struct HostLink {
    pub(crate) id: HostTableId,
    pub(crate) table: ARef<IommuTable>,
    /// The address of the group it came from, as an identity only (never dereferenced): `release_group`
    /// matches on it.
    pub(crate) group: usize,
}

/// Hardware-side counters of one call.
#[derive(Default)]
pub(crate) struct HostCounts {
    pub(crate) updates: u64,
    pub(crate) kills: u64,
}

/// The host of one call into the core: it needs the VM's `kvm->srcu` held (the token) for the memslots.
pub(crate) struct KernelHost<'a> {
    pub(crate) srcu: &'a VmSrcu<'a>,
    pub(crate) links: &'a [HostLink],
    pub(crate) counts: HostCounts,
}

fn perm_to_dir(p: Perm) -> c_int {
    match p {
        Perm::None => DMA_NONE,
        Perm::Read => DMA_TO_DEVICE,
        Perm::Write => DMA_FROM_DEVICE,
        Perm::ReadWrite => DMA_BIDIRECTIONAL,
    }
}

fn dir_to_bits(d: c_int) -> u64 {
    match d {
        DMA_TO_DEVICE => 1,
        DMA_FROM_DEVICE => 2,
        DMA_BIDIRECTIONAL => 3,
        _ => 0,
    }
}

impl<'a> KernelHost<'a> {
    pub(crate) fn new(srcu: &'a VmSrcu<'a>, links: &'a [HostLink]) -> Self {
        KernelHost { srcu, links, counts: HostCounts::default() }
    }

    fn mm(&self) -> &'a Mm {
        self.srcu.vm().mm()
    }

    fn link(&self, id: HostTableId) -> Option<&'a HostLink> {
        let links: &'a [HostLink] = self.links;
        links.iter().find(|l| l.id == id)
    }

    /// Drops the use the old entry at `index` held on its preregistered region and forgets its address.
    fn release_old(&self, l: &HostLink, index: u64, page_size: u64) {
        let Some(slot) = l.table.useraddr(index, false) else {
            return;
        };
        let ua = slot.get();
        if ua == 0 {
            return;
        }
        let rcu = rcu::read_lock();
        // The old entry's count keeps its region registered, and regions do not overlap: this finds it.
        if let Some(mem) = iommu::prereg_lookup(&rcu, self.mm(), ua, page_size) {
            // SAFETY: the old entry, just exchanged away by us, held one count on this region (kept by
            // `table_exchange` below when it mapped the entry).
            unsafe { mem.mapped_dec() };
        }
        slot.set(0);
    }
}

impl Host for KernelHost<'_> {
    fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
        self.srcu.gpa_to_ua(gpa)
    }

    fn prereg_lookup(&self, ua: u64, len: u64) -> Option<Backing> {
        let rcu = rcu::read_lock();
        let mem = iommu::prereg_lookup(&rcu, self.mm(), ua, len)?;
        let shift = len.trailing_zeros();
        // Linux's region keeps one host address per PAGE_SIZE page and refuses an IOMMU page larger than
        // the region's smallest page: report the backing as at least PAGE_SIZE, or smaller than asked.
        let page_shift = shift.max(kernel::page::PAGE_SHIFT as u32);
        match mem.ua_to_hpa(ua, shift) {
            Some(hpa) => Some(Backing { page_hpa: hpa & !((1u64 << page_shift) - 1), page_shift }),
            None => Some(Backing { page_hpa: 0, page_shift: 12.min(shift.saturating_sub(1)) }),
        }
    }

    fn table_geometry(&self, id: HostTableId) -> Option<HostGeometry> {
        let g = self.link(id)?.table.geometry();
        Some(HostGeometry { page_shift: PageShift::new(g.page_shift)?, offset: g.offset, size: g.size })
    }

    fn table_ready(&self, id: HostTableId, first: u64, count: u64) -> bool {
        let Some(l) = self.link(id) else {
            return false;
        };
        // Linux allocates the it_userspace level on the map path and answers H_TOO_HARD if it cannot.
        (0..count).all(|i| first.checked_add(i).is_some_and(|e| l.table.useraddr(e, true).is_some()))
    }

    fn table_exchange(&mut self, id: HostTableId, index: u64, new: HostTce, ua: u64) -> HostTce {
        let Some(l) = self.link(id) else {
            return HostTce::EMPTY;
        };
        let geometry = l.table.geometry();
        let page_size = 1u64 << geometry.page_shift;
        let dir = perm_to_dir(new.perm());
        let mut used = None;
        if dir != DMA_NONE {
            // Lookup and count in one RCU section: an unregistered region is freed only after it ends, and
            // once counted it cannot be unregistered.
            let rcu = rcu::read_lock();
            let Some(u) = iommu::prereg_lookup(&rcu, self.mm(), ua, page_size).and_then(|m| m.mapped_inc()) else {
                // Validated by the core before any change: the VMM unregistered the memory in between. Leave
                // the entry as it is.
                return HostTce::EMPTY;
            };
            drop(rcu);
            // The region may have been unregistered and registered again since the core translated `ua`:
            // map only the page the counted region pins.
            let pinned = u.ua_to_hpa(ua, geometry.page_shift).map(|h| h & !(page_size - 1));
            if pinned != Some(new.hpa() & !(page_size - 1)) {
                return HostTce::EMPTY;
            }
            used = Some(u);
        }
        self.counts.updates += 1;
        match l.table.exchange(self.mm(), index, new.hpa(), dir) {
            Ok((old_hpa, old_dir)) => {
                if old_dir != DMA_NONE {
                    self.release_old(l, index, page_size);
                }
                if let Some(u) = used {
                    // The entry holds the count from now on (released by `release_old` or VFIO's clear).
                    u.keep();
                    if let Some(slot) = l.table.useraddr(index, true) {
                        slot.set(ua);
                    }
                }
                if old_dir == DMA_NONE {
                    HostTce::EMPTY
                } else {
                    HostTce(old_hpa | dir_to_bits(old_dir))
                }
            }
            // `used` drops its count here.
            Err(_) => HostTce::EMPTY,
        }
    }

    fn table_kill(&mut self, id: HostTableId, first: u64, count: u64) {
        if let Some(l) = self.link(id) {
            self.counts.kills += 1;
            l.table.kill(first, count);
        }
    }

    fn read_tce_list(&mut self, ua: u64, buf: &mut [u64]) -> bool {
        read_words(ua, buf).is_ok()
    }
}

/// Copies `buf.len()` words from the current task's (the VMM's) memory at `ua`, once, as loaded.
pub(crate) fn read_words(ua: u64, buf: &mut [u64]) -> kernel::error::Result {
    use kernel::transmute::AsBytes;
    let len = core::mem::size_of_val(buf);
    UserSlice::new(UserPtr::from_addr(ua as usize), len).reader().read_slice(buf.as_bytes_mut())
}
