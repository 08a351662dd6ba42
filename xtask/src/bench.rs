//! `cargo xtask bench`: one boot of the emulated machine running the in-VM `bench` probe
//! (tests/vm/src/bench.rs), then medians, spreads and ratios of its `PVTCE-BENCH` lines, written to
//! `docs/bench/` as JSON, a markdown table and a hand-written SVG bar chart, beside the native criterion
//! benchmark of pvtce-core. Every ratio is taken per repetition between paths measured in the same boot;
//! absolute times are TCG-emulated and only stated for completeness.

use crate::util::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// L2 timebase frequency (ticks per microsecond).
const TB_PER_US: f64 = 512.0;

type Line = BTreeMap<String, String>;

/// `PVTCE-BENCH k=v k=v ...` (values never contain spaces).
pub fn parse_line(line: &str) -> Option<Line> {
    let rest = line.split("PVTCE-BENCH ").nth(1)?;
    Some(rest.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect())
}

fn num(l: &Line, k: &str) -> Option<f64> {
    l.get(k)?.parse().ok()
}

fn list(l: &Line, k: &str) -> Vec<f64> {
    l.get(k)
        .map(|v| v.trim_matches(|c| c == '[' || c == ']').split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

/// Median and range of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(v: &[f64]) -> Option<Stat> {
        let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let m = s.len() / 2;
        let median = if s.len() % 2 == 1 { s[m] } else { (s[m - 1] + s[m]) / 2.0 };
        Some(Stat { median, min: s[0], max: s[s.len() - 1], n: s.len() })
    }

    /// "median [min-max]" with `p` decimals.
    fn show(&self, p: usize) -> String {
        format!("{:.p$} [{:.p$}-{:.p$}]", self.median, self.min, self.max)
    }

    /// The JSON form; six decimals, as the committed results have them.
    fn json(&self) -> serde_json::Value {
        let r = |x: f64| (x * 1e6).round() / 1e6;
        serde_json::json!({"median": r(self.median), "min": r(self.min), "max": r(self.max), "n": self.n})
    }
}

const PATHS: [&str; 3] = ["userspace", "linux", "pvtce"];
const WINS: [&str; 2] = ["4k", "64k"];
/// Workload, what one unit is.
const WORKS: [(&str, &str); 5] = [
    ("put_pair", "H_PUT_TCE map + unmap pair"),
    ("indirect512", "TCE mapped by H_PUT_TCE_INDIRECT of 512"),
    ("stuff512", "TCE cleared by H_STUFF_TCE of 512"),
    ("get", "H_GET_TCE"),
    ("indirect1_stuff1", "H_PUT_TCE_INDIRECT of 1 + H_STUFF_TCE of 1"),
];

/// Per repetition: ticks per unit. Within a rig the fastest of its tries (`tries=N`: what the table costs
/// without a disturbance that lands on one try); within a repetition the median of its rigs (`rigs=N`: a
/// rig's placement moves all its tries together, and the median is the typical placement). Lines without a
/// `rig` (older consoles) are rig 0.
fn per_unit(lines: &[Line], path: &str, win: &str, work: &str) -> BTreeMap<u64, f64> {
    let mut best: BTreeMap<(u64, u64), f64> = BTreeMap::new();
    for (key, v) in lines
        .iter()
        .filter(|l| {
            l.get("kind").map(String::as_str) == Some("hcall")
                && l.get("path").map(String::as_str) == Some(path)
                && l.get("win").map(String::as_str) == Some(win)
                && l.get("work").map(String::as_str) == Some(work)
        })
        .filter_map(|l| {
            let rig = num(l, "rig").unwrap_or(0.0) as u64;
            Some(((num(l, "rep")? as u64, rig), num(l, "ticks")? / num(l, "units")?))
        })
    {
        let b = best.entry(key).or_insert(v);
        *b = b.min(v);
    }
    let mut rigs: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for ((rep, _), v) in best {
        rigs.entry(rep).or_default().push(v);
    }
    rigs.into_iter().filter_map(|(rep, v)| Some((rep, Stat::of(&v)?.median))).collect()
}

/// The L1-side tables (`kind=l1` lines, tests/vm/src/bench.rs `l1_times`): workload, what one unit is, and
/// TCEs per unit of the timed table's figure of the same workload (its `cost` is per TCE for the batches).
const L1_WORKS: [(&str, &str, f64); 4] = [
    ("put_pair", "H_PUT_TCE map + unmap pair", 1.0),
    ("get", "H_GET_TCE", 1.0),
    ("indirect512", "H_PUT_TCE_INDIRECT of 512", 512.0),
    ("stuff512", "H_STUFF_TCE of 512", 512.0),
];

/// The `kind=l1` lines of one path, window, workload and probe.
fn l1_lines<'a>(
    lines: &'a [Line],
    path: &'a str,
    win: &'a str,
    work: &'a str,
    probe: &'a str,
) -> impl Iterator<Item = &'a Line> + 'a {
    let is = |l: &Line, k: &str, v: &str| l.get(k).map(String::as_str) == Some(v);
    lines.iter().filter(move |l| {
        is(l, "kind", "l1") && is(l, "path", path) && is(l, "win", win) && is(l, "work", work) && is(l, "probe", probe)
    })
}

/// The fastest try of each repetition among the `kind=l1` lines of `probe` ("loop" or "nested"), by `field`
/// (`l1_ticks`, `hcall_ticks` or `nested_ticks`) per unit: that figure and the try's line. The figure is
/// `field` over the intervals it sums, times calls per unit (a put_pair unit is two calls). A repetition runs
/// the probe's tables `tries` times (lines without `try`, from older consoles, are one try each); the fastest
/// is taken for the reason [`per_unit`] takes it.
fn l1_best<'a>(
    lines: &'a [Line],
    path: &'a str,
    win: &'a str,
    work: &'a str,
    probe: &'a str,
    field: &str,
) -> BTreeMap<u64, (f64, &'a Line)> {
    let count = if field == "nested_ticks" { "nested_exits" } else { "exits" };
    let mut best: BTreeMap<u64, (f64, &'a Line)> = BTreeMap::new();
    for l in l1_lines(lines, path, win, work, probe) {
        let Some(n) = num(l, count).filter(|n| *n > 0.0) else { continue };
        let (Some(rep), Some(f), Some(calls), Some(units)) =
            (num(l, "rep"), num(l, field), num(l, "calls"), num(l, "units"))
        else {
            continue;
        };
        let v = f / n * calls / units;
        let b = best.entry(rep as u64).or_insert((v, l));
        if v < b.0 {
            *b = (v, l);
        }
    }
    best
}

/// L1-side ticks per unit, per repetition: [`l1_best`]'s figure.
fn l1_unit(lines: &[Line], path: &str, win: &str, work: &str, probe: &str, field: &str) -> BTreeMap<u64, f64> {
    l1_best(lines, path, win, work, probe, field).into_iter().map(|(r, (v, _))| (r, v)).collect()
}

/// L1's share of the guest-visible time, per repetition: `field` per unit over L2's ticks per unit of the same
/// table run (`ticks` on the `kind=l1` line); lines without `ticks` (made before it was printed) are taken
/// against the timed table of the same repetition (`vis`) instead.
fn l1_share(
    lines: &[Line],
    path: &str,
    win: &str,
    work: &str,
    probe: &str,
    field: &str,
    vis: &BTreeMap<u64, f64>,
) -> Vec<f64> {
    // The fastest try's L1 figure over the same try's own L2 time.
    l1_best(lines, path, win, work, probe, field)
        .iter()
        .filter_map(|(r, (x, l))| {
            let own = num(l, "ticks").zip(num(l, "units")).map(|(t, u)| t / u);
            Some(x / own.or_else(|| vis.get(r).copied())?)
        })
        .collect()
}

/// The timed table's ticks per L1 unit (per call for the batches), per repetition.
fn visible_unit(lines: &[Line], path: &str, win: &str, work: &str, tces: f64) -> BTreeMap<u64, f64> {
    per_unit(lines, path, win, work).into_iter().map(|(r, v)| (r, v * tces)).collect()
}

/// The floor per repetition: marginal ticks per page of VFIO MAP_DMA (or UNMAP_DMA), from N pages and 1.
fn floor_slope(lines: &[Line], win: &str, key: &str) -> BTreeMap<u64, f64> {
    let mut by_rep: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    for l in lines
        .iter()
        .filter(|l| l.get("kind").map(String::as_str) == Some("floor") && l.get("win").map(String::as_str) == Some(win))
    {
        if let (Some(r), Some(p), Some(t)) = (num(l, "rep"), num(l, "pages"), num(l, key)) {
            by_rep.entry(r as u64).or_default().push((p, t));
        }
    }
    by_rep
        .into_iter()
        .filter_map(|(r, v)| {
            let one = v.iter().find(|(p, _)| *p == 1.0)?;
            let n = v.iter().find(|(p, _)| *p > 1.0)?;
            Some((r, (n.1 - one.1) / (n.0 - 1.0)))
        })
        .collect()
}

/// pvtce.ko's own floor per repetition (`kind=xfloor`: PVTCE_WINDOW_EXCHANGE per entry; `kind=bfloor`: the
/// same batched): ticks per entry of one pass.
fn xfloor(lines: &[Line], kind: &str, win: &str, key: &str) -> BTreeMap<u64, f64> {
    lines
        .iter()
        .filter(|l| l.get("kind").map(String::as_str) == Some(kind) && l.get("win").map(String::as_str) == Some(win))
        .filter_map(|l| Some((num(l, "rep")? as u64, num(l, key)? / num(l, "entries")?)))
        .collect()
}

/// a / b per repetition present in both.
fn ratio(a: &BTreeMap<u64, f64>, b: &BTreeMap<u64, f64>) -> Vec<f64> {
    a.iter().filter_map(|(r, x)| Some(x / b.get(r)?)).collect()
}

pub struct Ratio {
    pub name: String,
    /// (">=" or "<=", value)
    pub goal: Option<(&'static str, f64)>,
    pub stat: Option<Stat>,
}

impl Ratio {
    fn verdict(&self) -> &'static str {
        match (self.goal, self.stat) {
            (None, _) => "-",
            (Some(_), None) => "not measured",
            (Some((op, g)), Some(s)) => {
                let ok = |x: f64| if op == ">=" { x >= g } else { x <= g };
                match (ok(s.median), ok(s.min) && ok(s.max)) {
                    (true, true) => "met",
                    (true, false) => "met (median; spread crosses)",
                    (false, _) => "MISSED",
                }
            }
        }
    }
}

struct Analysis {
    lines: Vec<Line>,
    /// (path, win, work) -> ticks per unit.
    cost: BTreeMap<(String, String, String), Stat>,
    exits: BTreeMap<(String, String, String), (f64, f64)>,
    ratios: Vec<Ratio>,
    floor: BTreeMap<(String, String), Stat>,
    scaling: Vec<(String, usize, Stat, Option<Stat>)>,
    memory: Vec<Line>,
    /// (path, win, work, measure) -> L1 ticks per unit; measure: "l1" (run loop), "hcall" (handler),
    /// "nested" (all of L1's side), "share" (L1 side / guest-visible), "nested_share" (GET only).
    l1: BTreeMap<(String, String, String, String), Stat>,
}

fn analyse(lines: Vec<Line>) -> Analysis {
    let mut cost = BTreeMap::new();
    let mut exits = BTreeMap::new();
    for p in PATHS {
        for w in WINS {
            for (work, _) in WORKS {
                let v: Vec<f64> = per_unit(&lines, p, w, work).into_values().collect();
                if let Some(s) = Stat::of(&v) {
                    cost.insert((p.into(), w.into(), work.into()), s);
                }
                if let Some(l) = lines.iter().find(|l| {
                    l.get("kind").map(String::as_str) == Some("hcall")
                        && l.get("path").map(String::as_str) == Some(p)
                        && l.get("win").map(String::as_str) == Some(w)
                        && l.get("work").map(String::as_str) == Some(work)
                }) {
                    exits.insert(
                        (p.into(), w.into(), work.into()),
                        (num(l, "exits").unwrap_or(-1.0), num(l, "calls").unwrap_or(-1.0)),
                    );
                }
            }
        }
    }
    let mut floor = BTreeMap::new();
    let mut ratios = Vec::new();
    let r = |name: String, goal, v: Vec<f64>| Ratio { name, goal, stat: Stat::of(&v) };
    for w in WINS {
        let u = |p: &str, work: &str| per_unit(&lines, p, w, work);
        ratios.push(r(
            format!("userspace / pvtce, H_PUT_TCE map+unmap pair, {w}"),
            Some((">=", 10.0)),
            ratio(&u("userspace", "put_pair"), &u("pvtce", "put_pair")),
        ));
        ratios.push(r(
            format!("userspace / Linux C, H_PUT_TCE map+unmap pair, {w}"),
            None,
            ratio(&u("userspace", "put_pair"), &u("linux", "put_pair")),
        ));
        for (work, goal) in [
            ("put_pair", Some(("<=", 0.85))),
            ("indirect512", Some(("<=", 0.5))),
            ("stuff512", Some(("<=", 0.6))),
            ("get", Some(("<=", 0.85))),
        ] {
            ratios.push(r(format!("pvtce / Linux C, {work}, {w}"), goal, ratio(&u("pvtce", work), &u("linux", work))));
        }
        let fm = floor_slope(&lines, w, "map_ticks");
        let fu = floor_slope(&lines, w, "unmap_ticks");
        let xm = xfloor(&lines, "xfloor", w, "map_ticks");
        let xu = xfloor(&lines, "xfloor", w, "unmap_ticks");
        let bm = xfloor(&lines, "bfloor", w, "map_ticks");
        let bu = xfloor(&lines, "bfloor", w, "unmap_ticks");
        for (k, v) in [("map", &fm), ("unmap", &fu), ("xmap", &xm), ("xunmap", &xu), ("bmap", &bm), ("bunmap", &bu)] {
            if let Some(s) = Stat::of(&v.values().copied().collect::<Vec<_>>()) {
                floor.insert((w.to_string(), k.to_string()), s);
            }
        }
        // Per-TCE cost of a hypercall over a floor: pvtce.ko's bare exchange (the goal's), then VFIO's slope.
        let per_tce = [
            ("pvtce", "INDIRECT-512", "indirect512", "bare exchange (pvtce.ko, no hypercall)", &xm, true),
            ("Linux C", "INDIRECT-512", "indirect512", "bare exchange (pvtce.ko, no hypercall)", &xm, false),
            ("pvtce", "STUFF-512", "stuff512", "bare clear (pvtce.ko, no hypercall)", &xu, false),
            ("pvtce", "INDIRECT-512", "indirect512", "batched floor (pvtce.ko table_run, no hypercall)", &bm, false),
            ("Linux C", "INDIRECT-512", "indirect512", "batched floor (pvtce.ko table_run, no hypercall)", &bm, false),
            ("pvtce", "STUFF-512", "stuff512", "batched clear (pvtce.ko table_run, no hypercall)", &bu, false),
            ("pvtce", "INDIRECT-512", "indirect512", "VFIO map slope", &fm, false),
            ("Linux C", "INDIRECT-512", "indirect512", "VFIO map slope", &fm, false),
            ("pvtce", "STUFF-512", "stuff512", "VFIO unmap slope", &fu, false),
        ];
        for (name, call, work, floor_name, floor_of, goal) in per_tce {
            let path = if name == "pvtce" { "pvtce" } else { "linux" };
            ratios.push(r(
                format!("{name} {call} per TCE / {floor_name}, {w}"),
                goal.then_some(("<=", 1.10)),
                ratio(&u(path, work), floor_of),
            ));
        }
    }
    // Scaling: throughput = calls / wall; efficiency(n) = throughput(n) / (n * throughput(1)), per repetition.
    let mut scaling = Vec::new();
    for p in ["pvtce", "linux"] {
        let tput = |n: usize| -> BTreeMap<u64, f64> {
            lines
                .iter()
                .filter(|l| {
                    l.get("kind").map(String::as_str) == Some("scaling")
                        && l.get("path").map(String::as_str) == Some(p)
                        && num(l, "vcpus") == Some(n as f64)
                })
                .filter_map(|l| Some((num(l, "rep")? as u64, num(l, "calls")? / num(l, "wall_ns")? * 1e9)))
                .collect()
        };
        let one = tput(1);
        for n in [1usize, 2, 4] {
            let t = tput(n);
            let Some(s) = Stat::of(&t.values().copied().collect::<Vec<_>>()) else { continue };
            let eff: Vec<f64> = ratio(&t, &one).into_iter().map(|x| x / n as f64).collect();
            scaling.push((p.to_string(), n, s, Stat::of(&eff)));
            if n > 1 {
                ratios.push(r(
                    format!("scaling efficiency {p}, {n} L2 vCPUs"),
                    (p == "pvtce").then_some((">=", 0.8)),
                    eff,
                ));
            }
        }
    }
    let memory = lines.iter().filter(|l| l.get("kind").map(String::as_str) == Some("memory")).cloned().collect();
    // L1-side handling (kind=l1): per path and call, and the ratios between paths, each per repetition.
    let mut l1 = BTreeMap::new();
    for w in WINS {
        for (work, _, tces) in L1_WORKS {
            for p in PATHS {
                let lp = l1_unit(&lines, p, w, work, "loop", "l1_ticks");
                let vis = visible_unit(&lines, p, w, work, tces);
                let mut put = |k: &str, v: Vec<f64>| {
                    if let Some(st) = Stat::of(&v) {
                        l1.insert((p.to_string(), w.to_string(), work.to_string(), k.to_string()), st);
                    }
                };
                put("l1", lp.values().copied().collect());
                put("hcall", l1_unit(&lines, p, w, work, "loop", "hcall_ticks").into_values().collect());
                put("share", l1_share(&lines, p, w, work, "loop", "l1_ticks", &vis));
                if work == "get" {
                    let n = l1_unit(&lines, p, w, work, "nested", "nested_ticks");
                    put("nested", n.values().copied().collect());
                    put("nested_share", l1_share(&lines, p, w, work, "nested", "nested_ticks", &vis));
                }
            }
        }
    }
    for w in WINS {
        let lp = |p: &str, work: &str| l1_unit(&lines, p, w, work, "loop", "l1_ticks");
        ratios.push(r(
            format!("userspace / pvtce, L1-side handling, H_PUT_TCE map+unmap pair, {w}"),
            None,
            ratio(&lp("userspace", "put_pair"), &lp("pvtce", "put_pair")),
        ));
        for (work, _, _) in L1_WORKS {
            ratios.push(r(
                format!("pvtce / Linux C, L1-side handling, {work}, {w}"),
                None,
                ratio(&lp("pvtce", work), &lp("linux", work)),
            ));
        }
    }
    Analysis { lines, cost, exits, ratios, floor, scaling, memory, l1 }
}

/// Linux's guest-visible table for a window of `entries` 4K TCEs with `touched` distinct 8-byte slots'
/// pages written, by its allocation rule (arch/powerpc/kvm/book3s_64_vio.c): the `kvmppc_spapr_tce_table`
/// struct with one page pointer per PAGE_SIZE of table, plus one zeroed page per PAGE_SIZE / 8 entries on
/// the first non-zero put into it. PAGE_SIZE is 64 KiB on the L1. The struct's fixed part is estimated.
fn linux_table_bytes(entries: u64, mapped_contiguous: u64) -> (u64, u64) {
    const PAGE: u64 = 1 << 16;
    const STT_FIXED: u64 = 128;
    let per_page = PAGE / 8;
    let struct_bytes = STT_FIXED + entries.div_ceil(per_page) * 8;
    (struct_bytes, struct_bytes + mapped_contiguous.div_ceil(per_page) * PAGE)
}

fn us(ticks: f64) -> f64 {
    ticks / TB_PER_US
}

fn markdown(a: &Analysis, core: &str, smp: &str, reps: &str, (rigs, tries): (u64, u64)) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# pvtce benchmark results\n");
    let _ = writeln!(
        m,
        "Written by `cargo xtask bench` (see [README.md](README.md)). One boot of the emulated machine (QEMU pseries, TCG, nested KVM-HV, L1 with {smp} vCPUs), {reps} repetitions of {rigs} rig(s) per path, paths in rotating order, each rig a fresh VMM process running each table {tries} time(s). A table's figure in a repetition is the median over its rigs of each rig's fastest try (README.md, \"Noise\"). **Absolute times are TCG-emulated** (L2 timebase, 512 MHz, shown in emulated us); the ratios, taken per repetition between paths of the same boot, are the result. Format: median [min-max] over repetitions.\n"
    );
    let _ = writeln!(m, "## Ratios\n\n| ratio | median [min-max] | goal | verdict |\n|---|---|---|---|");
    for r in &a.ratios {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} |",
            r.name,
            r.stat.map_or("not measured".into(), |s| s.show(3)),
            r.goal.map_or("-".into(), |(op, g)| format!("{op} {g}")),
            r.verdict()
        );
    }
    let _ = writeln!(m, "\n## Cost per unit (emulated us; median [min-max])\n");
    let _ = writeln!(m, "| workload (unit) | window | userspace | Linux C | pvtce | exits/calls (userspace, Linux, pvtce) |\n|---|---|---|---|---|---|");
    for (work, unit) in WORKS {
        for w in WINS {
            let cell = |p: &str| {
                a.cost.get(&(p.into(), w.into(), work.into())).map_or("-".into(), |s| {
                    Stat { median: us(s.median), min: us(s.min), max: us(s.max), n: s.n }.show(2)
                })
            };
            let ex: Vec<String> = PATHS
                .iter()
                .map(|p| {
                    a.exits.get(&(p.to_string(), w.into(), work.into())).map_or("-".into(), |(e, c)| format!("{e}/{c}"))
                })
                .collect();
            let _ = writeln!(
                m,
                "| {work} ({unit}) | {w} | {} | {} | {} | {} |",
                cell("userspace"),
                cell("linux"),
                cell("pvtce"),
                ex.join(", ")
            );
        }
    }
    let _ = writeln!(m, "\n## Where the time goes: fixed cost per hypercall and marginal cost per entry\n");
    let _ = writeln!(m, "From the same boot: H_GET_TCE does no host-table work, so it is the fixed cost of one hypercall on each path (nested exit through L0, dispatch, window lookup, locks). The marginal cost of one entry mapped and cleared is ((INDIRECT-512 + STUFF-512) - (INDIRECT-1 + STUFF-1)) / 511, compared with pvtce.ko's bare map + clear (PVTCE_WINDOW_EXCHANGE, below). pvtce's own counters give host-table updates and invalidations per table.\n");
    let _ = writeln!(m, "| window | path | fixed: H_GET_TCE (us) | per entry map+clear (us) | / floor map+unmap | host updates, kills per INDIRECT-512 table (8 calls) |\n|---|---|---|---|---|---|");
    for w in WINS {
        let floor = a
            .floor
            .get(&(w.to_string(), "xmap".to_string()))
            .zip(a.floor.get(&(w.to_string(), "xunmap".to_string())))
            .map(|(m, u)| m.median + u.median);
        for p in PATHS {
            let c = |k: &str| a.cost.get(&(p.to_string(), w.to_string(), k.to_string())).map(|s| s.median);
            let slope = match (c("indirect512"), c("stuff512"), c("indirect1_stuff1")) {
                (Some(i), Some(st), Some(one)) => Some(((i + st) * 512.0 - one) / 511.0),
                _ => None,
            };
            let hk = a
                .lines
                .iter()
                .find(|l| {
                    l.get("path").map(String::as_str) == Some(p)
                        && l.get("win").map(String::as_str) == Some(w)
                        && l.get("work").map(String::as_str) == Some("indirect512")
                        && l.contains_key("host_updates")
                })
                .map_or("-".to_string(), |l| format!("{}, {}", l["host_updates"], l["host_kills"]));
            let _ = writeln!(
                m,
                "| {w} | {p} | {} | {} | {} | {hk} |",
                c("get").map_or("-".into(), |v| format!("{:.2}", us(v))),
                slope.map_or("-".into(), |v| format!("{:.2}", us(v))),
                slope.zip(floor).map_or("-".into(), |(s, f)| format!("{:.2}", s / f))
            );
        }
    }
    m.push_str(&l1_section(a));
    let _ = writeln!(m, "\n## Floor: host-table update without a hypercall (L1)\n");
    let _ = writeln!(m, "**pvtce.ko** (the floor of the goal): `PVTCE_WINDOW_EXCHANGE` on the pvtce rig's window runs the hypercall path's own `table_exchange` per entry and one `table_kill`, on translations made before the clock starts, timed in the kernel with the timebase (the clock of L2's figures): ticks of one pass / entries (512 on 4K, 256 on 64K), fastest of 8 rounds. **VFIO** (for comparison): marginal cost per page of `VFIO_IOMMU_MAP_DMA` / `UNMAP_DMA` ((t(N) - t(1)) / (N - 1), N = 512 for 4K, 128 for 64K), timed in L1 userspace with `clock_gettime`, converted to ticks.\n");
    let _ = writeln!(m, "**pvtce.ko batched** (`PVTCE_EXCHANGE_BATCHED`): the same passes as one `table_run` each, the hypercall path's own batched update (patch 0008: one parent H_PUT_TCE_INDIRECT / H_STUFF_TCE per 512 entries).\n");
    let _ = writeln!(m, "| window | pvtce.ko map per entry (us) | pvtce.ko clear per entry (us) | batched map per entry (us) | batched clear per entry (us) | VFIO map per page (us) | VFIO unmap per page (us) |\n|---|---|---|---|---|---|---|");
    for w in WINS {
        let f = |k: &str| {
            a.floor
                .get(&(w.to_string(), k.to_string()))
                .map_or("-".into(), |s| Stat { median: us(s.median), min: us(s.min), max: us(s.max), n: s.n }.show(2))
        };
        let _ = writeln!(
            m,
            "| {w} | {} | {} | {} | {} | {} | {} |",
            f("xmap"),
            f("xunmap"),
            f("bmap"),
            f("bunmap"),
            f("map"),
            f("unmap")
        );
    }
    let _ = writeln!(m, "\n## Memory: 1 TiB window of 4K TCEs (2^28 entries), unlinked\n");
    let _ = writeln!(m, "pvtce: `table_bytes` from `PVTCE_WINDOW_INFO` (measured). Linux C: computed from its allocation rule (book3s_64_vio.c: the stt struct with one page pointer per 64 KiB of table, plus a zeroed 64 KiB page per 8192 entries on the first non-zero put; the struct's fixed part estimated at 128 B), cross-checked with the drop of MemFree. VmLck: what each charges to locked_vm at creation (measured).\n");
    let _ = writeln!(m, "| path | mapped entries | table bytes empty | table bytes 1% mapped | MemFree drop after 1% (KiB) | VmLck after create (KiB) |\n|---|---|---|---|---|---|");
    let mut pv = (None, None);
    let mut li = (None, None);
    for l in &a.memory {
        let p = l.get("path").cloned().unwrap_or_default();
        let entries = num(l, "entries").unwrap_or(0.0) as u64;
        let mapped = num(l, "mapped").unwrap_or(0.0) as u64;
        let (e, f) = if p == "pvtce" {
            (num(l, "table_bytes_empty").map(|x| x as u64), num(l, "table_bytes_mapped").map(|x| x as u64))
        } else {
            let (e, f) = linux_table_bytes(entries, mapped);
            (Some(e), Some(f))
        };
        if p == "pvtce" {
            pv = (e, f);
        } else {
            li = (e, f);
        }
        let how = if p == "pvtce" { "measured" } else { "computed" };
        let _ = writeln!(
            m,
            "| {p} | {mapped} | {} ({how}) | {} ({how}) | {} | {} |",
            e.map_or("-".into(), |x| x.to_string()),
            f.map_or("-".into(), |x| x.to_string()),
            list(l, "memfree_drop_kib").last().map_or("-".into(), |x| format!("{x:.0}")),
            list(l, "vmlck_kib").get(1).map_or("-".into(), |x| format!("{x:.0}"))
        );
    }
    if let ((Some(pe), Some(pf)), (Some(le), Some(lf))) = (pv, li) {
        let _ = writeln!(
            m,
            "\npvtce / Linux C table bytes: empty {:.4}, 1% mapped {:.3}.",
            pe as f64 / le as f64,
            pf as f64 / lf as f64
        );
    }
    m.push_str(&parent_table(&a.lines));
    let _ =
        writeln!(m, "\n## Scaling: n vCPUs of one L2 VM, each on its own L1 thread with its own unlinked 4K window, H_PUT_TCE pairs\n");
    let _ = writeln!(m, "| path | L2 vCPUs | hypercalls/s (emulated) | efficiency vs n x 1 vCPU |\n|---|---|---|---|");
    for (p, n, s, e) in &a.scaling {
        let _ = writeln!(m, "| {p} | {n} | {} | {} |", s.show(0), e.map_or("-".into(), |e| e.show(3)));
    }
    let _ = writeln!(
        m,
        "\n## Native: criterion benchmark of pvtce-core (`cargo bench -p pvtce-bench`, `core-report`)\n\n```\n{}\n```",
        core.trim()
    );
    let _ = writeln!(m, "\n{} PVTCE-BENCH lines in the raw data (`results.json`).", a.lines.len());
    m
}

/// "L1-side handling time": the `kind=l1` figures (see docs/bench/README.md).
fn l1_section(a: &Analysis) -> String {
    let mut m = String::new();
    if a.l1.is_empty() {
        return m;
    }
    let cell = |p: &str, w: &str, work: &str, k: &str, conv: bool| {
        a.l1.get(&(p.to_string(), w.to_string(), work.to_string(), k.to_string())).map_or("-".into(), |s| {
            if conv {
                Stat { median: us(s.median), min: us(s.min), max: us(s.max), n: s.n }.show(2)
            } else {
                s.show(3)
            }
        })
    };
    let vis = |p: &str, w: &str, work: &str, tces: f64| {
        a.cost.get(&(p.to_string(), w.to_string(), work.to_string())).map_or("-".into(), |s| {
            Stat { median: us(s.median * tces), min: us(s.min * tces), max: us(s.max * tces), n: s.n }.show(2)
        })
    };
    let _ = writeln!(m, "\n## L1-side handling time per hypercall (timebase in L1)\n");
    let _ = writeln!(m, "What a host without the nested exit would see: L1's time from L2's exit (`kvm_guest_exit`, kvmhv_run_single_vcpu back from H_ENTER_NESTED) to its next entry (`kvm_guest_enter`), per call of each kind, and inside it the handler (`kvm_hcall_enter` to `kvm_hcall_exit`: kvmppc_pseries_do_hcall). Measured by pvtce.ko's probes on kvm-hv's tracepoints (`PVTCE_L1_TIME`) in a second, untimed run of the same tables after the timed ones; on the Linux and userspace paths pvtce.ko is loaded for it without its backend. Userspace: the interval holds the exit to the VMM, its answer and the next `KVM_RUN`. \"guest-visible\" is the timed table's figure per call (L2's timebase); the share is L1's side over L2's own time for the same table in the same probed run (probes included on both sides). Emulated us, median [min-max]; shares and ratios per repetition.\n");
    let _ = writeln!(m, "| workload (unit) | window | path | L1 side (us) | of which handler (us) | guest-visible (us) | L1 side / guest-visible |\n|---|---|---|---|---|---|---|");
    for (work, unit, tces) in L1_WORKS {
        for w in WINS {
            for p in PATHS {
                let _ = writeln!(
                    m,
                    "| {work} ({unit}) | {w} | {p} | {} | {} | {} | {} |",
                    cell(p, w, work, "l1", true),
                    cell(p, w, work, "hcall", true),
                    vis(p, w, work, tces),
                    cell(p, w, work, "share", false)
                );
            }
        }
    }
    let _ = writeln!(m, "\n**One H_GET_TCE, all of L1's side.** The same GET table once more with the H_ENTER_NESTED interval too: from the return of the H_ENTER_NESTED hypercall that ran L2 to L1's next H_ENTER_NESTED (pseries `hcall_exit` / `hcall_entry`), which adds the nested entry's own register switch (kvmhv_vcpu_entry_p9_nested) to the run loop's interval. It turns on L1's hypercall tracing (H_GET_TCE makes no other hypercall on any path). The rest of the guest-visible time is L0's: the nested exit and entry, emulated by QEMU.\n");
    let _ = writeln!(m, "| window | path | guest-visible (us) | L1 side incl. nested switch (us) | L1 run loop (us) | handler (us) | L1 share incl. switch | L1 run-loop share |\n|---|---|---|---|---|---|---|---|");
    for w in WINS {
        for p in PATHS {
            let _ = writeln!(
                m,
                "| {w} | {p} | {} | {} | {} | {} | {} | {} |",
                vis(p, w, "get", 1.0),
                cell(p, w, "get", "nested", true),
                cell(p, w, "get", "l1", true),
                cell(p, w, "get", "hcall", true),
                cell(p, w, "get", "nested_share", false),
                cell(p, w, "get", "share", false)
            );
        }
    }
    m
}

/// The `kind=parent` lines: hypercalls L1 made to L0 during one untimed call of each kind, counted by pvtce.ko's
/// probe on the pseries `hcall_entry` tracepoint (tests/vm/src/bench.rs `parent_counts`), min-max over the
/// repetitions.
fn parent_table(lines: &[Line]) -> String {
    let mut m = String::new();
    let parent: Vec<&Line> = lines.iter().filter(|l| l.get("kind").map(String::as_str) == Some("parent")).collect();
    if parent.is_empty() {
        return m;
    }
    let _ = writeln!(
        m,
        "\n## Parent hypercalls (L1 to L0) per call, counted\n\nOne untimed call of each kind after the timed tables, per repetition; counted by pvtce.ko's probe on L1's pseries `hcall_entry` tracepoint (every CPU, every LIOBN), min-max over repetitions. `none` is an empty table: what L1 sends meanwhile.\n\n| window | workload | path | H_PUT_TCE | H_PUT_TCE_INDIRECT | H_STUFF_TCE | H_GET_TCE | total |\n|---|---|---|---|---|---|---|---|"
    );
    let range = |v: &[f64]| {
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        if v.is_empty() {
            "-".to_string()
        } else if lo == hi {
            format!("{lo:.0}")
        } else {
            format!("{lo:.0}-{hi:.0}")
        }
    };
    for w in WINS {
        for work in ["put_pair", "indirect512", "stuff512", "get8", "none"] {
            for p in ["linux", "pvtce"] {
                let rows: Vec<&&Line> = parent
                    .iter()
                    .filter(|l| {
                        l.get("win").map(String::as_str) == Some(w)
                            && l.get("work").map(String::as_str) == Some(work)
                            && l.get("path").map(String::as_str) == Some(p)
                    })
                    .collect();
                if rows.is_empty() {
                    continue;
                }
                let col = |k: &str| -> Vec<f64> { rows.iter().filter_map(|l| num(l, k)).collect() };
                let total: Vec<f64> = rows
                    .iter()
                    .map(|l| ["put", "indirect", "stuff", "get"].iter().filter_map(|k| num(l, k)).sum())
                    .collect();
                let _ = writeln!(
                    m,
                    "| {w} | {work} | {p} | {} | {} | {} | {} | {} |",
                    range(&col("put")),
                    range(&col("indirect")),
                    range(&col("stuff")),
                    range(&col("get")),
                    range(&total)
                );
            }
        }
    }
    m
}

fn json(a: &Analysis, core: &str, smp: &str, reps: &str) -> Result<String> {
    use serde_json::json;
    let cost: Vec<_> = a
        .cost
        .iter()
        .map(|((p, w, k), s)| json!({"path": p, "window": w, "work": k, "ticks_per_unit": s.json()}))
        .collect();
    let floor: Vec<_> =
        a.floor.iter().map(|((w, k), s)| json!({"window": w, "op": k, "ticks_per_page": s.json()})).collect();
    let l1: Vec<_> =
        a.l1.iter()
            .map(|((p, w, k, m), s)| json!({"path": p, "window": w, "work": k, "measure": m, "value": s.json()}))
            .collect();
    let ratios: Vec<_> = a
        .ratios
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "goal": r.goal.map(|(op, g)| format!("{op} {g}")),
                "value": r.stat.map(|s| s.json()),
                "verdict": r.verdict(),
            })
        })
        .collect();
    let v = json!({
        "machine": format!("QEMU pseries TCG, nested KVM-HV, L1 -smp {smp},threads=1; times are emulated"),
        "repetitions": reps,
        "time_unit": "L2 timebase ticks (512 MHz) per unit",
        "cost": cost,
        "floor": floor,
        "ratios": ratios,
        "l1_side": l1,
        "core_report": core.trim(),
        "raw": a.lines,
    });
    serde_json::to_string_pretty(&v).map(|s| s + "\n").map_err(|e| e.to_string())
}

/// Grouped bars, log scale: emulated us per unit for each workload and window, one bar per path, with a
/// min-max whisker.
fn svg(a: &Analysis) -> String {
    let groups: Vec<(String, String, String)> = WORKS
        .iter()
        .take(4)
        .flat_map(|(k, _)| WINS.iter().map(move |w| (k.to_string(), w.to_string(), format!("{k} {w}"))))
        .collect();
    let colors = [("userspace", "#d62728"), ("linux", "#1f77b4"), ("pvtce", "#2ca02c")];
    let (w, h, left, top, bottom) = (900.0, 420.0, 60.0, 40.0, 80.0);
    let plot_h = h - top - bottom;
    let vals: Vec<f64> = a.cost.values().flat_map(|s| [us(s.min), us(s.max)]).filter(|v| *v > 0.0).collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min).log10().floor();
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max).log10().ceil();
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (0.0, 1.0) };
    let y = |v: f64| top + plot_h * (1.0 - (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo));
    let mut s = String::new();
    let _ = writeln!(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">");
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(s, "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">Emulated us per unit (log scale; median, whisker = min-max; TCG, ratios are the result)</text>", w / 2.0);
    let mut d = lo as i32;
    while d <= hi as i32 {
        let yy = y(10f64.powi(d));
        let _ = writeln!(s, "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">1e{d}</text>", w - 10.0, left - 5.0, yy + 4.0);
        d += 1;
    }
    let gw = (w - left - 10.0) / groups.len() as f64;
    let bw = gw / 4.0;
    for (gi, (k, win, label)) in groups.iter().enumerate() {
        let gx = left + gi as f64 * gw;
        for (pi, (p, col)) in colors.iter().enumerate() {
            let Some(st) = a.cost.get(&(p.to_string(), win.clone(), k.clone())) else { continue };
            let x = gx + bw * (pi as f64 + 0.5);
            let yt = y(us(st.median));
            let _ = writeln!(s, "<rect x=\"{x:.1}\" y=\"{yt:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{col}\"><title>{p} {label}: {:.2} us</title></rect>", bw * 0.9, (top + plot_h - yt).max(0.0), us(st.median));
            let cx = x + bw * 0.45;
            let _ = writeln!(
                s,
                "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
                y(us(st.min)),
                y(us(st.max))
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            gx + gw / 2.0,
            top + plot_h + 16.0
        );
    }
    for (pi, (p, col)) in colors.iter().enumerate() {
        let x = left + pi as f64 * 130.0;
        let yy = h - 25.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{col}\"/><text x=\"{}\" y=\"{yy}\">{}</text>",
            yy - 10.0,
            x + 16.0,
            if *p == "linux" { "Linux C" } else { p }
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

/// Runs criterion on pvtce-core and returns core-report's table (or why it is missing).
pub fn core_bench() -> String {
    if std::env::var("PVTCE_BENCH_CORE").as_deref() == Ok("0") {
        return "skipped (PVTCE_BENCH_CORE=0)".into();
    }
    if let Err(e) = run(cmd("cargo").current_dir(repo()).args(["bench", "-p", "pvtce-bench", "--bench", "core"])) {
        return format!("cargo bench failed: {e}");
    }
    output(cmd("cargo").current_dir(repo()).args([
        "run",
        "-q",
        "-p",
        "pvtce-bench",
        "--bin",
        "core-report",
        "--",
        "target/criterion",
    ]))
    .unwrap_or_else(|e| format!("core-report failed: {e}"))
}

/// Reads the console log of a bench run and writes docs/bench/{results.json,results.md,bench.svg}; returns
/// the terminal summary.
pub fn report(console: &std::path::Path, core: &str) -> Result<String> {
    let text = read(console)?;
    // The QEMU command line heads the log: L1 vCPUs and the probe's repetitions come from there.
    let head = text.lines().next().unwrap_or("");
    let after = |pat: &str| -> String {
        head.split(pat).nth(1).map(|r| r.chars().take_while(char::is_ascii_digit).collect()).unwrap_or_default()
    };
    let (smp, reps) = (after("-smp "), after("pvtce_probe=reps="));
    let (smp, reps) = (smp.as_str(), reps.as_str());
    let lines: Vec<Line> = text.lines().filter_map(parse_line).collect();
    if lines.is_empty() {
        return Err(format!("no PVTCE-BENCH lines in {}", console.display()));
    }
    // Rigs per path and tries per rig, from the timed tables' lines (no `rig` field: one rig).
    let most = |key: &str| {
        lines
            .iter()
            .filter(|l| l.get("kind").map(String::as_str) == Some("hcall"))
            .filter_map(|l| num(l, key))
            .fold(0.0, f64::max) as u64
            + 1
    };
    let (rigs, tries) = (most("rig"), most("try"));
    let a = analyse(lines);
    let dir = repo().join("docs/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // The test kernel's run writes results.*, with the real guest's section (`cargo xtask bench real`) at the
    // end; a kernel variant's run (`PVTCE_SERIES=production`: no debug options) writes results-<variant>.*.
    let (stem, svg_name, tail) = match crate::kernel::variant() {
        Some(v) => (
            format!("results-{v}"),
            format!("bench-{v}.svg"),
            format!(
                "\nL1 kernel: the `{v}` variant (patches/linux/series.{v}, xtask/kconfig/pvtce.config + {v}.config: no \
                 lockdep, KFENCE or allocator debugging). The test kernel's run is in results.md.\n"
            ),
        ),
        None => ("results".to_string(), "bench.svg".to_string(), crate::bench_real::section()),
    };
    write(&dir.join(format!("{stem}.md")), &(markdown(&a, core, smp, reps, (rigs, tries)) + &tail))?;
    write(&dir.join(format!("{stem}.json")), &json(&a, core, smp, reps)?)?;
    write(&dir.join(&svg_name), &svg(&a))?;
    let mut out = String::from("bench ratios (median [min-max] over repetitions; times are TCG-emulated):\n");
    for r in &a.ratios {
        let _ = writeln!(
            out,
            "  {:<72} {:>26}  {}",
            r.name,
            r.stat.map_or("not measured".into(), |s| s.show(3)),
            r.goal.map_or(String::new(), |(op, g)| format!("goal {op} {g}: {}", r.verdict()))
        );
    }
    let _ = writeln!(out, "written: docs/bench/{stem}.md, {stem}.json, {svg_name}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_summarises() {
        let l =
            parse_line("  | PVTCE-BENCH kind=hcall path=pvtce win=4k work=get rep=0 units=2 calls=2 ticks=10 exits=0")
                .unwrap();
        assert_eq!(l["path"], "pvtce");
        assert_eq!(num(&l, "ticks"), Some(10.0));
        let s = Stat::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        assert_eq!(list(&parse_line("PVTCE-BENCH v=[1,2,3]").unwrap(), "v"), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn per_unit_fastest_try_per_rig_median_over_rigs() {
        let line = |rep: u32, rig: &str, ticks: u32| {
            parse_line(&format!(
                "PVTCE-BENCH kind=hcall path=pvtce win=4k work=get rep={rep}{rig} try=0 units=2 calls=2 ticks={ticks} exits=0"
            ))
            .unwrap()
        };
        let lines = vec![
            // rep 0: rig 0 tries 40, 20 (fastest 20); rig 1 tries 90, 100 (90); rig 2 try 30: median of 10, 45, 15.
            line(0, " rig=0", 40),
            line(0, " rig=0", 20),
            line(0, " rig=1", 90),
            line(0, " rig=1", 100),
            line(0, " rig=2", 30),
            // rep 1: no rig field (an older console): one rig, its fastest try.
            line(1, "", 8),
            line(1, "", 6),
            // rep 2: two rigs, the mean of the middle two.
            line(2, " rig=0", 10),
            line(2, " rig=1", 30),
        ];
        let v = per_unit(&lines, "pvtce", "4k", "get");
        assert_eq!(v, [(0, 15.0), (1, 3.0), (2, 10.0)].into());
        // Another workload or path is not mixed in.
        assert!(per_unit(&lines, "linux", "4k", "get").is_empty());
        assert!(per_unit(&lines, "pvtce", "4k", "put_pair").is_empty());
    }

    #[test]
    fn l1_fastest_try_per_repetition() {
        let line = |rep: u32, try_: u32, l1: u32, ticks: u32| {
            parse_line(&format!(
                "PVTCE-BENCH kind=l1 path=pvtce win=4k work=get probe=loop rep={rep} try={try_} units=4 calls=4 ticks={ticks} vmm_exits=0 exits=2 l1_ticks={l1} hcall_ticks=0 nested_exits=0 nested_ticks=0 other_exits=0 other_ticks=0"
            ))
            .unwrap()
        };
        let lines = vec![
            // rep 0: tries with 40, 20, 60 ticks of L1 over 2 exits, 4 calls, 4 units: 20, 10, 30 a unit.
            line(0, 0, 40, 400),
            line(0, 1, 20, 100),
            line(0, 2, 60, 300),
            // rep 1: one try.
            line(1, 0, 8, 80),
        ];
        let u = l1_unit(&lines, "pvtce", "4k", "get", "loop", "l1_ticks");
        assert_eq!(u, [(0, 10.0), (1, 4.0)].into());
        // The share pairs the fastest try with its own L2 time (10 / 25 and 4 / 20), not another try's.
        let share = l1_share(&lines, "pvtce", "4k", "get", "loop", "l1_ticks", &BTreeMap::new());
        assert_eq!(share, vec![0.4, 0.2]);
        // Other paths, probes or fields find nothing.
        assert!(l1_unit(&lines, "linux", "4k", "get", "loop", "l1_ticks").is_empty());
        assert!(l1_unit(&lines, "pvtce", "4k", "get", "nested", "l1_ticks").is_empty());
    }

    #[test]
    fn ratios_pair_repetitions() {
        let a: BTreeMap<u64, f64> = [(0, 10.0), (1, 20.0), (2, 5.0)].into();
        let b: BTreeMap<u64, f64> = [(0, 1.0), (1, 2.0)].into();
        assert_eq!(ratio(&a, &b), vec![10.0, 10.0]);
    }

    #[test]
    fn results_json_parses_back() {
        let lines: Vec<Line> = [
            "PVTCE-BENCH kind=hcall path=pvtce win=4k work=get rep=0 units=2 calls=2 ticks=10 exits=0",
            "PVTCE-BENCH kind=hcall path=linux win=4k work=get rep=0 units=2 calls=2 ticks=20 exits=0",
        ]
        .iter()
        .filter_map(|l| parse_line(l))
        .collect();
        let a = analyse(lines);
        let v: serde_json::Value = serde_json::from_str(&json(&a, "core \"report\"\n", "2", "1").unwrap()).unwrap();
        assert_eq!(v["raw"][0]["path"], "pvtce");
        assert_eq!(v["core_report"], "core \"report\"");
        assert!(v["cost"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "linux" && c["ticks_per_unit"]["median"] == 10.0));
    }

    #[test]
    fn l1_side_per_unit_share_and_ratio() {
        let lines: Vec<Line> = [
            "PVTCE-BENCH kind=hcall path=pvtce win=4k work=put_pair rep=0 units=2 calls=4 ticks=400 exits=0",
            "PVTCE-BENCH kind=hcall path=linux win=4k work=put_pair rep=0 units=2 calls=4 ticks=800 exits=0",
            "PVTCE-BENCH kind=hcall path=pvtce win=4k work=get rep=0 units=4 calls=4 ticks=400 exits=0",
            // 4 calls, 2 pairs, 4 intervals of 10 ticks: 20 per pair; handler 4 per pair.
            "PVTCE-BENCH kind=l1 path=pvtce win=4k work=put_pair probe=loop rep=0 units=2 calls=4 vmm_exits=0 exits=4 l1_ticks=40 hcall_ticks=8 nested_exits=0 nested_ticks=0 other_exits=1 other_ticks=5",
            "PVTCE-BENCH kind=l1 path=linux win=4k work=put_pair probe=loop rep=0 units=2 calls=4 vmm_exits=0 exits=4 l1_ticks=80 hcall_ticks=40 nested_exits=0 nested_ticks=0 other_exits=0 other_ticks=0",
            // One interval missed (3 of 4 closed): the mean still counts per call.
            "PVTCE-BENCH kind=l1 path=pvtce win=4k work=get probe=nested rep=0 units=4 calls=4 ticks=200 vmm_exits=0 exits=3 l1_ticks=30 hcall_ticks=3 nested_exits=3 nested_ticks=60 other_exits=0 other_ticks=0",
        ]
        .iter()
        .filter_map(|l| parse_line(l))
        .collect();
        let a = analyse(lines);
        let get = |p: &str, w: &str, m: &str| a.l1[&(p.into(), "4k".into(), w.into(), m.into())].median;
        assert_eq!(get("pvtce", "put_pair", "l1"), 20.0);
        assert_eq!(get("pvtce", "put_pair", "hcall"), 4.0);
        // Guest-visible: 200 per pair.
        assert_eq!(get("pvtce", "put_pair", "share"), 0.1);
        assert_eq!(get("pvtce", "get", "nested"), 20.0);
        // Against the same run's 50 ticks per call, not the timed table's 100.
        assert_eq!(get("pvtce", "get", "nested_share"), 0.4);
        assert!(!a.l1.contains_key(&("pvtce".into(), "4k".into(), "get".into(), "l1".into())));
        let r = a.ratios.iter().find(|r| r.name == "pvtce / Linux C, L1-side handling, put_pair, 4k").unwrap();
        assert_eq!(r.stat.unwrap().median, 0.5);
        let md = l1_section(&a);
        assert!(md.contains("| put_pair (H_PUT_TCE map + unmap pair) | 4k | pvtce | 0.04 [0.04-0.04] | 0.01 [0.01-0.01] | 0.39 [0.39-0.39] | 0.100 [0.100-0.100] |"), "{md}");
    }

    #[test]
    fn linux_rule() {
        // 2^28 entries: 32768 64K pages of table, so 32768 pointers; 1% contiguous touches 328 pages.
        let (e, f) = linux_table_bytes(1 << 28, 2_684_416);
        assert_eq!(e, 128 + 32768 * 8);
        assert_eq!(f, e + 328 * 65536);
    }

    #[test]
    fn parent_counts_table_shows_ranges_and_totals() {
        let lines: Vec<Line> = [
            "PVTCE-BENCH kind=parent path=linux win=4k work=indirect512 rep=0 exits=0 put=512 indirect=0 stuff=0 get=512",
            "PVTCE-BENCH kind=parent path=pvtce win=4k work=indirect512 rep=0 exits=0 put=0 indirect=1 stuff=0 get=0",
            "PVTCE-BENCH kind=parent path=pvtce win=4k work=indirect512 rep=1 exits=0 put=0 indirect=1 stuff=1 get=0",
        ]
        .iter()
        .filter_map(|l| parse_line(l))
        .collect();
        let t = parent_table(&lines);
        assert!(t.contains("| 4k | indirect512 | linux | 512 | 0 | 0 | 512 | 1024 |"), "{t}");
        assert!(t.contains("| 4k | indirect512 | pvtce | 0 | 1 | 0-1 | 0 | 1-2 |"), "{t}");
        assert!(parent_table(&[]).is_empty());
    }
}
