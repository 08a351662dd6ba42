//! pvtce's orchestration tool: `cargo xtask <command>`.
//!
//! - `setup`: install what is missing (Debian packages, rust-src, the ppc64le target, bindgen, busybox).
//! - `kernel`: fetch, patch, configure and build the L1 kernel (cached outside the clone).
//! - `module`, `initramfs`: build pvtce.ko and the L1 initramfs.
//! - `vm [TESTS]`: boot the emulated machine and run the named in-VM tests (default: all).
//! - `demo`: everything above, then the smoke scenario with a readable summary.
//! - `bench`: one boot running the in-VM benchmark (three TCE paths, two windows), plus the native criterion
//!   benchmark of pvtce-core; writes docs/bench/ (see docs/bench/README.md). Never part of `test`.
//!   `bench real`: the real guest's table (xtask/src/bench_real.rs) into docs/bench/results.md.
//! - `test`: host tests (unit, property, fuzz replay, formatting, clippy), clippy on pvtce.ko (`CLIPPY=1`), then
//!   every in-VM test.
//!
//! Each stage prints one line as it starts and one as it ends, with its time.

mod bench;
mod bench_real;
mod initramfs;
mod kernel;
mod realguest;
mod util;
mod vm;

use std::time::Duration;
use util::*;

const USAGE: &str = "usage: cargo xtask <setup|kernel|module|initramfs|vm [TESTS]|demo|bench [real]|test>";

fn setup(st: &mut Stages) -> Result<()> {
    st.run("setup", || {
        run(cmd("bash").arg(repo().join("xtask/scripts/setup.sh")).env("PVTCE_CACHE", cache()))?;
        Ok(String::new())
    })?;
    st.run("realguest-fetch", || Ok(realguest::fetch()?.versions.join(", ")))
}

struct Built {
    kernel: kernel::Kernel,
    initrd: std::path::PathBuf,
    /// The ppc64le `pvtce-vmtests` binary in the initramfs (asked for its `--list`).
    vmtests: std::path::PathBuf,
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
    let vmtests = progs
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "pvtce-vmtests"))
        .ok_or("no pvtce-vmtests among the in-VM programs")?
        .clone();
    Ok(Built { kernel: k, initrd: initrd.ok_or("initramfs stage produced nothing")?, vmtests })
}

fn timeout() -> Duration {
    let s = std::env::var("PVTCE_VM_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(1800);
    Duration::from_secs(s)
}

fn boot(st: &mut Stages, b: &Built, tests: &str, tag: &str) -> Result<vm::Outcome> {
    boot_initrd(st, b, &b.initrd, tests, tag)
}

/// The real-guest boot (issue 10): the tests' initramfs plus the Debian overlay, and L0's NVMe.
fn boot_real(st: &mut Stages, b: &Built, tests: &str, tag: &str) -> Result<(vm::Outcome, realguest::Debian)> {
    let mut prep = None;
    st.run("realguest", || {
        let deb = realguest::fetch()?;
        let (initrd, size) = realguest::initrd(&deb, &b.initrd)?;
        let image = realguest::nvme_image()?;
        let note = format!("{}; initrd {} MiB", deb.versions.join(", "), size >> 20);
        prep = Some((deb, initrd, image));
        Ok(note)
    })?;
    let (deb, initrd, image) = prep.ok_or("realguest stage produced nothing")?;
    let mut extra = realguest::qemu_args(&image).join(" ");
    if let Ok(e) = std::env::var("PVTCE_QEMU_EXTRA") {
        extra = format!("{e} {extra}");
    }
    // Single-threaded here: nothing else reads the environment concurrently.
    std::env::set_var("PVTCE_QEMU_EXTRA", &extra);
    let o = boot_initrd(st, b, &initrd, tests, tag);
    std::env::remove_var("PVTCE_QEMU_EXTRA");
    Ok((o?, deb))
}

fn boot_initrd(st: &mut Stages, b: &Built, initrd: &std::path::Path, tests: &str, tag: &str) -> Result<vm::Outcome> {
    let mut outcome = None;
    st.run("vm", || {
        let expected = vm::expected(tests, &b.vmtests)?;
        let o = vm::boot(vm::Run {
            vmlinux: &b.kernel.build.join("vmlinux"),
            initrd,
            tests,
            expected,
            tag,
            timeout: timeout(),
            echo_all: std::env::var_os("PVTCE_VERBOSE").is_some(),
        })?;
        let note = format!(
            "boot to /init {}, {} result(s), console {}",
            o.boot_secs.map(|s| format!("{s:.1}s")).unwrap_or("never".into()),
            o.results().len(),
            o.log.display()
        );
        outcome = Some(o);
        Ok(note)
    })?;
    outcome.ok_or_else(|| "no outcome".into())
}

/// Prints every reason the run failed and returns (passed, failed, skipped); `failed` counts a run that failed
/// for a reason no test reported (a crash, a missing result, a kernel report) as one more.
fn report(o: &vm::Outcome) -> (usize, usize, usize) {
    let count = |s| o.results().iter().filter(|r| r.status == s).count();
    let (passed, failed, skipped) = (count(vm::Status::Pass), count(vm::Status::Fail), count(vm::Status::Skip));
    let why = o.failures();
    for w in &why {
        println!("FAIL: {w}");
    }
    if !why.is_empty() {
        println!("      (full console log: {})", o.log.display());
    }
    (passed, failed + usize::from(!why.is_empty() && failed == 0), skipped)
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
    // The unit tests of the crates that run in L1, built for ppc64le and run under qemu-user: ioctl numbers
    // and struct layouts as powerpc64 defines them (they differ from x86_64's and fail if computed the
    // generic way), the table views and errnos of vmm-glue, the L2 payload and its assembler
    // (tests/support), the in-VM binary's own logic (conformance
    // coverage). Not covered here: any real KVM or VFIO ioctl (qemu-user has no such devices), which the
    // in-VM tests exercise.
    st.run("ppc64le-unit", || {
        run(cmd("cargo").current_dir(repo()).args([
            "test",
            "--target",
            initramfs::TARGET,
            "-p",
            "pvtce-uapi",
            "-p",
            "pvtce-vmm-glue",
            "-p",
            "pvtce-test-support",
            "-p",
            "pvtce-vmtests",
        ]))?;
        Ok("under qemu-ppc64le: powerpc64 ioctl numbers and layouts, vmm-glue, payload/assembler and in-VM-binary logic; \
            no real KVM/VFIO ioctl (that is the vm stage)"
            .into())
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
            let o = if args[1..].iter().any(|a| a.starts_with("real-")) {
                boot_real(st, &b, &tests, "vm")?.0
            } else {
                boot(st, &b, &tests, "vm")?
            };
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
            let (o, deb) = boot_real(st, &b, realguest::DEMO_TESTS, "demo")?;
            let (p, f, s) = report(&o);
            println!();
            println!("{}", realguest::summary(&deb, &b.kernel.release, &o));
            println!("demo: {p} passed, {f} failed, {s} skipped");
            if o.failed() || p == 0 || f > 0 {
                return Err("demo failed".into());
            }
            Ok(())
        }
        // The real guest's table (xtask/src/bench_real.rs): as many repetitions of the six scenarios as fit in
        // PVTCE_RG_BUDGET seconds (default 900), 2 to PVTCE_RG_REPS (default 5).
        "bench" if args.get(1).map(String::as_str) == Some("real") => {
            setup(st)?;
            let b = build_all(st)?;
            let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.into());
            let rg = format!(
                "pvtce_rg_reps={} pvtce_rg_budget={}",
                env("PVTCE_RG_REPS", "5"),
                env("PVTCE_RG_BUDGET", "900")
            );
            let append = match std::env::var("PVTCE_APPEND") {
                Ok(a) => format!("{a} {rg}"),
                Err(_) => rg,
            };
            // Single-threaded here: nothing else reads the environment concurrently.
            std::env::set_var("PVTCE_APPEND", &append);
            let (o, _) = boot_real(st, &b, "real-bench", "bench-real")?;
            let (_, f, _) = report(&o);
            if o.failed() || f > 0 {
                return Err("the real-guest benchmark run failed".into());
            }
            let mut summary = String::new();
            st.run("bench-report", || {
                summary = bench_real::report(&o.log)?;
                Ok("docs/bench/".into())
            })?;
            println!("{summary}");
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
        "bench-report" if args.get(1).map(String::as_str) == Some("real") => {
            let log = args.get(2).ok_or("usage: cargo xtask bench-report real CONSOLE_LOG")?;
            println!("{}", bench_real::report(std::path::Path::new(log))?);
            Ok(())
        }
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
            // The checked-in powerpc KVM bindings against bindgen's output for this kernel's headers (it needs
            // the patched tree the kernel stage made, so it runs here rather than with the host tests).
            st.run("kvm-bindings", || {
                let tree = cache().join("ktree").join(b.kernel.build.file_name().ok_or("bad kernel build path")?);
                run(cmd("cargo").current_dir(repo()).env("PVTCE_KTREE", &tree).args([
                    "test",
                    "-q",
                    "-p",
                    "pvtce-vmm-glue",
                    "--test",
                    "kvm_bindgen",
                    "--",
                    "--ignored",
                ]))?;
                Ok("vmm-glue/src/kvm_bindings.rs matches the kernel's linux/kvm.h".into())
            })?;
            let o = boot(st, &b, "all", "test")?;
            let (p, f, s) = report(&o);
            // The real client (issue 10): a second boot, every path and DMA mode.
            let (ro, _) = boot_real(st, &b, realguest::TEST_TESTS, "test-real")?;
            let (rp, rf, rs) = report(&ro);
            println!("{}", st.summary());
            println!("the tests' boot: {p} passed, {f} failed, {s} skipped");
            println!("the real-guest boot: {rp} passed, {rf} failed, {rs} skipped");
            // One closing line for both boots (CI reads the last one).
            println!("vm-tests: {} passed, {} failed, {} skipped", p + rp, f + rf, s + rs);
            if o.failed() || p == 0 || ro.failed() || rp == 0 {
                return Err("in-VM tests failed".into());
            }
            Ok(())
        }
        _ => Err(USAGE.into()),
    }
}
