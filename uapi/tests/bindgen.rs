//! The checked-in bindings are what bindgen makes of the header today: regenerate and compare.

use std::process::Command;

#[test]
fn bindings_match_the_header() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let have_bindgen = Command::new("bindgen").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have_bindgen {
        // `cargo xtask setup` installs bindgen; CI always has it. Fail loudly rather than pass silently.
        panic!("bindgen is not installed: run `cargo xtask setup`");
    }
    let out = Command::new("bash").arg(format!("{dir}/gen.sh")).arg("--check").output().expect("run gen.sh");
    assert!(
        out.status.success(),
        "src/bindings.rs differs from bindgen's output for include/linux/pvtce.h:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
