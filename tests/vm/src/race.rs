//! `race-unregister`: the VMM unregisters preregistered memory (VFIO `UNREGISTER_MEMORY`) while other vCPUs map
//! it with H_PUT_TCE_INDIRECT through a pvtce window.
//!
//! pvtce looks a region up and counts the hardware entry on it (`mm_iommu_mapped_inc`) inside one RCU read
//! section (kmod/iommu.rs), because an unregistered region is freed with `call_rcu`; the count is what keeps
//! memory that hardware entries use registered and pinned. VFIO's answer is what the test trusts, with
//! patches/linux/0007: Linux 7.3's `tce_iommu_unregister_pages` answered 0 for a region that was still mapped
//! and leaked it (docs/design.md, "Preregistered memory and the unregister race"). A leaked region shows
//! when the same range is registered again: VFIO refuses a range that overlaps a registered one (EINVAL,
//! `mm_iommu_do_alloc`). Over [`ROUNDS`] unregister attempts of the racing region while [`VCPUS`] vCPUs map
//! and clear it, the test checks:
//! - no kernel report (the run fails on any WARN, lockdep, KFENCE or RCU line on the console);
//! - an unregister either releases (0: no hardware entry of the window maps the memory, and registering it
//!   again succeeds) or is refused with EBUSY; an answer of 0 that keeps the region fails the test;
//! - every H_PUT_TCE_INDIRECT either succeeds or, while the memory is unregistered, exits (H_TOO_HARD); every
//!   clearing H_STUFF_TCE succeeds;
//! - both outcomes and successful mappings happened (the race took place);
//! - afterwards, with the guest's entries cleared, the racing region unregisters, and once the rig is gone
//!   no page is left pinned (`/proc/vmstat`).
//!
//! Guest memory: the rig's RAM as two regions, the lower half (payloads, tables, lists) and the upper half, the
//! racing region, which the vCPUs map.

use crate::rig::*;
use pvtce_test_support::payload::{self, Call, Reply};
use pvtce_vmm_glue::{kvm, mem::GuestMem};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Unregister/register cycles of the racing region.
const ROUNDS: u32 = 1000;
/// vCPUs mapping the racing region, each on its own thread (the L1 has two CPUs).
const VCPUS: usize = 2;
/// TCE size of the window (64K: one hardware entry per TCE on this host).
const SHIFT: u32 = 16;
/// Entries each vCPU maps with one H_PUT_TCE_INDIRECT: together they cover the racing region once.
const ENTRIES: u64 = ((RAM as u64 / 2) >> SHIFT) / VCPUS as u64;
/// The racing region: the upper half of RAM (guest physical and offset in the VMM's memory).
const HALF: u64 = RAM as u64 / 2;

/// vCPU `i`'s TCE list, in the lower half, clear of its code and table ([`vcpu_code`], [`vcpu_table`]).
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
    let pins0 = settled_pins()?;
    let result = Rig::new(Windows::Linked { tce_shift: SHIFT, size: 1 << 28 }).and_then(|rig| run(&rig));
    // The rig is gone: its windows closed, the container released.
    let unload = sh("rmmod pvtce");
    // Regions are freed (and their pages unpinned) by RCU callbacks: give them up to 10 s.
    let t = std::time::Instant::now();
    let mut pins1 = pins_outstanding()?;
    while pins1 != pins0 && t.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        pins1 = pins_outstanding()?;
    }
    let detail = result?;
    unload.map_err(|err| format!("rmmod after the race: {err}"))?;
    if pins1 != pins0 {
        return Err(format!("{} page pin(s) left after the rig was released ({pins0} before)", pins1 - pins0));
    }
    Ok(detail)
}

/// 0 or the errno of a VFIO call.
fn errno(r: pvtce_vmm_glue::Result<()>) -> Result<i32, String> {
    match r {
        Ok(()) => Ok(0),
        Err(err) => errno_of(&err).ok_or_else(|| format!("unregister: {err}")),
    }
}

fn run(rig: &Rig) -> Result<String, String> {
    if rig.pvtce_info()?.is_none() {
        return Err("the window is Linux's built-in one; pvtce did not take it".into());
    }
    let base = rig.mem.host_addr();
    let c = &rig.container;
    c.unregister_memory(base, RAM as u64).map_err(e("UNREGISTER_MEMORY of the rig's RAM"))?;
    c.register_memory(base, HALF).map_err(e("REGISTER_MEMORY, lower half"))?;
    c.register_memory(base + HALF, HALF).map_err(e("REGISTER_MEMORY, racing half"))?;
    let ps = 1u64 << SHIFT;
    let win = rig.window_bus()?;
    let host_first = win >> SHIFT;
    let n = ENTRIES * VCPUS as u64;
    let unreg = |rig: &Rig| errno(rig.container.unregister_memory(base + HALF, HALF));
    // Registering the range again tells whether the unregister released it: EINVAL if it is still there.
    let rereg = |rig: &Rig| errno(rig.container.register_memory(base + HALF, HALF));

    // Each vCPU's list maps its share of the racing region.
    for i in 0..VCPUS {
        let tces: Vec<u8> =
            (0..ENTRIES).flat_map(|k| ((HALF + (i as u64 * ENTRIES + k) * ps) | TCE_R | TCE_W).to_be_bytes()).collect();
        rig.mem.write(list(i), &tces).map_err(e("TCE list"))?;
    }
    let stop = AtomicBool::new(false);
    let counts = Counts::default();
    let (vm, mem) = (&rig.vm, &rig.mem);
    let (mut released, mut refused_busy, mut kept) = (0u32, 0u32, 0u32);
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
                match unreg(rig)? {
                    0 => {
                        // Nothing maps released memory, and nothing can until it is registered again.
                        let entries = rig.host_read_any(host_first, n as usize)?;
                        if let Some(k) = entries.iter().position(|&h| h != 0) {
                            return Err(format!(
                                "round {round}: the racing region was released while hardware entry {k} still maps {:#x}",
                                entries[k]
                            ));
                        }
                        match rereg(rig)? {
                            0 => released += 1,
                            // VFIO answered success, but the region is still registered: it still counts
                            // mapped entries, outside the container, and no unregister can release it now.
                            libc::EINVAL => {
                                kept += 1;
                                break;
                            }
                            r => return Err(format!("round {round}: REGISTER_MEMORY again: errno {r}")),
                        }
                    }
                    libc::EBUSY => refused_busy += 1,
                    r => return Err(format!("round {round}: UNREGISTER_MEMORY: errno {r}")),
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
    let race = format!(
        "{ROUNDS} unregister rounds against {VCPUS} vCPUs: released {released}, refused EBUSY {refused_busy}, answered 0 but kept {kept}; {tables} tables of INDIRECT-{ENTRIES} + STUFF: INDIRECT mapped {mapped}, exited while unregistered {refused}"
    );
    if kept > 0 {
        return Err(format!(
            "{race}: VFIO answered UNREGISTER_MEMORY with success while entries still mapped the memory, and kept it registered outside the container (Linux 7.3 tce_iommu_unregister_pages without patches/linux/0007: the reference its mm_iommu_get takes makes the container's put skip the mapped check; the region leaks, destroy_context WARNs)"
        ));
    }
    if released == 0 || refused_busy == 0 || mapped == 0 {
        return Err(format!("the race did not happen: {race}"));
    }
    // The guest clears everything; then no count is left on the racing region.
    let (r, _) = rig.run(&[call(H_STUFF_TCE, [LIOBN, win, 0, n])])?;
    if r[0].r3 != H_SUCCESS {
        return Err(format!("final H_STUFF_TCE returned {}", r[0].r3));
    }
    let last = (unreg(rig)?, rereg(rig)?, unreg(rig)?);
    if last != (0, 0, 0) {
        return Err(format!(
            "{race}; after the guest cleared its entries: unregister, register, unregister gave errnos {last:?}"
        ));
    }
    rig.container.unregister_memory(base, HALF).map_err(e("UNREGISTER_MEMORY of the lower half after the race"))?;
    Ok(format!("{race}; no entry survived a release; both regions unregister after the guest clears"))
}

/// vCPU `i + 1`: runs tables of (INDIRECT of its share, STUFF clearing it) until `stop`.
fn map_loop(
    vm: &kvm::Vm,
    mem: &GuestMem,
    win: u64,
    i: usize,
    stop: &AtomicBool,
    counts: &Counts,
) -> Result<(), String> {
    let vcpu = extra_vcpu(vm, mem, i)?;
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
        let (rets, _) = payload::run_at(&vcpu, mem, vcpu_table(i), &calls, &mut handler).map_err(e("run L2"))?;
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

/// `race-vfio-clear`'s pause inside VFIO's clear (patches/linux/0013, test kernel only), in ms.
const UNUSE_DELAY_MS: u64 = 2000;
/// Where the test kernel's VFIO sPAPR driver takes it.
const UNUSE_DELAY_KNOB: &str = "/sys/module/vfio_iommu_spapr_tce/parameters/test_unuse_delay_ms";

/// `race-vfio-clear`: the VMM clears an entry through VFIO (`VFIO_IOMMU_UNMAP_DMA`) while the guest clears the
/// same entry through pvtce (H_PUT_TCE of 0), and the entry's use of its preregistered region must be dropped
/// exactly once (docs/design.md, "The release race with VFIO's clear").
///
/// pvtce's batched update (patch 0008) reads no old entry back: it learns from the entry's `it_userspace` slot
/// whether the old entry held a use, and VFIO's clear, after its own exchange of the entry, reads the same slot.
/// Both take the slot by one exchange (`UserAddrSlot::take`, patches/linux/0012). The test kernel's VFIO pauses
/// between taking the slot and dropping the use (patch 0013's knob), which holds the race open: the guest's
/// clear runs inside the pause. With a VFIO that reads the slot and zeroes it only after the pause (Linux 7.3's
/// order), both sides see the address and the use drops twice; the region's mapped count is then one too low,
/// so with a second entry still mapping the region the VMM's unregister answers 0 instead of EBUSY (patch
/// 0007), and that is what fails the test. Afterwards, with the second entry cleared too, the unregister must
/// release every pin.
pub fn race_vfio_clear() -> Result<String, String> {
    sh("modprobe pvtce")?;
    let result = (|| -> Result<String, String> {
        let rig = Rig::new(Windows::Linked { tce_shift: SHIFT, size: 1 << 28 })?;
        let r = vfio_clear(&rig);
        // Never leave the pause on for the tests after this one, nor for the rig's own teardown below (the
        // container's release clears every entry through the same path).
        let reset = std::fs::write(UNUSE_DELAY_KNOB, "0").map_err(|err| format!("{UNUSE_DELAY_KNOB}: {err}"));
        let detail = r.map_err(|err| format!("{err} (exits {:x?})", rig.exit_log()))?;
        reset?;
        Ok(detail)
    })();
    let unload = sh("rmmod pvtce");
    let detail = result?;
    unload.map_err(|err| format!("rmmod after the windows closed: {err}"))?;
    Ok(detail)
}

fn vfio_clear(rig: &Rig) -> Result<String, String> {
    let ps = 1u64 << SHIFT;
    let win = rig.window_bus()?;
    let rw = TCE_R | TCE_W;
    // Entry 5 is raced; entry 6 maps the same region throughout.
    let (a, b) = (win + 5 * ps, win + 6 * ps);
    let (rets, _) =
        rig.run(&[call(H_PUT_TCE, [LIOBN, a, 0x20_0000 | rw, 0]), call(H_PUT_TCE, [LIOBN, b, 0x30_0000 | rw, 0])])?;
    if rets.iter().any(|r| r.r3 != H_SUCCESS) {
        return Err(format!(
            "the two H_PUT_TCEs returned {:?}, expected 0 and 0",
            rets.iter().map(|r| r.r3).collect::<Vec<_>>()
        ));
    }
    // The container is set up, so VFIO's sPAPR driver is loaded and its knob is there.
    std::fs::write(UNUSE_DELAY_KNOB, UNUSE_DELAY_MS.to_string())
        .map_err(|err| format!("{UNUSE_DELAY_KNOB} (the test kernel's patch 0013): {err}"))?;
    let t0 = std::time::Instant::now();
    let (unmapped, cleared, unmap_ms, clear_at_ms) = std::thread::scope(|s| {
        let container = &rig.container;
        let vfio = s.spawn(move || {
            let r = container.unmap_dma(a, ps).map_err(|err| format!("VFIO_IOMMU_UNMAP_DMA of the raced entry: {err}"));
            (r, t0.elapsed().as_millis() as u64)
        });
        // VFIO exchanges the entry, takes its address and pauses well within this.
        std::thread::sleep(std::time::Duration::from_millis(UNUSE_DELAY_MS / 4));
        let cleared = rig.run(&[call(H_PUT_TCE, [LIOBN, a, 0, 0])]);
        let done = t0.elapsed().as_millis() as u64;
        let (r, ms) = vfio.join().unwrap_or_else(|_| (Err("the VFIO thread panicked".to_string()), 0));
        (r, cleared, ms, done)
    });
    unmapped?;
    let (rets, _) = cleared?;
    if rets[0].r3 != H_SUCCESS {
        return Err(format!("the guest's H_PUT_TCE of 0 returned {}", rets[0].r3));
    }
    // The race took place only if the guest's clear was over before VFIO's pause was.
    if unmap_ms < UNUSE_DELAY_MS || clear_at_ms >= unmap_ms {
        return Err(format!(
            "VFIO's unmap took {unmap_ms} ms and the guest's clear was done at {clear_at_ms} ms: not inside the {UNUSE_DELAY_MS} ms pause (is patch 0013 in the kernel?)"
        ));
    }
    if rig.host_read_any(a >> SHIFT, 1)?.first() != Some(&0) {
        return Err("the raced entry is not empty in the hardware table".into());
    }
    // Entry 6 still maps the region: exactly one use is left on it.
    match rig.container.unregister_memory(rig.mem.host_addr(), RAM as u64) {
        Err(err) if errno_of(&err) == Some(libc::EBUSY) => {}
        Ok(()) => {
            return Err(
                "UNREGISTER_MEMORY answered 0 while entry 6 still maps the region: the raced entry's use was dropped twice (by VFIO's clear and by pvtce's)"
                    .into(),
            )
        }
        Err(err) => return Err(format!("UNREGISTER_MEMORY with entry 6 mapped: {err}, expected EBUSY")),
    }
    let (rets, _) = rig.run(&[call(H_PUT_TCE, [LIOBN, b, 0, 0])])?;
    if rets[0].r3 != H_SUCCESS {
        return Err(format!("clearing entry 6 returned {}", rets[0].r3));
    }
    let want = (RAM as i64 >> SHIFT) / 2;
    let released = rig.unregister_ram_releasing(want)?;
    if released < want {
        return Err(format!(
            "unregistering RAM released {released} pins in 10 s (a use left on the region keeps all of them)"
        ));
    }
    Ok(format!(
        "VFIO's clear of entry 5 paused {unmap_ms} ms after taking its address; the guest's H_PUT_TCE of 0, done at {clear_at_ms} ms, found it taken; with entry 6 mapped the unregister answered EBUSY (one use dropped), and once entry 6 was cleared it released {released} pins"
    ))
}
