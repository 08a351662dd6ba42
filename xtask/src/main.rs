//! pvtce's orchestration tool: `cargo xtask <command>`.
//!
//! - `setup`: install what is missing (Debian packages, rust-src, the ppc64le target, bindgen, busybox).
//! - `kernel`: fetch, patch, configure and build the L1 kernel (cached outside the clone).
//! - `module`, `initramfs`: build pvtce.ko and the L1 initramfs.
//! - `vm [TESTS]`: boot the emulated machine and run the named in-VM tests (default: all).
//! - `demo`: everything above, then the smoke scenario with a readable summary.
//! - `bench`: one boot running the in-VM benchmark (three TCE paths, two windows), plus the native criterion
//!   benchmark of pvtce-core; writes docs/bench/ (see docs/bench/README.md). Never part of `test`.
//! - `test`: host tests (unit, property, fuzz replay, formatting, clippy), clippy on pvtce.ko (`CLIPPY=1`), then
//!   every in-VM test.
//!
//! Each stage prints one line as it starts and one as it ends, with its time.

mod bench;
mod initramfs;
mod kernel;
mod util;
mod vm;

use std::time::Duration;
use util::*;

const USAGE: &str = "usage: cargo xtask <setup|kernel|module|initramfs|vm [TESTS]|demo|bench|test>";

fn setup(st: &mut Stages) -> Result<()> {
    st.run("setup", || {
        run(cmd("bash").arg(repo().join("xtask/scripts/setup.sh")).env("PVTCE_CACHE", cache()))?;
        Ok(String::new())
    })
}

struct Built {
    kernel: kernel::Kernel,
    initrd: std::path::PathBuf,
}

fn build_all(st: &mut Stages) -> Result<Built> {
    let mut k = None;
    st.run("kernel", || {
        let mut note = String::new();
        k = Some(kernel::build(&mut note)?);
        Ok(note)
    })?;
    let k = k.ok_or("kernel stage produced nothing")?;
    println!("kernel: Debian {} -> {} ({})", k.debian, k.release, k.build.join("vmlinux").display());
    write(&out().join("kernel-version.txt"), &format!("{}\n{}\n", k.debian, k.release))?;
    let mut ko = None;
    st.run("module", || {
        ko = Some(kernel::module(&k)?);
        Ok("pvtce.ko".into())
    })?;
    let ko = ko.ok_or("module stage produced nothing")?;
    let mut progs = Vec::new();
    st.run("userspace", || {
        progs = initramfs::userspace()?;
        Ok(format!("{} program(s) for {}", progs.len(), initramfs::TARGET))
    })?;
    let mut initrd = None;
    st.run("initramfs", || {
        let p = initramfs::build(&k, &ko, &progs)?;
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        initrd = Some(p);
        Ok(format!("{} KiB", size / 1024))
    })?;
    Ok(Built { kernel: k, initrd: initrd.ok_or("initramfs stage produced nothing")? })
}

fn timeout() -> Duration {
    let s = std::env::var("PVTCE_VM_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(1800);
    Duration::from_secs(s)
}

fn boot(st: &mut Stages, b: &Built, tests: &str, tag: &str) -> Result<vm::Outcome> {
    let mut outcome = None;
    st.run("vm", || {
        let o = vm::boot(
            &b.kernel.build.join("vmlinux"),
            &b.initrd,
            tests,
            tag,
            timeout(),
            std::env::var_os("PVTCE_VERBOSE").is_some(),
        )?;
        let note = format!(
            "boot to /init {}, {} result(s), console {}",
            o.boot_secs.map(|s| format!("{s:.1}s")).unwrap_or("never".into()),
            o.results.len(),
            o.log.display()
        );
        outcome = Some(o);
        Ok(note)
    })?;
    outcome.ok_or_else(|| "no outcome".into())
}

/// Prints why a run failed and returns the counts line.
fn report(o: &vm::Outcome) -> (usize, usize, usize) {
    let passed = o.results.iter().filter(|r| r.status == "pass").count();
    let failed = o.results.iter().filter(|r| r.status == "fail").count();
    let skipped = o.results.iter().filter(|r| r.status == "skip").count();
    if o.timed_out {
        println!(
            "FAIL: the VM did not finish within {}s (hang?); console log: {}",
            timeout().as_secs(),
            o.log.display()
        );
    } else if !o.done {
        println!("FAIL: the VM stopped before /init finished (crash?); console log: {}", o.log.display());
    }
    for b in &o.bad {
        println!("FAIL: kernel report on the console: {b}");
    }
    if !o.bad.is_empty() {
        println!("      (full console log: {})", o.log.display());
    }
    for r in o.results.iter().filter(|r| r.status == "fail") {
        println!("FAIL: {}: {}", r.name, r.detail);
    }
    (passed, failed, skipped)
}

fn host_tests(st: &mut Stages) -> Result<()> {
    st.run("fmt", || {
        run(cmd("cargo").current_dir(repo()).args(["fmt", "--all", "--", "--check"]))?;
        Ok(String::new())
    })?;
    st.run("clippy", || {
        run(cmd("cargo").current_dir(repo()).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ]))?;
        Ok(String::new())
    })?;
    st.run("host-tests", || {
        run(cmd("cargo").current_dir(repo()).args(["test", "--workspace", "--exclude", "pvtce-vmtests"]))?;
        Ok(String::new())
    })?;
    // The same unit tests built for ppc64le, run under qemu-user: ioctl numbers and layouts per architecture.
    st.run("ppc64le-unit", || {
        run(cmd("cargo").current_dir(repo()).args([
            "test",
            "--target",
            initramfs::TARGET,
            "-p",
            "pvtce-uapi",
            "-p",
            "pvtce-vmm-glue",
        ]))?;
        Ok("under qemu-ppc64le".into())
    })?;
    let short = repo().join("fuzz/run-short.sh");
    if short.exists() {
        st.run("fuzz-short", || {
            run(cmd("bash").arg(&short).current_dir(repo()))?;
            Ok(String::new())
        })?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut st = Stages::new();
    let r = real_main(&args, &mut st);
    println!("{}", st.summary());
    if let Err(e) = r {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}

fn real_main(args: &[String], st: &mut Stages) -> Result<()> {
    let Some(cmd0) = args.first() else {
        return Err(USAGE.into());
    };
    match cmd0.as_str() {
        "setup" => setup(st),
        "kernel" => {
            setup(st)?;
            st.run("kernel", || {
                let mut note = String::new();
                kernel::build(&mut note)?;
                Ok(note)
            })
        }
        "module" | "initramfs" => {
            setup(st)?;
            build_all(st).map(|_| ())
        }
        "vm" => {
            setup(st)?;
            let b = build_all(st)?;
            let tests = if args.len() > 1 { args[1..].join(",") } else { "all".into() };
            let o = boot(st, &b, &tests, "vm")?;
            let (p, f, s) = report(&o);
            println!("vm: {p} passed, {f} failed, {s} skipped");
            if o.failed() {
                return Err("in-VM run failed".into());
            }
            Ok(())
        }
        "demo" => {
            setup(st)?;
            let b = build_all(st)?;
            let o = boot(st, &b, "module-load,smoke", "demo")?;
            let (p, f, s) = report(&o);
            println!();
            println!("pvtce demo on {} (Debian {}):", b.kernel.release, b.kernel.debian);
            for r in &o.results {
                println!("  [{}] {}: {}", r.status, r.name, r.detail);
            }
            println!("demo: {p} passed, {f} failed, {s} skipped");
            if o.failed() || p == 0 {
                return Err("demo failed".into());
            }
            Ok(())
        }
        "bench" => {
            setup(st)?;
            let b = build_all(st)?;
            // L1 vCPUs for the scaling figures (PVTCE_SMP, default 4 here; the tests keep 2) and the repetitions
            // (PVTCE_BENCH_REPS, default 5) reach the probe through the kernel command line.
            let smp = std::env::var("PVTCE_SMP").unwrap_or_else(|_| "4".into());
            let reps = std::env::var("PVTCE_BENCH_REPS").unwrap_or_else(|_| "5".into());
            let probe = format!(
                "pvtce_probe=reps={reps}{}",
                std::env::var("PVTCE_BENCH_PROBE").map(|p| format!(",{p}")).unwrap_or_default()
            );
            let append = match std::env::var("PVTCE_APPEND") {
                Ok(a) => format!("{a} {probe}"),
                Err(_) => probe,
            };
            // Single-threaded here: nothing else reads the environment concurrently.
            std::env::set_var("PVTCE_SMP", &smp);
            std::env::set_var("PVTCE_APPEND", &append);
            let o = boot(st, &b, "bench", "bench")?;
            let (_, f, _) = report(&o);
            if o.failed() || f > 0 {
                return Err("the in-VM benchmark run failed".into());
            }
            let mut core = String::new();
            st.run("core-bench", || {
                core = bench::core_bench();
                Ok("criterion on pvtce-core".into())
            })?;
            let mut summary = String::new();
            st.run("bench-report", || {
                summary = bench::report(&o.log, &core)?;
                Ok("docs/bench/".into())
            })?;
            println!("{summary}");
            Ok(())
        }
        // Re-renders docs/bench/ from a saved console log of a bench run (no VM, no criterion run).
        "bench-report" => {
            let log = args.get(1).ok_or("usage: cargo xtask bench-report CONSOLE_LOG [CORE_REPORT_TXT]")?;
            let core = match args.get(2) {
                Some(p) => util::read(std::path::Path::new(p))?,
                None => "not run (bench-report)".into(),
            };
            println!("{}", bench::report(std::path::Path::new(log), &core)?);
            Ok(())
        }
        "test" => {
            setup(st)?;
            host_tests(st)?;
            let b = build_all(st)?;
            st.run("module-clippy", || kernel::module_clippy(&b.kernel).map(|()| "CLIPPY=1: no warnings".into()))?;
            let o = boot(st, &b, "all", "test")?;
            let (p, f, s) = report(&o);
            println!("{}", st.summary());
            let f = f + usize::from(o.failed() && f == 0);
            println!("vm-tests: {p} passed, {f} failed, {s} skipped");
            if o.failed() || p == 0 {
                return Err("in-VM tests failed".into());
            }
            Ok(())
        }
        _ => Err(USAGE.into()),
    }
}
