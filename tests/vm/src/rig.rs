//! The one test rig every in-VM test runs on: edu bound to vfio-pci in a sPAPR v2 container with
//! preregistered guest RAM, a KVM-HV VM with the KVM VFIO device, and an L2 vCPU running the hypercall-table
//! payload. It starts with the [`Windows`] a test asks for: one linked window (whichever TCE backend is
//! active when it is created owns it: Linux's built-in code, or pvtce in `PVTCE_MODE_PVTCE`), or none, for
//! tests that make windows through RTAS and pvtce-core's DDW policy ([`HostPe`]).
//!
//! A table's hypercalls that exit to the VMM are answered by one [`Policy`]: counted and left unanswered,
//! answered by the VMM's fallback, or RTAS plus the fallback ([`run_on`] is the only place that does it).

use pvtce_core::ddw::{Pe, PeConfig};
use pvtce_core::types::Liobn;
use pvtce_test_support::edu;
use pvtce_test_support::payload::{self, Reply};
use pvtce_vmm_glue::pvtce::{Control, Mode};
use pvtce_vmm_glue::rtas::{self, Ddw, RtasCall};
use pvtce_vmm_glue::windows::{HostPe, Path};
use pvtce_vmm_glue::{kvm, mem::GuestMem, vfio};
use std::cell::{Cell, RefCell};
use std::process::Command;

pub const H_GET_TCE: u64 = 0x1C;
pub const H_PUT_TCE: u64 = 0x20;
pub const H_STUFF_TCE: u64 = 0x138;
pub const H_PUT_TCE_INDIRECT: u64 = 0x13C;
pub const H_SUCCESS: i64 = 0;
pub const H_PARAMETER: i64 = -4;
pub const H_FUNCTION: i64 = -2;
pub const LIOBN: u64 = 0x8000_0000;
pub const TCE_R: u64 = 1;
pub const TCE_W: u64 = 2;
pub const RAM: usize = 16 << 20;
/// What the rig answers for a hypercall that exited to userspace (no PAPR code has this value).
pub const EXITED: i64 = 0x7e57;
/// Where the guest keeps H_PUT_TCE_INDIRECT lists (4K aligned, inside RAM, above the payload's table).
pub const LIST_GPA: u64 = 0x2_0000;

/// "what: error: cause: cause ..." with the whole source chain (the errno is usually at the end).
pub fn e<E: std::error::Error>(what: &'static str) -> impl FnOnce(E) -> String {
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

pub fn sh(cmd: &str) -> Result<String, String> {
    let o = Command::new("/bin/sh").arg("-c").arg(cmd).output().map_err(|err| format!("sh: {err}"))?;
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        Ok(out.trim().to_string())
    } else {
        Err(format!("`{cmd}` failed: {}", out.trim()))
    }
}

/// The windows a rig starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windows {
    /// One host window of `2^tce_shift`-byte pages and `size` bytes, and a kernel window ([`LIOBN`]) over it
    /// at the same bus address, linked to edu's group. Whichever TCE backend is active when it is created
    /// (Linux's built-in code, or pvtce in `PVTCE_MODE_PVTCE`) owns it.
    Linked { tce_shift: u32, size: u64 },
    /// None: the test makes them as the guest asks, through a [`HostPe`] (pvtce-core's DDW policy).
    /// `add_group` tells KVM about edu's group (KVM_DEV_VFIO_FILE_ADD), which linking a kernel window needs;
    /// a group added but never linked makes KVM WARN when the VFIO device is released (virt/kvm/vfio.c,
    /// kvm_spapr_tce_release_vfio_group), so the fallback-only rigs leave it out.
    Pe { add_group: bool },
}

/// What [`Rig::with`] does differently from [`Rig::new`] (`None`: as `new` does).
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup {
    /// Page shift of the host window under [`Windows::Linked`] (`new`: the guest window's `tce_shift`). A
    /// smaller one makes the kernel split each guest TCE into `2^(tce_shift - host_shift)` host entries, as
    /// QEMU's 16M-page DDW over a 64K-page host window does.
    pub host_shift: Option<u32>,
    /// Bytes of guest RAM (`new`: [`RAM`]).
    pub ram: Option<usize>,
    /// Bytes of it, from guest physical 0, preregistered with the container (`new`: all of it).
    pub registered: Option<u64>,
}

/// Who answers a hypercall that exits to the VMM while L2 runs a table.
pub enum Policy<'p, 'a> {
    /// Nobody: it is counted and answered [`EXITED`], a value no hypercall returns, so a test sees exactly
    /// which calls left the kernel.
    Count,
    /// The VMM's fallback answers TCE hypercalls (pvtce-core, the host table written with VFIO); anything
    /// else is counted in [`Run::other`] and answered H_FUNCTION.
    Fallback(&'p mut HostPe<'a>),
    /// `H_RTAS` is answered by the DDW calls over the PE, the rest as [`Policy::Fallback`].
    RtasFallback(&'p mut Ddw, &'p mut HostPe<'a>),
}

/// What came back from one table, and what the VMM saw meanwhile.
#[derive(Debug, Default)]
pub struct Run {
    pub rets: Vec<payload::Ret>,
    /// Timebase ticks the whole table took, measured in L2.
    pub tb: u64,
    /// `H_RTAS` calls answered.
    pub rtas: u32,
    /// TCE hypercalls the fallback answered.
    pub tce: u32,
    /// Hypercalls nobody answered (all of them under [`Policy::Count`]), and the last one's number.
    pub other: u32,
    pub last_other: Option<u64>,
}

/// The last exits a rig keeps for reports.
const EXIT_LOG: usize = 16;

/// Hypercall exits seen by one or more runs: how many, and the last few (nr, r4..r7).
#[derive(Default)]
pub struct ExitLog {
    pub count: Cell<u32>,
    pub last: RefCell<Vec<(u64, [u64; 4])>>,
}

impl ExitLog {
    fn push(&self, nr: u64, a: &[u64; 9]) {
        self.count.set(self.count.get() + 1);
        let mut last = self.last.borrow_mut();
        if last.len() >= EXIT_LOG {
            last.remove(0);
        }
        last.push((nr, [a[0], a[1], a[2], a[3]]));
    }
}

/// Runs `calls` on `vcpu` (running [`payload::program_at`]`(table)` out of `mem`), every exit answered as
/// `policy` says and logged in `log`. The one place the tests answer exits.
pub fn run_on(
    vcpu: &kvm::Vcpu,
    mem: &GuestMem,
    table: u64,
    calls: &[payload::Call],
    policy: Policy<'_, '_>,
    log: &ExitLog,
) -> Result<Run, String> {
    let mut run = Run::default();
    let mut err = None;
    let (mut ddw, mut hp) = match policy {
        Policy::Count => (None, None),
        Policy::Fallback(hp) => (None, Some(hp)),
        Policy::RtasFallback(ddw, hp) => (Some(ddw), Some(hp)),
    };
    let mut handler = |nr: u64, args: &[u64; 9]| {
        log.push(nr, args);
        let unanswered = Reply { r3: if hp.is_some() { H_FUNCTION as u64 } else { EXITED as u64 }, r4: None };
        let Some(hp) = hp.as_deref_mut() else {
            run.other += 1;
            run.last_other = Some(nr);
            return unanswered;
        };
        if let (Some(ddw), true) = (ddw.as_deref_mut(), nr == rtas::H_RTAS) {
            run.rtas += 1;
            return match ddw.handle(mem, args[0], hp) {
                Ok(Some(_)) => Reply { r3: 0, r4: None },
                Ok(None) => Reply { r3: H_PARAMETER as u64, r4: None },
                Err(x) => {
                    err = Some(e("RTAS")(x));
                    Reply { r3: H_PARAMETER as u64, r4: None }
                }
            };
        }
        match hp.fallback.handle(nr, args) {
            Some(r) => {
                run.tce += 1;
                r
            }
            None => {
                run.other += 1;
                run.last_other = Some(nr);
                unanswered
            }
        }
    };
    let (rets, tb) = payload::run_at(vcpu, mem, table, calls, &mut handler).map_err(e("run L2"))?;
    if let Some(x) = err {
        return Err(x);
    }
    run.rets = rets;
    run.tb = tb;
    Ok(run)
}

/// The test rig. Field order matters for drop: the vCPU, the window and the VM go before the VFIO device,
/// group and container, and those before the memory they use.
pub struct Rig {
    pub vcpu: kvm::Vcpu,
    /// The linked window of [`Windows::Linked`].
    pub window: Option<kvm::Window>,
    /// Held for the links' lifetime (dropping it releases the group from KVM).
    pub kdev: kvm::VfioDevice,
    pub vm: kvm::Vm,
    /// edu; `None` once a test closed it (the unbind fault).
    pub device: Option<vfio::Device>,
    pub group: vfio::Group,
    pub container: vfio::Container,
    /// What VFIO_IOMMU_SPAPR_TCE_GET_INFO reported at set-up.
    pub info: vfio::SpaprInfo,
    pub mem: GuestMem,
    pub bdf: String,
    /// Every hypercall that exited while this rig ran tables.
    pub exits: ExitLog,
}

impl Rig {
    /// edu bound to vfio-pci in a fresh sPAPR v2 container with the guest RAM preregistered, a KVM-HV VM with
    /// the KVM VFIO device, `windows`, and vCPU 0 running the hypercall-table payload.
    pub fn new(windows: Windows) -> Result<Rig, String> {
        Rig::with(windows, Setup::default())
    }

    /// [`Rig::new`] with a [`Setup`] other than the default one.
    pub fn with(windows: Windows, setup: Setup) -> Result<Rig, String> {
        let (ram, registered) = (setup.ram.unwrap_or(RAM), setup.registered.unwrap_or(setup.ram.unwrap_or(RAM) as u64));
        let bdf = vfio::find_pci(edu::VENDOR, edu::DEVICE).map_err(e("find edu"))?;
        let vfio::Owned { container, group, device, .. } = vfio::setup(&bdf).map_err(e("VFIO setup"))?;
        let info = container.info().map_err(e("GET_INFO"))?;
        let mem = GuestMem::new(ram).map_err(e("guest RAM"))?;
        container.register_memory(mem.host_addr(), registered).map_err(e("REGISTER_MEMORY"))?;
        let k = kvm::Kvm::open().map_err(e("open /dev/kvm"))?;
        let vm = k.create_vm().map_err(e("create VM"))?;
        let kdev = vm.create_vfio_device().map_err(e("KVM VFIO device"))?;
        let window = match windows {
            Windows::Linked { tce_shift, size } => {
                // sPAPR v2 ownership leaves the group without a usable window: create one, as QEMU does, and
                // mirror it with the guest window. On the nested pseries L1 the host places it at 1 << 59
                // (measured).
                let host_shift = setup.host_shift.unwrap_or(tce_shift);
                let bus = container.create_window(host_shift, size, 1).map_err(e("VFIO_IOMMU_SPAPR_TCE_CREATE"))?;
                let table = vm
                    .create_window(LIOBN, tce_shift, bus >> tce_shift, size >> tce_shift)
                    .map_err(e("KVM_CREATE_SPAPR_TCE_64"))?;
                kdev.add_group(group.fd()).map_err(e("KVM_DEV_VFIO_FILE_ADD"))?;
                kdev.link_tce(group.fd(), &table).map_err(e("link window to group"))?;
                Some(table)
            }
            Windows::Pe { add_group } => {
                if add_group {
                    kdev.add_group(group.fd()).map_err(e("KVM_DEV_VFIO_FILE_ADD"))?;
                }
                None
            }
        };
        // SAFETY: `mem` is guest RAM that no Rust reference covers, and the rig drops the vCPU and the VM
        // before it (field order).
        let vcpu = unsafe { payload::boot(&vm, &mem) }.map_err(e("L2 vCPU"))?;
        Ok(Rig {
            vcpu,
            window,
            kdev,
            vm,
            device: Some(device),
            group,
            container,
            info,
            mem,
            bdf,
            exits: ExitLog::default(),
        })
    }

    /// The linked window ([`Windows::Linked`]).
    pub fn window(&self) -> Result<&kvm::Window, String> {
        self.window.as_ref().ok_or_else(|| "the rig has no linked window".to_string())
    }

    /// Bus address of the linked window (host and guest).
    pub fn window_bus(&self) -> Result<u64, String> {
        let t = self.window()?;
        Ok(t.offset_pages << t.page_shift)
    }

    /// Bytes of the linked window.
    pub fn window_size(&self) -> Result<u64, String> {
        let t = self.window()?;
        Ok(t.size_pages << t.page_shift)
    }

    /// edu, while the rig has it.
    pub fn device(&self) -> Result<&vfio::Device, String> {
        self.device.as_ref().ok_or_else(|| "edu's device fd was closed".to_string())
    }

    /// The windows of one PE over this rig's VM and container, answered as `path` says.
    pub fn host_pe(&self, path: Path) -> Result<HostPe<'_>, String> {
        HostPe::open(&self.vm, &self.kdev, &self.container, &self.group, &self.mem, path).map_err(e("host PE"))
    }

    /// Runs `calls` in L2, exits answered as `policy` says.
    pub fn run_with(&self, calls: &[payload::Call], policy: Policy<'_, '_>) -> Result<Run, String> {
        run_on(&self.vcpu, &self.mem, payload::TABLE, calls, policy, &self.exits)
    }

    /// [`Rig::run_with`] under [`Policy::Count`]: returns (r3, r4) per call and the timebase ticks the table
    /// took; [`Rig::exited`] counts what left the kernel.
    pub fn run(&self, calls: &[payload::Call]) -> Result<(Vec<payload::Ret>, u64), String> {
        let r = self.run_with(calls, Policy::Count)?;
        Ok((r.rets, r.tb))
    }

    /// Hypercalls that exited to userspace so far.
    pub fn exited(&self) -> u32 {
        self.exits.count.get()
    }

    /// The last few exits (nr, r4..r7), for reports.
    pub fn exit_log(&self) -> Vec<(u64, [u64; 4])> {
        self.exits.last.borrow().clone()
    }

    /// edu reads 256 bytes at bus `from` and writes them to bus `to`; true if `to`'s L2 page `to_gpa` then
    /// holds exactly the bytes at `from_gpa`.
    pub fn dma_copy(&self, from: u64, from_gpa: u64, to: u64, to_gpa: u64, fill: u8) -> Result<bool, String> {
        let pattern: Vec<u8> = (0..256u32).map(|i| (i * 7 + u32::from(fill)) as u8).collect();
        self.mem.write(from_gpa, &pattern).map_err(e("pattern"))?;
        self.mem.write(to_gpa, &[0u8; 256]).map_err(e("clear"))?;
        let edu = edu::Edu::new(self.device()?).map_err(e("edu"))?;
        if !edu.alive().map_err(e("edu liveness"))? {
            return Err("edu liveness check failed".into());
        }
        edu.bus_to_buf(from, 0, 256).map_err(e("DMA bus->edu"))?;
        edu.buf_to_bus(0, to, 256).map_err(e("DMA edu->bus"))?;
        let mut got = vec![0u8; 256];
        self.mem.read(to_gpa, &mut got).map_err(e("read back"))?;
        Ok(got == pattern)
    }

    /// edu copies 256 bytes of a pattern at `ioba` (which must map L2 page `gpa`) to `ioba + 0x800`; they
    /// must land at `gpa + 0x800`.
    pub fn dma_reaches(&self, ioba: u64, gpa: u64, seed: u8) -> Result<(), String> {
        if self.dma_copy(ioba, gpa, ioba + 0x800, gpa + 0x800, seed)? {
            Ok(())
        } else {
            Err(format!("edu DMA through ioba {ioba:#x} did not reach L2 page {gpa:#x}"))
        }
    }

    /// Writes an H_PUT_TCE_INDIRECT list (big-endian words) at [`LIST_GPA`].
    pub fn write_list(&self, tces: &[u64]) -> Result<(), String> {
        let bytes: Vec<u8> = tces.iter().flat_map(|t| t.to_be_bytes()).collect();
        self.mem.write(LIST_GPA, &bytes).map_err(e("TCE list"))
    }

    /// pvtce's statistics of the linked window, or None if Linux's built-in code owns it (ENOTTY).
    pub fn pvtce_info(&self) -> Result<Option<pvtce_uapi::pvtce_window_info>, String> {
        self.window()?.info().map_err(e("PVTCE_WINDOW_INFO"))
    }
}

/// /dev/pvtce, which must be there (pvtce.ko loaded).
pub fn control() -> Result<Control, String> {
    Control::open_loaded().map_err(e("open /dev/pvtce"))
}

/// How many windows pvtce holds (every VM), from `PVTCE_LIST_WINDOWS`.
pub fn window_count() -> Result<u32, String> {
    control()?.window_count().map_err(e("PVTCE_LIST_WINDOWS"))
}

/// Pages pinned with FOLL_PIN and not released yet, over the whole system (/proc/vmstat).
pub fn pins_outstanding() -> Result<i64, String> {
    let v = std::fs::read_to_string("/proc/vmstat").map_err(e("read /proc/vmstat"))?;
    let get = |k: &str| -> Result<i64, String> {
        v.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.trim().parse().ok()))
            .ok_or_else(|| format!("no {k} in /proc/vmstat"))
    };
    Ok(get("nr_foll_pin_acquired ")? - get("nr_foll_pin_released ")?)
}

/// [`pins_outstanding`] once the pins of earlier tests' rigs are gone: their regions are unpinned by RCU
/// callbacks some time after the rig closes, so a baseline read right away counts them. Waits up to 10 s for
/// the count to reach 0 (no rig is open when a test starts) and returns what it is then.
pub fn settled_pins() -> Result<i64, String> {
    let t = std::time::Instant::now();
    let mut p = pins_outstanding()?;
    while p > 0 && t.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        p = pins_outstanding()?;
    }
    Ok(p)
}

impl Rig {
    /// Unregisters all of guest RAM from the container and returns how many pins that released, waiting up to
    /// 10 s for at least `want` (the region is unpinned from an RCU callback); the caller judges the figure.
    pub fn unregister_ram_releasing(&self, want: i64) -> Result<i64, String> {
        let pins0 = pins_outstanding()?;
        self.container.unregister_memory(self.mem.host_addr(), RAM as u64).map_err(e("UNREGISTER_MEMORY"))?;
        let t = std::time::Instant::now();
        let mut released = pins0 - pins_outstanding()?;
        while released < want && t.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            released = pins0 - pins_outstanding()?;
        }
        Ok(released)
    }
}

/// `PVTCE_SET_MODE`: which implementation creates new windows; returns the old mode.
pub fn set_mode(mode: Mode) -> Result<Mode, String> {
    control()?.set_mode(mode).map_err(e("PVTCE_SET_MODE"))
}

impl Rig {
    /// [`host_read_any`] on the rig's group.
    pub fn host_read_any(&self, first: u64, count: usize) -> Result<Vec<u64>, String> {
        host_read_any(&self.group, first, count)
    }

    /// [`hpa_pages`] of the rig's guest RAM.
    pub fn hpa_pages(&self) -> Result<std::collections::HashMap<u64, u64>, String> {
        hpa_pages(&self.mem)
    }

    /// A second guest window, not linked to any host table.
    pub fn add_window(
        &self,
        liobn: u64,
        shift: u32,
        offset_pages: u64,
        size_pages: u64,
    ) -> Result<kvm::Window, String> {
        self.vm
            .create_window(liobn, shift, offset_pages, size_pages)
            .map_err(e("KVM_CREATE_SPAPR_TCE_64 (second window)"))
    }
}

/// `count` hardware entries from `first` (absolute) of whichever of `group`'s two tables holds the range,
/// through /dev/pvtce.
pub fn host_read_any(group: &vfio::Group, first: u64, count: usize) -> Result<Vec<u64>, String> {
    let ctl = control()?;
    let read = |table| ctl.host_read(group, table, first, count).map_err(e("PVTCE_HOST_READ"));
    read(0).or_else(|e0| read(1).map_err(|e1| format!("table 0: {e0}; table 1: {e1}")))
}

/// Host physical page → guest physical page for guest RAM `mem`, from /proc/self/pagemap (the memory is
/// pinned by preregistration, so the map stays valid). Lets two VMM processes compare host entries.
pub fn hpa_pages(mem: &GuestMem) -> Result<std::collections::HashMap<u64, u64>, String> {
    use std::os::unix::fs::FileExt;
    let page = 1u64 << 16;
    let f = std::fs::File::open("/proc/self/pagemap").map_err(e("open pagemap"))?;
    let mut map = std::collections::HashMap::new();
    for gpa in (0..mem.len() as u64).step_by(page as usize) {
        let va = mem.host_addr() + gpa;
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, (va / page) * 8).map_err(e("read pagemap"))?;
        let ent = u64::from_le_bytes(b);
        if ent >> 63 == 1 {
            map.insert((ent & ((1 << 55) - 1)) * page, gpa);
        }
    }
    Ok(map)
}

/// The errno at the bottom of an error's source chain.
pub fn errno_of(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(err);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        cur = c.source();
    }
    None
}

/// Program of the rig's extra vCPU `i` (vCPU id `i + 1`), one 4K page each, clear of the rig's own payload
/// ([`payload::ENTRY`]), table ([`payload::TABLE`]) and list ([`LIST_GPA`]).
pub fn vcpu_code(i: usize) -> u64 {
    0x5_0000 + 0x1000 * i as u64
}

/// Hypercall table of extra vCPU `i` (64 KiB aligned, as [`payload::program_at`] needs).
pub fn vcpu_table(i: usize) -> u64 {
    0x10_0000 + 0x1_0000 * i as u64
}

/// An extra vCPU `i` (id `i + 1`) of `vm` running [`payload::program_at`]`(`[`vcpu_table`]`(i))`, loaded at
/// [`vcpu_code`]`(i)`: several vCPUs of one VM run tables at once, each on a thread of its own.
pub fn extra_vcpu(vm: &kvm::Vm, mem: &GuestMem, i: usize) -> Result<kvm::Vcpu, String> {
    mem.write(vcpu_code(i), &payload::program_at(vcpu_table(i))).map_err(e("payload"))?;
    let v = vm.create_vcpu(i as u64 + 1).map_err(e("vCPU"))?;
    v.enable_papr().map_err(e("PAPR"))?;
    v.set_entry(vcpu_code(i)).map_err(e("entry"))?;
    Ok(v)
}

/// This process's locked_vm (VmLck in /proc/self/status), in kB.
pub fn locked_vm_kb() -> Result<u64, String> {
    let s = std::fs::read_to_string("/proc/self/status").map_err(e("read /proc/self/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmLck in /proc/self/status".into())
}

pub fn call(nr: u64, args: [u64; 4]) -> payload::Call {
    payload::Call { nr, args: [args[0], args[1], args[2], args[3], 0] }
}

/// The PE's two LIOBNs under [`Windows::Pe`]: slot 0 (the default window) and slot 1 (the DDW).
pub const L0: u64 = 0x8000_0000;
pub const L1: u64 = 0x8000_0001;
/// Where the PE tests put RTAS buffers (one per call in a table) and INDIRECT lists.
pub const RTAS_BUF: u64 = 0x3_0000;
pub const LIST: u64 = 0x4_0000;
pub const BUID_HI: u32 = (rtas::BUID >> 32) as u32;
pub const BUID_LO: u32 = rtas::BUID as u32;

/// The RTAS DDW calls of the PE of [`L0`] and [`L1`], with QEMU's defaults.
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

/// Runs RTAS calls from L2 (one table, one H_RTAS each) and returns each call's return words.
pub fn rtas_calls(rig: &Rig, ddw: &mut Ddw, hp: &mut HostPe<'_>, reqs: &[RtasReq]) -> Result<Vec<Vec<i32>>, String> {
    let mut calls = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let gpa = RTAS_BUF + 0x100 * i as u64;
        rig.mem.write(gpa, &RtasCall::encode(r.token, &r.args, r.nret)).map_err(e("RTAS buffer"))?;
        calls.push(payload::Call { nr: rtas::H_RTAS, args: [gpa, 0, 0, 0, 0] });
    }
    let run = rig.run_with(&calls, Policy::RtasFallback(ddw, hp))?;
    if run.rtas != reqs.len() as u32 {
        return Err(format!("{} H_RTAS exits for {} calls", run.rtas, reqs.len()));
    }
    let mut out = Vec::new();
    for (i, (r, ret)) in reqs.iter().zip(&run.rets).enumerate() {
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

/// Runs `f` with pvtce.ko loaded, so the kernel windows it creates are pvtce's; unloads it afterwards (the
/// windows are gone by then).
pub fn with_pvtce(f: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    sh("modprobe pvtce")?;
    let r = f();
    let unload = sh("rmmod pvtce");
    let r = r?;
    unload.map(|_| r)
}
