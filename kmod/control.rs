// SPDX-License-Identifier: GPL-2.0

//! `/dev/pvtce`, the control device (`uapi/include/linux/pvtce.h`):
//! - `PVTCE_SET_MODE`: whether new windows are pvtce's, Linux's built-in ones, or none at all so that the VMM
//!   keeps its own (side-by-side runs of the three paths).
//! - `PVTCE_HOST_READ`: hardware entries of a VFIO group's table (conformance tests compare them).
//! - `PVTCE_LIST_WINDOWS`: every window with its statistics (the pvtce CLI).
//! - `PVTCE_PARENT_HCALLS` (benchmark only, `bench_ioctls=1`): TCE hypercalls to this kernel's hypervisor.
//! - `PVTCE_L1_TIME` (benchmark only): this kernel's side of the caller's guest exits, in timebase ticks.
//!
//! Only root may open it (mode 0600): it reveals host physical addresses.

use crate::ffi;
use crate::ioctl::{check_head, read_checked};
use crate::registry;
use crate::uapi::{
    pvtce_host_read, pvtce_l1_exits, pvtce_l1_time, pvtce_mode, pvtce_parent_hcalls, pvtce_window_info, pvtce_windows,
    PVTCE_HOST_READ, PVTCE_HOST_READ_MAX, PVTCE_L1_NESTED, PVTCE_L1_START, PVTCE_L1_STOP, PVTCE_L1_TIME,
    PVTCE_LIST_WINDOWS, PVTCE_MODE_BUILTIN, PVTCE_MODE_PVTCE, PVTCE_MODE_USERSPACE, PVTCE_PARENT_HCALLS,
    PVTCE_PARENT_START, PVTCE_PARENT_STOP, PVTCE_SET_MODE, PVTCE_WINDOWS_MAX,
};
use crate::window::MODE;
use kernel::fs::File;
use kernel::miscdevice::{MiscDevice, MiscDeviceRegistration};
use kernel::prelude::*;
use kernel::sync::atomic::Relaxed;
use kernel::uaccess::{UserPtr, UserSlice};

pub(crate) struct Control;

#[vtable]
impl MiscDevice for Control {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        Ok(KBox::new(Control, GFP_KERNEL)?)
    }

    fn ioctl(_me: &Control, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            PVTCE_SET_MODE => set_mode(arg),
            PVTCE_HOST_READ => host_read(arg),
            PVTCE_LIST_WINDOWS => list_windows(arg),
            PVTCE_PARENT_HCALLS if crate::module_parameters::bench_ioctls.value() => parent_hcalls(arg),
            PVTCE_L1_TIME if crate::module_parameters::bench_ioctls.value() => l1_time(arg),
            _ => Err(ENOTTY),
        }
        .map(|()| 0)
    }
}

fn set_mode(arg: usize) -> Result {
    let (mut m, mut w) = read_checked::<pvtce_mode>(arg)?;
    check_head(m.argsz, m.flags, core::mem::size_of::<pvtce_mode>())?;
    if !matches!(m.mode, PVTCE_MODE_PVTCE | PVTCE_MODE_BUILTIN | PVTCE_MODE_USERSPACE) {
        return Err(EINVAL);
    }
    m.old = MODE.xchg(m.mode, kernel::sync::atomic::Full);
    w.write(&m)
}

fn host_read(arg: usize) -> Result {
    let (req, _) = read_checked::<pvtce_host_read>(arg)?;
    check_head(req.argsz, req.flags, core::mem::size_of::<pvtce_host_read>())?;
    if req.count == 0 || req.count > u64::from(PVTCE_HOST_READ_MAX) || req.table > 1 {
        return Err(EINVAL);
    }
    let n = req.count as usize;
    let mut buf: KVec<u64> = KVec::with_capacity(n, GFP_KERNEL)?;
    buf.resize(n, 0, GFP_KERNEL)?;
    ffi::host_read(req.groupfd, req.table, req.first, &mut buf)?;
    let bytes = n.checked_mul(8).ok_or(EINVAL)?;
    let mut w = UserSlice::new(UserPtr::from_addr(req.entries as usize), bytes).writer();
    for v in buf.iter() {
        w.write(v)?;
    }
    Ok(())
}

fn list_windows(arg: usize) -> Result {
    let (mut req, mut head) = read_checked::<pvtce_windows>(arg)?;
    check_head(req.argsz, req.flags, core::mem::size_of::<pvtce_windows>())?;
    if req.capacity > PVTCE_WINDOWS_MAX {
        return Err(EINVAL);
    }
    // References under the registry lock; each window read under its own lock only.
    let (windows, total) = registry::all(req.capacity as usize)?;
    req.count = total as u32;
    let size = core::mem::size_of::<pvtce_window_info>();
    let bytes = windows.len().checked_mul(size).ok_or(EINVAL)?;
    let mut w = UserSlice::new(UserPtr::from_addr(req.entries as usize), bytes).writer();
    for win in windows.iter() {
        w.write(&win.info())?;
    }
    head.write(&req)
}

fn parent_hcalls(arg: usize) -> Result {
    let (mut req, mut w) = read_checked::<pvtce_parent_hcalls>(arg)?;
    check_head(req.argsz, 0, core::mem::size_of::<pvtce_parent_hcalls>())?;
    let flags = match req.flags {
        0 => 0,
        PVTCE_PARENT_START => 1,
        PVTCE_PARENT_STOP => 2,
        _ => return Err(EINVAL),
    };
    [req.put, req.indirect, req.stuff, req.get] = ffi::parent_count(flags)?;
    w.write(&req)
}

fn l1_time(arg: usize) -> Result {
    let (mut req, mut w) = read_checked::<pvtce_l1_time>(arg)?;
    check_head(req.argsz, 0, core::mem::size_of::<pvtce_l1_time>())?;
    let flags = match req.flags {
        0 => 0,
        PVTCE_L1_START => 1,
        f if f == PVTCE_L1_START | PVTCE_L1_NESTED => 5,
        PVTCE_L1_STOP => 2,
        _ => return Err(EINVAL),
    };
    let sums = ffi::l1_time(flags)?;
    for (k, s) in req.kind.iter_mut().zip(sums) {
        *k = pvtce_l1_exits { exits: s[0], l1_ticks: s[1], hcall_ticks: s[2], nested_exits: s[3], nested_ticks: s[4] };
    }
    w.write(&req)
}

/// Registers the backend on creation (unless loaded with `backend=0`), unregisters it on drop.
pub(crate) struct Backend {
    registered: bool,
}

impl Backend {
    /// # Safety
    /// Called once, from the module's init.
    pub(crate) unsafe fn register() -> Result<Backend> {
        // SAFETY: called once from the module's init (the caller's guarantee), before the backend is
        // registered.
        unsafe { registry::init() };
        let registered = crate::module_parameters::backend.value();
        if registered {
            ffi::register_backend()?;
        }
        Ok(Backend { registered })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // No window can be left: each window's file holds a reference on the module.
        if self.registered {
            ffi::unregister_backend();
        }
        registry::clear_lookup();
        // A benchmark that did not stop its parent-hypercall count or its L1 timing: the probes must go
        // before the module.
        let _ = ffi::parent_count(2);
        let _ = ffi::l1_time(2);
    }
}

/// The mode a new window gets, for the module's load message.
pub(crate) fn mode_name() -> &'static str {
    match MODE.load(Relaxed) {
        PVTCE_MODE_PVTCE => "pvtce",
        PVTCE_MODE_USERSPACE => "none (userspace)",
        _ => "builtin",
    }
}
