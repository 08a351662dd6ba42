//! VFIO sPAPR v2: container, groups, devices, and sysfs helpers to bind a PCI device to vfio-pci.
//! vfio-bindings has the structs but no ioctl numbers, and vfio-ioctls is Type1 only.

use crate::error::{Error, Result};
use crate::sys::{self, vfio_iommu_spapr_tce_create, vfio_iommu_type1_dma_map};
use crate::sys::{VFIO_SPAPR_TCE_v2_IOMMU, VFIO_PCI_CONFIG_REGION_INDEX};
use crate::sys::{VFIO_API_VERSION, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_GROUP_FLAGS_VIABLE};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

fn verr(name: &'static str, what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Ioctl { name, what, source }
}

fn open_rw(path: &str) -> Result<File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|source| Error::Open { path: path.into(), source })
}

fn sysfs_write(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| Error::Sysfs { path: path.into(), source })
}

/// Finds the first PCI device with this vendor:device id; returns its address (e.g. "0001:00:00.0").
pub fn find_pci(vendor: u16, device: u16) -> Result<String> {
    let dir = "/sys/bus/pci/devices";
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Sysfs { path: dir.into(), source })?;
    let mut found: Vec<String> = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let v = std::fs::read_to_string(p.join("vendor")).unwrap_or_default();
        let d = std::fs::read_to_string(p.join("device")).unwrap_or_default();
        if v.trim() == format!("0x{vendor:04x}") && d.trim() == format!("0x{device:04x}") {
            found.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    found.sort();
    found.into_iter().next().ok_or(Error::NoDevice { vendor, device })
}

/// Binds a PCI device to vfio-pci (driver_override + drivers_probe), unbinding any current driver first.
pub fn bind_vfio_pci(bdf: &str) -> Result<()> {
    let dev = format!("/sys/bus/pci/devices/{bdf}");
    if let Ok(drv) = std::fs::read_link(format!("{dev}/driver")) {
        if drv.file_name().is_some_and(|n| n == "vfio-pci") {
            return Ok(());
        }
        sysfs_write(&format!("{dev}/driver/unbind"), bdf)?;
    }
    sysfs_write(&format!("{dev}/driver_override"), "vfio-pci")?;
    sysfs_write("/sys/bus/pci/drivers_probe", bdf)
}

/// Unbinds a PCI device from its driver (used by the tests that unbind while linked).
pub fn unbind(bdf: &str) -> Result<()> {
    sysfs_write(&format!("/sys/bus/pci/devices/{bdf}/driver/unbind"), bdf)
}

/// The IOMMU group number of a PCI device.
pub fn iommu_group(bdf: &str) -> Result<u32> {
    let p = format!("/sys/bus/pci/devices/{bdf}/iommu_group");
    let l = std::fs::read_link(&p).map_err(|source| Error::Sysfs { path: p.clone(), source })?;
    l.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Sysfs { path: p, source: std::io::Error::other("not a group number") })
}

pub struct Container {
    file: File,
}

/// What VFIO_IOMMU_SPAPR_TCE_GET_INFO reports.
#[derive(Debug, Clone, Copy)]
pub struct SpaprInfo {
    pub dma32_start: u32,
    pub dma32_size: u32,
    pub flags: u32,
    pub pgsizes: u64,
    pub max_windows: u32,
    pub levels: u32,
}

impl Container {
    pub fn open() -> Result<Self> {
        let file = open_rw("/dev/vfio/vfio")?;
        let v = sys::vfio_get_api_version(file.as_fd()).map_err(verr("VFIO_GET_API_VERSION", "container"))?;
        if v != VFIO_API_VERSION as i32 {
            return Err(Error::ApiVersion(v));
        }
        let ok = sys::vfio_check_extension(file.as_fd(), VFIO_SPAPR_TCE_v2_IOMMU)
            .map_err(verr("VFIO_CHECK_EXTENSION", "container"))?;
        if ok != 1 {
            return Err(Error::NoSpaprV2);
        }
        Ok(Container { file })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Selects the sPAPR v2 IOMMU; needs at least one group attached.
    pub fn set_spapr_v2(&self) -> Result<()> {
        sys::vfio_set_iommu(self.fd(), VFIO_SPAPR_TCE_v2_IOMMU).map_err(verr("VFIO_SET_IOMMU", "container"))
    }

    pub fn info(&self) -> Result<SpaprInfo> {
        let i = sys::vfio_iommu_spapr_tce_get_info(self.fd())
            .map_err(verr("VFIO_IOMMU_SPAPR_TCE_GET_INFO", "container"))?;
        Ok(SpaprInfo {
            dma32_start: i.dma32_window_start,
            dma32_size: i.dma32_window_size,
            flags: i.flags,
            pgsizes: i.ddw.pgsizes,
            max_windows: i.ddw.max_dynamic_windows_supported,
            levels: i.ddw.levels,
        })
    }

    /// Pins `[vaddr, vaddr+size)` once (preregistration); hypercalls then translate without pinning.
    pub fn register_memory(&self, vaddr: u64, size: u64) -> Result<()> {
        sys::vfio_iommu_spapr_register_memory(self.fd(), vaddr, size)
            .map_err(verr("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", "container"))
    }

    /// Creates a host DMA window. Returns its bus address.
    ///
    /// On a container whose group was just attached, the kernel first creates the pending default window
    /// (4K pages, the 32-bit window's size; `def_window_pending` in vfio_iommu_spapr_tce.c) in slot 0, so the
    /// first call makes two windows: the default one at bus 0 and the requested one in slot 1 (1 << 59 on
    /// pseries). [`Container::drop_pending_default`] first makes the first call create exactly one window.
    pub fn create_window(&self, page_shift: u32, window_size: u64, levels: u32) -> Result<u64> {
        let mut c = vfio_iommu_spapr_tce_create { page_shift, window_size, levels, ..Default::default() };
        sys::vfio_iommu_spapr_tce_create(self.fd(), &mut c).map_err(|source| Error::CreateHostWindow {
            page_shift,
            window_size,
            source,
        })?;
        Ok(c.start_addr)
    }

    pub fn remove_window(&self, start_addr: u64) -> Result<()> {
        sys::vfio_iommu_spapr_tce_remove(self.fd(), start_addr)
            .map_err(|source| Error::RemoveHostWindow { start: start_addr, source })
    }

    /// Cancels the default window the kernel would create on the first window or map ioctl
    /// (`VFIO_IOMMU_SPAPR_TCE_REMOVE` at bus 0 while it is pending is exactly that, as QEMU does).
    pub fn drop_pending_default(&self) -> Result<()> {
        self.remove_window(0)
    }

    /// Maps `[vaddr, vaddr + size)` (preregistered memory) at `iova` (VFIO_IOMMU_MAP_DMA): writes the host
    /// table entries of the window holding `iova`. Outside every window: ENXIO.
    ///
    /// # Safety
    /// `[vaddr, vaddr + size)` must be memory given to the device (guest RAM such as
    /// [`crate::mem::GuestMem`]): no Rust reference may cover it while the mapping lasts, since the device
    /// may write it at any time.
    pub unsafe fn map_dma(&self, vaddr: u64, iova: u64, size: u64, read: bool, write: bool) -> Result<()> {
        let mut flags = 0;
        if read {
            flags |= VFIO_DMA_MAP_FLAG_READ;
        }
        if write {
            flags |= VFIO_DMA_MAP_FLAG_WRITE;
        }
        let m = vfio_iommu_type1_dma_map {
            argsz: std::mem::size_of::<vfio_iommu_type1_dma_map>() as u32,
            flags,
            vaddr,
            iova,
            size,
        };
        // SAFETY: what the device may reach is the caller's promise (this function's `# Safety`).
        unsafe { sys::vfio_iommu_map_dma(self.fd(), &m) }.map_err(|source| Error::MapDma { iova, size, vaddr, source })
    }

    /// Clears the host table entries of `[iova, iova + size)` (VFIO_IOMMU_UNMAP_DMA).
    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<()> {
        sys::vfio_iommu_unmap_dma(self.fd(), iova, size).map_err(|source| Error::UnmapDma { iova, size, source })
    }

    /// VFIO_EEH_PE_OP on the container (its single group's PE). Emulated host bridges have no EEH: ENODEV.
    pub fn eeh_pe_op(&self, op: u32) -> Result<i32> {
        sys::vfio_eeh_pe_op(self.fd(), op).map_err(|source| Error::EehPeOp { op, source })
    }

    pub fn unregister_memory(&self, vaddr: u64, size: u64) -> Result<()> {
        sys::vfio_iommu_spapr_unregister_memory(self.fd(), vaddr, size)
            .map_err(verr("VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY", "container"))
    }
}

pub struct Group {
    pub id: u32,
    file: File,
}

impl Group {
    pub fn open(id: u32) -> Result<Self> {
        let file = open_rw(&format!("/dev/vfio/{id}"))?;
        let flags = sys::vfio_group_get_status(file.as_fd()).map_err(verr("VFIO_GROUP_GET_STATUS", "group"))?;
        if flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(Error::GroupNotViable { group: id });
        }
        Ok(Group { id, file })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub fn set_container(&self, c: &Container) -> Result<()> {
        sys::vfio_group_set_container(self.fd(), c.fd()).map_err(verr("VFIO_GROUP_SET_CONTAINER", "group"))
    }

    pub fn device(&self, bdf: &str) -> Result<Device> {
        let name = CString::new(bdf).map_err(|_| Error::NoDevice { vendor: 0, device: 0 })?;
        let fd = sys::vfio_group_get_device_fd(self.fd(), &name).map_err(verr("VFIO_GROUP_GET_DEVICE_FD", "group"))?;
        Ok(Device { file: File::from(fd) })
    }
}

pub struct Device {
    file: File,
}

#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub index: u32,
    pub size: u64,
    pub offset: u64,
}

impl Device {
    pub fn region(&self, index: u32) -> Result<Region> {
        let r = sys::vfio_device_get_region_info(self.file.as_fd(), index)
            .map_err(verr("VFIO_DEVICE_GET_REGION_INFO", "device"))?;
        Ok(Region { index, size: r.size, offset: r.offset })
    }

    pub fn write(&self, r: &Region, off: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, r.offset + off).map_err(|source| Error::Region {
            index: r.index,
            offset: off,
            source,
        })
    }

    pub fn read(&self, r: &Region, off: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, r.offset + off).map_err(|source| Error::Region {
            index: r.index,
            offset: off,
            source,
        })
    }

    /// Sets Memory Space and Bus Master in the PCI command register.
    pub fn enable_bus_master(&self) -> Result<()> {
        let cfg = self.region(VFIO_PCI_CONFIG_REGION_INDEX)?;
        let mut b = [0u8; 2];
        self.read(&cfg, 4, &mut b)?;
        let cmd = u16::from_le_bytes(b) | 0x2 | 0x4;
        self.write(&cfg, 4, &cmd.to_le_bytes())
    }
}

/// Owns what a test set up so that it is released in order on every path.
pub struct Owned {
    pub container: Container,
    pub group: Group,
    pub device: Device,
    pub bdf: String,
}

/// Binds `bdf` to vfio-pci, opens its group into a new sPAPR v2 container, and opens the device.
pub fn setup(bdf: &str) -> Result<Owned> {
    bind_vfio_pci(bdf)?;
    let gid = iommu_group(bdf)?;
    // vfio-pci creates /dev/vfio/N asynchronously through devtmpfs; wait a moment for it.
    for _ in 0..50 {
        if Path::new(&format!("/dev/vfio/{gid}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let container = Container::open()?;
    let group = Group::open(gid)?;
    group.set_container(&container)?;
    container.set_spapr_v2()?;
    let device = group.device(bdf)?;
    Ok(Owned { container, group, device, bdf: bdf.to_string() })
}

pub type Fd = OwnedFd;
