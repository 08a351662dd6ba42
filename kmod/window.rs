// SPDX-License-Identifier: GPL-2.0

//! Guest DMA windows: the objects behind the table fds pvtce creates, their registry, and the entry points
//! KVM's sPAPR TCE backend hooks call (through kmod/glue.c).
//!
//! # Lock order
//! `kvm->lock` (held by KVM around `create_table`) → [`WINDOWS`] → [`KWindow::state`]. The hypercall path
//! does not take `WINDOWS`: it finds the window in [`LOOKUP`] under RCU, and holds no reference on it, which
//! is safe because it runs under `kvm->srcu` and [`unregister`] waits for that before the window can go.
//! Table pages are allocated with no lock held; under `state` only the bookkeeping of an already-allocated reserve and
//! the mmap fault's shadow page (a mutex: sleeping is allowed). The last reference on the VM (`kvm_put_kvm`) is never dropped under a lock.

use crate::control::{check_head, read_checked};
use crate::ffi::{self, IommuGroup, Kvm, KvmRef, TableRef};
use crate::host::{HostLink, KernelHost};
use crate::pvtce_core::error::HcallError;
use crate::pvtce_core::host::{pick_group_table, HostGeometry, HostTableId, MAX_LINKS};
use crate::pvtce_core::table::NeedAlloc;
use crate::pvtce_core::types::{Ioba, Liobn, PageShift, Tce, WindowGeometry};
use crate::pvtce_core::window::{Outcome, Request, Window};
use crate::store::KernelStore;
use crate::uapi::pvtce_window_info;
use core::ffi::{c_long, c_ulong, c_void};
use kernel::prelude::*;
use kernel::sync::atomic::{Acquire, Atomic, Full};
use kernel::sync::{Arc, ArcBorrow, Mutex};
use kernel::types::ForeignOwnable;

pub(crate) const H_GET_TCE: c_ulong = 0x1C;
pub(crate) const H_PUT_TCE: c_ulong = 0x20;
pub(crate) const H_STUFF_TCE: c_ulong = 0x138;
pub(crate) const H_PUT_TCE_INDIRECT: c_ulong = 0x13C;
const H_SUCCESS: i64 = 0;

/// Most windows pvtce holds at once, over all VMs (each is at most a few KiB until used; PAPR gives a PE at
/// most two, and a VM a handful of PEs).
pub(crate) const MAX_WINDOWS: usize = 1024;
/// Most `NeedAlloc` rounds one hypercall may take (each adds what the core asked for, so one is enough
/// unless another vCPU took the pages in between).
const MAX_ALLOC_ROUNDS: usize = 4;

kernel::sync::global_lock! {
    // SAFETY: initialised in the module's init before any hook can run (the backend is registered after).
    pub(crate) unsafe(uninit) static WINDOWS: Mutex<KVec<Arc<KWindow>>> = KVec::new();
}

/// One registered window as the hypercall path sees it.
struct LookupEntry {
    kvm: *mut Kvm,
    liobn: u64,
    window: *const KWindow,
}

/// What the hypercall path reads without a lock: every window of [`WINDOWS`], as a snapshot replaced whole
/// (under `WINDOWS`) whenever the list changes, and freed after an RCU grace period. Null means "unknown":
/// the hypercall path then takes `WINDOWS` (only after an allocation failure, or before the first window).
static LOOKUP: Atomic<*mut KVec<LookupEntry>> = Atomic::new(core::ptr::null_mut());

/// Replaces [`LOOKUP`] with a snapshot of `list` (the caller holds [`WINDOWS`]), or with null if that cannot be
/// allocated; returns the old snapshot, to be freed with [`retire`] once the lock is dropped.
fn publish(list: &KVec<Arc<KWindow>>) -> *mut KVec<LookupEntry> {
    let snap = (|| -> Result<KBox<KVec<LookupEntry>>> {
        let mut v = KVec::with_capacity(list.len(), GFP_KERNEL)?;
        for w in list.iter() {
            let window: &KWindow = w;
            v.push(LookupEntry { kvm: w.kvm.as_ptr(), liobn: w.liobn, window }, GFP_KERNEL)?;
        }
        Ok(KBox::new(v, GFP_KERNEL)?)
    })();
    let new = snap.map_or(core::ptr::null_mut(), KBox::into_raw);
    LOOKUP.xchg(new, Full)
}

/// Frees a snapshot [`publish`] replaced, after every RCU reader that may still see it is done.
fn retire(old: *mut KVec<LookupEntry>) {
    if old.is_null() {
        return;
    }
    kernel::sync::rcu::synchronize_rcu();
    // SAFETY: `old` came from `KBox::into_raw` in `publish` and is no longer in `LOOKUP`; the grace period
    // above waited for every reader that loaded it.
    drop(unsafe { KBox::from_raw(old) });
}

/// Empties [`LOOKUP`] (module exit: no window is left and no hook can run).
pub(crate) fn clear_lookup() {
    retire(LOOKUP.xchg(core::ptr::null_mut(), Full));
}

/// Counters of one window (`PVTCE_WINDOW_INFO`), under the window lock.
#[derive(Default, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) put: u64,
    pub(crate) indirect: u64,
    pub(crate) stuff: u64,
    pub(crate) get: u64,
    pub(crate) declined: u64,
    pub(crate) rejected: u64,
    pub(crate) tces_changed: u64,
    pub(crate) host_updates: u64,
    pub(crate) host_kills: u64,
}

pub(crate) struct State {
    window: Window,
    store: KernelStore,
    links: KVec<HostLink>,
    next_link_id: u32,
    pub(crate) stats: Stats,
    /// Pages of the table fd's mmap (see [`Shadow`]).
    shadows: KVec<Shadow>,
}

/// Entries in one PAGE_SIZE page of the table fd's mapping (Linux's layout: a flat native-endian array,
/// `kvmppc_tce_put`'s `tbl[idx % TCES_PER_PAGE] = tce`).
const TCES_PER_PAGE: u64 = (kernel::page::PAGE_SIZE / 8) as u64;

/// One page of the table fd's mmap, in Linux's flat layout: made when the VMM's mapping first touches it and
/// written through by every hypercall that changes its range, so the mapping is live like Linux's. The
/// guest-visible table itself stays sparse; only ranges the VMM maps cost a page.
struct Shadow {
    pgoff: u64,
    page: kernel::page::Page,
}

impl Shadow {
    fn set(&self, slot: u64, tce: u64) {
        let v = tce.to_ne_bytes();
        // SAFETY: `v` is 8 readable bytes and `slot < TCES_PER_PAGE` keeps the write inside the page. The only
        // kernel-side access to shadow pages is under the window lock, which the caller holds. The VMM may read
        // the page through its mapping at any time, as it may Linux's own table pages: it sees the old or the
        // new aligned 8-byte entry; no Rust reference into the page exists.
        let _ = unsafe { self.page.write_raw(v.as_ptr(), (slot * 8) as usize, 8) };
    }
}

impl Shadow {
    fn get(&self, slot: u64) -> u64 {
        let mut v = [0u8; 8];
        // SAFETY: `v` is 8 writable bytes and `slot < TCES_PER_PAGE` keeps the read inside the page; the
        // VMM may write the entry through its mapping concurrently, and then this reads the old or the new
        // aligned entry, as Linux's reads of its own mapped table do.
        let _ = unsafe { self.page.read_raw(v.as_mut_ptr(), (slot * 8) as usize, 8) };
        u64::from_ne_bytes(v)
    }
}

impl State {
    /// The shadow entry for window-relative entry `idx`, if the VMM mapped that range: what the VMM wrote
    /// there since wins, as with Linux whose mapped pages are the table itself.
    fn shadow_get(&self, idx: u64) -> Option<u64> {
        let pgoff = idx / TCES_PER_PAGE;
        self.shadows.iter().find(|sh| sh.pgoff == pgoff).map(|sh| sh.get(idx % TCES_PER_PAGE))
    }

    /// Rewrites the shadow entries of window-relative entries `first..first + count` from the guest table.
    fn refresh_shadows(&self, first: u64, count: u64) {
        let end = first.saturating_add(count);
        for sh in self.shadows.iter() {
            let lo = sh.pgoff * TCES_PER_PAGE;
            let hi = lo + TCES_PER_PAGE;
            for idx in first.max(lo)..end.min(hi) {
                sh.set(idx - lo, self.window.table().get(&self.store, idx).unwrap_or(0));
            }
        }
    }
}

/// One guest DMA window.
#[pin_data(PinnedDrop)]
pub(crate) struct KWindow {
    pub(crate) kvm: KvmRef,
    pub(crate) liobn: u64,
    pub(crate) geometry: WindowGeometry,
    /// Pages charged to the VMM's locked memory (as Linux charges: the flat table's size).
    locked_pages: usize,
    #[pin]
    pub(crate) state: Mutex<State>,
}

/// Linux `kvmppc_stt_pages(kvmppc_tce_pages(size))`: what the built-in code charges for a window.
fn locked_pages_for(size: u64) -> usize {
    let page = kernel::page::PAGE_SIZE as u64;
    let tce_pages = size.saturating_mul(8).div_ceil(page);
    // One more page for the descriptor, as the built-in code's struct with its page array rounds up to.
    usize::try_from(tce_pages.saturating_add(tce_pages.saturating_mul(8).div_ceil(page))).unwrap_or(usize::MAX)
}

fn find(kvm: *mut Kvm, liobn: u64) -> Option<Arc<KWindow>> {
    let list = WINDOWS.lock();
    list.iter().find(|w| w.kvm.as_ptr() == kvm && w.liobn == liobn).cloned()
}

fn errno(e: Error) -> c_long {
    e.to_errno() as c_long
}

/// `create_table` hook: called with `kvm->lock` held, after Linux's argument checks and its own LIOBN check.
#[no_mangle]
pub(crate) extern "C" fn pvtce_rs_create_table(kvm: *mut Kvm, liobn: u64, page_shift: u32, offset: u64, size: u64) -> c_long {
    if let Some(e) = crate::control::create_declined() {
        return errno(e);
    }
    match create(kvm, liobn, page_shift, offset, size) {
        Ok(fd) => fd as c_long,
        Err(e) => errno(e),
    }
}

fn create(kvm: *mut Kvm, liobn: u64, page_shift: u32, offset: u64, size: u64) -> Result<i32> {
    let shift = PageShift::new(page_shift).ok_or(EINVAL)?;
    let geometry = WindowGeometry::new(shift, offset, size).map_err(|_| EINVAL)?;
    if find(kvm, liobn).is_some() {
        return Err(EBUSY);
    }
    // SAFETY: KVM calls the hook with a live `kvm` (it holds kvm->lock).
    let kvm_ref = unsafe { KvmRef::get(kvm) };
    let locked_pages = locked_pages_for(size);
    kvm_ref.account_locked(locked_pages, true)?;
    let state = State {
        window: Window::new(Liobn(liobn), geometry),
        store: KernelStore::new(),
        links: KVec::new(),
        next_link_id: 0,
        stats: Stats::default(),
        shadows: KVec::new(),
    };
    // From here on, dropping the window uncharges (see `Drop`).
    let w = match Arc::pin_init(
        try_pin_init!(KWindow { kvm: kvm_ref, liobn, geometry, locked_pages, state <- kernel::new_mutex!(state) }),
        GFP_KERNEL,
    ) {
        Ok(w) => w,
        Err(e) => {
            // The window never existed, so its drop will not uncharge: do it here.
            // SAFETY: KVM calls the hook with a live `kvm`.
            let k = unsafe { KvmRef::get(kvm) };
            let _ = k.account_locked(locked_pages, false);
            return Err(e);
        }
    };
    let old = {
        let mut list = WINDOWS.lock();
        if list.len() >= MAX_WINDOWS {
            return Err(ENOSPC);
        }
        list.push(w.clone(), GFP_KERNEL)?;
        publish(&list)
    };
    retire(old);
    let ptr = w.clone().into_foreign();
    // SAFETY: `ptr` owns one reference on the window, given back in `pvtce_rs_window_release`.
    match unsafe { ffi::window_fd(ptr) } {
        Ok(fd) => Ok(fd),
        Err(e) => {
            // SAFETY: `ptr` came from `into_foreign` just above and the file was not created.
            drop(unsafe { Arc::<KWindow>::from_foreign(ptr) });
            unregister(&w);
            Err(e)
        }
    }
}

/// Takes `w` out of the registry and waits until no hypercall can still be using it: after this, only the
/// caller's reference keeps it.
fn unregister(w: &Arc<KWindow>) {
    let old = {
        let mut list = WINDOWS.lock();
        if let Some(i) = list.iter().position(|x| Arc::ptr_eq(x, w)) {
            let _ = list.remove(i);
        }
        publish(&list)
    };
    retire(old);
    // A hypercall that found `w` in an older snapshot runs under kvm->srcu until it is done with it.
    w.kvm.synchronize_hcalls();
}

#[pinned_drop]
impl PinnedDrop for KWindow {
    fn drop(self: Pin<&mut Self>) {
        let _ = self.kvm.account_locked(self.locked_pages, false);
        // `kvm` (the VM reference) drops after this, with no lock held (see the lock order).
    }
}

/// The table fd was closed: unlink every hardware table, free the table, drop the registry's reference.
#[no_mangle]
pub(crate) extern "C" fn pvtce_rs_window_release(window: *mut c_void) {
    // SAFETY: `window` came from `into_foreign` in `create`, and the file's release runs once.
    let w = unsafe { Arc::<KWindow>::from_foreign(window) };
    unregister(&w);
    let links = {
        let mut s = w.state.lock();
        let s = &mut *s;
        s.window.release(&mut s.store);
        core::mem::take(&mut s.links)
    };
    // Table references (iommu_tce_table_put) and the window itself go with no lock held.
    drop(links);
    drop(w);
}

/// Whether pvtce has a window with this LIOBN in this VM (`has_liobn` hook, kvm->lock held).
#[no_mangle]
pub(crate) extern "C" fn pvtce_rs_has_liobn(kvm: *mut Kvm, liobn: u64) -> bool {
    find(kvm, liobn).is_some()
}

/// Links the window to a group's hardware table (`attach_group` hook).
#[no_mangle]
pub(crate) extern "C" fn pvtce_rs_attach(kvm: *mut Kvm, window: *mut c_void, grp: *mut IommuGroup) -> c_long {
    // SAFETY: the hook holds the window's file for the duration of the call, and with it a reference.
    let w: ArcBorrow<'_, KWindow> = unsafe { <Arc<KWindow> as ForeignOwnable>::borrow(window) };
    // As Linux: a table fd of another VM is not found among this VM's windows.
    if w.kvm.as_ptr() != kvm {
        return errno(EINVAL);
    }
    match attach(&w, grp) {
        Ok(()) => 0,
        Err(e) => errno(e),
    }
}

fn attach(w: &KWindow, grp: *mut IommuGroup) -> Result {
    // Take both candidate tables (with references) before the window lock.
    let mut cands: KVec<TableRef> = KVec::new();
    for i in 0..2 {
        // SAFETY: KVM's VFIO device holds the group while it calls the hook.
        if let Some(t) = unsafe { TableRef::of_group(grp, i) } {
            cands.push(t, GFP_KERNEL)?;
        }
    }
    let mut s = w.state.lock();
    let s = &mut *s;
    // Already linked to one of these tables: one more reference (Linux keeps a kref).
    for c in cands.iter() {
        if let Some(l) = s.links.iter().find(|l| l.table.as_ptr() == c.as_ptr()) {
            let id = l.id;
            let host = KernelHost { kvm: w.kvm.as_ptr(), mm: w.kvm.mm(), links: &s.links, counts: Default::default() };
            s.window.link(&host, id).map_err(|_| EINVAL)?;
            return Ok(());
        }
    }
    let mut geoms: KVec<(HostTableId, HostGeometry)> = KVec::new();
    for (n, c) in cands.iter().enumerate() {
        let g = c.geometry();
        if let Some(page_shift) = PageShift::new(g.page_shift) {
            geoms.push((HostTableId(n as u32), HostGeometry { page_shift, offset: g.offset, size: g.size }), GFP_KERNEL)?;
        }
    }
    let pick = pick_group_table(s.window.geometry(), &geoms).map_err(|_| EINVAL)?;
    if s.links.len() >= MAX_LINKS {
        return Err(ENOSPC);
    }
    let table = cands.into_iter().nth(pick.0 as usize).ok_or(EINVAL)?;
    let id = HostTableId(s.next_link_id);
    s.next_link_id = s.next_link_id.wrapping_add(1);
    s.links.push(HostLink { id, table, group: grp as usize }, GFP_KERNEL)?;
    let host = KernelHost { kvm: w.kvm.as_ptr(), mm: w.kvm.mm(), links: &s.links, counts: Default::default() };
    if let Err(_e) = s.window.link(&host, id) {
        s.links.pop();
        return Err(EINVAL);
    }
    Ok(())
}

/// The group left the KVM VFIO device: drop every link of this VM's windows to its tables.
#[no_mangle]
pub(crate) extern "C" fn pvtce_rs_release_group(kvm: *mut Kvm, grp: *mut IommuGroup) {
    let windows: KVec<Arc<KWindow>> = {
        let list = WINDOWS.lock();
        let mut v = KVec::new();
        for w in list.iter().filter(|w| w.kvm.as_ptr() == kvm) {
            if v.push(w.clone(), GFP_KERNEL).is_err() {
                break;
            }
        }
        v
    };
    for w in windows.iter() {
        let mut gone = KVec::new();
        {
            let mut s = w.state.lock();
            let s = &mut *s;
            let ids: KVec<HostTableId> = {
                let mut ids = KVec::new();
                for l in s.links.iter().filter(|l| l.group == grp as usize) {
                    let _ = ids.push(l.id, GFP_KERNEL);
                }
                ids
            };
            for id in ids.iter() {
                // Linux drops every reference the group held on the link at once.
                while s.window.unlink(*id) {
                    if !s.window.links().any(|l| l.id == *id) {
                        break;
                    }
                }
                if let Some(i) = s.links.iter().position(|l| l.id == *id) {
                    if let Ok(l) = s.links.remove(i) {
                        let _ = gone.push(l, GFP_KERNEL);
                    }
                }
            }
        }
        drop(gone);
    }
    drop(windows);
}

/// A TCE hypercall for `kvm` (the hooks hold `kvm->srcu`): false if the LIOBN is not a pvtce window.
#[no_mangle]
pub(crate) extern "C" fn pvtce_rs_hcall(
    kvm: *mut Kvm,
    nr: c_ulong,
    liobn: c_ulong,
    a1: c_ulong,
    a2: c_ulong,
    a3: c_ulong,
    ret: *mut c_long,
    r4: *mut c_ulong,
) -> bool {
    let Some((code, value)) = with_window(kvm, liobn, |w| hcall(w, nr, a1, a2, a3)) else {
        return false;
    };
    // SAFETY: glue.c passes pointers to its locals.
    unsafe {
        *ret = code as c_long;
        *r4 = value as c_ulong;
    }
    true
}

/// Runs `f` on this VM's window `liobn`, if pvtce has one. The caller holds `kvm->srcu` (the hooks do).
fn with_window<R>(kvm: *mut Kvm, liobn: u64, f: impl FnOnce(&KWindow) -> R) -> Option<R> {
    let found = {
        let _rcu = kernel::sync::rcu::read_lock();
        let snap = LOOKUP.load(Acquire);
        if snap.is_null() {
            None
        } else {
            // SAFETY: a non-null `LOOKUP` points at a snapshot from `publish`, which `retire` frees only after
            // an RCU grace period; this read section keeps it alive.
            let snap = unsafe { &*snap };
            Some(snap.iter().find(|e| e.kvm == kvm && e.liobn == liobn).map(|e| e.window))
        }
    };
    match found {
        // SAFETY: `w` was in `WINDOWS` when the snapshot was made, and the registry's reference is dropped
        // only after `unregister` took it out of `LOOKUP` and waited for kvm->srcu, which the caller has held
        // since before the load above: the window outlives this call.
        Some(Some(w)) => Some(f(unsafe { &*w })),
        Some(None) => None,
        // No snapshot: the locked list.
        None => find(kvm, liobn).map(|w| f(&w)),
    }
}

/// Counts a hypercall that ended before the core ran (an H_PUT_TCE_INDIRECT precheck or list copy).
fn early(w: &KWindow, e: HcallError) -> (i64, u64) {
    let mut s = w.state.lock();
    s.stats.indirect += 1;
    match e {
        HcallError::TooHard => s.stats.declined += 1,
        _ => s.stats.rejected += 1,
    }
    (e.as_i64(), 0)
}

fn hcall(w: &KWindow, nr: c_ulong, a1: u64, a2: u64, a3: u64) -> (i64, u64) {
    let ioba = Ioba(a1);
    // H_PUT_TCE_INDIRECT: the request checks under the lock, then the list is translated and copied once,
    // with no lock held (guest memory is read exactly once; a NeedAlloc retry reuses the copy).
    let mut list: KVec<u64> = KVec::new();
    if nr == H_PUT_TCE_INDIRECT {
        let pre = w.state.lock().window.indirect_precheck(ioba, a2, a3);
        if let Err(e) = pre {
            return early(w, e);
        }
        // SAFETY: the hook holds kvm->srcu and the VM is alive while its vCPU runs the hypercall.
        let Some(ua) = (unsafe { ffi::gpa_to_ua(w.kvm.as_ptr(), a2) }) else {
            return early(w, HcallError::TooHard);
        };
        let n = a3 as usize; // <= 512: indirect_precheck
        if list.resize(n, 0, GFP_KERNEL).is_err() || !ffi::copy_words_from_user(ua, &mut list) {
            return early(w, HcallError::TooHard);
        }
    }
    for _ in 0..MAX_ALLOC_ROUNDS {
        let need = {
            let mut guard = w.state.lock();
            let s = &mut *guard;
            if nr == H_GET_TCE {
                s.stats.get += 1;
                return match s.window.get_tce(&s.store, ioba) {
                    Ok(v) => {
                        // The ioba passed the window check.
                        let idx = (a1 >> w.geometry.page_shift().get()) - w.geometry.offset();
                        (H_SUCCESS, s.shadow_get(idx).unwrap_or(v))
                    }
                    Err(e) => {
                        s.stats.rejected += 1;
                        (e.as_i64(), 0)
                    }
                };
            }
            let request = match nr {
                H_PUT_TCE => Request::Put { ioba, tce: Tce(a2) },
                H_STUFF_TCE => Request::Stuff { ioba, value: Tce(a2), npages: a3 },
                H_PUT_TCE_INDIRECT => Request::Indirect { ioba, list: &list },
                _ => return (HcallError::Parameter.as_i64(), 0),
            };
            let mut host = KernelHost { kvm: w.kvm.as_ptr(), mm: w.kvm.mm(), links: &s.links, counts: Default::default() };
            let outcome = s.window.execute_all_or_nothing(&mut s.store, &mut host, &request, 0);
            s.stats.host_updates += host.counts.updates;
            s.stats.host_kills += host.counts.kills;
            match outcome {
                Outcome::Done(c) => {
                    match nr {
                        H_PUT_TCE => s.stats.put += 1,
                        H_STUFF_TCE => s.stats.stuff += 1,
                        _ => s.stats.indirect += 1,
                    }
                    s.stats.tces_changed += c.applied;
                    if c.applied > 0 && !s.shadows.is_empty() {
                        // `applied > 0` means the ioba passed the window check.
                        let first = (a1 >> w.geometry.page_shift().get()) - w.geometry.offset();
                        s.refresh_shadows(first, c.applied);
                    }
                    return match c.result {
                        Ok(_) => (H_SUCCESS, 0),
                        Err(HcallError::TooHard) => {
                            s.stats.declined += 1;
                            (HcallError::TooHard.as_i64(), 0)
                        }
                        Err(e) => {
                            s.stats.rejected += 1;
                            (e.as_i64(), 0)
                        }
                    };
                }
                Outcome::NeedAlloc(NeedAlloc { pages }) => pages,
            }
        };
        // Allocate with no lock held, then hand the pages over and retry.
        let Ok(blocks) = KernelStore::alloc(need) else {
            break;
        };
        let mut s = w.state.lock();
        if s.store.add(blocks).is_err() {
            break;
        }
    }
    let mut s = w.state.lock();
    s.stats.declined += 1;
    (HcallError::TooHard.as_i64(), 0)
}

/// `PVTCE_WINDOW_INFO` on a window's table fd.
#[no_mangle]
pub(crate) extern "C" fn pvtce_rs_window_ioctl(window: *mut c_void, cmd: u32, arg: c_ulong) -> c_long {
    // SAFETY: the file holds a reference on the window for the duration of the ioctl.
    let w: ArcBorrow<'_, KWindow> = unsafe { <Arc<KWindow> as ForeignOwnable>::borrow(window) };
    match cmd {
        crate::uapi::PVTCE_WINDOW_INFO => match window_info(&w, arg) {
            Ok(()) => 0,
            Err(e) => errno(e),
        },
        crate::uapi::PVTCE_WINDOW_EXCHANGE => match bare_exchange(&w, arg) {
            Ok(()) => 0,
            Err(e) => errno(e),
        },
        _ => errno(ENOTTY),
    }
}

fn window_info(w: &KWindow, arg: c_ulong) -> Result {
    let (req, mut writer) = read_checked::<pvtce_window_info>(arg as usize)?;
    check_head(req.argsz, req.flags, core::mem::size_of::<pvtce_window_info>())?;
    let out = info_of(w);
    writer.write(&out)
}

/// `PVTCE_WINDOW_EXCHANGE`: the host-table update of a hypercall without the hypercall, timed (the
/// benchmark's floor). It runs the same `table_exchange`/`table_kill` the hypercall path's apply step runs, on
/// translations made before the clock starts; see the header for the rules.
fn bare_exchange(w: &KWindow, arg: c_ulong) -> Result {
    use crate::pvtce_core::host::{ua_to_hpa, Host, HostTce};
    use crate::pvtce_core::types::Perm;
    let (mut req, mut writer) = read_checked::<crate::uapi::pvtce_exchange>(arg as usize)?;
    check_head(req.argsz, req.flags, core::mem::size_of::<crate::uapi::pvtce_exchange>())?;
    if req.count == 0 || req.count > u64::from(crate::uapi::PVTCE_EXCHANGE_MAX) {
        return Err(EINVAL);
    }
    let end = req.first.checked_add(req.count).ok_or(EINVAL)?;
    if end > w.geometry.size() {
        return Err(EINVAL);
    }
    let shift = w.geometry.page_shift();
    if req.ua & shift.offset_mask() != 0 {
        return Err(EINVAL);
    }
    // The pages must be the caller's own, and the caller the VM's VMM.
    if !ffi::current_mm_is(w.kvm.mm()) {
        return Err(EPERM);
    }
    let mut guard = w.state.lock();
    let s = &mut *guard;
    let link = s.links.first().ok_or(ENODEV)?;
    let id = link.id;
    // Equal page sizes only: one host entry per window entry, as in the benchmark's windows.
    if link.table.geometry().page_shift != shift.get() {
        return Err(EINVAL);
    }
    if (req.first..end).any(|i| s.window.table().get(&s.store, i).is_some_and(|t| t != 0)) {
        return Err(EBUSY);
    }
    let mut host = KernelHost { kvm: w.kvm.as_ptr(), mm: w.kvm.mm(), links: &s.links, counts: Default::default() };
    let base = w.geometry.offset() + req.first;
    let mut plan: KVec<(u64, HostTce, u64)> = KVec::with_capacity(req.count as usize, GFP_KERNEL)?;
    for i in 0..req.count {
        let ua = req.ua.checked_add(i << shift.get()).ok_or(EINVAL)?;
        let hpa = ua_to_hpa(&host, ua, shift).map_err(|_| EFAULT)?;
        plan.push((base + i, HostTce::new(hpa, Perm::ReadWrite), ua), GFP_KERNEL)?;
    }
    if !host.table_ready(id, base, req.count) {
        return Err(ENOMEM);
    }
    let t0 = ffi::timebase();
    for (idx, tce, ua) in plan.iter() {
        host.table_exchange(id, *idx, *tce, *ua);
    }
    host.table_kill(id, base, req.count);
    let t1 = ffi::timebase();
    for (idx, _, _) in plan.iter() {
        host.table_exchange(id, *idx, HostTce::EMPTY, 0);
    }
    host.table_kill(id, base, req.count);
    let t2 = ffi::timebase();
    drop(guard);
    req.map_ticks = t1.wrapping_sub(t0);
    req.unmap_ticks = t2.wrapping_sub(t1);
    writer.write(&req)
}

/// The window's geometry and counters; takes (and drops) the window lock.
fn info_of(w: &KWindow) -> pvtce_window_info {
    let s = w.state.lock();
    pvtce_window_info {
        argsz: core::mem::size_of::<pvtce_window_info>() as u32,
        flags: 0,
        liobn: w.liobn,
        page_shift: w.geometry.page_shift().get(),
        links: s.links.len() as u32,
        offset: w.geometry.offset(),
        size: w.geometry.size(),
        table_bytes: s.window.bytes_used() as u64,
        h_put_tce: s.stats.put,
        h_put_tce_indirect: s.stats.indirect,
        h_stuff_tce: s.stats.stuff,
        h_get_tce: s.stats.get,
        declined: s.stats.declined,
        rejected: s.stats.rejected,
        tces_changed: s.stats.tces_changed,
        host_updates: s.stats.host_updates,
        host_kills: s.stats.host_kills,
    }
}

/// Up to `capacity` windows' info, and how many windows exist (`PVTCE_LIST_WINDOWS`).
pub(crate) fn all_info(capacity: usize) -> Result<(KVec<pvtce_window_info>, usize)> {
    // Take references under the registry lock, read each window under its own lock only.
    let (windows, total) = {
        let list = WINDOWS.lock();
        let mut v: KVec<Arc<KWindow>> = KVec::with_capacity(capacity.min(list.len()), GFP_KERNEL)?;
        for w in list.iter().take(capacity) {
            v.push(w.clone(), GFP_KERNEL)?;
        }
        (v, list.len())
    };
    let mut out = KVec::with_capacity(windows.len(), GFP_KERNEL)?;
    for w in windows.iter() {
        out.push(info_of(w), GFP_KERNEL)?;
    }
    Ok((out, total))
}

/// The page at `pgoff` of the table fd's mapping (a [`Shadow`], made on first use), or NULL (SIGBUS) past the
/// window's end or when no page can be had. glue.c takes the reference the fault hands over.
#[no_mangle]
pub(crate) extern "C" fn pvtce_rs_window_page(window: *mut c_void, pgoff: c_ulong) -> *mut ffi::Page {
    // SAFETY: the mapping holds the window's file, and with it a reference on the window.
    let w: ArcBorrow<'_, KWindow> = unsafe { <Arc<KWindow> as ForeignOwnable>::borrow(window) };
    let pgoff = pgoff as u64;
    let Some(first) = pgoff.checked_mul(TCES_PER_PAGE).filter(|f| *f < w.geometry.size()) else {
        return core::ptr::null_mut();
    };
    let mut guard = w.state.lock();
    let s = &mut *guard;
    if let Some(sh) = s.shadows.iter().find(|sh| sh.pgoff == pgoff) {
        return sh.page.as_ptr().cast();
    }
    // A page fault may sleep: allocating under the window mutex is allowed (never under a spinlock).
    let Ok(page) = kernel::page::Page::alloc_page(GFP_KERNEL | __GFP_ZERO) else {
        return core::ptr::null_mut();
    };
    let sh = Shadow { pgoff, page };
    let n = TCES_PER_PAGE.min(w.geometry.size() - first);
    for i in 0..n {
        if let Some(t) = s.window.table().get(&s.store, first + i).filter(|t| *t != 0) {
            sh.set(i, t);
        }
    }
    let ptr = sh.page.as_ptr().cast();
    if s.shadows.push(sh, GFP_KERNEL).is_err() {
        return core::ptr::null_mut();
    }
    ptr
}

/// Used by the module's exit: windows still registered (should be none: their files hold the module).
pub(crate) fn count() -> usize {
    WINDOWS.lock().len()
}
