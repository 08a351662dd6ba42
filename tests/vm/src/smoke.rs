//! The end-to-end smoke scenario on Linux's own C path: VFIO sPAPR v2 container with preregistered memory, a
//! KVM-HV L2 guest, a window from KVM_CREATE_SPAPR_TCE_64 linked to edu's group, L2's H_PUT_TCE and H_GET_TCE,
//! and an edu DMA through the mapped bus address that must land in exactly the L2 page the TCE names.

use pvtce_vmm_glue::{edu, kvm, mem::GuestMem, payload, vfio};
use std::process::Command;

pub const H_GET_TCE: u64 = 0x1C;
pub const H_PUT_TCE: u64 = 0x20;
pub const H_STUFF_TCE: u64 = 0x138;
pub const H_PUT_TCE_INDIRECT: u64 = 0x13C;
pub const H_SUCCESS: i64 = 0;
pub const H_PARAMETER: i64 = -4;
const LIOBN: u64 = 0x8000_0000;
const TCE_R: u64 = 1;
const TCE_W: u64 = 2;
const RAM: usize = 16 << 20;

/// "what: error: cause: cause ..." with the whole source chain (the errno is usually at the end).
fn e<E: std::error::Error>(what: &'static str) -> impl FnOnce(E) -> String {
    move |err| {
        let mut s = format!("{what}: {err}");
        let mut src = err.source();
        while let Some(c) = src {
            s.push_str(&format!(": {c}"));
            src = c.source();
        }
        s
    }
}

fn sh(cmd: &str) -> Result<String, String> {
    let o = Command::new("/bin/sh").arg("-c").arg(cmd).output().map_err(|err| format!("sh: {err}"))?;
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        Ok(out.trim().to_string())
    } else {
        Err(format!("`{cmd}` failed: {}", out.trim()))
    }
}

/// pvtce.ko loads, reports the 64K host page size, and unloads.
pub fn module_load() -> Result<String, String> {
    sh("modprobe pvtce")?;
    let lsmod = sh("cat /proc/modules")?;
    if !lsmod.lines().any(|l| l.starts_with("pvtce ")) {
        return Err("pvtce not in /proc/modules after modprobe".into());
    }
    sh("rmmod pvtce")?;
    let log = sh("dmesg")?;
    let loaded = log.lines().rev().find(|l| l.contains("pvtce: loaded")).ok_or("no 'pvtce: loaded' line in dmesg")?;
    if !loaded.contains("PAGE_SIZE 65536") {
        return Err(format!("expected a 64K-page host: {loaded}"));
    }
    if !log.contains("pvtce: unloaded") {
        return Err("no 'pvtce: unloaded' line in dmesg".into());
    }
    Ok("modprobe + rmmod, PAGE_SIZE 65536".into())
}

pub fn smoke() -> Result<String, String> {
    let bdf = vfio::find_pci(edu::VENDOR, edu::DEVICE).map_err(e("find edu"))?;
    let v = vfio::setup(&bdf).map_err(e("VFIO setup"))?;
    let info = v.container.info().map_err(e("GET_INFO"))?;
    let mem = GuestMem::new(RAM).map_err(e("guest RAM"))?;
    v.container.register_memory(mem.host_addr(), RAM as u64).map_err(e("REGISTER_MEMORY"))?;

    // sPAPR v2 ownership leaves the group without a usable window: create one with 4K pages of the 32-bit
    // window's size, as QEMU does, and mirror it with the guest window. On the nested pseries L1 the host
    // places it at 1 << 59 (measured), so the guest window is there too.
    let win = v.container.create_window(12, u64::from(info.dma32_size), 1).map_err(e("VFIO_IOMMU_SPAPR_TCE_CREATE"))?;
    let k = kvm::Kvm::open().map_err(e("open /dev/kvm"))?;
    let vm = k.create_vm().map_err(e("create VM"))?;
    let size_pages = u64::from(info.dma32_size) >> 12;
    let table = vm.create_tce_table(LIOBN, 12, win >> 12, size_pages).map_err(e("KVM_CREATE_SPAPR_TCE_64"))?;
    let kdev = vm.create_vfio_device().map_err(e("KVM VFIO device"))?;
    kdev.add_group(v.group.fd()).map_err(e("KVM_DEV_VFIO_FILE_ADD"))?;
    kdev.link_tce(v.group.fd(), &table)
        .map_err(|err| e("link window to group")(err) + &format!(" (host info {info:x?})"))?;
    vm.set_memory(0, 0, RAM as u64, mem.host_addr()).map_err(e("memory slot"))?;
    vm.enable_hcall(H_STUFF_TCE).map_err(e("enable H_STUFF_TCE"))?;
    vm.enable_hcall(H_PUT_TCE_INDIRECT).map_err(e("enable H_PUT_TCE_INDIRECT"))?;
    vm.configure_radix().map_err(e("radix"))?;
    let vcpu = vm.create_vcpu(0).map_err(e("vCPU"))?;
    vcpu.enable_papr().map_err(e("PAPR"))?;
    payload::load(&mem).map_err(e("load payload"))?;
    vcpu.set_entry(payload::ENTRY).map_err(e("entry"))?;

    // The L2 page the TCE will name, filled with a pattern; the page's second half is the DMA's landing place.
    let page: u64 = 0x20_0000;
    let ioba: u64 = win + 0x4_0000;
    let pattern: Vec<u8> = (0..256u32).map(|i| (i * 7 + 3) as u8).collect();
    mem.write(page, &pattern).map_err(e("pattern"))?;
    mem.write(page + 0x800, &[0u8; 256]).map_err(e("clear"))?;

    let mut exits = 0u32;
    let mut on_hcall = |nr: u64, _a: &[u64; 9]| {
        exits += 1;
        eprintln!("smoke: unexpected hypercall exit nr={nr:#x}");
        u64::MAX
    };
    let tce = page | TCE_R | TCE_W;
    let calls = [
        payload::Call { nr: H_PUT_TCE, args: [LIOBN, ioba, tce, 0, 0] },
        payload::Call { nr: H_GET_TCE, args: [LIOBN, ioba, 0, 0, 0] },
        // Outside the window: H_PARAMETER, as Linux answers.
        payload::Call { nr: H_PUT_TCE, args: [LIOBN, win + u64::from(info.dma32_size), tce, 0, 0] },
    ];
    let (rets, tb) = payload::run(&vcpu, &mem, &calls, &mut on_hcall).map_err(e("run L2"))?;
    if exits != 0 {
        return Err(format!("{exits} hypercall(s) exited to userspace; the kernel should handle them all"));
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

    // edu reads the pattern through the TCE and writes it back 0x800 further into the same L2 page.
    let edu = edu::Edu::new(&v.device).map_err(e("edu"))?;
    if !edu.alive().map_err(e("edu liveness"))? {
        return Err("edu liveness check failed".into());
    }
    edu.bus_to_buf(ioba, 0, 256).map_err(e("DMA bus->edu"))?;
    edu.buf_to_bus(0, ioba + 0x800, 256).map_err(e("DMA edu->bus"))?;
    let mut got = vec![0u8; 256];
    mem.read(page + 0x800, &mut got).map_err(e("read back"))?;
    if got != pattern {
        let first = got.iter().zip(&pattern).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!(
            "DMA did not reach the L2 page: byte {first} is {:#x}, expected {:#x}",
            got[first], pattern[first]
        ));
    }
    Ok(format!(
        "edu {bdf} group {} window {win:#x}+{:#x} 4K; L2 H_PUT_TCE/H_GET_TCE = {:#x}, out-of-window = H_PARAMETER, 0 exits, {} tb ticks; edu DMA via ioba {ioba:#x} reached L2 page {page:#x}",
        v.group.id, info.dma32_size, rets[1].r4, tb
    ))
}
