//! pvtce.ko handles the guest's TCE hypercalls: the same rig as the smoke test with pvtce loaded, so the
//! window is pvtce's. Its statistics must count every hypercall, the VMM must see no exit, edu DMA must
//! reach the L2 pages mapped by H_PUT_TCE and H_PUT_TCE_INDIRECT, and be refused after H_STUFF_TCE clears.

use crate::rig::*;
use pvtce_vmm_glue::sys::{KVM_REG_PPC_FPR0, KVM_REG_PPC_MMCR0};

fn check(what: &str, got: i64, want: i64) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: returned {got}, expected {want}"))
    }
}

/// Maps with H_PUT_TCE and H_PUT_TCE_INDIRECT, proves both with DMA, clears with H_STUFF_TCE and proves the
/// DMA is then refused; `tce_shift` 12 is the 4K-TCE-on-64K-host case, 16 the 64K one.
fn scenario(tce_shift: u32) -> Result<String, String> {
    // bench_ioctls=1: the scenario also checks the benchmark's PVTCE_WINDOW_EXCHANGE.
    on_linked_rig("modprobe pvtce bench_ioctls=1", tce_shift, |rig| run_scenario(rig, tce_shift))
}

/// Loads pvtce with `modprobe`, runs `f` on a rig with a linked window of `tce_shift` TCEs, and unloads it.
fn on_linked_rig(
    modprobe: &str,
    tce_shift: u32,
    f: impl FnOnce(&Rig) -> Result<String, String>,
) -> Result<String, String> {
    sh(modprobe)?;
    let result = (|| {
        let rig = Rig::new(Windows::Linked { tce_shift, size: 1 << 28 })?;
        // Every failure says which hypercalls left the kernel.
        f(&rig).map_err(|err| format!("{err} (exits {:x?})", rig.exit_log()))
    })();
    // Everything was closed when the rig dropped: the module must unload now.
    let unload = sh("rmmod pvtce");
    let detail = result?;
    unload.map_err(|err| format!("rmmod after the windows closed: {err}"))?;
    Ok(detail)
}

fn run_scenario(rig: &Rig, tce_shift: u32) -> Result<String, String> {
    {
        let info = rig.pvtce_info()?.ok_or("the window is Linux's built-in one; pvtce did not take it")?;
        if info.links != 1 {
            return Err(format!("pvtce reports {} linked tables, expected 1", info.links));
        }
        let ps = 1u64 << tce_shift;
        let (win, win_size, a, b) = (rig.window_bus()?, rig.window_size()?, 0x20_0000u64, 0x40_0000u64);
        let table = rig.window()?;
        let ioba_a = win + 4 * ps;
        let ioba_b = win + 64 * ps;
        let rw = TCE_R | TCE_W;
        let list = [b | rw, (b + ps) | rw, (b + 2 * ps) | TCE_R, (b + 3 * ps) | rw];
        rig.write_list(&list)?;
        let calls = [
            call(H_PUT_TCE, [LIOBN, ioba_a, a | rw, 0]),
            call(H_GET_TCE, [LIOBN, ioba_a, 0, 0]),
            call(H_PUT_TCE, [LIOBN, win + win_size, a | rw, 0]),
            call(H_PUT_TCE_INDIRECT, [LIOBN, ioba_b, LIST_GPA, list.len() as u64]),
            call(H_GET_TCE, [LIOBN, ioba_b + 2 * ps, 0, 0]),
            // 513 entries: H_PARAMETER, nothing changes.
            call(H_PUT_TCE_INDIRECT, [LIOBN, ioba_b, LIST_GPA, 513]),
        ];
        let (rets, tb) = rig.run(&calls)?;
        check("H_PUT_TCE", rets[0].r3, H_SUCCESS)?;
        check("H_GET_TCE", rets[1].r3, H_SUCCESS)?;
        if rets[1].r4 != a | rw {
            return Err(format!("H_GET_TCE gave {:#x}, expected {:#x}", rets[1].r4, a | rw));
        }
        check("H_PUT_TCE outside the window", rets[2].r3, H_PARAMETER)?;
        check("H_PUT_TCE_INDIRECT of 4", rets[3].r3, H_SUCCESS)?;
        if rets[4].r4 != list[2] {
            return Err(format!("H_GET_TCE after INDIRECT gave {:#x}, expected {:#x}", rets[4].r4, list[2]));
        }
        check("H_PUT_TCE_INDIRECT of 513", rets[5].r3, H_PARAMETER)?;
        // KVM-HV's early path (kernel patch 0011) answers the GETs and the PUTs that need no table page; the
        // INDIRECTs always take the normal path, and a call meets pending host work only rarely.
        let early = rig.pvtce_info()?.ok_or("window info vanished")?.early;
        if !(1..=4).contains(&early) {
            return Err(format!("{early} of the first 4 PUT/GET calls were answered in the early path, expected 1-4"));
        }
        // The table fd's mapping shows what the guest wrote (Linux's layout: flat, native-endian).
        let view = table.view().map_err(e("mmap the table fd"))?;
        let idx = |ioba: u64| (ioba - win) >> tce_shift;
        let seen = (view.get(idx(ioba_a)), view.get(idx(ioba_b) + 2), view.get(idx(ioba_a) + 1));
        if seen != (Some(a | rw), Some(list[2]), Some(0)) {
            return Err(format!("mmap of the table shows {seen:x?}, expected ({:#x}, {:#x}, 0)", a | rw, list[2]));
        }
        // DMA through both kinds of mapping: within page A, and from B's first page into its second.
        if !rig.dma_copy(ioba_a, a, ioba_a + 0x800, a + 0x800, 5)? {
            return Err("edu DMA through the H_PUT_TCE mapping did not reach L2 page A".into());
        }
        if !rig.dma_copy(ioba_b, b, ioba_b + ps + 0x800, b + ps + 0x800, 9)? {
            return Err("edu DMA through the H_PUT_TCE_INDIRECT mapping did not reach L2 page B+1".into());
        }
        // Clear A's entry; the same DMA must now be refused by the IOMMU (A's page stays as it was).
        let (rets2, _) =
            rig.run(&[call(H_STUFF_TCE, [LIOBN, ioba_a, 0, 1]), call(H_GET_TCE, [LIOBN, ioba_a, 0, 0])])?;
        check("H_STUFF_TCE", rets2[0].r3, H_SUCCESS)?;
        if rets2[1].r4 != 0 {
            return Err(format!("H_GET_TCE after H_STUFF_TCE gave {:#x}, expected 0", rets2[1].r4));
        }
        // The mapping is live: the cleared entry reads 0 through the same mapping.
        if view.get(idx(ioba_a)) != Some(0) {
            return Err(format!("mmap after H_STUFF_TCE still shows {:x?}", view.get(idx(ioba_a))));
        }
        // And writable, as Linux's: what the VMM writes there is what H_GET_TCE returns (QEMU restores
        // tables this way on incoming migration).
        let restored = 0x123_4000 | TCE_R;
        table.write_entry(idx(ioba_a) + 1, restored).map_err(e("write through the table mapping"))?;
        let (rets4, _) = rig.run(&[call(H_GET_TCE, [LIOBN, ioba_a + ps, 0, 0])])?;
        if rets4[0].r4 != restored {
            return Err(format!("H_GET_TCE after a VMM write gave {:#x}, expected {restored:#x}", rets4[0].r4));
        }
        if rig.dma_copy(ioba_b, b, ioba_a + 0x800, a + 0x800, 11)? {
            return Err("edu DMA to the cleared entry still reached L2 page A".into());
        }
        // Clearing a range that covers the INDIRECT mappings empties their hardware entries too.
        // The host window has the TCE's page size: its entries are numbered in those pages.
        let host_first = ioba_b >> tce_shift;
        let before = rig.host_read_any(host_first, 4)?;
        let (rets3, _) = rig.run(&[call(H_STUFF_TCE, [LIOBN, win, 0, 96])])?;
        check("H_STUFF_TCE over 96 entries", rets3[0].r3, H_SUCCESS)?;
        let after = rig.host_read_any(host_first, 4)?;
        if after.iter().any(|&t| t != 0) || before.iter().all(|&t| t == 0) {
            return Err(format!(
                "hardware entries of the INDIRECT mappings: before clear {before:x?}, after {after:x?}"
            ));
        }
        if rig.exited() != 0 {
            return Err(format!("{} TCE hypercall(s) exited to userspace", rig.exited()));
        }
        let s = rig.pvtce_info()?.ok_or("window info vanished")?;
        let counts = (s.h_put_tce, s.h_put_tce_indirect, s.h_stuff_tce, s.h_get_tce, s.rejected, s.tces_changed);
        // PUT x2 (one rejected), INDIRECT x2 (one rejected), STUFF x2, GET x4; 1 + 4 + 1 + 96 entries changed.
        if counts != (2, 2, 2, 4, 2, 102) {
            return Err(format!(
                "pvtce statistics (put, indirect, stuff, get, rejected, changed) = {counts:?}, expected (2, 2, 2, 4, 2, 102)"
            ));
        }
        if s.host_updates < 6 || s.host_kills < 3 {
            return Err(format!("host updates {} / kills {}: expected at least 6 / 3", s.host_updates, s.host_kills));
        }
        let floor = bare_exchange(rig, tce_shift)?;
        // A live window holds the module.
        if sh("rmmod pvtce").is_ok() {
            return Err("rmmod pvtce succeeded while a window was open".into());
        }
        Ok(format!(
            "{}K TCEs at {win:#x}: PUT/GET/INDIRECT/STUFF handled by pvtce with 0 exits ({tb} tb ticks), {early} of the first 4 PUT/GET in the early path; stats put {} indirect {} stuff {} get {} rejected {} changed {} host updates {} kills {}; DMA reached A and B+1, refused after STUFF; the table fd's mmap shows the entries and follows STUFF; {floor}; rmmod refused while the window lived",
            ps >> 10, s.h_put_tce, s.h_put_tce_indirect, s.h_stuff_tce, s.h_get_tce, s.rejected, s.tces_changed, s.host_updates, s.host_kills
        ))
    }
}

/// PVTCE_WINDOW_EXCHANGE (the benchmark's floor): every bad request gets its errno and changes nothing; a
/// good one maps and clears a range of the hardware table and leaves it empty.
fn bare_exchange(rig: &Rig, tce_shift: u32) -> Result<String, String> {
    let ps = 1u64 << tce_shift;
    let ua = rig.mem.host_addr() + 0x40_0000;
    let errno = |r: Result<(u64, u64), pvtce_vmm_glue::Error>| match r {
        Ok(_) => 0,
        Err(pvtce_vmm_glue::Error::WindowExchange { source, .. }) => source.raw_os_error().unwrap_or(-1),
        Err(_) => -1,
    };
    // A mapped entry inside the range: EBUSY.
    let mapped = 200u64;
    let win = rig.window_bus()?;
    let (r, _) = rig.run(&[call(H_PUT_TCE, [LIOBN, win + mapped * ps, 0x40_0000 | TCE_R, 0])])?;
    check("H_PUT_TCE before the exchange checks", r[0].r3, H_SUCCESS)?;
    let unregistered = pvtce_vmm_glue::mem::GuestMem::new(1 << 20).map_err(e("scratch memory"))?;
    let stats = |rig: &Rig| -> Result<(u64, u64, u64), String> {
        let s = rig.pvtce_info()?.ok_or("window info vanished")?;
        Ok((s.host_updates, s.host_kills, s.tces_changed))
    };
    let before = stats(rig)?;
    let size = rig.window_size()? >> tce_shift;
    let t = rig.window()?;
    let cases = [
        ("count 0", errno(t.bare_exchange(300, 0, ua)), libc::EINVAL),
        ("count 513", errno(t.bare_exchange(300, 513, ua)), libc::EINVAL),
        ("past the window's end", errno(t.bare_exchange(size - 1, 2, ua)), libc::EINVAL),
        ("first + count overflowing", errno(t.bare_exchange(u64::MAX, 1, ua)), libc::EINVAL),
        ("misaligned ua", errno(t.bare_exchange(300, 4, ua + 8)), libc::EINVAL),
        ("memory not preregistered", errno(t.bare_exchange(300, 4, unregistered.host_addr())), libc::EFAULT),
        ("a mapped entry in the range", errno(t.bare_exchange(mapped - 2, 4, ua)), libc::EBUSY),
    ];
    for (what, got, want) in cases {
        if got != want {
            return Err(format!("PVTCE_WINDOW_EXCHANGE with {what}: errno {got}, expected {want}"));
        }
    }
    let host_first = (win >> tce_shift) + 300;
    let (map, unmap) = t.bare_exchange(300, 64, ua).map_err(e("PVTCE_WINDOW_EXCHANGE"))?;
    let after = rig.host_read_any(host_first, 64)?;
    let still = rig.host_read_any((win >> tce_shift) + mapped, 1)?;
    if map == 0 || unmap == 0 || after.iter().any(|&h| h != 0) || still[0] == 0 {
        return Err(format!(
            "PVTCE_WINDOW_EXCHANGE of 64: ticks {map}/{unmap}, hardware entries after {:x?}, the mapped entry {:#x}",
            &after[..4],
            still[0]
        ));
    }
    // The floor is not the guest's doing: the window's counters do not move.
    if stats(rig)? != before {
        return Err(format!("PVTCE_WINDOW_EXCHANGE moved the window's counters: {before:?} -> {:?}", stats(rig)?));
    }
    let (r, _) = rig
        .run(&[call(H_GET_TCE, [LIOBN, win + 300 * ps, 0, 0]), call(H_STUFF_TCE, [LIOBN, win + mapped * ps, 0, 1])])?;
    if (r[0].r3, r[0].r4, r[1].r3) != (H_SUCCESS, 0, H_SUCCESS) {
        return Err(format!("after PVTCE_WINDOW_EXCHANGE: GET {:?}, clear {}", r[0], r[1].r3));
    }
    Ok(format!("PVTCE_WINDOW_EXCHANGE: 7 bad requests refused (EINVAL x5, EFAULT, EBUSY), 64 entries mapped in {map} and cleared in {unmap} ticks, left empty"))
}

pub fn pvtce_4k() -> Result<String, String> {
    scenario(12)
}

pub fn pvtce_64k() -> Result<String, String> {
    scenario(16)
}

/// H_PUT_TCE map, H_GET_TCE and H_PUT_TCE clear of each of [`EARLY_ROUNDS`] entries of a 64K window.
const EARLY_ROUNDS: u64 = 8;

/// Kernel patch 0014: on this nested (v1) L1, pvtce's early H_PUT_TCE and H_GET_TCE are answered inside the
/// nested entry, with the guest's state still loaded (vCPU statistic `tce_early_entry`); once the guest's PMU
/// counts (`MMCR0[FC]` clear) the entry must decline them, and patch 0011's path after the exit answers
/// (`tce_early_exit`). Every call must still give its answer.
pub fn early_entry() -> Result<String, String> {
    on_linked_rig("modprobe pvtce", 16, early_entry_on)
}

fn early_entry_on(rig: &Rig) -> Result<String, String> {
    let (win, ps, rw) = (rig.window_bus()?, 1u64 << 16, TCE_R | TCE_W);
    let tce = |i: u64| (0x20_0000 + i * ps) | rw;
    let calls: Vec<_> = (0..EARLY_ROUNDS)
        .flat_map(|i| {
            let ioba = win + i * ps;
            [
                call(H_PUT_TCE, [LIOBN, ioba, tce(i), 0]),
                call(H_GET_TCE, [LIOBN, ioba, 0, 0]),
                call(H_PUT_TCE, [LIOBN, ioba, 0, 0]),
            ]
        })
        .collect();
    let n = calls.len() as u64;
    let stats = || -> Result<(u64, u64), String> {
        const NAMES: [&str; 2] = ["tce_early_entry", "tce_early_exit"];
        match rig.vcpu.stats(&NAMES).map_err(e("KVM_GET_STATS_FD"))?[..] {
            [Some(entry), Some(exit)] => Ok((entry, exit)),
            _ => Err(format!("the kernel lacks a vCPU statistic of {NAMES:?} (kernel patch 0014)")),
        }
    };
    // One table of calls; (answered inside the entry, answered after the exit).
    let round = || -> Result<(u64, u64), String> {
        let before = stats()?;
        let (rets, _) = rig.run(&calls)?;
        for (i, r) in rets.iter().enumerate() {
            check(&format!("call {i}"), r.r3, H_SUCCESS)?;
            if i % 3 == 1 && r.r4 != tce(i as u64 / 3) {
                return Err(format!("H_GET_TCE {i} gave {:#x}, expected {:#x}", r.r4, tce(i as u64 / 3)));
            }
        }
        let after = stats()?;
        Ok((after.0 - before.0, after.1 - before.1))
    };
    // The guest's f0 stays in the FPU across the calls answered inside the entry (nothing stores or reloads
    // it there): a hook that used the FPU would leave its value, stored at the next full exit.
    const F0: u64 = 0x4009_21fb_5444_2d18;
    rig.vcpu.set_one_reg(KVM_REG_PPC_FPR0, F0).map_err(e("KVM_SET_ONE_REG(FPR0)"))?;
    // The first map of the range allocates its table page (the normal path does): warm it up.
    round()?;
    // The vCPU starts with its PMU frozen (KVM-HV's reset MMCR0 is FC).
    let (entry, exit) = round()?;
    if entry < n / 2 || entry + exit > n {
        return Err(format!(
            "guest PMU frozen: {entry} of {n} calls answered inside the nested entry and {exit} after the exit, expected at least {} inside",
            n / 2
        ));
    }
    rig.vcpu.set_one_reg(KVM_REG_PPC_MMCR0, 0).map_err(e("KVM_SET_ONE_REG(MMCR0)"))?;
    let (entry_pmu, exit_pmu) = round()?;
    if entry_pmu != 0 || exit_pmu < n / 2 {
        return Err(format!(
            "guest PMU counting: {entry_pmu} of {n} calls answered inside the nested entry (expected 0) and {exit_pmu} after the exit (expected at least {})",
            n / 2
        ));
    }
    if rig.exited() != 0 {
        return Err(format!("{} TCE hypercall(s) exited to userspace", rig.exited()));
    }
    let f0 = rig.vcpu.one_reg(KVM_REG_PPC_FPR0).map_err(e("KVM_GET_ONE_REG(FPR0)"))?;
    if f0 != F0 {
        return Err(format!("the guest's f0 is {f0:#x} after the calls, expected {F0:#x}"));
    }
    Ok(format!(
        "{n} H_PUT_TCE/H_GET_TCE calls: guest PMU frozen, {entry} answered inside the nested entry and {exit} after the exit; guest PMU counting, {entry_pmu} and {exit_pmu}; the guest's f0 kept"
    ))
}
