//! The checked-in powerpc KVM bindings are what bindgen makes of the built kernel's headers today:
//! regenerate and compare (`gen-kvm.sh --check`).
//!
//! It needs the patched kernel tree that `cargo xtask kernel` leaves in the cache, which a fresh clone's host
//! tests run before, so it is ignored by default and run after the kernel build:
//! `cargo test -p pvtce-vmm-glue --test kvm_bindgen -- --ignored`.

use std::process::Command;

#[test]
#[ignore = "needs the built kernel tree: run after `cargo xtask kernel`, with --ignored"]
fn kvm_bindings_match_the_kernel_headers() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash").arg(format!("{dir}/gen-kvm.sh")).arg("--check").output().expect("run gen-kvm.sh");
    assert!(
        out.status.success(),
        "src/kvm_bindings.rs differs from bindgen's output for the kernel's linux/kvm.h (or no tree):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
