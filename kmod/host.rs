// SPDX-License-Identifier: GPL-2.0

//! pvtce-core's [`Host`] in the kernel: memslots, the VMM's preregistered memory, and the hardware tables of
//! the groups linked to a window, with Linux's bookkeeping: each mapped hardware entry holds one use of its
//! preregistered region (`mm_iommu_mapped_inc`) and records its user address in `it_userspace`, which VFIO's
//! sPAPR v2 code reads when it clears the table.
//!
//! A region is looked up and used inside one RCU read section ([`iommu::Prereg`]); an entry keeps its region
//! by its mapped count ([`iommu::MappedUse`]). For a batch the core validates with a plan, the count is taken
//! at validation ([`Host::take_region`], in the same RCU section as the lookup and the `ua -> hpa` read) into a
//! slot of the window's `holds`, and the core carries the slot's number ([`Region`]) to the apply step, so the
//! region is looked up once per new entry. The core never holds the count itself: a token it hands back can
//! name only a slot, and a slot gives its count up once (no `unsafe` rests on the core keeping its contract).

use crate::ffi::{IrqsOff, RcuSection, Vm, VmSrcu};
use crate::iommu::{
    self, IommuTable, MappedUse, TableGeometry, UserAddrSlot, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_NONE,
    DMA_TO_DEVICE,
};
use crate::once::read_once;
use crate::pvtce_core::host::{
    run_each, Backing, Host, HostEntry, HostGeometry, HostTableId, HostTce, Region, RunFailed, XlateError, MAX_LINKS,
};
use crate::pvtce_core::types::{PageShift, Perm};
use core::cell::{Cell, RefCell};
use core::ffi::{c_int, c_long};
use kernel::error::code::EIO;
use kernel::mm::Mm;
use kernel::sync::aref::ARef;
use kernel::sync::atomic::Atomic;
use kernel::uaccess::{UserPtr, UserSlice};

/// One hardware table linked to a window.
pub(crate) struct HostLink {
    pub(crate) id: HostTableId,
    pub(crate) table: ARef<IommuTable>,
    /// The address of the group it came from, as an identity only (never dereferenced): `release_group`
    /// matches on it.
    pub(crate) group: usize,
    /// The table's geometry, read once at link: an `iommu_table`'s page shift, offset and size are fixed for
    /// its life, which the reference above spans.
    pub(crate) geometry: TableGeometry,
}

/// The hardware tables linked to a window, inline in its state: a vector's buffer would be one more block for
/// every hypercall to touch, which under TCG costs a TLB fill (docs/bench/analysis.md).
///
/// # Invariants
/// `slots[..len]` are all `Some`, the rest `None`.
pub(crate) struct Links {
    slots: [Option<HostLink>; MAX_LINKS],
    len: usize,
}

impl Default for Links {
    fn default() -> Self {
        Links { slots: [const { None }; MAX_LINKS], len: 0 }
    }
}

impl Links {
    /// The linked tables, in link order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &HostLink> {
        self.slots.iter().take(self.len).flatten()
    }

    /// How many tables are linked.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The first linked table.
    pub(crate) fn first(&self) -> Option<&HostLink> {
        self.iter().next()
    }

    /// Adds a link; gives it back when [`MAX_LINKS`] are linked.
    pub(crate) fn push(&mut self, link: HostLink) -> core::result::Result<(), HostLink> {
        let Some(slot) = self.slots.get_mut(self.len) else {
            return Err(link);
        };
        *slot = Some(link);
        // INVARIANT: the slot at the old `len` is now `Some`.
        self.len += 1;
        Ok(())
    }

    /// Takes the last link out.
    pub(crate) fn pop(&mut self) -> Option<HostLink> {
        let i = self.len.checked_sub(1)?;
        // INVARIANT: the last `Some` becomes `None`.
        self.len = i;
        self.slots.get_mut(i)?.take()
    }

    /// Takes link `i` out, moving the later ones down (link order is kept).
    pub(crate) fn remove(&mut self, i: usize) -> Option<HostLink> {
        if i >= self.len {
            return None;
        }
        let link = self.slots.get_mut(i)?.take();
        self.slots.get_mut(i..self.len)?.rotate_left(1);
        // INVARIANT: the `None` left at `i` was rotated to the end of the filled part.
        self.len -= 1;
        link
    }
}

/// Hardware-side counters of one call.
#[derive(Default)]
pub(crate) struct HostCounts {
    pub(crate) updates: u64,
    pub(crate) kills: u64,
    /// Batched updates (`iommu_tce_set_multi_no_kill` calls) and how many of them the parent refused.
    pub(crate) runs: u64,
    pub(crate) run_failures: u64,
}

/// Most entries one batched update writes: one parent H_PUT_TCE_INDIRECT's list (4 KiB).
pub(crate) const RUN_CHUNK: usize = 512;

/// The length of a window's run buffer: a chunk's entries, their user addresses, then the region holds the
/// core handed over with them (0 where the run took its own, [`KernelHost::take_use`]).
pub(crate) const RUN_BUF: usize = 3 * RUN_CHUNK;

/// Runs of at most this many entries (an H_PUT_TCE's, one per link, or a 64K TCE's 16 entries of 4K host
/// pages) use a buffer on the stack, not the window's run buffer, whose three arrays lie in three pages: on
/// an exit's cold path each page touched is one more TLB fill (docs/bench/analysis.md).
const SMALL_RUN: usize = 16;

/// Runs of at most this many entries (an H_PUT_TCE's with up to two links and no fan-out) use a buffer small
/// enough to be zeroed by a few stores, not by a call to `memset` (one more out-of-line target on the exit's
/// cold path).
const TINY_RUN: usize = 2;

/// The host of one call into the core: it needs the VM's `kvm->srcu` held (the token) for the memslots, except
/// for a call that only clears ([`KernelHost::clearing`]), which translates no guest address.
pub(crate) struct KernelHost<'a> {
    vm: &'a Vm,
    /// `None` for a clearing call: [`Host::gpa_to_ua`] then finds nothing (the core asks only for mappings).
    srcu: Option<&'a VmSrcu<'a>>,
    pub(crate) links: &'a Links,
    pub(crate) counts: HostCounts,
    /// The window's run buffer ([`RUN_BUF`] words, under the window lock); empty for a host that only links
    /// or exchanges entry by entry.
    buf: &'a mut [u64],
    /// In KVM's early path (interrupts off, the proof): allocate nothing. [`Host::table_ready`] then refuses an
    /// entry whose `it_userspace` level is missing instead of allocating it, and the caller declines the call.
    /// The region lookups' RCU sections are then the interrupts-off region itself ([`RcuSection`]).
    early: Option<&'a IrqsOff>,
    /// The window's hold slots ([`crate::window::State::holds`]; empty: validation takes no hold) and the next
    /// free one: a [`Region`] token is a slot number + 1.
    holds: RefCell<&'a mut [Option<MappedUse>]>,
    next_hold: Cell<usize>,
}

impl Drop for KernelHost<'_> {
    fn drop(&mut self) {
        // Every hold is given back or handed to an entry by the end of the call (pvtce-core's plan contract);
        // should one be left, its count is released here rather than kept for a slot reused by the next call.
        let n = self.next_hold.get();
        for slot in self.holds.get_mut().iter_mut().take(n) {
            drop(slot.take());
        }
    }
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
    pub(crate) fn new(srcu: &'a VmSrcu<'a>, links: &'a Links) -> Self {
        KernelHost::make(srcu.vm(), Some(srcu), links, &mut [])
    }

    /// A host whose [`Host::table_run`] writes batches through the window's run buffer `buf`.
    pub(crate) fn with_buf(srcu: &'a VmSrcu<'a>, links: &'a Links, buf: &'a mut [u64]) -> Self {
        KernelHost::make(srcu.vm(), Some(srcu), links, buf)
    }

    /// [`KernelHost::with_buf`] for a call whose every entry clears (H_STUFF_TCE or H_PUT_TCE of 0), with no
    /// `kvm->srcu`: the core translates no guest address for it, and an old entry's region is found in the
    /// VM's mm, which the window's VM reference keeps.
    pub(crate) fn clearing(vm: &'a Vm, links: &'a Links, buf: &'a mut [u64]) -> Self {
        KernelHost::make(vm, None, links, buf)
    }

    fn make(vm: &'a Vm, srcu: Option<&'a VmSrcu<'a>>, links: &'a Links, buf: &'a mut [u64]) -> Self {
        let (holds, next_hold) = (RefCell::new(&mut [][..]), Cell::new(0));
        KernelHost { vm, srcu, links, counts: HostCounts::default(), buf, early: None, holds, next_hold }
    }

    /// The host for KVM's early path, which `irqs` proves (see `early`).
    pub(crate) fn early(mut self, irqs: &'a IrqsOff) -> Self {
        self.early = Some(irqs);
        self
    }

    /// An RCU read section for a region lookup (none entered in the early path: see `early`).
    fn rcu(&self) -> RcuSection<'a> {
        RcuSection::enter(self.early)
    }

    /// A host whose validation takes each new entry's region count into one of the window's `holds` slots
    /// ([`Host::take_region`]).
    pub(crate) fn with_holds(mut self, holds: &'a mut [Option<MappedUse>]) -> Self {
        self.holds = RefCell::new(holds);
        self
    }

    /// The slot `region` names (token - 1); `None` for [`Region::NONE`].
    fn slot_of(region: Region) -> Option<usize> {
        usize::try_from(region.0.checked_sub(1)?).ok()
    }

    /// Takes the count in the slot `region` names out of it; `None` for [`Region::NONE`], a number that names
    /// no slot, or an empty one.
    fn hold(&self, region: Region) -> Option<MappedUse> {
        self.holds.borrow_mut().get_mut(Self::slot_of(region)?)?.take()
    }

    /// Whether `region` names a slot that holds a count.
    fn holds_count(&self, region: Region) -> bool {
        Self::slot_of(region).is_some_and(|i| self.holds.borrow().get(i).is_some_and(Option::is_some))
    }

    fn mm(&self) -> &'a Mm {
        self.vm.mm()
    }

    fn link(&self, id: HostTableId) -> Option<&'a HostLink> {
        let links: &'a Links = self.links;
        links.iter().find(|l| l.id == id)
    }

    /// Drops the use the old entry at `index` held on its preregistered region and forgets its address; with
    /// `dirty` first marks its page dirty (the batched update reads no old entry back, so it does not know
    /// whether the entry allowed device writes: every old page counts as written, which costs at most a
    /// writeback).
    #[link_section = ".text.pvtce_hot"]
    fn release_old(&self, l: &HostLink, index: u64, page_shift: u32, dirty: bool) {
        self.release_slot(None, l.table.useraddr(index, false), page_shift, dirty);
    }

    /// [`KernelHost::release_old`] for entries `first..first + count` of a range that was just cleared: nothing
    /// in it allocates or sleeps (no `it_userspace` level to make), so the releases of each [`RUN_CHUNK`] share
    /// one RCU section (one section each costs more than the release on a debug kernel: lockdep tracks every
    /// `rcu_read_lock`; one per chunk keeps a section as short as a chunk's update). The `it_userspace` slots of
    /// the range's first `found.len()` entries are `found` (the caller found them before the range's parent
    /// hypercall); the others are found here. In the hot section: an early H_PUT_TCE of 0 releases through it.
    #[link_section = ".text.pvtce_hot"]
    fn release_range(&self, l: &HostLink, first: u64, count: u64, page_shift: u32, found: &[Option<UserAddrSlot<'_>>]) {
        let end = first.saturating_add(count);
        let mut index = first;
        while index < end {
            let chunk_end = index.saturating_add(RUN_CHUNK as u64).min(end);
            let rcu = self.rcu();
            for i in index..chunk_end {
                let slot = usize::try_from(i - first).ok().and_then(|k| found.get(k)).copied();
                self.release_slot(Some(&rcu), slot.unwrap_or_else(|| l.table.useraddr(i, false)), page_shift, true);
            }
            index = chunk_end;
        }
    }

    /// [`KernelHost::release_old`] of the entry whose `it_userspace` slot is `slot` (`None`: no level, so
    /// nothing to release), found by the caller, inside the caller's RCU section `held`, or its own when `None`.
    #[link_section = ".text.pvtce_hot"]
    fn release_slot(
        &self,
        held: Option<&RcuSection<'_>>,
        slot: Option<UserAddrSlot<'_>>,
        page_shift: u32,
        dirty: bool,
    ) {
        let Some(slot) = slot else {
            return;
        };
        // Taken, not read: the slot is the token of the entry's use (see `UserAddrSlot::take`).
        let ua = slot.take();
        if ua == 0 {
            return;
        }
        let own;
        let rcu = match held {
            Some(r) => r,
            None => {
                own = self.rcu();
                &own
            }
        };
        // The old entry's count keeps its region registered, and regions do not overlap: this finds it.
        if let Some(mem) = iommu::prereg_lookup(rcu, self.mm(), ua, 1u64 << page_shift) {
            if dirty {
                if let Some(hpa) = mem.ua_to_hpa(ua, page_shift) {
                    // SAFETY: the region pins `hpa`'s page: it is alive (RCU) and the old entry's count keeps it
                    // registered, so not unpinned, until the `mapped_dec` below.
                    unsafe { iommu::set_dirty(self.mm(), hpa, page_shift) };
                }
            }
            // SAFETY: the old entry, just exchanged away by us, held one count on this region (kept when it
            // was mapped: `table_exchange`, `table_run`, or VFIO's own map), which taking its address made ours.
            unsafe { mem.mapped_dec() };
        }
    }

    /// Takes one use of the region that pins `ua` for an entry mapping `new`, kept by the caller until the entry
    /// is written or [`KernelHost::drop_use`] gives it back; false (nothing taken) when the VMM unregistered the
    /// region since the core validated, or a new registration no longer pins `new`'s page.
    fn take_use(&self, ua: u64, new: HostTce, page_shift: u32) -> bool {
        let page_size = 1u64 << page_shift;
        // Lookup and count in one RCU section, as in `table_exchange`.
        let rcu = self.rcu();
        let Some(u) = iommu::prereg_lookup(&rcu, self.mm(), ua, page_size).and_then(|m| m.mapped_inc()) else {
            return false;
        };
        drop(rcu);
        let pinned = u.ua_to_hpa(ua, page_shift).map(|h| h & !(page_size - 1));
        if pinned != Some(new.hpa() & !(page_size - 1)) {
            // `u` drops its count.
            return false;
        }
        u.keep();
        true
    }

    /// Gives back the holds the core handed over with run entries `range` (`entry` as in [`Host::table_run`]),
    /// which will not be written.
    fn give_back<F: Fn(&Self, u64) -> HostEntry + ?Sized>(&self, entry: &F, range: core::ops::Range<u64>) {
        for k in range {
            let e = entry(self, k);
            if e.region != Region::NONE {
                self.put_region(e.region);
            }
        }
    }

    /// Gives back a use [`KernelHost::take_use`] took for `ua`, for an entry that never reached the table.
    fn drop_use(&self, ua: u64, page_shift: u32) {
        let rcu = self.rcu();
        // The count taken keeps the region registered: this finds it.
        if let Some(mem) = iommu::prereg_lookup(&rcu, self.mm(), ua, 1u64 << page_shift) {
            // SAFETY: `take_use` kept one count on this region for `ua`, and nothing holds it since.
            unsafe { mem.mapped_dec() };
        }
    }
}

/// The `inject_run_failure` module parameter, copied by the module's init (as [`crate::hcall::EARLY`]: the
/// kernel crate's `value()` is a C helper call, here once per mapping batch).
pub(crate) static INJECT_RUN_FAILURE: Atomic<u64> = Atomic::new(0);

/// `inject_run_failure` (test only): whether a batched update of `count` entries that maps something fails
/// half-way, as a refusing parent would.
fn inject_failure(count: u64) -> bool {
    let at = read_once(&INJECT_RUN_FAILURE);
    at != 0 && count >= at
}

impl Host for KernelHost<'_> {
    #[link_section = ".text.pvtce_hot"]
    fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
        self.srcu?.gpa_to_ua(gpa)
    }

    fn prereg_lookup(&self, ua: u64, len: u64) -> Option<Backing> {
        let rcu = self.rcu();
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

    /// Lookup, `ua -> hpa` and `mm_iommu_mapped_inc` in one RCU section (as [`KernelHost::take_use`]); the
    /// count goes into the next hold slot and the token names that slot. A region whose count already dropped
    /// to zero (the VMM is unregistering it) counts as not preregistered. With no slot left (or none given)
    /// no count is taken: the run takes its own ([`KernelHost::take_use`]).
    #[link_section = ".text.pvtce_hot"]
    fn take_region(&self, ua: u64, shift: PageShift) -> Result<(u64, Region), XlateError> {
        let page_shift = shift.get();
        let rcu = self.rcu();
        let mem = iommu::prereg_lookup(&rcu, self.mm(), ua, shift.size()).ok_or(XlateError::NotPreregistered)?;
        // Linux's mm_iommu_ua_to_hpa: an IOMMU page larger than the region's pages is refused.
        let hpa = mem.ua_to_hpa(ua, page_shift).ok_or(XlateError::PageTooSmall)? & !shift.offset_mask();
        let i = self.next_hold.get();
        let mut holds = self.holds.borrow_mut();
        let Some(slot) = holds.get_mut(i) else {
            return Ok((hpa, Region::NONE));
        };
        *slot = Some(mem.mapped_inc().ok_or(XlateError::NotPreregistered)?);
        drop(rcu);
        self.next_hold.set(i + 1);
        Ok((hpa, Region(i as u64 + 1)))
    }

    #[link_section = ".text.pvtce_hot"]
    fn put_region(&self, region: Region) {
        // The slot's count, if any, drops here.
        drop(self.hold(region));
    }

    fn table_geometry(&self, id: HostTableId) -> Option<HostGeometry> {
        let g = self.link(id)?.geometry;
        Some(HostGeometry { page_shift: PageShift::new(g.page_shift)?, offset: g.offset, size: g.size })
    }

    #[link_section = ".text.pvtce_hot"]
    fn table_ready(&self, id: HostTableId, first: u64, count: u64) -> bool {
        let Some(l) = self.link(id) else {
            return false;
        };
        // Linux allocates the it_userspace level on the map path and answers H_TOO_HARD if it cannot.
        // In the early path nothing is allocated: a missing level refuses and the call is declined.
        (0..count).all(|i| first.checked_add(i).is_some_and(|e| l.table.useraddr(e, self.early.is_none()).is_some()))
    }

    fn table_exchange(&mut self, id: HostTableId, index: u64, new: HostTce, ua: u64) -> HostTce {
        let Some(l) = self.link(id) else {
            return HostTce::EMPTY;
        };
        let geometry = l.geometry;
        let page_size = 1u64 << geometry.page_shift;
        let dir = perm_to_dir(new.perm());
        let mut used = None;
        if dir != DMA_NONE {
            // Lookup and count in one RCU section: an unregistered region is freed only after it ends, and
            // once counted it cannot be unregistered.
            let rcu = self.rcu();
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
                    // iommu_tce_xchg_no_kill marked the old page dirty.
                    self.release_old(l, index, geometry.page_shift, false);
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

    /// One `iommu_tce_set_multi_no_kill` per [`RUN_CHUNK`] entries (patches/linux/0008: one parent
    /// H_PUT_TCE_INDIRECT, or H_STUFF_TCE for a chunk that only clears, on a pseries host; the per-entry
    /// exchange loop elsewhere). Each new mapping's region use is the one the core took at validation, or is
    /// taken here before its chunk is written when the core has none; the old entries' uses (from
    /// `it_userspace`) are dropped after. If a chunk fails, the whole range is cleared and every use its
    /// entries held is dropped, with the uses the core handed over for entries never written. Not in the hot
    /// section: a validated batch runs through [`Host::table_run_planned`].
    fn table_run(
        &mut self,
        id: HostTableId,
        first: u64,
        count: u64,
        entry: &dyn Fn(&Self, u64) -> HostEntry,
    ) -> Result<(), RunFailed> {
        self.run(id, first, count, entry)
    }

    /// [`Host::table_run`] of a validated batch's plan: [`KernelHost::run`] with the entries read straight from
    /// the slice (the early H_PUT_TCE's run, in the hot section, with no call through a closure in other text).
    #[link_section = ".text.pvtce_hot"]
    fn table_run_planned(&mut self, id: HostTableId, first: u64, entries: &[HostEntry]) -> Result<(), RunFailed> {
        let entry = |_: &Self, k: u64| {
            usize::try_from(k).ok().and_then(|k| entries.get(k)).copied().unwrap_or(HostEntry::EMPTY)
        };
        self.run(id, first, entries.len() as u64, &entry)
    }

    fn table_kill(&mut self, id: HostTableId, first: u64, count: u64) {
        if let Some(l) = self.link(id) {
            // Counted as asked for (the statistic is the invalidations pvtce asks for, one per batch), made
            // only where the platform has an op for it (the geometry read at link).
            self.counts.kills += 1;
            if l.geometry.kills {
                l.table.kill(first, count);
            }
        }
    }

    fn read_tce_list(&mut self, ua: u64, buf: &mut [u64]) -> bool {
        read_words(ua, buf).is_ok()
    }
}

impl KernelHost<'_> {
    /// [`Host::table_run`]'s work, for any `entry`: the planned run's closure is inlined into it, `table_run`'s
    /// `dyn` one is called per entry.
    #[inline(always)]
    fn run<F: Fn(&Self, u64) -> HostEntry + ?Sized>(
        &mut self,
        id: HostTableId,
        first: u64,
        count: u64,
        entry: &F,
    ) -> Result<(), RunFailed> {
        if self.buf.len() < RUN_BUF {
            run_each(self, id, first, count, &|h: &Self, k| entry(h, k));
            return Ok(());
        }
        let Some(l) = self.link(id) else {
            // Not linked here (the core runs only its links, which are these): nothing is written, so give back
            // what the core handed over.
            self.give_back(entry, 0..count);
            return Ok(());
        };
        let shift = l.geometry.page_shift;
        let mut tiny = [0u64; 3 * TINY_RUN];
        let mut small;
        // The window's buffer is moved out while `entry` borrows `self`; put back before returning.
        let mut taken = (count > SMALL_RUN as u64).then(|| core::mem::take(&mut self.buf));
        let buf: &mut [u64] = match taken.as_deref_mut() {
            Some(b) => b,
            None if count <= TINY_RUN as u64 => &mut tiny,
            None => {
                small = [0u64; 3 * SMALL_RUN];
                &mut small
            }
        };
        let chunk = buf.len() / 3;
        let (tces, rest) = buf.split_at_mut(chunk);
        let (uas, regions) = rest.split_at_mut(chunk);
        let mut ok = true;
        let mut done = 0u64;
        while ok && done < count {
            let n = (count - done).min(chunk as u64) as usize;
            let mut filled = 0;
            let mut maps = false;
            for k in 0..n {
                let e = entry(self, done + k as u64);
                if e.tce.perm() == Perm::None {
                    if e.region != Region::NONE {
                        // The core plans no hold for an empty entry; never keep one.
                        self.put_region(e.region);
                    }
                    (tces[k], uas[k], regions[k]) = (0, 0, 0);
                } else if self.holds_count(e.region) {
                    // Counted at validation, under the lock held since: the region and its page are the
                    // validated ones. The slot keeps the count until the chunk is written or refused.
                    (tces[k], uas[k], regions[k], maps) = (e.tce.0, e.ua, e.region.0, true);
                } else if self.take_use(e.ua, e.tce, shift) {
                    (tces[k], uas[k], regions[k], maps) = (e.tce.0, e.ua, 0, true);
                } else {
                    ok = false;
                    break;
                }
                filled = k + 1;
            }
            // A tiny run's `it_userspace` slots, found before its parent hypercall (finding one is a call into the
            // table's ops; a slot's address does not change while the table lives): after the hypercall each
            // first touch costs again under TCG (docs/bench/analysis.md), and the slots are read and written
            // after the write as before. `None` where the level is missing, as `useraddr` without `alloc` says.
            let mut near: [Option<UserAddrSlot<'_>>; TINY_RUN] = [const { None }; TINY_RUN];
            let found = match near.get_mut(..n) {
                Some(tiny) if ok => {
                    for (k, slot) in tiny.iter_mut().enumerate() {
                        *slot = l.table.useraddr(first + done + k as u64, false);
                    }
                    &tiny[..]
                }
                _ => &[][..],
            };
            let written = if !ok {
                Err(0)
            } else if !maps {
                l.table.clear_multi(first + done, n as u64)
            } else if inject_failure(count) {
                // Half of the chunk reaches the table, then the "parent" refuses.
                let _ = l.table.set_multi(first + done, &tces[..n / 2]);
                Err(c_long::from(EIO.to_errno()))
            } else {
                l.table.set_multi(first + done, &tces[..n])
            };
            self.counts.runs += 1;
            if written.is_err() {
                for k in (0..filled).filter(|&k| tces[k] != 0) {
                    match regions[k] {
                        0 => self.drop_use(uas[k], shift),
                        token => self.put_region(Region(token)),
                    }
                }
                // The entries never written: give back the holds the core handed over for them.
                self.give_back(entry, done + filled as u64..count);
                ok = false;
                break;
            }
            if maps {
                for k in 0..n {
                    let index = first + done + k as u64;
                    // A tiny run's slot was found above; the others are found now.
                    let slot = found.get(k).copied().unwrap_or_else(|| l.table.useraddr(index, false));
                    self.release_slot(None, slot, shift, true);
                    if tces[k] != 0 {
                        // The entry holds the use validation or `take_use` took (released by `release_old` or
                        // VFIO's clear).
                        if let Some(used) = self.hold(Region(regions[k])) {
                            used.keep();
                        }
                        // A level missing before the write is allocated now (`table_ready` made it, except in a
                        // race with nothing: the level stays once made).
                        if let Some(slot) = slot.or_else(|| l.table.useraddr(index, true)) {
                            slot.set(uas[k]);
                        }
                    }
                }
            } else {
                self.release_range(l, first + done, n as u64, shift, found);
            }
            self.counts.updates += n as u64;
            done += n as u64;
        }
        if let Some(b) = taken {
            self.buf = b;
        }
        if ok {
            return Ok(());
        }
        // The range's entries are undefined: empty it and drop what its entries held.
        let _ = l.table.clear_multi(first, count);
        self.release_range(l, first, count, shift, &[]);
        self.counts.run_failures += 1;
        Err(RunFailed)
    }
}

/// Copies `buf.len()` words from the current task's (the VMM's) memory at `ua`, once, as loaded.
pub(crate) fn read_words(ua: u64, buf: &mut [u64]) -> kernel::error::Result {
    use kernel::transmute::AsBytes;
    let len = core::mem::size_of_val(buf);
    UserSlice::new(UserPtr::from_addr(ua as usize), len).reader().read_slice(buf.as_bytes_mut())
}
