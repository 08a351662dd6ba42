//! One error type for the glue: a variant per operation, the errno as its source, addresses in hex.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("ioctl {name} on {what}")]
    Ioctl {
        name: &'static str,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("mmap of {len:#x} bytes for {what}")]
    Mmap {
        what: &'static str,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("sysfs {path}")]
    Sysfs {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("VFIO group {group} is not viable (a device of the group is bound to a host driver)")]
    GroupNotViable { group: u32 },
    #[error("VFIO API version {0}, expected 0")]
    ApiVersion(i32),
    #[error("the VFIO container does not support the sPAPR TCE v2 IOMMU")]
    NoSpaprV2,
    #[error("no PCI device {vendor:04x}:{device:04x} found")]
    NoDevice { vendor: u16, device: u16 },
    #[error("guest address range {gpa:#x}+{len:#x} is outside guest memory of {size:#x} bytes")]
    GuestRange { gpa: u64, len: u64, size: u64 },
    #[error("vCPU: unexpected exit reason {0}")]
    UnexpectedExit(u32),
    #[error("VFIO_IOMMU_MAP_DMA of {size:#x} bytes at iova {iova:#x} from vaddr {vaddr:#x}")]
    MapDma {
        iova: u64,
        size: u64,
        vaddr: u64,
        #[source]
        source: io::Error,
    },
    #[error("VFIO_IOMMU_UNMAP_DMA of {size:#x} bytes at iova {iova:#x}")]
    UnmapDma {
        iova: u64,
        size: u64,
        #[source]
        source: io::Error,
    },
    #[error("VFIO_EEH_PE_OP op {op}")]
    EehPeOp {
        op: u32,
        #[source]
        source: io::Error,
    },
    #[error("VFIO_IOMMU_SPAPR_TCE_CREATE page shift {page_shift}, {window_size:#x} bytes")]
    CreateHostWindow {
        page_shift: u32,
        window_size: u64,
        #[source]
        source: io::Error,
    },
    #[error("VFIO_IOMMU_SPAPR_TCE_REMOVE at {start:#x}")]
    RemoveHostWindow {
        start: u64,
        #[source]
        source: io::Error,
    },
    #[error("the host placed a {page_shift}-shift window at {got:#x}, the guest window is at {want:#x}")]
    HostWindowPlacement { page_shift: u32, want: u64, got: u64 },
    #[error("PVTCE_WINDOW_INFO on the table of LIOBN {liobn:#x}")]
    WindowInfo {
        liobn: u64,
        #[source]
        source: io::Error,
    },
    #[error("PVTCE_WINDOW_EXCHANGE on the table of LIOBN {liobn:#x}")]
    WindowExchange {
        liobn: u64,
        #[source]
        source: io::Error,
    },
    #[error("mmap of the TCE table of LIOBN {liobn:#x} ({len:#x} bytes)")]
    TableMap {
        liobn: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("RTAS buffer at {gpa:#x}: {why}")]
    RtasArgs { gpa: u64, why: &'static str },
    #[error("device region {index} access at {offset:#x}")]
    Region {
        index: u32,
        offset: u64,
        #[source]
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
