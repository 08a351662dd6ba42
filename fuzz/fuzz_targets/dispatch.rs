//! Fuzzes the hypercall dispatcher, links and DDW policy against the reference model: the input bytes
//! decode to an operation sequence (the same decoder as the property tests), each operation runs on the
//! core and on the model, and any difference panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../kmod/core/tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = common::harness::run_bytes(data, 64) {
        panic!("core and model diverge: {e}");
    }
});
