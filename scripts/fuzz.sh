#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets: the signaling message decoder, the access-token parser, the RED payload parser, the
# TURN/STUN parser and server) for a while,
# starting from the seeds in fuzz/seeds/<target>. Installs cargo-fuzz when it is missing.
#
# Usage: scripts/fuzz.sh [seconds per target, default 20]
#
# Works on a stable toolchain: `--sanitizer none` (AddressSanitizer needs nightly; safe Rust gains little from
# it), and RUSTC_BOOTSTRAP=1 because cargo-fuzz looks for a nightly compiler (or that variable) before it builds.
# The first build takes minutes (every dependency, instrumented); later runs reuse it. New corpus entries go to a scratch
# directory, so the seeds in git do not change; a crash leaves its input in fuzz/artifacts/<target>/ and fails the
# script. Reproduce one with: scripts/fuzz.sh run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# The fuzz build is instrumented, so it shares no artifacts with the normal one; keep it apart.
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"

if [ "${1:-}" = "run" ]; then
    shift
    exec cargo fuzz run --sanitizer none --target-dir "$TARGET_DIR" "$@"
fi

SECONDS_EACH="${1:-20}"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
for target in $(cargo fuzz list); do
    echo "== fuzz $target for ${SECONDS_EACH}s"
    mkdir -p "$SCRATCH/$target"
    cargo fuzz run --sanitizer none --target-dir "$TARGET_DIR" "$target" "$SCRATCH/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$SECONDS_EACH" -max_len=16384 -print_final_stats=1
done
