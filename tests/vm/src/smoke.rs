//! The end-to-end smoke scenario on Linux's own C path: VFIO sPAPR v2 container with preregistered memory, a
//! KVM-HV L2 guest, a window from KVM_CREATE_SPAPR_TCE_64 linked to edu's group, L2's H_PUT_TCE and H_GET_TCE,
//! and an edu DMA through the mapped bus address that must land in exactly the L2 page the TCE names.

use crate::rig::{call, sh, Rig, Windows, H_GET_TCE, H_PARAMETER, H_PUT_TCE, H_SUCCESS, LIOBN, TCE_R, TCE_W};

/// pvtce.ko loads, reports the 64K host page size, and unloads; the benchmark-only `PVTCE_WINDOW_EXCHANGE` is
/// refused (ENOTTY, as a command the table fd does not have) unless the module is loaded with
/// `bench_ioctls=1`.
pub fn module_load() -> Result<String, String> {
    sh("modprobe pvtce")?;
    let lsmod = sh("cat /proc/modules")?;
    if !lsmod.lines().any(|l| l.starts_with("pvtce ")) {
        return Err("pvtce not in /proc/modules after modprobe".into());
    }
    let off = exchange_errno();
    sh("rmmod pvtce")?;
    let log = sh("dmesg")?;
    let loaded = log.lines().rev().find(|l| l.contains("pvtce: loaded")).ok_or("no 'pvtce: loaded' line in dmesg")?;
    if !loaded.contains("PAGE_SIZE 65536") || !loaded.contains("bench_ioctls false") {
        return Err(format!("expected a 64K-page host and bench_ioctls off by default: {loaded}"));
    }
    if !log.contains("pvtce: unloaded") {
        return Err("no 'pvtce: unloaded' line in dmesg".into());
    }
    let off = off?;
    if off != libc::ENOTTY {
        return Err(format!("PVTCE_WINDOW_EXCHANGE with bench_ioctls off: errno {off}, expected ENOTTY"));
    }
    sh("modprobe pvtce bench_ioctls=1")?;
    let on = exchange_errno();
    sh("rmmod pvtce")?;
    // With the ioctl on, the same request reaches its checks: the window is linked to no table (ENODEV).
    let on = on?;
    if on != libc::ENODEV {
        return Err(format!("PVTCE_WINDOW_EXCHANGE with bench_ioctls=1: errno {on}, expected ENODEV (no link)"));
    }
    sh("modprobe pvtce bench_ioctls=1 backend=0")?;
    let l1 = l1_probe();
    sh("rmmod pvtce")?;
    let l1 = l1?;
    Ok(format!("modprobe + rmmod, PAGE_SIZE 65536; PVTCE_WINDOW_EXCHANGE refused with ENOTTY by default, reaches its checks (ENODEV) with bench_ioctls=1; {l1}"))
}

/// With `backend=0` (benchmark only) a new window is Linux's; `PVTCE_L1_TIME` (tests/vm/src/bench.rs) counts
/// this thread's exits exactly by kind, with a handler inside each interval and, with NESTED, the
/// H_ENTER_NESTED intervals too.
fn l1_probe() -> Result<String, String> {
    use crate::bench::l1_time;
    use pvtce_uapi::{PVTCE_L1_NESTED, PVTCE_L1_START, PVTCE_L1_STOP};
    let loaded = sh("dmesg")?;
    let loaded = loaded.lines().rev().find(|l| l.contains("pvtce: loaded")).unwrap_or("");
    if !loaded.contains("backend false") {
        return Err(format!("modprobe pvtce backend=0: {loaded}"));
    }
    let rig = Rig::new(Windows::Linked { tce_shift: 12, size: 1 << 30 })?;
    if rig.pvtce_info()?.is_some() {
        return Err("with backend=0 the window is pvtce's; expected Linux's built-in one".into());
    }
    let ioba = rig.window_bus()? + 0x4_0000;
    let calls = [
        call(H_PUT_TCE, [LIOBN, ioba, 0x20_0000 | TCE_R | TCE_W, 0]),
        call(H_GET_TCE, [LIOBN, ioba, 0, 0]),
        call(H_GET_TCE, [LIOBN, ioba, 0, 0]),
        call(H_GET_TCE, [LIOBN, ioba, 0, 0]),
        call(H_PUT_TCE, [LIOBN, ioba, 0, 0]),
    ];
    let mut seen = Vec::new();
    for flags in [PVTCE_L1_START, PVTCE_L1_START | PVTCE_L1_NESTED] {
        l1_time(flags)?;
        let run = rig.run(&calls);
        let s = l1_time(PVTCE_L1_STOP)?;
        let (rets, _) = run?;
        if let Some(r) = rets.iter().find(|r| r.r3 != H_SUCCESS) {
            return Err(format!("a call returned {}", r.r3));
        }
        // [exits, l1, hcall, nested exits, nested ticks] for H_PUT_TCE (0) and H_GET_TCE (3).
        let nested = flags & PVTCE_L1_NESTED != 0;
        for (k, want) in [(0usize, 2u64), (3, 3)] {
            let [n, l1, hc, nn, nt] = s[k];
            let want_nested = if nested { want } else { 0 };
            if n != want || hc == 0 || l1 < hc || nn != want_nested || (nested && nt < l1) {
                return Err(format!(
                    "PVTCE_L1_TIME flags {flags}: kind {k} has {n} exits ({l1} ticks, handler {hc}), {nn} nested ({nt}); expected {want} and {want_nested}, the handler inside the interval and it inside the nested one"
                ));
            }
        }
        if s[1][0] + s[2][0] != 0 {
            return Err(format!("PVTCE_L1_TIME counted INDIRECT or STUFF exits: {:?}", s));
        }
        seen.push(format!("{}/{} exits", s[0][0], s[3][0]));
    }
    Ok(format!("backend=0: Linux's window; PVTCE_L1_TIME PUT/GET {} (loop, nested)", seen.join(", ")))
}

/// The errno of `PVTCE_WINDOW_EXCHANGE` on a fresh, unlinked pvtce window of a VM of its own (0 if it passed).
fn exchange_errno() -> Result<i32, String> {
    use pvtce_vmm_glue::kvm;
    let k = kvm::Kvm::open().map_err(crate::rig::e("open /dev/kvm"))?;
    let vm = k.create_vm().map_err(crate::rig::e("create VM"))?;
    let t = vm.create_window(0x8000_0000, 16, 0, 256).map_err(crate::rig::e("KVM_CREATE_SPAPR_TCE_64"))?;
    if t.info().map_err(crate::rig::e("PVTCE_WINDOW_INFO"))?.is_none() {
        return Err("the window is Linux's built-in one; pvtce did not take it".into());
    }
    let scratch = vec![0u8; 1 << 17];
    let ua = (scratch.as_ptr() as u64 + 0xffff) & !0xffff;
    Ok(match t.bare_exchange(0, 1, ua) {
        Ok(_) => 0,
        Err(pvtce_vmm_glue::Error::WindowExchange { source, .. }) => source.raw_os_error().unwrap_or(-1),
        Err(other) => return Err(format!("PVTCE_WINDOW_EXCHANGE: {other}")),
    })
}

pub fn smoke() -> Result<String, String> {
    // pvtce must not be loaded: this is Linux's C path.
    let _ = sh("rmmod pvtce");
    let rig = Rig::new(Windows::Linked { tce_shift: 12, size: 1 << 30 })?;
    if rig.pvtce_info()?.is_some() {
        return Err("the window is pvtce's; expected Linux's built-in one".into());
    }
    let (win, win_size, page) = (rig.window_bus()?, rig.window_size()?, 0x20_0000u64);
    let ioba = win + 0x4_0000;
    let tce = page | TCE_R | TCE_W;
    let calls = [
        call(H_PUT_TCE, [LIOBN, ioba, tce, 0]),
        call(H_GET_TCE, [LIOBN, ioba, 0, 0]),
        // Outside the window: H_PARAMETER, as Linux answers.
        call(H_PUT_TCE, [LIOBN, win + win_size, tce, 0]),
    ];
    let (rets, tb) = rig.run(&calls)?;
    if rig.exited() != 0 {
        return Err(format!("{} hypercall(s) exited to userspace; the kernel should handle them all", rig.exited()));
    }
    if rets[0].r3 != H_SUCCESS {
        return Err(format!("H_PUT_TCE returned {}", rets[0].r3));
    }
    if rets[1].r3 != H_SUCCESS || rets[1].r4 != tce {
        return Err(format!("H_GET_TCE returned {} / {:#x}, expected 0 / {tce:#x}", rets[1].r3, rets[1].r4));
    }
    if rets[2].r3 != H_PARAMETER {
        return Err(format!("H_PUT_TCE outside the window returned {}, expected H_PARAMETER", rets[2].r3));
    }
    // edu reads a pattern through the TCE and writes it back 0x800 further into the same L2 page.
    if !rig.dma_copy(ioba, page, ioba + 0x800, page + 0x800, 3)? {
        return Err("edu DMA through the TCE did not reach the L2 page".into());
    }
    Ok(format!(
        "edu {} group {} window {win:#x}+{:#x} 4K; L2 H_PUT_TCE/H_GET_TCE = {tce:#x}, out-of-window = H_PARAMETER, 0 exits, {tb} tb ticks; edu DMA via ioba {ioba:#x} reached L2 page {page:#x}",
        rig.bdf, rig.group.id, win_size
    ))
}
