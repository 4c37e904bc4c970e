#!/usr/bin/env bash
# Builds the interop matrix's Pion client (interop/pion/main.go) from Debian's packaged Go sources, offline, and
# prints the binary's path as its last line.
#   usage: interop/pion/build.sh [CACHE_DIR]   (default: target/interop/pion under the repository root)
# GOPATH mode, as media-tests/bench/pion-broadcast.sh: Debian ships pion/webrtc v3 and every dependency under
# /usr/share/gocode/src. Our package is copied (with the VP8 clip it embeds) into CACHE_DIR/gopath/src/pionclient
# next to a generated go.mod: with one, Go's "minimal module compatibility" resolves github.com/pion/webrtc/v3 (and
# pion/ice/v2, ...) to Debian's unversioned directories. Rebuilt only when a source is newer than the binary.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${1:-$root/target/interop/pion}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
bin="$cache/pion-client"
srcdir="$root/interop/pion"
ivf="$root/media-tests/data/vp8-320x180-30fps.ivf"

if [[ -x "$bin" ]] && [[ -z "$(find "$srcdir" "$ivf" -newer "$bin" -type f 2>/dev/null)" ]]; then
    echo "$bin"
    exit 0
fi

# Go 1.19, Pion 3.1.56 and gorilla/websocket from Debian bookworm.
pkgs=(golang-go golang-github-pion-webrtc.v3-dev golang-github-gorilla-websocket-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ! command -v go >/dev/null || ((${#missing[@]})); then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
fi

gopath="$cache/gopath"
pkg="$gopath/src/pionclient"
rm -rf "$pkg"
mkdir -p "$pkg"
cp "$srcdir"/*.go "$pkg/"
cp "$ivf" "$pkg/vp8.ivf"
printf 'module pionclient\n\ngo 1.19\n' > "$pkg/go.mod"

version="$(dpkg-query -W -f='${Version}' golang-github-pion-webrtc.v3-dev)"
version="${version%%-*}"
version="${version%%+*}"
cd "$pkg"
GOPATH="$gopath:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOFLAGS= GOCACHE="$cache/go-build" \
    nice -n 10 go build -trimpath -ldflags "-X main.pionVersion=$version" -o "$bin.tmp" . >&2
dpkg-query -W 'golang-go' 'golang-github-pion-*' 'golang-github-gorilla-websocket-dev' > "$cache/versions.txt"
mv "$bin.tmp" "$bin"
echo "$bin"
