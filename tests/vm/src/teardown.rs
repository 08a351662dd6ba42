//! `teardown-load`: every vCPU of one VM (one per L1 CPU) hammers one pvtce window with random H_PUT_TCE,
//! H_PUT_TCE_INDIRECT, H_STUFF_TCE and H_GET_TCE, each on its own slice of the window, while the VMM loops:
//! unlink the group (KVM_DEV_VFIO_FILE_DEL, which releases every link of the group), add and link it again,
//! unregister and re-register preregistered memory that no TCE names. Then, mid-run, the VMM closes the window
//! fd, then the VM's and the KVM VFIO device's fds; the VM goes with the last vCPU fd when the vCPUs stop.
//!
//! Checked:
//! - every call during the loop succeeds (an unlinked window keeps updating its guest table), and every
//!   H_GET_TCE answers what that vCPU wrote last to the entry (each vCPU keeps a per-entry log);
//! - after the loop, with the group linked: a GET of every entry matches the log; the guest writes each entry
//!   once more (entries changed while unlinked never reached the hardware: Linux does not replay them on link
//!   either) and then every hardware entry is the logged one;
//! - after the window fd closes, every call is either completed or exits to the VMM (the LIOBN is gone);
//! - at the end: 0 pvtce windows, the system's page pins and this process's locked_vm back at their baseline,
//!   and the module unloads. A lockdep, KFENCE, WARN or RCU report anywhere on the console fails the run.

use crate::rig::*;
use pvtce_test_support::payload::{self, Call, Reply};
use pvtce_vmm_glue::{kvm, mem::GuestMem};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// TCE size of the window: 64K, one hardware entry per TCE on this host.
const SHIFT: u32 = 16;
/// Entries of the window each vCPU owns.
const SLICE: u64 = 128;
/// Calls each vCPU makes while the VMM loops, in tables of [`BATCH`].
const CALLS: u64 = 3000;
const BATCH: usize = 16;
/// The largest H_PUT_TCE_INDIRECT / H_STUFF_TCE a vCPU issues (its whole slice).
const MAX_RUN: u64 = SLICE;
/// Guest memory: TCEs name pages of [TARGET, TARGET + TARGET_LEN); the VMM unregisters and re-registers
/// [SPARE, RAM), which no TCE names. Both are separate preregistered regions, as is [0, TARGET).
const TARGET: u64 = 8 << 20;
const TARGET_LEN: u64 = 4 << 20;
const SPARE: u64 = TARGET + TARGET_LEN;

/// vCPU `i`'s INDIRECT lists (one 4K page per call of a table), below TARGET, clear of its code and table
/// ([`vcpu_code`], [`vcpu_table`]).
fn lists(i: usize) -> u64 {
    0x40_0000 + 0x2_0000 * i as u64
}

/// xorshift64*: a fixed seed per vCPU, printed in the result.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
    /// A TCE naming a random target page with R, W or RW, or (one in four) a clear entry.
    fn tce(&mut self) -> u64 {
        if self.below(4) == 0 {
            return 0;
        }
        (TARGET + (self.below(TARGET_LEN >> SHIFT) << SHIFT)) | (1 + self.below(3))
    }
}

/// What one vCPU did.
#[derive(Default, Debug)]
struct Tally {
    calls: u64,
    gets: u64,
    exited: u64,
}

/// Phases the VMM moves the vCPUs through.
struct Phase {
    /// The vCPUs stop after their current table.
    stop: AtomicBool,
    /// The window fd was closed: calls may exit from now on.
    closed: AtomicBool,
    /// Calls of all vCPUs so far.
    calls: AtomicU64,
}

pub fn teardown_load() -> Result<String, String> {
    sh("modprobe pvtce")?;
    let pins0 = settled_pins()?;
    let lck0 = locked_vm_kb()?;
    let vcpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let result = Rig::new(Windows::Linked { tce_shift: SHIFT, size: 1 << 28 }).and_then(|rig| run(rig, vcpus));
    let windows = window_count();
    let unload = sh("rmmod pvtce");
    // Regions are freed (and their pages unpinned) by RCU callbacks: give them up to 10 s.
    let t = Instant::now();
    let mut pins1 = pins_outstanding()?;
    while pins1 != pins0 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        pins1 = pins_outstanding()?;
    }
    let lck1 = locked_vm_kb()?;
    let detail = result?;
    match windows {
        Ok(0) => {}
        Ok(n) => return Err(format!("{detail}; {n} pvtce window(s) left after the VM went")),
        Err(err) => return Err(format!("{detail}; window count: {err}")),
    }
    unload.map_err(|err| format!("{detail}; rmmod: {err}"))?;
    if pins1 != pins0 || lck1 != lck0 {
        return Err(format!(
            "{detail}; after teardown: page pins {pins1} (baseline {pins0}), locked_vm {lck1} kB (baseline {lck0} kB)"
        ));
    }
    Ok(format!("{detail}; 0 windows, pins and locked_vm at baseline ({pins0}, {lck0} kB), module unloaded"))
}

fn run(rig: Rig, vcpus: usize) -> Result<String, String> {
    if rig.pvtce_info()?.is_none() {
        return Err("the window is Linux's built-in one; pvtce did not take it".into());
    }
    if vcpus as u64 * SLICE > rig.window_size()? >> SHIFT || lists(vcpus) > TARGET {
        return Err(format!("{vcpus} vCPUs do not fit the window or the guest layout"));
    }
    let base = rig.mem.host_addr();
    let c = &rig.container;
    // Three regions instead of the rig's one, so that the spare one can come and go.
    c.unregister_memory(base, RAM as u64).map_err(e("UNREGISTER_MEMORY of the rig's RAM"))?;
    c.register_memory(base, TARGET).map_err(e("REGISTER_MEMORY, low"))?;
    c.register_memory(base + TARGET, TARGET_LEN).map_err(e("REGISTER_MEMORY, targets"))?;
    c.register_memory(base + SPARE, RAM as u64 - SPARE).map_err(e("REGISTER_MEMORY, spare"))?;
    let win = rig.window_bus()?;
    let mut cpus = Vec::with_capacity(vcpus);
    for i in 0..vcpus {
        cpus.push(extra_vcpu(&rig.vm, &rig.mem, i)?);
    }
    let phase = Phase { stop: AtomicBool::new(false), closed: AtomicBool::new(false), calls: AtomicU64::new(0) };
    let Rig { vcpu, window, kdev, vm, device, group, container, mem, .. } = rig;
    let window = window.ok_or("no window")?;
    let mem = &mem;

    // Round 1: the VMM loop against CALLS calls per vCPU.
    let t0 = Instant::now();
    let mut rounds = 0u32;
    let logs = std::thread::scope(|s| -> Result<Vec<(kvm::Vcpu, Vec<u64>, Tally)>, String> {
        let phase = &phase;
        let threads: Vec<_> = cpus
            .into_iter()
            .enumerate()
            .map(|(i, v)| s.spawn(move || hammer(v, mem, win, i, Some(CALLS), vec![0; SLICE as usize], phase)))
            .collect();
        let mut vmm = || -> Result<(), String> {
            while !threads.iter().all(|t| t.is_finished()) {
                kdev.del_group(group.fd()).map_err(e("KVM_DEV_VFIO_FILE_DEL"))?;
                kdev.add_group(group.fd()).map_err(e("KVM_DEV_VFIO_FILE_ADD"))?;
                kdev.link_tce(group.fd(), &window).map_err(e("relink"))?;
                container.unregister_memory(base + SPARE, RAM as u64 - SPARE).map_err(e("UNREGISTER_MEMORY, spare"))?;
                container.register_memory(base + SPARE, RAM as u64 - SPARE).map_err(e("REGISTER_MEMORY, spare"))?;
                rounds += 1;
            }
            Ok(())
        };
        let r = vmm();
        phase.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for t in threads {
            out.push(t.join().map_err(|_| "a vCPU thread panicked".to_string())??);
        }
        r?;
        Ok(out)
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let total: u64 = logs.iter().map(|(_, _, t)| t.calls).sum();
    let gets: u64 = logs.iter().map(|(_, _, t)| t.gets).sum();
    if rounds == 0 {
        return Err("the VMM loop never ran while the vCPUs did".into());
    }

    // Quiet, linked: every entry reads back as logged; written once more, the hardware has it too.
    let pages = hpa_pages(mem)?;
    let mut mismatches = Vec::new();
    for (i, (_, log, _)) in logs.iter().enumerate() {
        let first = win + ((i as u64 * SLICE) << SHIFT);
        let gets: Vec<Call> = (0..SLICE).map(|k| call(H_GET_TCE, [LIOBN, first + (k << SHIFT), 0, 0])).collect();
        let puts: Vec<Call> =
            (0..SLICE).map(|k| call(H_PUT_TCE, [LIOBN, first + (k << SHIFT), log[k as usize], 0])).collect();
        let mut rets = Vec::new();
        for chunk in gets.chunks(64).chain(puts.chunks(64)) {
            rets.extend(
                payload::run_at(&vcpu, mem, payload::TABLE, chunk, &mut |_, _| Reply { r3: EXITED as u64, r4: None })
                    .map_err(e("run L2"))?
                    .0,
            );
        }
        for k in 0..SLICE as usize {
            let (g, p) = (&rets[k], &rets[SLICE as usize + k]);
            if g.r3 != H_SUCCESS || g.r4 != log[k] || p.r3 != H_SUCCESS {
                mismatches.push(format!(
                    "vCPU {} entry {k}: GET ({}, {:#x}) PUT {}, logged {:#x}",
                    i + 1,
                    g.r3,
                    g.r4,
                    p.r3,
                    log[k]
                ));
            }
        }
        let hw = host_read_any(&group, first >> SHIFT, SLICE as usize)?;
        for (k, &h) in hw.iter().enumerate() {
            let got = if h == 0 { 0 } else { pages.get(&(h & !0xffff)).map_or(u64::MAX, |gpa| gpa | (h & 3)) };
            // An entry without R/W (a clear or a poison value) maps nothing.
            let want = if log[k] & 3 == 0 { 0 } else { log[k] };
            if got != want {
                mismatches.push(format!(
                    "vCPU {} entry {k}: hardware {h:#x} (guest {got:#x}), logged {:#x}",
                    i + 1,
                    log[k]
                ));
            }
        }
    }
    if !mismatches.is_empty() {
        return Err(format!(
            "{} lost or wrong entries, e.g. {}",
            mismatches.len(),
            mismatches[..mismatches.len().min(4)].join("; ")
        ));
    }

    // Round 2: the vCPUs run again; mid-run the window fd closes, then the VM's and the KVM VFIO device's.
    phase.stop.store(false, Ordering::Relaxed);
    let tallies = std::thread::scope(|s| -> Result<Vec<Tally>, String> {
        let phase = &phase;
        let threads: Vec<_> = logs
            .into_iter()
            .enumerate()
            .map(|(i, (v, log, _))| s.spawn(move || hammer(v, mem, win, i, None, log, phase).map(|(_, _, t)| t)))
            .collect();
        let wait = |n: u64| {
            let t = Instant::now();
            while phase.calls.load(Ordering::Relaxed) < n && t.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        wait(phase.calls.load(Ordering::Relaxed) + 200);
        phase.closed.store(true, Ordering::SeqCst);
        drop(window);
        wait(phase.calls.load(Ordering::Relaxed) + 200);
        drop(kdev);
        drop(vm);
        wait(phase.calls.load(Ordering::Relaxed) + 200);
        phase.stop.store(true, Ordering::Relaxed);
        threads.into_iter().map(|t| t.join().map_err(|_| "a vCPU thread panicked".to_string())?).collect()
    })?;
    let exited: u64 = tallies.iter().map(|t| t.exited).sum();
    if exited == 0 {
        return Err("no call exited after the window fd was closed".into());
    }
    // The VM goes with the last vCPU fd; then the VFIO side and the memory.
    drop(vcpu);
    drop((device, group, container));
    Ok(format!(
        "{vcpus} vCPUs x {CALLS} calls ({gets} GETs checked) in {secs:.1} s ({:.0} calls/s) against {rounds} VMM rounds of unlink+relink and unregister+register; every entry as logged, in the guest table and the hardware; after the close {exited} of {} calls exited",
        total as f64 / secs,
        tallies.iter().map(|t| t.calls).sum::<u64>()
    ))
}

/// vCPU `i + 1`: random calls on its slice until `limit` calls (or, with none, until `phase.stop`), checking
/// every GET against `log`, which it keeps. Before the window closes every call must succeed; after, calls
/// may exit (counted) and the log is no longer kept.
fn hammer(
    vcpu: kvm::Vcpu,
    mem: &GuestMem,
    win: u64,
    i: usize,
    limit: Option<u64>,
    mut log: Vec<u64>,
    phase: &Phase,
) -> Result<(kvm::Vcpu, Vec<u64>, Tally), String> {
    let mut rng = Rng(0x5eed_0000 + i as u64 * 0x9e37_79b9 + limit.map_or(1, |_| 0));
    let mut tally = Tally::default();
    let ioba = |k: u64| win + ((i as u64 * SLICE + k) << SHIFT);
    let r = (|| -> Result<(), String> {
        while limit.is_none_or(|l| tally.calls < l) && !(limit.is_none() && phase.stop.load(Ordering::Relaxed)) {
            // A table of random calls; what each does to the log if it succeeds.
            let mut calls = Vec::with_capacity(BATCH);
            let mut effects: Vec<(u64, Vec<u64>)> = Vec::with_capacity(BATCH);
            for j in 0..BATCH {
                let k = rng.below(SLICE);
                match rng.below(4) {
                    0 => {
                        let t = rng.tce();
                        calls.push(call(H_PUT_TCE, [LIOBN, ioba(k), t, 0]));
                        effects.push((k, vec![t]));
                    }
                    1 => {
                        let n = 1 + rng.below((SLICE - k).min(MAX_RUN));
                        let list: Vec<u64> = (0..n).map(|_| rng.tce()).collect();
                        let bytes: Vec<u8> = list.iter().flat_map(|t| t.to_be_bytes()).collect();
                        let at = lists(i) + 0x1000 * j as u64;
                        mem.write(at, &bytes).map_err(e("TCE list"))?;
                        calls.push(call(H_PUT_TCE_INDIRECT, [LIOBN, ioba(k), at, n]));
                        effects.push((k, list));
                    }
                    2 => {
                        // Linux's H_STUFF_TCE takes no R/W bits (H_PARAMETER): it clears, or stores a poison
                        // value the guest reads back.
                        let n = 1 + rng.below((SLICE - k).min(MAX_RUN));
                        let t = rng.tce() & !3;
                        calls.push(call(H_STUFF_TCE, [LIOBN, ioba(k), t, n]));
                        effects.push((k, vec![t; n as usize]));
                    }
                    _ => {
                        calls.push(call(H_GET_TCE, [LIOBN, ioba(k), 0, 0]));
                        effects.push((k, Vec::new()));
                    }
                }
            }
            let mut exits = 0u64;
            let (rets, _) = payload::run_at(&vcpu, mem, vcpu_table(i), &calls, &mut |_, _| {
                exits += 1;
                Reply { r3: EXITED as u64, r4: None }
            })
            .map_err(e("run L2"))?;
            tally.calls += calls.len() as u64;
            phase.calls.fetch_add(calls.len() as u64, Ordering::Relaxed);
            if phase.closed.load(Ordering::SeqCst) {
                tally.exited += exits;
                continue;
            }
            for (j, (r, (k, new))) in rets.iter().zip(&effects).enumerate() {
                let c = &calls[j];
                if r.r3 != H_SUCCESS {
                    return Err(format!(
                        "vCPU {}: call {:#x} {:x?} returned {} (exits {exits})",
                        i + 1,
                        c.nr,
                        c.args,
                        r.r3
                    ));
                }
                if c.nr == H_GET_TCE {
                    tally.gets += 1;
                    if r.r4 != log[*k as usize] {
                        return Err(format!(
                            "vCPU {}: entry {k} reads {:#x}, but the last write was {:#x}",
                            i + 1,
                            r.r4,
                            log[*k as usize]
                        ));
                    }
                } else {
                    log[*k as usize..*k as usize + new.len()].copy_from_slice(new);
                }
            }
        }
        Ok(())
    })();
    r.map(|()| (vcpu, log, tally))
}
