//! The `pvtce` CLI in the L1: groups from sysfs (edu's group with its driver), and windows: "pvtce not
//! loaded" without the module, a table with it; with a window that ran a known hypercall sequence, the exact
//! counts in `windows --json` and the same row in the table; `top` shows the GET rate of a window the guest
//! keeps busy.

use crate::rig::*;
use std::process::{Command, Stdio};

fn pvtce(arg: &str) -> Result<(bool, String), String> {
    let o = Command::new("/bin/pvtce")
        .args(arg.split_whitespace())
        .output()
        .map_err(|x| format!("/bin/pvtce {arg}: {x}"))?;
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    Ok((o.status.success(), out))
}

fn sh(cmd: &str) -> bool {
    Command::new("/bin/sh").arg("-c").arg(cmd).status().is_ok_and(|s| s.success())
}

pub fn cli() -> Result<String, String> {
    let (ok, out) = pvtce("groups")?;
    let edu = out.lines().find(|l| l.contains("0x1234") && l.contains("0x11e8"));
    if !ok || edu.is_none() || !out.contains("GROUP") {
        return Err(format!("pvtce groups (ok {ok}) does not list edu: {out}"));
    }
    let edu = edu.unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");

    let _ = sh("rmmod pvtce 2>/dev/null");
    let (ok, out) = pvtce("windows")?;
    if !ok || out.trim() != "pvtce not loaded" {
        return Err(format!("pvtce windows without the module (ok {ok}): {out}"));
    }
    if !sh("modprobe pvtce") {
        return Err("modprobe pvtce failed".into());
    }
    let (ok, out) = pvtce("windows")?;
    let loaded = if ok && out.contains("LIOBN") && out.contains("window(s)") {
        out.lines().last().unwrap_or_default().to_string()
    } else {
        let _ = sh("rmmod pvtce");
        return Err(format!("pvtce windows with the module (ok {ok}): {out}"));
    };
    let with_window = Rig::new(Windows::Linked { tce_shift: 12, size: 1 << 28 }).and_then(|rig| window_stats(&rig));
    let _ = sh("rmmod pvtce");
    let with_window = with_window?;
    let (ok, out) = pvtce("bogus")?;
    if ok || !out.contains("usage") {
        return Err(format!("pvtce bogus should fail with usage: {out}"));
    }
    let (ok, out) = pvtce("windows --bogus")?;
    if ok || !out.contains("usage") {
        return Err(format!("pvtce windows --bogus should fail with usage: {out}"));
    }
    Ok(format!(
        "groups: [{edu}]; windows unloaded: 'pvtce not loaded'; loaded: '{loaded}'; {with_window}; bad command: usage"
    ))
}

/// A known sequence on the rig's window (3 PUT, INDIRECT of 8, STUFF clearing 4 of those, 2 GET), then its
/// row in `pvtce windows --json` and in the table, then `pvtce top` while the guest issues GETs.
fn window_stats(rig: &Rig) -> Result<String, String> {
    rig.pvtce_info()?.ok_or("the window is not pvtce's")?;
    let win = rig.window_bus()?;
    rig.write_list(&(0..8u64).map(|i| (0x40_0000 + (i << 12)) | TCE_R | TCE_W).collect::<Vec<_>>())?;
    let mut calls: Vec<_> =
        (0..3u64).map(|i| call(H_PUT_TCE, [LIOBN, win + (i << 12), 0x50_0000 | TCE_R, 0])).collect();
    calls.push(call(H_PUT_TCE_INDIRECT, [LIOBN, win + (16 << 12), LIST_GPA, 8]));
    calls.push(call(H_STUFF_TCE, [LIOBN, win + (16 << 12), 0, 4]));
    calls.extend((0..2u64).map(|i| call(H_GET_TCE, [LIOBN, win + (i << 12), 0, 0])));
    let (r, _) = rig.run(&calls)?;
    if let Some((i, x)) = r.iter().enumerate().find(|(_, x)| x.r3 != H_SUCCESS) {
        return Err(format!("call {i} of the known sequence returned {}", x.r3));
    }
    let (ok, out) = pvtce("windows --json")?;
    let doc: serde_json::Value =
        serde_json::from_str(&out).map_err(|x| format!("pvtce windows --json (ok {ok}): {x}: {out}"))?;
    let ours = doc["windows"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["liobn"] == LIOBN && w["bus"] == win))
        .ok_or_else(|| format!("no window {LIOBN:#x} at {win:#x} in {out}"))?;
    let want = [
        ("page_shift", 12),
        ("links", 1),
        ("h_put_tce", 3),
        ("h_put_tce_indirect", 1),
        ("h_stuff_tce", 1),
        ("h_get_tce", 2),
        ("declined", 0),
        ("rejected", 0),
        ("tces_changed", 15),
        ("host_updates", 15),
    ];
    let wrong: Vec<String> =
        want.iter().filter(|(k, v)| ours[*k] != *v).map(|(k, v)| format!("{k} {} (want {v})", ours[*k])).collect();
    if doc["format"] != 1 || !wrong.is_empty() {
        return Err(format!("pvtce windows --json: format {}, {}", doc["format"], wrong.join(", ")));
    }
    let (_, out) = pvtce("windows")?;
    let row = format!("{LIOBN:#x} 12 {win:#x}");
    let line = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .find(|l| l.starts_with(&row))
        .ok_or_else(|| format!("no row {row} in {out}"))?;
    let cols: Vec<&str> = line.split(' ').collect();
    if cols.get(5..12) != Some(&["3", "1", "1", "2", "0", "0", "15"][..]) {
        return Err(format!("pvtce windows row: {line}"));
    }
    // top: two samples half a second apart while the guest keeps issuing GETs.
    let mut child = Command::new("/bin/pvtce")
        .args(["top", "--interval", "0.5", "--count", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|x| format!("pvtce top: {x}"))?;
    let gets: Vec<_> = (0..64u64).map(|i| call(H_GET_TCE, [LIOBN, win + (i << 12), 0, 0])).collect();
    let mut tables = 0u32;
    while child.try_wait().map_err(|x| format!("pvtce top: {x}"))?.is_none() {
        rig.run(&gets)?;
        tables += 1;
    }
    let out = child.wait_with_output().map_err(|x| format!("pvtce top: {x}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let last = text.rsplit("pvtce top: sample").next().unwrap_or_default();
    let busy = last
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.first() == Some(&format!("{LIOBN:#x}").as_str()) && c.get(1) == Some(&format!("{win:#x}").as_str()))
        .and_then(|c| c.get(5).and_then(|g| g.parse::<f64>().ok()));
    match busy {
        Some(g) if out.status.success() && g > 0.0 && text.matches("pvtce top: sample").count() == 2 => {
            Ok(format!("windows --json/table: exact counts; top: {g:.0} GET/s over {tables} tables"))
        }
        _ => Err(format!("pvtce top (status {}): {text}", out.status)),
    }
}
