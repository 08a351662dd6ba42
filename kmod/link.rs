// SPDX-License-Identifier: GPL-2.0

//! Links between a window and the hardware tables of a VFIO group (`KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE` and
//! the group's release from the KVM VFIO device). A link holds a reference on its table (`ARef`).

use crate::ffi::Vm;
use crate::host::{HostLink, KernelHost};
use crate::iommu::{IommuGroup, IommuTable};
use crate::pvtce_core::host::{pick_group_table, HostGeometry, HostTableId, MAX_LINKS};
use crate::pvtce_core::types::PageShift;
use crate::registry;
use crate::trace;
use crate::window::KernelWindow;
use core::ffi::{c_long, c_void};
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use kernel::sync::{Arc, ArcBorrow};
use kernel::types::ForeignOwnable;

/// `attach_group` hook: links the window behind a pvtce table fd to the group's hardware table.
///
/// # Safety
/// `kvm` must be a live `struct kvm` and `grp` a live VFIO-owned group for the call; `window` must be the
/// `private_data` of a pvtce window file the caller holds for the call (glue.c's `pvtce_attach_group`).
#[no_mangle]
pub(crate) unsafe extern "C" fn pvtce_rs_attach(kvm: *mut Vm, window: *mut c_void, grp: *mut IommuGroup) -> c_long {
    // SAFETY: the caller holds the window's file, and with it the file's reference on the window.
    let w: ArcBorrow<'_, KernelWindow> = unsafe { <Arc<KernelWindow> as ForeignOwnable>::borrow(window) };
    // As Linux: a table fd of another VM is not found among this VM's windows.
    if !core::ptr::eq(&*w.vm, kvm) {
        return c_long::from(EINVAL.to_errno());
    }
    // SAFETY: `grp` is live for the call (the caller's guarantee).
    match unsafe { attach(&w, grp) } {
        Ok(()) => 0,
        Err(e) => c_long::from(e.to_errno()),
    }
}

/// # Safety
/// `grp` must be a live VFIO-owned group for the call.
unsafe fn attach(w: &KernelWindow, grp: *mut IommuGroup) -> Result {
    // Take both candidate tables (with references) before the window lock.
    let mut cands: KVec<ARef<IommuTable>> = KVec::new();
    for i in 0..2 {
        // SAFETY: `grp` is live (the caller's guarantee).
        if let Some(t) = unsafe { IommuTable::of_group(grp, i) } {
            cands.push(t, GFP_KERNEL)?;
        }
    }
    let srcu = w.vm.srcu_read_lock();
    let mut s = w.state.lock();
    let s = &mut *s;
    // Already linked to one of these tables: one more reference (Linux keeps a kref).
    for c in cands.iter() {
        if let Some(l) = s.links.iter().find(|l| core::ptr::eq(&*l.table, &**c)) {
            let id = l.id;
            s.window.link(&KernelHost::new(&srcu, &s.links), id).map_err(|_| EINVAL)?;
            w.trace(trace::window_link, s.links.len());
            return Ok(());
        }
    }
    let mut geoms: KVec<(HostTableId, HostGeometry)> = KVec::new();
    for (n, c) in cands.iter().enumerate() {
        let g = c.geometry();
        if let Some(page_shift) = PageShift::new(g.page_shift) {
            geoms.push(
                (HostTableId(n as u32), HostGeometry { page_shift, offset: g.offset, size: g.size }),
                GFP_KERNEL,
            )?;
        }
    }
    let pick = pick_group_table(s.window.geometry(), &geoms).map_err(|_| EINVAL)?;
    if s.links.len() >= MAX_LINKS {
        return Err(ENOSPC);
    }
    let table = cands.into_iter().nth(pick.0 as usize).ok_or(EINVAL)?;
    let id = HostTableId(s.next_link_id);
    s.next_link_id = s.next_link_id.wrapping_add(1);
    let geometry = table.geometry();
    if s.links.push(HostLink { id, table, group: grp as usize, geometry }).is_err() {
        return Err(ENOSPC);
    }
    if s.window.link(&KernelHost::new(&srcu, &s.links), id).is_err() {
        s.links.pop();
        return Err(EINVAL);
    }
    w.trace(trace::window_link, s.links.len());
    Ok(())
}

/// `release_group` hook: the group left the KVM VFIO device; drop every link of this VM's windows to its
/// tables.
///
/// # Safety
/// `kvm` must be a live `struct kvm` for the call. `grp` is only compared, never dereferenced.
#[no_mangle]
pub(crate) unsafe extern "C" fn pvtce_rs_release_group(kvm: *mut Vm, grp: *mut IommuGroup) {
    // SAFETY: `kvm` is live for the call (the caller's guarantee).
    let windows = registry::windows_of(unsafe { Vm::from_raw(kvm) });
    for w in windows.iter() {
        let mut gone = KVec::new();
        {
            let mut s = w.state.lock();
            let s = &mut *s;
            let mut ids = KVec::new();
            for l in s.links.iter().filter(|l| l.group == grp as usize) {
                let _ = ids.push(l.id, GFP_KERNEL);
            }
            for id in ids.iter() {
                // Linux drops every reference the group held on the link at once.
                while s.window.unlink(*id) {
                    if !s.window.links().any(|l| l.id == *id) {
                        break;
                    }
                }
                let at = s.links.iter().position(|l| l.id == *id);
                if let Some(i) = at {
                    if let Some(l) = s.links.remove(i) {
                        let _ = gone.push(l, GFP_KERNEL);
                    }
                }
                w.trace(trace::window_unlink, s.links.len());
            }
        }
        // Table references go with no lock held.
        drop(gone);
    }
    drop(windows);
}
