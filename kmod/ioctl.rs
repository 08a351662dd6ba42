// SPDX-License-Identifier: GPL-2.0

//! The ioctls of a pvtce table fd, and the argument helpers every pvtce ioctl uses:
//! - `PVTCE_WINDOW_INFO`: the window's geometry and counters.
//! - `PVTCE_WINDOW_EXCHANGE` (benchmark only, not part of the production uAPI): refused with ENOTTY, as a
//!   command the file does not have, unless the module was loaded with `bench_ioctls=1`.

use crate::host::KernelHost;
use crate::pvtce_core::host::{ua_to_hpa, Host, HostEntry, HostTce, Region};
use crate::pvtce_core::types::Perm;
use crate::uapi::{
    pvtce_exchange, pvtce_window_info, PVTCE_EXCHANGE_BATCHED, PVTCE_EXCHANGE_MAX, PVTCE_WINDOW_EXCHANGE,
    PVTCE_WINDOW_INFO,
};
use crate::window::KernelWindow;
use crate::{ffi, module_parameters};
use core::ffi::{c_long, c_ulong, c_void};
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};
use kernel::transmute::FromBytes;
use kernel::types::ForeignOwnable;
use kernel::uaccess::{UserPtr, UserSlice, UserSliceWriter};

/// Reads an ioctl's argument struct from `arg`; the writer writes the answer back in place.
pub(crate) fn read_checked<T: FromBytes>(arg: usize) -> Result<(T, UserSliceWriter)> {
    let size = core::mem::size_of::<T>();
    let (mut r, w) = UserSlice::new(UserPtr::from_addr(arg), size).reader_writer();
    Ok((r.read::<T>()?, w))
}

/// EINVAL unless the struct userspace knows is at least `size` bytes and no flag is set.
pub(crate) fn check_head(argsz: u32, flags: u32, size: usize) -> Result {
    // The rule is pvtce-core's, so that the `args` fuzz target checks the one pvtce.ko runs.
    if !crate::pvtce_core::args::head_ok(argsz, flags, size) {
        return Err(EINVAL);
    }
    Ok(())
}

/// The table fd's `unlocked_ioctl`.
///
/// # Safety
/// `window` must be the `private_data` of a pvtce window file the caller holds for the call.
#[no_mangle]
pub(crate) unsafe extern "C" fn pvtce_rs_window_ioctl(window: *mut c_void, cmd: u32, arg: c_ulong) -> c_long {
    // SAFETY: the caller holds the file, and with it the file's reference on the window.
    let w: ArcBorrow<'_, KernelWindow> = unsafe { <Arc<KernelWindow> as ForeignOwnable>::borrow(window) };
    let r = match cmd {
        PVTCE_WINDOW_INFO => window_info(&w, arg as usize),
        PVTCE_WINDOW_EXCHANGE if module_parameters::bench_ioctls.value() => exchange(&w, arg as usize),
        _ => Err(ENOTTY),
    };
    match r {
        Ok(()) => 0,
        Err(e) => c_long::from(e.to_errno()),
    }
}

fn window_info(w: &KernelWindow, arg: usize) -> Result {
    let (req, mut writer) = read_checked::<pvtce_window_info>(arg)?;
    check_head(req.argsz, req.flags, core::mem::size_of::<pvtce_window_info>())?;
    writer.write(&w.info())
}

/// `PVTCE_WINDOW_EXCHANGE`: the host-table update of a hypercall without the hypercall, timed (the
/// benchmark's floors). It runs `table_exchange` per entry (the per-entry floor) or, with
/// `PVTCE_EXCHANGE_BATCHED`, the hypercall path's own `table_run` (the batched floor), and one `table_kill`, on
/// translations made before the clock starts; uapi/include/linux/pvtce.h has the rules.
fn exchange(w: &KernelWindow, arg: usize) -> Result {
    let (mut req, mut writer) = read_checked::<pvtce_exchange>(arg)?;
    let batched = req.flags & PVTCE_EXCHANGE_BATCHED != 0;
    check_head(req.argsz, req.flags & !PVTCE_EXCHANGE_BATCHED, core::mem::size_of::<pvtce_exchange>())?;
    if req.count == 0 || req.count > u64::from(PVTCE_EXCHANGE_MAX) {
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
    if !ffi::current_mm_is(w.vm.mm()) {
        return Err(EPERM);
    }
    let srcu = w.vm.srcu_read_lock();
    let mut guard = w.state.lock();
    let s = &mut *guard;
    let link = s.links.first().ok_or(ENODEV)?;
    let id = link.id;
    // Equal page sizes only: one host entry per window entry, as in the benchmark's windows.
    if link.geometry.page_shift != shift.get() {
        return Err(EINVAL);
    }
    if (req.first..end).any(|i| s.window.table().get(&s.store, i).is_some_and(|t| t != 0)) {
        return Err(EBUSY);
    }
    let mut host =
        if batched { KernelHost::with_buf(&srcu, &s.links, &mut s.run_buf) } else { KernelHost::new(&srcu, &s.links) };
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
    let entry = |_: &KernelHost<'_>, k: u64| {
        usize::try_from(k).ok().and_then(|k| plan.get(k)).map_or(HostEntry::EMPTY, |&(_, tce, ua)| HostEntry {
            tce,
            ua,
            region: Region::NONE,
        })
    };
    let t0 = ffi::timebase();
    // A refused batch has emptied the range already.
    let mut refused = false;
    if batched {
        refused |= host.table_run(id, base, req.count, &entry).is_err();
    } else {
        for (idx, tce, ua) in plan.iter() {
            host.table_exchange(id, *idx, *tce, *ua);
        }
    }
    host.table_kill(id, base, req.count);
    let t1 = ffi::timebase();
    if batched {
        refused |= host.table_run(id, base, req.count, &|_, _| HostEntry::EMPTY).is_err();
    } else {
        for (idx, _, _) in plan.iter() {
            host.table_exchange(id, *idx, HostTce::EMPTY, 0);
        }
    }
    host.table_kill(id, base, req.count);
    let t2 = ffi::timebase();
    drop(host);
    drop(guard);
    if refused {
        return Err(EIO);
    }
    req.map_ticks = t1.wrapping_sub(t0);
    req.unmap_ticks = t2.wrapping_sub(t1);
    writer.write(&req)
}
