//! Dynamic DMA windows from L2 through RTAS (ddw-64k, ddw-4k) and RTAS bad inputs (rtas-errors).
//!
//! The VMM answers `H_RTAS` with pvtce-core's policy; each window the policy names becomes a host window
//! (VFIO, same bus address and page size) plus a kernel window linked to edu's group. L2 then maps its pages
//! at 1 << 59, and edu's DMA through those bus addresses must land in exactly those pages.

use crate::rig::*;
use pvtce_core::types::Liobn;
use pvtce_test_support::payload::Call;
use pvtce_vmm_glue::sys::VFIO_EEH_PE_GET_STATE;
use pvtce_vmm_glue::windows::{HostPe, Path};
use pvtce_vmm_glue::Error;

const BUS64: u64 = 1 << 59;

fn put(liobn: u64, ioba: u64, tce: u64) -> Call {
    Call { nr: H_PUT_TCE, args: [liobn, ioba, tce, 0, 0] }
}
fn get(liobn: u64, ioba: u64) -> Call {
    Call { nr: H_GET_TCE, args: [liobn, ioba, 0, 0, 0] }
}

fn errno(r: Result<(), Error>) -> Option<i32> {
    match r {
        Ok(()) => None,
        Err(Error::MapDma { source, .. }) => Some(source.raw_os_error().unwrap_or(-1)),
        Err(_) => Some(-1),
    }
}

/// The host has no window at 1 << 59: a map there is refused with ENXIO, and a new window there can be
/// created (then removed again).
fn no_host_window_at_bus64(rig: &Rig, page_shift: u32, window_shift: u32) -> Result<(), String> {
    let page = 1u64 << page_shift;
    // SAFETY: the range is the first page of guest RAM (and the map is refused anyway).
    match errno(unsafe { rig.container.map_dma(rig.mem.host_addr(), BUS64, page, true, true) }) {
        Some(libc::ENXIO) => {}
        other => return Err(format!("MAP_DMA at {BUS64:#x} after remove: errno {other:?}, expected ENXIO")),
    }
    let at = rig.container.create_window(page_shift, 1 << window_shift, 1).map_err(e("TCE_CREATE probe"))?;
    rig.container.remove_window(at).map_err(e("TCE_REMOVE probe"))?;
    if at != BUS64 {
        return Err(format!("probe window landed at {at:#x}"));
    }
    Ok(())
}

/// Who answers the windows' hypercalls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Kernel windows from Linux's C path (PVTCE_WINDOW_INFO: ENOTTY).
    Linux,
    /// Kernel windows from pvtce.ko (PVTCE_WINDOW_INFO answers).
    Pvtce,
    /// No kernel windows: the VMM's fallback, the host windows written with VFIO MAP/UNMAP.
    Fallback,
}

fn ddw_case(ps: u32, ws: u32, mode: Mode) -> Result<String, String> {
    let path = if mode == Mode::Fallback { Path::Fallback } else { Path::Kernel };
    let rig = &Rig::new(Windows::Pe { add_group: path == Path::Kernel })?;
    let hp = &mut rig.host_pe(path)?;
    // TCE hypercalls that exit: none on the kernel path, each of them on the fallback path.
    let exiting = |n: u32| if path == Path::Kernel { 0 } else { n };
    let ddw = &mut new_ddw();
    ddw.boot(hp).map_err(e("default window (host window at bus 0 + kernel window + link)"))?;

    let r = rtas_calls(rig, ddw, hp, &[query(), create(ps, ws)])?;
    if r[0] != [0, 1, 0x8000_0000u32 as i32, 0x107, 0] {
        return Err(format!("query returned {:x?}", r[0]));
    }
    if r[1] != [0, L1 as u32 as i32, (BUS64 >> 32) as i32, 0] {
        return Err(format!("create({ps}, {ws}) returned {:x?} (errors {:?})", r[1], ddw.errors));
    }
    let page = 1u64 << ps;
    // 4K TCEs on the 64K-page host name 4K slices inside 64K pages: use slices that are not the first.
    let slice = if ps == 12 { 0x3000 } else { 0 };
    let a = 0x20_0000 + slice;
    let b = 0x30_0000 + slice;
    let list: Vec<u8> = [b | 3, (b + page) | 1].iter().flat_map(|t| t.to_be_bytes()).collect();
    rig.mem.write(LIST, &list).map_err(e("list"))?;
    let calls = [
        put(L1, BUS64 + 3 * page, a | 3),
        get(L1, BUS64 + 3 * page),
        Call { nr: H_PUT_TCE_INDIRECT, args: [L1, BUS64 + 8 * page, LIST, 2, 0] },
        get(L1, BUS64 + 9 * page),
        put(L1, BUS64 + (1 << ws), a | 3),
        put(L1, BUS64 + 3 * page + 0x800, a | 3),
    ];
    let Run { rets, tce, .. } = rig.run_with(&calls, Policy::RtasFallback(ddw, hp))?;
    let got: Vec<i64> = rets.iter().map(|r| r.r3).collect();
    if got != [0, 0, 0, 0, H_PARAMETER, H_PARAMETER] || rets[1].r4 != a | 3 || rets[3].r4 != (b + page) | 1 {
        return Err(format!("L2 calls returned {rets:x?}"));
    }
    if tce != exiting(calls.len() as u32) {
        return Err(format!("{} of {} TCE hypercalls exited", tce, calls.len()));
    }
    let want = [Some(a | 3), Some(b | 3), Some((b + page) | 1), Some(0)];
    let w = hp.window(Liobn(L1)).ok_or("no live DDW")?;
    let Some(table) = w.kernel.as_ref() else {
        // The fallback's own table.
        let seen = [3, 8, 9, 4].map(|i| hp.fallback.entry(Liobn(L1), i));
        if seen != want {
            return Err(format!("the fallback's table shows {seen:x?}"));
        }
        return finish(rig, ddw, hp, ps, ws, (a, b), exiting, format!("VMM fallback: {} of {} TCE hypercalls exited and were answered with the host table written by VFIO MAP_DMA", tce, calls.len()));
    };
    // The table fd's mmap shows the same entries (Linux's windows and pvtce's alike). The mapping is
    // dropped right away: it holds the window open, and `finish` removes the window.
    let seen = {
        let view = table.view().map_err(e("table mmap"))?;
        [view.get(3), view.get(8), view.get(9), view.get(4)]
    };
    if seen != want {
        return Err(format!("table fd shows {seen:x?}"));
    }
    let stats = match (table.info().map_err(e("PVTCE_WINDOW_INFO"))?, mode == Mode::Pvtce) {
        (None, false) => "kernel: 0 TCE exits, window info ENOTTY (Linux's C path)".to_string(),
        (Some(i), true) => {
            if i.links != 1 || i.h_put_tce < 1 || i.h_put_tce_indirect < 1 || i.h_get_tce < 2 || i.page_shift != ps {
                return Err(format!("pvtce's statistics do not match the calls: {i:?}"));
            }
            format!(
                "kernel: 0 TCE exits, pvtce window: shift {} links {} put {} indirect {} get {} rejected {} declined {} host updates {}",
                i.page_shift,
                i.links,
                i.h_put_tce,
                i.h_put_tce_indirect,
                i.h_get_tce,
                i.rejected,
                i.declined,
                i.host_updates
            )
        }
        (None, true) => return Err("the DDW is Linux's built-in window; pvtce did not take it".into()),
        (Some(_), false) => return Err("PVTCE_WINDOW_INFO answered on a window made without pvtce".into()),
    };
    finish(rig, ddw, hp, ps, ws, (a, b), exiting, stats)
}

/// DMA through both mappings, then remove, create again and reset.
#[allow(clippy::too_many_arguments)]
fn finish(
    rig: &Rig,
    ddw: &mut pvtce_vmm_glue::rtas::Ddw,
    hp: &mut HostPe<'_>,
    ps: u32,
    ws: u32,
    (a, b): (u64, u64),
    exiting: impl Fn(u32) -> u32,
    stats: String,
) -> Result<String, String> {
    let page = 1u64 << ps;

    // edu through the PUT mapping and through the INDIRECT one.
    // A neighbouring 4K slice stays untouched.
    rig.mem.write(a - 0x1000 + 0x800, &[0u8; 256]).map_err(e("clear neighbour"))?;
    rig.dma_reaches(BUS64 + 3 * page, a, 3)?;
    rig.dma_reaches(BUS64 + 8 * page, b, 11)?;
    if ps == 12 {
        let mut n = [0u8; 256];
        rig.mem.read(a - 0x1000 + 0x800, &mut n).map_err(e("neighbour"))?;
        if n.iter().any(|x| *x != 0) {
            return Err("DMA through a 4K TCE touched the neighbouring 4K slice".into());
        }
    }

    // Remove: the window goes from the kernel and the host; L2's next PUT there exits and is refused.
    let r = rtas_calls(rig, ddw, hp, &[remove(L1), query()])?;
    if r[0] != [0] || r[1][..2] != [0, 1] {
        return Err(format!("remove/query returned {r:x?}"));
    }
    no_host_window_at_bus64(rig, ps, ws)?;
    let Run { rets, tce, .. } = rig.run_with(&[put(L1, BUS64, a | 3)], Policy::RtasFallback(ddw, hp))?;
    if rets[0].r3 != H_PARAMETER || tce != 1 {
        return Err(format!("PUT on the removed window: {rets:x?}, {} exits", tce));
    }

    // Create again, then reset: only the default window is left, in the kernel and on the host.
    let r = rtas_calls(rig, ddw, hp, &[create(ps, ws), reset(), query()])?;
    if r[0][0] != 0 || r[1] != [0] || r[2][..2] != [0, 1] {
        return Err(format!("create/reset/query returned {r:x?} (errors {:?})", ddw.errors));
    }
    let live: Vec<(u64, u64)> = hp.live.iter().map(|w| (w.liobn.0, w.host_bus)).collect();
    if live != [(L0, 0)] {
        return Err(format!("after reset the live windows are {live:x?}"));
    }
    no_host_window_at_bus64(rig, ps, ws)?;
    // The restored default window works end to end.
    let Run { rets, tce, .. } = rig.run_with(&[put(L0, 0x4_0000, a | 3)], Policy::RtasFallback(ddw, hp))?;
    if rets[0].r3 != 0 || tce != exiting(1) {
        return Err(format!("PUT on the restored default window: {rets:x?}, {} exits", tce));
    }
    rig.dma_reaches(0x4_0000, a, 5)?;
    Ok(format!(
        "DDW {}K pages 2^{ws} at {BUS64:#x} (host window there too, default at 0); L2 PUT/INDIRECT/GET; edu DMA reached L2 pages {a:#x} and {b:#x}; remove and reset leave no host window at {BUS64:#x} (MAP_DMA ENXIO, probe TCE_CREATE ok); default window works after reset; {stats}",
        page >> 10
    ))
}

pub fn ddw_64k() -> Result<String, String> {
    ddw_case(16, 32, Mode::Linux)
}

pub fn ddw_4k() -> Result<String, String> {
    ddw_case(12, 30, Mode::Linux)
}

pub fn ddw_64k_fallback() -> Result<String, String> {
    ddw_case(16, 32, Mode::Fallback)
}

pub fn ddw_4k_fallback() -> Result<String, String> {
    ddw_case(12, 30, Mode::Fallback)
}

pub fn ddw_64k_pvtce() -> Result<String, String> {
    with_pvtce(|| ddw_case(16, 32, Mode::Pvtce))
}

pub fn ddw_4k_pvtce() -> Result<String, String> {
    with_pvtce(|| ddw_case(12, 30, Mode::Pvtce))
}

/// Bad RTAS inputs get PAPR's codes and change nothing; EEH on the emulated bridge answers ENODEV.
pub fn rtas_errors() -> Result<String, String> {
    let rig = &Rig::new(Windows::Pe { add_group: true })?;
    let hp = &mut rig.host_pe(Path::Kernel)?;
    let ddw = &mut new_ddw();
    ddw.boot(hp).map_err(e("default window"))?;
    let before = ddw.pe;
    let bad_buid = RtasReq { token: pvtce_vmm_glue::rtas::TOKEN_QUERY, args: vec![0, BUID_HI, BUID_LO ^ 1], nret: 5 };
    let short = RtasReq { token: pvtce_vmm_glue::rtas::TOKEN_CREATE, args: vec![0, BUID_HI, BUID_LO, 16], nret: 4 };
    let reqs = [
        create(23, 32), // 8M pages: not in the mask
        create(16, 15), // window smaller than a page
        create(40, 44), // a page shift no one supports
        remove(0x1234), // unknown LIOBN
        remove(L1),     // known LIOBN, no window
        bad_buid,
        short,
    ];
    let r = rtas_calls(rig, ddw, hp, &reqs)?;
    let status: Vec<i32> = r.iter().map(|w| w[0]).collect();
    if status != [-3; 7] {
        return Err(format!("bad inputs returned {status:?}, expected -3 each"));
    }
    if ddw.pe != before || hp.live.len() != 1 || !ddw.errors.is_empty() {
        return Err(format!("a bad input changed something: {} live windows, errors {:?}", hp.live.len(), ddw.errors));
    }
    // The second window, then a third: hardware error, nothing changes.
    let r = rtas_calls(rig, ddw, hp, &[create(16, 32), create(16, 32), create(12, 30), query()])?;
    if r[0][0] != 0 || r[1] != [-1, 0, 0, 0] || r[2][0] != -1 || r[3][..2] != [0, 0] {
        return Err(format!("second/third window returned {r:x?}"));
    }
    if hp.live.len() != 2 {
        return Err(format!("{} live windows after a refused third", hp.live.len()));
    }
    // An unknown LIOBN in a TCE hypercall: the kernel does not know it, the VMM answers H_PARAMETER.
    let Run { rets, tce, .. } = rig.run_with(&[put(0x1234, 0, 0x20_0003)], Policy::RtasFallback(ddw, hp))?;
    if rets[0].r3 != H_PARAMETER || tce != 1 {
        return Err(format!("PUT with an unknown LIOBN: {rets:x?}, {} exits", tce));
    }
    let eeh = match rig.container.eeh_pe_op(VFIO_EEH_PE_GET_STATE) {
        Err(Error::EehPeOp { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
            "EEH GET_STATE: ENODEV (emulated bridge)".to_string()
        }
        Ok(state) => format!("EEH GET_STATE: {state}"),
        Err(x) => return Err(e("VFIO_EEH_PE_OP")(x)),
    };
    let i = rig.info;
    Ok(format!(
        "host GET_INFO dma32 {:#x}+{:#x} pgsizes {:#x} max_windows {} levels {}; 8M/40-bit page shift, window < page, unknown LIOBN, inactive LIOBN, bad BUID, short args: -3 each, nothing changed; third window: -1; unknown LIOBN hcall: H_PARAMETER via VMM; {eeh}",
        i.dma32_start, i.dma32_size, i.pgsizes, i.max_windows, i.levels
    ))
}
