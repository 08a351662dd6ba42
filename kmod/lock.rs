// SPDX-License-Identifier: GPL-2.0

//! [`StateLock`]: the lock of a window's state, which KVM's early path (interrupts off, nothing may sleep)
//! takes without calling out of the module.
//!
//! What excludes is one word, `held`, which a taker sets by compare-and-swap (acquire) and clears by a store
//! (release). A kernel [`Mutex`] in front of it queues the takers that may sleep, so only one of them at a time
//! competes for `held`, and only with the early path, which holds it for a bounded time with interrupts off
//! and never waits: a sleeping taker that finds it set spins until it is cleared. An early taker that finds it
//! set gives up (the caller declines the hypercall and KVM's normal path takes the lock).
//!
//! Hand-written, for the early path alone: the kernel crate's `Mutex::try_lock` is two calls into C
//! (`mutex_trylock`, and the helper behind `Guard::new`'s `mutex_assert_is_held`) and its unlock a third, and on
//! powerpc the kernel crate's atomics are calls to C helpers too (kmod/once.rs). Under TCG each call out of
//! the module costs an exit's cold path a page and a jump-cache lookup: the three cost about 1-2 us of an early
//! H_PUT_TCE's 21 us in L1 (timebase stamps, docs/bench/analysis.md, the second session's section). `held` is a `core`
//! atomic, which compiles to `lwarx`/`stwcx.` and `lwsync` inline: an acquire compare-and-swap and a release
//! store are the LKMM's `cmpxchg_acquire` and `smp_store_release`. Lockdep sees the mutex, not `held`.

use crate::ffi::IrqsOff;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::prelude::*;
use kernel::sync::{Mutex, MutexGuard};

/// A value that one holder at a time may use: a sleeping one ([`StateLock::lock`]) or one in KVM's early path
/// ([`StateLock::try_lock_early`]).
///
/// # Invariants
/// `data` is used only through a [`StateGuard`], and a guard exists only while it has set `held`.
#[pin_data]
pub(crate) struct StateLock<T> {
    /// Orders the takers that may sleep (one at a time competes for `held`).
    #[pin]
    waiters: Mutex<()>,
    held: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: a `StateLock` hands `data` to one holder at a time (type invariant), so sharing it between threads
// is sending `T` from one holder to the next.
unsafe impl<T: Send> Sync for StateLock<T> {}
// SAFETY: sending the lock sends its `T`.
unsafe impl<T: Send> Send for StateLock<T> {}

impl<T> StateLock<T> {
    /// A lock over `data`; `waiters` is a new mutex (`kernel::new_mutex!(())`, which names its lock class).
    pub(crate) fn new(data: T, waiters: impl PinInit<Mutex<()>>) -> impl PinInit<Self> {
        pin_init!(Self { waiters <- waiters, held: AtomicBool::new(false), data: UnsafeCell::new(data) })
    }

    /// Takes the lock, sleeping behind the other sleeping takers, then spinning while an early taker holds it.
    pub(crate) fn lock(&self) -> StateGuard<'_, T> {
        let waiter = self.waiters.lock();
        // Only an early taker can hold `held` now (every other taker holds `waiters` first): it runs with
        // interrupts off on another CPU and does not wait for anything, so this ends.
        while self.held.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        // INVARIANT: `held` was set just above, by this taker.
        StateGuard { lock: self, _waiter: Some(waiter) }
    }

    /// Takes the lock in KVM's early path (`_irqs`: interrupts are off, nothing may wait), or gives up at once.
    #[inline(always)]
    pub(crate) fn try_lock_early(&self, _irqs: &IrqsOff) -> Option<StateGuard<'_, T>> {
        self.held.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).ok()?;
        // INVARIANT: `held` was set just above, by this taker.
        Some(StateGuard { lock: self, _waiter: None })
    }
}

/// The holder of a [`StateLock`]: the value, until dropped.
pub(crate) struct StateGuard<'a, T> {
    lock: &'a StateLock<T>,
    /// A sleeping taker's place behind the mutex, given up after `held` (field drops follow `drop`).
    _waiter: Option<MutexGuard<'a, ()>>,
}

impl<T> Deref for StateGuard<'_, T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: this guard set `held` and no other guard exists until it is cleared (type invariant).
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for StateGuard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for StateGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        // Release: what the holder wrote is seen by the next one, whose compare-and-swap acquires.
        self.lock.held.store(false, Ordering::Release);
    }
}
