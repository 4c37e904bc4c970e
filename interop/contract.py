"""The interop matrix's client contract (interop/README.md) in Python, shared by the aiortc and GStreamer clients.

Why this exists: both Python clients count units in the same window, parse the same server SDPs, take the same
flags and write the same report; this is that one copy. It depends on nothing but the standard library (the aiortc
client runs in its venv, the GStreamer client on Debian's python3).
"""
import argparse
import json
import os
import socket
import time

# What the Python clients ask for their UDP receive buffers (the kernel caps it at net.core.rmem_max).
UDP_RECEIVE_BUFFER = 4 << 20


def now_ms() -> int:
    return int(time.time() * 1000)


class Counter:
    """Units (video frames, audio packets) of one track: in the window, in all, and when the first one came.

    A sender's units are in the window by when they were sent. A receiver's units, given their RTP timestamps and the
    media clock, are in the window by when they were *sent*, estimated from the timestamp: the media time of a unit
    plus the smallest (arrival - media time) over all of them, i.e. the delay of the least-delayed unit. A client that
    falls behind under CPU load (its process scheduled too little on a busy machine) then still counts the units it
    received, however late, where a count by arrival would miss what was still queued at the window's end. Units that
    never arrive are missing either way. `window_by_arrival` is the plain count by arrival, kept for comparison."""

    def __init__(self, window_start_ms, window_end_ms, clock_hz=None):
        self.ws, self.we = window_start_ms, window_end_ms
        self.clock_hz = clock_hz
        self.window_by_arrival = 0
        self.total = 0
        self.first_ms = None
        self._media_ms = []         # per unit, its media time (unwrapped RTP timestamp in ms)
        self._offset_ms = None      # min(arrival - media time)
        self._last_ts = None        # last RTP timestamp seen (32-bit) and its unwrapped value
        self._last_unwrapped = 0

    def add(self, t_ms, rtp_ts=None):
        self.total += 1
        if self.first_ms is None:
            self.first_ms = t_ms
        if self.ws <= t_ms < self.we:
            self.window_by_arrival += 1
        if self.clock_hz and rtp_ts is not None:
            if self._last_ts is None:
                u = rtp_ts
            else:
                d = (rtp_ts - self._last_ts) & 0xFFFFFFFF
                u = self._last_unwrapped + (d if d < 0x80000000 else d - 0x100000000)
            if self._last_ts is None or u > self._last_unwrapped:
                self._last_ts, self._last_unwrapped = rtp_ts, u
            m = u * 1000.0 / self.clock_hz
            self._media_ms.append(m)
            o = t_ms - m
            if self._offset_ms is None or o < self._offset_ms:
                self._offset_ms = o

    @property
    def window(self):
        if not self._media_ms:
            return self.window_by_arrival
        return sum(1 for m in self._media_ms if self.ws <= m + self._offset_ms < self.we)


def enlarge_udp_receive_buffers(size=UDP_RECEIVE_BUFFER):
    """Asks every UDP socket this process has open for a `size`-byte receive buffer; returns how many it changed.

    A Python client on a busy 2-core machine (five stacks and the server in one run) can stall for a second; the
    kernel's default buffer (about 208 KB) holds a third of a second of what it receives, and the datagrams it then
    drops at the client's own socket are not the server's loss. The stacks create their sockets themselves (aioice,
    libnice), so the client finds them among its file descriptors once its connection is up."""
    changed = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            s = socket.socket(fileno=int(name))
        except OSError:
            continue
        try:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_DGRAM and \
                    s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                changed += 1
        except OSError:
            pass
        finally:
            s.detach()  # the descriptor stays the stack's
    return changed


def contract_parser(description):
    """The flags every client takes (interop/README.md); a client adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--window-start", type=int, required=True)
    p.add_argument("--window-end", type=int, required=True)
    p.add_argument("--report", required=True)
    p.add_argument("-v", "--verbose", action="count", default=0, help="log signaling to stderr (-vv: whole SDPs)")
    return p


def new_report(stack, version):
    return {
        "stack": stack,
        "stack_version": version,
        "participant_id": None,
        "joined_ms": None,
        "connected_ms": None,
        "states": [],
        "closed_early": None,
        "sent": [],
        "received": [],
        "errors": [],
        "notes": [],
    }


def clock_hz(kind):
    """The RTP clock of the matrix's codecs: VP8 90 kHz, Opus 48 kHz (RFC 7741, RFC 7587)."""
    return 90_000 if kind == "video" else 48_000


def units(kind):
    return "frames" if kind == "video" else "packets"


def fill_counts(report, local_mids, own_tracks, sent_of, subscribed, recv_of, decoded_of):
    """The report's `sent` (our send m-lines: mid -> kind; `sent_of(mid, kind)` their Counter) and `received` (the
    latest `subscribed` message per track; `recv_of(mid)` its Counter or None, `decoded_of(mid)` frames decoded)."""
    if report["connected_ms"] is None and report["joined_ms"] is not None:
        report["errors"].append("the peer connection never connected")
    for mid, kind in local_mids.items():
        c = sent_of(mid, kind)
        report["sent"].append({"mid": mid, "kind": kind, "track_id": own_tracks.get(mid), "units": units(kind),
                               "window": c.window, "total": c.total})
    for sub in subscribed.values():
        mid = sub["mid"]
        c = recv_of(mid)
        report["received"].append({"track_id": sub["track_id"], "participant_id": sub["participant_id"],
                                   "kind": sub["kind"], "mid": mid, "units": units(sub["kind"]),
                                   "first_ms": c.first_ms if c else None,
                                   "window": c.window if c else 0,
                                   "window_by_arrival": c.window_by_arrival if c else 0,
                                   "total": c.total if c else 0,
                                   "decoded": decoded_of(mid)})


def write_report(path, report):
    """Writes the report; the exit code the contract asks for (0 only when the session lasted and connected)."""
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    return 1 if report["closed_early"] is not None or report["connected_ms"] is None else 0


def sdp_sections(sdp):
    """[(mid, kind, lines)] for each m-section of an SDP text."""
    out = []
    for ln in sdp.replace("\r\n", "\n").split("\n"):
        if ln.startswith("m="):
            out.append([None, ln[2:].split(" ")[0], [ln]])
        elif out:
            out[-1][2].append(ln)
            if ln.startswith("a=mid:"):
                out[-1][0] = ln[6:].strip()
    return out


def sdp_notes(sdp, declared_ssrcs):
    """Adds every SSRC the SDP declares to `declared_ssrcs` (mid -> set: the union over the server's offers, as a
    stopped m-line's last offer declares none) and returns what is worth noting: m-sections without a candidate."""
    secs = sdp_sections(sdp)
    for mid, _kind, lines in secs:
        declared_ssrcs.setdefault(mid, set()).update(
            int(ln[7:].split(" ")[0]) for ln in lines if ln.startswith("a=ssrc:"))
    live = [s for s in secs if s[2][0].split(" ")[1] != "0"]
    with_c = [s for s in live if any(ln.startswith("a=candidate:") for ln in s[2])]
    return [f"server SDP has a=candidate in {len(with_c)} of {len(live)} m-sections"] if len(with_c) < len(live) else []


def undeclared_ssrc_notes(received_ssrcs, declared_ssrcs):
    """Notes for RTP that came on an SSRC the server's SDP did not declare for its mid."""
    notes = []
    for mid, ssrcs in received_ssrcs.items():
        declared = declared_ssrcs.get(mid, set())
        if declared and ssrcs - declared:
            notes.append(f"RTP on mid {mid} from SSRC(s) {sorted(ssrcs - declared)} not in the server's SDP")
        if not declared:
            notes.append(f"server SDP declares no a=ssrc for mid {mid}")
    return notes
