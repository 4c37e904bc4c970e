#!/usr/bin/env bash
# Instructions per forwarded packet (issue 20): a cost that repeats to the instruction on a noisy machine, where CPU
# time does not. `courier` runs under valgrind's callgrind while `media-tests load` drives a fixed 1 → N workload (one
# publisher, N subscribers, one video layer), twice: with a short and a long measured window. What both runs share
# (start-up, joins, ICE and DTLS, the ramp, shutdown) cancels out of the difference, so
#
#     instructions per forwarded packet = (Ir(long) − Ir(short)) / (packets(long) − packets(short))
#
# where Ir is callgrind's instruction count for the whole process and packets are what the subscribers received
# (the load report's packets/s out × its window). Not a CI test; numbers go to docs/benchmarks.md.
#
# Usage: media-tests/bench/callgrind.sh [OUT_DIR]      (default target/bench/callgrind-<date>)
# Knobs (environment): SUBSCRIBERS=10 VIDEO_KBPS=300 SHORT=5 LONG=15 (seconds) PROFILE=release (or dev)
#
# How the process ends matters: callgrind writes its counts when the program exits, and the load generator ends
# its server with SIGKILL. So the server is started through a wrapper that keeps valgrind as its own child; the
# wrapper takes the SIGKILL, valgrind runs on, and this script then sends it SIGTERM: courier drains and exits,
# and callgrind writes its file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

out=${1:-target/bench/callgrind-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
subscribers=${SUBSCRIBERS:-10}
kbps=${VIDEO_KBPS:-300}
short=${SHORT:-5}
long=${LONG:-15}
profile=${PROFILE:-release}

if ! command -v valgrind >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq valgrind
fi
if [ "$profile" = release ]; then
    cargo build --release --locked -p signaling -p media-tests
    dir=target/release
else
    cargo build --locked -p signaling -p media-tests
    dir=target/debug
fi
courier=$(pwd)/$dir/courier
load=$dir/media-tests

wrapper=$out/courier-under-callgrind
cat >"$wrapper" <<EOF
#!/bin/sh
# Started by media-tests load in place of courier; see media-tests/bench/callgrind.sh.
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.run" "$courier" "\$@" &
wait
EOF
chmod +x "$wrapper"

# One run with a window of $1 seconds: the load report and the callgrind file, named by the window.
run() {
    local secs=$1
    rm -f "$out/callgrind.run"
    "$load" load --courier-bin "$wrapper" --subscribers "$subscribers" --video-kbps "$kbps" --workers 1 \
        --warmup 2s --duration "${secs}s" --out "$out/load-$secs.json" >"$out/load-$secs.txt" 2>&1 || {
        cat "$out/load-$secs.txt" >&2
        pkill -KILL -f "callgrind-out-file=$out/" || true
        exit 1
    }
    pkill -TERM -f "callgrind-out-file=$out/" || true
    for _ in $(seq 1 600); do
        pgrep -f "callgrind-out-file=$out/" >/dev/null || break
        sleep 0.1
    done
    pkill -KILL -f "callgrind-out-file=$out/" || true
    [ -s "$out/callgrind.run" ] || { echo "callgrind wrote nothing for the ${secs} s run" >&2; exit 1; }
    mv "$out/callgrind.run" "$out/callgrind-$secs.out"
}

run "$short"
run "$long"

python3 - "$out" "$short" "$long" "$subscribers" "$kbps" "$profile" <<'PY'
import json, re, sys
out, short, long, subs, kbps, profile = sys.argv[1:]

def ir(secs):
    text = open(f"{out}/callgrind-{secs}.out").read()
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    return int(m.group(1))

def packets(secs):
    r = json.load(open(f"{out}/load-{secs}.json"))
    return r["packets_out_per_s"] * r["seconds"], r

(i0, i1), ((p0, r0), (p1, r1)) = (ir(short), ir(long)), (packets(short), packets(long))
per = (i1 - i0) / (p1 - p0)
print(f"1 -> {subs} subscribers, {kbps} kbit/s video, {profile} build, one worker")
for secs, i, p, r in ((short, i0, p0, r0), (long, i1, p1, r1)):
    print(f"  {secs:>3} s window: {i:,} instructions in all, {p:,.0f} packets forwarded in the window, "
          f"loss {r['loss_percent']:.2f} %")
print(f"instructions per forwarded packet: {per:,.0f}")
PY
