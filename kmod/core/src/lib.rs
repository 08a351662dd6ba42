//! pvtce-core: the PAPR TCE semantics engine. `#![no_std]`, allocation-free, no `unsafe`.
//!
//! The kernel module includes these modules by source (`#[path]`), so modules refer to each other with
//! `super::`, never `crate::`.
//!
//! - [`types`]: spec words (`Liobn`, `Ioba`, `Tce`, `PageShift`, `WindowGeometry`).
//! - [`error`]: PAPR hypercall and RTAS return codes.
//! - [`table`]: the sparse multi-level guest table and the [`table::PageStore`] / `NeedAlloc` protocol.
//! - [`host`]: the [`host::Host`] trait (memslots, preregistered memory, host IOMMU tables) and links.
//! - [`window`]: a window and its four hypercalls, each applied whole or not at all.
//! - [`hcall`]: the dispatcher by hypercall number.
//! - [`ddw`]: dynamic DMA window policy (RTAS query/create/remove/reset).
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod args;
pub mod ddw;
pub mod error;
pub mod hcall;
pub mod host;
pub mod table;
pub mod types;
pub mod window;
