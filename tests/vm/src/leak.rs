//! `indirect-leak` (run when named): Linux 7.3's H_PUT_TCE_INDIRECT "maps" entries without R or W (0, or
//! poison bits) as permissionless hardware entries and keeps a use of the preregistered region it never
//! gives back (docs/conformance.md, intended difference 1). Patch 0010 makes it clear them, as H_PUT_TCE
//! does; it is in `series.production` only, so that the comparison runs keep Linux's behaviour.
//!
//! A child VMM on Linux's path (and then on pvtce's, the control) maps two entries, overwrites them with an
//! INDIRECT list of [0, poison], reads the hardware entries, clears, and exits. Expected: H_SUCCESS, both
//! hardware entries clear, and after the child the page pins back at their baseline. Without patch 0010 the
//! builtin run fails: the hardware entries hold a permissionless address, the region keeps a use, its pages
//! stay pinned, and VFIO and `destroy_context` WARN when the child exits (docs/machine.md).

use crate::rig::*;
use pvtce_vmm_glue::pvtce::Mode;
use std::process::Command;

const POISON: u64 = 0xf0;

/// `pvtce-vmtests __leak-child`: the VMM side, in whatever mode the parent set.
pub fn child() -> Result<(), String> {
    let rig = Rig::new(Windows::Linked { tce_shift: 12, size: 1 << 28 })?;
    let win = rig.window_bus()?;
    rig.write_list(&[0x40_0000 | TCE_R | TCE_W, 0x41_0000 | TCE_R | TCE_W])?;
    let (r, _) = rig.run(&[call(H_PUT_TCE_INDIRECT, [LIOBN, win, LIST_GPA, 2])])?;
    rig.write_list(&[0, POISON])?;
    let (r2, _) = rig.run(&[call(H_PUT_TCE_INDIRECT, [LIOBN, win, LIST_GPA, 2])])?;
    let host = rig.host_read_any(win >> 12, 2)?;
    let (r3, _) = rig.run(&[call(H_STUFF_TCE, [LIOBN, win, 0, 2])])?;
    if (r[0].r3, r2[0].r3, r3[0].r3) != (H_SUCCESS, H_SUCCESS, H_SUCCESS) || host != [0, 0] {
        return Err(format!(
            "map {}, INDIRECT [0, poison] {} leaving hardware entries {host:x?}, clear {}; expected 0, 0, [0, 0], 0",
            r[0].r3, r2[0].r3, r3[0].r3
        ));
    }
    Ok(())
}

fn one(mode: Mode, baseline: i64) -> Result<String, String> {
    set_mode(mode)?;
    let out = Command::new("/proc/self/exe").arg("__leak-child").output().map_err(e("run the child VMM"))?;
    let what = if mode == Mode::Pvtce { "pvtce" } else { "builtin" };
    if !out.status.success() {
        return Err(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let t = std::time::Instant::now();
    let mut pins = pins_outstanding()?;
    while pins != baseline && t.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        pins = pins_outstanding()?;
    }
    if pins != baseline {
        return Err(format!("{what}: {} pages still pinned 10 s after the VMM exited", pins - baseline));
    }
    Ok(format!("{what}: INDIRECT [0, poison] cleared both hardware entries, pins at baseline"))
}

pub fn indirect_leak() -> Result<String, String> {
    sh("modprobe pvtce")?;
    let r = (|| -> Result<String, String> {
        let baseline = settled_pins()?;
        Ok(format!("{}; {}", one(Mode::Builtin, baseline)?, one(Mode::Pvtce, baseline)?))
    })();
    let _ = set_mode(Mode::Pvtce);
    let unload = sh("rmmod pvtce");
    let detail = r?;
    unload.map_err(|err| format!("rmmod: {err}"))?;
    Ok(detail)
}
