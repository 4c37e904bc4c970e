#!/usr/bin/env bash
# Runs every test of Courier: the Rust workspace (unit tests, the signaling integration tests, the PostgreSQL chat
# store's tests, the cluster tests (three courier processes on loopback sharing a real Redis and PostgreSQL, both
# started here by scripts/redis.sh and scripts/postgres.sh; and, as root, each in a network namespace of its own:
# signaling/tests/cluster_netns.rs, reaching both through relays in the test), and the media end-to-end tests with
# real WebRTC clients), the browser smoke test in real headless Chromium, the Chrome-under-loss
# check (media-tests/chrome, as root: two Chromium pages in network namespaces relayed through Courier under 2 % and
# 5 % loss; and a room spanning two nodes, the subscriber's layer following its link), the interop matrix (interop/run.sh, as root: Chromium, webrtc-rs, Pion, aiortc and GStreamer publish
# and subscribe in one room for 60 s), Chromium behind firewalls (media-tests/chrome reach.mjs, as root: ICE-TCP with
# UDP dropped, the built-in TURN over UDP, TCP and TLS, WHIP from a page and from GStreamer, WHEP, over https/wss),
# and WHIP from GStreamer to a native subscriber. Fuzzing runs on demand, not here (scripts/fuzz.sh [seconds]).
# Installs what a fresh Debian machine lacks first (cmake for libopus, Chromium, the web demo's npm packages).
# Every test binds 127.0.0.1 with ephemeral ports, or addresses inside network namespaces it creates.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
python3 -c 'import yaml' >/dev/null 2>&1 || missing+=(python3-yaml)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}"
fi
bash scripts/install-browser-deps.sh

# One build from scratch: incremental artifacts would only take disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
echo "== deploy kit (YAML parses, manifests as docs/deploy.md says; the TOML side is signaling/tests/deploy_configs.rs)"
python3 deploy/check.py
echo "== cargo build"
cargo build --workspace --all-targets --locked
# The build leaves gigabytes of dirty pages; fsync-heavy tests (the chat store syncs every commit) would otherwise stall
# behind their writeback.
sync
echo "== PostgreSQL and Redis for the chat store and cluster tests"
PG_DIR=$(mktemp -d)
REDIS_DIR=$(mktemp -d)
trap 'bash scripts/redis.sh stop "$REDIS_DIR" || true; rm -rf "$REDIS_DIR"
      bash scripts/postgres.sh stop "$PG_DIR" || true; rm -rf "$PG_DIR"' EXIT
COURIER_TEST_POSTGRES_URL=$(bash scripts/postgres.sh start "$PG_DIR")
# The cluster tests stop this server for a while (scripts/postgres.sh stop, then resume "$COURIER_TEST_POSTGRES_DIR").
COURIER_TEST_POSTGRES_DIR=$PG_DIR
export COURIER_TEST_POSTGRES_URL COURIER_TEST_POSTGRES_DIR
# The cluster tests restart this Redis (scripts/redis.sh restart "$COURIER_TEST_REDIS_DIR": same port, emptied).
COURIER_TEST_REDIS_URL=$(bash scripts/redis.sh start "$REDIS_DIR")
COURIER_TEST_REDIS_DIR=$REDIS_DIR
export COURIER_TEST_REDIS_URL COURIER_TEST_REDIS_DIR
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
echo "== web-demo/protocol.d.ts is what courier-protocol's types generate"
cargo test -p courier-protocol --features ts --locked --test dts
echo "== the vendored str0m's own unit tests (Courier's patches among them)"
bash vendor/test-str0m.sh
echo "== browser tests (headless Chromium)"
export COURIER_BIN="$PWD/target/debug/courier"
export MEDIA_TESTS_BIN="$PWD/target/debug/media-tests"
(cd web-demo && npm test)
echo "== Chrome under loss (media-tests/chrome --ci: 2 % and 5 % random loss, relayed, one VP8 encoding)"
(cd media-tests/chrome && node --test measure.test.mjs)
if [ "$(id -u)" -eq 0 ]; then
    bash media-tests/chrome/run.sh --ci
else
    echo "skipped: needs root (network namespaces, nftables)"
fi
echo "== a room spanning two nodes in Chromium (media-tests/chrome --modes span-simulcast: the subscriber's node relays"
echo "   the publisher's three layers from the other node; its layer goes down with its link and back up)"
if [ "$(id -u)" -eq 0 ]; then
    bash media-tests/chrome/run.sh --ci --cases capacity-step --modes span-simulcast --measure 45
else
    echo "skipped: needs root (network namespaces, nftables)"
fi
echo "== reachable from real networks (media-tests/chrome reach.mjs: ICE-TCP, TURN UDP/TCP/TLS, WHIP, WHEP in Chromium)"
if [ "$(id -u)" -eq 0 ]; then
    bash media-tests/chrome/run.sh reach
else
    echo "skipped: needs root (network namespaces, nftables)"
fi
echo "== interop matrix (Chromium, webrtc-rs, Pion, aiortc, GStreamer in one room; docs/interop.md)"
node --test interop/
python3 -m unittest discover -s interop -p '*_test.py'
if [ "$(id -u)" -eq 0 ]; then
    bash interop/run.sh --ci
else
    echo "skipped: needs root (a network namespace)"
fi
echo "== WHIP from GStreamer (webrtcbin publishes with WHIP, a native subscriber receives; ~15 s)"
if [ "$(id -u)" -eq 0 ]; then
    bash interop/gstreamer/whip-test.sh
else
    echo "skipped: needs root (a network namespace)"
fi
