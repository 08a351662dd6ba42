//! The ioctl argument checks against their model (tests/common/args.rs): the committed `args` fuzz corpus
//! replayed, and the comparison shown to catch a broken check.

mod common;

use common::args::{check, Impl, CORE};
use pvtce_core::types::{PageShift, WindowGeometry};

fn corpus() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/args");
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("args corpus").map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn args_corpus_replays_without_divergence() {
    let inputs = corpus();
    assert!(inputs.len() >= 16, "corpus too small: {}", inputs.len());
    for (i, data) in inputs.iter().enumerate() {
        if let Err(e) = check(&CORE, data) {
            panic!("input {i}: {e}");
        }
    }
}

/// Each broken variant must be caught by some input: the comparison can fail.
#[test]
fn a_broken_check_diverges_on_the_corpus() {
    fn head_ignores_flags(argsz: u32, _: u32, size: usize) -> bool {
        argsz as usize >= size
    }
    fn create_accepts_overflow(shift: u32, offset: u64, size: u64) -> Option<WindowGeometry> {
        // Makes some window where the real check refuses one (offset + size wraps: Linux's C pre-check lets
        // that through, so pvtce's own check is the one that counts).
        let s = PageShift::new(shift)?;
        WindowGeometry::new(s, offset, size).ok().or_else(|| WindowGeometry::new(s, 0, 1).ok())
    }
    fn pick_first(
        _: &WindowGeometry,
        t: &[(pvtce_core::host::HostTableId, pvtce_core::host::HostGeometry)],
    ) -> Result<pvtce_core::host::HostTableId, pvtce_core::host::LinkError> {
        t.first().map(|(id, _)| *id).ok_or(pvtce_core::host::LinkError::UnknownTable)
    }
    let broken = [
        ("head ignores flags", Impl { head: head_ignores_flags, ..CORE }),
        ("create accepts a wrapping window", Impl { create: create_accepts_overflow, ..CORE }),
        ("link takes the first table", Impl { pick: pick_first, ..CORE }),
    ];
    // The corpus keeps inputs for coverage, not for every value class: add 4096 pseudo-random ones.
    let mut inputs = corpus();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..4096 {
        let bytes: Vec<u8> = (0..64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        inputs.push(bytes);
    }
    for (what, imp) in &broken {
        assert!(inputs.iter().any(|d| check(imp, d).is_err()), "{what}: no corpus input catches it");
    }
}
