//! The ioctl argument checks against a model written from the uAPI's rules in 128-bit arithmetic: the
//! argsz/flags head of pvtce's structs, KVM_CREATE_SPAPR_TCE_64's geometry (after Linux's own pre-check,
//! which runs first: patch 0003) and KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE's choice of host table. Shared by the
//! `args` fuzz target and the corpus replay (tests/args.rs).
// Every integration test includes `common`; only tests/args.rs and the fuzz target use this module.
#![allow(dead_code)]

use pvtce_core::args::head_ok;
use pvtce_core::host::{pick_group_table, HostGeometry, HostTableId, LinkError};
use pvtce_core::types::{PageShift, WindowGeometry};

/// KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE's choice among a group's tables.
pub type Pick = fn(&WindowGeometry, &[(HostTableId, HostGeometry)]) -> Result<HostTableId, LinkError>;

/// The implementation under test: pvtce-core's functions, or a broken one (to show the check fails).
pub struct Impl {
    pub head: fn(u32, u32, usize) -> bool,
    pub create: fn(u32, u64, u64) -> Option<WindowGeometry>,
    pub pick: Pick,
}

/// What pvtce.ko does for KVM_CREATE_SPAPR_TCE_64's (page_shift, offset, size) (kmod/registry.rs `create`).
fn core_create(shift: u32, offset: u64, size: u64) -> Option<WindowGeometry> {
    WindowGeometry::new(PageShift::new(shift)?, offset, size).ok()
}

pub const CORE: Impl = Impl { head: head_ok, create: core_create, pick: pick_group_table };

/// Reads little-endian integers off the input, zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u64(&mut self) -> u64 {
        let n = self.0.len().min(8);
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(b)
    }
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    /// A value near an edge that matters, or a raw one: 0, 1, MAX, `near` - 1, `near`, `near` + 1, raw.
    fn edgy(&mut self, near: u64) -> u64 {
        match self.u8() % 8 {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => near.wrapping_sub(1),
            4 => near,
            5 => near.wrapping_add(1),
            6 => self.u8() as u64,
            _ => self.u64(),
        }
    }
    fn shift(&mut self) -> u32 {
        match self.u8() % 4 {
            0 => [12, 16, 21, 24, 34][(self.u8() % 5) as usize],
            1 => [0, 11, 35, 63, 64][(self.u8() % 5) as usize],
            _ => self.u8() as u32 % 40,
        }
    }
}

/// The model of the head: userspace's struct at least `size` bytes, no flags.
fn model_head(argsz: u32, flags: u32, size: usize) -> bool {
    u128::from(argsz) >= size as u128 && flags == 0
}

/// Linux's check before the backend sees the arguments (book3s_64_vio.c, C arithmetic: the sum wraps).
fn linux_precheck(shift: u32, offset: u64, size: u64) -> bool {
    !(size == 0 || !(12..=34).contains(&shift) || offset.wrapping_add(size) > (u64::MAX >> shift))
}

/// The model of a window: 12..=34, at least one page, and the window ends at or below 2^64.
fn model_create(shift: u32, offset: u64, size: u64) -> bool {
    (12..=34).contains(&shift) && size > 0 && (u128::from(offset) + u128::from(size)) << shift <= 1u128 << 64
}

/// The model of Linux's link test, in bytes: host page <= window page, same bus start, host covers the window.
fn model_fits(w: (u32, u64, u64), h: (u32, u64, u64)) -> bool {
    let (ws, wo, wn) = w;
    let (hs, ho, hn) = h;
    let host_start = u128::from(ho) << hs;
    hs <= ws
        && host_start < 1u128 << 64
        && host_start == u128::from(wo) << ws
        && u128::from(hn) << hs >= u128::from(wn) << ws
}

/// Runs one input through `imp` and the model; the first difference is the error.
pub fn check(imp: &Impl, data: &[u8]) -> Result<(), String> {
    let mut b = Bytes(data);
    // 1. The head of a struct of 8..=4096 bytes.
    let size = [8usize, 16, 24, 40, 48, 4096][(b.u8() % 6) as usize];
    let argsz = b.edgy(size as u64) as u32;
    let flags = if b.u8() % 2 == 0 { 0 } else { b.u64() as u32 };
    if (imp.head)(argsz, flags, size) != model_head(argsz, flags, size) {
        return Err(format!(
            "head argsz {argsz} flags {flags:#x} size {size}: core {}",
            (imp.head)(argsz, flags, size)
        ));
    }
    // 2. KVM_CREATE_SPAPR_TCE_64, as far as pvtce sees it (after Linux's pre-check).
    let shift = b.shift();
    let limit = if shift < 64 { u64::MAX >> shift } else { 0 };
    let offset = b.edgy(limit);
    let size = b.edgy(limit.wrapping_sub(offset));
    let created = if linux_precheck(shift, offset, size) { (imp.create)(shift, offset, size) } else { None };
    let want = linux_precheck(shift, offset, size) && model_create(shift, offset, size);
    if created.is_some() != want {
        return Err(format!("create shift {shift} offset {offset:#x} size {size:#x}: core {created:?}, model {want}"));
    }
    if let Some(g) = created {
        if (g.page_shift().get(), g.offset(), g.size()) != (shift, offset, size) {
            return Err(format!("create {shift} {offset:#x} {size:#x} gave {g:?}"));
        }
    }
    // 3. Linking that window (or a small valid one) to a group of up to 3 host tables.
    let w = match created {
        Some(g) => g,
        None => core_create(16, b.u8() as u64, 1 + b.u8() as u64).ok_or("small window refused")?,
    };
    let wt = (w.page_shift().get(), w.offset(), w.size());
    let mut tables = Vec::new();
    for id in 0..(b.u8() % 4) as u32 {
        let hs = [12, 16, 24, 21][(b.u8() % 4) as usize];
        // Often the window's own bus start and size in host pages, or near them.
        let start = u128::from(wt.1) << wt.0 >> hs;
        let n = (u128::from(wt.2) << wt.0 >> hs).min(u64::MAX as u128) as u64;
        let ho = b.edgy(start.min(u64::MAX as u128) as u64);
        let hn = b.edgy(n);
        let Some(ps) = PageShift::new(hs) else { continue };
        tables.push((HostTableId(id), HostGeometry { page_shift: ps, offset: ho, size: hn }));
    }
    let got = (imp.pick)(&w, &tables).ok();
    let want = tables.iter().find(|(_, g)| model_fits(wt, (g.page_shift.get(), g.offset, g.size))).map(|(id, _)| *id);
    if got != want {
        return Err(format!("link of {wt:x?} to {tables:x?}: core {got:?}, model {want:?}"));
    }
    Ok(())
}
