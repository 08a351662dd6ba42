//! The dispatcher: routes the four TCE hypercalls by number, for the module and for fuzzing.

use super::error::{hresult_code, HcallError, H_SUCCESS};
use super::host::{Host, Planned};
use super::table::{NeedAlloc, PageStore};
use super::types::{Ioba, Liobn, Tce};
use super::window::{Completion, Outcome, Request, Window, MAX_INDIRECT_TCES, PLAN_SLOTS};

/// H_GET_TCE.
pub const H_GET_TCE: u64 = 0x1C;
/// H_PUT_TCE.
pub const H_PUT_TCE: u64 = 0x20;
/// H_STUFF_TCE.
pub const H_STUFF_TCE: u64 = 0x138;
/// H_PUT_TCE_INDIRECT.
pub const H_PUT_TCE_INDIRECT: u64 = 0x13C;

/// Where the dispatcher finds a window and what it needs to run it.
pub trait Machine {
    /// The page store of the windows' tables.
    type Store: PageStore;
    /// The host environment.
    type Host: Host;
    /// The window named `liobn` with its store and host; `None` sends the call to userspace
    /// (`H_TOO_HARD`, Linux `kvmppc_find_table` failing).
    fn window(&mut self, liobn: Liobn) -> Option<(&mut Window, &mut Self::Store, &mut Self::Host)>;
}

/// What the dispatcher answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// The PAPR code for r3, the value for r4 (H_GET_TCE) and the entries applied (see
    /// [`Completion::applied`]).
    Return {
        /// PAPR return code (r3).
        ret: i64,
        /// Value returned in r4 (0 unless H_GET_TCE succeeded).
        r4: u64,
        /// Entries now in effect: the request's on success, 0 on an error (nothing changed).
        applied: u64,
    },
    /// Nothing changed; fill the store's reserve with `pages` pages outside the lock and call again.
    NeedAlloc(NeedAlloc),
    /// Not a TCE hypercall: not ours.
    NotOurs,
}

impl Dispatch {
    fn from_outcome(o: Outcome) -> Dispatch {
        match o {
            Outcome::Done(Completion { result, applied }) => {
                Dispatch::Return { ret: hresult_code(&result), r4: result.unwrap_or(0), applied }
            }
            Outcome::NeedAlloc(n) => Dispatch::NeedAlloc(n),
        }
    }

    fn err(e: HcallError) -> Dispatch {
        Dispatch::Return { ret: e.as_i64(), r4: 0, applied: 0 }
    }
}

/// Handles hypercall `nr` with arguments `args` (r4..r7: liobn, ioba, tce / value / list, npages).
/// `buf` holds the copied H_PUT_TCE_INDIRECT list and `plan` the batch's plan ([`Window::execute_planned`],
/// [`PLAN_SLOTS`] long; shorter runs batches without one), so that a caller can keep both off the stack.
pub fn hcall_with_buf<M: Machine>(
    m: &mut M,
    nr: u64,
    args: [u64; 4],
    buf: &mut [u64; 512],
    plan: &mut [Planned],
) -> Dispatch {
    let [liobn, ioba, arg, npages] = args;
    if !matches!(nr, H_GET_TCE | H_PUT_TCE | H_STUFF_TCE | H_PUT_TCE_INDIRECT) {
        return Dispatch::NotOurs;
    }
    let Some((window, store, host)) = m.window(Liobn(liobn)) else {
        return Dispatch::err(HcallError::TooHard);
    };
    let ioba = Ioba(ioba);
    match nr {
        H_GET_TCE => match window.get_tce(store, ioba) {
            Ok(v) => Dispatch::Return { ret: H_SUCCESS, r4: v, applied: 0 },
            Err(e) => Dispatch::err(e),
        },
        H_PUT_TCE => {
            Dispatch::from_outcome(window.execute_planned(store, host, &Request::Put { ioba, tce: Tce(arg) }, plan))
        }
        H_STUFF_TCE => Dispatch::from_outcome(window.execute_planned(
            store,
            host,
            &Request::Stuff { ioba, value: Tce(arg), npages },
            plan,
        )),
        _ => {
            if let Err(e) = window.indirect_precheck(ioba, arg, npages) {
                return Dispatch::err(e);
            }
            // Linux: the list address goes through the memslots like a TCE; none -> H_TOO_HARD.
            let Some(ua) = host.gpa_to_ua(arg) else {
                return Dispatch::err(HcallError::TooHard);
            };
            // npages <= 512 was checked by indirect_precheck.
            let Some(list) = usize::try_from(npages).ok().and_then(|n| buf.get_mut(..n)) else {
                return Dispatch::err(HcallError::Parameter);
            };
            if !host.read_tce_list(ua, list) {
                return Dispatch::err(HcallError::TooHard);
            }
            Dispatch::from_outcome(window.execute_planned(store, host, &Request::Indirect { ioba, list }, plan))
        }
    }
}

/// [`hcall_with_buf`] with a list buffer and a plan on the stack (tests, fuzzing, userspace).
pub fn hcall<M: Machine>(m: &mut M, nr: u64, args: [u64; 4]) -> Dispatch {
    let mut buf = [0u64; MAX_INDIRECT_TCES as usize];
    let mut plan = [Planned::default(); PLAN_SLOTS];
    hcall_with_buf(m, nr, args, &mut buf, &mut plan)
}
