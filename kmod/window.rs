// SPDX-License-Identifier: GPL-2.0

//! [`KernelWindow`]: one guest DMA window (a LIOBN) of one VM, the object behind a pvtce table fd. It owns
//! pvtce-core's [`Window`] (the semantics), its table pages ([`KernelStore`]), its links to hardware tables,
//! its counters and its mmap shadows, under [`KernelWindow::state`] except for what the lockless H_GET_TCE
//! reads: the table's blocks ([`KernelWindow::slots`]), the counters ([`Stats`], atomics) and
//! [`KernelWindow::has_shadows`].
//!
//! Naming inside kmod/: pvtce-core's type is `Window`; the module's counterparts of core types are
//! `Kernel*` ([`KernelWindow`], [`KernelStore`], [`crate::host::KernelHost`]).
//!
//! # Lock order
//! `kvm->lock` (held by KVM around `create_table`) → the registry (kmod/registry.rs) →
//! [`KernelWindow::list_buf`] (the guest's list is copied under it, which may fault: `mmap_lock` nests inside
//! it, never the other way) → [`KernelWindow::state`]. Table pages are allocated with no lock held; under
//! `state` only the bookkeeping of an already-allocated reserve and the mmap fault's shadow page (a sleeping
//! taker may sleep holding it: kmod/lock.rs). The last reference on the VM (`kvm_put_kvm`) is never dropped under a lock.

use crate::ffi::Vm;
use crate::host::Links;
use crate::lock::StateLock;
use crate::pvtce_core::host::Planned;
use crate::pvtce_core::table::GuestTable;
use crate::pvtce_core::types::{Ioba, Liobn, WindowGeometry};
use crate::pvtce_core::window::{Window, PLAN_SLOTS};
use crate::shadow::Shadows;
use crate::stats::{Changes, EarlyGets, Kind, Stats};
use crate::store::{KernelStore, SlotsRef};
use crate::uapi::{pvtce_window_info, PVTCE_MODE_PVTCE, PVTCE_MODE_USERSPACE};
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use kernel::sync::atomic::{Atomic, Relaxed};
use kernel::sync::{Arc, Mutex};

/// Which implementation creates new windows (`PVTCE_SET_MODE`, a `PVTCE_MODE_*`); existing windows keep
/// theirs.
pub(crate) static MODE: Atomic<u32> = Atomic::new(PVTCE_MODE_PVTCE);

/// What [`KernelWindow::state`] protects.
pub(crate) struct State {
    pub(crate) window: Window,
    pub(crate) store: KernelStore,
    pub(crate) links: Links,
    pub(crate) next_link_id: u32,
    pub(crate) shadows: Shadows,
    /// The batched host-table update's list, user addresses and region holds ([`crate::host::RUN_BUF`]
    /// words), allocated with the window.
    pub(crate) run_buf: KVec<u64>,
    /// The plan pvtce-core carries from validation to apply ([`PLAN_SLOTS`] host entries), allocated with the
    /// window.
    pub(crate) plan_buf: KVec<Planned>,
    /// The region counts validation took for the plan ([`crate::host::KernelHost::with_holds`]), by slot: the
    /// core carries a slot's number (its `Region` token), never the count itself, so a token it hands back can
    /// only name a slot of this window, and a slot is given up once. Empty between calls.
    pub(crate) holds: KVec<Option<crate::iommu::MappedUse>>,
    /// The window's counters of what its calls changed (the others are [`KernelWindow::stats`]).
    pub(crate) changes: Changes,
}

/// One guest DMA window.
#[pin_data(PinnedDrop)]
pub(crate) struct KernelWindow {
    pub(crate) vm: ARef<Vm>,
    pub(crate) liobn: u64,
    pub(crate) geometry: WindowGeometry,
    /// The table's shape (no page of its own: the state's table owns them), for the lockless H_GET_TCE's walk.
    pub(crate) shape: GuestTable,
    /// The table's blocks by page id, read by the lockless H_GET_TCE (kmod/store.rs).
    pub(crate) slots: SlotsRef,
    pub(crate) stats: Stats,
    /// The H_GET_TCE calls KVM-HV's early path answered, per CPU (counted in `h_get_tce` and `early`).
    pub(crate) early_gets: EarlyGets,
    /// Set (under `state`) before the table fd's mmap makes its first shadow page: from then on H_GET_TCE
    /// takes the lock, to answer what the VMM wrote there (kmod/shadow.rs).
    pub(crate) has_shadows: Atomic<bool>,
    /// Pages charged to the VMM's locked memory (as Linux charges: the flat table's size).
    locked_pages: usize,
    /// H_PUT_TCE_INDIRECT's copy of the guest's list (up to 512 words, allocated by the first INDIRECT and kept),
    /// filled with no other lock held and kept across that call's core run.
    #[pin]
    pub(crate) list_buf: Mutex<KVec<u64>>,
    #[pin]
    pub(crate) state: StateLock<State>,
}

/// Linux `kvmppc_stt_pages(kvmppc_tce_pages(size))`: what the built-in code charges for a window.
fn locked_pages_for(size: u64) -> usize {
    let page = kernel::page::PAGE_SIZE as u64;
    let tce_pages = size.saturating_mul(8).div_ceil(page);
    // One more page for the descriptor, as the built-in code's struct with its page array rounds up to.
    usize::try_from(tce_pages.saturating_add(tce_pages.saturating_mul(8).div_ceil(page))).unwrap_or(usize::MAX)
}

impl KernelWindow {
    /// Fires window life-cycle trace `event` (kmod/trace.rs) with this window's geometry and `links`.
    pub(crate) fn trace(&self, event: fn(u64, u32, u64, u64, u32), links: usize) {
        let g = &self.geometry;
        event(self.liobn, g.page_shift().get(), g.offset(), g.size(), u32::try_from(links).unwrap_or(u32::MAX));
    }

    /// A new, unregistered window of `vm`, its table charged to the VMM's locked memory.
    pub(crate) fn new(vm: &Vm, liobn: u64, geometry: WindowGeometry) -> Result<Arc<KernelWindow>> {
        let mut run_buf = KVec::new();
        run_buf.resize(crate::host::RUN_BUF, 0, GFP_KERNEL)?;
        let plan_buf = KVec::from_elem(Planned::default(), PLAN_SLOTS, GFP_KERNEL)?;
        let mut holds = KVec::with_capacity(PLAN_SLOTS, GFP_KERNEL)?;
        for _ in 0..PLAN_SLOTS {
            holds.push(None, GFP_KERNEL)?;
        }
        let locked_pages = locked_pages_for(geometry.size());
        vm.account_locked(locked_pages, true)?;
        let (store, slots) = KernelStore::new(geometry.size())?;
        let early_gets = EarlyGets::new()?;
        let state = State {
            window: Window::new(Liobn(liobn), geometry),
            store,
            links: Links::default(),
            next_link_id: 0,
            shadows: Shadows::default(),
            run_buf,
            plan_buf,
            holds,
            changes: Changes::default(),
        };
        // From here on, dropping the window uncharges (see `Drop`).
        Arc::pin_init(
            try_pin_init!(KernelWindow {
                vm: vm.get(),
                liobn,
                geometry,
                shape: GuestTable::new(geometry.size()),
                slots,
                stats: Stats::new(),
                early_gets,
                has_shadows: Atomic::new(false),
                locked_pages,
                list_buf <- kernel::new_mutex!(KVec::new()),
                state <- StateLock::new(state, kernel::new_mutex!(())),
            }),
            GFP_KERNEL,
        )
        .inspect_err(|_| {
            // The window never existed, so its drop will not uncharge: do it here.
            let _ = vm.account_locked(locked_pages, false);
        })
    }

    /// Window-relative entry of `ioba` (which has passed the core's window check).
    pub(crate) fn entry_of(&self, ioba: Ioba) -> u64 {
        (ioba.0 >> self.geometry.page_shift().get()) - self.geometry.offset()
    }

    /// The window's geometry and counters; takes (and drops) the window lock.
    pub(crate) fn info(&self) -> pvtce_window_info {
        let s = self.state.lock();
        let c = &s.changes;
        let early_gets = self.early_gets.sum();
        pvtce_window_info {
            argsz: core::mem::size_of::<pvtce_window_info>() as u32,
            flags: 0,
            liobn: self.liobn,
            page_shift: self.geometry.page_shift().get(),
            links: s.links.len() as u32,
            offset: self.geometry.offset(),
            size: self.geometry.size(),
            table_bytes: s.window.bytes_used() as u64,
            h_put_tce: self.stats.put.load(Relaxed).saturating_add(c.calls[Kind::Put as usize]),
            h_put_tce_indirect: self.stats.indirect.load(Relaxed).saturating_add(c.calls[Kind::Indirect as usize]),
            h_stuff_tce: self.stats.stuff.load(Relaxed).saturating_add(c.calls[Kind::Stuff as usize]),
            h_get_tce: self
                .stats
                .get
                .load(Relaxed)
                .saturating_add(c.calls[Kind::Get as usize])
                .saturating_add(early_gets),
            declined: self.stats.declined.load(Relaxed).saturating_add(c.declined),
            rejected: self.stats.rejected.load(Relaxed).saturating_add(c.rejected),
            tces_changed: c.tces_changed,
            host_updates: c.host_updates,
            host_kills: c.host_kills,
            early: self.stats.early.load(Relaxed).saturating_add(c.early).saturating_add(early_gets),
        }
    }
}

impl State {
    /// Rewrites the shadow entries of window-relative entries `first..first + count` from the guest table.
    pub(crate) fn refresh_shadows(&self, first: u64, count: u64) {
        if !self.shadows.is_empty() {
            self.shadows.refresh(first, count, |idx| self.window.table().get(&self.store, idx).unwrap_or(0));
        }
    }
}

#[pinned_drop]
impl PinnedDrop for KernelWindow {
    fn drop(self: Pin<&mut Self>) {
        let _ = self.vm.account_locked(self.locked_pages, false);
        // `vm` (the VM reference) drops after this, with no lock held (see the lock order).
    }
}

/// What the `create_table` hook answers instead of creating a pvtce window: `None` in pvtce's mode;
/// `ENOIOCTLCMD` hands the request to Linux's built-in code; `EOPNOTSUPP` fails `KVM_CREATE_SPAPR_TCE_64`
/// (no window on either side), which makes QEMU keep the table in its own memory (`kvmppc_create_spapr_tce`
/// returns no table on any error and `spapr_tce_alloc_table` then allocates one).
pub(crate) fn create_declined() -> Option<Error> {
    match MODE.load(Relaxed) {
        PVTCE_MODE_PVTCE => None,
        PVTCE_MODE_USERSPACE => Some(EOPNOTSUPP),
        _ => Some(ENOIOCTLCMD),
    }
}

/// For the glue's `attach_group` hook: in `PVTCE_MODE_USERSPACE` linking "no table" (fd -1) succeeds.
/// No caller obligations: it only reads an atomic.
#[no_mangle]
pub(crate) extern "C" fn pvtce_rs_userspace_mode() -> bool {
    MODE.load(Relaxed) == PVTCE_MODE_USERSPACE
}
