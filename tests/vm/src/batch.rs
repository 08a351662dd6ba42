//! A parent failure inside a batched host-table update (patches/linux/0008 on the nested pseries L1: one
//! parent H_PUT_TCE_INDIRECT per 512 entries). pvtce.ko is loaded with `inject_run_failure=8`: a batch of 8
//! or more host entries that maps something writes half of its entries and then fails, as a refusing parent
//! would. The guest's H_PUT_TCE_INDIRECT must then be answered H_TOO_HARD (it exits to the VMM), the range
//! must be empty in the hardware table and in the guest's, an entry outside it must stay, and no use of the
//! preregistered memory may be left: once the entry outside is cleared too, unregistering the memory must
//! succeed and release its pins (a region that an entry still counts is never released: with
//! patches/linux/0007 VFIO answers EBUSY then; without it, 0 with the region kept, so the pins are checked too).

use crate::rig::*;

pub fn batch_fault() -> Result<String, String> {
    sh("modprobe pvtce inject_run_failure=8")?;
    let result = (|| {
        let rig = Rig::new(Windows::Linked { tce_shift: 16, size: 1 << 28 })?;
        run(&rig).map_err(|err| format!("{err} (exits {:x?})", rig.exit_log()))
    })();
    let unload = sh("rmmod pvtce");
    let detail = result?;
    unload.map_err(|err| format!("rmmod after the windows closed: {err}"))?;
    Ok(detail)
}

fn run(rig: &Rig) -> Result<String, String> {
    let ps = 1u64 << 16;
    let win = rig.window_bus()?;
    let rw = TCE_R | TCE_W;
    let (a, c) = (0x20_0000u64, 0x30_0000u64);
    // Entry 9 lies inside the batch's range (8..16), entry 40 outside: single PUTs (batches of 1) succeed.
    let list: Vec<u64> = (0..8).map(|i| (0x40_0000 + i * ps) | rw).collect();
    rig.write_list(&list)?;
    let mut calls = vec![
        call(H_PUT_TCE, [LIOBN, win + 9 * ps, a | rw, 0]),
        call(H_PUT_TCE, [LIOBN, win + 40 * ps, c | rw, 0]),
        call(H_PUT_TCE_INDIRECT, [LIOBN, win + 8 * ps, LIST_GPA, 8]),
    ];
    calls.extend((8..16).map(|e| call(H_GET_TCE, [LIOBN, win + e * ps, 0, 0])));
    calls.push(call(H_GET_TCE, [LIOBN, win + 40 * ps, 0, 0]));
    let (rets, _) = rig.run(&calls)?;
    if rets[0].r3 != H_SUCCESS || rets[1].r3 != H_SUCCESS {
        return Err(format!("single H_PUT_TCEs returned {} and {}, expected 0", rets[0].r3, rets[1].r3));
    }
    // H_TOO_HARD leaves the kernel: the rig answers it with EXITED.
    if rets[2].r3 != EXITED || rig.exit_log().last().map(|x| x.0) != Some(H_PUT_TCE_INDIRECT) {
        return Err(format!("the failing INDIRECT returned {:#x}, expected an exit (H_TOO_HARD)", rets[2].r3));
    }
    let guest: Vec<u64> = rets[3..11].iter().map(|r| r.r4).collect();
    if guest.iter().any(|&t| t != 0) || rets[11].r4 != c | rw {
        return Err(format!("guest entries 8..16 after the failure {guest:x?}, entry 40 {:#x}", rets[11].r4));
    }
    let host_first = win >> 16;
    let host = rig.host_read_any(host_first + 8, 8)?;
    let outside = rig.host_read_any(host_first + 40, 1)?;
    if host.iter().any(|&t| t != 0) || outside.first().is_none_or(|&t| t == 0) {
        return Err(format!("hardware entries 8..16 after the failure {host:x?}, entry 40 {outside:x?}"));
    }
    let info = rig.pvtce_info()?.ok_or("window info vanished")?;
    if info.declined != 1 {
        return Err(format!("pvtce counts {} declined calls, expected 1", info.declined));
    }
    // Clear the entry outside too; then nothing may count a use of the memory.
    let (rets, _) = rig.run(&[call(H_STUFF_TCE, [LIOBN, win + 40 * ps, 0, 1])])?;
    if rets[0].r3 != H_SUCCESS {
        return Err(format!("H_STUFF_TCE of entry 40 returned {}", rets[0].r3));
    }
    let want = (RAM as i64 >> 16) / 2;
    let released = rig.unregister_ram_releasing(want)?;
    if released < want {
        return Err(format!(
            "unregistering the {} pages of guest RAM released {released} pins in 10 s (a use left on the region keeps all of them)",
            RAM >> 16
        ));
    }
    Ok(format!(
        "the INDIRECT whose batch failed half-way exited (H_TOO_HARD); entries 8..16 empty in the guest's and the hardware table, entry 40 kept until cleared; unregistering RAM then released {released} of its {} pages' pins",
        RAM >> 16
    ))
}
