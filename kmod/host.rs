// SPDX-License-Identifier: GPL-2.0

//! pvtce-core's [`Host`] in the kernel: memslots, the VMM's preregistered memory, and the hardware tables of
//! the groups linked to a window, with Linux's bookkeeping: each mapped hardware entry counts one use of
//! its preregistered region (`mm_iommu_mapped_inc`) and records its user address in `it_userspace`, which
//! VFIO's sPAPR v2 code reads when it clears the table.

use crate::ffi::{self, Kvm, MmStruct, TableRef, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_NONE, DMA_TO_DEVICE};
use crate::pvtce_core::host::{Backing, Host, HostGeometry, HostTableId, HostTce};
use crate::pvtce_core::types::{PageShift, Perm};
use core::ffi::c_int;

/// One hardware table linked to a window.
pub(crate) struct HostLink {
    pub(crate) id: HostTableId,
    pub(crate) table: TableRef,
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

pub(crate) struct KernelHost<'a> {
    pub(crate) kvm: *mut Kvm,
    pub(crate) mm: *mut MmStruct,
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
        // SAFETY: `mm` is the VM's mm, alive while the VM (which holds this window) is.
        if let Some(mem) = unsafe { ffi::prereg_lookup(self.mm, ua, page_size) } {
            mem.mapped_dec();
        }
        slot.set(0);
    }
}

impl Host for KernelHost<'_> {
    fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
        // SAFETY: the hypercall hooks hold kvm->srcu around every call into the core (glue.c), and the VM
        // is alive while its vCPU runs the hypercall.
        unsafe { ffi::gpa_to_ua(self.kvm, gpa) }
    }

    fn prereg_lookup(&self, ua: u64, len: u64) -> Option<Backing> {
        // SAFETY: `mm` is the VM's mm, alive with the VM.
        let mem = unsafe { ffi::prereg_lookup(self.mm, ua, len) }?;
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
        let page_size = 1u64 << l.table.geometry().page_shift;
        let dir = perm_to_dir(new.perm());
        let mut mem = None;
        if dir != DMA_NONE {
            // SAFETY: `mm` is the VM's mm, alive with the VM.
            mem = unsafe { ffi::prereg_lookup(self.mm, ua, page_size) };
            match mem {
                Some(m) if m.mapped_inc() => {}
                // Validated by the core before any change (table_ready/prereg_lookup): cannot happen
                // unless the VMM unregistered memory in between; leave the entry as it is.
                _ => return HostTce::EMPTY,
            }
        }
        self.counts.updates += 1;
        match l.table.exchange(self.mm, index, new.hpa(), dir) {
            Ok((old_hpa, old_dir)) => {
                if old_dir != DMA_NONE {
                    self.release_old(l, index, page_size);
                }
                if dir != DMA_NONE {
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
            Err(_) => {
                if let Some(m) = mem {
                    m.mapped_dec();
                }
                HostTce::EMPTY
            }
        }
    }

    fn table_kill(&mut self, id: HostTableId, first: u64, count: u64) {
        if let Some(l) = self.link(id) {
            self.counts.kills += 1;
            l.table.kill(first, count);
        }
    }

    fn read_tce_list(&mut self, ua: u64, buf: &mut [u64]) -> bool {
        ffi::copy_words_from_user(ua, buf)
    }
}
