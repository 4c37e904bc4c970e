#!/usr/bin/env bash
# Instructions per forwarded packet on the sans-I/O forwarding path (issue 20): `sfu/tests/forward_cost.rs` (one
# publisher's packets handed to N subscriber peers on simulated time, each with a real str0m client sending TWCC)
# under valgrind's callgrind. Only the server peers' work is counted (collection is switched on inside the four
# entry points `Peer::handle_forward`, `handle_receive`, `handle_timeout`, `poll_output`), and only inside the
# measured window (zeroed on entering `window_starts`, written on entering `window_ends`). Nothing depends on the
# machine's timing, so a run repeats within a fraction of a percent: the number to compare before and after a
# change. Not a CI test; numbers go to docs/benchmarks.md.
#
# Usage: media-tests/bench/forward-cost.sh [OUT_DIR]     (default target/bench/forward-cost-<date>)
# Knobs (environment): SUBSCRIBERS=20 FRAMES=300 WARMUP=90 KBPS=1000 AUDIO=0 PACED=0 (1: a frame's packets one at a
# time, as a browser paces them) PROFILE=1 (print the top functions)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

out=${1:-target/bench/forward-cost-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if ! command -v valgrind >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq valgrind
fi
bin=$(cargo test --release --locked -p sfu --test forward_cost --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "forward_cost" in m["executable"]:
        print(m["executable"])')
[ -x "$bin" ] || { echo "the forward_cost workload did not build" >&2; exit 1; }

FORWARD_COST_SUBSCRIBERS=${SUBSCRIBERS:-20} FORWARD_COST_FRAMES=${FRAMES:-300} FORWARD_COST_WARMUP=${WARMUP:-90} \
    FORWARD_COST_KBPS=${KBPS:-1000} FORWARD_COST_AUDIO=${AUDIO:-0} FORWARD_COST_PACED=${PACED:-0} \
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" --collect-atstart=no \
    --zero-before='*window_starts*' --dump-before='*window_ends*' \
    --toggle-collect='sfu::peer::Peer::handle_forward*' --toggle-collect='sfu::peer::Peer::handle_receive*' \
    --toggle-collect='sfu::peer::Peer::handle_timeout*' --toggle-collect='sfu::peer::Peer::poll_output*' \
    "$bin" --ignored --nocapture --test-threads 1 >"$out/workload.txt" 2>"$out/valgrind.txt" || {
    cat "$out/workload.txt" "$out/valgrind.txt" >&2
    exit 1
}

python3 - "$out" "${PROFILE:-1}" <<'PY'
import collections, glob, re, sys
out, profile = sys.argv[1], sys.argv[2] == "1"
text = open(f"{out}/workload.txt").read()
m = re.search(r"forward cost workload: (.*?): (\d+) packets handed", text)
if not m:
    sys.exit(f"no workload line in {out}/workload.txt")
what, packets = m.group(1), int(m.group(2))
window = None
for f in sorted(glob.glob(f"{out}/callgrind.out*")):
    head = open(f).read(4000)
    if "Trigger: --dump-before=forward_cost::window_ends" in head:
        window = f
if window is None:
    sys.exit("callgrind wrote no dump for the measured window")
total = None
names, selfcost, cur, after_call = {}, collections.Counter(), None, False
for line in open(window):
    if line.startswith("summary:"):
        total = int(line.split()[1])
    if not profile:
        continue
    if line.startswith("fn="):
        m2 = re.match(r"\((\d+)\)(?: (.*))?", line[3:].strip())
        if m2.group(2):
            names[m2.group(1)] = m2.group(2)
        cur = names.get(m2.group(1))
    elif line.startswith("cfn="):
        m2 = re.match(r"\((\d+)\)(?: (.*))?", line[4:].strip())
        if m2.group(2):
            names[m2.group(1)] = m2.group(2)
    elif line.startswith("calls="):
        after_call = True
    elif line[:1].isdigit() or line[:1] in "+-*":
        if after_call:
            after_call = False
        elif cur:
            parts = line.split()
            if len(parts) >= 2:
                selfcost[cur] += int(parts[1])
print(f"{what}: {packets} packets forwarded in the window, {total:,} instructions in the server peers: "
      f"{total / packets:,.0f} instructions per forwarded packet")
if profile:
    print("functions by their own instructions per forwarded packet:")
    for fn, c in selfcost.most_common(25):
        print(f"  {c / packets:8,.0f}  {100 * c / total:5.1f} %  {fn[:110]}")
PY
