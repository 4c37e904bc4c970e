#!/usr/bin/env bash
# Why this exists: the interop matrix's GStreamer webrtcbin client (interop/gstreamer/client.py) runs on Debian's
# system Python with PyGObject and GStreamer 1.22 from Debian packages; this installs whichever of them is missing
# (quick no-op when all are there) and prints the python path as its last stdout line.
set -euo pipefail
py=/usr/bin/python3
pkgs=(python3 python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0
      gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
      gstreamer1.0-nice glib-networking python3-websockets openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
fi
"$py" - >&2 <<'PY'
import gi, websockets
gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0"); gi.require_version("GstSdp", "1.0")
from gi.repository import Gst, GstWebRTC, GstSdp
Gst.init(None)
for f in ("webrtcbin", "nicesrc", "vp8enc", "vp8dec", "rtpvp8pay", "rtpvp8depay", "opusenc", "opusdec",
          "rtpopuspay", "rtpopusdepay", "videotestsrc", "audiotestsrc"):
    assert Gst.ElementFactory.find(f), f"missing GStreamer element {f}"
print(Gst.version_string(), "websockets", websockets.__version__)
PY
echo "$py"
