#!/usr/bin/env bash
# Short fuzz run for CI: the dispatcher against the reference model, starting from the committed corpus.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); only stable rustc exists here, so libFuzzer's
# nightly flags are enabled with RUSTC_BOOTSTRAP=1. No sanitizer (the core has no unsafe) and no
# compare tracing: the decoder picks from menus, so speed buys more than value profiling.
set -euo pipefail
cd "$(dirname "$0")"
RUNS="${RUNS:-20000}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
mkdir -p corpus/dispatch
# Work on a copy so a short run never rewrites the committed corpus.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -r corpus/dispatch/. "$scratch/"
RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --no-trace-compares dispatch "$scratch" -- -runs="$RUNS" -max_len=4096 -print_final_stats=1 2>&1 |
    tail -n 25
echo "fuzz dispatch: $RUNS runs, 0 divergences"
