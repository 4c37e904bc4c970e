"""The interop matrix's client contract (interop/README.md) in Python, shared by the aiortc and GStreamer clients.

Why this exists: both Python clients count units in the same window, parse the same server SDPs, take the same
flags and write the same report; this is that one copy. It depends on nothing but the standard library (the aiortc
client runs in its venv, the GStreamer client on Debian's python3).
"""
import argparse
import json
import time


def now_ms() -> int:
    return int(time.time() * 1000)


class Counter:
    """Units (video frames, audio packets) of one track: in the window, in all, and when the first one came."""

    def __init__(self, window_start_ms, window_end_ms):
        self.ws, self.we = window_start_ms, window_end_ms
        self.window = 0
        self.total = 0
        self.first_ms = None

    def add(self, t_ms):
        self.total += 1
        if self.first_ms is None:
            self.first_ms = t_ms
        if self.ws <= t_ms < self.we:
            self.window += 1


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
                                   "window": c.window if c else 0, "total": c.total if c else 0,
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
