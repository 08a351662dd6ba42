// SPDX-License-Identifier: GPL-2.0

//! pvtce: PAPR TCE hypercalls (H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE, H_GET_TCE) handled in the host
//! kernel, written straight into the host IOMMU tables of the VFIO group linked to a guest DMA window.
//!
//! This is the crate root. For now it only loads, reports the host page size and unloads.

use kernel::prelude::*;

module! {
    type: Pvtce,
    name: "pvtce",
    authors: ["pvtce developers"],
    description: "PAPR TCE hypercalls handled in the host kernel",
    license: "GPL",
}

struct Pvtce;

impl kernel::Module for Pvtce {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("loaded (PAGE_SIZE {})\n", kernel::page::PAGE_SIZE);
        Ok(Pvtce)
    }
}

impl Drop for Pvtce {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
