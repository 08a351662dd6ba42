//! `trace-events`: pvtce's trace events through tracefs. With `events/pvtce/` enabled, a window is created
//! and linked, a known hypercall sequence runs (PUT, INDIRECT of 8, STUFF of 4, GET, a PUT outside the window,
//! and a GET on a LIOBN that is not pvtce's), the group leaves the KVM VFIO device and the window fd closes.
//! The trace must hold exactly the expected events, in order, with their fields (docs/observability.md).

use crate::rig::*;

const TRACING: &str = "/sys/kernel/tracing";

fn write(path: &str, what: &str) -> Result<(), String> {
    std::fs::write(format!("{TRACING}/{path}"), what).map_err(|x| format!("write {what:?} to {TRACING}/{path}: {x}"))
}

pub fn trace_events() -> Result<String, String> {
    if !std::path::Path::new(&format!("{TRACING}/events")).exists() {
        sh(&format!("mount -t tracefs nodev {TRACING}"))?;
    }
    with_pvtce(|| {
        write("events/enable", "0")?;
        write("trace", "")?;
        write("events/pvtce/enable", "1")?;
        write("tracing_on", "1")?;
        let r = sequence();
        let off = write("events/pvtce/enable", "0");
        let (want, detail) = r?;
        off?;
        let text = std::fs::read_to_string(format!("{TRACING}/trace")).map_err(e("read trace"))?;
        // "<task>-<pid> [cpu] <flags> <time>: pvtce_<event>: <fields>"
        let got: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.find(": pvtce_").map(|i| l[i + 2..].trim().to_string()))
            .collect();
        if got != want {
            return Err(format!("trace holds\n{}\nwanted\n{}", got.join("\n"), want.join("\n")));
        }
        Ok(format!("{} events as expected ({detail})", want.len()))
    })
}

/// Runs the sequence; returns the events it must leave, in order.
fn sequence() -> Result<(Vec<String>, String), String> {
    let mut rig = Rig::new(Windows::Linked { tce_shift: 12, size: 1 << 28 })?;
    rig.pvtce_info()?.ok_or("the window is not pvtce's")?;
    let (win, size) = (rig.window_bus()?, rig.window_size()?);
    let geo = format!("liobn={LIOBN:#x} page_shift=12 offset={:#x} size={}", win >> 12, size >> 12);
    rig.write_list(&(0..8u64).map(|i| (0x40_0000 + (i << 12)) | TCE_R | TCE_W).collect::<Vec<_>>())?;
    let ind = win + (16 << 12);
    let calls = [
        call(H_PUT_TCE, [LIOBN, win, 0x50_0000 | TCE_R, 0]),
        call(H_PUT_TCE_INDIRECT, [LIOBN, ind, LIST_GPA, 8]),
        call(H_STUFF_TCE, [LIOBN, ind, 0, 4]),
        call(H_GET_TCE, [LIOBN, win, 0, 0]),
        call(H_PUT_TCE, [LIOBN, win + size, 0x50_0000 | TCE_R, 0]),
        // Not pvtce's: no event (it exits to the VMM).
        call(H_GET_TCE, [LIOBN + 1, 0, 0, 0]),
    ];
    let (r, _) = rig.run(&calls)?;
    let codes: Vec<i64> = r.iter().map(|x| x.r3).collect();
    if codes != [H_SUCCESS, H_SUCCESS, H_SUCCESS, H_SUCCESS, H_PARAMETER, EXITED] {
        return Err(format!("the sequence returned {codes:?}"));
    }
    rig.kdev.del_group(rig.group.fd()).map_err(e("KVM_DEV_VFIO_FILE_DEL"))?;
    drop(rig.window.take());
    let hcall = |op: u64, ioba: u64, n: u64, ret: i64, changed: u64| {
        format!("pvtce_hcall: op={op:#x} liobn={LIOBN:#x} ioba={ioba:#x} npages={n} ret={ret} changed={changed} host={changed}")
    };
    let want = vec![
        format!("pvtce_window_create: {geo} links=0"),
        format!("pvtce_window_link: {geo} links=1"),
        hcall(H_PUT_TCE, win, 1, 0, 1),
        hcall(H_PUT_TCE_INDIRECT, ind, 8, 0, 8),
        hcall(H_STUFF_TCE, ind, 4, 0, 4),
        hcall(H_GET_TCE, win, 1, 0, 0),
        hcall(H_PUT_TCE, win + size, 1, H_PARAMETER, 0),
        format!("pvtce_window_unlink: {geo} links=0"),
        format!("pvtce_window_release: {geo} links=0"),
    ];
    Ok((want, format!("window at {win:#x}, {} entries", size >> 12)))
}
