#!/usr/bin/env bash
# Short fuzz runs for CI, each from its committed corpus: the dispatcher against the reference model, and
# the ioctl argument checks against theirs.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); only stable rustc exists here, so libFuzzer's
# nightly flags are enabled with RUSTC_BOOTSTRAP=1. No sanitizer (the core has no unsafe) and no
# compare tracing: the decoder picks from menus, so speed buys more than value profiling.
set -euo pipefail
cd "$(dirname "$0")"
RUNS="${RUNS:-20000}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# Work on copies so a short run never rewrites the committed corpora. The host tests replay the corpora
# themselves (kmod/core/tests/fuzz_corpus.rs, kmod/core/tests/args.rs).
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in dispatch args; do
    mkdir -p "$scratch/$target"
    cp -r "corpus/$target/." "$scratch/$target/"
    RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --no-trace-compares "$target" "$scratch/$target" -- -runs="$RUNS" -max_len=4096 -print_final_stats=1 2>&1 |
        tail -n 25
    echo "fuzz $target: $RUNS runs, 0 divergences"
done
