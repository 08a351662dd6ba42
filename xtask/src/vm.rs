//! Boots the emulated POWER machine (QEMU pseries, TCG, nested KVM-HV) and collects the in-VM results.
//!
//! The console is streamed to `target/pvtce/console-<run>.log`. [`Console::failures`] decides; the run fails
//! when any of these holds:
//! - `/init`'s `PVTCE-DONE rc=N` line is missing (crash, hang) or N is not 0 (a test failed, the binary
//!   panicked under `panic = "abort"`, or a signal killed it);
//! - a requested test (for `all`, every name `pvtce-vmtests --list` prints) has no `PVTCE-RESULT`, or more
//!   than one, or a result names a test that was not requested;
//! - a `PVTCE-RESULT`/`PVTCE-DONE` line does not parse;
//! - a test reported `fail`;
//! - the console shows a kernel report or a Rust panic (`BAD`: panic, oops, BUG, WARNING, lockdep, KFENCE,
//!   hung task, `panicked at`, ...);
//! - the VM did not finish within the time-out.

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
    // A Rust panic in a test binary (std's message; the kernel's own panics say "Kernel panic").
    "panicked at",
];

/// Console lines that match `BAD` but are known to be harmless here, each with its reason.
pub const ALLOW: &[(&str, &str)] = &[(
    "WARNING: nvram corruption detected: 0-length partition",
    "QEMU starts pseries with a blank NVRAM; the kernel reports it as corrupt and carries on",
)];

/// A test's status as the in-VM binary reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TestResult {
    pub name: String,
    pub status: Status,
    pub ms: u64,
    pub detail: String,
}

/// What the console said, fed one line at a time. Pure: no process, no clock, so the verdict can be tested
/// on recorded console fragments (`xtask/src/fixtures/`).
#[derive(Debug, Default)]
pub struct Console {
    pub results: Vec<TestResult>,
    /// Kernel reports and Rust panics (`BAD`, less `ALLOW`).
    pub bad: Vec<String>,
    /// `PVTCE-RESULT` or `PVTCE-DONE` lines that do not parse.
    pub malformed: Vec<String>,
    /// The exit status of `pvtce-vmtests`, from `/init`'s `PVTCE-DONE rc=N`; `None`: no such line.
    pub rc: Option<i32>,
    /// `PVTCE-DONE` lines seen (more than one is malformed).
    pub done_lines: usize,
}

/// What one console line was, for the caller's echo.
pub enum Line {
    Result(TestResult),
    Pvtce,
    Other,
}

impl Console {
    pub fn feed(&mut self, line: &str) -> Line {
        let harmless_qemu = line.starts_with("[qemu]") && line.contains("warning");
        let allowed = ALLOW.iter().any(|(a, _)| line.contains(a));
        if !harmless_qemu && !allowed && BAD.iter().any(|b| line.contains(b)) {
            self.bad.push(line.to_string());
        }
        if line.contains("PVTCE-DONE") {
            self.done_lines += 1;
            match parse_done(line) {
                Some(rc) if self.done_lines == 1 => self.rc = Some(rc),
                Some(_) => self.malformed.push(format!("a second PVTCE-DONE line: {line}")),
                None => self.malformed.push(line.to_string()),
            }
            return Line::Pvtce;
        }
        if line.contains("PVTCE-RESULT") {
            return match parse_result(line) {
                Some(r) => {
                    self.results.push(r.clone());
                    Line::Result(r)
                }
                None => {
                    self.malformed.push(line.to_string());
                    Line::Pvtce
                }
            };
        }
        if line.contains("PVTCE-") {
            Line::Pvtce
        } else {
            Line::Other
        }
    }

    /// Every reason the run failed, given the tests it was asked to run; empty means it passed.
    pub fn failures(&self, expected: &[String]) -> Vec<String> {
        let mut why = Vec::new();
        match self.rc {
            None => why.push("no `PVTCE-DONE rc=` line: /init never finished (crash or hang?)".to_string()),
            Some(0) => {}
            Some(rc) if rc > 128 => why.push(format!(
                "pvtce-vmtests was killed by signal {} ({}): rc={rc}",
                rc - 128,
                signal_name(rc - 128)
            )),
            Some(rc) => why.push(format!("pvtce-vmtests exited with rc={rc}")),
        }
        for m in &self.malformed {
            why.push(format!("malformed result line: {m}"));
        }
        for b in &self.bad {
            why.push(format!("kernel report or panic on the console: {b}"));
        }
        for name in expected {
            match self.results.iter().filter(|r| &r.name == name).count() {
                0 => why.push(format!("{name}: requested, but it printed no PVTCE-RESULT")),
                1 => {}
                n => why.push(format!("{name}: {n} PVTCE-RESULT lines for one test")),
            }
        }
        for r in &self.results {
            if !expected.contains(&r.name) {
                why.push(format!("{}: a result for a test that was not requested", r.name));
            }
            if r.status == Status::Fail {
                why.push(format!("{}: {}", r.name, r.detail));
            }
        }
        why
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "signal",
    }
}

pub struct Outcome {
    pub console: Console,
    /// The tests the run was asked for; each must report exactly once.
    pub expected: Vec<String>,
    pub timed_out: bool,
    pub log: PathBuf,
    pub boot_secs: Option<f64>,
    pub secs: f64,
}

impl Outcome {
    pub fn results(&self) -> &[TestResult] {
        &self.console.results
    }

    /// Every reason the run failed; empty means it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.timed_out {
            why.push(format!("the VM did not finish in time (hang?); console log: {}", self.log.display()));
        }
        why.extend(self.console.failures(&self.expected));
        why
    }

    pub fn failed(&self) -> bool {
        !self.failures().is_empty()
    }
}

/// The names `pvtce-vmtests all` runs, asked of the binary itself (`--list`, under qemu-user), so the host's
/// list of what must report cannot drift from the binary's. For named tests, the names.
pub fn expected(tests: &str, vmtests: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = tests.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
    if !names.iter().any(|n| n == "all") {
        return Ok(names);
    }
    let list = output(cmd("qemu-ppc64le").arg(vmtests).arg("--list"))?;
    let mut all: Vec<String> = list.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if all.is_empty() {
        return Err(format!("{} --list printed no test names", vmtests.display()));
    }
    all.extend(names.into_iter().filter(|n| n != "all" && !all.contains(n)).collect::<Vec<_>>());
    Ok(all)
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

/// `PVTCE-RESULT <name> <pass|fail|skip> <ms> <detail...>`; `None` if the line does not have that form.
fn parse_result(line: &str) -> Option<TestResult> {
    let rest = line.split("PVTCE-RESULT ").nth(1)?;
    let mut it = rest.splitn(4, ' ');
    let name = it.next().filter(|n| !n.is_empty())?.to_string();
    let status = match it.next()? {
        "pass" => Status::Pass,
        "fail" => Status::Fail,
        "skip" => Status::Skip,
        _ => return None,
    };
    let ms = it.next()?.parse().ok()?;
    let detail = it.next().unwrap_or("").trim().to_string();
    Some(TestResult { name, status, ms, detail })
}

/// `PVTCE-DONE rc=<int>` (what /init prints after the test binary exits).
fn parse_done(line: &str) -> Option<i32> {
    let rest = line.split("PVTCE-DONE ").nth(1)?;
    rest.trim().strip_prefix("rc=")?.parse().ok()
}

pub struct Run<'a> {
    pub vmlinux: &'a Path,
    pub initrd: &'a Path,
    /// The `pvtce_run=` list: `all` or test names, comma-separated.
    pub tests: &'a str,
    pub expected: Vec<String>,
    pub tag: &'a str,
    pub timeout: Duration,
    pub echo_all: bool,
}

pub fn boot(r: Run) -> Result<Outcome> {
    let Run { vmlinux, initrd, tests: run, expected, tag, timeout, echo_all } = r;
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
        console: Console::default(),
        expected,
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
                if line.contains("PVTCE-BOOT") {
                    o.boot_secs = Some(start.elapsed().as_secs_f64());
                }
                match o.console.feed(&line) {
                    Line::Result(r) => println!("  {:<4} {:<28} {:>7} ms  {}", r.status.word(), r.name, r.ms, r.detail),
                    Line::Pvtce => println!("  | {line}"),
                    Line::Other if echo_all => println!("  | {line}"),
                    Line::Other => {}
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

/// The machine-readable result: one JSON object with every test, every reason for failure and every bad
/// console line.
fn write_results(o: &Outcome, path: &Path) -> Result<()> {
    let v = serde_json::json!({
        "passed": !o.failed(),
        "rc": o.console.rc,
        "timed_out": o.timed_out,
        "seconds": (o.secs * 10.0).round() / 10.0,
        "console": o.log.display().to_string(),
        "expected": o.expected,
        "tests": o.console.results,
        "failures": o.failures(),
        "kernel_reports": o.console.bad,
    });
    let s = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
    write(path, &(s + "\n"))
}

#[cfg(test)]
mod tests {
    //! The verdict on console fragments: a passing run, and one fragment per way a run can fail. The
    //! fragments are cut from real console logs of this machine (`fixtures/README.md` says which).
    use super::*;

    fn judge(fragment: &str, expected: &[&str]) -> Vec<String> {
        let mut c = Console::default();
        for l in fragment.lines() {
            c.feed(l);
        }
        c.failures(&expected.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    const GOOD: &str = include_str!("fixtures/good.log");
    const NAMES: &[&str] = &["module-load", "smoke", "cli"];

    /// `GOOD` with cli's result line replaced by `with`.
    fn good_with_cli(with: &str) -> String {
        let cli = GOOD.lines().find(|l| l.starts_with("PVTCE-RESULT cli pass ")).expect("good.log has cli's result");
        GOOD.replace(cli, with)
    }

    #[test]
    fn a_clean_run_passes() {
        assert_eq!(judge(GOOD, NAMES), Vec::<String>::new());
    }

    #[test]
    fn a_missing_result_fails() {
        let why = judge(include_str!("fixtures/missing-result.log"), NAMES);
        assert!(why.iter().any(|w| w.starts_with("cli: requested, but it printed no PVTCE-RESULT")), "{why:?}");
    }

    #[test]
    fn an_aborted_binary_fails() {
        let why = judge(include_str!("fixtures/abort.log"), &["smoke", "abort-probe"]);
        assert!(why.iter().any(|w| w.contains("killed by signal 6 (SIGABRT): rc=134")), "{why:?}");
        assert!(why.iter().any(|w| w.contains("panicked at")), "{why:?}");
        assert!(why.iter().any(|w| w.starts_with("abort-probe: requested")), "{why:?}");
        assert_eq!(why.len(), 3, "{why:?}");
    }

    #[test]
    fn a_nonzero_rc_fails_even_with_every_result_passing() {
        let frag = GOOD.replace("PVTCE-DONE rc=0", "PVTCE-DONE rc=1");
        assert_eq!(judge(&frag, NAMES), vec!["pvtce-vmtests exited with rc=1".to_string()]);
    }

    #[test]
    fn no_done_line_fails() {
        let frag: String = GOOD.lines().filter(|l| !l.contains("PVTCE-DONE")).map(|l| format!("{l}\n")).collect();
        let why = judge(&frag, NAMES);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].starts_with("no `PVTCE-DONE rc=` line"));
    }

    #[test]
    fn malformed_lines_fail() {
        for bad in [
            "PVTCE-RESULT cli passed 12 ok",
            "PVTCE-RESULT cli pass twelve ok",
            "PVTCE-RESULT  pass 12 ok",
            "PVTCE-RESULT cli",
        ] {
            let frag = good_with_cli(bad);
            let why = judge(&frag, NAMES);
            assert!(why.iter().any(|w| w.starts_with("malformed result line")), "{bad}: {why:?}");
        }
        for bad in ["PVTCE-DONE", "PVTCE-DONE rc=", "PVTCE-DONE rc=zero"] {
            let why = judge(&GOOD.replace("PVTCE-DONE rc=0", bad), NAMES);
            assert!(why.iter().any(|w| w.starts_with("malformed result line")), "{bad}: {why:?}");
        }
        let twice = format!("{GOOD}PVTCE-DONE rc=0\n");
        assert!(judge(&twice, NAMES).iter().any(|w| w.contains("a second PVTCE-DONE")));
    }

    #[test]
    fn duplicate_unrequested_and_failed_results_fail() {
        let dup = format!("PVTCE-RESULT cli pass 1 again\n{GOOD}");
        assert!(judge(&dup, NAMES).iter().any(|w| w == "cli: 2 PVTCE-RESULT lines for one test"));
        let why = judge(GOOD, &["module-load", "smoke"]);
        assert_eq!(why, vec!["cli: a result for a test that was not requested".to_string()]);
        let failed = good_with_cli("PVTCE-RESULT cli fail 1337 exit 3");
        assert_eq!(judge(&failed, NAMES), vec!["cli: exit 3".to_string()]);
    }

    #[test]
    fn kernel_reports_fail_and_allowed_lines_do_not() {
        let frag = format!("[   12.5] WARNING: CPU: 0 PID: 1 at virt/kvm/vfio.c:103 kvm_vfio_file_free\n{GOOD}");
        assert!(judge(&frag, NAMES).iter().any(|w| w.contains("virt/kvm/vfio.c:103")));
        let ok = format!("[    0.3] {}\n{GOOD}", ALLOW[0].0);
        assert_eq!(judge(&ok, NAMES), Vec::<String>::new());
    }

    #[test]
    fn expected_names_come_from_the_request() {
        let e = expected("smoke,cli", Path::new("/nonexistent")).unwrap();
        assert_eq!(e, vec!["smoke".to_string(), "cli".to_string()]);
        // `all` asks the binary; a binary that cannot run makes the run an error, not a pass.
        assert!(expected("all", Path::new("/nonexistent/pvtce-vmtests")).is_err());
    }
}
