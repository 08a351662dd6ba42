//! Faults: the VMM killed with SIGKILL in the middle of a hypercall loop, and a VM destroyed (its VM, vCPU
//! and KVM VFIO device fds closed) while its pvtce window still maps memory. Afterwards no pvtce window is
//! left, the system's outstanding page pins are back to their baseline, the module unloads, the group can
//! be taken again and DMA through a new window works; a WARN, BUG or lockdep report on the console fails
//! the run (the runner scans the whole console).

use crate::rig::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The child VMM: sets up a pvtce window, maps entries, says "ready", then either loops on hypercalls
/// until killed (`sigkill`) or closes its VM while the window lives and exits (`vm-destroy`).
pub fn child(kind: &str) -> Result<(), String> {
    let mut rig = Rig::new(Windows::Linked { tce_shift: 12, size: 1 << 28 })?;
    let win = rig.window_bus()?;
    rig.pvtce_info()?.ok_or("the window is not pvtce's")?;
    let list: Vec<u64> = (0..32u64).map(|i| (0x40_0000 + (i << 12)) | TCE_R | TCE_W).collect();
    rig.write_list(&list)?;
    let (r, _) = rig.run(&[call(H_PUT_TCE_INDIRECT, [LIOBN, win, LIST_GPA, 32])])?;
    if r[0].r3 != H_SUCCESS {
        return Err(format!("INDIRECT returned {}", r[0].r3));
    }
    match kind {
        "sigkill" => {
            println!("ready");
            let mut i = 0u64;
            loop {
                let ioba = win + ((64 + i % 64) << 12);
                rig.run(&[
                    call(H_PUT_TCE, [LIOBN, ioba, 0x50_0000 | TCE_R, 0]),
                    call(H_STUFF_TCE, [LIOBN, ioba, 0, 1]),
                ])?;
                i += 1;
            }
        }
        "unbind" => {
            // Close the device fd only (unbinding waits for it); keep the group, container, window and VM.
            drop(rig.device.take());
            println!("ready");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(e("wait for the unbind"))?;
            // The device is gone from vfio-pci: the window keeps working on its guest table, and whatever the
            // hardware side answers, nothing may crash or WARN.
            let calls = [
                call(H_PUT_TCE, [LIOBN, win + (40 << 12), 0x45_0000 | TCE_R, 0]),
                call(H_STUFF_TCE, [LIOBN, win, 0, 64]),
                call(H_GET_TCE, [LIOBN, win + (40 << 12), 0, 0]),
            ];
            let (r, _) = rig.run(&calls)?;
            println!("after-unbind {} {} {} {:#x}", r[0].r3, r[1].r3, r[2].r3, r[2].r4);
            drop(rig);
            Ok(())
        }
        "vm-destroy" => {
            // Close everything of the VM but the window; the window keeps the VM alive until it goes.
            let Rig { vcpu, window, kdev, vm, device, group, container, mem, .. } = rig;
            drop(vcpu);
            drop(kdev);
            drop(vm);
            println!("ready");
            drop(window);
            drop((device, group, container));
            drop(mem);
            Ok(())
        }
        _ => Err(format!("unknown fault {kind}")),
    }
}

fn wait_ready(child: &mut std::process::Child) -> Result<(), String> {
    let out = child.stdout.take().ok_or("no child stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).map_err(e("read child"))?;
    if line.trim() != "ready" {
        return Err(format!("child did not get ready: {line:?}"));
    }
    Ok(())
}

fn after(baseline: i64, what: &str) -> Result<String, String> {
    // The last references go with the child's files; give the kernel a moment to run the releases.
    let t = Instant::now();
    let mut windows = window_count()?;
    while windows != 0 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        windows = window_count()?;
    }
    if windows != 0 {
        return Err(format!("{what}: {windows} pvtce window(s) left"));
    }
    // Preregistered memory is unpinned from an RCU callback once the container goes.
    let mut pins = pins_outstanding()?;
    while pins != baseline && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        pins = pins_outstanding()?;
    }
    if pins != baseline {
        return Err(format!("{what}: {pins} pages pinned 10 s later, baseline {baseline}"));
    }
    sh("rmmod pvtce").map_err(|err| format!("{what}: the module does not unload: {err}"))?;
    // The group can be taken again, and DMA through a new window works.
    sh("modprobe pvtce")?;
    let rig = Rig::new(Windows::Linked { tce_shift: 12, size: 1 << 28 })?;
    let (page, ioba) = (0x20_0000u64, rig.window_bus()? + 0x4_0000);
    let (r, _) = rig.run(&[call(H_PUT_TCE, [LIOBN, ioba, page | TCE_R | TCE_W, 0])])?;
    if r[0].r3 != H_SUCCESS || !rig.dma_copy(ioba, page, ioba + 0x800, page + 0x800, 21)? {
        return Err(format!("{what}: a new window on the same group does not work"));
    }
    drop(rig);
    Ok(format!("{what}: 0 windows left, pins at baseline ({baseline}), module unloaded, group reused with DMA"))
}

/// Loads pvtce, takes the pin baseline, and starts a child VMM for fault `kind` (stdout piped; stdin piped
/// too when the parent must tell it when to go on). The baseline waits for the pins of the tests before to
/// be released ([`settled_pins`]): read at once, it once counted 6 pages of the previous test that an RCU
/// callback then unpinned, and the count fell below it (2026-12-06, fault-vm-destroy).
fn start(kind: &str, with_stdin: bool) -> Result<(i64, std::process::Child), String> {
    sh("modprobe pvtce")?;
    let baseline = settled_pins()?;
    let child = Command::new("/proc/self/exe")
        .args(["__fault-child", kind])
        .stdin(if with_stdin { Stdio::piped() } else { Stdio::inherit() })
        .stdout(Stdio::piped())
        .spawn()
        .map_err(e("start the child VMM"))?;
    Ok((baseline, child))
}

pub fn sigkill() -> Result<String, String> {
    let (baseline, mut child) = start("sigkill", false)?;
    wait_ready(&mut child)?;
    // Let it run hypercalls, then kill it wherever it is.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().map_err(e("SIGKILL"))?;
    let st = child.wait().map_err(e("wait"))?;
    let r = after(baseline, &format!("SIGKILL mid-sequence ({st})"));
    let _ = sh("rmmod pvtce");
    r
}

/// The device is unbound from vfio-pci while its group is linked to a pvtce window and mapped.
pub fn unbind() -> Result<String, String> {
    let bdf = pvtce_vmm_glue::vfio::find_pci(pvtce_test_support::edu::VENDOR, pvtce_test_support::edu::DEVICE)
        .map_err(e("find edu"))?;
    let (baseline, mut child) = start("unbind", true)?;
    let out = child.stdout.take().ok_or("no child stdout")?;
    let mut lines = BufReader::new(out).lines();
    if lines.next().and_then(|l| l.ok()).as_deref() != Some("ready") {
        return Err("child did not get ready".into());
    }
    pvtce_vmm_glue::vfio::unbind(&bdf).map_err(e("unbind edu from vfio-pci"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or("no child stdin")?;
        writeln!(stdin, "go").map_err(e("tell the child"))?;
    }
    let after_line = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let st = child.wait().map_err(e("wait"))?;
    if !st.success() || !after_line.starts_with("after-unbind") {
        return Err(format!("the child VMM failed after the unbind ({st}): {after_line:?}"));
    }
    // Bind it back for the reuse check (and the tests after this one).
    pvtce_vmm_glue::vfio::bind_vfio_pci(&bdf).map_err(e("bind edu to vfio-pci again"))?;
    let r = after(baseline, &format!("device unbound while linked ({})", after_line.trim()));
    let _ = sh("rmmod pvtce");
    r
}

pub fn vm_destroy() -> Result<String, String> {
    let (baseline, mut child) = start("vm-destroy", false)?;
    wait_ready(&mut child)?;
    let st = child.wait().map_err(e("wait"))?;
    if !st.success() {
        return Err(format!("the child VMM failed: {st}"));
    }
    let r = after(baseline, "VM closed before its window");
    let _ = sh("rmmod pvtce");
    r
}
