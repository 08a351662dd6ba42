//! `KVM_RUN` must leave the VMM's FP and vector registers as they were. In the 7.3 L1 it did not always (patch
//! 0004): a reschedule inside `KVM_RUN` reloaded the VMM's state, the guest's was loaded over it, and the VMM
//! came back with the guest's registers. A Rust VMM keeps constants in callee-saved vector registers across
//! the ioctl, so its hypercall tables then held zeros where numbers and LIOBNs belonged: the "hypercall 0"
//! the earlier tests absorbed as a re-executed `sc 1`.
//!
//! The test issues `KVM_RUN` from inline assembly with f0 and v8 holding a pattern, and runs an instrumented
//! copy of the payload that records, per entry, the number L2 loaded, the passes past `sc 1` and the entry
//! re-read afterwards; at a hypercall that reaches the VMM, r10 says which entry L2 was on and r11 what it
//! loaded.

use crate::rig::*;
use pvtce_test_support::asm::Asm;
use pvtce_test_support::payload::{self, DONE_MMIO, ENTRY, TABLE};
use pvtce_vmm_glue::kvm::Exit;
use pvtce_vmm_glue::pvtce::Mode;

const ESIZE: u64 = 128;

/// One system call `nr(a0, a1, a2)` issued with f0 (vs0) and v8 (vs40) holding `pat`; returns (r3, error,
/// f0 after, v8 after). Linux preserves every FP and vector register across a system call, volatile ones
/// included, so both must come back as `pat`.
#[cfg(target_arch = "powerpc64")]
fn syscall_keeping(nr: u64, a0: u64, a1: u64, a2: u64, pat: u64) -> (u64, bool, u64, u64) {
    let (r3, cr, f, v): (u64, u64, u64, u64);
    // SAFETY: a plain system call; every register it or the kernel may change is declared clobbered, and the
    // arguments are the caller's (KVM_RUN on a vCPU fd, or getpid).
    unsafe {
        core::arch::asm!(
            "mtvsrd 0, {p}",
            "mtvsrd 40, {p}",
            "sc",
            "mfcr {cr}",
            "mfvsrd {f}, 0",
            "mfvsrd {v}, 40",
            p = in(reg) pat, cr = out(reg) cr, f = out(reg) f, v = out(reg) v,
            inout("r0") nr => _, inout("r3") a0 => r3, inout("r4") a1 => _, inout("r5") a2 => _,
            out("r6") _, out("r7") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _, out("r12") _,
            out("cr0") _, out("f0") _, out("v8") _, out("ctr") _, out("xer") _,
        )
    };
    // cr0.SO (bit 3 of the CR's top nibble) flags an error; r3 is then the errno.
    (r3, cr & (1 << 28) != 0, f, v)
}

#[cfg(not(target_arch = "powerpc64"))]
fn syscall_keeping(_: u64, _: u64, _: u64, _: u64, pat: u64) -> (u64, bool, u64, u64) {
    (0, false, pat, pat)
}

const SYS_IOCTL: u64 = 54;
const SYS_GETPID: u64 = 20;

/// KVM_RUN through [`syscall_keeping`]; counts runs after which f0 or v8 lost its value.
fn run_checked(vcpu: &pvtce_vmm_glue::kvm::Vcpu, n: &mut u64, lost: &mut Vec<String>) -> Result<Exit, String> {
    use std::os::fd::AsRawFd;
    loop {
        *n += 1;
        let pat = 0x5a5a_0000_0000_0000 | *n;
        let (r3, err, f, v) =
            syscall_keeping(SYS_IOCTL, vcpu.fd().as_raw_fd() as u64, pvtce_vmm_glue::sys::KVM_RUN, 0, pat);
        if f != pat || v != pat {
            lost.push(format!("run {n}: f0 {f:#x} v8 {v:#x} (wanted {pat:#x}), err={err} r3={r3:#x}"));
        }
        if err && (r3 == libc::EINTR as u64 || r3 == libc::EAGAIN as u64) {
            continue;
        }
        if err {
            return Err(format!("KVM_RUN: errno {r3}"));
        }
        return vcpu.last_exit().map_err(e("exit"));
    }
}
const HDR: u64 = 32;

fn program() -> Vec<u8> {
    let mut a = Asm::new();
    a.label("start").lis(20, (TABLE >> 16) as i16).ld(21, 0, 20).addi(22, 20, HDR as i16).label("loop");
    payload::load_call(&mut a, 22)
        .std(3, 64, 22) // the number as loaded
        .ori(10, 22, 0) // which entry, for the VMM
        .ori(11, 3, 0) // the number, for the VMM
        .hcall()
        .std(3, 48, 22)
        .std(4, 56, 22)
        .ld(9, 72, 22) // times past `sc 1`
        .addi(9, 9, 1)
        .std(9, 72, 22)
        .ld(9, 0, 22) // the number re-read from memory
        .std(9, 80, 22)
        .std(11, 88, 22) // r11 after the call
        .std(10, 96, 22) // r10 after the call
        .addi(22, 22, ESIZE as i16)
        .addi(21, 21, -1)
        .b("loop")
        .label("done")
        .lis(9, (DONE_MMIO >> 16) as i16)
        .std(21, 0, 9)
        .b("start");
    a.finish().expect("labels defined")
}

/// What one path saw.
struct PathResult {
    runs: u64,
    lost: Vec<String>,
    exits: Vec<String>,
    anomalies: Vec<String>,
}

fn one_path(mode: Mode, tables: u64) -> Result<PathResult, String> {
    set_mode(mode)?;
    let rig = Rig::new(Windows::Linked { tce_shift: 12, size: 1 << 28 })?;
    let win = rig.window_bus()?;
    rig.mem.write(ENTRY, &program()).map_err(e("load the instrumented payload"))?;
    let m = &rig.mem;
    let mut r = PathResult { runs: 0, lost: Vec::new(), exits: Vec::new(), anomalies: Vec::new() };
    for t in 0..tables {
        // H_PUT_TCE map, H_GET_TCE, H_PUT_TCE clear, H_GET_TCE: all handled in the kernel.
        let ioba = win + ((t % 64) << 12);
        let tce = (0x40_0000 + ((t % 16) << 12)) | 3;
        let expect = |i: u64| match i {
            0 => (H_PUT_TCE, tce, 0),
            1 => (H_GET_TCE, 0, tce),
            2 => (H_PUT_TCE, 0, 0),
            _ => (H_GET_TCE, 0, 0),
        };
        m.write_u64(TABLE, 4).map_err(e("table"))?;
        for i in 0..4 {
            let en = TABLE + HDR + ESIZE * i;
            let (nr, value, _) = expect(i);
            for (k, v) in [nr, LIOBN, ioba, value, 0, 0].into_iter().enumerate() {
                m.write_u64(en + 8 * k as u64, v).map_err(e("table"))?;
            }
            for k in 6..16 {
                m.write_u64(en + 8 * k, if k == 9 { 0 } else { u64::MAX }).map_err(e("table"))?;
            }
        }
        loop {
            match run_checked(&rig.vcpu, &mut r.runs, &mut r.lost)? {
                Exit::Mmio { addr, .. } if addr == DONE_MMIO => break,
                Exit::Mmio { addr, .. } => return Err(format!("L2 touched unexpected MMIO {addr:#x}")),
                Exit::PaprHcall { nr, args } => {
                    // r10 is the entry L2 was on, r11 the number it loaded.
                    let entry = args[6].wrapping_sub(TABLE + HDR) / ESIZE;
                    r.exits.push(format!("table {t} entry {entry}: nr {nr:#x}, r11 {:#x}, r4 {:#x}", args[7], args[0]));
                    rig.vcpu.set_hcall_ret(EXITED as u64);
                }
            }
        }
        for i in 0..4 {
            let en = TABLE + HDR + ESIZE * i;
            let rd = |k: u64| m.read_u64(en + 8 * k).unwrap_or(u64::MAX);
            let (nr, _, want_r4) = expect(i);
            let got = [rd(6), rd(7), rd(8), rd(9), rd(10), rd(11), rd(12)];
            // r3, r4 (H_GET_TCE), the number as loaded, passes past `sc 1`, the number re-read, r11, r10.
            let want = [0, if nr == H_GET_TCE { want_r4 } else { got[1] }, nr, 1, nr, nr, en];
            if got != want {
                r.anomalies.push(format!("table {t} entry {i}: got {got:x?}, want {want:x?}"));
            }
        }
    }
    Ok(r)
}

/// The number of getpid() calls after which f0 or v8 had lost its value (the control).
fn control(n: u64) -> usize {
    (0..n)
        .filter(|i| {
            let pat = 0xc0de_0000_0000_0000 | i;
            let (_, _, f, v) = syscall_keeping(SYS_GETPID, 0, 0, 0, pat);
            f != pat || v != pat
        })
        .count()
}

/// `KVM_RUN` leaves the VMM's FP and vector registers alone (patch 0004; before it, about 1 `KVM_RUN` in
/// 4,000 came back with the guest's registers), on Linux's C path and on pvtce's: L2 runs 10,000 tables of
/// four TCE hypercalls on each, every `KVM_RUN` is issued with f0 and v8 holding a pattern, and every table
/// entry records what L2 loaded and got back.
pub fn kvm_run_keeps_fp() -> Result<String, String> {
    const TABLES: u64 = 10_000;
    let lost_getpid = control(20_000);
    sh("modprobe pvtce")?;
    let r = (|| {
        let c = one_path(Mode::Builtin, TABLES)?;
        let p = one_path(Mode::Pvtce, TABLES)?;
        Ok::<_, String>([("Linux", c), ("pvtce", p)])
    })();
    let unload = sh("rmmod pvtce");
    let paths = r?;
    unload?;
    let mut bad = Vec::new();
    if lost_getpid > 0 {
        bad.push(format!("getpid lost f0/v8 {lost_getpid} times in 20,000"));
    }
    for (name, p) in &paths {
        if !p.lost.is_empty() || !p.exits.is_empty() || !p.anomalies.is_empty() {
            bad.push(format!(
                "{name}: f0/v8 lost after {} of {} KVM_RUNs {:?}; {} hypercalls left the kernel {:?}; {} wrong entries {:?}",
                p.lost.len(),
                p.runs,
                p.lost.iter().take(3).collect::<Vec<_>>(),
                p.exits.len(),
                p.exits.iter().take(3).collect::<Vec<_>>(),
                p.anomalies.len(),
                p.anomalies.iter().take(3).collect::<Vec<_>>()
            ));
        }
    }
    if !bad.is_empty() {
        return Err(bad.join("; "));
    }
    Ok(format!(
        "f0/v8 kept across {} + {} KVM_RUNs (Linux, pvtce) and 20,000 getpid; {} tables of 4 hypercalls per path, every entry right, none left the kernel",
        paths[0].1.runs, paths[1].1.runs, TABLES
    ))
}
