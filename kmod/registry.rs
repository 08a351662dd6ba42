// SPDX-License-Identifier: GPL-2.0

//! Every pvtce window of every VM: the registry ([`WINDOWS`]), the lock-free snapshot the hypercall path
//! reads ([`LOOKUP`]), and the hooks that make a window and end it (`create_table`, `has_liobn`, and the
//! table fd's release).
//!
//! # Lock order
//! `kvm->lock` (held by KVM around `create_table`) → [`WINDOWS`] → `KernelWindow::state`. The hypercall path
//! does not take `WINDOWS`: it finds the window in [`LOOKUP`] (a hash table, O(1)) under RCU, and holds no
//! reference on it, which is sound because it runs under the VM's `kvm->srcu` ([`VmSrcu`]), or (the lockless
//! H_GET_TCE) inside an RCU read section (or the early path's interrupts-off region, also an RCU reader), and
//! [`unregister`] waits for both before the window can go; a clearing call ([`window_ref`]) takes a reference
//! inside the RCU section instead.

use crate::ffi::{self, RcuReader, Vm, VmSrcu};
use crate::once::read_once;
use crate::pvtce_core::types::{PageShift, WindowGeometry};
use crate::trace;
use crate::window::{create_declined, KernelWindow};
use core::ffi::{c_long, c_void};
use kernel::prelude::*;
use kernel::sync::atomic::{Atomic, Full};
use kernel::sync::{rcu, Arc, ArcBorrow};
use kernel::types::ForeignOwnable;

/// Most windows pvtce holds at once, over all VMs (each is at most a few KiB until used; PAPR gives a PE at
/// most two, and a VM a handful of PEs).
pub(crate) const MAX_WINDOWS: usize = 1024;

kernel::sync::global_lock! {
    // SAFETY: initialised by `init` in the module's init, before the backend is registered (no hook can run).
    unsafe(uninit) static WINDOWS: Mutex<KVec<Arc<KernelWindow>>> = KVec::new();
}

/// One registered window as the hypercall path sees it; a null `window` is an empty slot. `vm` is an identity
/// only (compared, never dereferenced).
#[derive(Clone, Copy)]
struct LookupEntry {
    vm: usize,
    liobn: u64,
    window: *const KernelWindow,
}

impl LookupEntry {
    const EMPTY: LookupEntry = LookupEntry { vm: 0, liobn: 0, window: core::ptr::null() };
}

/// The snapshot: an open-addressing hash table keyed by (VM, LIOBN), with linear probing, at most half full,
/// so a lookup is O(1) whatever the number of VMs and windows. Hand-written: the kernel crate has no hash
/// map, and an xarray would need one per VM (a field in `struct kvm`) for the same constant cost.
///
/// One allocation, which [`LOOKUP`] points at: entry 0 is a header (`liobn`: the number of probe slots, `vm`:
/// the allocation's capacity), the probe slots follow it. A reader loads the pointer and then touches one
/// block, not a box and then its vector (under TCG each block a hypercall first touches costs a TLB fill,
/// docs/bench/analysis.md).
///
/// # Invariants
/// The probe slots are a power of two in number, with at least one empty; no two entries have the same key.
struct Lookup;

/// The slot a key's probe starts at, for a table of `len` (a power of two) slots.
fn home(vm: usize, liobn: u64, len: usize) -> usize {
    let h = ((vm as u64) ^ liobn.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) as usize & (len - 1)
}

impl Lookup {
    /// A snapshot of every window of `list`, as the raw parts [`Lookup::free`] takes back.
    fn build(list: &KVec<Arc<KernelWindow>>) -> Result<*mut LookupEntry> {
        // At most half full (and at least 8 slots, so never full).
        let len = list.len().saturating_mul(2).max(8).checked_next_power_of_two().ok_or(ENOMEM)?;
        let mut all = KVec::from_elem(LookupEntry::EMPTY, len + 1, GFP_KERNEL)?;
        let cap = all.capacity();
        let (head, slots) = all.split_at_mut(1);
        // INVARIANT: `len` probe slots, a power of two, filled at most half below.
        for h in head {
            *h = LookupEntry { vm: cap, liobn: len as u64, window: core::ptr::null() };
        }
        for w in list.iter() {
            let e =
                LookupEntry { vm: core::ptr::from_ref::<Vm>(&w.vm) as usize, liobn: w.liobn, window: Arc::as_ptr(w) };
            let mut i = home(e.vm, e.liobn, len);
            // The registry's keys are unique (`create` refuses a duplicate LIOBN per VM) and there is room.
            while let Some(slot) = slots.get_mut(i) {
                if slot.window.is_null() {
                    *slot = e;
                    break;
                }
                i = (i + 1) & (len - 1);
            }
        }
        Ok(all.into_raw_parts().0)
    }

    /// The window of `(vm, liobn)` in the snapshot at `snap`, if registered.
    ///
    /// # Safety
    /// `snap` is a live snapshot from [`Lookup::build`].
    unsafe fn find(snap: *const LookupEntry, vm: usize, liobn: u64) -> Option<*const KernelWindow> {
        // SAFETY: a snapshot's header is followed by its `liobn` probe slots, all initialised (`build`); it
        // lives for the call (the caller's guarantee).
        let slots = unsafe { core::slice::from_raw_parts(snap.add(1), (*snap).liobn as usize) };
        let len = slots.len();
        let mut i = home(vm, liobn, len);
        // An empty slot ends the probe (the table is never full); the bound is for form.
        for _ in 0..len {
            let e = slots.get(i)?;
            if e.window.is_null() {
                return None;
            }
            if e.vm == vm && e.liobn == liobn {
                return Some(e.window);
            }
            i = (i + 1) & (len - 1);
        }
        None
    }

    /// Frees a snapshot.
    ///
    /// # Safety
    /// `snap` came from [`Lookup::build`], and nothing uses it any more.
    unsafe fn free(snap: *mut LookupEntry) {
        // SAFETY: the header holds the probe slots' number and the allocation's capacity (`build`); the
        // caller's guarantee makes this the only owner.
        unsafe {
            let (len, cap) = ((*snap).liobn as usize + 1, (*snap).vm);
            drop(KVec::from_raw_parts(snap, len, cap));
        }
    }
}

/// What the hypercall path reads without a lock: every window of [`WINDOWS`], as a snapshot ([`Lookup`])
/// replaced whole (under `WINDOWS`) whenever the list changes, and freed after an RCU grace period. Null means
/// "unknown": the hypercall path then takes `WINDOWS` (only after an allocation failure, or before the first
/// window).
static LOOKUP: Atomic<*mut LookupEntry> = Atomic::new(core::ptr::null_mut());

/// Initialises the registry.
///
/// # Safety
/// Called once, from the module's init, before the backend is registered.
pub(crate) unsafe fn init() {
    // SAFETY: by the caller's guarantee nothing uses `WINDOWS` yet.
    unsafe { WINDOWS.init() };
}

/// Replaces [`LOOKUP`] with a snapshot of `list` (the caller holds [`WINDOWS`]), or with null if that cannot
/// be allocated; returns the old snapshot, to be freed with [`retire`] once the lock is dropped.
fn publish(list: &KVec<Arc<KernelWindow>>) -> *mut LookupEntry {
    let new = Lookup::build(list).unwrap_or(core::ptr::null_mut());
    LOOKUP.xchg(new, Full)
}

/// Frees a snapshot [`publish`] replaced, after every RCU reader that may still see it is done.
fn retire(old: *mut LookupEntry) {
    if old.is_null() {
        return;
    }
    rcu::synchronize_rcu();
    // SAFETY: `old` came from `Lookup::build` in `publish` and is no longer in `LOOKUP`; the grace period
    // above waited for every reader that loaded it.
    unsafe { Lookup::free(old) };
}

/// Empties [`LOOKUP`] (module exit: no window is left and no hook can run).
pub(crate) fn clear_lookup() {
    retire(LOOKUP.xchg(core::ptr::null_mut(), Full));
}

fn find(vm: &Vm, liobn: u64) -> Option<Arc<KernelWindow>> {
    WINDOWS.lock().iter().find(|w| core::ptr::eq(&*w.vm, vm) && w.liobn == liobn).cloned()
}

/// The VM's window `liobn` in [`LOOKUP`], read inside the caller's RCU read section `_rcu`: `None` when there
/// is no snapshot, `Some(None)` when the VM has no pvtce window `liobn`. The pointer is valid only as long as
/// the caller can show the window is not yet released (each caller says why).
fn lookup(_rcu: &impl RcuReader, vm: *const Vm, liobn: u64) -> Option<Option<*const KernelWindow>> {
    // `rcu_dereference`: the snapshot's reads depend on this load, and `publish` stored it with full order
    // after building it.
    let snap = read_once(&LOOKUP);
    if snap.is_null() {
        return None;
    }
    // SAFETY: a non-null `LOOKUP` points at a snapshot from `publish`, which `retire` frees only after an RCU
    // grace period; the caller's read section keeps it alive for this call.
    Some(unsafe { Lookup::find(snap, vm as usize, liobn) })
}

/// Runs `f` on the VM's window `liobn`, if pvtce has one; the caller's `kvm->srcu` section keeps it alive.
pub(crate) fn with_window<R>(srcu: &VmSrcu<'_>, liobn: u64, f: impl FnOnce(&KernelWindow) -> R) -> Option<R> {
    let found = lookup(&rcu::read_lock(), srcu.vm(), liobn);
    match found {
        // SAFETY: `w` was in `WINDOWS` when the snapshot was made, and the registry's reference is dropped
        // only after `unregister` took it out of `LOOKUP` and waited for the VM's kvm->srcu, which `srcu`
        // proves held since before the load above: the window outlives this call.
        Some(Some(w)) => Some(f(unsafe { &*w })),
        Some(None) => None,
        // No snapshot: the locked list.
        None => find(srcu.vm(), liobn).map(|w| f(&w)),
    }
}

/// Runs `f` on the VM's window `liobn` inside the caller's RCU read section `rcu` (an [`rcu::Guard`], or the
/// early path's [`crate::ffi::IrqsOff`]), with no `kvm->srcu` and no reference: `f` must not sleep. `None`
/// when there is no snapshot (the caller takes the srcu path, [`with_window`]); `Some(None)` when the VM has
/// no pvtce window `liobn`.
pub(crate) fn with_window_in<R>(
    rcu: &impl RcuReader,
    vm: &Vm,
    liobn: u64,
    f: impl FnOnce(&KernelWindow) -> R,
) -> Option<Option<R>> {
    let w = lookup(rcu, vm, liobn)?;
    // SAFETY: `w` was registered when the snapshot was made; `unregister` takes it out of `LOOKUP` and waits
    // for an RCU grace period before the caller may release its table or drop its reference, and this read
    // section (held until `f` returns) began before that wait ended: the window and its table blocks outlive
    // `f`.
    Some(w.map(|w| f(unsafe { &*w })))
}

/// The VM's window `liobn` with a reference of its own, found under RCU alone (no `kvm->srcu`): for the calls
/// that translate no guest address but sleep (a clearing H_PUT_TCE or H_STUFF_TCE takes the window mutex).
/// `None` when there is no snapshot (the caller takes the srcu path, [`with_window`]); `Some(None)` when the VM
/// has no pvtce window `liobn`. The window may be released while the caller holds it: its table is then
/// empty and unlinked, and a clear changes nothing.
pub(crate) fn window_ref(vm: &Vm, liobn: u64) -> Option<Option<Arc<KernelWindow>>> {
    let rcu = rcu::read_lock();
    let w = lookup(&rcu, vm, liobn)?;
    // SAFETY: `w` is `Arc::as_ptr` of the registry's reference (`Lookup::build`). Whoever unregisters the
    // window holds a reference of its own across `unregister`, which waits for an RCU grace period after
    // taking it out of `LOOKUP`; this read section began before that wait ended, so the count is not zero
    // while the borrow lives, and no `UniqueArc` of it exists.
    Some(w.map(|w| unsafe { ArcBorrow::from_raw(w) }.into()))
}

/// References on every window of `vm`.
pub(crate) fn windows_of(vm: &Vm) -> KVec<Arc<KernelWindow>> {
    let list = WINDOWS.lock();
    let mut v = KVec::new();
    for w in list.iter().filter(|w| core::ptr::eq(&*w.vm, vm)) {
        if v.push(w.clone(), GFP_KERNEL).is_err() {
            break;
        }
    }
    v
}

/// References on up to `capacity` windows, and how many windows exist.
pub(crate) fn all(capacity: usize) -> Result<(KVec<Arc<KernelWindow>>, usize)> {
    let list = WINDOWS.lock();
    let mut v = KVec::with_capacity(capacity.min(list.len()), GFP_KERNEL)?;
    for w in list.iter().take(capacity) {
        v.push(w.clone(), GFP_KERNEL)?;
    }
    Ok((v, list.len()))
}

/// Windows still registered (the module's exit message: should be none, their files hold the module).
pub(crate) fn count() -> usize {
    WINDOWS.lock().len()
}

fn register(w: &Arc<KernelWindow>) -> Result {
    let old = {
        let mut list = WINDOWS.lock();
        if list.len() >= MAX_WINDOWS {
            return Err(ENOSPC);
        }
        list.push(w.clone(), GFP_KERNEL)?;
        publish(&list)
    };
    retire(old);
    Ok(())
}

/// Takes `w` out of the registry and waits until no hypercall can still be using it: after this, only the
/// caller's reference keeps it.
fn unregister(w: &Arc<KernelWindow>) {
    let old = {
        let mut list = WINDOWS.lock();
        if let Some(i) = list.iter().position(|x| Arc::ptr_eq(x, w)) {
            let _ = list.remove(i);
        }
        publish(&list)
    };
    retire(old);
    // A lockless H_GET_TCE that found `w` in an older snapshot runs in an RCU read section until it is done
    // with it (`retire` waits only when there was a snapshot to free).
    rcu::synchronize_rcu();
    // Every other hypercall that found `w` in an older snapshot runs under kvm->srcu until it is done with it,
    // except a clearing one (`window_ref`), which took a reference of its own inside that RCU section.
    w.vm.synchronize_srcu();
}

fn errno(e: Error) -> c_long {
    c_long::from(e.to_errno())
}

/// `create_table` hook: a new window, `-ENOIOCTLCMD` to leave it to Linux's built-in code, or `-EOPNOTSUPP`
/// in `PVTCE_MODE_USERSPACE` (no window: the VMM keeps its own table).
///
/// # Safety
/// `kvm` must be a live `struct kvm` for the call; KVM calls it with `kvm->lock` held, after Linux's argument
/// checks and its own LIOBN check.
#[no_mangle]
pub(crate) unsafe extern "C" fn pvtce_rs_create_table(
    kvm: *mut Vm,
    liobn: u64,
    page_shift: u32,
    offset: u64,
    size: u64,
) -> c_long {
    if let Some(e) = create_declined() {
        return errno(e);
    }
    // SAFETY: `kvm` is live for the call (the caller's guarantee).
    let vm = unsafe { Vm::from_raw(kvm) };
    match create(vm, liobn, page_shift, offset, size) {
        Ok(fd) => c_long::from(fd),
        Err(e) => errno(e),
    }
}

fn create(vm: &Vm, liobn: u64, page_shift: u32, offset: u64, size: u64) -> Result<i32> {
    let shift = PageShift::new(page_shift).ok_or(EINVAL)?;
    let geometry = WindowGeometry::new(shift, offset, size).map_err(|_| EINVAL)?;
    if find(vm, liobn).is_some() {
        return Err(EBUSY);
    }
    let w = KernelWindow::new(vm, liobn, geometry)?;
    register(&w)?;
    let ptr = w.clone().into_foreign();
    // SAFETY: `ptr` owns one reference on the window, given back in `pvtce_rs_window_release`.
    match unsafe { ffi::window_fd(ptr) } {
        Ok(fd) => {
            w.trace(trace::window_create, 0);
            Ok(fd)
        }
        Err(e) => {
            // SAFETY: `ptr` came from `into_foreign` just above and the file was not created.
            drop(unsafe { Arc::<KernelWindow>::from_foreign(ptr) });
            unregister(&w);
            Err(e)
        }
    }
}

/// `has_liobn` hook: whether pvtce has a window with this LIOBN in this VM.
///
/// # Safety
/// `kvm` must be a live `struct kvm` for the call (KVM holds `kvm->lock`).
#[no_mangle]
pub(crate) unsafe extern "C" fn pvtce_rs_has_liobn(kvm: *mut Vm, liobn: u64) -> bool {
    // SAFETY: `kvm` is live for the call (the caller's guarantee).
    find(unsafe { Vm::from_raw(kvm) }, liobn).is_some()
}

/// The table fd was closed: take the window out of the registry, unlink every hardware table, free the
/// table, drop the file's reference.
///
/// # Safety
/// `window` must be the pointer `create` gave the file (`into_foreign`), and this is called once, from the
/// file's release.
#[no_mangle]
pub(crate) unsafe extern "C" fn pvtce_rs_window_release(window: *mut c_void) {
    // SAFETY: guaranteed by the caller: we take back the file's reference.
    let w = unsafe { Arc::<KernelWindow>::from_foreign(window) };
    unregister(&w);
    let links = {
        let mut s = w.state.lock();
        let s = &mut *s;
        s.window.release(&mut s.store);
        core::mem::take(&mut s.links)
    };
    w.trace(trace::window_release, links.len());
    // Table references (iommu_tce_table_put) and the window itself go with no lock held.
    drop(links);
    drop(w);
}
