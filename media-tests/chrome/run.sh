#!/usr/bin/env bash
# Chromium in network namespaces (media-tests/chrome): installs what is missing (nftables, iproute2, Chromium via
# scripts/install-browser-deps.sh, this folder's npm packages), builds `courier` if COURIER_BIN is not given, then runs
# suite.mjs, Chrome under loss, with the arguments given (e.g. `--ci`, or `--cases loss-5,burst-10 --modes
# direct,relay`), or with `reach` first reach.mjs, Chromium behind firewalls (e.g. `reach --cases ice-tcp`).
# Needs root: the suite creates network namespaces, nftables rules and tc qdiscs (and removes them on exit).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ "$(id -u)" -ne 0 ]; then
    echo "chrome-loss: needs root (network namespaces, nftables, tc)" >&2
    exit 2
fi
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v tc >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
fi
if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM_BIN:-}" ]; then
    bash "$repo/scripts/install-browser-deps.sh"
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
    (cd "$here" && npm ci --no-audit --no-fund)
fi
if [ -z "${COURIER_BIN:-}" ]; then
    (cd "$repo" && cargo build --locked --bin courier)
    target="${CARGO_TARGET_DIR:-$repo/target}"
    export COURIER_BIN="$target/debug/courier"
fi
suite=suite.mjs
if [ "${1:-}" = reach ]; then
    shift
    suite=reach.mjs
fi
exec node "$here/$suite" "$@"
