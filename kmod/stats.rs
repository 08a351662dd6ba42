// SPDX-License-Identifier: GPL-2.0

//! A window's counters (`PVTCE_WINDOW_INFO`, `PVTCE_LIST_WINDOWS`), kept under the window lock: every
//! hypercall that counts also holds it for the table update.

use crate::pvtce_core::error::HcallError;

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
#[derive(Default, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) put: u64,
    pub(crate) indirect: u64,
    pub(crate) stuff: u64,
    pub(crate) get: u64,
    /// Calls answered H_TOO_HARD (the VMM sees them).
    pub(crate) declined: u64,
    /// Calls answered with another error.
    pub(crate) rejected: u64,
    pub(crate) tces_changed: u64,
    pub(crate) host_updates: u64,
    pub(crate) host_kills: u64,
}

impl Stats {
    /// Counts one call of `kind` and its result.
    pub(crate) fn call(&mut self, kind: Kind, result: Result<(), HcallError>) {
        let n = match kind {
            Kind::Put => &mut self.put,
            Kind::Indirect => &mut self.indirect,
            Kind::Stuff => &mut self.stuff,
            Kind::Get => &mut self.get,
        };
        *n += 1;
        match result {
            Ok(()) => {}
            Err(HcallError::TooHard) => self.declined += 1,
            Err(_) => self.rejected += 1,
        }
    }
}
