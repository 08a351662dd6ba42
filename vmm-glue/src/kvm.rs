//! KVM for a PAPR (pseries) guest on a KVM-HV host: VM, memory slots, TCE windows, the KVM VFIO device and vCPUs.
//! kvm-bindings and kvm-ioctls have no powerpc support: the uAPI structs are generated from the built kernel's
//! headers ([`crate::sys`], `gen-kvm.sh`) and the ioctls are typed functions there.

use crate::error::{Error, Result};
use crate::sys::{
    self, kvm_create_spapr_tce_64, kvm_enable_cap, kvm_ppc_mmuv3_cfg, kvm_regs, kvm_userspace_memory_region,
};
use crate::sys::{kvm_run, KVM_PPC_MMUV3_GTSE, KVM_PPC_MMUV3_RADIX, PATB_GR};
use crate::sys::{KVM_CAP_PPC_ENABLE_HCALL, KVM_CAP_PPC_PAPR, KVM_DEV_TYPE_VFIO, KVM_EXIT_MMIO, KVM_EXIT_PAPR_HCALL};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::{addr_of, addr_of_mut};

fn kerr(name: &'static str, what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Ioctl { name, what, source }
}

pub struct Kvm {
    file: File,
}

impl Kvm {
    pub fn open() -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map_err(|source| Error::Open { path: "/dev/kvm".into(), source })?;
        Ok(Kvm { file })
    }

    pub fn check_extension(&self, cap: u32) -> Result<i32> {
        sys::kvm_check_extension(self.file.as_fd(), cap).map_err(kerr("KVM_CHECK_EXTENSION", "/dev/kvm"))
    }

    /// Creates a VM of the default type (KVM-HV when kvm-hv is loaded).
    pub fn create_vm(&self) -> Result<Vm> {
        let fd = sys::kvm_create_vm(self.file.as_fd()).map_err(kerr("KVM_CREATE_VM", "/dev/kvm"))?;
        let run_size =
            sys::kvm_get_vcpu_mmap_size(self.file.as_fd()).map_err(kerr("KVM_GET_VCPU_MMAP_SIZE", "/dev/kvm"))?;
        Ok(Vm { fd, run_size })
    }
}

pub struct Vm {
    fd: OwnedFd,
    run_size: usize,
}

/// A guest TCE window created with `KVM_CREATE_SPAPR_TCE_64`: its fd is the table (mmap'able).
pub struct Window {
    pub fd: OwnedFd,
    pub liobn: u64,
    pub page_shift: u32,
    pub offset_pages: u64,
    pub size_pages: u64,
}

pub struct VfioDevice {
    fd: OwnedFd,
}

/// A read-only view of a window's guest-visible table (the table fd's mmap): what H_GET_TCE answers.
///
/// The mapping holds the window's file open, so the window lives on in the kernel while a view exists:
/// the view borrows its [`Window`], and the window cannot be dropped (removed) before it.
///
/// # Invariants
/// `ptr` is a live read-only shared mapping of `len` bytes (at least `entries * 8`) until drop.
pub struct TableView<'a> {
    ptr: *mut u8,
    len: usize,
    entries: u64,
    _window: std::marker::PhantomData<&'a Window>,
}

impl TableView<'_> {
    /// Entry `index` (window-relative) as KVM stores it (native-endian), `None` past the end.
    pub fn get(&self, index: u64) -> Option<u64> {
        if index >= self.entries {
            return None;
        }
        // SAFETY: `index < entries` so the 8 bytes lie inside the mapping (type invariant); the kernel may
        // change the entry concurrently, hence a volatile read of plain data; the mapping is page aligned and
        // so is every 8-byte slot.
        Some(unsafe { std::ptr::read_volatile(self.ptr.add(index as usize * 8).cast::<u64>()) })
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }
}

impl Drop for TableView<'_> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant `ptr`/`len` is our mapping; no reference into it escapes.
        unsafe { sys::munmap(self.ptr, self.len) };
    }
}

impl Window {
    /// Maps the guest-visible table for reading (the kernel provides its pages on first touch: reading an
    /// entry that was never written gives 0). Works for Linux's windows and for pvtce's. Both kernels' table
    /// mappings are writable too ([`Window::write_entry`] maps one page read-write, as QEMU does on
    /// incoming migration); this view asks for PROT_READ only because it only reads.
    pub fn view(&self) -> Result<TableView<'_>> {
        let liobn = self.liobn;
        let bytes = self.size_pages.checked_mul(8).and_then(|b| usize::try_from(b).ok());
        let page = host_page_size();
        let len = bytes.and_then(|b| b.checked_next_multiple_of(page)).ok_or(Error::TableMap {
            liobn,
            len: 0,
            source: std::io::Error::from_raw_os_error(libc::EOVERFLOW),
        })?;
        let ptr = sys::mmap_ro(self.fd.as_fd(), len).map_err(|source| Error::TableMap { liobn, len, source })?;
        // INVARIANT: `ptr` maps `len >= size_pages * 8` bytes.
        Ok(TableView { ptr, len, entries: self.size_pages, _window: std::marker::PhantomData })
    }

    /// Writes entry `index` (window-relative, native-endian) through a read-write mapping of the table, as
    /// QEMU does when it restores a table on incoming migration.
    pub fn write_entry(&self, index: u64, value: u64) -> Result<()> {
        let liobn = self.liobn;
        if index >= self.size_pages {
            return Err(Error::TableMap { liobn, len: 0, source: std::io::Error::from_raw_os_error(libc::EINVAL) });
        }
        let page = host_page_size() as u64;
        let byte = index * 8;
        let off = byte / page * page;
        let len = page as usize;
        let ptr = sys::mmap_shared(Some(self.fd.as_fd()), len, off as i64).map_err(|source| Error::TableMap {
            liobn,
            len,
            source,
        })?;
        // SAFETY: `ptr` maps `len` bytes and `byte - off < len` is 8-byte aligned; the kernel may read the
        // entry concurrently, hence a volatile store of plain data.
        unsafe { std::ptr::write_volatile(ptr.add((byte - off) as usize).cast::<u64>(), value) };
        // SAFETY: `ptr`/`len` is the mapping made above; no reference into it remains.
        unsafe { sys::munmap(ptr, len) };
        Ok(())
    }

    /// pvtce's statistics of this window (PVTCE_WINDOW_INFO). `Ok(None)` when the table fd answers ENOTTY:
    /// the window was created by Linux's own code, not by pvtce.
    pub fn info(&self) -> Result<Option<pvtce_uapi::pvtce_window_info>> {
        crate::pvtce::window_info(self.fd.as_fd(), self.liobn)
    }

    /// pvtce's bare host-table update (PVTCE_WINDOW_EXCHANGE): maps `count` window entries from `first` to
    /// this VMM's preregistered pages from `ua`, then clears them; returns the timebase ticks of the two
    /// passes, each `count` exchanges and one invalidation.
    pub fn bare_exchange(&self, first: u64, count: u64, ua: u64) -> Result<(u64, u64)> {
        crate::pvtce::window_exchange(self.fd.as_fd(), self.liobn, first, count, ua)
    }
}

/// The host's page size (64 KiB on the pvtce L1).
pub fn host_page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

impl Vm {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Backs guest physical `[gpa, gpa + size)` with this process's memory at `host_addr` (memory slot `slot`).
    ///
    /// # Safety
    /// `[host_addr, host_addr + size)` must be a mapping of this process that stays mapped for as long as a
    /// vCPU of this VM may run (until the VM is dropped, or the slot replaced), and no Rust reference may cover
    /// it: the guest reads and writes it behind the compiler's back. [`crate::mem::GuestMem`] is such memory
    /// when it outlives the VM's vCPUs.
    pub unsafe fn set_memory(&self, slot: u32, gpa: u64, size: u64, host_addr: u64) -> Result<()> {
        let r = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host_addr,
        };
        // SAFETY: the caller's promise for the range is this function's own `# Safety` contract.
        unsafe { sys::kvm_set_user_memory_region(self.fd(), &r) }.map_err(kerr("KVM_SET_USER_MEMORY_REGION", "VM"))?;
        Ok(())
    }

    pub fn enable_cap(&self, cap: u32, args: [u64; 4]) -> Result<()> {
        let c = kvm_enable_cap { cap, args, ..Default::default() };
        sys::kvm_enable_cap(self.fd(), &c).map_err(kerr("KVM_ENABLE_CAP", "VM"))?;
        Ok(())
    }

    /// Lets the kernel handle hypercall `nr` (H_STUFF_TCE and H_PUT_TCE_INDIRECT are off by default).
    pub fn enable_hcall(&self, nr: u64) -> Result<()> {
        self.enable_cap(KVM_CAP_PPC_ENABLE_HCALL, [nr, 1, 0, 0])
    }

    /// Sends hypercall `nr` to userspace (KVM_EXIT_PAPR_HCALL) instead of handling it in the kernel; with all
    /// four TCE hypercalls off, an existing kernel window is bypassed and the VMM answers them.
    pub fn disable_hcall(&self, nr: u64) -> Result<()> {
        self.enable_cap(KVM_CAP_PPC_ENABLE_HCALL, [nr, 0, 0, 0])
    }

    /// Radix guest with a (empty) process table: enough for a real-mode payload under nested KVM-HV.
    pub fn configure_radix(&self) -> Result<()> {
        let flags = u64::from(KVM_PPC_MMUV3_RADIX | KVM_PPC_MMUV3_GTSE);
        let c = kvm_ppc_mmuv3_cfg { flags, process_table: PATB_GR };
        sys::kvm_ppc_configure_v3_mmu(self.fd(), &c).map_err(kerr("KVM_PPC_CONFIGURE_V3_MMU", "VM"))?;
        Ok(())
    }

    pub fn create_window(&self, liobn: u64, page_shift: u32, offset_pages: u64, size_pages: u64) -> Result<Window> {
        let a = kvm_create_spapr_tce_64 { liobn, page_shift, flags: 0, offset: offset_pages, size: size_pages };
        let fd = sys::kvm_create_spapr_tce_64(self.fd(), &a).map_err(kerr("KVM_CREATE_SPAPR_TCE_64", "VM"))?;
        Ok(Window { fd, liobn, page_shift, offset_pages, size_pages })
    }

    pub fn create_vfio_device(&self) -> Result<VfioDevice> {
        let fd = sys::kvm_create_device(self.fd(), KVM_DEV_TYPE_VFIO).map_err(kerr("KVM_CREATE_DEVICE", "VM"))?;
        Ok(VfioDevice { fd })
    }

    pub fn create_vcpu(&self, id: u64) -> Result<Vcpu> {
        if self.run_size < std::mem::size_of::<kvm_run>() {
            return Err(Error::Mmap {
                what: "kvm_run",
                len: self.run_size,
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let fd = sys::kvm_create_vcpu(self.fd(), id).map_err(kerr("KVM_CREATE_VCPU", "VM"))?;
        let run = sys::mmap_shared(Some(fd.as_fd()), self.run_size, 0).map_err(|source| Error::Mmap {
            what: "kvm_run",
            len: self.run_size,
            source,
        })?;
        // INVARIANT: `run` maps `run_size` bytes of the vCPU's kvm_run.
        Ok(Vcpu { fd, run, run_size: self.run_size })
    }
}

impl VfioDevice {
    /// Tells KVM about a VFIO group (KVM_DEV_VFIO_FILE_ADD).
    pub fn add_group(&self, group: BorrowedFd<'_>) -> Result<()> {
        sys::kvm_vfio_file_add(self.fd.as_fd(), group).map_err(kerr("KVM_DEV_VFIO_FILE_ADD", "KVM VFIO device"))
    }

    /// Removes a VFIO group from KVM (KVM_DEV_VFIO_FILE_DEL): every link of a TCE window to its tables goes.
    pub fn del_group(&self, group: BorrowedFd<'_>) -> Result<()> {
        sys::kvm_vfio_file_del(self.fd.as_fd(), group).map_err(kerr("KVM_DEV_VFIO_FILE_DEL", "KVM VFIO device"))
    }

    /// Links a TCE window to the group's hardware table (KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE).
    pub fn link_tce(&self, group: BorrowedFd<'_>, table: &Window) -> Result<()> {
        sys::kvm_vfio_group_set_spapr_tce(self.fd.as_fd(), group, table.fd.as_fd())
            .map_err(kerr("KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE", "KVM VFIO device"))
    }
}

/// # Invariants
/// `run` is a live mapping of `run_size` bytes (at least `size_of::<kvm_run>()`) of this vCPU's
/// `struct kvm_run`, page aligned.
pub struct Vcpu {
    fd: OwnedFd,
    run: *mut u8,
    run_size: usize,
}

// SAFETY: a vCPU may move to another thread (KVM_RUN from a new thread is allowed; KVM follows the task, as
// rust-vmm's kvm-ioctls `VcpuFd` is `Send`). `run` is a private mapping of this vCPU's kvm_run that moves with
// it; nothing else holds it, and `Vcpu` is not `Sync`, so only one thread touches it at a time.
unsafe impl Send for Vcpu {}

/// Why `KVM_RUN` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A guest access outside its memory slots.
    Mmio { addr: u64, is_write: bool, data: u64 },
    /// A hypercall the kernel did not handle (`nr`, args r4..r12).
    PaprHcall { nr: u64, args: [u64; 9] },
}

/// What the VMM answers to a hypercall that exited: r3 and, when set, r4 (see [`Vcpu::reply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub r3: u64,
    pub r4: Option<u64>,
}

pub const MSR_SF: u64 = 1 << 63;
pub const MSR_ME: u64 = 1 << 12;
pub const MSR_LE: u64 = 1;

impl Vcpu {
    pub fn enable_papr(&self) -> Result<()> {
        let c = kvm_enable_cap { cap: KVM_CAP_PPC_PAPR, ..Default::default() };
        sys::kvm_enable_cap(self.fd.as_fd(), &c).map_err(kerr("KVM_ENABLE_CAP(PPC_PAPR)", "vCPU"))?;
        Ok(())
    }

    pub fn regs(&self) -> Result<kvm_regs> {
        sys::kvm_get_regs(self.fd.as_fd()).map_err(kerr("KVM_GET_REGS", "vCPU"))
    }

    /// The guest's 64-bit register `id` (`KVM_GET_ONE_REG`, e.g. [`sys::KVM_REG_PPC_FPR0`]).
    pub fn one_reg(&self, id: u64) -> Result<u64> {
        sys::kvm_get_one_reg_u64(self.fd.as_fd(), id).map_err(kerr("KVM_GET_ONE_REG", "vCPU"))
    }

    /// Sets the guest's 64-bit register `id` (`KVM_SET_ONE_REG`, e.g. [`sys::KVM_REG_PPC_MMCR0`]).
    pub fn set_one_reg(&self, id: u64, value: u64) -> Result<()> {
        sys::kvm_set_one_reg_u64(self.fd.as_fd(), id, value).map_err(kerr("KVM_SET_ONE_REG", "vCPU"))
    }

    /// The vCPU's statistics `names` (the first item of each one's data), read in one pass through
    /// `KVM_GET_STATS_FD`, in the order asked; `None` for a name the kernel does not have.
    pub fn stats(&self, names: &[&str]) -> Result<Vec<Option<u64>>> {
        use std::mem::{offset_of, size_of};
        use std::os::unix::fs::FileExt;
        use sys::{kvm_stats_desc, kvm_stats_header};
        let fd = sys::kvm_get_stats_fd(self.fd.as_fd()).map_err(kerr("KVM_GET_STATS_FD", "vCPU"))?;
        let f = File::from(fd);
        let read = |at: u64, len: usize| -> Result<Vec<u8>> {
            let mut b = vec![0u8; len];
            f.read_exact_at(&mut b, at).map_err(kerr("read of KVM_GET_STATS_FD", "vCPU"))?;
            Ok(b)
        };
        let word = |b: &[u8], at: usize| b.get(at..at + 4).map_or(0, |w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        // `struct kvm_stats_header`, then `num_desc` descriptors of `kvm_stats_desc` + `name_size` bytes each.
        let h = read(0, size_of::<kvm_stats_header>())?;
        let name_size = word(&h, offset_of!(kvm_stats_header, name_size)) as usize;
        let num_desc = word(&h, offset_of!(kvm_stats_header, num_desc)) as usize;
        let desc_offset = word(&h, offset_of!(kvm_stats_header, desc_offset));
        let data_offset = u64::from(word(&h, offset_of!(kvm_stats_header, data_offset)));
        let fixed = size_of::<kvm_stats_desc>();
        let stride = fixed + name_size;
        let descs = read(u64::from(desc_offset), stride * num_desc)?;
        let mut found = vec![None; names.len()];
        for d in descs.chunks_exact(stride) {
            let raw = &d[fixed..];
            let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
            if let Some(k) = names.iter().position(|n| n.as_bytes() == &raw[..end]) {
                // `offset` is the statistic's place in the data block.
                let v = read(data_offset + u64::from(word(d, offset_of!(kvm_stats_desc, offset))), 8)?;
                found[k] = Some(u64::from_ne_bytes(v.try_into().unwrap_or([0; 8])));
            }
        }
        Ok(found)
    }

    pub fn set_regs(&self, r: &kvm_regs) -> Result<()> {
        sys::kvm_set_regs(self.fd.as_fd(), r).map_err(kerr("KVM_SET_REGS", "vCPU"))?;
        Ok(())
    }

    /// Starts the vCPU in 64-bit little-endian real mode at `pc`.
    pub fn set_entry(&self, pc: u64) -> Result<()> {
        let mut r = self.regs()?;
        r.pc = pc;
        r.msr = MSR_SF | MSR_ME | MSR_LE;
        self.set_regs(&r)
    }

    fn kvm_run(&self) -> *mut kvm_run {
        self.run.cast()
    }

    /// Runs until an exit userspace must handle; retries on EINTR.
    pub fn run(&self) -> Result<Exit> {
        loop {
            match sys::kvm_run(self.fd.as_fd()) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) || e.raw_os_error() == Some(libc::EAGAIN) => continue,
                Err(source) => return Err(Error::Ioctl { name: "KVM_RUN", what: "vCPU", source }),
            }
        }
        self.last_exit()
    }

    /// The vCPU's fd, for callers that issue `KVM_RUN` themselves (then [`Vcpu::last_exit`] decodes it).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Why the last `KVM_RUN` returned.
    pub fn last_exit(&self) -> Result<Exit> {
        let run = self.kvm_run();
        // SAFETY: `run` maps a whole `struct kvm_run` (type invariant); the kernel writes it only inside
        // KVM_RUN, which no other thread issues on this vCPU while `&self` reads it (the vCPU fd is ours);
        // volatile reads of plain integers through raw pointers, no reference into the mapping.
        unsafe {
            let reason = addr_of!((*run).exit_reason).read_volatile();
            let u = addr_of!((*run).__bindgen_anon_1);
            match reason {
                KVM_EXIT_MMIO => {
                    let m = addr_of!((*u).mmio);
                    let addr = addr_of!((*m).phys_addr).read_volatile();
                    let data = u64::from_ne_bytes(addr_of!((*m).data).read_volatile());
                    let is_write = addr_of!((*m).is_write).read_volatile() != 0;
                    Ok(Exit::Mmio { addr, is_write, data })
                }
                KVM_EXIT_PAPR_HCALL => {
                    let h = addr_of!((*u).papr_hcall);
                    let nr = addr_of!((*h).nr).read_volatile();
                    let args = addr_of!((*h).args).read_volatile();
                    Ok(Exit::PaprHcall { nr, args })
                }
                other => Err(Error::UnexpectedExit(other)),
            }
        }
    }

    /// Sets the return value of a hypercall that exited to userspace (read by the next KVM_RUN).
    pub fn set_hcall_ret(&self, ret: u64) {
        let run = self.kvm_run();
        // SAFETY: as in `last_exit`; the kernel reads `papr_hcall.ret` on the next KVM_RUN only.
        unsafe { addr_of_mut!((*run).__bindgen_anon_1.papr_hcall.ret).write_volatile(ret) }
    }

    /// Sets what the guest finds in r4 after the hypercall (KVM copies `papr_hcall.args[0..9]` back to
    /// r4..r12 on the next KVM_RUN; H_GET_TCE returns its TCE there).
    pub fn set_hcall_r4(&self, r4: u64) {
        let run = self.kvm_run();
        // SAFETY: as in `set_hcall_ret`.
        unsafe { addr_of_mut!((*run).__bindgen_anon_1.papr_hcall.args[0]).write_volatile(r4) }
    }

    /// Answers the hypercall that exited: r3, and r4 when the reply has one.
    pub fn reply(&self, r: Reply) {
        self.set_hcall_ret(r.r3);
        if let Some(r4) = r.r4 {
            self.set_hcall_r4(r4);
        }
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        // SAFETY: by the type invariant `run`/`run_size` is our mapping, and no reference into it escapes.
        unsafe { sys::munmap(self.run, self.run_size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_on(path: &str, size_pages: u64) -> Window {
        let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
        Window { fd: OwnedFd::from(f), liobn: 0x8000_0000, page_shift: 12, offset_pages: 0, size_pages }
    }

    // qemu-user (the ppc64le runner) answers the pvtce ioctl ENOSYS itself, so these run on the host only.
    #[cfg(not(target_arch = "powerpc64"))]
    #[test]
    fn a_table_that_is_not_pvtce_s_has_no_info_and_maps() {
        // /dev/zero stands for a table fd of Linux's C path: PVTCE_WINDOW_INFO is ENOTTY, mmap works.
        let t = table_on("/dev/zero", 10);
        assert!(t.info().unwrap().is_none());
        let v = t.view().unwrap();
        assert_eq!((v.get(0), v.get(9), v.get(10)), (Some(0), Some(0), None));
        assert_eq!(v.entries(), 10);
    }

    #[test]
    fn a_table_that_cannot_be_mapped_reports_its_liobn() {
        // /dev/null takes no mmap: ENODEV, reported with the window's LIOBN.
        let t = table_on("/dev/null", 10);
        let r = t.view();
        match r {
            Err(Error::TableMap { liobn: 0x8000_0000, .. }) | Err(Error::WindowInfo { liobn: 0x8000_0000, .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("/dev/null mapped"),
        }
    }
}
