//! `race-unregister`: the VMM unregisters preregistered memory (VFIO `UNREGISTER_MEMORY`) while other vCPUs map
//! it with H_PUT_TCE_INDIRECT through a pvtce window.
//!
//! pvtce looks a region up and counts the hardware entry on it (`mm_iommu_mapped_inc`) inside one RCU read
//! section (kmod/iommu.rs), because an unregistered region is freed with `call_rcu`; the count is what makes
//! VFIO refuse to unregister memory that hardware entries still use. The test checks, over [`ROUNDS`]
//! unregister/register cycles of the racing region while [`VCPUS`] vCPUs map and clear it:
//! - no kernel report (the run fails on any WARN, lockdep or KFENCE line on the console);
//! - an unregister that succeeds leaves no hardware entry of the window mapped (the entries into the region
//!   must all be gone, and no new one can appear until it is registered again);
//! - an unregister refused while entries exist says EBUSY, and nothing else happens;
//! - every H_PUT_TCE_INDIRECT either succeeds or, while the memory is unregistered, exits (H_TOO_HARD); every
//!   H_STUFF_TCE that clears succeeds;
//! - afterwards, with the guest's entries cleared, both regions unregister (no count leaked), and once the rig
//!   is gone no page is left pinned (`/proc/vmstat`).
//!
//! Guest memory: the rig's RAM as two regions, the lower half (payloads, tables, lists) and the upper half, the
//! racing region, which the vCPUs map.

use crate::rig::*;
use pvtce_vmm_glue::payload::{self, Call, Reply};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Unregister/register cycles of the racing region.
const ROUNDS: u32 = 300;
/// vCPUs mapping the racing region, each on its own thread (the L1 has two CPUs).
const VCPUS: usize = 2;
/// TCE size of the window (64K: one hardware entry per TCE on this host).
const SHIFT: u32 = 16;
/// Entries each vCPU maps with one H_PUT_TCE_INDIRECT: together they cover the racing region once.
const ENTRIES: u64 = ((RAM as u64 / 2) >> SHIFT) / VCPUS as u64;
/// The racing region: the upper half of RAM (guest physical and offset in the VMM's memory).
const HALF: u64 = RAM as u64 / 2;

/// vCPU `i`'s program, table and TCE list, in the lower half (clear of the rig's payload at 0x100, its table
/// at 0x10000 and its list at 0x20000).
fn code(i: usize) -> u64 {
    0x5_0000 + 0x1000 * i as u64
}
fn table(i: usize) -> u64 {
    0x10_0000 + 0x1_0000 * i as u64
}
fn list(i: usize) -> u64 {
    0x8_0000 + 0x1000 * i as u64
}

#[derive(Default)]
struct Counts {
    mapped: AtomicU64,
    refused: AtomicU64,
    tables: AtomicU64,
}

pub fn race_unregister() -> Result<String, String> {
    sh("modprobe pvtce")?;
    let pins0 = pins_outstanding()?;
    let result = Rig::new(SHIFT, 1 << 28).and_then(|mut rig| run(&mut rig));
    // The rig is gone: its windows closed, the container released.
    let unload = sh("rmmod pvtce");
    let pins1 = pins_outstanding()?;
    let detail = result?;
    unload.map_err(|err| format!("rmmod after the race: {err}"))?;
    if pins1 != pins0 {
        return Err(format!("{} page pin(s) left after the rig was released ({pins0} before)", pins1 - pins0));
    }
    Ok(detail)
}

fn errno(r: pvtce_vmm_glue::Result<()>) -> Result<i32, String> {
    match r {
        Ok(()) => Ok(0),
        Err(err) => {
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&err);
            while let Some(s) = src {
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    return Ok(io.raw_os_error().unwrap_or(-1));
                }
                src = s.source();
            }
            Err(format!("unregister: {err}"))
        }
    }
}

fn run(rig: &mut Rig) -> Result<String, String> {
    if rig.pvtce_info()?.is_none() {
        return Err("the window is Linux's built-in one; pvtce did not take it".into());
    }
    let base = rig.mem.host_addr();
    let c = &rig.v.container;
    c.unregister_memory(base, RAM as u64).map_err(e("UNREGISTER_MEMORY of the rig's RAM"))?;
    c.register_memory(base, HALF).map_err(e("REGISTER_MEMORY, lower half"))?;
    c.register_memory(base + HALF, HALF).map_err(e("REGISTER_MEMORY, racing half"))?;
    let ps = 1u64 << SHIFT;
    let win = rig.win;
    let host_first = win >> SHIFT;
    let n = ENTRIES * VCPUS as u64;

    // The check can fail: one mapped entry keeps the region registered (EBUSY), clearing it lets it go.
    let (r, _) = rig.run(&[call(H_PUT_TCE, [LIOBN, win, HALF | TCE_R | TCE_W, 0])])?;
    if r[0].r3 != H_SUCCESS {
        return Err(format!("H_PUT_TCE into the racing region returned {}", r[0].r3));
    }
    let busy = errno(rig.v.container.unregister_memory(base + HALF, HALF))?;
    if busy != libc::EBUSY {
        return Err(format!("UNREGISTER_MEMORY under a mapped entry: errno {busy}, expected EBUSY"));
    }
    let (r, _) = rig.run(&[call(H_PUT_TCE, [LIOBN, win, 0, 0])])?;
    if r[0].r3 != H_SUCCESS {
        return Err(format!("clearing H_PUT_TCE returned {}", r[0].r3));
    }
    let c = &rig.v.container;
    c.unregister_memory(base + HALF, HALF).map_err(e("UNREGISTER_MEMORY once nothing maps it"))?;
    c.register_memory(base + HALF, HALF).map_err(e("REGISTER_MEMORY again"))?;

    // Each vCPU's list maps its share of the racing region.
    for i in 0..VCPUS {
        let tces: Vec<u8> =
            (0..ENTRIES).flat_map(|k| ((HALF + (i as u64 * ENTRIES + k) * ps) | TCE_R | TCE_W).to_be_bytes()).collect();
        rig.mem.write(list(i), &tces).map_err(e("TCE list"))?;
        rig.mem.write(code(i), &payload::program_at(table(i))).map_err(e("payload"))?;
    }
    let stop = AtomicBool::new(false);
    let counts = Counts::default();
    let (vm, mem) = (&rig._vm, &rig.mem);
    let mut unregistered = 0u32;
    let mut refused_busy = 0u32;
    let main = std::thread::scope(|s| {
        let threads: Vec<_> = (0..VCPUS)
            .map(|i| {
                let (stop, counts) = (&stop, &counts);
                s.spawn(move || -> Result<(), String> {
                    let r = map_loop(vm, mem, win, i, stop, counts);
                    // A failed vCPU ends the race.
                    stop.store(true, Ordering::Relaxed);
                    r
                })
            })
            .collect();
        let r = (|| -> Result<(), String> {
            for round in 0..ROUNDS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match errno(rig.v.container.unregister_memory(base + HALF, HALF))? {
                    0 => {
                        unregistered += 1;
                        // Nothing maps unregistered memory, and nothing can until it is registered again.
                        let entries = rig.host_read_any(host_first, n as usize)?;
                        if let Some(k) = entries.iter().position(|&h| h != 0) {
                            return Err(format!(
                                "round {round}: the racing region unregistered while hardware entry {k} still maps {:#x}",
                                entries[k]
                            ));
                        }
                        rig.v.container.register_memory(base + HALF, HALF).map_err(e("REGISTER_MEMORY again"))?;
                    }
                    libc::EBUSY => refused_busy += 1,
                    other => return Err(format!("round {round}: UNREGISTER_MEMORY errno {other}")),
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let mut out = r;
        for t in threads {
            let t = t.join().unwrap_or_else(|_| Err("a vCPU thread panicked".into()));
            if out.is_ok() {
                out = t;
            }
        }
        out
    });
    main?;
    let (mapped, refused, tables) =
        (counts.mapped.into_inner(), counts.refused.into_inner(), counts.tables.into_inner());
    if unregistered == 0 || refused_busy == 0 || mapped == 0 {
        return Err(format!(
            "the race did not happen: {unregistered} unregistered, {refused_busy} refused busy, {mapped} INDIRECT mapped"
        ));
    }
    // The guest clears everything; then no count is left on either region.
    let (r, _) = rig.run(&[call(H_STUFF_TCE, [LIOBN, win, 0, n])])?;
    if r[0].r3 != H_SUCCESS {
        return Err(format!("final H_STUFF_TCE returned {}", r[0].r3));
    }
    let c = &rig.v.container;
    c.unregister_memory(base + HALF, HALF).map_err(e("UNREGISTER_MEMORY of the racing half after the race"))?;
    c.unregister_memory(base, HALF).map_err(e("UNREGISTER_MEMORY of the lower half after the race"))?;
    Ok(format!(
        "{ROUNDS} unregister rounds against {VCPUS} vCPUs: unregistered {unregistered}, refused EBUSY {refused_busy}; {tables} tables of INDIRECT-{ENTRIES} + STUFF: INDIRECT mapped {mapped}, exited while unregistered {refused}; no entry survived an unregister; both regions unregister after the guest clears; no pin left"
    ))
}

/// vCPU `i + 1`: runs tables of (INDIRECT of its share, STUFF clearing it) until `stop`.
fn map_loop(
    vm: &pvtce_vmm_glue::kvm::Vm,
    mem: &pvtce_vmm_glue::mem::GuestMem,
    win: u64,
    i: usize,
    stop: &AtomicBool,
    counts: &Counts,
) -> Result<(), String> {
    let vcpu = vm.create_vcpu(i as u64 + 1).map_err(e("vCPU"))?;
    vcpu.enable_papr().map_err(e("PAPR"))?;
    vcpu.set_entry(code(i)).map_err(e("entry"))?;
    let ps = 1u64 << SHIFT;
    let ioba = win + i as u64 * ENTRIES * ps;
    let calls: Vec<Call> =
        vec![call(H_PUT_TCE_INDIRECT, [LIOBN, ioba, list(i), ENTRIES]), call(H_STUFF_TCE, [LIOBN, ioba, 0, ENTRIES])];
    let mut unexpected = None;
    while !stop.load(Ordering::Relaxed) {
        let mut handler = |nr: u64, _: &[u64; 9]| {
            if nr == H_PUT_TCE_INDIRECT {
                counts.refused.fetch_add(1, Ordering::Relaxed);
            } else {
                unexpected = Some(nr);
            }
            Reply { r3: EXITED as u64, r4: None }
        };
        let (rets, _) = payload::run_at(&vcpu, mem, table(i), &calls, &mut handler).map_err(e("run L2"))?;
        if let Some(nr) = unexpected {
            return Err(format!("vCPU {}: hypercall {nr:#x} exited to userspace", i + 1));
        }
        counts.tables.fetch_add(1, Ordering::Relaxed);
        match rets[0].r3 {
            H_SUCCESS => {
                counts.mapped.fetch_add(1, Ordering::Relaxed);
            }
            EXITED => {}
            r => return Err(format!("vCPU {}: H_PUT_TCE_INDIRECT returned {r}", i + 1)),
        }
        if rets[1].r3 != H_SUCCESS {
            return Err(format!("vCPU {}: clearing H_STUFF_TCE returned {}", i + 1, rets[1].r3));
        }
    }
    Ok(())
}
