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
    #[error("edu: {0}")]
    Edu(String),
    #[error("vCPU: unexpected exit reason {0}")]
    UnexpectedExit(u32),
    #[error("device region {index} access at {offset:#x}")]
    Region {
        index: u32,
        offset: u64,
        #[source]
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
