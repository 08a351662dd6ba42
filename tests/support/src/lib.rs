//! pvtce-test-support: the fixtures of the in-VM tests, kept out of the VMM library (`pvtce-vmm-glue`).
//!
//! - [`asm`] and [`payload`]: the L2 guest program that issues hypercalls from a table in guest memory.
//! - [`edu`]: QEMU's `edu` test device driven through VFIO, used to prove DMA mappings.

pub mod asm;
pub mod edu;
pub mod payload;

/// What a fixture can fail with: the VMM library's error, or the fixture's own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Glue(#[from] pvtce_vmm_glue::Error),
    #[error("edu: {0}")]
    Edu(String),
    #[error("L2 touched unexpected MMIO {0:#x}")]
    UnexpectedMmio(u64),
}

pub type Result<T> = std::result::Result<T, Error>;
