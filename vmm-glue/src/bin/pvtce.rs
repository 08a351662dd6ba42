//! `pvtce`: what the host has for PAPR TCE passthrough, in plain tables.
//!
//! - `pvtce groups`: IOMMU groups and their devices (sysfs): address, vendor:device, driver.
//! - `pvtce windows`: the windows pvtce.ko holds, with their statistics (PVTCE_LIST_WINDOWS on /dev/pvtce);
//!   "pvtce not loaded" when /dev/pvtce is absent.
//! - `pvtce` alone prints both.

use pvtce_vmm_glue::pvtce;
use std::error::Error as _;
use std::process::ExitCode;

fn read_trim(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_else(|_| "-".into())
}

fn groups() -> Result<(), String> {
    let dir = "/sys/kernel/iommu_groups";
    let mut ids: Vec<u32> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect(),
        Err(e) => return Err(format!("{dir}: {e}")),
    };
    ids.sort_unstable();
    println!("{:<6} {:<14} {:<10} {:<10} DRIVER", "GROUP", "DEVICE", "VENDOR", "DEVICE-ID");
    for id in &ids {
        let devs = format!("{dir}/{id}/devices");
        let mut names: Vec<String> = std::fs::read_dir(&devs)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        for n in names {
            let p = std::path::Path::new(&devs).join(&n);
            let driver = std::fs::read_link(p.join("driver"))
                .ok()
                .and_then(|l| l.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<6} {:<14} {:<10} {:<10} {}",
                id,
                n,
                read_trim(&p.join("vendor")),
                read_trim(&p.join("device")),
                driver
            );
        }
    }
    println!("{} group(s)", ids.len());
    Ok(())
}

fn windows() -> Result<(), String> {
    let Some(ctl) =
        pvtce::Control::open().map_err(|e| format!("{e}: {}", e.source().map_or(String::new(), |s| s.to_string())))?
    else {
        if std::path::Path::new("/sys/module/pvtce").exists() {
            // A module without its control device (an older pvtce.ko).
            println!("pvtce loaded, but it has no {}: no window list", pvtce::PATH);
        } else {
            println!("pvtce not loaded");
        }
        return Ok(());
    };
    let entries = ctl.windows().map_err(|e| format!("{e}: {}", e.source().map_or(String::new(), |s| s.to_string())))?;
    let count = entries.len();
    println!(
        "{:<12} {:>5} {:<20} {:>10} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10}",
        "LIOBN", "SHIFT", "BUS", "PAGES", "LINKS", "PUT", "INDIRECT", "STUFF", "GET", "DECLINED", "REJECTED", "TABLE-B"
    );
    for w in &entries {
        println!(
            "{:<#12x} {:>5} {:<#20x} {:>10} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10}",
            w.liobn,
            w.page_shift,
            w.offset.checked_shl(w.page_shift).unwrap_or(0),
            w.size,
            w.links,
            w.h_put_tce,
            w.h_put_tce_indirect,
            w.h_stuff_tce,
            w.h_get_tce,
            w.declined,
            w.rejected,
            w.table_bytes
        );
    }
    println!("{count} window(s)");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        None => groups().and_then(|_| windows()),
        Some("groups") => groups(),
        Some("windows") => windows(),
        Some(other) => Err(format!("unknown command {other}; usage: pvtce [groups|windows]")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pvtce: {e}");
            ExitCode::FAILURE
        }
    }
}
