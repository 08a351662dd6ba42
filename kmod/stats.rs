// SPDX-License-Identifier: GPL-2.0

//! A window's counters (`PVTCE_WINDOW_INFO`, `PVTCE_LIST_WINDOWS`): relaxed atomics, as binder keeps its
//! statistics, so the lockless H_GET_TCE counts without the window lock ([`Stats`]); the counters only the
//! window lock's holder changes are plain integers under that lock ([`Changes`]: on powerpc each atomic add
//! of the kernel crate is a call to a C helper). Each counter is exact; a reader sees the atomics one at a
//! time (not a snapshot of all of them at once).

use crate::pvtce_core::error::HcallError;
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

    /// Counts one call of `kind` and its result.
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

/// The counters of what a window's calls changed, kept in its state (`crate::window::State::changes`) and so
/// changed and read only under the window lock.
#[derive(Default)]
pub(crate) struct Changes {
    /// Guest table entries written.
    pub(crate) tces_changed: u64,
    /// Host table entries written.
    pub(crate) host_updates: u64,
    /// Host table invalidations.
    pub(crate) host_kills: u64,
}

impl Changes {
    /// Counts `tces` guest entries, `updates` host entries and `kills` invalidations more.
    pub(crate) fn add(&mut self, tces: u64, updates: u64, kills: u64) {
        self.tces_changed = self.tces_changed.saturating_add(tces);
        self.host_updates = self.host_updates.saturating_add(updates);
        self.host_kills = self.host_kills.saturating_add(kills);
    }
}
