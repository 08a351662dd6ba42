//! The in-VM half of `cargo xtask bench` (a probe: it runs only when named, never in `all`).
//!
//! One boot, and the same L2 tables of TCE hypercalls run against three paths, in a
//! fresh VMM rig each (the order rotates every repetition):
//!
//! - `userspace`: no kernel window for the LIOBNs: every TCE hypercall exits to this VMM, whose fallback
//!   (pvtce-core) writes the host table with VFIO MAP/UNMAP, as QEMU does without acceleration;
//! - `linux`: kernel windows with pvtce.ko not loaded: Linux's C path owns them;
//! - `pvtce`: kernel windows with pvtce.ko loaded (its default mode, `PVTCE_MODE_PVTCE`).
//!
//! Each path gets the 32-bit default window (4K pages at bus 0) and a 64-bit DDW (64K pages at 1 << 59)
//! made by pvtce-core's DDW policy, and on each: H_PUT_TCE map + unmap pairs, H_PUT_TCE_INDIRECT of 512 fresh entries,
//! H_STUFF_TCE clearing 512 mapped entries, H_GET_TCE. Times are L2 timebase ticks around a whole table
//! (512 MHz, emulated under TCG). Then the floor: pvtce.ko's own host-table update without a hypercall
//! (`PVTCE_WINDOW_EXCHANGE`, on the pvtce path) and, for comparison, VFIO MAP/UNMAP of N pages vs 1 page
//! timed in L1 (on the userspace path); the memory of a 1 TiB 4K window; and, when L1 has the vCPUs,
//! hypercall throughput with 1, 2 and 4 vCPUs of one L2 VM, each with its own (unlinked) window.
//!
//! Every figure is one line `PVTCE-BENCH key=value ...` on the console; the host computes medians, spreads
//! and ratios. Nothing here judges a time.

use crate::rig::*;
use pvtce_test_support::payload::{self, Call};
use pvtce_vmm_glue::windows::{HostPe, Path};
use pvtce_vmm_glue::{kvm, mem::GuestMem};
use std::time::Instant;

const BUS64: u64 = 1 << 59;
/// First guest page the workloads map (above the payload, its table, the RTAS buffers and the list).
const DATA: u64 = 0x80_0000;
/// Distinct guest pages the workloads cycle through (64 x 64K = 4 MiB, inside the 16 MiB of RAM).
const PAGES: u64 = 64;
const PAIRS: u64 = 256;
const INDIRECT: u64 = 512;
/// INDIRECT-512 (and STUFF-512) calls per table.
const BATCHES: u64 = 8;
const GETS: u64 = 512;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Userspace,
    Linux,
    Pvtce,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Userspace => "userspace",
            Which::Linux => "linux",
            Which::Pvtce => "pvtce",
        }
    }
}

fn c(nr: u64, a: [u64; 4]) -> Call {
    Call { nr, args: [a[0], a[1], a[2], a[3], 0] }
}

fn tce(i: u64, shift: u32) -> u64 {
    (DATA + ((i % PAGES) << shift)) | 3
}

fn opt(key: &str) -> Option<u64> {
    let p = std::env::var("PVTCE_PROBE").unwrap_or_default();
    p.split(',').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// A TCE table under [`Policy::Fallback`]. Returns the results, the L2 ticks and the TCE hypercalls that exited.
/// Any other hypercall voids the table (the child fails and the parent runs the piece again): before patch
/// 0004 numbers of 0 came this way, from a VMM whose vector registers `KVM_RUN` had replaced with the guest's
/// (tests/vm/src/fpregs.rs).
fn run_tces(rig: &Rig, hp: &mut HostPe<'_>, calls: &[Call]) -> Result<(Vec<payload::Ret>, u64, u32), String> {
    let run = rig.run_with(calls, Policy::Fallback(hp))?;
    if let Some(nr) = run.last_other {
        return Err(format!("L2 made hypercall {nr:#x}, not a TCE one"));
    }
    Ok((run.rets, run.tb, run.tce))
}

/// A table that must succeed call by call; returns the L2 ticks and the TCE exits.
fn timed(rig: &Rig, hp: &mut HostPe<'_>, calls: &[Call]) -> Result<(u64, u32), String> {
    let (rets, tb, exits) = run_tces(rig, hp, calls)?;
    if let Some((i, r)) = rets.iter().enumerate().find(|(_, r)| r.r3 != H_SUCCESS) {
        return Err(format!("call {i} ({:#x} {:x?}) returned {}", calls[i].nr, calls[i].args, r.r3));
    }
    Ok((tb, exits))
}

/// `(ticks, exits, pvtce's host updates, kills and early-path answers during the table)`.
type Timed = (u64, u32, Option<(u64, u64, u64)>);

/// [`timed`] plus, on a pvtce window, how many host-table updates and invalidations the table caused and how
/// many of its calls KVM-HV's early path answered.
fn timed_stats(rig: &Rig, hp: &mut HostPe<'_>, liobn: u64, calls: &[Call]) -> Result<Timed, String> {
    let info = |hp: &HostPe<'_>| -> Result<Option<(u64, u64, u64)>, String> {
        match hp.window(pvtce_core::types::Liobn(liobn)).and_then(|w| w.kernel.as_ref()) {
            Some(t) => Ok(t.info().map_err(e("PVTCE_WINDOW_INFO"))?.map(|i| (i.host_updates, i.host_kills, i.early))),
            None => Ok(None),
        }
    };
    let before = info(hp)?;
    let (t, x) = timed(rig, hp, calls)?;
    let after = info(hp)?;
    Ok((t, x, before.zip(after).map(|(b, a)| (a.0 - b.0, a.1 - b.1, a.2 - b.2))))
}

/// Where a timed table ran: the path, its repetition, the rig of the repetition and the try of the rig.
#[derive(Clone, Copy)]
struct At {
    which: Which,
    rep: u32,
    rig: u32,
    try_: u64,
}

fn emit(at: At, win: &str, work: &str, units: u64, calls: u64, (ticks, exits, host): Timed) {
    let host = host.map_or(String::new(), |(u, k, x)| format!(" host_updates={u} host_kills={k} early={x}"));
    let At { which, rep, rig, try_ } = at;
    println!(
        "PVTCE-BENCH kind=hcall path={} win={win} work={work} rep={rep} rig={rig} try={try_} units={units} calls={calls} ticks={ticks} exits={exits}{host}",
        which.name()
    );
}

/// pvtce.ko is loaded for the pvtce path only: the Linux path is Linux's C code with no module in the
/// kernel at all, as in the `ddw-*` tests (the userspace path makes no kernel window, so either is fine).
/// `bench_ioctls=1` offers the floor's `PVTCE_WINDOW_EXCHANGE`, which a default load refuses. With
/// `pvtce_probe=early=0` the pvtce path runs without KVM-HV's early path (module parameter `early=0`), for an
/// A/B run of it.
///
/// With `pvtce_probe=ksyms=1` it then prints the modules' text symbols (`KSYM <address> <type> <name>
/// [<module>]` from `/proc/kallsyms`), which bench/tcg-pages/ana.py names a TCG plugin's pages with.
fn load_for(which: Which) -> Result<(), String> {
    let loaded = std::fs::metadata("/sys/module/pvtce").is_ok();
    let r = match (which, loaded) {
        (Which::Pvtce, false) if opt("early") == Some(0) => sh("modprobe pvtce bench_ioctls=1 early=0").map(drop),
        (Which::Pvtce, false) => sh("modprobe pvtce bench_ioctls=1").map(drop),
        (Which::Linux, true) => sh("rmmod pvtce").map(drop),
        _ => Ok(()),
    };
    if opt("ksyms") == Some(1) {
        let syms = std::fs::read_to_string("/proc/kallsyms").map_err(|err| format!("/proc/kallsyms: {err}"))?;
        for l in syms.lines().filter(|l| l.contains('[')) {
            println!("KSYM {l}");
        }
    }
    r
}

/// One path, one repetition's rig `rig`: a fresh rig, both windows, every workload; the probes after the timed
/// tables (L1 side, parent counts, floors) run in a repetition's first rig only.
fn one_path(which: Which, rep: u32, rig_no: u32) -> Result<(), String> {
    let path = if which == Which::Userspace { Path::Fallback } else { Path::Kernel };
    let rig = &Rig::new(Windows::Pe { add_group: path == Path::Kernel })?;
    let hp = &mut rig.host_pe(path)?;
    let ddw = &mut new_ddw();
    ddw.boot(hp).map_err(e("default window"))?;
    // The 64-bit window as RTAS would make it (pvtce-core's policy, then host window + kernel window), without
    // the H_RTAS round trip, which is not what is measured here.
    let booted: Vec<_> = ddw.pe.windows().collect();
    let created = ddw
        .pe
        .create(16, 32)
        .map_err(|s| format!("DDW policy refused 64K/2^32: {s:?}; windows at boot {booted:x?}"))?;
    pvtce_vmm_glue::rtas::DdwBackend::create(hp, &created).map_err(e("64-bit window"))?;
    if created.geometry.bus_start() != BUS64 {
        return Err(format!("the 64-bit window is at {:#x}", created.geometry.bus_start()));
    }
    // The windows are whose they should be.
    for l in [L0, L1] {
        let w = hp.window(pvtce_core::types::Liobn(l)).ok_or("window missing")?;
        let owner = match &w.kernel {
            None => Which::Userspace,
            Some(t) => match t.info().map_err(e("PVTCE_WINDOW_INFO"))? {
                Some(_) => Which::Pvtce,
                None => Which::Linux,
            },
        };
        if owner != which {
            return Err(format!("LIOBN {l:#x} is {}'s, expected {}'s", owner.name(), which.name()));
        }
    }
    // With `tries=N` each table runs N times in a row (the sequence leaves the windows as it found them) and
    // the host takes the rig's fastest try. Default 3: a disturbance (an interrupt in L1, the emulating
    // host's own scheduling) lands on one try of a table and makes it up to 2x slower, on every path alike.
    let tries = opt("tries").unwrap_or(3);
    for (win, liobn, base, shift) in [("4k", L0, 0u64, 12u32), ("64k", L1, BUS64, 16)] {
        let ioba = |i: u64| base + (i << shift);
        let list: Vec<u8> = (0..INDIRECT).flat_map(|i| tce(i, shift).to_be_bytes()).collect();
        rig.mem.write(LIST, &list).map_err(e("list"))?;
        let range = |k: u64| ioba(1024 + k * INDIRECT);
        for t in 0..tries {
            let mut measure = |work: &str, units: u64, calls: &[Call]| -> Result<(), String> {
                let tx = timed_stats(rig, hp, liobn, calls)?;
                emit(At { which, rep, rig: rig_no, try_: t }, win, work, units, calls.len() as u64, tx);
                Ok(())
            };
            // H_PUT_TCE map + unmap pairs.
            let calls: Vec<Call> = (0..PAIRS)
                .flat_map(|i| [c(H_PUT_TCE, [liobn, ioba(i), tce(i, shift), 0]), c(H_PUT_TCE, [liobn, ioba(i), 0, 0])])
                .collect();
            measure("put_pair", PAIRS, &calls)?;
            // H_PUT_TCE_INDIRECT of 512 fresh entries, BATCHES times on disjoint ranges.
            let calls: Vec<Call> =
                (0..BATCHES).map(|k| c(H_PUT_TCE_INDIRECT, [liobn, range(k), LIST, INDIRECT])).collect();
            measure("indirect512", BATCHES * INDIRECT, &calls)?;
            // H_GET_TCE over mapped entries.
            let calls: Vec<Call> = (0..GETS).map(|i| c(H_GET_TCE, [liobn, range(0) + (i << shift), 0, 0])).collect();
            measure("get", GETS, &calls)?;
            // H_STUFF_TCE clearing the 512-entry mapped ranges.
            let calls: Vec<Call> = (0..BATCHES).map(|k| c(H_STUFF_TCE, [liobn, range(k), 0, INDIRECT])).collect();
            measure("stuff512", BATCHES * INDIRECT, &calls)?;
            // The same with one entry per call, for the per-entry slope.
            let calls: Vec<Call> = (0..BATCHES)
                .flat_map(|k| {
                    [c(H_PUT_TCE_INDIRECT, [liobn, range(k), LIST, 1]), c(H_STUFF_TCE, [liobn, range(k), 0, 1])]
                })
                .collect();
            measure("indirect1_stuff1", BATCHES, &calls)?;
        }
    }
    if rig_no != 0 {
        return Ok(());
    }
    // The probes below need pvtce.ko (bench_ioctls=1). The Linux and userspace paths load it without its
    // backend (backend=0: no hook runs on a hypercall, exactly as without the module) and unload it after.
    let l1 = opt("l1").unwrap_or(1) != 0;
    let parent = which != Which::Userspace && opt("parent").unwrap_or(1) != 0;
    if which != Which::Pvtce && (l1 || parent) {
        if std::fs::metadata("/sys/module/pvtce").is_ok() {
            sh("rmmod pvtce")?;
        }
        sh("modprobe pvtce bench_ioctls=1 backend=0")?;
    }
    let probes = (|| {
        if l1 {
            l1_times(which, rig, hp, rep, tries)?;
        }
        if parent {
            parent_counts(which, rig, hp, rep)?;
        }
        Ok::<(), String>(())
    })();
    if which != Which::Pvtce && (l1 || parent) {
        sh("rmmod pvtce")?;
    }
    probes?;
    if which == Which::Userspace && opt("floor").unwrap_or(1) != 0 {
        floor(rig, rep)?;
    }
    if which == Which::Pvtce && opt("floor").unwrap_or(1) != 0 {
        exchange_floor(rig, hp, rep)?;
    }
    Ok(())
}

/// A benchmark ioctl on /dev/pvtce whose argument `r` (a pvtce_uapi struct with `argsz` and `flags`, filled in)
/// the kernel reads and writes back.
///
/// # Safety
/// `nr` must be the ioctl whose argument is a `T`.
unsafe fn control<T>(nr: pvtce_uapi::Ioctl, name: &str, mut r: T) -> Result<T, String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open("/dev/pvtce").map_err(e("open /dev/pvtce"))?;
    // SAFETY: `r` is the `T` that `nr` takes (the caller's guarantee), valid for reads and writes for the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), nr, &mut r) } != 0 {
        return Err(format!("{name}: {}", std::io::Error::last_os_error()));
    }
    Ok(r)
}

/// `PVTCE_PARENT_HCALLS` on /dev/pvtce: `flags` 0 (read), START or STOP; (put, indirect, stuff, get).
fn parent(flags: u32) -> Result<[u64; 4], String> {
    let r = pvtce_uapi::pvtce_parent_hcalls {
        argsz: std::mem::size_of::<pvtce_uapi::pvtce_parent_hcalls>() as u32,
        flags,
        ..Default::default()
    };
    // SAFETY: PVTCE_PARENT_HCALLS takes a pvtce_parent_hcalls.
    let r = unsafe { control(pvtce_uapi::PVTCE_PARENT_HCALLS, "PVTCE_PARENT_HCALLS", r) }?;
    Ok([r.put, r.indirect, r.stuff, r.get])
}

/// `PVTCE_L1_TIME` on /dev/pvtce: `flags` 0 (read), START (| NESTED) or STOP; per kind (H_PUT_TCE,
/// H_PUT_TCE_INDIRECT, H_STUFF_TCE, H_GET_TCE, other): the closed intervals, their L1 ticks, the handler's
/// ticks, and with NESTED the H_ENTER_NESTED intervals and their ticks.
pub fn l1_time(flags: u32) -> Result<[[u64; 5]; 5], String> {
    let r = pvtce_uapi::pvtce_l1_time {
        argsz: std::mem::size_of::<pvtce_uapi::pvtce_l1_time>() as u32,
        flags,
        ..Default::default()
    };
    // SAFETY: PVTCE_L1_TIME takes a pvtce_l1_time.
    let r = unsafe { control(pvtce_uapi::PVTCE_L1_TIME, "PVTCE_L1_TIME", r) }?;
    Ok(r.kind.map(|k| [k.exits, k.l1_ticks, k.hcall_ticks, k.nested_exits, k.nested_ticks]))
}

/// (work, units, calls, kind index in [`l1_time`]'s answer, START flags, probe name).
type L1Table<'a> = (&'static str, u64, &'a [Call], usize, u32, &'static str);

/// L1's side of each hypercall, untimed by L2 and apart from the timed tables (the probes cost every exit a
/// few calls): the same tables again with pvtce.ko's probes on kvm-hv's tracepoints (`PVTCE_L1_TIME`), which
/// time in L1 each exit from `kvm_guest_exit` to the next `kvm_guest_enter` (`probe=loop`) and the handler
/// (`kvm_hcall_enter` to `kvm_hcall_exit`) inside it; then the H_GET_TCE table once more with the
/// H_ENTER_NESTED intervals too (`probe=nested`: all of L1's side, its nested entry's register switch
/// included; this turns on hypercall tracing, which slows L1's own hypercalls, and H_GET_TCE makes none).
/// Only this thread's exits count (it runs the vCPU). `ticks` is L2's own time for the table in this run, so
/// the host can take L1's share of it within one table. The sequence runs `tries` times (`try=` on each line).
fn l1_times(which: Which, rig: &Rig, hp: &mut HostPe<'_>, rep: u32, tries: u64) -> Result<(), String> {
    const START: u32 = pvtce_uapi::PVTCE_L1_START;
    let _ = l1_time(pvtce_uapi::PVTCE_L1_STOP);
    for (win, liobn, base, shift) in [("4k", L0, 0u64, 12u32), ("64k", L1, BUS64, 16)] {
        let ioba = |i: u64| base + (i << shift);
        let list: Vec<u8> = (0..INDIRECT).flat_map(|i| tce(i, shift).to_be_bytes()).collect();
        rig.mem.write(LIST, &list).map_err(e("list"))?;
        let range = |k: u64| ioba(1024 + k * INDIRECT);
        let put: Vec<Call> = (0..PAIRS)
            .flat_map(|i| [c(H_PUT_TCE, [liobn, ioba(i), tce(i, shift), 0]), c(H_PUT_TCE, [liobn, ioba(i), 0, 0])])
            .collect();
        let indirect: Vec<Call> =
            (0..BATCHES).map(|k| c(H_PUT_TCE_INDIRECT, [liobn, range(k), LIST, INDIRECT])).collect();
        let get: Vec<Call> = (0..GETS).map(|i| c(H_GET_TCE, [liobn, range(0) + (i << shift), 0, 0])).collect();
        let stuff: Vec<Call> = (0..BATCHES).map(|k| c(H_STUFF_TCE, [liobn, range(k), 0, INDIRECT])).collect();
        // (work, units, calls, kind index, probe flags): the order of the timed tables (the GETs read
        // entries INDIRECT mapped, STUFF clears them), then the GETs with the nested intervals.
        let tables: [L1Table<'_>; 5] = [
            ("put_pair", PAIRS, &put, 0, START, "loop"),
            ("indirect512", BATCHES, &indirect, 1, START, "loop"),
            ("get", GETS, &get, 3, START, "loop"),
            ("get", GETS, &get, 3, START | pvtce_uapi::PVTCE_L1_NESTED, "nested"),
            ("stuff512", BATCHES, &stuff, 2, START, "loop"),
        ];
        // Each try runs the whole sequence, which leaves the window as it found it (STUFF clears what INDIRECT
        // mapped); the host takes each table's fastest try, as for the timed tables.
        for t in 0..tries {
            for &(work, units, calls, k, flags, probe) in &tables {
                l1_time(flags)?;
                let r = timed(rig, hp, calls);
                let s = l1_time(pvtce_uapi::PVTCE_L1_STOP)?;
                let (ticks, exits) = r?;
                let [n, l1, hc, nn, nt] = s[k];
                let other = s[4];
                println!(
                    "PVTCE-BENCH kind=l1 path={} win={win} work={work} probe={probe} rep={rep} try={t} units={units} calls={} ticks={ticks} vmm_exits={exits} exits={n} l1_ticks={l1} hcall_ticks={hc} nested_exits={nn} nested_ticks={nt} other_exits={} other_ticks={}",
                    which.name(),
                    calls.len(),
                    other[0],
                    other[1]
                );
            }
        }
    }
    Ok(())
}

/// Counts the hypercalls L1 makes to L0 (pseries `hcall_entry` tracepoint, probed by pvtce.ko with
/// `bench_ioctls=1`) for one call of each kind, untimed, after the timed tables: an H_PUT_TCE map + unmap
/// pair, an H_PUT_TCE_INDIRECT of 512, an H_STUFF_TCE of 512, and 8 H_GET_TCE (none should reach L0), and an
/// empty table (what else L1 sends meanwhile). On the Linux path pvtce.ko is loaded for the count only,
/// without its backend (the caller loads and unloads it).
fn parent_counts(which: Which, rig: &Rig, hp: &mut HostPe<'_>, rep: u32) -> Result<(), String> {
    {
        for (win, liobn, base, shift) in [("4k", L0, 0u64, 12u32), ("64k", L1, BUS64, 16)] {
            let at = base + ((1024 + 2 * INDIRECT) << shift);
            let works: [(&str, Vec<Call>); 5] = [
                ("none", vec![]),
                ("put_pair", vec![c(H_PUT_TCE, [liobn, at, tce(0, shift), 0]), c(H_PUT_TCE, [liobn, at, 0, 0])]),
                ("indirect512", vec![c(H_PUT_TCE_INDIRECT, [liobn, at, LIST, INDIRECT])]),
                ("stuff512", vec![c(H_STUFF_TCE, [liobn, at, 0, INDIRECT])]),
                ("get8", (0..8).map(|i| c(H_GET_TCE, [liobn, at + (i << shift), 0, 0])).collect()),
            ];
            let list: Vec<u8> = (0..INDIRECT).flat_map(|i| tce(i, shift).to_be_bytes()).collect();
            rig.mem.write(LIST, &list).map_err(e("list"))?;
            for (work, calls) in works {
                parent(pvtce_uapi::PVTCE_PARENT_START)?;
                let t = timed(rig, hp, &calls);
                let [put, indirect, stuff, get] = parent(pvtce_uapi::PVTCE_PARENT_STOP)?;
                let (_, exits) = t?;
                println!(
                    "PVTCE-BENCH kind=parent path={} win={win} work={work} rep={rep} exits={exits} put={put} indirect={indirect} stuff={stuff} get={get}",
                    which.name()
                );
            }
        }
        Ok(())
    }
}

/// The floor issue 6 asks for: pvtce.ko's own host-table update without a hypercall
/// (`PVTCE_WINDOW_EXCHANGE`: `table_exchange` per entry + one kill, timed in L1 with the timebase), on a clear
/// range of each window. 512 entries on the 4K window, 256 on the 64K one (all of the 16 MiB of RAM). The
/// fastest of 8 rounds after one warm-up, as for the hypercall tables.
fn exchange_floor(rig: &Rig, hp: &HostPe<'_>, rep: u32) -> Result<(), String> {
    for (win, liobn, n) in [("4k", L0, INDIRECT), ("64k", L1, (RAM as u64) >> 16)] {
        let w = hp.window(pvtce_core::types::Liobn(liobn)).ok_or("window missing")?;
        let t = w.kernel.as_ref().ok_or("no kernel window")?;
        let ua = rig.mem.host_addr();
        t.bare_exchange(8192, n, ua).map_err(e("PVTCE_WINDOW_EXCHANGE"))?;
        let (mut map, mut unmap) = (u64::MAX, u64::MAX);
        for _ in 0..8 {
            let (m, u) = t.bare_exchange(8192, n, ua).map_err(e("PVTCE_WINDOW_EXCHANGE"))?;
            map = map.min(m);
            unmap = unmap.min(u);
        }
        println!("PVTCE-BENCH kind=xfloor win={win} rep={rep} entries={n} map_ticks={map} unmap_ticks={unmap}");
        // The batched floor: the same passes as one `table_run` each (the hypercall path's own update).
        batched_exchange(t, 8192, n, ua)?;
        let (mut map, mut unmap) = (u64::MAX, u64::MAX);
        for _ in 0..8 {
            let (m, u) = batched_exchange(t, 8192, n, ua)?;
            map = map.min(m);
            unmap = unmap.min(u);
        }
        println!("PVTCE-BENCH kind=bfloor win={win} rep={rep} entries={n} map_ticks={map} unmap_ticks={unmap}");
    }
    Ok(())
}

/// `PVTCE_WINDOW_EXCHANGE` with `PVTCE_EXCHANGE_BATCHED`: (map ticks, unmap ticks).
fn batched_exchange(t: &kvm::Window, first: u64, count: u64, ua: u64) -> Result<(u64, u64), String> {
    use std::os::fd::AsRawFd;
    let mut r = pvtce_uapi::pvtce_exchange {
        argsz: std::mem::size_of::<pvtce_uapi::pvtce_exchange>() as u32,
        flags: pvtce_uapi::PVTCE_EXCHANGE_BATCHED,
        first,
        count,
        ua,
        ..Default::default()
    };
    // SAFETY: `r` is a valid pvtce_exchange the kernel reads and writes back, for the call.
    if unsafe { libc::ioctl(t.fd.as_raw_fd(), pvtce_uapi::PVTCE_WINDOW_EXCHANGE, &mut r) } != 0 {
        return Err(format!("PVTCE_WINDOW_EXCHANGE (batched): {}", std::io::Error::last_os_error()));
    }
    Ok((r.map_ticks, r.unmap_ticks))
}

/// The host-table update alone: VFIO MAP_DMA / UNMAP_DMA of N pages and of 1 page on the host windows, timed
/// in L1 (no hypercall; the sPAPR v2 driver does the same per-entry work as the kernel paths: preregistered
/// ua -> hpa, `iommu_tce_xchg_no_kill`, one kill per call). Reported in timebase ticks (ns x 0.512).
fn floor(rig: &Rig, rep: u32) -> Result<(), String> {
    let c = &rig.container;
    for (win, base, shift, n) in [("4k", 0u64, 12u32, 512u64), ("64k", BUS64, 16, 128)] {
        let iova = base + (8192u64 << shift);
        let ua = rig.mem.host_addr() + DATA;
        for pages in [1u64, n] {
            let len = pages << shift;
            // The fastest of the rounds, as for the hypercall tables.
            let mut map = f64::INFINITY;
            let mut unmap = f64::INFINITY;
            const ROUNDS: u32 = 8;
            for _ in 0..ROUNDS {
                let t = Instant::now();
                // SAFETY: `[ua, ua + len)` is guest RAM (DATA + 512 4K or 128 64K pages, inside RAM).
                unsafe { c.map_dma(ua, iova, len, true, true) }.map_err(e("floor MAP_DMA"))?;
                map = map.min(t.elapsed().as_nanos() as f64);
                let t = Instant::now();
                c.unmap_dma(iova, len).map_err(e("floor UNMAP_DMA"))?;
                unmap = unmap.min(t.elapsed().as_nanos() as f64);
            }
            let tick = |ns: f64| (ns * 0.512).round() as u64;
            println!(
                "PVTCE-BENCH kind=floor win={win} rep={rep} pages={pages} map_ticks={} unmap_ticks={}",
                tick(map),
                tick(unmap)
            );
        }
    }
    Ok(())
}

fn memfree_kib() -> Result<u64, String> {
    let s = std::fs::read_to_string("/proc/meminfo").map_err(e("/proc/meminfo"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("MemFree:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no MemFree".into())
}

/// A 1 TiB window of 4K pages (2^28 entries), unlinked, in a VM of its own: VmLck (what KVM charges to
/// locked_vm) and MemFree before and after creating it and after mapping 1% of it contiguously with
/// H_PUT_TCE_INDIRECT; pvtce's `table_bytes` where pvtce owns it.
fn memory(which: Which, pct_mapped: u64) -> Result<(), String> {
    const ENTRIES: u64 = 1 << 28;
    let k = kvm::Kvm::open().map_err(e("open /dev/kvm"))?;
    let vm = k.create_vm().map_err(e("create VM"))?;
    let mem = GuestMem::new(RAM).map_err(e("guest RAM"))?;
    // SAFETY: `vcpu` is declared after `mem`, so it is dropped first, and only this function runs it.
    let vcpu = unsafe { payload::boot(&vm, &mem) }.map_err(e("L2 vCPU"))?;
    let (lck0, free0) = (locked_vm_kb()?, memfree_kib()?);
    let t = vm.create_window(0x9000_0000, 12, 0, ENTRIES).map_err(e("1 TiB window"))?;
    let (lck1, free1) = (locked_vm_kb()?, memfree_kib()?);
    let bytes = |t: &kvm::Window| -> Result<Option<u64>, String> {
        Ok(t.info().map_err(e("PVTCE_WINDOW_INFO"))?.map(|i| i.table_bytes))
    };
    let empty = bytes(&t)?;
    let list: Vec<u8> = (0..INDIRECT).flat_map(|i| tce(i, 12).to_be_bytes()).collect();
    mem.write(LIST, &list).map_err(e("list"))?;
    let mapped = ENTRIES * pct_mapped / 100;
    let calls_needed = mapped.div_ceil(INDIRECT);
    let mut done = 0u64;
    while done < calls_needed {
        let n = (calls_needed - done).min(payload::MAX_ENTRIES);
        let calls: Vec<Call> = (done..done + n)
            .map(|k| c(H_PUT_TCE_INDIRECT, [0x9000_0000, (k * INDIRECT) << 12, LIST, INDIRECT]))
            .collect();
        let run = run_on(&vcpu, &mem, payload::TABLE, &calls, Policy::Count, &ExitLog::default())?;
        if run.other != 0 || run.rets.iter().any(|r| r.r3 != H_SUCCESS) {
            let bad = run.rets.iter().find(|r| r.r3 != 0);
            return Err(format!("1% mapping: {} exits, returns {bad:?}", run.other));
        }
        done += n;
    }
    let (lck2, free2) = (locked_vm_kb()?, memfree_kib()?);
    let full = bytes(&t)?;
    let o = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!(
        "PVTCE-BENCH kind=memory path={} entries={ENTRIES} mapped={} vmlck_kib=[{lck0},{lck1},{lck2}] memfree_drop_kib=[{},{}] table_bytes_empty={} table_bytes_mapped={}",
        which.name(),
        calls_needed * INDIRECT,
        free0.saturating_sub(free1),
        free0.saturating_sub(free2),
        o(empty),
        o(full)
    );
    drop(t);
    Ok(())
}

/// `n` vCPUs of one L2 VM, each on its own L1 thread with its own (unlinked) 4K window and its own copy of the
/// payload and table, all running tables of H_PUT_TCE pairs for the same number of rounds; prints the total
/// hypercall throughput over the slowest thread's wall time, and each vCPU's L2 ticks.
fn scaling(which: Which, n: usize, rounds: u32, rep: u32) -> Result<(), String> {
    let k = kvm::Kvm::open().map_err(e("open /dev/kvm"))?;
    let vm = k.create_vm().map_err(e("create VM"))?;
    let mem = GuestMem::new(RAM).map_err(e("guest RAM"))?;
    // SAFETY: `mem` is guest RAM; every vCPU is created and dropped inside the scoped threads below, which
    // end before `mem` goes.
    unsafe { vm.set_memory(0, 0, RAM as u64, mem.host_addr()) }.map_err(e("memory slot"))?;
    vm.configure_radix().map_err(e("radix"))?;
    // vCPU i: code at 0x1000 * (i + 1), table at 1 MiB + 64 KiB * i (below DATA).
    let code = |i: usize| 0x1000 * (i as u64 + 1);
    let table = |i: usize| 0x10_0000 + 0x1_0000 * i as u64;
    let mut tables = Vec::new();
    for i in 0..n {
        mem.write(code(i), &payload::program_at(table(i))).map_err(e("payload"))?;
        let liobn = L0 + i as u64;
        tables.push(vm.create_window(liobn, 12, 0, (1 << 30) >> 12).map_err(e("window"))?);
    }
    let barrier = std::sync::Barrier::new(n);
    let results: Vec<Result<(f64, u64, u64), String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (b, vm, mem) = (&barrier, &vm, &mem);
                s.spawn(move || -> Result<(f64, u64, u64), String> {
                    let vcpu = vm.create_vcpu(i as u64).map_err(e("vCPU"))?;
                    vcpu.enable_papr().map_err(e("PAPR"))?;
                    vcpu.set_entry(code(i)).map_err(e("entry"))?;
                    let liobn = L0 + i as u64;
                    let calls: Vec<Call> = (0..PAIRS)
                        .flat_map(|p| {
                            [c(H_PUT_TCE, [liobn, p << 12, tce(p, 12), 0]), c(H_PUT_TCE, [liobn, p << 12, 0, 0])]
                        })
                        .collect();
                    let log = ExitLog::default();
                    let run = || run_on(&vcpu, mem, table(i), &calls, Policy::Count, &log).map(|r| (r.rets, r.tb));
                    // One warm-up table (first-touch allocation of the guest table), then the timed rounds.
                    run()?;
                    b.wait();
                    let t = Instant::now();
                    let mut ticks = 0u64;
                    for _ in 0..rounds {
                        let (rets, tb) = run()?;
                        if rets.iter().any(|r| r.r3 != H_SUCCESS) {
                            return Err("a PUT failed".into());
                        }
                        ticks += tb;
                    }
                    let wall = t.elapsed().as_secs_f64();
                    if log.count.get() > 0 {
                        return Err(format!("{} hypercalls left the kernel", log.count.get()));
                    }
                    Ok((wall, ticks, calls.len() as u64 * u64::from(rounds)))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into()))).collect()
    });
    drop(tables);
    let mut wall = 0f64;
    let mut calls = 0u64;
    let mut ticks = Vec::new();
    for r in results {
        let (w, t, c) = r?;
        wall = wall.max(w);
        calls += c;
        ticks.push(t.to_string());
    }
    println!(
        "PVTCE-BENCH kind=scaling path={} vcpus={n} rep={rep} calls={calls} wall_ns={} l2_ticks=[{}]",
        which.name(),
        (wall * 1e9) as u64,
        ticks.join(",")
    );
    Ok(())
}

/// Runs one piece of the benchmark in a child process (`__bench ARGS`) with stdout going to the console: every
/// rig gets a fresh VMM process, as every path would in real use (the conformance probe does the same).
/// Its figures reach the console only if the whole piece succeeded; a failed piece (a void table, see
/// `run_tces`) runs again, up to [`ATTEMPTS`] times, and each retry is reported.
fn in_child(args: &[String]) -> Result<(), String> {
    let mut why = String::new();
    for attempt in 1..=ATTEMPTS {
        let out = std::process::Command::new("/proc/self/exe")
            .arg("__bench")
            .args(args)
            .output()
            .map_err(|err| format!("start the bench child: {err}"))?;
        if out.status.success() {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            return Ok(());
        }
        why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        println!("PVTCE-BENCH kind=retry piece={} attempt={attempt} why={}", args.join(":"), why.replace(' ', "_"));
    }
    Err(format!("bench child {args:?} failed {ATTEMPTS} times: {why}"))
}

const ATTEMPTS: u32 = 8;

fn which(name: &str) -> Result<Which, String> {
    [Which::Userspace, Which::Linux, Which::Pvtce]
        .into_iter()
        .find(|w| w.name() == name)
        .ok_or_else(|| format!("unknown path {name}"))
}

/// A bench child: `path WHICH REP`, `memory WHICH PCT`, or `scaling WHICH N ROUNDS REP`.
pub fn child(args: &[String]) -> Result<(), String> {
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let n = |i: usize| a(i).parse::<u64>().map_err(|_| format!("bad number {:?}", a(i)));
    match a(0) {
        "path" => one_path(which(a(1))?, n(2)? as u32, if a(3).is_empty() { 0 } else { n(3)? as u32 }),
        "memory" => memory(which(a(1))?, n(2)?),
        "scaling" => scaling(which(a(1))?, n(2)? as usize, n(3)? as u32, n(4)? as u32),
        other => Err(format!("unknown bench child {other:?}")),
    }
}

pub fn bench() -> Result<String, String> {
    let reps = opt("reps").unwrap_or(5) as u32;
    // Rigs per path in one repetition (`rigs=N`), the paths rotating between rigs as between repetitions: a
    // rig's placement (its VM's and windows' structures, pvtce.ko's load address) moves its times as a whole
    // (docs/bench/README.md, "Noise"), so a repetition's figure per path is taken over its rigs.
    let rigs = opt("rigs").unwrap_or(3).max(1) as u32;
    let r = (|| -> Result<String, String> {
        let order = [Which::Userspace, Which::Linux, Which::Pvtce];
        let mut dropped = 0u32;
        for rep in 0..reps {
            for rig in 0..rigs {
                for k in 0..3 {
                    let w = order[(k + (rep * rigs + rig) as usize) % 3];
                    load_for(w)?;
                    // A piece void every attempt is dropped (its repetition then has no ratio for that path),
                    // not the whole run: the artefact comes and goes with the emulating host's load.
                    let piece = ["path".into(), w.name().into(), rep.to_string(), rig.to_string()];
                    if let Err(x) = in_child(&piece) {
                        println!("PVTCE-BENCH kind=dropped path={} rep={rep} rig={rig}", w.name());
                        eprintln!("bench: {} rep {rep} rig {rig} dropped: {x}", w.name());
                        dropped += 1;
                    }
                }
            }
        }
        if opt("memory").unwrap_or(1) != 0 {
            for w in [Which::Linux, Which::Pvtce] {
                load_for(w)?;
                in_child(&["memory".into(), w.name().into(), "1".into()])?;
            }
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max = opt("scaling").unwrap_or(4) as usize;
        let rounds = opt("rounds").unwrap_or(4);
        for rep in 0..reps.min(3) {
            for n in [1usize, 2, 4].into_iter().filter(|&n| n <= max && n <= cpus) {
                for w in [Which::Pvtce, Which::Linux] {
                    load_for(w)?;
                    let piece = ["scaling".into(), w.name().into(), n.to_string(), rounds.to_string(), rep.to_string()];
                    if let Err(x) = in_child(&piece) {
                        println!("PVTCE-BENCH kind=dropped piece=scaling path={} vcpus={n} rep={rep}", w.name());
                        eprintln!("bench: scaling dropped: {x}");
                    }
                }
            }
        }
        if dropped == 3 * reps * rigs {
            return Err("every repetition of every path was void".into());
        }
        Ok(format!(
            "{reps} repetitions of 3 paths x {rigs} rig(s) x 2 windows ({dropped} path runs dropped as void); L1 has {cpus} CPUs"
        ))
    })();
    let unload = load_for(Which::Linux);
    let d = r?;
    unload.map(|_| d)
}
