//! What the vmm-glue tests share: edu in a fresh sPAPR v2 container with preregistered RAM, a KVM-HV VM with
//! the KVM VFIO device, one vCPU running the hypercall-table payload, and a helper that runs a table with
//! H_RTAS and the fallback answered by the VMM.

use pvtce_core::ddw::{Pe, PeConfig};
use pvtce_core::types::Liobn;
use pvtce_vmm_glue::payload::{self, Call, Reply, Ret};
use pvtce_vmm_glue::rtas::{self, Ddw, RtasCall};
use pvtce_vmm_glue::windows::HostPe;
use pvtce_vmm_glue::{edu, kvm, mem::GuestMem, vfio};

pub use crate::rig::{e, H_GET_TCE, H_PARAMETER, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE, H_SUCCESS, RAM};
/// The PE's two LIOBNs: slot 0 (default window) and slot 1 (the DDW).
pub const L0: u64 = 0x8000_0000;
pub const L1: u64 = 0x8000_0001;
/// Where the tests put RTAS buffers (one per call in a table) and INDIRECT lists.
pub const RTAS_BUF: u64 = 0x3_0000;
pub const LIST: u64 = 0x4_0000;
pub const BUID_HI: u32 = (rtas::BUID >> 32) as u32;
pub const BUID_LO: u32 = rtas::BUID as u32;

pub struct Rig {
    pub v: vfio::Owned,
    pub info: vfio::SpaprInfo,
    pub mem: GuestMem,
    pub vm: kvm::Vm,
    pub kdev: kvm::VfioDevice,
    pub vcpu: kvm::Vcpu,
}

impl Rig {
    /// `add_group`: tell KVM about edu's group (KVM_DEV_VFIO_FILE_ADD). Needed to link a kernel window; a
    /// group added but never linked makes KVM WARN when the VFIO device is released (virt/kvm/vfio.c,
    /// kvm_spapr_tce_release_vfio_group), so the fallback-only rigs leave it out.
    pub fn new(add_group: bool) -> Result<Rig, String> {
        let bdf = vfio::find_pci(edu::VENDOR, edu::DEVICE).map_err(e("find edu"))?;
        let v = vfio::setup(&bdf).map_err(e("VFIO setup"))?;
        let info = v.container.info().map_err(e("GET_INFO"))?;
        let mem = GuestMem::new(RAM).map_err(e("guest RAM"))?;
        v.container.register_memory(mem.host_addr(), RAM as u64).map_err(e("REGISTER_MEMORY"))?;
        let k = kvm::Kvm::open().map_err(e("open /dev/kvm"))?;
        let vm = k.create_vm().map_err(e("create VM"))?;
        let kdev = vm.create_vfio_device().map_err(e("KVM VFIO device"))?;
        if add_group {
            kdev.add_group(v.group.fd()).map_err(e("KVM_DEV_VFIO_FILE_ADD"))?;
        }
        // SAFETY: `mem` is guest RAM; the rig runs the vCPU only while it lives, and is dropped whole.
        let vcpu = unsafe { payload::boot(&vm, &mem) }.map_err(e("L2 vCPU"))?;
        Ok(Rig { v, info, mem, vm, kdev, vcpu })
    }
}

pub fn new_ddw() -> Ddw {
    Ddw::new(Pe::new(PeConfig::qemu_default([Liobn(L0), Liobn(L1)])))
}

/// One RTAS call for a table: its buffer goes to `RTAS_BUF + 0x100 * slot`.
pub struct RtasReq {
    pub token: u32,
    pub args: Vec<u32>,
    pub nret: u32,
}

pub fn query() -> RtasReq {
    RtasReq { token: rtas::TOKEN_QUERY, args: vec![0, BUID_HI, BUID_LO], nret: 5 }
}
pub fn create(page_shift: u32, window_shift: u32) -> RtasReq {
    RtasReq { token: rtas::TOKEN_CREATE, args: vec![0, BUID_HI, BUID_LO, page_shift, window_shift], nret: 4 }
}
pub fn remove(liobn: u64) -> RtasReq {
    RtasReq { token: rtas::TOKEN_REMOVE, args: vec![liobn as u32], nret: 1 }
}
pub fn reset() -> RtasReq {
    RtasReq { token: rtas::TOKEN_RESET, args: vec![0, BUID_HI, BUID_LO], nret: 1 }
}

/// What the VMM saw while L2 ran a table.
#[derive(Default, Debug)]
pub struct Exits {
    pub rtas: u32,
    pub tce: u32,
    pub other: u32,
    /// Timebase ticks the whole table took, measured in L2.
    pub tb: u64,
}

/// Runs `calls` in L2 with H_RTAS answered by `ddw` over `hp` and TCE hypercalls that exit answered by the
/// fallback.
pub fn run(rig: &Rig, ddw: &mut Ddw, hp: &mut HostPe<'_>, calls: &[Call]) -> Result<(Vec<Ret>, Exits), String> {
    let mut exits = Exits::default();
    let mut err = None;
    let mut handler = |nr: u64, args: &[u64; 9]| {
        if nr == rtas::H_RTAS {
            exits.rtas += 1;
            match ddw.handle(&rig.mem, args[0], hp) {
                Ok(Some(_)) => return Reply { r3: 0, r4: None },
                Ok(None) => return Reply { r3: H_PARAMETER as u64, r4: None },
                Err(x) => {
                    err = Some(e("RTAS")(x));
                    return Reply { r3: H_PARAMETER as u64, r4: None };
                }
            }
        }
        match hp.fallback.handle(nr, args) {
            Some(r) => {
                exits.tce += 1;
                r
            }
            None => {
                exits.other += 1;
                // H_FUNCTION for anything else.
                Reply { r3: (-2i64) as u64, r4: None }
            }
        }
    };
    let (rets, tb) = payload::run_full(&rig.vcpu, &rig.mem, calls, &mut handler).map_err(e("run L2"))?;
    if let Some(x) = err {
        return Err(x);
    }
    exits.tb = tb;
    Ok((rets, exits))
}

/// Runs RTAS calls from L2 (one table, one H_RTAS each) and returns each call's return words.
pub fn rtas_calls(rig: &Rig, ddw: &mut Ddw, hp: &mut HostPe<'_>, reqs: &[RtasReq]) -> Result<Vec<Vec<i32>>, String> {
    let mut calls = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let gpa = RTAS_BUF + 0x100 * i as u64;
        rig.mem.write(gpa, &RtasCall::encode(r.token, &r.args, r.nret)).map_err(e("RTAS buffer"))?;
        calls.push(Call { nr: rtas::H_RTAS, args: [gpa, 0, 0, 0, 0] });
    }
    let (rets, exits) = run(rig, ddw, hp, &calls)?;
    if exits.rtas != reqs.len() as u32 {
        return Err(format!("{} H_RTAS exits for {} calls", exits.rtas, reqs.len()));
    }
    let mut out = Vec::new();
    for (i, (r, ret)) in reqs.iter().zip(&rets).enumerate() {
        if ret.r3 != H_SUCCESS {
            return Err(format!("H_RTAS {i} returned {}", ret.r3));
        }
        let gpa = RTAS_BUF + 0x100 * i as u64;
        let words: Result<Vec<i32>, _> =
            (0..r.nret).map(|k| rtas::read_ret(&rig.mem, gpa, r.args.len() as u32, k).map(|w| w as i32)).collect();
        out.push(words.map_err(e("RTAS returns"))?);
    }
    Ok(out)
}

/// edu copies 256 bytes of a pattern at `ioba` (which must map L2 page `gpa`) to `ioba + 0x800`; they must
/// land at `gpa + 0x800` ([`crate::rig::dma_copy`]).
pub fn dma_reaches(rig: &Rig, ioba: u64, gpa: u64, seed: u8) -> Result<(), String> {
    if crate::rig::dma_copy(&rig.mem, &rig.v.device, ioba, gpa, ioba + 0x800, gpa + 0x800, seed)? {
        Ok(())
    } else {
        Err(format!("edu DMA through ioba {ioba:#x} did not reach L2 page {gpa:#x}"))
    }
}

/// Runs `f` with pvtce.ko loaded, so the kernel windows it creates are pvtce's; unloads it afterwards (the
/// windows are gone by then).
pub fn with_pvtce(f: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    crate::rig::sh("modprobe pvtce")?;
    let r = f();
    let unload = crate::rig::sh("rmmod pvtce");
    let r = r?;
    unload.map(|_| r)
}
