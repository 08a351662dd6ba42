//! pvtce-vmtests: the tests that run inside the emulated POWER L1 guest, started by /init.
//!
//! Usage: `pvtce-vmtests [all | NAME...]` or `pvtce-vmtests --list` (the names `all` runs). Each test prints
//! one line the host parses: `PVTCE-RESULT <name> <pass|fail|skip> <ms> <detail>`; the host fails the run if
//! a requested test prints none, and on the binary's exit status (`xtask/src/vm.rs`).

mod batch;
mod bench;
mod cli;
mod conformance;
mod ddw;
mod fallback;
mod faults;
mod fpregs;
mod huge;
mod isolation;
mod leak;
mod pvtce;
mod race;
mod realguest;
mod rig;
mod smoke;
mod teardown;
mod trace;

use std::time::Instant;

type TestFn = fn() -> Result<String, String>;

/// Every in-VM test, in run order.
const TESTS: &[(&str, TestFn)] = &[
    ("module-load", smoke::module_load),
    ("smoke", smoke::smoke),
    ("kvm-run-fp", fpregs::kvm_run_keeps_fp),
    ("pvtce-4k", pvtce::pvtce_4k),
    ("pvtce-64k", pvtce::pvtce_64k),
    ("early-entry", pvtce::early_entry),
    ("linked-16m", huge::linked_16m),
    ("ddw-64k", ddw::ddw_64k),
    ("ddw-4k", ddw::ddw_4k),
    ("rtas-errors", ddw::rtas_errors),
    ("fallback", fallback::fallback),
    ("ddw-64k-fallback", ddw::ddw_64k_fallback),
    ("ddw-4k-fallback", ddw::ddw_4k_fallback),
    ("ddw-64k-pvtce", ddw::ddw_64k_pvtce),
    ("ddw-4k-pvtce", ddw::ddw_4k_pvtce),
    ("fallback-pvtce", fallback::fallback_pvtce),
    ("cli", cli::cli),
    ("trace-events", trace::trace_events),
    ("fault-sigkill", faults::sigkill),
    ("fault-vm-destroy", faults::vm_destroy),
    ("fault-unbind", faults::unbind),
    ("race-unregister", race::race_unregister),
    ("race-vfio-clear", race::race_vfio_clear),
    ("teardown-load", teardown::teardown_load),
    ("conformance", conformance::conformance),
    ("batch-fault", batch::batch_fault),
    ("isolation-dev", isolation::dev),
    ("isolation-lookup", isolation::lookup),
    ("isolation-memory", isolation::memory),
    ("isolation-vms", isolation::vms),
];

/// Run only when named: `conf-probe` runs one conformance path alone (`PVTCE_APPEND=pvtce_probe=builtin:30`)
/// for diagnosis; `bench` is `cargo xtask bench`'s measurement run (docs/bench/README.md); the `real-*`
/// scenarios need the real-guest boot (the Debian overlay and L0's NVMe), which xtask starts for them
/// (`real-bench` is `cargo xtask bench real`'s run of them); `indirect-leak` needs patch 0010
/// (`PVTCE_SERIES=production`: it fails on the comparison kernel, which is what it shows);
/// `abort-probe` aborts the binary on purpose, to show that the host fails such a run
/// (`cargo xtask vm smoke abort-probe` must fail: docs/machine.md).
const PROBES: &[(&str, TestFn)] = &[
    ("conf-probe", conformance::probe),
    ("bench", bench::bench),
    ("real-pvtce-ddw", realguest::pvtce_ddw),
    ("real-pvtce-noddw", realguest::pvtce_noddw),
    ("real-builtin-ddw", realguest::builtin_ddw),
    ("real-builtin-noddw", realguest::builtin_noddw),
    ("real-userspace-ddw", realguest::userspace_ddw),
    ("real-userspace-noddw", realguest::userspace_noddw),
    ("real-options", realguest::options),
    ("real-bench", realguest::bench),
    ("indirect-leak", leak::indirect_leak),
    ("abort-probe", abort_probe),
];

/// Panics, which `panic = "abort"` turns into SIGABRT: the tests after it never run.
fn abort_probe() -> Result<String, String> {
    panic!("abort-probe: a deliberate panic (the host must fail this run)");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A conformance child: one path's sequences in a process of its own.
    if args.first().map(String::as_str) == Some("__conformance-path") {
        let r = conformance::child(args.get(1).map(String::as_str).unwrap_or(""));
        if let Err(e) = &r {
            eprintln!("{e}");
        }
        std::process::exit(i32::from(r.is_err()));
    }
    // A piece of the benchmark in a VMM process of its own.
    if args.first().map(String::as_str) == Some("__bench") {
        let r = bench::child(&args[1..]);
        if let Err(e) = &r {
            eprintln!("{e}");
        }
        std::process::exit(i32::from(r.is_err()));
    }
    // A child VMM for the fault tests.
    if args.first().map(String::as_str) == Some("__fault-child") {
        let r = faults::child(args.get(1).map(String::as_str).unwrap_or(""));
        if let Err(e) = &r {
            eprintln!("{e}");
        }
        std::process::exit(i32::from(r.is_err()));
    }
    // The isolation tests' other processes: VM A's VMM, the third process with A's table fd, the opener.
    let iso = match args.first().map(String::as_str) {
        Some("__isolation-a") => Some(isolation::child_a()),
        Some("__isolation-third") => Some(isolation::child_third(&args[1..])),
        Some("__leak-child") => Some(leak::child()),
        Some("__open-pvtce") => Some(isolation::child_open(args.get(1).map(String::as_str))),
        _ => None,
    };
    if let Some(r) = iso {
        if let Err(e) = &r {
            eprintln!("{e}");
        }
        std::process::exit(i32::from(r.is_err()));
    }
    // What `all` runs, one name a line: the host's list of results it must see.
    if args.first().map(String::as_str) == Some("--list") {
        for (name, _) in TESTS {
            println!("{name}");
        }
        return;
    }
    let all = args.is_empty() || args.iter().any(|a| a == "all");
    let mut failed = 0;
    for want in &args {
        if want != "all" && !TESTS.iter().chain(PROBES).any(|(n, _)| n == want) {
            println!("PVTCE-RESULT {want} fail 0 no such test");
            failed += 1;
        }
    }
    let probes = PROBES.iter().filter(|(n, _)| args.iter().any(|a| a == n));
    for (name, f) in TESTS.iter().filter(|_| true).chain(probes) {
        let probe = PROBES.iter().any(|(n, _)| n == name);
        if !probe && !all && !args.iter().any(|a| a == name) {
            continue;
        }
        let t = Instant::now();
        let r = f();
        let ms = t.elapsed().as_millis();
        match r {
            Ok(detail) => println!("PVTCE-RESULT {name} pass {ms} {detail}"),
            Err(e) => {
                failed += 1;
                println!("PVTCE-RESULT {name} fail {ms} {e}");
            }
        }
    }
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
