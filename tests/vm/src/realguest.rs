//! The real client (issue 10): Debian's unmodified `qemu-system-ppc64` runs Debian's unmodified kernel as L2
//! with L0's NVMe controller passed through (vfio-pci); L2's stock pseries IOMMU code issues the TCE
//! hypercalls and its stock nvme driver does the DMA. One scenario per TCE path and guest DMA mode:
//! - path: `pvtce` (pvtce.ko's windows), `builtin` (Linux's C code, `PVTCE_MODE_BUILTIN`), `userspace`
//!   (`PVTCE_MODE_USERSPACE`: the window ioctl fails, QEMU keeps its own tables and handles every call);
//! - mode: `ddw` (the guest's default: a 64-bit dynamic window from RTAS, all of its RAM mapped at boot with
//!   H_PUT_TCE_INDIRECT) or `noddw` (`disable_ddw`: the 32-bit window, TCE calls on every I/O).
//!
//! L2's /init (xtask/src/realguest.rs) writes known patterns with O_DIRECT and reads them back; this side
//! checks every pass verified, reads pvtce's window counters while the windows exist (before L2 powers off),
//! and after QEMU exits checks that no window and no pinned page is left. It needs the real-guest boot
//! (`/realguest` in the initramfs, the NVMe in L0): `cargo xtask vm real-...` or `cargo xtask demo`.

use crate::rig::{e, pins_outstanding, set_mode, settled_pins, sh, window_count};
use pvtce_uapi::pvtce_window_info;
use pvtce_vmm_glue::pvtce::Mode;
use pvtce_vmm_glue::vfio;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// QEMU's NVMe controller (`-device nvme`).
const NVME_VENDOR: u16 = 0x1b36;
const NVME_DEVICE: u16 = 0x0010;
const QEMU: &str = "/usr/bin/qemu-system-ppc64";
/// How long one L2 run may take before the scenario fails (a hang; TCG-nested L2 boots in ~20-60 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the pins of an exited QEMU may take to go (see `scenario`).
const PIN_SETTLE: Duration = Duration::from_secs(10);
/// The I/O passes L2's /init prints: verify write+read at 3 block sizes, 2 read-only, 3 mixed.
const IO_PASSES: usize = 11;

/// L2's QEMU options in this L1: the first try's set, kept for the scenarios (every committed figure was
/// measured with it; `x-vof=on` boots L2 faster). Only cap-cfpc, cap-sbbc and cap-ccf-assist are required
/// (`options` below; docs/real-client.md).
const ACCEL: &str = "kvm,kernel-irqchip=off";
const MACHINE: &str =
    "pseries,x-vof=on,ic-mode=xics,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off,cap-large-decr=off";

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Pvtce,
    Builtin,
    Userspace,
}

impl Path {
    /// The benchmark's name of the path (xtask/src/bench.rs calls Linux's C path `linux`).
    fn bench_name(self) -> &'static str {
        match self {
            Path::Pvtce => "pvtce",
            Path::Builtin => "linux",
            Path::Userspace => "userspace",
        }
    }

    fn mode(self) -> Mode {
        match self {
            Path::Pvtce => Mode::Pvtce,
            Path::Builtin => Mode::Builtin,
            Path::Userspace => Mode::Userspace,
        }
    }
}

pub fn pvtce_ddw() -> Result<String, String> {
    scenario(Path::Pvtce, true)
}
pub fn pvtce_noddw() -> Result<String, String> {
    scenario(Path::Pvtce, false)
}
pub fn builtin_ddw() -> Result<String, String> {
    scenario(Path::Builtin, true)
}
pub fn builtin_noddw() -> Result<String, String> {
    scenario(Path::Builtin, false)
}
pub fn userspace_ddw() -> Result<String, String> {
    scenario(Path::Userspace, true)
}
pub fn userspace_noddw() -> Result<String, String> {
    scenario(Path::Userspace, false)
}

/// One `RG-IO` line of L2.
#[derive(Debug, PartialEq)]
pub struct Io {
    pub pass: String,
    pub bs: u64,
    pub bytes: u64,
    pub secs: f64,
    pub ok: bool,
}

/// `RG-IO verify-write bs=4096 bytes=4194304 secs=0.5 ok=1`
pub fn parse_io(line: &str) -> Option<Io> {
    let rest = line.split("RG-IO ").nth(1)?;
    let mut it = rest.split_whitespace();
    let pass = it.next()?.to_string();
    let mut io = Io { pass, bs: 0, bytes: 0, secs: f64::NAN, ok: false };
    let mut seen = 0;
    for kv in it {
        let (k, v) = kv.split_once('=')?;
        match k {
            "bs" => io.bs = v.parse().ok()?,
            "bytes" => io.bytes = v.parse().ok()?,
            "secs" => io.secs = v.parse().unwrap_or(f64::NAN),
            "ok" => io.ok = v == "1",
            _ => return None,
        }
        seen += 1;
    }
    (seen == 4).then_some(io)
}

/// Checks L2's passes: the right number, each verified. Returns the passes in order.
pub fn check_io(lines: &[String]) -> Result<Vec<Io>, String> {
    let ios: Vec<Io> = lines.iter().filter_map(|l| parse_io(l)).collect();
    if ios.len() != IO_PASSES {
        return Err(format!("L2 printed {} I/O passes, expected {IO_PASSES}", ios.len()));
    }
    if let Some(bad) = ios.iter().find(|i| !i.ok) {
        return Err(format!("L2's {} pass at bs {} did not verify", bad.pass, bad.bs));
    }
    Ok(ios)
}

/// L2's own count of its TCE hypercalls during the I/O passes (`RG-HCALL`, from a histogram trigger on its
/// `hcall_entry` tracepoint): what the guest issued, whichever path handled it.
#[derive(Debug, Default, PartialEq)]
pub struct Hcalls {
    pub get: u64,
    pub put: u64,
    pub indirect: u64,
    pub stuff: u64,
}

impl Hcalls {
    pub fn total(&self) -> u64 {
        self.get + self.put + self.indirect + self.stuff
    }
}

/// `RG-HCALL get=0 put=11 indirect=4463 stuff=4900`
pub fn parse_hcalls(lines: &[String]) -> Option<Hcalls> {
    let rest = lines.iter().find_map(|l| l.split("RG-HCALL ").nth(1))?;
    let mut h = Hcalls::default();
    let mut seen = 0;
    for kv in rest.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        let v = v.parse().ok()?;
        match k {
            "get" => h.get = v,
            "put" => h.put = v,
            "indirect" => h.indirect = v,
            "stuff" => h.stuff = v,
            _ => return None,
        }
        seen += 1;
    }
    (seen == 4).then_some(h)
}

/// The guest's hypercalls against the path's: on pvtce's path every TCE hypercall L2 counted must be among
/// those pvtce's windows handled (theirs include the boot's); with `disable_ddw` every I/O maps and unmaps,
/// so none at all means the count (or the mode) is broken.
pub fn check_hcalls(path_is_pvtce: bool, ddw: bool, h: &Hcalls, w: &[pvtce_window_info]) -> Result<(), String> {
    if !ddw && h.put + h.indirect + h.stuff == 0 {
        return Err("disable_ddw, but L2 counted no TCE hypercall during its I/O".into());
    }
    if path_is_pvtce {
        let sum = |f: fn(&pvtce_window_info) -> u64| w.iter().map(f).sum::<u64>();
        for (kind, guest, handled) in [
            ("H_PUT_TCE", h.put, sum(|x| x.h_put_tce)),
            ("H_PUT_TCE_INDIRECT", h.indirect, sum(|x| x.h_put_tce_indirect)),
            ("H_STUFF_TCE", h.stuff, sum(|x| x.h_stuff_tce)),
            ("H_GET_TCE", h.get, sum(|x| x.h_get_tce)),
        ] {
            if handled < guest {
                return Err(format!("L2 made {guest} {kind} during its I/O, pvtce handled only {handled}"));
            }
        }
    }
    Ok(())
}

/// `RG-PROBE-INDIRECT calls=1 usecs=5120`: the H_PUT_TCE_INDIRECT calls L2 made while nvme probed and how
/// long they took from L2's entry to its exit (in ddw mode: the whole dynamic window's mapping).
pub fn parse_probe_indirect(lines: &[String]) -> Option<(u64, f64)> {
    let rest = lines.iter().find_map(|l| l.split("RG-PROBE-INDIRECT ").nth(1))?;
    let mut it = rest.split_whitespace();
    let calls = it.next()?.strip_prefix("calls=")?.parse().ok()?;
    let us = it.next()?.strip_prefix("usecs=")?.parse().ok()?;
    Some((calls, us))
}

fn mbs(io: &Io) -> String {
    if io.secs > 0.0 {
        format!("{:.1}", io.bytes as f64 / io.secs / 1e6)
    } else {
        "?".into()
    }
}

/// Every window pvtce holds, with its counters (vmm-glue's `Control`, the one owner of pvtce's ioctls).
fn windows() -> Result<Vec<pvtce_window_info>, String> {
    crate::rig::control()?.windows().map_err(e("PVTCE_LIST_WINDOWS"))
}

fn vm_locked_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmLck:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What one L2 run produced.
struct Run {
    console: Vec<String>,
    stderr: String,
    boot_secs: Option<f64>,
    disk_secs: Option<f64>,
    windows: Vec<pvtce_window_info>,
    cli: String,
    locked_kib: Option<u64>,
}

/// L2's QEMU options from `PVTCE_PROBE=rg:ACCEL|MACHINE` (to find out which options are needed), else ours.
fn qemu_options() -> (String, String) {
    if let Some(p) = std::env::var("PVTCE_PROBE").ok().and_then(|p| p.strip_prefix("rg:").map(String::from)) {
        if let Some((a, m)) = p.split_once('|') {
            return (a.to_string(), m.to_string());
        }
    }
    (ACCEL.into(), MACHINE.into())
}

/// `extra`: more of L2's command line (with its leading space).
fn run_l2(
    bdf: &str,
    ddw: bool,
    seed: u32,
    log: &str,
    (accel, machine): &(String, String),
    extra: &str,
    timeout: Duration,
) -> Result<Run, String> {
    let append = format!(
        "console=hvc0 panic=-1 loglevel=5 rg_seed={seed}{}{}",
        if ddw { "" } else { " disable_ddw" },
        std::env::var("PVTCE_RG_APPEND").map(|a| format!(" {a}")).unwrap_or_default() + extra
    );
    let args = [
        "-accel",
        accel,
        "-M",
        machine,
        "-smp",
        "1",
        "-m",
        "512M",
        "-nodefaults",
        "-nographic",
        "-serial",
        "stdio",
        "-kernel",
        "/realguest/vmlinux",
        "-initrd",
        "/realguest/initramfs.cpio.gz",
        "-append",
        &append,
        "-device",
        &format!("vfio-pci,host={bdf}"),
    ];
    let stderr_path = format!("{log}.stderr");
    let errf = std::fs::File::create(&stderr_path).map_err(e("create QEMU stderr file"))?;
    let start = Instant::now();
    let mut child = Command::new(QEMU)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(errf))
        .spawn()
        .map_err(e("start Debian's qemu-system-ppc64"))?;
    let pid = child.id();
    let mut stdin = child.stdin.take().ok_or("no QEMU stdin")?;
    let stdout = child.stdout.take().ok_or("no QEMU stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
            if tx.send(String::from_utf8_lossy(&l).replace('\r', "")).is_err() {
                break;
            }
        }
    });
    let mut logf = std::fs::File::create(log).map_err(e("create L2 console log"))?;
    let _ = writeln!(logf, "# {QEMU} {}", args.join(" "));
    let mut r = Run {
        console: Vec::new(),
        stderr: String::new(),
        boot_secs: None,
        disk_secs: None,
        windows: Vec::new(),
        cli: String::new(),
        locked_kib: None,
    };
    let mut result = Err("L2 never printed RG-IO-DONE".to_string());
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            result = Err(format!("L2 run timed out after {}s", timeout.as_secs()));
            break;
        }
        match rx.recv_timeout(left) {
            Ok(line) => {
                let _ = writeln!(logf, "{line}");
                if line.contains("RG-BOOT") {
                    r.boot_secs = Some(start.elapsed().as_secs_f64());
                }
                if line.contains("RG-DISK") {
                    r.disk_secs = Some(start.elapsed().as_secs_f64());
                }
                // Progress on L1's console: L2's own result lines (not its kernel log).
                if line.contains("RG-") {
                    println!(
                        "PVTCE-INFO l2 {:.0}s {}",
                        start.elapsed().as_secs_f64(),
                        &line[line.find("RG-").unwrap_or(0)..]
                    );
                }
                let done = line.contains("RG-IO-DONE");
                let error = line.contains("RG-ERROR");
                r.console.push(line);
                if error {
                    result = Err(format!("L2: {}", r.console.last().map(String::as_str).unwrap_or("")));
                }
                if done || error {
                    // Which of the NVMe's MSI-X vectors reached L1 (vfio-pci's handlers), while they exist.
                    if let Ok(irqs) = std::fs::read_to_string("/proc/interrupts") {
                        for l in irqs.lines().filter(|l| l.contains("vfio")) {
                            println!("PVTCE-INFO l1-irq {}", l.split_whitespace().collect::<Vec<_>>().join(" "));
                        }
                    }
                }
                if done {
                    // The windows live as long as QEMU: read them now.
                    r.windows = windows()?;
                    r.cli = sh("/bin/pvtce windows").unwrap_or_else(|x| x);
                    r.locked_kib = vm_locked_kib(pid);
                    let _ = stdin.write_all(b"\n");
                    let _ = stdin.flush();
                    result = Ok(());
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // L2 powers off after the go-ahead; anything else is stopped.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                if result.is_ok() {
                    result = Err("QEMU did not exit after L2's poweroff".into());
                }
                break;
            }
        }
    }
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        let _ = writeln!(logf, "{line}");
        r.console.push(line);
    }
    r.stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();

    match result {
        Ok(()) => Ok(r),
        Err(x) => {
            let from = r.console.len().saturating_sub(6);
            Err(format!(
                "{x}; L2 console {log}: ...{}; QEMU stderr: {}",
                r.console[from..].join(" / "),
                r.stderr.trim().replace('\n', " / ")
            ))
        }
    }
}

/// The pvtce path's proof: every window pvtce created for this VM, and what it did.
fn check_windows(path: Path, ddw: bool, w: &[pvtce_window_info]) -> Result<String, String> {
    match path {
        Path::Pvtce => {
            if w.is_empty() {
                return Err("pvtce holds no window while L2 runs".into());
            }
            if let Some(d) = w.iter().find(|x| x.declined != 0 || x.rejected != 0) {
                return Err(format!(
                    "window {:#x}: {} declined, {} rejected (expected 0)",
                    d.liobn, d.declined, d.rejected
                ));
            }
            if w.iter().all(|x| x.links == 0) {
                return Err("no pvtce window is linked to the NVMe's group".into());
            }
            let calls: u64 = w.iter().map(|x| x.h_put_tce + x.h_put_tce_indirect + x.h_stuff_tce).sum();
            if calls == 0 {
                return Err("pvtce handled no TCE hypercall".into());
            }
            // With a dynamic window the guest maps its RAM with H_PUT_TCE_INDIRECT into the 64-bit window.
            if ddw && !w.iter().any(|x| x.liobn != 0x8000_0000 && x.h_put_tce_indirect > 0) {
                return Err("ddw mode, but no H_PUT_TCE_INDIRECT into a second window".into());
            }
            if !ddw && w.len() != 1 {
                return Err(format!("disable_ddw, but {} windows", w.len()));
            }
            Ok(w.iter()
                .map(|x| {
                    format!(
                        "{:#x}/{}K: put {} ind {} stuff {} get {} declined {}",
                        x.liobn,
                        (1u64 << x.page_shift) >> 10,
                        x.h_put_tce,
                        x.h_put_tce_indirect,
                        x.h_stuff_tce,
                        x.h_get_tce,
                        x.declined
                    )
                })
                .collect::<Vec<_>>()
                .join("; "))
        }
        // The other paths must not have gone through pvtce at all.
        _ if !w.is_empty() => Err(format!("{} pvtce window(s) on a path that is not pvtce's", w.len())),
        _ => Ok("no pvtce window".into()),
    }
}

/// What one scenario measured (all of it checked: see `measure`).
struct Measured {
    ios: Vec<Io>,
    boot_secs: Option<f64>,
    disk_secs: Option<f64>,
    /// The H_PUT_TCE_INDIRECT calls while nvme probed and their time (µs), if L2 traced them.
    map: Option<(u64, f64)>,
    hc: Option<Hcalls>,
    trace_problems: Vec<String>,
    mb: f64,
    proof: String,
    locked_kib: Option<u64>,
    settle_ms: u128,
}

impl Measured {
    fn rate(&self, pass: &str, bs: u64) -> String {
        self.ios.iter().find(|i| i.pass == pass && i.bs == bs).map(mbs).unwrap_or_else(|| "?".into())
    }

    fn summary(&self) -> String {
        let sizes: Vec<String> = [4096u64, 65536, 1 << 20]
            .iter()
            .map(|&bs| format!("{}K w/r {}/{}", bs >> 10, self.rate("verify-write", bs), self.rate("verify-read", bs)))
            .collect();
        let map = self.map.map_or("?".into(), |(n, us)| format!("{n} in {:.1} ms", us / 1e3));
        let hc = self.hc.as_ref().map_or("?".into(), |h| {
            format!(
                "put {} ind {} stuff {} get {} ({:.1} per MB)",
                h.put,
                h.indirect,
                h.stuff,
                h.get,
                h.total() as f64 / self.mb
            )
        });
        format!(
            "data verified ({IO_PASSES} passes); MB/s {}; L2 boot {} s (to disk {} s); probe's INDIRECT {map}; VmLck {} kB; {}; L2's TCE hcalls in its I/O: {hc}; pins 0 ({} ms after exit)",
            sizes.join(", "),
            opt(self.boot_secs),
            opt(self.disk_secs),
            self.locked_kib.map(|k| k.to_string()).unwrap_or("?".into()),
            self.proof,
            self.settle_ms,
        )
    }

    /// The benchmark's line (xtask/src/bench_real.rs parses it).
    fn bench_line(&self, path: Path, ddw: bool, rep: u32, run_secs: f64) -> String {
        let mut l = format!(
            "PVTCE-BENCH kind=real-guest path={} mode={} rep={rep}",
            path.bench_name(),
            if ddw { "ddw" } else { "noddw" }
        );
        for (k, pass) in [("w", "verify-write"), ("r", "verify-read")] {
            for (n, bs) in [("4k", 4096u64), ("64k", 65536), ("1m", 1 << 20)] {
                l.push_str(&format!(" {k}{n}={}", self.rate(pass, bs)));
            }
        }
        l.push_str(&format!(
            " boot={} disk={} map_calls={} map_us={} hcalls={} mb={:.3} run={run_secs:.1}",
            opt(self.boot_secs),
            opt(self.disk_secs),
            self.map.map_or("?".into(), |(n, _)| n.to_string()),
            self.map.map_or("?".into(), |(_, us)| format!("{us:.0}")),
            self.hc.as_ref().map_or("?".into(), |h| h.total().to_string()),
            self.mb
        ));
        l
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.1}")).unwrap_or("?".into())
}

fn scenario(path: Path, ddw: bool) -> Result<String, String> {
    let m = measure(path, ddw)?;
    if !m.trace_problems.is_empty() {
        return Err(format!("{}; {}", m.trace_problems.join("; "), m.summary()));
    }
    Ok(m.summary())
}

/// The benchmark's L2 moves 1 MiB per pass (the tests 4): a run is dominated by the 4K passes otherwise.
const BENCH_L2: &str = " rg_mib=1";

/// `real-bench`: the six scenarios, repeated and interleaved (each repetition runs every path and mode once),
/// one `PVTCE-BENCH kind=real-guest` line per run. The number of repetitions follows from the measured time
/// of one: as many as fit in `pvtce_rg_budget=S` seconds (L1's command line; default 900), at least 2 (a
/// spread needs two) and at most `pvtce_rg_reps=N` (default 5, at most 20).
pub fn bench() -> Result<String, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let arg =
        |k: &str, d: u32| cmdline.split_whitespace().find_map(|a| a.strip_prefix(k)?.parse::<u32>().ok()).unwrap_or(d);
    let (max, budget) = (arg("pvtce_rg_reps=", 5), arg("pvtce_rg_budget=", 900));
    if !(2..=20).contains(&max) {
        return Err(format!("pvtce_rg_reps={max}: 2 to 20"));
    }
    let t = Instant::now();
    let mut rep = 0;
    let mut why = format!("pvtce_rg_reps={max}");
    while rep < max {
        for path in [Path::Pvtce, Path::Builtin, Path::Userspace] {
            for ddw in [true, false] {
                let t0 = Instant::now();
                let m = measure_with(path, ddw, &qemu_options(), BENCH_L2, RUN_TIMEOUT)
                    .map_err(|x| format!("rep {rep} {} ddw={ddw}: {x}", path.bench_name()))?;
                println!("{}", m.bench_line(path, ddw, rep, t0.elapsed().as_secs_f64()));
                println!("PVTCE-INFO real-bench rep {rep} {} ddw={ddw}: {}", path.bench_name(), m.summary());
                for p in &m.trace_problems {
                    println!("PVTCE-INFO real-bench rep {rep} {} ddw={ddw}: not counted: {p}", path.bench_name());
                }
            }
        }
        rep += 1;
        let per_rep = t.elapsed().as_secs_f64() / f64::from(rep);
        if rep >= 2 && t.elapsed().as_secs_f64() + per_rep > f64::from(budget) {
            why = format!("one repetition took {per_rep:.0} s, another would pass pvtce_rg_budget={budget} s");
            break;
        }
    }
    println!("PVTCE-BENCH kind=real-guest-reps reps={rep} secs={:.0}", t.elapsed().as_secs_f64());
    Ok(format!("{rep} repetitions ({why}), {} runs in {:.0} s", rep * 6, t.elapsed().as_secs_f64()))
}

fn measure(path: Path, ddw: bool) -> Result<Measured, String> {
    measure_with(path, ddw, &qemu_options(), "", RUN_TIMEOUT)
}

fn measure_with(
    path: Path,
    ddw: bool,
    opts: &(String, String),
    extra: &str,
    timeout: Duration,
) -> Result<Measured, String> {
    if !std::path::Path::new("/realguest/vmlinux").exists() || !std::path::Path::new(QEMU).exists() {
        return Err("not the real-guest boot (no /realguest): run it with `cargo xtask vm real-...`".into());
    }
    let bdf = vfio::find_pci(NVME_VENDOR, NVME_DEVICE).map_err(e("find L0's NVMe"))?;
    vfio::bind_vfio_pci(&bdf).map_err(e("bind the NVMe to vfio-pci"))?;
    if !std::path::Path::new("/dev/pvtce").exists() {
        sh("modprobe pvtce")?;
    }
    let old = set_mode(path.mode())?;
    let pins0 = settled_pins()?;
    let before = window_count()?;
    if before != 0 {
        return Err(format!("{before} pvtce window(s) before QEMU started"));
    }
    let name = format!(
        "{}-{}",
        match path {
            Path::Pvtce => "pvtce",
            Path::Builtin => "builtin",
            Path::Userspace => "userspace",
        },
        if ddw { "ddw" } else { "noddw" }
    );
    // A different data pattern per scenario (what one run left on the disk cannot pass for the next one's).
    let seed = 1 + (path as u32) * 2 + u32::from(ddw);
    let log = format!("/tmp/l2-{name}.log");
    let run = run_l2(&bdf, ddw, seed, &log, opts, extra, timeout);
    let _ = set_mode(old);
    let r = run?;
    for l in r.cli.lines() {
        println!("PVTCE-INFO real-{name} windows | {l}");
    }
    let ios = check_io(&r.console)?;
    let proof = check_windows(path, ddw, &r.windows)?;
    // L2's own counts (its tracepoints): a problem with them fails the test (`scenario`), the benchmark
    // reports it and goes on without those figures.
    let mut trace_problems = Vec::new();
    let hc = parse_hcalls(&r.console)
        .ok_or_else(|| "L2 printed no RG-HCALL line (its TCE hypercall count)".to_string())
        .and_then(|h| check_hcalls(path == Path::Pvtce, ddw, &h, &r.windows).map(|()| h));
    let hc = hc.map_err(|x| trace_problems.push(x)).ok();
    let mb = ios.iter().map(|i| i.bytes).sum::<u64>() as f64 / 1e6;
    let map = match parse_probe_indirect(&r.console) {
        None => Err("L2 printed no RG-PROBE-INDIRECT line".to_string()),
        // ddw: the guest maps all of its RAM into the dynamic window while nvme probes.
        Some((0, _)) if ddw => Err("ddw mode, but L2 made no H_PUT_TCE_INDIRECT while nvme probed".to_string()),
        Some(m) => Ok(Some(m)),
    };
    let map = map.map_err(|x| trace_problems.push(x)).ok().flatten();
    for l in r.console.iter().filter(|l| l.contains("RG-TRACE")) {
        println!("PVTCE-INFO real-{name} {}", &l[l.find("RG-TRACE").unwrap_or(0)..]);
    }
    // QEMU's own fallback on the userspace path: its message when the window ioctl fails.
    if path == Path::Userspace && !r.stderr.contains("Failed to create TCE64 table") {
        return Err(format!("userspace path, but QEMU did not fall back: {}", r.stderr.trim()));
    }
    // Nothing left: windows gone with the VM, every pin released (preregistration, mapped pages).
    let after = window_count()?;
    if after != 0 {
        return Err(format!("{after} pvtce window(s) left after QEMU exited"));
    }
    // Process exit releases the VFIO container and the VM from work that may finish a little later: give
    // the pins PIN_SETTLE to go, and say how long they took.
    let exited = Instant::now();
    let mut pins1 = pins_outstanding()?;
    while pins1 != pins0 && exited.elapsed() < PIN_SETTLE {
        std::thread::sleep(Duration::from_millis(100));
        pins1 = pins_outstanding()?;
    }
    if pins1 != pins0 {
        return Err(format!("{} page pin(s) left {} s after QEMU exited", pins1 - pins0, PIN_SETTLE.as_secs()));
    }
    let settle_ms = exited.elapsed().as_millis();
    Ok(Measured {
        ios,
        boot_secs: r.boot_secs,
        disk_secs: r.disk_secs,
        map,
        hc,
        trace_problems,
        mb,
        proof,
        locked_kib: r.locked_kib,
        settle_ms,
    })
}

/// How long an L2 run of `real-options` may take: without `x-vof=on` L2 boots through SLOF, which under
/// nested TCG takes minutes.
const OPTIONS_RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Which of L2's QEMU options this L1 really needs, in two steps.
/// 1. Start: QEMU is started with each option left out (or `kernel-irqchip` at QEMU's default) and watched
///    for 25 s without an initramfs; an option is required if QEMU exits with an error before that (the last
///    line of its error names the KVM capability it could not get); a guest that ran (its kernel stops
///    without a root file system) means not.
/// 2. Work: whole scenarios on pvtce, both guest DMA modes (the real initramfs, every pass verified, pvtce's
///    counters, L2's hypercall count, no window or pin left: everything `real-pvtce-*` checks), with only the
///    options step 1 found required: `-accel kvm` and no `x-vof` (SLOF), so interrupts go through QEMU's
///    defaults for the interrupt controller. The test fails if either does not work, and reports per option.
pub fn options() -> Result<String, String> {
    if !std::path::Path::new(QEMU).exists() {
        return Err("not the real-guest boot (no Debian QEMU)".into());
    }
    let bdf = vfio::find_pci(NVME_VENDOR, NVME_DEVICE).map_err(e("find L0's NVMe"))?;
    vfio::bind_vfio_pci(&bdf).map_err(e("bind the NVMe to vfio-pci"))?;
    let machine: Vec<&str> = MACHINE.split(',').collect();
    // (the option left out, -accel, -M); the first is our whole set.
    let mut variants: Vec<(String, String, String)> = vec![(String::new(), ACCEL.into(), MACHINE.into())];
    variants.push(("kernel-irqchip=off".into(), "kvm".into(), MACHINE.into()));
    for (i, opt) in machine.iter().enumerate().skip(1) {
        let rest: Vec<&str> = machine.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, o)| *o).collect();
        variants.push((opt.to_string(), ACCEL.into(), rest.join(",")));
    }
    // (option, Some(QEMU's error) if it is required to start)
    let mut started: Vec<(String, Option<String>)> = Vec::new();
    for (opt, accel, m) in &variants {
        let mut child = Command::new(QEMU)
            .args(["-accel", accel, "-M", m, "-smp", "1", "-m", "512M", "-nodefaults", "-nographic", "-serial", "null"])
            .args(["-kernel", "/realguest/vmlinux", "-append", "console=hvc0 panic=-1"])
            .args(["-device", &format!("vfio-pci,host={bdf}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(e("start Debian's qemu-system-ppc64"))?;
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if start.elapsed() < Duration::from_secs(25) => std::thread::sleep(Duration::from_millis(250)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut s, &mut err);
        }
        let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        // Without an initramfs the guest kernel stops at "Unable to mount root fs" and QEMU exits 0 ("OS
        // terminated"): the machine came up. An option QEMU cannot honour ends it with an error instead.
        let ran = match status {
            None => true,
            Some(st) => st.success() && err.contains("OS terminated"),
        };
        let verdict = match status {
            None => "running after 25 s".to_string(),
            Some(st) => format!("exited {st}: {last}"),
        };
        let name = if opt.is_empty() { "all (ours)".to_string() } else { format!("without {opt}") };
        println!("PVTCE-INFO real-options {name}: {verdict}");
        started.push((opt.clone(), (!ran).then_some(verdict)));
    }
    // Our own set must start, or the scenarios could not run at all.
    if let Some(x) = &started[0].1 {
        return Err(format!("QEMU does not start with our own options: {x}"));
    }
    let required: Vec<&str> = started.iter().skip(1).filter(|(_, r)| r.is_some()).map(|(o, _)| o.as_str()).collect();
    let minimal =
        ("kvm".to_string(), std::iter::once("pseries").chain(required.iter().copied()).collect::<Vec<_>>().join(","));
    let mut works = Vec::new();
    let mut failed = Vec::new();
    for ddw in [false, true] {
        let mode = if ddw { "ddw" } else { "disable_ddw" };
        let t = Instant::now();
        match measure_with(Path::Pvtce, ddw, &minimal, "", OPTIONS_RUN_TIMEOUT) {
            Ok(m) if m.trace_problems.is_empty() => {
                println!(
                    "PVTCE-INFO real-options minimal -accel {} -M {} {mode}: works ({:.0} s): {}",
                    minimal.0,
                    minimal.1,
                    t.elapsed().as_secs_f64(),
                    m.summary()
                );
                works.push(format!("{mode} L2 boot {} s", opt(m.boot_secs)));
            }
            Ok(m) => failed.push(format!("{mode}: {}; {}", m.trace_problems.join("; "), m.summary())),
            Err(x) => failed.push(format!("{mode}: {x}")),
        }
    }
    for f in &failed {
        println!("PVTCE-INFO real-options minimal -accel {} -M {} FAILS {f}", minimal.0, minimal.1);
    }
    let per_option: Vec<String> = started
        .iter()
        .skip(1)
        .map(|(o, r)| match r {
            Some(_) => format!("{o}: required (QEMU refuses to start without it)"),
            None if failed.is_empty() => format!("{o}: not needed (whole runs without it work)"),
            None => format!("{o}: starts without it; the whole runs without it FAILED"),
        })
        .collect();
    let s = format!(
        "{}; minimal set -accel {} -M {}: {}",
        per_option.join("; "),
        minimal.0,
        minimal.1,
        if failed.is_empty() {
            format!("pvtce, both modes, everything checked ({})", works.join(", "))
        } else {
            format!("FAILS: {}", failed.join(" / "))
        }
    );
    if failed.is_empty() {
        Ok(s)
    } else {
        Err(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn parses_a_pass() {
        let io = parse_io("[ 12.0] RG-IO verify-write bs=4096 bytes=4194304 secs=0.5 ok=1").unwrap();
        assert_eq!(io.pass, "verify-write");
        assert_eq!((io.bs, io.bytes, io.ok), (4096, 4194304, true));
        assert_eq!(mbs(&io), "8.4");
        assert!(parse_io("RG-IO verify-write bs=4096").is_none());
        assert!(parse_io("RG-IO x bs=1 bytes=1 secs=1 ok=1 extra=2").is_none());
    }

    #[test]
    fn a_failed_or_missing_pass_fails_the_check() {
        let good: Vec<String> =
            (0..IO_PASSES).map(|i| format!("RG-IO p{i} bs=4096 bytes=4096 secs=0.1 ok=1")).collect();
        assert_eq!(check_io(&good).unwrap().len(), IO_PASSES);
        let mut bad = good.clone();
        bad[3] = "RG-IO p3 bs=4096 bytes=4096 secs=0.1 ok=0".into();
        assert!(check_io(&bad).unwrap_err().contains("did not verify"));
        assert!(check_io(&good[1..]).is_err());
        assert!(check_io(&lines(&["RG-BOOT"])).is_err());
    }

    #[test]
    fn window_proof_needs_pvtce_to_have_worked() {
        let mut w =
            pvtce_window_info { liobn: 0x8000_0000, page_shift: 12, links: 1, h_stuff_tce: 512, ..Default::default() };
        assert!(check_windows(Path::Pvtce, false, &[w]).is_ok());
        assert!(check_windows(Path::Pvtce, false, &[]).is_err());
        assert!(check_windows(Path::Builtin, false, &[w]).is_err());
        assert!(check_windows(Path::Userspace, true, &[]).is_ok());
        // ddw mode needs the 64-bit window's INDIRECT mapping
        assert!(check_windows(Path::Pvtce, true, &[w]).is_err());
        w.declined = 1;
        assert!(check_windows(Path::Pvtce, false, &[w]).unwrap_err().contains("declined"));
    }

    #[test]
    fn probe_indirect_parses() {
        assert_eq!(parse_probe_indirect(&lines(&["RG-PROBE-INDIRECT calls=1 usecs=5120"])), Some((1, 5120.0)));
        assert_eq!(parse_probe_indirect(&lines(&["RG-PROBE-INDIRECT calls=1"])), None);
        assert_eq!(parse_probe_indirect(&lines(&["RG-PROBE-INDIRECT usecs=1 calls=1"])), None);
        assert_eq!(parse_probe_indirect(&lines(&["RG-IO-DONE"])), None);
    }

    #[test]
    fn hcall_counts_parse_and_must_match_pvtce() {
        let h = parse_hcalls(&lines(&["x", "[ 40.1] RG-HCALL get=0 put=11 indirect=4463 stuff=4900"])).unwrap();
        assert_eq!(h, Hcalls { get: 0, put: 11, indirect: 4463, stuff: 4900 });
        assert_eq!(h.total(), 9374);
        assert!(parse_hcalls(&lines(&["RG-HCALL get=0 put=1"])).is_none());
        assert!(parse_hcalls(&lines(&["RG-HCALL get=0 put=1 indirect=x stuff=2"])).is_none());
        assert!(parse_hcalls(&lines(&["RG-IO-DONE"])).is_none());
        let w = pvtce_window_info { h_put_tce: 11, h_put_tce_indirect: 4463, h_stuff_tce: 5412, ..Default::default() };
        assert!(check_hcalls(true, false, &h, &[w]).is_ok());
        // pvtce handled fewer than the guest made: some went elsewhere
        let short = pvtce_window_info { h_put_tce_indirect: 4000, ..w };
        assert!(check_hcalls(true, false, &h, &[short]).unwrap_err().contains("H_PUT_TCE_INDIRECT"));
        // other paths: no window to compare with, the guest's count is what there is
        assert!(check_hcalls(false, false, &h, &[]).is_ok());
        // disable_ddw without a single TCE hypercall in the I/O: the count is broken
        assert!(check_hcalls(false, false, &Hcalls::default(), &[]).is_err());
        assert!(check_hcalls(false, true, &Hcalls::default(), &[]).is_ok());
    }
}
