#!/usr/bin/python3
"""Courier interop-matrix client for GStreamer's webrtcbin (Debian's GStreamer 1.22, PyGObject, system python3).

Why this exists: webrtcbin is the WebRTC stack of GStreamer-based apps, gateways and embedded devices; this client
joins a Courier room with it, publishes an Opus tone (audiotestsrc ! opusenc) and a VP8 test pattern (videotestsrc
! vp8enc), receives every other participant, counts the units sent and received and writes the JSON report the
matrix reads. The client contract (flags, behaviour, report) is interop/README.md; the signaling is
docs/protocol.md. interop/gstreamer/setup.sh installs what it needs.

webrtcbin specifics:
- Trickles its candidates with `candidate` messages (on-ice-candidate), after its first offer is sent.
- With `--url http://host:port/whip` it publishes with WHIP instead (RFC 9725: POST the offer, PATCH the
  candidates, DELETE at the end) and receives nothing: interop/gstreamer/whip-test.sh.
- Sent units: pad probes on the payloaders' src pads (video: RTP buffers with the marker bit; audio: RTP buffers),
  counted once the peer connection is connected (before that webrtcbin drops them).
- Received units: pad probes on webrtcbin's src pads (after its jitterbuffer, which unwraps RTX and drops
  duplicates): video: RTP buffers with the marker bit; audio: RTP buffers; placed in the window by their RTP
  timestamps (contract.Counter). Then depayload, decode, fakesink; the decoded frames are reported too, as
  "decoded". The jitterbuffer holds 1 s (`latency`): it drops a packet that comes after its deadline, and this
  client, scheduled too little on a busy 2-core machine, processed packets up to a second late (100 ms lost 1-2 %).
- TWCC: the transport-wide-cc header extension is put in the payloader caps (extmap-N); webrtcbin 1.22 then offers
  it and `a=rtcp-fb:* transport-cc`. NACK/RTX: `do-nack` on every transceiver.
"""
import asyncio
import hashlib
import json
import os
import subprocess
import tempfile
import struct
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import Gio, Gst, GstSdp, GstWebRTC  # noqa: E402
import websockets  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from contract import (UDP_RECEIVE_BUFFER, Counter, clock_hz, contract_parser, enlarge_udp_receive_buffers,  # noqa: E402
                      fill_counts, new_report, now_ms, sdp_notes, sdp_sections, undeclared_ssrc_notes, write_report)

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
VIDEO_PT, AUDIO_PT = 96, 111


def ecdsa_certificate():
    """A fresh self-signed ECDSA P-256 certificate and key, as one PEM string, and its SHA-256 fingerprint.

    Only with --ecdsa-cert. GStreamer 1.22's DTLS generates an RSA certificate; Courier's DTLS once accepted only
    ECDSA client certificates (OpenSSL then sent none and the handshake failed) and now verifies RSA too, so the matrix
    runs with GStreamer's own certificate, as a GStreamer app would. An app sets another one with the DTLS
    transport's `certificate` property, which is what this does."""
    with tempfile.TemporaryDirectory() as d:
        key, crt = os.path.join(d, "k.pem"), os.path.join(d, "c.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", crt, "-days", "30", "-subj", "/CN=courier-interop-gst"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pem = open(crt).read() + open(key).read()
    der = bytes(Gio.TlsCertificate.new_from_pem(pem, -1).props.certificate)
    fp = ":".join("%02X" % b for b in hashlib.sha256(der).digest())
    return pem, fp


def buffers_of(info):
    """The RTP buffers a probe sees (payloaders push buffer lists)."""
    if info.type & Gst.PadProbeType.BUFFER:
        buf = info.get_buffer()
        return [buf] if buf is not None else []
    lst = info.get_buffer_list()
    if lst is None:
        return []
    return [lst.get(i) for i in range(lst.length())]


def warm_up_bindings():
    """Resolves, on the main thread, every GStreamer method the pad probes call from streaming threads.

    PyGObject builds a boxed type's Python class when it is first needed. One CI run's GStreamer client raised
    "'Buffer' object has no attribute 'extract_dup'" in every probe (68,298 times, the whole run) and counted
    nothing, while the same client passes alone and passed every run before: most likely two streaming threads (four
    publishers' streams start together) built the class at once and the buffers got one without its methods.
    Building the classes here, on the main thread before any pipeline runs, leaves the threads nothing to race on.
    """
    for cls, names in ((Gst.Buffer, ("extract_dup", "get_size")),
                       (Gst.BufferList, ("get", "length")),
                       (Gst.PadProbeInfo, ("get_buffer", "get_buffer_list"))):
        for name in names:
            getattr(cls, name)
    probe = Gst.Buffer.new_wrapped(bytes(12))
    assert len(probe.extract_dup(0, 12)) == 12 and probe.get_size() == 12


def rtp_header(buf):
    """(marker, payload_type, ssrc, timestamp) of an RTP buffer, or None."""
    data = buf.extract_dup(0, 12)
    if not isinstance(data, (bytes, bytearray)) or len(data) < 12:
        return None
    timestamp, ssrc = struct.unpack("!II", data[4:12])
    return bool(data[1] & 0x80), data[1] & 0x7F, ssrc, timestamp


def rtp_ext_ids(buf):
    """The one-byte header extension ids (RFC 8285) of an RTP buffer."""
    data = buf.extract_dup(0, min(buf.get_size(), 96))
    if not isinstance(data, (bytes, bytearray)) or len(data) < 12 or not data[0] & 0x10:
        return set()
    o = 12 + 4 * (data[0] & 0x0F)
    if len(data) < o + 4 or data[o:o + 2] != b"\xbe\xde":
        return set()
    words = struct.unpack("!H", data[o + 2:o + 4])[0]
    ids, i, end = set(), o + 4, min(len(data), o + 4 + 4 * words)
    while i < end:
        b = data[i]
        if b == 0:
            i += 1
            continue
        ident, ln = b >> 4, (b & 0x0F) + 1
        if ident == 15:
            break
        ids.add(ident)
        i += 1 + ln
    return ids


class Client:
    def __init__(self, args, loop):
        self.args = args
        self.loop = loop
        self.report = new_report("gstreamer", f"GStreamer webrtcbin {Gst.version_string().split(' ')[-1]} "
                                              f"(PyGObject, websockets {websockets.__version__})")
        self.lock = threading.Lock()
        self.ws = None
        self.pipe = None
        self.webrtc = None
        self.done = asyncio.Event()
        self.outstanding = None
        self.next_offer_id = 1
        self.offer_sent = False
        self.pending_candidates = []
        self.subscribed = {}       # track_id -> latest subscribed message
        self.own_tracks = {}       # mid -> track_id
        self.local_mids = {}       # mid -> kind (our send m-lines)
        self.sent = {"audio": self.counter(), "video": self.counter()}
        self.sent_mid = {}         # kind -> mid
        self.recv = {}             # mid -> Counter
        self.decoded = {}          # mid -> int
        self.recv_ssrcs = {}       # mid -> set of ssrcs seen
        self.remote_ssrcs = {}     # mid -> every SSRC the server's SDPs declared for it
        self.connected = False
        self.sent_ext_checked = {"audio": 0, "video": 0}
        self.sent_ext_ids = {"audio": set(), "video": set()}
        self.recv_ext_checked = {}
        self.recv_ext_ids = {}
        self.neg_started = False
        self.notes = set()
        self.msgq = asyncio.Queue()
        self.cert = ecdsa_certificate() if args.ecdsa_cert else None
        if self.cert is not None:
            self.report["notes"].append("client setting: ECDSA P-256 DTLS certificate (not GStreamer's default RSA)")

    def counter(self, kind=None):
        """A Counter for the window; with the received track's `kind`, one that places units by RTP timestamp."""
        return Counter(self.args.window_start, self.args.window_end, clock_hz(kind) if kind else None)

    def note(self, text):
        if text not in self.notes:
            self.notes.add(text)
            self.report["notes"].append(text)
            print("note:", text, file=sys.stderr)

    def threadsafe(self, fn, *a):
        self.loop.call_soon_threadsafe(fn, *a)

    def end_early(self, why):
        if self.report["closed_early"] is None and not self.done.is_set():
            self.report["closed_early"] = why
        self.done.set()

    async def send(self, obj):
        raw = json.dumps(obj)
        if self.args.verbose:
            print(f"{now_ms()} > {raw if len(raw) < 300 or self.args.verbose > 1 else raw[:300] + '…'}",
                  file=sys.stderr)
        await self.ws.send(raw)

    # ------------------------------------------------------------------------------------------ promises

    def promise(self, extract=None):
        fut = self.loop.create_future()

        def on_done(p):
            try:
                reply = p.get_reply()
                err = reply.get_value("error") if reply is not None and reply.has_field("error") else None
                val = extract(reply) if (extract and err is None) else None
                res = (val, err)
            except Exception as e:  # noqa: BLE001
                res = (None, e)

            def settle():
                if not fut.done():
                    fut.set_result(res)
            self.loop.call_soon_threadsafe(settle)
        return Gst.Promise.new_with_change_func(on_done), fut

    async def call(self, signal, *args, extract=None):
        p, fut = self.promise(extract)
        self.webrtc.emit(signal, *args, p)
        val, err = await asyncio.wait_for(fut, 10)
        if err is not None:
            raise RuntimeError(f"{signal}: {err}")
        return val

    # ------------------------------------------------------------------------------------------ pipeline

    def build(self):
        desc = (
            f"webrtcbin name=webrtc bundle-policy=max-bundle latency=1000 "
            f"audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample ! "
            f"audio/x-raw,rate=48000,channels=1 ! opusenc frame-size=20 bitrate=32000 ! "
            f"rtpopuspay name=apay pt={AUDIO_PT} ! "
            f"application/x-rtp,media=audio,encoding-name=OPUS,payload={AUDIO_PT},clock-rate=48000,"
            f"extmap-3=(string){TWCC_URI} ! webrtc.sink_0 "
            f"videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=180,framerate=30/1 ! "
            f"videoconvert ! queue max-size-buffers=4 ! "
            f"vp8enc deadline=1 cpu-used=8 threads=1 target-bitrate=400000 keyframe-max-dist=90 error-resilient=partitions ! "
            f"rtpvp8pay name=vpay pt={VIDEO_PT} mtu=1200 picture-id-mode=15-bit ! "
            f"application/x-rtp,media=video,encoding-name=VP8,payload={VIDEO_PT},clock-rate=90000,"
            f"extmap-3=(string){TWCC_URI} ! webrtc.sink_1 "
        )
        self.pipe = Gst.parse_launch(desc)
        self.webrtc = self.pipe.get_by_name("webrtc")
        w = self.webrtc
        if self.args.keepalive_conncheck:
            # Only with --keepalive-conncheck. libnice keeps a selected pair alive with binding *indications* unless
            # keepalive-conncheck is on (its RFC 7675 consent-freshness mode is construct-only, so webrtcbin's agent
            # cannot get it). Courier once dropped a peer that sent no binding *request* for 15 s; it now counts
            # authenticated SRTP/SRTCP as a sign of life, so the matrix runs with libnice's defaults.
            # Both wrappers are kept for the life of the process: PyGObject drops a reference it does not own when
            # they are collected, which frees webrtcbin's ICE agent (a crash).
            self._ice = w.get_property("ice-agent")
            self._nice = self._ice.get_property("agent")
            self._nice.set_property("keepalive-conncheck", True)
            self.report["notes"].append("client setting: libnice keepalive-conncheck=true")
        w.connect("on-negotiation-needed", self.on_negotiation_needed)
        w.connect("on-ice-candidate", self.on_ice_candidate)
        w.connect("pad-added", self.on_pad_added)
        w.connect("on-new-transceiver", self.on_new_transceiver)
        w.connect("notify::connection-state", self.on_state, "connection-state")
        w.connect("notify::ice-connection-state", self.on_state, "ice-connection-state")
        w.connect("notify::ice-gathering-state", self.on_gathering)
        for kind, name in (("audio", "apay"), ("video", "vpay")):
            pay = self.pipe.get_by_name(name)
            pay.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST,
                                                self.on_sent_probe, kind)
        # Our two send transceivers: sendonly, NACK/RTX on.
        for i in range(2):
            t = w.emit("get-transceiver", i)
            t.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
            t.set_property("do-nack", True)

    def on_new_transceiver(self, w, trans):
        trans.set_property("do-nack", True)

    def on_state(self, w, pspec, prop):
        val = w.get_property(prop)
        nick = val.value_nick if hasattr(val, "value_nick") else str(val)
        t = now_ms()
        label = nick if prop == "connection-state" else f"ice-{nick}"
        with self.lock:
            self.report["states"].append([t, label])
        if prop == "connection-state":
            if nick == "connected":
                self.connected = True
                if self.report["connected_ms"] is None:
                    self.report["connected_ms"] = t
                    n = enlarge_udp_receive_buffers()
                    with self.lock:
                        self.report["notes"].append(
                            f"UDP receive buffers enlarged to {UDP_RECEIVE_BUFFER} bytes: {n} socket(s)")
            elif nick == "failed":
                self.threadsafe(self.end_early, "peer connection failed")

    def on_gathering(self, w, pspec):
        st = w.get_property("ice-gathering-state")
        if st == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            self.threadsafe(self.queue_candidate, 0, "")

    def on_negotiation_needed(self, w):
        if not self.neg_started:
            self.neg_started = True
            self.threadsafe(self.msgq.put_nowait, {"type": "_publish"})

    def on_ice_candidate(self, w, mline, cand):
        self.threadsafe(self.queue_candidate, mline, cand)

    def queue_candidate(self, mline, cand):
        self.pending_candidates.append((mline, cand))
        if self.offer_sent:
            asyncio.ensure_future(self.flush_candidates())

    async def flush_candidates(self):
        while self.pending_candidates:
            mline, cand = self.pending_candidates.pop(0)
            mid = self.mline_mids[mline] if mline < len(self.mline_mids) else None
            if self.whip:
                frag = f"a=mid:{mid}\r\na={cand}\r\n" if cand else "a=end-of-candidates\r\n"
                status, _, body = await self.http("PATCH", self.resource, frag, "application/trickle-ice-sdpfrag")
                if status != 204:
                    self.report["errors"].append(f"WHIP PATCH answered {status}: {body[:200]}")
                continue
            await self.send({"type": "candidate", "candidate": cand, "sdp_mid": mid, "sdp_mline_index": mline})

    def on_sent_probe(self, pad, info, kind):
        if not self.connected:
            return Gst.PadProbeReturn.OK
        t = now_ms()
        c = self.sent[kind]
        for buf in buffers_of(info):
            h = rtp_header(buf)
            if h is None:
                continue
            if self.sent_ext_checked[kind] < 20:
                self.sent_ext_checked[kind] += 1
                self.sent_ext_ids[kind] |= rtp_ext_ids(buf)
            if kind == "video" and not h[0]:
                continue
            c.add(t)
        return Gst.PadProbeReturn.OK

    def on_recv_probe(self, pad, info, ctx):
        t = now_ms()
        mid, kind = ctx
        c = self.recv.get(mid)
        if c is None:
            c = self.recv[mid] = self.counter(kind)
        for buf in buffers_of(info):
            h = rtp_header(buf)
            if h is None:
                continue
            self.recv_ssrcs.setdefault(mid, set()).add(h[2])
            if self.recv_ext_checked.get(mid, 0) < 20:
                self.recv_ext_checked[mid] = self.recv_ext_checked.get(mid, 0) + 1
                self.recv_ext_ids.setdefault(mid, set()).update(rtp_ext_ids(buf))
            if kind == "video" and not h[0]:
                continue
            c.add(t, h[3])
        return Gst.PadProbeReturn.OK

    def on_decoded_probe(self, pad, info, mid):
        self.decoded[mid] = self.decoded.get(mid, 0) + 1
        return Gst.PadProbeReturn.OK

    def on_pad_added(self, w, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        trans = pad.get_property("transceiver")
        mid = trans.get_property("mid") if trans is not None else None
        caps = pad.get_current_caps() or pad.query_caps(None)
        s = caps.get_structure(0) if caps and caps.get_size() else None
        kind = s.get_string("media") if s is not None else None
        enc = (s.get_string("encoding-name") or "").upper() if s is not None else ""
        if kind == "video" and enc == "VP8":
            branch = "queue ! rtpvp8depay ! vp8dec name=dec ! fakesink sync=false async=false"
        elif kind == "audio" and enc == "OPUS":
            branch = "queue ! rtpopusdepay ! opusdec name=dec ! fakesink sync=false async=false"
        else:
            self.threadsafe(self.note, f"pad {pad.get_name()} mid {mid}: unexpected caps {caps.to_string() if caps else None}")
            branch = "fakesink sync=false async=false"
        pad.add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, self.on_recv_probe, (mid, kind))
        b = Gst.parse_bin_from_description(branch, True)
        self.pipe.add(b)
        b.sync_state_with_parent()
        dec = b.get_by_name("dec")
        if dec is not None:
            dec.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self.on_decoded_probe, mid)
        r = pad.link(b.get_static_pad("sink"))
        if r != Gst.PadLinkReturn.OK:
            self.threadsafe(self.note, f"linking {pad.get_name()} failed: {r}")

    # ------------------------------------------------------------------------------------------ signaling

    def remote_sdp(self, text):
        for note in sdp_notes(text, self.remote_ssrcs):
            self.note(note)
        res, msg = GstSdp.SDPMessage.new_from_text(text)
        if res != GstSdp.SDPResult.OK:
            raise RuntimeError(f"cannot parse the server SDP: {res}")
        return msg

    @staticmethod
    def description(typ, text):
        res, msg = GstSdp.SDPMessage.new_from_text(text)
        if res != GstSdp.SDPResult.OK:
            raise RuntimeError(f"cannot parse SDP: {res}")
        return GstWebRTC.WebRTCSessionDescription.new(typ, msg)

    def use_certificate(self):
        """Puts our ECDSA certificate on every DTLS transport (they exist once an offer or answer was created)."""
        if self.cert is None:
            return
        changed = False
        i = 0
        while True:
            t = self.webrtc.emit("get-transceiver", i)
            if t is None:
                break
            i += 1
            for side in ("sender", "receiver"):
                obj = t.get_property(side)
                tr = obj.get_property("transport") if obj is not None else None
                if tr is not None and tr.get_property("certificate") != self.cert[0]:
                    tr.set_property("certificate", self.cert[0])
                    changed = True
        if changed:
            # dtlsdec makes a new DTLS connection for the new certificate but connects its handlers (peer
            # certificate check, SRTP keys) only on NULL->READY; the transport already went past READY, so cycle
            # the dtlsdec elements (no DTLS packet has arrived yet: ICE has not started).
            it = self.webrtc.iterate_recurse()
            while True:
                res, el = it.next()
                if res != Gst.IteratorResult.OK:
                    break
                f = el.get_factory()
                if f is not None and f.get_name() == "dtlsdec":
                    el.set_state(Gst.State.NULL)
                    el.sync_state_with_parent()

    def fix_fingerprint(self, text):
        """webrtcbin 1.22 computes a=fingerprint by base64-decoding every line of the PEM, so with a PEM that holds
        the key too (as one set by the app must) the fingerprint is wrong: write the certificate's real one."""
        if self.cert is None:
            return text
        lines = text.split("\r\n")
        return "\r\n".join(("a=fingerprint:sha-256 " + self.cert[1]) if ln.startswith("a=fingerprint:") else ln
                            for ln in lines)

    async def publish(self):
        # The reply's description is read as SDP text inside the promise callback (PyGObject does not keep the
        # boxed description alive once the promise is gone) and rebuilt here.
        text = await self.call("create-offer", None, extract=lambda r: r.get_value("offer").sdp.as_text())
        self.use_certificate()
        text = self.fix_fingerprint(text)
        await self.call("set-local-description", self.description(GstWebRTC.WebRTCSDPType.OFFER, text))
        secs = sdp_sections(text)
        self.mline_mids = [s[0] for s in secs]
        tracks = []
        for mid, kind, lines in secs:
            self.local_mids[mid] = kind
            self.sent_mid[kind] = mid
            tracks.append({"mid": mid, "source": "microphone" if kind == "audio" else "camera",
                           "name": "audiotestsrc" if kind == "audio" else "videotestsrc"})
            if not any(TWCC_URI in ln for ln in lines):
                self.note(f"our offer has no transport-cc extmap on {kind}")
            if not any("transport-cc" in ln for ln in lines if ln.startswith("a=rtcp-fb")):
                self.note(f"our offer has no a=rtcp-fb transport-cc on {kind}")
        if self.whip:
            # WHIP (RFC 9725): the offer is POSTed; its answer comes back in the 201; candidates follow by PATCH.
            status, headers, body = await self.http("POST", self.args.url, text, "application/sdp")
            if status != 201:
                raise RuntimeError(f"WHIP POST answered {status}: {body[:200]}")
            self.resource = urllib.parse.urljoin(self.args.url, headers.get("Location", ""))
            self.report["joined_ms"] = now_ms()
            ans = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, self.remote_sdp(body))
            await self.call("set-remote-description", ans)
            self.offer_sent = True
            await self.flush_candidates()
            return
        oid = self.next_offer_id
        self.next_offer_id += 1
        self.outstanding = oid
        await self.send({"type": "offer", "id": oid, "sdp": text, "tracks": tracks})
        self.offer_sent = True
        await self.flush_candidates()

    async def handle(self, msg):
        typ = msg.get("type")
        if typ == "_publish":
            await self.publish()
        elif typ == "joined":
            self.report["joined_ms"] = now_ms()
            self.report["participant_id"] = msg["participant"]["id"]
            self.outstanding = 0  # until our first offer is answered, server offers are ignored
            self.build()
            self.pipe.set_state(Gst.State.PLAYING)
        elif typ == "answer":
            if msg.get("id") != self.outstanding:
                self.note(f"answer with unexpected id {msg.get('id')}")
                return
            sdp = self.remote_sdp(msg["sdp"])
            ans = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
            await self.call("set-remote-description", ans)
            self.outstanding = None
        elif typ == "offer":
            if self.outstanding is not None:
                return  # impolite client: our offer is outstanding, the server sends a fresh one later
            sdp = self.remote_sdp(msg["sdp"])
            off = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER, sdp)
            await self.call("set-remote-description", off)
            text = await self.call("create-answer", None, extract=lambda r: r.get_value("answer").sdp.as_text())
            self.use_certificate()
            text = self.fix_fingerprint(text)
            await self.call("set-local-description", self.description(GstWebRTC.WebRTCSDPType.ANSWER, text))
            self.mline_mids = [s[0] for s in sdp_sections(text)]
            await self.send({"type": "answer", "id": msg["id"], "sdp": text})
        elif typ == "subscribed":
            self.subscribed[msg["track_id"]] = msg
        elif typ == "track_published":
            tr = msg.get("track", {})
            if msg.get("participant_id") == self.report["participant_id"] and "mid" in tr:
                self.own_tracks[tr["mid"]] = tr["id"]
        elif typ == "leave":
            self.end_early(f"server leave: {msg.get('reason')}")
        elif typ == "participant_left":
            if msg.get("participant_id") == self.report["participant_id"]:
                self.end_early(f"participant_left: {msg.get('reason')}")
        elif typ == "error":
            self.report["errors"].append(f"server error {msg.get('code')}: {msg.get('message')} ({msg.get('req_type')})")
            if msg.get("req_type") in ("join", "offer", "answer"):
                self.end_early(f"server error {msg.get('code')}")

    async def reader(self):
        try:
            async for raw in self.ws:
                if self.args.verbose:
                    print(f"{now_ms()} < {raw if len(raw) < 300 or self.args.verbose > 1 else raw[:300] + '…'}",
                          file=sys.stderr)
                await self.msgq.put(json.loads(raw))
            self.end_early(f"socket closed by server: {self.ws.close_code} {self.ws.close_reason or ''}".strip())
        except asyncio.CancelledError:
            raise
        except websockets.ConnectionClosed as e:
            self.end_early(f"socket closed: {e}")
        except Exception as e:  # noqa: BLE001
            self.report["errors"].append(repr(e))
            self.end_early(f"error: {e!r}")

    async def worker(self):
        """Handles signaling and webrtcbin events one at a time, in order."""
        while True:
            msg = await self.msgq.get()
            try:
                await self.handle(msg)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                self.report["errors"].append(f"handling {msg.get('type')}: {e!r}")
                self.end_early(f"error: {e!r}")

    async def bus_watch(self):
        while True:
            await asyncio.sleep(0.1)
            if self.pipe is None:
                continue
            bus = self.pipe.get_bus()
            while True:
                m = bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.WARNING)
                if m is None:
                    break
                if m.type == Gst.MessageType.ERROR:
                    err, dbg = m.parse_error()
                    self.report["errors"].append(f"{m.src.get_name()}: {err.message}")
                    self.end_early(f"pipeline error: {err.message}")
                else:
                    err, dbg = m.parse_warning()
                    self.note(f"warning from {m.src.get_name()}: {err.message}")

    @property
    def whip(self):
        """`--url` is a WHIP endpoint (http://…/whip), not the signaling WebSocket: publish only, no join."""
        return self.args.url.startswith("http")

    async def http(self, method, url, body, content_type=None):
        """One HTTP request with the bearer token (in a thread: urllib blocks): status, headers, body."""
        def go():
            req = urllib.request.Request(url, data=body.encode() if body else None, method=method)
            req.add_header("Authorization", f"Bearer {self.args.token}")
            if content_type:
                req.add_header("Content-Type", content_type)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.headers, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.headers, e.read().decode()
        return await self.loop.run_in_executor(None, go)

    async def ping(self):
        while True:
            await asyncio.sleep(10)
            await self.send({"type": "ping", "ts": now_ms()})

    async def run(self):
        a = self.args
        if self.whip:
            self.resource = None
            self.build()
            self.pipe.set_state(Gst.State.PLAYING)
            tasks = [asyncio.ensure_future(c) for c in (self.worker(), self.bus_watch())]
        else:
            self.ws = await websockets.connect(a.url, max_size=2 ** 20, open_timeout=10)
            await self.send({"type": "join", "v": 1, "token": a.token, "auto_subscribe": True})
            tasks = [asyncio.ensure_future(c) for c in (self.reader(), self.worker(), self.bus_watch(), self.ping())]
        try:
            t0 = time.time()
            while self.report["joined_ms"] is None and not self.done.is_set():
                if time.time() - t0 > 10:
                    raise RuntimeError("no joined within 10 s")
                await asyncio.sleep(0.01)
            if not self.done.is_set():
                deadline = self.report["joined_ms"] / 1000 + a.duration
                try:
                    await asyncio.wait_for(self.done.wait(), max(0.0, deadline - time.time()))
                except asyncio.TimeoutError:
                    pass
            if self.whip and self.resource:
                status, _, _ = await self.http("DELETE", self.resource, None)
                self.note(f"WHIP DELETE answered {status}")
            elif self.report["closed_early"] is None:
                try:
                    await self.send({"type": "leave"})
                except Exception:  # noqa: BLE001
                    pass
        finally:
            for t in tasks:
                t.cancel()

    def finish(self):
        fill_counts(self.report, self.local_mids, self.own_tracks, lambda mid, kind: self.sent[kind],
                    self.subscribed, self.recv.get, lambda mid: self.decoded.get(mid, 0))
        for kind, ids in self.sent_ext_ids.items():
            self.note(f"sent {kind} RTP header extension ids: {sorted(ids)} (TWCC is id 3: "
                      f"{'present' if 3 in ids else 'absent'})")
        for mid, ids in self.recv_ext_ids.items():
            self.note(f"received RTP on mid {mid} header extension ids: {sorted(ids)}")
        for note in undeclared_ssrc_notes(self.recv_ssrcs, self.remote_ssrcs):
            self.note(note)


async def amain(args):
    client = Client(args, asyncio.get_running_loop())
    try:
        await client.run()
    except BaseException as e:  # noqa: BLE001  (also the outer timeout's cancellation)
        traceback.print_exc()
        client.report["errors"].append(repr(e))
        if client.report["closed_early"] is None:
            client.report["closed_early"] = f"error: {e!r}"
    finally:
        if client.pipe is not None:
            await asyncio.get_running_loop().run_in_executor(None, client.pipe.set_state, Gst.State.NULL)
        try:
            if client.ws is not None:
                await asyncio.wait_for(client.ws.close(), 3)
        except Exception:  # noqa: BLE001
            pass
        try:
            client.finish()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            client.report["errors"].append(f"report: {e!r}")
    return write_report(args.report, client.report)


def main():
    p = contract_parser(__doc__.split("\n")[0])
    p.add_argument("--ecdsa-cert", action="store_true",
                   help="use an ECDSA DTLS certificate instead of GStreamer's own RSA one")
    p.add_argument("--keepalive-conncheck", action="store_true",
                   help="make libnice keep the pair alive with binding requests instead of indications")
    args = p.parse_args()
    Gst.init(None)
    warm_up_bindings()
    try:
        code = asyncio.run(asyncio.wait_for(amain(args), args.duration + 60))
    except asyncio.TimeoutError:
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
