//! RTAS for dynamic DMA windows: the guest's `H_RTAS` (hcall 0xF000, r4 = guest physical address of a
//! big-endian `struct rtas_args { token, nargs, nret, args[16] }`, the returns following the arguments in
//! `args`). KVM defines no RTAS token here, so every `H_RTAS` exits to the VMM, which picks the token numbers.
//!
//! This module only translates arguments: the policy (which window, which LIOBN, which error) is
//! `pvtce_core::ddw::Pe`, and the windows themselves are made by a [`DdwBackend`] (KVM + VFIO in
//! [`crate::windows`]). The argument counts and return layouts follow QEMU `hw/ppc/spapr_rtas_ddw.c`.

use crate::error::{Error, Result};
use crate::mem::GuestMem;
use pvtce_core::ddw::{Created, Pe};
use pvtce_core::error::RtasStatus;
use pvtce_core::types::Liobn;

/// The hypercall number of `H_RTAS`.
pub const H_RTAS: u64 = 0xF000;
/// Words in `rtas_args.args` (arguments and returns together).
pub const RTAS_MAX_ARGS: usize = 16;
/// Bytes of the buffer the VMM reads: token, nargs, nret and args[16].
pub const RTAS_ARGS_BYTES: usize = 12 + 4 * RTAS_MAX_ARGS;

/// The tokens this VMM gives the four DDW calls (the guest learns them from the device tree; the L2 test
/// payload uses them directly).
pub const TOKEN_QUERY: u32 = 0x2001;
pub const TOKEN_CREATE: u32 = 0x2002;
pub const TOKEN_REMOVE: u32 = 0x2003;
pub const TOKEN_RESET: u32 = 0x2004;

/// The BUID of the one PE this VMM models (QEMU's first PHB BUID).
pub const BUID: u64 = 0x0800_0000_2000_0000;

/// One decoded RTAS call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtasCall {
    pub token: u32,
    pub nargs: u32,
    pub nret: u32,
    pub args: [u32; RTAS_MAX_ARGS],
}

impl RtasCall {
    /// Decodes the big-endian buffer; `nargs + nret` must fit in `args`.
    pub fn decode(buf: &[u8; RTAS_ARGS_BYTES]) -> std::result::Result<RtasCall, &'static str> {
        let word = |i: usize| u32::from_be_bytes([buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]]);
        let (token, nargs, nret) = (word(0), word(1), word(2));
        match nargs.checked_add(nret) {
            Some(n) if n as usize <= RTAS_MAX_ARGS => {}
            _ => return Err("nargs + nret exceeds 16"),
        }
        let mut args = [0u32; RTAS_MAX_ARGS];
        for (i, a) in args.iter_mut().enumerate() {
            *a = word(3 + i);
        }
        Ok(RtasCall { token, nargs, nret, args })
    }

    /// Encodes a call (for the guest side of tests).
    pub fn encode(token: u32, args: &[u32], nret: u32) -> [u8; RTAS_ARGS_BYTES] {
        let mut b = [0u8; RTAS_ARGS_BYTES];
        let mut put = |i: usize, v: u32| b[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
        put(0, token);
        put(1, args.len() as u32);
        put(2, nret);
        for (i, a) in args.iter().take(RTAS_MAX_ARGS).enumerate() {
            put(3 + i, *a);
        }
        b
    }

    fn arg(&self, i: usize) -> u32 {
        self.args.get(i).copied().unwrap_or(0)
    }

    fn buid(&self) -> u64 {
        (u64::from(self.arg(1)) << 32) | u64::from(self.arg(2))
    }
}

/// Reads return word `i` of a call whose buffer is at `gpa` (guest side of the tests).
pub fn read_ret(mem: &GuestMem, gpa: u64, nargs: u32, i: u32) -> Result<u32> {
    let mut b = [0u8; 4];
    mem.read(gpa + 12 + 4 * u64::from(nargs + i), &mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// Makes and destroys the windows the policy names.
pub trait DdwBackend {
    /// Creates `window` (host window, kernel window, link). An error makes the RTAS call a hardware error
    /// and the policy forgets the window.
    fn create(&mut self, window: &Created) -> Result<()>;
    /// Destroys the window named `liobn` (kernel window and host window).
    fn remove(&mut self, liobn: Liobn) -> Result<()>;
}

/// The four RTAS calls of one PE over the pvtce-core policy.
pub struct Ddw {
    pub pe: Pe,
    /// Backend errors behind hardware-error answers, for the test log.
    pub errors: Vec<String>,
}

/// A status or the returns after it.
type Rets = std::result::Result<Vec<u32>, RtasStatus>;

fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

impl Ddw {
    pub fn new(pe: Pe) -> Ddw {
        Ddw { pe, errors: Vec::new() }
    }

    /// Creates the windows the policy has at start (the default 32-bit window).
    pub fn boot(&mut self, backend: &mut dyn DdwBackend) -> Result<()> {
        let windows: Vec<Created> = self.pe.windows().collect();
        for w in &windows {
            backend.create(w)?;
        }
        Ok(())
    }

    /// Handles `H_RTAS` with the buffer at `gpa`: reads it once, answers in place. Returns `None` for a token
    /// that is not one of the four (the caller answers it), `Some(status)` otherwise.
    pub fn handle(&mut self, mem: &GuestMem, gpa: u64, backend: &mut dyn DdwBackend) -> Result<Option<i32>> {
        let mut buf = [0u8; RTAS_ARGS_BYTES];
        mem.read(gpa, &mut buf)?;
        let call = RtasCall::decode(&buf).map_err(|why| Error::RtasArgs { gpa, why })?;
        let Some(rets) = self.dispatch(&call, backend) else {
            return Ok(None);
        };
        let (status, rest) = match rets {
            Ok(v) => (0, v),
            Err(s) => (s.as_i32(), Vec::new()),
        };
        // Returns follow the arguments; never write more than the guest asked for.
        let base = gpa + 12 + 4 * u64::from(call.nargs);
        let words = std::iter::once(status as u32).chain(rest).take(call.nret as usize);
        for (i, w) in words.enumerate() {
            mem.write(base + 4 * i as u64, &w.to_be_bytes())?;
        }
        Ok(Some(status))
    }

    /// The returns (after the status word) of one call, or its error status; `None` if not a DDW token.
    pub fn dispatch(&mut self, call: &RtasCall, backend: &mut dyn DdwBackend) -> Option<Rets> {
        let r = match call.token {
            TOKEN_QUERY => self.query(call),
            TOKEN_CREATE => self.create(call, backend),
            TOKEN_REMOVE => self.remove(call, backend),
            TOKEN_RESET => self.reset(call, backend),
            _ => return None,
        };
        Some(r)
    }

    fn check_pe(call: &RtasCall, nargs: u32, nrets: &[u32]) -> std::result::Result<(), RtasStatus> {
        if call.nargs != nargs || !nrets.contains(&call.nret) || call.buid() != BUID {
            return Err(RtasStatus::ParamError);
        }
        Ok(())
    }

    fn query(&mut self, call: &RtasCall) -> Rets {
        Self::check_pe(call, 3, &[5, 6])?;
        let q = self.pe.query()?;
        if call.nret == 6 {
            // The extended form: largest block as two words.
            Ok(vec![q.windows_available, 0, q.largest_block, q.page_size_mask, 0])
        } else {
            Ok(vec![q.windows_available, q.largest_block, q.page_size_mask, q.migration_mask])
        }
    }

    fn create(&mut self, call: &RtasCall, backend: &mut dyn DdwBackend) -> Rets {
        Self::check_pe(call, 5, &[4])?;
        let created = self.pe.create(call.arg(3), call.arg(4))?;
        if let Err(e) = backend.create(&created) {
            self.errors.push(chain(&e));
            // The policy took the slot; give it back so nothing changed.
            let _ = self.pe.remove(created.liobn);
            return Err(RtasStatus::HwError);
        }
        Ok(vec![created.liobn.0 as u32, created.bus_hi(), created.bus_lo()])
    }

    fn remove(&mut self, call: &RtasCall, backend: &mut dyn DdwBackend) -> Rets {
        if call.nargs != 1 || call.nret != 1 {
            return Err(RtasStatus::ParamError);
        }
        let liobn = Liobn(u64::from(call.arg(0)));
        self.pe.remove(liobn)?;
        if let Err(e) = backend.remove(liobn) {
            self.errors.push(chain(&e));
            return Err(RtasStatus::HwError);
        }
        Ok(vec![])
    }

    fn reset(&mut self, call: &RtasCall, backend: &mut dyn DdwBackend) -> Rets {
        Self::check_pe(call, 3, &[1])?;
        let r = self.pe.reset()?;
        let mut failed = false;
        for liobn in r.removed.iter().flatten() {
            if let Err(e) = backend.remove(*liobn) {
                self.errors.push(chain(&e));
                failed = true;
            }
        }
        if let Err(e) = backend.create(&r.default) {
            self.errors.push(chain(&e));
            let _ = self.pe.remove(r.default.liobn);
            failed = true;
        }
        if failed {
            Err(RtasStatus::HwError)
        } else {
            Ok(vec![])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvtce_core::ddw::{PeConfig, DMA64_BUS};

    /// Records what the policy asked for; fails creates when told to.
    #[derive(Default)]
    struct Mock {
        live: Vec<Created>,
        fail_create: bool,
    }

    impl DdwBackend for Mock {
        fn create(&mut self, w: &Created) -> Result<()> {
            if self.fail_create {
                return Err(Error::HostWindowPlacement { page_shift: 16, want: 0, got: 1 });
            }
            self.live.push(*w);
            Ok(())
        }
        fn remove(&mut self, liobn: Liobn) -> Result<()> {
            self.live.retain(|w| w.liobn != liobn);
            Ok(())
        }
    }

    const L0: u64 = 0x8000_0000;
    const L1: u64 = 0x8000_0001;

    fn setup() -> (GuestMem, Ddw, Mock) {
        let mem = GuestMem::new(1 << 16).unwrap();
        let mut d = Ddw::new(Pe::new(PeConfig::qemu_default([Liobn(L0), Liobn(L1)])));
        let mut m = Mock::default();
        d.boot(&mut m).unwrap();
        (mem, d, m)
    }

    fn call(mem: &GuestMem, d: &mut Ddw, m: &mut Mock, token: u32, args: &[u32], nret: u32) -> Vec<i64> {
        mem.write(0x100, &RtasCall::encode(token, args, nret)).unwrap();
        d.handle(mem, 0x100, m).unwrap().unwrap();
        (0..nret).map(|i| i64::from(read_ret(mem, 0x100, args.len() as u32, i).unwrap() as i32)).collect()
    }

    const HI: u32 = (BUID >> 32) as u32;
    const LO: u32 = BUID as u32;

    #[test]
    fn decode_checks_counts() {
        let mut b = RtasCall::encode(TOKEN_QUERY, &[1, 2, 3], 5);
        assert_eq!(RtasCall::decode(&b).unwrap().args[..3], [1, 2, 3]);
        b[8..12].copy_from_slice(&14u32.to_be_bytes());
        assert!(RtasCall::decode(&b).is_err());
        b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(RtasCall::decode(&b).is_err());
    }

    // Values from QEMU spapr_rtas_ddw.c: query answers 1 window left and mask 0x107 with the default window.
    #[test]
    fn query_create_remove_reset() {
        let (mem, mut d, mut m) = setup();
        assert_eq!(
            call(&mem, &mut d, &mut m, TOKEN_QUERY, &[0, HI, LO], 5),
            vec![0, 1, 0x8000_0000u32 as i32 as i64, 0x107, 0]
        );
        let r = call(&mem, &mut d, &mut m, TOKEN_CREATE, &[0, HI, LO, 16, 32], 4);
        assert_eq!(r, vec![0, L1 as u32 as i32 as i64, (DMA64_BUS >> 32) as i64, 0]);
        assert_eq!(m.live.len(), 2);
        // A third window: hardware error, nothing changes.
        assert_eq!(call(&mem, &mut d, &mut m, TOKEN_CREATE, &[0, HI, LO, 16, 32], 4)[0], -1);
        assert_eq!(m.live.len(), 2);
        assert_eq!(call(&mem, &mut d, &mut m, TOKEN_REMOVE, &[L1 as u32], 1), vec![0]);
        assert_eq!(m.live.len(), 1);
        assert_eq!(call(&mem, &mut d, &mut m, TOKEN_REMOVE, &[L1 as u32], 1), vec![-3]);
        assert_eq!(call(&mem, &mut d, &mut m, TOKEN_RESET, &[0, HI, LO], 1), vec![0]);
        assert_eq!(m.live.iter().map(|w| w.liobn.0).collect::<Vec<_>>(), vec![L0]);
    }

    #[test]
    fn bad_inputs_change_nothing() {
        let (mem, mut d, mut m) = setup();
        let before = d.pe;
        // Unsupported page shift (8M), window smaller than a page, wrong BUID, wrong counts, unknown LIOBN.
        assert_eq!(call(&mem, &mut d, &mut m, TOKEN_CREATE, &[0, HI, LO, 23, 32], 4)[0], -3);
        assert_eq!(call(&mem, &mut d, &mut m, TOKEN_CREATE, &[0, HI, LO, 16, 15], 4)[0], -3);
        assert_eq!(call(&mem, &mut d, &mut m, TOKEN_CREATE, &[0, HI, LO + 1, 16, 32], 4)[0], -3);
        assert_eq!(call(&mem, &mut d, &mut m, TOKEN_CREATE, &[0, HI, LO, 16], 4)[0], -3);
        assert_eq!(call(&mem, &mut d, &mut m, TOKEN_REMOVE, &[0x1234], 1), vec![-3]);
        assert_eq!(d.pe, before);
        assert_eq!(m.live.len(), 1);
        // The backend failing: hardware error and the policy forgets the window.
        m.fail_create = true;
        assert_eq!(call(&mem, &mut d, &mut m, TOKEN_CREATE, &[0, HI, LO, 16, 32], 4)[0], -1);
        assert_eq!(d.pe, before);
        assert_eq!(d.errors.len(), 1);
        // Not a DDW token: left to the caller.
        mem.write(0x100, &RtasCall::encode(0x77, &[], 1)).unwrap();
        assert_eq!(d.handle(&mem, 0x100, &mut m).unwrap(), None);
    }
}
