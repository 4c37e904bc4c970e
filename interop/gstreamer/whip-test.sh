#!/usr/bin/env bash
# WHIP from an independent stack: GStreamer's webrtcbin (interop/gstreamer/client.py with a WHIP URL) publishes Opus
# and VP8 to Courier, and a native subscriber (media-tests client, WebSocket) must receive both. Runs in its own
# network namespace, like interop/run.sh, because libnice (webrtcbin's ICE) skips loopback interfaces: the server
# and both clients use a dummy interface's address inside the namespace. Needs root; ~15 s.
#
#   sudo interop/gstreamer/whip-test.sh   (COURIER_BIN, MEDIA_TESTS_BIN default to target/debug/…)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "whip-test.sh: run as root (it creates a network namespace)" >&2; exit 2; }
COURIER_BIN=${COURIER_BIN:-target/debug/courier}
MEDIA_TESTS_BIN=${MEDIA_TESTS_BIN:-target/debug/media-tests}
PY=$(interop/gstreamer/setup.sh | tail -1)
NS=courier-whip-$$
ADDR=10.203.9.1
WORK=$(mktemp -d)
trap 'set +e; ip netns pids $NS 2>/dev/null | xargs -r kill -9 2>/dev/null; ip netns del $NS 2>/dev/null; rm -rf "$WORK"' EXIT
ip netns add $NS
ip -n $NS link set lo up
ip -n $NS link add ci0 type dummy 2>/dev/null || ip -n $NS link add ci0 type veth peer name ci0-peer
ip -n $NS addr add $ADDR/24 dev ci0
ip -n $NS link set ci0 up
ip -n $NS link set ci0-peer up 2>/dev/null || true
in_ns() { ip netns exec $NS "$@"; }

KEY=whipkey SECRET=whipsecret-long-enough
in_ns "$COURIER_BIN" serve --http-addr $ADDR:7880 --udp-addr $ADDR:7881 --keys "$KEY:$SECRET" \
  --data-dir "$WORK/data" --web-root '' >"$WORK/courier.log" 2>&1 &
for _ in $(seq 100); do in_ns bash -c "exec 3<>/dev/tcp/$ADDR/7880" 2>/dev/null && break; sleep 0.1; done
token() { "$MEDIA_TESTS_BIN" token --key $KEY --secret $SECRET --room whip --identity "$1"; }

in_ns "$MEDIA_TESTS_BIN" client --url ws://$ADDR:7880/rtc --token "$(token viewer)" --duration 12s \
  --udp-addr $ADDR:0 >"$WORK/viewer.json" 2>"$WORK/viewer.log" &
viewer=$!
sleep 1
now=$(date +%s%3N)
in_ns "$PY" interop/gstreamer/client.py --url http://$ADDR:7880/whip --token "$(token gst)" --duration 8 \
  --window-start "$now" --window-end $((now + 8000)) --report "$WORK/gst.json" 2>"$WORK/gst.log" || true
wait $viewer || true

"$PY" - "$WORK/viewer.json" "$WORK/gst.json" <<'PY'
import json, sys
viewer = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
gst = json.load(open(sys.argv[2]))
print("GStreamer WHIP publisher:", json.dumps({k: gst[k] for k in ("connected_ms", "closed_early", "errors", "sent")}))
video = [t for t in viewer["tracks"] if t["kind"] == "video"]
audio = [t for t in viewer["tracks"] if t["kind"] == "audio"]
print("native subscriber:", json.dumps(video + audio))
assert not gst["errors"], gst["errors"]
assert gst["connected_ms"], "webrtcbin never connected"
assert "WHIP DELETE answered 200" in gst["notes"], gst["notes"]
assert video and video[0]["packets_received"] >= 100, f"VP8 from webrtcbin did not arrive: {video}"
assert audio and audio[0]["packets_decoded"] >= 100, f"Opus from webrtcbin did not arrive: {audio}"
print("ok: GStreamer's WHIP stream reached a native subscriber")
PY
