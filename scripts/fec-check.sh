#!/usr/bin/env bash
# Runs web-demo/tests/fec.test.mjs (a Chrome subscriber losing 10 % makes the Chrome publisher send Opus FEC) in a
# network namespace of its own with only `lo`, where it may add nftables rules without touching the host's.
# Needs root (unshare, nft), Chromium and a build (target/debug/courier). Usage: scripts/fec-check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../web-demo"
exec unshare --net -- bash -c 'ip link set lo up && COURIER_NETNS=1 node --test tests/fec.test.mjs'
