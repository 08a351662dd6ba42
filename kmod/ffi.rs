// SPDX-License-Identifier: GPL-2.0

//! The KVM side of pvtce.ko's C edge: the VM (`struct kvm`, an [`ARef`]-counted [`Vm`]), its `kvm->srcu`
//! (the kernel crate's [`Srcu`]) and mm (the kernel crate's [`Mm`]), the backend registration and the window
//! file of kmod/glue.c. The powerpc IOMMU side is kmod/iommu.rs. Every `unsafe` call into C sits behind a
//! safe wrapper whose caller rules are in its signature; the rest of the module uses only these wrappers.

use core::ffi::{c_int, c_long, c_void};
use core::marker::{PhantomData, PhantomPinned};
use core::ptr::NonNull;
use kernel::mm::Mm;
use kernel::prelude::*;
use kernel::sync::aref::{ARef, AlwaysRefCounted};
use kernel::sync::{rcu, srcu, Srcu};

/// `struct kvm`, only ever handled by reference (bindgen does not see `kvm_host.h`).
///
/// # Invariants
/// A `&Vm` points at a live `struct kvm`: whoever lends it holds a reference (`users_count`) for the borrow.
#[repr(C)]
pub(crate) struct Vm {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `struct page`, handed to the mmap fault (kmod/glue.c takes its own reference).
pub(crate) type Page = kernel::bindings::page;

unsafe extern "C" {
    // kmod/glue.c: struct fields and inlines bindgen cannot reach (see its header).
    fn pvtce_glue_register() -> c_int;
    fn pvtce_glue_unregister();
    fn pvtce_glue_window_fd(window: *mut c_void) -> c_int;
    // `struct mm_struct *` and `struct srcu_struct *` as `void *`: the bindgen structs hold zero-sized
    // members that the improper_ctypes lint refuses in an extern block.
    fn pvtce_glue_kvm_mm(kvm: *mut Vm) -> *mut c_void;
    fn pvtce_glue_kvm_srcu(kvm: *mut Vm) -> *mut c_void;
    fn pvtce_glue_gpa_to_ua(kvm: *mut Vm, gpa: u64, ua: *mut u64) -> c_int;
    fn pvtce_glue_host_read(groupfd: c_int, table: u32, first: u64, count: u64, out: *mut u64) -> c_long;
    fn pvtce_glue_timebase() -> u64;
    fn pvtce_glue_parent_count(flags: u32, counts: *mut u64) -> c_long;
    fn pvtce_glue_l1_time(flags: u32, out: *mut u64) -> c_long;
    fn pvtce_glue_current_mm_is(mm: *mut c_void) -> bool;

    // virt/kvm/kvm_main.c (exported, but outside the kernel crate's bindings)
    fn kvm_get_kvm(kvm: *mut Vm);
    fn kvm_put_kvm(kvm: *mut Vm);
}

// SAFETY: `kvm_get_kvm` keeps the VM alive until the matching `kvm_put_kvm`; every `struct kvm` is counted
// (`users_count`, freed by the last put).
unsafe impl AlwaysRefCounted for Vm {
    fn inc_ref(&self) {
        // SAFETY: `self` is a live VM by the type invariant.
        unsafe { kvm_get_kvm(self.as_ptr()) }
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up one reference taken by `inc_ref`.
        unsafe { kvm_put_kvm(obj.as_ptr()) }
    }
}

// SAFETY: a `struct kvm` may be used and its references dropped from any thread.
unsafe impl Send for Vm {}
// SAFETY: every method takes `&self` and calls KVM functions that are safe to call concurrently.
unsafe impl Sync for Vm {}

impl Vm {
    /// Borrows the VM a KVM hook was called with.
    ///
    /// # Safety
    /// `kvm` must be a live `struct kvm` for `'a` (a hook's argument is, for the hook's duration).
    pub(crate) unsafe fn from_raw<'a>(kvm: *mut Vm) -> &'a Vm {
        // SAFETY: guaranteed by the caller; `Vm` is a zero-sized stand-in, so the reference reads nothing.
        unsafe { &*kvm }
    }

    pub(crate) fn as_ptr(&self) -> *mut Vm {
        core::ptr::from_ref(self).cast_mut()
    }

    /// A counted reference (what a window holds).
    pub(crate) fn get(&self) -> ARef<Vm> {
        ARef::from(self)
    }

    /// The VMM's mm (`kvm->mm`): KVM holds `mmgrab` on it for the VM's lifetime.
    pub(crate) fn mm(&self) -> &Mm {
        // SAFETY: the VM is live (type invariant), so `kvm->mm` is set and grabbed for as long as the VM is,
        // which outlives the borrow of `self`.
        unsafe { Mm::from_raw(pvtce_glue_kvm_mm(self.as_ptr()).cast()) }
    }

    /// `kvm->srcu`, which protects the memslots and which KVM's hypercall path also holds.
    fn srcu(&self) -> &Srcu {
        // SAFETY: `kvm->srcu` is initialised in `kvm_create_vm` and cleaned up only when the last reference
        // goes, after the borrow of `self` ends; `Srcu` is `repr(transparent)` over the `srcu_struct`, and it is
        // only borrowed here, never dropped.
        unsafe { &*pvtce_glue_kvm_srcu(self.as_ptr()).cast::<Srcu>() }
    }

    /// Enters a `kvm->srcu` read section: the token the memslot accessors and the window lookup require.
    pub(crate) fn srcu_read_lock(&self) -> VmSrcu<'_> {
        VmSrcu { vm: self, _guard: Some(self.srcu().read_lock()) }
    }

    /// The token for a `kvm->srcu` read section the caller already holds (KVM-HV's early path holds it around
    /// the hook, kernel patch 0011): no second `srcu_read_lock` and no call into C.
    ///
    /// # Safety
    /// The calling thread must hold a read section of this VM's `kvm->srcu` for all of `'a`.
    pub(crate) unsafe fn srcu_assume_held<'a>(&'a self) -> VmSrcu<'a> {
        VmSrcu { vm: self, _guard: None }
    }

    /// Waits until every reader of `kvm->srcu` that was in flight (every hypercall of this VM) is done.
    pub(crate) fn synchronize_srcu(&self) {
        self.srcu().synchronize_expedited();
    }

    /// Charges (or uncharges) `pages` to the VMM's locked memory, as Linux's windows are charged.
    pub(crate) fn account_locked(&self, pages: usize, inc: bool) -> Result {
        // SAFETY: `mm()` is live with the VM; `account_locked_vm` takes the mmap lock itself.
        let r = unsafe { kernel::bindings::account_locked_vm(self.mm().as_raw(), pages, inc) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }
}

/// Proof that `kvm->srcu` of [`VmSrcu::vm`] is read-locked on this thread: a [`srcu::Guard`] on it, or
/// (`None`) the caller's own section ([`Vm::srcu_assume_held`]).
pub(crate) struct VmSrcu<'a> {
    vm: &'a Vm,
    _guard: Option<srcu::Guard<'a>>,
}

/// Proof that interrupts are hard-disabled on this CPU, with RCU watching, for `'a`: a region that is an RCU
/// read-side critical section (since the RCU flavours were consolidated in 4.20, `synchronize_rcu()` waits for
/// every region with interrupts or preemption disabled; Documentation/RCU/whatisRCU.rst), so what RCU protects
/// may be read in it without `rcu_read_lock()`. KVM-HV's early path (kernel patch 0011) runs the hook so. Not
/// the kernel crate's `LocalInterruptDisabled`, which promises nothing on a kernel without preemption.
pub(crate) struct IrqsOff(kernel::types::NotThreadSafe);

impl IrqsOff {
    /// # Safety
    /// Interrupts must stay hard-disabled on this CPU for all of `'a`, outside any extended quiescent state
    /// (not between `guest_state_enter_irqoff` and `guest_state_exit_irqoff`).
    pub(crate) unsafe fn assume<'a>() -> &'a IrqsOff {
        const OFF: &IrqsOff = &IrqsOff(kernel::types::NotThreadSafe);
        OFF
    }
}

/// Proof of an RCU read-side critical section: an [`rcu::Guard`], interrupts hard-disabled ([`IrqsOff`]), or
/// either ([`RcuSection`]).
pub(crate) trait RcuReader {}
impl RcuReader for rcu::Guard {}
impl RcuReader for IrqsOff {}
impl RcuReader for RcuSection<'_> {}

/// An RCU read section entered only where one is not already held: in the early path interrupts are off
/// (no `rcu_read_lock()`, which from a module is a call into C), elsewhere an [`rcu::Guard`].
pub(crate) enum RcuSection<'a> {
    Locked(#[allow(dead_code)] rcu::Guard),
    IrqsOff(#[allow(dead_code)] &'a IrqsOff),
}

impl<'a> RcuSection<'a> {
    pub(crate) fn enter(irqs: Option<&'a IrqsOff>) -> Self {
        irqs.map_or_else(|| RcuSection::Locked(rcu::read_lock()), RcuSection::IrqsOff)
    }
}

impl<'a> VmSrcu<'a> {
    pub(crate) fn vm(&self) -> &'a Vm {
        self.vm
    }

    /// Guest physical address to the VMM's user address through the memslots.
    pub(crate) fn gpa_to_ua(&self, gpa: u64) -> Option<u64> {
        let mut ua = 0u64;
        // SAFETY: the VM is live and its kvm->srcu is held (this token); `ua` is a valid out pointer.
        let r = unsafe { pvtce_glue_gpa_to_ua(self.vm.as_ptr(), gpa, &mut ua) };
        (r == 0).then_some(ua)
    }
}

/// Registers pvtce as KVM's sPAPR TCE backend.
pub(crate) fn register_backend() -> Result {
    // SAFETY: no arguments; the backend's hooks are static C functions of this module, unregistered before
    // the module's text goes away (`unregister_backend` from the module's drop).
    let r = unsafe { pvtce_glue_register() };
    if r < 0 {
        return Err(Error::from_errno(r));
    }
    Ok(())
}

/// Unregisters the backend and waits for hooks still running.
pub(crate) fn unregister_backend() {
    // SAFETY: no arguments; safe to call whether or not registration succeeded.
    unsafe { pvtce_glue_unregister() }
}

/// Reads `out.len()` hardware entries from `first` of table `table` of the VFIO group behind `groupfd`.
pub(crate) fn host_read(groupfd: i32, table: u32, first: u64, out: &mut [u64]) -> Result {
    // SAFETY: `out` is a valid, exclusively borrowed buffer of `out.len()` u64; the C side resolves and
    // holds the fd itself and checks the range against the table.
    let r = unsafe { pvtce_glue_host_read(groupfd, table, first, out.len() as u64, out.as_mut_ptr()) };
    if r < 0 {
        return Err(Error::from_errno(r as i32));
    }
    Ok(())
}

/// `PVTCE_PARENT_HCALLS`: starts (1, zeroing), stops (2) or only reads (0) the count of TCE hypercalls this
/// kernel makes to its own hypervisor; returns (put, indirect, stuff, get) so far.
pub(crate) fn parent_count(flags: u32) -> Result<[u64; 4]> {
    let mut counts = [0u64; 4];
    // SAFETY: `counts` is valid for 4 writes; the C side checks `flags` and serialises start and stop.
    let r = unsafe { pvtce_glue_parent_count(flags, counts.as_mut_ptr()) };
    if r < 0 {
        return Err(Error::from_errno(r as i32));
    }
    Ok(counts)
}

/// `PVTCE_L1_TIME`: starts (1, or 5 with the nested intervals), stops (2) or only reads (0) the measurement
/// of this kernel's side of the calling task's guest exits; returns, per kind (H_PUT_TCE, H_PUT_TCE_INDIRECT,
/// H_STUFF_TCE, H_GET_TCE, other), the five sums of `struct pvtce_l1_exits`.
pub(crate) fn l1_time(flags: u32) -> Result<[[u64; 5]; 5]> {
    let mut out = [[0u64; 5]; 5];
    // SAFETY: `out` is 25 contiguous u64, valid for writes; the C side checks `flags` and serialises start
    // and stop.
    let r = unsafe { pvtce_glue_l1_time(flags, out.as_mut_ptr().cast()) };
    if r < 0 {
        return Err(Error::from_errno(r as i32));
    }
    Ok(out)
}

/// The timebase register (the clock L2's `mftb` reads).
pub(crate) fn timebase() -> u64 {
    // SAFETY: reads a register; no arguments.
    unsafe { pvtce_glue_timebase() }
}

/// Whether the calling task's mm is `mm` (compared as pointers).
///
/// Not `kernel::current!().mm()`: on this 7.3 ppc64le build bindgen's `struct task_struct` is laid out
/// differently from C's (`mm` at 0x530 instead of 0x560: `struct sched_statistics` comes out empty and
/// without its cache-line alignment), so the kernel crate reads the wrong field. glue.c reads `current->mm`.
pub(crate) fn current_mm_is(mm: &Mm) -> bool {
    // SAFETY: glue.c compares `current->mm` with the pointer and dereferences neither.
    unsafe { pvtce_glue_current_mm_is(mm.as_raw().cast()) }
}

/// Creates the window's anon-inode file; its `private_data` is `window`.
///
/// # Safety
/// `window` must stay valid until the file's release calls `pvtce_rs_window_release(window)`.
pub(crate) unsafe fn window_fd(window: *mut c_void) -> Result<i32> {
    // SAFETY: guaranteed by the caller.
    let fd = unsafe { pvtce_glue_window_fd(window) };
    if fd < 0 {
        return Err(Error::from_errno(fd));
    }
    Ok(fd)
}
