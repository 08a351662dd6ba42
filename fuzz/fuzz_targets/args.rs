//! Fuzzes the ioctl argument checks (the argsz/flags head, KVM_CREATE_SPAPR_TCE_64's geometry, the link's
//! choice of host table) against a model in 128-bit arithmetic (kmod/core/tests/common/args.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../kmod/core/tests/common/args.rs"]
mod args;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = args::check(&args::CORE, data) {
        panic!("ioctl argument checks and model diverge: {e}");
    }
});
