#!/usr/bin/env bash
# Builds Pion's broadcast example (pion/webrtc v3 examples/broadcast), the SFU that `media-tests load --target pion`
# compares Courier with, from Debian's packaged sources, offline, and prints the binary's path as its last line.
#   usage: pion-broadcast.sh [CACHE_DIR]   (default: target/bench/pion under the repository root)
# Debian's golang-github-pion-webrtc.v3-dev ships examples/ (and examples/internal/signal) in /usr/share/gocode with
# every dependency as its own package, so a GOPATH-mode build needs no module proxy. Run the binary only inside a
# network namespace: its config names a public STUN server (in a namespace without a route, resolving it just fails).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${1:-$root/target/bench/pion}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
bin="$cache/broadcast"

# Already built: only say where.
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi

# Go 1.19 and Pion 3.1.56 (with pion/ice 2.3.1, interceptor 0.1.12, ...) from Debian bookworm.
if ! command -v go >/dev/null || ! dpkg -s golang-github-pion-webrtc.v3-dev >/dev/null 2>&1; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-pion-webrtc.v3-dev >&2
fi

# GOPATH mode: imports resolve under /usr/share/gocode/src; building from the example's directory lets Go's
# "minimal module compatibility" map github.com/pion/webrtc/v3 to .../pion/webrtc (whose go.mod says /v3).
src=/usr/share/gocode/src/github.com/pion/webrtc/examples/broadcast
cd "$src"
GOPATH=/usr/share/gocode GO111MODULE=off GOPROXY=off GOFLAGS= GOCACHE="$cache/go-build" \
    nice -n 10 go build -trimpath -o "$bin.tmp" . >&2
dpkg-query -W 'golang-go' 'golang-github-pion-*' > "$cache/versions.txt"
mv "$bin.tmp" "$bin"
echo "$bin"
