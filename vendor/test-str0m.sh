#!/usr/bin/env bash
# Runs the vendored str0m's own unit tests (`cargo test --lib`), the tests of Courier's patches among them. The crate
# is outside the workspace (see vendor/README.md), so it has its own lock file and target directory.
# Usage: vendor/test-str0m.sh [test name filter]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/str0m"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../../target}/vendor-str0m"
exec cargo test --locked --lib -- "$@"
