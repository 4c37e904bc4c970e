#!/usr/bin/env bash
# Regenerates media-tests/data/vp8-320x180-30fps.ivf, the VP8 clip the native test client
# (media-tests) sends. Browsers must be able to decode what it sends, so its video is real VP8:
# this clip, with an integrity trailer appended to every frame (see media-tests/src/frame.rs).
#
# The clip: 320x180, 30 fps, 150 frames (5 s) of a synthetic pattern (coloured bars scrolling
# sideways, a bouncing square, and the frame number in binary), encoded by libvpx in real-time
# mode with exactly one keyframe (frame 0), no hidden (alt-ref) frames, no dropped frames and no
# resizing. The tests only read the committed file; only this script needs vpx-tools.
#
# Usage: scripts/make-vp8-fixture.sh   (installs Debian's vpx-tools if vpxenc is missing)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/../media-tests/data/vp8-320x180-30fps.ivf"

WIDTH=320
HEIGHT=180
FPS=30
FRAMES=150
KBPS=150

if ! command -v vpxenc >/dev/null 2>&1; then
    echo "vpxenc: installing Debian's vpx-tools"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq vpx-tools
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python3 - "$tmp/pattern.y4m" "$WIDTH" "$HEIGHT" "$FPS" "$FRAMES" <<'PY'
import sys

path, w, h, fps, frames = sys.argv[1], *map(int, sys.argv[2:])
cw, ch = w // 2, h // 2
bars = 8
bar_w = w // bars
# (Y, U, V) of each bar: eight distinct colours, bright to dark.
colors = [(235, 128, 128), (210, 16, 146), (170, 166, 16), (145, 54, 34),
          (106, 202, 222), (81, 90, 240), (41, 240, 110), (16, 128, 128)]
square = 40
bits = 8
bit_size = 16

with open(path, "wb") as f:
    f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
    for n in range(frames):
        shift = (n * 3) % w
        y_row = bytearray(colors[(x // bar_w) % bars][0] for x in range(w))
        y_row = y_row[shift:] + y_row[:shift]
        y = bytearray(y_row * h)
        # A bouncing square.
        sx = abs((n * 5) % (2 * (w - square)) - (w - square))
        sy = abs((n * 3) % (2 * (h - square)) - (h - square))
        for row in range(sy, sy + square):
            shade = 255 - ((row - sy) * 4) % 128
            y[row * w + sx: row * w + sx + square] = bytes([shade]) * square
        # The frame number in binary along the top.
        for b in range(bits):
            level = 235 if (n >> (bits - 1 - b)) & 1 else 16
            x0 = 8 + b * (bit_size + 4)
            for row in range(8, 8 + bit_size):
                y[row * w + x0: row * w + x0 + bit_size] = bytes([level]) * bit_size
        cshift = shift // 2
        planes = []
        for c in (1, 2):
            row = bytearray(colors[(x * 2 // bar_w) % bars][c] for x in range(cw))
            row = row[cshift:] + row[:cshift]
            plane = bytearray(row * ch)
            # The square and the frame-number blocks are grey.
            for r in range(sy // 2, (sy + square) // 2):
                plane[r * cw + sx // 2: r * cw + (sx + square) // 2] = bytes([128]) * (square // 2)
            for r in range(4, 4 + bit_size // 2):
                plane[r * cw + 4: r * cw + 4 + bits * (bit_size + 4) // 2] = bytes([128]) * (bits * (bit_size + 4) // 2)
            planes.append(plane)
        f.write(b"FRAME\n")
        f.write(y)
        f.write(planes[0])
        f.write(planes[1])
PY

mkdir -p "$(dirname "$out")"
vpxenc --codec=vp8 --ivf \
    --passes=1 --rt --cpu-used=4 --threads=1 \
    --end-usage=cbr --target-bitrate="$KBPS" \
    --kf-min-dist=9999 --kf-max-dist=9999 \
    --lag-in-frames=0 --auto-alt-ref=0 --drop-frame=0 --resize-allowed=0 \
    --error-resilient=0 --token-parts=0 \
    --limit="$FRAMES" \
    -o "$out" "$tmp/pattern.y4m" 2>"$tmp/vpxenc.log" || { cat "$tmp/vpxenc.log" >&2; exit 1; }

echo "wrote $out ($(stat -c %s "$out") bytes)"
vpxdec --md5 "$out"
