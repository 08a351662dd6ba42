//! linked-16m: a 16M-page guest window linked to a 64K-page host window, as QEMU makes it for a guest that
//! takes 16M pages in its dynamic window (the real guest does: docs/real-client.md). Each 16M TCE is 256
//! host entries; the kernel splits it. The same L2 calls run on Linux's C path (`PVTCE_MODE_BUILTIN`) and on
//! pvtce's, each in a rig of its own, and both must give exactly the expected answers: every hypercall's
//! result, every one of the 256 host entries of each TCE (the host page of each 64K piece and its
//! permissions), edu's DMA through a piece in the middle of a 16M page, and nothing pinned afterwards.
//!
//! The rig's guest RAM is 48 MiB (three 16M pages), of which the first 40 MiB are preregistered: page 0 and
//! page 1 are usable, page 2 is only partly preregistered, and 48 MiB is outside memory.

use crate::rig::*;
use pvtce_vmm_glue::pvtce::Mode;

const P: u64 = 1 << 24;
const SUB: u64 = 1 << 16;
/// 64K host entries per 16M TCE.
const SUBS: u64 = P / SUB;
const RAM_48M: usize = 48 << 20;
const REGISTERED: u64 = 40 << 20;
/// The window: 1 GiB, 64 TCEs of 16M (16384 host entries of 64K).
const SIZE: u64 = 1 << 30;
const TCES: u64 = SIZE / P;
/// The TCEs whose host entries are compared after each table (16 x 256 host entries).
const CHECKED: u64 = 16;

/// What one path did: r3 per call, and r4 for a successful H_GET_TCE (other calls leave a register there), exits
/// per table, and the host entries of the first [`CHECKED`] TCEs after each table as guest physical address
/// | permissions.
#[derive(Debug, PartialEq)]
struct Outcome {
    rets: Vec<(i64, Option<u64>)>,
    exits: Vec<u32>,
    host: Vec<Vec<u64>>,
}

/// The guest's view: guest TCE `i` holds `tce` (0: nothing); the host's entries it must give.
fn expected_host(guest: &[(u64, u64)]) -> Vec<u64> {
    let mut v = vec![0u64; (CHECKED * SUBS) as usize];
    for &(i, tce) in guest {
        let (gpa, perm) = (tce & !3, tce & 3);
        for j in 0..SUBS {
            v[(i * SUBS + j) as usize] = (gpa + j * SUB) | perm;
        }
    }
    v
}

type PathRun = (Outcome, Vec<(i64, u64)>, String);

fn run_path(mode: Mode) -> Result<PathRun, String> {
    set_mode(mode)?;
    let rig = Rig::with(
        Windows::Linked { tce_shift: 24, size: SIZE },
        Setup { host_shift: Some(16), ram: Some(RAM_48M), registered: Some(REGISTERED) },
    )?;
    let r = run_rig(&rig, mode);
    r.map_err(|x| format!("{x} (exits {:x?})", rig.exit_log()))
}

fn run_rig(rig: &Rig, mode: Mode) -> Result<PathRun, String> {
    let w = rig.window_bus()?;
    if rig.window_size()? != SIZE || rig.window()?.page_shift != 24 {
        return Err("the rig's window is not 1 GiB of 16M pages".into());
    }
    let info = rig.pvtce_info()?;
    match (mode, &info) {
        (Mode::Pvtce, None) => return Err("PVTCE_MODE_PVTCE, but the window is Linux's".into()),
        (Mode::Builtin, Some(_)) => return Err("PVTCE_MODE_BUILTIN, but the window is pvtce's".into()),
        _ => {}
    }
    let pages = rig.hpa_pages()?;
    let as_gpa = |t: u64| match t {
        0 => 0,
        t => pages.get(&(t & !(SUB - 1))).map_or(u64::MAX, |gpa| gpa | (t & (SUB - 1))),
    };
    let host = || -> Result<Vec<u64>, String> {
        Ok(rig.host_read_any(w >> 16, (CHECKED * SUBS) as usize)?.iter().map(|&t| as_gpa(t)).collect())
    };
    let t = |i: u64| w + i * P;
    let (rw, r, wo) = (TCE_R | TCE_W, TCE_R, TCE_W);
    let mut out = Outcome { rets: Vec::new(), exits: Vec::new(), host: Vec::new() };
    // Every (r3, r4) as it came back, for comparing the two paths.
    let mut raw = Vec::new();
    // Runs one table and records its exits, its returns (GET's value where it succeeded) and the host entries.
    let run_table = |calls: &[pvtce_test_support::payload::Call],
                     out: &mut Outcome,
                     raw: &mut Vec<(i64, u64)>|
     -> Result<(), String> {
        let e0 = rig.exited();
        let (rets, _) = rig.run(calls)?;
        out.exits.push(rig.exited() - e0);
        out.rets.extend(
            rets.iter().zip(calls).map(|(x, c)| (x.r3, (c.nr == H_GET_TCE && x.r3 == H_SUCCESS).then_some(x.r4))),
        );
        raw.extend(rets.iter().map(|x| (x.r3, x.r4)));
        out.host.push(host()?);
        Ok(())
    };

    // Table 1: maps, reads back, and the calls the kernel gives to the VMM.
    let list1 = [P | rw, wo, P | r];
    rig.write_list(&list1)?;
    let calls1 = [
        call(H_PUT_TCE, [LIOBN, t(0), rw, 0]),
        call(H_PUT_TCE, [LIOBN, t(1), P | r, 0]),
        call(H_GET_TCE, [LIOBN, t(1), 0, 0]),
        call(H_PUT_TCE_INDIRECT, [LIOBN, t(4), LIST_GPA, 3]),
        call(H_GET_TCE, [LIOBN, t(5), 0, 0]),
        call(H_GET_TCE, [LIOBN, t(6), 0, 0]),
        // A TCE address aligned to 64K (the host page) but not to 16M (the window's page).
        call(H_PUT_TCE, [LIOBN, t(8), SUB | rw, 0]),
        // The 16M page at 32M: its first half preregistered, its second not. Not on Linux's path: there
        // the call maps the first 128 pieces and fails on the 129th; kvmppc_clear_tce() then clears the
        // hardware entries but neither drops the 128 references it took on the preregistered region
        // (mm_iommu_mapped_inc) nor its own record of them, so the region can never be unregistered and the
        // process's exit WARNs in destroy_context(). Linux's path gets a page outside memory instead (the
        // same answer, nothing mapped).
        call(H_PUT_TCE, [LIOBN, t(9), (if mode == Mode::Pvtce { 2 * P } else { 3 * P }) | rw, 0]),
        // 48M: outside guest memory.
        call(H_PUT_TCE, [LIOBN, t(10), (3 * P) | rw, 0]),
        call(H_GET_TCE, [LIOBN, t(8), 0, 0]),
        call(H_GET_TCE, [LIOBN, t(9), 0, 0]),
        call(H_GET_TCE, [LIOBN, t(10), 0, 0]),
        call(H_PUT_TCE, [LIOBN, t(TCES), rw, 0]),
        call(H_PUT_TCE, [LIOBN, t(2) + SUB, rw, 0]),
        call(H_GET_TCE, [LIOBN, t(2) + SUB, 0, 0]),
    ];
    run_table(&calls1, &mut out, &mut raw)?;
    // edu through a 64K piece in the middle of the 16M pages at TCE 4 (guest page 1) and TCE 0 (page 0): the
    // piece's own host entry, not the first one's.
    rig.dma_reaches(t(4) + 0x30_0000, P + 0x30_0000, 3)?;
    rig.dma_reaches(t(0) + 0xa5_0000, 0xa5_0000, 7)?;

    // Table 2: an INDIRECT with a misaligned entry (applied 0), clears, and a clear of everything.
    let list2 = [P | rw, 0x1000 | rw, rw];
    rig.write_list(&list2)?;
    let calls2 = [
        call(H_PUT_TCE_INDIRECT, [LIOBN, t(12), LIST_GPA, 3]),
        call(H_GET_TCE, [LIOBN, t(12), 0, 0]),
        call(H_STUFF_TCE, [LIOBN, t(4), 0, 2]),
        call(H_GET_TCE, [LIOBN, t(4), 0, 0]),
        call(H_GET_TCE, [LIOBN, t(6), 0, 0]),
        call(H_PUT_TCE, [LIOBN, t(1), 0, 0]),
        call(H_STUFF_TCE, [LIOBN, t(0), TCE_R, 1]),
    ];
    run_table(&calls2, &mut out, &mut raw)?;
    run_table(&[call(H_STUFF_TCE, [LIOBN, w, 0, TCES])], &mut out, &mut raw)?;
    // After the clear the DMA must fail.
    if rig.dma_copy(t(0) + 0xa5_0000, 0xa5_0000, t(0) + 0xa5_0800, 0xa5_0800, 9)? {
        return Err("edu DMA through the cleared 16M TCE 0 still reached guest page 0".into());
    }
    let stats = match rig.pvtce_info()? {
        None => "Linux's window (PVTCE_WINDOW_INFO: ENOTTY)".to_string(),
        Some(i) => {
            // PUT 7 + 1 + 1, INDIRECT 2, STUFF 3, GET 8 + 3; declined (to the VMM): the three PUTs and the
            // INDIRECT with the misaligned entry; rejected (H_PARAMETER): 2 PUTs, 1 GET, 1 STUFF.
            let got = (i.h_put_tce, i.h_put_tce_indirect, i.h_stuff_tce, i.h_get_tce, i.declined, i.rejected);
            if got != (8, 2, 3, 10, 4, 4) || i.links != 1 || i.page_shift != 24 {
                return Err(format!(
                    "pvtce's counters (put, indirect, stuff, get, declined, rejected) = {got:?}, expected (8, 2, 3, 10, 4, 4); links {} shift {}",
                    i.links, i.page_shift
                ));
            }
            format!(
                "pvtce's window: put {} indirect {} stuff {} get {} declined {} rejected {} changed {} host updates {}",
                i.h_put_tce,
                i.h_put_tce_indirect,
                i.h_stuff_tce,
                i.h_get_tce,
                i.declined,
                i.rejected,
                i.tces_changed,
                i.host_updates
            )
        }
    };
    Ok((out, raw, stats))
}

/// What both paths must give.
fn expected() -> Outcome {
    let (rw, r, wo) = (TCE_R | TCE_W, TCE_R, TCE_W);
    let (ok, get) = ((H_SUCCESS, None), |v: u64| (H_SUCCESS, Some(v)));
    let exited = (EXITED, None);
    let param = (H_PARAMETER, None);
    let rets = vec![
        // table 1
        ok,
        ok,
        get(P | r),
        ok,
        get(wo),
        get(P | r),
        exited,
        exited,
        exited,
        get(0),
        get(0),
        get(0),
        param,
        param,
        param,
        // table 2
        exited,
        get(0),
        ok,
        get(0),
        get(P | r),
        ok,
        param,
        // the clear of all
        ok,
    ];
    let host = vec![
        expected_host(&[(0, rw), (1, P | r), (4, P | rw), (5, wo), (6, P | r)]),
        expected_host(&[(0, rw), (6, P | r)]),
        expected_host(&[]),
    ];
    Outcome { rets, exits: vec![3, 1, 0], host }
}

fn diff(what: &str, got: &Outcome, want: &Outcome) -> Option<String> {
    if got.rets != want.rets {
        return Some(format!("{what}: returns {:x?}, expected {:x?}", got.rets, want.rets));
    }
    if got.exits != want.exits {
        return Some(format!("{what}: exits per table {:?}, expected {:?}", got.exits, want.exits));
    }
    for (k, (g, x)) in got.host.iter().zip(&want.host).enumerate() {
        if let Some(i) = (0..g.len().max(x.len())).find(|&i| g.get(i) != x.get(i)) {
            return Some(format!(
                "{what}: after table {}, host entry {i} (TCE {}, 64K piece {}) is {:x?}, expected {:x?}",
                k + 1,
                i as u64 / SUBS,
                i as u64 % SUBS,
                g.get(i),
                x.get(i)
            ));
        }
    }
    None
}

pub fn linked_16m() -> Result<String, String> {
    sh("modprobe pvtce")?;
    let old = set_mode(Mode::Pvtce)?;
    let r = both();
    let _ = set_mode(old);
    let unload = sh("rmmod pvtce");
    let r = r?;
    unload.map_err(|x| format!("rmmod after the windows closed: {x}"))?;
    Ok(r)
}

fn both() -> Result<String, String> {
    let want = expected();
    let pins0 = settled_pins()?;
    let locked0 = locked_vm_kb()?;
    let mut notes = Vec::new();
    let mut outcomes = Vec::new();
    for (mode, name) in [(Mode::Builtin, "Linux C"), (Mode::Pvtce, "pvtce")] {
        let (got, raw, stats) = run_path(mode)?;
        // The rig is gone: its preregistration and every mapping's pin with it (RCU callbacks unpin the
        // regions a little later).
        let t0 = std::time::Instant::now();
        let (mut pins, mut locked) = (pins_outstanding()?, locked_vm_kb()?);
        while (pins, locked) != (pins0, locked0) && t0.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            (pins, locked) = (pins_outstanding()?, locked_vm_kb()?);
        }
        if pins != pins0 || locked != locked0 {
            return Err(format!(
                "{name}: after the rig closed {} page pin(s) and {} kB locked_vm more than before",
                pins - pins0,
                locked as i64 - locked0 as i64
            ));
        }
        if let Some(d) = diff(name, &got, &want) {
            return Err(d);
        }
        notes.push(format!("{name}: {stats}"));
        outcomes.push((got, raw));
    }
    if outcomes[0] != outcomes[1] {
        return Err(format!("Linux C and pvtce differ: r3/r4 {:x?} vs {:x?}", outcomes[0].1, outcomes[1].1));
    }
    Ok(format!(
        "16M window at 1<<59 linked to a 64K host window ({TCES} TCEs, {} host entries): PUT/INDIRECT/GET/STUFF of 16M entries, all 256 host entries of {CHECKED} TCEs checked after each of 3 tables (hpa of each 64K piece, permissions R/W/RW), edu DMA through the 49th piece of one TCE and the 166th of another, refused after the clear; to the VMM (H_TOO_HARD): TCE address 64K- but not 16M-aligned, 16M page half preregistered (pvtce only: Linux's path leaks the region's references there, see huge.rs), page outside memory, INDIRECT with a misaligned entry (applied 0); H_PARAMETER: ioba past the end, ioba not 16M-aligned (PUT, GET), STUFF with R; Linux C and pvtce identical and as expected; 0 pins and 0 kB locked_vm left after each; {}",
        TCES * SUBS,
        notes.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_host_entries_split_each_tce() {
        let h = expected_host(&[(1, P | 3)]);
        assert_eq!(h.len(), (CHECKED * SUBS) as usize);
        assert_eq!(h[255], 0);
        assert_eq!(h[256], P | 3);
        assert_eq!(h[256 + 255], (P + 255 * SUB) | 3);
        assert_eq!(h[512], 0);
        let want = expected();
        assert_eq!(want.rets.len(), 15 + 7 + 1);
        assert_eq!(diff("x", &want, &want), None);
        let mut bad = expected();
        bad.host[0][300] ^= SUB;
        assert!(diff("x", &bad, &want).unwrap().contains("TCE 1, 64K piece 44"));
    }
}
