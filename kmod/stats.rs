// SPDX-License-Identifier: GPL-2.0

//! A window's counters (`PVTCE_WINDOW_INFO`, `PVTCE_LIST_WINDOWS`). A call finished under the window lock
//! (H_PUT_TCE, H_STUFF_TCE and H_PUT_TCE_INDIRECT once the core ran, the locked H_GET_TCE) is counted in plain
//! integers under that lock ([`Changes`]); an H_GET_TCE that KVM-HV's early path answered H_SUCCESS, in its
//! CPU's slot ([`EarlyGets`]); any other call answered without the lock (the lockless H_GET_TCE on the normal
//! path or with an error, an INDIRECT refused by its precheck, a call given up after its allocation rounds)
//! in relaxed atomics, as binder keeps its statistics ([`Stats`]). Why three: on powerpc each atomic add of
//! the kernel crate is a call to a C helper through a stub (kmod/once.rs), which an exit's cold path pays for
//! (docs/bench/analysis.md), so the two frequent kinds avoid it. A count read by `PVTCE_WINDOW_INFO` is the
//! sum of the three, read under the lock; each is exact, and a reader sees the atomics and slots one at a time
//! (not a snapshot of all of them at once).

use crate::ffi::IrqsOff;
use crate::once::{read_once, write_once};
use crate::pvtce_core::error::HcallError;
use kernel::prelude::*;
use kernel::sync::atomic::{Atomic, Relaxed};

/// Which hypercall a count is for.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Put,
    Indirect,
    Stuff,
    Get,
}

impl Kind {
    /// The PAPR hypercall number (for trace events).
    pub(crate) const fn nr(self) -> u32 {
        match self {
            Kind::Put => 0x20,
            Kind::Indirect => 0x13c,
            Kind::Stuff => 0x138,
            Kind::Get => 0x1c,
        }
    }
}

/// Counters of one window.
pub(crate) struct Stats {
    pub(crate) put: Atomic<u64>,
    pub(crate) indirect: Atomic<u64>,
    pub(crate) stuff: Atomic<u64>,
    pub(crate) get: Atomic<u64>,
    /// Calls answered H_TOO_HARD (the VMM sees them).
    pub(crate) declined: Atomic<u64>,
    /// Calls answered with another error.
    pub(crate) rejected: Atomic<u64>,
    /// Calls answered in KVM-HV's early path (kernel patch 0011), also counted by kind above.
    pub(crate) early: Atomic<u64>,
}

impl Stats {
    pub(crate) const fn new() -> Self {
        Stats {
            put: Atomic::new(0),
            indirect: Atomic::new(0),
            stuff: Atomic::new(0),
            get: Atomic::new(0),
            declined: Atomic::new(0),
            rejected: Atomic::new(0),
            early: Atomic::new(0),
        }
    }

    /// Counts one call of `kind` and its result, answered without the window lock.
    pub(crate) fn call(&self, kind: Kind, result: Result<(), HcallError>) {
        let n = match kind {
            Kind::Put => &self.put,
            Kind::Indirect => &self.indirect,
            Kind::Stuff => &self.stuff,
            Kind::Get => &self.get,
        };
        n.add(1, Relaxed);
        match result {
            Ok(()) => {}
            Err(HcallError::TooHard) => self.declined.add(1, Relaxed),
            Err(_) => self.rejected.add(1, Relaxed),
        }
    }

    /// Adds `n` to counter `c` (skipped when 0: an atomic add costs more than the test).
    pub(crate) fn add(c: &Atomic<u64>, n: u64) {
        if n != 0 {
            c.add(n, Relaxed);
        }
    }
}

/// The CPU the caller runs on in KVM-HV's early path, where interrupts are hard-disabled ([`IrqsOff`]): no
/// other context runs on that CPU while the token lives, so its slot of an [`EarlyGets`] has one writer.
pub(crate) struct ThisCpu<'a> {
    cpu: usize,
    _irqs: &'a IrqsOff,
}

impl<'a> ThisCpu<'a> {
    /// # Safety
    /// `cpu` must be the number of the CPU the caller runs on (`raw_smp_processor_id()`), which `irqs` keeps
    /// it on for `'a`.
    pub(crate) unsafe fn new(cpu: u32, irqs: &'a IrqsOff) -> Self {
        ThisCpu { cpu: cpu as usize, _irqs: irqs }
    }
}

/// The H_GET_TCE calls KVM-HV's early path answered H_SUCCESS, one slot per possible CPU (`nr_cpu_ids`), each
/// written only by its CPU with interrupts off ([`ThisCpu`]) with a marked load and store (`WRITE_ONCE`, no
/// atomic read-modify-write, which the kernel crate makes a helper call: kmod/once.rs) and read by anyone.
/// They count in `h_get_tce` and in `early`. The slots of neighbouring CPUs share cache lines, as one shared
/// atomic would for all of them.
pub(crate) struct EarlyGets(KVec<Atomic<u64>>);

impl EarlyGets {
    pub(crate) fn new() -> Result<Self> {
        let n = kernel::cpu::nr_cpu_ids() as usize;
        let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            v.push(Atomic::new(0), GFP_KERNEL)?;
        }
        Ok(EarlyGets(v))
    }

    /// Counts one answered call on the caller's CPU.
    pub(crate) fn count(&self, at: &ThisCpu<'_>) {
        if let Some(c) = self.0.get(at.cpu) {
            // One writer per slot (`ThisCpu`): a load and a store lose no count.
            write_once(c, read_once(c).wrapping_add(1));
        }
    }

    /// The calls counted on every CPU.
    pub(crate) fn sum(&self) -> u64 {
        self.0.iter().map(read_once).fold(0, u64::saturating_add)
    }
}

/// The counters of the calls finished under the window lock and of what they changed, kept in its state
/// (`crate::window::State::changes`) and so changed and read only under that lock.
#[derive(Default)]
pub(crate) struct Changes {
    /// Calls by kind (H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE, H_GET_TCE), as [`Stats`] counts them.
    pub(crate) calls: [u64; 4],
    /// Of them, answered H_TOO_HARD, with another error, and in KVM-HV's early path.
    pub(crate) declined: u64,
    pub(crate) rejected: u64,
    pub(crate) early: u64,
    /// Guest table entries written.
    pub(crate) tces_changed: u64,
    /// Host table entries written.
    pub(crate) host_updates: u64,
    /// Host table invalidations.
    pub(crate) host_kills: u64,
}

impl Changes {
    /// Counts one call of `kind` and its result (under the window lock).
    pub(crate) fn call(&mut self, kind: Kind, result: Result<(), HcallError>) {
        let n = &mut self.calls[kind as usize];
        *n = n.saturating_add(1);
        let c = match result {
            Ok(()) => return,
            Err(HcallError::TooHard) => &mut self.declined,
            Err(_) => &mut self.rejected,
        };
        *c = c.saturating_add(1);
    }

    /// Counts `tces` guest entries, `updates` host entries and `kills` invalidations more.
    pub(crate) fn add(&mut self, tces: u64, updates: u64, kills: u64) {
        self.tces_changed = self.tces_changed.saturating_add(tces);
        self.host_updates = self.host_updates.saturating_add(updates);
        self.host_kills = self.host_kills.saturating_add(kills);
    }
}
