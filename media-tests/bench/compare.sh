#!/usr/bin/env bash
# Courier vs Janus (videoroom) vs Pion (broadcast example), the same workloads in one run, for docs/benchmarks.md.
#
# Every server runs inside a network namespace joined by a veth pair (Janus and Pion gather no candidates on
# loopback; Courier goes there too so all three pay the same path), pinned to core 0; the generator runs pinned to
# core 1. Needs root (namespaces). Installs and builds what is missing (janus, Go and Pion from Debian's packages).
#
# Usage: media-tests/bench/compare.sh [OUT_DIR]    (default target/bench/compare-<date>)
# Knobs (environment): SUBSCRIBERS="100 200" DURATION=20s AUDIO_PUBLISHERS=10 AUDIO_SUBSCRIBERS="100" TARGETS="courier janus pion"
# Two more targets for before/after tables: `before` runs the courier binary named by COURIER_BEFORE (e.g. a release
# build of an older commit in a worktree), `nogso` this build with COURIER_UDP_GSO=false. RAMP=1 adds, per Courier
# target, 1 → N runs with the shipped starting estimate (1 Mbit/s, below the layer) for the time to full rate.
# PACE=2.5: publishers spread each frame's packets at 2.5× their bitrate, as browsers do (default: all at once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

out=${1:-target/bench/compare-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
subscribers=${SUBSCRIBERS:-"100 200"}
duration=${DURATION:-20s}
audio_publishers=${AUDIO_PUBLISHERS:-10}
audio_subscribers=${AUDIO_SUBSCRIBERS:-100}
ramp=${RAMP:-0}
pace=()
[ -n "${PACE:-}" ] && pace=(--pace-publishers "$PACE")
targets=${TARGETS:-"courier janus pion"}

cargo build --release --locked -p signaling -p media-tests
load=target/release/media-tests
courier=target/release/courier
pion=""
janus_conf=""
for t in $targets; do
    case $t in
        pion) pion=$(bash media-tests/bench/pion-broadcast.sh target/bench/pion | tail -1) ;;
        janus) janus_conf=$(bash media-tests/bench/janus.sh target/bench/janus-conf | tail -1) ;;
    esac
done

# One run: target, workload name, extra arguments. Failures are recorded, not fatal (a server may not cope).
run() {
    local target=$1 name=$2
    shift 2
    local extra=() envs=() start=(--bwe-initial-kbps 3000)
    [ "${name#ramp}" != "$name" ] && start=()
    case $target in
        # The estimate starts above the 1.5 Mbit/s single layer: Janus and Pion gate nothing on an estimate, and
        # this measures forwarding, not the ramp (see docs/benchmarks.md, "Load"). Ramp runs take it off again.
        courier) extra=(--courier-bin "$courier" --netns "${start[@]}") ;;
        nogso) extra=(--courier-bin "$courier" --netns "${start[@]}") envs=(COURIER_UDP_GSO=false) ;;
        before) extra=(--courier-bin "${COURIER_BEFORE:?set COURIER_BEFORE to the before binary}" --netns "${start[@]}") ;;
        pion) extra=(--server-bin "$pion") ;;
        janus) extra=(--server-bin "$(command -v janus)" --server-conf "$janus_conf") ;;
    esac
    local kind=$target
    case $target in nogso | before) kind=courier ;; esac
    echo "== $target $name $*"
    if ! env "${envs[@]}" taskset -c 1 "$load" load --target "$kind" --server-cpu 0 --duration "$duration" \
        --out "$out/$target-$name.json" "${extra[@]}" "${pace[@]}" "$@" > "$out/$target-$name.log" 2>&1; then
        echo "   failed: $(tail -1 "$out/$target-$name.log")"
    else
        sed -n '1,7p' "$out/$target-$name.log" | sed 's/^/   /'
    fi
}

for n in $subscribers; do
    for t in $targets; do
        run "$t" "video-1x$n" --rooms 1 --publishers 1 --subscribers "$n"
    done
done
for a in $audio_subscribers; do
    for t in $targets; do
        [ "$t" = pion ] && continue # the broadcast example relays one video track
        run "$t" "audio-${audio_publishers}x$a" --audio-only --rooms 1 --publishers "$audio_publishers" --subscribers "$a"
    done
done
if [ "$ramp" = 1 ]; then
    for n in $subscribers; do
        for t in $targets; do
            case $t in courier | nogso | before) run "$t" "ramp-1x$n" --rooms 1 --publishers 1 --subscribers "$n" ;; esac
        done
    done
fi

python3 media-tests/bench/summarize.py "$out" | tee "$out/summary.md"
