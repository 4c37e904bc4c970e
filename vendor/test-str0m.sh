#!/usr/bin/env bash
# Runs the vendored crates' own unit tests (`cargo test --lib`): str0m's, its ICE crate `is`'s and its DTLS crate
# `dimpl`'s, the tests of Courier's patches among them. They are outside the workspace (see vendor/README.md), so
# each has its own lock file and target directory.
# Usage: vendor/test-str0m.sh [test name filter]
set -euo pipefail
vendor="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target="${CARGO_TARGET_DIR:-$vendor/../target}"
(cd "$vendor/is" && CARGO_TARGET_DIR="$target/vendor-is" cargo test --locked --lib -- "$@")
(cd "$vendor/dimpl" && CARGO_TARGET_DIR="$target/vendor-dimpl" cargo test --locked --lib -- "$@")
cd "$vendor/str0m"
CARGO_TARGET_DIR="$target/vendor-str0m" exec cargo test --locked --lib -- "$@"
