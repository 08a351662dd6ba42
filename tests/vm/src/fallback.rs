//! The userspace fallback against the kernel: one guest sequence of TCE hypercalls (successes, every
//! H_PARAMETER class, calls the kernel passes up) on the default window, run three ways in fresh VMs:
//!
//! 1. kernel: a kernel window linked to edu's group (Linux's C path today); only what the kernel passes up
//!    exits;
//! 2. no kernel window for the LIOBN: every TCE hypercall exits and pvtce-core in the VMM answers it,
//!    writing the host table with VFIO MAP/UNMAP;
//! 3. a kernel window left unlinked, with the four TCE hypercalls turned off in KVM: every call exits too.
//!
//! Return codes, the TCEs H_GET_TCE reads back, the guest-visible tables and an edu DMA through a mapped
//! bus address must be the same in all three.

use crate::rig::*;
use pvtce_core::types::Liobn;
use pvtce_test_support::payload::Call;
use pvtce_vmm_glue::windows::Path;

const P1: u64 = 0x20_0000;
const P2: u64 = 0x21_0000;
const P3: u64 = 0x22_3000;

fn sequence() -> Vec<Call> {
    vec![
        call(H_PUT_TCE, [L0, 0x4_0000, P1 | 3, 0]),
        call(H_GET_TCE, [L0, 0x4_0000, 0, 0]),
        call(H_PUT_TCE, [L0, 1 << 30, P1 | 3, 0]),  // outside the window
        call(H_PUT_TCE, [L0, 0x4_0100, P1 | 3, 0]), // ioba not page aligned
        call(H_PUT_TCE_INDIRECT, [L0, 0x10_0000, LIST, 2]),
        call(H_GET_TCE, [L0, 0x10_1000, 0, 0]),
        call(H_PUT_TCE_INDIRECT, [L0, 0x10_0000, LIST, 513]), // too many
        call(H_PUT_TCE_INDIRECT, [L0, 0x10_0000, LIST + 8, 1]), // list not 4K aligned
        call(H_STUFF_TCE, [L0, 0x10_0000, 0, 2]),
        call(H_GET_TCE, [L0, 0x10_0000, 0, 0]),
        call(H_STUFF_TCE, [L0, 0x10_0000, 1, 1]),           // stuffing a mapping
        call(H_PUT_TCE, [L0, 0x5_0000, P1 | 0x800 | 3, 0]), // TCE address not page aligned
        call(H_GET_TCE, [L0, 1 << 30, 0, 0]),               // outside the window
        call(H_PUT_TCE, [0x1234, 0, P1 | 3, 0]),            // unknown LIOBN
        call(H_PUT_TCE, [L0, 0x6_0000, P2 | 1, 0]),
        call(H_GET_TCE, [L0, 0x6_0000, 0, 0]),
        call(H_PUT_TCE, [L0, 0x7_0000, (RAM as u64 + 0x1_0000) | 3, 0]), // outside guest memory
        call(H_PUT_TCE_INDIRECT, [L0, 0x3FFF_F000, LIST, 2]),            // runs past the window end
    ]
}

/// Window-relative entries the sequence touches.
const ENTRIES: [u64; 6] = [0x40, 0x100, 0x101, 0x50, 0x60, 0x70];

struct Outcome {
    rets: Vec<(i64, Option<u64>)>,
    table: Vec<u64>,
    exits: u32,
    /// L2 timebase ticks for the sequence.
    tb: u64,
}

fn one(path: Path, unlinked_kernel_window: bool) -> Result<Outcome, String> {
    let rig = Rig::new(Windows::Pe { add_group: path == Path::Kernel })?;
    let list: Vec<u8> = [P2 | 1, P3 | 2].iter().flat_map(|t| t.to_be_bytes()).collect();
    rig.mem.write(LIST, &list).map_err(e("list"))?;
    let mut hp = rig.host_pe(path)?;
    let mut ddw = new_ddw();
    ddw.boot(&mut hp).map_err(e("default window"))?;
    let shadow = if unlinked_kernel_window {
        for nr in [H_PUT_TCE, H_GET_TCE, H_STUFF_TCE, H_PUT_TCE_INDIRECT] {
            rig.vm.disable_hcall(nr).map_err(e("disable TCE hypercall"))?;
        }
        Some(rig.vm.create_window(L0, 12, 0, (1 << 30) >> 12).map_err(e("unlinked kernel window"))?)
    } else {
        None
    };
    let calls = sequence();
    let Run { rets, tce, tb, .. } = rig.run_with(&calls, Policy::RtasFallback(&mut ddw, &mut hp))?;
    if !hp.fallback.host.errors.is_empty() {
        return Err(format!("VFIO errors in the fallback: {:?}", hp.fallback.host.errors));
    }
    let rets: Vec<(i64, Option<u64>)> =
        calls.iter().zip(&rets).map(|(c, r)| (r.r3, (c.nr == H_GET_TCE && r.r3 == 0).then_some(r.r4))).collect();
    // The guest reads the entries back with H_GET_TCE (answered where the window lives).
    let gets: Vec<Call> = ENTRIES.iter().map(|i| call(H_GET_TCE, [L0, i << 12, 0, 0])).collect();
    let back = rig.run_with(&gets, Policy::RtasFallback(&mut ddw, &mut hp))?.rets;
    if let Some(r) = back.iter().find(|r| r.r3 != H_SUCCESS) {
        return Err(format!("H_GET_TCE read-back returned {}", r.r3));
    }
    let table: Vec<u64> = back.iter().map(|r| r.r4).collect();
    // And the VMM's view agrees: the table fd's mmap (Linux's windows) or the fallback's own table.
    let vmm: Option<Vec<u64>> = match hp.window(Liobn(L0)).and_then(|w| w.kernel.as_ref()) {
        Some(t) if t.info().map_err(e("PVTCE_WINDOW_INFO"))?.is_none() => {
            let v = t.view().map_err(e("table mmap"))?;
            Some(ENTRIES.iter().map(|i| v.get(*i).unwrap_or(u64::MAX)).collect())
        }
        Some(_) => None,
        None => Some(ENTRIES.iter().map(|i| hp.fallback.entry(Liobn(L0), *i).unwrap_or(u64::MAX)).collect()),
    };
    if let Some(v) = vmm {
        if v != table {
            return Err(format!("the VMM's view of the table {v:x?} differs from H_GET_TCE's {table:x?}"));
        }
    }
    if let Some(t) = &shadow {
        // The unlinked kernel window saw nothing: its hypercalls were off (pvtce: its counters are zero;
        // Linux: its table is).
        match t.info().map_err(e("PVTCE_WINDOW_INFO"))? {
            Some(i) => {
                if i.h_put_tce + i.h_put_tce_indirect + i.h_stuff_tce + i.h_get_tce + i.tces_changed != 0 {
                    return Err(format!("the unlinked pvtce window counted hypercalls that were off: {i:?}"));
                }
            }
            None => {
                let v = t.view().map_err(e("unlinked table mmap"))?;
                if ENTRIES.iter().any(|i| v.get(*i) != Some(0)) {
                    return Err("the unlinked kernel window changed although its hypercalls were off".into());
                }
            }
        }
    }
    // The host table holds P1 at 0x4_0000 (read-write): edu copies through it inside P1.
    rig.dma_reaches(0x4_0000, P1, 0x5a)?;
    Ok(Outcome { rets, table, exits: tce, tb })
}

pub fn fallback() -> Result<String, String> {
    compare("Linux's C path")
}

/// The same comparison with pvtce.ko as the kernel path.
pub fn fallback_pvtce() -> Result<String, String> {
    with_pvtce(|| compare("pvtce"))
}

fn compare(kernel: &str) -> Result<String, String> {
    let k = one(Path::Kernel, false).map_err(|x| format!("kernel path ({kernel}): {x}"))?;
    let want: Vec<i64> = vec![0, 0, -4, -4, 0, 0, -4, -4, 0, 0, -4, -4, -4, -4, 0, 0, -4, -4];
    let got: Vec<i64> = k.rets.iter().map(|r| r.0).collect();
    if got != want {
        return Err(format!("kernel path returned {got:?}, expected {want:?}"));
    }
    let f = one(Path::Fallback, false).map_err(|x| format!("fallback, no kernel window: {x}"))?;
    let u = one(Path::Fallback, true).map_err(|x| format!("fallback, unlinked kernel window: {x}"))?;
    let n = sequence().len() as u32;
    for (name, o) in [("no kernel window", &f), ("unlinked kernel window", &u)] {
        if o.rets != k.rets {
            return Err(format!("{name}: returns {:x?} differ from the kernel's {:x?}", o.rets, k.rets));
        }
        if o.table != k.table {
            return Err(format!("{name}: table {:x?} differs from the kernel's {:x?}", o.table, k.table));
        }
        if o.exits != n {
            return Err(format!("{name}: {} of {n} hypercalls exited", o.exits));
        }
    }
    Ok(format!(
        "kernel path {kernel}; {n} calls: returns {got:?} and GETs {:x?} identical; tables {:x?} identical; exits kernel {} / fallback {} / unlinked {}; edu DMA via ioba 0x40000 reached L2 page {P1:#x} in all three; L2 tb ticks kernel {} / fallback {} ({:.1}x)",
        k.rets.iter().filter_map(|r| r.1).collect::<Vec<_>>(),
        k.table,
        k.exits,
        f.exits,
        u.exits,
        k.tb,
        f.tb,
        f.tb as f64 / k.tb.max(1) as f64
    ))
}
