//! The L2 guest program: runs a table of hypercalls written by the VMM into guest memory and reports back.
//!
//! Guest memory layout (guest physical): code at [`ENTRY`]; the call table at [`TABLE`]:
//! `u64 count`, then `count` entries of 8 u64: `[nr, a0, a1, a2, a3, a4, r3_out, r4_out]`.
//! The program runs every entry in order (`sc 1` with r3 = nr, r4.. = args), stores r3 and r4 back into the
//! entry, then stores to [`DONE_MMIO`] (outside guest RAM: a KVM_EXIT_MMIO the VMM sees) and starts over, so
//! each `KVM_RUN` after a new table runs it once. Timebase values around the whole table are stored in the
//! table header for the benchmark.

use crate::asm::Asm;
use crate::{Error, Result};
pub use pvtce_vmm_glue::kvm::Reply;
use pvtce_vmm_glue::kvm::{Exit, Vcpu, Vm};
use pvtce_vmm_glue::mem::GuestMem;

pub const ENTRY: u64 = 0x100;
pub const TABLE: u64 = 0x10000;
/// Table header: count, tb_start, tb_end, reserved; entries follow.
pub const HEADER: u64 = 32;
pub const ENTRY_SIZE: u64 = 64;
pub const MAX_ENTRIES: u64 = 1024;
pub const DONE_MMIO: u64 = 0x4000_0000;

/// Emits the loop head of a table program: leaves for "done" when r21 (entries left) is 0, else loads the
/// entry at `entry` (a register): r3 = the number, r4..r8 = the arguments.
pub fn load_call(a: &mut Asm, entry: crate::asm::Reg) -> &mut Asm {
    a.cmpdi(21, 0).beq("done");
    for (r, off) in (3..=8).zip((0..).step_by(8)) {
        a.ld(r, off, entry);
    }
    a
}

pub fn program() -> Vec<u8> {
    program_at(TABLE)
}

/// [`program`] with its table at `table` (64 KiB aligned, below 2 GiB): one copy per vCPU, each with its own
/// table, lets several vCPUs of one VM run tables at once.
pub fn program_at(table: u64) -> Vec<u8> {
    let mut a = Asm::new();
    a.label("start")
        .lis(20, (table >> 16) as i16)
        .ld(21, 0, 20) // count
        .addi(22, 20, HEADER as i16)
        .mftb(23)
        .std(23, 8, 20)
        .label("loop");
    load_call(&mut a, 22)
        .hcall()
        .std(3, 48, 22)
        .std(4, 56, 22)
        .addi(22, 22, ENTRY_SIZE as i16)
        .addi(21, 21, -1)
        .b("loop")
        .label("done")
        .mftb(23)
        .std(23, 16, 20)
        .lis(9, (DONE_MMIO >> 16) as i16)
        .std(21, 0, 9)
        .b("start");
    a.finish().expect("the payload's labels are all defined")
}

/// One hypercall for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub nr: u64,
    pub args: [u64; 5],
}

/// What came back for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ret {
    pub r3: i64,
    pub r4: u64,
}

/// Loads the program into guest memory.
pub fn load(mem: &GuestMem) -> Result<()> {
    Ok(mem.write(ENTRY, &program())?)
}

/// Makes `vm` a PAPR guest running the program out of `mem`: `mem` as slot 0 at guest physical 0, the two
/// TCE hypercalls that are off by default (H_STUFF_TCE, H_PUT_TCE_INDIRECT) on, radix, and vCPU 0 with PAPR
/// enabled, starting at [`ENTRY`].
///
/// # Safety
/// `mem` must stay alive for as long as a vCPU of `vm` may run (drop the vCPUs, or the VM, first):
/// [`Vm::set_memory`]'s contract.
pub unsafe fn boot(vm: &Vm, mem: &GuestMem) -> Result<Vcpu> {
    // SAFETY: `mem` is a live shared mapping that no Rust reference covers; that it outlives the vCPUs is
    // the caller's promise.
    unsafe { vm.set_memory(0, 0, mem.len() as u64, mem.host_addr()) }?;
    vm.enable_hcall(pvtce_core::hcall::H_STUFF_TCE)?;
    vm.enable_hcall(pvtce_core::hcall::H_PUT_TCE_INDIRECT)?;
    vm.configure_radix()?;
    let vcpu = vm.create_vcpu(0)?;
    vcpu.enable_papr()?;
    load(mem)?;
    vcpu.set_entry(ENTRY)?;
    Ok(vcpu)
}

/// What the VMM answers to each hypercall that exits while a table runs (H_TOO_HARD from the kernel arrives
/// here too, as the original call).
pub type ReplyHandler<'a> = dyn FnMut(u64, &[u64; 9]) -> Reply + 'a;

/// Runs `calls` on a vCPU running [`program_at`]`(table)` ([`TABLE`] for [`program`]); hypercalls the kernel
/// passes up go to `on_hcall`. Returns the results and the timebase ticks the whole table took, measured
/// inside L2. The tests' one loop over `KVM_RUN` (tests/vm/src/rig.rs `run_on` picks the handler; only
/// `kvm-run-fp` issues `KVM_RUN` itself, from inline assembly with FP registers loaded).
pub fn run_at(
    vcpu: &Vcpu,
    mem: &GuestMem,
    table: u64,
    calls: &[Call],
    on_hcall: &mut ReplyHandler<'_>,
) -> Result<(Vec<Ret>, u64)> {
    let n = calls.len().min(MAX_ENTRIES as usize);
    mem.write_u64(table, n as u64)?;
    for (i, c) in calls.iter().take(n).enumerate() {
        let e = table + HEADER + ENTRY_SIZE * i as u64;
        mem.write_u64(e, c.nr)?;
        for (k, a) in c.args.iter().enumerate() {
            mem.write_u64(e + 8 + 8 * k as u64, *a)?;
        }
        mem.write_u64(e + 48, u64::MAX)?;
        mem.write_u64(e + 56, u64::MAX)?;
    }
    loop {
        match vcpu.run()? {
            Exit::Mmio { addr, .. } if addr == DONE_MMIO => break,
            Exit::Mmio { addr, .. } => return Err(Error::UnexpectedMmio(addr)),
            Exit::PaprHcall { nr, args } => {
                vcpu.reply(on_hcall(nr, &args));
            }
        }
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let e = table + HEADER + ENTRY_SIZE * i as u64;
        out.push(Ret { r3: mem.read_u64(e + 48)? as i64, r4: mem.read_u64(e + 56)? });
    }
    let tb = mem.read_u64(table + 16)?.wrapping_sub(mem.read_u64(table + 8)?);
    Ok((out, tb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_fits_before_the_table() {
        let p = program();
        assert!(ENTRY + p.len() as u64 <= TABLE);
        // The hypercall instruction is in there exactly once.
        let words: Vec<u32> = p.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(words.iter().filter(|w| **w == 0x4400_0022).count(), 1);
    }
}
