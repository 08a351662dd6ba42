//! Dynamic DMA window policy (RTAS `ibm,query-pe-dma-window`, `ibm,create-pe-dma-window`,
//! `ibm,remove-pe-dma-window`, `ibm,reset-pe-dma-window`), following QEMU `hw/ppc/spapr_rtas_ddw.c`.
//! Pure policy: the VMM translates RTAS arguments, calls these, then creates or destroys the windows
//! (KVM_CREATE_SPAPR_TCE_64, VFIO) the answer names.

use super::error::RtasStatus;
use super::types::{Liobn, PageShift, WindowGeometry};

/// Windows per PE (QEMU `SPAPR_PCI_DMA_MAX_WINDOWS`).
pub const MAX_WINDOWS: usize = 2;
/// Bus address of the default 32-bit window.
pub const DMA32_BUS: u64 = 0;
/// Size of the default 32-bit window: 1 GiB.
pub const DMA32_SIZE: u64 = 1 << 30;
/// Bus address of the 64-bit window (QEMU `dma64_win_addr`).
pub const DMA64_BUS: u64 = 1 << 59;
/// QEMU's largest-block answer (`0x80000000`).
pub const LARGEST_BLOCK: u32 = 0x8000_0000;

/// RTAS page-size mask bits (LoPAPR), with the page shift each stands for.
pub const PAGE_SIZE_BITS: [(u32, u32); 9] = [
    (12, 0x1),   // 4K
    (16, 0x2),   // 64K
    (24, 0x4),   // 16M
    (25, 0x8),   // 32M
    (26, 0x10),  // 64M
    (27, 0x20),  // 128M
    (28, 0x40),  // 256M
    (34, 0x80),  // 16G
    (21, 0x100), // 2M
];

/// QEMU's default `pgsz` property: 4K | 64K | 2M | 16M as a mask of page shifts (query mask 0x107).
pub const QEMU_DEFAULT_PAGE_SHIFTS: u64 = (1 << 12) | (1 << 16) | (1 << 21) | (1 << 24);

/// The RTAS query mask for a mask of supported page shifts (bit n = 2^n-byte pages).
pub fn query_mask(page_shifts: u64) -> u32 {
    PAGE_SIZE_BITS.iter().filter(|(shift, _)| page_shifts & (1u64 << shift) != 0).fold(0, |mask, (_, bit)| mask | bit)
}

/// Fixed facts of one PE (one PHB in QEMU's model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeConfig {
    /// The two LIOBNs; window slot `i` always uses `liobns[i]`.
    pub liobns: [Liobn; MAX_WINDOWS],
    /// Supported page shifts, bit n = 2^n-byte pages.
    pub page_shifts: u64,
    /// Whether DDW is enabled (QEMU `ddw` property); when not, every call is a parameter error.
    pub ddw_enabled: bool,
}

impl PeConfig {
    /// QEMU's defaults for the given LIOBNs.
    pub fn qemu_default(liobns: [Liobn; MAX_WINDOWS]) -> PeConfig {
        PeConfig { liobns, page_shifts: QEMU_DEFAULT_PAGE_SHIFTS, ddw_enabled: true }
    }
}

/// The answer to `ibm,query-pe-dma-window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    /// Windows that can still be created.
    pub windows_available: u32,
    /// Largest block (QEMU answers a constant).
    pub largest_block: u32,
    /// Supported page sizes as the RTAS mask.
    pub page_size_mask: u32,
    /// DMA migration mask (not supported: 0).
    pub migration_mask: u32,
}

/// A window the VMM must create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Created {
    /// Its LIOBN.
    pub liobn: Liobn,
    /// Its geometry.
    pub geometry: WindowGeometry,
}

impl Created {
    /// Bus offset high word (RTAS return 2).
    pub fn bus_hi(&self) -> u32 {
        (self.geometry.bus_start() >> 32) as u32
    }

    /// Bus offset low word (RTAS return 3).
    pub fn bus_lo(&self) -> u32 {
        self.geometry.bus_start() as u32
    }
}

/// What `reset` asks the VMM to do: remove these windows, then create the default one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reset {
    /// Windows to remove (those that existed).
    pub removed: [Option<Liobn>; MAX_WINDOWS],
    /// The default 32-bit window to create.
    pub default: Created,
}

/// DMA window state of one PE: up to two windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pe {
    config: PeConfig,
    windows: [Option<WindowGeometry>; MAX_WINDOWS],
}

/// The default 32-bit window: bus 0, 1 GiB, 4 KiB pages.
pub fn default_window() -> WindowGeometry {
    let shift = PageShift::SZ_4K;
    WindowGeometry::new_const(shift, DMA32_BUS >> shift.get(), DMA32_SIZE >> shift.get())
}

impl Pe {
    /// A PE as after reset: the default window in slot 0.
    pub fn new(config: PeConfig) -> Pe {
        let mut pe = Pe { config, windows: [None; MAX_WINDOWS] };
        pe.windows[0] = Some(default_window());
        pe
    }

    /// The configuration.
    pub fn config(&self) -> &PeConfig {
        &self.config
    }

    /// The windows by slot.
    pub fn windows(&self) -> impl Iterator<Item = Created> + '_ {
        self.config
            .liobns
            .iter()
            .zip(self.windows.iter())
            .filter_map(|(liobn, w)| w.map(|geometry| Created { liobn: *liobn, geometry }))
    }

    /// The window named `liobn`, if active.
    pub fn window(&self, liobn: Liobn) -> Option<WindowGeometry> {
        self.windows().find(|c| c.liobn == liobn).map(|c| c.geometry)
    }

    fn active(&self) -> usize {
        self.windows.iter().filter(|w| w.is_some()).count()
    }

    /// `ibm,query-pe-dma-window`.
    pub fn query(&self) -> Result<Query, RtasStatus> {
        if !self.config.ddw_enabled {
            return Err(RtasStatus::ParamError);
        }
        Ok(Query {
            windows_available: (MAX_WINDOWS - self.active()) as u32,
            largest_block: LARGEST_BLOCK,
            page_size_mask: query_mask(self.config.page_shifts),
            migration_mask: 0,
        })
    }

    /// `ibm,create-pe-dma-window`: page shift not supported or `window_shift < page_shift` ->
    /// `ParamError`; no free window -> `HwError`. The first window goes to the 32-bit bus address when no
    /// window is active, else to [`DMA64_BUS`] (QEMU). A window that cannot be expressed (more than 2^63
    /// pages or past the end of the bus) is a `ParamError` here (QEMU would fail to allocate it).
    pub fn create(&mut self, page_shift: u32, window_shift: u32) -> Result<Created, RtasStatus> {
        if !self.config.ddw_enabled {
            return Err(RtasStatus::ParamError);
        }
        let supported = page_shift < 64 && self.config.page_shifts & (1u64 << page_shift) != 0;
        if !supported || window_shift < page_shift {
            return Err(RtasStatus::ParamError);
        }
        let active = self.active();
        let Some(slot) = self.windows.iter().position(|w| w.is_none()) else {
            return Err(RtasStatus::HwError);
        };
        let shift = PageShift::new(page_shift).ok_or(RtasStatus::ParamError)?;
        let bus = if active == 0 { DMA32_BUS } else { DMA64_BUS };
        let pages = 1u64.checked_shl(window_shift - page_shift).filter(|_| window_shift - page_shift < 64);
        let pages = pages.ok_or(RtasStatus::ParamError)?;
        let geometry = WindowGeometry::new(shift, bus >> page_shift, pages).map_err(|_| RtasStatus::ParamError)?;
        let liobn = *self.config.liobns.get(slot).ok_or(RtasStatus::HwError)?;
        if let Some(w) = self.windows.get_mut(slot) {
            *w = Some(geometry);
        }
        Ok(Created { liobn, geometry })
    }

    /// `ibm,remove-pe-dma-window`: unknown or inactive LIOBN -> `ParamError`.
    pub fn remove(&mut self, liobn: Liobn) -> Result<(), RtasStatus> {
        if !self.config.ddw_enabled {
            return Err(RtasStatus::ParamError);
        }
        let slot = self.config.liobns.iter().position(|l| *l == liobn).ok_or(RtasStatus::ParamError)?;
        match self.windows.get_mut(slot) {
            Some(w @ Some(_)) => {
                *w = None;
                Ok(())
            }
            _ => Err(RtasStatus::ParamError),
        }
    }

    /// `ibm,reset-pe-dma-window`: removes every window and restores the default one in slot 0.
    pub fn reset(&mut self) -> Result<Reset, RtasStatus> {
        if !self.config.ddw_enabled {
            return Err(RtasStatus::ParamError);
        }
        let mut removed = [None; MAX_WINDOWS];
        for ((r, w), liobn) in removed.iter_mut().zip(self.windows.iter_mut()).zip(self.config.liobns.iter()) {
            if w.take().is_some() {
                *r = Some(*liobn);
            }
        }
        let geometry = default_window();
        self.windows[0] = Some(geometry);
        Ok(Reset { removed, default: Created { liobn: self.config.liobns[0], geometry } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_default_mask_is_0x107() {
        // QEMU spapr_pci.c pgsz default 4K|64K|2M|16M -> RTAS mask 0x1|0x2|0x100|0x4.
        assert_eq!(query_mask(QEMU_DEFAULT_PAGE_SHIFTS), 0x107);
        assert_eq!(query_mask(1 << 34), 0x80);
    }

    #[test]
    fn create_query_remove_reset() {
        let mut pe = Pe::new(PeConfig::qemu_default([Liobn(1), Liobn(2)]));
        let d = default_window();
        assert_eq!((d.bus_start(), d.bus_len(), d.page_shift()), (0, Some(1 << 30), PageShift::SZ_4K));
        assert_eq!(pe.query().map(|q| q.windows_available), Ok(1));
        let c = pe.create(16, 40).unwrap();
        assert_eq!((c.liobn, c.geometry.bus_start(), c.geometry.size()), (Liobn(2), DMA64_BUS, 1 << 24));
        assert_eq!(pe.query().map(|q| q.windows_available), Ok(0));
        assert_eq!(pe.remove(Liobn(2)), Ok(()));
        let r = pe.reset().unwrap();
        assert_eq!(r.removed, [Some(Liobn(1)), None]);
        assert_eq!(r.default.liobn, Liobn(1));
        assert_eq!(pe.window(Liobn(1)), Some(default_window()));
    }
}
