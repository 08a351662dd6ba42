//! A PE's guest DMA windows made real: for each window the policy names, a host window through VFIO at the
//! same bus address and page size, and either a kernel window (KVM_CREATE_SPAPR_TCE_64, linked to the
//! group) or a window the userspace [`Fallback`] answers.
//!
//! Host window placement on a pseries L1 (measured, see docs/vmm-glue.md): taking the group removes its
//! windows; the container then has a *pending* default window that the first create or map ioctl makes in
//! slot 0 (4K pages, bus 0, the 32-bit size). [`HostPe::open`] cancels it, so windows are created in the
//! order the guest asks for them: the first in slot 0 lands at bus 0 when it is the default geometry (the
//! pseries code resets the PE to get the firmware's default window back), any other at 1 << 59 (the
//! firmware's DDW address), which is where pvtce-core's policy puts the guest's windows too.

use crate::error::{Error, Result};
use crate::fallback::Fallback;
use crate::kvm::{self, VfioDevice, Vm};
use crate::mem::GuestMem;
use crate::rtas::DdwBackend;
use crate::vfio::{Container, Group};
use pvtce_core::ddw::Created;
use pvtce_core::host::{HostGeometry, HostTableId};
use pvtce_core::types::{Liobn, WindowGeometry};

/// Who answers a window's hypercalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// A kernel window linked to the group (Linux's C path, or pvtce.ko).
    Kernel,
    /// No kernel window: every hypercall exits and the fallback answers it, writing the host table with VFIO.
    Fallback,
}

/// One live window of the PE.
pub struct Window {
    pub liobn: Liobn,
    pub geometry: WindowGeometry,
    /// Bus address of the host window (equal to the guest window's).
    pub host_bus: u64,
    /// The kernel window, on the kernel path.
    pub kernel: Option<kvm::Window>,
}

/// The windows of one PE over KVM and a VFIO container.
pub struct HostPe<'a> {
    vm: &'a Vm,
    kdev: &'a VfioDevice,
    container: &'a Container,
    group: &'a Group,
    pub path: Path,
    pub live: Vec<Window>,
    pub fallback: Fallback<'a, &'a Container>,
    next_table: u32,
}

impl<'a> HostPe<'a> {
    /// Cancels the container's pending default window (see the module comment) and starts with no window.
    pub fn open(
        vm: &'a Vm,
        kdev: &'a VfioDevice,
        container: &'a Container,
        group: &'a Group,
        mem: &'a GuestMem,
        path: Path,
    ) -> Result<Self> {
        container.drop_pending_default()?;
        let host_shift = kvm::host_page_size().trailing_zeros();
        Ok(HostPe {
            vm,
            kdev,
            container,
            group,
            path,
            live: Vec::new(),
            fallback: Fallback::new(mem, container, host_shift),
            next_table: 0,
        })
    }

    pub fn window(&self, liobn: Liobn) -> Option<&Window> {
        self.live.iter().find(|w| w.liobn == liobn)
    }

    fn make(&mut self, w: &Created, host_bus: u64) -> Result<Option<kvm::Window>> {
        let g = w.geometry;
        let shift = g.page_shift().get();
        match self.path {
            Path::Kernel => {
                let table = self.vm.create_window(w.liobn.0, shift, g.offset(), g.size())?;
                self.kdev.link_tce(self.group.fd(), &table)?;
                Ok(Some(table))
            }
            Path::Fallback => {
                self.next_table += 1;
                let id = HostTableId(self.next_table);
                let hg = HostGeometry { page_shift: g.page_shift(), offset: host_bus >> shift, size: g.size() };
                self.fallback.add_window(w.liobn, g, Some((id, hg))).map_err(|e| Error::HostWindowPlacement {
                    page_shift: shift,
                    want: g.bus_start(),
                    got: host_bus | u64::from(matches!(e, crate::fallback::AddError::Duplicate)),
                })?;
                Ok(None)
            }
        }
    }
}

impl DdwBackend for HostPe<'_> {
    fn create(&mut self, w: &Created) -> Result<()> {
        let g = w.geometry;
        let shift = g.page_shift().get();
        let size = g.bus_len().ok_or(Error::HostWindowPlacement { page_shift: shift, want: g.bus_start(), got: 0 })?;
        let host_bus = self.container.create_window(shift, size, 1)?;
        if host_bus != g.bus_start() {
            let _ = self.container.remove_window(host_bus);
            return Err(Error::HostWindowPlacement { page_shift: shift, want: g.bus_start(), got: host_bus });
        }
        match self.make(w, host_bus) {
            Ok(kernel) => {
                self.live.push(Window { liobn: w.liobn, geometry: g, host_bus, kernel });
                Ok(())
            }
            Err(e) => {
                let _ = self.container.remove_window(host_bus);
                Err(e)
            }
        }
    }

    fn remove(&mut self, liobn: Liobn) -> Result<()> {
        let Some(i) = self.live.iter().position(|w| w.liobn == liobn) else {
            return Ok(());
        };
        let w = self.live.swap_remove(i);
        // Closing the table fd ends the kernel window and its link; then the host window goes (VFIO clears
        // its entries).
        drop(w.kernel);
        self.fallback.remove_window(liobn);
        self.container.remove_window(w.host_bus)
    }
}
