// SPDX-License-Identifier: GPL-2.0

//! The four TCE hypercalls, one entry point per KVM hook (kmod/glue.c calls each from its own hook; nothing
//! is routed twice). Each enters the VM's `kvm->srcu` ([`VmSrcu`]: memslots, and the window found without a
//! reference), finds the window, and has pvtce-core decide; this module executes. H_GET_TCE first tries
//! without either: under RCU alone, with no lock ([`get_lockless`]); a call that only writes zeros (H_STUFF_TCE
//! of 0, H_PUT_TCE of 0) translates nothing and takes a reference on the window instead ([`run_clearing`]).
//!
//! The hypercalls run in the vCPU thread: `current`'s mm is the VMM's, which the TCE list is copied from.

use crate::ffi::{IrqsOff, RcuReader, Vm, VmSrcu};
use crate::host::{read_words, KernelHost};
use crate::iommu::MappedUse;
use crate::once::read_once;
use crate::pvtce_core::error::HcallError;
use crate::pvtce_core::host::Planned;
use crate::pvtce_core::table::NeedAlloc;
use crate::pvtce_core::table::PageId;
use crate::pvtce_core::types::{Ioba, Tce};
use crate::pvtce_core::window::{indirect_precheck, Completion, Outcome, Request, MAX_INDIRECT_TCES};
use crate::registry::{window_ref, with_window, with_window_in};
use crate::stats::{Kind, Stats, ThisCpu};
use crate::store::KernelStore;
use crate::trace;
use crate::window::{KernelWindow, State};
use core::ffi::{c_long, c_uint, c_ulong};
use kernel::prelude::*;
use kernel::sync::atomic::Atomic;
use kernel::sync::rcu;

const H_SUCCESS: i64 = 0;

/// The `early` module parameter, copied by the module's init before the backend is registered (a parameter
/// is set once, at load): the kernel crate's `value()` is an acquire load through a C helper, which the early
/// path would pay on every call.
pub(crate) static EARLY: Atomic<bool> = Atomic::new(false);

/// Plan slots the early H_PUT_TCE keeps on the stack ([`execute_early`]).
const PUT_PLAN: usize = 2;

/// Most `NeedAlloc` rounds one hypercall may take (each adds what the core asked for, so one is enough
/// unless another vCPU took the pages in between).
const MAX_ALLOC_ROUNDS: usize = 4;

/// Runs `f` on the VM's window `liobn` inside a `kvm->srcu` read section, and stores its return code in
/// `*ret`; false (`*ret` untouched) when the LIOBN is not a pvtce window.
///
/// # Safety
/// `kvm` must be a live `struct kvm` and `ret` valid for a write, for the call.
unsafe fn run(
    kvm: *mut Vm,
    liobn: c_ulong,
    ret: *mut c_long,
    f: impl FnOnce(&KernelWindow, &VmSrcu<'_>) -> i64,
) -> bool {
    // SAFETY: `kvm` is live for the call (the caller's guarantee).
    let vm = unsafe { Vm::from_raw(kvm) };
    let srcu = vm.srcu_read_lock();
    let Some(code) = with_window(&srcu, liobn, |w| f(w, &srcu)) else {
        return false;
    };
    // SAFETY: `ret` is valid for a write (the caller's guarantee).
    unsafe { *ret = code as c_long };
    true
}

/// Executes H_PUT_TCE or H_STUFF_TCE `request`: through [`run_clearing`] when it writes only zeros, else (or
/// when there is no snapshot) through [`run`].
///
/// # Safety
/// As [`run`].
unsafe fn run_request(kvm: *mut Vm, liobn: c_ulong, ret: *mut c_long, kind: Kind, request: &Request<'_>) -> bool {
    let zeros = match request {
        Request::Put { tce, .. } => tce.0 == 0,
        Request::Stuff { value, .. } => value.0 == 0,
        Request::Indirect { .. } => false,
    };
    if zeros {
        // SAFETY: forwarded from the caller.
        if let Some(handled) = unsafe { run_clearing(kvm, liobn, ret, kind, request) } {
            return handled;
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { run(kvm, liobn, ret, |w, srcu| execute(w, Some(srcu), kind, request)) }
}

/// A call whose every entry is 0 (nothing to translate): the window is found and referenced under RCU alone,
/// with no `kvm->srcu` (Linux's H_STUFF_TCE takes none either). `None` when there is no snapshot: the caller
/// takes [`run`].
///
/// # Safety
/// As [`run`].
unsafe fn run_clearing(
    kvm: *mut Vm,
    liobn: c_ulong,
    ret: *mut c_long,
    kind: Kind,
    request: &Request<'_>,
) -> Option<bool> {
    // SAFETY: `kvm` is live for the call (the caller's guarantee).
    let vm = unsafe { Vm::from_raw(kvm) };
    let Some(w) = window_ref(vm, liobn)? else {
        return Some(false);
    };
    let code = execute(&w, None, kind, request);
    // SAFETY: `ret` is valid for a write (the caller's guarantee).
    unsafe { *ret = code as c_long };
    Some(true)
}

/// `h_put_tce` hook, and with `early` the `h_tce_early` hook's H_PUT_TCE (KVM-HV's early path, kernel patch
/// 0011): the call then runs as on the normal path but with the window lock taken by one compare-and-swap
/// ([`crate::lock::StateLock::try_lock_early`]) and a host that allocates nothing ([`KernelHost::early`]), the
/// window found under RCU (nothing sleeps). The early path
/// declines (false, nothing changed) when it is off (module parameter), there is no lookup snapshot, the LIOBN
/// is not pvtce's, the VMM mapped the table fd (its shadows may sleep), the lock is taken, the core needs
/// table pages, or it refused with H_TOO_HARD before changing anything (e.g. a host-table level to
/// allocate): the normal path then answers.
///
/// # Safety
/// `kvm` must be the live VM of the calling vCPU thread and `ret` valid for a write, for the call; with
/// `early`, the caller holds `kvm->srcu` and has interrupts hard-disabled, with RCU watching, for the call.
#[no_mangle]
#[link_section = ".text.pvtce_hot"]
pub(crate) unsafe extern "C" fn pvtce_rs_h_put_tce(
    kvm: *mut Vm,
    liobn: c_ulong,
    ioba: c_ulong,
    tce: c_ulong,
    ret: *mut c_long,
    early: bool,
) -> bool {
    let request = Request::Put { ioba: Ioba(ioba), tce: Tce(tce) };
    if !early {
        // SAFETY: forwarded from the caller.
        return unsafe { run_request(kvm, liobn, ret, Kind::Put, &request) };
    }
    if !read_once(&EARLY) {
        return false;
    }
    // SAFETY: `kvm` is live for the call (the caller's guarantee).
    let vm = unsafe { Vm::from_raw(kvm) };
    // SAFETY: with `early` the caller holds `kvm->srcu` for the call (patch 0011 holds it around the hook).
    let srcu = unsafe { vm.srcu_assume_held() };
    // SAFETY: with `early` interrupts are hard-disabled for the call, with RCU watching (the caller's
    // guarantee: patch 0011 calls the hook after `guest_state_exit_irqoff`).
    let irqs = unsafe { IrqsOff::assume() };
    // The snapshot only: with no snapshot (before the first window) the locked list would sleep.
    let Some(Some(Some(code))) = with_window_in(irqs, vm, liobn, |w| execute_early(w, &srcu, irqs, &request)) else {
        return false;
    };
    // SAFETY: `ret` is valid for a write (the caller's guarantee).
    unsafe { *ret = code as c_long };
    true
}

/// `h_stuff_tce` hook.
///
/// # Safety
/// As [`pvtce_rs_h_put_tce`].
#[no_mangle]
pub(crate) unsafe extern "C" fn pvtce_rs_h_stuff_tce(
    kvm: *mut Vm,
    liobn: c_ulong,
    ioba: c_ulong,
    value: c_ulong,
    npages: c_ulong,
    ret: *mut c_long,
) -> bool {
    let request = Request::Stuff { ioba: Ioba(ioba), value: Tce(value), npages };
    // SAFETY: forwarded from the caller.
    unsafe { run_request(kvm, liobn, ret, Kind::Stuff, &request) }
}

/// `h_put_tce_indirect` hook.
///
/// # Safety
/// As [`pvtce_rs_h_put_tce`]; the calling thread's mm must be the VM's (a vCPU thread's is).
#[no_mangle]
pub(crate) unsafe extern "C" fn pvtce_rs_h_put_tce_indirect(
    kvm: *mut Vm,
    liobn: c_ulong,
    ioba: c_ulong,
    list: c_ulong,
    npages: c_ulong,
    ret: *mut c_long,
) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { run(kvm, liobn, ret, |w, srcu| indirect(w, srcu, Ioba(ioba), list, npages)) }
}

/// `h_get_tce` hook: the entry goes to `*r4` on H_SUCCESS (glue.c sets the vCPU's r4 from it). With `early`
/// (the `h_tce_early` hook's H_GET_TCE, kernel patch 0011) the lockless step alone: false (nothing done) when
/// the early path is off, the LIOBN is not pvtce's, or the lockless read cannot answer; an answered call is
/// then counted in CPU `cpu`'s slot ([`crate::stats::EarlyGets`]).
///
/// # Safety
/// As [`pvtce_rs_h_put_tce`], and `r4` valid for a write; with `early`, `cpu` is the CPU the caller runs on.
#[no_mangle]
#[link_section = ".text.pvtce_hot"]
pub(crate) unsafe extern "C" fn pvtce_rs_h_get_tce(
    kvm: *mut Vm,
    liobn: c_ulong,
    ioba: c_ulong,
    ret: *mut c_long,
    r4: *mut c_ulong,
    early: bool,
    cpu: c_uint,
) -> bool {
    // SAFETY: `kvm` is live for the call (the caller's guarantee).
    let vm = unsafe { Vm::from_raw(kvm) };
    if early {
        if !read_once(&EARLY) {
            return false;
        }
        // SAFETY: with `early` interrupts are hard-disabled for the call, with RCU watching (the caller's
        // guarantee).
        let irqs = unsafe { IrqsOff::assume() };
        // SAFETY: with `early` the caller runs on CPU `cpu`, where interrupts stay off for the call (`irqs`).
        let at = unsafe { ThisCpu::new(cpu, irqs) };
        return match get_rcu(irqs, vm, liobn, Ioba(ioba), Some(&at)) {
            // SAFETY: `ret` and `r4` are valid for a write (the caller's guarantee).
            Some(Some(a)) => unsafe { answer_get_to(ret, r4, a) },
            _ => false,
        };
    }
    // First without `kvm->srcu` or the window lock (GET translates no guest address).
    match get_rcu(&rcu::read_lock(), vm, liobn, Ioba(ioba), None) {
        Some(None) => return false,
        // SAFETY: `ret` and `r4` are valid for a write (the caller's guarantee).
        Some(Some(a)) => return unsafe { answer_get_to(ret, r4, a) },
        None => {}
    }
    // No snapshot, or a mapped table fd: the locked path.
    let mut value = 0u64;
    // SAFETY: forwarded from the caller.
    let handled = unsafe { run(kvm, liobn, ret, |w, _| get(w, Ioba(ioba), &mut value)) };
    // SAFETY: `r4` is valid for a write (the caller's guarantee).
    unsafe { *r4 = value as c_ulong };
    handled
}

/// H_GET_TCE without the window lock (the caller holds an RCU read section, not `kvm->srcu`): the walk reads
/// the table's blocks through [`crate::store::SlotsRef`], whose root is the first page the table takes (id 0:
/// pvtce-core's `GuestTable::set` takes the root before any other page, and ids are reused only after the
/// window's release). `None` when the VMM mapped the table fd: the locked [`get`] answers then. Inlined with
/// [`answer_get`] into the early path's caller: under TCG each call into another page of the module's text
/// costs an exit's cold path a jump-cache miss and a TLB fill (docs/bench/analysis.md).
#[inline(always)]
fn get_lockless(w: &KernelWindow, ioba: Ioba, value: &mut u64, early: Option<&ThisCpu<'_>>) -> Option<i64> {
    // READ_ONCE: set under the lock before the first shadow page exists; a GET that misses a concurrent set
    // answers from the table, which is what the shadow holds until the VMM writes it.
    if read_once(&w.has_shadows) {
        return None;
    }
    let r = w
        .geometry
        .check_ioba(ioba, 1)
        .and_then(|page| w.shape.get_via(PageId(0), page - w.geometry.offset(), |p, i| w.slots.read(p, i)))
        .ok_or(HcallError::Parameter);
    match (early, &r) {
        // The common case, with no atomic (kmod/stats.rs).
        (Some(at), Ok(_)) => w.early_gets.count(at),
        _ => {
            w.stats.call(Kind::Get, r.map(|_| ()));
            if early.is_some() {
                Stats::add(&w.stats.early, 1);
            }
        }
    }
    Some(answer_get(w, ioba, r, value))
}

/// Traces an H_GET_TCE answer `r` (its caller counted it), and gives its entry to `*value`.
#[inline(always)]
fn answer_get(w: &KernelWindow, ioba: Ioba, r: Result<u64, HcallError>, value: &mut u64) -> i64 {
    let code = r.map_or_else(
        |e| e.as_i64(),
        |v| {
            *value = v;
            H_SUCCESS
        },
    );
    trace::hcall(Kind::Get.nr(), w.liobn, ioba.0, 1, code, 0, 0);
    code
}

fn get(w: &KernelWindow, ioba: Ioba, value: &mut u64) -> i64 {
    let mut s = w.state.lock();
    // A range the VMM mapped answers what the VMM wrote there (Linux's mapped table is the table).
    let r = s.window.get_tce(&s.store, ioba).map(|v| s.shadows.get(w.entry_of(ioba)).unwrap_or(v));
    // Under the lock: counted with the other locked calls.
    s.changes.call(Kind::Get, r.map(|_| ()));
    answer_get(w, ioba, r, value)
}

/// Counts a call that ended before the core ran (an H_PUT_TCE_INDIRECT precheck or list copy).
fn early(w: &KernelWindow, ioba: Ioba, npages: u64, e: HcallError) -> i64 {
    w.stats.call(Kind::Indirect, Err(e));
    trace::hcall(Kind::Indirect.nr(), w.liobn, ioba.0, npages, e.as_i64(), 0, 0);
    e.as_i64()
}

/// H_PUT_TCE_INDIRECT: the request checks on the window's fixed geometry (no lock), then the list is
/// translated and copied once into the window's list buffer, under its own lock and not the window's (guest
/// memory is read exactly once; a NeedAlloc retry reuses the copy).
fn indirect(w: &KernelWindow, srcu: &VmSrcu<'_>, ioba: Ioba, list_gpa: u64, npages: u64) -> i64 {
    if let Err(e) = indirect_precheck(&w.geometry, ioba, list_gpa, npages) {
        return early(w, ioba, npages, e);
    }
    let Some(ua) = srcu.gpa_to_ua(list_gpa) else {
        return early(w, ioba, npages, HcallError::TooHard);
    };
    let mut buf = w.list_buf.lock();
    let max = MAX_INDIRECT_TCES as usize;
    if buf.len() < max && buf.resize(max, 0, GFP_KERNEL).is_err() {
        return early(w, ioba, npages, HcallError::TooHard);
    }
    // `npages` <= 512: indirect_precheck.
    let Some(list) = buf.get_mut(..npages as usize) else {
        return early(w, ioba, npages, HcallError::Parameter);
    };
    if read_words(ua, list).is_err() {
        return early(w, ioba, npages, HcallError::TooHard);
    }
    execute(w, Some(srcu), Kind::Indirect, &Request::Indirect { ioba, list })
}

/// Has the core execute `request` all or nothing, allocating table pages with no lock held when it asks.
/// `srcu` is `None` only for a request whose every entry is 0 ([`run_clearing`]).
fn execute(w: &KernelWindow, srcu: Option<&VmSrcu<'_>>, kind: Kind, request: &Request<'_>) -> i64 {
    let (ioba, npages) = match request {
        Request::Put { ioba, .. } => (*ioba, 1),
        Request::Stuff { ioba, npages, .. } => (*ioba, *npages),
        Request::Indirect { ioba, list } => (*ioba, list.len() as u64),
    };
    let mut host_updates = 0;
    for _ in 0..MAX_ALLOC_ROUNDS {
        let need = {
            let mut guard = w.state.lock();
            let s = &mut *guard;
            let mut host = match srcu {
                Some(srcu) => KernelHost::with_buf(srcu, &s.links, &mut s.run_buf),
                None => KernelHost::clearing(&w.vm, &s.links, &mut s.run_buf),
            }
            .with_holds(&mut s.holds);
            let outcome = s.window.execute_planned(&mut s.store, &mut host, request, &mut s.plan_buf);
            let (updates, kills) = (host.counts.updates, host.counts.kills);
            host_updates += updates;
            // The host borrows the state (and gives back any hold left when dropped) until here.
            drop(host);
            s.changes.add(0, updates, kills);
            match outcome {
                Outcome::Done(c) => return finish(w, s, kind, ioba, npages, &c, host_updates),
                Outcome::NeedAlloc(NeedAlloc { pages }) => pages,
            }
        };
        // Allocate with no lock held, then hand the pages over and retry.
        let Ok(blocks) = KernelStore::alloc(need) else {
            break;
        };
        if w.state.lock().store.add(blocks).is_err() {
            break;
        }
    }
    w.stats.call(kind, Err(HcallError::TooHard));
    trace::hcall(kind.nr(), w.liobn, ioba.0, npages, HcallError::TooHard.as_i64(), 0, host_updates);
    HcallError::TooHard.as_i64()
}

/// Counts, traces and answers a call the core finished (`Outcome::Done`), under the window lock (`s`).
#[link_section = ".text.pvtce_hot"]
fn finish(
    w: &KernelWindow,
    s: &mut State,
    kind: Kind,
    ioba: Ioba,
    npages: u64,
    c: &Completion,
    host_updates: u64,
) -> i64 {
    let result = c.result.map(|_| ());
    s.changes.call(kind, result);
    s.changes.add(c.applied, 0, 0);
    if c.applied > 0 {
        // `applied > 0` means the ioba passed the window check.
        s.refresh_shadows(w.entry_of(ioba), c.applied);
    }
    let code = result.map_or_else(|e| e.as_i64(), |()| H_SUCCESS);
    trace::hcall(kind.nr(), w.liobn, ioba.0, npages, code, c.applied, host_updates);
    code
}

/// H_GET_TCE's lockless step (RCU, no lock, nothing that sleeps): `Some(Some((code, entry)))` when it answered
/// (counted as `early` on that CPU if so marked), `Some(None)` when the LIOBN is not a pvtce window, `None`
/// when it cannot answer (no snapshot, or a mapped table fd) and the locked path must.
fn get_rcu(
    rcu: &impl RcuReader,
    vm: &Vm,
    liobn: c_ulong,
    ioba: Ioba,
    early: Option<&ThisCpu<'_>>,
) -> Option<Option<(i64, u64)>> {
    let mut value = 0u64;
    let lockless = |w: &KernelWindow| get_lockless(w, ioba, &mut value, early);
    let code = match with_window_in(rcu, vm, liobn, lockless)? {
        None => return Some(None),
        Some(code) => code?,
    };
    Some(Some((code, value)))
}

/// Writes H_GET_TCE's answer; returns true (handled).
///
/// # Safety
/// `ret` and `r4` must be valid for a write.
unsafe fn answer_get_to(ret: *mut c_long, r4: *mut c_ulong, (code, value): (i64, u64)) -> bool {
    // SAFETY: the caller's guarantee.
    unsafe {
        *ret = code as c_long;
        *r4 = value as c_ulong;
    }
    true
}

/// [`execute`]'s one round for the early path: `None` to decline, with nothing changed.
#[link_section = ".text.pvtce_hot"]
fn execute_early(w: &KernelWindow, srcu: &VmSrcu<'_>, irqs: &IrqsOff, request: &Request<'_>) -> Option<i64> {
    let Request::Put { ioba, .. } = *request else {
        return None;
    };
    let mut guard = w.state.try_lock_early(irqs)?;
    // Under the lock, which the flag is set under: a load before it could miss a concurrent set.
    if read_once(&w.has_shadows) {
        return None;
    }
    let s = &mut *guard;
    // One H_PUT_TCE's plan and holds on the stack (one host entry per link unless its TCE is larger than the
    // host pages: a fan-out past PUT_PLAN then runs without a plan, with the same answer); the window's
    // PLAN_SLOTS buffers would be two more pages to touch on the exit's cold path.
    let mut plan = [Planned::default(); PUT_PLAN];
    let mut holds: [Option<MappedUse>; PUT_PLAN] = [const { None }; PUT_PLAN];
    let mut host = KernelHost::with_buf(srcu, &s.links, &mut s.run_buf).with_holds(&mut holds).early(irqs);
    let outcome = s.window.execute_planned(&mut s.store, &mut host, request, &mut plan);
    let (updates, kills) = (host.counts.updates, host.counts.kills);
    drop(host);
    let Outcome::Done(c) = outcome else {
        // NeedAlloc: nothing changed; the normal path allocates.
        return None;
    };
    if matches!(c.result, Err(HcallError::TooHard)) && c.applied == 0 && updates == 0 && kills == 0 {
        return None;
    }
    s.changes.add(0, updates, kills);
    s.changes.early = s.changes.early.saturating_add(1);
    Some(finish(w, s, Kind::Put, ioba, 1, &c, updates))
}
