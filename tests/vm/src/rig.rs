//! The test rig: edu bound to vfio-pci in a sPAPR v2 container with preregistered guest RAM, a KVM-HV L2
//! guest running the hypercall-table payload, a host window and a guest window over it, linked through the
//! KVM VFIO device. Whichever TCE backend is active when the guest window is created (Linux's built-in code,
//! or pvtce when it is loaded in `PVTCE_MODE_PVTCE`) owns it.

use pvtce_vmm_glue::{edu, kvm, mem::GuestMem, payload, vfio};
use std::os::fd::AsRawFd;
use std::process::Command;

pub const H_GET_TCE: u64 = 0x1C;
pub const H_PUT_TCE: u64 = 0x20;
pub const H_STUFF_TCE: u64 = 0x138;
pub const H_PUT_TCE_INDIRECT: u64 = 0x13C;
pub const H_SUCCESS: i64 = 0;
pub const H_PARAMETER: i64 = -4;
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

/// Field order matters for drop: the vCPU and VM go before the VFIO container and the memory they use.
pub struct Rig {
    pub vcpu: kvm::Vcpu,
    pub table: kvm::TceTable,
    /// Held for the link's lifetime (dropping it releases the group from KVM).
    pub _kdev: kvm::VfioDevice,
    pub _vm: kvm::Vm,
    pub v: vfio::Owned,
    pub mem: GuestMem,
    pub bdf: String,
    /// Bus address of the window (host and guest).
    pub win: u64,
    pub win_size: u64,
    /// Hypercalls that exited to userspace.
    pub exits: u32,
    /// The last few exits (nr, r4..r7), for reports.
    pub exit_log: Vec<(u64, [u64; 4])>,
}

impl Rig {
    /// A window of `2^tce_shift`-byte TCEs, `win_size` bytes, over a host window of the same page size.
    pub fn new(tce_shift: u32, win_size: u64) -> Result<Rig, String> {
        let bdf = vfio::find_pci(edu::VENDOR, edu::DEVICE).map_err(e("find edu"))?;
        let v = vfio::setup(&bdf).map_err(e("VFIO setup"))?;
        let mem = GuestMem::new(RAM).map_err(e("guest RAM"))?;
        v.container.register_memory(mem.host_addr(), RAM as u64).map_err(e("REGISTER_MEMORY"))?;
        // sPAPR v2 ownership leaves the group without a usable window: create one, as QEMU does, and mirror
        // it with the guest window. On the nested pseries L1 the host places it at 1 << 59 (measured).
        let win = v.container.create_window(tce_shift, win_size, 1).map_err(e("VFIO_IOMMU_SPAPR_TCE_CREATE"))?;
        let k = kvm::Kvm::open().map_err(e("open /dev/kvm"))?;
        let vm = k.create_vm().map_err(e("create VM"))?;
        let table = vm
            .create_tce_table(LIOBN, tce_shift, win >> tce_shift, win_size >> tce_shift)
            .map_err(e("KVM_CREATE_SPAPR_TCE_64"))?;
        let kdev = vm.create_vfio_device().map_err(e("KVM VFIO device"))?;
        kdev.add_group(v.group.fd()).map_err(e("KVM_DEV_VFIO_FILE_ADD"))?;
        kdev.link_tce(v.group.fd(), &table).map_err(e("link window to group"))?;
        // SAFETY: `mem` is guest RAM, and the rig drops the vCPU and the VM before it (field order).
        unsafe { vm.set_memory(0, 0, RAM as u64, mem.host_addr()) }.map_err(e("memory slot"))?;
        vm.enable_hcall(H_STUFF_TCE).map_err(e("enable H_STUFF_TCE"))?;
        vm.enable_hcall(H_PUT_TCE_INDIRECT).map_err(e("enable H_PUT_TCE_INDIRECT"))?;
        vm.configure_radix().map_err(e("radix"))?;
        let vcpu = vm.create_vcpu(0).map_err(e("vCPU"))?;
        vcpu.enable_papr().map_err(e("PAPR"))?;
        payload::load(&mem).map_err(e("load payload"))?;
        vcpu.set_entry(payload::ENTRY).map_err(e("entry"))?;
        Ok(Rig { vcpu, table, _kdev: kdev, _vm: vm, v, mem, bdf, win, win_size, exits: 0, exit_log: Vec::new() })
    }

    /// Runs `calls` in L2; returns (r3, r4) per call and the timebase ticks the table took. A hypercall that
    /// exits to userspace is counted and answered [`EXITED`], a value no hypercall returns, so a test sees
    /// exactly which calls left the kernel.
    pub fn run(&mut self, calls: &[payload::Call]) -> Result<(Vec<payload::Ret>, u64), String> {
        let mut exits = 0u32;
        let log = &mut self.exit_log;
        let mut on_hcall = |nr: u64, a: &[u64; 9]| {
            exits += 1;
            if log.len() >= 16 {
                log.remove(0);
            }
            log.push((nr, [a[0], a[1], a[2], a[3]]));
            EXITED as u64
        };
        let r = payload::run(&self.vcpu, &self.mem, calls, &mut on_hcall).map_err(e("run L2"))?;
        self.exits += exits;
        Ok(r)
    }

    /// edu reads 256 bytes at bus `from` and writes them to bus `to`; true if `to`'s L2 page `to_gpa` then
    /// holds exactly the bytes at `from_gpa`.
    pub fn dma_copy(&self, from: u64, from_gpa: u64, to: u64, to_gpa: u64, fill: u8) -> Result<bool, String> {
        dma_copy(&self.mem, &self.v.device, from, from_gpa, to, to_gpa, fill)
    }

    /// Writes an H_PUT_TCE_INDIRECT list (big-endian words) at [`LIST_GPA`].
    pub fn write_list(&self, tces: &[u64]) -> Result<(), String> {
        let bytes: Vec<u8> = tces.iter().flat_map(|t| t.to_be_bytes()).collect();
        self.mem.write(LIST_GPA, &bytes).map_err(e("TCE list"))
    }

    /// pvtce's statistics of the guest window, or None if Linux's built-in code owns it (ENOTTY).
    pub fn pvtce_info(&self) -> Result<Option<pvtce_uapi::pvtce_window_info>, String> {
        let mut info = pvtce_uapi::pvtce_window_info {
            argsz: std::mem::size_of::<pvtce_uapi::pvtce_window_info>() as u32,
            ..Default::default()
        };
        // SAFETY: PVTCE_WINDOW_INFO reads and writes exactly one pvtce_window_info, which `info` is.
        let r = unsafe { libc::ioctl(self.table.fd.as_raw_fd(), pvtce_uapi::PVTCE_WINDOW_INFO, &mut info) };
        if r == 0 {
            return Ok(Some(info));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOTTY) {
            return Ok(None);
        }
        Err(format!("PVTCE_WINDOW_INFO: {err}"))
    }
}

/// How many windows pvtce holds (every VM), from `PVTCE_LIST_WINDOWS`.
pub fn window_count() -> Result<u32, String> {
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/pvtce").map_err(e("open /dev/pvtce"))?;
    let mut l = pvtce_uapi::pvtce_windows {
        argsz: std::mem::size_of::<pvtce_uapi::pvtce_windows>() as u32,
        flags: 0,
        capacity: 0,
        count: 0,
        entries: 0,
    };
    // SAFETY: PVTCE_LIST_WINDOWS reads and writes one pvtce_windows; capacity 0 writes no entries.
    if unsafe { libc::ioctl(f.as_raw_fd(), pvtce_uapi::PVTCE_LIST_WINDOWS, &mut l) } != 0 {
        return Err(format!("PVTCE_LIST_WINDOWS: {}", std::io::Error::last_os_error()));
    }
    Ok(l.count)
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

/// `PVTCE_SET_MODE` on /dev/pvtce: which implementation creates new windows; returns the old mode.
pub fn set_mode(mode: u32) -> Result<u32, String> {
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/pvtce").map_err(e("open /dev/pvtce"))?;
    let mut m =
        pvtce_uapi::pvtce_mode { argsz: std::mem::size_of::<pvtce_uapi::pvtce_mode>() as u32, flags: 0, mode, old: 0 };
    // SAFETY: PVTCE_SET_MODE reads and writes exactly one pvtce_mode, which `m` is.
    if unsafe { libc::ioctl(f.as_raw_fd(), pvtce_uapi::PVTCE_SET_MODE, &mut m) } != 0 {
        return Err(format!("PVTCE_SET_MODE: {}", std::io::Error::last_os_error()));
    }
    Ok(m.old)
}

impl Rig {
    /// `count` hardware entries from `first` (absolute) of the group's table `table`, through /dev/pvtce.
    pub fn host_read(&self, table: u32, first: u64, count: usize) -> Result<Vec<u64>, String> {
        let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/pvtce").map_err(e("open /dev/pvtce"))?;
        let mut out = vec![0u64; count];
        let mut r = pvtce_uapi::pvtce_host_read {
            argsz: std::mem::size_of::<pvtce_uapi::pvtce_host_read>() as u32,
            flags: 0,
            groupfd: self.v.group.fd().as_raw_fd(),
            table,
            first,
            count: count as u64,
            entries: out.as_mut_ptr() as u64,
        };
        // SAFETY: PVTCE_HOST_READ reads one pvtce_host_read and writes `count` u64 at `entries`, which `out`
        // provides.
        if unsafe { libc::ioctl(f.as_raw_fd(), pvtce_uapi::PVTCE_HOST_READ, &mut r) } != 0 {
            return Err(format!("PVTCE_HOST_READ: {}", std::io::Error::last_os_error()));
        }
        Ok(out)
    }

    /// Like [`Rig::host_read`] on whichever of the group's two tables holds the range.
    pub fn host_read_any(&self, first: u64, count: usize) -> Result<Vec<u64>, String> {
        self.host_read(0, first, count)
            .or_else(|e0| self.host_read(1, first, count).map_err(|e1| format!("table 0: {e0}; table 1: {e1}")))
    }

    /// Host physical page → guest physical page for guest RAM, from /proc/self/pagemap (the memory is pinned
    /// by preregistration, so the map stays valid). Lets two VMM processes compare host entries.
    pub fn hpa_pages(&self) -> Result<std::collections::HashMap<u64, u64>, String> {
        use std::os::unix::fs::FileExt;
        let page = 1u64 << 16;
        let f = std::fs::File::open("/proc/self/pagemap").map_err(e("open pagemap"))?;
        let mut map = std::collections::HashMap::new();
        for gpa in (0..RAM as u64).step_by(page as usize) {
            let va = self.mem.host_addr() + gpa;
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, (va / page) * 8).map_err(e("read pagemap"))?;
            let ent = u64::from_le_bytes(b);
            if ent >> 63 == 1 {
                map.insert((ent & ((1 << 55) - 1)) * page, gpa);
            }
        }
        Ok(map)
    }

    /// A second guest window, not linked to any host table.
    pub fn add_window(
        &self,
        liobn: u64,
        shift: u32,
        offset_pages: u64,
        size_pages: u64,
    ) -> Result<kvm::TceTable, String> {
        self._vm
            .create_tce_table(liobn, shift, offset_pages, size_pages)
            .map_err(e("KVM_CREATE_SPAPR_TCE_64 (second window)"))
    }
}

/// [`Rig::dma_copy`] for any rig: guest memory `mem`, edu behind VFIO `device`.
pub fn dma_copy(
    mem: &GuestMem,
    device: &vfio::Device,
    from: u64,
    from_gpa: u64,
    to: u64,
    to_gpa: u64,
    fill: u8,
) -> Result<bool, String> {
    let pattern: Vec<u8> = (0..256u32).map(|i| (i * 7 + u32::from(fill)) as u8).collect();
    mem.write(from_gpa, &pattern).map_err(e("pattern"))?;
    mem.write(to_gpa, &[0u8; 256]).map_err(e("clear"))?;
    let edu = edu::Edu::new(device).map_err(e("edu"))?;
    if !edu.alive().map_err(e("edu liveness"))? {
        return Err("edu liveness check failed".into());
    }
    edu.bus_to_buf(from, 0, 256).map_err(e("DMA bus->edu"))?;
    edu.buf_to_bus(0, to, 256).map_err(e("DMA edu->bus"))?;
    let mut got = vec![0u8; 256];
    mem.read(to_gpa, &mut got).map_err(e("read back"))?;
    Ok(got == pattern)
}

pub fn call(nr: u64, args: [u64; 4]) -> payload::Call {
    payload::Call { nr, args: [args[0], args[1], args[2], args[3], 0] }
}
