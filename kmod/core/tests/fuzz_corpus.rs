//! Replays the committed fuzz corpus (`fuzz/corpus/dispatch`) through the same core-vs-model comparison
//! as the fuzz target, without libFuzzer, so plain `cargo test` keeps every input the fuzzer found
//! interesting.

mod common;

#[test]
fn fuzz_corpus_replays_without_divergence() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/dispatch");
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("fuzz corpus").map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 16, "corpus too small: {}", files.len());
    for path in &files {
        let data = std::fs::read(path).unwrap();
        // Same operation limit as fuzz/fuzz_targets/dispatch.rs.
        if let Err(e) = common::harness::run_bytes(&data, 64) {
            panic!("{}: {e}", path.display());
        }
    }
    println!("replayed {} corpus inputs, 0 divergences", files.len());
}
