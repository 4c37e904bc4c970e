#!/usr/bin/env python3
"""Courier interop-matrix client for aiortc (Python WebRTC).

Why this exists: aiortc is the WebRTC stack of many Python apps and bots; this client joins a Courier room with it,
publishes an Opus tone and a VP8 test pattern, receives every other participant, counts the units sent and received,
and writes the JSON report the matrix reads. The client contract (flags, behaviour, report) is interop/README.md;
the signaling is docs/protocol.md. Run it with the venv python that interop/aiortc/setup.sh prints.

aiortc specifics:
- aiortc does not trickle: setLocalDescription waits for gathering and the candidates are in the SDP we send.
- No ICE servers (aiortc would otherwise use a public STUN server by default).
- Sent units are counted where RTP leaves aiortc (RTCDtlsTransport._send_rtp, before SRTP): video = packets with the
  marker bit on the sender's primary SSRC, audio = packets; RTX packets are not counted.
- Received units are counted where aiortc hands a routed RTP packet to the receiver (RTCRtpReceiver._handle_rtp_packet):
  video = packets with the marker bit, audio = packets, RTX unwrapped, duplicates (same SSRC and sequence number)
  counted once; placed in the window by their RTP timestamps (contract.Counter). The decoded frames from
  track.recv() are reported too, as "decoded".
"""
import asyncio
import os
import fractions
import json
import math
import struct
import sys
import time
import traceback

import av
import aiortc
import websockets
from aiortc import (RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from contract import (UDP_RECEIVE_BUFFER, Counter, clock_hz, contract_parser, enlarge_udp_receive_buffers,  # noqa: E402
                      fill_counts, new_report, now_ms, sdp_notes, undeclared_ssrc_notes, write_report)


# ---------------------------------------------------------------------------------------------- generated media

class ToneTrack(AudioStreamTrack):
    """A 440 Hz tone, 48 kHz mono, 20 ms frames (aiortc's Opus encoder makes one packet per frame)."""
    RATE = 48000
    SAMPLES = 960

    def __init__(self):
        super().__init__()
        one_second = [int(8000 * math.sin(2 * math.pi * 440 * i / self.RATE)) for i in range(self.RATE)]
        raw = struct.pack("<%dh" % self.RATE, *one_second)
        step = self.SAMPLES * 2
        self._chunks = [raw[i:i + step] for i in range(0, len(raw), step)]
        self._start = None
        self._pts = 0

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        else:
            self._pts += self.SAMPLES
            wait = self._start + self._pts / self.RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(self._chunks[(self._pts // self.SAMPLES) % len(self._chunks)])
        frame.pts = self._pts
        frame.sample_rate = self.RATE
        frame.time_base = fractions.Fraction(1, self.RATE)
        return frame


class PatternTrack(VideoStreamTrack):
    """320x180 moving luma ramp at 30 fps (VideoStreamTrack.next_timestamp paces it)."""
    W, H = 320, 180

    def __init__(self):
        super().__init__()
        ramp = bytes((x * 2) & 0xFF for x in range(self.W + 256))
        self._ramp = ramp
        self._chroma = bytes([128]) * ((self.W // 2) * (self.H // 2))
        self._n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        off = (self._n * 3) % 128
        self._n += 1
        frame = av.VideoFrame(self.W, self.H, "yuv420p")
        frame.planes[0].update(self._ramp[off:off + self.W] * self.H)
        frame.planes[1].update(self._chroma)
        frame.planes[2].update(self._chroma)
        frame.pts = pts
        frame.time_base = time_base
        return frame


# ---------------------------------------------------------------------------------------------- counting

class Stats:
    def __init__(self, args):
        self.args = args
        self.sent_by_ssrc = {}      # primary ssrc -> (kind, Counter)
        self.recv_by_mid = {}       # mid -> Counter (video: marker packets, audio: packets)
        self.decoded_by_mid = {}    # mid -> int
        self.seen = {}              # ssrc -> (set, list) of recent sequence numbers
        self.ssrcs_by_mid = {}      # mid -> set of media ssrcs seen
        self.receiver_mid = {}      # id(receiver) -> mid
        self.pc = None

    def counter(self, kind=None):
        """A Counter for the window; with the received track's `kind`, one that places units by RTP timestamp."""
        return Counter(self.args.window_start, self.args.window_end, clock_hz(kind) if kind else None)

    def on_rtp_sent(self, data: bytes):
        if len(data) < 12 or 192 <= data[1] <= 223:  # RTCP
            return
        ssrc = struct.unpack("!I", data[8:12])[0]
        ent = self.sent_by_ssrc.get(ssrc)
        if ent is None:
            return  # RTX or unknown
        kind, c = ent
        if kind == "video" and not (data[1] & 0x80):
            return
        c.add(now_ms())

    def mid_of_receiver(self, receiver):
        mid = self.receiver_mid.get(id(receiver))
        if mid is None and self.pc is not None:
            for t in self.pc.getTransceivers():
                if t.receiver is receiver and t.mid is not None:
                    mid = t.mid
                    self.receiver_mid[id(receiver)] = mid
                    break
        return mid

    def on_rtp_received(self, receiver, packet):
        t = now_ms()
        mid = self.mid_of_receiver(receiver)
        if mid is None:
            return
        codecs = getattr(receiver, "_RTCRtpReceiver__codecs", {})
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        ssrc, seq, marker = packet.ssrc, packet.sequence_number, packet.marker
        if codec.mimeType.lower().endswith("/rtx"):
            rtx_map = getattr(receiver, "_RTCRtpReceiver__rtx_ssrc", {})
            if ssrc not in rtx_map or len(packet.payload) < 2:
                return
            ssrc = rtx_map[ssrc]
            seq = struct.unpack("!H", packet.payload[:2])[0]
        self.ssrcs_by_mid.setdefault(mid, set()).add(ssrc)
        s, order = self.seen.setdefault(ssrc, (set(), []))
        if seq in s:
            return
        s.add(seq)
        order.append(seq)
        if len(order) > 4096:
            s.discard(order.pop(0))
        kind = codec.mimeType.split("/")[0].lower()
        if kind == "video" and not marker:
            return
        c = self.recv_by_mid.get(mid)
        if c is None:
            c = self.recv_by_mid[mid] = self.counter(kind)
        c.add(t, packet.timestamp)


STATS: Stats = None

_orig_send_rtp = RTCDtlsTransport._send_rtp


async def _counting_send_rtp(self, data):
    await _orig_send_rtp(self, data)
    if STATS is not None:
        STATS.on_rtp_sent(data)

RTCDtlsTransport._send_rtp = _counting_send_rtp

_orig_handle_rtp = RTCRtpReceiver._handle_rtp_packet


async def _counting_handle_rtp(self, packet, arrival_time_ms):
    if STATS is not None and getattr(self, "_enabled", True):
        try:
            STATS.on_rtp_received(self, packet)
        except Exception:  # counting must never break media
            traceback.print_exc()
    await _orig_handle_rtp(self, packet, arrival_time_ms)

RTCRtpReceiver._handle_rtp_packet = _counting_handle_rtp


# ---------------------------------------------------------------------------------------------- SDP helpers

# ---------------------------------------------------------------------------------------------- the client

class Client:
    def __init__(self, args):
        self.args = args
        self.report = new_report(
            "aiortc", f"aiortc {aiortc.__version__} (PyAV {av.__version__}, websockets {websockets.__version__})")
        self.ws = None
        self.pc = None
        self.next_offer_id = 1
        self.outstanding = None       # id of our offer until its answer
        self.subscribed = {}          # track_id -> latest subscribed message (a track whose server offer we
                                      # ignored during glare comes again with a new mid)
        self.own_tracks = {}          # mid -> track_id
        self.local_mids = {}          # mid -> kind (our send m-lines)
        self.done = asyncio.Event()
        self.remote_ssrcs = {}        # mid -> every SSRC the server's offers declared for it
        self.recv_tasks = []
        self.notes = set()

    def note(self, text):
        if text not in self.notes:
            self.notes.add(text)
            self.report["notes"].append(text)
            print("note:", text, file=sys.stderr)

    async def send(self, obj):
        if self.args.verbose:
            raw = json.dumps(obj)
            print(f"{now_ms()} > {raw if len(raw) < 300 or self.args.verbose > 1 else raw[:300] + '…'}",
                  file=sys.stderr)
        await self.ws.send(json.dumps(obj))

    def end_early(self, why):
        if self.report["closed_early"] is None and not self.done.is_set():
            self.report["closed_early"] = why
        self.done.set()

    async def run(self):
        global STATS
        STATS = Stats(self.args)
        a = self.args
        self.ws = await websockets.connect(a.url, max_size=2 ** 20, open_timeout=10)
        await self.send({"type": "join", "v": 1, "token": a.token, "auto_subscribe": True})
        reader = asyncio.create_task(self.read_loop())
        pinger = asyncio.create_task(self.ping_loop())
        try:
            await asyncio.wait_for(self.joined_evt(), 10)
        except asyncio.TimeoutError:
            raise RuntimeError("no joined within 10 s")
        if self.done.is_set():
            return
        deadline = self.report["joined_ms"] / 1000 + a.duration
        try:
            await asyncio.wait_for(self.done.wait(), max(0.0, deadline - time.time()))
        except asyncio.TimeoutError:
            pass
        pinger.cancel()
        if self.report["closed_early"] is None:
            try:
                await self.send({"type": "leave"})
            except Exception:
                pass
        reader.cancel()

    async def joined_evt(self):
        while self.report["joined_ms"] is None and not self.done.is_set():
            await asyncio.sleep(0.01)

    async def ping_loop(self):
        while True:
            await asyncio.sleep(10)
            await self.send({"type": "ping", "ts": now_ms()})

    def make_pc(self):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        STATS.pc = pc

        @pc.on("connectionstatechange")
        async def _state():
            st = pc.connectionState
            t = now_ms()
            self.report["states"].append([t, st])
            if st == "connected" and self.report["connected_ms"] is None:
                self.report["connected_ms"] = t
                n = enlarge_udp_receive_buffers()
                self.report["notes"].append(f"UDP receive buffers enlarged to {UDP_RECEIVE_BUFFER} bytes: {n} socket(s)")
            if st == "failed":
                self.end_early("peer connection failed")

        @pc.on("track")
        def _track(track):
            self.recv_tasks.append(asyncio.create_task(self.consume(track)))
        return pc

    async def consume(self, track):
        mid = None
        for t in self.pc.getTransceivers():
            if t.receiver.track is track:
                mid = t.mid
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            if mid is not None:
                STATS.decoded_by_mid[mid] = STATS.decoded_by_mid.get(mid, 0) + 1

    async def publish(self):
        self.pc = pc = self.make_pc()
        at = pc.addTransceiver(ToneTrack(), direction="sendonly")
        vt = pc.addTransceiver(PatternTrack(), direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        vp8 = [c for c in caps if c.mimeType.lower() == "video/vp8"]
        rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"]
        vt.setCodecPreferences(vp8 + rtx)
        acaps = RTCRtpSender.getCapabilities("audio").codecs
        at.setCodecPreferences([c for c in acaps if c.mimeType.lower() == "audio/opus"])
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)  # waits for ICE gathering: candidates end up in the SDP
        for t, kind in ((at, "audio"), (vt, "video")):
            self.local_mids[t.mid] = kind
            STATS.sent_by_ssrc[t.sender._ssrc] = (kind, STATS.counter())
        oid = self.next_offer_id
        self.next_offer_id += 1
        self.outstanding = oid
        self.sent_mid_ssrc = {at.mid: at.sender._ssrc, vt.mid: vt.sender._ssrc}
        await self.send({"type": "offer", "id": oid, "sdp": pc.localDescription.sdp,
                         "tracks": [{"mid": at.mid, "source": "microphone", "name": "tone"},
                                    {"mid": vt.mid, "source": "camera", "name": "pattern"}]})

    def remote_sdp(self, sdp):
        for text in sdp_notes(sdp, self.remote_ssrcs):
            self.note(text)
        return sdp

    async def read_loop(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if self.args.verbose:
                    print(f"{now_ms()} < {raw if len(raw) < 300 or self.args.verbose > 1 else raw[:300] + '…'}",
                          file=sys.stderr)
                try:
                    await self.handle(msg)
                except Exception as e:
                    traceback.print_exc()
                    self.report["errors"].append(f"handling {msg.get('type')}: {e!r}")
                    self.end_early(f"error: {e!r}")
            code = self.ws.close_code
            self.end_early(f"socket closed by server: {code} {self.ws.close_reason or ''}".strip())
        except asyncio.CancelledError:
            raise
        except websockets.ConnectionClosed as e:
            self.end_early(f"socket closed: {e}")
        except Exception as e:
            self.report["errors"].append(repr(e))
            self.end_early(f"error: {e!r}")

    async def handle(self, msg):
        typ = msg.get("type")
        if typ == "joined":
            self.report["joined_ms"] = now_ms()
            self.report["participant_id"] = msg["participant"]["id"]
            # Our first offer publishes; until it is sent and answered every server offer is ignored (the server
            # sends a fresh one after answering ours). Publishing here keeps the messages in order.
            self.outstanding = 0
            await self.publish()
        elif typ == "answer":
            if msg.get("id") != self.outstanding:
                self.note(f"answer with unexpected id {msg.get('id')}")
                return
            sdp = self.remote_sdp(msg["sdp"])
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            self.outstanding = None
        elif typ == "offer":
            if self.outstanding is not None:
                return  # impolite: our own offer is outstanding; the server sends a fresh one later
            sdp = self.remote_sdp(msg["sdp"])
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            ans = await self.pc.createAnswer()
            await self.pc.setLocalDescription(ans)
            await self.send({"type": "answer", "id": msg["id"], "sdp": self.pc.localDescription.sdp})
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

    def finish(self):
        fill_counts(self.report, self.local_mids, self.own_tracks,
                    lambda mid, kind: STATS.sent_by_ssrc[self.sent_mid_ssrc[mid]][1],
                    self.subscribed, STATS.recv_by_mid.get, lambda mid: STATS.decoded_by_mid.get(mid, 0))
        for text in undeclared_ssrc_notes(STATS.ssrcs_by_mid, self.remote_ssrcs):
            self.note(text)


async def amain(args):
    client = Client(args)
    try:
        await client.run()
    except Exception as e:
        traceback.print_exc()
        client.report["errors"].append(repr(e))
        if client.report["closed_early"] is None:
            client.report["closed_early"] = f"error: {e!r}"
    finally:
        try:
            if client.pc is not None:
                await asyncio.wait_for(client.pc.close(), 5)
        except Exception as e:
            client.report["errors"].append(f"pc.close: {e!r}")
        try:
            if client.ws is not None:
                await asyncio.wait_for(client.ws.close(), 3)
        except Exception:
            pass
        for t in client.recv_tasks:
            t.cancel()
        try:
            client.finish()
        except Exception as e:
            traceback.print_exc()
            client.report["errors"].append(f"report: {e!r}")
    return write_report(args.report, client.report)


def main():
    args = contract_parser(__doc__.split("\n")[0]).parse_args()
    try:
        code = asyncio.run(asyncio.wait_for(amain(args), args.duration + 60))
    except asyncio.TimeoutError:
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
