//! The `pvtce` CLI in the L1: groups from sysfs (edu's group with its driver), and windows: "pvtce not
//! loaded" without the module, a table (or the ioctl's errno, while pvtce.ko lacks it) with it.

use std::process::Command;

fn pvtce(arg: &str) -> Result<(bool, String), String> {
    let o = Command::new("/bin/pvtce").arg(arg).output().map_err(|x| format!("/bin/pvtce {arg}: {x}"))?;
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
    let _ = sh("rmmod pvtce");
    let loaded = if ok && out.contains("LIOBN") && out.contains("window(s)") {
        out.lines().last().unwrap_or_default().to_string()
    } else if ok && out.contains("pvtce loaded, but it has no /dev/pvtce") {
        out.trim().to_string()
    } else if !ok && out.contains("PVTCE_LIST_WINDOWS") {
        // pvtce.ko does not answer the ioctl yet: the CLI says which call and why.
        out.trim().replace('\n', " / ")
    } else {
        return Err(format!("pvtce windows with the module (ok {ok}): {out}"));
    };
    let (ok, out) = pvtce("bogus")?;
    if ok || !out.contains("usage") {
        return Err(format!("pvtce bogus should fail with usage: {out}"));
    }
    Ok(format!("groups: [{edu}]; windows unloaded: 'pvtce not loaded'; loaded: '{loaded}'; bad command: usage"))
}
