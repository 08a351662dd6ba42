// SPDX-License-Identifier: GPL-2.0

//! `READ_ONCE` and `WRITE_ONCE` on the kernel crate's atomics, for the hypercall path's accesses that need no
//! ordering of their own.
//!
//! Why not `Atomic::load`: on powerpc every operation of the 7.3 kernel crate's `Atomic` is a call to a C
//! helper in vmlinux (`rust_helper_atomic64_read_acquire` and the like; `RUST_INLINE_HELPERS` is ARM64 and
//! X86_64 only), which from a module is a call through a stub and an indirect branch. Under TCG that costs
//! more than the load: QEMU flushes its soft TLB and jump cache at every L1<->L2 switch, so each distinct
//! branch target and page an exit's handler reaches is looked up anew (docs/bench/analysis.md). A volatile
//! load of an aligned word is what C's `READ_ONCE` is, an LKMM marked access; the kernel crate reads fields
//! that C writes concurrently the same way (`File::flags`, hrtimer's `expires`).

use kernel::sync::atomic::{Atomic, AtomicType};

/// `READ_ONCE(*a)`: one untorn load, not fused or repeated by the compiler, ordered before the loads whose
/// address depends on it (what `rcu_dereference` relies on) and before nothing else.
#[inline(always)]
pub(crate) fn read_once<T: AtomicType>(a: &Atomic<T>) -> T {
    // SAFETY: `as_ptr` is valid and aligned for a `T` for as long as `a` is borrowed, and every bit pattern
    // stored through `Atomic<T>` is a valid `T`; a volatile load of it is `READ_ONCE`, which may race with the
    // atomic stores to `a` (LKMM, the memory model of kernel Rust).
    unsafe { a.as_ptr().read_volatile() }
}

/// `WRITE_ONCE(*a, v)`: one untorn store, not fused, repeated or torn by the compiler, ordered with nothing.
/// Not a read-modify-write: a counter updated with it must have one writer at a time (kmod/stats.rs
/// `EarlyGets`).
#[inline(always)]
pub(crate) fn write_once<T: AtomicType>(a: &Atomic<T>, v: T) {
    // SAFETY: `as_ptr` is valid and aligned for a `T` for as long as `a` is borrowed; a volatile store of it is
    // `WRITE_ONCE`, which may race with marked loads of `a` ([`read_once`], LKMM).
    unsafe { a.as_ptr().write_volatile(v) }
}
