//! Boots the emulated POWER machine (QEMU pseries, TCG, nested KVM-HV) and collects the in-VM results.
//!
//! The console is streamed to `target/pvtce/console-<run>.log`. The run fails on: a test reported `fail`, no
//! `PVTCE-DONE` line (crash or hang), a time-out, or any kernel report matched by `BAD` (panic, oops, BUG,
//! WARNING, lockdep, KFENCE, hung task, ...).

use crate::util::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Console patterns that fail a run whatever the tests said.
pub const BAD: &[&str] = &[
    "Kernel panic",
    "Oops:",
    "BUG:",
    "WARNING:",
    "------------[ cut here ]------------",
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "INFO: task",
    "rcu_sched self-detected stall",
    "rcu: INFO:",
    "Unable to handle kernel",
    "KFENCE:",
    "general protection",
    "kernel BUG at",
    "Call Trace:",
    "PVTCE-ERROR",
];

/// Console lines that match `BAD` but are known to be harmless here, each with its reason.
pub const ALLOW: &[(&str, &str)] = &[(
    "WARNING: nvram corruption detected: 0-length partition",
    "QEMU starts pseries with a blank NVRAM; the kernel reports it as corrupt and carries on",
)];

#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: String,
    pub status: String,
    pub ms: u64,
    pub detail: String,
}

pub struct Outcome {
    pub results: Vec<TestResult>,
    pub bad: Vec<String>,
    pub done: bool,
    pub timed_out: bool,
    pub log: PathBuf,
    pub boot_secs: Option<f64>,
    pub secs: f64,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        !self.done || self.timed_out || !self.bad.is_empty() || self.results.iter().any(|r| r.status == "fail")
    }
}

pub fn qemu_args(vmlinux: &Path, initrd: &Path, run: &str) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "-M".into(),
        // x-vof: QEMU's own small Open Firmware, faster to boot than SLOF.
        "pseries,cap-nested-hv=on,x-vof=on,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off".into(),
        "-accel".into(),
        "tcg,thread=multi".into(),
        // Nested HV under TCG needs one thread per core. `PVTCE_SMP` (set by `cargo xtask bench` for its
        // scaling figures) gives L1 more vCPUs; the tests run with 2.
        "-smp".into(),
        format!("{},threads=1", std::env::var("PVTCE_SMP").ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(2)),
        "-m".into(),
        "4G".into(),
        "-nodefaults".into(),
        "-nographic".into(),
        "-serial".into(),
        "stdio".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        vmlinux.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        format!(
            "console=hvc0 panic=-1 oops=panic loglevel=6 pvtce_run={run}{}",
            std::env::var("PVTCE_APPEND").map(|a| format!(" {a}")).unwrap_or_default()
        ),
        // edu on its own host bridge forms its own IOMMU group (PE); a full dma_mask reaches 64-bit windows.
        "-device".into(),
        "spapr-pci-host-bridge,index=1,id=phb1".into(),
        "-device".into(),
        "edu,bus=phb1.0,dma_mask=0xffffffffffffffff".into(),
    ];
    if let Ok(extra) = std::env::var("PVTCE_QEMU_EXTRA") {
        v.extend(extra.split_whitespace().map(String::from));
    }
    v
}

/// `PVTCE-RESULT <name> <pass|fail|skip> <ms> <detail...>`
fn parse_result(line: &str) -> Option<TestResult> {
    let rest = line.split("PVTCE-RESULT ").nth(1)?;
    let mut it = rest.splitn(4, ' ');
    let name = it.next()?.to_string();
    let status = it.next()?.to_string();
    let ms = it.next()?.parse().ok()?;
    let detail = it.next().unwrap_or("").trim().to_string();
    Some(TestResult { name, status, ms, detail })
}

pub fn boot(vmlinux: &Path, initrd: &Path, run: &str, tag: &str, timeout: Duration, echo_all: bool) -> Result<Outcome> {
    let log_path = out().join(format!("console-{tag}.log"));
    let mut log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let args = qemu_args(vmlinux, initrd, run);
    writeln!(log, "# qemu-system-ppc64 {}", args.join(" ")).map_err(|e| e.to_string())?;
    let mut child = cmd("qemu-system-ppc64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("qemu-system-ppc64: {e}"))?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
            let s = String::from_utf8_lossy(&l).replace('\r', "");
            if tx.send(s).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if tx2.send(format!("[qemu] {l}")).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut o = Outcome {
        results: vec![],
        bad: vec![],
        done: false,
        timed_out: false,
        log: log_path.clone(),
        boot_secs: None,
        secs: 0.0,
    };
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            o.timed_out = true;
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                let harmless_qemu = line.starts_with("[qemu]") && line.contains("warning");
                let allowed = ALLOW.iter().any(|(a, _)| line.contains(a));
                if !harmless_qemu && !allowed && BAD.iter().any(|b| line.contains(b)) {
                    o.bad.push(line.clone());
                }
                if line.contains("PVTCE-BOOT") {
                    o.boot_secs = Some(start.elapsed().as_secs_f64());
                }
                if let Some(r) = parse_result(&line) {
                    println!("  {:<4} {:<28} {:>7} ms  {}", r.status, r.name, r.ms, r.detail);
                    o.results.push(r);
                } else if echo_all || line.contains("PVTCE-") {
                    println!("  | {line}");
                }
                if line.contains("PVTCE-DONE") {
                    o.done = true;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(_)) = child.try_wait() {
                    // Drain what is left, then stop.
                    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                        let _ = writeln!(log, "{line}");
                    }
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.wait();
    o.secs = start.elapsed().as_secs_f64();
    write_results(&o, &out().join(format!("results-{tag}.json")))?;
    Ok(o)
}

/// The machine-readable result: one JSON object with every test and every bad console line.
fn write_results(o: &Outcome, path: &Path) -> Result<()> {
    let tests: Vec<String> = o
        .results
        .iter()
        .map(|r| {
            format!(
                "    {{\"name\": {}, \"status\": {}, \"ms\": {}, \"detail\": {}}}",
                json_str(&r.name),
                json_str(&r.status),
                r.ms,
                json_str(&r.detail)
            )
        })
        .collect();
    let bad: Vec<String> = o.bad.iter().map(|b| format!("    {}", json_str(b))).collect();
    let s = format!(
        "{{\n  \"done\": {},\n  \"timed_out\": {},\n  \"seconds\": {:.1},\n  \"console\": {},\n  \"tests\": [\n{}\n  ],\n  \"kernel_reports\": [\n{}\n  ]\n}}\n",
        o.done,
        o.timed_out,
        o.secs,
        json_str(&o.log.display().to_string()),
        tests.join(",\n"),
        bad.join(",\n")
    );
    write(path, &s)
}
