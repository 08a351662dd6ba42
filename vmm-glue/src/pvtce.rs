//! pvtce.ko's own ioctls, for VMMs, the `pvtce` CLI, the tests and the benchmark: the control device
//! `/dev/pvtce` ([`Control`]) and the two ioctls on a window's table fd ([`window_info`],
//! [`window_exchange`]). The raw calls are in [`crate::sys`]; the ABI is `pvtce-uapi`.

use crate::error::{Error, Result};
use crate::sys;
use crate::vfio::Group;
use pvtce_uapi::{pvtce_window_info, PVTCE_HOST_READ_MAX, PVTCE_WINDOWS_MAX};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

/// The control device's path.
pub const PATH: &str = "/dev/pvtce";

fn cerr(name: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Ioctl { name, what: PATH, source }
}

/// Which implementation creates new windows (`PVTCE_SET_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Linux's built-in C path.
    Builtin,
    /// pvtce.ko (its default once loaded).
    Pvtce,
    /// No in-kernel window: `KVM_CREATE_SPAPR_TCE_64` fails, so the VMM keeps its own tables (QEMU falls back
    /// to them on any error of that ioctl) and handles every TCE hypercall itself.
    Userspace,
}

impl Mode {
    fn raw(self) -> u32 {
        match self {
            Mode::Builtin => pvtce_uapi::PVTCE_MODE_BUILTIN,
            Mode::Pvtce => pvtce_uapi::PVTCE_MODE_PVTCE,
            Mode::Userspace => pvtce_uapi::PVTCE_MODE_USERSPACE,
        }
    }

    fn from_raw(m: u32) -> Option<Mode> {
        match m {
            pvtce_uapi::PVTCE_MODE_BUILTIN => Some(Mode::Builtin),
            pvtce_uapi::PVTCE_MODE_PVTCE => Some(Mode::Pvtce),
            pvtce_uapi::PVTCE_MODE_USERSPACE => Some(Mode::Userspace),
            _ => None,
        }
    }
}

/// `/dev/pvtce`, open.
pub struct Control {
    file: File,
}

impl Control {
    /// Opens `/dev/pvtce`; `Ok(None)` when there is no such file (pvtce.ko is not loaded).
    pub fn open() -> Result<Option<Control>> {
        match OpenOptions::new().read(true).write(true).open(PATH) {
            Ok(file) => Ok(Some(Control { file })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Open { path: PATH.into(), source }),
        }
    }

    /// [`Control::open`] where the device must be there.
    pub fn open_loaded() -> Result<Control> {
        Control::open()?.ok_or_else(|| Error::Open { path: PATH.into(), source: io::ErrorKind::NotFound.into() })
    }

    /// Makes `mode` the implementation of new windows; returns the previous one.
    pub fn set_mode(&self, mode: Mode) -> Result<Mode> {
        let old = sys::pvtce_set_mode(self.file.as_fd(), mode.raw()).map_err(cerr("PVTCE_SET_MODE"))?;
        Mode::from_raw(old).ok_or(Error::Ioctl {
            name: "PVTCE_SET_MODE",
            what: PATH,
            source: io::Error::other(format!("unknown old mode {old}")),
        })
    }

    /// `count` hardware entries (at most [`PVTCE_HOST_READ_MAX`]) from `first` (absolute) of `group`'s host
    /// table `table` (0 or 1).
    pub fn host_read(&self, group: &Group, table: u32, first: u64, count: usize) -> Result<Vec<u64>> {
        if count > PVTCE_HOST_READ_MAX as usize {
            return Err(cerr("PVTCE_HOST_READ")(io::Error::from_raw_os_error(libc::EINVAL)));
        }
        let mut out = vec![0u64; count];
        sys::pvtce_host_read(self.file.as_fd(), group.fd(), table, first, &mut out).map_err(cerr("PVTCE_HOST_READ"))?;
        Ok(out)
    }

    /// How many windows pvtce holds, over every VM.
    pub fn window_count(&self) -> Result<u32> {
        sys::pvtce_list_windows(self.file.as_fd(), &mut []).map_err(cerr("PVTCE_LIST_WINDOWS"))
    }

    /// Every window pvtce holds with its statistics (at most [`PVTCE_WINDOWS_MAX`]).
    pub fn windows(&self) -> Result<Vec<pvtce_window_info>> {
        let mut entries = vec![pvtce_window_info::default(); 64];
        loop {
            let n = sys::pvtce_list_windows(self.file.as_fd(), &mut entries).map_err(cerr("PVTCE_LIST_WINDOWS"))?;
            let n = n as usize;
            // More windows than room (new ones may appear between calls): grow and ask again.
            if n <= entries.len() || entries.len() >= PVTCE_WINDOWS_MAX as usize {
                entries.truncate(n);
                return Ok(entries);
            }
            entries.resize(n.min(PVTCE_WINDOWS_MAX as usize), pvtce_window_info::default());
        }
    }
}

/// `PVTCE_WINDOW_INFO` on the table fd of window `liobn`. `Ok(None)` when the fd answers ENOTTY: the window
/// was created by Linux's own code, not by pvtce.
pub fn window_info(table: BorrowedFd<'_>, liobn: u64) -> Result<Option<pvtce_window_info>> {
    match sys::pvtce_window_info_get(table) {
        Ok(i) => Ok(Some(i)),
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => Ok(None),
        Err(source) => Err(Error::WindowInfo { liobn, source }),
    }
}

/// `PVTCE_WINDOW_EXCHANGE` on the table fd of window `liobn`, pvtce's bare host-table update: maps `count`
/// window entries from `first` to this process's preregistered pages from `ua`, then clears them; returns
/// the timebase ticks of the two passes, each `count` exchanges and one invalidation.
pub fn window_exchange(table: BorrowedFd<'_>, liobn: u64, first: u64, count: u64, ua: u64) -> Result<(u64, u64)> {
    let mut x = pvtce_uapi::pvtce_exchange { first, count, ua, ..Default::default() };
    sys::pvtce_window_exchange(table, &mut x).map_err(|source| Error::WindowExchange { liobn, source })?;
    Ok((x.map_ticks, x.unmap_ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip() {
        for m in [Mode::Builtin, Mode::Pvtce] {
            assert_eq!(Mode::from_raw(m.raw()), Some(m));
        }
        assert_eq!(Mode::from_raw(7), None);
    }

    // qemu-user (the ppc64le runner) answers the pvtce ioctls ENOSYS itself, so this runs on the host only.
    #[cfg(not(target_arch = "powerpc64"))]
    #[test]
    fn a_file_that_is_no_pvtce_table_has_no_info() {
        let f = File::open("/dev/null").unwrap();
        assert!(window_info(f.as_fd(), 1).unwrap().is_none());
        match window_exchange(f.as_fd(), 0x42, 0, 1, 0) {
            Err(Error::WindowExchange { liobn: 0x42, source }) => assert_eq!(source.raw_os_error(), Some(libc::ENOTTY)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
