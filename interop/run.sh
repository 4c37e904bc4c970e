#!/usr/bin/env bash
# The interop matrix (interop/README.md): every WebRTC stack in one Courier room, in a network namespace. Needs root
# (the namespace), Node 20, and the clients' own setup (run.mjs runs each stack's build/setup script). The trap is a
# backstop: run.mjs kills its children and deletes the namespace itself.
#   sudo interop/run.sh [--window-secs 60] [--ci] [--write-docs] [--stacks chromium,webrtc-rs,…] [--stack-dir NAME=DIR]
# Env: COURIER_BIN (default target/debug/courier), MEDIA_TESTS_BIN (default target/debug/media-tests), CHROMIUM_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "interop/run.sh: run as root (it creates the network namespace courier-interop)" >&2
  exit 2
fi
# The run's own exit status is kept (under `set -e` a failing cleanup command would turn a pass into exit 1).
trap 'rc=$?; set +e; ip netns pids courier-interop 2>/dev/null | xargs -r kill -9 2>/dev/null; ip netns del courier-interop 2>/dev/null; exit $rc' EXIT
nice -n 5 node interop/run.mjs "$@"
