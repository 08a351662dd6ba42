//! `cargo xtask bench real`: the real guest's benchmark. One real-guest boot (Debian's QEMU in L1, Debian's
//! kernel as L2, L0's NVMe passed through: docs/real-client.md) runs the in-VM `real-bench` probe, which
//! repeats the six scenarios (three TCE paths, two guest DMA modes) interleaved and prints one
//! `PVTCE-BENCH kind=real-guest` line per run. This file turns them into the "Real guest" section of
//! docs/bench/results.md (kept in docs/bench/real-guest.md, so that `cargo xtask bench` keeps it) and
//! docs/bench/real-guest.svg. Ratios are taken per repetition between runs of the same boot.

use crate::bench::{parse_line, Stat};
use crate::util::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;

type Line = BTreeMap<String, String>;

const PATHS: [(&str, &str); 3] = [("pvtce", "pvtce"), ("linux", "Linux C"), ("userspace", "userspace")];
const MODES: [(&str, &str); 2] = [("ddw", "DDW (default)"), ("noddw", "disable_ddw")];
/// The MB/s columns: key in the line, heading.
const RATES: [(&str, &str); 6] = [
    ("w4k", "4K write"),
    ("r4k", "4K read"),
    ("w64k", "64K write"),
    ("r64k", "64K read"),
    ("w1m", "1M write"),
    ("r1m", "1M read"),
];
/// Where the section lives between runs of `cargo xtask bench` (which rewrites results.md).
const SECTION: &str = "docs/bench/real-guest.md";

fn num(l: &Line, k: &str) -> Option<f64> {
    l.get(k)?.parse().ok()
}

/// The runs of one path and mode, by repetition.
fn series(lines: &[Line], path: &str, mode: &str, f: impl Fn(&Line) -> Option<f64>) -> BTreeMap<u64, f64> {
    lines
        .iter()
        .filter(|l| l.get("path").map(String::as_str) == Some(path) && l.get("mode").map(String::as_str) == Some(mode))
        .filter_map(|l| Some((num(l, "rep")? as u64, f(l)?)))
        .collect()
}

fn per_mb(l: &Line) -> Option<f64> {
    Some(num(l, "hcalls")? / num(l, "mb")?)
}

/// a[rep] / b[rep] over the repetitions both have.
fn ratios(a: &BTreeMap<u64, f64>, b: &BTreeMap<u64, f64>) -> Vec<f64> {
    a.iter().filter_map(|(r, x)| Some(x / b.get(r)?)).collect()
}

fn show(s: Option<Stat>, p: usize) -> String {
    s.map_or("-".into(), |s| format!("{:.p$} [{:.p$}-{:.p$}]", s.median, s.min, s.max))
}

fn stat(m: &BTreeMap<u64, f64>) -> Option<Stat> {
    Stat::of(&m.values().copied().collect::<Vec<_>>())
}

/// The markdown section.
fn markdown(lines: &[Line], reps: usize, head: &str) -> String {
    let runs: Vec<f64> = lines.iter().filter_map(|l| num(l, "run")).collect();
    let run = Stat::of(&runs);
    let mut s = String::from("## Real guest: Debian's QEMU and kernel, an NVMe passed through\n\n");
    let _ = writeln!(
        s,
        "`cargo xtask bench real`: one L1 boot, {reps} repetition(s) of the six scenarios, interleaved (each \
         repetition runs every path and mode once); {} runs, {} s per run (median [min-max]). {head}\n\n\
         L2 (Debian 6.1, 1 vCPU, 512 MiB) writes a pattern with O_DIRECT and reads it back (1 MiB per pass, \
         verified); MB/s are TCG-emulated, only their ratios mean something. \"L2 boot\" is QEMU's start to L2's \
         /init; \"DDW map\" the H_PUT_TCE_INDIRECT calls L2 makes while nvme probes, entry to exit in L2's \
         trace (in DDW mode: all of its RAM mapped into the dynamic window; with disable_ddw: the probe's own \
         mappings); \"TCE hcalls/MB\" L2's H_PUT_TCE + INDIRECT + STUFF + GET during the passes, per MB moved, as its hcall_entry tracepoint saw them. \
         Cells: median [min-max] over the repetitions.\n",
        lines.len(),
        show(run, 0)
    );
    let _ = write!(s, "| mode | path |");
    for (_, h) in RATES {
        let _ = write!(s, " {h} MB/s |");
    }
    let _ = writeln!(s, " L2 boot s | DDW map ms | TCE hcalls/MB |");
    let _ = writeln!(s, "|{}", " --- |".repeat(RATES.len() + 5));
    for (m, mh) in MODES {
        for (p, ph) in PATHS {
            let _ = write!(s, "| {mh} | {ph} |");
            for (k, _) in RATES {
                let _ = write!(s, " {} |", show(stat(&series(lines, p, m, |l| num(l, k))), 1));
            }
            let map = stat(&series(lines, p, m, |l| Some(num(l, "map_us")? / 1e3)));
            let _ = writeln!(
                s,
                " {} | {} | {} |",
                show(stat(&series(lines, p, m, |l| num(l, "boot"))), 1),
                show(map, 1),
                show(stat(&series(lines, p, m, per_mb)), 1)
            );
        }
    }
    let _ = writeln!(
        s,
        "\nRatios per repetition (median [min-max]). For MB/s, userspace / pvtce below 1 and pvtce / Linux C above \
         1 mean pvtce is faster; for times it is the other way round.\n"
    );
    let _ = writeln!(s, "| mode | measure | userspace / pvtce | pvtce / Linux C |");
    let _ = writeln!(s, "| --- | --- | --- | --- |");
    let mut measures: Vec<(String, &str)> = RATES.iter().map(|&(k, h)| (format!("{h} MB/s"), k)).collect();
    measures.extend([("L2 boot".to_string(), "boot"), ("DDW map".to_string(), "map_us")]);
    for (m, mh) in MODES {
        for (name, k) in &measures {
            let [pv, li, us] = ["pvtce", "linux", "userspace"].map(|p| series(lines, p, m, |l| num(l, k)));
            let _ = writeln!(
                s,
                "| {mh} | {name} | {} | {} |",
                show(Stat::of(&ratios(&us, &pv)), 2),
                show(Stat::of(&ratios(&pv, &li)), 2)
            );
        }
    }
    s
}

/// Bars of MB/s per path, grouped by mode and pass (linear scale, whisker = min-max), in the style of
/// bench.svg.
fn svg(lines: &[Line]) -> String {
    let colors =
        [("userspace", "#d62728", "userspace"), ("linux", "#1f77b4", "Linux C"), ("pvtce", "#2ca02c", "pvtce")];
    let groups: Vec<(&str, &str, String)> =
        MODES.iter().flat_map(|&(m, mh)| RATES.iter().map(move |&(k, h)| (m, k, format!("{h}|{mh}")))).collect();
    let stats: BTreeMap<(&str, &str, &str), Stat> = groups
        .iter()
        .flat_map(|&(m, k, _)| colors.iter().map(move |&(p, _, _)| (m, k, p)))
        .filter_map(|(m, k, p)| Some(((m, k, p), stat(&series(lines, p, m, |l| num(l, k)))?)))
        .collect();
    let top_v = stats.values().map(|s| s.max).fold(1.0, f64::max);
    let (w, h, left, top, bottom) = (1100.0, 420.0, 60.0, 40.0, 90.0);
    let plot_h = h - top - bottom;
    let y = |v: f64| top + plot_h * (1.0 - v / top_v);
    let mut s = String::new();
    let _ = writeln!(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">");
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(s, "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">Real guest: emulated MB/s per pass (median, whisker = min-max; TCG, ratios are the result)</text>", w / 2.0);
    let step = 10f64.powf(top_v.log10().floor());
    let mut t = 0.0;
    while t <= top_v {
        let yy = y(t);
        let _ = writeln!(s, "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{t}</text>", w - 10.0, left - 5.0, yy + 4.0);
        t += step;
    }
    let gw = (w - left - 10.0) / groups.len() as f64;
    let bw = gw / 4.0;
    for (gi, (m, k, label)) in groups.iter().enumerate() {
        let gx = left + gi as f64 * gw;
        for (pi, (p, col, name)) in colors.iter().enumerate() {
            let Some(st) = stats.get(&(*m, *k, *p)) else { continue };
            let x = gx + bw * (pi as f64 + 0.5);
            let yt = y(st.median);
            let _ = writeln!(s, "<rect x=\"{x:.1}\" y=\"{yt:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{col}\"><title>{name} {}: {:.1} MB/s</title></rect>", bw * 0.9, (top + plot_h - yt).max(0.0), label.replace('|', " "), st.median);
            let cx = x + bw * 0.45;
            let _ = writeln!(
                s,
                "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
                y(st.min),
                y(st.max)
            );
        }
        for (li, part) in label.split('|').enumerate() {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{part}</text>",
                gx + gw / 2.0,
                top + plot_h + 16.0 + 14.0 * li as f64
            );
        }
    }
    for (pi, (_, col, name)) in colors.iter().enumerate() {
        let x = left + pi as f64 * 130.0;
        let yy = h - 20.0;
        let _ = writeln!(s, "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{col}\"/><text x=\"{}\" y=\"{yy}\">{name}</text>", yy - 10.0, x + 16.0);
    }
    let _ = writeln!(s, "</svg>");
    s
}

/// The section as last written (for `cargo xtask bench`, which rewrites results.md), or nothing.
pub fn section() -> String {
    std::fs::read_to_string(repo().join(SECTION)).map(|s| format!("\n{s}")).unwrap_or_default()
}

/// Reads a real-guest bench run's console log; writes docs/bench/real-guest.{md,svg} and results.md's
/// section. Returns the terminal summary.
pub fn report(console: &std::path::Path) -> Result<String> {
    let text = read(console)?;
    let lines: Vec<Line> = text
        .lines()
        .filter_map(parse_line)
        .filter(|l| l.get("kind").map(String::as_str) == Some("real-guest"))
        .collect();
    if lines.is_empty() {
        return Err(format!("no PVTCE-BENCH kind=real-guest lines in {}", console.display()));
    }
    let reps = lines.iter().filter_map(|l| num(l, "rep")).fold(0.0, f64::max) as usize + 1;
    // The versions that ran, from the realguest stage's line of the same log.
    let head = text
        .lines()
        .find_map(|l| l.split("realguest: cached: ").nth(1).or_else(|| l.split("realguest: fetched: ").nth(1)))
        .map(|v| format!("Software: {}.", v.trim()))
        .unwrap_or_default();
    // How the repetitions were chosen: the probe's result line ("N repetitions (one repetition took ...").
    let chosen = text
        .lines()
        .find_map(|l| l.split("PVTCE-RESULT real-bench pass ").nth(1))
        .and_then(|r| r.split_once(' '))
        .map(|(_, d)| format!("The probe: {}.", d.trim()))
        .unwrap_or_default();
    let md = markdown(&lines, reps, &format!("{chosen} {head}"));
    write(&repo().join(SECTION), &md)?;
    write(&repo().join("docs/bench/real-guest.svg"), &svg(&lines))?;
    // results.md: everything before an earlier copy of the section, then the section.
    let res = repo().join("docs/bench/results.md");
    let old = std::fs::read_to_string(&res).unwrap_or_default();
    let keep = old.split("\n## Real guest").next().unwrap_or("").trim_end();
    write(&res, &format!("{keep}\n\n{md}"))?;
    Ok(format!("{md}\nwritten: docs/bench/results.md (section \"Real guest\"), real-guest.md, real-guest.svg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs() -> Vec<Line> {
        [
            "PVTCE-BENCH kind=real-guest path=pvtce mode=noddw rep=0 w64k=10 boot=20 map_us=1000 hcalls=100 mb=10 run=60",
            "PVTCE-BENCH kind=real-guest path=pvtce mode=noddw rep=1 w64k=12 boot=22 map_us=1000 hcalls=100 mb=10 run=62",
            "PVTCE-BENCH kind=real-guest path=linux mode=noddw rep=0 w64k=5 boot=25 map_us=2000 hcalls=100 mb=10 run=61",
            "PVTCE-BENCH kind=real-guest path=linux mode=noddw rep=1 w64k=6 boot=20 map_us=2000 hcalls=100 mb=10 run=61",
            "PVTCE-BENCH kind=real-guest path=userspace mode=noddw rep=0 w64k=2 boot=40 map_us=? hcalls=100 mb=10 run=70",
        ]
        .iter()
        .filter_map(|l| parse_line(l))
        .collect()
    }

    #[test]
    fn ratios_pair_repetitions_and_skip_missing() {
        let l = runs();
        let pv = series(&l, "pvtce", "noddw", |l| num(l, "w64k"));
        let li = series(&l, "linux", "noddw", |l| num(l, "w64k"));
        let us = series(&l, "userspace", "noddw", |l| num(l, "w64k"));
        assert_eq!(ratios(&pv, &li), vec![2.0, 2.0]);
        // userspace ran once: one pair only
        assert_eq!(ratios(&us, &pv), vec![0.2]);
        // "?" is no sample
        assert!(series(&l, "userspace", "noddw", |l| num(l, "map_us")).is_empty());
        assert_eq!(stat(&series(&l, "pvtce", "noddw", per_mb)).unwrap().median, 10.0);
    }

    #[test]
    fn the_section_has_every_row_and_the_ratios() {
        let md = markdown(&runs(), 2, "");
        assert!(md.starts_with("## Real guest"));
        assert_eq!(md.matches("| disable_ddw | pvtce |").count(), 1);
        assert!(md.contains("| disable_ddw | 64K write MB/s | 0.20 [0.20-0.20] | 2.00 [2.00-2.00] |"));
        // ddw was not run: its cells are empty, not zero
        assert!(md.contains("| DDW (default) | pvtce | - |"));
        let svg = svg(&runs());
        assert!(svg.contains("pvtce 64K write disable_ddw: 11.0 MB/s"));
    }
}
