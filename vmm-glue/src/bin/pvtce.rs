//! `pvtce`: what the host has for PAPR TCE passthrough (docs/vmm-glue.md, "CLI", has the formats).
//!
//! - `pvtce groups`: IOMMU groups and their devices (sysfs): address, vendor:device, driver.
//! - `pvtce windows [--json]`: the windows pvtce.ko holds, with their statistics (PVTCE_LIST_WINDOWS on
//!   /dev/pvtce); "pvtce not loaded" when /dev/pvtce is absent.
//! - `pvtce top [--interval SECS] [--count N]`: hypercall rates per window, refreshed every interval.
//! - `pvtce` alone prints groups and windows.

use pvtce_uapi::pvtce_window_info;
use pvtce_vmm_glue::pvtce;
use serde::Serialize;
use std::error::Error as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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

/// One window as `pvtce windows` shows it: the table's columns in order, and the JSON's keys (stable: new
/// fields only ever go at the end; docs/vmm-glue.md).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
struct Row {
    liobn: u64,
    page_shift: u32,
    bus: u64,
    pages: u64,
    links: u32,
    h_put_tce: u64,
    h_put_tce_indirect: u64,
    h_stuff_tce: u64,
    h_get_tce: u64,
    declined: u64,
    rejected: u64,
    tces_changed: u64,
    host_updates: u64,
    host_kills: u64,
    table_bytes: u64,
    early: u64,
}

impl From<&pvtce_window_info> for Row {
    fn from(w: &pvtce_window_info) -> Row {
        Row {
            liobn: w.liobn,
            page_shift: w.page_shift,
            bus: w.offset.checked_shl(w.page_shift).unwrap_or(0),
            pages: w.size,
            links: w.links,
            h_put_tce: w.h_put_tce,
            h_put_tce_indirect: w.h_put_tce_indirect,
            h_stuff_tce: w.h_stuff_tce,
            h_get_tce: w.h_get_tce,
            declined: w.declined,
            rejected: w.rejected,
            tces_changed: w.tces_changed,
            host_updates: w.host_updates,
            host_kills: w.host_kills,
            table_bytes: w.table_bytes,
            early: w.early,
        }
    }
}

const HEADER: [&str; 15] = [
    "LIOBN", "SHIFT", "BUS", "PAGES", "LINKS", "PUT", "INDIRECT", "STUFF", "GET", "DECLINED", "REJECTED", "TCES",
    "HOST-UPD", "KILLS", "TABLE-B",
];

/// `pvtce windows`: a header, one line per window, and "N window(s)".
fn table(rows: &[Row]) -> String {
    let line = |c: [String; 15]| {
        format!(
            "{:<12} {:>5} {:<20} {:>10} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10} {:>10} {:>8} {:>10}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12], c[13], c[14]
        )
    };
    let mut out = line(HEADER.map(String::from));
    for r in rows {
        out += &line([
            format!("{:#x}", r.liobn),
            r.page_shift.to_string(),
            format!("{:#x}", r.bus),
            r.pages.to_string(),
            r.links.to_string(),
            r.h_put_tce.to_string(),
            r.h_put_tce_indirect.to_string(),
            r.h_stuff_tce.to_string(),
            r.h_get_tce.to_string(),
            r.declined.to_string(),
            r.rejected.to_string(),
            r.tces_changed.to_string(),
            r.host_updates.to_string(),
            r.host_kills.to_string(),
            r.table_bytes.to_string(),
        ]);
    }
    out + &format!("{} window(s)\n", rows.len())
}

/// `pvtce windows --json`: `{"format": 1, "windows": [Row...]}`.
fn json(rows: &[Row]) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        format: u32,
        windows: &'a [Row],
    }
    serde_json::to_string_pretty(&Doc { format: 1, windows: rows }).unwrap_or_default() + "\n"
}

/// Per-second rates of one window between two samples: PUT, INDIRECT, STUFF, GET, entries changed, host
/// updates, declined.
#[derive(Debug, Clone, PartialEq)]
struct Rate {
    liobn: u64,
    bus: u64,
    per_s: [f64; 7],
}

fn counters(r: &Row) -> [u64; 7] {
    [r.h_put_tce, r.h_put_tce_indirect, r.h_stuff_tce, r.h_get_tce, r.tces_changed, r.host_updates, r.declined]
}

/// Rates from `prev` to `cur`, `secs` apart, busiest first. A window is the same one in both samples if its
/// LIOBN, bus address, page size and size match (two VMs may use one LIOBN; then their windows usually differ in
/// bus or size; if they do not, their rows are matched in list order). A window new in `cur` counts from 0; a
/// counter that went backwards (a new window reusing the identity) counts from 0 too.
fn rates(prev: &[Row], cur: &[Row], secs: f64) -> Vec<Rate> {
    let key = |r: &Row| (r.liobn, r.bus, r.page_shift, r.pages);
    let mut used = vec![false; prev.len()];
    let mut out: Vec<Rate> = cur
        .iter()
        .map(|c| {
            let p = prev.iter().enumerate().position(|(i, p)| !used[i] && key(p) == key(c));
            let before = p.map_or([0; 7], |i| {
                used[i] = true;
                counters(&prev[i])
            });
            let now = counters(c);
            let mut per_s = [0.0; 7];
            for k in 0..7 {
                let d = if now[k] >= before[k] { now[k] - before[k] } else { now[k] };
                per_s[k] = if secs > 0.0 { d as f64 / secs } else { 0.0 };
            }
            Rate { liobn: c.liobn, bus: c.bus, per_s }
        })
        .collect();
    out.sort_by(|a, b| {
        let total = |r: &Rate| r.per_s[..4].iter().sum::<f64>();
        total(b).total_cmp(&total(a))
    });
    out
}

fn top_screen(rates: &[Rate], interval: f64, sample: u64) -> String {
    let mut out = format!("pvtce top: sample {sample}, per second over {interval:.1} s\n");
    out += &format!(
        "{:<12} {:<20} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8}\n",
        "LIOBN", "BUS", "PUT/s", "IND/s", "STUFF/s", "GET/s", "TCES/s", "HOST-UPD/s", "DECL/s"
    );
    for r in rates {
        let v = r.per_s;
        out += &format!(
            "{:<#12x} {:<#20x} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>10.1} {:>8.1}\n",
            r.liobn, r.bus, v[0], v[1], v[2], v[3], v[4], v[5], v[6]
        );
    }
    out + &format!("{} window(s)\n", rates.len())
}

fn errs(e: pvtce_vmm_glue::Error) -> String {
    format!("{e}: {}", e.source().map_or(String::new(), |s| s.to_string()))
}

/// The window list, or `None` (after saying why) when pvtce.ko or its control device is absent.
fn sample() -> Result<Option<Vec<Row>>, String> {
    let Some(ctl) = pvtce::Control::open().map_err(errs)? else {
        if std::path::Path::new("/sys/module/pvtce").exists() {
            // A module without its control device (an older pvtce.ko).
            println!("pvtce loaded, but it has no {}: no window list", pvtce::PATH);
        } else {
            println!("pvtce not loaded");
        }
        return Ok(None);
    };
    Ok(Some(ctl.windows().map_err(errs)?.iter().map(Row::from).collect()))
}

fn windows(as_json: bool) -> Result<(), String> {
    if let Some(rows) = sample()? {
        print!("{}", if as_json { json(&rows) } else { table(&rows) });
    }
    Ok(())
}

fn top(interval: f64, count: Option<u64>) -> Result<(), String> {
    let Some(mut prev) = sample()? else { return Ok(()) };
    let mut t = Instant::now();
    // SAFETY: isatty only reads the descriptor number.
    let clear = unsafe { libc::isatty(1) } == 1;
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        std::thread::sleep(Duration::from_secs_f64(interval));
        let Some(cur) = sample()? else { return Ok(()) };
        let secs = t.elapsed().as_secs_f64();
        t = Instant::now();
        n += 1;
        print!("{}{}", if clear { "\x1b[H\x1b[2J" } else { "" }, top_screen(&rates(&prev, &cur, secs), secs, n));
        prev = cur;
    }
    Ok(())
}

/// `--interval SECS` (default 1, at least 0.1) and `--count N` (default: until interrupted).
fn top_args(args: &[String]) -> Result<(f64, Option<u64>), String> {
    let (mut interval, mut count) = (1.0, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--interval" => {
                interval = v.parse::<f64>().ok().filter(|s| *s >= 0.1 && s.is_finite()).ok_or("bad --interval")?
            }
            "--count" => count = Some(v.parse().map_err(|_| "bad --count")?),
            _ => return Err(format!("unknown option {a}")),
        }
    }
    Ok((interval, count))
}

const USAGE: &str = "usage: pvtce [groups | windows [--json] | top [--interval SECS] [--count N]]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let r = match (args.first().map(String::as_str), rest) {
        (None, _) => groups().and_then(|_| windows(false)),
        (Some("groups"), []) => groups(),
        (Some("windows"), []) => windows(false),
        (Some("windows"), [j]) if j == "--json" => windows(true),
        (Some("top"), rest) => top_args(rest).and_then(|(i, c)| top(i, c)),
        (Some(other), _) => Err(format!("unknown command {other} {}; {USAGE}", rest.join(" "))),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pvtce: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(liobn: u64, bus: u64, put: u64, get: u64) -> Row {
        Row {
            liobn,
            page_shift: 12,
            bus,
            pages: 1 << 18,
            links: 1,
            h_put_tce: put,
            h_put_tce_indirect: 2,
            h_stuff_tce: 3,
            h_get_tce: get,
            declined: 0,
            rejected: 1,
            tces_changed: put + 10,
            host_updates: put + 10,
            host_kills: 4,
            table_bytes: 8192,
            early: 7,
        }
    }

    #[test]
    fn the_table_has_a_header_a_line_per_window_and_a_count() {
        let t = table(&[row(0x8000_0000, 0, 5, 6)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), HEADER);
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["0x80000000", "12", "0x0", "262144", "1", "5", "2", "3", "6", "0", "1", "15", "15", "4", "8192"]
        );
        assert_eq!(lines[2], "1 window(s)");
    }

    #[test]
    fn json_keys_are_the_documented_ones() {
        let j: serde_json::Value = serde_json::from_str(&json(&[row(0x8000_0000, 0, 5, 6)])).unwrap();
        assert_eq!(j["format"], 1);
        let w = j["windows"][0].as_object().unwrap();
        let keys: Vec<&str> = w.keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        let mut want = vec![
            "liobn",
            "page_shift",
            "bus",
            "pages",
            "links",
            "h_put_tce",
            "h_put_tce_indirect",
            "h_stuff_tce",
            "h_get_tce",
            "declined",
            "rejected",
            "tces_changed",
            "host_updates",
            "host_kills",
            "table_bytes",
            "early",
        ];
        want.sort_unstable();
        assert_eq!(sorted, want);
        assert_eq!(w["liobn"], 0x8000_0000u64);
        assert_eq!(w["h_get_tce"], 6);
    }

    #[test]
    fn rates_are_deltas_per_second_busiest_first() {
        let prev = [row(1, 0, 10, 0), row(2, 0, 0, 0)];
        let cur = [row(1, 0, 30, 0), row(2, 0, 100, 50), row(3, 0, 4, 0)];
        let r = rates(&prev, &cur, 2.0);
        assert_eq!(r.iter().map(|r| r.liobn).collect::<Vec<_>>(), [2, 1, 3]);
        assert_eq!(r[0].per_s[0], 50.0);
        assert_eq!(r[0].per_s[3], 25.0);
        assert_eq!(r[1].per_s[0], 10.0);
        // New window: from 0 (4 PUTs, 2 INDIRECT in the row's fixed counters).
        assert_eq!(r[2].per_s[0], 2.0);
        assert_eq!(r[2].per_s[1], 1.0);
        // Unchanged fixed counters of known windows: 0.
        assert_eq!(r[1].per_s[1], 0.0);
    }

    #[test]
    fn a_counter_that_went_backwards_counts_from_zero() {
        let r = rates(&[row(1, 0, 100, 0)], &[row(1, 0, 6, 0)], 1.0);
        assert_eq!(r[0].per_s[0], 6.0);
    }

    #[test]
    fn same_identity_windows_match_in_list_order() {
        let r = rates(&[row(1, 0, 10, 0), row(1, 0, 20, 0)], &[row(1, 0, 11, 0), row(1, 0, 25, 0)], 1.0);
        let mut puts: Vec<f64> = r.iter().map(|r| r.per_s[0]).collect();
        puts.sort_by(f64::total_cmp);
        assert_eq!(puts, [1.0, 5.0]);
    }

    #[test]
    fn top_args_take_interval_and_count_and_refuse_nonsense() {
        assert_eq!(top_args(&[]), Ok((1.0, None)));
        let a: Vec<String> = ["--interval", "0.5", "--count", "3"].map(String::from).to_vec();
        assert_eq!(top_args(&a), Ok((0.5, Some(3))));
        for bad in [&["--interval", "0"][..], &["--interval", "x"], &["--count", "-1"], &["--bogus", "1"], &["--count"]]
        {
            let a: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(top_args(&a).is_err(), "{bad:?}");
        }
    }
}
