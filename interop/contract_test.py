"""Unit tests of the Python clients' shared contract code (contract.py): `python3 -m unittest discover -s interop -p
'*_test.py'` (scripts/test.sh runs it)."""
import json
import os
import socket
import tempfile
import unittest

from contract import Counter, enlarge_udp_receive_buffers, fill_counts, new_report, sdp_notes, undeclared_ssrc_notes, write_report

SDP = "\r\n".join([
    "v=0", "o=- 1 2 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1 2",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:0", "a=candidate:1 1 udp 2130706431 10.203.0.1 7882 typ host",
    "a=ssrc:11 cname:x",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "a=mid:1", "a=ssrc-group:FID 21 22", "a=ssrc:21 cname:x", "a=ssrc:22 cname:x",
    "m=video 0 UDP/TLS/RTP/SAVPF 96", "a=mid:2", "",
])


class ContractTest(unittest.TestCase):
    def test_counter_window_is_half_open(self):
        c = Counter(1000, 2000)
        for t in (999, 1000, 1999, 2000):
            c.add(t)
        self.assertEqual((c.window, c.total, c.first_ms), (2, 4, 999))

    def test_receiver_counts_by_media_time_so_a_late_client_still_counts(self):
        # 50 packets a second at 48 kHz, the window [1000, 2000) ms; the client's lag grows from 5 ms to 1.5 s, and
        # the timestamps wrap through 2^32 inside the window.
        c = Counter(1000, 2000, clock_hz=48_000)
        base = (1 << 32) - 960 * 60
        for i in range(150):  # sent at 20 ms * i
            sent = 20 * i
            lag = 5 + (1500 * i) // 150
            if i == 75:
                continue  # one packet never arrives
            c.add(sent + lag, (base + 960 * i) & 0xFFFFFFFF)
        self.assertEqual(c.window, 49)  # packets 50..99 sent in the window, one lost
        self.assertLess(c.window_by_arrival, 40)  # counted by arrival, the lag would look like loss

    def test_receiver_counts_reordered_timestamps(self):
        c = Counter(0, 100, clock_hz=90_000)
        # Media times 10, 30, 20 (arrived after 30), 110 ms; the timestamps start just below 2^32 and wrap.
        base = (1 << 32) - 1800
        for t, ms in ((10, 10), (12, 30), (15, 20), (120, 110)):
            c.add(t, (base + 90 * ms) & 0xFFFFFFFF)
        # Least delay: 12 - 30 = -18 ms (clocks differ); placed at -8, 12, 2, 92 -> three in [0, 100).
        self.assertEqual(c.window, 3)
        self.assertEqual(c.window_by_arrival, 3)

    def test_udp_receive_buffers_are_enlarged_tcp_left_alone(self):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            tcp_before = tcp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            before = udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self.assertGreaterEqual(enlarge_udp_receive_buffers(1 << 20), 1)
            # The kernel doubles what is asked and caps it at net.core.rmem_max; it grew, and the socket still works.
            self.assertGreater(udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), before)
            self.assertEqual(tcp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), tcp_before)
            udp.bind(("127.0.0.1", 0))
            udp.sendto(b"x", udp.getsockname())
            self.assertEqual(udp.recv(8), b"x")
        finally:
            udp.close()
            tcp.close()

    def test_sdp_notes_collect_ssrcs_and_missing_candidates(self):
        declared = {}
        notes = sdp_notes(SDP, declared)
        self.assertEqual(declared["0"], {11})
        self.assertEqual(declared["1"], {21, 22})
        # The stopped m-section (port 0) is not expected to carry a candidate; mid 1 should.
        self.assertEqual(notes, ["server SDP has a=candidate in 1 of 2 m-sections"])
        self.assertEqual(undeclared_ssrc_notes({"1": {21, 99}}, declared),
                         ["RTP on mid 1 from SSRC(s) [99] not in the server's SDP"])

    def test_report_counts_and_exit_code(self):
        r = new_report("x", "x 1")
        sent = Counter(0, 10)
        sent.add(5)
        got = Counter(0, 10)
        got.add(6)
        r["joined_ms"], r["connected_ms"] = 1, 2
        subs = {"TR_a": {"track_id": "TR_a", "participant_id": "PA_b", "kind": "video", "mid": "3"}}
        fill_counts(r, {"1": "video"}, {"1": "TR_own"}, lambda mid, kind: sent, subs, {"3": got}.get, lambda mid: 1)
        self.assertEqual(r["sent"], [{"mid": "1", "kind": "video", "track_id": "TR_own", "units": "frames",
                                      "window": 1, "total": 1}])
        self.assertEqual(r["received"][0]["first_ms"], 6)
        self.assertEqual(r["received"][0]["units"], "frames")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "r.json")
            self.assertEqual(write_report(path, r), 0)
            self.assertEqual(json.load(open(path))["stack"], "x")
            r["closed_early"] = "closed 1001"
            self.assertEqual(write_report(path, r), 1)


if __name__ == "__main__":
    unittest.main()
